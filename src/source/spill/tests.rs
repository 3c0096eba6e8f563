use super::*;

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn opener(data: Arc<Vec<u8>>) -> FrameOpener {
    Arc::new(move |_| Ok(Box::new(io::Cursor::new(data.as_ref().clone())) as Box<_>))
}

#[test]
fn reads_everywhere_and_decodes_each_byte_once() {
    let data = Arc::new(sample(3 * FILL_CHUNK as usize + 12_345));
    let counter = Arc::new(DecodeCounter::default());
    let dir = tempfile::tempdir().expect("dir");
    let spill = SpillAccess::new(dir.path(), opener(Arc::clone(&data)), Arc::clone(&counter));
    for pass in 0..2 {
        for (off, len) in [(2_500_000usize, 4096usize), (5, 10), (0, 100_000)] {
            let mut buf = vec![0; len];
            spill.read_exact_at(off as u64, &mut buf).expect("read");
            assert_eq!(buf, data[off..off + len], "pass {pass} offset {off}");
        }
        let mut all = vec![0; data.len()];
        spill.read_exact_at(0, &mut all).expect("read all");
        assert_eq!(all, *data);
    }
    assert_eq!(counter.get(), data.len() as u64);
    let mut past = [0u8; 2];
    let err = spill
        .read_exact_at(data.len() as u64 - 1, &mut past)
        .expect_err("past end");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

/// Zeros between, around and at the end of data: every byte reads back,
/// and the spill file holds only the blocks that are not all zeros.
#[test]
fn zero_blocks_are_left_as_holes_and_read_back_as_zeros() {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = vec![0u8; 8 * FILL_CHUNK as usize];
    bytes[5000..5010].copy_from_slice(b"not zeros!");
    let middle = 3 * FILL_CHUNK as usize + 4095;
    bytes[middle..middle + 2].copy_from_slice(b"xy");
    bytes.extend_from_slice(&sample(10_000));
    bytes.resize(bytes.len() + 3 * FILL_CHUNK as usize + 7, 0);
    let data = Arc::new(bytes);
    let counter = Arc::new(DecodeCounter::default());
    let dir = tempfile::tempdir().expect("dir");
    let spill = SpillAccess::new(dir.path(), opener(Arc::clone(&data)), counter);
    for (off, len) in [(4990usize, 30usize), (middle - 10, 20), (0, data.len())] {
        let mut buf = vec![0xa5; len];
        spill.read_exact_at(off as u64, &mut buf).expect("read");
        assert!(buf == data[off..off + len], "bytes at {off} differ");
    }
    let file = spill.0.file.get().expect("spill file");
    // One block around 5000, two around `middle`, three for the sample.
    let allocated = file.metadata().expect("metadata").blocks() * 512;
    assert!(
        allocated <= 8 * HOLE_BLOCK,
        "{allocated} bytes allocated for {} of data",
        data.len()
    );
}

/// Gives its good bytes, then fails as a zstd frame with a bad
/// checksum does: any call that asks past them fails, and hands out
/// nothing.
struct DamagedAfter(io::Cursor<Vec<u8>>);

impl Read for DamagedAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.0.get_ref().len() as u64 - self.0.position();
        if buf.len() as u64 > left {
            return Err(io::Error::other("checksum mismatch"));
        }
        self.0.read(buf)
    }
}

#[test]
fn bytes_before_damage_read_and_the_damage_fails_every_time() {
    // Found by the layer_source fuzz target: a zstd frame with a bad
    // checksum indexed fine (the tar ended before the frame did), but
    // every read failed, since the fill decodes past what it needs.
    let data = sample(100_000);
    let good = data.clone();
    let open: FrameOpener =
        Arc::new(move |_| Ok(Box::new(DamagedAfter(io::Cursor::new(good.clone()))) as Box<_>));
    let counter = Arc::new(DecodeCounter::default());
    let dir = tempfile::tempdir().expect("dir");
    let spill = SpillAccess::new(dir.path(), open, counter);
    for _ in 0..2 {
        let mut buf = vec![0; 4096];
        spill
            .read_exact_at(5000, &mut buf)
            .expect("read before the damage");
        assert_eq!(buf, data[5000..9096]);
        let mut across = vec![0; 10];
        let err = spill
            .read_exact_at(99_995, &mut across)
            .expect_err("read across the damage");
        assert_eq!(err.to_string(), "checksum mismatch");
        let mut last = [0u8; 5];
        spill
            .read_exact_at(99_995, &mut last)
            .expect("last good bytes");
        assert_eq!(last, data[99_995..]);
    }
}

#[test]
fn concurrent_readers_see_the_same_bytes() {
    let data = Arc::new(sample(5 * FILL_CHUNK as usize));
    let counter = Arc::new(DecodeCounter::default());
    let dir = tempfile::tempdir().expect("dir");
    let spill = SpillAccess::new(dir.path(), opener(Arc::clone(&data)), Arc::clone(&counter));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (spill, data) = (&spill, &data);
            s.spawn(move || {
                for i in 0..200u64 {
                    let off = (i * 7919 + t * 104_729) * 97 % (data.len() as u64 - 5000);
                    let mut buf = vec![0; 5000];
                    spill.read_exact_at(off, &mut buf).expect("read");
                    assert_eq!(buf, data[off as usize..off as usize + 5000]);
                }
            });
        }
    });
    assert!(counter.get() <= data.len() as u64);
}

#[test]
fn filled_ranges_are_read_without_the_decoder_lock() {
    let data = Arc::new(sample(3 * FILL_CHUNK as usize));
    let dir = tempfile::tempdir().expect("dir");
    let spill = SpillAccess::new(dir.path(), opener(Arc::clone(&data)), Arc::default());
    let mut buf = vec![0u8; 1000];
    spill
        .read_exact_at(10, &mut buf)
        .expect("fill the first chunk");
    // Hold the decoder lock as a long fill would.
    let _filling = lock(&spill.0.segments[0].filler);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = vec![0u8; 5000];
            let result = spill.read_exact_at(FILL_CHUNK - 5000, &mut buf);
            tx.send((result.is_ok(), buf)).expect("send");
        });
        let (ok, buf) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a filled range waited for the decoder lock");
        assert!(ok);
        let off = FILL_CHUNK as usize - 5000;
        assert_eq!(buf, data[off..off + 5000]);
    });
}

/// Hands out `data` slowly, one chunk per `delay`.
struct Slow {
    data: io::Cursor<Vec<u8>>,
    delay: Duration,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::thread::sleep(self.delay);
        let n = buf.len().min(FILL_CHUNK as usize);
        self.data.read(&mut buf[..n])
    }
}

#[test]
fn a_reader_behind_a_long_fill_does_not_wait_for_all_of_it() {
    let data = Arc::new(sample(40 * FILL_CHUNK as usize));
    let d = Arc::clone(&data);
    let open: FrameOpener = Arc::new(move |_| {
        Ok(Box::new(Slow {
            data: io::Cursor::new(d.as_ref().clone()),
            delay: Duration::from_millis(50),
        }) as Box<_>)
    });
    let dir = tempfile::tempdir().expect("dir");
    let spill = SpillAccess::new(dir.path(), open, Arc::default());
    std::thread::scope(|s| {
        // Two seconds of filling, to the end.
        s.spawn(|| {
            let mut buf = [0u8; 10];
            spill
                .read_exact_at(data.len() as u64 - 10, &mut buf)
                .expect("far read");
        });
        std::thread::sleep(Duration::from_millis(120));
        let started = std::time::Instant::now();
        let mut buf = [0u8; 10];
        spill
            .read_exact_at(2 * FILL_CHUNK, &mut buf)
            .expect("near read");
        assert_eq!(buf[..], data[2 * FILL_CHUNK as usize..][..10]);
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "waited {:?}",
            started.elapsed()
        );
    });
}

#[test]
fn an_unusable_spill_dir_decodes_per_read() {
    let data = Arc::new(sample(3 * FILL_CHUNK as usize));
    let counter = Arc::new(DecodeCounter::default());
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("no-such-dir");
    let spill = SpillAccess::new(&missing, opener(Arc::clone(&data)), Arc::clone(&counter));
    for (off, len) in [(0usize, 10usize), (10, 5000), (2_000_000, 100), (7, 3)] {
        let mut buf = vec![0u8; len];
        spill.read_exact_at(off as u64, &mut buf).expect("read");
        assert_eq!(buf, data[off..off + len], "offset {off}");
    }
    assert!(spill.0.failed.load(Ordering::Relaxed), "gave up on the dir");
    // Forward reads went on from one decoder; the last read went back
    // to the start: 2_000_100 + 10 bytes decoded, not a fill chunk.
    assert_eq!(counter.get(), 2_000_100 + 10);
    // Creating the directory now changes nothing: no retry, no file.
    std::fs::create_dir(&missing).expect("mkdir");
    let mut buf = [0u8; 4];
    spill.read_exact_at(20, &mut buf).expect("read");
    assert_eq!(buf[..], data[20..24]);
    assert_eq!(std::fs::read_dir(&missing).expect("list").count(), 0);
}

#[test]
fn segments_fill_independently_and_decoders_are_capped() {
    // Eight segments a little over one fill chunk, each decoded from
    // its own "frame".
    let seg_len = FILL_CHUNK as usize + 50_000;
    let data = Arc::new(sample(8 * seg_len));
    let counter = Arc::new(DecodeCounter::default());
    let d = Arc::clone(&data);
    let open: FrameOpener =
        Arc::new(move |i| Ok(Box::new(io::Cursor::new(d[i * seg_len..].to_vec())) as Box<_>));
    let specs = (0..8)
        .map(|i| SegmentSpec {
            frame: i,
            start: (i * seg_len) as u64,
            end: Some(((i + 1) * seg_len) as u64),
        })
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    let spill = SpillCache::new(dir.path(), specs, open, Arc::clone(&counter));
    for i in (0..8).rev() {
        let off = i * seg_len + 1000;
        let mut buf = [0u8; 10];
        spill.read(i, off as u64, &mut buf).expect("read");
        assert_eq!(buf, data[off..off + 10]);
    }
    // One chunk per segment, each kept decoder parked at its chunk end.
    assert_eq!(counter.get(), 8 * FILL_CHUNK);
    assert_eq!(lock(&spill.live).len(), LIVE_DECODERS);
    let kept = spill
        .segments
        .iter()
        .filter(|s| lock(&s.filler).decoder.is_some())
        .count();
    assert_eq!(kept, LIVE_DECODERS);
    // The tail of a segment whose decoder was kept needs no re-decoding.
    let mut buf = [0u8; 10];
    let off = seg_len - 10;
    spill.read(0, off as u64, &mut buf).expect("read");
    assert_eq!(buf, data[off..off + 10]);
    assert_eq!(counter.get(), 8 * FILL_CHUNK + 50_000);
    // One whose decoder was dropped re-decodes its filled part.
    let off = 8 * seg_len - 10;
    spill.read(7, off as u64, &mut buf).expect("read");
    assert_eq!(buf, data[off..off + 10]);
    assert_eq!(counter.get(), 8 * FILL_CHUNK + 50_000 + seg_len as u64);
}
