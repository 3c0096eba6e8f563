//! Read ahead across files (`src/fuse/readahead.rs`, `pusher.rs`): a
//! stack's files read in listing order (which the daemon pushes into the
//! page cache ahead of the reader) and out of order (which it must not) on
//! fresh mounts, every byte compared with what the layers hold.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::layer::pseudo_random;
use common::{Codec, Layer, Layers};

/// A stack of three layers, plain, gzip and zstd, whose directories mix
/// files of every layer and size (some empty, some past the largest file
/// pushed), with whiteouts; returns it with the merged files' contents.
fn stack() -> (Layers, BTreeMap<String, Vec<u8>>) {
    let mut files = BTreeMap::new();
    let mut bottom = Layer::default().dir("a").dir("b").dir("a/sub");
    for n in 0..700u64 {
        // 0 to 24 KiB, a few empty, one of 1.5 MiB.
        let len = match n {
            5 => 0,
            300 => 3 << 19,
            _ => (n * 7919 % 24_577) as usize,
        };
        let path = format!("a/f{n:04}");
        let content = pseudo_random(len, n + 1);
        bottom = bottom.file(&path, &content);
        files.insert(path, content);
    }
    for n in 0..40u64 {
        let path = format!("a/sub/s{n:02}");
        let content = pseudo_random(3000 + n as usize, 1000 + n);
        bottom = bottom.file(&path, &content);
        files.insert(path, content);
    }
    bottom = bottom.symlink("a/f0100-link", "f0100");
    // The middle layer replaces every tenth file of a/ and adds b/.
    let mut middle = Layer::default();
    for n in (0..700u64).step_by(10) {
        let path = format!("a/f{n:04}");
        let content = pseudo_random(5000 + n as usize, 5000 + n);
        middle = middle.file(&path, &content);
        files.insert(path, content);
    }
    for n in 0..300u64 {
        let path = format!("b/g{n:03}");
        let content = pseudo_random((n * 131 % 9000) as usize, 9000 + n);
        middle = middle.file(&path, &content);
        files.insert(path, content);
    }
    // The top layer removes some of both.
    let mut top = Layer::default();
    for n in (3..700u64).step_by(17) {
        let path = format!("a/f{n:04}");
        top = top.whiteout(&path);
        files.remove(&path);
    }
    top = top.whiteout("b/g007");
    files.remove("b/g007");
    let mut layers = Layers::new();
    layers
        .add(&bottom)
        .add_encoded(&middle, Codec::Gzip)
        .add_encoded(&top, Codec::Zstd);
    (layers, files)
}

/// Reads `path` whole and compares it with `want`.
fn check(root: &Path, path: &str, want: &[u8]) {
    let got = std::fs::read(root.join(path)).expect("read a file");
    assert!(
        got == want,
        "{path}: {} bytes read differ from the {} expected",
        got.len(),
        want.len()
    );
}

/// The files of `dir` in the order its listing gives them.
fn listed(root: &Path, dir: &str) -> Vec<String> {
    std::fs::read_dir(root.join(dir))
        .expect("list a directory")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
        .collect()
}

#[test]
fn files_read_in_listing_order_match_the_layers() {
    require!(Fuse);
    let (layers, files) = stack();
    let mount = layers.mount();
    let mut seen = 0;
    for dir in ["a", "a/sub", "b"] {
        for path in listed(mount.path(), dir) {
            check(mount.path(), &path, &files[&path]);
            seen += 1;
        }
    }
    assert_eq!(seen, files.len());
    // Read again: now from what was pushed into the page cache.
    for (path, want) in &files {
        check(mount.path(), path, want);
    }
}

#[test]
fn files_read_out_of_order_match_the_layers() {
    require!(Fuse);
    let (layers, files) = stack();
    let paths: Vec<&String> = files.keys().collect();
    // Backwards, then a fixed shuffle, then in order from the middle with
    // every other file skipped, each on a fresh mount (cold page cache).
    let backwards: Vec<&String> = paths.iter().rev().copied().collect();
    let mut shuffled = paths.clone();
    let mut x = 7u64;
    for i in (1..shuffled.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        shuffled.swap(i, (x >> 33) as usize % (i + 1));
    }
    let skipping: Vec<&String> = paths[paths.len() / 2..]
        .iter()
        .step_by(2)
        .copied()
        .collect();
    for order in [backwards, shuffled, skipping] {
        let mount = layers.mount();
        for path in order {
            check(mount.path(), path, &files[path]);
        }
    }
}

#[test]
fn two_readers_in_order_at_once_match_the_layers() {
    require!(Fuse);
    let (layers, files) = stack();
    let mount = layers.mount();
    let a = listed(mount.path(), "a");
    let b = listed(mount.path(), "b");
    std::thread::scope(|scope| {
        for list in [&a, &b] {
            let (root, files) = (mount.path(), &files);
            scope.spawn(move || {
                for path in list {
                    check(root, path, &files[path]);
                }
            });
        }
    });
}

#[test]
fn a_directory_layer_read_in_order_matches_its_files() {
    require!(Fuse);
    let (mut layers, mut files) = stack();
    // A directory layer on top: a new directory, and files of a/ replaced.
    let top = layers.dir().join("top");
    std::fs::create_dir_all(top.join("c")).expect("mkdir");
    std::fs::create_dir_all(top.join("a")).expect("mkdir");
    for n in 0..400u64 {
        let path = format!("c/h{n:03}");
        let content = pseudo_random((n * 977 % 20_000) as usize, 20_000 + n);
        std::fs::write(top.join(&path), &content).expect("write a file");
        files.insert(path, content);
    }
    for n in (1..700u64).step_by(9).filter(|n| n % 17 != 3) {
        let path = format!("a/f{n:04}");
        let content = pseudo_random(2000, 30_000 + n);
        std::fs::write(top.join(&path), &content).expect("write a file");
        files.insert(path, content);
    }
    layers.paths.push(top);
    let mount = layers.mount();
    let mut seen = 0;
    for dir in ["c", "a", "a/sub", "b"] {
        for path in listed(mount.path(), dir) {
            check(mount.path(), &path, &files[&path]);
            seen += 1;
        }
    }
    assert_eq!(seen, files.len());
}
