//! A layer blob in a registry, read by HTTP Range requests: a few spans
//! after the mount, or one stream for the indexing pass.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ureq::BodyReader;

use super::client::Client;
use super::retry::Failure;
use super::transport;
use super::RegistryError;
use crate::digest::Digest;
use crate::source::BlobFetch;

/// One blob of one repository. Cheap to clone: the client (and its
/// connection pool and login) is shared.
#[derive(Clone, Debug)]
pub struct RegistryBlob {
    client: Arc<Client>,
    /// `REGISTRY/REPO@DIGEST`.
    name: String,
    /// `blob DIGEST`, what request errors say was being fetched.
    what: String,
    url: String,
    size: u64,
    received: Arc<AtomicU64>,
}

impl RegistryBlob {
    /// The blob `digest` of `size` bytes in the client's repository.
    pub(crate) fn new(client: Arc<Client>, digest: &Digest, size: u64) -> RegistryBlob {
        RegistryBlob {
            name: format!("{}@{digest}", client.place()),
            what: format!("blob {digest}"),
            url: client.url(&format!("/blobs/{digest}")),
            client,
            size,
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes of this blob received so far, retries and all.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn count(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        self.client.count(n as u64);
    }

    /// Asks for bytes `start..end` (`end` > `start`) and checks that the
    /// answer is that range: a 206 with the matching `Content-Range`, or a
    /// 200 only if the range is the whole blob.
    fn open(&self, start: u64, end: u64) -> Result<BodyReader<'static>, Failure> {
        let range = format!("bytes={start}-{}", end - 1);
        let response = self
            .client
            .attempt(&self.url, &[("Range", &range)], &self.what)?;
        let bad = |reason: String| -> Failure {
            RegistryError::BadRange {
                name: self.name.clone(),
                reason,
            }
            .into()
        };
        let length = transport::header(&response, "content-length")
            .and_then(|l| l.trim().parse::<u64>().ok());
        match response.status().as_u16() {
            206 => {
                let content_range = transport::header(&response, "content-range").unwrap_or("");
                if !range_matches(content_range, start, end, self.size) {
                    return Err(bad(format!(
                        "asked for {range}, got Content-Range {content_range:?}"
                    )));
                }
            }
            200 if start == 0 && end == self.size => {}
            200 => {
                return Err(bad(
                    "the registry ignores Range requests (answered 200 with the whole blob)".into(),
                ))
            }
            status => {
                return Err(bad(format!(
                    "asked for {range}, the registry answered {status}"
                )))
            }
        }
        if length.is_some_and(|l| l != end - start) {
            return Err(bad(format!(
                "asked for {range}, got Content-Length {}",
                length.unwrap_or_default()
            )));
        }
        Ok(response.into_body().into_reader())
    }

    /// A failure reading the body: worth another request from where it
    /// broke.
    fn broken(&self, reason: String) -> Failure {
        Failure::transient(RegistryError::Transport {
            place: self.client.place().to_string(),
            what: self.what.clone(),
            reason,
        })
    }
}

/// Whether `Content-Range` is `bytes START-(END-1)/SIZE` (or `/*`).
fn range_matches(content_range: &str, start: u64, end: u64, size: u64) -> bool {
    let Some(rest) = content_range.trim().strip_prefix("bytes ") else {
        return false;
    };
    let Some((span, total)) = rest.split_once('/') else {
        return false;
    };
    let total_ok = total == "*" || total.parse::<u64>() == Ok(size);
    let span_ok = span
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        == Some((start, end - 1));
    total_ok && span_ok
}

impl BlobFetch for RegistryBlob {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn fetch(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: {} bytes at {offset} reach past the blob's end ({} bytes)",
                        self.name,
                        buf.len(),
                        self.size
                    ),
                )
            })?;
        let mut filled = 0;
        let result = self.client.retry().run(|| {
            let mut body = self.open(offset + filled as u64, end)?;
            while filled < buf.len() {
                match body.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        filled += n;
                        self.count(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let reason = transport::body_error(&e);
                        return Err(self.broken(format!("reading the body: {reason}")));
                    }
                }
            }
            if filled < buf.len() {
                return Err(Failure::transient(RegistryError::Truncated {
                    name: self.name.clone(),
                    got: filled as u64,
                    wanted: buf.len() as u64,
                }));
            }
            let mut extra = [0u8; 1];
            if matches!(body.read(&mut extra), Ok(n) if n > 0) {
                return Err(RegistryError::BadRange {
                    name: self.name.clone(),
                    reason: format!("sent more than the {} bytes asked for", buf.len()),
                }
                .into());
            }
            Ok(())
        });
        result.map_err(io::Error::other)
    }

    fn stream(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(BlobStream {
            blob: self.clone(),
            pos: offset,
            body: None,
            got: 0,
            failures: 0,
        }))
    }
}

/// The blob from an offset to its end. A body that breaks off is asked
/// for again from where it stopped; the retry budget bounds failures in a
/// row, so a long stream survives one hiccup per stretch of progress.
struct BlobStream {
    blob: RegistryBlob,
    pos: u64,
    body: Option<BodyReader<'static>>,
    /// Bytes the current body delivered.
    got: u64,
    failures: u32,
}

/// What a body must deliver before the failures before it are forgiven: a
/// stream is one request per deadline, and one that delivers a byte per
/// deadline would otherwise never run out of retries.
const PROGRESS: u64 = 1 << 20;

impl BlobStream {
    /// Waits before another try, or gives up with the failure.
    fn failed(&mut self, failure: Failure) -> io::Result<()> {
        self.body = None;
        let retry = self.blob.client.retry();
        if failure.transient && self.failures < retry.retries {
            let delay = retry.delay(self.failures, failure.retry_after);
            log::debug!("{}; resuming in {delay:?}", failure.error);
            std::thread::sleep(delay);
            self.failures += 1;
            Ok(())
        } else {
            Err(io::Error::other(failure.give_up(self.failures + 1)))
        }
    }
}

impl Read for BlobStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let size = self.blob.size;
        if out.is_empty() || self.pos >= size {
            return Ok(0);
        }
        let want = out
            .len()
            .min(usize::try_from(size - self.pos).unwrap_or(usize::MAX));
        loop {
            if self.body.is_none() {
                match self.blob.open(self.pos, size) {
                    Ok(body) => {
                        self.body = Some(body);
                        self.got = 0;
                    }
                    Err(failure) => {
                        self.failed(failure)?;
                        continue;
                    }
                }
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            match body.read(&mut out[..want]) {
                Ok(0) => {
                    let truncated = RegistryError::Truncated {
                        name: self.blob.name.clone(),
                        got: self.pos,
                        wanted: size,
                    };
                    self.failed(Failure::transient(truncated))?;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    self.got += n as u64;
                    if self.got >= PROGRESS.min(size) {
                        self.failures = 0;
                    }
                    self.blob.count(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let reason = transport::body_error(&e);
                    let broken = self
                        .blob
                        .broken(format!("reading the body at {}: {reason}", self.pos));
                    self.failed(broken)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_must_match_exactly() {
        assert!(range_matches("bytes 10-19/100", 10, 20, 100));
        assert!(range_matches("bytes 0-99/*", 0, 100, 100));
        assert!(!range_matches("bytes 10-19/101", 10, 20, 100));
        assert!(!range_matches("bytes 0-19/100", 10, 20, 100));
        assert!(!range_matches("bytes 10-20/100", 10, 20, 100));
        assert!(!range_matches("", 10, 20, 100));
        assert!(!range_matches("items 10-19/100", 10, 20, 100));
    }
}
