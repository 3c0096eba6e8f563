//! Tar layers written block by block, for the cases a tar library will not
//! write: headers that declare sizes their type never has, extension
//! headers in odd orders, text where numbers belong. The cases on which
//! tar readers disagree live here too, so that the Go-reading tests and
//! the fuzz seeds use the same bytes.

pub const BLOCK: usize = 512;

/// One header block: ustar magic unless `gnu`, then the checksum.
pub fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8], gnu: bool) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    if typeflag == b'2' {
        // What every writer records for a symlink, and what lstat shows.
        octal(&mut h[100..108], 0o777);
    }
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    let magic: &[u8] = if gnu { b"ustar  \0" } else { b"ustar\x0000" };
    h[257..265].copy_from_slice(magic);
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    h
}

pub fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// Writes the checksum of a finished header.
fn seal(mut h: [u8; BLOCK]) -> [u8; BLOCK] {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// An archive being written block by block.
#[derive(Default)]
pub struct Raw(Vec<u8>);

impl Raw {
    /// A header, then `data` padded to whole blocks.
    pub fn put(&mut self, header: [u8; BLOCK], data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&seal(header));
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(BLOCK), 0);
        self
    }

    pub fn file(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        self.put(header(name, b'0', data.len() as u64, b"", false), data)
    }

    /// An extension header ('x', 'g', 'L', 'K') holding `data`.
    pub fn ext(&mut self, typeflag: u8, data: &[u8]) -> &mut Self {
        let name: &[u8] = if typeflag == b'L' || typeflag == b'K' {
            b"././@LongLink"
        } else {
            b"PaxHeaders/x"
        };
        self.put(header(name, typeflag, data.len() as u64, b"", true), data)
    }

    pub fn pax(&mut self, typeflag: u8, records: &[(&str, &str)]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = format!(" {key}={value}\n");
            let mut len = body.len() + 1;
            while format!("{len}").len() + body.len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        self.ext(typeflag, &data)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.0);
        bytes.extend_from_slice(&[0; 2 * BLOCK]);
        bytes
    }
}

/// Every case below, named: the fuzz seeds of the tar index.
pub fn disagreements() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("header-only", header_only_with_sizes()),
        ("extensions", extension_orders()),
        ("globals", global_headers()),
        ("names", slashes_and_gnu_prefixes()),
        ("numbers", devices_and_padded_numbers()),
    ]
}

/// The security review's reproduction, for every type Go reads as
/// header-only: a declared size of one block, then the member that a
/// reader skipping that block as data would never see; and a size given
/// by PAX on a symlink.
pub fn header_only_with_sizes() -> Vec<u8> {
    let mut raw = Raw::default();
    raw.file(b"target", b"t");
    let decoys: [(&[u8], u8); 5] = [
        (b"hardlink", b'1'),
        (b"symlink", b'2'),
        (b"chardev", b'3'),
        (b"blockdev", b'4'),
        (b"fifo", b'6'),
    ];
    for (name, typeflag) in decoys {
        let mut decoy = header(name, typeflag, 512, b"target", false);
        // Device 1:3, not 0:0, which is an overlayfs whiteout to layerfs.
        octal(&mut decoy[329..337], 1);
        octal(&mut decoy[337..345], 3);
        raw.put(decoy, b"");
        raw.file(
            format!("hidden-after-{}", typeflag as char).as_bytes(),
            b"!",
        );
    }
    raw.pax(b'x', &[("size", "1024")])
        .put(header(b"pax-sized-link", b'2', 0, b"target", false), b"")
        .file(b"hidden-after-pax", b"!")
        .file(b"hidden-after-pax-2", b"!");
    raw.finish()
}

/// Two PAX headers in a row (only the second applies), and a GNU long
/// name or link beside PAX `path`/`linkpath` in either order (GNU wins).
pub fn extension_orders() -> Vec<u8> {
    let mut raw = Raw::default();
    raw.pax(b'x', &[("path", "first-pax-name"), ("uid", "5")])
        .pax(b'x', &[("gid", "6")])
        .file(b"header-name", b"1");
    raw.pax(b'x', &[("path", "pax-name-a")])
        .ext(b'L', b"gnu-name-a\0")
        .put(header(b"short-a", b'0', 1, b"", true), b"2");
    raw.ext(b'L', b"gnu-name-b\0")
        .pax(b'x', &[("path", "pax-name-b"), ("linkpath", "pax-target")])
        .ext(b'K', b"gnu-name-a\0")
        .put(header(b"short-b", b'2', 0, b"x", true), b"");
    raw.finish()
}

/// Global headers with defaults Go never applies, one of them after an
/// 'x' and an 'L' that it spends. Members: `after-global` and `own-name`.
pub fn global_headers() -> Vec<u8> {
    let mut raw = Raw::default();
    raw.pax(
        b'g',
        &[("uid", "77"), ("mtime", "86400"), ("path", "renamed")],
    )
    .file(b"after-global", b"1");
    raw.pax(b'x', &[("path", "spent-pax-name")])
        .ext(b'L', b"spent-gnu-name\0")
        .pax(b'g', &[("comment", "between")])
        .file(b"own-name", b"2");
    raw.finish()
}

/// A '0' member named with a slash (a file with its data), a v7 regular
/// file so named (a directory), and GNU headers whose access time holds
/// text (a prefix to Go, as its writer put one there before Go 1.8) or a
/// number (a time).
pub fn slashes_and_gnu_prefixes() -> Vec<u8> {
    let mut raw = Raw::default();
    raw.put(header(b"slashed-file/", b'0', 4, b"", false), b"data");
    raw.put(header(b"pre/", 0, 0, b"", false), b"");
    raw.put(header(b"pre/x/", b'5', 0, b"", false), b"");
    let mut gnu = header(b"name", b'0', 1, b"", true);
    gnu[345..350].copy_from_slice(b"pre/x");
    raw.put(gnu, b"3");
    let mut gnu = header(b"plain-gnu", b'0', 1, b"", true);
    octal(&mut gnu[345..357], 1_700_000_000);
    raw.put(gnu, b"4");
    raw.finish()
}

/// A device whose PAX `SCHILY.devmajor` Go does not apply, and a size
/// field with leading NULs, which Go drops (reading it as 0 would take the
/// data for headers).
pub fn devices_and_padded_numbers() -> Vec<u8> {
    let mut raw = Raw::default();
    let mut dev = header(b"null", b'3', 0, b"", false);
    octal(&mut dev[329..337], 1);
    octal(&mut dev[337..345], 3);
    raw.pax(b'x', &[("SCHILY.devmajor", "8"), ("SCHILY.devminor", "9")])
        .put(dev, b"");
    let mut padded = header(b"padded-size", b'0', 0, b"", false);
    padded[124..136].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, b'5', 0, 0, 0]);
    raw.put(padded, b"fifth");
    raw.file(b"after", b"!");
    raw.finish()
}
