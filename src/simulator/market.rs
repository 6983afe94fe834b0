//! Random-walk prices for the simulator, deterministic per (seed, symbol), and the Alpaca
//! messages built from them for each asset class.
//!
//! Prices are kept as integer ticks so they print as clean decimals (`227.15`, not
//! `227.15000000000001`). Stocks trade in cents with integer sizes; crypto in a tick that fits the
//! price with float sizes, plus order books; options in cents with integer sizes and single-string
//! conditions, as Alpaca sends each.

use crate::rng::{fnv1a, SplitMix64};
use crate::symbol::{classify, AssetClass};
use crate::time::Timestamp;

use crate::wire::{Msg, V};

/// Trades accumulated since the last bar.
#[derive(Clone, Debug, Default)]
struct BarAcc {
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    count: i64,
    notional: f64,
}

/// The price path of one symbol.
#[derive(Clone, Debug)]
pub struct Walk {
    symbol: String,
    class: AssetClass,
    rng: SplitMix64,
    /// Mid price in ticks.
    mid: i64,
    /// Decimal places of one tick.
    decimals: u32,
    next_trade_id: i64,
    bar: BarAcc,
}

/// Starting prices of well-known symbols, so a demo looks believable; others start at random.
const REFERENCE_PRICES: &[(&str, f64)] = &[
    ("BTC/USD", 65_000.0),
    ("ETH/USD", 3_200.0),
    ("SOL/USD", 150.0),
    ("DOGE/USD", 0.15),
    ("LTC/USD", 85.0),
    ("AVAX/USD", 35.0),
];

impl Walk {
    pub fn new(symbol: &str, seed: u64) -> Self {
        let class = classify(symbol).unwrap_or(AssetClass::Stock);
        let mut rng = SplitMix64::new(seed ^ fnv1a(symbol.as_bytes()));
        let reference = REFERENCE_PRICES
            .iter()
            .find(|(s, _)| *s == symbol)
            .map(|(_, p)| *p);
        let (mid, decimals) = match (class, reference) {
            (_, Some(price)) => {
                // About six significant digits, like the random crypto prices below.
                let decimals = (5 - price.log10().floor() as i32).clamp(0, 8) as u32;
                (
                    (price * 10f64.powi(decimals as i32)).round() as i64,
                    decimals,
                )
            }
            (class, None) => match class {
                AssetClass::Stock => (2_000 + rng.below(48_000) as i64, 2), // $20–$500
                AssetClass::Option => (50 + rng.below(1_950) as i64, 2),    // $0.50–$20
                AssetClass::Crypto => {
                    // $1–$100,000 with about six significant digits.
                    let magnitude = rng.below(5) as u32;
                    let decimals = 5 - magnitude;
                    let base = 10i64.pow(magnitude + decimals);
                    (base + rng.below(9 * base as u64) as i64, decimals)
                }
            },
        };
        Walk {
            symbol: symbol.to_owned(),
            class,
            next_trade_id: 1 + rng.below(1_000) as i64,
            rng,
            mid,
            decimals,
            bar: BarAcc::default(),
        }
    }

    fn price(&self, ticks: i64) -> f64 {
        ticks as f64 / 10f64.powi(self.decimals as i32)
    }

    /// Moves the mid by a few ticks (never below ten ticks).
    pub fn step(&mut self) {
        let move_ticks = self.rng.below(7) as i64 - 3;
        self.mid = (self.mid + move_ticks).max(10);
    }

    fn int_size(&mut self, max: u64) -> V {
        V::Int(1 + self.rng.below(max) as i64)
    }

    fn float_size(&mut self) -> V {
        V::Float((1 + self.rng.below(50_000)) as f64 / 10_000.0)
    }

    /// A quote around the current mid, timestamped `t`.
    pub fn quote(&mut self, t: Timestamp) -> Msg {
        let spread = 1 + self.rng.below(4) as i64;
        let bid = self.price(self.mid - spread / 2);
        let ask = self.price(self.mid - spread / 2 + spread);
        let symbol = V::Str(self.symbol.clone());
        match self.class {
            AssetClass::Stock => Msg(vec![
                ("T", "q".into()),
                ("S", symbol),
                ("bx", "V".into()),
                ("bp", bid.into()),
                ("bs", self.int_size(9)),
                ("ax", "V".into()),
                ("ap", ask.into()),
                ("as", self.int_size(9)),
                ("c", V::List(vec!["R".into()])),
                ("z", "C".into()),
                ("t", t.into()),
            ]),
            AssetClass::Crypto => Msg(vec![
                ("T", "q".into()),
                ("S", symbol),
                ("bp", bid.into()),
                ("bs", self.float_size()),
                ("ap", ask.into()),
                ("as", self.float_size()),
                ("t", t.into()),
            ]),
            AssetClass::Option => Msg(vec![
                ("T", "q".into()),
                ("S", symbol),
                ("t", t.into()),
                ("bx", "C".into()),
                ("bp", bid.into()),
                ("bs", self.int_size(100)),
                ("ax", "C".into()),
                ("ap", ask.into()),
                ("as", self.int_size(100)),
                ("c", "A".into()),
            ]),
        }
    }

    /// A quote with the given prices (control API), otherwise like [`Walk::quote`].
    pub fn quote_at(&mut self, t: Timestamp, bid: f64, ask: f64) -> Msg {
        let mut q = self.quote(t);
        for (k, v) in q.0.iter_mut() {
            match *k {
                "bp" => *v = V::Float(bid),
                "ap" => *v = V::Float(ask),
                _ => {}
            }
        }
        q
    }

    /// A trade near the current mid (or at `price`), timestamped `t`; also feeds the next bar.
    pub fn trade(&mut self, t: Timestamp, price: Option<f64>) -> Msg {
        let offset = self.rng.below(3) as i64 - 1;
        let p = price.unwrap_or_else(|| self.price(self.mid + offset));
        let id = self.next_trade_id;
        self.next_trade_id += 1;
        let symbol = V::Str(self.symbol.clone());
        let (msg, size) = match self.class {
            AssetClass::Stock => {
                let s = self.int_size(300);
                (
                    Msg(vec![
                        ("T", "t".into()),
                        ("S", symbol),
                        ("i", V::Int(id)),
                        ("x", "V".into()),
                        ("p", p.into()),
                        ("s", s.clone()),
                        ("c", V::List(vec!["@".into()])),
                        ("z", "C".into()),
                        ("t", t.into()),
                    ]),
                    s,
                )
            }
            AssetClass::Crypto => {
                let s = self.float_size();
                let taker = if self.rng.below(2) == 0 { "B" } else { "S" };
                (
                    Msg(vec![
                        ("T", "t".into()),
                        ("S", symbol),
                        ("p", p.into()),
                        ("s", s.clone()),
                        ("t", t.into()),
                        ("i", V::Int(id)),
                        ("tks", taker.into()),
                    ]),
                    s,
                )
            }
            AssetClass::Option => {
                let s = self.int_size(20);
                (
                    Msg(vec![
                        ("T", "t".into()),
                        ("S", symbol),
                        ("t", t.into()),
                        ("p", p.into()),
                        ("s", s.clone()),
                        ("x", "N".into()),
                        ("c", "S".into()),
                    ]),
                    s,
                )
            }
        };
        let size = match size {
            V::Int(i) => i as f64,
            V::Float(f) => f,
            _ => 0.0,
        };
        let b = &mut self.bar;
        if b.count == 0 {
            (b.open, b.high, b.low) = (p, p, p);
        }
        b.high = b.high.max(p);
        b.low = b.low.min(p);
        b.close = p;
        b.volume += size;
        b.count += 1;
        b.notional += p * size;
        msg
    }

    /// The bar for the interval starting at `start`, from trades since the last bar (a flat bar at
    /// the mid when there were none), and a fresh accumulator.
    pub fn bar(&mut self, start: Timestamp) -> Msg {
        let b = std::mem::take(&mut self.bar);
        let mid = self.price(self.mid);
        let (o, h, l, c, vw) = if b.count == 0 {
            (mid, mid, mid, mid, mid)
        } else {
            let vw = (b.notional / b.volume * 10_000.0).round() / 10_000.0;
            (b.open, b.high, b.low, b.close, vw)
        };
        let volume = match self.class {
            AssetClass::Crypto => V::Float((b.volume * 10_000.0).round() / 10_000.0),
            _ => V::Int(b.volume as i64),
        };
        Msg(vec![
            ("T", "b".into()),
            ("S", V::Str(self.symbol.clone())),
            ("o", o.into()),
            ("h", h.into()),
            ("l", l.into()),
            ("c", c.into()),
            ("v", volume),
            ("n", V::Int(b.count)),
            ("vw", vw.into()),
            ("t", start.into()),
        ])
    }

    fn level(&mut self, ticks: i64, size: V) -> V {
        V::Map(vec![("p", self.price(ticks).into()), ("s", size)])
    }

    /// A full order book around the mid (`r: true`), five levels a side.
    pub fn book_snapshot(&mut self, t: Timestamp) -> Msg {
        let bids = (1..=5)
            .map(|k| {
                let s = self.float_size();
                self.level(self.mid - k, s)
            })
            .collect();
        let asks = (1..=5)
            .map(|k| {
                let s = self.float_size();
                self.level(self.mid + k, s)
            })
            .collect();
        Msg(vec![
            ("T", "o".into()),
            ("S", V::Str(self.symbol.clone())),
            ("t", t.into()),
            ("b", V::List(bids)),
            ("a", V::List(asks)),
            ("r", V::Bool(true)),
        ])
    }

    /// A change of one level on each side; a size of 0 removes a level.
    pub fn book_update(&mut self, t: Timestamp) -> Msg {
        let bid_size = if self.rng.below(4) == 0 {
            V::Float(0.0)
        } else {
            self.float_size()
        };
        let ask_size = self.float_size();
        let bid_k = 1 + self.rng.below(5) as i64;
        let ask_k = 1 + self.rng.below(5) as i64;
        let bid = self.level(self.mid - bid_k, bid_size);
        let ask = self.level(self.mid + ask_k, ask_size);
        Msg(vec![
            ("T", "o".into()),
            ("S", V::Str(self.symbol.clone())),
            ("t", t.into()),
            ("b", V::List(vec![bid])),
            ("a", V::List(vec![ask])),
        ])
    }
}

/// A news article (`T:"n"`).
pub fn news_article(id: i64, headline: &str, symbols: &[String], t: Timestamp) -> Msg {
    Msg(vec![
        ("T", "n".into()),
        ("id", V::Int(id)),
        ("headline", headline.into()),
        (
            "summary",
            format!("Simulated summary of: {headline}").into(),
        ),
        ("author", "tickrelay simulator".into()),
        ("created_at", t.into()),
        ("updated_at", t.into()),
        ("url", format!("https://example.com/news/{id}").into()),
        ("content", format!("<p>{headline}</p>").into()),
        (
            "symbols",
            V::List(symbols.iter().map(|s| V::Str(s.clone())).collect()),
        ),
        ("source", "simulator".into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{MarketEvent, Num};
    use crate::upstream::protocol::{decode_json, decode_msgpack, Inbound};

    /// Decodes `m` from JSON and from msgpack, checks both agree, returns the event.
    fn decode_one(m: &Msg) -> MarketEvent {
        let text = format!("[{}]", m.json());
        let from_json = decode_json(&text).unwrap().remove(0);
        let bytes = crate::wire::msgpack_frame(&[&m.msgpack()]);
        let from_msgpack = decode_msgpack(&bytes).unwrap().remove(0);
        assert_eq!(from_json, from_msgpack, "both encodings decode alike");
        match from_json {
            Inbound::Market { event, .. } => event,
            other => panic!("{other:?}"),
        }
    }

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
        assert_ne!(
            Walk::new("AAPL", 42).quote(t).get("bp"),
            Walk::new("MSFT", 42).quote(t).get("bp")
        );
    }

    #[test]
    fn each_class_speaks_its_stream_dialect() {
        let t = Timestamp::now();
        let MarketEvent::Quote(q) = decode_one(&Walk::new("AAPL", 1).quote(t)) else {
            panic!()
        };
        assert!(matches!(q.bid_size, Num::Int(_)) && q.ask_price > q.bid_price);
        let MarketEvent::Quote(q) = decode_one(&Walk::new("BTC/USD", 1).quote(t)) else {
            panic!()
        };
        assert!(
            matches!(q.bid_size, Num::Float(_)),
            "crypto sizes are floats"
        );
        let mut opt = Walk::new("SPY260117C00688000", 1);
        let MarketEvent::Trade(tr) = decode_one(&opt.trade(t, None)) else {
            panic!()
        };
        assert_eq!(tr.conditions.len(), 1);
        let MarketEvent::Book(b) = decode_one(&Walk::new("ETH/USD", 1).book_snapshot(t)) else {
            panic!()
        };
        assert!(b.reset && b.bids.len() == 5 && b.asks.len() == 5);
    }

    #[test]
    fn well_known_symbols_start_near_their_reference_price() {
        let t = Timestamp::now();
        let bid = |s: &str| match Walk::new(s, 1).quote(t).get("bp") {
            Some(V::Float(p)) => *p,
            other => panic!("{other:?}"),
        };
        assert!((64_900.0..65_100.0).contains(&bid("BTC/USD")));
        assert!((0.1499..0.1501).contains(&bid("DOGE/USD")));
    }

    #[test]
    fn quotes_are_sane_and_clean_decimals() {
        let t = Timestamp::now();
        for symbol in ["TSLA", "BTC/USD", "DOGE/USD", "SPY260117P00500000"] {
            let mut w = Walk::new(symbol, 7);
            for _ in 0..2_000 {
                w.step();
                let q = w.quote(t);
                let (Some(V::Float(bp)), Some(V::Float(ap))) = (q.get("bp"), q.get("ap")) else {
                    panic!()
                };
                assert!(*bp > 0.0 && ap > bp, "{symbol}: {q:?}");
                assert!(q.json().len() < 300, "no float noise: {}", q.json());
            }
        }
    }

    #[test]
    fn bars_summarise_trades() {
        let t = Timestamp::now();
        let mut w = Walk::new("SPY", 3);
        let prices: Vec<f64> = (0..5)
            .map(|_| match w.trade(t, None).get("p") {
                Some(V::Float(p)) => *p,
                _ => panic!(),
            })
            .collect();
        let bar = w.bar(t);
        assert_eq!(bar.get("n"), Some(&V::Int(5)));
        assert_eq!(bar.get("o"), Some(&V::Float(prices[0])));
        assert_eq!(bar.get("c"), Some(&V::Float(prices[4])));
        assert_eq!(
            w.bar(t).get("n"),
            Some(&V::Int(0)),
            "the accumulator resets"
        );
    }
}
