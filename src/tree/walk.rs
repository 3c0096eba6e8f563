//! Depth-first walks of the frozen tree, for everything that turns it into
//! a sequence (listings, exports).

use super::{Ino, Node, NodeKind, Tree, ROOT_INO};

impl Tree {
    /// Visits the root (with an empty path) and then every name in the tree,
    /// depth first, each directory before what it holds, names in byte order,
    /// with its path from the root (`etc/passwd`). A hardlinked file is
    /// visited once per name. The first error stops the walk.
    pub fn walk<E>(
        &self,
        mut visit: impl FnMut(&[u8], Ino, &Node) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(root) = self.node(ROOT_INO) {
            visit(b"", ROOT_INO, root)?;
        }
        self.walk_below(ROOT_INO, visit)
    }

    /// Visits every name below directory `dir`, depth first, each
    /// directory before what it holds, names in byte order, with its path
    /// relative to `dir` (`ssl/certs` below `etc`). The first error stops
    /// the walk.
    pub fn walk_below<E>(
        &self,
        dir: Ino,
        mut visit: impl FnMut(&[u8], Ino, &Node) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut path: Vec<u8> = Vec::new();
        // (directory, length of `path` that names it, next entry index)
        let mut open: Vec<(Ino, usize, usize)> = vec![(dir, 0, 0)];
        while let Some(top) = open.last_mut() {
            let (dir, prefix, next) = *top;
            let Some(entry) = self.entries(dir).get(next) else {
                open.pop();
                continue;
            };
            top.2 += 1;
            path.truncate(prefix);
            if prefix > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(self.name(entry));
            let Some(node) = self.node(entry.ino) else {
                continue;
            };
            visit(&path, entry.ino, node)?;
            if node.kind() == NodeKind::Directory {
                open.push((entry.ino, path.len(), 0));
            }
        }
        Ok(())
    }
}
