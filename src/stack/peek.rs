//! The members in the head of a layer, read without the rest of it
//! (`ls --peek`).

use std::path::Path;
use std::sync::Arc;

use crate::source::{LayerHead, SourceError};
use crate::tar::{self, LayerIndex};

use super::{LayerSpec, StackError};

/// What the head of one layer file holds: see [`peek_layer`].
#[derive(Debug)]
pub struct LayerPeek {
    /// The members whose headers lie in the head, in archive order.
    pub index: LayerIndex,
    /// Whether the end-of-archive marker was read: no member is missing.
    pub complete: bool,
    /// Bytes of the layer file read (at most the limit asked for).
    pub bytes_read: u64,
    /// The size of the layer file.
    pub layer_bytes: u64,
}

/// Lists the members of layer file `path` (1-based `number`, for messages)
/// that its first `limit` bytes hold, compressed or not, without reading a
/// byte more (`layerfs ls --peek`). The index cache is neither used nor
/// filled: a partial index must never stand in for a whole one.
pub fn peek_layer(path: &Path, number: usize, limit: u64) -> Result<LayerPeek, StackError> {
    peek_head(LayerHead::open(path, limit)?, path, number)
}

/// [`peek_layer`] of any layer: a file's, or a remote blob's, of which
/// only the first `limit` bytes are fetched. A directory has no head.
/// An eStargz layer's TOC entry and landmarks are left out, as from its
/// index.
pub fn peek_spec(spec: &LayerSpec, number: usize, limit: u64) -> Result<LayerPeek, StackError> {
    let mut peek = peek_any(spec, number, limit)?;
    if let Some(toc) = &spec.toc {
        peek.index.members.retain(|m| !toc.hides(&m.path));
    }
    Ok(peek)
}

fn peek_any(spec: &LayerSpec, number: usize, limit: u64) -> Result<LayerPeek, StackError> {
    match &spec.remote {
        Some(remote) => {
            let head = LayerHead::of_blob(Arc::clone(&remote.fetch), limit)?;
            peek_head(head, &spec.path, number)
        }
        None if spec.directory => Err(StackError::Source(SourceError::NotALayer {
            path: spec.path.clone(),
            reason: "is a directory; --peek reads the head of a layer file".into(),
        })),
        None => peek_layer(&spec.path, number, limit),
    }
}

fn peek_head(mut head: LayerHead, path: &Path, number: usize) -> Result<LayerPeek, StackError> {
    let prefix = tar::index_prefix(&mut head).map_err(|source| StackError::Index {
        path: path.to_path_buf(),
        number,
        source,
    })?;
    Ok(LayerPeek {
        index: prefix.index,
        complete: prefix.complete,
        bytes_read: head.bytes_read(),
        layer_bytes: head.file_len(),
    })
}
