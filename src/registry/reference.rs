//! Registry references (`HOST[:PORT]/REPO[:TAG|@DIGEST]`, `docker://REF`)
//! told apart from local paths and checked against the distribution
//! spec's grammar before anything goes on the wire.

use std::fmt;

use super::RegistryError;
use crate::digest::{Algorithm, Digest};

/// Where Docker Hub's API lives; `docker.io` is only its name.
const DOCKER_HUB: &str = "registry-1.docker.io";

/// Names that mean Docker Hub in a reference.
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", DOCKER_HUB];

/// The distribution spec's limit on a repository name (with its host).
const MAX_NAME: usize = 255;

/// The distribution spec's limit on a tag.
const MAX_TAG: usize = 128;

/// A manifest in a registry: which registry, which repository, which tag
/// or digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The argument as given, for messages.
    pub name: String,
    /// `HOST[:PORT]` the API is spoken to (Docker Hub's is
    /// `registry-1.docker.io`).
    pub registry: String,
    /// `library/ubuntu`, `team/app`, …
    pub repository: String,
    /// The tag or digest the manifest is asked for by, or the one blob.
    pub target: Target,
    /// Given as an `http://` URL: plain HTTP even if not on loopback.
    pub plain_http: bool,
}

/// What names a manifest within a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A tag: the registry says which manifest it points to now.
    Tag(String),
    /// A digest (`sha256:<hex>`): the manifest's bytes must hash to it.
    Digest(Digest),
    /// A layer blob, named by its URL in the distribution API
    /// (`https://HOST/v2/REPO/blobs/sha256:<hex>`): that one blob is the
    /// image's only layer. A containerd snapshotter's layers are such
    /// blobs; a digest reference cannot name one, since registries answer
    /// a blob digest asked for as a manifest in their own ways (500 from
    /// distribution).
    Blob(Digest),
}

impl Target {
    /// The tag or digest as the manifest URL takes it.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Tag(tag) => tag,
            Target::Digest(digest) | Target::Blob(digest) => digest.as_str(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = match &self.target {
            Target::Tag(_) => ':',
            Target::Digest(_) => '@',
            Target::Blob(digest) => {
                let scheme = if self.plain_http { "http" } else { "https" };
                return write!(
                    f,
                    "{scheme}://{}/v2/{}/blobs/{digest}",
                    self.registry, self.repository
                );
            }
        };
        write!(
            f,
            "{}/{}{separator}{}",
            self.registry,
            self.repository,
            self.target.as_str()
        )
    }
}

impl Reference {
    /// Whether the registry is this machine, where plain HTTP is safe
    /// (and what a registry started for a test speaks).
    pub fn is_loopback(&self) -> bool {
        let host = host_of(&self.registry);
        host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Whether this is Docker Hub, whose credentials `docker login` files
    /// under a legacy key.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }
}

/// Parses `arg` if it is a registry reference: always for `docker://…`;
/// otherwise only if its first component looks like a host (has a `.` or
/// a `:`, or is `localhost`). `Ok(None)`: not a reference, so a path.
pub fn parse(arg: &str) -> Result<Option<Reference>, RegistryError> {
    let bad = |reason: String| RegistryError::BadReference {
        arg: arg.to_string(),
        reason,
    };
    if let Some(rest) = arg.strip_prefix("docker://") {
        return parse_docker(arg, rest).map(Some).map_err(bad);
    }
    for (scheme, plain_http) in [("http://", true), ("https://", false)] {
        if let Some(rest) = arg.strip_prefix(scheme) {
            return parse_blob_url(arg, rest, plain_http).map(Some).map_err(bad);
        }
    }
    let Some((first, _)) = arg.split_once('/') else {
        return Ok(None);
    };
    let hostlike = first.contains('.') || first.contains(':') || first == "localhost";
    if !hostlike || check_host(first).is_err() {
        return Ok(None);
    }
    parse_docker(arg, arg).map(Some).map_err(bad)
}

/// Parses a reference in Docker's syntax, where a first component that is
/// not a host means Docker Hub.
fn parse_docker(arg: &str, text: &str) -> Result<Reference, String> {
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    let (path, tag) = match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
        _ => (rest, None),
    };
    let (registry, repository) = match path.split_once('/') {
        Some((first, repo))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            check_host(first)?;
            (first.to_string(), repo.to_string())
        }
        _ => (DOCKER_HUB.to_string(), path.to_string()),
    };
    let registry = if DOCKER_HUB_ALIASES.contains(&registry.as_str()) {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    check_repository(&repository)?;
    if registry.len() + 1 + repository.len() > MAX_NAME {
        return Err(format!("the name is longer than {MAX_NAME} characters"));
    }
    let target = match (digest, tag) {
        (Some(digest), _) => Target::Digest(verifiable(digest)?),
        (None, Some(tag)) => {
            check_tag(tag)?;
            Target::Tag(tag.to_string())
        }
        (None, None) => Target::Tag("latest".into()),
    };
    Ok(Reference {
        name: arg.to_string(),
        registry,
        repository,
        target,
        plain_http: false,
    })
}

/// `HOST/v2/REPO/blobs/DIGEST`, the rest of a blob's URL.
fn parse_blob_url(arg: &str, rest: &str, plain_http: bool) -> Result<Reference, String> {
    let shape = "expected a blob URL, SCHEME://HOST/v2/REPO/blobs/sha256:<hex>";
    let (registry, path) = rest.split_once('/').ok_or(shape)?;
    check_host(registry)?;
    let path = path.strip_prefix("v2/").ok_or(shape)?;
    let (repository, digest) = path.rsplit_once("/blobs/").ok_or(shape)?;
    check_repository(repository)?;
    let digest = verifiable(digest)?;
    Ok(Reference {
        name: arg.to_string(),
        registry: registry.to_string(),
        repository: repository.to_string(),
        target: Target::Blob(digest),
        plain_http,
    })
}

/// `HOST` of `HOST[:PORT]`.
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |end| &registry[..=end]);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// `HOST[:PORT]`: DNS labels (letters, digits, inner hyphens) or a
/// bracketed IPv6 address, and a decimal port.
fn check_host(registry: &str) -> Result<(), String> {
    let host = host_of(registry);
    let port = &registry[host.len()..];
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
    };
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("{registry:?} is not a valid registry host[:port]"))
    }
}

/// Repository components: `[a-z0-9]+` joined by `.`, `_`, `__` or runs of
/// `-`, separated by `/`.
fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        let mut i = 0;
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        loop {
            let start = i;
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            if i == start {
                return false;
            }
            if i == bytes.len() {
                return true;
            }
            let separator = &c[i..];
            let skip = if separator.starts_with("__") {
                2
            } else if separator.starts_with('.') || separator.starts_with('_') {
                1
            } else {
                separator.bytes().take_while(|&b| b == b'-').count()
            };
            if skip == 0 {
                return false;
            }
            i += skip;
        }
    };
    if !repository.is_empty() && repository.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "{repository:?} is not a valid repository name (lowercase letters and digits, \
             separated by '.', '_', '__' or '-', components joined by '/')"
        ))
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = tag.len() <= MAX_TAG
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{tag:?} is not a valid tag (up to {MAX_TAG} letters, digits, '_', '.', '-', \
             not starting with '.' or '-')"
        ))
    }
}

/// The digest of a reference, parsed: one layerfs can check what it
/// fetches against, which is a sha256 one.
fn verifiable(text: &str) -> Result<Digest, String> {
    let digest = Digest::parse(text).map_err(|e| e.to_string())?;
    verify_sha256(&digest)?;
    Ok(digest)
}

/// Refuses a well-formed digest layerfs cannot check fetched bytes
/// against: manifests and blobs are hashed with sha256 only.
pub(crate) fn verify_sha256(digest: &Digest) -> Result<(), String> {
    match digest.algorithm() {
        Algorithm::Sha256 => Ok(()),
        other => Err(format!(
            "{digest}: only sha256 digests can be verified, not {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn digest() -> Digest {
        format!("sha256:{HEX}").parse().expect("digest")
    }

    fn parsed(arg: &str) -> Reference {
        match parse(arg) {
            Ok(Some(reference)) => reference,
            other => panic!("{arg}: {other:?}"),
        }
    }

    #[test]
    fn docker_hub_shorthands_expand() {
        let r = parsed("docker://ubuntu");
        assert_eq!(r.registry, "registry-1.docker.io");
        assert_eq!(r.repository, "library/ubuntu");
        assert_eq!(r.target, Target::Tag("latest".into()));
        assert!(r.is_docker_hub());
        let r = parsed("docker://bitnami/redis:7.2");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("registry-1.docker.io", "bitnami/redis")
        );
        assert_eq!(r.target, Target::Tag("7.2".into()));
        assert_eq!(
            parsed("docker://docker.io/alpine").repository,
            "library/alpine"
        );
        assert_eq!(
            parsed("index.docker.io/library/alpine:3").registry,
            DOCKER_HUB
        );
    }

    #[test]
    fn host_references_keep_their_host_and_port() {
        let r = parsed("127.0.0.1:5000/team/app:v1.2_3");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.target, Target::Tag("v1.2_3".into()));
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:v1.2_3");
        let r = parsed(&format!("localhost/app@sha256:{HEX}"));
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.target, Target::Digest(digest()));
        assert!(r.is_loopback());
        // A digest wins over a tag, as with docker.
        let r = parsed(&format!("ghcr.io/o/a:tag@sha256:{HEX}"));
        assert_eq!(r.target, Target::Digest(digest()));
        assert!(!r.is_loopback());
        assert!(parsed("[::1]:5000/a").is_loopback());
        assert!(!parsed("docker://quay.io/a/b").is_loopback());
        assert_eq!(
            parsed("docker://quay.io:443/a/b:c").to_string(),
            "quay.io:443/a/b:c"
        );
    }

    #[test]
    fn paths_are_not_references() {
        for arg in [
            "layer.tar",
            "layers/base.tar.gz",
            "/abs/path.tar",
            "./x/y",
            "../x/y",
            "",
            "image:tag",
            "dir_with_underscore.d_/x",
        ] {
            assert_eq!(parse(arg).expect(arg), None, "{arg}");
        }
    }

    #[test]
    fn bad_references_say_why() {
        let sha512 = format!("example.com/a@sha512:{HEX}{HEX}");
        let upper = format!("example.com/a@sha256:{}", HEX.to_uppercase());
        for (arg, why) in [
            ("docker://Ubuntu", "repository name"),
            ("example.com/App", "repository name"),
            ("example.com/a//b", "repository name"),
            ("example.com/a-", "repository name"),
            ("example.com/a:-x", "tag"),
            ("example.com/a:", "tag"),
            ("example.com/a@sha256:abc", "digest"),
            ("example.com/a@sha512:abc", "128 lowercase hex digits"),
            ("example.com/a@md5:abc", "cannot verify"),
            (sha512.as_str(), "only sha256"),
            (upper.as_str(), "64 lowercase hex digits"),
            ("docker://exa_mple.com:99999/a", "host"),
        ] {
            match parse(arg) {
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains(why), "{arg}: {message}");
                    assert!(message.contains(arg), "{arg}: {message}");
                }
                other => panic!("{arg}: {other:?}"),
            }
        }
        let long = format!("example.com/{}", "a".repeat(MAX_NAME));
        assert!(parse(&long).is_err());
        let long_tag = format!("example.com/a:{}", "t".repeat(MAX_TAG + 1));
        assert!(parse(&long_tag).is_err());
    }

    #[test]
    fn repository_separators_follow_the_spec() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "a/b/c", "0x/y9"] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a._b", "_a", "a___b", "a.", "a/", "A", "a b"] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
    }
}
