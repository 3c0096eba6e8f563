//! Random access without resume points: a read resumes a parked decoder
//! that stopped at or before the offset it wants, or decompresses from the
//! start of the layer. Reading files in layer order therefore decompresses
//! a layer about once; reading backwards is slow. Used for codecs that have
//! nothing better yet.

use std::fmt;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use super::access::{Access, DecodeCounter, IndexingDecoder};
use super::seek::{SeekDecodeError, SeekIndex};

/// How many parked decoders a layer keeps for reuse.
const PARKED_DECODERS: usize = 4;

/// Nothing is learned in the pass for sequential access; the type exists so
/// the stored index says which access the layer gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequentialIndex;

impl SequentialIndex {
    pub(super) fn encode(&self, _out: &mut [u8]) {}

    pub(super) fn decode(bytes: &[u8]) -> Result<SequentialIndex, SeekDecodeError> {
        if bytes.is_empty() {
            Ok(SequentialIndex)
        } else {
            Err(SeekDecodeError("trailing bytes after a sequential index"))
        }
    }
}

/// Makes a fresh decoder positioned at decompressed offset 0.
pub(super) type DecoderFactory = Box<dyn Fn() -> Box<dyn Read + Send> + Send + Sync>;

/// The indexing pass of a sequential codec: the decoder itself.
pub(super) struct SequentialPass(pub Box<dyn Read + Send>);

impl Read for SequentialPass {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl IndexingDecoder for SequentialPass {
    fn finish(self: Box<Self>) -> io::Result<SeekIndex> {
        Ok(SeekIndex::Sequential(SequentialIndex))
    }
}

/// A decoder that stopped at decompressed offset `pos`.
struct Parked {
    pos: u64,
    decoder: Box<dyn Read + Send>,
}

/// Reads through parked decoders; see the module docs.
pub(super) struct SequentialAccess {
    new_decoder: DecoderFactory,
    parked: Mutex<Vec<Parked>>,
    counter: Arc<DecodeCounter>,
}

impl fmt::Debug for SequentialAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SequentialAccess").finish_non_exhaustive()
    }
}

impl SequentialAccess {
    pub(super) fn new(
        new_decoder: DecoderFactory,
        counter: Arc<DecodeCounter>,
    ) -> SequentialAccess {
        SequentialAccess {
            new_decoder,
            parked: Mutex::new(Vec::new()),
            counter,
        }
    }

    /// Takes the parked decoder closest before `offset`, if any.
    fn take_parked(&self, offset: u64) -> Option<Parked> {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        let best = parked
            .iter()
            .enumerate()
            .filter(|(_, p)| p.pos <= offset)
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
}

impl Access for SequentialAccess {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut cursor = self.take_parked(offset).unwrap_or_else(|| Parked {
            pos: 0,
            decoder: (self.new_decoder)(),
        });
        let skip = offset - cursor.pos;
        let skipped = io::copy(&mut (&mut cursor.decoder).take(skip), &mut io::sink())?;
        cursor.pos += skipped;
        self.counter.add(skipped);
        if skipped < skip {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        cursor.decoder.read_exact(buf)?;
        cursor.pos += buf.len() as u64;
        self.counter.add(buf.len() as u64);
        self.park(cursor);
        Ok(())
    }
}
