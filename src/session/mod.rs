//! `ClientSession`: one actor per browser WebSocket on `GET /ws` (`browser-protocol.md`).
//!
//! Owns: the client's subscriptions (a local view for the per-client symbol limit), its backlog of
//! unsent updates and its liveness clock. Talks to: the registry (connect, subscribe, unsubscribe;
//! control round trips that may await) and receives pre-serialized frames from symbol throttles
//! ([`Deliver`], sent with `try_send`) and commands from the registry ([`SessionCommand`]).
//! Stops when the client closes or goes silent past the client timeout, on a protocol error, when
//! it falls behind for too long (close 4008) and at daemon shutdown (close 1001). Dropping the
//! actor, however it ends, tells the registry.
//!
//! - [`backlog`] — the slow-client policy (hold newest per symbol past a limit; overdue → 4008).
//! - [`pump`] — keeps the actor running while the socket is stalled and measures what it has not taken.

pub mod backlog;
pub mod pump;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};
use bytestring::ByteString;
use log::{debug, info, warn};
use serde::Serialize;

use self::backlog::Backlog;
use crate::browser::{
    self, ChannelMask, ClientChannel, ClientError, ClientRequest, ErrorCode, PriceKind, Rejection,
};
use crate::market::BarKind;
use crate::registry::{Connect, Disconnect, Registry, Subscribe, Unsubscribe};
use crate::settings::SessionSettings;
use crate::symbol::Symbol;
use crate::time::Timestamp;
use crate::upstream::connection::{FragmentError, Reassembler};

/// How often held updates are retried and the slow-client clock is checked.
const DRAIN_TICK: Duration = Duration::from_millis(50);
/// Close code for a client that could not keep up.
pub const CLOSE_SLOW_CLIENT: u16 = 4008;
/// Control frames (acks, errors, pongs) are dropped once this many times the backlog limit waits.
const CONTROL_FRAME_FACTOR: usize = 2;

/// Identifies a session for the registry and throttles.
pub type SessionId = u64;

/// What a delivered frame is, for conflation: one pending frame per symbol and kind. News and
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
}

impl FrameKind {
    /// The browser channel that carries this kind.
    pub fn channel(self) -> ClientChannel {
        match self {
            FrameKind::Price => ClientChannel::Quotes,
            FrameKind::Trade => ClientChannel::Trades,
            FrameKind::Bar(_) => ClientChannel::Bars,
            FrameKind::Book => ClientChannel::Orderbooks,
            FrameKind::News(_) => ClientChannel::News,
            FrameKind::Position(_) | FrameKind::Order(_) => ClientChannel::Positions,
        }
    }
}

/// The conflation key of a delivered frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeliverKey {
    pub symbol: Symbol,
    pub kind: FrameKind,
}

/// A frame from a symbol throttle (or the registry, for news and account events), serialized
/// once and shared by every session that gets it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub key: DeliverKey,
    pub frame: ByteString,
    /// For price updates: the `update` object alone (sharing the frame's bytes), for batching.
    pub batch: Option<(PriceKind, ByteString)>,
}

/// Commands from the registry.
#[derive(Message)]
#[rtype(result = "()")]
pub enum SessionCommand {
    /// Send this frame (an `alpaca_status` broadcast).
    Send(ByteString),
    /// The upstream refused these symbols: forget them and send `frame` (their rejections).
    Rejected {
        symbols: Vec<Symbol>,
        frame: ByteString,
    },
    /// Close with this code and reason (1001 at shutdown).
    Close { code: u16, reason: String },
}

/// How throttles reach a session.
#[derive(Clone)]
pub struct Subscriber {
    pub deliver: Recipient<Deliver>,
    pub stats: Arc<SessionStats>,
}

/// Per-session counters, shared with the pump, throttles and the status endpoint.
#[derive(Debug)]
pub struct SessionStats {
    pub id: SessionId,
    pub peer: String,
    pub connected_at: Timestamp,
    /// Encoded bytes the session produced.
    pub pumped: AtomicU64,
    /// Encoded bytes the HTTP dispatcher accepted for the socket.
    pub taken: AtomicU64,
    /// Updates replaced by newer ones while the client was behind.
    pub dropped: AtomicU64,
    /// Updates a throttle could not enqueue because the session's mailbox was full.
    pub mailbox_drops: AtomicU64,
    /// Updates held while the client is behind.
    pub held: AtomicUsize,
    pub symbols: AtomicUsize,
    pub behind: AtomicBool,
}

impl SessionStats {
    pub fn new(id: SessionId, peer: String) -> Self {
        SessionStats {
            id,
            peer,
            connected_at: Timestamp::now(),
            pumped: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            mailbox_drops: AtomicU64::new(0),
            held: AtomicUsize::new(0),
            symbols: AtomicUsize::new(0),
            behind: AtomicBool::new(false),
        }
    }

    /// Bytes produced that the socket has not accepted yet.
    pub fn unsent(&self) -> usize {
        let pumped = self.pumped.load(Ordering::Relaxed);
        let taken = self.taken.load(Ordering::Relaxed);
        pumped.saturating_sub(taken) as usize
    }

    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            id: self.id,
            peer: self.peer.clone(),
            connected_at: self.connected_at,
            symbols: self.symbols.load(Ordering::Relaxed),
            unsent_bytes: self.unsent(),
            sent_bytes: self.taken.load(Ordering::Relaxed),
            held_updates: self.held.load(Ordering::Relaxed),
            dropped_updates: self.dropped.load(Ordering::Relaxed),
            mailbox_drops: self.mailbox_drops.load(Ordering::Relaxed),
            behind: self.behind.load(Ordering::Relaxed),
        }
    }
}

/// A session's counters at one moment (for `/api/v1/status`).
#[derive(Clone, Debug, Serialize)]
pub struct SessionSnapshot {
    pub id: SessionId,
    pub peer: String,
    pub connected_at: Timestamp,
    pub symbols: usize,
    pub unsent_bytes: usize,
    pub sent_bytes: u64,
    pub held_updates: usize,
    pub dropped_updates: u64,
    pub mailbox_drops: u64,
    pub behind: bool,
}

/// What every session needs to know.
#[derive(Debug)]
pub struct SessionConfig {
    pub settings: SessionSettings,
    pub provider: &'static str,
    pub throttle_ms: u64,
}

/// A token bucket for client messages.
#[derive(Debug)]
struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        RateLimit {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The browser session actor.
pub struct ClientSession {
    id: SessionId,
    config: Arc<SessionConfig>,
    registry: Addr<Registry>,
    stats: Arc<SessionStats>,
    /// Slow-client policy.
    backlog: Backlog,
    /// What this client is subscribed to (mirrors the registry's view).
    symbols: HashMap<Symbol, ChannelMask>,
    /// Last frame of any kind from the client.
    last_heard: Instant,
    /// A fragmented message being reassembled (bounded by the frame limit).
    fragments: Reassembler,
    /// Client message budget.
    rate: RateLimit,
    /// A close has been sent; nothing more goes out.
    closing: bool,
    /// `stats.pumped` when last looked at; frames written since then are in `unpumped`.
    seen_pumped: u64,
    /// Encoded bytes written to the context that the pump has not counted yet (this poll's frames).
    unpumped: usize,
    /// `configure {"batch":true}`: price updates are collected and sent as batches.
    batching: bool,
    batches: Batches,
}

/// The latest price update per symbol since the last batch, per price kind, in arrival order.
#[derive(Debug, Default)]
struct Batches {
    spot: Vec<(Symbol, ByteString)>,
    option: Vec<(Symbol, ByteString)>,
}

impl Batches {
    fn list(&mut self, kind: PriceKind) -> &mut Vec<(Symbol, ByteString)> {
        match kind {
            PriceKind::Spot => &mut self.spot,
            PriceKind::Option => &mut self.option,
        }
    }

    /// Keeps the newest update of `symbol` (its place in the batch stays that of the first).
    fn put(&mut self, kind: PriceKind, symbol: Symbol, update: ByteString) {
        let list = self.list(kind);
        match list.iter_mut().find(|(s, _)| *s == symbol) {
            Some(slot) => slot.1 = update,
            None => list.push((symbol, update)),
        }
    }

    fn forget(&mut self, symbols: &[Symbol]) {
        self.spot.retain(|(s, _)| !symbols.contains(s));
        self.option.retain(|(s, _)| !symbols.contains(s));
    }

    fn is_empty(&self) -> bool {
        self.spot.is_empty() && self.option.is_empty()
    }

    /// One frame per non-empty kind, emptying the batches.
    fn take_frames(&mut self) -> Vec<ByteString> {
        [PriceKind::Spot, PriceKind::Option]
            .into_iter()
            .filter_map(|kind| {
                let updates: Vec<ByteString> = std::mem::take(self.list(kind))
                    .into_iter()
                    .map(|(_, u)| u)
                    .collect();
                (!updates.is_empty()).then(|| browser::price_batch(kind, &updates))
            })
            .collect()
    }
}

/// Bytes of a server (unmasked) WebSocket frame header for a payload of `len` bytes.
fn frame_header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

impl ClientSession {
    pub fn new(
        id: SessionId,
        config: Arc<SessionConfig>,
        registry: Addr<Registry>,
        stats: Arc<SessionStats>,
    ) -> Self {
        // Conflatable keys are bounded by the symbols a client may hold; news and order events
        // have a key each and are bounded here.
        let max_held = config.settings.max_symbols * ClientChannel::ALL.len() + 256;
        ClientSession {
            fragments: Reassembler::new(config.settings.max_frame_bytes),
            backlog: Backlog::new(config.settings.backlog_limit_bytes, max_held),
            rate: RateLimit::new(config.settings.max_messages_per_second),
            id,
            config,
            registry,
            stats,
            symbols: HashMap::new(),
            last_heard: Instant::now(),
            closing: false,
            seen_pumped: 0,
            unpumped: 0,
            batching: false,
            batches: Batches::default(),
        }
    }

    /// Sends the collected batches, unless the client is behind (then they keep collecting the
    /// newest update per symbol, which is the conflation a slow client needs anyway).
    fn flush_batches(&mut self, ctx: &mut WebsocketContext<Self>) {
        if self.closing
            || self.batches.is_empty()
            || self.unsent() > self.config.settings.backlog_limit_bytes
        {
            return;
        }
        for frame in self.batches.take_frames() {
            self.text(ctx, frame);
        }
    }

    /// Forgets symbols the registry says are gone (refused upstream).
    fn forget_symbols(&mut self, symbols: &[Symbol]) {
        for s in symbols {
            self.symbols.remove(s);
        }
        self.backlog.forget(|k| symbols.contains(&k.symbol));
        self.batches.forget(symbols);
        self.stats
            .symbols
            .store(self.symbols.len(), Ordering::Relaxed);
    }

    /// Encoded bytes handed to the socket side that it has not taken yet. The pump counts what the
    /// context produced; frames written during the current poll are counted here until it does.
    fn unsent(&mut self) -> usize {
        let pumped = self.stats.pumped.load(Ordering::Relaxed);
        if pumped != self.seen_pumped {
            self.seen_pumped = pumped;
            self.unpumped = 0;
        }
        self.stats.unsent() + self.unpumped
    }

    /// Writes a text frame, counting it.
    fn text(&mut self, ctx: &mut WebsocketContext<Self>, frame: ByteString) {
        self.unsent(); // settle the counters before adding to them
        self.unpumped += frame.len() + frame_header_len(frame.len());
        ctx.text(frame);
    }

    /// Writes a control frame (ack, error, pong, status). These are small and rare, but a client
    /// that floods pings without reading must not grow the backlog without bound.
    fn send(&mut self, ctx: &mut WebsocketContext<Self>, frame: ByteString) {
        if self.closing {
            return;
        }
        if self.unsent() > CONTROL_FRAME_FACTOR * self.config.settings.backlog_limit_bytes {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.text(ctx, frame);
    }

    fn send_error(&mut self, ctx: &mut WebsocketContext<Self>, err: &ClientError) {
        debug!("session {}: {:?}: {}", self.id, err.code, err.message);
        self.send(ctx, browser::error(err));
    }

    fn close(&mut self, ctx: &mut WebsocketContext<Self>, code: u16, reason: &str) {
        if !self.closing {
            ctx.close(Some(CloseReason {
                code: CloseCode::from(code),
                description: Some(reason.to_owned()),
            }));
            self.closing = true;
        }
        ctx.stop();
    }

    fn tick(&mut self, ctx: &mut WebsocketContext<Self>) {
        if self.closing {
            return;
        }
        let now = Instant::now();
        let unsent = self.unsent();
        for frame in self.backlog.drain(unsent, now) {
            self.text(ctx, frame);
        }
        self.publish_backlog_stats();
        let timeout = Duration::from_millis(self.config.settings.slow_client_timeout_ms);
        if self.backlog.overdue(now, timeout) {
            warn!(
                "session {} ({}): closing slow client with {CLOSE_SLOW_CLIENT}: {} bytes unsent for over {timeout:?}, {} updates dropped",
                self.id,
                self.stats.peer,
                self.stats.unsent(),
                self.backlog.dropped()
            );
            self.close(ctx, CLOSE_SLOW_CLIENT, "slow client: could not keep up");
        }
    }

    fn publish_backlog_stats(&self) {
        self.stats
            .held
            .store(self.backlog.held_len(), Ordering::Relaxed);
        self.stats
            .dropped
            .store(self.backlog.dropped(), Ordering::Relaxed);
        self.stats
            .behind
            .store(self.backlog.is_behind(), Ordering::Relaxed);
    }

    fn heartbeat(&mut self, ctx: &mut WebsocketContext<Self>) {
        let silent = self.last_heard.elapsed();
        if silent > Duration::from_millis(self.config.settings.client_timeout_ms) {
            info!(
                "session {} ({}): no frame from the client for {silent:?}; closing",
                self.id, self.stats.peer
            );
            self.close(ctx, 1000, "client timeout");
        } else if !self.closing {
            ctx.ping(b"");
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut WebsocketContext<Self>) {
        if !self.rate.allow(Instant::now()) {
            let limit = self.config.settings.max_messages_per_second;
            self.send_error(
                ctx,
                &ClientError::new(
                    ErrorCode::RateLimited,
                    format!("more than {limit} messages per second; this one was ignored"),
                ),
            );
            return;
        }
        match browser::parse_request(text) {
            Ok(request) => self.on_request(request, ctx),
            Err(err) => self.send_error(ctx, &err),
        }
    }

    fn on_request(&mut self, request: ClientRequest, ctx: &mut WebsocketContext<Self>) {
        match request {
            ClientRequest::Subscribe {
                symbols,
                channels,
                rejected,
            } => self.subscribe(symbols, channels, rejected, ctx),
            ClientRequest::Unsubscribe { symbols, channels } => {
                self.unsubscribe(symbols, channels, ctx)
            }
            ClientRequest::Configure { batch } => {
                if let Some(on) = batch {
                    self.batching = on;
                    if !on {
                        self.flush_batches(ctx);
                    }
                }
            }
            ClientRequest::Ping { id } => {
                let frame = browser::pong(id.as_ref());
                self.send(ctx, frame);
            }
        }
    }

    fn subscribe(
        &mut self,
        symbols: Vec<Symbol>,
        channels: Vec<ClientChannel>,
        mut rejected: Vec<Rejection>,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let max = self.config.settings.max_symbols;
        let mut count = self.symbols.len();
        let mut wanted = Vec::with_capacity(symbols.len());
        let mut over = 0;
        for s in symbols {
            if self.symbols.contains_key(&s) {
                wanted.push(s);
            } else if count < max {
                count += 1;
                wanted.push(s);
            } else {
                over += 1;
                rejected.push(Rejection {
                    symbol: s.to_string(),
                    code: ErrorCode::TooManySymbols,
                    message: format!("at most {max} symbols per connection"),
                });
            }
        }
        if over > 0 {
            self.send_error(
                ctx,
                &ClientError::new(
                    ErrorCode::TooManySymbols,
                    format!("{over} symbols not subscribed: at most {max} symbols per connection"),
                ),
            );
        }
        let mask = ChannelMask::of(&channels);
        if wanted.is_empty() && !mask.contains(ClientChannel::Positions) {
            let frame = browser::subscribed(&[], &channels, &rejected);
            self.send(ctx, frame);
            return;
        }
        let request = Subscribe {
            session: self.id,
            symbols: wanted,
            channels: mask,
        };
        // `wait` holds back other messages (snapshots among them) until the ack is written.
        self.registry
            .send(request)
            .into_actor(self)
            .map(move |res, act, ctx| match res {
                Ok(outcome) => {
                    for s in &outcome.accepted {
                        let m = act.symbols.entry(s.clone()).or_default();
                        *m = m.union(mask);
                    }
                    rejected.extend(outcome.rejected);
                    act.stats
                        .symbols
                        .store(act.symbols.len(), Ordering::Relaxed);
                    let frame = browser::subscribed(&outcome.accepted, &channels, &rejected);
                    act.send(ctx, frame);
                }
                Err(e) => {
                    warn!("session {}: registry unavailable: {e}", act.id);
                    act.close(ctx, 1011, "internal error");
                }
            })
            .wait(ctx);
    }

    fn unsubscribe(
        &mut self,
        symbols: Vec<Symbol>,
        channels: Vec<ClientChannel>,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let mask = ChannelMask::of(&channels);
        let request = Unsubscribe {
            session: self.id,
            symbols: symbols.clone(),
            channels: mask,
        };
        self.registry
            .send(request)
            .into_actor(self)
            .map(move |res, act, ctx| {
                if let Err(e) = res {
                    warn!("session {}: registry unavailable: {e}", act.id);
                    act.close(ctx, 1011, "internal error");
                    return;
                }
                for s in &symbols {
                    if let Some(m) = act.symbols.get_mut(s) {
                        *m = m.minus(mask);
                        if m.is_empty() {
                            act.symbols.remove(s);
                        }
                    }
                }
                let still = act.symbols.clone();
                act.backlog.forget(|k| {
                    let remaining = still.get(&k.symbol).copied().unwrap_or_default();
                    let channel = k.kind.channel();
                    channel != ClientChannel::Positions && !remaining.contains(channel)
                });
                // Batches hold prices only: drop those of symbols no longer on `quotes`.
                let no_prices: Vec<Symbol> = symbols
                    .iter()
                    .filter(|s| {
                        !still
                            .get(*s)
                            .is_some_and(|m| m.contains(ClientChannel::Quotes))
                    })
                    .cloned()
                    .collect();
                act.batches.forget(&no_prices);
                act.stats
                    .symbols
                    .store(act.symbols.len(), Ordering::Relaxed);
                let frame = browser::unsubscribed(&symbols, &channels);
                act.send(ctx, frame);
            })
            .wait(ctx);
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut WebsocketContext<Self>) {
        match self.fragments.push(item) {
            Ok(None) => {}
            Ok(Some((true, _))) => self.send_error(
                ctx,
                &ClientError::new(
                    ErrorCode::InvalidJson,
                    "binary frames are not supported; send JSON text",
                ),
            ),
            Ok(Some((false, whole))) => match std::str::from_utf8(&whole) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.send_error(
                    ctx,
                    &ClientError::new(ErrorCode::InvalidJson, "message is not UTF-8"),
                ),
            },
            Err(FragmentError::TooLarge(_)) => self.too_large(ctx),
            Err(FragmentError::Orphan) => self.send_error(
                ctx,
                &ClientError::new(
                    ErrorCode::InvalidJson,
                    "continuation frame without a first fragment",
                ),
            ),
        }
    }

    fn too_large(&mut self, ctx: &mut WebsocketContext<Self>) {
        let max = self.config.settings.max_frame_bytes;
        self.send_error(
            ctx,
            &ClientError::new(
                ErrorCode::FrameTooLarge,
                format!("messages are limited to {max} bytes"),
            ),
        );
        self.close(ctx, 1009, "frame too large");
    }
}

impl Actor for ClientSession {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.config.settings.mailbox_capacity);
        debug!("session {} ({}): connected", self.id, self.stats.peer);
        let welcome = browser::welcome(
            self.config.provider,
            self.config.throttle_ms,
            self.id,
            self.config.settings.max_symbols,
        );
        self.text(ctx, welcome);
        let addr = ctx.address();
        let connect = Connect {
            session: self.id,
            subscriber: Subscriber {
                deliver: addr.clone().recipient(),
                stats: self.stats.clone(),
            },
            commands: addr.recipient(),
        };
        self.registry
            .send(connect)
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(status_frames) => {
                    for frame in status_frames {
                        act.send(ctx, frame);
                    }
                }
                Err(e) => {
                    warn!("session {}: registry unavailable: {e}", act.id);
                    act.close(ctx, 1011, "internal error");
                }
            })
            .wait(ctx);
        ctx.run_interval(DRAIN_TICK, |act, ctx| act.tick(ctx));
        let batch_every =
            Duration::from_millis(self.config.throttle_ms.max(DRAIN_TICK.as_millis() as u64));
        ctx.run_interval(batch_every, |act, ctx| act.flush_batches(ctx));
        let heartbeat = Duration::from_millis(self.config.settings.heartbeat_interval_ms);
        ctx.run_interval(heartbeat, |act, ctx| act.heartbeat(ctx));
    }
}

impl Drop for ClientSession {
    /// However the session ends (close, error, or the connection vanishing under the pump), the
    /// registry hears of it and releases the client's subscriptions.
    fn drop(&mut self) {
        self.registry.do_send(Disconnect { session: self.id });
    }
}

impl Handler<Deliver> for ClientSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        if self.batching {
            if let Some((kind, update)) = msg.batch {
                self.batches.put(kind, msg.key.symbol, update);
                return;
            }
        }
        let unsent = self.unsent();
        if let Some(frame) = self
            .backlog
            .offer(msg.key, msg.frame, unsent, Instant::now())
        {
            self.text(ctx, frame);
        }
    }
}

impl Handler<SessionCommand> for ClientSession {
    type Result = ();

    fn handle(&mut self, msg: SessionCommand, ctx: &mut Self::Context) {
        match msg {
            SessionCommand::Send(frame) => self.send(ctx, frame),
            SessionCommand::Rejected { symbols, frame } => {
                self.forget_symbols(&symbols);
                self.send(ctx, frame);
            }
            SessionCommand::Close { code, reason } => self.close(ctx, code, &reason),
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for ClientSession {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Binary(_)) => self.send_error(
                ctx,
                &ClientError::new(
                    ErrorCode::InvalidJson,
                    "binary frames are not supported; send JSON text",
                ),
            ),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                debug!("session {}: client closed ({reason:?})", self.id);
                if !self.closing {
                    ctx.close(reason);
                    self.closing = true;
                }
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => self.too_large(ctx),
            Err(e) => {
                debug!("session {}: protocol error: {e}", self.id);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
