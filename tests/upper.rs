//! `layerfs mount --upper`: the stack as the lower of a kernel overlay.
//! Every kind of change made through the writable mount lands in the upper
//! in overlayfs' forms, survives a remount over the same upper, and (as a
//! layer made by `layerfs commit`) gives back the writable view; a
//! killed daemon or a refused overlay leaves nothing mounted.

mod common;

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{
    bin, daemons_serving, force_unmount, is_alive, is_mounted, layerfs, mount_args, run_captured,
    wait_for,
};
use common::tree::{snapshot, tree_diff, xattrs_of, Fields, Mtime};
use common::{Expected, Layer, Layers, Mount};

/// A writable mount in a temporary directory: `mnt`, the upper `up` and
/// (beside it, as layerfs places them) its lower and work directories.
/// Dropping it unmounts the overlay and the lower, whatever happened.
struct Writable {
    dir: tempfile::TempDir,
}

impl Writable {
    fn new() -> Writable {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-upper")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(dir.path().join("mnt")).expect("mkdir mnt");
        Writable { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().expect("canonical tempdir")
    }

    fn mnt(&self) -> PathBuf {
        self.root().join("mnt")
    }

    fn upper(&self) -> PathBuf {
        self.root().join("up")
    }

    fn lower(&self) -> PathBuf {
        self.root().join(".up.layerfs-lower")
    }

    /// `layerfs mount --upper up LAYERS... mnt`, which must succeed.
    fn mount(&self, layers: &[PathBuf]) {
        let run = layerfs(self.mount_args(&self.upper(), layers));
        run.expect_success("layerfs mount --upper");
        assert!(is_mounted(&self.mnt()), "the overlay is not mounted");
        assert!(is_mounted(&self.lower()), "the lower is not mounted");
    }

    fn mount_args(&self, upper: &Path, layers: &[PathBuf]) -> Vec<std::ffi::OsString> {
        let mut args = vec!["mount".into(), "--upper".into(), upper.into()];
        args.extend(layers.iter().map(|l| l.clone().into_os_string()));
        args.push(self.mnt().into());
        args
    }

    fn umount(&self) {
        layerfs([OsStr::new("umount"), self.mnt().as_os_str()]).expect_success("layerfs umount");
        self.assert_nothing_mounted();
    }

    fn assert_nothing_mounted(&self) {
        assert!(!is_mounted(&self.mnt()), "the overlay is still mounted");
        assert!(!is_mounted(&self.lower()), "the lower is still mounted");
        assert!(
            !self.lower().exists(),
            "the lower mountpoint is left behind"
        );
        let ended = wait_for(std::time::Duration::from_secs(10), || {
            daemons_serving(&self.mnt())
                .into_iter()
                .all(|pid| !is_alive(pid))
        });
        assert!(ended, "a daemon of the writable mount is still running");
    }
}

impl Drop for Writable {
    fn drop(&mut self) {
        force_unmount(&self.mnt());
        force_unmount(&self.lower());
    }
}

/// Three layers holding something for each kind of change.
fn stack() -> Layers {
    let mut layers = Layers::new();
    layers
        .add(
            &Layer::new(common::Format::Pax)
                .dir("etc")
                .file("etc/conf", "v1\n")
                .file("etc/remove", "x")
                .dir("gone")
                .file("gone/a", "a")
                .file("gone/b", "b")
                .file("f2d", "file")
                .dir("d2f")
                .file("d2f/inner", "inner"),
        )
        .add(
            &Layer::new(common::Format::Pax)
                .dir("moved")
                .file("moved/one", "1")
                .file("moved/two", "2")
                .file("shared", "shared")
                .file("modes", "m")
                .xattr("user.lower", "kept"),
        )
        .add(
            &Layer::new(common::Format::Pax)
                .file("etc/conf", "v2\n")
                .whiteout("gone/b"),
        );
    layers
}

fn sh(script: &str, dir: &Path) {
    let status = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("run sh");
    assert!(status.success(), "sh -c {script:?} failed: {status}");
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("path");
    let c_name = CString::new(name).expect("name");
    // SAFETY: valid C strings and a buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Every kind of change, through the writable mount, with the shell and
/// coreutils as a user would.
fn change_everything(mnt: &Path) {
    std::fs::write(mnt.join("etc/conf"), "v2\nedited\n").expect("copy-up write");
    std::fs::remove_file(mnt.join("etc/remove")).expect("delete a lower file");
    std::fs::remove_dir_all(mnt.join("gone")).expect("delete a lower dir");
    std::fs::remove_file(mnt.join("f2d")).expect("delete f2d");
    std::fs::create_dir(mnt.join("f2d")).expect("f2d as a dir");
    std::fs::write(mnt.join("f2d/new"), "new").expect("file in f2d");
    std::fs::remove_dir_all(mnt.join("d2f")).expect("delete d2f");
    std::fs::write(mnt.join("d2f"), "now a file").expect("d2f as a file");
    // redirect_dir is off: rename(2) of a lower directory is EXDEV, and mv
    // copies, as on any such overlay.
    sh("mv moved renamed", mnt);
    std::fs::set_permissions(mnt.join("modes"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    std::os::unix::fs::lchown(mnt.join("modes"), Some(1234), Some(5678)).expect("chown");
    std::fs::hard_link(mnt.join("shared"), mnt.join("hardlink")).expect("link");
    set_xattr(&mnt.join("etc/conf"), "user.test", b"value");
    sh("mkfifo fifo", mnt);
    sh(
        "mkdir many; i=0; while [ $i -lt 10000 ]; do echo $i > many/f$i; i=$((i+1)); done",
        mnt,
    );
}

/// What [`change_everything`] must show through the mount.
fn check_changes(mnt: &Path) {
    let read = |p: &str| std::fs::read_to_string(mnt.join(p)).expect(p);
    assert_eq!(read("etc/conf"), "v2\nedited\n");
    assert!(!mnt.join("etc/remove").exists());
    assert!(!mnt.join("gone").exists());
    assert!(mnt.join("f2d").is_dir());
    assert_eq!(read("f2d/new"), "new");
    assert_eq!(read("d2f"), "now a file");
    assert!(!mnt.join("moved").exists());
    assert_eq!(read("renamed/one"), "1");
    assert_eq!(read("renamed/two"), "2");
    let modes = std::fs::metadata(mnt.join("modes")).expect("modes");
    assert_eq!(
        (modes.mode() & 0o7777, modes.uid(), modes.gid()),
        (0o600, 1234, 5678)
    );
    // Not the inode numbers: with index=off, overlayfs shows a copied-up
    // file under its lower inode number until its inode is evicted, and a
    // link made meanwhile under the upper's (see `forget_inodes`).
    let shared = std::fs::metadata(mnt.join("shared")).expect("shared");
    let link = std::fs::metadata(mnt.join("hardlink")).expect("hardlink");
    assert_eq!((shared.nlink(), link.nlink()), (2, 2));
    assert_eq!(read("hardlink"), "shared");
    let conf_xattrs = xattrs_of(&mnt.join("etc/conf"));
    assert!(conf_xattrs.contains(&(b"user.test".to_vec(), b"value".to_vec())));
    assert!(xattrs_of(&mnt.join("modes")).contains(&(b"user.lower".to_vec(), b"kept".to_vec())));
    let fifo = std::fs::symlink_metadata(mnt.join("fifo")).expect("fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(
        std::fs::read_dir(mnt.join("many")).expect("many").count(),
        10000
    );
    assert_eq!(read("many/f9999"), "9999\n");
}

/// Has the kernel evict unused dentries and inodes, so that overlayfs
/// looks every path up again and shows the two names of a hardlink made to
/// a copied-up lower file under one inode number (both the upper's), as
/// a later mount does: what `cp -a` needs to copy them as one file.
fn forget_inodes() {
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop dentries and inodes");
}

/// Whether `path` is an overlayfs whiteout: a char device 0/0.
fn is_whiteout(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// The tree under `root` as `expected` says, or a panic listing the
/// differences.
fn assert_same(root: &Path, expected: &Expected) {
    let diffs = tree_diff(expected, &snapshot(root));
    assert!(
        diffs.is_empty(),
        "{} differs from the writable view:\n{}",
        root.display(),
        diffs.join("\n")
    );
}

#[test]
fn changes_land_in_the_upper_in_overlay_forms_and_survive_remount_and_create() {
    require!(Fuse);
    let layers = stack();
    let w = Writable::new();
    w.mount(&layers.paths);
    change_everything(&w.mnt());
    check_changes(&w.mnt());

    forget_inodes();
    let copy = tempfile::tempdir().expect("copy dir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(w.mnt().join("."))
        .arg(copy.path())
        .status()
        .expect("cp -a");
    assert!(status.success(), "cp -a of the writable view failed");
    let view = Expected::from_snapshot(
        &snapshot(copy.path()),
        Fields {
            xattrs: true,
            mtime: Mtime::Seconds,
        },
    );
    assert_same(&w.mnt(), &view);
    w.umount();

    let up = w.upper();
    for gone in ["etc/remove", "gone", "moved"] {
        assert!(
            is_whiteout(&up.join(gone)),
            "{gone}: no whiteout in the upper"
        );
    }
    assert_eq!(
        xattrs_of(&up.join("f2d")),
        vec![(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())],
        "f2d replaced a file: an opaque directory"
    );
    assert_eq!(
        std::fs::read(up.join("etc/conf")).expect("upper conf"),
        b"v2\nedited\n"
    );

    // The same upper, mounted again over the same stack.
    w.mount(&layers.paths);
    check_changes(&w.mnt());
    assert_same(&w.mnt(), &view);
    w.umount();

    // The upper as a layer on top of the stack, mounted read-only.
    let changes = layers.dir().join("changes.tar");
    layerfs([
        OsStr::new("commit"),
        up.as_os_str(),
        OsStr::new("-o"),
        changes.as_os_str(),
    ])
    .expect_success("layerfs commit");
    let mut stacked = layers.paths.clone();
    stacked.push(changes);
    let read_only = Mount::new(&stacked);
    assert_same(read_only.path(), &view);
}

#[test]
fn umount_takes_both_mounts_down_after_the_daemon_was_killed() {
    require!(Root);
    let layers = stack();
    let w = Writable::new();
    w.mount(&layers.paths);
    std::fs::write(w.mnt().join("etc/conf"), "before the kill").expect("copy-up");
    std::fs::write(w.mnt().join("new"), "new").expect("new file");
    let daemons = daemons_serving(&w.mnt());
    assert_eq!(daemons.len(), 1, "one daemon serves the lower: {daemons:?}");
    // SAFETY: plain kill(2) of the daemon this test started.
    assert_eq!(unsafe { libc::kill(daemons[0] as i32, libc::SIGKILL) }, 0);
    assert!(wait_for(std::time::Duration::from_secs(10), || !is_alive(
        daemons[0]
    )));
    w.umount();
    assert_eq!(
        std::fs::read(w.upper().join("etc/conf")).expect("conf"),
        b"before the kill"
    );
    assert_eq!(std::fs::read(w.upper().join("new")).expect("new"), b"new");
}

#[test]
fn an_upper_that_is_a_file_fails_with_nothing_mounted() {
    require!(Root);
    let layers = stack();
    let w = Writable::new();
    let file = w.root().join("up");
    std::fs::write(&file, "not a dir").expect("write file");
    let run = layerfs(w.mount_args(&file, &layers.paths));
    assert!(!run.status.success(), "mount over a file upper succeeded");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error: {}", run.stderr);
    assert!(
        lines[0].contains("--upper") && lines[0].contains("not a directory"),
        "{}",
        lines[0]
    );
    w.assert_nothing_mounted();
}

/// Whether `root` holds exactly `names` (hidden ones included).
fn assert_holds(root: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(root)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, names, "left in {}", root.display());
}

#[test]
fn a_bad_layer_fails_with_nothing_mounted_or_created() {
    require!(Root);
    let mut layers = stack();
    layers.add_bytes(b"not a tar at all");
    let w = Writable::new();
    let run = layerfs(w.mount_args(&w.upper(), &layers.paths));
    assert!(!run.status.success(), "a bad layer was mounted");
    assert!(run.stderr.contains("not a tar"), "{}", run.stderr);
    w.assert_nothing_mounted();
    assert_holds(&w.root(), &["mnt"]);
}

#[test]
fn without_root_it_says_what_is_missing_and_mounts_nothing() {
    require!(Root);
    let layers = stack();
    let w = Writable::new();
    for dir in [w.root(), layers.dir().to_path_buf()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
        .args(w.mount_args(&w.upper(), &layers.paths));
    let run = run_captured(&mut cmd);
    assert!(!run.status.success(), "mounted without root");
    assert!(
        run.stderr.contains("needs root") && run.stderr.contains("userxattr"),
        "{}",
        run.stderr
    );
    w.assert_nothing_mounted();
    assert_holds(&w.root(), &["mnt"]);
}

#[test]
fn a_refused_overlay_takes_the_lower_down_again() {
    require!(Fuse);
    // An overlay is refused as the upper of another (EINVAL): only the
    // kernel can say no there, after the lower is mounted.
    let layers = stack();
    let outer = Writable::new();
    outer.mount(&layers.paths);
    let inner = Writable::new();
    let upper = outer.mnt().join("up");
    let lower = outer.mnt().join(".up.layerfs-lower");
    let _lower_guard = Mount::guard(&lower);
    let run = layerfs(inner.mount_args(&upper, &layers.paths));
    assert!(!run.status.success(), "an overlay upper was accepted");
    assert!(
        run.stderr.contains("overlay mount refused"),
        "{}",
        run.stderr
    );
    assert!(!is_mounted(&inner.mnt()), "the overlay is mounted");
    assert!(!is_mounted(&lower), "the lower is still mounted");
    assert!(!lower.exists(), "the lower mountpoint is left behind");
    let ended = wait_for(std::time::Duration::from_secs(10), || {
        daemons_serving(&inner.mnt())
            .into_iter()
            .all(|pid| !is_alive(pid))
    });
    assert!(ended, "the lower's daemon is still running");
    assert!(
        !outer.mnt().join("up").exists(),
        "the upper made for it is left"
    );
    outer.umount();
}

#[test]
fn the_stack_answers_the_file_flag_ioctls_of_copy_up_with_enotty() {
    require!(Fuse);
    // What overlayfs' copy-up asks the lower; ENOSYS there would fail it.
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
    // The kernel turns a server's ENOSYS into ENOTTY for the caller (5.15
    // and later), so only the daemon's log tells the two answers apart:
    // fuser's default handler logs each call it did not answer (a warning
    // that layerfs shows once asked to).
    let layers = stack();
    let log = layers.dir().join("daemon.log");
    let log_arg = format!("--log-file={}", log.display());
    let mount = Mount::fresh();
    run_captured(
        Command::new(bin())
            .args(mount_args(&[&log_arg], &layers.paths, mount.path()))
            .env("RUST_LOG", "warn,fuser=warn"),
    )
    .expect_success("layerfs mount");
    let file = std::fs::File::open(mount.join("etc/conf")).expect("open");
    for request in [FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR] {
        let mut out = [0u8; 64];
        // SAFETY: the buffer is larger than either request writes.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                request,
                out.as_mut_ptr(),
            )
        };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((rc, errno), (-1, Some(libc::ENOTTY)), "ioctl {request:#x}");
    }
    drop(file);
    drop(mount);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains("ioctl"), "the daemon logged: {logged}");
}

#[test]
fn umount_of_a_users_own_overlay_leaves_the_layerfs_mount_below() {
    require!(Fuse);
    let layers = stack();
    let below = layers.mount();
    let w = Writable::new();
    for dir in ["up", "work"] {
        std::fs::create_dir(w.root().join(dir)).expect("mkdir");
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        below.path().display(),
        w.upper().display(),
        w.root().join("work").display()
    );
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &data])
        .arg(w.mnt())
        .status()
        .expect("mount -t overlay");
    assert!(status.success(), "mount -t overlay failed");
    layerfs([OsStr::new("umount"), w.mnt().as_os_str()]).expect_success("layerfs umount");
    assert!(!is_mounted(&w.mnt()), "the overlay is still mounted");
    assert!(
        is_mounted(below.path()),
        "the user's layerfs mount went too"
    );
}

/// A root holding a shell, `mkdir` and `rm`, and the libraries they load
/// (as `ldd` lists them), enough to `chroot` into.
fn shell_root(root: &Path) {
    let mut files: Vec<PathBuf> = Vec::new();
    for program in ["/bin/dash", "/bin/mkdir", "/bin/rm"] {
        files.push(PathBuf::from(program));
        let ldd = Command::new("ldd").arg(program).output().expect("run ldd");
        assert!(ldd.status.success(), "ldd {program}");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)".
            let path = line.split("=>").last().unwrap_or("").trim();
            if let Some(path) = path
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                files.push(PathBuf::from(path));
            }
        }
    }
    for file in files {
        let inside = root.join(file.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(inside.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&file, &inside).expect("copy into the root");
    }
    std::os::unix::fs::symlink("dash", root.join("bin/sh")).expect("sh link");
}

/// A program run in a chroot of the writable mount writes 10,000 files
/// and removes one of the stack's; the upper, committed, stacks to the
/// same result.
#[test]
fn a_chroot_of_the_writable_mount_writes_many_files_that_survive_commit() {
    require!(Fuse);
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    shell_root(&root);
    std::fs::write(root.join("motd"), "remove me").expect("write motd");
    let base = work.path().join("base.tar");
    layerfs([
        OsStr::new("create"),
        root.as_os_str(),
        OsStr::new("-o"),
        base.as_os_str(),
    ])
    .expect_success("layerfs create");

    let w = Writable::new();
    w.mount(std::slice::from_ref(&base));
    let out = Command::new("chroot")
        .arg(w.mnt())
        .args(["/bin/sh", "-ec"])
        .arg(
            "mkdir /data; i=0
             while [ $i -lt 10000 ]; do echo $i > /data/f$i; i=$((i+1)); done
             rm /motd; echo done > /status",
        )
        .output()
        .expect("run chroot");
    assert!(
        out.status.success(),
        "chroot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.umount();

    let changes = work.path().join("changes.tar");
    layerfs([
        OsStr::new("commit"),
        w.upper().as_os_str(),
        OsStr::new("-o"),
        changes.as_os_str(),
    ])
    .expect_success("layerfs commit");
    let stacked = Mount::new(&[base, changes]);
    let data = std::fs::read_dir(stacked.path().join("data")).expect("read data");
    assert_eq!(data.count(), 10_000);
    assert_eq!(
        std::fs::read(stacked.path().join("data/f9999")).expect("f9999"),
        b"9999\n"
    );
    assert_eq!(
        std::fs::read(stacked.path().join("status")).expect("status"),
        b"done\n"
    );
    assert!(
        !stacked.path().join("motd").exists(),
        "the removal survives"
    );
    assert!(
        stacked.path().join("bin/dash").exists(),
        "the stack is under it"
    );
}
