//! bzip2 random access through its streams.
//!
//! A bzip2 file is one stream or several concatenated (pbzip2 writes one
//! per 900 kB block); each stream decodes on its own and starts on a byte
//! boundary, so the indexing pass records where each one starts, exactly as
//! for zstd frames. The blocks inside one stream start at arbitrary *bit*
//! offsets and carry no length, so they are not used: a single-stream file
//! (`bzip2`, `lbzip2`) goes through the spill cache, as does any stream
//! longer than [`DIRECT_LIMIT`] (bzip2 decodes at tens of MB/s).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use bzip2::{Decompress, Status};

use super::access::{Access, DecodeCounter, IndexingDecoder};
use super::frames::{FrameAccess, FramePolicy, FrameTable, Step, StepDecoder, StepPass};
use super::positioned::PositionedReader;
use super::seek::{SeekDecodeError, SeekIndex};
use super::spill::FrameOpener;

/// Streams longer than this (decompressed) are spilled: pbzip2's 900 kB
/// streams are decoded per read, a whole-file stream never.
const DIRECT_LIMIT: u64 = 4 * 1024 * 1024;

/// Compressed input buffered per decoder opened for a read.
const INPUT_BUFFER: usize = 64 * 1024;

/// The stream table of a bzip2 layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bzip2Index(pub(super) FrameTable);

impl Bzip2Index {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Bzip2Index, SeekDecodeError> {
        FrameTable::decode(bytes).map(Bzip2Index)
    }
}

/// `BZ2_bzDecompress`, with a fresh stream after each stream end.
struct Bzip2Step {
    stream: Decompress,
    ended: bool,
}

impl StepDecoder for Bzip2Step {
    fn step(&mut self, input: &[u8], output: &mut [u8]) -> io::Result<Step> {
        if self.ended {
            if input.is_empty() {
                return Ok(Step {
                    consumed: 0,
                    produced: 0,
                    frame_end: false,
                });
            }
            self.stream = Decompress::new(false);
            self.ended = false;
        }
        let (in_before, out_before) = (self.stream.total_in(), self.stream.total_out());
        let status = self
            .stream
            .decompress(input, output)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let consumed = usize::try_from(self.stream.total_in() - in_before)
            .map_err(|_| io::Error::other("bzip2 consumed more than it was given"))?;
        let produced = usize::try_from(self.stream.total_out() - out_before)
            .map_err(|_| io::Error::other("bzip2 produced more than it was given room for"))?;
        let frame_end = match status {
            Status::StreamEnd => {
                self.ended = true;
                true
            }
            Status::MemNeeded => return Err(io::ErrorKind::OutOfMemory.into()),
            _ => false,
        };
        Ok(Step {
            consumed,
            produced,
            frame_end,
        })
    }
}

/// The indexing pass: decodes every stream from the start, recording them.
pub(super) fn index_pass(file: Arc<File>, _file_len: u64) -> Box<dyn IndexingDecoder> {
    let step = Bzip2Step {
        stream: Decompress::new(false),
        ended: false,
    };
    Box::new(StepPass::new(file, step, |table| {
        SeekIndex::Bzip2(Bzip2Index(table))
    }))
}

/// A decoder from compressed offset `comp` through every later stream.
pub(super) fn decoder_at(file: &Arc<File>, file_len: u64, comp: u64) -> Box<dyn Read + Send> {
    Box::new(bzip2::bufread::MultiBzDecoder::new(
        BufReader::with_capacity(
            INPUT_BUFFER,
            PositionedReader {
                file: Arc::clone(file),
                pos: comp,
                len: file_len,
            },
        ),
    ))
}

/// Random access for a bzip2 layer indexed as `index`.
pub(super) fn access(
    file: Arc<File>,
    file_len: u64,
    index: Bzip2Index,
    counter: Arc<DecodeCounter>,
    spill_dir: &Path,
) -> io::Result<Box<dyn Access>> {
    let table = index.0;
    let comps: Vec<u64> = table.frames.iter().map(|f| f.comp).collect();
    let open: FrameOpener = Arc::new(move |i| {
        let comp = comps
            .get(i)
            .copied()
            .ok_or_else(|| io::Error::other("bzip2 stream out of range"))?;
        Ok(decoder_at(&file, file_len, comp))
    });
    Ok(Box::new(FrameAccess::new(
        table.starts(),
        table.end,
        open,
        FramePolicy {
            continues: true,
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
    use std::io::Write;

    fn bz(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(data).expect("bzip2");
        e.finish().expect("bzip2")
    }

    fn indexed(bytes: &[u8], expect: &[u8]) -> (Box<dyn Access>, Bzip2Index, Arc<DecodeCounter>) {
        let file = Arc::new(temp_file(bytes));
        let len = bytes.len() as u64;
        let mut pass = index_pass(Arc::clone(&file), len);
        let mut all = Vec::new();
        pass.read_to_end(&mut all).expect("pass");
        assert_eq!(all, expect);
        let SeekIndex::Bzip2(index) = pass.finish().expect("finish") else {
            panic!("not a bzip2 index")
        };
        let counter = Arc::new(DecodeCounter::default());
        let dir = std::env::temp_dir();
        let access = access(file, len, index.clone(), Arc::clone(&counter), &dir).expect("access");
        (access, index, counter)
    }

    #[test]
    fn single_stream_is_spilled_and_decoded_once() {
        let data = far_data(1_500_000);
        let (access, index, counter) = indexed(&bz(&data), &data);
        assert_eq!(index.0.frames.len(), 1);
        check_random_reads(access.as_ref(), &data);
        let mut all = vec![0; data.len()];
        access.read_exact_at(0, &mut all).expect("read all");
        assert_eq!(all, data);
        assert_eq!(counter.get(), data.len() as u64);
    }

    #[test]
    fn streams_of_a_multi_stream_file_are_resume_points() {
        let data = far_data(1_000_000);
        let bytes: Vec<u8> = data.chunks(200_000).flat_map(bz).collect();
        let (access, index, counter) = indexed(&bytes, &data);
        assert_eq!(index.0.frames.len(), 5);
        let mut buf = [0u8; 4096];
        let off = data.len() - 5000;
        access.read_exact_at(off as u64, &mut buf).expect("read");
        assert_eq!(buf, data[off..off + 4096]);
        assert!(counter.get() <= 200_000 + 4096);
        check_random_reads(access.as_ref(), &data);
    }

    #[test]
    fn truncated_stream_fails_the_pass() {
        let bytes = bz(&far_data(100_000));
        let file = Arc::new(temp_file(&bytes[..bytes.len() / 2]));
        let mut pass = index_pass(file, 0);
        assert!(io::copy(&mut pass, &mut io::sink()).is_err());
    }
}
