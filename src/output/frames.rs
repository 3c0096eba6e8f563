//! Compressing frames on every core and writing them back in order.
//!
//! Each frame is compressed on its own (that is what makes the output
//! randomly readable), so frames can be compressed in parallel: a few worker
//! threads take frames in submission order and hand back results, which are
//! written strictly in sequence. The output bytes are the same whatever the
//! number of threads. Buffers go round between the writer and the workers,
//! so a long export allocates only at the start.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::FRAME_BYTES;

/// How each frame is compressed.
#[derive(Clone, Copy, Debug)]
pub(super) enum FrameCodec {
    /// One gzip member per frame, at this level.
    Gzip(u32),
    /// One zstd frame with checksum and content size, at this level.
    Zstd(i32),
}

/// A frame to compress: its place in the output, its bytes, and a buffer to
/// compress into.
struct Job {
    seq: u64,
    input: Vec<u8>,
    output: Vec<u8>,
}

/// A compressed frame, with both buffers coming back for reuse.
struct Done {
    seq: u64,
    input: Vec<u8>,
    output: io::Result<Vec<u8>>,
}

/// The workers and the frames in flight.
pub(super) struct FramePool {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    /// Sequence number of the next frame submitted, and of the next written.
    next_seq: u64,
    next_out: u64,
    /// Finished frames waiting for the ones before them.
    ready: BTreeMap<u64, Vec<u8>>,
    in_flight: usize,
    max_in_flight: usize,
    spare_inputs: Vec<Vec<u8>>,
    spare_outputs: Vec<Vec<u8>>,
}

impl FramePool {
    /// Starts one worker per core (at most 8).
    pub(super) fn new(codec: FrameCodec) -> FramePool {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 8);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let jobs = Arc::clone(&job_rx);
                let done = done_tx.clone();
                std::thread::spawn(move || work(codec, &jobs, &done))
            })
            .collect();
        FramePool {
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            next_seq: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: 2 * threads,
            spare_inputs: Vec::new(),
            spare_outputs: Vec::new(),
        }
    }

    /// An empty buffer for the next frame's bytes.
    pub(super) fn input_buffer(&mut self) -> Vec<u8> {
        self.spare_inputs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FRAME_BYTES))
    }

    /// Queues a frame; writes (through `out`) every frame that is done and
    /// due, waiting for some when too many are in flight.
    pub(super) fn submit(&mut self, input: Vec<u8>, out: &mut dyn Write) -> io::Result<()> {
        while self.in_flight >= self.max_in_flight {
            self.receive(out)?;
        }
        let job = Job {
            seq: self.next_seq,
            input,
            output: self.spare_outputs.pop().unwrap_or_default(),
        };
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job).is_ok());
        if sent != Some(true) {
            return Err(workers_gone());
        }
        self.next_seq += 1;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for every frame in flight and writes them.
    pub(super) fn drain(&mut self, out: &mut dyn Write) -> io::Result<()> {
        while self.in_flight > 0 {
            self.receive(out)?;
        }
        Ok(())
    }

    /// Takes one finished frame, then writes all that are due.
    fn receive(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let done = self.results.recv().map_err(|_| workers_gone())?;
        self.in_flight -= 1;
        let mut input = done.input;
        input.clear();
        self.spare_inputs.push(input);
        self.ready.insert(done.seq, done.output?);
        while let Some(frame) = self.ready.remove(&self.next_out) {
            out.write_all(&frame)?;
            self.next_out += 1;
            self.spare_outputs.push(frame);
        }
        Ok(())
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // Closing the queue ends the workers once they finish their frame.
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn workers_gone() -> io::Error {
    io::Error::other("the compression threads stopped")
}

/// A worker: compresses frames until the queue closes.
fn work(codec: FrameCodec, jobs: &Mutex<Receiver<Job>>, done: &mpsc::Sender<Done>) {
    let mut zstd = match codec {
        FrameCodec::Zstd(level) => Some(zstd_compressor(level)),
        FrameCodec::Gzip(_) => None,
    };
    loop {
        let job = {
            let Ok(queue) = jobs.lock() else { return };
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let mut output = job.output;
        output.clear();
        let result = match (codec, &mut zstd) {
            (FrameCodec::Gzip(level), _) => gzip_frame(level, &job.input, output),
            (FrameCodec::Zstd(_), Some(Ok(compressor))) => {
                output.reserve(zstd::zstd_safe::compress_bound(job.input.len()));
                compressor
                    .compress_to_buffer(&job.input, &mut output)
                    .map(|_| output)
            }
            (FrameCodec::Zstd(_), Some(Err(e))) => Err(io::Error::new(e.kind(), e.to_string())),
            (FrameCodec::Zstd(_), None) => Err(workers_gone()),
        };
        let reply = Done {
            seq: job.seq,
            input: job.input,
            output: result,
        };
        if done.send(reply).is_err() {
            return;
        }
    }
}

fn zstd_compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut zstd = zstd::bulk::Compressor::new(level)?;
    zstd.include_checksum(true)?;
    zstd.include_contentsize(true)?;
    Ok(zstd)
}

/// One gzip member, with a zero mtime so output is reproducible.
fn gzip_frame(level: u32, input: &[u8], output: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(output, flate2::Compression::new(level));
    gz.write_all(input)?;
    gz.finish()
}
