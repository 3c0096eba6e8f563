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

use crate::sys;

/// Set in the environment of the background child.
pub const CHILD_ENV: &str = "LAYERFS_DAEMON_CHILD";
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
pub fn start_in_background() -> Result<(), DaemonError> {
    let exe = std::env::current_exe().map_err(DaemonError::Spawn)?;
    let mut args = std::env::args_os();
    let mut command = Command::new(exe);
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    let mut child = command
        .args(args)
        .env(CHILD_ENV, "1")
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
