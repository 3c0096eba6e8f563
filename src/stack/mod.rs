//! A list of layers (tar files, or directories), opened, indexed and
//! merged: what every front end (the FUSE server, export, listing) serves
//! from.
//!
//! - `spec.rs`: what a layer is given as ([`LayerSpec`]) and the opened
//!   layer ([`Layer`]);
//! - `merged.rs`: the [`Stack`]: opened, from the cache's stored tree or by
//!   indexing, and read from;
//! - `index.rs`: every layer indexed and merged, the bottom one while its
//!   pass goes on; one layer's index on its own (`ls --layer`);
//! - `load.rs`: one tar layer's index: from the cache, its table of
//!   contents, or a pass, checked against its digest (`digest.rs`) and stored;
//! - `keys.rs`: what a layer's and a stack's stored indexes are found by;
//! - `peek.rs`: the members in the head of a layer (`ls --peek`);
//! - `queue.rs`: the one work queue that spreads layers over the cores.

mod digest;
mod index;
mod keys;
mod load;
mod merged;
mod peek;
mod queue;
mod spec;

use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::IndexCache;
use crate::digest::Digest;
use crate::dir::DirError;
use crate::source::{ReadMeter, SourceError};
use crate::tar::TarError;
use crate::tree::Ino;

pub use index::layer_index;
pub use load::{IndexOrigin, LayerStats};
pub use merged::Stack;
pub use peek::{peek_layer, peek_spec, LayerPeek};
pub use spec::{Layer, LayerSpec, RemoteSpec};

/// What can go wrong while opening a stack or reading from it.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// No layer files were given.
    #[error("no layers given")]
    NoLayers,
    /// More layers than a tree can number (`tree::MAX_LAYERS`).
    #[error("{0} layers given; at most {max} can be stacked", max = crate::tree::MAX_LAYERS - 1)]
    TooManyLayers(usize),
    /// A layer file could not be opened or read, or is not a layer.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A layer's tar stream is damaged or not a tar.
    #[error("{} (layer {number}): {source}", path.display())]
    Index {
        /// The layer file.
        path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        number: usize,
        /// What the tar parser found.
        source: TarError,
    },
    /// A directory layer could not be read.
    #[error("{} (layer {number}, a directory): {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        number: usize,
        /// What went wrong, naming the entry.
        source: DirError,
    },
    /// A read asked for the contents of something that is not a regular file.
    #[error("inode {0} is not a regular file")]
    NotAFile(Ino),
    /// A layer's bytes do not hash to the digest its image gives.
    #[error("{} (layer {number}, {len} bytes at offset {offset}): digest mismatch: the image says {expected}, the bytes hash to {actual}; nothing is served from a layer that fails its check (--no-verify skips it)", path.display())]
    Digest {
        /// The file holding the layer (a blob, or the image archive).
        path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        number: usize,
        /// Where the layer starts in the file.
        offset: u64,
        /// The layer's length.
        len: u64,
        /// The digest the image gives.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// A digest of an algorithm layerfs cannot check.
    #[error("{} (layer {number}): cannot check digest {digest}: only sha256 is supported (--no-verify skips the check)", path.display())]
    DigestAlgorithm {
        /// The file holding the layer.
        path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        number: usize,
        /// The digest given.
        digest: Digest,
    },
    /// A file's data ended before its size (the layer is damaged).
    #[error("the data ends at byte {got} of a file of {expected} bytes")]
    ShortFile {
        /// The file's size.
        expected: u64,
        /// Where its data ended.
        got: u64,
    },
}

/// How a stack is opened.
#[derive(Debug, Default)]
pub struct StackOptions {
    /// Where layer indexes are stored and looked up; `None`: index every
    /// layer every time.
    pub cache: Option<IndexCache>,
    /// Where decompressed data of layers without resume points is spilled
    /// (single-frame zstd, single-stream bzip2, ...); `None`: the index
    /// cache's directory if there is one, else the system's temporary
    /// directory (which may be RAM-backed).
    pub spill_dir: Option<PathBuf>,
    /// Keep what each whiteout removed, for [`Stack::removals`] (`ls --all`).
    pub record_removals: bool,
    /// Counts the layer file bytes that indexing (and digest checks) will
    /// read and have read, for a progress display; layers whose index is
    /// loaded from the cache add nothing.
    pub meter: Option<Arc<ReadMeter>>,
}
