//! Reading a layer blob that lives in a registry, fetched on demand.
//!
//! Two ways in, for two kinds of reader:
//!
//! * the indexing pass reads every byte once, in order: it gets a
//!   [`PassStream`], one streaming response for the whole blob, which
//!   hashes the bytes as they go by (the blob's digest, checked once the
//!   pass ends, and one sha256 per [`CHUNK`]: the [`SpanSums`] stored with
//!   the layer's index). The blob is read once, never twice;
//! * reads after the mount touch a few spans (a gzip checkpoint's span, a
//!   zstd frame): they go to [`RemoteBlob::read_at`], which fetches whole
//!   chunks by range, coalesces the chunks one read needs into one request
//!   and the reads of one chunk by several threads into one fetch, keeps
//!   the last few in memory, and checks every chunk it fetches against the
//!   stored sums before any of its bytes are used: what the registry
//!   serves is either what was indexed or an error, never wrong bytes.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

mod blob;
mod chunk_store;

use crate::source::cursor::ByteCursor;
pub use blob::BlobFetch;
use chunk_store::ChunkStore;
pub(crate) use chunk_store::DEFAULT_MAX_BYTES as CHUNK_STORE_BYTES;

/// The unit of fetching, caching and checking: big enough that a request's
/// round trip is paid for (a registry that redirects to object storage
/// answers in tens of milliseconds), small enough that a 4 KiB read near a
/// gzip checkpoint fetches little more than the span it decodes.
pub(crate) const CHUNK: u64 = 1 << 20;

/// How many fetched chunks are kept in memory: the decoders read their
/// input in 256 KiB steps, so a span being decoded is read from the same
/// chunk several times; the kernel's page cache keeps what was decoded.
const RECENT_CHUNKS: usize = 16;

/// A forward jump of the indexing pass up to this far is read through (the
/// bytes are hashed and dropped); a longer one (xz looks at its index at
/// the end first) is fetched by range, and the stream catches up at the
/// pass's end.
const READ_THROUGH: u64 = 64 << 20;

/// Chunks fetched ahead of a reader going through a blob in order (a big
/// file read from start to end), each on a connection of its own, so that
/// the next chunks arrive while this one is decoded.
const READ_AHEAD: u64 = 3;

/// A read of a remote blob that failed for want of its bytes (the
/// registry unreachable, refusing, or serving something else), as opposed
/// to bytes that do not decode: the layer is not corrupt, the fetch is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FetchError(String);

/// Whether `e` is a [`FetchError`].
pub(super) fn is_fetch_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<FetchError>())
}

/// `e`, marked as a [`FetchError`] (once).
fn fetch_error(e: io::Error) -> io::Error {
    if is_fetch_error(&e) {
        return e;
    }
    io::Error::new(e.kind(), FetchError(e.to_string()))
}

/// One sha256 per [`CHUNK`] of a blob and the digest of all of it, learned
/// by the pass that indexed it and stored with the index: what a later
/// mount checks every fetched chunk against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanSums {
    /// The sha256 of the whole blob.
    pub digest: [u8; 32],
    /// The sha256 of each chunk, in order (the last may be short).
    pub chunks: Vec<[u8; 32]>,
}

impl SpanSums {
    /// Appends the encoding: the chunk size, the count, the digest, the sums.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&CHUNK.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.digest);
        for sum in &self.chunks {
            out.extend_from_slice(sum);
        }
    }

    /// Decodes what [`SpanSums::encode`] wrote at the start of `bytes`;
    /// returns it and the rest. Sums of another chunk size are refused.
    pub(super) fn decode(bytes: &[u8]) -> Option<(SpanSums, &[u8])> {
        let mut r = ByteCursor::new(bytes);
        let (chunk, count, digest) = (r.u64()?, r.u64()?, r.array::<32>()?);
        if chunk != CHUNK {
            return None;
        }
        let count = usize::try_from(count).ok()?;
        if count > r.len() / 32 {
            return None;
        }
        let mut chunks = Vec::with_capacity(count);
        for _ in 0..count {
            chunks.push(r.array::<32>()?);
        }
        Some((SpanSums { digest, chunks }, r.rest()))
    }

    /// The digest as an image names it: `sha256:<hex>`.
    pub fn blob_digest(&self) -> Digest {
        Digest::from_sha256(self.digest)
    }
}

/// A remote blob, read at any offset; see the module docs.
#[derive(Debug)]
pub(crate) struct RemoteBlob {
    fetch: Arc<dyn BlobFetch>,
    len: u64,
    /// The stored index's sums, once known: from then on every fetched
    /// chunk is checked.
    sums: OnceLock<SpanSums>,
    recent: Mutex<VecDeque<(u64, Arc<[u8]>)>>,
    /// Chunks being fetched by some thread, which others wait for.
    in_flight: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Blob bytes fetched by range (the pass's stream not counted).
    fetched: AtomicU64,
    /// Chunks stored on disk, once a directory for them is given.
    disk: OnceLock<ChunkStore>,
    /// Read-ahead threads running.
    ahead: AtomicUsize,
    /// This blob, for the read-ahead threads to hold.
    me: Weak<RemoteBlob>,
}

/// A chunk one thread fetches and others wait for.
#[derive(Debug, Default)]
struct Slot {
    done: Mutex<Option<Result<Arc<[u8]>, String>>>,
    ready: Condvar,
}

impl Slot {
    fn finish(&self, outcome: Result<Arc<[u8]>, String>) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        *done = Some(outcome);
        self.ready.notify_all();
    }

    fn wait(&self) -> Result<Arc<[u8]>, String> {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(outcome) = done.as_ref() {
                return outcome.clone();
            }
            done = self.ready.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl RemoteBlob {
    pub(crate) fn new(fetch: Arc<dyn BlobFetch>) -> Arc<RemoteBlob> {
        Arc::new_cyclic(|me| RemoteBlob {
            len: fetch.len(),
            fetch,
            sums: OnceLock::new(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_CHUNKS)),
            in_flight: Mutex::new(HashMap::new()),
            fetched: AtomicU64::new(0),
            disk: OnceLock::new(),
            ahead: AtomicUsize::new(0),
            me: me.clone(),
        })
    }

    /// Keeps fetched chunks in `dir` (bounded to `max_bytes`), and serves
    /// them from there. Only once the sums are set: a stored chunk is
    /// used only after it passed its check.
    pub(crate) fn store_chunks_in(&self, dir: &Path, max_bytes: u64) -> io::Result<()> {
        let Some(sums) = self.sums.get() else {
            return Ok(());
        };
        let store = ChunkStore::open(dir, sums.blob_digest().hex(), self.len, CHUNK, max_bytes)?;
        let _ = self.disk.set(store);
        Ok(())
    }

    /// The blob's length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// What to call the blob in messages.
    pub(crate) fn name(&self) -> &str {
        self.fetch.name()
    }

    /// Bytes fetched by range so far.
    pub(crate) fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Sets the sums every later fetch is checked against. Chunks kept
    /// from before (fetched while the pass ran, unchecked) are dropped.
    pub(crate) fn set_sums(&self, sums: SpanSums) -> io::Result<()> {
        let chunks = self.len.div_ceil(CHUNK);
        if sums.chunks.len() as u64 != chunks {
            return Err(io::Error::other(format!(
                "{}: the stored index has sums for {} chunks, the blob has {chunks}",
                self.name(),
                sums.chunks.len()
            )));
        }
        let _ = self.sums.set(sums);
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset`; 0 at or past the end.
    /// Errors are [`FetchError`]s.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.read_chunks_at(buf, offset).map_err(fetch_error)
    }

    /// Fills `buf` with the bytes at `offset` in one request of exactly
    /// that range, outside the chunks: a table of contents whose place the
    /// manifest gives is read alone, not with the file data of the chunk
    /// around it, and is checked against its own digest, not the chunk
    /// sums (there are none before it is read). Errors are
    /// [`FetchError`]s.
    pub(crate) fn fetch_exact(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.fetch.fetch(offset, buf).map_err(fetch_error)?;
        self.fetched.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn read_chunks_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let want = usize::try_from(self.len.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let first = offset / CHUNK;
        let last = (offset + want as u64 - 1) / CHUNK;
        if self.sums.get().is_some() {
            self.read_ahead(first, last);
        }
        let chunks = self.chunks(first, last)?;
        let mut done = 0;
        for (k, data) in (first..=last).zip(&chunks) {
            let start = usize::try_from(offset + done as u64 - k * CHUNK).unwrap_or(0);
            let n = (want - done).min(data.len().saturating_sub(start));
            buf[done..done + n].copy_from_slice(&data[start..start + n]);
            done += n;
        }
        Ok(done)
    }

    /// Chunks `first..=last`, from memory, from another thread's fetch, or
    /// fetched here (the missing ones, one request per consecutive run).
    fn chunks(&self, first: u64, last: u64) -> io::Result<Vec<Arc<[u8]>>> {
        let mut have: Vec<Option<Arc<[u8]>>> = (first..=last)
            .map(|k| self.recent(k).or_else(|| self.stored(k)))
            .collect();
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for (k, slot) in (first..=last).zip(&have) {
                if slot.is_some() {
                    continue;
                }
                match in_flight.get(&k) {
                    Some(slot) => theirs.push((k, Arc::clone(slot))),
                    None => {
                        let slot = Arc::new(Slot::default());
                        in_flight.insert(k, Arc::clone(&slot));
                        mine.push((k, slot));
                    }
                }
            }
        }
        let mut failure = None;
        for run in runs(&mine) {
            let outcome = self.fetch_run(run[0].0, run.len());
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for (i, (k, slot)) in run.iter().enumerate() {
                in_flight.remove(k);
                let result = match &outcome {
                    Ok(datas) => Ok(Arc::clone(&datas[i])),
                    Err(e) => Err(e.to_string()),
                };
                slot.finish(result.clone());
                match result {
                    Ok(data) => have[(k - first) as usize] = Some(data),
                    Err(e) => failure = Some(e),
                }
            }
        }
        for (k, slot) in theirs {
            match slot.wait() {
                Ok(data) => have[(k - first) as usize] = Some(data),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            return Err(io::Error::other(e));
        }
        have.into_iter()
            .map(|c| c.ok_or_else(|| io::Error::other("chunk missing after its fetch")))
            .collect()
    }

    /// Chunk `k` from the disk store, if it is there and passes its check.
    fn stored(&self, k: u64) -> Option<Arc<[u8]>> {
        let disk = self.disk.get()?;
        let start = k * CHUNK;
        let len = usize::try_from(self.len.saturating_sub(start).min(CHUNK)).ok()?;
        let mut buf = vec![0u8; len];
        if !disk.get(k, &mut buf) {
            return None;
        }
        if !self.checks(k, &buf) {
            disk.forget(k);
            return None;
        }
        let data: Arc<[u8]> = Arc::from(buf);
        self.remember(k, &data);
        Some(data)
    }

    /// Starts fetching the chunks after `last` on other threads if the
    /// reader seems to be going through the blob in order (it read the
    /// chunk before `first` recently).
    fn read_ahead(&self, first: u64, last: u64) {
        let chunks = self.len.div_ceil(CHUNK);
        let sequential = first > 0 && self.recent(first - 1).is_some();
        if !sequential || last + 1 >= chunks {
            return;
        }
        let end = (last + READ_AHEAD).min(chunks - 1);
        if (last + 1..=end).all(|k| self.recent(k).is_some()) {
            return;
        }
        if self.ahead.fetch_add(1, Ordering::Relaxed) >= 2 {
            self.ahead.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let Some(me) = self.me.upgrade() else {
            self.ahead.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("layerfs-ahead".into())
            .spawn(move || {
                for k in last + 1..=end {
                    // A failure here is met again, and reported, by the
                    // read that needs the chunk.
                    if me.chunks(k, k).is_err() {
                        break;
                    }
                }
                me.ahead.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            self.ahead.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn recent(&self, k: u64) -> Option<Arc<[u8]>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .find(|(at, _)| *at == k)
            .map(|(_, data)| Arc::clone(data))
    }

    fn remember(&self, k: u64, data: &Arc<[u8]>) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT_CHUNKS {
            recent.pop_front();
        }
        recent.push_back((k, Arc::clone(data)));
    }

    /// Fetches `count` chunks from chunk `first` in one request and checks
    /// each; a chunk that fails its check is fetched once more on its own
    /// (a proxy may have mangled one response) before it is an error.
    fn fetch_run(&self, first: u64, count: usize) -> io::Result<Vec<Arc<[u8]>>> {
        let bytes = self.fetch_span(first, count as u64)?;
        let mut out = Vec::with_capacity(count);
        for (i, piece) in bytes.chunks(CHUNK as usize).enumerate() {
            let k = first + i as u64;
            let data: Arc<[u8]> = if self.checks(k, piece) {
                Arc::from(piece)
            } else {
                let again = self.refetch(k)?;
                Arc::from(again)
            };
            self.remember(k, &data);
            if let Some(disk) = self.disk.get() {
                disk.put(k, &data);
            }
            out.push(data);
        }
        Ok(out)
    }

    /// The bytes of `count` chunks from chunk `first`, in one request.
    fn fetch_span(&self, first: u64, count: u64) -> io::Result<Vec<u8>> {
        let start = first * CHUNK;
        let end = (start + count * CHUNK).min(self.len);
        let mut bytes = vec![0u8; usize::try_from(end - start).map_err(io::Error::other)?];
        self.fetch.fetch(start, &mut bytes)?;
        self.fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    fn refetch(&self, k: u64) -> io::Result<Vec<u8>> {
        let bytes = self.fetch_span(k, 1)?;
        let (start, end) = (k * CHUNK, k * CHUNK + bytes.len() as u64);
        if self.checks(k, &bytes) {
            return Ok(bytes);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: bytes {start}..{end} served by the registry do not match the layer's stored checksum (twice); nothing of them is used",
                self.name()
            ),
        ))
    }

    /// Whether chunk `k` is what was indexed (always, before sums are known).
    fn checks(&self, k: u64, data: &[u8]) -> bool {
        let Some(sums) = self.sums.get() else {
            return true;
        };
        let Some(expected) = usize::try_from(k).ok().and_then(|k| sums.chunks.get(k)) else {
            return false;
        };
        <[u8; 32]>::from(Sha256::digest(data)) == *expected
    }
}

/// Consecutive runs of the chunks `mine` (sorted, as claimed).
fn runs(mine: &[(u64, Arc<Slot>)]) -> Vec<&[(u64, Arc<Slot>)]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=mine.len() {
        if i == mine.len() || mine[i].0 != mine[i - 1].0 + 1 {
            if i > start {
                out.push(&mine[start..i]);
            }
            start = i;
        }
    }
    out
}

/// The indexing pass's view of a remote blob: one stream, hashed as it
/// goes; see the module docs.
#[derive(Debug)]
pub(crate) struct PassStream {
    blob: Arc<RemoteBlob>,
    state: Mutex<StreamState>,
}

struct StreamState {
    reader: Option<Box<dyn Read + Send>>,
    /// Bytes of the blob streamed and hashed so far.
    pos: u64,
    whole: Sha256,
    chunk: Sha256,
    sums: Vec<[u8; 32]>,
    /// Bytes fetched by the stream.
    streamed: u64,
}

impl std::fmt::Debug for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamState")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl PassStream {
    pub(crate) fn new(blob: Arc<RemoteBlob>) -> PassStream {
        PassStream {
            blob,
            state: Mutex::new(StreamState {
                reader: None,
                pos: 0,
                whole: Sha256::new(),
                chunk: Sha256::new(),
                sums: Vec::new(),
                streamed: 0,
            }),
        }
    }

    /// Reads at `offset`: from the stream when it is there or a little
    /// ahead, by range otherwise. Errors are [`FetchError`]s.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.stream_at(buf, offset).map_err(fetch_error)
    }

    fn stream_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let want = usize::try_from(self.blob.len.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if offset < state.pos || offset - state.pos > READ_THROUGH {
            drop(state);
            return self.blob.read_at(&mut buf[..want], offset);
        }
        self.advance(&mut state, offset)?;
        let n = self.pull(&mut state, &mut buf[..want])?;
        Ok(n)
    }

    /// Streams (hashing, discarding) up to `to`.
    fn advance(&self, state: &mut StreamState, to: u64) -> io::Result<()> {
        let mut scratch = [0u8; 64 * 1024];
        while state.pos < to {
            let step = usize::try_from(to - state.pos)
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            self.pull(state, &mut scratch[..step])?;
        }
        Ok(())
    }

    /// Reads the next bytes of the stream into `buf`, hashing them.
    fn pull(&self, state: &mut StreamState, buf: &mut [u8]) -> io::Result<usize> {
        if state.reader.is_none() {
            if state.pos == 0 && self.blob.len > 1 {
                // Reads after the mount need ranges: a registry that
                // ignores them fails the first mount, not every read after.
                let mut last = [0u8; 1];
                self.blob.fetch.fetch(self.blob.len - 1, &mut last)?;
            }
            state.reader = Some(self.blob.fetch.stream(state.pos)?);
        }
        let reader = state
            .reader
            .as_mut()
            .ok_or_else(|| io::Error::other("no stream"))?;
        let n = loop {
            match reader.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: the registry's stream ended at byte {} of {}",
                    self.blob.name(),
                    state.pos,
                    self.blob.len
                ),
            ));
        }
        let got = &buf[..n];
        state.whole.update(got);
        state.streamed += n as u64;
        // Chunk sums: split the bytes at chunk boundaries.
        let mut rest = got;
        while !rest.is_empty() {
            let into_chunk = state.pos % CHUNK;
            let take = usize::try_from(CHUNK - into_chunk)
                .unwrap_or(usize::MAX)
                .min(rest.len());
            state.chunk.update(&rest[..take]);
            state.pos += take as u64;
            rest = &rest[take..];
            if state.pos % CHUNK == 0 || state.pos == self.blob.len {
                let sum = std::mem::take(&mut state.chunk).finalize();
                state.sums.push(sum.into());
            }
        }
        Ok(n)
    }

    /// Streams the rest of the blob and returns what it hashed: the
    /// digest to check and the sums to store.
    pub(crate) fn finish(&self) -> io::Result<SpanSums> {
        self.finish_stream().map_err(fetch_error)
    }

    fn finish_stream(&self) -> io::Result<SpanSums> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let len = self.blob.len;
        self.advance(&mut state, len)?;
        if len == 0 {
            return Ok(SpanSums {
                digest: Sha256::digest([]).into(),
                chunks: Vec::new(),
            });
        }
        // The stream must end where the descriptor says the blob does.
        if let Some(reader) = state.reader.as_mut() {
            let mut one = [0u8; 1];
            if matches!(reader.read(&mut one), Ok(n) if n > 0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the registry sent more than the {len} bytes the manifest gives the blob",
                        self.blob.name()
                    ),
                ));
            }
        }
        state.reader = None;
        log::debug!(
            "{}: {} bytes streamed by the indexing pass",
            self.blob.name(),
            state.streamed
        );
        Ok(SpanSums {
            digest: std::mem::take(&mut state.whole).finalize().into(),
            chunks: std::mem::take(&mut state.sums),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
