//! `layerfs cat` and `layerfs get`: chosen paths read out of the merged
//! tree without mounting it.
//!
//! Only the files asked for are read, through the stack's read path (the
//! same as `export`'s, [`crate::export::copy_range`]), so a registry
//! image fetches only their chunks. Paths name places in the tree: a
//! symlink is resolved inside it (an absolute target from the tree's
//! root, `..` stopping there), never on the host.

mod at;
mod get;

use std::io::{self, Write};
use std::path::PathBuf;

use crate::export::{copy_range, ExportError, FileRef, COPY_BUFFER};
use crate::stack::Stack;
use crate::tree::{path, Ino, NodeKind, Tree, ROOT_INO};

pub use get::{get, Got};

/// Symlinks followed per path before giving up, as Linux's `ELOOP`.
const MAX_LINKS: usize = 40;

/// What can go wrong with one path (`cat` and `get` go on with the rest)
/// or with the output.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Nothing in the tree at this path.
    #[error("{}: no such file or directory in the tree", shown(path))]
    NotFound {
        /// The path asked for.
        path: Vec<u8>,
    },
    /// A component before the last is not a directory.
    #[error("{}: not a directory in the tree", shown(path))]
    NotADirectory {
        /// The path asked for.
        path: Vec<u8>,
    },
    /// `get` of a path below a symlink of the tree: an export holds the
    /// link, not a directory, so GNU tar extracting the path from it finds
    /// nothing there; making a real directory instead would put the files
    /// where neither the tree nor tar has them.
    #[error(
        "{}: {} is a symbolic link in the tree (to {}), not followed: ask for the path it leads to",
        shown(path),
        shown(link),
        shown(target)
    )]
    ThroughSymlink {
        /// The path asked for.
        path: Vec<u8>,
        /// The symlink among its parents.
        link: Vec<u8>,
        /// Its target, as stored.
        target: Vec<u8>,
    },
    /// Symlinks that lead to each other.
    #[error("{}: too many levels of symbolic links in the tree", shown(path))]
    Loop {
        /// The path asked for.
        path: Vec<u8>,
    },
    /// `cat` of something that is not a regular file.
    #[error("{}: {what}, not a regular file", shown(path))]
    NotAFile {
        /// The path asked for.
        path: Vec<u8>,
        /// What it is.
        what: &'static str,
    },
    /// A file's bytes could not be read from its layer.
    #[error(transparent)]
    Read(ExportError),
    /// `cat` could not write to its output.
    #[error("writing to stdout: {0}")]
    Output(io::Error),
    /// `get` could not make something in its destination.
    #[error("{}: {why}", path.display())]
    Write {
        /// Where, below the destination.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
}

impl ExtractError {
    /// Whether the reader of `cat`'s output went away.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ExtractError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Finds `wanted` in the tree, following symlinks met on the way (and the
/// last component's too if `follow_last`) inside the tree.
pub fn resolve(tree: &Tree, wanted: &[u8], follow_last: bool) -> Result<Ino, ExtractError> {
    let error = |make: fn(Vec<u8>) -> ExtractError| make(wanted.to_vec());
    // The directories from the root to where the walk is; components left.
    let mut dirs: Vec<Ino> = vec![ROOT_INO];
    let mut pending: Vec<&[u8]> = wanted.split(|&b| b == b'/').rev().collect();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        let here = dirs.last().copied().unwrap_or(ROOT_INO);
        match name {
            b"" | b"." => continue,
            b".." => {
                if dirs.len() > 1 {
                    dirs.pop();
                }
                continue;
            }
            _ => {}
        }
        let ino = tree
            .lookup(here, name)
            .ok_or_else(|| error(|path| ExtractError::NotFound { path }))?;
        let node = tree
            .node(ino)
            .ok_or_else(|| error(|path| ExtractError::NotFound { path }))?;
        let last = pending.iter().all(|c| matches!(*c, b"" | b"."));
        match node.kind() {
            NodeKind::Symlink if !last || follow_last => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(error(|path| ExtractError::Loop { path }));
                }
                let target = tree.symlink_target(ino).unwrap_or_default();
                if path::is_absolute(target) {
                    dirs.truncate(1);
                }
                pending.extend(target.split(|&b| b == b'/').rev());
            }
            NodeKind::Directory => dirs.push(ino),
            _ if last => return Ok(ino),
            _ => return Err(error(|path| ExtractError::NotADirectory { path })),
        }
        if last && node.kind() != NodeKind::Symlink {
            break;
        }
    }
    Ok(dirs.last().copied().unwrap_or(ROOT_INO))
}

/// Writes the files at `paths` to `out`, in order, following symlinks
/// inside the tree. A path that cannot be read is handed to `report` and
/// the rest still written; returns how many were. A failed write to `out`
/// ends it.
pub fn cat(
    stack: &Stack,
    paths: &[Vec<u8>],
    out: &mut dyn Write,
    report: &mut dyn FnMut(&ExtractError),
) -> Result<usize, ExtractError> {
    let tree = stack.tree();
    let mut buffer = vec![0; COPY_BUFFER];
    let mut failed = 0;
    for wanted in paths {
        let done = resolve(tree, wanted, true).and_then(|ino| {
            let node = tree.node(ino).ok_or_else(|| ExtractError::NotFound {
                path: wanted.clone(),
            })?;
            let what = match node.kind() {
                NodeKind::File => "",
                NodeKind::Directory => "a directory",
                NodeKind::Symlink => "a symlink",
                NodeKind::CharDevice => "a character device",
                NodeKind::BlockDevice => "a block device",
                NodeKind::Fifo => "a fifo",
            };
            if !what.is_empty() {
                return Err(ExtractError::NotAFile {
                    path: wanted.clone(),
                    what,
                });
            }
            let file = FileRef {
                ino,
                node,
                path: wanted,
            };
            let all = crate::tar::SparseSegment {
                offset: 0,
                len: node.size,
            };
            copy_range(stack, &file, &all, &mut buffer, &mut |chunk| {
                out.write_all(chunk)
            })
            .map_err(|e| match e {
                ExportError::Write(e) => ExtractError::Output(e),
                e => ExtractError::Read(e),
            })
        });
        match done {
            Err(e @ ExtractError::Output(_)) => return Err(e),
            Err(e) => {
                failed += 1;
                report(&e);
            }
            Ok(()) => {}
        }
    }
    out.flush().map_err(ExtractError::Output)?;
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::{LayerIndex, Member, MemberKind};

    /// etc/{a, rel -> a, abs -> /etc/a, up -> ../../../etc/a, dir -> /etc,
    /// loop -> loop, dangling -> /nowhere}.
    fn tree() -> Tree {
        let member = |path: &str, kind, target: &str| Member {
            link_target: target.as_bytes().to_vec(),
            ..Member::bare(path.as_bytes(), kind)
        };
        let members = vec![
            member("etc", MemberKind::Directory, ""),
            member("etc/a", MemberKind::Regular, ""),
            member("etc/rel", MemberKind::Symlink, "a"),
            member("etc/abs", MemberKind::Symlink, "/etc/a"),
            member("etc/up", MemberKind::Symlink, "../../../etc/a"),
            member("etc/dir", MemberKind::Symlink, "/etc"),
            member("etc/loop", MemberKind::Symlink, "loop"),
            member("etc/dangling", MemberKind::Symlink, "/nowhere"),
        ];
        Tree::build([LayerIndex { members }]).0
    }

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let tree = tree();
        let a = tree.lookup_path(b"etc/a");
        for path in [
            "etc/a",
            "/etc/a",
            "etc/rel",
            "etc/abs",
            "etc/up",
            "etc/dir/a",
            "etc/dir/dir/rel",
            "../etc/./a",
        ] {
            assert_eq!(resolve(&tree, path.as_bytes(), true).ok(), a, "{path}");
        }
        assert_eq!(resolve(&tree, b"", true).ok(), Some(ROOT_INO));
        assert_eq!(
            resolve(&tree, b"etc/dir/", true).ok(),
            tree.lookup_path(b"etc")
        );
    }

    #[test]
    fn the_last_symlink_is_kept_unless_followed() {
        let tree = tree();
        assert_eq!(
            resolve(&tree, b"etc/abs", false).ok(),
            tree.lookup_path(b"etc/abs")
        );
        // Only the last component is kept: etc/dir on the way is followed.
        assert_eq!(
            resolve(&tree, b"etc/dir/rel", false).ok(),
            tree.lookup_path(b"etc/rel")
        );
    }

    #[test]
    fn missing_loops_and_files_as_directories_are_refused() {
        let tree = tree();
        let refused = |path: &str| resolve(&tree, path.as_bytes(), true).err();
        assert!(matches!(
            refused("etc/b"),
            Some(ExtractError::NotFound { .. })
        ));
        assert!(matches!(
            refused("etc/dangling"),
            Some(ExtractError::NotFound { .. })
        ));
        assert!(matches!(
            refused("etc/loop"),
            Some(ExtractError::Loop { .. })
        ));
        assert!(matches!(
            refused("etc/a/b"),
            Some(ExtractError::NotADirectory { .. })
        ));
        assert!(matches!(
            refused("etc/rel/b"),
            Some(ExtractError::NotADirectory { .. })
        ));
    }
}
