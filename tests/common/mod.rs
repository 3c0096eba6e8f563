//! Shared harness for the layerfs integration tests.
//!
//! * `layer`: builds tar layers member by member in any dialect and codec;
//! * `tree`: snapshots a mounted (or reference) tree and compares it with an
//!   exact expectation, printing a path-by-path diff;
//! * `mount`: runs the binary and owns every mount so none outlives a test;
//! * `oci`: writes OCI image layouts by hand;
//! * `raw`: tar layers block by block, and the cases tar readers disagree on;
//! * `registry`, `proxy`, `http`: a real registry on loopback and a
//!   counting, fault-injecting proxy in front of it;
//! * `needs`: `require!(Fuse)` and the like, which skip a test (or, in CI,
//!   fail it) on a machine without root, `/dev/fuse` or a tool.
//! * `containerd`: a private containerd (and `ctr`, `ctr-remote`) for the
//!   snapshotter tests.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod containerd;
pub mod http;
pub mod layer;
pub mod mount;
pub mod needs;
pub mod oci;
pub mod proxy;
pub mod raw;
pub mod registry;
pub mod tree;

use std::path::{Path, PathBuf};

use tempfile::TempDir;

#[allow(unused_imports)]
pub use layer::{Codec, Format, Layer};
pub use mount::Mount;
pub use tree::{assert_tree, Expected};

/// A temporary directory holding the layer files of one test.
pub struct Layers {
    dir: TempDir,
    pub paths: Vec<PathBuf>,
}

impl Default for Layers {
    fn default() -> Self {
        Self::new()
    }
}

impl Layers {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-layers")
            .tempdir()
            .expect("layers tempdir");
        Layers {
            dir,
            paths: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds `layer` on top of the stack as a plain tar.
    pub fn add(&mut self, layer: &Layer) -> &mut Self {
        self.add_encoded(layer, Codec::Plain)
    }

    pub fn add_encoded(&mut self, layer: &Layer, codec: Codec) -> &mut Self {
        self.add_bytes(&codec.encode(&layer.to_tar()))
    }

    /// Adds a layer file with exactly these bytes.
    pub fn add_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let name = format!("layer{:03}", self.paths.len());
        let path = layer::write_file(self.dir.path(), &name, bytes);
        self.paths.push(path);
        self
    }

    pub fn mount(&self) -> Mount {
        Mount::new(&self.paths)
    }
}

/// Mounts `layers` (bottom first, plain tar) and asserts the merged tree;
/// then asserts the same tree in `layerfs export` of the stack, mounted
/// back and extracted by GNU tar, so every merge case also checks export.
pub fn assert_merge(layers: &[Layer], expected: &Expected) {
    let mut stack = Layers::new();
    for layer in layers {
        stack.add(layer);
    }
    let mount = stack.mount();
    assert_tree(mount.path(), expected);
    drop(mount);

    let flat = stack.dir().join("export.tar");
    let mut args: Vec<std::ffi::OsString> = vec!["export".into(), "--no-cache".into()];
    args.extend(stack.paths.iter().map(Into::into));
    args.extend(["-o".into(), flat.clone().into()]);
    mount::layerfs(args).expect_success("export");
    let exported = Mount::new(std::slice::from_ref(&flat));
    assert_tree(exported.path(), expected);
    drop(exported);

    let extracted = stack.dir().join("extracted");
    std::fs::create_dir(&extracted).expect("mkdir");
    let run = mount::run_captured(
        std::process::Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(&flat)
            .arg("-C")
            .arg(&extracted),
    );
    run.expect_success("tar -x of the export");
    let warnings = tar_warnings(&run.stderr);
    assert!(
        warnings.is_empty(),
        "GNU tar warned on the export: {warnings:?}"
    );
    assert_tree(&extracted, expected);
}

/// A fresh, empty directory `name` under Cargo's per-target scratch
/// directory, for fixtures built once per test process (wiped first, so
/// nothing carries over between runs).
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("clear {}: {e}", dir.display()));
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What a tar tool printed on stderr about the archive, less GNU tar's
/// remarks on times it finds odd, which are about the contents (a file
/// dated 1969 or 2286), not about how the archive is written.
pub fn tar_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.contains("implausibly old time stamp") && !l.contains("in the future"))
        .collect()
}
