//! The quote cache behind `GET /api/v1/quotes`: the latest emitted price per symbol.
//!
//! Written by each symbol throttle when it emits (at most once per throttle interval), read by the
//! REST handlers on the HTTP worker threads. A plain `RwLock<HashMap>`: writes are rare and short,
//! and reading it never involves an actor, so quote lookups answer in microseconds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::browser::PriceView;
use crate::symbol::Symbol;
use crate::time::Timestamp;

/// One cached price.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedPrice {
    pub price: PriceView,
    /// Options: contracts traded since tickrelay started streaming the symbol.
    pub volume: i64,
    /// When tickrelay received the value (wall clock).
    pub received_at: Timestamp,
}

impl CachedPrice {
    /// The age of the value by exchange time (falls back to receipt time).
    pub fn age_at(&self, now: Timestamp) -> Duration {
        self.price.timestamp.unwrap_or(self.received_at).age_at(now)
    }
}

/// Latest price per symbol, shared between throttles and HTTP handlers.
#[derive(Clone, Default)]
pub struct QuoteBook {
    inner: Arc<RwLock<HashMap<Symbol, CachedPrice>>>,
}

impl QuoteBook {
    pub fn put(&self, symbol: &Symbol, price: &PriceView, volume: i64) {
        let entry = CachedPrice {
            price: price.clone(),
            volume,
            received_at: Timestamp::now(),
        };
        // A poisoned lock only means a panic elsewhere mid-write; the map is still usable.
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.insert(symbol.clone(), entry);
    }

    pub fn get(&self, symbol: &str) -> Option<CachedPrice> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(symbol).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries for which `keep` is false (the registry evicts stale, inactive symbols).
    pub fn retain(&self, mut keep: impl FnMut(&Symbol, &CachedPrice) -> bool) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|s, p| keep(s, p));
    }
}
