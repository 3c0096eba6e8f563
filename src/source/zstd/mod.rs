//! zstd random access through the frame table.
//!
//! Every zstd frame decodes on its own, so a layer written as several
//! frames (pzstd, the seekable format, zstd:chunked) can be entered at any
//! frame start. The indexing pass drives the low-level streaming decoder
//! itself and notes the exact input position at which each frame ends
//! (`decompress_stream` returns 0), so finding the frames costs nothing
//! beyond the pass. Skippable frames produce no data and get no entry.
//! A single-frame layer, or frames too long to decode per read, are served
//! through the spill cache (see [`super::frames`]).

use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::Arc;

use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

mod parallel;

use parallel::{Cut, ParallelPass};

use crate::source::access::{Access, DecodeCounter, IndexingDecoder};
use crate::source::budget;
use crate::source::cursor::SeekDecodeError;
use crate::source::frames::{table_access, FailedPass, FrameTable, Step, StepDecoder, StepPass};
use crate::source::positioned::PositionedReader;
use crate::source::region::Region;

/// Frames longer than this (decompressed) are spilled. A frame decoded
/// per read costs, on average, decoding half of it for every cold read:
/// about 1 ms for 2 MiB (pzstd -1, and `layerfs export`'s 1 MiB frames),
/// but 4 to 7 ms for pzstd's 8 MiB frames at its default level, every time.
/// Spilled, each byte of the frame is decoded at most once per mount and
/// the frame's later reads are `pread`s of the spill file (a 2 GiB pzstd
/// -3 layer, read through once: random 4 KiB reads went from 6.9 ms to
/// 0.1 ms at p50), at the price of disk for what was read, as for a
/// one-frame layer.
const DIRECT_LIMIT: u64 = 2 * 1024 * 1024;

/// Most compressed bytes of a frame asked of the disk at once when a read
/// opens it: a pzstd frame (3 MiB of an 8 MiB frame at -3), not all of a
/// layer of one frame.
const READ_AHEAD_LIMIT: u64 = 8 * 1024 * 1024;

/// Compressed input buffered per decoder opened for a read.
const INPUT_BUFFER: usize = 128 * 1024;

/// The frame table of a zstd layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZstdIndex(pub(super) FrameTable);

impl ZstdIndex {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<ZstdIndex, SeekDecodeError> {
        FrameTable::decode(bytes).map(ZstdIndex)
    }
}

/// `decompress_stream`, with windows up to [`MAX_WINDOW_LOG`] accepted.
pub(super) struct ZstdStep(Decoder<'static>);

impl StepDecoder for ZstdStep {
    fn step(&mut self, input: &[u8], output: &mut [u8]) -> io::Result<Step> {
        let mut input = InBuffer::around(input);
        let mut output = OutBuffer::around(output);
        let hint = self.0.run(&mut input, &mut output)?;
        Ok(Step {
            consumed: input.pos(),
            produced: output.pos(),
            // 0: the frame is complete and all of its output flushed.
            frame_end: hint == 0,
        })
    }
}

/// Largest window accepted, as a power of two: 512 MiB (`zstd --long=29`;
/// the zstd tool itself asks for `--memory` past 128 MiB). A decoder fills
/// the window the frame declares, so this bounds each decoder's memory:
/// with 2 GiB (`--long=31`), 110 KB of zstd holding 3 GiB of zeros took
/// 2 GiB to index, once per layer indexed in parallel. A frame declaring a
/// larger window is refused ("Frame requires too much memory").
const MAX_WINDOW_LOG: u32 = 29;

fn new_decoder() -> io::Result<Decoder<'static>> {
    let mut decoder = Decoder::new()?;
    decoder.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))?;
    Ok(decoder)
}

pub(super) fn new_step() -> io::Result<ZstdStep> {
    new_decoder().map(ZstdStep)
}

impl From<FrameTable> for ZstdIndex {
    fn from(table: FrameTable) -> ZstdIndex {
        ZstdIndex(table)
    }
}

/// The indexing pass: decodes the whole layer from its start, recording
/// frames; several frames at once when there are cores to spare (see
/// [`super::parallel`]).
pub(crate) fn index_pass(file: Arc<Region>, _file_len: u64) -> Box<dyn IndexingDecoder<ZstdIndex>> {
    // A remote blob is streamed once, in order: frames fetched at many
    // places at once would each be a request of their own.
    let workers = if file.is_remote() {
        1
    } else {
        budget::workers()
    };
    index_pass_on(file, workers)
}

/// [`index_pass`] with `workers` decoding threads; 1 decodes on the
/// caller's thread.
fn index_pass_on(file: Arc<Region>, workers: usize) -> Box<dyn IndexingDecoder<ZstdIndex>> {
    if workers > 1 {
        let pass = ParallelPass::start(Arc::clone(&file), walk, new_step, workers);
        if let Some(pass) = pass {
            return Box::new(pass);
        }
    }
    match new_step() {
        Ok(step) => Box::new(StepPass::new(file, step)),
        Err(e) => Box::new(FailedPass(Some(e))),
    }
}

/// Largest window of a frame decoded beside others: each worker holds one,
/// so frames declaring more (`--long`) go to one decoder, as the rest of
/// the file. pzstd writes windows of 8 MiB at most.
const PARALLEL_WINDOW: u64 = 8 << 20;

/// Compressed bytes of a frame the splitter walks before it gives up and
/// hands the rest of the file to one decoder: a layer of one huge frame
/// must not be read through once for its block headers before decoding
/// starts. pzstd frames are a few MiB.
const WALK_LIMIT: u64 = 32 << 20;

/// Largest block, decompressed; also the bound on a compressed block.
const BLOCK_MAX: u64 = 128 * 1024;

/// Where the frame at `at` ends, from its header and block headers
/// (RFC 8878, section 3.1); see [`Cut`].
fn walk(file: &Region, at: u64, len: u64) -> Cut {
    walk_frame(file, at, len).unwrap_or(Cut::Rest)
}

fn walk_frame(file: &Region, at: u64, len: u64) -> Option<Cut> {
    // Magic, descriptor, window, dictionary id and content size: 18 at most.
    let mut head = [0u8; 18];
    let got = (len - at).min(head.len() as u64) as usize;
    let head = &mut head[..got];
    file.read_exact_at(head, at).ok()?;
    let le = |bytes: &[u8]| {
        bytes
            .iter()
            .rev()
            .fold(0u64, |n, &b| (n << 8) | u64::from(b))
    };
    let magic = le(head.get(..4)?);
    if magic & !0xf == 0x184d_2a50 {
        let end = at.checked_add(8 + le(head.get(4..8)?))?;
        return (end <= len).then_some(Cut::Skip(end));
    }
    if magic != 0xfd2f_b528 {
        return None;
    }
    let descriptor = *head.get(4)?;
    if descriptor & 0x08 != 0 {
        return None;
    }
    let single_segment = descriptor & 0x20 != 0;
    let content_size_len = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let dictionary_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let mut pos = 5;
    let mut window = None;
    if !single_segment {
        let w = *head.get(pos)?;
        let base = 1u64 << (10 + (w >> 3));
        window = Some(base + base / 8 * u64::from(w & 7));
        pos += 1;
    }
    pos += dictionary_len;
    let content_size = le(head.get(pos..pos + content_size_len)?);
    pos += content_size_len;
    // A single-segment frame's window is its content.
    let window = window.unwrap_or(content_size + if content_size_len == 2 { 256 } else { 0 });
    if window > PARALLEL_WINDOW {
        return None;
    }
    let block_max = window.min(BLOCK_MAX);
    let mut block = at + pos as u64;
    loop {
        if block - at > WALK_LIMIT {
            return None;
        }
        let mut header = [0u8; 3];
        file.read_exact_at(&mut header, block).ok()?;
        let header = le(&header);
        let size = header >> 3;
        let stored = match (header >> 1) & 3 {
            0 | 2 => size,
            1 => 1,
            _ => return None,
        };
        if size > block_max {
            return None;
        }
        block += 3 + stored;
        if header & 1 != 0 {
            break;
        }
    }
    let end = block + if descriptor & 0x04 != 0 { 4 } else { 0 };
    (end <= len).then_some(Cut::Frame(end))
}

/// A decoder over the file from compressed offset `comp`, running on
/// through later frames (and over skippable ones).
pub(super) fn decoder_at(
    file: &Arc<Region>,
    file_len: u64,
    comp: u64,
) -> io::Result<Box<dyn Read + Send>> {
    stream_decoder(PositionedReader::buffered(
        file,
        file_len,
        comp,
        INPUT_BUFFER,
    ))
}

/// A decoder of every frame that `input` holds, in order, skippable ones
/// passed over; windows up to [`MAX_WINDOW_LOG`] accepted.
pub(super) fn stream_decoder(
    input: impl BufRead + Send + 'static,
) -> io::Result<Box<dyn Read + Send>> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(input)?;
    decoder.window_log_max(MAX_WINDOW_LOG)?;
    Ok(Box::new(decoder))
}

/// Random access for a zstd layer indexed as `index`.
pub(super) fn access(
    file: Arc<Region>,
    file_len: u64,
    index: ZstdIndex,
    counter: Arc<DecodeCounter>,
    spill_dir: &Path,
) -> io::Result<Box<dyn Access>> {
    let table = index.0;
    let comps: Vec<u64> = table.frames.iter().map(|f| f.comp).collect();
    Ok(table_access(
        table,
        "zstd frame",
        move |comp| {
            // A cold frame read in the decoder's 128 KiB pieces waited on
            // the disk once per piece (the kernel reads ahead 128 KiB);
            // asked for at once, it arrives while the start decodes.
            let next = comps.partition_point(|&c| c <= comp);
            let end = comps.get(next).copied().unwrap_or(file_len);
            file.read_ahead(comp, end.saturating_sub(comp).min(READ_AHEAD_LIMIT));
            decoder_at(&file, file_len, comp)
        },
        DIRECT_LIMIT,
        spill_dir,
        counter,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_support::*;

    /// Pass over `bytes`, then random access with `dir` for spills.
    fn indexed(
        bytes: &[u8],
        expect: &[u8],
        dir: &Path,
    ) -> (Box<dyn Access>, ZstdIndex, Arc<DecodeCounter>) {
        let file = Arc::new(temp_file(bytes));
        let len = bytes.len() as u64;
        let index = index_of(index_pass, &file, len, expect);
        let counter = Arc::new(DecodeCounter::default());
        let access = access(file, len, index.clone(), Arc::clone(&counter), dir).expect("access");
        (access, index, counter)
    }

    /// `data` as zstd frames of `chunk` bytes, led by a skippable frame.
    fn multi_frame(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = vec![0x5f, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 9, 9, 9, 9];
        for c in data.chunks(chunk) {
            out.extend(zstd::encode_all(c, 1).expect("zstd"));
        }
        out
    }

    #[test]
    fn multi_frame_table_and_random_reads() {
        let data = far_data(1_000_000);
        let bytes = multi_frame(&data, 100_000);
        let dir = tempfile::tempdir().expect("dir");
        let (access, index, _) = indexed(&bytes, &data, dir.path());
        assert_eq!(index.0.frames.len(), 10);
        assert_eq!(index.0.frames[0].comp, 12, "skippable frame skipped");
        assert_eq!(index.0.frames[3].decomp, 300_000);
        assert_eq!(index.0.end, data.len() as u64);
        check_random_reads(access.as_ref(), &data);
    }

    #[test]
    fn cold_read_near_the_end_decodes_at_most_one_frame() {
        let data = far_data(2_000_000);
        let frame = 200_000;
        let bytes = multi_frame(&data, frame);
        let dir = tempfile::tempdir().expect("dir");
        let (access, _, counter) = indexed(&bytes, &data, dir.path());
        let off = data.len() - 5000;
        let mut buf = [0u8; 4096];
        access.read_exact_at(off as u64, &mut buf).expect("read");
        assert_eq!(buf, data[off..off + 4096]);
        assert!(counter.get() <= (frame + 4096) as u64, "{}", counter.get());
    }

    #[test]
    fn frames_over_the_direct_limit_are_spilled_and_decoded_once() {
        let frame = DIRECT_LIMIT as usize + 1;
        let data = far_data(3 * frame);
        let bytes = multi_frame(&data, frame);
        let dir = tempfile::tempdir().expect("dir");
        let (access, index, counter) = indexed(&bytes, &data, dir.path());
        assert_eq!(index.0.frames.len(), 3);
        check_spilled_once(access.as_ref(), &counter, &data);
    }

    #[test]
    fn single_frame_is_spilled_and_decoded_once() {
        let data = far_data(3_000_000);
        let bytes = zstd::encode_all(&data[..], 3).expect("zstd");
        let dir = tempfile::tempdir().expect("dir");
        let (access, index, counter) = indexed(&bytes, &data, dir.path());
        assert_eq!(index.0.frames.len(), 1);
        check_spilled_once(access.as_ref(), &counter, &data);
    }

    /// A frame that declares a window over 512 MiB is refused before its
    /// window is filled; one of 512 MiB decodes.
    #[test]
    fn windows_over_512_mib_are_refused() {
        let data = far_data(10_000);
        for (log, ok) in [(MAX_WINDOW_LOG, true), (MAX_WINDOW_LOG + 1, false)] {
            let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
            encoder.window_log(log).expect("window log");
            io::Write::write_all(&mut encoder, &data).expect("compress");
            let bytes = encoder.finish().expect("finish");
            let mut pass = index_pass(Arc::new(temp_file(&bytes)), 0);
            let mut out = Vec::new();
            match pass.read_to_end(&mut out) {
                Ok(_) => assert!(ok && out == data, "window 2^{log} decoded"),
                Err(e) => assert!(
                    !ok && e.to_string().contains("Frame requires too much memory"),
                    "window 2^{log}: {e}"
                ),
            }
        }
    }

    #[test]
    fn truncated_and_trailing_garbage_fail_the_pass() {
        let data = far_data(300_000);
        let bytes = multi_frame(&data, 100_000);
        let cut = temp_file(&bytes[..bytes.len() - 10]);
        let mut pass = index_pass(Arc::new(cut), 0);
        assert!(io::copy(&mut pass, &mut io::sink()).is_err());
        let mut junk = bytes.clone();
        junk.extend_from_slice(b"not a frame");
        let mut pass = index_pass(Arc::new(temp_file(&junk)), 0);
        assert!(io::copy(&mut pass, &mut io::sink()).is_err());
    }
}

#[cfg(test)]
mod parallel_tests;
