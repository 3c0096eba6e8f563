//! What the indexing pass learns about a layer's compression, so that later
//! reads can start near the bytes they want instead of at the start.

use super::gzip::GzipIndex;
use super::sequential::SequentialIndex;

/// A layer's random-access map, built during the indexing pass and stored
/// with its tar index: a remount needs no pass over the layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeekIndex {
    /// A plain tar: decompressed offsets are file offsets.
    Plain,
    /// A compressed stream read from its start (or a parked decoder).
    Sequential(SequentialIndex),
    /// A gzip stream with checkpoints to resume inflating from.
    Gzip(GzipIndex),
}

/// Why a stored [`SeekIndex`] could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("bad seek index: {0}")]
pub struct SeekDecodeError(pub &'static str);

/// Format tags of the encoded variants.
const TAG_PLAIN: u8 = 0;
const TAG_SEQUENTIAL: u8 = 1;
const TAG_GZIP: u8 = 2;

impl SeekIndex {
    /// Appends a self-describing encoding of this index to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SeekIndex::Plain => out.push(TAG_PLAIN),
            SeekIndex::Sequential(index) => {
                out.push(TAG_SEQUENTIAL);
                index.encode(out);
            }
            SeekIndex::Gzip(index) => {
                out.push(TAG_GZIP);
                index.encode(out);
            }
        }
    }

    /// Decodes what [`SeekIndex::encode`] wrote; never trusts the bytes.
    pub fn decode(bytes: &[u8]) -> Result<SeekIndex, SeekDecodeError> {
        match bytes.split_first() {
            Some((&TAG_PLAIN, [])) => Ok(SeekIndex::Plain),
            Some((&TAG_SEQUENTIAL, rest)) => {
                Ok(SeekIndex::Sequential(SequentialIndex::decode(rest)?))
            }
            Some((&TAG_GZIP, rest)) => Ok(SeekIndex::Gzip(GzipIndex::decode(rest)?)),
            _ => Err(SeekDecodeError("unknown codec tag or trailing bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_and_garbage_is_refused() {
        for index in [
            SeekIndex::Plain,
            SeekIndex::Sequential(SequentialIndex),
            SeekIndex::Gzip(GzipIndex::default()),
        ] {
            let mut bytes = Vec::new();
            index.encode(&mut bytes);
            assert_eq!(SeekIndex::decode(&bytes).ok(), Some(index));
        }
        assert!(SeekIndex::decode(&[]).is_err());
        assert!(SeekIndex::decode(&[99]).is_err());
        assert!(SeekIndex::decode(&[TAG_PLAIN, 1]).is_err());
        assert!(SeekIndex::decode(&[TAG_GZIP]).is_err());
    }
}
