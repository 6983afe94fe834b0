//! `UpstreamFeed`: the one WebSocket connection to an Alpaca market-data stream.
//!
//! Owns: the connection, a copy of the desired subscription set (given whole by the registry, which
//! alone changes it), the routing table symbol → throttle inlet, the subscription requests awaiting
//! an ack, the retry policy and the feed's status. Talks to: the registry (status changes, news
//! articles, symbols the upstream refused) and the symbol throttles (events left in their inlets:
//! the newest value replaces an undrained one, so the reader never waits). Runs on its own thread.
//!
//! Lifecycle: started under `actix::Supervisor`. The first `started()` connects at once; after a
//! failure the supervisor restarts the actor (same struct, fresh context) and `started()` waits
//! what the [`ReconnectPolicy`] says (backoff, an error class's hold-off, an open circuit's
//! cool-down). A connection waits for `connected`, authenticates, subscribes the whole desired set
//! and reports `connected` once the first ack arrives. Any read error, close, protocol error,
//! liveness timeout or Alpaca error code calls [`UpstreamFeed::fail`], which reports the reason
//! and stops the actor.
//!
//! Two liveness timers: a dead-peer check (nothing received, not even a pong, for a ping interval
//! plus the pong timeout) and a data-idle check (subscribed but no market data for
//! `data_idle_timeout_ms`, doubling after each idle reconnect that brings nothing, so a quiet market
//! cannot cause a reconnect storm).
//!
//! Refused subscriptions: requests are acked in order, so an error while streaming belongs to the
//! oldest unacknowledged request. A 400, 405 or 413 for a single-symbol request refuses that
//! symbol; for a request with several (a replay after a reconnect sends up to a thousand at once)
//! each symbol is re-requested alone, so Alpaca keeps every one it accepts (up to the plan's
//! limit, for 405) and only the others are refused. Refused symbols are reported to the registry, which drops them from
//! the desired set, sends the corrected set back and tells the clients that asked.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::io::WriteHandler;
use actix::prelude::*;
use awc::error::WsProtocolError;
use awc::ws::Frame;
use bytes::Bytes;
use log::{debug, error, info, trace, warn};
use rustc_hash::FxHashMap;

use super::connection::{self, Link, Liveness, Received, Upstream};
use super::gate::{Gate, GateChanged};
use super::policy::{Failure, PolicyConfig, ReconnectPolicy};
use super::protocol::{self, Inbound};
use super::tap::{Gap, Taps};
use super::{FeedCounters, FeedId, FeedStatus, MessageType};
use super::{FeedStateChanged, NewsReceived, SymbolsRejected};
use crate::credentials::Credentials;
use crate::downstream::delivery::RawBatch;
use crate::rng::SplitMix64;
use crate::symbol::Symbol;
use crate::throttle::{Inlet, Offered};
use crate::vocab::backoff::BackoffSettings;
use crate::vocab::{Backoff, Encoding, FeedKind, SubscriptionSet};

/// Most (channel, symbol) pairs in one subscribe message.
const SUBSCRIBE_CHUNK: usize = 1000;
/// Longest an idle-timeout multiplier grows.
const MAX_IDLE_FACTOR: u32 = 8;
/// Malformed-message warnings logged in full before only every 1000th is.
const MALFORMED_WARNINGS: u64 = 20;

/// Symbol → the inlet of its throttle, given by the registry together with the desired set.
/// Looked up once per market message, hence the fast hasher.
pub type Routes = Arc<FxHashMap<Symbol, Arc<Inlet>>>;

/// Leaves a market event in its symbol's inlet and counts what happened; `false` when no
/// throttle wants the symbol.
pub fn deliver_market(
    routes: &Routes,
    counters: &FeedCounters,
    symbol: &str,
    event: crate::market::MarketEvent,
    read_at: Instant,
) -> bool {
    let Some(inlet) = routes.get(symbol) else {
        counters.events_unrouted.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    let counter = match inlet.offer(event, read_at) {
        Offered::Queued => &counters.events_routed,
        Offered::Conflated => &counters.events_conflated,
        Offered::Gone => &counters.events_unrouted,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    true
}

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
    pub encoding: Encoding,
    pub connect_timeout: Duration,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// Zero disables the data-idle check.
    pub data_idle_timeout: Duration,
    pub max_frame_bytes: usize,
    pub backoff: BackoffSettings,
    pub policy: PolicyConfig,
    /// Where every market message goes, as sent, for SDK programs (used only while one listens).
    pub tap: Arc<Taps>,
    /// Connect only while open (several primaries: the lease); `None`: always.
    pub gate: Option<Arc<Gate>>,
    /// Where every frame goes as received, when `[recorder]` records this feed.
    pub recorder: Option<crate::recorder::Tape>,
}

/// Where the current connection is in the Alpaca handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No connection: waiting for a retry, or failed and about to restart.
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

/// A subscribe or unsubscribe message waiting for its ack.
#[derive(Debug)]
struct PendingRequest {
    subscribe: bool,
    set: SubscriptionSet,
    /// When it was sent (an ack that never comes is noticed).
    sent: Instant,
}

/// Where a feed sends what is not market data for one symbol.
#[derive(Clone)]
pub struct FeedOutputs {
    pub status: Recipient<FeedStateChanged>,
    pub news: Recipient<NewsReceived>,
    pub rejected: Recipient<SymbolsRejected>,
}

/// The upstream connection actor for one market-data feed.
pub struct UpstreamFeed {
    /// URL, credentials, encoding, timeouts.
    config: FeedConfig,
    outputs: FeedOutputs,
    /// Shared counters for the status endpoints.
    counters: Arc<FeedCounters>,
    /// Retry policy, writer, status, liveness: the connection's lifecycle.
    link: Link,
    /// What the registry wants subscribed; survives reconnects and is replayed after each.
    desired: SubscriptionSet,
    /// Symbol → throttle.
    routes: Routes,
    phase: Phase,
    /// What has been requested on the current connection.
    requested: SubscriptionSet,
    /// Requests not yet acknowledged, oldest first.
    pending: VecDeque<PendingRequest>,
    /// Last market data message (data-idle check).
    last_data: Instant,
    /// Multiplier of the data-idle timeout; grows after idle reconnects that bring no data.
    idle_factor: u32,
    /// Whether the SDK programs must hear of a loss or a return.
    gap: Gap,
}

impl UpstreamFeed {
    pub fn new(config: FeedConfig, outputs: FeedOutputs, counters: Arc<FeedCounters>) -> Self {
        let id = FeedId::Data(config.kind);
        let status = FeedStatus::new(id, config.provider, config.url.clone());
        let seed = SplitMix64::from_entropy().next_u64() ^ crate::rng::fnv1a(config.url.as_bytes());
        let backoff = Backoff::new(config.backoff.clone(), SplitMix64::new(seed));
        let link = Link::new(
            format!("feed {}", config.kind.as_str()),
            ReconnectPolicy::new(config.policy.clone(), backoff),
            status,
            Liveness::new(config.ping_interval, config.pong_timeout),
            config.max_frame_bytes,
        )
        .with_gate(config.gate.clone())
        .with_counters(counters.clone());
        UpstreamFeed {
            config,
            outputs,
            counters,
            link,
            desired: SubscriptionSet::new(),
            routes: Arc::default(),
            phase: Phase::Idle,
            requested: SubscriptionSet::new(),
            pending: VecDeque::new(),
            last_data: Instant::now(),
            idle_factor: 1,
            gap: Gap::default(),
        }
    }

    fn name(&self) -> &str {
        &self.link.name
    }

    /// The dead-peer and data-idle checks, then a ping.
    fn liveness_tick(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Idle | Phase::Connecting) {
            return;
        }
        let now = Instant::now();
        if let Err(reason) = self.link.liveness.check(now) {
            self.fail(Failure::Transient, reason, ctx);
            return;
        }
        if let Some(oldest) = self.pending.front() {
            let waited = now.duration_since(oldest.sent);
            if waited > self.config.auth_timeout {
                // The upstream's set is unknown now: a new connection replays the whole of it.
                let reason = format!(
                    "no acknowledgement of a subscription change within {waited:?}; reconnecting to re-sync the subscriptions"
                );
                self.fail(Failure::Transient, reason, ctx);
                return;
            }
        }
        let idle_limit = self.config.data_idle_timeout * self.idle_factor;
        let idle = now.duration_since(self.last_data);
        if self.phase == Phase::Streaming
            && !self.desired.is_empty()
            && !self.config.data_idle_timeout.is_zero()
            && idle > idle_limit
        {
            self.idle_factor = (self.idle_factor * 2).min(MAX_IDLE_FACTOR);
            let reason = format!(
                "no market data for {idle:?} while subscribed to {} streams; reconnecting (next idle limit {:?})",
                self.desired.len(),
                self.config.data_idle_timeout * self.idle_factor
            );
            self.fail(Failure::Transient, reason, ctx);
            return;
        }
        if let Err(reason) = self.link.ping() {
            self.fail(Failure::Transient, reason, ctx);
        }
    }

    fn send_message(&mut self, message: &serde_json::Value) {
        let frame = protocol::encode_client(message, self.config.encoding);
        self.link.write(connection::ws_message(frame));
    }

    /// Sends `set` in chunks, each remembered until its ack.
    fn send_subscriptions(&mut self, subscribe: bool, set: &SubscriptionSet) {
        let action = if subscribe {
            "subscribe"
        } else {
            "unsubscribe"
        };
        for chunk in set.chunks(SUBSCRIBE_CHUNK) {
            debug!("{}: {action} {} streams", self.name(), chunk.len());
            self.send_message(&protocol::subscription_message(action, &chunk));
            self.pending.push_back(PendingRequest {
                subscribe,
                set: chunk,
                sent: Instant::now(),
            });
        }
    }

    /// After authentication: subscribe everything wanted, or become ready at once if nothing is.
    fn subscribe_all(&mut self, ctx: &mut Context<Self>) {
        self.requested = self.desired.clone();
        self.pending.clear();
        if self.desired.is_empty() {
            self.mark_ready(ctx);
        } else {
            info!(
                "{}: authenticated, subscribing {} symbols ({} streams)",
                self.name(),
                self.desired.symbols().len(),
                self.desired.len()
            );
            self.phase = Phase::Subscribing;
            let desired = self.desired.clone();
            self.send_subscriptions(true, &desired);
        }
    }

    fn mark_ready(&mut self, ctx: &mut Context<Self>) {
        if let Some(back) = self.gap.feed_streaming(self.config.kind) {
            self.config.tap.feed(self.config.kind).changed(back);
            self.link.status.outage_ended();
        }
        self.phase = Phase::Streaming;
        self.last_data = Instant::now();
        self.link.mark_ready();
        self.report();
        ctx.run_later(self.link.policy.stable_after(), |act, _| {
            if act.phase == Phase::Streaming {
                act.link.policy.on_stable();
            }
        });
    }

    fn on_frame(&mut self, data: &Bytes, binary: bool, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if let Some(tape) = &self.config.recorder {
            tape.frame(data, binary);
        }
        self.counters.frame_received();
        self.tap_frame(data, binary);
        let messages = match protocol::decode(data, binary, self.config.encoding) {
            Ok(m) => m,
            Err(e) => {
                self.malformed(format!("skipping an undecodable frame: {e}"));
                return;
            }
        };
        for msg in messages {
            // A message earlier in this frame may have ended the connection (an Alpaca error):
            // the data after it arrived all the same and is delivered; the control messages
            // belong to a connection that is gone.
            let data = matches!(
                msg,
                Inbound::Market { .. } | Inbound::News(_) | Inbound::Info { .. }
            );
            if self.phase == Phase::Idle && !data {
                continue;
            }
            self.on_message(msg, now, ctx);
        }
    }

    /// Hands the frame's market messages, as sent, to the SDK programs listening (if any).
    fn tap_frame(&self, data: &Bytes, binary: bool) {
        let kind = self.config.kind;
        let tap = self.config.tap.feed(kind);
        let (json, msgpack) = tap.demand();
        if !(json || msgpack) || self.phase != Phase::Streaming && self.phase != Phase::Subscribing
        {
            return;
        }
        let elements = protocol::raw::split(data, binary, kind, json, msgpack);
        if !elements.is_empty() {
            tap.publish(RawBatch {
                feed: kind,
                elements: elements.into(),
            });
        }
    }

    fn malformed(&mut self, what: String) {
        let n = self.counters.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= MALFORMED_WARNINGS || n % 1000 == 0 {
            warn!("{}: {what} ({n} malformed so far)", self.name());
        }
    }

    fn on_message(&mut self, msg: Inbound<'_>, now: Instant, ctx: &mut Context<Self>) {
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.counters.count(MessageType::of_inbound(&msg));
        match msg {
            Inbound::Market { symbol, event } => {
                self.saw_data(now);
                if !deliver_market(&self.routes, &self.counters, symbol.as_ref(), event, now) {
                    trace!("{}: event for unrouted symbol {symbol}", self.name());
                }
            }
            Inbound::News(article) => {
                self.saw_data(now);
                match self.outputs.news.try_send(NewsReceived { article }) {
                    Ok(()) => self.counters.events_routed.fetch_add(1, Ordering::Relaxed),
                    Err(_) => self.counters.events_dropped.fetch_add(1, Ordering::Relaxed),
                };
            }
            Inbound::Info { kind, symbol } => {
                self.saw_data(now);
                trace!("{}: {kind:?} for {symbol}", self.name());
            }
            Inbound::Connected => {
                if self.phase == Phase::AwaitingWelcome {
                    // The auth message carries the secret: it is sent, never logged.
                    let auth = protocol::auth_message(&self.config.credentials);
                    self.send_message(&auth);
                    self.phase = Phase::Authenticating;
                } else {
                    debug!("{}: unexpected second welcome", self.name());
                }
            }
            Inbound::Authenticated => {
                if self.phase == Phase::Authenticating {
                    self.subscribe_all(ctx);
                } else {
                    debug!("{}: unexpected authentication message", self.name());
                }
            }
            Inbound::Subscription(acked) => {
                // Each ack is the upstream's whole set: one that shows everything requested
                // acknowledges every request still waiting; otherwise the oldest.
                if acked == self.requested {
                    self.pending.clear();
                } else {
                    self.pending.pop_front();
                }
                self.link.status.subscribed = acked.len();
                debug!("{}: upstream holds {} streams", self.name(), acked.len());
                if self.phase == Phase::Subscribing {
                    self.mark_ready(ctx);
                } else {
                    self.report();
                }
            }
            Inbound::Error { code, msg } => self.on_upstream_error(code, msg, ctx),
            Inbound::Success(text) => debug!("{}: success message {text:?}", self.name()),
            Inbound::Unknown(kind) => {
                debug!("{}: skipping message type {kind:?}", self.name())
            }
            Inbound::Malformed(what) => {
                self.malformed(format!("skipping a malformed message: {what}"))
            }
        }
    }

    fn saw_data(&mut self, now: Instant) {
        self.last_data = now;
        if self.idle_factor > 1 {
            info!("{}: market data flows again", self.name());
            self.idle_factor = 1;
        }
    }

    /// Alpaca's error codes are not all equal: [`Failure::from_alpaca_code`] says which end a
    /// connection, which wait, which are fatal.
    fn on_upstream_error(&mut self, code: u16, msg: String, ctx: &mut Context<Self>) {
        let what = format!("Alpaca error {code} ({msg})");
        let subscribed = matches!(self.phase, Phase::Subscribing | Phase::Streaming);
        if subscribed && matches!(code, 400 | 405 | 413) {
            self.on_refused_request(code, &what, ctx);
            return;
        }
        // Any other error ends the connection.
        self.gap.error(code);
        match Failure::from_alpaca_code(code) {
            Failure::Fatal => {
                let hint = match code {
                    402 => "check APCA_API_KEY_ID / APCA_API_SECRET_KEY",
                    409 => "the account's market data plan does not include this feed",
                    410 => "this feed does not offer a requested channel",
                    _ => "the credentials lack the market data scope",
                };
                self.fail(Failure::Fatal, format!("{what}: {hint}"), ctx);
            }
            Failure::ConnectionLimit => self.fail(
                Failure::ConnectionLimit,
                format!("{what}: another connection uses this account's stream; waiting for Alpaca to drop it"),
                ctx,
            ),
            _ if code == 407 => {
                error!(
                    "{}: {what}: Alpaca says we read too slowly; the host may be overloaded",
                    self.name()
                );
                self.fail(Failure::Transient, what, ctx);
            }
            failure => self.fail(failure, what, ctx),
        }
    }

    /// The oldest unacknowledged request was refused (400, 405 or 413).
    fn on_refused_request(&mut self, code: u16, what: &str, ctx: &mut Context<Self>) {
        let Some(request) = self.pending.pop_front() else {
            warn!("{}: {what} with no request outstanding", self.name());
            return;
        };
        if !request.subscribe {
            warn!("{}: {what}: an unsubscribe was refused", self.name());
            return;
        }
        let symbols: Vec<Symbol> = request.set.symbols().into_iter().collect();
        if symbols.len() > 1 {
            // One bad symbol (400, 413), or one symbol too many (405: the set stays unchanged),
            // refuses the whole message — after a reconnect that is a chunk of up to a thousand
            // working symbols. Ask for each alone: Alpaca accepts every one it can, and only the
            // rest are refused.
            info!(
                "{}: {what} for a request of {} symbols; requesting them one by one",
                self.name(),
                symbols.len()
            );
            for symbol in &symbols {
                let mut one = SubscriptionSet::new();
                for (channel, set) in request.set.iter() {
                    if set.contains(symbol) {
                        one.insert(channel, symbol.clone());
                    }
                }
                self.send_subscriptions(true, &one);
            }
            return;
        }
        warn!(
            "{}: {what}: dropping {} from the subscriptions",
            self.name(),
            symbols
                .iter()
                .map(Symbol::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
        // What this connection asked for no longer includes them; the desired set is the
        // registry's to change (it sends the corrected one).
        self.requested = self.requested.without_symbols(&symbols);
        self.link.status.last_error = Some(what.to_owned());
        self.report();
        self.outputs.rejected.do_send(SymbolsRejected {
            feed: self.config.kind,
            symbols,
            code,
            reason: what.to_owned(),
        });
        if self.phase == Phase::Subscribing && self.pending.is_empty() {
            self.mark_ready(ctx);
        }
    }
}

impl Upstream for UpstreamFeed {
    fn link(&mut self) -> &mut Link {
        &mut self.link
    }

    fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    fn set_connecting(&mut self, connecting: bool) {
        self.phase = if connecting {
            Phase::Connecting
        } else {
            Phase::Idle
        };
    }

    /// Sends the status to the registry if it changed since the last report.
    fn report(&mut self) {
        self.link.status.desired = self.desired.len();
        if let Some(status) = self.link.changed_status() {
            self.outputs.status.do_send(FeedStateChanged { status });
        }
    }

    fn endpoint(&self) -> (String, Option<Encoding>) {
        (self.config.url.clone(), Some(self.config.encoding))
    }

    fn limits(&self) -> (Duration, usize) {
        (self.config.connect_timeout, self.config.max_frame_bytes)
    }

    fn opened(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::AwaitingWelcome;
        debug!("{}: WebSocket open, waiting for the welcome", self.name());
        let auth_timeout = self.config.auth_timeout;
        ctx.run_later(auth_timeout, move |act, ctx| {
            if matches!(
                act.phase,
                Phase::AwaitingWelcome | Phase::Authenticating | Phase::Subscribing
            ) {
                act.fail(
                    Failure::Transient,
                    format!(
                        "no welcome, authentication or subscription ack within {auth_timeout:?}"
                    ),
                    ctx,
                );
            }
        });
        ctx.run_interval(self.config.ping_interval, |act, ctx| act.liveness_tick(ctx));
    }
}

impl Actor for UpstreamFeed {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.link.stopping {
            self.report();
            return;
        }
        // The first connection goes out at once; later ones wait what the policy says.
        let delay = self.link.delay_before_attempt(Duration::ZERO);
        self.report();
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }
}

impl Supervised for UpstreamFeed {
    fn restarting(&mut self, _: &mut Context<Self>) {
        if !self.link.stopping {
            if let Some(lost) = self.gap.feed_ended(self.config.kind) {
                self.config.tap.feed(self.config.kind).changed(lost);
                // Browsers and the Redis sink: each symbol's next price update says so.
                for inlet in self.routes.values() {
                    inlet.mark_gap();
                }
                self.link.status.outage_began();
            }
        }
        self.link.reset();
        self.phase = Phase::Idle;
        self.requested = SubscriptionSet::new();
        self.pending.clear();
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
                self.send_subscriptions(false, &remove);
            }
            if !add.is_empty() {
                self.send_subscriptions(true, &add);
            }
            self.requested = self.desired.clone();
        }
        self.report();
    }
}

impl Handler<StopFeed> for UpstreamFeed {
    type Result = ();

    fn handle(&mut self, _: StopFeed, ctx: &mut Context<Self>) {
        self.stop_for_good(ctx);
    }
}

impl Handler<GateChanged> for UpstreamFeed {
    type Result = ();

    fn handle(&mut self, msg: GateChanged, ctx: &mut Context<Self>) {
        self.gate_changed(msg.0, ctx);
    }
}

impl StreamHandler<Result<Frame, WsProtocolError>> for UpstreamFeed {
    fn handle(&mut self, item: Result<Frame, WsProtocolError>, ctx: &mut Context<Self>) {
        match self.link.receive(item) {
            Received::Data { bytes, binary } => self.on_frame(&bytes, binary, ctx),
            Received::Nothing => {}
            Received::Failed(reason) => self.fail(Failure::Transient, reason, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.fail(
            Failure::Transient,
            "the upstream connection ended".into(),
            ctx,
        );
    }
}

impl WriteHandler<WsProtocolError> for UpstreamFeed {
    fn error(&mut self, err: WsProtocolError, ctx: &mut Self::Context) -> Running {
        self.fail(Failure::Transient, format!("write error: {err}"), ctx);
        Running::Stop
    }
}
