//! Hostile input: randomly corrupted archives must fail cleanly, and
//! whatever does index must point inside the stream.

use super::header::{is_zero, Block, BLOCK};
use super::index::index_layer;
use crate::tar::testutil::{header, seal, set_octal, Archive, Kind, SliceStream};

/// An archive exercising every parser path.
fn everything() -> Vec<u8> {
    let mut sparse = header(Kind::Gnu, b"old-sparse", b'S', 6);
    for (i, (off, len)) in [(0u64, 1u64), (10, 1), (20, 1), (30, 1)].iter().enumerate() {
        set_octal(&mut sparse, 386 + i * 24..398 + i * 24, *off);
        set_octal(&mut sparse, 398 + i * 24..410 + i * 24, *len);
    }
    sparse[482] = 1;
    set_octal(&mut sparse, 483..495, 100);
    seal(&mut sparse);
    let mut ext = [0u8; BLOCK];
    set_octal(&mut ext, 0..12, 40);
    set_octal(&mut ext, 12..24, 1);
    set_octal(&mut ext, 24..36, 50);
    set_octal(&mut ext, 36..48, 1);
    let mut pax1 = b"2\n0\n3\n9\n2\n".to_vec();
    pax1.resize(BLOCK, 0);
    pax1.extend_from_slice(b"abcde");
    let mut ar = Archive::default();
    ar.pax(b'g', &[(b"uname", b"g"), (b"SCHILY.xattr.user.g", b"1")])
        .ext(b'L', b"long/name\0")
        .ext(b'K', b"long/target\0")
        .file(Kind::Gnu, b"l", b'2', b"")
        .entry(&sparse, &[&ext[..], b"ABCDEF"].concat())
        .pax(
            b'x',
            &[
                (b"GNU.sparse.major", b"1"),
                (b"GNU.sparse.minor", b"0"),
                (b"GNU.sparse.name", b"pax-sparse"),
                (b"GNU.sparse.realsize", b"20"),
                (b"mtime", b"-1.5"),
                (b"LIBARCHIVE.xattr.user.x", b"AQID"),
            ],
        )
        .file(Kind::Ustar, b"GNUSparseFile/pax-sparse", b'0', &pax1)
        .pax(
            b'x',
            &[
                (b"GNU.sparse.size", b"30"),
                (b"GNU.sparse.map", b"1,2,20,3"),
            ],
        )
        .file(Kind::Ustar, b"pax01", b'0', b"12345")
        .file(Kind::V7, b"v7dir/", 0, b"")
        .file(Kind::Ustar, b"dev", b'3', b"")
        .file(Kind::Ustar, b"plain", b'0', &[b'p'; 700]);
    ar.finish()
}

#[test]
fn the_fixture_itself_is_valid() {
    let bytes = everything();
    let members = index_layer(&mut SliceStream::new(bytes, 7))
        .expect("valid")
        .members;
    assert_eq!(members.len(), 7);
}

/// Random corruption, with checksums repaired so that it reaches the
/// field parsers, must produce errors, never panics or hangs, and what
/// does index must never point outside the stream.
#[test]
fn corrupted_archives_never_panic() {
    let base = everything();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let interesting = [
        0u8, b'0', b'7', b'9', b' ', b'\n', b'=', b',', 0x80, 0xff, b'x', b'S', b'L',
    ];
    for _ in 0..3000 {
        let mut bytes = base.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            let byte = if next() % 2 == 0 {
                interesting[(next() % interesting.len() as u64) as usize]
            } else {
                next() as u8
            };
            bytes[at] = byte;
            if next() % 4 != 0 {
                let start = at / BLOCK * BLOCK;
                let block: &mut Block = (&mut bytes[start..start + BLOCK])
                    .try_into()
                    .expect("block");
                if !is_zero(block) {
                    seal(block);
                }
            }
        }
        if next() % 5 == 0 {
            let cut = (next() % bytes.len() as u64) as usize;
            bytes.truncate(cut);
        }
        let Ok(index) = index_layer(&mut SliceStream::new(bytes.clone(), 64)) else {
            continue;
        };
        for m in &index.members {
            let mut buf = [0u8; 64];
            for pos in [0, 1, m.data.size / 2, m.data.size.saturating_sub(1)] {
                // Whatever was indexed lies inside the stream.
                m.data
                    .read_at(pos, &mut buf, |off, dst| {
                        let off = usize::try_from(off).map_err(|_| off)?;
                        let src = bytes.get(off..off + dst.len()).ok_or(off as u64)?;
                        dst.copy_from_slice(src);
                        Ok::<(), u64>(())
                    })
                    .unwrap_or_else(|off| panic!("{m:?} reads outside the stream at {off}"));
            }
        }
    }
}
