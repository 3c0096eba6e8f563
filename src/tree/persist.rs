//! The frozen tree as bytes and back, so that mounting the same stack again
//! skips the merge (the index cache stores it; see `cache::IndexCache`).
//!
//! The layout is the tree's own arrays, record for record as they are in
//! memory, after a header of native-endian `u64`s:
//!
//! ```text
//! header:  layout marker | node record size | entry record size
//!          | file bytes | nodes | extras | entries | xattrs | segments
//!          | arena bytes
//! then:    nodes | extras | entries | xattrs | segments | arena
//! ```
//!
//! Every record is a multiple of 8 bytes, so when the encoding starts at
//! an 8-aligned offset of the stored bytes every array is aligned there
//! too, and a remount reads them in place (`table.rs`) instead of decoding
//! 200k nodes into fresh memory. The marker and record sizes refuse bytes
//! written by a build with another endianness, pointer width or layout.
//! Nothing is trusted: every node is checked on the way in (its kind, and
//! every index and range it holds inside the tree), and so are the extras,
//! entries and xattrs, so a damaged entry is an error, never a tree that points
//! outside itself.

use std::mem::size_of;
use std::sync::Arc;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::table::{Backing, Table};
use super::{kind_code, kind_of, DirEntry, Extra, Node, NodeKind, Payload, Span, Tree, SPARSE};

/// Why stored tree bytes were refused.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("malformed tree: {0}")]
pub struct TreeDecodeError(&'static str);

/// Native-endian, so that bytes of the other endianness do not match.
const LAYOUT_MARKER: u64 = 0x4c46_5452_4545_0001;
/// Fields of the header.
const HEADER_FIELDS: usize = 10;
/// What the encoding's start must be aligned to for the arrays to be read
/// in place: the largest alignment of any record.
pub const ALIGN: usize = 8;

/// Whether `first..first + count` lies within `0..len`.
fn fits(first: usize, count: usize, len: usize) -> bool {
    first.checked_add(count).is_some_and(|end| end <= len)
}

/// The `count` records at byte `start` of `backing`.
fn table<T: FromBytes + IntoBytes + Immutable + KnownLayout>(
    backing: &Backing,
    (start, count): (usize, usize),
) -> Result<Table<T>, TreeDecodeError> {
    Table::of_bytes(backing, start, count).ok_or(TreeDecodeError("truncated"))
}

impl Tree {
    /// Appends the tree's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let appended: Result<(), std::convert::Infallible> = self.encode_chunks(&mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        });
        let Ok(()) = appended;
    }

    /// The tree's encoding, handed to `write` a chunk of at most 1 MiB at
    /// a time, so that writing it out never holds a second copy of the
    /// tree; stops at the first error `write` returns.
    pub fn encode_chunks<E>(&self, write: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        const CHUNK: usize = 1 << 20;
        let header: [u64; HEADER_FIELDS] = [
            LAYOUT_MARKER,
            size_of::<Node>() as u64,
            size_of::<DirEntry>() as u64,
            self.file_bytes,
            self.nodes.len() as u64,
            self.extras.len() as u64,
            self.entries.len() as u64,
            self.xattrs.len() as u64,
            self.segments.len() as u64,
            self.bytes.len() as u64,
        ];
        write(header.as_bytes())?;
        for section in [
            self.nodes.as_slice().as_bytes(),
            self.extras.as_slice().as_bytes(),
            self.entries.as_slice().as_bytes(),
            self.xattrs.as_slice().as_bytes(),
            self.segments.as_slice().as_bytes(),
            self.bytes.as_slice(),
        ] {
            for chunk in section.chunks(CHUNK) {
                write(chunk)?;
            }
        }
        Ok(())
    }

    /// Decodes what [`Tree::encode`] wrote; all of `bytes` must be used.
    /// The tree gets its own copy of the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Tree, TreeDecodeError> {
        Tree::decode_shared(&(Arc::new(bytes.to_vec()) as Backing), 0)
    }

    /// Decodes what [`Tree::encode`] wrote from byte `start` of `backing`
    /// to its end, reading the arrays in place where `start` is aligned to
    /// [`ALIGN`] (and copying them where it is not). The tree keeps
    /// `backing` for as long as it lives.
    pub fn decode_shared(backing: &Backing, start: usize) -> Result<Tree, TreeDecodeError> {
        let bytes = (**backing).as_ref();
        let encoded = bytes.get(start..).ok_or(TreeDecodeError("truncated"))?;
        let (header, _) = <[u64; HEADER_FIELDS]>::read_from_prefix(encoded)
            .map_err(|_| TreeDecodeError("truncated"))?;
        let [marker, node_size, entry_size, file_bytes, nodes, extras, entries, xattrs, segments, arena] =
            header;
        if marker != LAYOUT_MARKER
            || node_size != size_of::<Node>() as u64
            || entry_size != size_of::<DirEntry>() as u64
        {
            return Err(TreeDecodeError(
                "stored by a build with another record layout",
            ));
        }
        let mut at = start + size_of::<[u64; HEADER_FIELDS]>();
        let mut next = |count: u64, size: usize| {
            let count = usize::try_from(count).ok()?;
            let section = at;
            at = count.checked_mul(size)?.checked_add(at)?;
            (at <= bytes.len()).then_some((section, count))
        };
        let too_long = TreeDecodeError("count larger than the data");
        let nodes = next(nodes, size_of::<Node>()).ok_or(too_long)?;
        let extras = next(extras, size_of::<Extra>()).ok_or(too_long)?;
        let entries = next(entries, size_of::<DirEntry>()).ok_or(too_long)?;
        let xattrs = next(xattrs, size_of::<[Span; 2]>()).ok_or(too_long)?;
        let segments = next(segments, size_of::<[u64; 2]>()).ok_or(too_long)?;
        let arena = next(arena, 1).ok_or(too_long)?;
        if at != bytes.len() {
            return Err(TreeDecodeError("trailing bytes"));
        }
        let tree = Tree {
            nodes: table(backing, nodes)?,
            extras: table(backing, extras)?,
            entries: table(backing, entries)?,
            xattrs: table(backing, xattrs)?,
            segments: table(backing, segments)?,
            bytes: table(backing, arena)?,
            file_bytes,
        };
        tree.check()?;
        Ok(tree)
    }

    /// Checks that every node, entry and xattr stays inside the tree, and
    /// that its directories form a tree: the records on another core while
    /// this one follows the directories (each check stays in bounds on its
    /// own, whatever the others find).
    fn check(&self) -> Result<(), TreeDecodeError> {
        let (records, shape) = std::thread::scope(|scope| {
            let records = scope.spawn(|| {
                self.check_nodes()?;
                self.check_extras()?;
                self.check_entries()?;
                self.check_xattrs()
            });
            let shape = self.check_shape();
            let records = records
                .join()
                .unwrap_or(Err(TreeDecodeError("checking thread panicked")));
            (records, shape)
        });
        records?;
        shape
    }

    fn check_nodes(&self) -> Result<(), TreeDecodeError> {
        for node in self.nodes.as_slice() {
            let kind = kind_of(node.kind_bits()).ok_or(TreeDecodeError("unknown node kind"))?;
            let flags = node.flags();
            if flags & !SPARSE != 0 || (flags != 0 && kind != NodeKind::File) {
                return Err(TreeDecodeError("unknown node flags"));
            }
            let payload_fits = match node.payload() {
                Payload::Dir { first, count } => fits(first, count, self.entries.len()),
                Payload::Symlink(span) => self.in_arena(span),
                Payload::File { .. } | Payload::Special => true,
            };
            if !payload_fits {
                return Err(TreeDecodeError("payload out of range"));
            }
            if !self.is_node(u64::from(node.parent)) {
                return Err(TreeDecodeError("parent out of range"));
            }
            if node.extra as usize > self.extras.len() {
                return Err(TreeDecodeError("extra out of range"));
            }
        }
        Ok(())
    }

    fn check_extras(&self) -> Result<(), TreeDecodeError> {
        let valid = |extra: &Extra| {
            let [xattr_first, xattr_count] = extra.xattrs;
            let [sparse_first, sparse_count] = extra.sparse;
            fits(
                xattr_first as usize,
                xattr_count as usize,
                self.xattrs.len(),
            ) && fits(
                sparse_first as usize,
                sparse_count as usize,
                self.segments.len(),
            )
        };
        if self.extras.as_slice().iter().all(valid) {
            Ok(())
        } else {
            Err(TreeDecodeError("xattrs or sparse map out of range"))
        }
    }

    fn check_entries(&self) -> Result<(), TreeDecodeError> {
        let valid = |e: &DirEntry| self.in_arena(e.name_span()) && self.is_node(e.ino);
        if self.entries.as_slice().iter().all(valid) {
            Ok(())
        } else {
            Err(TreeDecodeError("entry out of range"))
        }
    }

    fn check_xattrs(&self) -> Result<(), TreeDecodeError> {
        let valid = |&[name, value]: &[Span; 2]| self.in_arena(name) && self.in_arena(value);
        if self.xattrs.as_slice().iter().all(valid) {
            Ok(())
        } else {
            Err(TreeDecodeError("xattr out of range"))
        }
    }

    fn in_arena(&self, span: Span) -> bool {
        span.start
            .checked_add(span.len)
            .is_some_and(|end| end <= self.bytes.len())
    }

    fn is_node(&self, ino: u64) -> bool {
        ino >= 1 && ino <= self.nodes.len() as u64
    }

    /// Checks that directories form a tree: each is reached once from the
    /// root, through its own parent, so no walk can loop.
    fn check_shape(&self) -> Result<(), TreeDecodeError> {
        // Each table once, not per lookup: this visits every entry.
        let (nodes, entries) = (self.nodes.as_slice(), self.entries.as_slice());
        let node = |ino: u64| nodes.get(usize::try_from(ino.checked_sub(1)?).ok()?);
        let directory = kind_code(NodeKind::Directory);
        if node(super::ROOT_INO).map(Node::kind_bits) != Some(directory) {
            return Err(TreeDecodeError("the root is not a directory"));
        }
        let mut seen = vec![false; nodes.len()];
        seen[0] = true;
        let mut todo = vec![super::ROOT_INO];
        while let Some(dir) = todo.pop() {
            let Some(Payload::Dir { first, count }) = node(dir).map(Node::payload) else {
                continue;
            };
            let listed = first
                .checked_add(count)
                .and_then(|end| entries.get(first..end))
                .ok_or(TreeDecodeError("entries out of range"))?;
            for entry in listed {
                let Some(child) = node(entry.ino) else {
                    return Err(TreeDecodeError("entry out of range"));
                };
                if child.kind_bits() != directory {
                    continue;
                }
                let index = (entry.ino - 1) as usize;
                if seen[index] || child.parent() != dir {
                    return Err(TreeDecodeError("directories do not form a tree"));
                }
                seen[index] = true;
                todo.push(entry.ino);
            }
        }
        Ok(())
    }
}
