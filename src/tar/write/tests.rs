use super::*;
use crate::tar::testutil::index_bytes;
use crate::tar::Member;

fn entry(path: &[u8], kind: MemberKind) -> EntryHeader<'_> {
    EntryHeader {
        path,
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        size: 0,
        link_target: b"",
        device: (0, 0),
        xattrs: &[],
    }
}

/// Writes entries (files get `size` bytes of a pattern) and parses the
/// archive back with our own reader.
fn round_trip(entries: &[EntryHeader<'_>]) -> (Vec<u8>, Vec<Member>) {
    let mut writer = TarWriter::new(Vec::new());
    for e in entries {
        writer.header(e).expect("header");
        if e.kind == MemberKind::Regular {
            let data: Vec<u8> = (0..e.size).map(|i| (i % 251) as u8).collect();
            writer.data(&data).expect("data");
        }
    }
    let bytes = writer.finish().expect("finish");
    assert_eq!(bytes.len() % BLOCK, 0);
    let index = index_bytes(&bytes).expect("our writer's output parses");
    (bytes, index.members)
}

#[test]
fn plain_entries_are_ustar_without_extended_headers() {
    let (bytes, members) = round_trip(&[
        entry(b"", MemberKind::Directory),
        entry(b"etc", MemberKind::Directory),
        EntryHeader {
            size: 600,
            ..entry(b"etc/passwd", MemberKind::Regular)
        },
    ]);
    assert_eq!(bytes.len(), BLOCK * (3 + 2 + 2));
    assert!(!bytes.windows(14).any(|w| w == PAX_HEADER_NAME));
    let paths: Vec<&[u8]> = members.iter().map(|m| m.path.as_slice()).collect();
    assert_eq!(paths, [&b"./"[..], b"etc/", b"etc/passwd"]);
    assert_eq!(members[2].data.size, 600);
    assert_eq!(&bytes[257..265], b"ustar\x0000");
}

#[test]
fn what_ustar_cannot_hold_goes_in_pax_records() {
    let long = [b'n'; 300];
    let link = [b'l'; 150];
    let xattrs: &[(&[u8], &[u8])] = &[(b"user.a", b"1\n2"), (b"security.capability", b"\0\x01")];
    let (_, members) = round_trip(&[
        entry(&long, MemberKind::Regular),
        EntryHeader {
            link_target: &link,
            ..entry(b"sym", MemberKind::Symlink)
        },
        EntryHeader {
            uid: 3_000_000,
            gid: 4_000_000,
            mtime: -2,
            mtime_nsec: 500_000_000,
            xattrs,
            ..entry(b"odd", MemberKind::Fifo)
        },
        EntryHeader {
            mtime: 7,
            mtime_nsec: 120_000_000,
            ..entry(b"caf\xe9", MemberKind::Directory)
        },
    ]);
    assert_eq!(members[0].path, long);
    assert_eq!(members[1].link_target, link);
    assert_eq!((members[2].uid, members[2].gid), (3_000_000, 4_000_000));
    assert_eq!((members[2].mtime, members[2].mtime_nsec), (-2, 500_000_000));
    let got: Vec<(&[u8], &[u8])> = members[2]
        .xattrs
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    assert_eq!(got, xattrs);
    assert_eq!(members[3].path, b"caf\xe9/");
    assert_eq!((members[3].mtime, members[3].mtime_nsec), (7, 120_000_000));
}

#[test]
fn long_names_that_are_not_utf8_use_gnu_long_name_headers() {
    let mut path = b"d\xff/".to_vec();
    path.extend_from_slice(&[0xe9; 150]);
    let target = [0xe8; 120];
    let (bytes, members) = round_trip(&[
        entry(&path, MemberKind::Regular),
        EntryHeader {
            link_target: &target,
            ..entry(b"l", MemberKind::Symlink)
        },
    ]);
    assert_eq!(members[0].path, path);
    assert_eq!(members[1].link_target, target);
    assert!(!bytes.windows(14).any(|w| w == PAX_HEADER_NAME));
    assert!(!bytes.windows(10).any(|w| w == b"hdrcharset"));
    assert_eq!(bytes.windows(13).filter(|w| *w == GNU_LONG_NAME).count(), 2);
}

#[test]
fn paths_up_to_255_bytes_split_into_prefix_and_name() {
    let mut path = vec![b'd'; 150];
    path.push(b'/');
    path.extend_from_slice(&[b'f'; 99]);
    let (bytes, members) = round_trip(&[entry(&path, MemberKind::Regular)]);
    assert!(!bytes.windows(14).any(|w| w == PAX_HEADER_NAME));
    assert_eq!(members[0].path, path);
    // No slash where a split would work: pax.
    let (bytes, members) = round_trip(&[entry(&[b'x'; 101], MemberKind::Regular)]);
    assert!(bytes.windows(14).any(|w| w == PAX_HEADER_NAME));
    assert_eq!(members[0].path, [b'x'; 101]);
}

#[test]
fn devices_hardlinks_and_big_sizes_keep_their_fields() {
    let (_, members) = round_trip(&[
        EntryHeader {
            device: (8, 1),
            ..entry(b"dev/sda1", MemberKind::BlockDevice)
        },
        EntryHeader {
            device: (1, 3),
            ..entry(b"dev/null", MemberKind::CharDevice)
        },
        EntryHeader {
            link_target: b"dev/null",
            ..entry(b"dev/null2", MemberKind::Hardlink)
        },
    ]);
    assert_eq!((members[0].dev_major, members[0].dev_minor), (8, 1));
    assert_eq!(members[1].kind, MemberKind::CharDevice);
    assert_eq!(members[2].kind, MemberKind::Hardlink);
    assert_eq!(members[2].link_target, b"dev/null");
    // A size past ustar's 8 GiB goes in a record; the header is not
    // followed by the data here, only checked.
    let mut writer = TarWriter::new(Vec::new());
    writer
        .header(&EntryHeader {
            size: 9 << 30,
            ..entry(b"big", MemberKind::Regular)
        })
        .expect("header");
    assert!(writer.finish().is_err(), "missing data is refused");
}

#[test]
fn records_count_their_own_length() {
    for value_len in [0, 1, 5, 90, 95, 96, 97, 990, 995, 996] {
        let mut records = Vec::new();
        push_record(&mut records, b"path", &vec![b'a'; value_len]);
        let space = records.iter().position(|&b| b == b' ').expect("space");
        let len: usize = std::str::from_utf8(&records[..space])
            .expect("digits")
            .parse()
            .expect("number");
        assert_eq!(len, records.len(), "value of {value_len}");
    }
}

#[test]
fn pax_times_round_towards_the_stored_floor() {
    assert_eq!(pax_time(5, 0), "5");
    assert_eq!(pax_time(5, 250_000_000), "5.25");
    assert_eq!(pax_time(-2, 500_000_000), "-1.5");
    assert_eq!(pax_time(-1, 0), "-1");
    assert_eq!(pax_time(0, 1), "0.000000001");
}

#[test]
fn the_same_entries_give_the_same_bytes() {
    let entries = [
        entry(b"a", MemberKind::Directory),
        EntryHeader {
            mtime_nsec: 5,
            ..entry(b"a/b", MemberKind::Fifo)
        },
    ];
    assert_eq!(round_trip(&entries).0, round_trip(&entries).0);
}

#[test]
fn later_names_of_an_inode_become_hardlinks_to_the_first() {
    let mut writer = TarWriter::new(Vec::new());
    let mut names = FirstNames::default();
    let file = EntryHeader {
        size: 3,
        ..entry(b"a", MemberKind::Regular)
    };
    assert!(names.header(&mut writer, 7, 2, &file).expect("a"));
    writer.data(b"abc").expect("data");
    let second = EntryHeader {
        path: b"b",
        ..file.clone()
    };
    assert!(!names.header(&mut writer, 7, 2, &second).expect("b"));
    let dir = entry(b"d", MemberKind::Directory);
    assert!(names.header(&mut writer, 8, 3, &dir).expect("d"));
    assert!(names.header(&mut writer, 8, 3, &dir).expect("d again"));
    let bytes = writer.finish().expect("finish");
    let members = index_bytes(&bytes).expect("parse").members;
    let kinds: Vec<_> = members.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            MemberKind::Regular,
            MemberKind::Hardlink,
            MemberKind::Directory,
            MemberKind::Directory
        ]
    );
    assert_eq!(members[1].link_target, b"a");
    assert_eq!(members[1].data.size, 0);
}

fn seg(offset: u64, len: u64) -> SparseSegment {
    SparseSegment { offset, len }
}

/// Byte `pos` of a file holding a pattern in `segments`, zeros elsewhere.
fn byte_at(segments: &[SparseSegment], pos: u64) -> u8 {
    let next = segments.partition_point(|s| s.offset + s.len <= pos);
    let inside = segments.get(next).is_some_and(|s| s.offset <= pos);
    if inside {
        (pos % 251) as u8 + 1
    } else {
        0
    }
}

/// Writes one file of `size` bytes with data in `segments` as the
/// exporter does (its archived regions), and parses the archive back
/// with our own reader.
fn sparse_round_trip(path: &[u8], size: u64, segments: &[SparseSegment]) -> (Vec<u8>, Vec<Member>) {
    let mut writer = TarWriter::new(Vec::new());
    let file = EntryHeader {
        size,
        ..entry(path, MemberKind::Regular)
    };
    let regions = archived_regions(segments, size);
    writer.sparse_header(&file, &regions).expect("header");
    for r in &regions {
        let bytes: Vec<u8> = (r.offset..r.offset + r.len)
            .map(|pos| byte_at(segments, pos))
            .collect();
        writer.data(&bytes).expect("data");
    }
    let bytes = writer.finish().expect("finish");
    let members = index_bytes(&bytes).expect("parses").members;
    (bytes, members)
}

/// The member's bytes from `pos`, holes included, read from `bytes`.
fn read_back(bytes: &[u8], member: &Member, pos: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xaa; len];
    let n = member
        .data
        .read_at(pos, &mut buf, |at, dst: &mut [u8]| {
            let at = at as usize;
            dst.copy_from_slice(&bytes[at..at + dst.len()]);
            Ok::<(), ()>(())
        })
        .expect("read");
    buf.truncate(n);
    buf
}

fn contains(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn archived_regions_are_whole_blocks_of_the_file() {
    let cases: &[(&[SparseSegment], u64, &[SparseSegment])] = &[
        // Widened on both sides, not past the size.
        (&[seg(4096, 5)], 1 << 20, &[seg(4096, 512)]),
        (&[seg(9_000, 1_000)], 10_000, &[seg(8_704, 1_296)]),
        (&[seg(100_000, 700)], 1 << 20, &[seg(99_840, 1_024)]),
        // Regions that then meet are merged; empty ones dropped.
        (
            &[
                seg(10, 5),
                seg(30, 0),
                seg(600, 10),
                seg(1000, 3),
                seg(4000, 1000),
            ],
            5_000,
            &[seg(0, 1024), seg(3_584, 1_416)],
        ),
        (&[seg(1024, 512), seg(1536, 1)], 4096, &[seg(1024, 1024)]),
        (&[], 100, &[]),
        (
            &[seg(u64::MAX - 10, 5)],
            u64::MAX,
            &[seg(u64::MAX - 511, 511)],
        ),
    ];
    for (segments, size, want) in cases {
        assert_eq!(&archived_regions(segments, *size), want, "{segments:?}");
    }
}

#[test]
fn sparse_files_are_pax_1_0_members_holding_only_their_regions() {
    let segments = [seg(4096, 5), seg(100_000, 700)];
    let (bytes, members) = sparse_round_trip(b"d/f", 1 << 20, &segments);
    // Extended header and its records, the stand-in header, one map
    // block, the data in three blocks, the end.
    assert_eq!(bytes.len(), BLOCK * (2 + 1 + 1 + 3 + 2));
    let header = &bytes[2 * BLOCK..3 * BLOCK];
    assert_eq!(&header[..20], b"d/GNUSparseFile.0/f\0");
    assert_eq!(
        &header[124..136],
        b"00000004000\0",
        "map block + 1536 bytes"
    );
    let records = &bytes[..2 * BLOCK];
    let expected = b"22 GNU.sparse.major=1\n22 GNU.sparse.minor=0\n\
        23 GNU.sparse.name=d/f\n31 GNU.sparse.realsize=1048576\n";
    assert!(records[BLOCK..].starts_with(expected), "{records:?}");
    let map = &bytes[3 * BLOCK..4 * BLOCK];
    let text = b"3\n4096\n512\n99840\n1024\n1048576\n0\n";
    assert_eq!(&map[..text.len()], text);
    assert!(map[text.len()..].iter().all(|&b| b == 0));

    assert_eq!(members.len(), 1);
    let m = &members[0];
    assert_eq!(
        (m.path.as_slice(), m.kind),
        (&b"d/f"[..], MemberKind::Regular)
    );
    assert_eq!(m.data.size, 1 << 20);
    assert_eq!(
        m.data.sparse.as_deref(),
        Some(&[seg(4096, 512), seg(99_840, 1_024)][..])
    );
    let whole: Vec<u8> = (0..1 << 20).map(|pos| byte_at(&segments, pos)).collect();
    assert!(read_back(&bytes, m, 0, 1 << 20) == whole);
}

#[test]
fn a_file_ending_in_data_has_no_closing_entry_and_one_all_hole_has_only_it() {
    let segments = [seg(9_000, 1_000)];
    let (bytes, members) = sparse_round_trip(b"tail", 10_000, &segments);
    assert!(contains(&bytes, b"./GNUSparseFile.0/tail\0"));
    assert!(contains(&bytes, b"\0\x001\n8704\n1296\n\0"));
    assert_eq!(
        read_back(&bytes, &members[0], 8_999, 2),
        [0, byte_at(&segments, 9_000)]
    );

    let (bytes, members) = sparse_round_trip(b"empty", 1 << 30, &[seg(7, 0)]);
    assert!(contains(&bytes, b"\0\x001\n1073741824\n0\n\0"));
    assert_eq!(bytes.len(), BLOCK * (2 + 1 + 1 + 2));
    assert_eq!(members[0].data.size, 1 << 30);
    assert_eq!(read_back(&bytes, &members[0], (1 << 30) - 3, 8), [0; 3]);
}

#[test]
fn a_map_without_holes_is_written_as_a_plain_file() {
    let segments = [seg(0, 300), seg(300, 100)];
    let (bytes, members) = sparse_round_trip(b"full", 512, &segments);
    assert_eq!(bytes.len(), BLOCK * (1 + 1 + 2));
    assert!(!contains(&bytes, b"GNU.sparse"));
    assert_eq!(members[0].data.sparse, None);
    assert_eq!(
        read_back(&bytes, &members[0], 399, 2),
        [byte_at(&segments, 399), 0]
    );
}

#[test]
fn a_huge_sparse_file_costs_its_regions_only() {
    let size = 1u64 << 62;
    let segments = [seg(0, 5), seg(size - 5, 5)];
    let (bytes, members) = sparse_round_trip(b"huge", size, &segments);
    assert_eq!(bytes.len(), BLOCK * (2 + 1 + 1 + 2 + 2));
    assert!(!contains(&bytes, b" size="), "the stored size fits ustar");
    assert_eq!(members[0].data.size, size);
    let tail: Vec<u8> = (size - 6..size)
        .map(|pos| byte_at(&segments, pos))
        .collect();
    assert_eq!(read_back(&bytes, &members[0], size - 6, 10), tail);
    assert_eq!(tail[0], 0);
}

#[test]
fn sparse_names_go_in_gnu_sparse_name_or_a_gnu_long_name() {
    // Too long for ustar: the stand-in is cut, never to a directory's
    // spelling, and no `path` record competes with the real name.
    let mut long = [b'a'; 81].to_vec();
    long.extend_from_slice(b"/b/");
    long.extend_from_slice(&[b'c'; 300]);
    let segs = [seg(10, 1)];
    let (bytes, members) = sparse_round_trip(&long, 1000, &segs);
    assert_eq!(members[0].path, long);
    assert!(contains(&bytes, b"GNU.sparse.major=1"));
    assert!(!contains(&bytes, b" path="));
    let mut stand_in = [b'a'; 81].to_vec();
    stand_in.extend_from_slice(b"/b/GNUSparseFile.0\0");
    assert_eq!(&bytes[2 * BLOCK..3 * BLOCK][..stand_in.len()], stand_in);

    // Not UTF-8: a GNU long name, which both tars read without a word,
    // rather than a pax value that needs `hdrcharset=BINARY`.
    let (bytes, members) = sparse_round_trip(b"caf\xe9", 1000, &segs);
    assert_eq!(members[0].path, b"caf\xe9");
    assert_eq!(members[0].data.sparse.as_deref(), Some(&[seg(0, 512)][..]));
    assert!(contains(&bytes, GNU_LONG_NAME));
    assert!(contains(&bytes, b"GNU.sparse.major=1"));
    assert!(!contains(&bytes, b"GNU.sparse.name"));
    assert!(!contains(&bytes, b"hdrcharset"));
}

#[test]
fn maps_longer_than_a_chunk_span_blocks() {
    let segments: Vec<_> = (0..20_000).map(|i| seg(i * 1_000_000_007, 3)).collect();
    let size = 20_000 * 1_000_000_007;
    let (bytes, members) = sparse_round_trip(b"many", size, &segments);
    let regions = archived_regions(&segments, size);
    assert_eq!(regions.len(), 20_000);
    assert_eq!(members[0].data.sparse.as_deref(), Some(&regions[..]));
    let at = 12_345 * 1_000_000_007;
    let want: Vec<u8> = (at - 1..at + 4)
        .map(|pos| byte_at(&segments, pos))
        .collect();
    assert_eq!(read_back(&bytes, &members[0], at - 1, 5), want);
    // The map took whole blocks: the archive holds it and the data only.
    let mut text = b"20001\n".to_vec();
    for r in &regions {
        text.extend_from_slice(format!("{}\n{}\n", r.offset, r.len).as_bytes());
    }
    text.extend_from_slice(format!("{size}\n0\n").as_bytes());
    let map_blocks = text.len().div_ceil(BLOCK);
    let data_blocks = regions.iter().map(|r| r.len).sum::<u64>() as usize / BLOCK;
    assert!(data_blocks > 20_000, "some regions cross a block boundary");
    assert_eq!(bytes.len(), BLOCK * (2 + 1 + map_blocks + data_blocks + 2));
    assert_eq!(&bytes[3 * BLOCK..3 * BLOCK + text.len()], text);
}

#[test]
fn bad_maps_are_refused_before_anything_is_written() {
    let cases: &[(MemberKind, u64, &[SparseSegment])] = &[
        (MemberKind::Regular, 100, &[seg(10, 5), seg(12, 1)]),
        (MemberKind::Regular, 100, &[seg(50, 5), seg(10, 1)]),
        (MemberKind::Regular, 100, &[seg(99, 2)]),
        (MemberKind::Regular, u64::MAX, &[seg(u64::MAX, 2)]),
        // GNU tar would read the second region from the wrong place.
        (MemberKind::Regular, 5000, &[seg(0, 5), seg(1024, 1)]),
        (MemberKind::Symlink, 100, &[seg(0, 1)]),
    ];
    for (kind, size, segments) in cases {
        let mut writer = TarWriter::new(Vec::new());
        let file = EntryHeader {
            size: *size,
            ..entry(b"x", *kind)
        };
        let err = writer.sparse_header(&file, segments).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{segments:?}");
        assert!(err.to_string().starts_with("x: "), "{err}");
        assert_eq!(writer.written(), 0);
    }
}

#[test]
fn later_names_of_a_sparse_file_are_hardlinks() {
    let mut writer = TarWriter::new(Vec::new());
    let mut names = FirstNames::default();
    let file = EntryHeader {
        size: 1 << 20,
        ..entry(b"a", MemberKind::Regular)
    };
    let segments = [seg(512, 2)];
    assert!(names
        .sparse_header(&mut writer, 1, 2, &file, &segments)
        .expect("a"));
    writer.data(b"hi").expect("data");
    let second = EntryHeader {
        path: b"b",
        ..file.clone()
    };
    assert!(!names
        .sparse_header(&mut writer, 1, 2, &second, &segments)
        .expect("b"));
    let bytes = writer.finish().expect("finish");
    let members = index_bytes(&bytes).expect("parse").members;
    assert_eq!(members[0].data.sparse.as_deref(), Some(&segments[..]));
    assert_eq!(members[1].kind, MemberKind::Hardlink);
    assert_eq!(members[1].link_target, b"a");
}
