//! Opening a layer file and reading its decompressed bytes.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::access::{Access, DecodeCounter, IndexingDecoder};
use super::codec::{sniff, Codec, Sniffed};
use super::gzip;
use super::positioned::PositionedReader;
use super::region::Region;
use super::seek::SeekIndex;
use super::{bzip2_streams, lz4_frames, xz_blocks, zstd_frames};
use super::{SourceError, SpillError, Stream};

/// Read size from the compressed file.
pub(super) const INPUT_BUFFER: usize = 256 * 1024;
/// How many leading bytes tell every codec's magic apart.
pub(super) const SNIFF_BYTES: usize = 8;

/// One layer file, opened, with its codec known.
///
/// Indexing makes one pass over the decompressed stream with
/// [`LayerSource::index_pass`], which also learns how to get back into the
/// stream later (a [`SeekIndex`]). Once a seek index is attached, from that
/// pass or from a stored index, [`LayerSource::read_exact_at`] serves reads
/// at any decompressed offset.
#[derive(Debug)]
pub struct LayerSource {
    path: PathBuf,
    codec: Codec,
    file: Arc<Region>,
    /// Where the layer starts in the file: 0 unless it is a member of an
    /// image archive, read in place.
    offset: u64,
    file_len: u64,
    access: OnceLock<Box<dyn Access>>,
    counter: Arc<DecodeCounter>,
    /// Where decompressed bytes of layers without resume points are cached.
    spill_dir: PathBuf,
}

impl LayerSource {
    /// Opens a layer file and recognises its codec from its first bytes.
    pub fn open(path: &Path) -> Result<LayerSource, SourceError> {
        let (file, file_len) = open_file(path)?;
        LayerSource::of_region(path, Region::new(file, 0, file_len), 0, file_len)
    }

    /// Opens `len` bytes of `path` from byte `offset` as a layer: a layer
    /// stored inside an image archive, read in place, never copied. A range
    /// that does not lie within the file is refused.
    pub fn open_range(path: &Path, offset: u64, len: u64) -> Result<LayerSource, SourceError> {
        let (file, file_len) = open_file(path)?;
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(SourceError::NotALayer {
                path: path.to_path_buf(),
                reason: format!(
                    "the layer's {len} bytes at offset {offset} run past the end of the {file_len}-byte file"
                ),
            });
        }
        LayerSource::of_region(path, Region::new(file, offset, len), offset, len)
    }

    fn of_region(
        path: &Path,
        region: Region,
        offset: u64,
        len: u64,
    ) -> Result<LayerSource, SourceError> {
        let mut head = [0u8; SNIFF_BYTES];
        let got = read_full_at(&region, &mut head).map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let codec = codec_of(path, &head[..got])?;
        Ok(LayerSource {
            path: path.to_path_buf(),
            codec,
            file: Arc::new(region),
            offset,
            file_len: len,
            access: OnceLock::new(),
            counter: Arc::new(DecodeCounter::default()),
            spill_dir: absolute(std::env::temp_dir()),
        })
    }

    /// Sets the directory for the on-disk cache of decompressed data that
    /// layers without resume points are read through (default: the
    /// system's temporary directory). Takes effect at [`LayerSource::attach`].
    /// A relative path is resolved now: a daemon may change directory later.
    pub fn set_spill_dir(&mut self, dir: PathBuf) {
        self.spill_dir = absolute(dir);
    }

    /// The layer file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open layer file: what the index cache must key on, so that the
    /// key and the bytes read are of the same file even if the path is
    /// replaced meanwhile.
    pub fn file(&self) -> &File {
        self.file.file()
    }

    /// Where the layer's bytes start in [`LayerSource::file`]: 0 for a
    /// layer file, the member's data offset for a layer inside an archive.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The sha256 of the layer's own bytes (compressed, as stored): what
    /// an image descriptor's digest names. Reads the whole layer once.
    pub fn sha256(&self) -> Result<[u8; 32], SourceError> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let mut reader = PositionedReader::buffered(&self.file, self.file_len, 0, INPUT_BUFFER);
        io::copy(&mut reader, &mut hasher).map_err(|source| SourceError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(hasher.finalize().into())
    }

    /// The codec recognised from the file's magic bytes.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The size of the layer itself (compressed size for compressed
    /// layers; the range's length for a layer inside an archive).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The indexing pass: a sequential stream of the decompressed bytes
    /// from the start. [`IndexPass::finish`] then gives what it learned,
    /// for [`LayerSource::attach`].
    pub fn index_pass(&self) -> IndexPass {
        match self.codec {
            Codec::Plain => IndexPass(Pass::Plain(PlainStream {
                inner: BufReader::with_capacity(INPUT_BUFFER, self.positioned()),
                len: self.file_len,
            })),
            Codec::Gzip => IndexPass(Pass::Decoding(gzip::index_pass(
                Arc::clone(&self.file),
                self.file_len,
            ))),
            Codec::Zstd => IndexPass(Pass::Decoding(zstd_frames::index_pass(
                Arc::clone(&self.file),
                self.file_len,
            ))),
            Codec::Bzip2 => IndexPass(Pass::Decoding(bzip2_streams::index_pass(
                Arc::clone(&self.file),
                self.file_len,
            ))),
            Codec::Xz => IndexPass(Pass::Decoding(xz_blocks::index_pass(
                Arc::clone(&self.file),
                self.file_len,
            ))),
            Codec::Lz4 => IndexPass(Pass::Decoding(lz4_frames::index_pass(
                Arc::clone(&self.file),
                self.file_len,
            ))),
        }
    }

    /// Sets how reads are served, from a fresh pass or a stored index. The
    /// first call wins; a seek index of another codec is refused.
    pub fn attach(&self, seek: SeekIndex) -> Result<(), SourceError> {
        let file = || Arc::clone(&self.file);
        let counter = || Arc::clone(&self.counter);
        let (len, spill) = (self.file_len, self.spill_dir.as_path());
        let access: io::Result<Box<dyn Access>> = match (self.codec, seek) {
            (Codec::Plain, SeekIndex::Plain) => Ok(Box::new(PlainAccess(file()))),
            (Codec::Gzip, SeekIndex::Gzip(index)) => gzip::access(file(), len, index, counter()),
            (Codec::Zstd, SeekIndex::Zstd(index)) => {
                zstd_frames::access(file(), len, index, counter(), spill)
            }
            (Codec::Bzip2, SeekIndex::Bzip2(index)) => {
                bzip2_streams::access(file(), len, index, counter(), spill)
            }
            (Codec::Xz, SeekIndex::Xz(index)) => {
                xz_blocks::access(file(), len, index, counter(), spill)
            }
            (Codec::Lz4, SeekIndex::Lz4(index)) => {
                lz4_frames::access(file(), len, index, counter(), spill)
            }
            (codec, seek) => {
                return Err(SourceError::NotALayer {
                    path: self.path.clone(),
                    reason: format!("a stored {seek:?} index does not fit a {codec} layer"),
                })
            }
        };
        let access = access.map_err(|source| SourceError::Io {
            path: self.path.clone(),
            source,
        })?;
        let _ = self.access.set(access);
        Ok(())
    }

    /// Bytes decompressed by reads so far (the indexing pass not counted).
    pub fn decoded_bytes(&self) -> u64 {
        self.counter.get()
    }

    /// Fills `buf` with the decompressed bytes starting at `offset`.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        if buf.is_empty() {
            return Ok(());
        }
        let access = self.access.get().ok_or_else(|| SourceError::NotIndexed {
            path: self.path.clone(),
        })?;
        access
            .read_exact_at(offset, buf)
            .map_err(|e| match e.kind() {
                _ if e.get_ref().is_some_and(|inner| inner.is::<SpillError>()) => {
                    SourceError::Cache {
                        path: self.path.clone(),
                        source: e,
                    }
                }
                io::ErrorKind::UnexpectedEof => self.past_end(offset, buf.len()),
                _ if self.codec == Codec::Plain => SourceError::Io {
                    path: self.path.clone(),
                    source: e,
                },
                _ => self.corrupt(offset, e),
            })
    }

    fn positioned(&self) -> PositionedReader {
        PositionedReader {
            file: Arc::clone(&self.file),
            pos: 0,
            len: self.file_len,
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

/// Plain tars: the file is the stream.
#[derive(Debug)]
struct PlainAccess(Arc<Region>);

impl Access for PlainAccess {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

/// The indexing pass over one layer; see [`LayerSource::index_pass`].
pub struct IndexPass(Pass);

impl std::fmt::Debug for IndexPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Pass::Plain(_) => "IndexPass(plain)",
            Pass::Decoding(_) => "IndexPass(decoding)",
        })
    }
}

enum Pass {
    /// A plain tar: member data is skipped by seeking.
    Plain(PlainStream),
    /// A compressed layer: data is decompressed and discarded.
    Decoding(Box<dyn IndexingDecoder>),
}

impl IndexPass {
    /// Ends the pass and returns what it learned for random access.
    pub fn finish(self) -> io::Result<SeekIndex> {
        match self.0 {
            Pass::Plain(_) => Ok(SeekIndex::Plain),
            Pass::Decoding(decoder) => decoder.finish(),
        }
    }
}

impl Read for IndexPass {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Pass::Plain(s) => s.read(buf),
            Pass::Decoding(d) => d.read(buf),
        }
    }
}

impl Stream for IndexPass {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        match &mut self.0 {
            Pass::Plain(s) => s.skip(n),
            Pass::Decoding(d) => io::copy(&mut d.take(n), &mut io::sink()),
        }
    }
}

/// Opens a layer file, refusing directories; returns it with its length.
pub(super) fn open_file(path: &Path) -> Result<(File, u64), SourceError> {
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
    Ok((file, meta.len()))
}

/// The codec a layer's first bytes (up to [`SNIFF_BYTES`]) name, or why
/// the layer cannot be read.
pub(super) fn codec_of(path: &Path, head: &[u8]) -> Result<Codec, SourceError> {
    match sniff(head) {
        Sniffed::Known(codec) => Ok(codec),
        Sniffed::Unsupported(codec) => Err(SourceError::UnsupportedCodec {
            path: path.to_path_buf(),
            codec,
        }),
    }
}

/// `dir` made absolute against the current directory, if it can be.
fn absolute(dir: PathBuf) -> PathBuf {
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Reads as many bytes as the region has at its start, up to `buf.len()`.
fn read_full_at(region: &Region, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match region.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
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

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;
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

    /// The indexing pass streams exactly `data`; reads after it are right.
    fn index_and_check(src: &LayerSource, data: &[u8]) {
        let mut all = Vec::new();
        let mut pass = src.index_pass();
        pass.read_to_end(&mut all).expect("stream");
        assert!(all == data, "{} stream differs", src.codec());
        src.attach(pass.finish().expect("seek index"))
            .expect("attach");
        check_random_reads(src, data);
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
            index_and_check(&src, &data);
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
            let mut pass = src.index_pass();
            io::copy(&mut pass, &mut io::sink()).expect("stream");
            src.attach(pass.finish().expect("seek index"))
                .expect("attach");
            check_random_reads(&src, &data);
        }
    }

    #[test]
    fn bzip2_xz_and_lz4_read_the_same_bytes() {
        let data = sample(300_000);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&data).expect("bzip2");
        let bz = write_temp(&bz.finish().expect("bzip2"));
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&data[..], 1)
            .read_to_end(&mut xz)
            .expect("xz");
        let xz = write_temp(&xz);
        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(&data).expect("lz4");
        let lz = write_temp(&lz.finish().expect("lz4"));
        for (file, codec) in [(&bz, Codec::Bzip2), (&xz, Codec::Xz), (&lz, Codec::Lz4)] {
            let src = LayerSource::open(file.path()).expect("open");
            assert_eq!(src.codec(), codec);
            index_and_check(&src, &data);
        }
    }

    #[test]
    fn an_unusable_spill_dir_fails_reads_naming_it() {
        let data = sample(100_000);
        let zst = write_temp(&zstd::encode_all(&data[..], 3).expect("zstd"));
        let mut src = LayerSource::open(zst.path()).expect("open");
        let dir = tempfile::tempdir().expect("dir");
        // A regular file where the directory should be.
        let not_a_dir = dir.path().join("cache");
        std::fs::write(&not_a_dir, b"").expect("file");
        src.set_spill_dir(not_a_dir.clone());
        let mut pass = src.index_pass();
        io::copy(&mut pass, &mut io::sink()).expect("stream");
        src.attach(pass.finish().expect("seek index"))
            .expect("attach");
        let mut buf = [0u8; 10];
        let err = src.read_exact_at(50_000, &mut buf).expect_err("no cache");
        assert!(matches!(err, SourceError::Cache { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&not_a_dir.display().to_string()), "{msg}");
        assert!(msg.contains(&zst.path().display().to_string()), "{msg}");
        // Later reads fail the same way, never panic or hang.
        assert!(src.read_exact_at(0, &mut buf).is_err());
    }

    #[test]
    fn a_range_of_a_file_reads_as_a_layer_of_its_own() {
        let data = sample(150_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zst = zstd::encode_all(&data[..], 3).expect("zstd");
        for (layer, codec) in [
            (&data, Codec::Plain),
            (&gz, Codec::Gzip),
            (&zst, Codec::Zstd),
        ] {
            // Junk on both sides that would break any codec reading it.
            let mut file = vec![0xa5; 1000];
            file.extend_from_slice(layer);
            file.extend_from_slice(&[0x5a; 777]);
            let file = write_temp(&file);
            let len = layer.len() as u64;
            let src = LayerSource::open_range(file.path(), 1000, len).expect("open");
            assert_eq!(
                (src.codec(), src.offset(), src.file_len()),
                (codec, 1000, len)
            );
            index_and_check(&src, &data);
            let expected: [u8; 32] = sha2::Sha256::digest(layer).into();
            assert_eq!(src.sha256().expect("hash"), expected);
            let err = LayerSource::open_range(file.path(), 1000, len + 778).expect_err("too long");
            assert!(err.to_string().contains("offset 1000"), "{err}");
        }
    }

    #[test]
    fn plain_stream_skips_by_seeking() {
        let data = sample(10_000);
        let file = write_temp(&data);
        let src = LayerSource::open(file.path()).expect("open");
        let mut s = src.index_pass();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).expect("read");
        assert_eq!(s.skip(1000).expect("skip"), 1000);
        s.read_exact(&mut b).expect("read");
        assert_eq!(&b, &data[1004..1008]);
        assert_eq!(s.skip(1_000_000).expect("skip"), 10_000 - 1008);
    }

    #[test]
    fn unsupported_codecs_and_directories_are_refused() {
        let lzma = write_temp(&[0x5d, 0, 0, 0x80, 0, 0xff, 0xff, 0xff]);
        let err = LayerSource::open(lzma.path()).expect_err("lzma refused");
        assert!(
            err.to_string()
                .contains("lzma compression is not supported"),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("dir");
        assert!(matches!(
            LayerSource::open(dir.path()),
            Err(SourceError::NotALayer { .. })
        ));
    }
}
