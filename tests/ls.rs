//! `layerfs ls` agrees with the mount: same paths, kinds, sizes, modes and
//! link targets, and `--json` output parses as JSON.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::mount::layerfs;
use common::{Format, Layer, Layers};

/// What both the listing and the mount say of one path.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: String,
    mode: u32,
    size: u64,
    link: Option<String>,
    /// The inode number and link count: `ls --json` gives the mount's.
    ino: u64,
    nlink: u64,
}

fn stack() -> Layers {
    let mut layers = Layers::new();
    layers
        .add(
            &Layer::new(Format::Pax)
                .dir("etc")
                .file("etc/passwd", "root:x:0:0\n")
                .hardlink("etc/passwd.bak", "etc/passwd")
                .dir("usr")
                .dir("usr/bin")
                .symlink("bin", "usr/bin")
                .file("old/gone.txt", "x")
                .fifo("run/fifo"),
        )
        .add(
            &Layer::new(Format::Gnu)
                .whiteout("old")
                .file("bin/tool", "#!/bin/sh\n")
                .file("etc/passwd", "root:x:0:0:changed\n")
                .file("caf\u{e9}.txt", "non-ascii"),
        );
    layers
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Seen>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "fifo"
        };
        let link = ft.is_symlink().then(|| {
            String::from_utf8_lossy(
                std::fs::read_link(&path)
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes(),
            )
            .into_owned()
        });
        let rel = path.strip_prefix(root).expect("under root");
        out.insert(
            String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned(),
            Seen {
                kind: kind.into(),
                mode: meta.permissions().mode() & 0o7777,
                size: meta.size(),
                link,
                ino: meta.ino(),
                nlink: meta.nlink(),
            },
        );
        if ft.is_dir() {
            walk(root, &path, out);
        }
    }
}

fn listed(stdout: &str) -> BTreeMap<String, Seen> {
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let text = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {line}"))
                    .to_string()
            };
            let seen = Seen {
                kind: text("type"),
                mode: u32::from_str_radix(&text("mode"), 8).expect("octal mode"),
                size: v["size"].as_u64().expect("size"),
                link: v.get("link").and_then(|l| l.as_str()).map(str::to_string),
                ino: v["ino"].as_u64().expect("ino"),
                nlink: v["nlink"].as_u64().expect("nlink"),
            };
            (text("path"), seen)
        })
        .collect()
}

#[test]
fn json_listing_matches_the_mount() {
    require!(Fuse);
    let layers = stack();
    let run = run_on(&["ls", "--json", "--no-cache"], &layers.paths);
    run.expect_success("layerfs ls --json");
    let from_ls = listed(&run.stdout);
    let mount = layers.mount();
    let mut from_mount = BTreeMap::new();
    walk(mount.path(), mount.path(), &mut from_mount);
    assert_eq!(from_ls, from_mount);
    assert!(
        from_ls.contains_key("usr/bin/tool"),
        "a member under a lower symlink lands at its target"
    );
    assert!(!from_ls
        .keys()
        .any(|k| k.contains(".wh.") || k.starts_with("old")));
}

#[test]
fn merged_listing_names_the_providing_layer() {
    let layers = stack();
    let run = run_on(&["ls", "--no-cache"], &layers.paths);
    run.expect_success("layerfs ls");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.contains(&"2\tetc/passwd"), "{lines:?}");
    assert!(lines.contains(&"1\tetc/passwd.bak"), "{lines:?}");
    assert!(lines.contains(&"1\tbin"), "{lines:?}");
}

#[test]
fn one_layer_is_listed_as_stored_with_its_whiteouts() {
    let layers = stack();
    let run = run_on(
        &["ls", "--json", "--no-cache", "--layer", "2"],
        &layers.paths,
    );
    run.expect_success("layerfs ls --layer 2");
    let paths: Vec<String> = run
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["path"]
                .as_str()
                .expect("path")
                .to_string()
        })
        .collect();
    assert!(paths.iter().any(|p| p.ends_with(".wh.old")), "{paths:?}");
    assert!(paths.iter().any(|p| p == "etc/passwd"), "{paths:?}");
    let bad = run_on(&["ls", "--layer", "3"], &layers.paths);
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("--layer 3: there are 2 layers"),
        "{}",
        bad.stderr
    );
}

/// Runs `layerfs ARGS... LAYERS...`.
fn run_on(args: &[&str], layers: &[PathBuf]) -> common::mount::Run {
    layerfs(
        args.iter()
            .map(|s| s.as_ref())
            .chain(layers.iter().map(|p| p.as_os_str())),
    )
}

/// Runs `layerfs ARGS... LAYERS...`, which must succeed; its output lines.
fn ls_lines(args: &[&str], layers: &[PathBuf]) -> Vec<String> {
    let run = run_on(args, layers);
    run.expect_success(&format!("layerfs {args:?}"));
    run.stdout.lines().map(str::to_string).collect()
}

/// Three layers with one removal of each kind, and one hiding nothing.
fn removals_stack() -> Layers {
    let mut layers = Layers::new();
    layers
        .add(
            &Layer::new(Format::Pax)
                .dir("etc")
                .file("etc/old.conf", "old")
                .dir("usr")
                .dir("usr/share")
                .file("usr/share/a", "a")
                .file("usr/share/b", "b")
                .dir("data")
                .file("data/x", "x")
                .dir("srv")
                .file("srv/www", "w")
                .file("tmp/t", "t"),
        )
        .add(
            &Layer::new(Format::Pax)
                .dir("data/sub")
                .file("data/sub/y", "y"),
        )
        .add(
            &Layer::new(Format::Pax)
                .whiteout("etc/old.conf")
                .whiteout("usr/share")
                .opaque("data")
                .overlay_opaque_dir("srv")
                .tombstone("tmp/t")
                .whiteout("etc/never")
                .file("usr/share/new", "n"),
        );
    layers
}

#[test]
fn all_lists_each_removal_and_what_it_hid() {
    let layers = removals_stack();
    let lines = ls_lines(&["ls", "--all", "--no-cache"], &layers.paths);
    let plain = ls_lines(&["ls", "--no-cache"], &layers.paths);
    assert_eq!(lines[..plain.len()], plain[..], "the tree comes first");
    assert_eq!(
        lines[plain.len()..],
        [
            "3\tetc/.wh.old.conf\twhiteout: hides etc/old.conf (file, layer 1)",
            "3\tusr/.wh.share\twhiteout: hides usr/share (dir, layer 1, 3 entries)",
            "3\tdata/.wh..wh..opq\topaque: hides data/sub (dir, layer 2, 2 entries), data/x (file, layer 1)",
            "3\tsrv\topaque: hides srv/www (file, layer 1)",
            "3\ttmp/t\ttombstone: hides tmp/t (file, layer 1)",
            "3\tetc/.wh.never\twhiteout: hides nothing",
        ]
    );
    let long = ls_lines(&["ls", "-l", "--all", "--no-cache"], &layers.paths);
    assert_eq!(
        long.last().map(String::as_str),
        Some("whiteout   3 etc/.wh.never hides nothing")
    );
}

#[test]
fn all_as_json_gives_one_object_per_removal() {
    require!(Fuse);
    let layers = removals_stack();
    let lines = ls_lines(&["ls", "--all", "--json", "--no-cache"], &layers.paths);
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let removals: Vec<&serde_json::Value> =
        values.iter().filter(|v| v.get("hides").is_some()).collect();
    assert_eq!(
        values[values.len() - removals.len()..]
            .iter()
            .collect::<Vec<_>>(),
        removals,
        "removals come after every entry"
    );
    let expected = [
        r#"{"path":"etc/.wh.old.conf","type":"whiteout","layer":3,"hides":[{"path":"etc/old.conf","type":"file","layer":1,"entries":1}]}"#,
        r#"{"path":"usr/.wh.share","type":"whiteout","layer":3,"hides":[{"path":"usr/share","type":"dir","layer":1,"entries":3}]}"#,
        r#"{"path":"data/.wh..wh..opq","type":"opaque","layer":3,"hides":[{"path":"data/sub","type":"dir","layer":2,"entries":2},{"path":"data/x","type":"file","layer":1,"entries":1}]}"#,
        r#"{"path":"srv","type":"opaque","layer":3,"hides":[{"path":"srv/www","type":"file","layer":1,"entries":1}]}"#,
        r#"{"path":"tmp/t","type":"tombstone","layer":3,"hides":[{"path":"tmp/t","type":"file","layer":1,"entries":1}]}"#,
        r#"{"path":"etc/.wh.never","type":"whiteout","layer":3,"hides":[]}"#,
    ];
    assert_eq!(lines[lines.len() - expected.len()..], expected);
    // The entries before them still match the mount.
    let entries = lines[..lines.len() - expected.len()].join("\n");
    let mount = layers.mount();
    let mut from_mount = BTreeMap::new();
    walk(mount.path(), mount.path(), &mut from_mount);
    assert_eq!(listed(&entries), from_mount);
}

/// Two layers whose long listing needs its columns padded: a directory
/// with ten names (itself, its entry and eight subdirectories), an owner
/// wider than the others (uid and gid 4294967295, shown as they are), a
/// hardlink pair, names with a newline and a tab, and a whiteout stored as
/// `./etc/.wh.hosts`.
fn rough_stack() -> Layers {
    let mut lower = Layer::new(Format::Pax).dir("d");
    for i in 0..8 {
        lower = lower.dir(format!("d/{i}"));
    }
    let lower = lower
        .dir("etc")
        .file("etc/group", "g\n")
        .file("etc/hosts", "h")
        .file("etc/passwd", "root:x:0:0\n")
        .owner(4_294_967_295, 4_294_967_295)
        .hardlink("etc/passwd-", "etc/passwd")
        .file("evil\n-rw-r--r-- 1 root 0 2020-09-13 12:26 1 shadow", "");
    let upper = Layer::new(Format::Pax)
        .file("./etc/.wh.hosts", "")
        .file("tab\there", "x")
        .owner(1_234_567, 7_654_321);
    let mut layers = Layers::new();
    layers.add(&lower).add(&upper);
    layers
}

#[test]
fn long_listing_pads_every_column_shows_links_and_escapes_names() {
    let layers = rough_stack();
    let mut expected =
        vec!["drwxr-xr-x 10 0/0                   4096 2020-09-13 12:26 1 d".to_string()];
    for i in 0..8 {
        expected.push(format!(
            "drwxr-xr-x  2 0/0                   4096 2020-09-13 12:26 1 d/{i}"
        ));
    }
    expected.extend(
        [
            "drwxr-xr-x  2 0/0                   4096 2020-09-13 12:26 1 etc",
            "-rw-r--r--  1 0/0                      2 2020-09-13 12:26 1 etc/group",
            "-rw-r--r--  2 4294967295/4294967295   11 2020-09-13 12:26 1 etc/passwd",
            "-rw-r--r--  2 4294967295/4294967295   11 2020-09-13 12:26 1 etc/passwd-",
            r"-rw-r--r--  1 0/0                      0 2020-09-13 12:26 1 evil\n-rw-r--r-- 1 root 0 2020-09-13 12:26 1 shadow",
            r"-rw-r--r--  1 1234567/7654321          1 2020-09-13 12:26 2 tab\there",
            "whiteout   2 etc/.wh.hosts hides etc/hosts (file, layer 1)",
        ]
        .map(str::to_string),
    );
    assert_eq!(
        ls_lines(&["ls", "-l", "--all", "--no-cache"], &layers.paths),
        expected
    );

    let short = ls_lines(&["ls", "--all", "--no-cache"], &layers.paths);
    assert_eq!(
        short[short.len() - 3..],
        [
            "1\tevil\\n-rw-r--r-- 1 root 0 2020-09-13 12:26 1 shadow",
            "2\ttab\\there",
            "2\tetc/.wh.hosts\twhiteout: hides etc/hosts (file, layer 1)",
        ],
        "a tab between layer and name, none inside a name"
    );

    // One layer as stored: its names as they are stored, its own widths.
    assert_eq!(
        ls_lines(&["ls", "-l", "--layer", "2", "--no-cache"], &layers.paths),
        [
            "-rw-r--r-- 0/0             0 2020-09-13 12:26 2 ./etc/.wh.hosts",
            r"-rw-r--r-- 1234567/7654321 1 2020-09-13 12:26 2 tab\there",
        ]
    );
}

#[test]
fn json_gives_exact_names_and_one_inode_per_hardlink_group() {
    require!(Fuse);
    let layers = rough_stack();
    let lines = ls_lines(&["ls", "--json", "--no-cache"], &layers.paths);
    let values: BTreeMap<String, serde_json::Value> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (v["path"].as_str().expect("path").to_string(), v)
        })
        .collect();
    let passwd = &values["etc/passwd"];
    let backup = &values["etc/passwd-"];
    assert_eq!(passwd["ino"], backup["ino"], "{passwd} {backup}");
    assert_eq!(
        (passwd["nlink"].as_u64(), backup["nlink"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(passwd["uid"].as_u64(), Some(4_294_967_295));
    assert_ne!(values["etc/group"]["ino"], passwd["ino"]);
    assert_eq!(values["d"]["nlink"].as_u64(), Some(10));
    assert!(values.contains_key("evil\n-rw-r--r-- 1 root 0 2020-09-13 12:26 1 shadow"));
    assert!(values.contains_key("tab\there"));
    // And the mount agrees on every inode and link count.
    let mount = layers.mount();
    let mut from_mount = BTreeMap::new();
    walk(mount.path(), mount.path(), &mut from_mount);
    assert_eq!(listed(&lines.join("\n")), from_mount);
}

/// A layer of `count` members with incompressible contents, a few MiB.
fn big_layer(count: usize) -> Layer {
    let mut layer = Layer::new(Format::Pax).dir("d");
    for i in 0..count {
        let body = common::layer::pseudo_random(1500 + i % 3000, i as u64);
        layer = layer.file(format!("d/f{i:05}"), body);
    }
    layer
}

fn json_paths(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v.get("path").map(|p| p.as_str().expect("path").to_string())
        })
        .collect()
}

#[test]
fn peek_reads_at_most_the_bytes_asked_for() {
    let layer = big_layer(2000);
    for codec in [common::Codec::Gzip, common::Codec::Zstd] {
        let mut layers = Layers::new();
        layers.add_encoded(&layer, codec);
        let path = layers.paths[0].clone();
        let size = std::fs::metadata(&path).expect("stat").len();
        assert!(size > 2 << 20, "{codec:?}: {size} bytes");
        let whole = json_paths(&ls_lines(
            &["ls", "--json", "--no-cache", "--layer", "1"],
            &layers.paths,
        ));
        for (limit, bytes) in [("64K", 65_536u64), ("300000", 300_000)] {
            let lines = ls_lines(&["ls", "--json", "--peek", limit], &layers.paths);
            let summary: serde_json::Value =
                serde_json::from_str(lines.last().expect("summary")).expect("json");
            assert_eq!(summary["partial"], true, "{codec:?} {limit}");
            assert_eq!(summary["layer_bytes"], size);
            let read = summary["bytes_read"].as_u64().expect("bytes_read");
            assert!(read <= bytes, "{codec:?} {limit}: read {read}");
            let peeked = json_paths(&lines[..lines.len() - 1]);
            assert_eq!(summary["members"], peeked.len());
            assert!(peeked.len() > 10, "{codec:?} {limit}: {peeked:?}");
            assert!(peeked.len() < whole.len(), "{codec:?} {limit}");
            assert_eq!(peeked, whole[..peeked.len()], "a prefix of the layer");

            // The same from a copy cut at the limit: nothing past it counted.
            let bytes_used = std::fs::read(&path).expect("read")[..bytes as usize].to_vec();
            let mut cut = Layers::new();
            cut.add_bytes(&bytes_used);
            let cut_lines = ls_lines(&["ls", "--json", "--peek", limit], &cut.paths);
            assert_eq!(cut_lines[..cut_lines.len() - 1], lines[..lines.len() - 1]);
            let cut_summary: serde_json::Value =
                serde_json::from_str(cut_lines.last().expect("summary")).expect("json");
            assert_eq!(cut_summary["partial"], true);
            assert_eq!(cut_summary["members"], summary["members"]);
        }
        let text = ls_lines(&["ls", "--peek", "64K"], &layers.paths);
        let last = text.last().expect("summary");
        assert!(
            last.starts_with(&format!(
                "partial: {} members from the first ",
                text.len() - 1
            )) && last.ends_with(&format!(" of {size} bytes")),
            "{last}"
        );
    }
}

#[test]
fn peek_past_the_end_lists_the_whole_layer_as_complete() {
    let mut layers = Layers::new();
    layers.add_encoded(&big_layer(50), common::Codec::Gzip);
    let size = std::fs::metadata(&layers.paths[0]).expect("stat").len();
    let peeked = ls_lines(&["ls", "--peek", "1G"], &layers.paths);
    let whole = ls_lines(&["ls", "--no-cache", "--layer", "1"], &layers.paths);
    assert_eq!(peeked[..peeked.len() - 1], whole[..]);
    assert_eq!(
        peeked.last().map(String::as_str),
        Some(format!("complete: 51 members, {size} bytes read").as_str())
    );
    let json = ls_lines(&["ls", "--json", "--peek", "1G"], &layers.paths);
    assert_eq!(
        json.last().map(String::as_str),
        Some(
            format!(r#"{{"partial":false,"members":51,"bytes_read":{size},"layer_bytes":{size}}}"#)
                .as_str()
        )
    );
}

#[test]
fn peek_refuses_bad_sizes_and_several_layers() {
    let layers = stack();
    let one = &layers.paths[..1];
    for (size, why) in [
        ("0", "--peek 0: must be more than 0 bytes"),
        ("12x", "--peek 12x: not a byte count"),
        ("K", "--peek K: not a byte count"),
    ] {
        let run = run_on(&["ls", "--peek", size], one);
        assert!(!run.status.success(), "{size}");
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(why), "{}", run.stderr);
    }
    let run = run_on(&["ls", "--peek", "1K"], &layers.paths);
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains("--peek lists one layer as stored; 2 layers were given"),
        "{}",
        run.stderr
    );
}
