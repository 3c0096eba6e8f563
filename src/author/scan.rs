//! The directory a layer is written from, read with [`crate::dir::Scan`]
//! and checked for what a layer cannot hold as an ordinary entry.

use std::path::Path;

use super::AuthorError;
use crate::dir::Scan;
use crate::tar::MemberKind;
use crate::tree::{is_marker_name, is_tombstone_device, is_visible_xattr, LayerKind};

/// Reads `root` for `create` or `diff`. A whiteout name or a 0/0 character
/// device would be read back as a removal, so either is refused by name;
/// overlayfs' own xattrs describe how an upper directory stored an entry,
/// not the entry, so they are left out with a warning.
pub fn read(root: &Path) -> Result<Scan, AuthorError> {
    let mut scan = Scan::read(root)?;
    for (i, entry) in scan.entries().iter().enumerate() {
        let what = if is_marker_name(entry.name()) {
            "a whiteout name (.wh.*)"
        } else if entry.kind == MemberKind::CharDevice
            && is_tombstone_device(entry.rdev.0, entry.rdev.1)
        {
            "a 0/0 character device (an overlayfs whiteout)"
        } else {
            continue;
        };
        return Err(AuthorError::Unrepresentable {
            path: scan.disk_path(i),
            what,
        });
    }
    let mut dropped = Vec::new();
    scan.retain_xattrs(|i, name| {
        let keep = is_visible_xattr(name, LayerKind::Directory);
        if !keep {
            dropped.push((i, name.to_vec()));
        }
        keep
    });
    for (i, name) in dropped {
        log::warn!(
            "{}: xattr {} left out: it is overlayfs' own",
            scan.disk_path(i).display(),
            String::from_utf8_lossy(&name)
        );
    }
    Ok(scan)
}
