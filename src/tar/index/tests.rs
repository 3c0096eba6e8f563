use super::*;
use crate::tar::testutil::{
    header, index_bytes, records, seal, set, set_octal, Archive, Kind, SliceStream,
};
use crate::tar::SparseSegment;

const B: u64 = BLOCK as u64;

/// PAX key/value pairs.
type Records<'a> = Vec<(&'a [u8], &'a [u8])>;

fn members(bytes: &[u8]) -> Vec<Member> {
    index_bytes(bytes).expect("indexes").members
}

fn error(bytes: &[u8]) -> TarError {
    index_bytes(bytes).expect_err("fails")
}

fn paths(members: &[Member]) -> Vec<&[u8]> {
    members.iter().map(|m| &m.path[..]).collect()
}

/// Reads a member's whole contents back from the archive bytes.
fn contents(archive: &[u8], member: &Member) -> Vec<u8> {
    let mut out = vec![0u8; usize::try_from(member.data.size).expect("small")];
    let n = member
        .data
        .read_at(0, &mut out, |off, dst| {
            let off = usize::try_from(off).map_err(|_| ())?;
            dst.copy_from_slice(archive.get(off..off + dst.len()).ok_or(())?);
            Ok::<(), ()>(())
        })
        .expect("in bounds");
    assert_eq!(n, out.len());
    out
}

#[test]
fn ustar_paths_join_prefix_and_name() {
    let mut h = header(Kind::Ustar, b"name.txt", b'0', 5);
    set(&mut h, 345..500, b"a/deep/prefix");
    seal(&mut h);
    let mut ar = Archive::default();
    ar.entry(&h, b"hello");
    // Built by the tar crate: a 150-byte path is split into prefix and name.
    let long = format!("{}/{}", "p".repeat(90), "n".repeat(59));
    let mut b = tar::Builder::new(Vec::new());
    let mut th = tar::Header::new_ustar();
    th.set_size(3);
    th.set_mode(0o755);
    th.set_path(&long).expect("fits ustar");
    th.set_cksum();
    b.append(&th, &b"abc"[..]).expect("append");
    ar.bytes.extend(b.into_inner().expect("finish"));
    let bytes = ar.finish();
    let m = members(&bytes);
    assert_eq!(
        paths(&m),
        vec![&b"a/deep/prefix/name.txt"[..], long.as_bytes()]
    );
    assert_eq!(contents(&bytes, &m[0]), b"hello");
    assert_eq!(contents(&bytes, &m[1]), b"abc");
    assert_eq!(m[1].mode, 0o755);
}

#[test]
fn v7_regular_files_named_with_a_slash_are_directories() {
    let mut ar = Archive::default();
    ar.file(Kind::V7, b"dir/", 0, b"")
        .file(Kind::V7, b"dir/file", 0, b"v7 data")
        .file(Kind::V7, b"dir/other", b'0', b"")
        .file(Kind::V7, b"dir/link", b'1', b"");
    let bytes = ar.finish();
    let m = members(&bytes);
    let kinds: Vec<_> = m.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            MemberKind::Directory,
            MemberKind::Regular,
            MemberKind::Regular,
            MemberKind::Hardlink
        ]
    );
    assert_eq!(contents(&bytes, &m[1]), b"v7 data");
    assert_eq!((m[1].uid, m[1].gid, m[1].mtime), (1000, 100, 1_700_000_000));
}

#[test]
fn gnu_headers_have_no_prefix() {
    let mut b = tar::Builder::new(Vec::new());
    let mut th = tar::Header::new_gnu();
    th.set_size(2);
    th.set_path("plain").expect("path");
    if let Some(gnu) = th.as_gnu_mut() {
        gnu.set_atime(0o7777777);
        gnu.set_ctime(0o1234567);
    }
    th.set_cksum();
    b.append(&th, &b"hi"[..]).expect("append");
    let bytes = b.into_inner().expect("finish");
    let m = members(&bytes);
    assert_eq!(paths(&m), vec![&b"plain"[..]]);
    assert_eq!(contents(&bytes, &m[0]), b"hi");
}

#[test]
fn every_type_flag_maps_to_a_kind_and_offsets_stay_right() {
    let mut ar = Archive::default();
    let mut dev = header(Kind::Ustar, b"dev/sda", b'4', 0);
    set_octal(&mut dev, 329..337, 8);
    set_octal(&mut dev, 337..345, 1);
    seal(&mut dev);
    let mut chr = header(Kind::Gnu, b"dev/null", b'3', 0);
    set_octal(&mut chr, 329..337, 1);
    set_octal(&mut chr, 337..345, 3);
    seal(&mut chr);
    let mut sym = header(Kind::Ustar, b"sym", b'2', 0);
    set(&mut sym, 157..257, b"target");
    seal(&mut sym);
    ar.file(Kind::Ustar, b"zero", b'0', b"0")
        .file(Kind::Ustar, b"nul", 0, b"nul")
        .file(Kind::Ustar, b"contig", b'7', b"seven")
        .entry(&sym, b"")
        .entry(&chr, b"")
        .entry(&dev, b"")
        .file(Kind::Ustar, b"dir", b'5', b"")
        .file(Kind::Ustar, b"fifo", b'6', b"")
        .file(Kind::Gnu, b"dumpdir", b'D', &[b'Y'; 700])
        .file(Kind::Ustar, b"unknown", b'Z', &[b'z'; 513])
        .file(Kind::Ustar, b"after", b'0', b"still aligned");
    let bytes = ar.finish();
    let m = members(&bytes);
    let got: Vec<_> = m
        .iter()
        .map(|m| (&m.path[..], m.kind, m.data.size))
        .collect();
    use MemberKind::*;
    let expected: Vec<(&[u8], MemberKind, u64)> = vec![
        (b"zero", Regular, 1),
        (b"nul", Regular, 3),
        (b"contig", Regular, 5),
        (b"sym", Symlink, 0),
        (b"dev/null", CharDevice, 0),
        (b"dev/sda", BlockDevice, 0),
        (b"dir", Directory, 0),
        (b"fifo", Fifo, 0),
        (b"dumpdir", Directory, 0),
        (b"unknown", Regular, 513),
        (b"after", Regular, 13),
    ];
    assert_eq!(got, expected);
    assert_eq!(m[3].link_target, b"target");
    assert_eq!((m[4].dev_major, m[4].dev_minor), (1, 3));
    assert_eq!((m[5].dev_major, m[5].dev_minor), (8, 1));
    assert_eq!((m[0].dev_major, m[0].dev_minor), (0, 0));
    assert!(m
        .iter()
        .all(|m| m.link_target.is_empty() || m.kind == Symlink));
    assert_eq!(contents(&bytes, &m[10]), b"still aligned");
    assert_eq!(contents(&bytes, &m[9]), vec![b'z'; 513]);
    assert_eq!(m[9].header_offset, 14 * B);
}

#[test]
fn directories_carry_no_data_whatever_their_size_says() {
    let mut ar = Archive::default();
    ar.entry(&header(Kind::Ustar, b"dir/", b'5', 4096), b"")
        .file(Kind::Ustar, b"dir/f", b'0', b"x");
    let m = members(&ar.finish());
    assert_eq!(paths(&m), vec![&b"dir/"[..], b"dir/f"]);
    assert_eq!(m[0].data.size, 0);
}

#[test]
fn volume_labels_are_skipped_and_multivolume_is_unsupported() {
    let mut ar = Archive::default();
    ar.file(Kind::Gnu, b"Backup 2024", b'V', b"")
        .file(Kind::Gnu, b"file", b'0', b"data");
    let m = members(&ar.finish());
    assert_eq!(paths(&m), vec![&b"file"[..]]);
    assert_eq!(m[0].header_offset, B);

    let mut ar = Archive::default();
    ar.file(Kind::Gnu, b"file", b'0', b"data")
        .file(Kind::Gnu, b"continued", b'M', b"rest");
    let err = error(&ar.finish());
    assert!(matches!(err.problem, Problem::Unsupported(_)), "{err}");
    assert_eq!(err.offset, 2 * B);
}

#[test]
fn long_names_and_links_apply_to_the_next_member_only() {
    let name = [b"d/".as_slice(), &[b'n'; 300]].concat();
    let target = [b"t/".as_slice(), &[b'l'; 200]].concat();
    let mut ar = Archive::default();
    ar.ext(b'L', &[&name[..], b"\0\0\0"].concat())
        .ext(b'K', &[&target[..], b"\0"].concat());
    let mut sym = header(Kind::Gnu, b"truncated-name", b'2', 0);
    set(&mut sym, 157..257, b"truncated-target");
    seal(&mut sym);
    ar.entry(&sym, b"");
    ar.entry(&sym, b"");
    // A long name on a regular file, no terminator.
    ar.ext(b'L', b"x/no-nul")
        .file(Kind::Gnu, b"x/no", b'0', b"1");
    let bytes = ar.finish();
    let m = members(&bytes);
    assert_eq!(m[0].path, name);
    assert_eq!(m[0].link_target, target);
    assert_eq!(m[0].header_offset, 0);
    assert_eq!(m[1].path, b"truncated-name");
    assert_eq!(m[1].link_target, b"truncated-target");
    assert_eq!(m[1].header_offset, m[0].header_offset + 3 * B + 2 * B);
    assert_eq!(m[2].path, b"x/no-nul");
    assert_eq!(contents(&bytes, &m[2]), b"1");

    // The tar crate writes GNU long names and long link names.
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("{}/file", "dir".repeat(60));
    let mut th = tar::Header::new_gnu();
    th.set_size(4);
    b.append_data(&mut th, &long, &b"four"[..]).expect("append");
    let mut lh = tar::Header::new_gnu();
    lh.set_entry_type(tar::EntryType::Symlink);
    lh.set_size(0);
    b.append_link(&mut lh, "link", &long).expect("link");
    let bytes = b.into_inner().expect("finish");
    let m = members(&bytes);
    assert_eq!(m[0].path, long.as_bytes());
    assert_eq!(contents(&bytes, &m[0]), b"four");
    assert_eq!(
        (m[1].kind, &m[1].link_target[..]),
        (MemberKind::Symlink, long.as_bytes())
    );
}

#[test]
fn pax_records_override_header_fields() {
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"first", b'0', b"");
    let x_offset = ar.pos();
    ar.pax(
        b'x',
        &[
            (b"path", b"pax/\xffname"),
            (b"uid", b"3000000000"),
            (b"gid", b"42"),
            (b"uname", b"alice"),
            (b"gname", b"\xe9quipe"),
            (b"mtime", b"1700000000.5"),
            (b"atime", b"1.1"),
            (b"SCHILY.xattr.user.mime", b"text/\0plain"),
            (b"SCHILY.xattr.security.capability", b"\x01\0\0\x02"),
        ],
    );
    ar.file(Kind::Ustar, b"short", b'0', b"body");
    ar.pax(
        b'x',
        &[(b"linkpath", b"/very/long/target"), (b"mtime", b"-1.25")],
    );
    ar.file(Kind::Ustar, b"sym", b'2', b"");
    // Go reads device numbers from the header only.
    ar.pax(
        b'x',
        &[(b"SCHILY.devmajor", b"259"), (b"SCHILY.devminor", b"70000")],
    );
    let mut blk = header(Kind::Ustar, b"blk", b'4', 0);
    set_octal(&mut blk, 329..337, 8);
    set_octal(&mut blk, 337..345, 3);
    seal(&mut blk);
    ar.bytes.extend_from_slice(&blk);
    let bytes = ar.finish();
    let m = members(&bytes);
    let f = &m[1];
    assert_eq!(f.path, b"pax/\xffname");
    assert_eq!((f.uid, f.gid), (3_000_000_000, 42));
    assert_eq!((f.mtime, f.mtime_nsec), (1_700_000_000, 500_000_000));
    assert_eq!(
        f.xattrs,
        vec![
            (b"user.mime".to_vec(), b"text/\0plain".to_vec()),
            (b"security.capability".to_vec(), b"\x01\0\0\x02".to_vec()),
        ]
    );
    assert_eq!(f.header_offset, x_offset);
    assert_eq!(contents(&bytes, f), b"body");
    assert_eq!(m[2].link_target, b"/very/long/target");
    assert_eq!((m[2].mtime, m[2].mtime_nsec), (-2, 750_000_000));
    assert_eq!((m[3].dev_major, m[3].dev_minor), (8, 3));
    // Extensions do not leak to the next member.
    assert_eq!(m[2].uid, 1000);
    assert!(m[2].xattrs.is_empty());
}

#[test]
fn solaris_x_headers_are_pax_headers() {
    let mut ar = Archive::default();
    ar.pax(b'X', &[(b"path", b"solaris/name")])
        .file(Kind::Ustar, b"short", b'0', b"s");
    let m = members(&ar.finish());
    assert_eq!(paths(&m), vec![&b"solaris/name"[..]]);
}

#[test]
fn pax_size_is_the_only_size_used_to_skip() {
    // The header says 0 bytes but PAX says 1024: the data holds what
    // looks like a header, which must not be read as a member.
    let mut hidden = Archive::default();
    hidden.file(Kind::Ustar, b"hidden", b'0', b"evil");
    let mut ar = Archive::default();
    ar.pax(b'x', &[(b"size", b"1024")]);
    ar.entry(&header(Kind::Ustar, b"outer", b'0', 0), &hidden.bytes);
    ar.file(Kind::Ustar, b"next", b'0', b"ok");
    let bytes = ar.finish();
    let m = members(&bytes);
    assert_eq!(paths(&m), vec![&b"outer"[..], b"next"]);
    assert_eq!(m[0].data.size, 1024);
    assert_eq!(contents(&bytes, &m[1]), b"ok");

    // The reverse: a header size hiding the next member, PAX size 0.
    let mut ar = Archive::default();
    ar.pax(b'x', &[(b"size", b"0")]);
    ar.bytes
        .extend_from_slice(&header(Kind::Ustar, b"outer", b'0', 1024));
    ar.file(Kind::Ustar, b"visible", b'0', b"seen");
    let m = members(&ar.finish());
    assert_eq!(paths(&m), vec![&b"outer"[..], b"visible"]);
    assert_eq!(m[0].data.size, 0);

    // An empty PAX size falls back to the header.
    let mut ar = Archive::default();
    ar.pax(b'x', &[(b"size", b"")])
        .file(Kind::Ustar, b"f", b'0', b"abc");
    assert_eq!(members(&ar.finish())[0].data.size, 3);
}

#[test]
fn global_headers_set_nothing_and_spend_what_came_before() {
    // Go hands a 'g' header out as an entry of its own, which the
    // runtimes skip: its records are no defaults, and an 'x' or 'L'
    // before it describes it, not the next member.
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"before", b'0', b"");
    ar.pax(
        b'g',
        &[
            (b"path", b"renamed-everything"),
            (b"size", b"999999"),
            (b"uid", b"5"),
            (b"mtime", b"86400"),
            (b"SCHILY.xattr.user.a", b"g1"),
        ],
    );
    ar.file(Kind::Ustar, b"plain", b'0', b"data");
    ar.pax(b'x', &[(b"path", b"spent"), (b"uid", b"7")]);
    ar.ext(b'L', b"also-spent\0");
    ar.pax(b'g', &[(b"comment", b"between")]);
    let own = ar.pos();
    ar.file(Kind::Ustar, b"own", b'0', b"");
    let bytes = ar.finish();
    let m = members(&bytes);
    assert_eq!(paths(&m), vec![&b"before"[..], b"plain", b"own"]);
    let summary: Vec<_> = m.iter().map(|m| (m.uid, m.mtime)).collect();
    assert_eq!(summary, vec![(1000, 1_700_000_000); 3]);
    assert_eq!(contents(&bytes, &m[1]), b"data");
    assert!(m.iter().all(|m| m.xattrs.is_empty()));
    assert_eq!(m[2].header_offset, own);
    // A malformed global header is an error, as in Go.
    let mut ar = Archive::default();
    ar.ext(b'g', b"9 uid=1\n")
        .file(Kind::Ustar, b"f", b'0', b"");
    assert!(matches!(error(&ar.finish()).problem, Problem::BadPax(_)));
}

#[test]
fn the_last_extension_header_of_each_kind_applies_and_gnu_names_win() {
    // Go: a second 'x' replaces the first (nothing merges), and a GNU
    // long name or link wins over PAX path/linkpath in either order.
    let mut ar = Archive::default();
    ar.pax(b'x', &[(b"uid", b"5"), (b"path", b"first")])
        .pax(b'x', &[(b"gid", b"6")])
        .file(Kind::Ustar, b"header-name", b'0', b"");
    ar.pax(b'x', &[(b"path", b"pax-path")])
        .ext(b'L', b"gnu-after\0")
        .file(Kind::Gnu, b"h", b'0', b"");
    ar.ext(b'L', b"gnu-before\0")
        .pax(
            b'x',
            &[(b"path", b"pax-path"), (b"linkpath", b"pax-target")],
        )
        .ext(b'K', b"gnu-target\0")
        .file(Kind::Gnu, b"l", b'2', b"");
    ar.ext(b'L', b"one\0")
        .ext(b'L', b"two\0")
        .file(Kind::Gnu, b"h", b'0', b"");
    let m = members(&ar.finish());
    assert_eq!(
        paths(&m),
        vec![&b"header-name"[..], b"gnu-after", b"gnu-before", b"two"]
    );
    assert_eq!((m[0].uid, m[0].gid), (1000, 6));
    assert_eq!(m[2].link_target, b"gnu-target");
}

#[test]
fn header_only_types_have_no_data_whatever_size_they_declare() {
    // Go's isHeaderOnlyType: the block after a link, device, fifo or
    // directory header is the next header, so a declared size cannot
    // hide a member that the runtime extracts.
    for typeflag in [b'1', b'2', b'3', b'4', b'5', b'6'] {
        for pax_size in [false, true] {
            let mut ar = Archive::default();
            if pax_size {
                ar.pax(b'x', &[(b"size", b"1024")]);
            }
            let declared = if pax_size { 0 } else { 512 };
            let mut h = header(Kind::Ustar, b"decoy", typeflag, declared);
            set(&mut h, 157..257, b"target");
            seal(&mut h);
            ar.bytes.extend_from_slice(&h);
            ar.file(Kind::Ustar, b"hidden", b'0', b"!")
                .file(Kind::Ustar, b"after", b'0', b"");
            let bytes = ar.finish();
            let m = members(&bytes);
            let what = format!("type {} pax {pax_size}", typeflag as char);
            assert_eq!(
                paths(&m),
                vec![&b"decoy"[..], b"hidden", b"after"],
                "{what}"
            );
            assert_eq!(m[0].data.size, 0, "{what}");
            assert_eq!(contents(&bytes, &m[1]), b"!", "{what}");
        }
    }
    // A v7 regular file named with a slash is a directory, header-only
    // too; a '0' member so named stays a file with its data.
    let mut ar = Archive::default();
    let h = header(Kind::V7, b"olddir/", 0, 512);
    ar.bytes.extend_from_slice(&h);
    ar.file(Kind::V7, b"hidden", 0, b"")
        .file(Kind::Ustar, b"file/", b'0', b"data");
    let bytes = ar.finish();
    let m = members(&bytes);
    assert_eq!(paths(&m), vec![&b"olddir/"[..], b"hidden", b"file/"]);
    assert_eq!(m[0].kind, MemberKind::Directory);
    assert_eq!(m[2].kind, MemberKind::Regular);
    assert_eq!(contents(&bytes, &m[2]), b"data");
}

#[test]
fn extended_attributes_are_bounded_per_layer() {
    // 300 members with a 64 KiB value each: 19 MiB, over the 16 MiB
    // and 256 bytes a member a layer may carry.
    let value = vec![b'v'; 64 * 1024];
    let mut ar = Archive::default();
    for i in 0..300 {
        ar.pax(b'x', &[(b"SCHILY.xattr.user.big", &value[..])]);
        ar.file(Kind::Ustar, format!("f{i}").as_bytes(), b'0', b"");
    }
    let err = error(&ar.finish());
    assert!(matches!(err.problem, Problem::Limit(_)), "{err}");
    assert!(err.to_string().contains("extended attributes"), "{err}");
    // 200 of them (12.5 MiB) are kept.
    let mut ar = Archive::default();
    for i in 0..200 {
        ar.pax(b'x', &[(b"SCHILY.xattr.user.big", &value[..])]);
        ar.file(Kind::Ustar, format!("f{i}").as_bytes(), b'0', b"");
    }
    assert_eq!(members(&ar.finish()).len(), 200);
}

#[test]
fn numbers_in_every_encoding() {
    let mut h = header(Kind::Gnu, b"big", b'0', 0);
    let mut size = [0u8; 12];
    size[0] = 0x80;
    size[11] = 10;
    set(&mut h, 124..136, &size);
    let mut mtime = [0xffu8; 12];
    mtime[11] = 0x9c; // -100
    set(&mut h, 136..148, &mtime);
    set(&mut h, 108..116, b"   1750 ");
    set(&mut h, 116..124, b"");
    set(&mut h, 100..108, b"4755 \0\0\0");
    seal(&mut h);
    let mut ar = Archive::default();
    ar.entry(&h, b"0123456789")
        .file(Kind::Gnu, b"next", b'0', b"");
    let bytes = ar.finish();
    let m = members(&bytes);
    assert_eq!(contents(&bytes, &m[0]), b"0123456789");
    assert_eq!(
        (m[0].mtime, m[0].uid, m[0].gid, m[0].mode),
        (-100, 0o1750, 0, 0o4755)
    );
    assert_eq!(paths(&m), vec![&b"big"[..], b"next"]);
}

#[test]
fn bad_numbers_are_errors_at_their_header() {
    let mut negative = [0xffu8; 12];
    negative[11] = 0xf0;
    let mut huge = [0u8; 12];
    huge[0] = 0x80;
    huge[4] = 0x40;
    huge[11] = 1;
    let cases: Vec<(std::ops::Range<usize>, Vec<u8>, &str)> = vec![
        (124..136, negative.to_vec(), "size"),
        (124..136, huge.to_vec(), "size"),
        (124..136, b"12345678x".to_vec(), "size"),
        (108..116, vec![0xff; 8], "uid"),
        (116..124, vec![0xff; 8], "gid"),
        (136..148, b"--".to_vec(), "mtime"),
        (100..108, b"9".to_vec(), "mode"),
    ];
    for (range, value, field) in cases {
        let mut h = header(Kind::Gnu, b"f", b'0', 0);
        set(&mut h, range, &value);
        seal(&mut h);
        let mut ar = Archive::default();
        ar.file(Kind::Gnu, b"ok", b'0', b"").entry(&h, b"");
        let err = error(&ar.finish());
        match err.problem {
            Problem::BadNumber { field: f } => assert_eq!(f, field),
            ref p => panic!("{field}: {p}"),
        }
        assert_eq!(err.offset, B, "{field}");
    }
    // Fields overridden by PAX are not parsed at all.
    let mut h = header(Kind::Ustar, b"f", b'0', 0);
    set(&mut h, 108..116, &[0xff; 8]);
    seal(&mut h);
    let mut ar = Archive::default();
    ar.pax(b'x', &[(b"uid", b"12")]).entry(&h, b"");
    assert_eq!(members(&ar.finish())[0].uid, 12);
}

#[test]
fn checksums_are_checked_and_a_bad_first_header_is_not_a_tar() {
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"a", b'0', b"x");
    let mut bad = header(Kind::Ustar, b"b", b'0', 0);
    bad[0] = b'c';
    ar.entry(&bad, b"");
    let err = error(&ar.finish());
    assert!(matches!(err.problem, Problem::BadChecksum));
    assert_eq!(err.offset, 2 * B);
    assert_eq!(err.to_string(), "at byte 1024: bad header checksum");

    let err = error(&[&bad[..], &[0; 1024]].concat());
    assert!(matches!(err.problem, Problem::NotATar));
    assert_eq!(err.to_string(), "at byte 0: not a tar archive");
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(matches!(error(&random).problem, Problem::NotATar));
    assert!(matches!(
        error(b"just some text\n").problem,
        Problem::NotATar
    ));
    let gzip = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    assert!(matches!(error(&gzip).problem, Problem::NotATar));

    // Old tars summed signed chars.
    let mut h = header(Kind::Ustar, b"caf\xe9", b'0', 0);
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    set(&mut h, 148..156, format!("{signed:06o}\0 ").as_bytes());
    assert_eq!(paths(&members(&h)), vec![&b"caf\xe9"[..]]);
}

#[test]
fn the_first_zero_block_ends_the_archive() {
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"a", b'0', b"1");
    let mut bytes = ar.finish();
    bytes.truncate(3 * BLOCK);
    // Garbage after the end marker is never read.
    bytes.extend_from_slice(&[0xa5; 700]);
    let mut stream = SliceStream::new(bytes.clone(), usize::MAX);
    let m = index_layer(&mut stream).expect("indexes").members;
    assert_eq!(paths(&m), vec![&b"a"[..]]);
    // Two headers (data is skipped), and nothing past the marker.
    assert_eq!(stream.read_bytes, 2 * BLOCK);

    assert!(members(&[]).is_empty());
    assert!(members(&[0; 1024]).is_empty());
    assert!(members(&[0; 100]).is_empty());
    // No end marker at all.
    assert_eq!(members(&ar.bytes).len(), 1);
    // Cut inside the end marker or inside the last member's padding.
    assert_eq!(members(&ar.finish()[..1300]).len(), 1);
    assert_eq!(members(&ar.bytes[..600]).len(), 1);
}

#[test]
fn a_stream_cut_inside_a_header_or_data_is_truncated() {
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"a", b'0', &[7; 600])
        .file(Kind::Ustar, b"b", b'0', b"2");
    let bytes = ar.finish();
    // Inside the second header.
    let err = error(&bytes[..1536 + 100]);
    assert!(matches!(err.problem, Problem::Truncated));
    assert_eq!(err.offset, 1636);
    // Inside the first member's data.
    let err = error(&bytes[..512 + 300]);
    assert!(matches!(err.problem, Problem::Truncated));
    assert_eq!(err.offset, 812);
    // Inside extension data.
    let mut ar = Archive::default();
    ar.pax(b'x', &[(b"path", b"somewhere")]);
    let err = error(&ar.bytes[..520]);
    assert!(matches!(err.problem, Problem::Truncated));
    assert_eq!(err.offset, 520);
}

/// The paths `index_prefix` lists in `bytes`, and whether it says the
/// listing is complete.
fn prefix(bytes: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let got = index_prefix(&mut SliceStream::new(bytes.to_vec(), 7)).expect("prefix parses");
    let paths = got.index.members.into_iter().map(|m| m.path).collect();
    (paths, got.complete)
}

#[test]
fn a_prefix_lists_every_member_whose_headers_arrived() {
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"a", b'0', &[7; 600])
        .pax(b'x', &[(b"path", b"long/b")])
        .file(Kind::Ustar, b"b", b'0', b"2")
        .file(Kind::Ustar, b"c", b'5', b"");
    let bytes = ar.finish();
    let all = || vec![b"a".to_vec(), b"long/b".to_vec(), b"c".to_vec()];
    // The whole archive, end marker included.
    assert_eq!(prefix(&bytes), (all(), true));
    // a: header at 0, data 512..1112, padded to 1536; x header at 1536,
    // its data at 2048; b's header at 2560, data at 3072; c at 3584.
    // Cut inside a's data: a is known, its data is not.
    assert_eq!(prefix(&bytes[..700]), (vec![b"a".to_vec()], false));
    // Cut inside the pax header, its data, or b's own header: b is not
    // listed, and the dangling extension is a cut, not an error.
    for cut in [1600, 2048, 2100, 2560, 2600] {
        assert_eq!(prefix(&bytes[..cut]), (vec![b"a".to_vec()], false), "{cut}");
    }
    // b whole but its data cut; c's header cut; the end marker cut.
    assert_eq!(prefix(&bytes[..3080]).0.len(), 2);
    assert_eq!(prefix(&bytes[..3700]).0.len(), 2);
    assert_eq!(prefix(&bytes[..4100]), (all(), false));
    // Ending on a block boundary without the marker may be a cut too.
    assert_eq!(prefix(&bytes[..4096]), (all(), false));
    // Shorter than one block: nothing yet, not "not a tar".
    assert_eq!(prefix(&bytes[..100]), (Vec::new(), false));
    assert_eq!(prefix(&[]), (Vec::new(), false));
}

#[test]
fn a_prefix_still_fails_on_damage_it_did_read() {
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"a", b'0', b"1")
        .file(Kind::Ustar, b"b", b'0', b"2");
    let mut bytes = ar.finish();
    bytes[1024 + 10] ^= 0x20;
    let err =
        index_prefix(&mut SliceStream::new(bytes[..1600].to_vec(), 512)).expect_err("bad checksum");
    assert!(matches!(err.problem, Problem::BadChecksum));
    assert_eq!(err.offset, 1024);
    let err = index_prefix(&mut SliceStream::new(vec![0xa5; 600], 512)).expect_err("not a tar");
    assert!(matches!(err.problem, Problem::NotATar));
    // A dangling extension before a real end marker is still wrong.
    let mut ar = Archive::default();
    ar.pax(b'x', &[(b"path", b"lost")]);
    let err = index_prefix(&mut SliceStream::new(ar.finish(), 512)).expect_err("dangling");
    assert!(matches!(err.problem, Problem::DanglingExtension));
}

#[test]
fn extension_headers_need_a_member() {
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"a", b'0', b"");
    ar.pax(b'x', &[(b"path", b"lost")]);
    let err = error(&ar.finish());
    assert!(matches!(err.problem, Problem::DanglingExtension));
    assert_eq!(err.offset, B);
    let err = error(&ar.bytes);
    assert!(matches!(err.problem, Problem::DanglingExtension));
    // A trailing global header describes nothing and harms nothing.
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"a", b'0', b"")
        .pax(b'g', &[(b"comment", b"end")]);
    assert_eq!(members(&ar.finish()).len(), 1);
}

#[test]
fn limits_stop_hostile_extension_headers() {
    // A 1 GiB long name: refused before any of it is read.
    let mut ar = Archive::default();
    ar.entry(&header(Kind::Gnu, b"././@LongLink", b'L', 1 << 30), b"");
    let err = error(&ar.bytes);
    assert!(matches!(err.problem, Problem::Limit(_)), "{err}");
    assert_eq!(err.offset, 0);
    for typeflag in [b'x', b'g', b'K'] {
        let mut ar = Archive::default();
        ar.file(Kind::Ustar, b"a", b'0', b"");
        ar.entry(&header(Kind::Ustar, b"h", typeflag, (1 << 20) + 1), b"");
        let err = error(&ar.bytes);
        assert!(matches!(err.problem, Problem::Limit(_)), "{err}");
        assert_eq!(err.offset, B);
    }
    // Exactly 1 MiB is accepted.
    let mut name = vec![b'n'; (1 << 20) - 1];
    name.push(0);
    let mut ar = Archive::default();
    ar.ext(b'L', &name).file(Kind::Gnu, b"short", b'0', b"");
    assert_eq!(members(&ar.finish())[0].path.len(), (1 << 20) - 1);

    // 64 extension headers in a row are fine, 65 are not.
    let mut ar = Archive::default();
    for _ in 0..63 {
        ar.pax(b'x', &[(b"comment", b"padding")]);
    }
    ar.ext(b'L', b"name\0").file(Kind::Gnu, b"f", b'0', b"");
    assert_eq!(members(&ar.finish())[0].path, b"name");
    let mut ar = Archive::default();
    for _ in 0..64 {
        ar.pax(b'x', &[(b"comment", b"padding")]);
    }
    let at = ar.pos();
    ar.pax(b'x', &[(b"comment", b"one too many")])
        .file(Kind::Ustar, b"f", b'0', b"");
    let err = error(&ar.finish());
    assert!(matches!(err.problem, Problem::Limit(_)), "{err}");
    assert_eq!(err.offset, at);
}

#[test]
fn names_are_bytes_and_pass_through_exactly() {
    let mut ar = Archive::default();
    let mut sym = header(Kind::Ustar, b"\xff\xfe/\x80 name ", b'2', 0);
    set(&mut sym, 157..257, b"../\xc0\xaf/target ");
    seal(&mut sym);
    ar.entry(&sym, b"");
    ar.ext(b'L', b"./long/\xe9\0")
        .file(Kind::Gnu, b"x", b'0', b"");
    ar.pax(b'x', &[(b"path", b"//pax/../\x01\x7f")])
        .file(Kind::Ustar, b"y", b'0', b"");
    let m = members(&ar.finish());
    assert_eq!(
        paths(&m),
        vec![
            &b"\xff\xfe/\x80 name "[..],
            b"./long/\xe9",
            b"//pax/../\x01\x7f"
        ]
    );
    assert_eq!(m[0].link_target, b"../\xc0\xaf/target ");
}

#[test]
fn bad_pax_records_are_errors_at_the_record() {
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"a", b'0', b"");
    let good = records(&[(b"uid", b"1")]);
    ar.ext(b'x', &[&good[..], b"99 x=y\n"].concat())
        .file(Kind::Ustar, b"b", b'0', b"");
    let err = error(&ar.finish());
    assert!(matches!(err.problem, Problem::BadPax(_)), "{err}");
    assert_eq!(err.offset, 2 * B + good.len() as u64);
}

#[test]
fn read_errors_are_reported_with_their_offset() {
    let mut ar = Archive::default();
    ar.file(Kind::Ustar, b"a", b'0', b"")
        .file(Kind::Ustar, b"b", b'0', b"");
    let mut stream = SliceStream::new(ar.finish(), 100).failing_at(700);
    let err = index_layer(&mut stream).expect_err("fails");
    assert!(matches!(err.problem, Problem::Io(_)));
    assert_eq!(err.offset, 700);
    assert!(
        err.to_string()
            .starts_with("at byte 700: read error: injected failure"),
        "{err}"
    );
}

#[test]
fn indexing_a_plain_tar_reads_headers_only() {
    let mut ar = Archive::default();
    for i in 0..50u32 {
        ar.file(
            Kind::Ustar,
            format!("f{i}").as_bytes(),
            b'0',
            &vec![b'd'; 10_000 + i as usize],
        );
    }
    let bytes = ar.finish();
    let mut stream = SliceStream::new(bytes.clone(), usize::MAX);
    assert_eq!(index_layer(&mut stream).expect("indexes").members.len(), 50);
    assert_eq!(stream.read_bytes, 51 * BLOCK);

    // The same through the real source, with a temp file.
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), &bytes).expect("write");
    let source = crate::source::LayerSource::open(file.path()).expect("open");
    let mut pass = source.index_pass();
    let via_source = index_layer(&mut pass).expect("indexes").members;
    source
        .attach(pass.finish().expect("seek index"))
        .expect("attach");
    assert_eq!(via_source, index_bytes(&bytes).expect("indexes").members);
    let mut buf = vec![0u8; 10_049];
    let last = via_source.last().expect("members");
    let n = last
        .data
        .read_at(0, &mut buf, |off, dst| source.read_exact_at(off, dst))
        .expect("read");
    assert_eq!(n, 10_049);
    assert!(buf.iter().all(|&b| b == b'd'));
}

#[test]
fn synthetic_sparse_members_of_each_encoding() {
    let data = b"AAAABBB";
    let expect = |m: &Member| {
        assert_eq!(m.data.size, 100);
        assert_eq!(
            m.data.sparse.as_deref(),
            Some(
                &[
                    SparseSegment { offset: 10, len: 4 },
                    SparseSegment { offset: 90, len: 3 }
                ][..]
            )
        );
    };
    // Old GNU.
    let mut h = header(Kind::Gnu, b"old", b'S', 7);
    set_octal(&mut h, 386..398, 10);
    set_octal(&mut h, 398..410, 4);
    set_octal(&mut h, 410..422, 90);
    set_octal(&mut h, 422..434, 3);
    set_octal(&mut h, 483..495, 100);
    seal(&mut h);
    // PAX 0.1 with a decoy name, PAX 1.0 with the map in the data.
    let mut ar = Archive::default();
    ar.entry(&h, data)
        .pax(
            b'x',
            &[
                (b"GNU.sparse.size", b"100"),
                (b"GNU.sparse.map", b"10,4,90,3"),
                (b"GNU.sparse.name", b"real01"),
            ],
        )
        .file(Kind::Ustar, b"GNUSparseFile.1/real01", b'0', data)
        .pax(
            b'x',
            &[
                (b"GNU.sparse.major", b"1"),
                (b"GNU.sparse.minor", b"0"),
                (b"GNU.sparse.name", b"real10"),
                (b"GNU.sparse.realsize", b"100"),
            ],
        );
    let mut body = b"2\n10\n4\n90\n3\n".to_vec();
    body.resize(512, 0);
    body.extend_from_slice(data);
    ar.file(Kind::Ustar, b"GNUSparseFile.1/real10", b'0', &body);
    let bytes = ar.finish();
    let m = members(&bytes);
    assert_eq!(paths(&m), vec![&b"old"[..], b"real01", b"real10"]);
    let mut expected = vec![0u8; 100];
    expected[10..14].copy_from_slice(b"AAAA");
    expected[90..93].copy_from_slice(b"BBB");
    for member in &m {
        expect(member);
        assert_eq!(contents(&bytes, member), expected);
    }
    assert_eq!(m[2].data.offset, m[2].header_offset + 4 * B);
}

#[test]
fn inconsistent_sparse_members_are_errors() {
    let sparse_member = |pairs: &[(&[u8], &[u8])], data: &[u8]| {
        let mut ar = Archive::default();
        ar.file(Kind::Ustar, b"first", b'0', b"")
            .pax(b'x', pairs)
            .file(Kind::Ustar, b"f", b'0', data);
        error(&ar.finish())
    };
    let cases: Vec<(Records<'_>, &[u8], &str)> = vec![
        (
            vec![(b"GNU.sparse.size", b"10"), (b"GNU.sparse.map", b"5,1,0,1")],
            b"12",
            "overlaps",
        ),
        (
            vec![(b"GNU.sparse.size", b"10"), (b"GNU.sparse.map", b"8,5")],
            b"12345",
            "past the real size",
        ),
        (
            vec![(b"GNU.sparse.size", b"10"), (b"GNU.sparse.map", b"0,5")],
            b"123",
            "only 3 are stored",
        ),
    ];
    for (pairs, data, msg) in cases {
        let err = sparse_member(&pairs, data);
        assert!(err.to_string().contains(msg), "{err} lacks {msg}");
        // The member's own header, after `first` and the PAX header.
        assert_eq!(err.offset, 3 * B, "{err}");
    }
    // A 1.0 map claiming a million segments in a one-block member.
    let mut ar = Archive::default();
    ar.pax(
        b'x',
        &[
            (b"GNU.sparse.major", b"1"),
            (b"GNU.sparse.minor", b"0"),
            (b"GNU.sparse.realsize", b"1"),
        ],
    );
    ar.file(Kind::Ustar, b"f", b'0', b"1048576\n0\n1\n");
    let err = error(&ar.finish());
    assert!(err.to_string().contains("runs past"), "{err}");
    let mut ar = Archive::default();
    ar.pax(
        b'x',
        &[
            (b"GNU.sparse.major", b"1"),
            (b"GNU.sparse.minor", b"0"),
            (b"GNU.sparse.realsize", b"1"),
        ],
    );
    let mut body = b"1048577\n".to_vec();
    body.resize(512, 0);
    ar.file(Kind::Ustar, b"f", b'0', &body);
    assert!(matches!(error(&ar.finish()).problem, Problem::Limit(_)));
}

#[test]
fn sparse_records_are_recognised_as_go_recognises_them() {
    // Unknown versions leave an ordinary file, its data as stored; a
    // map without a real size takes the stored size; an old GNU
    // sparse member ignores PAX sparse records, its name included.
    let mut ar = Archive::default();
    ar.pax(
        b'x',
        &[
            (b"GNU.sparse.major", b"2"),
            (b"GNU.sparse.minor", b"0"),
            (b"GNU.sparse.realsize", b"10"),
            (b"GNU.sparse.name", b"unused"),
        ],
    )
    .file(Kind::Ustar, b"v2", b'0', b"as stored");
    ar.pax(
        b'x',
        &[(b"GNU.sparse.map", b"0,5"), (b"GNU.sparse.name", b"real")],
    )
    .file(Kind::Ustar, b"decoy", b'0', b"12345");
    let bytes = ar.finish();
    let m = members(&bytes);
    assert_eq!(paths(&m), vec![&b"v2"[..], b"real"]);
    assert_eq!(contents(&bytes, &m[0]), b"as stored");
    assert!(m[0].data.sparse.is_none());
    assert_eq!(contents(&bytes, &m[1]), b"12345");
    assert!(m[1].data.sparse.is_some());
}

#[test]
fn sparse_keys_on_non_regular_members_are_ignored() {
    let mut ar = Archive::default();
    ar.pax(
        b'x',
        &[(b"GNU.sparse.major", b"1"), (b"GNU.sparse.realsize", b"10")],
    )
    .file(Kind::Ustar, b"sym", b'2', b"")
    .file(Kind::Ustar, b"next", b'0', b"");
    let m = members(&ar.finish());
    assert_eq!(
        (m[0].kind, m[0].data.sparse.is_none()),
        (MemberKind::Symlink, true)
    );
    assert_eq!(m.len(), 2);
}
