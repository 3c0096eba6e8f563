use super::*;

/// A blob in memory that counts requests and can serve wrong bytes.
#[derive(Debug)]
pub(crate) struct MemoryBlob {
    pub bytes: Vec<u8>,
    pub requests: AtomicU64,
    pub served: AtomicU64,
    /// Flip the byte at this offset in every range response.
    pub corrupt_at: Mutex<Option<u64>>,
}

impl MemoryBlob {
    pub(crate) fn new(bytes: Vec<u8>) -> Arc<MemoryBlob> {
        Arc::new(MemoryBlob {
            bytes,
            requests: AtomicU64::new(0),
            served: AtomicU64::new(0),
            corrupt_at: Mutex::new(None),
        })
    }
}

impl BlobFetch for MemoryBlob {
    fn name(&self) -> &str {
        "memory"
    }
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn fetch(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let start = offset as usize;
        let end = start + buf.len();
        let src = self
            .bytes
            .get(start..end)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        if let Some(at) = *self.corrupt_at.lock().unwrap() {
            if (offset..end as u64).contains(&at) {
                buf[(at - offset) as usize] ^= 1;
            }
        }
        self.served.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn stream(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let rest = self.bytes[offset as usize..].to_vec();
        self.served.fetch_add(rest.len() as u64, Ordering::Relaxed);
        Ok(Box::new(io::Cursor::new(rest)))
    }
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn the_pass_hashes_the_whole_blob_once_whatever_it_skips() {
    let bytes = pseudo_random(3 * CHUNK as usize + 1234);
    let memory = MemoryBlob::new(bytes.clone());
    let blob = RemoteBlob::new(memory.clone());
    let pass = PassStream::new(Arc::clone(&blob));
    let mut buf = [0u8; 1000];
    assert_eq!(pass.read_at(&mut buf, 0).unwrap(), 1000);
    assert_eq!(&buf[..], &bytes[..1000]);
    // A skip forward is read through.
    let n = pass.read_at(&mut buf, 2 * CHUNK + 10).unwrap();
    assert_eq!(&buf[..n], &bytes[2 * CHUNK as usize + 10..][..n]);
    // A read backwards goes by range and leaves the stream alone.
    assert_eq!(pass.read_at(&mut buf, 5).unwrap(), 1000);
    assert_eq!(&buf[..], &bytes[5..1005]);
    let sums = pass.finish().unwrap();
    assert_eq!(sums.digest, <[u8; 32]>::from(Sha256::digest(&bytes)));
    assert_eq!(sums.chunks.len(), 4);
    for (k, sum) in sums.chunks.iter().enumerate() {
        let piece = bytes.chunks(CHUNK as usize).nth(k).unwrap();
        assert_eq!(*sum, <[u8; 32]>::from(Sha256::digest(piece)));
    }
    // A one-byte probe of ranges, one stream for the pass, one range
    // for the backward read.
    assert_eq!(memory.requests.load(Ordering::Relaxed), 3);
    let mut encoded = Vec::new();
    sums.encode(&mut encoded);
    encoded.push(7);
    let (back, rest) = SpanSums::decode(&encoded).unwrap();
    assert_eq!(back, sums);
    assert_eq!(rest, &[7]);
    assert!(SpanSums::decode(&encoded[..encoded.len() - 40]).is_none());
}

#[test]
fn range_reads_coalesce_are_remembered_and_checked() {
    let bytes = pseudo_random(5 * CHUNK as usize + 99);
    let memory = MemoryBlob::new(bytes.clone());
    let blob = RemoteBlob::new(memory.clone());
    let pass = PassStream::new(RemoteBlob::new(memory.clone()));
    let sums = pass.finish().unwrap();
    blob.set_sums(sums).unwrap();
    let before = memory.requests.load(Ordering::Relaxed);
    // A read across a chunk boundary: one request for both chunks.
    let mut buf = vec![0u8; 4096];
    let at = 2 * CHUNK - 100;
    assert_eq!(blob.read_at(&mut buf, at).unwrap(), 4096);
    assert_eq!(&buf[..], &bytes[at as usize..][..4096]);
    assert_eq!(memory.requests.load(Ordering::Relaxed), before + 1);
    // Again: from memory.
    assert_eq!(blob.read_at(&mut buf, at + 7).unwrap(), 4096);
    assert_eq!(memory.requests.load(Ordering::Relaxed), before + 1);
    // The short last chunk, and past the end.
    let n = blob.read_at(&mut buf, 5 * CHUNK + 50).unwrap();
    assert_eq!(&buf[..n], &bytes[5 * CHUNK as usize + 50..]);
    assert_eq!(blob.read_at(&mut buf, 6 * CHUNK).unwrap(), 0);
    // A registry serving one wrong byte: refetched once, then refused.
    *memory.corrupt_at.lock().unwrap() = Some(4 * CHUNK + 3);
    let err = blob.read_at(&mut buf, 4 * CHUNK).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert!(err.to_string().contains("do not match"), "{err}");
    // Sums of another length are refused.
    let short = SpanSums {
        digest: [0; 32],
        chunks: vec![[0; 32]],
    };
    assert!(RemoteBlob::new(memory).set_sums(short).is_err());
}

#[test]
fn threads_reading_one_chunk_share_one_fetch() {
    let bytes = pseudo_random(2 * CHUNK as usize);
    let memory = MemoryBlob::new(bytes.clone());
    let blob = RemoteBlob::new(memory.clone());
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let blob = Arc::clone(&blob);
            let bytes = &bytes;
            s.spawn(move || {
                let mut buf = vec![0u8; 512];
                blob.read_at(&mut buf, CHUNK + t * 1000).unwrap();
                assert_eq!(&buf[..], &bytes[(CHUNK + t * 1000) as usize..][..512]);
            });
        }
    });
    // Coalesced (or remembered): never one fetch per thread.
    assert!(memory.requests.load(Ordering::Relaxed) <= 2);
}

/// A gzip stream of `data`, in one member (no resume points but the
/// pass's checkpoints).
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn a_remote_gzip_layer_is_streamed_once_then_read_by_a_few_chunks() {
    use crate::source::{Codec, LayerSource, SeekIndex, SourceError};
    let data = crate::source::test_support::far_data(24 << 20);
    let blob = gzip(&data);
    let digest = crate::digest::Digest::sha256(&blob);
    let memory = MemoryBlob::new(blob.clone());
    let first = LayerSource::open_blob(memory.clone(), digest.clone(), Some(Codec::Gzip)).unwrap();
    let mut pass = first.index_pass();
    io::copy(&mut pass, &mut io::sink()).unwrap();
    let seek = pass.finish().unwrap();
    assert_eq!(seek.blob_digest(), Some(digest.clone()));
    // The pass fetched the blob once, as one stream (after a one-byte
    // probe that the registry serves ranges).
    assert_eq!(memory.requests.load(Ordering::Relaxed), 2);
    assert_eq!(memory.served.load(Ordering::Relaxed), blob.len() as u64 + 1);

    // A later mount, from the stored index: one read near the end
    // fetches a checkpoint's span, not the blob.
    let memory = MemoryBlob::new(blob.clone());
    let later = LayerSource::open_blob(memory.clone(), digest.clone(), Some(Codec::Gzip)).unwrap();
    let mut stored = Vec::new();
    seek.encode(&mut stored);
    later.attach(SeekIndex::decode(&stored).unwrap()).unwrap();
    let at = data.len() as u64 - 10_000;
    let mut buf = vec![0u8; 4096];
    later.read_exact_at(at, &mut buf).unwrap();
    assert_eq!(&buf[..], &data[at as usize..][..4096]);
    let served = memory.served.load(Ordering::Relaxed);
    assert!(served <= 4 * CHUNK, "{served} bytes fetched for one read");
    assert!(served < blob.len() as u64 / 2);
    assert_eq!(later.fetched_bytes(), served);

    // Chunks kept on disk serve a later mount without a fetch.
    let chunks = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let memory = MemoryBlob::new(blob.clone());
        let mut again =
            LayerSource::open_blob(memory.clone(), digest.clone(), Some(Codec::Gzip)).unwrap();
        again.set_chunk_dir(chunks.path().to_path_buf());
        again.attach(SeekIndex::decode(&stored).unwrap()).unwrap();
        again.read_exact_at(at, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[at as usize..][..4096]);
        let fetched = memory.served.load(Ordering::Relaxed);
        match round {
            0 => assert!(fetched > 0),
            _ => assert_eq!(fetched, 0, "stored chunks fetched again"),
        }
    }

    // A registry that now serves other bytes: an error, never data.
    let memory = MemoryBlob::new(blob.clone());
    *memory.corrupt_at.lock().unwrap() = Some(blob.len() as u64 - 5000);
    let bad = LayerSource::open_blob(memory, digest, Some(Codec::Gzip)).unwrap();
    bad.attach(SeekIndex::decode(&stored).unwrap()).unwrap();
    let err = bad.read_exact_at(at, &mut buf).unwrap_err();
    assert!(matches!(err, SourceError::Remote { .. }), "{err}");
    assert!(err.to_string().contains("memory"), "{err}");
}

#[test]
fn a_remote_multi_frame_zstd_layer_reads_only_the_frames_it_needs() {
    use crate::source::{Codec, LayerSource, SeekIndex};
    let data = crate::source::test_support::far_data(16 << 20);
    // Frames of 1 MiB, as pzstd and zstd:chunked write them.
    let blob: Vec<u8> = data
        .chunks(1 << 20)
        .flat_map(|frame| zstd::encode_all(frame, 3).unwrap())
        .collect();
    let digest = crate::digest::Digest::sha256(&blob);
    let memory = MemoryBlob::new(blob.clone());
    // Without a codec from the media type, the first bytes tell.
    let first = LayerSource::open_blob(memory.clone(), digest.clone(), None).unwrap();
    assert_eq!(first.codec(), Codec::Zstd);
    let mut pass = first.index_pass();
    io::copy(&mut pass, &mut io::sink()).unwrap();
    let seek = pass.finish().unwrap();
    assert_eq!(seek.blob_digest(), Some(digest.clone()));
    let mut stored = Vec::new();
    seek.encode(&mut stored);

    let memory = MemoryBlob::new(blob.clone());
    let later = LayerSource::open_blob(memory.clone(), digest, Some(Codec::Zstd)).unwrap();
    later.attach(SeekIndex::decode(&stored).unwrap()).unwrap();
    let at = 11 * (1 << 20) + 12345;
    let mut buf = vec![0u8; 8192];
    later.read_exact_at(at, &mut buf).unwrap();
    assert_eq!(&buf[..], &data[at as usize..][..8192]);
    let served = memory.served.load(Ordering::Relaxed);
    assert!(served <= 2 * CHUNK, "{served} bytes fetched for one frame");
}
