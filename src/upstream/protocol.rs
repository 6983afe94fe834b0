//! Alpaca's market-data stream protocol, as pure decode/encode functions.
//!
//! A server frame is an array of maps, each with a type tag `T` (`success`, `error`,
//! `subscription`, `q`, `t`, `b`, …). Decoding goes through one flat struct ([`RawMsg`]) whose
//! fields cover every message type; the few keys whose type depends on `T` (`c` is a condition list
//! in trades but the close price in bars, `i` a trade id or an indicator, …) are read as [`Loose`]
//! values and interpreted once `T` is known. This dispatches on `T` in a single pass, which is about
//! twice as fast as serde's internally tagged enums, and works unchanged for msgpack via rmp-serde.
//!
//! A malformed frame is an error for the caller to log and skip; a frame with a few malformed
//! elements yields the good ones plus [`Inbound::Malformed`] entries for the rest.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::market::{Bar, BarKind, MarketEvent, Num, Quote, Trade};
use crate::settings::Credentials;
use crate::symbol::Symbol;
use crate::time::Timestamp;

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
}

impl Channel {
    /// Every channel of the stocks stream, in the order acks list them.
    pub const STOCKS: [Channel; 8] = [
        Channel::Trades,
        Channel::Quotes,
        Channel::Bars,
        Channel::DailyBars,
        Channel::UpdatedBars,
        Channel::Statuses,
        Channel::Lulds,
        Channel::Imbalances,
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
        }
    }

    pub fn from_key(key: &str) -> Option<Channel> {
        Channel::STOCKS.into_iter().find(|c| c.key() == key)
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
    /// A quote, trade or bar for `symbol`.
    Market {
        symbol: Cow<'a, str>,
        event: MarketEvent,
    },
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

/// The auth message. Its text contains the secret: send it, never log it.
pub fn auth_message(credentials: &Credentials) -> String {
    serde_json::json!({
        "action": "auth",
        "key": credentials.key_id.expose(),
        "secret": credentials.secret_key.expose(),
    })
    .to_string()
}

/// A `subscribe` or `unsubscribe` message for `set`.
pub fn subscription_message(action: &str, set: &SubscriptionSet) -> String {
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
    serde_json::Value::Object(map).to_string()
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
#[derive(Debug, Deserialize)]
struct RawMsg<'a> {
    #[serde(rename = "T", borrow)]
    kind: Text<'a>,
    #[serde(rename = "S", borrow, default)]
    symbol: Option<Text<'a>>,
    #[serde(borrow, default)]
    msg: Option<Text<'a>>,
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

    // subscription acks
    #[serde(borrow, default)]
    trades: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    quotes: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    bars: Option<Vec<Text<'a>>>,
    #[serde(rename = "dailyBars", borrow, default)]
    daily_bars: Option<Vec<Text<'a>>>,
    #[serde(rename = "updatedBars", borrow, default)]
    updated_bars: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    statuses: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    lulds: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    imbalances: Option<Vec<Text<'a>>>,
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
        ] {
            for text in list.into_iter().flatten() {
                if let Ok(s) = Symbol::parse(&text.0) {
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
                timestamp: self.t.ok_or("t")?,
            }))
        })();
        self.market(event)
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
        assert_eq!(set.len(), 4); // "*" is not a symbol; it is dropped
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
        let auth: serde_json::Value = serde_json::from_str(&auth_message(&creds)).unwrap();
        assert_eq!(
            auth,
            serde_json::json!({"action":"auth","key":"KEY","secret":"SEC"})
        );
        let mut set = SubscriptionSet::new();
        set.insert(Channel::Quotes, Symbol::parse("AAPL").unwrap());
        set.insert(Channel::Quotes, Symbol::parse("MSFT").unwrap());
        set.insert(Channel::Trades, Symbol::parse("AAPL").unwrap());
        let sub: serde_json::Value =
            serde_json::from_str(&subscription_message("subscribe", &set)).unwrap();
        assert_eq!(
            sub,
            serde_json::json!({"action":"subscribe","trades":["AAPL"],"quotes":["AAPL","MSFT"]})
        );
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
