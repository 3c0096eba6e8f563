//! Putting the files a reader is about to read in the kernel's page cache
//! before it asks (FUSE_NOTIFY_STORE), on a thread of its own.
//!
//! The plans come from the [`Detector`] (`readahead.rs`): consecutive
//! files of one directory, which lie end to end in their layer. The thread
//! reads each run of them in one request of up to [`SPAN_MAX`] bytes (a
//! compressed layer decodes it on this thread, so the reader's core only
//! copies pages; only while the indexing passes leave a core spare, the
//! budget `source::spare_core` keeps), and hands each file's bytes to the kernel, which then
//! serves the reader's reads of them without asking the daemon. What it
//! pushes is what a read of the same file would have served; a file it
//! cannot read is left for the reader's own read, which reports the error.
//!
//! A plain tar's bytes ahead of the reader are also asked of the disk
//! early (POSIX_FADV_WILLNEED, [`LAYER_AHEAD`] bytes): a directory of small
//! files is read in a few milliseconds, less than a cold read of its span
//! takes, so without it the pusher would always come too late; with it the
//! next directories' bytes are in memory when the reader gets there. That
//! is asked on a second thread, [`ASK_STEP`] bytes further each time the
//! reader goes that far: the call returns only once the kernel has found
//! pages for all of it and queued the reads (milliseconds for 16 MiB), and
//! a pusher waiting that long was overtaken by the reader, which then read
//! a directory or two itself, a request per file.
//!
//! A plain layer's pages that a run was read from are handed back once its
//! files are pushed: the kernel then holds the files' pages, and the
//! layer's copy of the same bytes would only double what the read claims
//! (on these VMs every page claimed costs; see `source/drop_behind.rs`). A
//! layer mostly cached before the first push keeps its pages.
//!
//! Bounds: one buffer of at most [`SPAN_MAX`] bytes, at most two chunks
//! ([`readahead::CHUNK_BYTES`] each) pushed ahead of the reader, and
//! [`LAYER_AHEAD`] bytes of a plain layer asked for ahead of it.
//! Notifying is safe from this thread: it never serves a request, so a
//! page the kernel keeps locked for a read in progress is unlocked by a
//! worker's reply while this thread waits for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use fuser::{INodeNo, Notifier};

use super::readahead::{self, next_plan, Advice, Detector, Plan, PlanQueue};
use crate::source::Codec;
use crate::stack::{Layer, Stack};
use crate::tree::{Ino, NodeKind};

/// The largest read of a layer for one run of files.
const SPAN_MAX: u64 = 1 << 20;
/// The first run of a plan is at most this long, and each next one twice
/// the one before: the reader goes on reading while the first run is read
/// and pushed, and each file it gets to first is a push too late.
const SPAN_FIRST: u64 = 32 << 10;
/// How far ahead of the reader a plain layer's bytes are asked of the
/// disk.
const LAYER_AHEAD: u64 = 64 << 20;
/// Asked again each time the reader has gone this far: the disk always
/// has the next stretch to read, rather than half the window at once.
const ASK_STEP: u64 = 8 << 20;
/// The largest gap between two files' data still read through, rather
/// than starting a new read (tar headers are 512 bytes; a layer's other
/// members between two siblings are rarely much more).
const SPAN_GAP: u64 = 64 << 10;

/// Pushes files ahead of readers; see the module docs.
pub(super) struct Pusher {
    shared: Arc<Shared>,
    /// The pushing thread and the one asking the disk ahead.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    stack: Arc<Stack>,
    /// Set once the session exists.
    notifier: Arc<OnceLock<Notifier>>,
    state: Mutex<State>,
    /// Wakes the pushing thread: plans are queued.
    wake: Condvar,
    /// Wakes the thread asking the disk: a prefetch is set.
    wake_ahead: Condvar,
    /// Files up to this one were read by the reader itself (in the
    /// current stream): pushing them is too late.
    reader_at: AtomicU64,
}

#[derive(Default)]
struct State {
    detector: Detector,
    plans: PlanQueue,
    /// A plain layer's bytes to ask of the disk: layer, from, to.
    prefetch: Option<(usize, u64, u64)>,
    /// How far the last prefetch went: layer, offset.
    ahead: Option<(usize, u64)>,
    /// Per layer, once known: whether its pages may be dropped behind.
    may_drop: std::collections::HashMap<usize, bool>,
    /// Totals, for the debug log.
    files: u64,
    bytes: u64,
}

/// One file of a plan: where its bytes are.
struct Pushed {
    ino: Ino,
    layer: usize,
    offset: u64,
    size: u64,
}

impl Pusher {
    /// A pusher for `stack`'s files; nothing runs until a reader reads in
    /// order, nor while `notifier` is unset.
    pub(super) fn new(stack: Arc<Stack>, notifier: Arc<OnceLock<Notifier>>) -> Pusher {
        Pusher {
            shared: Arc::new(Shared {
                stack,
                notifier,
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                wake_ahead: Condvar::new(),
                reader_at: AtomicU64::new(0),
            }),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// A read of file `ino` from its start reached the daemon.
    pub(super) fn missed(&self, ino: Ino) {
        if self.shared.notifier.get().is_none() {
            return;
        }
        let mut state = self.shared.lock();
        let advice = state.detector.missed(self.shared.stack.tree(), ino);
        self.follow(state, advice, ino, ino);
    }

    /// Directory `dir` was listed to its end (a READDIR or READDIRPLUS
    /// past its last entry): the kernel knows its files, which may be
    /// pushed from now on.
    pub(super) fn listed(&self, dir: Ino) {
        if self.shared.notifier.get().is_none() {
            return;
        }
        let mut state = self.shared.lock();
        let advice = state.detector.listed(self.shared.stack.tree(), dir);
        // Nothing of the directory is read yet; its first file (the trip,
        // if it has one) is where the reader starts.
        let Some(plan) = advice.plans.first() else {
            return;
        };
        let (before, first) = (
            plan.first.saturating_sub(1),
            plan.trip.unwrap_or(plan.first),
        );
        self.follow(state, advice, before, first);
    }

    /// Acts on `advice`: the reader has read files up to `read` itself and
    /// goes on at file `next`.
    fn follow(&self, mut state: MutexGuard<'_, State>, mut advice: Advice, read: Ino, next: Ino) {
        if let Some(at) = advice.reader_at {
            self.shared.reader_at.fetch_max(at, Ordering::Relaxed);
        }
        if advice.restart {
            self.shared.reader_at.store(read, Ordering::Relaxed);
        }
        let planned = !advice.plans.is_empty();
        state.plans.follow(&mut advice);
        if !planned {
            return;
        }
        self.plan_prefetch(&mut state, next);
        drop(state);
        self.shared.wake.notify_one();
        self.shared.wake_ahead.notify_one();
        self.start_threads();
    }

    /// Asks for a plain layer's bytes ahead of file `ino`, which the
    /// reader reads in order, once it is half way through what was asked.
    fn plan_prefetch(&self, state: &mut State, ino: Ino) {
        let stack = &self.shared.stack;
        let (Some(node), Some(data)) = (stack.tree().node(ino), stack.tree().file_data(ino)) else {
            return;
        };
        let layer = node.layer() as usize;
        if stack.layers().get(layer).and_then(plain_file).is_none() {
            return;
        }
        let at = data.offset;
        let from = match state.ahead {
            Some((l, until)) if l == layer && (at..=at + LAYER_AHEAD).contains(&until) => {
                if until - at > LAYER_AHEAD - ASK_STEP {
                    return;
                }
                until
            }
            _ => at,
        };
        let to = at + LAYER_AHEAD;
        state.ahead = Some((layer, to));
        // A stretch asked for but not yet taken by the thread is asked
        // with this one, not dropped.
        let from = match state.prefetch {
            Some((l, pending, _)) if l == layer && pending < from => pending,
            _ => from,
        };
        state.prefetch = Some((layer, from, to));
    }

    fn start_threads(&self) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if !threads.is_empty() {
            return;
        }
        let spawn = |name: &str, run: fn(&Shared)| {
            let shared = Arc::clone(&self.shared);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&shared))
        };
        for (name, run) in [
            ("layerfs-push", push as fn(&Shared)),
            ("layerfs-ahead", ask_ahead),
        ] {
            match spawn(name, run) {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    // Reads are served all the same, each by its own request.
                    log::debug!("read-ahead thread not started: {e}");
                    self.shared.lock().plans.stop();
                    self.shared.wake_ahead.notify_all();
                    return;
                }
            }
        }
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.shared.lock().plans.stop();
        self.shared.wake.notify_all();
        self.shared.wake_ahead.notify_all();
        let threads = self.threads.get_mut().unwrap_or_else(|p| p.into_inner());
        for thread in threads.drain(..) {
            // The threads only read and notify; a panic there has
            // nothing to hand on.
            let _ = thread.join();
        }
        let state = self.shared.lock();
        if state.files > 0 {
            log::debug!(
                "read ahead: {} files ({} bytes) put in the page cache",
                state.files,
                state.bytes
            );
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the plan of `generation` is still wanted.
    fn current(&self, generation: u64) -> bool {
        self.lock().plans.current(generation)
    }

    /// Whether pages of plain layer `layer` may be dropped once pushed:
    /// not if it was mostly cached before the first push.
    fn may_drop(&self, layer: usize) -> bool {
        if let Some(&known) = self.lock().may_drop.get(&layer) {
            return known;
        }
        let layers = self.stack.layers();
        let cached = layers.get(layer).and_then(|l| {
            let (file, base) = plain_file(l)?;
            let len = match l {
                Layer::Tar(source) => source.file_len(),
                Layer::Dir(_) => return None,
            };
            crate::sys::cached_pages(file, base, len).ok()
        });
        let may = cached.is_some_and(|(cached, pages)| cached * 2 <= pages);
        self.lock().may_drop.insert(layer, may);
        may
    }

    /// Asks the disk for `from..to` of plain layer `layer`, without
    /// waiting for it.
    fn prefetch(&self, layer: usize, from: u64, to: u64) {
        let Some((file, base)) = self.stack.layers().get(layer).and_then(plain_file) else {
            return;
        };
        if let Err(e) = crate::sys::read_into_page_cache(file, base + from, to - from) {
            log::debug!("read ahead: posix_fadvise: {e}");
        }
    }
}

/// A plain tar layer's open file and where the layer starts in it.
fn plain_file(layer: &Layer) -> Option<(&std::fs::File, u64)> {
    match layer {
        Layer::Tar(source) if source.codec() == Codec::Plain => {
            Some((source.file()?, source.offset()))
        }
        _ => None,
    }
}

/// The second thread: asks the disk for a plain layer's bytes ahead of
/// the reader, until stopped.
fn ask_ahead(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.plans.stopped() {
            return;
        }
        if let Some((layer, from, to)) = state.prefetch.take() {
            drop(state);
            shared.prefetch(layer, from, to);
            state = shared.lock();
            continue;
        }
        state = shared
            .wake_ahead
            .wait(state)
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// The thread: pushes plans until stopped.
fn push(shared: &Shared) {
    let mut buf = Vec::new();
    loop {
        let Some((plan, generation)) = next_plan(shared.lock(), &shared.wake, |s| &mut s.plans)
        else {
            return;
        };
        let Some(notifier) = shared.notifier.get() else {
            continue;
        };
        let files = files_of(&shared.stack, &plan);
        for span in spans(&files) {
            if !shared.current(generation) {
                break;
            }
            let reader_at = shared.reader_at.load(Ordering::Relaxed);
            let span: Vec<&Pushed> = span.iter().filter(|f| f.ino > reader_at).collect();
            let (Some(first), Some(last)) = (span.first(), span.last()) else {
                continue;
            };
            let (start, end) = (first.offset, last.offset + last.size);
            let Ok(len) = usize::try_from(end - start) else {
                break;
            };
            buf.resize(len, 0);
            let Some(layer) = shared.stack.layers().get(first.layer) else {
                break;
            };
            // Decoding ahead pays only on a core that indexing passes
            // leave idle; without one the reader decodes what it reads.
            if plain_file(layer).is_none() && !crate::source::spare_core() {
                break;
            }
            if layer.read_exact_at(start, &mut buf).is_err() {
                // Left to the reader's own reads, which report it.
                break;
            }
            let mut pushed = (0, 0);
            for file in &span {
                if file.ino <= shared.reader_at.load(Ordering::Relaxed) {
                    continue;
                }
                let at = (file.offset - start) as usize;
                let bytes = &buf[at..at + file.size as usize];
                if let Err(e) = notifier.store(INodeNo(file.ino), 0, bytes) {
                    log::debug!("read ahead: pushing inode {} failed: {e}", file.ino);
                    break;
                }
                pushed.0 += 1;
                pushed.1 += file.size;
            }
            if shared.may_drop(first.layer) {
                if let Some((file, base)) = plain_file(layer) {
                    let _ = crate::sys::drop_from_page_cache(file, base + start, end - start);
                }
            }
            let mut state = shared.lock();
            state.files += pushed.0;
            state.bytes += pushed.1;
        }
        // A span's buffer is not kept between plans beyond the bound.
        buf.truncate(0);
        buf.shrink_to(SPAN_MAX as usize);
    }
}

/// The files `plan` pushes, with where their bytes lie: regular files
/// with data, not sparse, of at most [`readahead::MAX_FILE`] bytes.
fn files_of(stack: &Stack, plan: &Plan) -> Vec<Pushed> {
    let tree = stack.tree();
    (plan.first..=plan.last)
        .filter(|&ino| Some(ino) != plan.trip)
        .filter_map(|ino| {
            let node = tree.node(ino)?;
            if node.kind() != NodeKind::File || node.size == 0 {
                return None;
            }
            let data = tree.file_data(ino)?;
            if data.sparse.is_some() || data.size > readahead::MAX_FILE {
                return None;
            }
            Some(Pushed {
                ino,
                layer: node.layer() as usize,
                offset: data.offset,
                size: data.size,
            })
        })
        .collect()
}

/// `files` cut into runs read in one request each: same layer, in
/// ascending order, gaps of at most [`SPAN_GAP`], at most [`SPAN_FIRST`]
/// for the first run and twice the one before for each next one, up to
/// [`SPAN_MAX`] (a file longer than that is a run of its own).
fn spans(files: &[Pushed]) -> Vec<&[Pushed]> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut limit = SPAN_FIRST;
    for i in 1..=files.len() {
        let cut = match (files.get(start), files.get(i - 1), files.get(i)) {
            (Some(first), Some(prev), Some(next)) => {
                let prev_end = prev.offset + prev.size;
                next.layer != first.layer
                    || next.offset < prev_end
                    || next.offset - prev_end > SPAN_GAP
                    || next.offset + next.size - first.offset > limit
            }
            _ => true,
        };
        if cut {
            runs.push(&files[start..i]);
            start = i;
            limit = (limit * 2).min(SPAN_MAX);
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: Ino, layer: usize, offset: u64, size: u64) -> Pushed {
        Pushed {
            ino,
            layer,
            offset,
            size,
        }
    }

    fn inos(runs: &[&[Pushed]]) -> Vec<Vec<Ino>> {
        runs.iter()
            .map(|r| r.iter().map(|f| f.ino).collect())
            .collect()
    }

    #[test]
    fn files_end_to_end_are_read_in_one_span() {
        let files = [
            file(2, 0, 512, 1000),
            file(3, 0, 2048, 5000),
            file(4, 0, 7680, 100),
        ];
        assert_eq!(inos(&spans(&files)), vec![vec![2, 3, 4]]);
    }

    #[test]
    fn spans_break_at_layers_gaps_backward_steps_and_their_bound() {
        let files = [
            file(2, 0, 0, 100),
            file(3, 1, 200, 100),
            file(4, 1, 400 + SPAN_GAP + 1, 100),
            file(5, 1, 0, 100),
            file(6, 1, 1024, 1000),
            file(7, 1, 2048, SPAN_MAX),
            file(8, 1, SPAN_MAX + 2048, 100),
        ];
        assert_eq!(
            inos(&spans(&files)),
            vec![vec![2], vec![3], vec![4], vec![5, 6], vec![7], vec![8]]
        );
        assert!(spans(&[]).is_empty());
    }

    #[test]
    fn the_first_spans_are_short_and_grow_to_the_bound() {
        // 1000 files of 4 KiB end to end.
        let files: Vec<Pushed> = (0..1000).map(|n| file(n + 2, 0, n * 4096, 4096)).collect();
        let lens: Vec<u64> = spans(&files)
            .iter()
            .map(|r| r.len() as u64 * 4096)
            .collect();
        assert_eq!(lens[0], SPAN_FIRST);
        assert_eq!(lens[1], 2 * SPAN_FIRST);
        assert!(lens.iter().all(|&l| l <= SPAN_MAX));
        assert!(lens.contains(&SPAN_MAX));
        assert_eq!(lens.iter().sum::<u64>(), 1000 * 4096);
    }
}
