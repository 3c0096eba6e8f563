//! The persistent index cache, seen from the command line: a remount uses
//! the stored index without reading the layer, and a damaged entry is
//! rebuilt, never trusted.

mod common;

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::layer::pseudo_random;
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
