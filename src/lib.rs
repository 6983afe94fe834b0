//! tickrelay — one Alpaca market-data connection per feed, shared with many screens and programs.
//!
//! # Layout
//!
//! ```text
//!   Alpaca (or the built-in simulator)
//!        │  WebSocket, Alpaca stream protocol
//!        ▼
//!   upstream::feed::UpstreamFeed ── one per feed, under actix::Supervisor (backoff + jitter)
//!        │  MarketEventReceived (try_send, per symbol)        ▲ SetSubscriptions (desired set + routes)
//!        ▼                                                    │
//!   throttle::SymbolThrottle ── one per symbol in use          registry::Registry ── one
//!        │  Deliver (frame serialized once, shared bytes)    ▲  ▲ Connect / Subscribe / Unsubscribe
//!        ▼                                                    │  │ Pin / Unpin, FeedStateChanged
//!   session::ClientSession ── one per browser on /ws ─────────┘  └── http (REST, probes, dashboard)
//! ```
//!
//! - [`upstream`] — feed actor, Alpaca wire protocol, reconnect schedule.
//! - [`registry`] — who wants what: ref-counted interest, pins, desired sets, feed status.
//! - [`throttle`] — per-symbol latest-value conflation and snapshots.
//! - [`session`] — the browser protocol actor with its slow-client policy.
//! - [`http`] — routes; [`startup`] builds the whole thing; [`settings`] reads the configuration.
//! - [`accounts`] — one trading stream per account (`trade_updates`), REST loads, the account store.
//! - [`simulator`] — an Alpaca-protocol market simulator (the default provider, and the tests' upstream).
//! - Plain building blocks: [`browser`] (client protocol), [`market`] (events), [`symbol`],
//!   [`time`], [`quote_book`], [`rng`].
//!
//! Quote traffic never waits: feed → throttle and throttle → session use `try_send` into bounded
//! mailboxes; control messages may await replies.

pub mod accounts;
pub mod browser;
pub mod http;
pub mod market;
pub mod quote_book;
pub mod registry;
pub mod rng;
pub mod session;
pub mod settings;
pub mod simulator;
pub mod startup;
pub mod symbol;
pub mod throttle;
pub mod time;
pub mod upstream;
