//! Sparse files: collecting and checking maps from any of the four GNU
//! encodings, and reading a sparse file's bytes back.
//!
//! Whatever the encoding, a sparse member ends up as a list of data regions
//! stored back to back, so the read path has one case only.

use super::cursor::Cursor;
use super::error::{Problem, TarError};
use super::header::{Block, BLOCK};
use super::member::SparseSegment;
use super::number::{parse_decimal, MAX_SIZE};

/// Most segments a map may have: a hostile map must not make the index
/// grow without bound.
pub(super) const MAX_SEGMENTS: usize = 1 << 20;

/// A sparse map as it is being collected, before the sizes it must agree
/// with are known.
#[derive(Debug, Default)]
pub(super) struct MapBuilder {
    segments: Vec<SparseSegment>,
}

impl MapBuilder {
    /// Adds one `(offset, numbytes)` entry, enforcing the segment limit
    /// before the list grows.
    pub(super) fn push(&mut self, offset: u64, len: u64) -> Result<(), Problem> {
        if self.segments.len() >= MAX_SEGMENTS {
            return Err(Problem::Limit(format!(
                "sparse map has more than {MAX_SEGMENTS} segments"
            )));
        }
        self.segments.push(SparseSegment { offset, len });
        Ok(())
    }

    /// Whether no entry was added.
    pub(super) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Checks the map against the file's real size and the number of data
    /// bytes actually stored, and drops empty segments (GNU tar ends maps of
    /// files ending in a hole with one), which carry no data.
    ///
    /// Segments must ascend without overlapping and end within the real
    /// size; their lengths may add up to less than the stored data but not
    /// more, so a read can never run into the next member.
    pub(super) fn finish(
        self,
        real_size: u64,
        stored: u64,
    ) -> Result<Box<[SparseSegment]>, Problem> {
        if real_size > MAX_SIZE {
            return Err(bad(format!("real size {real_size} is too large")));
        }
        let mut end = 0u64;
        let mut total = 0u64;
        let mut nonempty = 0usize;
        for s in &self.segments {
            if s.offset < end {
                return Err(bad(format!(
                    "segment at {} overlaps or precedes the one before",
                    s.offset
                )));
            }
            end = s
                .offset
                .checked_add(s.len)
                .filter(|&e| e <= real_size)
                .ok_or_else(|| {
                    bad(format!(
                        "segment at {} of {} bytes ends past the real size {real_size}",
                        s.offset, s.len
                    ))
                })?;
            total = total.saturating_add(s.len);
            nonempty += usize::from(s.len > 0);
        }
        if total > stored {
            return Err(bad(format!(
                "map holds {total} bytes but only {stored} are stored"
            )));
        }
        let mut segments = self.segments;
        if nonempty < segments.len() {
            segments.retain(|s| s.len > 0);
        }
        Ok(segments.into_boxed_slice())
    }
}

/// Collects a PAX 0.1 `GNU.sparse.map` value: `offset,numbytes,...`.
pub(super) fn parse_map_list(value: &[u8], map: &mut MapBuilder) -> Result<(), Problem> {
    if value.is_empty() {
        return Ok(());
    }
    let mut numbers = value.split(|&b| b == b',');
    while let Some(offset) = numbers.next() {
        let len = numbers
            .next()
            .ok_or_else(|| bad("GNU.sparse.map has an odd number of values".into()))?;
        map.push(map_number(offset)?, map_number(len)?)?;
    }
    Ok(())
}

fn map_number(bytes: &[u8]) -> Result<u64, Problem> {
    parse_decimal(bytes).ok_or_else(|| {
        bad(format!(
            "{:?} is not a number",
            String::from_utf8_lossy(bytes)
        ))
    })
}

/// Reads a PAX 1.0 map from the start of a member's data: a decimal count,
/// then that many offset/numbytes pairs, each number on its own line,
/// padded to a block boundary.
///
/// Returns the map and the number of data bytes it took (a multiple of
/// 512), which must not exceed `stored`. Reads block by block, so the count
/// is never trusted for an allocation.
pub(super) fn read_pax1_map(
    cursor: &mut Cursor<'_>,
    block: &mut Block,
    stored: u64,
) -> Result<(MapBuilder, u64), TarError> {
    let start = cursor.pos();
    let mut used = 0u64;
    let mut numbers = NumberLines::default();
    let mut count: Option<u64> = None;
    let mut pending_offset: Option<u64> = None;
    let mut map = MapBuilder::default();
    loop {
        if used + BLOCK as u64 > stored {
            return Err(bad("map runs past the member's data".into()).at(cursor.pos()));
        }
        cursor.read_exact(block)?;
        used += BLOCK as u64;
        for (i, &b) in block.iter().enumerate() {
            let at = start + used - BLOCK as u64 + i as u64;
            let Some(n) = numbers.feed(b).map_err(|p| p.at(at))? else {
                continue;
            };
            match (count, pending_offset) {
                (None, _) => {
                    if n > MAX_SEGMENTS as u64 {
                        return Err(Problem::Limit(format!(
                            "sparse map has {n} segments, more than {MAX_SEGMENTS}"
                        ))
                        .at(at));
                    }
                    count = Some(n);
                }
                (Some(_), None) => pending_offset = Some(n),
                (Some(_), Some(offset)) => {
                    map.push(offset, n).map_err(|p| p.at(at))?;
                    pending_offset = None;
                }
            }
            if count == Some(map.segments.len() as u64) && pending_offset.is_none() {
                return Ok((map, used));
            }
        }
    }
}

/// Splits newline-terminated decimal numbers out of a byte stream.
#[derive(Default)]
struct NumberLines {
    value: u64,
    /// Whether the current line has a digit yet (a line may not be empty).
    started: bool,
}

impl NumberLines {
    /// Takes one byte; returns a number when the byte ends one.
    fn feed(&mut self, b: u8) -> Result<Option<u64>, Problem> {
        match b {
            b'0'..=b'9' => {
                self.value = self
                    .value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    .ok_or_else(|| bad("number in the map is too large".into()))?;
                self.started = true;
                Ok(None)
            }
            b'\n' if self.started => {
                let n = self.value;
                *self = NumberLines::default();
                Ok(Some(n))
            }
            _ => Err(bad(format!("unexpected byte {b:#04x} in the map"))),
        }
    }
}

/// Fills `dst` with the sparse file's bytes from `pos`: zeros in holes,
/// stored bytes in data regions. `dst` must not reach past the file's end.
pub(super) fn read_sparse<E>(
    segments: &[SparseSegment],
    base: u64,
    pos: u64,
    dst: &mut [u8],
    read_stream: &mut impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut index = segments.partition_point(|s| s.offset.saturating_add(s.len) <= pos);
    // Data regions are stored back to back: the first one read starts after
    // all the bytes of those before it.
    let mut stored = segments
        .get(..index)
        .unwrap_or_default()
        .iter()
        .fold(0u64, |sum, s| sum.saturating_add(s.len));
    let mut cursor = pos;
    let mut done = 0usize;
    while let Some(rest) = dst.get_mut(done..).filter(|r| !r.is_empty()) {
        let Some(segment) = segments.get(index) else {
            rest.fill(0);
            break;
        };
        let end = segment.offset.saturating_add(segment.len);
        let (n, hole) = if cursor >= end {
            stored = stored.saturating_add(segment.len);
            index += 1;
            continue;
        } else if cursor < segment.offset {
            (segment.offset - cursor, true)
        } else {
            (end - cursor, false)
        };
        let n = usize::try_from(n).map_or(rest.len(), |n| n.min(rest.len()));
        let Some(chunk) = rest.get_mut(..n) else {
            break;
        };
        if hole {
            chunk.fill(0);
        } else {
            let within = cursor - segment.offset;
            read_stream(base.saturating_add(stored).saturating_add(within), chunk)?;
        }
        done += n;
        cursor = cursor.saturating_add(n as u64);
    }
    Ok(())
}

fn bad(reason: String) -> Problem {
    Problem::BadSparse(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::testutil::SliceStream;

    /// Map entries, real size, stored size, expected message.
    type Case<'a> = (&'a [(u64, u64)], u64, u64, &'a str);

    fn seg(offset: u64, len: u64) -> SparseSegment {
        SparseSegment { offset, len }
    }

    fn map(entries: &[(u64, u64)]) -> MapBuilder {
        let mut m = MapBuilder::default();
        for &(o, n) in entries {
            m.push(o, n).expect("push");
        }
        m
    }

    #[test]
    fn maps_must_ascend_fit_the_real_size_and_the_stored_data() {
        let ok = map(&[(0, 10), (10, 5), (100, 0)])
            .finish(100, 15)
            .expect("valid");
        assert_eq!(&*ok, &[seg(0, 10), seg(10, 5)]);
        let all_hole = map(&[(100, 0)]).finish(100, 0).expect("valid");
        assert!(all_hole.is_empty());
        let cases: &[Case<'_>] = &[
            (&[(10, 5), (0, 5)], 100, 10, "overlaps or precedes"),
            (&[(0, 10), (5, 10)], 100, 20, "overlaps or precedes"),
            (&[(95, 10)], 100, 10, "past the real size"),
            (&[(u64::MAX, 2)], u64::MAX, 2, "too large"),
            (&[(0, 10), (20, 10)], 100, 19, "only 19 are stored"),
            (&[(0, 1)], MAX_SIZE + 1, 1, "too large"),
        ];
        for (entries, real, stored, msg) in cases {
            let err = map(entries).finish(*real, *stored).expect_err("invalid");
            assert!(matches!(err, Problem::BadSparse(_)), "{err}");
            assert!(err.to_string().contains(msg), "{err} lacks {msg}");
        }
    }

    #[test]
    fn maps_are_limited_in_segments() {
        let mut m = MapBuilder::default();
        for i in 0..MAX_SEGMENTS as u64 {
            m.push(i * 2, 1).expect("under the limit");
        }
        assert!(matches!(m.push(u64::MAX, 1), Err(Problem::Limit(_))));
    }

    #[test]
    fn pax01_map_lists_parse_in_pairs() {
        let mut m = MapBuilder::default();
        parse_map_list(b"1048576,4096,4194304,4096,5242880,0", &mut m).expect("valid");
        let got = m.finish(5_242_880, 8192).expect("valid");
        assert_eq!(&*got, &[seg(1_048_576, 4096), seg(4_194_304, 4096)]);
        for bad_list in [&b"1,2,3"[..], b"1,,2,3", b"1,x", b"1,2,"] {
            let mut m = MapBuilder::default();
            assert!(
                matches!(parse_map_list(bad_list, &mut m), Err(Problem::BadSparse(_))),
                "{bad_list:?}"
            );
        }
    }

    fn pax1(text: &[u8], stored: u64) -> Result<(Vec<SparseSegment>, u64, u64), TarError> {
        let mut bytes = text.to_vec();
        bytes.resize(bytes.len().div_ceil(BLOCK).max(1) * BLOCK + 512, 0);
        let mut stream = SliceStream::new(bytes, 3);
        let mut cursor = Cursor::new(&mut stream);
        let mut block = [0u8; BLOCK];
        let (m, used) = read_pax1_map(&mut cursor, &mut block, stored)?;
        Ok((m.segments, used, cursor.pos()))
    }

    #[test]
    fn pax10_maps_are_read_from_the_data_block_by_block() {
        let (segs, used, pos) = pax1(b"2\n0\n5\n512\n0\n", 1024).expect("valid");
        assert_eq!(segs, vec![seg(0, 5), seg(512, 0)]);
        assert_eq!((used, pos), (512, 512));
        // A map spanning blocks, with a number cut by the boundary.
        let mut text = b"100\n".to_vec();
        for i in 0..100u64 {
            text.extend_from_slice(format!("{}\n1\n", i * 1_000_000_007).as_bytes());
        }
        let (segs, used, _) = pax1(&text, 100 * 1024).expect("valid");
        assert_eq!(segs.len(), 100);
        assert_eq!(segs.get(99), Some(&seg(99 * 1_000_000_007, 1)));
        assert_eq!(used, text.len().div_ceil(512) as u64 * 512);
        let (segs, used, _) = pax1(b"0\n", 512).expect("empty map");
        assert!(segs.is_empty());
        assert_eq!(used, 512);
    }

    #[test]
    fn pax10_maps_reject_garbage_and_hostile_counts() {
        let err = pax1(b"1\n0\nx\n", 1024).expect_err("garbage");
        assert!(matches!(err.problem, Problem::BadSparse(_)));
        assert_eq!(err.offset, 4);
        let err = pax1(b"99999999999\n", 1 << 40).expect_err("count");
        assert!(matches!(err.problem, Problem::Limit(_)));
        let err = pax1(b"1\n\n", 1024).expect_err("empty line");
        assert!(matches!(err.problem, Problem::BadSparse(_)));
        let err = pax1(b"1\n99999999999999999999999\n", 1024).expect_err("overflow");
        assert!(matches!(err.problem, Problem::BadSparse(_)));
        // A map that claims more lines than the member stores.
        let err = pax1(&[b'0'; 600], 512).expect_err("unterminated");
        assert!(err.to_string().contains("runs past"), "{err}");
        // The stream ends inside the map.
        let mut stream = SliceStream::new(b"2\n0\n".to_vec(), 512);
        let mut cursor = Cursor::new(&mut stream);
        let err = read_pax1_map(&mut cursor, &mut [0; BLOCK], 1 << 20).expect_err("short");
        assert!(matches!(err.problem, Problem::Truncated));
        assert_eq!(err.offset, 4);
    }
}
