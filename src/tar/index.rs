//! The single pass over a layer's tar stream that records every member.
//!
//! Headers are read one block at a time into one reused buffer; member data
//! is skipped (a seek for plain layers), except the few bytes GNU tar puts
//! in front of sparse data. Extension headers accumulate in [`Pending`]
//! until the member they describe arrives.

use super::cursor::{padding, Cursor};
use super::error::{Problem, TarError};
use super::gnu::{long_name, read_old_sparse};
use super::header::{checksum_ok, is_zero, Block, Header, BLOCK};
use super::member::{DataLayout, Member, MemberKind};
use super::pax::{check_global, PaxHeader, PaxSparse, SparseFormat};
use super::sparse::read_pax1_map;
use crate::source::Stream;

/// Largest long name, long link or PAX header data accepted: real ones are
/// a few hundred bytes, and the data is held in memory.
const MAX_EXTENSION_DATA: u64 = 1 << 20;
/// Most extension headers accepted in a row before a member: real archives
/// have at most three or four.
const MAX_EXTENSION_HEADERS: u32 = 64;
/// Extended attribute bytes (names and values) a layer may carry: 16 MiB,
/// and 256 bytes more for each member. Real layers stay far below (an
/// SELinux label is about 50 bytes), while 1,000 members with 64 KiB values
/// each, 60 KB of zstd, would otherwise hold 64 MiB in memory and in the
/// stored tree.
const XATTR_BUDGET_BASE: u64 = 16 << 20;
const XATTR_BUDGET_PER_MEMBER: u64 = 256;

/// Every member of one layer, in archive order (duplicates kept: the merge
/// decides that the last wins).
#[derive(Debug, Default)]
pub struct LayerIndex {
    /// The members, in the order their headers appear.
    pub members: Vec<Member>,
}

/// The members found in the head of a tar stream that may stop anywhere:
/// what [`index_prefix`] gives.
#[derive(Debug, Default)]
pub struct PrefixIndex {
    /// Every member whose headers were read whole, in archive order; the
    /// last one's data may lie past the end of the stream.
    pub index: LayerIndex,
    /// Whether the end-of-archive block was read, so that no member is
    /// missing. A stream that stops anywhere else, even on a block
    /// boundary, may have been cut there.
    pub complete: bool,
}

/// Where [`index_layer_batches`] hands out members.
type Sink<'a> = &'a mut dyn FnMut(Vec<Member>);

/// One sequential pass over a layer's (decompressed) tar stream.
///
/// Stops at the first all-zero header block without reading further, so
/// whatever follows the end-of-archive marker is never looked at. A stream
/// that ends on a block boundary, or inside the padding of the last member,
/// is complete; one that ends inside a header or member data is `Truncated`.
pub fn index_layer(stream: &mut dyn Stream) -> Result<LayerIndex, TarError> {
    let mut members = Vec::new();
    index_layer_batches(stream, usize::MAX, &mut |batch| {
        if members.is_empty() {
            members = batch;
        } else {
            members.extend(batch);
        }
    })?;
    Ok(LayerIndex { members })
}

/// [`index_layer`] handing the members out as they are read, in archive
/// order, `batch` at a time (the last batch may be shorter; an empty
/// layer gives none), so that a consumer (the merge) can work while the
/// pass goes on and the whole member list never needs to exist. On an
/// error, the batches already handed out are all that was read before it.
pub fn index_layer_batches(
    stream: &mut dyn Stream,
    batch: usize,
    sink: &mut dyn FnMut(Vec<Member>),
) -> Result<(), TarError> {
    let mut indexer = Indexer::new(stream, false);
    indexer.batch = Some((batch.max(1), sink));
    indexer.run()?;
    let rest = std::mem::take(&mut indexer.members);
    if let (Some((_, sink)), false) = (indexer.batch, rest.is_empty()) {
        sink(rest);
    }
    Ok(())
}

/// The same pass over a stream that is only the head of a layer (`ls
/// --peek`): where the stream stops, inside a header, inside member data or
/// between members, the members read so far are the result, not an error.
/// A member is listed once its headers are read, even if its data is cut;
/// a member cut inside its headers (extension headers included) is not.
/// Anything wrong in the bytes that did arrive is an error as for
/// [`index_layer`].
pub fn index_prefix(stream: &mut dyn Stream) -> Result<PrefixIndex, TarError> {
    let mut indexer = Indexer::new(stream, true);
    let complete = match indexer.run() {
        Ok(end) => end == End::Marker,
        Err(e) if matches!(e.problem, Problem::Truncated) => false,
        Err(e) => return Err(e),
    };
    Ok(PrefixIndex {
        index: LayerIndex {
            members: indexer.members,
        },
        complete,
    })
}

/// How the archive ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// An all-zero header block: the end-of-archive marker.
    Marker,
    /// The stream ended on a block boundary or inside a zero block.
    StreamEnd,
}

/// What the next header block turned out to be.
enum Next {
    /// A header, in `Indexer::block`.
    Header,
    /// The end of the archive.
    End(End),
}

/// What the extension headers since the last member said. As in Go, each
/// one replaces an earlier one of its kind: the last PAX header, long name
/// and long link before a member are the ones that apply.
#[derive(Default)]
struct Pending {
    /// Offset of the member's first extension header ('x', 'X', 'L', 'K'):
    /// where the member starts.
    first_offset: Option<u64>,
    /// Extension headers since the last member.
    headers: u32,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: PaxHeader,
}

struct Indexer<'a> {
    cursor: Cursor<'a>,
    /// The current header.
    block: Block,
    /// Extension blocks and sparse map blocks.
    scratch: Block,
    /// Extension header data, reused.
    data: Vec<u8>,
    pending: Pending,
    members: Vec<Member>,
    /// Members indexed so far, and the extended attribute bytes they
    /// carry: what [`XATTR_BUDGET_BASE`] bounds.
    members_seen: u64,
    xattr_bytes: u64,
    /// Where full batches of `members` go, and their size; `None`: keep
    /// them all.
    batch: Option<(usize, Sink<'a>)>,
    /// The stream is the head of a layer ([`index_prefix`]): it may stop
    /// anywhere.
    prefix: bool,
}

impl<'a> Indexer<'a> {
    fn new(stream: &'a mut dyn Stream, prefix: bool) -> Indexer<'a> {
        Indexer {
            cursor: Cursor::new(stream),
            block: [0; BLOCK],
            scratch: [0; BLOCK],
            data: Vec::new(),
            pending: Pending::default(),
            members: Vec::new(),
            members_seen: 0,
            xattr_bytes: 0,
            batch: None,
            prefix,
        }
    }

    /// Indexes up to the end of the archive; says how it ended.
    fn run(&mut self) -> Result<End, TarError> {
        let end = loop {
            let offset = self.cursor.pos();
            if let Next::End(end) = self.next_header(offset)? {
                break end;
            }
            match Header::new(&self.block).typeflag() {
                typeflag @ (b'x' | b'X' | b'g' | b'L' | b'K' | b'V') => {
                    self.extension(offset, typeflag)?;
                }
                b'M' => {
                    return Err(
                        Problem::Unsupported("multi-volume continuation member".into()).at(offset),
                    );
                }
                typeflag => {
                    let (member, data_bytes) = self.member(offset, typeflag)?;
                    self.members.push(member);
                    self.pending = Pending::default();
                    if let Some((size, sink)) = &mut self.batch {
                        if self.members.len() >= *size {
                            sink(std::mem::replace(
                                &mut self.members,
                                Vec::with_capacity(*size),
                            ));
                        }
                    }
                    // After the push: a member whose data is cut is still
                    // known, which is what a prefix listing shows.
                    self.cursor.skip_data(data_bytes)?;
                }
            }
        };
        match self.pending.first_offset {
            // The head of a layer may stop between a member's extension
            // headers and its header: that member is cut, not dangling.
            Some(_) if self.prefix && end == End::StreamEnd => Ok(end),
            Some(offset) => Err(Problem::DanglingExtension.at(offset)),
            None => Ok(end),
        }
    }

    /// Reads the next header block, or finds the end of the archive.
    fn next_header(&mut self, offset: u64) -> Result<Next, TarError> {
        let n = self.cursor.fill(&mut self.block)?;
        if is_zero(self.block.get(..n).unwrap_or_default()) {
            // The end marker, a stream ending on a block boundary, or one
            // cut inside the end marker: nothing was lost.
            return Ok(Next::End(if n == BLOCK {
                End::Marker
            } else {
                End::StreamEnd
            }));
        }
        if n < BLOCK {
            // A whole layer that ends in its first block is no tar; the head
            // of one may just be shorter than a block.
            return Err(if offset == 0 && !self.prefix {
                Problem::NotATar.at(0)
            } else {
                Problem::Truncated.at(self.cursor.pos())
            });
        }
        if !checksum_ok(&self.block) {
            return Err(if offset == 0 {
                Problem::NotATar.at(0)
            } else {
                Problem::BadChecksum.at(offset)
            });
        }
        Ok(Next::Header)
    }

    /// Takes in a header that describes the members after it.
    fn extension(&mut self, offset: u64, typeflag: u8) -> Result<(), TarError> {
        self.pending.headers += 1;
        if self.pending.headers > MAX_EXTENSION_HEADERS {
            return Err(Problem::Limit(format!(
                "more than {MAX_EXTENSION_HEADERS} extension headers in a row"
            ))
            .at(offset));
        }
        let size = Header::new(&self.block).size().map_err(|p| p.at(offset))?;
        if typeflag == b'V' {
            // A volume label names the tape, not a file. Go hands it out as
            // an entry of its own, so the extension headers before it
            // describe the label and are spent.
            self.pending = Pending::default();
            return self.cursor.skip_data(size);
        }
        if typeflag != b'g' {
            self.pending.first_offset.get_or_insert(offset);
        }
        if size > MAX_EXTENSION_DATA {
            return Err(Problem::Limit(format!(
                "extension header of {size} bytes (at most {MAX_EXTENSION_DATA})"
            ))
            .at(offset));
        }
        let data_offset = self.cursor.pos();
        self.data.clear();
        // Within the limit just checked, so the allocation is bounded.
        self.data.resize(usize::try_from(size).unwrap_or(0), 0);
        self.cursor.read_exact(&mut self.data)?;
        // A stream cut inside the padding loses nothing; a member must
        // still follow, which the next header read checks.
        self.cursor.skip(padding(size))?;
        match typeflag {
            // 'X' is what Solaris tar wrote before 'x' was standardised.
            b'x' | b'X' => self.pending.pax = PaxHeader::parse(&self.data, data_offset)?,
            b'g' => {
                // Go returns a global header as an entry of its own, which
                // every runtime skips: its records set no defaults, and the
                // extension headers before it are spent.
                check_global(&self.data, data_offset)?;
                self.pending = Pending::default();
            }
            b'L' => self.pending.long_name = Some(long_name(&self.data)),
            _ => self.pending.long_link = Some(long_name(&self.data)),
        }
        Ok(())
    }

    /// Builds the member whose header is in `self.block`, applying the
    /// pending extensions, and moves past its headers (a sparse map
    /// included); returns it with the number of data bytes that follow.
    fn member(&mut self, offset: u64, typeflag: u8) -> Result<(Member, u64), TarError> {
        let at = |p: Problem| p.at(offset);
        let header = Header::new(&self.block);
        let pending = &mut self.pending;
        let pax = &mut pending.pax;

        let stored = match pax.size {
            Some(Some(size)) => size,
            _ => header.size().map_err(at)?,
        };
        // Go takes a GNU long name over PAX `path`, whichever came first.
        let named = nonempty(pending.long_name.take())
            .or_else(|| nonempty(pax.path.take()))
            .unwrap_or_else(|| header.path());
        let kind = kind_of(typeflag, &named);
        // An old GNU sparse member ignores the PAX sparse records.
        let sparse = match typeflag {
            b'S' => None,
            _ => pax.sparse.format(),
        };
        let mut records = std::mem::take(&mut pax.sparse);
        let path = match sparse {
            Some(_) => nonempty(records.name.take()).unwrap_or(named),
            None => named,
        };
        let link_target = match kind {
            MemberKind::Symlink | MemberKind::Hardlink => nonempty(pending.long_link.take())
                .or_else(|| nonempty(pax.linkpath.take()))
                .unwrap_or_else(|| header.linkname().to_vec()),
            _ => Vec::new(),
        };
        let mode = header.mode().map_err(at)?;
        let uid = match pax.uid {
            Some(Some(uid)) => uid,
            _ => header.uid().map_err(at)?,
        };
        let gid = match pax.gid {
            Some(Some(gid)) => gid,
            _ => header.gid().map_err(at)?,
        };
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(Some(time)) => time,
            _ => (header.mtime().map_err(at)?, 0),
        };
        let (dev_major, dev_minor) = match kind {
            MemberKind::CharDevice | MemberKind::BlockDevice => (
                header.dev_major().map_err(at)?,
                header.dev_minor().map_err(at)?,
            ),
            _ => (0, 0),
        };
        let xattrs = std::mem::take(&mut pax.xattrs);
        self.members_seen += 1;
        self.xattr_bytes += xattrs
            .iter()
            .map(|(name, value)| (name.len() + value.len()) as u64)
            .sum::<u64>();
        let budget = XATTR_BUDGET_BASE + XATTR_BUDGET_PER_MEMBER * self.members_seen;
        if self.xattr_bytes > budget {
            return Err(at(Problem::Limit(format!(
                "extended attributes of the first {} members take {} bytes (at most {budget})",
                self.members_seen, self.xattr_bytes
            ))));
        }
        let sparse = sparse.map(|format| (format, records));
        let (data, data_bytes) = layout(
            &mut self.cursor,
            &mut self.scratch,
            &header,
            offset,
            kind,
            stored,
            sparse,
        )?;
        let member = Member {
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
            data,
            header_offset: pending.first_offset.unwrap_or(offset),
        };
        Ok((member, data_bytes))
    }
}

/// Finds where the member's contents lie, reading a sparse map if there is
/// one; returns that and how many stored bytes then remain to skip.
///
/// `stored` is the number of data bytes after the header (PAX `size` if
/// given, else the header's), the figure used to skip, except for the types
/// that never have data.
fn layout(
    cursor: &mut Cursor<'_>,
    scratch: &mut Block,
    header: &Header<'_>,
    offset: u64,
    kind: MemberKind,
    stored: u64,
    sparse: Option<(SparseFormat, PaxSparse)>,
) -> Result<(DataLayout, u64), TarError> {
    let typeflag = header.typeflag();
    let dense = |cursor: &Cursor<'_>, size| DataLayout {
        offset: cursor.pos(),
        size,
        sparse: None,
    };
    if header_only(typeflag, kind) {
        return Ok((dense(cursor, 0), 0));
    }
    if kind != MemberKind::Regular {
        // A GNU dumpdir's data lists names; it is passed over.
        return Ok((dense(cursor, 0), stored));
    }
    let (map, real_size, data_bytes) = match (typeflag, sparse) {
        (b'S', _) => {
            let (map, real_size) = read_old_sparse(header.block(), cursor, scratch, offset)?;
            (map, real_size, stored)
        }
        (_, Some((SparseFormat::Records, records))) => {
            let real_size = records.real_size().unwrap_or(stored);
            (records.into_map(), real_size, stored)
        }
        (_, Some((SparseFormat::DataMap, records))) => {
            let (map, used) = read_pax1_map(cursor, scratch, stored)?;
            // The map fills whole blocks, so the data keeps the padding
            // the member's size implies.
            (map, records.real_size().unwrap_or(stored), stored - used)
        }
        (_, None) => return Ok((dense(cursor, stored), stored)),
    };
    let segments = map
        .finish(real_size, data_bytes)
        .map_err(|p| p.at(offset))?;
    let data = DataLayout {
        offset: cursor.pos(),
        size: real_size,
        sparse: Some(segments),
    };
    Ok((data, data_bytes))
}

/// Whether a member's header is all there is of it, whatever size it
/// declares: Go's reading (`isHeaderOnlyType`), so the next block is the
/// next header. Reading a declared size as data instead would let a layer
/// hide members from layerfs that a runtime extracts.
fn header_only(typeflag: u8, kind: MemberKind) -> bool {
    matches!(typeflag, b'1'..=b'6') || (typeflag == 0 && kind == MemberKind::Directory)
}

/// The member kind a type flag stands for. Unknown types are regular files
/// (POSIX). A v7 regular file (type NUL) whose name ends in '/' is how
/// pre-ustar tars stored directories; Go reads it so, but not a '0' member,
/// which stays a file whatever its name.
fn kind_of(typeflag: u8, path: &[u8]) -> MemberKind {
    match typeflag {
        b'1' => MemberKind::Hardlink,
        b'2' => MemberKind::Symlink,
        b'3' => MemberKind::CharDevice,
        b'4' => MemberKind::BlockDevice,
        b'5' | b'D' => MemberKind::Directory,
        b'6' => MemberKind::Fifo,
        0 if path.last() == Some(&b'/') => MemberKind::Directory,
        _ => MemberKind::Regular,
    }
}

fn nonempty(value: Option<Vec<u8>>) -> Option<Vec<u8>> {
    value.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
