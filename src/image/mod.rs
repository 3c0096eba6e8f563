//! Container images as inputs: an OCI image layout directory (optionally
//! `DIR:TAG` or `DIR@sha256:…`), an OCI layout packed as a tar, or a
//! `docker save` archive, recognised from their contents, never their name.
//!
//! An image resolves to its layers, bottom first, each as a byte range of
//! the file that holds it: a blob file of a layout directory, or a member
//! of an archive, read in place (nothing is extracted or copied). What the
//! layers contain is for [`crate::source`] and [`crate::tar`] to read; this
//! module only finds them and says which digest each must have.

mod archive;
mod error;
pub(crate) mod manifest;
mod platform;
mod resolve;
mod store;

pub use error::ImageError;
pub use platform::Platform;
pub(crate) use resolve::platforms;

use std::path::{Path, PathBuf};

/// One layer of an image: where its bytes are and what they must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayer {
    /// The file holding the blob: a layout's blob file, or the archive.
    pub path: PathBuf,
    /// Where the blob starts in `path`.
    pub offset: u64,
    /// The blob's length in bytes (compressed, as stored).
    pub len: u64,
    /// The digest the blob's bytes must have, when the image says (a `docker save` layer of the legacy format names only
    /// the digest of its uncompressed tar, which a compressed blob's bytes
    /// cannot be checked against).
    pub digest: Option<crate::digest::Digest>,
    /// The layer's media type, as the manifest gives it.
    pub media_type: String,
    /// The table of contents its annotations announce (eStargz,
    /// zstd:chunked), if any.
    pub toc: Option<crate::toc::TocRef>,
}

/// An image argument, resolved to one manifest's layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The argument as given, for messages.
    pub name: String,
    /// The layers, bottom first.
    pub layers: Vec<ImageLayer>,
}

/// What picks one manifest of an image.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `--platform`; `None`: the host's.
    pub platform: Option<Platform>,
}

/// Resolves `arg` if it names an image; `Ok(None)` if it is something else
/// (a loose layer file, or nothing at all: the caller reports that).
///
/// A plain tar is an image archive only if its first member is one an image
/// archive starts with (`oci-layout`, `index.json`, `manifest.json`,
/// `blobs/…`, a hex-named layer directory, …) and it holds an index or a
/// manifest; anything else is left to be read as a layer, so a loose plain
/// tar costs one peek at its first header.
pub fn open(arg: &Path, selection: &Selection) -> Result<Option<Image>, ImageError> {
    let (base, selector) = match store::split_selector(arg)? {
        Some((base, selector)) => (base, Some(selector)),
        None => (arg.to_path_buf(), None),
    };
    let Some(store) = store::Store::open(&base)? else {
        return Ok(None);
    };
    let name = arg.display().to_string();
    let layers = resolve::layers(&store, &name, selector.as_ref(), selection)?;
    Ok(Some(Image { name, layers }))
}
