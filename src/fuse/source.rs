//! The source a mount shows in the mount table (`findmnt`, `mount`,
//! /proc/self/mountinfo): the whole stack, spelled as an fstab source takes
//! it, so that it says which layers are mounted from any directory and can
//! be pasted into /etc/fstab.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The longest source written out in full. The kernel takes up to 4095
/// bytes; a mount table line that long helps nobody, so past this a stack
/// is named by its first layer and how many follow.
const MAX_SOURCE: usize = 1024;

/// The mount table source for the layer arguments `args` (bottom first):
/// each made absolute if it names something here (a layer file, a
/// directory, an image, `DIR:TAG`), registry references as given, with
/// `\` and `:` escaped by `\`, joined by `:` (fstab's `fuse.layerfs`
/// SOURCE syntax). Beyond [`MAX_SOURCE`] bytes: `FIRST (+N more)`.
pub fn stack_source(args: &[PathBuf]) -> String {
    let pieces: Vec<String> = args.iter().map(|arg| escape(&absolute(arg))).collect();
    let joined = pieces.join(":");
    match pieces.first() {
        Some(first) if joined.len() > MAX_SOURCE => {
            format!("{first} (+{} more)", pieces.len() - 1)
        }
        _ => joined,
    }
}

/// `arg` made absolute if it names something local (as a path, or as
/// `DIR:TAG`/`DIR@DIGEST` of a local image); anything else (a registry
/// reference) as given. Only the names are looked at, lexically: nothing
/// is resolved through symlinks.
fn absolute(arg: &Path) -> PathBuf {
    let text = arg.as_os_str().as_bytes();
    if arg.is_absolute() || text.starts_with(b"docker://") {
        return arg.to_path_buf();
    }
    let local_image = [b':', b'@'].iter().any(|sep| {
        text.iter().rposition(|b| b == sep).is_some_and(|at| {
            at > 0
                && Path::new(OsStr::from_bytes(&text[..at]))
                    .symlink_metadata()
                    .is_ok()
        })
    });
    if arg.symlink_metadata().is_ok() || local_image {
        std::path::absolute(arg).unwrap_or_else(|_| arg.to_path_buf())
    } else {
        arg.to_path_buf()
    }
}

/// `\` and `:` escaped with `\`, as fstab's SOURCE splits on `:`.
fn escape(path: &Path) -> String {
    super::options::backslash_escaped(&path.to_string_lossy(), &['\\', ':'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_layers_become_absolute_and_references_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layer = dir.path().join("a.tar");
        std::fs::write(&layer, b"").expect("layer");
        let source = stack_source(&[layer.clone(), PathBuf::from("ghcr.io/x/y:1")]);
        assert_eq!(
            source,
            format!("{}:ghcr.io/x/y\\:1", layer.display()),
            "{source}"
        );
        let cwd = std::env::current_dir().expect("cwd");
        let relative = PathBuf::from("Cargo.toml");
        assert_eq!(
            stack_source(&[relative]),
            cwd.join("Cargo.toml").display().to_string()
        );
        assert_eq!(
            stack_source(&[PathBuf::from("src:v1")]),
            format!("{}/src\\:v1", cwd.display())
        );
    }

    #[test]
    fn the_source_splits_back_into_the_layers() {
        let args = [PathBuf::from("/l/a:b.tar"), PathBuf::from("/l/c\\d.tar")];
        let source = stack_source(&args);
        let split = crate::fstab::split_source(OsStr::new(&source)).expect("splits");
        assert_eq!(split, args);
    }

    #[test]
    fn a_long_stack_is_named_by_its_first_layer_and_a_count() {
        let args: Vec<PathBuf> = (0..100)
            .map(|n| PathBuf::from(format!("/layers/{n:040}.tar.gz")))
            .collect();
        let source = stack_source(&args);
        assert_eq!(source, format!("{} (+99 more)", args[0].display()));
    }
}
