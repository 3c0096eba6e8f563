//! FUSE passthrough for directory layers: the kernel reads (and maps) a
//! directory layer's file itself, from the file on disk, and the daemon
//! sees no READ for it (kernel 6.9 and later, CAP_SYS_ADMIN).
//!
//! Passthrough and the zero-message open (`fs.rs`) exclude each other: a
//! backing file can only be named in an OPEN reply, and once one OPEN is
//! answered ENOSYS the kernel sends no OPEN again. So it is decided per
//! mount: a stack without any directory-layer file with data keeps the
//! zero-message open, unchanged; one with such files answers every OPEN:
//! tar-served files as before (FOPEN_KEEP_CACHE, nothing kept for them),
//! directory-layer files with a backing file.
//!
//! A backing file is opened as the daemon's own reads open it
//! (`dir/files.rs`: through the layer's open directory, no symlink
//! followed) and checked to be what the walk listed (inode, size, mtime)
//! when the kernel opens a file that has no other open. A file that is not
//! is opened as a tar-served file is, and its reads, through the daemon,
//! fail as they always did. Past that check there is no read to check: a
//! change made while the file is open shows to the readers that have it
//! open, and the next open after they all closed it sees it changed.
//! `-o no_passthrough` keeps every read in the daemon, checked after each.
//!
//! The kernel takes all opens of an inode with a backing file to name the
//! same backing file, so one backing id is kept per inode while it has
//! opens and closed at its last RELEASE: ids are bounded by open files,
//! and no descriptor stays open in the daemon (the kernel holds the file).
//!
//! Stacking: a FUSE mount passing reads through counts as a filesystem
//! stacked `depth` deep, and the kernel allows 2. A directory on overlayfs
//! (a container's root) needs depth 2; but then no overlay can be mounted
//! over the mount, as `mount --upper` and containerd do. So depth 2 is
//! asked only for a directory layer on a stacked filesystem in a mount
//! that is no overlay's lower, else 1 (files the kernel then refuses are
//! read through the daemon).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{BackingId, FileHandle, FopenFlags, InitFlags, KernelConfig, ReplyOpen};

use super::faults::FaultLog;
use super::open_ahead::OpenAhead;
use crate::dir::DirLayer;
use crate::stack::{Layer, Stack, StackError};
use crate::tree::{Ino, NodeKind, ROOT_INO};

/// The handle of an open passed through: its RELEASE ends a use of the
/// inode's backing file. Other opens have handle 0.
const PASSED: FileHandle = FileHandle(1);
/// The open flags of an open passed through. The kernel takes no other
/// flag with FOPEN_PASSTHROUGH (FOPEN_KEEP_CACHE included: the open then
/// fails with EIO), and none is needed: reads skip this mount's page cache.
const PASSED_FLAGS: FopenFlags = FopenFlags::empty();
/// CAP_SYS_ADMIN's bit in /proc/self/status' CapEff: the kernel registers
/// backing files only for a daemon that has it.
const CAP_SYS_ADMIN: u32 = 21;

/// Which opens are passed through, and the backing files of open inodes.
pub(super) struct Passthrough {
    /// The stacking depth to ask for, if passthrough is wanted.
    wanted: Option<u32>,
    /// Granted by the kernel in INIT; cleared if it refuses backing files.
    on: AtomicBool,
    open: Mutex<HashMap<Ino, Backing>>,
    /// Whether a file too deep for the granted depth was logged.
    deep_logged: AtomicBool,
    /// Asks the disk for the files a reader will open next.
    ahead: OpenAhead,
}

/// An inode's backing file, shared by its opens.
struct Backing {
    id: Arc<BackingId>,
    opens: usize,
}

impl Passthrough {
    /// Wanted if `allowed` (not `-o no_passthrough`), if the stack serves a
    /// file with data from a directory layer and if this process may
    /// register backing files; `overlay_lower`: an overlay will be
    /// mounted over this mount.
    pub(super) fn new(stack: &Arc<Stack>, allowed: bool, overlay_lower: bool) -> Passthrough {
        let wanted = (allowed && has_dir_files(stack) && has_sys_admin()).then(|| {
            let stacked = stack.layers().iter().any(|layer| match layer {
                Layer::Dir(dir) => dir.on_stacked_fs(),
                Layer::Tar(_) => false,
            });
            if stacked && !overlay_lower {
                2
            } else {
                1
            }
        });
        Passthrough {
            wanted,
            on: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            deep_logged: AtomicBool::new(false),
            ahead: OpenAhead::new(Arc::clone(stack)),
        }
    }

    /// Asks for passthrough in the INIT reply, if wanted and offered, at
    /// the depth wanted or the nearest the kernel takes.
    pub(super) fn init(&mut self, config: &mut KernelConfig) {
        let Some(depth) = self.wanted else {
            return;
        };
        if config
            .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
            .is_err()
        {
            log::info!(
                "the kernel has no FUSE passthrough: directory layers are read through the daemon"
            );
            return;
        }
        let granted = match config.set_max_stack_depth(depth) {
            Ok(_) => depth,
            Err(nearest) => config.set_max_stack_depth(nearest).map_or(0, |_| nearest),
        };
        // Depth 0 turns passthrough off in the kernel, flag or not.
        *self.on.get_mut() = granted > 0;
        log::debug!("FUSE passthrough for directory layers, stacking depth {granted}");
    }

    /// Whether opens of directory-layer files are passed through.
    pub(super) fn active(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Answers the OPEN of file `ino` with a backing file if it is a
    /// directory layer's file that can be passed through; else gives
    /// `reply` back, for the caller to answer as any open. A file no longer
    /// what the walk listed is reported to `faults` (its reads will fail).
    pub(super) fn open(
        &self,
        stack: &Stack,
        ino: Ino,
        reply: ReplyOpen,
        faults: &FaultLog,
    ) -> Option<ReplyOpen> {
        if !self.active() {
            return Some(reply);
        }
        let Some((dir, start, size)) = dir_file(stack, ino) else {
            return Some(reply);
        };
        if let Some(id) = self.share(ino) {
            reply.opened_passthrough(PASSED, PASSED_FLAGS, &id);
            return None;
        }
        let file = match dir.open_whole(start, size)? {
            Ok(file) => file,
            Err(e) => {
                faults.report(ino, 0, &StackError::Source(e));
                return Some(reply);
            }
        };
        let id = match reply.open_backing(&file) {
            Ok(id) => id,
            Err(e) => {
                self.refused(dir, &e);
                return Some(reply);
            }
        };
        // The kernel holds the file now.
        drop(file);
        let id = self.keep(ino, id);
        reply.opened_passthrough(PASSED, PASSED_FLAGS, &id);
        self.ahead.opened(ino);
        None
    }

    /// The RELEASE of an open of `ino` with handle `fh`: the last one of an
    /// inode passed through closes its backing id.
    pub(super) fn release(&self, ino: Ino, fh: FileHandle) {
        if fh != PASSED {
            return;
        }
        let mut open = self.lock();
        let last = open.get_mut(&ino).is_some_and(|backing| {
            backing.opens = backing.opens.saturating_sub(1);
            backing.opens == 0
        });
        let closed = if last { open.remove(&ino) } else { None };
        if closed.is_some() {
            log::debug!("passthrough: inode {ino} closed, {} open", open.len());
        }
        drop(open);
        // The id's drop is an ioctl: done without the lock.
        drop(closed);
    }

    /// The backing id of `ino` if it has opens, counting one more.
    fn share(&self, ino: Ino) -> Option<Arc<BackingId>> {
        let mut open = self.lock();
        let backing = open.get_mut(&ino)?;
        backing.opens += 1;
        Some(Arc::clone(&backing.id))
    }

    /// Keeps `id` as `ino`'s backing id, one open counted; if another open
    /// made one meanwhile, that one is used and `id` closed.
    fn keep(&self, ino: Ino, id: BackingId) -> Arc<BackingId> {
        let mut open = self.lock();
        let count = open.len();
        let backing = open.entry(ino).or_insert_with(|| {
            log::debug!("passthrough: inode {ino} opened, {} open", count + 1);
            Backing {
                id: Arc::new(id),
                opens: 0,
            }
        });
        backing.opens += 1;
        Arc::clone(&backing.id)
    }

    /// The kernel would not take a backing file: EPERM says it takes none
    /// on this mount (passthrough off from now on, so that opens may go
    /// back to being answered by the kernel alone); ELOOP that the file's
    /// filesystem is stacked too deep (logged once); anything else
    /// concerns this open only.
    fn refused(&self, dir: &DirLayer, e: &io::Error) {
        match e.raw_os_error() {
            Some(libc::EPERM) => {
                if self.on.swap(false, Ordering::Relaxed) {
                    log::info!("the kernel refuses FUSE passthrough ({e}): directory layers are read through the daemon");
                }
            }
            Some(libc::ELOOP) if !self.deep_logged.swap(true, Ordering::Relaxed) => {
                log::info!(
                    "{}: on a filesystem stacked too deep for FUSE passthrough: its files are read through the daemon",
                    dir.path().display()
                );
            }
            _ => log::debug!("{}: no FUSE passthrough: {e}", dir.path().display()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Ino, Backing>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The directory layer serving file `ino`, and where its bytes lie in the
/// layer's virtual stream; `None` for any other node, and for a file
/// without data (nothing to read).
pub(super) fn dir_file(stack: &Stack, ino: Ino) -> Option<(&DirLayer, u64, u64)> {
    let tree = stack.tree();
    let node = tree.node(ino)?;
    if node.kind() != NodeKind::File || node.size == 0 {
        return None;
    }
    let data = tree.file_data(ino)?;
    if data.sparse.is_some() || data.size != node.size {
        return None;
    }
    match stack.layers().get(node.layer() as usize)? {
        Layer::Dir(dir) => Some((dir, data.offset, data.size)),
        Layer::Tar(_) => None,
    }
}

/// Whether the merged tree serves any file with data from a directory
/// layer (a walk of the nodes, skipped for stacks of tars only).
fn has_dir_files(stack: &Stack) -> bool {
    if !stack.layers().iter().any(|l| matches!(l, Layer::Dir(_))) {
        return false;
    }
    let last = ROOT_INO + stack.tree().len() as Ino;
    (ROOT_INO..last).any(|ino| dir_file(stack, ino).is_some())
}

/// Whether this process has CAP_SYS_ADMIN (as root has), without which
/// the kernel registers no backing file: asking for passthrough then
/// would only cost the zero-message open.
fn has_sys_admin() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| cap_in(&status, CAP_SYS_ADMIN))
}

/// Whether the CapEff line of a /proc/PID/status text has bit `cap`.
fn cap_in(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_capabilities_decide() {
        let root = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert!(cap_in(root, CAP_SYS_ADMIN));
        let user = "CapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n";
        assert!(!cap_in(user, CAP_SYS_ADMIN));
        assert!(!cap_in("CapEff:\tzz\n", CAP_SYS_ADMIN));
        assert!(!cap_in("", CAP_SYS_ADMIN));
    }
}
