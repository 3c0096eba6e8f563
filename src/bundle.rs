//! Index bundles: the stored indexes of a stack of layers, packed into one
//! tar to ship beside an image, so that machines mounting the image from a
//! registry never read whole blobs (`layerfs index export` / `import`).
//!
//! A bundle holds cache entries as the cache stores them, each under
//! `layerfs-index/<entry file name>`: one per layer and the stack's merged
//! tree. An entry of a registry layer is keyed by the blob's digest and
//! size alone, so it is valid on any machine; an entry of a local layer
//! file is keyed by that file's identity and only ever matches it. Nothing
//! in a bundle is trusted on import beyond its names: the cache checks
//! every entry (checksum, version, echoed key) when it loads it, as it does
//! its own.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::cache::{CacheError, IndexCache, LayerKey};
use crate::output::{OutputError, OutputFile};
use crate::source::{LayerSource, SourceError};
use crate::tar::{self, EntryHeader, MemberKind, TarError, TarWriter};

/// The directory entries sit under in a bundle.
const PREFIX: &str = "layerfs-index/";

/// What can go wrong with a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A stack layer has no key (a directory), so nothing can stand for it.
    #[error("layer {number} ({}) is a directory, which has no stored index", path.display())]
    Unkeyed {
        /// The layer (1 = bottom).
        number: usize,
        /// Its path.
        path: PathBuf,
    },
    /// An entry the stack should have stored is not in the cache.
    #[error("{what} is not in the index cache {} (indexed with --no-verify, or the cache is full?)", dir.display())]
    Missing {
        /// Which entry.
        what: String,
        /// The cache directory.
        dir: PathBuf,
    },
    /// Reading the cache or writing the bundle failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The bundle file is not a tar.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The bundle's tar is damaged.
    #[error("{}: {source}", path.display())]
    Tar {
        /// The bundle.
        path: PathBuf,
        /// What is wrong.
        source: TarError,
    },
    /// The bundle holds no index entry at all.
    #[error("{}: not a layerfs index bundle (no {PREFIX} entries)", path.display())]
    Empty {
        /// The bundle.
        path: PathBuf,
    },
    /// An entry could not be put into the cache.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The bundle's `-o` target was refused or could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// An entry of the bundle was refused or could not be stored.
    #[error("{}: {source}", path.display())]
    Entry {
        /// The bundle.
        path: PathBuf,
        /// Why.
        source: CacheError,
    },
}

impl BundleError {
    /// Whether the bundle's reader went away (EPIPE; see
    /// [`OutputError::is_broken_pipe`]).
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            BundleError::Output(e) => e.is_broken_pipe(),
            BundleError::Io { source, .. } => source.kind() == io::ErrorKind::BrokenPipe,
            _ => false,
        }
    }
}

/// Writes the entries of the layers with `keys` (and their merged tree,
/// if stored) from `cache` into a bundle at `out`, which appears only when
/// complete. `paths` name the layers for messages. Returns how many
/// entries were written.
pub fn export(
    cache: &IndexCache,
    keys: &[Option<LayerKey>],
    paths: &[&Path],
    out: &Path,
) -> Result<usize, BundleError> {
    let mut keyed = Vec::with_capacity(keys.len());
    for (n, key) in keys.iter().enumerate() {
        let key = key.as_ref().ok_or_else(|| BundleError::Unkeyed {
            number: n + 1,
            path: paths.get(n).map_or_else(PathBuf::new, |p| p.to_path_buf()),
        })?;
        keyed.push(key.clone());
    }
    let mut entries = Vec::new();
    for (n, key) in keyed.iter().enumerate() {
        let name = key.file_name();
        let bytes = read_entry(cache, &name)?.ok_or_else(|| BundleError::Missing {
            what: format!("the index of layer {}", n + 1),
            dir: cache.dir().to_path_buf(),
        })?;
        entries.push((name, bytes));
    }
    // The merged tree is a bonus: a machine without it merges once.
    let tree = IndexCache::tree_file_name(&keyed);
    if let Some(bytes) = read_entry(cache, &tree)? {
        entries.push((tree, bytes));
    }
    write_bundle(out, &entries)?;
    Ok(entries.len())
}

/// Reads the cache entry `name`; `None` if there is none.
fn read_entry(cache: &IndexCache, name: &str) -> Result<Option<Vec<u8>>, BundleError> {
    cache.entry_bytes(name).map_err(|source| BundleError::Io {
        path: cache.dir().join(name),
        source,
    })
}

/// Writes `entries` as a tar at `out`, as every `-o` output is written
/// ([`OutputFile`]: a regular file appears only when complete).
fn write_bundle(out: &Path, entries: &[(String, Vec<u8>)]) -> Result<(), BundleError> {
    let io_err = |source| BundleError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut file = OutputFile::open(out)?;
    {
        let mut tar = TarWriter::new(io::BufWriter::new(&mut file));
        for (name, bytes) in entries {
            let path = format!("{PREFIX}{name}");
            tar.header(&EntryHeader {
                path: path.as_bytes(),
                kind: MemberKind::Regular,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
                mtime_nsec: 0,
                size: bytes.len() as u64,
                link_target: b"",
                device: (0, 0),
                xattrs: &[],
            })
            .map_err(io_err)?;
            tar.data(bytes).map_err(io_err)?;
        }
        tar.finish().and_then(|mut w| w.flush()).map_err(io_err)?;
    }
    file.commit()?;
    Ok(())
}

/// A member's bytes from `at` on, as a reader; how many to take is the
/// cache's to say.
struct MemberBytes<'a> {
    source: &'a LayerSource,
    at: u64,
}

impl io::Read for MemberBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.source
            .read_exact_at(self.at, buf)
            .map_err(io::Error::other)?;
        self.at += buf.len() as u64;
        Ok(buf.len())
    }
}

/// Puts every entry of the bundle at `path` into `cache`; returns how
/// many. Entries of other names are ignored.
pub fn import(cache: &IndexCache, path: &Path) -> Result<usize, BundleError> {
    let source = LayerSource::open(path)?;
    let mut pass = source.index_pass();
    let index = tar::index_layer(&mut pass).map_err(|e| BundleError::Tar {
        path: path.to_path_buf(),
        source: e,
    })?;
    let seek = pass.finish().map_err(|e| BundleError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    source.attach(seek)?;
    let mut imported = 0;
    for member in &index.members {
        let Some(name) = member
            .path
            .strip_prefix(PREFIX.as_bytes())
            .and_then(|n| std::str::from_utf8(n).ok())
        else {
            continue;
        };
        if member.kind != MemberKind::Regular || member.data.sparse.is_some() {
            continue;
        }
        // Streamed: a member's declared size is only a claim, and a
        // bundle of kilobytes can claim terabytes.
        let bytes = MemberBytes {
            source: &source,
            at: member.data.offset,
        };
        cache
            .import_entry(name, member.data.size, bytes)
            .map_err(|source| BundleError::Entry {
                path: path.to_path_buf(),
                source,
            })?;
        imported += 1;
    }
    if imported == 0 {
        return Err(BundleError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entry_names_and_entry_bytes_are_imported() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::open(dir.path(), 1 << 20).unwrap();
        let offer = |name: &str, len: u64, bytes: &[u8]| {
            cache
                .import_entry(name, len, bytes)
                .unwrap_err()
                .to_string()
        };
        for (name, bytes) in [
            ("../0123456789abcdef.idx", &b"LAYERFS-IDX\0"[..]),
            ("0123456789abcdef.txt", b"LAYERFS-IDX\0"),
            ("0123456789abcdeg.idx", b"LAYERFS-IDX\0"),
            ("0123456789abcdef.idx", b"not an entry"),
        ] {
            let err = offer(name, bytes.len() as u64, bytes);
            assert!(err.contains("not a layerfs index entry"), "{name}: {err}");
        }
        // A declared size is refused before anything is read.
        let err = offer("0123456789abcdef.idx", 1 << 40, b"");
        assert!(err.contains("more than the cache's bound"), "{err}");
        // The header must announce the length offered.
        let mut entry = b"LAYERFS-TRE\0".to_vec();
        entry.extend(crate::cache::format_version().to_le_bytes());
        entry.extend(4u64.to_le_bytes());
        entry.extend(0u32.to_le_bytes());
        entry.extend(b"body");
        let err = offer("0123456789abcdef.tree", 1000, &entry);
        assert!(err.contains("header says"), "{err}");
        let err = offer("0123456789abcdef.idx", entry.len() as u64, &entry);
        assert!(err.contains("bad magic"), "{err}");
        // Fewer bytes than declared: refused, nothing left behind.
        let err = offer("0123456789abcdef.tree", entry.len() as u64, &entry[..30]);
        assert!(err.contains("cannot read it"), "{err}");
        assert!(!dir.path().join("0123456789abcdef.tree").exists());
        cache
            .import_entry("0123456789abcdef.tree", entry.len() as u64, &entry[..])
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("0123456789abcdef.tree")).unwrap(),
            entry
        );
    }
}
