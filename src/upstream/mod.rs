//! Upstream: one supervised WebSocket connection per Alpaca feed.
//!
//! - [`feed`] — the [`UpstreamFeed`](feed::UpstreamFeed) actor: connect, authenticate, subscribe,
//!   decode, route events to symbol throttles, reconnect with backoff under `actix::Supervisor`.
//! - [`protocol`] — Alpaca's stream protocol as pure decode/encode functions (JSON and msgpack).
//! - [`policy`] — when to try again: backoff, hold-offs per Alpaca error class, circuit breaker.
//! - [`connection`] — opening a WebSocket, reassembling fragments, the dead-peer timer.
//! - [`gate`] — whether this instance may connect at all (the lease of several primaries).
//! - [`tap`] — every market message as Alpaca sent it, for the SDK programs on the hubs.
//!
//! This file holds what the rest of the daemon sees of a feed: its identity ([`FeedId`]), its
//! state ([`FeedStatus`], reported to the registry on every change) and its counters
//! ([`FeedCounters`], shared atomics read by the status endpoints without a message round trip).

pub mod connection;
pub mod feed;
pub mod gate;
pub mod policy;
pub mod protocol;
pub mod tap;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::Message;
use serde::{Serialize, Serializer};

use self::policy::CircuitState;

use crate::market::NewsArticle;
use crate::symbol::Symbol;
use crate::time::Timestamp;
use crate::vocab::FeedKind;

/// A feed's status changed (sent by feeds and trading streams to the registry).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FeedStateChanged {
    pub status: FeedStatus,
}

/// A news article arrived.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NewsReceived {
    pub article: NewsArticle,
}

/// The upstream refused these symbols (400 invalid, 405 over the plan's limit). The feed only
/// reports it; the registry decides what the desired set becomes and sends it back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SymbolsRejected {
    pub feed: FeedKind,
    pub symbols: Vec<Symbol>,
    pub code: u16,
    pub reason: String,
}

/// An upstream connection: a market-data feed or an account's trading stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeedId {
    Data(FeedKind),
    Trading(Arc<str>),
}

impl FeedId {
    /// `stocks`, `crypto`, … or `trading:<account>`.
    pub fn name(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for FeedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedId::Data(kind) => f.write_str(kind.as_str()),
            FeedId::Trading(account) => write!(f, "trading:{account}"),
        }
    }
}

impl Serialize for FeedId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
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
    /// Another primary holds the lease: no connection until this one gets it.
    Standby,
}

impl FeedState {
    /// The `status` value of the browser protocol's `alpaca_status` frame.
    pub fn browser_status(self) -> &'static str {
        match self {
            FeedState::Connecting => "connecting",
            FeedState::Connected => "connected",
            FeedState::Disconnected | FeedState::Stopped | FeedState::Standby => "disconnected",
            FeedState::Failed => "error",
        }
    }
}

/// A feed's state as reported to the registry (and from there to browsers and status endpoints).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeedStatus {
    pub feed: FeedId,
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
    pub circuit_state: CircuitState,
    /// When the current connection became ready.
    pub connected_since: Option<Timestamp>,
    /// (channel, symbol) pairs the upstream has acknowledged.
    pub subscribed: usize,
    /// (channel, symbol) pairs tickrelay wants.
    pub desired: usize,
    /// The latest loss of a connection that had streamed: data may be missing from `start` to
    /// `end` (`None` while it lasts).
    pub last_outage: Option<Outage>,
}

/// A gap in a feed's data: from the loss of a connection that had streamed to the next one
/// streaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Outage {
    pub start: Timestamp,
    pub end: Option<Timestamp>,
}

impl FeedStatus {
    /// The feed's data has a gap from now on ([`Outage`]).
    pub fn outage_began(&mut self) {
        self.last_outage = Some(Outage {
            start: Timestamp::now(),
            end: None,
        });
    }

    /// The gap is over: the feed streams again.
    pub fn outage_ended(&mut self) {
        if let Some(outage) = &mut self.last_outage {
            outage.end.get_or_insert_with(Timestamp::now);
        }
    }

    pub fn new(feed: FeedId, provider: &'static str, url: String) -> Self {
        FeedStatus {
            feed,
            state: FeedState::Connecting,
            provider,
            url,
            reconnect_attempts: 0,
            consecutive_failures: 0,
            last_error: None,
            next_retry_ms: None,
            circuit_state: CircuitState::Closed,
            connected_since: None,
            subscribed: 0,
            desired: 0,
            last_outage: None,
        }
    }

    /// The `details` of an `alpaca_status` frame.
    pub fn browser_details(&self) -> crate::browser::StatusDetails {
        crate::browser::StatusDetails {
            feed: self.feed.name(),
            provider: self.provider.to_owned(),
            reconnect_attempts: self.reconnect_attempts,
            circuit_state: self.circuit_state.as_str(),
            last_error: self.last_error.clone(),
            next_retry_ms: self.next_retry_ms,
            last_outage: self.last_outage,
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
    /// Market events that replaced an older undrained value of their symbol (the throttle was
    /// busy): conflated, not queued.
    pub events_conflated: AtomicU64,
    /// Market events that could not be handed on (news when the registry's mailbox was full).
    pub events_dropped: AtomicU64,
    /// Frames or elements that could not be decoded (skipped).
    pub malformed: AtomicU64,
    /// On an edge: messages read from Redis and refused (a type or symbol not its channel's, an
    /// account event naming another account or symbol), never delivered.
    pub refused: AtomicU64,
    /// Wall-clock time of the last message, in milliseconds since the epoch (0 = never).
    pub last_message_unix_ms: AtomicU64,
    /// Connections that became ready (authenticated and subscribed, or loaded).
    pub connects: AtomicU64,
    /// Connections lost or refused, by [`policy::Failure`] class (`Failure::ALL` order).
    pub failures: [AtomicU64; 4],
    /// Messages received by [`MessageType`].
    pub by_type: [AtomicU64; MessageType::ALL.len()],
}

/// What an upstream message was, for the per-type counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Quote,
    Trade,
    Bar,
    Orderbook,
    Correction,
    News,
    /// Control messages: welcome, auth, acks, errors, statuses, and anything unknown.
    Control,
}

impl MessageType {
    pub const ALL: [MessageType; 7] = [
        MessageType::Quote,
        MessageType::Trade,
        MessageType::Bar,
        MessageType::Orderbook,
        MessageType::Correction,
        MessageType::News,
        MessageType::Control,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Quote => "quote",
            MessageType::Trade => "trade",
            MessageType::Bar => "bar",
            MessageType::Orderbook => "orderbook",
            MessageType::Correction => "correction",
            MessageType::News => "news",
            MessageType::Control => "control",
        }
    }

    /// The type of a decoded upstream message.
    pub fn of_inbound(msg: &protocol::Inbound<'_>) -> MessageType {
        match msg {
            protocol::Inbound::Market { event, .. } => MessageType::of(event),
            protocol::Inbound::News(_) => MessageType::News,
            _ => MessageType::Control,
        }
    }

    /// The type of a market event.
    pub fn of(event: &crate::market::MarketEvent) -> MessageType {
        use crate::market::MarketEvent;
        match event {
            MarketEvent::Quote(_) => MessageType::Quote,
            MarketEvent::Trade(_) => MessageType::Trade,
            MarketEvent::Bar(_) => MessageType::Bar,
            MarketEvent::Book(_) => MessageType::Orderbook,
            MarketEvent::Fix(_) => MessageType::Correction,
            MarketEvent::Status(_) => MessageType::Control,
        }
    }
}

impl FeedCounters {
    /// A frame arrived now.
    pub fn frame_received(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let unix_ms = Timestamp::now().unix_nanos() / 1_000_000;
        self.last_message_unix_ms
            .store(unix_ms as u64, Ordering::Relaxed);
    }

    /// A message of `kind` arrived. The feed's own thread is the only writer, so a plain load
    /// and store does (no locked instruction per message on the hot path).
    pub fn count(&self, kind: MessageType) {
        let c = &self.by_type[kind as usize];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> FeedCountersSnapshot {
        let last = self.last_message_unix_ms.load(Ordering::Relaxed);
        FeedCountersSnapshot {
            frames: self.frames.load(Ordering::Relaxed),
            messages_received: self.messages.load(Ordering::Relaxed),
            events_routed: self.events_routed.load(Ordering::Relaxed),
            events_unrouted: self.events_unrouted.load(Ordering::Relaxed),
            events_conflated: self.events_conflated.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            disconnects: policy::Failure::ALL
                .iter()
                .map(|f| {
                    (
                        f.as_str(),
                        self.failures[*f as usize].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            messages_by_type: MessageType::ALL
                .iter()
                .map(|t| {
                    (
                        t.as_str(),
                        self.by_type[*t as usize].load(Ordering::Relaxed),
                    )
                })
                .collect(),
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
    pub events_conflated: u64,
    pub events_dropped: u64,
    pub malformed: u64,
    /// On an edge: messages from Redis refused by the checks.
    pub refused: u64,
    /// Connections that became ready.
    pub connects: u64,
    /// Connections lost or refused, by reason.
    pub disconnects: std::collections::BTreeMap<&'static str, u64>,
    pub messages_by_type: std::collections::BTreeMap<&'static str, u64>,
    pub last_message_time: Option<Timestamp>,
}
