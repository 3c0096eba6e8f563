//! `layerfs mount` without `-f`: run the mount in a background process and
//! return once it is ready, like sshfs and squashfuse.
//!
//! The command re-runs itself as a child with [`CHILD_ENV`] set and its
//! standard output on a pipe. The child indexes the layers and mounts; when
//! the kernel has accepted the mount it writes [`READY`] to the pipe, leaves
//! the terminal's session and lets go of the caller's stdio. If it fails
//! first, it prints the error on the shared stderr and exits non-zero, and
//! the parent exits with the same code: nothing is left mounted.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sys;

/// Set in the environment of the background child.
pub const CHILD_ENV: &str = "LAYERFS_DAEMON_CHILD";
/// The canonical mountpoint, in the environment of the background child:
/// how `layerfs umount` finds the daemon of a mount (/proc/PID/environ)
/// without asking the mount anything.
const MOUNTPOINT_ENV: &str = "LAYERFS_MOUNTPOINT";
/// How long a stopped daemon, continued after its mount is gone, gets to
/// exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(3);
/// The line the child writes when the mount is ready.
const READY: &str = "layerfs-ready";

/// How the background start ended, when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The child could not be started.
    #[error("cannot start the background process: {0}")]
    Spawn(io::Error),
    /// The child exited before the mount was ready; it has reported why.
    #[error("the background process exited with status {0} before the mount was ready")]
    ChildFailed(i32),
}

impl DaemonError {
    /// The exit code the parent should end with.
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Spawn(_) => 1,
            DaemonError::ChildFailed(code) => *code,
        }
    }
}

/// Whether this process is the background child.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Re-runs this command in the background and waits until it reports the
/// mount ready (Ok) or exits (Err with its exit code).
/// The child gets this process's argv[0] too: run as mount(8)'s helper
/// (`mount.fuse.layerfs`), that name is what selects the helper's syntax.
pub fn start_in_background(mountpoint: &Path) -> Result<(), DaemonError> {
    let exe = std::env::current_exe().map_err(DaemonError::Spawn)?;
    let mut args = std::env::args_os();
    let mut command = Command::new(exe);
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    let mut child = command
        .args(args)
        .env(CHILD_ENV, "1")
        .env(MOUNTPOINT_ENV, mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(DaemonError::Spawn)?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        // An error reading the pipe is treated like EOF: the exit status decides.
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    if line.trim_end() == READY {
        return Ok(());
    }
    let status = child.wait().map_err(DaemonError::Spawn)?;
    Err(DaemonError::ChildFailed(status.code().unwrap_or(1).max(1)))
}

/// In the child: leaves the terminal's session (a Ctrl-C in the shell no
/// longer reaches the daemon), points stdio at `log_file` or /dev/null
/// (and then the log at syslog), and then tells the parent the mount is
/// ready, on a copy of the stdout pipe.
/// In that order, so that everything logged once the parent has returned
/// (a read failing at once, say) lands in the log, not in the caller's
/// stderr.
pub fn report_ready(log_file: Option<&Path>) -> io::Result<()> {
    let log = match log_file {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => None,
    };
    let mut pipe = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
    io::stdout().flush()?;
    sys::detach_from_terminal()?;
    sys::redirect_stdio(log.as_ref())?;
    if log.is_none() {
        crate::logging::to_syslog();
    }
    writeln!(pipe, "{READY}")?;
    pipe.flush()
}

/// After the mount at `mountpoint` was unmounted: a background daemon of
/// it that is stopped (SIGSTOP, a debugger) would never read the end of its
/// mount and stay forever, so it is continued. If the mount is gone for
/// good (not `lazy`, which may leave it serving files still open), each
/// daemon gets [`EXIT_GRACE`] to exit (continued again if it was stopped
/// meanwhile), and is killed if it has not: what it served is gone,
/// nothing it holds can be lost.
pub fn release_stopped(mountpoint: &Path, lazy: bool) {
    let daemons = daemons_of(mountpoint);
    let started = Instant::now();
    loop {
        for &pid in daemons.iter().filter(|&&pid| is_stopped(pid)) {
            log::info!(
                "daemon {pid} of {} is stopped: continuing it",
                mountpoint.display()
            );
            if let Err(e) = sys::signal(pid, libc::SIGCONT) {
                log::warn!(
                    "daemon {pid} of {}: cannot continue it: {e}",
                    mountpoint.display()
                );
            }
        }
        let running = daemons.iter().any(|&pid| is_running(pid));
        if lazy || !running || started.elapsed() >= EXIT_GRACE {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if lazy {
        return;
    }
    for &pid in daemons.iter().filter(|&&pid| is_running(pid)) {
        log::warn!(
            "daemon {pid} of {} did not exit after its mount was gone: killing it",
            mountpoint.display()
        );
        let _ = sys::signal(pid, libc::SIGKILL);
    }
}

/// Pids of the background daemons started to mount at `mountpoint`.
fn daemons_of(mountpoint: &Path) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let mut wanted = format!("{MOUNTPOINT_ENV}=").into_bytes();
    wanted.extend_from_slice(mountpoint.as_os_str().as_bytes());
    let child = format!("{CHILD_ENV}=1").into_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let mut vars = environ.split(|&b| b == 0);
            let (mut ours, mut there) = (false, false);
            for var in &mut vars {
                ours |= var == child.as_slice();
                there |= var == wanted.as_slice();
            }
            ours && there
        })
        .collect()
}

/// The state letter of process `pid` in /proc/PID/stat (`R`, `S`, `T`,
/// `Z`...), if it exists.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `pid` is stopped by a signal or traced.
fn is_stopped(pid: i32) -> bool {
    matches!(state(pid), Some('T' | 't'))
}

/// Whether `pid` exists and has not exited (a zombie has).
fn is_running(pid: i32) -> bool {
    state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}
