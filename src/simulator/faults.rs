//! Fault switches of the simulator, per simulated stream, flipped by the control API.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Deserialize;

/// The simulator's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimFeed {
    Stocks,
    Crypto,
    Options,
    News,
    Trading,
}

impl SimFeed {
    pub const ALL: [SimFeed; 5] = [
        SimFeed::Stocks,
        SimFeed::Crypto,
        SimFeed::Options,
        SimFeed::News,
        SimFeed::Trading,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SimFeed::Stocks => "stocks",
            SimFeed::Crypto => "crypto",
            SimFeed::Options => "options",
            SimFeed::News => "news",
            SimFeed::Trading => "trading",
        }
    }

    /// The channels a data stream offers (the trading stream has none).
    pub fn channels(self) -> &'static [&'static str] {
        match self {
            SimFeed::Stocks => &[
                "trades",
                "quotes",
                "bars",
                "updatedBars",
                "dailyBars",
                "statuses",
                "lulds",
                "imbalances",
            ],
            SimFeed::Crypto => &[
                "trades",
                "quotes",
                "bars",
                "updatedBars",
                "dailyBars",
                "orderbooks",
            ],
            SimFeed::Options => &["trades", "quotes"],
            SimFeed::News => &["news"],
            SimFeed::Trading => &[],
        }
    }
}

/// The faults of one stream.
#[derive(Debug, Default)]
pub struct FeedFaults {
    /// No market data is sent (pings are still answered).
    pub silent: AtomicBool,
    /// Nothing at all is sent, not even pongs: a dead peer.
    pub frozen: AtomicBool,
    /// No generated market data; injected and raw frames still go out (a test's exact sequence).
    pub paused: AtomicBool,
    /// The next authentications are refused with (code, count).
    auth_failure: Mutex<Option<(u16, u32)>>,
    /// The next WebSocket upgrades are refused with (HTTP status, count).
    handshake_failure: Mutex<Option<(u16, u32)>>,
    /// Symbols whose subscription is refused with 400.
    rejected_symbols: Mutex<BTreeSet<String>>,
    /// A plan's symbol limit per connection (0: none); exceeding it is refused with 405.
    pub symbol_limit: AtomicUsize,
    /// The next REST requests are refused with (HTTP status, count) — the trading API.
    rest_failure: Mutex<Option<(u16, u32)>>,
    /// The `Retry-After` (seconds) sent with a refused REST request.
    pub rest_retry_after: std::sync::atomic::AtomicU64,
    /// The next this many subscription changes are applied but never acknowledged.
    pub swallow_acks: AtomicUsize,
}

fn take(slot: &Mutex<Option<(u16, u32)>>) -> Option<u16> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    let (code, left) = (*slot)?;
    *slot = (left > 1).then_some((code, left - 1));
    Some(code)
}

impl FeedFaults {
    pub fn data_blocked(&self) -> bool {
        self.silent.load(Ordering::Relaxed) || self.frozen.load(Ordering::Relaxed)
    }

    /// Whether the simulator generates no data on this stream now.
    pub fn generation_paused(&self) -> bool {
        self.data_blocked() || self.paused.load(Ordering::Relaxed)
    }

    pub fn frozen(&self) -> bool {
        self.frozen.load(Ordering::Relaxed)
    }

    pub fn fail_auth(&self, code: u16, count: u32) {
        *self.auth_failure.lock().unwrap_or_else(|e| e.into_inner()) =
            (count > 0).then_some((code, count));
    }

    /// The code to refuse this authentication with, if a fault says so (counts it down).
    pub fn take_auth_failure(&self) -> Option<u16> {
        take(&self.auth_failure)
    }

    pub fn fail_handshake(&self, status: u16, count: u32) {
        *self
            .handshake_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = (count > 0).then_some((status, count));
    }

    /// The HTTP status to refuse this upgrade with, if a fault says so (counts it down).
    pub fn take_handshake_failure(&self) -> Option<u16> {
        take(&self.handshake_failure)
    }

    pub fn fail_rest(&self, status: u16, count: u32) {
        *self.rest_failure.lock().unwrap_or_else(|e| e.into_inner()) =
            (count > 0).then_some((status, count));
    }

    /// The HTTP status to refuse this REST request with, if a fault says so (counts it down).
    pub fn take_rest_failure(&self) -> Option<u16> {
        take(&self.rest_failure)
    }

    pub fn set_rejected_symbols(&self, symbols: impl IntoIterator<Item = String>) {
        *self
            .rejected_symbols
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = symbols.into_iter().collect();
    }

    pub fn is_rejected(&self, symbol: &str) -> bool {
        self.rejected_symbols
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(symbol)
    }
}

/// Every stream's faults.
#[derive(Debug, Default)]
pub struct Faults {
    feeds: [FeedFaults; 5],
}

impl Faults {
    pub fn feed(&self, feed: SimFeed) -> &FeedFaults {
        &self.feeds[feed as usize]
    }

    /// The streams a control request names (`None`: all of them).
    pub fn targets(feed: Option<SimFeed>) -> Vec<SimFeed> {
        feed.map_or_else(|| SimFeed::ALL.to_vec(), |f| vec![f])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_run_out() {
        let f = FeedFaults::default();
        f.fail_auth(402, 2);
        assert_eq!(f.take_auth_failure(), Some(402));
        assert_eq!(f.take_auth_failure(), Some(402));
        assert_eq!(f.take_auth_failure(), None);
        f.fail_handshake(429, 1);
        assert_eq!(f.take_handshake_failure(), Some(429));
        assert_eq!(f.take_handshake_failure(), None);
    }
}
