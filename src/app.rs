//! The commands behind the CLI, with the context a user needs in errors.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::author::{self, AuthorError, Emitted, Selection};
use crate::cache::{self, IndexCache};
use crate::compare::{self, CompareError, CompareFormat, CompareOptions, Summary};
use crate::daemon::{self, DaemonError};
use crate::dir::Scan;
use crate::export::{self, ExportError};
use crate::fuse::{self, MountError, MountOptions, OptionError};
use crate::image::Image;
use crate::inputs::{self, InputError, LayerInputs};
use crate::list::{self, ListFormat};
use crate::output::{Compression, LayerOutput, OutputError, Target};
use crate::plural::counted;
use crate::progress::{self, MeterBar, Progress};
use crate::source::ReadMeter;
use crate::stack::{self, LayerSpec, Stack, StackError, StackOptions};
use crate::upper::{self, UpperError, Writable};

/// Any failure of a command; each message names the file or mountpoint.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A layer could not be used.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// An index bundle could not be written or read.
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// A layerfs index artifact could not be pushed.
    #[error(transparent)]
    RemoteIndex(#[from] crate::remote_index::RemoteIndexError),
    /// `index push` was given something other than one registry image.
    #[error(
        "{arg}: index push takes one registry image (HOST/REPO[:TAG|@DIGEST] or docker://REF)"
    )]
    NotRemote {
        /// What was given.
        arg: String,
    },
    /// `layerfs index` needs an index cache, and none could be opened.
    #[error("{command} needs an index cache: {why}")]
    NoCache {
        /// The command (`index export`, `index import`).
        command: &'static str,
        /// Why there is none.
        why: String,
    },
    /// A layer argument (an image, `--platform`, `--digest`) was refused.
    #[error(transparent)]
    Inputs(#[from] InputError),
    /// Mounting or unmounting failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// A writable mount (`--upper`) could not be set up or taken down.
    #[error(transparent)]
    Upper(#[from] UpperError),
    /// A `-o` option was refused.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// mount(8)'s SOURCE or options field was refused.
    #[error(transparent)]
    Fstab(#[from] crate::fstab::FstabError),
    /// The snapshotter could not start or stopped.
    #[error(transparent)]
    Snapshotter(#[from] crate::snapshotter::SnapshotterError),
    /// The background process failed (it has printed its own error).
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// `--layer N` names no layer of those given.
    #[error("--layer {number}: there {} {} (1 = bottom)", if *count == 1 { "is" } else { "are" }, counted(*count, "layer", "layers"))]
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
    /// `--peek` was given something that is not a byte count.
    #[error("--peek {text}: {why}")]
    BadSize {
        /// What was given.
        text: String,
        /// What is wrong with it.
        why: SizeError,
    },
    /// `inspect` was given something other than one image.
    #[error(
        "{arg}: not an image (an OCI layout directory, an OCI archive or a docker save archive)"
    )]
    NotAnImage {
        /// What was given.
        arg: String,
    },
    /// `inspect` without `--usage` was given more than one argument.
    #[error("inspect takes one image; several images or layer files only with --usage")]
    InspectOneImage,
    /// `--peek` was given more than one layer.
    #[error(
        "--peek lists one layer as stored; {count} layers were given (pick one with --layer N)"
    )]
    PeekOneLayer {
        /// How many layers were given.
        count: usize,
    },
    /// A layer could not be made from a directory.
    #[error(transparent)]
    Author(#[from] AuthorError),
    /// Two trees could not be compared.
    #[error(transparent)]
    Compare(CompareError),
    /// The digests of a written layer could not be printed.
    #[error("printing the digests: {0}")]
    Digests(std::io::Error),
    /// Writing the listing failed.
    #[error("writing the listing: {0}")]
    Output(std::io::Error),
    /// `cat` or `get` could not write its output.
    #[error(transparent)]
    Extract(#[from] crate::extract::ExtractError),
    /// Some paths given to `cat` or `get` failed (each already reported).
    #[error("{command}: {} failed", counted(*failed, what.0, what.1))]
    Incomplete {
        /// The command.
        command: &'static str,
        /// What failed, singular and plural.
        what: (&'static str, &'static str),
        /// How many failed.
        failed: u64,
    },
    /// The log file could not be opened.
    #[error("{}: {source}", path.display())]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The exit status of a usage error, as clap's own.
pub const USAGE: i32 = 2;

impl AppError {
    /// The process exit code for this error: [`USAGE`] for an argument
    /// refused before any work (what clap cannot check itself), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Daemon(e) => e.exit_code(),
            AppError::Option(_)
            | AppError::NoSuchLayer { .. }
            | AppError::BadSize { .. }
            | AppError::PeekOneLayer { .. }
            | AppError::InspectOneImage
            | AppError::Inputs(InputError::DigestArg { .. }) => USAGE,
            _ => 1,
        }
    }

    /// Whether the message was already printed (by the background child).
    pub fn already_reported(&self) -> bool {
        matches!(self, AppError::Daemon(DaemonError::ChildFailed(_)))
    }

    /// Whether the command failed only because the reader of its output
    /// went away (`| head`): it then ends as if killed by SIGPIPE, quietly
    /// (see [`crate::output::die_of_sigpipe`]).
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            AppError::Write(e) => e.is_broken_pipe(),
            AppError::Bundle(e) => e.is_broken_pipe(),
            AppError::Extract(e) => e.is_broken_pipe(),
            AppError::Output(e) | AppError::Digests(e) => {
                e.kind() == std::io::ErrorKind::BrokenPipe
            }
            _ => false,
        }
    }
}

/// What `layerfs mount` was asked to do.
#[derive(Debug)]
pub struct MountRequest {
    /// Layer files and images, bottom first.
    pub layers: LayerInputs,
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
    /// No progress bar while indexing.
    pub quiet: bool,
    /// The mount's source in the mount table, unless `-o fsname=` says
    /// (default: [`fuse::stack_source`] of the layer arguments).
    pub fsname: Option<String>,
    /// Mount writable: the kernel overlay over the stack, with this upper
    /// directory (see [`crate::upper`]).
    pub upper: Option<PathBuf>,
    /// The overlay's work directory (default: beside the upper).
    pub work: Option<PathBuf>,
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
    /// left out (it costs speed, never the mount). Without HOME (mount(8)
    /// runs helpers so) that is no surprise, and only logged at info level.
    fn open(&self) -> Option<IndexCache> {
        match self.try_open() {
            Ok(cache) => cache,
            Err(why) if *self == CacheChoice::Default && cache::default_dir().is_none() => {
                log::info!("no index cache: {why}");
                None
            }
            Err(why) => {
                log::warn!("no index cache: {why}");
                None
            }
        }
    }

    /// Opens the chosen cache for `command`, which cannot work without one.
    fn open_required(&self, command: &'static str) -> Result<IndexCache, AppError> {
        match self.try_open() {
            Ok(Some(cache)) => Ok(cache),
            Ok(None) => Err(AppError::NoCache {
                command,
                why: "none was asked for".into(),
            }),
            Err(why) => Err(AppError::NoCache { command, why }),
        }
    }

    /// The chosen cache (`None` if none was asked for), or why it cannot
    /// be used.
    fn try_open(&self) -> Result<Option<IndexCache>, String> {
        let dir = match self {
            CacheChoice::Off => return Ok(None),
            CacheChoice::Dir(dir) => dir.clone(),
            CacheChoice::Default => cache::default_dir().ok_or(
                "neither XDG_CACHE_HOME nor HOME is set (give --cache-dir DIR)".to_string(),
            )?,
        };
        IndexCache::open(&dir, cache::DEFAULT_MAX_BYTES)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// `layerfs mount`: checks everything that can be checked, indexes the
/// layers, mounts, and serves (in the background unless `foreground`).
pub fn mount(request: &MountRequest) -> Result<(), AppError> {
    let mut options = MountOptions::default();
    let fsname = request
        .fsname
        .clone()
        .unwrap_or_else(|| fuse::stack_source(&request.layers.args));
    options.set_fsname(fsname);
    for list in &request.options {
        options.parse(list)?;
    }
    if let Some(threads) = request.threads {
        options.set_threads(threads);
    }
    // Before anything is indexed or started: a mistake costs nothing.
    let mut mountpoint = fuse::check_mountpoint(&request.mountpoint)?;
    if !daemon::is_child() {
        warn_if_not_empty(&mountpoint);
    }
    if let Some(upper_dir) = &request.upper {
        if !daemon::is_child() {
            let writable = upper::prepare(upper_dir, request.work.as_deref(), &mountpoint)?;
            return mount_writable(&writable, &mountpoint);
        }
        // The background child serves the stack at the private lower.
        let upper_dir = upper_dir.canonicalize().map_err(|e| UpperError::BadDir {
            what: "--upper",
            path: upper_dir.clone(),
            reason: e.to_string(),
        })?;
        mountpoint = fuse::check_mountpoint(&upper::lower_of_upper(&upper_dir))?;
        options.set_overlay_lower();
    }
    if !request.foreground && !daemon::is_child() {
        return Ok(daemon::start_in_background(&mountpoint)?);
    }
    let (stack, _) = request
        .cache
        .open_stack(&request.layers, false, request.quiet)?;
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

/// The parent's side of `mount --upper`: the stack mounted read-only at
/// the private lower by a background daemon, then the kernel overlay at
/// `mountpoint`. If either fails, the lower is taken down again (its
/// daemon ends) and the directories made for the mount removed: nothing
/// stays mounted or created.
fn mount_writable(writable: &Writable, mountpoint: &Path) -> Result<(), AppError> {
    if let Err(e) = daemon::start_in_background(&writable.lower) {
        upper::remove_lower(&writable.lower);
        writable.discard();
        return Err(e.into());
    }
    let Err(refused) = upper::mount_overlay(writable, mountpoint) else {
        log::info!(
            "mounted at {} (upper {})",
            mountpoint.display(),
            writable.upper.display()
        );
        return Ok(());
    };
    take_down_lower(&writable.lower, false);
    writable.discard();
    Err(refused.into())
}

/// Unmounts a writable mount's lower, ends its daemon and removes its
/// directory; a failure is only logged (the caller has its own error, or
/// the overlay is already gone).
fn take_down_lower(lower: &Path, lazy: bool) {
    match fuse::unmount(lower, lazy) {
        Ok(unmounted) => daemon::release_stopped(&unmounted, lazy),
        Err(e) => log::warn!("taking down the lower mount: {e}"),
    }
    upper::remove_lower(lower);
}

/// Says that mounting on a directory that holds something hides it, as
/// mount(8) users expect to hear (the mount goes ahead).
fn warn_if_not_empty(mountpoint: &Path) {
    let holds_something =
        std::fs::read_dir(mountpoint).is_ok_and(|mut entries| entries.next().is_some());
    if holds_something {
        log::warn!(
            "{}: not empty; the mount hides what it holds until it is unmounted",
            mountpoint.display()
        );
    }
}

/// `mount.fuse.layerfs`, as mount(8) runs it: mounts in the background and
/// returns once the mount is ready. `fake` (`-f`) checks the source and
/// options and mounts nothing.
pub fn mount_helper(args: crate::fstab::HelperArgs, fake: bool) -> Result<(), AppError> {
    let request = crate::fstab::mount_request(args)?;
    if fake {
        return Ok(());
    }
    mount(&request)
}

/// `layerfs snapshotter`: serves containerd until SIGINT or SIGTERM.
pub fn snapshotter(options: &crate::snapshotter::SnapshotterOptions) -> Result<(), AppError> {
    Ok(crate::snapshotter::run(options)?)
}

/// `layerfs umount`.
/// The overlay of a writable mount goes first, then its lower (found in
/// the mount table, so that a dead daemon below changes nothing).
pub fn umount(mountpoint: &Path, lazy: bool) -> Result<(), AppError> {
    let target = fuse::resolve_parent(mountpoint)?;
    if let Some(lower) = upper::writable_lower(&target)? {
        upper::unmount_overlay(&target, lazy)?;
        take_down_lower(&lower, lazy);
        return Ok(());
    }
    let unmounted = fuse::unmount(mountpoint, lazy)?;
    daemon::release_stopped(&unmounted, lazy);
    Ok(())
}

/// What `layerfs ls` was asked to do.
#[derive(Debug)]
pub struct ListRequest {
    /// Layer files and images, bottom first.
    pub layers: LayerInputs,
    /// List this layer (1 = bottom) as stored instead of the merged tree.
    pub layer: Option<usize>,
    /// How to print.
    pub format: ListFormat,
    /// After the merged tree, list each whiteout and what it hid.
    pub all: bool,
    /// List only the members in this many first bytes of the one layer
    /// given (a number with an optional K, M or G suffix), as stored.
    pub peek: Option<String>,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
    /// No progress bar while indexing.
    pub quiet: bool,
}

/// `layerfs ls`: the merged tree, or one layer as stored, or the head of
/// one layer, on stdout. A reader that stops early (`| head`) ends the
/// listing with a broken pipe, which `main` ends quietly.
pub fn list(request: &ListRequest) -> Result<(), AppError> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written =
        match (&request.peek, request.layer) {
            (Some(text), _) => {
                let limit = parse_size(text).map_err(|why| AppError::BadSize {
                    text: text.clone(),
                    why,
                })?;
                let (specs, _) = inputs::resolve(&request.layers)?;
                let number = match (request.layer, specs.len()) {
                    (Some(number), _) => number,
                    (None, 1) => 1,
                    (None, count) => return Err(AppError::PeekOneLayer { count }),
                };
                let spec = number.checked_sub(1).and_then(|n| specs.get(n)).ok_or(
                    AppError::NoSuchLayer {
                        number,
                        count: specs.len(),
                    },
                )?;
                let peek = stack::peek_spec(spec, number, limit)?;
                let layer = u32::try_from(number).unwrap_or(u32::MAX);
                list::list_layer(&peek.index, layer, request.format, &mut out)
                    .and_then(|()| list::peek_summary(&peek, request.format, &mut out))
            }
            (None, Some(number)) => {
                let cache = request.cache.open();
                let (specs, _) = inputs::resolve(&request.layers)?;
                let spec = number.checked_sub(1).and_then(|n| specs.get(n)).ok_or(
                    AppError::NoSuchLayer {
                        number,
                        count: specs.len(),
                    },
                )?;
                let meter = Arc::new(ReadMeter::default());
                let what =
                    progress::label(&format!("index layer {number} of"), &request.layers.args);
                let bar = MeterBar::follow(&what, &meter, request.quiet);
                let index = stack::layer_index(spec, number, cache.as_ref(), Some(&meter));
                bar.finish();
                let index = index?;
                let layer = u32::try_from(number).unwrap_or(u32::MAX);
                list::list_layer(&index, layer, request.format, &mut out)
            }
            (None, None) => {
                let (stack, _) =
                    request
                        .cache
                        .open_stack(&request.layers, request.all, request.quiet)?;
                list::list_tree(stack.tree(), request.format, &mut out)
                    .and_then(|()| list::list_removals(stack.removals(), request.format, &mut out))
            }
        };
    written
        .and_then(|()| std::io::Write::flush(&mut out))
        .map_err(AppError::Output)
}

/// What `layerfs compare` was asked to do.
#[derive(Debug)]
pub struct CompareRequest {
    /// The first stack (the one before), bottom first.
    pub old: LayerInputs,
    /// The second stack (the one after), bottom first.
    pub new: LayerInputs,
    /// What counts as a difference.
    pub options: CompareOptions,
    /// How each difference is printed.
    pub format: CompareFormat,
    /// Counts and bytes per status instead of the differences.
    pub summary: bool,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
    /// No progress bar while indexing.
    pub quiet: bool,
}

/// `layerfs compare`: prints how the merged tree of `old` differs from
/// that of `new`; returns whether it does (diff(1)'s exit status 1).
pub fn compare(request: &CompareRequest) -> Result<bool, AppError> {
    let (old_specs, _) = inputs::resolve(&request.old)?;
    let old = request
        .cache
        .open_specs(&old_specs, &request.old.args, false, request.quiet)?;
    let (new_specs, _) = inputs::resolve(&request.new)?;
    let new = request
        .cache
        .open_specs(&new_specs, &request.new.args, false, request.quiet)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut summary = Summary::default();
    let format = request.format;
    let (old, new) = (
        compare::Side {
            stack: &old,
            specs: &old_specs,
        },
        compare::Side {
            stack: &new,
            specs: &new_specs,
        },
    );
    let outcome = compare::compare(old, new, request.options, &mut |change| {
        if request.summary {
            summary.add(change);
            Ok(())
        } else {
            compare::write_change(change, format, &mut out)
        }
    })
    .map_err(|e| match e {
        CompareError::Output(e) => AppError::Output(e),
        e => AppError::Compare(e),
    })?;
    if request.summary {
        summary
            .write(format.json, &mut out)
            .map_err(AppError::Output)?;
    }
    out.flush().map_err(AppError::Output)?;
    log::info!(
        "compare: read {} bytes of file contents",
        outcome.bytes_read
    );
    Ok(outcome.changed)
}

/// What `layerfs index export` was asked to do.
#[derive(Debug)]
pub struct IndexExportRequest {
    /// Layer files and images, bottom first.
    pub layers: LayerInputs,
    /// The bundle to write.
    pub output: PathBuf,
    /// The index cache the entries come from (indexing what is missing).
    pub cache: CacheChoice,
    /// No progress bar.
    pub quiet: bool,
}

/// `layerfs index export`: indexes the stack (or finds it stored) and
/// packs its stored indexes into one bundle file; prints what it wrote.
pub fn index_export(request: &IndexExportRequest) -> Result<(), AppError> {
    let cache = request.cache.open_required("index export")?;
    let (specs, _) = inputs::resolve(&request.layers)?;
    let stack = request
        .cache
        .open_specs(&specs, &request.layers.args, false, request.quiet)?;
    let keys = stack.cache_keys(&specs);
    for (n, (key, layer)) in keys.iter().zip(stack.layers()).enumerate() {
        if key.as_ref().is_some_and(|k| k.digest.is_none()) {
            log::warn!(
                "layer {} ({}) is a local file: its index is keyed by that file and serves no other machine",
                n + 1,
                layer.path().display()
            );
        }
    }
    let paths: Vec<&Path> = stack.layers().iter().map(|l| l.path()).collect();
    let written = crate::bundle::export(&cache, &keys, &paths, &request.output)?;
    eprintln!(
        "{}: {} for {}",
        request.output.display(),
        counted(written, "index entry", "index entries"),
        counted(keys.len(), "layer", "layers")
    );
    Ok(())
}

/// What `layerfs index push` was asked to do.
#[derive(Debug)]
pub struct IndexPushRequest {
    /// The registry image (one argument).
    pub image: LayerInputs,
    /// The index cache the entries come from (indexing what is missing).
    pub cache: CacheChoice,
    /// No progress bar.
    pub quiet: bool,
}

/// `layerfs index push`: indexes the image's layers (or finds them
/// stored) and uploads their indexes to its registry as an artifact that
/// refers to the image (see [`crate::remote_index`]); prints what it
/// pushed.
pub fn index_push(request: &IndexPushRequest) -> Result<(), AppError> {
    let not_remote = || AppError::NotRemote {
        arg: request
            .image
            .args
            .iter()
            .map(|a| a.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
    };
    if request.image.args.len() != 1 {
        return Err(not_remote());
    }
    let (specs, _, remotes) = inputs::resolve_all(&request.image)?;
    let [remote] = remotes.as_slice() else {
        return Err(not_remote());
    };
    let cache = request.cache.open_required("index push")?;
    if request.image.remote_index {
        crate::remote_index::fetch(&cache, remote);
    }
    open_specs_in(
        Some(cache),
        &specs,
        &request.image.args,
        false,
        request.quiet,
    )?;
    // The stack took the cache with it: opened again, to read what it
    // stored.
    let cache = request.cache.open_required("index push")?;
    let pushed = crate::remote_index::push(&cache, remote)?;
    let tag = pushed
        .fallback_tag
        .map(|tag| format!(", listed in the referrers tag {tag}"))
        .unwrap_or_default();
    eprintln!(
        "{}: layerfs index {} pushed ({}){tag}",
        remote.name,
        pushed.digest,
        counted(remote.layers.len(), "layer", "layers"),
    );
    Ok(())
}

/// `layerfs index import`: puts each bundle's entries into the cache.
pub fn index_import(bundles: &[PathBuf], cache: &CacheChoice) -> Result<(), AppError> {
    let cache = cache.open_required("index import")?;
    for bundle in bundles {
        let imported = crate::bundle::import(&cache, bundle)?;
        eprintln!(
            "{}: {} imported into {}",
            bundle.display(),
            counted(imported, "index entry", "index entries"),
            cache.dir().display()
        );
    }
    Ok(())
}

/// What `layerfs export` was asked to do.
#[derive(Debug)]
pub struct ExportRequest {
    /// Layer files and images, bottom first.
    pub layers: LayerInputs,
    /// Where the tar goes.
    pub output: LayerDestination,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
    /// No progress bar.
    pub quiet: bool,
}

/// `layerfs export`: the merged tree as one tar, to a file (put in place
/// only when complete) or stdout.
pub fn export(request: &ExportRequest) -> Result<(), AppError> {
    let (stack, _) = request
        .cache
        .open_stack(&request.layers, false, request.quiet)?;
    let target = &request.output.target;
    let compression = target.compression(request.output.compression);
    let mut output = LayerOutput::create(target.clone(), compression)?;
    output.skip_digests();
    let what = progress::label("export", &request.layers.args);
    let mut progress = Progress::bytes(&what, stack.tree().file_bytes(), request.quiet);
    let mut writer = crate::tar::TarWriter::new(output);
    let exported = export::export_tree(&stack, &mut writer, &mut |done| progress.set(done));
    progress.finish();
    let exported = exported.map_err(|e| match e {
        ExportError::Write(source) => AppError::Write(OutputError::Io {
            target: target.to_string(),
            source,
        }),
        e => AppError::Export(e),
    })?;
    let output = writer.finish().map_err(|source| OutputError::Io {
        target: target.to_string(),
        source,
    })?;
    let written = output.finish()?;
    log::info!(
        "{}: {}, {} bytes of file data; {} bytes of tar, {} bytes written",
        target,
        counted(exported.entries, "entry", "entries"),
        exported.data_bytes,
        written.tar_bytes,
        written.blob_bytes,
    );
    Ok(())
}

/// What `layerfs cat` and `layerfs get` were asked to do.
#[derive(Debug)]
pub struct ExtractRequest {
    /// Layer files and images, bottom first.
    pub layers: LayerInputs,
    /// Paths in the merged tree.
    pub paths: Vec<PathBuf>,
    /// `get`'s destination directory (`cat` writes to stdout).
    pub dir: PathBuf,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
    /// No progress bar while indexing.
    pub quiet: bool,
}

impl ExtractRequest {
    fn tree_paths(&self) -> Vec<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        self.paths
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect()
    }
}

/// Prints a path that `cat` or `get` could not do, and goes on.
fn report_path(command: &str, e: &crate::extract::ExtractError) {
    eprintln!("layerfs: {command}: {e}");
}

/// `layerfs cat`: the files at the paths, in order, to stdout; a path
/// that fails is reported and the others still written (exit status 1).
pub fn cat(request: &ExtractRequest) -> Result<(), AppError> {
    let (stack, _) = request
        .cache
        .open_stack(&request.layers, false, request.quiet)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let failed = crate::extract::cat(&stack, &request.tree_paths(), &mut out, &mut |e| {
        report_path("cat", e);
    })?;
    match failed {
        0 => Ok(()),
        n => Err(AppError::Incomplete {
            command: "cat",
            what: ("path", "paths"),
            failed: n as u64,
        }),
    }
}

/// `layerfs get`: the paths, with their subtrees, made below the
/// directory; what fails is reported and the rest still made (exit 1).
pub fn get(request: &ExtractRequest) -> Result<(), AppError> {
    let (stack, _) = request
        .cache
        .open_stack(&request.layers, false, request.quiet)?;
    let got = crate::extract::get(&stack, &request.tree_paths(), &request.dir, &mut |e| {
        report_path("get", e);
    })?;
    log::info!(
        "{}: {}",
        request.dir.display(),
        counted(got.entries, "entry", "entries")
    );
    match got.failed {
        0 => Ok(()),
        failed => Err(AppError::Incomplete {
            command: "get",
            what: ("path or entry", "paths or entries"),
            failed,
        }),
    }
}

/// What `layerfs inspect` was asked to do.
#[derive(Debug)]
pub struct InspectRequest {
    /// The image (exactly one argument, unless `usage`), `--platform`,
    /// `--no-verify`.
    pub image: LayerInputs,
    /// JSON lines instead of tables.
    pub json: bool,
    /// `--usage`, with how many directories and files to list (`--top`).
    pub usage: Option<usize>,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
    /// No progress bar while indexing.
    pub quiet: bool,
}

/// `layerfs inspect`: indexes (or loads) and merges the image's layers,
/// recording what each whiteout hides, and prints one line per layer.
pub fn inspect(request: &InspectRequest) -> Result<(), AppError> {
    if request.usage.is_none() && request.image.args.len() != 1 {
        return Err(AppError::InspectOneImage);
    }
    let (stack, images) = request
        .cache
        .open_stack(&request.image, true, request.quiet)?;
    if let Some(top) = request.usage {
        return inspect_usage(&stack, &images, top, request.json);
    }
    let [image] = images.as_slice() else {
        return Err(AppError::NotAnImage {
            arg: request
                .image
                .args
                .iter()
                .map(|a| a.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        });
    };
    if stack.layers().len() != image.layers.len() {
        return Err(AppError::NotAnImage {
            arg: image.name.clone(),
        });
    }
    let reports = crate::inspect::report(image, &stack);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if request.json {
        crate::inspect::write_json(&reports, &mut out)
    } else {
        crate::inspect::write_text(&reports, &mut out)
    };
    written.and_then(|()| out.flush()).map_err(AppError::Output)
}

/// `layerfs inspect --usage`: where the bytes of the layers go. Layers
/// are named by the digests their images give when every argument is an
/// image, else by their files.
fn inspect_usage(stack: &Stack, images: &[Image], top: usize, json: bool) -> Result<(), AppError> {
    let digests: Vec<Option<crate::digest::Digest>> = images
        .iter()
        .flat_map(|image| image.layers.iter().map(|layer| layer.digest.clone()))
        .collect();
    let digests = if digests.len() == stack.layers().len() {
        digests
    } else {
        Vec::new()
    };
    let usage = crate::usage::usage(stack, &digests, top);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if json {
        crate::usage::write_json(&usage, &mut out)
    } else {
        crate::usage::write_text(&usage, &mut out)
    };
    written.and_then(|()| out.flush()).map_err(AppError::Output)
}

/// Why a byte count was refused.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    /// Not a number with an optional K, M or G suffix.
    #[error("not a byte count (a number, optionally with K, M or G: 64K, 1M)")]
    Garbage,
    /// Zero bytes.
    #[error("must be more than 0 bytes")]
    Zero,
    /// More bytes than a 64-bit count holds.
    #[error("too large")]
    TooLarge,
}

/// A byte count: digits, optionally followed by K, M or G (KiB, MiB, GiB:
/// powers of 1024; `k`, `KiB` and `K` alike), never 0.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(SizeError::Garbage),
    };
    if number.is_empty() {
        return Err(SizeError::Garbage);
    }
    let value: u64 = number.parse().map_err(|_| SizeError::TooLarge)?;
    if value == 0 {
        return Err(SizeError::Zero);
    }
    value.checked_mul(1 << shift).ok_or(SizeError::TooLarge)
}

/// Where a layer written by `export`, `create` or `diff` goes.
#[derive(Clone, Debug)]
pub struct LayerDestination {
    /// A file or stdout.
    pub target: Target,
    /// `--compress`, if given (else from the file name).
    pub compression: Option<Compression>,
}

impl CacheChoice {
    /// Resolves `layers` (images expanded), opens and merges them with
    /// this cache, recording what whiteouts remove if asked, with a
    /// progress bar over the layers read unless `quiet`; returns the stack
    /// and the images among the arguments.
    fn open_stack(
        &self,
        layers: &LayerInputs,
        record_removals: bool,
        quiet: bool,
    ) -> Result<(Stack, Vec<Image>), AppError> {
        let (specs, images, remotes) = inputs::resolve_all(layers)?;
        let cache = self.open();
        if let (Some(cache), true) = (&cache, layers.remote_index) {
            for remote in &remotes {
                crate::remote_index::fetch(cache, remote);
            }
        }
        let stack = open_specs_in(cache, &specs, &layers.args, record_removals, quiet)?;
        Ok((stack, images))
    }

    /// [`CacheChoice::open_stack`] of layers already resolved from `args`
    /// (which the progress bar names).
    fn open_specs(
        &self,
        specs: &[LayerSpec],
        args: &[PathBuf],
        record_removals: bool,
        quiet: bool,
    ) -> Result<Stack, AppError> {
        open_specs_in(self.open(), specs, args, record_removals, quiet)
    }
}

/// Opens and merges `specs` (resolved from `args`, which the progress bar
/// names) with `cache`.
fn open_specs_in(
    cache: Option<IndexCache>,
    specs: &[LayerSpec],
    args: &[PathBuf],
    record_removals: bool,
    quiet: bool,
) -> Result<Stack, AppError> {
    let meter = Arc::new(ReadMeter::default());
    let bar = MeterBar::follow(&progress::label("index", args), &meter, quiet);
    let stack = Stack::open_specs(
        specs,
        &StackOptions {
            cache,
            spill_dir: None,
            record_removals,
            meter: Some(meter),
        },
    );
    bar.finish();
    Ok(stack?)
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
    /// `--whiteouts`: read the directory's whiteouts and opaque markers as
    /// a directory layer's, instead of refusing them.
    pub whiteouts: bool,
    /// No progress bar, and no digests on stderr.
    pub quiet: bool,
}

/// `layerfs create`: the directory as one layer, then its digests.
pub fn create(request: &CreateRequest) -> Result<(), AppError> {
    let (scan, selection) = if request.whiteouts {
        author::scan_layer(&request.dir)?
    } else {
        let scan = author::scan(&request.dir)?;
        let selection = author::everything(&scan);
        (scan, selection)
    };
    let written = LayerWrite {
        label: progress::label("create", &[&request.dir]),
        output: &request.output,
        clamp_mtime: request.clamp_mtime,
        quiet: request.quiet,
    };
    written.run(&scan, &selection)
}

/// What `layerfs commit` was asked to do.
#[derive(Debug)]
pub struct CommitRequest {
    /// The overlayfs upper directory.
    pub upper: PathBuf,
    /// Where the layer goes.
    pub output: LayerDestination,
    /// `--mtime`: no time later than this many seconds since the epoch.
    pub clamp_mtime: Option<i64>,
    /// No progress bar, and no digests on stderr.
    pub quiet: bool,
}

/// `layerfs commit`: an overlayfs upper directory as one OCI layer (its
/// whiteouts and opaque directories as OCI markers), then its digests.
pub fn commit(request: &CommitRequest) -> Result<(), AppError> {
    let (scan, selection) = author::scan_upper(&request.upper)?;
    let written = LayerWrite {
        label: progress::label("commit", &[&request.upper]),
        output: &request.output,
        clamp_mtime: request.clamp_mtime,
        quiet: request.quiet,
    };
    written.run(&scan, &selection)
}

/// What `layerfs diff` was asked to do.
#[derive(Debug)]
pub struct DiffRequest {
    /// The lower layers, bottom first (images among them).
    pub layers: LayerInputs,
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
    let (stack, _) = request
        .cache
        .open_stack(&request.layers, false, request.quiet)?;
    let scan = author::scan(&request.dir)?;
    let mut bar: Option<Progress> = None;
    let planned = author::plan_diff(&stack, &scan, &mut |done, total| {
        bar.get_or_insert_with(|| {
            let what = progress::label("compare", &[&request.dir]);
            Progress::bytes(&what, total, request.quiet)
        })
        .set(done);
    });
    if let Some(bar) = bar {
        bar.finish();
    }
    let written = LayerWrite {
        label: progress::label("diff", &[&request.dir]),
        output: &request.output,
        clamp_mtime: None,
        quiet: request.quiet,
    };
    written.run(&scan, &planned?)
}

/// How `create` and `diff` write their layer.
struct LayerWrite<'a> {
    /// The progress bar's label.
    label: String,
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
        let mut progress = Progress::bytes(&self.label, total, self.quiet);
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
            "{target}: {} ({}), {data_bytes} bytes of file data",
            counted(entries, "entry", "entries"),
            counted(whiteouts, "whiteout", "whiteouts")
        );
        let (Some(diff_id), Some(blob)) = (written.diff_id, written.blob) else {
            let missing = std::io::Error::other("the layer's digests were not computed");
            return Err(AppError::Digests(missing));
        };
        let report = format!("diff_id {diff_id}\nblob {blob} {}\n", written.blob_bytes);
        let printed = match target {
            Target::File(_) => std::io::stdout().lock().write_all(report.as_bytes()),
            Target::Stdout if self.quiet => Ok(()),
            Target::Stdout => std::io::stderr().lock().write_all(report.as_bytes()),
        };
        printed.map_err(AppError::Digests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("1").ok(), Some(1));
        assert_eq!(parse_size("65536").ok(), Some(65_536));
        assert_eq!(parse_size("64K").ok(), Some(65_536));
        assert_eq!(parse_size("64k").ok(), Some(65_536));
        assert_eq!(parse_size("64KiB").ok(), Some(65_536));
        assert_eq!(parse_size("1M").ok(), Some(1 << 20));
        assert_eq!(parse_size("3G").ok(), Some(3 << 30));
        assert_eq!(parse_size("100b").ok(), Some(100));
    }

    #[test]
    fn zero_garbage_and_overflow_are_refused() {
        assert!(matches!(parse_size("0"), Err(SizeError::Zero)));
        assert!(matches!(parse_size("0K"), Err(SizeError::Zero)));
        for garbage in [
            "", "K", "abc", "1.5M", "-1", " 1", "1 K", "1KB", "1T", "12x",
        ] {
            assert!(
                matches!(parse_size(garbage), Err(SizeError::Garbage)),
                "{garbage:?}"
            );
        }
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::TooLarge)
        ));
        assert!(matches!(
            parse_size("17179869184G"),
            Err(SizeError::TooLarge)
        ));
    }
}
