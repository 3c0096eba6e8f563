//! The snapshots' metadata: what containerd asked for, by key, kept in
//! one JSON file under the snapshotter's root and replaced atomically on
//! every change (written beside, synced, renamed over, directory synced),
//! so that a crash or a restart finds either the old state or the new one.
//!
//! The rules of containerd's snapshot model live here: keys are unique,
//! only an active snapshot is committed, a committed one is the only kind
//! of parent, a snapshot with children is not removed.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The metadata file under the root.
const FILE: &str = "metadata.json";

/// What a snapshot is in containerd's model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A read-only view of a committed snapshot.
    View,
    /// Writable: a container's root, or a layer being applied.
    Active,
    /// Immutable: a layer of an image, usable as a parent.
    Committed,
}

/// A layer served from a registry blob instead of a directory: what the
/// lazy path commits in place of unpacking it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLayer {
    /// The blob as a layer argument of `layerfs mount`, its URL
    /// (`https://HOST/v2/REPO/blobs/sha256:…`).
    pub reference: String,
    /// The blob's digest (parsed again when the store is read back).
    pub digest: Digest,
}

/// Disk use of a snapshot's own directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes allocated.
    pub size: i64,
    /// Inodes.
    pub inodes: i64,
}

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Names its directory, `snapshots/ID`; never reused.
    pub id: u64,
    /// View, active or committed.
    pub kind: Kind,
    /// The committed snapshot below, if any.
    pub parent: Option<String>,
    /// containerd's labels.
    pub labels: BTreeMap<String, String>,
    /// Seconds and nanoseconds since the epoch.
    pub created: (i64, u32),
    /// When it or its labels last changed.
    pub updated: (i64, u32),
    /// Set for a layer served from a registry; such a snapshot has no
    /// directory.
    pub remote: Option<RemoteLayer>,
    /// Measured when committed (a committed snapshot never changes).
    pub usage: Option<Usage>,
}

/// Why a request breaks the snapshot model; each maps to the gRPC code
/// containerd turns back into its own error kinds.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No snapshot by that key.
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    /// The key is taken.
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    /// The request does not fit the snapshot's state (not active, has
    /// children, parent not committed).
    #[error("snapshot {key:?}: {why}")]
    FailedPrecondition {
        /// The snapshot.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The metadata file could not be read or written.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The metadata file is not what this version writes.
    #[error("{path}: unreadable snapshot metadata: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
}

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    /// The next snapshot's id.
    next_id: u64,
    snapshots: BTreeMap<String, Snapshot>,
}

/// All snapshots, loaded from and saved to `ROOT/metadata.json`.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    contents: Contents,
}

/// Now, as stored.
fn now() -> (i64, u32) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        since.subsec_nanos(),
    )
}

impl Store {
    /// Loads the store under `root`, or starts an empty one if there is
    /// none yet.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let path = root.join(FILE);
        let contents = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Contents {
                next_id: 1,
                snapshots: BTreeMap::new(),
            },
            Err(source) => {
                return Err(StoreError::Io {
                    path,
                    what: "reading",
                    source,
                })
            }
        };
        Ok(Store { path, contents })
    }

    /// The snapshot `key`.
    pub fn get(&self, key: &str) -> Result<&Snapshot, StoreError> {
        self.contents
            .snapshots
            .get(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    /// Every snapshot, by key.
    pub fn all(&self) -> impl Iterator<Item = (&String, &Snapshot)> {
        self.contents.snapshots.iter()
    }

    /// The committed snapshots from `key` down to the bottom of its chain,
    /// `key` first.
    pub fn chain(&self, key: &str) -> Result<Vec<(&String, &Snapshot)>, StoreError> {
        let mut chain = Vec::new();
        let mut next = Some(key);
        while let Some(key) = next {
            let (name, snapshot) = self
                .contents
                .snapshots
                .get_key_value(key)
                .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            if chain.len() > self.contents.snapshots.len() {
                return Err(StoreError::FailedPrecondition {
                    key: key.to_string(),
                    why: "its parents form a cycle".into(),
                });
            }
            chain.push((name, snapshot));
            next = snapshot.parent.as_deref();
        }
        Ok(chain)
    }

    /// Adds a new view or active snapshot `key` over `parent`, or, for the
    /// lazy path, a committed one served from a registry; returns it.
    pub fn create(
        &mut self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: BTreeMap<String, String>,
        remote: Option<RemoteLayer>,
    ) -> Result<Snapshot, StoreError> {
        if key.is_empty() {
            return Err(StoreError::FailedPrecondition {
                key: key.to_string(),
                why: "an empty key".into(),
            });
        }
        if self.contents.snapshots.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        if let Some(parent) = parent {
            if self.get(parent)?.kind != Kind::Committed {
                return Err(StoreError::FailedPrecondition {
                    key: key.to_string(),
                    why: format!("parent {parent:?} is not committed"),
                });
            }
        }
        let id = self.contents.next_id;
        let time = now();
        let snapshot = Snapshot {
            id,
            kind,
            parent: parent.map(str::to_string),
            labels,
            created: time,
            updated: time,
            remote,
            usage: None,
        };
        self.contents.next_id += 1;
        self.contents
            .snapshots
            .insert(key.to_string(), snapshot.clone());
        self.save()?;
        Ok(snapshot)
    }

    /// Commits the active snapshot `key` as `name` (its directory stays).
    pub fn commit(
        &mut self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
        usage: Usage,
    ) -> Result<(), StoreError> {
        if self.get(key)?.kind != Kind::Active {
            return Err(StoreError::FailedPrecondition {
                key: key.to_string(),
                why: "only an active snapshot can be committed".into(),
            });
        }
        if self.contents.snapshots.contains_key(name) {
            return Err(StoreError::AlreadyExists(name.to_string()));
        }
        let Some(mut snapshot) = self.contents.snapshots.remove(key) else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        snapshot.kind = Kind::Committed;
        snapshot.labels = labels;
        snapshot.updated = now();
        snapshot.usage = Some(usage);
        self.contents.snapshots.insert(name.to_string(), snapshot);
        self.save()
    }

    /// Removes `key`, which no snapshot may have as its parent; returns it.
    pub fn remove(&mut self, key: &str) -> Result<Snapshot, StoreError> {
        self.get(key)?;
        if let Some((child, _)) = self
            .contents
            .snapshots
            .iter()
            .find(|(_, s)| s.parent.as_deref() == Some(key))
        {
            return Err(StoreError::FailedPrecondition {
                key: key.to_string(),
                why: format!("snapshot {child:?} has it as its parent"),
            });
        }
        let Some(removed) = self.contents.snapshots.remove(key) else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        self.save()?;
        Ok(removed)
    }

    /// Sets the labels of `key` as containerd's field paths say: none,
    /// or `labels`, replace them all; `labels.NAME` sets (or, absent from
    /// `labels`, removes) that one. Other fields cannot change.
    pub fn update(
        &mut self,
        key: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Snapshot, StoreError> {
        let snapshot = self
            .contents
            .snapshots
            .get_mut(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let mut updated = snapshot.labels.clone();
        if paths.is_empty() || paths.iter().any(|p| p == "labels") {
            updated = labels;
        } else {
            for path in paths {
                let Some(name) = path.strip_prefix("labels.") else {
                    return Err(StoreError::FailedPrecondition {
                        key: key.to_string(),
                        why: format!("cannot update field {path:?}"),
                    });
                };
                match labels.get(name) {
                    Some(value) => updated.insert(name.to_string(), value.clone()),
                    None => updated.remove(name),
                };
            }
        }
        snapshot.labels = updated;
        snapshot.updated = now();
        let snapshot = snapshot.clone();
        self.save()?;
        Ok(snapshot)
    }

    /// Writes the file beside itself, syncs, renames it over, syncs the
    /// directory.
    fn save(&self) -> Result<(), StoreError> {
        let io_error = |what| {
            let path = self.path.clone();
            move |source| StoreError::Io { path, what, source }
        };
        let bytes = serde_json::to_vec(&self.contents)
            .map_err(|e| io_error("encoding")(io::Error::other(e)))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io_error("writing"))?;
        temp.write_all(&bytes).map_err(io_error("writing"))?;
        temp.as_file().sync_all().map_err(io_error("syncing"))?;
        temp.persist(&self.path)
            .map_err(|e| io_error("replacing")(e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("syncing its directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_snapshot_model_is_enforced_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .create("a", None, Kind::Active, BTreeMap::new(), None)
            .unwrap();
        assert!(matches!(
            store.create("a", None, Kind::Active, BTreeMap::new(), None),
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            store.create("b", Some("a"), Kind::Active, BTreeMap::new(), None),
            Err(StoreError::FailedPrecondition { .. })
        ));
        store
            .commit("base", "a", labels(&[("x", "1")]), Usage::default())
            .unwrap();
        assert!(matches!(store.get("a"), Err(StoreError::NotFound(_))));
        let child = store
            .create("c", Some("base"), Kind::Active, BTreeMap::new(), None)
            .unwrap();
        assert!(matches!(
            store.commit("base", "c", BTreeMap::new(), Usage::default()),
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            store.remove("base"),
            Err(StoreError::FailedPrecondition { .. })
        ));
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.get("c").unwrap(), &child);
        let chain: Vec<_> = reopened
            .chain("c")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(chain, ["c", "base"]);
        assert_eq!(reopened.get("base").unwrap().labels, labels(&[("x", "1")]));
        assert!(child.id > reopened.get("base").unwrap().id);
    }

    #[test]
    fn labels_update_by_field_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .create(
                "a",
                None,
                Kind::Active,
                labels(&[("k", "1"), ("j", "2")]),
                None,
            )
            .unwrap();
        let one = store
            .update(
                "a",
                labels(&[("k", "9")]),
                &["labels.k".into(), "labels.j".into()],
            )
            .unwrap();
        assert_eq!(one.labels, labels(&[("k", "9")]));
        let all = store.update("a", labels(&[("z", "0")]), &[]).unwrap();
        assert_eq!(all.labels, labels(&[("z", "0")]));
        assert!(store
            .update("a", BTreeMap::new(), &["parent".into()])
            .is_err());
    }

    #[test]
    fn a_damaged_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let error = Store::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("metadata.json"), "{error}");
    }
}
