//! Serving a [`Stack`] over FUSE: mount options, the mount's life cycle
//! (ready notification, signals, unmounting), and the request handlers in
//! `fs.rs`.

mod faults;
mod fs;
pub mod mountinfo;
mod open_ahead;
mod options;
mod passthrough;
mod pusher;
mod readahead;
mod source;

use std::io;
use std::path::{Path, PathBuf};

use fuser::{Config, Session, SessionUnmounter};

pub use options::{MountOptions, OptionError};
pub use source::stack_source;

use crate::stack::Stack;
use crate::sys::{self, SignalSet};
use fs::LayerFs;

/// What can go wrong while mounting or unmounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint is missing, not a directory, or unreadable.
    #[error("mountpoint {}: {reason}", path.display())]
    BadMountpoint {
        /// The mountpoint.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Something is already mounted there.
    #[error("{}: already a mountpoint (unmount it first: layerfs umount {})", path.display(), path.display())]
    AlreadyMounted {
        /// The mountpoint.
        path: PathBuf,
    },
    /// Nothing is mounted there.
    #[error("{}: not a mountpoint", path.display())]
    NotMounted {
        /// The path given.
        path: PathBuf,
    },
    /// The kernel or fusermount refused.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The mountpoint.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// What the OS said.
        source: io::Error,
    },
}

/// Checks that `path` can be mounted on: an existing directory that is not
/// already a mountpoint. Done before indexing, so a wrong mountpoint fails
/// fast.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    /// Swapped arguments show as a mountpoint that is a file or missing.
    const LAST: &str = "the mountpoint comes last, after the layers";
    let bad = |e: io::Error| MountError::BadMountpoint {
        path: path.to_path_buf(),
        reason: if is_disconnected(&e) {
            format!(
                "a dead FUSE mount is still there (clear it with: layerfs umount {})",
                path.display()
            )
        } else if e.kind() == io::ErrorKind::NotFound {
            format!("no such directory (create it first; {LAST})")
        } else {
            e.to_string()
        },
    };
    let canonical = path.canonicalize().map_err(bad)?;
    let meta = std::fs::metadata(&canonical).map_err(bad)?;
    if !meta.is_dir() {
        return Err(MountError::BadMountpoint {
            path: path.to_path_buf(),
            reason: format!("not a directory ({LAST})"),
        });
    }
    if mountinfo::is_mountpoint(&canonical).map_err(bad)? {
        return Err(MountError::AlreadyMounted { path: canonical });
    }
    Ok(canonical)
}

/// Mounts `stack` at `mountpoint`, calls `ready` once the kernel has
/// accepted the mount, then serves until the filesystem is unmounted or the
/// process gets SIGINT, SIGTERM or SIGHUP (which unmount it).
pub fn serve(
    stack: Stack,
    mountpoint: &Path,
    options: &MountOptions,
    ready: impl FnOnce(),
) -> Result<(), MountError> {
    let io_err = |what: &'static str| {
        move |source: io::Error| MountError::Io {
            path: mountpoint.to_path_buf(),
            what,
            source,
        }
    };
    // Blocked before any session thread exists, so that only sigwait below
    // ever takes them.
    let mut signals = sys::TERMINATING.to_vec();
    signals.push(sys::SESSION_ENDED);
    let signals = SignalSet::block(&signals).map_err(io_err("blocking signals"))?;

    let mut config = Config::default();
    config.mount_options = options.fuser_options();
    config.acl = options.acl();
    config.n_threads = Some(options.threads());
    config.clone_fd = true;
    let notifier = std::sync::Arc::new(std::sync::OnceLock::new());
    let fs = LayerFs::new(
        stack,
        options.permission_checks(),
        options.passthrough(),
        std::sync::Arc::clone(&notifier),
    );
    let (session, mut unmounter) =
        match mount_directly(mountpoint, options).map_err(io_err("mount failed"))? {
            Some(dev) => {
                let session = Session::from_fd(fs, dev, options.acl(), config).map_err(|e| {
                    let _ = sys::umount(mountpoint, true);
                    io_err("mount failed")(e)
                })?;
                (session, Unmounter::Direct(Some(mountpoint.to_path_buf())))
            }
            // Not allowed (not root): fuser mounts through fusermount3, which
            // writes the same type and source.
            None => {
                let mut session =
                    Session::new(fs, mountpoint, &config).map_err(io_err("mount failed"))?;
                let unmounter = Unmounter::Fuser(session.unmount_callable());
                (session, unmounter)
            }
        };
    let _ = notifier.set(session.notifier());
    let server = std::thread::Builder::new()
        .name("layerfs-session".into())
        .spawn(move || {
            let result = session.run();
            sys::raise_in_process(sys::SESSION_ENDED);
            result
        })
        .map_err(io_err("starting the session thread"))?;
    ready();
    loop {
        let sig = signals.wait().map_err(io_err("waiting for signals"))?;
        if sig == sys::SESSION_ENDED {
            break;
        }
        log::info!("signal {sig}: unmounting {}", mountpoint.display());
        if let Err(e) = unmounter.unmount() {
            log::warn!(
                "{}: unmount failed ({e}); detaching lazily",
                mountpoint.display()
            );
            sys::umount(mountpoint, true).map_err(io_err("unmount failed"))?;
        }
    }
    let ended = match server.join() {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => io_err("session ended with an error")(e),
        Err(_) => io_err("session thread")(io::Error::other("panicked")),
    };
    // A session that failed may leave its mount behind: a dead one.
    if let Err(e) = unmounter.unmount() {
        log::debug!("{}: unmount after the session: {e}", mountpoint.display());
    }
    Err(ended)
}

/// Mounts `/dev/fuse` at `mountpoint` with mount(2), as the type
/// `fuse.SUBTYPE` and the source FSNAME, as fusermount3 writes them
/// (fuser's own direct mount, taken as root, writes the type `fuse`
/// alone: `findmnt -t fuse.layerfs` would not see the mount). `None` if
/// this user may not (not root), for fusermount3 to do it.
fn mount_directly(
    mountpoint: &Path,
    options: &MountOptions,
) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::AsRawFd;
    let dev = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(dev) => dev,
        // fusermount3 is setuid: it may open what this user cannot.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(None),
        Err(e) => return Err(e),
    };
    let kernel = options.kernel_mount();
    let (uid, gid) = sys::real_ids();
    let mut data = format!(
        "fd={},rootmode={:o},user_id={uid},group_id={gid}",
        dev.as_raw_fd(),
        libc::S_IFDIR
    );
    if !kernel.data.is_empty() {
        data.push(',');
        data.push_str(&kernel.data);
    }
    match sys::mount(
        &kernel.source,
        mountpoint,
        &kernel.fs_type,
        kernel.flags,
        &data,
    ) {
        Ok(()) => Ok(Some(dev.into())),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Ends the mount a session serves: fuser's for a mount it made, umount2
/// for one made by [`mount_directly`] (once).
enum Unmounter {
    Fuser(SessionUnmounter),
    Direct(Option<PathBuf>),
}

impl Unmounter {
    fn unmount(&mut self) -> io::Result<()> {
        match self {
            Unmounter::Fuser(unmounter) => unmounter.unmount(),
            Unmounter::Direct(path) => {
                let Some(target) = path.take() else {
                    return Ok(());
                };
                let result = sys::umount(&target, false);
                if result.is_err() {
                    *path = Some(target);
                }
                result
            }
        }
    }
}

/// Unmounts a layerfs (or any FUSE) mount; `lazy` detaches it even while
/// busy; returns the mountpoint as found in the mount table. The daemon
/// serving it exits by itself afterwards.
///
/// Nothing inside the mount is ever looked at, the mountpoint itself
/// included: a daemon that is stopped (SIGSTOP) never answers, and a stat
/// would hang. The mount is found in the mount table by its path, made
/// absolute by resolving the parent directory only.
///
/// A mount whose daemon died (killed, crashed) can serve nothing ever
/// again, so if it is still in use it is detached lazily without being
/// asked: the directory is usable again at once, and the processes still
/// holding files in the dead mount only ever got ENOTCONN from them anyway.
pub fn unmount(path: &Path, lazy: bool) -> Result<PathBuf, MountError> {
    let mut target = resolve_parent(path)?;
    let in_table = |target: &Path| {
        mountinfo::is_mountpoint(target).map_err(|source| MountError::Io {
            path: target.to_path_buf(),
            what: "reading the mount table",
            source,
        })
    };
    if !in_table(&target)? {
        // Not a mountpoint under that name: perhaps a symlink to one (a
        // symlink is no mountpoint, so this lstat asks no daemon).
        let link = std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_symlink());
        match path.canonicalize() {
            Ok(resolved) if link && in_table(&resolved)? => target = resolved,
            _ => return Err(MountError::NotMounted { path: target }),
        }
    }
    match sys::umount(&target, lazy) {
        Ok(()) => Ok(()),
        // Not root: fusermount3 is setuid and unmounts the user's own mounts.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fusermount_unmount(&target, lazy),
        Err(e) if !lazy && e.raw_os_error() == Some(libc::EBUSY) && daemon_gone(&target) => {
            log::info!(
                "{}: the daemon is gone and the mount is still in use: detaching it lazily",
                target.display()
            );
            unmount_lazily(&target)
        }
        Err(source) => Err(MountError::Io {
            path: target.clone(),
            what: if source.raw_os_error() == Some(libc::EBUSY) {
                "unmount failed (in use; `layerfs umount -l` detaches it lazily)"
            } else {
                "unmount failed"
            },
            source,
        }),
    }?;
    Ok(target)
}

/// `path` made absolute with its parent directory resolved (symlinks,
/// `..`) and its last component as given: the mount table's spelling of a
/// mountpoint, found without looking at the mountpoint itself.
pub fn resolve_parent(path: &Path) -> Result<PathBuf, MountError> {
    let bad = |e: io::Error| MountError::BadMountpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let absolute = std::path::absolute(path).map_err(bad)?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize().map_err(bad)?.join(name)),
        // `/` or a path ending in `..`: nothing but resolving it names it.
        _ => absolute.canonicalize().map_err(bad),
    }
}

/// Whether the daemon behind the mount at `path` is gone: its root answers
/// ENOTCONN. Asked on a thread of its own and given a second: a stopped
/// daemon never answers, and is not gone.
fn daemon_gone(path: &Path) -> bool {
    let (answer, answered) = std::sync::mpsc::channel();
    let root = path.to_path_buf();
    let asked = std::thread::Builder::new()
        .name("mount-root".into())
        .spawn(move || {
            let gone = std::fs::metadata(&root).is_err_and(|e| is_disconnected(&e));
            let _ = answer.send(gone);
        });
    asked.is_ok()
        && answered
            .recv_timeout(std::time::Duration::from_secs(1))
            .unwrap_or(false)
}

/// Whether `e` says the FUSE daemon behind a path is gone: ENOTCONN, or
/// ECONNABORTED for a request that was in flight when it died.
fn is_disconnected(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// Detaches a mount lazily, through fusermount3 if not allowed directly.
fn unmount_lazily(path: &Path) -> Result<(), MountError> {
    match sys::umount(path, true) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fusermount_unmount(path, true),
        Err(source) => Err(MountError::Io {
            path: path.to_path_buf(),
            what: "lazy unmount failed",
            source,
        }),
    }
}

fn fusermount_unmount(path: &Path, lazy: bool) -> Result<(), MountError> {
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let status = cmd.arg(path).status().map_err(|source| MountError::Io {
        path: path.to_path_buf(),
        what: "running fusermount3",
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(MountError::Io {
            path: path.to_path_buf(),
            what: "fusermount3 -u failed",
            source: io::Error::other(status.to_string()),
        })
    }
}
