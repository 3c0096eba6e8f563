//! Archives written by GNU tar in every format it has, indexed and read
//! back against the files they were made from.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use super::testutil::{gnu_tar, index_bytes};
use super::{Member, MemberKind};

/// Reads `len` bytes of a member at `pos` from the archive bytes.
fn read(archive: &[u8], member: &Member, pos: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xa5; len];
    let n = member
        .data
        .read_at(pos, &mut buf, |off, dst| {
            let off = usize::try_from(off).map_err(|_| "offset")?;
            let src = archive
                .get(off..off + dst.len())
                .ok_or("past the archive")?;
            dst.copy_from_slice(src);
            Ok::<(), &str>(())
        })
        .expect("read_at stays inside the archive");
    buf.truncate(n);
    buf
}

fn find<'a>(members: &'a [Member], path: &[u8]) -> &'a Member {
    members
        .iter()
        .find(|m| m.path == path)
        .unwrap_or_else(|| panic!("no member {:?}", String::from_utf8_lossy(path)))
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(bytes).expect("write");
}

fn sparse_file(path: &Path, size: u64, regions: &[(u64, &[u8])]) {
    let f = fs::File::create(path).expect("create");
    f.set_len(size).expect("truncate");
    for &(offset, bytes) in regions {
        write_at(path, offset, bytes);
    }
}

/// Checks `read_at` against the real file at many positions and lengths,
/// including every region boundary.
fn check_contents(archive: &[u8], member: &Member, expected: &[u8], label: &str) {
    assert_eq!(member.data.size, expected.len() as u64, "{label}: size");
    let size = expected.len() as u64;
    let mut positions = vec![0, 1, size / 2, size.saturating_sub(1), size, size + 10];
    if let Some(segments) = &member.data.sparse {
        for s in segments.iter() {
            for p in [s.offset, s.offset + s.len] {
                positions.extend([p.saturating_sub(1), p, p + 1]);
            }
        }
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..60 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        positions.push(seed % (size + 1));
    }
    for &pos in &positions {
        for len in [1usize, 3, 511, 4096, 4097, 70_000] {
            let got = read(archive, member, pos, len);
            let from = usize::try_from(pos.min(size)).expect("small");
            let to = (from + len).min(expected.len());
            assert!(
                got == expected[from..to],
                "{label}: {len} bytes at {pos} differ"
            );
        }
    }
    assert!(
        read(archive, member, 0, expected.len()) == expected,
        "{label}: whole file"
    );
}

#[test]
fn gnu_tar_sparse_files_read_back_exactly_in_every_sparse_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    const M: u64 = 1 << 20;
    sparse_file(&d.join("middle"), 5 * M, &[(M, b"abc"), (4 * M, b"xyz")]);
    sparse_file(
        &d.join("tail-hole"),
        3 * M,
        &[(0, b"start"), (M + 4095, b"straddles a block")],
    );
    sparse_file(&d.join("all-hole"), 2 * M, &[]);
    sparse_file(&d.join("ends-with-data"), 2 * M, &[(2 * M - 3, b"end")]);
    // Enough regions to need old GNU extension blocks (4 in the header, 21
    // per block).
    let many: Vec<(u64, Vec<u8>)> = (0..60u64)
        .map(|i| {
            (
                i * 65_536 + (i % 3) * 4096,
                format!("region {i}").into_bytes(),
            )
        })
        .collect();
    let many_refs: Vec<(u64, &[u8])> = many.iter().map(|(o, b)| (*o, &b[..])).collect();
    sparse_file(&d.join("many"), 60 * 65_536, &many_refs);
    let names = ["middle", "tail-hole", "all-hole", "ends-with-data", "many"];
    let expected: Vec<Vec<u8>> = names
        .iter()
        .map(|n| fs::read(d.join(n)).expect("read"))
        .collect();

    let formats: [&[&str]; 4] = [
        &["--format=gnu", "--sparse"],
        &["--format=pax", "--sparse", "--sparse-version=0.0"],
        &["--format=pax", "--sparse", "--sparse-version=0.1"],
        &["--format=pax", "--sparse", "--sparse-version=1.0"],
    ];
    for format in formats {
        let mut args = vec!["-c"];
        args.extend_from_slice(format);
        args.extend_from_slice(&names);
        let archive = gnu_tar(d, &args);
        let members = index_bytes(&archive).expect("indexes").members;
        assert_eq!(members.len(), names.len(), "{format:?}");
        for (name, bytes) in names.iter().zip(&expected) {
            let m = find(&members, name.as_bytes());
            let label = format!("{format:?} {name}");
            assert_eq!(m.kind, MemberKind::Regular, "{label}");
            let segments = m
                .data
                .sparse
                .as_deref()
                .unwrap_or_else(|| panic!("{label}: not sparse"));
            let stored: u64 = segments.iter().map(|s| s.len).sum();
            assert!(stored < m.data.size / 4, "{label}: {stored} bytes stored");
            check_contents(&archive, m, bytes, &label);
        }
        assert!(find(&members, b"all-hole")
            .data
            .sparse
            .as_deref()
            .is_some_and(<[_]>::is_empty));
    }
}

#[test]
fn gnu_tar_huge_sparse_files_use_base256_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let size = 9u64 << 30;
    sparse_file(&d.join("huge"), size, &[(size - 4096, b"near the end")]);
    for format in ["--format=gnu", "--format=pax"] {
        let archive = gnu_tar(d, &["-c", format, "--sparse", "huge"]);
        let members = index_bytes(&archive).expect("indexes").members;
        let m = find(&members, b"huge");
        assert_eq!(m.data.size, size, "{format}");
        assert_eq!(
            read(&archive, m, size - 4097, 14),
            b"\0near the end\0",
            "{format}"
        );
        assert_eq!(read(&archive, m, 5 << 30, 4), b"\0\0\0\0", "{format}");
    }
}

#[test]
fn gnu_tar_dialects_give_the_same_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::create_dir_all(d.join("dir/sub")).expect("mkdir");
    fs::write(d.join("dir/file.txt"), b"hello\n").expect("write");
    fs::write(d.join("dir/empty"), b"").expect("write");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(d.join("dir/big"), &big).expect("write");
    std::os::unix::fs::symlink("file.txt", d.join("dir/link")).expect("symlink");
    fs::hard_link(d.join("dir/file.txt"), d.join("dir/hard")).expect("hardlink");
    let odd = std::ffi::OsStr::from_bytes(b"dir/caf\xe9 \x01");
    fs::write(d.join(odd), b"latin-1").expect("write");
    let status = Command::new("mkfifo")
        .arg(d.join("dir/fifo"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    // Names too long for the 100-byte field (ustar needs its prefix, GNU
    // and PAX their extensions).
    let mid = format!("dir/{}/{}", "m".repeat(90), "n".repeat(60));
    fs::create_dir_all(d.join(&mid).parent().expect("parent")).expect("mkdir");
    fs::write(d.join(&mid), b"mid").expect("write");
    let long = format!("dir/{}/{}", "l".repeat(150), "k".repeat(150));
    fs::create_dir_all(d.join(&long).parent().expect("parent")).expect("mkdir");
    fs::write(d.join(&long), b"long").expect("write");
    let long_target = format!("{}/target", "t".repeat(120));
    std::os::unix::fs::symlink(&long_target, d.join("dir/longlink")).expect("symlink");

    for format in ["gnu", "pax", "ustar", "v7"] {
        let mut args = vec!["-c".to_string(), format!("--format={format}")];
        args.extend(
            [
                "dir/file.txt",
                "dir/empty",
                "dir/big",
                "dir/link",
                "dir/hard",
                "dir/sub",
            ]
            .map(String::from),
        );
        if format != "v7" {
            args.push("dir/fifo".into());
            args.push(mid.clone());
        }
        if matches!(format, "gnu" | "pax") {
            args.push(long.clone());
            args.push("dir/longlink".into());
        }
        let mut args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        args.push(odd);
        let out = Command::new("tar")
            .current_dir(d)
            .args(&args)
            .args(["-f", "-"])
            .output()
            .expect("tar");
        assert!(
            out.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let archive = out.stdout;
        let members = index_bytes(&archive).expect("indexes").members;

        let file = find(&members, b"dir/file.txt");
        assert_eq!(read(&archive, file, 0, 100), b"hello\n", "{format}");
        assert_eq!(file.mode, 0o644, "{format}");
        assert_eq!(
            read(&archive, find(&members, b"dir/big"), 0, 200_000),
            big,
            "{format}"
        );
        assert_eq!(find(&members, b"dir/empty").data.size, 0, "{format}");
        let link = find(&members, b"dir/link");
        assert_eq!(
            (link.kind, &link.link_target[..]),
            (MemberKind::Symlink, &b"file.txt"[..]),
            "{format}"
        );
        let hard = find(&members, b"dir/hard");
        assert_eq!(
            (hard.kind, &hard.link_target[..]),
            (MemberKind::Hardlink, &b"dir/file.txt"[..]),
            "{format}"
        );
        assert_eq!(hard.data.size, 0, "{format}");
        assert_eq!(
            find(&members, b"dir/sub/").kind,
            MemberKind::Directory,
            "{format}"
        );
        assert_eq!(
            read(&archive, find(&members, b"dir/caf\xe9 \x01"), 0, 10),
            b"latin-1",
            "{format}"
        );
        if format != "v7" {
            assert_eq!(
                find(&members, b"dir/fifo").kind,
                MemberKind::Fifo,
                "{format}"
            );
            assert_eq!(
                read(&archive, find(&members, mid.as_bytes()), 0, 10),
                b"mid",
                "{format}"
            );
        }
        if matches!(format, "gnu" | "pax") {
            assert_eq!(
                read(&archive, find(&members, long.as_bytes()), 0, 10),
                b"long",
                "{format}"
            );
            assert_eq!(
                find(&members, b"dir/longlink").link_target,
                long_target.as_bytes(),
                "{format}"
            );
        }
    }
}

#[test]
fn gnu_tar_negative_times_and_large_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("old"), b"from the sixties").expect("write");
    let status = Command::new("touch")
        .args(["-d", "1960-01-01 00:00:00.25 UTC"])
        .arg(d.join("old"))
        .status()
        .expect("touch");
    assert!(status.success());
    for format in ["gnu", "pax"] {
        let archive = gnu_tar(
            d,
            &[
                "-c",
                &format!("--format={format}"),
                "--owner=big:3000000000",
                "--group=huge:4000000000",
                "old",
            ],
        );
        let members = index_bytes(&archive).expect("indexes").members;
        let m = find(&members, b"old");
        assert_eq!((m.uid, m.gid), (3_000_000_000, 4_000_000_000), "{format}");
        assert_eq!(m.mtime, -315_619_200, "{format}");
        if format == "pax" {
            assert_eq!(m.mtime_nsec, 250_000_000, "{format}");
        }
        assert_eq!(read(&archive, m, 0, 100), b"from the sixties", "{format}");
    }
}

#[test]
fn gnu_tar_incremental_dumpdirs_are_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::create_dir_all(d.join("tree/sub")).expect("mkdir");
    fs::write(d.join("tree/a"), b"a").expect("write");
    fs::write(d.join("tree/sub/b"), b"bb").expect("write");
    for format in ["gnu", "posix"] {
        let snapshot = d.join(format!("snap-{format}"));
        let archive = gnu_tar(
            d,
            &[
                "-c",
                &format!("--format={format}"),
                &format!("--listed-incremental={}", snapshot.display()),
                "tree",
            ],
        );
        if format == "gnu" {
            assert!(
                archive.chunks(512).any(|b| b.get(156) == Some(&b'D')),
                "no dumpdir written"
            );
        }
        let members = index_bytes(&archive).expect("indexes").members;
        assert_eq!(
            find(&members, b"tree/").kind,
            MemberKind::Directory,
            "{format}"
        );
        assert_eq!(
            find(&members, b"tree/sub/").kind,
            MemberKind::Directory,
            "{format}"
        );
        assert_eq!(
            read(&archive, find(&members, b"tree/sub/b"), 0, 10),
            b"bb",
            "{format}"
        );
        assert_eq!(
            read(&archive, find(&members, b"tree/a"), 0, 10),
            b"a",
            "{format}"
        );
    }
}

#[test]
fn gnu_tar_xattrs_come_through_pax_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let path = d.join("f");
    fs::write(&path, b"x").expect("write");
    let value = b"bin\0ary\xff";
    if let Err(e) = xattr::set(&path, "user.layerfs", value) {
        eprintln!("skipping: this filesystem refuses user xattrs: {e}");
        return;
    }
    let archive = gnu_tar(
        d,
        &[
            "-c",
            "--format=pax",
            "--xattrs",
            "--xattrs-include=user.*",
            "f",
        ],
    );
    let members = index_bytes(&archive).expect("indexes").members;
    let m = find(&members, b"f");
    assert!(
        m.xattrs
            .contains(&(b"user.layerfs".to_vec(), value.to_vec())),
        "{:?}",
        m.xattrs
    );
}
