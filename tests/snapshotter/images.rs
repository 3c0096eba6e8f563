//! The images the snapshotter tests run: Debian's static busybox (the
//! `busybox-static` package, so containers have a shell and `sha256sum`
//! without any image from the network) plus data files, in OCI layouts
//! written with `common::oci`, built once per test process under Cargo's
//! per-target scratch directory and pushed by each test to a registry of
//! its own.
//!
//! * `busybox`: three gzip layers (busybox; data files; a layer that
//!   replaces one file and whites out another), tagged `gzip`, and the same
//!   with the top layer in zstd, tagged `zstd`;
//! * `skel`: busybox with a file `etc/skel`, then a layer that whites it out
//!   and adds `etc/skel/.bashrc` and `etc/skel/.profile` without a directory
//!   member for `etc/skel` (as image builders write it): containerd 1.6.20
//!   fails to unpack this with its overlayfs snapshotter ("mkparent
//!   .../etc/skel: not a directory"), since it turns the whiteout into a
//!   0/0 device in the upper directory and then finds that device where
//!   the implied parent directory goes;
//! * `big`: busybox and two gzip layers of 96 MiB of incompressible files
//!   each, with small files among them, for counting fetched bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::layer::{pseudo_random, Codec, Layer};
use crate::common::oci::{manifest_descriptor, sha256, Layout, REF_NAME, TAR_GZIP};
use crate::common::scratch;

/// The static busybox of Debian's `busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";

pub const TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The busybox applets the tests' shell scripts use, as links in `/bin`.
const APPLETS: &[&str] = &[
    "sh",
    "sha256sum",
    "cat",
    "ls",
    "sleep",
    "echo",
    "test",
    "mkdir",
    "rm",
    "wc",
    "seq",
    "stat",
];

/// One image of a layout.
pub struct Image {
    pub layout: PathBuf,
    pub tag: &'static str,
    /// Files a container of the image hashes (absolute paths), with their
    /// content in the merged image.
    pub files: Vec<(String, Vec<u8>)>,
    /// A path present in a lower layer and whited out above it.
    pub gone: Option<&'static str>,
    /// Sizes of the config and layer blobs, summed.
    pub blob_bytes: u64,
}

impl Image {
    /// The skopeo source of the image.
    pub fn source(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    /// The digests of the image's layer blobs, bottom first.
    pub fn layer_digests(&self) -> Vec<String> {
        let layout = Layout {
            dir: self.layout.clone(),
        };
        let manifest = layout.tagged(self.tag);
        layout
            .layers(&manifest)
            .into_iter()
            .map(|(_, digest, _)| digest)
            .collect()
    }

    /// The paths of `files`, space-separated, for a shell command.
    pub fn paths(&self) -> String {
        let paths: Vec<&str> = self.files.iter().map(|(p, _)| p.as_str()).collect();
        paths.join(" ")
    }

    /// What busybox `sha256sum` prints for `files`, in order.
    pub fn sums(&self) -> String {
        self.files
            .iter()
            .map(|(path, content)| format!("{}  {path}\n", hex_sha256(content)))
            .collect()
    }

    /// A shell command that prints `sums()` and, if the image has a
    /// whited-out path, `gone` when it is absent.
    pub fn check_script(&self) -> String {
        let mut script = format!("sha256sum {}", self.paths());
        if let Some(gone) = self.gone {
            script.push_str(&format!(" && test ! -e {gone} && echo gone"));
        }
        script
    }

    /// What `check_script` prints in a container of the intact image.
    pub fn check_output(&self) -> String {
        let mut out = self.sums();
        if self.gone.is_some() {
            out.push_str("gone\n");
        }
        out
    }
}

/// `sha256sum`'s hex digest of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    sha256(bytes).trim_start_matches("sha256:").to_string()
}

pub fn busybox_gzip() -> &'static Image {
    &busybox_images().0
}

pub fn busybox_zstd() -> &'static Image {
    &busybox_images().1
}

pub fn skel() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| build_skel(&scratch("snapshotter-skel")))
}

pub fn big() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| build_big(&scratch("snapshotter-big")))
}

/// busybox's bottom two layers (the same blobs) and a patch layer of its
/// own: pulled the ordinary way after busybox was pulled lazily, its patch
/// is unpacked over registry layers.
pub fn patched() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| build_patched(&scratch("snapshotter-patched")))
}

fn busybox_images() -> &'static (Image, Image) {
    static IMAGES: OnceLock<(Image, Image)> = OnceLock::new();
    IMAGES.get_or_init(|| build_busybox(&scratch("snapshotter-busybox")))
}

fn busybox_bytes() -> Vec<u8> {
    fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("read {BUSYBOX}: {e} (install Debian's busybox-static; .ci/run does)")
    })
}

/// The bottom layer of every image: busybox, its applet links, and the
/// directories runc mounts on.
fn base_layer() -> Layer {
    let mut layer = Layer::default()
        .dir("bin")
        .file("bin/busybox", busybox_bytes())
        .mode(0o755);
    for applet in APPLETS {
        layer = layer.symlink(format!("bin/{applet}"), "busybox");
    }
    layer
        .dir("dev")
        .dir("proc")
        .dir("sys")
        .dir("tmp")
        .mode(0o1777)
        .dir("etc")
        .file("etc/hostname", "layerfs-test\n")
}

/// A layer as a blob of `layout`: (media type, digest, size), and its
/// diff ID.
fn add_layer(layout: &Layout, layer: &Layer, codec: Codec) -> ((String, String, usize), String) {
    let tar = layer.to_tar();
    let media_type = match codec {
        Codec::Gzip => TAR_GZIP,
        Codec::Zstd => TAR_ZSTD,
        other => panic!("no image layer media type for {other:?}"),
    };
    let (digest, size) = layout.blob(&codec.encode(&tar));
    ((media_type.to_string(), digest, size), sha256(&tar))
}

/// Writes a manifest of `layers` (bottom first) with a config runc can run
/// (`PATH=/bin`); returns its index descriptor tagged `tag` and the blob
/// bytes (config and layers).
fn image(layout: &Layout, tag: &str, layers: &[(&Layer, Codec)]) -> (serde_json::Value, u64) {
    let (descriptors, diff_ids): (Vec<_>, Vec<_>) = layers
        .iter()
        .map(|(layer, codec)| add_layer(layout, layer, *codec))
        .unzip();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_size = config.to_string().len() as u64;
    let (digest, size) = layout.image_manifest(&config, &descriptors);
    let blob_bytes = config_size + descriptors.iter().map(|(_, _, s)| *s as u64).sum::<u64>();
    let descriptor = manifest_descriptor(
        &digest,
        size,
        serde_json::json!({"annotations": {REF_NAME: tag}}),
    );
    (descriptor, blob_bytes)
}

/// busybox's data layer.
fn data_layer(random: &[u8]) -> Layer {
    Layer::default()
        .dir("data")
        .file("data/one.txt", "one\n")
        .file("data/random.bin", random)
        .file("data/replaced.txt", "first version\n")
        .file("data/gone.txt", "whited out above\n")
        .dir("data/sub")
        .file("data/sub/deep.txt", "deep\n")
}

fn build_busybox(dir: &Path) -> (Image, Image) {
    let layout = Layout::new(dir);
    let random = pseudo_random(300_000, 18);
    let data = data_layer(&random);
    let top = Layer::default()
        .dir("data")
        .file("data/replaced.txt", "second version, from the top layer\n")
        .whiteout("data/gone.txt")
        .file("data/top.txt", "top\n");
    let base = base_layer();
    let (gzip, gzip_bytes) = image(
        &layout,
        "gzip",
        &[
            (&base, Codec::Gzip),
            (&data, Codec::Gzip),
            (&top, Codec::Gzip),
        ],
    );
    let (zstd, zstd_bytes) = image(
        &layout,
        "zstd",
        &[
            (&base, Codec::Gzip),
            (&data, Codec::Gzip),
            (&top, Codec::Zstd),
        ],
    );
    layout.index(serde_json::json!([gzip, zstd]));
    let files = vec![
        ("/bin/busybox".to_string(), busybox_bytes()),
        ("/data/one.txt".to_string(), b"one\n".to_vec()),
        ("/data/random.bin".to_string(), random),
        (
            "/data/replaced.txt".to_string(),
            b"second version, from the top layer\n".to_vec(),
        ),
        ("/data/sub/deep.txt".to_string(), b"deep\n".to_vec()),
        ("/data/top.txt".to_string(), b"top\n".to_vec()),
    ];
    let image = |tag, blob_bytes| Image {
        layout: dir.to_path_buf(),
        tag,
        files: files.clone(),
        gone: Some("/data/gone.txt"),
        blob_bytes,
    };
    (image("gzip", gzip_bytes), image("zstd", zstd_bytes))
}

fn build_patched(dir: &Path) -> Image {
    let layout = Layout::new(dir);
    let random = pseudo_random(300_000, 18);
    let patch = Layer::default()
        .dir("data")
        .whiteout("data/one.txt")
        .file("data/patch.txt", "patch\n")
        .dir("data/sub")
        .file("data/sub/deep.txt", "patched deep\n");
    let (descriptor, blob_bytes) = image(
        &layout,
        "patched",
        &[
            (&base_layer(), Codec::Gzip),
            (&data_layer(&random), Codec::Gzip),
            (&patch, Codec::Gzip),
        ],
    );
    layout.index(serde_json::json!([descriptor]));
    Image {
        layout: dir.to_path_buf(),
        tag: "patched",
        files: vec![
            ("/bin/busybox".to_string(), busybox_bytes()),
            ("/data/patch.txt".to_string(), b"patch\n".to_vec()),
            ("/data/random.bin".to_string(), random),
            (
                "/data/replaced.txt".to_string(),
                b"first version\n".to_vec(),
            ),
            ("/data/sub/deep.txt".to_string(), b"patched deep\n".to_vec()),
        ],
        gone: Some("/data/one.txt"),
        blob_bytes,
    }
}

fn build_skel(dir: &Path) -> Image {
    let layout = Layout::new(dir);
    let base = base_layer().file("etc/skel", "a file, replaced by a directory above\n");
    let replace = Layer::default()
        .dir("etc")
        .whiteout("etc/skel")
        .file("etc/skel/.bashrc", "# bashrc\n")
        .file("etc/skel/.profile", "# profile\n");
    let (descriptor, blob_bytes) = image(
        &layout,
        "skel",
        &[(&base, Codec::Gzip), (&replace, Codec::Gzip)],
    );
    layout.index(serde_json::json!([descriptor]));
    Image {
        layout: dir.to_path_buf(),
        tag: "skel",
        files: vec![
            ("/etc/skel/.bashrc".to_string(), b"# bashrc\n".to_vec()),
            ("/etc/skel/.profile".to_string(), b"# profile\n".to_vec()),
        ],
        gone: None,
        blob_bytes,
    }
}

/// Files of each big layer, and the size of each.
const BIG_FILES: usize = 96;
const BIG_FILE_SIZE: usize = 1 << 20;

fn build_big(dir: &Path) -> Image {
    let layout = Layout::new(dir);
    let mut files = vec![("/bin/busybox".to_string(), busybox_bytes())];
    let mut layers = vec![(base_layer(), Codec::Gzip)];
    for n in 1..=2u64 {
        let root = format!("big{n}");
        let mut layer = Layer::default().dir(&root);
        for i in 0..BIG_FILES {
            if i == BIG_FILES / 2 {
                let path = format!("{root}/middle.txt");
                let content = format!("the small file in the middle of big layer {n}\n");
                files.push((format!("/{path}"), content.clone().into_bytes()));
                layer = layer.file(path, content);
            }
            let seed = n * 1000 + i as u64;
            layer = layer.file(
                format!("{root}/{i:03}.bin"),
                pseudo_random(BIG_FILE_SIZE, seed),
            );
        }
        let path = format!("{root}/zz-last.txt");
        let content = format!("the small file at the end of big layer {n}\n");
        files.push((format!("/{path}"), content.clone().into_bytes()));
        layers.push((layer.file(path, content), Codec::Gzip));
    }
    let refs: Vec<(&Layer, Codec)> = layers.iter().map(|(l, c)| (l, *c)).collect();
    let (descriptor, blob_bytes) = image(&layout, "big", &refs);
    layout.index(serde_json::json!([descriptor]));
    Image {
        layout: dir.to_path_buf(),
        tag: "big",
        files,
        gone: None,
        blob_bytes,
    }
}
