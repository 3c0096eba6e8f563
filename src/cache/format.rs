//! The on-disk form of cache entries: one layer's index, or one stack's
//! merged tree.
//!
//! ```text
//! header, 28 bytes:  magic "LAYERFS-IDX\0" (layer) or "LAYERFS-TRE\0"
//!                    (tree) | version u32 LE
//!                    | body length u64 LE | CRC-32 of the body u32 LE
//! layer body:        identity (varint length + bytes)
//!                    | seek index (varint length + SeekIndex::encode bytes)
//!                    | CRC-32 of the body up to here u32 LE
//!                    | member count (varint) | members
//! tree body:         identity (varint length + bytes) | zeros up to a
//!                    file offset that is a multiple of 8 | Tree::encode bytes
//! ```
//!
//! The seek index comes before the members, with a checksum of its own, so
//! that a mount whose merged tree is stored reads a layer's seek index
//! without reading its members at all: they are most of the entry (6.7 MB
//! for 200k files), and reading them cold cost a remount 13 ms.
//!
//! Integers in the body are LEB128 varints (signed ones zigzag-encoded),
//! and each member is stored relative to the one before it: its path as the
//! length of the prefix it shares with the previous path plus the rest,
//! its header offset and mtime as differences, its data offset as the
//! distance from its own header, and its owner names as "same as before"
//! when they are. A layer of small files takes about 35 bytes per member
//! (33.6 for 60-byte paths), and decodes in one forward pass. The magic and
//! version keep their place in every version, so any entry can be told to
//! be of another version.
//!
//! Decoding trusts nothing: the file must be exactly as long as the header
//! says, the checksum must match, the identity must be the expected one,
//! every count and length is checked against the bytes left before
//! anything is allocated, and the body must end exactly after the last
//! member. Any failure is a [`FormatError`], which the cache turns into
//! "index the layer again".

use crate::source::{ByteCursor, SeekDecodeError, SeekIndex};
use crate::tar::{DataLayout, LayerIndex, Member, MemberKind, SparseSegment};
use crate::tree::{Backing, Tree, TreeDecodeError, ENCODING_ALIGN};

/// First bytes of every layer entry.
const MAGIC: &[u8; 12] = b"LAYERFS-IDX\0";
/// First bytes of every tree entry.
const TREE_MAGIC: &[u8; 12] = b"LAYERFS-TRE\0";
/// Bumped whenever the body changes meaning; an entry of another version is
/// rebuilt, never read.
/// 3: the layer body's head has its own checksum; the tree body is laid out
/// in fixed-size records (`Tree::encode`).
/// 4: layers are read as Go's archive/tar reads them (header-only types,
/// extension header order, global headers), and the merge resolves opaque
/// markers through symlinks, keeps a file that a member lies under and
/// reads `user.overlay.*` as ordinary in tars: an entry of 3 may describe
/// another tree.
/// 5: an eStargz layer's TOC entry and prefetch landmarks are left out of
/// its members, and a layer indexed from its table of contents has a
/// chunk table for its seek index: an entry of 4 may list them.
pub(super) const VERSION: u32 = 6;
/// Magic, version, body length, checksum.
pub(super) const HEADER_LEN: usize = 12 + 4 + 8 + 4;

/// Low bits of a member's flag byte: its kind.
const KIND_MASK: u8 = 0b111;
/// A sparse map follows.
const SPARSE: u8 = 1 << 4;
/// Extended attributes follow.
const XATTRS: u8 = 1 << 5;
/// A link target follows (absent means empty).
const LINK: u8 = 1 << 6;
/// Device numbers follow (absent means 0, 0).
const DEVICE: u8 = 1 << 7;

/// The fewest bytes a member can take: path prefix and suffix lengths,
/// flags, mode, uid, gid, mtime, nanoseconds, header offset, data offset
/// and size, one byte each. Bounds the member count before allocating.
const MIN_MEMBER_BYTES: usize = 11;

/// Why a stored entry was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum FormatError {
    /// Not a layerfs index at all.
    #[error("not a layerfs index (bad magic)")]
    BadMagic,
    /// Written by another format version.
    #[error("index format version {0}, this layerfs reads version {VERSION}")]
    Version(u32),
    /// The file is shorter or longer than its header says.
    #[error("index is {actual} bytes, its header says {expected} (truncated or damaged)")]
    Length {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// The body's checksum does not match.
    #[error("index checksum mismatch (corrupt)")]
    Checksum,
    /// The entry belongs to another layer (a file-name hash collision).
    #[error("index belongs to another layer")]
    OtherLayer,
    /// The body passed the checksum but does not decode.
    #[error("malformed index: {0}")]
    Malformed(&'static str),
    /// The stored seek index does not decode.
    #[error(transparent)]
    Seek(#[from] SeekDecodeError),
    /// The stored tree does not decode.
    #[error(transparent)]
    Tree(#[from] TreeDecodeError),
}

/// Encodes one entry: `identity` (see [`super::LayerKey`]), the seek index
/// and the members.
#[cfg(test)]
pub(super) fn encode(identity: &[u8], index: &LayerIndex, seek: &SeekIndex) -> Vec<u8> {
    let mut members = MemberEncoder::default();
    members.push(&index.members);
    members.finish(identity, seek)
}

/// A layer entry's members, encoded as they are indexed, so that storing
/// a layer never needs its whole member list: the encoding is a tenth of
/// the size of the members it stands for.
#[derive(Default)]
pub(super) struct MemberEncoder {
    out: Vec<u8>,
    count: u64,
    prev: Previous,
    /// Bytes of the encoding already handed to [`MemberEncoder::spill_to`],
    /// and their checksum.
    spilled: u64,
    spilled_crc: crc32fast::Hasher,
}

impl MemberEncoder {
    /// Encodes the next members, in archive order.
    pub(super) fn push(&mut self, members: &[Member]) {
        for member in members {
            put_member(&mut self.out, member, &self.prev);
            self.prev.follow(member);
        }
        self.count += members.len() as u64;
    }

    /// Bytes of encoding held in memory.
    pub(super) fn held(&self) -> usize {
        self.out.len()
    }

    /// Writes the encoding held so far to `out`, which then comes between
    /// the head and the rest in the entry (see
    /// [`MemberEncoder::finish_parts`]); holds nothing more once written.
    pub(super) fn spill_to(&mut self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.out)?;
        self.spilled += self.out.len() as u64;
        self.spilled_crc.update(&self.out);
        self.out.clear();
        Ok(())
    }

    /// The whole entry: `identity` (see [`super::LayerKey`]), the seek
    /// index, and the members pushed so far.
    #[cfg(test)]
    pub(super) fn finish(self, identity: &[u8], seek: &SeekIndex) -> Vec<u8> {
        let [mut head, members] = self.finish_parts(identity, seek);
        head.extend_from_slice(&members);
        head
    }

    /// [`MemberEncoder::finish`] in two parts: the head, then (after what
    /// was spilled, if anything) the rest of the members' encoding. Joining
    /// them would copy the members' encoding, held twice at the end of a
    /// layer's pass (19 MB each at a million members).
    pub(super) fn finish_parts(self, identity: &[u8], seek: &SeekIndex) -> [Vec<u8>; 2] {
        let mut blob = Vec::new();
        seek.encode(&mut blob);
        let mut head = start(MAGIC, HEADER_LEN + identity.len() + blob.len() + 30);
        put_bytes(&mut head, identity);
        put_bytes(&mut head, &blob);
        let head_crc = crc32fast::hash(head.get(HEADER_LEN..).unwrap_or_default());
        head.extend_from_slice(&head_crc.to_le_bytes());
        put_u64(&mut head, self.count);
        let mut crc = crc32fast::Hasher::new();
        crc.update(head.get(HEADER_LEN..).unwrap_or_default());
        crc.combine(&self.spilled_crc);
        crc.update(&self.out);
        let body_len = (head.len() - HEADER_LEN + self.out.len()) as u64 + self.spilled;
        if let Some(header) = head.get_mut(..HEADER_LEN) {
            fill_header(header, body_len, crc.finalize());
        }
        [head, self.out]
    }
}

/// Encodes a stack's merged tree; `identity` names the stack.
#[cfg(test)]
pub(super) fn encode_tree(identity: &[u8], tree: &Tree) -> Vec<u8> {
    let mut out = Vec::new();
    let appended: Result<u64, std::convert::Infallible> =
        write_tree(identity, tree, |at, bytes| {
            let at = usize::try_from(at).unwrap_or(usize::MAX);
            out.resize(out.len().max(at + bytes.len()), 0);
            out[at..at + bytes.len()].copy_from_slice(bytes);
            Ok(())
        });
    let Ok(_) = appended;
    out
}

/// Writes a stack's merged tree entry (`identity` names the stack)
/// through `write_at(offset, bytes)` without ever holding the encoding
/// whole: the body goes out in chunks as it is encoded, and the header,
/// whose length and checksum cover the body, last, at offset 0. Returns
/// the entry's length.
pub(super) fn write_tree<E>(
    identity: &[u8],
    tree: &Tree,
    mut write_at: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut body = |bytes: &[u8]| {
        crc.update(bytes);
        let at = HEADER_LEN as u64 + len;
        len += bytes.len() as u64;
        write_at(at, bytes)
    };
    let mut first = Vec::new();
    put_bytes(&mut first, identity);
    // The tree starts aligned in the file, so that it is read in place.
    let aligned = (HEADER_LEN + first.len()).next_multiple_of(ENCODING_ALIGN);
    first.resize(aligned - HEADER_LEN, 0);
    body(&first)?;
    tree.encode_chunks(&mut body)?;
    let mut header = start(TREE_MAGIC, HEADER_LEN);
    fill_header(&mut header, len, crc.finalize());
    write_at(0, &header)?;
    Ok(HEADER_LEN as u64 + len)
}

/// A new entry: the header with its length and checksum still to fill in.
fn start(magic: &[u8; 12], capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 12]);
    out
}

/// Puts the body's length and checksum into the header [`start`] began.
fn fill_header(header: &mut [u8], body_len: u64, crc: u32) {
    if let Some(fields) = header.get_mut(16..HEADER_LEN) {
        let (len_field, crc_field) = fields.split_at_mut(8);
        len_field.copy_from_slice(&body_len.to_le_bytes());
        crc_field.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Decodes a layer entry, which must carry exactly `identity`.
pub(super) fn decode(
    bytes: &[u8],
    identity: &[u8],
) -> Result<(LayerIndex, SeekIndex), FormatError> {
    let mut body = open(bytes, MAGIC, identity)?;
    let seek = SeekIndex::decode(body.bytes()?)?;
    // Covered by the whole body's checksum, already checked.
    body.array::<4>()?;
    let count = body.count(MIN_MEMBER_BYTES)?;
    let mut members = Vec::with_capacity(count);
    let mut prev = Previous::default();
    for _ in 0..count {
        let member = take_member(&mut body, &prev)?;
        prev.follow(&member);
        members.push(member);
    }
    if !body.0.is_empty() {
        return Err(FormatError::Malformed(
            "trailing bytes after the last member",
        ));
    }
    Ok((LayerIndex { members }, seek))
}

/// How many bytes from the start of a layer entry [`decode_seek`] needs:
/// the header, the identity, the seek index and their checksum. `prefix`
/// is the entry's first bytes, enough to hold the header and both lengths;
/// `entry_len` is the file's length.
pub(super) fn seek_head_len(prefix: &[u8], entry_len: u64) -> Result<usize, FormatError> {
    let (body, _) = check_header(prefix, MAGIC, entry_len)?;
    let mut r = Reader::new(body);
    r.bytes()?;
    let seek_len = r.usize()?;
    let parsed = prefix.len() - r.0.len();
    parsed
        .checked_add(seek_len)
        .and_then(|n| n.checked_add(4))
        .ok_or(FormatError::Malformed("seek index length overflows"))
}

/// Decodes only the seek index of a layer entry from its first bytes
/// (`head`, [`seek_head_len`] of them) without reading the members:
/// `entry_len` (the file's length) must be what the header says, and the
/// head's own checksum must match.
pub(super) fn decode_seek(
    head: &[u8],
    entry_len: u64,
    identity: &[u8],
) -> Result<SeekIndex, FormatError> {
    let (body, _) = check_header(head, MAGIC, entry_len)?;
    let mut r = Reader::new(body);
    let found = r.bytes()?;
    let seek = r.bytes()?;
    let covered = body.len() - r.0.len();
    let crc = u32::from_le_bytes(r.array()?);
    if crc32fast::hash(body.get(..covered).unwrap_or_default()) != crc {
        return Err(FormatError::Checksum);
    }
    if found != identity {
        return Err(FormatError::OtherLayer);
    }
    Ok(SeekIndex::decode(seek)?)
}

/// Decodes a tree entry (all of `entry`), which must carry exactly
/// `identity`. The tree reads its arrays in place from `entry`, which it
/// keeps.
///
/// The checksum is computed on another core while the tree is checked,
/// over the same bytes: with the page cache cold both wait on the same
/// read-ahead, so the sum costs no time, and a damaged entry is still
/// refused (as a checksum mismatch, whatever the checks made of it).
pub(super) fn decode_tree(entry: &Backing, identity: &[u8]) -> Result<Tree, FormatError> {
    let bytes = (**entry).as_ref();
    let (body, crc) = check_header(bytes, TREE_MAGIC, bytes.len() as u64)?;
    let (summed, decoded) = std::thread::scope(|scope| {
        let summer = scope.spawn(|| crc32fast::hash(body));
        let decoded = decode_tree_body(entry, body, identity);
        // A panic in the checksum thread is taken as a mismatch.
        (summer.join().ok(), decoded)
    });
    if summed != Some(crc) {
        return Err(FormatError::Checksum);
    }
    decoded
}

fn decode_tree_body(entry: &Backing, body: &[u8], identity: &[u8]) -> Result<Tree, FormatError> {
    let mut r = Reader::new(body);
    if r.bytes()? != identity {
        return Err(FormatError::OtherLayer);
    }
    let after_identity = HEADER_LEN + body.len() - r.0.len();
    Ok(Tree::decode_shared(
        entry,
        after_identity.next_multiple_of(ENCODING_ALIGN),
    )?)
}

/// Checks an entry's header, checksum and identity; gives what follows
/// the identity.
fn open<'a>(bytes: &'a [u8], magic: &[u8; 12], identity: &[u8]) -> Result<Reader<'a>, FormatError> {
    let (body, crc) = check_header(bytes, magic, bytes.len() as u64)?;
    if crc32fast::hash(body) != crc {
        return Err(FormatError::Checksum);
    }
    let mut body = Reader::new(body);
    if body.bytes()? != identity {
        return Err(FormatError::OtherLayer);
    }
    Ok(body)
}

/// Checks the header at the start (`head`) of an entry of `entry_len`
/// bytes offered from elsewhere, a tree's if `tree`: what can be known of
/// it before the rest is read.
pub(super) fn check_start(head: &[u8], tree: bool, entry_len: u64) -> Result<(), FormatError> {
    let magic = if tree { TREE_MAGIC } else { MAGIC };
    check_header(head, magic, entry_len).map(|_| ())
}

/// Checks the magic, the version, and that the entry is `entry_len` bytes
/// as its header says; gives the body bytes `bytes` holds (all of it, or
/// the start of it) and the body's checksum.
fn check_header<'a>(
    bytes: &'a [u8],
    magic: &[u8; 12],
    entry_len: u64,
) -> Result<(&'a [u8], u32), FormatError> {
    let truncated = || FormatError::Length {
        expected: HEADER_LEN as u64,
        actual: entry_len,
    };
    let (header, body) = bytes.split_at_checked(HEADER_LEN).ok_or_else(truncated)?;
    let mut header = Reader::new(header);
    if header.take(magic.len())? != magic {
        return Err(FormatError::BadMagic);
    }
    let version = u32::from_le_bytes(header.array()?);
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let body_len = u64::from_le_bytes(header.array()?);
    let crc = u32::from_le_bytes(header.array()?);
    if body_len.checked_add(HEADER_LEN as u64) != Some(entry_len) {
        return Err(FormatError::Length {
            expected: body_len.saturating_add(HEADER_LEN as u64),
            actual: entry_len,
        });
    }
    Ok((body, crc))
}

/// What members are encoded relative to: the member before, or zeros and
/// empty names for the first.
#[derive(Default)]
struct Previous {
    path: Vec<u8>,
    mtime: i64,
    header_offset: u64,
}

impl Previous {
    fn follow(&mut self, member: &Member) {
        self.path.clone_from(&member.path);
        self.mtime = member.mtime;
        self.header_offset = member.header_offset;
    }
}

fn kind_code(kind: MemberKind) -> u8 {
    match kind {
        MemberKind::Regular => 0,
        MemberKind::Directory => 1,
        MemberKind::Symlink => 2,
        MemberKind::Hardlink => 3,
        MemberKind::CharDevice => 4,
        MemberKind::BlockDevice => 5,
        MemberKind::Fifo => 6,
    }
}

fn kind_of(code: u8) -> Result<MemberKind, FormatError> {
    Ok(match code {
        0 => MemberKind::Regular,
        1 => MemberKind::Directory,
        2 => MemberKind::Symlink,
        3 => MemberKind::Hardlink,
        4 => MemberKind::CharDevice,
        5 => MemberKind::BlockDevice,
        6 => MemberKind::Fifo,
        _ => return Err(FormatError::Malformed("unknown member kind")),
    })
}

fn put_member(out: &mut Vec<u8>, m: &Member, prev: &Previous) {
    let shared = m
        .path
        .iter()
        .zip(&prev.path)
        .take_while(|(a, b)| a == b)
        .count();
    put_u64(out, shared as u64);
    put_bytes(out, &m.path[shared..]);

    let device = m.dev_major != 0 || m.dev_minor != 0;
    let mut flags = kind_code(m.kind);
    for (set, flag) in [
        (m.data.sparse.is_some(), SPARSE),
        (!m.xattrs.is_empty(), XATTRS),
        (!m.link_target.is_empty(), LINK),
        (device, DEVICE),
    ] {
        if set {
            flags |= flag;
        }
    }
    out.push(flags);

    put_u64(out, m.mode.into());
    put_u64(out, m.uid.into());
    put_u64(out, m.gid.into());
    put_i64(out, m.mtime.wrapping_sub(prev.mtime));
    put_u64(out, m.mtime_nsec.into());
    put_i64(out, m.header_offset.wrapping_sub(prev.header_offset) as i64);
    put_i64(out, m.data.offset.wrapping_sub(m.header_offset) as i64);
    put_u64(out, m.data.size);
    if let Some(segments) = &m.data.sparse {
        put_u64(out, segments.len() as u64);
        for s in segments.iter() {
            put_u64(out, s.offset);
            put_u64(out, s.len);
        }
    }
    if !m.xattrs.is_empty() {
        put_u64(out, m.xattrs.len() as u64);
        for (name, value) in &m.xattrs {
            put_bytes(out, name);
            put_bytes(out, value);
        }
    }
    if !m.link_target.is_empty() {
        put_bytes(out, &m.link_target);
    }
    if device {
        put_u64(out, m.dev_major.into());
        put_u64(out, m.dev_minor.into());
    }
}

fn take_member(r: &mut Reader<'_>, prev: &Previous) -> Result<Member, FormatError> {
    let shared = prev.path.get(..r.usize()?).ok_or(FormatError::Malformed(
        "path shares more than the previous path",
    ))?;
    let suffix = r.bytes()?;
    let mut path = Vec::with_capacity(shared.len() + suffix.len());
    path.extend_from_slice(shared);
    path.extend_from_slice(suffix);

    let flags = r.byte()?;
    let kind = kind_of(flags & KIND_MASK)?;
    let mode = r.u32()?;
    let uid = r.u32()?;
    let gid = r.u32()?;
    let mtime = prev.mtime.wrapping_add(r.i64()?);
    let mtime_nsec = r.u32()?;
    if mtime_nsec >= 1_000_000_000 {
        return Err(FormatError::Malformed("nanoseconds out of range"));
    }
    let header_offset = prev.header_offset.wrapping_add(r.i64()? as u64);
    let offset = header_offset.wrapping_add(r.i64()? as u64);
    let size = r.u64()?;
    let sparse = if flags & SPARSE != 0 {
        let count = r.count(2)?;
        let mut segments = Vec::with_capacity(count);
        for _ in 0..count {
            segments.push(SparseSegment {
                offset: r.u64()?,
                len: r.u64()?,
            });
        }
        Some(segments.into_boxed_slice())
    } else {
        None
    };
    let xattrs = if flags & XATTRS != 0 {
        let count = r.count(2)?;
        let mut xattrs = Vec::with_capacity(count);
        for _ in 0..count {
            xattrs.push((r.bytes()?.to_vec(), r.bytes()?.to_vec()));
        }
        xattrs
    } else {
        Vec::new()
    };
    let link_target = if flags & LINK != 0 {
        r.bytes()?.to_vec()
    } else {
        Vec::new()
    };
    let (dev_major, dev_minor) = if flags & DEVICE != 0 {
        (r.u32()?, r.u32()?)
    } else {
        (0, 0)
    };
    Ok(Member {
        path,
        kind,
        mode,
        uid,
        gid,
        mtime,
        mtime_nsec,
        link_target,
        dev_major,
        dev_minor,
        xattrs,
        data: DataLayout {
            offset,
            size,
            sparse,
        },
        header_offset,
    })
}

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag: small magnitudes of either sign take few bytes.
fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The source's byte cursor (one for every stored index), with this
/// format's varints and errors on top.
struct Reader<'a>(ByteCursor<'a>);

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader(ByteCursor::new(bytes))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        self.0
            .take(n)
            .ok_or(FormatError::Malformed("a length runs past the end"))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        self.0
            .array()
            .ok_or(FormatError::Malformed("a length runs past the end"))
    }

    fn byte(&mut self) -> Result<u8, FormatError> {
        self.0
            .u8()
            .ok_or(FormatError::Malformed("ends inside a member"))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may only hold the top bit.
            if shift == 63 && bits > 1 {
                return Err(FormatError::Malformed("varint overflows 64 bits"));
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(FormatError::Malformed("varint longer than 10 bytes"))
    }

    fn i64(&mut self) -> Result<i64, FormatError> {
        let v = self.u64()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        u32::try_from(self.u64()?).map_err(|_| FormatError::Malformed("value exceeds 32 bits"))
    }

    fn usize(&mut self) -> Result<usize, FormatError> {
        usize::try_from(self.u64()?).map_err(|_| FormatError::Malformed("length exceeds memory"))
    }

    /// A length-prefixed byte string.
    fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let len = self.usize()?;
        self.take(len)
    }

    /// A count of items taking at least `min_bytes` each, refused if the
    /// bytes left cannot hold that many: no allocation larger than the file.
    fn count(&mut self, min_bytes: usize) -> Result<usize, FormatError> {
        let n = self.usize()?;
        if n > self.0.len() / min_bytes {
            return Err(FormatError::Malformed("count larger than the bytes left"));
        }
        Ok(n)
    }
}

#[cfg(test)]
pub(super) mod tests;
