//! Helpers for the codec tests of this module.

use super::region::Region;
use std::io::{self, Read, Seek, Write};
use std::sync::Arc;

use super::access::{Access, DecodeCounter, IndexingDecoder};

/// An unlinked temporary file holding `bytes`.
pub(super) fn temp_file(bytes: &[u8]) -> Region {
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(bytes).expect("write");
    file.rewind().expect("rewind");
    Region::whole(file).expect("temp file length")
}

/// Runs a codec's indexing pass over `file` (`len` bytes), checks that it
/// hands out exactly `expect`, and returns the index it built.
pub(super) fn index_of<I>(
    index_pass: fn(Arc<Region>, u64) -> Box<dyn IndexingDecoder<I>>,
    file: &Arc<Region>,
    len: u64,
    expect: &[u8],
) -> I {
    let mut pass = index_pass(Arc::clone(file), len);
    let mut all = Vec::new();
    pass.read_to_end(&mut all).expect("pass");
    assert!(all == expect, "pass output differs");
    pass.finish().expect("finish")
}

/// `len` bytes that compress about 2:1 and never repeat, so that a byte
/// read far from the start can only be right if it was decoded from there.
pub(super) fn far_data(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            b'a' + (r >> 60) as u8
        })
        .collect()
}

/// Reads at pseudo-random offsets and lengths (many far from the start,
/// some backwards, some at the very end) and compares with `data`; a read
/// past the end must fail with `UnexpectedEof`.
pub(super) fn check_random_reads(access: &dyn Access, data: &[u8]) {
    let len = data.len() as u64;
    let mut state = 12345u64;
    let mut next = move |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound.max(1)
    };
    let mut cases = vec![(len - 1, 1), (0, 1), (len - 4096, 4096), (len / 2, 100)];
    for _ in 0..40 {
        let size = 1 + next(200_000.min(len));
        cases.push((next(len - size + 1), size));
    }
    for (off, size) in cases {
        let mut buf = vec![0u8; size as usize];
        access.read_exact_at(off, &mut buf).expect("read");
        assert!(
            buf == data[off as usize..(off + size) as usize],
            "wrong bytes at {off}+{size}"
        );
    }
    let mut buf = [0u8; 8];
    let err = access
        .read_exact_at(len - 4, &mut buf)
        .expect_err("read past the end");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
}

/// Random reads, then the whole stream twice: every read is right, and the
/// stream was decompressed exactly once in all (what a spilled layer
/// promises).
pub(super) fn check_spilled_once(access: &dyn Access, counter: &DecodeCounter, data: &[u8]) {
    check_random_reads(access, data);
    for _ in 0..2 {
        let mut all = vec![0; data.len()];
        access.read_exact_at(0, &mut all).expect("read all");
        assert_eq!(all, data);
    }
    assert_eq!(counter.get(), data.len() as u64);
}
