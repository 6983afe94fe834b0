//! Wall-clock time as Unix nanoseconds, and the RFC 3339 text both protocols carry it in.
//!
//! Hand-written on both sides: the flood stamps every batch and the clients parse every update's
//! timestamp, so neither may cost more than a few dozen nanoseconds.

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_nanos_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// Unix nanoseconds as (seconds, nanoseconds within the second).
pub fn split_nanos(nanos: i64) -> (i64, u32) {
    (
        nanos.div_euclid(NANOS_PER_SEC),
        nanos.rem_euclid(NANOS_PER_SEC) as u32,
    )
}

/// Appends `nanos` as RFC 3339 UTC with nine fractional digits, e.g.
/// `2026-01-20T15:04:05.123456789Z`.
pub fn write_rfc3339(out: &mut Vec<u8>, nanos: i64) {
    let (secs, frac) = split_nanos(nanos);
    let (y, m, d) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let rem = secs.rem_euclid(SECS_PER_DAY) as u64;
    push_padded(out, y.max(0) as u64, 4);
    out.push(b'-');
    push_padded(out, m.into(), 2);
    out.push(b'-');
    push_padded(out, d.into(), 2);
    out.push(b'T');
    push_padded(out, rem / 3600, 2);
    out.push(b':');
    push_padded(out, rem % 3600 / 60, 2);
    out.push(b':');
    push_padded(out, rem % 60, 2);
    out.push(b'.');
    push_padded(out, frac.into(), 9);
    out.push(b'Z');
}

/// Appends `value` in decimal, left-padded with zeros to `width` digits.
pub fn push_padded(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while value > 0 || digits.len() - i < width {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[i..]);
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`) into Unix nanoseconds.
/// Fractions of any length are accepted; digits past the ninth are ignored.
pub fn parse_rfc3339(s: &[u8]) -> Option<i64> {
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let year = digits(&s[0..4])? as i64;
    let month = digits(&s[5..7])? as u32;
    let day = digits(&s[8..10])? as u32;
    let hour = digits(&s[11..13])? as i64;
    let minute = digits(&s[14..16])? as i64;
    let second = digits(&s[17..19])? as i64;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let (frac, rest) = fraction(&s[19..])?;
    let offset = utc_offset_secs(rest)?;
    let secs =
        days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second
            - offset;
    Some(secs * NANOS_PER_SEC + frac)
}

/// The optional `.fraction` at the start of `s` as nanoseconds, and what follows it.
fn fraction(s: &[u8]) -> Option<(i64, &[u8])> {
    let Some(rest) = s.strip_prefix(b".") else {
        return Some((0, s));
    };
    let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    let mut nanos = 0i64;
    for (i, b) in rest[..len.min(9)].iter().enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some((nanos, &rest[len..]))
}

/// `Z` or `±HH:MM` (and nothing after it) as seconds east of UTC.
fn utc_offset_secs(s: &[u8]) -> Option<i64> {
    match s {
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let secs = digits(&[*h1, *h2])? as i64 * 3600 + digits(&[*m1, *m2])? as i64 * 60;
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => None,
    }
}

/// A run of ASCII digits as a number.
pub fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(nanos: i64) -> String {
        let mut out = Vec::new();
        write_rfc3339(&mut out, nanos);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_with_nine_fraction_digits() {
        assert_eq!(text(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            text(1_768_921_445_123_456_789),
            "2026-01-20T15:04:05.123456789Z"
        );
    }

    #[test]
    fn parses_what_it_writes_and_what_the_daemon_writes() {
        let t = 1_768_921_445_123_456_789;
        assert_eq!(parse_rfc3339(text(t).as_bytes()), Some(t));
        assert_eq!(
            parse_rfc3339(b"2026-01-20T15:04:05.1234Z"),
            Some(1_768_921_445_123_400_000)
        );
        assert_eq!(
            parse_rfc3339(b"2026-01-20T15:04:05Z"),
            Some(1_768_921_445_000_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2026-01-20T16:04:05.5+01:00"),
            Some(1_768_921_445_500_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2024-02-29T00:00:00.0000000001Z"),
            Some(1_709_164_800_000_000_000)
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_rfc3339(b"2026-01-20 15:04"), None);
        assert_eq!(parse_rfc3339(b"2026-13-20T15:04:05Z"), None);
        assert_eq!(parse_rfc3339(b"2026-01-20T15:04:05.Z"), None);
        assert_eq!(parse_rfc3339(b"2026-01-20T15:04:05.1Zjunk"), None);
    }
}
