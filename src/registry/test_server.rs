//! A fake registry on loopback for the client's tests: enough HTTP/1.1 to
//! serve manifests and blobs, log in by token or basic auth, and misbehave
//! on request (ignore Range, cut a body short, be busy, throttle, drip).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::creds::Credentials;

/// What the registry demands before it serves `/v2/`.
#[derive(Clone, Debug, Default)]
pub(crate) enum Login {
    /// Nothing.
    #[default]
    Anonymous,
    /// A token from `/token`, which wants this basic login if given.
    Bearer(Option<(String, String)>),
    /// This basic login.
    Basic(String, String),
}

/// Misbehaviour, each counted down as it happens.
#[derive(Clone, Debug, Default)]
pub(crate) struct Faults {
    /// Blob requests answered 200 with the whole blob, whatever the Range.
    pub ignore_range: bool,
    /// Blob bodies cut off halfway (with the full Content-Length sent).
    pub truncate: u32,
    /// Requests answered 503.
    pub unavailable: u32,
    /// Requests answered 429 with `Retry-After: 1`.
    pub throttle: u32,
    /// Blob requests redirected to `localhost` (another host name).
    pub redirect_blobs: bool,
    /// Manifests served with a `Docker-Content-Digest` of other bytes.
    pub false_digest: bool,
    /// Manifests served with a `Docker-Content-Digest` that is no digest
    /// (their own, in uppercase).
    pub malformed_digest: bool,
    /// Every body sent one byte per this interval, until the client
    /// hangs up: a server that is never quite silent.
    pub drip: Option<Duration>,
    /// Bearer challenges name no scope: the client must know which to
    /// ask for.
    pub no_scope: bool,
}

/// One request the registry saw.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// `GET`, `HEAD`, `POST` or `PUT`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names in lowercase.
    pub headers: HashMap<String, String>,
    /// The request body (of its `Content-Length`).
    pub body: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// By tag and by digest: media type and body.
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    /// The referrers API's answers by subject digest; with none, the API
    /// is unknown here (404), as on the distribution registry 2.8.
    referrers: HashMap<String, Vec<u8>>,
    login: Login,
    faults: Faults,
    /// Tokens issued, with the scope each was asked for.
    tokens: Vec<(String, String)>,
    issued: u32,
    seen: Vec<Seen>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    addr: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake registry; dropping it stops it and joins its threads.
pub(crate) struct TestRegistry {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

/// The `sha256:` digest of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> String {
    crate::digest::Digest::sha256(bytes).to_string()
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            addr,
        });
        let threads = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let shared = Arc::clone(&shared);
            let threads = Arc::clone(&threads);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&shared);
                    let worker = std::thread::spawn(move || serve(&shared, stream));
                    threads.lock().expect("threads").push(worker);
                }
            })
        };
        TestRegistry {
            shared,
            threads,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.shared.addr.to_string()
    }

    /// Stores a blob; returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> String {
        let digest = digest(bytes);
        self.shared
            .lock()
            .blobs
            .insert(digest.clone(), bytes.to_vec());
        digest
    }

    /// Stores a manifest under its digest and `tag`; returns the digest.
    pub fn put_manifest(&self, tag: Option<&str>, media_type: &str, body: &[u8]) -> String {
        let digest = digest(body);
        let mut state = self.shared.lock();
        let entry = (media_type.to_string(), body.to_vec());
        if let Some(tag) = tag {
            state.manifests.insert(tag.to_string(), entry.clone());
        }
        state.manifests.insert(digest.clone(), entry);
        digest
    }

    /// Serves `body` where `key` (a tag or digest) is asked for, whatever
    /// its digest: a registry serving the wrong bytes.
    pub fn put_manifest_as(&self, key: &str, media_type: &str, body: &[u8]) {
        self.shared
            .lock()
            .manifests
            .insert(key.to_string(), (media_type.to_string(), body.to_vec()));
    }

    /// Answers `GET /v2/REPO/referrers/SUBJECT` with `listing` (an image
    /// index), whatever the query: a registry with the referrers API.
    pub fn put_referrers(&self, subject: &str, listing: &[u8]) {
        self.shared
            .lock()
            .referrers
            .insert(subject.to_string(), listing.to_vec());
    }

    pub fn set_login(&self, login: Login) {
        self.shared.lock().login = login;
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Forgets every token issued, as if they had expired.
    pub fn expire_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> u32 {
        self.shared.lock().issued
    }

    /// Requests seen so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// Requests seen whose path contains `part`.
    pub fn count(&self, part: &str) -> usize {
        self.seen().iter().filter(|s| s.path.contains(part)).count()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.shared.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let workers = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

/// A response about to be written.
struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Bytes of `body` actually sent (a truncated body sends fewer).
    send: usize,
}

impl Reply {
    fn new(status: &'static str, body: Vec<u8>) -> Reply {
        let send = body.len();
        Reply {
            status,
            headers: Vec::new(),
            body,
            send,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn error(status: &'static str, code: &str) -> Reply {
        let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{code}"}}]}}"#);
        Reply::new(status, body.into_bytes()).header("Content-Type", "application/json")
    }
}

/// Serves one connection: one request, one response, then close.
fn serve(shared: &Shared, stream: TcpStream) {
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let method = line.split_whitespace().next().unwrap_or("").to_string();
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = header.split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                }
            }
        }
    }
    let length = headers
        .get("content-length")
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    if (&mut reader).take(length).read_to_end(&mut body).is_err() {
        return;
    }
    let seen = Seen {
        method,
        path,
        headers,
        body,
    };
    let reply = respond(shared, &seen);
    let drip = {
        let mut state = shared.lock();
        state.seen.push(seen);
        state.faults.drip
    };
    let mut head = format!("HTTP/1.1 {}\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let _ = writer.write_all(head.as_bytes());
    let body = &reply.body[..reply.send];
    match drip {
        None => {
            let _ = writer.write_all(body);
        }
        Some(interval) => {
            for byte in body.chunks(1) {
                let hung_up = writer
                    .write_all(byte)
                    .and_then(|()| writer.flush())
                    .is_err();
                if hung_up || shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(interval);
            }
        }
    }
    let _ = writer.flush();
}

/// What the registry answers to one request.
fn respond(shared: &Shared, seen: &Seen) -> Reply {
    let mut state = shared.lock();
    if state.faults.unavailable > 0 {
        state.faults.unavailable -= 1;
        return Reply::error("503 Service Unavailable", "UNAVAILABLE");
    }
    if state.faults.throttle > 0 {
        state.faults.throttle -= 1;
        return Reply::error("429 Too Many Requests", "TOOMANYREQUESTS").header("Retry-After", "1");
    }
    let path = seen.path.as_str();
    if path.starts_with("/token") {
        return token(&mut state, seen);
    }
    if let Some(digest) = path.strip_prefix("/storage/") {
        return blob(&mut state, digest, seen);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Reply::error("404 Not Found", "NOT_FOUND");
    };
    if let Some(refused) = check_login(&state, shared.addr, rest, seen) {
        return refused;
    }
    if seen.method != "GET" {
        return write(&mut state, rest, seen);
    }
    if let Some((_, reference)) = rest.rsplit_once("/manifests/") {
        return match state.manifests.get(reference) {
            Some((media_type, body)) => {
                let claimed = digest(if state.faults.false_digest { b"" } else { body });
                let claimed = match state.faults.malformed_digest {
                    true => claimed.to_uppercase().replacen("SHA256", "sha256", 1),
                    false => claimed,
                };
                Reply::new("200 OK", body.clone())
                    .header("Content-Type", media_type.clone())
                    .header("Docker-Content-Digest", claimed)
            }
            None => Reply::error("404 Not Found", "MANIFEST_UNKNOWN"),
        };
    }
    if let Some((_, subject)) = rest.rsplit_once("/referrers/") {
        let subject = subject.split('?').next().unwrap_or(subject);
        return match state.referrers.get(subject) {
            Some(body) => Reply::new("200 OK", body.clone())
                .header("Content-Type", "application/vnd.oci.image.index.v1+json"),
            None => Reply::error("404 Not Found", "NAME_UNKNOWN"),
        };
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        if state.faults.redirect_blobs {
            let location = format!("http://localhost:{}/storage/{digest}", shared.addr.port());
            return Reply::new("307 Temporary Redirect", Vec::new()).header("Location", location);
        }
        let digest = digest.to_string();
        return blob(&mut state, &digest, seen);
    }
    Reply::error("404 Not Found", "NAME_UNKNOWN")
}

/// `HEAD` of a blob, and the writes of a push: `POST` starts an upload,
/// `PUT` ends it with the whole blob, or stores a manifest.
fn write(state: &mut State, rest: &str, seen: &Seen) -> Reply {
    let blob_digest = rest.rsplit_once("/blobs/").map(|(_, d)| d);
    match (seen.method.as_str(), blob_digest) {
        ("HEAD", Some(digest)) if state.blobs.contains_key(digest) => {
            Reply::new("200 OK", Vec::new())
        }
        ("HEAD", _) => Reply::new("404 Not Found", Vec::new()),
        ("POST", Some(uploads)) if uploads.starts_with("uploads") => {
            let repository = rest.split("/blobs/").next().unwrap_or(rest);
            Reply::new("202 Accepted", Vec::new()).header(
                "Location",
                format!("/v2/{repository}/blobs/uploads/1?_state=x"),
            )
        }
        ("PUT", Some(upload)) => match upload.split_once("digest=") {
            Some((_, wanted)) if wanted.replace("%3A", ":") == digest(&seen.body) => {
                state.blobs.insert(digest(&seen.body), seen.body.clone());
                Reply::new("201 Created", Vec::new())
            }
            _ => Reply::error("400 Bad Request", "DIGEST_INVALID"),
        },
        ("PUT", None) => match rest.rsplit_once("/manifests/") {
            Some((_, reference)) => {
                let media_type = seen
                    .headers
                    .get("content-type")
                    .cloned()
                    .unwrap_or_default();
                let entry = (media_type, seen.body.clone());
                state.manifests.insert(reference.to_string(), entry.clone());
                state.manifests.insert(digest(&seen.body), entry);
                Reply::new("201 Created", Vec::new())
            }
            None => Reply::error("404 Not Found", "NAME_UNKNOWN"),
        },
        _ => Reply::error("405 Method Not Allowed", "UNSUPPORTED"),
    }
}

/// A 401 with the challenge the login wants, unless the request has it.
fn check_login(state: &State, addr: SocketAddr, rest: &str, seen: &Seen) -> Option<Reply> {
    let sent = seen.headers.get("authorization");
    let repository = rest
        .rsplit_once("/manifests/")
        .or_else(|| rest.rsplit_once("/blobs/"))
        .map_or(rest, |(repo, _)| repo);
    let challenge = match &state.login {
        Login::Anonymous => return None,
        Login::Bearer(_) => {
            // Writing takes a token with push rights.
            let push = seen.method == "POST" || seen.method == "PUT";
            let actions = if push { "pull,push" } else { "pull" };
            let valid = sent
                .and_then(|s| s.strip_prefix("Bearer "))
                .is_some_and(|t| {
                    state
                        .tokens
                        .iter()
                        .any(|(k, scope)| k == t && (!push || scope.ends_with(":pull,push")))
                });
            if valid {
                return None;
            }
            let mut challenge =
                format!(r#"Bearer realm="http://{addr}/token",service="test-registry""#);
            if !state.faults.no_scope {
                challenge.push_str(&format!(r#",scope="repository:{repository}:{actions}""#));
            }
            challenge
        }
        Login::Basic(user, password) => {
            if sent == Some(&basic(user, password)) {
                return None;
            }
            r#"Basic realm="test-registry""#.to_string()
        }
    };
    Some(Reply::error("401 Unauthorized", "UNAUTHORIZED").header("WWW-Authenticate", challenge))
}

/// The token endpoint: checks the basic login if one is wanted, then
/// issues a new token (as `token` and `access_token` in turn).
fn token(state: &mut State, seen: &Seen) -> Reply {
    if let Login::Bearer(Some((user, password))) = &state.login {
        if seen.headers.get("authorization") != Some(&basic(user, password)) {
            return Reply::error("401 Unauthorized", "UNAUTHORIZED");
        }
    }
    state.issued += 1;
    let token = format!("token-{}", state.issued);
    let scope = seen
        .path
        .split_once("scope=")
        .map(|(_, rest)| rest.split('&').next().unwrap_or(rest))
        .unwrap_or_default()
        .replace("%3A", ":")
        .replace("%2C", ",");
    state.tokens.push((token.clone(), scope));
    let field = if state.issued % 2 == 1 {
        "token"
    } else {
        "access_token"
    };
    Reply::new("200 OK", format!(r#"{{"{field}":"{token}"}}"#).into_bytes())
        .header("Content-Type", "application/json")
}

/// A blob, whole or the range asked for.
fn blob(state: &mut State, digest: &str, seen: &Seen) -> Reply {
    let Some(bytes) = state.blobs.get(digest).cloned() else {
        return Reply::error("404 Not Found", "BLOB_UNKNOWN");
    };
    let size = bytes.len();
    let range = seen
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let start: usize = a.parse().ok()?;
            let end: usize = if b.is_empty() {
                size - 1
            } else {
                b.parse().ok()?
            };
            Some((start, end.min(size - 1)))
        });
    let mut reply = match range {
        Some((start, end)) if !state.faults.ignore_range && start <= end => {
            Reply::new("206 Partial Content", bytes[start..=end].to_vec())
                .header("Content-Range", format!("bytes {start}-{end}/{size}"))
        }
        _ => Reply::new("200 OK", bytes),
    };
    if state.faults.truncate > 0 {
        state.faults.truncate -= 1;
        reply.send = reply.body.len() / 2;
    }
    reply
}

/// The `Authorization` value of a basic login, as the client sends it.
fn basic(user: &str, password: &str) -> String {
    Credentials {
        user: user.to_string(),
        password: password.to_string(),
        origin: String::new(),
    }
    .basic()
}
