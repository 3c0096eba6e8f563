//! layerfs as mount(8)'s helper: `mount -t fuse.layerfs SOURCE DIR -o ...`
//! and fstab lines (`mount --fstab FILE DIR`, `mount -a`), run through the
//! real util-linux mount(8), which looks the helper up in /sbin.
//!
//! The tests that need /sbin/mount.fuse.layerfs install it as a symlink
//! to the binary under test for their duration, one at a time, and put
//! back whatever was there.

mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::mount::{
    bin, daemons_serving, is_mounted, mount_count, mountinfo_lines, run_captured, wait_for, Run,
};
use common::{Format, Layer, Layers, Mount};

/// Where mount(8) looks for the helper of type `fuse.layerfs`.
const HELPER: &str = "/sbin/mount.fuse.layerfs";

/// One test at a time owns /sbin/mount.fuse.layerfs.
static HELPER_LOCK: Mutex<()> = Mutex::new(());

/// /sbin/mount.fuse.layerfs pointing at the binary under test while it
/// lives; what was there before (nothing, or another link) comes back.
struct HelperLink {
    previous: Option<PathBuf>,
    _lock: MutexGuard<'static, ()>,
}

impl HelperLink {
    fn install() -> HelperLink {
        let lock = HELPER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let previous = fs::read_link(HELPER).ok();
        if previous.is_some() {
            fs::remove_file(HELPER).expect("move the installed helper aside");
        }
        std::os::unix::fs::symlink(bin(), HELPER).expect("install the helper symlink");
        HelperLink {
            previous,
            _lock: lock,
        }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = fs::remove_file(HELPER);
        if let Some(previous) = &self.previous {
            let _ = std::os::unix::fs::symlink(previous, HELPER);
        }
    }
}

/// Two layers: the bottom one holds `etc/old.conf`, `etc/keep.conf` and
/// `bin/tool`; the top one deletes `etc/old.conf` and adds `srv/new`.
fn stack_in(layers: &mut Layers) {
    layers.add(
        &Layer::new(Format::Ustar)
            .file("etc/old.conf", "old")
            .file("etc/keep.conf", "keep")
            .file("bin/tool", "tool"),
    );
    layers.add(
        &Layer::new(Format::Pax)
            .whiteout("etc/old.conf")
            .file("srv/new", "new"),
    );
}

/// The merged tree of [`stack_in`] is what `mountpoint` shows.
fn assert_stack_tree(mountpoint: &Path) {
    let read = |rel: &str| {
        fs::read_to_string(mountpoint.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    assert_eq!(read("etc/keep.conf"), "keep");
    assert_eq!(read("bin/tool"), "tool");
    assert_eq!(read("srv/new"), "new");
    assert!(
        !mountpoint.join("etc/old.conf").exists(),
        "the whiteout did not apply"
    );
}

/// SOURCE for `paths`: `:`-separated, each `:` and `\` in a name escaped.
fn source(paths: &[PathBuf]) -> OsString {
    let mut out = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        for &b in path.as_os_str().as_bytes() {
            if b == b':' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
    }
    std::os::unix::ffi::OsStringExt::from_vec(out)
}

fn mount8(args: &[&std::ffi::OsStr]) -> Run {
    run_captured(Command::new("mount").args(args))
}

/// `mount -t fuse.layerfs SOURCE MOUNTPOINT [-o OPTIONS]`.
fn mount_t(source: &std::ffi::OsStr, mountpoint: &Path, options: Option<&str>) -> Run {
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "fuse.layerfs"]).arg(source).arg(mountpoint);
    if let Some(options) = options {
        cmd.args(["-o", options]);
    }
    run_captured(&mut cmd)
}

/// Waits until no daemon serves `mountpoint` any more.
fn assert_daemon_gone(mountpoint: &Path) {
    assert!(
        wait_for(Duration::from_secs(10), || daemons_serving(mountpoint)
            .is_empty()),
        "the daemon of {} is still running: {:?}",
        mountpoint.display(),
        daemons_serving(mountpoint)
    );
}

/// The helper installed, the layers of [`stack_in`], and a mountpoint.
fn helper_and_stack() -> (HelperLink, Layers, Mount) {
    let helper = HelperLink::install();
    let mut layers = Layers::new();
    stack_in(&mut layers);
    (helper, layers, Mount::fresh())
}

#[test]
fn mount_t_fuse_layerfs_mounts_a_stack_and_umount_ends_it() {
    require!(Fuse);
    let (_helper, layers, mount) = helper_and_stack();
    let cache = layers.dir().join("cache");
    let src = source(&layers.paths);
    let options = format!(
        "ro,noatime,user,noauto,_netdev,nofail,x-systemd.automount,allow_other,cache_dir={}",
        cache.display()
    );
    let run = mount_t(&src, mount.path(), Some(&options));
    run.expect_success("mount -t fuse.layerfs");
    assert_stack_tree(mount.path());
    let lines = mountinfo_lines(mount.path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    // After the " - " separator: type, source, super options.
    let dash = fields
        .iter()
        .position(|f| *f == "-")
        .expect("mountinfo separator");
    assert_eq!(fields[dash + 2].as_bytes(), src.as_bytes(), "{}", lines[0]);
    assert!(fields[5].split(',').any(|o| o == "ro"), "{}", lines[0]);
    // `user` made mount(8) add noexec; allow_other went through.
    assert!(fields[5].split(',').any(|o| o == "noexec"), "{}", lines[0]);
    assert!(fields[dash + 3].contains("allow_other"), "{}", lines[0]);
    // cache_dir= was used: the layers' indexes are there.
    assert!(
        fs::read_dir(&cache).is_ok_and(|d| d.count() > 0),
        "nothing stored in {}",
        cache.display()
    );

    let umount = run_captured(Command::new("umount").arg(mount.path()));
    umount.expect_success("umount");
    assert!(!is_mounted(mount.path()));
    assert_daemon_gone(mount.path());
}

#[test]
fn an_fstab_line_mounts_by_mountpoint_and_mount_a_does_not_mount_twice() {
    require!(Fuse);
    let (_helper, mut layers, mount) = helper_and_stack();
    // A layer whose name has a ':' in it, escaped in SOURCE as "\:".
    let colon = layers.dir().join("with:colon.tar");
    fs::rename(&layers.paths[1], &colon).expect("rename");
    layers.paths[1] = colon;
    let fstab = layers.dir().join("fstab");
    let line = [
        source(&layers.paths).as_bytes(),
        b" ",
        mount.path().as_os_str().as_bytes(),
        b" fuse.layerfs ro,no_cache,allow_other,x-systemd.requires=x.service 0 0\n",
    ]
    .concat();
    fs::write(&fstab, [b"# layerfs test\n".as_slice(), &line].concat()).expect("write fstab");

    mount8(&[
        "--fstab".as_ref(),
        fstab.as_os_str(),
        mount.path().as_os_str(),
    ])
    .expect_success("mount --fstab FILE MOUNTPOINT");
    assert_stack_tree(mount.path());
    let again = mount8(&["-a".as_ref(), "--fstab".as_ref(), fstab.as_os_str()]);
    again.expect_success("mount -a over a mounted entry");
    assert_eq!(mount_count(mount.path()), 1, "mount -a mounted it again");
    drop(mount);
}

#[test]
fn a_bad_source_or_option_is_refused_by_name_and_nothing_is_mounted() {
    require!(Fuse);
    let (_helper, layers, mount) = helper_and_stack();
    let missing = layers.dir().join("missing.tar");
    let src = source(&[layers.paths[0].clone(), missing.clone()]);
    let run = mount_t(&src, mount.path(), None);
    assert!(!run.status.success(), "a missing layer was mounted");
    assert!(
        run.stderr.contains(&*missing.to_string_lossy()),
        "the error does not name the missing layer: {}",
        run.stderr
    );
    assert!(!is_mounted(mount.path()));

    let src = source(&layers.paths);
    let run = mount_t(&src, mount.path(), Some("ro,frobnicate"));
    assert!(!run.status.success(), "an unknown option was accepted");
    assert!(run.stderr.contains("frobnicate"), "{}", run.stderr);
    let empty = format!(
        "{}::{}",
        layers.paths[0].display(),
        layers.paths[1].display()
    );
    let run = mount_t(empty.as_ref(), mount.path(), None);
    assert!(
        !run.status.success(),
        "an empty layer in SOURCE was accepted"
    );
    assert!(run.stderr.contains("layer 2 is empty"), "{}", run.stderr);
    assert!(!is_mounted(mount.path()));
    assert_daemon_gone(mount.path());
}

#[test]
fn the_helper_answers_to_mount_layerfs_too_and_f_mounts_nothing() {
    require!(Fuse);
    let mut layers = Layers::new();
    stack_in(&mut layers);
    let helper = layers.dir().join("mount.layerfs");
    std::os::unix::fs::symlink(bin(), &helper).expect("symlink");
    let mount = Mount::fresh();
    let src = source(&layers.paths);
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(&helper);
        cmd.arg(&src)
            .arg(mount.path())
            .args(["-o", "rw,no_cache"])
            .args(extra);
        run_captured(&mut cmd)
    };
    run(&["-f", "-n"]).expect_success("mount.layerfs -f");
    assert!(!is_mounted(mount.path()), "-f mounted");
    // `rw`, which mount(8) passes unless told `ro`, still mounts read-only.
    run(&["-n"]).expect_success("mount.layerfs");
    assert_stack_tree(mount.path());
    let err = fs::write(mount.path().join("srv/new"), "x").expect_err("a write succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}
