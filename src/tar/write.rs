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
//! The same entries always give the same bytes: extended headers have fixed
//! names, zero times and a fixed record order, and nothing depends on the
//! clock, the user or the host.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::Hash;
use std::io::{self, Write};

use super::header::{
    encode_ustar, UstarFields, BLOCK, ID_LEN, LINKNAME_LEN, NAME_LEN, PREFIX_LEN, SIZE_LEN,
};
use super::member::MemberKind;
use super::number::fits_octal;

/// The name of every extended header: fixed, so output is reproducible.
const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";
/// The name GNU tar gives its long-name headers.
const GNU_LONG_NAME: &[u8] = b"././@LongLink";

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
        let result = self.write_headers(entry, &path);
        self.path = path;
        result
    }

    fn write_headers(&mut self, entry: &EntryHeader<'_>, path: &[u8]) -> io::Result<()> {
        let size = match entry.kind {
            MemberKind::Regular => entry.size,
            _ => 0,
        };
        let link: &[u8] = match entry.kind {
            MemberKind::Symlink | MemberKind::Hardlink => entry.link_target,
            _ => &[],
        };
        let split = split_ustar_path(path);
        let utf8 = |bytes: &[u8]| std::str::from_utf8(bytes).is_ok();
        let long_link = link.len() > LINKNAME_LEN;
        if long_link && !utf8(link) {
            self.gnu_long_name(b'K', link)?;
        }
        if split.is_none() && !utf8(path) {
            self.gnu_long_name(b'L', path)?;
        }
        self.records.clear();
        if entry.xattrs.iter().any(|(name, _)| !utf8(name)) {
            push_record(&mut self.records, b"hdrcharset", b"BINARY");
        }
        if split.is_none() && utf8(path) {
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
            None => (&[][..], path.get(..NAME_LEN).unwrap_or(path)),
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
        self.data_left = size;
        self.data_len = size;
        Ok(())
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
        if entry.kind != MemberKind::Directory && nlink > 1 {
            match self.names.entry(key) {
                Entry::Occupied(first) => {
                    writer.header(&EntryHeader {
                        kind: MemberKind::Hardlink,
                        link_target: first.get(),
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
        writer.header(entry)?;
        Ok(true)
    }
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
}
