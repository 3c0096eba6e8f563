//! One tar layer's index: loaded from the cache, read from its table of
//! contents, or made by a pass over it (checked against its digest), and
//! then stored.

use std::sync::Arc;

use crate::cache::{IndexCache, LayerEntry, LayerKey};
use crate::digest::Digest;
use crate::source::{LayerSource, ReadMeter, SeekIndex, SourceError};
use crate::tar::{self, Member};
use crate::toc::{self as layer_toc, TocRef};

use super::digest::{check_digest, compare_digest};
use super::keys::tar_key;
use super::StackError;

/// Where a layer's index came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexOrigin {
    /// One pass over the layer.
    Indexed,
    /// The index cache; the layer was not read.
    Cache,
}

/// What one layer's index says about it (`layerfs inspect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Members of the layer's tar, whiteouts and duplicates included.
    pub entries: u64,
    /// Where the tar ends as the index knows it: past the last member's
    /// data and padding and the two-block end-of-archive marker. Blocking
    /// padding after the marker, which the index never reads, is not
    /// counted.
    pub tar_bytes: u64,
}

impl LayerStats {
    /// A layer with no members: only the end-of-archive marker.
    pub(super) const EMPTY: LayerStats = LayerStats {
        entries: 0,
        tar_bytes: 1024,
    };

    /// Counts the next members of the layer in.
    pub(super) fn add(&mut self, members: &[Member]) {
        for m in members {
            let stored = m
                .data
                .sparse
                .as_ref()
                .map_or(m.data.size, |segments| segments.iter().map(|s| s.len).sum());
            let end = m.data.offset.saturating_add(stored.next_multiple_of(512));
            self.tar_bytes = self.tar_bytes.max(end.saturating_add(1024));
        }
        self.entries += members.len() as u64;
    }
}

/// How one layer is indexed: its place in the stack (0 = bottom), the
/// digest its bytes must have, where its index is stored, and what counts
/// the bytes its pass reads.
#[derive(Clone, Copy)]
pub(super) struct LayerJob<'a> {
    pub(super) n: usize,
    pub(super) verify: Option<&'a Digest>,
    pub(super) toc: Option<&'a TocRef>,
    pub(super) keyed: Option<(&'a IndexCache, &'a LayerKey)>,
    pub(super) meter: Option<&'a Arc<ReadMeter>>,
}

impl<'a> LayerJob<'a> {
    /// Layer `n`'s job in a stack's lists of digests and keys.
    pub(super) fn of(
        n: usize,
        verify: &[Option<&'a Digest>],
        tocs: &[Option<&'a TocRef>],
        keyed: Option<(&'a IndexCache, &'a [Option<LayerKey>])>,
        meter: Option<&'a Arc<ReadMeter>>,
    ) -> LayerJob<'a> {
        LayerJob {
            n,
            verify: verify.get(n).copied().flatten(),
            toc: tocs.get(n).copied().flatten(),
            keyed: keyed.and_then(|(cache, keys)| Some((cache, keys.get(n)?.as_ref()?))),
            meter,
        }
    }
}

/// The layer's members, handed to `sink` in archive order, from the
/// cache if it has a valid index, else from a pass over the layer (in
/// batches of `batch`), whose index is then stored. A cache that cannot be
/// read or written costs speed, never the mount. A layer with a digest to
/// check is hashed before its pass; its key carries the digest, so a
/// stored entry is found only for a layer that passed. On an error, what
/// `sink` was given is only part of the layer. Only a layer that is read
/// adds its bytes to `meter`'s total.
pub(super) fn load_or_index(
    layer: &LayerSource,
    job: LayerJob<'_>,
    batch: usize,
    sink: &mut dyn FnMut(Vec<Member>),
) -> Result<(IndexOrigin, LayerStats), StackError> {
    let LayerJob {
        n,
        verify,
        toc,
        keyed,
        meter,
    } = job;
    let mut stats = LayerStats::EMPTY;
    if let Some((cache, key)) = keyed {
        if let Some((index, seek)) = cache.load(key) {
            match layer.attach(seek) {
                Ok(()) => {
                    log::info!(
                        "{} (layer {}): index loaded from the cache",
                        layer.path().display(),
                        n + 1
                    );
                    stats.add(&index.members);
                    sink(index.members);
                    return Ok((IndexOrigin::Cache, stats));
                }
                Err(e) => log::info!(
                    "{}: cached index not usable ({e}); indexing again",
                    layer.path().display()
                ),
            }
        }
    }
    if let Some(toc) = toc {
        if let Some(stats) = from_toc(layer, job, toc, sink) {
            return Ok((IndexOrigin::Indexed, stats));
        }
    }
    // A remote blob is hashed by its pass, as it streams by: fetching it
    // twice is what lazy mounting avoids.
    let hash_first = verify.filter(|_| !layer.is_remote());
    if let Some(meter) = meter {
        let reads = if hash_first.is_some() { 2 } else { 1 };
        meter.expect(layer.file_len().saturating_mul(reads));
    }
    if let Some(digest) = hash_first {
        check_digest(layer, n, digest, meter)?;
    }
    // Only the members' encoding stays behind for the cache; the members
    // themselves go on to `sink`. A layer whose table of contents failed is
    // keyed by that table, which its pass did not check: its index is not
    // stored, and every mount indexes it again.
    let mut entry = keyed
        .filter(|_| toc.is_none())
        .map(|(cache, _)| cache.new_entry());
    let started = std::time::Instant::now();
    let seek = index_one(layer, n, verify, meter, batch, &mut |mut members| {
        // The format's bookkeeping (eStargz's TOC and landmarks) is in the
        // tar, but no part of the layer's tree.
        if let Some(toc) = toc {
            members.retain(|m| !toc.hides(&m.path));
        }
        stats.add(&members);
        if let Some(entry) = &mut entry {
            entry.push(&members);
        }
        sink(members);
    })?;
    log::info!(
        "{} (layer {}, {}): {} members indexed in {:.2?}",
        layer.path().display(),
        n + 1,
        layer.codec(),
        stats.entries,
        started.elapsed()
    );
    // Only a checked remote blob's index is stored: its key is the digest,
    // which every later mount, here or elsewhere, takes on trust.
    let storable = !layer.is_remote() || verify.is_some();
    if let (Some(entry), true) = (entry, storable) {
        store_entry(layer, job, entry, &seek);
    }
    Ok((IndexOrigin::Indexed, stats))
}

/// Stores a layer's index under its key, unless the layer was rewritten
/// while it was indexed (then the key is of what it was before).
fn store_entry(layer: &LayerSource, job: LayerJob<'_>, entry: LayerEntry, seek: &SeekIndex) {
    let Some((cache, key)) = job.keyed else {
        return;
    };
    match tar_key(layer, job.verify, job.toc) {
        Some(now) if now == *key => {
            if let Err(e) = cache.store_entry_of(key, entry, seek) {
                log::warn!("index cache: {e}");
            }
        }
        _ => log::warn!(
            "{}: the layer changed while it was indexed; its index is not cached",
            layer.path().display()
        ),
    }
}

/// Indexes the layer from the table of contents `toc` (see [`layer_toc`]),
/// reading that alone; `None`, after a warning, if the table is missing or
/// fails its check, for the caller to index the layer by a pass. No digest
/// of the whole blob is checked: the table's digest, from the manifest,
/// is, and every chunk read later is checked against its digest in the
/// table. So the index is stored as a checked one would be.
fn from_toc(
    layer: &LayerSource,
    job: LayerJob<'_>,
    toc: &TocRef,
    sink: &mut dyn FnMut(Vec<Member>),
) -> Option<LayerStats> {
    let started = std::time::Instant::now();
    let index = layer_toc::index(layer, toc).and_then(|index| {
        layer.attach(index.seek.clone())?;
        Ok(index)
    });
    let index = match index {
        Ok(index) => index,
        Err(e) => {
            log::warn!(
                "{e} (layer {}); indexing the layer by a pass over it",
                job.n + 1
            );
            return None;
        }
    };
    let mut stats = LayerStats::EMPTY;
    stats.add(&index.members);
    log::info!(
        "{} (layer {}): {} members indexed from its {} table of contents in {:.2?}",
        layer.path().display(),
        job.n + 1,
        stats.entries,
        toc.format(),
        started.elapsed()
    );
    if job.keyed.is_some() {
        let mut entry = LayerEntry::default();
        entry.push(&index.members);
        store_entry(layer, job, entry, &index.seek);
    }
    sink(index.members);
    Some(stats)
}

/// One pass over the layer, its members handed to `sink` `batch` at a
/// time; attaches what the pass learned for random access and returns it.
fn index_one(
    layer: &LayerSource,
    n: usize,
    verify: Option<&Digest>,
    meter: Option<&Arc<ReadMeter>>,
    batch: usize,
    sink: &mut dyn FnMut(Vec<Member>),
) -> Result<SeekIndex, StackError> {
    let mut pass = layer.index_pass_metered(meter);
    tar::index_layer_batches(&mut pass, batch, sink).map_err(|source| StackError::Index {
        path: layer.path().to_path_buf(),
        number: n + 1,
        source,
    })?;
    let seek = pass.finish().map_err(|source| match layer.is_remote() {
        true => SourceError::Remote {
            path: layer.path().to_path_buf(),
            source,
        },
        false => SourceError::Io {
            path: layer.path().to_path_buf(),
            source,
        },
    })?;
    if let (Some(expected), Some(actual)) = (verify, seek.blob_digest()) {
        compare_digest(layer, n, expected, actual)?;
    }
    layer.attach(seek.clone())?;
    Ok(seek)
}
