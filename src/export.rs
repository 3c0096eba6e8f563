//! `layerfs export`: the merged tree of a stack as one tar, streamed.
//!
//! The walk is the mount's tree, so an export and a mount of the same layers
//! always agree. Entries come depth first, each directory before what it
//! holds, names in byte order, the root first as `./`: the same layers give
//! the same bytes. A node with several names is written once, under the
//! name that comes first, and its other names follow as hardlinks to it,
//! whatever its kind (a hardlinked symlink or device stays one inode).
//! File data is copied through one buffer, so memory does not grow with
//! file sizes; only the paths of multiply-linked files are remembered.

use std::io::{self, Write};
use std::path::PathBuf;

use crate::stack::{Stack, StackError};
use crate::tar::{EntryHeader, FirstNames, TarWriter};
use crate::tree::{Ino, Node, NodeKind, Tree};

/// Bytes read from a layer per copy step.
const COPY_BUFFER: usize = 1 << 20;

/// What can go wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file's bytes could not be read from its layer.
    #[error("{} (layer {layer}, {}): {source}", layer_path.display(), String::from_utf8_lossy(path))]
    Read {
        /// The file's path in the tree.
        path: Vec<u8>,
        /// The layer file holding it.
        layer_path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        layer: u32,
        /// What went wrong.
        source: Box<StackError>,
    },
    /// The archive could not be written.
    #[error("writing the archive: {0}")]
    Write(#[from] io::Error),
}

/// Counts of what an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exported {
    /// Entries written, hardlinks included.
    pub entries: u64,
    /// Bytes of file data written.
    pub data_bytes: u64,
}

/// Writes the stack's merged tree into `writer` (which is then finished by
/// the caller). `progress` is told the file data bytes copied so far, after
/// each chunk.
pub fn export_tree<W: Write>(
    stack: &Stack,
    writer: &mut TarWriter<W>,
    progress: &mut dyn FnMut(u64),
) -> Result<Exported, ExportError> {
    let tree = stack.tree();
    let mut exporter = Exporter {
        stack,
        tree,
        writer,
        first_names: FirstNames::default(),
        buffer: vec![0; COPY_BUFFER],
        done: Exported::default(),
        progress,
    };
    tree.walk(|path, ino, node| exporter.entry(path, ino, node))?;
    Ok(exporter.done)
}

struct Exporter<'a, W: Write> {
    stack: &'a Stack,
    tree: &'a Tree,
    writer: &'a mut TarWriter<W>,
    /// The exported path of each multiply-linked file written so far.
    first_names: FirstNames<Ino>,
    buffer: Vec<u8>,
    done: Exported,
    progress: &'a mut dyn FnMut(u64),
}

impl<W: Write> Exporter<'_, W> {
    fn entry(&mut self, path: &[u8], ino: Ino, node: &Node) -> Result<(), ExportError> {
        let xattrs: Vec<(&[u8], &[u8])> = self.tree.xattrs(ino).collect();
        let mut header = EntryHeader {
            path,
            kind: node.kind().member_kind(),
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            mtime: node.mtime,
            mtime_nsec: node.mtime_nsec,
            size: 0,
            link_target: self.tree.symlink_target(ino).unwrap_or_default(),
            device: node.rdev(),
            xattrs: &xattrs,
        };
        self.done.entries += 1;
        if node.kind() == NodeKind::File {
            header.size = node.size;
        }
        let whole = self
            .first_names
            .header(self.writer, ino, u64::from(node.nlink), &header)?;
        if whole && node.kind() == NodeKind::File {
            self.copy_data(ino, node, path)?;
        }
        Ok(())
    }

    fn copy_data(&mut self, ino: Ino, node: &Node, path: &[u8]) -> Result<(), ExportError> {
        let mut pos = 0;
        while pos < node.size {
            let n = self
                .stack
                .read(ino, pos, &mut self.buffer)
                .map_err(|source| self.read_error(node, path, source))?;
            if n == 0 {
                let short = StackError::ShortFile {
                    expected: node.size,
                    got: pos,
                };
                return Err(self.read_error(node, path, short));
            }
            let chunk = self.buffer.get(..n).unwrap_or_default();
            self.writer.data(chunk)?;
            pos += n as u64;
            self.done.data_bytes += n as u64;
            (self.progress)(self.done.data_bytes);
        }
        Ok(())
    }

    fn read_error(&self, node: &Node, path: &[u8], source: StackError) -> ExportError {
        let layer_path = self
            .stack
            .layers()
            .get(node.layer as usize)
            .map(|l| l.path().to_path_buf())
            .unwrap_or_default();
        ExportError::Read {
            path: path.to_vec(),
            layer_path,
            layer: node.layer + 1,
            source: Box::new(source),
        }
    }
}
