//! Every layer of a stack indexed and merged, or one layer indexed alone.

use std::sync::{mpsc, Arc};

use crate::cache::{IndexCache, LayerKey};
use crate::digest::Digest;
use crate::source::ReadMeter;
use crate::tar::{LayerIndex, Member};
use crate::toc::TocRef;
use crate::tree::{BottomLayer, LayerBytes, MergeWarning, Removal, Tree};

use super::keys::layer_key;
use super::load::{load_or_index, LayerJob};
use super::queue::try_map_in_parallel;
use super::{IndexOrigin, Layer, LayerSpec, LayerStats, StackError};

/// Members the bottom layer's pass hands to the merge at once: enough that
/// the channel costs nothing per member, few enough that the batches in
/// flight are a small part of the peak.
const BATCH: usize = 4096;
/// Batches the pass may be ahead of the merge before it waits.
const BATCHES_IN_FLIGHT: usize = 4;

/// The index of one layer as stored (through the cache if given), without
/// merging: what `layerfs ls --layer` lists. `number` is its 1-based
/// position, for messages.
/// `meter`, if given, counts the bytes read as in [`super::StackOptions::meter`].
pub fn layer_index(
    spec: &LayerSpec,
    number: usize,
    cache: Option<&IndexCache>,
    meter: Option<&Arc<ReadMeter>>,
) -> Result<LayerIndex, StackError> {
    let layer = spec.open(number)?;
    let verify = spec.verify.as_ref();
    let key = cache.and_then(|_| layer_key(&layer, verify, spec.toc.as_ref()));
    let n = number.saturating_sub(1);
    let job = LayerJob {
        n,
        verify,
        toc: spec.toc.as_ref(),
        keyed: cache.zip(key.as_ref()),
        meter,
    };
    Ok(index_layer_whole(&layer, job)?.index)
}

/// One layer's index, where it came from and what it holds.
struct Indexed {
    index: LayerIndex,
    origin: IndexOrigin,
    stats: LayerStats,
}

/// What merging gives: the tree, what could not be placed, what was
/// removed and each layer's file data stored and hidden (if recorded).
type Merged = (Tree, Vec<MergeWarning>, Vec<Removal>, Vec<LayerBytes>);

/// Indexes every layer (through the cache, with each layer's key, if
/// given) and merges them. The bottom layer's members go to the merge
/// while its pass goes on, on another core, so that the merge is done
/// when the pass ends and its member list never exists whole; the layers
/// above are indexed meanwhile, several at once, and applied in order once
/// the bottom one is in. The first error, bottom first, wins.
pub(super) fn index_and_merge(
    layers: &[Layer],
    verify: &[Option<&Digest>],
    tocs: &[Option<&TocRef>],
    keyed: Option<(&IndexCache, &[Option<LayerKey>])>,
    record: bool,
    meter: Option<&Arc<ReadMeter>>,
) -> Result<(Merged, Vec<IndexOrigin>, Vec<LayerStats>), StackError> {
    let bottom = layers.first().ok_or(StackError::NoLayers)?;
    std::thread::scope(|scope| {
        let (batches, received) = mpsc::sync_channel::<Vec<Member>>(BATCHES_IN_FLIGHT);
        let job = LayerJob::of(0, verify, tocs, keyed, meter);
        let pass = scope.spawn(move || {
            index_layer(bottom, job, BATCH, &mut |batch| {
                // Only a merge that panicked stops taking batches.
                let _ = batches.send(batch);
            })
        });
        let uppers = (layers.len() > 1)
            .then(|| scope.spawn(|| index_all(layers, 1, verify, tocs, keyed, meter)));
        let mut merge = BottomLayer::new(record, bottom.kind());
        for batch in received {
            merge.push(batch);
        }
        let (origin, stats) = joined(pass)?;
        let uppers = uppers.map(joined).transpose()?.unwrap_or_default();
        let mut merge = merge.done();
        let mut origins = vec![origin];
        let mut all_stats = vec![stats];
        for (upper, layer) in uppers.into_iter().zip(layers.iter().skip(1)) {
            origins.push(upper.origin);
            all_stats.push(upper.stats);
            merge.apply(upper.index, layer.kind());
        }
        let bytes = merge.layer_bytes();
        let (tree, warnings, removals) = merge.finish();
        Ok(((tree, warnings, removals, bytes), origins, all_stats))
    })
}

/// What a scoped thread returned; its panic goes on in this thread.
fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Indexes layers `first..` (through the cache, with each layer's key, if
/// given), up to one thread per core; the first error, bottom first, wins.
fn index_all(
    layers: &[Layer],
    first: usize,
    verify: &[Option<&Digest>],
    tocs: &[Option<&TocRef>],
    keyed: Option<(&IndexCache, &[Option<LayerKey>])>,
    meter: Option<&Arc<ReadMeter>>,
) -> Result<Vec<Indexed>, StackError> {
    let uppers = layers.get(first..).unwrap_or_default();
    try_map_in_parallel(uppers, |i, layer| {
        let job = LayerJob::of(first + i, verify, tocs, keyed, meter);
        index_layer_whole(layer, job)
    })
}

/// [`index_layer`] into one member list.
fn index_layer_whole(layer: &Layer, job: LayerJob<'_>) -> Result<Indexed, StackError> {
    let mut members = Vec::new();
    let (origin, stats) = index_layer(layer, job, usize::MAX, &mut |batch| {
        if members.is_empty() {
            members = batch;
        } else {
            members.extend(batch);
        }
    })?;
    Ok(Indexed {
        index: LayerIndex { members },
        origin,
        stats,
    })
}

/// The members of layer `n` (0 = bottom), handed to `sink` in order: for
/// a tar, see [`load_or_index`]; a directory is walked every time and
/// handed over whole.
fn index_layer(
    layer: &Layer,
    job: LayerJob<'_>,
    batch: usize,
    sink: &mut dyn FnMut(Vec<Member>),
) -> Result<(IndexOrigin, LayerStats), StackError> {
    let dir = match layer {
        Layer::Tar(source) => return load_or_index(source, job, batch, sink),
        Layer::Dir(dir) => dir,
    };
    let n = job.n;
    let started = std::time::Instant::now();
    let index = dir.index().map_err(|source| StackError::Dir {
        path: dir.path().to_path_buf(),
        number: n + 1,
        source,
    })?;
    log::info!(
        "{} (layer {}, directory): {} entries read in {:.2?}",
        dir.path().display(),
        n + 1,
        index.members.len(),
        started.elapsed()
    );
    let mut stats = LayerStats::EMPTY;
    stats.add(&index.members);
    sink(index.members);
    Ok((IndexOrigin::Indexed, stats))
}
