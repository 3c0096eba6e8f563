//! Lazy mounts from a registry (issue 8), against a real registry on
//! loopback (Debian's `docker-registry`, the CNCF distribution registry)
//! with a counting, fault-injecting proxy in front of it in this process.
//! Images are pushed with skopeo; umoci's unpack of the same image is the
//! reference tree. A test that needs the registry, umoci or skopeo is
//! skipped, with a line saying so, where it is missing (`.ci/run` installs
//! them, and fails rather than skips).
//!
//! The `harness_` tests check the registry, the proxy and the fixtures on
//! their own (with std::net and skopeo), so a failure in the others is
//! about layerfs, not the harness.
//!
//! Every layerfs command names its own `--cache-dir`, so no index stored
//! by an earlier run (or test) hides a fault a test injects.

mod common;
#[path = "registry/fixtures.rs"]
mod fixtures;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::http;
use common::mount::{bin, daemons_serving, is_mounted, mount_args, run_captured, Run};
use common::oci::{sha256, Layout, INDEX, MANIFEST, TAR};
use common::proxy::{Failure, Proxy, Scope, TOKEN};
use common::registry::Registry;
use common::tree::{snapshot, Fields, Mtime};
use common::{assert_tree, tar_warnings, Expected, Mount};
use fixtures::{big, images, oci_source, BIG_TAG, CROSS_TAG, MULTI_TAG, PLAIN_TAG};
use tempfile::TempDir;

/// A Range-capable client needs at most this many blob bytes to read one
/// small file of the big layer: a few 2 MiB checkpoint spans, compressed.
const FEW_SPANS: u64 = 8 << 20;

/// What a `--peek 65536` may fetch beyond the 64 KiB asked for (one read
/// ahead or a rounded-up range).
const PEEK_SLACK: u64 = 64 * 1024;

/// Bound on a read that must fail (EIO) rather than hang; generous, since
/// it only stops a hang from wedging the test run, never judges speed.
const READ_BOUND_SECS: &str = "120";

/// What umoci's unpack preserves (see tests/umoci.rs): everything but
/// xattrs, and whole-second mtimes.
const UMOCI_FIELDS: Fields = Fields {
    xattrs: false,
    mtime: Mtime::Seconds,
};

fn expected_from(rootfs: &Path) -> Expected {
    Expected::from_snapshot(&snapshot(rootfs), UMOCI_FIELDS)
}

/// A registry, the proxy in front of it and a cache directory for layerfs.
/// Field order is drop order: the registry goes before the proxy, and
/// mounts (locals of the test, declared later) before both.
struct Rig {
    registry: Registry,
    proxy: Proxy,
    cache: TempDir,
}

impl Rig {
    fn new() -> Rig {
        let registry = Registry::start();
        let proxy = Proxy::start(&registry.addr());
        Rig {
            registry,
            proxy,
            cache: tempfile::tempdir().expect("cache dir"),
        }
    }

    /// Pushes the cross-check image (gzip layers) as `cross:gz`; returns
    /// the manifest digest.
    fn push_cross(&self) -> String {
        let source = oci_source(&images().cross, CROSS_TAG);
        self.registry.push(&source, "cross:gz", &[])
    }

    /// Uploads the plain-layer image as `plain:1`; returns the manifest
    /// digest.
    fn push_plain(&self) -> String {
        self.registry.upload(&images().plain, PLAIN_TAG, "plain:1")
    }

    /// `PROXY/name`: a reference that goes through the proxy.
    fn via_proxy(&self, name: &str) -> String {
        format!("{}/{name}", self.proxy.addr())
    }

    fn cache_dir(&self) -> &str {
        self.cache.path().to_str().expect("utf-8 temp path")
    }

    /// `--cache-dir DIR` of this rig.
    fn cached(&self) -> [&str; 2] {
        ["--cache-dir", self.cache_dir()]
    }
}

/// Runs `layerfs mount EXTRA... REFERENCE MOUNTPOINT` with `env` added; the
/// guard unmounts whatever got mounted.
fn try_mount(extra: &[&str], reference: &str, env: &[(&str, &str)]) -> (Run, Mount) {
    let guard = Mount::fresh();
    let mut cmd = Command::new(bin());
    cmd.args(mount_args(extra, &[PathBuf::from(reference)], guard.path()));
    cmd.envs(env.iter().copied());
    (run_captured(&mut cmd), guard)
}

/// Mounts `reference`, panicking with layerfs' stderr if that fails.
fn mount(extra: &[&str], reference: &str) -> Mount {
    let (run, guard) = try_mount(extra, reference, &[]);
    run.expect_success(&format!("layerfs mount {reference}"));
    assert!(
        is_mounted(guard.path()),
        "layerfs mount {reference} exited 0 but nothing is mounted"
    );
    guard
}

/// Asserts a mount failed cleanly: non-zero exit, nothing mounted, no
/// daemon left, and a message naming each of `names`.
fn assert_refused(run: &Run, guard: &Mount, names: &[&str]) {
    assert!(
        !run.status.success(),
        "layerfs mount succeeded; stderr:\n{}",
        run.stderr
    );
    assert!(
        !is_mounted(guard.path()),
        "a failed mount left {} mounted",
        guard.path().display()
    );
    assert_eq!(
        daemons_serving(guard.path()),
        Vec::<u32>::new(),
        "a failed mount left a daemon"
    );
    for name in names {
        assert!(
            run.stderr.contains(name),
            "the error does not name {name:?}:\n{}",
            run.stderr
        );
    }
}

/// Runs `layerfs ARGS...` and returns its output, panicking on failure.
fn layerfs_ok(args: &[&str]) -> String {
    let run = run_captured(Command::new(bin()).args(args));
    run.expect_success(&format!("layerfs {}", args.join(" ")));
    run.stdout
}

/// `cat PATH` bounded by `timeout`, output kept as bytes.
fn read_bounded(path: &Path) -> Output {
    Command::new("timeout")
        .arg(READ_BOUND_SECS)
        .arg("cat")
        .arg(path)
        .output()
        .expect("run timeout cat")
}

/// Asserts `cat` of `path` failed with EIO, in time, having printed
/// nothing but a prefix of `truth`.
fn assert_read_fails_with_eio(path: &Path, truth: &[u8]) {
    let out = read_bounded(path);
    assert_ne!(
        out.status.code(),
        Some(124),
        "reading {} hung past {READ_BOUND_SECS} s",
        path.display()
    );
    assert!(
        !out.status.success(),
        "reading {} succeeded ({} bytes)",
        path.display(),
        out.stdout.len()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Input/output error"),
        "reading {} failed but not with EIO: {stderr}",
        path.display()
    );
    assert!(
        truth.starts_with(&out.stdout),
        "reading {} served {} bytes that are not the file's",
        path.display(),
        out.stdout.len()
    );
}

/// The layer digests of `tag` in the layout at `dir`, bottom first.
fn layer_digests(dir: &Path, tag: &str) -> Vec<String> {
    let layout = Layout { dir: dir.into() };
    let manifest = layout.tagged(tag);
    layout
        .layers(&manifest)
        .into_iter()
        .map(|(_, digest, _)| digest)
        .collect()
}

/// The bytes of blob `digest` of the layout at `dir`.
fn blob_of(dir: &Path, digest: &str) -> Vec<u8> {
    let path = Layout { dir: dir.into() }.blob_path(digest);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Makes the proxy invert the middle byte of the plain image's bottom
/// layer, which lies inside usr/lib/libbig.so: the tar stays valid, so
/// only a digest or a span checksum can catch it. Returns the layer's
/// digest and size.
fn corrupt_plain_bottom_layer(proxy: &Proxy) -> (String, u64) {
    let layer = layer_digests(&images().plain, PLAIN_TAG).remove(0);
    let size = blob_of(&images().plain, &layer).len() as u64;
    proxy.corrupt_blob(&layer, size / 2);
    (layer, size)
}

/// Blob bytes the proxy served for `digest`.
fn bytes_of_blob(proxy: &Proxy, digest: &str) -> u64 {
    proxy
        .blob_exchanges()
        .iter()
        .filter(|e| e.path.ends_with(digest))
        .map(|e| e.body_bytes)
        .sum()
}

/// The GOARCH-style name of the host's architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no fixture platform for host architecture {other}"),
    }
}

// ---------------------------------------------------------------------
// The harness on its own.
// ---------------------------------------------------------------------

#[test]
fn harness_base64_matches_rfc_4648_vectors() {
    let cases = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (input, want) in cases {
        assert_eq!(http::base64(input.as_bytes()), want, "base64({input:?})");
    }
}

#[test]
fn harness_registry_serves_pushes_logs_and_restarts_on_its_storage() {
    require!(Tool("umoci"), Root, Tool("docker-registry"), Tool("skopeo"));
    let mut registry = Registry::start();
    let source = oci_source(&images().cross, CROSS_TAG);
    let digest = registry.push(&source, "cross:gz", &[]);
    let addr = registry.addr();
    let accept = [("Accept", MANIFEST)];
    let manifest = http::get(&addr, "/v2/cross/manifests/gz", &accept).expect("GET manifest");
    assert_eq!(manifest.status(), 200, "{manifest:?}");
    assert_eq!(sha256(&manifest.body), digest, "manifest digest");
    assert!(
        registry.log().contains("/v2/cross/manifests/gz"),
        "the access log does not show the manifest GET:\n{}",
        registry.log()
    );

    registry.stop();
    assert!(!registry.is_running());
    assert!(
        http::get(&addr, "/v2/", &[]).is_err(),
        "a stopped registry still answers on {addr}"
    );
    registry.restart();
    let by_digest = http::get(&addr, &format!("/v2/cross/manifests/{digest}"), &accept)
        .expect("GET manifest after restart");
    assert_eq!(by_digest.body, manifest.body, "storage kept across restart");
}

#[test]
fn harness_fixtures_are_what_the_tests_assume() {
    require!(Tool("umoci"), Root, Tool("docker-registry"), Tool("skopeo"));
    let images = images();
    let registry = Registry::start();
    let addr = registry.addr();
    registry.upload(&images.plain, PLAIN_TAG, "plain:1");
    let manifest = http::get(&addr, "/v2/plain/manifests/1", &[("Accept", MANIFEST)])
        .expect("GET plain manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.body).expect("json");
    let types: BTreeSet<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().expect("mediaType"))
        .collect();
    assert_eq!(types, BTreeSet::from([TAR]), "plain layers stay plain");

    registry.push(&oci_source(&images.multi, MULTI_TAG), "multi:1", &["--all"]);
    let index =
        http::get(&addr, "/v2/multi/manifests/1", &[("Accept", INDEX)]).expect("GET multi index");
    let index: serde_json::Value = serde_json::from_slice(&index.body).expect("json");
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let p = &m["platform"];
            format!(
                "{}/{}",
                p["os"].as_str().unwrap_or(""),
                p["architecture"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let arches: Vec<String> = images
        .multi_rootfs
        .iter()
        .map(|(_, rootfs)| std::fs::read_to_string(rootfs.join("etc/arch")).expect("etc/arch"))
        .collect();
    assert_eq!(arches, ["linux/amd64\n", "linux/arm64\n"]);

    let big = big();
    assert!(
        (48 << 20..200 << 20).contains(&big.size),
        "big layer blob is {} bytes",
        big.size
    );
    let blob = blob_of(&big.layout, &big.digest);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let names: Vec<String> = archive
        .entries()
        .expect("big tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    let needle_at = names
        .iter()
        .position(|n| n == fixtures::NEEDLE)
        .expect("needle in the big layer");
    assert_eq!(needle_at, names.len() - 2, "needle is near the end");
    assert_eq!(names[1], fixtures::BIG_FIRST_FILE);
}

/// The same images read from their local layouts match the references, so
/// the registry tests below differ from a passing local mount only in
/// where the bytes come from.
#[test]
fn harness_local_layouts_mount_as_their_references() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"));
    let images = images();
    let local = |dir: &Path, tag: &str| PathBuf::from(format!("{}:{tag}", dir.display()));
    let plain = Mount::with_args(&["--no-cache"], &[local(&images.plain, PLAIN_TAG)]);
    assert_tree(plain.path(), &expected_from(&images.cross_rootfs));
    drop(plain);
    for (platform, rootfs) in &images.multi_rootfs {
        let multi = Mount::with_args(
            &["--no-cache", "--platform", platform],
            &[local(&images.multi, MULTI_TAG)],
        );
        assert_tree(multi.path(), &expected_from(rootfs));
    }
    let big = big();
    let mount = Mount::with_args(&["--no-cache"], &[local(&big.layout, BIG_TAG)]);
    let needle = std::fs::read(mount.join(fixtures::NEEDLE)).expect("read the needle");
    assert_eq!(needle, fixtures::NEEDLE_CONTENT);
}

#[test]
fn harness_proxy_forwards_and_counts_bytes_and_ranges() {
    require!(Tool("umoci"), Root, Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    let proxy = rig.proxy.addr();
    let layer = &layer_digests(&images().cross, CROSS_TAG)[0];
    let truth = blob_of(&images().cross, layer);
    let path = format!("/v2/cross/blobs/{layer}");

    let whole = http::get(proxy, &path, &[]).expect("GET blob");
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.body, truth);
    let part = http::get(proxy, &path, &[("Range", "bytes=100-1099")]).expect("ranged GET");
    assert_eq!(part.status(), 206);
    assert_eq!(part.body, truth[100..1100]);
    let head = http::request(proxy, "HEAD", &path, &[]).expect("HEAD blob");
    assert_eq!(head.status(), 200);

    let log = rig.proxy.exchanges();
    let summary: Vec<(&str, Option<&str>, u16, u64)> = log
        .iter()
        .map(|e| {
            (
                e.method.as_str(),
                e.range.as_deref(),
                e.status,
                e.body_bytes,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", None, 200, truth.len() as u64),
            ("GET", Some("bytes=100-1099"), 206, 1000),
            ("HEAD", None, 200, 0),
        ]
    );
    assert_eq!(rig.proxy.blob_bytes(), truth.len() as u64 + 1000);
    rig.proxy.clear();
    assert!(rig.proxy.exchanges().is_empty());
}

#[test]
fn harness_proxy_injects_each_fault() {
    require!(Tool("umoci"), Root, Tool("docker-registry"), Tool("skopeo"));
    let mut rig = Rig::new();
    rig.push_cross();
    let proxy = rig.proxy.addr().to_string();
    let layers = layer_digests(&images().cross, CROSS_TAG);
    let blob = |d: &str| blob_of(&images().cross, d);
    let (first, last) = (&layers[0], &layers[3]);
    let path = format!("/v2/cross/blobs/{first}");
    let get = |range: Option<&str>| {
        let headers: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        http::get(&proxy, &path, &headers).expect("GET through the proxy")
    };

    rig.proxy.set_range_as_full(true);
    let full = get(Some("bytes=0-99"));
    assert_eq!((full.status(), full.body.len()), (200, blob(first).len()));
    rig.proxy.set_range_as_full(false);

    rig.proxy.truncate_blobs(500, 1);
    let cut = get(None);
    assert_eq!(cut.status(), 200);
    assert_eq!(cut.body, blob(first)[..500], "cut after 500 bytes");
    assert_eq!(get(None).body, blob(first), "only once");

    rig.proxy.fail_next(2, Failure::Unavailable, Scope::Blobs);
    let manifest =
        http::get(&proxy, "/v2/cross/manifests/gz", &[("Accept", MANIFEST)]).expect("GET manifest");
    assert_eq!(manifest.status(), 200, "blob scope spares manifests");
    assert_eq!([get(None).status(), get(None).status()], [503, 503]);
    assert_eq!(get(None).status(), 200);
    rig.proxy.fail_next(1, Failure::TooManyRequests, Scope::Any);
    let limited = http::get(&proxy, "/v2/", &[]).expect("GET /v2/");
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.head.header("retry-after"), Some("1"));

    rig.proxy.substitute_blob(first, last);
    assert_eq!(get(None).body, blob(last), "another blob's bytes");
    rig.proxy.heal();

    rig.proxy.corrupt_blob(first, 1000);
    let whole = get(None).body;
    let ranged = get(Some("bytes=990-1009")).body;
    let truth = blob(first);
    let differing: Vec<usize> = (0..truth.len()).filter(|&i| whole[i] != truth[i]).collect();
    assert_eq!(differing, [1000]);
    assert_eq!(ranged[10], !truth[1000]);
    assert_eq!(ranged[..10], truth[990..1000]);
    rig.proxy.heal();

    rig.proxy.refuse_all(true);
    assert!(http::get(&proxy, "/v2/", &[]).is_err(), "refused");
    assert_eq!(rig.proxy.refused(), 1);
    rig.proxy.refuse_all(false);
    assert_eq!(
        http::get(&proxy, "/v2/", &[]).expect("GET /v2/").status(),
        200
    );

    rig.registry.stop();
    assert!(
        http::get(&proxy, "/v2/", &[]).is_err(),
        "a stopped registry shows through the proxy as a dead connection"
    );
}

#[test]
fn harness_proxy_token_flow_serves_a_real_client() {
    require!(Tool("umoci"), Root, Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    rig.proxy.require_token(Some(("alice", "s3cret")));
    let proxy = rig.proxy.addr();
    let ping = http::get(proxy, "/v2/cross/manifests/gz", &[]).expect("GET manifest");
    assert_eq!(ping.status(), 401);
    let challenge = ping.head.header("www-authenticate").expect("challenge");
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"http://{proxy}/token\",service=\"test\",scope=\"repository:cross:pull\""
        )
    );
    let bad = format!("Basic {}", http::base64(b"alice:wrong"));
    let denied =
        http::get(proxy, "/token?service=test", &[("Authorization", &bad)]).expect("GET /token");
    assert_eq!(denied.status(), 401);

    let out = tempfile::tempdir().expect("out dir");
    let copy = |creds: Option<&str>| {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--src-tls-verify=false"]);
        if let Some(creds) = creds {
            cmd.args(["--src-creds", creds]);
        }
        cmd.arg(format!("docker://{proxy}/cross:gz"))
            .arg(format!("oci:{}:copy", out.path().display()));
        run_captured(&mut cmd)
    };
    assert!(!copy(None).status.success(), "skopeo pulled without creds");
    copy(Some("alice:s3cret")).expect_success("skopeo copy with --src-creds");
    let tokens: Vec<u16> = rig
        .proxy
        .exchanges()
        .iter()
        .filter(|e| e.path.starts_with("/token"))
        .map(|e| e.status)
        .collect();
    assert!(tokens.contains(&200), "no token handed out: {tokens:?}");
    let bearer = format!("Bearer {TOKEN}");
    let ok = http::get(
        proxy,
        "/v2/cross/manifests/gz",
        &[("Authorization", &bearer), ("Accept", MANIFEST)],
    )
    .expect("GET with token");
    assert_eq!(ok.status(), 200);
}

// ---------------------------------------------------------------------
// Mounting, listing, exporting and inspecting registry references.
// ---------------------------------------------------------------------

#[test]
fn a_gzip_image_mounts_by_tag_and_by_digest_as_umoci_unpacks_it() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    let digest = rig.push_cross();
    assert_mounts_as_cross_rootfs(&rig, &["cross:gz".into(), format!("cross@{digest}")]);
}

#[test]
fn a_plain_layer_image_mounts_by_tag_and_by_digest_as_umoci_unpacks_it() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"));
    let rig = Rig::new();
    let digest = rig.push_plain();
    assert_mounts_as_cross_rootfs(&rig, &["plain:1".into(), format!("plain@{digest}")]);
}

/// Mounts each of `names` (through the proxy) and compares it with umoci's
/// unpack of the cross-check image.
fn assert_mounts_as_cross_rootfs(rig: &Rig, names: &[String]) {
    let expected = expected_from(&images().cross_rootfs);
    for name in names {
        let m = mount(&rig.cached(), &rig.via_proxy(name));
        assert_tree(m.path(), &expected);
    }
}

#[test]
fn a_multi_platform_index_mounts_the_platform_asked_for_or_the_hosts() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    let source = oci_source(&images().multi, MULTI_TAG);
    let index_digest = rig.registry.push(&source, "multi:1", &["--all"]);
    let rootfs = |platform: &str| {
        let (_, rootfs) = images()
            .multi_rootfs
            .iter()
            .find(|(p, _)| p.starts_with(platform))
            .expect("fixture platform");
        expected_from(rootfs)
    };
    let reference = rig.via_proxy("multi:1");
    let cache = rig.cached();
    let arm = mount(
        &[&cache[..], &["--platform", "linux/arm64"]].concat(),
        &reference,
    );
    assert_tree(arm.path(), &rootfs("linux/arm64"));
    drop(arm);
    let host = format!("linux/{}", host_arch());
    let default = mount(&cache, &reference);
    assert_tree(default.path(), &rootfs(&host));
    drop(default);
    let by_digest = rig.via_proxy(&format!("multi@{index_digest}"));
    let amd = mount(
        &[&cache[..], &["--platform", "linux/amd64"]].concat(),
        &by_digest,
    );
    assert_tree(amd.path(), &rootfs("linux/amd64"));
}

#[test]
fn ls_and_inspect_of_a_reference_match_those_of_the_local_layout() {
    require!(Tool("umoci"), Root, Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    let reference = rig.via_proxy("cross:gz");
    let local = format!("{}:{CROSS_TAG}", images().cross.display());
    for command in [&["ls", "--json"][..], &["ls", "-l"], &["inspect", "--json"]] {
        let remote = layerfs_ok(&[command, &rig.cached(), &[&reference]].concat());
        let here = layerfs_ok(&[command, &["--no-cache", &local]].concat());
        assert_eq!(remote, here, "layerfs {}", command.join(" "));
    }
}

#[test]
fn export_of_a_reference_extracts_as_umoci_unpacks_it() {
    require!(
        Tool("umoci"),
        Root,
        Tool("docker-registry"),
        Tool("skopeo"),
        Tool("bsdtar")
    );
    let rig = Rig::new();
    rig.push_cross();
    let work = tempfile::tempdir().expect("work dir");
    let flat = work.path().join("export.tar");
    let flat_arg = flat.to_str().expect("utf-8 temp path");
    let reference = rig.via_proxy("cross:gz");
    layerfs_ok(
        &[
            &["export"],
            &rig.cached()[..],
            &[&reference, "-o", flat_arg],
        ]
        .concat(),
    );
    let expected = expected_from(&images().cross_rootfs);

    let by_gnu = work.path().join("gnu");
    std::fs::create_dir(&by_gnu).expect("mkdir");
    let run = run_captured(
        Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(&flat)
            .arg("-C")
            .arg(&by_gnu),
    );
    run.expect_success("GNU tar -x of the export");
    assert_eq!(
        tar_warnings(&run.stderr),
        Vec::<&str>::new(),
        "GNU tar warned"
    );
    assert_tree(&by_gnu, &expected);

    let by_bsd = work.path().join("bsd");
    std::fs::create_dir(&by_bsd).expect("mkdir");
    run_captured(
        Command::new("bsdtar")
            .args(["--numeric-owner", "-xpf"])
            .arg(&flat)
            .arg("-C")
            .arg(&by_bsd),
    )
    .expect_success("bsdtar -x of the export");
    assert_tree(&by_bsd, &expected);
}

// ---------------------------------------------------------------------
// Laziness: what a mount and a read fetch.
// ---------------------------------------------------------------------

#[test]
fn with_a_stored_index_a_read_near_the_end_of_a_big_layer_fetches_a_few_spans() {
    require!(Fuse, Tool("docker-registry"), Tool("skopeo"));
    let big = big();
    let rig = Rig::new();
    rig.registry
        .push(&oci_source(&big.layout, BIG_TAG), "big:1", &[]);
    let reference = rig.via_proxy("big:1");
    drop(mount(&rig.cached(), &reference));
    let indexing = bytes_of_blob(&rig.proxy, &big.digest);
    assert!(
        indexing >= big.size,
        "the first mount read {indexing} of the layer's {} bytes: it cannot have indexed it",
        big.size
    );

    rig.proxy.clear();
    let m = mount(&rig.cached(), &reference);
    let before_serving = bytes_of_blob(&rig.proxy, &big.digest);
    assert_eq!(
        before_serving,
        0,
        "a mount with a stored index fetched layer bytes: {:?}",
        rig.proxy.blob_exchanges()
    );
    let content = std::fs::read(m.join(fixtures::NEEDLE)).expect("read the needle");
    assert_eq!(content, fixtures::NEEDLE_CONTENT);
    let fetched = bytes_of_blob(&rig.proxy, &big.digest);
    let requests = rig.proxy.blob_exchanges().len();
    eprintln!(
        "read of {} near the end of a {}-byte gzip layer: {fetched} bytes in {requests} requests",
        fixtures::NEEDLE,
        big.size
    );
    assert!(
        fetched <= FEW_SPANS && fetched * 8 < big.size,
        "reading one small file fetched {fetched} of {} bytes: {:?}",
        big.size,
        rig.proxy.blob_exchanges()
    );
}

#[test]
fn peek_fetches_only_the_bytes_asked_for() {
    require!(Tool("docker-registry"), Tool("skopeo"));
    let big = big();
    let rig = Rig::new();
    rig.registry
        .push(&oci_source(&big.layout, BIG_TAG), "big:1", &[]);
    let reference = rig.via_proxy("big:1");
    let listing =
        layerfs_ok(&[&["ls", "--peek", "65536"], &rig.cached()[..], &[&reference]].concat());
    assert!(
        listing.contains(fixtures::BIG_FIRST_FILE) && !listing.contains(fixtures::NEEDLE),
        "peek listing:\n{listing}"
    );
    let fetched = bytes_of_blob(&rig.proxy, &big.digest);
    assert!(
        fetched <= 65536 + PEEK_SLACK,
        "--peek 65536 fetched {fetched} bytes: {:?}",
        rig.proxy.blob_exchanges()
    );
}

// ---------------------------------------------------------------------
// Faults.
// ---------------------------------------------------------------------

#[test]
fn an_unreachable_registry_fails_the_mount_with_one_line_naming_it() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    rig.proxy.refuse_all(true);
    let env = [("LAYERFS_HTTP_RETRIES", "1")];
    let (run, guard) = try_mount(&rig.cached(), &rig.via_proxy("cross:gz"), &env);
    assert_refused(&run, &guard, &[rig.proxy.addr()]);
    assert!(rig.proxy.refused() > 0, "layerfs never tried the registry");
    assert_eq!(
        run.stderr.trim().lines().count(),
        1,
        "not one line:\n{}",
        run.stderr
    );
}

#[test]
fn a_token_protected_registry_needs_creds_and_takes_them() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    rig.proxy.require_token(Some(("alice", "s3cret")));
    // No ~/.docker/config.json of the machine's may supply credentials.
    let home = tempfile::tempdir().expect("home");
    let home_path = home.path().to_str().expect("utf-8 temp path");
    let home_env = [("HOME", home_path), ("DOCKER_CONFIG", home_path)];
    let reference = rig.via_proxy("cross:gz");
    let (run, guard) = try_mount(&rig.cached(), &reference, &home_env);
    assert_refused(&run, &guard, &[rig.proxy.addr()]);
    drop(guard);
    let challenged = rig.proxy.exchanges();
    assert!(
        challenged.iter().any(|e| e.status == 401),
        "layerfs was never challenged: {challenged:?}"
    );

    let creds = [&rig.cached()[..], &["--creds", "alice:s3cret"]].concat();
    let (run, m) = try_mount(&creds, &reference, &home_env);
    run.expect_success("layerfs mount --creds");
    assert_tree(m.path(), &expected_from(&images().cross_rootfs));
    let tokens = rig.proxy.exchanges();
    assert!(
        tokens
            .iter()
            .any(|e| e.path.starts_with("/token") && e.status == 200),
        "no token was fetched: {tokens:?}"
    );
}

#[test]
fn a_missing_tag_is_named() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    let (run, guard) = try_mount(&rig.cached(), &rig.via_proxy("cross:nope"), &[]);
    assert_refused(&run, &guard, &["nope"]);
    let asked = rig.proxy.exchanges();
    assert!(
        asked
            .iter()
            .any(|e| e.path == "/v2/cross/manifests/nope" && e.status == 404),
        "layerfs never asked the registry for the tag: {asked:?}"
    );
}

#[test]
fn a_range_answered_with_the_whole_blob_fails_the_mount_clearly() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    rig.proxy.set_range_as_full(true);
    let (run, guard) = try_mount(&rig.cached(), &rig.via_proxy("cross:gz"), &[]);
    assert_refused(&run, &guard, &[rig.proxy.addr()]);
    assert!(
        run.stderr.to_lowercase().contains("range"),
        "the error does not say the registry ignored the Range:\n{}",
        run.stderr
    );
    let ignored = rig.proxy.blob_exchanges();
    assert!(
        ignored.iter().any(|e| e.range.is_some() && e.status == 200),
        "no ranged request was answered with 200: {ignored:?}"
    );
}

#[test]
fn transient_503_and_429_are_retried() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    let expected = expected_from(&images().cross_rootfs);
    let count = |status: u16| {
        rig.proxy
            .exchanges()
            .iter()
            .filter(|e| e.status == status)
            .count()
    };
    rig.proxy.fail_next(2, Failure::Unavailable, Scope::Any);
    let m = mount(&rig.cached(), &rig.via_proxy("cross:gz"));
    assert_tree(m.path(), &expected);
    drop(m);
    assert_eq!(count(503), 2, "both failures were met");

    let fresh = tempfile::tempdir().expect("cache dir");
    let fresh_cache = [
        "--cache-dir",
        fresh.path().to_str().expect("utf-8 temp path"),
    ];
    rig.proxy
        .fail_next(1, Failure::TooManyRequests, Scope::Blobs);
    let m = mount(&fresh_cache, &rig.via_proxy("cross:gz"));
    assert_tree(m.path(), &expected);
    assert_eq!(count(429), 1, "the 429 was met");
}

#[test]
fn an_index_bundle_lets_another_machine_mount_without_reading_blobs() {
    require!(Fuse, Tool("docker-registry"), Tool("skopeo"));
    let big = big();
    let rig = Rig::new();
    rig.registry
        .push(&oci_source(&big.layout, BIG_TAG), "big:1", &[]);
    let reference = rig.via_proxy("big:1");
    let work = tempfile::tempdir().expect("work dir");
    let bundle = work.path().join("big.index.tar");
    let bundle_arg = bundle.to_str().expect("utf-8 temp path");
    // One machine indexes the image (reading its blob once) and packs the
    // index.
    let mut export = vec!["index", "export"];
    export.extend(rig.cached());
    export.extend([reference.as_str(), "-o", bundle_arg]);
    layerfs_ok(&export);
    assert!(bytes_of_blob(&rig.proxy, &big.digest) >= big.size);
    // Another, with an empty cache of its own, takes the bundle.
    let other = work.path().join("other-cache");
    let other_arg = other.to_str().expect("utf-8 temp path");
    layerfs_ok(&["index", "import", "--cache-dir", other_arg, bundle_arg]);
    rig.proxy.clear();
    let m = mount(&["--cache-dir", other_arg], &reference);
    assert_eq!(
        bytes_of_blob(&rig.proxy, &big.digest),
        0,
        "a mount with an imported index fetched layer bytes: {:?}",
        rig.proxy.blob_exchanges()
    );
    let content = std::fs::read(m.join(fixtures::NEEDLE)).expect("read the needle");
    assert_eq!(content, fixtures::NEEDLE_CONTENT);
    assert!(bytes_of_blob(&rig.proxy, &big.digest) <= FEW_SPANS);
    drop(m);

    // Something else offered as a bundle is refused by name, and a cache
    // without an entry for the stack cannot be exported from.
    let not_a_bundle = work.path().join("layer.tar");
    let layer = common::Layer::new(common::Format::Pax).file("etc/x", "y");
    std::fs::write(&not_a_bundle, layer.to_tar()).expect("write");
    let run = run_captured(Command::new(bin()).args([
        "index",
        "export",
        "--no-cache",
        &reference,
        "-o",
        bundle_arg,
    ]));
    // `index` needs its cache: --no-cache is not offered (a usage error).
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("'--no-cache'"), "{}", run.stderr);
    let run = run_captured(Command::new(bin()).args([
        "index",
        "import",
        "--cache-dir",
        other_arg,
        not_a_bundle.to_str().expect("utf-8 temp path"),
    ]));
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("not a layerfs index bundle"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_truncated_body_is_resumed_and_the_content_is_right() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    rig.proxy.truncate_blobs(100, 1);
    let m = mount(&rig.cached(), &rig.via_proxy("cross:gz"));
    assert_tree(m.path(), &expected_from(&images().cross_rootfs));
    let cut = rig.proxy.blob_exchanges();
    assert!(
        cut.iter().any(|e| e.body_bytes == 100),
        "no body was cut: {cut:?}"
    );
}

#[test]
fn another_blobs_bytes_fail_the_first_mount_naming_the_digest() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let rig = Rig::new();
    rig.push_cross();
    let layers = layer_digests(&images().cross, CROSS_TAG);
    rig.proxy.substitute_blob(&layers[2], &layers[3]);
    let (run, guard) = try_mount(&rig.cached(), &rig.via_proxy("cross:gz"), &[]);
    assert_refused(&run, &guard, &[&layers[2][..19]]);
    assert!(
        bytes_of_blob(&rig.proxy, &layers[2]) > 0,
        "layerfs never fetched the substituted blob"
    );
}

#[test]
fn a_corrupted_plain_layer_fails_the_first_mount_with_a_digest_mismatch() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"));
    let rig = Rig::new();
    rig.push_plain();
    let (layer, size) = corrupt_plain_bottom_layer(&rig.proxy);
    let (run, guard) = try_mount(&rig.cached(), &rig.via_proxy("plain:1"), &[]);
    assert_refused(&run, &guard, &[&layer[..19]]);
    assert!(
        bytes_of_blob(&rig.proxy, &layer) > size / 2,
        "layerfs never fetched the corrupted byte"
    );
    assert!(
        run.stderr.to_lowercase().contains("digest"),
        "not called a digest mismatch:\n{}",
        run.stderr
    );
}

#[test]
fn wrong_bytes_after_a_stored_index_are_eio_never_served() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"));
    let rig = Rig::new();
    rig.push_plain();
    let reference = rig.via_proxy("plain:1");
    drop(mount(&rig.cached(), &reference));
    corrupt_plain_bottom_layer(&rig.proxy);
    let env = [("LAYERFS_HTTP_RETRIES", "1")];
    let (run, m) = try_mount(&rig.cached(), &reference, &env);
    run.expect_success("mount with a stored index");
    let truth = std::fs::read(images().cross_rootfs.join("usr/lib/libbig.so")).expect("truth");
    assert_read_fails_with_eio(&m.join("usr/lib/libbig.so"), &truth);
}

#[test]
fn a_registry_stopped_under_a_mount_gives_eio_then_recovers() {
    require!(Fuse, Tool("umoci"), Tool("docker-registry"), Tool("skopeo"));
    let mut rig = Rig::new();
    rig.push_cross();
    // Straight to the registry: it is the registry's going away under
    // layerfs' connections that is tested here.
    let reference = rig.registry.reference("cross:gz");
    let env = [("LAYERFS_HTTP_RETRIES", "1")];
    let (run, m) = try_mount(&rig.cached(), &reference, &env);
    run.expect_success("layerfs mount");
    let hostname = std::fs::read(m.join("etc/hostname")).expect("read etc/hostname");
    assert_eq!(hostname, b"base-host\n");

    rig.registry.stop();
    let truth = std::fs::read(images().cross_rootfs.join("usr/lib/libbig.so")).expect("truth");
    let big = m.join("usr/lib/libbig.so");
    assert_read_fails_with_eio(&big, &truth);

    rig.registry.restart();
    let again = read_bounded(&big);
    assert!(again.status.success(), "read after restart: {again:?}");
    assert!(
        again.stdout == truth,
        "wrong content after the registry came back"
    );
}

/// A registry on loopback that answers every request with a 200 whose
/// body of `len` bytes comes one byte every 200 ms: never silent for a
/// read timeout, never done. Runs until the test process ends.
fn start_dripping_registry(len: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::Write;
                let mut reader = std::io::BufReader::new(&stream);
                if !matches!(http::read_head(&mut reader), Ok(Some(_))) {
                    return;
                }
                let mut writer = &stream;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {len}\r\n\r\n"
                );
                if writer.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for _ in 0..len {
                    if writer.write_all(b" ").is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            });
        }
    });
    addr
}

/// `ls` of an image whose registry drips its manifest fails at the
/// request deadline (made 1 s by LAYERFS_HTTP_DEADLINE_SECS), with one
/// line naming the registry and the manifest; it waited past 75 s before.
#[test]
fn a_registry_that_drips_fails_at_the_request_deadline() {
    require!(Tool("docker-registry"));
    let addr = start_dripping_registry(1000);
    let reference = format!("{addr}/team/app:v1");
    let start = std::time::Instant::now();
    let run = run_captured(
        Command::new("timeout")
            .args(["-s", "KILL", "60", bin(), "ls", "--no-cache", &reference])
            .env("LAYERFS_HTTP_DEADLINE_SECS", "1")
            .env("LAYERFS_HTTP_RETRIES", "1")
            .env("LAYERFS_HTTP_RETRY_DELAY_MS", "1"),
    );
    let took = start.elapsed();
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains(&format!("{addr}/team/app"))
            && run.stderr.contains("manifest")
            && run.stderr.contains("deadline"),
        "stderr: {}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    // Two attempts of 1 s, and slack for a loaded machine.
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
}
