//! Tar archives: one pass over a layer's stream records every member's
//! metadata and where its data lies.
//!
//! All tar dialect handling lives here, reading and writing: v7, ustar, old GNU (long names,
//! old sparse maps), PAX (per-member records, xattrs) and the
//! three PAX sparse formats. What comes out is dialect-free: a [`Member`]
//! with its final path, metadata and a [`DataLayout`] that turns file
//! positions into stream offsets, holes included.
//!
//! The parser trusts nothing in the stream: every size is checked before it
//! is used for an allocation or an offset, and every problem is reported
//! with the stream offset where it was found.
//!
//! Where tar readers disagree, the reading is Go's `archive/tar`, which
//! containerd, Docker, podman and umoci unpack layers with: a layer must
//! show the tree a runtime extracts from it, and a crafted layer must not
//! hide from layerfs what a container gets.

mod cursor;
mod error;
mod gnu;
mod header;
mod index;
mod member;
mod number;
mod pax;
mod sparse;
mod write;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod hostile;
#[cfg(test)]
mod testutil;

pub use error::{Problem, TarError};
pub use index::{index_layer, index_layer_batches, index_prefix, LayerIndex, PrefixIndex};
pub use member::{DataLayout, Member, MemberKind, SparseSegment};
pub use write::{archived_regions, EntryHeader, FirstNames, TarWriter};
