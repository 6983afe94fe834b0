//! `EdgeFeed`: on an edge (`provider = "redis"`), what an upstream connection is on a primary.
//!
//! One actor per feed, like [`UpstreamFeed`](crate::upstream::feed::UpstreamFeed), and the
//! registry cannot tell them apart: it sends the desired set ([`SetSubscriptions`]), hears the
//! status (provider `redis`, so `alpaca_status` and `/api/v1/status` show the Redis link), and
//! gets news through [`NewsReceived`]. Instead of subscribing at Alpaca, the edge feed
//!
//! - subscribes to `tickrelay.<feed>.<channel>.<SYMBOL>` for each wanted pair (news: one
//!   channel), reference-counted by the registry's desired set like an Alpaca feed's;
//! - registers the set under `{tickrelay}:edge:<instance>:<feed>` (renewed every couple of
//!   seconds, expiring when the edge dies) so the primary streams it, and announces changes;
//! - on each (re)subscription reads `price:<SYMBOL>` and hands it to the symbol's throttle as a
//!   quote, so browsers get a fresh price at once — after a Redis restart too;
//! - feeds every message it receives (one-message Alpaca frames from the primary's relay) to the
//!   same decoder, throttles and SDK tap an Alpaca connection's frames go through.
//!
//! An account link (`FeedId::Trading`) subscribes to `tickrelay.account.<id>` and hands the
//! `position_update` and `order_update` frames to the registry, which delivers them to the
//! sessions allowed that account.
//!
//! Redis lost: the state turns `disconnected`, the feed reconnects with backoff and subscribes,
//! snapshots and registers everything again. Nothing queues meanwhile. Owns: its pub/sub and
//! command connections, the desired set, the routes and the status.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::StreamExt;
use log::{debug, info, warn};
use tokio::sync::mpsc;

use super::target::RedisTarget;
use super::{account_channel, edge_key, encode_set, market_channel, EDGES, EDGES_CHANGED};
use super::{upstream_channel, UpstreamMarker};
use super::{within, REGISTER_EVERY, REGISTRATION_TTL};
use crate::downstream::delivery::UpstreamChanged;
use crate::downstream::delivery::{DeliverKey, FrameKind};
use crate::downstream::delivery::{RawBatch, RawElement};
use crate::market::{Codes, MarketEvent, Num, Quote};
use crate::registry::AccountEvent;
use crate::rng::SplitMix64;
use crate::symbol::Symbol;
use crate::time::Timestamp;
use crate::upstream::feed::{deliver_market, Routes, SetSubscriptions, StopFeed};
use crate::upstream::policy::Failure;
use crate::upstream::protocol::{self, Inbound};
use crate::upstream::tap::Gap;
use crate::upstream::tap::Taps;
use crate::upstream::{
    FeedCounters, FeedId, FeedState, FeedStateChanged, FeedStatus, MessageType, NewsReceived,
};
use crate::vocab::backoff::BackoffSettings;
use crate::vocab::Backoff;
use crate::vocab::{Channel, Encoding, FeedKind, SubscriptionSet};

/// Everything an edge feed needs.
#[derive(Clone)]
pub struct EdgeConfig {
    pub feed: FeedId,
    /// Where Redis is and how to sign in.
    pub target: RedisTarget,
    /// This edge's name in its registrations.
    pub instance: String,
    /// An account link: the account's position among the configured ones (keys its positions).
    pub account_index: u64,
    pub backoff: BackoffSettings,
    pub tap: Arc<Taps>,
    pub status: Recipient<FeedStateChanged>,
    pub news: Recipient<NewsReceived>,
    pub accounts: Recipient<AccountEvent>,
}

/// A message from the current (or an old) pub/sub connection.
#[derive(Debug)]
enum Incoming {
    Message { generation: u64, msg: redis::Msg },
    Ended { generation: u64 },
}

/// A subscribe (`true`) or unsubscribe of channels, in order.
type LinkCommand = (bool, Vec<String>);

/// The edge feed actor.
pub struct EdgeFeed {
    config: EdgeConfig,
    counters: Arc<FeedCounters>,
    status: FeedStatus,
    reported: Option<FeedStatus>,
    desired: SubscriptionSet,
    routes: Routes,
    /// Channels subscribed on the current connection.
    subscribed: BTreeSet<String>,
    link: Option<mpsc::UnboundedSender<LinkCommand>>,
    conn: Option<redis::aio::MultiplexedConnection>,
    client: Option<redis::Client>,
    /// Tags each connection's messages, so an old connection's end is not taken for the new one's.
    generation: u64,
    connecting: bool,
    backoff: Backoff,
    attempts: u32,
    orders: u64,
    stopping: bool,
    /// A refused message has been logged at warn (the rest go to debug and the counter).
    refused_logged: bool,
    /// Whether the SDK programs must hear that this link was lost or is back.
    gap: Gap,
}

impl EdgeFeed {
    pub fn new(config: EdgeConfig, counters: Arc<FeedCounters>) -> Self {
        let status = FeedStatus::new(config.feed.clone(), "redis", config.target.shown());
        let seed = SplitMix64::from_entropy().next_u64();
        EdgeFeed {
            backoff: Backoff::new(config.backoff.clone(), SplitMix64::new(seed)),
            client: config.target.client().ok(),
            config,
            counters,
            status,
            reported: None,
            desired: SubscriptionSet::new(),
            routes: Routes::default(),
            subscribed: BTreeSet::new(),
            link: None,
            conn: None,
            generation: 0,
            connecting: false,
            attempts: 0,
            orders: 0,
            stopping: false,
            refused_logged: false,
            gap: Gap::default(),
        }
    }

    fn name(&self) -> String {
        format!("edge {}", self.config.feed)
    }

    fn kind(&self) -> Option<FeedKind> {
        match self.config.feed {
            FeedId::Data(kind) => Some(kind),
            FeedId::Trading(_) => None,
        }
    }

    /// The Redis channels for the desired set.
    fn channels(&self) -> BTreeSet<String> {
        match (&self.config.feed, self.kind()) {
            (_, Some(kind)) => self
                .desired
                .iter()
                .flat_map(|(c, symbols)| {
                    symbols
                        .iter()
                        .map(move |s| market_channel(kind, c, s.as_str()))
                })
                .chain([upstream_channel(kind)])
                .collect(),
            (FeedId::Trading(account), None) => [account_channel(account)].into(),
            _ => BTreeSet::new(),
        }
    }

    fn report(&mut self) {
        self.status.desired = self.desired.len();
        self.status.subscribed = if self.link.is_some() {
            self.desired.len()
        } else {
            0
        };
        if self.reported.as_ref() != Some(&self.status) {
            self.reported = Some(self.status.clone());
            self.config.status.do_send(FeedStateChanged {
                status: self.status.clone(),
            });
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.connecting || self.link.is_some() {
            return;
        }
        let Some(client) = self.client.clone() else {
            self.status.state = FeedState::Failed;
            self.status.last_error = Some("redis.url is not a usable URL".into());
            self.report();
            return;
        };
        self.connecting = true;
        if self.attempts > 0 {
            self.status.reconnect_attempts += 1;
        }
        self.attempts += 1;
        self.status.state = FeedState::Connecting;
        self.status.next_retry_ms = None;
        self.report();
        let open = async move {
            let pubsub = client.get_async_pubsub().await?;
            let conn = client.get_multiplexed_async_connection().await?;
            Ok::<_, redis::RedisError>((pubsub, conn))
        };
        let open = within(open);
        ctx.spawn(open.into_actor(self).map(|res, act, ctx| {
            act.connecting = false;
            match res {
                Ok((pubsub, conn)) => act.opened(pubsub, conn, ctx),
                Err(e) => act.lost(format!("connect: {e}"), ctx),
            }
        }));
    }

    fn opened(
        &mut self,
        pubsub: redis::aio::PubSub,
        conn: redis::aio::MultiplexedConnection,
        ctx: &mut Context<Self>,
    ) {
        self.generation += 1;
        let generation = self.generation;
        let (sink, stream) = pubsub.split();
        let messages = stream
            .map(move |msg| Incoming::Message { generation, msg })
            .chain(futures_util::stream::once(async move {
                Incoming::Ended { generation }
            }));
        ctx.add_stream(messages);
        let (tx, rx) = mpsc::unbounded_channel();
        let me = ctx.address();
        actix::spawn(run_link(sink, rx, me, generation));
        self.link = Some(tx);
        self.conn = Some(conn);
        self.subscribed.clear();
        self.backoff.reset();
        self.sync(ctx);
        self.register(true, ctx);
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        self.status.state = FeedState::Connected;
        self.status.connected_since = Some(Timestamp::now());
        self.status.last_error = None;
        info!("{}: connected to Redis", self.name());
        self.report();
        if let Some(kind) = self.kind() {
            if let Some(back) = self.gap.feed_streaming(kind) {
                self.config.tap.feed(kind).changed(back);
                self.status.outage_ended();
                self.report();
            }
        }
    }

    /// The connection failed or ended: report it and try again after the backoff.
    fn lost(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.link = None;
        self.conn = None;
        self.subscribed.clear();
        if self.stopping {
            return;
        }
        if let Some(kind) = self.kind() {
            if let Some(lost) = self.gap.feed_ended(kind) {
                self.config.tap.feed(kind).changed(lost);
                self.gap_began();
            }
        }
        self.counters.failures[Failure::Transient as usize].fetch_add(1, Ordering::Relaxed);
        let delay = self.backoff.next_delay();
        warn!("{}: {reason}; reconnecting in {delay:?}", self.name());
        self.status.state = FeedState::Disconnected;
        self.status.last_error = Some(reason);
        self.status.connected_since = None;
        self.status.next_retry_ms = Some(delay.as_millis() as u64);
        self.report();
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    /// Subscribes and unsubscribes the difference between the desired and the subscribed
    /// channels; snapshots the newly subscribed quotes.
    fn sync(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else {
            return;
        };
        let wanted = self.channels();
        let add: Vec<String> = wanted.difference(&self.subscribed).cloned().collect();
        let remove: Vec<String> = self.subscribed.difference(&wanted).cloned().collect();
        if !remove.is_empty() {
            let _ = link.send((false, remove));
        }
        if !add.is_empty() {
            let _ = link.send((true, add.clone()));
        }
        self.subscribed = wanted;
        if let Some(kind) = self.kind().filter(|k| *k != FeedKind::News) {
            let quotes = format!("tickrelay.{}.{}.", kind.as_str(), Channel::Quotes.key());
            let symbols: Vec<String> = add
                .iter()
                .filter_map(|c| c.strip_prefix(&quotes).map(str::to_owned))
                .collect();
            self.snapshot(symbols, ctx);
        }
    }

    /// Reads `price:<SYMBOL>` of each symbol and hands what is there to its throttle as a quote.
    fn snapshot(&mut self, symbols: Vec<String>, ctx: &mut Context<Self>) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        if symbols.is_empty() {
            return;
        }
        let keys: Vec<String> = symbols.iter().map(|s| format!("price:{s}")).collect();
        let read = async move {
            within::<Vec<Option<String>>>(redis::cmd("MGET").arg(&keys).query_async(&mut conn))
                .await
        };
        ctx.spawn(read.into_actor(self).map(move |res, act, _| match res {
            Ok(values) => {
                for (symbol, value) in symbols.iter().zip(values) {
                    let Some(quote) = value.as_deref().and_then(cached_quote) else {
                        continue;
                    };
                    deliver_market(
                        &act.routes,
                        &act.counters,
                        symbol,
                        MarketEvent::Quote(quote),
                        std::time::Instant::now(),
                    );
                }
            }
            Err(e) => debug!("{}: no snapshot ({e})", act.name()),
        }));
    }

    /// Writes this feed's registration (and announces it when `changed`).
    fn register(&mut self, changed: bool, ctx: &mut Context<Self>) {
        let (Some(kind), Some(mut conn)) = (self.kind(), self.conn.clone()) else {
            return;
        };
        let key = edge_key(&self.config.instance, kind);
        let value = encode_set(&self.desired);
        let write = async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(REGISTRATION_TTL.as_millis() as u64)
                .ignore();
            pipe.cmd("SADD").arg(EDGES).arg(&key).ignore();
            if changed {
                pipe.cmd("PUBLISH").arg(EDGES_CHANGED).arg(&key).ignore();
            }
            within(pipe.query_async::<()>(&mut conn)).await
        };
        ctx.spawn(write.into_actor(self).map(|res, act, _| {
            if let Err(e) = res {
                debug!("{}: registration not written ({e})", act.name());
            }
        }));
    }

    /// A message from Redis that failed the checks: counted, logged (the first one at warn),
    /// never delivered.
    fn refuse(&mut self, channel: &str, why: &str) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        if std::mem::replace(&mut self.refused_logged, true) {
            debug!("{}: refused a message on {channel}: {why}", self.name());
        } else {
            warn!(
                "{}: refused a message on {channel}: {why} (something other than a primary's relay publishes there; further refusals are counted in tickrelay_feed_refused_messages_total)",
                self.name()
            );
        }
    }

    /// The primary's upstream for this feed was lost or is back: the SDK programs here hear it
    /// as they would from a local feed.
    fn on_upstream_marker(&mut self, kind: FeedKind, channel: &str, payload: &[u8]) {
        let Ok(marker) = serde_json::from_slice::<UpstreamMarker>(payload) else {
            return self.refuse(channel, "not an upstream marker");
        };
        self.config.tap.feed(kind).changed(UpstreamChanged {
            feed: kind,
            up: marker.up,
            error: marker.error,
        });
        if marker.up {
            self.status.outage_ended();
            self.report();
        } else {
            self.gap_began();
        }
    }

    /// This feed's data has a gap (the primary's upstream, or this link, was lost): each
    /// symbol's next price update says so, and the status has the outage.
    fn gap_began(&mut self) {
        for inlet in self.routes.values() {
            inlet.mark_gap();
        }
        self.status.outage_began();
        self.report();
    }

    /// A market or news message: checked, then the same path as a frame from Alpaca.
    fn on_market(&mut self, kind: FeedKind, channel: &str, payload: &[u8]) {
        self.counters.frame_received();
        let data = Bytes::copy_from_slice(payload);
        let tap = self.config.tap.feed(kind);
        let (json, msgpack) = tap.demand();
        let (elements, messages) = match check_market(channel, kind, &data, json, msgpack) {
            Ok(checked) => checked,
            Err(why) => return self.refuse(channel, why),
        };
        if json || msgpack {
            tap.publish(RawBatch {
                feed: kind,
                elements: elements.into(),
            });
        }
        let now = std::time::Instant::now();
        for msg in messages {
            self.counters.messages.fetch_add(1, Ordering::Relaxed);
            self.counters.count(MessageType::of_inbound(&msg));
            match msg {
                Inbound::Market { symbol, event } => {
                    deliver_market(&self.routes, &self.counters, symbol.as_ref(), event, now);
                }
                Inbound::News(article) => {
                    let counter = match self.config.news.try_send(NewsReceived { article }) {
                        Ok(()) => &self.counters.events_routed,
                        Err(_) => &self.counters.events_dropped,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Inbound::Malformed(_) => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }

    /// An account event from the primary's relay: checked against its channel's account.
    fn on_account(&mut self, account: &Arc<str>, channel: &str, payload: &[u8]) {
        self.counters.frame_received();
        let (tag, symbol, frame) = match parse_account_message(payload, account) {
            Ok(parsed) => parsed,
            Err(why) => return self.refuse(channel, why),
        };
        let kind = match tag {
            AccountTag::Position => FrameKind::Position(self.config.account_index),
            AccountTag::Order => {
                self.orders += 1;
                FrameKind::Order(self.orders)
            }
        };
        self.counters.events_routed.fetch_add(1, Ordering::Relaxed);
        self.config.accounts.do_send(AccountEvent {
            account: account.clone(),
            key: DeliverKey { symbol, kind },
            frame: ByteString::from(frame.to_owned()),
        });
    }
}

/// What an account message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountTag {
    Position,
    Order,
}

/// The checked messages of a market channel: what the SDK tap gets, and the decoded messages.
pub type Checked<'a> = (Vec<RawElement>, Vec<Inbound<'a>>);

/// Checks a message read from the Redis channel `channel` of feed `kind` as an edge trusts
/// nothing else: one market message (the relay publishes each on its own), of the type and
/// symbol the channel carries (the news channel: one article), every field decoding as it must
/// from Alpaca. `json`/`msgpack`: which encodings the SDK tap wants of it. The error says why
/// it was refused.
pub fn check_market<'a>(
    channel: &str,
    kind: FeedKind,
    data: &'a Bytes,
    json: bool,
    msgpack: bool,
) -> Result<Checked<'a>, &'static str> {
    let elements = protocol::raw::split(data, false, kind, json, msgpack);
    let [element] = elements.as_slice() else {
        return Err("not exactly one market message of this feed");
    };
    if market_channel(kind, element.channel, &element.symbol) != channel {
        return Err("a message of another type or symbol than its channel carries");
    }
    let messages = protocol::decode(data, false, Encoding::Json).map_err(|_| "not a JSON frame")?;
    match messages.as_slice() {
        [Inbound::Market { .. } | Inbound::News(_) | Inbound::Info { .. }] => {
            Ok((elements, messages))
        }
        _ => Err("fields that do not decode as Alpaca's"),
    }
}

/// An account message as the relay writes it: `<P|O> <SYMBOL>\n<frame>`, the frame a JSON
/// object of the right type (`position_update` for `P`, `order_update` for `O`) naming
/// `account` and `SYMBOL`. Anything else is refused, with the reason.
pub fn parse_account_message<'a>(
    payload: &'a [u8],
    account: &str,
) -> Result<(AccountTag, Symbol, &'a str), &'static str> {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        #[serde(borrow)]
        account: Option<&'a str>,
        #[serde(borrow)]
        symbol: Option<&'a str>,
        #[serde(borrow)]
        position: Option<Inner<'a>>,
        #[serde(borrow)]
        order: Option<Inner<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Inner<'a> {
        #[serde(borrow)]
        account: Option<&'a str>,
        #[serde(borrow)]
        symbol: Option<&'a str>,
    }
    const FORM: &str = "not an account event as the relay writes it";
    let text = std::str::from_utf8(payload).map_err(|_| FORM)?;
    let (head, frame) = text.split_once('\n').ok_or(FORM)?;
    let (tag, symbol) = head.split_once(' ').ok_or(FORM)?;
    let (tag, kind) = match tag {
        "P" => (AccountTag::Position, "position_update"),
        "O" => (AccountTag::Order, "order_update"),
        _ => return Err(FORM),
    };
    let symbol = Symbol::parse(symbol).map_err(|_| "an invalid symbol")?;
    let parsed: Frame = serde_json::from_str(frame).map_err(|_| FORM)?;
    if parsed.kind != kind {
        return Err("a frame of another type than its tag");
    }
    let inner = parsed.position.or(parsed.order);
    let named_account = parsed
        .account
        .or_else(|| inner.as_ref().and_then(|i| i.account));
    if named_account != Some(account) {
        return Err("an event of another account than its channel's");
    }
    // The trading API writes crypto pairs without the slash (`BTCUSD` for `BTC/USD`).
    let bare = |s: &str| s.replace('/', "");
    let named_symbol = parsed
        .symbol
        .or_else(|| inner.as_ref().and_then(|i| i.symbol));
    if named_symbol.map(bare) != Some(bare(symbol.as_str())) {
        return Err("an event of another symbol than its head names");
    }
    Ok((tag, symbol, frame))
}

/// A `price:<SYMBOL>` value as a quote (sizes unknown).
pub fn cached_quote(text: &str) -> Option<Quote> {
    #[derive(serde::Deserialize)]
    struct Cached<'a> {
        bid: f64,
        ask: f64,
        #[serde(borrow)]
        timestamp: &'a str,
    }
    let c: Cached = serde_json::from_str(text).ok()?;
    Some(Quote {
        bid_price: c.bid,
        bid_size: Num::Int(0),
        ask_price: c.ask,
        ask_size: Num::Int(0),
        timestamp: Timestamp::parse_rfc3339(c.timestamp).ok()?,
        bid_exchange: None,
        ask_exchange: None,
        conditions: Codes::default(),
        tape: None,
    })
}

/// Sends the subscription commands in order on one connection; ends with it.
async fn run_link(
    mut sink: redis::aio::PubSubSink,
    mut commands: mpsc::UnboundedReceiver<LinkCommand>,
    feed: Addr<EdgeFeed>,
    generation: u64,
) {
    while let Some((subscribe, channels)) = commands.recv().await {
        let sent = async {
            if subscribe {
                sink.subscribe(&channels).await
            } else {
                sink.unsubscribe(&channels).await
            }
        };
        if let Err(e) = within(sent).await {
            feed.do_send(LinkFailed {
                generation,
                reason: format!("subscribe: {e}"),
            });
            return;
        }
    }
}

/// A subscription command failed: the connection is unusable.
#[derive(Message)]
#[rtype(result = "()")]
struct LinkFailed {
    generation: u64,
    reason: String,
}

impl Actor for EdgeFeed {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
        ctx.run_interval(REGISTER_EVERY, |act, ctx| act.register(false, ctx));
    }
}

impl StreamHandler<Incoming> for EdgeFeed {
    fn handle(&mut self, item: Incoming, ctx: &mut Context<Self>) {
        match item {
            Incoming::Message { generation, msg } if generation == self.generation => {
                match (&self.config.feed, self.kind()) {
                    (_, Some(kind)) if msg.get_channel_name() == upstream_channel(kind) => self
                        .on_upstream_marker(kind, msg.get_channel_name(), msg.get_payload_bytes()),
                    (_, Some(kind)) => {
                        self.on_market(kind, msg.get_channel_name(), msg.get_payload_bytes())
                    }
                    (FeedId::Trading(account), None) => {
                        let account = account.clone();
                        self.on_account(&account, msg.get_channel_name(), msg.get_payload_bytes());
                    }
                    _ => {}
                }
            }
            Incoming::Ended { generation } if generation == self.generation => {
                self.lost("the Redis connection ended".into(), ctx);
            }
            _ => {} // from an older connection
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // Each connection's stream ends with `Ended`; the actor lives on.
    }
}

impl Handler<LinkFailed> for EdgeFeed {
    type Result = ();

    fn handle(&mut self, msg: LinkFailed, ctx: &mut Context<Self>) {
        if msg.generation == self.generation && self.link.is_some() {
            self.generation += 1; // whatever the old connection still says is ignored
            self.lost(msg.reason, ctx);
        }
    }
}

impl Handler<SetSubscriptions> for EdgeFeed {
    type Result = ();

    fn handle(&mut self, msg: SetSubscriptions, ctx: &mut Context<Self>) {
        let changed = msg.desired != self.desired;
        self.desired = msg.desired;
        self.routes = msg.routes;
        if changed {
            self.sync(ctx);
            self.register(true, ctx);
        }
        self.report();
    }
}

impl Handler<StopFeed> for EdgeFeed {
    type Result = ();

    fn handle(&mut self, _: StopFeed, ctx: &mut Context<Self>) {
        self.stopping = true;
        self.link = None;
        self.conn = None;
        self.status.state = FeedState::Stopped;
        self.report();
        ctx.run_later(Duration::from_millis(10), |_, ctx| ctx.stop());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_messages_are_checked_before_delivery() {
        let position =
            r#"{"type":"position_update","position":{"account":"main","symbol":"AAPL"}}"#;
        let message = format!("P AAPL\n{position}");
        let (tag, symbol, frame) = parse_account_message(message.as_bytes(), "main").unwrap();
        assert_eq!(
            (tag, symbol.as_str(), frame),
            (AccountTag::Position, "AAPL", position)
        );
        let fill = r#"O BTC/USD
{"type":"order_update","account":"main","event":"fill","order":{"symbol":"BTCUSD"}}"#;
        assert_eq!(
            parse_account_message(fill.as_bytes(), "main").unwrap().0,
            AccountTag::Order
        );
        for (bad, why) in [
            ("X AAPL\n{}", "not an account event"),
            ("P ??\n{}", "an invalid symbol"),
            ("P AAPL\n{not json", "not an account event"),
            ("P AAPL {}", "not an account event"),
            ("O AAPL\n[1]", "not an account event"),
            (
                "O AAPL\n{\"type\":\"position_update\",\"position\":{\"account\":\"main\",\"symbol\":\"AAPL\"}}",
                "another type",
            ),
            (
                "O AAPL\n{\"type\":\"order_update\",\"account\":\"swing\",\"order\":{\"symbol\":\"AAPL\"}}",
                "another account",
            ),
            (
                "O AAPL\n{\"type\":\"order_update\",\"order\":{\"symbol\":\"AAPL\"}}",
                "another account",
            ),
            (
                "O AAPL\n{\"type\":\"order_update\",\"account\":\"main\",\"order\":{\"symbol\":\"TSLA\"}}",
                "another symbol",
            ),
        ] {
            let refusal = parse_account_message(bad.as_bytes(), "main").unwrap_err();
            assert!(refusal.contains(why), "{bad:?}: {refusal}");
        }
    }

    #[test]
    fn market_messages_must_be_their_channels_type_and_symbol() {
        let check = |channel: &str, kind: FeedKind, frame: &str| {
            let data = Bytes::from(frame.to_owned());
            check_market(channel, kind, &data, true, false)
                .map(|(elements, messages)| (elements.len(), messages.len()))
        };
        let quote =
            r#"[{"T":"q","S":"AAPL","bp":1.0,"bs":1,"ap":1.1,"as":1,"t":"2024-10-19T14:30:00Z"}]"#;
        let stocks = FeedKind::Stocks;
        assert_eq!(
            check("tickrelay.stocks.quotes.AAPL", stocks, quote),
            Ok((1, 1))
        );
        let refusals = [
            ("tickrelay.stocks.trades.AAPL", quote, "another type"),
            (
                "tickrelay.stocks.quotes.TSLA",
                quote,
                "another type or symbol",
            ),
            (
                "tickrelay.stocks.quotes.AAPL",
                &format!("[{0},{0}]", &quote[1..quote.len() - 1]),
                "not exactly one",
            ),
            (
                "tickrelay.stocks.quotes.AAPL",
                r#"[{"T":"q","S":"AAPL","bp":"a lot"}]"#,
                "do not decode",
            ),
            (
                "tickrelay.stocks.quotes.AAPL",
                r#"[{"T":"error","code":500,"msg":"x"}]"#,
                "not exactly one",
            ),
            (
                "tickrelay.stocks.quotes.AAPL",
                "not json",
                "not exactly one",
            ),
        ];
        for (channel, frame, why) in refusals {
            let refusal = check(channel, stocks, frame).unwrap_err();
            assert!(refusal.contains(why), "{channel} {frame}: {refusal}");
        }
        let news = r#"[{"T":"n","id":1,"headline":"h","summary":"","author":"","created_at":"2024-10-19T14:30:00Z","updated_at":"2024-10-19T14:30:00Z","url":"https://example.com","content":"","symbols":["AAPL"],"source":"s"}]"#;
        assert_eq!(check("tickrelay.news", FeedKind::News, news), Ok((1, 1)));
        assert!(check("tickrelay.news", FeedKind::News, quote).is_err());
    }

    #[test]
    fn a_cached_price_becomes_a_quote() {
        let q = cached_quote(
            r#"{"symbol":"AAPL","bid":150.25,"ask":150.27,"mid":150.26,"timestamp":"2024-10-19T14:30:00.123456+00:00","exchange":"IEX"}"#,
        )
        .unwrap();
        assert_eq!((q.bid_price, q.ask_price), (150.25, 150.27));
        assert_eq!(
            q.timestamp.to_rfc3339_micros(),
            "2024-10-19T14:30:00.123456+00:00"
        );
        assert!(cached_quote("not json").is_none());
        assert!(cached_quote(r#"{"bid":1,"ask":2,"timestamp":"yesterday"}"#).is_none());
    }
}
