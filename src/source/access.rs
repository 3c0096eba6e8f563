//! The two interfaces every codec implements: a decoder for the indexing
//! pass that learns where it can resume later, and random access that uses
//! what it learned.

use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a skipping pass decodes into per read: big enough that a
/// decoder's per-call cost does not show.
const SKIP_SCRATCH: usize = 64 * 1024;

/// Scratch a read decodes the bytes before its offset into.
const SKIP_BUFFER: usize = 128 * 1024;

/// Serves reads at decompressed offsets of one layer.
pub(super) trait Access: Send + Sync + fmt::Debug {
    /// Fills `buf` from decompressed offset `offset`; `UnexpectedEof` if the
    /// stream ends first.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// The decoder of the indexing pass: a sequential reader of the
/// decompressed stream that, once read to the end (or as far as the tar
/// parser went), hands over what it learned for random access: `I`, the
/// codec's own index, which the dispatch above the codecs wraps (see
/// [`map_index`]), so that no codec knows the others.
pub(super) trait IndexingDecoder<I>: Read + Send {
    /// Passes over up to `n` bytes, returning how many (fewer only at the
    /// end of the stream). Decoders that hold decoded bytes already can
    /// drop them rather than copy them out.
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let size = usize::try_from(n).map_or(SKIP_SCRATCH, |n| n.min(SKIP_SCRATCH));
        let mut scratch = vec![0u8; size];
        let mut done = 0;
        while done < n {
            let want = usize::try_from(n - done).map_or(size, |k| k.min(size));
            match self.read(&mut scratch[..want]) {
                Ok(0) => break,
                Ok(k) => done += k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Ends the pass. The index must cover at least every byte read.
    fn finish(self: Box<Self>) -> io::Result<I>;
}

/// `pass`, with the index it finishes with turned into a `J` by `wrap`.
pub(super) fn map_index<I: 'static, J: 'static>(
    pass: Box<dyn IndexingDecoder<I>>,
    wrap: fn(I) -> J,
) -> Box<dyn IndexingDecoder<J>> {
    Box::new(MapIndex { pass, wrap })
}

/// See [`map_index`].
struct MapIndex<I, J> {
    pass: Box<dyn IndexingDecoder<I>>,
    wrap: fn(I) -> J,
}

impl<I, J> Read for MapIndex<I, J> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.pass.read(buf)
    }
}

impl<I, J> IndexingDecoder<J> for MapIndex<I, J> {
    // Passed on: a codec's own skip may drop bytes without copying them.
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        self.pass.skip(n)
    }

    fn finish(self: Box<Self>) -> io::Result<J> {
        self.pass.finish().map(self.wrap)
    }
}

/// Counts the bytes a layer's reads decompressed (not the indexing pass):
/// how tests and benchmarks see that a read inflated one span, not the
/// layer.
#[derive(Debug, Default)]
pub struct DecodeCounter(AtomicU64);

impl DecodeCounter {
    /// Adds `n` decompressed bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes decompressed so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Decodes and discards up to `n` bytes, counting them; returns how many
/// (fewer only at the end of the stream).
pub(super) fn skip(decoder: &mut dyn Read, n: u64, counter: &DecodeCounter) -> io::Result<u64> {
    if n == 0 {
        return Ok(0);
    }
    let mut buf = vec![0u8; usize::try_from(n).unwrap_or(SKIP_BUFFER).min(SKIP_BUFFER)];
    let mut done = 0;
    while done < n {
        let want = usize::try_from(n - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match decoder.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => {
                done += k as u64;
                counter.add(k as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
