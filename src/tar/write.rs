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
mod tests;
