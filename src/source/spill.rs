//! The on-disk cache of decompressed bytes, for streams (or single frames of
//! a stream) that have no resume points inside them.
//!
//! Without resume points, a read at offset `n` must decompress everything
//! before `n`; doing that per read makes random reads quadratic, and parked
//! decoders only help reads that go forward. Instead each such *segment* of
//! the decompressed stream gets one forward decoder that writes what it
//! decodes into an unlinked temporary file, at the segment's decompressed
//! offset (the file is sparse, so segments never touched cost no disk). The
//! decoder only runs up to the highest offset asked for so far (the
//! *watermark*), rounded up to [`FILL_CHUNK`]; reads below the watermark are
//! `pread`s of the file and never wait for the decoder, reads above it take
//! the segment's lock and extend the fill (or, if another read is already
//! filling, wait only until the watermark passes what they need). Every
//! byte is therefore
//! decompressed at most once per mount, and memory holds one decoder per
//! segment being filled, never the data.
//!
//! The file is read with `pread` rather than mapped: mapping it would need
//! `unsafe` (a file others could truncate), and a `pread` of a page-cached
//! range costs about as much as the `memcpy` FUSE makes anyway.
//!
//! Blocks of zeros are not written: the file keeps a hole there, and a read
//! below the watermark that meets a hole or the file's end gets zeros. So
//! the disk a segment costs is its decoded bytes up to the watermark, less
//! the zero blocks: reading the file after a 4 GiB run of zeros in a single
//! zstd frame (145 KB compressed) wrote 4 GiB before, and now nothing.
//! Data that is not zero is spilled in full up to the watermark: the bound
//! is the layer's decompressed size, as for any tool unpacking it.
//!
//! If the cache directory cannot take the file (unwritable, disk full), the
//! cache gives up, with one warning naming the directory: what is already
//! in the file is still read from it, and each segment is decoded per read
//! from then on, by one decoder kept where the last read ended (so reading
//! forward stays linear; a read behind it starts again from the segment's
//! start). Slower, never wrong, and no read fails for want of disk.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::Duration;

use super::access::{skip, Access, DecodeCounter};

mod finish;
pub(super) use finish::{Finisher, FINISH_LIMIT};

/// How far a fill runs past the offset asked for: reads come in FUSE-sized
/// pieces (128 KiB), so this saves a lock round per piece when reading
/// forward, and bounds the decode buffer.
const FILL_CHUNK: u64 = 1024 * 1024;

/// The unit in which runs of zeros are left as holes: the page and block
/// size of common filesystems, so a skipped block is a hole, not a gap
/// inside a block that must be stored anyway.
const HOLE_BLOCK: u64 = 4096;

/// At most this many segments keep a decoder between reads. A decoder holds
/// its window (up to the frame's window size: 8 MiB for common zstd, xz and
/// lz4 settings, more for `--long`), so an unbounded number of half-filled
/// segments would hold unbounded memory. A segment whose decoder is dropped
/// re-decodes its filled part if it is ever extended again.
const LIVE_DECODERS: usize = 4;

/// Makes a fresh decoder positioned at the start of frame `i` (a segment
/// names the frame it starts at).
pub(super) type FrameOpener = Arc<dyn Fn(usize) -> io::Result<Box<dyn Read + Send>> + Send + Sync>;

/// A failure of the cache itself, not of the layer: the read error says
/// which directory, so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
#[error("cache of decompressed data in {dir}: {source}")]
pub struct SpillError {
    /// The directory the cache file lives (or would live) in.
    pub dir: PathBuf,
    /// What the OS said.
    #[source]
    pub source: io::Error,
}

impl SpillError {
    fn wrap(dir: &Path, source: io::Error) -> io::Error {
        io::Error::new(
            source.kind(),
            SpillError {
                dir: dir.to_path_buf(),
                source,
            },
        )
    }
}

/// One range of the decompressed stream, filled by its own forward decoder.
pub(super) struct SegmentSpec {
    /// The frame whose decoder fills it (see [`FrameOpener`]).
    pub frame: usize,
    /// Decompressed offset of its first byte.
    pub start: u64,
    /// Decompressed offset just past its last byte, if known; `None` runs
    /// to the end of the stream.
    pub end: Option<u64>,
}

struct Segment {
    spec: SegmentSpec,
    /// Bytes from `spec.start` that are in the file: the watermark. Only
    /// raised, by the filler holding `filler`, after the bytes are written.
    filled: AtomicU64,
    filler: Mutex<Filler>,
    /// Signalled (under `progress`) whenever `filled` rises or a fill
    /// ends, so a reader waiting for bytes another read is decoding gets
    /// them as soon as they are written, not when that fill is done.
    progress: Mutex<()>,
    advanced: Condvar,
}

impl Segment {
    /// Its length, if its end is known.
    fn len(&self) -> Option<u64> {
        self.spec.end.map(|end| end.saturating_sub(self.spec.start))
    }

    fn signal(&self) {
        let _progress = lock(&self.progress);
        self.advanced.notify_all();
    }
}

#[derive(Default)]
struct Filler {
    /// Positioned at `filled`, when kept.
    decoder: Option<Box<dyn Read + Send>>,
    /// The stream ended at `filled`.
    ended: bool,
    /// Once the cache has failed: a decoder reading past the file, and the
    /// offset from the segment's start it stopped at.
    direct: Option<(u64, Box<dyn Read + Send>)>,
}

/// The cache for a set of segments of one layer's decompressed stream.
pub(super) struct SpillCache {
    dir: PathBuf,
    file: OnceLock<File>,
    /// Serialises creating `file`.
    creating: Mutex<()>,
    segments: Vec<Segment>,
    open: FrameOpener,
    counter: Arc<DecodeCounter>,
    /// Segments holding a decoder, least recently used first.
    live: Mutex<Vec<usize>>,
    /// Set when the directory failed (unwritable, full): reads past the
    /// watermark decode directly, without the file.
    failed: AtomicBool,
}

impl fmt::Debug for SpillCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpillCache")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SpillCache {
    /// A cache whose file will be created in `dir` on the first fill.
    pub(super) fn new(
        dir: &Path,
        segments: Vec<SegmentSpec>,
        open: FrameOpener,
        counter: Arc<DecodeCounter>,
    ) -> SpillCache {
        SpillCache {
            dir: dir.to_path_buf(),
            file: OnceLock::new(),
            creating: Mutex::new(()),
            segments: segments
                .into_iter()
                .map(|spec| Segment {
                    spec,
                    filled: AtomicU64::new(0),
                    filler: Mutex::new(Filler::default()),
                    progress: Mutex::new(()),
                    advanced: Condvar::new(),
                })
                .collect(),
            open,
            counter,
            live: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
        }
    }

    /// Fills `buf` from decompressed offset `offset`, which must lie in
    /// segment `seg` with `buf` not running past the segment's end.
    pub(super) fn read(&self, seg: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let segment = self
            .segments
            .get(seg)
            .ok_or_else(|| io::Error::other("spill segment out of range"))?;
        let rel = offset
            .checked_sub(segment.spec.start)
            .ok_or_else(|| io::Error::other("read before its spill segment"))?;
        let need = rel
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if need > segment.filled.load(Ordering::Acquire) {
            if self.failed.load(Ordering::Relaxed) {
                return self.read_direct(segment, rel, buf);
            }
            match self.fill(seg, segment, need) {
                Ok(()) => {}
                Err(e) if is_spill_error(&e) => {
                    if !self.failed.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "{e}; decoding from the layer on every read instead (slower), starting at decompressed offset {offset}"
                        );
                    }
                    return self.read_direct(segment, rel, buf);
                }
                Err(e) => return Err(e),
            }
        }
        let file = self
            .file
            .get()
            .ok_or_else(|| io::Error::other("spill file missing after a fill"))?;
        read_below_watermark(file, buf, offset).map_err(|e| SpillError::wrap(&self.dir, e))
    }

    /// Reads `buf` from `rel` bytes into `segment` by decoding, without the
    /// file: the way reads go once the cache directory has failed.
    fn read_direct(&self, segment: &Segment, rel: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut filler = lock(&segment.filler);
        // The spilling decoder is of no more use; its memory is.
        filler.decoder = None;
        let (mut pos, mut decoder) = match filler.direct.take() {
            Some((pos, decoder)) if pos <= rel => (pos, decoder),
            _ => (0, (self.open)(segment.spec.frame)?),
        };
        pos += skip(&mut decoder, rel - pos, &self.counter)?;
        if pos < rel {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        decoder.read_exact(buf)?;
        self.counter.add(buf.len() as u64);
        filler.direct = Some((rel + buf.len() as u64, decoder));
        Ok(())
    }

    /// Decodes segment `seg` at least up to `need` bytes from its start,
    /// or waits for the read already decoding it to get there.
    fn fill(&self, seg: usize, segment: &Segment, need: u64) -> io::Result<()> {
        loop {
            let mut filler = match segment.filler.try_lock() {
                Ok(filler) => filler,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    let progress = lock(&segment.progress);
                    if need <= segment.filled.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    // The timeout only bounds a missed race with a fill
                    // that ended between `try_lock` and here.
                    let _ = segment
                        .advanced
                        .wait_timeout(progress, Duration::from_millis(50));
                    if need <= segment.filled.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    continue;
                }
            };
            let result = self.fill_locked(segment, &mut filler, need);
            let kept = filler.decoder.is_some();
            drop(filler);
            segment.signal();
            result?;
            if kept {
                self.note_live(seg);
            }
            return Ok(());
        }
    }

    fn fill_locked(&self, segment: &Segment, filler: &mut Filler, need: u64) -> io::Result<()> {
        let spec = &segment.spec;
        // Only this lock's holder raises it, so it is stable here.
        let mut filled = segment.filled.load(Ordering::Acquire);
        if need <= filled {
            return Ok(());
        }
        if filler.ended {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let limit = spec.end.map(|end| end.saturating_sub(spec.start));
        if limit.is_some_and(|l| need > l) {
            // Past the segment: a caller bug or a read past the stream's
            // end. Either way, nothing to decode.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let target = need
            .div_ceil(FILL_CHUNK)
            .saturating_mul(FILL_CHUNK)
            .min(limit.unwrap_or(u64::MAX))
            .max(need);
        let file = self.file()?;
        // Take the decoder out: if anything below fails it is dropped, and
        // the next fill starts afresh rather than from an unknown position.
        let mut decoder = match filler.decoder.take() {
            Some(decoder) => decoder,
            None => {
                let mut decoder = (self.open)(spec.frame)?;
                let skipped = skip(&mut decoder, filled, &self.counter)?;
                if skipped < filled {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                decoder
            }
        };
        let chunk = usize::try_from((target - filled).min(FILL_CHUNK)).unwrap_or(1 << 20);
        let mut buf = vec![0u8; chunk];
        while filled < target {
            // Up to `need` first, then on to `target`: a decoder may fail
            // a call that reaches damage (zstd checks a frame's checksum
            // in the call that ends the frame) and lose that call's bytes,
            // which must not be the bytes this read needs.
            let stop = if filled < need { need } else { target };
            let want = usize::try_from(stop - filled)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = match decoder.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The bytes asked for are in, and the damage lies past
                // them (a frame checksum is only checked at the frame's
                // end, which a tar's indexing pass may never reach): serve
                // them. The decoder is dropped, so a read that reaches the
                // damage decodes up to it again and fails there.
                Err(_) if filled >= need => return Ok(()),
                Err(e) => return Err(e),
            };
            if n == 0 {
                filler.ended = true;
                break;
            }
            self.counter.add(n as u64);
            let at = spec
                .start
                .checked_add(filled)
                .ok_or_else(|| io::Error::other("spill offset overflows"))?;
            write_leaving_holes(file, &buf[..n], at).map_err(|e| SpillError::wrap(&self.dir, e))?;
            filled += n as u64;
            segment.filled.store(filled, Ordering::Release);
            segment.signal();
        }
        if !filler.ended && limit.is_none_or(|l| filled < l) {
            filler.decoder = Some(decoder);
        }
        if filled < need {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Whether segment `seg` is at most `limit` bytes long and not yet in
    /// the file to its end: what [`Finisher`] may finish.
    fn unfinished(&self, seg: usize, limit: u64) -> bool {
        !self.failed.load(Ordering::Relaxed)
            && self.segments.get(seg).is_some_and(|segment| {
                segment
                    .len()
                    .is_some_and(|len| len <= limit && segment.filled.load(Ordering::Acquire) < len)
            })
    }

    /// Decodes segment `seg` to its end with the decoder a read left at
    /// its watermark, one [`FILL_CHUNK`] per hold of its lock, so that a
    /// read needing more of it waits for one chunk at most. Stops when
    /// the segment has no decoder (none was left, or reads of other
    /// segments took it back): finishing never decodes again what is in
    /// the file. A failure is left for the reads that reach it to report.
    fn finish(&self, seg: usize) {
        let Some(segment) = self.segments.get(seg) else {
            return;
        };
        let Some(len) = segment.len() else {
            return;
        };
        loop {
            let mut filler = lock(&segment.filler);
            let filled = segment.filled.load(Ordering::Acquire);
            if filled >= len || filler.decoder.is_none() || self.failed.load(Ordering::Relaxed) {
                return;
            }
            let result = self.fill_locked(segment, &mut filler, (filled + 1).min(len));
            drop(filler);
            segment.signal();
            if let Err(e) = result {
                log::debug!("spill segment {seg} not finished ahead of reads: {e}");
                return;
            }
        }
    }

    /// The cache file, created on first use.
    fn file(&self) -> io::Result<&File> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let _creating = lock(&self.creating);
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let file = tempfile::tempfile_in(&self.dir).map_err(|e| SpillError::wrap(&self.dir, e))?;
        Ok(self.file.get_or_init(|| file))
    }

    /// Records that `seg` holds a decoder, and drops the decoder of the
    /// least recently used other segment if too many do.
    fn note_live(&self, seg: usize) {
        let mut victims = Vec::new();
        {
            let mut live = lock(&self.live);
            live.retain(|&s| s != seg);
            live.push(seg);
            while live.len() > LIVE_DECODERS {
                victims.push(live.remove(0));
            }
        }
        for victim in victims {
            let Some(segment) = self.segments.get(victim) else {
                continue;
            };
            // A busy segment is in use: leave it; it re-registers when done.
            let filler = match segment.filler.try_lock() {
                Ok(filler) => Some(filler),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut filler) = filler {
                filler.decoder = None;
            }
        }
    }
}

/// Writes `data` at file offset `at`, except the [`HOLE_BLOCK`]-aligned
/// blocks that are all zeros, which stay holes (or past the file's end).
/// Consecutive blocks to write go in one `pwrite`.
fn write_leaving_holes(file: &File, data: &[u8], at: u64) -> io::Result<()> {
    let mut run: Option<(u64, usize)> = None; // (file offset, start in data)
    let mut pos = 0usize;
    while pos < data.len() {
        let file_pos = at.saturating_add(pos as u64);
        let to_boundary = HOLE_BLOCK - file_pos % HOLE_BLOCK;
        let end = data
            .len()
            .min(pos.saturating_add(usize::try_from(to_boundary).unwrap_or(usize::MAX)));
        let zero = data[pos..end].iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some((file_pos, pos)),
            (true, Some((run_at, start))) => {
                file.write_all_at(&data[start..pos], run_at)?;
                run = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some((run_at, start)) = run {
        file.write_all_at(&data[start..], run_at)?;
    }
    Ok(())
}

/// Fills `buf` from file offset `offset`, all of which lies below a
/// segment's watermark: what the file does not hold (its end comes first,
/// because the last blocks were zeros and never written) is zeros.
fn read_below_watermark(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset.saturating_add(done as u64)) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `e` is a failure of the cache directory (a [`SpillError`]).
pub(super) fn is_spill_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SpillError>())
}

/// A whole stream served from one spill segment: the access of codecs (or
/// layers) with no resume points at all.
#[derive(Debug)]
pub(super) struct SpillAccess(SpillCache);

impl SpillAccess {
    /// Spills the stream that `open(0)` decodes from its start.
    pub(super) fn new(dir: &Path, open: FrameOpener, counter: Arc<DecodeCounter>) -> SpillAccess {
        SpillAccess(SpillCache::new(
            dir,
            vec![SegmentSpec {
                frame: 0,
                start: 0,
                end: None,
            }],
            open,
            counter,
        ))
    }
}

impl Access for SpillAccess {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read(0, offset, buf)
    }
}

#[cfg(test)]
mod tests;
