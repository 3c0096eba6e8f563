//! A directory as a layer: an extracted layer, or an overlayfs upper
//! directory, served from its files in place.
//!
//! A directory layer gives the merge exactly what a tar layer gives it: a
//! [`LayerIndex`] of members, with paths, kinds, owners, times, link
//! targets, device numbers and every extended attribute. So overlayfs'
//! tombstones (0/0 character devices) and opaque directories
//! (`trusted.overlay.opaque=y`), and the `.wh.` files of an extracted OCI
//! layer, mean what they mean in a tar. After this stage only the merge's
//! whiteout rules know a directory from a tar (`tree::LayerKind`: a
//! directory's `user.overlay.*` xattrs are overlayfs' own, a tar's are not). Each regular file's data gets an offset in a
//! *virtual stream*, the files laid end to end in walk order, and reads of
//! that stream are served by reading the files (`files.rs`).
//!
//! - `walk`: reads a directory once, safely (no symlink is followed, nothing
//!   outside it is reached), into a flat list; `layerfs create` and `diff`
//!   write layers from the same walk;
//! - `members`: the walk as the members a tar of the directory would hold
//!   (a second name of an inode is a hardlink to its first);
//! - `files`: reads at offsets of the virtual stream, from the files, which
//!   must still be what the walk listed.

mod files;
mod members;
mod walk;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::source::SourceError;
use crate::tar::LayerIndex;

pub use files::DEFAULT_OPEN_FILES;
pub use walk::{open_root, FileId, Scan, ScanEntry};

use files::DirFiles;

/// What can go wrong while reading a directory. Every message names the
/// path concerned.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The directory or something in it could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path on disk.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Something the walk had listed was gone when it was read.
    #[error("{}: vanished while being read", path.display())]
    Vanished {
        /// The path on disk.
        path: PathBuf,
    },
    /// Something was replaced or changed while it was being read, so what
    /// was listed and what would be read no longer agree.
    #[error("{}: changed while being read", path.display())]
    Changed {
        /// The path on disk.
        path: PathBuf,
    },
}

/// A directory opened as a layer; see the module docs.
///
/// Opening holds the directory open (so a directory renamed or replaced
/// afterwards is still the one read); [`DirLayer::index`] walks it and
/// makes its files readable.
#[derive(Debug)]
pub struct DirLayer {
    path: PathBuf,
    root: File,
    files: OnceLock<DirFiles>,
    open_files: usize,
}

impl DirLayer {
    /// Opens the directory `path` (a symlink to one is followed).
    pub fn open(path: &Path) -> Result<DirLayer, DirError> {
        Ok(DirLayer {
            path: path.to_path_buf(),
            root: open_root(path)?,
            files: OnceLock::new(),
            open_files: DEFAULT_OPEN_FILES,
        })
    }

    /// Sets how many of its files are kept open between reads (at least
    /// one): reads of a file whose descriptor is kept skip an `open` and
    /// the identity checks that follow it.
    pub fn set_open_files(&mut self, n: usize) {
        self.open_files = n.max(1);
    }

    /// The directory's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Walks the directory and returns its members; reads are served from
    /// then on. A second call walks again and keeps the first walk's files.
    pub fn index(&self) -> Result<LayerIndex, DirError> {
        let dir = self.root.try_clone().map_err(|source| DirError::Io {
            path: self.path.clone(),
            source,
        })?;
        let scan = Scan::read_open(&self.path, dir)?;
        let (index, table) = members::members(&scan);
        let root = self.root.try_clone().map_err(|source| DirError::Io {
            path: self.path.clone(),
            source,
        })?;
        let _ = self
            .files
            .set(DirFiles::new(&self.path, root, table, self.open_files));
        Ok(index)
    }

    /// Fills `buf` from offset `offset` of the virtual stream (see the
    /// module docs). A file that is no longer what the walk listed (another
    /// inode, size or mtime) fails, and keeps failing: its bytes may not be
    /// the ones listed. Nothing past a file's listed size is ever read.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let files = self.files.get().ok_or_else(|| SourceError::NotIndexed {
            path: self.path.clone(),
        })?;
        files.read_exact_at(offset, buf)
    }

    /// The file holding bytes `start..start + size` of the virtual stream
    /// (one regular file's data, as the tree records it), opened read-only
    /// anew and checked as reads check it: for the kernel to read the file
    /// itself (FUSE passthrough). `None` if no file's data lies exactly
    /// there (or the directory was not indexed); an error if the file is
    /// no longer what the walk listed, which its later reads report too.
    pub fn open_whole(&self, start: u64, size: u64) -> Option<Result<File, SourceError>> {
        self.files.get()?.open_whole(start, size)
    }

    /// Whether the directory lives on a stacked filesystem (overlayfs, as
    /// in a container; FUSE; ecryptfs): the kernel passes reads through to
    /// its files only if told to allow a stack that deep. `false` if the
    /// system will not say.
    pub fn on_stacked_fs(&self) -> bool {
        crate::sys::is_stacked_fs(&self.root).unwrap_or(false)
    }

    /// How many file descriptors are open for reads now (for tests and
    /// benchmarks: never more than [`DirLayer::set_open_files`] allows).
    pub fn open_file_count(&self) -> usize {
        self.files.get().map_or(0, DirFiles::open_count)
    }
}
