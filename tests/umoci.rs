//! Cross-check against umoci: `scripts/umoci-crosscheck.sh` builds a
//! four-layer OCI image by editing and repacking a rootfs; umoci's own
//! unpack of the result is the reference for mounting the same layer blobs.
//! Hand-made images of the merge's corner cases are checked the same way.
//! Skipped, with a line saying so, without umoci (CI installs it, and
//! fails rather than skips).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{bin, run_captured, Run};
use common::oci::{manifest_descriptor, sha256, Layout, REF_NAME, TAR};
use common::tree::{snapshot, Fields, Mtime};
use common::{assert_tree, Expected, Layer, Layers, Mount};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/umoci-crosscheck.sh");

/// Runs the cross-check script on a fresh work directory.
fn run_script(work: &Path, extra: &[&str]) -> Run {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .args(extra)
        .arg(work)
        .env("LAYERFS", bin())
        .output()
        .expect("run umoci-crosscheck.sh");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn umoci_crosscheck_script_passes() {
    require!(Fuse, Tool("umoci"));
    let work = tempfile::tempdir().unwrap();
    // The script unmounts on exit; this guard covers it being killed.
    let _guard = Mount::guard(&work.path().join("mnt"));
    run_script(work.path(), &[]).expect_success("umoci-crosscheck.sh");
}

#[test]
fn umoci_layers_mount_as_umoci_unpacks_them() {
    require!(Fuse, Tool("umoci"));
    let work = tempfile::tempdir().unwrap();
    run_script(work.path(), &["--layers-only"]).expect_success("umoci-crosscheck.sh --layers-only");
    let layers: Vec<PathBuf> = std::fs::read_to_string(work.path().join("layers"))
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    assert!(layers.len() >= 3, "expected 3+ layers, got {layers:?}");
    let reference = snapshot(&work.path().join("expected/rootfs"));
    // umoci restores ownership, modes, contents, links and (whole-second)
    // mtimes; it does not promise xattrs.
    let fields = Fields {
        xattrs: false,
        mtime: Mtime::Seconds,
    };
    let mount = Mount::new(&layers);
    assert_tree(mount.path(), &Expected::from_snapshot(&reference, fields));
}

/// `umoci unpack` of an image of `layers` (plain tars, bottom first),
/// built under `work`; the layer files are in `stack`.
fn umoci_unpack(work: &Path, layers: &[Layer], stack: &mut Layers) -> Run {
    let layout = Layout::new(&work.join("image"));
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let tar = layer.to_tar();
        let (digest, size) = layout.blob(&tar);
        diff_ids.push(sha256(&tar));
        descriptors.push((TAR.to_string(), digest, size));
        stack.add_bytes(&tar);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (digest, size) = layout.image_manifest(&config, &descriptors);
    layout.index(serde_json::json!([manifest_descriptor(
        &digest,
        size,
        serde_json::json!({"annotations": {REF_NAME: "t"}}),
    )]));
    run_captured(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:t", layout.dir.display()))
            .arg(work.join("bundle")),
    )
}

/// Mounts `layers` and asserts the tree umoci unpacks from them, xattrs
/// included if `xattrs`.
fn assert_mounts_as_umoci_unpacks(layers: &[Layer], xattrs: bool) {
    let work = tempfile::tempdir().expect("work dir");
    let mut stack = Layers::new();
    umoci_unpack(work.path(), layers, &mut stack).expect_success("umoci unpack");
    let reference = snapshot(&work.path().join("bundle/rootfs"));
    let fields = Fields {
        xattrs,
        mtime: Mtime::Seconds,
    };
    let mount = stack.mount();
    assert_tree(mount.path(), &Expected::from_snapshot(&reference, fields));
}

/// Merged `/usr`: the lower layer's `bin -> usr/bin`.
fn merged_usr() -> Layer {
    Layer::default()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/old", "old")
        .file("usr/bin/x", "x")
        .symlink("bin", "usr/bin")
}

#[test]
fn an_opaque_marker_below_a_symlink_makes_its_target_opaque_as_umoci_does() {
    require!(Fuse, Tool("umoci"));
    let upper = Layer::default()
        .opaque("bin")
        .file("bin/new", "new")
        .whiteout("bin/x");
    assert_mounts_as_umoci_unpacks(&[merged_usr(), upper], false);
}

#[test]
fn user_overlay_xattrs_in_a_tar_are_ordinary_as_umoci_unpacks_them() {
    require!(Fuse, Tool("umoci"));
    let lower = Layer::default()
        .dir("d")
        .file("d/old", "old")
        .file("gone", "lower gone");
    let upper = Layer::default()
        .dir("d")
        .xattr("user.overlay.opaque", "y")
        .file("d/new", "new")
        // Not empty: umoci leaves out an xattr with an empty value.
        .file("gone", "")
        .xattr("user.overlay.whiteout", "y");
    assert_mounts_as_umoci_unpacks(&[lower, upper], true);
}

#[test]
fn a_member_under_a_lower_file_fails_umoci_and_is_left_out_here() {
    require!(Fuse, Tool("umoci"));
    let lower = Layer::default().file("f", "file f");
    let upper = Layer::default().file("f/under", "u").file("kept", "k");
    let work = tempfile::tempdir().expect("work dir");
    let mut stack = Layers::new();
    let run = umoci_unpack(work.path(), &[lower, upper], &mut stack);
    assert!(
        !run.status.success() && run.stderr.contains("not a directory"),
        "umoci unpack: {}\n{}",
        run.status,
        run.stderr
    );
    let mount = stack.mount();
    let expected = Expected::new().file("f", "file f").file("kept", "k");
    assert_tree(mount.path(), &expected);
}
