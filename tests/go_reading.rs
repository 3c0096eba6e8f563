//! Layers on which tar readers disagree, built byte by byte, read the way
//! Go's `archive/tar` reads them: the runtimes (containerd, Docker, podman,
//! umoci) unpack layers with it, so what a container gets is the tree
//! layerfs must show. umoci's unpack of each layer is the reference.
//! Fails (rather than skips) when umoci is missing: CI installs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::oci::{manifest_descriptor, sha256, Layout, REF_NAME};
use common::tree::{snapshot, Fields, Mtime};
use common::{assert_tree, Expected, Mount};

const BLOCK: usize = 512;

/// One header block: ustar magic unless `gnu`, then the checksum.
fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8], gnu: bool) -> [u8; BLOCK] {
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

fn octal(field: &mut [u8], value: u64) {
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
struct Raw(Vec<u8>);

impl Raw {
    /// A header, then `data` padded to whole blocks.
    fn put(&mut self, header: [u8; BLOCK], data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&seal(header));
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(BLOCK), 0);
        self
    }

    fn file(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        self.put(header(name, b'0', data.len() as u64, b"", false), data)
    }

    /// An extension header ('x', 'g', 'L', 'K') holding `data`.
    fn ext(&mut self, typeflag: u8, data: &[u8]) -> &mut Self {
        let name: &[u8] = if typeflag == b'L' || typeflag == b'K' {
            b"././@LongLink"
        } else {
            b"PaxHeaders/x"
        };
        self.put(header(name, typeflag, data.len() as u64, b"", true), data)
    }

    fn pax(&mut self, typeflag: u8, records: &[(&str, &str)]) -> &mut Self {
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

    fn finish(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.0);
        bytes.extend_from_slice(&[0; 2 * BLOCK]);
        bytes
    }
}

/// Mounts `layer` and compares it with umoci's unpack of an image made of
/// it alone.
fn assert_reads_as_umoci(name: &str, layer: &[u8]) {
    let work = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(&work.path().join("image"));
    let (digest, size) = layout.blob(layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
    });
    let media = "application/vnd.oci.image.layer.v1.tar".to_string();
    let (manifest, manifest_size) = layout.image_manifest(&config, &[(media, digest, size)]);
    layout.index(serde_json::json!([manifest_descriptor(
        &manifest,
        manifest_size,
        serde_json::json!({"annotations": {REF_NAME: "t"}}),
    )]));
    let bundle = work.path().join("bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:t", layout.dir.display()))
        .arg(&bundle)
        .output()
        .expect("run umoci (CI installs it)");
    assert!(
        out.status.success(),
        "{name}: umoci unpack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = snapshot(&bundle.join("rootfs"));
    let path: PathBuf = work.path().join(format!("{name}.tar"));
    std::fs::write(&path, layer).expect("write layer");
    let mount = Mount::new(&[path]);
    let fields = Fields {
        xattrs: false,
        mtime: Mtime::Seconds,
    };
    assert_tree(mount.path(), &Expected::from_snapshot(&reference, fields));
}

#[test]
fn header_only_types_hide_nothing_whatever_size_they_declare() {
    // The security review's reproduction, for every type Go reads as
    // header-only: a declared size of one block, then the member that a
    // reader skipping that block as data would never see.
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
    // A size given by PAX is no data either.
    raw.pax(b'x', &[("size", "1024")])
        .put(header(b"pax-sized-link", b'2', 0, b"target", false), b"")
        .file(b"hidden-after-pax", b"!")
        .file(b"hidden-after-pax-2", b"!");
    assert_reads_as_umoci("header-only", &raw.finish());
}

#[test]
fn the_last_extension_header_applies_and_gnu_long_names_win() {
    let mut raw = Raw::default();
    // Two PAX headers in a row: only the second applies.
    raw.pax(b'x', &[("path", "first-pax-name"), ("uid", "5")])
        .pax(b'x', &[("gid", "6")])
        .file(b"header-name", b"1");
    // A GNU long name wins over PAX `path`, in either order.
    raw.pax(b'x', &[("path", "pax-name-a")])
        .ext(b'L', b"gnu-name-a\0")
        .put(header(b"short-a", b'0', 1, b"", true), b"2");
    raw.ext(b'L', b"gnu-name-b\0")
        .pax(b'x', &[("path", "pax-name-b"), ("linkpath", "pax-target")])
        .ext(b'K', b"gnu-name-a\0")
        .put(header(b"short-b", b'2', 0, b"x", true), b"");
    assert_reads_as_umoci("extensions", &raw.finish());
}

#[test]
fn global_headers_change_nothing_and_spend_what_came_before() {
    // umoci refuses a layer with a global header ("unknown typeflag"), so
    // the reference here is containerd's and Docker's reading: Go hands
    // the header out as an entry, which they skip.
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
    let work = tempfile::tempdir().expect("tempdir");
    let path = work.path().join("globals.tar");
    std::fs::write(&path, raw.finish()).expect("write layer");
    let expected = Expected::new()
        .file("after-global", "1")
        .owner(0, 0)
        .mtime(1_700_000_000)
        .file("own-name", "2")
        .owner(0, 0)
        .mtime(1_700_000_000);
    assert_tree(Mount::new(&[path]).path(), &expected);
}

#[test]
fn names_ending_in_a_slash_and_misplaced_gnu_prefixes() {
    let mut raw = Raw::default();
    // A '0' member named with a slash is a file with its data.
    raw.put(header(b"slashed-file/", b'0', 4, b"", false), b"data");
    // A v7-style regular file (type NUL) so named is a directory.
    raw.put(header(b"pre/", 0, 0, b"", false), b"");
    // A GNU header whose atime holds text: Go reads it as a prefix, as
    // its writer put one there before Go 1.8.
    raw.put(header(b"pre/x/", b'5', 0, b"", false), b"");
    let mut gnu = header(b"name", b'0', 1, b"", true);
    gnu[345..350].copy_from_slice(b"pre/x");
    raw.put(gnu, b"3");
    // Numeric times are times, not a prefix.
    let mut gnu = header(b"plain-gnu", b'0', 1, b"", true);
    octal(&mut gnu[345..357], 1_700_000_000);
    raw.put(gnu, b"4");
    assert_reads_as_umoci("names", &raw.finish());
}

#[test]
fn device_numbers_come_from_the_header_and_size_fields_read_as_go_reads_them() {
    let mut raw = Raw::default();
    // Go applies no SCHILY.devmajor: the header's numbers stand.
    let mut dev = header(b"null", b'3', 0, b"", false);
    octal(&mut dev[329..337], 1);
    octal(&mut dev[337..345], 3);
    raw.pax(b'x', &[("SCHILY.devmajor", "8"), ("SCHILY.devminor", "9")])
        .put(dev, b"");
    // A size field with leading NULs: Go drops them and reads 5; reading
    // it as 0 would take the data for headers.
    let mut padded = header(b"padded-size", b'0', 0, b"", false);
    padded[124..136].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, b'5', 0, 0, 0]);
    raw.put(padded, b"fifth");
    raw.file(b"after", b"!");
    assert_reads_as_umoci("numbers", &raw.finish());
}

/// The reference tool must be there: a missing umoci fails loudly.
#[test]
fn umoci_is_installed() {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| Path::new(&p).join("umoci").exists()))
        .unwrap_or(false);
    assert!(found, "umoci is not on PATH (CI installs it)");
}
