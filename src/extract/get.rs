//! `layerfs get`: paths of the tree, with their subtrees, made real below
//! a destination directory, as GNU tar extracts them from an export.
//!
//! Everything is created relative to an open directory descriptor, each
//! directory opened with `O_NOFOLLOW`: a symlink already in the way, or
//! one the tree itself extracts, is refused, never followed, so nothing
//! is written outside the destination. A path asked for below a symlink
//! of the tree is refused: GNU tar finds no such member in an export. A node with several names inside
//! what is extracted keeps them as hardlinks. A directory's mode and time
//! are set once its entries are in, so that a read-only directory can
//! still be filled and its time stays as stored.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{at, resolve, ExtractError};
use crate::export::{copy_range, ExportError, FileRef, COPY_BUFFER};
use crate::stack::Stack;
use crate::tar::SparseSegment;
use crate::tree::{path, Ino, Node, NodeKind, Tree, ROOT_INO};

/// Counts of what `get` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Got {
    /// Entries made, hardlinks included.
    pub entries: u64,
    /// Entries or paths that failed (each reported).
    pub failed: u64,
}

/// Extracts `paths` (each with its subtree) into `dest`, at their place in
/// the tree (`etc/ssl` becomes `dest/etc/ssl`; missing parents are made
/// 0755). What fails is handed to `report`, and the rest still extracted.
pub fn get(
    stack: &Stack,
    paths: &[Vec<u8>],
    dest: &Path,
    report: &mut dyn FnMut(&ExtractError),
) -> Result<Got, ExtractError> {
    let root = at::open_root(dest).map_err(|e| ExtractError::Write {
        path: dest.to_path_buf(),
        why: e.to_string(),
    })?;
    let mut getter = Getter {
        stack,
        tree: stack.tree(),
        dest,
        root: &root,
        as_root: crate::sys::is_root(),
        first_names: HashMap::new(),
        buffer: vec![0; COPY_BUFFER],
        got: Got::default(),
        report,
    };
    for wanted in paths {
        if let Err(e) = getter.path(wanted) {
            getter.failed(&e);
        }
    }
    Ok(getter.got)
}

/// A failure to make `rel` below `dest`.
fn write_error(dest: &Path, rel: &[u8], e: &io::Error) -> ExtractError {
    let why = match e.raw_os_error() {
        Some(libc::ELOOP) => "a symlink is in the way (not followed)".to_string(),
        _ => e.to_string(),
    };
    ExtractError::Write {
        path: dest.join(OsStr::from_bytes(rel)),
        why,
    }
}

struct Getter<'a> {
    stack: &'a Stack,
    tree: &'a Tree,
    dest: &'a Path,
    root: &'a OwnedFd,
    /// Owners and devices are only for root, as for tar.
    as_root: bool,
    /// Where the first name of each multiply-linked file went, from `root`.
    first_names: HashMap<Ino, Vec<u8>>,
    buffer: Vec<u8>,
    got: Got,
    report: &'a mut dyn FnMut(&ExtractError),
}

impl Getter<'_> {
    fn failed(&mut self, e: &ExtractError) {
        self.got.failed += 1;
        (self.report)(e);
    }

    /// One path asked for: its parents made (or opened, never through a
    /// symlink), then its subtree. A path below a symlink of the tree is
    /// refused, as GNU tar finds nothing at it in an export.
    fn path(&mut self, wanted: &[u8]) -> Result<(), ExtractError> {
        let comps = path::components(wanted);
        self.no_symlink_parent(wanted, &comps)?;
        // With no symlink among the parents, `..` means the same lexically
        // as in the tree: the path is looked up as `comps` places it.
        let ino = resolve(self.tree, &comps.join(&b'/'), false)?;
        let Some((name, parents)) = comps.split_last() else {
            // The root: its entries go straight into the destination.
            let root = self.root;
            for entry in self.tree.entries(ino) {
                let name = self.tree.name(entry).to_vec();
                self.entry(root.as_fd(), &name, entry.ino, &name);
            }
            return Ok(());
        };
        let mut rel: Vec<u8> = Vec::new();
        let mut dir: Option<OwnedFd> = None;
        for parent in parents {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(parent);
            let here = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
            let opened = at::mkdir(here, parent, 0o755).and_then(|()| at::open_dir(here, parent));
            dir = Some(opened.map_err(|e| {
                // O_DIRECTORY says ENOTDIR where O_NOFOLLOW met a symlink.
                let is_link = self.dest.join(OsStr::from_bytes(&rel)).is_symlink();
                let e = if is_link {
                    io::Error::from_raw_os_error(libc::ELOOP)
                } else {
                    e
                };
                write_error(self.dest, &rel, &e)
            })?);
        }
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        let here = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
        self.entry(here, name, ino, &rel);
        Ok(())
    }

    /// Refuses `wanted` if one of its parents (`comps` but the last) is a
    /// symlink in the tree.
    fn no_symlink_parent(&self, wanted: &[u8], comps: &[&[u8]]) -> Result<(), ExtractError> {
        let tree = self.tree;
        let mut here = ROOT_INO;
        for (n, name) in comps.iter().enumerate().take(comps.len().saturating_sub(1)) {
            let Some(ino) = tree.lookup(here, name) else {
                return Ok(());
            };
            if let Some(target) = tree.symlink_target(ino) {
                return Err(ExtractError::ThroughSymlink {
                    path: wanted.to_vec(),
                    link: comps[..=n].join(&b'/'),
                    target: target.to_vec(),
                });
            }
            here = ino;
        }
        Ok(())
    }

    /// Makes `name` in `dir` (at `rel` from the destination) as node `ino`,
    /// and a directory's entries; a failure is reported and the rest done.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &[u8], ino: Ino, rel: &[u8]) {
        if let Err(e) = self.make(dir, name, ino, rel) {
            self.failed(&e);
        }
    }

    fn make(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        ino: Ino,
        rel: &[u8],
    ) -> Result<(), ExtractError> {
        let tree = self.tree;
        let Some(node) = tree.node(ino) else {
            return Ok(());
        };
        let dest = self.dest;
        let io = |e: io::Error| write_error(dest, rel, &e);
        if node.kind() == NodeKind::Directory {
            at::mkdir(dir, name, 0o700).map_err(io)?;
            let opened = at::open_dir(dir, name).map_err(io)?;
            self.got.entries += 1;
            for entry in tree.entries(ino) {
                let child = tree.name(entry);
                let child_rel = [rel, b"/", child].concat();
                self.entry(opened.as_fd(), child, entry.ino, &child_rel);
            }
            let dest = self.dest;
            let io = |e: io::Error| write_error(dest, rel, &e);
            self.finish_open(opened.as_fd(), ino, node).map_err(io)?;
            return at::set_fd_mtime(opened.as_fd(), node.mtime, node.mtime_nsec).map_err(io);
        }
        at::remove(dir, name).map_err(io)?;
        if node.nlink > 1 {
            if let Some(first) = self.first_names.get(&ino) {
                at::link(self.root.as_fd(), first, dir, name).map_err(io)?;
                self.got.entries += 1;
                return Ok(());
            }
            self.first_names.insert(ino, rel.to_vec());
        }
        self.got.entries += 1;
        match node.kind() {
            NodeKind::File => self.file(dir, name, ino, node, rel),
            NodeKind::Symlink => {
                let target = tree.symlink_target(ino).unwrap_or_default();
                at::symlink(target, dir, name).map_err(io)?;
                self.finish_at(dir, name, ino, node, false).map_err(io)
            }
            kind => {
                let type_bits = match kind {
                    NodeKind::CharDevice => libc::S_IFCHR,
                    NodeKind::BlockDevice => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                at::mknod(dir, name, type_bits | (node.mode & 0o7777), node.rdev()).map_err(io)?;
                self.finish_at(dir, name, ino, node, true).map_err(io)
            }
        }
    }

    /// A regular file: its bytes (a sparse file's data regions only, its
    /// holes left holes), then its metadata.
    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        ino: Ino,
        node: &Node,
        rel: &[u8],
    ) -> Result<(), ExtractError> {
        let dest = self.dest;
        let io = |e: io::Error| write_error(dest, rel, &e);
        let out = at::create_file(dir, name).map_err(io)?;
        let regions = match self.tree.file_data(ino).and_then(|data| data.sparse) {
            Some(segments) => segments.to_vec(),
            None => vec![SparseSegment {
                offset: 0,
                len: node.size,
            }],
        };
        let file = FileRef {
            ino,
            node,
            path: rel,
        };
        for region in &regions {
            let mut pos = region.offset;
            copy_range(self.stack, &file, region, &mut self.buffer, &mut |chunk| {
                out.write_all_at(chunk, pos)?;
                pos += chunk.len() as u64;
                Ok(())
            })
            .map_err(|e| match e {
                ExportError::Write(e) => write_error(self.dest, rel, &e),
                e => ExtractError::Read(e),
            })?;
        }
        let dest = self.dest;
        let io = |e: io::Error| write_error(dest, rel, &e);
        out.set_len(node.size).map_err(io)?;
        self.finish_open(out.as_fd(), ino, node).map_err(io)?;
        at::set_fd_mtime(out.as_fd(), node.mtime, node.mtime_nsec).map_err(io)
    }

    /// Owner, mode and xattrs of an open file or directory (owner first:
    /// chown clears setuid bits).
    fn finish_open(&self, fd: BorrowedFd<'_>, ino: Ino, node: &Node) -> io::Result<()> {
        if self.as_root {
            std::os::unix::fs::fchown(fd, Some(node.uid), Some(node.gid))?;
        }
        at::fchmod(fd, node.mode & 0o7777)?;
        for (name, value) in self.tree.xattrs(ino) {
            at::set_xattr(fd, name, value)?;
        }
        Ok(())
    }

    /// Owner, mode (`chmod`: not for a symlink), xattrs and time of
    /// `name` in `dir`, which was just made and cannot be opened to write.
    fn finish_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        ino: Ino,
        node: &Node,
        chmod: bool,
    ) -> io::Result<()> {
        if self.as_root {
            at::chown(dir, name, node.uid, node.gid)?;
        }
        if chmod {
            at::chmod(dir, name, node.mode & 0o7777)?;
        }
        for (xattr, value) in self.tree.xattrs(ino) {
            at::set_xattr_at(dir, name, xattr, value)?;
        }
        at::set_mtime(dir, name, node.mtime, node.mtime_nsec)
    }
}
