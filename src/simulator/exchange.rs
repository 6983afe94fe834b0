//! `Exchange`: the simulator's market — price walks, connected clients, faults.
//!
//! Owns: one [`Walk`] per symbol in use, every client connection's subscriptions (as the
//! connections report them), the recent quotes sent per symbol (so tests can check what tickrelay
//! relays against what was sent), and the fault switches. Talks to: simulator connections (frames
//! and fault commands out; registration, auth and subscription reports in) and the control API.
//! Every tick it advances the walks of subscribed symbols and sends each connection one frame with
//! the messages it subscribed to, as Alpaca batches data into arrays.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::prelude::*;
use bytestring::ByteString;
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

use super::market::{SimQuote, SimTrade, Walk};
use crate::rng::SplitMix64;
use crate::time::Timestamp;

/// Recent quotes kept per symbol for `GET /control/history`.
const HISTORY: usize = 256;
/// Frames a connection may have queued before it is a slow client (Alpaca's 407).
const SLOW_AFTER_FULL_TICKS: u32 = 50;

/// A connection's subscriptions: channel key → symbols (or `*`).
pub type ConnSubs = BTreeMap<String, BTreeSet<String>>;

/// Switches the control API flips; read by connections on their own threads.
#[derive(Debug, Default)]
pub struct Faults {
    /// No market data is sent (pings are still answered).
    pub silent: AtomicBool,
    /// Nothing at all is sent, not even pongs: a dead peer.
    pub frozen: AtomicBool,
}

impl Faults {
    pub fn data_blocked(&self) -> bool {
        self.silent.load(Ordering::Relaxed) || self.frozen.load(Ordering::Relaxed)
    }
}

/// What the exchange tells a connection.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub enum SimOutbound {
    /// A data frame (JSON text).
    Frame(ByteString),
    /// Send `[{"T":"error",…}]`, then close if asked.
    Error { code: u16, msg: String, close: bool },
    /// Drop the connection without a close frame.
    Abort,
    /// Close with a close frame.
    Close,
}

/// Settings of the market.
#[derive(Clone, Debug)]
pub struct ExchangeConfig {
    pub symbols: Vec<String>,
    pub tick: Duration,
    pub quotes_per_tick: u32,
    pub trade_probability: f64,
    pub bar_interval: Duration,
    pub generate: bool,
    pub seed: u64,
}

/// A new client connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub id: u64,
    pub path: String,
    pub sink: Recipient<SimOutbound>,
}

/// A client connection ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub id: u64,
}

/// A client sent valid credentials; answers `Err((code, msg))` when a fault says to refuse.
#[derive(Message)]
#[rtype(result = "Result<(), (u16, String)>")]
pub struct Authorize {
    pub id: u64,
}

/// A client's subscriptions changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscriptionsChanged {
    pub id: u64,
    pub subs: ConnSubs,
}

/// A quote to inject (control API); missing sizes default to 1.
#[derive(Clone, Debug, Deserialize)]
pub struct InjectQuote {
    pub symbol: String,
    pub bp: f64,
    pub ap: f64,
    #[serde(default = "one")]
    pub bs: u32,
    #[serde(default = "one", rename = "as")]
    pub ask_size: u32,
}

/// A trade to inject (control API).
#[derive(Clone, Debug, Deserialize)]
pub struct InjectTrade {
    pub symbol: String,
    pub p: f64,
    #[serde(default = "one")]
    pub s: u32,
}

fn one() -> u32 {
    1
}

/// Send these quotes and trades now, in one frame per connection; answers how many got any.
#[derive(Message, Deserialize)]
#[rtype(result = "usize")]
pub struct Inject {
    #[serde(default)]
    pub quotes: Vec<InjectQuote>,
    #[serde(default)]
    pub trades: Vec<InjectTrade>,
}

/// Send a command to every connection; answers how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Broadcast(pub SimOutbound);

/// Refuse the next `count` authentications with `code`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FailAuth {
    pub code: u16,
    pub count: u32,
}

/// One connection as the control API reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ConnReport {
    pub id: u64,
    pub path: String,
    pub authenticated: bool,
    pub subscriptions: ConnSubs,
}

/// Current connections and counters.
#[derive(Clone, Debug, Serialize)]
pub struct ExchangeReport {
    pub connections: Vec<ConnReport>,
    pub connections_accepted: u64,
    pub authentications: u64,
    pub slow_clients_kicked: u64,
}

/// Ask for an [`ExchangeReport`].
#[derive(Message)]
#[rtype(result = "ExchangeReport")]
pub struct GetReport;

/// Recent quotes sent for a symbol, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<SimQuote>")]
pub struct GetHistory {
    pub symbol: String,
}

struct Conn {
    path: String,
    sink: Recipient<SimOutbound>,
    authenticated: bool,
    subs: ConnSubs,
    /// Consecutive ticks on which its mailbox was full.
    full_ticks: u32,
}

impl Conn {
    fn wants(&self, channel: &str, symbol: &str) -> bool {
        self.subs
            .get(channel)
            .is_some_and(|s| s.contains(symbol) || s.contains("*"))
    }
}

/// The simulated market.
pub struct Exchange {
    config: ExchangeConfig,
    faults: Arc<Faults>,
    walks: HashMap<String, Walk>,
    conns: BTreeMap<u64, Conn>,
    history: HashMap<String, VecDeque<SimQuote>>,
    rng: SplitMix64,
    auth_failures: Option<(u16, u32)>,
    bar_start: Timestamp,
    accepted: u64,
    authentications: u64,
    kicked: u64,
}

impl Exchange {
    pub fn new(config: ExchangeConfig, faults: Arc<Faults>) -> Self {
        let mut walks = HashMap::new();
        for s in &config.symbols {
            walks.insert(s.clone(), Walk::new(s, config.seed));
        }
        Exchange {
            rng: SplitMix64::new(config.seed),
            config,
            faults,
            walks,
            conns: BTreeMap::new(),
            history: HashMap::new(),
            auth_failures: None,
            bar_start: Timestamp::now(),
            accepted: 0,
            authentications: 0,
            kicked: 0,
        }
    }

    /// Symbols some authenticated connection wants on `channels` (`*` means the configured list).
    fn wanted(&self, channels: &[&str]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for c in self.conns.values().filter(|c| c.authenticated) {
            for ch in channels {
                for s in c.subs.get(*ch).into_iter().flatten() {
                    if s == "*" {
                        out.extend(self.config.symbols.iter().cloned());
                    } else {
                        out.insert(s.clone());
                    }
                }
            }
        }
        out
    }

    fn walk(&mut self, symbol: &str) -> &mut Walk {
        let seed = self.config.seed;
        self.walks
            .entry(symbol.to_owned())
            .or_insert_with(|| Walk::new(symbol, seed))
    }

    fn remember(&mut self, q: &SimQuote) {
        let h = self.history.entry(q.symbol.clone()).or_default();
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(q.clone());
    }

    fn tick(&mut self) {
        if !self.config.generate || self.faults.data_blocked() {
            return;
        }
        let now = Timestamp::now();
        let symbols = self.wanted(&["quotes", "trades"]);
        let mut quotes = Vec::new();
        let mut trades = Vec::new();
        let (per_tick, p_trade) = (self.config.quotes_per_tick, self.config.trade_probability);
        for s in &symbols {
            let trade_now = self.rng.next_f64() < p_trade;
            let walk = self.walk(s);
            for _ in 0..per_tick {
                walk.step();
                quotes.push(walk.quote(now));
            }
            if trade_now {
                trades.push(walk.trade(now));
            }
        }
        self.dispatch(&quotes, &trades);
    }

    fn bars(&mut self) {
        let start = std::mem::replace(&mut self.bar_start, Timestamp::now());
        if !self.config.generate || self.faults.data_blocked() {
            return;
        }
        let symbols = self.wanted(&["bars"]);
        let bars: Vec<(String, String)> = symbols
            .iter()
            .map(|s| {
                let bar = self.walk(s).bar(start);
                (s.clone(), to_json(&bar))
            })
            .collect();
        self.send_each(|c| {
            bars.iter()
                .filter(|(s, _)| c.wants("bars", s))
                .map(|(_, j)| j.as_str())
                .collect()
        });
    }

    /// Sends quotes and trades to the connections subscribed to them, one frame each.
    fn dispatch(&mut self, quotes: &[SimQuote], trades: &[SimTrade]) {
        for q in quotes {
            self.remember(q);
        }
        let quotes: Vec<(&str, String)> = quotes
            .iter()
            .map(|q| (q.symbol.as_str(), to_json(q)))
            .collect();
        let trades: Vec<(&str, String)> = trades
            .iter()
            .map(|t| (t.symbol.as_str(), to_json(t)))
            .collect();
        self.send_each(|c| {
            let mut parts: Vec<&str> = Vec::new();
            parts.extend(
                quotes
                    .iter()
                    .filter(|(s, _)| c.wants("quotes", s))
                    .map(|(_, j)| j.as_str()),
            );
            parts.extend(
                trades
                    .iter()
                    .filter(|(s, _)| c.wants("trades", s))
                    .map(|(_, j)| j.as_str()),
            );
            parts
        });
    }

    /// Builds and sends one frame per authenticated connection from the parts `select` picks.
    /// A connection whose mailbox stays full is told it is too slow (407) and closed, as Alpaca does.
    fn send_each<'p>(&mut self, select: impl Fn(&Conn) -> Vec<&'p str>) -> usize {
        let mut reached = 0;
        let mut slow = Vec::new();
        for (id, c) in self.conns.iter_mut().filter(|(_, c)| c.authenticated) {
            let parts = select(c);
            if parts.is_empty() {
                continue;
            }
            let frame = format!("[{}]", parts.join(","));
            match c.sink.try_send(SimOutbound::Frame(frame.into())) {
                Ok(()) => {
                    c.full_ticks = 0;
                    reached += 1;
                }
                Err(SendError::Full(_)) => {
                    c.full_ticks += 1;
                    if c.full_ticks == SLOW_AFTER_FULL_TICKS {
                        slow.push(*id);
                    }
                }
                Err(SendError::Closed(_)) => {}
            }
        }
        for id in slow {
            warn!("simulator: connection {id} is too slow; sending 407 and closing");
            self.kicked += 1;
            if let Some(c) = self.conns.get(&id) {
                c.sink.do_send(SimOutbound::Error {
                    code: 407,
                    msg: "slow client".into(),
                    close: true,
                });
            }
        }
        reached
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl Actor for Exchange {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.tick, |act, _| act.tick());
        ctx.run_interval(self.config.bar_interval, |act, _| act.bars());
    }
}

impl Handler<Register> for Exchange {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        self.accepted += 1;
        debug!("simulator: connection {} on {}", msg.id, msg.path);
        self.conns.insert(
            msg.id,
            Conn {
                path: msg.path,
                sink: msg.sink,
                authenticated: false,
                subs: ConnSubs::new(),
                full_ticks: 0,
            },
        );
    }
}

impl Handler<Unregister> for Exchange {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        if self.conns.remove(&msg.id).is_some() {
            debug!("simulator: connection {} closed", msg.id);
        }
    }
}

impl Handler<Authorize> for Exchange {
    type Result = Result<(), (u16, String)>;

    fn handle(&mut self, msg: Authorize, _: &mut Context<Self>) -> Self::Result {
        if let Some((code, left)) = self.auth_failures {
            self.auth_failures = (left > 1).then_some((code, left - 1));
            info!(
                "simulator: refusing authentication of connection {} with {code}",
                msg.id
            );
            return Err((code, crate::upstream::protocol::error_name(code).to_owned()));
        }
        self.authentications += 1;
        if let Some(c) = self.conns.get_mut(&msg.id) {
            c.authenticated = true;
        }
        Ok(())
    }
}

impl Handler<SubscriptionsChanged> for Exchange {
    type Result = ();

    fn handle(&mut self, msg: SubscriptionsChanged, _: &mut Context<Self>) {
        if let Some(c) = self.conns.get_mut(&msg.id) {
            c.subs = msg.subs;
        }
    }
}

impl Handler<Inject> for Exchange {
    type Result = usize;

    fn handle(&mut self, msg: Inject, _: &mut Context<Self>) -> usize {
        if self.faults.data_blocked() {
            return 0;
        }
        let now = Timestamp::now();
        let quotes: Vec<SimQuote> = msg
            .quotes
            .into_iter()
            .map(|q| {
                let mut quote = self.walk(&q.symbol).quote(now);
                quote.bp = q.bp;
                quote.ap = q.ap;
                quote.bs = q.bs;
                quote.ask_size = q.ask_size;
                quote
            })
            .collect();
        let trades: Vec<SimTrade> = msg
            .trades
            .into_iter()
            .map(|t| {
                let mut trade = self.walk(&t.symbol).trade(now);
                trade.p = t.p;
                trade.s = t.s;
                trade
            })
            .collect();
        let for_reach: Vec<(String, String)> = quotes
            .iter()
            .map(|q| ("quotes".to_owned(), q.symbol.clone()))
            .chain(
                trades
                    .iter()
                    .map(|t| ("trades".to_owned(), t.symbol.clone())),
            )
            .collect();
        let reached = self
            .conns
            .values()
            .filter(|c| c.authenticated && for_reach.iter().any(|(ch, s)| c.wants(ch, s)))
            .count();
        self.dispatch(&quotes, &trades);
        reached
    }
}

impl Handler<Broadcast> for Exchange {
    type Result = usize;

    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) -> usize {
        for c in self.conns.values() {
            c.sink.do_send(msg.0.clone());
        }
        self.conns.len()
    }
}

impl Handler<FailAuth> for Exchange {
    type Result = ();

    fn handle(&mut self, msg: FailAuth, _: &mut Context<Self>) {
        self.auth_failures = (msg.count > 0).then_some((msg.code, msg.count));
    }
}

impl Handler<GetReport> for Exchange {
    type Result = MessageResult<GetReport>;

    fn handle(&mut self, _: GetReport, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ExchangeReport {
            connections: self
                .conns
                .iter()
                .map(|(id, c)| ConnReport {
                    id: *id,
                    path: c.path.clone(),
                    authenticated: c.authenticated,
                    subscriptions: c.subs.clone(),
                })
                .collect(),
            connections_accepted: self.accepted,
            authentications: self.authentications,
            slow_clients_kicked: self.kicked,
        })
    }
}

impl Handler<GetHistory> for Exchange {
    type Result = MessageResult<GetHistory>;

    fn handle(&mut self, msg: GetHistory, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.history
                .get(&msg.symbol)
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default(),
        )
    }
}
