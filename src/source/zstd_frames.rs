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

use super::region::Region;
use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::Arc;

use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use super::access::{Access, DecodeCounter, IndexingDecoder};
use super::frames::{table_access, FailedPass, FrameTable, Step, StepDecoder, StepPass};
use super::positioned::PositionedReader;
use super::seek::{SeekDecodeError, SeekIndex};

/// Frames longer than this (decompressed) are spilled: at well over
/// 1 GB/s, decoding up to half of one per cold read stays in the tens of
/// milliseconds.
const DIRECT_LIMIT: u64 = 64 * 1024 * 1024;

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
struct ZstdStep(Decoder<'static>);

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

/// The indexing pass: decodes the whole layer from its start, recording
/// frames.
pub(super) fn index_pass(file: Arc<Region>, _file_len: u64) -> Box<dyn IndexingDecoder> {
    match new_decoder() {
        Ok(decoder) => Box::new(StepPass::new(file, ZstdStep(decoder), |table| {
            SeekIndex::Zstd(ZstdIndex(table))
        })),
        Err(e) => Box::new(FailedPass(Some(e))),
    }
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
    Ok(table_access(
        table,
        "zstd frame",
        move |comp| decoder_at(&file, file_len, comp),
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
        let mut pass = index_pass(Arc::clone(&file), len);
        let mut all = Vec::new();
        pass.read_to_end(&mut all).expect("pass");
        assert_eq!(all, expect);
        let SeekIndex::Zstd(index) = pass.finish().expect("finish") else {
            panic!("not a zstd index")
        };
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
