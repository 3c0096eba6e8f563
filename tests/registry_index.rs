//! layerfs' own index in the registry (issue 19, item 1): `layerfs index
//! push` uploads a stack's indexes as an OCI artifact referring to the
//! image, and a first mount with an empty cache takes them from the
//! registry instead of streaming every blob. Against Debian's
//! `docker-registry` (distribution 2.8: no referrers API, so the fallback
//! tag `sha256-HEX` is what lists the artifact) on loopback, with the
//! counting proxy of tests/common in front of it.

mod common;
// The fixtures of tests/registry.rs, of which this file uses the small
// images only.
#[allow(dead_code)]
#[path = "registry/fixtures.rs"]
mod fixtures;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::http;
use common::mount::{bin, is_mounted, layerfs, mount_args, run_captured, Run};
use common::oci::{sha256, INDEX, MANIFEST};
use common::proxy::Proxy;
use common::registry::Registry;
use common::tree::{snapshot, Fields, Mtime};
use common::{assert_tree, Expected, Mount};
use fixtures::{big, images, oci_source, BIG_TAG, CROSS_TAG};
use serde_json::{json, Value};
use tempfile::TempDir;

const ARTIFACT_TYPE: &str = "application/vnd.layerfs.index.v1";
const LAYER_DIGEST: &str = "dev.layerfs.layer.digest";
const INDEX_LAYER: &str = "application/vnd.layerfs.index.layer.v1+zstd";

/// What umoci's unpack preserves (as in tests/registry.rs).
const UMOCI_FIELDS: Fields = Fields {
    xattrs: false,
    mtime: Mtime::Seconds,
};

/// A registry holding the cross-check image (gzip layers) as `cross:gz`,
/// the proxy in front of it, and the image's manifest digest.
struct Rig {
    registry: Registry,
    proxy: Proxy,
    digest: String,
}

impl Rig {
    fn new() -> Rig {
        let registry = Registry::start();
        let proxy = Proxy::start(&registry.addr());
        let digest = registry.push(&oci_source(&images().cross, CROSS_TAG), "cross:gz", &[]);
        Rig {
            registry,
            proxy,
            digest,
        }
    }

    /// `cross:gz` straight at the registry (for pushes, uncounted).
    fn direct(&self) -> String {
        self.registry.reference("cross:gz")
    }

    /// `cross:gz` through the proxy.
    fn via_proxy(&self) -> String {
        format!("{}/cross:gz", self.proxy.addr())
    }

    /// `layerfs index push` of the image with a cache of its own.
    fn push_index(&self) -> Run {
        let cache = TempDir::new().expect("cache dir");
        let run = layerfs(["index", "push", "--cache-dir", path(&cache), &self.direct()]);
        run.expect_success("layerfs index push");
        run
    }

    /// The fallback tag's index of the image's referrers.
    fn fallback_index(&self) -> Value {
        let tag = self.digest.replacen(':', "-", 1);
        let response = http::get(
            &self.registry.addr(),
            &format!("/v2/cross/manifests/{tag}"),
            &[("Accept", INDEX)],
        )
        .expect("GET the fallback tag");
        assert_eq!(response.status(), 200, "{response:?}");
        serde_json::from_slice(&response.body).expect("the fallback tag holds JSON")
    }

    /// The layerfs index artifacts the fallback tag lists.
    fn listed_artifacts(&self) -> Vec<String> {
        self.fallback_index()["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .filter(|m| m["artifactType"] == ARTIFACT_TYPE)
            .map(|m| m["digest"].as_str().expect("digest").to_string())
            .collect()
    }

    /// The manifest `digest`, raw, as a JSON value.
    fn manifest(&self, digest: &str) -> Value {
        let response = http::get(
            &self.registry.addr(),
            &format!("/v2/cross/manifests/{digest}"),
            &[("Accept", MANIFEST)],
        )
        .expect("GET manifest");
        assert_eq!(response.status(), 200, "{response:?}");
        assert_eq!(sha256(&response.body), digest, "manifest bytes");
        serde_json::from_slice(&response.body).expect("manifest JSON")
    }

    /// PUTs `body` as manifest `reference` of `media_type`.
    fn put_manifest(&self, reference: &str, media_type: &str, body: &[u8]) {
        let response = http::request_with_body(
            &self.registry.addr(),
            "PUT",
            &format!("/v2/cross/manifests/{reference}"),
            &[("Content-Type", media_type)],
            Some(body),
        )
        .expect("PUT manifest");
        assert_eq!(response.status(), 201, "PUT {reference}: {response:?}");
    }

    /// The image's layer digests, bottom first.
    fn layer_digests(&self) -> Vec<String> {
        self.manifest(&self.digest)["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("digest").to_string())
            .collect()
    }

    /// Blob bytes the proxy served for the image's layers (not for index
    /// artifacts).
    fn layer_bytes_served(&self) -> u64 {
        let layers = self.layer_digests();
        self.proxy
            .blob_exchanges()
            .iter()
            .filter(|e| layers.iter().any(|d| e.path.ends_with(d.as_str())))
            .map(|e| e.body_bytes)
            .sum()
    }
}

fn path(dir: &TempDir) -> &str {
    dir.path().to_str().expect("utf-8 temp path")
}

fn expected_cross() -> Expected {
    Expected::from_snapshot(&snapshot(&images().cross_rootfs), UMOCI_FIELDS)
}

/// `layerfs ls -l` of the image through the proxy with an empty cache and
/// `extra` arguments.
fn ls(rig: &Rig, extra: &[&str]) -> Run {
    let cache = TempDir::new().expect("cache dir");
    let mut args = vec!["ls", "-l", "--cache-dir", path(&cache)];
    args.extend_from_slice(extra);
    let reference = rig.via_proxy();
    args.push(&reference);
    layerfs(&args)
}

/// Lines of `stderr` that are warnings about the layerfs index.
fn index_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("layerfs index") || l.contains("indexing the layers as usual"))
        .collect()
}

#[test]
fn a_pushed_index_mounts_with_an_empty_cache_without_reading_a_layer_blob() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    let pushed = rig.push_index();
    assert!(
        pushed.stderr.contains("layerfs index sha256:"),
        "index push says what it pushed:\n{}",
        pushed.stderr
    );
    rig.proxy.clear();
    let cache = TempDir::new().expect("cache dir");
    let guard = Mount::fresh();
    let mut cmd = Command::new(bin());
    cmd.args(mount_args(
        &["--cache-dir", path(&cache)],
        &[PathBuf::from(rig.via_proxy())],
        guard.path(),
    ));
    run_captured(&mut cmd).expect_success("layerfs mount");
    assert!(is_mounted(guard.path()));
    // Ready, and nothing of any layer fetched: only manifests, the
    // referrers lookup and the artifact's blobs.
    assert_eq!(rig.layer_bytes_served(), 0, "{:#?}", rig.proxy.exchanges());
    let artifact_blobs = rig.proxy.blob_bytes();
    assert!(artifact_blobs > 0, "the index blobs were fetched");
    assert_tree(guard.path(), &expected_cross());
}

#[test]
fn the_artifact_refers_to_the_image_and_pushing_again_keeps_one() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    // Another tool's referrer of the same image, which must survive.
    let other = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": rig.digest,
            "size": 1,
            "artifactType": "application/example.signature",
        }],
    });
    let tag = rig.digest.replacen(':', "-", 1);
    rig.put_manifest(&tag, INDEX, &serde_json::to_vec(&other).expect("json"));

    rig.push_index();
    let first = rig.listed_artifacts();
    assert_eq!(first.len(), 1, "{}", rig.fallback_index());
    let artifact = rig.manifest(&first[0]);
    assert_eq!(artifact["artifactType"], ARTIFACT_TYPE);
    assert_eq!(artifact["subject"]["digest"], rig.digest.as_str());
    assert_eq!(artifact["subject"]["mediaType"], MANIFEST);
    assert_eq!(
        artifact["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    let indexed: BTreeSet<String> = artifact["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            l["annotations"][LAYER_DIGEST]
                .as_str()
                .expect("annotation")
                .to_string()
        })
        .collect();
    let layers: BTreeSet<String> = rig.layer_digests().into_iter().collect();
    assert_eq!(indexed, layers, "one index per layer, named by its digest");

    rig.push_index();
    assert_eq!(rig.listed_artifacts().len(), 1, "{}", rig.fallback_index());
    let kept = rig.fallback_index()["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter(|m| m["artifactType"] == "application/example.signature")
        .count();
    assert_eq!(kept, 1, "the other referrer is kept");

    // skopeo sees the artifact as the registry stores it.
    let inspect = run_captured(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/cross@{}", rig.registry.addr(), first[0]),
    ]));
    inspect.expect_success("skopeo inspect --raw");
    let raw: Value = serde_json::from_str(&inspect.stdout).expect("json");
    assert_eq!(raw["subject"]["digest"], rig.digest.as_str());
}

#[test]
fn no_remote_index_skips_the_lookup_and_streams_the_layers() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_index();
    rig.proxy.clear();
    let run = ls(&rig, &["--no-remote-index"]);
    run.expect_success("layerfs ls --no-remote-index");
    let asked: Vec<String> = rig
        .proxy
        .exchanges()
        .iter()
        .map(|e| e.path.clone())
        .collect();
    assert!(
        !asked
            .iter()
            .any(|p| p.contains("/referrers/") || p.contains("/manifests/sha256-")),
        "{asked:#?}"
    );
    assert!(rig.layer_bytes_served() > 0, "the layers were indexed");

    rig.proxy.clear();
    let with_index = ls(&rig, &[]);
    with_index.expect_success("layerfs ls");
    assert_eq!(with_index.stdout, run.stdout, "the same listing");
    assert_eq!(rig.layer_bytes_served(), 0, "{:#?}", rig.proxy.exchanges());
}

#[test]
fn an_image_without_an_index_costs_no_warning() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    let run = ls(&rig, &[]);
    run.expect_success("layerfs ls");
    assert_eq!(index_warnings(&run.stderr), Vec::<&str>::new());
}

#[test]
fn a_corrupt_index_blob_costs_one_warning_and_the_ordinary_pass() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    let baseline = ls(&rig, &["--no-remote-index"]);
    baseline.expect_success("layerfs ls --no-remote-index");
    rig.push_index();
    let artifact = rig.manifest(&rig.listed_artifacts()[0]);
    let index_blob = artifact["layers"][0]["digest"].as_str().expect("digest");
    rig.proxy.corrupt_blob(index_blob, 100);
    rig.proxy.clear();
    let run = ls(&rig, &[]);
    run.expect_success("layerfs ls with a corrupt index blob");
    assert_eq!(
        run.stdout, baseline.stdout,
        "the listing of the ordinary pass"
    );
    let warnings = index_warnings(&run.stderr);
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("digest mismatch"), "{}", warnings[0]);
    assert!(rig.layer_bytes_served() > 0, "the layers were indexed");
}

#[test]
fn an_index_of_another_layer_is_refused_by_its_echoed_key() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_index();
    // The same artifact with the indexes of two layers swapped: every blob
    // matches its digest, but each index names another layer's blob.
    let mut artifact = rig.manifest(&rig.listed_artifacts()[0]);
    let layers = artifact["layers"].as_array_mut().expect("layers");
    assert!(layers.len() >= 2, "the fixture has several layers");
    let (a, b) = (
        layers[0]["annotations"].clone(),
        layers[1]["annotations"].clone(),
    );
    layers[0]["annotations"] = b;
    layers[1]["annotations"] = a;
    let body = serde_json::to_vec(&artifact).expect("json");
    let swapped = sha256(&body);
    rig.put_manifest(&swapped, MANIFEST, &body);
    let listing = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": swapped,
            "size": body.len(),
            "artifactType": ARTIFACT_TYPE,
        }],
    });
    let tag = rig.digest.replacen(':', "-", 1);
    rig.put_manifest(&tag, INDEX, &serde_json::to_vec(&listing).expect("json"));

    let run = ls(&rig, &[]);
    run.expect_success("layerfs ls with swapped indexes");
    let warnings = index_warnings(&run.stderr);
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("another layer"), "{}", warnings[0]);

    let cache = TempDir::new().expect("cache dir");
    let guard = Mount::fresh();
    let mut cmd = Command::new(bin());
    cmd.args(mount_args(
        &["--cache-dir", path(&cache)],
        &[PathBuf::from(rig.via_proxy())],
        guard.path(),
    ));
    run_captured(&mut cmd).expect_success("layerfs mount");
    assert_tree(guard.path(), &expected_cross());
}

#[test]
fn index_push_takes_a_registry_image_only() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let dir = TempDir::new().expect("temp dir");
    let layer = dir.path().join("layer.tar");
    std::fs::write(&layer, [0u8; 1024]).expect("write an empty tar");
    let cache = dir.path().join("cache");
    let run = layerfs([
        "index",
        "push",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        layer.to_str().expect("utf-8"),
    ]);
    assert!(!run.status.success(), "{run:?}");
    assert!(
        run.stderr.contains("index push takes one registry image"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("layer.tar"), "{}", run.stderr);
}

#[test]
fn index_push_and_the_lookup_log_in_to_a_token_registry() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.proxy.require_token(None);
    let cache = TempDir::new().expect("cache dir");
    let run = layerfs([
        "index",
        "push",
        "--cache-dir",
        path(&cache),
        &rig.via_proxy(),
    ]);
    run.expect_success("layerfs index push through a token registry");
    assert_eq!(rig.listed_artifacts().len(), 1, "{}", rig.fallback_index());
    // The manifest PUTs went through the proxy, which takes none without
    // the token.
    let puts: Vec<u16> = rig
        .proxy
        .exchanges()
        .iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/manifests/"))
        .map(|e| e.status)
        .collect();
    assert!(puts.contains(&201), "{puts:?}");
    rig.proxy.clear();
    let listed = ls(&rig, &[]);
    listed.expect_success("layerfs ls through a token registry");
    assert_eq!(index_warnings(&listed.stderr), Vec::<&str>::new());
    assert_eq!(rig.layer_bytes_served(), 0, "{:#?}", rig.proxy.exchanges());
}

/// Every file under `root`, by path, with its bytes.
fn contents(root: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).expect("read a file");
                out.push((path.strip_prefix(root).expect("under root").into(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_gzip_layer_travels_with_sparse_windows_and_reads_the_same() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    // Half of the big layer is noise, which no back-reference copies: the
    // windows of checkpoints there need none of their bytes.
    let big = big();
    let registry = Registry::start();
    let proxy = Proxy::start(&registry.addr());
    let image = registry.push(&oci_source(&big.layout, BIG_TAG), "big:1", &[]);
    let reference = registry.reference("big:1");
    let cache = TempDir::new().expect("cache dir");
    let run = layerfs([
        "-v",
        "index",
        "push",
        "--cache-dir",
        path(&cache),
        &reference,
    ]);
    run.expect_success("layerfs index push");
    assert!(run.stderr.contains("gzip windows sparse"), "{}", run.stderr);
    let stored: u64 = std::fs::read_dir(cache.path())
        .expect("cache")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .map(|p| std::fs::metadata(p).expect("entry").len())
        .sum();

    proxy.clear();
    let empty = TempDir::new().expect("cache dir");
    let sparse = Mount::fresh();
    run_captured(Command::new(bin()).args(mount_args(
        &["--cache-dir", path(&empty)],
        &[PathBuf::from(format!("{}/big:1", proxy.addr()))],
        sparse.path(),
    )))
    .expect_success("layerfs mount with the pushed index");
    let exchanges = proxy.blob_exchanges();
    assert!(
        exchanges.iter().all(|e| !e.path.ends_with(&big.digest)),
        "no layer blob before ready: {exchanges:#?}"
    );
    let pushed = proxy.blob_bytes();
    assert!(
        pushed * 4 < stored,
        "the index travels in {pushed} bytes, stored in {stored}"
    );
    // The media type says how it travels.
    let get = |reference: &str, accept: &str| -> Value {
        let response = http::get(
            &registry.addr(),
            &format!("/v2/big/manifests/{reference}"),
            &[("Accept", accept)],
        )
        .expect("GET a manifest");
        assert_eq!(response.status(), 200, "{response:?}");
        serde_json::from_slice(&response.body).expect("JSON")
    };
    let listing = get(&image.replacen(':', "-", 1), INDEX);
    let artifact = listing["manifests"][0]["digest"].as_str().expect("digest");
    assert_eq!(
        get(artifact, MANIFEST)["layers"][0]["mediaType"],
        INDEX_LAYER
    );
    let read = contents(sparse.path());
    drop(sparse);
    let whole = Mount::with_args(
        &["--no-cache", "--no-remote-index"],
        &[PathBuf::from(&reference)],
    );
    assert!(
        read == contents(whole.path()),
        "every file reads as through the pass's own index"
    );
}
