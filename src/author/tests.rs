//! `create` and `diff` on small real directories: which entries a diff
//! writes for each kind of change, and that the lower layers plus the new
//! one always merge into exactly the directory.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::dir::Scan;
use crate::stack::{self, Stack, StackOptions};
use crate::tar::{MemberKind, TarWriter};
use crate::tree::{NodeKind, ROOT_INO};

/// A directory to change and the layers written from it.
struct Case {
    tmp: tempfile::TempDir,
    layers: Vec<PathBuf>,
}

impl Case {
    /// Builds `dir` with `build`, then writes it whole as the base layer.
    fn new(build: impl FnOnce(&Path)) -> Case {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("dir");
        fs::create_dir(&dir).expect("mkdir");
        build(&dir);
        let mut case = Case {
            tmp,
            layers: Vec::new(),
        };
        let scan = scan(&dir).expect("scan");
        case.write_layer(&scan, &everything(&scan));
        case
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("dir")
    }

    fn write_layer(&mut self, scan: &Scan, selection: &Selection) -> PathBuf {
        let mut writer = TarWriter::new(Vec::new());
        emit(scan, selection, None, &mut writer, &mut |_| {}).expect("emit");
        let path = self
            .tmp
            .path()
            .join(format!("layer{}.tar", self.layers.len()));
        fs::write(&path, writer.finish().expect("finish")).expect("write layer");
        self.layers.push(path.clone());
        path
    }

    /// Diffs the directory against the layers so far, checks that the
    /// layers plus the new one merge into the directory, and returns the
    /// new layer's members as `path` (hardlinks as `path=>target`).
    fn diff(&mut self) -> Vec<String> {
        let lower = open(&self.layers);
        let scan = scan(&self.dir()).expect("scan");
        let selection = plan_diff(&lower, &scan, &mut |_, _| {}).expect("plan");
        let new = self.write_layer(&scan, &selection);
        let merged = open(&self.layers);
        assert_eq!(
            tree_view(&merged),
            dir_view(&scan),
            "merged tree != directory"
        );
        let index =
            stack::layer_index(&stack::LayerSpec::file(&new), 1, None, None).expect("index");
        index
            .members
            .iter()
            .map(|m| {
                let path = String::from_utf8_lossy(&m.path).into_owned();
                match m.kind {
                    MemberKind::Hardlink => {
                        format!("{path}=>{}", String::from_utf8_lossy(&m.link_target))
                    }
                    _ => path,
                }
            })
            .collect()
    }
}

fn open(layers: &[PathBuf]) -> Stack {
    Stack::open(layers, &StackOptions::default()).expect("open stack")
}

/// Everything a mount shows of one path.
#[derive(Debug, PartialEq, Eq)]
struct View {
    kind: MemberKind,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, u32),
    size: u64,
    target: Vec<u8>,
    rdev: (u32, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    content: Vec<u8>,
    /// Every name of the inode (non-directories).
    names: Vec<Vec<u8>>,
}

fn tree_view(stack: &Stack) -> BTreeMap<Vec<u8>, View> {
    let tree = stack.tree();
    let mut names: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    tree.walk(|path, ino, node| {
        let mut content = vec![0; node.size as usize];
        if node.kind() == NodeKind::File {
            let n = stack.read(ino, 0, &mut content).expect("read");
            assert_eq!(n as u64, node.size);
        } else {
            content.clear();
        }
        let mut xattrs: Vec<_> = tree
            .xattrs(ino)
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        xattrs.sort();
        if node.kind() != NodeKind::Directory {
            names.entry(ino).or_default().push(path.to_vec());
        }
        let view = View {
            kind: node.kind().member_kind(),
            mode: node.mode,
            owner: (node.uid, node.gid),
            mtime: (node.mtime, node.mtime_nsec),
            size: if node.kind() == NodeKind::File {
                node.size
            } else {
                0
            },
            target: tree.symlink_target(ino).unwrap_or_default().to_vec(),
            rdev: node.rdev(),
            xattrs,
            content,
            names: vec![ino.to_le_bytes().to_vec()],
        };
        out.insert(path.to_vec(), view);
        Ok::<(), ()>(())
    })
    .expect("walk");
    resolve_names(&mut out, &names);
    out
}

fn dir_view(scan: &Scan) -> BTreeMap<Vec<u8>, View> {
    let mut names: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (i, e) in scan.entries().iter().enumerate() {
        let content = match e.kind {
            MemberKind::Regular => fs::read(scan.disk_path(i)).expect("read"),
            _ => Vec::new(),
        };
        if e.kind != MemberKind::Directory {
            names.entry(e.id.ino).or_default().push(e.path.clone());
        }
        let view = View {
            kind: e.kind,
            mode: e.mode,
            owner: (e.uid, e.gid),
            mtime: (e.mtime, e.mtime_nsec),
            size: e.size,
            target: e.target.clone(),
            rdev: e.rdev,
            xattrs: e.xattrs.clone(),
            content,
            names: vec![e.id.ino.to_le_bytes().to_vec()],
        };
        out.insert(e.path.clone(), view);
    }
    resolve_names(&mut out, &names);
    out
}

/// Replaces each view's inode placeholder by the inode's names.
fn resolve_names(views: &mut BTreeMap<Vec<u8>, View>, names: &BTreeMap<u64, Vec<Vec<u8>>>) {
    for view in views.values_mut() {
        let ino = view
            .names
            .first()
            .and_then(|b| b.as_slice().try_into().ok())
            .map(u64::from_le_bytes);
        view.names = match (view.kind, ino.and_then(|i| names.get(&i))) {
            (MemberKind::Directory, _) | (_, None) => Vec::new(),
            (_, Some(all)) => all.clone(),
        };
    }
}

fn write(path: &Path, content: &str) {
    fs::write(path, content).expect("write");
}

/// The usual base: `d/` holding files `f` and `g`, and `d/sub/x`.
fn base(dir: &Path) {
    fs::create_dir_all(dir.join("d/sub")).expect("mkdir");
    write(&dir.join("d/f"), "ffff");
    write(&dir.join("d/g"), "g");
    write(&dir.join("d/sub/x"), "x");
}

#[test]
fn an_unchanged_directory_gives_an_empty_layer() {
    let mut case = Case::new(|d| {
        base(d);
        symlink("f", d.join("d/link")).expect("symlink");
        fs::hard_link(d.join("d/f"), d.join("d/f2")).expect("link");
        xattr::set(d.join("d/g"), "user.a", b"1").expect("xattr");
    });
    assert_eq!(case.diff(), Vec::<String>::new());
}

#[test]
fn an_added_file_comes_with_its_directory() {
    let mut case = Case::new(base);
    write(&case.dir().join("d/new"), "n");
    assert_eq!(case.diff(), ["d/", "d/new"]);
}

#[test]
fn new_bytes_of_the_same_size_and_time_are_found() {
    let mut case = Case::new(base);
    let f = case.dir().join("d/f");
    let mtime = fs::metadata(&f).and_then(|m| m.modified()).expect("mtime");
    write(&f, "FFFF");
    let file = fs::File::options().write(true).open(&f).expect("open");
    file.set_modified(mtime).expect("set mtime");
    assert_eq!(case.diff(), ["d/", "d/f"]);
}

#[test]
fn a_mode_or_xattr_change_rewrites_only_that_entry() {
    let mut case = Case::new(base);
    fs::set_permissions(case.dir().join("d/f"), fs::Permissions::from_mode(0o600)).expect("chmod");
    xattr::set(case.dir().join("d/sub/x"), "user.new", b"v").expect("xattr");
    assert_eq!(case.diff(), ["d/", "d/f", "d/sub/", "d/sub/x"]);
}

#[test]
fn deletions_are_whiteouts_in_their_directory() {
    let mut case = Case::new(base);
    fs::remove_file(case.dir().join("d/g")).expect("rm");
    fs::remove_dir_all(case.dir().join("d/sub")).expect("rm -r");
    assert_eq!(case.diff(), ["d/", "d/.wh.g", "d/.wh.sub"]);
}

#[test]
fn a_directory_with_nothing_left_becomes_opaque() {
    let mut case = Case::new(base);
    let sub = case.dir().join("d/sub");
    fs::remove_file(sub.join("x")).expect("rm");
    write(&sub.join("y"), "y");
    fs::create_dir(sub.join("z")).expect("mkdir");
    assert_eq!(
        case.diff(),
        ["d/", "d/sub/", "d/sub/.wh..wh..opq", "d/sub/y", "d/sub/z/"]
    );
}

#[test]
fn a_change_of_kind_writes_the_new_entry_whole() {
    let mut case = Case::new(base);
    let d = case.dir().join("d");
    fs::remove_file(d.join("f")).expect("rm");
    fs::create_dir(d.join("f")).expect("mkdir");
    write(&d.join("f/inner"), "i");
    fs::remove_dir_all(d.join("sub")).expect("rm -r");
    symlink("f", d.join("sub")).expect("symlink");
    assert_eq!(case.diff(), ["d/", "d/f/", "d/f/inner", "d/sub"]);
}

#[test]
fn a_changed_directory_is_written_without_its_children() {
    let mut case = Case::new(base);
    fs::set_permissions(case.dir().join("d/sub"), fs::Permissions::from_mode(0o700))
        .expect("chmod");
    assert_eq!(case.diff(), ["d/", "d/sub/"]);
}

#[test]
fn hardlink_groups_are_rewritten_whole_when_they_change() {
    let mut case = Case::new(|d| {
        base(d);
        fs::hard_link(d.join("d/f"), d.join("d/f2")).expect("link");
        fs::hard_link(d.join("d/g"), d.join("d/g2")).expect("link");
    });
    let d = case.dir().join("d");
    // f2 stops being f: a copy with the same bytes, mode and time.
    let meta = fs::metadata(d.join("f")).expect("stat");
    fs::remove_file(d.join("f2")).expect("rm");
    fs::copy(d.join("f"), d.join("f2")).expect("cp");
    let copy = fs::File::options()
        .write(true)
        .open(d.join("f2"))
        .expect("open");
    copy.set_modified(meta.modified().expect("mtime"))
        .expect("set mtime");
    // g loses its second name; sub/x gains one.
    fs::remove_file(d.join("g2")).expect("rm");
    fs::hard_link(d.join("sub/x"), d.join("x2")).expect("link");
    assert_eq!(
        case.diff(),
        [
            "d/",
            "d/.wh.g2",
            "d/f",
            "d/f2",
            "d/g",
            "d/sub/",
            "d/sub/x",
            "d/x2=>d/sub/x"
        ]
    );
}

#[test]
fn the_root_is_written_when_its_own_attributes_change() {
    let mut case = Case::new(|d| {
        base(d);
        write(&d.join("keep"), "k");
    });
    write(&case.dir().join("top"), "t");
    fs::remove_dir_all(case.dir().join("d")).expect("rm -r");
    assert_eq!(case.diff(), ["./", ".wh.d", "top"]);
}

#[test]
fn a_root_with_nothing_left_becomes_opaque() {
    let mut case = Case::new(|d| write(&d.join("old"), "o"));
    fs::remove_file(case.dir().join("old")).expect("rm");
    write(&case.dir().join("new"), "n");
    assert_eq!(case.diff(), ["./", ".wh..wh..opq", "new"]);
}

#[test]
fn create_writes_every_entry_in_name_order_with_hardlinks() {
    let case = Case::new(|d| {
        fs::create_dir(d.join("a")).expect("mkdir");
        write(&d.join("a/z"), "z");
        write(&d.join("a-b"), "ab");
        fs::hard_link(d.join("a/z"), d.join("b")).expect("link");
        symlink("/nowhere", d.join("c")).expect("symlink");
    });
    let index =
        stack::layer_index(&stack::LayerSpec::file(&case.layers[0]), 1, None, None).expect("index");
    let members: Vec<(String, MemberKind, String)> = index
        .members
        .iter()
        .map(|m| {
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (s(&m.path), m.kind, s(&m.link_target))
        })
        .collect();
    let want = [
        ("./", MemberKind::Directory, ""),
        ("a/", MemberKind::Directory, ""),
        ("a/z", MemberKind::Regular, ""),
        ("a-b", MemberKind::Regular, ""),
        ("b", MemberKind::Hardlink, "a/z"),
        ("c", MemberKind::Symlink, "/nowhere"),
    ];
    let want: Vec<(String, MemberKind, String)> = want
        .iter()
        .map(|&(p, k, t)| (p.to_string(), k, t.to_string()))
        .collect();
    assert_eq!(members, want);
    let merged = open(&case.layers);
    let scan = scan(&case.dir()).expect("scan");
    assert_eq!(tree_view(&merged), dir_view(&scan));
    let root = merged.tree().node(ROOT_INO).expect("root");
    assert_eq!(root.mode, scan.entries()[0].mode);
}

#[test]
fn whiteout_names_are_refused_and_sockets_left_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let _socket = std::os::unix::net::UnixListener::bind(tmp.path().join("sock")).expect("socket");
    write(&tmp.path().join("file"), "f");
    let scan = scan(tmp.path()).expect("scan");
    let paths: Vec<&[u8]> = scan.entries().iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths, [&b""[..], b"file"]);
    write(&tmp.path().join(".wh.file"), "");
    let err = super::scan(tmp.path()).expect_err("a whiteout name");
    assert!(
        err.to_string().contains(".wh.file") && err.to_string().contains("whiteout"),
        "{err}"
    );
}

#[test]
fn symlinks_inside_are_never_followed() {
    let outside = tempfile::tempdir().expect("tempdir");
    write(&outside.path().join("secret"), "s");
    let tmp = tempfile::tempdir().expect("tempdir");
    symlink(outside.path(), tmp.path().join("out")).expect("symlink");
    let scan = scan(tmp.path()).expect("scan");
    let paths: Vec<&[u8]> = scan.entries().iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths, [&b""[..], b"out"]);
    assert_eq!(scan.entries()[1].kind, MemberKind::Symlink);
}

#[test]
fn clamping_caps_times_including_their_fraction() {
    assert_eq!(clamp(100, 5, Some(100)), (100, 0));
    assert_eq!(clamp(99, 5, Some(100)), (99, 5));
    assert_eq!(clamp(101, 0, Some(100)), (100, 0));
    assert_eq!(clamp(101, 7, None), (101, 7));
}

#[test]
fn a_layer_dir_reads_its_markers_as_the_merge_does() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    fs::create_dir_all(dir.join("d/sub")).expect("mkdir");
    fs::create_dir(dir.join(".wh.g")).expect("mkdir");
    for name in [
        ".wh.b",
        "d/.wh..wh..opq",
        "d/keep",
        ".wh..wh.aufs",
        ".wh.g/inner",
    ] {
        fs::write(dir.join(name), "").expect("write");
    }
    let (scan, selection) = scan_layer(dir).expect("scan");
    let index = |path: &str| {
        scan.entries()
            .iter()
            .position(|e| e.path == path.as_bytes())
            .unwrap_or_else(|| panic!("{path} not scanned"))
    };
    let written: Vec<&str> = scan
        .entries()
        .iter()
        .enumerate()
        .filter(|&(i, _)| selection.writes(i))
        .map(|(_, e)| std::str::from_utf8(&e.path).expect("utf-8"))
        .collect();
    assert_eq!(written, ["", "d", "d/keep", "d/sub"]);
    assert_eq!(selection.whiteouts.len(), 1, "{:?}", selection.whiteouts);
    assert_eq!(
        selection.whiteouts.get(&0),
        Some(&vec![b"b".to_vec(), b"g".to_vec()]),
        "the root's"
    );
    let opaque: Vec<usize> = (0..scan.entries().len())
        .filter(|&i| selection.opaque[i])
        .collect();
    assert_eq!(opaque, [index("d")]);
    // Without the option, the same directory is refused by name.
    assert!(matches!(
        super::scan(dir),
        Err(AuthorError::Unrepresentable { path, .. }) if path.ends_with(".wh..wh.aufs")
    ));
}
