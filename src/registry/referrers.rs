//! Artifacts that refer to an image manifest (OCI distribution spec 1.1):
//! found through the referrers API, or on a registry without it (the
//! distribution registry 2.8 most private registries run) through the
//! fallback tag `sha256-HEX`, an index the pushers of artifacts keep up to
//! date themselves; and pushed: blobs, the manifest, then the fallback tag
//! where the registry did not take the manifest's subject itself.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::client::Client;
use super::resolve::{fetch_manifest, parse, MAX_MANIFEST};
use super::retry::Failure;
use super::transport::{self, Method};
use super::RegistryError;
use crate::digest::Digest;

/// An OCI image index: what the referrers API answers and the fallback tag
/// holds.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// An OCI image manifest: what an artifact is pushed as.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A referrer, as an index lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct Referrer {
    /// The referrer's own media type (an image manifest).
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The referrer manifest's digest, parsed with the listing.
    pub digest: Digest,
    /// Its size.
    #[serde(default)]
    pub size: Option<u64>,
    /// What kind of artifact it is.
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    /// The manifest's annotations, copied into the listing.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    manifests: Vec<Referrer>,
}

/// What pushing a referrer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The referrer manifest's digest.
    pub digest: Digest,
    /// Whether the fallback tag was written (the registry did not say it
    /// took the subject, so its referrers API may not list the manifest).
    pub fallback_tag: Option<String>,
}

/// One repository of a registry, for what refers to its manifests. Cheap
/// to clone: the client (its connection pool and login) is shared with
/// the image's blobs.
#[derive(Clone, Debug)]
pub struct Repository {
    client: Arc<Client>,
}

impl Repository {
    pub(crate) fn new(client: Arc<Client>) -> Repository {
        Repository { client }
    }

    /// `REGISTRY/REPO`, for messages.
    pub fn place(&self) -> &str {
        self.client.place()
    }

    /// The referrers of the manifest `subject` whose artifact type is
    /// `artifact_type`, as the referrers API lists them, else as the
    /// fallback tag does; none if neither lists any.
    pub fn referrers(
        &self,
        subject: &Digest,
        artifact_type: &str,
    ) -> Result<Vec<Referrer>, RegistryError> {
        let listing = match self.referrers_api(subject, artifact_type)? {
            Some(listing) => listing,
            None => match self.fallback(subject)? {
                Some(body) => parse(self.place(), &fallback_what(subject), &body)?,
                None => Listing {
                    manifests: Vec::new(),
                },
            },
        };
        // The API may ignore the filter (it says so in a header we need
        // not read): filtering again costs nothing.
        Ok(listing
            .manifests
            .into_iter()
            .filter(|r| r.artifact_type.as_deref() == Some(artifact_type))
            .collect())
    }

    /// `GET /v2/NAME/referrers/DIGEST`; `None` if the registry has no
    /// such API (it answers 404, as the spec says it must, or 400/405).
    fn referrers_api(
        &self,
        subject: &Digest,
        artifact_type: &str,
    ) -> Result<Option<Listing>, RegistryError> {
        let what = format!("the referrers of {subject}");
        let url = self.client.url(&format!(
            "/referrers/{subject}?artifactType={}",
            query_escape(artifact_type)
        ));
        let fetched = self.client.retry().run(|| {
            let mut response = self
                .client
                .attempt(&url, &[("Accept", INDEX_MEDIA_TYPE)], &what)?;
            transport::read_small(&mut response, MAX_MANIFEST, self.place(), &what)
        });
        match fetched {
            Ok(body) => Ok(Some(parse(self.place(), &what, &body)?)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(RegistryError::Status { status, .. }) if status == 400 || status == 405 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The fallback tag's index of the referrers of `subject`, as stored;
    /// `None` if there is none.
    fn fallback(&self, subject: &Digest) -> Result<Option<Vec<u8>>, RegistryError> {
        let tag = fallback_tag(subject);
        let what = fallback_what(subject);
        match fetch_manifest(&self.client, &tag, None, INDEX_MEDIA_TYPE, &what) {
            Ok(fetched) => Ok(Some(fetched.body)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The image manifest `digest`, its bytes checked against it.
    pub fn manifest(&self, digest: &Digest) -> Result<Vec<u8>, RegistryError> {
        let what = format!("manifest {digest}");
        fetch_manifest(
            &self.client,
            digest.as_str(),
            Some(digest),
            MANIFEST_MEDIA_TYPE,
            &what,
        )
        .map(|fetched| fetched.body)
    }

    /// The whole blob `digest` of `size` bytes (a small one: it is held in
    /// memory), its bytes checked against the digest.
    pub fn blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {digest}");
        let url = self.client.url(&format!("/blobs/{digest}"));
        let body = self.client.retry().run(|| {
            let mut response = self.client.attempt(&url, &[], &what)?;
            let body = transport::read_small(&mut response, size, self.place(), &what)?;
            self.client.count(body.len() as u64);
            Ok(body)
        })?;
        if body.len() as u64 != size {
            return Err(RegistryError::Truncated {
                name: format!("{}@{digest}", self.place()),
                got: body.len() as u64,
                wanted: size,
            });
        }
        let actual = Digest::sha256(&body);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                place: self.place().to_string(),
                what,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(body)
    }

    /// Uploads `bytes` as a blob unless the repository has it already
    /// (`HEAD` first), in one `POST` and one `PUT`; returns its digest.
    pub fn push_blob(&self, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::sha256(bytes);
        let what = format!("blob {digest}");
        let url = self.client.url(&format!("/blobs/{digest}"));
        let head = self
            .client
            .retry()
            .run(|| self.client.attempt_with(Method::Head, &url, &[], &what));
        match head {
            Ok(_) => return Ok(digest),
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let start = self.client.url("/blobs/uploads/");
        let upload_what = format!("an upload of {what}");
        self.client.retry().run(|| {
            let response =
                self.client
                    .attempt_with(Method::Post(&[]), &start, &[], &upload_what)?;
            let location = transport::header(&response, "location")
                .ok_or_else(|| Failure::from(self.answer(&upload_what, "no Location header")))?;
            let mut target = self.client.absolute(location);
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str("digest=");
            target.push_str(&query_escape(digest.as_str()));
            let headers = [("Content-Type", "application/octet-stream")];
            self.client
                .attempt_with(Method::Put(bytes), &target, &headers, &what)?;
            Ok(())
        })?;
        Ok(digest)
    }

    /// Pushes the image manifest `manifest` (its blobs pushed already),
    /// whose `subject` is `subject` and `artifactType` `artifact_type`, by
    /// digest. Unless the registry says it took the subject (the
    /// `OCI-Subject` header), the fallback tag's index gets the manifest,
    /// in place of any other of the same artifact type, and keeps every
    /// other referrer it lists.
    pub fn push_referrer(
        &self,
        manifest: &[u8],
        subject: &Digest,
        artifact_type: &str,
        annotations: &Value,
    ) -> Result<Pushed, RegistryError> {
        let digest = Digest::sha256(manifest);
        let taken = self.put_manifest(digest.as_str(), MANIFEST_MEDIA_TYPE, manifest)?;
        if taken.as_deref() == Some(subject.as_str()) {
            return Ok(Pushed {
                digest,
                fallback_tag: None,
            });
        }
        let what = fallback_what(subject);
        let mut index = match self.fallback(subject)? {
            Some(body) => parse::<Value>(self.place(), &what, &body)?,
            None => json!({
                "schemaVersion": 2,
                "mediaType": INDEX_MEDIA_TYPE,
                "manifests": [],
            }),
        };
        let Some(listed) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
            return Err(self.answer(&what, "not an image index (no manifests list)"));
        };
        listed.retain(|entry| {
            entry.get("artifactType").and_then(Value::as_str) != Some(artifact_type)
                && entry.get("digest").and_then(Value::as_str) != Some(digest.as_str())
        });
        let mut entry = json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": digest,
            "size": manifest.len(),
            "artifactType": artifact_type,
        });
        if annotations.as_object().is_some_and(|a| !a.is_empty()) {
            entry["annotations"] = annotations.clone();
        }
        listed.push(entry);
        let body = serde_json::to_vec(&index).map_err(|source| RegistryError::Json {
            place: self.place().to_string(),
            what: what.clone(),
            source,
        })?;
        let tag = fallback_tag(subject);
        self.put_manifest(&tag, INDEX_MEDIA_TYPE, &body)?;
        Ok(Pushed {
            digest,
            fallback_tag: Some(tag),
        })
    }

    /// `PUT /v2/NAME/manifests/REFERENCE`; the `OCI-Subject` the registry
    /// answered with, if any.
    fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Option<String>, RegistryError> {
        let what = format!("manifest {reference}");
        let url = self.client.url(&format!("/manifests/{reference}"));
        let headers = [("Content-Type", media_type)];
        self.client.retry().run(|| {
            let response = self
                .client
                .attempt_with(Method::Put(body), &url, &headers, &what)?;
            Ok(transport::header(&response, "oci-subject").map(str::to_string))
        })
    }

    fn answer(&self, what: &str, reason: &str) -> RegistryError {
        RegistryError::BadAnswer {
            place: self.place().to_string(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The fallback tag of the referrers of `subject` (`ALG:HEX`): `ALG-HEX`,
/// the reference cut to 64 characters as the spec says.
fn fallback_tag(subject: &Digest) -> String {
    let hex = subject.hex();
    format!("{}-{}", subject.algorithm(), hex.get(..64).unwrap_or(hex))
}

fn fallback_what(subject: &Digest) -> String {
    format!("the referrers tag of {subject}")
}

/// `text` escaped for a URL's query: what is not unreserved (RFC 3986) or
/// `/` is percent-encoded (a media type's `+`, a digest's `:`).
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tags_follow_the_spec() {
        let digest = |text: String| text.parse::<Digest>().expect("digest");
        let hex = "a".repeat(64);
        assert_eq!(
            fallback_tag(&digest(format!("sha256:{hex}"))),
            format!("sha256-{hex}")
        );
        let long = "b".repeat(128);
        assert_eq!(
            fallback_tag(&digest(format!("sha512:{long}"))),
            format!("sha512-{}", &long[..64])
        );
    }

    #[test]
    fn queries_escape_what_a_url_cannot_hold() {
        assert_eq!(
            query_escape("application/vnd.layerfs.index.v1+json"),
            "application/vnd.layerfs.index.v1%2Bjson"
        );
        assert_eq!(query_escape("sha256:ab"), "sha256%3Aab");
    }
}
