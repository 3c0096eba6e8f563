//! Asking the disk for the directory-layer files a reader is about to open,
//! when the kernel reads them itself (`passthrough.rs`).
//!
//! A file passed through is read by the kernel from the file on disk, so
//! the daemon never reads it and the pusher (`pusher.rs`) never sees the
//! reader; each cold small file then costs the reader a disk read of its
//! own, one after the other: a `tar -c` of 200k small files took 1.3 times
//! as long as reading them through the daemon, which reads ahead. But every
//! open of such a file reaches the daemon, and a reader going through a
//! directory opens its inodes in order: the same [`Detector`] that plans
//! the pusher's pushes sees it. The files it plans are opened on a thread
//! of their own (checked as any open is) and their bytes asked of the disk
//! (POSIX_FADV_WILLNEED), so that they are in the page cache, and their
//! inodes in memory, by the time the reader opens them.
//!
//! Bounds: the detector plans at most two chunks of [`CHUNK_BYTES`] ahead;
//! files larger than [`MAX_FILE`] are left to the kernel's own read-ahead;
//! one descriptor is open on the thread at a time.
//!
//! [`CHUNK_BYTES`]: super::readahead::CHUNK_BYTES
//! [`MAX_FILE`]: super::readahead::MAX_FILE

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::passthrough::dir_file;
use super::readahead::{next_plan, Detector, PlanQueue, MAX_FILE};
use crate::stack::Stack;
use crate::tree::Ino;

/// Warms the files a reader opens next; see the module docs.
pub(super) struct OpenAhead {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    stack: Arc<Stack>,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    detector: Detector,
    plans: PlanQueue,
    /// The last file opened: opened again (a reader that reads it, then
    /// maps it), it is no step out of order.
    last: Option<Ino>,
}

impl OpenAhead {
    pub(super) fn new(stack: Arc<Stack>) -> OpenAhead {
        OpenAhead {
            shared: Arc::new(Shared {
                stack,
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
            thread: Mutex::new(None),
        }
    }

    /// Directory-layer file `ino` was opened and passed through.
    pub(super) fn opened(&self, ino: Ino) {
        let mut state = self.shared.lock();
        if state.last.replace(ino) == Some(ino) {
            return;
        }
        let mut advice = state.detector.missed(self.shared.stack.tree(), ino);
        let planned = !advice.plans.is_empty();
        state.plans.follow(&mut advice);
        if !planned {
            return;
        }
        drop(state);
        self.shared.wake.notify_one();
        self.start_thread();
    }

    fn start_thread(&self) {
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.is_some() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new()
            .name("layerfs-open-ahead".into())
            .spawn(move || warm(&shared))
        {
            Ok(handle) => *thread = Some(handle),
            Err(e) => {
                // Opens are served all the same; the reader waits for the disk.
                log::debug!("open-ahead thread not started: {e}");
                self.shared.lock().plans.stop();
            }
        }
    }
}

impl Drop for OpenAhead {
    fn drop(&mut self) {
        self.shared.lock().plans.stop();
        self.shared.wake.notify_all();
        let thread = self.thread.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(thread) = thread.take() {
            // The thread only opens and advises; a panic there has nothing
            // to hand on.
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the plan of `generation` is still wanted, and the last
    /// file the reader opened.
    fn progress(&self, generation: u64) -> (bool, Option<Ino>) {
        let state = self.lock();
        (state.plans.current(generation), state.last)
    }
}

/// The thread: warms the planned files until stopped.
fn warm(shared: &Shared) {
    loop {
        let Some((plan, generation)) = next_plan(shared.lock(), &shared.wake, |s| &mut s.plans)
        else {
            return;
        };
        let mut warmed = 0;
        for ino in (plan.first..=plan.last).filter(|&ino| Some(ino) != plan.trip) {
            let (current, reader_at) = shared.progress(generation);
            if !current {
                break;
            }
            // A file the reader has opened already is too late to warm:
            // skipped, so that a thread left behind catches up.
            if reader_at.is_some_and(|at| ino <= at) {
                continue;
            }
            let Some((dir, start, size)) = dir_file(&shared.stack, ino) else {
                continue;
            };
            if size > MAX_FILE {
                continue;
            }
            // A file that changed is left for the reader's open to report.
            if let Some(Ok(file)) = dir.open_whole(start, size) {
                match crate::sys::read_into_page_cache(&file, 0, size) {
                    Ok(()) => warmed += 1,
                    Err(e) => log::debug!("open ahead: posix_fadvise: {e}"),
                }
            }
        }
        log::debug!(
            "open ahead: {warmed} files of inodes {}..={} asked of the disk",
            plan.first,
            plan.last
        );
    }
}
