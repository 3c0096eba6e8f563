//! One repository of one registry, as every request of an image sees it:
//! its base URL, its login state, its retry policy and a count of the blob
//! bytes it received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ureq::http::Response;
use ureq::Body;

use super::auth::Auth;
use super::creds;
use super::retry::{Failure, RetryPolicy};
use super::transport::{self, Http, Method, Request};
use super::{Reference, RegistryError, RegistryOptions};

/// How often one request may be answered 401 before giving up: once to
/// learn the challenge, once more if a cached token had expired.
const AUTH_ROUNDS: u32 = 2;

/// Requests to one repository. `Send + Sync`: blobs share it across the
/// threads that read them.
#[derive(Debug)]
pub(crate) struct Client {
    http: Http,
    /// `http://HOST[:PORT]/v2/REPO`.
    base: String,
    /// `REGISTRY/REPO`, for messages.
    place: String,
    auth: Auth,
    retry: RetryPolicy,
    received: Arc<AtomicU64>,
}

impl Client {
    /// A client for `reference`'s repository. Plain HTTP is spoken to a
    /// loopback registry (what a local or test registry serves; a loopback
    /// registry with TLS would need a certificate the machine trusts for
    /// `localhost`, which none has) and with `insecure`; HTTPS otherwise.
    pub fn new(reference: &Reference, options: &RegistryOptions) -> Result<Client, RegistryError> {
        let scheme = if options.insecure || reference.plain_http || reference.is_loopback() {
            "http"
        } else {
            "https"
        };
        let place = format!("{}/{}", reference.registry, reference.repository);
        let creds = creds::find(reference, options)?;
        let config_path = creds::config_path(options).map(|p| p.display().to_string());
        let retry = options.retry.unwrap_or_else(RetryPolicy::from_env);
        Ok(Client {
            http: Http::new(retry.deadline),
            base: format!(
                "{scheme}://{}/v2/{}",
                reference.registry, reference.repository
            ),
            auth: Auth::new(place.clone(), &reference.repository, creds, config_path),
            place,
            retry,
            received: Arc::new(AtomicU64::new(0)),
        })
    }

    /// `REGISTRY/REPO`.
    pub fn place(&self) -> &str {
        &self.place
    }

    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The count of blob bytes received, shared with whoever wants figures.
    pub fn received(&self) -> &Arc<AtomicU64> {
        &self.received
    }

    /// Counts `n` blob bytes received.
    pub fn count(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    /// The URL of `path` under the repository (`/manifests/latest`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `location` (a `Location` header: a URL, or a path on the
    /// registry) as a URL.
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            return location.to_string();
        }
        let origin = self
            .base
            .find("/v2/")
            .map_or(&*self.base, |at| &self.base[..at]);
        if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            format!("{origin}/{location}")
        }
    }

    /// One GET, logging in as the registry asks; a successful response or
    /// a failure sorted for [`RetryPolicy::run`].
    pub fn attempt(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<Response<Body>, Failure> {
        self.attempt_with(Method::Get, url, headers, what)
    }

    /// [`Client::attempt`] of any method. A request that writes (POST,
    /// PUT) asks for a token with push rights when the registry's
    /// challenge names no scope.
    pub fn attempt_with(
        &self,
        method: Method<'_>,
        url: &str,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<Response<Body>, Failure> {
        let push = matches!(method, Method::Post(_) | Method::Put(_));
        let mut rounds = 0;
        loop {
            let sent = self.auth.header();
            let request = Request {
                method,
                url,
                query: &[],
                authorization: sent.as_deref(),
                headers,
            };
            let response = self.http.send(&request, &self.place, what)?;
            match response.status().as_u16() {
                401 if rounds < AUTH_ROUNDS => {
                    let challenge = transport::header(&response, "www-authenticate");
                    self.auth.answer(
                        &self.http,
                        &self.retry,
                        challenge,
                        sent.as_deref(),
                        what,
                        push,
                    )?;
                    rounds += 1;
                }
                401 => {
                    return Err(RegistryError::Unauthorized {
                        place: self.place.clone(),
                        what: what.to_string(),
                        creds: self.auth.describe(),
                    }
                    .into())
                }
                403 => {
                    return Err(RegistryError::Denied {
                        place: self.place.clone(),
                        what: what.to_string(),
                        creds: self.auth.describe(),
                    }
                    .into())
                }
                _ => {
                    transport::check_status(&response, &self.place, what)?;
                    return Ok(response);
                }
            }
        }
    }
}
