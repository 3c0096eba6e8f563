//! Layers indexed from the table of contents they carry (issue 19): eStargz
//! written by `ctr-remote image convert --estargz` (Debian's
//! stargz-snapshotter, against a containerd of the test's own, with its
//! own root, state and socket in a temporary directory), zstd:chunked
//! written by `skopeo copy --dest-compress-format zstd:chunked`. Both are
//! converted from one source image of plain layers, whose `umoci unpack`
//! is the reference tree. containerd, ctr-remote, skopeo and umoci are
//! required, never skipped.

mod common;
#[allow(dead_code)]
#[path = "registry/fixtures.rs"]
mod fixtures;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::layer::pseudo_random;
use common::mount::{bin, mount_args, run_captured, wait_for, Run};
use common::oci::{manifest_descriptor, sha256, Layout, REF_NAME, TAR};
use common::proxy::Proxy;
use common::registry::Registry;
use common::tree::{snapshot, Fields, Mtime};
use common::{assert_tree, Expected, Layer, Mount};
use fixtures::umoci_unpack;

/// The source image's tag, and the converted images' tags.
const SOURCE_TAG: &str = "src";
const ESTARGZ_TAG: &str = "esgz";
const ZSTD_CHUNKED_TAG: &str = "zc";

/// eStargz chunk size asked for: the big file spans many chunks.
const CHUNK: usize = 256 * 1024;

/// The big file: several chunks, incompressible, so the blob is about its
/// size and the share of it fetched before the mount is ready means
/// something.
const BIG: &str = "usr/lib/big.bin";
const BIG_LEN: usize = 4 << 20;

/// umoci's unpack keeps whole-second mtimes and no xattrs.
const UMOCI_FIELDS: Fields = Fields {
    xattrs: false,
    mtime: Mtime::Seconds,
};

/// The images: the source, its unpack, and the two converted layouts.
struct Images {
    rootfs: PathBuf,
    estargz: PathBuf,
    zstd_chunked: PathBuf,
}

fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("toc-images");
        if root.exists() {
            std::fs::remove_dir_all(&root).expect("clear the scratch directory");
        }
        std::fs::create_dir_all(&root).expect("scratch directory");
        build_images(&root)
    })
}

/// Two layers: a tree of every kind with a big file, then one that
/// removes a file and adds another.
fn source_layers() -> Vec<Layer> {
    let bottom = Layer::default()
        .dir("etc")
        .file("etc/hello", "hello\n")
        .file("etc/gone", "removed by the layer above\n")
        .symlink("etc/link", "hello")
        .dir("usr")
        .dir("usr/lib")
        .file(BIG, pseudo_random(BIG_LEN, 7))
        .hardlink("usr/lib/big.link", BIG)
        .file("usr/lib/empty", "")
        .dir("var")
        .mode(0o1777)
        .owner(1000, 100);
    let top = Layer::default()
        .whiteout("etc/gone")
        .file("etc/new", "added above\n")
        .mode(0o600);
    vec![bottom, top]
}

/// The source layout (plain layers, each padded to a 10 KiB record as GNU
/// tar writes it: skopeo 1.9's zstd:chunked writer hangs on a tar that
/// ends at its end-of-archive marker), umoci's unpack of it and the
/// converted layouts.
fn build_images(root: &Path) -> Images {
    let source = Layout::new(&root.join("source"));
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in source_layers() {
        let mut tar = layer.to_tar();
        tar.resize(tar.len().next_multiple_of(10240), 0);
        let (digest, size) = source.blob(&tar);
        diff_ids.push(sha256(&tar));
        descriptors.push((TAR.to_string(), digest, size));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (digest, size) = source.image_manifest(&config, &descriptors);
    source.index(serde_json::json!([manifest_descriptor(
        &digest,
        size,
        serde_json::json!({"annotations": {REF_NAME: SOURCE_TAG}}),
    )]));
    let rootfs = umoci_unpack(&source.dir, SOURCE_TAG, &root.join("unpacked"));
    let zstd_chunked = root.join("zstd-chunked");
    run_captured(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-compress-format", "zstd:chunked"])
            .arg("--dest-compress")
            .arg(format!("oci:{}:{SOURCE_TAG}", source.dir.display()))
            .arg(format!("oci:{}:{ZSTD_CHUNKED_TAG}", zstd_chunked.display())),
    )
    .expect_success("skopeo copy --dest-compress-format zstd:chunked");
    let estargz = root.join("estargz");
    Containerd::start(&root.join("containerd")).convert(&source.dir, &estargz);
    Images {
        rootfs,
        estargz,
        zstd_chunked,
    }
}

/// A containerd of the test's own; killed when dropped.
struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).expect("containerd dir");
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n",
                dir.join("root").display(),
                dir.join("state").display(),
                socket.display()
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd (Debian package containerd)");
        let daemon = Containerd { child, socket };
        let up = wait_for(Duration::from_secs(60), || {
            daemon.ctr("ctr", &["version"]).status.success()
        });
        assert!(up, "containerd did not come up; see {}", dir.display());
        daemon
    }

    /// Runs `TOOL -a SOCKET -n layerfs ARGS...`.
    fn ctr(&self, tool: &str, args: &[&str]) -> Run {
        run_captured(
            Command::new(tool)
                .arg("-a")
                .arg(&self.socket)
                .args(["-n", "layerfs"])
                .args(args),
        )
    }

    /// Converts `SOURCE_TAG` of the layout `source` to eStargz with
    /// ctr-remote and writes the result as the layout `to`, tagged
    /// `ESTARGZ_TAG`.
    fn convert(&self, source: &Path, to: &Path) {
        let work = to.with_extension("work");
        std::fs::create_dir_all(&work).expect("work dir");
        let source_tar = work.join("source.tar");
        let out_tar = work.join("estargz.tar");
        run_captured(
            Command::new("tar")
                .arg("-C")
                .arg(source)
                .arg("-cf")
                .arg(&source_tar)
                .arg("."),
        )
        .expect_success("tar the source layout");
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let (from, into) = (
            format!("example.test/toc:{SOURCE_TAG}"),
            format!("example.test/toc:{ESTARGZ_TAG}"),
        );
        self.ctr(
            "ctr",
            &[
                "images",
                "import",
                "--base-name",
                "example.test/toc",
                &path(&source_tar),
            ],
        )
        .expect_success("ctr images import");
        let chunk = CHUNK.to_string();
        self.ctr(
            "ctr-remote",
            &[
                "images",
                "convert",
                "--oci",
                "--estargz",
                "--estargz-chunk-size",
                &chunk,
                &from,
                &into,
            ],
        )
        .expect_success("ctr-remote images convert --estargz");
        self.ctr("ctr", &["images", "export", &path(&out_tar), &into])
            .expect_success("ctr images export");
        std::fs::create_dir_all(to).expect("layout dir");
        run_captured(
            Command::new("tar")
                .arg("-C")
                .arg(to)
                .arg("-xf")
                .arg(&out_tar),
        )
        .expect_success("untar the eStargz layout");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn expected() -> Expected {
    Expected::from_snapshot(&snapshot(&images().rootfs), UMOCI_FIELDS)
}

/// The layer descriptors of `tag` of `layout`, with their annotations.
fn layer_descriptors(layout: &Path, tag: &str) -> Vec<serde_json::Value> {
    let layout = Layout { dir: layout.into() };
    let manifest = layout.json_blob(&layout.tagged(tag));
    manifest["layers"].as_array().expect("layers").clone()
}

/// `layerfs -v ls --cache-dir CACHE IMAGE`: the log says how each layer
/// was indexed.
fn ls(image: &str, cache: &Path) -> Run {
    run_captured(
        Command::new(bin())
            .args(["-v", "ls", "--cache-dir"])
            .arg(cache)
            .arg(image),
    )
}

/// `--cache-dir DIR`.
fn cached(cache: &Path) -> [&str; 2] {
    ["--cache-dir", cache.to_str().expect("utf-8 temp path")]
}

/// Mounts `image` with `args`.
fn mount(image: &str, args: &[&str]) -> Mount {
    let guard = Mount::fresh();
    let run = run_captured(Command::new(bin()).args(mount_args(
        args,
        &[PathBuf::from(image)],
        guard.path(),
    )));
    run.expect_success(&format!("layerfs mount {image}"));
    guard
}

/// What every test here needs: the real producers of eStargz (containerd,
/// ctr-remote) and zstd:chunked (skopeo), the registry, and umoci to compare.
macro_rules! require_producers {
    () => {
        require!(
            Fuse,
            Tool("umoci"),
            Tool("skopeo"),
            Tool("containerd"),
            Tool("ctr-remote"),
            Tool("docker-registry")
        );
    };
}

#[test]
fn producers_wrote_the_annotations_the_tests_rely_on() {
    require_producers!();
    let esgz = layer_descriptors(&images().estargz, ESTARGZ_TAG);
    assert_eq!(esgz.len(), 2);
    for layer in &esgz {
        assert!(
            layer["annotations"]["containerd.io/snapshot/stargz/toc.digest"].is_string(),
            "{layer}"
        );
    }
    let zc = layer_descriptors(&images().zstd_chunked, ZSTD_CHUNKED_TAG);
    assert_eq!(zc.len(), 2);
    for layer in &zc {
        let annotations = layer["annotations"].as_object().expect("annotations");
        assert!(
            annotations
                .keys()
                .any(|k| k.ends_with("zstd-chunked.manifest-position")),
            "{layer}"
        );
    }
}

#[test]
fn local_estargz_and_zstd_chunked_mount_as_umoci_unpacks_the_source() {
    require_producers!();
    for (layout, tag, format) in [
        (&images().estargz, ESTARGZ_TAG, "eStargz"),
        (&images().zstd_chunked, ZSTD_CHUNKED_TAG, "zstd:chunked"),
    ] {
        let image = format!("{}:{tag}", layout.display());
        let cache = tempfile::tempdir().expect("cache");
        let listed = ls(&image, cache.path());
        listed.expect_success("layerfs ls");
        let from_toc = format!("indexed from its {format} table of contents");
        assert_eq!(
            listed.stderr.matches(&from_toc).count(),
            2,
            "both layers from the TOC:\n{}",
            listed.stderr
        );
        // A peek at the head reads the tar, landmark first in eStargz,
        // and leaves it out as the index does.
        let peek =
            run_captured(Command::new(bin()).args(["ls", "--layer", "1", "--peek", "64K", &image]));
        peek.expect_success("layerfs ls --peek");
        assert!(peek.stdout.contains("etc/hello"), "{}", peek.stdout);
        assert!(!peek.stdout.contains("landmark"), "{}", peek.stdout);
        // The stored indexes serve the mount; its tree is umoci's, with
        // no TOC entry or landmark in the root.
        let m = mount(&image, &cached(cache.path()));
        assert_tree(m.path(), &expected());
        drop(m);
        let m = mount(&image, &["--no-cache"]);
        assert_tree(m.path(), &expected());
    }
}

/// Copies the layout `from` to `to` with the manifest's annotations of
/// every layer passed through `edit`, retagged `tag`.
fn with_annotations(from: &Path, tag: &str, to: &Path, edit: impl Fn(&mut serde_json::Value)) {
    run_captured(Command::new("cp").arg("-a").arg(from).arg(to)).expect_success("cp -a");
    let layout = Layout { dir: to.into() };
    let mut manifest = layout.json_blob(&layout.tagged(tag));
    for layer in manifest["layers"].as_array_mut().expect("layers") {
        edit(&mut layer["annotations"]);
    }
    let bytes = manifest.to_string();
    let (digest, size) = layout.blob(bytes.as_bytes());
    layout.index(serde_json::json!([manifest_descriptor(
        &digest,
        size,
        serde_json::json!({"annotations": {REF_NAME: tag}}),
    )]));
}

#[test]
fn a_toc_that_fails_its_digest_is_not_used_and_the_pass_gives_the_same_tree() {
    require_producers!();
    let work = tempfile::tempdir().expect("work");
    let lying = work.path().join("lying");
    with_annotations(&images().estargz, ESTARGZ_TAG, &lying, |a| {
        a["containerd.io/snapshot/stargz/toc.digest"] = format!("sha256:{}", "0".repeat(64)).into();
    });
    let image = format!("{}:{ESTARGZ_TAG}", lying.display());
    let cache = tempfile::tempdir().expect("cache");
    let listed = ls(&image, cache.path());
    listed.expect_success("layerfs ls");
    assert_eq!(
        listed
            .stderr
            .matches("the annotation says sha256:0000")
            .count(),
        2,
        "{}",
        listed.stderr
    );
    assert!(
        listed
            .stderr
            .contains("indexing the layer by a pass over it"),
        "{}",
        listed.stderr
    );
    // The pass leaves the TOC entry and the landmarks out too.
    let m = mount(&image, &cached(cache.path()));
    assert_tree(m.path(), &expected());
}

#[test]
fn a_damaged_chunk_reads_eio_and_the_other_files_read() {
    require_producers!();
    let work = tempfile::tempdir().expect("work");
    let copy = work.path().join("damaged");
    run_captured(
        Command::new("cp")
            .arg("-a")
            .arg(&images().estargz)
            .arg(&copy),
    )
    .expect_success("cp -a");
    let layers = layer_descriptors(&copy, ESTARGZ_TAG);
    let digest = layers[0]["digest"].as_str().expect("digest");
    let blob = Layout { dir: copy.clone() }.blob_path(digest);
    // Past the first MiB of the blob lies the big file's data, compressed:
    // damage one byte there; the TOC at the end stays intact.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&blob)
        .expect("open blob");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, 1 << 20).expect("read");
    file.write_all_at(&[byte[0] ^ 0x55], 1 << 20)
        .expect("damage");
    // The mount succeeds, checks on: the blob is not read whole (its
    // digest would fail), only its TOC and then the chunks read.
    let image = format!("{}:{ESTARGZ_TAG}", copy.display());
    let m = mount(&image, &["--no-cache"]);
    let err = std::fs::read(m.join(BIG)).expect_err("the damaged file must not read");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        std::fs::read(m.join("etc/hello")).expect("read"),
        b"hello\n"
    );
}

/// The bytes of the layer `descriptor` of `layout` that its table of
/// contents takes: for eStargz, from the TOC's offset (its footer's hex
/// field) to the end of the blob, the footer included; for zstd:chunked,
/// the manifest's compressed length (its position annotation's second
/// field).
fn table_bytes(layout: &Path, descriptor: &serde_json::Value) -> u64 {
    let annotations = descriptor["annotations"].as_object().expect("annotations");
    if let Some((_, position)) = annotations
        .iter()
        .find(|(k, _)| k.ends_with("zstd-chunked.manifest-position"))
    {
        let position = position.as_str().expect("position");
        return position
            .split(':')
            .nth(1)
            .expect("length")
            .parse()
            .expect("number");
    }
    let digest = descriptor["digest"].as_str().expect("digest");
    let blob = std::fs::read(Layout { dir: layout.into() }.blob_path(digest)).expect("blob");
    // The footer's extra field: `SG`, its length, then 16 hex digits.
    let footer = &blob[blob.len() - 51..];
    assert_eq!(&footer[12..14], b"SG", "an eStargz footer");
    let hex = std::str::from_utf8(&footer[16..32]).expect("hex");
    blob.len() as u64 - u64::from_str_radix(hex, 16).expect("TOC offset")
}

#[test]
fn registry_estargz_and_zstd_chunked_mount_after_fetching_a_small_part() {
    require_producers!();
    let registry = Registry::start();
    let proxy = Proxy::start(&registry.addr());
    for (layout, tag, format) in [
        (&images().estargz, ESTARGZ_TAG, "eStargz"),
        (&images().zstd_chunked, ZSTD_CHUNKED_TAG, "zstd:chunked"),
    ] {
        let name = format!("toc:{tag}");
        registry.upload(layout, tag, &name);
        let blob_bytes: u64 = layer_descriptors(layout, tag)
            .iter()
            .map(|l| l["size"].as_u64().expect("size"))
            .sum();
        proxy.clear();
        let cache = tempfile::tempdir().expect("cache");
        let m = mount(&format!("{}/{name}", proxy.addr()), &cached(cache.path()));
        let before_ready = proxy.blob_bytes();
        assert!(
            before_ready * 100 <= blob_bytes,
            "{format}: {before_ready} of {blob_bytes} blob bytes fetched before the mount was ready"
        );
        // Exactly the tables (eStargz: and the footers), by their ranges:
        // no file data around them.
        let tables: u64 = layer_descriptors(layout, tag)
            .iter()
            .map(|l| table_bytes(layout, l))
            .sum();
        assert_eq!(
            before_ready, tables,
            "{format}: bytes fetched before the mount was ready, against the tables' own"
        );
        assert_tree(m.path(), &expected());
        let read = proxy.blob_bytes() - before_ready;
        assert!(
            read <= 2 * blob_bytes,
            "{format}: reading every file fetched {read} of {blob_bytes} blob bytes"
        );
    }
}

#[test]
fn an_index_from_a_toc_serves_no_image_that_does_not_announce_the_toc() {
    require_producers!();
    let work = tempfile::tempdir().expect("work");
    let copy = work.path().join("two-manifests");
    run_captured(
        Command::new("cp")
            .arg("-a")
            .arg(&images().estargz)
            .arg(&copy),
    )
    .expect_success("cp -a");
    // The same blobs under a second manifest without the annotations.
    let layout = Layout { dir: copy.clone() };
    let announced = layout.tagged(ESTARGZ_TAG);
    let announced_size = std::fs::metadata(layout.blob_path(&announced))
        .expect("manifest")
        .len() as usize;
    let mut manifest = layout.json_blob(&announced);
    for layer in manifest["layers"].as_array_mut().expect("layers") {
        layer
            .as_object_mut()
            .expect("descriptor")
            .remove("annotations");
    }
    let (bare, bare_size) = layout.blob(manifest.to_string().as_bytes());
    layout.index(serde_json::json!([
        manifest_descriptor(
            &announced,
            announced_size,
            serde_json::json!({"annotations": {REF_NAME: ESTARGZ_TAG}})
        ),
        manifest_descriptor(
            &bare,
            bare_size,
            serde_json::json!({"annotations": {REF_NAME: "bare"}})
        ),
    ]));
    let cache = tempfile::tempdir().expect("cache");
    let first = ls(&format!("{}:{ESTARGZ_TAG}", copy.display()), cache.path());
    first.expect_success("layerfs ls, announced");
    assert!(
        !first.stdout.contains("stargz.index.json"),
        "{}",
        first.stdout
    );
    // Nothing says the bare image's blobs are eStargz: its layers are
    // passed over (the TOC-made indexes are not its), and the TOC shows.
    let second = ls(&format!("{}:bare", copy.display()), cache.path());
    second.expect_success("layerfs ls, bare");
    assert!(
        !second.stderr.contains("loaded from the cache"),
        "{}",
        second.stderr
    );
    assert!(
        second.stdout.contains("stargz.index.json"),
        "{}",
        second.stdout
    );
}
