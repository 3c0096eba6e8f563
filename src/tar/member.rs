//! What the index records about one member, and how its bytes are read back.

use super::sparse::read_sparse;

/// The kinds of member a layer can hold, after dialect resolution (GNU
/// dumpdirs are directories, unknown types are regular files, v7 regular
/// files named with a trailing slash are directories).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKind {
    /// A file with contents.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link; `link_target` is what it points to.
    Symlink,
    /// Another name for an earlier member; `link_target` names it.
    Hardlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

/// One member of a layer, with every dialect extension already applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Path as the archive gives it after dialect resolution (PAX `path` >
    /// GNU long name 'L' > ustar prefix + "/" + name), raw bytes, not
    /// normalised: the tree module strips "./", slashes and "..".
    pub path: Vec<u8>,
    /// What the member is.
    pub kind: MemberKind,
    /// Permission bits with setuid/setgid/sticky: header mode & 0o7777.
    pub mode: u32,
    /// Owner's numeric user id.
    pub uid: u32,
    /// Owner's numeric group id.
    pub gid: u32,
    /// Modification time, seconds since the epoch (may be negative).
    pub mtime: i64,
    /// Nanoseconds to add to `mtime` (always non-negative, so a time before
    /// the epoch with a fraction has `mtime` rounded down).
    pub mtime_nsec: u32,
    /// Symlink or hardlink target (PAX linkpath > GNU 'K' > header
    /// linkname), raw bytes. Empty for other kinds.
    pub link_target: Vec<u8>,
    /// Device major number (devices only, else 0).
    pub dev_major: u32,
    /// Device minor number (devices only, else 0).
    pub dev_minor: u32,
    /// Extended attributes from PAX records, in record order; a later
    /// record for the same name replaces the earlier value in place.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the contents lie in the stream.
    pub data: DataLayout,
    /// Offset of this member's first header block (its first extension
    /// header if it has any), so messages can point into the archive.
    pub header_offset: u64,
}

/// Where a member's contents lie in the decompressed layer stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataLayout {
    /// Offset of the first stored data byte in the decompressed stream.
    pub offset: u64,
    /// Logical size of the contents (the real size for sparse files; 0 for
    /// dirs, links, devices).
    pub size: u64,
    /// Sparse members only: the data regions, ascending, stored back to
    /// back from `offset`; everything else is a hole.
    pub sparse: Option<Box<[SparseSegment]>>,
}

/// One data region of a sparse file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseSegment {
    /// Offset in the file.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl DataLayout {
    /// Copies the file's bytes from position `pos` into `buf` (stopping at
    /// `size`) and returns how many were produced.
    ///
    /// Holes read as zeros. `read_stream(stream_offset, dst)` must fill
    /// `dst` exactly from the layer stream. No allocation: this is on the
    /// hot read path. A sparse read costs a binary search plus a sum over
    /// the segments before `pos` (the layout keeps no prefix sums).
    pub fn read_at<E>(
        &self,
        pos: u64,
        buf: &mut [u8],
        mut read_stream: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let left = self.size.saturating_sub(pos);
        let want = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        let Some(dst) = buf.get_mut(..want) else {
            return Ok(0);
        };
        if dst.is_empty() {
            return Ok(0);
        }
        match &self.sparse {
            None => read_stream(self.offset.saturating_add(pos), dst)?,
            Some(segments) => read_sparse(segments, self.offset, pos, dst, &mut read_stream)?,
        }
        Ok(want)
    }
}

#[cfg(test)]
impl Member {
    /// A member with `path` and `kind` and every other field zero or empty,
    /// for tests elsewhere that set only the fields they are about.
    pub(crate) fn bare(path: &[u8], kind: MemberKind) -> Member {
        Member {
            path: path.to_vec(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            link_target: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            data: DataLayout {
                offset: 0,
                size: 0,
                sparse: None,
            },
            header_offset: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(stream: &[u8]) -> impl FnMut(u64, &mut [u8]) -> Result<(), String> + '_ {
        move |off, dst| {
            let start = usize::try_from(off).map_err(|e| e.to_string())?;
            let src = stream
                .get(start..start + dst.len())
                .ok_or_else(|| format!("read past end at {off}"))?;
            dst.copy_from_slice(src);
            Ok(())
        }
    }

    #[test]
    fn dense_reads_stop_at_the_size() {
        let stream: Vec<u8> = (0..100u8).collect();
        let layout = DataLayout {
            offset: 10,
            size: 20,
            sparse: None,
        };
        let mut buf = [0u8; 8];
        assert_eq!(layout.read_at(0, &mut buf, reader(&stream)), Ok(8));
        assert_eq!(buf, [10, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(layout.read_at(16, &mut buf, reader(&stream)), Ok(4));
        assert_eq!(&buf[..4], &[26, 27, 28, 29]);
        assert_eq!(layout.read_at(20, &mut buf, reader(&stream)), Ok(0));
        assert_eq!(layout.read_at(u64::MAX, &mut buf, reader(&stream)), Ok(0));
        assert_eq!(layout.read_at(0, &mut [], reader(&stream)), Ok(0));
    }

    #[test]
    fn sparse_reads_zero_holes_and_map_regions_back_to_back() {
        // File of 20 bytes: [2,5) and [10,12) hold data; stored as 5 bytes.
        let stream = b"....ABCDE....";
        let layout = DataLayout {
            offset: 4,
            size: 20,
            sparse: Some(
                vec![
                    SparseSegment { offset: 2, len: 3 },
                    SparseSegment { offset: 10, len: 2 },
                ]
                .into_boxed_slice(),
            ),
        };
        let expected = b"\0\0ABC\0\0\0\0\0DE\0\0\0\0\0\0\0\0";
        for pos in 0..=21u64 {
            for len in 0..=22usize {
                let mut buf = vec![0xaa; len];
                let n = layout.read_at(pos, &mut buf, reader(stream)).expect("read");
                let from = usize::try_from(pos).expect("small").min(20);
                let to = (from + len).min(20);
                assert_eq!(n, to - from, "pos {pos} len {len}");
                assert_eq!(&buf[..n], &expected[from..to], "pos {pos} len {len}");
            }
        }
    }

    #[test]
    fn sparse_reads_tolerate_odd_maps_built_elsewhere() {
        // Zero-length and unsorted segments cannot come from the indexer,
        // but a layout built by hand must still not panic or loop.
        let stream = b"XYZ";
        let layout = DataLayout {
            offset: 0,
            size: 8,
            sparse: Some(
                vec![
                    SparseSegment { offset: 1, len: 0 },
                    SparseSegment { offset: 5, len: 2 },
                    SparseSegment { offset: 2, len: 1 },
                ]
                .into_boxed_slice(),
            ),
        };
        let mut buf = [0xaa; 8];
        assert_eq!(layout.read_at(0, &mut buf, reader(stream)), Ok(8));
        assert_eq!(&buf, b"\0\0\0\0\0XY\0");
    }

    #[test]
    fn stream_errors_pass_through() {
        let layout = DataLayout {
            offset: 0,
            size: 4,
            sparse: None,
        };
        let mut buf = [0u8; 4];
        let err = layout.read_at(0, &mut buf, |_, _| Err("boom"));
        assert_eq!(err, Err("boom"));
    }
}
