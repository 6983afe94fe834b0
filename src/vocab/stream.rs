//! What a market-data stream is: its kind ([`FeedKind`]), its channels ([`Channel`]) and its
//! encoding ([`Encoding`]) — the words the upstream feeds, the SDK endpoint, the hubs, the
//! registry, the settings and the scale-out links all share. A leaf.

use serde::Serialize;

use crate::symbol::AssetClass;

/// Which market-data stream a feed actor speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedKind {
    Stocks,
    Crypto,
    Options,
    News,
}

impl FeedKind {
    pub const ALL: [FeedKind; 4] = [
        FeedKind::Stocks,
        FeedKind::Crypto,
        FeedKind::Options,
        FeedKind::News,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Stocks => "stocks",
            FeedKind::Crypto => "crypto",
            FeedKind::Options => "options",
            FeedKind::News => "news",
        }
    }

    /// The feed that carries market data for symbols of `class`.
    pub fn for_class(class: AssetClass) -> FeedKind {
        match class {
            AssetClass::Stock => FeedKind::Stocks,
            AssetClass::Crypto => FeedKind::Crypto,
            AssetClass::Option => FeedKind::Options,
        }
    }

    /// The channels the stream offers.
    pub fn channels(self) -> &'static [Channel] {
        match self {
            FeedKind::Stocks => Channel::STOCKS,
            FeedKind::Crypto => Channel::CRYPTO,
            FeedKind::Options => Channel::OPTIONS,
            FeedKind::News => Channel::NEWS,
        }
    }
}

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
