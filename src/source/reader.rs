//! Opening a layer file and reading its decompressed bytes.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::codec::{sniff, Codec, Sniffed};
use super::{SourceError, Stream};

/// How many parked decoders a compressed layer keeps for reuse.
const PARKED_DECODERS: usize = 4;
/// Read size from the compressed file.
const INPUT_BUFFER: usize = 256 * 1024;

/// One layer file, opened, with its codec known.
///
/// Reads at any offset of the decompressed stream are served with
/// [`LayerSource::read_exact_at`]. Compressed layers have no random access yet:
/// a read resumes a parked decoder that stopped at or before the offset, or
/// decompresses from the start. Reading files in layer order therefore
/// decompresses the layer about once.
#[derive(Debug)]
pub struct LayerSource {
    path: PathBuf,
    codec: Codec,
    file: Arc<File>,
    file_len: u64,
    parked: Mutex<Vec<Parked>>,
}

/// A decoder that stopped at decompressed offset `pos`.
struct Parked {
    pos: u64,
    decoder: Box<dyn Read + Send>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked").field("pos", &self.pos).finish()
    }
}

impl LayerSource {
    /// Opens a layer file and recognises its codec from its first bytes.
    pub fn open(path: &Path) -> Result<LayerSource, SourceError> {
        let io_err = |source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(SourceError::NotALayer {
                path: path.to_path_buf(),
                reason: "is a directory".into(),
            });
        }
        let mut head = [0u8; 8];
        let got = read_full_at(&file, &mut head, 0).map_err(io_err)?;
        let codec = match sniff(&head[..got]) {
            Sniffed::Known(codec) => codec,
            Sniffed::Unsupported(codec) => {
                return Err(SourceError::UnsupportedCodec {
                    path: path.to_path_buf(),
                    codec,
                })
            }
        };
        Ok(LayerSource {
            path: path.to_path_buf(),
            codec,
            file: Arc::new(file),
            file_len: meta.len(),
            parked: Mutex::new(Vec::new()),
        })
    }

    /// The layer file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The codec recognised from the file's magic bytes.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The size of the layer file itself (compressed size for compressed layers).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// A sequential stream of the decompressed bytes from the start, for the
    /// indexing pass.
    pub fn stream(&self) -> Box<dyn Stream + Send> {
        match self.codec {
            Codec::Plain => Box::new(PlainStream {
                inner: BufReader::with_capacity(INPUT_BUFFER, self.positioned()),
                len: self.file_len,
            }),
            _ => Box::new(DecodedStream(self.decoder())),
        }
    }

    /// Fills `buf` with the decompressed bytes starting at `offset`.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        if buf.is_empty() {
            return Ok(());
        }
        match self.codec {
            Codec::Plain => match self.file.read_exact_at(buf, offset) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Err(self.past_end(offset, buf.len()))
                }
                Err(source) => Err(SourceError::Io {
                    path: self.path.clone(),
                    source,
                }),
            },
            _ => self.read_decoded_at(offset, buf),
        }
    }

    fn read_decoded_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let mut cursor = self.take_parked(offset).unwrap_or_else(|| Parked {
            pos: 0,
            decoder: self.decoder(),
        });
        let skip = offset - cursor.pos;
        let skipped = io::copy(&mut (&mut cursor.decoder).take(skip), &mut io::sink())
            .map_err(|e| self.corrupt(cursor.pos, e))?;
        cursor.pos += skipped;
        if skipped < skip {
            return Err(self.past_end(offset, buf.len()));
        }
        let mut filled = 0;
        while filled < buf.len() {
            match cursor.decoder.read(&mut buf[filled..]) {
                Ok(0) => return Err(self.past_end(offset, buf.len())),
                Ok(n) => {
                    filled += n;
                    cursor.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.corrupt(cursor.pos, e)),
            }
        }
        self.park(cursor);
        Ok(())
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

    fn positioned(&self) -> PositionedReader {
        PositionedReader {
            file: Arc::clone(&self.file),
            pos: 0,
            len: self.file_len,
        }
    }

    /// A fresh decoder over the whole file, positioned at decompressed offset 0.
    fn decoder(&self) -> Box<dyn Read + Send> {
        let input = BufReader::with_capacity(INPUT_BUFFER, self.positioned());
        match self.codec {
            Codec::Plain => Box::new(input),
            Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Codec::Zstd => match zstd::stream::read::Decoder::with_buffer(input) {
                Ok(mut decoder) => {
                    // Accept frames written with --long (windows up to 2 GiB);
                    // if the option is refused the default limit stays.
                    let _ = decoder.window_log_max(31);
                    Box::new(decoder)
                }
                Err(e) => Box::new(FailingReader(Some(e))),
            },
        }
    }

    fn past_end(&self, offset: u64, len: usize) -> SourceError {
        SourceError::PastEnd {
            path: self.path.clone(),
            offset,
            len,
        }
    }

    fn corrupt(&self, offset: u64, source: io::Error) -> SourceError {
        SourceError::Corrupt {
            path: self.path.clone(),
            codec: self.codec.name(),
            offset,
            source,
        }
    }
}

/// Reads as many bytes as the file has at `offset`, up to `buf.len()`.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A reader with its own position over a shared file, so that several
/// decoders can read one file descriptor at once (a dup'ed fd would share
/// the offset).
struct PositionedReader {
    file: Arc<File>,
    pos: u64,
    len: u64,
}

impl Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PositionedReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

/// The indexing stream of a plain tar: skips are seeks.
struct PlainStream {
    inner: BufReader<PositionedReader>,
    len: u64,
}

impl Read for PlainStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Stream for PlainStream {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let pos = self.inner.stream_position()?;
        let n = n.min(self.len.saturating_sub(pos));
        let delta = i64::try_from(n)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "skip too large"))?;
        self.inner.seek_relative(delta)?;
        Ok(n)
    }
}

/// The indexing stream of a compressed layer: skips decompress and discard.
struct DecodedStream(Box<dyn Read + Send>);

impl Read for DecodedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Stream for DecodedStream {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink())
    }
}

/// Stands in for a decoder that could not be created, so the error surfaces
/// on first read with the layer's name attached.
struct FailingReader(Option<io::Error>);

impl Read for FailingReader {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("decoder could not be created")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        f
    }

    fn check_random_reads(src: &LayerSource, data: &[u8]) {
        for &(off, len) in &[
            (0usize, 10usize),
            (5000, 3000),
            (100, 50),
            (data.len() - 7, 7),
            (77_777, 1),
        ] {
            let mut buf = vec![0; len];
            src.read_exact_at(off as u64, &mut buf).expect("read");
            assert_eq!(&buf[..], &data[off..off + len], "offset {off}");
        }
        let mut buf = [0u8; 8];
        assert!(matches!(
            src.read_exact_at(data.len() as u64 - 4, &mut buf),
            Err(SourceError::PastEnd { .. })
        ));
    }

    #[test]
    fn plain_gzip_and_zstd_read_the_same_bytes() {
        let data = sample(200_000);
        let plain = write_temp(&data);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).expect("gzip");
        let gz = write_temp(&gz.finish().expect("gzip"));
        let zst = write_temp(&zstd::encode_all(&data[..], 3).expect("zstd"));
        for (file, codec) in [
            (&plain, Codec::Plain),
            (&gz, Codec::Gzip),
            (&zst, Codec::Zstd),
        ] {
            let src = LayerSource::open(file.path()).expect("open");
            assert_eq!(src.codec(), codec);
            check_random_reads(&src, &data);
            let mut all = Vec::new();
            src.stream().read_to_end(&mut all).expect("stream");
            assert_eq!(all, data);
        }
    }

    #[test]
    fn concatenated_gzip_members_and_zstd_frames_read_as_one_stream() {
        let data = sample(100_000);
        let mut gz = Vec::new();
        let mut zst = Vec::new();
        // A skippable frame first, as pzstd writes.
        zst.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
        for chunk in data.chunks(30_000) {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(chunk).expect("gzip");
            gz.extend(e.finish().expect("gzip"));
            zst.extend(zstd::encode_all(chunk, 1).expect("zstd"));
        }
        for bytes in [gz, zst] {
            let file = write_temp(&bytes);
            let src = LayerSource::open(file.path()).expect("open");
            check_random_reads(&src, &data);
        }
    }

    #[test]
    fn plain_stream_skips_by_seeking() {
        let data = sample(10_000);
        let file = write_temp(&data);
        let src = LayerSource::open(file.path()).expect("open");
        let mut s = src.stream();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).expect("read");
        assert_eq!(s.skip(1000).expect("skip"), 1000);
        s.read_exact(&mut b).expect("read");
        assert_eq!(&b, &data[1004..1008]);
        assert_eq!(s.skip(1_000_000).expect("skip"), 10_000 - 1008);
    }

    #[test]
    fn unsupported_codecs_and_directories_are_refused() {
        let xz = write_temp(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0]);
        let err = LayerSource::open(xz.path()).expect_err("xz refused");
        assert!(
            err.to_string().contains("xz compression is not supported"),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("dir");
        assert!(matches!(
            LayerSource::open(dir.path()),
            Err(SourceError::NotALayer { .. })
        ));
    }
}
