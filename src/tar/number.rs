//! Numbers as tar writes them: octal or base-256 header fields, decimal PAX
//! values.
//!
//! Writers disagree on padding and terminators, so the header parsers accept
//! every variant seen in the wild and reject only what cannot be a number.

/// Largest size accepted for member data or a sparse file's real size.
///
/// No real file comes close; the bound keeps every offset sum far from
/// `u64` overflow.
pub(super) const MAX_SIZE: u64 = 1 << 62;

/// Parses a numeric header field exactly as Go's `archive/tar` does,
/// because the runtimes that unpack layers read them with it: a number
/// read differently here would move every later header (a size field
/// with leading NULs read as 0 would turn the member's data into headers
/// that the runtime never sees).
///
/// Octal ASCII: spaces and NULs around it are dropped, the text ends at
/// the first NUL left inside, and what remains must be octal digits (an
/// empty field is 0). A first byte with the high bit set means GNU
/// base-256: bit 6 of that byte is the sign and the rest of the field is a
/// big-endian two's-complement number, which is how GNU tar stores sizes
/// of 8 GiB and more and negative times; it must fit 64 bits.
pub(super) fn parse_field(field: &[u8]) -> Option<i128> {
    let &first = field.first()?;
    if first & 0x80 != 0 {
        return parse_base256(field).map(i128::from);
    }
    let blank = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !blank(b)).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    let trimmed = field.get(start..end).unwrap_or_default();
    let digits = match trimmed.iter().position(|&b| b == 0) {
        Some(nul) => trimmed.get(..nul).unwrap_or_default(),
        None => trimmed,
    };
    let mut value: u64 = 0;
    for &b in digits {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(i128::from(value))
}

/// GNU base-256, refused where Go refuses it: more than 63 significant bits.
fn parse_base256(field: &[u8]) -> Option<i64> {
    let first = field.first()?;
    let invert: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
    let mut value: u64 = 0;
    for (i, &byte) in field.iter().enumerate() {
        let mut byte = byte ^ invert;
        if i == 0 {
            byte &= 0x7f;
        }
        if value >> 56 != 0 {
            return None;
        }
        value = value << 8 | u64::from(byte);
    }
    let value = i64::try_from(value).ok()?;
    Some(if invert == 0xff { !value } else { value })
}

/// Parses a non-negative decimal PAX value (no sign, no spaces).
pub(super) fn parse_decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Parses a PAX time: `[-]seconds[.fraction]`, returned as whole seconds
/// (rounded towards negative infinity) and a non-negative nanosecond part,
/// which is how `struct timespec` wants a time before the epoch.
///
/// Digits past the ninth of the fraction are ignored (truncated).
pub(super) fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let (negative, unsigned) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    let (whole, fraction) = match unsigned.iter().position(|&b| b == b'.') {
        Some(dot) => (unsigned.get(..dot)?, unsigned.get(dot + 1..)?),
        None => (unsigned, &[][..]),
    };
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let seconds = if whole.is_empty() {
        0
    } else {
        parse_decimal(whole)?
    };
    if !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        let digit = fraction.get(i).map_or(0, |&b| u32::from(b - b'0'));
        nanos = nanos * 10 + digit;
    }
    let seconds = i128::from(seconds);
    let (seconds, nanos) = match (negative, nanos) {
        (false, n) => (seconds, n),
        (true, 0) => (-seconds, 0),
        (true, n) => (-seconds - 1, 1_000_000_000 - n),
    };
    Some((i64::try_from(seconds).ok()?, nanos))
}

/// Writes `value` into a numeric header field: octal digits and a NUL
/// terminator when it fits (what every reader understands), else GNU
/// base-256 (big-endian with the marker bit), which GNU tar and libarchive
/// read. Fields of 8 bytes and more always hold a `u64` in base-256.
pub(super) fn format_field(value: u64, field: &mut [u8]) {
    let digits = field.len().saturating_sub(1);
    if fits_octal(value, field.len()) {
        let mut v = value;
        for slot in field.iter_mut().take(digits).rev() {
            *slot = b'0' + (v & 7) as u8;
            v >>= 3;
        }
        if let Some(last) = field.last_mut() {
            *last = 0;
        }
        return;
    }
    let mut v = value;
    for slot in field.iter_mut().rev() {
        *slot = (v & 0xff) as u8;
        v >>= 8;
    }
    if let Some(first) = field.first_mut() {
        *first = 0x80;
    }
}

/// Whether `value` fits a numeric field of `len` bytes as octal digits.
pub(super) fn fits_octal(value: u64, len: usize) -> bool {
    let digits = len.saturating_sub(1);
    digits >= 22 || value >> (3 * digits) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_accept_every_padding_writers_use() {
        assert_eq!(parse_field(b"0000644\0"), Some(0o644));
        assert_eq!(parse_field(b"   644 \0"), Some(0o644));
        assert_eq!(parse_field(b"644 \0\0\0\0"), Some(0o644));
        assert_eq!(parse_field(b"00000000012"), Some(0o12));
        assert_eq!(parse_field(b"12345670123"), Some(0o12345670123));
        assert_eq!(parse_field(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_field(b"        "), Some(0));
        // Go's reading: NULs and spaces around the digits are dropped, the
        // text ends at a NUL inside, and anything else is no number.
        assert_eq!(parse_field(b"\0\0\x001234\0"), Some(0o1234));
        assert_eq!(parse_field(b" \0 17\0junk"), Some(0o17));
        assert_eq!(parse_field(b"12 junk"), None);
        assert_eq!(parse_field(b"1 2"), None);
        assert_eq!(parse_field(b"0000648\0"), None);
        assert_eq!(parse_field(b"  -12\0"), None);
        assert_eq!(parse_field(b"abc"), None);
        assert_eq!(parse_field(b""), None);
        assert_eq!(parse_field(b"\0"), Some(0));
    }

    #[test]
    fn base256_fields_are_twos_complement_with_the_marker_bit() {
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..].copy_from_slice(&(10u64 << 32).to_be_bytes());
        assert_eq!(parse_field(&big), Some(10i128 << 32));
        let mut minus_one = [0xffu8; 12];
        assert_eq!(parse_field(&minus_one), Some(-1));
        minus_one[11] = 0xfe;
        assert_eq!(parse_field(&minus_one), Some(-2));
        let mut min = [0u8; 8];
        min[0] = 0xff;
        min[1..].copy_from_slice(&(-1000i64).to_be_bytes()[1..]);
        assert_eq!(parse_field(&min), Some(-1000));
        assert_eq!(parse_field(&[0x80; 16]), None);
        // More than 63 significant bits: Go refuses the header.
        let mut wide = [0u8; 12];
        wide[0] = 0x80;
        wide[3] = 1;
        assert_eq!(parse_field(&wide), None);
        wide[3] = 0;
        wide[4] = 0x80;
        assert_eq!(parse_field(&wide), None);
        wide[4] = 0x7f;
        assert_eq!(parse_field(&wide), Some(0x7f << 56));
    }

    #[test]
    fn decimals_reject_signs_spaces_and_overflow() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b" 1"), None);
    }

    #[test]
    fn pax_times_split_into_floor_seconds_and_nanoseconds() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"1.123456789999"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"-5"), Some((-5, 0)));
        assert_eq!(parse_pax_time(b"-5.000"), Some((-5, 0)));
        assert_eq!(parse_pax_time(b".5"), Some((0, 500_000_000)));
        assert_eq!(parse_pax_time(b"-9223372036854775808"), Some((i64::MIN, 0)));
        assert_eq!(parse_pax_time(b"-9223372036854775808.5"), None);
        assert_eq!(parse_pax_time(b"9223372036854775808"), None);
        assert_eq!(parse_pax_time(b""), None);
        assert_eq!(parse_pax_time(b"-"), None);
        assert_eq!(parse_pax_time(b"1.2x"), None);
        assert_eq!(parse_pax_time(b"1e5"), None);
    }

    #[test]
    fn formatted_fields_parse_back_in_octal_or_base256() {
        for (value, len, octal) in [
            (0u64, 8, true),
            (0o7777777, 8, true),
            (0o10000000, 8, false),
            (0o77777777777, 12, true),
            (1 << 33, 12, false),
            (u64::MAX >> 2, 12, false),
        ] {
            let mut field = vec![b'x'; len];
            format_field(value, &mut field);
            assert_eq!(field[0] & 0x80 == 0, octal, "{value:o} in {len}");
            assert_eq!(fits_octal(value, len), octal);
            assert_eq!(parse_field(&field), Some(i128::from(value)), "{value:o}");
        }
    }
}
