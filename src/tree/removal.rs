//! What the whiteouts of a stack removed, as the merge records it when
//! asked ([`super::Tree::build_recording`]): for `layerfs ls --all`, which
//! shows what the merged tree no longer shows, and why.

use super::NodeKind;

/// How a layer member removes what the layers below it provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalKind {
    /// An OCI whiteout file, `DIR/.wh.NAME`: removes `DIR/NAME`.
    Whiteout,
    /// An opaque directory, by an OCI `.wh..wh..opq` marker inside it or
    /// by overlayfs' `trusted.overlay.opaque=y` on the directory itself:
    /// hides every child the layers below gave it.
    Opaque,
    /// overlayfs' native whiteout, a character device 0/0 at the removed
    /// path.
    Tombstone,
}

impl RemovalKind {
    /// The lower-case name used in listings.
    pub fn name(self) -> &'static str {
        match self {
            RemovalKind::Whiteout => "whiteout",
            RemovalKind::Opaque => "opaque",
            RemovalKind::Tombstone => "tombstone",
        }
    }
}

/// One node a removal took out of the tree, with its subtree counted but
/// not listed (a removed `/usr` would otherwise list a whole distribution).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hidden {
    /// Where it was: the removal's directory, normalised, and its name. A
    /// directory reached through a lower layer's symlink is named by the
    /// path the layer used, not the symlink's target.
    pub path: Vec<u8>,
    /// What it was.
    pub kind: NodeKind,
    /// The layer that provided it (0 = bottom).
    pub layer: u32,
    /// How many names its subtree held, itself included: 1 for anything
    /// but a non-empty directory. A hardlinked file counts once per name.
    pub entries: u64,
}

/// One whiteout, opaque marker, opaque directory or tombstone of a layer,
/// and what it hid of the tree the layers below had built. Removals of a
/// layer run before its additions, so what is hidden always comes from a
/// lower layer; a later layer may put paths back under a removed one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The layer holding the member (0 = bottom).
    pub layer: u32,
    /// The member's path, normalised as the tree's paths are
    /// (`etc/.wh.old.conf` for a stored `./etc/.wh.old.conf`;
    /// `data/.wh..wh..opq`, the tombstone's or opaque directory's own path).
    pub path: Vec<u8>,
    /// How it removes.
    pub kind: RemovalKind,
    /// What it hid, in name order for an opaque directory; empty if the
    /// path it names did not exist (or was already gone).
    pub hides: Vec<Hidden>,
}
