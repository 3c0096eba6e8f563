//! The commands behind the CLI, with the context a user needs in errors.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::author::{self, AuthorError, Emitted, Selection};
use crate::cache::{self, IndexCache};
use crate::daemon::{self, DaemonError};
use crate::dir::Scan;
use crate::export::{self, ExportError};
use crate::fuse::{self, MountError, MountOptions, OptionError};
use crate::image::Image;
use crate::inputs::{self, InputError, LayerInputs};
use crate::list::{self, ListFormat};
use crate::output::{Compression, LayerOutput, OutputError, Target};
use crate::progress::{MeterBar, Progress};
use crate::source::ReadMeter;
use crate::stack::{self, LayerSpec, Stack, StackError, StackOptions};

/// Any failure of a command; each message names the file or mountpoint.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A layer could not be used.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// An index bundle could not be written or read.
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// `layerfs index` needs an index cache, and none could be opened.
    #[error("layerfs index needs an index cache (not --no-cache; see the warning above for why none could be opened)")]
    NoCache,
    /// A layer argument (an image, `--platform`, `--digest`) was refused.
    #[error(transparent)]
    Inputs(#[from] InputError),
    /// Mounting or unmounting failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// A `-o` option was refused.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// mount(8)'s SOURCE or options field was refused.
    #[error(transparent)]
    Fstab(#[from] crate::fstab::FstabError),
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

    /// Whether the command failed only because the reader of its output
    /// went away (`| head`): it then ends as if killed by SIGPIPE, quietly
    /// (see [`crate::output::die_of_sigpipe`]).
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            AppError::Write(e) => e.is_broken_pipe(),
            AppError::Bundle(e) => e.is_broken_pipe(),
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
    /// (default: the first layer argument).
    pub fsname: Option<String>,
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
    let first = request.layers.args.first().map(|a| a.display().to_string());
    if let Some(fsname) = request.fsname.clone().or(first) {
        options.set_fsname(fsname);
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

/// `layerfs umount`.
pub fn umount(mountpoint: &Path, lazy: bool) -> Result<(), AppError> {
    Ok(fuse::unmount(mountpoint, lazy)?)
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
                let bar = MeterBar::follow("index", &meter, request.quiet);
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
    let cache = request.cache.open().ok_or(AppError::NoCache)?;
    let (specs, _) = inputs::resolve(&request.layers)?;
    let stack = request.cache.open_specs(&specs, false, request.quiet)?;
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
        "{}: {written} index entries for {} layers",
        request.output.display(),
        keys.len()
    );
    Ok(())
}

/// `layerfs index import`: puts each bundle's entries into the cache.
pub fn index_import(bundles: &[PathBuf], cache: &CacheChoice) -> Result<(), AppError> {
    let cache = cache.open().ok_or(AppError::NoCache)?;
    for bundle in bundles {
        let imported = crate::bundle::import(&cache, bundle)?;
        eprintln!(
            "{}: {imported} index entries imported into {}",
            bundle.display(),
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
    let mut progress = Progress::bytes("export", stack.tree().file_bytes(), request.quiet);
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
        "{}: {} entries, {} bytes of file data; {} bytes of tar, {} bytes written",
        target,
        exported.entries,
        exported.data_bytes,
        written.tar_bytes,
        written.blob_bytes,
    );
    Ok(())
}

/// What `layerfs inspect` was asked to do.
#[derive(Debug)]
pub struct InspectRequest {
    /// The image (exactly one argument), `--platform`, `--no-verify`.
    pub image: LayerInputs,
    /// One JSON object per layer instead of a table.
    pub json: bool,
    /// Where layer indexes are cached.
    pub cache: CacheChoice,
    /// No progress bar while indexing.
    pub quiet: bool,
}

/// `layerfs inspect`: indexes (or loads) and merges the image's layers,
/// recording what each whiteout hides, and prints one line per layer.
pub fn inspect(request: &InspectRequest) -> Result<(), AppError> {
    let (stack, images) = request
        .cache
        .open_stack(&request.image, true, request.quiet)?;
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
        let (specs, images) = inputs::resolve(layers)?;
        Ok((self.open_specs(&specs, record_removals, quiet)?, images))
    }

    /// [`CacheChoice::open_stack`] of layers already resolved.
    fn open_specs(
        &self,
        specs: &[LayerSpec],
        record_removals: bool,
        quiet: bool,
    ) -> Result<Stack, AppError> {
        let meter = Arc::new(ReadMeter::default());
        let bar = MeterBar::follow("index", &meter, quiet);
        let stack = Stack::open_specs(
            specs,
            &StackOptions {
                cache: self.open(),
                spill_dir: None,
                record_removals,
                meter: Some(meter),
            },
        );
        bar.finish();
        Ok(stack?)
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
    let scan = author::scan(&request.dir)?;
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
    let inputs = LayerInputs::files(request.layers.clone());
    let (stack, _) = request.cache.open_stack(&inputs, false, request.quiet)?;
    let scan = author::scan(&request.dir)?;
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
