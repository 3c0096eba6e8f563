//! Tree snapshots and exact expectations.
//!
//! `snapshot` records everything observable about a directory tree without
//! following symlinks; `Expected` states what a test expects, field by field
//! (a `None` field is deliberately not checked); `assert_tree` compares the
//! two and panics with a readable list of missing, extra and differing paths.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

use super::layer::{pseudo_random, DEFAULT_MTIME};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

/// Everything a test can observe about one path.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub rdev: u64,
    pub nlink: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub mtime: (i64, i64),
    pub ino: u64,
}

/// Relative path bytes (no leading `/`, root excluded) to node.
pub type Snapshot = BTreeMap<Vec<u8>, Node>;

fn kind_of(ft: std::fs::FileType) -> Kind {
    if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    }
}

/// Sorted xattrs of `path` (not following symlinks). A filesystem without
/// xattr support simply has none.
pub fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Vec::new(),
        Err(e) => panic!("listxattr {}: {e}", path.display()),
    };
    let mut out: Vec<_> = names
        .map(|name| {
            let value = xattr::get(path, &name)
                .unwrap_or_else(|e| panic!("getxattr {} {name:?}: {e}", path.display()))
                .unwrap_or_else(|| panic!("listed xattr {name:?} missing on {}", path.display()));
            (name.as_bytes().to_vec(), value)
        })
        .collect();
    out.sort();
    out
}

/// Observes one path without following it if it is a symlink.
pub fn observe(path: &Path) -> Node {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let kind = kind_of(meta.file_type());
    let read =
        |r: std::io::Result<Vec<u8>>| r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Node {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        content: (kind == Kind::File).then(|| read(std::fs::read(path))),
        target: (kind == Kind::Symlink)
            .then(|| read(std::fs::read_link(path).map(|t| t.as_os_str().as_bytes().to_vec()))),
        rdev: meta.rdev(),
        nlink: meta.nlink(),
        xattrs: xattrs_of(path),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ino: meta.ino(),
    }
}

/// Writes `segments` (offset, bytes) into a file of `size` bytes whose
/// remainder stays a hole.
pub fn write_sparse(path: &Path, size: u64, segments: &[(u64, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    for (offset, data) in segments {
        file.write_all_at(data, *offset).unwrap();
    }
}

/// Sparse files with few data segments, with more segments than an old GNU
/// header holds (forcing extension headers), one that is all hole and one
/// ending in a hole.
pub fn populate_sparse(root: &Path) {
    const MIB: u64 = 1 << 20;
    write_sparse(
        &root.join("few"),
        8 * MIB,
        &[
            (0, pseudo_random(4096, 1)),
            (3 * MIB + 100, pseudo_random(10_000, 2)),
            (8 * MIB - 100, pseudo_random(100, 3)),
        ],
    );
    let many: Vec<_> = (0..30)
        .map(|i| (i * 64 * 1024, pseudo_random(512, 10 + i)))
        .collect();
    write_sparse(&root.join("many"), 2 * MIB, &many);
    write_sparse(&root.join("all-hole"), MIB, &[]);
    write_sparse(
        &root.join("tail-hole"),
        5 * MIB,
        &[(0, pseudo_random(8192, 4))],
    );
}

/// Walks `root` (excluded) without following symlinks.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    walk(root, &[], &mut out);
    out
}

fn walk(dir: &Path, rel: &[u8], out: &mut Snapshot) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
        let name = entry.file_name();
        let rel_path = if rel.is_empty() {
            name.as_bytes().to_vec()
        } else {
            [rel, b"/", name.as_bytes()].concat()
        };
        let node = observe(&entry.path());
        let is_dir = node.kind == Kind::Dir;
        assert!(
            out.insert(rel_path.clone(), node).is_none(),
            "readdir of {} listed {} twice",
            dir.display(),
            show_path(&rel_path)
        );
        if is_dir {
            walk(&entry.path(), &rel_path, out);
        }
    }
}

/// An expectation for one path; `None` fields are not checked.
#[derive(Clone, Debug)]
pub struct Want {
    pub kind: Kind,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub content: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<u64>,
    pub nlink: Option<u64>,
    pub xattrs: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Seconds, and nanoseconds when they matter.
    pub mtime: Option<(i64, Option<i64>)>,
    /// Path this one must share its inode with (a hardlink group leader).
    pub same_inode_as: Option<Vec<u8>>,
}

impl Want {
    /// Defaults of a member the layer builder emits with no modifiers.
    fn new(kind: Kind, mode: u32) -> Want {
        Want {
            kind,
            mode: Some(mode),
            uid: Some(0),
            gid: Some(0),
            size: None,
            content: None,
            target: None,
            rdev: None,
            nlink: (kind != Kind::Dir).then_some(1),
            xattrs: Some(Vec::new()),
            mtime: Some((DEFAULT_MTIME as i64, Some(0))),
            same_inode_as: None,
        }
    }
}

/// How precisely `Expected::from_snapshot` carries mtimes over: archives
/// in the old formats only hold whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mtime {
    Seconds,
    Nanoseconds,
}

/// What `Expected::from_snapshot` takes from a reference besides kind,
/// mode, owner, size, content, link target, rdev, link count and hardlink
/// grouping, which it always takes: those two depend on the archive format.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    pub xattrs: bool,
    pub mtime: Mtime,
}

impl Fields {
    /// Everything a PAX archive can carry.
    pub const ALL: Fields = Fields {
        xattrs: true,
        mtime: Mtime::Nanoseconds,
    };
}

/// The exact tree a test expects. Like `Layer`, modifiers apply to the path
/// added last, and the defaults match the layer builder's defaults so a test
/// only spells out what differs.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    nodes: BTreeMap<Vec<u8>, Want>,
    last: Vec<u8>,
}

impl Expected {
    pub fn new() -> Self {
        Self::default()
    }

    fn put(mut self, path: impl AsRef<[u8]>, want: Want) -> Self {
        self.last = path.as_ref().to_vec();
        self.nodes.insert(self.last.clone(), want);
        self
    }

    fn last(&mut self) -> &mut Want {
        self.nodes
            .get_mut(&self.last)
            .expect("modifier used before any path was added")
    }

    pub fn file(self, path: impl AsRef<[u8]>, content: impl AsRef<[u8]>) -> Self {
        let content = content.as_ref().to_vec();
        let want = Want {
            size: Some(content.len() as u64),
            content: Some(content),
            ..Want::new(Kind::File, 0o644)
        };
        self.put(path, want)
    }

    pub fn dir(self, path: impl AsRef<[u8]>) -> Self {
        self.put(path, Want::new(Kind::Dir, 0o755))
    }

    /// A directory no layer lists: 0755 root:root, any mtime.
    pub fn implied_dir(self, path: impl AsRef<[u8]>) -> Self {
        self.dir(path).any_mtime()
    }

    pub fn symlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        let target = target.as_ref().to_vec();
        let want = Want {
            size: Some(target.len() as u64),
            target: Some(target),
            ..Want::new(Kind::Symlink, 0o777)
        };
        self.put(path, want)
    }

    /// Another name for `target`'s inode: same metadata, and every name of
    /// the group gets its link count raised by one.
    pub fn hardlink(mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        let target = target.as_ref().to_vec();
        let leader = self.nodes[&target]
            .same_inode_as
            .clone()
            .unwrap_or_else(|| target.clone());
        let mut want = self.nodes[&leader].clone();
        want.same_inode_as = Some(leader.clone());
        let nlink = want.nlink.map(|n| n + 1);
        for (p, w) in self.nodes.iter_mut() {
            if *p == leader || w.same_inode_as.as_ref() == Some(&leader) {
                w.nlink = nlink;
            }
        }
        want.nlink = nlink;
        self.put(path, want)
    }

    fn device(self, path: impl AsRef<[u8]>, kind: Kind, major: u32, minor: u32) -> Self {
        let want = Want {
            rdev: Some(libc::makedev(major, minor)),
            size: Some(0),
            ..Want::new(kind, 0o644)
        };
        self.put(path, want)
    }

    pub fn char_dev(self, path: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        self.device(path, Kind::Char, major, minor)
    }

    pub fn block_dev(self, path: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        self.device(path, Kind::Block, major, minor)
    }

    pub fn fifo(self, path: impl AsRef<[u8]>) -> Self {
        let want = Want {
            size: Some(0),
            ..Want::new(Kind::Fifo, 0o644)
        };
        self.put(path, want)
    }

    pub fn mode(mut self, mode: u32) -> Self {
        self.last().mode = Some(mode);
        self
    }

    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        let w = self.last();
        w.uid = Some(uid);
        w.gid = Some(gid);
        self
    }

    /// Whole-second mtime (nanoseconds must be zero).
    pub fn mtime(mut self, secs: i64) -> Self {
        self.last().mtime = Some((secs, Some(0)));
        self
    }

    pub fn mtime_ns(mut self, secs: i64, nsec: i64) -> Self {
        self.last().mtime = Some((secs, Some(nsec)));
        self
    }

    pub fn any_mtime(mut self) -> Self {
        self.last().mtime = None;
        self
    }

    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let xattrs = self.last().xattrs.get_or_insert_with(Vec::new);
        xattrs.push((name.as_bytes().to_vec(), value.as_ref().to_vec()));
        xattrs.sort();
        self
    }

    pub fn nlink(mut self, nlink: u64) -> Self {
        self.last().nlink = Some(nlink);
        self
    }

    /// Checks size only, for contents too large to spell out.
    pub fn size_only(mut self, size: u64) -> Self {
        let w = self.last();
        w.size = Some(size);
        w.content = None;
        self
    }

    /// Expects exactly what a reference tree (e.g. a directory extracted by
    /// another tool) holds, limited to `fields`.
    pub fn from_snapshot(reference: &Snapshot, fields: Fields) -> Self {
        let mut leaders: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let nodes = reference
            .iter()
            .map(|(path, n)| {
                let is_dir = n.kind == Kind::Dir;
                let leader = leaders.entry(n.ino).or_insert_with(|| path.clone());
                let want = Want {
                    kind: n.kind,
                    mode: Some(n.mode),
                    uid: Some(n.uid),
                    gid: Some(n.gid),
                    size: (!is_dir).then_some(n.size),
                    content: n.content.clone(),
                    target: n.target.clone(),
                    rdev: matches!(n.kind, Kind::Char | Kind::Block).then_some(n.rdev),
                    nlink: (!is_dir).then_some(n.nlink),
                    xattrs: fields.xattrs.then(|| n.xattrs.clone()),
                    mtime: match fields.mtime {
                        Mtime::Seconds => Some((n.mtime.0, None)),
                        Mtime::Nanoseconds => Some((n.mtime.0, Some(n.mtime.1))),
                    },
                    same_inode_as: (!is_dir && leader != path).then(|| leader.clone()),
                };
                (path.clone(), want)
            })
            .collect();
        Expected {
            nodes,
            last: Vec::new(),
        }
    }
}

/// Printable, escaped form of a path.
pub fn show_path(path: &[u8]) -> String {
    format!("\"{}\"", path.escape_ascii())
}

/// Printable form of content bytes: escaped if short, else a digest.
pub fn show(bytes: &[u8]) -> String {
    if bytes.len() <= 80 {
        return show_path(bytes);
    }
    // FNV-1a: enough to tell two long contents apart in a failure message.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("<{} bytes, fnv {hash:016x}>", bytes.len())
}

fn show_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> String {
    let items: Vec<String> = xattrs
        .iter()
        .map(|(k, v)| format!("{}={}", show(k), show(v)))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Lists the fields in which `got` differs from `want`.
fn field_diffs(want: &Want, got: &Node) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, want: Option<String>, got: String| {
        if let Some(want) = want {
            if want != got {
                out.push(format!("{name}: expected {want}, got {got}"));
            }
        }
    };
    check(
        "kind",
        Some(format!("{:?}", want.kind)),
        format!("{:?}", got.kind),
    );
    check(
        "mode",
        want.mode.map(|m| format!("{m:04o}")),
        format!("{:04o}", got.mode),
    );
    check("uid", want.uid.map(|u| u.to_string()), got.uid.to_string());
    check("gid", want.gid.map(|g| g.to_string()), got.gid.to_string());
    check(
        "size",
        want.size.map(|s| s.to_string()),
        got.size.to_string(),
    );
    let none = || "none".to_string();
    check(
        "content",
        want.content.as_deref().map(show),
        got.content.as_deref().map_or_else(none, show),
    );
    check(
        "link target",
        want.target.as_deref().map(show),
        got.target.as_deref().map_or_else(none, show),
    );
    check(
        "rdev",
        want.rdev.map(|r| format!("{r:#x}")),
        format!("{:#x}", got.rdev),
    );
    check(
        "nlink",
        want.nlink.map(|n| n.to_string()),
        got.nlink.to_string(),
    );
    check(
        "xattrs",
        want.xattrs.as_deref().map(show_xattrs),
        show_xattrs(&got.xattrs),
    );
    if let Some((secs, nsec)) = want.mtime {
        let got_nsec = nsec.map(|_| got.mtime.1);
        check(
            "mtime",
            Some(format!("{secs}.{nsec:?}")),
            format!("{}.{got_nsec:?}", got.mtime.0),
        );
    }
    out
}

/// Paths sharing an inode that the expectation does not link together.
fn inode_diffs(expected: &Expected, actual: &Snapshot) -> Vec<String> {
    let group = |p: &Vec<u8>| {
        expected
            .nodes
            .get(p)
            .and_then(|w| w.same_inode_as.clone())
            .unwrap_or_else(|| p.clone())
    };
    let mut by_ino: BTreeMap<u64, Vec<&Vec<u8>>> = BTreeMap::new();
    for (path, node) in actual {
        by_ino.entry(node.ino).or_default().push(path);
    }
    let mut out = Vec::new();
    for paths in by_ino.values().filter(|p| p.len() > 1) {
        if paths.iter().any(|p| group(p) != group(paths[0])) {
            let names: Vec<String> = paths.iter().map(|p| show_path(p)).collect();
            out.push(format!(
                "unexpectedly share one inode: {}",
                names.join(", ")
            ));
        }
    }
    for (path, want) in &expected.nodes {
        let Some(leader) = &want.same_inode_as else {
            continue;
        };
        if let (Some(a), Some(b)) = (actual.get(path), actual.get(leader)) {
            if a.ino != b.ino {
                out.push(format!(
                    "{} should share the inode of {} (st_ino {} vs {})",
                    show_path(path),
                    show_path(leader),
                    a.ino,
                    b.ino
                ));
            }
        }
    }
    out
}

/// Everything that differs between the expectation and the snapshot.
pub fn tree_diff(expected: &Expected, actual: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (path, want) in &expected.nodes {
        match actual.get(path) {
            None => out.push(format!("missing: {} ({:?})", show_path(path), want.kind)),
            Some(got) => {
                for d in field_diffs(want, got) {
                    out.push(format!("differs: {}: {d}", show_path(path)));
                }
            }
        }
    }
    for (path, got) in actual {
        if !expected.nodes.contains_key(path) {
            let detail = got
                .content
                .as_deref()
                .or(got.target.as_deref())
                .map(show)
                .unwrap_or_default();
            out.push(format!(
                "extra:   {} ({:?}) {detail}",
                show_path(path),
                got.kind
            ));
        }
    }
    out.extend(inode_diffs(expected, actual));
    out
}

/// Panics with the full diff if the tree under `root` is not `expected`.
pub fn assert_tree(root: &Path, expected: &Expected) {
    let actual = snapshot(root);
    let diffs = tree_diff(expected, &actual);
    if !diffs.is_empty() {
        let mut msg = format!("tree under {} differs from expectation:\n", root.display());
        for d in &diffs {
            writeln!(msg, "  {d}").unwrap();
        }
        panic!("{msg}");
    }
}
