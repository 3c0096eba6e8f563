//! The indexing pass of a gzip layer: inflates for the tar indexer, checks
//! each member's CRC-32 and length, and notes a checkpoint about every
//! [`SPACING`] bytes of output, at a deflate block boundary.

use std::io::{self, Read};
use std::sync::Arc;

use super::index::{compress_window, Checkpoint, GzipIndex, WINDOW};
use super::input::corrupt;
use super::members::{Cursor, Event, PASS_INPUT, SKIP_BUFFER};
use super::parallel::{self, BlockEnd, Next, Output, Speculation};
use super::zlib::Flush;
use crate::source::access::IndexingDecoder;
use crate::source::budget;
use crate::source::region::Region;

/// Decompressed bytes between checkpoints (at least; the next block
/// boundary after this much output is taken). The cost of a cold read is
/// inflating up to this much (a few milliseconds); the index holds one
/// compressed 32 KiB window per span: about 6.6 MiB per GiB of output for a
/// tar of shared libraries, less for text.
pub(super) const SPACING: u64 = 2 << 20;

/// Decompressed bytes the indexing pass inflates per step (after the window
/// it keeps in front of them).
const PASS_OUTPUT: usize = 256 * 1024;

/// The indexing pass for a gzip layer; see [`index_pass_with`]. A local
/// layer of at least two chunks is inflated on every core (up to four);
/// a remote blob is streamed once, in order, on one.
pub(crate) fn index_pass(file: Arc<Region>, file_len: u64) -> Box<dyn IndexingDecoder<GzipIndex>> {
    let workers = if file.is_remote() {
        1
    } else {
        budget::workers()
    };
    let parallel = (workers > 1 && file_len >= 2 * parallel::CHUNK).then_some(Parallel {
        chunk: parallel::CHUNK,
        workers,
        marked_ahead: parallel::MARKED_AHEAD,
        spare_core: budget::spare_core,
    });
    index_pass_with(file, file_len, SPACING, parallel)
}

/// How the first member is inflated on several cores.
#[derive(Clone, Copy, Debug)]
pub(super) struct Parallel {
    /// Compressed bytes per chunk.
    pub(super) chunk: u64,
    pub(super) workers: usize,
    /// See [`parallel::MARKED_AHEAD`].
    pub(super) marked_ahead: u64,
    /// Whether a core is idle for workers other than the first.
    pub(super) spare_core: fn() -> bool,
}

/// The indexing pass with checkpoints about every `spacing` output bytes
/// (tests use small spacings to get many checkpoints from little data),
/// inflating the first member on several cores if `parallel` says how.
pub(super) fn index_pass_with(
    file: Arc<Region>,
    file_len: u64,
    spacing: u64,
    parallel: Option<Parallel>,
) -> Box<dyn IndexingDecoder<GzipIndex>> {
    match GzipPass::new(file, file_len, spacing, parallel) {
        Ok(pass) => Box::new(pass),
        Err(e) => Box::new(FailedPass(Some(e))),
    }
}

/// Where the pass's decompressed bytes come from.
enum Source {
    /// One inflater, on the pass's thread.
    Alone(Cursor),
    /// Workers inflating chunks of the first member ahead of the pass.
    Speculative(Speculation),
    /// Failed, or between the two above.
    Done,
}

/// Decompresses for the tar indexer and notes checkpoints on the way.
pub(super) struct GzipPass {
    file: Arc<Region>,
    file_len: u64,
    source: Source,
    /// Set until the first member starts (whether to speculate then).
    parallel: Option<Parallel>,
    /// Decompressed bytes: up to [`WINDOW`] already handed out (kept for
    /// checkpoints), then `read..write` not yet handed out.
    out: Box<[u8]>,
    read: usize,
    write: usize,
    /// How many bytes before `write` belong to the current member (a
    /// member never refers back past its own start).
    history: usize,
    /// Decompressed offset of `out[write]`.
    pos: u64,
    /// Of the current member so far.
    crc: flate2::Crc,
    spacing: u64,
    /// Decompressed offset of the last checkpoint (0: the file's start).
    last: u64,
    index: GzipIndex,
    /// Set by the first error; the stream is unusable after it.
    failed: Option<io::ErrorKind>,
    /// While speculating: the decompressed offset where the chunk being
    /// handed out starts, and the output before it.
    chunk_out: u64,
    chunk_window: Vec<u8>,
    /// Bytes the workers inflated that were handed out (for tests: did
    /// speculation happen).
    pub(super) from_workers: u64,
}

impl GzipPass {
    pub(super) fn new(
        file: Arc<Region>,
        file_len: u64,
        spacing: u64,
        parallel: Option<Parallel>,
    ) -> io::Result<GzipPass> {
        let cursor = Cursor::at_start(Arc::clone(&file), file_len, PASS_INPUT, true)?;
        Ok(GzipPass {
            file,
            file_len,
            source: Source::Alone(cursor),
            parallel,
            out: vec![0; WINDOW + PASS_OUTPUT].into_boxed_slice(),
            read: 0,
            write: 0,
            history: 0,
            pos: 0,
            crc: flate2::Crc::new(),
            spacing: spacing.max(1),
            last: 0,
            index: GzipIndex::default(),
            failed: None,
            chunk_out: 0,
            chunk_window: Vec::new(),
            from_workers: 0,
        })
    }

    /// Makes room for `n` more bytes after `write`, keeping the last
    /// window in front; everything before `write` has been handed out.
    fn make_room(&mut self, n: usize) {
        if self.write + n > self.out.len() {
            let keep = WINDOW.min(self.write);
            self.out.copy_within(self.write - keep..self.write, 0);
            self.write = keep;
            self.read = keep;
            self.history = self.history.min(keep);
        }
    }

    /// Inflates one step into `out`, checking members and noting
    /// checkpoints.
    fn refill(&mut self) -> io::Result<()> {
        match &mut self.source {
            Source::Alone(_) => self.refill_alone(),
            Source::Done => Err(corrupt("gzip stream failed earlier")),
            Source::Speculative(speculation) => match speculation.next() {
                Next::Data(output, ends) => self.take(output, &ends),
                Next::ChunkStart => {
                    self.start_chunk();
                    if let Source::Speculative(speculation) = &self.source {
                        speculation.reached(&self.chunk_window);
                    }
                    Ok(())
                }
                Next::StreamEnd(trailer) => {
                    self.source = Source::Done;
                    let cursor = Cursor::at_trailer(
                        Arc::clone(&self.file),
                        self.file_len,
                        trailer,
                        self.pos,
                    )?;
                    self.source = Source::Alone(cursor);
                    Ok(())
                }
                Next::Alone(bit) => self.go_alone(bit),
            },
        }
    }

    fn refill_alone(&mut self) -> io::Result<()> {
        self.make_room(1);
        let Source::Alone(cursor) = &mut self.source else {
            return Ok(());
        };
        match cursor.step(&mut self.out[self.write..], Flush::Block)? {
            Event::Data {
                produced,
                block_end,
            } => {
                self.crc
                    .update(&self.out[self.write..self.write + produced]);
                self.write += produced;
                self.history += produced;
                self.pos += produced as u64;
                if let Some(bits) = block_end {
                    let input = cursor.input.pos();
                    self.checkpoint(self.write, input * 8 - u64::from(bits))?;
                }
            }
            Event::MemberStart => {
                let deflate = cursor.input.pos() * 8;
                self.crc.reset();
                self.history = 0;
                self.checkpoint(self.write, deflate)?;
                // Other layers' passes using every core: the workers would
                // only add copying to the same single inflater.
                let first = self.pos == 0;
                if let Some(p) = self.parallel.take().filter(|p| first && (p.spare_core)()) {
                    let speculation = Speculation::start(
                        Arc::clone(&self.file),
                        self.file_len,
                        deflate,
                        p.chunk,
                        p.workers,
                        p.marked_ahead,
                        p.spare_core,
                    );
                    if let Some(speculation) = speculation {
                        self.source = Source::Speculative(speculation);
                        self.start_chunk();
                    }
                }
            }
            Event::MemberEnd { crc, size } => {
                if crc != self.crc.sum() {
                    return Err(corrupt("gzip member fails its CRC check"));
                }
                if size != self.crc.amount() {
                    return Err(corrupt("gzip member length does not match its trailer"));
                }
            }
            Event::End => self.index.end = Some(self.pos),
        }
        self.parallel = None;
        Ok(())
    }

    /// Keeps what a chunk's marked bytes refer to.
    fn start_chunk(&mut self) {
        self.chunk_out = self.pos;
        self.chunk_window.clear();
        let keep = self.history.min(WINDOW);
        self.chunk_window
            .extend_from_slice(&self.out[self.write - keep..self.write]);
    }

    /// Appends a piece from the workers and notes its block ends.
    fn take(&mut self, output: Output, ends: &[BlockEnd]) -> io::Result<()> {
        let len = match &output {
            Output::Bytes(bytes) => bytes.len(),
            Output::Marked(first, _) => first.len(),
        };
        self.make_room(len);
        let start = self.write;
        let dest = &mut self.out[start..start + len];
        let Source::Speculative(speculation) = &self.source else {
            return Ok(());
        };
        match output {
            Output::Bytes(bytes) => {
                dest.copy_from_slice(&bytes);
                speculation.recycle(bytes);
            }
            Output::Marked(first, second) => {
                let resolved = parallel::resolve(&first, &second, &self.chunk_window, dest);
                speculation.recycle(first);
                speculation.recycle(second);
                if !resolved {
                    // Refers back past the member's start: let one
                    // inflater meet it and say so.
                    let bit = speculation.chunk_start();
                    return self.go_alone(bit);
                }
            }
        }
        self.crc.update(&self.out[start..start + len]);
        self.from_workers += len as u64;
        self.write += len;
        self.history += len;
        self.pos += len as u64;
        for end in ends {
            self.checkpoint(start + end.at, end.bit)?;
        }
        Ok(())
    }

    /// Ends speculation: one inflater starts again at `bit`, the start of
    /// the chunk being handed out, and drops what was handed out already.
    fn go_alone(&mut self, bit: u64) -> io::Result<()> {
        log::debug!(
            "gzip: inflating on one core from bit {bit} (output offset {})",
            self.chunk_out
        );
        // Workers stop before the pass goes on without them.
        self.source = Source::Done;
        let mut cursor = Cursor::at_bit(
            Arc::clone(&self.file),
            self.file_len,
            bit,
            &self.chunk_window,
            self.chunk_out,
            PASS_INPUT,
        )?;
        cursor.strict = true;
        let mut skip = self.pos - self.chunk_out;
        let mut scratch = vec![0u8; SKIP_BUFFER];
        while skip > 0 {
            let want = usize::try_from(skip).map_or(SKIP_BUFFER, |s| s.min(SKIP_BUFFER));
            match cursor.step(&mut scratch[..want], Flush::None)? {
                Event::Data { produced, .. } if produced > 0 => skip -= produced as u64,
                _ => return Err(corrupt("gzip stream changed while it was indexed")),
            }
        }
        self.source = Source::Alone(cursor);
        Ok(())
    }

    /// Notes a checkpoint at the block boundary at compressed `bit`, after
    /// `out[..end]`, if the last one is `spacing` behind.
    fn checkpoint(&mut self, end: usize, bit: u64) -> io::Result<()> {
        let out = self.pos - (self.write - end) as u64;
        if out - self.last < self.spacing {
            return Ok(());
        }
        let history = self.history - (self.write - end);
        let window = &self.out[end - history.min(WINDOW)..end];
        let input = bit.div_ceil(8);
        self.index.checkpoints.push(Checkpoint {
            out,
            input,
            bits: (input * 8 - bit) as u8,
            window_len: window.len() as u32,
            window: compress_window(window)?,
        });
        self.last = out;
        Ok(())
    }

    /// Waits until there is something to hand out; false at the end.
    fn available(&mut self) -> io::Result<bool> {
        while self.read == self.write {
            if let Some(kind) = self.failed {
                return Err(io::Error::new(kind, "gzip stream failed earlier"));
            }
            if self.index.end.is_some() {
                return Ok(false);
            }
            if let Err(e) = self.refill() {
                self.failed = Some(e.kind());
                // Workers stop now, not when the pass is dropped.
                self.source = Source::Done;
                return Err(e);
            }
        }
        Ok(true)
    }
}

impl Read for GzipPass {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || !self.available()? {
            return Ok(0);
        }
        let n = buf.len().min(self.write - self.read);
        buf[..n].copy_from_slice(&self.out[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

impl IndexingDecoder<GzipIndex> for GzipPass {
    /// Drops decompressed bytes without copying them out.
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let mut done = 0;
        while done < n && self.available()? {
            let k = usize::try_from(n - done)
                .map_or(self.write - self.read, |k| k.min(self.write - self.read));
            self.read += k;
            done += k as u64;
        }
        Ok(done)
    }

    /// The index covers what was read; the tar indexer may stop at the
    /// archive's end blocks, before the stream's end, and reads beyond the
    /// last checkpoint simply inflate forward from it.
    fn finish(self: Box<Self>) -> io::Result<GzipIndex> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "gzip stream failed during indexing"));
        }
        Ok(self.index)
    }
}

/// An indexing pass that could not start (no memory for zlib).
struct FailedPass(Option<io::Error>);

impl Read for FailedPass {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("gzip inflater could not be created")))
    }
}

impl IndexingDecoder<GzipIndex> for FailedPass {
    fn finish(self: Box<Self>) -> io::Result<GzipIndex> {
        Err(self
            .0
            .unwrap_or_else(|| io::Error::other("gzip inflater could not be created")))
    }
}
