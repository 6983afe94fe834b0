//! tickrelay — one Alpaca market-data connection per feed, shared with many screens and programs.
//!
//! # Layout
//!
//! ```text
//!   Alpaca (or the built-in simulator)
//!        │  WebSocket, Alpaca stream protocol
//!        ▼
//!   upstream::feed::UpstreamFeed ── one per feed, each on its own thread, under actix::Supervisor
//!        │  Inlet (newest value per symbol; one Drain wake-up)   ▲ SetSubscriptions (desired set + routes)
//!        ▼                                                        │
//!   throttle::SymbolThrottle ── one per symbol in use              registry::Registry ── one
//!        │  Publish (serialized once; one per worker)            ▲  ▲ Connect / Subscribe / Unsubscribe
//!        ▼                                                        │  │ Pin / Unpin, FeedStateChanged
//!   downstream::hub::Hub ── one per HTTP worker thread             │  └── http (REST, probes, dashboard)
//!        │  the session's outbox (same thread, no message)        │ SetHub (throttle ← registry)
//!        ▼                                                        │
//!   browser::session::ClientSession ── one per browser on /ws ────┘ SessionCommand (registry → session)
//!        │  outbox: newest frame per symbol, bounded events, one socket write per poll
//!        ▼
//!   the browser
//!
//!   UpstreamFeed ── upstream::tap (every market message as sent, only while an SDK program listens)
//!        │  RawBatch (one per worker; each message in each encoding wanted, encoded once)
//!        ▼
//!   downstream::hub::Hub ── filters per program (RawFilter), one frame per program and batch
//!        ▼
//!   sdk::session::SdkSession ── one per SDK program on Alpaca's paths (/v2/iex, …) ── SetRawInterest ──► Registry
//!   sdk::trading::SdkTradingSession ── one per program on /stream ◄── TradeUpdate (as sent) ── Registry
//! ```
//!
//! - [`vocab`] — the words every part shares, in leaf modules: [`FeedKind`](vocab::FeedKind),
//!   [`Channel`](vocab::Channel), [`Encoding`](vocab::Encoding), [`SubscriptionSet`](vocab::SubscriptionSet),
//!   the browser channels, [`Backoff`](vocab::Backoff), [`Reassembler`](vocab::Reassembler).
//! - [`upstream`] — feed actor, Alpaca wire protocol, retry policy, the tap for SDK programs.
//! - [`registry`] — who wants what: ref-counted interest, pins, desired sets, feed status.
//! - [`throttle`] — per-symbol latest-value conflation (the exact window) and the feed's inlet.
//! - [`downstream`] — everything facing a client socket, for every kind of peer: the socket layer
//!   (upgrade split, the reader that enforces the inbound limits, the writer), the peer core each
//!   session embeds, the outbox under one byte budget, the per-worker hub and the delivery
//!   contract.
//! - [`browser`] — the browser protocol (a leaf of pure functions the throttles, registry and
//!   accounts serialize with) and its session actor.
//! - [`sdk`] — the Alpaca-compatible endpoint: Alpaca SDK programs on Alpaca's own paths, every
//!   message unconflated (fed by the feeds' [`tap`](upstream::tap)).
//! - [`http`] — routes; [`startup`] builds the whole thing; [`settings`] reads the configuration.
//! - [`accounts`] — one trading stream per account (`trade_updates`), REST loads, the account store.
//! - [`replay`] — a recording played back on Alpaca's protocol (`provider = "replay"`).
//! - [`simulator`] — an Alpaca-protocol market simulator (the default provider, and the tests' upstream).
//! - Plain building blocks: [`market`] (events), [`symbol`],
//!   [`credentials`], [`auth`] (clients, scopes: who may do what),
//!   [`wire`] (ordered JSON/msgpack messages), [`time`], [`quote_book`], [`rng`].
//! - [`scaleout`] — Redis: the price sink, edges, the relay to them and the primaries' lease.
//! - [`systemd`] — `Type=notify`: ready, stopping and the watchdog.
//! - [`metrics`] — the pipeline-latency histogram and the Prometheus exposition (`GET /metrics`).
//! - [`fuzz`] — the decoders of untrusted input as the fuzz targets drive them.
//!
//! Quote traffic never waits: the feed leaves events in a per-symbol inlet (bounded, newest wins),
//! throttles `try_send` to hubs, hubs write into outboxes that conflate; control messages may await
//! replies.

pub mod accounts;
pub mod auth;
pub mod browser;
pub mod credentials;
pub mod downstream;
pub mod fuzz;
pub mod http;
pub mod market;
pub mod metrics;
pub mod quote_book;
pub mod recorder;
pub mod registry;
pub mod replay;
pub mod rng;
pub mod scaleout;
pub mod sdk;
pub mod settings;
pub mod simulator;
pub mod startup;
pub mod symbol;
pub mod systemd;
pub mod throttle;
pub mod time;
pub mod upstream;
pub mod vocab;
pub mod wire;
