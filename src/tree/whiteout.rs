//! The whiteout rules: what a layer member means for the layers below it.
//!
//! This is the one place that knows the OCI image-spec changeset markers
//! (`.wh.NAME`, `.wh..wh..opq`), AUFS leftovers (`.wh..wh.*`) and overlayfs'
//! native form, as an upper directory holds it (character device 0/0
//! tombstones, `trusted.overlay.opaque=y`; with the `userxattr` mount
//! option, `user.overlay.*` instead; and since Linux 6.7 the other
//! tombstone, an empty regular file with `trusted.overlay.whiteout`).
//!
//! Which xattr namespaces carry overlayfs' meaning depends on the
//! [`LayerKind`]: a directory may be an upper directory of either kind of
//! overlay, but a tar layer is read as the runtimes unpack it as root.

use super::RemovalKind;
use crate::tar::{Member, MemberKind};

/// Prefix of a whiteout file's base name.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Base name of the marker that makes its directory opaque.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`, `.wh..wh.orph`).
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
/// overlayfs' private xattrs, in the namespace it uses by default and in
/// the one of `userxattr` mounts (unprivileged overlays); they describe
/// how the upper dir stored an entry, not the entry. Only the first is
/// overlayfs' own in a tar layer: a runtime unpacking a tar as root writes
/// `user.overlay.*` as an ordinary xattr, onto an overlay that does not
/// read it (containerd) or onto a plain directory (umoci).
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// The overlayfs xattr (after a prefix) that marks a directory opaque with
/// the value `y`. (`x` only says the directory holds xattr tombstones.)
const OVERLAY_OPAQUE: &[u8] = b"opaque";
/// The overlayfs xattr (after a prefix) that makes an empty regular file a
/// tombstone.
const OVERLAY_WHITEOUT: &[u8] = b"whiteout";

/// Where a layer's members were read from, which decides what overlayfs'
/// xattrs on them mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// A tar stream (a file, an image's blob): `trusted.overlay.*` keeps
    /// overlayfs' meaning (containerd unpacks into an overlay upper
    /// directory as root, where it has it); `user.overlay.*` is an ordinary
    /// xattr, as containerd and umoci leave it.
    Tar,
    /// A directory: an extracted layer or the upper directory of an
    /// overlay, mounted with `userxattr` or not, so both namespaces carry
    /// overlayfs' meaning.
    Directory,
}

impl LayerKind {
    /// The xattr namespaces that are overlayfs' own in a layer of this kind.
    fn overlay_prefixes(self) -> &'static [&'static [u8]] {
        match self {
            LayerKind::Tar => &OVERLAY_XATTR_PREFIXES[..1],
            LayerKind::Directory => &OVERLAY_XATTR_PREFIXES,
        }
    }
}

/// What one member does to the tree, given its normalised path components.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Add (or replace) the entry at this path.
    Add,
    /// Add the directory at this path, after hiding every lower-layer child
    /// it had (a directory carrying `trusted.overlay.opaque=y`).
    AddOpaqueDir,
    /// Remove the entry `name` of directory `dir`, with its subtree.
    Remove {
        /// Components of the directory holding the removed entry.
        dir: &'a [&'a [u8]],
        /// The removed entry's name.
        name: &'a [u8],
        /// Whether a whiteout file or a tombstone says so.
        by: RemovalKind,
    },
    /// Hide every lower-layer child of the directory at these components.
    MakeOpaque {
        /// Components of the opaque directory.
        dir: &'a [&'a [u8]],
    },
    /// Nothing to show and nothing to remove (AUFS metadata, a marker
    /// without a name, a member inside a whiteout-named directory).
    Ignore,
}

/// Classifies a member of a layer of `kind` by its normalised path
/// components.
pub fn classify<'a>(member: &Member, comps: &'a [&'a [u8]], kind: LayerKind) -> Action<'a> {
    let Some((&base, dirs)) = comps.split_last() else {
        return Action::Add;
    };
    if dirs.iter().any(|c| c.starts_with(WHITEOUT_PREFIX)) {
        return Action::Ignore;
    }
    if base == OPAQUE_MARKER {
        return Action::MakeOpaque { dir: dirs };
    }
    if base.starts_with(AUFS_META_PREFIX) {
        return Action::Ignore;
    }
    if let Some(name) = base.strip_prefix(WHITEOUT_PREFIX) {
        return if name.is_empty() {
            Action::Ignore
        } else {
            Action::Remove {
                dir: dirs,
                name,
                by: RemovalKind::Whiteout,
            }
        };
    }
    match member.kind {
        MemberKind::CharDevice if is_tombstone_device(member.dev_major, member.dev_minor) => {
            Action::Remove {
                dir: dirs,
                name: base,
                by: RemovalKind::Tombstone,
            }
        }
        MemberKind::Regular
            if member.data.size == 0 && overlay_xattr(member, OVERLAY_WHITEOUT, kind).is_some() =>
        {
            Action::Remove {
                dir: dirs,
                name: base,
                by: RemovalKind::Tombstone,
            }
        }
        MemberKind::Directory if overlay_xattr(member, OVERLAY_OPAQUE, kind) == Some(b"y") => {
            Action::AddOpaqueDir
        }
        _ => Action::Add,
    }
}

/// The value of overlayfs' xattr `name` on `member`, in a namespace that
/// is overlayfs' own in a layer of `kind`.
fn overlay_xattr<'a>(member: &'a Member, name: &[u8], kind: LayerKind) -> Option<&'a [u8]> {
    member.xattrs.iter().find_map(|(full, value)| {
        kind.overlay_prefixes()
            .iter()
            .any(|prefix| full.strip_prefix(*prefix) == Some(name))
            .then_some(value.as_slice())
    })
}

/// The base name of the whiteout that removes `name` from the layers below.
pub fn whiteout_name(name: &[u8]) -> Vec<u8> {
    [WHITEOUT_PREFIX, name].concat()
}

/// Whether a base name is one the merge reads as a marker (a whiteout, the
/// opaque marker, AUFS metadata) rather than as an entry: such a name cannot
/// be stored in a layer as an ordinary file.
pub fn is_marker_name(name: &[u8]) -> bool {
    name.starts_with(WHITEOUT_PREFIX)
}

/// Whether a character device with these numbers is overlayfs' whiteout
/// (a 0/0 tombstone), which the merge reads as a removal.
pub fn is_tombstone_device(major: u32, minor: u32) -> bool {
    major == 0 && minor == 0
}

/// Whether an xattr of a member of a layer of `kind` is kept in the merged
/// tree: overlayfs' own attributes describe how an upper directory was
/// stored, not the file, and are dropped.
pub fn is_visible_xattr(name: &[u8], kind: LayerKind) -> bool {
    !kind
        .overlay_prefixes()
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::path::components;

    fn member(kind: MemberKind) -> Member {
        Member {
            mode: 0o644,
            ..Member::bare(b"", kind)
        }
    }

    #[test]
    fn whiteout_file_removes_its_name() {
        let comps = components(b"etc/.wh.passwd");
        assert_eq!(
            classify(&member(MemberKind::Regular), &comps, LayerKind::Tar),
            Action::Remove {
                dir: &comps[..1],
                name: b"passwd",
                by: RemovalKind::Whiteout,
            }
        );
    }

    #[test]
    fn opaque_marker_names_its_directory() {
        let comps = components(b"./data/.wh..wh..opq");
        assert_eq!(
            classify(&member(MemberKind::Regular), &comps, LayerKind::Tar),
            Action::MakeOpaque { dir: &comps[..1] }
        );
        let top = components(b".wh..wh..opq");
        assert_eq!(
            classify(&member(MemberKind::Regular), &top, LayerKind::Tar),
            Action::MakeOpaque { dir: &[] }
        );
    }

    #[test]
    fn aufs_metadata_and_whiteout_dirs_are_ignored() {
        for raw in [
            &b".wh..wh.plnk/123.456"[..],
            b".wh..wh.aufs",
            b"a/.wh..wh.orph",
            b"a/.wh.",
        ] {
            let comps = components(raw);
            assert_eq!(
                classify(&member(MemberKind::Regular), &comps, LayerKind::Tar),
                Action::Ignore,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn char_device_zero_zero_is_a_tombstone() {
        let comps = components(b"usr/gone");
        assert_eq!(
            classify(&member(MemberKind::CharDevice), &comps, LayerKind::Tar),
            Action::Remove {
                dir: &comps[..1],
                name: b"gone",
                by: RemovalKind::Tombstone,
            }
        );
        let mut tty = member(MemberKind::CharDevice);
        tty.dev_major = 5;
        assert_eq!(classify(&tty, &comps, LayerKind::Tar), Action::Add);
    }

    #[test]
    fn overlay_opaque_xattr_makes_an_opaque_dir() {
        let mut dir = member(MemberKind::Directory);
        dir.xattrs
            .push((b"trusted.overlay.opaque".to_vec(), b"y".to_vec()));
        let comps = components(b"data/");
        for kind in [LayerKind::Tar, LayerKind::Directory] {
            dir.xattrs[0] = (b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
            assert_eq!(classify(&dir, &comps, kind), Action::AddOpaqueDir);
            dir.xattrs[0].1 = b"n".to_vec();
            assert_eq!(classify(&dir, &comps, kind), Action::Add);
            // `x`: the directory holds xattr tombstones; it is not opaque.
            dir.xattrs[0].1 = b"x".to_vec();
            assert_eq!(classify(&dir, &comps, kind), Action::Add);
            dir.xattrs[0] = (b"user.overlayx.opaque".to_vec(), b"y".to_vec());
            assert_eq!(classify(&dir, &comps, kind), Action::Add);
            assert!(!is_visible_xattr(b"trusted.overlay.opaque", kind));
            assert!(is_visible_xattr(b"user.foo", kind));
            assert!(is_visible_xattr(b"trusted.overlayfoo", kind));
        }
        // `user.overlay.*` is overlayfs' own only in an upper directory
        // (a `userxattr` overlay); in a tar it is an ordinary xattr, as
        // umoci and containerd (as root) unpack it.
        dir.xattrs[0] = (b"user.overlay.opaque".to_vec(), b"y".to_vec());
        assert_eq!(
            classify(&dir, &comps, LayerKind::Directory),
            Action::AddOpaqueDir
        );
        assert!(!is_visible_xattr(
            b"user.overlay.origin",
            LayerKind::Directory
        ));
        assert_eq!(classify(&dir, &comps, LayerKind::Tar), Action::Add);
        assert!(is_visible_xattr(b"user.overlay.opaque", LayerKind::Tar));
    }

    #[test]
    fn an_empty_file_with_the_whiteout_xattr_is_a_tombstone() {
        let comps = components(b"etc/gone");
        let tombstone = Action::Remove {
            dir: &comps[..1],
            name: b"gone",
            by: RemovalKind::Tombstone,
        };
        for (name, kind, removes) in [
            ("trusted.overlay.whiteout", LayerKind::Tar, true),
            ("trusted.overlay.whiteout", LayerKind::Directory, true),
            ("user.overlay.whiteout", LayerKind::Directory, true),
            ("user.overlay.whiteout", LayerKind::Tar, false),
        ] {
            let mut file = member(MemberKind::Regular);
            file.xattrs.push((name.as_bytes().to_vec(), Vec::new()));
            let expected = if removes { &tombstone } else { &Action::Add };
            assert_eq!(&classify(&file, &comps, kind), expected, "{name} {kind:?}");
            // With contents it is a file that happens to carry the xattr.
            file.data.size = 1;
            assert_eq!(classify(&file, &comps, kind), Action::Add, "{name}");
        }
    }

    #[test]
    fn writers_spell_markers_the_way_classify_reads_them() {
        let whiteout = [&b"etc/"[..], &whiteout_name(b"passwd")].concat();
        let comps = components(&whiteout);
        assert_eq!(
            classify(&member(MemberKind::Regular), &comps, LayerKind::Tar),
            Action::Remove {
                dir: &comps[..1],
                name: b"passwd",
                by: RemovalKind::Whiteout,
            }
        );
        let opaque = [&b"d/"[..], OPAQUE_MARKER].concat();
        let comps = components(&opaque);
        assert_eq!(
            classify(&member(MemberKind::Regular), &comps, LayerKind::Tar),
            Action::MakeOpaque { dir: &comps[..1] }
        );
        assert!(is_marker_name(b".wh.x") && is_marker_name(OPAQUE_MARKER));
        assert!(!is_marker_name(b"x.wh.") && !is_marker_name(b".whx"));
        assert!(is_tombstone_device(0, 0) && !is_tombstone_device(0, 1));
    }
}
