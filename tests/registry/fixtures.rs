//! The images the registry tests push, built once per test process under
//! Cargo's per-target scratch directory (wiped first, so nothing carries
//! over between runs) and shared by the tests, which each push what they
//! need to a registry of their own.
//!
//! * `cross`: the umoci cross-check image (four gzip layers with
//!   whiteouts, an opaque directory, kind changes) and umoci's unpack;
//! * `plain`: the same layers uncompressed, in a layout of their own;
//! * `multi`: a nested multi-platform index of two one-layer images,
//!   linux/amd64 and linux/arm64/v8, each also tagged by architecture so
//!   umoci can unpack it as the reference;
//! * `big`: one gzip layer of 128 MiB of files, half incompressible, with a
//!   small file near the end, for the tests that count fetched bytes.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::common::layer::{pseudo_random, Codec, Layer, DEFAULT_MTIME};
use crate::common::mount::{bin, run_captured};
use crate::common::oci::{
    digest_of, gunzip, manifest_descriptor, sha256, Layout, INDEX, REF_NAME, TAR, TAR_GZIP,
};
use crate::common::scratch;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/umoci-crosscheck.sh");

/// The tag of the umoci image in its layout.
pub const CROSS_TAG: &str = "crosscheck";
pub const PLAIN_TAG: &str = "plain";
pub const MULTI_TAG: &str = "multi";
pub const BIG_TAG: &str = "big";

/// The small file near the end of the big layer, and what it holds.
pub const NEEDLE: &str = "big/zz-needle.txt";
pub const NEEDLE_CONTENT: &[u8] = b"the one small file near the end of the big layer\n";
/// The first file of the big layer.
pub const BIG_FIRST_FILE: &str = "big/000.bin";

/// Files of the big layer before the needle, and the size of each.
const BIG_FILES: usize = 256;
const BIG_FILE_SIZE: usize = 512 * 1024;

/// The small images, with their references.
pub struct Images {
    pub cross: PathBuf,
    pub cross_rootfs: PathBuf,
    pub plain: PathBuf,
    pub multi: PathBuf,
    /// umoci's unpack of each platform's image: (`OS/ARCH[/VARIANT]`, rootfs).
    pub multi_rootfs: Vec<(&'static str, PathBuf)>,
}

/// The big one-layer image.
pub struct Big {
    pub layout: PathBuf,
    /// The layer blob's digest and size.
    pub digest: String,
    pub size: u64,
}

/// A skopeo source for `tag` of `layout`.
pub fn oci_source(layout: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", layout.display())
}

/// The umoci images; umoci unpacks only as root.
pub fn images() -> &'static Images {
    crate::common::needs::declared(crate::common::needs::Need::Root);
    crate::common::needs::declared(crate::common::needs::Need::Tool("umoci"));
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| build_images(&scratch("registry-images")))
}

pub fn big() -> &'static Big {
    static BIG: OnceLock<Big> = OnceLock::new();
    BIG.get_or_init(|| build_big(&scratch("registry-big")))
}

fn build_images(root: &Path) -> Images {
    let work = root.join("cross");
    run_captured(
        Command::new("bash")
            .arg(SCRIPT)
            .arg("--layers-only")
            .arg(&work)
            .env("LAYERFS", bin()),
    )
    .expect_success("umoci-crosscheck.sh --layers-only");
    let cross = work.join("image");
    let plain = root.join("plain");
    decompress_layout(&cross, CROSS_TAG, &plain, PLAIN_TAG);
    let multi = root.join("multi");
    build_multi(&multi);
    let multi_rootfs = [("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64")]
        .into_iter()
        .map(|(platform, tag)| {
            let rootfs = umoci_unpack(&multi, tag, &root.join(format!("unpacked-{tag}")));
            (platform, rootfs)
        })
        .collect();
    Images {
        cross_rootfs: work.join("expected/rootfs"),
        cross,
        plain,
        multi,
        multi_rootfs,
    }
}

/// umoci's unpack of `tag` of `layout` into `bundle`; returns its rootfs.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    run_captured(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(bundle),
    )
    .expect_success(&format!("umoci unpack {}:{tag}", layout.display()));
    bundle.join("rootfs")
}

/// Writes the image `tag` of `from` to a new layout `to`, tagged `new_tag`,
/// with every gzip layer stored uncompressed (skopeo 1.9 keeps an OCI
/// source's blobs as they are even with `--dest-decompress`).
fn decompress_layout(from: &Path, tag: &str, to: &Path, new_tag: &str) {
    let source = Layout { dir: from.into() };
    let manifest_digest = source.tagged(tag);
    let manifest = source.json_blob(&manifest_digest);
    let config = source.json_blob(manifest["config"]["digest"].as_str().expect("config"));
    let target = Layout::new(to);
    let layers: Vec<(String, String, usize)> = source
        .layers(&manifest_digest)
        .iter()
        .map(|(media_type, digest, _)| {
            assert_eq!(media_type, TAR_GZIP, "layer {digest} of {}", from.display());
            let bytes = fs::read(source.blob_path(digest)).expect("read layer blob");
            let (digest, size) = target.blob(&gunzip(&bytes));
            (TAR.to_string(), digest, size)
        })
        .collect();
    let (digest, size) = target.image_manifest(&config, &layers);
    target.index(serde_json::json!([manifest_descriptor(
        &digest,
        size,
        serde_json::json!({"annotations": {REF_NAME: new_tag}}),
    )]));
}

/// One platform's layer: distinct files, so the test can tell which
/// manifest was mounted.
fn platform_layer(arch: &str, triple: &str, seed: u64) -> Layer {
    let libdir = format!("lib/{triple}");
    Layer::default()
        .dir("etc")
        .file("etc/arch", format!("linux/{arch}\n"))
        .dir("lib")
        .dir(&libdir)
        .file(format!("{libdir}/libc.so.6"), pseudo_random(40_000, seed))
        .mode(0o755)
        .symlink(format!("lib/ld-{arch}.so"), format!("{triple}/libc.so.6"))
}

/// The multi-platform layout: a nested index tagged `multi`, and each
/// platform's manifest tagged by its architecture.
fn build_multi(dir: &Path) {
    let layout = Layout::new(dir);
    let platforms = [
        ("amd64", None, "x86_64-linux-gnu", 1),
        ("arm64", Some("v8"), "aarch64-linux-gnu", 2),
    ];
    let mut platform_manifests = Vec::new();
    let mut tags = Vec::new();
    for (arch, variant, triple, seed) in platforms {
        let tar = platform_layer(arch, triple, seed).to_tar();
        let (layer, layer_size) = layout.blob(&Codec::Gzip.encode(&tar));
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(variant) = variant {
            platform["variant"] = variant.into();
        }
        let mut config = platform.clone();
        config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": [sha256(&tar)]});
        config["config"] = serde_json::json!({});
        let (digest, size) =
            layout.image_manifest(&config, &[(TAR_GZIP.to_string(), layer, layer_size)]);
        platform_manifests.push(manifest_descriptor(
            &digest,
            size,
            serde_json::json!({"platform": platform}),
        ));
        tags.push(manifest_descriptor(
            &digest,
            size,
            serde_json::json!({"platform": platform, "annotations": {REF_NAME: arch}}),
        ));
    }
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": platform_manifests,
    });
    let (index, index_size) = layout.blob(nested.to_string().as_bytes());
    let mut entries = vec![serde_json::json!({
        "mediaType": INDEX,
        "digest": index,
        "size": index_size,
        "annotations": {REF_NAME: MULTI_TAG},
    })];
    entries.extend(tags);
    layout.index(serde_json::Value::Array(entries));
}

/// Passes bytes through while hashing and counting them.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// `sha256:<hex>` of what went through, the byte count and the inner writer.
    fn finish(self) -> (String, u64, W) {
        (digest_of(self.hasher), self.len, self.inner)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Text that deflate shrinks about tenfold, different per file.
fn compressible(file: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut line = 0usize;
    while out.len() < len {
        let word = (line * 7919 + file * 104_729) % 10_007;
        out.extend_from_slice(
            format!(
                "{file:03} line {line:06}: the quick brown fox {word} jumps over the lazy dog\n"
            )
            .as_bytes(),
        );
        line += 1;
    }
    out.truncate(len);
    out
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_mtime(DEFAULT_MTIME);
    header.set_size(data.len() as u64);
    tar.append_data(&mut header, path, data)
        .unwrap_or_else(|e| panic!("append {path} to the big layer: {e}"));
}

/// The big layer, streamed through gzip into the layout, then the image.
/// The default level, as Go's and GNU gzip write layers: zlib-rs's fastest
/// level writes deflate blocks of many megabytes, with no place between
/// them for a checkpoint, so a read near the end would inflate from the
/// start (a limit of checkpointing, noted in the man page).
fn build_big(dir: &Path) -> Big {
    let layout = Layout::new(dir);
    let staging = dir.join("layer.tmp");
    let file = File::create(&staging).expect("create big layer");
    let gz = flate2::write::GzEncoder::new(
        Hashing::new(BufWriter::new(file)),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(Hashing::new(gz));
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_mtime(DEFAULT_MTIME);
    header.set_size(0);
    tar.append_data(&mut header, "big/", io::empty())
        .expect("append big/");
    for i in 0..BIG_FILES {
        let data = if i % 2 == 0 {
            pseudo_random(BIG_FILE_SIZE, i as u64 + 1)
        } else {
            compressible(i, BIG_FILE_SIZE)
        };
        append_file(&mut tar, &format!("big/{i:03}.bin"), &data);
    }
    append_file(&mut tar, NEEDLE, NEEDLE_CONTENT);
    append_file(&mut tar, "big/zz-tail.bin", &pseudo_random(1 << 20, 999));
    let (diff_id, _, gz) = tar.into_inner().expect("finish the big tar").finish();
    let (digest, size, mut file) = gz.finish().expect("finish the big gzip").finish();
    file.flush().expect("flush the big layer");
    drop(file);
    fs::rename(&staging, layout.blob_path(&digest)).expect("store the big layer");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {},
    });
    let (manifest, manifest_size) = layout.image_manifest(
        &config,
        &[(TAR_GZIP.to_string(), digest.clone(), size as usize)],
    );
    layout.index(serde_json::json!([manifest_descriptor(
        &manifest,
        manifest_size,
        serde_json::json!({"annotations": {REF_NAME: BIG_TAG}}),
    )]));
    Big {
        layout: dir.to_path_buf(),
        digest,
        size,
    }
}
