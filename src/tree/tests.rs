//! The merge rules, one test each, on hand-built layer indexes.

use super::*;
use crate::tar::{LayerIndex, Member, MemberKind};

fn member(path: &str, kind: MemberKind) -> Member {
    Member {
        mode: if kind == MemberKind::Directory {
            0o755
        } else {
            0o644
        },
        mtime: 1_700_000_000,
        ..Member::bare(path.as_bytes(), kind)
    }
}

fn file(path: &str, offset: u64) -> Member {
    let mut m = member(path, MemberKind::Regular);
    m.data.offset = offset;
    m.data.size = 10;
    m
}

fn dir(path: &str) -> Member {
    member(path, MemberKind::Directory)
}

fn link(path: &str, kind: MemberKind, target: &str) -> Member {
    let mut m = member(path, kind);
    m.link_target = target.as_bytes().to_vec();
    m
}

fn layer(members: Vec<Member>) -> LayerIndex {
    LayerIndex { members }
}

/// [`Tree::build_recording`], checked against the same merge with the
/// bottom layer streamed in batches of one and of two members
/// ([`BottomLayer`]): every rule tested here holds for both.
fn merged<const N: usize>(layers: [LayerIndex; N]) -> (Tree, Vec<MergeWarning>, Vec<Removal>) {
    let copy = |layers: &[LayerIndex; N]| -> [LayerIndex; N] {
        std::array::from_fn(|i| LayerIndex {
            members: layers[i].members.clone(),
        })
    };
    for batch in [1, 2] {
        let mut upper = Vec::from(copy(&layers)).into_iter();
        let Some(bottom) = upper.next() else {
            continue;
        };
        let mut streamed = BottomLayer::new(true, LayerKind::Tar);
        for chunk in bottom.members.chunks(batch) {
            streamed.push(chunk.to_vec());
        }
        let mut streamed = streamed.done();
        for index in upper {
            streamed.apply(index, LayerKind::Tar);
        }
        let (s_tree, s_warnings, s_removals) = streamed.finish();
        let (tree, warnings, removals) = Tree::build_recording(copy(&layers));
        assert_eq!(observe(&s_tree), observe(&tree), "batches of {batch}");
        assert_eq!(s_warnings, warnings, "batches of {batch}");
        assert_eq!(s_removals, removals, "batches of {batch}");
    }
    let (tree, warnings) = Tree::build(copy(&layers));
    let (_, _, removals) = Tree::build_recording(layers);
    (tree, warnings, removals)
}

/// [`merged`] without the removals.
fn build_checked<const N: usize>(layers: [LayerIndex; N]) -> (Tree, Vec<MergeWarning>) {
    let (tree, warnings, _) = merged(layers);
    (tree, warnings)
}

fn build<const N: usize>(layers: [LayerIndex; N]) -> Tree {
    let (tree, warnings) = build_checked(layers);
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
    tree
}

/// Every path in the tree, depth first, `/`-joined.
fn paths(tree: &Tree) -> Vec<String> {
    fn walk(tree: &Tree, dir: Ino, prefix: &str, out: &mut Vec<String>) {
        for entry in tree.entries(dir) {
            let path = format!("{prefix}{}", String::from_utf8_lossy(tree.name(entry)));
            out.push(path.clone());
            walk(tree, entry.ino, &format!("{path}/"), out);
        }
    }
    let mut out = Vec::new();
    walk(tree, ROOT_INO, "", &mut out);
    out
}

fn node<'t>(tree: &'t Tree, path: &str) -> &'t Node {
    let ino = tree
        .lookup_path(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing"));
    tree.node(ino)
        .unwrap_or_else(|| panic!("{path} has no node"))
}

#[test]
fn paths_are_normalised_and_implied_dirs_appear() {
    let tree = build([layer(vec![
        file("./a/b/c.txt", 0),
        dir("./x/"),
        file("/y", 1),
    ])]);
    assert_eq!(paths(&tree), ["a", "a/b", "a/b/c.txt", "x", "y"]);
    let implied = node(&tree, "a/b");
    assert_eq!(
        (implied.kind(), implied.mode, implied.uid, implied.gid),
        (NodeKind::Directory, 0o755, 0, 0)
    );
}

#[test]
fn last_duplicate_in_a_layer_wins() {
    let tree = build([layer(vec![file("f", 100), file("f", 200)])]);
    assert_eq!(
        tree.file_data(tree.lookup_path(b"f").unwrap_or(0))
            .map(|d| d.offset),
        Some(200)
    );
}

#[test]
fn whiteout_removes_lower_subtree() {
    let tree = build([
        layer(vec![
            dir("a"),
            file("a/keep", 0),
            dir("a/gone"),
            file("a/gone/deep", 1),
        ]),
        layer(vec![file("a/.wh.gone", 0)]),
    ]);
    assert_eq!(paths(&tree), ["a", "a/keep"]);
}

#[test]
fn whiteout_does_not_remove_its_own_layers_entry_in_either_order() {
    let tree = build([
        layer(vec![file("a/x", 0), file("a/y", 1)]),
        layer(vec![
            file("a/x", 2),
            file("a/.wh.x", 0),
            file("a/.wh.y", 0),
            file("a/y", 3),
        ]),
    ]);
    assert_eq!(paths(&tree), ["a", "a/x", "a/y"]);
    assert_eq!(node(&tree, "a/x").layer(), 1);
    assert_eq!(node(&tree, "a/y").layer(), 1);
}

#[test]
fn opaque_marker_hides_lower_children_wherever_it_stands() {
    let tree = build([
        layer(vec![
            dir("d"),
            file("d/old", 0),
            dir("d/sub"),
            file("d/sub/x", 1),
            file("other", 2),
        ]),
        layer(vec![dir("d"), file("d/new", 3), file("d/.wh..wh..opq", 0)]),
    ]);
    assert_eq!(paths(&tree), ["d", "d/new", "other"]);
}

#[test]
fn tombstone_and_overlay_opaque_xattr() {
    let mut opaque = dir("d");
    opaque
        .xattrs
        .push((b"trusted.overlay.opaque".to_vec(), b"y".to_vec()));
    opaque.xattrs.push((b"user.kept".to_vec(), b"1".to_vec()));
    let tree = build([
        layer(vec![file("gone", 0), file("d/old", 1), file("kept", 2)]),
        layer(vec![
            member("gone", MemberKind::CharDevice),
            opaque,
            file("d/new", 3),
        ]),
    ]);
    assert_eq!(paths(&tree), ["d", "d/new", "kept"]);
    let d = tree.lookup_path(b"d").unwrap_or(0);
    let xattrs: Vec<_> = tree.xattrs(d).collect();
    assert_eq!(xattrs, [(&b"user.kept"[..], &b"1"[..])]);
}

#[test]
fn markers_and_aufs_leftovers_never_appear() {
    let tree = build([layer(vec![
        file(".wh..wh.aufs", 0),
        dir(".wh..wh.plnk"),
        file(".wh..wh.plnk/1.2", 0),
        file("a/.wh.nothing", 0),
        file("a/.wh..wh..opq", 0),
        file("a/real", 1),
    ])]);
    assert_eq!(paths(&tree), ["a", "a/real"]);
}

#[test]
fn file_and_directory_replace_each_other() {
    let tree = build([
        layer(vec![file("f", 0), dir("d"), file("d/x", 1)]),
        layer(vec![dir("f"), file("f/inside", 2), file("d", 3)]),
    ]);
    assert_eq!(paths(&tree), ["d", "f", "f/inside"]);
    assert_eq!(node(&tree, "d").kind(), NodeKind::File);
}

#[test]
fn directory_over_directory_keeps_children_and_takes_new_attributes() {
    let mut upper = dir("d");
    upper.mode = 0o700;
    upper.uid = 42;
    let tree = build([layer(vec![dir("d"), file("d/x", 0)]), layer(vec![upper])]);
    assert_eq!(paths(&tree), ["d", "d/x"]);
    let d = node(&tree, "d");
    assert_eq!((d.mode, d.uid, d.layer()), (0o700, 42, 1));
}

#[test]
fn hardlinks_share_a_node_within_a_layer_and_across_layers() {
    let tree = build([
        layer(vec![file("a", 7), link("b", MemberKind::Hardlink, "./a")]),
        layer(vec![link("c", MemberKind::Hardlink, "a")]),
    ]);
    let a = tree.lookup_path(b"a");
    assert!(a.is_some());
    assert_eq!(a, tree.lookup_path(b"b"));
    assert_eq!(a, tree.lookup_path(b"c"));
    assert_eq!(node(&tree, "a").nlink, 3);
}

#[test]
fn hardlink_keeps_its_data_when_the_target_is_removed_or_replaced() {
    let tree = build([
        layer(vec![
            file("a", 7),
            link("b", MemberKind::Hardlink, "a"),
            file("r", 8),
            link("s", MemberKind::Hardlink, "r"),
        ]),
        layer(vec![file(".wh.a", 0), file("r", 9)]),
    ]);
    assert_eq!(paths(&tree), ["b", "r", "s"]);
    let data = |path: &str| {
        tree.file_data(tree.lookup_path(path.as_bytes()).unwrap_or(0))
            .map(|d| d.offset)
    };
    assert_eq!(
        (data("b"), data("s"), data("r")),
        (Some(7), Some(8), Some(9))
    );
    assert_eq!(
        (
            node(&tree, "b").nlink,
            node(&tree, "s").nlink,
            node(&tree, "r").nlink
        ),
        (1, 1, 1)
    );
}

#[test]
fn hardlink_to_a_file_its_own_layer_whites_out_keeps_the_data() {
    // In archive order the link comes first, so an unpacker links the lower
    // file and then removes the old name.
    let tree = build([
        layer(vec![file("a", 7)]),
        layer(vec![link("c", MemberKind::Hardlink, "a"), file(".wh.a", 0)]),
    ]);
    assert_eq!(paths(&tree), ["c"]);
    assert_eq!(
        tree.file_data(tree.lookup_path(b"c").unwrap_or(0))
            .map(|d| d.offset),
        Some(7)
    );
}

#[test]
fn hardlink_to_nothing_is_reported_and_left_out() {
    let (tree, warnings) = build_checked([layer(vec![link("b", MemberKind::Hardlink, "missing")])]);
    assert!(paths(&tree).is_empty());
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].problem, "hardlink target does not exist");
}

#[test]
fn members_under_a_lower_symlink_land_at_its_target() {
    let tree = build([
        layer(vec![
            dir("usr"),
            dir("usr/bin"),
            link("bin", MemberKind::Symlink, "usr/bin"),
        ]),
        layer(vec![file("bin/tool", 0)]),
    ]);
    assert_eq!(paths(&tree), ["bin", "usr", "usr/bin", "usr/bin/tool"]);
    assert_eq!(
        tree.symlink_target(tree.lookup_path(b"bin").unwrap_or(0)),
        Some(&b"usr/bin"[..])
    );
}

#[test]
fn symlinks_cannot_lead_outside_the_tree() {
    let tree = build([
        layer(vec![
            dir("a"),
            link("a/evil", MemberKind::Symlink, "../../.."),
            link("abs", MemberKind::Symlink, "/etc"),
        ]),
        layer(vec![file("a/evil/x", 0), file("abs/passwd", 1)]),
    ]);
    assert_eq!(
        paths(&tree),
        ["a", "a/evil", "abs", "etc", "etc/passwd", "x"]
    );
}

#[test]
fn symlink_loops_are_reported() {
    let (tree, warnings) = build_checked([
        layer(vec![
            link("l1", MemberKind::Symlink, "l2"),
            link("l2", MemberKind::Symlink, "l1"),
        ]),
        layer(vec![file("l1/x", 0)]),
    ]);
    assert_eq!(paths(&tree), ["l1", "l2"]);
    assert_eq!(warnings.len(), 1);
}

/// The problems of the warnings, in order.
fn problems(warnings: &[MergeWarning]) -> Vec<&'static str> {
    warnings.iter().map(|w| w.problem).collect()
}

#[test]
fn names_longer_than_name_max_are_left_out() {
    let n255 = "a".repeat(255);
    let n256 = "b".repeat(256);
    let (tree, warnings) = build_checked([
        layer(vec![
            file(&format!("d/{n255}"), 0),
            file(&format!("d/{n256}"), 1),
            file(&format!("{n256}/inside"), 2),
            link("s", MemberKind::Symlink, &n256),
        ]),
        layer(vec![file("s/through", 3)]),
    ]);
    assert_eq!(
        paths(&tree),
        ["d".to_string(), format!("d/{n255}"), "s".into()]
    );
    assert_eq!(
        problems(&warnings),
        [
            "the name is longer than 255 bytes",
            "a parent's name is longer than 255 bytes",
            "a parent's name is longer than 255 bytes",
        ]
    );
}

/// A symlink whose target repeats its own name would grow the path by the
/// whole target at each of 40 steps, for every member below it.
#[test]
fn self_repeating_and_overlong_symlink_targets_are_bounded() {
    let repeating = "a/".repeat(2000);
    let overlong = format!("{}x", "./".repeat(2048));
    let (tree, warnings) = build_checked([
        layer(vec![
            link("a", MemberKind::Symlink, &repeating),
            link("long", MemberKind::Symlink, &overlong),
            dir("x"),
        ]),
        layer(vec![file("a/f", 0), file("long/f", 1)]),
    ]);
    assert_eq!(paths(&tree), ["a", "long", "x"]);
    assert_eq!(
        tree.symlink_target(tree.lookup_path(b"long").unwrap_or(0)),
        Some(overlong.as_bytes())
    );
    assert_eq!(
        problems(&warnings),
        [
            "the parent path has more than 4096 components after following symbolic links",
            "a symbolic link in the parent path has a target longer than 4095 bytes",
        ]
    );
    // A target of 4095 bytes is followed.
    let longest = format!("{}x", "./".repeat(2047));
    let tree = build([
        layer(vec![link("ok", MemberKind::Symlink, &longest), dir("x")]),
        layer(vec![file("ok/f", 0)]),
    ]);
    assert_eq!(paths(&tree), ["ok", "x", "x/f"]);
}

#[test]
fn directory_link_counts_and_parents() {
    let tree = build([layer(vec![
        dir("a"),
        dir("a/b"),
        dir("a/c"),
        file("a/f", 0),
    ])]);
    assert_eq!(node(&tree, "a").nlink, 4);
    assert_eq!(tree.node(ROOT_INO).map(|n| n.nlink), Some(3));
    let a = tree.lookup_path(b"a").unwrap_or(0);
    assert_eq!(node(&tree, "a/b").parent(), a);
    assert_eq!(node(&tree, "a").parent(), ROOT_INO);
}

#[test]
fn root_member_sets_root_attributes() {
    let mut root = dir("./");
    root.mode = 0o700;
    let tree = build([layer(vec![root])]);
    assert_eq!(tree.node(ROOT_INO).map(|n| n.mode), Some(0o700));
}

#[test]
fn a_member_under_a_file_is_left_out_and_the_file_kept() {
    // In its own layer, as GNU tar refuses it ("Not a directory"), and
    // under a lower layer's file (or device, or a symlink to a file), as
    // umoci and containerd fail on it: the file is never turned into a
    // directory.
    let (tree, warnings) = build_checked([
        layer(vec![
            file("lower", 0),
            member("dev", MemberKind::Fifo),
            link("to-file", MemberKind::Symlink, "lower"),
        ]),
        layer(vec![
            file("f", 1),
            file("f/under", 2),
            file("lower/under", 3),
            file("dev/under", 4),
            file("to-file/under", 5),
            dir("lower/d/"),
        ]),
    ]);
    assert_eq!(paths(&tree), ["dev", "f", "lower", "to-file"]);
    assert_eq!(node(&tree, "f").kind(), NodeKind::File);
    assert_eq!(node(&tree, "lower").layer(), 0);
    let skipped: Vec<(u32, &[u8], &str)> = warnings
        .iter()
        .map(|w| (w.layer, &w.path[..], w.problem))
        .collect();
    let problem = "a parent is not a directory";
    assert_eq!(
        skipped,
        [
            (1, &b"f/under"[..], problem),
            (1, b"lower/under", problem),
            (1, b"dev/under", problem),
            (1, b"to-file/under", problem),
            (1, b"lower/d/", problem),
        ]
    );
    // A directory member in its own right still replaces the file.
    let tree = build([
        layer(vec![file("p", 0)]),
        layer(vec![dir("p"), file("p/x", 1)]),
    ]);
    assert_eq!(paths(&tree), ["p", "p/x"]);
}

#[test]
fn an_opaque_marker_below_a_lower_symlink_makes_its_target_opaque() {
    // Merged /usr: the marker's parent is found as a whiteout's is, so
    // `bin/.wh..wh..opq` makes `usr/bin` opaque, as umoci unpacks it.
    let (tree, _, removals) = merged([
        layer(vec![
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/old", 0),
            link("bin", MemberKind::Symlink, "usr/bin"),
        ]),
        layer(vec![file("bin/.wh..wh..opq", 0), file("bin/new", 1)]),
    ]);
    assert_eq!(paths(&tree), ["bin", "usr", "usr/bin", "usr/bin/new"]);
    assert_eq!(
        removals,
        [removal(
            1,
            "bin/.wh..wh..opq",
            RemovalKind::Opaque,
            vec![hidden("bin/old", NodeKind::File, 0, 1)]
        )]
    );
    // A directory opaque by its xattr is the member itself: it replaces a
    // symlink at its path and hides nothing through it.
    let mut opaque = dir("bin");
    opaque
        .xattrs
        .push((b"trusted.overlay.opaque".to_vec(), b"y".to_vec()));
    let tree = build([
        layer(vec![
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/old", 0),
            link("bin", MemberKind::Symlink, "usr/bin"),
        ]),
        layer(vec![opaque]),
    ]);
    assert_eq!(paths(&tree), ["bin", "usr", "usr/bin", "usr/bin/old"]);
    assert_eq!(node(&tree, "bin").kind(), NodeKind::Directory);
}

/// Merges layers each read from its own kind of layer, bottom first.
fn build_kinds(layers: Vec<(LayerIndex, LayerKind)>) -> Tree {
    let mut layers = layers.into_iter();
    let (bottom, kind) = layers.next().expect("a bottom layer");
    let mut merge = BottomLayer::new(false, kind);
    merge.push(bottom.members);
    let mut merge = merge.done();
    for (index, kind) in layers {
        merge.apply(index, kind);
    }
    let (tree, warnings, _) = merge.finish();
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
    tree
}

#[test]
fn user_overlay_xattrs_are_overlayfs_own_only_in_a_directory_layer() {
    let with = |mut m: Member, name: &str, value: &str| {
        m.xattrs
            .push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        m
    };
    let lower = || layer(vec![dir("d"), file("d/old", 0), file("gone", 1)]);
    let upper = || {
        layer(vec![
            with(dir("d"), "user.overlay.opaque", "y"),
            with(
                member("gone", MemberKind::Regular),
                "user.overlay.whiteout",
                "",
            ),
        ])
    };
    // An upper directory of a `userxattr` overlay: opaque and tombstone.
    let tree = build_kinds(vec![
        (lower(), LayerKind::Tar),
        (upper(), LayerKind::Directory),
    ]);
    assert_eq!(paths(&tree), ["d"]);
    assert_eq!(tree.xattrs(node_ino(&tree, "d")).count(), 0);
    // A tar, as umoci and containerd (as root) unpack it: an ordinary
    // xattr on an ordinary directory and an empty file.
    let tree = build_kinds(vec![(lower(), LayerKind::Tar), (upper(), LayerKind::Tar)]);
    assert_eq!(paths(&tree), ["d", "d/old", "gone"]);
    let xattrs: Vec<_> = tree.xattrs(node_ino(&tree, "d")).collect();
    assert_eq!(xattrs, [(&b"user.overlay.opaque"[..], &b"y"[..])]);
    assert_eq!(node(&tree, "gone").layer(), 1);
    // The bottom layer's kind counts too.
    let tree = build_kinds(vec![(upper(), LayerKind::Directory)]);
    assert_eq!(paths(&tree), ["d"]);
}

fn node_ino(tree: &Tree, path: &str) -> Ino {
    tree.lookup_path(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing"))
}

#[test]
fn paths_longer_than_path_max_are_left_out() {
    let deep = |bytes: usize| -> String {
        let mut path = "d/".repeat(bytes / 2);
        path.truncate(bytes - 1);
        path.push('x');
        path
    };
    let longest = deep(4095);
    let over = deep(4096);
    // 200,000 components: left out without building any of them.
    let bomb = "a/".repeat(200_000) + "x";
    // A short path that a symlink makes too long.
    let target = deep(4000);
    let (tree, warnings) = build_checked([
        layer(vec![
            file(&longest, 0),
            file(&over, 1),
            file(&bomb, 2),
            link("s", MemberKind::Symlink, &target),
        ]),
        layer(vec![file(&format!("s/{}", "y".repeat(100)), 3)]),
    ]);
    assert!(tree.lookup_path(longest.as_bytes()).is_some());
    assert_eq!(tree.len(), 2048 + 2, "the root, d/ x 2047, x and s");
    let problem = "the path is longer than 4095 bytes (PATH_MAX) after following symbolic links";
    assert_eq!(problems(&warnings), [problem; 3]);
    assert_eq!(warnings[1].path, &bomb.as_bytes()[..MergeWarning::KEPT]);
    assert_eq!(warnings[1].path_len, bomb.len());
    let shown = warnings[1].to_string();
    assert!(shown.len() < MergeWarning::KEPT + 200, "{shown}");
    assert!(shown.contains("a/a/... (400001 bytes): skipped"), "{shown}");
    assert_eq!(
        warnings[2].to_string(),
        format!("s/{}: skipped: {problem}", "y".repeat(100))
    );
}

#[test]
fn whiteouts_and_hardlinks_do_not_go_through_files() {
    let (tree, warnings) = build_checked([
        layer(vec![file("f", 0)]),
        layer(vec![
            file("f/.wh.x", 0),
            link("h", MemberKind::Hardlink, "f/x"),
        ]),
    ]);
    assert_eq!(paths(&tree), ["f"]);
    assert_eq!(node(&tree, "f").kind(), NodeKind::File);
    assert_eq!(warnings.len(), 1);
}

fn hidden(path: &str, kind: NodeKind, layer: u32, entries: u64) -> Hidden {
    Hidden {
        path: path.as_bytes().to_vec(),
        kind,
        layer,
        entries,
    }
}

fn removal(layer: u32, path: &str, kind: RemovalKind, hides: Vec<Hidden>) -> Removal {
    Removal {
        layer,
        path: path.as_bytes().to_vec(),
        kind,
        hides,
    }
}

#[test]
fn removals_are_recorded_with_what_they_hid() {
    let mut opaque_dir = dir("srv/");
    opaque_dir
        .xattrs
        .push((b"trusted.overlay.opaque".to_vec(), b"y".to_vec()));
    let layers = || {
        [
            layer(vec![
                dir("etc"),
                file("etc/old.conf", 0),
                dir("usr"),
                dir("usr/share"),
                file("usr/share/a", 1),
                file("usr/share/b", 2),
                file("usr/top", 3),
                dir("data"),
                file("data/x", 4),
                dir("srv"),
                file("srv/www", 5),
                file("tmp/t", 6),
            ]),
            layer(vec![dir("data/sub"), file("data/sub/y", 7)]),
            layer(vec![
                file("etc/.wh.old.conf", 0),
                file("./usr/.wh.share", 0),
                file("data/.wh..wh..opq", 0),
                opaque_dir.clone(),
                member("tmp/t", MemberKind::CharDevice),
                file("etc/.wh.never", 0),
                // Re-added below what the layer removed: not a removal.
                file("usr/share/new", 8),
            ]),
        ]
    };
    let (tree, warnings, removals) = merged(layers());
    assert!(warnings.is_empty(), "{warnings:?}");
    let file_kind = NodeKind::File;
    let dir_kind = NodeKind::Directory;
    assert_eq!(
        removals,
        vec![
            removal(
                2,
                "etc/.wh.old.conf",
                RemovalKind::Whiteout,
                vec![hidden("etc/old.conf", file_kind, 0, 1)]
            ),
            removal(
                2,
                "usr/.wh.share",
                RemovalKind::Whiteout,
                vec![hidden("usr/share", dir_kind, 0, 3)]
            ),
            removal(
                2,
                "data/.wh..wh..opq",
                RemovalKind::Opaque,
                vec![
                    hidden("data/sub", dir_kind, 1, 2),
                    hidden("data/x", file_kind, 0, 1),
                ]
            ),
            removal(
                2,
                "srv",
                RemovalKind::Opaque,
                vec![hidden("srv/www", file_kind, 0, 1)]
            ),
            removal(
                2,
                "tmp/t",
                RemovalKind::Tombstone,
                vec![hidden("tmp/t", file_kind, 0, 1)]
            ),
            removal(2, "etc/.wh.never", RemovalKind::Whiteout, Vec::new()),
        ]
    );
    // Recording changes nothing in the tree itself.
    assert_eq!(paths(&tree), paths(&build(layers())));
    assert_eq!(
        paths(&tree),
        [
            "data",
            "etc",
            "srv",
            "tmp",
            "usr",
            "usr/share",
            "usr/share/new",
            "usr/top"
        ]
    );
    // And the plain build records nothing.
    let mut builder = build::Builder::new(false, LayerKind::Tar);
    for (n, index) in layers().into_iter().enumerate() {
        builder.apply_layer(n as u32, index, LayerKind::Tar);
    }
    assert!(builder.removals.is_none());
}

/// Everything observable about a tree, path by path, for comparing two.
fn observe(tree: &Tree) -> Vec<String> {
    let mut seen = Vec::new();
    tree.walk::<()>(|path, ino, node| {
        let xattrs: Vec<_> = tree.xattrs(ino).collect();
        seen.push(format!(
            "{} {ino} {node:?} {:?} {:?} {xattrs:?}",
            String::from_utf8_lossy(path),
            tree.symlink_target(ino),
            tree.file_data(ino),
        ));
        Ok(())
    })
    .expect("walk");
    seen.push(format!("{} {}", tree.file_bytes(), tree.has_xattrs()));
    seen
}

fn stored_sample() -> Tree {
    let mut sparse = file("d/sparse", 512);
    sparse.data.size = 1 << 20;
    sparse.data.sparse = Some(Box::new([
        crate::tar::SparseSegment { offset: 0, len: 10 },
        crate::tar::SparseSegment {
            offset: 1000,
            len: 5,
        },
    ]));
    let mut x = file("d/x", 2048);
    x.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())];
    x.mtime = -5;
    x.mtime_nsec = 7;
    let mut dev = member("dev", MemberKind::CharDevice);
    (dev.dev_major, dev.dev_minor) = (1, 3);
    build([
        layer(vec![
            dir("d"),
            sparse,
            x,
            link("d/s", MemberKind::Symlink, "x"),
            link("d/h", MemberKind::Hardlink, "d/x"),
            member("p", MemberKind::Fifo),
            dev,
            file("gone", 0),
        ]),
        layer(vec![
            member(".wh.gone", MemberKind::Regular),
            file("d/new", 4096),
        ]),
    ])
}

#[test]
fn a_stored_tree_decodes_to_the_same_tree() {
    let tree = stored_sample();
    let mut bytes = Vec::new();
    tree.encode(&mut bytes);
    let back = Tree::decode(&bytes).expect("decode");
    assert_eq!(observe(&back), observe(&tree));
    assert_eq!(back.len(), tree.len());
}

#[test]
fn damaged_tree_bytes_are_refused_not_trusted() {
    let tree = stored_sample();
    let mut bytes = Vec::new();
    tree.encode(&mut bytes);
    // Every truncation fails.
    for len in 0..bytes.len() {
        assert!(Tree::decode(&bytes[..len]).is_err(), "cut at {len}");
    }
    // A flipped byte either fails or still gives a tree whose every range
    // is inside it (walking it must not panic).
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0xa5;
        if let Ok(tree) = Tree::decode(&damaged) {
            let _ = observe(&tree);
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Tree::decode(&longer).is_err(), "trailing byte");
}

/// Stored bytes at an offset of a buffer aligned for any record, as a
/// mapped cache entry is.
struct Aligned(Vec<u64>, usize);

impl AsRef<[u8]> for Aligned {
    fn as_ref(&self) -> &[u8] {
        &zerocopy::IntoBytes::as_bytes(&self.0[..])[..self.1]
    }
}

#[test]
fn a_stored_tree_is_read_in_place_when_aligned_and_copied_when_not() {
    let tree = stored_sample();
    let mut bytes = Vec::new();
    tree.encode(&mut bytes);
    for shift in [0, 8, 1, 3] {
        let len = shift + bytes.len();
        let mut words = vec![0u64; len.div_ceil(8)];
        zerocopy::IntoBytes::as_mut_bytes(&mut words[..])[shift..len].copy_from_slice(&bytes);
        let backing: Backing = std::sync::Arc::new(Aligned(words, len));
        let back = Tree::decode_shared(&backing, shift).expect("decode");
        assert_eq!(observe(&back), observe(&tree), "shift {shift}");
        assert_eq!(back.reads_in_place(), shift % 8 == 0, "shift {shift}");
    }
}

#[test]
fn a_tree_stored_with_another_record_layout_is_refused() {
    let tree = stored_sample();
    let mut bytes = Vec::new();
    tree.encode(&mut bytes);
    // The node record size, the header's second field.
    bytes[8] ^= 8;
    let error = Tree::decode(&bytes).expect_err("other layout");
    assert!(
        error.to_string().contains("another record layout"),
        "{error}"
    );
}

#[test]
fn permute_moves_every_item_to_its_place() {
    let mut items = vec!['a', 'b', 'c', 'd', 'e'];
    let mut to = vec![3, 0, 4, 1, 2];
    super::permute(&mut items, &mut to);
    assert_eq!(items, ['b', 'd', 'e', 'a', 'c']);
    assert_eq!(to, [0, 1, 2, 3, 4]);
}

/// The record sizes that a million entries' memory rests on; a link must
/// stay the size of an entry, or freezing silently allocates the entries
/// anew beside the links instead of turning them into entries in place.
#[test]
fn nodes_entries_and_links_keep_their_sizes() {
    use std::mem::{align_of, size_of};
    assert_eq!(size_of::<super::Node>(), 56);
    assert_eq!(size_of::<super::DirEntry>(), 16);
    assert_eq!(size_of::<super::Link>(), size_of::<super::DirEntry>());
    assert_eq!(align_of::<super::Link>(), align_of::<super::DirEntry>());
}
