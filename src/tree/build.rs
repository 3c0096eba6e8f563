//! Applying layers, bottom to top, to a mutable tree.
//!
//! Each layer is applied in two passes: first everything it removes from the
//! layers below (whiteouts, tombstones, opaque directories), then everything
//! it adds, in archive order. Removing first is what makes a whiteout unable
//! to remove what its own layer adds, and an opaque marker work wherever it
//! stands in the archive.
//!
//! Directory entries point at nodes, so a hardlink is a second entry to the
//! same node, and removing one name of a hardlinked file leaves the other
//! showing the same data.

use std::collections::HashMap;

use super::bytes::ByteCount;
use super::names::Names;
use super::path::{components, is_absolute, push_components};
use super::whiteout::{classify, is_visible_xattr, Action, LayerKind};
use super::{
    kind_code, Extra, Hidden, MergeWarning, Node, NodeKind, Removal, RemovalKind, Span, DIR_SIZE,
    SPARSE,
};
use crate::tar::{LayerIndex, Member, MemberKind};

/// Index of a node in [`Builder::nodes`].
pub(super) type NodeId = usize;
/// The root directory's node.
pub(super) const ROOT: NodeId = 0;
/// How many symlinks one path may pass through (Linux' MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;
/// Longest name a Linux filesystem holds (`NAME_MAX`). An unpacker cannot
/// create a longer one, and a FUSE directory listing holding one fails as a
/// whole on kernels before 6.12 (names over 1024 bytes) and on every kernel
/// for names over 4095 bytes, hiding its other entries: such members are
/// left out instead.
const NAME_MAX: usize = 255;
/// Longest symlink target followed while resolving a parent (`PATH_MAX` - 1,
/// the longest target `symlink(2)` creates). A longer one is kept and shown,
/// but not followed: each step through it would copy it again.
const MAX_FOLLOWED_TARGET: usize = 4095;
/// Most path components one resolution may handle, summed over the path
/// and every rewrite of it by a symlink. Without it a symlink whose target
/// repeats its own name (`a -> a/a/a/...`) grows the path by its whole
/// target at each of the [`MAX_SYMLINKS`] steps, for every member below it:
/// an 800 KB layer took 83 s and 2.2 GiB to merge.
const MAX_RESOLVE_COMPONENTS: usize = 4096;
/// Longest path a member may be placed at, in bytes, after following
/// symlinks (`PATH_MAX` - 1): nothing deeper can be opened through the
/// mount, and without a bound a 2.5 KB layer of 50 members 200,000
/// components deep built ten million directories, and listing them printed
/// paths of quadratic total length.
const MAX_PATH: usize = 4095;
/// Mode of a directory that only exists because a path goes through it.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// The tree under construction, and the problems met so far.
///
/// Nodes are the frozen tree's own records from the start, so that
/// freezing reorders them in place instead of copying every node into a
/// second array (which was the peak of a first mount's memory): a
/// directory's `at` and `count`, and every node's `parent` and `nlink`,
/// are only set then. Symlink targets and xattrs go to the arena, and
/// xattrs and sparse maps to their tables, as they come; what a later
/// layer replaces stays there unused, bounded by what the layers hold.
pub(super) struct Builder {
    pub nodes: Vec<Node>,
    pub names: Names,
    pub extras: Vec<Extra>,
    pub xattrs: Vec<[Span; 2]>,
    pub segments: Vec<[u64; 2]>,
    pub warnings: Vec<MergeWarning>,
    /// What each removal hid, if asked for; `None` costs nothing.
    pub removals: Option<Vec<Removal>>,
    /// Each layer's file data, stored and hidden, kept when removals are.
    pub bytes: Option<ByteCount>,
    /// What the current layer's whiteouts removed, by normalised path: an
    /// unpacker applying the archive in order would still find these for a
    /// hardlink that comes before the whiteout in the archive.
    removed_by_layer: HashMap<Vec<u8>, NodeId>,
    /// What the layer being applied is read from.
    kind: LayerKind,
}

/// Why a path could not be resolved to a directory.
enum Unresolved {
    NotADirectory,
    Missing,
    SymlinkLoop,
    NameTooLong,
    TargetTooLong,
    PathTooLong,
    PathOverMax,
}

impl Unresolved {
    fn describe(&self) -> &'static str {
        match self {
            Unresolved::NotADirectory => "a parent is not a directory",
            Unresolved::Missing => "a parent does not exist",
            Unresolved::SymlinkLoop => "too many levels of symbolic links in the parent path",
            Unresolved::NameTooLong => "a parent's name is longer than 255 bytes",
            Unresolved::TargetTooLong => {
                "a symbolic link in the parent path has a target longer than 4095 bytes"
            }
            Unresolved::PathTooLong => {
                "the parent path has more than 4096 components after following symbolic links"
            }
            Unresolved::PathOverMax => {
                "the path is longer than 4095 bytes (PATH_MAX) after following symbolic links"
            }
        }
    }
}

/// Where [`Builder::resolve_dir`] may make missing directories: for a
/// member of `layer` (they are attributed to it) named `name_len` bytes.
#[derive(Clone, Copy)]
struct Create {
    layer: u32,
    name_len: usize,
}

/// One step of walking a path: either it ended on a directory, or it met a
/// symlink and must start again from the root with the rewritten path.
enum Walk {
    Dir(NodeId),
    Restart(Vec<Vec<u8>>),
}

impl Builder {
    /// A tree holding only an empty root directory; `record` keeps a
    /// [`Removal`] for every whiteout, opaque marker and tombstone; `kind`
    /// is what the first layer is read from.
    pub fn new(record: bool, kind: LayerKind) -> Builder {
        Builder {
            nodes: vec![implied_dir_node(0)],
            names: Names::new(),
            extras: Vec::new(),
            xattrs: Vec::new(),
            segments: Vec::new(),
            warnings: Vec::new(),
            removals: record.then(Vec::new),
            bytes: record.then(ByteCount::default),
            removed_by_layer: HashMap::new(),
            kind,
        }
    }

    /// Applies one layer on top of what is built so far. The layer is
    /// consumed: each member is dropped once added, so the memory the
    /// member list held goes to the growing tree instead of adding to it.
    pub fn apply_layer(&mut self, layer: u32, index: LayerIndex, kind: LayerKind) {
        self.removed_by_layer.clear();
        self.kind = kind;
        if let Some(bytes) = &mut self.bytes {
            bytes.start(layer, &self.nodes);
        }
        self.nodes.reserve(index.members.len());
        self.names.reserve(index.members.len());
        for member in &index.members {
            let comps = components(&member.path);
            let comps = &comps[..];
            match classify(member, comps, kind) {
                Action::Remove { dir, name, by } => {
                    let removed = self.remove(dir, name);
                    self.record(layer, member, by, dir, removed.map(|id| (name, id)));
                }
                Action::MakeOpaque { dir } => {
                    let hidden = self.make_opaque(dir);
                    let children = hidden.iter().map(|(name, id)| (&name[..], *id));
                    self.record(layer, member, RemovalKind::Opaque, dir, children);
                }
                Action::AddOpaqueDir => {
                    let hidden = self.make_replaced_dir_opaque(comps);
                    let children = hidden.iter().map(|(name, id)| (&name[..], *id));
                    self.record(layer, member, RemovalKind::Opaque, comps, children);
                }
                Action::Add | Action::Ignore => {}
            }
        }
        for member in index.members {
            let comps = components(&member.path);
            match classify(&member, &comps, kind) {
                Action::Add | Action::AddOpaqueDir => {
                    self.stored(&member, true);
                    self.add(layer, &member, &comps);
                }
                Action::Remove { .. } | Action::MakeOpaque { .. } | Action::Ignore => {
                    self.stored(&member, false);
                    self.unplaced(&member, false);
                }
            }
        }
    }

    /// Adds one member of the bottom layer as soon as it is read, without
    /// waiting for the rest of the layer. Only for the first layer applied
    /// to a new builder: with nothing below it, its whiteouts and opaque
    /// markers remove nothing, so the removal pass that
    /// [`Builder::apply_layer`] makes first has nothing to do but record
    /// them (in archive order, as it would), and each member can be added
    /// as it comes with the same result.
    pub fn add_bottom_member(&mut self, member: &Member) {
        let comps = components(&member.path);
        let comps = &comps[..];
        let nothing = std::iter::empty::<(&[u8], NodeId)>();
        let action = classify(member, comps, self.kind);
        let shows = matches!(action, Action::Add | Action::AddOpaqueDir);
        self.stored(member, shows);
        if !shows {
            self.unplaced(member, false);
        }
        match action {
            Action::Remove { dir, by, .. } => self.record(0, member, by, dir, nothing),
            Action::MakeOpaque { dir } => {
                self.record(0, member, RemovalKind::Opaque, dir, nothing);
            }
            Action::AddOpaqueDir => {
                self.record(0, member, RemovalKind::Opaque, comps, nothing);
                self.add(0, member, comps);
            }
            Action::Add => self.add(0, member, comps),
            Action::Ignore => {}
        }
    }

    /// Counts a regular member's data as stored by its layer, if counting;
    /// `file`: a file to show, not a marker.
    fn stored(&mut self, member: &Member, file: bool) {
        if let (Some(bytes), MemberKind::Regular) = (&mut self.bytes, member.kind) {
            bytes.stored(member.data.size, file);
        }
    }

    /// Counts a regular member's data as hidden by its own layer: a marker
    /// (not a `file`), or a file the merge left out.
    fn unplaced(&mut self, member: &Member, file: bool) {
        if let (Some(bytes), MemberKind::Regular) = (&mut self.bytes, member.kind) {
            bytes.unplaced(member.data.size, file);
        }
    }

    /// The name of node `id` (and its subtree's) left the tree.
    fn unnamed(&mut self, id: NodeId) {
        if let Some(bytes) = &mut self.bytes {
            bytes.unnamed(id, &self.nodes, &self.names);
        }
    }

    /// The per-layer counts of the `layers` layers applied, if kept.
    pub fn layer_bytes(&mut self, layers: usize) -> Vec<super::LayerBytes> {
        match &mut self.bytes {
            Some(bytes) => bytes.finish(layers, &self.nodes),
            None => Vec::new(),
        }
    }

    /// Removes `dir/name` with its subtree, if it exists; returns it.
    fn remove(&mut self, dir: &[&[u8]], name: &[u8]) -> Option<NodeId> {
        let parent = self.resolve_dir(dir, None).ok()?;
        if self.nodes[parent].kind() != NodeKind::Directory {
            return None;
        }
        let id = self.names.remove(parent, name)?;
        self.removed_by_layer.insert(joined(dir, name), id);
        self.unnamed(id);
        Some(id)
    }

    /// Hides every child the directory at `dir` has so far, if it exists,
    /// for an opaque marker inside it; returns them (dropping them is what
    /// clearing the directory costs). `dir` is the marker's parent, found
    /// as a whiteout's is, through symlinks: umoci and containerd resolve
    /// the parent of every member that way, so `bin/.wh..wh..opq` over
    /// `bin -> usr/bin` makes `usr/bin` opaque.
    fn make_opaque(&mut self, dir: &[&[u8]]) -> Vec<(Box<[u8]>, NodeId)> {
        match self.resolve_dir(dir, None) {
            Ok(id) => self.take_children(id),
            Err(_) => Vec::new(),
        }
    }

    /// [`Builder::make_opaque`] for a directory member that is opaque by
    /// its xattr: the member itself is at `dir`, so a symlink there is
    /// not followed but replaced, and has no children to hide.
    fn make_replaced_dir_opaque(&mut self, dir: &[&[u8]]) -> Vec<(Box<[u8]>, NodeId)> {
        let Some((name, parents)) = dir.split_last() else {
            return self.take_children(ROOT);
        };
        let Ok(parent) = self.resolve_dir(parents, None) else {
            return Vec::new();
        };
        match self.child(parent, name) {
            Some(id) => self.take_children(id),
            None => Vec::new(),
        }
    }

    /// A directory's children, in byte order of their names, removed.
    fn take_children(&mut self, id: NodeId) -> Vec<(Box<[u8]>, NodeId)> {
        let children = match self.nodes[id].kind() {
            NodeKind::Directory => self.names.take(id),
            _ => Vec::new(),
        };
        for &(_, child) in &children {
            self.unnamed(child);
        }
        children
    }

    /// Keeps what `member` removed from directory `dir` (each child by name
    /// and node), if removals are recorded; otherwise does nothing.
    fn record<'n>(
        &mut self,
        layer: u32,
        member: &Member,
        kind: RemovalKind,
        dir: &[&[u8]],
        removed: impl IntoIterator<Item = (&'n [u8], NodeId)>,
    ) {
        let Some(removals) = &mut self.removals else {
            return;
        };
        let (nodes, names) = (&self.nodes, &self.names);
        let hides = removed
            .into_iter()
            .map(|(name, id)| Hidden {
                path: joined(dir, name),
                kind: nodes[id].kind(),
                layer: nodes[id].layer(),
                entries: subtree_entries(nodes, names, id),
            })
            .collect();
        removals.push(Removal {
            layer,
            path: components(&member.path).join(&b'/'),
            kind,
            hides,
        });
    }

    /// Adds the member at `comps`, replacing what was there; a directory
    /// over a directory only updates its attributes and keeps the children.
    fn add(&mut self, layer: u32, member: &Member, comps: &[&[u8]]) {
        let Some((&name, parents)) = comps.split_last() else {
            if member.kind == MemberKind::Directory {
                self.set_attributes(ROOT, layer, member);
            } else {
                self.warn(
                    layer,
                    member,
                    "the root of the tree can only be a directory",
                );
            }
            return;
        };
        if name.len() > NAME_MAX {
            return self.warn(layer, member, "the name is longer than 255 bytes");
        }
        let create = Create {
            layer,
            name_len: name.len(),
        };
        let parent = match self.resolve_dir(parents, Some(create)) {
            Ok(parent) => parent,
            Err(why) => return self.warn(layer, member, why.describe()),
        };
        let existing = self.child(parent, name);
        let id = match member.kind {
            MemberKind::Directory => {
                match existing.filter(|&id| self.nodes[id].kind() == NodeKind::Directory) {
                    Some(dir) => return self.set_attributes(dir, layer, member),
                    None => self.push_node(layer, member, NodeKind::Directory, (0, DIR_SIZE)),
                }
            }
            MemberKind::Hardlink => match self.hardlink_target(&member.link_target) {
                Ok(target) => target,
                Err(why) => return self.warn(layer, member, why),
            },
            MemberKind::Regular => {
                let data = (member.data.offset, member.data.size);
                let id = self.push_node(layer, member, NodeKind::File, data);
                if let Some(map) = &member.data.sparse {
                    // A sparse map is bounded far below 2^32 segments
                    // when it is parsed (`tar::sparse`).
                    let sparse = [
                        u32::try_from(self.segments.len()).unwrap_or(u32::MAX),
                        u32::try_from(map.len()).unwrap_or(u32::MAX),
                    ];
                    self.segments.extend(map.iter().map(|s| [s.offset, s.len]));
                    self.extra_mut(id).sparse = sparse;
                    self.nodes[id].set_flags(SPARSE);
                }
                id
            }
            MemberKind::Symlink => {
                let target = self.names.push_bytes(&member.link_target);
                let at = (target.start as u64, target.len as u64);
                self.push_node(layer, member, NodeKind::Symlink, at)
            }
            MemberKind::CharDevice => {
                let rdev = device(member);
                self.push_node(layer, member, NodeKind::CharDevice, (rdev, 0))
            }
            MemberKind::BlockDevice => {
                let rdev = device(member);
                self.push_node(layer, member, NodeKind::BlockDevice, (rdev, 0))
            }
            MemberKind::Fifo => self.push_node(layer, member, NodeKind::Fifo, (0, 0)),
        };
        let replaced = self.names.insert(parent, name, id);
        if let Some(bytes) = &mut self.bytes {
            bytes.named(id);
        }
        if let Some(replaced) = replaced {
            self.unnamed(replaced);
        }
    }

    /// The node a hardlink member names: an existing non-directory, found
    /// without following a symlink in the last component.
    fn hardlink_target(&mut self, raw: &[u8]) -> Result<NodeId, &'static str> {
        let comps = components(raw);
        let Some((name, parents)) = comps.split_last() else {
            return Err("hardlink to the root directory");
        };
        let found = match self.resolve_dir(parents, None) {
            Ok(parent) => self.child(parent, name),
            Err(_) => None,
        };
        match found.or_else(|| self.removed_by_layer.get(&comps.join(&b'/')).copied()) {
            Some(id) if self.nodes[id].kind() == NodeKind::Directory => {
                Err("hardlink to a directory")
            }
            Some(id) => Ok(id),
            None => Err("hardlink target does not exist"),
        }
    }

    /// Finds the directory at `comps`, following symlinks (inside the tree,
    /// `..` clamped at the root) as an unpacker extracting into a root would.
    /// With `create`, missing directories are made on the way, attributed to
    /// its layer, unless the path they would make, with the name to be
    /// placed, is longer than [`MAX_PATH`].
    fn resolve_dir(
        &mut self,
        comps: &[&[u8]],
        create: Option<Create>,
    ) -> Result<NodeId, Unresolved> {
        let mut owned: Vec<Vec<u8>>;
        let mut walk = self.walk(comps, create)?;
        let mut handled = comps.len();
        for _ in 0..MAX_SYMLINKS {
            match walk {
                Walk::Dir(id) => return Ok(id),
                Walk::Restart(path) => {
                    handled = handled.saturating_add(path.len());
                    if handled > MAX_RESOLVE_COMPONENTS {
                        return Err(Unresolved::PathTooLong);
                    }
                    owned = path;
                    let borrowed: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
                    walk = self.walk(&borrowed, create)?;
                }
            }
        }
        match walk {
            Walk::Dir(id) => Ok(id),
            Walk::Restart(_) => Err(Unresolved::SymlinkLoop),
        }
    }

    fn walk(&mut self, comps: &[&[u8]], create: Option<Create>) -> Result<Walk, Unresolved> {
        if let Some(create) = create {
            // Checked before anything is made, on the path as rewritten by
            // every symlink so far: each costs one pass over its components.
            let len = comps.iter().map(|c| c.len() + 1).sum::<usize>();
            if len.saturating_add(create.name_len) > MAX_PATH {
                return Err(Unresolved::PathOverMax);
            }
        }
        let mut cur = ROOT;
        for (i, &name) in comps.iter().enumerate() {
            cur = match self.child(cur, name) {
                Some(id) => match self.nodes[id].kind() {
                    NodeKind::Directory => id,
                    NodeKind::Symlink => {
                        let node = &self.nodes[id];
                        let target = self.names.span(Span {
                            start: usize::try_from(node.at).unwrap_or(usize::MAX),
                            len: usize::try_from(node.size).unwrap_or(usize::MAX),
                        });
                        if target.len() > MAX_FOLLOWED_TARGET {
                            return Err(Unresolved::TargetTooLong);
                        }
                        let mut path: Vec<&[u8]> = if is_absolute(target) {
                            Vec::new()
                        } else {
                            comps[..i].to_vec()
                        };
                        push_components(&mut path, target);
                        path.extend_from_slice(&comps[i + 1..]);
                        return Ok(Walk::Restart(
                            path.into_iter().map(<[u8]>::to_vec).collect(),
                        ));
                    }
                    // A member under a file, of its own layer or a lower
                    // one: umoci, containerd and GNU tar all fail on it
                    // ("not a directory"); the file is kept, the member
                    // left out.
                    NodeKind::File
                    | NodeKind::CharDevice
                    | NodeKind::BlockDevice
                    | NodeKind::Fifo => {
                        return Err(Unresolved::NotADirectory);
                    }
                },
                None => match create {
                    Some(_) if name.len() > NAME_MAX => return Err(Unresolved::NameTooLong),
                    Some(create) => self.implied_dir(cur, name, create.layer),
                    None => return Err(Unresolved::Missing),
                },
            };
        }
        Ok(Walk::Dir(cur))
    }

    /// Makes a directory that no member lists but a path goes through:
    /// 0755 and owned by root, as the common unpackers make it.
    fn implied_dir(&mut self, parent: NodeId, name: &[u8], layer: u32) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(implied_dir_node(layer));
        self.names.insert(parent, name, id);
        id
    }

    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match self.nodes[dir].kind() {
            NodeKind::Directory => self.names.get(dir, name),
            _ => None,
        }
    }

    /// A new node of `kind` for `member`, holding `(at, size)` (see
    /// [`Node`]).
    fn push_node(
        &mut self,
        layer: u32,
        member: &Member,
        kind: NodeKind,
        (at, size): (u64, u64),
    ) -> NodeId {
        let id = self.nodes.len();
        let mut node = implied_dir_node(layer);
        (node.at, node.size) = (at, size);
        node.layer_kind = pack_layer_kind(layer, kind);
        self.nodes.push(node);
        self.set_attributes(id, layer, member);
        id
    }

    fn set_attributes(&mut self, id: NodeId, layer: u32, member: &Member) {
        let kind = self.kind;
        let node = &mut self.nodes[id];
        node.mode = member.mode & 0o7777;
        node.uid = member.uid;
        node.gid = member.gid;
        node.mtime = member.mtime;
        node.mtime_nsec = member.mtime_nsec;
        node.set_layer(layer);
        let first = u32::try_from(self.xattrs.len()).unwrap_or(0);
        for (name, value) in member
            .xattrs
            .iter()
            .filter(|(name, _)| is_visible_xattr(name, kind))
        {
            let name = self.names.push_bytes(name);
            let value = self.names.push_bytes(value);
            self.xattrs.push([name, value]);
        }
        let count = u32::try_from(self.xattrs.len()).unwrap_or(0) - first;
        // Xattrs counts fit 32 bits in any tree that fits in memory (see
        // `Node::parent`).
        if count > 0 || self.nodes[id].extra != 0 {
            self.extra_mut(id).xattrs = [first, count];
        }
    }

    /// The node's [`Extra`], made if it has none.
    fn extra_mut(&mut self, id: NodeId) -> &mut Extra {
        if self.nodes[id].extra == 0 {
            self.extras.push(Extra::default());
            self.nodes[id].extra = u32::try_from(self.extras.len()).unwrap_or(0);
        }
        let index = self.nodes[id].extra as usize - 1;
        &mut self.extras[index]
    }

    fn warn(&mut self, layer: u32, member: &Member, problem: &'static str) {
        self.unplaced(member, true);
        self.warnings
            .push(MergeWarning::new(layer, &member.path, problem));
    }
}

/// `dir/name`, or `name` in the root.
fn joined(dir: &[&[u8]], name: &[u8]) -> Vec<u8> {
    let mut path = dir.join(&b'/');
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// How many names the subtree at `id` holds, `id` itself included.
fn subtree_entries(nodes: &[Node], names: &Names, id: NodeId) -> u64 {
    let mut count = 0;
    let mut todo = vec![id];
    while let Some(id) = todo.pop() {
        count += 1;
        if nodes[id].kind() == NodeKind::Directory {
            todo.extend(
                names
                    .children(id)
                    .map(|l| names.links[l as usize].node as NodeId),
            );
        }
    }
    count
}

/// A directory that no member lists but a path goes through: 0755 and
/// owned by root, as the common unpackers make it; also what every other
/// node starts from before its member's attributes are set.
fn implied_dir_node(layer: u32) -> Node {
    Node {
        mtime: 0,
        size: DIR_SIZE,
        at: 0,
        mode: IMPLIED_DIR_MODE,
        uid: 0,
        gid: 0,
        mtime_nsec: 0,
        nlink: 0,
        parent: 0,
        extra: 0,
        layer_kind: pack_layer_kind(layer, NodeKind::Directory),
    }
}

/// [`Node`]'s `layer_kind` of a node of `kind` from `layer`, without
/// flags. Layer numbers are below [`super::MAX_LAYERS`] (`Stack` refuses
/// more layers).
fn pack_layer_kind(layer: u32, kind: NodeKind) -> u32 {
    (layer << 8) | u32::from(kind_code(kind))
}

/// A device member's major (high 32 bits) and minor numbers, as a
/// device [`Node`] keeps them.
fn device(member: &Member) -> u64 {
    (u64::from(member.dev_major) << 32) | u64::from(member.dev_minor)
}
