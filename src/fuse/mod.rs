//! Serving a [`Stack`] over FUSE: mount options, the mount's life cycle
//! (ready notification, signals, unmounting), and the request handlers in
//! `fs.rs`.

mod faults;
mod fs;
mod mountinfo;
mod options;

use std::io;
use std::path::{Path, PathBuf};

use fuser::{Config, Session};

pub use options::{MountOptions, OptionError};

use crate::stack::Stack;
use crate::sys::{self, SignalSet};
use fs::LayerFs;

/// What can go wrong while mounting or unmounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint is missing, not a directory, or unreadable.
    #[error("{}: {reason}", path.display())]
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
    let bad = |e: io::Error| MountError::BadMountpoint {
        path: path.to_path_buf(),
        reason: if is_disconnected(&e) {
            format!(
                "a dead FUSE mount is still there (clear it with: layerfs umount {})",
                path.display()
            )
        } else {
            e.to_string()
        },
    };
    let canonical = path.canonicalize().map_err(bad)?;
    let meta = std::fs::metadata(&canonical).map_err(bad)?;
    if !meta.is_dir() {
        return Err(bad(io::Error::from_raw_os_error(libc::ENOTDIR)));
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
    let mut session = Session::new(
        LayerFs::new(stack, options.permission_checks()),
        mountpoint,
        &config,
    )
    .map_err(io_err("mount failed"))?;
    let mut unmounter = session.unmount_callable();
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
    match server.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(io_err("session ended with an error")(e)),
        Err(_) => Err(io_err("session thread")(io::Error::other("panicked"))),
    }
}

/// Unmounts a layerfs (or any FUSE) mount; `lazy` detaches it even while
/// busy. The daemon serving it exits by itself afterwards.
///
/// A mount whose daemon died (killed, crashed) can serve nothing ever
/// again, so if it is still in use it is detached lazily without being
/// asked: the directory is usable again at once, and the processes still
/// holding files in the dead mount only ever got ENOTCONN from them anyway.
pub fn unmount(path: &Path, lazy: bool) -> Result<(), MountError> {
    let canonical = match path.canonicalize() {
        Ok(p) => p,
        // A dead FUSE mount cannot be stat'ed; unmount it by the given path.
        Err(e) if is_disconnected(&e) => {
            std::path::absolute(path).map_err(|source| MountError::Io {
                path: path.to_path_buf(),
                what: "resolving the path",
                source,
            })?
        }
        Err(e) => {
            return Err(MountError::BadMountpoint {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let mounted = mountinfo::is_mountpoint(&canonical).map_err(|source| MountError::Io {
        path: canonical.clone(),
        what: "reading the mount table",
        source,
    })?;
    if !mounted {
        return Err(MountError::NotMounted { path: canonical });
    }
    // The root of a mount whose daemon is gone answers stat with ENOTCONN
    // (resolving its path does not ask the daemon).
    let dead = std::fs::metadata(&canonical).is_err_and(|e| is_disconnected(&e));
    match sys::umount(&canonical, lazy) {
        Ok(()) => Ok(()),
        // Not root: fusermount3 is setuid and unmounts the user's own mounts.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fusermount_unmount(&canonical, lazy),
        Err(e) if dead && !lazy && e.raw_os_error() == Some(libc::EBUSY) => {
            log::info!(
                "{}: the daemon is gone and the mount is still in use: detaching it lazily",
                canonical.display()
            );
            unmount_lazily(&canonical)
        }
        Err(source) => Err(MountError::Io {
            path: canonical,
            what: if source.raw_os_error() == Some(libc::EBUSY) {
                "unmount failed (in use; `layerfs umount -l` detaches it lazily)"
            } else {
                "unmount failed"
            },
            source,
        }),
    }
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
