//! `layerfs compare`: the difference of two merged trees, path by path.
//!
//! Both trees are walked together, directory by directory, paths in byte
//! order (as `sort` orders them: `a.txt` before `a/b`), so the comparison
//! costs one pass over the two indexes and no memory beyond the open
//! directories and the subdirectories each has yet to enter. A file's
//! bytes are read only when its size is the same on both sides and it does
//! not come from the same member of the same layer file on both: two
//! images sharing a layer read nothing of it, and a changed file is read
//! only up to its first differing chunk.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::escape::Escaped;
use crate::list::json_string;
use crate::stack::{LayerSpec, Stack, StackError};
use crate::tree::{DirEntry, Ino, Node, NodeKind, Tree, ROOT_INO};

/// Extended attributes that belong to the overlay filesystem holding a
/// layer, not to the file, and so are no difference between two images.
const OVERLAY_XATTRS: &[u8] = b"trusted.overlay.";

/// How much of each side's file is read and compared at a time.
const CHUNK: usize = 64 * 1024;

/// Why a comparison stopped.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A file's bytes could not be read from its layer.
    #[error("{}: reading {}: {source}", layer.display(), Escaped(path))]
    Read {
        /// The layer file holding the bytes.
        layer: PathBuf,
        /// The file in the merged tree.
        path: Vec<u8>,
        /// What failed (boxed: errors travel up every call of the walk).
        source: Box<StackError>,
    },
    /// The report could not be written.
    #[error("writing the comparison: {0}")]
    Output(#[from] io::Error),
}

/// How one path differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Only in the second tree.
    Added,
    /// Only in the first tree.
    Deleted,
    /// A regular file whose contents differ.
    Modified,
    /// The same contents (or target, or device) with other metadata.
    Metadata,
    /// Another kind of file under the same name.
    Type,
}

impl Status {
    /// Every status, in the order a summary lists them.
    pub const ALL: [Status; 5] = [
        Status::Added,
        Status::Deleted,
        Status::Modified,
        Status::Metadata,
        Status::Type,
    ];

    /// The one-letter code of the listing.
    pub fn code(self) -> char {
        match self {
            Status::Added => 'A',
            Status::Deleted => 'D',
            Status::Modified => 'M',
            Status::Metadata => 'm',
            Status::Type => 'T',
        }
    }

    fn index(self) -> usize {
        Status::ALL.iter().position(|&s| s == self).unwrap_or(0)
    }
}

/// One line of the comparison.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    /// How the path differs.
    pub status: Status,
    /// The path from the root (`etc/passwd`).
    pub path: &'a [u8],
    /// Its size in the first tree, if there.
    pub old_size: Option<u64>,
    /// Its size in the second tree, if there.
    pub new_size: Option<u64>,
}

/// What counts as a difference, and how far it is reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompareOptions {
    /// Modification times count as metadata (else they are ignored: every
    /// rebuild of an image touches them).
    pub times: bool,
    /// An added or removed directory (or one that became or stopped being
    /// one) lists its whole subtree, not just itself.
    pub recursive: bool,
}

/// What a comparison found, and what it cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether any path differs.
    pub changed: bool,
    /// Bytes of file contents read, both sides together: the cost that
    /// shared layers and size checks exist to avoid (logged with `-v`).
    pub bytes_read: u64,
}

/// One side of a comparison: a stack, and the layers it was opened from
/// (which say when two layers are the same bytes).
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    /// The layers and their merged tree.
    pub stack: &'a Stack,
    /// What each layer of `stack` was opened from, bottom first.
    pub specs: &'a [LayerSpec],
}

/// Whether two layers are the same stream of bytes, so that a member at
/// the same offset of both is the same file: the same blob digest (of an
/// image's layer, or given with `--digest`), or else the same file (and
/// range of it), directory or registry blob.
fn same_stream(a: &LayerSpec, b: &LayerSpec) -> bool {
    let digest = |spec: &LayerSpec| {
        spec.remote
            .as_ref()
            .map(|remote| remote.digest.clone())
            .or_else(|| spec.verify.clone())
    };
    if let (Some(a), Some(b)) = (digest(a), digest(b)) {
        return a == b;
    }
    a.path == b.path && a.range == b.range && a.directory == b.directory && a.remote == b.remote
}

/// Walks `old` and `new` together and passes each difference to `emit`,
/// in byte order of their paths.
pub fn compare(
    old: Side<'_>,
    new: Side<'_>,
    options: CompareOptions,
    emit: &mut dyn FnMut(&Change<'_>) -> io::Result<()>,
) -> Result<Outcome, CompareError> {
    let mut walk = Walk {
        old: old.stack,
        new: new.stack,
        old_specs: old.specs,
        new_specs: new.specs,
        options,
        emit,
        path: Vec::new(),
        outcome: Outcome::default(),
    };
    walk.directory(ROOT_INO, ROOT_INO)?;
    Ok(walk.outcome)
}

/// The state of one comparison.
struct Walk<'a, 'e> {
    old: &'a Stack,
    new: &'a Stack,
    old_specs: &'a [LayerSpec],
    new_specs: &'a [LayerSpec],
    options: CompareOptions,
    emit: &'e mut dyn FnMut(&Change<'_>) -> io::Result<()>,
    /// The path of the entry being compared.
    path: Vec<u8>,
    outcome: Outcome,
}

/// Which tree a lone subtree is in.
#[derive(Clone, Copy)]
enum Which {
    Old,
    New,
}

/// A directory being compared: present on one side or both (one side
/// only below a directory added, deleted or retyped, with `--recursive`).
struct Open {
    old: Option<Ino>,
    new: Option<Ino>,
    /// The length of `Walk::path` that names it.
    prefix: usize,
    /// The next entry of each side.
    next: (usize, usize),
    /// Subdirectories met and not yet entered, by name and a `/`: a path
    /// below `a` sorts after a sibling `a.txt` ('.' < '/'), so each is
    /// entered only once the siblings sorting before its key are done.
    later: BTreeMap<Vec<u8>, Below>,
}

/// A directory to descend into, on the old side, the new, or both.
type Below = (Option<Ino>, Option<Ino>);

impl Open {
    fn new(old: Option<Ino>, new: Option<Ino>, prefix: usize) -> Open {
        Open {
            old,
            new,
            prefix,
            next: (0, 0),
            later: BTreeMap::new(),
        }
    }
}

impl Walk<'_, '_> {
    /// Compares the entries of two directories present on both sides, and
    /// below them, in byte order of the whole path. Directories still open
    /// are kept on an explicit stack, so a deep tree cannot overflow the
    /// thread's.
    fn directory(&mut self, old_root: Ino, new_root: Ino) -> Result<(), CompareError> {
        let mut open = vec![Open::new(Some(old_root), Some(new_root), 0)];
        while let Some(top) = open.last_mut() {
            let (old_tree, new_tree) = (self.old.tree(), self.new.tree());
            let old_entry = entries(old_tree, top.old).get(top.next.0);
            let new_entry = entries(new_tree, top.new).get(top.next.1);
            let (old_ino, new_ino, name) = match (old_entry, new_entry) {
                (None, None) => (None, None, None),
                (Some(o), None) => (Some(o.ino), None, Some(old_tree.name(o))),
                (None, Some(n)) => (None, Some(n.ino), Some(new_tree.name(n))),
                (Some(o), Some(n)) => {
                    let (old_name, new_name) = (old_tree.name(o), new_tree.name(n));
                    match old_name.cmp(new_name) {
                        std::cmp::Ordering::Less => (Some(o.ino), None, Some(old_name)),
                        std::cmp::Ordering::Greater => (None, Some(n.ino), Some(new_name)),
                        std::cmp::Ordering::Equal => (Some(o.ino), Some(n.ino), Some(old_name)),
                    }
                }
            };
            self.path.truncate(top.prefix);
            if let Some(first) = top.later.first_entry() {
                if name.is_none_or(|name| first.key().as_slice() < name) {
                    let (key, (old_dir, new_dir)) = first.remove_entry();
                    if top.prefix > 0 {
                        self.path.push(b'/');
                    }
                    self.path.extend_from_slice(&key[..key.len() - 1]);
                    open.push(Open::new(old_dir, new_dir, self.path.len()));
                    continue;
                }
            }
            let Some(name) = name else {
                open.pop();
                continue;
            };
            top.next.0 += usize::from(old_ino.is_some());
            top.next.1 += usize::from(new_ino.is_some());
            if top.prefix > 0 {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(name);
            let below = match (old_ino, new_ino) {
                (Some(o), None) => self.lone(Which::Old, o)?,
                (None, Some(n)) => self.lone(Which::New, n)?,
                (Some(o), Some(n)) => self.pair(o, n)?,
                (None, None) => None,
            };
            if let (Some(dirs), Some(top)) = (below, open.last_mut()) {
                top.later.insert([name, b"/"].concat(), dirs);
            }
        }
        Ok(())
    }

    /// Reports an entry found on one side only; returns it to descend into
    /// if it is a directory and `--recursive` lists its subtree.
    fn lone(&mut self, side: Which, ino: Ino) -> Result<Option<Below>, CompareError> {
        let (tree, status) = match side {
            Which::Old => (self.old.tree(), Status::Deleted),
            Which::New => (self.new.tree(), Status::Added),
        };
        let Some(node) = tree.node(ino) else {
            return Ok(None);
        };
        let size = Some(node.size);
        let (old_size, new_size) = match side {
            Which::Old => (size, None),
            Which::New => (None, size),
        };
        self.report(status, old_size, new_size)?;
        let below = self.options.recursive && node.kind() == NodeKind::Directory;
        Ok(below.then_some(match side {
            Which::Old => (Some(ino), None),
            Which::New => (None, Some(ino)),
        }))
    }

    /// Compares one name present on both sides; returns the directories
    /// to descend into: both if both are, the one a type change left or
    /// made if `--recursive` lists its subtree.
    fn pair(&mut self, old: Ino, new: Ino) -> Result<Option<Below>, CompareError> {
        let (Some(o), Some(n)) = (self.old.tree().node(old), self.new.tree().node(new)) else {
            return Ok(None);
        };
        let sizes = (Some(o.size), Some(n.size));
        if o.kind() != n.kind() {
            self.report(Status::Type, sizes.0, sizes.1)?;
            let dir = |node: &Node, ino| (node.kind() == NodeKind::Directory).then_some(ino);
            return Ok(self.options.recursive.then(|| (dir(o, old), dir(n, new))));
        }
        if o.kind() == NodeKind::File && !self.same_contents(old, o, new, n)? {
            self.report(Status::Modified, sizes.0, sizes.1)?;
        } else if !self.same_metadata(old, o, new, n) {
            self.report(Status::Metadata, sizes.0, sizes.1)?;
        }
        Ok((o.kind() == NodeKind::Directory).then_some((Some(old), Some(new))))
    }

    /// Whether everything but the contents agrees: permissions, owner,
    /// extended attributes (but the overlay's), symlink target, device
    /// numbers, and with `--times` the modification time.
    fn same_metadata(&self, old: Ino, o: &Node, new: Ino, n: &Node) -> bool {
        let (old_tree, new_tree) = (self.old.tree(), self.new.tree());
        o.mode == n.mode
            && o.uid == n.uid
            && o.gid == n.gid
            && o.rdev() == n.rdev()
            && old_tree.symlink_target(old) == new_tree.symlink_target(new)
            && (!self.options.times || (o.mtime, o.mtime_nsec) == (n.mtime, n.mtime_nsec))
            && xattrs(old_tree, old) == xattrs(new_tree, new)
    }

    /// Whether two regular files hold the same bytes: by size, then by
    /// where they are stored, then by reading both until they differ.
    fn same_contents(
        &mut self,
        old: Ino,
        o: &Node,
        new: Ino,
        n: &Node,
    ) -> Result<bool, CompareError> {
        if o.size != n.size {
            return Ok(false);
        }
        let old_spec = self.old_specs.get(o.layer() as usize);
        let new_spec = self.new_specs.get(n.layer() as usize);
        let old_data = self.old.tree().file_data(old);
        let new_data = self.new.tree().file_data(new);
        if let (Some(os), Some(ns), Some(od), Some(nd)) = (old_spec, new_spec, old_data, new_data) {
            if od.offset == nd.offset && od.sparse == nd.sparse && same_stream(os, ns) {
                return Ok(true);
            }
        }
        let mut old_buf = vec![0; CHUNK.min(usize::try_from(o.size).unwrap_or(CHUNK))];
        let mut new_buf = old_buf.clone();
        let mut pos = 0;
        while pos < o.size {
            let got = self.read(Which::Old, old, pos, &mut old_buf)?;
            let got_new = self.read(Which::New, new, pos, &mut new_buf[..got])?;
            if got == 0 || got_new != got || old_buf[..got] != new_buf[..got] {
                return Ok(got == 0 && got_new == 0);
            }
            pos += got as u64;
        }
        Ok(true)
    }

    /// Reads a file of one side, naming its layer in an error.
    fn read(
        &mut self,
        side: Which,
        ino: Ino,
        pos: u64,
        buf: &mut [u8],
    ) -> Result<usize, CompareError> {
        let stack = match side {
            Which::Old => self.old,
            Which::New => self.new,
        };
        let got = stack.read(ino, pos, buf).map_err(|source| {
            let layer = stack
                .tree()
                .node(ino)
                .and_then(|node| stack.layers().get(node.layer() as usize))
                .map(|layer| layer.path().to_path_buf())
                .unwrap_or_default();
            CompareError::Read {
                layer,
                path: self.path.clone(),
                source: Box::new(source),
            }
        })?;
        self.outcome.bytes_read += got as u64;
        Ok(got)
    }

    fn report(
        &mut self,
        status: Status,
        old_size: Option<u64>,
        new_size: Option<u64>,
    ) -> Result<(), CompareError> {
        self.outcome.changed = true;
        (self.emit)(&Change {
            status,
            path: &self.path,
            old_size,
            new_size,
        })?;
        Ok(())
    }
}

/// The entries of a directory present on this side; none if absent.
fn entries(tree: &Tree, dir: Option<Ino>) -> &[DirEntry] {
    dir.map_or(&[], |dir| tree.entries(dir))
}

/// A node's extended attributes but the overlay's, sorted: layers may give
/// them in any order.
fn xattrs(tree: &Tree, ino: Ino) -> Vec<(&[u8], &[u8])> {
    let mut all: Vec<_> = tree
        .xattrs(ino)
        .filter(|(name, _)| !name.starts_with(OVERLAY_XATTRS))
        .collect();
    all.sort_unstable();
    all
}

/// How differences are printed.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompareFormat {
    /// Sizes before and after, between the status and the path.
    pub long: bool,
    /// One JSON object per line.
    pub json: bool,
}

/// Writes one difference: `STATUS<TAB>PATH`, with `-l` `STATUS<TAB>OLD
/// SIZE<TAB>NEW SIZE<TAB>PATH` (`-` where absent), or a JSON object.
pub fn write_change(
    change: &Change<'_>,
    format: CompareFormat,
    out: &mut dyn Write,
) -> io::Result<()> {
    if format.json {
        write!(out, "{{\"status\":\"{}\",\"path\":", change.status.code())?;
        json_string(change.path, out)?;
        write!(
            out,
            ",\"old_size\":{},\"new_size\":{}}}",
            JsonSize(change.old_size),
            JsonSize(change.new_size)
        )?;
        return out.write_all(b"\n");
    }
    write!(out, "{}\t", change.status.code())?;
    if format.long {
        write!(
            out,
            "{}\t{}\t",
            TextSize(change.old_size),
            TextSize(change.new_size)
        )?;
    }
    writeln!(out, "{}", Escaped(change.path))
}

/// A size or JSON's `null`.
struct JsonSize(Option<u64>);

impl fmt::Display for JsonSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(size) => write!(f, "{size}"),
            None => f.write_str("null"),
        }
    }
}

/// A size or `-`.
struct TextSize(Option<u64>);

impl fmt::Display for TextSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(size) => write!(f, "{size}"),
            None => f.write_str("-"),
        }
    }
}

/// Counts and sizes per status, for `--summary`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Per status, in [`Status::ALL`] order: (paths, bytes before, bytes
    /// after).
    pub counts: [(u64, u64, u64); 5],
}

impl Summary {
    /// Counts one difference.
    pub fn add(&mut self, change: &Change<'_>) {
        let slot = &mut self.counts[change.status.index()];
        slot.0 += 1;
        slot.1 += change.old_size.unwrap_or(0);
        slot.2 += change.new_size.unwrap_or(0);
    }

    /// One line per status: `STATUS<TAB>PATHS<TAB>BYTES BEFORE<TAB>BYTES
    /// AFTER`, or a JSON object each.
    pub fn write(&self, json: bool, out: &mut dyn Write) -> io::Result<()> {
        for (status, (paths, before, after)) in Status::ALL.iter().zip(self.counts) {
            if json {
                writeln!(
                    out,
                    "{{\"status\":\"{}\",\"paths\":{paths},\"bytes_before\":{before},\"bytes_after\":{after}}}",
                    status.code()
                )?;
            } else {
                writeln!(out, "{}\t{paths}\t{before}\t{after}", status.code())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::stack::StackOptions;

    /// A plain tar of regular files, written to `dir/name`.
    fn layer(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let mut tar = tar::Builder::new(Vec::new());
        for &(path, data) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, path, data).expect("append");
        }
        let path = dir.join(name);
        std::fs::write(&path, tar.into_inner().expect("finish")).expect("write layer");
        path
    }

    fn open(layers: &[PathBuf]) -> (Stack, Vec<LayerSpec>) {
        let specs: Vec<LayerSpec> = layers.iter().map(LayerSpec::file).collect();
        let stack = Stack::open_specs(&specs, &StackOptions::default()).expect("open stack");
        (stack, specs)
    }

    /// Compares and collects the lines.
    fn lines(
        old: &(Stack, Vec<LayerSpec>),
        new: &(Stack, Vec<LayerSpec>),
    ) -> (Vec<String>, Outcome) {
        fn side((stack, specs): &(Stack, Vec<LayerSpec>)) -> Side<'_> {
            Side { stack, specs }
        }
        let mut lines = Vec::new();
        let outcome = compare(
            side(old),
            side(new),
            CompareOptions::default(),
            &mut |change| {
                lines.push(format!(
                    "{}\t{}",
                    change.status.code(),
                    Escaped(change.path)
                ));
                Ok(())
            },
        )
        .expect("compare");
        (lines, outcome)
    }

    #[test]
    fn a_shared_layer_is_not_read_and_a_changed_file_only_up_to_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = vec![7u8; 100_000];
        let base = layer(dir.path(), "base", &[("big", &shared), ("same", b"abc")]);
        let a = layer(dir.path(), "a", &[("x", b"1"), ("same", b"abc")]);
        let b = layer(dir.path(), "b", &[("x", b"2")]);
        let (old, new) = (open(&[base.clone(), a]), open(&[base, b]));
        let (lines, outcome) = self::lines(&old, &new);
        assert_eq!(lines, ["M\tx"]);
        // `x` on both sides, `same` (from different layers) on both sides;
        // nothing of `big`.
        assert_eq!(
            outcome,
            Outcome {
                changed: true,
                bytes_read: 2 + 6
            }
        );
    }

    #[test]
    fn layers_are_one_stream_by_digest_else_by_file_and_range() {
        let range = |offset| LayerSpec {
            range: Some((offset, 10)),
            ..LayerSpec::file("image.tar")
        };
        // Two layers of one docker save archive are not one stream.
        assert!(same_stream(&range(0), &range(0)));
        assert!(!same_stream(&range(0), &range(512)));
        let digest = |path: &str, blob: &[u8]| LayerSpec {
            verify: Some(crate::digest::Digest::sha256(blob)),
            ..LayerSpec::file(path)
        };
        // The same blob in two OCI layouts is; two blobs of one file are not.
        assert!(same_stream(
            &digest("a/blob", b"1"),
            &digest("b/blob", b"1")
        ));
        assert!(!same_stream(
            &digest("a/blob", b"1"),
            &digest("a/blob", b"2")
        ));
        assert!(!same_stream(
            &LayerSpec::file("x"),
            &LayerSpec::directory("x")
        ));
    }

    #[test]
    fn identical_stacks_read_nothing_and_differ_in_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = layer(dir.path(), "base", &[("f", b"contents")]);
        let stack = open(std::slice::from_ref(&base));
        let (lines, outcome) = self::lines(&stack, &open(&[base]));
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(outcome, Outcome::default());
    }

    #[test]
    fn text_lines_escape_names_and_show_absent_sizes_as_dashes() {
        let change = Change {
            status: Status::Added,
            path: b"a\tb\nc",
            old_size: None,
            new_size: Some(3),
        };
        let mut out = Vec::new();
        write_change(&change, CompareFormat::default(), &mut out).expect("write");
        assert_eq!(out, b"A\ta\\tb\\nc\n");
        out.clear();
        let long = CompareFormat {
            long: true,
            json: false,
        };
        write_change(&change, long, &mut out).expect("write");
        assert_eq!(out, b"A\t-\t3\ta\\tb\\nc\n");
        out.clear();
        let json = CompareFormat {
            long: false,
            json: true,
        };
        write_change(&change, json, &mut out).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\"status\":\"A\",\"path\":\"a\\tb\\nc\",\"old_size\":null,\"new_size\":3}\n"
        );
    }

    #[test]
    fn summary_counts_paths_and_bytes_per_status() {
        let mut summary = Summary::default();
        for (status, old_size, new_size) in [
            (Status::Modified, Some(1), Some(5)),
            (Status::Modified, Some(2), Some(7)),
            (Status::Deleted, Some(9), None),
        ] {
            summary.add(&Change {
                status,
                path: b"x",
                old_size,
                new_size,
            });
        }
        let mut out = Vec::new();
        summary.write(false, &mut out).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "A\t0\t0\t0\nD\t1\t9\t0\nM\t2\t3\t12\nm\t0\t0\t0\nT\t0\t0\t0\n"
        );
    }
}
