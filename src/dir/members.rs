//! A directory's walk as the members a tar of it would hold, in walk order,
//! and where each regular file's bytes lie in the virtual stream.

use std::collections::HashMap;

use super::files::Slot;
use super::walk::{FileId, Scan, ScanEntry};
use crate::tar::{DataLayout, LayerIndex, Member, MemberKind};

/// overlayfs state a directory can hold but a merge of it cannot honour:
/// a metacopy file's data, and a renamed directory's old contents, are in
/// the lower layers of the overlay it came from, under other names.
const FOREIGN_OVERLAY_XATTRS: [&[u8]; 4] = [
    b"trusted.overlay.metacopy",
    b"user.overlay.metacopy",
    b"trusted.overlay.redirect",
    b"user.overlay.redirect",
];

/// The members of `scan`, and the table of the files holding their data
/// (files of size 0 hold none and are not in it), by stream offset.
///
/// A second name of a file with data or of a symlink is a hardlink to the
/// first name the walk met, as `tar` records it; only the first carries
/// data. Other names of one inode stay separate entries: overlayfs makes
/// all its tombstones names of one 0/0 device (and a tombstone may be an
/// empty file), and each must be read as a tombstone of its own, never as
/// a link to another name; an empty file's or a device's identity carries
/// nothing else.
pub(super) fn members(scan: &Scan) -> (LayerIndex, Vec<Slot>) {
    let mut first_names: HashMap<FileId, &[u8]> = HashMap::new();
    let mut members = Vec::with_capacity(scan.entries().len());
    let mut table = Vec::new();
    let mut offset = 0u64;
    for (i, entry) in scan.entries().iter().enumerate() {
        warn_foreign_state(scan, i, entry);
        let mut member = entry.as_member();
        member.data.offset = offset;
        member.header_offset = offset;
        let linked = entry.nlink > 1
            && match entry.kind {
                MemberKind::Regular => entry.size > 0,
                MemberKind::Symlink => true,
                _ => false,
            };
        if let Some(first) = linked
            .then(|| first_names.get(&entry.id).copied())
            .flatten()
        {
            member.kind = MemberKind::Hardlink;
            member.link_target = first.to_vec();
            member.data.size = 0;
        } else {
            if linked {
                first_names.insert(entry.id, &entry.path);
            }
            if entry.kind == MemberKind::Regular && entry.size > 0 {
                table.push(Slot::new(offset, entry, scan.disk_path(i)));
                offset = offset.saturating_add(entry.size);
            }
        }
        members.push(member);
    }
    (LayerIndex { members }, table)
}

impl ScanEntry {
    /// The member this entry is in a directory layer, on its own: data at
    /// offset 0, and a second name of an inode still its own kind (which
    /// [`members`] then makes a hardlink where a tar would). What the merge
    /// classifies, so `create --whiteouts` reads markers by its rules.
    pub fn as_member(&self) -> Member {
        Member {
            path: if self.path.is_empty() {
                b"./".to_vec()
            } else {
                self.path.clone()
            },
            kind: self.kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            link_target: self.target.clone(),
            dev_major: self.rdev.0,
            dev_minor: self.rdev.1,
            xattrs: self.xattrs.clone(),
            data: DataLayout {
                offset: 0,
                size: if self.kind == MemberKind::Regular {
                    self.size
                } else {
                    0
                },
                sparse: None,
            },
            header_offset: 0,
        }
    }
}

fn warn_foreign_state(scan: &Scan, index: usize, entry: &ScanEntry) {
    for (name, _) in &entry.xattrs {
        if FOREIGN_OVERLAY_XATTRS.contains(&name.as_slice()) {
            log::warn!(
                "{}: carries {}: what overlayfs would take from its lower layers for it is not shown; it is served as stored here",
                scan.disk_path(index).display(),
                String::from_utf8_lossy(name)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// Path, kind, data offset, size and link target of a member.
    type Shown<'a> = (&'a [u8], MemberKind, u64, u64, &'a [u8]);

    #[test]
    fn files_lie_end_to_end_and_second_names_are_hardlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs::create_dir(root.join("d")).expect("mkdir");
        fs::write(root.join("d/a"), b"aaa").expect("write");
        fs::write(root.join("d/b"), b"").expect("write");
        fs::write(root.join("d/c"), b"ccccc").expect("write");
        fs::hard_link(root.join("d/a"), root.join("z")).expect("link");
        fs::hard_link(root.join("d/b"), root.join("y")).expect("link");
        symlink("d/a", root.join("s")).expect("symlink");
        let scan = Scan::read(root).expect("walk");
        let (index, table) = members(&scan);
        let shown: Vec<Shown> = index
            .members
            .iter()
            .map(|m| {
                (
                    m.path.as_slice(),
                    m.kind,
                    m.data.offset,
                    m.data.size,
                    m.link_target.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (&b"./"[..], MemberKind::Directory, 0, 0, &b""[..]),
                (b"d", MemberKind::Directory, 0, 0, b""),
                (b"d/a", MemberKind::Regular, 0, 3, b""),
                (b"d/b", MemberKind::Regular, 3, 0, b""),
                (b"d/c", MemberKind::Regular, 3, 5, b""),
                (b"s", MemberKind::Symlink, 8, 0, b"d/a"),
                (b"y", MemberKind::Regular, 8, 0, b""),
                (b"z", MemberKind::Hardlink, 8, 0, b"d/a"),
            ]
        );
        let starts: Vec<(u64, u64)> = table.iter().map(|s| (s.start, s.size)).collect();
        assert_eq!(starts, [(0, 3), (3, 5)], "empty files take no slot");
    }
}
