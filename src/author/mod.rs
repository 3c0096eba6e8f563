//! Writing layers from a directory: `layerfs create` (the whole directory as
//! one layer) and `layerfs diff` (the layer that turns a stack's merged tree
//! into the directory).
//!
//! Both read the directory the same way and write entries the same way, so
//! the pieces are shared:
//!
//! - `scan`: reads the directory once with [`crate::dir::Scan`] (no
//!   symlink followed, nothing outside it reached; entries in the order
//!   they are written, with hardlink identities) and refuses what a layer
//!   cannot hold as an entry, or (`create --whiteouts`) reads it as the
//!   mount reads a directory layer, whiteouts and all;
//! - `emit`: writes the chosen entries of a scan, with whiteouts and opaque
//!   markers, as tar entries: a multiply-linked file once, then as
//!   hardlinks;
//! - `create`: chooses every entry (`layerfs create`);
//! - `diff`: compares the scan with a stack's tree and chooses what changed.
//!
//! The output is reproducible: it depends only on what the directory holds
//! (and on the lower layers, for a diff), never on the order the OS lists
//! names, the clock or the user running it.

mod create;
mod diff;
mod emit;
mod scan;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

use crate::stack::StackError;

pub use create::everything;
pub use diff::plan_diff;
pub use emit::{clamp, emit, Emitted, Selection};
pub use scan::{read as scan, read_layer as scan_layer, read_upper as scan_upper};

use crate::dir::DirError;

/// What can go wrong while reading the directory, the lower layers, or
/// writing the layer. Every message names the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum AuthorError {
    /// The directory or something in it could not be read, or changed
    /// while it was.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// A name the layer merge reads as a whiteout or opaque marker, or a
    /// 0/0 character device (overlayfs' whiteout): a layer cannot hold it
    /// as an ordinary entry.
    #[error("{}: {what} cannot be stored in a layer as an entry (`layerfs create --whiteouts` writes what the mount reads it as)", path.display())]
    Unrepresentable {
        /// The path on disk.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// An entry of an overlayfs upper directory that no OCI layer can
    /// express.
    #[error("{}: {what} cannot be committed as a layer", path.display())]
    NotCommittable {
        /// The path on disk.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// A lower layer's file could not be read for comparison.
    #[error("{} (layer {layer}, {}): {source}", layer_path.display(), String::from_utf8_lossy(path))]
    Lower {
        /// The file's path in the merged tree.
        path: Vec<u8>,
        /// The layer file holding it.
        layer_path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        layer: u32,
        /// What went wrong.
        source: Box<StackError>,
    },
    /// The layer could not be written.
    #[error("writing the layer: {0}")]
    Write(#[from] io::Error),
}
