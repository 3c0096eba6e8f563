use super::access::{GzipAccess, Parking};
use super::index::FORMAT;
use super::parallel;
use super::pass::{index_pass_with, GzipPass, Parallel, SPACING};
use super::zlib::{Flush, Inflater};
use super::*;
use crate::source::access::{Access, DecodeCounter, IndexingDecoder};
use crate::source::region::Region;
use std::io::Write;
use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

/// Text-like data: words from a small vocabulary in pseudo-random
/// order, which deflate compresses about 3:1 with blocks of ordinary
/// size.
fn semi_compressible(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&[u8]] = &[
        b"layer",
        b"tar",
        b"gzip",
        b"usr",
        b"lib",
        b"bin",
        b"etc",
        b"share",
        b"x86_64",
        b"linux",
        b"gnu",
        b"so",
        b"python3",
        b"site-packages",
        b"README",
        b"LICENSE",
        b"\n",
        b"/",
        b"0",
        b"1",
        b"42",
        b"deadbeef",
        b"config",
        b"json",
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut data = Vec::with_capacity(len + 16);
    while data.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (state >> 33) as usize;
        data.extend_from_slice(WORDS[r % WORDS.len()]);
        if r & 0x300 == 0 {
            // Some incompressible noise, so blocks are not all alike.
            data.extend_from_slice(&state.to_le_bytes()[..3]);
        }
        data.push(b' ');
    }
    data.truncate(len);
    data
}

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn temp(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<Region>, u64) {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(bytes).expect("write");
    let file =
        Arc::new(Region::whole(std::fs::File::open(f.path()).expect("open")).expect("length"));
    (f, file, bytes.len() as u64)
}

/// Runs the indexing pass to the end, checking what it streams.
fn index(file: &Arc<Region>, len: u64, spacing: u64, data: &[u8]) -> io::Result<GzipIndex> {
    let mut pass = index_pass_with(Arc::clone(file), len, spacing, None);
    let mut all = Vec::new();
    // Odd-sized reads, as the tar parser's are not aligned to anything.
    let mut buf = vec![0; 7919];
    loop {
        let n = pass.read(&mut buf)?;
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    assert!(all == data, "the pass streams the decompressed bytes");
    pass.finish()
}

fn open(file: &Arc<Region>, len: u64, index: GzipIndex) -> (Box<dyn Access>, Arc<DecodeCounter>) {
    let counter = Arc::new(DecodeCounter::default());
    let access = access(Arc::clone(file), len, index, Arc::clone(&counter)).expect("access");
    (access, counter)
}

/// Reads at pseudo-random offsets and lengths, plus the edges, and
/// compares with `data`.
fn check_reads(access: &dyn Access, data: &[u8], seed: u64) {
    let len = data.len() as u64;
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut cases: Vec<(u64, usize)> = vec![(0, 1), (0, data.len().min(100_000))];
    if len > 0 {
        cases.push((len - 1, 1));
        cases.push((len / 2, (len / 2) as usize));
    }
    for _ in 0..200 {
        if len == 0 {
            break;
        }
        let off = next() % len;
        let max = (len - off).min(300_000);
        let n = (next() % max + 1) as usize;
        cases.push((off, n));
    }
    for (off, n) in cases {
        let mut buf = vec![0; n];
        access.read_exact_at(off, &mut buf).expect("read");
        assert!(
            buf[..] == data[off as usize..off as usize + n],
            "read of {n} at {off}"
        );
    }
    let mut buf = [0u8; 2];
    let err = access
        .read_exact_at(len.saturating_sub(1), &mut buf)
        .expect_err("past the end");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let err = access
        .read_exact_at(u64::MAX, &mut buf)
        .expect_err("far past the end");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn single_member_reads_match_at_random_offsets() {
    let data = semi_compressible(3 << 20, 1);
    let (_f, file, len) = temp(&gzip(&data, 6));
    let index = index(&file, len, 100_000, &data).expect("index");
    assert!(index.checkpoints.len() >= 15, "{index:?}");
    assert_eq!(index.end, Some(data.len() as u64));
    assert!(index.checkpoints.iter().any(|c| c.bits != 0));
    let (access, _) = open(&file, len, index);
    check_reads(&*access, &data, 7);
}

#[test]
fn multi_member_files_with_header_fields_an_empty_member_and_padding() {
    let data = semi_compressible(2 << 20, 2);
    let mut gz = Vec::new();
    let mut at = 0;
    for (i, size) in [300_000, 0, 5, 700_000, 1, 1_000_000]
        .into_iter()
        .enumerate()
    {
        gz.extend(gzip(&data[at..at + size], (i % 9) as u32 + 1));
        at += size;
    }
    // Optional header fields, as bgzip (FEXTRA) and gzip -N (FNAME) write.
    let mut e = flate2::GzBuilder::new()
        .extra(b"BC\x02\x00\x00\x01".to_vec())
        .filename("layer.tar")
        .comment("made by a test")
        .write(Vec::new(), flate2::Compression::default());
    e.write_all(&data[at..at + 50_000]).expect("gzip");
    gz.extend(e.finish().expect("gzip"));
    at += 50_000;
    // A header CRC (FHCRC), which readers may skip.
    let mut member = gzip(&data[at..at + 5000], 6);
    member[3] |= 0x02;
    member.splice(10..10, [0xab, 0xcd]);
    gz.extend(member);
    at += 5000;
    gz.extend(gzip(&data[at..], 9));
    gz.extend(gzip(&[], 6));
    gz.extend([0u8; 700]);
    let (_f, file, len) = temp(&gz);
    for spacing in [1, 65_536, SPACING] {
        let index = index(&file, len, spacing, &data).expect("index");
        assert_eq!(index.end, Some(data.len() as u64));
        let (access, _) = open(&file, len, index);
        check_reads(&*access, &data, spacing);
    }
}

/// The gzip CLI (with a file name in the header) and pigz (many blocks
/// with sync markers; `-i` for independent ones), when installed.
#[test]
fn streams_from_gzip_and_pigz() {
    let data = semi_compressible(1_500_000, 3);
    let (input, _, _) = temp(&data);
    for (tool, args) in [
        ("gzip", &["-c", "-N", "-6"][..]),
        ("pigz", &["-c", "-p", "2", "-b", "128"][..]),
        ("pigz", &["-c", "-i", "-b", "64"][..]),
    ] {
        let out = match Command::new(tool)
            .args(args)
            .arg(input.path())
            .stderr(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => out.stdout,
            _ => {
                eprintln!("{tool} not available; skipped");
                continue;
            }
        };
        let (_f, file, len) = temp(&out);
        let index = index(&file, len, 50_000, &data).expect(tool);
        assert!(index.checkpoints.len() > 10);
        let (access, _) = open(&file, len, index);
        check_reads(&*access, &data, 11);
    }
}

/// What a cold read near the end of a big layer costs: at most one span.
#[test]
fn a_cold_read_inflates_at_most_one_span() {
    let data = semi_compressible(24 << 20, 4);
    let gz = gzip(&data, 6);
    let (_f, file, len) = temp(&gz);
    let mut pass = index_pass(Arc::clone(&file), len);
    io::copy(&mut pass, &mut io::sink()).expect("pass");
    let index = pass.finish().expect("finish");
    let spans = index.checkpoints.len();
    assert!((10..=12).contains(&spans), "{spans} checkpoints");

    let (access, counter) = open(&file, len, index);
    let offset = data.len() as u64 - 10_000;
    let mut buf = vec![0; 4096];
    access.read_exact_at(offset, &mut buf).expect("read");
    assert!(buf[..] == data[offset as usize..offset as usize + 4096]);
    let cold = counter.get();
    let bound = SPACING + 4096 + largest_block(&gz) as u64;
    assert!(cold <= bound, "inflated {cold} bytes, bound {bound}");
    assert!(cold >= 4096);

    // The next piece resumes the parked inflater: no more than itself.
    access
        .read_exact_at(offset + 4096, &mut buf)
        .expect("sequential read");
    assert!(buf[..] == data[offset as usize + 4096..offset as usize + 8192]);
    assert_eq!(counter.get(), cold + 4096);
}

/// The most output any one deflate block of `gz` (a single member with
/// a plain 10-byte header) produces.
fn largest_block(gz: &[u8]) -> usize {
    let mut z = Inflater::new_raw().expect("init");
    let mut input = &gz[10..];
    let mut out = vec![0; 1 << 20];
    let (mut block, mut largest) = (0, 0);
    loop {
        let r = z.inflate(input, &mut out, Flush::Block).expect("inflate");
        input = &input[r.consumed..];
        block += r.produced;
        largest = largest.max(block);
        if r.stream_end {
            return largest;
        }
        if r.block_end {
            block = 0;
        }
    }
}

#[test]
fn corrupt_streams_fail_the_indexing_pass() {
    let data = semi_compressible(300_000, 5);
    let gz = gzip(&data, 6);
    let n = gz.len();
    let mut bad_crc = gz.clone();
    bad_crc[n - 6] ^= 1;
    let mut bad_size = gz.clone();
    bad_size[n - 2] ^= 1;
    let mut garbage = gz.clone();
    garbage.extend_from_slice(b"\0\0not gzip");
    let mut bad_method = gz.clone();
    bad_method.extend_from_slice(&[0x1f, 0x8b, 7, 0, 0, 0, 0, 0, 0, 3]);
    let mut corrupt_data = gz.clone();
    for b in &mut corrupt_data[1000..1100] {
        *b ^= 0x55;
    }
    for (what, bytes) in [
        ("crc", bad_crc),
        ("size", bad_size),
        ("garbage", garbage),
        ("method", bad_method),
        ("data", corrupt_data),
        ("truncated", gz[..n / 2].to_vec()),
        ("no trailer", gz[..n - 3].to_vec()),
        ("header only", gz[..5].to_vec()),
    ] {
        let (_f, file, len) = temp(&bytes);
        let mut pass = index_pass(Arc::clone(&file), len);
        let err = io::copy(&mut pass, &mut io::sink()).expect_err(what);
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        assert!(pass.read(&mut [0; 10]).is_err(), "{what}: stays failed");
        assert!(pass.finish().is_err(), "{what}: no index");
    }
}

/// The tar parser stops at the archive's end blocks: the index covers
/// what was read and reads beyond it inflate forward.
#[test]
fn reads_after_a_pass_that_stopped_early() {
    let data = semi_compressible(2 << 20, 6);
    let mut gz = gzip(&data[..1 << 20], 6);
    gz.extend(gzip(&data[1 << 20..], 6));
    let (_f, file, len) = temp(&gz);
    let mut pass = index_pass_with(Arc::clone(&file), len, 100_000, None);
    let mut head = vec![0; 700_000];
    pass.read_exact(&mut head).expect("read");
    assert!(head[..] == data[..700_000]);
    let index = pass.finish().expect("finish");
    assert_eq!(index.end, None);
    let last = index.checkpoints.last().map_or(0, |c| c.out);
    assert!((500_000..=700_000).contains(&last), "{index:?}");
    let (access, _) = open(&file, len, index);
    check_reads(&*access, &data, 13);
}

#[test]
fn concurrent_reads_agree() {
    let data = Arc::new(semi_compressible(4 << 20, 7));
    let (_f, file, len) = temp(&gzip(&data, 1));
    let index = index(&file, len, 256 * 1024, &data).expect("index");
    let (access, _) = open(&file, len, index);
    let access: Arc<dyn Access> = Arc::from(access);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (access, data) = (Arc::clone(&access), Arc::clone(&data));
            std::thread::spawn(move || check_reads(&*access, &data, 100 + t))
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

/// The kernel's readahead sends the next piece of a file while the
/// previous one is still being inflated on another thread: that read
/// waits for the inflater instead of starting over from a checkpoint.
#[test]
fn a_read_right_after_one_in_progress_waits_for_its_inflater() {
    let data = Arc::new(semi_compressible(12 << 20, 10));
    let (_f, file, len) = temp(&gzip(&data, 1));
    let index = index(&file, len, SPACING, &data).expect("index");
    let counter = Arc::new(DecodeCounter::default());
    let access = Arc::new(GzipAccess {
        file,
        file_len: len,
        index,
        parking: Mutex::new(Parking::default()),
        returned: Condvar::new(),
        counter: Arc::clone(&counter),
    });
    const PIECE: usize = 128 * 1024;
    const LONG: usize = 4 << 20;
    let mut buf = vec![0; PIECE];
    access.read_exact_at(0, &mut buf).expect("first piece");
    let first = {
        let (access, data) = (Arc::clone(&access), Arc::clone(&data));
        std::thread::spawn(move || {
            let mut buf = vec![0; LONG];
            access.read_exact_at(PIECE as u64, &mut buf).expect("read");
            assert!(buf[..] == data[PIECE..PIECE + LONG]);
        })
    };
    // Once the long read is under way (or already done), the next piece
    // continues its inflater either way.
    while access.lock().busy.is_empty() && !first.is_finished() {
        std::thread::yield_now();
    }
    let next = (PIECE + LONG) as u64;
    access.read_exact_at(next, &mut buf).expect("next piece");
    assert!(buf[..] == data[next as usize..next as usize + PIECE]);
    first.join().expect("thread");
    assert_eq!(counter.get(), (PIECE + LONG + PIECE) as u64);
}

#[test]
fn index_encoding_round_trips_and_garbage_is_refused() {
    let data = semi_compressible(1 << 20, 8);
    let (_f, file, len) = temp(&gzip(&data, 6));
    let index = index(&file, len, 100_000, &data).expect("index");
    let mut bytes = Vec::new();
    index.encode(&mut bytes);
    let decoded = GzipIndex::decode(&bytes).expect("decode");
    assert_eq!(decoded, index);
    let (access, _) = open(&file, len, decoded);
    check_reads(&*access, &data, 17);

    let empty = GzipIndex::default();
    let mut e = Vec::new();
    empty.encode(&mut e);
    assert_eq!(GzipIndex::decode(&e).expect("empty"), empty);

    for cut in 0..bytes.len() {
        assert!(GzipIndex::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(GzipIndex::decode(&trailing).is_err());
    // A huge count with no data behind it allocates nothing.
    let mut huge = vec![FORMAT];
    huge.extend_from_slice(&0u64.to_le_bytes());
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(GzipIndex::decode(&huge).is_err());
    assert!(GzipIndex::decode(&[9]).is_err());

    let reencode = |f: &dyn Fn(&mut GzipIndex)| {
        let mut i = index.clone();
        f(&mut i);
        let mut b = Vec::new();
        i.encode(&mut b);
        GzipIndex::decode(&b)
    };
    assert!(reencode(&|i| i.checkpoints.swap(0, 1)).is_err());
    assert!(reencode(&|i| i.checkpoints[0].bits = 8).is_err());
    assert!(reencode(&|i| i.checkpoints[0].window_len = 40_000).is_err());
    assert!(reencode(&|i| i.end = Some(10)).is_err());
    let zero = |i: &mut GzipIndex| {
        i.checkpoints[0].input = 0;
        i.checkpoints[0].bits = 1;
    };
    assert!(reencode(&zero).is_err());

    // Deterministic noise: decode may refuse it but must not panic.
    let mut state = 0x9e3779b97f4a7c15u64;
    for n in 0..2000 {
        let mut noise = Vec::with_capacity(n % 200);
        for _ in 0..n % 200 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            noise.push((state >> 56) as u8);
        }
        if let Some(b) = noise.first_mut() {
            *b = FORMAT;
        }
        let _ = GzipIndex::decode(&noise);
    }
}

/// A damaged window in a stored index is reported, not panicked on,
/// and an index pointing past the file is refused.
#[test]
fn damaged_stored_indexes_are_errors() {
    let data = semi_compressible(1 << 20, 9);
    let (_f, file, len) = temp(&gzip(&data, 6));
    let mut index = index(&file, len, 100_000, &data).expect("index");
    let mut far = index.clone();
    if let Some(c) = far.checkpoints.last_mut() {
        c.input = len + 1;
    }
    assert!(access(Arc::clone(&file), len, far, Arc::default()).is_err());
    let offset = index.checkpoints[3].out;
    index.checkpoints[3].window = vec![0xff; 10];
    let (access, _) = open(&file, len, index);
    let mut buf = [0; 100];
    let err = access
        .read_exact_at(offset + 10, &mut buf)
        .expect_err("bad window");
    assert_ne!(err.kind(), io::ErrorKind::UnexpectedEof);
}

/// Streams a pass to its end or its first error, in odd-sized reads
/// and skips, as the tar parser does.
fn stream(pass: &mut dyn IndexingDecoder<GzipIndex>) -> (Vec<u8>, Option<io::Error>) {
    let mut all = Vec::new();
    let mut buf = vec![0; 7919];
    let mut turn = 0u64;
    loop {
        turn += 1;
        let got = if turn % 5 == 0 {
            // A skipped stretch is the zeros' length; compared by length.
            pass.skip(20_011).map(|n| {
                all.extend(std::iter::repeat_n(0u8, n as usize));
                n as usize
            })
        } else {
            // Whole reads, so that the pattern does not depend on how
            // much each read happened to get.
            let mut filled = 0;
            let mut result = Ok(0);
            while filled < buf.len() {
                match pass.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            all.extend_from_slice(&buf[..filled]);
            result.map(|_| filled)
        };
        match got {
            Ok(0) => return (all, None),
            Ok(_) => {}
            Err(e) => return (all, Some(e)),
        }
    }
}

/// The bytes a pass read, with skipped stretches zeroed as [`stream`]
/// records them.
fn as_streamed(data: &[u8]) -> Vec<u8> {
    let mut expected = Vec::with_capacity(data.len());
    let mut turn = 0u64;
    let mut at = 0;
    while at < data.len() {
        turn += 1;
        let n = if turn % 5 == 0 { 20_011 } else { 7919 };
        let end = (at + n).min(data.len());
        if turn % 5 == 0 {
            expected.extend(std::iter::repeat_n(0u8, end - at));
        } else {
            expected.extend_from_slice(&data[at..end]);
        }
        at = end;
    }
    expected
}

fn speculative(chunk: u64, workers: usize, marked_ahead: u64) -> Option<Parallel> {
    Some(Parallel {
        chunk,
        workers,
        marked_ahead,
        spare_core: || true,
    })
}

/// Data whose chunks need their window for long (a block repeated
/// with small changes), next to text, noise and a run of zeros.
fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut data = semi_compressible(len / 2, seed);
    let block = semi_compressible(9000, seed + 1);
    while data.len() < len * 3 / 4 {
        data.extend_from_slice(&block);
        let at = data.len() - 100;
        data[at] ^= 1;
    }
    data.extend(std::iter::repeat_n(0u8, len / 16));
    let mut state = seed | 1;
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// gzip with a sync flush (an empty stored block) every `every` bytes,
/// as pigz writes.
fn gzip_flushed(data: &[u8], level: u32, every: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    for piece in data.chunks(every) {
        e.write_all(piece).expect("gzip");
        e.flush().expect("sync flush");
    }
    e.finish().expect("gzip")
}

/// Inflated on several cores, in chunks of any size, a layer streams
/// the same bytes and gets the same index as inflated on one.
#[test]
fn speculative_pass_streams_and_indexes_exactly_as_one_inflater() {
    let data = mixed(6 << 20, 21);
    let expected = as_streamed(&data);
    for (what, gz) in [
        ("level 6", gzip(&data, 6)),
        ("level 9", gzip(&data, 9)),
        ("flushed, level 1", gzip_flushed(&data, 1, 128 << 10)),
        ("flushed, level 6", gzip_flushed(&data, 6, 200_000)),
    ] {
        let (_f, file, len) = temp(&gz);
        let mut one = index_pass_with(Arc::clone(&file), len, 100_000, None);
        let (bytes, err) = stream(one.as_mut());
        assert!(err.is_none() && bytes == expected, "{what}: one inflater");
        let reference = one.finish().expect("index");
        // One worker takes every chunk into its own; with no idle core
        // at the start there is no speculation at all.
        let busy = Parallel {
            spare_core: || false,
            ..speculative(40_000, 2, MARKED_FOR_TESTS).expect("config")
        };
        for (chunk, parallel, speculated) in [
            (40_000, speculative(40_000, 2, MARKED_FOR_TESTS), true),
            (150_000, speculative(150_000, 3, MARKED_FOR_TESTS), true),
            (1 << 20, speculative(1 << 20, 2, MARKED_FOR_TESTS), true),
            (40_000, speculative(40_000, 1, MARKED_FOR_TESTS), true),
            (40_000, Some(busy), false),
        ] {
            let mut pass = GzipPass::new(Arc::clone(&file), len, 100_000, parallel).expect("pass");
            let (bytes, err) = stream(&mut pass);
            assert!(err.is_none(), "{what}, chunks of {chunk}: {err:?}");
            assert!(bytes == expected, "{what}, chunks of {chunk}: the bytes");
            let from_workers = if speculated { data.len() as u64 } else { 0 };
            assert_eq!(pass.from_workers, from_workers, "{what}, chunks of {chunk}");
            let index = Box::new(pass).finish().expect("index");
            assert!(index == reference, "{what}, chunks of {chunk}: the index");
        }
    }
}

const MARKED_FOR_TESTS: u64 = parallel::MARKED_AHEAD;

/// Workers that wait for their window, and a second and third member
/// (inflated by one inflater after the first) end as one inflater
/// would end them.
#[test]
fn speculation_that_stops_ends_as_one_inflater() {
    let data = mixed(3 << 20, 22);
    let mut members = gzip(&data, 6);
    members.extend_from_slice(&gzip(&data[..1 << 20], 6));
    members.extend_from_slice(&gzip(b"tail", 6));
    let mut all = data.clone();
    all.extend_from_slice(&data[..1 << 20]);
    all.extend_from_slice(b"tail");
    for (what, gz, expected, marked) in [
        ("waits", gzip(&data, 6), &data, 40_000),
        ("members", members, &all, MARKED_FOR_TESTS),
    ] {
        let (_f, file, len) = temp(&gz);
        let mut one = index_pass_with(Arc::clone(&file), len, 100_000, None);
        let (_, err) = stream(one.as_mut());
        assert!(err.is_none());
        let reference = one.finish().expect("index");
        let parallel = speculative(60_000, 2, marked);
        let mut pass = GzipPass::new(Arc::clone(&file), len, 100_000, parallel).expect("pass");
        let (bytes, err) = stream(&mut pass);
        assert!(err.is_none(), "{what}: {err:?}");
        assert!(bytes == as_streamed(expected), "{what}: the bytes");
        // The first member is the only one speculated on.
        assert_eq!(pass.from_workers, data.len() as u64, "{what}");
        assert!(
            Box::new(pass).finish().expect("index") == reference,
            "{what}: the index"
        );
    }
}

/// Damage anywhere fails the speculative pass with the one-core pass's
/// error, after bytes that were right.
#[test]
fn damaged_streams_fail_the_speculative_pass_as_the_one_core_pass() {
    let data = mixed(2 << 20, 23);
    let gz = gzip(&data, 6);
    let n = gz.len();
    let mut cases = vec![
        ("truncated", gz[..n * 2 / 3].to_vec()),
        ("no trailer", gz[..n - 3].to_vec()),
    ];
    for at in [n / 5, n / 2, n * 4 / 5] {
        let mut bad = gz.clone();
        for b in &mut bad[at..at + 64] {
            *b ^= 0x5a;
        }
        cases.push(("damaged", bad));
    }
    let mut bad_crc = gz.clone();
    bad_crc[n - 6] ^= 1;
    cases.push(("crc", bad_crc));
    for (what, bytes) in cases {
        let (_f, file, len) = temp(&bytes);
        let mut one = index_pass_with(Arc::clone(&file), len, 100_000, None);
        let (one_got, one_err) = stream(one.as_mut());
        let one_err = one_err.expect("the one-core pass fails");
        let parallel = speculative(50_000, 2, MARKED_FOR_TESTS);
        let mut pass = index_pass_with(Arc::clone(&file), len, 100_000, parallel);
        let (got, err) = stream(pass.as_mut());
        let err = err.unwrap_or_else(|| panic!("{what}: no error"));
        assert_eq!(err.to_string(), one_err.to_string(), "{what}");
        assert_eq!(err.kind(), one_err.kind(), "{what}");
        // Damage may inflate to wrong bytes before zlib notices: the
        // same ones.
        let same = got.len().min(one_got.len());
        assert!(
            got[..same] == one_got[..same],
            "{what}: bytes before the error"
        );
        assert!(pass.read(&mut [0; 10]).is_err(), "{what}: stays failed");
        assert!(pass.finish().is_err(), "{what}: no index");
    }
}
