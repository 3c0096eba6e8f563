use super::*;
use std::io::{Read, Write};
use std::sync::Arc;

use crate::source::access::DecodeCounter;
use crate::source::gzip;
use crate::source::test_support::{index_of, temp_file};

/// `len` pseudo-random bytes: nothing in them repeats, so deflate copies
/// nothing.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A raw deflate stream of `before` then `after`, flushed to a byte
/// boundary between them (the history kept), with the offset of that
/// boundary: a resume point at bit 0 of a byte, `before` its window.
fn flushed(before: &[u8], after: &[u8], level: u32) -> (Vec<u8>, usize) {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
    z.write_all(before).expect("deflate");
    z.flush().expect("sync flush");
    let at = z.get_ref().len();
    z.write_all(after).expect("deflate");
    (z.finish().expect("deflate"), at)
}

#[test]
fn a_window_nothing_refers_to_is_all_zeros() {
    let window = noise(WINDOW, 1);
    for level in [0, 1, 6, 9] {
        let (stream, at) = flushed(&window, &noise(100_000, 2), level);
        match sparsen(&stream[at..], 0, &window) {
            Sparsened::Sparse(sparse) => assert!(sparse.iter().all(|&b| b == 0), "level {level}"),
            other => panic!("level {level}: {other:?}"),
        }
    }
}

#[test]
fn copied_bytes_are_kept_and_only_they() {
    let window = noise(WINDOW, 3);
    // The output after the checkpoint repeats two stretches of the window
    // (within zlib's reach: it emits no distance over 32 KiB less 262).
    let mut after = noise(1000, 4);
    after.extend_from_slice(&window[2000..2300]);
    after.extend_from_slice(&noise(1000, 5));
    after.extend_from_slice(&window[WINDOW - 2000..WINDOW - 1500]);
    after.extend_from_slice(&noise(50_000, 6));
    for level in [1, 6, 9] {
        let (stream, at) = flushed(&window, &after, level);
        let Sparsened::Sparse(sparse) = sparsen(&stream[at..], 0, &window) else {
            panic!("level {level}: not sparse");
        };
        // The stretches whole; elsewhere only what a short chance match
        // of the noise copies (level 9 takes 3-byte matches far back: a
        // hundred bytes here).
        let mut stray = 0;
        for (i, (&kept, &was)) in sparse.iter().zip(&window).enumerate() {
            let copied = (2000..2300).contains(&i) || (WINDOW - 2000..WINDOW - 1500).contains(&i);
            if copied {
                assert_eq!(kept, was, "level {level}, byte {i}");
            } else if kept != 0 {
                stray += 1;
            }
        }
        assert!(
            stray < WINDOW / 100,
            "level {level}: {stray} bytes kept outside"
        );
    }
}

#[test]
fn a_stream_that_ends_before_32_kib_needs_only_what_it_copies() {
    let window = noise(WINDOW, 7);
    let mut after = window[5000..5100].to_vec();
    after.extend_from_slice(b"end");
    let (stream, at) = flushed(&window, &after, 6);
    let Sparsened::Sparse(sparse) = sparsen(&stream[at..], 0, &window) else {
        panic!("not sparse");
    };
    assert_eq!(sparse[5000..5100], window[5000..5100]);
    assert_eq!(
        sparse.iter().filter(|&&b| b != 0).count(),
        window[5000..5100].iter().filter(|&&b| b != 0).count()
    );
}

#[test]
fn a_short_input_asks_for_more_and_garbage_keeps_the_window() {
    let window = noise(WINDOW, 8);
    let (stream, at) = flushed(&window, &noise(100_000, 9), 6);
    assert_eq!(
        sparsen(&stream[at..at + 1000], 0, &window),
        Sparsened::Short
    );
    // Type 3 blocks do not exist.
    let garbage = [0b111u8; 64];
    assert!(matches!(sparsen(&garbage, 0, &window), Sparsened::Full(_)));
    // A distance past the start of a short window.
    let (stream, at) = flushed(&window, &window[WINDOW - 1000..WINDOW - 800], 6);
    assert!(matches!(
        sparsen(&stream[at..], 0, &window[WINDOW - 100..]),
        Sparsened::Full(_)
    ));
}

#[test]
fn a_wrong_window_is_caught_by_the_proof() {
    let window = noise(WINDOW, 10);
    let mut after = window[1000..1300].to_vec();
    after.extend_from_slice(&noise(40_000, 11));
    let (stream, at) = flushed(&window, &after, 6);
    let input = &stream[at..];
    let used = references(input, 0, WINDOW)
        .expect("deflate")
        .expect("enough input");
    assert!(used[1000..1300].iter().all(|&u| u));
    // A decoder that missed one copied byte would zero it: the proof sees
    // the output differ and keeps the whole window.
    let mut wrong = used.clone();
    let missed = (1000..1300)
        .find(|&i| window[i] != 0)
        .expect("a non-zero byte");
    wrong[missed] = false;
    assert_eq!(
        prove(input, 0, &window, &wrong),
        Sparsened::Full("the sparse window inflates other bytes")
    );
    assert!(matches!(
        prove(input, 0, &window, &used),
        Sparsened::Sparse(_)
    ));
}

/// A gzip file in memory, fetched by range as a registry blob is.
#[derive(Debug)]
struct InMemory(Vec<u8>);

impl BlobFetch for InMemory {
    fn name(&self) -> &str {
        "memory"
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn fetch(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }

    fn stream(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(
            self.0[offset as usize..].to_vec(),
        )))
    }
}

#[test]
fn a_sparse_index_reads_every_byte_as_the_whole_one() {
    // Noise (copies nothing) and text (copies much) in stretches, so the
    // checkpoints fall at unaligned bits inside both.
    let mut data = Vec::new();
    for i in 0..12u64 {
        data.extend(noise(300_000, i + 20));
        let text: Vec<u8> = format!("line {i} of the text, repeated with small changes\n")
            .bytes()
            .cycle()
            .take(400_000 + i as usize * 777)
            .collect();
        data.extend(text);
    }
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    z.write_all(&data).expect("gzip");
    let gz = z.finish().expect("gzip");
    let file = Arc::new(temp_file(&gz));
    let mut seek = index_of(gzip::index_pass, &file, gz.len() as u64, &data);
    let before = seek.clone();
    let count = sparsen_windows(&mut seek, &InMemory(gz.clone())).expect("sparsen");
    assert!(count.sparse >= 3, "{count:?}");
    assert!(count.zeroed > 0, "{count:?}");
    assert!(seek != before, "windows replaced");
    let mut encoded = Vec::new();
    let mut whole = Vec::new();
    seek.encode(&mut encoded);
    before.encode(&mut whole);
    assert!(
        encoded.len() < whole.len(),
        "{} < {}",
        encoded.len(),
        whole.len()
    );
    let index = seek;
    let counter = Arc::new(DecodeCounter::default());
    let access = gzip::access(Arc::clone(&file), gz.len() as u64, index, counter).expect("access");
    // Backwards in 1 MiB pieces: each read starts cold from the checkpoint
    // before it, through its sparse window.
    let piece = 1 << 20;
    for start in (0..data.len()).step_by(piece).rev() {
        let end = (start + piece).min(data.len());
        let mut buf = vec![0u8; end - start];
        access.read_exact_at(start as u64, &mut buf).expect("read");
        assert!(buf == data[start..end], "bytes {start}..{end}");
    }
}

#[test]
fn any_bytes_give_an_answer_never_a_panic() {
    let window = noise(WINDOW, 30);
    let (stream, at) = flushed(&window, &noise(60_000, 31), 6);
    for seed in 0..3000u64 {
        let len = (seed as usize * 7919) % 3000;
        let mut input = noise(len, seed + 100);
        // Half of them start as a real stream, damaged further on.
        if seed % 2 == 0 {
            let real = &stream[at..];
            let keep = (seed as usize * 31) % real.len().min(len.max(1));
            input[..keep].copy_from_slice(&real[..keep]);
        }
        let skip = (seed % 8) as u8;
        let short = &window[(seed as usize * 13) % WINDOW..];
        for w in [&window[..], short] {
            if let Sparsened::Sparse(sparse) = sparsen(&input, skip, w) {
                assert_eq!(sparse.len(), w.len());
            }
        }
    }
}
