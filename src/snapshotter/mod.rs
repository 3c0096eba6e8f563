//! `layerfs snapshotter`: containerd's snapshots service on a unix socket,
//! for containerd's `proxy_plugins`, so that containers start from images
//! that were never pulled.
//!
//! When containerd's image handlers label a layer for a remote
//! snapshotter (the CRI plugin, `ctr-remote image rpull`), the layer is
//! committed as a registry blob and containerd told it already exists: it
//! downloads and unpacks nothing. A container over such layers gets a
//! kernel overlay whose lower is one layerfs mount of its whole chain,
//! reading the blobs by range (with the stored indexes of the cache, and
//! the chunk cache). Without those labels it is an ordinary snapshotter
//! for containerd's applier. The metadata lives in `ROOT/metadata.json`;
//! the mounts are `layerfs mount` daemons of their own, so the
//! snapshotter can restart under running containers.
//!
//! - [`store`]: the snapshots and the rules of containerd's model;
//! - [`layout`]: the directories under the root;
//! - [`labels`]: the lazy-pull labels;
//! - [`chains`]: the layerfs mount of each chain;
//! - [`snapshots`]: the operations;
//! - [`filters`]: `List`'s filter expressions;
//! - [`service`] and [`api`]: the gRPC service.

pub mod api;
pub mod chains;
pub mod filters;
pub mod labels;
pub mod layout;
pub mod service;
pub mod snapshots;
pub mod store;

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::registry::RegistryOptions;
use crate::sys;
use chains::Chains;
use layout::Layout;
use snapshots::{SnapshotError, Snapshotter};

/// How `layerfs snapshotter` was asked to run.
#[derive(Clone, Debug)]
pub struct SnapshotterOptions {
    /// The unix socket to serve on.
    pub address: PathBuf,
    /// Where snapshots, metadata and chain mounts live.
    pub root: PathBuf,
    /// The layer index cache of the chain mounts (default: `layerfs
    /// mount`'s, so that indexes built by `layerfs ls REF` serve it).
    pub cache_dir: Option<PathBuf>,
    /// Store no indexes.
    pub no_cache: bool,
    /// Where this process and its mounts log (default: stderr, and syslog
    /// for the mounts).
    pub log_file: Option<PathBuf>,
    /// Plain HTTP to registries that are not on loopback.
    pub insecure: bool,
}

/// Why the snapshotter could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotterError {
    /// A file or directory it needs could not be used.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// `--root` cannot be named in overlay mount options.
    #[error("--root {0}: a root whose path holds ',' or ':' cannot be an overlay's lower")]
    BadRoot(PathBuf),
    /// Another process serves the socket.
    #[error("{0}: another snapshotter is serving this socket")]
    InUse(PathBuf),
    /// The metadata could not be loaded.
    #[error(transparent)]
    Snapshots(#[from] SnapshotError),
    /// The gRPC server failed.
    #[error("{path}: serving: {source}")]
    Serve {
        /// The socket.
        path: PathBuf,
        /// What tonic said.
        source: tonic::transport::Error,
    },
}

fn io_error(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> SnapshotterError {
    let path = path.to_path_buf();
    move |source| SnapshotterError::Io { path, what, source }
}

/// Serves until SIGINT or SIGTERM. Chain mounts stay mounted when it
/// stops: the containers on them keep running.
pub fn run(options: &SnapshotterOptions) -> Result<(), SnapshotterError> {
    if let Some(log_file) = &options.log_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .map_err(io_error(log_file, "opening the log file"))?;
        sys::redirect_stdio(Some(&file)).map_err(io_error(log_file, "logging to it"))?;
    }
    std::fs::create_dir_all(&options.root).map_err(io_error(&options.root, "creating"))?;
    let root = options
        .root
        .canonicalize()
        .map_err(io_error(&options.root, "resolving"))?;
    if root.to_string_lossy().contains([',', ':']) {
        return Err(SnapshotterError::BadRoot(root));
    }
    let layout = Layout::create(&root).map_err(io_error(&root, "creating its directories"))?;
    let exe = std::env::current_exe().map_err(io_error(Path::new("/proc/self/exe"), "reading"))?;
    let chains = Chains::new(layout.mounts(), exe, mount_options(options));
    let registry = RegistryOptions {
        insecure: options.insecure,
        ..RegistryOptions::default()
    };
    let snapshotter = Arc::new(Snapshotter::open(layout, chains, registry)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_error(&options.address, "starting the server"))?;
    runtime.block_on(serve(&options.address, snapshotter, &root))
}

/// The options every chain's `layerfs mount` gets.
fn mount_options(options: &SnapshotterOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if options.no_cache {
        args.push("--no-cache".into());
    } else if let Some(dir) = &options.cache_dir {
        args.push("--cache-dir".into());
        args.push(dir.clone().into());
    }
    if let Some(log_file) = &options.log_file {
        args.push("--log-file".into());
        args.push(log_file.clone().into());
    }
    if options.insecure {
        args.push("--insecure".into());
    }
    args
}

async fn serve(
    address: &Path,
    snapshotter: Arc<Snapshotter>,
    root: &Path,
) -> Result<(), SnapshotterError> {
    let listener = bind(address)?;
    log::info!(
        "serving containerd's snapshots API at {} (root {})",
        address.display(),
        root.display()
    );
    let service = service::Service::new(snapshotter);
    let stop = async {
        let interrupted = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        let terminated = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match (interrupted, terminated) {
            (Ok(mut interrupted), Ok(mut terminated)) => {
                tokio::select! {
                    _ = interrupted.recv() => {},
                    _ = terminated.recv() => {},
                }
            }
            _ => std::future::pending::<()>().await,
        }
        log::info!("stopping; the mounts of running containers stay");
    };
    let served = tonic::transport::Server::builder()
        .add_service(
            api::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer::new(
                service,
            ),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            stop,
        )
        .await;
    if let Err(e) = std::fs::remove_file(address) {
        log::warn!("{}: cannot remove the socket: {e}", address.display());
    }
    served.map_err(|source| SnapshotterError::Serve {
        path: address.to_path_buf(),
        source,
    })
}

/// Listens on `address`, replacing a socket nobody serves any more (left
/// by a snapshotter that was killed), never one in use or another file.
fn bind(address: &Path) -> Result<tokio::net::UnixListener, SnapshotterError> {
    if let Some(parent) = address.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_error(parent, "creating"))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(address) {
        if !meta.file_type().is_socket() {
            return Err(io_error(address, "refusing to replace")(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "not a socket",
            )));
        }
        if std::os::unix::net::UnixStream::connect(address).is_ok() {
            return Err(SnapshotterError::InUse(address.to_path_buf()));
        }
        std::fs::remove_file(address).map_err(io_error(address, "removing the stale socket"))?;
    }
    tokio::net::UnixListener::bind(address).map_err(io_error(address, "listening"))
}
