//! Alpaca's market-data stream protocol, as pure decode/encode functions.
//!
//! A server frame is an array of maps, each with a type tag `T` (`success`, `error`,
//! `subscription`, `q`, `t`, `b`, `o`, `n`, …), sent as JSON text or — when the client asks with
//! `Content-Type: application/msgpack`, and always on the options streams — as msgpack binary with
//! timestamps in the msgpack Timestamp extension. Decoding goes through one flat struct
//! ([`RawMsg`]) whose fields cover every message type; the few keys whose type depends on `T` (`c`
//! is a condition list in stock trades, a single string in option trades and the close price in
//! bars; `i` a trade id or an indicator; `a` an action or the asks of a book) are read as [`Loose`]
//! values and interpreted once `T` is known. This dispatches on `T` in a single pass and works
//! unchanged for JSON (serde_json) and msgpack (rmp-serde), keeping integers and floats apart.
//!
//! A malformed frame is an error for the caller to log and skip; a frame with a few malformed
//! elements yields the good ones plus [`Inbound::Malformed`] entries for the rest.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::market::{Bar, BarKind, BookUpdate, Level, MarketEvent, NewsArticle, Num, Quote, Trade};
use crate::settings::Credentials;
use crate::symbol::{Symbol, WILDCARD};
use crate::time::Timestamp;

/// How a stream encodes its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JSON text frames (Alpaca's default).
    Json,
    /// msgpack binary frames, requested with `Content-Type: application/msgpack`.
    Msgpack,
}

impl Encoding {
    /// The `Content-Type` header that asks the server for this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Msgpack => "application/msgpack",
        }
    }
}

/// A subscribable upstream channel (the keys of Alpaca's subscribe message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Trades,
    Quotes,
    Bars,
    DailyBars,
    UpdatedBars,
    Statuses,
    Lulds,
    Imbalances,
    Orderbooks,
    News,
}

impl Channel {
    /// The channels of the stocks streams.
    pub const STOCKS: &'static [Channel] = &[
        Channel::Trades,
        Channel::Quotes,
        Channel::Bars,
        Channel::DailyBars,
        Channel::UpdatedBars,
        Channel::Statuses,
        Channel::Lulds,
        Channel::Imbalances,
    ];
    /// The channels of the crypto streams.
    pub const CRYPTO: &'static [Channel] = &[
        Channel::Trades,
        Channel::Quotes,
        Channel::Bars,
        Channel::UpdatedBars,
        Channel::DailyBars,
        Channel::Orderbooks,
    ];
    /// The channels of the options streams.
    pub const OPTIONS: &'static [Channel] = &[Channel::Trades, Channel::Quotes];
    /// The channel of the news stream.
    pub const NEWS: &'static [Channel] = &[Channel::News];
    const ALL: &'static [Channel] = &[
        Channel::Trades,
        Channel::Quotes,
        Channel::Bars,
        Channel::DailyBars,
        Channel::UpdatedBars,
        Channel::Statuses,
        Channel::Lulds,
        Channel::Imbalances,
        Channel::Orderbooks,
        Channel::News,
    ];

    /// The key in subscribe messages and acks.
    pub fn key(self) -> &'static str {
        match self {
            Channel::Trades => "trades",
            Channel::Quotes => "quotes",
            Channel::Bars => "bars",
            Channel::DailyBars => "dailyBars",
            Channel::UpdatedBars => "updatedBars",
            Channel::Statuses => "statuses",
            Channel::Lulds => "lulds",
            Channel::Imbalances => "imbalances",
            Channel::Orderbooks => "orderbooks",
            Channel::News => "news",
        }
    }

    pub fn from_key(key: &str) -> Option<Channel> {
        Channel::ALL.iter().copied().find(|c| c.key() == key)
    }
}

/// A set of (channel, symbol) subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionSet(BTreeMap<Channel, BTreeSet<Symbol>>);

impl SubscriptionSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, channel: Channel, symbol: Symbol) -> bool {
        self.0.entry(channel).or_default().insert(symbol)
    }

    pub fn contains(&self, channel: Channel, symbol: &str) -> bool {
        self.0.get(&channel).is_some_and(|s| s.contains(symbol))
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeSet::is_empty)
    }

    /// Number of (channel, symbol) pairs.
    pub fn len(&self) -> usize {
        self.0.values().map(BTreeSet::len).sum()
    }

    /// Distinct symbols over all channels.
    pub fn symbols(&self) -> BTreeSet<Symbol> {
        self.0.values().flatten().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Channel, &BTreeSet<Symbol>)> {
        self.0
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(c, s)| (*c, s))
    }

    /// What `self` has that `other` lacks.
    pub fn difference(&self, other: &SubscriptionSet) -> SubscriptionSet {
        let mut out = SubscriptionSet::new();
        for (channel, symbols) in self.iter() {
            for s in symbols {
                if !other.contains(channel, s.as_str()) {
                    out.insert(channel, s.clone());
                }
            }
        }
        out
    }

    /// The same set without any of `symbols`.
    pub fn without_symbols(&self, symbols: &[Symbol]) -> SubscriptionSet {
        let mut out = self.clone();
        for set in out.0.values_mut() {
            set.retain(|s| !symbols.contains(s));
        }
        out
    }

    /// Splits into sets of at most `max` pairs, so no single message grows without bound.
    pub fn chunks(&self, max: usize) -> Vec<SubscriptionSet> {
        let mut out = vec![];
        let mut cur = SubscriptionSet::new();
        for (channel, symbols) in self.iter() {
            for s in symbols {
                if cur.len() == max {
                    out.push(std::mem::take(&mut cur));
                }
                cur.insert(channel, s.clone());
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

/// One decoded element of a server frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound<'a> {
    /// `{"T":"success","msg":"connected"}` — the server's greeting.
    Connected,
    /// `{"T":"success","msg":"authenticated"}`.
    Authenticated,
    /// Any other success message.
    Success(String),
    /// `{"T":"error","code":…,"msg":…}`.
    Error { code: u16, msg: String },
    /// `{"T":"subscription",…}`: the server's full current subscription set.
    Subscription(SubscriptionSet),
    /// A quote, trade, bar or book update for `symbol`.
    Market {
        symbol: Cow<'a, str>,
        event: MarketEvent,
    },
    /// A news article.
    News(NewsArticle),
    /// A message that is decoded and counted but not forwarded (statuses, LULDs, corrections,
    /// cancel/errors, imbalances).
    Info { kind: InfoKind, symbol: String },
    /// A type tag this version does not know; skipped, as Alpaca asks clients to do.
    Unknown(String),
    /// An element that could not be decoded; the rest of the frame is still used.
    Malformed(String),
}

/// Messages tickrelay reads but does not fan out (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoKind {
    TradingStatus,
    Luld,
    Correction,
    CancelError,
    Imbalance,
}

/// Why a frame could not be decoded at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON array of messages: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a msgpack array of messages: {0}")]
    Msgpack(String),
    #[error("text frame is not UTF-8")]
    Utf8,
}

/// Decodes a frame: text frames are JSON; binary frames are msgpack, or JSON when the stream is
/// JSON (some servers send JSON text in binary frames).
pub fn decode(
    data: &[u8],
    binary: bool,
    encoding: Encoding,
) -> Result<Vec<Inbound<'_>>, DecodeError> {
    if binary && (encoding == Encoding::Msgpack || !looks_like_json(data)) {
        decode_msgpack(data)
    } else {
        decode_json(std::str::from_utf8(data).map_err(|_| DecodeError::Utf8)?)
    }
}

fn looks_like_json(data: &[u8]) -> bool {
    data.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'[' | b'{'))
}

/// Decodes one JSON text frame.
pub fn decode_json(text: &str) -> Result<Vec<Inbound<'_>>, DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    match de
        .deserialize_seq(FrameVisitor)
        .and_then(|v| de.end().map(|()| v))
    {
        Ok(messages) => Ok(messages),
        // Salvage what can be salvaged: decode element by element.
        Err(_) => {
            let elements: Vec<&serde_json::value::RawValue> = serde_json::from_str(text)?;
            Ok(elements
                .into_iter()
                .map(|el| match serde_json::from_str::<RawMsg<'_>>(el.get()) {
                    Ok(raw) => raw.into_inbound(),
                    Err(e) => Inbound::Malformed(format!("{e} in {}", truncate(el.get(), 120))),
                })
                .collect())
        }
    }
}

/// Decodes one msgpack binary frame (an array of maps).
pub fn decode_msgpack(data: &[u8]) -> Result<Vec<Inbound<'_>>, DecodeError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(data);
    match de.deserialize_seq(FrameVisitor) {
        Ok(messages) if de.get_ref().is_empty() => Ok(messages),
        // Salvage: find each element's bytes and decode them one by one.
        _ => {
            let elements = msgpack_array_elements(data).ok_or_else(|| {
                DecodeError::Msgpack(format!("{} bytes that are not an array", data.len()))
            })?;
            Ok(elements
                .into_iter()
                .map(|el| match rmp_serde::from_slice::<RawMsg<'_>>(el) {
                    Ok(raw) => raw.into_inbound(),
                    Err(e) => {
                        Inbound::Malformed(format!("{e} in a {}-byte msgpack element", el.len()))
                    }
                })
                .collect())
        }
    }
}

/// The byte slices of the elements of a msgpack array, or `None` if `data` is not exactly one
/// well-formed array.
pub fn msgpack_array_elements(data: &[u8]) -> Option<Vec<&[u8]>> {
    let (count, header) = match *data.first()? {
        m @ 0x90..=0x9f => (usize::from(m & 0x0f), 1),
        0xdc => (
            usize::from(u16::from_be_bytes(data.get(1..3)?.try_into().ok()?)),
            3,
        ),
        0xdd => (
            u32::from_be_bytes(data.get(1..5)?.try_into().ok()?) as usize,
            5,
        ),
        _ => return None,
    };
    let mut out = Vec::with_capacity(count.min(data.len()));
    let mut rest = &data[header..];
    for _ in 0..count {
        let len = msgpack_value_len(rest)?;
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    rest.is_empty().then_some(out)
}

/// The length in bytes of the one msgpack value at the start of `data`, or `None` when it is
/// truncated or malformed. Iterative, so hostile nesting cannot overflow the stack.
pub fn msgpack_value_len(data: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    let mut pending = 1usize; // values still to skip
    while pending > 0 {
        pending -= 1;
        let marker = *data.get(pos)?;
        let be = |at: usize, n: usize| -> Option<usize> {
            let bytes = data.get(at..at + n)?;
            Some(
                bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
            )
        };
        let (head, body, children) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
            0x80..=0x8f => (1, 0, 2 * usize::from(marker & 0x0f)),
            0x90..=0x9f => (1, 0, usize::from(marker & 0x0f)),
            0xa0..=0xbf => (1, usize::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (2, be(pos + 1, 1)?, 0),
            0xc5 | 0xda => (3, be(pos + 1, 2)?, 0),
            0xc6 | 0xdb => (5, be(pos + 1, 4)?, 0),
            0xc7 => (3, be(pos + 1, 1)?, 0),
            0xc8 => (4, be(pos + 1, 2)?, 0),
            0xc9 => (6, be(pos + 1, 4)?, 0),
            0xca | 0xce | 0xd2 => (5, 0, 0),
            0xcb | 0xcf | 0xd3 => (9, 0, 0),
            0xcc | 0xd0 => (2, 0, 0),
            0xcd | 0xd1 => (3, 0, 0),
            0xd4 => (3, 0, 0),
            0xd5 => (4, 0, 0),
            0xd6 => (6, 0, 0),
            0xd7 => (10, 0, 0),
            0xd8 => (18, 0, 0),
            0xdc => (3, 0, be(pos + 1, 2)?),
            0xdd => (5, 0, be(pos + 1, 4)?),
            0xde => (3, 0, 2 * be(pos + 1, 2)?),
            0xdf => (5, 0, 2 * be(pos + 1, 4)?),
            0xc1 => return None,
        };
        pos = pos.checked_add(head)?.checked_add(body)?;
        if pos > data.len() {
            return None;
        }
        // Every value takes at least one byte: more pending values than bytes left is malformed.
        pending = pending.checked_add(children)?;
        if pending > data.len() - pos {
            return None;
        }
    }
    Some(pos)
}

/// Turns each array element into an [`Inbound`] as it is read, so the large flat [`RawMsg`]
/// never sits in a vector.
struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Vec<Inbound<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(1024));
        while let Some(raw) = seq.next_element::<RawMsg<'de>>()? {
            out.push(raw.into_inbound());
        }
        Ok(out)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A message for the server, in the stream's encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Text(String),
    Binary(Vec<u8>),
}

/// Encodes a client message (auth, subscribe, …) as the stream expects it.
pub fn encode_client(message: &serde_json::Value, encoding: Encoding) -> ClientFrame {
    match encoding {
        Encoding::Json => ClientFrame::Text(message.to_string()),
        // Maps of strings, lists and numbers always encode.
        Encoding::Msgpack => {
            ClientFrame::Binary(rmp_serde::to_vec_named(message).unwrap_or_default())
        }
    }
}

/// The auth message. It contains the secret: send it, never log it.
pub fn auth_message(credentials: &Credentials) -> serde_json::Value {
    serde_json::json!({
        "action": "auth",
        "key": credentials.key_id.expose(),
        "secret": credentials.secret_key.expose(),
    })
}

/// A `subscribe` or `unsubscribe` message for `set`.
pub fn subscription_message(action: &str, set: &SubscriptionSet) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("action".into(), action.into());
    for (channel, symbols) in set.iter() {
        map.insert(
            channel.key().into(),
            symbols
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .into(),
        );
    }
    serde_json::Value::Object(map)
}

/// The name Alpaca gives an error code, for logs and status (`406` → `connection limit exceeded`).
pub fn error_name(code: u16) -> &'static str {
    match code {
        400 => "invalid syntax",
        401 => "not authenticated",
        402 => "auth failed",
        403 => "already authenticated",
        404 => "auth timeout",
        405 => "symbol limit exceeded",
        406 => "connection limit exceeded",
        407 => "slow client",
        408 => "v2 not enabled",
        409 => "insufficient subscription",
        410 => "invalid subscribe action for this feed",
        411 => "insufficient scope",
        412 => "option messages are only available in MsgPack format",
        413 => "star subscription is not allowed for option quotes",
        500 => "internal error",
        _ => "unknown error",
    }
}

/// A string that borrows from the input when it can (no escapes) and owns otherwise.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A value whose type depends on the message type.
#[derive(Debug, Clone, PartialEq)]
enum Loose<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    List(Vec<Loose<'a>>),
    Map(Vec<(Cow<'a, str>, Loose<'a>)>),
    Time(Timestamp),
}

impl<'a> Loose<'a> {
    fn num(&self) -> Option<Num> {
        match *self {
            Loose::Int(v) => Some(Num::Int(v)),
            Loose::Float(v) => Some(Num::Float(v)),
            _ => None,
        }
    }

    fn f64(&self) -> Option<f64> {
        self.num().map(Num::as_f64)
    }

    fn int(&self) -> Option<i64> {
        match *self {
            Loose::Int(v) => Some(v),
            _ => None,
        }
    }

    fn boolean(&self) -> Option<bool> {
        match *self {
            Loose::Bool(v) => Some(v),
            _ => None,
        }
    }

    fn strings(&self) -> Option<Vec<Box<str>>> {
        match self {
            Loose::List(items) => items
                .iter()
                .map(|i| match i {
                    Loose::Str(s) => Some(Box::from(s.as_ref())),
                    _ => None,
                })
                .collect(),
            Loose::Str(s) => Some(vec![Box::from(s.as_ref())]),
            _ => None,
        }
    }

    /// `[{"p":…,"s":…}, …]`, the price levels of a book.
    fn levels(&self) -> Option<Vec<Level>> {
        let Loose::List(items) = self else {
            return None;
        };
        items
            .iter()
            .map(|item| {
                let Loose::Map(fields) = item else {
                    return None;
                };
                let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v);
                Some(Level {
                    price: get("p")?.f64()?,
                    size: get("s")?.num()?,
                })
            })
            .collect()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Loose<'de>, E> {
        Ok(Loose::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Loose<'de>, E> {
        Ok(Loose::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'de>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Loose<'de>, E> {
        Ok(Loose::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Loose<'de>, E> {
        Ok(Loose::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loose<'de>, E> {
        Ok(i64::try_from(v).map_or(Loose::Float(v as f64), Loose::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loose<'de>, E> {
        Ok(Loose::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Loose<'de>, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose<'de>, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Loose<'de>, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Loose<'de>, E> {
        Ok(Loose::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'de>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Loose::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'de>, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<Text<'de>, Loose<'de>>()? {
            out.push((k.0, v));
        }
        Ok(Loose::Map(out))
    }
    /// msgpack extensions (rmp-serde): only timestamps are meaningful to us.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'de>, D::Error> {
        Timestamp::deserialize(d).map(Loose::Time)
    }
}

/// Every field of every market-data message type, flat. Unknown keys are ignored.
///
/// Fields that are rarely present (acks, news, books, control text) are boxed: serde builds and
/// moves this struct for every message, and keeping it small saved about a fifth of decode time.
#[derive(Debug, Deserialize)]
#[allow(clippy::box_collection)]
struct RawMsg<'a> {
    #[serde(rename = "T", borrow)]
    kind: Text<'a>,
    #[serde(rename = "S", borrow, default)]
    symbol: Option<Text<'a>>,
    #[serde(borrow, default)]
    msg: Option<Box<Text<'a>>>,
    #[serde(default)]
    code: Option<i64>,

    // quotes
    #[serde(default)]
    bp: Option<f64>,
    #[serde(default)]
    ap: Option<f64>,
    #[serde(rename = "bs", borrow, default)]
    bid_size: Option<Loose<'a>>,
    #[serde(rename = "as", borrow, default)]
    ask_size: Option<Loose<'a>>,

    // trades (and shared keys)
    #[serde(default)]
    p: Option<f64>,
    #[serde(borrow, default)]
    s: Option<Loose<'a>>,
    #[serde(borrow, default)]
    x: Option<Text<'a>>,
    #[serde(borrow, default)]
    c: Option<Loose<'a>>,
    #[serde(borrow, default)]
    i: Option<Loose<'a>>,
    #[serde(default)]
    t: Option<Timestamp>,

    /// Crypto taker side.
    #[serde(borrow, default)]
    tks: Option<Box<Text<'a>>>,

    // bars
    #[serde(default)]
    o: Option<f64>,
    #[serde(default)]
    h: Option<f64>,
    #[serde(default)]
    l: Option<f64>,
    #[serde(borrow, default)]
    v: Option<Loose<'a>>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    vw: Option<f64>,

    // order books (`a` is also the action of a cancel/error)
    #[serde(borrow, default)]
    b: Option<Box<Loose<'a>>>,
    #[serde(borrow, default)]
    a: Option<Box<Loose<'a>>>,
    #[serde(borrow, default)]
    r: Option<Box<Loose<'a>>>,

    // news
    #[serde(default)]
    id: Option<i64>,
    #[serde(borrow, default)]
    headline: Option<Box<Text<'a>>>,
    #[serde(borrow, default)]
    summary: Option<Box<Text<'a>>>,
    #[serde(borrow, default)]
    author: Option<Box<Text<'a>>>,
    #[serde(borrow, default)]
    url: Option<Box<Text<'a>>>,
    #[serde(borrow, default)]
    source: Option<Box<Text<'a>>>,
    #[serde(borrow, default)]
    symbols: Option<Box<Vec<Text<'a>>>>,
    #[serde(default)]
    created_at: Option<Timestamp>,
    #[serde(default)]
    updated_at: Option<Timestamp>,

    // subscription acks
    #[serde(borrow, default)]
    trades: Option<Box<Vec<Text<'a>>>>,
    #[serde(borrow, default)]
    quotes: Option<Box<Vec<Text<'a>>>>,
    #[serde(borrow, default)]
    bars: Option<Box<Vec<Text<'a>>>>,
    #[serde(rename = "dailyBars", borrow, default)]
    daily_bars: Option<Box<Vec<Text<'a>>>>,
    #[serde(rename = "updatedBars", borrow, default)]
    updated_bars: Option<Box<Vec<Text<'a>>>>,
    #[serde(borrow, default)]
    statuses: Option<Box<Vec<Text<'a>>>>,
    #[serde(borrow, default)]
    lulds: Option<Box<Vec<Text<'a>>>>,
    #[serde(borrow, default)]
    imbalances: Option<Box<Vec<Text<'a>>>>,
    #[serde(borrow, default)]
    orderbooks: Option<Box<Vec<Text<'a>>>>,
    #[serde(borrow, default)]
    news: Option<Box<Vec<Text<'a>>>>,
}

impl<'a> RawMsg<'a> {
    fn into_inbound(self) -> Inbound<'a> {
        match self.kind.0.as_ref() {
            "success" => match self.msg.as_ref().map(|m| m.0.as_ref()) {
                Some("connected") => Inbound::Connected,
                Some("authenticated") => Inbound::Authenticated,
                other => Inbound::Success(other.unwrap_or_default().to_owned()),
            },
            "error" => Inbound::Error {
                code: self.code.and_then(|c| u16::try_from(c).ok()).unwrap_or(0),
                msg: self.msg.map(|m| m.0.into_owned()).unwrap_or_default(),
            },
            "subscription" => Inbound::Subscription(self.ack()),
            "q" => self.quote(),
            "t" => self.trade(),
            "b" => self.bar(BarKind::Minute),
            "d" => self.bar(BarKind::Daily),
            "u" => self.bar(BarKind::Updated),
            "o" => self.book(),
            "n" => self.news(),
            "s" => self.info(InfoKind::TradingStatus),
            "l" => self.info(InfoKind::Luld),
            "c" => self.info(InfoKind::Correction),
            "x" => self.info(InfoKind::CancelError),
            "i" => self.info(InfoKind::Imbalance),
            other => Inbound::Unknown(other.to_owned()),
        }
    }

    fn ack(self) -> SubscriptionSet {
        let mut set = SubscriptionSet::new();
        for (channel, list) in [
            (Channel::Trades, self.trades),
            (Channel::Quotes, self.quotes),
            (Channel::Bars, self.bars),
            (Channel::DailyBars, self.daily_bars),
            (Channel::UpdatedBars, self.updated_bars),
            (Channel::Statuses, self.statuses),
            (Channel::Lulds, self.lulds),
            (Channel::Imbalances, self.imbalances),
            (Channel::Orderbooks, self.orderbooks),
            (Channel::News, self.news),
        ] {
            for text in list.into_iter().flat_map(|b| *b) {
                if text.0 == WILDCARD {
                    set.insert(channel, Symbol::wildcard());
                } else if let Ok(s) = Symbol::parse(&text.0) {
                    set.insert(channel, s);
                }
            }
        }
        set
    }

    fn market(self, event: Result<MarketEvent, &'static str>) -> Inbound<'a> {
        let kind = self.kind.0;
        match (self.symbol, event) {
            (Some(symbol), Ok(event)) => Inbound::Market {
                symbol: symbol.0,
                event,
            },
            (None, _) => Inbound::Malformed(format!("{kind:?} message without a symbol (S)")),
            (Some(symbol), Err(missing)) => Inbound::Malformed(format!(
                "{kind:?} message for {} lacks or mistypes {missing}",
                symbol.0
            )),
        }
    }

    fn quote(mut self) -> Inbound<'a> {
        let event = (|| {
            Ok(MarketEvent::Quote(Quote {
                bid_price: self.bp.ok_or("bp")?,
                ask_price: self.ap.ok_or("ap")?,
                bid_size: self
                    .bid_size
                    .take()
                    .map_or(Some(Num::Int(0)), |v| v.num())
                    .ok_or("bs")?,
                ask_size: self
                    .ask_size
                    .take()
                    .map_or(Some(Num::Int(0)), |v| v.num())
                    .ok_or("as")?,
                timestamp: self.t.ok_or("t")?,
            }))
        })();
        self.market(event)
    }

    fn trade(mut self) -> Inbound<'a> {
        let event = (|| {
            Ok(MarketEvent::Trade(Trade {
                price: self.p.ok_or("p")?,
                size: self.s.take().and_then(|v| v.num()).ok_or("s")?,
                exchange: self.x.take().map(|x| Box::from(x.0.as_ref())),
                conditions: match self.c.take() {
                    None | Some(Loose::Null) => Vec::new(),
                    Some(c) => c.strings().ok_or("c")?,
                },
                id: self.i.take().and_then(|i| i.int()),
                taker_side: self.tks.take().map(|x| Box::from(x.0.as_ref())),
                timestamp: self.t.ok_or("t")?,
            }))
        })();
        self.market(event)
    }

    fn book(mut self) -> Inbound<'a> {
        let event = (|| {
            let side = |v: Option<Box<Loose<'_>>>, key| match v.as_deref() {
                None | Some(Loose::Null) => Ok(Vec::new()),
                Some(v) => v.levels().ok_or(key),
            };
            Ok(MarketEvent::Book(BookUpdate {
                bids: side(self.b.take(), "b")?,
                asks: side(self.a.take(), "a")?,
                reset: self.r.take().and_then(|r| r.boolean()).unwrap_or(false),
                timestamp: self.t.ok_or("t")?,
            }))
        })();
        self.market(event)
    }

    fn news(self) -> Inbound<'a> {
        let text = |t: Option<Box<Text<'_>>>| t.map(|t| t.0.into_owned()).unwrap_or_default();
        match (self.id, self.headline) {
            (Some(id), Some(headline)) => Inbound::News(NewsArticle {
                id,
                headline: headline.0.into_owned(),
                summary: text(self.summary),
                author: text(self.author),
                url: self.url.map(|u| u.0.into_owned()),
                symbols: self
                    .symbols
                    .map(|b| *b)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| s.0.into_owned())
                    .collect(),
                source: text(self.source),
                created_at: self.created_at,
                updated_at: self.updated_at,
            }),
            _ => Inbound::Malformed("news message without an id or a headline".into()),
        }
    }

    fn bar(mut self, kind: BarKind) -> Inbound<'a> {
        let event = (|| {
            Ok(MarketEvent::Bar(Bar {
                kind,
                open: self.o.ok_or("o")?,
                high: self.h.ok_or("h")?,
                low: self.l.ok_or("l")?,
                close: self.c.take().and_then(|c| c.f64()).ok_or("c")?,
                volume: self.v.take().and_then(|v| v.num()).ok_or("v")?,
                trade_count: self.n,
                vwap: self.vw,
                timestamp: self.t.ok_or("t")?,
            }))
        })();
        self.market(event)
    }

    fn info(self, kind: InfoKind) -> Inbound<'a> {
        Inbound::Info {
            kind,
            symbol: self.symbol.map(|s| s.0.into_owned()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::Level;
    use crate::settings::Secret;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn decodes_control_messages() {
        assert_eq!(
            decode_json(r#"[{"T":"success","msg":"connected"}]"#).unwrap(),
            vec![Inbound::Connected]
        );
        assert_eq!(
            decode_json(r#"[{"T":"success","msg":"authenticated"}]"#).unwrap(),
            vec![Inbound::Authenticated]
        );
        assert_eq!(
            decode_json(r#"[{"T":"error","code":406,"msg":"connection limit exceeded"}]"#).unwrap(),
            vec![Inbound::Error {
                code: 406,
                msg: "connection limit exceeded".into()
            }]
        );
    }

    #[test]
    fn decodes_subscription_ack() {
        let frames = decode_json(
            r#"[{"T":"subscription","trades":["AAPL"],"quotes":["AMD","CLDR"],"bars":["*"],"updatedBars":[],"dailyBars":["VOO"],"statuses":[],"lulds":[],"corrections":["AAPL"],"cancelErrors":["AAPL"]}]"#,
        )
        .unwrap();
        let Inbound::Subscription(set) = &frames[0] else {
            panic!("{frames:?}")
        };
        assert!(set.contains(Channel::Quotes, "AMD"));
        assert!(set.contains(Channel::Trades, "AAPL"));
        assert!(set.contains(Channel::DailyBars, "VOO"));
        assert_eq!(set.len(), 5);
        assert!(set.contains(Channel::Bars, "*"), "the wildcard is kept");
    }

    #[test]
    fn decodes_alpaca_doc_examples() {
        let frame = r#"[
          {"T":"t","i":96921,"S":"AAPL","x":"D","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z","c":["@","I"],"z":"C"},
          {"T":"q","S":"AMD","bx":"U","bp":87.66,"bs":1,"ax":"Q","ap":87.68,"as":4,"t":"2021-02-22T15:51:45.335689322Z","c":["R"],"z":"C"},
          {"T":"b","S":"SPY","o":388.985,"h":389.13,"l":388.975,"c":389.12,"v":49378,"n":461,"vw":389.062639,"t":"2021-02-22T19:15:00Z"},
          {"T":"c","S":"EEM","x":"M","oi":52983525033527,"op":39.1582,"os":440000,"oc":[" ","7"],"ci":52983525034326,"cp":39.1809,"cs":440000,"cc":[" ","7"],"z":"B","t":"2023-04-06T14:25:06.542305024Z"},
          {"T":"x","S":"GOOGL","i":465,"x":"D","p":105.31,"s":300,"a":"C","z":"C","t":"2023-04-06T13:15:42.83540958Z"},
          {"T":"l","S":"IONM","u":3.24,"d":2.65,"i":"B","t":"2023-04-06T13:34:45.565004401Z","z":"C"},
          {"T":"s","S":"AAPL","sc":"H","sm":"Trading Halt","rc":"T12","rm":"Trading Halted","t":"2021-02-22T19:15:00Z","z":"C"},
          {"T":"i","S":"INAQU","p":9.12,"z":"C","t":"2024-12-13T19:58:09.242138635Z"},
          {"T":"d","S":"SPY","o":1,"h":2,"l":0.5,"c":1.5,"v":10,"n":1,"vw":1.2,"t":"2021-02-22T00:00:00Z"},
          {"T":"u","S":"SPY","o":1,"h":2,"l":0.5,"c":1.5,"v":10,"n":1,"vw":1.2,"t":"2021-02-22T19:14:00Z"}
        ]"#;
        let msgs = decode_json(frame).unwrap();
        assert_eq!(msgs.len(), 10);
        assert_eq!(
            msgs[0],
            Inbound::Market {
                symbol: "AAPL".into(),
                event: MarketEvent::Trade(Trade {
                    price: 126.55,
                    size: Num::Int(1),
                    exchange: Some("D".into()),
                    conditions: vec!["@".into(), "I".into()],
                    id: Some(96921),
                    taker_side: None,
                    timestamp: ts("2021-02-22T15:51:44.208Z"),
                })
            }
        );
        assert_eq!(
            msgs[1],
            Inbound::Market {
                symbol: "AMD".into(),
                event: MarketEvent::Quote(Quote {
                    bid_price: 87.66,
                    bid_size: Num::Int(1),
                    ask_price: 87.68,
                    ask_size: Num::Int(4),
                    timestamp: ts("2021-02-22T15:51:45.335689322Z"),
                })
            }
        );
        let Inbound::Market {
            event: MarketEvent::Bar(bar),
            ..
        } = &msgs[2]
        else {
            panic!("{:?}", msgs[2])
        };
        assert_eq!(bar.kind, BarKind::Minute);
        assert_eq!(bar.close, 389.12);
        assert_eq!(bar.volume, Num::Int(49378));
        assert_eq!(bar.trade_count, Some(461));
        let kinds: Vec<_> = msgs[3..8]
            .iter()
            .map(|m| match m {
                Inbound::Info { kind, .. } => *kind,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                InfoKind::Correction,
                InfoKind::CancelError,
                InfoKind::Luld,
                InfoKind::TradingStatus,
                InfoKind::Imbalance
            ]
        );
        assert!(
            matches!(&msgs[8], Inbound::Market { event: MarketEvent::Bar(b), .. } if b.kind == BarKind::Daily)
        );
        assert!(
            matches!(&msgs[9], Inbound::Market { event: MarketEvent::Bar(b), .. } if b.kind == BarKind::Updated)
        );
    }

    #[test]
    fn unknown_types_and_extra_keys_are_tolerated() {
        let msgs = decode_json(
            r#"[{"T":"zz","S":"AAPL"},{"T":"q","N":1,"S":"A","bp":1,"ap":2,"bs":1,"as":1,"t":"2021-02-22T15:51:45Z"}]"#,
        )
        .unwrap();
        assert_eq!(msgs[0], Inbound::Unknown("zz".into()));
        assert!(matches!(msgs[1], Inbound::Market { .. }));
    }

    #[test]
    fn malformed_elements_are_reported_and_the_rest_kept() {
        let msgs = decode_json(
            r#"[{"T":"q","S":"AAPL","bp":"oops","ap":2,"t":"2021-02-22T15:51:45Z"},{"T":"q","S":"MSFT","bp":1,"ap":2,"t":"2021-02-22T15:51:45Z"},{"T":"t","S":"X","p":1}]"#,
        )
        .unwrap();
        assert!(matches!(&msgs[0], Inbound::Malformed(m) if m.contains("oops")));
        assert!(matches!(&msgs[1], Inbound::Market { symbol, .. } if symbol == "MSFT"));
        assert!(matches!(&msgs[2], Inbound::Malformed(m) if m.contains("X")));
    }

    #[test]
    fn garbage_frames_are_errors() {
        for text in ["", "not json", "{\"T\":\"q\"}", "[1,2", "[1]"] {
            let result = decode_json(text);
            let all_malformed =
                matches!(&result, Ok(v) if v.iter().all(|m| matches!(m, Inbound::Malformed(_))));
            assert!(result.is_err() || all_malformed, "{text:?} → {result:?}");
        }
    }

    #[test]
    fn escaped_strings_are_owned_not_rejected() {
        let msgs = decode_json(r#"[{"T":"error","code":400,"msg":"invalid \"syntax\""}]"#).unwrap();
        assert_eq!(
            msgs[0],
            Inbound::Error {
                code: 400,
                msg: "invalid \"syntax\"".into()
            }
        );
    }

    #[test]
    fn encodes_auth_and_subscriptions() {
        let creds = Credentials {
            key_id: Secret::new("KEY"),
            secret_key: Secret::new("SEC"),
        };
        let auth = auth_message(&creds);
        assert_eq!(
            auth,
            serde_json::json!({"action":"auth","key":"KEY","secret":"SEC"})
        );
        let mut set = SubscriptionSet::new();
        set.insert(Channel::Quotes, Symbol::parse("AAPL").unwrap());
        set.insert(Channel::Quotes, Symbol::parse("MSFT").unwrap());
        set.insert(Channel::Trades, Symbol::parse("AAPL").unwrap());
        assert_eq!(
            subscription_message("subscribe", &set),
            serde_json::json!({"action":"subscribe","trades":["AAPL"],"quotes":["AAPL","MSFT"]})
        );
        assert_eq!(
            encode_client(&auth, Encoding::Json),
            ClientFrame::Text(r#"{"action":"auth","key":"KEY","secret":"SEC"}"#.into())
        );
    }

    /// Parses space-separated hex.
    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    // The hex below is what msgpack-python produces for these values (checked by hand against the
    // msgpack spec: fixmap/fixstr/float64/fixint markers and the three timestamp extensions).

    #[test]
    fn msgpack_auth_message_is_byte_exact() {
        let creds = Credentials {
            key_id: Secret::new("KEY"),
            secret_key: Secret::new("SEC"),
        };
        let expected = hex("83 a6 61 63 74 69 6f 6e a4 61 75 74 68 a3 6b 65 79 a3 4b 45 59 a6 73 65 63 72 65 74 a3 53 45 43");
        assert_eq!(
            encode_client(&auth_message(&creds), Encoding::Msgpack),
            ClientFrame::Binary(expected)
        );
    }

    #[test]
    fn msgpack_connected_message() {
        let frame =
            hex("91 82 a1 54 a7 73 75 63 63 65 73 73 a3 6d 73 67 a9 63 6f 6e 6e 65 63 74 65 64");
        assert_eq!(decode_msgpack(&frame).unwrap(), vec![Inbound::Connected]);
        assert_eq!(
            decode(&frame, true, Encoding::Msgpack).unwrap(),
            vec![Inbound::Connected]
        );
    }

    #[test]
    fn msgpack_option_quote_with_a_timestamp64() {
        // [{"T":"q","S":"SPY260117C00688000","bx":"C","bp":9.46,"bs":53,"ax":"C","ap":9.66,"as":38,
        //   "c":"A","t":Timestamp(2021-02-22T15:51:44.208Z)}]
        let frame = hex(
            "91 8a a1 54 a1 71 a1 53 b2 53 50 59 32 36 30 31 31 37 43 30 30 36 38 38 30 30 30 \
             a2 62 78 a1 43 a2 62 70 cb 40 22 eb 85 1e b8 51 ec a2 62 73 35 a2 61 78 a1 43 \
             a2 61 70 cb 40 23 51 eb 85 1e b8 52 a2 61 73 26 a1 63 a1 41 \
             a1 74 d7 ff 31 97 50 00 60 33 d3 10",
        );
        let msgs = decode_msgpack(&frame).unwrap();
        assert_eq!(
            msgs,
            vec![Inbound::Market {
                symbol: "SPY260117C00688000".into(),
                event: MarketEvent::Quote(Quote {
                    bid_price: 9.46,
                    bid_size: Num::Int(53),
                    ask_price: 9.66,
                    ask_size: Num::Int(38),
                    timestamp: ts("2021-02-22T15:51:44.208Z"),
                }),
            }]
        );
    }

    #[test]
    fn msgpack_option_trades_with_timestamp32_and_timestamp96() {
        // [{"T":"t","S":"AAPL240315C00172500","t":Timestamp(2021-02-22T19:15:00Z),"p":2.84,"s":1,"x":"N","c":"S"}]
        let ts32 = hex(
            "91 87 a1 54 a1 74 a1 53 b3 41 41 50 4c 32 34 30 33 31 35 43 30 30 31 37 32 35 30 30 \
             a1 74 d6 ff 60 34 02 b4 a1 70 cb 40 06 b8 51 eb 85 1e b8 a1 73 01 a1 78 a1 4e a1 63 a1 53",
        );
        let Inbound::Market {
            event: MarketEvent::Trade(t),
            ..
        } = &decode_msgpack(&ts32).unwrap()[0]
        else {
            panic!("not a trade")
        };
        assert_eq!(t.timestamp, ts("2021-02-22T19:15:00Z"));
        assert_eq!((t.price, t.size), (2.84, Num::Int(1)));
        assert_eq!(
            t.conditions,
            vec![Box::from("S")],
            "option conditions are a single string"
        );
        // The same trade at 2514-05-30T01:53:04.000000005Z (timestamp96) with an integer price 3.
        let ts96 = hex(
            "91 87 a1 54 a1 74 a1 53 b3 41 41 50 4c 32 34 30 33 31 35 43 30 30 31 37 32 35 30 30 \
             a1 74 c7 0c ff 00 00 00 05 00 00 00 04 00 00 00 00 a1 70 03 a1 73 02 a1 78 a1 4e a1 63 a1 53",
        );
        let Inbound::Market {
            event: MarketEvent::Trade(t),
            ..
        } = &decode_msgpack(&ts96).unwrap()[0]
        else {
            panic!("not a trade")
        };
        assert_eq!(t.timestamp.to_rfc3339(), "2514-05-30T01:53:04.000000005Z");
        assert_eq!((t.price, t.size), (3.0, Num::Int(2)));
    }

    #[test]
    fn msgpack_frames_with_bad_elements_keep_the_good_ones() {
        // [ {"T":"q","S":"A"} (no prices), {"T":"success","msg":"connected"} ]
        let mut frame = hex("92 82 a1 54 a1 71 a1 53 a1 41");
        frame.extend(hex(
            "82 a1 54 a7 73 75 63 63 65 73 73 a3 6d 73 67 a9 63 6f 6e 6e 65 63 74 65 64",
        ));
        let msgs = decode_msgpack(&frame).unwrap();
        assert!(matches!(&msgs[0], Inbound::Malformed(_)), "{msgs:?}");
        assert_eq!(msgs[1], Inbound::Connected);
        assert!(decode_msgpack(&hex("91 82 a1")).is_err(), "truncated");
        assert!(decode_msgpack(&hex("c1")).is_err(), "never-used marker");
        assert!(decode_msgpack(b"").is_err());
    }

    #[test]
    fn msgpack_value_lengths() {
        assert_eq!(msgpack_value_len(&hex("05")), Some(1));
        assert_eq!(
            msgpack_value_len(&hex("cb 40 22 eb 85 1e b8 51 ec")),
            Some(9)
        );
        assert_eq!(
            msgpack_value_len(&hex("c7 0c ff 00 00 00 05 00 00 00 04 00 00 00 00")),
            Some(15)
        );
        assert_eq!(
            msgpack_value_len(&hex("92 01 81 a1 61 c0 ff")),
            Some(6),
            "stops after one value"
        );
        assert_eq!(
            msgpack_value_len(&hex("dd ff ff ff ff")),
            None,
            "claims more than it holds"
        );
        assert_eq!(
            msgpack_value_len(&hex("d9 05 61")),
            None,
            "truncated string"
        );
    }

    #[test]
    fn crypto_messages_keep_float_sizes_and_books() {
        let msgs = decode_json(
            r#"[{"T":"t","S":"AVAX/USD","p":47.299,"s":29.205707815,"t":"2024-03-12T10:27:48.858228144Z","i":3447222699101865076,"tks":"S"},
                {"T":"q","S":"BAT/USD","bp":0.35718,"bs":13445.46,"ap":0.3581,"as":13561.902,"t":"2024-03-12T10:29:43.111588173Z"},
                {"T":"o","S":"MKR/USD","t":"2024-03-12T10:39:39.445492807Z","b":[],"a":[{"p":2614.587,"s":12.5308}]},
                {"T":"o","S":"BTC/USD","t":"2024-03-12T10:39:39.445492807Z","b":[{"p":1,"s":2}],"a":[],"r":true}]"#,
        )
        .unwrap();
        let Inbound::Market {
            event: MarketEvent::Trade(t),
            ..
        } = &msgs[0]
        else {
            panic!()
        };
        assert_eq!(t.size, Num::Float(29.205707815));
        assert_eq!(t.taker_side.as_deref(), Some("S"));
        let Inbound::Market {
            event: MarketEvent::Quote(q),
            ..
        } = &msgs[1]
        else {
            panic!()
        };
        assert_eq!(q.bid_size, Num::Float(13445.46));
        let Inbound::Market {
            symbol,
            event: MarketEvent::Book(b),
        } = &msgs[2]
        else {
            panic!()
        };
        assert_eq!(symbol, "MKR/USD");
        assert!(!b.reset && b.bids.is_empty());
        assert_eq!(
            b.asks,
            vec![Level {
                price: 2614.587,
                size: Num::Float(12.5308)
            }]
        );
        let Inbound::Market {
            event: MarketEvent::Book(b),
            ..
        } = &msgs[3]
        else {
            panic!()
        };
        assert!(b.reset);
        assert_eq!(
            b.bids,
            vec![Level {
                price: 1.0,
                size: Num::Int(2)
            }]
        );
    }

    #[test]
    fn news_articles_decode() {
        let msgs = decode_json(
            r#"[{"T":"n","id":24918784,"headline":"Corsair Reports Purchase","summary":"...","author":"Benzinga Newsdesk","created_at":"2022-01-05T22:00:37Z","updated_at":"2022-01-05T22:00:38Z","url":null,"content":"<p>...","symbols":["CRSR"],"source":"benzinga"}]"#,
        )
        .unwrap();
        let Inbound::News(n) = &msgs[0] else {
            panic!("{msgs:?}")
        };
        assert_eq!(n.id, 24918784);
        assert_eq!(n.symbols, ["CRSR"]);
        assert_eq!(n.url, None);
        assert_eq!(n.created_at, Some(ts("2022-01-05T22:00:37Z")));
        let acks = decode_json(r#"[{"T":"subscription","news":["*"]}]"#).unwrap();
        let Inbound::Subscription(set) = &acks[0] else {
            panic!()
        };
        assert!(set.contains(Channel::News, "*"));
    }

    #[test]
    fn set_difference_and_chunks() {
        let sym = |s| Symbol::parse(s).unwrap();
        let mut a = SubscriptionSet::new();
        a.insert(Channel::Quotes, sym("AAPL"));
        a.insert(Channel::Quotes, sym("MSFT"));
        a.insert(Channel::Trades, sym("AAPL"));
        let mut b = SubscriptionSet::new();
        b.insert(Channel::Quotes, sym("AAPL"));
        let d = a.difference(&b);
        assert_eq!(d.len(), 2);
        assert!(d.contains(Channel::Quotes, "MSFT") && d.contains(Channel::Trades, "AAPL"));
        assert!(b.difference(&a).is_empty());
        let chunks = a.chunks(2);
        assert_eq!(
            chunks.iter().map(SubscriptionSet::len).collect::<Vec<_>>(),
            [2, 1]
        );
    }
}
