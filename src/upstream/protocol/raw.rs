//! Market messages as Alpaca sent them, in both encodings, for SDK programs.
//!
//! [`split`] cuts an upstream frame into its market messages ([`RawElement`]s: channel, symbol,
//! bytes) without decoding their fields. A message that stays in its encoding keeps its bytes
//! exactly (a slice of the frame, no copy); the other encoding is written once per message, only
//! when some program wants it:
//!
//! - msgpack → JSON: Timestamp extensions (type −1) become RFC 3339 strings with up to nine
//!   fractional digits; integers stay integers, floats floats; key order is kept.
//! - JSON → msgpack: `T` first (go-sdk requires it), timestamps (`t`, `created_at`, `updated_at`)
//!   become Timestamp extensions, and the fields Alpaca types as floats are written as floats even
//!   when the JSON spells them without a fraction (`"h":136`), per message type and feed: go-sdk
//!   reads sizes and ids with integer decoders that reject floats, and prices with float ones.
//!
//! Control messages (`success`, `error`, `subscription`) and unknown types are not forwarded.

use std::fmt::Write as _;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::msgpack::{msgpack_array_elements, msgpack_value_len};
use super::Channel;
use crate::symbol::Symbol;
use crate::time::Timestamp;
use crate::upstream::tap::RawElement;
use crate::upstream::FeedKind;

/// Deepest nesting written when transcoding (Alpaca's messages nest three levels at most).
const MAX_DEPTH: usize = 16;

/// The channel that carries messages of type `t` (corrections and cancel/errors come with trades).
pub fn channel_of(t: &str) -> Option<Channel> {
    Some(match t {
        "t" | "c" | "x" => Channel::Trades,
        "q" => Channel::Quotes,
        "b" => Channel::Bars,
        "d" => Channel::DailyBars,
        "u" => Channel::UpdatedBars,
        "s" => Channel::Statuses,
        "l" => Channel::Lulds,
        "i" => Channel::Imbalances,
        "o" => Channel::Orderbooks,
        "n" => Channel::News,
        _ => return None,
    })
}

/// What is needed of a message to route it.
#[derive(Debug, Default, Deserialize)]
struct Peek<'a> {
    #[serde(rename = "T", borrow)]
    t: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "S", borrow)]
    s: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    symbols: Option<Vec<std::borrow::Cow<'a, str>>>,
}

/// The market messages of one frame; `json`/`msgpack` say which encodings to produce.
pub fn split(
    frame: &Bytes,
    binary: bool,
    feed: FeedKind,
    json: bool,
    msgpack: bool,
) -> Vec<RawElement> {
    let mut out = Vec::new();
    if binary {
        let Some(elements) = msgpack_array_elements(frame) else {
            return out;
        };
        for e in elements {
            let Some(peek) = peek_msgpack(e) else {
                continue;
            };
            let Some(element) = element_of(peek, feed) else {
                continue;
            };
            out.push(RawElement {
                msgpack: if msgpack {
                    frame.slice_ref(e)
                } else {
                    Bytes::new()
                },
                json: if json {
                    let mut text = String::with_capacity(e.len() * 2);
                    match msgpack_to_json(e, &mut text) {
                        Some(_) => Bytes::from(text),
                        None => continue,
                    }
                } else {
                    Bytes::new()
                },
                ..element
            });
        }
    } else {
        let Ok(elements) = serde_json::from_slice::<Vec<&RawValue>>(frame) else {
            return out;
        };
        let crypto = feed == FeedKind::Crypto;
        for e in elements {
            let Ok(peek) = serde_json::from_str::<Peek<'_>>(e.get()) else {
                continue;
            };
            let t = peek.t.as_deref().unwrap_or_default().to_owned();
            let Some(element) = element_of(peek, feed) else {
                continue;
            };
            let packed = if msgpack {
                match json_to_msgpack(e.get(), &t, crypto) {
                    Some(p) => Bytes::from(p),
                    None => continue,
                }
            } else {
                Bytes::new()
            };
            out.push(RawElement {
                msgpack: packed,
                json: if json {
                    frame.slice_ref(e.get().as_bytes())
                } else {
                    Bytes::new()
                },
                ..element
            });
        }
    }
    out
}

/// The routing part of an element (its bytes still empty).
fn element_of(peek: Peek<'_>, feed: FeedKind) -> Option<RawElement> {
    let channel = channel_of(peek.t.as_deref()?)?;
    if !feed.channels().contains(&channel) {
        return None;
    }
    let (symbol, news_symbols) = if channel == Channel::News {
        let symbols: Box<[Symbol]> = peek
            .symbols
            .unwrap_or_default()
            .iter()
            .filter_map(|s| Symbol::parse(s).ok())
            .collect();
        let first = symbols.first().cloned().unwrap_or_else(Symbol::wildcard);
        (first, Some(symbols))
    } else {
        (Symbol::parse(peek.s.as_deref()?).ok()?, None)
    };
    Some(RawElement {
        channel,
        symbol,
        news_symbols,
        msgpack: Bytes::new(),
        json: Bytes::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// msgpack reading

/// A msgpack string at the start of `data`: the text and the bytes it takes.
fn read_str(data: &[u8]) -> Option<(&str, usize)> {
    let (len, head) = match *data.first()? {
        m @ 0xa0..=0xbf => (usize::from(m & 0x1f), 1),
        0xd9 => (usize::from(*data.get(1)?), 2),
        0xda => (
            usize::from(u16::from_be_bytes(data.get(1..3)?.try_into().ok()?)),
            3,
        ),
        0xdb => (
            u32::from_be_bytes(data.get(1..5)?.try_into().ok()?) as usize,
            5,
        ),
        _ => return None,
    };
    let text = std::str::from_utf8(data.get(head..head + len)?).ok()?;
    Some((text, head + len))
}

/// A map or array header: the number of entries and the header's length.
fn read_len(data: &[u8], fix: u8, m16: u8, m32: u8) -> Option<(usize, usize)> {
    let m = *data.first()?;
    if m & 0xf0 == fix {
        return Some((usize::from(m & 0x0f), 1));
    }
    if m == m16 {
        return Some((
            usize::from(u16::from_be_bytes(data.get(1..3)?.try_into().ok()?)),
            3,
        ));
    }
    if m == m32 {
        return Some((
            u32::from_be_bytes(data.get(1..5)?.try_into().ok()?) as usize,
            5,
        ));
    }
    None
}

fn read_map_len(data: &[u8]) -> Option<(usize, usize)> {
    read_len(data, 0x80, 0xde, 0xdf)
}

fn read_array_len(data: &[u8]) -> Option<(usize, usize)> {
    read_len(data, 0x90, 0xdc, 0xdd)
}

fn peek_msgpack(data: &[u8]) -> Option<Peek<'_>> {
    let (entries, mut pos) = read_map_len(data)?;
    let mut peek = Peek::default();
    for _ in 0..entries {
        let (key, n) = read_str(&data[pos..])?;
        pos += n;
        let value = &data[pos..];
        match key {
            "T" => peek.t = Some(read_str(value)?.0.into()),
            "S" => peek.s = read_str(value).map(|(s, _)| s.into()),
            "symbols" => {
                if let Some((count, mut at)) = read_array_len(value) {
                    let mut symbols = Vec::with_capacity(count.min(64));
                    for _ in 0..count {
                        let (s, n) = read_str(&value[at..])?;
                        symbols.push(s.into());
                        at += n;
                    }
                    peek.symbols = Some(symbols);
                }
            }
            _ => {}
        }
        pos += msgpack_value_len(value)?;
    }
    Some(peek)
}

/// Writes the msgpack value at the start of `data` as JSON; answers the bytes it took.
pub fn msgpack_to_json(data: &[u8], out: &mut String) -> Option<usize> {
    write_json_value(data, out, 0)
}

fn write_json_value(data: &[u8], out: &mut String, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let m = *data.first()?;
    let be = |n: usize| -> Option<u64> {
        let b = data.get(1..1 + n)?;
        Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    };
    match m {
        0x00..=0x7f => {
            let _ = write!(out, "{m}");
            Some(1)
        }
        0xe0..=0xff => {
            let _ = write!(out, "{}", m as i8);
            Some(1)
        }
        0xc0 => {
            out.push_str("null");
            Some(1)
        }
        0xc2 | 0xc3 => {
            out.push_str(if m == 0xc3 { "true" } else { "false" });
            Some(1)
        }
        0xcc..=0xcf => {
            let n = 1 << (m - 0xcc);
            let _ = write!(out, "{}", be(n)?);
            Some(1 + n)
        }
        0xd0..=0xd3 => {
            let n = 1usize << (m - 0xd0);
            let v = be(n)?;
            let shift = 64 - 8 * n as u32;
            let _ = write!(out, "{}", ((v << shift) as i64) >> shift);
            Some(1 + n)
        }
        0xca => {
            let v = f32::from_bits(be(4)? as u32);
            write_float(f64::from(v), out);
            Some(5)
        }
        0xcb => {
            write_float(f64::from_bits(be(8)?), out);
            Some(9)
        }
        0xa0..=0xbf | 0xd9 | 0xda | 0xdb => {
            let (s, n) = read_str(data)?;
            write_json_str(s, out);
            Some(n)
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let (count, mut pos) = read_array_len(data)?;
            out.push('[');
            for i in 0..count {
                if i > 0 {
                    out.push(',');
                }
                pos += write_json_value(data.get(pos..)?, out, depth + 1)?;
            }
            out.push(']');
            Some(pos)
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let (count, mut pos) = read_map_len(data)?;
            out.push('{');
            for i in 0..count {
                if i > 0 {
                    out.push(',');
                }
                let rest = data.get(pos..)?;
                match read_str(rest) {
                    Some((key, n)) => {
                        write_json_str(key, out);
                        pos += n;
                    }
                    None => {
                        // A non-string key: written as the string of its JSON form.
                        let mut key = String::new();
                        pos += write_json_value(rest, &mut key, depth + 1)?;
                        write_json_str(&key, out);
                    }
                }
                out.push(':');
                pos += write_json_value(data.get(pos..)?, out, depth + 1)?;
            }
            out.push('}');
            Some(pos)
        }
        // Extensions: the Timestamp (−1) becomes RFC 3339; others have no JSON form.
        0xd4..=0xd8 | 0xc7..=0xc9 => {
            let (ty, payload, n) = read_ext(data)?;
            if ty == -1 {
                let t = Timestamp::from_msgpack_ext(payload).ok()?;
                out.push('"');
                t.write_rfc3339(out);
                out.push('"');
            } else {
                out.push_str("null");
            }
            Some(n)
        }
        // Binary: no JSON form.
        0xc4..=0xc6 => {
            out.push_str("null");
            msgpack_value_len(data)
        }
        _ => None,
    }
}

/// An extension value: its type, payload and total length.
fn read_ext(data: &[u8]) -> Option<(i8, &[u8], usize)> {
    let m = *data.first()?;
    let (len, head) = match m {
        0xd4..=0xd8 => (1usize << (m - 0xd4), 1),
        0xc7 => (usize::from(*data.get(1)?), 2),
        0xc8 => (
            usize::from(u16::from_be_bytes(data.get(1..3)?.try_into().ok()?)),
            3,
        ),
        0xc9 => (
            u32::from_be_bytes(data.get(1..5)?.try_into().ok()?) as usize,
            5,
        ),
        _ => return None,
    };
    let ty = *data.get(head)? as i8;
    let payload = data.get(head + 1..head + 1 + len)?;
    Some((ty, payload, head + 1 + len))
}

fn write_float(v: f64, out: &mut String) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

fn write_json_str(s: &str, out: &mut String) {
    // Serializing a &str into a String cannot fail.
    if let Ok(text) = serde_json::to_string(s) {
        out.push_str(&text);
    }
}

// ---------------------------------------------------------------------------------------------
// JSON → msgpack

/// Keys holding timestamps.
fn is_time_key(key: &str) -> bool {
    matches!(key, "t" | "created_at" | "updated_at")
}

/// Whether Alpaca types `key` of a message of type `t` as a float (crypto sizes and volumes are
/// floats; stock and option sizes integers).
fn is_float_key(t: &str, key: &str, crypto: bool) -> bool {
    match t {
        "q" => matches!(key, "bp" | "ap") || (crypto && matches!(key, "bs" | "as")),
        "t" => key == "p" || (crypto && key == "s"),
        "b" | "d" | "u" => matches!(key, "o" | "h" | "l" | "c" | "vw") || (crypto && key == "v"),
        "c" => matches!(key, "op" | "cp"),
        "x" | "i" => key == "p",
        "l" => matches!(key, "u" | "d"),
        _ => false,
    }
}

/// One JSON message as a msgpack map, `T` first, typed as Alpaca types it.
pub fn json_to_msgpack(text: &str, t: &str, crypto: bool) -> Option<Vec<u8>> {
    let Value::Object(map) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let mut out = Vec::with_capacity(text.len());
    rmp::encode::write_map_len(&mut out, map.len() as u32).ok()?;
    if let Some(v) = map.get("T") {
        rmp::encode::write_str(&mut out, "T").ok()?;
        write_msgpack(v, &mut out, Context::Plain, 0)?;
    }
    for (key, value) in map.iter().filter(|(k, _)| *k != "T") {
        rmp::encode::write_str(&mut out, key).ok()?;
        let context = if t == "o" && matches!(key.as_str(), "b" | "a") {
            Context::BookLevels
        } else if is_time_key(key) {
            Context::Time
        } else if is_float_key(t, key, crypto) {
            Context::Float
        } else {
            Context::Plain
        };
        write_msgpack(value, &mut out, context, 0)?;
    }
    Some(out)
}

/// How a JSON value's position types it.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    Plain,
    /// Numbers are floats.
    Float,
    /// A string is a timestamp.
    Time,
    /// Order book levels: every number is a float.
    BookLevels,
}

fn write_msgpack(v: &Value, out: &mut Vec<u8>, context: Context, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    match v {
        Value::Null => rmp::encode::write_nil(out).ok()?,
        Value::Bool(b) => rmp::encode::write_bool(out, *b).ok()?,
        Value::Number(n) => {
            let float = matches!(context, Context::Float | Context::BookLevels);
            if let (false, Some(i)) = (float, n.as_i64()) {
                rmp::encode::write_sint(out, i).ok()?;
            } else if let (false, Some(u)) = (float, n.as_u64()) {
                rmp::encode::write_uint(out, u).ok()?;
            } else {
                rmp::encode::write_f64(out, n.as_f64()?).ok()?;
            }
        }
        Value::String(s) => match (context, Timestamp::parse_rfc3339(s)) {
            (Context::Time, Ok(ts)) => {
                let payload = ts.to_msgpack_ext();
                rmp::encode::write_ext_meta(out, payload.len() as u32, -1).ok()?;
                out.extend_from_slice(&payload);
            }
            _ => rmp::encode::write_str(out, s).ok()?,
        },
        Value::Array(items) => {
            rmp::encode::write_array_len(out, items.len() as u32).ok()?;
            for item in items {
                write_msgpack(item, out, context, depth + 1)?;
            }
        }
        Value::Object(map) => {
            rmp::encode::write_map_len(out, map.len() as u32).ok()?;
            for (key, value) in map {
                rmp::encode::write_str(out, key).ok()?;
                let inner = if context == Context::BookLevels {
                    Context::BookLevels
                } else {
                    Context::Plain
                };
                write_msgpack(value, out, inner, depth + 1)?;
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_frame(elements: &[&str]) -> Bytes {
        Bytes::from(format!("[{}]", elements.join(",")))
    }

    const TRADE: &str = r#"{"T":"t","i":96921,"S":"AAPL","x":"D","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z","c":["@","I"],"z":"C"}"#;
    const BAR: &str = r#"{"T":"b","S":"SPY","o":388.985,"h":389,"l":388.975,"c":389.12,"v":49378,"n":461,"vw":389.062639,"t":"2021-02-22T19:15:00Z"}"#;

    #[test]
    fn json_frames_keep_their_bytes_and_skip_control_messages() {
        let frame = json_frame(&[TRADE, r#"{"T":"success","msg":"authenticated"}"#, BAR]);
        let out = split(&frame, false, FeedKind::Stocks, true, false);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].channel, Channel::Trades);
        assert_eq!(out[0].symbol.as_str(), "AAPL");
        assert_eq!(&out[0].json[..], TRADE.as_bytes());
        assert_eq!(&out[1].json[..], BAR.as_bytes());
        assert!(out[0].msgpack.is_empty());
    }

    #[test]
    fn json_to_msgpack_puts_t_first_and_types_fields_as_alpaca_does() {
        let frame = json_frame(&[BAR]);
        let out = split(&frame, false, FeedKind::Stocks, false, true);
        let packed = &out[0].msgpack;
        // T is the first key.
        assert_eq!(&packed[1..4], &[0xa1, b'T', 0xa1]);
        let v: rmpv::Value = rmpv::decode::read_value(&mut &packed[..]).unwrap();
        let get = |k: &str| {
            v.as_map()
                .unwrap()
                .iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert!(get("h").is_f64(), "h:389 is a price: a float");
        assert!(get("v").is_u64(), "stock volume stays an integer");
        assert!(get("n").is_u64());
        let rmpv::Value::Ext(-1, payload) = get("t") else {
            panic!("t is a Timestamp extension");
        };
        assert_eq!(
            Timestamp::from_msgpack_ext(&payload).unwrap().to_rfc3339(),
            "2021-02-22T19:15:00Z"
        );
    }

    #[test]
    fn crypto_sizes_are_floats_and_book_levels_too() {
        let book = r#"{"T":"o","S":"BTC/USD","t":"2024-03-12T10:39:39.445492807Z","b":[{"p":71000,"s":1}],"a":[],"r":true}"#;
        let out = split(&json_frame(&[book]), false, FeedKind::Crypto, false, true);
        let v: rmpv::Value = rmpv::decode::read_value(&mut &out[0].msgpack[..]).unwrap();
        let map = v.as_map().unwrap();
        let bids = map.iter().find(|(k, _)| k.as_str() == Some("b")).unwrap();
        let level = bids.1.as_array().unwrap()[0].as_map().unwrap();
        assert!(level.iter().all(|(_, v)| v.is_f64()), "{level:?}");
        let reset = map.iter().find(|(k, _)| k.as_str() == Some("r")).unwrap();
        assert_eq!(reset.1.as_bool(), Some(true));
    }

    #[test]
    fn msgpack_round_trips_to_the_same_json() {
        let packed = json_to_msgpack(TRADE, "t", false).unwrap();
        let mut frame = vec![0x91];
        frame.extend_from_slice(&packed);
        let frame = Bytes::from(frame);
        let out = split(&frame, true, FeedKind::Stocks, true, true);
        assert_eq!(out.len(), 1);
        assert_eq!(
            &out[0].msgpack[..],
            &packed[..],
            "msgpack passes through untouched"
        );
        let back: Value = serde_json::from_slice(&out[0].json).unwrap();
        let original: Value = serde_json::from_str(TRADE).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn news_routes_by_its_symbols() {
        let news = r#"{"T":"n","id":24918784,"headline":"H","summary":"","author":"A","created_at":"2022-01-05T22:00:37Z","updated_at":"2022-01-05T22:00:38Z","url":null,"content":"<p>x</p>","symbols":["CRSR","AAPL"],"source":"benzinga"}"#;
        let out = split(&json_frame(&[news]), false, FeedKind::News, true, true);
        assert_eq!(out[0].channel, Channel::News);
        let symbols: Vec<&str> = out[0]
            .news_symbols
            .as_deref()
            .unwrap()
            .iter()
            .map(Symbol::as_str)
            .collect();
        assert_eq!(symbols, ["CRSR", "AAPL"]);
        let mut back = String::new();
        msgpack_to_json(&out[0].msgpack, &mut back).unwrap();
        let back: Value = serde_json::from_str(&back).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(news).unwrap());
    }

    #[test]
    fn damaged_input_yields_nothing_rather_than_garbage() {
        assert!(split(
            &Bytes::from_static(b"[{\"T\":"),
            false,
            FeedKind::Stocks,
            true,
            true
        )
        .is_empty());
        assert!(split(
            &Bytes::from_static(&[0x91, 0x82, 0xa1]),
            true,
            FeedKind::Stocks,
            true,
            true
        )
        .is_empty());
        let mut deep = String::new();
        assert!(msgpack_to_json(&[0x91; 64], &mut deep).is_none());
    }
}
