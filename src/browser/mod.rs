//! Browsers on `GET /ws`: the browser protocol and the session actor that speaks it.
//!
//! - [`protocol`] — client messages in, frames out: pure functions and types (re-exported here,
//!   so `browser::price_update` reads as what it is).
//! - [`session`] — [`ClientSession`](session::ClientSession), one actor per browser, built on
//!   the shared [peer core](crate::downstream::peer) like the SDK sessions.
//!
//! docs/browser-protocol.md lists the frames; the protocol module documents each one.

pub mod protocol;
pub mod session;

pub use self::protocol::*;
