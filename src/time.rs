//! Exchange timestamps: RFC 3339 text (Alpaca JSON) and msgpack timestamps (ext type −1), one type.
//!
//! Alpaca sends times as RFC 3339 strings with up to nanosecond precision in JSON
//! (`"2021-02-22T15:51:44.208Z"`) and as the msgpack Timestamp extension in msgpack. [`Timestamp`]
//! deserializes from either, serializes as RFC 3339 with trailing zeros trimmed (Go's
//! `time.RFC3339Nano`, which is what Alpaca emits), and is cheap to copy and compare.

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// A point in time with nanosecond precision, as seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// Why a timestamp could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("not an RFC 3339 timestamp: {0:?}")]
    Syntax(String),
    #[error("msgpack timestamp extension has {0} bytes (expected 4, 8 or 12)")]
    ExtLength(usize),
    #[error("msgpack extension type {0} is not a timestamp (-1)")]
    ExtType(i8),
    #[error("nanoseconds out of range: {0}")]
    Nanos(u32),
}

impl Timestamp {
    /// Builds a timestamp; `nanos` must be below one second.
    pub fn new(secs: i64, nanos: u32) -> Option<Self> {
        (nanos < 1_000_000_000).then_some(Self { secs, nanos })
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Seconds since the Unix epoch.
    pub fn secs(self) -> i64 {
        self.secs
    }

    /// Nanoseconds within the second.
    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the epoch (saturating), convenient for arithmetic and tests.
    pub fn unix_nanos(self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// How long ago this was, relative to `now`; zero when it lies in the future.
    pub fn age_at(self, now: Timestamp) -> Duration {
        let delta = now.unix_nanos() - self.unix_nanos();
        if delta <= 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(u64::try_from(delta).unwrap_or(u64::MAX))
        }
    }

    /// Parses RFC 3339 (`2026-01-20T15:04:05.123456789Z`, `…+02:00`, lower-case `t`/`z` too).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        parse_rfc3339(text.as_bytes()).ok_or_else(|| TimestampError::Syntax(text.to_owned()))
    }

    /// Decodes the payload of a msgpack Timestamp extension (type −1) in any of its three widths.
    pub fn from_msgpack_ext(data: &[u8]) -> Result<Self, TimestampError> {
        let (secs, nanos) = match data.len() {
            // timestamp 32: u32 seconds
            4 => (i64::from(u32::from_be_bytes(array(data))), 0),
            // timestamp 64: u64 = nanos (30 bits) << 34 | seconds (34 bits)
            8 => {
                let v = u64::from_be_bytes(array(data));
                ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
            }
            // timestamp 96: u32 nanos, i64 seconds
            12 => (
                i64::from_be_bytes(array(&data[4..])),
                u32::from_be_bytes(array(&data[..4])),
            ),
            n => return Err(TimestampError::ExtLength(n)),
        };
        Self::new(secs, nanos).ok_or(TimestampError::Nanos(nanos))
    }

    /// Encodes as a msgpack Timestamp extension payload, choosing the smallest width that fits
    /// (the rule msgpack libraries, vmihailenco's included, follow).
    pub fn to_msgpack_ext(self) -> Vec<u8> {
        if self.secs >= 0 && self.secs >> 34 == 0 {
            if self.nanos == 0 && self.secs <= i64::from(u32::MAX) {
                return (self.secs as u32).to_be_bytes().to_vec();
            }
            let v = (u64::from(self.nanos) << 34) | self.secs as u64;
            return v.to_be_bytes().to_vec();
        }
        let mut out = self.nanos.to_be_bytes().to_vec();
        out.extend_from_slice(&self.secs.to_be_bytes());
        out
    }

    /// Writes RFC 3339 in UTC with up to nine fractional digits, trailing zeros trimmed.
    pub fn write_rfc3339(self, out: &mut String) {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let _ = write!(
            out,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        if self.nanos != 0 {
            let mut frac = format!("{:09}", self.nanos);
            while frac.ends_with('0') {
                frac.pop();
            }
            out.push('.');
            out.push_str(&frac);
        }
        out.push('Z');
    }

    /// RFC 3339 with exactly six fractional digits and a `+00:00` offset
    /// (`2024-10-19T14:30:00.123456+00:00`), the shape Python's `datetime.isoformat()` writes
    /// and the Redis price consumers read.
    pub fn to_rfc3339_micros(self) -> String {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}+00:00",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            self.nanos / 1000
        )
    }

    /// RFC 3339 text, as [`Timestamp::write_rfc3339`] writes it.
    pub fn to_rfc3339(self) -> String {
        let mut out = String::with_capacity(30);
        self.write_rfc3339(&mut out);
        out
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let secs = -(d.as_secs() as i64);
                match d.subsec_nanos() {
                    0 => Self { secs, nanos: 0 },
                    n => Self {
                        secs: secs - 1,
                        nanos: 1_000_000_000 - n,
                    },
                }
            }
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl<'de> Visitor<'de> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 string or a msgpack timestamp extension")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        Timestamp::parse_rfc3339(v).map_err(E::custom)
    }

    /// rmp-serde hands extension values to `deserialize_any` as a newtype around `(tag, bytes)`.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Timestamp, D::Error> {
        d.deserialize_any(ExtVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Timestamp, A::Error> {
        ExtVisitor.visit_seq(seq)
    }
}

struct ExtVisitor;

impl<'de> Visitor<'de> for ExtVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a msgpack extension (type, bytes)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Timestamp, A::Error> {
        let tag: i8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("extension without a type"))?;
        if tag != -1 {
            return Err(de::Error::custom(TimestampError::ExtType(tag)));
        }
        let data: ExtBytes = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("extension without data"))?;
        Timestamp::from_msgpack_ext(&data.0).map_err(de::Error::custom)
    }
}

/// Extension payload bytes, however the format chooses to present them.
struct ExtBytes(Vec<u8>);

impl<'de> serde::Deserialize<'de> for ExtBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ExtBytes, E> {
                Ok(ExtBytes(v.to_vec()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ExtBytes, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ExtBytes(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn array<const N: usize>(data: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&data[..N]);
    out
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn parse_rfc3339(b: &[u8]) -> Option<Timestamp> {
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let h = digits(b, i + 1, 2)?;
            let m = digits(b, i + 4, 2)?;
            let off = h * 3600 + m * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    // A leap second (:60) is folded onto the next second, as most clocks do.
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Timestamp::new(secs, nanos)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_with_an_offset_as_python_writes_them() {
        let ts = Timestamp::parse_rfc3339("2024-10-19T14:30:00.123456789Z").unwrap();
        assert_eq!(ts.to_rfc3339_micros(), "2024-10-19T14:30:00.123456+00:00");
        let whole = Timestamp::parse_rfc3339("2024-10-19T14:30:00Z").unwrap();
        assert_eq!(
            whole.to_rfc3339_micros(),
            "2024-10-19T14:30:00.000000+00:00"
        );
    }

    #[test]
    fn parses_alpaca_examples_and_round_trips_them() {
        for text in [
            "2021-02-22T15:51:44.208Z",
            "2021-02-22T15:51:45.335689322Z",
            "2021-02-22T19:15:00Z",
            "2024-03-12T10:27:48.858228144Z",
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.000000001Z",
        ] {
            let ts = Timestamp::parse_rfc3339(text).unwrap();
            assert_eq!(ts.to_rfc3339(), text);
        }
    }

    #[test]
    fn known_epoch_values() {
        let ts = Timestamp::parse_rfc3339("2021-02-22T19:15:00Z").unwrap();
        assert_eq!(ts.secs(), 0x6034_02b4);
        let ts = Timestamp::parse_rfc3339("2021-02-22T15:51:44.208Z").unwrap();
        assert_eq!((ts.secs(), ts.subsec_nanos()), (1_614_009_104, 208_000_000));
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let a = Timestamp::parse_rfc3339("2022-04-19T13:45:04.981350886-04:00").unwrap();
        let b = Timestamp::parse_rfc3339("2022-04-19T17:45:04.981350886Z").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "",
            "2021-02-22",
            "2021-02-22T15:51:44",
            "2021-13-22T15:51:44Z",
            "2021-02-30T15:51:44Z",
            "2021-02-22T25:51:44Z",
            "2021-02-22T15:51:44.Z",
            "2021-02-22T15:51:44Zjunk",
            "2021-02-22T15:51:44+0100",
        ] {
            assert!(Timestamp::parse_rfc3339(text).is_err(), "{text}");
        }
    }

    #[test]
    fn msgpack_ext_all_three_widths() {
        // From the protocol notes: timestamp64 and timestamp32, hand-checked.
        let ts64 = [0x31, 0x97, 0x50, 0x00, 0x60, 0x33, 0xd3, 0x10];
        assert_eq!(
            Timestamp::from_msgpack_ext(&ts64).unwrap().to_rfc3339(),
            "2021-02-22T15:51:44.208Z"
        );
        let ts32 = [0x60, 0x34, 0x02, 0xb4];
        assert_eq!(
            Timestamp::from_msgpack_ext(&ts32).unwrap().to_rfc3339(),
            "2021-02-22T19:15:00Z"
        );
        // timestamp96: nanos 5, seconds 2^34 (2514-05-30T01:53:04Z), past the 64-bit form's range.
        let ts96 = [0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 0];
        let ts = Timestamp::from_msgpack_ext(&ts96).unwrap();
        assert_eq!(ts.to_rfc3339(), "2514-05-30T01:53:04.000000005Z");
        assert_eq!(ts.to_msgpack_ext(), ts96.to_vec());
        assert_eq!(
            Timestamp::from_msgpack_ext(&[1, 2, 3]),
            Err(TimestampError::ExtLength(3))
        );
    }

    #[test]
    fn msgpack_ext_encoding_picks_smallest_width() {
        let ts = Timestamp::parse_rfc3339("2021-02-22T15:51:44.208Z").unwrap();
        assert_eq!(
            ts.to_msgpack_ext(),
            vec![0x31, 0x97, 0x50, 0x00, 0x60, 0x33, 0xd3, 0x10]
        );
        let ts = Timestamp::parse_rfc3339("2021-02-22T19:15:00Z").unwrap();
        assert_eq!(ts.to_msgpack_ext(), vec![0x60, 0x34, 0x02, 0xb4]);
    }

    #[test]
    fn deserializes_from_json_string() {
        let ts: Timestamp = serde_json::from_str("\"2021-02-22T15:51:44.208Z\"").unwrap();
        assert_eq!(ts.subsec_nanos(), 208_000_000);
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }

    #[test]
    fn age_is_never_negative() {
        let a = Timestamp::new(100, 0).unwrap();
        let b = Timestamp::new(101, 500).unwrap();
        assert_eq!(a.age_at(b), Duration::from_nanos(1_000_000_500));
        assert_eq!(b.age_at(a), Duration::ZERO);
    }

    #[test]
    fn system_time_before_epoch() {
        let t = UNIX_EPOCH - Duration::from_millis(1500);
        let ts = Timestamp::from(t);
        assert_eq!((ts.secs(), ts.subsec_nanos()), (-2, 500_000_000));
        assert_eq!(ts.to_rfc3339(), "1969-12-31T23:59:58.5Z");
    }
}
