//! Market data as it flows from an upstream feed to the symbol throttles.
//!
//! These are the decoded, owned forms of Alpaca's `q`, `t` and `b`/`d`/`u` messages, without the
//! symbol (the throttle that receives them already knows it). Sizes and volumes keep Alpaca's
//! integer-or-float distinction in [`Num`] so that `"bid_size":2` stays `2` and crypto's `0.5` stays
//! `0.5`.

use serde::{Serialize, Serializer};

use crate::time::Timestamp;

/// A JSON/msgpack number that remembers whether it was an integer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(v) => v as f64,
            Num::Float(v) => v,
        }
    }
}

impl Default for Num {
    fn default() -> Self {
        Num::Int(0)
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Num::Int(v) => s.serialize_i64(v),
            Num::Float(v) => s.serialize_f64(v),
        }
    }
}

/// A short code kept inline (no allocation): an exchange (`V`), a tape (`C`), a condition (`R`,
/// `@`). Alpaca's are one or two characters; longer text is not a code and is not kept.
/// Eight bytes, and `Option<Code>` too (the length is never zero).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Code {
    len: std::num::NonZeroU8,
    bytes: [u8; 7],
}

impl Code {
    pub fn new(text: &str) -> Option<Code> {
        let b = text.as_bytes();
        if b.len() > 7 {
            return None;
        }
        let mut bytes = [0; 7];
        bytes[..b.len()].copy_from_slice(b);
        Some(Code {
            len: std::num::NonZeroU8::new(b.len() as u8)?,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Built from a &str cut at its own length: always valid UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len.get())]).unwrap_or_default()
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Up to four condition codes, inline (a SIP quote has one, a trade at most four).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Codes {
    codes: [Option<Code>; 4],
}

impl Codes {
    /// Adds a code; a fifth and later ones are not kept.
    pub fn push(&mut self, text: &str) {
        if let (Some(code), Some(slot)) =
            (Code::new(text), self.codes.iter_mut().find(|c| c.is_none()))
        {
            *slot = Some(code);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Code> {
        self.codes.iter().map_while(Option::as_ref)
    }

    pub fn is_empty(&self) -> bool {
        self.codes[0].is_none()
    }
}

impl std::fmt::Debug for Codes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Codes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Best bid and offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Quote {
    pub bid_price: f64,
    pub bid_size: Num,
    pub ask_price: f64,
    pub ask_size: Num,
    pub timestamp: Timestamp,
    /// Exchange codes of the best bid and ask (stocks and options; crypto has none).
    pub bid_exchange: Option<Code>,
    pub ask_exchange: Option<Code>,
    /// Quote conditions (stocks: a list; options: one code).
    pub conditions: Codes,
    /// Stocks: the SIP tape (`A`, `B`, `C`).
    pub tape: Option<Code>,
}

/// One trade print.
#[derive(Clone, Debug, PartialEq)]
pub struct Trade {
    pub price: f64,
    pub size: Num,
    pub exchange: Option<Box<str>>,
    pub conditions: Vec<Box<str>>,
    pub id: Option<i64>,
    /// Crypto only: `B` (buyer) or `S` (seller) was the taker.
    pub taker_side: Option<Box<str>>,
    /// Stocks: the SIP tape.
    pub tape: Option<Code>,
    pub timestamp: Timestamp,
    /// Alpaca's `u`: this print updates an earlier one (`corrected`, `canceled`, `incorrect`).
    pub update: Option<Box<str>>,
}

impl Trade {
    /// A canceled or incorrect print is not a price anyone traded at.
    pub fn sets_last_price(&self) -> bool {
        !matches!(self.update.as_deref(), Some("canceled" | "incorrect"))
    }
}

/// A correction of an earlier trade (`T:"c"`): the original print and what it became.
#[derive(Clone, Debug, PartialEq)]
pub struct Correction {
    pub exchange: Option<Box<str>>,
    pub original_id: Option<i64>,
    pub original_price: f64,
    pub original_size: Num,
    pub original_conditions: Vec<Box<str>>,
    pub corrected_id: Option<i64>,
    pub corrected_price: f64,
    pub corrected_size: Num,
    pub corrected_conditions: Vec<Box<str>>,
    pub tape: Option<Code>,
    pub timestamp: Timestamp,
}

/// A cancel or error of an earlier trade (`T:"x"`; action `C` cancel, `E` error).
#[derive(Clone, Debug, PartialEq)]
pub struct TradeCancel {
    pub id: Option<i64>,
    pub exchange: Option<Box<str>>,
    pub price: f64,
    pub size: Num,
    pub action: Option<Box<str>>,
    pub tape: Option<Code>,
    pub timestamp: Timestamp,
}

/// A correction or cancel of an earlier trade.
#[derive(Clone, Debug, PartialEq)]
pub enum TradeFix {
    Correction(Correction),
    Cancel(TradeCancel),
}

/// One price level of an order book; size 0 removes the level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub price: f64,
    pub size: Num,
}

/// A crypto order book message: a full snapshot when `reset`, otherwise changed levels.
#[derive(Clone, Debug, PartialEq)]
pub struct BookUpdate {
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
    pub reset: bool,
    pub timestamp: Timestamp,
}

impl BookUpdate {
    /// Folds a later update into this one, so that applying the result equals applying both in
    /// order: a reset replaces everything; otherwise a level of the later update replaces the
    /// same-price level of this one. The result holds at most one entry per price level.
    pub fn merge(&mut self, later: BookUpdate) {
        if later.reset {
            *self = later;
            return;
        }
        for (mine, theirs) in [(&mut self.bids, later.bids), (&mut self.asks, later.asks)] {
            for level in theirs {
                match mine
                    .iter_mut()
                    .find(|l| price_key(l.price) == price_key(level.price))
                {
                    Some(slot) => *slot = level,
                    None => mine.push(level),
                }
            }
        }
        self.timestamp = later.timestamp;
    }
}

/// Which bar stream a bar came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BarKind {
    /// `b`: emitted after each minute.
    Minute,
    /// `d`: the day so far, after each minute.
    Daily,
    /// `u`: a minute bar corrected by late trades.
    Updated,
}

/// OHLCV for one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub kind: BarKind,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: Num,
    pub trade_count: Option<u64>,
    pub vwap: Option<f64>,
    pub timestamp: Timestamp,
}

/// One decoded market event for a single symbol.
#[derive(Clone, Debug, PartialEq)]
pub enum MarketEvent {
    Quote(Quote),
    Trade(Trade),
    Bar(Bar),
    Book(BookUpdate),
    /// A correction or cancel of an earlier trade: fixes `last_price`, reaches `trades` subscribers.
    /// Boxed: rare, and twice the size of the others.
    Fix(Box<TradeFix>),
    /// A trading status (halt, resumption) or a LULD band: reaches `statuses` subscribers, and a
    /// halt marks the symbol's price updates. Boxed: rare.
    Status(Box<StatusEvent>),
}

/// A stock's trading status (`T:"s"`) or its limit up-limit down band (`T:"l"`).
#[derive(Clone, Debug, PartialEq)]
pub enum StatusEvent {
    Trading {
        /// Alpaca's `sc`, `sm`, `rc`, `rm`.
        code: Box<str>,
        message: Box<str>,
        reason_code: Box<str>,
        reason_message: Box<str>,
        tape: Option<Code>,
        timestamp: Timestamp,
    },
    Luld {
        limit_up: f64,
        limit_down: f64,
        indicator: Box<str>,
        tape: Option<Code>,
        timestamp: Timestamp,
    },
}

impl StatusEvent {
    /// What it says of trading: `Some(true)` for a halt (`H`, CTA's `2`) or a volatility pause
    /// (`P`), `Some(false)` for a resumption (`T`, CTA's `3`), `None` for anything else — price
    /// indications, quotation resumptions (`Q`) and LULD bands come while a halt lasts.
    pub fn halted(&self) -> Option<bool> {
        match self {
            StatusEvent::Trading { code, .. } => match &**code {
                "H" | "2" | "P" => Some(true),
                "T" | "3" => Some(false),
                _ => None,
            },
            StatusEvent::Luld { .. } => None,
        }
    }
}

/// A news article (`T:"n"`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NewsArticle {
    pub id: i64,
    pub headline: String,
    pub summary: String,
    pub author: String,
    pub url: Option<String>,
    pub symbols: Vec<String>,
    pub source: String,
    /// The article body (may hold HTML); empty when Alpaca sends none.
    pub content: String,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

/// A crypto order book kept from `o` messages: a reset replaces it, later messages change levels,
/// and a level with size 0 is removed.
#[derive(Clone, Debug, Default)]
pub struct OrderBook {
    /// Keyed by price in 1e-9 units, so levels sort without floating-point keys.
    bids: std::collections::BTreeMap<i64, Level>,
    asks: std::collections::BTreeMap<i64, Level>,
    pub timestamp: Option<Timestamp>,
}

fn price_key(price: f64) -> i64 {
    (price * 1e9).round() as i64
}

impl OrderBook {
    pub fn apply(&mut self, update: &BookUpdate) {
        if update.reset {
            self.bids.clear();
            self.asks.clear();
        }
        for (side, levels) in [
            (&mut self.bids, &update.bids),
            (&mut self.asks, &update.asks),
        ] {
            for level in levels {
                if level.size.as_f64() == 0.0 {
                    side.remove(&price_key(level.price));
                } else {
                    side.insert(price_key(level.price), *level);
                }
            }
        }
        self.timestamp = Some(update.timestamp);
    }

    /// The best `n` bids, highest first.
    pub fn top_bids(&self, n: usize) -> Vec<Level> {
        self.bids.values().rev().take(n).copied().collect()
    }

    /// The best `n` asks, lowest first.
    pub fn top_asks(&self, n: usize) -> Vec<Level> {
        self.asks.values().take(n).copied().collect()
    }

    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }
}

/// `mid_price` as the browser protocol defines it: the average of bid and ask when both are
/// positive, otherwise whichever is positive, otherwise `None`.
pub fn mid_price(bid: f64, ask: f64) -> Option<f64> {
    match (bid > 0.0, ask > 0.0) {
        (true, true) => Some((bid + ask) / 2.0),
        (true, false) => Some(bid),
        (false, true) => Some(ask),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mid_price_rules() {
        assert_eq!(mid_price(190.12, 190.16), Some(190.14));
        assert_eq!(mid_price(0.0, 5.0), Some(5.0));
        assert_eq!(mid_price(4.0, 0.0), Some(4.0));
        assert_eq!(mid_price(0.0, 0.0), None);
    }

    #[test]
    fn order_book_resets_updates_and_removes_levels() {
        let t = Timestamp::now();
        let lvl = |p: f64, s: f64| Level {
            price: p,
            size: Num::Float(s),
        };
        let mut book = OrderBook::default();
        book.apply(&BookUpdate {
            bids: vec![lvl(100.0, 1.0), lvl(101.0, 2.0)],
            asks: vec![lvl(102.0, 1.5), lvl(103.0, 1.0)],
            reset: true,
            timestamp: t,
        });
        assert_eq!(book.top_bids(1), [lvl(101.0, 2.0)]);
        assert_eq!(book.top_asks(5), [lvl(102.0, 1.5), lvl(103.0, 1.0)]);
        // A delta: change one level, remove another, add a new one.
        book.apply(&BookUpdate {
            bids: vec![lvl(101.0, 0.0), lvl(100.5, 3.0)],
            asks: vec![lvl(102.0, 0.25)],
            reset: false,
            timestamp: t,
        });
        assert_eq!(book.top_bids(5), [lvl(100.5, 3.0), lvl(100.0, 1.0)]);
        assert_eq!(book.top_asks(1), [lvl(102.0, 0.25)]);
        // A reset replaces everything.
        book.apply(&BookUpdate {
            bids: vec![lvl(99.0, 1.0)],
            asks: vec![],
            reset: true,
            timestamp: t,
        });
        assert_eq!(book.depth(), (1, 0));
    }

    #[test]
    fn merged_book_updates_apply_like_the_sequence() {
        let t = Timestamp::now();
        let lvl = |p: f64, s: f64| Level {
            price: p,
            size: Num::Float(s),
        };
        let updates = [
            BookUpdate {
                bids: vec![lvl(100.0, 1.0), lvl(99.0, 2.0)],
                asks: vec![lvl(101.0, 1.0)],
                reset: true,
                timestamp: t,
            },
            BookUpdate {
                bids: vec![lvl(100.0, 0.0), lvl(98.0, 4.0)],
                asks: vec![lvl(101.0, 3.0), lvl(102.0, 1.0)],
                reset: false,
                timestamp: t,
            },
            BookUpdate {
                bids: vec![lvl(100.0, 5.0)],
                asks: vec![lvl(102.0, 0.0)],
                reset: false,
                timestamp: t,
            },
        ];
        let mut one_by_one = OrderBook::default();
        for u in &updates {
            one_by_one.apply(u);
        }
        let mut merged = updates[0].clone();
        merged.merge(updates[1].clone());
        merged.merge(updates[2].clone());
        let mut at_once = OrderBook::default();
        at_once.apply(&merged);
        assert_eq!(at_once.top_bids(10), one_by_one.top_bids(10));
        assert_eq!(at_once.top_asks(10), one_by_one.top_asks(10));
        assert_eq!(merged.bids.len(), 3, "one entry per price level");
    }

    #[test]
    fn num_keeps_integer_or_float() {
        assert_eq!(serde_json::to_string(&Num::Int(2)).unwrap(), "2");
        assert_eq!(serde_json::to_string(&Num::Float(0.5)).unwrap(), "0.5");
    }
}
