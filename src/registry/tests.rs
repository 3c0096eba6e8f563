//! The client against the fake registry: resolution, logins, ranges and
//! every fault the issue lists.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::test_server::{digest, Faults, Login, TestRegistry};
use super::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn fast() -> RegistryOptions {
    RegistryOptions {
        retry: Some(RetryPolicy {
            retries: 3,
            base_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        }),
        // No login of the machine's own may leak into a test.
        docker_config: Some("/nonexistent/layerfs-test/config.json".into()),
        ..RegistryOptions::default()
    }
}

/// Bytes that differ at every offset, so a misplaced range shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8)
        .collect()
}

fn manifest_json(media_type: &str, layers: &[(&str, u64, &str)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(digest, size, media)| json!({"mediaType": media, "digest": digest, "size": size}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", "0".repeat(64)), "size": 2},
        "layers": layers,
    }))
    .expect("json")
}

/// A registry holding `app:v1`: two layers of 5000 and 300 bytes.
fn image(registry: &TestRegistry) -> (Vec<Vec<u8>>, String) {
    let blobs = vec![pattern(5000, 1), pattern(300, 2)];
    let digests: Vec<String> = blobs.iter().map(|b| registry.put_blob(b)).collect();
    let body = manifest_json(
        OCI_MANIFEST,
        &[
            (&digests[0], 5000, GZIP_LAYER),
            (
                &digests[1],
                300,
                "application/vnd.docker.image.rootfs.diff.tar",
            ),
        ],
    );
    let manifest = registry.put_manifest(Some("v1"), OCI_MANIFEST, &body);
    (blobs, manifest)
}

fn reference(registry: &TestRegistry, rest: &str) -> Reference {
    parse(&format!("{}/{rest}", registry.host()))
        .expect("valid")
        .expect("a reference")
}

fn resolved(registry: &TestRegistry, rest: &str, options: &RegistryOptions) -> RemoteImage {
    resolve(&reference(registry, rest), options).expect("resolves")
}

fn failure(registry: &TestRegistry, rest: &str, options: &RegistryOptions) -> String {
    resolve(&reference(registry, rest), options)
        .expect_err("fails")
        .to_string()
}

fn fetched(layer: &RemoteLayer, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    layer.blob.fetch(offset, &mut buf).map(|()| buf)
}

fn streamed(layer: &RemoteLayer, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    layer
        .blob
        .stream(offset)?
        .read_to_end(&mut out)
        .map(|_| out)
}

#[test]
fn a_tag_resolves_to_layers_read_by_range_and_stream() {
    let registry = TestRegistry::start();
    let (blobs, manifest) = image(&registry);
    let image = resolved(&registry, "team/app:v1", &fast());
    assert_eq!(image.manifest_digest.as_str(), manifest);
    assert_eq!(image.layers.len(), 2);
    let layer = &image.layers[0];
    assert_eq!(layer.size, 5000);
    assert_eq!(layer.media_type, GZIP_LAYER);
    assert_eq!(layer.digest.as_str(), digest(&blobs[0]));
    assert_eq!(layer.blob.len(), 5000);
    assert_eq!(
        layer.blob.name(),
        format!("{}/team/app@{}", registry.host(), layer.digest)
    );
    assert_eq!(
        fetched(layer, 1234, 100).expect("range"),
        blobs[0][1234..1334]
    );
    assert_eq!(fetched(layer, 0, 5000).expect("whole"), blobs[0]);
    assert_eq!(streamed(layer, 4000).expect("stream"), blobs[0][4000..]);
    assert_eq!(streamed(&image.layers[1], 0).expect("stream"), blobs[1]);
    assert_eq!(
        image.bytes_received.load(Ordering::Relaxed),
        100 + 5000 + 1000 + 300
    );
    let ranges: Vec<String> = registry
        .seen()
        .iter()
        .filter_map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(
        ranges,
        [
            "bytes=1234-1333",
            "bytes=0-4999",
            "bytes=4000-4999",
            "bytes=0-299"
        ]
    );
    let past_end = fetched(layer, 4990, 20).expect_err("past the end");
    assert!(
        past_end.to_string().contains("past the blob's end"),
        "{past_end}"
    );
    assert!(fetched(layer, 10, 0).expect("nothing").is_empty());
}

#[test]
fn blobs_are_read_from_many_threads_through_one_client() {
    let registry = TestRegistry::start();
    let (blobs, _) = image(&registry);
    let image = resolved(&registry, "team/app:v1", &fast());
    std::thread::scope(|scope| {
        for n in 0..8u64 {
            let layer = &image.layers[0];
            let blobs = &blobs;
            scope.spawn(move || {
                let offset = n * 500;
                let got = fetched(layer, offset, 400).expect("range");
                assert_eq!(got, blobs[0][offset as usize..offset as usize + 400]);
            });
        }
    });
    assert_eq!(image.bytes_received.load(Ordering::Relaxed), 8 * 400);
}

#[test]
fn a_digest_reference_must_match_the_bytes_served() {
    let registry = TestRegistry::start();
    let (_, manifest) = image(&registry);
    let good = resolved(&registry, &format!("team/app@{manifest}"), &fast());
    assert_eq!(good.manifest_digest.as_str(), manifest);

    let other = manifest_json(DOCKER_MANIFEST, &[]);
    registry.put_manifest_as(&manifest, DOCKER_MANIFEST, &other);
    let message = failure(&registry, &format!("team/app@{manifest}"), &fast());
    assert!(message.contains("digest mismatch"), "{message}");
    assert!(message.contains(&manifest), "{message}");
    assert!(message.contains(&digest(&other)), "{message}");

    registry.set_faults(Faults {
        false_digest: true,
        ..Faults::default()
    });
    let message = failure(&registry, "team/app:v1", &fast());
    assert!(
        message.contains(&format!(
            "manifest v1: digest mismatch: expected {}",
            digest(b"")
        )),
        "{message}"
    );

    registry.set_faults(Faults {
        malformed_digest: true,
        ..Faults::default()
    });
    let message = failure(&registry, "team/app:v1", &fast());
    assert!(
        message.contains("manifest v1: ")
            && message.contains("Docker-Content-Digest header")
            && message.contains("64 lowercase hex digits"),
        "{message}"
    );
}

#[test]
fn an_index_resolves_to_the_platforms_manifest() {
    let registry = TestRegistry::start();
    let (_, amd64) = image(&registry);
    let blob = registry.put_blob(b"arm layer");
    let arm_body = manifest_json(DOCKER_MANIFEST, &[(&blob, 9, GZIP_LAYER)]);
    let arm = registry.put_manifest(None, DOCKER_MANIFEST, &arm_body);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64, "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": DOCKER_MANIFEST, "digest": arm, "size": 1,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }))
    .expect("json");
    registry.put_manifest(Some("multi"), OCI_INDEX, &index);

    let mut options = fast();
    options.platform = Some(Platform::parse("linux/arm64").expect("platform"));
    let image = resolved(&registry, "team/app:multi", &options);
    assert_eq!(image.manifest_digest.as_str(), arm);
    assert_eq!(image.layers.len(), 1);
    assert_eq!(fetched(&image.layers[0], 0, 9).expect("read"), b"arm layer");

    options.platform = Some(Platform::parse("linux/amd64").expect("platform"));
    assert_eq!(
        resolved(&registry, "team/app:multi", &options)
            .manifest_digest
            .as_str(),
        amd64
    );

    options.platform = Some(Platform::parse("linux/s390x").expect("platform"));
    let message = failure(&registry, "team/app:multi", &options);
    assert!(
        message.contains("no manifest for platform linux/s390x"),
        "{message}"
    );
    assert!(message.contains("linux/amd64, linux/arm64/v8"), "{message}");
}

#[test]
fn documents_layerfs_cannot_read_are_refused_clearly() {
    let registry = TestRegistry::start();
    let schema1 = br#"{"schemaVersion": 1, "name": "team/app", "tag": "old", "fsLayers": []}"#;
    registry.put_manifest(
        Some("old"),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        schema1,
    );
    let message = failure(&registry, "team/app:old", &fast());
    assert!(message.contains("schema 1"), "{message}");

    // Each index points at the one before: five levels.
    let (_, mut target) = image(&registry);
    for _ in 0..5 {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_INDEX, "digest": target, "size": 1}],
        }))
        .expect("json");
        target = registry.put_manifest(None, OCI_INDEX, &index);
    }
    let message = failure(&registry, &format!("team/app@{target}"), &fast());
    assert!(message.contains("nest more than 4 deep"), "{message}");

    let foreign = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                    "digest": format!("sha256:{}", "a".repeat(64)), "size": 10,
                    "urls": ["https://example.com/layer"]}],
    }))
    .expect("json");
    registry.put_manifest(Some("windows"), DOCKER_MANIFEST, &foreign);
    let message = failure(&registry, "team/app:windows", &fast());
    assert!(
        message.contains("non-distributable") && message.contains("https://example.com/layer"),
        "{message}"
    );

    let helm = manifest_json(
        OCI_MANIFEST,
        &[(
            &digest(b"x"),
            1,
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        )],
    );
    registry.put_manifest(Some("chart"), OCI_MANIFEST, &helm);
    let message = failure(&registry, "team/app:chart", &fast());
    assert!(message.contains("helm.chart"), "{message}");

    registry.put_manifest(Some("notjson"), OCI_MANIFEST, b"<html>");
    let message = failure(&registry, "team/app:notjson", &fast());
    assert!(
        message.contains("manifest notjson is not valid"),
        "{message}"
    );

    let sizeless = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "layers": [{"mediaType": GZIP_LAYER, "digest": digest(b"x")}],
    }))
    .expect("json");
    registry.put_manifest(Some("sizeless"), OCI_MANIFEST, &sizeless);
    let message = failure(&registry, "team/app:sizeless", &fast());
    assert!(message.contains("no size"), "{message}");
}

#[test]
fn missing_manifests_and_blobs_are_404_at_once() {
    let registry = TestRegistry::start();
    let (blobs, _) = image(&registry);
    let message = failure(&registry, "team/app:nope", &fast());
    assert!(
        message.contains(&format!(
            "{}/team/app: manifest nope unknown (404)",
            registry.host()
        )),
        "{message}"
    );
    assert_eq!(registry.count("/manifests/nope"), 1, "a 404 is not retried");

    let image = resolved(&registry, "team/app:v1", &fast());
    let absent = RegistryBlob::new(
        std::sync::Arc::new(
            super::client::Client::new(&reference(&registry, "team/app"), &fast()).expect("client"),
        ),
        &crate::digest::Digest::sha256(b"absent"),
        6,
    );
    let error = absent.fetch(0, &mut [0; 6]).expect_err("404");
    assert!(
        error
            .to_string()
            .contains(&format!("blob {} unknown (404)", digest(b"absent"))),
        "{error}"
    );
    assert_eq!(registry.count(&digest(b"absent")), 1);
    assert_eq!(
        fetched(&image.layers[1], 0, 300).expect("still fine"),
        blobs[1]
    );
}

#[test]
fn a_bearer_token_is_fetched_once_cached_and_refreshed_when_it_expires() {
    let registry = TestRegistry::start();
    let (blobs, _) = image(&registry);
    registry.set_login(Login::Bearer(Some(("alice".into(), "s3cret".into()))));
    let mut options = fast();
    options.creds = Some("alice:s3cret".into());
    let image = resolved(&registry, "team/app:v1", &options);
    assert_eq!(registry.tokens_issued(), 1);
    for offset in [0, 1000, 2000] {
        let got = fetched(&image.layers[0], offset, 10).expect("range");
        assert_eq!(got, blobs[0][offset as usize..offset as usize + 10]);
    }
    assert_eq!(registry.tokens_issued(), 1, "the token is reused");
    let token_request = registry
        .seen()
        .into_iter()
        .find(|s| s.path.starts_with("/token"))
        .expect("a token request");
    assert!(
        token_request
            .path
            .contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{}",
        token_request.path
    );
    assert!(token_request.path.contains("service=test-registry"));

    registry.expire_tokens();
    assert_eq!(
        streamed(&image.layers[1], 0).expect("after refresh"),
        blobs[1]
    );
    assert_eq!(registry.tokens_issued(), 2);

    options.creds = Some("alice:wrong".into());
    let message = failure(&registry, "team/app:v1", &options);
    assert!(message.contains("unauthorized (401)"), "{message}");
    assert!(
        message.contains(r#"the login of "alice" from --creds"#),
        "{message}"
    );

    let message = failure(&registry, "team/app:v1", &fast());
    assert!(message.contains("no login was used"), "{message}");
}

#[test]
fn an_anonymous_token_serves_a_public_repository() {
    let registry = TestRegistry::start();
    let (blobs, _) = image(&registry);
    registry.set_login(Login::Bearer(None));
    let image = resolved(&registry, "team/app:v1", &fast());
    assert_eq!(fetched(&image.layers[1], 0, 300).expect("read"), blobs[1]);
    let token_request = registry
        .seen()
        .into_iter()
        .find(|s| s.path.starts_with("/token"))
        .expect("a token request");
    assert!(!token_request.headers.contains_key("authorization"));
}

#[test]
fn basic_auth_takes_the_login_from_the_docker_config() {
    let registry = TestRegistry::start();
    let (blobs, _) = image(&registry);
    registry.set_login(Login::Basic("bob".into(), "pw".into()));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bob:pw");
    let host = registry.host();
    std::fs::write(
        &config,
        format!(r#"{{"auths": {{"http://{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .expect("write config");
    let mut options = fast();
    options.docker_config = Some(config.clone());
    let image = resolved(&registry, "team/app:v1", &options);
    assert_eq!(fetched(&image.layers[1], 0, 300).expect("read"), blobs[1]);

    options.docker_config = Some(dir.path().join("none.json"));
    let message = failure(&registry, "team/app:v1", &options);
    assert!(message.contains("unauthorized (401)"), "{message}");
    assert!(message.contains("none.json"), "{message}");
}

#[test]
fn a_registry_that_ignores_range_is_refused_except_for_the_whole_blob() {
    let registry = TestRegistry::start();
    let (blobs, _) = image(&registry);
    let image = resolved(&registry, "team/app:v1", &fast());
    registry.set_faults(Faults {
        ignore_range: true,
        ..Faults::default()
    });
    let error = fetched(&image.layers[0], 100, 10).expect_err("ignored range");
    let message = error.to_string();
    assert!(
        message.contains("ignores Range requests (answered 200 with the whole blob)"),
        "{message}"
    );
    assert!(
        message.contains(image.layers[0].digest.as_str()),
        "{message}"
    );
    assert_eq!(registry.count("/blobs/"), 1, "not retried");
    assert_eq!(fetched(&image.layers[0], 0, 5000).expect("whole"), blobs[0]);
    assert_eq!(streamed(&image.layers[0], 0).expect("whole"), blobs[0]);
    assert!(streamed(&image.layers[0], 10).is_err());
}

#[test]
fn a_truncated_body_is_resumed_where_it_broke() {
    let registry = TestRegistry::start();
    let (blobs, _) = image(&registry);
    let image = resolved(&registry, "team/app:v1", &fast());
    registry.set_faults(Faults {
        truncate: 1,
        ..Faults::default()
    });
    assert_eq!(
        fetched(&image.layers[0], 1000, 2000).expect("fetch"),
        blobs[0][1000..3000]
    );
    let ranges: Vec<String> = registry
        .seen()
        .iter()
        .filter_map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, ["bytes=1000-2999", "bytes=2000-2999"]);

    registry.set_faults(Faults {
        truncate: 2,
        ..Faults::default()
    });
    assert_eq!(streamed(&image.layers[0], 0).expect("stream"), blobs[0]);

    registry.set_faults(Faults {
        truncate: 100,
        ..Faults::default()
    });
    let message = fetched(&image.layers[0], 0, 4000)
        .expect_err("always cut")
        .to_string();
    assert!(message.contains("gave up after 4 attempts"), "{message}");
    assert!(streamed(&image.layers[0], 0).is_err());
}

/// A registry that sends a byte every 100 ms is never silent long enough
/// for a read timeout: each request (manifest, range, stream) ends at its
/// deadline, with an error naming the registry, what was fetched and the
/// deadline, after the retries and no later.
#[test]
fn a_dripping_registry_fails_each_request_at_its_deadline() {
    let registry = TestRegistry::start();
    let (_, _) = image(&registry);
    let options = RegistryOptions {
        retry: Some(RetryPolicy {
            retries: 1,
            base_delay: Duration::from_millis(1),
            deadline: Duration::from_secs(1),
        }),
        ..fast()
    };
    let image = resolved(&registry, "team/app:v1", &options);
    registry.set_faults(Faults {
        drip: Some(Duration::from_millis(100)),
        ..Faults::default()
    });
    let start = std::time::Instant::now();
    let place = format!("{}/team/app", registry.host());
    let blob = &image.layers[0].digest;
    let manifest = failure(&registry, "team/app:v1", &options);
    let range = fetched(&image.layers[0], 0, 4000)
        .expect_err("a range in 1 s at 10 bytes/s")
        .to_string();
    let stream = streamed(&image.layers[0], 0)
        .expect_err("a stream in 1 s at 10 bytes/s")
        .to_string();
    for (message, what) in [
        (&manifest, "v1"),
        (&range, blob.as_str()),
        (&stream, blob.as_str()),
    ] {
        assert!(
            message.contains(&place)
                && message.contains(what)
                && message.contains("deadline")
                && message.contains("gave up after 2 attempts"),
            "{message}"
        );
    }
    // Two attempts of 1 s for each of three fetches, and slack for a
    // loaded machine; without the deadline, 20 s would not fetch one.
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn busy_and_throttling_registries_are_retried() {
    let registry = TestRegistry::start();
    let (blobs, _) = image(&registry);
    registry.set_faults(Faults {
        unavailable: 2,
        ..Faults::default()
    });
    let image = resolved(&registry, "team/app:v1", &fast());
    assert_eq!(registry.count("/manifests/v1"), 3);

    registry.set_faults(Faults {
        throttle: 1,
        ..Faults::default()
    });
    assert_eq!(
        fetched(&image.layers[1], 0, 300).expect("after 429"),
        blobs[1]
    );
    assert_eq!(registry.count("/blobs/"), 2);

    registry.set_faults(Faults {
        unavailable: 100,
        ..Faults::default()
    });
    let message = failure(&registry, "team/app:v1", &fast());
    assert!(
        message.contains("the registry answered 503 (gave up after 4 attempts)"),
        "{message}"
    );
}

#[test]
fn redirected_blobs_get_no_registry_login() {
    let registry = TestRegistry::start();
    let (blobs, _) = image(&registry);
    registry.set_login(Login::Bearer(None));
    let image = resolved(&registry, "team/app:v1", &fast());
    registry.set_faults(Faults {
        redirect_blobs: true,
        ..Faults::default()
    });
    assert_eq!(
        fetched(&image.layers[0], 10, 20).expect("redirected"),
        blobs[0][10..30]
    );
    let seen = registry.seen();
    let blob = seen
        .iter()
        .rev()
        .find(|s| s.path.contains("/blobs/"))
        .expect("blob request");
    assert!(blob.headers.contains_key("authorization"));
    let storage = seen.last().expect("storage request");
    assert!(storage.path.starts_with("/storage/"), "{}", storage.path);
    assert!(!storage.headers.contains_key("authorization"));
    assert_eq!(
        storage.headers.get("range").map(String::as_str),
        Some("bytes=10-29")
    );
}

#[test]
fn an_unreachable_registry_is_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let reference = parse(&format!("127.0.0.1:{port}/team/app:v1"))
        .expect("valid")
        .expect("a reference");
    let message = resolve(&reference, &fast())
        .expect_err("nobody listens")
        .to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}/team/app: registry unreachable")),
        "{message}"
    );
    assert!(message.contains("gave up after 4 attempts"), "{message}");
}

/// A listing of referrers of `subject`: (digest, artifact type) each.
fn referrer_listing(entries: &[(&str, &str)]) -> Vec<u8> {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(digest, artifact_type)| {
            json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 10, "artifactType": artifact_type})
        })
        .collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        .expect("json")
}

#[test]
fn referrers_come_from_the_api_else_from_the_fallback_tag() {
    let server = TestRegistry::start();
    let layer = server.put_blob(b"layer");
    let body = manifest_json(OCI_MANIFEST, &[(&layer, 5, GZIP_LAYER)]);
    let subject: crate::digest::Digest = server
        .put_manifest(Some("v1"), OCI_MANIFEST, &body)
        .parse()
        .expect("digest");
    let ours = "application/vnd.example.ours";
    let reference = parse(&format!("{}/repo:v1", server.host()))
        .expect("parse")
        .expect("a reference");
    let image = resolve(&reference, &fast()).expect("resolve");
    let (a, b) = (digest(b"a"), digest(b"b"));

    // Neither: no referrers, and the fallback tag was asked for.
    let found = image.repository.referrers(&subject, ours).expect("lookup");
    assert!(found.is_empty());
    assert_eq!(server.count("/manifests/sha256-"), 1);

    // The fallback tag, filtered by artifact type.
    let tag = subject.as_str().replacen(':', "-", 1);
    let listing = referrer_listing(&[(&a, ours), (&b, "application/other")]);
    server.put_manifest(Some(&tag), OCI_INDEX, &listing);
    let found = image.repository.referrers(&subject, ours).expect("lookup");
    let digests: Vec<_> = found.iter().map(|r| r.digest.as_str()).collect();
    assert_eq!(digests, [a.as_str()]);

    // The API, when the registry has it, and then no fallback tag.
    server.put_referrers(subject.as_str(), &referrer_listing(&[(&b, ours)]));
    let before = server.count("/manifests/sha256-");
    let found = image.repository.referrers(&subject, ours).expect("lookup");
    let digests: Vec<_> = found.iter().map(|r| r.digest.as_str()).collect();
    assert_eq!(digests, [b.as_str()]);
    assert_eq!(server.count("/manifests/sha256-"), before);
    let asked = server.count(&format!("/referrers/{subject}?artifactType="));
    assert!(asked >= 1, "{:?}", server.seen());
}

#[test]
fn a_referrer_is_pushed_with_a_token_that_may_push() {
    for no_scope in [false, true] {
        let server = TestRegistry::start();
        server.set_login(Login::Bearer(None));
        server.set_faults(Faults {
            no_scope,
            ..Faults::default()
        });
        let layer = server.put_blob(b"layer");
        let body = manifest_json(OCI_MANIFEST, &[(&layer, 5, GZIP_LAYER)]);
        let subject: crate::digest::Digest = server
            .put_manifest(Some("v1"), OCI_MANIFEST, &body)
            .parse()
            .expect("digest");
        let reference = parse(&format!("{}/repo:v1", server.host()))
            .expect("parse")
            .expect("a reference");
        let image = resolve(&reference, &fast()).expect("resolve");
        let repository = &image.repository;

        let blob = repository.push_blob(b"an index").expect("push a blob");
        assert_eq!(blob.as_str(), digest(b"an index"));
        let artifact = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example",
            "layers": [{"mediaType": "application/octet-stream", "digest": blob, "size": 8}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": body.len()},
        }))
        .expect("json");
        let pushed = repository
            .push_referrer(&artifact, &subject, "application/vnd.example", &json!({}))
            .unwrap_or_else(|e| panic!("push (challenge without scope: {no_scope}): {e}"));
        assert_eq!(pushed.digest.as_str(), digest(&artifact));
        let tag = subject.as_str().replacen(':', "-", 1);
        assert_eq!(pushed.fallback_tag.as_deref(), Some(tag.as_str()));
        // The blob is not uploaded again.
        let uploads = server.count("/blobs/uploads/");
        repository.push_blob(b"an index").expect("push again");
        assert_eq!(server.count("/blobs/uploads/"), uploads);
        let found = repository
            .referrers(&subject, "application/vnd.example")
            .expect("lookup");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].digest, pushed.digest);
        assert_eq!(
            repository.blob(&blob, 8).expect("fetch the blob"),
            b"an index"
        );
    }
}
