//! RFC 3339 times, as both tables of contents write them (Go's
//! `time.RFC3339` and `RFC3339Nano`).

/// Seconds since the epoch and nanoseconds of `text`
/// (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`); `None` if it is not one.
pub(super) fn parse(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(range)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b.get(i) != Some(&c)) || !matches!(b.get(10), Some(b'T' | b't')) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    let mut nsec = 0u32;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        for (i, d) in b[at + 1..at + 1 + digits].iter().enumerate().take(9) {
            nsec += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
        }
        at += 1 + digits;
    }
    let offset = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let minutes = num(at + 1..at + 3)? * 60 + num(at + 4..at + 6)?;
            if *sign == b'-' {
                -minutes * 60
            } else {
                minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((
        days * 86400 + hour * 3600 + minute * 60 + second - offset,
        nsec,
    ))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_both_producers() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse("2026-12-07T13:34:50Z"), Some((1_796_650_490, 0)));
        assert_eq!(
            parse("2000-02-29T12:00:00.5Z"),
            Some((951_825_600, 500_000_000))
        );
        assert_eq!(
            parse("2000-02-29T13:00:00.123456789+01:00"),
            Some((951_825_600, 123_456_789))
        );
        assert_eq!(parse("1969-12-31T23:59:59Z"), Some((-1, 0)));
        assert_eq!(parse("0001-01-01T00:00:00Z"), Some((-62_135_596_800, 0)));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "2026-12-07",
            "2026-12-07T13:34:50",
            "2026-13-07T13:34:50Z",
            "2026-12-07T13:34:50.Z",
            "2026-12-07T13:34:50+0100",
            "2026-12-07 13:34:50Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
