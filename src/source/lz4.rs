//! lz4 random access through its frames.
//!
//! An lz4 file is a sequence of frames (and skippable frames); each frame
//! decodes on its own. The frame format gives every block's compressed
//! size, so a frame's extent is found by walking its block headers without
//! decoding; the pass walks each frame, decodes it, and records where it
//! starts. The blocks inside a frame are not used as resume points: in the
//! linked mode they refer to the previous 64 KiB, and even independent
//! blocks do not give their decompressed size. A single-frame file (what
//! the `lz4` tool writes) goes through the spill cache.
//!
//! Decoding is `lz4_flex`'s frame decoder, each frame given exactly its own
//! bytes: it checks block and content checksums and content sizes; the walk
//! catches truncation (the decoder would take a frame cut after a block
//! for its end). Legacy frames and dictionaries are refused.

use super::region::Region;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use lz4_flex::frame::FrameDecoder;

use super::access::{Access, DecodeCounter, IndexingDecoder};
use super::cursor::SeekDecodeError;
use super::frames::{table_access, FrameStart, FrameTable, MAX_FRAMES};
use super::positioned::PositionedReader;

/// Frames longer than this (decompressed) are spilled; lz4 decodes at
/// several GB/s.
const DIRECT_LIMIT: u64 = 64 * 1024 * 1024;

/// Compressed input buffered per frame decoder.
const INPUT_BUFFER: usize = 128 * 1024;

const MAGIC: u32 = 0x184D_2204;
const LEGACY_MAGIC: u32 = 0x184C_2102;

/// The frame table of an lz4 layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lz4Index(pub(super) FrameTable);

impl Lz4Index {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Lz4Index, SeekDecodeError> {
        FrameTable::decode(bytes).map(Lz4Index)
    }
}

/// What starts at a file offset.
enum Next {
    /// The end of the file.
    End,
    /// A skippable frame ending at this offset.
    Skippable(u64),
    /// A data frame ending at this offset.
    Data(u64),
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn truncated(at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("lz4 frame starting at byte {at} is truncated"),
    )
}

/// Reads a little-endian u32 at `pos`, or `None` past the end of the file.
fn read_u32(file: &Region, file_len: u64, pos: u64) -> io::Result<Option<u32>> {
    if pos.checked_add(4).is_none_or(|end| end > file_len) {
        return Ok(None);
    }
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, pos)?;
    Ok(Some(u32::from_le_bytes(b)))
}

/// Finds the extent of the frame at `pos` from its header and block sizes.
fn walk(file: &Region, file_len: u64, pos: u64) -> io::Result<Next> {
    if pos >= file_len {
        return Ok(Next::End);
    }
    let magic = read_u32(file, file_len, pos)?.ok_or_else(|| truncated(pos))?;
    if magic & 0xffff_fff0 == 0x184D_2A50 {
        let len = read_u32(file, file_len, pos + 4)?.ok_or_else(|| truncated(pos))?;
        let end = pos + 8 + u64::from(len);
        return if end <= file_len {
            Ok(Next::Skippable(end))
        } else {
            Err(truncated(pos))
        };
    }
    if magic == LEGACY_MAGIC {
        return Err(invalid(format!(
            "legacy lz4 frame at byte {pos} (not supported)"
        )));
    }
    if magic != MAGIC {
        return Err(invalid(format!("no lz4 frame at byte {pos}")));
    }
    let mut flg = [0u8; 1];
    if pos + 7 > file_len {
        return Err(truncated(pos));
    }
    file.read_exact_at(&mut flg, pos + 4)?;
    let flg = flg[0];
    if flg >> 6 != 0b01 {
        return Err(invalid(format!("lz4 frame version at byte {pos} unknown")));
    }
    let block_checksums = flg & 0x10 != 0;
    let content_size = flg & 0x08 != 0;
    let content_checksum = flg & 0x04 != 0;
    let dict_id = flg & 0x01 != 0;
    // magic, FLG, BD, [content size], [dictionary id], header checksum
    let mut p = pos + 6 + if content_size { 8 } else { 0 } + if dict_id { 4 } else { 0 } + 1;
    loop {
        let word = read_u32(file, file_len, p)?.ok_or_else(|| truncated(pos))?;
        p += 4;
        if word == 0 {
            break;
        }
        p += u64::from(word & 0x7fff_ffff) + if block_checksums { 4 } else { 0 };
    }
    if content_checksum {
        p += 4;
    }
    if p > file_len {
        return Err(truncated(pos));
    }
    Ok(Next::Data(p))
}

type Frame = FrameDecoder<BufReader<io::Take<PositionedReader>>>;

/// The decompressed stream from one frame on, frame after frame; records
/// the frames when it is the indexing pass.
struct Lz4Frames {
    file: Arc<Region>,
    file_len: u64,
    /// Where the frame after `current` starts.
    next: u64,
    current: Option<Frame>,
    /// Where `current` started.
    current_start: u64,
    recorded: bool,
    decomp: u64,
    /// The frame table, in the indexing pass.
    table: Option<FrameTable>,
}

impl Lz4Frames {
    fn new(file: Arc<Region>, file_len: u64, comp: u64, table: Option<FrameTable>) -> Lz4Frames {
        Lz4Frames {
            file,
            file_len,
            next: comp,
            current: None,
            current_start: comp,
            recorded: false,
            decomp: 0,
            table,
        }
    }
}

impl Read for Lz4Frames {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(frame) = &mut self.current {
                let n = frame.read(out)?;
                if n > 0 {
                    if !self.recorded {
                        self.recorded = true;
                        if let Some(table) = &mut self.table {
                            if table.frames.len() < MAX_FRAMES {
                                table.frames.push(FrameStart {
                                    comp: self.current_start,
                                    decomp: self.decomp,
                                });
                            }
                        }
                    }
                    self.decomp += n as u64;
                    if let Some(table) = &mut self.table {
                        table.end = self.decomp;
                    }
                    return Ok(n);
                }
                // The decoder says the frame ended: it must have used all
                // of the frame's bytes, or the frame lied.
                let input = frame.get_ref();
                if !input.buffer().is_empty() || input.get_ref().limit() != 0 {
                    return Err(invalid(format!(
                        "lz4 frame at byte {} ends before its last block",
                        self.current_start
                    )));
                }
                self.current = None;
            }
            match walk(&self.file, self.file_len, self.next)? {
                Next::End => return Ok(0),
                Next::Skippable(end) => self.next = end,
                Next::Data(end) => {
                    let input = PositionedReader {
                        file: Arc::clone(&self.file),
                        pos: self.next,
                        len: self.file_len,
                    }
                    .take(end - self.next);
                    self.current = Some(FrameDecoder::new(BufReader::with_capacity(
                        INPUT_BUFFER,
                        input,
                    )));
                    self.current_start = self.next;
                    self.recorded = false;
                    self.next = end;
                }
            }
        }
    }
}

impl IndexingDecoder<Lz4Index> for Lz4Frames {
    fn finish(self: Box<Self>) -> io::Result<Lz4Index> {
        Ok(Lz4Index(self.table.unwrap_or_default()))
    }
}

/// The indexing pass: decodes every frame from the start, recording them.
pub(crate) fn index_pass(file: Arc<Region>, file_len: u64) -> Box<dyn IndexingDecoder<Lz4Index>> {
    Box::new(Lz4Frames::new(
        file,
        file_len,
        0,
        Some(FrameTable::default()),
    ))
}

/// A decoder from compressed offset `comp` through every later frame.
pub(super) fn decoder_at(file: &Arc<Region>, file_len: u64, comp: u64) -> Box<dyn Read + Send> {
    Box::new(Lz4Frames::new(Arc::clone(file), file_len, comp, None))
}

/// A decoder of every frame that `input` holds, in order, skippable frames
/// passed over: for a reader that cannot be walked ahead of decoding, such
/// as the head of a layer. A frame cut short is `UnexpectedEof`.
pub(super) fn stream_decoder(input: impl BufRead + Send + 'static) -> Box<dyn Read + Send> {
    Box::new(Lz4Stream::Between(input))
}

/// Where [`stream_decoder`] is: before a frame, or inside one (its magic
/// already read, and given back to the frame decoder in front of the rest).
enum Lz4Stream<R: Read> {
    Between(R),
    In(FrameDecoder<io::Chain<io::Cursor<[u8; 4]>, R>>),
    /// The input ended, or failed.
    Done,
}

impl<R: BufRead> Lz4Stream<R> {
    /// Reads past skippable frames to the next data frame; `None` at the
    /// end of the input.
    fn next_frame(mut input: R) -> io::Result<Option<Lz4Stream<R>>> {
        loop {
            if input.fill_buf()?.is_empty() {
                return Ok(None);
            }
            let mut magic = [0u8; 4];
            input.read_exact(&mut magic)?;
            match u32::from_le_bytes(magic) {
                m if m & 0xffff_fff0 == 0x184D_2A50 => {
                    let mut len = [0u8; 4];
                    input.read_exact(&mut len)?;
                    let len = u64::from(u32::from_le_bytes(len));
                    if io::copy(&mut (&mut input).take(len), &mut io::sink())? < len {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                MAGIC => {
                    let input = io::Cursor::new(magic).chain(input);
                    return Ok(Some(Lz4Stream::In(FrameDecoder::new(input))));
                }
                LEGACY_MAGIC => return Err(invalid("legacy lz4 frame (not supported)".into())),
                _ => return Err(invalid("no lz4 frame where one should start".into())),
            }
        }
    }
}

impl<R: BufRead> Read for Lz4Stream<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match std::mem::replace(self, Lz4Stream::Done) {
                Lz4Stream::Done => return Ok(0),
                Lz4Stream::In(mut frame) => {
                    let n = frame.read(out)?;
                    if n > 0 {
                        *self = Lz4Stream::In(frame);
                        return Ok(n);
                    }
                    // The frame ended; the next one starts where it did.
                    *self = Lz4Stream::Between(frame.into_inner().into_inner().1);
                }
                Lz4Stream::Between(input) => match Lz4Stream::next_frame(input)? {
                    Some(frame) => *self = frame,
                    None => return Ok(0),
                },
            }
        }
    }
}

/// Random access for an lz4 layer indexed as `index`.
pub(super) fn access(
    file: Arc<Region>,
    file_len: u64,
    index: Lz4Index,
    counter: Arc<DecodeCounter>,
    spill_dir: &Path,
) -> io::Result<Box<dyn Access>> {
    let table = index.0;
    Ok(table_access(
        table,
        "lz4 frame",
        move |comp| Ok(decoder_at(&file, file_len, comp)),
        DIRECT_LIMIT,
        spill_dir,
        counter,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_support::*;
    use std::io::Write;

    fn lz4(data: &[u8], checksums: bool) -> Vec<u8> {
        let mut info = lz4_flex::frame::FrameInfo::new();
        info.block_checksums = checksums;
        info.content_checksum = checksums;
        info.block_size = lz4_flex::frame::BlockSize::Max64KB;
        let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(data).expect("lz4");
        e.finish().expect("lz4")
    }

    fn indexed(bytes: &[u8], expect: &[u8]) -> (Box<dyn Access>, Lz4Index, Arc<DecodeCounter>) {
        let file = Arc::new(temp_file(bytes));
        let len = bytes.len() as u64;
        let index = index_of(index_pass, &file, len, expect);
        let counter = Arc::new(DecodeCounter::default());
        let dir = std::env::temp_dir();
        let access = access(file, len, index.clone(), Arc::clone(&counter), &dir).expect("access");
        (access, index, counter)
    }

    #[test]
    fn single_frame_is_spilled_and_decoded_once() {
        let data = far_data(2_000_000);
        let (access, index, counter) = indexed(&lz4(&data, true), &data);
        assert_eq!(index.0.frames.len(), 1);
        check_spilled_once(access.as_ref(), &counter, &data);
    }

    #[test]
    fn frames_with_a_skippable_one_between_are_resume_points() {
        let data = far_data(1_000_000);
        let mut bytes = Vec::new();
        for (i, chunk) in data.chunks(250_000).enumerate() {
            if i == 2 {
                bytes.extend_from_slice(&[0x53, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 7, 7]);
            }
            bytes.extend(lz4(chunk, i % 2 == 0));
        }
        let (access, index, counter) = indexed(&bytes, &data);
        assert_eq!(index.0.frames.len(), 4);
        let mut buf = [0u8; 4096];
        let off = data.len() - 5000;
        access.read_exact_at(off as u64, &mut buf).expect("read");
        assert_eq!(buf, data[off..off + 4096]);
        assert!(counter.get() <= 250_000 + 4096);
        check_random_reads(access.as_ref(), &data);
    }

    #[test]
    fn truncated_frames_fail_the_pass() {
        let bytes = lz4(&far_data(300_000), false);
        // Cut on a block boundary (the decoder alone would not notice), and
        // inside a block.
        let first_block =
            7 + 4 + (u32::from_le_bytes([bytes[7], bytes[8], bytes[9], bytes[10]]) & 0x7fff_ffff);
        for cut in [first_block as usize, bytes.len() / 2, bytes.len() - 1] {
            let file = temp_file(&bytes[..cut]);
            let mut pass = index_pass(Arc::new(file), cut as u64);
            assert!(io::copy(&mut pass, &mut io::sink()).is_err(), "cut {cut}");
        }
    }
}
