//! `layerfs ls`: the merged tree (each path with the layer that provides
//! it), or one layer as stored (like `tar tvf`), as text or as JSON lines.
//!
//! Both views come from the same index and tree as the mount, so a listing
//! always agrees with what a mount shows. After the merged tree, `--all`
//! adds what each whiteout removed; after a layer's head, `--peek` adds how
//! much of the layer was read.
//!
//! Text shows names through [`Escaped`], so a name cannot forge a line or
//! a column; JSON gives the exact bytes. The long format pads each column
//! to its widest value in the whole listing, as `ls -l` does: the tree and
//! the member list are in memory already, so a first pass measures them
//! and nothing is buffered.

use std::fmt;
use std::io::{self, Write};

use crate::escape::Escaped;
use crate::stack::LayerPeek;
use crate::tar::{LayerIndex, Member, MemberKind};
use crate::tree::{Hidden, Ino, Node, NodeKind, Removal, Tree};

/// How entries are printed.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListFormat {
    /// Mode string, link count, owner, size, mtime and link target, as
    /// `ls -l` shows them.
    pub long: bool,
    /// One JSON object per line, with every field, for scripts.
    pub json: bool,
}

/// What one listed entry says, whether it comes from the tree or a layer.
struct Entry<'a> {
    path: &'a [u8],
    kind: &'static str,
    type_char: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    link: Option<&'a [u8]>,
    /// 1-based layer that provides the entry.
    layer: u32,
    /// The inode and its number of names, for the merged tree (a layer as
    /// stored shows a second name as a hardlink member instead).
    inode: Option<(Ino, u32)>,
}

impl<'a> Entry<'a> {
    fn of_node(tree: &'a Tree, path: &'a [u8], ino: Ino, node: &Node) -> Self {
        let (kind, type_char) = node_kind(node.kind());
        Entry {
            path,
            kind,
            type_char,
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            size: node.size,
            mtime: node.mtime,
            link: tree.symlink_target(ino),
            layer: node.layer() + 1,
            inode: Some((ino, node.nlink)),
        }
    }

    fn of_member(member: &'a Member, layer: u32) -> Self {
        let (kind, type_char) = member_kind(member);
        let link = match member.kind {
            MemberKind::Symlink | MemberKind::Hardlink => Some(member.link_target.as_slice()),
            _ => None,
        };
        Entry {
            path: &member.path,
            kind,
            type_char,
            mode: member.mode,
            uid: member.uid,
            gid: member.gid,
            size: member.data.size,
            mtime: member.mtime,
            link,
            layer,
            inode: None,
        }
    }
}

/// The widths of the long format's padded columns: each that of its
/// widest value in the listing.
#[derive(Clone, Copy, Debug, Default)]
struct Widths {
    links: usize,
    owner: usize,
    size: usize,
    time: usize,
    layer: usize,
}

impl Widths {
    /// Widens the columns to hold `entry`.
    fn fit(&mut self, entry: &Entry<'_>) {
        if let Some((_, nlink)) = entry.inode {
            self.links = self.links.max(text_width(nlink));
        }
        self.owner = self
            .owner
            .max(text_width(format_args!("{}/{}", entry.uid, entry.gid)));
        self.size = self.size.max(text_width(entry.size));
        self.time = self.time.max(text_width(UtcTime(entry.mtime)));
        self.layer = self.layer.max(text_width(entry.layer));
    }
}

/// How many bytes `value` takes when formatted, without allocating.
fn text_width(value: impl fmt::Display) -> usize {
    struct Count(usize);
    impl fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = fmt::Write::write_fmt(&mut count, format_args!("{value}"));
    count.0
}

/// Lists the merged tree depth first, names in byte order.
pub fn list_tree(tree: &Tree, format: ListFormat, out: &mut dyn Write) -> io::Result<()> {
    let mut widths = Widths::default();
    if format.long {
        tree.walk(|path, ino, node| {
            if !path.is_empty() {
                widths.fit(&Entry::of_node(tree, path, ino, node));
            }
            Ok::<(), io::Error>(())
        })?;
    }
    tree.walk(|path, ino, node| {
        if path.is_empty() {
            return Ok(());
        }
        write_entry(&Entry::of_node(tree, path, ino, node), format, &widths, out)
    })
}

/// Lists one layer's members as stored, in archive order: whiteouts,
/// opaque markers and duplicates included.
pub fn list_layer(
    index: &LayerIndex,
    layer: u32,
    format: ListFormat,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut widths = Widths::default();
    if format.long {
        for member in &index.members {
            widths.fit(&Entry::of_member(member, layer));
        }
    }
    for member in &index.members {
        write_entry(&Entry::of_member(member, layer), format, &widths, out)?;
    }
    Ok(())
}

/// Lists what the merge removed, one line per whiteout, opaque marker,
/// opaque directory or tombstone, in the order given (layer, then archive).
pub fn list_removals(
    removals: &[Removal],
    format: ListFormat,
    out: &mut dyn Write,
) -> io::Result<()> {
    let layer_width = removals
        .iter()
        .map(|r| text_width(r.layer + 1))
        .max()
        .unwrap_or(0);
    for removal in removals {
        let kind = removal.kind.name();
        let layer = removal.layer + 1;
        if format.json {
            write!(out, "{{\"path\":")?;
            json_string(&removal.path, out)?;
            write!(out, ",\"type\":\"{kind}\",\"layer\":{layer},\"hides\":[")?;
            for (i, hidden) in removal.hides.iter().enumerate() {
                out.write_all(if i == 0 {
                    b"{\"path\":"
                } else {
                    b",{\"path\":"
                })?;
                json_string(&hidden.path, out)?;
                write!(
                    out,
                    ",\"type\":\"{}\",\"layer\":{},\"entries\":{}}}",
                    node_kind(hidden.kind).0,
                    hidden.layer + 1,
                    hidden.entries
                )?;
            }
            out.write_all(b"]}\n")?;
            continue;
        }
        let path = Escaped(&removal.path);
        if format.long {
            // The kind stands where entries have their mode.
            write!(out, "{kind:<10} {layer:>layer_width$} {path} ")?;
        } else {
            write!(out, "{layer}\t{path}\t{kind}: ")?;
        }
        write_hides(&removal.hides, out)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// `hides a (file, layer 1), b (dir, layer 2, 3 entries)`, or `hides nothing`.
fn write_hides(hides: &[Hidden], out: &mut dyn Write) -> io::Result<()> {
    out.write_all(b"hides ")?;
    if hides.is_empty() {
        return out.write_all(b"nothing");
    }
    for (i, hidden) in hides.iter().enumerate() {
        if i > 0 {
            out.write_all(b", ")?;
        }
        write!(out, "{}", Escaped(&hidden.path))?;
        let (kind, _) = node_kind(hidden.kind);
        let layer = hidden.layer + 1;
        match (hidden.kind, hidden.entries) {
            (NodeKind::Directory, 1) => write!(out, " ({kind}, layer {layer}, 1 entry)")?,
            (NodeKind::Directory, n) => write!(out, " ({kind}, layer {layer}, {n} entries)")?,
            _ => write!(out, " ({kind}, layer {layer})")?,
        }
    }
    Ok(())
}

/// The last line of `--peek`: whether the listing is whole, how many
/// members it has and how much of the layer file was read for it.
pub fn peek_summary(peek: &LayerPeek, format: ListFormat, out: &mut dyn Write) -> io::Result<()> {
    let members = peek.index.members.len();
    let (read, size) = (peek.bytes_read, peek.layer_bytes);
    if format.json {
        writeln!(
            out,
            "{{\"partial\":{},\"members\":{members},\"bytes_read\":{read},\"layer_bytes\":{size}}}",
            !peek.complete
        )
    } else if peek.complete {
        writeln!(out, "complete: {members} members, {read} bytes read")
    } else {
        writeln!(
            out,
            "partial: {members} members from the first {read} of {size} bytes"
        )
    }
}

fn node_kind(kind: NodeKind) -> (&'static str, u8) {
    match kind {
        NodeKind::Directory => ("dir", b'd'),
        NodeKind::File => ("file", b'-'),
        NodeKind::Symlink => ("symlink", b'l'),
        NodeKind::CharDevice => ("char", b'c'),
        NodeKind::BlockDevice => ("block", b'b'),
        NodeKind::Fifo => ("fifo", b'p'),
    }
}

fn member_kind(member: &Member) -> (&'static str, u8) {
    match member.kind {
        MemberKind::Regular => ("file", b'-'),
        MemberKind::Directory => ("dir", b'd'),
        MemberKind::Symlink => ("symlink", b'l'),
        MemberKind::Hardlink => ("hardlink", b'h'),
        MemberKind::CharDevice => ("char", b'c'),
        MemberKind::BlockDevice => ("block", b'b'),
        MemberKind::Fifo => ("fifo", b'p'),
    }
}

fn write_entry(
    entry: &Entry<'_>,
    format: ListFormat,
    widths: &Widths,
    out: &mut dyn Write,
) -> io::Result<()> {
    if format.json {
        return write_json(entry, out);
    }
    let path = Escaped(entry.path);
    if !format.long {
        return writeln!(out, "{}\t{path}", entry.layer);
    }
    write!(
        out,
        "{} ",
        String::from_utf8_lossy(&mode_string(entry.type_char, entry.mode))
    )?;
    if let Some((_, nlink)) = entry.inode {
        write!(out, "{nlink:>0$} ", widths.links)?;
    }
    write!(
        out,
        "{:<owner$} {:>size$} {:>time$} {:>layer$} {path}",
        format!("{}/{}", entry.uid, entry.gid),
        entry.size,
        UtcTime(entry.mtime).to_string(),
        entry.layer,
        owner = widths.owner,
        size = widths.size,
        time = widths.time,
        layer = widths.layer,
    )?;
    match entry.link {
        Some(link) if entry.type_char == b'h' => write!(out, " link to {}", Escaped(link))?,
        Some(link) => write!(out, " -> {}", Escaped(link))?,
        None => {}
    }
    out.write_all(b"\n")
}

fn write_json(entry: &Entry<'_>, out: &mut dyn Write) -> io::Result<()> {
    write!(out, "{{\"path\":")?;
    json_string(entry.path, out)?;
    write!(
        out,
        ",\"type\":\"{}\",\"mode\":\"{:04o}\",\"uid\":{},\"gid\":{},\"size\":{},\"mtime\":{},\"layer\":{}",
        entry.kind, entry.mode, entry.uid, entry.gid, entry.size, entry.mtime, entry.layer
    )?;
    if let Some((ino, nlink)) = entry.inode {
        write!(out, ",\"ino\":{ino},\"nlink\":{nlink}")?;
    }
    if let Some(link) = entry.link {
        write!(out, ",\"link\":")?;
        json_string(link, out)?;
    }
    out.write_all(b"}\n")
}

/// A JSON string of raw name bytes. Valid UTF-8 is written as is (escaped);
/// each byte of an invalid sequence becomes U+DC80+byte, the "surrogate
/// escape" Python uses for undecodable file names, so no name is lost or
/// confused with another.
pub(crate) fn json_string(bytes: &[u8], out: &mut dyn Write) -> io::Result<()> {
    out.write_all(b"\"")?;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.write_all(b"\\\"")?,
                '\\' => out.write_all(b"\\\\")?,
                '\n' => out.write_all(b"\\n")?,
                '\t' => out.write_all(b"\\t")?,
                c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
                c => write!(out, "{c}")?,
            }
        }
        for &b in chunk.invalid() {
            write!(out, "\\u{:04x}", 0xdc00 + u32::from(b))?;
        }
    }
    out.write_all(b"\"")
}

/// `drwxr-xr-x`, with setuid, setgid and sticky shown as `ls` shows them.
fn mode_string(type_char: u8, mode: u32) -> [u8; 10] {
    let mut s = [b'-'; 10];
    s[0] = type_char;
    for (i, (bit, ch)) in [
        (0o400, b'r'),
        (0o200, b'w'),
        (0o100, b'x'),
        (0o040, b'r'),
        (0o020, b'w'),
        (0o010, b'x'),
        (0o004, b'r'),
        (0o002, b'w'),
        (0o001, b'x'),
    ]
    .into_iter()
    .enumerate()
    {
        if mode & bit != 0 {
            s[i + 1] = ch;
        }
    }
    for (special, at, set_exec, set_noexec) in [
        (0o4000, 3, b's', b'S'),
        (0o2000, 6, b's', b'S'),
        (0o1000, 9, b't', b'T'),
    ] {
        if mode & special != 0 {
            s[at] = if s[at] == b'x' { set_exec } else { set_noexec };
        }
    }
    s
}

/// Seconds since the epoch, shown as `YYYY-MM-DD HH:MM` in UTC.
struct UtcTime(i64);

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0;
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        // Days to civil date (proleptic Gregorian), after Howard Hinnant.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}",
            of_day / 3600,
            of_day % 3600 / 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_show_special_bits_like_ls() {
        assert_eq!(&mode_string(b'd', 0o755), b"drwxr-xr-x");
        assert_eq!(&mode_string(b'-', 0o4755), b"-rwsr-xr-x");
        assert_eq!(&mode_string(b'-', 0o2644), b"-rw-r-Sr--");
        assert_eq!(&mode_string(b'd', 0o1777), b"drwxrwxrwt");
        assert_eq!(&mode_string(b'd', 0o1770), b"drwxrwx--T");
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        let shown = |secs| UtcTime(secs).to_string();
        assert_eq!(shown(0), "1970-01-01 00:00");
        assert_eq!(shown(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(shown(951_782_400), "2000-02-29 00:00");
        assert_eq!(shown(-1), "1969-12-31 23:59");
        // Times no calendar tool shows still have a width to pad to.
        assert_eq!(shown(i64::MAX).len(), text_width(UtcTime(i64::MAX)));
        assert!(shown(i64::MIN).starts_with('-'));
    }

    #[test]
    fn json_strings_escape_and_keep_undecodable_bytes() {
        let mut out = Vec::new();
        json_string(b"a\"b\\c\nd\x01caf\xe9", &mut out).expect("write");
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#""a\"b\\c\nd\u0001caf\udce9""#
        );
    }
}
