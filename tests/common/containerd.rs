//! A private containerd for the snapshotter tests: Debian's `containerd`
//! (1.6) with its own root, state, gRPC address, `opt` directory and
//! namespace in a temp dir, the CRI plugin disabled (it is not needed and
//! slows the start), and the layerfs snapshotter configured as the proxy
//! plugin `layerfs` on a socket in the same temp dir.
//!
//! Containers of a test are real (runc), so the guard's `Drop` undoes
//! everything on every path, panics included: tasks are killed and
//! deleted and containers removed while containerd still answers; then
//! containerd, and any shim or container process it left, are killed by
//! pid; every mount under the temp dir is detached; and the namespace's
//! runc state and cgroup directories, which live outside the temp dir, are
//! removed. Each guard uses a namespace of its own because runc's state
//! (`/run/containerd/runc/NS/ID`) and the cgroups (`/NS/ID`) are shared by
//! all containerd instances of the machine.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use super::mount::{is_alive, run_captured, unescape_mount_field, wait_for, Run};

/// The binaries, from Debian's `containerd`, `runc` and `stargz-snapshotter`.
pub const CONTAINERD: &str = "/usr/bin/containerd";
pub const CTR: &str = "/usr/bin/ctr";
pub const CTR_REMOTE: &str = "/usr/bin/ctr-remote";

/// The name the layerfs snapshotter has in containerd's config.
pub const SNAPSHOTTER: &str = "layerfs";

/// How long a starting containerd may take to answer `ctr version`.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// How long a killed task may take to stop.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// A running containerd, killed and cleaned up on drop.
pub struct Containerd {
    dir: TempDir,
    namespace: String,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd and waits until it answers.
    pub fn start() -> Containerd {
        super::needs::declared(super::needs::Need::Tool("containerd"));
        for binary in [CONTAINERD, CTR, CTR_REMOTE] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: install Debian's containerd, runc and stargz-snapshotter \
                 (.ci/run does)"
            );
        }
        // A short path: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("layerfs-ctd")
            .tempdir_in("/tmp")
            .expect("containerd tempdir");
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let namespace = format!(
            "layerfs-test-{}-{}",
            std::process::id(),
            STARTS.fetch_add(1, Ordering::Relaxed)
        );
        let mut containerd = Containerd {
            dir,
            namespace,
            child: None,
        };
        containerd.write_config();
        containerd.launch();
        containerd
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             \n\
             [grpc]\n  address = \"{address}\"\n\
             [ttrpc]\n  address = \"{address}.ttrpc\"\n\
             [debug]\n  level = \"debug\"\n\
             \n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n\
             \n\
             [proxy_plugins.{SNAPSHOTTER}]\n  type = \"snapshot\"\n  address = \"{socket}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            address = self.address().display(),
            opt = d.join("opt").display(),
            socket = self.snapshotter_socket().display(),
        );
        std::fs::write(self.config_path(), config).expect("write containerd config");
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open containerd log");
        let err: File = log.try_clone().expect("clone containerd log handle");
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CONTAINERD}: {e}"));
        self.child = Some(child);
        let ready = wait_for(READY_LIMIT, || {
            !self.is_running()
                || (self.address().exists() && self.ctr(&["version"]).status.success())
        });
        assert!(
            ready && self.is_running(),
            "{CONTAINERD} did not come up; its log:\n{}",
            self.log()
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// containerd's gRPC socket.
    pub fn address(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Where containerd expects the layerfs snapshotter to listen.
    pub fn snapshotter_socket(&self) -> PathBuf {
        self.dir.path().join("layerfs.sock")
    }

    /// containerd's `root` (content store, metadata, built-in snapshotters).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A fresh directory in this containerd's temp dir, for what a test
    /// runs beside it (the snapshotter's root, a bind-mounted directory).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("scratch").join(name);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        path
    }

    /// The temp dir holding everything of this containerd.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The namespace the `ctr` helpers work in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// Everything containerd logged (debug level).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `ctr --address A ARGS...` in this guard's namespace.
    pub fn ctr(&self, args: &[&str]) -> Run {
        run_captured(&mut self.command(CTR, args))
    }

    /// `ctr-remote --address A ARGS...` in this guard's namespace.
    pub fn ctr_remote(&self, args: &[&str]) -> Run {
        run_captured(&mut self.command(CTR_REMOTE, args))
    }

    /// `ctr ARGS...`, panicking with its output (and containerd's log
    /// tail) unless it succeeds; returns its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        self.expect_success(&self.ctr(args), CTR, args)
    }

    /// `ctr-remote ARGS...`, panicking unless it succeeds; returns stdout.
    pub fn ctr_remote_ok(&self, args: &[&str]) -> String {
        self.expect_success(&self.ctr_remote(args), CTR_REMOTE, args)
    }

    fn expect_success(&self, run: &Run, binary: &str, args: &[&str]) -> String {
        assert!(
            run.status.success(),
            "{binary} {} failed ({}); stderr:\n{}\nstdout:\n{}\ncontainerd log (tail):\n{}",
            args.join(" "),
            run.status,
            run.stderr,
            run.stdout,
            tail(&self.log(), 40)
        );
        run.stdout.clone()
    }

    /// A `Command` for `binary --address A ARGS...` in this namespace, for
    /// a test that runs it in the background (a container that must keep
    /// running while the test does something else).
    pub fn command(&self, binary: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary);
        cmd.arg("--address")
            .arg(self.address())
            .env("CONTAINERD_NAMESPACE", &self.namespace)
            .args(args);
        cmd
    }

    /// Kills and deletes every task and removes every container, while
    /// containerd answers; errors are ignored (this runs on failure paths).
    fn remove_containers(&self) {
        let ids = |what: &str| -> Vec<String> {
            let run = self.ctr(&[what, "ls", "-q"]);
            run.stdout.split_whitespace().map(str::to_string).collect()
        };
        for task in ids("tasks") {
            let _ = self.ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", &task]);
        }
        let _ = wait_for(STOP_LIMIT, || {
            let run = self.ctr(&["tasks", "ls"]);
            !run.status.success() || !run.stdout.contains("RUNNING")
        });
        for task in ids("tasks") {
            let _ = self.ctr(&["tasks", "delete", "--force", &task]);
        }
        for container in ids("containers") {
            let _ = self.ctr(&["containers", "delete", &container]);
        }
    }

    /// containerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.is_running() {
            self.remove_containers();
        }
        // Shims are containerd's children but outlive it; they name our
        // socket on their command line.
        let address = self.address();
        let mut strays = processes_naming(address.as_os_str().as_bytes());
        if let Some(mut child) = self.child.take() {
            strays.extend(descendants(child.id()));
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_all(&strays);
        unmount_below(self.dir.path());
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.namespace));
        remove_cgroups(&self.namespace);
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Pids of live processes with an argument equal to `arg`.
pub fn processes_naming(arg: &[u8]) -> Vec<u32> {
    processes_with_arg(|a| a == arg)
}

/// Pids of live processes with an argument that contains `needle`.
pub fn processes_mentioning(needle: &[u8]) -> Vec<u32> {
    processes_with_arg(|a| a.windows(needle.len()).any(|w| w == needle))
}

fn processes_with_arg(matches: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(&matches)
        })
        .collect()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The parent pid of `pid`, from `/proc/PID/stat` (after the command
/// name, which may hold spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every live descendant of `root`.
pub fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// SIGKILLs `pids` and their descendants and waits (bounded) until they
/// are gone; processes that are not our children are reaped by init.
pub fn kill_all(pids: &[u32]) {
    let mut all: Vec<u32> = pids.to_vec();
    for pid in pids {
        all.extend(descendants(*pid));
    }
    all.sort_unstable();
    all.dedup();
    for pid in &all {
        // SAFETY: kill(2) on a pid this guard started or found naming its
        // own temp dir.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let _ = wait_for(STOP_LIMIT, || all.iter().all(|pid| !is_alive(*pid)));
}

/// Mountpoints below `dir` (or at it), deepest first, from
/// /proc/self/mountinfo.
pub fn mounts_below(dir: &Path) -> Vec<(PathBuf, String)> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut found: Vec<(PathBuf, String)> = table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let point = PathBuf::from(OsString::from_vec(unescape_mount_field(
                fields.nth(4)?.as_bytes(),
            )));
            let fs_type = line.split(" - ").nth(1)?.split(' ').next()?.to_string();
            Some((point, fs_type))
        })
        .filter(|(point, _)| point.starts_with(&dir))
        .collect();
    found.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    found
}

/// Detaches every mount below `dir`, deepest first (lazily, so a busy
/// mount cannot stop the cleanup).
pub fn unmount_below(dir: &Path) {
    for _ in 0..3 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            return;
        }
        for (point, _) in mounts {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&point)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Removes the (empty, once the tasks are gone) cgroup directories runc
/// made for `namespace` in every hierarchy.
fn remove_cgroups(namespace: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = vec![Path::new("/sys/fs/cgroup").join(namespace)];
    dirs.extend(hierarchies.flatten().map(|h| h.path().join(namespace)));
    for dir in dirs {
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}
