//! Where the snapshotter keeps things under its root, and what a
//! snapshot's directory costs.
//!
//! ```text
//! ROOT/metadata.json        the snapshots (store.rs)
//! ROOT/snapshots/ID/fs      an active snapshot's upper; a committed one's layer
//! ROOT/snapshots/ID/work    overlayfs' work directory beside it
//! ROOT/mounts/HASH          a layerfs mount of one chain of layers (chains.rs)
//! ```
//!
//! Only what is named here is ever created or deleted: `Cleanup` removes
//! the snapshot directories no snapshot owns and nothing else.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The snapshotter's directories.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root` (absolute), its directories created.
    pub fn create(root: &Path) -> io::Result<Layout> {
        let layout = Layout {
            root: root.to_path_buf(),
        };
        for dir in [layout.root.clone(), layout.snapshots(), layout.mounts()] {
            std::fs::create_dir_all(&dir)?;
        }
        // Containers' files, uppers included: for root only, as
        // containerd keeps its own root (the kernel's overlay reaches the
        // lowers with the mounter's credentials).
        std::fs::set_permissions(&layout.root, std::fs::Permissions::from_mode(0o700))?;
        Ok(layout)
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Where chain mounts live.
    pub fn mounts(&self) -> PathBuf {
        self.root.join("mounts")
    }

    /// Snapshot `id`'s directory.
    pub fn snapshot(&self, id: u64) -> PathBuf {
        self.snapshots().join(id.to_string())
    }

    /// Snapshot `id`'s files: an upper, or a committed layer.
    pub fn fs(&self, id: u64) -> PathBuf {
        self.snapshot(id).join("fs")
    }

    /// Snapshot `id`'s overlayfs work directory.
    pub fn work(&self, id: u64) -> PathBuf {
        self.snapshot(id).join("work")
    }

    /// Makes snapshot `id`'s `fs` and `work` directories.
    pub fn make_snapshot(&self, id: u64) -> io::Result<()> {
        std::fs::create_dir(self.snapshot(id))?;
        std::fs::create_dir(self.fs(id))?;
        std::fs::create_dir(self.work(id))
    }

    /// Deletes snapshot `id`'s directory, if it has one.
    pub fn remove_snapshot(&self, id: u64) -> io::Result<()> {
        match std::fs::remove_dir_all(self.snapshot(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes every snapshot directory whose id is not in `owned`;
    /// returns how many went.
    pub fn remove_unowned(&self, owned: &HashSet<u64>) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(self.snapshots())? {
            let entry = entry?;
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id.filter(|id| !owned.contains(id)) {
                log::info!("cleanup: removing {}", entry.path().display());
                self.remove_snapshot(id)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Bytes allocated and inodes used below `dir` (each inode counted once,
/// symlinks not followed, other filesystems not entered), as containerd's
/// own snapshotters measure a snapshot.
pub fn disk_usage(dir: &Path) -> io::Result<(i64, i64)> {
    let device = std::fs::symlink_metadata(dir)?.dev();
    let mut seen = HashSet::new();
    let (mut bytes, mut inodes) = (0i64, 0i64);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.dev() != device || !seen.insert(meta.ino()) {
            continue;
        }
        inodes += 1;
        bytes = bytes.saturating_add(i64::try_from(meta.blocks() * 512).unwrap_or(i64::MAX));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_hardlinked_files_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("l")).unwrap();
        let (bytes, inodes) = disk_usage(dir.path()).unwrap();
        assert_eq!(inodes, 3, "the directory, a (= b) and l");
        assert!((100_000..200_000).contains(&bytes), "{bytes}");
    }

    #[test]
    fn cleanup_removes_only_unowned_snapshot_directories() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the root is root's only");
        layout.make_snapshot(1).unwrap();
        layout.make_snapshot(2).unwrap();
        std::fs::create_dir(dir.path().join("snapshots/not-ours")).unwrap();
        let removed = layout.remove_unowned(&HashSet::from([2])).unwrap();
        assert_eq!(removed, 1);
        assert!(!layout.snapshot(1).exists());
        assert!(layout.fs(2).is_dir());
        assert!(dir.path().join("snapshots/not-ours").is_dir());
    }
}
