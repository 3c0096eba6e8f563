//! Reads of a directory layer's virtual stream, served from its files.
//!
//! The stream is the layer's regular files end to end, in walk order; a
//! sorted table of where each starts turns a stream offset into a file and
//! a position in it (a binary search). A file is opened through the layer's
//! open directory (`/proc/self/fd/N/path`, the last component never
//! followed) and used only if it is the inode the walk listed, with the
//! size and mtime listed: a symlink swapped in for a parent on the way can
//! only lead to another inode, which is refused. After every read the file
//! is checked again (an `fstat`, about a microsecond), so a write that
//! landed before or during the read is seen, as for tar layers
//! (`source/watch.rs`).
//!
//! A file that changed fails every read from then on (its bytes may be
//! anything now; remounting shows the new contents). Reads never go past a
//! file's listed size: a file that grew is refused, not read further.
//!
//! Descriptors of recently read files are kept, at most a bounded number
//! (least recently used go first), so reading a file in 128 KiB requests
//! opens it once, and a tree of a million files never holds a million
//! descriptors.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::walk::{file_id, nsec, proc_path, FileId, ScanEntry};
use crate::source::SourceError;

/// How many files a directory layer keeps open by default: enough for
/// every FUSE thread to stream a few files at once, far below the usual
/// 1024-descriptor soft limit.
pub const DEFAULT_OPEN_FILES: usize = 256;

/// One regular file with data, as the walk listed it.
#[derive(Debug)]
pub(super) struct Slot {
    /// Where its bytes start in the virtual stream.
    pub(super) start: u64,
    /// Its size when listed.
    pub(super) size: u64,
    /// Its path from the layer's directory.
    rel: Box<[u8]>,
    /// Its path on disk, for messages.
    disk: PathBuf,
    id: FileId,
    mtime: (i64, u32),
    /// Set once a check saw it changed: nothing more is read from it.
    changed: AtomicBool,
}

impl Slot {
    /// The file of walk entry `entry` (at `disk`), starting at `start`.
    pub(super) fn new(start: u64, entry: &ScanEntry, disk: PathBuf) -> Slot {
        Slot {
            start,
            size: entry.size,
            rel: entry.path.clone().into_boxed_slice(),
            disk,
            id: entry.id,
            mtime: (entry.mtime, entry.mtime_nsec),
            changed: AtomicBool::new(false),
        }
    }

    fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    /// Why the open file `file` is not what was listed, if it is not.
    fn drift(&self, file: &File) -> io::Result<Option<String>> {
        let meta = file.metadata()?;
        Ok(if !meta.is_file() || file_id(&meta) != self.id {
            Some("it is another file now".to_string())
        } else if meta.size() != self.size {
            Some(format!("{} bytes, now {}", self.size, meta.size()))
        } else if (meta.mtime(), nsec(&meta)) != self.mtime {
            Some("new mtime".to_string())
        } else {
            None
        })
    }

    fn changed_error(&self, why: String) -> SourceError {
        self.changed.store(true, Ordering::Relaxed);
        SourceError::Changed {
            path: self.disk.clone(),
            why,
        }
    }
}

/// The files of one directory layer, readable at stream offsets.
#[derive(Debug)]
pub(super) struct DirFiles {
    /// The layer's directory, for messages.
    path: PathBuf,
    /// The layer's directory, open: files are opened through it.
    root: File,
    /// Sorted by `start`, no overlaps, no empty files.
    table: Vec<Slot>,
    open: Mutex<OpenFiles>,
}

/// Descriptors kept between reads, by slot, with when each was last used.
#[derive(Debug)]
struct OpenFiles {
    files: HashMap<usize, (Arc<File>, u64)>,
    clock: u64,
    limit: usize,
}

impl OpenFiles {
    fn get(&mut self, slot: usize) -> Option<Arc<File>> {
        self.clock += 1;
        let clock = self.clock;
        self.files.get_mut(&slot).map(|(file, used)| {
            *used = clock;
            Arc::clone(file)
        })
    }

    /// Keeps `file`; if full, returns the least recently used one, for the
    /// caller to close once the lock is released. The scan for it costs far
    /// less than the `open` it saves.
    fn put(&mut self, slot: usize, file: Arc<File>) -> Option<Arc<File>> {
        let mut evicted = None;
        if self.files.len() >= self.limit {
            let oldest = self
                .files
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(&slot, _)| slot);
            evicted = oldest.and_then(|oldest| self.files.remove(&oldest));
        }
        self.clock += 1;
        self.files.insert(slot, (file, self.clock));
        evicted.map(|(file, _)| file)
    }
}

impl DirFiles {
    /// Serves `table` (sorted by start, as the walk lays files out) from
    /// the files under the open directory `root` (at `path`), keeping at
    /// most `limit` of them open.
    pub(super) fn new(path: &Path, root: File, table: Vec<Slot>, limit: usize) -> DirFiles {
        DirFiles {
            path: path.to_path_buf(),
            root,
            table,
            open: Mutex::new(OpenFiles {
                files: HashMap::new(),
                clock: 0,
                limit: limit.max(1),
            }),
        }
    }

    /// How many descriptors are kept now.
    pub(super) fn open_count(&self) -> usize {
        self.lock().files.len()
    }

    /// Fills `buf` from stream offset `offset`, across files if it must.
    pub(super) fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset.saturating_add(done as u64);
            let n = self.table.partition_point(|s| s.end() <= at);
            let slot = self.table.get(n).filter(|s| s.start <= at).ok_or_else(|| {
                SourceError::PastEnd {
                    path: self.path.clone(),
                    offset,
                    len: buf.len(),
                }
            })?;
            let within = at - slot.start;
            let left = usize::try_from(slot.end() - at).unwrap_or(usize::MAX);
            let take = left.min(buf.len() - done);
            let dst = buf.get_mut(done..done + take).unwrap_or_default();
            self.read_slot(n, slot, within, dst)?;
            done += take;
        }
        Ok(())
    }

    /// Fills `dst` from position `pos` of the file of slot `n`, which the
    /// caller has checked lies within its listed size.
    fn read_slot(
        &self,
        n: usize,
        slot: &Slot,
        pos: u64,
        dst: &mut [u8],
    ) -> Result<(), SourceError> {
        if slot.changed.load(Ordering::Relaxed) {
            return Err(SourceError::Changed {
                path: slot.disk.clone(),
                why: "seen changed by an earlier read".to_string(),
            });
        }
        let file = self.file(n, slot)?;
        let read = file.read_exact_at(dst, pos);
        let drift = slot.drift(&file).map_err(|source| SourceError::Io {
            path: slot.disk.clone(),
            source,
        })?;
        if let Some(why) = drift {
            let kept = self.lock().files.remove(&n);
            drop(kept);
            return Err(slot.changed_error(why));
        }
        read.map_err(|source| match source.kind() {
            // Shorter than listed, yet stat says it is not: it shrank and
            // grew back between the read and the check.
            io::ErrorKind::UnexpectedEof => slot.changed_error("it was truncated".to_string()),
            _ => SourceError::Io {
                path: slot.disk.clone(),
                source,
            },
        })
    }

    /// The file whose bytes are `start..start + size` of the stream,
    /// opened anew and checked to be what the walk listed, for the kernel
    /// to read itself (FUSE passthrough). `None` if no file lies exactly
    /// there; a file seen changed, now or by an earlier read, is an error.
    pub(super) fn open_whole(&self, start: u64, size: u64) -> Option<Result<File, SourceError>> {
        let n = self.table.partition_point(|s| s.start < start);
        let slot = self
            .table
            .get(n)
            .filter(|s| s.start == start && s.size == size)?;
        if slot.changed.load(Ordering::Relaxed) {
            return Some(Err(SourceError::Changed {
                path: slot.disk.clone(),
                why: "seen changed by an earlier read".to_string(),
            }));
        }
        Some(self.open_checked(slot))
    }

    /// The open file of slot `n`: kept from an earlier read, or opened now
    /// and checked to be what the walk listed.
    fn file(&self, n: usize, slot: &Slot) -> Result<Arc<File>, SourceError> {
        if let Some(file) = self.lock().get(n) {
            return Ok(file);
        }
        let file = Arc::new(self.open_checked(slot)?);
        let evicted = self.lock().put(n, Arc::clone(&file));
        drop(evicted);
        Ok(file)
    }

    /// Opens the file of `slot` through the layer's open directory, never
    /// following a symlink in its place, and checks that it is the inode,
    /// size and mtime the walk listed.
    fn open_checked(&self, slot: &Slot) -> Result<File, SourceError> {
        let at = proc_path(&self.root).join(std::ffi::OsStr::from_bytes(&slot.rel));
        let file = OpenOptions::new()
            .read(true)
            // Never block on a fifo put in the file's place; never follow a
            // symlink put there.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(at);
        let file = match file {
            Ok(file) => file,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
                ) =>
            {
                return Err(slot.changed_error("it is gone".to_string()))
            }
            Err(source) => {
                return Err(SourceError::Io {
                    path: slot.disk.clone(),
                    source,
                })
            }
        };
        let drift = slot.drift(&file).map_err(|source| SourceError::Io {
            path: slot.disk.clone(),
            source,
        })?;
        if let Some(why) = drift {
            return Err(slot.changed_error(why));
        }
        Ok(file)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenFiles> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::super::walk::Scan;
    use super::super::DirLayer;
    use super::*;
    use std::io::Write;

    /// A directory with files of these contents, named `f0`, `f1`, ...
    fn dir_with(contents: &[&[u8]]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (i, c) in contents.iter().enumerate() {
            std::fs::write(tmp.path().join(format!("f{i}")), c).expect("write");
        }
        tmp
    }

    fn indexed(dir: &Path, open_files: usize) -> DirLayer {
        let mut layer = DirLayer::open(dir).expect("open");
        layer.set_open_files(open_files);
        layer.index().expect("index");
        layer
    }

    #[test]
    fn offsets_map_to_files_and_reads_cross_them() {
        let tmp = dir_with(&[b"abc", b"", b"defgh", b"ij"]);
        let layer = indexed(tmp.path(), 8);
        let stream = b"abcdefghij";
        for start in 0..stream.len() {
            for len in 0..=stream.len() - start {
                let mut buf = vec![0u8; len];
                layer
                    .read_exact_at(start as u64, &mut buf)
                    .expect("in range");
                assert_eq!(buf, stream[start..start + len], "{start}+{len}");
            }
        }
        let mut buf = [0u8; 2];
        assert!(matches!(
            layer.read_exact_at(9, &mut buf),
            Err(SourceError::PastEnd { .. })
        ));
        assert!(matches!(
            layer.read_exact_at(u64::MAX, &mut buf),
            Err(SourceError::PastEnd { .. })
        ));
    }

    #[test]
    fn open_descriptors_stay_within_the_limit() {
        let names: Vec<Vec<u8>> = (0..20).map(|i| vec![b'a' + i; 10]).collect();
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let tmp = dir_with(&refs);
        let layer = indexed(tmp.path(), 3);
        // Names sort f0, f1, f10, f11, ...: read every file, twice.
        let scan = Scan::read(tmp.path()).expect("walk");
        for _ in 0..2 {
            for (i, e) in scan.entries().iter().skip(1).enumerate() {
                let mut buf = [0u8; 10];
                layer.read_exact_at(i as u64 * 10, &mut buf).expect("read");
                let expected = std::fs::read(scan.disk_path(i + 1)).expect("read back");
                assert_eq!(buf[..], expected[..], "{:?}", e.path);
                assert!(layer.open_file_count() <= 3);
            }
        }
        assert_eq!(layer.open_file_count(), 3);
    }

    #[test]
    fn a_changed_file_fails_and_keeps_failing_while_others_read() {
        let tmp = dir_with(&[b"0123456789", b"other"]);
        let layer = indexed(tmp.path(), 8);
        let mut buf = [0u8; 4];
        layer.read_exact_at(2, &mut buf).expect("intact");
        let f0 = tmp.path().join("f0");
        // Same size, new bytes and mtime.
        let mut file = OpenOptions::new().write(true).open(&f0).expect("open");
        file.write_all(b"XXXX").expect("write");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3);
        file.set_modified(later).expect("mtime");
        let err = layer.read_exact_at(0, &mut buf).expect_err("changed");
        assert!(
            matches!(err, SourceError::Changed { .. }) && err.to_string().contains("f0"),
            "{err}"
        );
        assert_eq!(err.kind(), "changed");
        let mut other = [0u8; 5];
        layer.read_exact_at(10, &mut other).expect("the other file");
        assert_eq!(&other, b"other");
        // Put back as it was: still refused.
        file.set_modified(std::time::UNIX_EPOCH).expect("mtime");
        assert!(layer.read_exact_at(0, &mut buf).is_err());
    }

    #[test]
    fn grown_shrunk_replaced_and_deleted_files_are_refused() {
        type Change = fn(&Path);
        let changes: [(&str, Change); 4] = [
            ("grown", |p| {
                let mut f = OpenOptions::new().append(true).open(p).expect("open");
                f.write_all(b"more").expect("append");
            }),
            ("shrunk", |p| {
                File::options()
                    .write(true)
                    .open(p)
                    .and_then(|f| f.set_len(3))
                    .expect("truncate");
            }),
            ("replaced", |p| {
                let new = p.with_extension("new");
                std::fs::write(&new, b"0123456789").expect("write");
                std::fs::rename(&new, p).expect("rename");
            }),
            ("deleted", |p| std::fs::remove_file(p).expect("rm")),
        ];
        for (what, change) in changes {
            let tmp = dir_with(&[b"0123456789"]);
            // No descriptor kept: every read opens the file anew.
            let layer = indexed(tmp.path(), 1);
            let mut buf = [0u8; 10];
            change(&tmp.path().join("f0"));
            let err = layer.read_exact_at(0, &mut buf).expect_err(what);
            assert!(matches!(err, SourceError::Changed { .. }), "{what}: {err}");
        }
    }

    #[test]
    fn a_symlink_swapped_in_for_a_parent_leads_nowhere() {
        let outside = dir_with(&[b"secret!!!!"]);
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("d")).expect("mkdir");
        std::fs::write(tmp.path().join("d/f0"), b"0123456789").expect("write");
        let layer = indexed(tmp.path(), 4);
        std::fs::rename(tmp.path().join("d"), tmp.path().join("gone")).expect("mv");
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("d")).expect("symlink");
        let mut buf = [0u8; 10];
        let err = layer
            .read_exact_at(0, &mut buf)
            .expect_err("not the listed inode");
        assert!(matches!(err, SourceError::Changed { .. }), "{err}");
        assert_ne!(&buf, b"secret!!!!");
    }
}
