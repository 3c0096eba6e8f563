//! The frozen tree as bytes and back, so that mounting the same stack again
//! skips the merge (the index cache stores it; see `cache::IndexCache`).
//!
//! The layout is the tree's own flat arrays in fixed-width little-endian
//! fields: decoding is a few sequential copies. Every index and range is
//! checked on the way in, so a damaged entry is an error, never a tree that
//! points outside itself.

use super::{DirEntry, Node, NodeKind, Payload, Span, Tree};
use crate::tar::{DataLayout, SparseSegment};

/// Why stored tree bytes were refused.
#[derive(Debug, thiserror::Error)]
#[error("malformed tree: {0}")]
pub struct TreeDecodeError(&'static str);

impl Tree {
    /// Appends the tree's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let appended: Result<(), std::convert::Infallible> = self.encode_chunks(&mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        });
        let Ok(()) = appended;
    }

    /// The tree's encoding, handed to `write` a chunk of about 1 MiB at a
    /// time, so that writing it out never holds a second copy of the tree
    /// (the encoding is about as large as the tree); stops at the first
    /// error `write` returns.
    pub fn encode_chunks<E>(&self, write: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        const CHUNK: usize = 1 << 20;
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        let mut flush = |buf: &mut Vec<u8>, at_least: usize| {
            if buf.len() >= at_least {
                write(buf)?;
                buf.clear();
            }
            Ok(())
        };
        let out = &mut buf;
        put64(out, self.file_bytes);
        put64(out, self.nodes.len() as u64);
        for node in &self.nodes {
            flush(out, CHUNK)?;
            out.push(kind_code(node.kind));
            for v in [node.mode, node.uid, node.gid] {
                put32(out, v);
            }
            put64(out, node.mtime as u64);
            for v in [node.mtime_nsec, node.nlink] {
                put32(out, v);
            }
            put64(out, node.size);
            for v in [
                node.rdev.0,
                node.rdev.1,
                node.layer,
                node.parent,
                node.xattrs.0,
                node.xattrs.1,
            ] {
                put32(out, v);
            }
            match &node.payload {
                Payload::Dir { first, count } => {
                    out.push(0);
                    put64(out, *first as u64);
                    put64(out, *count as u64);
                }
                Payload::File(data) => {
                    out.push(1);
                    put64(out, data.offset);
                    put64(out, data.size);
                    let segments = data.sparse.as_deref().unwrap_or(&[]);
                    out.push(u8::from(data.sparse.is_some()));
                    put64(out, segments.len() as u64);
                    for s in segments {
                        put64(out, s.offset);
                        put64(out, s.len);
                    }
                }
                Payload::Symlink(span) => {
                    out.push(2);
                    put_span(out, *span);
                }
                Payload::Special => out.push(3),
            }
        }
        put64(out, self.entries.len() as u64);
        for entry in &self.entries {
            flush(out, CHUNK)?;
            put_span(out, entry.name);
            put64(out, entry.ino);
        }
        put64(out, self.xattrs.len() as u64);
        for (name, value) in &self.xattrs {
            flush(out, CHUNK)?;
            put_span(out, *name);
            put_span(out, *value);
        }
        put64(out, self.bytes.len() as u64);
        flush(out, 1)?;
        for chunk in self.bytes.chunks(CHUNK) {
            write(chunk)?;
        }
        Ok(())
    }

    /// Decodes what [`Tree::encode`] wrote; all of `bytes` must be used.
    pub fn decode(bytes: &[u8]) -> Result<Tree, TreeDecodeError> {
        let mut r = Reader(bytes);
        let file_bytes = r.u64()?;
        let node_count = r.count(60)?;
        let mut nodes = Vec::with_capacity(node_count);
        for _ in 0..node_count {
            let kind = kind_of(r.u8()?)?;
            let (mode, uid, gid) = (r.u32()?, r.u32()?, r.u32()?);
            let mtime = r.u64()? as i64;
            let (mtime_nsec, nlink) = (r.u32()?, r.u32()?);
            let size = r.u64()?;
            let rdev = (r.u32()?, r.u32()?);
            let (layer, parent) = (r.u32()?, r.u32()?);
            let xattrs = (r.u32()?, r.u32()?);
            let payload = match r.u8()? {
                0 => Payload::Dir {
                    first: r.usize()?,
                    count: r.usize()?,
                },
                1 => {
                    let (offset, size) = (r.u64()?, r.u64()?);
                    let is_sparse = r.u8()? != 0;
                    let count = r.count(16)?;
                    let mut segments = Vec::with_capacity(count);
                    for _ in 0..count {
                        segments.push(SparseSegment {
                            offset: r.u64()?,
                            len: r.u64()?,
                        });
                    }
                    Payload::File(DataLayout {
                        offset,
                        size,
                        sparse: is_sparse.then(|| segments.into_boxed_slice()),
                    })
                }
                2 => Payload::Symlink(r.span()?),
                3 => Payload::Special,
                _ => return Err(TreeDecodeError("unknown payload")),
            };
            nodes.push(Node {
                kind,
                mode,
                uid,
                gid,
                mtime,
                mtime_nsec,
                nlink,
                size,
                rdev,
                layer,
                parent,
                payload,
                xattrs,
            });
        }
        let entry_count = r.count(24)?;
        let mut entries = Vec::with_capacity(entry_count);
        for _ in 0..entry_count {
            entries.push(DirEntry {
                name: r.span()?,
                ino: r.u64()?,
            });
        }
        let xattr_count = r.count(32)?;
        let mut xattrs = Vec::with_capacity(xattr_count);
        for _ in 0..xattr_count {
            xattrs.push((r.span()?, r.span()?));
        }
        let byte_count = r.count(1)?;
        let arena = r.take(byte_count)?.to_vec();
        if !r.0.is_empty() {
            return Err(TreeDecodeError("trailing bytes"));
        }
        let tree = Tree {
            nodes,
            entries,
            xattrs,
            bytes: arena,
            file_bytes,
        };
        tree.check()?;
        Ok(tree)
    }

    /// Checks that every index and range stays inside the tree.
    fn check(&self) -> Result<(), TreeDecodeError> {
        let in_arena = |s: Span| {
            s.start
                .checked_add(s.len)
                .is_some_and(|end| end <= self.bytes.len())
        };
        let is_node = |ino: u64| ino >= 1 && ino <= self.nodes.len() as u64;
        if self.nodes.first().map(|n| n.kind) != Some(NodeKind::Directory) {
            return Err(TreeDecodeError("the root is not a directory"));
        }
        for node in &self.nodes {
            if !is_node(u64::from(node.parent)) {
                return Err(TreeDecodeError("parent out of range"));
            }
            let (first, count) = (node.xattrs.0 as usize, node.xattrs.1 as usize);
            if first
                .checked_add(count)
                .is_none_or(|end| end > self.xattrs.len())
            {
                return Err(TreeDecodeError("xattrs out of range"));
            }
            let fits = match &node.payload {
                Payload::Dir { first, count } => {
                    node.kind == NodeKind::Directory
                        && first
                            .checked_add(*count)
                            .is_some_and(|e| e <= self.entries.len())
                }
                Payload::File(_) => node.kind == NodeKind::File,
                Payload::Symlink(span) => node.kind == NodeKind::Symlink && in_arena(*span),
                Payload::Special => !matches!(
                    node.kind,
                    NodeKind::Directory | NodeKind::File | NodeKind::Symlink
                ),
            };
            if !fits {
                return Err(TreeDecodeError("payload does not fit the node"));
            }
        }
        if !self
            .entries
            .iter()
            .all(|e| in_arena(e.name) && is_node(e.ino))
        {
            return Err(TreeDecodeError("entry out of range"));
        }
        if !self.xattrs.iter().all(|&(n, v)| in_arena(n) && in_arena(v)) {
            return Err(TreeDecodeError("xattr out of range"));
        }
        self.check_shape()
    }

    /// Checks that directories form a tree: each is reached once from the
    /// root, through its own parent, so no walk can loop.
    fn check_shape(&self) -> Result<(), TreeDecodeError> {
        let mut seen = vec![false; self.nodes.len()];
        seen[0] = true;
        let mut todo = vec![super::ROOT_INO];
        while let Some(dir) = todo.pop() {
            for entry in self.entries(dir) {
                let Some(node) = self.node(entry.ino) else {
                    return Err(TreeDecodeError("entry out of range"));
                };
                if node.kind != NodeKind::Directory {
                    continue;
                }
                let index = (entry.ino - 1) as usize;
                if seen[index] || node.parent() != dir {
                    return Err(TreeDecodeError("directories do not form a tree"));
                }
                seen[index] = true;
                todo.push(entry.ino);
            }
        }
        Ok(())
    }
}

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

fn kind_of(code: u8) -> Result<NodeKind, TreeDecodeError> {
    Ok(match code {
        0 => NodeKind::Directory,
        1 => NodeKind::File,
        2 => NodeKind::Symlink,
        3 => NodeKind::CharDevice,
        4 => NodeKind::BlockDevice,
        5 => NodeKind::Fifo,
        _ => return Err(TreeDecodeError("unknown node kind")),
    })
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_span(out: &mut Vec<u8>, span: Span) {
    put64(out, span.start as u64);
    put64(out, span.len as u64);
}

/// A cursor over the encoding that fails instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TreeDecodeError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(TreeDecodeError("truncated"))?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TreeDecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, TreeDecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, TreeDecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, TreeDecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn usize(&mut self) -> Result<usize, TreeDecodeError> {
        usize::try_from(self.u64()?).map_err(|_| TreeDecodeError("number too large"))
    }

    /// A count of items of at least `min_bytes` each: no more than the
    /// bytes left could hold, so a bad count cannot make a huge allocation.
    fn count(&mut self, min_bytes: usize) -> Result<usize, TreeDecodeError> {
        let n = self.usize()?;
        if n > self.0.len() / min_bytes.max(1) {
            return Err(TreeDecodeError("count larger than the data"));
        }
        Ok(n)
    }

    fn span(&mut self) -> Result<Span, TreeDecodeError> {
        Ok(Span {
            start: self.usize()?,
            len: self.usize()?,
        })
    }
}
