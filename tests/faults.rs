//! Faults while mounted: a layer file truncated, modified in place, replaced
//! or deleted under a running mount; a daemon killed with SIGKILL; a full
//! cache disk; and a read blocked inside the daemon while other requests
//! go on.
//!
//! Each fault test reads its files for the first time after the damage:
//! the kernel keeps what it read once (the mount tells it to), so a file
//! read before would come from the page cache and prove nothing.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::layer::pseudo_random;
use common::mount::{
    daemons_serving, is_alive, is_mounted, layerfs, mount_args, wait_for, Foreground,
};
use common::{Codec, Format, Layer, Layers, Mount};

/// Bytes of the file at the end of the damaged layer.
const TAIL_BYTES: usize = 512 * 1024;

/// Two layers: the one to damage (`codec`), holding `front/a` and
/// `front/b` in its first quarter and `back/z` after them, and an
/// undamaged plain one on top holding `other/o`.
fn stack(codec: Codec) -> Layers {
    let mut layers = Layers::new();
    layers.add_encoded(
        &Layer::new(Format::Ustar)
            .file("front/a", pseudo_random(64 * 1024, 1))
            .file("front/b", pseudo_random(64 * 1024, 2))
            .file("back/z", pseudo_random(TAIL_BYTES, 3)),
        codec,
    );
    layers.add(&Layer::new(Format::Ustar).file("other/o", pseudo_random(4096, 4)));
    layers
}

/// Mounts `layers` without an index cache, logging to `log`.
fn mount_logging(layers: &Layers, log: &Path) -> Mount {
    let log = log.to_str().expect("utf-8 temp path");
    Mount::with_args(&["--no-cache", "--log-file", log], &layers.paths)
}

fn assert_eio(path: &Path) {
    match fs::read(path) {
        Ok(bytes) => panic!(
            "{}: read {} bytes from a damaged layer, expected EIO",
            path.display(),
            bytes.len()
        ),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{}: {e}", path.display()),
    }
}

fn assert_bytes(path: &Path, expected: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got == expected,
        "{}: {} bytes read, not the layer's",
        path.display(),
        got.len()
    );
}

/// The tree outside the damaged layer's files still works: listing,
/// lookups, and the other layer's data.
fn assert_rest_works(mount: &Mount) {
    let mut names: Vec<_> = fs::read_dir(mount.path())
        .expect("readdir of the root")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["back", "front", "other"]);
    assert_eq!(
        fs::metadata(mount.join("back/z")).expect("stat").len(),
        TAIL_BYTES as u64
    );
    assert_bytes(&mount.join("other/o"), &pseudo_random(4096, 4));
}

/// How many lines of the daemon's log contain `needle`.
fn log_lines(log: &Path, needle: &str) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Mounts [`stack`] of `codec`, applies `damage` to the bottom layer file
/// (given open for writing, with its length), then reads: `back/z` fails
/// with EIO, `front/b` is served if `front_served` (else EIO too), the rest
/// of the tree works, and the daemon logged `logged` once, naming the layer.
fn check_damage(codec: Codec, damage: fn(&File, u64), front_served: bool, logged: &str) {
    let layers = stack(codec);
    let log = layers.dir().join("daemon.log");
    let mount = mount_logging(&layers, &log);
    let layer = &layers.paths[0];
    let len = fs::metadata(layer).expect("stat layer").len();
    let file = File::options().write(true).open(layer).expect("open layer");
    damage(&file, len);
    drop(file);

    assert_eio(&mount.join("back/z"));
    if front_served {
        assert_bytes(&mount.join("front/b"), &pseudo_random(64 * 1024, 2));
    } else {
        assert_eio(&mount.join("front/b"));
    }
    assert_rest_works(&mount);
    // Failing again is quiet: the problem was logged once.
    assert_eio(&mount.join("back/z"));
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(log_lines(&log, logged), 1, "{codec:?}: log:\n{log_text}");
    assert_eq!(
        log_lines(&log, &layer.display().to_string()),
        1,
        "{log_text}"
    );
}

fn truncate_to_half(file: &File, len: u64) {
    file.set_len(len / 2).expect("truncate the layer");
}

/// Garbage over the middle, in place (same inode, same size).
fn overwrite_the_middle(file: &File, len: u64) {
    file.write_all_at(&pseudo_random(len as usize / 4, 9), len / 3)
        .expect("overwrite the middle");
}

const TRUNCATED: &str = "truncated after it was indexed";
const MODIFIED: &str = "modified after it was indexed";

#[test]
fn a_truncated_plain_layer_fails_past_the_cut_only() {
    require!(Fuse);
    check_damage(Codec::Plain, truncate_to_half, true, TRUNCATED);
}

#[test]
fn a_truncated_gzip_layer_fails_past_the_cut_only() {
    require!(Fuse);
    check_damage(Codec::Gzip, truncate_to_half, true, TRUNCATED);
}

#[test]
fn a_truncated_zstd_layer_fails_past_the_cut_only() {
    require!(Fuse);
    check_damage(Codec::Zstd, truncate_to_half, true, TRUNCATED);
}

// A layer written to in place serves no byte any more, and never a wrong one.

#[test]
fn a_plain_layer_overwritten_in_place_gives_eio() {
    require!(Fuse);
    check_damage(Codec::Plain, overwrite_the_middle, false, MODIFIED);
}

#[test]
fn a_gzip_layer_overwritten_in_place_gives_eio() {
    require!(Fuse);
    check_damage(Codec::Gzip, overwrite_the_middle, false, MODIFIED);
}

#[test]
fn a_zstd_layer_overwritten_in_place_gives_eio() {
    require!(Fuse);
    check_damage(Codec::Zstd, overwrite_the_middle, false, MODIFIED);
}

/// The mount holds the layer file open: renaming another file over its
/// name, or deleting it, leaves the inode it indexed, which it serves.
#[test]
fn a_replaced_or_deleted_layer_keeps_serving_its_bytes() {
    require!(Fuse);
    for codec in [Codec::Plain, Codec::Gzip, Codec::Zstd] {
        for replace in [true, false] {
            let layers = stack(codec);
            let mount = Mount::with_args(&["--no-cache"], &layers.paths);
            let layer = &layers.paths[0];
            if replace {
                let other = layers.dir().join("other.tar");
                fs::write(&other, Layer::new(Format::Ustar).file("x", "y").to_tar())
                    .expect("write");
                fs::rename(&other, layer).expect("rename over the layer");
            } else {
                fs::remove_file(layer).expect("delete the layer");
            }
            assert_bytes(&mount.join("back/z"), &pseudo_random(TAIL_BYTES, 3));
            assert_bytes(&mount.join("front/b"), &pseudo_random(64 * 1024, 2));
            assert_rest_works(&mount);
        }
    }
}

/// A daemon killed with SIGKILL leaves a dead mount (ENOTCONN), here one
/// still in use; `layerfs umount` clears it and the directory is usable,
/// and mountable, again.
#[test]
fn umount_clears_the_mount_of_a_killed_daemon() {
    require!(Fuse);
    let layers = stack(Codec::Plain);
    let mount = Mount::with_args(&["--no-cache"], &layers.paths);
    let busy = File::open(mount.join("other/o")).expect("open a file in the mount");
    let daemons = daemons_serving(mount.path());
    assert!(!daemons.is_empty(), "no daemon found for the mount");
    for &pid in &daemons {
        // SAFETY: kill(2) of a pid we just found serving our mount.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    }
    assert!(
        wait_for(Duration::from_secs(30), || daemons
            .iter()
            .all(|&pid| !is_alive(pid))),
        "the killed daemon is still alive"
    );
    // ECONNABORTED if the request raced with the daemon's death.
    let err = fs::read_dir(mount.path()).expect_err("a dead mount");
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "{err}"
    );

    layerfs([OsStr::new("umount"), mount.path().as_os_str()]).expect_success("layerfs umount");
    assert!(!is_mounted(mount.path()), "still mounted");
    assert_eq!(
        fs::read_dir(mount.path())
            .expect("the directory again")
            .count(),
        0
    );
    drop(busy);
    layerfs(mount_args(&["--no-cache"], &layers.paths, mount.path()))
        .expect_success("mounting there again");
    assert_bytes(&mount.join("other/o"), &pseudo_random(4096, 4));
}

/// A tmpfs of 64 KiB, filled up; unmounted (lazily) on drop.
struct FullDisk {
    dir: tempfile::TempDir,
}

impl FullDisk {
    fn new() -> FullDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "layerfs-test-full"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        let disk = FullDisk { dir };
        fs::create_dir(disk.cache()).expect("mkdir the cache dir");
        let err = fs::write(disk.dir.path().join("fill"), vec![0u8; 1 << 20])
            .expect_err("64 KiB cannot take 1 MiB");
        assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
        disk
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The cache directory exists and takes empty files, but no data: the
/// mount works, says so once, and stores nothing; the single-frame zstd
/// layer, whose decompressed bytes would be spilled there, is read right.
#[test]
fn a_full_cache_disk_degrades_to_no_cache() {
    require!(Fuse);
    let disk = FullDisk::new();
    let layers = stack(Codec::Zstd);
    let mount = Mount::fresh();
    let cache = disk.cache();
    let mut args = vec![
        OsStr::new("mount"),
        OsStr::new("--cache-dir"),
        cache.as_os_str(),
    ];
    args.extend(layers.paths.iter().map(|p| p.as_os_str()));
    args.push(mount.path().as_os_str());
    let run = layerfs(&args);
    run.expect_success("layerfs mount");
    let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "stderr:\n{}", run.stderr);
    assert!(
        warnings[0].contains("storing nothing more"),
        "{}",
        warnings[0]
    );
    assert_bytes(&mount.join("back/z"), &pseudo_random(TAIL_BYTES, 3));
    assert_bytes(&mount.join("front/a"), &pseudo_random(64 * 1024, 1));
    assert_rest_works(&mount);
    let stored: Vec<_> = fs::read_dir(&cache)
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(stored.is_empty(), "the cache holds {stored:?}");
}

/// Sends SIGCONT to a stopped process on drop, so a failed assertion never
/// leaves a mount frozen.
struct Stopped(libc::pid_t);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        let pid = pid as libc::pid_t;
        // SAFETY: kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A read that cannot finish (its layer file lives on another layerfs
/// mount whose daemon is stopped) holds one request thread; lookups,
/// listings and stats of the rest of the tree are still answered.
///
/// Ordering only, no timing: while the outer daemon is stopped the read
/// cannot complete, so the listing finishing first shows the requests
/// were served concurrently. The 60 s bound only turns a deadlock into a
/// failure.
#[test]
fn a_blocked_read_does_not_stall_other_requests() {
    require!(Fuse);
    // The inner layer: a file far from any header, so that indexing it
    // leaves none of its bytes in the page cache of the outer mount.
    let pad = 8 << 20;
    let slow = pseudo_random(16 << 20, 5);
    let mut inner = Layer::new(Format::Ustar)
        .file("pad", pseudo_random(pad, 6))
        .file("slow/f", &slow);
    for i in 0..50 {
        inner = inner.file(format!("other/f{i}"), format!("file {i}"));
    }
    let mut outer = Layers::new();
    outer.add(&Layer::new(Format::Ustar).file("inner.tar", inner.to_tar()));
    let outer_mount = Foreground::start(&outer.paths);
    let inner_layer = vec![outer_mount.mount.join("inner.tar")];
    let mount = Mount::with_args(&["--no-cache", "--threads", "4"], &inner_layer);

    let stopped = Stopped::stop(outer_mount.child.id());
    let target = mount.join("slow/f");
    let far = 12 << 20;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        File::open(&target)
            .and_then(|f| f.read_exact_at(&mut buf, far as u64))
            .map(|()| buf)
    });
    let root = mount.path().to_path_buf();
    let (done, listed) = mpsc::channel();
    std::thread::spawn(move || {
        let names = fs::read_dir(root.join("other")).map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                .count()
        });
        let _ = done.send(names);
    });
    let listed = listed
        .recv_timeout(Duration::from_secs(60))
        .expect("listing a directory hung while a read was blocked");
    assert_eq!(listed.expect("readdir"), 50);
    assert!(
        !reader.is_finished(),
        "the read finished while its layer's mount was stopped: it never reached the daemon"
    );
    drop(stopped);
    let bytes = reader
        .join()
        .expect("reader thread")
        .expect("the read, once unblocked");
    assert!(
        bytes == slow[far..far + 4096],
        "wrong bytes after unblocking"
    );
}
