//! Compressed layers that are hostile after indexing (issue 6, part 1): a
//! decompression bomb must cost bounded memory and disk, and damage met
//! only by a read fails that read alone, logged, while every other file
//! keeps working. Small layers that declare huge metadata (extended
//! attribute bombs) are refused at bounded cost.

mod common;

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use common::layer::append_streamed;
use common::mount::{bin, Foreground};
use common::{Layers, Mount};

/// A value from /proc/PID/status, in KiB (`VmHWM`, ...).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
}

/// The disk blocks (in bytes) of every deleted file in `dir` that process
/// `pid` holds open: its spill files.
fn spill_files_allocated(pid: u32, dir: &Path) -> Vec<u64> {
    let mut sizes = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).expect("list fds") {
        let fd = fd.expect("fd entry").path();
        let Ok(target) = fs::read_link(&fd) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if target.starts_with(&*dir.to_string_lossy()) && target.ends_with(" (deleted)") {
            sizes.push(fs::metadata(&fd).expect("stat spill fd").blocks() * 512);
        }
    }
    sizes
}

/// 1 GiB of zeros between two small files, in one zstd frame of about
/// 40 KiB: a layer with no resume points, so reads go through the spill
/// file. Reading the file after the zeros decodes all of them.
#[test]
fn a_zero_bomb_costs_bounded_memory_and_no_disk() {
    require!(Fuse);
    const ZEROS: u64 = 1 << 30;
    let stack_dir = Layers::new();
    let layer = stack_dir.dir().join("bomb.tar.zst");
    let out = fs::File::create(&layer).expect("create bomb");
    let encoder = zstd::stream::write::Encoder::new(out, 1).expect("zstd encoder");
    let mut builder = tar::Builder::new(encoder);
    append_streamed(&mut builder, "small", 5, &b"small"[..]);
    append_streamed(&mut builder, "zeros", ZEROS, io::repeat(0).take(ZEROS));
    append_streamed(&mut builder, "after", 5, &b"after"[..]);
    let encoder = builder.into_inner().expect("finish tar");
    encoder.finish().expect("finish zstd");
    assert!(fs::metadata(&layer).expect("stat bomb").len() < 1 << 20);

    let cache = tempfile::tempdir().expect("cache dir");
    let cache_arg = cache.path().to_str().expect("utf-8 temp path");
    let fg = Foreground::start_with(&["--cache-dir", cache_arg], &[layer]);
    let pid = fg.child.id();
    assert_eq!(
        fs::read(fg.mount.join("after")).expect("read after"),
        b"after"
    );
    let mut tail = vec![1u8; 1 << 20];
    fs::File::open(fg.mount.join("zeros"))
        .expect("open zeros")
        .read_exact_at(&mut tail, ZEROS - (1 << 20))
        .expect("read the end of zeros");
    assert!(tail.iter().all(|&b| b == 0), "the zeros read back wrong");

    // One spill file, a hole where the zeros are.
    let spilled = spill_files_allocated(pid, cache.path());
    assert_eq!(spilled.len(), 1, "spill files: {spilled:?}");
    assert!(
        spilled[0] < 1 << 20,
        "the spill file holds {} bytes",
        spilled[0]
    );
    // Indexing and the read each hold one decoder and its buffers.
    let peak = status_kib(pid, "VmHWM");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    eprintln!(
        "zero bomb: {} bytes of zstd for {ZEROS} bytes; peak RSS {peak} KiB, spill {} bytes",
        fs::metadata(stack_dir.dir().join("bomb.tar.zst"))
            .expect("stat")
            .len(),
        spilled[0]
    );
}

/// Three files in three zstd frames; after the mount indexed the layer,
/// the middle frame is damaged in place. Only the middle file fails, with
/// EIO, and the daemon logs it naming the layer.
#[test]
fn damage_found_on_read_fails_that_read_alone() {
    require!(Fuse);
    const LEN: u64 = 100 * 1024;
    let files: Vec<Vec<u8>> = (0..3)
        .map(|i| common::layer::pseudo_random(LEN as usize, 11 + i))
        .collect();
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in ["a", "b", "c"].iter().zip(&files) {
        append_streamed(&mut builder, name, LEN, &data[..]);
    }
    let tar = builder.into_inner().expect("finish tar");
    // Frames end where the next file's header starts.
    let cuts = [0, 512 + LEN as usize, 1024 + 2 * LEN as usize, tar.len()];
    let frames: Vec<Vec<u8>> = cuts
        .windows(2)
        .map(|w| zstd::encode_all(&tar[w[0]..w[1]], 3).expect("zstd"))
        .collect();
    let mut stack = Layers::new();
    stack.add_bytes(&frames.concat());
    let layer = stack.paths[0].clone();
    let log = stack.dir().join("daemon.log");
    let log_arg = log.to_str().expect("utf-8 temp path");
    let mount = Mount::with_args(&["--no-cache", "--log-file", log_arg], &stack.paths);

    // The middle frame's magic number, overwritten in the same inode, with
    // the old mtime put back: a change the mount cannot see from the file's
    // size and mtime (which would refuse every read of the layer, see
    // tests/faults.rs), so the damage is only found when decoding.
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&layer)
        .expect("open layer for writing");
    let mtime = file
        .metadata()
        .and_then(|m| m.modified())
        .expect("layer mtime");
    file.write_all_at(b"BAD!", frames[0].len() as u64)
        .expect("damage the layer");
    file.set_modified(mtime).expect("put the mtime back");
    drop(file);

    assert_eq!(fs::read(mount.join("a")).expect("read a"), files[0]);
    let err = fs::read(mount.join("b")).expect_err("b is damaged");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(fs::read(mount.join("c")).expect("read c"), files[2]);
    let names: Vec<_> = fs::read_dir(mount.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 3);

    let logged = fs::read_to_string(&log).expect("read the daemon log");
    let errors: Vec<&str> = logged.lines().filter(|l| l.contains("ERROR")).collect();
    // Logged once, however often the kernel retries the read.
    let want = format!(
        "[ERROR] read of inode 3 at byte 0: {}: zstd stream is corrupt near decompressed offset {}: Unknown frame descriptor (logged once per layer and kind of failure; reads that fail the same way fail silently)",
        layer.display(),
        1024 + LEN
    );
    assert_eq!(errors, [want.as_str()], "log:\n{logged}");
}

/// Runs layerfs with `args` to its end; returns its exit status, stderr
/// and peak resident memory in KiB (from `wait4`, which also reaps it:
/// `Child::wait` cannot give the child's own rusage).
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&std::ffi::OsStr]) -> (i32, String, u64) {
    let mut child = std::process::Command::new(bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn layerfs");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr pipe")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let pid = i32::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (
        code,
        stderr,
        u64::try_from(usage.ru_maxrss).unwrap_or(u64::MAX),
    )
}

/// A zstd layer of `files` empty files, each with one extended attribute
/// `user.big` of `value_len` bytes.
fn xattr_bomb(dir: &Path, name: &str, files: usize, value_len: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    let out = fs::File::create(&path).expect("create bomb");
    let encoder = zstd::stream::write::Encoder::new(out, 3).expect("zstd encoder");
    let mut builder = tar::Builder::new(encoder);
    let value = vec![b'A'; value_len];
    for i in 0..files {
        builder
            .append_pax_extensions([("SCHILY.xattr.user.big", &value[..])])
            .expect("pax header");
        append_streamed(&mut builder, &format!("f{i}"), 0, io::empty());
    }
    let encoder = builder.into_inner().expect("finish tar");
    encoder.finish().expect("finish zstd");
    path
}

/// The security review's bombs: 1,000 empty files with a 1 MB xattr each
/// (59 KB of zstd; `ls` peaked at 1.96 GB) and with a 64 KiB one each
/// (values the kernel can hold, 64 MiB in all). Both are refused with a
/// line naming the layer, quickly and in little memory, by `ls` and by
/// `mount`, which leaves nothing mounted.
#[test]
fn xattr_bombs_are_refused_at_bounded_cost() {
    require!(Fuse);
    let dir = Layers::new();
    for (name, value_len, complaint) in [
        (
            "huge-values.tar.zst",
            1_000_000,
            "the kernel takes at most 65536",
        ),
        (
            "many-values.tar.zst",
            64 << 10,
            "extended attributes of the first",
        ),
    ] {
        let layer = xattr_bomb(dir.dir(), name, 1000, value_len);
        assert!(fs::metadata(&layer).expect("stat bomb").len() < 1 << 20);
        let started = std::time::Instant::now();
        let (code, stderr, peak) = run_measured(&["ls".as_ref(), layer.as_os_str()]);
        let took = started.elapsed();
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(complaint),
            "{name}: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(peak < 64 * 1024, "{name}: ls peaked at {peak} KiB");
        assert!(took.as_secs() < 5, "{name}: ls took {took:?}");
        eprintln!("{name}: refused in {took:?}, peak RSS {peak} KiB");

        let mnt = tempfile::tempdir().expect("mountpoint");
        let _guard = Mount::guard(mnt.path());
        let (code, stderr, _) = run_measured(&[
            "mount".as_ref(),
            "--no-cache".as_ref(),
            layer.as_os_str(),
            mnt.path().as_os_str(),
        ]);
        assert_eq!(code, 1, "{name}: mount: {stderr}");
        assert!(stderr.contains(complaint), "{name}: mount: {stderr}");
        let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            !mounts.contains(&*mnt.path().to_string_lossy()),
            "{name}: left mounted"
        );
    }
}
