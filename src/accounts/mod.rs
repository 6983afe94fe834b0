//! Trading accounts: one supervised trading stream per configured account, and an in-memory copy
//! of each account's state for the REST endpoints.
//!
//! - [`stream`] — the `TradingStream` actor: `trade_updates` over Alpaca's trading stream, REST loads
//!   of the account, positions and open orders, refreshes after fills, position pins.
//! - [`frames`] — the trading stream's frames read into events (plain functions).
//! - [`rest`] — a rate-limited client for Alpaca's trading REST API.
//!
//! The [`AccountStore`] is written by the trading streams and read by the HTTP handlers without an
//! actor round trip, so `GET /api/v1/accounts/…` answers from memory in microseconds.

pub mod frames;
pub mod rest;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::Value;

use crate::time::Timestamp;

/// What tickrelay knows of one account.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AccountState {
    pub id: String,
    pub paper: bool,
    /// The trading stream is authenticated and listening.
    pub connected: bool,
    pub reconnect_attempts: u32,
    pub last_error: Option<String>,
    /// The account, positions and orders have been loaded at least once.
    pub has_data: bool,
    /// Alpaca's account object.
    pub account: Option<Value>,
    /// Alpaca's position objects by symbol.
    pub positions: BTreeMap<String, Value>,
    /// Open orders (Alpaca's order objects) by order id.
    pub orders: BTreeMap<String, Value>,
    /// When the REST copy was last refreshed.
    pub refreshed_at: Option<Timestamp>,
    /// When the last trade update arrived.
    pub last_event_at: Option<Timestamp>,
}

impl AccountState {
    /// The account, positions, orders and a summary, as `GET …/dashboard` returns them.
    pub fn dashboard(&self) -> Value {
        let field = |k: &str| {
            self.account
                .as_ref()
                .and_then(|a| a.get(k))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let unrealized: f64 = self
            .positions
            .values()
            .filter_map(|p| p.get("unrealized_pl")?.as_str()?.parse::<f64>().ok())
            .sum();
        serde_json::json!({
            "id": self.id,
            "account": self.account,
            "positions": self.positions.values().collect::<Vec<_>>(),
            "orders": self.orders.values().collect::<Vec<_>>(),
            "summary": {
                "equity": field("equity"),
                "cash": field("cash"),
                "buying_power": field("buying_power"),
                "positions": self.positions.len(),
                "open_orders": self.orders.len(),
                "unrealized_pl": format!("{unrealized:.2}"),
                "connected": self.connected,
                "refreshed_at": self.refreshed_at,
            },
        })
    }
}

/// Every account's state, shared between trading streams and HTTP handlers.
#[derive(Clone, Default)]
pub struct AccountStore {
    inner: Arc<RwLock<BTreeMap<String, AccountState>>>,
}

impl AccountStore {
    /// Registers an account before its stream starts.
    pub fn add(&self, id: &str, paper: bool) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.insert(
            id.to_owned(),
            AccountState {
                id: id.to_owned(),
                paper,
                ..Default::default()
            },
        );
    }

    /// Changes one account's state in place.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut AccountState)) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = map.get_mut(id) {
            change(state);
        }
    }

    pub fn get(&self, id: &str) -> Option<AccountState> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn all(&self) -> Vec<AccountState> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
