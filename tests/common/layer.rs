//! Layer fixtures: a small declarative builder that emits tar bytes in the
//! dialect a test asks for, plus the codecs layerfs must recognise.
//!
//! Names and link targets are written into the header fields byte for byte
//! (the `tar` crate's `set_path` would normalise `./`, drop trailing slashes
//! and refuse non-UTF-8 on some platforms), because several tests exist
//! precisely to feed such raw names to layerfs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

/// mtime given to every member unless a test overrides it.
pub const DEFAULT_MTIME: u64 = 1_600_000_000;

/// Header dialect used to encode a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Old GNU headers; long names/targets via `././@LongLink` (`L`/`K`).
    Gnu,
    /// POSIX ustar; long names split into prefix + name, no long targets.
    Ustar,
    /// ustar headers plus a PAX `x` record for anything that does not fit.
    Pax,
}

/// What a member is. Bodies mirror tar typeflags.
#[derive(Clone, Debug)]
pub enum Body {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// A PAX global header (`g`) carrying these records.
    GlobalHeader(Vec<(String, Vec<u8>)>),
}

/// Adjusts the final header just before its checksum is computed; used by
/// tests that need deliberately inconsistent fields (e.g. a decoy name that
/// a PAX `path` record must override).
pub type Tweak = fn(&mut Header);

/// One tar member with all the metadata a test may want to control.
#[derive(Clone, Debug)]
pub struct Member {
    pub path: Vec<u8>,
    pub body: Body,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// PAX records emitted in an `x` header before the member.
    pub pax: Vec<(String, Vec<u8>)>,
    /// Per-member dialect override.
    pub format: Option<Format>,
    pub tweak: Option<Tweak>,
}

/// A layer under construction. Methods add members in archive order; the
/// metadata modifiers (`mode`, `owner`, ...) apply to the member added last.
#[derive(Clone, Debug)]
pub struct Layer {
    format: Format,
    members: Vec<Member>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new(Format::Gnu)
    }
}

/// Joins `dir` and `name` the way tar paths are joined (no leading `/`).
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut out = dir.to_vec();
    out.push(b'/');
    out.extend_from_slice(name);
    out
}

/// Splits `a/b/c` into (`a/b`, `c`); a bare name has an empty parent.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

impl Layer {
    pub fn new(format: Format) -> Self {
        Layer {
            format,
            members: Vec::new(),
        }
    }

    fn push(mut self, path: impl AsRef<[u8]>, body: Body, mode: u32) -> Self {
        self.members.push(Member {
            path: path.as_ref().to_vec(),
            body,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            pax: Vec::new(),
            format: None,
            tweak: None,
        });
        self
    }

    fn last(&mut self) -> &mut Member {
        self.members
            .last_mut()
            .expect("modifier used before any member was added")
    }

    pub fn file(self, path: impl AsRef<[u8]>, content: impl AsRef<[u8]>) -> Self {
        self.push(path, Body::File(content.as_ref().to_vec()), 0o644)
    }

    pub fn dir(self, path: impl AsRef<[u8]>) -> Self {
        self.push(path, Body::Dir, 0o755)
    }

    pub fn symlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        self.push(path, Body::Symlink(target.as_ref().to_vec()), 0o777)
    }

    pub fn hardlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        self.push(path, Body::Hardlink(target.as_ref().to_vec()), 0o644)
    }

    pub fn char_dev(self, path: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        self.push(path, Body::Char(major, minor), 0o644)
    }

    pub fn block_dev(self, path: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        self.push(path, Body::Block(major, minor), 0o644)
    }

    pub fn fifo(self, path: impl AsRef<[u8]>) -> Self {
        self.push(path, Body::Fifo, 0o644)
    }

    /// OCI whiteout for `path`: an empty file `.wh.NAME` beside it.
    pub fn whiteout(self, path: impl AsRef<[u8]>) -> Self {
        let (dir, name) = split_parent(path.as_ref());
        let marker = join(dir, &[b".wh.", name].concat());
        self.file(marker, b"")
    }

    /// OCI opaque marker `.wh..wh..opq` inside `dir` (empty for the root).
    pub fn opaque(self, dir: impl AsRef<[u8]>) -> Self {
        self.file(join(dir.as_ref(), b".wh..wh..opq"), b"")
    }

    /// overlayfs native whiteout: a 0/0 character device.
    pub fn tombstone(self, path: impl AsRef<[u8]>) -> Self {
        self.char_dev(path, 0, 0)
    }

    /// overlayfs native opaque directory (`trusted.overlay.opaque=y`).
    pub fn overlay_opaque_dir(self, path: impl AsRef<[u8]>) -> Self {
        self.dir(path).xattr("trusted.overlay.opaque", b"y")
    }

    /// A PAX global header (`g`), named like the one `git archive` writes.
    pub fn global_header(self, records: &[(&str, &str)]) -> Self {
        let records = records
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        self.push("pax_global_header", Body::GlobalHeader(records), 0o666)
    }

    pub fn mode(mut self, mode: u32) -> Self {
        self.last().mode = mode;
        self
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        let m = self.last();
        m.uid = uid;
        m.gid = gid;
        self
    }

    pub fn mtime(mut self, mtime: u64) -> Self {
        self.last().mtime = mtime;
        self
    }

    /// Adds `SCHILY.xattr.NAME` to the member's PAX record.
    pub fn xattr(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.pax(&format!("SCHILY.xattr.{name}"), value)
    }

    /// Adds an arbitrary PAX record to the member.
    pub fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.last()
            .pax
            .push((key.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Encodes the last member in `format` regardless of the layer default.
    pub fn format(mut self, format: Format) -> Self {
        self.last().format = Some(format);
        self
    }

    pub fn tweak(mut self, tweak: Tweak) -> Self {
        self.last().tweak = Some(tweak);
        self
    }

    /// A complete archive, with the two zero blocks at the end.
    pub fn to_tar(&self) -> Vec<u8> {
        let mut builder = self.builder();
        builder.finish().expect("finish tar");
        builder.into_inner().expect("tar bytes")
    }

    /// The archive without its end-of-archive zero blocks.
    pub fn to_tar_unterminated(&self) -> Vec<u8> {
        let builder = self.builder();
        // `into_inner` appends the zero blocks, `get_ref` does not.
        builder.get_ref().clone()
    }

    fn builder(&self) -> Builder<Vec<u8>> {
        let mut builder = Builder::new(Vec::new());
        for member in &self.members {
            append_member(&mut builder, member, member.format.unwrap_or(self.format));
        }
        builder
    }

    /// Writes the layer into `dir/name` encoded with `codec`.
    pub fn write(&self, dir: &Path, name: &str, codec: Codec) -> PathBuf {
        write_file(dir, name, &codec.encode(&self.to_tar()))
    }
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;

fn fill(field: &mut [u8], bytes: &[u8]) {
    assert!(
        bytes.len() <= field.len(),
        "{} bytes do not fit a {}-byte header field",
        bytes.len(),
        field.len()
    );
    field.fill(0);
    field[..bytes.len()].copy_from_slice(bytes);
}

/// Stores `name` verbatim in the 100-byte name field.
pub fn set_raw_name(header: &mut Header, name: &[u8]) {
    fill(&mut header.as_old_mut().name, name);
}

fn set_raw_link(header: &mut Header, target: &[u8]) {
    fill(&mut header.as_old_mut().linkname, target);
}

/// ustar stores up to 255 bytes as `prefix` + `/` + `name`.
fn set_ustar_path(header: &mut Header, path: &[u8]) {
    if path.len() <= NAME_LEN {
        return set_raw_name(header, path);
    }
    let split = path
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i <= PREFIX_LEN && path.len() - i - 1 <= NAME_LEN)
        .map(|(i, _)| i)
        .next()
        .unwrap_or_else(|| panic!("path of {} bytes cannot be split for ustar", path.len()));
    set_raw_name(header, &path[split + 1..]);
    let ustar = header.as_ustar_mut().expect("ustar header");
    fill(&mut ustar.prefix, &path[..split]);
}

/// Emits a GNU `././@LongLink` member of type `kind` (`L` or `K`).
fn append_gnu_long(builder: &mut Builder<Vec<u8>>, kind: u8, value: &[u8]) {
    let mut header = Header::new_gnu();
    set_raw_name(&mut header, b"././@LongLink");
    header.set_mode(0o644);
    header.set_size(value.len() as u64 + 1);
    header.set_entry_type(EntryType::new(kind));
    header.set_cksum();
    let data = [value, b"\0"].concat();
    builder
        .append(&header, &data[..])
        .expect("append long link");
}

/// Where a name or target that overflows its header field goes.
fn place_long(
    builder: &mut Builder<Vec<u8>>,
    format: Format,
    value: &[u8],
    pax: &mut Vec<(String, Vec<u8>)>,
    gnu_kind: u8,
    pax_key: &str,
) {
    match format {
        Format::Gnu => append_gnu_long(builder, gnu_kind, value),
        Format::Pax => pax.push((pax_key.to_string(), value.to_vec())),
        Format::Ustar => panic!("ustar cannot store a long {pax_key}"),
    }
}

fn body_type_and_data(body: &Body) -> (EntryType, &[u8]) {
    match body {
        Body::File(data) => (EntryType::Regular, data),
        Body::Dir => (EntryType::Directory, &[]),
        Body::Symlink(_) => (EntryType::Symlink, &[]),
        Body::Hardlink(_) => (EntryType::Link, &[]),
        Body::Char(..) => (EntryType::Char, &[]),
        Body::Block(..) => (EntryType::Block, &[]),
        Body::Fifo => (EntryType::Fifo, &[]),
        Body::GlobalHeader(_) => (EntryType::XGlobalHeader, &[]),
    }
}

/// Serialises PAX records (`LEN KEY=VALUE\n`, LEN counting itself).
pub fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while rest + len.to_string().len() != len {
            len = rest + len.to_string().len();
        }
        write!(out, "{len} {key}=").unwrap();
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn append_member(builder: &mut Builder<Vec<u8>>, m: &Member, format: Format) {
    let (entry_type, data) = body_type_and_data(&m.body);
    let data: Vec<u8> = match &m.body {
        Body::GlobalHeader(records) => pax_records(records),
        _ => data.to_vec(),
    };
    let mut header = match format {
        Format::Gnu => Header::new_gnu(),
        Format::Ustar | Format::Pax => Header::new_ustar(),
    };
    header.set_entry_type(entry_type);
    header.set_mode(m.mode);
    header.set_uid(m.uid);
    header.set_gid(m.gid);
    header.set_mtime(m.mtime);
    header.set_size(data.len() as u64);
    if let Body::Char(major, minor) | Body::Block(major, minor) = m.body {
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
    }

    let mut pax = m.pax.clone();
    if m.path.len() <= NAME_LEN || format == Format::Ustar {
        set_ustar_path(&mut header, &m.path);
    } else {
        set_raw_name(&mut header, &m.path[..NAME_LEN]);
        place_long(builder, format, &m.path, &mut pax, b'L', "path");
    }
    if let Body::Symlink(target) | Body::Hardlink(target) = &m.body {
        if target.len() <= NAME_LEN {
            set_raw_link(&mut header, target);
        } else {
            set_raw_link(&mut header, &target[..NAME_LEN]);
            place_long(builder, format, target, &mut pax, b'K', "linkpath");
        }
    }
    if !pax.is_empty() {
        append_pax_header(builder, &pax);
    }
    if let Some(tweak) = m.tweak {
        tweak(&mut header);
    }
    header.set_cksum();
    builder.append(&header, &data[..]).expect("append member");
}

/// Emits a PAX extended header (`x`) applying to the next member.
fn append_pax_header(builder: &mut Builder<Vec<u8>>, records: &[(String, Vec<u8>)]) {
    let data = pax_records(records);
    let mut header = Header::new_ustar();
    set_raw_name(&mut header, b"PaxHeaders/member");
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_entry_type(EntryType::XHeader);
    header.set_cksum();
    builder
        .append(&header, &data[..])
        .expect("append pax header");
}

/// The encodings layerfs must recognise by their magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Plain,
    Gzip,
    /// Two gzip members concatenated (as `pigz`/`cat a.gz b.gz` produce).
    GzipMultiMember,
    Zstd,
    /// A zstd skippable frame first, then two frames, as `pzstd` writes.
    ZstdSkippableFirst,
    /// One bzip2 stream.
    Bzip2,
    /// Two bzip2 streams concatenated (as `pbzip2` writes).
    Bzip2MultiStream,
    /// One xz stream of one block (as `xz` without `-T` writes).
    Xz,
    /// One xz stream of 64 KiB blocks (as `xz -T` writes, smaller).
    XzMultiBlock,
    /// One lz4 frame (as `lz4` writes).
    Lz4,
    /// Two lz4 frames with a skippable frame between.
    Lz4MultiFrame,
}

impl Codec {
    pub const ALL: [Codec; 11] = [
        Codec::Plain,
        Codec::Gzip,
        Codec::GzipMultiMember,
        Codec::Zstd,
        Codec::ZstdSkippableFirst,
        Codec::Bzip2,
        Codec::Bzip2MultiStream,
        Codec::Xz,
        Codec::XzMultiBlock,
        Codec::Lz4,
        Codec::Lz4MultiFrame,
    ];

    pub fn encode(self, tar: &[u8]) -> Vec<u8> {
        let half = tar.len() / 2;
        match self {
            Codec::Plain => tar.to_vec(),
            Codec::Gzip => gzip(tar),
            Codec::GzipMultiMember => [gzip(&tar[..half]), gzip(&tar[half..])].concat(),
            Codec::Zstd => zstd(tar),
            Codec::ZstdSkippableFirst => {
                let payload = (half as u32).to_le_bytes();
                [
                    zstd_skippable_frame(&payload),
                    zstd(&tar[..half]),
                    zstd(&tar[half..]),
                ]
                .concat()
            }
            Codec::Bzip2 => bzip2(tar),
            Codec::Bzip2MultiStream => [bzip2(&tar[..half]), bzip2(&tar[half..])].concat(),
            Codec::Xz => xz_blocks(tar, usize::MAX),
            Codec::XzMultiBlock => xz_blocks(tar, 64 * 1024),
            Codec::Lz4 => lz4(tar),
            Codec::Lz4MultiFrame => [
                lz4(&tar[..half]),
                zstd_skippable_frame(b"lz4 skips these too"),
                lz4(&tar[half..]),
            ]
            .concat(),
        }
    }
}

pub fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn lz4(data: &[u8]) -> Vec<u8> {
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// One xz stream with a block per `block` bytes of input (a full flush
/// ends a block).
pub fn xz_blocks(data: &[u8], block: usize) -> Vec<u8> {
    use liblzma::stream::{Action, Check, Status, Stream};
    fn drive(stream: &mut Stream, mut input: &[u8], action: Action, out: &mut Vec<u8>) {
        loop {
            out.reserve(64 * 1024);
            let before = stream.total_in();
            let status = stream.process_vec(input, out, action).unwrap();
            input = &input[(stream.total_in() - before) as usize..];
            match action {
                Action::Run if input.is_empty() => return,
                _ if status == Status::StreamEnd => return,
                _ => {}
            }
        }
    }
    let mut stream = Stream::new_easy_encoder(1, Check::Crc64).unwrap();
    let mut out = Vec::new();
    for chunk in data.chunks(block) {
        drive(&mut stream, chunk, Action::Run, &mut out);
        drive(&mut stream, &[], Action::FullFlush, &mut out);
    }
    drive(&mut stream, &[], Action::Finish, &mut out);
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A zstd skippable frame: magic `50 2a 4d 18`, u32 LE length, payload.
pub fn zstd_skippable_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x50, 0x2a, 0x4d, 0x18];
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Deterministic pseudo-random bytes (xorshift64*), so large fixtures need
/// no RNG dependency and failures are reproducible.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Appends a regular file `name` (mode 0644) of `len` bytes read from
/// `data` to `builder`: for members streamed rather than held (a gigabyte
/// of zeros in a bomb).
pub fn append_streamed(builder: &mut Builder<impl Write>, name: &str, len: u64, data: impl Read) {
    let mut header = Header::new_gnu();
    header.set_path(name).expect("path");
    header.set_mode(0o644);
    header.set_size(len);
    header.set_cksum();
    builder.append(&header, data).expect("append");
}
