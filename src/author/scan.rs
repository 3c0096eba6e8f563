//! The directory a layer is written from, read with [`crate::dir::Scan`]
//! and checked for what a layer cannot hold as an ordinary entry, or read
//! as a directory layer is, its markers becoming the layer's whiteouts.

use std::path::Path;

use super::emit::Selection;
use super::AuthorError;
use crate::dir::Scan;
use crate::tar::MemberKind;
use crate::tree::{
    classify, is_marker_name, is_tombstone_device, is_visible_xattr, Action, LayerKind,
};

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
    drop_overlay_xattrs(&mut scan, |_| true);
    Ok(scan)
}

/// Reads `root` as the mount reads a directory layer (`create
/// --whiteouts`): each entry is classified by the merge's own rules
/// ([`classify`]), so `.wh.NAME` files, 0/0 character devices and
/// overlayfs' whiteout files become whiteouts of their directory,
/// `.wh..wh..opq` files and `trusted.overlay.opaque=y` directories opaque
/// markers, and what the merge ignores (AUFS metadata, what lies inside a
/// whiteout) is left out; everything else is chosen as it is.
pub fn read_layer(root: &Path) -> Result<(Scan, Selection), AuthorError> {
    let mut scan = Scan::read(root)?;
    let selection = select_as_layer(&scan);
    // The opaque xattr is now a marker; any other overlayfs xattr is still
    // worth a warning.
    let opaque = |i: usize| selection.opaque.get(i).copied().unwrap_or(false);
    drop_overlay_xattrs(&mut scan, |i| selection.writes(i) && !opaque(i));
    Ok((scan, selection))
}

/// Reads an overlayfs upper directory for `layerfs commit`: as a directory
/// layer ([`read_layer`]), but only overlayfs' own forms are markers. A
/// `.wh.` name there is a file someone made through the mount, which no
/// OCI layer can hold; a redirect or metacopy xattr means the mount stored
/// a rename or a copy-up by reference to the lower layers, which a layer
/// cannot express either (`layerfs mount --upper` keeps both features
/// off). overlayfs' bookkeeping xattrs (origin, impure, ...) go silently.
pub fn read_upper(root: &Path) -> Result<(Scan, Selection), AuthorError> {
    let mut scan = Scan::read(root)?;
    for (i, entry) in scan.entries().iter().enumerate() {
        let what = if is_marker_name(entry.name()) {
            "a whiteout name (.wh.*) made through the mount"
        } else if let Some(feature) = entry.xattrs.iter().find_map(|(name, _)| by_reference(name)) {
            feature
        } else {
            continue;
        };
        return Err(AuthorError::NotCommittable {
            path: scan.disk_path(i),
            what,
        });
    }
    let selection = select_as_layer(&scan);
    drop_overlay_xattrs(&mut scan, |_| false);
    Ok((scan, selection))
}

/// The overlayfs feature an xattr of an upper entry stands for, when that
/// feature stores the entry by reference to the lower layers.
fn by_reference(name: &[u8]) -> Option<&'static str> {
    let own = name
        .strip_prefix(b"trusted.overlay.")
        .or_else(|| name.strip_prefix(b"user.overlay."))?;
    match own {
        b"redirect" => Some("an overlayfs redirect (a directory renamed with redirect_dir=on)"),
        b"metacopy" => Some("an overlayfs metacopy (a copy-up of metadata only, metacopy=on)"),
        _ => None,
    }
}

/// Chooses every entry of a directory layer by the merge's own rules, its
/// markers becoming whiteouts and opaque directories.
fn select_as_layer(scan: &Scan) -> Selection {
    let mut selection = Selection::none(scan.entries().len());
    for (i, entry) in scan.entries().iter().enumerate() {
        // A walk's paths are already normal: no `.`, `..` or empty names.
        let comps: Vec<&[u8]> = entry
            .path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let parent = entry.parent;
        match classify(&entry.as_member(), &comps, LayerKind::Directory) {
            Action::Add => selection.choose(i),
            Action::AddOpaqueDir => {
                selection.choose(i);
                set_opaque(&mut selection, i);
            }
            Action::Remove { name, .. } => selection
                .whiteouts
                .entry(parent)
                .or_default()
                .push(name.to_vec()),
            Action::MakeOpaque { .. } => set_opaque(&mut selection, parent),
            // Below a whiteout or other left-out entry, one warning is enough.
            Action::Ignore if !selection.writes(parent) => {}
            Action::Ignore => log::warn!(
                "{}: left out: the mount ignores it too",
                scan.disk_path(i).display()
            ),
        }
    }
    for names in selection.whiteouts.values_mut() {
        names.sort();
        names.dedup();
    }
    selection
}

fn set_opaque(selection: &mut Selection, index: usize) {
    if let Some(slot) = selection.opaque.get_mut(index) {
        *slot = true;
    }
}

/// Drops overlayfs' own xattrs, which describe how an upper directory
/// stored an entry, not the entry; warns of each on an entry `warn` picks.
fn drop_overlay_xattrs(scan: &mut Scan, warn: impl Fn(usize) -> bool) {
    let mut dropped = Vec::new();
    scan.retain_xattrs(|i, name| {
        let keep = is_visible_xattr(name, LayerKind::Directory);
        if !keep && warn(i) {
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
}
