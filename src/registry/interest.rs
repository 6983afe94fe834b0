//! Who wants what, as plain data: the registry's bookkeeping without the actor around it.
//!
//! Owns: every session's subscriptions (market channels per symbol, news per symbol or `*`, the
//! positions channel), server-side pins with their owners, and per symbol the sessions holding
//! it, how many sessions on each hub want each channel, what is subscribed upstream and whether it
//! is in its grace period. Every change reports what the actor must do about it as a [`Change`]:
//! start or stop a throttle, tell a throttle what a hub now wants, arm a grace timer, resend a
//! feed's desired set. Unit tests drive it with no actor system.
//!
//! Market interest is reference-counted per symbol: the first holder (session or pin) creates it
//! on the feed its shape picks (OCC option → options, `BASE/QUOTE` → crypto, otherwise stocks);
//! when the last one leaves it stays for a grace period (a page reload must not churn Alpaca) and is
//! then released — unless someone took it again, which the grace generation tells.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};

use super::PinOwner;
use crate::auth::Scopes;
use crate::browser::{ErrorCode, Rejection};
use crate::downstream::delivery::{HubId, SessionId};
use crate::symbol::Symbol;
use crate::vocab::{Channel, ChannelMask, ClientChannel, SubscriptionSet};

use crate::vocab::FeedKind;

/// What the registry actor must do after a change of interest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A symbol gained its first holder: start its throttle.
    Created(Symbol),
    /// What `hub`'s sessions want of `symbol` changed (empty: nothing any more).
    Hub {
        symbol: Symbol,
        hub: HubId,
        channels: ChannelMask,
    },
    /// Nobody holds `symbol`: release it after the grace period unless `generation` changed.
    Grace { symbol: Symbol, generation: u64 },
    /// `symbol` is gone (released or refused upstream): stop its throttle.
    Removed(Symbol),
    /// The desired upstream set of this feed changed.
    FeedChanged(FeedKind),
}

/// The answer to a subscribe or pin.
#[derive(Debug, Default, PartialEq)]
pub struct SubscribeOutcome {
    pub accepted: Vec<Symbol>,
    pub rejected: Vec<Rejection>,
}

/// Interest in one symbol's market data.
#[derive(Debug)]
pub struct SymbolInterest {
    pub feed: FeedKind,
    /// Market channels per session.
    sessions: HashMap<SessionId, ChannelMask>,
    /// Per hub, how many of its sessions want each channel (indexed by `ClientChannel as usize`).
    hubs: HashMap<HubId, [u32; ClientChannel::ALL.len()]>,
    /// Who pins it, each until when (`None`: until released).
    pub pins: BTreeMap<PinOwner, Option<Instant>>,
    /// In its grace period (no holder left), with the generation of its timer.
    pub releasing: Option<u64>,
    /// What is subscribed upstream for it; kept through the grace period.
    pub upstream: ChannelMask,
}

impl SymbolInterest {
    fn wanted(&self) -> ChannelMask {
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

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

fn mask_of(counts: &[u32; ClientChannel::ALL.len()]) -> ChannelMask {
    let channels: Vec<ClientChannel> = ClientChannel::ALL
        .into_iter()
        .filter(|c| counts[*c as usize] > 0)
        .collect();
    ChannelMask::of(&channels)
}

#[derive(Debug)]
struct SessionInterest {
    hub: HubId,
    /// Market and news channels per symbol (news symbols include `*`).
    symbols: HashMap<Symbol, ChannelMask>,
}

/// The bookkeeping.
#[derive(Debug)]
pub struct Interest {
    symbols: HashMap<Symbol, SymbolInterest>,
    sessions: HashMap<SessionId, SessionInterest>,
    /// News subscriptions: symbol or `*` → sessions.
    news: HashMap<Symbol, HashSet<SessionId>>,
    /// Sessions on the positions channel, with the scopes that say which accounts they see.
    positions: HashMap<SessionId, Arc<Scopes>>,
    /// Most symbols REST callers may pin.
    max_pinned: usize,
    /// Most of them one client may pin.
    max_pins_per_client: usize,
    /// Most distinct symbols held at once, over every session and pin.
    max_symbols: usize,
    /// Grace timers issued so far.
    generation: u64,
    /// Pins with a deadline (an upper bound: what the next expiry sweep looks for).
    expiring: usize,
    /// SDK programs: each one's stream and its (channel, symbol) pairs, exactly as asked (no
    /// conflation, no throttle; `*` allowed).
    raw: HashMap<SessionId, (FeedKind, SubscriptionSet)>,
    /// Per stream, how many SDK programs hold each (channel, symbol).
    raw_counts: HashMap<FeedKind, HashMap<(Channel, Symbol), u32>>,
}

/// Upstream channels behind browser market channels on `feed`. Prices need trades too, for
/// `last_price`; channels a stream does not offer (bars on options) are left out.
pub fn upstream_channels(feed: FeedKind, mask: ChannelMask) -> Vec<Channel> {
    let mut out = Vec::new();
    for c in mask.channels() {
        match c {
            ClientChannel::Quotes => out.extend([Channel::Quotes, Channel::Trades]),
            ClientChannel::Trades => out.push(Channel::Trades),
            ClientChannel::Bars => {
                out.extend([Channel::Bars, Channel::UpdatedBars, Channel::DailyBars])
            }
            ClientChannel::Orderbooks => out.push(Channel::Orderbooks),
            ClientChannel::Statuses => out.extend([Channel::Statuses, Channel::Lulds]),
            ClientChannel::News | ClientChannel::Positions => {}
        }
    }
    out.retain(|c| feed.channels().contains(c));
    out.dedup();
    out
}

fn unavailable(symbol: &Symbol, kind: FeedKind) -> Rejection {
    Rejection {
        symbol: symbol.to_string(),
        code: ErrorCode::FeedUnavailable,
        message: format!("the {} feed is not enabled", kind.as_str()),
    }
}

impl Interest {
    pub fn new(max_pinned: usize) -> Self {
        Interest {
            symbols: HashMap::new(),
            sessions: HashMap::new(),
            news: HashMap::new(),
            positions: HashMap::new(),
            max_pinned,
            max_pins_per_client: usize::MAX,
            max_symbols: usize::MAX,
            generation: 0,
            expiring: 0,
            raw: HashMap::new(),
            raw_counts: HashMap::new(),
        }
    }

    /// Limits the distinct symbols held at once, over every session and pin (a new symbol past it
    /// is refused; those already held are not affected).
    pub fn with_max_symbols(mut self, max_symbols: usize) -> Self {
        self.max_symbols = max_symbols;
        self
    }

    /// Limits the symbols one client may pin through REST, so no client takes the whole quota.
    pub fn with_max_pins_per_client(mut self, max: usize) -> Self {
        self.max_pins_per_client = max;
        self
    }

    /// Sets everything an SDK program holds on its stream (replacing what it held). The upstream
    /// set changes only when a pair gains its first holder or loses its last.
    pub fn set_raw(
        &mut self,
        session: SessionId,
        feed: FeedKind,
        set: SubscriptionSet,
        out: &mut Vec<Change>,
    ) {
        let old = if set.is_empty() {
            self.raw.remove(&session)
        } else {
            self.raw.insert(session, (feed, set.clone()))
        };
        let mut changed = Vec::new();
        if let Some((old_feed, old_set)) = old {
            let counts = self.raw_counts.entry(old_feed).or_default();
            for (channel, symbols) in old_set.iter() {
                for symbol in symbols {
                    let key = (channel, symbol.clone());
                    if let Some(n) = counts.get_mut(&key) {
                        *n -= 1;
                        if *n == 0 {
                            counts.remove(&key);
                            changed.push(old_feed);
                        }
                    }
                }
            }
        }
        let counts = self.raw_counts.entry(feed).or_default();
        for (channel, symbols) in set.iter() {
            for symbol in symbols {
                let n = counts.entry((channel, symbol.clone())).or_insert(0);
                *n += 1;
                if *n == 1 {
                    changed.push(feed);
                }
            }
        }
        changed.sort();
        changed.dedup();
        out.extend(changed.into_iter().map(Change::FeedChanged));
    }

    /// The upstream refused `symbols` on `feed`: every SDK program lets them go. Answers which
    /// programs held which of them.
    pub fn refuse_raw(
        &mut self,
        feed: FeedKind,
        symbols: &[Symbol],
        out: &mut Vec<Change>,
    ) -> HashMap<SessionId, Vec<Symbol>> {
        let mut per_session = HashMap::new();
        let holders: Vec<(SessionId, SubscriptionSet)> = self
            .raw
            .iter()
            .filter(|(_, (f, set))| *f == feed && symbols.iter().any(|s| set.symbols().contains(s)))
            .map(|(id, (_, set))| (*id, set.without_symbols(symbols)))
            .collect();
        for (id, set) in holders {
            let held = self
                .raw
                .get(&id)
                .map(|(_, s)| s.symbols())
                .unwrap_or_default();
            per_session.insert(
                id,
                symbols
                    .iter()
                    .filter(|s| held.contains(*s))
                    .cloned()
                    .collect(),
            );
            self.set_raw(id, feed, set, out);
        }
        per_session
    }

    pub fn connect(&mut self, session: SessionId, hub: HubId) {
        self.sessions.insert(
            session,
            SessionInterest {
                hub,
                symbols: HashMap::new(),
            },
        );
    }

    /// A session ended: releases everything it held.
    pub fn disconnect(&mut self, session: SessionId, out: &mut Vec<Change>) -> usize {
        if let Some((feed, _)) = self.raw.get(&session) {
            let feed = *feed;
            self.set_raw(session, feed, SubscriptionSet::new(), out);
        }
        let Some(s) = self.sessions.get(&session) else {
            return 0;
        };
        let symbols: Vec<Symbol> = s.symbols.keys().cloned().collect();
        // ALL includes the positions channel.
        self.unsubscribe(session, &symbols, ChannelMask::ALL, out);
        self.sessions.remove(&session);
        symbols.len()
    }

    /// Subscribes a session to symbols on channels. `has_feed` says which feeds are running.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        symbols: Vec<Symbol>,
        channels: ChannelMask,
        has_feed: impl Fn(FeedKind) -> bool,
        out: &mut Vec<Change>,
    ) -> SubscribeOutcome {
        let mut outcome = SubscribeOutcome::default();
        if !self.sessions.contains_key(&session) {
            return outcome;
        }
        let market = channels.intersect(ChannelMask::MARKET);
        let news = channels.contains(ClientChannel::News);
        for symbol in symbols {
            let mut error = None;
            let mut ok = false;
            if !market.is_empty() && !symbol.is_wildcard() {
                match self.add_market(session, &symbol, market, &has_feed, out) {
                    Ok(()) => ok = true,
                    Err(r) => error = error.or(Some(r)),
                }
            }
            if news {
                match self.add_news(session, &symbol, &has_feed, out) {
                    Ok(()) => ok = true,
                    Err(r) => error = error.or(Some(r)),
                }
            }
            if ok {
                outcome.accepted.push(symbol);
            } else {
                outcome.rejected.extend(error);
            }
        }
        outcome
    }

    /// Removes `mask` of `symbols` from a session (harmless for what it does not hold).
    pub fn unsubscribe(
        &mut self,
        session: SessionId,
        symbols: &[Symbol],
        mask: ChannelMask,
        out: &mut Vec<Change>,
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
            let hub = sess.hub;
            if held.contains(ClientChannel::News) && !left.contains(ClientChannel::News) {
                if let Some(set) = self.news.get_mut(symbol) {
                    set.remove(&session);
                    if set.is_empty() {
                        self.news.remove(symbol);
                    }
                    out.push(Change::FeedChanged(FeedKind::News));
                }
            }
            let market_left = left.intersect(ChannelMask::MARKET);
            if held.intersect(ChannelMask::MARKET) == market_left {
                continue;
            }
            self.set_member(symbol, session, hub, market_left, out);
            self.refresh(symbol, out);
        }
    }

    /// Keeps symbols streaming with no browser attached, on behalf of `owner`, until `expires`
    /// (or until released). Pinning again replaces the deadline.
    pub fn pin(
        &mut self,
        symbols: Vec<Symbol>,
        owner: &PinOwner,
        expires: Option<Instant>,
        has_feed: impl Fn(FeedKind) -> bool,
        out: &mut Vec<Change>,
    ) -> SubscribeOutcome {
        let mut outcome = SubscribeOutcome::default();
        let by_client = |s: &SymbolInterest| s.pins.keys().any(PinOwner::is_client);
        let mut client_pins = self.symbols.values().filter(|s| by_client(s)).count();
        let mut own_pins = self
            .symbols
            .values()
            .filter(|s| s.pins.contains_key(owner))
            .count();
        for symbol in symbols {
            let counted = self.symbols.get(&symbol).is_some_and(by_client);
            let own = self
                .symbols
                .get(&symbol)
                .is_some_and(|s| s.pins.contains_key(owner));
            let refusal = if !owner.is_client() || own {
                None
            } else if own_pins >= self.max_pins_per_client {
                Some(format!(
                    "at most {} symbols may be pinned by one client",
                    self.max_pins_per_client
                ))
            } else if !counted && client_pins >= self.max_pinned {
                Some(format!("at most {} symbols may be pinned", self.max_pinned))
            } else {
                None
            };
            if let Some(message) = refusal {
                outcome.rejected.push(Rejection {
                    symbol: symbol.to_string(),
                    code: ErrorCode::TooManySymbols,
                    message,
                });
                continue;
            }
            if let Err(rejection) = self.ensure(&symbol, &has_feed, out) {
                outcome.rejected.push(rejection);
                continue;
            }
            if let Some(entry) = self.symbols.get_mut(&symbol) {
                entry.pins.insert(owner.clone(), expires);
                if owner.is_client() && !counted {
                    client_pins += 1;
                }
                if owner.is_client() && !own {
                    own_pins += 1;
                }
                if expires.is_some() {
                    self.expiring += 1;
                }
            }
            self.refresh(&symbol, out);
            outcome.accepted.push(symbol);
        }
        outcome
    }

    /// Releases `owner`'s pins of `symbols`; answers those it had pinned.
    pub fn unpin(
        &mut self,
        symbols: &[Symbol],
        owner: &PinOwner,
        out: &mut Vec<Change>,
    ) -> Vec<Symbol> {
        let mut released = Vec::new();
        for symbol in symbols {
            if let Some(entry) = self.symbols.get_mut(symbol) {
                if entry.pins.remove(owner).is_some() {
                    released.push(symbol.clone());
                    self.refresh(symbol, out);
                }
            }
        }
        released
    }

    /// Makes `owner`'s pins exactly `symbols`.
    pub fn sync_pins(
        &mut self,
        symbols: Vec<Symbol>,
        owner: &PinOwner,
        has_feed: impl Fn(FeedKind) -> bool,
        out: &mut Vec<Change>,
    ) -> SubscribeOutcome {
        let stale: Vec<Symbol> = self
            .symbols
            .iter()
            .filter(|(s, e)| e.pins.contains_key(owner) && !symbols.contains(s))
            .map(|(s, _)| s.clone())
            .collect();
        if !stale.is_empty() {
            info!(
                "registry: {owner} no longer holds {} symbols; releasing them",
                stale.len()
            );
        }
        self.unpin(&stale, owner, out);
        self.pin(symbols, owner, None, has_feed, out)
    }

    /// Releases every pin whose time ran out; answers them.
    pub fn expire_pins(&mut self, now: Instant, out: &mut Vec<Change>) -> Vec<(PinOwner, Symbol)> {
        if self.expiring == 0 {
            return Vec::new();
        }
        let mut expired = Vec::new();
        let mut left = 0;
        for (symbol, entry) in &mut self.symbols {
            entry.pins.retain(|owner, until| match until {
                Some(t) if *t <= now => {
                    expired.push((owner.clone(), symbol.clone()));
                    false
                }
                Some(_) => {
                    left += 1;
                    true
                }
                None => true,
            });
        }
        // An upper bound until the next sweep (re-pins and releases are not subtracted).
        self.expiring = left;
        for (_, symbol) in &expired {
            self.refresh(symbol, out);
        }
        expired
    }

    /// Who pins `symbol`.
    pub fn pinned_by(&self, symbol: &Symbol) -> impl Iterator<Item = &PinOwner> {
        self.symbols
            .get(symbol)
            .into_iter()
            .flat_map(|e| e.pins.keys())
    }

    /// A grace timer fired: drops the symbol if nobody took it since. Answers whether it did.
    pub fn release(&mut self, symbol: &Symbol, generation: u64, out: &mut Vec<Change>) -> bool {
        let due = self
            .symbols
            .get(symbol)
            .is_some_and(|e| e.unused() && e.releasing == Some(generation));
        if !due {
            return false;
        }
        if let Some(entry) = self.symbols.remove(symbol) {
            info!("registry: releasing {symbol} (no subscribers)");
            out.push(Change::Removed(symbol.clone()));
            out.push(Change::FeedChanged(entry.feed));
        }
        true
    }

    /// The upstream refused `symbols` on `feed`: they are dropped for everyone. Answers which
    /// sessions held which of them.
    pub fn refuse(
        &mut self,
        feed: FeedKind,
        symbols: &[Symbol],
        out: &mut Vec<Change>,
    ) -> HashMap<SessionId, Vec<Symbol>> {
        let mut per_session: HashMap<SessionId, Vec<Symbol>> = HashMap::new();
        for symbol in symbols {
            let holders: Vec<SessionId> = if feed == FeedKind::News {
                self.news
                    .remove(symbol)
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default()
            } else {
                match self.symbols.remove(symbol) {
                    Some(entry) => {
                        out.push(Change::Removed(symbol.clone()));
                        if !entry.pins.is_empty() {
                            warn!("registry: pinned symbol {symbol} was refused upstream and is released");
                        }
                        entry.sessions.into_keys().collect()
                    }
                    None => Vec::new(),
                }
            };
            // The refused feed's channels go; a session's other interest in the symbol (news on
            // a refused stock, or the stock under refused news) stays.
            let refused = if feed == FeedKind::News {
                ChannelMask::NEWS
            } else {
                ChannelMask::MARKET
            };
            for id in holders {
                if let Some(sess) = self.sessions.get_mut(&id) {
                    if let Some(held) = sess.symbols.get_mut(symbol) {
                        *held = held.minus(refused);
                        if held.is_empty() {
                            sess.symbols.remove(symbol);
                        }
                    }
                }
                per_session.entry(id).or_default().push(symbol.clone());
            }
        }
        out.push(Change::FeedChanged(feed));
        per_session
    }

    /// The whole desired upstream set of `feed`.
    pub fn desired(&self, feed: FeedKind) -> SubscriptionSet {
        let mut desired = SubscriptionSet::new();
        for (channel, symbol) in self
            .raw_counts
            .get(&feed)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            desired.insert(*channel, symbol.clone());
        }
        if feed == FeedKind::News {
            let star = Symbol::wildcard();
            if self.news.get(&star).is_some_and(|s| !s.is_empty()) {
                desired.insert(Channel::News, star);
            } else {
                for symbol in self.news.keys() {
                    desired.insert(Channel::News, symbol.clone());
                }
            }
            return desired;
        }
        for (symbol, s) in self.symbols.iter().filter(|(_, s)| s.feed == feed) {
            for channel in upstream_channels(feed, s.upstream) {
                desired.insert(channel, symbol.clone());
            }
        }
        desired
    }

    /// Symbols in use, with their interest.
    pub fn symbols(&self) -> impl Iterator<Item = (&Symbol, &SymbolInterest)> {
        self.symbols.iter()
    }

    pub fn symbol(&self, symbol: &Symbol) -> Option<&SymbolInterest> {
        self.symbols.get(symbol)
    }

    /// Sessions that want news of any of `symbols` (or of everything).
    pub fn news_recipients(&self, symbols: &[String]) -> HashSet<SessionId> {
        let mut recipients: HashSet<SessionId> = self
            .news
            .get(&Symbol::wildcard())
            .cloned()
            .unwrap_or_default();
        for s in symbols {
            if let Some(set) = self.news.get(s.as_str()) {
                recipients.extend(set.iter().copied());
            }
        }
        recipients
    }

    /// News subscriptions: symbol (or `*`) → number of sessions.
    pub fn news_counts(&self) -> impl Iterator<Item = (&Symbol, usize)> {
        self.news.iter().map(|(s, set)| (s, set.len()))
    }

    pub fn positions(&self) -> impl Iterator<Item = &SessionId> {
        self.positions.keys()
    }

    /// Sessions on the positions channel that may see `account`.
    pub fn positions_of<'a>(&'a self, account: &'a str) -> impl Iterator<Item = &'a SessionId> {
        self.positions
            .iter()
            .filter(move |(_, scopes)| scopes.account(account))
            .map(|(id, _)| id)
    }

    /// A session follows account events, of the accounts `scopes` allow (replacing what it saw
    /// before: a session that signs in again sees what its new scopes allow).
    pub fn follow_positions(&mut self, session: SessionId, scopes: Arc<Scopes>) {
        if self.sessions.contains_key(&session) {
            self.positions.insert(session, scopes);
        }
    }

    /// Makes sure `symbol` has an entry; `Err` when no enabled feed carries it.
    fn ensure(
        &mut self,
        symbol: &Symbol,
        has_feed: &impl Fn(FeedKind) -> bool,
        out: &mut Vec<Change>,
    ) -> Result<(), Rejection> {
        if let Some(entry) = self.symbols.get_mut(symbol) {
            if entry.releasing.take().is_some() {
                debug!("registry: {symbol} is wanted again within its grace period");
            }
            return Ok(());
        }
        let feed = FeedKind::for_class(symbol.class());
        if !has_feed(feed) {
            return Err(unavailable(symbol, feed));
        }
        if self.symbols.len() >= self.max_symbols {
            return Err(Rejection {
                symbol: symbol.to_string(),
                code: ErrorCode::TooManySymbols,
                message: format!(
                    "the daemon streams its maximum of {} symbols (registry.max_symbols)",
                    self.max_symbols
                ),
            });
        }
        self.symbols.insert(
            symbol.clone(),
            SymbolInterest {
                feed,
                sessions: HashMap::new(),
                hubs: HashMap::new(),
                pins: BTreeMap::new(),
                releasing: None,
                upstream: ChannelMask::EMPTY,
            },
        );
        out.push(Change::Created(symbol.clone()));
        Ok(())
    }

    fn add_market(
        &mut self,
        session: SessionId,
        symbol: &Symbol,
        mask: ChannelMask,
        has_feed: &impl Fn(FeedKind) -> bool,
        out: &mut Vec<Change>,
    ) -> Result<(), Rejection> {
        self.ensure(symbol, has_feed, out)?;
        let Some(sess) = self.sessions.get_mut(&session) else {
            return Ok(());
        };
        let held = sess.symbols.entry(symbol.clone()).or_default();
        *held = held.union(mask);
        let market = held.intersect(ChannelMask::MARKET);
        let hub = sess.hub;
        self.set_member(symbol, session, hub, market, out);
        self.refresh(symbol, out);
        Ok(())
    }

    fn add_news(
        &mut self,
        session: SessionId,
        symbol: &Symbol,
        has_feed: &impl Fn(FeedKind) -> bool,
        out: &mut Vec<Change>,
    ) -> Result<(), Rejection> {
        if !has_feed(FeedKind::News) {
            return Err(unavailable(symbol, FeedKind::News));
        }
        if let Some(sess) = self.sessions.get_mut(&session) {
            let held = sess.symbols.entry(symbol.clone()).or_default();
            *held = held.union(ChannelMask::NEWS);
        }
        if self.news.entry(symbol.clone()).or_default().insert(session) {
            out.push(Change::FeedChanged(FeedKind::News));
        }
        Ok(())
    }

    /// Sets the market channels `session` (on `hub`) receives from `symbol`; reports a change of
    /// what the hub as a whole wants.
    fn set_member(
        &mut self,
        symbol: &Symbol,
        session: SessionId,
        hub: HubId,
        market: ChannelMask,
        out: &mut Vec<Change>,
    ) {
        let Some(entry) = self.symbols.get_mut(symbol) else {
            return;
        };
        let old = entry.sessions.get(&session).copied().unwrap_or_default();
        if old == market {
            return;
        }
        if market.is_empty() {
            entry.sessions.remove(&session);
        } else {
            entry.sessions.insert(session, market);
        }
        let counts = entry
            .hubs
            .entry(hub)
            .or_insert([0; ClientChannel::ALL.len()]);
        let before = mask_of(counts);
        for c in old.channels() {
            counts[c as usize] = counts[c as usize].saturating_sub(1);
        }
        for c in market.channels() {
            counts[c as usize] += 1;
        }
        let after = mask_of(counts);
        if after.is_empty() {
            entry.hubs.remove(&hub);
        }
        if before != after {
            out.push(Change::Hub {
                symbol: symbol.clone(),
                hub,
                channels: after,
            });
        }
    }

    /// Recomputes what `symbol` needs upstream; starts the grace period when nothing holds it.
    fn refresh(&mut self, symbol: &Symbol, out: &mut Vec<Change>) {
        let Some(entry) = self.symbols.get_mut(symbol) else {
            return;
        };
        if entry.unused() {
            if entry.releasing.is_none() {
                self.generation += 1;
                entry.releasing = Some(self.generation);
                out.push(Change::Grace {
                    symbol: symbol.clone(),
                    generation: self.generation,
                });
            }
            return;
        }
        let wanted = entry.wanted();
        if wanted != entry.upstream {
            entry.upstream = wanted;
            out.push(Change::FeedChanged(entry.feed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    fn all_feeds(_: FeedKind) -> bool {
        true
    }

    fn quotes() -> ChannelMask {
        ChannelMask::QUOTES
    }

    fn hub_changes(out: &[Change]) -> Vec<(String, HubId, ChannelMask)> {
        out.iter()
            .filter_map(|c| match c {
                Change::Hub {
                    symbol,
                    hub,
                    channels,
                } => Some((symbol.to_string(), *hub, *channels)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn browser_channels_map_to_the_channels_each_stream_offers() {
        assert_eq!(
            upstream_channels(FeedKind::Stocks, quotes()),
            [Channel::Quotes, Channel::Trades]
        );
        let bars = ChannelMask::of(&[ClientChannel::Bars]);
        assert_eq!(
            upstream_channels(FeedKind::Crypto, bars),
            [Channel::Bars, Channel::UpdatedBars, Channel::DailyBars]
        );
        assert!(upstream_channels(FeedKind::Options, bars).is_empty());
        let books = ChannelMask::of(&[ClientChannel::Orderbooks]);
        assert_eq!(
            upstream_channels(FeedKind::Crypto, books),
            [Channel::Orderbooks]
        );
        assert!(upstream_channels(FeedKind::Stocks, books).is_empty());
    }

    #[test]
    fn the_first_subscriber_creates_a_symbol_and_tells_its_hub_once() {
        let mut i = Interest::new(10);
        i.connect(1, 0);
        i.connect(2, 0);
        let mut out = Vec::new();
        let r = i.subscribe(1, vec![sym("AAPL")], quotes(), all_feeds, &mut out);
        assert_eq!(r.accepted, [sym("AAPL")]);
        assert!(out.contains(&Change::Created(sym("AAPL"))));
        assert!(out.contains(&Change::FeedChanged(FeedKind::Stocks)));
        assert_eq!(hub_changes(&out), [("AAPL".into(), 0, quotes())]);
        assert!(i
            .desired(FeedKind::Stocks)
            .contains(Channel::Quotes, "AAPL"));

        // A second session on the same hub changes nothing the hub, throttle or feed must know.
        out.clear();
        i.subscribe(2, vec![sym("AAPL")], quotes(), all_feeds, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn hubs_are_reference_counted_per_channel() {
        let mut i = Interest::new(10);
        i.connect(1, 0);
        i.connect(2, 0);
        i.connect(3, 1);
        let mut out = Vec::new();
        i.subscribe(1, vec![sym("AAPL")], quotes(), all_feeds, &mut out);
        let trades = ChannelMask::of(&[ClientChannel::Trades]);
        i.subscribe(2, vec![sym("AAPL")], trades, all_feeds, &mut out);
        i.subscribe(3, vec![sym("AAPL")], quotes(), all_feeds, &mut out);
        out.clear();
        i.unsubscribe(1, &[sym("AAPL")], ChannelMask::ALL, &mut out);
        assert_eq!(hub_changes(&out), [("AAPL".into(), 0, trades)]);
        out.clear();
        i.disconnect(2, &mut out);
        assert_eq!(hub_changes(&out), [("AAPL".into(), 0, ChannelMask::EMPTY)]);
        assert!(
            !out.iter().any(|c| matches!(c, Change::Grace { .. })),
            "hub 1 still holds it"
        );
    }

    #[test]
    fn the_last_holder_leaving_starts_a_grace_period_and_release_drops_it() {
        let mut i = Interest::new(10);
        i.connect(1, 0);
        let mut out = Vec::new();
        i.subscribe(1, vec![sym("AAPL")], quotes(), all_feeds, &mut out);
        out.clear();
        i.disconnect(1, &mut out);
        let Some(Change::Grace { generation, .. }) = out
            .iter()
            .find(|c| matches!(c, Change::Grace { .. }))
            .cloned()
        else {
            panic!("no grace period: {out:?}");
        };
        // Kept upstream during the grace period.
        assert!(i
            .desired(FeedKind::Stocks)
            .contains(Channel::Quotes, "AAPL"));
        out.clear();
        assert!(i.release(&sym("AAPL"), generation, &mut out));
        assert_eq!(
            out,
            [
                Change::Removed(sym("AAPL")),
                Change::FeedChanged(FeedKind::Stocks)
            ]
        );
        assert!(i.desired(FeedKind::Stocks).is_empty());
    }

    #[test]
    fn a_symbol_taken_again_within_its_grace_period_survives_the_old_timer() {
        let mut i = Interest::new(10);
        i.connect(1, 0);
        let mut out = Vec::new();
        i.subscribe(1, vec![sym("AAPL")], quotes(), all_feeds, &mut out);
        i.unsubscribe(1, &[sym("AAPL")], quotes(), &mut out);
        let first = i.symbol(&sym("AAPL")).unwrap().releasing.unwrap();
        out.clear();
        i.subscribe(1, vec![sym("AAPL")], quotes(), all_feeds, &mut out);
        assert!(
            !out.contains(&Change::Created(sym("AAPL"))),
            "reused, not recreated"
        );
        // Released and taken again: the first timer must not release the second life.
        i.unsubscribe(1, &[sym("AAPL")], quotes(), &mut out);
        assert!(!i.release(&sym("AAPL"), first, &mut out));
        let second = i.symbol(&sym("AAPL")).unwrap().releasing.unwrap();
        assert!(i.release(&sym("AAPL"), second, &mut out));
    }

    fn client(id: &str) -> PinOwner {
        PinOwner::Client(id.into())
    }

    #[test]
    fn pins_keep_a_symbol_without_sessions_and_are_limited_for_rest() {
        let mut i = Interest::new(2);
        let mut out = Vec::new();
        let r = i.pin(
            vec![sym("AAPL"), sym("MSFT"), sym("TSLA")],
            &client("a"),
            None,
            all_feeds,
            &mut out,
        );
        assert_eq!(r.accepted, [sym("AAPL"), sym("MSFT")]);
        assert_eq!(r.rejected[0].code, ErrorCode::TooManySymbols);
        // Another client shares the limit, but may pin what is already counted.
        let r = i.pin(
            vec![sym("MSFT"), sym("TSLA")],
            &client("b"),
            None,
            all_feeds,
            &mut out,
        );
        assert_eq!(r.accepted, [sym("MSFT")]);
        // Config pins are not limited and share symbols.
        let r = i.pin(
            vec![sym("TSLA"), sym("AAPL")],
            &PinOwner::Config,
            None,
            all_feeds,
            &mut out,
        );
        assert_eq!(r.accepted.len(), 2);
        out.clear();
        assert!(
            i.unpin(&[sym("AAPL")], &client("b"), &mut out).is_empty(),
            "only the owner's pin is released"
        );
        assert_eq!(
            i.unpin(&[sym("AAPL")], &client("a"), &mut out),
            [sym("AAPL")]
        );
        assert!(out.is_empty(), "still pinned by config: {out:?}");
        i.unpin(&[sym("AAPL")], &PinOwner::Config, &mut out);
        assert!(out.iter().any(|c| matches!(c, Change::Grace { .. })));
    }

    #[test]
    fn one_client_cannot_take_the_whole_pin_quota() {
        let mut i = Interest::new(10).with_max_pins_per_client(2);
        let mut out = Vec::new();
        let symbols = || vec![sym("AAPL"), sym("MSFT"), sym("TSLA")];
        let r = i.pin(symbols(), &client("greedy"), None, all_feeds, &mut out);
        assert_eq!(r.accepted, [sym("AAPL"), sym("MSFT")]);
        assert!(
            r.rejected[0].message.contains("by one client"),
            "{:?}",
            r.rejected
        );
        // Renewing its own pins is not a new pin; another client still has its own quota.
        let r = i.pin(
            vec![sym("AAPL")],
            &client("greedy"),
            None,
            all_feeds,
            &mut out,
        );
        assert_eq!(r.accepted, [sym("AAPL")]);
        let r = i.pin(symbols(), &client("other"), None, all_feeds, &mut out);
        assert_eq!(r.accepted, [sym("AAPL"), sym("MSFT")]);
        // Configured pins have no quota.
        let r = i.pin(symbols(), &PinOwner::Config, None, all_feeds, &mut out);
        assert_eq!(r.accepted.len(), 3);
    }

    #[test]
    fn pins_with_a_deadline_expire_and_a_new_pin_replaces_the_deadline() {
        let mut i = Interest::new(10);
        let mut out = Vec::new();
        let t0 = Instant::now();
        let soon = Some(t0 + Duration::from_secs(5));
        i.pin(
            vec![sym("AAPL"), sym("MSFT")],
            &client("a"),
            soon,
            all_feeds,
            &mut out,
        );
        i.pin(vec![sym("AAPL")], &client("b"), soon, all_feeds, &mut out);
        // Pinned again without a deadline: kept.
        i.pin(vec![sym("MSFT")], &client("a"), None, all_feeds, &mut out);
        out.clear();
        assert!(i
            .expire_pins(t0 + Duration::from_secs(4), &mut out)
            .is_empty());
        let mut expired = i.expire_pins(t0 + Duration::from_secs(5), &mut out);
        expired.sort();
        assert_eq!(
            expired,
            [(client("a"), sym("AAPL")), (client("b"), sym("AAPL"))]
        );
        assert!(out
            .iter()
            .any(|c| matches!(c, Change::Grace { symbol, .. } if symbol.as_str() == "AAPL")));
        assert_eq!(
            i.pinned_by(&sym("MSFT")).collect::<Vec<_>>(),
            [&client("a")]
        );
        assert!(i
            .expire_pins(t0 + Duration::from_secs(3600), &mut out)
            .is_empty());
    }

    #[test]
    fn account_events_reach_only_sessions_allowed_the_account() {
        let mut i = Interest::new(10);
        i.connect(1, 0);
        i.connect(2, 0);
        i.connect(3, 0);
        let scopes = |names: &[&str]| Arc::new(Scopes::parse(names).unwrap());
        i.follow_positions(1, scopes(&["account:main"]));
        i.follow_positions(2, scopes(&["account:swing", "market"]));
        i.follow_positions(9, scopes(&["account:main"])); // not connected: ignored
        let of = |i: &Interest, a: &str| {
            let mut v: Vec<SessionId> = i.positions_of(a).copied().collect();
            v.sort();
            v
        };
        assert_eq!(of(&i, "main"), [1]);
        assert_eq!(of(&i, "swing"), [2]);
        i.follow_positions(1, scopes(&["account:main", "account:swing"]));
        assert_eq!(of(&i, "swing"), [1, 2]);
        let mut out = Vec::new();
        i.disconnect(1, &mut out);
        assert_eq!(of(&i, "main"), Vec::<SessionId>::new());
    }

    #[test]
    fn sync_pins_releases_what_an_owner_no_longer_holds() {
        let mut i = Interest::new(10);
        let owner = PinOwner::Account("main".into());
        let mut out = Vec::new();
        i.sync_pins(vec![sym("AAPL"), sym("MSFT")], &owner, all_feeds, &mut out);
        out.clear();
        i.sync_pins(vec![sym("MSFT")], &owner, all_feeds, &mut out);
        assert!(out
            .iter()
            .any(|c| matches!(c, Change::Grace { symbol, .. } if symbol.as_str() == "AAPL")));
    }

    #[test]
    fn a_missing_feed_refuses_its_symbols() {
        let mut i = Interest::new(10);
        i.connect(1, 0);
        let mut out = Vec::new();
        let r = i.subscribe(
            1,
            vec![sym("BTC/USD"), sym("AAPL")],
            quotes(),
            |f| f == FeedKind::Stocks,
            &mut out,
        );
        assert_eq!(r.accepted, [sym("AAPL")]);
        assert_eq!(r.rejected[0].code, ErrorCode::FeedUnavailable);
    }

    #[test]
    fn refusals_drop_the_symbol_for_every_holder() {
        let mut i = Interest::new(10);
        i.connect(1, 0);
        i.connect(2, 1);
        let mut out = Vec::new();
        i.subscribe(
            1,
            vec![sym("BAD"), sym("AAPL")],
            quotes(),
            all_feeds,
            &mut out,
        );
        i.subscribe(2, vec![sym("BAD")], quotes(), all_feeds, &mut out);
        i.pin(vec![sym("BAD")], &client("a"), None, all_feeds, &mut out);
        out.clear();
        let told = i.refuse(FeedKind::Stocks, &[sym("BAD")], &mut out);
        assert_eq!(told.len(), 2);
        assert!(out.contains(&Change::Removed(sym("BAD"))));
        let desired = i.desired(FeedKind::Stocks);
        assert!(!desired.contains(Channel::Quotes, "BAD"));
        assert!(desired.contains(Channel::Quotes, "AAPL"));
        // The sessions no longer hold it: a later unsubscribe is harmless.
        out.clear();
        i.unsubscribe(1, &[sym("BAD")], ChannelMask::ALL, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn refused_news_leaves_the_market_interest_releasable() {
        let mut i = Interest::new(10);
        i.connect(1, 0);
        let mut out = Vec::new();
        let both = ChannelMask::QUOTES.union(ChannelMask::NEWS);
        i.subscribe(1, vec![sym("AAPL")], both, all_feeds, &mut out);
        i.refuse(FeedKind::News, &[sym("AAPL")], &mut out);
        assert!(i
            .desired(FeedKind::Stocks)
            .contains(Channel::Quotes, "AAPL"));
        out.clear();
        // The session still holds the quotes, so leaving releases them.
        i.disconnect(1, &mut out);
        assert!(
            out.iter().any(|c| matches!(c, Change::Grace { .. })),
            "the symbol would be held forever: {out:?}"
        );
    }

    #[test]
    fn news_follows_symbols_or_the_wildcard() {
        let mut i = Interest::new(10);
        i.connect(1, 0);
        i.connect(2, 0);
        let mut out = Vec::new();
        i.subscribe(1, vec![sym("AAPL")], ChannelMask::NEWS, all_feeds, &mut out);
        assert!(i.desired(FeedKind::News).contains(Channel::News, "AAPL"));
        i.subscribe(
            2,
            vec![Symbol::wildcard()],
            ChannelMask::NEWS,
            all_feeds,
            &mut out,
        );
        let desired = i.desired(FeedKind::News);
        assert!(desired.contains(Channel::News, "*"));
        assert!(!desired.contains(Channel::News, "AAPL"), "* covers it");
        let to = i.news_recipients(&["AAPL".into()]);
        assert_eq!(to.len(), 2);
        assert_eq!(i.news_recipients(&["MSFT".into()]).len(), 1);
        i.disconnect(2, &mut out);
        assert!(i.desired(FeedKind::News).contains(Channel::News, "AAPL"));
    }

    fn set(pairs: &[(Channel, &str)]) -> SubscriptionSet {
        let mut s = SubscriptionSet::new();
        for (c, sym_text) in pairs {
            let symbol = if *sym_text == "*" {
                Symbol::wildcard()
            } else {
                sym(sym_text)
            };
            s.insert(*c, symbol);
        }
        s
    }

    #[test]
    fn the_daemon_wide_symbol_limit_refuses_only_new_symbols() {
        let mut i = Interest::new(10).with_max_symbols(2);
        let mut out = Vec::new();
        i.connect(1, 0);
        i.connect(2, 0);
        let first = i.subscribe(
            1,
            vec![sym("AAPL"), sym("MSFT"), sym("SPY")],
            quotes(),
            all_feeds,
            &mut out,
        );
        assert_eq!(first.accepted, [sym("AAPL"), sym("MSFT")]);
        assert_eq!(first.rejected.len(), 1);
        assert_eq!(first.rejected[0].code, ErrorCode::TooManySymbols);
        assert!(first.rejected[0].message.contains("registry.max_symbols"));
        // A symbol already held is shared, whoever asks.
        let second = i.subscribe(2, vec![sym("MSFT")], quotes(), all_feeds, &mut out);
        assert_eq!(second.accepted, [sym("MSFT")]);
        let pinned = i.pin(vec![sym("QQQ")], &client("a"), None, all_feeds, &mut out);
        assert_eq!(pinned.rejected.len(), 1);
    }

    #[test]
    fn sdk_interest_is_reference_counted_with_browser_interest() {
        let mut i = Interest::new(10);
        let mut out = Vec::new();
        i.connect(1, 0);
        i.subscribe(1, vec![sym("AAPL")], quotes(), all_feeds, &mut out);
        i.connect(2, 0);
        i.connect(3, 0);
        out.clear();
        i.set_raw(
            2,
            FeedKind::Stocks,
            set(&[(Channel::Quotes, "AAPL"), (Channel::Bars, "*")]),
            &mut out,
        );
        assert_eq!(out, [Change::FeedChanged(FeedKind::Stocks)]);
        out.clear();
        // A second program on the same pairs changes nothing upstream.
        i.set_raw(3, FeedKind::Stocks, set(&[(Channel::Bars, "*")]), &mut out);
        assert!(out.is_empty(), "{out:?}");
        let desired = i.desired(FeedKind::Stocks);
        assert!(desired.contains(Channel::Bars, "*"));
        assert!(desired.contains(Channel::Quotes, "AAPL"));
        // Program 2 leaves: bars * stays (3 holds it), AAPL quotes stay (the browser holds them).
        i.disconnect(2, &mut out);
        let desired = i.desired(FeedKind::Stocks);
        assert!(desired.contains(Channel::Bars, "*") && desired.contains(Channel::Quotes, "AAPL"));
        out.clear();
        i.set_raw(3, FeedKind::Stocks, SubscriptionSet::new(), &mut out);
        assert_eq!(out, [Change::FeedChanged(FeedKind::Stocks)]);
        assert!(!i.desired(FeedKind::Stocks).contains(Channel::Bars, "*"));
    }

    #[test]
    fn an_upstream_refusal_leaves_each_program_with_the_rest() {
        let mut i = Interest::new(10);
        let mut out = Vec::new();
        i.connect(1, 0);
        i.connect(2, 0);
        i.set_raw(
            1,
            FeedKind::Stocks,
            set(&[(Channel::Trades, "AAPL"), (Channel::Trades, "BAD")]),
            &mut out,
        );
        i.set_raw(
            2,
            FeedKind::Stocks,
            set(&[(Channel::Quotes, "MSFT")]),
            &mut out,
        );
        out.clear();
        let told = i.refuse_raw(FeedKind::Stocks, &[sym("BAD")], &mut out);
        assert_eq!(told.len(), 1);
        assert_eq!(told[&1], [sym("BAD")]);
        assert_eq!(out, [Change::FeedChanged(FeedKind::Stocks)]);
        let desired = i.desired(FeedKind::Stocks);
        assert!(!desired.contains(Channel::Trades, "BAD"));
        assert!(
            desired.contains(Channel::Trades, "AAPL") && desired.contains(Channel::Quotes, "MSFT")
        );
    }
}
