//! `layerfs inspect --usage`: each layer's bytes added and wasted, and the
//! largest directories and files. What a layer adds is checked against
//! GNU tar's listing of it, what the merged tree shows against GNU tar's
//! listing of `layerfs export`, and the waste per layer against what the
//! stack was built to hide.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::layer::{Codec, Format};
use common::mount::{layerfs, run_captured, Run};
use common::oci::{sha256, Layout};
use common::{Layer, Layers};

fn inspect_usage(extra: &[&str], inputs: &[PathBuf]) -> Run {
    let mut args: Vec<OsString> = vec!["inspect".into(), "--usage".into(), "--no-cache".into()];
    args.extend(extra.iter().map(Into::into));
    args.extend(inputs.iter().map(Into::into));
    let run = layerfs(args);
    run.expect_success("inspect --usage");
    run
}

fn json_lines(run: &Run) -> Vec<serde_json::Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Bytes of the regular files GNU tar lists in the archive at `path`
/// (`-` lines of `tar tv`: a hardlink, `h`, stores no data).
fn tar_tv_file_bytes(path: &Path) -> u64 {
    let run = run_captured(Command::new("tar").arg("-tvf").arg(path));
    run.expect_success("tar tv");
    run.stdout
        .lines()
        .filter(|line| line.starts_with('-'))
        .map(|line| {
            let size = line.split_whitespace().nth(2).expect("size column");
            size.parse::<u64>()
                .unwrap_or_else(|e| panic!("{e}: {line}"))
        })
        .sum()
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// Three layers whose later ones hide data in every way a stack can:
/// an overwrite, whiteouts of a file and a directory, an opaque directory,
/// a path stored twice in one layer, and hardlinks, whose data goes only
/// with their last name.
fn wasteful() -> Layers {
    let mut layers = Layers::new();
    layers.add_encoded(
        &Layer::new(Format::Gnu)
            .dir("usr")
            .file("usr/a", bytes(1000, 1))
            .file("usr/lib/x", bytes(300, 2))
            .file("usr/lib/y", bytes(200, 3))
            .file("etc/keep", bytes(50, 4))
            .file("big", bytes(4000, 5))
            .file("hl/orig", bytes(700, 6))
            .hardlink("hl/link", "hl/orig")
            .file("opq/p", bytes(80, 7))
            .file("opq/q", bytes(20, 8)),
        Codec::Gzip,
    );
    layers.add(
        &Layer::new(Format::Pax)
            .file("usr/a", bytes(1500, 9))
            .whiteout("big")
            .whiteout("hl/orig")
            .opaque("opq")
            .file("opq/new", bytes(5, 10))
            .file("dup", bytes(10, 11))
            .file("dup", bytes(12, 12)),
    );
    layers.add(
        &Layer::new(Format::Gnu)
            .whiteout("usr/lib")
            .whiteout("hl/link"),
    );
    layers
}

#[test]
fn added_bytes_are_what_tar_tv_adds_up_to_and_waste_is_what_no_name_shows() {
    let layers = wasteful();
    let lines = json_lines(&inspect_usage(&["--json"], &layers.paths));
    let per_layer: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["type"] == "layer").collect();
    assert_eq!(per_layer.len(), 3);
    for (n, (layer, path)) in per_layer.iter().zip(&layers.paths).enumerate() {
        assert_eq!(layer["layer"], n + 1);
        assert_eq!(layer["digest"], serde_json::Value::Null);
        assert_eq!(
            layer["added_bytes"].as_u64(),
            Some(tar_tv_file_bytes(path)),
            "layer {}",
            n + 1
        );
    }
    let field = |key: &str| -> Vec<u64> {
        per_layer
            .iter()
            .map(|l| l[key].as_u64().expect(key))
            .collect()
    };
    // Layer 2: the overwritten usr/a (1000), the whited-out big (4000),
    // opq's p and q (100), the first dup (10); hl/orig's data stays, as
    // hl/link. Layer 3: usr/lib (500), and hl's data with its last name.
    assert_eq!(field("wasted_bytes"), [0, 5110, 1200]);
    assert_eq!(field("wasted_files"), [0, 5, 3]);
    // Whiteouts and opaque markers are not files; a hardlink stores none.
    assert_eq!(field("added_files"), [8, 4, 0]);

    // What is left is what the merged tree holds, as GNU tar lists it.
    let work = tempfile::tempdir().expect("work dir");
    let export = work.path().join("merged.tar");
    let mut args: Vec<OsString> = vec!["export".into(), "--no-cache".into(), "-o".into()];
    args.push(export.clone().into());
    args.extend(layers.paths.iter().map(Into::into));
    layerfs(args).expect_success("export");
    let total = lines.iter().find(|l| l["type"] == "total").expect("total");
    let added: u64 = field("added_bytes").iter().sum();
    assert_eq!(total["added_bytes"], added);
    assert_eq!(total["wasted_bytes"], 6310);
    assert_eq!(total["visible_bytes"], tar_tv_file_bytes(&export));
    assert_eq!(total["visible_bytes"], added - 6310);
}

#[test]
fn json_lines_list_layers_total_then_the_largest_directories_and_files() {
    let layers = wasteful();
    let lines = json_lines(&inspect_usage(&["--json", "--top", "2"], &layers.paths));
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "layer",
            "layer",
            "layer",
            "total",
            "directory",
            "directory",
            "file",
            "file"
        ]
    );
    let keys = |l: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = l.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&lines[0]),
        [
            "added_bytes",
            "added_files",
            "digest",
            "layer",
            "path",
            "type",
            "wasted_bytes",
            "wasted_files"
        ]
    );
    assert_eq!(lines[0]["path"], layers.paths[0].display().to_string());
    assert_eq!(
        keys(&lines[3]),
        [
            "added_bytes",
            "layers",
            "type",
            "visible_bytes",
            "wasted_bytes"
        ]
    );
    // The merged tree holds usr/a (1500), etc/keep (50), dup (12) and
    // opq/new (5).
    assert_eq!(lines[4]["path"], "usr");
    assert_eq!(lines[4]["bytes"], 1500);
    assert_eq!(lines[5]["path"], "etc");
    assert_eq!(lines[5]["bytes"], 50);
    assert_eq!(
        [&lines[6], &lines[7]].map(|l| (l["path"].clone(), l["bytes"].clone(), l["layer"].clone())),
        [
            ("usr/a".into(), 1500.into(), 2.into()),
            ("etc/keep".into(), 50.into(), 1.into())
        ]
    );
}

#[test]
fn a_directory_counts_a_hardlinked_file_once_and_the_file_is_listed_once() {
    let mut layers = Layers::new();
    layers.add(
        &Layer::new(Format::Gnu)
            .file("d/one", bytes(600, 1))
            .hardlink("d/two", "d/one")
            .hardlink("d/sub/three", "d/one")
            .file("d/sub/small", bytes(10, 2)),
    );
    let lines = json_lines(&inspect_usage(&["--json"], &layers.paths));
    let listed = |kind: &str| -> Vec<(String, u64)> {
        lines
            .iter()
            .filter(|l| l["type"] == kind)
            .map(|l| {
                (
                    l["path"].as_str().expect("path").to_string(),
                    l["bytes"].as_u64().expect("bytes"),
                )
            })
            .collect()
    };
    assert_eq!(
        listed("directory"),
        [("d".to_string(), 610), ("d/sub".to_string(), 610)]
    );
    assert_eq!(
        listed("file"),
        [("d/one".to_string(), 600), ("d/sub/small".to_string(), 10)]
    );
    let total = lines.iter().find(|l| l["type"] == "total").expect("total");
    assert_eq!(total["visible_bytes"], 610);
    assert_eq!(total["wasted_bytes"], 0);
}

#[test]
fn the_text_has_a_table_per_part_numbers_under_their_headings() {
    let work = tempfile::tempdir().expect("work dir");
    let layout = Layout::new(&work.path().join("image"));
    let lower = Layer::new(Format::Pax)
        .file("app/bin", bytes(12_345, 1))
        .file("app/old", bytes(678, 2))
        .to_tar();
    let upper = Layer::new(Format::Pax)
        .whiteout("app/old")
        .file("readme", bytes(9, 3))
        .to_tar();
    let media_type = "application/vnd.oci.image.layer.v1.tar".to_string();
    let digests = [sha256(&lower), sha256(&upper)];
    let descriptors: Vec<(String, String, usize)> = [lower, upper]
        .iter()
        .map(|tar| {
            let (digest, size) = layout.blob(tar);
            (media_type.clone(), digest, size)
        })
        .collect();
    let (manifest, size) = layout.manifest(&descriptors);
    layout.index(serde_json::json!([{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest,
        "size": size,
    }]));
    let run = inspect_usage(&[], std::slice::from_ref(&layout.dir));
    assert_eq!(
        run.stdout,
        format!(
            "\
LAYER  ADDED  FILES  WASTED  FILES  DIGEST OR FILE
    1  13023      2       0      0  {}
    2      9      1     678      1  {}
13032 bytes of files in 2 layers; 12354 bytes shown by the merged tree, 678 bytes wasted (5.2%)

BYTES  LARGEST DIRECTORIES
12345  app

BYTES  LAYER  LARGEST FILES
12345      1  app/bin
    9      2  readme
",
            digests[0], digests[1]
        )
    );
}

#[test]
fn without_usage_inspect_takes_one_image_and_top_needs_usage() {
    let layers = wasteful();
    let mut args: Vec<OsString> = vec!["inspect".into(), "--no-cache".into()];
    args.extend(layers.paths.iter().map(Into::into));
    let run = layerfs(&args);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("only with --usage"), "{}", run.stderr);
    let run = layerfs(["inspect", "--top", "3", "x"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
}
