//! The process's decoding passes and its cores: how many workers a pass
//! may start, and whether a core is idle for work that only pays on one.
//!
//! Several layers are indexed at once, each pass maybe on several cores
//! (zstd frames, gzip chunks); every pass counts itself here, so the
//! speculative work of one does not take the core another pass needs.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Workers decoding frames at most, whatever the core count: past this the
/// pass is bound by reading the file and handing bytes out.
const MAX_WORKERS: usize = 4;

/// Decoding passes running in this process now (several layers are
/// indexed at once).
static DECODING: AtomicUsize = AtomicUsize::new(0);

/// Counts one decoding pass for as long as it lives.
#[derive(Debug)]
pub(super) struct Decoding(());

impl Decoding {
    pub(super) fn start() -> Decoding {
        DECODING.fetch_add(1, Ordering::Relaxed);
        Decoding(())
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        DECODING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether the decoding passes now running leave a core idle: work that
/// only pays on an idle core (a gzip chunk inflated ahead, partly twice)
/// waits for one.
pub fn spare_core() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    DECODING.load(Ordering::Relaxed) < cores
}

/// How many workers a pass gets on this machine; 1 means the one-core pass
/// is the better choice (nobody to decode ahead).
pub(super) fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_WORKERS)
}
