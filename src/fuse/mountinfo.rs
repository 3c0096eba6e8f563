//! Reading the mount table, to refuse mounting twice on one directory and
//! to know whether `umount` has anything to do.

use std::io;
use std::path::Path;

/// Whether `path` (canonical) is a mountpoint in this mount namespace.
pub fn is_mountpoint(path: &Path) -> io::Result<bool> {
    let table = std::fs::read("/proc/self/mountinfo")?;
    let wanted = path.as_os_str().as_encoded_bytes();
    Ok(table
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .any(|field| unescape(field) == wanted))
}

/// What the mount table says of the topmost mount at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The filesystem type (`overlay`, `fuse.layerfs`).
    pub fs_type: String,
    /// The filesystem's own options, still escaped (`lowerdir=...`).
    pub super_options: Vec<u8>,
}

/// The last (topmost) mount at `path` (canonical), if any.
pub fn entry(path: &Path) -> io::Result<Option<MountEntry>> {
    let table = std::fs::read("/proc/self/mountinfo")?;
    Ok(parse_entry(&table, path.as_os_str().as_encoded_bytes()))
}

/// The last line of `table` for mountpoint `wanted`: fields 0-5, the
/// optional fields up to `-`, then type, source and super options.
fn parse_entry(table: &[u8], wanted: &[u8]) -> Option<MountEntry> {
    table.split(|&b| b == b'\n').rev().find_map(|line| {
        let mut fields = line.split(|&b| b == b' ');
        if fields.clone().nth(4).map(unescape)? != wanted {
            return None;
        }
        let mut after = fields.by_ref().skip(6).skip_while(|&f| f != b"-").skip(1);
        let fs_type = String::from_utf8_lossy(after.next()?).into_owned();
        let super_options = after.nth(1)?.to_vec();
        Some(MountEntry {
            fs_type,
            super_options,
        })
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`) in a mountinfo path field.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal_sequences() {
        assert_eq!(unescape(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape(br"/x\134y\012"), b"/x\\y\n");
        assert_eq!(unescape(br"/no\escape"), br"/no\escape");
    }

    #[test]
    fn finds_the_topmost_entry_with_type_and_super_options() {
        let table = b"20 1 0:5 / /mnt rw shared:1 - fuse.layerfs a.tar rw,user_id=0\n\
            21 20 0:6 / /mnt rw - overlay overlay rw,lowerdir=/x\\054y,index=off\n\
            22 1 0:7 / /other rw - tmpfs tmpfs rw\n";
        let found = parse_entry(table, b"/mnt").expect("an entry");
        assert_eq!(found.fs_type, "overlay");
        assert_eq!(found.super_options, br"rw,lowerdir=/x\054y,index=off");
        assert_eq!(parse_entry(table, b"/none"), None);
    }

    #[test]
    fn root_is_a_mountpoint_and_a_fresh_dir_is_not() {
        assert!(is_mountpoint(Path::new("/")).expect("mount table"));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().canonicalize().expect("canonical path");
        assert!(!is_mountpoint(&path).expect("mount table"));
    }
}
