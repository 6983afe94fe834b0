//! The SDK clients' side of Alpaca's protocol, read cheaply: what to send (auth, subscribe) and,
//! for each message received, how many quotes it holds and their exchange timestamps — found by
//! scanning bytes, not decoding, since the clients share two cores with the daemon.
//!
//! msgpack: the array header gives the count; each `"t"` key followed by a Timestamp extension
//! (any of its three widths) gives a timestamp. JSON: each `"T":"q"` is a quote, each `"t":"…"` a
//! timestamp. The flood's quotes (the only data in a run) have exactly these shapes.

use serde_json::json;

use crate::args::Encoding;
use crate::clock::parse_rfc3339;

/// A client message in `encoding`: the payload and whether it goes in a binary frame.
pub fn request(value: &serde_json::Value, encoding: Encoding) -> (Vec<u8>, bool) {
    match encoding {
        Encoding::Json => (value.to_string().into_bytes(), false),
        // Serializing a JSON value to msgpack cannot fail.
        Encoding::Msgpack => (rmp_serde::to_vec_named(value).unwrap_or_default(), true),
    }
}

pub fn auth(key: &str, secret: &str) -> serde_json::Value {
    json!({"action": "auth", "key": key, "secret": secret})
}

pub fn subscribe(symbols: &[String]) -> serde_json::Value {
    json!({"action": "subscribe", "quotes": symbols})
}

/// A control message that matters while connecting.
#[derive(Debug, PartialEq, Eq)]
pub enum Control {
    Subscription,
    Error,
    Other,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn control(payload: &[u8]) -> Control {
    if contains(payload, b"subscription") {
        Control::Subscription
    } else if contains(payload, br#""T":"error""#) || contains(payload, b"\xa1T\xa5error") {
        Control::Error
    } else {
        Control::Other
    }
}

/// Quotes in one message, their timestamps (Unix nanoseconds) left in `timestamps`.
pub fn quotes(payload: &[u8], binary: bool, timestamps: &mut Vec<i64>) -> u64 {
    timestamps.clear();
    if binary {
        msgpack_quotes(payload, timestamps)
    } else {
        json_quotes(payload, timestamps)
    }
}

fn msgpack_quotes(p: &[u8], timestamps: &mut Vec<i64>) -> u64 {
    let count = match p.first() {
        Some(m @ 0x90..=0x9f) => u64::from(m & 0x0f),
        Some(0xdc) if p.len() >= 3 => u64::from(u16::from_be_bytes([p[1], p[2]])),
        Some(0xdd) if p.len() >= 5 => u64::from(u32::from_be_bytes([p[1], p[2], p[3], p[4]])),
        _ => return 0,
    };
    let mut i = 0;
    while i + 4 <= p.len() {
        if p[i] == 0xa1 && p[i + 1] == b't' {
            let rest = &p[i + 2..];
            let ts = match rest {
                [0xd6, 0xff, s @ ..] if s.len() >= 4 => {
                    Some(i64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]])) * 1_000_000_000)
                }
                [0xd7, 0xff, s @ ..] if s.len() >= 8 => {
                    let v = u64::from_be_bytes(s[..8].try_into().unwrap_or_default());
                    Some((v & 0x3_ffff_ffff) as i64 * 1_000_000_000 + (v >> 34) as i64)
                }
                [0xc7, 12, 0xff, s @ ..] if s.len() >= 12 => {
                    let nanos = u32::from_be_bytes(s[..4].try_into().unwrap_or_default());
                    let secs = i64::from_be_bytes(s[4..12].try_into().unwrap_or_default());
                    Some(secs * 1_000_000_000 + i64::from(nanos))
                }
                _ => None,
            };
            if let Some(ts) = ts {
                timestamps.push(ts);
            }
        }
        i += 1;
    }
    count
}

fn json_quotes(p: &[u8], timestamps: &mut Vec<i64>) -> u64 {
    let mut count = 0;
    let mut i = 0;
    while i + 6 < p.len() {
        if &p[i..i + 6] == br#""T":"q"# {
            count += 1;
            i += 6;
        } else if &p[i..i + 5] == br#""t":""# {
            let start = i + 5;
            let end = p[start..]
                .iter()
                .position(|b| *b == b'"')
                .map(|e| start + e);
            if let Some(ts) = end.and_then(|end| parse_rfc3339(&p[start..end])) {
                timestamps.push(ts);
            }
            i = end.unwrap_or(p.len());
        } else {
            i += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_and_msgpack_quotes_with_their_timestamps() {
        let text = br#"[{"T":"q","S":"S0001","bp":1.5,"t":"2026-01-20T15:04:05.123456789Z"},{"T":"q","S":"S0002","t":"2026-01-20T15:04:05Z"}]"#;
        let mut ts = Vec::new();
        assert_eq!(quotes(text, false, &mut ts), 2);
        assert_eq!(ts, [1_768_921_445_123_456_789, 1_768_921_445_000_000_000]);

        // [{"T":"q","t":ts64}, {"T":"q","t":ts96}]
        let mut packed = vec![0x92];
        for ext in [
            vec![0xd7, 0xff, 0x1d, 0x6f, 0x34, 0x54, 0x69, 0x6f, 0x5f, 0x25],
            {
                let mut v = vec![0xc7, 12, 0xff];
                v.extend_from_slice(&123_456_789u32.to_be_bytes());
                v.extend_from_slice(&1_768_921_445i64.to_be_bytes());
                v
            },
        ] {
            packed.extend_from_slice(&[0x82, 0xa1, b'T', 0xa1, b'q', 0xa1, b't']);
            packed.extend_from_slice(&ext);
        }
        assert_eq!(quotes(&packed, true, &mut ts), 2);
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[1], 1_768_921_445_123_456_789);
    }

    #[test]
    fn tells_acks_and_errors() {
        assert_eq!(
            control(br#"[{"T":"subscription","quotes":["S0001"]}]"#),
            Control::Subscription
        );
        assert_eq!(
            control(br#"[{"T":"error","code":402,"msg":"auth failed"}]"#),
            Control::Error
        );
        assert_eq!(control(b"\x91\x83\xa1T\xa5error"), Control::Error);
        assert_eq!(
            control(br#"[{"T":"success","msg":"authenticated"}]"#),
            Control::Other
        );
    }
}
