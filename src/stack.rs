//! A list of layers (tar files, or directories), opened, indexed and
//! merged: what every front end (the FUSE server, export, listing) serves
//! from.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::cache::{IndexCache, LayerEntry, LayerKey};
use crate::dir::{DirError, DirLayer};
use crate::source::{BlobFetch, Codec, LayerHead, LayerSource, ReadMeter, SeekIndex, SourceError};
use crate::tar::{self, LayerIndex, Member, TarError};
use crate::toc::{self as layer_toc, TocRef};
use crate::tree::{BottomLayer, Ino, LayerBytes, LayerKind, MergeWarning, NodeKind, Removal, Tree};

/// Members the bottom layer's pass hands to the merge at once: enough that
/// the channel costs nothing per member, few enough that the batches in
/// flight are a small part of the peak.
const BATCH: usize = 4096;
/// Batches the pass may be ahead of the merge before it waits.
const BATCHES_IN_FLIGHT: usize = 4;

/// What can go wrong while opening a stack or reading from it.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// No layer files were given.
    #[error("no layers given")]
    NoLayers,
    /// More layers than a tree can number (`tree::MAX_LAYERS`).
    #[error("{0} layers given; at most {max} can be stacked", max = crate::tree::MAX_LAYERS - 1)]
    TooManyLayers(usize),
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
    /// A directory layer could not be read.
    #[error("{} (layer {number}, a directory): {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        number: usize,
        /// What went wrong, naming the entry.
        source: DirError,
    },
    /// A read asked for the contents of something that is not a regular file.
    #[error("inode {0} is not a regular file")]
    NotAFile(Ino),
    /// A layer's bytes do not hash to the digest its image gives.
    #[error("{} (layer {number}, {len} bytes at offset {offset}): digest mismatch: the image says {expected}, the bytes hash to {actual}; nothing is served from a layer that fails its check (--no-verify skips it)", path.display())]
    Digest {
        /// The file holding the layer (a blob, or the image archive).
        path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        number: usize,
        /// Where the layer starts in the file.
        offset: u64,
        /// The layer's length.
        len: u64,
        /// The digest the image gives.
        expected: String,
        /// The digest of the bytes.
        actual: String,
    },
    /// A digest of an algorithm layerfs cannot check.
    #[error("{} (layer {number}): cannot check digest {digest}: only sha256 is supported (--no-verify skips the check)", path.display())]
    DigestAlgorithm {
        /// The file holding the layer.
        path: PathBuf,
        /// Its position in the stack, 1 = bottom.
        number: usize,
        /// The digest given.
        digest: String,
    },
    /// A file's data ended before its size (the layer is damaged).
    #[error("the data ends at byte {got} of a file of {expected} bytes")]
    ShortFile {
        /// The file's size.
        expected: u64,
        /// Where its data ended.
        got: u64,
    },
}

/// How a stack is opened.
#[derive(Debug, Default)]
pub struct StackOptions {
    /// Where layer indexes are stored and looked up; `None`: index every
    /// layer every time.
    pub cache: Option<IndexCache>,
    /// Where decompressed data of layers without resume points is spilled
    /// (single-frame zstd, single-stream bzip2, ...); `None`: the index
    /// cache's directory if there is one, else the system's temporary
    /// directory (which may be RAM-backed).
    pub spill_dir: Option<PathBuf>,
    /// Keep what each whiteout removed, for [`Stack::removals`] (`ls --all`).
    pub record_removals: bool,
    /// Counts the layer file bytes that indexing (and digest checks) will
    /// read and have read, for a progress display; layers whose index is
    /// loaded from the cache add nothing.
    pub meter: Option<Arc<ReadMeter>>,
}

/// One layer to open: a file, or a byte range of one (a layer inside an
/// image archive), and the digest its bytes must have, if it is to be
/// checked; or a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// The file holding the layer, or the directory that is the layer.
    pub path: PathBuf,
    /// The layer is the directory `path` (an extracted layer or an
    /// overlayfs upper directory), read in place; `range` and `verify`
    /// are then unused.
    pub directory: bool,
    /// `(offset, length)` of the layer in the file; `None`: all of it.
    pub range: Option<(u64, u64)>,
    /// The digest (`sha256:<hex>`) the layer's bytes are checked against
    /// when it is first indexed; a stored index remembers that the check
    /// passed, so later opens do not hash the layer again.
    pub verify: Option<String>,
    /// The layer is a registry blob, fetched on demand; `path` is then
    /// only its name for messages.
    pub remote: Option<RemoteSpec>,
    /// The table of contents the layer's descriptor announces: it is
    /// indexed from that, not from a pass over it.
    pub toc: Option<TocRef>,
}

/// A layer that is a blob in a registry.
#[derive(Clone, Debug)]
pub struct RemoteSpec {
    /// Where its bytes are fetched from.
    pub fetch: Arc<dyn BlobFetch>,
    /// The blob's digest from the manifest: what the layer's stored index
    /// is found by, on any machine.
    pub digest: String,
    /// The codec the media type names, if it names one.
    pub codec: Option<Codec>,
}

/// Two remote layers are the same layer when they are the same blob.
impl PartialEq for RemoteSpec {
    fn eq(&self, other: &RemoteSpec) -> bool {
        self.digest == other.digest && self.fetch.name() == other.fetch.name()
    }
}

impl Eq for RemoteSpec {}

impl LayerSpec {
    /// A whole layer file, unchecked.
    pub fn file(path: impl Into<PathBuf>) -> LayerSpec {
        LayerSpec {
            path: path.into(),
            directory: false,
            range: None,
            verify: None,
            remote: None,
            toc: None,
        }
    }

    /// A directory as a layer.
    pub fn directory(path: impl Into<PathBuf>) -> LayerSpec {
        LayerSpec {
            directory: true,
            ..LayerSpec::file(path)
        }
    }

    /// Opens the layer; `number` (1 = bottom) is for messages.
    fn open(&self, number: usize) -> Result<Layer, StackError> {
        if let Some(remote) = &self.remote {
            let source = LayerSource::open_blob(
                Arc::clone(&remote.fetch),
                remote.digest.clone(),
                remote.codec,
            )?;
            return Ok(Layer::Tar(source));
        }
        if self.directory {
            let dir = DirLayer::open(&self.path).map_err(|source| StackError::Dir {
                path: self.path.clone(),
                number,
                source,
            })?;
            return Ok(Layer::Dir(dir));
        }
        Ok(Layer::Tar(match self.range {
            Some((offset, len)) => LayerSource::open_range(&self.path, offset, len),
            None => LayerSource::open(&self.path),
        }?))
    }
}

/// One opened layer of a stack.
#[derive(Debug)]
pub enum Layer {
    /// A tar, plain or compressed, whole file or a range of one.
    Tar(LayerSource),
    /// A directory, read in place.
    Dir(DirLayer),
}

impl Layer {
    /// The layer file or directory, as given.
    pub fn path(&self) -> &Path {
        match self {
            Layer::Tar(source) => source.path(),
            Layer::Dir(dir) => dir.path(),
        }
    }

    /// Which merge rules read its members (see `tree::LayerKind`).
    pub fn kind(&self) -> LayerKind {
        match self {
            Layer::Tar(_) => LayerKind::Tar,
            Layer::Dir(_) => LayerKind::Directory,
        }
    }

    /// What the layer is stored as: its codec (`gzip`, `plain`, ...), or
    /// `directory`.
    pub fn format(&self) -> &'static str {
        match self {
            Layer::Tar(source) => source.codec().name(),
            Layer::Dir(_) => "directory",
        }
    }

    /// Fills `buf` from offset `offset` of the layer's (decompressed, or
    /// for a directory, virtual) stream.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        match self {
            Layer::Tar(source) => source.read_exact_at(offset, buf),
            Layer::Dir(dir) => dir.read_exact_at(offset, buf),
        }
    }

    fn tar(&self) -> Option<&LayerSource> {
        match self {
            Layer::Tar(source) => Some(source),
            Layer::Dir(_) => None,
        }
    }
}

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
    const EMPTY: LayerStats = LayerStats {
        entries: 0,
        tar_bytes: 1024,
    };

    /// Counts the next members of the layer in.
    fn add(&mut self, members: &[Member]) {
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
        let verify: Vec<Option<&str>> = specs.iter().map(|s| s.verify.as_deref()).collect();
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
        let verify: Vec<Option<&str>> = specs.iter().map(|s| s.verify.as_deref()).collect();
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

/// The index of one layer as stored (through the cache if given), without
/// merging: what `layerfs ls --layer` lists. `number` is its 1-based
/// position, for messages.
/// `meter`, if given, counts the bytes read as in [`StackOptions::meter`].
pub fn layer_index(
    spec: &LayerSpec,
    number: usize,
    cache: Option<&IndexCache>,
    meter: Option<&Arc<ReadMeter>>,
) -> Result<LayerIndex, StackError> {
    let layer = spec.open(number)?;
    let verify = spec.verify.as_deref();
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

/// Each layer's cache key; `None` for a directory, and (with a warning)
/// for a layer whose key cannot be computed.
fn layer_keys(
    layers: &[Layer],
    verify: &[Option<&str>],
    tocs: &[Option<&TocRef>],
) -> Vec<Option<LayerKey>> {
    let numbered: Vec<usize> = (0..layers.len()).collect();
    map_in_parallel(&numbered, |&n| {
        let toc = tocs.get(n).copied().flatten();
        layer_key(layers.get(n)?, verify.get(n).copied().flatten(), toc)
    })
}

/// The keys of a stack whose every layer has one: what its stored tree is
/// found by.
fn all_keys(keys: Vec<Option<LayerKey>>) -> Option<Vec<LayerKey>> {
    keys.into_iter().collect()
}

/// The layer's cache key (of its range of the file, and marked with the
/// digest it is checked against, or the table of contents it is indexed
/// from); `None` for a directory, and (with a warning) if it cannot be
/// computed.
fn layer_key(layer: &Layer, verify: Option<&str>, toc: Option<&TocRef>) -> Option<LayerKey> {
    let layer = layer.tar()?;
    tar_key(layer, verify, toc)
}

/// [`layer_key`] of a tar layer. A remote blob is identified by its digest
/// and size alone, so its stored index serves every machine that shares
/// the cache directory. A layer indexed from its table of contents is
/// marked with that table's digest instead of the blob's, which was never
/// checked: its entry is found only by a mount that trusts the same table,
/// never by one that takes the blob's digest alone for proof of its tree.
fn tar_key(layer: &LayerSource, verify: Option<&str>, toc: Option<&TocRef>) -> Option<LayerKey> {
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
            (None, Some(digest)) => key.with_verified(digest),
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

/// `f` of every item, in order, computed on up to one thread per core:
/// reading many small things from many layer files is latency-bound.
fn map_in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(n) else { break };
                let result = f(item);
                if let Some(slot) = results.lock().unwrap_or_else(|p| p.into_inner()).get_mut(n) {
                    *slot = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// The stack's merged tree from the cache, with every layer attached to its
/// stored seek index; `None` unless all of them are there and valid (and
/// so never for a stack holding a directory, which has no key).
fn stored_tree(layers: &[Layer], cache: &IndexCache, keys: &[LayerKey]) -> Option<Tree> {
    let sources = layers.iter().map(Layer::tar).collect::<Option<Vec<_>>>()?;
    let tree = cache.load_tree(keys)?;
    let seeks = map_in_parallel(keys, |key| cache.load_seek(key))
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
fn index_and_merge(
    layers: &[Layer],
    verify: &[Option<&str>],
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
/// given), up to one thread per core; the first error wins.
fn index_all(
    layers: &[Layer],
    first: usize,
    verify: &[Option<&str>],
    tocs: &[Option<&TocRef>],
    keyed: Option<(&IndexCache, &[Option<LayerKey>])>,
    meter: Option<&Arc<ReadMeter>>,
) -> Result<Vec<Indexed>, StackError> {
    let todo = layers.len().saturating_sub(first);
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(todo);
    let next = AtomicUsize::new(first);
    let results: Mutex<Vec<Option<Result<Indexed, StackError>>>> =
        Mutex::new((0..todo).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(layer) = layers.get(n) else { break };
                let result = index_layer_whole(layer, LayerJob::of(n, verify, tocs, keyed, meter));
                let failed = result.is_err();
                let mut results = results.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(slot) = results.get_mut(n - first) {
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
    let mut indexes = Vec::with_capacity(todo);
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

/// How one layer is indexed: its place in the stack (0 = bottom), the
/// digest its bytes must have, where its index is stored, and what counts
/// the bytes its pass reads.
#[derive(Clone, Copy)]
struct LayerJob<'a> {
    n: usize,
    verify: Option<&'a str>,
    toc: Option<&'a TocRef>,
    keyed: Option<(&'a IndexCache, &'a LayerKey)>,
    meter: Option<&'a Arc<ReadMeter>>,
}

impl<'a> LayerJob<'a> {
    /// Layer `n`'s job in a stack's lists of digests and keys.
    fn of(
        n: usize,
        verify: &[Option<&'a str>],
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

/// The layer's members, handed to `sink` in archive order, from the
/// cache if it has a valid index, else from a pass over the layer (in
/// batches of `batch`), whose index is then stored. A cache that cannot be
/// read or written costs speed, never the mount. A layer with a digest to
/// check is hashed before its pass; its key carries the digest, so a
/// stored entry is found only for a layer that passed. On an error, what
/// `sink` was given is only part of the layer. Only a layer that is read
/// adds its bytes to `meter`'s total.
fn load_or_index(
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

/// Hashes the layer's bytes and compares them with `expected`. A plain
/// tar's indexing pass seeks over file data, so this is a read of the whole
/// layer that the pass alone would not make; it is paid once, when the
/// layer is first indexed.
fn check_digest(
    layer: &LayerSource,
    n: usize,
    expected: &str,
    meter: Option<&Arc<ReadMeter>>,
) -> Result<(), StackError> {
    if !expected.starts_with("sha256:") {
        return Err(StackError::DigestAlgorithm {
            path: layer.path().to_path_buf(),
            number: n + 1,
            digest: expected.to_string(),
        });
    }
    let started = std::time::Instant::now();
    let actual = crate::output::Sha256Digest(layer.sha256(meter)?).to_string();
    log::info!(
        "{} (layer {}): {} bytes hashed in {:.2?}",
        layer.path().display(),
        n + 1,
        layer.file_len(),
        started.elapsed()
    );
    compare_digest(layer, n, expected, actual)
}

/// The one comparison of a layer's hashed digest with the one it must
/// have, whether hashed before its pass (a file) or by it (a remote blob).
fn compare_digest(
    layer: &LayerSource,
    n: usize,
    expected: &str,
    actual: String,
) -> Result<(), StackError> {
    if actual == expected.to_ascii_lowercase() {
        return Ok(());
    }
    Err(StackError::Digest {
        path: layer.path().to_path_buf(),
        number: n + 1,
        offset: layer.offset(),
        len: layer.file_len(),
        expected: expected.to_string(),
        actual,
    })
}

/// One pass over the layer, its members handed to `sink` `batch` at a
/// time; attaches what the pass learned for random access and returns it.
fn index_one(
    layer: &LayerSource,
    n: usize,
    verify: Option<&str>,
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
