//! Images as inputs: OCI layouts, OCI archives and `docker save` archives
//! are mounted from their blobs in place, multi-platform indexes resolve
//! by `--platform`, and blobs are checked against their digests.
//!
//! The reference images come from umoci (`scripts/umoci-crosscheck.sh`)
//! and skopeo; a test that needs one is skipped, with a line saying so,
//! where it is missing (CI installs both, and fails rather than skips).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{bin, is_mounted, layerfs, mount_args};
use common::oci::{gunzip, manifest_descriptor, sha256, Layout, TAR};
use common::tree::{snapshot, Fields, Mtime};
use common::{assert_tree, Expected, Layer, Mount};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/umoci-crosscheck.sh");
const TAG: &str = "crosscheck";

/// Builds the umoci cross-check image (four layers with whiteouts, an
/// opaque directory, kind changes) and umoci's unpack of it.
fn umoci_image(work: &Path) {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .arg("--layers-only")
        .arg(work)
        .env("LAYERFS", bin())
        .output()
        .expect("run umoci-crosscheck.sh");
    assert!(
        out.status.success(),
        "umoci-crosscheck.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `skopeo copy SRC DST`, failing the test if skopeo is missing.
fn skopeo_copy(src: &str, dst: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", src, dst])
        .output()
        .expect("skopeo must be installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "skopeo copy {src} {dst}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn layout_docker_archive_and_oci_archive_mount_as_umoci_unpacks_them() {
    require!(Fuse, Tool("umoci"), Tool("skopeo"));
    let work = tempfile::tempdir().expect("work dir");
    umoci_image(work.path());
    let layout = work.path().join("image");
    let docker = work.path().join("docker.tar");
    let oci = work.path().join("oci.tar");
    let source = format!("oci:{}:{TAG}", layout.display());
    skopeo_copy(
        &source,
        &format!("docker-archive:{}:test/img:v1", docker.display()),
    );
    skopeo_copy(&source, &format!("oci-archive:{}:{TAG}", oci.display()));
    let reference = snapshot(&work.path().join("expected/rootfs"));
    let expected = Expected::from_snapshot(
        &reference,
        Fields {
            xattrs: false,
            mtime: Mtime::Seconds,
        },
    );
    // An OCI layout packed by hand: members named `./blobs/...`, after `./`.
    let packed = work.path().join("packed.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&packed)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(tar.success());
    let tagged = PathBuf::from(format!("{}:{TAG}", layout.display()));
    for image in [layout.clone(), tagged, docker.clone(), oci.clone(), packed] {
        let mount = Mount::with_args(&["--no-cache"], std::slice::from_ref(&image));
        assert_tree(mount.path(), &expected);
    }
}

#[test]
fn inspect_reports_sizes_digests_entries_and_what_each_layer_hides() {
    require!(Tool("umoci"), Root);
    let work = tempfile::tempdir().expect("work dir");
    umoci_image(work.path());
    let layout = work.path().join("image");
    let run = layerfs(
        ["inspect", "--no-cache", "--json"]
            .map(Into::into)
            .into_iter()
            .chain([layout.clone().into_os_string()]),
    );
    run.expect_success("inspect");
    let layers: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let blobs: Vec<PathBuf> = fs::read_to_string(work.path().join("layers"))
        .expect("layer list")
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(layers.len(), blobs.len());
    for (n, (layer, blob)) in layers.iter().zip(&blobs).enumerate() {
        let bytes = fs::read(blob).expect("blob");
        assert_eq!(layer["layer"], n + 1);
        assert_eq!(
            layer["media_type"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(layer["compressed_bytes"], bytes.len());
        assert_eq!(layer["digest"], sha256(&bytes));
        // The uncompressed tar, up to and with its end-of-archive marker.
        let tar = gunzip(&bytes);
        let uncompressed = layer["uncompressed_bytes"].as_u64().expect("size") as usize;
        assert!(uncompressed <= tar.len() && tar.len() - uncompressed < 10240);
        assert!(tar[uncompressed - 1024..uncompressed]
            .iter()
            .all(|&b| b == 0));
        let members = tar::Archive::new(&tar[..]).entries().expect("tar").count();
        assert_eq!(layer["entries"], members);
    }
    // The bottom layer hides nothing; every later one of this image
    // deletes something (the script's layers 2-4 all remove paths).
    assert_eq!(layers[0]["hides"], 0);
    assert!(layers[1..].iter().all(|l| l["hides"].as_u64() > Some(0)));
    let text = layerfs([
        std::ffi::OsStr::new("inspect"),
        "--no-cache".as_ref(),
        layout.as_os_str(),
    ]);
    text.expect_success("inspect as text");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), blobs.len() + 1, "{}", text.stdout);
    // Each row holds the JSON's values, the media type and digest starting
    // under their headings and every number ending under its own.
    let header = lines[0];
    let start = |name: &str| header.find(name).expect(name);
    let end = |name: &str| start(name) + name.len();
    for (line, layer) in lines[1..].iter().zip(&layers) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |key: &str| layer[key].as_u64().expect(key).to_string();
        assert_eq!(
            words,
            [
                number("layer"),
                layer["media_type"]
                    .as_str()
                    .expect("media type")
                    .to_string(),
                number("compressed_bytes"),
                number("uncompressed_bytes"),
                number("entries"),
                number("hides"),
                layer["digest"].as_str().expect("digest").to_string(),
            ],
            "{}",
            text.stdout
        );
        assert_eq!(
            line.find("application/"),
            Some(start("MEDIA TYPE")),
            "{line}"
        );
        assert_eq!(line.find("sha256:"), Some(start("DIGEST")), "{line}");
        for (name, value) in [
            ("LAYER", number("layer")),
            ("COMPRESSED", number("compressed_bytes")),
            ("UNCOMPRESSED", number("uncompressed_bytes")),
            ("ENTRIES", number("entries")),
            ("HIDES", number("hides")),
        ] {
            let cell = &line[..end(name)];
            assert!(
                cell.ends_with(&format!(" {value}")) || cell == value,
                "{name} in {line:?}"
            );
        }
    }
}

/// A one-layer image (a plain tar holding `arch` with `content` and
/// `data`) tagged `tag`; returns the layer's digest.
fn one_layer_image(layout: &Layout, content: &str) -> (String, String, usize) {
    let layer = Layer::default()
        .file("arch", content)
        .file("data", vec![b'x'; 5000]);
    let (digest, size) = layout.blob(&layer.to_tar());
    (TAR.to_string(), digest, size)
}

#[test]
fn a_multi_platform_index_resolves_by_platform() {
    require!(Fuse);
    let work = tempfile::tempdir().expect("work dir");
    let layout = Layout::new(&work.path().join("multi"));
    let amd = layout.manifest(&[one_layer_image(&layout, "amd64")]);
    let arm = layout.manifest(&[one_layer_image(&layout, "arm64")]);
    // A nested index, as registries serve multi-platform images.
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            manifest_descriptor(&amd.0, amd.1, serde_json::json!({"platform": {"os": "linux", "architecture": "amd64"}})),
            manifest_descriptor(&arm.0, arm.1, serde_json::json!({"platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}})),
        ],
    });
    let (index, index_size) = layout.blob(nested.to_string().as_bytes());
    layout.index(serde_json::json!([{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": index,
        "size": index_size,
        "annotations": {"org.opencontainers.image.ref.name": "multi"},
    }]));
    let image = PathBuf::from(format!("{}:multi", layout.dir.display()));
    for (platform, expect) in [
        ("linux/amd64", "amd64"),
        ("linux/arm64", "arm64"),
        ("linux/arm64/v8", "arm64"),
    ] {
        let mount = Mount::with_args(
            &["--no-cache", "--platform", platform],
            std::slice::from_ref(&image),
        );
        assert_eq!(
            fs::read_to_string(mount.join("arch")).expect("arch"),
            expect,
            "{platform}"
        );
    }
    let run = layerfs([
        std::ffi::OsStr::new("ls"),
        "--no-cache".as_ref(),
        "--platform".as_ref(),
        "linux/s390x".as_ref(),
        image.as_os_str(),
    ]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("no manifest for platform linux/s390x")
            && run.stderr.contains("linux/amd64, linux/arm64/v8"),
        "{}",
        run.stderr
    );
    let run = layerfs([
        std::ffi::OsStr::new("ls"),
        "--no-cache".as_ref(),
        std::ffi::OsStr::new(&format!("{}:nosuchtag", layout.dir.display())),
    ]);
    assert!(
        run.stderr.contains("no manifest tagged nosuchtag"),
        "{}",
        run.stderr
    );
}

/// A one-layer tagged layout whose layer's file data can be tampered with
/// without breaking the tar; returns it and the layer's digest.
fn tamperable(dir: &Path) -> (Layout, String) {
    let layout = Layout::new(dir);
    let layer = one_layer_image(&layout, "original");
    let digest = layer.1.clone();
    let (manifest, size) = layout.manifest(&[layer]);
    layout.index(serde_json::json!([manifest_descriptor(
        &manifest,
        size,
        serde_json::json!({"annotations": {"org.opencontainers.image.ref.name": "v1"}})
    )]));
    (layout, digest)
}

/// Flips the first byte of `arch`'s contents in the layer blob (the same
/// length, still a valid tar) and returns the new digest.
fn tamper(path: &Path) -> String {
    let mut bytes = fs::read(path).expect("blob");
    let at = bytes
        .windows(8)
        .position(|w| w == b"original")
        .expect("file data");
    bytes[at] = b'O';
    fs::write(path, &bytes).expect("tamper");
    sha256(&bytes)
}

#[test]
fn a_tampered_blob_is_refused_unless_verification_is_off() {
    require!(Fuse);
    let work = tempfile::tempdir().expect("work dir");
    let (layout, digest) = tamperable(&work.path().join("img"));
    let actual = tamper(&layout.blob_path(&digest));
    let cache = work.path().join("cache");
    let guard = Mount::fresh();
    let mut args = mount_args(&[], std::slice::from_ref(&layout.dir), guard.path());
    args.splice(1..1, ["--cache-dir".into(), cache.clone().into_os_string()]);
    let run = layerfs(&args);
    assert!(!run.status.success(), "a tampered blob was mounted");
    assert!(!is_mounted(guard.path()));
    assert!(
        run.stderr.contains("digest mismatch")
            && run.stderr.contains(&digest)
            && run.stderr.contains(&actual)
            && run.stderr.contains(&layout.dir.display().to_string()),
        "{}",
        run.stderr
    );
    let mount = Mount::with_args(
        &["--no-verify", "--cache-dir", cache.to_str().expect("utf-8")],
        std::slice::from_ref(&layout.dir),
    );
    assert_eq!(
        fs::read_to_string(mount.join("arch")).expect("arch"),
        "Original"
    );
    drop(mount);
    // The unverified index stored by --no-verify does not stand in for a
    // check: verifying again still refuses.
    let run = layerfs([
        std::ffi::OsStr::new("ls"),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
        layout.dir.as_os_str(),
    ]);
    assert!(run.stderr.contains("digest mismatch"), "{}", run.stderr);
}

#[test]
fn a_verified_layer_is_not_hashed_again_and_loose_layers_take_digests() {
    let work = tempfile::tempdir().expect("work dir");
    let (layout, digest) = tamperable(&work.path().join("img"));
    let cache = work.path().join("cache");
    let ls = |extra: &[&str], what: &Path| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "-v".into(),
            "ls".into(),
            "--cache-dir".into(),
            cache.clone().into(),
        ];
        args.extend(extra.iter().map(Into::into));
        args.push(what.into());
        layerfs(args)
    };
    let first = ls(&[], &layout.dir);
    first.expect_success("first ls");
    assert!(first.stderr.contains("bytes hashed"), "{}", first.stderr);
    let second = ls(&[], &layout.dir);
    second.expect_success("second ls");
    assert!(!second.stderr.contains("bytes hashed"), "{}", second.stderr);
    assert!(
        second.stderr.contains("loaded from the cache"),
        "{}",
        second.stderr
    );

    // A loose layer file: checked only when --digest is given.
    let blob = layout.blob_path(&digest);
    let unchecked = ls(&[], &blob);
    unchecked.expect_success("no digest");
    assert!(
        !unchecked.stderr.contains("bytes hashed"),
        "{}",
        unchecked.stderr
    );
    let good = format!("1={digest}");
    ls(&["--digest", &good], &blob).expect_success("right digest");
    let wrong = format!("1=sha256:{}", "0".repeat(64));
    let run = ls(&["--digest", &wrong], &blob);
    assert!(run.stderr.contains("digest mismatch"), "{}", run.stderr);
    let run = ls(&["--digest", "2=sha256:00"], &blob);
    assert!(run.stderr.contains("there is no layer 2"), "{}", run.stderr);
}

#[test]
fn missing_non_distributable_and_unknown_layers_are_refused_by_name() {
    let work = tempfile::tempdir().expect("work dir");
    let absent = format!("sha256:{}", "ab".repeat(32));
    for (media_type, expect) in [
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "non-distributable",
        ),
        (TAR, "is missing"),
        (
            "application/vnd.example.unknown",
            "not a tar layer layerfs reads",
        ),
    ] {
        let dir = work.path().join(media_type.replace(['/', '+'], "_"));
        let layout = Layout::new(&dir);
        let (manifest, size) = layout.manifest(&[(media_type.to_string(), absent.clone(), 10)]);
        layout.index(serde_json::json!([manifest_descriptor(
            &manifest,
            size,
            serde_json::json!({})
        )]));
        let run = layerfs([
            std::ffi::OsStr::new("ls"),
            "--no-cache".as_ref(),
            dir.as_os_str(),
        ]);
        assert!(!run.status.success(), "{media_type}");
        assert!(
            run.stderr.contains(expect) && run.stderr.contains(&absent),
            "{media_type}: {}",
            run.stderr
        );
    }
}

#[test]
fn bad_digests_are_refused_in_one_line_naming_where_they_come_from() {
    let work = tempfile::tempdir().expect("work dir");
    let (layout, digest) = tamperable(&work.path().join("img"));
    let blob = layout.blob_path(&digest);
    let upper = digest.to_uppercase().replacen("SHA256", "sha256", 1);
    let fail = |args: &[&std::ffi::OsStr], wants: &[&str]| {
        let mut all = vec!["ls".as_ref(), "--no-cache".as_ref()];
        all.extend_from_slice(args);
        let run = layerfs(&all);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
        for want in wants {
            assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
        }
    };
    // On the command line: `--digest`, uppercase hex or an unknown algorithm.
    let arg = format!("1={upper}");
    fail(
        &["--digest".as_ref(), arg.as_ref(), blob.as_os_str()],
        &["--digest", &upper, "64 lowercase hex digits"],
    );
    let md5 = format!("1=md5:{}", "0".repeat(32));
    fail(
        &["--digest".as_ref(), md5.as_ref(), blob.as_os_str()],
        &["--digest", "\"md5\"", "cannot verify"],
    );
    // `IMAGE@DIGEST`.
    let short = format!("{}@sha256:00", layout.dir.display());
    fail(
        &[short.as_ref()],
        &[
            &short,
            "the digest asked for",
            "\"sha256:00\" is not a valid digest",
        ],
    );
    // In the image's JSON: an index entry, a layer descriptor.
    let dir = work.path().join("bad-index");
    let bad_index = Layout::new(&dir);
    bad_index.index(serde_json::json!([manifest_descriptor(
        &upper,
        10,
        serde_json::json!({})
    )]));
    fail(
        &[dir.as_os_str()],
        &[&dir.display().to_string(), "index.json", &upper],
    );
    let dir = work.path().join("bad-layer");
    let bad_layer = Layout::new(&dir);
    let short = format!("{digest}0");
    let (manifest, size) = bad_layer.manifest(&[(TAR.to_string(), short.clone(), 10)]);
    bad_layer.index(serde_json::json!([manifest_descriptor(
        &manifest,
        size,
        serde_json::json!({})
    )]));
    fail(
        &[dir.as_os_str()],
        &[
            &dir.display().to_string(),
            manifest.trim_start_matches("sha256:"),
            &short,
        ],
    );
}

#[test]
fn an_image_and_a_loose_layer_stack_in_order() {
    require!(Fuse);
    let work = tempfile::tempdir().expect("work dir");
    let (layout, _) = tamperable(&work.path().join("img"));
    let patch = work.path().join("patch.tar");
    fs::write(
        &patch,
        Layer::default()
            .whiteout("data")
            .file("arch", "patched")
            .to_tar(),
    )
    .expect("patch");
    let mount = Mount::with_args(&["--no-cache"], &[layout.dir.clone(), patch]);
    assert_eq!(
        fs::read_to_string(mount.join("arch")).expect("arch"),
        "patched"
    );
    assert!(!mount.join("data").exists());
}

#[test]
fn a_layer_that_starts_like_an_image_archive_is_still_a_layer() {
    require!(Fuse);
    let work = tempfile::tempdir().expect("work dir");
    let hex = "ab".repeat(32);
    for first in [
        "blobs/sha256/x",
        "manifest.json",
        &format!("{hex}/layer.tar"),
    ] {
        let path = work.path().join("layer.tar");
        fs::write(
            &path,
            Layer::default()
                .file(first, "{}")
                .file("etc/x", "y")
                .to_tar(),
        )
        .expect("layer");
        let mount = Mount::with_args(&["--no-cache"], std::slice::from_ref(&path));
        assert_eq!(
            fs::read_to_string(mount.join("etc/x")).expect("etc/x"),
            "y",
            "{first}"
        );
    }
}
