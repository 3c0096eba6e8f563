//! A second sequential reader beside a plain tar's indexing pass.
//!
//! Indexing a plain tar of small files reads nearly every byte: headers sit
//! a few KiB apart, so the pass is one sequential read of the whole layer
//! and takes what the disk takes. One stream leaves a virtual disk (and an
//! SSD) underused: on these machines two `dd` of a 1.79 GB tar's two halves
//! at once take 0.66–0.78× the time of one `cat` of it. So while the pass
//! reads one stretch of the layer, a helper thread reads the next stretch
//! into the page cache, and the pass then finds it there.
//!
//! The helper only helps a pass that reads. A tar of big files is indexed by
//! seeking past their data, and reading that data would take the disk from
//! the pass for nothing: the helper waits until the pass has gone some way,
//! and stops whenever the pass has skipped more than half of what it passed.
//! It runs at most two stretches ahead, so the page cache it fills is
//! bounded, reads through its own open file description, so that the
//! kernel's readahead sees two clean sequential streams rather than one
//! zigzag, and stops when the pass ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::region::Region;

/// Layers shorter than this are read by the pass alone: the helper would
/// barely start before the pass ends.
const MIN_LAYER: u64 = 64 << 20;
/// The longest stretch; a layer of less than two is split in two halves.
const MAX_STRETCH: u64 = 128 << 20;
/// How far the pass goes before the helper judges whether it reads.
const START_AFTER: u64 = 4 << 20;
/// The helper's read size: also how often it looks at the pass.
const CHUNK: usize = 1 << 20;
/// How long the helper sleeps while it waits for the pass to come near.
const NAP: Duration = Duration::from_millis(2);

/// What the pass tells the helper.
#[derive(Default)]
struct PassProgress {
    /// Bytes of the layer the pass has gone past, read or skipped.
    passed: AtomicU64,
    /// Of those, the bytes it skipped without reading.
    skipped: AtomicU64,
    /// Set when the pass ends.
    ended: AtomicBool,
    /// Bytes the helper has read: for the debug log and the tests.
    helped: AtomicU64,
}

impl PassProgress {
    /// Whether the pass reads most of what it passes (after `START_AFTER`).
    fn reads_densely(&self) -> Option<bool> {
        // `skipped` grows before `passed` does: a skip seen in one is seen
        // in the other, and a big first skip is never taken for reading.
        let passed = self.passed.load(Ordering::Acquire);
        if passed < START_AFTER {
            return None;
        }
        Some(self.skipped.load(Ordering::Acquire) <= passed / 2)
    }
}

/// The helper thread of one pass; dropping it stops and joins the thread.
pub(super) struct SecondReader {
    progress: Arc<PassProgress>,
    thread: Option<JoinHandle<()>>,
}

impl SecondReader {
    /// Starts a helper reading `region` (a local file, reopened for the
    /// helper) ahead of a pass, if the layer is long enough to gain and a
    /// thread can be had; `None` means the pass reads alone.
    pub(super) fn start(region: &Region) -> Option<SecondReader> {
        if region.len() < MIN_LAYER {
            return None;
        }
        let own = region.reopened()?;
        let progress = Arc::new(PassProgress::default());
        let shared = Arc::clone(&progress);
        let thread = std::thread::Builder::new()
            .name("layerfs-read-ahead".into())
            .spawn(move || read_ahead(&own, &shared))
            .map_err(|e| log::debug!("read-ahead helper not started: {e}"))
            .ok()?;
        Some(SecondReader {
            progress,
            thread: Some(thread),
        })
    }

    /// The pass has read `n` more bytes.
    pub(super) fn read(&self, n: u64) {
        self.progress.passed.fetch_add(n, Ordering::Release);
    }

    /// The pass has skipped `n` more bytes, `unread` of them without
    /// reading them.
    pub(super) fn skipped(&self, n: u64, unread: u64) {
        self.progress.skipped.fetch_add(unread, Ordering::Release);
        self.progress.passed.fetch_add(n, Ordering::Release);
    }
}

impl Drop for SecondReader {
    fn drop(&mut self) {
        self.progress.ended.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The helper only reads and counts; a panic there has nothing
            // to hand on, and the pass has its answer already.
            let _ = thread.join();
        }
    }
}

/// The helper: reads the odd stretches `[s, 2s)`, `[3s, 4s)`, … into the
/// page cache, each once the pass is in the stretch two before it, while
/// the pass reads the even ones itself.
fn read_ahead(region: &Region, pass: &PassProgress) {
    let len = region.len();
    let stretch = (len / 2).clamp(1, MAX_STRETCH);
    let mut buf = vec![0u8; CHUNK];
    let mut start = stretch;
    while start < len {
        // Wait until the pass has shown it reads, and has come within two
        // stretches of this one.
        loop {
            if pass.ended.load(Ordering::Relaxed) {
                return finished(pass);
            }
            match pass.reads_densely() {
                Some(false) => return finished(pass),
                Some(true) if pass.passed.load(Ordering::Relaxed) + 2 * stretch >= start => break,
                _ => std::thread::park_timeout(NAP),
            }
        }
        let end = start.saturating_add(stretch).min(len);
        let mut at = start;
        while at < end {
            if pass.ended.load(Ordering::Relaxed)
                || pass.reads_densely() == Some(false)
                // The pass caught up: what is left here it reads itself.
                || pass.passed.load(Ordering::Relaxed) >= at
            {
                break;
            }
            let want = usize::try_from(end - at).map_or(CHUNK, |left| left.min(CHUNK));
            match region.read_at(&mut buf[..want], at) {
                Ok(0) => return finished(pass),
                Ok(n) => {
                    at += n as u64;
                    pass.helped.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The pass reads the same bytes and reports any error
                // itself, with the layer's name.
                Err(_) => return finished(pass),
            }
        }
        start = start.saturating_add(2 * stretch);
    }
    finished(pass)
}

fn finished(pass: &PassProgress) {
    let helped = pass.helped.load(Ordering::Relaxed);
    log::debug!("read-ahead helper read {} MiB", helped >> 20);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_support::temp_file;

    /// A layer of `len` bytes, in an unlinked file: the helper reopens it
    /// all the same.
    fn layer(len: usize) -> Region {
        temp_file(&vec![7u8; len])
    }

    #[test]
    fn no_helper_for_a_short_layer() {
        assert!(SecondReader::start(&layer(1 << 20)).is_none());
    }

    /// Waits (up to 5 s) until the helper has ended; returns what it read.
    fn wait_for_end(helper: &SecondReader) -> u64 {
        let thread = helper.thread.as_ref().expect("thread");
        for _ in 0..5000 {
            if thread.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(thread.is_finished(), "helper still running");
        helper.progress.helped.load(Ordering::Relaxed)
    }

    #[test]
    fn a_pass_that_skips_more_than_it_reads_gets_no_help() {
        let region = layer(80 << 20);
        let helper = SecondReader::start(&region).expect("helper");
        helper.read(512);
        helper.skipped(70 << 20, 70 << 20);
        assert_eq!(wait_for_end(&helper), 0);
    }

    #[test]
    fn a_dense_pass_gets_the_stretch_after_its_own_read_for_it() {
        let region = layer(80 << 20);
        let helper = SecondReader::start(&region).expect("helper");
        helper.read(START_AFTER);
        // Two stretches of 40 MiB: the pass reads the first, the helper
        // the second, all of it, and then ends.
        assert_eq!(wait_for_end(&helper), 40 << 20);
    }

    #[test]
    fn the_helper_leaves_what_the_pass_has_reached() {
        let region = layer(80 << 20);
        let helper = SecondReader::start(&region).expect("helper");
        // The pass is already past the helper's one stretch.
        helper.skipped(60 << 20, 0);
        assert_eq!(wait_for_end(&helper), 0);
    }
}
