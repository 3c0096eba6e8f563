//! `layerfs create`: a whole directory as one layer.
//!
//! Everything the scan found is written, the root as `./`. Owners are
//! numeric only (no user or group names), so the layer does not depend on
//! the password database of the machine that wrote it; with a clamp, no
//! time is later than it (as `tar --clamp-mtime`), so rebuilding a tree
//! from the same sources gives the same bytes.

use super::emit::Selection;
use crate::dir::Scan;

/// A selection of every entry of `scan`: the whole directory as a layer.
pub fn everything(scan: &Scan) -> Selection {
    let mut selection = Selection::none(scan.entries().len());
    selection.write.fill(true);
    selection
}
