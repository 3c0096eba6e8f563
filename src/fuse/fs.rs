//! The FUSE request handlers: request → tree lookup → layer read → reply.
//!
//! The tree never changes while mounted, so every reply tells the kernel to
//! keep what it learned (entries, attributes, negative lookups, page cache,
//! directory listings) for as long as it likes.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, Notifier, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request,
};

use super::faults::FaultLog;
use super::passthrough::Passthrough;
use super::pusher::Pusher;
use crate::stack::{Stack, StackError};
use crate::tree::{Ino, Node, NodeKind};

/// How long the kernel may cache entries and attributes: the tree is
/// immutable, so "for good" (a year).
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Block size reported by stat and statfs.
const BLOCK_SIZE: u32 = 4096;
/// The kernel's read size limit we ask for; also the read buffer's size.
const MAX_READ: usize = 1024 * 1024;
/// readdir offsets 0 and 1 are "." and ".."; entry i is at offset i + 2.
const FIRST_ENTRY_OFFSET: u64 = 2;

thread_local! {
    /// One read buffer per FUSE worker thread, so a read allocates nothing.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The filesystem served over FUSE: a stack, read-only.
pub(super) struct LayerFs {
    stack: Arc<Stack>,
    /// Whether the kernel checks permissions (`default_permissions`).
    permission_checks: bool,
    /// The kernel can open files without asking (FUSE_NO_OPEN_SUPPORT):
    /// see [`LayerFs::open`].
    zero_message_open: bool,
    /// The same for directories (FUSE_NO_OPENDIR_SUPPORT).
    zero_message_opendir: bool,
    /// Directory layers' files read by the kernel itself, where it can.
    passthrough: Passthrough,
    faults: FaultLog,
    /// Puts files a reader is about to read in the page cache.
    pusher: Pusher,
}

impl LayerFs {
    /// The filesystem of `stack`; `notifier` is set once the session
    /// exists, and read ahead is off until then. `passthrough`: whether
    /// directory layers may be passed through, and whether an overlay will
    /// be mounted over this mount (see `passthrough.rs`).
    pub(super) fn new(
        stack: Stack,
        permission_checks: bool,
        (passthrough, overlay_lower): (bool, bool),
        notifier: Arc<OnceLock<Notifier>>,
    ) -> LayerFs {
        let stack = Arc::new(stack);
        let passthrough = Passthrough::new(&stack, passthrough, overlay_lower);
        LayerFs {
            passthrough,
            pusher: Pusher::new(Arc::clone(&stack), notifier),
            stack,
            permission_checks,
            zero_message_open: false,
            zero_message_opendir: false,
            faults: FaultLog::default(),
        }
    }

    fn node(&self, ino: INodeNo) -> Result<&Node, Errno> {
        self.stack.tree().node(ino.0).ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: Ino, node: &Node) -> FileAttr {
        let mtime = to_system_time(node.mtime, node.mtime_nsec);
        FileAttr {
            ino: INodeNo(ino),
            size: node.size,
            blocks: self.stored_bytes(ino, node).div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: file_type(node.kind()),
            perm: (node.mode & 0o7777) as u16,
            nlink: node.nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: encode_dev(node.rdev().0, node.rdev().1),
            blksize: BLOCK_SIZE,
            flags: 0,
        }
    }

    /// Bytes a node's contents take: a sparse file's data regions only, so
    /// that `du` and `st_blocks` show what extracting it would take, as a
    /// filesystem shows a file with holes.
    fn stored_bytes(&self, ino: Ino, node: &Node) -> u64 {
        if node.kind() != NodeKind::File {
            return node.size;
        }
        match self
            .stack
            .tree()
            .file_data(ino)
            .and_then(|data| data.sparse)
        {
            Some(segments) => segments.iter().map(|s| s.len).sum(),
            None => node.size,
        }
    }

    fn entry_attr(&self, ino: Ino) -> Result<FileAttr, Errno> {
        let node = self.stack.tree().node(ino).ok_or(Errno::ENOENT)?;
        Ok(self.attr(ino, node))
    }

    /// Lists a directory from `offset` with `add(ino, next_offset, kind, name)`
    /// until it reports a full buffer; says whether `offset` is past the
    /// last entry: the reader went through the whole listing, and the
    /// kernel has taken every reply before this one.
    fn list(
        &self,
        dir: INodeNo,
        offset: u64,
        mut add: impl FnMut(Ino, u64, &Node, &[u8]) -> bool,
    ) -> Result<bool, Errno> {
        let tree = self.stack.tree();
        let node = self.node(dir)?;
        if node.kind() != NodeKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let dots = [(dir.0, &b"."[..]), (node.parent(), &b".."[..])];
        for (i, (ino, name)) in dots.into_iter().enumerate().skip(offset as usize) {
            let target = tree.node(ino).ok_or(Errno::EIO)?;
            if add(ino, i as u64 + 1, target, name) {
                return Ok(false);
            }
        }
        let entries = tree.entries(dir.0);
        let start = offset.saturating_sub(FIRST_ENTRY_OFFSET) as usize;
        if offset >= FIRST_ENTRY_OFFSET && start >= entries.len() {
            return Ok(true);
        }
        for (i, entry) in entries.iter().enumerate().skip(start) {
            let child = tree.node(entry.ino).ok_or(Errno::EIO)?;
            if add(
                entry.ino,
                i as u64 + FIRST_ENTRY_OFFSET + 1,
                child,
                tree.name(entry),
            ) {
                break;
            }
        }
        Ok(false)
    }
}

impl Filesystem for LayerFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each capability is asked for alone: a kernel without one refuses
        // only that one.
        for capability in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_MAX_PAGES,
        ] {
            let _ = config.add_capabilities(capability);
        }
        if self.permission_checks {
            // The kernel then caches each inode's ACLs, absent ones too,
            // instead of asking on every `ls -l`. It also turns the kernel's
            // permission checks on whatever the mount options say, so it is
            // only asked for when they are on anyway.
            let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        }
        let _ = config.set_max_readahead(MAX_READ as u32);
        self.passthrough.init(config);
        let kernel = config.capabilities();
        self.zero_message_open = kernel.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        self.zero_message_opendir = kernel.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.stack.tree().lookup(parent.0, name.as_bytes()) {
            Some(ino) => match self.entry_attr(ino) {
                Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
                Err(e) => reply.error(e),
            },
            // A reply with inode 0 is a negative entry the kernel caches:
            // nothing can appear later in an immutable tree.
            None => reply.entry(&TTL, &negative_entry(), Generation(0)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.entry_attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.stack.tree().symlink_target(ino.0) {
            Some(target) => reply.data(target),
            None => reply.error(Errno::EINVAL),
        }
    }

    /// Files need no per-open state, so where the kernel allows, the first
    /// open answers ENOSYS: the kernel then opens every later file itself,
    /// with FOPEN_KEEP_CACHE, and sends neither OPEN nor RELEASE again. That
    /// is two of the three round trips that reading a small file took. The
    /// mount is read-only, so the VFS refuses writable opens on its own.
    ///
    /// A stack with directory layers' files to pass through answers every
    /// open instead (`passthrough.rs`), as the kernel names a backing file
    /// only in an OPEN reply.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.node(ino) {
            Ok(node) if node.kind() == NodeKind::Directory => reply.error(Errno::EISDIR),
            Ok(_) => {
                let Some(reply) = self
                    .passthrough
                    .open(&self.stack, ino.0, reply, &self.faults)
                else {
                    return;
                };
                if self.zero_message_open && !self.passthrough.active() {
                    reply.error(Errno::ENOSYS)
                } else {
                    reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
                }
            }
            Err(e) => reply.error(e),
        }
    }

    /// Nothing is ever written, so nothing is to flush: ENOSYS makes the
    /// kernel stop sending FLUSH on every close (fuser's default answers
    /// the same, with a warning).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// Only an open passed through holds anything: its inode's backing
    /// file, closed with the last such open.
    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.passthrough.release(ino.0, fh);
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        // The kernel asks only for what it has not cached: a read at a
        // file's start is a file the reader came to uncached.
        if offset == 0 {
            self.pusher.missed(ino.0);
        }
        READ_BUFFER.with_borrow_mut(|buf| {
            let want = size as usize;
            if buf.len() < want {
                buf.resize(want, 0);
            }
            match self.stack.read(ino.0, offset, &mut buf[..want]) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => {
                    self.faults.report(ino.0, offset, &e);
                    reply.error(read_errno(&e));
                }
            }
        });
    }

    /// As [`LayerFs::open`]; a directory opened by the kernel alone is
    /// cached too (FOPEN_CACHE_DIR is the kernel's default then).
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Ok(node) if node.kind() == NodeKind::Directory && self.zero_message_opendir => {
                reply.error(Errno::ENOSYS)
            }
            Ok(node) if node.kind() == NodeKind::Directory => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.list(ino, offset, |child, next, node, name| {
            reply.add(
                INodeNo(child),
                next,
                file_type(node.kind()),
                OsStr::from_bytes(name),
            )
        });
        match listed {
            Ok(ended) => {
                reply.ok();
                if ended {
                    self.pusher.listed(ino.0);
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listed = self.list(ino, offset, |child, next, node, name| {
            let attr = self.attr(child, node);
            reply.add(
                INodeNo(child),
                next,
                OsStr::from_bytes(name),
                &TTL,
                &attr,
                Generation(0),
            )
        });
        match listed {
            Ok(ended) => {
                reply.ok();
                if ended {
                    self.pusher.listed(ino.0);
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let tree = self.stack.tree();
        let blocks = tree.file_bytes().div_ceil(u64::from(BLOCK_SIZE));
        reply.statfs(
            blocks,
            0,
            0,
            tree.len() as u64,
            0,
            BLOCK_SIZE,
            255,
            BLOCK_SIZE,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.stack.tree().has_xattrs() {
            // Nothing to find, ever: ENOSYS makes the kernel stop asking
            // (it answers "not supported" itself), which saves `ls -l` two
            // round trips per file (security.selinux, ACLs) it would
            // otherwise make on every listing, as the kernel does not
            // cache absent attributes.
            reply.error(Errno::ENOSYS);
            return;
        }
        let found = self
            .stack
            .tree()
            .xattrs(ino.0)
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, value)| value);
        match found {
            Some(value) => reply_sized(reply, size, value),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut names = Vec::new();
        for (name, _) in self.stack.tree().xattrs(ino.0) {
            names.extend_from_slice(name);
            names.push(0);
        }
        reply_sized(reply, size, &names);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.node(ino) {
            // Without permission checks everyone may do what root may: read
            // everything, execute what has an x bit; `access` then agrees
            // with what `open` does.
            Ok(node) => match check_access(
                node,
                if self.permission_checks { req.uid() } else { 0 },
                req.gid(),
                mask,
            ) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, _: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _: &Request, _: INodeNo, _: &OsStr, _: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: INodeNo,
        _: &OsStr,
        _: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _: &Request, _: INodeNo, _: INodeNo, _: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: u32,
        _: u32,
        _: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: &[u8],
        _: i32,
        _: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    /// No ioctl is known here, and ENOTTY says so. fuser's default,
    /// ENOSYS, is taken by the kernel as a failure of the call itself:
    /// overlayfs' copy-up asks the lower for the file flags
    /// (FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR) and, on 5.15 and later, aborts
    /// every copy-up of a `mount --upper` on ENOSYS, where ENOTTY reads as
    /// "no flags".
    fn ioctl(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: fuser::IoctlFlags,
        _: u32,
        _: &[u8],
        _: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }
}

/// Answers a getxattr/listxattr: the size when asked for it, the bytes when
/// they fit, ERANGE when they do not.
fn reply_sized(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() <= size as usize {
        reply.data(bytes);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// access(2) for a read-only tree: writing is never allowed; otherwise the
/// owner/group/other bits decide, and root may do anything but execute a
/// file that no one may execute.
/// The errno a failed read answers with: the layer's own error knows
/// ([`crate::source::SourceError::errno`]); anything else here is a bug, EIO.
fn read_errno(error: &StackError) -> Errno {
    match error {
        StackError::Source(e) => Errno::from_i32(e.errno()),
        _ => Errno::EIO,
    }
}

fn check_access(node: &Node, uid: u32, gid: u32, mask: AccessFlags) -> Result<(), Errno> {
    if mask.contains(AccessFlags::W_OK) {
        return Err(Errno::EROFS);
    }
    let wanted = (mask & (AccessFlags::R_OK | AccessFlags::X_OK)).bits() as u32;
    if uid == 0 {
        let any_exec = node.mode & 0o111 != 0 || node.kind() == NodeKind::Directory;
        return if wanted & 1 != 0 && !any_exec {
            Err(Errno::EACCES)
        } else {
            Ok(())
        };
    }
    let granted = if uid == node.uid {
        (node.mode >> 6) & 7
    } else if gid == node.gid {
        (node.mode >> 3) & 7
    } else {
        node.mode & 7
    };
    if granted & wanted == wanted {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}

fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Directory => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Fifo => FileType::NamedPipe,
    }
}

/// Seconds and nanoseconds since the epoch (seconds may be negative) as a
/// SystemTime.
fn to_system_time(secs: i64, nsec: u32) -> SystemTime {
    let whole = Duration::from_secs(secs.unsigned_abs());
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(whole)
    } else {
        UNIX_EPOCH.checked_sub(whole)
    };
    base.and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nsec))))
        .unwrap_or(UNIX_EPOCH)
}

/// The kernel's 32-bit device number encoding (new_encode_dev), which FUSE
/// carries in `rdev`.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        assert_eq!(encode_dev(8, 1), 0x801);
        assert_eq!(encode_dev(1, 3), 0x103);
        // A minor above 255 moves its high bits above the major.
        assert_eq!(
            encode_dev(259, 0x12345),
            0x45 | (259 << 8) | (0x12300 << 12)
        );
    }

    #[test]
    fn times_before_the_epoch_and_fractions() {
        assert_eq!(
            to_system_time(-2, 750_000_000),
            UNIX_EPOCH - Duration::from_millis(1250)
        );
        assert_eq!(to_system_time(10, 5), UNIX_EPOCH + Duration::new(10, 5));
    }

    #[test]
    fn a_failed_read_answers_with_its_source_errno() {
        let full = StackError::Source(crate::source::SourceError::Cache {
            path: "layer.tar.zst".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        assert_eq!(read_errno(&full), Errno::from_i32(libc::ENOSPC));
        assert_eq!(read_errno(&StackError::NotAFile(7)), Errno::EIO);
    }
}
