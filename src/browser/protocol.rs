//! The browser protocol on `GET /ws` (docs/browser-protocol.md): client messages in, frames out.
//!
//! Pure functions and types only. Parsing turns a client text frame into a [`ClientRequest`] or a
//! [`ClientError`] carrying the protocol's error code; the frame builders return finished JSON text
//! ([`ByteString`]) so a frame serialized once can be shared by every session that receives it.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::credentials::Secret;
use crate::market::{
    mid_price, Bar, Code, Codes, Level, NewsArticle, Num, StatusEvent, Trade, TradeFix,
};
use crate::symbol::{Symbol, SymbolError, WILDCARD};
use crate::time::Timestamp;
use crate::vocab::{ClientChannel, PriceKind};

/// Error codes of the browser protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    UnknownAction,
    InvalidSymbol,
    TooManySymbols,
    RateLimited,
    Unauthorized,
    FrameTooLarge,
    /// The symbol is valid but no enabled feed carries its asset class (or the upstream refused it).
    FeedUnavailable,
}

/// A client message that could not be accepted; becomes an `error` frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    pub code: ErrorCode,
    pub message: String,
}

impl ClientError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A symbol that was not subscribed, and why (an entry of `subscribed.rejected`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub symbol: String,
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn invalid(raw: &str, err: &SymbolError) -> Self {
        Rejection {
            symbol: raw.to_owned(),
            code: ErrorCode::InvalidSymbol,
            message: err.to_string(),
        }
    }
}

/// A parsed, valid client message.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientRequest {
    Subscribe {
        symbols: Vec<Symbol>,
        channels: Vec<ClientChannel>,
        /// The first [`MAX_LISTED_REJECTIONS`] invalid items.
        rejected: Vec<Rejection>,
        /// Every invalid item read, listed or not.
        invalid: usize,
        /// Items after the first `max_symbols` distinct valid symbols: not read.
        over_limit: usize,
    },
    Unsubscribe {
        symbols: Vec<Symbol>,
        channels: Vec<ClientChannel>,
    },
    Configure {
        batch: Option<bool>,
    },
    Ping {
        id: Option<serde_json::Value>,
    },
    /// `{"action":"auth","token":"<key_id>:<secret>"}` or `{"action":"auth","key":…,"secret":…}`.
    Auth {
        token: Secret,
    },
}

#[derive(Deserialize)]
struct RawRequest {
    action: Option<serde_json::Value>,
    symbols: Option<serde_json::Value>,
    channels: Option<serde_json::Value>,
    batch: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
    token: Option<serde_json::Value>,
    key: Option<serde_json::Value>,
    secret: Option<serde_json::Value>,
}

/// Parses one client text frame, reading at most `max_symbols` distinct valid symbols of a
/// subscribe: the rest (more than a connection may hold anyway) are counted, not parsed, so a
/// huge list costs no more than a full one.
pub fn parse_request(text: &str, max_symbols: usize) -> Result<ClientRequest, ClientError> {
    let raw: RawRequest = serde_json::from_str(text).map_err(|e| {
        ClientError::new(
            ErrorCode::InvalidJson,
            format!("expected a JSON object like {{\"action\":\"subscribe\",\"symbols\":[\"AAPL\"]}}: {e}"),
        )
    })?;
    let action = match &raw.action {
        Some(serde_json::Value::String(a)) => a.trim().to_ascii_lowercase(),
        Some(_) => {
            return Err(ClientError::new(
                ErrorCode::InvalidJson,
                "\"action\" must be a string",
            ))
        }
        None => {
            return Err(ClientError::new(
                ErrorCode::UnknownAction,
                "missing \"action\"; expected subscribe, unsubscribe, configure, ping or auth",
            ))
        }
    };
    match action.as_str() {
        "subscribe" | "unsubscribe" => {
            let channels = parse_channels(raw.channels.as_ref())?;
            let only_positions = channels.iter().all(|c| *c == ClientChannel::Positions);
            let limit = if action == "subscribe" {
                max_symbols
            } else {
                usize::MAX
            };
            let (symbols, rejected, invalid, over_limit) = match &raw.symbols {
                None if only_positions => (Vec::new(), Vec::new(), 0, 0),
                None => return Err(ClientError::new(
                    ErrorCode::InvalidJson,
                    "\"symbols\" is required, e.g. [\"AAPL\"] (or [\"*\"] with the news channel)",
                )),
                Some(value) => {
                    parse_symbols(value, channels.contains(&ClientChannel::News), limit)?
                }
            };
            if action == "subscribe" {
                Ok(ClientRequest::Subscribe {
                    symbols,
                    channels,
                    rejected,
                    invalid,
                    over_limit,
                })
            } else {
                // Unsubscribing something invalid is harmless: it was never subscribed.
                Ok(ClientRequest::Unsubscribe { symbols, channels })
            }
        }
        "configure" => match raw.batch {
            None => Ok(ClientRequest::Configure { batch: None }),
            Some(serde_json::Value::Bool(b)) => Ok(ClientRequest::Configure { batch: Some(b) }),
            Some(_) => Err(ClientError::new(
                ErrorCode::InvalidJson,
                "\"batch\" must be true or false",
            )),
        },
        "ping" => Ok(ClientRequest::Ping { id: raw.id }),
        "auth" => {
            let text = |v: Option<serde_json::Value>| match v {
                Some(serde_json::Value::String(s)) => Some(s),
                _ => None,
            };
            let token = match (text(raw.token), text(raw.key), text(raw.secret)) {
                (Some(token), _, _) => token,
                (None, Some(key), Some(secret)) => format!("{key}:{secret}"),
                _ => {
                    return Err(ClientError::new(
                        ErrorCode::Unauthorized,
                        "auth needs \"token\":\"<key_id>:<secret>\" (or \"key\" and \"secret\")",
                    ))
                }
            };
            Ok(ClientRequest::Auth {
                token: Secret::new(token),
            })
        }
        other => Err(ClientError::new(
            ErrorCode::UnknownAction,
            format!("unknown action {other:?}; expected subscribe, unsubscribe, configure, ping or auth"),
        )),
    }
}

fn parse_channels(value: Option<&serde_json::Value>) -> Result<Vec<ClientChannel>, ClientError> {
    let Some(value) = value else {
        return Ok(vec![ClientChannel::Quotes]);
    };
    let list = value.as_array().ok_or_else(|| {
        ClientError::new(
            ErrorCode::InvalidJson,
            "\"channels\" must be a list such as [\"quotes\",\"trades\"]",
        )
    })?;
    let mut out = Vec::new();
    for item in list {
        let name = item.as_str().unwrap_or_default();
        let channel = ClientChannel::parse(name).ok_or_else(|| {
            ClientError::new(
                ErrorCode::InvalidJson,
                format!(
                    "unknown channel {item}; expected quotes, trades, bars, orderbooks, statuses, news or positions"
                ),
            )
        })?;
        if !out.contains(&channel) {
            out.push(channel);
        }
    }
    if out.is_empty() {
        out.push(ClientChannel::Quotes);
    }
    Ok(out)
}

/// The distinct valid symbols of a list (at most `limit`; the items after are counted), the
/// rejected ones (at most [`MAX_LISTED_REJECTIONS`] kept), how many were rejected in all, and
/// the count not read.
fn parse_symbols(
    value: &serde_json::Value,
    news: bool,
    limit: usize,
) -> Result<(Vec<Symbol>, Vec<Rejection>, usize, usize), ClientError> {
    let one;
    let items: &[serde_json::Value] = match value {
        serde_json::Value::Array(list) => list,
        single @ serde_json::Value::String(_) => {
            one = [single.clone()];
            &one
        }
        _ => {
            return Err(ClientError::new(
                ErrorCode::InvalidJson,
                "\"symbols\" must be a list such as [\"AAPL\",\"MSFT\"]",
            ))
        }
    };
    let mut symbols: Vec<Symbol> = Vec::new();
    let mut seen: rustc_hash::FxHashSet<Symbol> = rustc_hash::FxHashSet::default();
    let mut rejected = Vec::new();
    let mut invalid = 0;
    // Only the first few refusals are written out; the rest are counted.
    let mut reject = |make: &dyn Fn() -> Rejection| {
        invalid += 1;
        if rejected.len() < MAX_LISTED_REJECTIONS {
            rejected.push(make());
        }
    };
    for (i, item) in items.iter().enumerate() {
        if symbols.len() >= limit {
            return Ok((symbols, rejected, invalid, items.len() - i));
        }
        let Some(raw) = item.as_str() else {
            reject(&|| Rejection {
                symbol: item.to_string(),
                code: ErrorCode::InvalidSymbol,
                message: "symbols must be strings".into(),
            });
            continue;
        };
        let parsed = if raw.trim() == WILDCARD {
            if news {
                Ok(Symbol::wildcard())
            } else {
                reject(&|| Rejection {
                    symbol: raw.to_owned(),
                    code: ErrorCode::InvalidSymbol,
                    message: "\"*\" is allowed with the news channel only".into(),
                });
                continue;
            }
        } else {
            Symbol::parse(raw)
        };
        match parsed {
            Ok(s) => {
                if seen.insert(s.clone()) {
                    symbols.push(s);
                }
            }
            Err(e) => reject(&|| Rejection::invalid(raw, &e)),
        }
    }
    Ok((symbols, rejected, invalid, 0))
}

/// Most rejections listed in a `subscribed` reply; `rejected_count` has them all, so a huge
/// request cannot make a huge answer.
pub const MAX_LISTED_REJECTIONS: usize = 20;

fn frame<T: Serialize>(value: &T) -> ByteString {
    // Serializing these plain structs cannot fail (no maps with non-string keys, no I/O).
    ByteString::from(serde_json::to_string(value).unwrap_or_default())
}

/// `welcome`, sent first on every connection.
pub fn welcome(
    provider: &str,
    throttle_ms: u64,
    session_id: u64,
    max_symbols: usize,
    scopes: &[String],
) -> ByteString {
    #[derive(Serialize)]
    struct Welcome<'a> {
        r#type: &'static str,
        server: &'static str,
        version: &'static str,
        provider: &'a str,
        throttle_ms: u64,
        session_id: u64,
        max_symbols: usize,
        /// What this connection may do before it signs in (the anonymous scopes).
        scopes: &'a [String],
        timestamp: Timestamp,
    }
    frame(&Welcome {
        r#type: "welcome",
        server: "tickrelay",
        version: env!("CARGO_PKG_VERSION"),
        provider,
        throttle_ms,
        session_id,
        max_symbols,
        scopes,
        timestamp: Timestamp::now(),
    })
}

/// `authenticated`, the answer to a good `auth`: who the connection now is and what it may do.
pub fn authenticated(client: &str, scopes: &[String]) -> ByteString {
    #[derive(Serialize)]
    struct Authenticated<'a> {
        r#type: &'static str,
        client: &'a str,
        scopes: &'a [String],
        timestamp: Timestamp,
    }
    frame(&Authenticated {
        r#type: "authenticated",
        client,
        scopes,
        timestamp: Timestamp::now(),
    })
}

/// `subscribed`, the answer to a subscribe.
pub fn subscribed(
    symbols: &[Symbol],
    channels: &[ClientChannel],
    rejected: &[Rejection],
) -> ByteString {
    subscribed_with_total(symbols, channels, rejected, rejected.len())
}

/// `subscribed`, with `rejected_count` saying how many were refused in all (the list shows at
/// most [`MAX_LISTED_REJECTIONS`]).
pub fn subscribed_with_total(
    symbols: &[Symbol],
    channels: &[ClientChannel],
    rejected: &[Rejection],
    rejected_count: usize,
) -> ByteString {
    #[derive(Serialize)]
    struct Subscribed<'a> {
        r#type: &'static str,
        symbols: &'a [Symbol],
        channels: &'a [ClientChannel],
        rejected: &'a [Rejection],
        rejected_count: usize,
        timestamp: Timestamp,
    }
    frame(&Subscribed {
        r#type: "subscribed",
        symbols,
        channels,
        rejected: &rejected[..rejected.len().min(MAX_LISTED_REJECTIONS)],
        rejected_count: rejected_count.max(rejected.len()),
        timestamp: Timestamp::now(),
    })
}

/// `unsubscribed`, the answer to an unsubscribe.
pub fn unsubscribed(symbols: &[Symbol], channels: &[ClientChannel]) -> ByteString {
    #[derive(Serialize)]
    struct Unsubscribed<'a> {
        r#type: &'static str,
        symbols: &'a [Symbol],
        channels: &'a [ClientChannel],
        timestamp: Timestamp,
    }
    frame(&Unsubscribed {
        r#type: "unsubscribed",
        symbols,
        channels,
        timestamp: Timestamp::now(),
    })
}

/// `error`.
pub fn error(err: &ClientError) -> ByteString {
    #[derive(Serialize)]
    struct Error<'a> {
        r#type: &'static str,
        code: ErrorCode,
        message: &'a str,
        timestamp: Timestamp,
    }
    frame(&Error {
        r#type: "error",
        code: err.code,
        message: &err.message,
        timestamp: Timestamp::now(),
    })
}

/// `pong`, echoing the ping's id.
pub fn pong(id: Option<&serde_json::Value>) -> ByteString {
    #[derive(Serialize)]
    struct Pong<'a> {
        r#type: &'static str,
        id: Option<&'a serde_json::Value>,
        timestamp: Timestamp,
    }
    frame(&Pong {
        r#type: "pong",
        id,
        timestamp: Timestamp::now(),
    })
}

/// The state a feed reports in `alpaca_status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusDetails {
    pub feed: String,
    pub provider: String,
    pub reconnect_attempts: u32,
    pub circuit_state: &'static str,
    pub last_error: Option<String>,
    pub next_retry_ms: Option<u64>,
    /// The latest gap in the feed's data (`start`, and `end` once it streams again).
    pub last_outage: Option<crate::upstream::Outage>,
}

/// `alpaca_status` for one feed.
pub fn alpaca_status(status: &str, details: &StatusDetails) -> ByteString {
    #[derive(Serialize)]
    struct Status<'a> {
        r#type: &'static str,
        status: &'a str,
        details: &'a StatusDetails,
        timestamp: Timestamp,
    }
    frame(&Status {
        r#type: "alpaca_status",
        status,
        details,
        timestamp: Timestamp::now(),
    })
}

/// The latest known price of a symbol: what `spot_price_update` carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceView {
    pub bid_price: f64,
    pub ask_price: f64,
    pub bid_size: Num,
    pub ask_size: Num,
    pub last_price: Option<f64>,
    /// Exchange time of the latest quote (or trade, before any quote).
    pub timestamp: Option<Timestamp>,
    /// The latest quote's exchanges, conditions and tape (none for crypto).
    pub bid_exchange: Option<Code>,
    pub ask_exchange: Option<Code>,
    pub conditions: Codes,
    pub tape: Option<Code>,
    /// The latest trading status was a halt or a pause.
    pub halted: bool,
}

impl PriceView {
    pub fn mid_price(&self) -> Option<f64> {
        mid_price(self.bid_price, self.ask_price)
    }
}

/// The `update` object of a price update, also served by `/api/v1/quotes`. A side with no
/// price — no quote yet (a symbol that has only traded), or a quote without that side — is
/// `null`, never `0.0`, which a page would show as a price.
#[derive(Serialize)]
pub struct PriceUpdate<'a> {
    pub symbol: &'a Symbol,
    pub bid_price: Option<f64>,
    pub ask_price: Option<f64>,
    pub mid_price: Option<f64>,
    pub last_price: Option<f64>,
    pub bid_size: Num,
    pub ask_size: Num,
    /// Options only: contracts traded since tickrelay started streaming the symbol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<Num>,
    pub timestamp: Option<Timestamp>,
    pub stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bid_exchange: Option<Code>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ask_exchange: Option<Code>,
    #[serde(skip_serializing_if = "Codes::is_empty")]
    pub conditions: Codes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tape: Option<Code>,
    /// The first update of the symbol after its feed lost the upstream connection: updates may
    /// be missing before it (the feed's `alpaca_status` has the outage's start and end).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
    /// Trading in the symbol is halted (its latest trading status was a halt or a pause).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub halted: bool,
}

impl<'a> PriceUpdate<'a> {
    pub fn new(symbol: &'a Symbol, p: &PriceView, stale: bool) -> Self {
        PriceUpdate {
            symbol,
            bid_price: Some(p.bid_price).filter(|b| *b > 0.0),
            ask_price: Some(p.ask_price).filter(|a| *a > 0.0),
            mid_price: p.mid_price(),
            last_price: p.last_price,
            bid_size: p.bid_size,
            ask_size: p.ask_size,
            volume: None,
            timestamp: p.timestamp,
            stale,
            bid_exchange: p.bid_exchange,
            ask_exchange: p.ask_exchange,
            conditions: p.conditions,
            tape: p.tape,
            gap: false,
            halted: p.halted,
        }
    }
}

/// A serialized price update and, sharing its bytes, the `update` object alone (for batches).
#[derive(Clone, Debug)]
pub struct PriceFrame {
    pub frame: ByteString,
    pub update: ByteString,
}

/// `spot_price_update` or `option_price_update`, serialized once.
pub fn price_update(kind: PriceKind, update: &PriceUpdate<'_>, snapshot: bool) -> PriceFrame {
    // One buffer, written once: the envelope around the serialized update.
    let mut out = Vec::with_capacity(320);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.update_type().as_bytes());
    out.extend_from_slice(b"\",\"update\":");
    let start = out.len();
    // Serializing numbers, strings and options into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, update);
    let end = out.len();
    out.extend_from_slice(if snapshot {
        b",\"snapshot\":true"
    } else {
        b",\"snapshot\":false"
    });
    out.extend_from_slice(b",\"timestamp\":\"");
    let mut text = String::from_utf8(out).unwrap_or_default();
    Timestamp::now().write_rfc3339(&mut text);
    text.push_str("\"}");
    let frame = ByteString::from(text);
    let update = frame.slice_ref(&frame[start..end]);
    PriceFrame { frame, update }
}

/// `spot_price_update` for a spot symbol.
pub fn spot_price_update(
    symbol: &Symbol,
    price: &PriceView,
    stale: bool,
    snapshot: bool,
) -> ByteString {
    price_update(
        PriceKind::Spot,
        &PriceUpdate::new(symbol, price, stale),
        snapshot,
    )
    .frame
}

/// `spot_price_batch` or `option_price_batch`: the latest update per symbol since the last flush.
pub fn price_batch(kind: PriceKind, updates: &[ByteString]) -> ByteString {
    let mut text = String::with_capacity(updates.iter().map(|u| u.len() + 1).sum::<usize>() + 96);
    text.push_str("{\"type\":\"");
    text.push_str(kind.batch_type());
    text.push_str("\",\"updates\":[");
    for (i, u) in updates.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(u);
    }
    text.push_str("],\"count\":");
    text.push_str(&updates.len().to_string());
    text.push_str(",\"timestamp\":\"");
    Timestamp::now().write_rfc3339(&mut text);
    text.push_str("\"}");
    ByteString::from(text)
}

/// `news`.
pub fn news(article: &NewsArticle) -> ByteString {
    #[derive(Serialize)]
    struct Frame<'a> {
        r#type: &'static str,
        news: &'a NewsArticle,
        timestamp: Timestamp,
    }
    // Only web links reach a page: a `javascript:` or `data:` URL from the upstream or from
    // Redis is sent as no URL at all.
    let web_link = |u: &str| {
        let lower = u.get(..8).unwrap_or(u).to_ascii_lowercase();
        lower.starts_with("https://") || lower.starts_with("http://")
    };
    let cleaned;
    let article = match &article.url {
        Some(url) if !web_link(url) => {
            cleaned = NewsArticle {
                url: None,
                ..article.clone()
            };
            &cleaned
        }
        _ => article,
    };
    frame(&Frame {
        r#type: "news",
        news: article,
        timestamp: Timestamp::now(),
    })
}

/// `orderbook`: the top levels of a crypto book.
pub fn orderbook(
    symbol: &Symbol,
    bids: &[Level],
    asks: &[Level],
    timestamp: Option<Timestamp>,
) -> ByteString {
    #[derive(Serialize)]
    struct Side {
        p: f64,
        s: Num,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        symbol: &'a Symbol,
        bids: Vec<Side>,
        asks: Vec<Side>,
        timestamp: Option<Timestamp>,
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        r#type: &'static str,
        orderbook: Body<'a>,
        timestamp: Timestamp,
    }
    let side = |levels: &[Level]| {
        levels
            .iter()
            .map(|l| Side {
                p: l.price,
                s: l.size,
            })
            .collect()
    };
    frame(&Frame {
        r#type: "orderbook",
        orderbook: Body {
            symbol,
            bids: side(bids),
            asks: side(asks),
            timestamp,
        },
        timestamp: Timestamp::now(),
    })
}

/// `position_update` from an Alpaca position object (numbers are strings, as Alpaca sends them).
pub fn position_update(account: &str, position: &serde_json::Value) -> ByteString {
    let field = |k: &str| position.get(k).cloned().unwrap_or(serde_json::Value::Null);
    frame(&serde_json::json!({
        "type": "position_update",
        "position": {
            "account": account,
            "symbol": field("symbol"),
            "qty": field("qty"),
            "side": field("side"),
            "avg_entry_price": field("avg_entry_price"),
            "market_value": field("market_value"),
            "current_price": field("current_price"),
            "unrealized_pl": field("unrealized_pl"),
        },
        "timestamp": Timestamp::now(),
    }))
}

/// `order_update` from a `trade_updates` event.
pub fn order_update(account: &str, event: &str, data: &serde_json::Value) -> ByteString {
    // The execution of a fill or partial fill (strings, as Alpaca sends them; null otherwise)
    // and Alpaca's own event time.
    let field = |k: &str| data.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let timestamp = data
        .get("timestamp")
        .and_then(|t| t.as_str())
        .and_then(|t| Timestamp::parse_rfc3339(t).ok())
        .unwrap_or_else(Timestamp::now);
    frame(&serde_json::json!({
        "type": "order_update",
        "account": account,
        "event": event,
        "order": field("order"),
        "price": field("price"),
        "qty": field("qty"),
        "position_qty": field("position_qty"),
        "execution_id": field("execution_id"),
        "timestamp": timestamp,
    }))
}

/// `trade`.
pub fn trade(symbol: &Symbol, t: &Trade) -> ByteString {
    #[derive(Serialize)]
    struct Body<'a> {
        symbol: &'a Symbol,
        price: f64,
        size: Num,
        exchange: Option<&'a str>,
        conditions: &'a [Box<str>],
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tape: Option<Code>,
        #[serde(skip_serializing_if = "Option::is_none")]
        taker_side: Option<&'a str>,
        /// Alpaca's `u`: `corrected`, `canceled` or `incorrect` when this print updates an
        /// earlier one.
        #[serde(skip_serializing_if = "Option::is_none")]
        update: Option<&'a str>,
        timestamp: Timestamp,
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        r#type: &'static str,
        trade: Body<'a>,
        timestamp: Timestamp,
    }
    frame(&Frame {
        r#type: "trade",
        trade: Body {
            symbol,
            price: t.price,
            size: t.size,
            exchange: t.exchange.as_deref(),
            conditions: &t.conditions,
            id: t.id,
            tape: t.tape,
            taker_side: t.taker_side.as_deref(),
            update: t.update.as_deref(),
            timestamp: t.timestamp,
        },
        timestamp: Timestamp::now(),
    })
}

/// `status`: a trading status (halt, pause, resumption) or a LULD band, as Alpaca sent it;
/// `halted`: whether the symbol is halted after it.
pub fn status(symbol: &Symbol, s: &StatusEvent, halted: bool) -> ByteString {
    #[derive(Serialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Body<'a> {
        TradingStatus {
            symbol: &'a Symbol,
            code: &'a str,
            message: &'a str,
            reason_code: &'a str,
            reason_message: &'a str,
            halted: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            tape: Option<Code>,
            timestamp: Timestamp,
        },
        Luld {
            symbol: &'a Symbol,
            limit_up: f64,
            limit_down: f64,
            indicator: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            tape: Option<Code>,
            timestamp: Timestamp,
        },
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        r#type: &'static str,
        status: Body<'a>,
        timestamp: Timestamp,
    }
    let body = match s {
        StatusEvent::Trading {
            code,
            message,
            reason_code,
            reason_message,
            tape,
            timestamp,
        } => Body::TradingStatus {
            symbol,
            code,
            message,
            reason_code,
            reason_message,
            halted,
            tape: *tape,
            timestamp: *timestamp,
        },
        StatusEvent::Luld {
            limit_up,
            limit_down,
            indicator,
            tape,
            timestamp,
        } => Body::Luld {
            symbol,
            limit_up: *limit_up,
            limit_down: *limit_down,
            indicator,
            tape: *tape,
            timestamp: *timestamp,
        },
    };
    frame(&Frame {
        r#type: "status",
        status: body,
        timestamp: Timestamp::now(),
    })
}

/// `trade_correction` or `trade_cancel`: an earlier trade was corrected or cancelled; `last_price`
/// is the price after the fix (the next price update carries it too).
pub fn trade_fix(symbol: &Symbol, fix: &TradeFix, last_price: Option<f64>) -> ByteString {
    #[derive(Serialize)]
    struct Correction<'a> {
        symbol: &'a Symbol,
        exchange: Option<&'a str>,
        original_id: Option<i64>,
        original_price: f64,
        original_size: Num,
        original_conditions: &'a [Box<str>],
        corrected_id: Option<i64>,
        corrected_price: f64,
        corrected_size: Num,
        corrected_conditions: &'a [Box<str>],
        tape: Option<Code>,
        last_price: Option<f64>,
        timestamp: Timestamp,
    }
    #[derive(Serialize)]
    struct Cancel<'a> {
        symbol: &'a Symbol,
        id: Option<i64>,
        exchange: Option<&'a str>,
        price: f64,
        size: Num,
        /// `C` cancel, `E` error.
        action: Option<&'a str>,
        tape: Option<Code>,
        last_price: Option<f64>,
        timestamp: Timestamp,
    }
    let now = Timestamp::now();
    match fix {
        TradeFix::Correction(c) => frame(&serde_json::json!({
            "type": "trade_correction",
            "correction": Correction {
                symbol,
                exchange: c.exchange.as_deref(),
                original_id: c.original_id,
                original_price: c.original_price,
                original_size: c.original_size,
                original_conditions: &c.original_conditions,
                corrected_id: c.corrected_id,
                corrected_price: c.corrected_price,
                corrected_size: c.corrected_size,
                corrected_conditions: &c.corrected_conditions,
                tape: c.tape,
                last_price,
                timestamp: c.timestamp,
            },
            "timestamp": now,
        })),
        TradeFix::Cancel(x) => frame(&serde_json::json!({
            "type": "trade_cancel",
            "cancel": Cancel {
                symbol,
                id: x.id,
                exchange: x.exchange.as_deref(),
                price: x.price,
                size: x.size,
                action: x.action.as_deref(),
                tape: x.tape,
                last_price,
                timestamp: x.timestamp,
            },
            "timestamp": now,
        })),
    }
}

/// `bar`.
pub fn bar(symbol: &Symbol, b: &Bar) -> ByteString {
    #[derive(Serialize)]
    struct Body<'a> {
        symbol: &'a Symbol,
        kind: crate::market::BarKind,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: Num,
        trade_count: Option<u64>,
        vwap: Option<f64>,
        timestamp: Timestamp,
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        r#type: &'static str,
        bar: Body<'a>,
        timestamp: Timestamp,
    }
    frame(&Frame {
        r#type: "bar",
        bar: Body {
            symbol,
            kind: b.kind,
            open: b.open,
            high: b.high,
            low: b.low,
            close: b.close,
            volume: b.volume,
            trade_count: b.trade_count,
            vwap: b.vwap,
            timestamp: b.timestamp,
        },
        timestamp: Timestamp::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_links_that_are_not_web_links_are_dropped() {
        let article = |url: &str| NewsArticle {
            id: 1,
            headline: "h".into(),
            summary: String::new(),
            author: String::new(),
            url: Some(url.into()),
            symbols: vec!["AAPL".into()],
            source: "benzinga".into(),
            content: String::new(),
            created_at: None,
            updated_at: None,
        };
        let url_of = |url: &str| {
            let v: serde_json::Value = serde_json::from_str(&news(&article(url))).unwrap();
            v["news"]["url"].clone()
        };
        assert_eq!(url_of("https://example.com/a"), "https://example.com/a");
        assert_eq!(url_of("HTTP://example.com/a"), "HTTP://example.com/a");
        for hostile in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,x",
            "//evil",
        ] {
            assert!(url_of(hostile).is_null(), "{hostile}");
        }
    }

    fn parse_one(text: &str) -> Result<ClientRequest, ClientError> {
        parse_request(text, usize::MAX)
    }

    fn json(b: &ByteString) -> serde_json::Value {
        serde_json::from_str(b).unwrap()
    }

    #[test]
    fn parses_subscribe_with_defaults_and_rejections() {
        let req = parse_one(r#"{"action":"subscribe","symbols":["aapl"," msft ","??","AAPL",7]}"#)
            .unwrap();
        let ClientRequest::Subscribe {
            symbols,
            channels,
            rejected,
            ..
        } = req
        else {
            panic!()
        };
        assert_eq!(
            symbols.iter().map(Symbol::as_str).collect::<Vec<_>>(),
            ["AAPL", "MSFT"]
        );
        assert_eq!(channels, [ClientChannel::Quotes]);
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].symbol, "??");
        assert_eq!(rejected[0].code, ErrorCode::InvalidSymbol);
    }

    #[test]
    fn invalid_symbols_are_counted_but_only_the_first_few_listed() {
        // Found by the browser_message fuzz target: 43 invalid symbols came back as 43 rejections.
        let list: Vec<String> = (0..500).map(|i| format!("\"bad symbol {i}\"")).collect();
        let text = format!(
            r#"{{"action":"subscribe","symbols":["AAPL",{},7]}}"#,
            list.join(",")
        );
        let ClientRequest::Subscribe {
            symbols,
            rejected,
            invalid,
            over_limit,
            ..
        } = parse_request(&text, 200).unwrap()
        else {
            panic!()
        };
        assert_eq!(symbols.len(), 1);
        assert_eq!(rejected.len(), MAX_LISTED_REJECTIONS);
        assert_eq!(rejected[0].symbol, "bad symbol 0");
        assert_eq!((invalid, over_limit), (501, 0));
    }

    #[test]
    fn a_subscribe_reads_no_more_symbols_than_a_connection_may_hold() {
        let list: Vec<String> = (0..50).map(|i| format!("\"S{i:02}\"")).collect();
        let text = format!(
            r#"{{"action":"subscribe","symbols":["S00","S00",{}]}}"#,
            list.join(",")
        );
        let ClientRequest::Subscribe {
            symbols,
            over_limit,
            ..
        } = parse_request(&text, 3).unwrap()
        else {
            panic!()
        };
        assert_eq!(symbols.len(), 3, "duplicates are dropped, then the cap");
        assert_eq!(over_limit, 52 - 5);
        let rejected: Vec<Rejection> = (0..100)
            .map(|i| Rejection {
                symbol: format!("X{i}"),
                code: ErrorCode::InvalidSymbol,
                message: "no".into(),
            })
            .collect();
        let v: serde_json::Value =
            serde_json::from_str(&subscribed_with_total(&[], &[], &rejected, 500)).unwrap();
        assert_eq!(
            v["rejected"].as_array().unwrap().len(),
            MAX_LISTED_REJECTIONS
        );
        assert_eq!(v["rejected_count"], 500);
    }

    #[test]
    fn parses_channels_and_other_actions() {
        let req = parse_one(
            r#"{"action":"subscribe","symbols":["AAPL"],"channels":["quotes","trades","bars"]}"#,
        )
        .unwrap();
        assert!(matches!(req, ClientRequest::Subscribe { channels, .. } if channels.len() == 3));
        assert_eq!(
            parse_one(r#"{"action":"ping","id":7}"#).unwrap(),
            ClientRequest::Ping { id: Some(7.into()) }
        );
        assert_eq!(
            parse_one(r#"{"action":"configure","batch":true}"#).unwrap(),
            ClientRequest::Configure { batch: Some(true) }
        );
        assert!(matches!(
            parse_one(r#"{"action":"unsubscribe","symbols":["AAPL"]}"#).unwrap(),
            ClientRequest::Unsubscribe { .. }
        ));
    }

    #[test]
    fn bad_input_gets_the_documented_codes() {
        let code = |text: &str| parse_one(text).unwrap_err().code;
        assert_eq!(code("garbage"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"action":"dance"}"#), ErrorCode::UnknownAction);
        assert_eq!(code(r#"{"symbols":["AAPL"]}"#), ErrorCode::UnknownAction);
        assert_eq!(
            code(r#"{"action":"subscribe","symbols":5}"#),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            code(r#"{"action":"subscribe","symbols":["A"],"channels":["gossip"]}"#),
            ErrorCode::InvalidJson
        );
    }

    #[test]
    fn spot_price_update_has_the_documented_shape() {
        let sym = Symbol::parse("AAPL").unwrap();
        let p = PriceView {
            bid_price: 190.12,
            ask_price: 190.16,
            bid_size: Num::Int(2),
            ask_size: Num::Int(3),
            last_price: Some(190.14),
            timestamp: Some(Timestamp::parse_rfc3339("2026-01-20T15:04:05.123456789Z").unwrap()),
            bid_exchange: Code::new("V"),
            ask_exchange: Code::new("Q"),
            conditions: {
                let mut c = Codes::default();
                c.push("R");
                c
            },
            tape: Code::new("C"),
            halted: false,
        };
        let v = json(&spot_price_update(&sym, &p, false, true));
        assert_eq!(v["type"], "spot_price_update");
        assert_eq!(v["snapshot"], true);
        let u = &v["update"];
        assert_eq!(u["symbol"], "AAPL");
        assert_eq!(u["bid_price"], 190.12);
        assert_eq!(u["ask_price"], 190.16);
        assert!((u["mid_price"].as_f64().unwrap() - 190.14).abs() < 1e-9);
        assert_eq!(u["last_price"], 190.14);
        assert_eq!(u["bid_size"], 2);
        assert_eq!(u["timestamp"], "2026-01-20T15:04:05.123456789Z");
        assert_eq!(u["stale"], false);
        assert!(Timestamp::parse_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
    }
}
