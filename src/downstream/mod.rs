//! Downstream: everything that faces a client socket, for every kind of peer.
//!
//! - [`socket`] — the one socket layer: the upgrade's connection split into a reader and a
//!   writer, the incremental frame reader that enforces the inbound limits (declared frame
//!   length, fragmented-message total, a deadline for a started frame), and the writer task.
//! - [`peer`] — the peer core every session embeds: outbox, stats, reassembly, rate limit,
//!   invalid-message strikes, ping/pong/close and the last-heard clock. The browser and SDK
//!   sessions keep only their protocol.
//! - [`outbox`] — a session's output queue under one byte budget, and its frame encoding.
//! - [`hub`] — per-worker fan-out, heartbeat and slow-client clock.
//! - [`delivery`] — the contract between throttles, hubs, the registry and sessions (a leaf).
//!
//! Nothing here knows a protocol: the browser protocol lives in [`crate::browser`], Alpaca's in
//! [`crate::sdk`]; both build on this module, never the other way round.

pub mod delivery;
pub mod hub;
pub mod outbox;
pub mod peer;
pub mod socket;
