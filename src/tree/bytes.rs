//! Where each layer's file data ends up, as the merge sees it when asked
//! (`layerfs inspect --usage`): what a layer stores, and what stored data
//! of its own or of the layers below it makes invisible. Data that no name
//! of the merged tree shows is still shipped and unpacked by every user of
//! the image: that is the waste a layer costs beyond what it adds.
//!
//! A file counts by its node, not its names: a hardlinked file is hidden
//! only when its last name goes, and then once. The layer that removes the
//! last name is charged, whichever way it does it: a whiteout, an opaque
//! directory, a member of any type over it (or over a directory holding
//! it), or the same path stored twice in one layer.

use super::build::NodeId;
use super::names::Names;
use super::{Node, NodeKind};

/// One layer's file data, as stored and as hidden by the merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerBytes {
    /// Bytes of regular files the layer stores (a sparse file counts its
    /// full size, as `tar tv` shows it; a hardlink member stores none).
    pub added: u64,
    /// Regular files the layer stores, whiteouts and opaque markers (also
    /// regular members, in a tar) not counted.
    pub added_files: u64,
    /// Bytes of files, stored by this layer or one below it, that no name
    /// shows once this layer is applied; and of this layer's own regular
    /// members the merge could not place, or that are markers (a whiteout
    /// shows no data, should it carry any).
    pub hidden: u64,
    /// Files counted in `hidden`.
    pub hidden_files: u64,
}

/// The count kept while layers are applied: how many names of the tree
/// reach each file node, and which reached none during the current layer.
#[derive(Default)]
pub(super) struct ByteCount {
    layers: Vec<LayerBytes>,
    /// Per node (index: [`NodeId`]), names in the tree; 0 beyond the end.
    names: Vec<u32>,
    /// Nodes that lost their last name while the current layer applies;
    /// one may get a name back before it ends (a hardlink to a path the
    /// layer's own whiteout removed).
    orphans: Vec<NodeId>,
    /// The layer being applied (0 = bottom).
    layer: u32,
}

impl ByteCount {
    /// Layer `layer` starts: what the one before it left without a name is
    /// hidden for good (nothing can name it again) and charged to it.
    pub fn start(&mut self, layer: u32, nodes: &[Node]) {
        self.settle(nodes);
        self.layer = layer;
    }

    /// A regular member of the current layer, `size` bytes; `file`: one
    /// meant to show as a file (not a whiteout or an opaque marker).
    pub fn stored(&mut self, size: u64, file: bool) {
        let slot = self.slot();
        slot.added = slot.added.saturating_add(size);
        slot.added_files += u64::from(file);
    }

    /// A regular member of the current layer that shows nothing: left out
    /// by the merge, or (not a `file`) a marker.
    pub fn unplaced(&mut self, size: u64, file: bool) {
        let slot = self.slot();
        slot.hidden = slot.hidden.saturating_add(size);
        slot.hidden_files += u64::from(file);
    }

    /// A name now reaches node `id`.
    pub fn named(&mut self, id: NodeId) {
        if self.names.len() <= id {
            self.names.resize(id + 1, 0);
        }
        self.names[id] += 1;
    }

    /// The name of node `id` is gone, and with it the names of everything
    /// below it if it is a directory (a directory has one name, so its
    /// subtree is unreachable from now on).
    pub fn unnamed(&mut self, id: NodeId, nodes: &[Node], links: &Names) {
        let mut todo = vec![id];
        while let Some(id) = todo.pop() {
            match nodes[id].kind() {
                NodeKind::Directory => todo.extend(links.child_nodes(id)),
                NodeKind::File => {
                    if let Some(names) = self.names.get_mut(id) {
                        *names = names.saturating_sub(1);
                        if *names == 0 {
                            self.orphans.push(id);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The counts of the `layers` layers applied, bottom first, once the
    /// last one is.
    pub fn finish(&mut self, layers: usize, nodes: &[Node]) -> Vec<LayerBytes> {
        self.settle(nodes);
        let mut counts = std::mem::take(&mut self.layers);
        counts.resize(layers.max(counts.len()), LayerBytes::default());
        counts
    }

    /// Charges the current layer with the files it left without a name.
    fn settle(&mut self, nodes: &[Node]) {
        let mut orphans = std::mem::take(&mut self.orphans);
        orphans.sort_unstable();
        orphans.dedup();
        for id in orphans {
            if self.names.get(id).copied().unwrap_or(0) != 0 {
                continue;
            }
            if nodes[id].kind() == NodeKind::File {
                let size = nodes[id].size;
                let slot = self.slot();
                slot.hidden = slot.hidden.saturating_add(size);
                slot.hidden_files += 1;
            }
        }
    }

    fn slot(&mut self) -> &mut LayerBytes {
        let layer = self.layer as usize;
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, LayerBytes::default());
        }
        &mut self.layers[layer]
    }
}

#[cfg(test)]
mod tests {
    use crate::tar::{LayerIndex, Member, MemberKind};
    use crate::tree::{BottomLayer, LayerKind, Tree, TreeBuilder};

    fn file(path: &str, size: u64) -> Member {
        let mut m = Member::bare(path.as_bytes(), MemberKind::Regular);
        m.data.size = size;
        m
    }

    fn hardlink(path: &str, target: &str) -> Member {
        let mut m = Member::bare(path.as_bytes(), MemberKind::Hardlink);
        m.link_target = target.as_bytes().to_vec();
        m
    }

    fn dir(path: &str) -> Member {
        Member::bare(path.as_bytes(), MemberKind::Directory)
    }

    /// [`counted`]'s file counts: (added, hidden) per layer.
    fn files(layers: Vec<Vec<Member>>) -> Vec<(u64, u64)> {
        let mut builder = TreeBuilder::new(true);
        for members in layers {
            builder.apply(LayerIndex { members }, LayerKind::Tar);
        }
        let bytes = builder.layer_bytes();
        bytes
            .iter()
            .map(|b| (b.added_files, b.hidden_files))
            .collect()
    }

    /// Merges the layers; checks that what is stored and not hidden is
    /// exactly what the tree shows, and that a bottom layer streamed in
    /// counts as one applied whole; returns (added, hidden) per layer.
    fn counted(layers: Vec<Vec<Member>>) -> Vec<(u64, u64)> {
        let count = layers.len();
        let mut streamed = BottomLayer::new(true, LayerKind::Tar);
        streamed.push(layers[0].clone());
        let mut streamed = streamed.done();
        let mut builder = TreeBuilder::new(true);
        for (n, members) in layers.into_iter().enumerate() {
            if n > 0 {
                streamed.apply(
                    LayerIndex {
                        members: members.clone(),
                    },
                    LayerKind::Tar,
                );
            }
            builder.apply(LayerIndex { members }, LayerKind::Tar);
        }
        let bytes = builder.layer_bytes();
        assert_eq!(streamed.layer_bytes(), bytes, "streamed bottom layer");
        let (tree, _, _): (Tree, _, _) = builder.finish();
        assert_eq!(bytes.len(), count);
        let added: u64 = bytes.iter().map(|b| b.added).sum();
        let hidden: u64 = bytes.iter().map(|b| b.hidden).sum();
        assert_eq!(added - hidden, tree.file_bytes(), "{bytes:?}");
        bytes.iter().map(|b| (b.added, b.hidden)).collect()
    }

    #[test]
    fn an_overwritten_file_is_charged_to_the_layer_over_it() {
        let got = counted(vec![
            vec![file("a", 10), file("b", 3)],
            vec![file("a", 20)],
            vec![file("a", 1)],
        ]);
        assert_eq!(got, [(13, 0), (20, 10), (1, 20)]);
    }

    #[test]
    fn a_whiteout_or_opaque_directory_hides_the_whole_subtree() {
        let got = counted(vec![
            vec![dir("d"), file("d/x", 5), file("d/e/y", 7), file("o/z", 11)],
            vec![
                file(".wh.d", 0),
                file("o/.wh..wh..opq", 0),
                file("o/new", 2),
            ],
        ]);
        assert_eq!(got, [(23, 0), (2, 23)]);
    }

    #[test]
    fn markers_are_not_files_but_a_file_left_out_is() {
        let got = files(vec![
            vec![dir("d"), file("d/x", 5), file("d/y", 7), file("f", 1)],
            vec![file(".wh.d", 0), file("f/x", 2), file("g/.wh..wh..opq", 0)],
        ]);
        assert_eq!(got, [(3, 0), (1, 3)]);
    }

    #[test]
    fn a_hardlinked_file_is_hidden_once_with_its_last_name() {
        let got = counted(vec![
            vec![file("a", 10), hardlink("b", "a"), hardlink("c", "a")],
            vec![file(".wh.a", 0), file("b", 4)],
            vec![file(".wh.c", 0)],
        ]);
        assert_eq!(got, [(10, 0), (4, 0), (0, 10)]);
    }

    #[test]
    fn a_hardlink_to_what_its_own_layer_removed_keeps_the_data() {
        let got = counted(vec![
            vec![file("a", 10)],
            vec![file(".wh.a", 0), hardlink("b", "a")],
        ]);
        assert_eq!(got, [(10, 0), (0, 0)]);
    }

    #[test]
    fn a_path_stored_twice_in_one_layer_and_members_left_out_are_waste() {
        let got = counted(vec![
            vec![file("a", 10), file("a", 6), file("f", 1)],
            vec![file("f/under-a-file", 8), dir("f")],
        ]);
        // Layer 2's file cannot be placed under the file `f`, which its
        // directory then replaces.
        assert_eq!(got, [(17, 10), (8, 9)]);
    }
}
