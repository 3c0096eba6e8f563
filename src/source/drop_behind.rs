//! Handing a plain tar's pages back to the kernel behind its indexing pass.
//!
//! The pass reads a plain layer of small files end to end, once, for its
//! headers: left in the page cache, a 2 GB layer takes 2 GB of memory the
//! kernel must first find free pages for, and that is what a first mount
//! then waits on. On a virtual machine whose host takes back guest memory
//! left idle, every such page is a fault on the host: here a cold `cat` of
//! the 1.79 GB benchmark tar takes 0.7 s right after `drop_caches` freed
//! pages, and 3.7–4.2 s once they have been idle for six seconds. Dropping
//! the pages a few MiB behind the pass keeps its footprint small and
//! recycles the same pages, so the pass runs at the disk's speed whatever
//! the state of memory, and does not push the user's own files out of the
//! cache. Reads served after the mount fetch what they need again.
//!
//! A layer that is mostly in the page cache already when the pass starts
//! (just downloaded, or read before) is left there: someone wants it.

use std::sync::Arc;

use super::region::Region;

/// Layers shorter than this keep their pages: too little to matter.
const MIN_LAYER: u64 = 64 << 20;
/// How far behind the pass pages are dropped: the bytes just read (and the
/// buffer still being parsed) are never touched.
const BEHIND: u64 = 16 << 20;
/// A layer with more than this share of its pages cached is left cached.
const KEEP_IF_CACHED: f64 = 0.5;

/// The page cache behind one pass.
pub(super) struct DropBehind {
    region: Arc<Region>,
    /// Everything before this offset has been dropped.
    dropped: u64,
}

impl DropBehind {
    /// Drops behind a pass over `region` if it is a local file long enough,
    /// and not mostly cached already.
    pub(super) fn start(region: &Arc<Region>) -> Option<DropBehind> {
        if region.len() < MIN_LAYER {
            return None;
        }
        let cached = region.cached_share()?;
        if cached > KEEP_IF_CACHED {
            log::debug!(
                "{:.0}% of the layer is in the page cache: kept",
                cached * 100.0
            );
            return None;
        }
        Some(DropBehind {
            region: Arc::clone(region),
            dropped: 0,
        })
    }

    /// The pass has reached `offset`: drops what lies more than `BEHIND`
    /// before it, a stretch of at least `BEHIND` at a time.
    pub(super) fn reached(&mut self, offset: u64) {
        let until = offset.saturating_sub(BEHIND);
        if until >= self.dropped + BEHIND {
            self.region.drop_cached(self.dropped, until - self.dropped);
            self.dropped = until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_support::temp_file;

    fn cached_layer(len: usize) -> Arc<Region> {
        Arc::new(temp_file(&vec![7u8; len]))
    }

    #[test]
    fn a_short_layer_keeps_its_pages() {
        let region = cached_layer(1 << 20);
        assert!(DropBehind::start(&region).is_none());
    }

    #[test]
    fn a_layer_mostly_cached_is_left_cached() {
        // Just written, so in the page cache (on every file system that
        // has one; tmpfs reports its pages as resident too).
        let region = cached_layer(80 << 20);
        match region.cached_share() {
            Some(share) if share > KEEP_IF_CACHED => {
                assert!(DropBehind::start(&region).is_none());
            }
            other => panic!("a file just written is not reported cached: {other:?}"),
        }
    }

    #[test]
    fn pages_behind_the_pass_are_dropped_in_stretches() {
        let region = cached_layer(80 << 20);
        let mut behind = DropBehind {
            region: Arc::clone(&region),
            dropped: 0,
        };
        behind.reached(BEHIND + BEHIND / 2);
        assert_eq!(behind.dropped, 0, "less than a stretch to drop");
        behind.reached(3 * BEHIND);
        assert_eq!(behind.dropped, 2 * BEHIND);
        behind.reached(3 * BEHIND + 1);
        assert_eq!(behind.dropped, 2 * BEHIND);
        behind.reached(80 << 20);
        assert_eq!(behind.dropped, (80 << 20) - BEHIND);
    }
}
