//! `EdgeRelay`: on a primary, everything the edges want, published to Redis.
//!
//! Edges register what their clients want, per feed, as Alpaca subscription sets
//! (`{tickrelay}:edge:<instance>:<feed>`, renewed every few seconds, announced on
//! `tickrelay.edges`). The relay reads the live registrations, holds their union in the registry
//! as raw interest — like an SDK program's, so the upstream subscribes to it and the feeds' tap
//! hands over every matching message as Alpaca sent it — and publishes each message on its own
//! channel, `tickrelay.<feed>.<channel>.<SYMBOL>` (news: `tickrelay.news`), as a one-message
//! Alpaca frame. An edge feeds that into the same pipeline an Alpaca connection would: its own
//! throttles, snapshots, batches and SDK programs work unchanged. Account events
//! (`position_update`, `order_update`) go out on `tickrelay.account.<id>` as the browser frames
//! they are.
//!
//! Nothing here slows a feed: the tap never waits for the relay (a full mailbox loses the batch,
//! counted), and messages wait for Redis in a bounded queue that drops the newest past its
//! limit (counted) while Redis is slow or away. One task pipelines the queue to Redis and
//! reconnects with backoff; another keeps the registrations' union current.
//!
//! Owns: the union of the edges' registrations, the queue and the counters the status shows.
//! Talks to: the registry (raw interest, the positions channel), the taps (as one more hub) and
//! Redis.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use bytes::{BufMut, Bytes, BytesMut};
use log::{debug, info, warn};
use serde::Serialize;
use tokio::sync::Notify;

use super::target::RedisTarget;
use super::{
    account_channel, decode_set, market_channel, union, upstream_channel, within, UpstreamMarker,
    EDGES, EDGES_CHANGED, REGISTER_EVERY,
};
use crate::auth::Scopes;
use crate::upstream::tap::TapHub;
use crate::vocab::{ChannelMask, ClientChannel, Encoding, SubscriptionSet};

use crate::downstream::delivery::{
    FrameKind, Publish, SessionCommand, SessionId, SessionStats, Subscriber, UpstreamChanged,
};
use crate::registry::{Connect, Registry, SetRawInterest, Subscribe};
use crate::rng::SplitMix64;
use crate::vocab::backoff::BackoffSettings;
use crate::vocab::Backoff;

use crate::downstream::delivery::{RawBatch, RawFilter};
use crate::upstream::tap::Taps;
use crate::vocab::FeedKind;

/// Messages waiting for Redis; past it the newest are dropped (counted).
const MAX_QUEUED: usize = 65_536;
/// The most messages one pipeline carries.
const MAX_PIPELINE: usize = 4_096;
/// The relay's session ids in the registry: one per feed for raw interest, one for account events.
const FIRST_SESSION: SessionId = u64::MAX - 8;
const ACCOUNTS_SESSION: SessionId = u64::MAX - 1;
/// Its hub id (it is its own hub: the registry sends it nothing through hubs).
const HUB: usize = usize::MAX - 1;

/// What the status shows.
#[derive(Clone, Debug, Serialize)]
pub struct RelayStatus {
    /// `connected`, `connecting` or `disconnected`.
    pub state: &'static str,
    /// Live edge registrations (one per edge and feed).
    pub registrations: usize,
    /// (channel, symbol) pairs the edges want, over every feed.
    pub wanted: usize,
    /// Messages published.
    pub published: u64,
    /// Messages waiting for Redis.
    pub queued: usize,
    /// Messages dropped because the queue was full (Redis slow or away).
    pub dropped: u64,
    pub last_error: Option<String>,
}

/// The queue between the relay actor and the writer task, and the counters.
#[derive(Default)]
pub struct RelayShared {
    queue: Mutex<VecDeque<(String, Bytes)>>,
    wake: Notify,
    connected: AtomicBool,
    registrations: AtomicUsize,
    wanted: AtomicUsize,
    published: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl RelayShared {
    pub fn status(&self) -> RelayStatus {
        RelayStatus {
            state: if self.connected.load(Ordering::Relaxed) {
                "connected"
            } else {
                "disconnected"
            },
            registrations: self.registrations.load(Ordering::Relaxed),
            wanted: self.wanted.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            queued: self.queue.lock().map_or(0, |q| q.len()),
            dropped: self.dropped.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    fn push(&self, channel: String, payload: Bytes) {
        self.enqueue(channel, payload, false);
    }

    /// `must`: never dropped (an upstream marker: an edge's programs must hear of a gap); it
    /// may take the queue one past its bound.
    fn enqueue(&self, channel: String, payload: Bytes, must: bool) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= MAX_QUEUED && !must {
                drop(q);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            q.push_back((channel, payload));
        }
        self.wake.notify_one();
    }

    fn fail(&self, what: String) {
        self.connected.store(false, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(what);
        }
    }
}

/// The edges' registrations changed: the union per feed (`FeedKind::ALL` order).
#[derive(Message)]
#[rtype(result = "()")]
struct Wanted {
    sets: Vec<SubscriptionSet>,
    registrations: usize,
}

/// The relay actor.
pub struct EdgeRelay {
    registry: Addr<Registry>,
    taps: Arc<Taps>,
    shared: Arc<RelayShared>,
    accounts: Vec<Arc<str>>,
    sets: Vec<SubscriptionSet>,
    filters: Vec<RawFilter>,
    listening: Vec<bool>,
    target: RedisTarget,
    backoff: BackoffSettings,
}

impl EdgeRelay {
    /// Starts the relay on the current arbiter, counting into `shared`.
    pub fn run(
        shared: Arc<RelayShared>,
        registry: Addr<Registry>,
        taps: Arc<Taps>,
        accounts: Vec<Arc<str>>,
        target: RedisTarget,
        backoff: BackoffSettings,
    ) {
        let n = FeedKind::ALL.len();
        EdgeRelay {
            registry,
            taps,
            shared,
            accounts,
            sets: vec![SubscriptionSet::new(); n],
            filters: vec![RawFilter::default(); n],
            listening: vec![false; n],
            target,
            backoff,
        }
        .start();
    }
}

impl Actor for EdgeRelay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A tap batch per upstream frame at most; a full mailbox loses one (counted by the tap).
        ctx.set_mailbox_capacity(4096);
        self.taps.add_hub(TapHub {
            batches: ctx.address().recipient(),
            changes: ctx.address().recipient(),
        });
        if !self.accounts.is_empty() {
            let names: Vec<String> = self
                .accounts
                .iter()
                .map(|a| format!("account:{a}"))
                .collect();
            let scopes = Arc::new(Scopes::parse(&names).unwrap_or_default());
            let subscriber = Subscriber {
                hub: HUB,
                publish: ctx.address().recipient(),
                commands: ctx.address().recipient(),
                stats: Arc::new(SessionStats::of_kind(
                    ACCOUNTS_SESSION,
                    "relay",
                    "redis".into(),
                )),
            };
            let registry = self.registry.clone();
            let connect = async move {
                let _ = registry
                    .send(Connect {
                        session: ACCOUNTS_SESSION,
                        subscriber,
                    })
                    .await;
                registry.do_send(Subscribe {
                    session: ACCOUNTS_SESSION,
                    symbols: Vec::new(),
                    channels: ChannelMask::of(&[ClientChannel::Positions]),
                    scopes,
                });
            };
            ctx.spawn(connect.into_actor(self));
        }
        let (target, backoff) = (self.target.clone(), self.backoff.clone());
        actix::spawn(write(self.shared.clone(), target.clone(), backoff.clone()));
        actix::spawn(watch_registrations(
            self.shared.clone(),
            target,
            backoff,
            ctx.address().recipient(),
        ));
    }
}

impl Handler<Wanted> for EdgeRelay {
    type Result = ();

    fn handle(&mut self, msg: Wanted, _: &mut Context<Self>) {
        self.shared
            .registrations
            .store(msg.registrations, Ordering::Relaxed);
        let mut wanted = 0;
        for (i, set) in msg.sets.into_iter().enumerate() {
            let feed = FeedKind::ALL[i];
            wanted += set.len();
            if set == self.sets[i] {
                continue;
            }
            debug!("relay: edges want {} {} streams", set.len(), feed.as_str());
            let mut filter = RawFilter::default();
            for (channel, symbols) in set.iter() {
                for s in symbols {
                    filter.insert(channel, s.clone());
                }
            }
            self.filters[i] = filter;
            let tap = self.taps.feed(feed);
            match (self.listening[i], set.is_empty()) {
                (false, false) => tap.listen(Encoding::Json),
                (true, true) => tap.unlisten(Encoding::Json),
                _ => {}
            }
            self.listening[i] = !set.is_empty();
            self.registry.do_send(SetRawInterest {
                session: FIRST_SESSION + i as u64,
                feed,
                set: set.clone(),
            });
            self.sets[i] = set;
        }
        self.shared.wanted.store(wanted, Ordering::Relaxed);
    }
}

impl Handler<UpstreamChanged> for EdgeRelay {
    type Result = ();

    /// A feed's upstream was lost or is back: the edges hear it on the feed's upstream channel.
    fn handle(&mut self, change: UpstreamChanged, _: &mut Context<Self>) {
        let marker = UpstreamMarker {
            up: change.up,
            error: change.error,
        };
        if let Ok(json) = serde_json::to_vec(&marker) {
            self.shared
                .enqueue(upstream_channel(change.feed), Bytes::from(json), true);
        }
    }
}

impl Handler<RawBatch> for EdgeRelay {
    type Result = ();

    fn handle(&mut self, batch: RawBatch, _: &mut Context<Self>) {
        let i = batch.feed as usize;
        if !self.listening[i] {
            return;
        }
        for element in batch.elements.iter() {
            if element.json.is_empty() || !self.filters[i].wants(element) {
                continue;
            }
            let channel = market_channel(batch.feed, element.channel, &element.symbol);
            self.shared.push(channel, frame_of(&element.json));
        }
    }
}

/// One message as an Alpaca frame: `[<message>]`.
pub fn frame_of(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(message.len() + 2);
    b.put_u8(b'[');
    b.put_slice(message);
    b.put_u8(b']');
    b.freeze()
}

/// Which account an account event belongs to (its frame names it).
#[derive(serde::Deserialize)]
struct AccountOf<'a> {
    #[serde(borrow)]
    account: Option<&'a str>,
    #[serde(borrow)]
    position: Option<PositionAccount<'a>>,
}

#[derive(serde::Deserialize)]
struct PositionAccount<'a> {
    #[serde(borrow)]
    account: &'a str,
}

/// An account event as published: `<kind> <symbol>\n<frame>`, kind `P` (position) or `O`
/// (order), so an edge can key it for its sessions' outboxes without parsing the frame.
pub fn account_message(kind: FrameKind, symbol: &str, frame: &str) -> Option<Bytes> {
    let tag = match kind {
        FrameKind::Position(_) => 'P',
        FrameKind::Order(_) => 'O',
        _ => return None,
    };
    Some(Bytes::from(format!("{tag} {symbol}\n{frame}")))
}

impl Handler<SessionCommand> for EdgeRelay {
    type Result = ();

    fn handle(&mut self, cmd: SessionCommand, _: &mut Context<Self>) {
        let SessionCommand::Event { key, frame } = cmd else {
            return; // status broadcasts, refusals, closes: nothing for the edges
        };
        let account = serde_json::from_str::<AccountOf>(&frame)
            .ok()
            .and_then(|a| {
                a.account
                    .or(a.position.map(|p| p.account))
                    .map(str::to_owned)
            });
        let (Some(account), Some(message)) = (
            account,
            account_message(key.kind, key.symbol.as_str(), &frame),
        ) else {
            return;
        };
        self.shared.push(account_channel(&account), message);
    }
}

impl Handler<Publish> for EdgeRelay {
    type Result = ();

    fn handle(&mut self, _: Publish, _: &mut Context<Self>) {
        // The relay subscribes to no symbol through the registry: nothing comes this way.
    }
}

/// Pipelines the queue to Redis for as long as the daemon runs.
async fn write(shared: Arc<RelayShared>, target: RedisTarget, backoff: BackoffSettings) {
    let Ok(client) = target.client() else {
        shared.fail("invalid redis.url".into());
        return;
    };
    let mut backoff = Backoff::new(backoff, SplitMix64::new(0xed9e));
    loop {
        let mut conn = match within(client.get_multiplexed_async_connection()).await {
            Ok(c) => c,
            Err(e) => {
                shared.fail(format!("connect: {e}"));
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        shared.connected.store(true, Ordering::Relaxed);
        info!("relay: connected to Redis; publishing what the edges want");
        loop {
            let batch: Vec<(String, Bytes)> = {
                let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
                let n = q.len().min(MAX_PIPELINE);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                shared.wake.notified().await;
                continue;
            }
            let mut pipe = redis::pipe();
            for (channel, payload) in &batch {
                pipe.cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload.as_ref())
                    .ignore();
            }
            match within(pipe.query_async::<()>(&mut conn)).await {
                Ok(()) => {
                    shared
                        .published
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    // What the failed pipeline carried is lost: market messages go stale fast,
                    // and edges take fresh snapshots when they reconnect.
                    shared
                        .dropped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    warn!("relay: publishing to Redis failed ({e}); reconnecting");
                    shared.fail(format!("write: {e}"));
                    tokio::time::sleep(backoff.next_delay()).await;
                    break;
                }
            }
        }
    }
}

/// Keeps the union of the live registrations current: reads them every
/// [`REGISTER_EVERY`] and whenever an edge announces a change.
async fn watch_registrations(
    shared: Arc<RelayShared>,
    target: RedisTarget,
    backoff: BackoffSettings,
    relay: Recipient<Wanted>,
) {
    use futures_util::StreamExt;
    let Ok(client) = target.client() else {
        return;
    };
    let mut backoff = Backoff::new(backoff, SplitMix64::new(0x9e1a));
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(EDGES_CHANGED).await?;
            let conn = client.get_multiplexed_async_connection().await?;
            Ok::<_, redis::RedisError>((pubsub, conn))
        };
        let (pubsub, mut conn) = match within(session).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        let mut changes = pubsub.into_on_message();
        loop {
            match within(read_registrations(&mut conn)).await {
                Ok((sets, registrations)) => relay.do_send(Wanted {
                    sets,
                    registrations,
                }),
                Err(e) => {
                    shared.fail(format!("reading the edges' registrations: {e}"));
                    break;
                }
            }
            // The next change, or the next periodic read (which also drops dead edges).
            if let Ok(None) = tokio::time::timeout(REGISTER_EVERY, changes.next()).await {
                break; // the pub/sub connection is gone
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// The union per feed of every live registration, and how many there are. Registrations whose
/// key expired (their edge is gone) leave the set.
async fn read_registrations(
    conn: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<(Vec<SubscriptionSet>, usize)> {
    let keys: Vec<String> = redis::cmd("SMEMBERS").arg(EDGES).query_async(conn).await?;
    let mut per_feed: Vec<Vec<SubscriptionSet>> = vec![Vec::new(); FeedKind::ALL.len()];
    let mut live = 0;
    if !keys.is_empty() {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        let mut gone = Vec::new();
        for (key, value) in keys.iter().zip(values) {
            let feed = key
                .rsplit(':')
                .next()
                .and_then(|f| FeedKind::ALL.into_iter().find(|k| k.as_str() == f));
            match (value, feed) {
                (Some(v), Some(feed)) => {
                    if let Some(set) = decode_set(&v, feed) {
                        live += 1;
                        per_feed[feed as usize].push(set);
                    }
                }
                _ => gone.push(key.clone()),
            }
        }
        if !gone.is_empty() {
            redis::cmd("SREM")
                .arg(EDGES)
                .arg(&gone)
                .query_async::<()>(conn)
                .await?;
        }
    }
    Ok((per_feed.iter().map(union).collect(), live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_goes_out_as_a_one_message_frame() {
        assert_eq!(&frame_of(br#"{"T":"q"}"#)[..], br#"[{"T":"q"}]"#);
    }

    #[test]
    fn account_messages_carry_their_key() {
        let m = account_message(FrameKind::Position(0), "AAPL", "{}").unwrap();
        assert_eq!(&m[..], b"P AAPL\n{}");
        assert!(account_message(FrameKind::Price, "AAPL", "{}").is_none());
    }

    #[test]
    fn the_queue_is_bounded() {
        let shared = RelayShared::default();
        for _ in 0..MAX_QUEUED + 3 {
            shared.push("c".into(), Bytes::new());
        }
        let s = shared.status();
        assert_eq!((s.queued, s.dropped), (MAX_QUEUED, 3));
        // An upstream marker is never dropped: an edge's programs must hear of a gap.
        shared.enqueue("tickrelay.stocks.upstream".into(), Bytes::new(), true);
        let s = shared.status();
        assert_eq!((s.queued, s.dropped), (MAX_QUEUED + 1, 3));
    }
}
