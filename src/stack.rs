//! A list of layer files, opened, indexed and merged: what every front end
//! (the FUSE server, and later export and listing) serves from.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::source::{LayerSource, SourceError};
use crate::tar::{self, LayerIndex, TarError};
use crate::tree::{Ino, NodeKind, Tree};

/// What can go wrong while opening a stack or reading from it.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// No layer files were given.
    #[error("no layers given")]
    NoLayers,
    /// A layer file could not be opened or read, or is not a layer.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A layer's tar stream is damaged or not a tar.
    #[error("{} (layer {number}): {source}", path.display())]
    Index {
        /// The layer file.
        path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        number: usize,
        /// What the tar parser found.
        source: TarError,
    },
    /// A read asked for the contents of something that is not a regular file.
    #[error("inode {0} is not a regular file")]
    NotAFile(Ino),
}

/// The layers and their merged tree.
#[derive(Debug)]
pub struct Stack {
    layers: Vec<LayerSource>,
    tree: Tree,
}

impl Stack {
    /// Opens the layer files (bottom first), indexes them, several at once,
    /// and merges them. Every file is checked before any work is shared, so a
    /// bad layer is reported without indexing the others.
    pub fn open(paths: &[PathBuf]) -> Result<Stack, StackError> {
        if paths.is_empty() {
            return Err(StackError::NoLayers);
        }
        let layers = paths
            .iter()
            .map(|p| LayerSource::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let indexes = index_all(&layers)?;
        let (tree, warnings) = Tree::build(&indexes);
        for warning in warnings {
            let path = layers
                .get(warning.layer as usize)
                .map_or(Path::new("?"), LayerSource::path);
            log::warn!(
                "{} (layer {}): {warning}",
                path.display(),
                warning.layer + 1
            );
        }
        Ok(Stack { layers, tree })
    }

    /// The merged tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The layer files, bottom first.
    pub fn layers(&self) -> &[LayerSource] {
        &self.layers
    }

    /// Reads a regular file's bytes at `pos` into `buf`; returns how many
    /// (fewer than asked only at the end of the file).
    pub fn read(&self, ino: Ino, pos: u64, buf: &mut [u8]) -> Result<usize, StackError> {
        let node = self.tree.node(ino).ok_or(StackError::NotAFile(ino))?;
        let data = self.tree.file_data(ino).ok_or(StackError::NotAFile(ino))?;
        debug_assert_eq!(node.kind, NodeKind::File);
        let layer = self
            .layers
            .get(node.layer as usize)
            .ok_or(StackError::NotAFile(ino))?;
        Ok(data.read_at(pos, buf, |offset, dst| layer.read_exact_at(offset, dst))?)
    }
}

/// Indexes every layer, up to one thread per core; the first error wins.
fn index_all(layers: &[LayerSource]) -> Result<Vec<LayerIndex>, StackError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(layers.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<LayerIndex, StackError>>>> =
        Mutex::new((0..layers.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(layer) = layers.get(n) else { break };
                let result = index_one(layer, n);
                let failed = result.is_err();
                if let Some(slot) = results.lock().unwrap_or_else(|p| p.into_inner()).get_mut(n) {
                    *slot = Some(result);
                }
                if failed {
                    // Stop handing out work: the mount is refused anyway.
                    next.store(layers.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut indexes = Vec::with_capacity(layers.len());
    let mut first_error = None;
    for result in results {
        match result {
            Some(Ok(index)) => indexes.push(index),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(indexes),
    }
}

fn index_one(layer: &LayerSource, n: usize) -> Result<LayerIndex, StackError> {
    let started = std::time::Instant::now();
    let mut pass = layer.index_pass();
    let index = tar::index_layer(&mut pass).map_err(|source| StackError::Index {
        path: layer.path().to_path_buf(),
        number: n + 1,
        source,
    })?;
    let seek = pass.finish().map_err(|source| SourceError::Io {
        path: layer.path().to_path_buf(),
        source,
    })?;
    layer.attach(seek)?;
    log::info!(
        "{} (layer {}, {}): {} members indexed in {:.2?}",
        layer.path().display(),
        n + 1,
        layer.codec(),
        index.members.len(),
        started.elapsed()
    );
    Ok(index)
}
