//! The raw tap: every market message a feed reads, as Alpaca sent it, for SDK programs.
//!
//! Browsers get conflated updates through the throttles; SDK programs on the Alpaca-compatible
//! endpoint get *every* message, field for field. Owns: per feed, how many SDK programs want each
//! encoding ([`Tap::demand`]) and where to send the messages (one [`RawBatch`] per HTTP worker
//! hub, whatever the number of programs on it). Talks to: the feed, which splits each frame into
//! [`RawElement`]s only while someone listens, encoding each once per encoding in demand
//! ([`protocol::raw`](super::protocol::raw)); the hubs, which filter them per program with a
//! [`RawFilter`] and queue one frame per program. Nothing here blocks or awaits: a hub whose
//! mailbox is full loses the batch (counted) rather than stall the reader.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use rustc_hash::FxHashSet;

use super::protocol::{Channel, Encoding};
use super::FeedKind;
use crate::symbol::Symbol;

/// One market message of an upstream frame, in each encoding someone wants.
#[derive(Debug, Clone)]
pub struct RawElement {
    /// The subscription channel that carries it (corrections and cancel/errors: trades).
    pub channel: Channel,
    /// Its symbol as Alpaca wrote it (a slice of the frame when it can be: no allocation); for
    /// news, empty (see `news_symbols`).
    pub symbol: ByteString,
    /// News only: every symbol of the article (empty: only `*` subscribers get it).
    pub news_symbols: Option<Box<[ByteString]>>,
    /// The message as one msgpack map (`T` first), or empty when no program wants msgpack.
    pub msgpack: Bytes,
    /// The message as one JSON object, or empty when no program wants JSON.
    pub json: Bytes,
}

impl RawElement {
    /// The encoded message for `encoding`.
    pub fn encoded(&self, encoding: Encoding) -> &Bytes {
        match encoding {
            Encoding::Json => &self.json,
            Encoding::Msgpack => &self.msgpack,
        }
    }
}

/// The market messages of one upstream frame, for the SDK programs on one worker.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct RawBatch {
    pub feed: FeedKind,
    pub elements: Arc<[RawElement]>,
}

/// What one SDK program receives of a stream: per channel, symbols or everything (`*`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawFilter {
    channels: [ChannelFilter; Channel::COUNT],
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ChannelFilter {
    all: bool,
    symbols: FxHashSet<Symbol>,
}

impl RawFilter {
    /// Whether the program wants this message.
    pub fn wants(&self, element: &RawElement) -> bool {
        let f = &self.channels[element.channel as usize];
        if f.all {
            return true;
        }
        if f.symbols.is_empty() {
            return false;
        }
        match &element.news_symbols {
            Some(symbols) => symbols.iter().any(|s| f.symbols.contains(&**s)),
            None => f.symbols.contains(&*element.symbol),
        }
    }

    /// Adds `symbol` (or `*`) on `channel`.
    pub fn insert(&mut self, channel: Channel, symbol: Symbol) {
        let f = &mut self.channels[channel as usize];
        if symbol.is_wildcard() {
            f.all = true;
        } else {
            f.symbols.insert(symbol);
        }
    }

    /// Removes `symbol` (or `*`) from `channel`.
    pub fn remove(&mut self, channel: Channel, symbol: &Symbol) {
        let f = &mut self.channels[channel as usize];
        if symbol.is_wildcard() {
            f.all = false;
        } else {
            f.symbols.remove(symbol);
        }
    }

    /// The symbols of `channel`, sorted, `*` first when set.
    pub fn symbols(&self, channel: Channel) -> Vec<Symbol> {
        let f = &self.channels[channel as usize];
        let mut out: Vec<Symbol> = f.symbols.iter().cloned().collect();
        out.sort();
        if f.all {
            out.insert(0, Symbol::wildcard());
        }
        out
    }

    /// Distinct symbols over every channel (`*` not counted).
    pub fn symbol_count(&self) -> usize {
        let mut all: FxHashSet<&Symbol> = FxHashSet::default();
        for f in &self.channels {
            all.extend(f.symbols.iter());
        }
        all.len()
    }
}

/// One feed's tap: who listens, in which encodings, and the hubs to send to.
#[derive(Default)]
pub struct Tap {
    json: AtomicUsize,
    msgpack: AtomicUsize,
    hubs: RwLock<Vec<Recipient<RawBatch>>>,
    /// Batches a full hub mailbox refused.
    pub dropped: AtomicU64,
}

/// The taps of every feed, shared by the feeds, the hubs and the SDK sessions.
#[derive(Default)]
pub struct Taps {
    taps: [Tap; FeedKind::ALL.len()],
}

impl std::fmt::Debug for Taps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_map();
        for kind in FeedKind::ALL {
            list.entry(&kind.as_str(), &self.feed(kind).demand());
        }
        list.finish()
    }
}

impl Taps {
    pub fn new() -> Arc<Taps> {
        Arc::default()
    }

    pub fn feed(&self, feed: FeedKind) -> &Tap {
        &self.taps[feed as usize]
    }

    /// Batches a full hub mailbox refused, over every feed.
    pub fn dropped(&self) -> u64 {
        self.taps
            .iter()
            .map(|t| t.dropped.load(Ordering::Relaxed))
            .sum()
    }

    /// A worker's hub joins every tap (called once per worker at start-up).
    pub fn add_hub(&self, hub: Recipient<RawBatch>) {
        for tap in &self.taps {
            tap.hubs
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(hub.clone());
        }
    }
}

impl Tap {
    /// An SDK program with `encoding` starts listening.
    pub fn listen(&self, encoding: Encoding) {
        self.counter(encoding).fetch_add(1, Ordering::Relaxed);
    }

    /// It stops.
    pub fn unlisten(&self, encoding: Encoding) {
        self.counter(encoding).fetch_sub(1, Ordering::Relaxed);
    }

    fn counter(&self, encoding: Encoding) -> &AtomicUsize {
        match encoding {
            Encoding::Json => &self.json,
            Encoding::Msgpack => &self.msgpack,
        }
    }

    /// Which encodings someone wants now: `(json, msgpack)`.
    pub fn demand(&self) -> (bool, bool) {
        (
            self.json.load(Ordering::Relaxed) > 0,
            self.msgpack.load(Ordering::Relaxed) > 0,
        )
    }

    /// Sends the batch to every hub (each filters for its own programs).
    pub fn publish(&self, batch: RawBatch) {
        let hubs = self.hubs.read().unwrap_or_else(|e| e.into_inner());
        for hub in hubs.iter() {
            if hub.try_send(batch.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(channel: Channel, symbol: &str) -> RawElement {
        RawElement {
            channel,
            symbol: ByteString::from(symbol.to_owned()),
            news_symbols: None,
            msgpack: Bytes::new(),
            json: Bytes::new(),
        }
    }

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    #[test]
    fn filters_by_channel_and_symbol() {
        let mut f = RawFilter::default();
        f.insert(Channel::Quotes, sym("AAPL"));
        assert!(f.wants(&element(Channel::Quotes, "AAPL")));
        assert!(!f.wants(&element(Channel::Trades, "AAPL")));
        assert!(!f.wants(&element(Channel::Quotes, "MSFT")));
        f.insert(Channel::Trades, Symbol::wildcard());
        assert!(f.wants(&element(Channel::Trades, "MSFT")));
        f.remove(Channel::Quotes, &sym("AAPL"));
        assert!(!f.wants(&element(Channel::Quotes, "AAPL")));
        assert_eq!(f.symbols(Channel::Trades), vec![Symbol::wildcard()]);
        assert_eq!(f.symbol_count(), 0);
    }

    #[test]
    fn news_goes_to_any_of_its_symbols_and_to_star() {
        let mut f = RawFilter::default();
        f.insert(Channel::News, sym("TSLA"));
        let mut article = element(Channel::News, "AAPL");
        article.news_symbols = Some(vec!["AAPL".into(), "TSLA".into()].into());
        assert!(f.wants(&article));
        let mut general = element(Channel::News, "AAPL");
        general.news_symbols = Some(Vec::new().into());
        assert!(!f.wants(&general));
        f.insert(Channel::News, Symbol::wildcard());
        assert!(f.wants(&general));
    }
}
