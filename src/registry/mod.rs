//! `Registry`: the single owner of who wants what.
//!
//! Owns: the [`Interest`] bookkeeping (every session's subscriptions, pins, news and positions
//! followers, the desired upstream set per feed), one [`SymbolThrottle`] per symbol in use, the
//! address of every session and worker hub, and each feed's last reported status. Talks to:
//! sessions (connect/subscribe/unsubscribe in; status broadcasts, refusals, news and account events
//! out as [`SessionCommand`]s), REST handlers (pins, status), feeds (status changes, news, refused
//! symbols in; desired sets and symbol routes out), accounts (events, position pins) and throttles
//! (which hubs want what). Lives as long as the daemon.
//!
//! Decisions are made by [`Interest`], a plain struct; this actor applies the [`Change`]s it
//! reports — starting and stopping throttles, arming grace timers — and coalesces subscription
//! changes, sending a feed its whole desired set a few milliseconds after the first change. The
//! registry alone decides the desired set: a feed that is refused symbols reports them and is sent
//! the corrected set.
//!
//! - [`interest`] — the bookkeeping, with its unit tests.
//! - [`status`] — what status endpoints see, and readiness in words.
//! - [`trades`] — who listens to each account's `trade_updates`, and who hears of a lost
//!   trading stream.

pub mod interest;
pub mod status;
pub mod trades;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use log::{debug, info, warn};
use serde::Serialize;

pub use self::interest::SubscribeOutcome;
use self::interest::{Change, Interest};
pub use self::status::{DeliveryTotals, FeedReport, RegistryStatus, SessionSummary, SymbolReport};
use crate::auth::Scopes;
use crate::browser::{self, ErrorCode, Rejection};
use crate::downstream::delivery::{
    DeliverKey, FrameKind, HubId, Publish, SessionCommand, SessionId, SessionSnapshot, Subscriber,
};
use crate::quote_book::QuoteBook;
use crate::symbol::Symbol;
use crate::throttle::{Inlet, SetHub, StopThrottle, SymbolThrottle, ThrottleConfig};
use crate::time::Timestamp;
use crate::upstream::feed::{Routes, SetSubscriptions, StopFeed};
use crate::upstream::{
    FeedCounters, FeedId, FeedStateChanged, FeedStatus, NewsReceived, SymbolsRejected,
};
use crate::vocab::SubscriptionSet;
use crate::vocab::{ChannelMask, ClientChannel, FeedKind};

/// Subscription changes are sent upstream this long after the first one, together.
const FLUSH_DELAY: Duration = Duration::from_millis(5);
/// How often stale quote-cache entries of released symbols are evicted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A browser session arrived; answers with the `alpaca_status` frames it should see first.
#[derive(Message)]
#[rtype(result = "Vec<ByteString>")]
pub struct Connect {
    pub session: SessionId,
    pub subscriber: Subscriber,
}

/// A session ended; release everything it held.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session: SessionId,
}

/// Subscribe a session to symbols on channels; answers which were accepted.
#[derive(Message)]
#[rtype(result = "SubscribeOutcome")]
pub struct Subscribe {
    pub session: SessionId,
    pub symbols: Vec<Symbol>,
    pub channels: ChannelMask,
    /// The session's scopes: which accounts' events the positions channel brings.
    pub scopes: Arc<Scopes>,
}

/// Unsubscribe a session from symbols on channels (harmless when not subscribed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub session: SessionId,
    pub symbols: Vec<Symbol>,
    pub channels: ChannelMask,
}

/// Everything an SDK program holds on its stream (replaces what it held; empty: nothing).
/// Fire and forget: the program's own filter is already set, and the upstream follows.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRawInterest {
    pub session: SessionId,
    pub feed: FeedKind,
    pub set: SubscriptionSet,
}

/// An SDK program on `/stream` starts or stops listening to an account's trade updates.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListenTrades {
    pub session: SessionId,
    pub account: Arc<str>,
    pub listen: bool,
}

/// An account's trading stream was lost after it streamed (`up: false`), or streams again after
/// that: its `/stream` listeners hear of the gap.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TradesChanged {
    pub account: Arc<str>,
    pub up: bool,
}

/// A `trade_updates` message of `account`, exactly as Alpaca sent it, for SDK programs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TradeUpdate {
    pub account: Arc<str>,
    pub frame: bytes::Bytes,
}

/// Who keeps a symbol streaming without a browser.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinOwner {
    /// `POST /api/v1/subscriptions` by a client (its id, or `anonymous`).
    Client(Arc<str>),
    /// `registry.pinned_symbols` in the settings.
    Config,
    /// An account's open positions (position-based auto-subscription).
    Account(Arc<str>),
}

impl fmt::Display for PinOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinOwner::Client(c) => write!(f, "client:{c}"),
            PinOwner::Config => f.write_str("config"),
            PinOwner::Account(a) => write!(f, "account:{a}"),
        }
    }
}

impl PinOwner {
    /// A REST caller's pin (these count against `registry.max_pinned_symbols`).
    pub fn is_client(&self) -> bool {
        matches!(self, PinOwner::Client(_))
    }
}

impl Serialize for PinOwner {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Keep symbols streaming with no browser attached, on behalf of `owner`.
#[derive(Message)]
#[rtype(result = "SubscribeOutcome")]
pub struct Pin {
    pub symbols: Vec<Symbol>,
    pub owner: PinOwner,
    /// Released by itself this long after (within a second); `None`: kept until unpinned.
    pub ttl: Option<Duration>,
}

/// Release `owner`'s pins (or, with `every_client`, every REST caller's pins) of `symbols`.
#[derive(Message)]
#[rtype(result = "UnpinOutcome")]
pub struct Unpin {
    pub symbols: Vec<Symbol>,
    pub owner: PinOwner,
    pub every_client: bool,
}

/// What an [`Unpin`] did.
#[derive(Debug, Default)]
pub struct UnpinOutcome {
    /// Symbols whose pin was released.
    pub released: Vec<Symbol>,
    /// Symbols other REST callers still pin (not released: only they or an admin may).
    pub held_by_others: Vec<Symbol>,
}

/// Make `owner`'s pins exactly `symbols` (pins the new ones, releases the rest).
#[derive(Message)]
#[rtype(result = "SubscribeOutcome")]
pub struct SyncPins {
    pub symbols: Vec<Symbol>,
    pub owner: PinOwner,
}

/// An account event (`position_update`, `order_update`) for sessions on the positions channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AccountEvent {
    /// Whose event: only sessions allowed this account receive it.
    pub account: Arc<str>,
    pub key: DeliverKey,
    pub frame: ByteString,
}

/// Make a feed or trading stream known to the registry (at start-up, after its actor exists).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterFeed {
    pub id: FeedId,
    /// Data feeds take subscriptions; trading streams do not.
    pub subscriptions: Option<Recipient<SetSubscriptions>>,
    pub stop: Recipient<StopFeed>,
    pub counters: Arc<FeedCounters>,
    pub status: FeedStatus,
}

/// A snapshot of everything, for the status endpoints: every session summed up, and the
/// details of a page of them (ordered by id) — with ten thousand browsers the whole list would
/// make every status request, and the registry, slow.
#[derive(Message, Default)]
#[rtype(result = "RegistryStatus")]
pub struct GetStatus {
    /// Sessions skipped before the page.
    pub offset: usize,
    /// Sessions listed in full (0: only the summary).
    pub limit: usize,
}

/// Daemon shutdown: close every session with 1001 and stop every feed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

/// What the registry needs to know at start.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub unsubscribe_grace: Duration,
    pub max_pinned: usize,
    /// Most of them one client may pin.
    pub max_pins_per_client: usize,
    /// Most distinct symbols held at once, over every session and pin.
    pub max_symbols: usize,
    pub throttle: ThrottleConfig,
    /// Beaten every [`HEARTBEAT_INTERVAL`] while the registry runs (liveness).
    pub heartbeat: Heartbeat,
}

/// How often the registry beats its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// When the registry last ran its timers: liveness without a message round trip, so a registry
/// busy with a large status or a burst of subscriptions is not mistaken for a dead one, and a
/// wedged one is noticed.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat(Arc<std::sync::atomic::AtomicU64>);

impl Heartbeat {
    pub fn beat(&self) {
        self.0
            .store(Self::now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long ago the last beat was (`None` before the first).
    pub fn age(&self) -> Option<Duration> {
        let last = self.0.load(std::sync::atomic::Ordering::Relaxed);
        (last > 0).then(|| Duration::from_millis(Self::now_ms().saturating_sub(last)))
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

struct FeedEntry {
    subscriptions: Option<Recipient<SetSubscriptions>>,
    stop: Recipient<StopFeed>,
    counters: Arc<FeedCounters>,
    status: FeedStatus,
}

/// A running throttle.
struct Throttle {
    addr: Addr<SymbolThrottle>,
    inlet: Arc<Inlet>,
}

/// The registry actor.
pub struct Registry {
    config: RegistryConfig,
    quotes: QuoteBook,
    interest: Interest,
    throttles: HashMap<Symbol, Throttle>,
    feeds: BTreeMap<FeedId, FeedEntry>,
    /// Statuses from connections not registered yet: each runs on its own thread and may report
    /// before its registration arrives.
    early_status: HashMap<FeedId, FeedStatus>,
    sessions: HashMap<SessionId, Subscriber>,
    /// Every worker hub a session has come from.
    hubs: HashMap<HubId, Recipient<Publish>>,
    /// What the sessions that ended had sent and lost.
    retired: DeliveryTotals,
    /// SDK programs on `/stream` listening to each account's trade updates.
    trade_listeners: trades::TradeListeners,
    /// Feeds whose desired set changed since the last flush.
    dirty: BTreeSet<FeedKind>,
    flush_scheduled: bool,
    shutting_down: bool,
}

impl Registry {
    pub fn new(config: RegistryConfig, quotes: QuoteBook) -> Self {
        Registry {
            interest: Interest::new(config.max_pinned)
                .with_max_symbols(config.max_symbols)
                .with_max_pins_per_client(config.max_pins_per_client),
            config,
            quotes,
            throttles: HashMap::new(),
            feeds: BTreeMap::new(),
            early_status: HashMap::new(),
            sessions: HashMap::new(),
            hubs: HashMap::new(),
            retired: DeliveryTotals::default(),
            trade_listeners: trades::TradeListeners::default(),
            dirty: BTreeSet::new(),
            flush_scheduled: false,
            shutting_down: false,
        }
    }

    /// Which data feeds run (a symbol whose feed is not enabled is refused).
    fn feed_filter(&self) -> impl Fn(FeedKind) -> bool {
        let running: Vec<FeedKind> = self
            .feeds
            .keys()
            .filter_map(|id| match id {
                FeedId::Data(kind) => Some(*kind),
                FeedId::Trading(_) => None,
            })
            .collect();
        move |kind| running.contains(&kind)
    }

    /// Carries out what the bookkeeping decided.
    fn apply(&mut self, changes: Vec<Change>, ctx: &mut Context<Self>) {
        for change in changes {
            match change {
                Change::Created(symbol) => {
                    let (addr, inlet) = SymbolThrottle::start(
                        symbol.clone(),
                        self.config.throttle.clone(),
                        self.quotes.clone(),
                    );
                    self.throttles.insert(symbol, Throttle { addr, inlet });
                }
                Change::Hub {
                    symbol,
                    hub,
                    channels,
                } => {
                    if let (Some(t), Some(publish)) =
                        (self.throttles.get(&symbol), self.hubs.get(&hub))
                    {
                        t.addr.do_send(SetHub {
                            hub,
                            publish: publish.clone(),
                            channels,
                        });
                    }
                }
                Change::Grace { symbol, generation } => {
                    ctx.run_later(self.config.unsubscribe_grace, move |act, ctx| {
                        let mut out = Vec::new();
                        act.interest.release(&symbol, generation, &mut out);
                        act.apply(out, ctx);
                    });
                }
                Change::Removed(symbol) => {
                    if let Some(t) = self.throttles.remove(&symbol) {
                        t.addr.do_send(StopThrottle);
                    }
                }
                Change::FeedChanged(feed) => self.mark_dirty(feed, ctx),
            }
        }
    }

    fn mark_dirty(&mut self, feed: FeedKind, ctx: &mut Context<Self>) {
        self.dirty.insert(feed);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(FLUSH_DELAY, |act, _| act.flush());
        }
    }

    /// Where the feed sends each of its symbols' events.
    fn routes(&self, feed: FeedKind) -> Routes {
        let routes = self
            .interest
            .symbols()
            .filter(|(_, s)| s.feed == feed)
            .filter_map(|(symbol, _)| {
                let t = self.throttles.get(symbol)?;
                Some((symbol.clone(), t.inlet.clone()))
            })
            .collect();
        Routes::new(routes)
    }

    /// Sends each changed feed its whole desired set and routing table.
    fn flush(&mut self) {
        self.flush_scheduled = false;
        for feed in std::mem::take(&mut self.dirty) {
            let Some(target) = self
                .feeds
                .get(&FeedId::Data(feed))
                .and_then(|f| f.subscriptions.clone())
            else {
                continue;
            };
            let desired = self.interest.desired(feed);
            debug!(
                "registry: feed {} now wants {} streams",
                feed.as_str(),
                desired.len()
            );
            target.do_send(SetSubscriptions {
                desired,
                routes: self.routes(feed),
            });
        }
    }

    fn status_frame(status: &FeedStatus) -> ByteString {
        browser::alpaca_status(status.state.browser_status(), &status.browser_details())
    }

    fn broadcast(&self, frame: ByteString) {
        for s in self.sessions.values() {
            s.commands.do_send(SessionCommand::Send(frame.clone()));
        }
    }

    /// Hands an event to sessions (each queues it in its bounded outbox).
    fn deliver_to<'a>(
        &self,
        sessions: impl Iterator<Item = &'a SessionId>,
        key: &DeliverKey,
        frame: &ByteString,
    ) {
        for id in sessions {
            if let Some(s) = self.sessions.get(id) {
                s.commands.do_send(SessionCommand::Event {
                    key: key.clone(),
                    frame: frame.clone(),
                });
            }
        }
    }

    /// Drops quote-cache entries of released symbols once they are stale.
    /// Releases the pins whose time-to-live ran out.
    fn expire_pins(&mut self, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        let expired = self.interest.expire_pins(Instant::now(), &mut out);
        if expired.is_empty() {
            return;
        }
        self.apply(out, ctx);
        for (owner, symbol) in expired {
            info!("registry: the pin of {symbol} by {owner} expired");
        }
    }

    fn sweep(&mut self) {
        let stale_after = self.config.throttle.stale_after;
        let now = Timestamp::now();
        let active = &self.throttles;
        self.quotes.retain(|symbol, price| {
            active.contains_key(symbol) || price.age_at(now) <= stale_after
        });
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(SWEEP_INTERVAL, |act, _| act.sweep());
        self.config.heartbeat.beat();
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| {
            act.config.heartbeat.beat();
            act.expire_pins(ctx);
        });
    }
}

impl Handler<RegisterFeed> for Registry {
    type Result = ();

    fn handle(&mut self, msg: RegisterFeed, _: &mut Context<Self>) {
        let status = self.early_status.remove(&msg.id).unwrap_or(msg.status);
        self.feeds.insert(
            msg.id,
            FeedEntry {
                subscriptions: msg.subscriptions,
                stop: msg.stop,
                counters: msg.counters,
                status,
            },
        );
    }
}

impl Handler<Connect> for Registry {
    type Result = MessageResult<Connect>;

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> Self::Result {
        let subscriber = msg.subscriber;
        if self.shutting_down {
            subscriber.commands.do_send(SessionCommand::Close {
                code: 1001,
                reason: "server shutting down".into(),
            });
        }
        self.hubs
            .entry(subscriber.hub)
            .or_insert_with(|| subscriber.publish.clone());
        self.interest.connect(msg.session, subscriber.hub);
        self.sessions.insert(msg.session, subscriber);
        MessageResult(
            self.feeds
                .values()
                .map(|f| Self::status_frame(&f.status))
                .collect(),
        )
    }
}

impl Handler<Disconnect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        let released = self.interest.disconnect(msg.session, &mut out);
        if let Some(s) = self.sessions.remove(&msg.session) {
            self.retired.add(&s.stats);
        }
        self.trade_listeners.forget(msg.session);
        self.apply(out, ctx);
        debug!(
            "registry: session {} gone, released {released} symbols",
            msg.session
        );
    }
}

impl Handler<Subscribe> for Registry {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        let has_feed = self.feed_filter();
        if msg.channels.contains(ClientChannel::Positions) {
            self.interest.follow_positions(msg.session, msg.scopes);
        }
        let outcome =
            self.interest
                .subscribe(msg.session, msg.symbols, msg.channels, has_feed, &mut out);
        self.apply(out, ctx);
        MessageResult(outcome)
    }
}

impl Handler<Unsubscribe> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.interest
            .unsubscribe(msg.session, &msg.symbols, msg.channels, &mut out);
        self.apply(out, ctx);
    }
}

impl Handler<SetRawInterest> for Registry {
    type Result = ();

    fn handle(&mut self, msg: SetRawInterest, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.interest
            .set_raw(msg.session, msg.feed, msg.set, &mut out);
        self.apply(out, ctx);
    }
}

impl Handler<ListenTrades> for Registry {
    type Result = ();

    fn handle(&mut self, msg: ListenTrades, _: &mut Context<Self>) {
        self.trade_listeners
            .listen(msg.session, msg.account, msg.listen);
    }
}

impl Handler<TradesChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: TradesChanged, _: &mut Context<Self>) {
        for id in self.trade_listeners.changed(msg.account, msg.up) {
            if let Some(sess) = self.sessions.get(&id) {
                sess.commands
                    .do_send(SessionCommand::UpstreamLost { error: None });
            }
        }
    }
}

impl Handler<TradeUpdate> for Registry {
    type Result = ();

    fn handle(&mut self, msg: TradeUpdate, _: &mut Context<Self>) {
        for id in self.trade_listeners.of(&msg.account) {
            if let Some(sess) = self.sessions.get(id) {
                sess.commands
                    .do_send(SessionCommand::TradeUpdate(msg.frame.clone()));
            }
        }
    }
}

impl Handler<Pin> for Registry {
    type Result = MessageResult<Pin>;

    fn handle(&mut self, msg: Pin, ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        let has_feed = self.feed_filter();
        let expires = msg.ttl.map(|ttl| Instant::now() + ttl);
        let outcome = self
            .interest
            .pin(msg.symbols, &msg.owner, expires, has_feed, &mut out);
        self.apply(out, ctx);
        MessageResult(outcome)
    }
}

impl Handler<Unpin> for Registry {
    type Result = MessageResult<Unpin>;

    fn handle(&mut self, msg: Unpin, ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        let owners: Vec<PinOwner> = if msg.every_client {
            let mut all: Vec<PinOwner> = msg
                .symbols
                .iter()
                .flat_map(|s| self.interest.pinned_by(s))
                .filter(|o| o.is_client())
                .cloned()
                .collect();
            all.sort();
            all.dedup();
            all
        } else {
            vec![msg.owner]
        };
        let mut outcome = UnpinOutcome::default();
        for owner in &owners {
            outcome
                .released
                .extend(self.interest.unpin(&msg.symbols, owner, &mut out));
        }
        outcome.released.sort();
        outcome.released.dedup();
        outcome.held_by_others = msg
            .symbols
            .iter()
            .filter(|s| self.interest.pinned_by(s).any(PinOwner::is_client))
            .cloned()
            .collect();
        self.apply(out, ctx);
        MessageResult(outcome)
    }
}

impl Handler<SyncPins> for Registry {
    type Result = MessageResult<SyncPins>;

    fn handle(&mut self, msg: SyncPins, ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        let has_feed = self.feed_filter();
        let outcome = self
            .interest
            .sync_pins(msg.symbols, &msg.owner, has_feed, &mut out);
        self.apply(out, ctx);
        MessageResult(outcome)
    }
}

impl Handler<FeedStateChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: FeedStateChanged, _: &mut Context<Self>) {
        let status = msg.status;
        let Some(entry) = self.feeds.get_mut(&status.feed) else {
            self.early_status.insert(status.feed.clone(), status);
            return;
        };
        let visible_change = entry.status.state.browser_status() != status.state.browser_status()
            || entry.status.circuit_state != status.circuit_state;
        entry.status = status.clone();
        if visible_change {
            self.broadcast(Self::status_frame(&status));
        }
    }
}

impl Handler<NewsReceived> for Registry {
    type Result = ();

    fn handle(&mut self, msg: NewsReceived, _: &mut Context<Self>) {
        let article = msg.article;
        let recipients = self.interest.news_recipients(&article.symbols);
        if recipients.is_empty() {
            return;
        }
        let frame = browser::news(&article);
        let key = DeliverKey {
            symbol: Symbol::wildcard(),
            kind: FrameKind::News(article.id),
        };
        self.deliver_to(recipients.iter(), &key, &frame);
    }
}

impl Handler<AccountEvent> for Registry {
    type Result = ();

    fn handle(&mut self, msg: AccountEvent, _: &mut Context<Self>) {
        self.deliver_to(
            self.interest.positions_of(&msg.account),
            &msg.key,
            &msg.frame,
        );
    }
}

impl Handler<SymbolsRejected> for Registry {
    type Result = ();

    fn handle(&mut self, msg: SymbolsRejected, ctx: &mut Context<Self>) {
        let (code, label) = if msg.code == 405 {
            (ErrorCode::TooManySymbols, "over the account's symbol limit")
        } else {
            (ErrorCode::InvalidSymbol, "refused as invalid")
        };
        let mut out = Vec::new();
        let per_session = self.interest.refuse(msg.feed, &msg.symbols, &mut out);
        let per_program = self.interest.refuse_raw(msg.feed, &msg.symbols, &mut out);
        self.apply(out, ctx);
        for (id, symbols) in per_program {
            if let Some(sess) = self.sessions.get(&id) {
                sess.commands.do_send(SessionCommand::Refused {
                    symbols,
                    code: msg.code,
                });
            }
        }
        warn!(
            "registry: the {} feed refused {} ({}); {} sessions told",
            msg.feed.as_str(),
            msg.symbols
                .iter()
                .map(Symbol::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            msg.reason,
            per_session.len()
        );
        for (id, symbols) in per_session {
            let rejected: Vec<Rejection> = symbols
                .iter()
                .map(|s| Rejection {
                    symbol: s.to_string(),
                    code,
                    message: format!("Alpaca {label}: {}", msg.reason),
                })
                .collect();
            if let Some(sess) = self.sessions.get(&id) {
                sess.commands.do_send(SessionCommand::Rejected {
                    frame: browser::subscribed(&[], &[], &rejected),
                    symbols,
                });
            }
        }
    }
}

impl Handler<GetStatus> for Registry {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, msg: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let feeds = self
            .feeds
            .values()
            .map(|f| FeedReport {
                status: f.status.clone(),
                counters: f.counters.snapshot(),
            })
            .collect();
        let mut symbols: Vec<SymbolReport> = self
            .interest
            .symbols()
            .map(|(symbol, e)| SymbolReport {
                symbol: symbol.clone(),
                feed: e.feed,
                sessions: e.session_count(),
                pinned: !e.pins.is_empty(),
                pinned_by: e.pins.keys().cloned().collect(),
                releasing: e.releasing.is_some(),
            })
            .collect();
        symbols.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        let mut summary = SessionSummary {
            count: self.sessions.len(),
            ..SessionSummary::default()
        };
        for s in self.sessions.values() {
            let stats = &s.stats;
            summary.dropped_updates += stats.dropped.load(Ordering::Relaxed);
            summary.behind += usize::from(stats.behind.load(Ordering::Relaxed));
            summary.sdk_programs += usize::from(stats.kind.starts_with("sdk"));
            summary.browsers += usize::from(stats.kind == "browser");
        }
        let mut ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        ids.sort_unstable();
        let sessions: Vec<SessionSnapshot> = ids
            .iter()
            .skip(msg.offset)
            .take(msg.limit)
            .filter_map(|id| self.sessions.get(id))
            .map(|s| s.stats.snapshot())
            .collect();
        let pinned = symbols
            .iter()
            .filter(|s| s.pinned)
            .map(|s| s.symbol.clone())
            .collect();
        MessageResult(RegistryStatus {
            feeds,
            throttles: self.throttles.len(),
            symbols,
            sessions,
            session_summary: summary,
            pinned,
            cached_quotes: self.quotes.len(),
            news: self
                .interest
                .news_counts()
                .map(|(s, n)| (s.to_string(), n))
                .collect(),
            positions_subscribers: self.interest.positions().count(),
            hub_mailbox_drops: self.config.throttle.hub_drops.load(Ordering::Relaxed),
            delivery: self.sessions.values().fold(self.retired, |mut total, s| {
                total.add(&s.stats);
                total
            }),
        })
    }
}

impl Handler<Shutdown> for Registry {
    type Result = usize;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> usize {
        self.shutting_down = true;
        for s in self.sessions.values() {
            s.commands.do_send(SessionCommand::Close {
                code: 1001,
                reason: "server shutting down".into(),
            });
        }
        for f in self.feeds.values() {
            f.stop.do_send(StopFeed);
        }
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_ages() {
        let h = Heartbeat::default();
        assert_eq!(h.age(), None, "no beat yet");
        h.beat();
        assert!(h.age().unwrap() < Duration::from_secs(1));
        h.0.store(
            Heartbeat::now_ms() - 7_000,
            std::sync::atomic::Ordering::Relaxed,
        );
        assert!(h.age().unwrap() >= Duration::from_secs(7));
    }
}
