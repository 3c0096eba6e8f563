//! The on-disk cache of a remote blob's fetched chunks, so that a file read
//! again after the kernel dropped it, or by a later mount, is not fetched
//! again.
//!
//! One sparse file per blob (`<digest hex>.chunks`, the blob's bytes at
//! their own offsets) and a presence map beside it (`<digest hex>.have`,
//! one byte per chunk, written after the chunk's bytes). Nothing read back
//! is trusted: every chunk is checked against the stored index's sums
//! before use, so a crash between the two writes, a disk error or another
//! process's half-written chunk only costs a fetch.
//!
//! The directory is kept under a size bound: when a blob is opened, whole
//! blobs' files are deleted, least recently used first, until the rest
//! fits; while it is open, it stops storing chunks once the bound is met.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

use crate::cache::private;

/// Default bound on the chunk directory's size.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// One blob's stored chunks.
#[derive(Debug)]
pub(super) struct ChunkStore {
    data: File,
    have_file: File,
    have: Vec<AtomicU8>,
    chunk: u64,
    /// Bytes this store may still write before the directory's bound.
    room: AtomicI64,
}

impl ChunkStore {
    /// Opens (creating) the store of the blob `hex` (its digest's hex) of
    /// `len` bytes in chunks of `chunk` bytes, in `dir`, first trimming
    /// the directory to `max_bytes` (this blob's files kept).
    pub(super) fn open(
        dir: &Path,
        hex: &str,
        len: u64,
        chunk: u64,
        max_bytes: u64,
    ) -> io::Result<ChunkStore> {
        private::own_dir(dir)?;
        let data_path = dir.join(format!("{hex}.chunks"));
        let have_path = dir.join(format!("{hex}.have"));
        let used = trim(dir, hex, max_bytes)?;
        let data = open_own(&data_path)?;
        let have_file = open_own(&have_path)?;
        let count = usize::try_from(len.div_ceil(chunk)).map_err(io::Error::other)?;
        let mut marks = vec![0u8; count];
        // A map of another length is of another blob or damaged: start over.
        if have_file.metadata()?.len() == count as u64 {
            have_file.read_exact_at(&mut marks, 0)?;
        } else {
            have_file.set_len(0)?;
            have_file.set_len(count as u64)?;
            data.set_len(0)?;
        }
        data.set_len(len)?;
        // Touch both so that trimming sees this blob as recently used.
        let now = std::time::SystemTime::now();
        let _ = data.set_modified(now);
        let _ = have_file.set_modified(now);
        Ok(ChunkStore {
            data,
            have_file,
            have: marks.into_iter().map(AtomicU8::new).collect(),
            chunk,
            room: AtomicI64::new(i64::try_from(max_bytes.saturating_sub(used)).unwrap_or(i64::MAX)),
        })
    }

    /// Chunk `k`'s stored bytes into `buf` (its length), if it is marked
    /// stored and could be read; the caller checks them.
    pub(super) fn get(&self, k: u64, buf: &mut [u8]) -> bool {
        let marked = usize::try_from(k)
            .ok()
            .and_then(|i| self.have.get(i))
            .is_some_and(|m| m.load(Ordering::Relaxed) == 1);
        marked && self.data.read_exact_at(buf, k * self.chunk).is_ok()
    }

    /// Stores chunk `k`, if the bound leaves room; failures are not errors
    /// (the chunk is fetched again next time).
    pub(super) fn put(&self, k: u64, bytes: &[u8]) {
        let Some(mark) = usize::try_from(k).ok().and_then(|i| self.have.get(i)) else {
            return;
        };
        if mark.load(Ordering::Relaxed) == 1 {
            return;
        }
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        if self.room.fetch_sub(size, Ordering::Relaxed) < size {
            return;
        }
        if self.data.write_all_at(bytes, k * self.chunk).is_ok()
            && self.have_file.write_all_at(&[1], k).is_ok()
        {
            mark.store(1, Ordering::Relaxed);
        }
    }

    /// Forgets chunk `k` (its stored bytes failed their check).
    pub(super) fn forget(&self, k: u64) {
        if let Some(mark) = usize::try_from(k).ok().and_then(|i| self.have.get(i)) {
            mark.store(0, Ordering::Relaxed);
            let _ = self.have_file.write_all_at(&[0], k);
        }
    }
}

/// Opens (creating) one of the store's files. Something else under its
/// name (a symlink, a FIFO, another user's file: see `cache/private.rs`)
/// is removed with a warning and a fresh file made in its place: its
/// marks are then of another length, so the store starts over.
fn open_own(path: &Path) -> io::Result<File> {
    match private::open_write(path) {
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            log::warn!(
                "{}: {e}; removed, the blob's chunks will be fetched again",
                path.display()
            );
            fs::remove_file(path)?;
            private::open_write(path)
        }
        opened => opened,
    }
}

/// Deletes other blobs' stores, least recently used first, until the
/// directory holds at most `max_bytes`; returns what it then holds.
fn trim(dir: &Path, keep: &str, max_bytes: u64) -> io::Result<u64> {
    let mut blobs: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
    let mut used = 0u64;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_suffix(".chunks") else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        // Sparse: what the disk holds, not the blob's length.
        let bytes = meta.blocks().saturating_mul(512);
        used += bytes;
        if hex != keep {
            let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            blobs.push((when, hex.to_string(), bytes));
        }
    }
    blobs.sort();
    for (_, hex, bytes) in blobs {
        if used <= max_bytes {
            break;
        }
        let _ = fs::remove_file(dir.join(format!("{hex}.have")));
        if fs::remove_file(dir.join(format!("{hex}.chunks"))).is_ok() {
            used = used.saturating_sub(bytes);
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_persist_across_opens_and_the_bound_evicts_old_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), "aa", 10_000, 4096, 1 << 20).unwrap();
        let mut buf = vec![0u8; 4096];
        assert!(!store.get(1, &mut buf));
        store.put(1, &[7u8; 4096]);
        store.put(2, &[9u8; 10_000 - 8192]);
        assert!(store.get(1, &mut buf));
        assert_eq!(buf, vec![7u8; 4096]);
        drop(store);
        let again = ChunkStore::open(dir.path(), "aa", 10_000, 4096, 1 << 20).unwrap();
        assert!(again.get(1, &mut buf));
        let mut last = vec![0u8; 10_000 - 8192];
        assert!(again.get(2, &mut last));
        assert_eq!(last, vec![9u8; 10_000 - 8192]);
        again.forget(1);
        assert!(!again.get(1, &mut buf));
        drop(again);
        // Another length: the old marks are not trusted.
        let other = ChunkStore::open(dir.path(), "aa", 20_000, 4096, 1 << 20).unwrap();
        assert!(!other.get(2, &mut last));
        other.put(0, &[1u8; 4096]);
        drop(other);
        // A bound that "aa" alone exceeds: opening "bb" deletes "aa".
        std::thread::sleep(std::time::Duration::from_millis(10));
        let small = ChunkStore::open(dir.path(), "bb", 4096, 4096, 1).unwrap();
        assert!(!dir.path().join("aa.chunks").exists());
        // No room left: nothing is stored.
        small.put(0, &[3u8; 4096]);
        assert!(!small.get(0, &mut buf));
    }

    #[test]
    fn the_store_is_private_and_never_follows_what_it_finds() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let chunks = dir.path().join("chunks");
        // Someone's file the names are pointed at: left untouched.
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::create_dir(&chunks).unwrap();
        std::os::unix::fs::symlink(&victim, chunks.join("aa.chunks")).unwrap();
        std::os::unix::fs::symlink(&victim, chunks.join("aa.have")).unwrap();
        let store = ChunkStore::open(&chunks, "aa", 10_000, 4096, 1 << 20).unwrap();
        store.put(0, &[5u8; 4096]);
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&chunks), 0o700);
        for name in ["aa.chunks", "aa.have"] {
            let path = chunks.join(name);
            assert!(fs::symlink_metadata(&path).unwrap().is_file(), "{name}");
            assert_eq!(mode(&path), 0o600, "{name}");
        }
        let mut buf = vec![0u8; 4096];
        assert!(store.get(0, &mut buf));
    }
}
