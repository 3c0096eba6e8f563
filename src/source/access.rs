//! The two interfaces every codec implements: a decoder for the indexing
//! pass that learns where it can resume later, and random access that uses
//! what it learned.

use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use super::SeekIndex;

/// Serves reads at decompressed offsets of one layer.
pub(super) trait Access: Send + Sync + fmt::Debug {
    /// Fills `buf` from decompressed offset `offset`; `UnexpectedEof` if the
    /// stream ends first.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// The decoder of the indexing pass: a sequential reader of the
/// decompressed stream that, once read to the end (or as far as the tar
/// parser went), hands over what it learned for random access.
pub(super) trait IndexingDecoder: Read + Send {
    /// Ends the pass. `SeekIndex` must cover at least every byte read.
    fn finish(self: Box<Self>) -> io::Result<SeekIndex>;
}

/// Counts the bytes a layer's reads decompressed (not the indexing pass):
/// how tests and benchmarks see that a read inflated one span, not the
/// layer.
#[derive(Debug, Default)]
pub struct DecodeCounter(AtomicU64);

impl DecodeCounter {
    /// Adds `n` decompressed bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes decompressed so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
