//! Downstream: everything that faces a client socket, for every kind of peer.
//!
//! - [`socket`] — the one socket layer: the upgrade's answer, the connection split into the
//!   incremental frame reader that enforces the inbound limits (declared frame length,
//!   fragmented-message total, a deadline for a started message) and the writer task, and the
//!   encoding of server frames. Fragment reassembly is [`crate::vocab::Reassembler`], shared with
//!   the upstream feeds' reader.
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
