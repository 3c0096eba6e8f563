//! The little HTTP/1.1 the registry harness needs, on std::net alone: the
//! head of a request or response (start line and headers) read off a
//! stream, and a one-shot client for probing the registry and the proxy.
//! Bodies are the caller's business: the proxy streams them, so nothing
//! here buffers one unless asked to (`get`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Longest head accepted: registries and clients send a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;

/// How long a harness socket waits for its peer before giving up, so a
/// wedged peer fails a test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A request or response head: the start line split on spaces, then the
/// headers in their order.
#[derive(Clone, Debug, Default)]
pub struct Head {
    pub start: Vec<String>,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces every `name` header by one with `value` (or none).
    pub fn set_header(&mut self, name: &str, value: Option<&str>) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            self.headers.push((name.to_string(), value.to_string()));
        }
    }

    /// The declared body length, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// A response's status code (0 if the start line has none).
    pub fn status(&self) -> u16 {
        self.start.get(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The head as sent on the wire, blank line included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.start.join(" ");
        out.push_str("\r\n");
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Reads one head off `reader`; `Ok(None)` at a clean end of stream before
/// any byte of it.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut head = Head::default();
    let mut total = 0;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        total += n;
        if n == 0 {
            if head.start.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside an HTTP head",
            ));
        }
        if total > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP head longer than 64 KiB",
            ));
        }
        let text = line.trim_end_matches(['\r', '\n']);
        if head.start.is_empty() {
            if text.is_empty() {
                continue;
            }
            head.start = text.splitn(3, ' ').map(str::to_string).collect();
        } else if text.is_empty() {
            return Ok(Some(head));
        } else if let Some((name, value)) = text.split_once(':') {
            head.headers
                .push((name.trim().to_string(), value.trim().to_string()));
        }
    }
}

/// A whole response of the one-shot client.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status()
    }
}

/// Sends `METHOD path` with `headers` to `addr` (`host:port`) on a fresh
/// connection and reads the whole response (`Connection: close`).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    request_with_body(addr, method, path, headers, None)
}

/// [`request`] with a request body.
pub fn request_with_body(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Head {
        start: vec![method.into(), path.into(), "HTTP/1.1".into()],
        headers: vec![
            ("Host".into(), addr.into()),
            ("Connection".into(), "close".into()),
        ],
    };
    for (name, value) in headers {
        head.set_header(name, Some(value));
    }
    if let Some(body) = body {
        head.set_header("Content-Length", Some(&body.len().to_string()));
    }
    (&stream).write_all(&head.to_bytes())?;
    (&stream).write_all(body.unwrap_or_default())?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{addr} closed the connection without answering {method} {path}"),
        )
    })?;
    let mut body = Vec::new();
    if method != "HEAD" {
        match head.content_length() {
            Some(len) => {
                reader.by_ref().take(len).read_to_end(&mut body)?;
            }
            None => {
                reader.read_to_end(&mut body)?;
            }
        }
    }
    Ok(Response { head, body })
}

/// `GET path` with `headers`.
pub fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    request(addr, "GET", path, headers)
}

/// Standard base64 (with padding), for Basic credentials.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
