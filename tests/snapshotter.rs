//! The containerd snapshotter (issue 18), end to end: Debian's containerd
//! 1.6 and runc started by the test (`common::containerd`), a registry on
//! loopback behind the counting proxy, images of Debian's static busybox
//! plus data files (`snapshotter/images.rs`), and `layerfs snapshotter`
//! as containerd's proxy plugin `layerfs`.
//!
//! Lazy pulls are `ctr-remote image rpull --plain-http --snapshotter
//! layerfs REF` (Debian's stargz-snapshotter 0.12: its Prepare labels are
//! `containerd.io/snapshot.ref` and `containerd.io/snapshot/remote/
//! stargz.{reference,digest,layers,prefetch}`); ordinary pulls are `ctr
//! image pull --snapshotter layerfs`, whose Prepare carries no labels.
//! Containers print the sha256 of image files, compared with the sums of
//! the bytes the fixture put in.
//!
//! The `overlayfs_` tests run the same harness with containerd's built-in
//! snapshotter: they prove the harness and the fixtures, and document the
//! image containerd's own unpacking gets wrong.

mod common;
#[path = "snapshotter/images.rs"]
mod images;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::containerd::{
    descendants, kill_all, mounts_below, processes_mentioning, tail, unmount_below, Containerd,
    CTR, SNAPSHOTTER,
};
use common::mount::{bin, is_alive, run_captured, wait_for};
use common::proxy::Proxy;
use common::registry::Registry;
use images::{big, busybox_gzip, busybox_zstd, patched, skel, Image};
use tempfile::TempDir;

/// How long the snapshotter may take to listen on its socket.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// How long mounts may take to go after the snapshots that own them.
const UNMOUNT_LIMIT: Duration = Duration::from_secs(15);

/// `layerfs snapshotter` running as a child, with its root, cache and log
/// in a temp dir of its own. `Drop` kills it and whatever FUSE daemons it
/// left (they are meant to outlive it) and detaches its mounts.
struct Snapshotter {
    dir: TempDir,
    socket: PathBuf,
    child: Option<Child>,
}

impl Snapshotter {
    /// Starts `layerfs snapshotter` on `socket` and waits until it listens.
    fn start(socket: &Path) -> Snapshotter {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-snap")
            .tempdir_in("/tmp")
            .expect("snapshotter tempdir");
        let mut snapshotter = Snapshotter {
            dir,
            socket: socket.to_path_buf(),
            child: None,
        };
        snapshotter.launch();
        snapshotter
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("snapshotter.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open snapshotter log");
        let err = log.try_clone().expect("clone snapshotter log handle");
        let child = Command::new(bin())
            .arg("snapshotter")
            .arg("--address")
            .arg(&self.socket)
            .arg("--root")
            .arg(self.root())
            .arg("--cache-dir")
            .arg(self.cache())
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn layerfs snapshotter");
        self.child = Some(child);
        let ready = wait_for(READY_LIMIT, || {
            !self.is_running() || std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
        });
        assert!(
            ready && self.is_running(),
            "layerfs snapshotter did not listen on {}; its log:\n{}",
            self.socket.display(),
            self.log()
        );
    }

    fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the snapshotter with `signal` (SIGTERM: what `systemctl
    /// restart` sends with `KillMode=process`) and waits until it exits.
    fn stop(&mut self, signal: i32) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let exited = wait_for(READY_LIMIT, || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            let _ = child.kill();
        }
        let _ = child.wait();
        assert!(exited, "layerfs snapshotter ignored signal {signal}");
    }

    /// Mounts of type `fs_type` below the snapshotter's root or cache.
    fn mounts_of_type(&self, fs_type: &str) -> Vec<PathBuf> {
        mounts_below(self.dir.path())
            .into_iter()
            .filter(|(_, t)| t == fs_type)
            .map(|(p, _)| p)
            .collect()
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        let mut strays = Vec::new();
        if let Some(mut child) = self.child.take() {
            strays.extend(descendants(child.id()));
            let _ = child.kill();
            let _ = child.wait();
        }
        unmount_below(self.dir.path());
        strays.extend(processes_mentioning(
            self.dir.path().as_os_str().as_encoded_bytes(),
        ));
        strays.retain(|pid| is_alive(*pid));
        kill_all(&strays);
        unmount_below(self.dir.path());
    }
}

/// A registry with the counting proxy in front, containerd, and the layerfs
/// snapshotter. Field order is drop order: containers go while the
/// snapshotter still answers, then the snapshotter, then the registry.
struct Rig {
    containerd: Containerd,
    snapshotter: Option<Snapshotter>,
    proxy: Proxy,
    registry: Registry,
    /// Held until everything above is gone: see [`one_at_a_time`].
    _serial: MutexGuard<'static, ()>,
}

/// The tests of this file run one at a time. Each starts containerd,
/// shims, runc and mount daemons, and its guards find and kill strays by
/// scanning /proc. With two rigs at once on a loaded machine, a rig's
/// snapshotter twice stopped answering right after it had served
/// containerd ("connection refused", nothing in its log): a stray-killing
/// guard of the other rig hitting a reused pid (they wrap at 32768 here)
/// is the likeliest cause. One rig at a time never showed it.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

impl Rig {
    /// Everything but the layerfs snapshotter: the `overlayfs_` tests.
    fn without_layerfs() -> Rig {
        let serial = one_at_a_time();
        let registry = Registry::start();
        let proxy = Proxy::start(&registry.addr());
        Rig {
            containerd: Containerd::start(),
            snapshotter: None,
            proxy,
            registry,
            _serial: serial,
        }
    }

    fn new() -> Rig {
        let mut rig = Rig::without_layerfs();
        rig.snapshotter = Some(Snapshotter::start(&rig.containerd.snapshotter_socket()));
        rig.await_containerd();
        rig
    }

    /// Waits until containerd reaches the snapshotter. containerd dials its
    /// proxy plugin's socket when it starts, before the snapshotter
    /// listens, and again after a restart, with a backoff of up to 3 s:
    /// requests in that window fail with "unavailable".
    fn await_containerd(&self) {
        let reached = wait_for(Duration::from_secs(15), || {
            self.containerd
                .ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"])
                .status
                .success()
        });
        assert!(reached, "containerd did not reach the layerfs snapshotter");
    }

    fn snapshotter(&mut self) -> &mut Snapshotter {
        self.snapshotter
            .as_mut()
            .expect("a rig with the snapshotter")
    }

    /// Pushes `image` as `NAME:TAG` (its tag); returns its reference
    /// through the proxy, as containerd and the snapshotter are to use it.
    fn push(&self, image: &Image, name: &str) -> String {
        let name = format!("{name}:{}", image.tag);
        self.registry.push(&image.source(), &name, &[]);
        format!("{}/{name}", self.proxy.addr())
    }

    /// `ctr run --rm [--snapshotter layerfs] REF ID sh -c SCRIPT`'s stdout;
    /// panics (with both logs) unless it succeeds.
    fn run(&self, layerfs: bool, reference: &str, id: &str, script: &str) -> String {
        let mut args = vec!["run", "--rm"];
        if layerfs {
            args.extend(["--snapshotter", SNAPSHOTTER]);
        }
        args.extend([reference, id, "sh", "-c", script]);
        let run = self.containerd.ctr(&args);
        self.expect_success(&run, &format!("ctr {}", args.join(" ")));
        run.stdout
    }

    /// `ctr-remote image rpull --plain-http --snapshotter layerfs REF`.
    fn rpull(&self, reference: &str) {
        let args = [
            "image",
            "rpull",
            "--plain-http",
            "--snapshotter",
            SNAPSHOTTER,
            reference,
        ];
        let run = self.containerd.ctr_remote(&args);
        self.expect_success(&run, &format!("ctr-remote {}", args.join(" ")));
    }

    /// `ctr image pull --plain-http [--snapshotter layerfs] REF`.
    fn pull(&self, layerfs: bool, reference: &str) {
        let mut args = vec!["image", "pull", "--plain-http"];
        if layerfs {
            args.extend(["--snapshotter", SNAPSHOTTER]);
        }
        args.push(reference);
        let run = self.containerd.ctr(&args);
        self.expect_success(&run, &format!("ctr {}", args.join(" ")));
    }

    fn expect_success(&self, run: &common::mount::Run, what: &str) {
        assert!(
            run.status.success(),
            "{what} failed ({}); stderr:\n{}\nstdout:\n{}\n{}",
            run.status,
            run.stderr,
            run.stdout,
            self.logs()
        );
    }

    /// The tails of containerd's and the snapshotter's logs.
    fn logs(&self) -> String {
        let snapshotter = self
            .snapshotter
            .as_ref()
            .map(|s| tail(&s.log(), 60))
            .unwrap_or_default();
        format!(
            "containerd log (tail):\n{}\nlayerfs snapshotter log (tail):\n{snapshotter}",
            tail(&self.containerd.log(), 40)
        )
    }

    /// Asserts containerd's content store holds none of `image`'s layers:
    /// the snapshotter answered each Prepare of the lazy pull with
    /// AlreadyExists, so containerd fetched and unpacked nothing.
    fn assert_no_layer_in_content_store(&self, image: &Image) {
        let content = self.containerd.ctr_ok(&["content", "ls", "-q"]);
        for digest in image.layer_digests() {
            assert!(
                !content.contains(&digest),
                "the lazy pull downloaded layer {digest} into containerd's content store\n{}",
                self.logs()
            );
        }
    }

    /// The snapshot names `ctr snapshots --snapshotter layerfs ls` lists.
    fn layerfs_snapshots(&self) -> Vec<String> {
        let out = self
            .containerd
            .ctr_ok(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"]);
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }
}

/// The `upperdir=` of the mount `ctr snapshots mounts` prints for `key`.
fn upperdir(rig: &Rig, key: &str) -> PathBuf {
    let out = rig.containerd.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        SNAPSHOTTER,
        "mounts",
        "/mnt",
        key,
    ]);
    let option = out
        .split([',', ' ', '\n'])
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap_or_else(|| panic!("no upperdir in the mounts of snapshot {key}: {out}"));
    PathBuf::from(option)
}

// ---------------------------------------------------------------------
// The harness with containerd's own overlayfs snapshotter.
// ---------------------------------------------------------------------

/// What every test of the rig needs: containerd with runc, ctr-remote, the
/// registry and skopeo to fill it, and busybox for the image.
macro_rules! require_rig {
    () => {
        require!(
            Fuse,
            Tool("containerd"),
            Tool("runc"),
            Tool("ctr-remote"),
            Tool("docker-registry"),
            Tool("skopeo"),
            Tool("/bin/busybox")
        );
    };
}

#[test]
fn overlayfs_pulls_and_runs_the_gzip_and_zstd_images() {
    require_rig!();
    let rig = Rig::without_layerfs();
    for (n, image) in [busybox_gzip(), busybox_zstd()].into_iter().enumerate() {
        let reference = rig.push(image, "busybox");
        rig.pull(false, &reference);
        // What `assert_no_layer_in_content_store` looks for is there
        // after an ordinary pull.
        let content = rig.containerd.ctr_ok(&["content", "ls", "-q"]);
        for digest in image.layer_digests() {
            assert!(content.contains(&digest), "{digest} not in {content}");
        }
        let out = rig.run(false, &reference, &format!("c{n}"), &image.check_script());
        assert_eq!(out, image.check_output(), "{reference} with overlayfs");
    }
    // The pull went through the proxy: the harness counts containerd.
    let fetched: BTreeSet<String> = rig
        .proxy
        .blob_exchanges()
        .iter()
        .map(|e| e.path.clone())
        .collect();
    assert!(
        fetched.len() >= 4,
        "the proxy saw too few blob requests: {fetched:?}"
    );
}

/// The fixture reproduces what issue 18 reports of containerd 1.6.20: if
/// this starts failing, Debian's containerd unpacks the image now and the
/// comparison in the README needs updating, not layerfs.
#[test]
fn overlayfs_fails_to_unpack_the_file_to_directory_image() {
    require_rig!();
    let rig = Rig::without_layerfs();
    let reference = rig.push(skel(), "skel");
    let run = rig
        .containerd
        .ctr(&["image", "pull", "--plain-http", &reference]);
    assert!(
        !run.status.success() && run.stderr.contains("mkparent") && run.stderr.contains("etc/skel"),
        "containerd's overlayfs unpack of the file-to-directory image did not fail as in \
         issue 18 ({}); stderr:\n{}",
        run.status,
        run.stderr
    );
}

/// The guard's `Drop` leaves nothing behind with a container running,
/// whether containerd still answers (tasks killed, containers removed) or
/// was killed first (its shims and their containers killed by pid).
#[test]
fn harness_containerd_drop_leaves_no_process_mount_or_state() {
    require_rig!();
    let _serial = one_at_a_time();
    let registry = Registry::start();
    let image = busybox_gzip();
    registry.push(&image.source(), "busybox:gzip", &[]);
    let reference = registry.reference("busybox:gzip");
    for kill_containerd_first in [false, true] {
        let mut containerd = Containerd::start();
        containerd.ctr_ok(&["image", "pull", "--plain-http", &reference]);
        containerd.ctr_ok(&["run", "-d", &reference, "sleeper", "sleep", "600"]);
        let address = containerd.address();
        let dir = containerd.dir().to_path_buf();
        let namespace = containerd.namespace().to_string();
        let shims = processes_mentioning(address.as_os_str().as_encoded_bytes());
        assert!(!shims.is_empty(), "no shim names {}", address.display());
        assert!(
            !mounts_below(&dir).is_empty(),
            "the container has no rootfs mount"
        );
        if kill_containerd_first {
            let pid = containerd.pid().expect("containerd pid");
            // SAFETY: kill(2) on the containerd this test started.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            assert!(wait_for(Duration::from_secs(10), || !containerd.is_running()));
        }
        drop(containerd);
        let what = if kill_containerd_first {
            "after containerd was killed"
        } else {
            "with containerd answering"
        };
        assert!(
            shims.iter().all(|pid| !is_alive(*pid)),
            "shims {shims:?} outlived the guard {what}"
        );
        assert_eq!(mounts_below(&dir), vec![], "mounts left {what}");
        assert!(!dir.exists(), "{} left {what}", dir.display());
        let runc = Path::new("/run/containerd/runc").join(&namespace);
        assert!(!runc.exists(), "{} left {what}", runc.display());
        let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path().join(&namespace))
            .chain([Path::new("/sys/fs/cgroup").join(&namespace)])
            .filter(|p| p.exists())
            .collect();
        assert_eq!(cgroups, Vec::<PathBuf>::new(), "cgroups left {what}");
    }
}

// ---------------------------------------------------------------------
// The layerfs snapshotter.
// ---------------------------------------------------------------------

#[test]
fn rpull_then_run_shows_the_image_files_exactly() {
    require_rig!();
    let rig = Rig::new();
    for (n, image) in [busybox_gzip(), busybox_zstd()].into_iter().enumerate() {
        let reference = rig.push(image, "busybox");
        rig.rpull(&reference);
        rig.assert_no_layer_in_content_store(image);
        let out = rig.run(true, &reference, &format!("c{n}"), &image.check_script());
        assert_eq!(out, image.check_output(), "{reference} with layerfs");
    }
}

#[test]
fn a_write_lands_in_the_containers_upper_only() {
    require_rig!();
    let rig = Rig::new();
    let image = busybox_gzip();
    let reference = rig.push(image, "busybox");
    rig.rpull(&reference);

    let write = "echo written > /data/new.txt && echo changed >> /data/one.txt && \
                 rm /data/top.txt && cat /data/new.txt";
    let args = [
        "run",
        "--snapshotter",
        SNAPSHOTTER,
        &reference,
        "writer",
        "sh",
        "-c",
        write,
    ];
    let run = rig.containerd.ctr(&args);
    rig.expect_success(&run, "ctr run writer");
    assert_eq!(run.stdout, "written\n");

    let upper = upperdir(&rig, "writer");
    let read = |name: &str| std::fs::read(upper.join(name)).ok();
    assert_eq!(
        read("data/new.txt").as_deref(),
        Some(&b"written\n"[..]),
        "the new file is not in the writer's upper {}",
        upper.display()
    );
    assert_eq!(
        read("data/one.txt").as_deref(),
        Some(&b"one\nchanged\n"[..]),
        "the changed file was not copied up to {}",
        upper.display()
    );
    rig.containerd.ctr_ok(&["containers", "delete", "writer"]);

    let out = rig.run(
        true,
        &reference,
        "reader",
        &format!(
            "{} && test ! -e /data/new.txt && echo no-new",
            image.check_script()
        ),
    );
    assert_eq!(
        out,
        format!("{}no-new\n", image.check_output()),
        "a second container of the image saw the first one's writes"
    );
}

#[test]
fn a_layer_unpacked_over_lazy_layers_runs_on_one_mount_of_both() {
    require_rig!();
    let rig = Rig::new();
    let lazy = busybox_gzip();
    let reference = rig.push(lazy, "busybox");
    rig.rpull(&reference);
    // Its bottom two layers are busybox's, already there as registry
    // layers: containerd unpacks only the patch, over a layerfs mount of
    // them, and the container's lower is one mount of all three.
    let image = patched();
    let patched_reference = rig.push(image, "patched");
    rig.pull(true, &patched_reference);
    let out = rig.run(true, &patched_reference, "mixed", &image.check_script());
    assert_eq!(out, image.check_output());
    let out = rig.run(true, &reference, "lazy", &lazy.check_script());
    assert_eq!(out, lazy.check_output());
}

#[test]
fn the_file_to_directory_image_runs_with_the_right_tree() {
    require_rig!();
    let rig = Rig::new();
    let image = skel();
    let reference = rig.push(image, "skel");
    rig.rpull(&reference);
    let script = format!(
        "test -d /etc/skel && ls -A /etc/skel && {}",
        image.check_script()
    );
    let out = rig.run(true, &reference, "skel", &script);
    assert_eq!(out, format!(".bashrc\n.profile\n{}", image.check_output()));
}

#[test]
fn an_ordinary_pull_runs_with_the_layerfs_snapshotter() {
    require_rig!();
    let rig = Rig::new();
    let image = busybox_gzip();
    let reference = rig.push(image, "busybox");
    rig.pull(true, &reference);
    let out = rig.run(true, &reference, "ordinary", &image.check_script());
    assert_eq!(out, image.check_output());
    // Containers of an ordinarily pulled image keep working after another
    // one wrote.
    let out = rig.run(
        true,
        &reference,
        "ordinary-writer",
        "echo x > /data/one.txt && cat /data/one.txt",
    );
    assert_eq!(out, "x\n");
    let out = rig.run(true, &reference, "ordinary-again", &image.check_script());
    assert_eq!(out, image.check_output());
}

#[test]
fn after_a_reboot_style_restart_a_container_mounts_its_chain_again() {
    require_rig!();
    let mut rig = Rig::new();
    let image = busybox_gzip();
    let reference = rig.push(image, "busybox");
    rig.rpull(&reference);
    // The container's snapshot exists (and its chain is mounted) before
    // its task starts.
    rig.containerd.ctr_ok(&[
        "containers",
        "create",
        "--snapshotter",
        SNAPSHOTTER,
        &reference,
        "rebooted",
        "--",
        "sh",
        "-c",
        &image.check_script(),
    ]);
    assert!(!rig.snapshotter().mounts_of_type("fuse.layerfs").is_empty());
    // As after a reboot: the snapshotter gone and every mount with it.
    rig.snapshotter().stop(libc::SIGTERM);
    for mount in rig.snapshotter().mounts_of_type("fuse.layerfs") {
        let status = Command::new("umount")
            .arg(&mount)
            .status()
            .expect("run umount");
        assert!(status.success(), "umount {}", mount.display());
    }
    assert!(rig.snapshotter().mounts_of_type("fuse.layerfs").is_empty());
    rig.snapshotter().launch();
    rig.await_containerd();
    // Starting the task asks for the snapshot's mounts: the chain is
    // mounted again.
    let out = rig.containerd.ctr_ok(&["tasks", "start", "rebooted"]);
    assert_eq!(out, image.check_output());
    rig.containerd.ctr_ok(&["containers", "delete", "rebooted"]);
}

#[test]
fn removing_the_image_and_its_snapshots_leaves_no_mount() {
    require_rig!();
    let mut rig = Rig::new();
    let image = busybox_gzip();
    let reference = rig.push(image, "busybox");
    rig.rpull(&reference);
    rig.containerd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        SNAPSHOTTER,
        &reference,
        "sleeper",
        "sleep",
        "600",
    ]);
    let mounted = rig.snapshotter().mounts_of_type("fuse.layerfs");
    assert!(
        !mounted.is_empty(),
        "a running container of a lazily pulled image has no fuse.layerfs mount below the \
         snapshotter's root; mounts there: {:?}",
        mounts_below(rig.snapshotter().dir.path())
    );

    rig.containerd
        .ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", "sleeper"]);
    let stopped = wait_for(Duration::from_secs(20), || {
        rig.containerd
            .ctr(&["tasks", "delete", "sleeper"])
            .status
            .success()
    });
    assert!(stopped, "the sleeper task did not stop");
    rig.containerd.ctr_ok(&["containers", "delete", "sleeper"]);
    rig.containerd
        .ctr_ok(&["image", "rm", "--sync", &reference]);

    // containerd's GC removes the image's snapshots; any it left are
    // removed by hand, top first.
    for _ in 0..8 {
        let left = rig.layerfs_snapshots();
        if left.is_empty() {
            break;
        }
        for key in left.iter().rev() {
            let _ = rig
                .containerd
                .ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "rm", key]);
        }
    }
    assert_eq!(rig.layerfs_snapshots(), Vec::<String>::new());
    let snapshotter = rig.snapshotter.as_ref().expect("snapshotter");
    let gone = wait_for(UNMOUNT_LIMIT, || {
        snapshotter.mounts_of_type("fuse.layerfs").is_empty()
            && mounts_below(rig.containerd.dir()).is_empty()
    });
    assert!(
        gone,
        "mounts left after the image and its snapshots were removed: {:?} {:?}",
        mounts_below(snapshotter.dir.path()),
        mounts_below(rig.containerd.dir())
    );
}

#[test]
fn a_snapshotter_restart_does_not_disturb_a_running_container() {
    require_rig!();
    let mut rig = Rig::new();
    let image = busybox_gzip();
    let reference = rig.push(image, "busybox");
    rig.rpull(&reference);

    // The loop hashes the image's files and lists a directory (readdir is
    // not cached) until /ctl/stop appears, printing one line per round and
    // FAIL on the first wrong answer.
    let ctl = rig.containerd.scratch("ctl");
    let script = format!(
        "want=$(sha256sum {paths}); n=0; \
         while [ ! -e /ctl/stop ] && [ $n -lt 100000 ]; do \
           got=$(sha256sum {paths}) && ls /data/sub > /dev/null || {{ echo FAIL $n; exit 1; }}; \
           [ \"$got\" = \"$want\" ] || {{ echo FAIL $n wrong; exit 1; }}; \
           n=$((n+1)); echo round $n; \
         done; \
         [ \"$want\" = \"$(cat /ctl/want)\" ] && echo same",
        paths = image.paths()
    );
    std::fs::write(ctl.join("want"), image.sums().trim_end()).expect("write /ctl/want");
    let out_path = ctl.join("out");
    let out = File::create(&out_path).expect("create output file");
    let mount = format!("type=bind,src={},dst=/ctl,options=rbind:rw", ctl.display());
    let mut child = rig
        .containerd
        .command(
            CTR,
            &[
                "run",
                "--rm",
                "--snapshotter",
                SNAPSHOTTER,
                "--mount",
                &mount,
                &reference,
                "looper",
                "sh",
                "-c",
                &script,
            ],
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone output file"))
        .stderr(out)
        .spawn()
        .expect("spawn ctr run looper");
    let rounds = || {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("round"))
            .count()
    };
    let looping = wait_for(Duration::from_secs(60), || {
        rounds() >= 5 || matches!(child.try_wait(), Ok(Some(_)))
    });
    let output = || std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        looping && rounds() >= 5,
        "the reading loop did not get going: {}\n{}",
        tail(&output(), 20),
        rig.logs()
    );

    // Down for a moment, as in `systemctl restart`: the loop's reads go
    // on (daemons that outlive the snapshotter) or wait (a handed-over
    // /dev/fuse), but never fail. Page cache and dentries would serve the
    // loop without FUSE: dropping them makes the rounds below read through.
    rig.snapshotter().stop(libc::SIGTERM);
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    std::thread::sleep(Duration::from_secs(1));
    rig.snapshotter().launch();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let after = rounds();
    let kept_going = wait_for(Duration::from_secs(60), || {
        rounds() >= after + 5 || matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(
        kept_going && rounds() >= after + 5,
        "the loop stopped after the snapshotter restarted: {}",
        tail(&output(), 20)
    );
    std::fs::write(ctl.join("stop"), "").expect("write /ctl/stop");
    let exited = wait_for(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for ctr run");
    let text = output();
    assert!(
        exited && status.success() && !text.contains("FAIL") && text.ends_with("same\n"),
        "the reading loop failed across the restart ({status}): {}\n{}",
        tail(&text, 20),
        rig.logs()
    );
    // The restarted snapshotter still serves containerd: a new container
    // of the image starts and sees it intact.
    rig.await_containerd();
    let out = rig.run(true, &reference, "after-restart", &image.check_script());
    assert_eq!(out, image.check_output());
}

#[test]
fn with_a_stored_index_pull_and_run_fetch_under_a_tenth_of_the_blobs() {
    require_rig!();
    let rig = Rig::new();
    let image = big();
    let reference = rig.push(image, "big");
    // Stores the layer indexes in the snapshotter's cache, as a first
    // `layerfs ls` of the reference does.
    let cache = rig.snapshotter.as_ref().expect("snapshotter").cache();
    let run = run_captured(
        Command::new(bin())
            .arg("ls")
            .arg("--cache-dir")
            .arg(&cache)
            .arg(&reference),
    );
    run.expect_success(&format!("layerfs ls {reference}"));
    rig.proxy.clear();

    rig.rpull(&reference);
    rig.assert_no_layer_in_content_store(image);
    let out = rig.run(true, &reference, "reader", &image.check_script());
    assert_eq!(out, image.check_output());
    let fetched = rig.proxy.blob_bytes();
    assert!(
        fetched * 10 < image.blob_bytes,
        "pull and run fetched {fetched} blob bytes of {} ({:.1}%); requests:\n{:#?}",
        image.blob_bytes,
        fetched as f64 * 100.0 / image.blob_bytes as f64,
        rig.proxy.blob_exchanges()
    );
}
