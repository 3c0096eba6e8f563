//! Random access through independent frames, shared by every codec whose
//! stream can be cut into pieces that decode on their own.
//!
//! Which codec gets what:
//!
//! | codec | resume points | found by |
//! | --- | --- | --- |
//! | zstd | each frame (pzstd, seekable format, zstd:chunked) | the indexing pass, from the decoder's frame ends |
//! | bzip2 | each block, at a bit offset, even in one stream | the indexing pass, which decodes block by block (`bzip2/`) |
//! | lz4 | each frame | walking the frame headers during the pass |
//! | xz | each block (`xz -T`, pixz) | the stream index at the end of the file |
//! | gzip | (not frames: checkpoints, see `gzip/`) | |
//!
//! lz4 blocks of one frame may refer to the previous block, so they are not
//! resume points; a codec with a single frame falls back to the spill
//! cache. bzip2 blocks start at bit offsets: each is opened as a one-block
//! stream built from its bits.
//!
//! A read decodes only the frames it touches: from the start of the frame
//! holding its first byte, or from a parked decoder already inside that
//! frame (so reading forward through a big frame does not restart it). A
//! frame that would be expensive to decode per read, because it is the only
//! frame (every read would start at the layer's start) or because it is
//! longer than the codec's direct limit, goes through the spill cache
//! instead: decoded once, forward, into a temporary file.

use super::region::Region;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::access::{skip, Access, DecodeCounter, IndexingDecoder};
use super::cursor::{ByteCursor, SeekDecodeError};
use super::spill::{Finisher, FrameOpener, SegmentSpec, SpillCache, FINISH_LIMIT};

/// At most this many frames are recorded. Past it, later frames join the
/// last recorded one, which is always correct for decoders that run on
/// across frame ends, and bounds the table (16 bytes per frame) whatever
/// the layer holds.
pub(super) const MAX_FRAMES: usize = 1 << 22;

/// How many parked decoders a layer keeps for reuse.
const PARKED_DECODERS: usize = 4;

/// Where one frame starts, in the layer file and in the decompressed stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStart {
    /// Offset of the frame's first byte in the file.
    pub comp: u64,
    /// Decompressed offset of the frame's first byte.
    pub decomp: u64,
}

/// The frames of a layer, in stream order. Frame `i` holds decompressed
/// bytes `frames[i].decomp .. frames[i + 1].decomp`; the last frame runs to
/// the end of the stream. `end` is how far the indexing pass read, which is
/// as far as any read will go (reads come from the tar index), and sizes
/// the last frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameTable {
    pub(super) frames: Vec<FrameStart>,
    pub(super) end: u64,
}

impl FrameTable {
    /// Appends `count, end, (comp, decomp)*` as little-endian u64s.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.frames.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.end.to_le_bytes());
        for f in &self.frames {
            out.extend_from_slice(&f.comp.to_le_bytes());
            out.extend_from_slice(&f.decomp.to_le_bytes());
        }
    }

    /// Decodes what [`FrameTable::encode`] wrote, refusing anything that
    /// is not a well-formed table: wrong length, a first frame not at
    /// decompressed offset 0, offsets not strictly ascending, `end` before
    /// the last frame.
    pub(super) fn decode(bytes: &[u8]) -> Result<FrameTable, SeekDecodeError> {
        if bytes.len() % 8 != 0 {
            return Err(SeekDecodeError("frame table length not a multiple of 8"));
        }
        let mut r = ByteCursor::new(bytes);
        let (Some(count), Some(end)) = (r.u64(), r.u64()) else {
            return Err(SeekDecodeError("frame table header missing"));
        };
        let pairs = r.len() / 16;
        if r.len() % 16 != 0 || count != pairs as u64 || pairs > MAX_FRAMES {
            return Err(SeekDecodeError("frame count does not match the table"));
        }
        let mut frames = Vec::with_capacity(pairs);
        while let (Some(comp), Some(decomp)) = (r.u64(), r.u64()) {
            frames.push(FrameStart { comp, decomp });
        }
        let table = FrameTable { frames, end };
        table.check()?;
        Ok(table)
    }

    fn check(&self) -> Result<(), SeekDecodeError> {
        match self.frames.first() {
            None if self.end != 0 => return Err(SeekDecodeError("no frames but data")),
            Some(first) if first.decomp != 0 => {
                return Err(SeekDecodeError("first frame not at offset 0"))
            }
            _ => {}
        }
        if self
            .frames
            .windows(2)
            .any(|w| w[0].comp >= w[1].comp || w[0].decomp >= w[1].decomp)
        {
            return Err(SeekDecodeError("frame offsets not ascending"));
        }
        if self.frames.last().is_some_and(|f| f.decomp >= self.end) {
            return Err(SeekDecodeError("frame table ends inside its last frame"));
        }
        Ok(())
    }

    /// Decompressed starts, as [`FrameAccess`] wants them.
    pub(super) fn starts(&self) -> Vec<u64> {
        self.frames.iter().map(|f| f.decomp).collect()
    }
}

/// Random access over a frame table whose frames are each opened by
/// starting a decoder at the frame's compressed offset, and whose decoders
/// run on into the next frame: what zstd frames, lz4 frames and bzip2
/// streams share. `what` names the unit in errors; frames longer than
/// `direct_limit` decompressed are spilled rather than decoded per read.
pub(super) fn table_access(
    table: FrameTable,
    what: &'static str,
    open_at: impl Fn(u64) -> io::Result<Box<dyn Read + Send>> + Send + Sync + 'static,
    direct_limit: u64,
    spill_dir: &Path,
    counter: Arc<DecodeCounter>,
) -> Box<dyn Access> {
    let comps: Vec<u64> = table.frames.iter().map(|f| f.comp).collect();
    let open: FrameOpener = Arc::new(move |i| {
        let comp = comps
            .get(i)
            .copied()
            .ok_or_else(|| io::Error::other(format!("{what} out of range")))?;
        open_at(comp)
    });
    Box::new(FrameAccess::new(
        table.starts(),
        table.end,
        open,
        FramePolicy {
            continues: true,
            direct_limit,
        },
        spill_dir,
        counter,
    ))
}

/// How a codec's frames behave, for [`FrameAccess`].
pub(super) struct FramePolicy {
    /// A decoder opened at a frame decodes the following frames too (zstd,
    /// lz4 and bzip2 stream decoders do; an xz block decoder or a bzip2
    /// one-block stream stops at its block).
    pub continues: bool,
    /// Frames longer than this (decompressed) are spilled rather than
    /// decoded per read: about what the codec decodes in tens of
    /// milliseconds.
    pub direct_limit: u64,
}

/// A decoder that stopped at decompressed offset `pos`, opened at `frame`.
struct Parked {
    frame: usize,
    pos: u64,
    decoder: Box<dyn Read + Send>,
}

/// Reads through frames; see the module docs.
pub(super) struct FrameAccess {
    /// Decompressed start of each frame, strictly ascending from 0.
    starts: Vec<u64>,
    open: FrameOpener,
    continues: bool,
    /// Per frame, its spill segment if it is spilled.
    spilled: Vec<Option<usize>>,
    spill: Arc<SpillCache>,
    /// Decodes the rest of a spilled frame a read started, ahead of the
    /// frame's next reads.
    finisher: Finisher,
    parked: Mutex<Vec<Parked>>,
    counter: Arc<DecodeCounter>,
}

impl fmt::Debug for FrameAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAccess")
            .field("frames", &self.starts.len())
            .field(
                "spilled",
                &self.spilled.iter().filter(|s| s.is_some()).count(),
            )
            .finish_non_exhaustive()
    }
}

impl FrameAccess {
    /// Access through frames starting at decompressed offsets `starts`
    /// (ascending from 0; the pass read up to `end`), each decoded by
    /// `open(i)`.
    pub(super) fn new(
        starts: Vec<u64>,
        end: u64,
        open: FrameOpener,
        policy: FramePolicy,
        spill_dir: &Path,
        counter: Arc<DecodeCounter>,
    ) -> FrameAccess {
        let mut segments = Vec::new();
        let spilled = (0..starts.len())
            .map(|i| {
                let start = starts[i];
                let next = starts.get(i + 1).copied();
                let len = next.unwrap_or(end).saturating_sub(start);
                (starts.len() == 1 || len > policy.direct_limit).then(|| {
                    segments.push(SegmentSpec {
                        frame: i,
                        start,
                        // A decoder that stops at its frame's end must not
                        // be asked for more: the last frame ends at `end`.
                        end: next.or((!policy.continues).then_some(end)),
                    });
                    segments.len() - 1
                })
            })
            .collect();
        let spill = Arc::new(SpillCache::new(
            spill_dir,
            segments,
            Arc::clone(&open),
            Arc::clone(&counter),
        ));
        FrameAccess {
            starts,
            open,
            continues: policy.continues,
            spilled,
            finisher: Finisher::new(Arc::clone(&spill), FINISH_LIMIT),
            spill,
            parked: Mutex::new(Vec::new()),
            counter,
        }
    }

    /// Takes the parked decoder furthest along that can serve `offset` in
    /// `frame` without going back, if any.
    fn take_parked(&self, frame: usize, offset: u64) -> Option<Parked> {
        let start = self.starts[frame];
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        let best = parked
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                (p.frame == frame || (self.continues && p.frame < frame))
                    && p.pos >= start
                    && p.pos <= offset
            })
            .max_by_key(|(_, p)| p.pos)
            .map(|(i, _)| i)?;
        Some(parked.swap_remove(best))
    }

    /// Parks a decoder for reuse, evicting the one furthest behind if full.
    fn park(&self, cursor: Parked) {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        if parked.len() >= PARKED_DECODERS {
            if let Some(lowest) = parked
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.pos)
                .map(|(i, _)| i)
            {
                parked.swap_remove(lowest);
            }
        }
        parked.push(cursor);
    }

    /// Reads `buf` from `offset` inside direct frame `frame`.
    fn read_direct(&self, frame: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut cursor = match self.take_parked(frame, offset) {
            Some(cursor) => cursor,
            None => Parked {
                frame,
                pos: self.starts[frame],
                decoder: (self.open)(frame)?,
            },
        };
        let want = offset - cursor.pos;
        let skipped = skip(&mut cursor.decoder, want, &self.counter)?;
        cursor.pos += skipped;
        if skipped < want {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        cursor.decoder.read_exact(buf)?;
        cursor.pos += buf.len() as u64;
        self.counter.add(buf.len() as u64);
        self.park(cursor);
        Ok(())
    }
}

impl Access for FrameAccess {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut pos = offset;
        let mut done = 0;
        while done < buf.len() {
            // The frame holding `pos`: the last one starting at or before it.
            let frame = match self.starts.partition_point(|&s| s <= pos) {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => n - 1,
            };
            let left = buf.len() - done;
            let n = match self.starts.get(frame + 1) {
                Some(&next) => usize::try_from(next - pos).map_or(left, |n| n.min(left)),
                None => left,
            };
            let piece = &mut buf[done..done + n];
            match self.spilled[frame] {
                Some(segment) => {
                    self.spill.read(segment, pos, piece)?;
                    self.finisher.offer(segment);
                }
                None => self.read_direct(frame, pos, piece)?,
            }
            done += n;
            pos += n as u64;
        }
        Ok(())
    }
}

/// One step of a decoder that reports frame ends (zstd's
/// `decompress_stream`).
pub(super) struct Step {
    /// Input bytes consumed.
    pub consumed: usize,
    /// Output bytes produced.
    pub produced: usize,
    /// The frame ended with this step (its output all produced).
    pub frame_end: bool,
}

/// A low-level decoder the indexing pass drives itself, so that it knows
/// the exact input position of every frame end.
pub(super) trait StepDecoder: Send {
    /// Decodes from `input` into `output`. An empty `input` means the file
    /// has ended: flush what is pending.
    fn step(&mut self, input: &[u8], output: &mut [u8]) -> io::Result<Step>;
}

/// Input read from the layer file per refill.
const PASS_INPUT: usize = 256 * 1024;

/// The indexing pass of a codec with a [`StepDecoder`]: hands out the
/// decompressed stream and records where each frame with data starts.
pub(super) struct StepPass<D> {
    file: Arc<Region>,
    decoder: D,
    input: Vec<u8>,
    /// Unconsumed input is `input[lo..hi]`.
    lo: usize,
    hi: usize,
    /// File offset of `input[lo]`.
    comp: u64,
    file_ended: bool,
    /// Decompressed bytes handed out.
    decomp: u64,
    /// Where the current frame started in the file.
    frame_comp: u64,
    /// Input of the current frame has been consumed.
    in_frame: bool,
    /// The current frame produced data and is in `table`.
    recorded: bool,
    table: FrameTable,
}

impl<D: StepDecoder> StepPass<D> {
    /// A pass over `file` from its start.
    pub(super) fn new(file: Arc<Region>, decoder: D) -> StepPass<D> {
        StepPass {
            file,
            decoder,
            input: vec![0; PASS_INPUT],
            lo: 0,
            hi: 0,
            comp: 0,
            file_ended: false,
            decomp: 0,
            frame_comp: 0,
            in_frame: false,
            recorded: false,
            table: FrameTable::default(),
        }
    }

    /// The frames found so far: the whole table once the pass has ended.
    pub(super) fn into_table(self) -> FrameTable {
        self.table
    }

    fn refill(&mut self) -> io::Result<()> {
        loop {
            match self.file.read_at(&mut self.input, self.comp) {
                Ok(0) => self.file_ended = true,
                Ok(n) => {
                    self.lo = 0;
                    self.hi = n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            return Ok(());
        }
    }
}

impl<D: StepDecoder> Read for StepPass<D> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.lo == self.hi && !self.file_ended {
                self.refill()?;
            }
            let step = self.decoder.step(&self.input[self.lo..self.hi], out)?;
            if step.produced > 0 && !self.recorded {
                self.recorded = true;
                if self.table.frames.len() < MAX_FRAMES {
                    self.table.frames.push(FrameStart {
                        comp: self.frame_comp,
                        decomp: self.decomp,
                    });
                }
            }
            self.lo += step.consumed;
            self.comp += step.consumed as u64;
            self.decomp += step.produced as u64;
            self.table.end = self.decomp;
            self.in_frame |= step.consumed > 0;
            if step.frame_end {
                self.frame_comp = self.comp;
                self.in_frame = false;
                self.recorded = false;
            }
            if step.produced > 0 {
                return Ok(step.produced);
            }
            if self.lo == self.hi && self.file_ended {
                if self.in_frame {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "compressed stream truncated inside a frame",
                    ));
                }
                return Ok(0);
            }
            if step.consumed == 0 && !step.frame_end {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "decoder made no progress",
                ));
            }
        }
    }
}

/// The frame table, as the codec's own index type.
impl<D: StepDecoder, I: From<FrameTable>> IndexingDecoder<I> for StepPass<D> {
    fn finish(self: Box<Self>) -> io::Result<I> {
        Ok(I::from(self.table))
    }
}

/// The pass of a decoder that could not be created: the error surfaces on
/// the first read, with the layer's name attached by the caller.
pub(super) struct FailedPass(pub Option<io::Error>);

impl Read for FailedPass {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("decoder could not be created")))
    }
}

impl<I> IndexingDecoder<I> for FailedPass {
    fn finish(self: Box<Self>) -> io::Result<I> {
        Err(io::Error::other("decoder could not be created"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(frames: &[(u64, u64)], end: u64) -> FrameTable {
        FrameTable {
            frames: frames
                .iter()
                .map(|&(comp, decomp)| FrameStart { comp, decomp })
                .collect(),
            end,
        }
    }

    #[test]
    fn tables_round_trip_and_garbage_is_refused() {
        for t in [
            table(&[], 0),
            table(&[(0, 0)], 1),
            table(&[(12, 0), (100, 4096), (250, 9000)], 9001),
        ] {
            let mut bytes = Vec::new();
            t.encode(&mut bytes);
            assert_eq!(FrameTable::decode(&bytes).ok(), Some(t.clone()));
            // Every truncation is refused, never a panic.
            for cut in 0..bytes.len() {
                assert!(FrameTable::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
        for bad in [
            table(&[], 5),
            table(&[(0, 1)], 10),
            table(&[(0, 0), (0, 10)], 20),
            table(&[(0, 0), (10, 0)], 20),
            table(&[(0, 0), (10, 10)], 10),
        ] {
            let mut bytes = Vec::new();
            bad.encode(&mut bytes);
            assert!(FrameTable::decode(&bytes).is_err(), "{bad:?}");
        }
        // A count promising more frames than the bytes hold.
        let mut bytes = Vec::new();
        table(&[(0, 0)], 1).encode(&mut bytes);
        bytes[0] = 200;
        assert!(FrameTable::decode(&bytes).is_err());
        assert!(FrameTable::decode(&[0xff; 40]).is_err());
    }

    /// Frames of 1000 bytes each; frame `i` decodes from `i * 1000` on,
    /// running on into later frames.
    fn access(policy: FramePolicy, counter: &Arc<DecodeCounter>) -> (FrameAccess, Vec<u8>) {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13 % 256) as u8).collect();
        let d = data.clone();
        let open: FrameOpener =
            Arc::new(move |i| Ok(Box::new(io::Cursor::new(d[i * 1000..].to_vec())) as Box<_>));
        let starts = (0..10).map(|i| i * 1000).collect();
        let dir = std::env::temp_dir();
        let access = FrameAccess::new(starts, 10_000, open, policy, &dir, Arc::clone(counter));
        (access, data)
    }

    #[test]
    fn reads_decode_only_the_frames_they_touch() {
        let counter = Arc::new(DecodeCounter::default());
        let policy = FramePolicy {
            continues: true,
            direct_limit: u64::MAX,
        };
        let (access, data) = access(policy, &counter);
        let mut buf = [0u8; 100];
        access.read_exact_at(9_500, &mut buf).expect("read");
        assert_eq!(buf, data[9_500..9_600]);
        assert_eq!(counter.get(), 600);
        // Forward in the same frame: the parked decoder goes on.
        access.read_exact_at(9_700, &mut buf).expect("read");
        assert_eq!(counter.get(), 800);
        // Across a frame end.
        let mut buf = [0u8; 1500];
        access.read_exact_at(2_900, &mut buf).expect("read");
        assert_eq!(buf, data[2_900..4_400]);
        let mut buf = [0u8; 2];
        let err = access.read_exact_at(9_999, &mut buf).expect_err("past end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn big_frames_are_spilled() {
        let counter = Arc::new(DecodeCounter::default());
        let policy = FramePolicy {
            continues: false,
            direct_limit: 500,
        };
        let (access, data) = access(policy, &counter);
        assert!(access.spilled.iter().all(Option::is_some));
        for _ in 0..2 {
            let mut all = vec![0u8; data.len()];
            access.read_exact_at(0, &mut all).expect("read");
            assert_eq!(all, data);
        }
        assert_eq!(counter.get(), data.len() as u64);
    }
}
