//! PAX extended headers: per-member ('x') and global ('g') records.
//!
//! Records are collected into a [`PaxHeader`] whose fields remember three
//! states where POSIX needs them: not mentioned, mentioned with an empty
//! value (meaning "drop the global default, use the ustar field"), and set.

use std::collections::HashMap;

use super::encoding::{base64_decode, percent_decode};
use super::error::{Problem, TarError};
use super::number::{parse_decimal, parse_pax_time, MAX_SIZE};
use super::sparse::{parse_map_list, MapBuilder};

/// Which kind of PAX header the records come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// 'x': applies to the next member only.
    Member,
    /// 'g': defaults for every later member. A global `path`, `linkpath` or
    /// `size` would rename or resize every member, which no writer means,
    /// so those and the sparse keys are ignored here.
    Global,
}

/// A `name=value` extended attribute.
pub(super) type Xattr = (Vec<u8>, Vec<u8>);

/// What one or more PAX headers said.
///
/// `Option<Option<T>>` fields: `None` = not mentioned, `Some(None)` = empty
/// value (fall back to the header field), `Some(Some(v))` = set. Byte-string
/// fields use an empty vector for the middle state.
#[derive(Debug, Default)]
pub(super) struct PaxHeader {
    pub(super) path: Option<Vec<u8>>,
    pub(super) linkpath: Option<Vec<u8>>,
    pub(super) size: Option<Option<u64>>,
    pub(super) uid: Option<Option<u32>>,
    pub(super) gid: Option<Option<u32>>,
    pub(super) mtime: Option<Option<(i64, u32)>>,
    pub(super) dev_major: Option<Option<u32>>,
    pub(super) dev_minor: Option<Option<u32>>,
    /// In record order, duplicates already resolved (last value wins).
    pub(super) xattrs: Vec<Xattr>,
    pub(super) sparse: PaxSparse,
}

/// The `GNU.sparse.*` records of a member.
#[derive(Debug, Default)]
pub(super) struct PaxSparse {
    /// 1 for format 1.0 (map at the start of the data); absent for 0.x.
    pub(super) major: Option<u64>,
    pub(super) minor: Option<u64>,
    /// The real path: GNU tar puts a decoy in the header so that tars which
    /// do not understand the map extract it under another name.
    pub(super) name: Option<Vec<u8>>,
    /// `GNU.sparse.realsize` (1.0) or `GNU.sparse.size` (0.x).
    pub(super) real_size: Option<u64>,
    /// Map entries from 0.0 offset/numbytes pairs or a 0.1 map list.
    pub(super) map: MapBuilder,
    map_seen: bool,
    pending_offset: Option<u64>,
}

impl PaxSparse {
    /// Whether the records describe a sparse member at all.
    pub(super) fn is_sparse(&self) -> bool {
        self.major.is_some() || self.map_seen || self.real_size.is_some()
    }

    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), Problem> {
        match key {
            b"major" => self.major = Some(decimal(value, "GNU.sparse.major")?),
            b"minor" => self.minor = Some(decimal(value, "GNU.sparse.minor")?),
            b"name" => self.name = Some(name(value, "GNU.sparse.name")?),
            b"realsize" | b"size" => {
                self.real_size = Some(size(value, "GNU.sparse.realsize")?);
            }
            b"map" => {
                self.map_seen = true;
                parse_map_list(value, &mut self.map)?;
            }
            b"offset" => {
                self.map_seen = true;
                if self.pending_offset.is_some() {
                    return Err(bad("GNU.sparse.offset without its numbytes".into()));
                }
                self.pending_offset = Some(decimal(value, "GNU.sparse.offset")?);
            }
            b"numbytes" => {
                let offset = self
                    .pending_offset
                    .take()
                    .ok_or_else(|| bad("GNU.sparse.numbytes without an offset".into()))?;
                self.map
                    .push(offset, decimal(value, "GNU.sparse.numbytes")?)?;
            }
            // numblocks only repeats the map's length; GNU tar ignores it too.
            _ => {}
        }
        Ok(())
    }
}

impl PaxHeader {
    /// Applies every record of one header's data, which starts at stream
    /// offset `base` (for error offsets).
    pub(super) fn parse(&mut self, data: &[u8], base: u64, scope: Scope) -> Result<(), TarError> {
        let mut pos = 0usize;
        while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
            let at = base + pos as u64;
            // Some writers pad the record area with NULs.
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            let (key, value, len) = split_record(rest).map_err(|p| p.at(at))?;
            self.apply(key, value, scope).map_err(|p| p.at(at))?;
            pos += len;
        }
        if self.sparse.pending_offset.is_some() {
            return Err(bad("GNU.sparse.offset without its numbytes".into()).at(base));
        }
        dedupe(&mut self.xattrs);
        Ok(())
    }

    fn apply(&mut self, key: &[u8], value: &[u8], scope: Scope) -> Result<(), Problem> {
        let member = scope == Scope::Member;
        match key {
            b"path" if member => self.path = Some(name(value, "path")?),
            b"linkpath" if member => self.linkpath = Some(name(value, "linkpath")?),
            b"size" if member => self.size = Some(optional(value, |v| size(v, "size"))?),
            b"uid" => self.uid = Some(optional(value, |v| id(v, "uid"))?),
            b"gid" => self.gid = Some(optional(value, |v| id(v, "gid"))?),
            b"mtime" => {
                self.mtime = Some(optional(value, |v| {
                    parse_pax_time(v).ok_or_else(|| bad(format!("bad mtime {}", lossy(v))))
                })?);
            }
            b"SCHILY.devmajor" => self.dev_major = Some(optional(value, |v| id(v, "devmajor"))?),
            b"SCHILY.devminor" => self.dev_minor = Some(optional(value, |v| id(v, "devminor"))?),
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if !name.is_empty() {
                        self.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                } else if let Some(name) = key.strip_prefix(b"LIBARCHIVE.xattr.") {
                    let name = percent_decode(name)
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| bad(format!("bad xattr name {}", lossy(key))))?;
                    let value = base64_decode(value)
                        .ok_or_else(|| bad(format!("bad base64 value for {}", lossy(key))))?;
                    self.xattrs.push((name, value));
                } else if let Some(sparse_key) = key.strip_prefix(b"GNU.sparse.") {
                    if member {
                        self.sparse.apply(sparse_key, value)?;
                    }
                }
                // Everything else (atime, ctime, comment, hdrcharset,
                // SCHILY.acl.*, ...) changes nothing layerfs shows.
            }
        }
        Ok(())
    }
}

/// A path or link target from the record `key`. A NUL byte cannot be in
/// a file name: the name would show cut short (or not at all) through the
/// kernel, and could not be written back to a tar. Go's archive/tar, which
/// containerd and Docker unpack layers with, refuses such records too.
fn name(value: &[u8], key: &str) -> Result<Vec<u8>, Problem> {
    if value.contains(&0) {
        return Err(bad(format!("{key} has a NUL byte")));
    }
    Ok(value.to_vec())
}

/// Splits one `"%d %s=%s\n"` record off the front of `data`; returns key,
/// value and the record's length.
fn split_record(data: &[u8]) -> Result<(&[u8], &[u8], usize), Problem> {
    let space = data
        .iter()
        .position(|&b| b == b' ')
        .ok_or_else(|| bad("record length is not followed by a space".into()))?;
    let digits = data.get(..space).unwrap_or_default();
    let len = parse_decimal(digits)
        .and_then(|l| usize::try_from(l).ok())
        .ok_or_else(|| bad(format!("bad record length {}", lossy(digits))))?;
    if len == 0 {
        return Err(bad("record length is zero".into()));
    }
    let record = data
        .get(..len)
        .ok_or_else(|| bad(format!("record of {len} bytes runs past the header data")))?;
    let body = match record.split_last() {
        Some((b'\n', body)) => body.get(space + 1..),
        _ => None,
    }
    .ok_or_else(|| bad(format!("record of {len} bytes does not end with a newline")))?;
    let eq = body
        .iter()
        .position(|&b| b == b'=')
        .filter(|&eq| eq > 0)
        .ok_or_else(|| bad("record has no key".into()))?;
    let key = body.get(..eq).unwrap_or_default();
    let value = body.get(eq + 1..).unwrap_or_default();
    Ok((key, value, len))
}

/// An empty value means "not set"; anything else must parse.
fn optional<T>(
    value: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<T, Problem>,
) -> Result<Option<T>, Problem> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

fn decimal(value: &[u8], key: &str) -> Result<u64, Problem> {
    parse_decimal(value).ok_or_else(|| bad(format!("bad {key} {}", lossy(value))))
}

fn size(value: &[u8], key: &str) -> Result<u64, Problem> {
    decimal(value, key)
        .ok()
        .filter(|&s| s <= MAX_SIZE)
        .ok_or_else(|| bad(format!("bad {key} {}", lossy(value))))
}

fn id(value: &[u8], key: &str) -> Result<u32, Problem> {
    decimal(value, key)
        .ok()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| bad(format!("bad {key} {}", lossy(value))))
}

fn lossy(bytes: &[u8]) -> String {
    let shown = bytes.get(..bytes.len().min(40)).unwrap_or_default();
    format!("{:?}", String::from_utf8_lossy(shown))
}

fn bad(reason: String) -> Problem {
    Problem::BadPax(reason)
}

/// Keeps the first position of each name with the last value given for it.
pub(super) fn dedupe(list: &mut Vec<Xattr>) {
    if list.len() < 2 {
        return;
    }
    let mut out: Vec<Xattr> = Vec::with_capacity(list.len());
    if list.len() <= 16 {
        for (name, value) in list.drain(..) {
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => out.push((name, value)),
            }
        }
    } else {
        // Hostile headers can hold tens of thousands of records.
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::with_capacity(list.len());
        for (name, value) in list.drain(..) {
            match seen.get(&name).and_then(|&i| out.get_mut(i)) {
                Some(slot) => slot.1 = value,
                None => {
                    seen.insert(name.clone(), out.len());
                    out.push((name, value));
                }
            }
        }
    }
    *list = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::member::SparseSegment;
    use crate::tar::testutil::records;

    fn parse(data: &[u8], scope: Scope) -> Result<PaxHeader, TarError> {
        let mut pax = PaxHeader::default();
        pax.parse(data, 1000, scope)?;
        Ok(pax)
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
        let pax = parse(&data, Scope::Member).expect("valid");
        assert_eq!(pax.path.as_deref(), Some(&b"dir/\xff\xfename"[..]));
        assert_eq!(pax.linkpath.as_deref(), Some(&b"target\n="[..]));
        assert_eq!(pax.size, Some(Some(12345)));
        assert_eq!(pax.uid, Some(Some(u32::MAX)));
        assert_eq!(pax.gid, Some(Some(7)));
        assert_eq!(pax.mtime, Some(Some((-2, 750_000_000))));
        assert_eq!(
            (pax.dev_major, pax.dev_minor),
            (Some(Some(8)), Some(Some(1)))
        );
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
            let err = parse(&data, Scope::Member).expect_err("refused");
            // The offset is the bad record's, after the 8-byte uid record.
            assert_eq!(err.to_string(), format!("at byte 1008: {msg}"));
        }
        // A global header ignores `path`, whatever its bytes.
        let data = records(&[(b"path", b"a\0b")]);
        assert!(parse(&data, Scope::Global).is_ok());
    }

    #[test]
    fn empty_values_mean_fall_back_to_the_header() {
        let data = records(&[
            (b"size", b""),
            (b"uid", b""),
            (b"mtime", b""),
            (b"path", b""),
        ]);
        let pax = parse(&data, Scope::Member).expect("valid");
        assert_eq!(
            (pax.size, pax.uid, pax.mtime),
            (Some(None), Some(None), Some(None))
        );
        assert_eq!(pax.path.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn globals_ignore_path_linkpath_size_and_sparse_keys() {
        let data = records(&[
            (b"path", b"everything"),
            (b"linkpath", b"x"),
            (b"size", b"99"),
            (b"GNU.sparse.size", b"99"),
            (b"uid", b"5"),
        ]);
        let pax = parse(&data, Scope::Global).expect("valid");
        assert_eq!((pax.path, pax.linkpath, pax.size), (None, None, None));
        assert!(!pax.sparse.is_sparse());
        assert_eq!(pax.uid, Some(Some(5)));
    }

    #[test]
    fn xattrs_keep_record_order_and_the_last_value() {
        let data = records(&[
            (b"SCHILY.xattr.user.b", b"1"),
            (b"SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\0\0"),
            (b"SCHILY.xattr.user.b", b"2"),
            (b"SCHILY.xattr.", b"nameless, ignored"),
            (b"SCHILY.xattr.user.empty", b""),
            (b"LIBARCHIVE.xattr.user.%3Dodd%00", b"AQID"),
        ]);
        let pax = parse(&data, Scope::Member).expect("valid");
        let expected: Vec<Xattr> = vec![
            (b"user.b".to_vec(), b"2".to_vec()),
            (
                b"security.capability".to_vec(),
                b"\x01\x00\x00\x02\0\0".to_vec(),
            ),
            (b"user.empty".to_vec(), Vec::new()),
            (b"user.=odd\0".to_vec(), vec![1, 2, 3]),
        ];
        assert_eq!(pax.xattrs, expected);
        for (key, value) in [
            (&b"LIBARCHIVE.xattr.bad%zz"[..], &b"AA"[..]),
            (b"LIBARCHIVE.xattr.user.x", b"!!"),
        ] {
            let err = parse(&records(&[(key, value)]), Scope::Member).expect_err("bad");
            assert!(matches!(err.problem, Problem::BadPax(_)), "{err}");
        }
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
            (records(&[(b"SCHILY.devmajor", b"x")]), 1000),
        ];
        for (data, offset) in cases {
            let err = parse(&data, Scope::Member).expect_err("malformed");
            assert!(matches!(err.problem, Problem::BadPax(_)), "{data:?}: {err}");
            assert_eq!(err.offset, offset, "{data:?}");
        }
    }

    #[test]
    fn trailing_nul_padding_is_tolerated() {
        let mut data = records(&[(b"uid", b"3")]);
        data.extend_from_slice(&[0; 20]);
        assert_eq!(
            parse(&data, Scope::Member).expect("valid").uid,
            Some(Some(3))
        );
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
        let pax = parse(&v00, Scope::Member).expect("valid");
        assert!(pax.sparse.is_sparse());
        assert_eq!(pax.sparse.real_size, Some(100));
        let map = pax.sparse.map.finish(100, 6).expect("valid");
        assert_eq!(
            &*map,
            &[
                SparseSegment { offset: 10, len: 5 },
                SparseSegment { offset: 50, len: 1 }
            ]
        );

        let v01 = records(&[(b"GNU.sparse.map", b""), (b"GNU.sparse.name", b"real")]);
        let pax = parse(&v01, Scope::Member).expect("valid");
        assert!(pax.sparse.is_sparse());
        assert_eq!(pax.sparse.name.as_deref(), Some(&b"real"[..]));

        let v10 = records(&[(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0")]);
        let pax = parse(&v10, Scope::Member).expect("valid");
        assert_eq!((pax.sparse.major, pax.sparse.minor), (Some(1), Some(0)));

        for bad in [
            records(&[(b"GNU.sparse.numbytes", b"5")]),
            records(&[(b"GNU.sparse.offset", b"5")]),
            records(&[(b"GNU.sparse.offset", b"5"), (b"GNU.sparse.offset", b"6")]),
            records(&[(b"GNU.sparse.offset", b"x")]),
        ] {
            let err = parse(&bad, Scope::Member).expect_err("bad");
            assert!(matches!(err.problem, Problem::BadPax(_)), "{err}");
        }
        let err =
            parse(&records(&[(b"GNU.sparse.map", b"1,2,3")]), Scope::Member).expect_err("odd");
        assert!(matches!(err.problem, Problem::BadSparse(_)), "{err}");
    }
}
