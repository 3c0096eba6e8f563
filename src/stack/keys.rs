//! What a layer's stored index, and a stack's stored tree, are found by
//! in the index cache.

use crate::cache::{IndexCache, LayerKey};
use crate::digest::Digest;
use crate::source::LayerSource;
use crate::toc::TocRef;
use crate::tree::Tree;

use super::queue::map_in_parallel;
use super::Layer;

/// Each layer's cache key; `None` for a directory, and (with a warning)
/// for a layer whose key cannot be computed.
pub(super) fn layer_keys(
    layers: &[Layer],
    verify: &[Option<&Digest>],
    tocs: &[Option<&TocRef>],
) -> Vec<Option<LayerKey>> {
    map_in_parallel(layers, |n, layer| {
        let toc = tocs.get(n).copied().flatten();
        layer_key(layer, verify.get(n).copied().flatten(), toc)
    })
}

/// The keys of a stack whose every layer has one: what its stored tree is
/// found by.
pub(super) fn all_keys(keys: Vec<Option<LayerKey>>) -> Option<Vec<LayerKey>> {
    keys.into_iter().collect()
}

/// The layer's cache key (of its range of the file, and marked with the
/// digest it is checked against, or the table of contents it is indexed
/// from); `None` for a directory, and (with a warning) if it cannot be
/// computed.
pub(super) fn layer_key(
    layer: &Layer,
    verify: Option<&Digest>,
    toc: Option<&TocRef>,
) -> Option<LayerKey> {
    let layer = layer.tar()?;
    tar_key(layer, verify, toc)
}

/// [`layer_key`] of a tar layer. A remote blob is identified by its digest
/// and size alone, so its stored index serves every machine that shares
/// the cache directory. A layer indexed from its table of contents is
/// marked with that table's digest instead of the blob's, which was never
/// checked: its entry is found only by a mount that trusts the same table,
/// never by one that takes the blob's digest alone for proof of its tree.
pub(super) fn tar_key(
    layer: &LayerSource,
    verify: Option<&Digest>,
    toc: Option<&TocRef>,
) -> Option<LayerKey> {
    let Some(file) = layer.file() else {
        let digest = layer.blob_digest()?;
        let key = LayerKey::of_blob(digest, layer.file_len());
        return Some(match toc {
            Some(toc) => key.with_verified(toc.tag()),
            None => key,
        });
    };
    match LayerKey::of_range(file, layer.offset(), layer.file_len()) {
        Ok(key) => Some(match (toc, verify) {
            (Some(toc), _) => key.with_verified(toc.tag()),
            (None, Some(digest)) => key.with_verified(digest.as_str()),
            (None, None) => key,
        }),
        Err(e) => {
            log::warn!(
                "{}: cannot identify the layer for the index cache: {e}",
                layer.path().display()
            );
            None
        }
    }
}

/// The stack's merged tree from the cache, with every layer attached to its
/// stored seek index; `None` unless all of them are there and valid (and
/// so never for a stack holding a directory, which has no key).
pub(super) fn stored_tree(layers: &[Layer], cache: &IndexCache, keys: &[LayerKey]) -> Option<Tree> {
    let sources = layers.iter().map(Layer::tar).collect::<Option<Vec<_>>>()?;
    let tree = cache.load_tree(keys)?;
    let seeks = map_in_parallel(keys, |_, key| cache.load_seek(key))
        .into_iter()
        .collect::<Option<Vec<_>>>()?;
    for (layer, seek) in sources.into_iter().zip(seeks) {
        if let Err(e) = layer.attach(seek) {
            log::info!("{}: cached index not usable ({e})", layer.path().display());
            return None;
        }
    }
    log::info!(
        "merged tree loaded from the cache ({})",
        crate::plural::counted(layers.len(), "layer", "layers")
    );
    Some(tree)
}
