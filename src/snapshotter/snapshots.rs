//! The snapshotter's operations, as containerd's snapshots service names
//! them, on the store, the snapshot directories and the chain mounts; the
//! gRPC glue (service.rs) only translates.
//!
//! What containerd gets to mount:
//! - an active snapshot over nothing: its directory, bind-mounted;
//! - over committed directories only (what containerd's applier unpacked):
//!   a kernel overlay of them, as containerd's own overlayfs snapshotter
//!   mounts, so that every image works, lazily or not;
//! - over a chain holding any registry layer (the lazy path): a kernel
//!   overlay whose one lower is the layerfs mount of the whole chain, so
//!   the merge is layerfs' own and no lowerdir limit applies;
//! - a view: the same read-only (a bind mount of its one lower, or an
//!   overlay without upper).

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::chains::{ChainError, ChainLayer, Chains};
use super::filters::{Fields, Filters};
use super::labels;
use super::layout::{self, Layout};
use super::store::{Kind, RemoteLayer, Snapshot, Store, StoreError, Usage};
use crate::registry::{self, RegistryOptions};
use crate::upper;

/// A mount for containerd to make: what its `Mount` message carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// `bind` or `overlay`.
    pub kind: String,
    /// The source.
    pub source: String,
    /// Its options.
    pub options: Vec<String>,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The request breaks the snapshot model, or the metadata is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A chain of layers could not be mounted.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A snapshot directory could not be made, measured or removed.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A request containerd should not have sent.
    #[error("{0}")]
    InvalidArgument(String),
}

/// The snapshotter's state: the store behind a lock, the layout, how
/// chains are mounted.
pub struct Snapshotter {
    layout: Layout,
    store: Mutex<Store>,
    chains: Chains,
    /// One chain mount is made at a time, so two containers starting on
    /// one image do not both mount it.
    mounting: Mutex<()>,
    registry: RegistryOptions,
}

/// What a snapshot sits on, for its mounts.
enum Lower {
    Nothing,
    /// Committed directories, top first.
    Dirs(Vec<PathBuf>),
    /// A chain with registry layers: its layerfs mount.
    Stack(PathBuf),
}

fn io_error(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { path, what, source }
}

impl Snapshotter {
    /// The snapshotter over `layout`, its metadata loaded.
    pub fn open(
        layout: Layout,
        chains: Chains,
        registry: RegistryOptions,
    ) -> Result<Snapshotter, SnapshotError> {
        let store = Store::open(layout.root())?;
        Ok(Snapshotter {
            layout,
            store: Mutex::new(store),
            chains,
            mounting: Mutex::new(()),
            registry,
        })
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock left the store as it was before
        // the change (it is saved whole or not at all).
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Prepare` (writable) and `View` (read-only). With the lazy-pull
    /// labels, the layer is committed as a registry layer instead, and
    /// containerd told it exists.
    pub fn create(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        kind: Kind,
    ) -> Result<Vec<MountSpec>, SnapshotError> {
        let parent = Some(parent).filter(|p| !p.is_empty());
        if kind == Kind::Active {
            if let Some(lazy) = labels::lazy_layer(&labels) {
                match self.provide(&lazy, parent, &labels) {
                    Ok(()) => return Err(StoreError::AlreadyExists(lazy.target).into()),
                    Err(e) => log::warn!("{}: {e}; unpacking it instead", lazy.reference),
                }
            }
        }
        let snapshot = self.store().create(key, parent, kind, labels, None)?;
        let made = self.layout.make_snapshot(snapshot.id).map_err(io_error(
            &self.layout.snapshot(snapshot.id),
            "creating the snapshot directory",
        ));
        match made.and_then(|()| self.mounts_of(&snapshot)) {
            Ok(mounts) => Ok(mounts),
            Err(e) => {
                if let Err(undo) = self.store().remove(key) {
                    log::warn!("{undo}");
                }
                if let Err(undo) = self.layout.remove_snapshot(snapshot.id) {
                    log::warn!("{undo}");
                }
                Err(e)
            }
        }
    }

    /// Commits `lazy`'s layer as a registry layer over `parent`, once the
    /// registry has shown it has the blob.
    fn provide(
        &self,
        lazy: &labels::LazyLayer,
        parent: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        if let Ok(existing) = self.store().get(&lazy.target) {
            if existing.kind == Kind::Committed {
                return Ok(());
            }
        }
        let reference = registry::parse(&lazy.reference)
            .ok()
            .flatten()
            .ok_or_else(|| {
                SnapshotError::InvalidArgument(format!("{}: no reference", lazy.reference))
            })?;
        let image = registry::resolve(&reference, &self.registry)
            .map_err(|e| SnapshotError::InvalidArgument(e.to_string()))?;
        if image.layers.len() != 1 || image.layers[0].digest != lazy.digest {
            return Err(SnapshotError::InvalidArgument(format!(
                "{} is not one layer blob",
                lazy.reference
            )));
        }
        let remote = RemoteLayer {
            reference: lazy.reference.clone(),
            digest: lazy.digest.clone(),
        };
        log::info!("{}: served lazily as {}", lazy.reference, lazy.target);
        match self.store().create(
            &lazy.target,
            parent,
            Kind::Committed,
            labels.clone(),
            Some(remote),
        ) {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `Mounts`: what to mount for an active snapshot or a view (its
    /// chain mounted again first if it is gone, as after a reboot).
    pub fn mounts(&self, key: &str) -> Result<Vec<MountSpec>, SnapshotError> {
        let snapshot = self.store().get(key)?.clone();
        if snapshot.kind == Kind::Committed {
            return Err(StoreError::FailedPrecondition {
                key: key.to_string(),
                why: "a committed snapshot has no mounts".into(),
            }
            .into());
        }
        self.mounts_of(&snapshot)
    }

    fn mounts_of(&self, snapshot: &Snapshot) -> Result<Vec<MountSpec>, SnapshotError> {
        let lower = self.lower(snapshot.parent.as_deref())?;
        let fs = self.layout.fs(snapshot.id).display().to_string();
        let work = self.layout.work(snapshot.id).display().to_string();
        let bind = |source: String, mode: &str| MountSpec {
            kind: "bind".into(),
            source,
            options: vec![mode.to_string(), "rbind".into()],
        };
        let overlay = |lowers: String, writable: bool| {
            // Off as for `mount --upper`, so that a committed snapshot stays
            // a layer directory layerfs reads.
            let mut options: Vec<String> =
                upper::FEATURES_OFF.split(',').map(str::to_string).collect();
            if writable {
                options.push(format!("workdir={work}"));
                options.push(format!("upperdir={fs}"));
            }
            options.push(format!("lowerdir={lowers}"));
            MountSpec {
                kind: "overlay".into(),
                source: "overlay".into(),
                options,
            }
        };
        let join = |dirs: &[PathBuf]| {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        Ok(match (snapshot.kind, lower) {
            (Kind::Active, Lower::Nothing) => vec![bind(fs, "rw")],
            (_, Lower::Nothing) => vec![bind(fs, "ro")],
            (Kind::Active, Lower::Dirs(dirs)) => vec![overlay(join(&dirs), true)],
            (_, Lower::Dirs(dirs)) if dirs.len() == 1 => vec![bind(join(&dirs), "ro")],
            (_, Lower::Dirs(dirs)) => vec![overlay(join(&dirs), false)],
            (Kind::Active, Lower::Stack(mount)) => {
                vec![overlay(mount.display().to_string(), true)]
            }
            (_, Lower::Stack(mount)) => vec![bind(mount.display().to_string(), "ro")],
        })
    }

    /// What a snapshot over `parent` sits on; a chain with registry layers
    /// is mounted if it is not already.
    fn lower(&self, parent: Option<&str>) -> Result<Lower, SnapshotError> {
        let Some(parent) = parent else {
            return Ok(Lower::Nothing);
        };
        let layers = self.chain_layers(parent)?;
        if !layers.iter().any(|l| matches!(l, ChainLayer::Remote(_))) {
            let dirs = layers
                .into_iter()
                .rev()
                .filter_map(|l| match l {
                    ChainLayer::Dir(dir) => Some(dir),
                    ChainLayer::Remote(_) => None,
                })
                .collect();
            return Ok(Lower::Dirs(dirs));
        }
        let _one_at_a_time = self.mounting.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Lower::Stack(self.chains.ensure(&layers)?))
    }

    /// The layers of committed snapshot `top` and its parents, bottom
    /// first.
    fn chain_layers(&self, top: &str) -> Result<Vec<ChainLayer>, SnapshotError> {
        let store = self.store();
        let mut layers: Vec<ChainLayer> = store
            .chain(top)?
            .into_iter()
            .map(|(_, snapshot)| match &snapshot.remote {
                Some(remote) => ChainLayer::Remote(remote.reference.clone()),
                None => ChainLayer::Dir(self.layout.fs(snapshot.id)),
            })
            .collect();
        layers.reverse();
        Ok(layers)
    }

    /// `Commit`: the active snapshot `key` becomes the committed `name`.
    pub fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let id = self.store().get(key)?.id;
        let fs = self.layout.fs(id);
        let (size, inodes) = layout::disk_usage(&fs).map_err(io_error(&fs, "measuring"))?;
        self.store()
            .commit(name, key, labels, Usage { size, inodes })?;
        Ok(())
    }

    /// `Remove`: the snapshot, its directory, and chain mounts nothing
    /// uses any more.
    pub fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let removed = self.store().remove(key)?;
        if removed.remote.is_none() {
            let dir = self.layout.snapshot(removed.id);
            self.layout
                .remove_snapshot(removed.id)
                .map_err(io_error(&dir, "removing"))?;
        }
        self.release_unneeded_chains()
    }

    /// `Stat`.
    pub fn stat(&self, key: &str) -> Result<Snapshot, SnapshotError> {
        Ok(self.store().get(key)?.clone())
    }

    /// `Update`: labels only.
    pub fn update(
        &self,
        key: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Snapshot, SnapshotError> {
        Ok(self.store().update(key, labels, paths)?)
    }

    /// `List`: the snapshots `filters` select.
    pub fn list(&self, filters: &[String]) -> Result<Vec<(String, Snapshot)>, SnapshotError> {
        let filters = Filters::parse(filters).map_err(SnapshotError::InvalidArgument)?;
        Ok(self
            .store()
            .all()
            .filter(|(name, snapshot)| {
                filters.matches(&Fields {
                    name,
                    parent: snapshot.parent.as_deref().unwrap_or(""),
                    kind: kind_name(snapshot.kind),
                    labels: &snapshot.labels,
                })
            })
            .map(|(name, snapshot)| (name.clone(), snapshot.clone()))
            .collect())
    }

    /// `Usage`: measured now for an active snapshot, at commit for a
    /// committed one; a registry layer takes no disk here.
    pub fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let snapshot = self.store().get(key)?.clone();
        if let Some(usage) = snapshot.usage {
            return Ok(usage);
        }
        if snapshot.remote.is_some() {
            return Ok(Usage::default());
        }
        let fs = self.layout.fs(snapshot.id);
        let (size, inodes) = layout::disk_usage(&fs).map_err(io_error(&fs, "measuring"))?;
        Ok(Usage { size, inodes })
    }

    /// `Cleanup`: snapshot directories no snapshot owns (left by a crash
    /// between the directory and the metadata), and unused chain mounts.
    pub fn cleanup(&self) -> Result<(), SnapshotError> {
        let owned: HashSet<u64> = self.store().all().map(|(_, s)| s.id).collect();
        let snapshots = self.layout.root().join("snapshots");
        self.layout
            .remove_unowned(&owned)
            .map_err(io_error(&snapshots, "cleaning up"))?;
        self.release_unneeded_chains()
    }

    /// Unmounts the chain mounts that no active snapshot or view sits on.
    fn release_unneeded_chains(&self) -> Result<(), SnapshotError> {
        let parents: Vec<String> = self
            .store()
            .all()
            .filter(|(_, s)| s.kind != Kind::Committed)
            .filter_map(|(_, s)| s.parent.clone())
            .collect();
        let mut needed = HashSet::new();
        for parent in parents {
            let layers = self.chain_layers(&parent)?;
            if layers.iter().any(|l| matches!(l, ChainLayer::Remote(_))) {
                needed.insert(self.chains.mountpoint(&layers));
            }
        }
        let _one_at_a_time = self.mounting.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.chains.release_unneeded(&needed)?)
    }
}

/// A kind as containerd's filters spell it.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::View => "view",
        Kind::Active => "active",
        Kind::Committed => "committed",
    }
}
