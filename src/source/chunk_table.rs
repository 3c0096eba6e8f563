//! Random access to a layer indexed from the table of contents it carries
//! (eStargz, zstd:chunked) rather than from a pass over it.
//!
//! Such a layer is written so that every file's contents start a new gzip
//! member or zstd frame, and its table of contents says where each one
//! starts in the blob and what its bytes hash to. Nothing says where the
//! contents lie in the decompressed tar stream, though, and learning that
//! would cost the pass the table of contents exists to avoid. So the layer
//! gets a stream of its own making: each file's contents are placed where
//! a tar of plain ustar headers would hold them, and a read at an offset
//! of that stream finds the chunk holding it, fetches the chunk's
//! compressed bytes alone, decodes them, and checks them against the
//! chunk's digest before serving any of them. Bytes between files belong
//! to no chunk and cannot be read.

use std::fmt;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::access::{Access, DecodeCounter};
use super::cursor::{ByteCursor, SeekDecodeError};
use super::region::Region;

/// Decoded chunks kept for the reads that follow: a file read in 128 KiB
/// pieces decodes each chunk once, and a few files read at once do not
/// evict each other.
const KEPT: usize = 4;

/// zstd decoding contexts kept for the next chunks: making one costs more
/// than decoding a small file's frame (it was a sixth of the daemon's time
/// reading every file of a zstd:chunked image), and reads run on a few
/// threads at once.
const CONTEXTS: usize = 4;

/// The largest chunk decoded, compressed or not: chunks are a few MiB
/// (eStargz's default is 4 MiB), and a chunk is held whole to be checked.
const MAX_CHUNK: u64 = 256 << 20;

/// Version byte of the encoded table.
const FORMAT: u8 = 1;

/// Where each chunk of every file's contents is, in the blob and in the
/// layer's own stream.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChunkTable {
    /// Ascending by `out`, not overlapping.
    pub(crate) chunks: Vec<TableChunk>,
}

impl fmt::Debug for ChunkTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkTable")
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

/// One chunk of a file's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableChunk {
    /// Offset of its first byte in the layer's stream.
    pub out: u64,
    /// Its length, decompressed.
    pub len: u64,
    /// Where the gzip member or zstd frame holding it starts in the blob.
    pub comp: u64,
    /// Where the compressed bytes holding it end.
    pub comp_end: u64,
    /// Decompressed bytes before it from `comp` (eStargz packs small files
    /// into one member).
    pub skip: u64,
    /// The sha256 its bytes must have, if the table of contents gives one.
    pub digest: Option<[u8; 32]>,
}

impl ChunkTable {
    /// Checks the chunks are in order and each one's compressed range and
    /// length are sane; what a table built from a table of contents and a
    /// decoded one both go through.
    pub fn new(chunks: Vec<TableChunk>) -> Result<ChunkTable, SeekDecodeError> {
        for pair in chunks.windows(2) {
            if pair[0].out.saturating_add(pair[0].len) > pair[1].out {
                return Err(SeekDecodeError("chunks overlap or are out of order"));
            }
        }
        for c in &chunks {
            if c.comp >= c.comp_end || c.out.checked_add(c.len).is_none() {
                return Err(SeekDecodeError("a chunk has an empty or bad range"));
            }
            if c.len > MAX_CHUNK || c.comp_end - c.comp > MAX_CHUNK || c.skip > MAX_CHUNK {
                return Err(SeekDecodeError("a chunk is larger than 256 MiB"));
            }
        }
        Ok(ChunkTable { chunks })
    }

    /// Appends the table: a version byte, the chunk count, then each
    /// chunk's five offsets and a digest flag (and digest); integers
    /// little-endian.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        for c in &self.chunks {
            for n in [c.out, c.len, c.comp, c.comp_end, c.skip] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            match &c.digest {
                Some(d) => {
                    out.push(1);
                    out.extend_from_slice(d);
                }
                None => out.push(0),
            }
        }
    }

    /// Decodes what [`ChunkTable::encode`] wrote; never trusts the bytes.
    pub(super) fn decode(bytes: &[u8]) -> Result<ChunkTable, SeekDecodeError> {
        const TRUNCATED: SeekDecodeError = SeekDecodeError("truncated chunk table");
        let mut r = ByteCursor::new(bytes);
        if r.u8().ok_or(TRUNCATED)? != FORMAT {
            return Err(SeekDecodeError("unknown chunk table version"));
        }
        let count = r.u64().ok_or(TRUNCATED)?;
        let mut chunks = Vec::new();
        for _ in 0..count {
            let (Some(out), Some(len), Some(comp), Some(comp_end), Some(skip), Some(flag)) =
                (r.u64(), r.u64(), r.u64(), r.u64(), r.u64(), r.u8())
            else {
                return Err(TRUNCATED);
            };
            let digest = match flag {
                0 => None,
                1 => Some(r.array::<32>().ok_or(TRUNCATED)?),
                _ => return Err(SeekDecodeError("bad digest flag in a chunk table")),
            };
            chunks.push(TableChunk {
                out,
                len,
                comp,
                comp_end,
                skip,
                digest,
            });
        }
        if !r.is_empty() {
            return Err(SeekDecodeError("trailing bytes after a chunk table"));
        }
        ChunkTable::new(chunks)
    }

    /// The chunk holding `offset`, if any.
    fn chunk_at(&self, offset: u64) -> Option<(usize, &TableChunk)> {
        let after = self.chunks.partition_point(|c| c.out <= offset);
        let i = after.checked_sub(1)?;
        let c = &self.chunks[i];
        (offset < c.out + c.len).then_some((i, c))
    }
}

/// How a chunk's compressed bytes are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChunkCodec {
    /// One or more gzip members (eStargz).
    Gzip,
    /// One or more zstd frames (zstd:chunked).
    Zstd,
}

/// Random access through a [`ChunkTable`].
pub(super) fn access(
    file: Arc<Region>,
    file_len: u64,
    table: ChunkTable,
    codec: ChunkCodec,
    counter: Arc<DecodeCounter>,
) -> io::Result<Box<dyn Access>> {
    if table.chunks.iter().any(|c| c.comp_end > file_len) {
        return Err(invalid(
            "a chunk of the table of contents lies past the end of the blob",
        ));
    }
    Ok(Box::new(ChunkAccess {
        file,
        table,
        codec,
        kept: Mutex::new(Vec::new()),
        contexts: Mutex::new(Vec::new()),
        counter,
    }))
}

struct ChunkAccess {
    file: Arc<Region>,
    table: ChunkTable,
    codec: ChunkCodec,
    /// Recently decoded chunks by number, most recent last.
    kept: Mutex<Vec<(usize, Arc<Vec<u8>>)>>,
    /// zstd contexts not in use, for the next chunks to decode with.
    contexts: Mutex<Vec<zstd::zstd_safe::DCtx<'static>>>,
    counter: Arc<DecodeCounter>,
}

impl fmt::Debug for ChunkAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkAccess")
            .field("table", &self.table)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl ChunkAccess {
    /// Chunk `i`'s bytes, decoded and checked (or kept from an earlier read).
    fn chunk(&self, i: usize, c: &TableChunk) -> io::Result<Arc<Vec<u8>>> {
        let kept = |kept: &[(usize, Arc<Vec<u8>>)]| {
            kept.iter()
                .find(|(n, _)| *n == i)
                .map(|(_, b)| Arc::clone(b))
        };
        if let Some(bytes) = kept(&self.kept.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(bytes);
        }
        let bytes = Arc::new(self.decode(c)?);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= KEPT {
            kept.remove(0);
        }
        kept.push((i, Arc::clone(&bytes)));
        Ok(bytes)
    }

    /// Fetches and decodes one chunk, refusing it unless its bytes hash to
    /// its digest.
    fn decode(&self, c: &TableChunk) -> io::Result<Vec<u8>> {
        let comp_len =
            usize::try_from(c.comp_end - c.comp).map_err(|_| invalid("chunk too large"))?;
        let mut compressed = vec![0u8; comp_len];
        self.file.read_exact_at(&mut compressed, c.comp)?;
        match self.codec {
            ChunkCodec::Gzip => {
                self.decode_from(c, flate2::read::MultiGzDecoder::new(&compressed[..]))
            }
            ChunkCodec::Zstd => {
                let pooled = self
                    .contexts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop();
                let mut context = match pooled {
                    Some(context) => context,
                    None => zstd::zstd_safe::DCtx::try_create()
                        .ok_or_else(|| io::Error::other("zstd: no memory for a context"))?,
                };
                let decoder =
                    zstd::stream::read::Decoder::with_context(&compressed[..], &mut context);
                let bytes = self.decode_from(c, decoder);
                let mut contexts = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
                if contexts.len() < CONTEXTS {
                    contexts.push(context);
                }
                bytes
            }
        }
    }

    /// Decodes chunk `c` from `decoder`, which reads its compressed bytes.
    fn decode_from(&self, c: &TableChunk, mut decoder: impl Read) -> io::Result<Vec<u8>> {
        let skipped = io::copy(&mut (&mut decoder).take(c.skip), &mut io::sink())?;
        let len = usize::try_from(c.len).map_err(|_| invalid("chunk too large"))?;
        let mut bytes = Vec::with_capacity(len);
        (&mut decoder).take(c.len).read_to_end(&mut bytes)?;
        if skipped != c.skip || bytes.len() != len {
            return Err(invalid(format!(
                "the chunk at blob offset {} ends after {} of its {} bytes",
                c.comp,
                (skipped + bytes.len() as u64).saturating_sub(c.skip),
                c.len
            )));
        }
        self.counter.add(c.skip + c.len);
        if let Some(expected) = &c.digest {
            let actual: [u8; 32] = Sha256::digest(&bytes).into();
            if actual != *expected {
                return Err(invalid(format!(
                    "the chunk at blob offset {} does not match its digest in the table of contents",
                    c.comp
                )));
            }
        }
        Ok(bytes)
    }
}

impl Access for ChunkAccess {
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let (i, c) = self
                .table
                .chunk_at(offset)
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            let bytes = self.chunk(i, c)?;
            let from = usize::try_from(offset - c.out).map_err(|_| invalid("offset"))?;
            let n = bytes.len().saturating_sub(from).min(buf.len());
            let src = bytes
                .get(from..from + n)
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            let (head, rest) = buf.split_at_mut(n);
            head.copy_from_slice(src);
            buf = rest;
            offset += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    /// A blob of two gzip members, `a` then `b`, and its table: `a` at 0,
    /// `b` right after it in the stream (one file of two chunks).
    fn two_chunks(a: &[u8], b: &[u8]) -> (Vec<u8>, ChunkTable) {
        let (ga, gb) = (gzip(a), gzip(b));
        let mut blob = ga.clone();
        blob.extend_from_slice(&gb);
        let chunk = |out: u64, data: &[u8], comp: usize, comp_end: usize| TableChunk {
            out,
            len: data.len() as u64,
            comp: comp as u64,
            comp_end: comp_end as u64,
            skip: 0,
            digest: Some(Sha256::digest(data).into()),
        };
        let table = ChunkTable::new(vec![
            chunk(0, a, 0, ga.len()),
            chunk(a.len() as u64, b, ga.len(), blob.len()),
        ])
        .expect("table");
        (blob, table)
    }

    fn open(blob: &[u8], table: ChunkTable) -> (tempfile::NamedTempFile, Box<dyn Access>) {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(blob).expect("write");
        let region = Region::whole(std::fs::File::open(f.path()).expect("open")).expect("len");
        let access = access(
            Arc::new(region),
            blob.len() as u64,
            table,
            ChunkCodec::Gzip,
            Arc::default(),
        )
        .expect("access");
        (f, access)
    }

    #[test]
    fn reads_span_chunks_and_stop_at_the_end() {
        let (a, b) = (
            vec![7u8; 5000],
            (0..3000u32).map(|i| i as u8).collect::<Vec<_>>(),
        );
        let (blob, table) = two_chunks(&a, &b);
        let (_f, access) = open(&blob, table);
        let mut buf = vec![0u8; 2000];
        access.read_exact_at(4000, &mut buf).expect("read across");
        assert_eq!(&buf[..1000], &a[4000..]);
        assert_eq!(&buf[1000..], &b[..1000]);
        let mut buf = vec![0u8; 10];
        let err = access
            .read_exact_at(7995, &mut buf)
            .expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_chunk_that_fails_its_digest_is_not_served() {
        let (a, b) = (vec![1u8; 100], vec![2u8; 100]);
        let (blob, mut table) = two_chunks(&a, &b);
        table.chunks[1].digest = Some([0; 32]);
        let (_f, access) = open(&blob, table);
        let mut buf = [0u8; 10];
        access.read_exact_at(0, &mut buf).expect("good chunk");
        let err = access.read_exact_at(150, &mut buf).expect_err("bad chunk");
        assert!(
            err.to_string().contains("does not match its digest"),
            "{err}"
        );
    }

    #[test]
    fn encodings_round_trip_and_garbage_is_refused() {
        let (_, table) = two_chunks(b"abc", b"defg");
        let mut bytes = Vec::new();
        table.encode(&mut bytes);
        assert_eq!(ChunkTable::decode(&bytes).ok(), Some(table.clone()));
        for cut in 0..bytes.len() {
            assert!(ChunkTable::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ChunkTable::decode(&longer).is_err());
        let mut swapped = table.clone();
        swapped.chunks.reverse();
        assert!(ChunkTable::new(swapped.chunks).is_err());
    }
}
