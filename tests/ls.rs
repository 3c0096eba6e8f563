//! `layerfs ls` agrees with the mount: same paths, kinds, sizes, modes and
//! link targets, and `--json` output parses as JSON.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::mount::layerfs;
use common::{Format, Layer, Layers};

/// What both the listing and the mount say of one path.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: String,
    mode: u32,
    size: u64,
    link: Option<String>,
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
            };
            (text("path"), seen)
        })
        .collect()
}

#[test]
fn json_listing_matches_the_mount() {
    let layers = stack();
    let run = layerfs(
        ["ls", "--json", "--no-cache"]
            .iter()
            .map(|s| s.as_ref())
            .chain(layers.paths.iter().map(|p| p.as_os_str())),
    );
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
    let run = layerfs(
        ["ls", "--no-cache"]
            .iter()
            .map(|s| s.as_ref())
            .chain(layers.paths.iter().map(|p| p.as_os_str())),
    );
    run.expect_success("layerfs ls");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.contains(&"2\tetc/passwd"), "{lines:?}");
    assert!(lines.contains(&"1\tetc/passwd.bak"), "{lines:?}");
    assert!(lines.contains(&"1\tbin"), "{lines:?}");
}

#[test]
fn one_layer_is_listed_as_stored_with_its_whiteouts() {
    let layers = stack();
    let args = ["ls", "--json", "--no-cache", "--layer", "2"];
    let run = layerfs(
        args.iter()
            .map(|s| s.as_ref())
            .chain(layers.paths.iter().map(|p| p.as_os_str())),
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
    let bad = layerfs(
        ["ls", "--layer", "3"]
            .iter()
            .map(|s| s.as_ref())
            .chain(layers.paths.iter().map(|p| p.as_os_str())),
    );
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("--layer 3: there are 2 layers"),
        "{}",
        bad.stderr
    );
}
