//! Alpaca's market-data stream protocol, as pure decode/encode functions.
//!
//! A server frame is an array of maps, each with a type tag `T` (`success`, `error`,
//! `subscription`, `q`, `t`, `b`, `o`, `n`, …), sent as JSON text or — when the client asks with
//! `Content-Type: application/msgpack`, and always on the options streams — as msgpack binary with
//! timestamps in the msgpack Timestamp extension.
//!
//! - [`decode`] — server frames (JSON and msgpack, one decoder) into [`Inbound`] messages.
//! - [`msgpack`] — walking raw msgpack, to salvage the good elements of a damaged frame.
//! - [`raw`] — market messages as Alpaca sent them, in both encodings, for SDK programs.
//! - [`encode`] — client messages (auth, subscribe) in the stream's encoding.
//! - [`subscriptions`] — [`SubscriptionSet`], the (channel, symbol) pairs a stream holds.
//!
//! This file holds the shared vocabulary: [`Encoding`], [`Channel`] and Alpaca's error names.

pub mod decode;
pub mod encode;
pub mod msgpack;
pub mod raw;
pub mod subscriptions;

pub use self::decode::{decode, decode_json, decode_msgpack, DecodeError, Inbound, InfoKind};
pub use self::encode::{auth_message, encode_client, subscription_message, ClientFrame};
pub use self::msgpack::{msgpack_array_elements, msgpack_value_len};
pub use self::subscriptions::SubscriptionSet;

/// How a stream encodes its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JSON text frames (Alpaca's default).
    Json,
    /// msgpack binary frames, requested with `Content-Type: application/msgpack`.
    Msgpack,
}

impl Encoding {
    /// The `Content-Type` header that asks the server for this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Msgpack => "application/msgpack",
        }
    }
}

/// A subscribable upstream channel (the keys of Alpaca's subscribe message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Trades,
    Quotes,
    Bars,
    DailyBars,
    UpdatedBars,
    Statuses,
    Lulds,
    Imbalances,
    Orderbooks,
    News,
}

impl Channel {
    /// How many channels there are (for per-channel tables indexed by `channel as usize`).
    pub const COUNT: usize = 10;
    /// The channels of the stocks streams.
    pub const STOCKS: &'static [Channel] = &[
        Channel::Trades,
        Channel::Quotes,
        Channel::Bars,
        Channel::DailyBars,
        Channel::UpdatedBars,
        Channel::Statuses,
        Channel::Lulds,
        Channel::Imbalances,
    ];
    /// The channels of the crypto streams.
    pub const CRYPTO: &'static [Channel] = &[
        Channel::Trades,
        Channel::Quotes,
        Channel::Bars,
        Channel::UpdatedBars,
        Channel::DailyBars,
        Channel::Orderbooks,
    ];
    /// The channels of the options streams.
    pub const OPTIONS: &'static [Channel] = &[Channel::Trades, Channel::Quotes];
    /// The channel of the news stream.
    pub const NEWS: &'static [Channel] = &[Channel::News];
    const ALL: &'static [Channel] = &[
        Channel::Trades,
        Channel::Quotes,
        Channel::Bars,
        Channel::DailyBars,
        Channel::UpdatedBars,
        Channel::Statuses,
        Channel::Lulds,
        Channel::Imbalances,
        Channel::Orderbooks,
        Channel::News,
    ];

    /// The key in subscribe messages and acks.
    pub fn key(self) -> &'static str {
        match self {
            Channel::Trades => "trades",
            Channel::Quotes => "quotes",
            Channel::Bars => "bars",
            Channel::DailyBars => "dailyBars",
            Channel::UpdatedBars => "updatedBars",
            Channel::Statuses => "statuses",
            Channel::Lulds => "lulds",
            Channel::Imbalances => "imbalances",
            Channel::Orderbooks => "orderbooks",
            Channel::News => "news",
        }
    }

    pub fn from_key(key: &str) -> Option<Channel> {
        Channel::ALL.iter().copied().find(|c| c.key() == key)
    }
}

/// The name Alpaca gives an error code, for logs and status (`406` → `connection limit exceeded`).
pub fn error_name(code: u16) -> &'static str {
    match code {
        400 => "invalid syntax",
        401 => "not authenticated",
        402 => "auth failed",
        403 => "already authenticated",
        404 => "auth timeout",
        405 => "symbol limit exceeded",
        406 => "connection limit exceeded",
        407 => "slow client",
        408 => "v2 not enabled",
        409 => "insufficient subscription",
        410 => "invalid subscribe action for this feed",
        411 => "insufficient scope",
        412 => "option messages are only available in MsgPack format",
        413 => "star subscription is not allowed for option quotes",
        // tickrelay's own: Alpaca has no inbound rate limit to name.
        429 => "rate limit exceeded",
        500 => "internal error",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests;
