//! layerfs as mount(8)'s helper: `mount -t fuse.layerfs SOURCE DIR -o OPTS`
//! and `/etc/fstab` lines of type `fuse.layerfs`.
//!
//! mount(8) runs `/sbin/mount.fuse.layerfs SOURCE DIR -o OPTS`, having
//! dropped the options that are its own (`noauto`, `x-*`, ...) but not all
//! of them (`user`, `_netdev`, ... still come). One SOURCE must name a
//! whole stack, and the options field of fstab is all there is to say
//! where the index cache or the log goes; this module turns both into a
//! [`MountRequest`].
//!
//! SOURCE is the layers, bottom first, separated by `:`. Each piece is
//! what `layerfs mount` takes as one argument: a layer file or an image.
//! `\:` is a `:` inside a piece (`oci-dir\:v1` is the image `oci-dir:v1`)
//! and `\\` a backslash; the `:` of a digest (`oci-dir@sha256:...`) needs
//! no escape, since a piece holding `@ALGORITHM` right before a `:` cannot
//! be anything else.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::app::{CacheChoice, MountRequest};
use crate::fuse::MountOptions;
use crate::inputs::LayerInputs;

/// Why a helper invocation was refused; each names the SOURCE or option.
#[derive(Debug, thiserror::Error)]
pub enum FstabError {
    /// SOURCE has an empty piece (`a.tar::b.tar`, a leading or trailing `:`).
    #[error("source '{given}': layer {number} is empty (layers are separated by ':', bottom first; '\\:' is a ':' inside a name)")]
    EmptyLayer {
        /// SOURCE as given.
        given: String,
        /// The 1-based position of the empty piece.
        number: usize,
    },
    /// SOURCE ends in a lone backslash.
    #[error("source '{0}': ends in a lone '\\' (write '\\\\' for a backslash, '\\:' for a ':')")]
    TrailingBackslash(String),
    /// An option layerfs does not know.
    #[error(transparent)]
    Option(#[from] crate::fuse::OptionError),
    /// A layerfs option with a bad or missing value.
    #[error("mount option '{option}': {why}")]
    BadValue {
        /// The option as given.
        option: String,
        /// What is wrong with its value.
        why: &'static str,
    },
}

/// What mount(8) passed to the helper.
#[derive(Debug, Default)]
pub struct HelperArgs {
    /// The fstab source field: the layers, `:`-separated.
    pub source: OsString,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// The `-o` lists, in order.
    pub options: Vec<String>,
    /// `-s`: drop unknown options with a warning instead of failing.
    pub sloppy: bool,
}

/// mount(8)'s options that say nothing to layerfs: when to mount (`noauto`,
/// `_netdev`, `nofail`), who may (`user`, `owner`, ...; mount(8) has
/// already added the `nosuid`, `nodev`, `noexec` they imply), and access
/// time and write policies of a filesystem that is never written.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "sync",
    "async",
    "dirsync",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "silent",
    "loud",
];

/// The `mount` a helper invocation asks for: always in the background, so
/// that mount(8) returns once the mount is ready.
pub fn mount_request(args: HelperArgs) -> Result<MountRequest, FstabError> {
    let layers = split_source(&args.source)?;
    let mut request = MountRequest {
        layers: LayerInputs::files(layers),
        mountpoint: args.mountpoint,
        options: Vec::new(),
        foreground: false,
        threads: None,
        log_file: None,
        cache: default_cache(),
        quiet: false,
        fsname: Some(args.source.to_string_lossy().into_owned()),
        upper: None,
        work: None,
    };
    for option in args.options.iter().flat_map(|list| list.split(',')) {
        apply(&mut request, option, args.sloppy)?;
    }
    Ok(request)
}

/// Where a helper mount keeps its index cache unless `cache_dir=` says:
/// mount(8) runs its helpers without `HOME`, so a root mount (at boot, from
/// fstab) would otherwise cache nothing; root's goes to
/// `/var/cache/layerfs`.
fn default_cache() -> CacheChoice {
    if crate::cache::default_dir().is_none() && crate::sys::is_root() {
        CacheChoice::Dir(PathBuf::from(ROOT_CACHE_DIR))
    } else {
        CacheChoice::Default
    }
}

/// The index cache of helper mounts run by root without `HOME`.
pub const ROOT_CACHE_DIR: &str = "/var/cache/layerfs";

/// Applies one option of the fstab options field to `request`.
fn apply(request: &mut MountRequest, option: &str, sloppy: bool) -> Result<(), FstabError> {
    let bad = |why| FstabError::BadValue {
        option: option.to_string(),
        why,
    };
    let (name, value) = match option.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (option, None),
    };
    let path = |value: Option<&str>| match value {
        Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
        _ => Err(bad("expects a path: NAME=PATH")),
    };
    match name {
        "" => {}
        // mount(8) passes `rw` unless `ro` is given: the mount is read-only
        // whatever it says, as the mount table then shows.
        "rw" if value.is_none() => {}
        _ if value.is_none() && IGNORED.contains(&name) => {}
        "comment" => {}
        _ if name.starts_with("x-") => {}
        "cache_dir" => request.cache = CacheChoice::Dir(path(value)?),
        "no_cache" if value.is_none() => request.cache = CacheChoice::Off,
        "log_file" => request.log_file = Some(path(value)?),
        "no_verify" if value.is_none() => request.layers.verify = false,
        "no_remote_index" if value.is_none() => request.layers.remote_index = false,
        "platform" => match value {
            Some(v) if !v.is_empty() => request.layers.platform = Some(v.to_string()),
            _ => return Err(bad("expects OS/ARCH[/VARIANT]")),
        },
        "threads" => match value.and_then(|v| v.parse::<usize>().ok()) {
            Some(n) if n > 0 => request.threads = Some(n),
            _ => return Err(bad("expects a number of threads above 0")),
        },
        _ => match MountOptions::default().parse(option) {
            Ok(()) => request.options.push(option.to_string()),
            Err(crate::fuse::OptionError::Unknown(_)) if sloppy => {
                log::warn!("ignoring unknown mount option '{option}' (-s)");
            }
            Err(e) => return Err(e.into()),
        },
    }
    Ok(())
}

/// The layers SOURCE names, bottom first (see the module's documentation
/// for the syntax).
pub fn split_source(source: &std::ffi::OsStr) -> Result<Vec<PathBuf>, FstabError> {
    let text = || source.to_string_lossy().into_owned();
    let mut layers = Vec::new();
    let mut piece: Vec<u8> = Vec::new();
    let mut bytes = source.as_bytes().iter().copied();
    while let Some(byte) = bytes.next() {
        match byte {
            b'\\' => match bytes.next() {
                Some(next) => piece.push(next),
                None => return Err(FstabError::TrailingBackslash(text())),
            },
            b':' if !ends_in_digest_algorithm(&piece) => {
                layers.push(std::mem::take(&mut piece));
            }
            _ => piece.push(byte),
        }
    }
    layers.push(piece);
    if let Some(empty) = layers.iter().position(Vec::is_empty) {
        return Err(FstabError::EmptyLayer {
            given: text(),
            number: empty + 1,
        });
    }
    Ok(layers
        .into_iter()
        .map(|p| PathBuf::from(OsString::from_vec(p)))
        .collect())
}

/// Whether `piece` ends in `@ALGORITHM` (`@sha256`): the `:` after it
/// begins a digest's hex, not the next layer. ALGORITHM is lower-case
/// letters and digits, with `+._-` between them, as the OCI spec says.
fn ends_in_digest_algorithm(piece: &[u8]) -> bool {
    let Some(at) = piece.iter().rposition(|&b| b == b'@') else {
        return false;
    };
    let algorithm = &piece[at + 1..];
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(b);
    algorithm.first().is_some_and(u8::is_ascii_alphanumeric) && algorithm.iter().all(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::path::Path;

    fn split(source: &str) -> Vec<PathBuf> {
        split_source(OsStr::new(source)).expect(source)
    }

    fn request(options: &str) -> Result<MountRequest, FstabError> {
        mount_request(HelperArgs {
            source: "/l/base.tar:/l/app.tar.zst".into(),
            mountpoint: "/mnt".into(),
            options: vec![options.to_string()],
            sloppy: false,
        })
    }

    #[test]
    fn sources_split_at_colons_bottom_first() {
        assert_eq!(split("base.tar"), [Path::new("base.tar")]);
        assert_eq!(
            split("/l/base.tar.gz:/l/app.tar.zst:patch.tar"),
            [
                Path::new("/l/base.tar.gz"),
                Path::new("/l/app.tar.zst"),
                Path::new("patch.tar")
            ]
        );
    }

    #[test]
    fn escapes_and_digests_keep_their_colons() {
        assert_eq!(
            split(r"/img/oci\:v1:patch.tar"),
            [Path::new("/img/oci:v1"), Path::new("patch.tar")]
        );
        assert_eq!(split(r"a\\b.tar"), [Path::new(r"a\b.tar")]);
        assert_eq!(
            split("/img/oci@sha256:0a1b:top.tar"),
            [Path::new("/img/oci@sha256:0a1b"), Path::new("top.tar")]
        );
        // An '@' that is not followed by an algorithm name splits as usual.
        assert_eq!(
            split("/srv/a@b/x.tar:y.tar"),
            [Path::new("/srv/a@b/x.tar"), Path::new("y.tar")]
        );
        assert_eq!(
            split("me@/x.tar:y.tar"),
            [Path::new("me@/x.tar"), Path::new("y.tar")]
        );
        // A registry reference, its port's and tag's colons escaped.
        assert_eq!(
            split(r"registry.example.com\:5000/app\:1.4:/l/patch.tar"),
            [
                Path::new("registry.example.com:5000/app:1.4"),
                Path::new("/l/patch.tar")
            ]
        );
    }

    #[test]
    fn empty_pieces_and_lone_backslashes_are_refused() {
        for (source, number) in [("a.tar::b.tar", 2), (":a.tar", 1), ("a.tar:", 2), ("", 1)] {
            match split_source(OsStr::new(source)) {
                Err(FstabError::EmptyLayer { number: n, .. }) => assert_eq!(n, number, "{source}"),
                other => panic!("{source:?}: {other:?}"),
            }
        }
        assert!(matches!(
            split_source(OsStr::new(r"a.tar\")),
            Err(FstabError::TrailingBackslash(_))
        ));
    }

    #[test]
    fn non_utf8_names_pass_through() {
        let source = OsStr::from_bytes(b"/l/\xff.tar:/l/b.tar");
        let layers = split_source(source).expect("split");
        assert_eq!(layers[0].as_os_str().as_bytes(), b"/l/\xff.tar");
    }

    #[test]
    fn mount8_options_are_ignored_and_layerfs_options_taken() {
        let r = request(
            "ro,noatime,nosuid,nodev,noexec,user,_netdev,nofail,defaults,relatime,x-systemd.automount,comment=x,allow_other,fsname=img",
        )
        .expect("accepted");
        assert_eq!(
            r.options,
            [
                "ro",
                "noatime",
                "nosuid",
                "nodev",
                "noexec",
                "allow_other",
                "fsname=img"
            ]
        );
        assert!(!r.foreground);
        assert_eq!(r.fsname.as_deref(), Some("/l/base.tar:/l/app.tar.zst"));
        assert_eq!(r.layers.args.len(), 2);
        // What mount(8) passes when no `ro` is given.
        assert!(request("rw").expect("rw is ignored").options.is_empty());
    }

    #[test]
    fn layerfs_settings_come_as_options() {
        let r = request("cache_dir=/var/cache/l,log_file=/var/log/l.log,threads=3,no_verify,platform=linux/arm64")
            .expect("accepted");
        assert_eq!(r.cache, CacheChoice::Dir("/var/cache/l".into()));
        assert_eq!(r.log_file.as_deref(), Some(Path::new("/var/log/l.log")));
        assert_eq!(r.threads, Some(3));
        assert!(!r.layers.verify);
        assert!(r.layers.remote_index);
        assert_eq!(r.layers.platform.as_deref(), Some("linux/arm64"));
        assert!(r.options.is_empty());
        assert_eq!(
            request("no_cache").expect("accepted").cache,
            CacheChoice::Off
        );
        assert!(
            !request("no_remote_index")
                .expect("accepted")
                .layers
                .remote_index
        );
    }

    #[test]
    fn unknown_options_and_bad_values_are_refused() {
        assert!(matches!(
            request("bogus"),
            Err(FstabError::Option(crate::fuse::OptionError::Unknown(_)))
        ));
        for bad in [
            "threads=0",
            "threads=x",
            "cache_dir=",
            "log_file",
            "platform=",
        ] {
            assert!(
                matches!(request(bad), Err(FstabError::BadValue { .. })),
                "{bad}"
            );
        }
        let sloppy = mount_request(HelperArgs {
            source: "a.tar".into(),
            mountpoint: "/mnt".into(),
            options: vec!["bogus,allow_other".into()],
            sloppy: true,
        })
        .expect("sloppy");
        assert_eq!(sloppy.options, ["allow_other"]);
    }
}
