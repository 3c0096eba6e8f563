//! FUSE passthrough for directory layers (`src/fuse/passthrough.rs`):
//! every file of a directory layer, alone or under a tar with whiteouts,
//! reads (and maps) byte for byte as its source, with no READ reaching the
//! daemon (its debug log lists every request); backing files are closed
//! with their last open; a file changed after the mount is refused at its
//! next first open; `-o no_passthrough` and tar-only stacks keep the
//! daemon's reads and the zero-message open; a directory on overlayfs is
//! passed through, and an overlay still mounts over such a stack.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::layer::pseudo_random;
use common::mount::{bin, mount_args, run_captured, wait_for, KernelMount};
use common::{Codec, Layer, Mount};

/// Sizes around the page and read sizes, and one past a few MiB.
const SIZES: [usize; 8] = [1, 100, 4095, 4096, 4097, 65_543, (1 << 20) + 3, 3 << 20];

/// A directory of files of [`SIZES`] (and an empty one, and a hardlink)
/// in nested directories; returns their contents by path.
fn fill(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for (n, size) in SIZES.iter().enumerate() {
        let path = format!("d{}/f{n}", n % 3);
        files.insert(path, pseudo_random(*size, n as u64 + 1));
    }
    files.insert("empty".into(), Vec::new());
    for (path, content) in &files {
        let at = dir.join(path);
        fs::create_dir_all(at.parent().expect("parent")).expect("mkdir");
        fs::write(at, content).expect("write");
    }
    fs::hard_link(dir.join("d1/f1"), dir.join("link")).expect("link");
    files.insert("link".into(), files["d1/f1"].clone());
    files
}

/// A temporary directory holding a directory layer `layer` [`fill`]ed.
fn filled() -> (tempfile::TempDir, PathBuf, BTreeMap<String, Vec<u8>>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("layer");
    let files = fill(&dir);
    (tmp, dir, files)
}

/// A mount whose daemon logs every request (fuser's debug log) to a file.
struct Logged {
    mount: Mount,
    log: PathBuf,
}

impl Logged {
    fn new(extra: &[&str], layers: &[PathBuf], log: PathBuf) -> Logged {
        let mount = Mount::fresh();
        let log_arg = format!("--log-file={}", log.display());
        let args: Vec<&str> = [log_arg.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        run_captured(
            Command::new(bin())
                .args(mount_args(&args, layers, mount.path()))
                .env("RUST_LOG", "debug,fuser=debug"),
        )
        .expect_success("layerfs mount");
        Logged { mount, log }
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).expect("daemon log")
    }

    /// The inodes of the requests `op` (`OPEN`, `READ`) in the log.
    fn requests(&self, op: &str) -> Vec<u64> {
        requests(&self.log(), op)
    }

    /// Waits until every backing file is closed again (RELEASE reaches the
    /// daemon after close(2) returns); returns how many were open at most.
    fn all_closed(&self) -> usize {
        let counts = || {
            self.log()
                .lines()
                .filter_map(|l| l.split("passthrough: inode ").nth(1))
                .filter_map(|l| l.split(", ").nth(1)?.strip_suffix(" open")?.parse().ok())
                .collect::<Vec<usize>>()
        };
        let closed = wait_for(Duration::from_secs(10), || counts().last() == Some(&0));
        assert!(closed, "backing files left open:\n{}", self.log());
        counts().into_iter().max().unwrap_or(0)
    }
}

/// The inodes of the requests `op` in a daemon's debug log: fuser writes
/// `FUSE(n) ino 0x... OP ...` for each.
fn requests(log: &str, op: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split(" ino 0x").nth(1))
        .filter_map(|rest| {
            let (hex, tail) = rest.split_at_checked(16)?;
            let word = tail.trim_start().split(' ').next()?;
            (word == op).then(|| u64::from_str_radix(hex, 16).ok())?
        })
        .collect()
}

/// `path` reads as `want` with read(2) and through a shared mapping.
fn check(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got == want,
        "{}: read {} bytes, not the {} expected",
        path.display(),
        got.len(),
        want.len()
    );
    if want.is_empty() {
        return;
    }
    let file = File::open(path).expect("open");
    // SAFETY: the mount is read-only and the test changes nothing under it.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
    assert!(map[..] == *want, "{}: mapped bytes differ", path.display());
}

#[test]
fn a_directory_layer_reads_and_maps_as_its_files_without_the_daemon() {
    require!(Fuse);
    let (tmp, dir, files) = filled();
    let mount = Logged::new(&[], &[dir], tmp.path().join("daemon.log"));
    for (path, want) in &files {
        check(&mount.path().join(path), want);
    }
    // All open at once, twice over, then read again one by one.
    let held: Vec<File> = files
        .keys()
        .chain(files.keys())
        .map(|p| File::open(mount.path().join(p)).expect("open"))
        .collect();
    for (file, want) in held.iter().zip(files.values().chain(files.values())) {
        let mut got = vec![0u8; want.len()];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut got, 0).expect("read");
        assert!(got == *want);
    }
    drop(held);
    for (path, want) in &files {
        check(&mount.path().join(path), want);
    }
    let most = mount.all_closed();
    // One backing file per inode with data (the hardlink shares one).
    assert_eq!(most, SIZES.len(), "{}", mount.log());
    assert!(
        mount.requests("READ").is_empty(),
        "reads reached the daemon:\n{}",
        mount.log()
    );
    assert!(mount.requests("OPEN").len() >= 3 * SIZES.len());
}

#[test]
fn a_directory_under_a_tar_with_whiteouts_reads_right_and_only_tar_files_reach_the_daemon() {
    require!(Fuse);
    let (tmp, dir, mut files) = filled();
    // The tar removes a file and a whole directory, replaces a file and
    // adds one beside the directory layer's.
    let top = Layer::default()
        .whiteout("d0/f3")
        .opaque("d2")
        .file("d2/new", "from the tar")
        .file("d1/f1", pseudo_random(9000, 77))
        .file("d0/added", pseudo_random(70_000, 78));
    let tar = top.write(tmp.path(), "top.tar", Codec::Plain);
    files.remove("d0/f3");
    files.retain(|path, _| !path.starts_with("d2/"));
    files.insert("d2/new".into(), b"from the tar".to_vec());
    files.insert("d1/f1".into(), pseudo_random(9000, 77));
    files.insert("d0/added".into(), pseudo_random(70_000, 78));
    let mount = Logged::new(&[], &[dir.clone(), tar], tmp.path().join("daemon.log"));
    let mut from_dir = BTreeSet::new();
    for (path, want) in &files {
        check(&mount.path().join(path), want);
        let from_tar = ["d2/new", "d1/f1", "d0/added"].contains(&path.as_str());
        if !from_tar {
            from_dir.insert(fs::metadata(mount.path().join(path)).expect("stat").ino());
        }
    }
    for gone in ["d0/f3", "d2/f2", "d2/f5"] {
        assert!(!mount.path().join(gone).exists(), "{gone} shows");
    }
    // The link to d1/f1 still shows the directory's file.
    assert_eq!(
        fs::read(mount.path().join("link")).expect("link"),
        pseudo_random(100, 2)
    );
    mount.all_closed();
    let read: BTreeSet<u64> = mount.requests("READ").into_iter().collect();
    assert!(
        read.is_disjoint(&from_dir),
        "directory files read through the daemon: {read:?} of {from_dir:?}"
    );
}

#[test]
fn files_opened_in_order_are_asked_of_the_disk_ahead_of_the_reader() {
    require!(Fuse);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("layer");
    fs::create_dir(&dir).expect("mkdir");
    let content = |n: u64| pseudo_random(1000 + n as usize * 37, n);
    for n in 0..300u64 {
        fs::write(dir.join(format!("f{n:03}")), content(n)).expect("write");
    }
    let mount = Logged::new(&[], &[dir], tmp.path().join("daemon.log"));
    for n in 0..300u64 {
        check(&mount.path().join(format!("f{n:03}")), &content(n));
    }
    mount.all_closed();
    // Logged by the open-ahead thread once it has asked for a plan's files
    // (those the reader has not opened yet: a third is room for a busy
    // machine; without open ahead none is).
    let warmed = || -> usize {
        mount
            .log()
            .lines()
            .filter_map(|l| {
                l.split("open ahead: ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum()
    };
    let enough = wait_for(Duration::from_secs(10), || warmed() >= 100);
    assert!(enough, "{} files opened ahead:\n{}", warmed(), mount.log());
    assert!(mount.requests("READ").is_empty(), "{}", mount.log());
}

#[test]
fn a_file_changed_after_the_mount_is_refused_at_its_next_first_open() {
    require!(Fuse);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("layer");
    fs::create_dir(&dir).expect("mkdir");
    for name in ["same-size", "replaced", "held", "fine"] {
        fs::write(dir.join(name), pseudo_random(10_000, 9)).expect("write");
    }
    let mount = Logged::new(
        &[],
        std::slice::from_ref(&dir),
        tmp.path().join("daemon.log"),
    );
    let held = File::open(mount.path().join("held")).expect("open");
    let rewrite = |name: &str| {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(dir.join(name))
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&file, b"CHANGED", 100).expect("write");
        file.set_modified(SystemTime::now() + Duration::from_secs(5))
            .expect("touch");
    };
    rewrite("same-size");
    rewrite("held");
    fs::write(dir.join("new"), pseudo_random(10_000, 9)).expect("write");
    fs::rename(dir.join("new"), dir.join("replaced")).expect("rename");
    for name in ["same-size", "replaced"] {
        for _ in 0..2 {
            let err = fs::read(mount.path().join(name)).expect_err(name);
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}: {err}");
        }
    }
    check(&mount.path().join("fine"), &pseudo_random(10_000, 9));
    // Once its last open is released, the changed file is refused too.
    drop(held);
    mount.all_closed();
    let err = fs::read(mount.path().join("held")).expect_err("held");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "held: {err}");
    let log = mount.log();
    assert!(log.contains("same-size: changed since"), "{log}");
}

#[test]
fn no_passthrough_reads_through_the_daemon_with_the_zero_message_open() {
    require!(Fuse);
    let (tmp, dir, files) = filled();
    let mount = Logged::new(
        &["-o", "no_passthrough"],
        &[dir],
        tmp.path().join("daemon.log"),
    );
    for (path, want) in &files {
        check(&mount.path().join(path), want);
    }
    assert!(
        !mount.requests("READ").is_empty(),
        "no read reached the daemon"
    );
    let opens = mount.requests("OPEN").len();
    assert!(opens <= 1, "{opens} OPEN requests:\n{}", mount.log());
}

#[test]
fn a_tar_only_stack_still_opens_without_a_message() {
    require!(Fuse);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut layer = Layer::default();
    for n in 0..20u64 {
        layer = layer.file(format!("f{n}"), pseudo_random(5000 + n as usize, n));
    }
    let tar = layer.write(tmp.path(), "l.tar", Codec::Plain);
    let mount = Logged::new(&[], &[tar], tmp.path().join("daemon.log"));
    for _ in 0..2 {
        for n in 0..20u64 {
            check(
                &mount.path().join(format!("f{n}")),
                &pseudo_random(5000 + n as usize, n),
            );
        }
    }
    let opens = mount.requests("OPEN").len();
    assert!(opens <= 1, "{opens} OPEN requests:\n{}", mount.log());
    assert!(
        !mount.log().contains("passthrough: inode"),
        "{}",
        mount.log()
    );
}

#[test]
fn a_directory_on_overlayfs_is_passed_through_and_an_overlay_still_mounts_over_it() {
    require!(Fuse);
    let tmp = tempfile::tempdir().expect("tempdir");
    let lower = tmp.path().join("lower");
    let files = fill(&lower);
    for sub in ["upper", "work"] {
        fs::create_dir(tmp.path().join(sub)).expect("mkdir");
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        tmp.path().join("upper").display(),
        tmp.path().join("work").display()
    );
    // Declared first: dropped after the mounts reading it.
    let overlay = KernelMount::overlay(&options, &tmp.path().join("ovl"));
    let dir = tmp.path().join("ovl");
    {
        let mount = Logged::new(
            &[],
            std::slice::from_ref(&dir),
            tmp.path().join("daemon.log"),
        );
        for (path, want) in &files {
            check(&mount.path().join(path), want);
        }
        mount.all_closed();
        // At depth 1 the kernel would refuse these backing files (ELOOP)
        // and the daemon would read them.
        assert!(mount.requests("READ").is_empty(), "{}", mount.log());
    }
    // `mount --upper` stacks the kernel's overlay over the layerfs mount:
    // that takes depth 1, and the files are read through the daemon.
    let writable = Mount::fresh();
    let up = tmp.path().join("up");
    fs::create_dir(&up).expect("mkdir");
    let upper_arg = format!("--upper={}", up.display());
    run_captured(Command::new(bin()).args(mount_args(
        &[upper_arg.as_str()],
        &[dir],
        writable.path(),
    )))
    .expect_success("layerfs mount --upper");
    for (path, want) in &files {
        check(&writable.path().join(path), want);
    }
    drop(writable);
    drop(overlay);
}
