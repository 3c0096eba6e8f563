//! `layerfs compare`: the difference of two merged trees, checked line by
//! line on two stacks sharing their bottom layer, and against the
//! difference of the two trees `umoci unpack` makes of the same layers.

mod common;

use std::path::{Path, PathBuf};

use common::mount::{layerfs, Run};
use common::oci::umoci_rootfs;
use common::tree::{snapshot, Kind, Node, Snapshot};
use common::{Format, Layer, Layers};

/// The shared bottom layer.
fn base() -> Layer {
    Layer::new(Format::Pax)
        .dir("etc")
        .file("etc/passwd", "root:x:0:0\n")
        .file("etc/group", "root:x:0:\n")
        .dir("old")
        .file("old/x", "x")
        .dir("old/sub")
        .file("old/sub/y", "y")
        .file("old/sub.txt", "s")
        .file("f2d", "a file")
        .dir("d2f")
        .file("d2f/inner", "inner")
        .symlink("link", "etc/passwd")
        .file("keep", "same")
        .dir("opq")
        .file("opq/a", "a")
        .file("opq/b", "b")
        .file("hl", "hard")
        .hardlink("hl2", "hl")
        .file("attr", "x")
        .xattr("user.k", "1")
        .file("own", "o")
        .char_dev("null", 1, 3)
        .file("chmod", "c")
        .mode(0o644)
}

/// The first stack's top: rewrites a file with the same bytes, which is no
/// difference.
fn top_a() -> Layer {
    Layer::new(Format::Pax).file("keep", "same")
}

/// The second stack's top: every kind of change.
fn top_b() -> Layer {
    Layer::new(Format::Pax)
        .file("new.txt", "added")
        .file("etc.conf", "e")
        .file("old-notes", "n")
        .whiteout("old")
        .file("etc/passwd", "root:x:0:0:changed\n")
        .whiteout("f2d")
        .dir("f2d")
        .file("f2d/child", "c")
        .whiteout("d2f")
        .file("d2f", "now a file")
        .symlink("link", "etc/group")
        .opaque("opq")
        .file("opq/a", "a")
        .file("hl", "hard!")
        .hardlink("hl2", "hl")
        .file("attr", "x")
        .xattr("user.k", "2")
        .file("own", "o")
        .owner(7, 8)
        .char_dev("null", 1, 5)
        .file("chmod", "c")
        .mode(0o600)
}

/// What `compare` prints for the two stacks: paths in byte order ('.' and
/// '-' before '/').
const EXPECTED: &str = "\
m\tattr
m\tchmod
T\td2f
A\tetc.conf
M\tetc/passwd
T\tf2d
M\thl
M\thl2
m\tlink
A\tnew.txt
m\tnull
D\told
A\told-notes
D\topq/b
m\town
";

/// The stacks, bottom first: base + top_a, base + top_b (one base file).
fn stacks() -> (Layers, Vec<PathBuf>, Vec<PathBuf>) {
    let mut layers = Layers::new();
    layers.add(&base()).add(&top_a()).add(&top_b());
    let p = layers.paths.clone();
    let a = vec![p[0].clone(), p[1].clone()];
    let b = vec![p[0].clone(), p[2].clone()];
    (layers, a, b)
}

fn compare(extra: &[&str], a: &[PathBuf], b: &[PathBuf]) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec!["compare".into(), "--no-cache".into()];
    args.extend(extra.iter().map(Into::into));
    args.extend(a.iter().map(Into::into));
    args.push("--".into());
    args.extend(b.iter().map(Into::into));
    layerfs(args)
}

#[test]
fn every_kind_of_change_is_one_line_in_listing_order() {
    let (_layers, a, b) = stacks();
    let run = compare(&[], &a, &b);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, EXPECTED);
}

#[test]
fn exit_status_is_0_same_1_different_2_trouble() {
    let (layers, a, b) = stacks();
    let same = compare(&[], &a, &a);
    assert_eq!(same.status.code(), Some(0), "stderr: {}", same.stderr);
    assert_eq!(same.stdout, "");
    assert_eq!(compare(&[], &a, &b).status.code(), Some(1));
    let missing = layers.dir().join("missing.tar");
    let trouble = compare(&[], &a, &[missing]);
    assert_eq!(trouble.status.code(), Some(2));
    assert!(trouble.stderr.contains("missing.tar"), "{}", trouble.stderr);
    assert_eq!(trouble.stdout, "");
}

#[test]
fn recursive_lists_the_subtrees_of_added_removed_and_retyped_directories() {
    let (_layers, a, b) = stacks();
    let run = compare(&["--recursive"], &a, &b);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    for want in [
        "T\td2f",
        "D\td2f/inner",
        "T\tf2d",
        "A\tf2d/child",
        "D\told",
        "D\told/sub",
        "D\told/sub.txt",
        "D\told/sub/y",
        "D\told/x",
    ] {
        assert!(lines.contains(&want), "no {want:?} in:\n{}", run.stdout);
    }
    // Those 6 lines below directories, and the rest as without -r; paths
    // in byte order, within a listed subtree and around it.
    assert_eq!(lines.len(), EXPECTED.lines().count() + 6);
    let paths: Vec<&str> = lines.iter().map(|l| &l[2..]).collect();
    assert!(paths.is_sorted(), "not in byte order:\n{}", run.stdout);
}

#[test]
fn long_json_and_summary_formats() {
    let (_layers, a, b) = stacks();
    let long = compare(&["-l"], &a, &b);
    assert!(
        long.stdout.lines().any(|l| l == "M\t11\t19\tetc/passwd"),
        "{}",
        long.stdout
    );
    assert!(long.stdout.lines().any(|l| l == "A\t-\t5\tnew.txt"));
    let json = compare(&["--json"], &a, &b);
    let objects: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(objects.len(), long.stdout.lines().count());
    let deleted = objects
        .iter()
        .find(|o| o["path"] == "opq/b")
        .expect("opq/b listed");
    assert_eq!(deleted["status"], "D");
    assert_eq!(deleted["old_size"], 1);
    assert!(deleted["new_size"].is_null());
    let summary = compare(&["--summary"], &a, &b);
    assert_eq!(summary.status.code(), Some(1));
    let counts: Vec<(&str, usize)> = summary
        .stdout
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            (fields[0], fields[1].parse().expect("a count"))
        })
        .collect();
    let count_of = |status: &str| {
        long.stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{status}\t")))
            .count()
    };
    for (status, count) in counts {
        assert_eq!(count, count_of(status), "{status} in {}", summary.stdout);
    }
    assert!(
        summary.stdout.lines().any(|l| l == "A\t3\t0\t7"),
        "{}",
        summary.stdout
    );
}

#[test]
fn times_count_only_when_asked() {
    let mut layers = Layers::new();
    layers
        .add(&Layer::new(Format::Pax).file("f", "x").mtime(1))
        .add(&Layer::new(Format::Pax).file("f", "x").mtime(2));
    let a = vec![layers.paths[0].clone()];
    let b = vec![layers.paths[1].clone()];
    let plain = compare(&[], &a, &b);
    assert_eq!(plain.status.code(), Some(0), "{}", plain.stdout);
    let timed = compare(&["--times"], &a, &b);
    assert_eq!(timed.status.code(), Some(1));
    assert_eq!(timed.stdout, "m\tf\n");
}

#[test]
fn overlay_xattrs_are_no_difference_and_names_are_escaped() {
    let mut layers = Layers::new();
    layers
        .add(
            &Layer::new(Format::Pax)
                .dir("d")
                .xattr("trusted.overlay.origin", "x"),
        )
        .add(&Layer::new(Format::Pax).dir("d").file("a\nb", "n"));
    let run = compare(&[], &layers.paths[..1], &layers.paths[1..]);
    assert_eq!(run.stdout, "A\ta\\nb\n");
}

/// The status of `path` in `new` against `old`, as the test derives it
/// from two unpacked trees.
fn status(old: Option<&Node>, new: Option<&Node>) -> Option<char> {
    match (old, new) {
        (Some(_), None) => Some('D'),
        (None, Some(_)) => Some('A'),
        (Some(o), Some(n)) if o.kind != n.kind => Some('T'),
        (Some(o), Some(n)) if o.kind == Kind::File && o.content != n.content => Some('M'),
        (Some(o), Some(n))
            if (o.mode, o.uid, o.gid, &o.target, o.rdev, &o.xattrs)
                != (n.mode, n.uid, n.gid, &n.target, n.rdev, &n.xattrs) =>
        {
            Some('m')
        }
        _ => None,
    }
}

/// The lines `compare` should print for two unpacked trees: a path below
/// an added, deleted or retyped directory is not listed.
fn expected_lines(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let mut paths: Vec<&Vec<u8>> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut lines = Vec::new();
    let mut covered: Vec<Vec<u8>> = Vec::new();
    for path in paths {
        if covered
            .iter()
            .any(|dir| path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
        {
            continue;
        }
        let Some(code) = status(old.get(path), new.get(path)) else {
            continue;
        };
        if matches!(code, 'A' | 'D' | 'T') {
            covered.push(path.clone());
        }
        lines.push(format!("{code}\t{}", String::from_utf8_lossy(path)));
    }
    lines
}

fn unpack(work: &Path, layers: &[Layer]) -> Snapshot {
    let tars: Vec<Vec<u8>> = layers.iter().map(Layer::to_tar).collect();
    let refs: Vec<&[u8]> = tars.iter().map(Vec::as_slice).collect();
    snapshot(&umoci_rootfs(work, &refs))
}

#[test]
fn compare_agrees_with_the_difference_of_umoci_unpacks() {
    require!(Tool("umoci"), Root);
    let work = tempfile::tempdir().expect("tempdir");
    let old = unpack(&work.path().join("a"), &[base(), top_a()]);
    let new = unpack(&work.path().join("b"), &[base(), top_b()]);
    let want = expected_lines(&old, &new);
    assert!(want.len() >= 10, "the stacks differ too little: {want:?}");
    let (_layers, a, b) = stacks();
    let run = compare(&["-v"], &a, &b);
    let got: Vec<String> = run.stdout.lines().map(str::to_string).collect();
    assert_eq!(got, want, "stderr: {}", run.stderr);
    // The same, reading both sides as OCI images: the shared layer is one
    // blob in each layout, known by its digest, and read no more than the
    // one base file above.
    let images = compare(
        &["-v"],
        &[work.path().join("a/image")],
        &[work.path().join("b/image")],
    );
    let got: Vec<String> = images.stdout.lines().map(str::to_string).collect();
    assert_eq!(got, want, "stderr: {}", images.stderr);
    assert_eq!(bytes_read(&images.stderr), bytes_read(&run.stderr));
}

/// The bytes of contents `compare -v` says it read.
fn bytes_read(stderr: &str) -> u64 {
    let (_, after) = stderr
        .split_once("compare: read ")
        .unwrap_or_else(|| panic!("no byte count in: {stderr}"));
    after
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in: {stderr}"))
}
