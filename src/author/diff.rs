//! `layerfs diff`: the layer that, stacked on a stack's layers, turns their
//! merged tree into a directory.
//!
//! The tree and the directory are walked together, directory pairs by name:
//!
//! - a name only in the directory is written with its whole subtree;
//! - a name only in the tree is whited out (`.wh.NAME`);
//! - a name in both with a different kind is written anew (with its whole
//!   subtree for a directory): a layer's entry replaces whatever was there;
//! - two directories: the directory entry is written if its own attributes
//!   differ, and the pair is compared in turn (a directory entry over a
//!   directory keeps what the lower one holds);
//! - two entries of another kind are written if any attribute, the size,
//!   the link target or the device differs; files of equal size and
//!   attributes are compared byte by byte.
//!
//! A directory in both from which nothing of the tree survives and
//! something is deleted gets one opaque marker instead of a whiteout per
//! name. Hardlinks: the layer never links to a lower file, so if any name
//! of a multiply-linked file is written, or the names a tree node has are
//! not exactly the names the directory's inode has, all its names are
//! written (one file, then hardlinks). Finally every directory holding
//! something written is written too (with the directory's attributes), as
//! `tar` and OCI tools expect; the root only if its own attributes changed.

use std::collections::HashMap;
use std::io::Read;

use super::emit::Selection;
use super::AuthorError;
use crate::dir::{DirError, Scan, ScanEntry};
use crate::stack::{Stack, StackError};
use crate::tree::{Ino, Node, NodeKind, Tree, ROOT_INO};

/// Bytes compared per step.
const COMPARE_BUFFER: usize = 1 << 20;

/// What the walk found in one directory present in both.
struct DirPair {
    /// The directory's scan index.
    dir: usize,
    /// Names only the tree has.
    deleted: Vec<Vec<u8>>,
    /// Entries of the tree that stay as they are, as far as the walk can
    /// tell without reading contents.
    kept: usize,
    /// Files equal in everything but (maybe) their bytes: scan index and
    /// tree inode.
    same_size: Vec<(usize, Ino)>,
}

/// Chooses what the layer holds. `progress` is told the bytes compared so
/// far and the total to compare.
pub fn plan_diff(
    stack: &Stack,
    scan: &Scan,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Selection, AuthorError> {
    let tree = stack.tree();
    let entries = scan.entries();
    let mut selection = Selection::none(entries.len());
    // The tree inode each unchanged non-directory stands for.
    let mut kept_as: HashMap<usize, Ino> = HashMap::new();
    let mut pairs = Vec::new();
    if let (Some(root), Some(entry)) = (tree.node(ROOT_INO), entries.first()) {
        if !same_attributes(tree, ROOT_INO, root, entry) {
            selection.choose(0);
        }
    }
    let mut todo = vec![(ROOT_INO, 0)];
    while let Some((ino, dir)) = todo.pop() {
        let pair = walk_pair(
            tree,
            scan,
            ino,
            dir,
            &mut selection,
            &mut kept_as,
            &mut todo,
        );
        pairs.push(pair);
    }
    compare_contents(
        stack,
        scan,
        &mut pairs,
        &mut selection,
        &mut kept_as,
        progress,
    )?;
    for pair in pairs {
        if pair.deleted.is_empty() {
            continue;
        }
        if pair.kept == 0 {
            if let Some(slot) = selection.opaque.get_mut(pair.dir) {
                *slot = true;
            }
        } else {
            selection.whiteouts.insert(pair.dir, pair.deleted);
        }
    }
    regroup_hardlinks(tree, scan, &kept_as, &mut selection);
    choose_parents(scan, &mut selection);
    Ok(selection)
}

/// Compares the entries of tree directory `ino` with scan directory `dir`.
fn walk_pair(
    tree: &Tree,
    scan: &Scan,
    ino: Ino,
    dir: usize,
    selection: &mut Selection,
    kept_as: &mut HashMap<usize, Ino>,
    todo: &mut Vec<(Ino, usize)>,
) -> DirPair {
    let entries = scan.entries();
    let mut pair = DirPair {
        dir,
        deleted: Vec::new(),
        kept: 0,
        same_size: Vec::new(),
    };
    let mut lower = tree.entries(ino).iter().peekable();
    let mut upper = scan.children(dir).peekable();
    loop {
        let order = match (lower.peek(), upper.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(l), Some(&u)) => tree.name(l).cmp(entry_name(entries, u)),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some(l) = lower.next() {
                    pair.deleted.push(tree.name(l).to_vec());
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some(u) = upper.next() {
                    choose_subtree(scan, u, selection);
                }
            }
            std::cmp::Ordering::Equal => {
                let (Some(l), Some(u)) = (lower.next(), upper.next()) else {
                    break;
                };
                let (Some(node), Some(entry)) = (tree.node(l.ino), entries.get(u)) else {
                    continue;
                };
                if node.kind().member_kind() != entry.kind {
                    choose_subtree(scan, u, selection);
                    continue;
                }
                if node.kind() == NodeKind::Directory {
                    pair.kept += 1;
                    if !same_attributes(tree, l.ino, node, entry) {
                        selection.choose(u);
                    }
                    todo.push((l.ino, u));
                } else if !same_non_dir(tree, l.ino, node, entry) {
                    selection.choose(u);
                } else if node.kind() == NodeKind::File && node.size > 0 {
                    pair.same_size.push((u, l.ino));
                } else {
                    pair.kept += 1;
                    kept_as.insert(u, l.ino);
                }
            }
        }
    }
    pair
}

fn entry_name(entries: &[ScanEntry], index: usize) -> &[u8] {
    entries.get(index).map_or(&[][..], ScanEntry::name)
}

/// Chooses entry `index` and everything below it.
fn choose_subtree(scan: &Scan, index: usize, selection: &mut Selection) {
    let end = scan.entries().get(index).map_or(index, |e| e.end);
    for i in index..end.max(index + 1) {
        selection.choose(i);
    }
}

/// Whether the attributes a directory entry sets are the same.
fn same_attributes(tree: &Tree, ino: Ino, node: &Node, entry: &ScanEntry) -> bool {
    let mut xattrs: Vec<(&[u8], &[u8])> = tree.xattrs(ino).collect();
    xattrs.sort_unstable();
    node.kind().member_kind() == entry.kind
        && node.mode == entry.mode
        && node.uid == entry.uid
        && node.gid == entry.gid
        && (node.mtime, node.mtime_nsec) == (entry.mtime, entry.mtime_nsec)
        && xattrs.iter().copied().eq(entry
            .xattrs
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// Whether a non-directory is the same in everything but its bytes.
fn same_non_dir(tree: &Tree, ino: Ino, node: &Node, entry: &ScanEntry) -> bool {
    let same_payload = match node.kind() {
        NodeKind::File => node.size == entry.size,
        NodeKind::Symlink => tree.symlink_target(ino) == Some(entry.target.as_slice()),
        NodeKind::CharDevice | NodeKind::BlockDevice => node.rdev() == entry.rdev,
        NodeKind::Fifo | NodeKind::Directory => true,
    };
    same_payload && same_attributes(tree, ino, node, entry)
}

/// Reads the files of equal size and attributes on both sides; those that
/// differ are chosen, the others kept.
fn compare_contents(
    stack: &Stack,
    scan: &Scan,
    pairs: &mut [DirPair],
    selection: &mut Selection,
    kept_as: &mut HashMap<usize, Ino>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), AuthorError> {
    let size = |index: usize| scan.entries().get(index).map_or(0, |e| e.size);
    let total = pairs
        .iter()
        .flat_map(|p| &p.same_size)
        .map(|&(index, _)| size(index))
        .sum();
    let mut compare = Comparer {
        stack,
        scan,
        lower: vec![0; COMPARE_BUFFER],
        upper: vec![0; COMPARE_BUFFER],
        done: 0,
        total,
        progress,
        known: HashMap::new(),
    };
    for pair in pairs {
        for (index, ino) in std::mem::take(&mut pair.same_size) {
            if compare.same(index, ino)? {
                pair.kept += 1;
                kept_as.insert(index, ino);
            } else {
                selection.choose(index);
            }
        }
    }
    Ok(())
}

/// Stream comparison of a tree file with a directory file.
struct Comparer<'a> {
    stack: &'a Stack,
    scan: &'a Scan,
    lower: Vec<u8>,
    upper: Vec<u8>,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
    /// Results for hardlinked inodes already compared.
    known: HashMap<(crate::dir::FileId, Ino), bool>,
}

impl Comparer<'_> {
    fn same(&mut self, index: usize, ino: Ino) -> Result<bool, AuthorError> {
        let Some(entry) = self.scan.entries().get(index) else {
            return Ok(false);
        };
        if let Some(&same) = self.known.get(&(entry.id, ino)) {
            return Ok(same);
        }
        let mut file = self.scan.open_file(index)?;
        let mut pos = 0;
        let mut same = true;
        while same && pos < entry.size {
            let n = self
                .stack
                .read(ino, pos, &mut self.lower)
                .map_err(|e| lower_error(self.stack, &entry.path, ino, e))?;
            if n == 0 {
                let short = StackError::ShortFile {
                    expected: entry.size,
                    got: pos,
                };
                return Err(lower_error(self.stack, &entry.path, ino, short));
            }
            let (lower, upper) = (
                self.lower.get(..n).unwrap_or_default(),
                self.upper.get_mut(..n).unwrap_or_default(),
            );
            file.read_exact(upper).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => DirError::Changed {
                    path: self.scan.disk_path(index),
                },
                _ => DirError::Io {
                    path: self.scan.disk_path(index),
                    source: e,
                },
            })?;
            same = lower == upper;
            pos += n as u64;
            self.done += n as u64;
            (self.progress)(self.done, self.total);
        }
        if entry.nlink > 1 {
            self.known.insert((entry.id, ino), same);
        }
        Ok(same)
    }
}

fn lower_error(stack: &Stack, path: &[u8], ino: Ino, source: StackError) -> AuthorError {
    let layer = stack.tree().node(ino).map_or(0, |n| n.layer());
    let layer_path = stack
        .layers()
        .get(layer as usize)
        .map(|l| l.path().to_path_buf())
        .unwrap_or_default();
    AuthorError::Lower {
        path: path.to_vec(),
        layer_path,
        layer: layer + 1,
        source: Box::new(source),
    }
}

/// Chooses every name of a kept entry whose tree node has other names than
/// its inode in the directory, and then every name of an inode of which
/// any name is chosen: the layer can only state hardlinks among its own
/// entries.
fn regroup_hardlinks(
    tree: &Tree,
    scan: &Scan,
    kept_as: &HashMap<usize, Ino>,
    selection: &mut Selection,
) {
    let mut tree_names: HashMap<Ino, Vec<Vec<u8>>> = HashMap::new();
    let _ = tree.walk(|path, ino, node| {
        if node.kind() != NodeKind::Directory && node.nlink > 1 {
            tree_names.entry(ino).or_default().push(path.to_vec());
        }
        Ok::<(), ()>(())
    });
    let groups = scan.hardlink_groups();
    let entries = scan.entries();
    let path = |i: usize| entries.get(i).map_or(&[][..], |e| e.path.as_slice());
    for (&index, ino) in kept_as {
        let Some(entry) = entries.get(index) else {
            continue;
        };
        let mut dir_names: Vec<&[u8]> = match groups.get(&entry.id) {
            Some(names) => names.iter().map(|&i| path(i)).collect(),
            None => vec![entry.path.as_slice()],
        };
        let mut lower_names: Vec<&[u8]> = match tree_names.get(ino) {
            Some(names) => names.iter().map(Vec::as_slice).collect(),
            None => vec![entry.path.as_slice()],
        };
        dir_names.sort_unstable();
        lower_names.sort_unstable();
        if dir_names != lower_names {
            selection.choose(index);
        }
    }
    for names in groups.values() {
        if names.iter().any(|&i| selection.writes(i)) {
            names.iter().for_each(|&i| selection.choose(i));
        }
    }
}

/// Chooses the directory of everything chosen, whited out or made opaque,
/// up to (not including) the root.
fn choose_parents(scan: &Scan, selection: &mut Selection) {
    let entries = scan.entries();
    for index in (1..entries.len()).rev() {
        let needed = selection.writes(index)
            || selection.opaque.get(index).copied().unwrap_or(false)
            || selection.whiteouts.contains_key(&index);
        let parent = entries.get(index).map_or(0, |e| e.parent);
        if needed && parent != 0 {
            selection.choose(parent);
        }
    }
}
