//! The delivery contract: how frames travel from the symbol throttles and the registry to browser
//! sessions. A leaf module — it names no actor — so the throttle, the per-worker hub, the session
//! and the registry can all speak it without importing each other.
//!
//! Market frames go throttle → [`Publish`] → the hub of each HTTP worker that has an interested
//! session (one cross-thread message per worker per update) → each session's outbox on that worker.
//! Everything else a session receives (status broadcasts, news, account events, refusals, an SDK
//! program's trade updates, close) comes from the registry as a [`SessionCommand`]. SDK programs'
//! market messages take their own path (the feeds' tap, `upstream::tap`).
//!
//! Each [`Publish`] carries when the feed read its newest event; the hubs time the hand-off to
//! their sessions into the shared [`LatencyHistogram`], which `/metrics` reads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use rustc_hash::FxHashSet;
use serde::Serialize;

use crate::market::BarKind;
use crate::symbol::Symbol;
use crate::time::Timestamp;
use crate::vocab::{Channel, ClientChannel, Encoding, FeedKind, PriceKind};

/// Identifies a browser session.
pub type SessionId = u64;

/// Identifies the fan-out hub of one HTTP worker thread.
pub type HubId = usize;

/// What a delivered frame is. Prices, trades and books conflate (only the newest per symbol is
/// worth sending a client that fell behind); the others are events, each of which counts. News and
/// order events carry their own id, so they never replace each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Price,
    Trade,
    Bar(BarKind),
    Book,
    News(i64),
    /// A position of one account (keyed by the account's index).
    Position(u64),
    /// An order event (keyed by a sequence number).
    Order(u64),
    /// A trade correction or cancel (keyed by a sequence number).
    TradeFix(u64),
    /// A trading status or LULD band (keyed by a sequence number).
    Status(u64),
}

impl FrameKind {
    /// The browser channel that carries this kind.
    pub fn channel(self) -> ClientChannel {
        match self {
            FrameKind::Price => ClientChannel::Quotes,
            FrameKind::Trade | FrameKind::TradeFix(_) => ClientChannel::Trades,
            FrameKind::Bar(_) => ClientChannel::Bars,
            FrameKind::Book => ClientChannel::Orderbooks,
            FrameKind::News(_) => ClientChannel::News,
            FrameKind::Position(_) | FrameKind::Order(_) => ClientChannel::Positions,
            FrameKind::Status(_) => ClientChannel::Statuses,
        }
    }

    /// Whether a newer frame of the same key makes an unsent older one worthless.
    pub fn conflates(self) -> bool {
        matches!(self, FrameKind::Price | FrameKind::Trade | FrameKind::Book)
    }

    /// Whether losing it would leave the client with a wrong picture it cannot notice (account
    /// events): such a frame is never dropped; the session is closed instead.
    pub fn must_deliver(self) -> bool {
        matches!(self, FrameKind::Position(_) | FrameKind::Order(_))
    }
}

/// The conflation key of a delivered frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeliverKey {
    pub symbol: Symbol,
    pub kind: FrameKind,
}

/// A market frame for every interested session on one worker, serialized once and shared.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Publish {
    pub symbol: Symbol,
    pub kind: FrameKind,
    pub frame: ByteString,
    /// For price updates: the `update` object alone (sharing the frame's bytes), for batches.
    pub batch: Option<(PriceKind, ByteString)>,
    /// When the feed read the newest upstream event in it (for the pipeline latency).
    pub read_at: Option<std::time::Instant>,
}

/// What the registry tells one session.
#[derive(Message)]
#[rtype(result = "()")]
pub enum SessionCommand {
    /// Send this control frame (an `alpaca_status` broadcast).
    Send(ByteString),
    /// An event for this session: news or an account event.
    Event { key: DeliverKey, frame: ByteString },
    /// The upstream refused these symbols: forget them and send `frame` (their rejections).
    Rejected {
        symbols: Vec<Symbol>,
        frame: ByteString,
    },
    /// The upstream refused these symbols with Alpaca error `code`; they are already out of the
    /// upstream set. Only SDK programs act on it (browsers get `Rejected`).
    Refused { symbols: Vec<Symbol>, code: u16 },
    /// A `trade_updates` message of the account an SDK program listens to, as Alpaca sent it.
    TradeUpdate(bytes::Bytes),
    /// Close with this code and reason (1001 at shutdown, 4008 for a slow client).
    Close { code: u16, reason: String },
    /// The upstream connection this SDK program's data comes from was lost (or came back after
    /// the program connected during the loss): its data has a gap. `error`: the Alpaca error
    /// code that ended the connection, if one did.
    UpstreamLost { error: Option<u16> },
}

/// How the registry and throttles reach a session: its worker's hub for market frames, the
/// session itself for commands.
#[derive(Clone)]
pub struct Subscriber {
    pub hub: HubId,
    pub publish: Recipient<Publish>,
    pub commands: Recipient<SessionCommand>,
    pub stats: Arc<SessionStats>,
}

/// Per-session counters, written by the session's outbox and read by the status endpoint.
#[derive(Debug)]
pub struct SessionStats {
    pub id: SessionId,
    /// `browser`, or `sdk:<stream>` for an SDK program (`sdk:stocks`, …, `sdk:trading`).
    pub kind: &'static str,
    /// The client id an SDK program authenticated as.
    pub client: std::sync::OnceLock<Arc<str>>,
    pub peer: String,
    /// The peer's IP address, for the limits that count per address.
    pub ip: Option<std::net::IpAddr>,
    pub connected_at: Timestamp,
    /// Encoded bytes handed to the socket.
    pub sent_bytes: AtomicU64,
    /// Encoded size of the frames waiting in the outbox.
    pub queued_bytes: AtomicUsize,
    /// Frames waiting in the outbox (at most one per symbol and conflating kind, plus a few events).
    pub held: AtomicUsize,
    /// Updates replaced by newer ones before they could be sent, and droppable events dropped.
    pub dropped: AtomicU64,
    /// Of `dropped`, the updates replaced by newer ones (conflated).
    pub conflated: AtomicU64,
    /// Data frames written to the socket (a batch is one frame), and the updates they carried.
    pub frames_sent: AtomicU64,
    pub updates_sent: AtomicU64,
    /// Closed for not keeping up (4008, or 407 for an SDK program).
    pub slow_closed: AtomicBool,
    pub symbols: AtomicUsize,
    /// The socket has not taken what is queued for longer than a moment.
    pub behind: AtomicBool,
}

impl SessionStats {
    pub fn new(id: SessionId, peer: String) -> Self {
        Self::of_kind(id, "browser", peer)
    }

    pub fn of_kind(id: SessionId, kind: &'static str, peer: String) -> Self {
        SessionStats {
            id,
            kind,
            client: std::sync::OnceLock::new(),
            peer,
            ip: None,
            connected_at: Timestamp::now(),
            sent_bytes: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            conflated: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            updates_sent: AtomicU64::new(0),
            slow_closed: AtomicBool::new(false),
            symbols: AtomicUsize::new(0),
            behind: AtomicBool::new(false),
        }
    }

    /// The same, for a peer at `ip`.
    pub fn at(self, ip: Option<std::net::IpAddr>) -> Self {
        SessionStats { ip, ..self }
    }

    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            id: self.id,
            kind: self.kind,
            client: self.client.get().map(|c| c.to_string()),
            peer: self.peer.clone(),
            connected_at: self.connected_at,
            symbols: self.symbols.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            held_updates: self.held.load(Ordering::Relaxed),
            dropped_updates: self.dropped.load(Ordering::Relaxed),
            behind: self.behind.load(Ordering::Relaxed),
        }
    }
}

/// A session's counters at one moment (for `/api/v1/status`).
#[derive(Clone, Debug, Serialize)]
pub struct SessionSnapshot {
    pub id: SessionId,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    pub peer: String,
    pub connected_at: Timestamp,
    pub symbols: usize,
    pub queued_bytes: usize,
    pub sent_bytes: u64,
    pub held_updates: usize,
    pub dropped_updates: u64,
    pub behind: bool,
}

/// Per-bucket counts (upper bound, count), the sum and the count of a histogram.
pub type HistogramValues = (Vec<(f64, u64)>, f64, u64);

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The time from reading an upstream frame to handing the client frame to the sessions' sockets
/// (the throttle's hold included), observed by each hub once per update ([`Publish::read_at`]);
/// read by `/metrics`.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative), then everything above the last bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Per-bucket counts as the Prometheus encoder takes them (it sums them up; `f64::MAX` is
    /// `+Inf`), the sum in seconds and the count.
    pub fn read(&self) -> HistogramValues {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            total += n;
            buckets.push((BUCKETS.get(i).copied().unwrap_or(f64::MAX), n));
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, sum, total)
    }
}

// The SDK half of the contract: the feeds' tap sends every market message, as Alpaca sent it,
// to the hubs, which filter it per program.

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

/// A feed's upstream connection was lost after it had streamed (`up: false`), or streams again
/// after such a loss (`up: true`): sent by the feed's tap to every hub, in order with its
/// batches, so SDK programs learn of the gap the way Alpaca's own would (their connection
/// closes). `error`: the Alpaca error code that ended the connection, if one did.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct UpstreamChanged {
    pub feed: FeedKind,
    pub up: bool,
    pub error: Option<u16>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_hold_each_observation_once() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(9));
        let (buckets, sum, count) = h.read();
        assert_eq!(count, 3);
        assert!((sum - 9.0033).abs() < 1e-9, "{sum}");
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 3);
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[3], (0.005, 1));
        assert_eq!(*buckets.last().unwrap(), (f64::MAX, 1));
    }

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

/// The outboxes of the SDK programs, watched by a replay at `max` so that it goes no faster than
/// the slowest program reads: live data cannot wait for a program (a slow one is closed), a replay
/// can. The SDK sessions register; the replay's player asks [`Backlog::over`] before each frame.
#[derive(Debug)]
pub struct Backlog {
    sessions: Mutex<Vec<Weak<SessionStats>>>,
    /// Bytes waiting in one outbox past which the replay waits.
    limit: usize,
}

impl Backlog {
    pub fn new(limit: usize) -> Backlog {
        Backlog {
            sessions: Mutex::new(Vec::new()),
            limit,
        }
    }

    /// Watches a program's outbox while it lives.
    pub fn watch(&self, stats: &Arc<SessionStats>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|s| s.strong_count() > 0);
        sessions.push(Arc::downgrade(stats));
    }

    /// Whether some program has more than the limit waiting (one that was closed for being slow
    /// does not hold the replay back).
    pub fn over(&self) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.iter().filter_map(Weak::upgrade).any(|s| {
            !s.slow_closed.load(Ordering::Relaxed)
                && s.queued_bytes.load(Ordering::Relaxed) > self.limit
        })
    }
}
