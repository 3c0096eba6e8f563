//! xz random access through its blocks.
//!
//! An xz stream is a run of independently decodable blocks followed by an
//! index listing each block's compressed and uncompressed size, and a
//! footer pointing back at the index. Multi-threaded `xz -T` and `pixz`
//! cut their output into blocks of a few MiB to a few dozen. At the end of
//! the indexing pass (which decodes the stream with liblzma and so checks
//! everything it reads) the index of every stream in the file is read
//! from the end backwards, as `xz --list` does, giving each block's extent.
//!
//! A block is decoded on its own by handing a stream decoder the stream's
//! 12-byte header followed by just that block's bytes: the decoder then
//! parses the block header, decodes, and would next expect the index,
//! which it is never asked for. Blocks longer than [`DIRECT_LIMIT`] and
//! single-block files (plain `xz` without `-T`) go through the spill
//! cache, decoded per block; a file whose index cannot be read (or does not
//! cover what the pass read) is spilled as one stream.

use super::region::Region;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use liblzma::bufread::XzDecoder;
use liblzma::stream::{Stream, CONCATENATED};

use super::access::{Access, DecodeCounter, IndexingDecoder};
use super::cursor::{ByteCursor, SeekDecodeError};
use super::frames::{FailedPass, FrameAccess, FramePolicy, MAX_FRAMES};
use super::positioned::PositionedReader;
use super::spill::{FrameOpener, SpillAccess};

/// Blocks longer than this (decompressed) are spilled: xz decodes at about
/// 100 MB/s, so decoding up to half of one per cold read stays near 20 ms.
const DIRECT_LIMIT: u64 = 4 * 1024 * 1024;

/// Compressed input buffered per decoder.
const INPUT_BUFFER: usize = 128 * 1024;

/// The largest stream index read (xz's own limit is 16 GiB; a real index
/// takes a few bytes per block).
const MAX_INDEX: u64 = 64 * 1024 * 1024;

const HEADER_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];
/// Stream header and footer are 12 bytes each.
const HEADER_LEN: u64 = 12;

/// One block: where its stream header and its bytes are in the file, and
/// where its data starts in the decompressed stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XzBlock {
    /// Offset of the header of the stream holding the block.
    pub header: u64,
    /// Offset of the block's first byte (its block header).
    pub comp: u64,
    /// Offset just past the block (padding and check included).
    pub comp_end: u64,
    /// Decompressed offset of its first byte.
    pub decomp: u64,
}

/// The block table of an xz layer; no blocks means the index could not be
/// used and the layer is spilled as one stream. `end` is the decompressed
/// length (from the index, or as far as the pass read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XzIndex {
    pub(super) blocks: Vec<XzBlock>,
    pub(super) end: u64,
}

impl XzIndex {
    /// `count, end, (header, comp, comp_end, decomp)*` as little-endian u64s.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.blocks.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.end.to_le_bytes());
        for b in &self.blocks {
            for v in [b.header, b.comp, b.comp_end, b.decomp] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// Decodes what [`XzIndex::encode`] wrote; refuses wrong lengths and
    /// blocks that are not in order, overlap, or lie before their header.
    pub(super) fn decode(bytes: &[u8]) -> Result<XzIndex, SeekDecodeError> {
        const LENGTH: SeekDecodeError = SeekDecodeError("xz index length");
        if bytes.len() % 8 != 0 || bytes.len() < 16 || (bytes.len() / 8 - 2) % 4 != 0 {
            return Err(LENGTH);
        }
        let mut r = ByteCursor::new(bytes);
        let (Some(stored_count), Some(end)) = (r.u64(), r.u64()) else {
            return Err(LENGTH);
        };
        let count = r.len() / 32;
        if stored_count != count as u64 || count > MAX_FRAMES {
            return Err(SeekDecodeError("xz block count does not match"));
        }
        let mut blocks = Vec::with_capacity(count);
        while let (Some(header), Some(comp), Some(comp_end), Some(decomp)) =
            (r.u64(), r.u64(), r.u64(), r.u64())
        {
            blocks.push(XzBlock {
                header,
                comp,
                comp_end,
                decomp,
            });
        }
        let index = XzIndex { blocks, end };
        if !index.well_formed() {
            return Err(SeekDecodeError("xz blocks out of order"));
        }
        Ok(index)
    }

    fn well_formed(&self) -> bool {
        let Some(first) = self.blocks.first() else {
            return true;
        };
        first.decomp == 0
            && self.blocks.iter().all(|b| {
                b.header
                    .checked_add(HEADER_LEN)
                    .is_some_and(|h| h <= b.comp && b.comp < b.comp_end)
            })
            && self
                .blocks
                .windows(2)
                .all(|w| w[0].comp_end <= w[1].comp && w[0].decomp < w[1].decomp)
            && self.blocks.last().is_some_and(|b| b.decomp < self.end)
    }
}

/// A stream decoder for every concatenated stream of the file.
fn stream_decoder() -> io::Result<Stream> {
    Ok(Stream::new_stream_decoder(u64::MAX, CONCATENATED)?)
}

/// A decoder of the whole file from its start.
pub(super) fn whole_decoder(file: &Arc<Region>, file_len: u64) -> io::Result<Box<dyn Read + Send>> {
    stream_reader(PositionedReader::buffered(file, file_len, 0, INPUT_BUFFER))
}

/// A decoder of every stream that `input` holds, in order.
pub(super) fn stream_reader(
    input: impl BufRead + Send + 'static,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(XzDecoder::new_stream(input, stream_decoder()?)))
}

/// The indexing pass: the whole-file decoder, counting what it hands out;
/// the stream indexes are read when it finishes.
struct XzPass {
    file: Arc<Region>,
    file_len: u64,
    decoder: Box<dyn Read + Send>,
    read: u64,
}

impl Read for XzPass {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl IndexingDecoder<XzIndex> for XzPass {
    fn finish(self: Box<Self>) -> io::Result<XzIndex> {
        let index = match read_indexes(&self.file, self.file_len) {
            Ok(index) if index.end >= self.read => index,
            Ok(index) => {
                log::warn!(
                    "xz index covers {} bytes, the stream has at least {}: reading it whole",
                    index.end,
                    self.read
                );
                XzIndex::default()
            }
            Err(e) => {
                log::info!("xz index not usable ({e}): reading the stream whole");
                XzIndex::default()
            }
        };
        let end = index.end.max(self.read);
        Ok(XzIndex { end, ..index })
    }
}

/// The indexing pass over an xz layer.
pub(crate) fn index_pass(file: Arc<Region>, file_len: u64) -> Box<dyn IndexingDecoder<XzIndex>> {
    match whole_decoder(&file, file_len) {
        Ok(decoder) => Box::new(XzPass {
            file,
            file_len,
            decoder,
            read: 0,
        }),
        Err(e) => Box::new(FailedPass(Some(e))),
    }
}

/// Why an index was not used (only logged: the layer is then spilled).
type Refusal = String;

fn le32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

/// Reads `len` bytes at `pos`.
fn read_at(file: &Region, pos: u64, len: u64) -> Result<Vec<u8>, Refusal> {
    let len = usize::try_from(len).map_err(|_| "index too large".to_string())?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, pos)
        .map_err(|e| format!("reading {len} bytes at {pos}: {e}"))?;
    Ok(buf)
}

/// Steps back over stream padding (zero words) ending at `pos`.
fn skip_padding(file: &Region, mut pos: u64) -> Result<u64, Refusal> {
    while pos > 0 {
        let n = pos.min(4096);
        let buf = read_at(file, pos - n, n)?;
        let zeros = buf.iter().rev().take_while(|&&b| b == 0).count() as u64 / 4 * 4;
        pos -= zeros;
        if zeros < n {
            break;
        }
    }
    Ok(pos)
}

/// An xz variable-length integer at `*at`, advancing it.
fn varint(buf: &[u8], at: &mut usize) -> Result<u64, Refusal> {
    let mut value = 0u64;
    for i in 0..9 {
        let byte = *buf.get(*at).ok_or("index ends inside a number")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("number longer than 9 bytes".into())
}

/// Reads the index of the stream whose footer ends at `pos`: the stream's
/// start and its (unpadded size, uncompressed size) records.
fn read_stream(file: &Region, pos: u64) -> Result<(u64, Vec<(u64, u64)>), Refusal> {
    if pos < 2 * HEADER_LEN {
        return Err("file too short for a stream".into());
    }
    let footer = read_at(file, pos - HEADER_LEN, HEADER_LEN)?;
    if footer[10..12] != FOOTER_MAGIC || crc32fast::hash(&footer[4..10]) != le32(&footer[0..4]) {
        return Err(format!("no stream footer before byte {pos}"));
    }
    let flags = &footer[8..10];
    let index_len = (u64::from(le32(&footer[4..8])) + 1) * 4;
    if index_len > MAX_INDEX {
        return Err(format!("index of {index_len} bytes"));
    }
    let index_start = (pos - HEADER_LEN)
        .checked_sub(index_len)
        .ok_or("index before the start of the file")?;
    let index = read_at(file, index_start, index_len)?;
    let body = index.len() - 4;
    if crc32fast::hash(&index[..body]) != le32(&index[body..]) || index[0] != 0 {
        return Err(format!("bad index at byte {index_start}"));
    }
    let mut at = 1;
    let count = varint(&index, &mut at)?;
    // Each record takes at least two bytes: no allocation beyond that.
    if count > (body as u64) / 2 {
        return Err("more index records than bytes".into());
    }
    let mut records = Vec::with_capacity(count as usize);
    let mut blocks_len = 0u64;
    for _ in 0..count {
        let unpadded = varint(&index, &mut at)?;
        let uncompressed = varint(&index, &mut at)?;
        if unpadded < 5 || uncompressed > i64::MAX as u64 {
            return Err("impossible block size in index".into());
        }
        blocks_len = unpadded
            .checked_add(3)
            .map(|u| u & !3)
            .and_then(|p| blocks_len.checked_add(p))
            .ok_or("block sizes overflow")?;
        records.push((unpadded, uncompressed));
    }
    if at > body || index[at..body].iter().any(|&b| b != 0) || (body - at) >= 4 {
        return Err("index padding".into());
    }
    let stream_start = index_start
        .checked_sub(blocks_len)
        .and_then(|p| p.checked_sub(HEADER_LEN))
        .ok_or("blocks before the start of the file")?;
    let header = read_at(file, stream_start, HEADER_LEN)?;
    if header[..6] != HEADER_MAGIC
        || header[6..8] != *flags
        || crc32fast::hash(&header[6..8]) != le32(&header[8..12])
    {
        return Err(format!("no stream header at byte {stream_start}"));
    }
    Ok((stream_start, records))
}

/// Reads the index of every stream in the file, last stream first, into
/// one block table for the whole decompressed stream.
fn read_indexes(file: &Region, file_len: u64) -> Result<XzIndex, Refusal> {
    if file_len % 4 != 0 {
        return Err("file length not a multiple of four".into());
    }
    let mut streams = Vec::new();
    let mut records_total = 0usize;
    let mut pos = skip_padding(file, file_len)?;
    while pos > 0 {
        let (start, records) = read_stream(file, pos)?;
        records_total += records.len();
        if records_total > MAX_FRAMES {
            return Err("too many blocks".into());
        }
        streams.push((start, records));
        pos = skip_padding(file, start)?;
    }
    if streams.is_empty() {
        return Err("no stream".into());
    }
    let mut blocks = Vec::with_capacity(records_total);
    let mut decomp = 0u64;
    for (start, records) in streams.into_iter().rev() {
        let mut comp = start + HEADER_LEN;
        for (unpadded, uncompressed) in records {
            let padded = (unpadded + 3) & !3;
            if uncompressed > 0 {
                blocks.push(XzBlock {
                    header: start,
                    comp,
                    comp_end: comp + padded,
                    decomp,
                });
            }
            comp += padded;
            decomp = decomp
                .checked_add(uncompressed)
                .ok_or("uncompressed sizes overflow")?;
        }
    }
    Ok(XzIndex {
        blocks,
        end: decomp,
    })
}

/// A decoder of exactly one block: its stream's header, then its bytes.
fn block_decoder(
    file: &Arc<Region>,
    file_len: u64,
    block: &XzBlock,
) -> io::Result<Box<dyn Read + Send>> {
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, block.header)?;
    let body = PositionedReader {
        file: Arc::clone(file),
        pos: block.comp,
        len: file_len,
    }
    .take(block.comp_end - block.comp);
    let input = BufReader::with_capacity(INPUT_BUFFER, io::Cursor::new(header).chain(body));
    let stream = Stream::new_stream_decoder(u64::MAX, 0)?;
    Ok(Box::new(XzDecoder::new_stream(input, stream)))
}

/// Random access for an xz layer indexed as `index`.
pub(super) fn access(
    file: Arc<Region>,
    file_len: u64,
    index: XzIndex,
    counter: Arc<DecodeCounter>,
    spill_dir: &Path,
) -> io::Result<Box<dyn Access>> {
    if index.blocks.is_empty() {
        let open: FrameOpener = Arc::new(move |_| whole_decoder(&file, file_len));
        return Ok(Box::new(SpillAccess::new(spill_dir, open, counter)));
    }
    let starts = index.blocks.iter().map(|b| b.decomp).collect();
    let blocks = index.blocks;
    let open: FrameOpener = Arc::new(move |i| {
        let block = blocks
            .get(i)
            .ok_or_else(|| io::Error::other("xz block out of range"))?;
        block_decoder(&file, file_len, block)
    });
    Ok(Box::new(FrameAccess::new(
        starts,
        index.end,
        open,
        FramePolicy {
            continues: false,
            direct_limit: DIRECT_LIMIT,
        },
        spill_dir,
        counter,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_support::*;
    use liblzma::stream::{Action, Check, Status};

    /// Drives the encoder until `action` is done.
    fn drive(stream: &mut Stream, mut input: &[u8], action: Action, out: &mut Vec<u8>) {
        loop {
            out.reserve(64 * 1024);
            let before = stream.total_in();
            let status = stream.process_vec(input, out, action).expect("xz");
            input = &input[(stream.total_in() - before) as usize..];
            match action {
                Action::Run if input.is_empty() => return,
                _ if status == Status::StreamEnd => return,
                _ => {}
            }
        }
    }

    /// One xz stream with a block per chunk (`FullFlush` ends a block).
    fn xz_blocks(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut stream = Stream::new_easy_encoder(1, Check::Crc64).expect("encoder");
        let mut out = Vec::new();
        for c in data.chunks(chunk) {
            drive(&mut stream, c, Action::Run, &mut out);
            drive(&mut stream, &[], Action::FullFlush, &mut out);
        }
        drive(&mut stream, &[], Action::Finish, &mut out);
        out
    }

    fn indexed(bytes: &[u8], expect: &[u8]) -> (Box<dyn Access>, XzIndex, Arc<DecodeCounter>) {
        let file = Arc::new(temp_file(bytes));
        let len = bytes.len() as u64;
        let index = index_of(index_pass, &file, len, expect);
        let mut encoded = Vec::new();
        index.encode(&mut encoded);
        assert_eq!(XzIndex::decode(&encoded).ok(), Some(index.clone()));
        let counter = Arc::new(DecodeCounter::default());
        let dir = std::env::temp_dir();
        let access = access(file, len, index.clone(), Arc::clone(&counter), &dir).expect("access");
        (access, index, counter)
    }

    #[test]
    fn blocks_of_several_streams_are_resume_points() {
        let data = far_data(1_200_000);
        // Two streams of three blocks each, with stream padding between.
        let mut bytes = xz_blocks(&data[..600_000], 200_000);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend(xz_blocks(&data[600_000..], 200_000));
        let (access, index, counter) = indexed(&bytes, &data);
        assert_eq!(index.blocks.len(), 6);
        assert_eq!(index.end, data.len() as u64);
        let mut buf = [0u8; 4096];
        let off = data.len() - 5000;
        access.read_exact_at(off as u64, &mut buf).expect("read");
        assert_eq!(buf, data[off..off + 4096]);
        assert!(counter.get() <= 200_000 + 4096, "{}", counter.get());
        check_random_reads(access.as_ref(), &data);
    }

    #[test]
    fn single_block_is_spilled_and_decoded_once() {
        let data = far_data(1_000_000);
        let mut encoded = Vec::new();
        liblzma::read::XzEncoder::new(&data[..], 1)
            .read_to_end(&mut encoded)
            .expect("xz");
        let (access, index, counter) = indexed(&encoded, &data);
        assert_eq!(index.blocks.len(), 1);
        check_spilled_once(access.as_ref(), &counter, &data);
    }

    #[test]
    fn damaged_indexes_are_refused_not_trusted() {
        let data = far_data(300_000);
        let bytes = xz_blocks(&data, 100_000);
        let good = read_indexes(&temp_file(&bytes), bytes.len() as u64).expect("index");
        assert_eq!(good.blocks.len(), 3);
        // Flip each byte of the index and footer: refused, no panic.
        let footer = &bytes[bytes.len() - 12..];
        let index_len =
            (u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]) as usize + 1) * 4;
        for i in bytes.len() - 12 - index_len..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x41;
            let file = temp_file(&bad);
            assert!(read_indexes(&file, bad.len() as u64).is_err(), "byte {i}");
        }
        let file = temp_file(&[0; 64]);
        assert!(read_indexes(&file, 64).is_err());
    }

    #[test]
    fn an_unusable_index_spills_the_whole_stream() {
        let data = far_data(200_000);
        let index = XzIndex {
            blocks: Vec::new(),
            end: data.len() as u64,
        };
        let bytes = xz_blocks(&data, 50_000);
        let file = Arc::new(temp_file(&bytes));
        let dir = tempfile::tempdir().expect("dir");
        let counter = Arc::new(DecodeCounter::default());
        let access = access(
            file,
            bytes.len() as u64,
            index,
            Arc::clone(&counter),
            dir.path(),
        )
        .expect("access");
        check_random_reads(access.as_ref(), &data);
        assert_eq!(counter.get(), data.len() as u64);
    }

    #[test]
    fn encoded_indexes_refuse_garbage() {
        let block = |header, comp, comp_end, decomp| XzBlock {
            header,
            comp,
            comp_end,
            decomp,
        };
        for bad in [
            XzIndex {
                blocks: vec![block(0, 12, 100, 5)],
                end: 10,
            },
            XzIndex {
                blocks: vec![block(0, 4, 100, 0)],
                end: 10,
            },
            XzIndex {
                blocks: vec![block(0, 12, 100, 0), block(0, 50, 200, 20)],
                end: 30,
            },
            XzIndex {
                blocks: vec![block(0, 12, 100, 0)],
                end: 0,
            },
        ] {
            let mut bytes = Vec::new();
            bad.encode(&mut bytes);
            assert!(XzIndex::decode(&bytes).is_err(), "{bad:?}");
        }
        let good = XzIndex {
            blocks: vec![block(0, 12, 100, 0), block(0, 100, 200, 20)],
            end: 30,
        };
        let mut bytes = Vec::new();
        good.encode(&mut bytes);
        for cut in 0..bytes.len() {
            assert!(XzIndex::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        assert_eq!(XzIndex::decode(&bytes).ok(), Some(good));
    }
}
