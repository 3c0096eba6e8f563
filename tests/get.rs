//! `layerfs cat` and `layerfs get`: paths read out of the merged tree
//! without a mount. `get` of a subtree is compared with GNU tar's
//! extraction of the same subtree from `layerfs export`, the reference for
//! what the merged tree holds.

mod common;
#[allow(dead_code)]
#[path = "registry/fixtures.rs"]
mod fixtures;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::layer::Format;
use common::mount::{layerfs, run_captured, Run};
use common::proxy::Proxy;
use common::registry::Registry;
use common::tree::{snapshot, Fields};
use common::{assert_tree, Expected, Layer, Layers};

fn cat(layers: &[PathBuf], paths: &[&str]) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec!["cat".into(), "--no-cache".into()];
    args.extend(layers.iter().map(Into::into));
    args.push("--".into());
    args.extend(paths.iter().map(Into::into));
    layerfs(args)
}

fn get(layers: &[PathBuf], dir: &Path, paths: &[&str]) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec!["get".into(), "--no-cache".into()];
    args.push("-C".into());
    args.push(dir.into());
    args.extend(layers.iter().map(Into::into));
    args.push("--".into());
    args.extend(paths.iter().map(Into::into));
    layerfs(args)
}

/// Two layers: the upper one replaces a file, whites one out, adds a
/// symlink with an absolute target (the tree's root, not the host's).
fn two_layers() -> Layers {
    let mut layers = Layers::new();
    layers.add(
        &Layer::new(Format::Pax)
            .dir("etc")
            .file("etc/a", "lower a\n")
            .file("etc/b", "lower b\n")
            .file("etc/c", "lower c\n")
            .fifo("etc/pipe"),
    );
    layers.add(
        &Layer::new(Format::Pax)
            .dir("etc")
            .file("etc/a", "upper a\n")
            .whiteout("etc/b")
            .symlink("etc/l", "/etc/c")
            .symlink("etc/host", "/etc/hostname")
            .symlink("etc/loop", "loop"),
    );
    layers
}

#[test]
fn cat_writes_files_of_both_layers_in_order_through_symlinks() {
    let layers = two_layers();
    let run = cat(
        &layers.paths,
        &["etc/c", "/etc/a", "etc/l", "./etc/../etc/a"],
    );
    run.expect_success("cat");
    assert_eq!(run.stdout, "lower c\nupper a\nlower c\nupper a\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn cat_reports_each_bad_path_does_the_rest_and_exits_1() {
    let layers = two_layers();
    let run = cat(
        &layers.paths,
        &[
            "etc/b", "etc", "etc/a", "etc/host", "etc/pipe", "etc/loop", "etc/a/x",
        ],
    );
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    // The whited-out file and the host's /etc/hostname are not read.
    assert_eq!(run.stdout, "upper a\n");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 7, "{lines:?}");
    for (line, path) in lines.iter().zip([
        "etc/b", "etc", "etc/host", "etc/pipe", "etc/loop", "etc/a/x",
    ]) {
        assert!(
            line.starts_with(&format!("layerfs: cat: {path}: ")),
            "{line}"
        );
    }
    assert!(lines[1].contains("a directory"), "{}", lines[1]);
    assert!(lines[3].contains("a fifo"), "{}", lines[3]);
    assert!(lines[4].contains("symbolic links"), "{}", lines[4]);
    assert!(lines[5].contains("not a directory"), "{}", lines[5]);
    assert!(lines[6].contains("6 paths"), "{}", lines[6]);
}

/// A subtree with everything `get` must carry over: modes, owners,
/// sub-second times, xattrs, hardlinks, a symlink, devices, a fifo, and a
/// whiteout and replacement from the upper layer.
fn ssl_stack() -> Layers {
    let mut layers = Layers::new();
    layers.add(
        &Layer::new(Format::Pax)
            .dir("etc")
            .file("etc/hosts", "outside the subtree")
            .dir("etc/ssl")
            .mode(0o750)
            .owner(12, 34)
            .dir("etc/ssl/certs")
            .file("etc/ssl/certs/ca.pem", "ca")
            .mode(0o600)
            .owner(1000, 1001)
            .xattr("user.origin", "lower")
            .hardlink("etc/ssl/certs/ca-link.pem", "etc/ssl/certs/ca.pem")
            .file("etc/ssl/certs/gone.pem", "gone")
            .symlink("etc/ssl/cert.pem", "certs/ca.pem")
            .file("etc/ssl/setuid", "x")
            .mode(0o4755)
            .owner(5, 6)
            .char_dev("etc/ssl/null", 1, 3)
            .block_dev("etc/ssl/loop9", 7, 9)
            .fifo("etc/ssl/fifo")
            .xattr("trusted.kind", "fifo")
            .symlink("etc/ssl/trusted-link", "fifo")
            .xattr("trusted.kind", "link")
            .dir("etc/ssl/private")
            .mode(0o500),
    );
    layers.add(
        &Layer::new(Format::Pax)
            .dir("etc")
            .dir("etc/ssl")
            .mode(0o750)
            .owner(12, 34)
            .whiteout("etc/ssl/certs/gone.pem")
            .file("etc/ssl/openssl.cnf", "upper")
            .pax("mtime", "1700000000.123456789")
            .file("etc/ssl/private/key", "secret")
            .mode(0o400),
    );
    layers
}

#[test]
fn get_of_a_subtree_equals_gnu_tars_extraction_of_the_export() {
    require!(Root);
    let layers = ssl_stack();
    let archive = layers.dir().join("export.tar");
    let mut args: Vec<std::ffi::OsString> = vec!["export".into(), "--no-cache".into()];
    args.extend(layers.paths.iter().map(Into::into));
    args.extend(["-o".into(), archive.clone().into()]);
    layerfs(args).expect_success("export");
    let reference = layers.dir().join("ref");
    std::fs::create_dir(&reference).unwrap();
    run_captured(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(&archive)
            .arg("-C")
            .arg(&reference)
            .arg("etc/ssl"),
    )
    .expect_success("tar -x");
    let expected = Expected::from_snapshot(&snapshot(&reference.join("etc/ssl")), Fields::ALL);

    let out = layers.dir().join("out");
    std::fs::create_dir(&out).unwrap();
    get(&layers.paths, &out, &["etc/ssl"]).expect_success("get");
    assert_tree(&out.join("etc/ssl"), &expected);
    // Again over what is there: replaced, the same tree.
    get(&layers.paths, &out, &["etc/ssl"]).expect_success("get again");
    assert_tree(&out.join("etc/ssl"), &expected);
    // Only what was asked for: etc/hosts stays behind.
    assert_eq!(common::names(&out.join("etc")), ["ssl"]);
    let ino =
        |p: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(out.join(p)).unwrap());
    assert_eq!(
        ino("etc/ssl/certs/ca.pem"),
        ino("etc/ssl/certs/ca-link.pem")
    );
}

#[test]
fn get_never_writes_through_a_symlink_out_of_the_destination() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    let mut layers = Layers::new();
    // `etc` points out of the tree; the upper layer's etc/x lands, by the
    // merge rules, at that path inside the tree.
    layers.add(&Layer::new(Format::Pax).symlink("etc", &target));
    layers.add(&Layer::new(Format::Pax).file("etc/x", "hostile"));

    let out = layers.dir().join("out");
    std::fs::create_dir(&out).unwrap();
    let run = get(&layers.paths, &out, &["etc", "etc/x"]);
    // etc is extracted as the symlink it is; etc/x is below a symlink of
    // the tree and refused, as tar finds no etc/x in an export.
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "etc/x: etc is a symbolic link in the tree (to {target})"
        )),
        "{}",
        run.stderr
    );
    let link = std::fs::read_link(out.join("etc")).unwrap();
    assert_eq!(link, Path::new(&target));
    assert!(common::names(outside.path()).is_empty());

    // Where the tree has x, a real directory: a symlink already in the
    // destination on the way there is refused, not followed.
    let inside = target.trim_start_matches('/');
    let (top, _) = inside.split_once('/').unwrap_or((inside, ""));
    std::os::unix::fs::symlink(&target, out.join(top)).unwrap();
    let x = format!("{inside}/x");
    let run = get(&layers.paths, &out, &[x.as_str()]);
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("a symlink is in the way"),
        "{}",
        run.stderr
    );
    assert!(common::names(outside.path()).is_empty());

    // Into a fresh destination, x is made where the tree has it.
    let fresh = layers.dir().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    get(&layers.paths, &fresh, &[x.as_str()]).expect_success("get x");
    assert_eq!(std::fs::read(fresh.join(&x)).unwrap(), b"hostile");
    assert!(common::names(outside.path()).is_empty());
}

/// Extracts `paths` from `archive` into `dir` with GNU tar; its status.
fn tar_x(archive: &Path, dir: &Path, paths: &[&str]) -> Run {
    std::fs::create_dir(dir).unwrap();
    run_captured(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(archive)
            .arg("-C")
            .arg(dir)
            .args(paths),
    )
}

#[test]
fn get_below_a_symlink_of_the_tree_does_what_gnu_tar_does_with_the_export() {
    let mut layers = Layers::new();
    layers.add(
        &Layer::new(Format::Pax)
            .dir("usr/lib/app")
            .file("usr/lib/app/conf", "conf")
            .symlink("lib", "usr/lib")
            .symlink("abs", "/usr/lib"),
    );
    let archive = layers.dir().join("export.tar");
    let mut args: Vec<std::ffi::OsString> = vec!["export".into(), "--no-cache".into()];
    args.extend(layers.paths.iter().map(Into::into));
    args.extend(["-o".into(), archive.clone().into()]);
    layerfs(args).expect_success("export");

    for (n, path) in ["lib/app", "lib/app/conf", "abs/app", "./lib/../lib/app"]
        .into_iter()
        .enumerate()
    {
        // GNU tar finds no such member in the export and makes nothing.
        let reference = layers.dir().join(format!("ref{n}"));
        let tar = tar_x(&archive, &reference, &[path]);
        assert_eq!(tar.status.code(), Some(2), "tar -x {path}: {}", tar.stderr);
        assert!(
            tar.stderr.contains("Not found in archive"),
            "{}",
            tar.stderr
        );
        assert!(common::names(&reference).is_empty());

        let out = layers.dir().join(format!("out{n}"));
        std::fs::create_dir(&out).unwrap();
        let run = get(&layers.paths, &out, &[path]);
        assert_eq!(run.status.code(), Some(1), "get {path}: {}", run.stderr);
        assert!(
            run.stderr.contains("is a symbolic link in the tree"),
            "{path}: {}",
            run.stderr
        );
        assert!(common::names(&out).is_empty(), "get {path} made something");
    }

    // The link and what it leads to, asked for by their own paths: as tar.
    let reference = layers.dir().join("ref");
    tar_x(&archive, &reference, &["lib", "usr/lib/app"]).expect_success("tar -x");
    let out = layers.dir().join("out");
    std::fs::create_dir(&out).unwrap();
    get(&layers.paths, &out, &["lib", "usr/lib/app"]).expect_success("get");
    // (The parents both make, usr and usr/lib, are timed when made.)
    let expected = Expected::from_snapshot(&snapshot(&reference.join("usr/lib/app")), Fields::ALL);
    assert_tree(&out.join("usr/lib/app"), &expected);
    assert_eq!(
        std::fs::read_link(out.join("lib")).unwrap(),
        std::fs::read_link(reference.join("lib")).unwrap()
    );
}

/// Blob bytes of the layer `digest` the proxy served.
fn fetched(proxy: &Proxy, digest: &str) -> u64 {
    proxy
        .blob_exchanges()
        .iter()
        .filter(|e| e.path.ends_with(digest))
        .map(|e| e.body_bytes)
        .sum()
}

#[test]
fn cat_and_get_of_one_small_file_fetch_a_few_spans_of_a_registry_layer() {
    require!(Tool("docker-registry"), Tool("skopeo"));
    let big = fixtures::big();
    let registry = Registry::start();
    let proxy = Proxy::start(&registry.addr());
    registry.push(
        &fixtures::oci_source(&big.layout, fixtures::BIG_TAG),
        "big:1",
        &[],
    );
    let reference = format!("{}/big:1", proxy.addr());
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    // The first run indexes the layer (reads it all); later ones use the
    // stored index and must fetch only the needle's spans.
    let first = layerfs([
        "cat",
        "--cache-dir",
        cache_dir,
        &reference,
        "--",
        fixtures::NEEDLE,
    ]);
    first.expect_success("cat");
    assert_eq!(first.stdout.as_bytes(), fixtures::NEEDLE_CONTENT);

    let few = 8 << 20;
    proxy.clear();
    let again = layerfs([
        "cat",
        "--cache-dir",
        cache_dir,
        &reference,
        "--",
        fixtures::NEEDLE,
    ]);
    again.expect_success("cat");
    assert_eq!(again.stdout.as_bytes(), fixtures::NEEDLE_CONTENT);
    let bytes = fetched(&proxy, &big.digest);
    assert!(
        bytes <= few && bytes * 8 < big.size,
        "cat fetched {bytes} of {} bytes",
        big.size
    );

    proxy.clear();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().to_str().unwrap();
    let got = layerfs([
        "get",
        "--cache-dir",
        cache_dir,
        "-C",
        dest,
        &reference,
        "--",
        fixtures::NEEDLE,
    ]);
    got.expect_success("get");
    assert_eq!(
        std::fs::read(out.path().join(fixtures::NEEDLE)).unwrap(),
        fixtures::NEEDLE_CONTENT
    );
    let bytes = fetched(&proxy, &big.digest);
    assert!(
        bytes <= few && bytes * 8 < big.size,
        "get fetched {bytes} of {} bytes",
        big.size
    );
}
