//! The fixed 512-byte header block: where each field lives in each dialect,
//! the checksum, and field decoding.
//!
//! Only this file knows byte positions. Fields that a dialect does not have
//! (the ustar prefix in a GNU header, user names in a v7 header) read as
//! empty, so callers never need to ask which dialect they hold.

use std::ops::Range;

use super::error::Problem;
use super::number::{format_field, parse_field, MAX_SIZE};

/// Size of every tar block.
pub(super) const BLOCK: usize = 512;

/// One header block.
pub(super) type Block = [u8; BLOCK];

const NAME: Range<usize> = 0..100;
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const SIZE: Range<usize> = 124..136;
const MTIME: Range<usize> = 136..148;
const CHKSUM: Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const LINKNAME: Range<usize> = 157..257;
const MAGIC: Range<usize> = 257..265;
// 265..329: user and group names. Nothing in layerfs shows them (owners
// are numeric everywhere, as the kernel sees them), so they are not read.
const DEVMAJOR: Range<usize> = 329..337;
const DEVMINOR: Range<usize> = 337..345;
const PREFIX: Range<usize> = 345..500;
/// star shortens the prefix to make room for atime/ctime, and says so with
/// a trailer at the end of the block.
const STAR_PREFIX: Range<usize> = 345..476;
const STAR_TRAILER: Range<usize> = 508..512;
/// Old GNU headers keep access and change times where ustar has the
/// start of its prefix.
const GNU_ATIME: Range<usize> = 345..357;
const GNU_CTIME: Range<usize> = 357..369;

/// Which header layout a block uses, told apart by its magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    /// Unix v7: no magic, no user names, no device numbers, no prefix.
    V7,
    /// POSIX ustar (and pax, which is ustar plus extension headers).
    Ustar,
    /// ustar written by star, whose prefix is 131 bytes.
    Star,
    /// Old GNU: user names and devices like ustar, but no prefix (the space
    /// holds times and the old sparse map).
    Gnu,
}

/// A header block that passed its checksum, viewed field by field.
pub(super) struct Header<'a> {
    block: &'a Block,
    dialect: Dialect,
}

/// The bytes of `range`, or nothing (ranges are constants within the block).
fn field(block: &Block, range: Range<usize>) -> &[u8] {
    block.get(range).unwrap_or_default()
}

/// A fixed text field up to its NUL terminator (the whole field if full).
pub(super) fn text(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => bytes.get(..end).unwrap_or_default(),
        None => bytes,
    }
}

/// Whether a block is all zeros: the end-of-archive marker.
pub(super) fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Whether the stored checksum matches the block.
///
/// The sum is taken with the checksum field read as spaces. Both the
/// unsigned sum (POSIX) and the signed-char sum (old Sun and BSD tars, which
/// summed `char`) are accepted.
pub(super) fn checksum_ok(block: &Block) -> bool {
    let Some(stored) = parse_field(field(block, CHKSUM)) else {
        return false;
    };
    // Whole-block sums vectorise; the checksum field's own bytes are then
    // swapped for the eight spaces it counts as.
    let spaces = 8 * i64::from(b' ');
    let chksum = field(block, CHKSUM);
    let unsigned = |bytes: &[u8]| bytes.iter().map(|&b| i64::from(b)).sum::<i64>();
    if stored == i128::from(unsigned(block) - unsigned(chksum) + spaces) {
        return true;
    }
    let signed = |bytes: &[u8]| bytes.iter().map(|&b| i64::from(b as i8)).sum::<i64>();
    stored == i128::from(signed(block) - signed(chksum) + spaces)
}

/// Field lengths a writer must respect: text longer than its field does not
/// fit and needs an extension record.
pub(super) const NAME_LEN: usize = NAME.end - NAME.start;
/// Length of the ustar prefix field.
pub(super) const PREFIX_LEN: usize = PREFIX.end - PREFIX.start;
/// Length of the link name field.
pub(super) const LINKNAME_LEN: usize = LINKNAME.end - LINKNAME.start;
/// Length of the uid and gid fields.
pub(super) const ID_LEN: usize = UID.end - UID.start;
/// Length of the size and mtime fields.
pub(super) const SIZE_LEN: usize = SIZE.end - SIZE.start;

/// What a writer puts in a ustar header. Text longer than its field is cut
/// (the writer puts the whole value in a PAX record first); numbers too big
/// for octal are written base-256.
pub(super) struct UstarFields<'a> {
    pub name: &'a [u8],
    pub prefix: &'a [u8],
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub typeflag: u8,
    pub linkname: &'a [u8],
    pub devmajor: u32,
    pub devminor: u32,
}

/// Encodes a POSIX ustar header block, checksum included.
pub(super) fn encode_ustar(fields: &UstarFields<'_>) -> Block {
    let mut block = [0u8; BLOCK];
    let mut put_text = |range: Range<usize>, text: &[u8]| {
        if let Some(dst) = block.get_mut(range) {
            let n = text.len().min(dst.len());
            dst[..n].copy_from_slice(&text[..n]);
        }
    };
    put_text(NAME, fields.name);
    put_text(LINKNAME, fields.linkname);
    put_text(MAGIC, b"ustar\x0000");
    put_text(PREFIX, fields.prefix);
    for (range, value) in [
        (MODE, u64::from(fields.mode & 0o7777)),
        (UID, fields.uid),
        (GID, fields.gid),
        (SIZE, fields.size),
        (MTIME, fields.mtime),
        (DEVMAJOR, u64::from(fields.devmajor)),
        (DEVMINOR, u64::from(fields.devminor)),
    ] {
        if let Some(dst) = block.get_mut(range) {
            format_field(value, dst);
        }
    }
    block[TYPEFLAG] = fields.typeflag;
    // The checksum is summed with its own field as spaces, then stored as
    // six octal digits, NUL, space (what GNU tar writes).
    if let Some(chksum) = block.get_mut(CHKSUM) {
        chksum.fill(b' ');
    }
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    if let Some(chksum) = block.get_mut(CHKSUM) {
        let digits = format!("{sum:06o}\0 ");
        chksum.copy_from_slice(digits.as_bytes());
    }
    block
}

impl<'a> Header<'a> {
    /// Views a block whose checksum was verified.
    pub(super) fn new(block: &'a Block) -> Header<'a> {
        let magic = field(block, MAGIC);
        let dialect = if magic == b"ustar  \0" {
            Dialect::Gnu
        } else if magic.starts_with(b"ustar\0") {
            if field(block, STAR_TRAILER) == b"tar\0" {
                Dialect::Star
            } else {
                Dialect::Ustar
            }
        } else {
            Dialect::V7
        };
        Header { block, dialect }
    }

    /// The header layout.
    #[cfg(test)]
    pub(super) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The raw block, for dialect-specific areas parsed elsewhere.
    pub(super) fn block(&self) -> &'a Block {
        self.block
    }

    /// The type flag byte.
    pub(super) fn typeflag(&self) -> u8 {
        self.block.get(TYPEFLAG).copied().unwrap_or(0)
    }

    /// The path the header alone gives: ustar `prefix/name`, or just `name`.
    pub(super) fn path(&self) -> Vec<u8> {
        let name = text(field(self.block, NAME));
        let prefix = match self.dialect {
            Dialect::Ustar => text(field(self.block, PREFIX)),
            Dialect::Star => text(field(self.block, STAR_PREFIX)),
            Dialect::Gnu => self.misplaced_prefix(),
            Dialect::V7 => &[],
        };
        if prefix.is_empty() {
            return name.to_vec();
        }
        let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
        path.extend_from_slice(prefix);
        path.push(b'/');
        path.extend_from_slice(name);
        path
    }

    /// The ustar prefix that Go before 1.8 wrote into GNU headers, where
    /// the access and change times belong. Go's reader still takes it as a
    /// prefix when either time field is not a number and the text is
    /// ASCII, and the runtimes read layers with Go's reader, so a name
    /// placed there is the name they extract.
    fn misplaced_prefix(&self) -> &'a [u8] {
        let not_a_time = |range: Range<usize>| {
            let time = field(self.block, range);
            time.first().is_some_and(|&b| b != 0) && parse_field(time).is_none()
        };
        if !not_a_time(GNU_ATIME) && !not_a_time(GNU_CTIME) {
            return &[];
        }
        let prefix = text(field(self.block, PREFIX));
        if prefix.is_ascii() {
            prefix
        } else {
            &[]
        }
    }

    /// The link target field.
    pub(super) fn linkname(&self) -> &'a [u8] {
        text(field(self.block, LINKNAME))
    }

    /// Permission bits including setuid, setgid and sticky.
    pub(super) fn mode(&self) -> Result<u32, Problem> {
        let mode = self.number(MODE, "mode")?;
        u32::try_from(mode & 0o7777).map_err(|_| bad("mode"))
    }

    /// The owner's numeric user id.
    pub(super) fn uid(&self) -> Result<u32, Problem> {
        self.id(UID, "uid")
    }

    /// The owner's numeric group id.
    pub(super) fn gid(&self) -> Result<u32, Problem> {
        self.id(GID, "gid")
    }

    /// Number of data bytes stored after the header.
    pub(super) fn size(&self) -> Result<u64, Problem> {
        let size = self.number(SIZE, "size")?;
        u64::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_SIZE)
            .ok_or(bad("size"))
    }

    /// Modification time in seconds since the epoch; may be negative.
    pub(super) fn mtime(&self) -> Result<i64, Problem> {
        let mtime = parse_field(field(self.block, MTIME)).ok_or(bad("mtime"))?;
        i64::try_from(mtime).map_err(|_| bad("mtime"))
    }

    /// Device major number (0 in v7 headers, which have none).
    pub(super) fn dev_major(&self) -> Result<u32, Problem> {
        self.device(DEVMAJOR, "devmajor")
    }

    /// Device minor number (0 in v7 headers).
    pub(super) fn dev_minor(&self) -> Result<u32, Problem> {
        self.device(DEVMINOR, "devminor")
    }

    fn device(&self, range: Range<usize>, name: &'static str) -> Result<u32, Problem> {
        match self.dialect {
            Dialect::V7 => Ok(0),
            _ => self.id(range, name),
        }
    }

    /// A non-negative field that must fit 32 bits.
    fn id(&self, range: Range<usize>, name: &'static str) -> Result<u32, Problem> {
        let value = self.number(range, name)?;
        u32::try_from(value).map_err(|_| bad(name))
    }

    /// A field that must not be negative.
    fn number(&self, range: Range<usize>, name: &'static str) -> Result<i128, Problem> {
        parse_field(field(self.block, range))
            .filter(|&v| v >= 0)
            .ok_or(bad(name))
    }
}

fn bad(field: &'static str) -> Problem {
    Problem::BadNumber { field }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::testutil::{header, seal, set, set_octal, Kind};

    #[test]
    fn checksum_accepts_unsigned_and_signed_sums_only() {
        let mut block = header(Kind::Ustar, b"caf\xc3\xa9\xff", b'0', 0);
        assert!(checksum_ok(&block));
        // The signed-char sum, as old tars computed it for high bytes.
        let signed: i64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if CHKSUM.contains(&i) {
                    32
                } else {
                    i64::from(b as i8)
                }
            })
            .sum();
        set(&mut block, CHKSUM, format!("{signed:06o}\0 ").as_bytes());
        assert!(checksum_ok(&block));
        set(&mut block, CHKSUM, b"0000000\0");
        assert!(!checksum_ok(&block));
        set(&mut block, CHKSUM, b"garbage!");
        assert!(!checksum_ok(&block));
        // Checksum written without terminator, and with leading spaces.
        seal(&mut block);
        let sum: u32 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if CHKSUM.contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        set(&mut block, CHKSUM, format!("{sum:08o}").as_bytes());
        assert!(checksum_ok(&block));
        set(&mut block, CHKSUM, format!("  {sum:o}\0").as_bytes());
        assert!(checksum_ok(&block));
    }

    #[test]
    fn dialects_are_told_apart_by_magic() {
        let mut block = header(Kind::Ustar, b"name", b'0', 0);
        set(&mut block, PREFIX, b"some/prefix");
        assert_eq!(Header::new(&block).dialect(), Dialect::Ustar);
        assert_eq!(Header::new(&block).path(), b"some/prefix/name");

        // GNU: the same bytes are atime/ctime, not a prefix...
        let mut gnu = header(Kind::Gnu, b"name", b'0', 0);
        set(&mut gnu, GNU_ATIME, b"14567123456\0");
        set(&mut gnu, GNU_CTIME, b"14567123457\0");
        set(&mut gnu, 369..380, b"unused text");
        assert_eq!(Header::new(&gnu).dialect(), Dialect::Gnu);
        assert_eq!(Header::new(&gnu).path(), b"name");
        // ...unless a time is no number: then, as Go reads the headers its
        // writer put a prefix in before Go 1.8, an ASCII text there is one.
        let mut buggy = header(Kind::Gnu, b"name", b'0', 0);
        set(&mut buggy, GNU_ATIME, b"some/prefix");
        assert_eq!(Header::new(&buggy).path(), b"some/prefix/name");
        let mut buggy = header(Kind::Gnu, b"name", b'0', 0);
        set(&mut buggy, GNU_ATIME, b"1234\0");
        set(&mut buggy, GNU_CTIME, b"not a time");
        assert_eq!(Header::new(&buggy).path(), b"1234/name");
        // A non-ASCII text is no prefix.
        let mut buggy = header(Kind::Gnu, b"name", b'0', 0);
        set(&mut buggy, PREFIX, b"caf\xc3\xa9/x");
        assert_eq!(Header::new(&buggy).path(), b"name");

        // star: 131-byte prefix followed by atime; "tar\0" trailer.
        let mut star = header(Kind::Ustar, b"n", b'0', 0);
        set(&mut star, STAR_PREFIX, &[b'p'; 131]);
        set(&mut star, 476..488, b"14567123456\0");
        set(&mut star, STAR_TRAILER, b"tar\0");
        assert_eq!(Header::new(&star).dialect(), Dialect::Star);
        let mut expected = vec![b'p'; 131];
        expected.extend_from_slice(b"/n");
        assert_eq!(Header::new(&star).path(), expected);

        // v7: no magic; devices read as absent.
        let mut v7 = header(Kind::V7, b"file", b'0', 0);
        set(&mut v7, DEVMAJOR, b"junk");
        let h = Header::new(&v7);
        assert_eq!(h.dialect(), Dialect::V7);
        assert_eq!(h.dev_major().ok(), Some(0));
    }

    #[test]
    fn full_width_text_fields_have_no_terminator() {
        let name = [b'a'; 100];
        let mut block = header(Kind::Ustar, &name, b'0', 0);
        set(&mut block, PREFIX, &[b'b'; 155]);
        let path = Header::new(&block).path();
        assert_eq!(path.len(), 256);
        assert_eq!(path.get(155), Some(&b'/'));
    }

    #[test]
    fn numeric_fields_are_range_checked() {
        let mut block = header(Kind::Gnu, b"f", b'0', 0);
        set_octal(&mut block, MODE, 0o104755);
        set(&mut block, UID, b"  1750 \0");
        set(&mut block, GID, b"\0\0\0\0\0\0\0\0");
        set(&mut block, MTIME, &[0xff; 12]);
        let h = Header::new(&block);
        assert_eq!(h.mode().ok(), Some(0o4755));
        assert_eq!(h.uid().ok(), Some(0o1750));
        assert_eq!(h.gid().ok(), Some(0));
        assert_eq!(h.mtime().ok(), Some(-1));

        let mut huge = [0u8; 12];
        huge[0] = 0x80;
        huge[4..].copy_from_slice(&(MAX_SIZE + 1).to_be_bytes());
        set(&mut block, SIZE, &huge);
        assert!(matches!(
            Header::new(&block).size(),
            Err(Problem::BadNumber { field: "size" })
        ));
        huge[4..].copy_from_slice(&MAX_SIZE.to_be_bytes());
        set(&mut block, SIZE, &huge);
        assert_eq!(Header::new(&block).size().ok(), Some(MAX_SIZE));
        set(&mut block, SIZE, &[0xff; 12]);
        assert!(matches!(
            Header::new(&block).size(),
            Err(Problem::BadNumber { field: "size" })
        ));

        set(&mut block, UID, &[0xff; 8]);
        assert!(matches!(
            Header::new(&block).uid(),
            Err(Problem::BadNumber { field: "uid" })
        ));
        set(&mut block, GID, b"7777777x");
        assert!(matches!(
            Header::new(&block).gid(),
            Err(Problem::BadNumber { field: "gid" })
        ));
        let mut big_gid = [0u8; 8];
        big_gid[0] = 0x80;
        big_gid[3..].copy_from_slice(&[1, 0, 0, 0, 0]);
        set(&mut block, GID, &big_gid);
        assert!(matches!(
            Header::new(&block).gid(),
            Err(Problem::BadNumber { field: "gid" })
        ));
        set(&mut block, MTIME, b"1x");
        assert!(matches!(
            Header::new(&block).mtime(),
            Err(Problem::BadNumber { field: "mtime" })
        ));
    }
}
