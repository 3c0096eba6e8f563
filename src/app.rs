//! The commands behind the CLI, with the context a user needs in errors.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::author::{self, AuthorError, Emitted, Scan, Selection};
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
    /// A layer could not be made from a directory.
    #[error(transparent)]
    Author(#[from] AuthorError),
    /// The digests of a written layer could not be printed.
    #[error("printing the digests: {0}")]
    Digests(std::io::Error),
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
    let output = LayerOutput::create(request.target.clone(), compression)?;
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
        "{}: {} entries, {} bytes of file data; tar {} bytes {}, written {} bytes {}",
        request.target,
        exported.entries,
        exported.data_bytes,
        written.tar_bytes,
        written.diff_id,
        written.blob_bytes,
        written.blob
    );
    Ok(())
}

/// Where a layer written by `create` or `diff` goes.
#[derive(Clone, Debug)]
pub struct LayerDestination {
    /// A file or stdout.
    pub target: Target,
    /// `--compress`, if given (else from the file name).
    pub compression: Option<Compression>,
}

impl CacheChoice {
    /// Opens and merges `layers` with this cache.
    fn open_stack(&self, layers: &[PathBuf]) -> Result<Stack, StackError> {
        Stack::open(
            layers,
            &StackOptions {
                cache: self.open(),
                spill_dir: None,
            },
        )
    }
}

/// What `layerfs create` was asked to do.
#[derive(Debug)]
pub struct CreateRequest {
    /// The directory to turn into a layer.
    pub dir: PathBuf,
    /// Where the layer goes.
    pub output: LayerDestination,
    /// `--mtime`: no time later than this many seconds since the epoch.
    pub clamp_mtime: Option<i64>,
    /// No progress bar, and no digests on stderr.
    pub quiet: bool,
}

/// `layerfs create`: the directory as one layer, then its digests.
pub fn create(request: &CreateRequest) -> Result<(), AppError> {
    let scan = Scan::read(&request.dir)?;
    let selection = author::everything(&scan);
    let written = LayerWrite {
        label: "create",
        output: &request.output,
        clamp_mtime: request.clamp_mtime,
        quiet: request.quiet,
    };
    written.run(&scan, &selection)
}

/// What `layerfs diff` was asked to do.
#[derive(Debug)]
pub struct DiffRequest {
    /// The lower layers, bottom first.
    pub layers: Vec<PathBuf>,
    /// The directory the new layer must turn their tree into.
    pub dir: PathBuf,
    /// Where the layer goes.
    pub output: LayerDestination,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
    /// No progress bar, and no digests on stderr.
    pub quiet: bool,
}

/// `layerfs diff`: the layer that turns the merged tree of the layers into
/// the directory, then its digests.
pub fn diff(request: &DiffRequest) -> Result<(), AppError> {
    let stack = request.cache.open_stack(&request.layers)?;
    let scan = Scan::read(&request.dir)?;
    let mut bar: Option<Progress> = None;
    let planned = author::plan_diff(&stack, &scan, &mut |done, total| {
        bar.get_or_insert_with(|| Progress::bytes("compare", total, request.quiet))
            .set(done);
    });
    if let Some(bar) = bar {
        bar.finish();
    }
    let written = LayerWrite {
        label: "diff",
        output: &request.output,
        clamp_mtime: None,
        quiet: request.quiet,
    };
    written.run(&scan, &planned?)
}

/// How `create` and `diff` write their layer.
struct LayerWrite<'a> {
    /// The progress bar's label.
    label: &'static str,
    output: &'a LayerDestination,
    clamp_mtime: Option<i64>,
    quiet: bool,
}

impl LayerWrite<'_> {
    /// Writes the selected entries of a scan as a layer, then prints its
    /// digests: on stdout when the layer went to a file, else on stderr.
    fn run(&self, scan: &Scan, selection: &Selection) -> Result<(), AppError> {
        let target = &self.output.target;
        let compression = target.compression(self.output.compression);
        let output = LayerOutput::create(target.clone(), compression)?;
        let total = selection.data_bytes(scan);
        let mut progress = Progress::bytes(self.label, total, self.quiet);
        let mut writer = crate::tar::TarWriter::new(output);
        let emitted = author::emit(
            scan,
            selection,
            self.clamp_mtime,
            &mut writer,
            &mut |done| progress.set(done),
        );
        progress.finish();
        let io_error = |source| OutputError::Io {
            target: target.to_string(),
            source,
        };
        let Emitted {
            entries,
            whiteouts,
            data_bytes,
        } = emitted.map_err(|e| match e {
            AuthorError::Write(source) => AppError::Write(io_error(source)),
            e => AppError::Author(e),
        })?;
        let written = writer.finish().map_err(io_error)?.finish()?;
        log::info!(
            "{target}: {entries} entries ({whiteouts} whiteouts), {data_bytes} bytes of file data"
        );
        let report = format!(
            "diff_id {}\nblob {} {}\n",
            written.diff_id, written.blob, written.blob_bytes
        );
        let printed = match target {
            Target::File(_) => std::io::stdout().lock().write_all(report.as_bytes()),
            Target::Stdout if self.quiet => Ok(()),
            Target::Stdout => std::io::stderr().lock().write_all(report.as_bytes()),
        };
        printed.map_err(AppError::Digests)
    }
}
