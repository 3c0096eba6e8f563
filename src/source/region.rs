//! A byte range of an open file, read as if it were the whole file.
//!
//! Image archives (`docker save`, OCI layouts packed as a tar) hold their
//! layers as members of one big tar; reading a layer in place means every
//! codec reads that member's range, never the bytes around it. Every
//! codec reads through this type, so the base offset is added and the
//! length bounded in exactly one place.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::meter::ReadMeter;
use super::remote::{PassStream, RemoteBlob};

/// Where a region's bytes are.
#[derive(Clone, Debug)]
enum Backing {
    /// A local file, read with `pread`.
    File(Arc<File>),
    /// A registry blob, fetched by range on demand.
    Blob(Arc<RemoteBlob>),
    /// A registry blob as an indexing pass reads it: one stream, hashed.
    Pass(Arc<PassStream>),
}

/// `len` bytes of `file` starting at `base`; offsets given to its reads
/// are relative to `base`, and nothing past `base + len` is ever read.
#[derive(Debug)]
pub(crate) struct Region {
    file: Backing,
    base: u64,
    len: u64,
    /// Counts every byte read: set on the copy an indexing pass reads
    /// through, never on the one that serves reads.
    meter: Option<Arc<ReadMeter>>,
}

impl Region {
    /// The range `base..base + len` of `file`. The caller has checked that
    /// it lies within the file; a shorter file just ends reads early.
    pub(crate) fn new(file: File, base: u64, len: u64) -> Region {
        Region {
            file: Backing::File(Arc::new(file)),
            base,
            len,
            meter: None,
        }
    }

    /// All of a remote blob.
    pub(crate) fn remote(blob: Arc<RemoteBlob>) -> Region {
        Region {
            len: blob.len(),
            file: Backing::Blob(blob),
            base: 0,
            meter: None,
        }
    }

    /// For a remote blob, the region an indexing pass reads through (one
    /// stream, hashed as it goes) and that stream, to finish once the pass
    /// is done; `None` for a local file, which a pass reads as it is.
    pub(crate) fn for_pass(&self) -> Option<(Region, Arc<PassStream>)> {
        let Backing::Blob(blob) = &self.file else {
            return None;
        };
        let stream = Arc::new(PassStream::new(Arc::clone(blob)));
        let region = Region {
            file: Backing::Pass(Arc::clone(&stream)),
            base: self.base,
            len: self.len,
            meter: self.meter.clone(),
        };
        Some((region, stream))
    }

    /// The remote blob behind this range, if it is one.
    pub(crate) fn blob(&self) -> Option<&Arc<RemoteBlob>> {
        match &self.file {
            Backing::Blob(blob) => Some(blob),
            Backing::Pass(_) | Backing::File(_) => None,
        }
    }

    /// Whether the bytes come over the network: readers that would read
    /// one blob at many places at once (the parallel zstd and gzip passes)
    /// read it in order instead.
    pub(crate) fn is_remote(&self) -> bool {
        !matches!(self.file, Backing::File(_))
    }

    /// The same range of the same open file, with every byte read through
    /// it counted by `meter`.
    pub(crate) fn metered(&self, meter: Arc<ReadMeter>) -> Region {
        Region {
            file: self.file.clone(),
            base: self.base,
            len: self.len,
            meter: Some(meter),
        }
    }

    /// The same range of a local file through a new open file description
    /// (so with readahead state of its own), counting nothing: a second
    /// reader beside a pass. `None` for a remote blob, or if the file
    /// cannot be opened again.
    pub(crate) fn reopened(&self) -> Option<Region> {
        let file = self.file()?;
        // A dup() would share the offset and the readahead state; opening
        // the descriptor's /proc link makes a description of its own, even
        // for a file since renamed or deleted.
        let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
        let own = File::open(link)
            .map_err(|e| log::debug!("layer file not reopened for read-ahead: {e}"))
            .ok()?;
        Some(Region::new(own, self.base, self.len))
    }

    /// The share of the range's pages now in the page cache; `None` for a
    /// remote blob, or if the kernel will not say.
    pub(crate) fn cached_share(&self) -> Option<f64> {
        let file = self.file()?;
        match crate::sys::cached_pages(file, self.base, self.len) {
            Ok((_, 0)) => Some(0.0),
            Ok((cached, pages)) => Some(cached as f64 / pages as f64),
            Err(e) => {
                log::debug!("page-cache residency unknown: {e}");
                None
            }
        }
    }

    /// Lets the kernel free the page cache behind `offset..offset + len` of
    /// the range now; nothing for a remote blob. Only a hint: a failure
    /// changes nothing that is read.
    pub(crate) fn drop_cached(&self, offset: u64, len: u64) {
        if let (Some(file), Some(at)) = (self.file(), self.base.checked_add(offset)) {
            let len = len.min(self.len.saturating_sub(offset));
            if let Err(e) = crate::sys::drop_from_page_cache(file, at, len) {
                log::debug!("page cache not dropped: {e}");
            }
        }
    }

    /// Starts reading `offset..offset + len` of the range into the page
    /// cache, without waiting; nothing for a remote blob. Only a hint.
    pub(crate) fn read_ahead(&self, offset: u64, len: u64) {
        if let (Some(file), Some(at)) = (self.file(), self.base.checked_add(offset)) {
            let len = len.min(self.len.saturating_sub(offset));
            if let Err(e) = crate::sys::read_into_page_cache(file, at, len) {
                log::debug!("no read-ahead: {e}");
            }
        }
    }

    /// The meter counting this range's reads, if any.
    pub(crate) fn meter(&self) -> Option<&Arc<ReadMeter>> {
        self.meter.as_ref()
    }

    /// All of `file`, as long as it is now.
    #[cfg(test)]
    pub(crate) fn whole(file: File) -> io::Result<Region> {
        let len = file.metadata()?.len();
        Ok(Region::new(file, 0, len))
    }

    /// The part of this range from `offset` to `end` (to its end if
    /// `None`), as a range of its own: a frame decoded on another thread.
    pub(crate) fn slice(&self, offset: u64, end: Option<u64>) -> io::Result<Region> {
        let end = end.unwrap_or(self.len).min(self.len);
        let base = self
            .base
            .checked_add(offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflows"))?;
        // The same open file, and the same meter: the frames decoded on
        // other threads are bytes the pass reads, for the progress bar too.
        Ok(Region {
            file: self.file.clone(),
            base,
            len: end.saturating_sub(offset),
            meter: self.meter.clone(),
        })
    }

    /// The range's length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The open file the range is part of; `None` for a remote blob.
    pub(crate) fn file(&self) -> Option<&File> {
        match &self.file {
            Backing::File(file) => Some(file),
            Backing::Blob(_) | Backing::Pass(_) => None,
        }
    }

    /// Reads up to `buf.len()` bytes at `offset` within the range; 0 at or
    /// past its end.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let left = self.len.saturating_sub(offset);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let at = self
            .base
            .checked_add(offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflows"))?;
        let n = match &self.file {
            Backing::File(file) => file.read_at(&mut buf[..want], at)?,
            Backing::Blob(blob) => blob.read_at(&mut buf[..want], at)?,
            Backing::Pass(stream) => stream.read_at(&mut buf[..want], at)?,
        };
        if let Some(meter) = &self.meter {
            meter.advance(n as u64);
        }
        Ok(n)
    }

    /// Fills `buf` from `offset` within the range; `UnexpectedEof` if the
    /// range ends first.
    pub(crate) fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past the end of the layer",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_are_shifted_by_the_base_and_stop_at_the_end() {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(b"0123456789abcdef").expect("write");
        let region = Region::new(file, 4, 6);
        let mut buf = [0u8; 10];
        assert_eq!(region.read_at(&mut buf, 0).expect("read"), 6);
        assert_eq!(&buf[..6], b"456789");
        assert_eq!(region.read_at(&mut buf, 4).expect("read"), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(region.read_at(&mut buf, 6).expect("read"), 0);
        assert_eq!(region.read_at(&mut buf, u64::MAX).expect("read"), 0);
        let mut three = [0u8; 3];
        region.read_exact_at(&mut three, 1).expect("read");
        assert_eq!(&three, b"567");
        let err = region.read_exact_at(&mut three, 4).expect_err("past end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // A slice is a range of its own, never reaching past its parent.
        let slice = region.slice(2, Some(5)).expect("slice");
        assert_eq!(slice.read_at(&mut buf, 0).expect("read"), 3);
        assert_eq!(&buf[..3], b"678");
        let rest = region.slice(3, None).expect("slice");
        assert_eq!(rest.read_at(&mut buf, 0).expect("read"), 3);
        assert_eq!(&buf[..3], b"789");
        let past = region.slice(8, Some(100)).expect("slice");
        assert_eq!(past.read_at(&mut buf, 0).expect("read"), 0);
    }

    #[test]
    fn a_metered_copy_counts_its_reads_and_the_original_does_not() {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(b"0123456789abcdef").expect("write");
        let region = Region::new(file, 2, 10);
        let meter = Arc::new(ReadMeter::default());
        let metered = region.metered(Arc::clone(&meter));
        let mut buf = [0u8; 4];
        metered.read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"2345");
        assert_eq!(metered.read_at(&mut buf, 8).expect("read"), 2);
        assert_eq!(meter.done(), 6);
        region.read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(meter.done(), 6);
        assert!(region.meter().is_none());
        // A slice of the metered copy (a frame decoded on another thread)
        // counts on the same meter.
        let frame = metered.slice(4, Some(7)).expect("slice");
        assert_eq!(frame.read_at(&mut buf, 0).expect("read"), 3);
        assert_eq!(&buf[..3], b"678");
        assert_eq!(meter.done(), 9);
    }
}
