//! The names in the directories of a tree under construction.
//!
//! Every name of every directory is one [`Link`] in one array, found
//! through one hash table by directory and name, with its bytes in the
//! arena the frozen tree keeps. An ordered map per directory, with each
//! name in an allocation of its own, took more memory than the nodes
//! themselves at a million entries (maps half full, 32 bytes of heap for a
//! 13-byte name); the order of a listing is only needed once, when the tree
//! is frozen, and is made then by sorting each directory's links.
//!
//! A removed name stays in its directory's chain of links, marked dead
//! ([`Link::node`] is [`NONE`]): unlinking it from a chain would cost a
//! walk of the chain, which an adversarial layer could make quadratic.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::build::NodeId;
use super::{Span, NAME_START};

/// No link, or no node: the end of a chain, a dead link.
pub(super) const NONE: u32 = u32::MAX;

/// One name in a directory: the size of a frozen [`super::DirEntry`],
/// which it becomes in place.
#[derive(Clone, Copy, Debug)]
pub(super) struct Link {
    /// Where the name's bytes start in the arena (low 56 bits) and its
    /// length (high 8 bits: at most `NAME_MAX`), as in a `DirEntry`.
    pub name: u64,
    /// The directory holding the name.
    pub dir: u32,
    /// The node it names; [`NONE`] once removed.
    pub node: u32,
}

/// Every directory's names, and the byte arena of the tree.
pub(super) struct Names {
    /// Names, symlink targets and xattrs, back to back.
    pub bytes: Vec<u8>,
    /// Every link ever made, dead ones included.
    pub links: Vec<Link>,
    /// For each link, its directory's previous link, or [`NONE`].
    pub next: Vec<u32>,
    /// Each directory's last link (by node), or [`NONE`].
    pub heads: Vec<u32>,
    /// The live links, by directory and name: each a [`Slot`].
    table: HashTable<u64>,
    hasher: RandomState,
}

impl Names {
    pub fn new() -> Names {
        Names {
            bytes: Vec::new(),
            links: Vec::new(),
            next: Vec::new(),
            heads: Vec::new(),
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// Room for `more` names without growing the table.
    pub fn reserve(&mut self, more: usize) {
        self.table.reserve(more, slot_hash);
    }

    /// Appends `bytes` to the arena.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Span {
        let span = Span {
            start: self.bytes.len(),
            len: bytes.len(),
        };
        self.bytes.extend_from_slice(bytes);
        span
    }

    /// The arena's bytes at `span` (empty if out of range).
    pub fn span(&self, span: Span) -> &[u8] {
        span.start
            .checked_add(span.len)
            .and_then(|end| self.bytes.get(span.start..end))
            .unwrap_or(&[])
    }

    /// A link's name.
    pub fn name(&self, link: &Link) -> &[u8] {
        name_of(&self.bytes, link)
    }

    /// The node named `name` in directory `dir`.
    pub fn get(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let l = self.find(dir, name)?;
        Some(self.links[l as usize].node as NodeId)
    }

    /// Makes `name` in `dir` name `node`, replacing what it named before.
    pub fn insert(&mut self, dir: NodeId, name: &[u8], node: NodeId) -> Option<NodeId> {
        let node = as_u32(node);
        let dir_u32 = as_u32(dir);
        let hash = self.hasher.hash_one((dir_u32, name));
        if let Some(l) = self.find_hashed(hash, dir_u32, name) {
            let replaced = std::mem::replace(&mut self.links[l as usize].node, node);
            return Some(replaced as NodeId).filter(|_| replaced != NONE);
        }
        if self.heads.len() <= dir {
            self.heads.resize(dir + 1, NONE);
        }
        let id = as_u32(self.links.len());
        let span = self.push_bytes(name);
        self.links.push(Link {
            name: (span.start as u64 & NAME_START) | ((span.len.min(255) as u64) << 56),
            dir: dir_u32,
            node,
        });
        self.next.push(self.heads[dir]);
        self.heads[dir] = id;
        let slot = slot_of(hash, id);
        self.table.insert_unique(slot_hash(&slot), slot, slot_hash);
        None
    }

    /// Removes `name` from `dir`; returns the node it named.
    pub fn remove(&mut self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let l = self.find(dir, name)?;
        Some(self.kill(l))
    }

    /// Removes every name of `dir`; returns them with their nodes, in
    /// byte order of the names.
    pub fn take(&mut self, dir: NodeId) -> Vec<(Box<[u8]>, NodeId)> {
        let Some(head) = self.heads.get_mut(dir) else {
            return Vec::new();
        };
        let mut l = std::mem::replace(head, NONE);
        let mut taken = Vec::new();
        while l != NONE {
            let link = self.links[l as usize];
            if link.node != NONE {
                taken.push((self.name(&link).into(), self.kill(l)));
            }
            l = self.next[l as usize];
        }
        taken.sort_unstable_by(|a: &(Box<[u8]>, NodeId), b| a.0.cmp(&b.0));
        taken
    }

    /// The nodes `dir`'s live links name, in no particular order.
    pub fn child_nodes(&self, dir: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.children(dir)
            .map(|l| self.links[l as usize].node as NodeId)
    }

    /// The live links of `dir`, in no particular order.
    pub fn children(&self, dir: NodeId) -> impl Iterator<Item = u32> + '_ {
        let mut l = self.heads.get(dir).copied().unwrap_or(NONE);
        std::iter::from_fn(move || {
            while l != NONE {
                let at = l;
                let link = &self.links[at as usize];
                l = self.next[at as usize];
                if link.node != NONE {
                    return Some(at);
                }
            }
            None
        })
    }

    /// The arena, the links and the directories' chains (`next` and
    /// `heads`), without the table: what freezing the tree needs.
    pub fn into_parts(self) -> (Vec<u8>, Vec<Link>, Vec<u32>, Vec<u32>) {
        (self.bytes, self.links, self.next, self.heads)
    }

    fn find(&self, dir: NodeId, name: &[u8]) -> Option<u32> {
        let dir = u32::try_from(dir).ok()?;
        self.find_hashed(self.hasher.hash_one((dir, name)), dir, name)
    }

    /// [`Names::find`] with the hash of `(dir, name)` at hand.
    fn find_hashed(&self, hash: u64, dir: u32, name: &[u8]) -> Option<u32> {
        let wanted = slot_of(hash, 0);
        self.table
            .find(slot_hash(&wanted), |&slot| {
                if slot >> 32 != wanted >> 32 {
                    return false;
                }
                let link = &self.links[slot_link(slot)];
                link.dir == dir && self.name(link) == name
            })
            .map(|&slot| slot as u32)
    }

    /// Marks link `l` dead and drops it from the table; returns its node.
    fn kill(&mut self, l: u32) -> NodeId {
        let link = self.links[l as usize];
        let hash = self.hasher.hash_one((link.dir, self.name(&link)));
        let slot = slot_of(hash, l);
        if let Ok(entry) = self.table.find_entry(slot_hash(&slot), |&x| x == slot) {
            entry.remove();
        }
        self.links[l as usize].node = NONE;
        link.node as NodeId
    }
}

/// A link's name in `bytes`, the arena.
pub(super) fn name_of<'a>(bytes: &'a [u8], link: &Link) -> &'a [u8] {
    let start = usize::try_from(link.name & NAME_START).unwrap_or(usize::MAX);
    start
        .checked_add((link.name >> 56) as usize)
        .and_then(|end| bytes.get(start..end))
        .unwrap_or(&[])
}

/// A table slot: the high half of the name's hash above the link number,
/// so that growing the table rehashes from the slot alone (not from the
/// name, a cache miss in the arena for every entry), and most probes that
/// do not match are told from the slot too.
fn slot_of(hash: u64, link: u32) -> u64 {
    (hash & !0xffff_ffff) | u64::from(link)
}

fn slot_link(slot: u64) -> usize {
    (slot & 0xffff_ffff) as usize
}

/// The table's hash of a slot: its 32 bits of name hash, spread over 64
/// (the table places by the low bits and tags by the high ones).
fn slot_hash(slot: &u64) -> u64 {
    (slot >> 32).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Node and link numbers are 32 bits, as `Node::parent` is: a tree of
/// 2^32 nodes does not fit in memory long before.
fn as_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(names: &Names, dir: NodeId) -> Vec<(Vec<u8>, NodeId)> {
        let mut seen: Vec<_> = names
            .children(dir)
            .map(|l| {
                let link = &names.links[l as usize];
                (names.name(link).to_vec(), link.node as NodeId)
            })
            .collect();
        seen.sort();
        seen
    }

    #[test]
    fn a_name_is_found_in_its_own_directory_only_and_replaced_in_place() {
        let mut names = Names::new();
        names.insert(0, b"a", 1);
        names.insert(2, b"a", 3);
        names.insert(0, b"b", 4);
        assert_eq!(names.get(0, b"a"), Some(1));
        assert_eq!(names.get(2, b"a"), Some(3));
        assert_eq!(names.get(2, b"b"), None);
        names.insert(0, b"a", 5);
        assert_eq!(names.get(0, b"a"), Some(5));
        // Replacing makes no second link.
        assert_eq!(names.links.len(), 3);
        assert_eq!(live(&names, 0), [(b"a".to_vec(), 5), (b"b".to_vec(), 4)]);
    }

    #[test]
    fn removed_names_are_gone_and_can_come_back() {
        let mut names = Names::new();
        for (i, name) in [&b"x"[..], b"y", b"z"].into_iter().enumerate() {
            names.insert(0, name, i + 1);
        }
        assert_eq!(names.remove(0, b"y"), Some(2));
        assert_eq!(names.remove(0, b"y"), None);
        assert_eq!(names.get(0, b"y"), None);
        names.insert(0, b"y", 7);
        assert_eq!(names.get(0, b"y"), Some(7));
        assert_eq!(
            live(&names, 0),
            [(b"x".to_vec(), 1), (b"y".to_vec(), 7), (b"z".to_vec(), 3)]
        );
    }

    #[test]
    fn take_empties_a_directory_and_returns_its_names_in_order() {
        let mut names = Names::new();
        for (i, name) in [&b"c"[..], b"a", b"b"].into_iter().enumerate() {
            names.insert(1, name, i + 10);
        }
        names.insert(0, b"keep", 9);
        names.remove(1, b"b");
        let taken = names.take(1);
        let taken: Vec<_> = taken.iter().map(|(n, id)| (&n[..], *id)).collect();
        assert_eq!(taken, [(&b"a"[..], 11), (&b"c"[..], 10)]);
        assert_eq!(names.get(1, b"a"), None);
        assert!(live(&names, 1).is_empty());
        assert_eq!(names.get(0, b"keep"), Some(9));
        assert!(names.take(5).is_empty());
    }

    #[test]
    fn many_names_survive_the_table_growing() {
        let mut names = Names::new();
        for i in 0..10_000usize {
            names.insert(i % 7, format!("n{i}").as_bytes(), i);
        }
        for i in (0..10_000usize).step_by(3) {
            assert_eq!(names.remove(i % 7, format!("n{i}").as_bytes()), Some(i));
        }
        for i in 0..10_000usize {
            let want = (i % 3 != 0).then_some(i);
            assert_eq!(names.get(i % 7, format!("n{i}").as_bytes()), want, "{i}");
        }
    }
}
