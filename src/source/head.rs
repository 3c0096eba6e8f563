//! The head of a layer file: its first bytes, at most a given count, read
//! once in order and decompressed as far as they go (`layerfs ls --peek`).
//!
//! The indexing passes of `reader.rs` read the file where they like (xz
//! looks at its end, plain tars seek over data), so the head is read here
//! instead, through one reader that stops at the limit and counts, with a
//! streaming decoder per codec on top. The codec is sniffed from bytes that
//! reader gave, so nothing past the limit is ever read, not even a magic.
//!
//! Where the bytes stop, a decoder is in the middle of its stream and says
//! `UnexpectedEof`; that is the end of the head, not damage. Any other
//! decoder error is passed on, as corruption: only a damaged stream makes
//! one (a cut never does), wherever it is.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::codec::{codec_of, Codec, SNIFF_BYTES};
use super::dispatch;
use super::open::{open_file, INPUT_BUFFER};
use super::remote::BlobFetch;
use super::{SourceError, Stream};

/// The decompressed stream of a layer's first `limit` bytes; see the
/// module docs.
pub struct LayerHead {
    path: PathBuf,
    codec: Codec,
    file_len: u64,
    input: Arc<Counted>,
    decoder: Box<dyn Read + Send>,
}

impl std::fmt::Debug for LayerHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerHead")
            .field("path", &self.path)
            .field("codec", &self.codec)
            .field("file_len", &self.file_len)
            .field("bytes_read", &self.bytes_read())
            .finish()
    }
}

impl LayerHead {
    /// Opens a layer file to read at most its first `limit` bytes.
    pub fn open(path: &Path, limit: u64) -> Result<LayerHead, SourceError> {
        let (file, meta) = open_file(path)?;
        LayerHead::of_reader(path, meta.len(), Box::new(file), limit)
    }

    /// A remote blob's first `limit` bytes, fetched by range a chunk at a
    /// time as the decoder wants them: never a byte more than the limit.
    pub fn of_blob(fetch: Arc<dyn BlobFetch>, limit: u64) -> Result<LayerHead, SourceError> {
        let path = PathBuf::from(fetch.name());
        let len = fetch.len();
        let reader = BlobHead {
            end: limit.min(len),
            fetch,
            pos: 0,
        };
        LayerHead::of_reader(&path, len, Box::new(reader), limit).map_err(|e| match e {
            SourceError::Io { path, source } => SourceError::Remote { path, source },
            other => other,
        })
    }

    /// The head of the `file_len`-byte layer that `source` reads in order.
    fn of_reader(
        path: &Path,
        file_len: u64,
        source: Box<dyn Read + Send>,
        limit: u64,
    ) -> Result<LayerHead, SourceError> {
        let input = Arc::new(Counted::default());
        let mut raw = HeadReader {
            source,
            limit,
            counted: Arc::clone(&input),
        };
        let mut head = Vec::with_capacity(SNIFF_BYTES);
        (&mut raw)
            .take(SNIFF_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|source| SourceError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let codec = codec_of(path, &head)?;
        let whole_magic = head.len() == SNIFF_BYTES;
        let bytes = BufReader::with_capacity(INPUT_BUFFER, io::Cursor::new(head).chain(raw));
        // Fewer bytes than the longest magic may have been sniffed
        // wrongly, and hold no tar header and no codec's header either.
        let decoder: io::Result<Box<dyn Read + Send>> = match whole_magic {
            false => Ok(Box::new(io::empty())),
            true => dispatch::stream_decoder(codec, bytes),
        };
        let decoder = decoder.map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(LayerHead {
            path: path.to_path_buf(),
            codec,
            file_len,
            input,
            decoder,
        })
    }

    /// The codec recognised from the first bytes.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The size of the layer file as stored.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes of the layer file read so far (decoders read ahead, so this is
    /// at least what the decompressed bytes handed out came from).
    pub fn bytes_read(&self) -> u64 {
        self.input.read.load(Ordering::Relaxed)
    }
}

impl Read for LayerHead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.decoder.read(buf) {
            Err(e)
                if e.kind() == io::ErrorKind::UnexpectedEof
                    && self.input.ended.load(Ordering::Relaxed) =>
            {
                Ok(0)
            }
            other => other,
        }
    }
}

impl Stream for LayerHead {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut self.take(n), &mut io::sink())
    }
}

/// What the file reader has done, shared with the [`LayerHead`] above the
/// decoder that owns the reader.
#[derive(Debug, Default)]
struct Counted {
    /// Bytes read from the file.
    read: AtomicU64,
    /// The limit or the end of the file was reached.
    ended: AtomicBool,
}

/// Reads the layer in order from its start, never past `limit` bytes.
struct HeadReader {
    source: Box<dyn Read + Send>,
    limit: u64,
    counted: Arc<Counted>,
}

impl Read for HeadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.counted.read.load(Ordering::Relaxed);
        let left = usize::try_from(self.limit.saturating_sub(read)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        let n = match buf.get_mut(..want) {
            Some(dst) if !dst.is_empty() => self.source.read(dst)?,
            _ => 0,
        };
        if n == 0 && !buf.is_empty() {
            self.counted.ended.store(true, Ordering::Relaxed);
        }
        self.counted.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A remote blob's bytes up to `end`, fetched by range in chunks.
struct BlobHead {
    fetch: Arc<dyn BlobFetch>,
    pos: u64,
    end: u64,
}

/// What one range request of [`BlobHead`] asks for at most.
const BLOB_HEAD_STEP: u64 = 1 << 20;

impl Read for BlobHead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from((self.end - self.pos).min(BLOB_HEAD_STEP))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        self.fetch.fetch(self.pos, &mut buf[..want])?;
        self.pos += want as u64;
        Ok(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i * 31 % 251) as u8 ^ (i / 997) as u8)
            .collect()
    }

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        f
    }

    fn encoded(data: &[u8]) -> Vec<(Codec, Vec<u8>)> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("gzip");
        let mut bz = ::bzip2::write::BzEncoder::new(Vec::new(), ::bzip2::Compression::fast());
        bz.write_all(data).expect("bzip2");
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(data, 1)
            .read_to_end(&mut xz)
            .expect("xz");
        let half = data.len() / 2;
        let mut lz = Vec::new();
        for part in [&data[..half], &data[half..]] {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(part).expect("lz4");
            lz.extend(e.finish().expect("lz4"));
            // A skippable frame between the two, as some writers put.
            lz.extend_from_slice(&[0x5a, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 9, 9]);
        }
        vec![
            (Codec::Plain, data.to_vec()),
            (Codec::Gzip, gz.finish().expect("gzip")),
            (Codec::Zstd, ::zstd::encode_all(data, 3).expect("zstd")),
            (Codec::Bzip2, bz.finish().expect("bzip2")),
            (Codec::Xz, xz),
            (Codec::Lz4, lz),
        ]
    }

    fn read_head(path: &Path, limit: u64) -> (LayerHead, Vec<u8>) {
        let mut head = LayerHead::open(path, limit).expect("open");
        let mut out = Vec::new();
        head.read_to_end(&mut out).expect("a cut is no error");
        (head, out)
    }

    #[test]
    fn every_codec_decodes_a_prefix_of_the_data_from_at_most_the_limit() {
        let data = sample(600_000);
        for (codec, bytes) in encoded(&data) {
            let file = write_temp(&bytes);
            let whole = bytes.len() as u64;
            let (head, out) = read_head(file.path(), whole + 10);
            assert_eq!(head.codec(), codec);
            assert_eq!(out, data, "{codec}: all of it");
            assert_eq!((head.bytes_read(), head.file_len()), (whole, whole));
            for limit in [3, whole / 3, whole - 1] {
                let (head, out) = read_head(file.path(), limit);
                assert!(head.bytes_read() <= limit, "{codec} {limit}");
                // Cut one byte short, only a trailer may be missing.
                assert!(
                    out.len() < data.len() || limit == whole - 1,
                    "{codec} {limit}"
                );
                assert_eq!(out, data[..out.len()], "{codec} {limit}");
            }
        }
    }

    #[test]
    fn damage_inside_the_head_is_an_error_not_a_cut() {
        // bzip2 checks each 100 kB block's CRC as the block ends, so the
        // damage is found well before the head does.
        let data = sample(600_000);
        let mut bz = ::bzip2::write::BzEncoder::new(Vec::new(), ::bzip2::Compression::fast());
        bz.write_all(&data).expect("bzip2");
        let mut bytes = bz.finish().expect("bzip2");
        let third = bytes.len() / 3;
        for b in &mut bytes[third..third + 64] {
            *b ^= 0x5a;
        }
        let file = write_temp(&bytes);
        let mut head = LayerHead::open(file.path(), bytes.len() as u64 - 100).expect("open");
        let err = head
            .read_to_end(&mut Vec::new())
            .expect_err("corrupt bzip2 block");
        assert_ne!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
