//! The persistent index cache, seen from the command line: a remount uses
//! the stored index without reading the layer, and a damaged entry is
//! rebuilt, never trusted.

mod common;

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::layer::{append_streamed, pseudo_random};
use common::mount::layerfs;
use common::{names, Format, Layer, Mount};

/// A layer whose middle member can be renamed in place without changing
/// the file's size or the head and tail the cache key hashes (64 KiB each).
fn layer_with_middle(name: &str) -> Vec<u8> {
    Layer::new(Format::Ustar)
        .file("head", pseudo_random(100_000, 1))
        .file(name, "middle")
        .file("tail", pseudo_random(100_000, 2))
        .to_tar()
}

/// Mounts with `args`, returns the top-level names and layerfs' stderr.
fn mount_and_list(args: &[&str], layer: &Path) -> (Vec<String>, String) {
    let mount = Mount::fresh();
    let mut all: Vec<&str> = vec!["mount", "-v"];
    all.extend_from_slice(args);
    let layer = layer.to_str().expect("utf-8 temp path");
    let mnt = mount.path().to_str().expect("utf-8 temp path");
    all.extend_from_slice(&[layer, mnt]);
    let run = layerfs(&all);
    run.expect_success("layerfs mount");
    (names(mount.path()), run.stderr)
}

/// Rewrites the file's bytes in place (same inode) and restores its mtime,
/// so that only a parse of the layer could tell it changed.
fn rewrite_in_place(path: &Path, bytes: &[u8]) {
    let mtime = fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut file = File::options().write(true).open(path).expect("open layer");
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.write_all(bytes).expect("rewrite");
    file.set_modified(mtime).expect("restore mtime");
}

fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn remount_uses_the_stored_index_without_reading_the_layer() {
    require!(Fuse);
    let work = tempfile::tempdir().expect("tempdir");
    let layer = work.path().join("layer.tar");
    let cache = work.path().join("cache");
    let cache_arg = cache.to_str().expect("utf-8 temp path");
    let before = layer_with_middle("mid1");
    fs::write(&layer, &before).expect("write layer");

    let (first, _) = mount_and_list(&["--cache-dir", cache_arg], &layer);
    assert_eq!(first, ["head", "mid1", "tail"]);
    assert_eq!(
        cache_entries(&cache).len(),
        2,
        "the layer's index and the stack's tree stored"
    );

    let after = layer_with_middle("mid2");
    assert_eq!(before.len(), after.len());
    assert_eq!(before[..65536], after[..65536], "head unchanged");
    assert_eq!(
        before[before.len() - 65536..],
        after[after.len() - 65536..],
        "tail unchanged"
    );
    rewrite_in_place(&layer, &after);

    // The stored index still names mid1: the layer was not parsed again.
    let (cached, stderr) = mount_and_list(&["--cache-dir", cache_arg], &layer);
    assert_eq!(cached, ["head", "mid1", "tail"], "stderr: {stderr}");
    assert!(
        stderr.contains("merged tree loaded from the cache"),
        "stderr: {stderr}"
    );
    // Without the cache the layer is read and shows what it holds now.
    let (fresh, _) = mount_and_list(&["--no-cache"], &layer);
    assert_eq!(fresh, ["head", "mid2", "tail"]);
}

#[test]
fn a_changed_layer_gets_a_new_index() {
    require!(Fuse);
    let work = tempfile::tempdir().expect("tempdir");
    let layer = work.path().join("layer.tar");
    let cache = work.path().join("cache");
    let cache_arg = cache.to_str().expect("utf-8 temp path");
    fs::write(&layer, layer_with_middle("mid1")).expect("write layer");
    mount_and_list(&["--cache-dir", cache_arg], &layer);
    // Replaced by a different file (new inode, new size): a miss.
    let replaced = work.path().join("replaced.tar");
    fs::write(
        &replaced,
        Layer::new(Format::Pax).file("other", "x").to_tar(),
    )
    .expect("write");
    fs::rename(&replaced, &layer).expect("replace layer");
    let (names, stderr) = mount_and_list(&["--cache-dir", cache_arg], &layer);
    assert_eq!(names, ["other"]);
    assert!(!stderr.contains("from the cache"), "stderr: {stderr}");
}

#[test]
fn a_corrupt_index_or_tree_is_rebuilt_not_trusted() {
    require!(Fuse);
    for damaged in ["idx", "tree"] {
        let work = tempfile::tempdir().expect("tempdir");
        let layer = work.path().join("layer.tar");
        let cache = work.path().join("cache");
        let cache_arg = cache.to_str().expect("utf-8 temp path");
        fs::write(&layer, layer_with_middle("mid1")).expect("write layer");
        mount_and_list(&["--cache-dir", cache_arg], &layer);
        let entries = cache_entries(&cache);
        let entry = entries
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == damaged))
            .expect("entry of that kind");
        let mut bytes = fs::read(entry).expect("read entry");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        fs::write(entry, &bytes).expect("corrupt entry");

        let (names, stderr) = mount_and_list(&["--cache-dir", cache_arg], &layer);
        assert_eq!(names, ["head", "mid1", "tail"], "{damaged}");
        assert!(
            stderr.contains("cached index discarded"),
            "{damaged}: stderr: {stderr}"
        );
        // The rebuilt entries are valid again.
        let (_, stderr) = mount_and_list(&["--cache-dir", cache_arg], &layer);
        assert!(
            stderr.contains("merged tree loaded from the cache"),
            "{damaged}: stderr: {stderr}"
        );
    }
}

/// A stack mounted from its stored tree shows exactly what the merge
/// showed: every kind, whiteouts applied, hardlinks, xattrs.
#[test]
fn a_stored_tree_mounts_as_the_merged_stack() {
    require!(Fuse);
    let mut layers = common::Layers::new();
    layers
        .add(
            &Layer::new(Format::Pax)
                .dir("d")
                .file("d/a", pseudo_random(300_000, 3))
                .hardlink("d/a2", "d/a")
                .symlink("d/s", "a")
                .fifo("d/p")
                .char_dev("d/c", 1, 3)
                .file("d/x", "xattr")
                .xattr("user.k", "v")
                .file("gone", "g"),
        )
        .add(&Layer::new(Format::Gnu).whiteout("gone").file("d/new", "n"));
    let cache = layers.dir().join("cache");
    let cache_arg = format!("--cache-dir={}", cache.display());
    let reference = {
        let mount = Mount::with_args(&["--no-cache"], &layers.paths);
        common::tree::snapshot(mount.path())
    };
    let expected = common::Expected::from_snapshot(&reference, common::tree::Fields::ALL);
    for round in ["indexed", "from the stored tree"] {
        if round == "from the stored tree" {
            let mut args = vec!["-v".into(), "ls".into(), cache_arg.clone().into()];
            args.extend(layers.paths.iter().map(|p| p.clone().into_os_string()));
            let run = layerfs(&args);
            run.expect_success("ls");
            assert!(
                run.stderr.contains("merged tree loaded from the cache"),
                "stderr: {}",
                run.stderr
            );
        }
        let mount = Mount::with_args(&[cache_arg.as_str()], &layers.paths);
        common::assert_tree(mount.path(), &expected);
        drop(mount);
        assert!(
            cache_entries(&cache)
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "tree")),
            "{round}: tree stored"
        );
    }
}

#[test]
fn an_unusable_cache_directory_degrades_to_no_cache() {
    require!(Fuse);
    let work = tempfile::tempdir().expect("tempdir");
    let layer = work.path().join("layer.tar");
    fs::write(&layer, layer_with_middle("mid1")).expect("write layer");
    // A cache "directory" below a regular file cannot be created.
    let blocker = work.path().join("file");
    fs::write(&blocker, b"x").expect("write");
    let cache = blocker.join("cache");
    let (names, stderr) = mount_and_list(&["--cache-dir", cache.to_str().expect("utf-8")], &layer);
    assert_eq!(names, ["head", "mid1", "tail"]);
    assert!(stderr.contains("no index cache"), "stderr: {stderr}");
}

// ---------------------------------------------------------------------
// A shared cache directory: entries layerfs did not write as it writes
// them are never followed, waited on or mapped (issue 23, item 8).
// ---------------------------------------------------------------------

/// Bound on a `layerfs` command that must not hang; generous, since it
/// only stops a hang from wedging the test run, never judges speed.
const BOUND_SECS: &str = "60";

/// Runs `layerfs ARGS...` killed after [`BOUND_SECS`]; panics if it was.
fn layerfs_bounded(args: &[&str]) -> common::mount::Run {
    let run = common::mount::run_captured(
        std::process::Command::new("timeout")
            .args(["-s", "KILL", BOUND_SECS, common::mount::bin()])
            .args(args),
    );
    assert_ne!(
        run.status.code(),
        None,
        "layerfs {args:?} hung (killed after {BOUND_SECS} s); stderr:\n{}",
        run.stderr
    );
    run
}

/// A layer in a work directory, its stack's entries stored in `cache`
/// by one mount; gives (work dir, layer, cache dir, entry paths).
fn cached_layer() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<PathBuf>) {
    let work = tempfile::tempdir().expect("tempdir");
    let layer = work.path().join("layer.tar");
    let cache = work.path().join("cache");
    fs::write(&layer, layer_with_middle("mid1")).expect("write layer");
    let (first, _) = mount_and_list(&["--cache-dir", cache.to_str().expect("utf-8")], &layer);
    assert_eq!(first, ["head", "mid1", "tail"]);
    let mut entries = cache_entries(&cache);
    entries.sort();
    assert_eq!(entries.len(), 2, "a layer entry and a tree entry");
    (work, layer, cache, entries)
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// After a first mount stored them, the entries are made writable by all
/// in a directory all may enter (a cache shared as the README's fstab
/// example shares `/var/cache/layerfs`), and another user truncates the
/// tree entry under a second, live mount. layerfs refuses to map such an
/// entry: it rebuilds it 0600, the truncation is denied, and the mount
/// keeps answering (a mapped entry that shrinks would kill the daemon
/// with SIGBUS, leaving "Transport endpoint is not connected").
#[test]
fn an_entry_others_could_truncate_is_never_mapped() {
    require!(Fuse);
    use std::os::unix::process::CommandExt;
    let (work, layer, cache, entries) = cached_layer();
    chmod(work.path(), 0o755);
    chmod(&cache, 0o755);
    for entry in &entries {
        chmod(entry, 0o666);
    }
    let tree = entries
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "tree"))
        .expect("a tree entry");

    let mount = Mount::fresh();
    let args = [
        "mount",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        layer.to_str().expect("utf-8"),
        mount.path().to_str().expect("utf-8"),
    ];
    let run = layerfs(args);
    run.expect_success("layerfs mount");

    let truncate = std::process::Command::new("truncate")
        .args(["-s", "0"])
        .arg(tree)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run truncate as nobody");
    assert_eq!(names(mount.path()), ["head", "mid1", "tail"]);
    assert_eq!(
        fs::read(mount.path().join("mid1")).expect("read"),
        b"middle"
    );
    assert!(
        !truncate.status.success(),
        "another user truncated the tree entry"
    );
    assert!(run.stderr.contains("mode 0666"), "stderr: {}", run.stderr);
    for entry in &entries {
        assert_eq!(mode_of(entry), 0o600, "{} rebuilt", entry.display());
    }
}

/// A FIFO under an entry's name is neither opened nor waited on: `ls` and
/// `mount` warn, rebuild the entry and finish.
#[test]
fn a_fifo_entry_is_ignored_not_waited_on() {
    require!(Fuse);
    let (_work, layer, cache, entries) = cached_layer();
    for entry in &entries {
        fs::remove_file(entry).expect("remove entry");
        let status = std::process::Command::new("mkfifo")
            .arg(entry)
            .status()
            .expect("mkfifo");
        assert!(status.success());
    }
    let cache_arg = cache.to_str().expect("utf-8");
    let layer_arg = layer.to_str().expect("utf-8");
    let ls = layerfs_bounded(&["ls", "--cache-dir", cache_arg, layer_arg]);
    ls.expect_success("layerfs ls");
    assert!(ls.stdout.contains("mid1"), "ls: {}", ls.stdout);
    assert!(ls.stderr.contains("FIFO"), "stderr: {}", ls.stderr);

    for entry in &entries {
        fs::remove_file(entry).ok();
        let status = std::process::Command::new("mkfifo")
            .arg(entry)
            .status()
            .expect("mkfifo");
        assert!(status.success());
    }
    let mount = Mount::fresh();
    let mnt = mount.path().to_str().expect("utf-8");
    let run = layerfs_bounded(&["mount", "--cache-dir", cache_arg, layer_arg, mnt]);
    run.expect_success("layerfs mount");
    assert!(run.stderr.contains("FIFO"), "stderr: {}", run.stderr);
    assert_eq!(names(mount.path()), ["head", "mid1", "tail"]);
    drop(mount);
    for entry in &entries {
        assert!(
            fs::symlink_metadata(entry).expect("stat").is_file(),
            "{} rebuilt",
            entry.display()
        );
    }
}

/// An entry that is a symlink is not followed, even to a valid entry: it
/// is reported and replaced, and what it pointed to is left alone.
#[test]
fn a_symlinked_entry_is_not_followed() {
    require!(Fuse);
    let (work, layer, cache, entries) = cached_layer();
    let elsewhere = work.path().join("elsewhere");
    fs::create_dir(&elsewhere).expect("mkdir");
    let mut targets = Vec::new();
    for entry in &entries {
        let target = elsewhere.join(entry.file_name().expect("name"));
        fs::rename(entry, &target).expect("move entry");
        std::os::unix::fs::symlink(&target, entry).expect("symlink");
        targets.push((target.clone(), fs::read(&target).expect("read")));
    }
    let (names, stderr) = mount_and_list(&["--cache-dir", cache.to_str().expect("utf-8")], &layer);
    assert_eq!(names, ["head", "mid1", "tail"]);
    assert!(stderr.contains("symbolic link"), "stderr: {stderr}");
    for entry in &entries {
        assert!(
            fs::symlink_metadata(entry).expect("stat").is_file(),
            "{} rebuilt",
            entry.display()
        );
    }
    for (target, bytes) in targets {
        assert_eq!(
            fs::read(&target).expect("read"),
            bytes,
            "{}",
            target.display()
        );
    }
}

// ---------------------------------------------------------------------
// Index bundles: a member's declared size is a claim, checked before
// anything is read, and an entry is streamed (issue 23, item 7).
// ---------------------------------------------------------------------

/// Runs `layerfs ARGS...` to completion, sampling its peak resident
/// memory (VmHWM, which only this process's own pages raise) until it
/// exits; gives the run and the peak in KiB.
fn run_measuring_peak(args: &[&str]) -> (common::mount::Run, u64) {
    use std::io::Read;
    let mut err = tempfile::tempfile().expect("stderr capture file");
    let mut child = std::process::Command::new(common::mount::bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err.try_clone().expect("dup"))
        .spawn()
        .expect("spawn layerfs");
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok());
        peak = peak.max(hwm.unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let mut stderr = String::new();
    err.seek(SeekFrom::Start(0)).expect("rewind");
    err.read_to_string(&mut stderr).expect("read stderr");
    let run = common::mount::Run {
        status,
        stdout: String::new(),
        stderr,
    };
    (run, peak)
}

/// The first bytes of a layer entry of `len` bytes whose header says so,
/// with magic and version taken from `real` (a layer entry layerfs wrote).
fn entry_head(real: &[u8], len: u64) -> Vec<u8> {
    let mut head = real[..16].to_vec();
    head.extend((len - 28).to_le_bytes());
    head.extend(0u32.to_le_bytes());
    head
}

/// A 128 MiB entry is streamed into the cache, and one over the cache's
/// bound (zeros: the bundle stays small) is refused by name before it is
/// read; memory stays bounded throughout (a 98 KB bundle reached 3 GB).
/// A member claiming 1 TiB the bundle does not hold is refused too.
#[test]
fn a_bundle_member_costs_what_it_holds_and_its_claimed_size_is_checked_first() {
    require!(Fuse);
    use std::io::Read;
    const STREAMED: u64 = 128 << 20;
    // Just over the cache's default bound of 1 GiB.
    const BOMB: u64 = (1 << 30) + 4096;
    let (work, _layer, _cache, entries) = cached_layer();
    let layer_entry = entries
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "idx"))
        .expect("a layer entry");
    let real = fs::read(layer_entry).expect("read a layer entry");

    let bundle = work.path().join("bomb.index.tar.zst");
    let out = File::create(&bundle).expect("create bundle");
    let mut builder = tar::Builder::new(zstd::stream::write::Encoder::new(out, 1).expect("zstd"));
    let streamed = entry_head(&real, STREAMED);
    let rest = std::io::repeat(0).take(STREAMED - streamed.len() as u64);
    append_streamed(
        &mut builder,
        "layerfs-index/0123456789abcdef.idx",
        STREAMED,
        (&streamed[..]).chain(rest),
    );
    let bomb = entry_head(&real, BOMB);
    let rest = std::io::repeat(0).take(BOMB - bomb.len() as u64);
    append_streamed(
        &mut builder,
        "layerfs-index/fedcba9876543210.idx",
        BOMB,
        (&bomb[..]).chain(rest),
    );
    let encoder = builder.into_inner().expect("finish tar");
    encoder.finish().expect("finish zstd");
    assert!(fs::metadata(&bundle).expect("stat").len() < 1 << 20);

    let other = work.path().join("other-cache");
    let other_arg = other.to_str().expect("utf-8");
    let bundle_arg = bundle.to_str().expect("utf-8");
    let (run, peak) =
        run_measuring_peak(&["index", "import", "--cache-dir", other_arg, bundle_arg]);
    assert!(peak <= 64 * 1024, "peak RSS {peak} KiB");
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains(bundle_arg)
            && run.stderr.contains("fedcba9876543210.idx")
            && run.stderr.contains("more than the cache's bound"),
        "stderr: {}",
        run.stderr
    );
    eprintln!("bomb bundle: peak RSS {peak} KiB; {}", run.stderr.trim());
    assert_eq!(
        fs::metadata(other.join("0123456789abcdef.idx"))
            .expect("streamed entry")
            .len(),
        STREAMED
    );

    // A claim of 1 TiB in a bundle of one header.
    let mut builder = tar::Builder::new(Vec::new());
    let head = entry_head(&real, 1 << 40);
    append_streamed(
        &mut builder,
        "layerfs-index/0123456789abcdef.idx",
        1 << 40,
        &head[..],
    );
    let mut bytes = builder.into_inner().expect("finish tar");
    bytes.truncate(1024);
    let claim = work.path().join("claim.index.tar");
    fs::write(&claim, &bytes).expect("write bundle");
    let claim_arg = claim.to_str().expect("utf-8");
    let (run, peak) = run_measuring_peak(&["index", "import", "--cache-dir", other_arg, claim_arg]);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert!(run.stderr.contains(claim_arg), "stderr: {}", run.stderr);
    eprintln!("1 TiB claim: peak RSS {peak} KiB; {}", run.stderr.trim());
    assert_eq!(
        run.stderr.trim().lines().count(),
        1,
        "stderr: {}",
        run.stderr
    );
    assert!(peak <= 64 * 1024, "peak RSS {peak} KiB");
}
