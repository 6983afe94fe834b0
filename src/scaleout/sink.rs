//! `PriceSink`: every conflated price update into Redis, in the shapes the existing consumers
//! read:
//!
//! - `SET price:{SYMBOL} '{"symbol","bid","ask","mid","timestamp","exchange"}' EX <ttl>`
//! - `PUBLISH price.updated.{SYMBOL} '{"symbol","bid","ask","mid","timestamp"}'`
//!
//! Throttles hand it each price they emit ([`PriceSink::offer`]: a short lock, the newest value per
//! symbol, never a wait). One task drains what is pending into a single pipeline per round trip,
//! so however fast prices come Redis gets at most one write per symbol per round trip. The task
//! runs on its own thread below the pipeline's priority (see `startup`). While Redis
//! is slow or away the pending map keeps the newest value per symbol — bounded by the symbols
//! streaming — and counts what it replaced; the task reconnects with backoff. The URL's password
//! is never logged or shown.
//!
//! Owns: the pending map, the Redis connection and the counters the status shows. Talks to:
//! nobody but Redis; throttles call [`PriceSink::offer`], the status reads [`PriceSink::status`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use log::{info, warn};
use serde::Serialize;
use tokio::sync::Notify;

use super::target::RedisTarget;
use super::within;
use crate::browser::PriceView;
use crate::rng::SplitMix64;
use crate::symbol::{AssetClass, Symbol};
use crate::time::Timestamp;
use crate::vocab::backoff::BackoffSettings;
use crate::vocab::Backoff;

/// The most symbols one pipeline carries (a round trip stays short; the rest go in the next).
const MAX_PIPELINE: usize = 2_000;

/// One symbol's pending price.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkPrice {
    pub bid: f64,
    pub ask: f64,
    pub mid: f64,
    pub timestamp: Timestamp,
    pub class: AssetClass,
    /// The first price after the feed lost its upstream: prices may be missing before it.
    pub gap: bool,
}

impl SinkPrice {
    /// The price of a throttle's view, when it has a quote (bid or ask).
    pub fn of(view: &PriceView, class: AssetClass) -> Option<SinkPrice> {
        Some(SinkPrice {
            bid: view.bid_price,
            ask: view.ask_price,
            mid: view.mid_price()?,
            timestamp: view.timestamp.unwrap_or_else(Timestamp::now),
            class,
            gap: false,
        })
    }
}

/// Writes the two payloads of one price into `out`, which it clears first: the event
/// (`price.updated.{SYMBOL}`) and, right after it, the cached value (`price:{SYMBOL}`, the same
/// fields and the exchange). Answers where the event ends. Written by hand into one reused buffer:
/// the sink formats each number once and allocates nothing per price (it was a tenth of a core).
/// Symbols are validated (letters, digits, `.`, `/`), so they need no JSON escaping.
pub fn write_payloads(out: &mut Vec<u8>, symbol: &str, p: &SinkPrice, exchange: &str) -> usize {
    out.clear();
    let start = out.len();
    out.extend_from_slice(b"{\"symbol\":\"");
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(b"\",\"bid\":");
    number(out, p.bid);
    out.extend_from_slice(b",\"ask\":");
    number(out, p.ask);
    out.extend_from_slice(b",\"mid\":");
    number(out, p.mid);
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(p.timestamp.to_rfc3339_micros().as_bytes());
    out.push(b'"');
    if p.gap {
        out.extend_from_slice(b",\"gap\":true");
    }
    out.push(b'}');
    let event_end = out.len();
    out.extend_from_within(start..event_end - 1);
    out.extend_from_slice(b",\"exchange\":\"");
    out.extend_from_slice(exchange.as_bytes());
    out.extend_from_slice(b"\"}");
    event_end
}

/// A JSON number as serde_json writes it (shortest round-trip form; `null` when not finite).
fn number(out: &mut Vec<u8>, x: f64) {
    if serde_json::to_writer(&mut *out, &x).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// What the status shows.
#[derive(Clone, Debug, Serialize)]
pub struct SinkStatus {
    /// `connected`, `connecting` or `disconnected`.
    pub state: &'static str,
    /// Host and port (never the password).
    pub server: String,
    /// Symbols whose newest price waits to be written.
    pub pending: usize,
    /// Prices written (each a SET and a PUBLISH).
    pub written: u64,
    /// Prices replaced by a newer one before they could be written (Redis slow or away).
    pub replaced: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    pub last_error: Option<String>,
}

/// Labels of the `exchange` field, per asset class.
#[derive(Clone, Debug)]
pub struct Exchanges {
    pub stock: String,
    pub crypto: String,
    pub option: String,
}

impl Exchanges {
    fn of(&self, class: AssetClass) -> &str {
        match class {
            AssetClass::Stock => &self.stock,
            AssetClass::Crypto => &self.crypto,
            AssetClass::Option => &self.option,
        }
    }
}

/// The sink: the pending prices and the counters.
pub struct PriceSink {
    pending: Mutex<HashMap<Symbol, SinkPrice>>,
    wake: Notify,
    connected: AtomicBool,
    connecting: AtomicBool,
    written: AtomicU64,
    replaced: AtomicU64,
    reconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
    server: String,
    ttl_secs: u64,
    exchanges: Exchanges,
}

impl std::fmt::Debug for PriceSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriceSink")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl PriceSink {
    pub fn new(target: &RedisTarget, ttl_secs: u64, exchanges: Exchanges) -> Arc<PriceSink> {
        Arc::new(PriceSink {
            pending: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            connected: AtomicBool::new(false),
            connecting: AtomicBool::new(true),
            written: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_error: Mutex::new(None),
            server: target.server(),
            ttl_secs,
            exchanges,
        })
    }

    /// A throttle's new price for `symbol`: replaces any unwritten one. Never waits on Redis.
    pub fn offer(&self, symbol: &Symbol, mut price: SinkPrice) {
        let replaced = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match pending.get_mut(symbol) {
                Some(old) => {
                    // A gap is news until it is written.
                    price.gap |= old.gap;
                    *old = price;
                    true
                }
                None => {
                    pending.insert(symbol.clone(), price);
                    false
                }
            }
        };
        if replaced {
            self.replaced.fetch_add(1, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    pub fn status(&self) -> SinkStatus {
        let state = if self.connected.load(Ordering::Relaxed) {
            "connected"
        } else if self.connecting.load(Ordering::Relaxed) {
            "connecting"
        } else {
            "disconnected"
        };
        SinkStatus {
            state,
            server: self.server.clone(),
            pending: self.pending.lock().map_or(0, |p| p.len()),
            written: self.written.load(Ordering::Relaxed),
            replaced: self.replaced.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Takes up to [`MAX_PIPELINE`] pending prices.
    fn take(&self) -> Vec<(Symbol, SinkPrice)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() <= MAX_PIPELINE {
            return pending.drain().collect();
        }
        let keys: Vec<Symbol> = pending.keys().take(MAX_PIPELINE).cloned().collect();
        keys.into_iter()
            .filter_map(|k| pending.remove_entry(&k))
            .collect()
    }

    /// Puts back what a failed pipeline carried, unless a newer price came meanwhile.
    fn restore(&self, batch: Vec<(Symbol, SinkPrice)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (symbol, price) in batch {
            match pending.get_mut(&symbol) {
                Some(newer) => newer.gap |= price.gap,
                None => {
                    pending.insert(symbol, price);
                }
            }
        }
    }

    fn has_pending(&self) -> bool {
        self.pending.lock().is_ok_and(|p| !p.is_empty())
    }

    fn fail(&self, what: &str, e: &redis::RedisError) {
        let message = format!("{what}: {e}");
        self.connected.store(false, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }

    /// Writes pending prices to Redis for as long as the actor system runs: connects (with
    /// backoff), drains, pipelines, and starts over after any error.
    pub async fn run(self: Arc<Self>, target: RedisTarget, backoff: BackoffSettings) {
        let client = match target.client() {
            Ok(c) => c,
            Err(e) => {
                self.connecting.store(false, Ordering::Relaxed);
                self.fail("invalid redis.url", &e);
                warn!(
                    "redis: {} is not a usable URL; no prices go to Redis",
                    self.server
                );
                return;
            }
        };
        let mut backoff = Backoff::new(backoff, SplitMix64::new(0x5eed));
        let mut first = true;
        // Reused for every price: the payloads and the keys are written here, then copied once
        // into the pipeline.
        let (mut payload, mut key) = (Vec::with_capacity(256), Vec::with_capacity(64));
        loop {
            self.connecting.store(true, Ordering::Relaxed);
            let mut conn = match within(client.get_multiplexed_async_connection()).await {
                Ok(c) => c,
                Err(e) => {
                    self.connecting.store(false, Ordering::Relaxed);
                    self.fail("connect", &e);
                    let delay = backoff.next_delay();
                    warn!(
                        "redis: cannot connect to {} ({e}); retrying in {delay:?}",
                        self.server
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            if !first {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            backoff.reset();
            self.connecting.store(false, Ordering::Relaxed);
            self.connected.store(true, Ordering::Relaxed);
            info!("redis: connected to {}; writing prices", self.server);
            loop {
                if !self.has_pending() {
                    self.wake.notified().await;
                }
                let batch = self.take();
                if batch.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for (symbol, price) in &batch {
                    let exchange = self.exchanges.of(price.class);
                    let event_end = write_payloads(&mut payload, symbol.as_str(), price, exchange);
                    key.clear();
                    key.extend_from_slice(b"price:");
                    key.extend_from_slice(symbol.as_str().as_bytes());
                    pipe.cmd("SET")
                        .arg(&key[..])
                        .arg(&payload[event_end..])
                        .arg("EX")
                        .arg(self.ttl_secs)
                        .ignore();
                    key.clear();
                    key.extend_from_slice(b"price.updated.");
                    key.extend_from_slice(symbol.as_str().as_bytes());
                    pipe.cmd("PUBLISH")
                        .arg(&key[..])
                        .arg(&payload[..event_end])
                        .ignore();
                }
                match within(pipe.query_async::<()>(&mut conn)).await {
                    Ok(()) => {
                        self.written
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.restore(batch);
                        self.fail("write", &e);
                        let delay = backoff.next_delay();
                        warn!(
                            "redis: writing to {} failed ({e}); reconnecting in {delay:?}",
                            self.server
                        );
                        tokio::time::sleep(delay).await;
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(bid: f64, ask: f64) -> SinkPrice {
        SinkPrice {
            bid,
            ask,
            mid: crate::market::mid_price(bid, ask).unwrap(),
            timestamp: Timestamp::parse_rfc3339("2024-10-19T14:30:00.123456Z").unwrap(),
            class: AssetClass::Stock,
            gap: false,
        }
    }

    /// The two payloads of one price: the cached value and the event.
    fn payloads(symbol: &str, p: &SinkPrice, exchange: &str) -> (String, String) {
        let mut out = Vec::new();
        let event_end = write_payloads(&mut out, symbol, p, exchange);
        let text = String::from_utf8(out).unwrap();
        (text[event_end..].to_owned(), text[..event_end].to_owned())
    }

    fn sink() -> Arc<PriceSink> {
        PriceSink::new(
            &RedisTarget::url("redis://:hunter2@127.0.0.1:6379/0"),
            300,
            Exchanges {
                stock: "IEX".into(),
                crypto: "CRYPTO".into(),
                option: "INDICATIVE".into(),
            },
        )
    }

    #[test]
    fn the_payloads_have_the_consumers_shapes() {
        let (cached, event) = payloads("AAPL", &price(150.25, 150.27), "IEX");
        let cached: serde_json::Value = serde_json::from_str(&cached).unwrap();
        assert_eq!(
            cached,
            serde_json::json!({"symbol":"AAPL","bid":150.25,"ask":150.27,
                "mid":(150.25 + 150.27) / 2.0,"timestamp":"2024-10-19T14:30:00.123456+00:00",
                "exchange":"IEX"})
        );
        let event: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert_eq!(event["timestamp"], "2024-10-19T14:30:00.123456+00:00");
        assert!(event.get("exchange").is_none());
        assert!(event.get("gap").is_none(), "gap only when there was one");
    }

    #[test]
    fn a_gap_is_written_and_survives_a_newer_price() {
        let s = sink();
        let aapl = Symbol::parse("AAPL").unwrap();
        s.offer(
            &aapl,
            SinkPrice {
                gap: true,
                ..price(150.0, 150.5)
            },
        );
        s.offer(&aapl, price(151.0, 151.5));
        let taken = s.take();
        assert_eq!(taken.len(), 1);
        let (_, p) = &taken[0];
        assert_eq!(
            (p.bid, p.gap),
            (151.0, true),
            "the newest price, still marked"
        );
        let (cached, event) = payloads("AAPL", p, "IEX");
        for payload in [cached, event] {
            let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(v["gap"], true, "{payload}");
        }
        // A failed write put back under a newer price keeps the mark too.
        s.offer(&aapl, price(152.0, 152.5));
        s.restore(taken);
        assert!(s.take()[0].1.gap);
    }

    #[test]
    fn pending_keeps_the_newest_price_per_symbol_and_counts_the_replaced() {
        let s = sink();
        let aapl = Symbol::parse("AAPL").unwrap();
        let msft = Symbol::parse("MSFT").unwrap();
        s.offer(&aapl, price(1.0, 2.0));
        s.offer(&aapl, price(3.0, 4.0));
        s.offer(&msft, price(5.0, 6.0));
        let status = s.status();
        assert_eq!((status.pending, status.replaced), (2, 1));
        let mut batch = s.take();
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(batch[0].1.bid, 3.0);
        // A failed write puts back only what no newer price replaced.
        s.offer(&aapl, price(7.0, 8.0));
        s.restore(batch);
        let mut again = s.take();
        again.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!((again[0].1.bid, again[1].1.bid), (7.0, 5.0));
    }

    #[test]
    fn the_password_never_shows() {
        let s = sink();
        assert_eq!(s.status().server, "127.0.0.1:6379/0");
        assert!(!format!("{:?}", s.status()).contains("hunter2"));
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        let mut p = price(0.0001, 1e21);
        p.mid = f64::NAN;
        let (cached, event) = payloads("BTC/USD", &p, "CRYPTO");
        let v: serde_json::Value = serde_json::from_str(&cached).unwrap();
        assert_eq!(
            (v["bid"].as_f64(), v["ask"].as_f64()),
            (Some(0.0001), Some(1e21))
        );
        assert!(v["mid"].is_null());
        assert_eq!(v["exchange"], "CRYPTO");
        assert_eq!(&cached[..event.len() - 1], &event[..event.len() - 1]);
    }

    #[test]
    fn a_view_without_a_quote_is_not_written() {
        assert!(SinkPrice::of(&PriceView::default(), AssetClass::Stock).is_none());
    }
}
