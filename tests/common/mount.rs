//! Running the `layerfs` binary and guaranteeing that no test leaves a
//! mount behind: every mount is owned by a guard whose `Drop` unmounts with
//! escalating fallbacks and waits until the kernel no longer lists it, so a
//! failed assertion (a panic) still cleans up.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::needs::{self, Need};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_layerfs")
}

/// Undoes the octal escapes (`\040` for space, ...) of /proc mount tables.
pub fn unescape_mount_field(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |acc, c| acc * 8 + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// The /proc/self/mountinfo lines of the mounts at exactly `path`.
pub fn mountinfo_lines(path: &Path) -> Vec<String> {
    let table = std::fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = path.as_os_str().as_bytes();
    table
        .split(|&b| b == b'\n')
        .filter(|line| {
            line.split(|&b| b == b' ').nth(4).map(unescape_mount_field) == Some(want.to_vec())
        })
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect()
}

/// How many mounts the kernel lists at exactly `path`.
pub fn mount_count(path: &Path) -> usize {
    mountinfo_lines(path).len()
}

pub fn is_mounted(path: &Path) -> bool {
    mount_count(path) > 0
}

/// Polls `cond` every 20 ms for up to `limit`; returns whether it held.
/// Only used to wait for asynchronous kernel/daemon state, never to judge
/// speed.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of live `layerfs` processes whose command line names `mountpoint`.
/// The background daemon is the mount command re-spawned or forked, so it
/// carries the same arguments.
pub fn daemons_serving(mountpoint: &Path) -> Vec<u32> {
    let exe = std::fs::canonicalize(bin()).unwrap();
    let needle = mountpoint.as_os_str().as_bytes();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let same_exe = std::fs::read_link(entry.path().join("exe")).is_ok_and(|e| e == exe);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if same_exe && cmdline.split(|&b| b == 0).any(|arg| arg == needle) {
            pids.push(pid);
        }
    }
    pids
}

pub fn is_alive(pid: u32) -> bool {
    // A zombie has exited; only its parent has not reaped it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Exit status and captured output of one `layerfs` invocation.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the captured output unless the command succeeded.
    pub fn expect_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed ({}); stderr:\n{}\nstdout:\n{}",
            self.status,
            self.stderr,
            self.stdout
        );
    }
}

/// Runs `layerfs ARGS...` to completion. Output goes to files rather than
/// pipes so that a daemon which (wrongly) keeps stdout/stderr open cannot
/// hang the test; `tests/fs_ops.rs` checks that case separately.
pub fn layerfs<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_captured(Command::new(bin()).args(args))
}

/// Runs `cmd` to completion with stdin closed and output captured in files.
pub fn run_captured(cmd: &mut Command) -> Run {
    let out = tempfile::tempfile().expect("stdout capture file");
    let err = tempfile::tempfile().expect("stderr capture file");
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .status()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    Run {
        status,
        stdout: read_capture(out),
        stderr: read_capture(err),
    }
}

fn read_capture(mut file: File) -> String {
    use std::io::{Read, Seek};
    let mut buf = Vec::new();
    file.rewind().unwrap();
    file.read_to_end(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Arguments of `layerfs mount [EXTRA...] LAYER... MOUNTPOINT`.
pub fn mount_args(extra: &[&str], layers: &[PathBuf], mountpoint: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["mount".into()];
    args.extend(extra.iter().map(OsString::from));
    args.extend(layers.iter().map(|l| l.clone().into_os_string()));
    args.push(mountpoint.into());
    args
}

/// Unmounts everything at `mountpoint`, escalating from `layerfs umount` to
/// `fusermount3 -uz` to `umount -l`, and waits until the kernel agrees.
pub fn force_unmount(mountpoint: &Path) {
    if !is_mounted(mountpoint) {
        return;
    }
    let _ = layerfs([OsStr::new("umount"), mountpoint.as_os_str()]);
    let gone = || !is_mounted(mountpoint);
    if wait_for(Duration::from_secs(5), gone) {
        return;
    }
    for _ in 0..4 {
        let _ = quiet(Command::new("fusermount3").arg("-uz").arg(mountpoint));
        let _ = quiet(Command::new("umount").arg("-l").arg(mountpoint));
        if wait_for(Duration::from_secs(2), gone) {
            return;
        }
    }
    let msg = format!("could not unmount {}", mountpoint.display());
    if std::thread::panicking() {
        eprintln!("{msg}");
    } else {
        panic!("{msg}");
    }
}

fn quiet(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// Owns a mountpoint; whatever is mounted there is unmounted on drop.
pub struct Mount {
    mountpoint: PathBuf,
    _dir: Option<TempDir>,
}

impl Mount {
    /// Mounts `layers` (bottom first) on a fresh directory, panicking with
    /// layerfs' stderr if that fails.
    pub fn new(layers: &[PathBuf]) -> Mount {
        Self::with_args(&[], layers)
    }

    pub fn with_args(extra: &[&str], layers: &[PathBuf]) -> Mount {
        let guard = Mount::fresh();
        layerfs(mount_args(extra, layers, guard.path())).expect_success("layerfs mount");
        assert!(
            is_mounted(guard.path()),
            "layerfs mount exited 0 but nothing is mounted at {}",
            guard.path().display()
        );
        guard
    }

    /// A guard around a new, empty, not yet mounted directory `mnt`.
    pub fn fresh() -> Mount {
        Self::fresh_named("mnt")
    }

    /// Like `fresh`, with a chosen last path component (e.g. one with
    /// characters that /proc/self/mountinfo escapes).
    pub fn fresh_named(name: &str) -> Mount {
        needs::declared(Need::Fuse);
        let dir = tempfile::Builder::new()
            .prefix("layerfs-mnt")
            .tempdir()
            .expect("mountpoint tempdir");
        let mnt = dir.path().join(name);
        std::fs::create_dir(&mnt).expect("create mountpoint");
        // Canonical, so it matches the kernel's spelling in mountinfo.
        let mountpoint = mnt.canonicalize().expect("canonicalize mountpoint");
        Mount {
            mountpoint,
            _dir: Some(dir),
        }
    }

    /// Guards a mountpoint the test created itself.
    pub fn guard(mountpoint: &Path) -> Mount {
        needs::declared(Need::Fuse);
        Mount {
            mountpoint: mountpoint.to_path_buf(),
            _dir: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// `path` inside the mounted tree (bytes, as tests spell tar paths).
    pub fn join(&self, rel: impl AsRef<[u8]>) -> PathBuf {
        self.mountpoint
            .join(OsString::from_vec(rel.as_ref().to_vec()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        force_unmount(&self.mountpoint);
    }
}

/// A `layerfs mount -f` running in the foreground as a child process.
pub struct Foreground {
    pub child: Child,
    pub mount: Mount,
}

impl Foreground {
    /// Starts the foreground mount and waits until the kernel lists it.
    pub fn start(layers: &[PathBuf]) -> Foreground {
        Self::start_with(&[], layers)
    }

    /// [`Foreground::start`] with more `mount` arguments.
    pub fn start_with(extra: &[&str], layers: &[PathBuf]) -> Foreground {
        let mount = Mount::fresh();
        let args: Vec<&str> = ["-f"].iter().chain(extra).copied().collect();
        let child = Command::new(bin())
            .args(mount_args(&args, layers, mount.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn layerfs mount -f");
        let mut fg = Foreground { child, mount };
        let ready = wait_for(Duration::from_secs(30), || {
            is_mounted(fg.mount.path()) || matches!(fg.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            ready && is_mounted(fg.mount.path()),
            "layerfs mount -f never mounted {} (child: {:?})",
            fg.mount.path().display(),
            fg.child.try_wait()
        );
        fg
    }

    /// Sends `signal` and waits (bounded) for the process to exit.
    pub fn signal_and_wait(&mut self, signal: i32) -> ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
        let exited = wait_for(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            exited,
            "layerfs mount -f did not exit after signal {signal}"
        );
        self.child.wait().expect("wait for layerfs")
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        force_unmount(self.mount.path());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A kernel mount (overlayfs) that is unmounted when dropped.
pub struct KernelMount(pub PathBuf);

impl KernelMount {
    /// Mounts overlayfs with `options` (`lowerdir=...`) at `target`.
    pub fn overlay(options: &str, target: &Path) -> KernelMount {
        std::fs::create_dir_all(target).expect("mkdir mountpoint");
        let run = run_captured(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", options])
                .arg(target),
        );
        run.expect_success("mount -t overlay");
        KernelMount(target.to_path_buf())
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        if run_captured(Command::new("umount").arg(&self.0))
            .status
            .success()
        {
            return;
        }
        let _ = run_captured(Command::new("umount").arg("-l").arg(&self.0));
        assert!(
            std::thread::panicking() || !is_mounted(&self.0),
            "could not unmount {}",
            self.0.display()
        );
    }
}
