//! bzip2 random access through its blocks.
//!
//! A bzip2 file is one stream or several concatenated (pbzip2 writes one
//! per 900 kB block). Inside a stream every block decodes on its own (the
//! Burrows-Wheeler transform restarts per block) but starts at an arbitrary
//! *bit* offset and records no length: a block is the 48-bit magic
//! `0x314159265359`, its 32-bit CRC and Huffman-coded data, and is followed
//! directly by the next block's magic or by the end-of-stream magic
//! `0x177245385090`, the stream's combined CRC and zero padding to a byte.
//!
//! # Finding the blocks exactly
//!
//! The indexing pass does not use a streaming decoder: it decodes the file
//! block by block itself, so each block's position is known by
//! construction. A block starts where the previous one ended (the first
//! right after the 4-byte `BZh1`..`BZh9` stream header). Its end is the
//! first candidate after its start, a 48-bit block or end-of-stream magic at
//! any bit offset, *at which the block decodes*: the pass builds a
//! one-block stream from the block's bits up to that candidate (see
//! [`one_block_stream`]) and decodes it. A magic that occurs by chance
//! inside the block's compressed data (one chance in 2^48 per bit) cuts the
//! Huffman data short, so the decoder runs out of input or reads the
//! appended trailer as data and fails the block CRC; it is then rejected and
//! the next candidate tried. A cut past the true end cannot be reached,
//! since the true end is itself a candidate and comes first. Scanning for
//! the magic alone would be wrong one time in 2^48 bits; decoding each
//! candidate costs nothing extra, because the pass must decode every block
//! anyway and hands out exactly that output. The block CRCs are folded into
//! the stream's combined CRC and checked against the trailer, as the
//! reference decoder does.
//!
//! A block's output is held whole until its CRC has been checked (a rejected
//! candidate must not leak bytes): normally at most 900 kB, up to about
//! 45 MB for a block of long runs (bzip2's initial run-length coding).
//!
//! # Reads
//!
//! Every block is a frame for [`FrameAccess`]: a read opens the block that
//! covers its offset by building its one-block stream from the file (at
//! most [`MAX_BLOCK_BYTES`] read, typically under 1 MB) and decoding it with
//! the `bzip2` crate; the decoder is parked, so reading forward inside a
//! block does not restart it. A cold read decodes at most one block before
//! its bytes.
//!
//! Indexes stored before block tables existed hold only the stream table;
//! they still work, through stream decoders and the spill cache as before.

use crate::source::region::Region;
use std::io::{self, BufRead, Cursor, Read};
use std::path::Path;
use std::sync::Arc;

use bzip2::{Decompress, Status};

use crate::source::access::{Access, DecodeCounter, IndexingDecoder};
use crate::source::cursor::{ByteCursor, SeekDecodeError};
use crate::source::frames::{
    table_access, FrameAccess, FramePolicy, FrameStart, FrameTable, MAX_FRAMES,
};
use crate::source::positioned::PositionedReader;
use crate::source::spill::FrameOpener;

/// Streams longer than this (decompressed) are spilled, for indexes without
/// a block table: pbzip2's 900 kB streams are decoded per read, a
/// whole-file stream never.
const DIRECT_LIMIT: u64 = 4 * 1024 * 1024;

/// Compressed input buffered per stream decoder opened for a read.
const INPUT_BUFFER: usize = 64 * 1024;

/// The block magic, the first 48 bits of every block.
const BLOCK_MAGIC: u64 = 0x3141_5926_5359;
/// The end-of-stream magic, followed by the 32-bit combined CRC.
const EOS_MAGIC: u64 = 0x1772_4538_5090;

/// Longest compressed block accepted. A block holds at most 900,000
/// symbols after the first run-length coding, coded in at most 20 bits
/// each plus tables: under 2.3 MB, so 4 MiB is never hit by a valid file
/// and bounds what one read loads.
pub(super) const MAX_BLOCK_BYTES: u64 = 4 * 1024 * 1024;

/// Candidate ends tried per block before the pass gives up. Real data
/// holds a chance magic about once per 2^48 bits; only a file crafted to
/// hold many can reach this, and each try may decode up to a block.
const MAX_CANDIDATES: usize = 16;

/// File bytes read per refill of the pass's buffer.
const PASS_CHUNK: usize = 1024 * 1024;

/// One block: its bits in the file and where its output starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bzip2Block {
    /// Bit offset of the block magic in the file.
    pub bit: u64,
    /// Bit offset just past the block (the next magic).
    pub end_bit: u64,
    /// Decompressed offset of the block's first byte.
    pub decomp: u64,
    /// The block size digit of its stream's header, `1..=9`.
    pub level: u8,
}

/// The stream and block tables of a bzip2 layer. `blocks` is `None` for an
/// index stored before block tables, or if the layer had more than
/// [`MAX_FRAMES`] blocks; reads then go through the streams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bzip2Index {
    pub(super) streams: FrameTable,
    pub(super) blocks: Option<Vec<Bzip2Block>>,
}

/// Bytes per encoded block.
const BLOCK_ENCODED: usize = 25;

impl Bzip2Index {
    /// The stream table as [`FrameTable::encode`] writes it, then, if there
    /// is a block table, its count and `(bit, end_bit, decomp)` as
    /// little-endian u64s and the level byte per block.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        self.streams.encode(out);
        if let Some(blocks) = &self.blocks {
            out.extend_from_slice(&(blocks.len() as u64).to_le_bytes());
            for b in blocks {
                out.extend_from_slice(&b.bit.to_le_bytes());
                out.extend_from_slice(&b.end_bit.to_le_bytes());
                out.extend_from_slice(&b.decomp.to_le_bytes());
                out.push(b.level);
            }
        }
    }

    /// Decodes what [`Bzip2Index::encode`] wrote, refusing malformed
    /// tables: wrong lengths, blocks out of order or overlapping, a first
    /// block not at offset 0, a block longer than [`MAX_BLOCK_BYTES`], a bad
    /// level, blocks past the stream table's end.
    pub(super) fn decode(bytes: &[u8]) -> Result<Bzip2Index, SeekDecodeError> {
        const MISMATCH: SeekDecodeError =
            SeekDecodeError("bzip2 stream count does not match the table");
        const BLOCKS_MISMATCH: SeekDecodeError =
            SeekDecodeError("bzip2 block count does not match the table");
        // The stream table's own count, read ahead to find where it ends.
        let count = ByteCursor::new(bytes)
            .u64()
            .ok_or(SeekDecodeError("bzip2 table header missing"))?;
        let streams_len = usize::try_from(count)
            .ok()
            .filter(|&c| c <= MAX_FRAMES)
            .map(|c| 16 + 16 * c)
            .filter(|&l| l <= bytes.len())
            .ok_or(MISMATCH)?;
        let mut r = ByteCursor::new(bytes);
        let streams = FrameTable::decode(r.take(streams_len).ok_or(MISMATCH)?)?;
        if r.is_empty() {
            return Ok(Bzip2Index {
                streams,
                blocks: None,
            });
        }
        let count = r
            .u64()
            .ok_or(SeekDecodeError("bzip2 block count missing"))?;
        let count = usize::try_from(count)
            .ok()
            .filter(|&c| c <= MAX_FRAMES && c.checked_mul(BLOCK_ENCODED) == Some(r.len()))
            .ok_or(BLOCKS_MISMATCH)?;
        let mut blocks = Vec::with_capacity(count);
        for _ in 0..count {
            let (Some(bit), Some(end_bit), Some(decomp), Some(level)) =
                (r.u64(), r.u64(), r.u64(), r.u8())
            else {
                return Err(BLOCKS_MISMATCH);
            };
            blocks.push(Bzip2Block {
                bit,
                end_bit,
                decomp,
                level,
            });
        }
        check_blocks(&blocks, &streams)?;
        Ok(Bzip2Index {
            streams,
            blocks: Some(blocks),
        })
    }
}

fn check_blocks(blocks: &[Bzip2Block], streams: &FrameTable) -> Result<(), SeekDecodeError> {
    if blocks.is_empty() != streams.frames.is_empty() {
        return Err(SeekDecodeError("bzip2 block and stream tables disagree"));
    }
    if blocks.first().is_some_and(|b| b.decomp != 0) {
        return Err(SeekDecodeError("first bzip2 block not at offset 0"));
    }
    if blocks.iter().any(|b| {
        !(1..=9).contains(&b.level) || b.end_bit <= b.bit || b.end_bit - b.bit > MAX_BLOCK_BYTES * 8
    }) {
        return Err(SeekDecodeError("bad bzip2 block"));
    }
    if blocks
        .windows(2)
        .any(|w| w[0].end_bit > w[1].bit || w[0].decomp >= w[1].decomp)
    {
        return Err(SeekDecodeError("bzip2 block offsets not ascending"));
    }
    if blocks.last().is_some_and(|b| b.decomp >= streams.end) {
        return Err(SeekDecodeError("bzip2 table ends inside its last block"));
    }
    Ok(())
}

/// `n` bits (at most 64) of `bytes` from bit `bit`, most significant first;
/// `None` past the end.
fn bits(bytes: &[u8], bit: u64, n: u32) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..u64::from(n) {
        let p = bit.checked_add(i)?;
        let byte = *bytes.get(usize::try_from(p / 8).ok()?)?;
        v = (v << 1) | u64::from((byte >> (7 - p % 8)) & 1);
    }
    Some(v)
}

/// The eight bits of `bytes` from bit `p` (zeros past the end).
fn byte_at(bytes: &[u8], p: u64) -> u8 {
    let i = usize::try_from(p / 8).unwrap_or(usize::MAX);
    let hi = u16::from(bytes.get(i).copied().unwrap_or(0));
    let lo = u16::from(bytes.get(i.saturating_add(1)).copied().unwrap_or(0));
    (((hi << 8) | lo) >> (8 - p % 8)) as u8
}

/// The first bit offset `p >= from` where a block or end-of-stream magic
/// fits wholly in `bytes`.
fn find_magic(bytes: &[u8], from: u64) -> Option<u64> {
    let first = usize::try_from(from / 8).ok()?;
    let mut acc = 0u64;
    for (j, &b) in bytes.iter().enumerate().skip(first) {
        acc = (acc << 8) | u64::from(b);
        let end = (j as u64 + 1) * 8;
        for s in (0..8u64).rev() {
            let Some(start) = end.checked_sub(48 + s) else {
                continue;
            };
            if start < from {
                continue;
            }
            let v = (acc >> s) & ((1 << 48) - 1);
            if v == BLOCK_MAGIC || v == EOS_MAGIC {
                return Some(start);
            }
        }
    }
    None
}

/// Writes bits most significant first.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// Appends the low `n` (at most 56) bits of `v`.
    fn put(&mut self, v: u64, n: u32) {
        self.acc = (self.acc << n) | (v & ((1u64 << n) - 1));
        self.n += n;
        while self.n >= 8 {
            self.out.push((self.acc >> (self.n - 8)) as u8);
            self.n -= 8;
        }
    }
}

/// A standalone stream holding one block: `BZh` and `level`, the block's
/// bits `[start, end)` of `src` realigned to a byte, the end-of-stream
/// magic and, as the combined CRC of a one-block stream, the block's own
/// CRC (the 32 bits after its magic), zero-padded to a byte. `None` if
/// `src` does not hold those bits.
fn one_block_stream(level: u8, src: &[u8], start: u64, end: u64) -> Option<Vec<u8>> {
    let crc = bits(src, start.checked_add(48)?, 32)?;
    if end.div_ceil(8) > src.len() as u64 || end < start {
        return None;
    }
    let mut out = Vec::with_capacity(usize::try_from((end - start) / 8).ok()? + 16);
    out.extend_from_slice(b"BZh");
    out.push(b'0' + level);
    let mut p = start;
    while end - p >= 8 {
        out.push(byte_at(src, p));
        p += 8;
    }
    let mut w = BitWriter { out, acc: 0, n: 0 };
    let rest = (end - p) as u32;
    if rest > 0 {
        w.put(u64::from(byte_at(src, p)) >> (8 - rest), rest);
    }
    w.put(EOS_MAGIC, 48);
    w.put(crc, 32);
    if w.n > 0 {
        w.put(0, 8 - w.n);
    }
    Some(w.out)
}

/// Decodes a one-block stream into `out` (cleared first); false if it is
/// not a whole valid stream.
fn decode_one(stream: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut d = Decompress::new(false);
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(1024 * 1024);
        }
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let Some(input) = usize::try_from(in_before)
            .ok()
            .and_then(|i| stream.get(i..))
        else {
            return false;
        };
        match d.decompress_vec(input, out) {
            Ok(Status::StreamEnd) => return true,
            Ok(_) if d.total_in() == in_before && d.total_out() == out_before => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Where the pass is in the file.
#[derive(Clone, Copy)]
enum PassState {
    /// At a byte boundary where a stream header or the file end is due.
    StreamStart,
    /// Inside a stream: a block or the end-of-stream magic is due.
    InStream {
        level: u8,
        /// The combined CRC of the stream's blocks so far.
        crc: u32,
        /// The stream produced output and is in the stream table.
        recorded: bool,
    },
    Done,
}

/// The indexing pass: decodes block by block (see the module docs).
struct BlockPass {
    file: Arc<Region>,
    file_len: u64,
    /// File bytes from offset `base`.
    buf: Vec<u8>,
    base: u64,
    /// Bit offset in the file of what is parsed next.
    bit: u64,
    state: PassState,
    /// File offset of the current stream's header.
    stream_comp: u64,
    /// The last block's output, handed out from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes decoded (all handed out or in `out`).
    decomp: u64,
    streams: FrameTable,
    /// `None` once there were too many blocks to record.
    blocks: Option<Vec<Bzip2Block>>,
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl BlockPass {
    /// Drops buffered bytes before file offset `byte`.
    fn forget_before(&mut self, byte: u64) {
        let k = usize::try_from(byte.saturating_sub(self.base))
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        self.buf.drain(..k);
        self.base += k as u64;
    }

    /// Reads up to `PASS_CHUNK` more bytes; false at the end of the file.
    fn extend(&mut self) -> io::Result<bool> {
        let at = self.base + self.buf.len() as u64;
        let want = usize::try_from(self.file_len.saturating_sub(at))
            .unwrap_or(usize::MAX)
            .min(PASS_CHUNK);
        if want == 0 {
            return Ok(false);
        }
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        let got = self.file.read_at(&mut self.buf[old..], at);
        let got = match got {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(e);
            }
        };
        self.buf.truncate(old + got);
        Ok(got > 0)
    }

    /// `n` bits from file bit `bit`, reading more of the file as needed.
    fn file_bits(&mut self, bit: u64, n: u32) -> io::Result<u64> {
        loop {
            if let Some(v) = bit
                .checked_sub(self.base * 8)
                .and_then(|rel| bits(&self.buf, rel, n))
            {
                return Ok(v);
            }
            if !self.extend()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "bzip2 stream truncated",
                ));
            }
        }
    }

    /// Finds where the block at `start` ends by decoding it, leaving its
    /// output in `out`; returns the end's bit offset.
    fn decode_block(&mut self, level: u8, start: u64) -> io::Result<u64> {
        self.forget_before(start / 8);
        let base_bits = self.base * 8;
        let rel_start = start - base_bits;
        // The CRC follows the magic: no candidate end before it.
        let mut from = rel_start + 80;
        let mut tried = 0;
        loop {
            let Some(cut) = find_magic(&self.buf, from) else {
                let scanned = (self.buf.len() as u64 * 8).saturating_sub(47);
                if (self.buf.len() as u64) > MAX_BLOCK_BYTES + 8 {
                    return Err(bad("bzip2 block too long"));
                }
                if !self.extend()? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "bzip2 stream truncated inside a block",
                    ));
                }
                from = from.max(scanned);
                continue;
            };
            if cut - rel_start > MAX_BLOCK_BYTES * 8 {
                return Err(bad("bzip2 block too long"));
            }
            tried += 1;
            if tried > MAX_CANDIDATES {
                return Err(bad("bzip2 block: too many false block magics"));
            }
            let stream = one_block_stream(level, &self.buf, rel_start, cut)
                .ok_or_else(|| bad("bzip2 block out of the buffer"))?;
            if decode_one(&stream, &mut self.out) {
                return Ok(cut + base_bits);
            }
            from = cut + 1;
        }
    }

    /// Decodes the next block with output into `out`; false at the end.
    fn next_block(&mut self) -> io::Result<bool> {
        loop {
            match self.state {
                PassState::Done => return Ok(false),
                PassState::StreamStart => {
                    let byte = self.bit / 8;
                    if byte >= self.file_len {
                        self.state = PassState::Done;
                        continue;
                    }
                    let header = self.file_bits(self.bit, 32)?;
                    let level = (header & 0xff) as u8;
                    if header >> 8 != 0x42_5a_68 || !(b'1'..=b'9').contains(&level) {
                        return Err(bad("not a bzip2 stream header"));
                    }
                    self.stream_comp = byte;
                    self.state = PassState::InStream {
                        level: level - b'0',
                        crc: 0,
                        recorded: false,
                    };
                    self.bit += 32;
                }
                PassState::InStream {
                    level,
                    crc,
                    recorded,
                } => {
                    let magic = self.file_bits(self.bit, 48)?;
                    let stored = self.file_bits(self.bit + 48, 32)? as u32;
                    if magic == EOS_MAGIC {
                        if stored != crc {
                            return Err(bad("bzip2 stream CRC mismatch"));
                        }
                        self.bit = (self.bit + 80).div_ceil(8) * 8;
                        self.state = PassState::StreamStart;
                        continue;
                    }
                    if magic != BLOCK_MAGIC {
                        return Err(bad("bzip2 block magic missing"));
                    }
                    let start = self.bit;
                    let end = self.decode_block(level, start)?;
                    self.bit = end;
                    self.state = PassState::InStream {
                        level,
                        crc: crc.rotate_left(1) ^ stored,
                        recorded: recorded || !self.out.is_empty(),
                    };
                    if self.out.is_empty() {
                        continue;
                    }
                    if !recorded && self.streams.frames.len() < MAX_FRAMES {
                        self.streams.frames.push(FrameStart {
                            comp: self.stream_comp,
                            decomp: self.decomp,
                        });
                    }
                    if let Some(blocks) = &mut self.blocks {
                        if blocks.len() < MAX_FRAMES {
                            blocks.push(Bzip2Block {
                                bit: start,
                                end_bit: end,
                                decomp: self.decomp,
                                level,
                            });
                        } else {
                            self.blocks = None;
                        }
                    }
                    self.out_pos = 0;
                    self.decomp += self.out.len() as u64;
                    self.streams.end = self.decomp;
                    return Ok(true);
                }
            }
        }
    }
}

impl Read for BlockPass {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.out_pos >= self.out.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

impl IndexingDecoder<Bzip2Index> for BlockPass {
    fn finish(self: Box<Self>) -> io::Result<Bzip2Index> {
        // Every recorded block is wholly decoded, so reads may go to
        // `decomp` even if the tar parser stopped inside the last block.
        Ok(Bzip2Index {
            streams: self.streams,
            blocks: self.blocks,
        })
    }
}

/// The indexing pass: decodes every block from the start, recording them.
pub(crate) fn index_pass(file: Arc<Region>, file_len: u64) -> Box<dyn IndexingDecoder<Bzip2Index>> {
    Box::new(BlockPass {
        file,
        file_len,
        buf: Vec::new(),
        base: 0,
        bit: 0,
        state: PassState::StreamStart,
        stream_comp: 0,
        out: Vec::new(),
        out_pos: 0,
        decomp: 0,
        streams: FrameTable::default(),
        blocks: Some(Vec::new()),
    })
}

/// A decoder from compressed offset `comp` through every later stream.
pub(super) fn decoder_at(file: &Arc<Region>, file_len: u64, comp: u64) -> Box<dyn Read + Send> {
    stream_decoder(PositionedReader::buffered(
        file,
        file_len,
        comp,
        INPUT_BUFFER,
    ))
}

/// A decoder of every stream that `input` holds, in order.
pub(super) fn stream_decoder(input: impl BufRead + Send + 'static) -> Box<dyn Read + Send> {
    Box::new(bzip2::bufread::MultiBzDecoder::new(input))
}

/// A decoder of block `block` alone, from its one-block stream.
fn block_decoder(file: &Region, block: &Bzip2Block) -> io::Result<Box<dyn Read + Send>> {
    let first = block.bit / 8;
    let len = usize::try_from(block.end_bit.div_ceil(8) - first)
        .map_err(|_| bad("bzip2 block too long"))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, first)?;
    let start = block.bit % 8;
    let stream = one_block_stream(block.level, &bytes, start, block.end_bit - first * 8)
        .ok_or_else(|| bad("bzip2 block out of range"))?;
    Ok(Box::new(bzip2::bufread::BzDecoder::new(Cursor::new(
        stream,
    ))))
}

/// Random access for a bzip2 layer indexed as `index`.
pub(super) fn access(
    file: Arc<Region>,
    file_len: u64,
    index: Bzip2Index,
    counter: Arc<DecodeCounter>,
    spill_dir: &Path,
) -> io::Result<Box<dyn Access>> {
    let table = index.streams;
    if let Some(blocks) = index.blocks {
        let starts = blocks.iter().map(|b| b.decomp).collect();
        let open: FrameOpener = Arc::new(move |i| {
            let block = blocks
                .get(i)
                .ok_or_else(|| io::Error::other("bzip2 block out of range"))?;
            block_decoder(&file, block)
        });
        return Ok(Box::new(FrameAccess::new(
            starts,
            table.end,
            open,
            FramePolicy {
                continues: false,
                // A block is at most a few tens of milliseconds of decoding.
                direct_limit: u64::MAX,
            },
            spill_dir,
            counter,
        )));
    }
    Ok(table_access(
        table,
        "bzip2 stream",
        move |comp| Ok(decoder_at(&file, file_len, comp)),
        DIRECT_LIMIT,
        spill_dir,
        counter,
    ))
}

#[cfg(test)]
mod tests;
