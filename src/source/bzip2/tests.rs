use super::*;
use crate::source::test_support::*;
use std::io::Write;

fn bz_level(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(level));
    e.write_all(data).expect("bzip2");
    e.finish().expect("bzip2")
}

fn bz(data: &[u8]) -> Vec<u8> {
    bz_level(data, 1)
}

fn pass(file: &Arc<Region>, len: u64, expect: &[u8]) -> Bzip2Index {
    index_of(index_pass, file, len, expect)
}

fn open(file: &Arc<Region>, len: u64, index: &Bzip2Index) -> (Box<dyn Access>, Arc<DecodeCounter>) {
    let counter = Arc::new(DecodeCounter::default());
    let dir = std::env::temp_dir();
    let access = access(
        Arc::clone(file),
        len,
        index.clone(),
        Arc::clone(&counter),
        &dir,
    )
    .expect("access");
    (access, counter)
}

fn indexed(bytes: &[u8], expect: &[u8]) -> (Box<dyn Access>, Bzip2Index, Arc<DecodeCounter>) {
    let file = Arc::new(temp_file(bytes));
    let len = bytes.len() as u64;
    let index = pass(&file, len, expect);
    let (access, counter) = open(&file, len, &index);
    (access, index, counter)
}

/// A single-stream file: every block is a resume point, random reads
/// are right, and a cold read near the end decodes one block.
fn check_single_stream(bytes: &[u8], data: &[u8], block_size: u64) {
    let (access, index, _) = indexed(bytes, data);
    assert_eq!(index.streams.frames.len(), 1);
    let blocks = index.blocks.clone().expect("block table");
    assert!(
        blocks.len() as u64 >= data.len() as u64 / block_size,
        "{}",
        blocks.len()
    );
    // Blocks sit at many bit alignments, not only on bytes.
    assert!(blocks.iter().any(|b| b.bit % 8 != 0));
    check_random_reads(access.as_ref(), data);
    let file = Arc::new(temp_file(bytes));
    for back in [5000, data.len() / 3] {
        let (cold, counter) = open(&file, bytes.len() as u64, &index);
        let mut buf = [0u8; 4096];
        let off = data.len() - back;
        cold.read_exact_at(off as u64, &mut buf).expect("read");
        assert!(buf[..] == data[off..off + 4096]);
        // A block holds `block_size` bytes after the first run-length
        // coding, a little more decoded.
        assert!(
            counter.get() <= block_size * 101 / 100 + 4096,
            "{}",
            counter.get()
        );
    }
}

#[test]
fn blocks_of_a_single_stream_are_resume_points() {
    let data = far_data(4_000_000);
    check_single_stream(&bz_level(&data, 1), &data, 100_000);
    check_single_stream(&bz_level(&data, 9), &data, 900_000);
}

#[test]
fn blocks_written_by_the_bzip2_tool_are_resume_points() {
    let data = far_data(4_000_000);
    let mut child = match std::process::Command::new("bzip2")
        .args(["-9", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped: no bzip2 tool ({e})");
            return;
        }
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("bzip2");
    writer.join().expect("writer").expect("write");
    assert!(out.status.success());
    check_single_stream(&out.stdout, &data, 900_000);
}

#[test]
fn a_sequential_read_does_not_restart_its_block() {
    let data = far_data(2_000_000);
    let (access, _, counter) = indexed(&bz_level(&data, 9), &data);
    let mut buf = vec![0u8; 128 * 1024];
    let mut off = 0;
    while off + buf.len() <= data.len() {
        access.read_exact_at(off as u64, &mut buf).expect("read");
        assert!(buf[..] == data[off..off + buf.len()]);
        off += buf.len();
    }
    assert_eq!(counter.get(), off as u64);
}

#[test]
fn streams_of_a_multi_stream_file_are_resume_points() {
    let data = far_data(1_000_000);
    let bytes: Vec<u8> = data.chunks(200_000).flat_map(bz).collect();
    let (access, index, counter) = indexed(&bytes, &data);
    assert_eq!(index.streams.frames.len(), 5);
    // Level 1 blocks hold 100,000 - 19 bytes: three per stream.
    assert_eq!(index.blocks.as_ref().map(Vec::len), Some(15));
    let mut buf = [0u8; 4096];
    let off = data.len() - 5000;
    access.read_exact_at(off as u64, &mut buf).expect("read");
    assert_eq!(buf, data[off..off + 4096]);
    assert!(counter.get() <= 100_000 + 4096);
    check_random_reads(access.as_ref(), &data);
}

#[test]
fn indexes_without_blocks_still_read_through_streams() {
    let data = far_data(1_000_000);
    for bytes in [bz(&data), data.chunks(200_000).flat_map(bz).collect()] {
        let file = Arc::new(temp_file(&bytes));
        let mut index = pass(&file, bytes.len() as u64, &data);
        index.blocks = None;
        let (access, _) = open(&file, bytes.len() as u64, &index);
        check_random_reads(access.as_ref(), &data);
    }
}

#[test]
fn empty_streams_and_an_empty_file() {
    let data = far_data(300_000);
    let mut bytes = bz(&[]);
    bytes.extend(bz(&data));
    bytes.extend(bz(&[]));
    let (access, index, _) = indexed(&bytes, &data);
    assert_eq!(index.streams.frames.len(), 1);
    check_random_reads(access.as_ref(), &data);
    let (_, index, _) = indexed(&bz(&[]), &[]);
    assert_eq!(
        index,
        Bzip2Index {
            streams: FrameTable::default(),
            blocks: Some(vec![])
        }
    );
}

#[test]
fn truncated_stream_fails_the_pass() {
    let bytes = bz(&far_data(100_000));
    for cut in [bytes.len() / 2, bytes.len() - 3, 2] {
        let file = Arc::new(temp_file(&bytes[..cut]));
        let mut pass = index_pass(file, cut as u64);
        assert!(io::copy(&mut pass, &mut io::sink()).is_err(), "cut {cut}");
    }
}

#[test]
fn a_wrong_stream_crc_or_trailing_garbage_fails_the_pass() {
    let mut bytes = bz(&far_data(100_000));
    let mut garbage = bytes.clone();
    garbage.extend_from_slice(b"junk");
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    for bytes in [bytes, garbage] {
        let len = bytes.len() as u64;
        let mut pass = index_pass(Arc::new(temp_file(&bytes)), len);
        let err = io::copy(&mut pass, &mut io::sink()).expect_err("bad file");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}

#[test]
fn one_block_streams_realign_every_bit_offset() {
    let data = far_data(50_000);
    let stream = bz_level(&data, 1);
    // The stream's one block, from bit 32 to the end-of-stream magic.
    let end = find_magic(&stream, 32 + 80).expect("end magic");
    for shift in 0..8u64 {
        // The same block moved `shift` bits into a buffer.
        let mut w = BitWriter {
            out: Vec::new(),
            acc: 0,
            n: 0,
        };
        w.put(0x5a, shift as u32);
        let mut p = 32;
        while p < end {
            let n = (end - p).min(8);
            w.put(bits(&stream, p, n as u32).expect("bits"), n as u32);
            p += n;
        }
        w.put(0, 8);
        let one = one_block_stream(1, &w.out, shift, shift + end - 32).expect("stream");
        let mut out = Vec::new();
        assert!(decode_one(&one, &mut out), "shift {shift}");
        assert!(out == data);
        // A cut anywhere else is rejected.
        let short = one_block_stream(1, &w.out, shift, shift + end - 40).expect("stream");
        assert!(!decode_one(&short, &mut out));
    }
}

fn sample() -> Bzip2Index {
    let streams = FrameTable {
        frames: vec![
            FrameStart { comp: 0, decomp: 0 },
            FrameStart {
                comp: 500,
                decomp: 7000,
            },
        ],
        end: 9000,
    };
    let block = |bit, end_bit, decomp| Bzip2Block {
        bit,
        end_bit,
        decomp,
        level: 9,
    };
    Bzip2Index {
        streams,
        blocks: Some(vec![
            block(32, 2000, 0),
            block(2000, 3997, 3000),
            block(4032, 4500, 7000),
        ]),
    }
}

#[test]
fn indexes_round_trip_and_garbage_is_refused() {
    for index in [
        sample(),
        Bzip2Index {
            blocks: None,
            ..sample()
        },
        Bzip2Index::default(),
    ] {
        let mut bytes = Vec::new();
        index.encode(&mut bytes);
        assert_eq!(Bzip2Index::decode(&bytes).ok(), Some(index.clone()));
        let streams_len = 16 + 16 * index.streams.frames.len();
        for cut in 0..bytes.len() {
            // Cutting a block table off whole leaves a valid old index.
            if cut != streams_len {
                assert!(Bzip2Index::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
    }
    let edits: [fn(&mut Vec<Bzip2Block>); 7] = [
        |b| b.swap(0, 1),
        |b| b[1].bit = 1999,
        |b| b[0].decomp = 1,
        |b| b[2].decomp = 3000,
        |b| b[2].decomp = 9000,
        |b| b[1].level = 0,
        |b| b[2].end_bit = 4032 + MAX_BLOCK_BYTES * 8 + 1,
    ];
    for edit in edits {
        let mut index = sample();
        if let Some(blocks) = &mut index.blocks {
            edit(blocks);
        }
        let mut bytes = Vec::new();
        index.encode(&mut bytes);
        assert!(Bzip2Index::decode(&bytes).is_err(), "{index:?}");
    }
    let mut bytes = Vec::new();
    sample().encode(&mut bytes);
    let at = 16 + 32;
    bytes[at] = 7;
    assert!(Bzip2Index::decode(&bytes).is_err());
    assert!(Bzip2Index::decode(&[0xff; 64]).is_err());
}
