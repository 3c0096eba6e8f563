//! Cross-check against umoci: `scripts/umoci-crosscheck.sh` builds a
//! four-layer OCI image by editing and repacking a rootfs; umoci's own
//! unpack of the result is the reference for mounting the same layer blobs.
//! Fails (rather than skips) when umoci is missing: CI installs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{bin, Run};
use common::tree::{snapshot, Fields, Mtime};
use common::{assert_tree, Expected, Mount};

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
    let work = tempfile::tempdir().unwrap();
    // The script unmounts on exit; this guard covers it being killed.
    let _guard = Mount::guard(&work.path().join("mnt"));
    run_script(work.path(), &[]).expect_success("umoci-crosscheck.sh");
}

#[test]
fn umoci_layers_mount_as_umoci_unpacks_them() {
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
