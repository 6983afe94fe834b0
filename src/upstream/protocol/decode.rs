//! Server frames into [`Inbound`] messages, JSON and msgpack through one decoder.
//!
//! Decoding goes through one flat struct ([`RawMsg`]) whose fields cover every message type; the
//! few keys whose type depends on `T` (`c` is a condition list in stock trades, a single string in
//! option trades and the close price in bars; `i` a trade id or an indicator; `a` an action or the
//! asks of a book) are read as [`Loose`] values and interpreted once `T` is known. This dispatches
//! on `T` in a single pass and works unchanged for JSON (serde_json) and msgpack (rmp-serde),
//! keeping integers and floats apart.
//!
//! A malformed frame is an error for the caller to log and skip; a frame with a few malformed
//! elements yields the good ones plus [`Inbound::Malformed`] entries for the rest.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::msgpack::{msgpack_array_elements, msgpack_value_len};

use crate::market::StatusEvent;
use crate::market::{
    Bar, BarKind, BookUpdate, Code, Codes, Correction, Level, MarketEvent, NewsArticle, Num, Quote,
    Trade, TradeCancel, TradeFix,
};
use crate::symbol::{Symbol, WILDCARD};
use crate::time::Timestamp;
use crate::vocab::{Channel, Encoding, SubscriptionSet};

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
    /// A message that is decoded and counted but not forwarded to browsers (imbalances; SDK
    /// programs get them through the tap).
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
    // rmp-serde cannot tell how much of the input it consumed, so the frame's extent is checked
    // first (a cheap walk): exactly one well-formed value is decoded in one pass.
    if msgpack_value_len(data) == Some(data.len()) {
        let mut de = rmp_serde::Deserializer::from_read_ref(data);
        if let Ok(messages) = de.deserialize_seq(FrameVisitor) {
            return Ok(messages);
        }
    }
    // Salvage: find each element's bytes and decode them one by one.
    let elements = msgpack_array_elements(data).ok_or_else(|| {
        DecodeError::Msgpack(format!("{} bytes that are not an array", data.len()))
    })?;
    Ok(elements
        .into_iter()
        .map(|el| match rmp_serde::from_slice::<RawMsg<'_>>(el) {
            Ok(raw) => raw.into_inbound(),
            Err(e) => Inbound::Malformed(format!("{e} in a {}-byte msgpack element", el.len())),
        })
        .collect())
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
        while let Some(inbound) = seq.next_element_seed(Element)? {
            out.push(inbound);
        }
        Ok(out)
    }
}

/// One element of a frame. Alpaca sends `T` first (its SDKs rely on it for msgpack): a quote —
/// most of the traffic — is read straight into its few fields; anything else, or an element whose
/// first key is not `T`, goes through [`RawMsg`] with the keys already read replayed.
struct Element;

impl<'de> de::DeserializeSeed<'de> for Element {
    type Value = Inbound<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Inbound<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Element {
    type Value = Inbound<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message (a map with a type tag T)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Inbound<'de>, A::Error> {
        let Some(first) = map.next_key::<Text<'de>>()? else {
            return Err(de::Error::missing_field("T"));
        };
        let kind = if first.0 == "T" {
            let kind = map.next_value::<Text<'de>>()?;
            if kind.0 == "q" {
                return quote_fields(map);
            }
            Some(kind)
        } else {
            None
        };
        let replay = Replay {
            key: Some(first),
            value: kind,
            map,
        };
        RawMsg::deserialize(de::value::MapAccessDeserializer::new(replay)).map(RawMsg::into_inbound)
    }
}

/// The rest of a quote (`T` already read), as [`RawMsg::quote`] would decode it.
fn quote_fields<'de, A: MapAccess<'de>>(mut map: A) -> Result<Inbound<'de>, A::Error> {
    let mut symbol = None;
    let (mut bp, mut ap, mut t) = (None, None, None);
    let (mut bid_size, mut ask_size) = (None, None);
    let mut extras = QuoteExtras::default();
    while let Some(key) = map.next_key::<Text<'de>>()? {
        match key.0.as_ref() {
            "S" => symbol = Some(map.next_value::<Text<'de>>()?),
            "bp" => bp = Some(map.next_value::<f64>()?),
            "ap" => ap = Some(map.next_value::<f64>()?),
            "bs" => bid_size = Some(map.next_value::<Loose<'de>>()?),
            "as" => ask_size = Some(map.next_value::<Loose<'de>>()?),
            "t" => t = Some(map.next_value::<Timestamp>()?),
            "bx" => extras.bid_exchange = map.next_value::<CodeField>()?.0,
            "ax" => extras.ask_exchange = map.next_value::<CodeField>()?.0,
            "z" => extras.tape = map.next_value::<CodeField>()?.0,
            "c" => extras.conditions = map.next_value::<CodesField>()?.0,
            _ => {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
    }
    Ok(market_inbound(
        "q",
        symbol,
        quote_event(bp, ap, bid_size, ask_size, t, extras),
    ))
}

/// The parts of a quote that are not its price: exchanges, conditions, tape.
#[derive(Default)]
struct QuoteExtras {
    bid_exchange: Option<Code>,
    ask_exchange: Option<Code>,
    conditions: Codes,
    tape: Option<Code>,
}

/// A short code (exchange, tape), kept inline; `null` or text too long to be a code is none.
#[derive(Default)]
struct CodeField(Option<Code>);

impl<'de> Deserialize<'de> for CodeField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CodeField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a short code")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CodeField, E> {
                Ok(CodeField(Code::new(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<CodeField, E> {
                Ok(CodeField(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<CodeField, E> {
                Ok(CodeField(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Conditions: a list of codes (stocks) or one code (options), without allocating.
struct CodesField(Codes);

impl<'de> Deserialize<'de> for CodesField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CodesField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of condition codes, or one")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CodesField, E> {
                let mut codes = Codes::default();
                codes.push(v);
                Ok(CodesField(codes))
            }
            fn visit_unit<E: de::Error>(self) -> Result<CodesField, E> {
                Ok(CodesField(Codes::default()))
            }
            fn visit_none<E: de::Error>(self) -> Result<CodesField, E> {
                Ok(CodesField(Codes::default()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CodesField, A::Error> {
                let mut codes = Codes::default();
                while let Some(text) = seq.next_element::<Text<'de>>()? {
                    codes.push(&text.0);
                }
                Ok(CodesField(codes))
            }
        }
        d.deserialize_any(V)
    }
}

fn code_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Code>, D::Error> {
    CodeField::deserialize(d).map(|c| c.0)
}

/// A quote from its fields; `Err` names the first one missing or mistyped. Sizes default to 0.
fn quote_event(
    bp: Option<f64>,
    ap: Option<f64>,
    bid_size: Option<Loose<'_>>,
    ask_size: Option<Loose<'_>>,
    t: Option<Timestamp>,
    extras: QuoteExtras,
) -> Result<MarketEvent, &'static str> {
    let size = |v: Option<Loose<'_>>, name| v.map_or(Some(Num::Int(0)), |v| v.num()).ok_or(name);
    Ok(MarketEvent::Quote(Quote {
        bid_price: bp.ok_or("bp")?,
        ask_price: ap.ok_or("ap")?,
        bid_size: size(bid_size, "bs")?,
        ask_size: size(ask_size, "as")?,
        timestamp: t.ok_or("t")?,
        bid_exchange: extras.bid_exchange,
        ask_exchange: extras.ask_exchange,
        conditions: extras.conditions,
        tape: extras.tape,
    }))
}

/// A market event of message type `kind` for `symbol`, or why the message is malformed.
fn market_inbound<'a>(
    kind: &str,
    symbol: Option<Text<'a>>,
    event: Result<MarketEvent, &'static str>,
) -> Inbound<'a> {
    match (symbol, event) {
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

/// A map whose first key (and, when it was `T`, its value) has already been read: hands them
/// out again, then the rest of the map.
struct Replay<'de, A> {
    key: Option<Text<'de>>,
    value: Option<Text<'de>>,
    map: A,
}

fn replayed<'de, S: de::DeserializeSeed<'de>, E: de::Error>(
    seed: S,
    text: Text<'de>,
) -> Result<S::Value, E> {
    match text.0 {
        Cow::Borrowed(s) => seed.deserialize(de::value::BorrowedStrDeserializer::<E>::new(s)),
        Cow::Owned(s) => seed.deserialize(de::value::StringDeserializer::<E>::new(s)),
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.key.take() {
            Some(key) => replayed(seed, key).map(Some),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        match self.value.take() {
            Some(value) => replayed(seed, value),
            None => self.map.next_value_seed(seed),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A string that borrows from the input when it can (no escapes) and owns otherwise.
#[derive(Debug)]
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

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
    #[serde(default, deserialize_with = "code_field")]
    bx: Option<Code>,
    #[serde(default, deserialize_with = "code_field")]
    ax: Option<Code>,
    /// Tape (stocks).
    #[serde(default, deserialize_with = "code_field")]
    z: Option<Code>,

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
    /// A trade's update kind (`corrected`, `canceled`, `incorrect`); a LULD's upper band.
    #[serde(borrow, default)]
    u: Option<Box<Loose<'a>>>,
    /// A LULD's lower band.
    #[serde(borrow, default)]
    d: Option<Box<Loose<'a>>>,
    /// A trading status: its code and message, the reason's code and message.
    #[serde(borrow, default)]
    sc: Option<Box<Text<'a>>>,
    #[serde(borrow, default)]
    sm: Option<Box<Text<'a>>>,
    #[serde(borrow, default)]
    rc: Option<Box<Text<'a>>>,
    #[serde(borrow, default)]
    rm: Option<Box<Text<'a>>>,

    // trade corrections (original and corrected id, price, size, conditions)
    #[serde(borrow, default)]
    oi: Option<Box<Loose<'a>>>,
    #[serde(borrow, default)]
    op: Option<Box<Loose<'a>>>,
    #[serde(borrow, default)]
    os: Option<Box<Loose<'a>>>,
    #[serde(borrow, default)]
    oc: Option<Box<Loose<'a>>>,
    #[serde(borrow, default)]
    ci: Option<Box<Loose<'a>>>,
    #[serde(borrow, default)]
    cp: Option<Box<Loose<'a>>>,
    #[serde(borrow, default)]
    cs: Option<Box<Loose<'a>>>,
    #[serde(borrow, default)]
    cc: Option<Box<Loose<'a>>>,

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
    content: Option<Box<Text<'a>>>,
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
            "s" => self.trading_status(),
            "l" => self.luld(),
            "c" => self.correction(),
            "x" => self.cancel(),
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
        market_inbound(&self.kind.0, self.symbol, event)
    }

    fn quote(mut self) -> Inbound<'a> {
        let mut conditions = Codes::default();
        match self.c.take() {
            Some(Loose::Str(s)) => conditions.push(&s),
            Some(Loose::List(items)) => {
                for item in items {
                    if let Loose::Str(s) = item {
                        conditions.push(&s);
                    }
                }
            }
            _ => {}
        }
        let extras = QuoteExtras {
            bid_exchange: self.bx,
            ask_exchange: self.ax,
            conditions,
            tape: self.z,
        };
        let event = quote_event(
            self.bp,
            self.ap,
            self.bid_size.take(),
            self.ask_size.take(),
            self.t,
            extras,
        );
        self.market(event)
    }

    fn correction(mut self) -> Inbound<'a> {
        let event = (|| {
            let strings = |v: Option<Box<Loose<'_>>>| match v.as_deref() {
                None | Some(Loose::Null) => Some(Vec::new()),
                Some(v) => v.strings(),
            };
            Ok(MarketEvent::Fix(Box::new(TradeFix::Correction(
                Correction {
                    exchange: self.x.take().map(|x| Box::from(x.0.as_ref())),
                    original_id: self.oi.take().and_then(|v| v.int()),
                    original_price: self.op.take().and_then(|v| v.f64()).ok_or("op")?,
                    original_size: self.os.take().and_then(|v| v.num()).ok_or("os")?,
                    original_conditions: strings(self.oc.take()).ok_or("oc")?,
                    corrected_id: self.ci.take().and_then(|v| v.int()),
                    corrected_price: self.cp.take().and_then(|v| v.f64()).ok_or("cp")?,
                    corrected_size: self.cs.take().and_then(|v| v.num()).ok_or("cs")?,
                    corrected_conditions: strings(self.cc.take()).ok_or("cc")?,
                    tape: self.z,
                    timestamp: self.t.ok_or("t")?,
                },
            ))))
        })();
        self.market(event)
    }

    fn cancel(mut self) -> Inbound<'a> {
        let event = (|| {
            Ok(MarketEvent::Fix(Box::new(TradeFix::Cancel(TradeCancel {
                id: self.i.take().and_then(|i| i.int()),
                exchange: self.x.take().map(|x| Box::from(x.0.as_ref())),
                price: self.p.ok_or("p")?,
                size: self.s.take().and_then(|v| v.num()).ok_or("s")?,
                action: match self.a.take().as_deref() {
                    Some(Loose::Str(a)) => Some(Box::from(a.as_ref())),
                    _ => None,
                },
                tape: self.z,
                timestamp: self.t.ok_or("t")?,
            }))))
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
                tape: self.z,
                timestamp: self.t.ok_or("t")?,
                update: match self.u.take().as_deref() {
                    Some(Loose::Str(u)) => Some(Box::from(u.as_ref())),
                    _ => None,
                },
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
                content: text(self.content),
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

    fn trading_status(mut self) -> Inbound<'a> {
        let text = |t: Option<Box<Text<'a>>>| -> Box<str> {
            t.map(|t| Box::from(t.0.as_ref())).unwrap_or_default()
        };
        let event = (|| {
            Ok(MarketEvent::Status(Box::new(StatusEvent::Trading {
                code: self
                    .sc
                    .take()
                    .map(|t| Box::from(t.0.as_ref()))
                    .ok_or("sc")?,
                message: text(self.sm.take()),
                reason_code: text(self.rc.take()),
                reason_message: text(self.rm.take()),
                tape: self.z,
                timestamp: self.t.ok_or("t")?,
            })))
        })();
        self.market(event)
    }

    fn luld(mut self) -> Inbound<'a> {
        let event = (|| {
            Ok(MarketEvent::Status(Box::new(StatusEvent::Luld {
                limit_up: self.u.take().and_then(|u| u.f64()).ok_or("u")?,
                limit_down: self.d.take().and_then(|d| d.f64()).ok_or("d")?,
                indicator: match self.i.take() {
                    Some(Loose::Str(i)) => Box::from(i.as_ref()),
                    _ => Box::default(),
                },
                tape: self.z,
                timestamp: self.t.ok_or("t")?,
            })))
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
