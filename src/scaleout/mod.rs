//! Redis: the shared price cache and price events that other services read instead of holding an
//! Alpaca connection of their own.
//!
//! - [`sink`] — every conflated price update into Redis (`SET price:{SYMBOL}`, `PUBLISH
//!   price.updated.{SYMBOL}`), off the hot path, bounded while Redis is slow or away.

pub mod sink;
