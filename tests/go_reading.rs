//! Layers on which tar readers disagree, built byte by byte, read the way
//! Go's `archive/tar` reads them: the runtimes (containerd, Docker, podman,
//! umoci) unpack layers with it, so what a container gets is the tree
//! layerfs must show. umoci's unpack of each layer is the reference.
//! Skipped, with a line saying so, without umoci (CI installs it, and
//! fails rather than skips).

mod common;

use std::path::PathBuf;

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
    require!(Fuse, Tool("umoci"));
    assert_reads_as_umoci("header-only", &raw::header_only_with_sizes());
}

#[test]
fn the_last_extension_header_applies_and_gnu_long_names_win() {
    require!(Fuse, Tool("umoci"));
    assert_reads_as_umoci("extensions", &raw::extension_orders());
}

#[test]
fn global_headers_change_nothing_and_spend_what_came_before() {
    require!(Fuse);
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
    require!(Fuse, Tool("umoci"));
    assert_reads_as_umoci("names", &raw::slashes_and_gnu_prefixes());
}

#[test]
fn device_numbers_come_from_the_header_and_size_fields_read_as_go_reads_them() {
    require!(Fuse, Tool("umoci"));
    assert_reads_as_umoci("numbers", &raw::devices_and_padded_numbers());
}
