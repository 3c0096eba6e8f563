use super::*;

/// One member of every kind, with every optional field used and the
/// extremes of every number, in an order that makes the deltas wrap.
pub(crate) fn every_kind() -> LayerIndex {
    let base = Member {
        path: b"./etc/".to_vec(),
        kind: MemberKind::Directory,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        link_target: Vec::new(),
        dev_major: 0,
        dev_minor: 0,
        xattrs: Vec::new(),
        data: DataLayout {
            offset: 512,
            size: 0,
            sparse: None,
        },
        header_offset: 0,
    };
    let m = |f: &dyn Fn(&mut Member)| {
        let mut member = base.clone();
        f(&mut member);
        member
    };
    LayerIndex {
        members: vec![
            base.clone(),
            m(&|m| {
                m.path = b"./etc/passwd".to_vec();
                m.kind = MemberKind::Regular;
                m.mode = 0o4755;
                m.data = DataLayout {
                    offset: 1536,
                    size: 1234,
                    sparse: None,
                };
                m.header_offset = 1024;
                m.xattrs = vec![
                    (b"user.a".to_vec(), b"1".to_vec()),
                    (b"security.capability".to_vec(), vec![0, 0xff, 0]),
                    (b"user.empty".to_vec(), Vec::new()),
                ];
            }),
            m(&|m| {
                m.path = b"\xff\xfe non-utf8 \x80/\x00nul".to_vec();
                m.kind = MemberKind::Symlink;
                m.link_target = b"../\xc3\x28target".to_vec();
                m.mtime = -1;
                m.mtime_nsec = 999_999_999;
                m.header_offset = 512;
            }),
            m(&|m| {
                m.path = b"./etc/passwd.link".to_vec();
                m.kind = MemberKind::Hardlink;
                m.link_target = b"./etc/passwd".to_vec();
                m.uid = u32::MAX;
                m.gid = u32::MAX - 1;
                m.mtime = i64::MIN;
                m.header_offset = u64::MAX - 511;
                m.data.offset = 0;
            }),
            m(&|m| {
                m.path = b"./dev/null".to_vec();
                m.kind = MemberKind::CharDevice;
                m.dev_major = 1;
                m.dev_minor = 3;
                m.mtime = i64::MAX;
                m.header_offset = 0;
                m.data.offset = u64::MAX;
            }),
            m(&|m| {
                m.path = b"./dev/sda".to_vec();
                m.kind = MemberKind::BlockDevice;
                m.dev_major = u32::MAX;
                m.dev_minor = 0;
                m.mode = u32::MAX;
            }),
            m(&|m| {
                m.path = b"./run/fifo".to_vec();
                m.kind = MemberKind::Fifo;
            }),
            m(&|m| {
                m.path = b"./var/sparse.img".to_vec();
                m.kind = MemberKind::Regular;
                m.data = DataLayout {
                    offset: 1 << 40,
                    size: u64::MAX,
                    sparse: Some(
                        vec![
                            SparseSegment { offset: 0, len: 0 },
                            SparseSegment {
                                offset: 4096,
                                len: 512,
                            },
                            SparseSegment {
                                offset: u64::MAX - 1,
                                len: 1,
                            },
                        ]
                        .into_boxed_slice(),
                    ),
                };
                m.header_offset = (1 << 40) - 1024;
            }),
            m(&|m| {
                m.path = b"./var/empty-sparse".to_vec();
                m.kind = MemberKind::Regular;
                m.data.sparse = Some(Vec::new().into_boxed_slice());
            }),
            m(&|m| m.path = Vec::new()),
        ],
    }
}

fn seek_indexes() -> Vec<SeekIndex> {
    vec![SeekIndex::Plain, SeekIndex::Gzip(Default::default())]
}

#[test]
fn every_member_kind_and_seek_index_round_trips() {
    let index = every_kind();
    for seek in seek_indexes() {
        let bytes = encode(b"key", &index, &seek);
        let (back, seek_back) = decode(&bytes, b"key").expect("decode");
        assert_eq!(back.members, index.members);
        assert_eq!(seek_back, seek);
    }
    let empty = encode(b"", &LayerIndex::default(), &SeekIndex::Plain);
    let (back, _) = decode(&empty, b"").expect("decode");
    assert!(back.members.is_empty());
}

#[test]
fn members_pushed_in_batches_decode_as_one_list() {
    let index = every_kind();
    let whole = encode(b"key", &index, &SeekIndex::Plain);
    for size in [1, 2, 5] {
        let mut members = MemberEncoder::default();
        for batch in index.members.chunks(size) {
            members.push(batch);
        }
        let bytes = members.finish(b"key", &SeekIndex::Plain);
        assert_eq!(bytes, whole, "batches of {size}");
        let (back, _) = decode(&bytes, b"key").expect("decode");
        assert_eq!(back.members, index.members, "batches of {size}");
    }
}

#[test]
fn varints_round_trip_at_the_edges() {
    let values = [
        0,
        1,
        127,
        128,
        16_383,
        16_384,
        u64::MAX / 2,
        u64::MAX - 1,
        u64::MAX,
    ];
    let mut out = Vec::new();
    for v in values {
        put_u64(&mut out, v);
        put_i64(&mut out, v as i64);
    }
    let mut r = Reader::new(&out);
    for v in values {
        assert_eq!(r.u64().expect("u64"), v);
        assert_eq!(r.i64().expect("i64"), v as i64);
    }
    assert!(r.0.is_empty());
    // Eleven continuation bytes, and a tenth byte above the top bit.
    assert!(Reader::new(&[0x80; 11]).u64().is_err());
    let mut over = vec![0xff; 9];
    over.push(0x02);
    assert!(Reader::new(&over).u64().is_err());
    assert!(Reader::new(&[0x80]).u64().is_err());
}

#[test]
fn the_smallest_member_is_as_small_as_the_count_bound_assumes() {
    let zero = Member::bare(b"", MemberKind::Regular);
    let len = |n: usize| {
        let index = LayerIndex {
            members: vec![zero.clone(); n],
        };
        encode(b"", &index, &SeekIndex::Plain).len()
    };
    assert_eq!(len(1) - len(0), MIN_MEMBER_BYTES);
    assert_eq!(len(2) - len(1), MIN_MEMBER_BYTES);
}

/// Every single-byte change and every truncation is refused without a
/// panic (the checksum catches most; with it recomputed, the structural
/// checks must hold on their own).
#[test]
fn damage_is_always_detected() {
    let index = every_kind();
    let good = encode(b"key", &index, &SeekIndex::Plain);
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x41;
        assert!(decode(&bad, b"key").is_err(), "flip at {at}");
        assert!(decode(&good[..at], b"key").is_err(), "cut at {at}");
        // Same damage with a valid checksum: decoding may succeed with
        // other values, but must not panic or over-allocate.
        if at >= HEADER_LEN {
            let crc = crc32fast::hash(&bad[HEADER_LEN..]).to_le_bytes();
            bad[24..28].copy_from_slice(&crc);
            let _ = decode(&bad, b"key");
        }
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(
        decode(&longer, b"key"),
        Err(FormatError::Length { .. })
    ));
    assert!(matches!(
        decode(&good, b"other"),
        Err(FormatError::OtherLayer)
    ));
    let mut version = good.clone();
    version[12] = VERSION as u8 + 1;
    assert!(matches!(
        decode(&version, b"key"),
        Err(FormatError::Version(v)) if v == VERSION + 1
    ));
    let mut magic = good;
    magic[0] = b'X';
    assert!(matches!(decode(&magic, b"key"), Err(FormatError::BadMagic)));
}

/// A body with a valid checksum that claims a huge member count or
/// length is refused before allocating.
#[test]
fn huge_counts_are_refused_before_allocating() {
    let forge = |body: &[u8]| {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    };
    let mut body = Vec::new();
    put_bytes(&mut body, b"k");
    put_bytes(&mut body, &[0]); // SeekIndex::Plain
    put_u64(&mut body, u64::MAX);
    assert!(matches!(
        decode(&forge(&body), b"k"),
        Err(FormatError::Malformed(_))
    ));
    let mut body = Vec::new();
    put_u64(&mut body, u64::MAX);
    assert!(matches!(
        decode(&forge(&body), b"k"),
        Err(FormatError::Malformed(_))
    ));
    let mut body = Vec::new();
    put_bytes(&mut body, b"k");
    put_bytes(&mut body, &[99]);
    assert!(matches!(
        decode(&forge(&body), b"k"),
        Err(FormatError::Seek(_))
    ));
}
