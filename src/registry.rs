//! `Registry`: the single owner of who wants what.
//!
//! Owns: every session's subscriptions, server-side pins (with their owners), one
//! [`SymbolThrottle`] per symbol in use, news subscriptions (per symbol and `*`), the sessions that
//! follow account events, the desired upstream set and routing table per feed, and each feed's
//! last reported status. Talks to: sessions (connect/subscribe/unsubscribe in; status broadcasts,
//! rejections, news and account events out), REST handlers (pins, status), feeds (status changes,
//! news, refused symbols in; desired sets out), accounts (events, position pins) and throttles
//! (subscriber changes). Lives as long as the daemon.
//!
//! Market interest is reference-counted per symbol: the first subscriber (session or pin) creates
//! the throttle and adds the symbol upstream on the feed its shape picks (OCC option → options,
//! `BASE/QUOTE` → crypto, otherwise stocks); when the last one leaves, the symbol stays for a grace
//! period (a page reload must not churn Alpaca) and is then released. Changes are coalesced and
//! sent to a feed as its whole desired set a few milliseconds later.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::prelude::*;
use bytestring::ByteString;
use log::{debug, info, warn};
use serde::Serialize;

use crate::browser::{self, ChannelMask, ClientChannel, ErrorCode, Rejection};
use crate::market::NewsArticle;
use crate::quote_book::QuoteBook;
use crate::session::{
    Deliver, DeliverKey, FrameKind, SessionCommand, SessionId, SessionSnapshot, Subscriber,
};
use crate::symbol::Symbol;
use crate::throttle::{
    AddSubscriber, RemoveSubscriber, StopThrottle, SymbolThrottle, ThrottleConfig,
};
use crate::time::Timestamp;
use crate::upstream::feed::{Routes, SetSubscriptions, StopFeed};
use crate::upstream::protocol::{Channel, SubscriptionSet};
use crate::upstream::{
    FeedCounters, FeedCountersSnapshot, FeedId, FeedKind, FeedState, FeedStatus,
};

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
    pub commands: Recipient<SessionCommand>,
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
}

/// The answer to [`Subscribe`] and [`Pin`].
#[derive(Debug, Default)]
pub struct SubscribeOutcome {
    pub accepted: Vec<Symbol>,
    pub rejected: Vec<Rejection>,
}

/// Unsubscribe a session from symbols on channels (harmless when not subscribed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub session: SessionId,
    pub symbols: Vec<Symbol>,
    pub channels: ChannelMask,
}

/// Who keeps a symbol streaming without a browser.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinOwner {
    /// `POST /api/v1/subscriptions`.
    Rest,
    /// `registry.pinned_symbols` in the settings.
    Config,
    /// An account's open positions (position-based auto-subscription).
    Account(Arc<str>),
}

impl fmt::Display for PinOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinOwner::Rest => f.write_str("rest"),
            PinOwner::Config => f.write_str("config"),
            PinOwner::Account(a) => write!(f, "account:{a}"),
        }
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
}

/// Release `owner`'s pins; answers the symbols it had pinned.
#[derive(Message)]
#[rtype(result = "Vec<Symbol>")]
pub struct Unpin {
    pub symbols: Vec<Symbol>,
    pub owner: PinOwner,
}

/// Make `owner`'s pins exactly `symbols` (pins the new ones, releases the rest).
#[derive(Message)]
#[rtype(result = "SubscribeOutcome")]
pub struct SyncPins {
    pub symbols: Vec<Symbol>,
    pub owner: PinOwner,
}

/// A feed's status changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FeedStateChanged {
    pub status: FeedStatus,
}

/// A news article arrived.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NewsReceived {
    pub article: NewsArticle,
}

/// The upstream refused these symbols (400 invalid, 405 over the plan's limit).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SymbolsRejected {
    pub feed: FeedKind,
    pub symbols: Vec<Symbol>,
    pub code: u16,
    pub reason: String,
}

/// An account event (`position_update`, `order_update`) for sessions on the positions channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AccountEvent {
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

/// A snapshot of everything, for the status endpoints.
#[derive(Message)]
#[rtype(result = "RegistryStatus")]
pub struct GetStatus;

/// Daemon shutdown: close every session with 1001 and stop every feed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

/// One feed in [`RegistryStatus`].
#[derive(Clone, Debug, Serialize)]
pub struct FeedReport {
    #[serde(flatten)]
    pub status: FeedStatus,
    #[serde(flatten)]
    pub counters: FeedCountersSnapshot,
}

/// One symbol in [`RegistryStatus`].
#[derive(Clone, Debug, Serialize)]
pub struct SymbolReport {
    pub symbol: Symbol,
    pub feed: FeedKind,
    pub sessions: usize,
    pub pinned: bool,
    pub pinned_by: Vec<PinOwner>,
    /// In its grace period: no subscribers left, not yet released upstream.
    pub releasing: bool,
}

/// Everything the status endpoints show.
#[derive(Clone, Debug, Serialize)]
pub struct RegistryStatus {
    pub feeds: Vec<FeedReport>,
    pub symbols: Vec<SymbolReport>,
    pub sessions: Vec<SessionSnapshot>,
    pub throttles: usize,
    pub pinned: Vec<Symbol>,
    pub cached_quotes: usize,
    /// News subscriptions: symbol (or `*`) → sessions.
    pub news: BTreeMap<String, usize>,
    /// Sessions following account events.
    pub positions_subscribers: usize,
}

impl RegistryStatus {
    /// Every enabled feed and account stream authenticated and subscribed.
    pub fn ready(&self) -> bool {
        !self.feeds.is_empty()
            && self
                .feeds
                .iter()
                .all(|f| f.status.state == FeedState::Connected)
    }

    /// Why the daemon is not ready, one sentence per feed.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        if self.feeds.is_empty() {
            return vec!["no feed is running".into()];
        }
        self.feeds
            .iter()
            .filter(|f| f.status.state != FeedState::Connected)
            .map(|f| {
                let s = &f.status;
                let mut reason = format!("feed {}: {}", s.feed, s.state.browser_status());
                if s.consecutive_failures > 0 {
                    reason.push_str(&format!(
                        " ({} consecutive failures)",
                        s.consecutive_failures
                    ));
                }
                if s.circuit_state != crate::upstream::policy::CircuitState::Closed {
                    reason.push_str(&format!("; circuit {}", s.circuit_state.as_str()));
                }
                if let Some(e) = &s.last_error {
                    reason.push_str(&format!("; last error: {e}"));
                }
                if let Some(ms) = s.next_retry_ms {
                    reason.push_str(&format!("; next attempt in {ms} ms"));
                }
                reason
            })
            .collect()
    }
}

/// What the registry needs to know at start.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub unsubscribe_grace: Duration,
    pub max_pinned: usize,
    pub throttle: ThrottleConfig,
}

struct FeedEntry {
    subscriptions: Option<Recipient<SetSubscriptions>>,
    stop: Recipient<StopFeed>,
    counters: Arc<FeedCounters>,
    status: FeedStatus,
}

struct SymbolEntry {
    feed: FeedKind,
    throttle: Addr<SymbolThrottle>,
    /// Market channels per session.
    sessions: HashMap<SessionId, ChannelMask>,
    pins: BTreeSet<PinOwner>,
    /// The grace timer, while no one holds the symbol.
    release: Option<SpawnHandle>,
    /// What is subscribed upstream for it; kept through the grace period.
    upstream: ChannelMask,
}

impl SymbolEntry {
    fn interest(&self) -> ChannelMask {
        let pins = if self.pins.is_empty() {
            ChannelMask::EMPTY
        } else {
            ChannelMask::QUOTES
        };
        self.sessions.values().fold(pins, |acc, m| acc.union(*m))
    }

    fn unused(&self) -> bool {
        self.sessions.is_empty() && self.pins.is_empty()
    }
}

struct SessionEntry {
    subscriber: Subscriber,
    commands: Recipient<SessionCommand>,
    /// Market and news channels per symbol (news symbols include `*`).
    symbols: HashMap<Symbol, ChannelMask>,
}

/// The registry actor.
pub struct Registry {
    config: RegistryConfig,
    quotes: QuoteBook,
    feeds: BTreeMap<FeedId, FeedEntry>,
    symbols: HashMap<Symbol, SymbolEntry>,
    sessions: HashMap<SessionId, SessionEntry>,
    /// News subscriptions: symbol or `*` → sessions.
    news: HashMap<Symbol, HashSet<SessionId>>,
    /// Sessions on the positions channel.
    positions: HashSet<SessionId>,
    /// Feeds whose desired set changed since the last flush.
    dirty: BTreeSet<FeedKind>,
    flush_scheduled: bool,
    shutting_down: bool,
}

/// Upstream channels behind browser market channels on `feed`. Prices need trades too, for
/// `last_price`; channels a stream does not offer (bars on options) are left out.
fn upstream_channels(feed: FeedKind, mask: ChannelMask) -> Vec<Channel> {
    let mut out = Vec::new();
    for c in mask.channels() {
        match c {
            ClientChannel::Quotes => out.extend([Channel::Quotes, Channel::Trades]),
            ClientChannel::Trades => out.push(Channel::Trades),
            ClientChannel::Bars => {
                out.extend([Channel::Bars, Channel::UpdatedBars, Channel::DailyBars])
            }
            ClientChannel::Orderbooks => out.push(Channel::Orderbooks),
            ClientChannel::News | ClientChannel::Positions => {}
        }
    }
    out.retain(|c| feed.channels().contains(c));
    out.dedup();
    out
}

impl Registry {
    pub fn new(config: RegistryConfig, quotes: QuoteBook) -> Self {
        Registry {
            config,
            quotes,
            feeds: BTreeMap::new(),
            symbols: HashMap::new(),
            sessions: HashMap::new(),
            news: HashMap::new(),
            positions: HashSet::new(),
            dirty: BTreeSet::new(),
            flush_scheduled: false,
            shutting_down: false,
        }
    }

    fn has_feed(&self, kind: FeedKind) -> bool {
        self.feeds.contains_key(&FeedId::Data(kind))
    }

    fn unavailable(symbol: &Symbol, kind: FeedKind) -> Rejection {
        Rejection {
            symbol: symbol.to_string(),
            code: ErrorCode::FeedUnavailable,
            message: format!("the {} feed is not enabled", kind.as_str()),
        }
    }

    /// Makes sure `symbol` has an entry (and a throttle); `Err` when no enabled feed carries it.
    fn ensure_symbol(&mut self, symbol: &Symbol, ctx: &mut Context<Self>) -> Result<(), Rejection> {
        if let Some(entry) = self.symbols.get_mut(symbol) {
            if let Some(handle) = entry.release.take() {
                ctx.cancel_future(handle);
                debug!("registry: {symbol} is wanted again within its grace period");
            }
            return Ok(());
        }
        let feed = FeedKind::for_class(symbol.class());
        if !self.has_feed(feed) {
            return Err(Self::unavailable(symbol, feed));
        }
        let throttle = SymbolThrottle::new(
            symbol.clone(),
            self.config.throttle.clone(),
            self.quotes.clone(),
        )
        .start();
        self.symbols.insert(
            symbol.clone(),
            SymbolEntry {
                feed,
                throttle,
                sessions: HashMap::new(),
                pins: BTreeSet::new(),
                release: None,
                upstream: ChannelMask::EMPTY,
            },
        );
        Ok(())
    }

    /// Recomputes what `symbol` needs upstream; marks its feed dirty on change, and starts the
    /// grace timer when nothing holds it any more.
    fn refresh_symbol(&mut self, symbol: &Symbol, ctx: &mut Context<Self>) {
        let grace = self.config.unsubscribe_grace;
        let Some(entry) = self.symbols.get_mut(symbol) else {
            return;
        };
        if entry.unused() {
            if entry.release.is_none() {
                let s = symbol.clone();
                entry.release = Some(ctx.run_later(grace, move |act, ctx| act.release(&s, ctx)));
            }
            return;
        }
        let wanted = entry.interest();
        if wanted != entry.upstream {
            entry.upstream = wanted;
            let feed = entry.feed;
            self.mark_dirty(feed, ctx);
        }
    }

    /// The grace period ended: drop the symbol if still unused.
    fn release(&mut self, symbol: &Symbol, ctx: &mut Context<Self>) {
        if !self.symbols.get(symbol).is_some_and(SymbolEntry::unused) {
            return;
        }
        if let Some(entry) = self.symbols.remove(symbol) {
            info!("registry: releasing {symbol} (no subscribers)");
            entry.throttle.do_send(StopThrottle);
            self.mark_dirty(entry.feed, ctx);
        }
    }

    fn mark_dirty(&mut self, feed: FeedKind, ctx: &mut Context<Self>) {
        self.dirty.insert(feed);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(FLUSH_DELAY, |act, _| act.flush());
        }
    }

    /// The whole desired set and routing table of `feed`.
    fn desired(&self, feed: FeedKind) -> (SubscriptionSet, Routes) {
        let mut desired = SubscriptionSet::new();
        let mut routes = HashMap::new();
        if feed == FeedKind::News {
            let star = Symbol::wildcard();
            if self.news.get(&star).is_some_and(|s| !s.is_empty()) {
                desired.insert(Channel::News, star);
            } else {
                for symbol in self.news.keys() {
                    desired.insert(Channel::News, symbol.clone());
                }
            }
            return (desired, Routes::default());
        }
        for (symbol, s) in self.symbols.iter().filter(|(_, s)| s.feed == feed) {
            for channel in upstream_channels(feed, s.upstream) {
                desired.insert(channel, symbol.clone());
            }
            routes.insert(symbol.clone(), s.throttle.clone().recipient());
        }
        (desired, Routes::new(routes))
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
            let (desired, routes) = self.desired(feed);
            debug!(
                "registry: feed {} now wants {} streams",
                feed.as_str(),
                desired.len()
            );
            target.do_send(SetSubscriptions { desired, routes });
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

    /// Hands a data frame to sessions without blocking (a full mailbox counts a drop).
    fn deliver_to<'a>(
        &self,
        sessions: impl Iterator<Item = &'a SessionId>,
        key: &DeliverKey,
        frame: &ByteString,
    ) {
        for id in sessions {
            if let Some(s) = self.sessions.get(id) {
                let msg = Deliver {
                    key: key.clone(),
                    frame: frame.clone(),
                    batch: None,
                };
                if let Err(SendError::Full(_)) = s.subscriber.deliver.try_send(msg) {
                    s.subscriber
                        .stats
                        .mailbox_drops
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    /// Subscribes a session to `symbol` on the market channels of `mask`.
    fn add_market(
        &mut self,
        session: SessionId,
        symbol: &Symbol,
        mask: ChannelMask,
        ctx: &mut Context<Self>,
    ) -> Result<(), Rejection> {
        self.ensure_symbol(symbol, ctx)?;
        let Some(sess) = self.sessions.get_mut(&session) else {
            return Ok(());
        };
        let held = sess.symbols.entry(symbol.clone()).or_default();
        *held = held.union(mask);
        let market = held.intersect(ChannelMask::MARKET);
        let subscriber = sess.subscriber.clone();
        self.set_member(symbol, session, market, subscriber);
        self.refresh_symbol(symbol, ctx);
        Ok(())
    }

    /// Sets the market channels `session` receives from `symbol`'s throttle (none removes it).
    fn set_member(
        &mut self,
        symbol: &Symbol,
        session: SessionId,
        market: ChannelMask,
        subscriber: Subscriber,
    ) {
        let Some(entry) = self.symbols.get_mut(symbol) else {
            return;
        };
        if market.is_empty() {
            entry.sessions.remove(&session);
            entry.throttle.do_send(RemoveSubscriber { session });
        } else {
            entry.sessions.insert(session, market);
            entry.throttle.do_send(AddSubscriber {
                session,
                channels: market,
                subscriber,
            });
        }
    }

    /// Subscribes a session to news for `symbol` (or `*`).
    fn add_news(
        &mut self,
        session: SessionId,
        symbol: &Symbol,
        ctx: &mut Context<Self>,
    ) -> Result<(), Rejection> {
        if !self.has_feed(FeedKind::News) {
            return Err(Self::unavailable(symbol, FeedKind::News));
        }
        if let Some(sess) = self.sessions.get_mut(&session) {
            let held = sess.symbols.entry(symbol.clone()).or_default();
            *held = held.union(ChannelMask::NEWS);
        }
        if self.news.entry(symbol.clone()).or_default().insert(session) {
            self.mark_dirty(FeedKind::News, ctx);
        }
        Ok(())
    }

    /// Removes `mask` of `symbols` from a session.
    fn drop_interest(
        &mut self,
        session: SessionId,
        symbols: &[Symbol],
        mask: ChannelMask,
        ctx: &mut Context<Self>,
    ) {
        if mask.contains(ClientChannel::Positions) {
            self.positions.remove(&session);
        }
        for symbol in symbols {
            let Some(sess) = self.sessions.get_mut(&session) else {
                return;
            };
            let Some(held) = sess.symbols.get(symbol).copied() else {
                continue;
            };
            let left = held.minus(mask);
            if left.is_empty() {
                sess.symbols.remove(symbol);
            } else {
                sess.symbols.insert(symbol.clone(), left);
            }
            let subscriber = sess.subscriber.clone();
            if held.contains(ClientChannel::News) && !left.contains(ClientChannel::News) {
                if let Some(set) = self.news.get_mut(symbol) {
                    set.remove(&session);
                    if set.is_empty() {
                        self.news.remove(symbol);
                    }
                    self.mark_dirty(FeedKind::News, ctx);
                }
            }
            let market_left = left.intersect(ChannelMask::MARKET);
            if held.intersect(ChannelMask::MARKET) == market_left {
                continue;
            }
            self.set_member(symbol, session, market_left, subscriber);
            self.refresh_symbol(symbol, ctx);
        }
    }

    fn pin(
        &mut self,
        symbols: Vec<Symbol>,
        owner: &PinOwner,
        ctx: &mut Context<Self>,
    ) -> SubscribeOutcome {
        let mut outcome = SubscribeOutcome::default();
        let mut rest_pins = self
            .symbols
            .values()
            .filter(|s| s.pins.contains(&PinOwner::Rest))
            .count();
        for symbol in symbols {
            let already = self
                .symbols
                .get(&symbol)
                .is_some_and(|s| s.pins.contains(owner));
            if *owner == PinOwner::Rest && !already && rest_pins >= self.config.max_pinned {
                outcome.rejected.push(Rejection {
                    symbol: symbol.to_string(),
                    code: ErrorCode::TooManySymbols,
                    message: format!("at most {} symbols may be pinned", self.config.max_pinned),
                });
                continue;
            }
            if let Err(rejection) = self.ensure_symbol(&symbol, ctx) {
                outcome.rejected.push(rejection);
                continue;
            }
            if let Some(entry) = self.symbols.get_mut(&symbol) {
                if entry.pins.insert(owner.clone()) && *owner == PinOwner::Rest {
                    rest_pins += 1;
                }
            }
            self.refresh_symbol(&symbol, ctx);
            outcome.accepted.push(symbol);
        }
        outcome
    }

    fn unpin(
        &mut self,
        symbols: &[Symbol],
        owner: &PinOwner,
        ctx: &mut Context<Self>,
    ) -> Vec<Symbol> {
        let mut released = Vec::new();
        for symbol in symbols {
            if let Some(entry) = self.symbols.get_mut(symbol) {
                if entry.pins.remove(owner) {
                    released.push(symbol.clone());
                    self.refresh_symbol(symbol, ctx);
                }
            }
        }
        released
    }

    /// Drops quote-cache entries of released symbols once they are stale.
    fn sweep(&mut self) {
        let stale_after = self.config.throttle.stale_after;
        let now = Timestamp::now();
        let active = &self.symbols;
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
    }
}

impl Handler<RegisterFeed> for Registry {
    type Result = ();

    fn handle(&mut self, msg: RegisterFeed, _: &mut Context<Self>) {
        self.feeds.insert(
            msg.id,
            FeedEntry {
                subscriptions: msg.subscriptions,
                stop: msg.stop,
                counters: msg.counters,
                status: msg.status,
            },
        );
    }
}

impl Handler<Connect> for Registry {
    type Result = MessageResult<Connect>;

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            msg.commands.do_send(SessionCommand::Close {
                code: 1001,
                reason: "server shutting down".into(),
            });
        }
        self.sessions.insert(
            msg.session,
            SessionEntry {
                subscriber: msg.subscriber,
                commands: msg.commands,
                symbols: HashMap::new(),
            },
        );
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
        let Some(session) = self.sessions.get(&msg.session) else {
            return;
        };
        let symbols: Vec<Symbol> = session.symbols.keys().cloned().collect();
        self.drop_interest(msg.session, &symbols, ChannelMask::ALL, ctx);
        self.sessions.remove(&msg.session);
        debug!(
            "registry: session {} gone, released {} symbols",
            msg.session,
            symbols.len()
        );
    }
}

impl Handler<Subscribe> for Registry {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let mut outcome = SubscribeOutcome::default();
        if !self.sessions.contains_key(&msg.session) {
            return MessageResult(outcome);
        }
        if msg.channels.contains(ClientChannel::Positions) {
            self.positions.insert(msg.session);
        }
        let market = msg.channels.intersect(ChannelMask::MARKET);
        let news = msg.channels.contains(ClientChannel::News);
        for symbol in msg.symbols {
            let mut errors = Vec::new();
            let mut ok = false;
            if !market.is_empty() && !symbol.is_wildcard() {
                match self.add_market(msg.session, &symbol, market, ctx) {
                    Ok(()) => ok = true,
                    Err(r) => errors.push(r),
                }
            }
            if news {
                match self.add_news(msg.session, &symbol, ctx) {
                    Ok(()) => ok = true,
                    Err(r) => errors.push(r),
                }
            }
            if ok {
                outcome.accepted.push(symbol);
            } else {
                outcome.rejected.extend(errors.into_iter().take(1));
            }
        }
        MessageResult(outcome)
    }
}

impl Handler<Unsubscribe> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        self.drop_interest(msg.session, &msg.symbols, msg.channels, ctx);
    }
}

impl Handler<Pin> for Registry {
    type Result = MessageResult<Pin>;

    fn handle(&mut self, msg: Pin, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.pin(msg.symbols, &msg.owner, ctx))
    }
}

impl Handler<Unpin> for Registry {
    type Result = MessageResult<Unpin>;

    fn handle(&mut self, msg: Unpin, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.unpin(&msg.symbols, &msg.owner, ctx))
    }
}

impl Handler<SyncPins> for Registry {
    type Result = MessageResult<SyncPins>;

    fn handle(&mut self, msg: SyncPins, ctx: &mut Context<Self>) -> Self::Result {
        let stale: Vec<Symbol> = self
            .symbols
            .iter()
            .filter(|(s, e)| e.pins.contains(&msg.owner) && !msg.symbols.contains(s))
            .map(|(s, _)| s.clone())
            .collect();
        if !stale.is_empty() {
            info!(
                "registry: {} no longer holds {} symbols; releasing them",
                msg.owner,
                stale.len()
            );
        }
        self.unpin(&stale, &msg.owner, ctx);
        MessageResult(self.pin(msg.symbols, &msg.owner, ctx))
    }
}

impl Handler<FeedStateChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: FeedStateChanged, _: &mut Context<Self>) {
        let status = msg.status;
        let Some(entry) = self.feeds.get_mut(&status.feed) else {
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
        let mut recipients: HashSet<SessionId> = self
            .news
            .get(&Symbol::wildcard())
            .cloned()
            .unwrap_or_default();
        for s in &article.symbols {
            if let Some(set) = self.news.get(s.as_str()) {
                recipients.extend(set.iter().copied());
            }
        }
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
        self.deliver_to(self.positions.iter(), &msg.key, &msg.frame);
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
        let mut per_session: HashMap<SessionId, Vec<Symbol>> = HashMap::new();
        for symbol in &msg.symbols {
            let holders: Vec<SessionId> = if msg.feed == FeedKind::News {
                self.news
                    .remove(symbol)
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default()
            } else {
                match self.symbols.remove(symbol) {
                    Some(entry) => {
                        entry.throttle.do_send(StopThrottle);
                        if !entry.pins.is_empty() {
                            warn!("registry: pinned symbol {symbol} was refused upstream and is released");
                        }
                        entry.sessions.into_keys().collect()
                    }
                    None => Vec::new(),
                }
            };
            for id in holders {
                if let Some(sess) = self.sessions.get_mut(&id) {
                    sess.symbols.remove(symbol);
                }
                per_session.entry(id).or_default().push(symbol.clone());
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
        self.mark_dirty(msg.feed, ctx);
    }
}

impl Handler<GetStatus> for Registry {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let feeds = self
            .feeds
            .values()
            .map(|f| FeedReport {
                status: f.status.clone(),
                counters: f.counters.snapshot(),
            })
            .collect();
        let mut symbols: Vec<SymbolReport> = self
            .symbols
            .iter()
            .map(|(symbol, e)| SymbolReport {
                symbol: symbol.clone(),
                feed: e.feed,
                sessions: e.sessions.len(),
                pinned: !e.pins.is_empty(),
                pinned_by: e.pins.iter().cloned().collect(),
                releasing: e.release.is_some(),
            })
            .collect();
        symbols.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        let mut sessions: Vec<SessionSnapshot> = self
            .sessions
            .values()
            .map(|s| s.subscriber.stats.snapshot())
            .collect();
        sessions.sort_by_key(|s| s.id);
        let pinned = symbols
            .iter()
            .filter(|s| s.pinned)
            .map(|s| s.symbol.clone())
            .collect();
        MessageResult(RegistryStatus {
            feeds,
            throttles: self.symbols.len(),
            symbols,
            sessions,
            pinned,
            cached_quotes: self.quotes.len(),
            news: self
                .news
                .iter()
                .map(|(s, set)| (s.to_string(), set.len()))
                .collect(),
            positions_subscribers: self.positions.len(),
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
    fn browser_channels_map_to_the_channels_each_stream_offers() {
        let quotes = ChannelMask::QUOTES;
        assert_eq!(
            upstream_channels(FeedKind::Stocks, quotes),
            [Channel::Quotes, Channel::Trades]
        );
        let bars = ChannelMask::of(&[ClientChannel::Bars]);
        assert_eq!(
            upstream_channels(FeedKind::Crypto, bars),
            [Channel::Bars, Channel::UpdatedBars, Channel::DailyBars]
        );
        assert!(
            upstream_channels(FeedKind::Options, bars).is_empty(),
            "options have no bars"
        );
        let books = ChannelMask::of(&[ClientChannel::Orderbooks]);
        assert_eq!(
            upstream_channels(FeedKind::Crypto, books),
            [Channel::Orderbooks]
        );
        assert!(upstream_channels(FeedKind::Stocks, books).is_empty());
        assert!(upstream_channels(FeedKind::Stocks, ChannelMask::EMPTY).is_empty());
    }
}
