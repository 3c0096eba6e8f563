//! What the indexing pass learns about a layer's compression, so that later
//! reads can start near the bytes they want instead of at the start.

use super::bzip2::Bzip2Index;
use super::chunk_table::ChunkTable;
use super::cursor::SeekDecodeError;
use super::gzip::GzipIndex;
use super::lz4::Lz4Index;
use super::remote::SpanSums;
use super::xz::XzIndex;
use super::zstd::ZstdIndex;

/// A layer's random-access map, built during the indexing pass and stored
/// with its tar index: a remount needs no pass over the layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeekIndex {
    /// A plain tar: decompressed offsets are file offsets.
    Plain,
    /// A gzip stream with checkpoints to resume inflating from.
    Gzip(GzipIndex),
    /// zstd: where each frame starts.
    Zstd(ZstdIndex),
    /// bzip2: where each stream and each block starts.
    Bzip2(Bzip2Index),
    /// xz: every block, from the streams' indexes.
    Xz(XzIndex),
    /// lz4: where each frame starts.
    Lz4(Lz4Index),
    /// A remote blob's seek index, with the sums of its chunks that every
    /// later fetch is checked against.
    Summed(Box<SeekIndex>, SpanSums),
    /// A gzip or zstd layer indexed from its table of contents: each
    /// file's chunks, read and checked one by one.
    Chunks(ChunkTable),
}

/// Format tags of the encoded variants.
const TAG_PLAIN: u8 = 0;
// Tag 1 was an early format's "read from the start"; it decodes as unknown.
const TAG_GZIP: u8 = 2;
const TAG_ZSTD: u8 = 3;
const TAG_BZIP2: u8 = 4;
const TAG_XZ: u8 = 5;
const TAG_LZ4: u8 = 6;
const TAG_SUMMED: u8 = 7;
const TAG_CHUNKS: u8 = 8;

impl SeekIndex {
    /// Appends a self-describing encoding of this index to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SeekIndex::Plain => out.push(TAG_PLAIN),
            SeekIndex::Gzip(index) => {
                out.push(TAG_GZIP);
                index.encode(out);
            }
            SeekIndex::Zstd(index) => {
                out.push(TAG_ZSTD);
                index.encode(out);
            }
            SeekIndex::Bzip2(index) => {
                out.push(TAG_BZIP2);
                index.encode(out);
            }
            SeekIndex::Xz(index) => {
                out.push(TAG_XZ);
                index.encode(out);
            }
            SeekIndex::Lz4(index) => {
                out.push(TAG_LZ4);
                index.encode(out);
            }
            SeekIndex::Summed(inner, sums) => {
                out.push(TAG_SUMMED);
                sums.encode(out);
                inner.encode(out);
            }
            SeekIndex::Chunks(table) => {
                out.push(TAG_CHUNKS);
                table.encode(out);
            }
        }
    }

    /// The digest of a remote blob, as its indexing pass hashed it.
    pub fn blob_digest(&self) -> Option<crate::digest::Digest> {
        match self {
            SeekIndex::Summed(_, sums) => Some(sums.blob_digest()),
            _ => None,
        }
    }

    /// Decodes what [`SeekIndex::encode`] wrote; never trusts the bytes.
    pub fn decode(bytes: &[u8]) -> Result<SeekIndex, SeekDecodeError> {
        match bytes.split_first() {
            Some((&TAG_PLAIN, [])) => Ok(SeekIndex::Plain),
            Some((&TAG_GZIP, rest)) => Ok(SeekIndex::Gzip(GzipIndex::decode(rest)?)),
            Some((&TAG_ZSTD, rest)) => Ok(SeekIndex::Zstd(ZstdIndex::decode(rest)?)),
            Some((&TAG_BZIP2, rest)) => Ok(SeekIndex::Bzip2(Bzip2Index::decode(rest)?)),
            Some((&TAG_XZ, rest)) => Ok(SeekIndex::Xz(XzIndex::decode(rest)?)),
            Some((&TAG_LZ4, rest)) => Ok(SeekIndex::Lz4(Lz4Index::decode(rest)?)),
            Some((&TAG_CHUNKS, rest)) => Ok(SeekIndex::Chunks(ChunkTable::decode(rest)?)),
            Some((&TAG_SUMMED, rest)) => {
                let (sums, rest) =
                    SpanSums::decode(rest).ok_or(SeekDecodeError("bad chunk sums"))?;
                match SeekIndex::decode(rest)? {
                    SeekIndex::Summed(..) => Err(SeekDecodeError("nested chunk sums")),
                    inner => Ok(SeekIndex::Summed(Box::new(inner), sums)),
                }
            }
            _ => Err(SeekDecodeError("unknown codec tag or trailing bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::frames::{FrameStart, FrameTable};
    use crate::source::xz::XzBlock;

    #[test]
    fn encodings_round_trip_and_garbage_is_refused() {
        let frames = FrameTable {
            frames: vec![
                FrameStart { comp: 8, decomp: 0 },
                FrameStart {
                    comp: 90,
                    decomp: 4000,
                },
            ],
            end: 5000,
        };
        let xz = XzIndex {
            blocks: vec![XzBlock {
                header: 0,
                comp: 12,
                comp_end: 400,
                decomp: 0,
            }],
            end: 1000,
        };
        for index in [
            SeekIndex::Plain,
            SeekIndex::Gzip(GzipIndex::default()),
            SeekIndex::Zstd(ZstdIndex(frames.clone())),
            SeekIndex::Bzip2(Bzip2Index {
                streams: frames.clone(),
                blocks: None,
            }),
            SeekIndex::Lz4(Lz4Index(frames)),
            SeekIndex::Xz(xz),
            SeekIndex::Xz(XzIndex::default()),
            SeekIndex::Chunks(ChunkTable::default()),
            SeekIndex::Summed(
                Box::new(SeekIndex::Plain),
                SpanSums {
                    digest: [3; 32],
                    chunks: vec![[1; 32], [2; 32]],
                },
            ),
        ] {
            let mut bytes = Vec::new();
            index.encode(&mut bytes);
            assert_eq!(SeekIndex::decode(&bytes).ok(), Some(index));
        }
        assert!(SeekIndex::decode(&[]).is_err());
        assert!(SeekIndex::decode(&[99]).is_err());
        assert!(SeekIndex::decode(&[TAG_PLAIN, 1]).is_err());
        assert!(SeekIndex::decode(&[TAG_GZIP]).is_err());
        assert!(SeekIndex::decode(&[TAG_SUMMED, 1]).is_err());
        for tag in [TAG_ZSTD, TAG_BZIP2, TAG_XZ, TAG_LZ4, TAG_CHUNKS] {
            assert!(SeekIndex::decode(&[tag]).is_err());
            assert!(SeekIndex::decode(&[tag, 1, 2, 3]).is_err());
        }
    }
}
