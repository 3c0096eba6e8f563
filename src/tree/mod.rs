//! The merged, immutable tree of a layer stack.
//!
//! [`Tree::build`] applies layer indexes bottom to top under the whiteout
//! rules (see `whiteout.rs`), then freezes the result into flat arrays:
//! nodes numbered from 1 (the FUSE inode numbers, stable for the life of the
//! tree), directory entries sorted by name for binary-search lookups and
//! ordered listings, and one byte arena for names, link targets and xattrs.
//! Nothing changes after that, so readers share it without locks.
//!
//! # Paths stay inside the tree
//!
//! Whatever a layer says, every path is resolved inside the tree, never on
//! the host (nothing here touches the host's filesystem at all):
//!
//! - A member's name is normalised lexically (`path.rs`): `/abs/x`, `./x`,
//!   `a//x` and `../x` all name `x` below the root; `..` stops at the root.
//! - A parent that is a symlink is followed as containerd's unpacker
//!   follows it (securejoin, `RESOLVE_IN_ROOT`): the target is read relative
//!   to the link's directory, or to the tree's root when absolute, and `..`
//!   in it stops at the root too. So `up -> ../../..` in one layer and
//!   `up/escape` in the next puts `escape` at the root, and
//!   `bin -> usr/bin` then `bin/tool` puts `usr/bin/tool`. The last
//!   component of a member is never followed: the member replaces a symlink
//!   of that name.
//! - A hardlink names a node already in the tree, by the same rules, without
//!   following its last component; a hardlink to `../../etc/passwd` is a
//!   link to the tree's own `etc/passwd`, or to nothing.
//! - What cannot be placed is left out with a [`MergeWarning`]: a hardlink
//!   to nothing or to a directory, a path through a file (of any layer: the
//!   runtimes fail on it, the file stays), more than 40 symlinks on one
//!   path, a symlink target over 4095 bytes (`PATH_MAX`) met as a parent, a
//!   resolution of more than 4096 components, a path over 4095 bytes once
//!   symlinks are followed, and a name over 255 bytes (`NAME_MAX`), which
//!   no Linux filesystem can hold.
//! - Symlink targets themselves are kept and shown exactly as stored.

mod build;
mod bytes;
mod names;
pub mod path;
mod persist;
mod removal;
mod table;
#[cfg(test)]
mod tests;
mod walk;
mod whiteout;

use std::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::tar::{DataLayout, LayerIndex, Member, MemberKind, SparseSegment};
use build::{Builder, NodeId, ROOT};
pub use bytes::LayerBytes;
use names::{Link, NONE};
pub use persist::{TreeDecodeError, ALIGN as ENCODING_ALIGN};
pub use removal::{Hidden, Removal, RemovalKind};
pub use table::Backing;
use table::Table;
pub use whiteout::{
    classify, is_marker_name, is_tombstone_device, is_visible_xattr, whiteout_name, Action,
    LayerKind, OPAQUE_MARKER,
};

/// An inode number; the root is [`ROOT_INO`].
pub type Ino = u64;
/// The root directory's inode number.
pub const ROOT_INO: Ino = 1;
/// The size reported for directories, as on common disk filesystems.
const DIR_SIZE: u64 = 4096;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

impl NodeKind {
    /// The tar member kind that stores a node of this kind.
    pub fn member_kind(self) -> MemberKind {
        match self {
            NodeKind::Directory => MemberKind::Directory,
            NodeKind::File => MemberKind::Regular,
            NodeKind::Symlink => MemberKind::Symlink,
            NodeKind::CharDevice => MemberKind::CharDevice,
            NodeKind::BlockDevice => MemberKind::BlockDevice,
            NodeKind::Fifo => MemberKind::Fifo,
        }
    }
}

/// A member the merge could not place, and why; the tree is built without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeWarning {
    /// Index of the layer (0 = bottom).
    pub layer: u32,
    /// The member's path as stored in the layer, or its first
    /// [`MergeWarning::KEPT`] bytes if it is longer (see `path_len`).
    pub path: Vec<u8>,
    /// The length of the member's whole path.
    pub path_len: usize,
    /// What was wrong.
    pub problem: &'static str,
}

impl MergeWarning {
    /// Bytes of a path a warning keeps (`PATH_MAX`): any path the tree can
    /// hold is kept whole, but one left out for its length may be hundreds
    /// of kilobytes, and its warning would otherwise be a second copy.
    pub const KEPT: usize = 4096;

    /// A warning about the member at `path` of `layer`.
    pub fn new(layer: u32, path: &[u8], problem: &'static str) -> MergeWarning {
        MergeWarning {
            layer,
            path: path[..path.len().min(Self::KEPT)].to_vec(),
            path_len: path.len(),
            problem,
        }
    }
}

impl fmt::Display for MergeWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = String::from_utf8_lossy(&self.path);
        if self.path_len > self.path.len() {
            write!(f, "{path}... ({} bytes)", self.path_len)?;
        } else {
            write!(f, "{path}")?;
        }
        write!(f, ": skipped: {}", self.problem)
    }
}

/// A range of the tree's byte arena.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Span {
    start: usize,
    len: usize,
}

/// What a node holds beyond its attributes, as [`Node::payload`] reads it.
#[derive(Clone, Copy, Debug)]
enum Payload {
    /// The node's entries are `entries[first..first + count]`.
    Dir { first: usize, count: usize },
    /// Where the bytes lie in layer `layer` (a sparse file's map is in its
    /// [`Extra`]).
    File { offset: u64, size: u64 },
    /// The target's bytes in the arena.
    Symlink(Span),
    /// Devices and fifos.
    Special,
}

/// One file, directory or other node of the merged tree.
///
/// A plain record of numbers (`repr(C)`, no padding), so that a stored
/// tree's nodes are read in place from the cache entry (`table.rs`); what
/// is not a number is read through a method. What few nodes have
/// (xattrs, a sparse map) is in an [`Extra`], so that the others do not
/// carry it: a remount reads every node's bytes from disk.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Node {
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Size in bytes (a symlink's is its target's length).
    pub size: u64,
    /// A directory's first entry (low 32 bits) and number of entries
    /// (high 32 bits), a file's data offset, the start of a symlink's
    /// target in the arena, a device's major (high 32 bits) and minor
    /// number; 0 for a fifo.
    at: u64,
    /// Permission bits, with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Number of names: for directories 2 plus the subdirectories.
    pub nlink: u32,
    /// The inode of the directory holding this node; see [`Node::parent`].
    /// 32 bits, like `extra` and a directory's entries: a tree cannot hold
    /// 2^32 nodes in memory, and the bytes saved are per node (56 bytes a
    /// node, at a million entries the larger part of a mount's memory).
    parent: u32,
    /// 1 + the index of this node's [`Extra`] in `Tree::extras`; 0 if it
    /// has none.
    extra: u32,
    /// The layer that provided this node (0 = bottom) above 8 bits of
    /// [`NodeKind`] (as `kind_code` numbers it, low 4 bits) and flags
    /// ([`SPARSE`], high 4 bits); see [`MAX_LAYERS`].
    layer_kind: u32,
}

/// [`Node`]'s flags: the file has a sparse map (possibly empty).
const SPARSE: u8 = 1;

/// Most layers a tree can have: a node keeps its layer's number in 24
/// bits. Each layer is an open file and an index in memory, so no stack
/// comes near.
pub const MAX_LAYERS: usize = 1 << 24;

/// What a node has beyond [`Node`]'s numbers, when it has any.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Extra {
    /// First and count in `Tree::xattrs`.
    xattrs: [u32; 2],
    /// A sparse file's first segment and count in `Tree::segments`.
    sparse: [u32; 2],
}

impl Node {
    /// What it is.
    pub fn kind(&self) -> NodeKind {
        kind_of(self.kind_bits()).unwrap_or(NodeKind::Fifo)
    }

    /// The layer that provided this node (0 = bottom).
    pub fn layer(&self) -> u32 {
        self.layer_kind >> 8
    }

    /// Device major and minor numbers (0 for other kinds).
    pub fn rdev(&self) -> (u32, u32) {
        match self.kind() {
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                ((self.at >> 32) as u32, self.at as u32)
            }
            _ => (0, 0),
        }
    }

    fn kind_bits(&self) -> u8 {
        (self.layer_kind & 0x0f) as u8
    }

    fn flags(&self) -> u8 {
        ((self.layer_kind >> 4) & 0x0f) as u8
    }

    fn set_layer(&mut self, layer: u32) {
        self.layer_kind = (layer << 8) | (self.layer_kind & 0xff);
    }

    fn set_flags(&mut self, flags: u8) {
        self.layer_kind = (self.layer_kind & !0xf0) | (u32::from(flags & 0x0f) << 4);
    }

    /// The directory holding this node (the root's is the root); for a
    /// hardlinked file, the directory of its first name in listing order.
    pub fn parent(&self) -> Ino {
        Ino::from(self.parent)
    }

    fn payload(&self) -> Payload {
        let index = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        match self.kind() {
            NodeKind::Directory => Payload::Dir {
                first: index(self.at & 0xffff_ffff),
                count: index(self.at >> 32),
            },
            NodeKind::File => Payload::File {
                offset: self.at,
                size: self.size,
            },
            NodeKind::Symlink => Payload::Symlink(Span {
                start: index(self.at),
                len: index(self.size),
            }),
            NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Fifo => Payload::Special,
        }
    }
}

/// The code a node's kind is stored as; [`kind_of`] reads it back.
fn kind_code(kind: NodeKind) -> u8 {
    match kind {
        NodeKind::Directory => 0,
        NodeKind::File => 1,
        NodeKind::Symlink => 2,
        NodeKind::CharDevice => 3,
        NodeKind::BlockDevice => 4,
        NodeKind::Fifo => 5,
    }
}

fn kind_of(code: u8) -> Option<NodeKind> {
    Some(match code {
        0 => NodeKind::Directory,
        1 => NodeKind::File,
        2 => NodeKind::Symlink,
        3 => NodeKind::CharDevice,
        4 => NodeKind::BlockDevice,
        5 => NodeKind::Fifo,
        _ => return None,
    })
}

/// A name in a directory.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DirEntry {
    /// Where the name starts in the arena (low 56 bits) and its length
    /// (high 8 bits: a name is at most `NAME_MAX`, 255 bytes).
    name: u64,
    /// The node the name refers to.
    pub ino: Ino,
}

impl DirEntry {
    fn name_span(&self) -> Span {
        Span {
            start: usize::try_from(self.name & NAME_START).unwrap_or(usize::MAX),
            len: (self.name >> 56) as usize,
        }
    }
}

/// The bits of [`DirEntry::name`] that hold the name's start.
const NAME_START: u64 = (1 << 56) - 1;

/// The merged tree; see the module docs.
#[derive(Debug)]
pub struct Tree {
    nodes: Table<Node>,
    extras: Table<Extra>,
    entries: Table<DirEntry>,
    /// Name and value of each extended attribute.
    xattrs: Table<[Span; 2]>,
    /// Offset and length of each sparse file's data regions.
    segments: Table<[u64; 2]>,
    bytes: Table<u8>,
    file_bytes: u64,
}

impl Tree {
    /// Merges tar layers' indexes, bottom first, into one tree. Members
    /// that cannot be placed (a hardlink to nothing, a path through a
    /// regular file) are left out and reported.
    ///
    /// The indexes are taken by value and each is dropped once merged, so
    /// that a layer's member list, the tree being built and the frozen tree
    /// are never all in memory at once.
    pub fn build(layers: impl IntoIterator<Item = LayerIndex>) -> (Tree, Vec<MergeWarning>) {
        let (tree, warnings, _) = merge(layers, false);
        (tree, warnings)
    }

    /// [`Tree::build`], also keeping what every whiteout, opaque marker,
    /// opaque directory and tombstone removed, in layer order and archive
    /// order within a layer (`layerfs ls --all`).
    pub fn build_recording(
        layers: impl IntoIterator<Item = LayerIndex>,
    ) -> (Tree, Vec<MergeWarning>, Vec<Removal>) {
        merge(layers, true)
    }

    /// How many nodes (inodes) the tree has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree has nothing but its root (never true: the root counts).
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 0
    }

    /// Total bytes of regular files, each inode counted once.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The node with inode number `ino`.
    pub fn node(&self, ino: Ino) -> Option<&Node> {
        let index = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.nodes.as_slice().get(index)
    }

    /// A directory's entries, sorted by name (empty for non-directories).
    pub fn entries(&self, dir: Ino) -> &[DirEntry] {
        match self.node(dir).map(Node::payload) {
            Some(Payload::Dir { first, count }) => first
                .checked_add(count)
                .and_then(|end| self.entries.as_slice().get(first..end))
                .unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The name of a directory entry.
    pub fn name(&self, entry: &DirEntry) -> &[u8] {
        self.span(entry.name_span())
    }

    /// Finds `name` in directory `dir`.
    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        let entries = self.entries(dir);
        entries
            .binary_search_by(|e| self.name(e).cmp(name))
            .ok()
            .map(|i| entries[i].ino)
    }

    /// Finds a path (components separated by `/`) from the root, following
    /// no symlinks.
    pub fn lookup_path(&self, path: &[u8]) -> Option<Ino> {
        path::components(path)
            .into_iter()
            .try_fold(ROOT_INO, |dir, name| self.lookup(dir, name))
    }

    /// A symlink's target, as stored in its layer.
    pub fn symlink_target(&self, ino: Ino) -> Option<&[u8]> {
        match self.node(ino)?.payload() {
            Payload::Symlink(span) => Some(self.span(span)),
            _ => None,
        }
    }

    /// Where a regular file's bytes lie in its layer (`Node::layer`).
    pub fn file_data(&self, ino: Ino) -> Option<DataLayout> {
        let node = self.node(ino)?;
        let Payload::File { offset, size } = node.payload() else {
            return None;
        };
        let sparse = (node.flags() & SPARSE != 0).then(|| {
            let [first, count] = self.extra(node).sparse;
            let (first, count) = (first as usize, count as usize);
            let segments = first
                .checked_add(count)
                .and_then(|end| self.segments.as_slice().get(first..end))
                .unwrap_or(&[]);
            segments
                .iter()
                .map(|&[offset, len]| SparseSegment { offset, len })
                .collect()
        });
        Some(DataLayout {
            offset,
            size,
            sparse,
        })
    }

    /// A node's [`Extra`] (all zeros if it has none).
    fn extra(&self, node: &Node) -> Extra {
        node.extra
            .checked_sub(1)
            .and_then(|index| self.extras.as_slice().get(index as usize))
            .copied()
            .unwrap_or_default()
    }

    /// Bytes the tree holds in memory: its arrays and arena (or the stored
    /// bytes they are read from in place). The figure behind "bytes of
    /// index per entry".
    pub fn memory_bytes(&self) -> usize {
        self.nodes.memory_bytes()
            + self.extras.memory_bytes()
            + self.entries.memory_bytes()
            + self.xattrs.memory_bytes()
            + self.segments.memory_bytes()
            + self.bytes.memory_bytes()
    }

    /// Whether the nodes are read in place from stored bytes (`table.rs`).
    #[cfg(test)]
    pub(crate) fn reads_in_place(&self) -> bool {
        matches!(self.nodes, Table::Shared { .. })
    }

    /// Whether any node has an extended attribute.
    pub fn has_xattrs(&self) -> bool {
        self.xattrs.len() != 0
    }

    /// A node's extended attributes, in the order the layer gave them.
    pub fn xattrs(&self, ino: Ino) -> impl Iterator<Item = (&[u8], &[u8])> {
        let [first, count] = self.node(ino).map_or([0, 0], |n| self.extra(n).xattrs);
        let (first, count) = (first as usize, count as usize);
        self.xattrs
            .as_slice()
            .get(first..first + count)
            .unwrap_or(&[])
            .iter()
            .map(|&[name, value]| (self.span(name), self.span(value)))
    }

    fn span(&self, span: Span) -> &[u8] {
        span.start
            .checked_add(span.len)
            .and_then(|end| self.bytes.as_slice().get(span.start..end))
            .unwrap_or(&[])
    }
}

fn merge(
    layers: impl IntoIterator<Item = LayerIndex>,
    record: bool,
) -> (Tree, Vec<MergeWarning>, Vec<Removal>) {
    let mut builder = TreeBuilder::new(record);
    for index in layers {
        builder.apply(index, LayerKind::Tar);
    }
    builder.finish()
}

/// A merge in progress, layers applied one at a time, bottom first, so
/// that each can be merged as soon as it is indexed and dropped.
pub struct TreeBuilder {
    builder: Builder,
    /// The number of the next layer to apply (0 = bottom).
    next: u32,
}

impl TreeBuilder {
    /// Nothing applied yet; `record` keeps what every whiteout, opaque
    /// marker and tombstone removed (see [`Tree::build_recording`]).
    pub fn new(record: bool) -> TreeBuilder {
        TreeBuilder {
            builder: Builder::new(record, LayerKind::Tar),
            next: 0,
        }
    }

    /// Applies the next layer up, read from a `kind` of layer, whole: its
    /// removals first, then what it adds. The index is consumed member by
    /// member.
    pub fn apply(&mut self, index: LayerIndex, kind: LayerKind) {
        self.builder.apply_layer(self.next, index, kind);
        self.next = self.next.saturating_add(1);
    }

    /// Each layer's file data, stored and hidden, bottom first, once the
    /// last layer is applied (empty unless recording).
    pub fn layer_bytes(&mut self) -> Vec<LayerBytes> {
        self.builder.layer_bytes(self.next as usize)
    }

    /// The merged tree, what could not be placed, and what was removed
    /// (empty unless recording).
    pub fn finish(mut self) -> (Tree, Vec<MergeWarning>, Vec<Removal>) {
        let warnings = std::mem::take(&mut self.builder.warnings);
        let removals = self.builder.removals.take().unwrap_or_default();
        (freeze(self.builder), warnings, removals)
    }
}

/// The bottom layer of a merge, taken in member by member while it is
/// still being indexed, so that the merge is done when the pass ends and
/// the layer's member list never exists whole. The result is the tree
/// [`TreeBuilder::apply`] makes of the whole layer.
pub struct BottomLayer(Builder);

impl BottomLayer {
    /// A new merge of a bottom layer read from a `kind` of layer; `record`
    /// as for [`TreeBuilder::new`].
    pub fn new(record: bool, kind: LayerKind) -> BottomLayer {
        BottomLayer(Builder::new(record, kind))
    }

    /// Adds the next members of the bottom layer, in archive order; each
    /// is dropped once added.
    pub fn push(&mut self, members: Vec<Member>) {
        for member in members {
            self.0.add_bottom_member(&member);
        }
    }

    /// The bottom layer is complete: the layers above it go on top.
    pub fn done(self) -> TreeBuilder {
        TreeBuilder {
            builder: self.0,
            next: 1,
        }
    }
}

/// Numbers the reachable nodes breadth first in name order and lays out
/// their entries, each directory's sorted by name. Nodes and links a later
/// layer removed are unreachable and dropped here.
///
/// Both arrays are reordered in place and the links become the entries in
/// their own memory, so that at no point does the tree exist twice: the
/// work arrays are 12 bytes per node and link.
fn freeze(builder: Builder) -> Tree {
    let Builder {
        mut nodes,
        names,
        extras,
        xattrs,
        segments,
        ..
    } = builder;
    let (bytes, mut links, next_link, heads) = names.into_parts();
    let name = |link: &Link| names::name_of(&bytes, link);
    // Per node: its inode number (0 until reached); per link: its place
    // among the entries (NONE until listed).
    let mut ino_of: Vec<u32> = vec![0; nodes.len()];
    let mut slot: Vec<u32> = vec![NONE; links.len()];
    let mut order: Vec<u32> = vec![ROOT as u32];
    ino_of[ROOT] = ROOT_INO as u32;
    nodes[ROOT].parent = ROOT_INO as u32;
    let mut listing: Vec<u32> = Vec::new();
    let mut entries = 0u32;
    let mut next = 0;
    while let Some(&id) = order.get(next) {
        let id = id as NodeId;
        next += 1;
        if nodes[id].kind() != NodeKind::Directory {
            continue;
        }
        listing.clear();
        let mut l = heads.get(id).copied().unwrap_or(NONE);
        while l != NONE {
            if links[l as usize].node != NONE {
                listing.push(l);
            }
            l = next_link[l as usize];
        }
        listing.sort_unstable_by(|&a, &b| name(&links[a as usize]).cmp(name(&links[b as usize])));
        let first = entries;
        let mut subdirs = 0;
        for &l in &listing {
            let child = links[l as usize].node as NodeId;
            if ino_of[child] == 0 {
                order.push(child as u32);
                ino_of[child] = order.len() as u32;
                nodes[child].parent = ino_of[id];
                nodes[child].nlink = 0;
                if nodes[child].kind() == NodeKind::Directory {
                    subdirs += 1;
                }
            }
            nodes[child].nlink += 1;
            slot[l as usize] = entries;
            entries += 1;
        }
        let node = &mut nodes[id];
        node.at = u64::from(first) | (u64::from(entries - first) << 32);
        // A directory has one name (hardlinks to directories are refused).
        node.nlink = 2 + subdirs;
    }
    let reachable = order.len();
    drop((order, heads, next_link, listing));
    // The entries: each listed link moved to its slot and turned into an
    // entry where it lies (same size: the vector's memory is reused).
    let listed = entries as usize;
    let mut spare = listed as u32;
    for s in &mut slot {
        if *s == NONE {
            (*s, spare) = (spare, spare + 1);
        }
    }
    permute(&mut links, &mut slot);
    drop(slot);
    links.truncate(listed);
    let mut entries: Vec<DirEntry> = links
        .into_iter()
        .map(|link| DirEntry {
            name: link.name,
            ino: Ino::from(ino_of[link.node as usize]),
        })
        .collect();
    entries.shrink_to_fit();
    // The nodes, in inode order; the unreachable ones after them, dropped.
    let mut spare = reachable as u32;
    for ino in &mut ino_of {
        *ino = match ino.checked_sub(1) {
            Some(index) => index,
            None => {
                spare += 1;
                spare - 1
            }
        };
    }
    permute(&mut nodes, &mut ino_of);
    drop(ino_of);
    nodes.truncate(reachable);
    nodes.shrink_to_fit();
    let file_bytes = nodes
        .iter()
        .filter(|node| node.kind() == NodeKind::File)
        .map(|node| node.size)
        .sum();
    let mut bytes = bytes;
    bytes.shrink_to_fit();
    let (mut extras, mut xattrs, mut segments) = (extras, xattrs, segments);
    extras.shrink_to_fit();
    xattrs.shrink_to_fit();
    segments.shrink_to_fit();
    Tree {
        nodes: Table::Owned(nodes),
        extras: Table::Owned(extras),
        entries: Table::Owned(entries),
        xattrs: Table::Owned(xattrs),
        segments: Table::Owned(segments),
        bytes: Table::Owned(bytes),
        file_bytes,
    }
}

/// Moves `items[i]` to `items[to[i]]` for every `i`, in place; `to` is a
/// permutation of the indexes (and is left as the identity).
fn permute<T>(items: &mut [T], to: &mut [u32]) {
    for i in 0..items.len().min(to.len()) {
        loop {
            let t = to[i] as usize;
            if t == i || t >= items.len() {
                break;
            }
            items.swap(i, t);
            to.swap(i, t);
        }
    }
}
