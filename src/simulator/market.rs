//! Random-walk prices for the simulator, deterministic per (seed, symbol).
//!
//! Each symbol gets its own generator seeded from the simulator seed and the symbol's name, so the
//! same symbol walks the same path on every run and machine (given the same number of steps).

use serde::Serialize;

use crate::rng::{fnv1a, SplitMix64};
use crate::time::Timestamp;

/// A quote as the simulator sends it (`T:"q"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimQuote {
    #[serde(rename = "T")]
    pub kind: &'static str,
    #[serde(rename = "S")]
    pub symbol: String,
    pub bx: &'static str,
    pub bp: f64,
    pub bs: u32,
    pub ax: &'static str,
    pub ap: f64,
    #[serde(rename = "as")]
    pub ask_size: u32,
    pub c: [&'static str; 1],
    pub z: &'static str,
    pub t: Timestamp,
}

/// A trade as the simulator sends it (`T:"t"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimTrade {
    #[serde(rename = "T")]
    pub kind: &'static str,
    #[serde(rename = "S")]
    pub symbol: String,
    pub i: i64,
    pub x: &'static str,
    pub p: f64,
    pub s: u32,
    pub c: [&'static str; 1],
    pub z: &'static str,
    pub t: Timestamp,
}

/// A minute bar (`T:"b"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimBar {
    #[serde(rename = "T")]
    pub kind: &'static str,
    #[serde(rename = "S")]
    pub symbol: String,
    pub o: f64,
    pub h: f64,
    pub l: f64,
    pub c: f64,
    pub v: u64,
    pub n: u64,
    pub vw: f64,
    pub t: Timestamp,
}

/// Trades accumulated since the last bar.
#[derive(Clone, Debug, Default)]
struct BarAcc {
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: u64,
    count: u64,
    notional: f64,
}

/// The price path of one symbol.
#[derive(Clone, Debug)]
pub struct Walk {
    symbol: String,
    rng: SplitMix64,
    /// Mid price in cents.
    mid_cents: i64,
    next_trade_id: i64,
    bar: BarAcc,
}

fn cents(c: i64) -> f64 {
    c as f64 / 100.0
}

impl Walk {
    pub fn new(symbol: &str, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ fnv1a(symbol.as_bytes()));
        let mid_cents = 2_000 + rng.below(48_000) as i64; // $20–$500
        Walk {
            symbol: symbol.to_owned(),
            next_trade_id: 1 + rng.below(1_000) as i64,
            rng,
            mid_cents,
            bar: BarAcc::default(),
        }
    }

    /// Moves the mid by a few cents (never below $1).
    pub fn step(&mut self) {
        let move_cents = self.rng.below(7) as i64 - 3;
        self.mid_cents = (self.mid_cents + move_cents).max(100);
    }

    /// A quote around the current mid, timestamped `t`.
    pub fn quote(&mut self, t: Timestamp) -> SimQuote {
        let spread = 1 + self.rng.below(4) as i64;
        let bid = self.mid_cents - spread / 2;
        SimQuote {
            kind: "q",
            symbol: self.symbol.clone(),
            bx: "V",
            bp: cents(bid),
            bs: 1 + self.rng.below(9) as u32,
            ax: "V",
            ap: cents(bid + spread),
            ask_size: 1 + self.rng.below(9) as u32,
            c: ["R"],
            z: "C",
            t,
        }
    }

    /// A trade near the current mid, timestamped `t`; also feeds the next bar.
    pub fn trade(&mut self, t: Timestamp) -> SimTrade {
        let price = cents(self.mid_cents + self.rng.below(3) as i64 - 1);
        let size = 1 + self.rng.below(300) as u32;
        let id = self.next_trade_id;
        self.next_trade_id += 1;
        let b = &mut self.bar;
        if b.count == 0 {
            b.open = price;
            b.high = price;
            b.low = price;
        }
        b.high = b.high.max(price);
        b.low = b.low.min(price);
        b.close = price;
        b.volume += u64::from(size);
        b.count += 1;
        b.notional += price * f64::from(size);
        SimTrade {
            kind: "t",
            symbol: self.symbol.clone(),
            i: id,
            x: "V",
            p: price,
            s: size,
            c: ["@"],
            z: "C",
            t,
        }
    }

    /// The bar for the interval starting at `start`, from trades since the last bar (a flat bar at
    /// the mid when there were none), and a fresh accumulator.
    pub fn bar(&mut self, start: Timestamp) -> SimBar {
        let b = std::mem::take(&mut self.bar);
        let mid = cents(self.mid_cents);
        let (o, h, l, c, vw) = if b.count == 0 {
            (mid, mid, mid, mid, mid)
        } else {
            let vw = (b.notional / b.volume as f64 * 10_000.0).round() / 10_000.0;
            (b.open, b.high, b.low, b.close, vw)
        };
        SimBar {
            kind: "b",
            symbol: self.symbol.clone(),
            o,
            h,
            l,
            c,
            v: b.volume,
            n: b.count,
            vw,
            t: start,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_symbol_walk_the_same_path() {
        let t = Timestamp::now();
        let mut a = Walk::new("AAPL", 42);
        let mut b = Walk::new("AAPL", 42);
        for _ in 0..50 {
            a.step();
            b.step();
            assert_eq!(a.quote(t), b.quote(t));
        }
        let mut c = Walk::new("MSFT", 42);
        assert_ne!(Walk::new("AAPL", 42).quote(t).bp, c.quote(t).bp);
    }

    #[test]
    fn quotes_are_sane() {
        let t = Timestamp::now();
        let mut w = Walk::new("TSLA", 1);
        for _ in 0..10_000 {
            w.step();
            let q = w.quote(t);
            assert!(q.bp > 0.0 && q.ap > q.bp, "{q:?}");
            assert!(q.ap - q.bp < 0.05 + 1e-9);
        }
    }

    #[test]
    fn bars_summarise_trades() {
        let t = Timestamp::now();
        let mut w = Walk::new("SPY", 3);
        let trades: Vec<_> = (0..5).map(|_| w.trade(t)).collect();
        let bar = w.bar(t);
        assert_eq!(bar.n, 5);
        assert_eq!(bar.v, trades.iter().map(|t| u64::from(t.s)).sum::<u64>());
        assert_eq!(bar.o, trades[0].p);
        assert_eq!(bar.c, trades[4].p);
        assert!(bar.l <= bar.o && bar.o <= bar.h);
        assert_eq!(w.bar(t).n, 0, "the accumulator resets");
    }
}
