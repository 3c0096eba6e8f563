//! Old GNU extensions: long name and long link records ('L', 'K') and the
//! sparse map of 'S' members, which starts in the header and continues in
//! extension blocks between the header and the data.

use super::cursor::Cursor;
use super::error::{Problem, TarError};
use super::header::{text, Block};
use super::number::parse_field;
use super::sparse::{MapBuilder, MAX_SEGMENTS};

/// Where the header's four map entries start.
const HEADER_MAP: usize = 386;
const HEADER_ENTRIES: usize = 4;
const HEADER_IS_EXTENDED: usize = 482;
const REAL_SIZE: std::ops::Range<usize> = 483..495;
/// Each extension block holds 21 entries and its own continuation flag.
const BLOCK_ENTRIES: usize = 21;
const BLOCK_IS_EXTENDED: usize = 504;
/// An entry is a 12-byte offset and a 12-byte length.
const ENTRY: usize = 24;

/// The name carried by an 'L' or 'K' record: GNU tar writes it with a NUL
/// terminator counted in the size; like GNU tar, read up to the first NUL.
pub(super) fn long_name(data: &[u8]) -> Vec<u8> {
    text(data).to_vec()
}

/// Reads an 'S' member's map: the entries in its header, then the
/// extension blocks that follow it while their flag says more come.
///
/// Returns the map and the real size from the header; the cursor is left
/// on the first data byte. Errors point at the header (`offset`) or at the
/// extension block at fault.
pub(super) fn read_old_sparse(
    header: &Block,
    cursor: &mut Cursor<'_>,
    scratch: &mut Block,
    offset: u64,
) -> Result<(MapBuilder, u64), TarError> {
    let real_size = parse_field(header.get(REAL_SIZE).unwrap_or_default())
        .and_then(|v| u64::try_from(v).ok())
        .ok_or(Problem::BadNumber { field: "realsize" }.at(offset))?;
    let mut map = MapBuilder::default();
    add_entries(header, HEADER_MAP, HEADER_ENTRIES, &mut map).map_err(|p| p.at(offset))?;
    let mut extended = flag(header, HEADER_IS_EXTENDED);
    // Blocks whose entries are all empty add no segments, so bound the
    // number of blocks too.
    let max_blocks = MAX_SEGMENTS.div_ceil(BLOCK_ENTRIES);
    let mut blocks = 0usize;
    while extended {
        let block_offset = cursor.pos();
        blocks += 1;
        if blocks > max_blocks {
            return Err(
                Problem::Limit(format!("more than {max_blocks} sparse extension blocks"))
                    .at(block_offset),
            );
        }
        cursor.read_exact(scratch)?;
        add_entries(scratch, 0, BLOCK_ENTRIES, &mut map).map_err(|p| p.at(block_offset))?;
        extended = flag(scratch, BLOCK_IS_EXTENDED);
    }
    Ok((map, real_size))
}

/// Adds the entries of one block; the first entry with an empty length
/// field ends the block's list, as in GNU tar.
fn add_entries(
    block: &Block,
    start: usize,
    count: usize,
    map: &mut MapBuilder,
) -> Result<(), Problem> {
    let entries = block.get(start..start + count * ENTRY).unwrap_or_default();
    for entry in entries.chunks_exact(ENTRY) {
        let (offset, len) = entry.split_at(ENTRY / 2);
        if len.first().is_none_or(|&b| b == 0) {
            break;
        }
        let number = |field: &[u8]| {
            parse_field(field)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| Problem::BadSparse("bad number in an old GNU sparse entry".into()))
        };
        map.push(number(offset)?, number(len)?)?;
    }
    Ok(())
}

fn flag(block: &Block, at: usize) -> bool {
    block.get(at).is_some_and(|&b| b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::member::SparseSegment;
    use crate::tar::testutil::{header, set, set_octal, Kind, SliceStream};

    use crate::tar::header::BLOCK;

    const BLOCK_U64: u64 = BLOCK as u64;

    fn entry(block: &mut Block, at: usize, offset: u64, len: u64) {
        set_octal(block, at..at + 12, offset);
        set_octal(block, at + 12..at + 24, len);
    }

    #[test]
    fn long_names_stop_at_the_first_nul() {
        assert_eq!(long_name(b"a/long/name\0"), b"a/long/name");
        assert_eq!(long_name(b"no-terminator"), b"no-terminator");
        assert_eq!(long_name(b"x\0\0\0"), b"x");
        assert_eq!(long_name(b"\xff\xfe\0"), b"\xff\xfe");
    }

    #[test]
    fn old_sparse_maps_continue_in_extension_blocks() {
        let mut h = header(Kind::Gnu, b"f", b'S', 25);
        for i in 0..4 {
            entry(&mut h, HEADER_MAP + i * ENTRY, i as u64 * 100, 1);
        }
        h[HEADER_IS_EXTENDED] = 1;
        set_octal(&mut h, REAL_SIZE, 10_000);
        let mut ext1 = [0u8; BLOCK];
        for i in 0..BLOCK_ENTRIES {
            entry(&mut ext1, i * ENTRY, 400 + i as u64 * 100, 1);
        }
        ext1[BLOCK_IS_EXTENDED] = 1;
        let mut ext2 = [0u8; BLOCK];
        // An empty entry ends the list even if more follow.
        entry(&mut ext2, 0, 9000, 0);
        entry(&mut ext2, 2 * ENTRY, 9999, 1);
        let mut bytes = [ext1, ext2].concat();
        bytes.extend_from_slice(b"data");
        let mut stream = SliceStream::new(bytes, 5);
        let mut cursor = Cursor::new(&mut stream);
        let (map, real) = read_old_sparse(&h, &mut cursor, &mut [0; BLOCK], 0).expect("valid");
        assert_eq!(real, 10_000);
        assert_eq!(cursor.pos(), 2 * BLOCK_U64);
        let segments = map.finish(real, 25).expect("valid");
        assert_eq!(segments.len(), 25);
        assert_eq!(
            segments.last(),
            Some(&SparseSegment {
                offset: 2400,
                len: 1
            })
        );
    }

    #[test]
    fn old_sparse_maps_reject_bad_numbers_and_endless_blocks() {
        let mut h = header(Kind::Gnu, b"f", b'S', 0);
        set(&mut h, HEADER_MAP..HEADER_MAP + 12, b"12x");
        set(&mut h, HEADER_MAP + 12..HEADER_MAP + 24, b"1");
        let mut stream = SliceStream::new(Vec::new(), 512);
        let mut cursor = Cursor::new(&mut stream);
        let err = read_old_sparse(&h, &mut cursor, &mut [0; BLOCK], 7).expect_err("bad entry");
        assert!(matches!(err.problem, Problem::BadSparse(_)));
        assert_eq!(err.offset, 7);

        let mut h = header(Kind::Gnu, b"f", b'S', 0);
        set(&mut h, REAL_SIZE, &[0xff; 12]);
        let mut cursor = Cursor::new(&mut stream);
        let err = read_old_sparse(&h, &mut cursor, &mut [0; BLOCK], 7).expect_err("bad size");
        assert!(matches!(
            err.problem,
            Problem::BadNumber { field: "realsize" }
        ));

        // Empty extension blocks that always say "more follow".
        let mut h = header(Kind::Gnu, b"f", b'S', 0);
        h[HEADER_IS_EXTENDED] = 1;
        let mut ext = [0u8; BLOCK];
        ext[BLOCK_IS_EXTENDED] = 1;
        let blocks = MAX_SEGMENTS.div_ceil(BLOCK_ENTRIES) + 1;
        let mut stream = SliceStream::new(ext.repeat(blocks), 512);
        let mut cursor = Cursor::new(&mut stream);
        let err = read_old_sparse(&h, &mut cursor, &mut [0; BLOCK], 0).expect_err("endless");
        assert!(matches!(err.problem, Problem::Limit(_)));
        assert_eq!(err.offset, (blocks as u64 - 1) * BLOCK_U64);

        // The stream ends inside the extension blocks.
        let mut stream = SliceStream::new(vec![0; 100], 512);
        let mut cursor = Cursor::new(&mut stream);
        let err = read_old_sparse(&h, &mut cursor, &mut [0; BLOCK], 0).expect_err("short");
        assert!(matches!(err.problem, Problem::Truncated));
        assert_eq!(err.offset, 100);
    }
}
