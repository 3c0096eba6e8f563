//! gzip random access, in the manner of zlib's `zran` example.
//!
//! deflate has no resume points of its own: every byte may refer back to
//! any of the 32 KiB before it, and blocks start at arbitrary bit offsets.
//! So while the indexing pass inflates the layer anyway, it stops at deflate
//! block boundaries (zlib's `Z_BLOCK`) and, about every [`SPACING`] bytes of
//! output, notes a *checkpoint*: the decompressed offset, the compressed
//! position to the bit, and the 32 KiB of output before it (kept
//! deflate-compressed, since the index lives as long as the mount). A read
//! then primes a raw inflater with the odd bits, gives it the window as its
//! dictionary, and inflates forward from the last checkpoint at or before
//! its offset: a cold read inflates at most one span.
//!
//! gzip headers and trailers are read here rather than by zlib, so one raw
//! inflater runs through a whole multi-member file (pigz, bgzip) and can
//! start anywhere inside a member. The indexing pass checks each member's
//! CRC-32 and length; reads later trust the file they indexed.
//!
//! Sequential reads (FUSE asks for 128 KiB–1 MiB at a time) would each pay
//! for a cold start; instead a few inflaters are parked where their last
//! read ended and resumed by a read that starts at or after them, and a read
//! that arrives while the piece before it is still inflating on another
//! thread waits for that inflater.

use super::region::Region;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::access::{Access, DecodeCounter, IndexingDecoder};
use super::gzip_parallel::{self, BlockEnd, Next, Output, Speculation};
use super::positioned::PositionedReader;
use super::seek::{SeekDecodeError, SeekIndex};
use super::zlib::{Flush, Inflater};

/// Decompressed bytes between checkpoints (at least; the next block
/// boundary after this much output is taken). The cost of a cold read is
/// inflating up to this much (a few milliseconds); the index holds one
/// compressed 32 KiB window per span: about 6.6 MiB per GiB of output for a
/// tar of shared libraries, less for text.
pub(super) const SPACING: u64 = 2 << 20;

/// How far back deflate can refer: what a checkpoint must remember.
pub(super) const WINDOW: usize = 32 * 1024;

/// Compressed read size of the indexing pass.
const PASS_INPUT: usize = 256 * 1024;

/// Decompressed bytes the indexing pass inflates per step (after the window
/// it keeps in front of them).
const PASS_OUTPUT: usize = 256 * 1024;

/// Compressed read size of a random-access inflater (it is kept parked, so
/// this stays moderate).
const ACCESS_INPUT: usize = 64 * 1024;

/// Scratch for the output a read inflates and throws away before its offset.
const SKIP_BUFFER: usize = 64 * 1024;

/// Parked inflaters per layer: enough for a few files read sequentially at
/// once, few enough that an idle layer holds well under a MiB.
const PARKED: usize = 4;

/// The longest a read waits for another read's inflater before starting
/// from a checkpoint itself (a cold start costs a few milliseconds).
const MAX_WAIT: Duration = Duration::from_millis(200);

/// Version byte of the encoded index.
const FORMAT: u8 = 1;

/// Where a raw inflater can start: the index of a gzip layer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GzipIndex {
    /// Ascending by decompressed offset. The start of the file is an
    /// implicit checkpoint and is not stored.
    checkpoints: Vec<Checkpoint>,
    /// The decompressed length, when the indexing pass read to the end:
    /// lets a read past the end fail without inflating anything.
    end: Option<u64>,
}

impl fmt::Debug for GzipIndex {
    // The windows are the bulk and of no use in a message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipIndex")
            .field("checkpoints", &self.checkpoints.len())
            .field("end", &self.end)
            .finish()
    }
}

/// A place inside a deflate stream where a raw inflater can resume.
#[derive(Clone, PartialEq, Eq)]
struct Checkpoint {
    /// Decompressed offset of the first byte inflated from here.
    out: u64,
    /// Compressed offset of the first whole byte to feed the inflater.
    input: u64,
    /// Unused high bits (0–7) of the byte before `input`, which belong to
    /// the next block and are primed into the inflater first.
    bits: u8,
    /// Length of the window once inflated (32 KiB, or less near the start
    /// of a member).
    window_len: u32,
    /// The output before `out`, raw-deflate compressed.
    window: Vec<u8>,
}

impl Checkpoint {
    /// Fixed bytes of one encoded checkpoint, before its window.
    const ENCODED_FIXED: usize = 8 + 8 + 1 + 4 + 4;

    /// The window, inflated and checked against its recorded length.
    fn window(&self) -> io::Result<Vec<u8>> {
        let mut window = Vec::with_capacity(self.window_len as usize);
        flate2::read::DeflateDecoder::new(&self.window[..])
            .take(WINDOW as u64 + 1)
            .read_to_end(&mut window)?;
        if window.len() != self.window_len as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a gzip checkpoint's window has the wrong length",
            ));
        }
        Ok(window)
    }
}

impl GzipIndex {
    /// Appends the index: a version byte, the end (0 when unknown, else
    /// length + 1), the checkpoint count, then each checkpoint; integers
    /// little-endian.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        let end = self.end.map_or(0, |e| e.saturating_add(1));
        out.extend_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&(self.checkpoints.len() as u64).to_le_bytes());
        for c in &self.checkpoints {
            out.extend_from_slice(&c.out.to_le_bytes());
            out.extend_from_slice(&c.input.to_le_bytes());
            out.push(c.bits);
            out.extend_from_slice(&c.window_len.to_le_bytes());
            out.extend_from_slice(&(c.window.len() as u32).to_le_bytes());
            out.extend_from_slice(&c.window);
        }
    }

    /// Decodes what [`GzipIndex::encode`] wrote, refusing anything
    /// inconsistent; sizes are checked against the bytes present before
    /// anything is allocated.
    pub(super) fn decode(bytes: &[u8]) -> Result<GzipIndex, SeekDecodeError> {
        let mut r = Bytes(bytes);
        if r.u8()? != FORMAT {
            return Err(SeekDecodeError("unknown gzip index version"));
        }
        let end = r.u64()?.checked_sub(1);
        let count = r.u64()?;
        if count > (r.0.len() / Checkpoint::ENCODED_FIXED) as u64 {
            return Err(SeekDecodeError("gzip checkpoint count exceeds the data"));
        }
        let mut checkpoints: Vec<Checkpoint> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let out = r.u64()?;
            let input = r.u64()?;
            let bits = r.u8()?;
            let window_len = r.u32()?;
            let zlen = r.u32()?;
            let window = r.take(zlen as usize)?.to_vec();
            if let Some(prev) = checkpoints.last() {
                if out <= prev.out || input < prev.input {
                    return Err(SeekDecodeError("gzip checkpoints out of order"));
                }
            }
            if bits > 7 || (bits > 0 && input == 0) {
                return Err(SeekDecodeError("bad bit offset in a gzip checkpoint"));
            }
            if window_len as usize > WINDOW || u64::from(window_len) > out {
                return Err(SeekDecodeError("bad window length in a gzip checkpoint"));
            }
            checkpoints.push(Checkpoint {
                out,
                input,
                bits,
                window_len,
                window,
            });
        }
        if !r.0.is_empty() {
            return Err(SeekDecodeError("trailing bytes after a gzip index"));
        }
        if let (Some(end), Some(last)) = (end, checkpoints.last()) {
            if last.out > end {
                return Err(SeekDecodeError("gzip checkpoint past the end"));
            }
        }
        Ok(GzipIndex { checkpoints, end })
    }

    /// Where each checkpoint resumes: the bit of the file (see
    /// `window_use.rs`, which reads the stream from there).
    pub(super) fn checkpoint_bits(&self) -> Vec<u64> {
        self.checkpoints
            .iter()
            .map(|c| c.input * 8 - u64::from(c.bits))
            .collect()
    }

    /// The window of checkpoint `i`, inflated.
    pub(super) fn window(&self, i: usize) -> io::Result<Vec<u8>> {
        self.checkpoints
            .get(i)
            .ok_or_else(|| corrupt("no such gzip checkpoint"))?
            .window()
    }

    /// Replaces the window of checkpoint `i` by `window`, of the same
    /// length (a sparse one: see `window_use.rs`).
    pub(super) fn set_window(&mut self, i: usize, window: &[u8]) -> io::Result<()> {
        let checkpoint = self
            .checkpoints
            .get_mut(i)
            .filter(|c| c.window_len as usize == window.len())
            .ok_or_else(|| corrupt("no gzip checkpoint with a window of that length"))?;
        checkpoint.window = compress_window(window)?;
        Ok(())
    }

    /// The last checkpoint at or before `offset`, if any.
    fn checkpoint_before(&self, offset: u64) -> Option<&Checkpoint> {
        let after = self.checkpoints.partition_point(|c| c.out <= offset);
        after.checked_sub(1).map(|i| &self.checkpoints[i])
    }
}

/// A cursor over an encoded index that fails instead of panicking.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SeekDecodeError> {
        if n > self.0.len() {
            return Err(SeekDecodeError("truncated gzip index"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SeekDecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, SeekDecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, SeekDecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SeekDecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// A checkpoint's window as the index keeps it: raw-deflate compressed.
fn compress_window(window: &[u8]) -> io::Result<Vec<u8>> {
    let mut z = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(WINDOW / 2),
        flate2::Compression::default(),
    );
    z.write_all(window)?;
    z.finish()
}

fn corrupt(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The compressed file read through a buffer, knowing the file offset of
/// every byte it hands out (which is what a checkpoint records).
pub(super) struct Input {
    reader: PositionedReader,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Input {
    pub(super) fn new(file: Arc<Region>, file_len: u64, pos: u64, capacity: usize) -> Input {
        Input {
            reader: PositionedReader {
                file,
                pos,
                len: file_len,
            },
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// File offset of the next byte not yet consumed.
    pub(super) fn pos(&self) -> u64 {
        self.reader.pos - (self.end - self.start) as u64
    }

    /// The buffered bytes not yet consumed, reading more if there are
    /// none; empty at the end of the file.
    pub(super) fn fill(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            let left = self.reader.len.saturating_sub(self.reader.pos);
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = loop {
                match self.reader.read(&mut self.buf[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            self.start = 0;
            self.end = n;
        }
        Ok(&self.buf[self.start..self.end])
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(self.fill()?.first().copied())
    }

    fn byte(&mut self) -> io::Result<Option<u8>> {
        let b = self.peek()?;
        if b.is_some() {
            self.start += 1;
        }
        Ok(b)
    }

    /// The next byte of a header or trailer, which must be there.
    pub(super) fn needed(&mut self) -> io::Result<u8> {
        self.byte()?
            .ok_or_else(|| corrupt("gzip stream is truncated"))
    }

    fn needed_array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut a = [0; N];
        for b in &mut a {
            *b = self.needed()?;
        }
        Ok(a)
    }

    fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            let avail = self.fill()?.len();
            if avail == 0 {
                return Err(corrupt("gzip stream is truncated"));
            }
            let k = avail.min(n);
            self.consume(k);
            n -= k;
        }
        Ok(())
    }

    /// Skips a NUL-terminated header field.
    fn skip_string(&mut self) -> io::Result<()> {
        while self.needed()? != 0 {}
        Ok(())
    }

    /// True if nothing but zero bytes is left (padding some tools add to a
    /// block size); consumes them.
    fn rest_is_zero(&mut self) -> io::Result<bool> {
        loop {
            let avail = self.fill()?;
            if avail.is_empty() {
                return Ok(true);
            }
            if avail.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            let n = avail.len();
            self.consume(n);
        }
    }
}

/// Where a [`Cursor`] is in the file's member structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before a member header (or the end of the members).
    Header,
    /// Inside a member's deflate data.
    Deflate,
    /// After a member's deflate data, before its 8-byte trailer.
    Trailer,
    /// Past the last member.
    End,
}

/// What one [`Cursor::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// Bytes written to the output (possibly none), and, with
    /// [`Flush::Block`], the unused bits if it stopped at a block boundary.
    Data {
        produced: usize,
        block_end: Option<u8>,
    },
    /// A member header was read; its deflate data starts at the cursor.
    MemberStart,
    /// A member ended with this trailer (CRC-32, length mod 2^32).
    MemberEnd { crc: u32, size: u32 },
    /// No more members.
    End,
}

/// A raw inflater walking through the members of a gzip file.
struct Cursor {
    input: Input,
    inflater: Inflater,
    /// Decompressed offset of the next byte this cursor produces.
    pos: u64,
    phase: Phase,
    /// The indexing pass refuses what follows the last member unless it is
    /// zero padding; later reads only need to know the stream ended.
    strict: bool,
}

impl Cursor {
    /// A cursor at the start of the file.
    fn at_start(
        file: Arc<Region>,
        file_len: u64,
        capacity: usize,
        strict: bool,
    ) -> io::Result<Self> {
        Ok(Cursor {
            input: Input::new(file, file_len, 0, capacity),
            inflater: Inflater::new_raw()?,
            pos: 0,
            phase: Phase::Header,
            strict,
        })
    }

    /// A cursor resuming at `checkpoint`.
    fn at_checkpoint(
        file: Arc<Region>,
        file_len: u64,
        checkpoint: &Checkpoint,
    ) -> io::Result<Self> {
        let window = checkpoint.window()?;
        let bit = checkpoint.input * 8 - u64::from(checkpoint.bits);
        Self::at_bit(file, file_len, bit, &window, checkpoint.out, ACCESS_INPUT)
    }

    /// A cursor inside a deflate stream at a block boundary, the compressed
    /// bit `bit`, where the decompressed offset is `pos` and `window` is
    /// the output before it.
    fn at_bit(
        file: Arc<Region>,
        file_len: u64,
        bit: u64,
        window: &[u8],
        pos: u64,
        capacity: usize,
    ) -> io::Result<Self> {
        let mut inflater = Inflater::new_raw()?;
        let mut input = Input::new(file, file_len, bit / 8, capacity);
        let used = (bit % 8) as u8;
        if used > 0 {
            let byte = input.needed()?;
            inflater.prime(8 - used, byte >> used)?;
        }
        inflater.set_dictionary(window)?;
        Ok(Cursor {
            input,
            inflater,
            pos,
            phase: Phase::Deflate,
            strict: false,
        })
    }

    /// A cursor before a member's trailer at byte `at` of the file (the
    /// indexing pass's, so strict).
    fn at_trailer(file: Arc<Region>, file_len: u64, at: u64, pos: u64) -> io::Result<Self> {
        Ok(Cursor {
            input: Input::new(file, file_len, at, PASS_INPUT),
            inflater: Inflater::new_raw()?,
            pos,
            phase: Phase::Trailer,
            strict: true,
        })
    }

    /// Moves forward by one event. `out` must not be empty.
    fn step(&mut self, out: &mut [u8], flush: Flush) -> io::Result<Event> {
        match self.phase {
            Phase::Header => {
                if self.member_header()? {
                    self.phase = Phase::Deflate;
                    Ok(Event::MemberStart)
                } else {
                    self.phase = Phase::End;
                    Ok(Event::End)
                }
            }
            Phase::Deflate => self.inflate(out, flush),
            Phase::Trailer => {
                let crc = u32::from_le_bytes(self.input.needed_array()?);
                let size = u32::from_le_bytes(self.input.needed_array()?);
                self.phase = Phase::Header;
                Ok(Event::MemberEnd { crc, size })
            }
            Phase::End => Ok(Event::End),
        }
    }

    fn inflate(&mut self, out: &mut [u8], flush: Flush) -> io::Result<Event> {
        if out.is_empty() {
            return Ok(Event::Data {
                produced: 0,
                block_end: None,
            });
        }
        loop {
            let avail = self.input.fill()?;
            let at_eof = avail.is_empty();
            let r = self.inflater.inflate(avail, out, flush)?;
            self.input.consume(r.consumed);
            self.pos += r.produced as u64;
            if r.stream_end {
                self.phase = Phase::Trailer;
            }
            let block_end = (flush == Flush::Block && r.block_end).then_some(r.unused_bits);
            if r.stream_end || block_end.is_some() || r.produced > 0 {
                return Ok(Event::Data {
                    produced: r.produced,
                    block_end,
                });
            }
            if r.consumed == 0 {
                // Neither input taken nor output made: zlib wants bytes
                // the file does not have.
                return Err(corrupt(if at_eof {
                    "gzip stream is truncated"
                } else {
                    "gzip inflate made no progress"
                }));
            }
            // Input taken without output (a block's code tables): go on.
        }
    }

    /// Reads a member header if one follows; false at the end of the
    /// members.
    fn member_header(&mut self) -> io::Result<bool> {
        match self.input.peek()? {
            None => return Ok(false),
            Some(0x1f) => {}
            Some(_) if !self.strict => return Ok(false),
            Some(0) if self.input.rest_is_zero()? => return Ok(false),
            Some(_) => return Err(corrupt("garbage after a gzip member")),
        }
        let [_, id2, method, flags] = self.input.needed_array()?;
        if id2 != 0x8b {
            if !self.strict {
                return Ok(false);
            }
            return Err(corrupt("garbage after a gzip member"));
        }
        if method != 8 {
            return Err(corrupt("gzip member uses an unknown compression method"));
        }
        if flags & 0xe0 != 0 {
            return Err(corrupt("gzip header has reserved flags set"));
        }
        // mtime, extra flags, OS
        self.input.skip(6)?;
        if flags & 0x04 != 0 {
            let len = u16::from_le_bytes(self.input.needed_array()?);
            self.input.skip(len.into())?;
        }
        if flags & 0x08 != 0 {
            self.input.skip_string()?;
        }
        if flags & 0x10 != 0 {
            self.input.skip_string()?;
        }
        if flags & 0x02 != 0 {
            self.input.skip(2)?;
        }
        self.inflater.reset()?;
        Ok(true)
    }
}

/// The indexing pass for a gzip layer; see [`index_pass_with`]. A local
/// layer of at least two chunks is inflated on every core (up to four);
/// a remote blob is streamed once, in order, on one.
pub(super) fn index_pass(file: Arc<Region>, file_len: u64) -> Box<dyn IndexingDecoder> {
    let workers = if file.is_remote() {
        1
    } else {
        super::parallel::workers()
    };
    let parallel = (workers > 1 && file_len >= 2 * gzip_parallel::CHUNK).then_some(Parallel {
        chunk: gzip_parallel::CHUNK,
        workers,
        marked_ahead: gzip_parallel::MARKED_AHEAD,
        spare_core: super::parallel::spare_core,
    });
    index_pass_with(file, file_len, SPACING, parallel)
}

/// How the first member is inflated on several cores.
#[derive(Clone, Copy, Debug)]
pub(super) struct Parallel {
    /// Compressed bytes per chunk.
    pub(super) chunk: u64,
    pub(super) workers: usize,
    /// See [`gzip_parallel::MARKED_AHEAD`].
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
) -> Box<dyn IndexingDecoder> {
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
struct GzipPass {
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
    from_workers: u64,
}

impl GzipPass {
    fn new(
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
                let resolved = gzip_parallel::resolve(&first, &second, &self.chunk_window, dest);
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

impl IndexingDecoder for GzipPass {
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
    fn finish(self: Box<Self>) -> io::Result<SeekIndex> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "gzip stream failed during indexing"));
        }
        Ok(SeekIndex::Gzip(self.index))
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

impl IndexingDecoder for FailedPass {
    fn finish(self: Box<Self>) -> io::Result<SeekIndex> {
        Err(self
            .0
            .unwrap_or_else(|| io::Error::other("gzip inflater could not be created")))
    }
}

/// Random access to a gzip layer through its checkpoints.
pub(super) fn access(
    file: Arc<Region>,
    file_len: u64,
    index: GzipIndex,
    counter: Arc<DecodeCounter>,
) -> io::Result<Box<dyn Access>> {
    if index.checkpoints.last().is_some_and(|c| c.input > file_len) {
        return Err(corrupt("gzip index points past the end of the file"));
    }
    Ok(Box::new(GzipAccess {
        file,
        file_len,
        index,
        parking: Mutex::new(Parking::default()),
        returned: Condvar::new(),
        counter,
    }))
}

struct GzipAccess {
    file: Arc<Region>,
    file_len: u64,
    index: GzipIndex,
    parking: Mutex<Parking>,
    /// Signalled whenever a read ends (and maybe parked its cursor).
    returned: Condvar,
    counter: Arc<DecodeCounter>,
}

/// The inflaters between reads, and where the ones in use will stop.
#[derive(Default)]
struct Parking {
    /// Inflaters left where a read ended, for the next read to resume.
    idle: Vec<Cursor>,
    /// Where each read now inflating will end. The kernel's readahead sends
    /// the next piece of a file while the previous one is still being
    /// inflated on another thread; that read had better wait for the
    /// inflater than start over from a checkpoint.
    busy: Vec<u64>,
}

impl fmt::Debug for GzipAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipAccess")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A read in progress, registered in [`Parking::busy`] until dropped.
struct Busy<'a> {
    access: &'a GzipAccess,
    end: u64,
}

impl Busy<'_> {
    /// Ends the read, parking its inflater (evicting the one furthest back
    /// if all places are taken).
    fn park(self, cursor: Cursor) {
        let mut parking = self.access.lock();
        if parking.idle.len() >= PARKED {
            if let Some(lowest) = parking
                .idle
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.pos)
                .map(|(i, _)| i)
            {
                parking.idle.swap_remove(lowest);
            }
        }
        parking.idle.push(cursor);
        // Dropping `self` next unregisters the read and wakes waiters; the
        // lock is released first so they find the cursor at once.
        drop(parking);
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut parking = self.access.lock();
        if let Some(i) = parking.busy.iter().position(|&e| e == self.end) {
            parking.busy.swap_remove(i);
        }
        drop(parking);
        self.access.returned.notify_all();
    }
}

impl GzipAccess {
    fn lock(&self) -> std::sync::MutexGuard<'_, Parking> {
        self.parking.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a read of `offset..end` and takes the parked inflater
    /// furthest along at or before `offset` but not behind `floor` (where
    /// the checkpoint would start), waiting for one that a read in
    /// progress will leave there. `None`: start from the checkpoint.
    fn check_out(&self, offset: u64, end: u64, floor: u64) -> (Busy<'_>, Option<Cursor>) {
        let usable = |pos: u64| (floor..=offset).contains(&pos);
        let deadline = Instant::now() + MAX_WAIT;
        let mut parking = self.lock();
        loop {
            let best = parking
                .idle
                .iter()
                .enumerate()
                .filter(|(_, c)| usable(c.pos))
                .max_by_key(|(_, c)| c.pos)
                .map(|(i, _)| i);
            let cursor = best.map(|i| parking.idle.swap_remove(i));
            // Reads never wait while registered, so waiting here cannot
            // form a cycle.
            if cursor.is_some() || !parking.busy.iter().any(|&e| usable(e)) {
                parking.busy.push(end);
                return (Busy { access: self, end }, cursor);
            }
            // Bounded, in case reads keep ending in range but others take
            // their inflaters first.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                parking.busy.push(end);
                return (Busy { access: self, end }, None);
            }
            parking = match self.returned.wait_timeout(parking, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Inflates into `out` until it is full; `UnexpectedEof` if the stream
    /// ends first.
    fn fill(&self, cursor: &mut Cursor, out: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < out.len() {
            match cursor.step(&mut out[filled..], Flush::None)? {
                Event::Data { produced, .. } => {
                    filled += produced;
                    self.counter.add(produced as u64);
                }
                Event::End => return Err(io::ErrorKind::UnexpectedEof.into()),
                Event::MemberStart | Event::MemberEnd { .. } => {}
            }
        }
        Ok(())
    }
}

impl Access for GzipAccess {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if self.index.end.is_some_and(|len| end > len) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let checkpoint = self.index.checkpoint_before(offset);
        let floor = checkpoint.map_or(0, |c| c.out);
        let (busy, parked) = self.check_out(offset, end, floor);
        let mut cursor = match (parked, checkpoint) {
            (Some(cursor), _) => cursor,
            (None, Some(c)) => {
                log::trace!("gzip: cold read at {offset} from the checkpoint at {floor}");
                Cursor::at_checkpoint(Arc::clone(&self.file), self.file_len, c)?
            }
            (None, None) => {
                Cursor::at_start(Arc::clone(&self.file), self.file_len, ACCESS_INPUT, false)?
            }
        };
        if cursor.pos < offset {
            let mut scratch = vec![0; SKIP_BUFFER];
            while cursor.pos < offset {
                let n = usize::try_from(offset - cursor.pos)
                    .map_or(SKIP_BUFFER, |n| n.min(SKIP_BUFFER));
                self.fill(&mut cursor, &mut scratch[..n])?;
            }
        }
        self.fill(&mut cursor, buf)?;
        busy.park(cursor);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
