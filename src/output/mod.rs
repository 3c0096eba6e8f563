//! Where a written layer goes (`export`, `create`, `diff`): compressed in
//! independent frames, hashed on the way, and put in place only when whole.
//!
//! - Compressed output is cut into independent gzip members or zstd frames
//!   of [`FRAME_BYTES`] each, so that a written layer mounts back with
//!   random access: a read decodes one frame, never the stream from its
//!   start. Every gzip and zstd reader reads such a stream as one.
//! - The sha256 of the tar (an OCI layer's `diff_id`) and of the bytes
//!   written (its blob digest) are computed while writing, with no second
//!   pass.
//! - A file target is opened as `tar -f` opens it ([`OutputFile`]): a new
//!   name or a regular file is written under a temporary name and renamed
//!   over it when complete; a device or FIFO is written into.

use std::fmt;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

mod file;
mod frames;
pub use crate::sys::die_of_sigpipe;
pub use file::OutputFile;
use frames::{FrameCodec, FramePool};

/// Uncompressed bytes per gzip member or zstd frame: a random read decodes
/// at most this much, and compression loses little to the frame cuts.
pub const FRAME_BYTES: usize = 1 << 20;
/// Default zstd level (zstd's own default).
const ZSTD_DEFAULT_LEVEL: i32 = 3;
/// Default gzip level (gzip's own default).
const GZIP_DEFAULT_LEVEL: u32 = 6;

/// What can go wrong writing a layer.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// `--compress` named something unknown.
    #[error("--compress {0}: expected none, gzip[:1-9] or zstd[:1-22]")]
    BadCompression(String),
    /// The target could not be created or written.
    #[error("{target}: {source}")]
    Io {
        /// The output file, or `stdout`.
        target: String,
        /// What the OS said.
        source: io::Error,
    },
    /// A tar would have gone to a terminal.
    #[error("refusing to write a tar to a terminal; use -o FILE or a pipe")]
    Terminal,
    /// `-o` named a symlink to nothing: writing through it would create a
    /// file wherever it points.
    #[error("{}: a symlink to {}, which does not exist; not writing through it", path.display(), points_to.display())]
    DanglingSymlink {
        /// The output as given.
        path: PathBuf,
        /// What the symlink holds.
        points_to: PathBuf,
    },
    /// `-o` named something that cannot hold a tar.
    #[error("{}: is {what}; -o takes a file name, a device or a FIFO", path.display())]
    NotAFile {
        /// The output as given.
        path: PathBuf,
        /// What it is: "a directory", "a socket".
        what: &'static str,
    },
}

impl OutputError {
    /// Whether the output's reader went away (EPIPE): the command should
    /// end as if killed by SIGPIPE, without a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, OutputError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// How the written tar is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// Independent gzip members, at this level (1-9).
    Gzip(u32),
    /// Independent zstd frames, at this level (1-22).
    Zstd(i32),
}

impl Compression {
    /// Parses `none`, `gzip`, `gzip:LEVEL`, `zstd` or `zstd:LEVEL`.
    pub fn parse(spec: &str) -> Result<Compression, OutputError> {
        let bad = || OutputError::BadCompression(spec.to_string());
        let (name, level) = match spec.split_once(':') {
            Some((name, level)) => (name, Some(level.parse::<i32>().map_err(|_| bad())?)),
            None => (spec, None),
        };
        match (name, level) {
            ("none", None) => Ok(Compression::None),
            ("gzip" | "gz", None) => Ok(Compression::Gzip(GZIP_DEFAULT_LEVEL)),
            ("gzip" | "gz", Some(l @ 1..=9)) => Ok(Compression::Gzip(l.unsigned_abs())),
            ("zstd" | "zst", None) => Ok(Compression::Zstd(ZSTD_DEFAULT_LEVEL)),
            ("zstd" | "zst", Some(l @ 1..=22)) => Ok(Compression::Zstd(l)),
            _ => Err(bad()),
        }
    }

    /// The compression a file name asks for: `.gz`/`.tgz` gzip, `.zst`
    /// zstd, anything else none.
    pub fn from_extension(path: &Path) -> Compression {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gz" | "tgz") => Compression::Gzip(GZIP_DEFAULT_LEVEL),
            Some("zst" | "tzst") => Compression::Zstd(ZSTD_DEFAULT_LEVEL),
            _ => Compression::None,
        }
    }
}

/// Where the layer goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Standard output (refused if it is a terminal).
    Stdout,
    /// A file, replaced only once the layer is complete.
    File(PathBuf),
}

impl Target {
    /// `-` is stdout; anything else a file.
    pub fn from_arg(arg: Option<&Path>) -> Target {
        match arg {
            None => Target::Stdout,
            Some(p) if p == Path::new("-") => Target::Stdout,
            Some(p) => Target::File(p.to_path_buf()),
        }
    }

    /// The compression to use: `chosen` if given, else what the file name
    /// says.
    pub fn compression(&self, chosen: Option<Compression>) -> Compression {
        match (chosen, self) {
            (Some(c), _) => c,
            (None, Target::File(path)) => Compression::from_extension(path),
            (None, Target::Stdout) => Compression::None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Stdout => f.write_str("stdout"),
            Target::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What was written, once it is complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// sha256 of the uncompressed tar: the OCI `diff_id` (unless skipped).
    pub diff_id: Option<Digest>,
    /// Bytes of uncompressed tar.
    pub tar_bytes: u64,
    /// sha256 of the bytes written: the OCI blob digest (unless skipped).
    pub blob: Option<Digest>,
    /// Bytes written.
    pub blob_bytes: u64,
}

/// A layer being written; write the tar into it, then [`LayerOutput::finish`].
pub struct LayerOutput {
    target: Target,
    sink: Sink,
    /// `None` for a plain tar.
    frames: Option<FramePool>,
    /// `None` once digests are skipped.
    tar_hash: Option<Sha256>,
    tar_bytes: u64,
    /// Uncompressed bytes waiting to become the next frame.
    pending: Vec<u8>,
}

impl fmt::Debug for LayerOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerOutput({})", self.target)
    }
}

/// The bytes' destination, hashing and counting what passes.
struct Sink {
    out: BufWriter<Destination>,
    hash: Option<Sha256>,
    bytes: u64,
}

enum Destination {
    Stdout(io::Stdout),
    File(OutputFile),
}

impl Write for Destination {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Destination::Stdout(out) => out.write(buf),
            Destination::File(file) => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Destination::Stdout(out) => out.flush(),
            Destination::File(file) => file.flush(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.out.write(bytes)?;
        let done = bytes.get(..n).unwrap_or_default();
        if let Some(hash) = &mut self.hash {
            hash.update(done);
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl LayerOutput {
    /// Opens the target. A regular file gets a temporary sibling now and is
    /// only replaced by [`LayerOutput::finish`] (see [`OutputFile`]).
    pub fn create(target: Target, compression: Compression) -> Result<LayerOutput, OutputError> {
        let destination = match &target {
            Target::Stdout => {
                let stdout = io::stdout();
                if stdout.is_terminal() {
                    return Err(OutputError::Terminal);
                }
                Destination::Stdout(stdout)
            }
            Target::File(path) => Destination::File(OutputFile::open(path)?),
        };
        let mut frames = match compression {
            Compression::None => None,
            Compression::Gzip(level) => Some(FramePool::new(FrameCodec::Gzip(level))),
            Compression::Zstd(level) => Some(FramePool::new(FrameCodec::Zstd(level))),
        };
        let pending = frames
            .as_mut()
            .map(FramePool::input_buffer)
            .unwrap_or_default();
        Ok(LayerOutput {
            target,
            sink: Sink {
                out: BufWriter::with_capacity(1 << 20, destination),
                hash: Some(Sha256::new()),
                bytes: 0,
            },
            frames,
            tar_hash: Some(Sha256::new()),
            tar_bytes: 0,
            pending,
        })
    }

    /// Computes no digests: sha256 costs more than everything else an
    /// export does, and nobody asked for them.
    pub fn skip_digests(&mut self) {
        self.tar_hash = None;
        self.sink.hash = None;
    }

    /// Where the layer is going.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Ends the last frame, flushes, and puts a file target in place.
    pub fn finish(mut self) -> Result<Written, OutputError> {
        let result = self
            .flush_frame()
            .and_then(|()| match &mut self.frames {
                Some(frames) => frames.drain(&mut self.sink),
                None => Ok(()),
            })
            .and_then(|()| self.sink.out.flush());
        let io_error = |source| OutputError::Io {
            target: self.target.to_string(),
            source,
        };
        result.map_err(io_error)?;
        let written = Written {
            diff_id: self
                .tar_hash
                .map(|h| Digest::from_sha256(h.finalize().into())),
            tar_bytes: self.tar_bytes,
            blob: self
                .sink
                .hash
                .map(|h| Digest::from_sha256(h.finalize().into())),
            blob_bytes: self.sink.bytes,
        };
        let destination = self
            .sink
            .out
            .into_inner()
            .map_err(|e| io_error(e.into_error()))?;
        if let Destination::File(file) = destination {
            file.commit()?;
        }
        Ok(written)
    }

    /// Hands what is pending to the compressors as one frame.
    fn flush_frame(&mut self) -> io::Result<()> {
        let Some(frames) = &mut self.frames else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let next = frames.input_buffer();
        let full = std::mem::replace(&mut self.pending, next);
        frames.submit(full, &mut self.sink)
    }
}

impl Write for LayerOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(hash) = &mut self.tar_hash {
            hash.update(buf);
        }
        self.tar_bytes += buf.len() as u64;
        if self.frames.is_none() {
            self.sink.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let room = FRAME_BYTES - self.pending.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.pending.extend_from_slice(now);
            rest = later;
            if self.pending.len() == FRAME_BYTES {
                self.flush_frame()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn write_layer(dir: &Path, name: &str, compression: Compression, data: &[u8]) -> Written {
        let path = dir.join(name);
        let mut out = LayerOutput::create(Target::File(path), compression).expect("create");
        out.write_all(data).expect("write");
        out.finish().expect("finish")
    }

    fn sample() -> Vec<u8> {
        (0..3 * FRAME_BYTES + 1234)
            .map(|i| (i * 7 / 13 % 251) as u8)
            .collect()
    }

    #[test]
    fn compressed_output_is_cut_into_independent_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = sample();
        let gz = write_layer(dir.path(), "l.tar.gz", Compression::Gzip(1), &data);
        let bytes = std::fs::read(dir.path().join("l.tar.gz")).expect("read");
        let members = bytes
            .windows(4)
            .filter(|w| w == b"\x1f\x8b\x08\x00")
            .count();
        assert!(members >= 4, "{members} gzip members");
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert!(back == data);
        assert_eq!(gz.tar_bytes, data.len() as u64);
        assert_eq!(gz.blob_bytes, bytes.len() as u64);
        let digest = |bytes: &[u8]| Some(Digest::sha256(bytes));
        assert_eq!(gz.blob, digest(&bytes));
        assert_eq!(gz.diff_id, digest(&data));

        write_layer(dir.path(), "l.tar.zst", Compression::Zstd(1), &data);
        let bytes = std::fs::read(dir.path().join("l.tar.zst")).expect("read");
        let frames = bytes
            .windows(4)
            .filter(|w| w == b"\x28\xb5\x2f\xfd")
            .count();
        assert!(frames >= 4, "{frames} zstd frames");
        assert!(zstd::decode_all(&bytes[..]).expect("unzstd") == data);
    }

    #[test]
    fn a_plain_layer_has_one_digest_for_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_layer(dir.path(), "l.tar", Compression::None, b"abc");
        assert_eq!(written.diff_id, written.blob);
        assert_eq!(
            written.diff_id.map(|d| d.to_string()).unwrap_or_default(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn an_unfinished_layer_leaves_the_target_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l.tar");
        std::fs::write(&path, b"old").expect("write");
        let mut out =
            LayerOutput::create(Target::File(path.clone()), Compression::None).expect("create");
        out.write_all(b"new").expect("write");
        drop(out);
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "the temporary file is gone");
    }

    #[test]
    fn compression_specs_and_extensions() {
        assert_eq!(
            Compression::parse("zstd:19").ok(),
            Some(Compression::Zstd(19))
        );
        assert_eq!(Compression::parse("gzip").ok(), Some(Compression::Gzip(6)));
        assert_eq!(Compression::parse("none").ok(), Some(Compression::None));
        for bad in ["gzip:0", "zstd:23", "lzma", "zstd:x", ""] {
            assert!(Compression::parse(bad).is_err(), "{bad}");
        }
        let target = Target::from_arg(Some(Path::new("x.tar.zst")));
        assert_eq!(target.compression(None), Compression::Zstd(3));
        assert_eq!(
            target.compression(Some(Compression::None)),
            Compression::None
        );
        assert_eq!(Target::from_arg(Some(Path::new("-"))), Target::Stdout);
    }
}
