//! Upstream: one supervised WebSocket connection per Alpaca feed.
//!
//! - [`feed`] — the [`UpstreamFeed`](feed::UpstreamFeed) actor: connect, authenticate, subscribe,
//!   decode, route events to symbol throttles, reconnect with backoff under `actix::Supervisor`.
//! - [`protocol`] — Alpaca's stream protocol as pure decode/encode functions.
//! - [`backoff`] — the reconnect schedule.
//!
//! This file holds what the rest of the daemon sees of a feed: its identity ([`FeedKind`]), its
//! state ([`FeedStatus`], reported to the registry on every change) and its counters
//! ([`FeedCounters`], shared atomics read by the status endpoints without a message round trip).

pub mod backoff;
pub mod feed;
pub mod protocol;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::symbol::AssetClass;
use crate::time::Timestamp;

/// Which upstream stream a feed actor speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedKind {
    Stocks,
}

impl FeedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Stocks => "stocks",
        }
    }

    /// The feed that carries symbols of `class`, if tickrelay has one for it.
    pub fn for_class(class: AssetClass) -> Option<FeedKind> {
        match class {
            AssetClass::Stock => Some(FeedKind::Stocks),
            AssetClass::Crypto | AssetClass::Option => None,
        }
    }
}

/// The lifecycle state of a feed connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedState {
    /// Waiting out a backoff delay, connecting, authenticating or waiting for the first ack.
    Connecting,
    /// Authenticated and subscribed; data flows.
    Connected,
    /// The connection was lost; a reconnect is scheduled.
    Disconnected,
    /// The upstream refused us in a way retrying soon will not fix (bad credentials, plan limits).
    Failed,
    /// Shut down with the daemon.
    Stopped,
}

impl FeedState {
    /// The `status` value of the browser protocol's `alpaca_status` frame.
    pub fn browser_status(self) -> &'static str {
        match self {
            FeedState::Connecting => "connecting",
            FeedState::Connected => "connected",
            FeedState::Disconnected | FeedState::Stopped => "disconnected",
            FeedState::Failed => "error",
        }
    }
}

/// A feed's state as reported to the registry (and from there to browsers and status endpoints).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeedStatus {
    pub feed: FeedKind,
    pub state: FeedState,
    pub provider: &'static str,
    /// The stream URL (never contains credentials).
    pub url: String,
    /// Reconnects since start-up.
    pub reconnect_attempts: u32,
    /// Failed attempts since the last stable connection.
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Delay before the next connection attempt, while one is pending.
    pub next_retry_ms: Option<u64>,
    pub circuit_state: &'static str,
    /// When the current connection became ready.
    pub connected_since: Option<Timestamp>,
    /// (channel, symbol) pairs the upstream has acknowledged.
    pub subscribed: usize,
    /// (channel, symbol) pairs tickrelay wants.
    pub desired: usize,
}

impl FeedStatus {
    pub fn new(feed: FeedKind, provider: &'static str, url: String) -> Self {
        FeedStatus {
            feed,
            state: FeedState::Connecting,
            provider,
            url,
            reconnect_attempts: 0,
            consecutive_failures: 0,
            last_error: None,
            next_retry_ms: None,
            circuit_state: "closed",
            connected_since: None,
            subscribed: 0,
            desired: 0,
        }
    }

    /// The `details` of an `alpaca_status` frame.
    pub fn browser_details(&self) -> crate::browser::StatusDetails {
        crate::browser::StatusDetails {
            feed: self.feed.as_str().to_owned(),
            provider: self.provider.to_owned(),
            reconnect_attempts: self.reconnect_attempts,
            circuit_state: self.circuit_state,
            last_error: self.last_error.clone(),
            next_retry_ms: self.next_retry_ms,
        }
    }
}

/// Per-feed counters, updated by the feed actor and read by status endpoints.
#[derive(Debug, Default)]
pub struct FeedCounters {
    /// WebSocket data frames received.
    pub frames: AtomicU64,
    /// Messages (array elements) received.
    pub messages: AtomicU64,
    /// Market events forwarded to throttles.
    pub events_routed: AtomicU64,
    /// Market events for symbols nobody wants (just unsubscribed, or a wildcard).
    pub events_unrouted: AtomicU64,
    /// Market events dropped because a throttle's mailbox was full.
    pub events_dropped: AtomicU64,
    /// Frames or elements that could not be decoded (skipped).
    pub malformed: AtomicU64,
    /// Wall-clock time of the last message, in milliseconds since the epoch (0 = never).
    pub last_message_unix_ms: AtomicU64,
}

impl FeedCounters {
    pub fn snapshot(&self) -> FeedCountersSnapshot {
        let last = self.last_message_unix_ms.load(Ordering::Relaxed);
        FeedCountersSnapshot {
            frames: self.frames.load(Ordering::Relaxed),
            messages_received: self.messages.load(Ordering::Relaxed),
            events_routed: self.events_routed.load(Ordering::Relaxed),
            events_unrouted: self.events_unrouted.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            last_message_time: (last > 0).then(|| {
                Timestamp::new((last / 1000) as i64, ((last % 1000) * 1_000_000) as u32)
                    .unwrap_or_default()
            }),
        }
    }
}

/// A copy of [`FeedCounters`] at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct FeedCountersSnapshot {
    pub frames: u64,
    pub messages_received: u64,
    pub events_routed: u64,
    pub events_unrouted: u64,
    pub events_dropped: u64,
    pub malformed: u64,
    pub last_message_time: Option<Timestamp>,
}
