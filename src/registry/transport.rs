//! HTTP for registries: one pooled agent with the timeouts a registry
//! client wants (a deadline for the whole of each request, body included,
//! besides those for connecting and for each read), and every transport failure and status code sorted into
//! final or worth retrying.

use std::io::Read;
use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use super::retry::Failure;
use super::RegistryError;

/// How long a TCP (and TLS) connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one read may wait for bytes, headers or body.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects followed (registries send blobs to storage, one hop).
const MAX_REDIRECTS: u32 = 5;

/// The shared HTTP agent: its connection pool serves every request of an
/// image, from every thread.
#[derive(Debug)]
pub(crate) struct Http {
    agent: ureq::Agent,
}

impl Http {
    /// An agent whose every request, redirects and body included, must
    /// be over within `deadline`.
    pub fn new(deadline: Duration) -> Http {
        let config = ureq::Agent::config_builder()
            // Statuses are sorted here, with the registry's headers at hand.
            .http_status_as_error(false)
            .timeout_global(Some(deadline))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .max_redirects(MAX_REDIRECTS)
            // Storage a blob is redirected to gets no registry login.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("layerfs/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// One GET. Failures to get any answer are sorted into transient or
    /// final; the status is the caller's to judge.
    pub fn get(
        &self,
        url: &str,
        query: &[(&str, &str)],
        authorization: Option<&str>,
        headers: &[(&str, &str)],
        place: &str,
        what: &str,
    ) -> Result<Response<Body>, Failure> {
        let request = Request {
            method: Method::Get,
            url,
            query,
            authorization,
            headers,
        };
        self.send(&request, place, what)
    }

    /// One request of any method, sorted as [`Http::get`] sorts a GET.
    pub fn send(
        &self,
        request: &Request<'_>,
        place: &str,
        what: &str,
    ) -> Result<Response<Body>, Failure> {
        let mut extra: Vec<(&str, &str)> = Vec::with_capacity(request.headers.len() + 1);
        extra.extend(request.authorization.map(|a| ("Authorization", a)));
        extra.extend_from_slice(request.headers);
        macro_rules! prepared {
            ($builder:expr) => {{
                let mut builder = $builder;
                for (key, value) in request.query {
                    builder = builder.query(*key, *value);
                }
                for (key, value) in &extra {
                    builder = builder.header(*key, *value);
                }
                builder
            }};
        }
        let sent = match request.method {
            Method::Get => prepared!(self.agent.get(request.url)).call(),
            Method::Head => prepared!(self.agent.head(request.url)).call(),
            Method::Post(body) => prepared!(self.agent.post(request.url)).send(body),
            Method::Put(body) => prepared!(self.agent.put(request.url)).send(body),
        };
        sent.map_err(|e| classify(e, place, what))
    }
}

/// An HTTP method, with the body of those that carry one.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Method<'a> {
    Get,
    Head,
    Post(&'a [u8]),
    Put(&'a [u8]),
}

/// One request to send with [`Http::send`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    pub method: Method<'a>,
    pub url: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    /// The `Authorization` value, if any.
    pub authorization: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
}

/// Sorts a transport error: no connection at all is `Unreachable`;
/// refused or dropped connections and timeouts may pass, a name that does
/// not resolve or a certificate that does not verify will not.
fn classify(error: ureq::Error, place: &str, what: &str) -> Failure {
    use std::io::ErrorKind;
    let unreachable = |reason: String| RegistryError::Unreachable {
        place: place.to_string(),
        what: what.to_string(),
        reason,
    };
    let transport = |reason: String| RegistryError::Transport {
        place: place.to_string(),
        what: what.to_string(),
        reason,
    };
    match error {
        ureq::Error::HostNotFound => unreachable("host name not found".into()).into(),
        ureq::Error::ConnectionFailed => {
            Failure::transient(unreachable("could not connect".into()))
        }
        ureq::Error::Io(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            ) =>
        {
            Failure::transient(unreachable(e.to_string()))
        }
        ureq::Error::Io(e) => Failure::transient(transport(e.to_string())),
        ureq::Error::Timeout(ureq::Timeout::Global) => {
            Failure::transient(transport(PASSED_DEADLINE.into()))
        }
        ureq::Error::Timeout(t) => Failure::transient(transport(format!("timed out ({t})"))),
        ureq::Error::BodyStalled => Failure::transient(transport("the body stalled".into())),
        e @ (ureq::Error::Tls(_) | ureq::Error::Rustls(_)) => {
            unreachable(format!("TLS: {e}")).into()
        }
        e => transport(e.to_string()).into(),
    }
}

/// What a request that passed its deadline failed with: ureq's own
/// "timeout: global" says neither which deadline nor how to change it.
const PASSED_DEADLINE: &str =
    "no complete answer within the deadline of one request (LAYERFS_HTTP_DEADLINE_SECS)";

/// What to say of a body that could not be read to its end.
pub(crate) fn body_error(error: &std::io::Error) -> String {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<ureq::Error>());
    if matches!(inner, Some(ureq::Error::Timeout(ureq::Timeout::Global))) {
        PASSED_DEADLINE.to_string()
    } else {
        error.to_string()
    }
}

/// Sorts a status other than 401 and 403 (which need the login's story):
/// success passes, 404 is final, 408, 429 and 5xx gateway trouble are
/// transient (with the server's `Retry-After`), the rest are final.
pub(crate) fn check_status(
    response: &Response<Body>,
    place: &str,
    what: &str,
) -> Result<(), Failure> {
    let status = response.status().as_u16();
    let error = || RegistryError::Status {
        place: place.to_string(),
        what: what.to_string(),
        status,
    };
    match status {
        200..=299 => Ok(()),
        404 => Err(RegistryError::NotFound {
            place: place.to_string(),
            what: what.to_string(),
        }
        .into()),
        408 | 429 | 500 | 502 | 503 | 504 => Err(Failure {
            error: error(),
            transient: true,
            retry_after: retry_after(response),
        }),
        _ => Err(error().into()),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is left to backoff).
fn retry_after(response: &Response<Body>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// A header's value as text, if present and ASCII.
pub(crate) fn header<'r>(response: &'r Response<Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name)?.to_str().ok()
}

/// Reads a whole small body (a manifest, a token), refusing one larger
/// than `limit`. A body that breaks off is transient.
pub(crate) fn read_small(
    response: &mut Response<Body>,
    limit: u64,
    place: &str,
    what: &str,
) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            Failure::transient(RegistryError::Transport {
                place: place.to_string(),
                what: what.to_string(),
                reason: format!("reading the body: {}", body_error(&e)),
            })
        })?;
    if body.len() as u64 > limit {
        return Err(RegistryError::TooLarge {
            place: place.to_string(),
            what: what.to_string(),
            limit,
        }
        .into());
    }
    Ok(body)
}
