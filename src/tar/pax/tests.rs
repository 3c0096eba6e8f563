use super::*;
use crate::tar::member::SparseSegment;
use crate::tar::testutil::records;

fn parse(data: &[u8]) -> Result<PaxHeader, TarError> {
    PaxHeader::parse(data, 1000)
}

#[test]
fn known_keys_are_decoded_and_unknown_ones_ignored() {
    let data = records(&[
        (b"path", b"dir/\xff\xfename"),
        (b"linkpath", b"target\n="),
        (b"size", b"12345"),
        (b"uid", b"4294967295"),
        (b"gid", b"7"),
        (b"uname", b"\xe9l\xe8ve"),
        (b"gname", b"staff"),
        (b"mtime", b"-1.25"),
        (b"atime", b"not even a number"),
        (b"ctime", b"1.5"),
        (b"hdrcharset", b"BINARY"),
        (b"comment", b"hello"),
        (b"SCHILY.devmajor", b"8"),
        (b"SCHILY.devminor", b"1"),
        (b"SCHILY.acl.access", b"user::rw-"),
    ]);
    let pax = parse(&data).expect("valid");
    assert_eq!(pax.path.as_deref(), Some(&b"dir/\xff\xfename"[..]));
    assert_eq!(pax.linkpath.as_deref(), Some(&b"target\n="[..]));
    assert_eq!(pax.size, Some(Some(12345)));
    assert_eq!(pax.uid, Some(Some(u32::MAX)));
    assert_eq!(pax.gid, Some(Some(7)));
    assert_eq!(pax.mtime, Some(Some((-2, 750_000_000))));
    // Go applies no SCHILY.devmajor/devminor: the ustar fields count.
}

#[test]
fn paths_with_nul_bytes_are_refused() {
    // Found by the merge fuzz target: a `path` record with NULs gave a
    // tree name no filesystem can show, and an export that read back
    // as another tree.
    for (key, msg) in [
        (&b"path"[..], "bad pax header: path has a NUL byte"),
        (b"linkpath", "bad pax header: linkpath has a NUL byte"),
        (
            b"GNU.sparse.name",
            "bad pax header: GNU.sparse.name has a NUL byte",
        ),
    ] {
        let data = records(&[(b"uid", b"1"), (key, b"dir/a\0b")]);
        let err = parse(&data).expect_err("refused");
        // The offset is the bad record's, after the 8-byte uid record.
        assert_eq!(err.to_string(), format!("at byte 1008: {msg}"));
    }
    // A global header's values are not looked at, only its syntax.
    assert!(check_global(&records(&[(b"path", b"a\0b")]), 0).is_ok());
    assert!(check_global(b"9 uid=1\n", 0).is_err());
}

#[test]
fn empty_values_mean_fall_back_to_the_header() {
    let data = records(&[
        (b"size", b""),
        (b"uid", b""),
        (b"mtime", b""),
        (b"path", b""),
    ]);
    let pax = parse(&data).expect("valid");
    assert_eq!(
        (pax.size, pax.uid, pax.mtime),
        (Some(None), Some(None), Some(None))
    );
    assert_eq!(pax.path.as_deref(), Some(&b""[..]));
}

#[test]
fn xattrs_keep_record_order_and_the_last_value() {
    let data = records(&[
        (b"SCHILY.xattr.user.b", b"1"),
        (b"SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\0\0"),
        (b"SCHILY.xattr.user.b", b"2"),
        (b"SCHILY.xattr.", b"nameless, ignored"),
        (b"SCHILY.xattr.user.empty", b""),
        // Go reads no libarchive-only xattrs; libarchive writes a
        // SCHILY record beside each of them.
        (b"LIBARCHIVE.xattr.user.%3Dodd%00", b"AQID"),
    ]);
    let pax = parse(&data).expect("valid");
    let expected: Vec<Xattr> = vec![
        (b"user.b".to_vec(), b"2".to_vec()),
        (
            b"security.capability".to_vec(),
            b"\x01\x00\x00\x02\0\0".to_vec(),
        ),
        (b"user.empty".to_vec(), Vec::new()),
    ];
    assert_eq!(pax.xattrs, expected);
}

#[test]
fn xattrs_the_kernel_cannot_hold_are_refused() {
    let at_limit = vec![7u8; XATTR_VALUE_MAX];
    let long_name = format!("user.{}", "n".repeat(XATTR_NAME_MAX - 5));
    let pax = parse(&records(&[
        (b"SCHILY.xattr.user.big", &at_limit[..]),
        (format!("SCHILY.xattr.{long_name}").as_bytes(), b"v"),
    ]))
    .expect("at the limits");
    assert_eq!(pax.xattrs.len(), 2);
    let over = vec![7u8; XATTR_VALUE_MAX + 1];
    let err = parse(&records(&[
        (b"uid", b"1"),
        (b"SCHILY.xattr.user.big", &over),
    ]))
    .expect_err("too big");
    assert_eq!(
        err.to_string(),
        "at byte 1008: limit exceeded: xattr \"user.big\" of 65537 bytes \
         (the kernel takes at most 65536)"
    );
    let name = format!("SCHILY.xattr.user.{}", "n".repeat(XATTR_NAME_MAX));
    let err = parse(&records(&[(name.as_bytes(), b"v")])).expect_err("long name");
    assert!(matches!(err.problem, Problem::Limit(_)), "{err}");
}

#[test]
fn many_duplicate_xattrs_are_resolved_quickly() {
    let mut list: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..50_000u32 {
        list.push((
            format!("user.{}", i % 100).into_bytes(),
            i.to_le_bytes().to_vec(),
        ));
    }
    dedupe(&mut list);
    assert_eq!(list.len(), 100);
    assert_eq!(
        list.first(),
        Some(&(b"user.0".to_vec(), 49_900u32.to_le_bytes().to_vec()))
    );
}

#[test]
fn malformed_records_are_errors_at_their_offset() {
    let good = records(&[(b"uid", b"1")]);
    let cases: Vec<(Vec<u8>, u64)> = vec![
        (b"abc uid=1\n".to_vec(), 1000),
        (b"0 uid=1\n".to_vec(), 1000),
        (b"00 =\n".to_vec(), 1000),
        (b"-9 uid=1\n".to_vec(), 1000),
        (b"99 uid=1\n".to_vec(), 1000),
        (b"8 uid=12\n".to_vec(), 1000),
        (b"10 uid=1\nx".to_vec(), 1000),
        (b"8 uid1\n\n".to_vec(), 1000),
        (b"6 =12\n".to_vec(), 1000),
        (b"uid=1\n".to_vec(), 1000),
        (b"3 \n".to_vec(), 1000),
        (b"2 \n".to_vec(), 1000),
        (b"1 ".to_vec(), 1000),
        ([&good[..], b"5 a=b\n"].concat(), 1000 + good.len() as u64),
        (records(&[(b"uid", b"-1")]), 1000),
        (records(&[(b"gid", b"4294967296")]), 1000),
        (records(&[(b"size", b"4611686018427387905")]), 1000),
        (records(&[(b"mtime", b"1.5.5")]), 1000),
    ];
    for (data, offset) in cases {
        let err = parse(&data).expect_err("malformed");
        assert!(matches!(err.problem, Problem::BadPax(_)), "{data:?}: {err}");
        assert_eq!(err.offset, offset, "{data:?}");
    }
}

#[test]
fn trailing_nul_padding_is_tolerated() {
    let mut data = records(&[(b"uid", b"3")]);
    data.extend_from_slice(&[0; 20]);
    assert_eq!(parse(&data).expect("valid").uid, Some(Some(3)));
}

#[test]
fn sparse_records_collect_maps_of_every_pax_version() {
    let v00 = records(&[
        (b"GNU.sparse.size", b"100"),
        (b"GNU.sparse.numblocks", b"2"),
        (b"GNU.sparse.offset", b"10"),
        (b"GNU.sparse.numbytes", b"5"),
        (b"GNU.sparse.offset", b"50"),
        (b"GNU.sparse.numbytes", b"1"),
    ]);
    let pax = parse(&v00).expect("valid");
    assert_eq!(pax.sparse.format(), Some(SparseFormat::Records));
    assert_eq!(pax.sparse.real_size(), Some(100));
    let map = pax.sparse.into_map().finish(100, 6).expect("valid");
    assert_eq!(
        &*map,
        &[
            SparseSegment { offset: 10, len: 5 },
            SparseSegment { offset: 50, len: 1 }
        ]
    );

    let v01 = records(&[(b"GNU.sparse.map", b"0,4"), (b"GNU.sparse.name", b"real")]);
    let pax = parse(&v01).expect("valid");
    assert_eq!(pax.sparse.format(), Some(SparseFormat::Records));
    assert_eq!(pax.sparse.name.as_deref(), Some(&b"real"[..]));

    let v10 = records(&[(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0")]);
    let pax = parse(&v10).expect("valid");
    assert_eq!(pax.sparse.format(), Some(SparseFormat::DataMap));

    // Go's reading: versions are compared as text, an unknown one and
    // an empty map leave an ordinary file, and 0.0 pairs replace a
    // 0.1 list.
    for plain in [
        records(&[(b"GNU.sparse.major", b"1")]),
        records(&[(b"GNU.sparse.major", b"01"), (b"GNU.sparse.minor", b"0")]),
        records(&[(b"GNU.sparse.major", b"2"), (b"GNU.sparse.minor", b"0")]),
        records(&[(b"GNU.sparse.map", b""), (b"GNU.sparse.name", b"real")]),
        records(&[(b"GNU.sparse.size", b"100")]),
    ] {
        assert_eq!(parse(&plain).expect("valid").sparse.format(), None);
    }
    let both = records(&[
        (b"GNU.sparse.map", b"0,1"),
        (b"GNU.sparse.offset", b"3"),
        (b"GNU.sparse.numbytes", b"2"),
        (b"GNU.sparse.realsize", b"9"),
        (b"GNU.sparse.size", b"10"),
    ]);
    let sparse = parse(&both).expect("valid").sparse;
    assert_eq!(sparse.real_size(), Some(10));
    let map = sparse.into_map().finish(10, 2).expect("valid");
    assert_eq!(&*map, &[SparseSegment { offset: 3, len: 2 }]);

    for bad in [
        records(&[(b"GNU.sparse.numbytes", b"5")]),
        records(&[(b"GNU.sparse.offset", b"5")]),
        records(&[(b"GNU.sparse.offset", b"5"), (b"GNU.sparse.offset", b"6")]),
        records(&[(b"GNU.sparse.offset", b"x")]),
    ] {
        let err = parse(&bad).expect_err("bad");
        assert!(matches!(err.problem, Problem::BadPax(_)), "{err}");
    }
    let err = parse(&records(&[(b"GNU.sparse.map", b"1,2,3")])).expect_err("odd");
    assert!(matches!(err.problem, Problem::BadSparse(_)), "{err}");
}
