//! The indexing pass of one big gzip member, inflated on several cores.
//!
//! A gzip layer is usually one deflate stream, which has no resume points:
//! inflated front to back it keeps one core busy while the others idle.
//! This is rapidgzip's way around that, done with zlib's own inflater:
//!
//! - The compressed member is cut into chunks of [`CHUNK`] bytes. A worker
//!   takes the next chunk and looks for the first bit in it where a block
//!   could start ([`deflate_scan`]) and a trial inflate gets through a
//!   block: that is the chunk's start, found the same way by whoever asks
//!   first.
//! - The 32 KiB before a chunk are not known yet, so its worker inflates it
//!   twice at once, each time with a made-up dictionary, chosen so that the
//!   two differ at every position and the pair of bytes names the position.
//!   A byte on which the two agree came from the compressed data; one on
//!   which they differ was copied from the window, from the position the
//!   pair names. Such bytes are sent *marked* (a 16-bit symbol) and resolved
//!   by the pass once the chunk before has been handed out. Once the last
//!   32 KiB of output hold no marked byte, the first inflater's window is
//!   the true one, and it goes on alone at full speed.
//! - In a tar, the window may never stop being needed: every header copies
//!   its magic, mode and owner from the header before, back to the chunk's
//!   start. So when the pass reaches a chunk it hands the true window to
//!   its worker, which resolves its own last 32 KiB with it at its next
//!   block end and goes on alone from there. A worker that has inflated
//!   [`MARKED_AHEAD`] bytes twice waits for that window rather than
//!   spend a second core on it.
//! - A worker stops at the first block boundary that is the next chunk's
//!   start. If it passes that start without meeting it (a start that was
//!   not a real block), it absorbs the chunk and aims at the one after; it
//!   also absorbs the next chunk if no worker has taken it yet.
//! - Only the first worker always works: the others take a chunk only while
//!   the decoding passes running leave a core idle (other layers being
//!   indexed at once keep the cores busy, and speculation costs more work
//!   than it saves then). A pass alone on the machine gets every core;
//!   several passes each inflate as they would on one core.
//!
//! So the pass hands out exactly what one inflater would: every chunk
//! begins where the one before really ended. Whatever the workers cannot
//! vouch for (an inflate error, the end of the member, a window that stays
//! unknown for [`MARKED_LIMIT`] bytes, a thread that died) ends the
//! speculation: the pass goes on alone from the last chunk start, as the
//! one-core pass would, and reports that pass's errors.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::deflate_scan;
use super::index::WINDOW;
use super::input::Input;
use super::zlib::{Flush, Inflated, Inflater};
use crate::source::region::Region;

/// Compressed bytes per chunk: enough that finding a start and the marked
/// stretch after it are a small part of inflating it; small enough that
/// two cores share a 100 MB layer evenly.
pub(super) const CHUNK: u64 = 16 << 20;

/// Decompressed bytes per piece a worker sends.
pub(super) const PIECE: usize = 256 * 1024;

/// Pieces a worker may send ahead of the pass before it waits (48 MiB):
/// the worker on the chunk after the one being handed out must get through
/// most of its chunk meanwhile, or it idles. This is what the speculation
/// costs in memory, whatever the layer's size.
const PIECES_AHEAD: usize = 192;

/// Piece buffers kept for reuse. Few: what a burst of pieces frees goes
/// back to the allocator, for the index and the tree built meanwhile,
/// rather than sit idle in this pool and raise the daemon's peak.
const SPARE: usize = 32;

/// Output inflated twice (window unknown) after which a worker waits for
/// the true window: a worker this far ahead of the pass would only slow
/// down the one the pass waits for.
pub(super) const MARKED_AHEAD: u64 = 64 << 20;

/// Output a trial inflate must reach (or a block end) for a start to count.
const TRIAL_OUTPUT: usize = 128 * 1024;

/// Compressed bytes scanned for starts at a time.
const SCAN: usize = 256 * 1024;

/// Bytes read past a scan's end so that a header near it can be checked.
const SCAN_MARGIN: usize = 1024;

/// A block boundary inside a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockEnd {
    /// Bytes of the piece before the boundary.
    pub(super) at: usize,
    /// The boundary, as a bit offset in the file.
    pub(super) bit: u64,
}

/// Decompressed bytes of a piece.
pub(super) enum Output {
    /// Known bytes.
    Bytes(Vec<u8>),
    /// The two made-up inflates' bytes: where they agree, the byte; where
    /// they differ, the pair names the byte of the window before the chunk
    /// it stands for.
    Marked(Vec<u8>, Vec<u8>),
}

/// What a worker sends about its chunk.
enum Piece {
    Data(Output, Vec<BlockEnd>),
    /// The chunk ends at this bit, where the next chunk in the chain starts.
    Stop(u64),
    /// The deflate stream ended; the gzip trailer starts at this byte.
    StreamEnd(u64),
    /// The worker cannot vouch for what follows.
    GiveUp,
}

/// What the pass gets next.
pub(super) enum Next {
    Data(Output, Vec<BlockEnd>),
    /// A chunk starts here: what the pass holds now is the window its
    /// marked bytes refer to.
    ChunkStart,
    /// The deflate stream ended; the gzip trailer starts at this byte.
    StreamEnd(u64),
    /// Speculation is over: go on with one inflater from this bit, the
    /// start of the chunk announced last (the bytes of that chunk already
    /// handed out are inflated again and dropped).
    Alone(u64),
}

/// A chunk being worked on, in chain order.
struct Job {
    index: usize,
    pieces: Receiver<Piece>,
}

/// What the workers and the pass share.
struct Plan {
    file: Arc<Region>,
    file_len: u64,
    /// Where the deflate data starts (chunk 0, whose window is empty).
    first: u64,
    chunk: u64,
    chunks: usize,
    /// Each chunk's start once found; `None` when the chunk holds none.
    starts: Vec<OnceLock<Option<u64>>>,
    marked_ahead: u64,
    /// The true window before the chunk the pass has reached, by its
    /// start, for its worker.
    window: Mutex<Option<(u64, Arc<[u8]>)>>,
    window_set: Condvar,
    stop: AtomicBool,
    /// Piece buffers handed back by the pass.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// The workers' queue: the next chunk no worker has taken (a worker
/// absorbing a chunk moves it on without the lock, so it never waits for a
/// worker that holds the lock while the pass is busy), and where to
/// announce a taken chunk, in order.
struct Queue {
    next: AtomicUsize,
    jobs: Mutex<SyncSender<Job>>,
}

impl Plan {
    /// Where chunk `k` nominally begins, as a bit offset.
    fn nominal(&self, k: usize) -> u64 {
        self.first + k as u64 * self.chunk * 8
    }

    /// Asks the kernel to read the compressed bytes from `bit` to the end
    /// of chunk `k` now, in the background. A worker's reads follow one
    /// another, each 256 KiB, and the kernel reads ahead only 128 KiB of a
    /// cold file: without this each read of a cold layer waits on the disk
    /// while the worker's core idles.
    fn read_ahead(&self, bit: u64, k: usize) {
        let from = bit / 8;
        let to = self.nominal(k + 1).div_ceil(8).min(self.file_len);
        self.file.read_ahead(from, to.saturating_sub(from));
    }

    /// Chunk `k`'s start; the first caller looks for it, later ones wait.
    fn start(&self, k: usize) -> Option<u64> {
        if k == 0 {
            return Some(self.first);
        }
        *self.starts.get(k)?.get_or_init(|| self.find_start(k))
    }

    /// The first bit of chunk `k` where a block starts and inflates.
    fn find_start(&self, k: usize) -> Option<u64> {
        let end = self.nominal(k + 1).min(self.file_len * 8);
        let mut from = self.nominal(k);
        let mut buf = vec![0u8; SCAN + SCAN_MARGIN];
        while from < end && !self.stop.load(Ordering::Relaxed) {
            let base = from / 8;
            let want =
                usize::try_from(self.file_len - base).map_or(buf.len(), |left| left.min(buf.len()));
            if self.file.read_exact_at(&mut buf[..want], base).is_err() {
                return None;
            }
            let scan_end = (from + SCAN as u64 * 8).min(end);
            for candidate in deflate_scan::candidates(&buf[..want], from - base * 8) {
                let bit = base * 8 + candidate;
                if bit >= scan_end {
                    break;
                }
                if self.trial(bit) {
                    return Some(bit);
                }
            }
            from = scan_end;
        }
        None
    }

    /// Whether an inflater started at `bit` gets through a block (or far
    /// enough) without an error.
    fn trial(&self, bit: u64) -> bool {
        static ZEROS: [u8; WINDOW] = [0; WINDOW];
        let Ok((mut input, mut inflater)) = open_at(&self.file, self.file_len, bit, 64 * 1024)
        else {
            return false;
        };
        if inflater.set_dictionary(&ZEROS).is_err() {
            return false;
        }
        let mut out = vec![0u8; 64 * 1024];
        let mut produced = 0;
        while produced < TRIAL_OUTPUT {
            let Ok(avail) = input.fill() else {
                return false;
            };
            let Ok(r) = inflater.inflate(avail, &mut out, Flush::Block) else {
                return false;
            };
            input.consume(r.consumed);
            if r.stream_end || r.block_end {
                return true;
            }
            if r.consumed == 0 && r.produced == 0 {
                return false;
            }
            produced += r.produced;
        }
        true
    }

    /// The true window before the chunk starting at `start`, once the pass
    /// has got there; waits for it if `wait`. `Err` if the pass went past
    /// that start (the chunk was absorbed by the one before) or stopped.
    fn window_before(&self, start: u64, wait: bool) -> Result<Option<Arc<[u8]>>, Stopped> {
        let mut slot = self.window.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match slot.as_ref() {
                Some((at, window)) if *at == start => return Ok(Some(Arc::clone(window))),
                Some((at, _)) if *at > start => return Err(Stopped::Gone),
                _ => {}
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(Stopped::Gone);
            }
            if !wait {
                return Ok(None);
            }
            slot = self
                .window_set
                .wait_timeout(slot, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn take_buffer(&self) -> Vec<u8> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match spare {
            Some(mut buf) => {
                buf.resize(PIECE, 0);
                buf
            }
            // Zeroed by the allocator (calloc), which can take pages the
            // kernel has zeroed already instead of writing 256 KiB of zeros.
            None => vec![0; PIECE],
        }
    }
}

/// An inflater positioned at bit `bit` of the file, and its input.
fn open_at(
    file: &Arc<Region>,
    file_len: u64,
    bit: u64,
    capacity: usize,
) -> io::Result<(Input, Inflater)> {
    let inflater = primed(file, bit)?;
    let input = Input::new(Arc::clone(file), file_len, bit.div_ceil(8), capacity);
    Ok((input, inflater))
}

/// An inflater holding the bits of the byte `bit` is in that come from it
/// on: its input then starts at the next whole byte.
fn primed(file: &Region, bit: u64) -> io::Result<Inflater> {
    let mut inflater = Inflater::new_raw()?;
    let used = (bit % 8) as u8;
    if used > 0 {
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, bit / 8)?;
        inflater.prime(8 - used, byte[0] >> used)?;
    }
    Ok(inflater)
}

/// The made-up dictionaries: position `j` holds its low byte in the
/// first, and that byte XOR (1 + its high bits) in the second, which is
/// never the same byte.
fn dictionaries() -> [Vec<u8>; 2] {
    let first = (0..WINDOW).map(|j| j as u8).collect();
    let second = (0..WINDOW)
        .map(|j| (j as u8) ^ (1 + (j >> 8) as u8))
        .collect();
    [first, second]
}

/// The window position two differing bytes of the made-up inflates name.
fn position(first: u8, second: u8) -> u16 {
    u16::from((first ^ second).wrapping_sub(1)) << 8 | u16::from(first)
}

/// A worker: takes chunks in order and inflates each until the pass is
/// gone or no chunk is left. Worker 0 always goes on; the others wait for
/// an idle core.
fn work(plan: &Plan, queue: &Queue, worker: usize, spare_core: fn() -> bool) {
    loop {
        if plan.stop.load(Ordering::Relaxed) {
            return;
        }
        if worker > 0 && !spare_core() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let (index, pieces) = {
            // Taken and announced under one lock: jobs reach the pass in
            // chunk order.
            let jobs = queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let index = queue.next.fetch_add(1, Ordering::SeqCst);
            if index >= plan.chunks {
                return;
            }
            let (tx, rx) = sync_channel(PIECES_AHEAD);
            if jobs.send(Job { index, pieces: rx }).is_err() {
                return;
            }
            (index, tx)
        };
        if let Some(start) = plan.start(index) {
            let mut chunk = ChunkInflate::new(plan, queue, index, pieces);
            if let Err(stopped) = chunk.run(start) {
                if let Stopped::GiveUp(why) = stopped {
                    log::debug!("gzip: chunk {index} from bit {start} given up: {why}");
                }
                // The pass may have gone: then nobody hears this.
                let _ = chunk.pieces.send(Piece::GiveUp);
            }
        }
    }
}

/// Why a worker stopped early.
enum Stopped {
    /// The pass no longer listens.
    Gone,
    /// The chunk cannot be vouched for, and why (for the debug log).
    GiveUp(String),
}

impl From<io::Error> for Stopped {
    fn from(e: io::Error) -> Stopped {
        Stopped::GiveUp(e.to_string())
    }
}

/// One worker inflating one chunk.
struct ChunkInflate<'a> {
    plan: &'a Plan,
    queue: &'a Queue,
    index: usize,
    pieces: SyncSender<Piece>,
    /// The next chunk this one aims to end at.
    target: usize,
    /// Output so far, and where the last marked byte ended.
    out: u64,
    marked_end: u64,
    ends: Vec<BlockEnd>,
}

impl<'a> ChunkInflate<'a> {
    fn new(plan: &'a Plan, queue: &'a Queue, index: usize, pieces: SyncSender<Piece>) -> Self {
        ChunkInflate {
            plan,
            queue,
            index,
            pieces,
            target: index + 1,
            out: 0,
            marked_end: 0,
            ends: Vec::new(),
        }
    }

    fn send(&self, piece: Piece) -> Result<(), Stopped> {
        self.pieces.send(piece).map_err(|_| Stopped::Gone)
    }

    fn run(&mut self, start: u64) -> Result<(), Stopped> {
        let plan = self.plan;
        plan.read_ahead(start, self.index);
        let (mut input, mut inflater) = open_at(&plan.file, plan.file_len, start, PIECE)?;
        if self.index > 0 && !self.run_marked(start, &mut input, &mut inflater)? {
            return Ok(());
        }
        let mut piece = plan.take_buffer();
        let mut len = 0;
        loop {
            if plan.stop.load(Ordering::Relaxed) {
                return Err(Stopped::Gone);
            }
            let avail = input.fill()?;
            let r = inflater.inflate(avail, &mut piece[len..], Flush::Block)?;
            input.consume(r.consumed);
            len += r.produced;
            self.out += r.produced as u64;
            let done = self.after_step(&r, &input, len)?;
            if done.is_some() || len == piece.len() {
                piece.truncate(len);
                let ends = std::mem::take(&mut self.ends);
                self.send(Piece::Data(Output::Bytes(piece), ends))?;
                if let Some(last) = done {
                    return self.send(last);
                }
                piece = plan.take_buffer();
                len = 0;
            }
        }
    }

    /// Inflates with the two made-up windows until the real one is no
    /// longer needed, or has arrived; false if the chunk ended on the way.
    fn run_marked(
        &mut self,
        start: u64,
        input: &mut Input,
        first: &mut Inflater,
    ) -> Result<bool, Stopped> {
        let plan = self.plan;
        let [first_dict, second_dict] = dictionaries();
        first.set_dictionary(&first_dict)?;
        let mut second = primed(&plan.file, start)?;
        second.set_dictionary(&second_dict)?;
        let (mut a, mut b) = (plan.take_buffer(), plan.take_buffer());
        // The last 32 KiB of both before the current piece.
        let (mut tail_a, mut tail_b) = (Vec::new(), Vec::new());
        let mut len = 0;
        loop {
            if plan.stop.load(Ordering::Relaxed) {
                return Err(Stopped::Gone);
            }
            let avail = input.fill()?;
            let r = first.inflate(avail, &mut a[len..], Flush::Block)?;
            if second.inflate(avail, &mut b[len..], Flush::Block)? != r {
                return Err(Stopped::GiveUp("the two inflaters disagree".into()));
            }
            input.consume(r.consumed);
            if let Some(i) = last_difference(&a[len..len + r.produced], &b[len..len + r.produced]) {
                self.marked_end = self.out + i as u64 + 1;
            }
            len += r.produced;
            self.out += r.produced as u64;
            let done = self.after_step(&r, input, len)?;
            let known = self.out >= WINDOW as u64 && self.out - self.marked_end >= WINDOW as u64;
            // At a block end the true window, if the pass has sent it, lets
            // one inflater start afresh here.
            let arrived = match (done.is_none() && !known && r.block_end, self.out) {
                (true, out) => plan.window_before(start, out >= plan.marked_ahead)?,
                (false, _) => None,
            };
            if let Some(window) = &arrived {
                let dictionary = true_tail(window, [&tail_a, &tail_b], [&a[..len], &b[..len]])
                    .ok_or_else(|| Stopped::GiveUp("a byte refers back past the member".into()))?;
                let bit = input.pos() * 8 - u64::from(r.unused_bits);
                *first = primed(&plan.file, bit)?;
                first.set_dictionary(&dictionary)?;
            }
            if done.is_some() || known || arrived.is_some() || len == PIECE {
                let ends = std::mem::take(&mut self.ends);
                a.truncate(len);
                b.truncate(len);
                keep_tail(&mut tail_a, &a);
                keep_tail(&mut tail_b, &b);
                let pair = (
                    std::mem::replace(&mut a, plan.take_buffer()),
                    std::mem::replace(&mut b, plan.take_buffer()),
                );
                len = 0;
                self.send(Piece::Data(Output::Marked(pair.0, pair.1), ends))?;
                if let Some(last) = done {
                    self.send(last)?;
                    return Ok(false);
                }
                if known || arrived.is_some() {
                    log::debug!(
                        "gzip: chunk {} inflated twice for {} bytes ({})",
                        self.index,
                        self.out,
                        if known {
                            "window no longer needed"
                        } else {
                            "window arrived"
                        }
                    );
                    return Ok(true);
                }
            }
        }
    }

    /// Takes chunk `k` into this one if no worker has taken it: true if so.
    fn claim(&self, k: usize) -> bool {
        let next = &self.queue.next;
        let mut now = next.load(Ordering::SeqCst);
        while now <= k {
            match next.compare_exchange(now, k + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(moved) => now = moved,
            }
        }
        false
    }

    /// Notes a block end and decides whether the chunk is over after an
    /// inflate step that left `len` bytes in the current piece.
    fn after_step(
        &mut self,
        r: &Inflated,
        input: &Input,
        len: usize,
    ) -> Result<Option<Piece>, Stopped> {
        if r.stream_end {
            return Ok(Some(Piece::StreamEnd(input.pos())));
        }
        if r.block_end {
            let bit = input.pos() * 8 - u64::from(r.unused_bits);
            self.ends.push(BlockEnd { at: len, bit });
            let plan = self.plan;
            while self.target < plan.chunks && bit >= plan.nominal(self.target) {
                if self.claim(self.target) {
                    plan.read_ahead(bit, self.target);
                    self.target += 1;
                    continue;
                }
                match plan.start(self.target) {
                    Some(next) if next == bit => return Ok(Some(Piece::Stop(bit))),
                    Some(next) if next > bit => break,
                    // Passed without meeting it, or no start there: that
                    // chunk is part of this one.
                    _ => self.target += 1,
                }
            }
        } else if r.consumed == 0 && r.produced == 0 {
            // Truncated or stuck: the one-core pass says which.
            return Err(Stopped::GiveUp("inflate made no progress".into()));
        }
        Ok(None)
    }
}

/// The speculation as the pass sees it; see the module docs.
pub(super) struct Speculation {
    plan: Arc<Plan>,
    jobs: Option<Receiver<Job>>,
    current: Option<Job>,
    /// Where the chunk being handed out (or the next) starts.
    expected: u64,
    threads: Vec<JoinHandle<()>>,
}

impl Speculation {
    /// Starts `workers` workers on the deflate data from bit `first` of
    /// `file`, in chunks of `chunk` compressed bytes, giving up a chunk
    /// that has inflated `marked_ahead` bytes twice wait for its window;
    /// `None` if
    /// no thread could be started.
    pub(super) fn start(
        file: Arc<Region>,
        file_len: u64,
        first: u64,
        chunk: u64,
        workers: usize,
        marked_ahead: u64,
        spare_core: fn() -> bool,
    ) -> Option<Speculation> {
        let chunk = chunk.max(1);
        let data_bits = (file_len * 8).saturating_sub(first);
        let chunks = usize::try_from(data_bits.div_ceil(chunk * 8)).ok()?.max(1);
        let plan = Arc::new(Plan {
            file,
            file_len,
            first,
            chunk,
            chunks,
            starts: (0..chunks).map(|_| OnceLock::new()).collect(),
            marked_ahead,
            window: Mutex::new(None),
            window_set: Condvar::new(),
            stop: AtomicBool::new(false),
            spare: Mutex::new(Vec::new()),
        });
        // One chunk being handed out, the next ones queued behind it: one
        // per other worker.
        let (jobs_tx, jobs_rx) = sync_channel(workers.saturating_sub(1).max(1));
        let queue = Arc::new(Queue {
            next: AtomicUsize::new(0),
            jobs: Mutex::new(jobs_tx),
        });
        let mut threads = Vec::new();
        for n in 0..workers.max(1) {
            let (plan, queue) = (Arc::clone(&plan), Arc::clone(&queue));
            match std::thread::Builder::new()
                .name(format!("gzip-{n}"))
                .spawn(move || work(&plan, &queue, n, spare_core))
            {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    log::debug!("cannot start a gzip inflating thread: {e}");
                    break;
                }
            }
        }
        if threads.is_empty() {
            return None;
        }
        Some(Speculation {
            expected: first,
            plan,
            jobs: Some(jobs_rx),
            current: None,
            threads,
        })
    }

    /// The next thing the pass must do.
    pub(super) fn next(&mut self) -> Next {
        loop {
            let Some(job) = &self.current else {
                let Some(job) = self.jobs.as_ref().and_then(|jobs| jobs.recv().ok()) else {
                    self.end();
                    return Next::Alone(self.expected);
                };
                // A chunk absorbed by the one before, or without a start.
                if self.plan.start(job.index) == Some(self.expected) {
                    self.current = Some(job);
                }
                continue;
            };
            match job.pieces.recv() {
                Ok(Piece::Data(output, ends)) => return Next::Data(output, ends),
                Ok(Piece::Stop(bit)) => {
                    self.expected = bit;
                    self.current = None;
                    return Next::ChunkStart;
                }
                Ok(Piece::StreamEnd(at)) => {
                    self.end();
                    return Next::StreamEnd(at);
                }
                Ok(Piece::GiveUp) | Err(_) => {
                    self.end();
                    return Next::Alone(self.expected);
                }
            }
        }
    }

    /// The true output before the chunk the pass has just reached (what
    /// its marked bytes refer to), for its worker.
    pub(super) fn reached(&self, window: &[u8]) {
        let mut slot = self.plan.window.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some((self.expected, Arc::from(window)));
        self.plan.window_set.notify_all();
    }

    /// Where the chunk being handed out starts, as a bit offset.
    pub(super) fn chunk_start(&self) -> u64 {
        self.expected
    }

    /// Gives a piece's buffer back for a worker to fill again.
    pub(super) fn recycle(&self, buf: Vec<u8>) {
        let mut spare = self.plan.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE {
            spare.push(buf);
        }
    }

    /// Stops the workers and waits for them.
    fn end(&mut self) {
        self.plan.stop.store(true, Ordering::Relaxed);
        self.plan.window_set.notify_all();
        // Closed channels wake any worker waiting to send.
        self.current = None;
        self.jobs = None;
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                log::debug!("a gzip inflating thread panicked");
            }
        }
    }
}

impl Drop for Speculation {
    fn drop(&mut self) {
        self.end();
    }
}

/// Keeps the last 32 KiB of `tail` followed by `more` in `tail`.
fn keep_tail(tail: &mut Vec<u8>, more: &[u8]) {
    // Only the last window of `more` can stay: a full piece is not copied
    // whole just to drop all but its end.
    let more = &more[more.len().saturating_sub(WINDOW)..];
    let excess = (tail.len() + more.len()).saturating_sub(WINDOW);
    tail.drain(..excess.min(tail.len()));
    tail.extend_from_slice(more);
}

/// The true last 32 KiB of a chunk's output so far (`tails` then
/// `current`, both as the two made-up inflates gave them), given the true
/// `window` before the chunk; what an inflater going on from here needs as
/// its dictionary. `None` if a byte refers back past `window`.
fn true_tail(window: &[u8], tails: [&[u8]; 2], current: [&[u8]; 2]) -> Option<Vec<u8>> {
    let mut pair = [Vec::new(), Vec::new()];
    for ((both, tail), now) in pair.iter_mut().zip(tails).zip(current) {
        both.extend_from_slice(tail);
        both.extend_from_slice(now);
        let excess = both.len().saturating_sub(WINDOW);
        both.drain(..excess);
    }
    let [first, second] = pair;
    let mut resolved = vec![0u8; first.len()];
    if !resolve(&first, &second, window, &mut resolved) {
        return None;
    }
    // Less than 32 KiB of output: the window before it counts too.
    let mut dictionary = window[window.len().saturating_sub(WINDOW - resolved.len())..].to_vec();
    dictionary.extend_from_slice(&resolved);
    Some(dictionary)
}

/// Bytes compared at once: four words.
const STRIDE: usize = 32;

/// Whether `a` and `b` (at least [`STRIDE`] bytes each) differ in their
/// first [`STRIDE`] bytes: word compares the compiler keeps in registers,
/// where a slice compare would call `memcmp` for every stride.
fn stride_differs(a: &[u8], b: &[u8]) -> bool {
    (0..STRIDE)
        .step_by(8)
        .fold(0, |diff, k| diff | (le_word(&a[k..]) ^ le_word(&b[k..])))
        != 0
}

/// Where the last byte on which `a` and `b` differ is.
fn last_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let n = a.len().min(b.len());
    let mut end = n;
    while end >= STRIDE {
        let start = end - STRIDE;
        if stride_differs(&a[start..end], &b[start..end]) {
            return (start..end).rev().find(|&i| a[i] != b[i]);
        }
        end = start;
    }
    (0..end).rev().find(|&i| a[i] != b[i])
}

/// Writes the true bytes of a marked piece into `out`, given the (up to
/// 32 KiB of) output before its chunk; false if a byte refers to before
/// that output (a stream referring back past its member's start, which
/// the one-core pass reports).
pub(super) fn resolve(first: &[u8], second: &[u8], window: &[u8], out: &mut [u8]) -> bool {
    let n = first.len().min(second.len()).min(out.len());
    let (first, second, out) = (&first[..n], &second[..n], &mut out[..n]);
    out.copy_from_slice(first);
    // Window position `p` is `window[p - missing]`: a short window lacks
    // the first positions.
    let missing = WINDOW.saturating_sub(window.len());
    let fix = |i: usize, out: &mut [u8]| {
        let p = usize::from(position(first[i], second[i]));
        match p.checked_sub(missing).and_then(|w| window.get(w)) {
            Some(&byte) => {
                out[i] = byte;
                true
            }
            None => false,
        }
    };
    // Eight bytes compared at once; a differing word names its differing
    // bytes by its set bits, so a stretch dense with marked bytes costs one
    // step per marked byte and a sparse one a compare per word.
    let words = n - n % 8;
    for (k, (x, y)) in first
        .chunks_exact(8)
        .zip(second.chunks_exact(8))
        .enumerate()
    {
        let mut diff = le_word(x) ^ le_word(y);
        while diff != 0 {
            let byte = diff.trailing_zeros() / 8;
            if !fix(k * 8 + byte as usize, out) {
                return false;
            }
            diff &= !(0xff << (byte * 8));
        }
    }
    (words..n).all(|i| first[i] == second[i] || fix(i, out))
}

/// The first eight bytes of `b` as a little-endian word: byte `i` is bits
/// `8i..8i+8`.
#[inline(always)]
fn le_word(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_made_up_dictionaries_differ_everywhere_and_name_each_position() {
        let [first, second] = dictionaries();
        let mut seen = std::collections::HashSet::new();
        for j in 0..WINDOW {
            assert_ne!(first[j], second[j], "position {j}");
            assert_eq!(usize::from(position(first[j], second[j])), j);
            assert!(seen.insert((first[j], second[j])));
        }
    }

    #[test]
    fn marked_bytes_resolve_through_the_window_and_known_ones_stay() {
        let [first_dict, second_dict] = dictionaries();
        let window: Vec<u8> = (0..WINDOW).map(|i| (i * 7 % 251) as u8).collect();
        // Known bytes 'x', and copies of window positions 0, 5 and 32767.
        let picks = [0usize, 5, WINDOW - 1];
        let mut a = vec![b'x'; 200];
        let mut b = vec![b'x'; 200];
        for (k, &j) in picks.iter().enumerate() {
            a[10 + 70 * k] = first_dict[j];
            b[10 + 70 * k] = second_dict[j];
        }
        let mut out = vec![0u8; 200];
        assert!(resolve(&a, &b, &window, &mut out));
        for (k, &j) in picks.iter().enumerate() {
            assert_eq!(out[10 + 70 * k], window[j]);
        }
        assert_eq!(out.iter().filter(|&&c| c == b'x').count(), 197);
        assert_eq!(last_difference(&a, &b), Some(150));
        assert_eq!(last_difference(&a[..9], &b[..9]), None);
        // A window shorter than 32 KiB: position 0 is before its start.
        assert!(!resolve(&a, &b, &window[1..], &mut out));
    }

    #[test]
    fn the_kept_tail_is_the_last_window_of_everything_passed() {
        let all: Vec<u8> = (0..3 * WINDOW + 77).map(|i| (i % 251) as u8).collect();
        for cuts in [
            vec![10, 20, WINDOW],
            vec![WINDOW + 5, 2 * WINDOW],
            vec![3 * WINDOW],
            vec![1, 2, 3],
        ] {
            let mut tail = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([all.len()]) {
                keep_tail(&mut tail, &all[at..cut]);
                at = cut;
                assert_eq!(tail, all[at.saturating_sub(WINDOW)..at], "after {at}");
            }
        }
    }

    #[test]
    fn dense_marked_runs_and_a_ragged_tail_all_resolve() {
        let [first_dict, second_dict] = dictionaries();
        let window: Vec<u8> = (0..WINDOW).map(|i| (i * 13 % 253) as u8).collect();
        // 61 bytes: every byte of 5..30 and 57..61 copied from the window
        // (positions 1000 + i), the others known; 61 is not a multiple of 8.
        let marked = |i: usize| (5..30).contains(&i) || i >= 57;
        let (mut a, mut b) = (vec![0u8; 61], vec![0u8; 61]);
        for i in 0..61 {
            if marked(i) {
                a[i] = first_dict[1000 + i];
                b[i] = second_dict[1000 + i];
            } else {
                a[i] = i as u8;
                b[i] = i as u8;
            }
        }
        let mut out = vec![0u8; 61];
        assert!(resolve(&a, &b, &window, &mut out));
        for i in 0..61 {
            let want = if marked(i) { window[1000 + i] } else { i as u8 };
            assert_eq!(out[i], want, "byte {i}");
        }
        assert_eq!(last_difference(&a, &b), Some(60));
        // A window too short to hold the positions named: refused.
        assert!(!resolve(&a, &b, &window[WINDOW - 1000 - 60..], &mut out));
    }
}
