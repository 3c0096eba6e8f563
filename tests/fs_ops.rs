//! Filesystem behaviour of a mounted stack: entry kinds and metadata, exact
//! reads at any offset, statfs, inode stability, read-only enforcement, and
//! the mount lifecycle (background daemon, foreground, signals, umount).

mod common;

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::layer::pseudo_random;
use common::mount::{
    bin, daemons_serving, force_unmount, is_alive, is_mounted, layerfs, mount_args,
    mountinfo_lines, run_captured, wait_for, Foreground,
};
use common::{assert_merge, assert_tree, Codec, Expected, Layer, Layers, Mount};

#[test]
fn every_entry_kind_shows_its_tar_metadata() {
    require!(Fuse);
    let layer = Layer::default()
        .file("suid", "#!/bin/sh\n")
        .mode(0o4755)
        .owner(1000, 100)
        .mtime(1_111_111_111)
        .dir("sticky")
        .mode(0o1777)
        .dir("setgid")
        .mode(0o2775)
        .owner(0, 50)
        .symlink("sticky/link", "../suid")
        .owner(5, 5)
        .mtime(1_222_222_222)
        .hardlink("setgid/suid-link", "suid")
        .char_dev("null", 1, 3)
        .mode(0o666)
        .char_dev("pts", 136, 300)
        .mode(0o620)
        .owner(0, 5)
        .block_dev("sda1", 8, 1)
        .mode(0o660)
        .owner(0, 6)
        .fifo("setgid/pipe")
        .mode(0o600)
        .file("empty", "");
    let expected = Expected::new()
        .file("suid", "#!/bin/sh\n")
        .mode(0o4755)
        .owner(1000, 100)
        .mtime(1_111_111_111)
        .dir("sticky")
        .mode(0o1777)
        .dir("setgid")
        .mode(0o2775)
        .owner(0, 50)
        .symlink("sticky/link", "../suid")
        .owner(5, 5)
        .mtime(1_222_222_222)
        .hardlink("setgid/suid-link", "suid")
        .char_dev("null", 1, 3)
        .mode(0o666)
        .char_dev("pts", 136, 300)
        .mode(0o620)
        .owner(0, 5)
        .block_dev("sda1", 8, 1)
        .mode(0o660)
        .owner(0, 6)
        .fifo("setgid/pipe")
        .mode(0o600)
        .file("empty", "");
    assert_merge(&[layer], &expected);
}

/// Reads exactly `len` bytes at `offset` (fewer only at end of file).
fn pread_full(file: &std::fs::File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("pread({offset}, {len}): {e}"),
        }
    }
    buf.truncate(done);
    buf
}

/// Offsets and lengths around block/page/chunk boundaries, past EOF, plus
/// a deterministic scatter of arbitrary ones.
fn read_plan(size: u64) -> Vec<(u64, usize)> {
    let mut plan = vec![
        (0, 1),
        (0, size as usize),
        (1, 7),
        (511, 2),
        (512, 512),
        (4095, 4097),
        (65_535, 65_539),
        (131_079, 1 << 20),
        (size - 1, 1),
        (size - 10, 100),
        (size, 10),
        (size + 4096, 10),
    ];
    let noise = pseudo_random(16 * 64, 99);
    for chunk in noise.chunks(16) {
        let offset = u64::from_le_bytes(chunk[..8].try_into().unwrap()) % size;
        let len = (u64::from_le_bytes(chunk[8..].try_into().unwrap()) % 200_000) as usize;
        plan.push((offset, len));
    }
    plan
}

fn expected_slice(content: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = (offset as usize).min(content.len());
    &content[start..(start + len).min(content.len())]
}

/// Puts a `size`-byte pseudo-random file in layer 1 of 3 (encoded with
/// `codec`) and checks every read of `read_plan` against it.
fn check_reads(codec: Codec, size: usize) {
    let content = pseudo_random(size, 2024);
    let mut stack = Layers::new();
    stack
        .add_encoded(
            &Layer::default().dir("data").file("data/big", &content),
            codec,
        )
        .add(&Layer::default().file("data/other", "other"))
        .add(&Layer::default().file("unrelated", "u"));
    let mount = stack.mount();
    let path = mount.join("data/big");
    let plan = read_plan(size as u64);
    // Two threads read the same plan in opposite orders, through separate
    // descriptors, so reads interleave and jump backwards.
    std::thread::scope(|scope| {
        for reverse in [false, true] {
            let (path, plan, content) = (&path, &plan, &content);
            scope.spawn(move || {
                let file = std::fs::File::open(path).expect("open big file");
                let order: Vec<_> = if reverse {
                    plan.iter().rev().collect()
                } else {
                    plan.iter().collect()
                };
                for &(offset, len) in order {
                    let got = pread_full(&file, offset, len);
                    let want = expected_slice(content, offset, len);
                    assert!(
                        got == want,
                        "{codec:?}: pread(offset {offset}, len {len}) returned {} bytes \
                         differing from the {} expected",
                        got.len(),
                        want.len()
                    );
                }
            });
        }
    });
}

#[test]
fn reads_at_arbitrary_offsets_return_exact_bytes() {
    require!(Fuse);
    check_reads(Codec::Gzip, 3 << 20);
}

#[test]
fn reads_at_arbitrary_offsets_in_every_codec() {
    require!(Fuse);
    for codec in Codec::ALL {
        check_reads(codec, (1 << 20) + 12_345);
    }
}

#[test]
fn mmap_and_sequential_read_return_exact_bytes() {
    require!(Fuse);
    let content = pseudo_random(1 << 20, 5);
    let mut stack = Layers::new();
    stack.add_encoded(&Layer::default().file("f", &content), Codec::Zstd);
    let mount = stack.mount();
    let file = std::fs::File::open(mount.join("f")).unwrap();
    // SAFETY: the mapping is read-only and the file cannot change underneath.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
    assert!(map[..] == content[..], "mmap content differs");
    let mut sequential = Vec::new();
    std::fs::File::open(mount.join("f"))
        .unwrap()
        .read_to_end(&mut sequential)
        .unwrap();
    assert!(sequential == content, "sequential read differs");
}

#[test]
fn statfs_works_on_the_mount() {
    require!(Fuse);
    let mut stack = Layers::new();
    stack.add(&Layer::default().file("f", "x"));
    let mount = stack.mount();
    for path in [mount.path().to_path_buf(), mount.join("f")] {
        let c = c_path(&path);
        // SAFETY: statvfs writes into the zeroed struct we own.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        assert_eq!(
            rc,
            0,
            "statvfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        assert!(st.f_namemax >= 255, "f_namemax {} too small", st.f_namemax);
    }
}

#[test]
fn inode_numbers_are_stable_and_match_readdir() {
    require!(Fuse);
    let mut stack = Layers::new();
    stack
        .add(&Layer::default().dir("d").file("d/a", "a").file("top", "t"))
        .add(&Layer::default().file("d/b", "b").symlink("s", "top"));
    let mount = stack.mount();
    let paths = ["d", "d/a", "d/b", "top", "s"];
    let first: Vec<u64> = paths.iter().map(|p| lstat_ino(&mount.join(p))).collect();
    // Make the kernel forget its dentries and inodes, so the second round
    // has to look everything up again (FUSE FORGET, then LOOKUP).
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop kernel caches (needs root)");
    for dir in ["", "d"] {
        for entry in std::fs::read_dir(mount.join(dir)).unwrap() {
            let entry = entry.unwrap();
            assert_eq!(
                entry.ino(),
                lstat_ino(&entry.path()),
                "readdir d_ino differs from st_ino for {:?}",
                entry.path()
            );
        }
    }
    let second: Vec<u64> = paths.iter().map(|p| lstat_ino(&mount.join(p))).collect();
    assert_eq!(
        first, second,
        "st_ino changed between two stats of {paths:?}"
    );
    let mut unique = first.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        first.len(),
        "distinct paths share st_ino: {first:?}"
    );
}

fn lstat_ino(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
        .ino()
}

fn big_dir_entry(i: usize) -> String {
    format!("big/entry-{i:05}-{}", "n".repeat(60))
}

/// Thousands of entries merged from two layers (with whiteouts) must all
/// come back through readdir, which the kernel requests in many batches.
#[test]
fn large_directory_merged_from_layers_lists_every_entry() {
    require!(Fuse);
    let lower = (0..2000).fold(Layer::default().dir("big"), |l, i| {
        l.file(big_dir_entry(i), i.to_string())
    });
    let upper = (0..3000).fold(Layer::default(), |l, i| match i {
        i if i >= 2000 => l.file(big_dir_entry(i), i.to_string()),
        i if i % 3 == 0 => l.whiteout(big_dir_entry(i)),
        _ => l,
    });
    let expected = (0..3000)
        .filter(|i| i >= &2000 || i % 3 != 0)
        .fold(Expected::new().dir("big"), |e, i| {
            e.file(big_dir_entry(i), i.to_string())
        });
    assert_merge(&[lower, upper], &expected);
}

/// Asserts that `op` fails with EROFS.
fn assert_erofs<T: std::fmt::Debug>(what: &str, op: std::io::Result<T>) {
    match op {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        other => panic!("{what}: expected EROFS, got {other:?}"),
    }
}

fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Converts a libc return code into an io::Result.
fn cvt(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn every_modification_fails_with_erofs() {
    require!(Fuse);
    let layer = Layer::default()
        .dir("d")
        .file("d/f", "data")
        .dir("empty")
        .symlink("s", "d/f");
    let expected = Expected::new()
        .dir("d")
        .file("d/f", "data")
        .dir("empty")
        .symlink("s", "d/f");
    let mut stack = Layers::new();
    stack.add(&layer);
    let mount = stack.mount();
    let f = mount.join("d/f");
    let open_with = |opts: &mut std::fs::OpenOptions| opts.open(&f).map(|_| ());
    assert_erofs("create", std::fs::File::create(mount.join("new")));
    assert_erofs(
        "open O_WRONLY",
        open_with(std::fs::OpenOptions::new().write(true)),
    );
    assert_erofs(
        "open O_RDWR|O_TRUNC",
        open_with(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .truncate(true),
        ),
    );
    assert_erofs(
        "open O_APPEND",
        open_with(std::fs::OpenOptions::new().append(true)),
    );
    assert_erofs("mkdir", std::fs::create_dir(mount.join("newdir")));
    assert_erofs("unlink", std::fs::remove_file(&f));
    assert_erofs("rmdir", std::fs::remove_dir(mount.join("empty")));
    assert_erofs("rename", std::fs::rename(&f, mount.join("d/g")));
    assert_erofs("symlink", std::os::unix::fs::symlink("x", mount.join("s2")));
    assert_erofs("link", std::fs::hard_link(&f, mount.join("h")));
    assert_erofs(
        "chmod",
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)),
    );
    assert_erofs("chown", std::os::unix::fs::lchown(&f, Some(1), Some(1)));
    assert_erofs("setxattr", xattr::set(&f, "user.new", b"v"));
    assert_erofs("removexattr", xattr::remove(&f, "user.none"));
    let cf = c_path(&f);
    // SAFETY: valid C strings / null times pointer meaning "now".
    assert_erofs("truncate", cvt(unsafe { libc::truncate(cf.as_ptr(), 0) }));
    assert_erofs(
        "utimensat",
        cvt(unsafe { libc::utimensat(libc::AT_FDCWD, cf.as_ptr(), std::ptr::null(), 0) }),
    );
    let cnode = c_path(&mount.join("node"));
    assert_erofs(
        "mknod",
        cvt(unsafe { libc::mknod(cnode.as_ptr(), libc::S_IFIFO | 0o644, 0) }),
    );
    assert_tree(mount.path(), &expected);
}

fn one_file_stack() -> Layers {
    let mut stack = Layers::new();
    stack.add(&Layer::default().file("f", "data"));
    stack
}

#[test]
fn background_daemon_exits_after_umount() {
    require!(Fuse);
    let stack = one_file_stack();
    let mount = stack.mount();
    assert_eq!(std::fs::read(mount.join("f")).unwrap(), b"data");
    let daemons = daemons_serving(mount.path());
    assert!(
        !daemons.is_empty(),
        "no layerfs process with {} on its command line is serving the mount",
        mount.path().display()
    );
    layerfs([OsStr::new("umount"), mount.path().as_os_str()]).expect_success("layerfs umount");
    assert!(
        !is_mounted(mount.path()),
        "still mounted after layerfs umount"
    );
    let exited = wait_for(Duration::from_secs(30), || {
        daemons.iter().all(|&pid| !is_alive(pid))
    });
    assert!(exited, "daemon(s) {daemons:?} still running after umount");
}

#[test]
fn lazy_umount_detaches_a_busy_mount() {
    require!(Fuse);
    let stack = one_file_stack();
    let mount = stack.mount();
    let busy = std::fs::File::open(mount.join("f")).unwrap();
    layerfs([
        OsStr::new("umount"),
        OsStr::new("-l"),
        mount.path().as_os_str(),
    ])
    .expect_success("layerfs umount -l");
    assert!(!is_mounted(mount.path()), "still mounted after umount -l");
    drop(busy);
}

#[test]
fn foreground_mount_exits_when_unmounted() {
    require!(Fuse);
    let stack = one_file_stack();
    let mut fg = Foreground::start(&stack.paths);
    assert_eq!(std::fs::read(fg.mount.join("f")).unwrap(), b"data");
    layerfs([OsStr::new("umount"), fg.mount.path().as_os_str()]).expect_success("layerfs umount");
    let exited = wait_for(Duration::from_secs(30), || {
        matches!(fg.child.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "layerfs mount -f kept running after umount");
    let status = fg.child.wait().unwrap();
    assert!(status.success(), "layerfs mount -f exited with {status}");
}

fn check_signal_unmounts(signal: i32) {
    let stack = one_file_stack();
    let mut fg = Foreground::start(&stack.paths);
    assert_eq!(std::fs::read(fg.mount.join("f")).unwrap(), b"data");
    let status = fg.signal_and_wait(signal);
    assert!(
        !is_mounted(fg.mount.path()),
        "signal {signal} left {} mounted (exit status {status})",
        fg.mount.path().display()
    );
}

#[test]
fn foreground_mount_unmounts_cleanly_on_sigterm() {
    require!(Fuse);
    check_signal_unmounts(libc::SIGTERM);
}

#[test]
fn foreground_mount_unmounts_cleanly_on_sigint() {
    require!(Fuse);
    check_signal_unmounts(libc::SIGINT);
}

/// `layerfs mount` in `$(...)` or a pipeline must return: the daemon may
/// not keep the caller's stdout/stderr pipes open.
#[test]
fn background_mount_releases_stdout_and_stderr() {
    require!(Fuse);
    let stack = one_file_stack();
    let mount = Mount::fresh();
    let mut cmd = Command::new(bin());
    cmd.args(mount_args(&[], &stack.paths, mount.path()))
        .stdin(Stdio::null());
    let (tx, rx) = mpsc::channel();
    // `output()` returns only once both pipes reach EOF.
    std::thread::spawn(move || tx.send(cmd.output()));
    let out = rx.recv_timeout(Duration::from_secs(60));
    // If it hangs, dropping `mount` unmounts, the daemon exits, the thread ends.
    let out = out
        .expect("layerfs mount did not release its stdout/stderr pipes")
        .expect("spawn layerfs");
    assert!(
        out.status.success(),
        "mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(mount.path()));
}

#[test]
fn two_mounts_of_the_same_layers_are_independent() {
    require!(Fuse);
    let stack = one_file_stack();
    let first = stack.mount();
    let second = stack.mount();
    let expected = Expected::new().file("f", "data");
    drop(first);
    assert_tree(second.path(), &expected);
}

/// The daemon must not depend on the caller's working directory.
#[test]
fn relative_layer_and_mountpoint_paths() {
    require!(Fuse);
    let mount = Mount::fresh();
    let cwd = mount.path().parent().unwrap();
    Layer::default()
        .file("f", "lower")
        .write(cwd, "lower.tar", Codec::Plain);
    Layer::default()
        .file("g", "upper")
        .write(cwd, "upper.tar", Codec::Plain);
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd)
        .args(["mount", "lower.tar", "upper.tar", "mnt"]);
    run_captured(&mut cmd).expect_success("layerfs mount with relative paths");
    let expected = Expected::new().file("f", "lower").file("g", "upper");
    assert_tree(mount.path(), &expected);
}

#[test]
fn mount_options_reach_the_kernel() {
    require!(Fuse);
    let stack = one_file_stack();
    let mount = Mount::with_args(
        &["-o", "ro", "-o", "fsname=layerfs-test-fs,noexec"],
        &stack.paths,
    );
    let lines = mountinfo_lines(mount.path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    let source = fields[fields.len() - 2];
    assert_eq!(source, "layerfs-test-fs", "mount source in {}", lines[0]);
    let mount_opts = fields[5];
    assert!(
        mount_opts.split(',').any(|o| o == "noexec") && mount_opts.split(',').any(|o| o == "ro"),
        "noexec/ro missing from {}",
        lines[0]
    );
    assert_eq!(std::fs::read(mount.join("f")).unwrap(), b"data");
}

/// A tree with no extended attribute at all says so once ("not
/// supported"), so the kernel stops asking; a tree with some answers every
/// name, absent ones with ENODATA.
#[test]
fn xattrs_are_unsupported_only_where_the_tree_has_none() {
    require!(Fuse);
    let mut plain = Layers::new();
    plain.add(&Layer::default().file("f", "x"));
    let mount = plain.mount();
    let f = mount.join("f");
    let err = xattr::get(&f, "user.a").expect_err("no xattrs");
    assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
    let err = xattr::get(&f, "security.selinux").expect_err("asked again");
    assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
    assert_eq!(xattr::list(&f).expect("listxattr").count(), 0);
    drop(mount);

    let mut with = Layers::new();
    with.add(
        &Layer::new(common::layer::Format::Pax)
            .file("f", "x")
            .xattr("user.a", "1")
            .file("g", "y"),
    );
    let mount = with.mount();
    assert_eq!(
        xattr::get(mount.join("f"), "user.a").expect("getxattr"),
        Some(b"1".to_vec())
    );
    assert_eq!(xattr::get(mount.join("f"), "user.b").expect("absent"), None);
    assert_eq!(xattr::get(mount.join("g"), "user.a").expect("absent"), None);
    let names: Vec<_> = xattr::list(mount.join("f")).expect("listxattr").collect();
    assert_eq!(names, ["user.a"]);
}

/// The mount table shows type `fuse.layerfs` (what `findmnt -t
/// fuse.layerfs` and `umount -t` look for) and, as the source, the whole
/// stack as fstab spells it: absolute paths joined by ':'.
#[test]
fn the_mount_table_shows_fuse_layerfs_and_the_whole_stack() {
    require!(Fuse);
    let mount = Mount::fresh();
    let cwd = mount.path().parent().unwrap();
    for (name, file) in [("lower.tar", "f"), ("up:per.tar", "g")] {
        Layer::default()
            .file(file, "x")
            .write(cwd, name, Codec::Plain);
    }
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd)
        .args(["mount", "lower.tar", "up:per.tar", "mnt"]);
    run_captured(&mut cmd).expect_success("layerfs mount with relative paths");
    let lines = mountinfo_lines(mount.path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    let dash = fields.iter().position(|f| *f == "-").expect("separator");
    assert_eq!(fields[dash + 1], "fuse.layerfs", "type in {}", lines[0]);
    let expected = format!(
        "{}:{}",
        cwd.join("lower.tar").display(),
        cwd.join("up\\:per.tar").display()
    );
    // mountinfo escapes '\' as \134.
    let source = fields[dash + 2].replace("\\134", "\\");
    assert_eq!(source, expected, "source in {}", lines[0]);
}

/// Mounting over a directory that holds something hides it: a warning
/// names the directory; an empty one mounts silently.
#[test]
fn mounting_over_a_non_empty_directory_warns() {
    require!(Fuse);
    let stack = one_file_stack();
    let mount = Mount::fresh();
    std::fs::write(mount.path().join("hidden"), "x").unwrap();
    let run = layerfs(mount_args(&[], &stack.paths, mount.path()));
    run.expect_success("layerfs mount");
    let warnings: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "{:?}", run.stderr);
    assert!(
        warnings[0].contains(&format!("{}: not empty", mount.path().display())),
        "{:?}",
        run.stderr
    );
    force_unmount(mount.path());
    std::fs::remove_file(mount.path().join("hidden")).unwrap();
    let run = layerfs(mount_args(&[], &stack.paths, mount.path()));
    run.expect_success("layerfs mount");
    assert_eq!(run.stderr, "");
}

/// Swapped arguments or a missing mountpoint: the error names the
/// mountpoint as such and says where it goes, before any layer is read
/// (the layer here is not even a tar).
#[test]
fn a_bad_mountpoint_is_named_as_the_mountpoint() {
    require!(Root);
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer.tar.gz");
    std::fs::write(&layer, "not a tar").unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let swapped = layerfs([OsStr::new("mount"), mnt.as_os_str(), layer.as_os_str()]);
    assert_eq!(swapped.status.code(), Some(1), "{swapped:?}");
    assert_eq!(
        swapped.stderr,
        format!(
            "layerfs: mountpoint {}: not a directory (the mountpoint comes last, after the layers)\n",
            layer.display()
        )
    );
    let missing = dir.path().join("nope");
    let run = layerfs([OsStr::new("mount"), layer.as_os_str(), missing.as_os_str()]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "layerfs: mountpoint {}: no such directory (create it first; the mountpoint comes last, after the layers)\n",
            missing.display()
        )
    );
    let help = layerfs(["mount", "--help"]);
    assert!(
        help.stdout
            .contains("Usage: layerfs mount [OPTIONS] <LAYER>... <MOUNTPOINT>"),
        "{}",
        help.stdout
    );
}

/// Continues a stopped process when dropped, so that a failing test
/// cannot leave a daemon stopped and its mount hanging the cleanup.
struct Continue(Vec<u32>);

impl Drop for Continue {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: plain kill(2) on a pid this test stopped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        }
    }
}

/// `layerfs umount [-l]` of a mount whose daemon is stopped (SIGSTOP)
/// returns at once: it never looks at the mount's files (a stat would
/// wait for the daemon forever); the mount is gone and so is the daemon.
fn check_umount_with_a_stopped_daemon(extra: &[&str]) {
    let stack = one_file_stack();
    let mount = stack.mount();
    let daemons = daemons_serving(mount.path());
    assert!(!daemons.is_empty(), "no daemon serves the mount");
    let _continue = Continue(daemons.clone());
    for &pid in &daemons {
        // SAFETY: plain kill(2) on the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
    }
    let stopped = wait_for(Duration::from_secs(5), || {
        daemons.iter().all(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('T')
        })
    });
    assert!(stopped, "daemon(s) {daemons:?} did not stop");
    let mut umount = Command::new(bin())
        .arg("umount")
        .args(extra)
        .arg(mount.path())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn layerfs umount");
    let returned = wait_for(Duration::from_secs(5), || {
        matches!(umount.try_wait(), Ok(Some(_)))
    });
    if !returned {
        let _ = umount.kill();
    }
    let status = umount.wait().expect("wait for layerfs umount");
    assert!(
        returned,
        "layerfs umount {extra:?} hung on a stopped daemon"
    );
    assert!(status.success(), "layerfs umount {extra:?}: {status}");
    assert!(!is_mounted(mount.path()), "still mounted");
    let exited = wait_for(Duration::from_secs(10), || {
        daemons.iter().all(|&pid| !is_alive(pid))
    });
    assert!(exited, "daemon(s) {daemons:?} still there after umount");
}

#[test]
fn umount_returns_when_the_daemon_is_stopped() {
    require!(Fuse);
    check_umount_with_a_stopped_daemon(&[]);
}

#[test]
fn lazy_umount_returns_when_the_daemon_is_stopped() {
    require!(Fuse);
    check_umount_with_a_stopped_daemon(&["-l"]);
}
