//! Reading the daemon's browser frames cheaply: the frame type, each price update's exchange
//! timestamp, the frame's own timestamp (when the daemon wrote it), the snapshot flag and a
//! batch's count, found by scanning the bytes instead of parsing the JSON (the clients share two
//! cores with the daemon they measure).
//!
//! The scan relies on the shapes the daemon writes (compact JSON, flat `update` objects). Any
//! price frame it cannot read is parsed in full with serde_json instead, and counted, so a
//! change of shape costs CPU but never miscounts.

use serde_json::Value;

use crate::clock::{digits, parse_rfc3339};

/// Control frames the clients act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Subscribed,
    Error,
    /// `welcome`, `alpaca_status`, `pong`, and anything else.
    Other,
}

/// A price frame (one update or a batch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prices {
    /// Updates in the frame (a batch's `count`).
    pub updates: u64,
    /// A single update marked `"snapshot":true` (its timestamp is not collected).
    pub snapshot: bool,
    /// Updates with no readable timestamp.
    pub untimed: u64,
    /// The frame's own `timestamp` (Unix nanoseconds): when the daemon serialized it.
    pub written: Option<i64>,
    /// The cheap scan failed and serde_json read the frame.
    pub fallback: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    Prices(Prices),
    Control(Control),
    /// Not JSON, or no `type`.
    Unreadable,
}

/// Reads one text frame; the exchange timestamps (Unix nanoseconds) of its non-snapshot price
/// updates are left in `timestamps`.
pub fn scan(text: &[u8], timestamps: &mut Vec<i64>) -> Scan {
    timestamps.clear();
    let Some(kind) = frame_type(text) else {
        return full_parse(text, timestamps);
    };
    let cheap = if kind.ends_with(b"_price_update") {
        cheap_update(text, timestamps)
    } else if kind.ends_with(b"_price_batch") {
        cheap_batch(text, timestamps)
    } else {
        return Scan::Control(control(kind));
    };
    match cheap {
        Some(prices) => Scan::Prices(prices),
        None => full_parse(text, timestamps),
    }
}

fn control(kind: &[u8]) -> Control {
    match kind {
        b"subscribed" => Control::Subscribed,
        b"error" => Control::Error,
        _ => Control::Other,
    }
}

/// The value of the first `"type":"…"`.
fn frame_type(text: &[u8]) -> Option<&[u8]> {
    string_after(text, b"\"type\":\"")
}

/// The string value that starts right after `key` (which ends with the opening quote).
fn string_after<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = find(text, key)? + key.len();
    let len = text[start..].iter().position(|&b| b == b'"')?;
    Some(&text[start..start + len])
}

fn cheap_update(text: &[u8], timestamps: &mut Vec<i64>) -> Option<Prices> {
    const KEY: &[u8] = b"\"update\":{";
    let start = find(text, KEY)? + KEY.len() - 1;
    let object = flat_object(&text[start..])?;
    let timestamp = timestamp_in(object)?;
    // Look outside the update object only: that is where the frame's own keys are.
    let (before, after) = (&text[..start], &text[start + object.len()..]);
    let snapshot = [before, after]
        .iter()
        .any(|part| find(part, b"\"snapshot\":true").is_some());
    let mut prices = Prices {
        updates: 1,
        snapshot,
        written: frame_timestamp(after, before)?,
        ..Prices::default()
    };
    match timestamp {
        Some(t) if !snapshot => timestamps.push(t),
        Some(_) => {}
        None => prices.untimed = 1,
    }
    Some(prices)
}

fn cheap_batch(text: &[u8], timestamps: &mut Vec<i64>) -> Option<Prices> {
    const KEY: &[u8] = b"\"updates\":[";
    let array_at = find(text, KEY)?;
    let mut rest = &text[array_at + KEY.len()..];
    let mut prices = Prices::default();
    loop {
        match rest.first()? {
            b']' => break,
            b',' => rest = &rest[1..],
            b'{' => {
                let object = flat_object(rest)?;
                match timestamp_in(object)? {
                    Some(t) => timestamps.push(t),
                    None => prices.untimed += 1,
                }
                prices.updates += 1;
                rest = &rest[object.len()..];
            }
            _ => return None,
        }
    }
    if let Some(count) = number_after(rest, b"\"count\":") {
        if count != prices.updates {
            return None;
        }
    }
    prices.written = frame_timestamp(rest, &text[..array_at])?;
    Some(prices)
}

/// The object at the start of `text` up to its first `}`: update objects hold no nested
/// objects, and no `}` inside strings (symbols and timestamps).
fn flat_object(text: &[u8]) -> Option<&[u8]> {
    if text.first() != Some(&b'{') {
        return None;
    }
    let end = text.iter().position(|&b| b == b'}')?;
    Some(&text[..=end])
}

/// The frame's own `timestamp`, looked for outside the update objects (`after` them, else
/// `before` them): `Some(None)` when absent, `None` when unreadable.
fn frame_timestamp(after: &[u8], before: &[u8]) -> Option<Option<i64>> {
    match timestamp_in(after)? {
        Some(t) => Some(Some(t)),
        None => timestamp_in(before),
    }
}

/// An object's `timestamp`: `Some(None)` when null or absent, `None` when unreadable.
fn timestamp_in(object: &[u8]) -> Option<Option<i64>> {
    const KEY: &[u8] = b"\"timestamp\":";
    // From the end: the daemon writes `timestamp` near the end of an update object.
    let Some(at) = rfind(object, KEY) else {
        return Some(None);
    };
    let value = &object[at + KEY.len()..];
    if value.starts_with(b"null") {
        return Some(None);
    }
    let text = string_after(value, b"\"")?;
    parse_rfc3339(text).map(Some)
}

fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(text, key)? + key.len();
    let len = text[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    digits(&text[start..start + len])
}

/// The first position of `needle` in `haystack`. Jumps between occurrences of the needle's first
/// byte (a tight byte loop) and compares only there: several times faster than comparing at
/// every position.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while from + needle.len() <= haystack.len() {
        let at = from + haystack[from..].iter().position(|&b| b == first)?;
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The last position of `needle` in `haystack` (like [`find`], from the end).
fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&last, rest) = needle.split_last()?;
    let mut end = haystack.len();
    while end >= needle.len() {
        let at = haystack[..end].iter().rposition(|&b| b == last)?;
        if haystack[..at].ends_with(rest) {
            return Some(at - rest.len());
        }
        end = at;
    }
    None
}

/// The slow path: serde_json, for frames the scan could not read.
fn full_parse(text: &[u8], timestamps: &mut Vec<i64>) -> Scan {
    timestamps.clear();
    let Ok(frame) = serde_json::from_slice::<Value>(text) else {
        return Scan::Unreadable;
    };
    let Some(kind) = frame.get("type").and_then(Value::as_str) else {
        return Scan::Unreadable;
    };
    let timestamp = |update: &Value| {
        update
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| parse_rfc3339(t.as_bytes()))
    };
    let mut prices = Prices {
        fallback: true,
        written: timestamp(&frame),
        ..Prices::default()
    };
    let updates: Vec<&Value> = if kind.ends_with("_price_update") {
        prices.snapshot = frame.get("snapshot") == Some(&Value::Bool(true));
        frame.get("update").into_iter().collect()
    } else if kind.ends_with("_price_batch") {
        let list = frame.get("updates").and_then(Value::as_array);
        list.into_iter().flatten().collect()
    } else {
        return Scan::Control(control(kind.as_bytes()));
    };
    for update in &updates {
        match timestamp(update) {
            Some(t) if !prices.snapshot => timestamps.push(t),
            Some(_) => {}
            None => prices.untimed += 1,
        }
    }
    prices.updates = frame
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(updates.len() as u64);
    Scan::Prices(prices)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-01-20T15:04:05.123456789Z";
    const T: i64 = 1_768_921_445_123_456_789;

    fn update(symbol: &str, ts: &str) -> String {
        format!(
            r#"{{"symbol":"{symbol}","bid_price":190.12,"ask_price":190.15,"mid_price":190.135,"last_price":null,"bid_size":2,"ask_size":3,"timestamp":{ts},"stale":false}}"#
        )
    }

    fn run(text: &str) -> (Scan, Vec<i64>) {
        let mut ts = Vec::new();
        let scan = scan(text.as_bytes(), &mut ts);
        (scan, ts)
    }

    #[test]
    fn single_updates() {
        let frame = format!(
            r#"{{"type":"spot_price_update","update":{},"snapshot":false,"timestamp":"2026-01-20T15:04:06Z"}}"#,
            update("AAPL", &format!("\"{TS}\""))
        );
        let (s, ts) = run(&frame);
        assert_eq!(
            s,
            Scan::Prices(Prices {
                updates: 1,
                written: Some(1_768_921_446_000_000_000),
                ..Prices::default()
            })
        );
        assert_eq!(ts, vec![T]);
        let snapshot = frame.replace("\"snapshot\":false", "\"snapshot\":true");
        let (s, ts) = run(&snapshot);
        assert!(matches!(s, Scan::Prices(p) if p.snapshot && !p.fallback));
        assert!(ts.is_empty());
        // A null exchange time is untimed, not the frame's own timestamp.
        let (s, ts) = run(&frame.replace(&format!("\"{TS}\""), "null"));
        assert!(matches!(s, Scan::Prices(p) if p.untimed == 1 && !p.fallback));
        assert!(ts.is_empty());
    }

    #[test]
    fn batches() {
        let a = update("A", &format!("\"{TS}\""));
        let b = update("B", "null");
        let frame = format!(
            r#"{{"type":"spot_price_batch","updates":[{a},{b},{a}],"count":3,"timestamp":"{TS}"}}"#
        );
        let (s, ts) = run(&frame);
        assert_eq!(
            s,
            Scan::Prices(Prices {
                updates: 3,
                untimed: 1,
                written: Some(T),
                ..Prices::default()
            })
        );
        assert_eq!(ts, vec![T, T]);
    }

    #[test]
    fn unexpected_shapes_fall_back_to_serde() {
        // Spaces after colons defeat the scan; serde_json reads it.
        let frame = format!(
            r#"{{"type": "spot_price_batch", "updates": [{{"symbol": "A", "timestamp": "{TS}"}}], "count": 1}}"#
        );
        let (s, ts) = run(&frame);
        assert!(matches!(s, Scan::Prices(p) if p.fallback && p.updates == 1));
        assert_eq!(ts, vec![T]);
        // A count that disagrees with the updates found.
        let frame = format!(
            r#"{{"type":"spot_price_batch","updates":[{}],"count":2}}"#,
            update("A", &format!("\"{TS}\""))
        );
        assert!(matches!(run(&frame).0, Scan::Prices(p) if p.fallback && p.updates == 2));
    }

    #[test]
    fn finds_first_and_last_occurrences() {
        assert_eq!(find(b"abcabc", b"bc"), Some(1));
        assert_eq!(rfind(b"abcabc", b"bc"), Some(4));
        assert_eq!(find(b"abcabc", b"cb"), None);
        assert_eq!(rfind(b"abcabc", b"ca"), Some(2));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(rfind(b"ab", b"abc"), None);
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(rfind(b"abb", b"ab"), Some(0));
    }

    #[test]
    fn control_frames() {
        let (s, _) =
            run(r#"{"type":"subscribed","symbols":["A"],"channels":["quotes"],"rejected":[]}"#);
        assert_eq!(s, Scan::Control(Control::Subscribed));
        assert_eq!(
            run(r#"{"type":"welcome"}"#).0,
            Scan::Control(Control::Other)
        );
        assert_eq!(run("not json").0, Scan::Unreadable);
    }
}
