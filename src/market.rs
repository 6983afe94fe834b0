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

/// Best bid and offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Quote {
    pub bid_price: f64,
    pub bid_size: Num,
    pub ask_price: f64,
    pub ask_size: Num,
    pub timestamp: Timestamp,
}

/// One trade print.
#[derive(Clone, Debug, PartialEq)]
pub struct Trade {
    pub price: f64,
    pub size: Num,
    pub exchange: Option<Box<str>>,
    pub conditions: Vec<Box<str>>,
    pub id: Option<i64>,
    pub timestamp: Timestamp,
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
    fn num_keeps_integer_or_float() {
        assert_eq!(serde_json::to_string(&Num::Int(2)).unwrap(), "2");
        assert_eq!(serde_json::to_string(&Num::Float(0.5)).unwrap(), "0.5");
    }
}
