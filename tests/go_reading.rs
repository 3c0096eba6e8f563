//! Layers on which tar readers disagree, built byte by byte, read the way
//! Go's `archive/tar` reads them: the runtimes (containerd, Docker, podman,
//! umoci) unpack layers with it, so what a container gets is the tree
//! layerfs must show. umoci's unpack of each layer is the reference.
//! Fails (rather than skips) when umoci is missing: CI installs it.

mod common;

use std::path::{Path, PathBuf};

use common::oci::umoci_rootfs;
use common::raw;
use common::tree::{snapshot, Fields, Mtime};
use common::{assert_tree, Expected, Mount};

/// Mounts `layer` and compares it with umoci's unpack of an image made of
/// it alone.
fn assert_reads_as_umoci(name: &str, layer: &[u8]) {
    let work = tempfile::tempdir().expect("tempdir");
    let reference = snapshot(&umoci_rootfs(work.path(), &[layer]));
    let path: PathBuf = work.path().join(format!("{name}.tar"));
    std::fs::write(&path, layer).expect("write layer");
    let mount = Mount::new(&[path]);
    let fields = Fields {
        xattrs: false,
        mtime: Mtime::Seconds,
    };
    assert_tree(mount.path(), &Expected::from_snapshot(&reference, fields));
}

#[test]
fn header_only_types_hide_nothing_whatever_size_they_declare() {
    assert_reads_as_umoci("header-only", &raw::header_only_with_sizes());
}

#[test]
fn the_last_extension_header_applies_and_gnu_long_names_win() {
    assert_reads_as_umoci("extensions", &raw::extension_orders());
}

#[test]
fn global_headers_change_nothing_and_spend_what_came_before() {
    // umoci refuses a layer with a global header ("unknown typeflag"), so
    // the reference here is containerd's and Docker's reading: Go hands
    // the header out as an entry, which they skip.
    let work = tempfile::tempdir().expect("tempdir");
    let path = work.path().join("globals.tar");
    std::fs::write(&path, raw::global_headers()).expect("write layer");
    let expected = Expected::new()
        .file("after-global", "1")
        .owner(0, 0)
        .mtime(1_700_000_000)
        .file("own-name", "2")
        .owner(0, 0)
        .mtime(1_700_000_000);
    assert_tree(Mount::new(&[path]).path(), &expected);
}

#[test]
fn names_ending_in_a_slash_and_misplaced_gnu_prefixes() {
    assert_reads_as_umoci("names", &raw::slashes_and_gnu_prefixes());
}

#[test]
fn device_numbers_come_from_the_header_and_size_fields_read_as_go_reads_them() {
    assert_reads_as_umoci("numbers", &raw::devices_and_padded_numbers());
}

/// The reference tool must be there: a missing umoci fails loudly.
#[test]
fn umoci_is_installed() {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| Path::new(&p).join("umoci").exists()))
        .unwrap_or(false);
    assert!(found, "umoci is not on PATH (CI installs it)");
}
