//! What a layer is given as, and the layer opened from that.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::dir::DirLayer;
use crate::source::{BlobFetch, Codec, LayerSource, SourceError};
use crate::toc::TocRef;
use crate::tree::LayerKind;

use super::StackError;

/// One layer to open: a file, or a byte range of one (a layer inside an
/// image archive), and the digest its bytes must have, if it is to be
/// checked; or a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// The file holding the layer, or the directory that is the layer.
    pub path: PathBuf,
    /// The layer is the directory `path` (an extracted layer or an
    /// overlayfs upper directory), read in place; `range` and `verify`
    /// are then unused.
    pub directory: bool,
    /// `(offset, length)` of the layer in the file; `None`: all of it.
    pub range: Option<(u64, u64)>,
    /// The digest the layer's bytes are checked against when it is first
    /// indexed; a stored index remembers that the check passed, so later
    /// opens do not hash the layer again.
    pub verify: Option<Digest>,
    /// The layer is a registry blob, fetched on demand; `path` is then
    /// only its name for messages.
    pub remote: Option<RemoteSpec>,
    /// The table of contents the layer's descriptor announces: it is
    /// indexed from that, not from a pass over it.
    pub toc: Option<TocRef>,
}

/// A layer that is a blob in a registry.
#[derive(Clone, Debug)]
pub struct RemoteSpec {
    /// Where its bytes are fetched from.
    pub fetch: Arc<dyn BlobFetch>,
    /// The blob's digest from the manifest: what the layer's stored index
    /// is found by, on any machine.
    pub digest: Digest,
    /// The codec the media type names, if it names one.
    pub codec: Option<Codec>,
}

/// Two remote layers are the same layer when they are the same blob.
impl PartialEq for RemoteSpec {
    fn eq(&self, other: &RemoteSpec) -> bool {
        self.digest == other.digest && self.fetch.name() == other.fetch.name()
    }
}

impl Eq for RemoteSpec {}

impl LayerSpec {
    /// A whole layer file, unchecked.
    pub fn file(path: impl Into<PathBuf>) -> LayerSpec {
        LayerSpec {
            path: path.into(),
            directory: false,
            range: None,
            verify: None,
            remote: None,
            toc: None,
        }
    }

    /// A directory as a layer.
    pub fn directory(path: impl Into<PathBuf>) -> LayerSpec {
        LayerSpec {
            directory: true,
            ..LayerSpec::file(path)
        }
    }

    /// Opens the layer; `number` (1 = bottom) is for messages.
    pub(super) fn open(&self, number: usize) -> Result<Layer, StackError> {
        if let Some(remote) = &self.remote {
            let source = LayerSource::open_blob(
                Arc::clone(&remote.fetch),
                remote.digest.clone(),
                remote.codec,
            )?;
            return Ok(Layer::Tar(source));
        }
        if self.directory {
            let dir = DirLayer::open(&self.path).map_err(|source| StackError::Dir {
                path: self.path.clone(),
                number,
                source,
            })?;
            return Ok(Layer::Dir(dir));
        }
        Ok(Layer::Tar(match self.range {
            Some((offset, len)) => LayerSource::open_range(&self.path, offset, len),
            None => LayerSource::open(&self.path),
        }?))
    }
}

/// One opened layer of a stack.
#[derive(Debug)]
pub enum Layer {
    /// A tar, plain or compressed, whole file or a range of one.
    Tar(LayerSource),
    /// A directory, read in place.
    Dir(DirLayer),
}

impl Layer {
    /// The layer file or directory, as given.
    pub fn path(&self) -> &Path {
        match self {
            Layer::Tar(source) => source.path(),
            Layer::Dir(dir) => dir.path(),
        }
    }

    /// Which merge rules read its members (see `tree::LayerKind`).
    pub fn kind(&self) -> LayerKind {
        match self {
            Layer::Tar(_) => LayerKind::Tar,
            Layer::Dir(_) => LayerKind::Directory,
        }
    }

    /// What the layer is stored as: its codec (`gzip`, `plain`, ...), or
    /// `directory`.
    pub fn format(&self) -> &'static str {
        match self {
            Layer::Tar(source) => source.codec().name(),
            Layer::Dir(_) => "directory",
        }
    }

    /// Fills `buf` from offset `offset` of the layer's (decompressed, or
    /// for a directory, virtual) stream.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        match self {
            Layer::Tar(source) => source.read_exact_at(offset, buf),
            Layer::Dir(dir) => dir.read_exact_at(offset, buf),
        }
    }

    pub(super) fn tar(&self) -> Option<&LayerSource> {
        match self {
            Layer::Tar(source) => Some(source),
            Layer::Dir(_) => None,
        }
    }
}
