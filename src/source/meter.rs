//! How far the indexing of layer files has got, for a progress display.
//!
//! Indexing runs on several threads at once, deep inside the codecs, so it
//! cannot draw anything itself; it counts into a [`ReadMeter`] that
//! whoever shows progress polls. The count is of layer file bytes (what a
//! total is known for before decoding), added once per buffer refill, so
//! the passes pay one relaxed atomic add per few hundred KiB.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of layer files that indexing is to get through, and has got
/// through so far.
#[derive(Debug, Default)]
pub struct ReadMeter {
    total: AtomicU64,
    done: AtomicU64,
}

impl ReadMeter {
    /// Adds `bytes` to the work ahead: a layer about to be read.
    pub fn expect(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records `bytes` of layer file got through (read, or skipped over
    /// unread by a plain tar's pass).
    pub fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// All the bytes expected so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The bytes got through so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}
