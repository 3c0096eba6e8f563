//! A counting, fault-injecting HTTP proxy between layerfs and the test
//! registry, in the test process.
//!
//! The registry's own access log says what it sent, not what reached the
//! client, and it cannot misbehave on demand; this proxy sees every byte
//! layerfs receives and can break each exchange the ways real registries
//! and networks do (a Range answered with the whole blob, a cut-off body,
//! 503/429, wrong bytes, a token it wants, a vanished server). Fault
//! switches are set while a mount runs, from the test thread.
//!
//! One request per client connection, answered with `Connection: close`,
//! and one upstream connection per request: the framing then never depends
//! on keep-alive bookkeeping, and a cut-off body is an unambiguous EOF.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::http::{self, Head};

/// The bearer token `/token` hands out and the proxy then accepts.
pub const TOKEN: &str = "layerfs-test-token";

/// The `service` the proxy's token challenge names.
pub const SERVICE: &str = "test";

/// What one request cost, as the client saw it.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: String,
    /// The path as the client asked for it (before any substitution).
    pub path: String,
    /// The client's Range header.
    pub range: Option<String>,
    /// The status sent to the client; 0 if the connection was reset
    /// without an answer.
    pub status: u16,
    /// Body bytes sent to the client, counted before each write, so a
    /// client that has received them sees them counted.
    pub body_bytes: u64,
}

impl Exchange {
    pub fn is_blob(&self) -> bool {
        blob_digest(&self.path).is_some()
    }

    pub fn is_manifest(&self) -> bool {
        self.path.contains("/manifests/")
    }
}

/// How an injected failure answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 503 Service Unavailable.
    Unavailable,
    /// 429 Too Many Requests with `Retry-After: 1`.
    TooManyRequests,
}

/// Which requests a failure applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Any,
    Blobs,
}

#[derive(Default)]
struct Faults {
    range_as_full: bool,
    /// Blob bodies cut after this many bytes, for this many responses.
    truncate: Option<(u64, usize)>,
    /// The next this-many requests in scope fail.
    failures: Option<(usize, Failure, Scope)>,
    /// Blob digest asked for -> blob digest served.
    substitute: HashMap<String, String>,
    /// Blob digest -> offset of a byte served inverted.
    corrupt: HashMap<String, u64>,
    /// `Some(creds)`: a bearer token is required; `/token` checks `creds`
    /// (user, password) when present.
    token: Option<Option<(String, String)>>,
    refuse: bool,
}

struct Shared {
    /// Our own `127.0.0.1:PORT`, for the token realm.
    addr: String,
    upstream: String,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Live>>,
    /// Connections reset unanswered by `refuse_all`.
    refused: AtomicUsize,
}

/// Mutex poisoning only means another harness thread panicked; the data
/// (switches and a log) stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The proxy; stops accepting on drop.
pub struct Proxy {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`
    /// (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let shared = Arc::new(Shared {
            addr,
            upstream: upstream.to_string(),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            refused: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || serve(conn, &shared));
                }
            })
        };
        Proxy {
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`: what a registry reference names to go through
    /// the proxy.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Every exchange so far, in the order their requests arrived; one
    /// still streaming shows the bytes sent so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.shared.log)
            .iter()
            .map(|live| lock(&live.0).clone())
            .collect()
    }

    /// Forgets the exchanges so far.
    pub fn clear(&self) {
        lock(&self.shared.log).clear();
    }

    /// The blob exchanges so far.
    pub fn blob_exchanges(&self) -> Vec<Exchange> {
        self.exchanges()
            .into_iter()
            .filter(|e| e.is_blob())
            .collect()
    }

    /// Body bytes of all blob responses so far.
    pub fn blob_bytes(&self) -> u64 {
        self.blob_exchanges().iter().map(|e| e.body_bytes).sum()
    }

    /// Ranged blob GETs get 200 and the whole blob.
    pub fn set_range_as_full(&self, on: bool) {
        lock(&self.shared.faults).range_as_full = on;
    }

    /// The next `times` blob bodies end after `after` bytes (the
    /// connection closes short of the declared length).
    pub fn truncate_blobs(&self, after: u64, times: usize) {
        lock(&self.shared.faults).truncate = (times > 0).then_some((after, times));
    }

    /// The next `times` requests in `scope` are answered with `failure`.
    pub fn fail_next(&self, times: usize, failure: Failure, scope: Scope) {
        lock(&self.shared.faults).failures = (times > 0).then_some((times, failure, scope));
    }

    /// Requests for blob `digest` are served blob `other` of the same
    /// repository instead (`sha256:…` both).
    pub fn substitute_blob(&self, digest: &str, other: &str) {
        lock(&self.shared.faults)
            .substitute
            .insert(digest.to_string(), other.to_string());
    }

    /// Blob `digest` is served with its byte at `offset` inverted, in
    /// whole and ranged responses alike.
    pub fn corrupt_blob(&self, digest: &str, offset: u64) {
        lock(&self.shared.faults)
            .corrupt
            .insert(digest.to_string(), offset);
    }

    /// Requires a bearer token on every `/v2/` request; `/token` hands one
    /// out, to anyone if `creds` is `None`, else only to Basic `user:pass`.
    pub fn require_token(&self, creds: Option<(&str, &str)>) {
        lock(&self.shared.faults).token = Some(creds.map(|(u, p)| (u.to_string(), p.to_string())));
    }

    /// Resets every new connection at once, as a host whose registry is
    /// gone does.
    pub fn refuse_all(&self, on: bool) {
        lock(&self.shared.faults).refuse = on;
    }

    /// Connections reset while `refuse_all` was on: proof that a client
    /// tried.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Turns every fault off.
    pub fn heal(&self) {
        *lock(&self.shared.faults) = Faults::default();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so it sees the flag.
        let _ = TcpStream::connect(&self.shared.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// `sha256:…` of a `/v2/REPO/blobs/DIGEST` path.
fn blob_digest(path: &str) -> Option<&str> {
    let (_, digest) = path.rsplit_once("/blobs/")?;
    (!digest.is_empty() && !digest.contains('/') && digest != "uploads").then_some(digest)
}

/// The repository a `/v2/REPO/{manifests,blobs,tags}/…` path names.
fn repository(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|sep| rest.find(sep))
        .min()
        .map(|end| &rest[..end])
}

/// Makes the socket's close a TCP reset rather than a FIN.
fn reset_on_close(conn: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// An exchange being served, updated as it goes, so that whatever a client
/// has received is already in the log when the test looks.
#[derive(Clone)]
struct Live(Arc<Mutex<Exchange>>);

impl Live {
    fn set_status(&self, status: u16) {
        lock(&self.0).status = status;
    }

    fn add_bytes(&self, n: u64) {
        lock(&self.0).body_bytes += n;
    }
}

/// Sends a small complete response of the proxy's own.
fn answer(
    conn: &mut TcpStream,
    live: &Live,
    status: u16,
    reason: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<()> {
    let mut head = Head {
        start: vec!["HTTP/1.1".into(), status.to_string(), reason.into()],
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
    };
    head.set_header("Content-Length", Some(&body.len().to_string()));
    head.set_header("Connection", Some("close"));
    live.set_status(status);
    live.add_bytes(body.len() as u64);
    conn.write_all(&head.to_bytes()).ok()?;
    conn.write_all(body).ok()
}

fn serve(mut conn: TcpStream, shared: &Shared) {
    if lock(&shared.faults).refuse {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        reset_on_close(&conn);
        return;
    }
    let _ = conn.set_read_timeout(Some(http::IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(http::IO_TIMEOUT));
    let Ok(reader) = conn.try_clone() else { return };
    let mut reader = BufReader::new(reader);
    let Ok(Some(request)) = http::read_head(&mut reader) else {
        return;
    };
    let live = Live(Arc::new(Mutex::new(Exchange {
        method: request.start.first().cloned().unwrap_or_default(),
        path: request.start.get(1).cloned().unwrap_or_default(),
        range: request.header("range").map(str::to_string),
        status: 0,
        body_bytes: 0,
    })));
    lock(&shared.log).push(live.clone());
    match handle(&mut conn, &mut reader, request, &live, shared) {
        Some(()) => {
            let _ = conn.shutdown(Shutdown::Both);
        }
        None => reset_on_close(&conn),
    }
}

/// Answers one request; `None` if the connection is to be reset: the
/// registry is unreachable, or the exchange broke before it was answered.
fn handle(
    conn: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    mut request: Head,
    live: &Live,
    shared: &Shared,
) -> Option<()> {
    let (method, path) = {
        let exchange = lock(&live.0);
        (exchange.method.clone(), exchange.path.clone())
    };
    // Request bodies (uploads) are forwarded whole; the harness pushes
    // straight to the registry, so they are small when they come here.
    let mut body = Vec::new();
    if let Some(len) = request.content_length() {
        reader.by_ref().take(len).read_to_end(&mut body).ok()?;
    }
    if request.header("transfer-encoding").is_some() {
        return answer(conn, live, 501, "Not Implemented", &[], b"chunked uploads");
    }
    let digest = blob_digest(&path).map(str::to_string);
    let token = lock(&shared.faults).token.clone();
    if let Some(creds) = &token {
        if path.split('?').next() == Some("/token") {
            return token_endpoint(conn, live, &request, creds.as_ref());
        }
        if request.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return challenge(conn, live, shared, &path);
        }
    }
    if let Some(failure) = take_failure(shared, digest.is_some()) {
        let (status, reason, headers) = match failure {
            Failure::Unavailable => (503, "Service Unavailable", vec![]),
            Failure::TooManyRequests => (
                429,
                "Too Many Requests",
                vec![("Retry-After", "1".to_string())],
            ),
        };
        return answer(conn, live, status, reason, &headers, b"injected failure");
    }

    let (upstream_path, truncate, corrupt) = {
        let mut faults = lock(&shared.faults);
        let mut upstream_path = path.clone();
        let (mut truncate, mut corrupt) = (None, None);
        if let Some(digest) = &digest {
            if faults.range_as_full && method == "GET" {
                request.set_header("Range", None);
            }
            if let Some(other) = faults.substitute.get(digest) {
                upstream_path = path.replace(digest.as_str(), other);
            }
            corrupt = faults.corrupt.get(digest).copied();
            // Only a body longer than the cut can be cut: a shorter one
            // (a one-byte probe) passes and does not use up a cut.
            let asked = request.header("range").and_then(range_len);
            if method == "GET" {
                if let Some((after, times)) = faults.truncate {
                    if asked.is_none_or(|len| len > after) {
                        truncate = Some(after);
                        faults.truncate = (times > 1).then_some((after, times - 1));
                    }
                }
            }
        }
        (upstream_path, truncate, corrupt)
    };

    // The registry gone, the client sees what it would see talking to it
    // directly: a connection that goes nowhere.
    let upstream = TcpStream::connect(&shared.upstream).ok()?;
    let _ = upstream.set_read_timeout(Some(http::IO_TIMEOUT));
    request.start[1] = upstream_path;
    request.set_header("Host", Some(&shared.upstream));
    request.set_header("Connection", Some("close"));
    request.set_header("Keep-Alive", None);
    request.set_header("Authorization", None);
    (&upstream).write_all(&request.to_bytes()).ok()?;
    (&upstream).write_all(&body).ok()?;

    let mut from = BufReader::new(upstream);
    let mut response = http::read_head(&mut from).ok()??;
    let status = response.status();
    response.set_header("Connection", Some("close"));
    response.set_header("Keep-Alive", None);
    live.set_status(status);
    conn.write_all(&response.to_bytes()).ok()?;

    let has_body = method != "HEAD" && status != 204 && status != 304;
    let mut limit = if has_body {
        response.content_length()
    } else {
        Some(0)
    };
    let is_body_of_blob = digest.is_some() && (status == 200 || status == 206);
    if is_body_of_blob {
        if let Some(after) = truncate {
            limit = Some(limit.map_or(after, |l| l.min(after)));
        }
    }
    let corrupt_at = corrupt
        .filter(|_| is_body_of_blob)
        .map(|at| (at, content_range_start(&response).unwrap_or(0)));
    stream_body(&mut from, conn, live, limit, corrupt_at);
    Some(())
}

/// Where a 206 body starts in the blob (`Content-Range: bytes A-B/N`).
/// The length a `Range: bytes=A-B` header asks for; `None` for an open
/// range or anything else.
fn range_len(range: &str) -> Option<u64> {
    let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
    let (start, end) = (start.parse::<u64>().ok()?, end.parse::<u64>().ok()?);
    Some(end.checked_sub(start)? + 1)
}

fn content_range_start(response: &Head) -> Option<u64> {
    let spec = response.header("content-range")?.strip_prefix("bytes ")?;
    spec.split('-').next()?.trim().parse().ok()
}

/// Copies up to `limit` body bytes (all until EOF if `None`) to the client,
/// inverting the byte at blob offset `corrupt.0` when the body (starting at
/// blob offset `corrupt.1`) covers it.
fn stream_body(
    from: &mut impl Read,
    to: &mut TcpStream,
    live: &Live,
    limit: Option<u64>,
    corrupt: Option<(u64, u64)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let want = match limit {
            Some(l) if sent >= l => break,
            Some(l) => buf.len().min((l - sent) as usize),
            None => buf.len(),
        };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((at, start)) = corrupt {
            let pos = start + sent;
            if (pos..pos + n as u64).contains(&at) {
                buf[(at - pos) as usize] ^= 0xff;
            }
        }
        live.add_bytes(n as u64);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
}

/// Takes one injected failure if one is pending for this request.
fn take_failure(shared: &Shared, is_blob: bool) -> Option<Failure> {
    let mut faults = lock(&shared.faults);
    let (times, failure, scope) = faults.failures?;
    if scope == Scope::Blobs && !is_blob {
        return None;
    }
    faults.failures = (times > 1).then_some((times - 1, failure, scope));
    Some(failure)
}

/// 401 with the bearer challenge a token-protected registry sends.
fn challenge(conn: &mut TcpStream, live: &Live, shared: &Shared, path: &str) -> Option<()> {
    let mut value = format!(
        "Bearer realm=\"http://{}/token\",service=\"{SERVICE}\"",
        shared.addr
    );
    if let Some(repo) = repository(path) {
        value.push_str(&format!(",scope=\"repository:{repo}:pull\""));
    }
    let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
    let headers = [
        ("WWW-Authenticate", value),
        ("Content-Type", "application/json".to_string()),
    ];
    answer(conn, live, 401, "Unauthorized", &headers, body)
}

/// The token server: a token for anyone, or for the right Basic
/// credentials when `creds` is set.
fn token_endpoint(
    conn: &mut TcpStream,
    live: &Live,
    request: &Head,
    creds: Option<&(String, String)>,
) -> Option<()> {
    let allowed = creds.is_none_or(|(user, pass)| {
        let want = format!(
            "Basic {}",
            http::base64(format!("{user}:{pass}").as_bytes())
        );
        request.header("authorization") == Some(want.as_str())
    });
    let (status, reason, body) = if allowed {
        let body = format!(r#"{{"token":"{TOKEN}","access_token":"{TOKEN}","expires_in":300}}"#);
        (200, "OK", body)
    } else {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        (401, "Unauthorized", body.to_string())
    };
    let headers = [("Content-Type", "application/json".to_string())];
    answer(conn, live, status, reason, &headers, body.as_bytes())
}
