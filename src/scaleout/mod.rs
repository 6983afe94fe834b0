//! Redis: the shared price cache and price events other services read, and scale-out — several
//! instances sharing the one Alpaca connection per feed.
//!
//! - [`sink`] — every conflated price update into Redis (`SET price:{SYMBOL}`, `PUBLISH
//!   price.updated.{SYMBOL}`), off the hot path, bounded while Redis is slow or away.
//! - [`lease`] — which of several primaries holds the upstream connections (`SET NX PX`, renewed).
//! - [`relay`] — on a primary: the market messages, news and account events the edges want,
//!   published to Redis.
//! - [`target`] — where Redis is and how to sign in (URL, ACL user, password, TLS files).
//! - [`edge`] — on an edge (`provider = "redis"`): one link per feed that subscribes to what its
//!   clients want and feeds it into the same pipeline an Alpaca connection would.
//!
//! This file holds the names both sides use and the edges' registration format. Keys carry the
//! `{tickrelay}` hash tag so that a multi-key command never spans Redis Cluster slots.

pub mod edge;
pub mod lease;
pub mod relay;
pub mod sink;
pub mod target;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::symbol::Symbol;
use crate::vocab::{Channel, SubscriptionSet};

use crate::vocab::FeedKind;

/// The set of registration keys of live edge feeds.
pub const EDGES: &str = "{tickrelay}:edges";
/// Edges announce a changed registration here (the message is the key), so primaries act at once.
pub const EDGES_CHANGED: &str = "tickrelay.edges";
/// The primaries' lease; its value is the holder's instance name.
pub const LEASE: &str = "{tickrelay}:lease";
/// How many times any primary has won the lease.
pub const LEASE_WINS: &str = "{tickrelay}:lease:wins";
/// An edge renews its registrations this often ...
pub const REGISTER_EVERY: Duration = Duration::from_secs(2);
/// ... and a registration not renewed for this long is gone (the edge died).
pub const REGISTRATION_TTL: Duration = Duration::from_secs(10);
/// A connection or a command that takes longer has failed (Redis stalled).
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// `fut`, or a timed-out error after `limit`: a Redis call that takes longer has failed (Redis
/// stalled), and is reported like any other error.
pub async fn timed<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {limit:?}"),
        )))
    })
}

/// `fut` within [`IO_TIMEOUT`].
pub async fn within<T>(
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    timed(IO_TIMEOUT, fut).await
}

/// `host:port/db` of a `redis://` or `rediss://` URL, without the user and password (for logs
/// and status).
pub fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.to_owned()
}

/// The registration key of one edge feed: what it wants the primary to stream.
pub fn edge_key(instance: &str, feed: FeedKind) -> String {
    format!("{{tickrelay}}:edge:{instance}:{}", feed.as_str())
}

/// The channel that carries one upstream message kind of one symbol (news: one channel).
pub fn market_channel(feed: FeedKind, channel: Channel, symbol: &str) -> String {
    match feed {
        FeedKind::News => "tickrelay.news".to_owned(),
        _ => format!("tickrelay.{}.{}.{symbol}", feed.as_str(), channel.key()),
    }
}

/// The channel on which the primary's relay announces that a feed's upstream connection was lost
/// or is back ([`UpstreamMarker`]), so an edge's SDK programs hear of the gap too.
pub fn upstream_channel(feed: FeedKind) -> String {
    format!("tickrelay.{}.upstream", feed.as_str())
}

/// What [`upstream_channel`] carries: `{"up":false,"error":406}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamMarker {
    pub up: bool,
    pub error: Option<u16>,
}

/// The channel of one account's `position_update` and `order_update` frames.
pub fn account_channel(account: &str) -> String {
    format!("tickrelay.account.{account}")
}

/// A subscription set as a registration value: `{"quotes":["AAPL"],"trades":["AAPL"]}`.
pub fn encode_set(set: &SubscriptionSet) -> String {
    let map: BTreeMap<&str, Vec<&str>> = set
        .iter()
        .map(|(c, symbols)| (c.key(), symbols.iter().map(Symbol::as_str).collect()))
        .collect();
    serde_json::to_string(&map).unwrap_or_default()
}

/// A registration value read back, keeping only what `feed` carries: channels it offers, valid
/// symbols of its class (`*` only for news). Anything else in it is ignored. `None`: not a map.
pub fn decode_set(text: &str, feed: FeedKind) -> Option<SubscriptionSet> {
    let map: BTreeMap<String, Vec<String>> = serde_json::from_str(text).ok()?;
    let mut set = SubscriptionSet::new();
    for (key, symbols) in map {
        let Some(channel) = Channel::from_key(&key).filter(|c| feed.channels().contains(c)) else {
            continue;
        };
        for raw in symbols {
            let symbol = if raw == "*" && feed == FeedKind::News {
                Symbol::wildcard()
            } else {
                match Symbol::parse(&raw) {
                    Ok(s) if feed == FeedKind::News || FeedKind::for_class(s.class()) == feed => s,
                    _ => continue,
                }
            };
            set.insert(channel, symbol);
        }
    }
    Some(set)
}

/// Every (channel, symbol) of `sets`.
pub fn union<'a>(sets: impl IntoIterator<Item = &'a SubscriptionSet>) -> SubscriptionSet {
    let mut out = SubscriptionSet::new();
    for set in sets {
        for (channel, symbols) in set.iter() {
            for s in symbols {
                out.insert(channel, s.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    #[test]
    fn a_registration_round_trips_and_keeps_only_what_the_feed_carries() {
        let mut set = SubscriptionSet::new();
        set.insert(Channel::Quotes, sym("AAPL"));
        set.insert(Channel::Trades, sym("AAPL"));
        let text = encode_set(&set);
        assert_eq!(text, r#"{"quotes":["AAPL"],"trades":["AAPL"]}"#);
        assert_eq!(decode_set(&text, FeedKind::Stocks), Some(set));
        let hostile = r#"{"quotes":["AAPL","BTC/USD","??"],"orderbooks":["AAPL"],"x":["MSFT"]}"#;
        let kept = decode_set(hostile, FeedKind::Stocks).unwrap();
        assert_eq!(kept.len(), 1);
        assert!(kept.contains(Channel::Quotes, "AAPL"));
        assert_eq!(decode_set("[1,2]", FeedKind::Stocks), None);
        let news = decode_set(r#"{"news":["*","TSLA"]}"#, FeedKind::News).unwrap();
        assert!(news.contains(Channel::News, "*") && news.contains(Channel::News, "TSLA"));
        assert!(decode_set(r#"{"quotes":["*"]}"#, FeedKind::Stocks)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(
            market_channel(FeedKind::Crypto, Channel::Quotes, "BTC/USD"),
            "tickrelay.crypto.quotes.BTC/USD"
        );
        assert_eq!(
            market_channel(FeedKind::News, Channel::News, ""),
            "tickrelay.news"
        );
        assert_eq!(
            edge_key("e1", FeedKind::Stocks),
            "{tickrelay}:edge:e1:stocks"
        );
    }

    #[test]
    fn union_of_registrations() {
        let mut a = SubscriptionSet::new();
        a.insert(Channel::Quotes, sym("AAPL"));
        let mut b = SubscriptionSet::new();
        b.insert(Channel::Quotes, sym("AAPL"));
        b.insert(Channel::Quotes, sym("MSFT"));
        assert_eq!(union([&a, &b]).len(), 2);
    }
}
