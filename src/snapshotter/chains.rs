//! One layerfs mount per chain of layers, shared by every container and
//! view over that chain: the lower of their kernel overlays.
//!
//! A chain is the layers of a committed snapshot and of all its parents,
//! bottom first: registry blobs (the lazy path) and committed directories
//! (layers containerd applied, or a container committed). The mount is
//! made by running `layerfs mount` itself, so its daemon is a process of
//! its own that outlives the snapshotter: restarting the snapshotter never
//! stops a running container's reads. The mountpoint is named by a hash of
//! the chain, so a restarted snapshotter finds the mounts it made in the
//! mount table and uses them; after a reboot they are made again on
//! demand.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::fuse::{self, mountinfo};

/// One layer of a chain, as `layerfs mount` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainLayer {
    /// A registry blob (`https://HOST/v2/REPO/blobs/sha256:…`).
    Remote(String),
    /// A committed snapshot's directory.
    Dir(PathBuf),
}

impl ChainLayer {
    fn arg(&self) -> OsString {
        match self {
            ChainLayer::Remote(reference) => reference.into(),
            ChainLayer::Dir(path) => path.clone().into_os_string(),
        }
    }
}

/// Why a chain could not be mounted or taken down.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The mountpoint could not be made or read.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The mountpoint.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// `layerfs mount` failed; its message says why.
    #[error("mounting the layers at {path}: {message}")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The last line it wrote on stderr.
        message: String,
    },
}

/// How chain mounts are made.
#[derive(Clone, Debug)]
pub struct Chains {
    /// Where the mountpoints are.
    dir: PathBuf,
    /// The layerfs binary.
    exe: PathBuf,
    /// Options for every `layerfs mount`: cache, log file, registry.
    options: Vec<OsString>,
}

impl Chains {
    /// Chain mounts under `dir`, made by `exe mount OPTIONS...`.
    pub fn new(dir: PathBuf, exe: PathBuf, options: Vec<OsString>) -> Chains {
        Chains { dir, exe, options }
    }

    /// The mountpoint of `layers` (bottom first).
    pub fn mountpoint(&self, layers: &[ChainLayer]) -> PathBuf {
        let mut hash = Sha256::new();
        for layer in layers {
            hash.update(layer.arg().as_encoded_bytes());
            hash.update([0]);
        }
        let hex: String = hash.finalize()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(hex)
    }

    /// The mount of `layers`, made now unless it is already there and
    /// alive (a mount whose daemon died is detached and made again).
    pub fn ensure(&self, layers: &[ChainLayer]) -> Result<PathBuf, ChainError> {
        let path = self.mountpoint(layers);
        let io_error = |what| {
            let path = path.clone();
            move |source| ChainError::Io { path, what, source }
        };
        if is_layerfs_mount(&path).map_err(io_error("reading the mount table"))? {
            match std::fs::metadata(&path) {
                Ok(_) => return Ok(path),
                Err(e) => {
                    log::warn!(
                        "{}: the mount's daemon is gone ({e}): mounting again",
                        path.display()
                    );
                    if let Err(e) = fuse::unmount(&path, true) {
                        log::warn!("{e}");
                    }
                }
            }
        }
        match std::fs::create_dir(&path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_error("creating the mountpoint")(e))
            }
            _ => {}
        }
        log::info!("mounting {} layers at {}", layers.len(), path.display());
        let output = Command::new(&self.exe)
            .arg("-q")
            .arg("mount")
            .args(&self.options)
            .args(["-o", "allow_other,suid,dev"])
            .args(layers.iter().map(ChainLayer::arg))
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(io_error("starting `layerfs mount`"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed")
                .trim_start_matches("layerfs: ")
                .to_string();
            return Err(ChainError::Mount { path, message });
        }
        Ok(path)
    }

    /// Detaches every chain mount not in `needed` (lazily: a process still
    /// reading keeps its files until it lets go; the daemon exits then)
    /// and removes its mountpoint.
    pub fn release_unneeded(&self, needed: &HashSet<PathBuf>) -> Result<(), ChainError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ChainError::Io {
                    path: self.dir.clone(),
                    what: "listing chain mounts",
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if needed.contains(&path) {
                continue;
            }
            let mounted = is_layerfs_mount(&path).map_err(|source| ChainError::Io {
                path: path.clone(),
                what: "reading the mount table",
                source,
            })?;
            if mounted {
                log::info!("unmounting {}", path.display());
                if let Err(e) = fuse::unmount(&path, true) {
                    log::warn!("{e}");
                    continue;
                }
            }
            if let Err(e) = std::fs::remove_dir(&path) {
                log::warn!("{}: cannot remove: {e}", path.display());
            }
        }
        Ok(())
    }
}

/// Whether a layerfs mount is at `path`.
fn is_layerfs_mount(path: &Path) -> io::Result<bool> {
    Ok(mountinfo::entry(path)?.is_some_and(|entry| entry.fs_type == "fuse.layerfs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_named_by_its_layers_in_order() {
        let chains = Chains::new("/r/mounts".into(), "/bin/layerfs".into(), Vec::new());
        let a = ChainLayer::Remote("https://h/v2/r/blobs/sha256:aa".into());
        let b = ChainLayer::Dir("/r/snapshots/3/fs".into());
        let ab = chains.mountpoint(&[a.clone(), b.clone()]);
        assert_eq!(ab, chains.mountpoint(&[a.clone(), b.clone()]));
        assert_ne!(ab, chains.mountpoint(&[b, a.clone()]));
        assert_ne!(ab, chains.mountpoint(&[a]));
        assert!(ab.starts_with("/r/mounts"));
    }
}
