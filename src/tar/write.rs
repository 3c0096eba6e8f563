//! Writing tar archives: the one place that decides how an entry is spelled.
//!
//! Output is POSIX pax: a ustar header per entry, preceded by an extended
//! header ('x') only when ustar cannot hold something: a path or link target
//! too long for its fields, a size of 8 GiB or more, ids past 2^21, a time
//! before 1970 or with a fraction of a second, extended attributes
//! (`SCHILY.xattr.*`, the spelling GNU tar and libarchive share).
//!
//! A long path or link target that is not UTF-8 goes in a GNU long-name
//! header ('L'/'K') instead: pax values are UTF-8 unless the header says
//! `hdrcharset=BINARY`, which bsdtar needs and GNU tar warns about, while
//! both read GNU long names as raw bytes without a word. Everything else
//! stays plain ustar, so the archive is as old-reader-friendly as its
//! contents allow.
//!
//! A file with holes is written as GNU tar writes it in pax archives
//! (sparse format 1.0): `GNU.sparse.*` records carry the real name and
//! size, the header holds a stand-in name, and the data starts with the map
//! (decimal lines padded to a block) followed by the data regions only. A
//! 2^62-byte file with two small regions then costs a few blocks, not its
//! apparent size in zeros. GNU tar, bsdtar and Go's `archive/tar` (the
//! runtimes' reader) all read the format; a name that is not UTF-8 goes in
//! a GNU long-name header instead of `GNU.sparse.name`, for the reason
//! above.
//!
//! The same entries always give the same bytes: extended headers have fixed
//! names, zero times and a fixed record order, and nothing depends on the
//! clock, the user or the host.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::Hash;
use std::io::{self, Write};

use super::header::{
    encode_ustar, UstarFields, BLOCK, ID_LEN, LINKNAME_LEN, NAME_LEN, PREFIX_LEN, SIZE_LEN,
};
use super::member::{MemberKind, SparseSegment};
use super::number::fits_octal;

/// The name of every extended header: fixed, so output is reproducible.
const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";
/// The name GNU tar gives its long-name headers.
const GNU_LONG_NAME: &[u8] = b"././@LongLink";
/// The directory GNU tar puts a sparse member's stand-in name in, with the
/// writer's process id after the dot; a fixed 0 here, so output is
/// reproducible.
const GNU_SPARSE_DIR: &[u8] = b"GNUSparseFile.0";
/// Map text gathered before it is written out, so that a map of a million
/// segments is never held whole.
const MAP_CHUNK: usize = 64 << 10;

/// One entry to write, with its path relative to the archive root.
#[derive(Clone, Debug)]
pub struct EntryHeader<'a> {
    /// Path without a leading `/` or `./`; empty for the root directory
    /// (written as `./`). Directories get their trailing `/` here.
    pub path: &'a [u8],
    /// What it is; `Hardlink` names an earlier entry in `link_target`.
    pub kind: MemberKind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Bytes of data that follow (regular files only; 0 otherwise).
    pub size: u64,
    /// Symlink target, or the path of the entry a hardlink names.
    pub link_target: &'a [u8],
    /// Device major and minor numbers.
    pub device: (u32, u32),
    /// Extended attributes, written in this order.
    pub xattrs: &'a [(&'a [u8], &'a [u8])],
}

/// A tar archive being written to `W`.
///
/// Call [`TarWriter::header`], then [`TarWriter::data`] until the entry's
/// size is reached, for each entry; then [`TarWriter::finish`].
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
    /// Data bytes the current entry still needs.
    data_left: u64,
    /// Bytes of data written for the current entry, for its padding.
    data_len: u64,
    /// Reused buffers: the extended header records and the full path.
    records: Vec<u8>,
    path: Vec<u8>,
    written: u64,
}

impl<W: Write> TarWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter {
            out,
            data_left: 0,
            data_len: 0,
            records: Vec::new(),
            path: Vec::new(),
            written: 0,
        }
    }

    /// Bytes of archive written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes an entry's header (and extended header when needed). A regular
    /// file's `size` bytes must follow through [`TarWriter::data`].
    pub fn header(&mut self, entry: &EntryHeader<'_>) -> io::Result<()> {
        self.start(entry, None)
    }

    /// Writes the header of a regular file of `entry.size` bytes whose data
    /// lies in `segments` (ascending, not overlapping, within the size,
    /// each but the last whole blocks long: see [`archived_regions`]) and
    /// which is zeros elsewhere. The segments' bytes must follow, back to
    /// back, through [`TarWriter::data`]. A file with no hole is written as
    /// [`TarWriter::header`] writes it, which takes the same data.
    pub fn sparse_header(
        &mut self,
        entry: &EntryHeader<'_>,
        segments: &[SparseSegment],
    ) -> io::Result<()> {
        let map = SparseMap::new(segments, entry)?;
        let holes = map.stored < entry.size;
        self.start(entry, holes.then_some(&map))
    }

    fn start(&mut self, entry: &EntryHeader<'_>, sparse: Option<&SparseMap<'_>>) -> io::Result<()> {
        self.end_of_data()?;
        let mut path = std::mem::take(&mut self.path);
        path.clear();
        if entry.path.is_empty() {
            path.extend_from_slice(b"./");
        } else {
            path.extend_from_slice(entry.path);
            if entry.kind == MemberKind::Directory && !entry.path.ends_with(b"/") {
                path.push(b'/');
            }
        }
        let result = self.write_headers(entry, &path, sparse);
        self.path = path;
        result
    }

    fn write_headers(
        &mut self,
        entry: &EntryHeader<'_>,
        path: &[u8],
        sparse: Option<&SparseMap<'_>>,
    ) -> io::Result<()> {
        let size = match (entry.kind, sparse) {
            (MemberKind::Regular, Some(map)) => map.archived(),
            (MemberKind::Regular, None) => entry.size,
            _ => 0,
        };
        let link: &[u8] = match entry.kind {
            MemberKind::Symlink | MemberKind::Hardlink => entry.link_target,
            _ => &[],
        };
        // A sparse member's real path is in `GNU.sparse.name` (a GNU long
        // name if it is not UTF-8), whatever its length; the header holds
        // the stand-in, cut to fit if it must be.
        let stand_in = sparse.map(|_| sparse_stand_in(path));
        let header_path = stand_in.as_deref().unwrap_or(path);
        let split = split_ustar_path(header_path);
        let path_elsewhere = split.is_none() || sparse.is_some();
        let utf8 = |bytes: &[u8]| std::str::from_utf8(bytes).is_ok();
        let long_link = link.len() > LINKNAME_LEN;
        if long_link && !utf8(link) {
            self.gnu_long_name(b'K', link)?;
        }
        if path_elsewhere && !utf8(path) {
            self.gnu_long_name(b'L', path)?;
        }
        self.records.clear();
        if entry.xattrs.iter().any(|(name, _)| !utf8(name)) {
            push_record(&mut self.records, b"hdrcharset", b"BINARY");
        }
        if sparse.is_some() {
            push_record(&mut self.records, b"GNU.sparse.major", b"1");
            push_record(&mut self.records, b"GNU.sparse.minor", b"0");
            if utf8(path) {
                push_record(&mut self.records, b"GNU.sparse.name", path);
            }
            let real_size = entry.size.to_string();
            push_record(
                &mut self.records,
                b"GNU.sparse.realsize",
                real_size.as_bytes(),
            );
        }
        if path_elsewhere && utf8(path) && sparse.is_none() {
            push_record(&mut self.records, b"path", path);
        }
        if long_link && utf8(link) {
            push_record(&mut self.records, b"linkpath", link);
        }
        if !fits_octal(size, SIZE_LEN) {
            push_record(&mut self.records, b"size", size.to_string().as_bytes());
        }
        for (key, id) in [(&b"uid"[..], entry.uid), (b"gid", entry.gid)] {
            if !fits_octal(u64::from(id), ID_LEN) {
                push_record(&mut self.records, key, id.to_string().as_bytes());
            }
        }
        let header_mtime = u64::try_from(entry.mtime)
            .ok()
            .filter(|&t| fits_octal(t, SIZE_LEN));
        if header_mtime.is_none() || entry.mtime_nsec != 0 {
            let value = pax_time(entry.mtime, entry.mtime_nsec);
            push_record(&mut self.records, b"mtime", value.as_bytes());
        }
        for (name, value) in entry.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            push_record(&mut self.records, &key, value);
        }
        if !self.records.is_empty() {
            let records = std::mem::take(&mut self.records);
            let block = encode_ustar(&UstarFields {
                name: PAX_HEADER_NAME,
                prefix: b"",
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: records.len() as u64,
                mtime: 0,
                typeflag: b'x',
                linkname: b"",
                devmajor: 0,
                devminor: 0,
            });
            self.emit(&block)?;
            self.emit(&records)?;
            self.pad(records.len() as u64)?;
            self.records = records;
        }
        let (prefix, name) = match split {
            Some((prefix, name)) => (prefix, name),
            // The whole path is in the extended header; the header keeps
            // what fits, for readers that do not know pax.
            None if sparse.is_none() => (&[][..], path.get(..NAME_LEN).unwrap_or(path)),
            // Nothing overrides a stand-in but `GNU.sparse.name`: a cut
            // ending in '/' would read as a directory to those that do not
            // know it.
            None => (
                &[][..],
                trim_slashes(header_path.get(..NAME_LEN).unwrap_or(header_path)),
            ),
        };
        let (devmajor, devminor) = match entry.kind {
            MemberKind::CharDevice | MemberKind::BlockDevice => entry.device,
            _ => (0, 0),
        };
        let block = encode_ustar(&UstarFields {
            name,
            prefix,
            mode: entry.mode,
            uid: u64::from(entry.uid),
            gid: u64::from(entry.gid),
            size,
            mtime: header_mtime.unwrap_or(0),
            typeflag: typeflag(entry.kind),
            linkname: link,
            devmajor,
            devminor,
        });
        self.emit(&block)?;
        match sparse {
            Some(map) => {
                self.sparse_map(map)?;
                self.data_left = map.stored;
                self.data_len = map.stored;
            }
            None => {
                self.data_left = size;
                self.data_len = size;
            }
        }
        Ok(())
    }

    /// Writes a PAX 1.0 sparse map: the entry count, then each entry's
    /// offset and length, one decimal number a line, padded to a block.
    fn sparse_map(&mut self, map: &SparseMap<'_>) -> io::Result<()> {
        let mut text = std::mem::take(&mut self.records);
        text.clear();
        let result = self.emit_map_text(map, &mut text);
        self.records = text;
        result?;
        self.pad(map.text_len)
    }

    fn emit_map_text(&mut self, map: &SparseMap<'_>, text: &mut Vec<u8>) -> io::Result<()> {
        push_line(text, map.count);
        for (offset, len) in map.entries() {
            push_line(text, offset);
            push_line(text, len);
            if text.len() >= MAP_CHUNK {
                self.emit(text)?;
                text.clear();
            }
        }
        self.emit(text)
    }

    /// Writes a GNU long name ('L') or long link ('K') header and its data:
    /// the bytes and a NUL.
    fn gnu_long_name(&mut self, typeflag: u8, bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len() as u64 + 1;
        let block = encode_ustar(&UstarFields {
            name: GNU_LONG_NAME,
            prefix: b"",
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: len,
            mtime: 0,
            typeflag,
            linkname: b"",
            devmajor: 0,
            devminor: 0,
        });
        self.emit(&block)?;
        self.emit(bytes)?;
        self.emit(&[0])?;
        self.pad(len)
    }

    /// Writes the next bytes of the current entry's data; more than its size
    /// is an error.
    pub fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() as u64 > self.data_left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "more data than the entry's size",
            ));
        }
        self.data_left -= bytes.len() as u64;
        self.emit(bytes)
    }

    /// Ends the archive (two zero blocks) and hands back the output, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.end_of_data()?;
        self.emit(&[0; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Checks the current entry got all its data and pads it to a block.
    fn end_of_data(&mut self) -> io::Result<()> {
        if self.data_left != 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry data ended {} bytes short", self.data_left),
            ));
        }
        let len = std::mem::take(&mut self.data_len);
        self.pad(len)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem == 0 {
            return Ok(());
        }
        self.emit(&[0; BLOCK][rem..])
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// The first name each multiply-linked inode was written under: a tar holds
/// an inode's data once, and its other names as hardlinks to that name.
#[derive(Debug)]
pub struct FirstNames<K> {
    names: HashMap<K, Vec<u8>>,
}

impl<K: Hash + Eq> Default for FirstNames<K> {
    fn default() -> Self {
        FirstNames {
            names: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> FirstNames<K> {
    /// Writes the header of `entry`, one of `nlink` names of inode `key`:
    /// as given the first time, as a hardlink to that first name after.
    /// Any non-directory can have several names (symlinks, devices and
    /// fifos too). Returns whether the entry was written as given, so that
    /// a regular file's data must follow.
    pub fn header<W: Write>(
        &mut self,
        writer: &mut TarWriter<W>,
        key: K,
        nlink: u64,
        entry: &EntryHeader<'_>,
    ) -> io::Result<bool> {
        self.first_or_link(writer, key, nlink, entry, |w| w.header(entry))
    }

    /// [`FirstNames::header`] for a sparse file: the first name is written
    /// by [`TarWriter::sparse_header`], so the segments' bytes follow it.
    pub fn sparse_header<W: Write>(
        &mut self,
        writer: &mut TarWriter<W>,
        key: K,
        nlink: u64,
        entry: &EntryHeader<'_>,
        segments: &[SparseSegment],
    ) -> io::Result<bool> {
        self.first_or_link(writer, key, nlink, entry, |w| {
            w.sparse_header(entry, segments)
        })
    }

    fn first_or_link<W: Write>(
        &mut self,
        writer: &mut TarWriter<W>,
        key: K,
        nlink: u64,
        entry: &EntryHeader<'_>,
        first: impl FnOnce(&mut TarWriter<W>) -> io::Result<()>,
    ) -> io::Result<bool> {
        if entry.kind != MemberKind::Directory && nlink > 1 {
            match self.names.entry(key) {
                Entry::Occupied(earlier) => {
                    writer.header(&EntryHeader {
                        kind: MemberKind::Hardlink,
                        link_target: earlier.get(),
                        size: 0,
                        ..entry.clone()
                    })?;
                    return Ok(false);
                }
                Entry::Vacant(slot) => {
                    slot.insert(entry.path.to_vec());
                }
            }
        }
        first(writer)?;
        Ok(true)
    }
}

/// A sparse file's map as the archive spells it, checked against the size.
#[derive(Debug)]
struct SparseMap<'s> {
    /// The data regions, empty ones left out.
    segments: &'s [SparseSegment],
    real_size: u64,
    /// Bytes of data stored: the regions' lengths added up.
    stored: u64,
    /// Entries in the map.
    count: u64,
    /// Bytes of map text, before its padding.
    text_len: u64,
}

impl<'s> SparseMap<'s> {
    fn new(segments: &'s [SparseSegment], entry: &EntryHeader<'_>) -> io::Result<SparseMap<'s>> {
        let invalid = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {why}", String::from_utf8_lossy(entry.path)),
            )
        };
        if entry.kind != MemberKind::Regular {
            return Err(invalid("only a regular file can be sparse".into()));
        }
        let mut end = 0u64;
        let mut stored = 0u64;
        let mut partial_block = false;
        for s in segments.iter().filter(|s| s.len > 0) {
            let seg_end = s.offset.checked_add(s.len).filter(|&e| e <= entry.size);
            match seg_end {
                Some(_) if partial_block => {
                    return Err(invalid(format!(
                        "sparse segment at {} follows one that is not whole blocks \
                         (see archived_regions)",
                        s.offset
                    )))
                }
                Some(seg_end) if s.offset >= end => {
                    end = seg_end;
                    stored += s.len;
                    partial_block = s.len % BLOCK as u64 != 0;
                }
                _ => {
                    return Err(invalid(format!(
                        "sparse segment at {} of {} bytes is out of order or past the size {}",
                        s.offset, s.len, entry.size
                    )))
                }
            }
        }
        let mut map = SparseMap {
            segments,
            real_size: entry.size,
            stored,
            count: 0,
            text_len: 0,
        };
        let digits = |n: u64| n.checked_ilog10().unwrap_or(0) as u64 + 1;
        let (count, lines_len) = map.entries().fold((0, 0), |(count, len), (o, n)| {
            (count + 1, len + digits(o) + digits(n) + 2)
        });
        map.count = count;
        map.text_len = digits(count) + 1 + lines_len;
        Ok(map)
    }

    /// The map's `(offset, length)` entries: the data regions, then, if the
    /// file ends in a hole, an empty one at the real size. GNU tar writes
    /// that last entry and needs it: it is what makes it extend the file to
    /// its size.
    fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let regions = self.segments.iter().filter(|s| s.len > 0);
        let end = regions.clone().next_back().map_or(0, |s| s.offset + s.len);
        let tail = (end < self.real_size).then_some((self.real_size, 0));
        regions.map(|s| (s.offset, s.len)).chain(tail)
    }

    /// Bytes the member stores: the map in whole blocks, then the data.
    fn archived(&self) -> u64 {
        self.text_len.next_multiple_of(BLOCK as u64) + self.stored
    }
}

/// The regions to write a file whose data lies in `segments` (ascending,
/// not overlapping) as, through [`TarWriter::sparse_header`]: each widened
/// to whole 512-byte blocks of the file (not past its `size`), merged where
/// they then meet.
///
/// GNU tar reads each region's bytes from a block boundary of the archive,
/// as its own writer leaves them, where Go and libarchive read them back to
/// back: regions of whole blocks are read the same by all. The widening
/// takes in only zeros of the holes, less than a block on each side.
pub fn archived_regions(segments: &[SparseSegment], size: u64) -> Vec<SparseSegment> {
    let block = BLOCK as u64;
    let mut regions: Vec<SparseSegment> = Vec::with_capacity(segments.len());
    for s in segments.iter().filter(|s| s.len > 0) {
        let start = s.offset - s.offset % block;
        let end = s
            .offset
            .saturating_add(s.len)
            .checked_next_multiple_of(block)
            .unwrap_or(u64::MAX)
            .min(size);
        match regions.last_mut() {
            Some(last) if start <= last.offset.saturating_add(last.len) => {
                let last_end = last.offset.saturating_add(last.len);
                last.len = end.max(last_end) - last.offset;
            }
            _ => regions.push(SparseSegment {
                offset: start,
                len: end.saturating_sub(start),
            }),
        }
    }
    regions
}

/// The header name GNU tar gives a sparse member: `DIR/GNUSparseFile.PID/NAME`,
/// with `.` for a file at the top.
fn sparse_stand_in(path: &[u8]) -> Vec<u8> {
    let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (
            path.get(..i).unwrap_or_default(),
            path.get(i + 1..).unwrap_or_default(),
        ),
        None => (&b"."[..], path),
    };
    [dir, b"/", GNU_SPARSE_DIR, b"/", name].concat()
}

/// Appends a number and a newline, a line of a sparse map.
fn push_line(text: &mut Vec<u8>, n: u64) {
    text.extend_from_slice(n.to_string().as_bytes());
    text.push(b'\n');
}

fn trim_slashes(mut name: &[u8]) -> &[u8] {
    while let Some(rest) = name.strip_suffix(b"/") {
        name = rest;
    }
    name
}

fn typeflag(kind: MemberKind) -> u8 {
    match kind {
        MemberKind::Regular => b'0',
        MemberKind::Hardlink => b'1',
        MemberKind::Symlink => b'2',
        MemberKind::CharDevice => b'3',
        MemberKind::BlockDevice => b'4',
        MemberKind::Directory => b'5',
        MemberKind::Fifo => b'6',
    }
}

/// Splits a path into ustar `prefix` and `name` (the shortest prefix that
/// lets the name fit), or `None` if it cannot be held without an extended
/// header.
fn split_ustar_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= NAME_LEN {
        return Some((&[], path));
    }
    // The slash that separates them belongs to neither; a trailing slash
    // (directories) must stay in the name.
    let body = path.strip_suffix(b"/").unwrap_or(path);
    let min_split = path.len().saturating_sub(NAME_LEN + 1);
    let at = body
        .iter()
        .enumerate()
        .skip(min_split)
        .find(|&(_, &b)| b == b'/')
        .map(|(i, _)| i)?;
    let (prefix, name) = (path.get(..at)?, path.get(at + 1..)?);
    let name_is_real = !name.is_empty() && name != b"/";
    (prefix.len() <= PREFIX_LEN && name.len() <= NAME_LEN && name_is_real).then_some((prefix, name))
}

/// Appends one pax record, `"<len> <key>=<value>\n"`, where `len` counts the
/// whole record including its own digits.
fn push_record(records: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    records.extend_from_slice(len.to_string().as_bytes());
    records.push(b' ');
    records.extend_from_slice(key);
    records.push(b'=');
    records.extend_from_slice(value);
    records.push(b'\n');
}

/// A time as pax writes it: `[-]seconds[.fraction]`, the fraction without
/// trailing zeros. `nsec` is added to `secs` (which is floored), so one and a
/// half seconds before the epoch is `secs = -2, nsec = 500_000_000`.
fn pax_time(secs: i64, nsec: u32) -> String {
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nsec);
    let sign = if total < 0 { "-" } else { "" };
    let abs = total.unsigned_abs();
    let (whole, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let digits = format!("{frac:09}");
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
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
        let xattrs: &[(&[u8], &[u8])] =
            &[(b"user.a", b"1\n2"), (b"security.capability", b"\0\x01")];
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
    fn sparse_round_trip(
        path: &[u8],
        size: u64,
        segments: &[SparseSegment],
    ) -> (Vec<u8>, Vec<Member>) {
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
}
