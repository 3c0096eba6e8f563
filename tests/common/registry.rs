//! A real registry on loopback for the registry tests: Debian's
//! `docker-registry` (the CNCF distribution registry 2.8), the server most
//! private registries run, so layerfs is tested against the protocol as
//! deployed rather than against our reading of the spec.
//!
//! Each `Registry` owns a temp dir with its config, its storage and its
//! log (stdout and stderr: the access log), listens on a free port of
//! 127.0.0.1 and is killed and reaped on drop, panics included. It can be
//! stopped and started again on the same port and storage, for tests of a
//! registry that goes away under a mount.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use super::http;
use super::mount::{run_captured, wait_for};
use super::needs::{self, Need};
use super::oci::{Layout, MANIFEST};

/// The registry binary; `.ci/run` installs its Debian package.
pub const BINARY: &str = "/usr/bin/docker-registry";

/// How long a starting registry may take to answer `GET /v2/`.
const READY_LIMIT: Duration = Duration::from_secs(30);

pub struct Registry {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

/// Ports tried for registries: below Linux's ephemeral range (32768 and
/// up), so no `bind(0)` (the proxy's) or outgoing connection of this or
/// another test takes one between our probe and the registry's bind, or
/// while a stopped registry waits for its restart.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// Attempts at starting a registry on a port someone else took meanwhile.
const START_ATTEMPTS: usize = 5;

/// A port of [`PORTS`] nobody listens on right now, spread by process and
/// call so parallel tests and test binaries rarely probe the same one.
fn free_port() -> u16 {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    loop {
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        let span = PORTS.end - PORTS.start;
        let port = (PORTS.start + seed.wrapping_add(n.wrapping_mul(104_729)) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Registry {
    /// Starts a registry with empty storage and waits until it answers.
    pub fn start() -> Registry {
        needs::declared(Need::Tool("docker-registry"));
        let dir = tempfile::Builder::new()
            .prefix("layerfs-registry")
            .tempdir()
            .expect("registry tempdir");
        let mut registry = Registry {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..START_ATTEMPTS {
            registry.port = free_port();
            registry.write_config();
            match registry.launch() {
                Ok(()) => return registry,
                Err(log) if log.contains("address already in use") => continue,
                Err(log) => panic!("{BINARY} did not come up; its log:\n{log}"),
            }
        }
        panic!("{BINARY} found no free port in {START_ATTEMPTS} attempts")
    }

    fn write_config(&self) {
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: layerfs-tests\n",
            storage = self.dir.path().join("storage").display(),
            port = self.port,
        );
        std::fs::write(self.dir.path().join("config.yml"), config).expect("write registry config");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Everything the registry logged (access log included), across
    /// restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the registry (as a crash or a pulled cable would) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry (again) on the same port and storage and waits
    /// until `GET /v2/` answers 200.
    pub fn restart(&mut self) {
        if let Err(log) = self.launch() {
            panic!(
                "{BINARY} did not come up on {}; its log:\n{log}",
                self.addr()
            );
        }
    }

    /// Starts the registry and waits until it answers; on failure, stops it
    /// and returns its log.
    fn launch(&mut self) -> Result<(), String> {
        self.stop();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open registry log");
        let err: File = log.try_clone().expect("clone registry log handle");
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BINARY}: {e}"));
        self.child = Some(child);
        let addr = self.addr();
        let ready = wait_for(READY_LIMIT, || {
            let up = http::get(&addr, "/v2/", &[]).is_ok_and(|r| r.status() == 200);
            up || !self.is_running()
        });
        if !ready || !self.is_running() {
            self.stop();
            return Err(self.log());
        }
        Ok(())
    }

    /// `ADDR/REPO:TAG` or `ADDR/REPO@DIGEST` for `name` (`REPO:TAG`,
    /// `REPO@DIGEST`) on this registry.
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.addr())
    }

    /// Copies `source` (a skopeo source such as `oci:LAYOUT:TAG`) to
    /// `REPO:TAG` here with `skopeo copy EXTRA...`; returns the digest of
    /// the manifest (or index) pushed.
    pub fn push(&self, source: &str, name: &str, extra: &[&str]) -> String {
        needs::declared(Need::Tool("skopeo"));
        let digest_file = self.dir.path().join("pushed.digest");
        let run = run_captured(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false", "--digestfile"])
                .arg(&digest_file)
                .args(extra)
                .arg(source)
                .arg(format!("docker://{}", self.reference(name))),
        );
        run.expect_success(&format!("skopeo copy {source} to {name}"));
        let digest = std::fs::read_to_string(&digest_file).expect("read skopeo --digestfile");
        digest.trim().to_string()
    }
}

impl Registry {
    /// Uploads image `tag` of the OCI layout `layout` as `REPO:TAG` with
    /// the distribution API itself (each blob in one PUT, then the
    /// manifest), byte for byte: skopeo recompresses plain layers on their
    /// way to a registry. Returns the manifest digest.
    pub fn upload(&self, layout: &Path, tag: &str, name: &str) -> String {
        let (repo, dest_tag) = name
            .split_once(':')
            .unwrap_or_else(|| panic!("{name} is not REPO:TAG"));
        let layout = Layout { dir: layout.into() };
        let manifest_digest = layout.tagged(tag);
        let manifest = layout.json_blob(&manifest_digest);
        let config = manifest["config"]["digest"]
            .as_str()
            .expect("config digest");
        let addr = self.addr();
        let mut blobs = vec![config.to_string()];
        blobs.extend(
            layout
                .layers(&manifest_digest)
                .into_iter()
                .map(|(_, d, _)| d),
        );
        for digest in blobs {
            let bytes = std::fs::read(layout.blob_path(&digest)).expect("read blob");
            let start = http::request(&addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[])
                .unwrap_or_else(|e| panic!("start an upload to {addr}: {e}"));
            assert_eq!(start.status(), 202, "start an upload: {start:?}");
            let location = start.head.header("location").expect("upload Location");
            let location = location
                .strip_prefix(&format!("http://{addr}"))
                .unwrap_or(location);
            let path = format!("{location}&digest={digest}");
            let headers = [("Content-Type", "application/octet-stream")];
            let done = http::request_with_body(&addr, "PUT", &path, &headers, Some(&bytes))
                .unwrap_or_else(|e| panic!("upload {digest} to {addr}: {e}"));
            assert_eq!(done.status(), 201, "upload {digest}: {done:?}");
        }
        let bytes = std::fs::read(layout.blob_path(&manifest_digest)).expect("read manifest");
        let path = format!("/v2/{repo}/manifests/{dest_tag}");
        let headers = [("Content-Type", MANIFEST)];
        let response = http::request_with_body(&addr, "PUT", &path, &headers, Some(&bytes))
            .unwrap_or_else(|e| panic!("put manifest {name} to {addr}: {e}"));
        assert_eq!(response.status(), 201, "put manifest {name}: {response:?}");
        manifest_digest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
