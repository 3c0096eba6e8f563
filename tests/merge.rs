//! Layer merge rules: OCI image-spec changesets (whiteouts, opaque markers)
//! and the overlayfs native form (0/0 char devices, opaque xattr), applied
//! bottom to top. Each test states the complete merged tree it expects.

mod common;

use std::ffi::OsString;
use std::path::PathBuf;

use common::mount::{layerfs, mount_args};
use common::{assert_merge, assert_tree, Expected, Layer, Layers, Mount};

#[test]
fn whiteout_removes_lower_path_and_its_subtree() {
    require!(Fuse);
    let lower = Layer::default()
        .dir("a")
        .file("a/keep", "k")
        .dir("a/sub")
        .file("a/sub/deep", "d")
        .dir("a/sub/more")
        .file("a/sub/more/x", "x")
        .file("top", "t");
    let upper = Layer::default()
        .whiteout("a/sub")
        .whiteout("top")
        .whiteout("a/never-existed");
    let expected = Expected::new().dir("a").file("a/keep", "k");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn path_whited_out_then_added_again_has_only_new_content() {
    require!(Fuse);
    let l1 = Layer::default().dir("a").file("a/x", "x").file("a/y", "y");
    let l2 = Layer::default().whiteout("a");
    let l3 = Layer::default().dir("a").mode(0o700).file("a/z", "z");
    let expected = Expected::new().dir("a").mode(0o700).file("a/z", "z");
    assert_merge(&[l1, l2, l3], &expected);
}

#[test]
fn opaque_marker_hides_lower_children_whatever_its_position() {
    require!(Fuse);
    let lower = Layer::default()
        .dir("d")
        .file("d/old", "old")
        .dir("d/sub")
        .file("d/sub/lower-only", "l")
        .dir("f")
        .file("f/old", "old")
        .dir("e")
        .file("e/keep", "k");
    // Marker after the layer's own children of d, before them for f.
    let upper = Layer::default()
        .dir("d")
        .mode(0o750)
        .file("d/new", "n")
        .dir("d/sub")
        .opaque("d")
        .opaque("f")
        .file("f/new", "n");
    let expected = Expected::new()
        .dir("d")
        .mode(0o750)
        .file("d/new", "n")
        .dir("d/sub")
        .dir("f")
        .file("f/new", "n")
        .dir("e")
        .file("e/keep", "k");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn opaque_marker_at_root_hides_every_lower_entry() {
    require!(Fuse);
    let lower = Layer::default()
        .dir("etc")
        .file("etc/passwd", "root")
        .file("old", "o");
    let upper = Layer::default().file("new", "n").opaque("");
    assert_merge(&[lower, upper], &Expected::new().file("new", "n"));
}

#[test]
fn overlay_char_device_tombstone_removes_path() {
    require!(Fuse);
    let lower = Layer::default()
        .dir("a")
        .file("a/x", "x")
        .dir("a/d")
        .file("a/d/y", "y")
        .file("b", "b");
    let upper = Layer::default()
        .tombstone("a/x")
        .tombstone("a/d")
        .tombstone("no-such-path");
    let expected = Expected::new().dir("a").file("b", "b");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn overlay_opaque_xattr_dir_hides_lower_children_and_the_xattr() {
    require!(Fuse);
    let lower = Layer::default().dir("o").file("o/old", "old");
    let upper = Layer::default()
        .overlay_opaque_dir("o")
        .mode(0o700)
        .xattr("user.keep", "1")
        .file("o/new", "n");
    let expected = Expected::new()
        .dir("o")
        .mode(0o700)
        .xattr("user.keep", "1")
        .file("o/new", "n");
    let mut stack = Layers::new();
    stack.add(&lower).add(&upper);
    let mount = stack.mount();
    assert_tree(mount.path(), &expected);
    // Hidden from getxattr too, not only from listxattr.
    let direct = xattr::get(mount.join("o"), "trusted.overlay.opaque").expect("getxattr");
    assert_eq!(direct, None, "trusted.overlay.opaque is readable");
}

#[test]
fn whiteout_never_removes_what_its_own_layer_adds() {
    require!(Fuse);
    let lower = Layer::default().file("a/x", "old x").file("b/y", "old y");
    let upper = Layer::default()
        .file("a/x", "new x")
        .whiteout("a/x")
        .whiteout("b/y")
        .file("b/y", "new y");
    let expected = Expected::new()
        .implied_dir("a")
        .file("a/x", "new x")
        .implied_dir("b")
        .file("b/y", "new y");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn markers_and_aufs_leftovers_never_appear() {
    require!(Fuse);
    let lower = Layer::default().file("keep", "k").dir("d").file("d/x", "x");
    let upper = Layer::default()
        .dir(".wh..wh.plnk")
        .file(".wh..wh.plnk/1234.5678", "aufs hardlink store")
        .file(".wh..wh.aufs", "")
        .dir(".wh..wh.orph")
        .opaque("d")
        .whiteout("nothing-here")
        .tombstone("also-nothing");
    let expected = Expected::new().file("keep", "k").dir("d");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn file_replaced_by_directory_in_higher_layer() {
    require!(Fuse);
    let lower = Layer::default().file("p", "file p");
    let upper = Layer::default().dir("p").mode(0o711).file("p/child", "c");
    let expected = Expected::new().dir("p").mode(0o711).file("p/child", "c");
    assert_merge(&[lower, upper], &expected);
}

/// The merge warnings `layerfs ARGS... LAYERS...` prints, one per line.
fn merge_warnings(args: &[&str], layers: &[PathBuf]) -> Vec<String> {
    let mut argv: Vec<OsString> = args.iter().map(OsString::from).collect();
    argv.extend(layers.iter().map(OsString::from));
    let run = layerfs(argv);
    run.expect_success(&args.join(" "));
    run.stderr
        .lines()
        .filter(|l| l.contains("skipped"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_member_under_a_file_is_left_out_with_a_warning_and_the_file_kept() {
    require!(Fuse);
    // Under its own layer's file, GNU tar refuses `f/under` ("Not a
    // directory"); under a lower layer's file, umoci and containerd fail
    // the whole unpack (`tests/umoci.rs`). The file is never turned into a
    // directory; `lower/d/` as a directory member of its own replaces it.
    let lower = Layer::default()
        .file("lower", "lower file")
        .file("other", "o");
    let upper = Layer::default()
        .file("f", "file f")
        .file("f/under", "u")
        .file("lower/under", "u")
        .dir("other")
        .file("other/x", "x");
    let expected = Expected::new()
        .file("f", "file f")
        .file("lower", "lower file")
        .dir("other")
        .file("other/x", "x");
    assert_merge(&[lower.clone(), upper.clone()], &expected);
    let mut stack = Layers::new();
    stack.add(&lower).add(&upper);
    let layer = format!("{} (layer 2)", stack.paths[1].display());
    let want: Vec<String> = ["f/under", "lower/under"]
        .iter()
        .map(|p| format!("[WARN ] {layer}: {p}: skipped: a parent is not a directory"))
        .collect();
    // Mount, ls and export share the tree, and say so alike.
    let mount = Mount::fresh();
    let args = mount_args(&[], &stack.paths, mount.path());
    let run = layerfs(args);
    run.expect_success("mount");
    assert_eq!(run.stderr.lines().collect::<Vec<_>>(), want, "mount");
    drop(mount);
    assert_eq!(merge_warnings(&["ls", "--no-cache"], &stack.paths), want);
    let out = stack.dir().join("out.tar");
    let out = out.to_str().expect("utf-8 temp path");
    assert_eq!(
        merge_warnings(&["export", "--no-cache", "-o", out], &stack.paths),
        want
    );
}

#[test]
fn whiteout_and_new_children_in_one_layer_replace_the_directory() {
    require!(Fuse);
    let lower = Layer::default().dir("a").mode(0o700).file("a/old", "old");
    let upper = Layer::default().file("a/new", "new").whiteout("a");
    let expected = Expected::new().implied_dir("a").file("a/new", "new");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn directory_replaced_by_file_or_symlink_drops_lower_subtree() {
    require!(Fuse);
    let lower = Layer::default()
        .dir("p")
        .file("p/a", "a")
        .dir("p/sub")
        .file("p/sub/b", "b")
        .dir("s")
        .file("s/x", "x");
    let upper = Layer::default().file("p", "now a file").symlink("s", "p");
    let expected = Expected::new().file("p", "now a file").symlink("s", "p");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn higher_layer_replaces_entry_of_any_kind() {
    require!(Fuse);
    let lower = Layer::default()
        .file("f", "file")
        .symlink("s", "target")
        .char_dev("dev", 1, 3)
        .fifo("p")
        .file("same", "v1");
    let upper = Layer::default()
        .symlink("f", "elsewhere")
        .file("s", "was a symlink")
        .fifo("dev")
        .dir("p")
        .file("same", "v2")
        .mode(0o600);
    let expected = Expected::new()
        .symlink("f", "elsewhere")
        .file("s", "was a symlink")
        .fifo("dev")
        .dir("p")
        .file("same", "v2")
        .mode(0o600);
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn directory_in_two_layers_merges_children_and_takes_upper_metadata() {
    require!(Fuse);
    let lower = Layer::default().dir("d").file("d/a", "a");
    let upper = Layer::default()
        .dir("d")
        .mode(0o700)
        .owner(5, 6)
        .mtime(1_700_000_000)
        .file("d/b", "b");
    let expected = Expected::new()
        .dir("d")
        .mode(0o700)
        .owner(5, 6)
        .mtime(1_700_000_000)
        .file("d/a", "a")
        .file("d/b", "b");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn hardlinks_within_a_layer_share_inode_and_link_count() {
    require!(Fuse);
    let layer = Layer::default()
        .file("a", "data")
        .mode(0o640)
        .owner(3, 4)
        .hardlink("b", "a")
        .dir("d")
        .hardlink("d/c", "a")
        .hardlink("e", "b")
        .file("solo", "data");
    let expected = Expected::new()
        .file("a", "data")
        .mode(0o640)
        .owner(3, 4)
        .hardlink("b", "a")
        .dir("d")
        .hardlink("d/c", "a")
        .hardlink("e", "b")
        .file("solo", "data");
    assert_merge(&[layer], &expected);
}

#[test]
fn hardlink_to_lower_layer_member_shares_its_inode() {
    require!(Fuse);
    let lower = Layer::default().file("t", "lower data").owner(7, 7);
    let upper = Layer::default().hardlink("l", "t");
    let expected = Expected::new()
        .file("t", "lower data")
        .owner(7, 7)
        .hardlink("l", "t");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn hardlink_keeps_original_data_after_target_removed_or_replaced() {
    require!(Fuse);
    let l1 = Layer::default()
        .file("a", "A")
        .file("b", "B")
        .file("c", "C")
        .hardlink("c2", "c");
    // d is replaced in the same layer right after being linked.
    let l2 = Layer::default()
        .hardlink("la", "a")
        .hardlink("lb", "b")
        .file("d", "D")
        .hardlink("ld", "d")
        .file("d", "D2");
    let l3 = Layer::default().whiteout("a").file("b", "B2").whiteout("c");
    let expected = Expected::new()
        .file("la", "A")
        .file("lb", "B")
        .file("b", "B2")
        .file("c2", "C")
        .file("ld", "D")
        .file("d", "D2");
    assert_merge(&[l1, l2, l3], &expected);
}

#[test]
fn hardlink_chain_across_layers_survives_its_origin() {
    require!(Fuse);
    let l1 = Layer::default().file("a", "data").mode(0o600);
    let l2 = Layer::default().hardlink("b", "a");
    let l3 = Layer::default().whiteout("a");
    let l4 = Layer::default().hardlink("c", "b");
    let expected = Expected::new()
        .file("b", "data")
        .mode(0o600)
        .hardlink("c", "b");
    assert_merge(&[l1, l2, l3, l4], &expected);
}

#[test]
fn link_counts_follow_whiteouts_and_replacements() {
    require!(Fuse);
    let l1 = Layer::default()
        .file("a", "1")
        .hardlink("b", "a")
        .hardlink("c", "a");
    let l2 = Layer::default().whiteout("b");
    let l3 = Layer::default().file("a", "new");
    let expected = Expected::new().file("a", "new").file("c", "1");
    assert_merge(
        &[l1.clone(), l2.clone()],
        &Expected::new().file("a", "1").hardlink("c", "a"),
    );
    assert_merge(&[l1, l2, l3], &expected);
}

#[test]
fn hardlink_group_rebuilt_in_higher_layer() {
    require!(Fuse);
    let lower = Layer::default().file("f", "old").hardlink("g", "f");
    let upper = Layer::default().file("f", "new").hardlink("g", "f");
    let expected = Expected::new().file("f", "new").hardlink("g", "f");
    // Applying the same layer twice must rebuild the group, not add to it.
    assert_merge(
        &[lower.clone(), lower.clone()],
        &Expected::new().file("f", "old").hardlink("g", "f"),
    );
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn hardlinks_to_symlinks_devices_and_fifos() {
    require!(Fuse);
    let layer = Layer::default()
        .symlink("s", "target")
        .hardlink("s2", "s")
        .char_dev("c", 4, 64)
        .hardlink("c2", "c")
        .fifo("p")
        .hardlink("p2", "p");
    let expected = Expected::new()
        .symlink("s", "target")
        .hardlink("s2", "s")
        .char_dev("c", 4, 64)
        .hardlink("c2", "c")
        .fifo("p")
        .hardlink("p2", "p");
    assert_merge(&[layer], &expected);
}

#[test]
fn member_below_lower_symlink_lands_in_link_target() {
    require!(Fuse);
    let lower = Layer::default()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/ls", "ls")
        .dir("usr/lib")
        .symlink("bin", "usr/bin")
        .symlink("lib", "/usr/lib");
    let upper = Layer::default()
        .file("bin/tool", "tool")
        .file("lib/libx.so", "x");
    let expected = Expected::new()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/ls", "ls")
        .file("usr/bin/tool", "tool")
        .dir("usr/lib")
        .file("usr/lib/libx.so", "x")
        .symlink("bin", "usr/bin")
        .symlink("lib", "/usr/lib");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn hardlink_target_below_lower_symlink_resolves_through_it() {
    require!(Fuse);
    let lower = Layer::default()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/tool", "tool")
        .symlink("bin", "usr/bin");
    let upper = Layer::default().hardlink("tool-link", "bin/tool");
    let expected = Expected::new()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/tool", "tool")
        .hardlink("tool-link", "usr/bin/tool")
        .symlink("bin", "usr/bin");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn whiteout_below_lower_symlink_removes_entry_in_link_target() {
    require!(Fuse);
    let lower = Layer::default()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/x", "x")
        .file("usr/bin/keep", "k")
        .symlink("bin", "usr/bin");
    let upper = Layer::default().whiteout("bin/x");
    let expected = Expected::new()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/keep", "k")
        .symlink("bin", "usr/bin");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn symlink_pointing_outside_cannot_place_anything_outside_the_tree() {
    require!(Fuse);
    let lower = Layer::default()
        .symlink("evil", "../../..")
        .symlink("abs", "/")
        .dir("d")
        .symlink("d/up", "../../../etc");
    let upper = Layer::default()
        .file("evil/x", "X")
        .file("abs/y", "Y")
        .file("d/up/z", "Z");
    let mut stack = Layers::new();
    stack.add(&lower).add(&upper);
    let mount = stack.mount();
    let expected = Expected::new()
        .symlink("evil", "../../..")
        .symlink("abs", "/")
        .dir("d")
        .symlink("d/up", "../../../etc")
        .file("x", "X")
        .file("y", "Y")
        .implied_dir("etc")
        .file("etc/z", "Z");
    assert_tree(mount.path(), &expected);
    let beside: Vec<_> = std::fs::read_dir(mount.path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["mnt"], "entries appeared beside the mountpoint");
}
