use super::*;
use crate::source::test_support::*;

/// pzstd's layout: before each frame, a skippable frame holding the
/// frame's compressed size.
fn pzstd_like(data: &[u8], chunk: usize, level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(chunk) {
        let frame = zstd::encode_all(c, level).expect("zstd");
        out.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0]);
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend(frame);
    }
    out
}

/// Frames of the given decompressed sizes, each with a checksum.
fn frames_of(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for &size in sizes {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
        encoder.include_checksum(true).expect("checksum");
        io::Write::write_all(&mut encoder, &data[at..at + size]).expect("compress");
        out.extend(encoder.finish().expect("finish"));
        at += size;
    }
    out
}

/// Bytes skipped in one go by [`run`]; a skip that fails loses them.
const SKIP: usize = 30_000;

/// What a pass over `bytes` with `workers` threads hands out, reading
/// pieces of uneven sizes and skipping some: the bytes (skipped ones as
/// zeros), then the table or the error, as text.
fn run(bytes: &[u8], workers: usize) -> (Vec<u8>, Result<ZstdIndex, String>) {
    let file = Arc::new(temp_file(bytes));
    let mut pass = index_pass_on(file, workers);
    let mut out = Vec::new();
    let mut sizes = [1usize, 7000, 512, SKIP, 3, 65_536].iter().cycle();
    loop {
        let size = *sizes.next().expect("cycle");
        let got = if size == SKIP {
            pass.skip(size as u64).map(|n| {
                out.resize(out.len() + n as usize, 0);
                n as usize
            })
        } else {
            let mut buf = vec![0u8; size];
            let mut n = 0;
            loop {
                match pass.read(&mut buf[n..]) {
                    Ok(0) => break Ok(n),
                    Ok(k) if n + k == size => break Ok(size),
                    Ok(k) => n += k,
                    Err(e) => {
                        out.extend_from_slice(&buf[..n]);
                        break Err(e);
                    }
                }
            }
            .inspect(|&n| out.extend_from_slice(&buf[..n]))
        };
        match got {
            Ok(0) => return (out, pass.finish().map_err(|e| e.to_string())),
            Ok(_) => {}
            Err(e) => return (out, Err(format!("{:?}: {e}", e.kind()))),
        }
    }
}

/// The one-core pass is the reference: the same bytes, the same frame
/// table (so stored indexes do not change), the same error. Where in a
/// damaged frame its error surfaces depends on how much each call asked
/// the decoder for, even on one core, so a pass that fails may hand out
/// less of that frame, but everything before `damaged` (decompressed),
/// less a failed skip.
fn same_on_every_core_count(
    bytes: &[u8],
    damaged: Option<usize>,
) -> (Vec<u8>, Result<ZstdIndex, String>) {
    let reference = run(bytes, 1);
    for workers in [2, 3] {
        let got = run(bytes, workers);
        assert_eq!(got.1, reference.1, "{workers} workers");
        let same = match damaged {
            None => got.0 == reference.0,
            Some(frame) => {
                let n = got.0.len().min(reference.0.len());
                got.0.len() + SKIP >= frame && got.0[..n] == reference.0[..n]
            }
        };
        let differ = got.0.iter().zip(&reference.0).position(|(a, b)| a != b);
        assert!(
            same,
            "{workers} workers: other bytes: {} vs {}, first difference at {differ:?}",
            got.0.len(),
            reference.0.len()
        );
    }
    reference
}

#[test]
fn frames_decoded_in_parallel_give_the_one_core_pass_exactly() {
    let data = far_data(3_000_000);
    // Out of order: the big first frame finishes after the small ones.
    let uneven = frames_of(&data, &[2_000_000, 10_000, 90_000, 1, 899_999]);
    let mut with_empty = frames_of(&data[..1000], &[400, 600]);
    with_empty.extend(zstd::encode_all(&b""[..], 3).expect("empty frame"));
    with_empty.extend(frames_of(&data[1000..1500], &[500]));
    for bytes in [
        pzstd_like(&data, 100_000, 3),
        pzstd_like(&data, 1 << 20, 19),
        uneven,
        with_empty,
        zstd::encode_all(&data[..], 3).expect("one frame"),
        Vec::new(),
    ] {
        let (out, index) = same_on_every_core_count(&bytes, None);
        assert!(index.is_ok(), "{index:?}");
        assert!(data.starts_with(&out[..out.len().min(10)]));
    }
    let (_, index) = same_on_every_core_count(&pzstd_like(&data, 100_000, 3), None);
    let Ok(ZstdIndex(table)) = index else {
        panic!("no index: {index:?}")
    };
    assert_eq!(table.frames.len(), 30);
    assert_eq!(table.frames[1].decomp, 100_000);
    assert_eq!(table.end, 3_000_000);
}

#[test]
fn damage_fails_with_the_same_error_after_every_intact_frame() {
    let data = far_data(2_000_000);
    let sizes = [300_000, 400_000, 500_000, 800_000];
    let good = frames_of(&data, &sizes);
    let ends: Vec<usize> = {
        let mut at = 0;
        sizes
            .iter()
            .scan(0, |start, &size| {
                let frame = frames_of(&data[*start..*start + size], &[size]);
                *start += size;
                at += frame.len();
                Some(at)
            })
            .collect()
    };
    // The third frame's checksum (its data is all handed out first, as
    // on one core), then the second's compressed data.
    let mut checksum = good.clone();
    checksum[ends[2] - 1] ^= 0x40;
    let mut body = good.clone();
    for b in &mut body[ends[1] + 100..ends[1] + 140] {
        *b ^= 0x5a;
    }
    let mut junk = good.clone();
    junk.extend_from_slice(b"not a frame at all");
    let truncated = good[..good.len() - 10].to_vec();
    let mut block = good.clone();
    // The second frame's first block header, after a 6-byte header:
    // a reserved block type.
    block[ends[0] + 6] |= 0x06;
    for (name, bytes, damaged) in [
        ("checksum", checksum, 1_200_000),
        ("body", body, 300_000),
        ("junk", junk, 2_000_000),
        ("truncated", truncated, 1_200_000),
        ("block type", block, 300_000),
    ] {
        let (out, result) = same_on_every_core_count(&bytes, Some(damaged));
        let err = result.expect_err(name);
        assert!(data.starts_with(&out[..out.len().min(10)]), "{name}: {err}");
    }
}

#[test]
fn the_walk_cuts_at_frame_ends_and_leaves_anything_odd_to_the_decoder() {
    let data = far_data(300_000);
    let bytes = pzstd_like(&data, 100_000, 3);
    let len = bytes.len() as u64;
    let file = temp_file(&bytes);
    let mut at = 0;
    let mut cuts = Vec::new();
    while at < len {
        let cut = walk(&file, at, len);
        at = match cut {
            Cut::Frame(end) | Cut::Skip(end) => end,
            Cut::Rest => panic!("rest at {at}"),
        };
        cuts.push(cut);
    }
    let first = zstd::encode_all(&data[..100_000], 3).expect("zstd").len() as u64;
    assert_eq!(cuts.len(), 6);
    assert_eq!(cuts[0], Cut::Skip(12));
    assert_eq!(cuts[1], Cut::Frame(12 + first));
    assert_eq!(at, len);
    // Cut short, garbage, a window too big to hold twice.
    let short = temp_file(&bytes[..bytes.len() - 1]);
    assert_eq!(
        walk(&short, len - 1 - (len - cuts_start(&cuts, 5)), len - 1),
        Cut::Rest
    );
    let junk = temp_file(b"garbage!garbage!garbage!");
    assert_eq!(walk(&junk, 0, 24), Cut::Rest);
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
    encoder.window_log(24).expect("window log");
    encoder.long_distance_matching(true).expect("long");
    io::Write::write_all(&mut encoder, &far_data(20 << 20)).expect("compress");
    let wide = encoder.finish().expect("finish");
    assert_eq!(walk(&temp_file(&wide), 0, wide.len() as u64), Cut::Rest);
}

/// Where cut `i` starts: the end of the one before.
fn cuts_start(cuts: &[Cut], i: usize) -> u64 {
    match cuts[i - 1] {
        Cut::Frame(end) | Cut::Skip(end) => end,
        Cut::Rest => 0,
    }
}
