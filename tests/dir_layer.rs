//! Directories as layers: an overlayfs upper directory made by the kernel
//! (tombstones, an opaque directory, copied-up files) on a tar, compared
//! with the kernel's own overlay mount of the same lower and upper; an
//! extracted layer in the middle of a stack, compared with the same layer
//! as a tar; a directory of every kind of entry; `export` of a stack with
//! a directory read back by GNU tar; a file changed under the mount; and
//! directories that cannot be read.
//!
//! The overlay tests mount overlayfs, so they need root (as the whole
//! suite does).

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::layer::pseudo_random;
use common::mount::{is_mounted, layerfs, run_captured, KernelMount};
use common::tree::{snapshot, Fields, Kind, Snapshot};
use common::{assert_tree, tar_warnings, Expected, Format, Layer, Mount};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("layerfs-dirlayer")
        .tempdir()
        .expect("tempdir")
}

/// Extracts `tar` into `dir` as root would unpack a layer: owners, modes,
/// times and xattrs kept.
fn extract(tar: &Path, dir: &Path) {
    fs::create_dir_all(dir).expect("mkdir");
    let run = run_captured(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(dir),
    );
    run.expect_success("tar -x");
    let warnings = tar_warnings(&run.stderr);
    assert!(warnings.is_empty(), "GNU tar warned: {warnings:?}");
}

fn mkfifo(path: &Path) {
    run_captured(Command::new("mkfifo").arg(path)).expect_success("mkfifo");
}

fn mknod_char(path: &Path, major: u32, minor: u32) {
    run_captured(Command::new("mknod").arg(path).args([
        "c",
        &major.to_string(),
        &minor.to_string(),
    ]))
    .expect_success("mknod");
}

/// A name that is not UTF-8.
fn odd_name() -> OsString {
    OsString::from_vec(b"caf\xe9-\xff.bin".to_vec())
}

/// The base image of the overlay test.
fn base_layer() -> Layer {
    Layer::new(Format::Pax)
        .dir("etc")
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .file("etc/passwd", "root:x:0:0\n")
        .xattr("user.note", "kept")
        .dir("data")
        .file("data/a", "a")
        .dir("data/sub")
        .file("data/sub/b", "b")
        .dir("usr")
        .dir("usr/share")
        .file("usr/share/doc", "d")
        .file("usr/keep", "k")
        .dir("run")
        .file("run/old", "o")
        .file("big", pseudo_random(200_000, 1))
}

/// Changes made through a kernel overlay mount, so that the upper
/// directory gets whatever overlayfs really writes.
fn change_through_overlay(merged: &Path) {
    fs::remove_file(merged.join("etc/passwd")).expect("rm");
    fs::remove_dir_all(merged.join("data")).expect("rm -r");
    fs::create_dir(merged.join("data")).expect("mkdir");
    fs::write(merged.join("data/new"), "replaced").expect("write");
    fs::remove_dir_all(merged.join("usr/share")).expect("rm -r");
    fs::set_permissions(merged.join("usr/keep"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let hosts = merged.join("etc/hosts");
    let mut text = fs::read(&hosts).expect("read");
    text.extend_from_slice(b"10.0.0.1 db\n");
    fs::write(&hosts, text).expect("write");
    xattr::set(&hosts, "user.edited", b"yes").expect("setfattr");
    fs::hard_link(&hosts, merged.join("etc/hosts.link")).expect("ln");
    symlink("hosts", merged.join("etc/alias")).expect("ln -s");
    fs::rename(merged.join("run/old"), merged.join("run/new")).expect("mv");
    mkfifo(&merged.join("run/fifo"));
    fs::create_dir(merged.join("srv")).expect("mkdir");
    fs::write(merged.join("srv").join(odd_name()), "odd").expect("write");
    fs::write(merged.join("srv/big"), pseudo_random(300_000, 2)).expect("write");
    mknod_char(&merged.join("srv/null"), 1, 3);
}

/// An overlayfs upper directory on an extracted base tar.
struct Upper {
    tmp: tempfile::TempDir,
}

impl Upper {
    fn new() -> Upper {
        let tmp = tempdir();
        let base = base_layer().write(tmp.path(), "base.tar", common::Codec::Plain);
        assert_eq!(base, tmp.path().join("base.tar"));
        extract(&base, &tmp.path().join("lower"));
        let upper = Upper { tmp };
        fs::create_dir(upper.path("upper")).expect("mkdir");
        {
            let merged = upper.kernel_mount("merged");
            change_through_overlay(&merged.0);
        }
        // What the test is about: overlayfs' own records.
        let tomb = fs::symlink_metadata(upper.path("upper/etc/passwd")).expect("tombstone");
        assert!(tomb.file_type().is_char_device() && tomb.rdev() == 0);
        assert_eq!(
            xattr::get(upper.path("upper/data"), "trusted.overlay.opaque").expect("getfattr"),
            Some(b"y".to_vec())
        );
        upper
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The kernel's overlay of the upper directory on the extracted base.
    fn kernel_mount(&self, name: &str) -> KernelMount {
        let work = self.path(&format!("work-{name}"));
        fs::create_dir_all(&work).expect("mkdir work");
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.path("lower").display(),
            self.path("upper").display(),
            work.display()
        );
        KernelMount::overlay(&options, &self.path(name))
    }

    /// What the kernel shows, taken and unmounted before layerfs reads the
    /// upper directory.
    fn kernel_view(&self) -> Snapshot {
        let merged = self.kernel_mount("view");
        snapshot(&merged.0)
    }

    fn layers(&self) -> Vec<PathBuf> {
        vec![self.path("base.tar"), self.path("upper")]
    }
}

#[test]
fn an_overlayfs_upper_dir_on_a_tar_shows_what_the_kernel_overlay_shows() {
    require!(Fuse);
    let upper = Upper::new();
    let kernel = upper.kernel_view();
    for gone in [
        &b"etc/passwd"[..],
        b"data/a",
        b"data/sub",
        b"usr/share",
        b"run/old",
    ] {
        assert!(!kernel.contains_key(gone), "{}", gone.escape_ascii());
    }
    let expected = Expected::from_snapshot(&kernel, Fields::ALL);
    let mount = Mount::new(&upper.layers());
    assert_tree(mount.path(), &expected);
    drop(mount);

    // The same stack, listed: each tombstone and the opaque directory with
    // what they hid.
    let mut args: Vec<OsString> = vec!["ls".into(), "--all".into(), "--no-cache".into()];
    args.extend(upper.layers().into_iter().map(PathBuf::into_os_string));
    let run = layerfs(&args);
    run.expect_success("ls --all");
    for line in [
        "2\tetc/passwd\ttombstone: hides etc/passwd (file, layer 1)",
        "2\tusr/share\ttombstone: hides usr/share (dir, layer 1, 2 entries)",
        "2\tdata\topaque: hides data/a (file, layer 1), data/sub (dir, layer 1, 2 entries)",
        "2\trun/old\ttombstone: hides run/old (file, layer 1)",
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "{line:?} not in:\n{}",
            run.stdout
        );
    }
}

#[test]
fn an_export_of_a_stack_with_an_upper_dir_extracts_to_the_kernel_overlay() {
    require!(Root);
    let upper = Upper::new();
    let kernel = upper.kernel_view();
    let flat = upper.path("flat.tar");
    let mut args: Vec<OsString> = vec!["export".into(), "--no-cache".into()];
    args.extend(upper.layers().into_iter().map(PathBuf::into_os_string));
    args.extend(["-o".into(), flat.clone().into_os_string()]);
    layerfs(&args).expect_success("export");
    let extracted = upper.path("extracted");
    extract(&flat, &extracted);
    assert_tree(&extracted, &Expected::from_snapshot(&kernel, Fields::ALL));
}

/// The middle layer of the stack test: whiteouts, an opaque marker, a
/// hardlink, a symlink, new and replaced files.
fn middle_layer() -> Layer {
    Layer::new(Format::Pax)
        .dir("etc")
        .whiteout("etc/passwd")
        .file("etc/hosts", "10.0.0.2 mid\n")
        .mode(0o640)
        .owner(7, 8)
        .xattr("user.mid", "1")
        .hardlink("etc/hosts.same", "etc/hosts")
        .symlink("etc/link", "../data")
        .dir("data")
        .opaque("data")
        .file("data/only", "only this")
        .dir("usr")
        .file("usr/mid-big", pseudo_random(150_000, 3))
}

#[test]
fn an_extracted_layer_in_the_middle_merges_like_the_same_layer_as_a_tar() {
    require!(Fuse);
    let tmp = tempdir();
    let base = base_layer().write(tmp.path(), "base.tar", common::Codec::Gzip);
    let mid_tar = middle_layer().write(tmp.path(), "mid.tar", common::Codec::Plain);
    let top = Layer::new(Format::Ustar)
        .dir("usr")
        .file("usr/keep", "top wins")
        .whiteout("etc/link")
        .write(tmp.path(), "top.tar", common::Codec::Zstd);
    let mid_dir = tmp.path().join("mid");
    extract(&mid_tar, &mid_dir);
    assert!(mid_dir.join("etc/.wh.passwd").exists() && mid_dir.join("data/.wh..wh..opq").exists());

    let as_tars = Mount::new(&[base.clone(), mid_tar, top.clone()]);
    let reference = snapshot(as_tars.path());
    drop(as_tars);
    assert!(!reference.contains_key(&b"etc/passwd"[..]) && !reference.contains_key(&b"data/a"[..]));
    let stack = [base, mid_dir, top];
    let with_dir = Mount::new(&stack);
    assert_tree(
        with_dir.path(),
        &Expected::from_snapshot(&reference, Fields::ALL),
    );
    drop(with_dir);

    // `ls --layer 2` lists the directory as stored, markers included.
    let mut args: Vec<OsString> = vec!["ls".into(), "--layer".into(), "2".into()];
    args.extend(stack.iter().map(|p| p.clone().into_os_string()));
    let run = layerfs(&args);
    run.expect_success("ls --layer 2");
    for name in ["etc/.wh.passwd", "data/.wh..wh..opq", "etc/hosts.same"] {
        assert!(
            run.stdout.lines().any(|l| l == format!("2\t{name}")),
            "{name} not in:\n{}",
            run.stdout
        );
    }
}

#[test]
fn a_directory_of_every_kind_of_entry_mounts_as_itself() {
    require!(Fuse);
    let tmp = tempdir();
    let dir = tmp.path().join("layer");
    fs::create_dir_all(dir.join("a/b")).expect("mkdir");
    fs::write(dir.join("a/b/file"), pseudo_random(70_000, 4)).expect("write");
    fs::write(dir.join("a/empty"), "").expect("write");
    fs::hard_link(dir.join("a/b/file"), dir.join("z-link")).expect("ln");
    fs::hard_link(dir.join("a/b/file"), dir.join("a/another")).expect("ln");
    symlink("/etc/passwd", dir.join("abs")).expect("ln -s");
    symlink("../../../outside", dir.join("a/up")).expect("ln -s");
    symlink(&dir, dir.join("loop")).expect("ln -s");
    mkfifo(&dir.join("a/fifo"));
    mknod_char(&dir.join("tty"), 5, 0);
    fs::write(dir.join(odd_name()), "odd").expect("write");
    fs::set_permissions(dir.join("a/b"), fs::Permissions::from_mode(0o2750)).expect("chmod");
    xattr::set(dir.join("a/b/file"), "user.k", b"v").expect("setfattr");
    let old = SystemTime::UNIX_EPOCH + Duration::new(1_234_567_890, 123_456_789);
    fs::File::open(dir.join("a/empty"))
        .and_then(|f| f.set_modified(old))
        .expect("touch");
    run_captured(
        Command::new("chown")
            .args(["-h", "1234:5678"])
            .arg(dir.join("abs")),
    )
    .expect_success("chown");
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("sock")).expect("bind a socket");

    let mut reference = snapshot(&dir);
    assert_eq!(
        reference.remove(&b"sock"[..]).map(|n| n.kind),
        Some(Kind::Socket)
    );
    let expected = Expected::from_snapshot(&reference, Fields::ALL);
    let mount = Mount::new(std::slice::from_ref(&dir));
    assert_tree(mount.path(), &expected);
    assert_eq!(
        fs::read_link(mount.join("a/up")).expect("readlink"),
        Path::new("../../../outside")
    );
}

#[test]
fn a_file_changed_after_mounting_reads_eio_once_logged() {
    require!(Fuse);
    let tmp = tempdir();
    let dir = tmp.path().join("layer");
    fs::create_dir(&dir).expect("mkdir");
    for name in ["same-size", "grown", "gone", "fine"] {
        fs::write(dir.join(name), pseudo_random(10_000, 5)).expect("write");
    }
    let base = Layer::new(Format::Ustar).file("below", "b").write(
        tmp.path(),
        "base.tar",
        common::Codec::Plain,
    );
    let log = tmp.path().join("daemon.log");
    let log_arg = log.to_str().expect("utf-8 temp path");
    let mount = Mount::with_args(&["--log-file", log_arg], &[base, dir.clone()]);

    // Read for the first time after the change: the kernel keeps pages it
    // has read.
    let same = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("same-size"))
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&same, b"CHANGED", 100).expect("write");
    same.set_modified(SystemTime::now() + Duration::from_secs(5))
        .expect("touch");
    fs::OpenOptions::new()
        .append(true)
        .open(dir.join("grown"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"))
        .expect("append");
    fs::remove_file(dir.join("gone")).expect("rm");
    for name in ["same-size", "grown", "gone"] {
        for _ in 0..3 {
            let err = fs::read(mount.join(name)).expect_err(name);
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}: {err}");
        }
    }
    assert_eq!(
        fs::read(mount.join("fine")).expect("untouched file"),
        pseudo_random(10_000, 5)
    );
    assert_eq!(fs::read(mount.join("below")).expect("lower layer"), b"b");
    drop(mount);
    let log = fs::read_to_string(&log).expect("log");
    for name in ["same-size", "grown", "gone"] {
        let path = dir.join(name).display().to_string();
        let lines = log
            .lines()
            .filter(|l| l.contains(&format!("{path}: changed since")))
            .count();
        assert_eq!(lines, 1, "{name} logged {lines} times:\n{log}");
    }
}

#[test]
fn missing_and_unreadable_directories_are_one_clear_line() {
    require!(Fuse);
    let tmp = tempdir();
    let base = Layer::new(Format::Ustar).file("f", "f").write(
        tmp.path(),
        "base.tar",
        common::Codec::Plain,
    );
    let missing = tmp.path().join("no-such-dir");
    let run = layerfs([OsStr::new("ls"), base.as_os_str(), missing.as_os_str()]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "layerfs: {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    // Readable by root only, listed by someone else.
    let dir = tmp.path().join("layer");
    fs::create_dir_all(dir.join("secret")).expect("mkdir");
    fs::write(dir.join("secret/s"), "s").expect("write");
    fs::write(dir.join("open"), "o").expect("write");
    for path in [tmp.path(), &dir] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::set_permissions(&base, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o700)).expect("chmod");
    let run = run_captured(
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .arg(common::mount::bin())
            .args(["ls", "--no-cache"])
            .arg(&base)
            .arg(&dir),
    );
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "layerfs: {} (layer 2, a directory): {}: Permission denied (os error 13)",
            dir.display(),
            dir.join("secret").display()
        )
    );
    // Nothing is mounted either.
    let guard = Mount::fresh();
    let run = layerfs([
        OsStr::new("mount"),
        base.as_os_str(),
        missing.as_os_str(),
        guard.path().as_os_str(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(!is_mounted(guard.path()));
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "{}",
        run.stderr
    );
}

/// `user.overlay.opaque=y` is overlayfs' own in an upper directory (of a
/// `userxattr` overlay) and hides the lower `d/old`; in a tar it is an
/// ordinary xattr, as umoci and containerd (as root) unpack it
/// (`tests/umoci.rs`), and hides nothing.
#[test]
fn user_overlay_opaque_counts_in_a_directory_layer_not_in_a_tar() {
    require!(Fuse);
    let tmp = tempdir();
    let lower = Layer::default().dir("d").file("d/old", "old").write(
        tmp.path(),
        "lower.tar",
        common::Codec::Plain,
    );
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("d")).expect("mkdir");
    fs::write(upper.join("d/new"), "new").expect("write");
    fs::set_permissions(upper.join("d"), fs::Permissions::from_mode(0o755)).expect("chmod");
    xattr::set(upper.join("d"), "user.overlay.opaque", b"y").expect("setfattr");
    let as_dir = Mount::new(&[lower.clone(), upper.clone()]);
    let d = as_dir.join("d");
    let names: Vec<OsString> = fs::read_dir(&d)
        .expect("read d")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["new"], "the directory layer's d");
    assert_eq!(
        xattr::list(&d).expect("listxattr").count(),
        0,
        "xattrs of d"
    );
    drop(as_dir);

    let upper_tar = Layer::default()
        .dir("d")
        .xattr("user.overlay.opaque", "y")
        .file("d/new", "new")
        .write(tmp.path(), "upper.tar", common::Codec::Plain);
    let as_tar = Mount::new(&[lower, upper_tar]);
    let expected = Expected::new()
        .dir("d")
        .xattr("user.overlay.opaque", "y")
        .file("d/old", "old")
        .file("d/new", "new");
    assert_tree(as_tar.path(), &expected);
}
