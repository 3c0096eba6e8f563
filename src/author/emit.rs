//! Writing the chosen entries of a scanned directory as tar entries.
//!
//! Entries go in scan order (each directory before what it holds). Right
//! after a directory come its opaque marker and its whiteouts, before any
//! of its entries: a layer applier working through the archive in order
//! then clears first and adds after, as the OCI image spec expects. A file
//! with several chosen names is written once, under the first, and its
//! other names follow as hardlinks to it.

use std::collections::HashMap;
use std::io::{Read, Write};

use super::AuthorError;
use crate::dir::{DirError, FileId, Scan, ScanEntry};
use crate::tar::{EntryHeader, FirstNames, MemberKind, TarWriter};
use crate::tree::{whiteout_name, OPAQUE_MARKER};

/// Bytes read from a file per copy step.
const COPY_BUFFER: usize = 1 << 20;

/// What to write of a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Per scan entry: whether it is written.
    pub write: Vec<bool>,
    /// Per scan entry: whether an opaque marker follows the directory.
    pub opaque: Vec<bool>,
    /// Per directory (scan index): the names to white out, sorted.
    pub whiteouts: HashMap<usize, Vec<Vec<u8>>>,
}

impl Selection {
    /// Nothing chosen, for a scan of `len` entries.
    pub fn none(len: usize) -> Selection {
        Selection {
            write: vec![false; len],
            opaque: vec![false; len],
            whiteouts: HashMap::new(),
        }
    }

    /// Whether entry `index` is written.
    pub fn writes(&self, index: usize) -> bool {
        self.write.get(index).copied().unwrap_or(false)
    }

    /// Chooses entry `index`.
    pub fn choose(&mut self, index: usize) {
        if let Some(slot) = self.write.get_mut(index) {
            *slot = true;
        }
    }

    /// Bytes of file data the selection writes, each inode once: the
    /// total for a progress bar.
    pub fn data_bytes(&self, scan: &Scan) -> u64 {
        let mut seen = std::collections::HashSet::new();
        scan.entries()
            .iter()
            .enumerate()
            .filter(|&(i, e)| self.writes(i) && e.kind == MemberKind::Regular)
            .filter(|(_, e)| e.nlink < 2 || seen.insert(e.id))
            .map(|(_, e)| e.size)
            .sum()
    }
}

/// Counts of what was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emitted {
    /// Entries written, hardlinks, whiteouts and markers included.
    pub entries: u64,
    /// Whiteouts and opaque markers among them.
    pub whiteouts: u64,
    /// Bytes of file data written.
    pub data_bytes: u64,
}

/// Writes the selected entries into `writer` (which the caller finishes).
/// Every time is clamped to at most `clamp_mtime` seconds if given.
/// `progress` is told the file data bytes written so far.
pub fn emit<W: Write>(
    scan: &Scan,
    selection: &Selection,
    clamp_mtime: Option<i64>,
    writer: &mut TarWriter<W>,
    progress: &mut dyn FnMut(u64),
) -> Result<Emitted, AuthorError> {
    let mut emitter = Emitter {
        scan,
        clamp_mtime,
        writer,
        first_names: FirstNames::default(),
        buffer: vec![0; COPY_BUFFER],
        done: Emitted::default(),
        progress,
    };
    for (index, entry) in scan.entries().iter().enumerate() {
        if selection.writes(index) {
            emitter.entry(index, entry)?;
        }
        if selection.opaque.get(index).copied().unwrap_or(false) {
            emitter.marker(entry, OPAQUE_MARKER)?;
        }
        for name in selection.whiteouts.get(&index).into_iter().flatten() {
            emitter.marker(entry, &whiteout_name(name))?;
        }
    }
    Ok(emitter.done)
}

struct Emitter<'a, W: Write> {
    scan: &'a Scan,
    clamp_mtime: Option<i64>,
    writer: &'a mut TarWriter<W>,
    /// The written path of each multiply-linked inode written so far.
    first_names: FirstNames<FileId>,
    buffer: Vec<u8>,
    done: Emitted,
    progress: &'a mut dyn FnMut(u64),
}

impl<W: Write> Emitter<'_, W> {
    fn entry(&mut self, index: usize, entry: &ScanEntry) -> Result<(), AuthorError> {
        let xattrs: Vec<(&[u8], &[u8])> = entry
            .xattrs
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        let (mtime, mtime_nsec) = self.time(entry.mtime, entry.mtime_nsec);
        let mut header = EntryHeader {
            path: &entry.path,
            kind: entry.kind,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime,
            mtime_nsec,
            size: 0,
            link_target: &entry.target,
            device: entry.rdev,
            xattrs: &xattrs,
        };
        self.done.entries += 1;
        if entry.kind == MemberKind::Regular {
            header.size = entry.size;
        }
        let whole = self
            .first_names
            .header(self.writer, entry.id, entry.nlink, &header)?;
        if whole && entry.kind == MemberKind::Regular {
            self.copy_data(index, entry.size)?;
        }
        Ok(())
    }

    fn copy_data(&mut self, index: usize, size: u64) -> Result<(), AuthorError> {
        let mut file = self.scan.open_file(index)?;
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).map_or(self.buffer.len(), |l| l.min(COPY_BUFFER));
            let chunk = self.buffer.get_mut(..want).unwrap_or_default();
            let n = file.read(chunk).map_err(|source| DirError::Io {
                path: self.scan.disk_path(index),
                source,
            })?;
            if n == 0 {
                // The file shrank after it was opened.
                return Err(DirError::Changed {
                    path: self.scan.disk_path(index),
                }
                .into());
            }
            self.writer.data(chunk.get(..n).unwrap_or_default())?;
            left -= n as u64;
            self.done.data_bytes += n as u64;
            (self.progress)(self.done.data_bytes);
        }
        Ok(())
    }

    /// An empty file named `name` inside `dir`: a whiteout or opaque
    /// marker, with the directory's owner-independent defaults and time.
    fn marker(&mut self, dir: &ScanEntry, name: &[u8]) -> Result<(), AuthorError> {
        let mut path = dir.path.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let (mtime, mtime_nsec) = self.time(dir.mtime, dir.mtime_nsec);
        self.writer.header(&EntryHeader {
            path: &path,
            kind: MemberKind::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime,
            mtime_nsec,
            size: 0,
            link_target: b"",
            device: (0, 0),
            xattrs: &[],
        })?;
        self.done.entries += 1;
        self.done.whiteouts += 1;
        Ok(())
    }

    fn time(&self, mtime: i64, nsec: u32) -> (i64, u32) {
        clamp(mtime, nsec, self.clamp_mtime)
    }
}

/// A time, clamped to at most `limit` seconds (as `tar --clamp-mtime`).
pub fn clamp(mtime: i64, nsec: u32, limit: Option<i64>) -> (i64, u32) {
    match limit {
        Some(limit) if (mtime, nsec) > (limit, 0) => (limit, 0),
        _ => (mtime, nsec),
    }
}
