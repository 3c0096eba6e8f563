//! Reading a directory into a flat list of its entries: what a layer is
//! written from (`layerfs create`, `diff`) and what a directory layer
//! serves.
//!
//! Every directory is opened without following a symlink and checked to be
//! the one that was listed, then read and `lstat`ed through
//! `/proc/self/fd/N/NAME`: the kernel resolves that from the open
//! directory itself, so a component swapped for a symlink while the walk
//! runs cannot lead it outside the directory. File contents are read later
//! ([`Scan::open_file`]), and a file is only read if it is still the inode
//! that was listed, with the size and time that were listed.
//!
//! Entries are kept in writing order: depth first, each directory before
//! what it holds, names in byte order (the order `layerfs export` uses), so
//! the output never depends on the order the filesystem lists names.
//!
//! The walk records what is there and judges nothing: whiteout names, 0/0
//! character devices and overlayfs' xattrs are kept as they are, for the
//! directory layer to honour and for `create` to refuse. Only sockets,
//! which no layer can hold, are left out.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use xattr::FileExt;

use super::DirError;
use crate::tar::MemberKind;

/// Which inode an entry is: what hardlinks share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The filesystem's device number.
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
}

/// One directory entry as read, with everything a layer stores about it.
#[derive(Clone, Debug)]
pub struct ScanEntry {
    /// Path from the directory (`etc/passwd`); empty for the directory itself.
    pub path: Vec<u8>,
    /// What it is: never [`MemberKind::Hardlink`]; names of one inode share
    /// [`ScanEntry::id`].
    pub kind: MemberKind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Bytes of a regular file (0 for the other kinds).
    pub size: u64,
    /// Device major and minor numbers.
    pub rdev: (u32, u32),
    /// Names the inode has on its filesystem (inside the directory or not).
    pub nlink: u64,
    /// The inode.
    pub id: FileId,
    /// A symlink's target, as stored.
    pub target: Vec<u8>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the directory holding it (the root's is 0, itself).
    pub parent: usize,
    /// Index just past its subtree: entries `self..end` are it and, for a
    /// directory, everything below it.
    pub end: usize,
    /// Where its base name starts in `path`.
    name_at: usize,
}

impl ScanEntry {
    /// The entry's base name (empty for the root).
    pub fn name(&self) -> &[u8] {
        self.path.get(self.name_at..).unwrap_or_default()
    }
}

/// A directory, read; see the module docs.
#[derive(Debug)]
pub struct Scan {
    root: PathBuf,
    entries: Vec<ScanEntry>,
}

/// A directory being listed: its open handle and the names still to visit.
struct Frame {
    index: usize,
    dir: File,
    names: std::vec::IntoIter<OsString>,
}

impl Scan {
    /// Reads `root` (following it if it is a symlink, nothing below it).
    /// Sockets cannot be stored in a tar and are left out with a warning.
    pub fn read(root: &Path) -> Result<Scan, DirError> {
        let dir = open_root(root)?;
        Scan::read_open(root, dir)
    }

    /// [`Scan::read`] of a directory already opened (with [`open_root`]).
    pub fn read_open(root: &Path, dir: File) -> Result<Scan, DirError> {
        let meta = dir.metadata().map_err(|e| io_error(root, e))?;
        let xattrs = read_xattrs(root, dir.list_xattr(), |name| dir.get_xattr(name));
        let mut scan = Scan {
            root: root.to_path_buf(),
            entries: Vec::new(),
        };
        let mut root_entry = entry_from(Vec::new(), 0, 0, &meta, xattrs);
        root_entry.kind = MemberKind::Directory;
        scan.entries.push(root_entry);
        let names = scan.list(&dir, 0)?;
        let mut open = vec![Frame {
            index: 0,
            dir,
            names,
        }];
        while let Some(frame) = open.last_mut() {
            let Some(name) = frame.names.next() else {
                let index = frame.index;
                open.pop();
                let end = scan.entries.len();
                if let Some(entry) = scan.entries.get_mut(index) {
                    entry.end = end;
                }
                continue;
            };
            let parent = frame.index;
            if let Some(child) = scan.visit(&frame.dir, parent, &name)? {
                open.push(child);
            }
        }
        Ok(scan)
    }

    /// The directory read.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every entry, the root first, in writing order.
    pub fn entries(&self) -> &[ScanEntry] {
        &self.entries
    }

    /// The entries directly inside directory `index`, by index, in name order.
    pub fn children(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        let end = self.entries.get(index).map_or(index, |e| e.end);
        let mut next = index + 1;
        std::iter::from_fn(move || {
            let child = self.entries.get(next).filter(|_| next < end)?;
            let at = next;
            next = child.end.max(next + 1);
            Some(at)
        })
    }

    /// Where an entry is on disk.
    pub fn disk_path(&self, index: usize) -> PathBuf {
        let rel = self.entries.get(index).map_or(&[][..], |e| &e.path);
        if rel.is_empty() {
            return self.root.clone();
        }
        self.root.join(OsStr::from_bytes(rel))
    }

    /// The names of every inode with more than one name in the directory,
    /// by index in writing order: the hardlink groups.
    pub fn hardlink_groups(&self) -> HashMap<FileId, Vec<usize>> {
        let mut groups: HashMap<FileId, Vec<usize>> = HashMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.kind != MemberKind::Directory && e.nlink > 1 {
                groups.entry(e.id).or_default().push(i);
            }
        }
        groups.retain(|_, names| names.len() > 1);
        groups
    }

    /// Opens a regular file for its contents, if it is still the inode the
    /// walk listed, with the same size and time.
    pub fn open_file(&self, index: usize) -> Result<File, DirError> {
        let path = self.disk_path(index);
        let changed = || DirError::Changed { path: path.clone() };
        let entry = self.entries.get(index).ok_or_else(changed)?;
        let file = OpenOptions::new()
            .read(true)
            // Never block on a fifo put in the file's place.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| gone_or(&path, e))?;
        let meta = file.metadata().map_err(|e| io_error(&path, e))?;
        let same = meta.is_file()
            && file_id(&meta) == entry.id
            && meta.size() == entry.size
            && (meta.mtime(), nsec(&meta)) == (entry.mtime, entry.mtime_nsec);
        if same {
            Ok(file)
        } else {
            Err(changed())
        }
    }

    /// The names in directory `index` (open as `dir`), sorted by bytes.
    /// Drops every extended attribute `keep` refuses, given the entry's
    /// index and the attribute's name.
    pub fn retain_xattrs(&mut self, mut keep: impl FnMut(usize, &[u8]) -> bool) {
        for (i, entry) in self.entries.iter_mut().enumerate() {
            entry.xattrs.retain(|(name, _)| keep(i, name));
        }
    }

    fn list(&self, dir: &File, index: usize) -> Result<std::vec::IntoIter<OsString>, DirError> {
        let failed = |e| io_error(&self.disk_path(index), e);
        let mut names = std::fs::read_dir(proc_path(dir))
            .map_err(failed)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()
            .map_err(failed)?;
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(names.into_iter())
    }

    /// Records `name` of directory `parent` (open as `dir`); returns the
    /// frame to descend into if it is a directory.
    fn visit(
        &mut self,
        dir: &File,
        parent: usize,
        name: &OsStr,
    ) -> Result<Option<Frame>, DirError> {
        let index = self.entries.len();
        let parent_path = self.entries.get(parent).map_or(&[][..], |e| &e.path);
        let mut path = parent_path.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        let name_at = path.len();
        path.extend_from_slice(name.as_bytes());
        let disk = self.root.join(OsStr::from_bytes(&path));
        let at = proc_path(dir).join(name);
        let meta = std::fs::symlink_metadata(&at).map_err(|e| gone_or(&disk, e))?;
        let ft = meta.file_type();
        if ft.is_socket() {
            log::warn!("{}: a socket; left out", disk.display());
            return Ok(None);
        }
        let xattrs = read_xattrs(&disk, xattr::list(&at), |n| xattr::get(&at, n));
        let mut entry = entry_from(path, name_at, parent, &meta, xattrs);
        entry.end = index + 1;
        if entry.kind == MemberKind::Symlink {
            let target = std::fs::read_link(&at).map_err(|e| gone_or(&disk, e))?;
            entry.target = target.into_os_string().into_vec();
        }
        let kind = entry.kind;
        self.entries.push(entry);
        if kind != MemberKind::Directory {
            return Ok(None);
        }
        let child = open_dir(&at, false).map_err(|e| gone_or(&disk, e))?;
        let opened = child.metadata().map_err(|e| io_error(&disk, e))?;
        if file_id(&opened) != file_id(&meta) {
            return Err(DirError::Changed { path: disk });
        }
        let names = self.list(&child, index)?;
        Ok(Some(Frame {
            index,
            dir: child,
            names,
        }))
    }
}

/// An entry from its `lstat`; kinds other than directories, symlinks,
/// devices and fifos are regular files (sockets are filtered before).
fn entry_from(
    path: Vec<u8>,
    name_at: usize,
    parent: usize,
    meta: &Metadata,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
) -> ScanEntry {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        MemberKind::Directory
    } else if ft.is_symlink() {
        MemberKind::Symlink
    } else if ft.is_char_device() {
        MemberKind::CharDevice
    } else if ft.is_block_device() {
        MemberKind::BlockDevice
    } else if ft.is_fifo() {
        MemberKind::Fifo
    } else {
        MemberKind::Regular
    };
    let rdev = match kind {
        MemberKind::CharDevice | MemberKind::BlockDevice => {
            (libc::major(meta.rdev()), libc::minor(meta.rdev()))
        }
        _ => (0, 0),
    };
    ScanEntry {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        mtime_nsec: nsec(meta),
        size: if kind == MemberKind::Regular {
            meta.size()
        } else {
            0
        },
        rdev,
        nlink: meta.nlink(),
        id: file_id(meta),
        target: Vec::new(),
        xattrs,
        parent,
        end: 0,
        name_at,
    }
}

/// The inode `meta` describes.
pub(super) fn file_id(meta: &Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// The nanoseconds of `meta`'s modification time.
pub(super) fn nsec(meta: &Metadata) -> u32 {
    u32::try_from(meta.mtime_nsec()).unwrap_or(0)
}

/// Opens the directory the user named (following it if it is a symlink)
/// for [`Scan::read_open`]; a path that is not a directory is refused.
pub fn open_root(root: &Path) -> Result<File, DirError> {
    open_dir(root, true).map_err(|e| io_error(root, e))
}

/// Opens a directory for listing; `follow` only for the directory the user
/// named.
fn open_dir(path: &Path, follow: bool) -> io::Result<File> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | nofollow)
        .open(path)
}

/// The path through which the kernel reaches an open directory itself.
pub(super) fn proc_path(dir: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// Sorted extended attributes, all namespaces the caller may read (as root,
/// `trusted.*` too). One that cannot be read is left out with a warning; a
/// filesystem without xattrs has none.
fn read_xattrs(
    path: &Path,
    names: io::Result<xattr::XAttrs>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = match names {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Vec::new(),
        Err(e) => {
            log::warn!("{}: extended attributes not read: {e}", path.display());
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for name in names {
        let bytes = name.as_bytes();
        match get(&name) {
            Ok(Some(value)) => out.push((bytes.to_vec(), value)),
            Ok(None) => log::warn!(
                "{}: xattr {} vanished while being read; left out",
                path.display(),
                name.to_string_lossy()
            ),
            Err(e) => log::warn!(
                "{}: xattr {} left out: {e}",
                path.display(),
                name.to_string_lossy()
            ),
        }
    }
    out.sort();
    out
}

fn io_error(path: &Path, source: io::Error) -> DirError {
    DirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `Vanished` for a path the walk listed that is no longer there;
/// `Changed` if it is no longer what was listed; else the OS error.
fn gone_or(path: &Path, source: io::Error) -> DirError {
    match source.raw_os_error() {
        Some(libc::ENOENT) => DirError::Vanished {
            path: path.to_path_buf(),
        },
        Some(libc::ELOOP | libc::ENOTDIR) => DirError::Changed {
            path: path.to_path_buf(),
        },
        _ => io_error(path, source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_walk_keeps_markers_and_overlay_xattrs_and_orders_by_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs::create_dir_all(root.join("d/e")).expect("mkdir");
        fs::write(root.join("d/.wh.gone"), "").expect("write");
        fs::write(root.join("d/e/f"), "ff").expect("write");
        fs::write(root.join("d-"), "").expect("write");
        fs::write(root.join(OsStr::from_bytes(b"\xff")), "x").expect("write");
        xattr::set(root.join("d"), "user.overlay.opaque", b"y").expect("setfattr");
        let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).expect("bind");
        let scan = Scan::read(root).expect("walk");
        let paths: Vec<&[u8]> = scan.entries().iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(
            paths,
            [
                &b""[..],
                b"d",
                b"d/.wh.gone",
                b"d/e",
                b"d/e/f",
                b"d-",
                b"\xff"
            ],
            "depth first, names in byte order, the socket left out"
        );
        let d = &scan.entries()[1];
        assert_eq!(d.xattrs, [(b"user.overlay.opaque".to_vec(), b"y".to_vec())]);
        assert_eq!((d.kind, d.end), (MemberKind::Directory, 5));
        assert_eq!(scan.children(1).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(scan.entries()[4].size, 2);
        assert_eq!(scan.entries()[4].parent, 3);
    }

    #[test]
    fn a_file_replaced_after_the_walk_is_not_opened() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("f"), "old").expect("write");
        let scan = Scan::read(tmp.path()).expect("walk");
        scan.open_file(1).expect("unchanged");
        fs::write(tmp.path().join("g"), "new").expect("write");
        fs::rename(tmp.path().join("g"), tmp.path().join("f")).expect("mv");
        assert!(matches!(scan.open_file(1), Err(DirError::Changed { .. })));
        assert!(matches!(
            Scan::read(&tmp.path().join("nothing")),
            Err(DirError::Io { .. })
        ));
    }
}
