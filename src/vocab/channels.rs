//! The browser protocol's channel words, shared by every part that routes browser frames: the
//! registry (who wants which channel), the throttles and hubs (which frames go to whom), the relay.
//! A leaf: it names nothing else in the crate.

use serde::Serialize;

/// What a browser can subscribe to for a symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientChannel {
    /// Throttled price updates (`spot_price_update`, `option_price_update`).
    Quotes,
    /// Trades (`trade`), conflated to the latest trade per interval.
    Trades,
    /// Bars (`bar`), every one (stocks and crypto).
    Bars,
    /// Crypto order books (`orderbook`), conflated to the latest book per interval.
    Orderbooks,
    /// News articles (`news`) for a symbol, or every article with `*`.
    News,
    /// Account events (`position_update`, `order_update`); takes no symbols.
    Positions,
    /// Trading statuses and LULD bands (`status`), every one (stocks).
    Statuses,
}

impl ClientChannel {
    pub const ALL: [ClientChannel; 7] = [
        ClientChannel::Quotes,
        ClientChannel::Trades,
        ClientChannel::Bars,
        ClientChannel::Orderbooks,
        ClientChannel::News,
        ClientChannel::Positions,
        ClientChannel::Statuses,
    ];

    /// The channel a client names (`prices` is an alias of `quotes`).
    pub fn parse(name: &str) -> Option<ClientChannel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "quotes" | "prices" => Some(ClientChannel::Quotes),
            "trades" => Some(ClientChannel::Trades),
            "bars" => Some(ClientChannel::Bars),
            "orderbooks" => Some(ClientChannel::Orderbooks),
            "news" => Some(ClientChannel::News),
            "positions" => Some(ClientChannel::Positions),
            "statuses" | "status" => Some(ClientChannel::Statuses),
            _ => None,
        }
    }

    /// Channels served per symbol by the symbol throttles.
    pub fn is_market(self) -> bool {
        matches!(
            self,
            ClientChannel::Quotes
                | ClientChannel::Trades
                | ClientChannel::Bars
                | ClientChannel::Orderbooks
                | ClientChannel::Statuses
        )
    }

    /// This channel's bit in a [`ChannelMask`].
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A small set of [`ClientChannel`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChannelMask(u8);

impl ChannelMask {
    pub const EMPTY: ChannelMask = ChannelMask(0);
    pub const QUOTES: ChannelMask = ChannelMask(ClientChannel::Quotes.bit());
    /// The channels served by symbol throttles.
    pub const MARKET: ChannelMask = ChannelMask(
        ClientChannel::Quotes.bit()
            | ClientChannel::Trades.bit()
            | ClientChannel::Bars.bit()
            | ClientChannel::Orderbooks.bit()
            | ClientChannel::Statuses.bit(),
    );
    pub const NEWS: ChannelMask = ChannelMask(ClientChannel::News.bit());
    pub const ALL: ChannelMask = ChannelMask(0x7f);

    pub fn intersect(self, other: ChannelMask) -> ChannelMask {
        ChannelMask(self.0 & other.0)
    }

    pub fn of(channels: &[ClientChannel]) -> Self {
        ChannelMask(channels.iter().fold(0, |m, c| m | c.bit()))
    }
    pub fn contains(self, c: ClientChannel) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn union(self, other: ChannelMask) -> ChannelMask {
        ChannelMask(self.0 | other.0)
    }
    pub fn minus(self, other: ChannelMask) -> ChannelMask {
        ChannelMask(self.0 & !other.0)
    }
    pub fn channels(self) -> impl Iterator<Item = ClientChannel> {
        ClientChannel::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

/// Spot (stocks, crypto) or option prices: they differ in message names and the volume field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PriceKind {
    Spot,
    Option,
}

impl PriceKind {
    /// The frame type of one update.
    pub fn update_type(self) -> &'static str {
        match self {
            PriceKind::Spot => "spot_price_update",
            PriceKind::Option => "option_price_update",
        }
    }

    /// The frame type of a batch.
    pub fn batch_type(self) -> &'static str {
        match self {
            PriceKind::Spot => "spot_price_batch",
            PriceKind::Option => "option_price_batch",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_mask_set_operations() {
        let m = ChannelMask::of(&[ClientChannel::Quotes, ClientChannel::Bars]);
        assert!(m.contains(ClientChannel::Bars) && !m.contains(ClientChannel::Trades));
        assert_eq!(
            m.minus(ChannelMask::QUOTES).channels().collect::<Vec<_>>(),
            [ClientChannel::Bars]
        );
        assert!(ChannelMask::EMPTY.is_empty());
    }
}
