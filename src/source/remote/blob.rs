//! A layer blob that is not a local file: its bytes are fetched on demand
//! from wherever it lives (a registry), by range or as one stream.

use std::io::{self, Read};

/// Where a remote layer's bytes come from.
///
/// The layer source reads a remote blob two ways: the indexing pass wants
/// every byte once, in order, so it takes one [`BlobFetch::stream`]; reads
/// after the mount want a few spans, so they [`BlobFetch::fetch`] ranges.
/// Retrying transient failures is the implementation's job; an error
/// returned here is final for that read.
pub trait BlobFetch: Send + Sync + std::fmt::Debug {
    /// What to call the blob in messages (`REGISTRY/REPO@DIGEST`).
    fn name(&self) -> &str;

    /// The blob's size in bytes, as its descriptor gives it.
    fn len(&self) -> u64;

    /// Whether the blob has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the blob's bytes from `offset`. Either all of
    /// `buf` is filled or an error says why not.
    fn fetch(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The blob's bytes from `offset` to its end, read as they arrive.
    /// A connection that breaks mid-way is resumed from where it broke.
    fn stream(&self, offset: u64) -> io::Result<Box<dyn Read + Send>>;
}
