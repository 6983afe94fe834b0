//! The words every part of the pipeline shares, in leaf modules that import nothing above them:
//! upstream, throttle, downstream, the protocols and the settings all use these, and none of them
//! has to import another to name a feed, a channel or an encoding.
//!
//! - [`stream`] — [`FeedKind`], [`Channel`], [`Encoding`]: what a market-data stream is.
//! - [`subscriptions`] — [`SubscriptionSet`], the (channel, symbol) pairs a stream holds.
//! - [`channels`] — [`ClientChannel`], [`ChannelMask`], [`PriceKind`]: the browser protocol's
//!   channel words, which the registry, throttles and hubs route by.
//! - [`backoff`] — [`Backoff`], the reconnect schedule every upstream link follows.
//! - [`fragments`] — [`Reassembler`], bounded reassembly of fragmented WebSocket messages.

pub mod backoff;
pub mod channels;
pub mod fragments;
pub mod stream;
pub mod subscriptions;

pub use self::backoff::Backoff;
pub use self::channels::{ChannelMask, ClientChannel, PriceKind};
pub use self::fragments::{FragmentError, Reassembler};
pub use self::stream::{Channel, Encoding, FeedKind};
pub use self::subscriptions::SubscriptionSet;
