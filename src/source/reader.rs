//! Opening a layer file and reading its decompressed bytes.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::digest::Digest;

use super::access::{Access, DecodeCounter, IndexingDecoder};
use super::budget;
use super::codec::{codec_of, Codec, SNIFF_BYTES};
use super::dispatch::{self, AccessError};
use super::drop_behind::DropBehind;
use super::meter::ReadMeter;
use super::open::{open_file, INPUT_BUFFER};
use super::positioned::PositionedReader;
use super::region::Region;
use super::remote::{is_fetch_error, BlobFetch, PassStream, RemoteBlob, CHUNK_STORE_BYTES};
use super::second_reader::SecondReader;
use super::seek::SeekIndex;
use super::spill::is_spill_error;
use super::watch::{Drift, Watch};
use super::{SourceError, Stream};

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
    /// The file as it was opened, to notice it changing underneath; `None`
    /// for a remote blob, which its digest fixes.
    watch: Option<Watch>,
    /// Where decompressed bytes of layers without resume points are cached.
    spill_dir: PathBuf,
    /// A remote blob's digest from its manifest; `None` for a file.
    blob_digest: Option<Digest>,
    /// Where a remote blob's fetched chunks are kept, if anywhere.
    chunk_dir: Option<PathBuf>,
}

impl LayerSource {
    /// Opens a layer file and recognises its codec from its first bytes.
    pub fn open(path: &Path) -> Result<LayerSource, SourceError> {
        let (file, meta) = open_file(path)?;
        let file_len = meta.len();
        LayerSource::of_region(path, Region::new(file, 0, file_len), 0, file_len, &meta)
    }

    /// Opens `len` bytes of `path` from byte `offset` as a layer: a layer
    /// stored inside an image archive, read in place, never copied. A range
    /// that does not lie within the file is refused.
    pub fn open_range(path: &Path, offset: u64, len: u64) -> Result<LayerSource, SourceError> {
        let (file, meta) = open_file(path)?;
        let file_len = meta.len();
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(SourceError::NotALayer {
                path: path.to_path_buf(),
                reason: format!(
                    "the layer's {len} bytes at offset {offset} run past the end of the {file_len}-byte file"
                ),
            });
        }
        LayerSource::of_region(path, Region::new(file, offset, len), offset, len, &meta)
    }

    fn of_region(
        path: &Path,
        region: Region,
        offset: u64,
        len: u64,
        meta: &std::fs::Metadata,
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
            watch: Some(Watch::new(meta)),
            spill_dir: absolute(std::env::temp_dir()),
            blob_digest: None,
            chunk_dir: None,
        })
    }

    /// A remote blob as a layer. `codec` is what its media type says; when
    /// it says nothing, the first bytes are fetched to tell (a mount whose
    /// index is stored fetches nothing of the blob before serving).
    pub fn open_blob(
        fetch: Arc<dyn BlobFetch>,
        digest: Digest,
        codec: Option<Codec>,
    ) -> Result<LayerSource, SourceError> {
        let path = PathBuf::from(fetch.name());
        let blob = RemoteBlob::new(fetch);
        let region = Region::remote(Arc::clone(&blob));
        let codec = match codec {
            Some(codec) => codec,
            None => {
                let mut head = [0u8; SNIFF_BYTES];
                let got =
                    read_full_at(&region, &mut head).map_err(|source| SourceError::Remote {
                        path: path.clone(),
                        source,
                    })?;
                codec_of(&path, &head[..got])?
            }
        };
        Ok(LayerSource {
            path,
            codec,
            file_len: blob.len(),
            file: Arc::new(region),
            offset: 0,
            access: OnceLock::new(),
            counter: Arc::new(DecodeCounter::default()),
            watch: None,
            spill_dir: absolute(std::env::temp_dir()),
            blob_digest: Some(digest),
            chunk_dir: None,
        })
    }

    /// A remote blob's digest, as its manifest names it.
    pub fn blob_digest(&self) -> Option<&Digest> {
        self.blob_digest.as_ref()
    }

    /// Whether the layer is a remote blob.
    pub fn is_remote(&self) -> bool {
        self.file.blob().is_some()
    }

    /// Bytes of a remote blob fetched by reads so far (its indexing pass's
    /// stream not counted); 0 for a local file.
    pub fn fetched_bytes(&self) -> u64 {
        self.file.blob().map_or(0, |blob| blob.fetched())
    }

    /// Sets the directory for the on-disk cache of decompressed data that
    /// layers without resume points are read through (default: the
    /// system's temporary directory). Takes effect at [`LayerSource::attach`].
    /// A relative path is resolved now: a daemon may change directory later.
    pub fn set_spill_dir(&mut self, dir: PathBuf) {
        self.spill_dir = absolute(dir);
    }

    /// Keeps a remote blob's fetched chunks in `dir` (see
    /// `chunk_store.rs`); takes effect at [`LayerSource::attach`]. Nothing
    /// for a local file.
    pub fn set_chunk_dir(&mut self, dir: PathBuf) {
        if self.is_remote() {
            self.chunk_dir = Some(absolute(dir));
        }
    }

    /// The layer file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open layer file: what the index cache must key on, so that the
    /// key and the bytes read are of the same file even if the path is
    /// replaced meanwhile.
    pub fn file(&self) -> Option<&File> {
        self.file.file()
    }

    /// Where the layer's bytes start in [`LayerSource::file`]: 0 for a
    /// layer file, the member's data offset for a layer inside an archive.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The sha256 of the layer's own bytes (compressed, as stored): what
    /// an image descriptor's digest names. Reads the whole layer once,
    /// counting what it read into `meter` if given.
    pub fn sha256(&self, meter: Option<&Arc<ReadMeter>>) -> Result<[u8; 32], SourceError> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let file = self.region(meter);
        let mut reader = PositionedReader::buffered(&file, self.file_len, 0, INPUT_BUFFER);
        io::copy(&mut reader, &mut hasher).map_err(|source| SourceError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(hasher.finalize().into())
    }

    /// Fills `buf` with the layer's own (compressed, as stored) bytes at
    /// `offset`: a table of contents read in place, for a remote blob by
    /// one request of exactly that range.
    pub fn read_stored(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        match self.file.blob() {
            Some(blob) => blob.fetch_exact(offset, buf),
            None => self.file.read_exact_at(buf, offset),
        }
        .map_err(|source| match self.is_remote() {
            true => SourceError::Remote {
                path: self.path.clone(),
                source,
            },
            false => SourceError::Io {
                path: self.path.clone(),
                source,
            },
        })
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
        self.index_pass_metered(None)
    }

    /// [`LayerSource::index_pass`], counting the layer file bytes it gets
    /// through into `meter` (read, or skipped unread by a plain tar's
    /// pass), for a progress display.
    pub fn index_pass_metered(&self, meter: Option<&Arc<ReadMeter>>) -> IndexPass {
        let (mut file, len) = (self.region(meter), self.file_len);
        let mut stream = None;
        if let Some((region, pass)) = file.for_pass() {
            file = Arc::new(region);
            stream = Some(pass);
        }
        let pass = match dispatch::index_pass(self.codec, Arc::clone(&file), len) {
            Some(decoder) => Pass::Decoding(decoder),
            None => Pass::Plain(PlainStream {
                behind: DropBehind::start(&file),
                helper: SecondReader::start(&file),
                inner: BufReader::with_capacity(
                    INPUT_BUFFER,
                    PositionedReader { file, pos: 0, len },
                ),
                len,
            }),
        };
        let decoding = matches!(pass, Pass::Decoding(_)).then(budget::Decoding::start);
        IndexPass {
            pass,
            read: 0,
            stream,
            _decoding: decoding,
        }
    }

    /// The layer's bytes, through `meter` if given.
    fn region(&self, meter: Option<&Arc<ReadMeter>>) -> Arc<Region> {
        match meter {
            Some(meter) => Arc::new(self.file.metered(Arc::clone(meter))),
            None => Arc::clone(&self.file),
        }
    }

    /// Sets how reads are served, from a fresh pass or a stored index. The
    /// first call wins; a seek index of another codec is refused.
    pub fn attach(&self, seek: SeekIndex) -> Result<(), SourceError> {
        let file = || Arc::clone(&self.file);
        let counter = || Arc::clone(&self.counter);
        let (len, spill) = (self.file_len, self.spill_dir.as_path());
        let seek = match seek {
            SeekIndex::Summed(inner, sums) => {
                if let Some(blob) = self.file.blob() {
                    blob.set_sums(sums).map_err(|source| SourceError::Remote {
                        path: self.path.clone(),
                        source,
                    })?;
                    if let Some(dir) = &self.chunk_dir {
                        if let Err(e) = blob.store_chunks_in(dir, CHUNK_STORE_BYTES) {
                            log::warn!(
                                "{}: fetched chunks are not kept in {}: {e}",
                                self.path.display(),
                                dir.display()
                            );
                        }
                    }
                }
                *inner
            }
            // Each chunk is checked against its own digest instead.
            seek @ SeekIndex::Chunks(_) => seek,
            seek => {
                if self.is_remote() {
                    log::warn!(
                        "{}: the stored index has no chunk sums; fetched bytes are not checked",
                        self.path.display()
                    );
                }
                seek
            }
        };
        let access = dispatch::access(self.codec, seek, file(), len, counter(), spill);
        let access = access.map_err(|e| match e {
            AccessError::Misfit(seek) => SourceError::NotALayer {
                path: self.path.clone(),
                reason: format!(
                    "a stored {seek:?} index does not fit a {} layer",
                    self.codec
                ),
            },
            AccessError::Io(source) => SourceError::Io {
                path: self.path.clone(),
                source,
            },
        })?;
        let _ = self.access.set(access);
        Ok(())
    }

    /// Bytes decompressed by reads so far (the indexing pass not counted).
    pub fn decoded_bytes(&self) -> u64 {
        self.counter.get()
    }

    /// Fills `buf` with the decompressed bytes starting at `offset`.
    ///
    /// The layer file is checked after every read: if it was modified in
    /// place since it was opened, nothing is served from it any more; if it
    /// was truncated, reads that need bytes past the cut fail (see
    /// `watch.rs`). A deleted or renamed-over layer file is still open and
    /// serves what it held.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        if buf.is_empty() {
            return Ok(());
        }
        let access = self.access.get().ok_or_else(|| SourceError::NotIndexed {
            path: self.path.clone(),
        })?;
        let (Some(watch), Some(file)) = (&self.watch, self.file.file()) else {
            return access
                .read_exact_at(offset, buf)
                .map_err(|e| self.read_error(offset, buf.len(), e));
        };
        let end = offset.saturating_add(buf.len() as u64);
        let read = (!watch.refuses(end)).then(|| access.read_exact_at(offset, buf));
        let drift = watch.check(file).map_err(|source| SourceError::Io {
            path: self.path.clone(),
            source,
        })?;
        let (now, truncated) = match (drift, read) {
            (Drift::Intact, Some(read)) => {
                return read.map_err(|e| self.read_error(offset, buf.len(), e))
            }
            (Drift::Truncated { .. }, Some(Ok(()))) => return Ok(()),
            (Drift::Truncated { .. }, Some(Err(e))) if is_spill_error(&e) => {
                return Err(self.read_error(offset, buf.len(), e))
            }
            (Drift::Truncated { now }, _) => (now, true),
            // Refused for a cut the file no longer shows (put back to its
            // old size and mtime): the cut stands.
            (Drift::Intact, None) => (self.file_len, true),
            (Drift::Modified { now }, _) => (now, false),
        };
        let (path, was, len) = (self.path.clone(), self.file_len, buf.len());
        Err(if truncated {
            watch.cut_before(end);
            SourceError::Truncated {
                path,
                was,
                now,
                offset,
                len,
            }
        } else {
            SourceError::Modified {
                path,
                was,
                now,
                offset,
                len,
            }
        })
    }

    /// The error for a failed read of an unchanged layer file.
    fn read_error(&self, offset: u64, len: usize, e: io::Error) -> SourceError {
        match e.kind() {
            _ if is_fetch_error(&e) => SourceError::Remote {
                path: self.path.clone(),
                source: e,
            },
            _ if is_spill_error(&e) => SourceError::Cache {
                path: self.path.clone(),
                source: e,
            },
            io::ErrorKind::UnexpectedEof => SourceError::PastEnd {
                path: self.path.clone(),
                offset,
                len,
            },
            _ if self.codec == Codec::Plain => SourceError::Io {
                path: self.path.clone(),
                source: e,
            },
            _ => SourceError::Corrupt {
                path: self.path.clone(),
                codec: self.codec.name(),
                offset,
                source: e,
            },
        }
    }
}

/// The indexing pass over one layer; see [`LayerSource::index_pass`].
pub struct IndexPass {
    pass: Pass,
    /// Decompressed bytes read or skipped so far: where a failure is.
    read: u64,
    /// A remote blob's stream, hashed as the pass reads it.
    stream: Option<Arc<PassStream>>,
    /// Counted among the decoding passes while it lives.
    _decoding: Option<budget::Decoding>,
}

impl std::fmt::Debug for IndexPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.pass {
            Pass::Plain(_) => "IndexPass(plain)",
            Pass::Decoding(_) => "IndexPass(decoding)",
        })
    }
}

enum Pass {
    /// A plain tar: member data is skipped by seeking.
    Plain(PlainStream),
    /// A compressed layer: data is decompressed and discarded.
    Decoding(Box<dyn IndexingDecoder<SeekIndex>>),
}

impl IndexPass {
    /// Ends the pass and returns what it learned for random access.
    ///
    /// A compressed layer is first read to its end, as containerd does after
    /// the tar's end blocks: the rest is padding, but also the last gzip
    /// member's CRC and length, and zstd's, xz's and lz4's checksums, which
    /// cover the whole stream when it is one member or frame. Without this a
    /// corruption that still decodes (a flipped literal) would be served as
    /// file contents. A failure names the decompressed offset it was met at.
    pub fn finish(mut self) -> io::Result<SeekIndex> {
        if let Pass::Decoding(decoder) = &mut self.pass {
            let mut rest = [0u8; 16 * 1024];
            loop {
                match decoder.read(&mut rest) {
                    Ok(0) => break,
                    Ok(n) => self.read += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                            "at byte {} of the decompressed stream, after the archive's end: {e}",
                            self.read
                        ),
                        ))
                    }
                }
            }
        }
        let seek = match self.pass {
            Pass::Plain(_) => SeekIndex::Plain,
            Pass::Decoding(decoder) => decoder.finish()?,
        };
        match self.stream {
            Some(stream) => Ok(SeekIndex::Summed(Box::new(seek), stream.finish()?)),
            None => Ok(seek),
        }
    }
}

impl Read for IndexPass {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.pass {
            Pass::Plain(s) => s.read(buf),
            Pass::Decoding(d) => d.read(buf),
        }?;
        self.read += n as u64;
        Ok(n)
    }
}

impl Stream for IndexPass {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let skipped = match &mut self.pass {
            Pass::Plain(s) => s.skip(n),
            Pass::Decoding(d) => d.skip(n),
        }?;
        self.read += skipped;
        Ok(skipped)
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
    /// Reads the layer ahead of the pass, while the pass reads.
    helper: Option<SecondReader>,
    /// Frees the page cache the pass has left behind.
    behind: Option<DropBehind>,
}

impl Read for PlainStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(helper) = &self.helper {
            helper.read(n as u64);
        }
        if let Some(behind) = &mut self.behind {
            behind.reached(self.inner.get_ref().pos);
        }
        Ok(n)
    }
}

impl Stream for PlainStream {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let pos = self.inner.stream_position()?;
        let n = n.min(self.len.saturating_sub(pos));
        let delta = i64::try_from(n)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "skip too large"))?;
        // Past the buffer, the seek drops it and the next read refills:
        // what lies between is never read, so it is counted here, once
        // per refill like the reads.
        let unread = n.saturating_sub(self.inner.buffer().len() as u64);
        if let (Some(meter), true) = (self.inner.get_ref().file.meter(), unread > 0) {
            meter.advance(unread);
        }
        self.inner.seek_relative(delta)?;
        if let Some(helper) = &self.helper {
            helper.skipped(n, unread);
        }
        if let Some(behind) = &mut self.behind {
            behind.reached(pos.saturating_add(n));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
