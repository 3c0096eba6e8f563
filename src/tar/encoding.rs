//! The encodings libarchive uses in `LIBARCHIVE.xattr.NAME=VALUE` records:
//! the name percent-encoded, the value base64, so both survive any bytes.

/// Decodes `%XX` escapes; every other byte stands for itself.
pub(super) fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = hex(*bytes.next()?)?;
            let lo = hex(*bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes standard base64, with or without `=` padding (libarchive writes
/// none).
pub(super) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let unpadded = match text.iter().rposition(|&b| b != b'=') {
        Some(last) => text.get(..=last)?,
        None => &[],
    };
    if text.len() - unpadded.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() / 4 * 3 + 2);
    for chunk in unpadded.chunks(4) {
        let mut group = 0u32;
        for &c in chunk {
            group = group << 6 | u32::from(sextet(c)?);
        }
        let bytes = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        group <<= 6 * (4 - chunk.len() as u32);
        out.extend_from_slice(group.to_be_bytes().get(1..1 + bytes)?);
    }
    Some(out)
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode_to_any_byte() {
        assert_eq!(
            percent_decode(b"user.a%3Db%00c%ff").as_deref(),
            Some(&b"user.a=b\0c\xff"[..])
        );
        assert_eq!(percent_decode(b"plain").as_deref(), Some(&b"plain"[..]));
        assert_eq!(percent_decode(b"bad%4"), None);
        assert_eq!(percent_decode(b"bad%zz"), None);
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"AA", b"\0"),
            (b"AA==", b"\0"),
            (b"Zm9v", b"foo"),
            (b"Zm9vYg", b"foob"),
            (b"Zm9vYmE=", b"fooba"),
            (b"AQIDBP8A", b"\x01\x02\x03\x04\xff\x00"),
            (b"+/+/", b"\xfb\xff\xbf"),
        ];
        for (text, bytes) in cases {
            assert_eq!(base64_decode(text).as_deref(), Some(*bytes), "{text:?}");
        }
        for bad in [&b"A"[..], b"Zm9vY", b"Zm!v", b"Zm9v===", b"Z=m9"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }
}
