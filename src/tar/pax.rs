//! PAX extended headers ('x'), read as Go's `archive/tar` reads them,
//! because the runtimes that unpack layers (containerd, Docker, podman,
//! umoci) all use it:
//! - a member's extended header replaces any earlier one, never merges;
//! - global headers ('g') are checked and ignored (Go hands them to its
//!   caller as entries of their own, and every runtime skips them);
//! - only the keys Go applies change a member (`path`, `linkpath`, `size`,
//!   `uid`, `gid`, `mtime`, `SCHILY.xattr.*`, and the GNU sparse keys);
//!   `SCHILY.devmajor` and libarchive's `LIBARCHIVE.xattr.*` are not among
//!   them.
//!
//! Fields remember whether a key was given with an empty value, which means
//! "use the ustar field".

use std::collections::HashMap;

use super::error::{Problem, TarError};
use super::number::{parse_decimal, parse_pax_time, MAX_SIZE};
use super::sparse::{parse_map_list, MapBuilder};

/// Largest extended attribute value the kernel stores or returns
/// (XATTR_SIZE_MAX): a runtime's `setxattr` of a larger one fails, and so
/// does its unpack.
pub(super) const XATTR_VALUE_MAX: usize = 64 * 1024;
/// Longest extended attribute name the kernel takes (XATTR_NAME_MAX).
pub(super) const XATTR_NAME_MAX: usize = 255;

/// A `name=value` extended attribute.
pub(super) type Xattr = (Vec<u8>, Vec<u8>);

/// What one PAX header said.
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
    /// In record order, duplicates already resolved (last value wins).
    pub(super) xattrs: Vec<Xattr>,
    pub(super) sparse: PaxSparse,
}

/// How a sparse member's map is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SparseFormat {
    /// 0.0 and 0.1: the map is in the PAX records.
    Records,
    /// 1.0: the map is at the start of the member's data.
    DataMap,
}

/// The `GNU.sparse.*` records of a member.
#[derive(Debug, Default)]
pub(super) struct PaxSparse {
    /// `GNU.sparse.major` and `minor` as written: Go compares the text.
    major: Vec<u8>,
    minor: Vec<u8>,
    /// The real path: GNU tar puts a decoy in the header so that tars which
    /// do not understand the map extract it under another name.
    pub(super) name: Option<Vec<u8>>,
    /// `GNU.sparse.size` (0.x), which Go prefers, and `realsize` (1.0).
    size: Option<u64>,
    realsize: Option<u64>,
    /// Map entries from 0.0 offset/numbytes pairs, which replace any 0.1
    /// map list, as in Go.
    pairs: MapBuilder,
    /// The last `GNU.sparse.map` list (0.1), and whether it was not empty.
    list: MapBuilder,
    list_given: bool,
    pending_offset: Option<u64>,
}

impl PaxSparse {
    /// The format the records describe, decided as Go decides it: exact
    /// version texts, or no version and a non-empty map. Records of any
    /// other version leave the member an ordinary file.
    pub(super) fn format(&self) -> Option<SparseFormat> {
        match (&self.major[..], &self.minor[..]) {
            (b"0", b"0" | b"1") => Some(SparseFormat::Records),
            (b"1", b"0") => Some(SparseFormat::DataMap),
            (b"", b"") if !self.pairs.is_empty() || self.list_given => Some(SparseFormat::Records),
            _ => None,
        }
    }

    /// The file's real size, if the records give one.
    pub(super) fn real_size(&self) -> Option<u64> {
        self.size.or(self.realsize)
    }

    /// The map given in the records (format 0.x).
    pub(super) fn into_map(self) -> MapBuilder {
        if self.pairs.is_empty() {
            self.list
        } else {
            self.pairs
        }
    }

    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), Problem> {
        match key {
            b"major" => self.major = value.to_vec(),
            b"minor" => self.minor = value.to_vec(),
            b"name" => self.name = Some(name(value, "GNU.sparse.name")?),
            b"size" => self.size = Some(size(value, "GNU.sparse.size")?),
            b"realsize" => self.realsize = Some(size(value, "GNU.sparse.realsize")?),
            b"map" => {
                self.list = MapBuilder::default();
                self.list_given = !value.is_empty();
                parse_map_list(value, &mut self.list)?;
            }
            b"offset" => {
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
                self.pairs
                    .push(offset, decimal(value, "GNU.sparse.numbytes")?)?;
            }
            // numblocks only repeats the map's length; GNU tar ignores it too.
            _ => {}
        }
        Ok(())
    }
}

impl PaxHeader {
    /// Reads every record of one header's data, which starts at stream
    /// offset `base` (for error offsets).
    pub(super) fn parse(data: &[u8], base: u64) -> Result<PaxHeader, TarError> {
        let mut pax = PaxHeader::default();
        for_each_record(data, base, |key, value| pax.apply(key, value))?;
        if pax.sparse.pending_offset.is_some() {
            return Err(bad("GNU.sparse.offset without its numbytes".into()).at(base));
        }
        dedupe(&mut pax.xattrs);
        Ok(pax)
    }

    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), Problem> {
        match key {
            b"path" => self.path = Some(name(value, "path")?),
            b"linkpath" => self.linkpath = Some(name(value, "linkpath")?),
            b"size" => self.size = Some(optional(value, |v| size(v, "size"))?),
            b"uid" => self.uid = Some(optional(value, |v| id(v, "uid"))?),
            b"gid" => self.gid = Some(optional(value, |v| id(v, "gid"))?),
            b"mtime" => {
                self.mtime = Some(optional(value, |v| {
                    parse_pax_time(v).ok_or_else(|| bad(format!("bad mtime {}", lossy(v))))
                })?);
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if !name.is_empty() {
                        check_xattr(name, value)?;
                        self.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                } else if let Some(sparse_key) = key.strip_prefix(b"GNU.sparse.") {
                    self.sparse.apply(sparse_key, value)?;
                }
                // Everything else (atime, ctime, comment, hdrcharset,
                // SCHILY.acl.*, ...) changes nothing a runtime extracts.
            }
        }
        Ok(())
    }
}

/// Checks that a global header's records are well formed, as Go does before
/// it skips the header; their values change nothing.
pub(super) fn check_global(data: &[u8], base: u64) -> Result<(), TarError> {
    for_each_record(data, base, |_, _| Ok(()))
}

/// Calls `apply` on each record of a header's data in order; an error is
/// pinned to its record's offset.
fn for_each_record(
    data: &[u8],
    base: u64,
    mut apply: impl FnMut(&[u8], &[u8]) -> Result<(), Problem>,
) -> Result<(), TarError> {
    let mut pos = 0usize;
    while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
        let at = base + pos as u64;
        // Some writers pad the record area with NULs.
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let (key, value, len) = split_record(rest).map_err(|p| p.at(at))?;
        apply(key, value).map_err(|p| p.at(at))?;
        pos += len;
    }
    Ok(())
}

/// An extended attribute the kernel can hold: a runtime's unpack fails on
/// any other, and keeping megabyte values would let a tiny compressed
/// layer take gigabytes of memory.
fn check_xattr(name: &[u8], value: &[u8]) -> Result<(), Problem> {
    if name.len() > XATTR_NAME_MAX {
        return Err(Problem::Limit(format!(
            "xattr name of {} bytes {} (the kernel takes at most {XATTR_NAME_MAX})",
            name.len(),
            lossy(name)
        )));
    }
    if value.len() > XATTR_VALUE_MAX {
        return Err(Problem::Limit(format!(
            "xattr {} of {} bytes (the kernel takes at most {XATTR_VALUE_MAX})",
            lossy(name),
            value.len()
        )));
    }
    Ok(())
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
mod tests;
