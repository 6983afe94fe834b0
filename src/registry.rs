//! `Registry`: the single owner of who wants what.
//!
//! Owns: every session's subscriptions, server-side pins, one [`SymbolThrottle`] per symbol in use,
//! the desired upstream set and routing table per feed, and each feed's last reported status.
//! Talks to: sessions (connect/subscribe/unsubscribe requests in, status broadcasts and close
//! commands out), REST handlers (pins, status), feeds (status changes in, desired sets out) and
//! throttles (subscriber changes). Lives as long as the daemon.
//!
//! Interest is reference-counted per symbol: the first subscriber (session or pin) creates the
//! throttle and adds the symbol upstream; when the last one leaves, the symbol stays for a grace
//! period (a page reload must not churn Alpaca) and is then released. Changes are coalesced and
//! sent to a feed as its whole desired set a few milliseconds later.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use log::{debug, info};
use serde::Serialize;

use crate::browser::{self, ChannelMask, ClientChannel, ErrorCode, Rejection};
use crate::quote_book::QuoteBook;
use crate::session::{SessionCommand, SessionId, SessionSnapshot, Subscriber};
use crate::symbol::Symbol;
use crate::throttle::{
    AddSubscriber, RemoveSubscriber, StopThrottle, SymbolThrottle, ThrottleConfig,
};
use crate::time::Timestamp;
use crate::upstream::feed::{Routes, SetSubscriptions, StopFeed};
use crate::upstream::protocol::{Channel, SubscriptionSet};
use crate::upstream::{FeedCounters, FeedCountersSnapshot, FeedKind, FeedState, FeedStatus};

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

/// Keep symbols streaming with no browser attached (REST `POST /api/v1/subscriptions`).
#[derive(Message)]
#[rtype(result = "SubscribeOutcome")]
pub struct Pin {
    pub symbols: Vec<Symbol>,
}

/// Release pins (REST `DELETE /api/v1/subscriptions`); answers the symbols that were pinned.
#[derive(Message)]
#[rtype(result = "Vec<Symbol>")]
pub struct Unpin {
    pub symbols: Vec<Symbol>,
}

/// A feed's status changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FeedStateChanged {
    pub status: FeedStatus,
}

/// Make a feed known to the registry (at start-up, after the feed actor exists).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterFeed {
    pub kind: FeedKind,
    pub subscriptions: Recipient<SetSubscriptions>,
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
}

impl RegistryStatus {
    /// Every enabled feed authenticated and subscribed.
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
                let mut reason = format!("feed {}: {}", s.feed.as_str(), s.state.browser_status());
                if s.consecutive_failures > 0 {
                    reason.push_str(&format!(" (reconnect attempt {})", s.consecutive_failures));
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
    subscriptions: Recipient<SetSubscriptions>,
    stop: Recipient<StopFeed>,
    counters: Arc<FeedCounters>,
    status: FeedStatus,
}

struct SymbolEntry {
    feed: FeedKind,
    throttle: Addr<SymbolThrottle>,
    sessions: HashMap<SessionId, ChannelMask>,
    pinned: bool,
    /// The grace timer, while no one holds the symbol.
    release: Option<SpawnHandle>,
    /// What is subscribed upstream for it; kept through the grace period.
    upstream: ChannelMask,
}

impl SymbolEntry {
    fn interest(&self) -> ChannelMask {
        let pins = if self.pinned {
            ChannelMask::QUOTES
        } else {
            ChannelMask::EMPTY
        };
        self.sessions.values().fold(pins, |acc, m| acc.union(*m))
    }

    fn unused(&self) -> bool {
        self.sessions.is_empty() && !self.pinned
    }
}

struct SessionEntry {
    subscriber: Subscriber,
    commands: Recipient<SessionCommand>,
    symbols: HashMap<Symbol, ChannelMask>,
}

/// The registry actor.
pub struct Registry {
    config: RegistryConfig,
    book: QuoteBook,
    feeds: BTreeMap<FeedKind, FeedEntry>,
    symbols: HashMap<Symbol, SymbolEntry>,
    sessions: HashMap<SessionId, SessionEntry>,
    /// Feeds whose desired set changed since the last flush.
    dirty: BTreeSet<FeedKind>,
    flush_scheduled: bool,
    shutting_down: bool,
}

/// Upstream channels behind a browser channel mask. Prices need trades too, for `last_price`.
fn upstream_channels(mask: ChannelMask) -> Vec<Channel> {
    let mut out = Vec::new();
    for c in mask.channels() {
        match c {
            ClientChannel::Quotes => out.extend([Channel::Quotes, Channel::Trades]),
            ClientChannel::Trades => out.push(Channel::Trades),
            ClientChannel::Bars => {
                out.extend([Channel::Bars, Channel::UpdatedBars, Channel::DailyBars])
            }
        }
    }
    out
}

impl Registry {
    pub fn new(config: RegistryConfig, book: QuoteBook) -> Self {
        Registry {
            config,
            book,
            feeds: BTreeMap::new(),
            symbols: HashMap::new(),
            sessions: HashMap::new(),
            dirty: BTreeSet::new(),
            flush_scheduled: false,
            shutting_down: false,
        }
    }

    /// Makes sure `symbol` has an entry (and a throttle); `Err` when no feed carries it.
    fn ensure_symbol(&mut self, symbol: &Symbol, ctx: &mut Context<Self>) -> Result<(), Rejection> {
        if let Some(entry) = self.symbols.get_mut(symbol) {
            if let Some(handle) = entry.release.take() {
                ctx.cancel_future(handle);
                debug!("registry: {symbol} is wanted again within its grace period");
            }
            return Ok(());
        }
        let class = symbol.class();
        let feed = FeedKind::for_class(class)
            .filter(|f| self.feeds.contains_key(f))
            .ok_or_else(|| Rejection {
                symbol: symbol.to_string(),
                code: ErrorCode::FeedUnavailable,
                message: format!("no enabled feed carries {class:?} symbols"),
            })?;
        let throttle = SymbolThrottle::new(
            symbol.clone(),
            self.config.throttle.clone(),
            self.book.clone(),
        )
        .start();
        self.symbols.insert(
            symbol.clone(),
            SymbolEntry {
                feed,
                throttle,
                sessions: HashMap::new(),
                pinned: false,
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
        let Some(entry) = self.symbols.get(symbol) else {
            return;
        };
        if !entry.unused() {
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

    /// Sends each changed feed its whole desired set and routing table.
    fn flush(&mut self) {
        self.flush_scheduled = false;
        for feed in std::mem::take(&mut self.dirty) {
            let Some(entry) = self.feeds.get(&feed) else {
                continue;
            };
            let mut desired = SubscriptionSet::new();
            let mut routes = HashMap::new();
            for (symbol, s) in self.symbols.iter().filter(|(_, s)| s.feed == feed) {
                for channel in upstream_channels(s.upstream) {
                    desired.insert(channel, symbol.clone());
                }
                routes.insert(symbol.clone(), s.throttle.clone().recipient());
            }
            debug!(
                "registry: feed {} now wants {} streams",
                feed.as_str(),
                desired.len()
            );
            entry.subscriptions.do_send(SetSubscriptions {
                desired,
                routes: Routes::new(routes),
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

    /// Removes `mask` of `symbols` from a session (all channels for `ChannelMask` of everything).
    fn drop_interest(
        &mut self,
        session: SessionId,
        symbols: &[Symbol],
        mask: ChannelMask,
        ctx: &mut Context<Self>,
    ) {
        for symbol in symbols {
            let Some(sess) = self.sessions.get_mut(&session) else {
                return;
            };
            let Some(held) = sess.symbols.get(symbol).copied() else {
                continue;
            };
            let left = held.minus(mask);
            let subscriber = sess.subscriber.clone();
            if left.is_empty() {
                sess.symbols.remove(symbol);
            } else {
                sess.symbols.insert(symbol.clone(), left);
            }
            if let Some(entry) = self.symbols.get_mut(symbol) {
                if left.is_empty() {
                    entry.sessions.remove(&session);
                    entry.throttle.do_send(RemoveSubscriber { session });
                } else {
                    entry.sessions.insert(session, left);
                    entry.throttle.do_send(AddSubscriber {
                        session,
                        channels: left,
                        subscriber,
                    });
                }
            }
            self.refresh_symbol(symbol, ctx);
        }
    }

    /// Drops quote-cache entries of released symbols once they are stale.
    fn sweep(&mut self) {
        let stale_after = self.config.throttle.stale_after;
        let now = Timestamp::now();
        let active = &self.symbols;
        self.book.retain(|symbol, price| {
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
            msg.kind,
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
        let all = ChannelMask::of(&ClientChannel::ALL);
        self.drop_interest(msg.session, &symbols, all, ctx);
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
        let Some(subscriber) = self
            .sessions
            .get(&msg.session)
            .map(|s| s.subscriber.clone())
        else {
            return MessageResult(outcome);
        };
        for symbol in msg.symbols {
            if let Err(rejection) = self.ensure_symbol(&symbol, ctx) {
                outcome.rejected.push(rejection);
                continue;
            }
            let Some(sess) = self.sessions.get_mut(&msg.session) else {
                break;
            };
            let mask = sess
                .symbols
                .get(&symbol)
                .copied()
                .unwrap_or_default()
                .union(msg.channels);
            sess.symbols.insert(symbol.clone(), mask);
            if let Some(entry) = self.symbols.get_mut(&symbol) {
                entry.sessions.insert(msg.session, mask);
                entry.throttle.do_send(AddSubscriber {
                    session: msg.session,
                    channels: mask,
                    subscriber: subscriber.clone(),
                });
            }
            self.refresh_symbol(&symbol, ctx);
            outcome.accepted.push(symbol);
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
        let mut outcome = SubscribeOutcome::default();
        let mut pinned = self.symbols.values().filter(|s| s.pinned).count();
        for symbol in msg.symbols {
            let already = self.symbols.get(&symbol).is_some_and(|s| s.pinned);
            if !already && pinned >= self.config.max_pinned {
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
                if !entry.pinned {
                    entry.pinned = true;
                    pinned += 1;
                }
            }
            self.refresh_symbol(&symbol, ctx);
            outcome.accepted.push(symbol);
        }
        MessageResult(outcome)
    }
}

impl Handler<Unpin> for Registry {
    type Result = MessageResult<Unpin>;

    fn handle(&mut self, msg: Unpin, ctx: &mut Context<Self>) -> Self::Result {
        let mut released = Vec::new();
        for symbol in msg.symbols {
            if let Some(entry) = self.symbols.get_mut(&symbol).filter(|e| e.pinned) {
                entry.pinned = false;
                released.push(symbol.clone());
                self.refresh_symbol(&symbol, ctx);
            }
        }
        MessageResult(released)
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
                pinned: e.pinned,
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
            cached_quotes: self.book.len(),
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
    fn prices_need_quotes_and_trades_upstream() {
        assert_eq!(
            upstream_channels(ChannelMask::QUOTES),
            [Channel::Quotes, Channel::Trades]
        );
        let bars = ChannelMask::of(&[ClientChannel::Bars]);
        assert_eq!(
            upstream_channels(bars),
            [Channel::Bars, Channel::UpdatedBars, Channel::DailyBars]
        );
        assert!(upstream_channels(ChannelMask::EMPTY).is_empty());
    }
}
