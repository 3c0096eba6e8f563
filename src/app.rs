//! The commands behind the CLI, with the context a user needs in errors.

use std::path::{Path, PathBuf};

use crate::cache::{self, IndexCache};
use crate::daemon::{self, DaemonError};
use crate::export::{self, ExportError};
use crate::fuse::{self, MountError, MountOptions, OptionError};
use crate::list::{self, ListFormat};
use crate::output::{Compression, LayerOutput, OutputError, Target};
use crate::progress::Progress;
use crate::stack::{self, Stack, StackError, StackOptions};

/// Any failure of a command; each message names the file or mountpoint.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A layer could not be used.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// Mounting or unmounting failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// A `-o` option was refused.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// The background process failed (it has printed its own error).
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// `--layer N` names no layer of those given.
    #[error("--layer {number}: there are {count} layers (1 = bottom)")]
    NoSuchLayer {
        /// The number asked for.
        number: usize,
        /// How many layers were given.
        count: usize,
    },
    /// A layer could not be written.
    #[error(transparent)]
    Write(#[from] OutputError),
    /// The merged tree could not be exported.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Writing the listing failed.
    #[error("writing the listing: {0}")]
    Output(std::io::Error),
    /// The log file could not be opened.
    #[error("{}: {source}", path.display())]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl AppError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Daemon(e) => e.exit_code(),
            _ => 1,
        }
    }

    /// Whether the message was already printed (by the background child).
    pub fn already_reported(&self) -> bool {
        matches!(self, AppError::Daemon(DaemonError::ChildFailed(_)))
    }
}

/// What `layerfs mount` was asked to do.
#[derive(Debug)]
pub struct MountRequest {
    /// Layer files, bottom first.
    pub layers: Vec<PathBuf>,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// `-o` lists, in order.
    pub options: Vec<String>,
    /// Stay in the foreground.
    pub foreground: bool,
    /// Request-serving threads, if not the default.
    pub threads: Option<usize>,
    /// Where the background daemon logs.
    pub log_file: Option<PathBuf>,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
}

/// Where layer indexes are kept between mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheChoice {
    /// `$XDG_CACHE_HOME/layerfs` or `~/.cache/layerfs`.
    Default,
    /// A directory given by the user.
    Dir(PathBuf),
    /// No cache: every mount indexes every layer.
    Off,
}

impl CacheChoice {
    /// Opens the chosen cache; a cache that cannot be used is reported and
    /// left out (it costs speed, never the mount).
    fn open(&self) -> Option<IndexCache> {
        let dir = match self {
            CacheChoice::Off => return None,
            CacheChoice::Dir(dir) => dir.clone(),
            CacheChoice::Default => match cache::default_dir() {
                Some(dir) => dir,
                None => {
                    log::info!("no index cache: neither XDG_CACHE_HOME nor HOME is set");
                    return None;
                }
            },
        };
        match IndexCache::open(&dir, cache::DEFAULT_MAX_BYTES) {
            Ok(cache) => Some(cache),
            Err(e) => {
                log::warn!("no index cache: {e}");
                None
            }
        }
    }
}

/// `layerfs mount`: checks everything that can be checked, indexes the
/// layers, mounts, and serves (in the background unless `foreground`).
pub fn mount(request: &MountRequest) -> Result<(), AppError> {
    let mut options = MountOptions::default();
    if let Some(first) = request.layers.first() {
        options.set_fsname(first.display().to_string());
    }
    for list in &request.options {
        options.parse(list)?;
    }
    if let Some(threads) = request.threads {
        options.set_threads(threads);
    }
    if !request.foreground && !daemon::is_child() {
        return Ok(daemon::start_in_background()?);
    }
    let mountpoint = fuse::check_mountpoint(&request.mountpoint)?;
    let stack = Stack::open(
        &request.layers,
        &StackOptions {
            cache: request.cache.open(),
            spill_dir: None,
        },
    )?;
    log::info!(
        "{} layers merged: {} inodes, {} bytes of file data",
        stack.layers().len(),
        stack.tree().len(),
        stack.tree().file_bytes()
    );
    let log_file = request.log_file.as_deref();
    let mut ready_error = None;
    fuse::serve(stack, &mountpoint, &options, || {
        if daemon::is_child() {
            if let Err(e) = daemon::report_ready(log_file) {
                ready_error = Some(e);
            }
        }
        log::info!("mounted at {}", mountpoint.display());
    })?;
    match (ready_error, log_file) {
        (Some(source), Some(path)) => Err(AppError::LogFile {
            path: path.to_path_buf(),
            source,
        }),
        _ => Ok(()),
    }
}

/// `layerfs umount`.
pub fn umount(mountpoint: &Path, lazy: bool) -> Result<(), AppError> {
    Ok(fuse::unmount(mountpoint, lazy)?)
}

/// What `layerfs ls` was asked to do.
#[derive(Debug)]
pub struct ListRequest {
    /// Layer files, bottom first.
    pub layers: Vec<PathBuf>,
    /// List this layer (1 = bottom) as stored instead of the merged tree.
    pub layer: Option<usize>,
    /// How to print.
    pub format: ListFormat,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
}

/// `layerfs ls`: the merged tree, or one layer as stored, on stdout. A
/// reader that stops early (`| head`) ends the listing quietly.
pub fn list(request: &ListRequest) -> Result<(), AppError> {
    let cache = request.cache.open();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match request.layer {
        Some(number) => {
            let path = number
                .checked_sub(1)
                .and_then(|n| request.layers.get(n))
                .ok_or(AppError::NoSuchLayer {
                    number,
                    count: request.layers.len(),
                })?;
            let index = stack::layer_index(path, number, cache.as_ref())?;
            let layer = u32::try_from(number).unwrap_or(u32::MAX);
            list::list_layer(&index, layer, request.format, &mut out)
        }
        None => {
            let stack = Stack::open(
                &request.layers,
                &StackOptions {
                    cache,
                    spill_dir: None,
                },
            )?;
            list::list_tree(stack.tree(), request.format, &mut out)
        }
    };
    match written.and_then(|()| std::io::Write::flush(&mut out)) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(AppError::Output(e)),
        _ => Ok(()),
    }
}

/// What `layerfs export` was asked to do.
#[derive(Debug)]
pub struct ExportRequest {
    /// Layer files, bottom first.
    pub layers: Vec<PathBuf>,
    /// Where the tar goes.
    pub target: Target,
    /// `--compress`, if given (else from the file name).
    pub compression: Option<Compression>,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
    /// No progress bar.
    pub quiet: bool,
}

/// `layerfs export`: the merged tree as one tar, to a file (put in place
/// only when complete) or stdout.
pub fn export(request: &ExportRequest) -> Result<(), AppError> {
    let stack = Stack::open(
        &request.layers,
        &StackOptions {
            cache: request.cache.open(),
            spill_dir: None,
        },
    )?;
    let compression = request.target.compression(request.compression);
    let mut output = LayerOutput::create(request.target.clone(), compression)?;
    output.skip_digests();
    let mut progress = Progress::bytes("export", stack.tree().file_bytes(), request.quiet);
    let mut writer = crate::tar::TarWriter::new(output);
    let exported = export::export_tree(&stack, &mut writer, &mut |done| progress.set(done));
    progress.finish();
    let exported = exported.map_err(|e| match e {
        ExportError::Write(source) => AppError::Write(OutputError::Io {
            target: request.target.to_string(),
            source,
        }),
        e => AppError::Export(e),
    })?;
    let output = writer.finish().map_err(|source| OutputError::Io {
        target: request.target.to_string(),
        source,
    })?;
    let written = output.finish()?;
    log::info!(
        "{}: {} entries, {} bytes of file data; {} bytes of tar, {} bytes written",
        request.target,
        exported.entries,
        exported.data_bytes,
        written.tar_bytes,
        written.blob_bytes,
    );
    Ok(())
}
