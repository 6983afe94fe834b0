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

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use bytestring::ByteString;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::decode::Text;
use super::msgpack::msgpack_value_len;

use crate::downstream::delivery::RawElement;
use crate::time::Timestamp;
use crate::vocab::Channel;
use crate::vocab::FeedKind;

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

/// What is needed of a message to route it (JSON; strings borrowed when unescaped).
#[derive(Debug, Default, Deserialize)]
struct Peek<'a> {
    #[serde(rename = "T", borrow)]
    t: Option<Cow<'a, str>>,
    #[serde(rename = "S", borrow)]
    s: Option<Cow<'a, str>>,
    #[serde(borrow)]
    symbols: Option<Vec<Cow<'a, str>>>,
}

/// A string of the frame as a `ByteString` sharing the frame's bytes (or a copy of an unescaped
/// JSON string).
fn shared(frame: &Bytes, text: &str) -> ByteString {
    let base = frame.as_ptr() as usize;
    let at = text.as_ptr() as usize;
    if at >= base && at + text.len() <= base + frame.len() {
        // SAFETY: the slice is `text`, valid UTF-8.
        unsafe { ByteString::from_bytes_unchecked(frame.slice_ref(text.as_bytes())) }
    } else {
        ByteString::from(text.to_owned())
    }
}

/// The market messages of one frame; `json`/`msgpack` say which encodings to produce.
pub fn split(
    frame: &Bytes,
    binary: bool,
    feed: FeedKind,
    json: bool,
    msgpack: bool,
) -> Vec<RawElement> {
    if binary {
        split_msgpack(frame, feed, json, msgpack)
    } else {
        split_json(frame, feed, json, msgpack)
    }
}

fn split_msgpack(frame: &Bytes, feed: FeedKind, json: bool, msgpack: bool) -> Vec<RawElement> {
    let mut out = Vec::new();
    let Some((count, mut pos)) = read_array_len(frame) else {
        return out;
    };
    out.reserve(count.min(1024));
    for _ in 0..count {
        let rest = &frame[pos..];
        // One walk of the element: its routing keys and its length.
        let Some((routing, len)) = peek_msgpack(rest) else {
            return out; // the rest of the frame cannot be delimited
        };
        let e = &rest[..len];
        pos += len;
        let Some(channel) = routing.channel(feed) else {
            continue;
        };
        let json_text = if json {
            let mut text = String::with_capacity(e.len() * 2);
            if msgpack_to_json(e, &mut text).is_none() {
                continue;
            }
            Bytes::from(text)
        } else {
            Bytes::new()
        };
        out.push(RawElement {
            channel,
            symbol: routing.s.map_or_else(ByteString::new, |s| shared(frame, s)),
            news_symbols: routing
                .symbols
                .map(|list| list.iter().map(|s| shared(frame, s)).collect()),
            msgpack: if msgpack {
                frame.slice_ref(e)
            } else {
                Bytes::new()
            },
            json: json_text,
        });
    }
    out
}

fn split_json(frame: &Bytes, feed: FeedKind, json: bool, msgpack: bool) -> Vec<RawElement> {
    let mut out = Vec::new();
    let Ok(elements) = serde_json::from_slice::<Vec<&RawValue>>(frame) else {
        return out;
    };
    let crypto = feed == FeedKind::Crypto;
    for e in elements {
        let Ok(peek) = serde_json::from_str::<Peek<'_>>(e.get()) else {
            continue;
        };
        let t = peek.t.as_deref().unwrap_or_default();
        let routing = Routing {
            t,
            s: peek.s.as_deref(),
            symbols: None,
        };
        let Some(channel) = routing.channel(feed) else {
            continue;
        };
        let packed = if msgpack {
            match json_to_msgpack(e.get(), t, crypto) {
                Some(p) => Bytes::from(p),
                None => continue,
            }
        } else {
            Bytes::new()
        };
        out.push(RawElement {
            channel,
            symbol: peek
                .s
                .as_deref()
                .map_or_else(ByteString::new, |s| shared(frame, s)),
            news_symbols: peek
                .symbols
                .map(|list| list.iter().map(|s| shared(frame, s)).collect()),
            msgpack: packed,
            json: if json {
                frame.slice_ref(e.get().as_bytes())
            } else {
                Bytes::new()
            },
        });
    }
    out
}

/// The routing keys of one message.
struct Routing<'a> {
    t: &'a str,
    s: Option<&'a str>,
    symbols: Option<Vec<&'a str>>,
}

impl Routing<'_> {
    /// The channel of a market message this feed carries, with what it needs to be routed (a
    /// symbol; news: its list).
    fn channel(&self, feed: FeedKind) -> Option<Channel> {
        let channel = channel_of(self.t)?;
        if !feed.channels().contains(&channel) {
            return None;
        }
        if channel != Channel::News && self.s.is_none_or(str::is_empty) {
            return None;
        }
        Some(channel)
    }
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

/// The routing keys of the msgpack map at the start of `data`, and the map's length in bytes.
fn peek_msgpack(data: &[u8]) -> Option<(Routing<'_>, usize)> {
    let (entries, mut pos) = read_map_len(data)?;
    let mut routing = Routing {
        t: "",
        s: None,
        symbols: None,
    };
    for _ in 0..entries {
        let (key, n) = read_str(data.get(pos..)?)?;
        pos += n;
        let value = data.get(pos..)?;
        let len = match key {
            "T" | "S" => match read_str(value) {
                Some((text, n)) => {
                    if key == "T" {
                        routing.t = text;
                    } else {
                        routing.s = Some(text);
                    }
                    n
                }
                None => msgpack_value_len(value)?,
            },
            "symbols" => match read_array_len(value) {
                Some((count, mut at)) => {
                    let mut symbols = Vec::with_capacity(count.min(64));
                    for _ in 0..count {
                        let (text, n) = read_str(value.get(at..)?)?;
                        symbols.push(text);
                        at += n;
                    }
                    routing.symbols = Some(symbols);
                    at
                }
                None => msgpack_value_len(value)?,
            },
            _ => msgpack_value_len(value)?,
        };
        pos += len;
    }
    Some((routing, pos))
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
    // Symbols, codes and most text need no escaping: copied as they are.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
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
///
/// Alpaca writes `T` first: such a message is transcoded in one streaming pass, each value written
/// as it is read (maps and arrays get a one-byte header, completed once their length is known:
/// fixmap or fixarray as Alpaca writes them, or 16-bit lengths for the rare longer ones).
/// Any other message goes through a `serde_json::Value`.
pub fn json_to_msgpack(text: &str, t: &str, crypto: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut de = serde_json::Deserializer::from_str(text);
    if de::DeserializeSeed::deserialize(
        Message {
            out: &mut out,
            crypto,
        },
        &mut de,
    )
    .is_ok()
        && de.end().is_ok()
    {
        return Some(out);
    }
    json_to_msgpack_slowly(text, t, crypto)
}

fn json_to_msgpack_slowly(text: &str, t: &str, crypto: bool) -> Option<Vec<u8>> {
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
        write_msgpack(value, &mut out, Context::of(t, key, crypto), 0)?;
    }
    Some(out)
}

/// Writes a one-byte header for a map (`0xde`) or array (`0xdc`) whose length is not known yet;
/// answers where it is, for [`close_container`].
fn open_container(out: &mut Vec<u8>, marker: u8) -> usize {
    out.push(marker);
    out.len() - 1
}

fn close_container<E: de::Error>(out: &mut Vec<u8>, at: usize, count: usize) -> Result<(), E> {
    let map = out[at] == 0xde;
    if count < 16 {
        // The shortest header, as Alpaca writes it: fixmap (0x80 | n) or fixarray (0x90 | n).
        out[at] = if map { 0x80 } else { 0x90 } | count as u8;
        return Ok(());
    }
    // Rare (16 entries or more): map16 or array16, the content moved two bytes on (containers
    // opened before this one start before it, so their positions hold).
    let n = u16::try_from(count).map_err(|_| E::custom("more than 65535 entries"))?;
    out.splice(at + 1..at + 1, n.to_be_bytes());
    Ok(())
}

/// The top-level message: its first key must be `T`, whose value types the rest.
struct Message<'o> {
    out: &'o mut Vec<u8>,
    crypto: bool,
}

impl<'de> de::DeserializeSeed<'de> for Message<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Message<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a message whose first key is T")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = open_container(self.out, 0xde);
        match map.next_key::<Text<'de>>()? {
            Some(k) if k.0 == "T" => {}
            _ => return Err(de::Error::custom("T is not the first key")),
        }
        let t = map.next_value::<Text<'de>>()?.0;
        write_key(self.out, "T");
        write_key(self.out, &t);
        let mut count = 1;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            write_key(self.out, &key);
            let context = Context::of(&t, &key, self.crypto);
            map.next_value_seed(Streamed {
                out: self.out,
                context,
                depth: 1,
            })?;
            count += 1;
        }
        close_container(self.out, at, count)
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_str(out, key);
}

/// Any value, written as msgpack as it is read.
struct Streamed<'o> {
    out: &'o mut Vec<u8>,
    context: Context,
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for Streamed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Streamed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.push(0xc0);
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.out.push(if v { 0xc3 } else { 0xc2 });
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        if matches!(self.context, Context::Float | Context::BookLevels) {
            return self.visit_f64(v as f64);
        }
        let _ = rmp::encode::write_sint(self.out, v);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        if matches!(self.context, Context::Float | Context::BookLevels) {
            return self.visit_f64(v as f64);
        }
        let _ = rmp::encode::write_uint(self.out, v);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let _ = rmp::encode::write_f64(self.out, v);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match (self.context, Timestamp::parse_rfc3339(v)) {
            (Context::Time, Ok(ts)) => {
                let payload = ts.to_msgpack_ext();
                let _ = rmp::encode::write_ext_meta(self.out, payload.len() as u32, -1);
                self.out.extend_from_slice(&payload);
            }
            _ => write_key(self.out, v),
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom("nested too deep"));
        }
        let at = open_container(self.out, 0xdc);
        let mut count = 0;
        while seq
            .next_element_seed(Streamed {
                out: self.out,
                context: self.context,
                depth: self.depth + 1,
            })?
            .is_some()
        {
            count += 1;
        }
        close_container(self.out, at, count)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom("nested too deep"));
        }
        let at = open_container(self.out, 0xde);
        let inner = if self.context == Context::BookLevels {
            Context::BookLevels
        } else {
            Context::Plain
        };
        let mut count = 0;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            write_key(self.out, &key);
            map.next_value_seed(Streamed {
                out: self.out,
                context: inner,
                depth: self.depth + 1,
            })?;
            count += 1;
        }
        close_container(self.out, at, count)
    }
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

impl Context {
    /// How the value of `key` in a message of type `t` is typed.
    fn of(t: &str, key: &str, crypto: bool) -> Context {
        if t == "o" && matches!(key, "b" | "a") {
            Context::BookLevels
        } else if is_time_key(key) {
            Context::Time
        } else if is_float_key(t, key, crypto) {
            Context::Float
        } else {
            Context::Plain
        }
    }
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
        assert_eq!(&*out[0].symbol, "AAPL");
        assert_eq!(&out[0].json[..], TRADE.as_bytes());
        assert_eq!(&out[1].json[..], BAR.as_bytes());
        assert!(out[0].msgpack.is_empty());
    }

    #[test]
    fn json_to_msgpack_puts_t_first_and_types_fields_as_alpaca_does() {
        let frame = json_frame(&[BAR]);
        let out = split(&frame, false, FeedKind::Stocks, false, true);
        let packed = &out[0].msgpack;
        let v: rmpv::Value = rmpv::decode::read_value(&mut &packed[..]).unwrap();
        assert_eq!(
            v.as_map().unwrap()[0].0.as_str(),
            Some("T"),
            "T is the first key"
        );
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
    fn json_to_msgpack_writes_the_shortest_headers_as_alpaca_does() {
        let book = r#"{"T":"o","S":"BTC/USD","t":"2024-03-12T10:39:39.445492807Z","b":[{"p":71000,"s":1}],"a":[],"r":true}"#;
        let many = format!(
            r#"{{"T":"t","S":"AAPL","i":1,"x":"V","p":1.5,"s":1,"c":[{}],"z":"C","t":"2021-02-22T19:15:00Z"}}"#,
            (0..20)
                .map(|i| format!("\"{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        for (text, t, crypto) in [
            (TRADE, "t", false),
            (BAR, "b", false),
            (book, "o", true),
            (&many, "t", false),
        ] {
            // The slow path (rmp's writers, which know the lengths and pick the shortest
            // headers) orders keys differently: the same values in as many bytes.
            let fast = json_to_msgpack(text, t, crypto).unwrap();
            let slow = json_to_msgpack_slowly(text, t, crypto).unwrap();
            assert_eq!(fast.len(), slow.len(), "{text}: the shortest headers");
            let decode = |b: &[u8]| rmpv::decode::read_value(&mut &b[..]).unwrap();
            let sorted = |v: rmpv::Value| {
                let mut m = v.as_map().unwrap().clone();
                m.sort_by_key(|(k, _)| k.as_str().map(str::to_owned));
                m
            };
            assert_eq!(sorted(decode(&fast)), sorted(decode(&slow)), "{text}");
        }
        let packed = json_to_msgpack(TRADE, "t", false).unwrap();
        assert_eq!(packed[0] & 0xf0, 0x80, "a fixmap: {:#x}", packed[0]);
        // 20 conditions: array16.
        let packed = json_to_msgpack(&many, "t", false).unwrap();
        assert!(packed.windows(3).any(|w| w == [0xdc, 0, 20]));
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
            .map(|s| &**s)
            .collect();
        assert_eq!(symbols, ["CRSR", "AAPL"]);
        // And from msgpack, sharing the frame's bytes.
        let mut frame = vec![0x91];
        frame.extend_from_slice(&out[0].msgpack);
        let again = split(&Bytes::from(frame), true, FeedKind::News, false, true);
        assert_eq!(again[0].news_symbols.as_deref().unwrap().len(), 2);
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
/// The instruction count of a transcoded quote, under callgrind (BENCHMARKS.md).
#[cfg(test)]
mod transcode_cost {
    #[test]
    #[ignore]
    fn transcode_many() {
        let q = r#"{"T":"q","S":"AAPL","bx":"V","bp":190.12,"bs":2,"ax":"Q","ap":190.16,"as":3,"c":["R"],"z":"C","t":"2026-01-20T15:04:05.123456789Z"}"#;
        let mut n = 0;
        for _ in 0..200_000 {
            n += super::json_to_msgpack(std::hint::black_box(q), "q", false)
                .unwrap()
                .len();
        }
        assert!(n > 0);
    }
}
