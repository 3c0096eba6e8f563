//! The indexing pass of a multi-frame stream, decoded on several cores.
//!
//! Frames of a zstd stream decode on their own, and a frame's compressed
//! length can be read from its block headers without decoding it. So one
//! thread (the *splitter*) walks the file cutting it into frames, a few
//! workers each decode a whole frame with the codec's [`StepDecoder`] (the
//! same decoder and the same [`StepPass`] the one-core pass uses, over just
//! that frame's bytes), and the pass hands the decoded frames out in stream
//! order. The frame table is the one-core pass's: each frame's own table,
//! shifted to where the frame lies in the file and in the stream.
//!
//! Errors stay those of the one-core pass. The splitter never reports
//! anything: wherever its walk meets something it cannot vouch for (an
//! unknown magic, a reserved block type, a frame running past the end of the
//! file, a read error, a window too big to hold several times, a frame too
//! long to buffer), the rest of the file becomes one last piece of work,
//! decoded front to back by one decoder exactly as the one-core pass would.
//! A frame that fails in the middle is handed out up to the byte its decoder
//! reached, then its error: the same bytes, then the same error, as before.
//!
//! Memory is bounded whatever the layer holds: at most [`JOBS_AHEAD`] frames
//! exist beyond the one being handed out, each buffering at most
//! [`JOB_BUFFER`] decoded bytes before its worker waits, and each holding one
//! decoder whose window the splitter has checked (only the last piece, the
//! rest of the file, may have a bigger window, as the one-core pass does).

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::access::IndexingDecoder;
use super::frames::{FrameStart, FrameTable, StepDecoder, StepPass, MAX_FRAMES};
use super::region::Region;
use super::seek::SeekIndex;

/// Decoded bytes per piece handed from a worker to the pass.
const CHUNK: usize = 1024 * 1024;

/// Decoded bytes one frame may buffer before its worker waits for the pass
/// to take them: a pzstd frame at the default levels (8 MiB) fits, so a
/// worker ahead of the pass finishes its frame and moves on rather than
/// idling.
pub(super) const JOB_BUFFER: usize = 8 * CHUNK;

/// Workers decoding frames at most, whatever the core count: past this the
/// pass is bound by reading the file and handing bytes out.
const MAX_WORKERS: usize = 4;

/// What the splitter found at a compressed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// A frame that can be decoded on its own, ending at this offset.
    Frame(u64),
    /// Bytes that decode to nothing (a skippable frame), ending here.
    Skip(u64),
    /// Anything else: the rest of the file is decoded in one piece.
    Rest,
}

/// Finds where the piece of `file` (`len` bytes) at offset `at` ends; never
/// fails, since [`Cut::Rest`] leaves every judgement to the decoder.
pub(super) type Walk = fn(file: &Region, at: u64, len: u64) -> Cut;

/// Makes a fresh decoder for one frame.
pub(super) type MakeDecoder<D> = fn() -> io::Result<D>;

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

/// One piece of work: decode `file[comp..end]` (to the file's end if
/// `end` is `None`) and send it, in order, to `out`.
struct Work {
    comp: u64,
    end: Option<u64>,
    out: SyncSender<Piece>,
}

/// What a worker sends about its frame.
enum Piece {
    /// Decoded bytes, in order.
    Data(Vec<u8>),
    /// The frame ended; its table is relative to its own start.
    End(FrameTable),
    /// Its decoder failed after the bytes already sent.
    Failed(io::Error),
}

/// A frame the pass will hand out, in stream order.
struct Job {
    comp: u64,
    pieces: Receiver<Piece>,
}

/// Decoded bytes waiting in channels, and the most there ever were: what
/// the memory bound is about.
#[derive(Debug, Default)]
pub(super) struct Buffered {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Buffered {
    fn add(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        self.most.fetch_max(now, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::Relaxed);
    }

    /// The high-water mark of decoded bytes buffered between threads.
    #[cfg(test)]
    pub(super) fn most(&self) -> usize {
        self.most.load(Ordering::Relaxed)
    }
}

/// What the pass and its workers share.
struct Shared {
    buffered: Buffered,
    /// Chunks handed out and given back, for reuse.
    spare: Mutex<Vec<Vec<u8>>>,
    spare_max: usize,
    wrap: fn(FrameTable) -> SeekIndex,
}

impl Shared {
    /// A chunk of [`CHUNK`] bytes to decode into.
    fn take_chunk(&self) -> Vec<u8> {
        let mut chunk = self
            .spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        chunk.resize(CHUNK, 0);
        chunk
    }

    fn give_back(&self, chunk: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < self.spare_max && chunk.capacity() >= CHUNK {
            spare.push(chunk);
        }
    }
}

/// The pass; see the module docs.
pub(super) struct ParallelPass {
    jobs: Option<Receiver<Job>>,
    /// The frame being handed out, and where its output starts.
    current: Option<(Job, u64)>,
    chunk: Vec<u8>,
    /// `chunk[pos..]` is not handed out yet.
    pos: usize,
    /// Decoded bytes handed out.
    decomp: u64,
    table: FrameTable,
    /// A failure already reported, repeated to later reads.
    failed: Option<(io::ErrorKind, String)>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl ParallelPass {
    /// Starts the splitter and `workers` workers over `file`; `None` if no thread could be started, for the caller to fall back to
    /// the one-core pass.
    pub(super) fn start<D: StepDecoder + 'static>(
        file: Arc<Region>,
        walk: Walk,
        make: MakeDecoder<D>,
        workers: usize,
        wrap: fn(FrameTable) -> SeekIndex,
    ) -> Option<ParallelPass> {
        let workers = workers.max(1);
        let (work_tx, work_rx) = channel::<Work>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        // Every worker busy on a frame, and the pass handing out one more.
        let (job_tx, job_rx) = sync_channel::<Job>(workers);
        let shared = Arc::new(Shared {
            buffered: Buffered::default(),
            spare: Mutex::new(Vec::new()),
            spare_max: workers + 2,
            wrap,
        });
        let mut threads = Vec::new();
        for n in 0..workers {
            let (file, queue, shared) =
                (Arc::clone(&file), Arc::clone(&work_rx), Arc::clone(&shared));
            let spawned = std::thread::Builder::new()
                .name(format!("frames-{n}"))
                .spawn(move || work(&file, &queue, make, &shared));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    log::debug!("cannot start a frame decoding thread: {e}");
                    break;
                }
            }
        }
        if threads.is_empty() {
            return None;
        }
        let spawned = std::thread::Builder::new()
            .name("frames-split".into())
            .spawn(move || split(&file, walk, &work_tx, &job_tx));
        let mut pass = ParallelPass {
            jobs: Some(job_rx),
            current: None,
            chunk: Vec::new(),
            pos: 0,
            decomp: 0,
            table: FrameTable::default(),
            failed: None,
            shared,
            threads,
        };
        match spawned {
            Ok(handle) => pass.threads.push(handle),
            Err(e) => {
                // The workers' queue is closed: they end, and are joined.
                log::debug!("cannot start the frame splitting thread: {e}");
                pass.stop();
                return None;
            }
        }
        Some(pass)
    }

    /// Decoded bytes buffered between threads (for the memory bound's tests).
    #[cfg(test)]
    pub(super) fn most_buffered(&self) -> usize {
        self.shared.buffered.most()
    }

    /// Makes `chunk[pos..]` non-empty; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        while self.pos == self.chunk.len() {
            let Some((job, base)) = &self.current else {
                let next = self.jobs.as_ref().and_then(|jobs| jobs.recv().ok());
                match next {
                    Some(job) => self.current = Some((job, self.decomp)),
                    None => return Ok(false),
                }
                continue;
            };
            match job.pieces.recv() {
                Ok(Piece::Data(data)) => {
                    self.shared.buffered.sub(data.len());
                    let used = std::mem::replace(&mut self.chunk, data);
                    self.shared.give_back(used);
                    self.pos = 0;
                }
                Ok(Piece::End(table)) => {
                    let (comp, base) = (job.comp, *base);
                    self.merge(comp, base, &table);
                    self.current = None;
                }
                Ok(Piece::Failed(e)) => return Err(self.fail(e)),
                Err(_) => {
                    return Err(self.fail(io::Error::other(
                        "a frame decoding thread stopped unexpectedly",
                    )))
                }
            }
        }
        Ok(true)
    }

    /// Adds a finished frame's table, shifted to where the frame lies.
    fn merge(&mut self, comp: u64, base: u64, table: &FrameTable) {
        for frame in &table.frames {
            if self.table.frames.len() >= MAX_FRAMES {
                break;
            }
            self.table.frames.push(FrameStart {
                comp: comp + frame.comp,
                decomp: base + frame.decomp,
            });
        }
        self.table.end = self.decomp;
    }

    /// Remembers `e` for later reads and stops every thread.
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = Some((e.kind(), e.to_string()));
        self.stop();
        e
    }

    /// Closes the channels, so that every thread ends at its next send or
    /// receive, and waits for them.
    fn stop(&mut self) {
        self.current = None;
        self.jobs = None;
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for ParallelPass {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Read for ParallelPass {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || !self.fill()? {
            return Ok(0);
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.decomp += n as u64;
        Ok(n)
    }
}

impl IndexingDecoder for ParallelPass {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let mut done = 0;
        while done < n && self.fill()? {
            let left = self.chunk.len() - self.pos;
            let k = usize::try_from(n - done).map_or(left, |want| want.min(left));
            self.pos += k;
            self.decomp += k as u64;
            done += k as u64;
        }
        Ok(done)
    }

    fn finish(mut self: Box<Self>) -> io::Result<SeekIndex> {
        if self.fill()? {
            return Err(io::Error::other("the pass was finished before its end"));
        }
        self.stop();
        Ok((self.shared.wrap)(std::mem::take(&mut self.table)))
    }
}

/// The splitter: cuts the file into work, in order, until its end, the
/// rest-of-file piece, or the pass going away. A frame is announced to the
/// pass before it is queued for the workers, so the frames being decoded
/// are at most those the pass has room for.
fn split(file: &Region, walk: Walk, work: &Sender<Work>, jobs: &SyncSender<Job>) {
    let (mut at, len) = (0, file.len());
    while at < len {
        let end = match walk(file, at, len) {
            Cut::Skip(end) if end > at => {
                at = end;
                continue;
            }
            Cut::Frame(end) if end > at => Some(end),
            _ => None,
        };
        // Room for a whole frame's chunks and its end.
        let (out, pieces) = sync_channel(JOB_BUFFER / CHUNK + 1);
        if jobs.send(Job { comp: at, pieces }).is_err()
            || work.send(Work { comp: at, end, out }).is_err()
        {
            return;
        }
        match end {
            Some(end) => at = end,
            None => return,
        }
    }
}

/// A worker: decodes pieces of work until the queue closes.
fn work<D: StepDecoder>(
    file: &Region,
    queue: &Mutex<Receiver<Work>>,
    make: MakeDecoder<D>,
    shared: &Shared,
) {
    loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(Work { comp, end, out }) = next else {
            return;
        };
        let open = || -> io::Result<StepPass<D>> {
            let region = file.slice(comp, end)?;
            Ok(StepPass::new(Arc::new(region), make()?, shared.wrap))
        };
        let sent = match open() {
            Ok(pass) => decode(pass, &out, shared),
            Err(e) => Err(Some((e, 0))),
        };
        // A decoder's failing call loses what it decoded in that call:
        // a 1 MiB call can lose a whole frame before a bad checksum, where
        // the one-core pass, asking for less at a time, handed it out.
        // So a failed piece is decoded again, a tar block at a time, and
        // what comes before the failure is handed out first.
        if let Err(Some(first)) = sent {
            let _ = out.send(Piece::Failed(redo(open, &out, shared, first)));
        }
    }
}

/// Decoded bytes handed out per call when a failed piece is decoded again.
const REDO_STEP: usize = 512;

/// Decodes one piece of work into `out`, chunk by chunk. `Ok` once its
/// end is sent; `Err(None)` if nobody listens any more; `Err(Some(e))` if
/// the decoder failed, with how many bytes were sent before.
fn decode<D: StepDecoder>(
    mut pass: StepPass<D>,
    out: &SyncSender<Piece>,
    shared: &Shared,
) -> Result<(), Option<(io::Error, u64)>> {
    let mut sent = 0u64;
    loop {
        let mut chunk = shared.take_chunk();
        let mut filled = 0;
        let mut ended = false;
        let mut failed = None;
        while filled < CHUNK {
            match pass.read(&mut chunk[filled..]) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        chunk.truncate(filled);
        if filled > 0 {
            shared.buffered.add(filled);
            if out.send(Piece::Data(chunk)).is_err() {
                shared.buffered.sub(filled);
                return Err(None);
            }
            sent += filled as u64;
        }
        if let Some(e) = failed {
            return Err(Some((e, sent)));
        }
        if ended {
            return out.send(Piece::End(pass.into_table())).map_err(|_| None);
        }
    }
}

/// Decodes a failed piece again from its start in small calls, sends what
/// it yields past the `sent` bytes already handed out, and returns the
/// error to report (the first one, should the second decoder differ).
fn redo<D: StepDecoder>(
    open: impl Fn() -> io::Result<StepPass<D>>,
    out: &SyncSender<Piece>,
    shared: &Shared,
    (first, sent): (io::Error, u64),
) -> io::Error {
    let Ok(mut pass) = open() else {
        return first;
    };
    // Up to `sent`, in calls that end there: those bytes decoded before.
    let mut big = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < sent {
        let want = usize::try_from(sent - at).map_or(CHUNK, |k| k.min(CHUNK));
        match pass.read(&mut big[..want]) {
            Ok(0) => return first,
            Ok(n) => at += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return first,
        }
    }
    // Then a tar block at a time; what the first decoder lost in its last
    // call is at most one call's worth.
    let mut more = Vec::new();
    let failure = loop {
        if more.len() > CHUNK {
            break None;
        }
        let mut step = [0u8; REDO_STEP];
        match pass.read(&mut step) {
            Ok(0) => break None,
            Ok(n) => more.extend_from_slice(&step[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e),
        }
    };
    let Some(again) = failure else {
        return first;
    };
    for piece in more.chunks(CHUNK) {
        shared.buffered.add(piece.len());
        if out.send(Piece::Data(piece.to_vec())).is_err() {
            shared.buffered.sub(piece.len());
            break;
        }
    }
    if again.to_string() == first.to_string() {
        again
    } else {
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_support::{far_data, temp_file};
    use crate::source::zstd_frames::{new_step, wrap};

    /// The frame at `at`, found by zstd itself rather than by the walk the
    /// pass is normally given, so that these tests are of the pipeline.
    fn frame_after(file: &Region, at: u64, len: u64) -> Cut {
        let mut buf = vec![0u8; (len - at).min(1 << 20) as usize];
        let n = file.read_at(&mut buf, at).unwrap_or(0);
        match zstd::zstd_safe::find_frame_compressed_size(&buf[..n]) {
            Ok(size) => Cut::Frame(at + size as u64),
            Err(_) => Cut::Rest,
        }
    }

    fn start(bytes: &[u8], workers: usize) -> ParallelPass {
        let file = Arc::new(temp_file(bytes));
        ParallelPass::start(file, frame_after, new_step, workers, wrap).expect("threads")
    }

    /// 64 frames of 1 MiB: far more than may ever be buffered.
    fn many_frames(data: &[u8]) -> Vec<u8> {
        data.chunks(CHUNK)
            .flat_map(|c| zstd::encode_all(c, 1).expect("zstd"))
            .collect()
    }

    #[test]
    fn workers_never_run_further_ahead_than_the_bound() {
        let data = far_data(64 * CHUNK);
        let bytes = many_frames(&data);
        for workers in [1, 2, 4] {
            let mut pass = start(&bytes, workers);
            let mut first = [0u8; 1];
            pass.read_exact(&mut first).expect("read");
            // Give the workers every chance to run ahead of a stalled pass.
            std::thread::sleep(std::time::Duration::from_millis(300));
            let mut rest = Vec::new();
            pass.read_to_end(&mut rest).expect("read");
            assert_eq!(first[0], data[0]);
            assert!(rest == data[1..], "{workers} workers: wrong bytes");
            let bound = (workers + 1) * (JOB_BUFFER + CHUNK);
            assert!(
                pass.most_buffered() <= bound,
                "{workers} workers buffered {} bytes, bound {bound}",
                pass.most_buffered()
            );
            assert!(pass.most_buffered() > 0);
        }
    }

    #[test]
    fn a_pass_dropped_half_way_stops_its_threads() {
        let data = far_data(16 * CHUNK);
        let bytes = many_frames(&data);
        let mut pass = start(&bytes, 2);
        let mut some = vec![0u8; CHUNK + 5];
        pass.read_exact(&mut some).expect("read");
        assert!(some == data[..CHUNK + 5]);
        // Joins the splitter and the workers, blocked on full channels:
        // returning at all is the test.
        drop(pass);
    }
}
