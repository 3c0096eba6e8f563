//! A persistent cache of layer indexes, so that mounting a layer again
//! skips the pass over its (possibly compressed) bytes.
//!
//! Each layer entry holds one layer's members and [`SeekIndex`], in one
//! file named after the layer's [`LayerKey`]; each tree entry holds the
//! merged [`Tree`] of one stack of layers, named after all their keys, so
//! that mounting the same stack again skips the merge too. An entry is
//! only ever trusted after its checksum, format version and echoed key were
//! checked; anything else (stale, truncated, corrupt, another version) is
//! deleted and the layer is indexed again. Entries are written under a
//! temporary name and renamed into place, so a reader never sees half an
//! entry, and they are never modified afterwards. They are not fsynced: a
//! crash may leave an entry whose bytes never reached the disk, which its
//! length and checksum then refuse, and an fsync of tens of megabytes
//! would cost the first mount more than indexing does on a slow disk. The directory is kept under a
//! size bound by deleting the least recently used entries.
//!
//! Nothing here is needed for a mount to work: every error is for the
//! caller to report as a warning and carry on without the cache.

mod format;
mod key;
pub(crate) mod private;
#[cfg(test)]
mod tests;

pub use key::LayerKey;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::source::SeekIndex;
use crate::sys;
use crate::tar::{LayerIndex, Member};
use crate::tree::{Backing, Tree};

/// Default bound on the cache directory's size: room for the indexes of
/// about 150 layers of 200k files each (7 MB apiece), or thousands of
/// typical ones.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Extension of layer entry files (`<16 hex digits>.idx`).
const ENTRY_EXTENSION: &str = "idx";
/// Extension of stack tree entry files (`<16 hex digits>.tree`).
const TREE_EXTENSION: &str = "tree";
/// Prefix of files being written; never read, and removed once stale.
const TEMP_PREFIX: &str = ".layerfs-tmp.";
/// Age after which a temporary file is taken to be left over by a writer
/// that died, not one still writing.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// Makes temporary names unique among the threads of this process (the
/// pid and the time make them unique among processes, even when a pid is
/// reused, as pid 1 is in every container).
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Why the cache could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directory could not be created.
    #[error("cannot create the cache directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The cache directory exists but no file can be created in it.
    #[error("the cache directory {} is not writable: {source}", path.display())]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// An entry could not be written (a full disk, most likely); nothing
    /// more is stored by this cache.
    #[error("cannot write the cache entry {}: {source}; storing nothing more in this run", path.display())]
    Write {
        /// The entry's final path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Something offered as an entry (from an index bundle) is not one.
    #[error("{name}: not a layerfs index entry: {reason}")]
    Foreign {
        /// Its name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An index alone is larger than the whole cache may be.
    #[error("{}: the index takes {size} bytes, more than the cache's bound of {max_bytes}", path.display())]
    TooLarge {
        /// The entry's path, had it been written.
        path: PathBuf,
        /// Bytes the entry would take.
        size: u64,
        /// The cache's bound.
        max_bytes: u64,
    },
    /// The directory could not be listed to evict old entries.
    #[error("cannot list the cache directory {} to evict old entries: {source}", path.display())]
    Evict {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Where the cache lives unless told otherwise: `$XDG_CACHE_HOME/layerfs`,
/// else `~/.cache/layerfs`; `None` if neither variable gives an absolute
/// path (the XDG spec says to ignore relative ones).
pub fn default_dir() -> Option<PathBuf> {
    dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// [`default_dir`] given the two variables (tests cannot safely set them).
fn dir_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |var: Option<OsString>| var.map(PathBuf::from).filter(|p| p.is_absolute());
    absolute(xdg_cache_home)
        .or_else(|| absolute(home).map(|home| home.join(".cache")))
        .map(|base| base.join("layerfs"))
}

/// A layer's cache entry being written while the layer is indexed (see
/// [`IndexCache::store_entry_of`]): the members go to the merge as they
/// are read, and only their encoding stays behind, in a file once there
/// is [`SPILL_AT`] of it (see [`IndexCache::new_entry`]).
#[derive(Default)]
pub struct LayerEntry {
    members: format::MemberEncoder,
    /// An unnamed file in the cache directory for the encoding, if one
    /// could be made; else it stays in memory.
    spill: Option<File>,
    /// Why the spill file could not be written: the entry is not stored.
    failed: Option<io::Error>,
}

/// Bytes of a layer entry's encoding held in memory before they go to its
/// spill file: the encoding is a tenth of the members' size, but at a
/// million members that is 19 MB, at the peak of a first mount's memory.
const SPILL_AT: usize = 1 << 20;

impl LayerEntry {
    /// Adds the next members of the layer, in archive order.
    pub fn push(&mut self, members: &[Member]) {
        if self.failed.is_some() {
            return;
        }
        self.members.push(members);
        if self.members.held() < SPILL_AT {
            return;
        }
        if let Some(file) = &mut self.spill {
            if let Err(e) = self.members.spill_to(file) {
                // What was spilled is lost, so is the entry; the mount
                // goes on without it.
                (self.members, self.spill) = (format::MemberEncoder::default(), None);
                self.failed = Some(e);
            }
        }
    }
}

impl std::fmt::Debug for LayerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerEntry")
    }
}

/// A cache directory of layer indexes, bounded in size.
#[derive(Debug)]
pub struct IndexCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Set when an entry could not be written (a full disk, a directory
    /// gone read-only): later stores are skipped, so that one warning
    /// covers it rather than one per layer.
    write_failed: AtomicBool,
}

impl IndexCache {
    /// Opens the cache in `dir`, creating it (private to the user: entries
    /// list the layers' file names) if needed, and checks that a file can
    /// be created in it, so that an unusable cache is reported once, at
    /// start, rather than at every store.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<IndexCache, CacheError> {
        private::create_dir_all(dir).map_err(|source| CacheError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let cache = IndexCache {
            dir: dir.to_path_buf(),
            max_bytes,
            write_failed: AtomicBool::new(false),
        };
        // Permission bits say nothing for root or on a read-only mount:
        // creating a file is the only real test.
        let (probe, _) = cache
            .create_temp()
            .map_err(|source| CacheError::NotWritable {
                path: dir.to_path_buf(),
                source,
            })?;
        fs::remove_file(&probe).map_err(|source| CacheError::NotWritable {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(cache)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name of the merged tree entry of the stack with `keys`.
    pub fn tree_file_name(keys: &[LayerKey]) -> String {
        key::stack_file_name(keys)
    }

    /// Puts an entry from elsewhere (an index bundle) into the cache under
    /// `name`: `len` bytes read from `bytes`. The name must be an entry
    /// file name (`<16 hex>.idx` or `.tree`), the length within the
    /// cache's bound, and the header (the first bytes) that of an entry of
    /// this version and of that length, all checked before more is read;
    /// the rest is streamed to the file, never held in memory, and checked
    /// when the entry is loaded, as for any entry.
    pub fn import_entry(
        &self,
        name: &str,
        len: u64,
        mut bytes: impl io::Read,
    ) -> Result<(), CacheError> {
        let foreign = |reason: String| CacheError::Foreign {
            name: name.to_string(),
            reason,
        };
        let tree = match name.split_once('.') {
            Some((stem, ext))
                if stem.len() == 16 && stem.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                match ext {
                    ENTRY_EXTENSION => false,
                    TREE_EXTENSION => true,
                    _ => return Err(foreign("not an entry name".into())),
                }
            }
            _ => return Err(foreign("not an entry name".into())),
        };
        let path = self.dir.join(name);
        self.within_bound(&path, len)?;
        let read_error = |e: io::Error| foreign(format!("cannot read it: {e}"));
        let mut head = [0u8; format::HEADER_LEN];
        let head_len = head.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        bytes
            .read_exact(&mut head[..head_len])
            .map_err(read_error)?;
        format::check_start(&head[..head_len], tree, len).map_err(|e| foreign(e.to_string()))?;
        self.store_with(path, |mut file| {
            file.write_all(&head[..head_len]).map_err(Fill::Write)?;
            let mut left = len - head_len as u64;
            let mut buf = vec![0u8; IMPORT_CHUNK.min(usize::try_from(left).unwrap_or(usize::MAX))];
            while left > 0 {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                bytes
                    .read_exact(&mut buf[..n])
                    .map_err(|e| Fill::Refused(read_error(e)))?;
                file.write_all(&buf[..n]).map_err(Fill::Write)?;
                left -= n as u64;
            }
            Ok(len)
        })
    }

    /// Puts the index of the layer with `key` from elsewhere (a registry
    /// artifact) into the cache: `bytes` must be a whole layer entry of this
    /// version for exactly that key, and decode, before anything is
    /// stored; what is refused says why.
    pub fn import_layer(&self, key: &LayerKey, bytes: &[u8]) -> Result<(), CacheError> {
        let name = key.file_name();
        format::decode(bytes, &key.identity()).map_err(|e| CacheError::Foreign {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        self.store_entry(self.dir.join(name), &[bytes])
    }

    /// The layer entry `bytes` of the layer with `key` with its seek index
    /// replaced by what `edit` makes of it: an index made smaller to
    /// travel (see `remote_index.rs`). The entry is decoded whole first,
    /// so only a valid one is edited.
    pub fn with_seek(
        key: &LayerKey,
        bytes: &[u8],
        edit: impl FnOnce(&mut SeekIndex),
    ) -> Result<Vec<u8>, CacheError> {
        let (index, mut seek) =
            format::decode(bytes, &key.identity()).map_err(|e| CacheError::Foreign {
                name: key.file_name(),
                reason: e.to_string(),
            })?;
        edit(&mut seek);
        let mut members = format::MemberEncoder::default();
        members.push(&index.members);
        let [mut entry, rest] = members.finish_parts(&key.identity(), &seek);
        entry.extend_from_slice(&rest);
        Ok(entry)
    }

    /// The bytes of the entry `name` as stored, unchecked (what a bundle
    /// or an artifact ships, to be checked where it is loaded); `None` if
    /// there is none.
    pub fn entry_bytes(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let read = private::open_read(&self.dir.join(name)).and_then(|mut file| {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map(|_| bytes)
        });
        match read {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stored index of the layer with `key`, if there is a valid one.
    ///
    /// A missing entry is a silent miss. An entry that cannot be read or
    /// fails any check is reported in one warning, deleted, and is a miss:
    /// the caller indexes the layer and stores a fresh entry. A hit marks
    /// the entry as recently used, for eviction.
    pub fn load(&self, key: &LayerKey) -> Option<(LayerIndex, SeekIndex)> {
        self.load_entry(&key.file_name(), |file| {
            decode_mapped(file, |bytes| format::decode(bytes, &key.identity()))
        })
    }

    /// Only the seek index of the layer with `key`, if its entry is valid:
    /// what a mount needs of a layer whose stack's tree is stored. Only the
    /// start of the entry is read, never its members.
    pub fn load_seek(&self, key: &LayerKey) -> Option<SeekIndex> {
        self.load_entry(&key.file_name(), |file| {
            let entry_len = file.metadata().map_err(Reason::Io)?.len();
            let mut head = read_head(file, SEEK_PREFIX.min(entry_len))?;
            let needed = match format::seek_head_len(&head, entry_len) {
                Ok(needed) => needed as u64,
                // The lengths run past the prefix (an identity of tens of
                // kilobytes): the whole entry, which decodes or says why.
                Err(_) if (head.len() as u64) < entry_len => entry_len,
                Err(e) => return Err(Reason::Format(e)),
            };
            if needed > entry_len {
                return Err(Reason::Format(format::FormatError::Malformed(
                    "the seek index runs past the end",
                )));
            }
            if needed > head.len() as u64 {
                head = read_head(file, needed)?;
            }
            format::decode_seek(&head, entry_len, &key.identity()).map_err(Reason::Format)
        })
    }

    /// The stored merged tree of the stack of layers with `keys` (bottom
    /// first), if there is a valid one.
    pub fn load_tree(&self, keys: &[LayerKey]) -> Option<Tree> {
        self.load_entry(&key::stack_file_name(keys), |file| {
            let map = map_ahead(file)?;
            format::decode_tree(&(Arc::new(map) as Backing), &key::stack_identity(keys))
                .map_err(Reason::Format)
        })
    }

    /// Opens the entry `name` and decodes it. A missing entry is a silent
    /// miss; one that cannot be read or fails any check is reported in one
    /// warning, deleted, and is a miss. A hit marks the entry as recently
    /// used, for eviction.
    fn load_entry<T>(
        &self,
        name: &str,
        decode: impl FnOnce(&File) -> Result<T, Reason>,
    ) -> Option<T> {
        let path = self.dir.join(name);
        let loaded = private::open_read(&path)
            .map_err(Reason::Io)
            .and_then(|file| {
                let found = decode(&file)?;
                // Best effort: a failed bump only makes eviction less fair.
                let _ = file.set_modified(SystemTime::now());
                Ok(found)
            });
        match loaded {
            Ok(found) => Some(found),
            Err(Reason::Io(e)) if e.kind() == io::ErrorKind::NotFound => None,
            Err(reason) => {
                let removed = match fs::remove_file(&path) {
                    Ok(()) => String::new(),
                    Err(e) => format!(" (and it could not be removed: {e})"),
                };
                log::warn!(
                    "{}: {reason}; cached index discarded{removed}, the layer will be indexed again",
                    path.display()
                );
                None
            }
        }
    }

    /// Stores the index of the layer with `key`, replacing any entry it
    /// had, then evicts the least recently used entries until the cache is
    /// within its bound.
    ///
    /// The entry becomes visible all at once (temporary file, rename), so a
    /// full disk leaves either the old entry or none, never part of one; a
    /// crash may leave an entry the checks refuse (see the module docs).
    /// After one entry could not be written, stores do nothing.
    pub fn store(
        &self,
        key: &LayerKey,
        index: &LayerIndex,
        seek: &SeekIndex,
    ) -> Result<(), CacheError> {
        let mut entry = LayerEntry::default();
        entry.push(&index.members);
        self.store_entry_of(key, entry, seek)
    }

    /// [`IndexCache::store`] of a layer whose members were handed to
    /// [`LayerEntry::push`] as they were indexed.
    pub fn store_entry_of(
        &self,
        key: &LayerKey,
        entry: LayerEntry,
        seek: &SeekIndex,
    ) -> Result<(), CacheError> {
        let path = self.dir.join(key.file_name());
        if let Some(source) = entry.failed {
            return Err(self.failed(path, source));
        }
        let [head, rest] = entry.members.finish_parts(&key.identity(), seek);
        let Some(mut spilled) = entry.spill else {
            return self.store_entry(path, &[&head, &rest]);
        };
        let size = spilled
            .stream_position()
            .map_err(|source| self.failed(path.clone(), source))?
            + (head.len() + rest.len()) as u64;
        self.within_bound(&path, size)?;
        self.store_with(path, |mut file| {
            file.write_all(&head).map_err(Fill::Write)?;
            spilled.rewind().map_err(Fill::Write)?;
            io::copy(&mut spilled, &mut file).map_err(Fill::Write)?;
            file.write_all(&rest).map_err(Fill::Write)?;
            Ok(size)
        })
    }

    /// A new [`LayerEntry`] for [`IndexCache::store_entry_of`], whose
    /// encoding goes to an unnamed file in the cache directory as it
    /// grows (or stays in memory if no such file can be made).
    pub fn new_entry(&self) -> LayerEntry {
        LayerEntry {
            spill: tempfile::tempfile_in(&self.dir).ok(),
            ..LayerEntry::default()
        }
    }

    /// Stores the merged tree of the stack of layers with `keys` (bottom
    /// first), as [`IndexCache::store`] stores a layer's index.
    pub fn store_tree(&self, keys: &[LayerKey], tree: &Tree) -> Result<(), CacheError> {
        let path = self.dir.join(key::stack_file_name(keys));
        let identity = key::stack_identity(keys);
        // Streamed to the file: the encoding is as large as the tree, and
        // holding both was the peak of a first mount's memory.
        self.store_with(path, |file| {
            format::write_tree(&identity, tree, |at, bytes| file.write_all_at(bytes, at))
                .map_err(Fill::Write)
        })
    }

    /// Stores an entry made of `parts`, written one after the other.
    fn store_entry(&self, path: PathBuf, parts: &[&[u8]]) -> Result<(), CacheError> {
        let size = parts.iter().map(|part| part.len() as u64).sum();
        self.within_bound(&path, size)?;
        self.store_with(path, |mut file| {
            for part in parts {
                file.write_all(part).map_err(Fill::Write)?;
            }
            Ok(size)
        })
    }

    /// Refuses an entry of `size` bytes at `path` over the cache's bound.
    fn within_bound(&self, path: &Path, size: u64) -> Result<(), CacheError> {
        if size > self.max_bytes {
            return Err(CacheError::TooLarge {
                path: path.to_path_buf(),
                size,
                max_bytes: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Writes an entry with `write` (which returns its length) under a
    /// temporary name, then puts it in place if it is within the bound.
    fn store_with(
        &self,
        path: PathBuf,
        write: impl FnOnce(&File) -> Result<u64, Fill>,
    ) -> Result<(), CacheError> {
        if self.write_failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (temp, file) = self
            .create_temp()
            .map_err(|e| self.failed(path.clone(), e))?;
        let placed = write(&file).and_then(|size| {
            self.within_bound(&path, size).map_err(Fill::Refused)?;
            fs::rename(&temp, &path).map_err(Fill::Write)
        });
        match placed {
            Ok(()) => self.evict(),
            Err(fill) => {
                let _ = fs::remove_file(&temp);
                Err(match fill {
                    Fill::Write(source) => self.failed(path, source),
                    Fill::Refused(e) => e,
                })
            }
        }
    }

    /// The error of an entry that could not be written, after which
    /// nothing more is stored.
    fn failed(&self, path: PathBuf, source: io::Error) -> CacheError {
        self.write_failed.store(true, Ordering::Relaxed);
        CacheError::Write { path, source }
    }

    /// A new file under a temporary name that [`IndexCache::load`] never
    /// opens and [`IndexCache::evict`] recognises.
    fn create_temp(&self) -> io::Result<(PathBuf, File)> {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let pid = std::process::id();
        let path = self.dir.join(format!("{TEMP_PREFIX}{pid}.{nanos}.{n}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(private::FILE_MODE)
            .open(&path)?;
        Ok((path, file))
    }

    /// Deletes the least recently used entries until the entries total at
    /// most the bound, and temporary files left by writers that died.
    /// Files that are neither entries nor temporary files are never
    /// touched: the directory might be one the user shares with others.
    fn evict(&self) -> Result<(), CacheError> {
        let listing = fs::read_dir(&self.dir).map_err(|source| CacheError::Evict {
            path: self.dir.clone(),
            source,
        })?;
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut total = 0u64;
        // Entries that vanish or cannot be stat'ed meanwhile (another
        // layerfs evicting too) are skipped: eviction is best effort.
        for dirent in listing.flatten() {
            let name = dirent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(meta) = dirent.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(TEMP_PREFIX) {
                let age = now.duration_since(mtime).unwrap_or_default();
                if age > STALE_TEMP_AGE {
                    let _ = fs::remove_file(dirent.path());
                }
            } else if is_entry_name(name) {
                total = total.saturating_add(meta.len());
                entries.push((mtime, dirent.path(), meta.len()));
            }
        }
        entries.sort();
        for (_, path, len) in entries {
            if total <= self.max_bytes {
                break;
            }
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    log::debug!("{}: cannot evict: {e}", path.display());
                }
                _ => total = total.saturating_sub(len),
            }
        }
        Ok(())
    }
}

/// The entry format's version: what a shipped entry must have to be read.
pub fn format_version() -> u32 {
    format::VERSION
}

/// The buffer an imported entry is copied through.
const IMPORT_CHUNK: usize = 64 * 1024;

/// How much of a layer entry [`IndexCache::load_seek`] reads first: the
/// header, the identity and a plain or zstd layer's whole seek index, so
/// that most loads take one read (a gzip layer's checkpoints take two).
const SEEK_PREFIX: u64 = 64 * 1024;

/// Maps a whole entry and decodes it.
fn decode_mapped<T>(
    file: &File,
    decode: impl FnOnce(&[u8]) -> Result<T, format::FormatError>,
) -> Result<T, Reason> {
    decode(&map_ahead(file)?).map_err(Reason::Format)
}

/// Maps a whole entry, asking the kernel to read all of it ahead at once:
/// it is read front to back, and page faults one read-ahead window at a
/// time left a cold 26 MB tree waiting on the disk between windows.
fn map_ahead(file: &File) -> Result<memmap2::Mmap, Reason> {
    let map = sys::map_readonly(file).map_err(Reason::Io)?;
    // Advice only: the entry reads the same without it.
    let _ = map.advise(memmap2::Advice::Sequential);
    let _ = map.advise(memmap2::Advice::WillNeed);
    Ok(map)
}

/// The first `len` bytes of `file`, which has at least that many.
fn read_head(file: &File, len: u64) -> Result<Vec<u8>, Reason> {
    let len = usize::try_from(len).map_err(|_| Reason::Io(io::ErrorKind::OutOfMemory.into()))?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0).map_err(Reason::Io)?;
    Ok(buf)
}

/// Whether `name` is what [`LayerKey::file_name`] makes.
fn is_entry_name(name: &str) -> bool {
    [ENTRY_EXTENSION, TREE_EXTENSION].iter().any(|extension| {
        name.strip_suffix(extension)
            .and_then(|stem| stem.strip_suffix('.'))
            .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// Why an entry was not stored: the disk failed (no more stores), or the
/// entry itself is refused.
enum Fill {
    Write(io::Error),
    Refused(CacheError),
}

/// Why a stored entry was not used.
#[derive(Debug, thiserror::Error)]
enum Reason {
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    Format(format::FormatError),
}
