//! What can go wrong between layerfs and a registry.

use std::path::PathBuf;

/// Why a registry reference could not be resolved or a blob read; each
/// message names the registry and repository (`place`) and what was asked
/// for, so that one line in a log says what failed where.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The argument looked like a registry reference but breaks its grammar.
    #[error("{arg}: not a valid registry reference: {reason}")]
    BadReference {
        /// The argument.
        arg: String,
        /// Which part is wrong, and what it should be.
        reason: String,
    },
    /// `--creds` is not `USER:PASS`.
    #[error("--creds must be USER:PASS (no colon found)")]
    BadCreds,
    /// The Docker config file holding credentials could not be used.
    #[error("{}: {reason}", path.display())]
    DockerConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not be reached at all (name lookup, connect, TLS).
    #[error("{place}: registry unreachable while fetching {what}: {reason}")]
    Unreachable {
        /// `REGISTRY/REPO`.
        place: String,
        /// What was being fetched.
        what: String,
        /// What the transport said.
        reason: String,
    },
    /// The connection broke or timed out mid-request.
    #[error("{place}: {what}: {reason}")]
    Transport {
        /// `REGISTRY/REPO`.
        place: String,
        /// What was being fetched.
        what: String,
        /// What the transport said.
        reason: String,
    },
    /// 401: the registry wants credentials it did not get, or refused the
    /// ones it got.
    #[error("{place}: {what}: unauthorized (401); {creds}")]
    Unauthorized {
        /// `REGISTRY/REPO`.
        place: String,
        /// What was being fetched.
        what: String,
        /// Whether credentials were sent and where they came from.
        creds: String,
    },
    /// 403: the credentials are known but may not read this repository.
    #[error("{place}: {what}: access denied (403); {creds}")]
    Denied {
        /// `REGISTRY/REPO`.
        place: String,
        /// What was being fetched.
        what: String,
        /// Whether credentials were sent and where they came from.
        creds: String,
    },
    /// 404: no such manifest, blob or repository.
    #[error("{place}: {what} unknown (404)")]
    NotFound {
        /// `REGISTRY/REPO`.
        place: String,
        /// What was asked for (`manifest latest`, `blob sha256:…`).
        what: String,
    },
    /// An HTTP status layerfs has no use for (or a transient one that did
    /// not go away).
    #[error("{place}: {what}: the registry answered {status}")]
    Status {
        /// `REGISTRY/REPO`.
        place: String,
        /// What was asked for.
        what: String,
        /// The status code.
        status: u16,
    },
    /// A transient failure that lasted through every retry.
    #[error("{source} (gave up after {attempts} attempts)")]
    GaveUp {
        /// How many requests were made.
        attempts: u32,
        /// The last failure.
        source: Box<RegistryError>,
    },
    /// The token endpoint's answer could not be used.
    #[error("{place}: token from {realm}: {reason}")]
    Token {
        /// `REGISTRY/REPO`.
        place: String,
        /// The token endpoint.
        realm: String,
        /// What was wrong.
        reason: String,
    },
    /// A manifest or index is not the JSON it should be.
    #[error("{place}: {what} is not valid: {source}")]
    Json {
        /// `REGISTRY/REPO`.
        place: String,
        /// Which document.
        what: String,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A manifest is larger than a registry may serve.
    #[error("{place}: {what} is larger than {limit} bytes")]
    TooLarge {
        /// `REGISTRY/REPO`.
        place: String,
        /// Which document.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A document that is neither an image manifest nor an index of them.
    #[error("{place}: {what} has media type {media_type:?}, which layerfs does not read")]
    MediaType {
        /// `REGISTRY/REPO`.
        place: String,
        /// Which document or layer.
        what: String,
        /// Its media type.
        media_type: String,
    },
    /// A Docker schema 1 manifest, retired in 2019.
    #[error(
        "{place}: {what} is a Docker schema 1 manifest, which layerfs does not read; \
         push the image again with a current client"
    )]
    Schema1 {
        /// `REGISTRY/REPO`.
        place: String,
        /// Which manifest.
        what: String,
    },
    /// Indexes nested deeper than any real image nests them.
    #[error("{place}: indexes nest more than {limit} deep")]
    TooDeep {
        /// `REGISTRY/REPO`.
        place: String,
        /// The limit.
        limit: usize,
    },
    /// A descriptor is missing what a registry blob needs.
    #[error("{place}: {what}: {reason}")]
    BadDescriptor {
        /// `REGISTRY/REPO`.
        place: String,
        /// Which layer.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A layer that lives outside the registry (foreign or
    /// non-distributable, with `urls`).
    #[error("{place}: {what} is a non-distributable layer stored outside the registry ({urls}); layerfs fetches only what the registry serves")]
    Foreign {
        /// `REGISTRY/REPO`.
        place: String,
        /// Which layer.
        what: String,
        /// Where its descriptor says it is.
        urls: String,
    },
    /// Bytes that do not hash to the digest they were asked for by.
    #[error("{place}: {what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// `REGISTRY/REPO`.
        place: String,
        /// Which document.
        what: String,
        /// The digest asked for.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// No manifest of an index is for the platform wanted.
    #[error("{place}: no manifest for platform {wanted} (the index has: {available}); choose one with --platform")]
    NoPlatform {
        /// `REGISTRY/REPO`.
        place: String,
        /// The platform wanted.
        wanted: String,
        /// The platforms the index lists.
        available: String,
    },
    /// A ranged request answered with something other than the range.
    #[error("{name}: {reason}")]
    BadRange {
        /// `REGISTRY/REPO@DIGEST`.
        name: String,
        /// What came back instead.
        reason: String,
    },
    /// An answer that breaks the protocol (an upload with no `Location`,
    /// a referrers index that is not an index).
    #[error("{place}: {what}: {reason}")]
    BadAnswer {
        /// `REGISTRY/REPO`.
        place: String,
        /// What was asked for.
        what: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// A response body shorter than it said it would be.
    #[error("{name}: the body ended after {got} of {wanted} bytes")]
    Truncated {
        /// `REGISTRY/REPO@DIGEST` or what was fetched.
        name: String,
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        wanted: u64,
    },
}
