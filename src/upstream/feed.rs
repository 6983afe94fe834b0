//! `UpstreamFeed`: the one WebSocket connection to an Alpaca data stream.
//!
//! Owns: the connection, the desired subscription set (given whole by the registry), the routing
//! table symbol → throttle, the reconnect schedule and the feed's status. Talks to: the registry
//! (status changes) and the symbol throttles (market events, `try_send`, never blocking the reader).
//!
//! Lifecycle: started under `actix::Supervisor`. `started()` waits the backoff delay, connects,
//! waits for `connected`, authenticates, subscribes the whole desired set and reports `connected`
//! once the first subscription ack arrives. Any read error, close, protocol error, liveness timeout
//! or Alpaca error code calls [`UpstreamFeed::fail`], which reports the reason and stops the actor;
//! the supervisor restarts it (same struct, fresh context) and `started()` runs again with the next
//! delay. The backoff resets once a connection has stayed up for `reset_after_ms`.
//!
//! Two liveness timers: a dead-peer check (nothing received, not even a pong, for a ping interval
//! plus the pong timeout) and a data-idle check (subscribed but no market data for
//! `data_idle_timeout_ms`, doubling after each idle reconnect that brings nothing, so a quiet market
//! cannot cause a reconnect storm).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use actix_http::ws::Item;
use awc::error::{WsClientError, WsProtocolError};
use awc::ws::{CloseCode, CloseReason, Frame, Message as WsMessage};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, StreamExt};
use log::{debug, error, info, trace, warn};

use super::backoff::Backoff;
use super::protocol::{self, Inbound, SubscriptionSet};
use super::{FeedCounters, FeedKind, FeedState, FeedStatus};
use crate::registry::FeedStateChanged;
use crate::rng::SplitMix64;
use crate::settings::{BackoffSettings, Credentials};
use crate::symbol::Symbol;
use crate::throttle::MarketEventReceived;
use crate::time::Timestamp;

/// Most (channel, symbol) pairs in one subscribe message.
const SUBSCRIBE_CHUNK: usize = 1000;
/// Longest an idle-timeout multiplier grows.
const MAX_IDLE_FACTOR: u32 = 8;
/// Malformed-message warnings logged in full before only every 1000th is.
const MALFORMED_WARNINGS: u64 = 20;

type WsFramed = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;
type WsSink = SplitSink<WsFramed, WsMessage>;

/// Symbol → throttle, given by the registry together with the desired set.
pub type Routes = Arc<HashMap<Symbol, Recipient<MarketEventReceived>>>;

/// The full set of subscriptions this feed should hold upstream, and where to send each symbol's
/// events. Replaces the previous set; the feed sends the difference.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSubscriptions {
    pub desired: SubscriptionSet,
    pub routes: Routes,
}

/// Close the connection for good (daemon shutdown); the feed will not reconnect.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopFeed;

/// Everything a feed needs to know to connect.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    pub kind: FeedKind,
    /// Full stream URL, e.g. `wss://stream.data.alpaca.markets/v2/iex`.
    pub url: String,
    pub provider: &'static str,
    pub credentials: Credentials,
    pub connect_timeout: Duration,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// Zero disables the data-idle check.
    pub data_idle_timeout: Duration,
    pub max_frame_bytes: usize,
    pub backoff: BackoffSettings,
    /// Hold-off after an error retrying will not fix soon (402, 409, 411).
    pub fatal_hold_off: Duration,
    /// Hold-off after 406 (connection limit): Alpaca keeps half-dead sessions about 90 s.
    pub connection_limit_hold_off: Duration,
}

/// Where the current connection is in the Alpaca handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No connection: waiting for a backoff delay, or failed and about to restart.
    Idle,
    /// TCP/TLS/WebSocket handshake in flight.
    Connecting,
    /// Connected; waiting for `[{"T":"success","msg":"connected"}]`.
    AwaitingWelcome,
    /// Auth sent; waiting for `authenticated`.
    Authenticating,
    /// Initial subscribe sent; waiting for its ack.
    Subscribing,
    /// Ready: authenticated and subscribed.
    Streaming,
}

/// The upstream connection actor for one feed.
pub struct UpstreamFeed {
    /// URL, credentials, timeouts.
    config: FeedConfig,
    /// Receives every status change.
    registry: Recipient<FeedStateChanged>,
    /// Shared counters for the status endpoints.
    counters: Arc<FeedCounters>,
    /// Reconnect delays.
    backoff: Backoff,
    /// What the registry wants subscribed; survives reconnects and is replayed after each.
    desired: SubscriptionSet,
    /// Symbol → throttle.
    routes: Routes,
    /// Writes to the current connection.
    writer: Option<SinkWrite<WsMessage, WsSink>>,
    phase: Phase,
    /// What has been requested on the current connection.
    requested: SubscriptionSet,
    /// Current status; reported when it differs from `reported`.
    status: FeedStatus,
    reported: Option<FeedStatus>,
    /// Last frame of any kind (liveness).
    last_received: Instant,
    /// Last market data message (data-idle check).
    last_data: Instant,
    /// Multiplier of the data-idle timeout; grows after idle reconnects that bring no data.
    idle_factor: u32,
    /// A fragmented message being reassembled.
    fragments: Option<BytesMut>,
    /// Connection attempts since start-up.
    attempts: u32,
    /// Set by [`StopFeed`]: never reconnect.
    stopping: bool,
}

impl UpstreamFeed {
    pub fn new(
        config: FeedConfig,
        registry: Recipient<FeedStateChanged>,
        counters: Arc<FeedCounters>,
    ) -> Self {
        let status = FeedStatus::new(config.kind, config.provider, config.url.clone());
        let seed = SplitMix64::from_entropy().next_u64() ^ crate::rng::fnv1a(config.url.as_bytes());
        UpstreamFeed {
            backoff: Backoff::new(config.backoff.clone(), SplitMix64::new(seed)),
            config,
            registry,
            counters,
            desired: SubscriptionSet::new(),
            routes: Arc::default(),
            writer: None,
            phase: Phase::Idle,
            requested: SubscriptionSet::new(),
            status,
            reported: None,
            last_received: Instant::now(),
            last_data: Instant::now(),
            idle_factor: 1,
            fragments: None,
            attempts: 0,
            stopping: false,
        }
    }

    fn name(&self) -> &'static str {
        self.config.kind.as_str()
    }

    /// Sends the status to the registry if it changed since the last report.
    fn report(&mut self) {
        self.status.desired = self.desired.len();
        if self.reported.as_ref() != Some(&self.status) {
            self.reported = Some(self.status.clone());
            self.registry.do_send(FeedStateChanged {
                status: self.status.clone(),
            });
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        if self.attempts > 0 {
            self.status.reconnect_attempts += 1;
        }
        self.attempts += 1;
        self.phase = Phase::Connecting;
        self.status.state = FeedState::Connecting;
        self.status.next_retry_ms = None;
        self.report();
        info!("feed {}: connecting to {}", self.name(), self.config.url);
        let url = self.config.url.clone();
        let max_frame = self.config.max_frame_bytes;
        let limit = self.config.connect_timeout;
        let attempt = async move {
            let client = awc::Client::builder()
                .timeout(limit)
                .max_http_version(awc::http::Version::HTTP_11)
                .finish();
            tokio::time::timeout(limit, client.ws(url).max_frame_size(max_frame).connect()).await
        };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok((_, framed))) => act.on_connected(framed, ctx),
                    Ok(Err(WsClientError::InvalidResponseStatus(status))) => act.fail(
                        format!("the server refused the WebSocket upgrade with HTTP {status}"),
                        ctx,
                    ),
                    Ok(Err(e)) => act.fail(format!("connection failed: {e}"), ctx),
                    Err(_) => act.fail(format!("connection timed out after {limit:?}"), ctx),
                }),
        );
    }

    fn on_connected(&mut self, framed: WsFramed, ctx: &mut Context<Self>) {
        let (sink, stream) = framed.split();
        self.writer = Some(SinkWrite::new(sink, ctx));
        ctx.add_stream(stream);
        self.phase = Phase::AwaitingWelcome;
        self.last_received = Instant::now();
        debug!(
            "feed {}: WebSocket open, waiting for the welcome",
            self.name()
        );
        let auth_timeout = self.config.auth_timeout;
        ctx.run_later(auth_timeout, move |act, ctx| {
            if matches!(
                act.phase,
                Phase::AwaitingWelcome | Phase::Authenticating | Phase::Subscribing
            ) {
                act.fail(
                    format!(
                        "no welcome, authentication or subscription ack within {auth_timeout:?}"
                    ),
                    ctx,
                );
            }
        });
        ctx.run_interval(self.config.ping_interval, |act, ctx| act.liveness_tick(ctx));
    }

    /// The dead-peer and data-idle checks, then a ping.
    fn liveness_tick(&mut self, ctx: &mut Context<Self>) {
        if self.phase == Phase::Idle || self.phase == Phase::Connecting {
            return;
        }
        let now = Instant::now();
        let silent = now.duration_since(self.last_received);
        if silent > self.config.ping_interval + self.config.pong_timeout {
            self.fail(
                format!("the upstream stopped answering (nothing received for {silent:?}, not even a pong)"),
                ctx,
            );
            return;
        }
        let idle_limit = self.config.data_idle_timeout * self.idle_factor;
        let idle = now.duration_since(self.last_data);
        if self.phase == Phase::Streaming
            && !self.desired.is_empty()
            && !self.config.data_idle_timeout.is_zero()
            && idle > idle_limit
        {
            self.idle_factor = (self.idle_factor * 2).min(MAX_IDLE_FACTOR);
            self.fail(
                format!(
                    "no market data for {idle:?} while subscribed to {} streams; reconnecting \
                     (next idle limit {:?})",
                    self.desired.len(),
                    self.config.data_idle_timeout * self.idle_factor
                ),
                ctx,
            );
            return;
        }
        self.write(WsMessage::Ping(Bytes::new()));
    }

    /// Reports the failure, closes the connection and stops; the supervisor restarts us.
    fn fail(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.fail_with(FeedState::Disconnected, reason, ctx);
    }

    fn fail_with(&mut self, state: FeedState, reason: String, ctx: &mut Context<Self>) {
        if self.stopping {
            ctx.stop();
            return;
        }
        if self.phase == Phase::Idle {
            return;
        }
        if state == FeedState::Failed {
            error!("feed {}: {reason}", self.name());
        } else {
            warn!("feed {}: {reason}; will reconnect", self.name());
        }
        if let Some(w) = &mut self.writer {
            let _ = w.write(WsMessage::Close(Some(CloseCode::Normal.into())));
        }
        self.phase = Phase::Idle;
        self.status.state = state;
        self.status.last_error = Some(reason);
        self.status.connected_since = None;
        self.status.subscribed = 0;
        self.report();
        ctx.stop();
    }

    fn write(&mut self, msg: WsMessage) -> bool {
        match &mut self.writer {
            Some(w) => w.write(msg).is_ok(),
            None => false,
        }
    }

    fn send_subscriptions(&mut self, action: &str, set: &SubscriptionSet) {
        for chunk in set.chunks(SUBSCRIBE_CHUNK) {
            let text = protocol::subscription_message(action, &chunk);
            debug!("feed {}: {action} {} streams", self.name(), chunk.len());
            self.write(WsMessage::Text(text.into()));
        }
    }

    /// After authentication: subscribe everything wanted, or become ready at once if nothing is.
    fn subscribe_all(&mut self, ctx: &mut Context<Self>) {
        self.requested = self.desired.clone();
        if self.desired.is_empty() {
            self.mark_ready(ctx);
        } else {
            info!(
                "feed {}: authenticated, subscribing {} symbols ({} streams)",
                self.name(),
                self.desired.symbols().len(),
                self.desired.len()
            );
            self.phase = Phase::Subscribing;
            let desired = self.desired.clone();
            self.send_subscriptions("subscribe", &desired);
        }
    }

    fn mark_ready(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Streaming;
        self.last_data = Instant::now();
        self.status.state = FeedState::Connected;
        self.status.connected_since = Some(Timestamp::now());
        self.status.next_retry_ms = None;
        info!("feed {}: connected and streaming", self.name());
        self.report();
        ctx.run_later(self.backoff.reset_after(), |act, _| {
            if act.phase == Phase::Streaming {
                act.backoff.reset();
                act.status.consecutive_failures = 0;
                act.report();
            }
        });
    }

    fn on_frame_data(&mut self, data: &[u8], ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.last_received = now;
        self.counters.frames.fetch_add(1, Ordering::Relaxed);
        let unix_ms = Timestamp::now().unix_nanos() / 1_000_000;
        self.counters
            .last_message_unix_ms
            .store(unix_ms as u64, Ordering::Relaxed);
        let messages = match std::str::from_utf8(data)
            .map_err(|e| e.to_string())
            .and_then(|text| protocol::decode_json(text).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                self.malformed(format!("skipping an undecodable frame: {e}"));
                return;
            }
        };
        for msg in messages {
            if self.phase == Phase::Idle {
                break; // a message earlier in this frame ended the connection
            }
            self.on_message(msg, now, ctx);
        }
    }

    fn malformed(&mut self, what: String) {
        let n = self.counters.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= MALFORMED_WARNINGS || n % 1000 == 0 {
            warn!("feed {}: {what} ({n} malformed so far)", self.name());
        }
    }

    fn on_message(&mut self, msg: Inbound<'_>, now: Instant, ctx: &mut Context<Self>) {
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        match msg {
            Inbound::Market { symbol, event } => {
                self.saw_data(now);
                match self.routes.get(symbol.as_ref()) {
                    Some(throttle) => match throttle.try_send(MarketEventReceived { event }) {
                        Ok(()) => {
                            self.counters.events_routed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    None => {
                        self.counters
                            .events_unrouted
                            .fetch_add(1, Ordering::Relaxed);
                        trace!("feed {}: event for unrouted symbol {symbol}", self.name());
                    }
                }
            }
            Inbound::Info { kind, symbol } => {
                self.saw_data(now);
                trace!("feed {}: {kind:?} for {symbol}", self.name());
            }
            Inbound::Connected => {
                if self.phase == Phase::AwaitingWelcome {
                    // The auth message carries the secret: it is sent, never logged.
                    let auth = protocol::auth_message(&self.config.credentials);
                    self.write(WsMessage::Text(auth.into()));
                    self.phase = Phase::Authenticating;
                } else {
                    debug!("feed {}: unexpected second welcome", self.name());
                }
            }
            Inbound::Authenticated => {
                if self.phase == Phase::Authenticating {
                    self.subscribe_all(ctx);
                } else {
                    debug!("feed {}: unexpected authentication message", self.name());
                }
            }
            Inbound::Subscription(acked) => {
                self.status.subscribed = acked.len();
                debug!(
                    "feed {}: upstream holds {} streams",
                    self.name(),
                    acked.len()
                );
                if self.phase == Phase::Subscribing {
                    self.mark_ready(ctx);
                } else {
                    self.report();
                }
            }
            Inbound::Error { code, msg } => self.on_upstream_error(code, msg, ctx),
            Inbound::Success(text) => debug!("feed {}: success message {text:?}", self.name()),
            Inbound::Unknown(kind) => {
                debug!("feed {}: skipping message type {kind:?}", self.name())
            }
            Inbound::Malformed(what) => {
                self.malformed(format!("skipping a malformed message: {what}"))
            }
        }
    }

    fn saw_data(&mut self, now: Instant) {
        self.last_data = now;
        if self.idle_factor > 1 {
            info!("feed {}: market data flows again", self.name());
            self.idle_factor = 1;
        }
    }

    /// Alpaca's error codes are not all equal; see `alpaca-protocol.md` §6.
    fn on_upstream_error(&mut self, code: u16, msg: String, ctx: &mut Context<Self>) {
        let what = format!("Alpaca error {code} ({msg})");
        match code {
            402 | 409 | 411 => {
                let hold = self.config.fatal_hold_off;
                self.backoff.hold_off(hold);
                self.status.next_retry_ms = Some(hold.as_millis() as u64);
                let hint = match code {
                    402 => "check APCA_API_KEY_ID / APCA_API_SECRET_KEY",
                    409 => "the account's market data plan does not include this feed",
                    _ => "the credentials lack the market data scope",
                };
                self.fail_with(
                    FeedState::Failed,
                    format!(
                        "{what}: {hint}; retrying will not help soon, next attempt in {hold:?}"
                    ),
                    ctx,
                );
            }
            406 => {
                let hold = self.config.connection_limit_hold_off;
                self.backoff.hold_off(hold);
                self.fail(
                    format!("{what}: another connection uses this account's stream; waiting {hold:?} for Alpaca to drop it"),
                    ctx,
                );
            }
            407 => {
                error!(
                    "feed {}: {what}: Alpaca says we read too slowly; the host may be overloaded",
                    self.name()
                );
                self.fail(what, ctx);
            }
            400 | 405 | 410 | 413 if self.phase == Phase::Streaming => {
                // The last subscription change was refused; the connection itself is fine.
                warn!(
                    "feed {}: {what}: the last subscription change was refused",
                    self.name()
                );
                self.status.last_error = Some(what);
                self.report();
            }
            _ => self.fail(what, ctx),
        }
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut Context<Self>) {
        let (chunk, last) = match item {
            Item::FirstText(b) | Item::FirstBinary(b) => {
                self.fragments = Some(BytesMut::new());
                (b, false)
            }
            Item::Continue(b) => (b, false),
            Item::Last(b) => (b, true),
        };
        let Some(buf) = self.fragments.as_mut() else {
            self.fail("continuation frame without a first fragment".into(), ctx);
            return;
        };
        if buf.len() + chunk.len() > self.config.max_frame_bytes {
            self.fail(
                format!(
                    "fragmented message larger than {} bytes",
                    self.config.max_frame_bytes
                ),
                ctx,
            );
            return;
        }
        buf.extend_from_slice(&chunk);
        if last {
            if let Some(whole) = self.fragments.take() {
                self.on_frame_data(&whole, ctx);
            }
        }
    }
}

impl Actor for UpstreamFeed {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            self.status.state = FeedState::Stopped;
            self.report();
            return;
        }
        if self.attempts == 0 {
            self.connect(ctx); // the first connection goes out at once
            return;
        }
        let delay = self.backoff.next_delay();
        self.status.consecutive_failures = self.backoff.attempt();
        info!("feed {}: next connection attempt in {delay:?}", self.name());
        self.status.next_retry_ms = Some(delay.as_millis() as u64);
        self.report();
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }
}

impl Supervised for UpstreamFeed {
    /// Drops everything that belonged to the old connection; the desired set and backoff remain.
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.writer = None;
        self.phase = Phase::Idle;
        self.requested = SubscriptionSet::new();
        self.fragments = None;
    }
}

impl Handler<SetSubscriptions> for UpstreamFeed {
    type Result = ();

    fn handle(&mut self, msg: SetSubscriptions, _: &mut Context<Self>) {
        let was_empty = self.desired.is_empty();
        self.desired = msg.desired;
        self.routes = msg.routes;
        if was_empty {
            self.last_data = Instant::now();
        }
        if matches!(self.phase, Phase::Subscribing | Phase::Streaming) {
            let remove = self.requested.difference(&self.desired);
            let add = self.desired.difference(&self.requested);
            if !remove.is_empty() {
                self.send_subscriptions("unsubscribe", &remove);
            }
            if !add.is_empty() {
                self.send_subscriptions("subscribe", &add);
            }
            self.requested = self.desired.clone();
        }
        self.report();
    }
}

impl Handler<StopFeed> for UpstreamFeed {
    type Result = ();

    fn handle(&mut self, _: StopFeed, ctx: &mut Context<Self>) {
        info!("feed {}: stopping", self.name());
        self.stopping = true;
        if let Some(w) = &mut self.writer {
            let _ = w.write(WsMessage::Close(Some(CloseReason {
                code: CloseCode::Away,
                description: Some("tickrelay shutting down".into()),
            })));
            w.close();
        }
        self.phase = Phase::Idle;
        self.status.state = FeedState::Stopped;
        self.status.next_retry_ms = None;
        self.report();
        // Give the close frame a moment to leave before the connection is dropped.
        ctx.run_later(Duration::from_millis(100), |_, ctx| ctx.stop());
    }
}

impl StreamHandler<Result<Frame, WsProtocolError>> for UpstreamFeed {
    fn handle(&mut self, item: Result<Frame, WsProtocolError>, ctx: &mut Context<Self>) {
        match item {
            Ok(Frame::Text(data)) | Ok(Frame::Binary(data)) => self.on_frame_data(&data, ctx),
            Ok(Frame::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(Frame::Ping(payload)) => {
                self.last_received = Instant::now();
                self.write(WsMessage::Pong(payload));
            }
            Ok(Frame::Pong(_)) => self.last_received = Instant::now(),
            Ok(Frame::Close(reason)) => {
                let why = reason.map_or_else(
                    || "no reason given".to_owned(),
                    |r| format!("code {:?} {}", r.code, r.description.unwrap_or_default()),
                );
                self.fail(format!("the upstream closed the connection ({why})"), ctx);
            }
            Err(e) => self.fail(format!("read error: {e}"), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.fail("the upstream connection ended".into(), ctx);
    }
}

impl WriteHandler<WsProtocolError> for UpstreamFeed {
    fn error(&mut self, err: WsProtocolError, ctx: &mut Self::Context) -> Running {
        self.fail(format!("write error: {err}"), ctx);
        Running::Stop
    }
}
