//! `Exchange`: the simulator's market — price walks, connected data clients, news.
//!
//! Owns: one [`Walk`] per symbol in use, every data connection's feed, encoding and subscriptions
//! (as the connections report them), and the recent quotes sent per symbol (so tests can check
//! what tickrelay relays against what was sent). Talks to: simulator connections (frames and fault
//! commands out; registration and subscription reports in) and the control API. Every tick it
//! advances the walks of subscribed symbols and sends each connection one frame, in its encoding,
//! with the messages it subscribed to, as Alpaca batches data into arrays.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use log::{debug, warn};
use serde::{Deserialize, Serialize};

use super::faults::{Faults, SimFeed};
use super::market::{news_article, Walk};
use crate::rng::SplitMix64;
use crate::symbol::WILDCARD;
use crate::time::Timestamp;
use crate::vocab::Encoding;
use crate::wire::{json_frame, msgpack_frame, Msg};

/// Unwanted walks and history are forgotten every this many ticks.
const SWEEP_EVERY_TICKS: u32 = 100;

/// Recent quotes kept per symbol for `GET /control/history` (as their JSON text) ...
const HISTORY: usize = 64;
/// ... for at most this many symbols at once (the first ones quoted; the sweep frees room): with
/// quotes of about 200 bytes, history holds at most about 6.5 MB.
pub const HISTORY_SYMBOLS: usize = 512;
/// Consecutive ticks with a full mailbox after which a connection is a slow client (Alpaca's 407).
const SLOW_AFTER_FULL_TICKS: u32 = 50;

/// A connection's subscriptions: channel key → symbols (or `*`).
pub type ConnSubs = BTreeMap<String, BTreeSet<String>>;

/// An encoded frame.
#[derive(Clone, Debug)]
pub enum Encoded {
    Text(ByteString),
    Binary(Bytes),
}

/// Encodes messages as one frame in `encoding`.
pub fn encode_frame(encoding: Encoding, msgs: &[&Msg]) -> Encoded {
    match encoding {
        Encoding::Json => {
            let parts: Vec<String> = msgs.iter().map(|m| m.json()).collect();
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            Encoded::Text(json_frame(&refs).into())
        }
        Encoding::Msgpack => {
            let parts: Vec<Vec<u8>> = msgs.iter().map(|m| m.msgpack()).collect();
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            Encoded::Binary(msgpack_frame(&refs).into())
        }
    }
}

/// What the exchange tells a connection.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub enum SimOutbound {
    /// A data frame.
    Frame(Encoded),
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
    pub news_interval: Duration,
    pub generate: bool,
    pub seed: u64,
    /// Most price walks (and histories) kept at once, whatever the connections ask for.
    pub max_symbols: usize,
    /// Most quotes and trades generated per tick over all symbols: the configured symbols get
    /// theirs every tick, the others share the rest in turn. Bounds the CPU, and the frames
    /// waiting for a connection, whatever the clients subscribe.
    pub max_messages_per_tick: usize,
}

/// A new data connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub id: u64,
    pub feed: SimFeed,
    pub path: String,
    pub encoding: Encoding,
    pub sink: Recipient<SimOutbound>,
}

/// A data connection ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub id: u64,
}

/// A data connection authenticated.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Authenticated {
    pub id: u64,
}

/// A connection's subscriptions changed; `new_books` are symbols just added on `orderbooks`,
/// which get a full book (reset) first, as Alpaca sends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscriptionsChanged {
    pub id: u64,
    pub subs: ConnSubs,
    pub new_books: Vec<String>,
}

/// A quote to inject (control API); missing sizes come from the walk.
#[derive(Clone, Debug, Deserialize)]
pub struct InjectQuote {
    pub symbol: String,
    pub bp: f64,
    pub ap: f64,
}

/// A trade to inject (control API).
#[derive(Clone, Debug, Deserialize)]
pub struct InjectTrade {
    pub symbol: String,
    pub p: f64,
}

/// A news article to inject (control API).
#[derive(Clone, Debug, Deserialize)]
pub struct InjectNews {
    pub headline: String,
    #[serde(default)]
    pub symbols: Vec<String>,
}

/// Send these now, one frame per connection; answers how many connections got any.
#[derive(Message, Deserialize)]
#[rtype(result = "usize")]
pub struct Inject {
    #[serde(default)]
    pub quotes: Vec<InjectQuote>,
    #[serde(default)]
    pub trades: Vec<InjectTrade>,
    #[serde(default)]
    pub news: Vec<InjectNews>,
}

/// Send a command to every connection of `feed` (all when `None`); answers how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Broadcast {
    pub feed: Option<SimFeed>,
    pub command: SimOutbound,
}

/// One connection as the control API reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ConnReport {
    pub id: u64,
    pub feed: &'static str,
    pub path: String,
    pub encoding: Encoding,
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
    /// Per feed, the most data connections open at once since start (Alpaca allows one).
    pub most_at_once: std::collections::BTreeMap<&'static str, usize>,
    /// Symbols with a price walk (the configured ones, and those some connection wants).
    pub walks: usize,
    /// Symbols with quote history kept.
    pub history_symbols: usize,
}

/// Ask for an [`ExchangeReport`].
#[derive(Message)]
#[rtype(result = "ExchangeReport")]
pub struct GetReport;

/// Recent quotes sent for a symbol, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<serde_json::Value>")]
pub struct GetHistory {
    pub symbol: String,
}

struct Conn {
    feed: SimFeed,
    path: String,
    encoding: Encoding,
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
            .is_some_and(|s| s.contains(symbol) || s.contains(WILDCARD))
    }

    /// Whether a news article for `symbols` reaches this connection (no symbols: `*` only).
    fn wants_news(&self, symbols: &[String]) -> bool {
        let Some(subs) = self.subs.get("news") else {
            return false;
        };
        subs.contains(WILDCARD) || symbols.iter().any(|s| subs.contains(s))
    }
}

/// A message to send and its encodings, made at most once each.
struct Outgoing {
    channel: &'static str,
    symbols: Vec<String>,
    msg: Msg,
    json: OnceCell<String>,
    msgpack: OnceCell<Vec<u8>>,
}

impl Outgoing {
    fn new(channel: &'static str, symbol: String, msg: Msg) -> Self {
        Self::for_symbols(channel, vec![symbol], msg)
    }

    fn for_symbols(channel: &'static str, symbols: Vec<String>, msg: Msg) -> Self {
        Outgoing {
            channel,
            symbols,
            msg,
            json: OnceCell::new(),
            msgpack: OnceCell::new(),
        }
    }

    fn reaches(&self, conn: &Conn) -> bool {
        if self.channel == "news" {
            conn.wants_news(&self.symbols)
        } else {
            conn.wants(self.channel, &self.symbols[0])
        }
    }
}

/// The simulated market.
pub struct Exchange {
    config: ExchangeConfig,
    faults: Arc<Faults>,
    walks: HashMap<String, Walk>,
    conns: BTreeMap<u64, Conn>,
    history: HashMap<String, VecDeque<Box<str>>>,
    /// Where the next tick's turn starts among the symbols that are not configured.
    turn: usize,
    rng: SplitMix64,
    bar_start: Timestamp,
    next_news_id: i64,
    accepted: u64,
    authentications: u64,
    kicked: u64,
    /// Per feed, the most connections open at once.
    most_at_once: std::collections::BTreeMap<&'static str, usize>,
    /// `max_symbols` walks exist (warned once until the sweep frees room).
    at_capacity: bool,
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
            turn: 0,
            bar_start: Timestamp::now(),
            next_news_id: 1,
            accepted: 0,
            authentications: 0,
            kicked: 0,
            most_at_once: std::collections::BTreeMap::new(),
            at_capacity: false,
        }
    }

    /// Symbols authenticated connections of `feed` want on `channels` (`*`: the configured list).
    fn wanted(&self, feed: SimFeed, channels: &[&str]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for c in self
            .conns
            .values()
            .filter(|c| c.authenticated && c.feed == feed)
        {
            for ch in channels {
                for s in c.subs.get(*ch).into_iter().flatten() {
                    if s == WILDCARD {
                        out.extend(self.config.symbols.iter().cloned());
                    } else {
                        out.insert(s.clone());
                    }
                }
            }
        }
        out
    }

    /// The price walk of `symbol`, started on first use; `None` when `max_symbols` walks exist
    /// already (the symbol gets no data until the sweep frees room).
    fn walk(&mut self, symbol: &str) -> Option<&mut Walk> {
        if !self.walks.contains_key(symbol) {
            if self.walks.len() >= self.config.max_symbols {
                if !self.at_capacity {
                    self.at_capacity = true;
                    warn!(
                        "simulator: {} symbols have a price walk, the most it keeps (simulator.max_symbols); new symbols get no data",
                        self.walks.len()
                    );
                }
                return None;
            }
            let walk = Walk::new(symbol, self.config.seed);
            self.walks.insert(symbol.to_owned(), walk);
        }
        self.walks.get_mut(symbol)
    }

    /// Forgets the walks and history of symbols no connection wants any more (the configured
    /// symbols stay), so memory follows what is subscribed, not everything ever subscribed.
    fn sweep(&mut self) {
        let mut keep: std::collections::HashSet<&str> =
            self.config.symbols.iter().map(String::as_str).collect();
        for c in self.conns.values() {
            for symbols in c.subs.values() {
                keep.extend(symbols.iter().map(String::as_str));
            }
        }
        self.walks.retain(|s, _| keep.contains(s.as_str()));
        self.history.retain(|s, _| keep.contains(s.as_str()));
        self.at_capacity = self.walks.len() >= self.config.max_symbols;
    }

    fn remember(&mut self, symbol: &str, quote: &Msg) {
        if !self.history.contains_key(symbol) && self.history.len() >= HISTORY_SYMBOLS {
            return;
        }
        let h = self.history.entry(symbol.to_owned()).or_default();
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(quote.to_value().to_string().into());
    }

    /// The symbols that get quotes and trades this tick: every configured one, then the others
    /// in turn, within [`ExchangeConfig::max_messages_per_tick`] (each costs `quotes_per_tick`
    /// and perhaps a trade).
    fn this_ticks_symbols(&mut self) -> Vec<(SimFeed, String)> {
        let mut configured = Vec::new();
        let mut others = Vec::new();
        for feed in [SimFeed::Stocks, SimFeed::Crypto, SimFeed::Options] {
            if self.faults.feed(feed).generation_paused() {
                continue;
            }
            for s in self.wanted(feed, &["quotes", "trades"]) {
                if self.config.symbols.contains(&s) {
                    configured.push((feed, s));
                } else {
                    others.push((feed, s));
                }
            }
        }
        let cost = self.config.quotes_per_tick as usize + 1;
        let room = (self.config.max_messages_per_tick / cost).saturating_sub(configured.len());
        if others.len() > room {
            let start = self.turn % others.len();
            others.rotate_left(start);
            others.truncate(room);
            self.turn = start + room;
        }
        configured.extend(others);
        configured
    }

    fn tick(&mut self) {
        if !self.config.generate {
            return;
        }
        let now = Timestamp::now();
        let mut out = Vec::new();
        let p_trade = self.config.trade_probability;
        for (_, s) in self.this_ticks_symbols() {
            let trade_now = self.rng.next_f64() < p_trade;
            for _ in 0..self.config.quotes_per_tick {
                let Some(walk) = self.walk(&s) else { break };
                walk.step();
                let q = walk.quote(now);
                self.remember(&s, &q);
                out.push(Outgoing::new("quotes", s.clone(), q));
            }
            if trade_now {
                if let Some(walk) = self.walk(&s) {
                    let t = walk.trade(now, None);
                    out.push(Outgoing::new("trades", s.clone(), t));
                }
            }
        }
        if !self.faults.feed(SimFeed::Crypto).generation_paused() {
            let books = self.wanted(SimFeed::Crypto, &["orderbooks"]);
            for s in books.into_iter().take(self.config.max_messages_per_tick) {
                if let Some(walk) = self.walk(&s) {
                    let o = walk.book_update(now);
                    out.push(Outgoing::new("orderbooks", s, o));
                }
            }
        }
        self.dispatch(&out);
    }

    fn bars(&mut self) {
        let start = std::mem::replace(&mut self.bar_start, Timestamp::now());
        if !self.config.generate {
            return;
        }
        let mut out = Vec::new();
        for feed in [SimFeed::Stocks, SimFeed::Crypto] {
            if self.faults.feed(feed).generation_paused() {
                continue;
            }
            for s in self.wanted(feed, &["bars"]) {
                if let Some(walk) = self.walk(&s) {
                    let bar = walk.bar(start);
                    out.push(Outgoing::new("bars", s, bar));
                }
            }
        }
        self.dispatch(&out);
    }

    fn news(&mut self) {
        if !self.config.generate || self.faults.feed(SimFeed::News).data_blocked() {
            return;
        }
        if !self
            .conns
            .values()
            .any(|c| c.feed == SimFeed::News && c.authenticated)
        {
            return;
        }
        let mut pool: Vec<String> = self.wanted(SimFeed::News, &["news"]).into_iter().collect();
        pool.retain(|s| s != WILDCARD);
        let symbols = if pool.is_empty() || self.rng.below(4) == 0 {
            Vec::new() // market-wide news goes to `*` subscribers only
        } else {
            vec![pool[self.rng.below(pool.len() as u64) as usize].clone()]
        };
        let headline = match symbols.first() {
            Some(s) => format!("{s} shares move on simulated news"),
            None => "Markets drift in a simulated session".to_owned(),
        };
        let article = self.article(&headline, symbols);
        self.dispatch(&[article]);
    }

    fn article(&mut self, headline: &str, symbols: Vec<String>) -> Outgoing {
        let id = self.next_news_id;
        self.next_news_id += 1;
        let msg = news_article(id, headline, &symbols, Timestamp::now());
        Outgoing::for_symbols("news", symbols, msg)
    }

    /// Sends each authenticated connection the messages it subscribed to, in one frame; answers
    /// how many connections got any. A connection whose mailbox stays full is told it is too slow
    /// (407) and closed, as Alpaca does.
    fn dispatch(&mut self, out: &[Outgoing]) -> usize {
        if out.is_empty() {
            return 0;
        }
        let mut reached = 0;
        let mut slow = Vec::new();
        for (id, c) in self.conns.iter_mut().filter(|(_, c)| c.authenticated) {
            let mine: Vec<&Outgoing> = out.iter().filter(|o| o.reaches(c)).collect();
            if mine.is_empty() {
                continue;
            }
            let frame = match c.encoding {
                Encoding::Json => {
                    let parts: Vec<&str> = mine
                        .iter()
                        .map(|o| o.json.get_or_init(|| o.msg.json()).as_str())
                        .collect();
                    Encoded::Text(json_frame(&parts).into())
                }
                Encoding::Msgpack => {
                    let parts: Vec<&[u8]> = mine
                        .iter()
                        .map(|o| o.msgpack.get_or_init(|| o.msg.msgpack()).as_slice())
                        .collect();
                    Encoded::Binary(msgpack_frame(&parts).into())
                }
            };
            match c.sink.try_send(SimOutbound::Frame(frame)) {
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

impl Actor for Exchange {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.tick, |act, _| act.tick());
        ctx.run_interval(self.config.tick * SWEEP_EVERY_TICKS, |act, _| act.sweep());
        ctx.run_interval(self.config.bar_interval, |act, _| act.bars());
        if !self.config.news_interval.is_zero() {
            ctx.run_interval(self.config.news_interval, |act, _| act.news());
        }
    }
}

impl Handler<Register> for Exchange {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        self.accepted += 1;
        debug!(
            "simulator: connection {} on {} ({:?})",
            msg.id, msg.path, msg.encoding
        );
        self.conns.insert(
            msg.id,
            Conn {
                feed: msg.feed,
                path: msg.path,
                encoding: msg.encoding,
                sink: msg.sink,
                authenticated: false,
                subs: ConnSubs::new(),
                full_ticks: 0,
            },
        );
        let feed = msg.feed.as_str();
        let open = self
            .conns
            .values()
            .filter(|c| c.feed.as_str() == feed)
            .count();
        let most = self.most_at_once.entry(feed).or_default();
        *most = (*most).max(open);
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

impl Handler<Authenticated> for Exchange {
    type Result = ();

    fn handle(&mut self, msg: Authenticated, _: &mut Context<Self>) {
        self.authentications += 1;
        if let Some(c) = self.conns.get_mut(&msg.id) {
            c.authenticated = true;
        }
    }
}

impl Handler<SubscriptionsChanged> for Exchange {
    type Result = ();

    fn handle(&mut self, msg: SubscriptionsChanged, _: &mut Context<Self>) {
        let Some(encoding) = self.conns.get(&msg.id).map(|c| c.encoding) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&msg.id) {
            c.subs = msg.subs;
        }
        if msg.new_books.is_empty() {
            return;
        }
        let now = Timestamp::now();
        let books: Vec<Msg> = msg
            .new_books
            .iter()
            .filter_map(|s| self.walk(s).map(|w| w.book_snapshot(now)))
            .collect();
        let refs: Vec<&Msg> = books.iter().collect();
        if let Some(c) = self.conns.get(&msg.id) {
            c.sink
                .do_send(SimOutbound::Frame(encode_frame(encoding, &refs)));
        }
    }
}

impl Handler<Inject> for Exchange {
    type Result = usize;

    fn handle(&mut self, msg: Inject, _: &mut Context<Self>) -> usize {
        let now = Timestamp::now();
        let mut out = Vec::new();
        for q in msg.quotes {
            let Some(walk) = self.walk(&q.symbol) else {
                continue;
            };
            let quote = walk.quote_at(now, q.bp, q.ap);
            self.remember(&q.symbol, &quote);
            out.push(Outgoing::new("quotes", q.symbol, quote));
        }
        for t in msg.trades {
            if let Some(walk) = self.walk(&t.symbol) {
                let trade = walk.trade(now, Some(t.p));
                out.push(Outgoing::new("trades", t.symbol, trade));
            }
        }
        for n in msg.news {
            out.push(self.article(&n.headline, n.symbols));
        }
        // Faults apply to injected data too.
        out.retain(|o| {
            let feed = match o.channel {
                "news" => SimFeed::News,
                _ => match crate::symbol::classify(&o.symbols[0]) {
                    Some(crate::symbol::AssetClass::Crypto) => SimFeed::Crypto,
                    Some(crate::symbol::AssetClass::Option) => SimFeed::Options,
                    _ => SimFeed::Stocks,
                },
            };
            !self.faults.feed(feed).data_blocked()
        });
        self.dispatch(&out)
    }
}

impl Handler<Broadcast> for Exchange {
    type Result = usize;

    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) -> usize {
        let mut n = 0;
        for c in self
            .conns
            .values()
            .filter(|c| msg.feed.is_none_or(|f| f == c.feed))
        {
            c.sink.do_send(msg.command.clone());
            n += 1;
        }
        n
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
                    feed: c.feed.as_str(),
                    path: c.path.clone(),
                    encoding: c.encoding,
                    authenticated: c.authenticated,
                    subscriptions: c.subs.clone(),
                })
                .collect(),
            connections_accepted: self.accepted,
            authentications: self.authentications,
            slow_clients_kicked: self.kicked,
            most_at_once: self.most_at_once.clone(),
            walks: self.walks.len(),
            history_symbols: self.history.len(),
        })
    }
}

/// Block the exchange's thread for this long (a stalled runtime, for the tests of the stop's
/// deadline).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stall(pub Duration);

impl Handler<Stall> for Exchange {
    type Result = ();

    fn handle(&mut self, Stall(how_long): Stall, _: &mut Context<Self>) {
        std::thread::sleep(how_long);
    }
}

impl Handler<GetHistory> for Exchange {
    type Result = MessageResult<GetHistory>;

    fn handle(&mut self, msg: GetHistory, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.history
                .get(&msg.symbol)
                .map(|h| {
                    h.iter()
                        .filter_map(|q| serde_json::from_str(q).ok())
                        .collect()
                })
                .unwrap_or_default(),
        )
    }
}
