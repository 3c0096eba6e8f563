//! Finishing, in the background, a spilled frame that a read has started.
//!
//! A cold read in a frame without resume points decodes from the frame's
//! start up to the bytes it asked for and spills them (see the parent
//! module). A later read of the same frame past that watermark decodes on
//! with the decoder the first read left, if it is still kept, and from the
//! frame's start again if not: with a few random reads per 8 MiB pzstd
//! frame, about half of all reads decoded, and the decoders of four
//! frames at most are kept. Once a read's bytes are in, one thread per
//! layer decodes the rest of that frame with the decoder the read left, on
//! the core the reader is not using, so the frame's later reads are
//! `pread`s of the spill file.
//!
//! What it may cost is bounded: only frames of at most `limit` bytes (a
//! whole stream of one frame is never decoded ahead), only with a decoder
//! a read left positioned (nothing is decoded twice, and nothing is
//! started for a frame no read is in), one frame at a time, and an offer
//! made while the thread is busy with another is dropped, so a burst of
//! random reads queues no work. The thread runs at a lower priority, and
//! takes the frame's lock one chunk at a time, so a read of the frame it
//! is decoding waits for one chunk at most. The disk it takes is the frame's
//! decompressed bytes, which reading the frame to its end spills anyway.
//! The thread starts with the first offer and ends with the layer's access.

use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, OnceLock};

use super::SpillCache;

/// Largest frame finished ahead of reads: twice pzstd's 8 MiB frames, a
/// few milliseconds of decoding on a spare core. xz blocks of `xz -T`
/// (three times the dictionary: 24 MiB at -6) and whole one-frame streams
/// are over it.
pub(in crate::source) const FINISH_LIMIT: u64 = 16 * 1024 * 1024;

/// The finisher thread's nice value: it yields to the reads it works
/// ahead of, and to the rest of the machine.
const FINISH_NICE: libc::c_int = 10;

/// Decodes the rest of started frames of one [`SpillCache`] in the
/// background; see the module docs.
pub(in crate::source) struct Finisher {
    spill: Arc<SpillCache>,
    /// Largest segment finished, decompressed.
    limit: u64,
    /// The thread's queue, once started; `None` if it could not start
    /// (reads then go on as without it).
    queue: OnceLock<Option<SyncSender<usize>>>,
}

impl Finisher {
    pub(in crate::source) fn new(spill: Arc<SpillCache>, limit: u64) -> Finisher {
        Finisher {
            spill,
            limit,
            queue: OnceLock::new(),
        }
    }

    /// Asks for segment `seg`, which a read has just been served from, to
    /// be decoded to its end, if it qualifies and the thread is idle.
    pub(in crate::source) fn offer(&self, seg: usize) {
        if !self.spill.unfinished(seg, self.limit) {
            return;
        }
        if let Some(queue) = self.queue.get_or_init(|| self.start()) {
            // Full: the thread is finishing another frame and one more
            // waits; this one is left to its reads.
            let _ = queue.try_send(seg);
        }
    }

    fn start(&self) -> Option<SyncSender<usize>> {
        let (queue, offers) = mpsc::sync_channel::<usize>(1);
        let spill = Arc::clone(&self.spill);
        let started = std::thread::Builder::new()
            .name("spill-finish".into())
            .spawn(move || {
                // Decoding ahead is worth a core no one else wants: on a
                // busy machine the reads decode what they need themselves.
                if let Err(e) = crate::sys::lower_thread_priority(FINISH_NICE) {
                    log::debug!("spill finisher at normal priority: {e}");
                }
                // Ends when the finisher (the sender) is dropped.
                while let Ok(seg) = offers.recv() {
                    spill.finish(seg);
                }
            });
        match started {
            Ok(_) => Some(queue),
            Err(e) => {
                log::debug!("cannot start the spill finisher ({e}); frames are decoded per read");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SegmentSpec, FILL_CHUNK, LIVE_DECODERS};
    use super::*;
    use crate::source::access::DecodeCounter;
    use std::io;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    const SEGMENT: u64 = 3 * FILL_CHUNK + 777;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// A spill of `count` segments of [`SEGMENT`] bytes over `data`, each
    /// decoded from its own start.
    fn spill(
        dir: &std::path::Path,
        data: &Arc<Vec<u8>>,
        count: usize,
        counter: &Arc<DecodeCounter>,
    ) -> Arc<SpillCache> {
        let specs = (0..count)
            .map(|i| SegmentSpec {
                frame: i,
                start: i as u64 * SEGMENT,
                end: Some((i as u64 + 1) * SEGMENT),
            })
            .collect();
        let data = Arc::clone(data);
        let open: super::super::FrameOpener = Arc::new(move |i| {
            let start = i * SEGMENT as usize;
            Ok(Box::new(io::Cursor::new(data[start..].to_vec())) as Box<_>)
        });
        Arc::new(SpillCache::new(dir, specs, open, Arc::clone(counter)))
    }

    /// Offers `seg` until the thread has filled it to `len` (an offer made
    /// while the queue is full is dropped, by design).
    fn finish_and_wait(finisher: &Finisher, seg: usize, len: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while finisher.spill.segments[seg].filled.load(Ordering::Acquire) < len {
            assert!(Instant::now() < deadline, "segment {seg} never finished");
            finisher.offer(seg);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_started_frame_is_finished_once_and_later_reads_decode_nothing() {
        let data = Arc::new(sample(2 * SEGMENT as usize));
        let counter = Arc::new(DecodeCounter::default());
        let dir = tempfile::tempdir().expect("dir");
        let spill = spill(dir.path(), &data, 2, &counter);
        let finisher = Finisher::new(Arc::clone(&spill), SEGMENT);
        let mut buf = [0u8; 4096];
        spill.read(1, SEGMENT + 10, &mut buf).expect("read");
        assert_eq!(buf[..], data[SEGMENT as usize + 10..][..4096]);
        finish_and_wait(&finisher, 1, SEGMENT);
        // Every byte of the frame once, and none of the frame not read.
        assert_eq!(counter.get(), SEGMENT);
        assert_eq!(spill.segments[0].filled.load(Ordering::Acquire), 0);
        let end = 2 * SEGMENT as usize - 4096;
        spill.read(1, end as u64, &mut buf).expect("read");
        assert_eq!(buf[..], data[end..]);
        assert_eq!(counter.get(), SEGMENT);
        assert!(!spill.unfinished(1, SEGMENT));
    }

    #[test]
    fn frames_over_the_limit_or_without_a_decoder_are_left_alone() {
        let count = LIVE_DECODERS + 2;
        let data = Arc::new(sample(count * SEGMENT as usize));
        let counter = Arc::new(DecodeCounter::default());
        let dir = tempfile::tempdir().expect("dir");
        let spill = spill(dir.path(), &data, count, &counter);
        let mut buf = [0u8; 100];
        // Segment 0 started first: its decoder is dropped by the reads of
        // the others, which are kept.
        for seg in 0..count {
            spill
                .read(seg, seg as u64 * SEGMENT, &mut buf)
                .expect("read");
        }
        let decoded = counter.get();
        assert_eq!(decoded, count as u64 * FILL_CHUNK);
        assert!(!spill.unfinished(count - 1, SEGMENT - 1));
        let finisher = Finisher::new(Arc::clone(&spill), SEGMENT);
        // Segment 0 holds no decoder: the thread leaves it; the last one
        // has one and is finished.
        for _ in 0..10 {
            finisher.offer(0);
            std::thread::sleep(Duration::from_millis(2));
        }
        finish_and_wait(&finisher, count - 1, SEGMENT);
        assert_eq!(counter.get(), decoded + SEGMENT - FILL_CHUNK);
        assert_eq!(spill.segments[0].filled.load(Ordering::Acquire), FILL_CHUNK);
    }
}
