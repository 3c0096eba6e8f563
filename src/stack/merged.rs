//! The [`Stack`]: its layers and their merged tree, opened from the
//! cache's stored tree when it has one, else by indexing every layer.

use std::path::{Path, PathBuf};

use crate::cache::LayerKey;
use crate::digest::Digest;
use crate::toc::TocRef;
use crate::tree::{Ino, LayerBytes, NodeKind, Removal, Tree};

use super::index::index_and_merge;
use super::keys::{all_keys, layer_keys, stored_tree};
use super::{IndexOrigin, Layer, LayerSpec, LayerStats, StackError, StackOptions};

/// The layers and their merged tree.
#[derive(Debug)]
pub struct Stack {
    layers: Vec<Layer>,
    origins: Vec<IndexOrigin>,
    tree: Tree,
    removals: Vec<Removal>,
    stats: Vec<LayerStats>,
    bytes: Vec<LayerBytes>,
}

impl Stack {
    /// Opens the layer files (bottom first), indexes them, several at once,
    /// and merges them. Every file is checked before any work is shared, so a
    /// bad layer is reported without indexing the others.
    pub fn open(paths: &[PathBuf], options: &StackOptions) -> Result<Stack, StackError> {
        let specs: Vec<LayerSpec> = paths.iter().map(LayerSpec::file).collect();
        Stack::open_specs(&specs, options)
    }

    /// [`Stack::open`] for layers that may be ranges of files and may have
    /// digests to check (an image's layers).
    pub fn open_specs(specs: &[LayerSpec], options: &StackOptions) -> Result<Stack, StackError> {
        if specs.is_empty() {
            return Err(StackError::NoLayers);
        }
        if specs.len() >= crate::tree::MAX_LAYERS {
            return Err(StackError::TooManyLayers(specs.len()));
        }
        let spill_dir = options
            .spill_dir
            .clone()
            .or_else(|| options.cache.as_ref().map(|c| c.dir().to_path_buf()));
        let layers = specs
            .iter()
            .enumerate()
            .map(|(n, spec)| {
                let mut layer = spec.open(n + 1)?;
                if let (Layer::Tar(source), Some(dir)) = (&mut layer, &spill_dir) {
                    source.set_spill_dir(dir.clone());
                }
                if let (Layer::Tar(source), Some(cache)) = (&mut layer, &options.cache) {
                    source.set_chunk_dir(cache.dir().join("chunks"));
                }
                Ok(layer)
            })
            .collect::<Result<Vec<_>, StackError>>()?;
        let cache = options.cache.as_ref();
        let verify: Vec<Option<&Digest>> = specs.iter().map(|s| s.verify.as_ref()).collect();
        let tocs: Vec<Option<&TocRef>> = specs.iter().map(|s| s.toc.as_ref()).collect();
        // A directory has no key (nothing identifies its contents short of
        // reading them all), so neither has a stack holding one: its tree
        // is never stored, and no stored tree can stand for it.
        let each_key = cache.map(|_| layer_keys(&layers, &verify, &tocs));
        let keys = each_key.clone().and_then(all_keys);
        if let (Some(cache), Some(keys), false) = (cache, &keys, options.record_removals) {
            if let Some(tree) = stored_tree(&layers, cache, keys) {
                log_tree(&layers, &tree);
                return Ok(Stack {
                    origins: vec![IndexOrigin::Cache; layers.len()],
                    layers,
                    tree,
                    removals: Vec::new(),
                    stats: Vec::new(),
                    bytes: Vec::new(),
                });
            }
        }
        let keyed = cache.zip(each_key.as_deref());
        let meter = options.meter.as_ref();
        let (merged, origins, stats) = index_and_merge(
            &layers,
            &verify,
            &tocs,
            keyed,
            options.record_removals,
            meter,
        )?;
        let (tree, warnings, removals, bytes) = merged;
        log_tree(&layers, &tree);
        // The member lists and the tree under construction were freed, and
        // were several times what the frozen tree keeps: hand that back
        // before encoding the tree for the cache, and before a daemon
        // settles in to serve for hours.
        crate::sys::release_free_memory();
        if let (Some(cache), Some(keys), true) = (cache, &keys, warnings.is_empty()) {
            // Only a stack whose layers did not change while they were
            // indexed, and that merged without warnings (which a stored
            // tree could not repeat), is stored.
            if all_keys(layer_keys(&layers, &verify, &tocs)).as_ref() == Some(keys) {
                if let Err(e) = cache.store_tree(keys, &tree) {
                    log::warn!("index cache: {e}");
                }
                crate::sys::release_free_memory();
            }
        }
        for warning in warnings {
            let path = layers
                .get(warning.layer as usize)
                .map_or(Path::new("?"), Layer::path);
            log::warn!(
                "{} (layer {}): {warning}",
                path.display(),
                warning.layer + 1
            );
        }
        Ok(Stack {
            layers,
            origins,
            tree,
            removals,
            stats,
            bytes,
        })
    }

    /// Each layer's index cache key (`None` for a directory), `specs` being
    /// what the stack was opened from: what its stored entries are named by.
    pub fn cache_keys(&self, specs: &[LayerSpec]) -> Vec<Option<LayerKey>> {
        let verify: Vec<Option<&Digest>> = specs.iter().map(|s| s.verify.as_ref()).collect();
        let tocs: Vec<Option<&TocRef>> = specs.iter().map(|s| s.toc.as_ref()).collect();
        layer_keys(&self.layers, &verify, &tocs)
    }

    /// What each whiteout, opaque marker and tombstone removed, if the
    /// stack was opened with [`StackOptions::record_removals`]; else empty.
    pub fn removals(&self) -> &[Removal] {
        &self.removals
    }

    /// Each layer's file data, stored and hidden by the merge, bottom
    /// first, if the stack was opened with
    /// [`StackOptions::record_removals`]; else empty.
    pub fn layer_bytes(&self) -> &[LayerBytes] {
        &self.bytes
    }

    /// What each layer's index says about it, bottom first; empty if the
    /// merged tree was loaded from the cache, which never happens with
    /// [`StackOptions::record_removals`].
    pub fn layer_stats(&self) -> &[LayerStats] {
        &self.stats
    }

    /// Where each layer's index came from, bottom first.
    pub fn origins(&self) -> &[IndexOrigin] {
        &self.origins
    }

    /// The merged tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Reads a regular file's bytes at `pos` into `buf`; returns how many
    /// (fewer than asked only at the end of the file).
    pub fn read(&self, ino: Ino, pos: u64, buf: &mut [u8]) -> Result<usize, StackError> {
        let node = self.tree.node(ino).ok_or(StackError::NotAFile(ino))?;
        let data = self.tree.file_data(ino).ok_or(StackError::NotAFile(ino))?;
        debug_assert_eq!(node.kind(), NodeKind::File);
        let layer = self
            .layers
            .get(node.layer() as usize)
            .ok_or(StackError::NotAFile(ino))?;
        Ok(data.read_at(pos, buf, |offset, dst| layer.read_exact_at(offset, dst))?)
    }
}

fn log_tree(layers: &[Layer], tree: &Tree) {
    log::info!(
        "{} merged: {} inodes, {} bytes of file data; the tree takes {} bytes ({} per inode)",
        crate::plural::counted(layers.len(), "layer", "layers"),
        tree.len(),
        tree.file_bytes(),
        tree.memory_bytes(),
        tree.memory_bytes() / tree.len().max(1)
    );
}
