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
//! A file a layer stored sparse is written sparse (`TarWriter::sparse_header`):
//! only its data regions (widened to whole blocks) are read and written, so
//! its holes cost neither reading nor archive bytes.

use std::io::{self, Write};
use std::path::PathBuf;

use crate::stack::{Stack, StackError};
use crate::tar::{archived_regions, EntryHeader, FirstNames, SparseSegment, TarWriter};
use crate::tree::{Ino, Node, NodeKind, Tree};

/// Bytes read from a layer per copy step.
pub(crate) const COPY_BUFFER: usize = 1 << 20;

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
    /// Bytes of file data written (a sparse file's data regions only).
    pub data_bytes: u64,
}

/// Writes the stack's merged tree into `writer` (which is then finished by
/// the caller). `progress` is told the bytes of files done so far, after
/// each chunk, holes included, so that it ends at [`Tree::file_bytes`].
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
        files_done: 0,
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
    /// File bytes done, holes included: what `progress` is told.
    files_done: u64,
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
        if node.kind() != NodeKind::File {
            self.first_names
                .header(self.writer, ino, u64::from(node.nlink), &header)?;
            return Ok(());
        }
        header.size = node.size;
        let segments = self
            .tree
            .file_data(ino)
            .and_then(|data| data.sparse)
            .map(|segments| archived_regions(&segments, node.size));
        let nlink = u64::from(node.nlink);
        let whole = match &segments {
            Some(segments) => {
                self.first_names
                    .sparse_header(self.writer, ino, nlink, &header, segments)?
            }
            None => self.first_names.header(self.writer, ino, nlink, &header)?,
        };
        if !whole {
            return Ok(());
        }
        match &segments {
            Some(segments) => {
                for segment in segments.iter() {
                    self.copy_data(ino, node, path, segment)?;
                }
            }
            None => {
                let all = SparseSegment {
                    offset: 0,
                    len: node.size,
                };
                self.copy_data(ino, node, path, &all)?;
            }
        }
        self.files_done += node.size;
        (self.progress)(self.files_done);
        Ok(())
    }

    /// Copies the file's bytes in `range` into the archive.
    fn copy_data(
        &mut self,
        ino: Ino,
        node: &Node,
        path: &[u8],
        range: &SparseSegment,
    ) -> Result<(), ExportError> {
        let writer = &mut *self.writer;
        let done = &mut self.done;
        let progress = &mut *self.progress;
        let files_done = self.files_done;
        let mut pos = range.offset;
        let file = FileRef { ino, node, path };
        copy_range(self.stack, &file, range, &mut self.buffer, &mut |chunk| {
            writer.data(chunk)?;
            pos += chunk.len() as u64;
            done.data_bytes += chunk.len() as u64;
            progress(files_done + pos);
            Ok(())
        })
    }
}

/// A regular file of the tree, as the readers below name it in errors.
pub(crate) struct FileRef<'a> {
    /// Its inode.
    pub ino: Ino,
    /// Its node.
    pub node: &'a Node,
    /// Its path in the tree.
    pub path: &'a [u8],
}

/// Reads the file's bytes in `range` through the stack (which fetches
/// lazily: only those bytes of its layer are read) into `sink`, one
/// `buffer` at a time. Shared by `export`, `cat` and `get`, so that a file
/// is read the same way wherever it goes; a sink's error is a
/// [`ExportError::Write`].
pub(crate) fn copy_range(
    stack: &Stack,
    file: &FileRef<'_>,
    range: &SparseSegment,
    buffer: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), ExportError> {
    let end = range.offset.saturating_add(range.len);
    let mut pos = range.offset;
    while pos < end {
        let want = usize::try_from(end - pos).map_or(buffer.len(), |left| left.min(buffer.len()));
        let chunk = buffer.get_mut(..want).unwrap_or_default();
        let n = stack
            .read(file.ino, pos, chunk)
            .map_err(|source| read_error(stack, file, source))?;
        if n == 0 {
            let short = StackError::ShortFile {
                expected: file.node.size,
                got: pos,
            };
            return Err(read_error(stack, file, short));
        }
        sink(chunk.get(..n).unwrap_or_default())?;
        pos += n as u64;
    }
    Ok(())
}

fn read_error(stack: &Stack, file: &FileRef<'_>, source: StackError) -> ExportError {
    let layer_path = stack
        .layers()
        .get(file.node.layer() as usize)
        .map(|l| l.path().to_path_buf())
        .unwrap_or_default();
    ExportError::Read {
        path: file.path.to_vec(),
        layer_path,
        layer: file.node.layer() + 1,
        source: Box::new(source),
    }
}
