//! Noticing that a layer file changed after it was indexed.
//!
//! A mount keeps every layer file open for its whole life, so a layer that
//! is deleted, or replaced by renaming another file over its name, keeps
//! serving the bytes it was indexed from: the open descriptor holds the old
//! inode. What can go wrong is that inode itself changing underneath:
//!
//! * **truncated** (its size shrank): the bytes before the cut are what
//!   they were, so reads of them are still served; a read that needs bytes
//!   past the cut fails, and so, without reading, does every later read that
//!   ends at or past the lowest failed read's end (decoders and offsets
//!   only ever move forward through the file, so nothing there can be
//!   reached, and a single-frame layer would otherwise decode up to the
//!   cut again on every such read);
//! * **modified** (its mtime moved, or it grew): any byte may have changed,
//!   so no read of the layer is served any more; this is sticky.
//!
//! Each read checks the file's size and mtime with `fstat` *after* reading
//! (about a microsecond), so a write that landed before or during the read
//! is seen: the kernel updates mtime before it copies the written data in.
//!
//! What this cannot see: a layer rewritten in place that keeps its size and
//! gets its old mtime back (`touch -r`, `utimensat`), or that is truncated
//! and then rewritten shorter. For a plain tar such bytes are served as
//! they are now; compressed layers mostly fail to decode them instead (a
//! decode error is an EIO too). Only ctime would tell, and ctime also
//! moves on a harmless rename, link, unlink or chmod.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the layer file looks like now, next to when it was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Drift {
    /// Same size and mtime.
    Intact,
    /// Shorter than it was: `now` bytes.
    Truncated { now: u64 },
    /// Modified in place: another mtime or a larger size (`now` bytes).
    Modified { now: u64 },
}

/// The identity of a layer file when it was opened, and what later reads
/// have learned about how it changed since.
#[derive(Debug)]
pub(super) struct Watch {
    len: u64,
    mtime: (i64, i64),
    /// Set once a read saw the file modified: nothing is served after.
    modified: AtomicBool,
    /// The lowest decompressed end offset of a read that failed while the
    /// file was truncated (`u64::MAX`: none).
    cut_at: AtomicU64,
}

impl Watch {
    /// Watches the file `meta` describes (taken when it was opened).
    pub(super) fn new(meta: &Metadata) -> Watch {
        Watch {
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            modified: AtomicBool::new(false),
            cut_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether a read ending at decompressed offset `end` is already known
    /// to fail (see [`Watch::check`] for why), so it need not be tried.
    pub(super) fn refuses(&self, end: u64) -> bool {
        self.modified.load(Ordering::Relaxed) || end >= self.cut_at.load(Ordering::Relaxed)
    }

    /// Compares the open file with what it was. A modification, once seen,
    /// is reported from then on, whatever the file looks like later.
    pub(super) fn check(&self, file: &File) -> io::Result<Drift> {
        let meta = file.metadata()?;
        let now = meta.len();
        let modified = self.modified.load(Ordering::Relaxed)
            || now > self.len
            || (now == self.len && (meta.mtime(), meta.mtime_nsec()) != self.mtime);
        if modified {
            self.modified.store(true, Ordering::Relaxed);
            return Ok(Drift::Modified { now });
        }
        Ok(if now < self.len {
            Drift::Truncated { now }
        } else {
            Drift::Intact
        })
    }

    /// Records that a read ending at decompressed offset `end` failed while
    /// the file was truncated: every read ending there or later fails too.
    pub(super) fn cut_before(&self, end: u64) {
        self.cut_at.fetch_min(end, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn watched(bytes: &[u8]) -> (tempfile::NamedTempFile, File, Watch) {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        let file = File::open(f.path()).expect("open");
        let watch = Watch::new(&file.metadata().expect("stat"));
        (f, file, watch)
    }

    #[test]
    fn shrinking_is_a_truncation_and_a_new_mtime_a_modification() {
        let (f, file, watch) = watched(&[7; 1000]);
        assert_eq!(watch.check(&file).expect("stat"), Drift::Intact);
        f.as_file().set_len(400).expect("truncate");
        assert_eq!(
            watch.check(&file).expect("stat"),
            Drift::Truncated { now: 400 }
        );
        assert!(!watch.refuses(10), "a truncation alone refuses nothing");
        let (f, file, watch) = watched(&[7; 1000]);
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        f.as_file().set_modified(later).expect("touch");
        assert_eq!(
            watch.check(&file).expect("stat"),
            Drift::Modified { now: 1000 }
        );
        // Sticky, even if the mtime is put back.
        f.as_file()
            .set_modified(std::time::SystemTime::UNIX_EPOCH)
            .expect("touch back");
        assert!(watch.refuses(0));
        assert!(matches!(
            watch.check(&file).expect("stat"),
            Drift::Modified { .. }
        ));
    }

    #[test]
    fn growing_is_a_modification() {
        let (f, file, watch) = watched(&[7; 1000]);
        f.as_file().set_len(2000).expect("extend");
        assert_eq!(
            watch.check(&file).expect("stat"),
            Drift::Modified { now: 2000 }
        );
    }

    #[test]
    fn a_failed_read_past_the_cut_fails_every_read_ending_later() {
        let (_f, _file, watch) = watched(&[7; 1000]);
        watch.cut_before(500);
        assert!(!watch.refuses(499));
        assert!(watch.refuses(500));
        assert!(watch.refuses(9000));
        watch.cut_before(800);
        assert!(!watch.refuses(499), "the lowest cut stays");
    }
}
