//! `layerfs inspect --usage`: where an image's bytes go. Per layer, the
//! file data it ships and the data (its own or below) it makes invisible,
//! which every user still downloads and unpacks: the image's waste. Then
//! the largest directories and files of the merged tree, which is what is
//! left to trim.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::convert::Infallible;
use std::io::{self, Write};

use crate::digest::Digest;
use crate::escape::Escaped;
use crate::list::json_string;
use crate::stack::Stack;
use crate::tree::{Ino, NodeKind, Tree, ROOT_INO};

/// The default of `--top`: how many directories and files are listed.
pub const DEFAULT_TOP: usize = 10;

/// One layer's part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerUsage {
    /// 1 = bottom.
    pub layer: usize,
    /// The digest the image gives, if any.
    pub digest: Option<Digest>,
    /// The layer's file (a registry blob's name), for layers without one.
    pub path: String,
    /// Bytes of regular files it stores, and how many.
    pub added: (u64, u64),
    /// Bytes of files of this layer or below that no longer show once it
    /// is applied (overwritten, whited out, under an opaque directory, or
    /// its own members the merge left out), and how many files.
    pub wasted: (u64, u64),
}

/// A directory or file of the merged tree, by size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Largest {
    /// Its path from the root.
    pub path: Vec<u8>,
    /// A file's size, a directory's bytes of distinct files below it.
    pub bytes: u64,
    /// The layer a file's data comes from (1 = bottom); 0 for a directory.
    pub layer: usize,
}

/// The whole answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bottom first.
    pub layers: Vec<LayerUsage>,
    /// Bytes of file data the merged tree shows, each file once.
    pub visible: u64,
    /// Largest first, then by path.
    pub directories: Vec<Largest>,
    /// Largest first, then by path; a hardlinked file once, by the first
    /// of its names in listing order (as `layerfs ls` lists them).
    pub files: Vec<Largest>,
}

impl Usage {
    /// Bytes of file data the layers store.
    pub fn added(&self) -> u64 {
        self.layers.iter().map(|l| l.added.0).sum()
    }

    /// Bytes stored and not shown.
    pub fn wasted(&self) -> u64 {
        self.layers.iter().map(|l| l.wasted.0).sum()
    }
}

/// The usage of `stack`, which must have been opened with removals
/// recorded (that is when the merge counts each layer's bytes); `digests`
/// names its layers, bottom first, where known; `top` directories and
/// files are listed.
pub fn usage(stack: &Stack, digests: &[Option<Digest>], top: usize) -> Usage {
    let layers = stack
        .layers()
        .iter()
        .enumerate()
        .map(|(n, layer)| {
            let bytes = stack.layer_bytes().get(n).copied().unwrap_or_default();
            LayerUsage {
                layer: n + 1,
                digest: digests.get(n).cloned().flatten(),
                path: layer.path().display().to_string(),
                added: (bytes.added, bytes.added_files),
                wasted: (bytes.hidden, bytes.hidden_files),
            }
        })
        .collect();
    let tree = stack.tree();
    let totals = directory_totals(tree);
    let mut directories = Top::new(top);
    let mut files = Top::new(top);
    let mut seen_links: HashSet<Ino> = HashSet::new();
    let walked: Result<(), Infallible> = tree.walk_below(ROOT_INO, |path, ino, node| {
        match node.kind() {
            NodeKind::Directory => {
                let bytes = totals.get(&ino).copied().unwrap_or(0);
                directories.offer(bytes, path, 0);
            }
            NodeKind::File if node.nlink <= 1 || seen_links.insert(ino) => {
                files.offer(node.size, path, node.layer() as usize + 1);
            }
            _ => {}
        }
        Ok(())
    });
    let Ok(()) = walked;
    Usage {
        layers,
        visible: tree.file_bytes(),
        directories: directories.into_sorted(),
        files: files.into_sorted(),
    }
}

/// Bytes of the files below each directory, like `du` without blocks: a
/// hardlinked file counts once in each directory that holds one of its
/// names, however many it holds.
fn directory_totals(tree: &Tree) -> HashMap<Ino, u64> {
    let mut totals: HashMap<Ino, u64> = HashMap::new();
    // The directories holding the name being visited, root first: the
    // walk is depth first, so a path of N slashes is N + 1 deep.
    let mut holders: Vec<Ino> = vec![ROOT_INO];
    let mut linked: HashMap<Ino, Vec<Ino>> = HashMap::new();
    let walked: Result<(), Infallible> = tree.walk_below(ROOT_INO, |path, ino, node| {
        let depth = path.iter().filter(|&&b| b == b'/').count();
        holders.truncate(depth + 1);
        match node.kind() {
            NodeKind::Directory => holders.push(ino),
            NodeKind::File if node.nlink > 1 => {
                let credited = linked.entry(ino).or_default();
                for &dir in &holders {
                    if !credited.contains(&dir) {
                        credited.push(dir);
                        *totals.entry(dir).or_default() += node.size;
                    }
                }
            }
            NodeKind::File => {
                for &dir in &holders {
                    *totals.entry(dir).or_default() += node.size;
                }
            }
            _ => {}
        }
        Ok(())
    });
    let Ok(()) = walked;
    totals
}

/// What [`Top`] keeps: bytes, path (the smaller path ranks higher among
/// equal sizes) and layer.
type Ranked = (u64, Reverse<Vec<u8>>, usize);

/// The `n` largest of what is offered, ties broken by path, without
/// keeping (or copying the path of) anything smaller.
struct Top {
    n: usize,
    /// The smallest kept on top.
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl Top {
    fn new(n: usize) -> Top {
        Top {
            n,
            heap: BinaryHeap::new(),
        }
    }

    fn offer(&mut self, bytes: u64, path: &[u8], layer: usize) {
        if self.n == 0 {
            return;
        }
        if self.heap.len() == self.n {
            let Some(Reverse((least, Reverse(least_path), _))) = self.heap.peek() else {
                return;
            };
            if (bytes, Reverse(path)) <= (*least, Reverse(least_path.as_slice())) {
                return;
            }
            self.heap.pop();
        }
        self.heap
            .push(Reverse((bytes, Reverse(path.to_vec()), layer)));
    }

    fn into_sorted(self) -> Vec<Largest> {
        // Ascending order of `Reverse` is largest first, then by path.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse((bytes, Reverse(path), layer))| Largest { path, bytes, layer })
            .collect()
    }
}

/// Writes the usage for a terminal: the layers' table, the totals, then
/// the largest directories and files, each a table with its heading.
pub fn write_text(usage: &Usage, out: &mut dyn Write) -> io::Result<()> {
    let rows: Vec<[String; 6]> = usage
        .layers
        .iter()
        .map(|l| {
            [
                l.layer.to_string(),
                l.added.0.to_string(),
                l.added.1.to_string(),
                l.wasted.0.to_string(),
                l.wasted.1.to_string(),
                l.digest
                    .as_ref()
                    .map_or_else(|| Escaped(l.path.as_bytes()).to_string(), Digest::to_string),
            ]
        })
        .collect();
    write_table(
        [
            "LAYER",
            "ADDED",
            "FILES",
            "WASTED",
            "FILES",
            "DIGEST OR FILE",
        ],
        &rows,
        out,
    )?;
    let added = usage.added();
    let wasted = usage.wasted();
    writeln!(
        out,
        "{added} bytes of files in {}; {} bytes shown by the merged tree, {wasted} bytes wasted ({})",
        crate::plural::counted(usage.layers.len(), "layer", "layers"),
        usage.visible,
        Percent(wasted, added),
    )?;
    if !usage.directories.is_empty() {
        writeln!(out)?;
        let rows: Vec<[String; 2]> = usage
            .directories
            .iter()
            .map(|l| [l.bytes.to_string(), Escaped(&l.path).to_string()])
            .collect();
        write_table(["BYTES", "LARGEST DIRECTORIES"], &rows, out)?;
    }
    if !usage.files.is_empty() {
        writeln!(out)?;
        let rows: Vec<[String; 3]> = usage
            .files
            .iter()
            .map(|l| {
                [
                    l.bytes.to_string(),
                    l.layer.to_string(),
                    Escaped(&l.path).to_string(),
                ]
            })
            .collect();
        write_table(["BYTES", "LAYER", "LARGEST FILES"], &rows, out)?;
    }
    Ok(())
}

/// `part` of `whole` as a percentage with one decimal, `0.0%` of nothing.
struct Percent(u64, u64);

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Percent(part, whole) = *self;
        let tenths = if whole == 0 {
            0
        } else {
            (u128::from(part) * 1000 + u128::from(whole) / 2) / u128::from(whole)
        };
        write!(f, "{}.{}%", tenths / 10, tenths % 10)
    }
}

/// A table with columns two spaces apart, each as wide as its widest cell,
/// all right-aligned but the last, which is not padded.
fn write_table<const N: usize>(
    headings: [&str; N],
    rows: &[[String; N]],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut widths = headings.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let headings = headings.map(str::to_string);
    for row in std::iter::once(&headings).chain(rows) {
        for (i, (cell, &width)) in row.iter().zip(&widths).enumerate() {
            let separator = if i == 0 { "" } else { "  " };
            if i + 1 == N {
                writeln!(out, "{separator}{cell}")?;
            } else {
                write!(out, "{separator}{cell:>width$}")?;
            }
        }
    }
    Ok(())
}

/// Writes the usage as JSON lines: one object per layer (`"type":"layer"`),
/// one for the totals, then one per directory and file listed.
pub fn write_json(usage: &Usage, out: &mut dyn Write) -> io::Result<()> {
    for l in &usage.layers {
        write!(
            out,
            "{{\"type\":\"layer\",\"layer\":{},\"digest\":",
            l.layer
        )?;
        match &l.digest {
            Some(digest) => json_string(digest.as_str().as_bytes(), out)?,
            None => out.write_all(b"null")?,
        }
        out.write_all(b",\"path\":")?;
        json_string(l.path.as_bytes(), out)?;
        writeln!(
            out,
            ",\"added_bytes\":{},\"added_files\":{},\"wasted_bytes\":{},\"wasted_files\":{}}}",
            l.added.0, l.added.1, l.wasted.0, l.wasted.1
        )?;
    }
    writeln!(
        out,
        "{{\"type\":\"total\",\"layers\":{},\"added_bytes\":{},\"visible_bytes\":{},\"wasted_bytes\":{}}}",
        usage.layers.len(),
        usage.added(),
        usage.visible,
        usage.wasted()
    )?;
    for (kind, list) in [("directory", &usage.directories), ("file", &usage.files)] {
        for l in list {
            write!(out, "{{\"type\":\"{kind}\",\"path\":")?;
            json_string(&l.path, out)?;
            write!(out, ",\"bytes\":{}", l.bytes)?;
            if l.layer != 0 {
                write!(out, ",\"layer\":{}", l.layer)?;
            }
            out.write_all(b"}\n")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_keeps_the_largest_ties_by_path_without_the_rest() {
        let mut top = Top::new(3);
        for (bytes, path) in [(5, "e"), (9, "b"), (5, "a"), (1, "z"), (9, "a"), (5, "c")] {
            top.offer(bytes, path.as_bytes(), 1);
        }
        assert_eq!(top.heap.len(), 3);
        let sorted: Vec<(u64, Vec<u8>)> = top
            .into_sorted()
            .into_iter()
            .map(|l| (l.bytes, l.path))
            .collect();
        assert_eq!(
            sorted,
            [(9, b"a".to_vec()), (9, b"b".to_vec()), (5, b"a".to_vec())]
        );
        let mut none = Top::new(0);
        none.offer(1, b"x", 1);
        assert!(none.into_sorted().is_empty());
    }

    #[test]
    fn percentages_round_to_a_tenth_and_nothing_is_none() {
        assert_eq!(Percent(0, 0).to_string(), "0.0%");
        assert_eq!(Percent(1, 3).to_string(), "33.3%");
        assert_eq!(Percent(2, 3).to_string(), "66.7%");
        assert_eq!(Percent(5, 5).to_string(), "100.0%");
        assert_eq!(Percent(u64::MAX, u64::MAX).to_string(), "100.0%");
    }
}
