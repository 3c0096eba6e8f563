//! The `layerfs` command line: parsing only; the work is in the library.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};
use layerfs::app::{
    self, CacheChoice, CommitRequest, CompareRequest, CreateRequest, DiffRequest, ExportRequest,
    ExtractRequest, IndexExportRequest, IndexPushRequest, InspectRequest, LayerDestination,
    ListRequest, MountRequest,
};
use layerfs::compare::{CompareFormat, CompareOptions};
use layerfs::inputs::LayerInputs;
use layerfs::list::ListFormat;
use layerfs::output::{Compression, Target};

/// Mount a stack of container-image layers as one read-only tree, without
/// extracting them. A layer is a tar (plain, gzip, zstd, bzip2, xz or lz4),
/// an extracted layer directory, or an image standing for its layers: an
/// OCI layout (DIR, DIR:TAG, DIR@DIGEST), an OCI or docker save archive,
/// or a registry reference (HOST/REPO[:TAG|@DIGEST], docker://REF).
#[derive(Parser)]
#[command(name = "layerfs", version, max_term_width = 100)]
struct Cli {
    /// More log output on stderr (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount LAYER... (bottom first; an image stands for its layers, a directory is a layer) read-only at MOUNTPOINT; returns once the mount is ready.
    Mount {
        /// Stay in the foreground until unmounted (SIGINT/SIGTERM unmount).
        #[arg(short, long)]
        foreground: bool,
        /// Mount options, comma-separated: allow_other, allow_root, suid, dev, noexec, no_default_permissions, no_passthrough, fsname=NAME, ...
        #[arg(short = 'o', value_name = "OPT[,OPT...]")]
        options: Vec<String>,
        /// Threads serving requests (default: cores, 2 to 8).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// Where the background daemon writes its log (default: syslog).
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
        /// Mount writable: a kernel overlay over the stack, changes kept in DIR (created if missing).
        #[arg(long, value_name = "DIR", conflicts_with = "foreground")]
        upper: Option<PathBuf>,
        /// The overlay's work directory, on the upper's filesystem (default: .UPPER.layerfs-work beside the upper).
        #[arg(long, value_name = "DIR", requires = "upper")]
        work: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
        #[command(flatten)]
        image: ImageArgs,
        /// Layer files, directories or images, bottom first.
        #[arg(required = true, value_name = "LAYER")]
        layers: Vec<PathBuf>,
        /// The directory to mount on (the last argument).
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
    },
    /// Serve containerd's snapshots API on SOCKET (a proxy plugin): containers start from registry images without pulling them; runs in the foreground.
    Snapshotter {
        /// The unix socket containerd's [proxy_plugins] entry names.
        #[arg(long, value_name = "SOCKET")]
        address: PathBuf,
        /// Where snapshots, their metadata and the layer mounts live.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// Where the snapshotter and its mounts log (default: standard error, and syslog for the mounts).
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
        /// Speak plain HTTP to a registry that is not on loopback.
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// List the merged tree of LAYER... (each path with the layer providing it), or one layer as stored.
    Ls {
        /// Long format: mode, owner, size, mtime, layer, path and link target.
        #[arg(short, long)]
        long: bool,
        /// One JSON object per line.
        #[arg(long, conflicts_with = "long")]
        json: bool,
        /// List layer N (1 = bottom) as stored, whiteouts and duplicates included.
        #[arg(long, value_name = "N")]
        layer: Option<usize>,
        /// After the merged tree, list every whiteout, opaque marker and tombstone and what it hid.
        #[arg(short, long, conflicts_with_all = ["layer", "peek"])]
        all: bool,
        /// List the members in the first BYTES of the one LAYER, or of layer N with --layer (K, M, G suffixes: 64K, 1M), as stored; of a registry's blob, only those bytes are fetched.
        #[arg(long, value_name = "BYTES")]
        peek: Option<String>,
        #[command(flatten)]
        cache: CacheArgs,
        #[command(flatten)]
        image: ImageArgs,
        /// Layer files, directories or images, bottom first.
        #[arg(required = true, value_name = "LAYER")]
        layers: Vec<PathBuf>,
    },
    /// Write the merged tree of LAYER... as one tar (to stdout by default).
    Export {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        cache: CacheArgs,
        #[command(flatten)]
        image: ImageArgs,
        /// Layer files, directories or images, bottom first.
        #[arg(required = true, value_name = "LAYER")]
        layers: Vec<PathBuf>,
    },
    /// Write the files at PATH... of the merged tree of LAYER... to stdout, in order (symlinks followed inside the tree).
    Cat {
        #[command(flatten)]
        stack: StackPaths,
    },
    /// Extract PATH... of the merged tree of LAYER... (directories with their subtrees) into DIR, at their place in the tree.
    Get {
        /// The directory to extract into (default: the current one); nothing is written outside it.
        #[arg(
            short = 'C',
            long = "directory",
            value_name = "DIR",
            default_value = "."
        )]
        dir: PathBuf,
        #[command(flatten)]
        stack: StackPaths,
    },
    /// Print how the merged tree of A... differs from that of B...: `STATUS<TAB>PATH` per path (A added, D deleted, M contents, m metadata, T type); exit 0 if the same, 1 if not, 2 on trouble.
    Compare {
        /// Sizes before and after, between the status and the path.
        #[arg(short, long)]
        long: bool,
        /// One JSON object per line.
        #[arg(long, conflicts_with = "long")]
        json: bool,
        /// Paths and bytes before and after per status, instead of the paths.
        #[arg(long, conflicts_with = "long")]
        summary: bool,
        /// Modification times count as a metadata change.
        #[arg(long)]
        times: bool,
        /// An added or deleted directory (or one that changed type) lists its whole subtree.
        #[arg(short, long)]
        recursive: bool,
        #[command(flatten)]
        cache: CacheArgs,
        #[command(flatten)]
        image: ImageArgs,
        /// The first stack's layer files, directories or images, bottom first.
        #[arg(required = true, value_name = "A")]
        old: Vec<PathBuf>,
        /// The second stack's, after `--`.
        #[arg(required = true, last = true, value_name = "B")]
        new: Vec<PathBuf>,
    },
    /// Show an image's layers: media type, sizes, digest, entries and how many entries below each hides; with --usage, where the bytes go.
    Inspect {
        /// One JSON object per layer (with --usage, per layer, total, directory and file).
        #[arg(long)]
        json: bool,
        /// Where the bytes go: per layer, bytes of files added and bytes of files (its own or below) it hides, still shipped but not shown (wasted); then the largest directories and files of the merged tree. Takes layer files and several images too.
        #[arg(long)]
        usage: bool,
        /// With --usage, how many directories and files to list.
        #[arg(long, value_name = "N", default_value_t = layerfs::usage::DEFAULT_TOP, requires = "usage")]
        top: usize,
        #[command(flatten)]
        cache: CacheArgs,
        #[command(flatten)]
        image: ImageArgs,
        /// An OCI layout directory (DIR, DIR:TAG, DIR@DIGEST), OCI archive, docker save archive or registry reference (HOST/REPO[:TAG|@DIGEST], docker://REF); with --usage, also layer files and directories, bottom first.
        #[arg(value_name = "IMAGE", required = true)]
        image_path: Vec<PathBuf>,
    },
    /// Print a shell completion script (e.g. `layerfs completions bash > /etc/bash_completion.d/layerfs`).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write DIR as one layer (to stdout by default) and print its digests.
    Create {
        #[command(flatten)]
        output: OutputArgs,
        /// No time later than SECONDS since the epoch (later ones become SECONDS).
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
        mtime: Option<i64>,
        /// Read DIR as a mounted directory layer: .wh. files, 0/0 devices and opaque directories become whiteouts.
        #[arg(long)]
        whiteouts: bool,
        /// The directory.
        dir: PathBuf,
    },
    /// Write an overlayfs upper directory (as `mount --upper` leaves it) as one layer, and print its digests.
    Commit {
        #[command(flatten)]
        output: OutputArgs,
        /// No time later than SECONDS since the epoch (later ones become SECONDS).
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
        mtime: Option<i64>,
        /// The upper directory.
        #[arg(value_name = "UPPER")]
        upper: PathBuf,
    },
    /// Write the layer that turns the merged tree of LAYER... into DIR, and print its digests.
    Diff {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        cache: CacheArgs,
        #[command(flatten)]
        image: ImageArgs,
        /// Layer files, directories or images, bottom first.
        #[arg(required = true, value_name = "LAYER")]
        layers: Vec<PathBuf>,
        /// The directory the new layer turns their tree into (the last argument).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Unmount a layerfs mount; its daemon then exits.
    Umount {
        /// Detach the mount now even if it is busy; it goes once no longer used.
        #[arg(short, long)]
        lazy: bool,
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Ship stored indexes: pack a stack's into one bundle file, put a bundle's into the cache, or push an image's to its registry.
    #[command(subcommand)]
    Index(IndexCommand),
}

/// `layerfs index export|push|import`.
#[derive(Subcommand)]
enum IndexCommand {
    /// Index LAYER... (or find them stored) and write their stored indexes and merged tree to FILE.
    Export {
        /// The bundle to write (a tar; appears only when complete).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        cache: IndexCacheArgs,
        #[command(flatten)]
        image: ImageArgs,
        /// Layer files or images (a registry reference), bottom first.
        #[arg(required = true, value_name = "LAYER")]
        layers: Vec<PathBuf>,
    },
    /// Index the registry image REF (or find its indexes stored) and push them to its registry as an artifact referring to the image.
    Push {
        #[command(flatten)]
        cache: IndexCacheArgs,
        #[command(flatten)]
        image: ImageArgs,
        /// The registry image (HOST/REPO[:TAG|@DIGEST] or docker://REF).
        #[arg(value_name = "REF")]
        image_ref: PathBuf,
    },
    /// Put the indexes of each BUNDLE into the index cache.
    Import {
        #[command(flatten)]
        cache: IndexCacheArgs,
        /// Bundles written by `layerfs index export`.
        #[arg(required = true, value_name = "BUNDLE")]
        bundles: Vec<PathBuf>,
    },
}

/// Where a written layer goes (`create`, `diff`).
/// What `cat` and `get` read: paths of a stack's merged tree.
#[derive(Args)]
struct StackPaths {
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    image: ImageArgs,
    /// Layer files, directories or images, bottom first.
    #[arg(required = true, value_name = "LAYER")]
    layers: Vec<PathBuf>,
    /// Paths in the merged tree (after `--`).
    #[arg(last = true, required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

impl StackPaths {
    /// The request `cat` (no `dir`) or `get` makes of these.
    fn request(self, dir: PathBuf, quiet: bool) -> ExtractRequest {
        ExtractRequest {
            layers: self.image.inputs(self.layers),
            paths: self.paths,
            dir,
            cache: self.cache.choice(),
            quiet,
        }
    }
}

#[derive(Args)]
struct OutputArgs {
    /// Write here instead of stdout (`-`: stdout): a file replaced only once complete, a device or FIFO written into.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// none, gzip[:LEVEL] or zstd[:LEVEL], in independent 1 MiB frames (default: from FILE's extension).
    #[arg(long, value_name = "ALGO[:LEVEL]", value_parser = parse_compression)]
    compress: Option<Compression>,
}

impl OutputArgs {
    fn destination(self) -> LayerDestination {
        LayerDestination {
            target: Target::from_arg(self.output.as_deref()),
            compression: self.compress,
        }
    }
}

/// How images among the layer arguments are read.
#[derive(Args, Clone)]
struct ImageArgs {
    /// The manifest of a multi-platform image to use (default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Do not check layers against their digests when first indexed.
    #[arg(long)]
    no_verify: bool,
    /// Check layer N (1 = bottom) against DIGEST when first indexed (repeatable).
    #[arg(long, value_name = "N=DIGEST")]
    digest: Vec<String>,
    /// Speak plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    insecure: bool,
    /// Registry credentials (default: `docker login`'s, from ~/.docker/config.json).
    #[arg(long, value_name = "USER:PASS")]
    creds: Option<String>,
    /// Do not look in the registry for a layerfs index of a registry image (pushed by `index push`).
    #[arg(long)]
    no_remote_index: bool,
}

impl ImageArgs {
    fn inputs(self, args: Vec<PathBuf>) -> LayerInputs {
        LayerInputs {
            args,
            platform: self.platform,
            verify: !self.no_verify,
            digests: self.digest,
            insecure: self.insecure,
            creds: self.creds,
            remote_index: !self.no_remote_index,
        }
    }
}

/// Where layer indexes are kept (`mount`, `ls`, `export`, `inspect`, `diff`).
#[derive(Args)]
struct CacheArgs {
    /// Keep layer indexes here (default: $XDG_CACHE_HOME/layerfs or ~/.cache/layerfs).
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Index every layer; store nothing.
    #[arg(long)]
    no_cache: bool,
}

impl CacheArgs {
    fn choice(self) -> CacheChoice {
        match (self.no_cache, self.cache_dir) {
            (true, _) => CacheChoice::Off,
            (false, Some(dir)) => CacheChoice::Dir(dir),
            (false, None) => CacheChoice::Default,
        }
    }
}

/// The index cache of `layerfs index`, which exists to fill or read it:
/// there is no `--no-cache` to offer.
#[derive(Args)]
struct IndexCacheArgs {
    /// The index cache (default: $XDG_CACHE_HOME/layerfs or ~/.cache/layerfs).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

impl IndexCacheArgs {
    fn choice(self) -> CacheChoice {
        self.cache_dir
            .map_or(CacheChoice::Default, CacheChoice::Dir)
    }
}

/// The names under which layerfs is mount(8)'s helper: `mount -t
/// fuse.layerfs` runs `/sbin/mount.fuse.layerfs`, `mount -t layerfs` runs
/// `/sbin/mount.layerfs`.
const HELPER_NAMES: [&str; 2] = ["mount.fuse.layerfs", "mount.layerfs"];

/// `mount.fuse.layerfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]`, as mount(8)
/// runs it (see `man layerfs`, FSTAB).
#[derive(Parser)]
#[command(name = "mount.fuse.layerfs", version, max_term_width = 100)]
struct HelperCli {
    /// The layers, bottom first, separated by ':' ('\:' for a ':' in a name).
    source: std::ffi::OsString,
    /// The mountpoint.
    mountpoint: PathBuf,
    /// Mount options, comma-separated (repeatable).
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    /// Ignore unknown options (with a warning) instead of failing.
    #[arg(short = 's')]
    sloppy: bool,
    /// Check the source and options; mount nothing.
    #[arg(short = 'f')]
    fake: bool,
    /// No /etc/mtab to update (accepted; there never is one).
    #[arg(short = 'n')]
    no_mtab: bool,
    /// Log what is done (info level).
    #[arg(short = 'v')]
    verbose: bool,
    /// The filesystem type (accepted; it is fuse.layerfs).
    #[arg(short = 't', value_name = "TYPE")]
    fs_type: Option<String>,
}

/// Whether argv[0] names the mount(8) helper.
fn invoked_as_helper() -> bool {
    std::env::args_os().next().is_some_and(|arg0| {
        Path::new(&arg0)
            .file_name()
            .is_some_and(|name| HELPER_NAMES.iter().any(|h| name == *h))
    })
}

fn main() -> ExitCode {
    if invoked_as_helper() {
        let helper = HelperCli::parse();
        layerfs::logging::init(if helper.verbose { "info" } else { "warn" });
        let args = layerfs::fstab::HelperArgs {
            source: helper.source,
            mountpoint: helper.mountpoint,
            options: helper.options,
            sloppy: helper.sloppy,
        };
        return exit(app::mount_helper(args, helper.fake));
    }
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    layerfs::logging::init(level);
    let result = match cli.command {
        Command::Mount {
            foreground,
            options,
            threads,
            log_file,
            upper,
            work,
            cache,
            image,
            layers,
            mountpoint,
        } => app::mount(&MountRequest {
            layers: image.inputs(layers),
            mountpoint,
            options,
            foreground,
            threads,
            log_file,
            cache: cache.choice(),
            quiet: cli.quiet,
            fsname: None,
            upper,
            work,
        }),
        Command::Snapshotter {
            address,
            root,
            log_file,
            insecure,
            cache,
        } => {
            let (cache_dir, no_cache) = match cache.choice() {
                CacheChoice::Off => (None, true),
                CacheChoice::Dir(dir) => (Some(dir), false),
                CacheChoice::Default => (None, false),
            };
            app::snapshotter(&layerfs::snapshotter::SnapshotterOptions {
                address,
                root,
                cache_dir,
                no_cache,
                log_file,
                insecure,
            })
        }
        Command::Ls {
            long,
            json,
            layer,
            all,
            peek,
            cache,
            image,
            layers,
        } => app::list(&ListRequest {
            layers: image.inputs(layers),
            layer,
            format: ListFormat { long, json },
            all,
            peek,
            cache: cache.choice(),
            quiet: cli.quiet,
        }),
        Command::Export {
            output,
            cache,
            image,
            layers,
        } => app::export(&ExportRequest {
            layers: image.inputs(layers),
            output: output.destination(),
            cache: cache.choice(),
            quiet: cli.quiet,
        }),
        Command::Cat { stack } => app::cat(&stack.request(PathBuf::new(), cli.quiet)),
        Command::Get { dir, stack } => app::get(&stack.request(dir, cli.quiet)),
        Command::Create {
            output,
            mtime,
            whiteouts,
            dir,
        } => app::create(&CreateRequest {
            dir,
            output: output.destination(),
            clamp_mtime: mtime,
            whiteouts,
            quiet: cli.quiet,
        }),
        Command::Commit {
            output,
            mtime,
            upper,
        } => app::commit(&CommitRequest {
            upper,
            output: output.destination(),
            clamp_mtime: mtime,
            quiet: cli.quiet,
        }),
        Command::Diff {
            output,
            cache,
            image,
            layers,
            dir,
        } => app::diff(&DiffRequest {
            layers: image.inputs(layers),
            dir,
            output: output.destination(),
            cache: cache.choice(),
            quiet: cli.quiet,
        }),
        Command::Inspect {
            json,
            usage,
            top,
            cache,
            image,
            image_path,
        } => app::inspect(&InspectRequest {
            image: image.inputs(image_path),
            json,
            usage: usage.then_some(top),
            cache: cache.choice(),
            quiet: cli.quiet,
        }),
        Command::Compare {
            long,
            json,
            summary,
            times,
            recursive,
            cache,
            image,
            old,
            new,
        } => {
            let request = CompareRequest {
                old: image.clone().inputs(old),
                new: image.inputs(new),
                options: CompareOptions { times, recursive },
                format: CompareFormat { long, json },
                summary,
                cache: cache.choice(),
                quiet: cli.quiet,
            };
            return compare_exit(app::compare(&request));
        }
        Command::Umount { lazy, mountpoint } => app::umount(&mountpoint, lazy),
        Command::Index(IndexCommand::Export {
            output,
            cache,
            image,
            layers,
        }) => app::index_export(&IndexExportRequest {
            layers: image.inputs(layers),
            output,
            cache: cache.choice(),
            quiet: cli.quiet,
        }),
        Command::Index(IndexCommand::Push {
            cache,
            image,
            image_ref,
        }) => app::index_push(&IndexPushRequest {
            image: image.inputs(vec![image_ref]),
            cache: cache.choice(),
            quiet: cli.quiet,
        }),
        Command::Index(IndexCommand::Import { cache, bundles }) => {
            app::index_import(&bundles, &cache.choice())
        }
        Command::Completions { shell } => return print_completions(shell),
    };
    exit(result)
}

/// The exit status for a command's result, printing its error unless the
/// background child already did.
fn exit(result: Result<(), app::AppError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => layerfs::output::die_of_sigpipe(),
        Err(e) => {
            if !e.already_reported() {
                eprintln!("layerfs: {e}");
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

/// diff(1)'s exit status: 0 the same, 1 different, 2 trouble (the error
/// printed).
fn compare_exit(result: Result<bool, app::AppError>) -> ExitCode {
    match result {
        Ok(differ) => ExitCode::from(u8::from(differ)),
        Err(e) if e.is_broken_pipe() => layerfs::output::die_of_sigpipe(),
        Err(e) => {
            eprintln!("layerfs: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_compression(spec: &str) -> Result<Compression, String> {
    Compression::parse(spec).map_err(|_| "expected none, gzip[:1-9] or zstd[:1-22]".to_string())
}

/// Writes the completion script; a reader that stops early ends the
/// process as SIGPIPE would, as for every command's output.
fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "layerfs", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => layerfs::output::die_of_sigpipe(),
        Err(e) => {
            eprintln!("layerfs: writing the completion script: {e}");
            ExitCode::FAILURE
        }
        Ok(()) => ExitCode::SUCCESS,
    }
}
