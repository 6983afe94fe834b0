//! `TradingStream`: one account's connection to Alpaca's trading stream (`trade_updates`).
//!
//! Owns: the account's WebSocket (authenticate → listen → events), its REST client, and the
//! account's entry in the [`AccountStore`]. Talks to: the registry (status changes, `order_update`
//! and `position_update` frames for the positions channel, position pins). Lifecycle: started under
//! `actix::Supervisor`, the first connection delayed by the account's stagger; every failure is
//! reported and the supervisor restarts it after what the [`ReconnectPolicy`] says. Credentials
//! the stream refuses are a fatal failure (long hold-off), like Alpaca's 402 on data streams.
//!
//! Once listening it loads the account, positions and open orders through REST and only then
//! reports itself connected (so readiness means the account endpoints can answer); every trade
//! update updates the open orders at once and, after a fill, the account and positions are
//! refreshed (debounced, since fills come in bursts). Position changes go to browsers as
//! `position_update`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::io::WriteHandler;
use actix::prelude::*;
use awc::error::WsProtocolError;
use awc::ws::{Frame, Message as WsMessage};
use log::{debug, info, warn};
use serde_json::{json, Value};

use super::frames::{self, OrderEvent, TradingFrame};
use super::rest::{RestClient, RestError};
use super::AccountStore;
use crate::browser;
use crate::credentials::Credentials;
use crate::downstream::delivery::{DeliverKey, FrameKind};
use crate::registry::{AccountEvent, PinOwner, Registry, SyncPins, TradeUpdate, TradesChanged};
use crate::rng::SplitMix64;
use crate::symbol::Symbol;
use crate::time::Timestamp;
use crate::upstream::connection::{Link, Liveness, Received, Upstream};
use crate::upstream::feed::StopFeed;
use crate::upstream::gate::{Gate, GateChanged};
use crate::upstream::policy::{Failure, PolicyConfig, ReconnectPolicy};
use crate::upstream::tap::Gap;
use crate::upstream::{FeedCounters, FeedId, FeedState, FeedStateChanged, FeedStatus};
use crate::vocab::backoff::BackoffSettings;
use crate::vocab::Backoff;
use crate::vocab::Encoding;

/// A failed REST load is retried this long later.
const RELOAD_AFTER_ERROR: Duration = Duration::from_secs(5);

/// Everything a trading stream needs to know.
#[derive(Clone, Debug)]
pub struct TradingConfig {
    pub account: Arc<str>,
    /// The account's position among the configured ones (keys its `position_update` frames).
    pub index: u64,
    /// `wss://paper-api.alpaca.markets/stream` or the like.
    pub stream_url: String,
    /// `https://paper-api.alpaca.markets` or the like.
    pub rest_url: String,
    pub provider: &'static str,
    pub credentials: Credentials,
    /// Delay of the first connection (accounts start staggered).
    pub start_delay: Duration,
    pub connect_timeout: Duration,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub max_frame_bytes: usize,
    pub backoff: BackoffSettings,
    pub policy: PolicyConfig,
    pub requests_per_minute: u32,
    /// The longest a 429's `Retry-After` makes a REST request wait.
    pub max_retry_after: Duration,
    pub refresh_after_fill: Duration,
    /// Position-based auto-subscription period (zero disables it).
    pub auto_subscribe: Duration,
    /// Connect only while open (several primaries: the lease); `None`: always.
    pub gate: Option<Arc<Gate>>,
    /// Where every frame goes as received, when `[recorder]` records this account.
    pub recorder: Option<crate::recorder::Tape>,
}

/// The state of an account's REST loads.
#[derive(Debug, Default)]
struct Loads {
    in_flight: bool,
    /// A load was asked for while one ran (with the open orders, or not).
    again: Option<bool>,
    retry_scheduled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting,
    Authenticating,
    Listening,
    Streaming,
}

/// The trading-stream actor of one account.
pub struct TradingStream {
    config: TradingConfig,
    registry: Addr<Registry>,
    store: AccountStore,
    counters: Arc<FeedCounters>,
    /// Retry policy, writer, status, liveness: the connection's lifecycle.
    link: Link,
    rest: RestClient,
    phase: Phase,
    /// A refresh after a fill is scheduled.
    refresh_pending: bool,
    /// REST loads: at most one in flight, one waiting, one retry timer.
    loads: Loads,
    /// Sequence of order events (keys their frames so none replaces another).
    order_seq: u64,
    /// Whether the `/stream` listeners must hear of a loss or a return.
    gap: Gap,
}

impl TradingStream {
    pub fn new(
        config: TradingConfig,
        registry: Addr<Registry>,
        store: AccountStore,
        counters: Arc<FeedCounters>,
    ) -> Self {
        let id = FeedId::Trading(config.account.clone());
        let status = FeedStatus::new(id, config.provider, config.stream_url.clone());
        let seed =
            SplitMix64::from_entropy().next_u64() ^ crate::rng::fnv1a(config.account.as_bytes());
        let backoff = Backoff::new(config.backoff.clone(), SplitMix64::new(seed));
        let link = Link::new(
            format!("account {}", config.account),
            ReconnectPolicy::new(config.policy.clone(), backoff),
            status,
            Liveness::new(config.ping_interval, config.pong_timeout),
            config.max_frame_bytes,
        )
        .with_gate(config.gate.clone())
        .with_counters(counters.clone());
        TradingStream {
            rest: RestClient::new(
                &config.rest_url,
                config.credentials.clone(),
                config.requests_per_minute,
                config.connect_timeout,
                config.max_retry_after,
            ),
            config,
            registry,
            store,
            counters,
            link,
            phase: Phase::Idle,
            refresh_pending: false,
            loads: Loads::default(),
            order_seq: 0,
            gap: Gap::default(),
        }
    }

    fn id(&self) -> &str {
        &self.config.account
    }

    fn on_frame(&mut self, raw: &[u8], ctx: &mut Context<Self>) {
        self.counters.frame_received();
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        match frames::parse(raw) {
            TradingFrame::Malformed => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                warn!("account {}: skipping a frame that is not JSON", self.id());
            }
            TradingFrame::Authorized if self.phase == Phase::Authenticating => {
                let listen = json!({"action": "listen", "data": {"streams": ["trade_updates"]}});
                self.link.write(WsMessage::Text(listen.to_string().into()));
                self.phase = Phase::Listening;
            }
            TradingFrame::Authorized => debug!("account {}: repeated authorization", self.id()),
            TradingFrame::Unauthorized { message } => self.fail(
                Failure::Fatal,
                format!("the trading stream refused the credentials ({message}); check this account's key pair"),
                ctx,
            ),
            TradingFrame::Listening { trade_updates } => {
                if self.phase == Phase::Listening && trade_updates {
                    info!(
                        "account {}: listening to trade updates; loading the account",
                        self.id()
                    );
                    self.phase = Phase::Streaming;
                    self.load(true, ctx);
                }
            }
            TradingFrame::TradeUpdate(event) => {
                // SDK programs on /stream get the message exactly as Alpaca sent it.
                self.registry.do_send(TradeUpdate {
                    account: self.config.account.clone(),
                    frame: bytes::Bytes::copy_from_slice(raw),
                });
                self.on_trade_update(event, ctx)
            }
            TradingFrame::Other(stream) => {
                debug!("account {}: skipping stream {stream:?}", self.id())
            }
        }
    }

    fn mark_ready(&mut self, ctx: &mut Context<Self>) {
        if self.gap.streaming() {
            self.link.status.outage_ended();
            self.registry.do_send(TradesChanged {
                account: self.config.account.clone(),
                up: true,
            });
        }
        self.link.mark_ready();
        self.link.status.last_error = None;
        self.report();
        ctx.run_later(self.link.policy.stable_after(), |act, _| {
            if act.phase == Phase::Streaming {
                act.link.policy.on_stable();
            }
        });
    }

    fn on_trade_update(&mut self, event: OrderEvent, ctx: &mut Context<Self>) {
        self.counters.events_routed.fetch_add(1, Ordering::Relaxed);
        self.store.update(&self.config.account, |a| {
            a.last_event_at = Some(Timestamp::now());
            if event.open {
                a.orders
                    .insert(event.order_id.clone(), event.order().clone());
            } else {
                a.orders.remove(&event.order_id);
            }
        });
        self.order_seq += 1;
        let key = DeliverKey {
            symbol: event.symbol.clone(),
            kind: FrameKind::Order(self.order_seq),
        };
        let frame = browser::order_update(self.id(), &event.event, &event.data);
        self.registry.do_send(AccountEvent {
            account: self.config.account.clone(),
            key,
            frame,
        });
        if event.is_fill() {
            self.schedule_refresh(ctx);
        }
    }

    /// Refreshes the account and positions a moment after a fill (once per burst).
    fn schedule_refresh(&mut self, ctx: &mut Context<Self>) {
        if self.refresh_pending {
            return;
        }
        self.refresh_pending = true;
        ctx.run_later(self.config.refresh_after_fill, |act, ctx| {
            act.refresh_pending = false;
            act.load(false, ctx);
        });
    }

    /// Loads the account and positions (and, on `with_orders`, the open orders) through REST.
    /// One load at a time: a load asked for while one runs is done once after it (never one per
    /// fill), and a failed load is retried by a single timer.
    fn load(&mut self, with_orders: bool, ctx: &mut Context<Self>) {
        if self.loads.in_flight {
            self.loads.again = Some(self.loads.again.unwrap_or(false) | with_orders);
            return;
        }
        self.loads.in_flight = true;
        let rest = self.rest.clone();
        let fetch = async move {
            let account = rest.get("/v2/account").await?;
            let positions = rest.get("/v2/positions").await?;
            let orders = if with_orders {
                Some(rest.get("/v2/orders?status=open&limit=500").await?)
            } else {
                None
            };
            Ok::<_, RestError>((account, positions, orders))
        };
        ctx.spawn(fetch.into_actor(self).map(|res, act, ctx| {
            act.loads.in_flight = false;
            match res {
                Ok((account, positions, orders)) => {
                    act.apply(account, positions, orders);
                    if act.phase == Phase::Streaming
                        && act.link.status.state != FeedState::Connected
                    {
                        act.mark_ready(ctx);
                    }
                    if let Some(with_orders) = act.loads.again.take() {
                        act.load(with_orders, ctx);
                    }
                }
                Err(e) => {
                    act.link.status.last_error = Some(e.to_string());
                    act.report();
                    // What was asked meanwhile is covered by the retry (a full load).
                    act.loads.again = None;
                    if act.loads.retry_scheduled {
                        return;
                    }
                    warn!(
                        "account {}: {e}; retrying in {RELOAD_AFTER_ERROR:?}",
                        act.id()
                    );
                    act.loads.retry_scheduled = true;
                    ctx.run_later(RELOAD_AFTER_ERROR, |act, ctx| {
                        act.loads.retry_scheduled = false;
                        if act.phase == Phase::Streaming {
                            act.load(true, ctx);
                        }
                    });
                }
            }
        }));
    }

    /// Stores what REST returned and tells browsers which positions changed.
    fn apply(&mut self, account: Value, positions: Value, orders: Option<Value>) {
        let by_symbol = |list: Value, key: &str| -> BTreeMap<String, Value> {
            match list {
                Value::Array(items) => items
                    .into_iter()
                    .filter_map(|v| Some((v.get(key)?.as_str()?.to_owned(), v)))
                    .collect(),
                _ => BTreeMap::new(),
            }
        };
        let positions = by_symbol(positions, "symbol");
        let orders = orders.map(|o| by_symbol(o, "id"));
        let previous = self
            .store
            .get(&self.config.account)
            .map(|a| a.positions)
            .unwrap_or_default();
        let mut changed: Vec<Value> = positions
            .iter()
            .filter(|(symbol, p)| previous.get(*symbol) != Some(*p))
            .map(|(_, p)| p.clone())
            .collect();
        for symbol in previous.keys().filter(|s| !positions.contains_key(*s)) {
            changed.push(
                json!({"symbol": symbol, "qty": "0", "side": null, "avg_entry_price": null,
                                "market_value": "0", "current_price": null, "unrealized_pl": "0"}),
            );
        }
        let count = positions.len();
        self.store.update(&self.config.account, |a| {
            a.account = Some(account);
            a.positions = positions;
            if let Some(orders) = orders {
                a.orders = orders;
            }
            a.has_data = true;
            a.refreshed_at = Some(Timestamp::now());
        });
        // The record keeps what was loaded, so a replay answers this state after these events.
        if let (Some(tape), Some(state)) =
            (&self.config.recorder, self.store.get(&self.config.account))
        {
            tape.snapshot(&state);
        }
        debug!(
            "account {}: refreshed ({count} positions, {} changed)",
            self.id(),
            changed.len()
        );
        for p in &changed {
            let symbol = p["symbol"].as_str().unwrap_or_default();
            let key = DeliverKey {
                symbol: Symbol::from_trading(symbol, p["asset_class"].as_str())
                    .unwrap_or_else(|_| Symbol::wildcard()),
                kind: FrameKind::Position(self.config.index),
            };
            let frame = browser::position_update(self.id(), p);
            self.registry.do_send(AccountEvent {
                account: self.config.account.clone(),
                key,
                frame,
            });
        }
        if !changed.is_empty() {
            self.sync_pins();
        }
    }

    /// Position-based auto-subscription: keep quotes pinned for the symbols of open positions.
    fn sync_pins(&mut self) {
        if self.config.auto_subscribe.is_zero() {
            return;
        }
        let symbols = self
            .store
            .get(&self.config.account)
            .map(|a| {
                a.positions
                    .iter()
                    .filter_map(|(s, p)| Symbol::from_trading(s, p["asset_class"].as_str()).ok())
                    .collect()
            })
            .unwrap_or_default();
        self.registry.do_send(SyncPins {
            symbols,
            owner: PinOwner::Account(self.config.account.clone()),
        });
    }
}

impl Upstream for TradingStream {
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

    fn report(&mut self) {
        let Some(status) = self.link.changed_status() else {
            return;
        };
        let (connected, attempts, error) = (
            status.state == FeedState::Connected,
            status.reconnect_attempts,
            status.last_error.clone(),
        );
        self.store.update(&self.config.account, |a| {
            a.connected = connected;
            a.reconnect_attempts = attempts;
            a.last_error = error;
        });
        self.registry.do_send(FeedStateChanged { status });
    }

    fn endpoint(&self) -> (String, Option<Encoding>) {
        // The trading stream takes no Content-Type: it answers JSON in binary frames.
        (self.config.stream_url.clone(), None)
    }

    fn limits(&self) -> (Duration, usize) {
        (self.config.connect_timeout, self.config.max_frame_bytes)
    }

    fn opened(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Authenticating;
        // Carries the secret: sent, never logged.
        let auth = json!({
            "action": "authenticate",
            "data": {
                "key_id": self.config.credentials.key_id.expose(),
                "secret_key": self.config.credentials.secret_key.expose(),
            }
        });
        self.link.write(WsMessage::Text(auth.to_string().into()));
        let limit = self.config.auth_timeout;
        ctx.run_later(limit, move |act, ctx| {
            if matches!(act.phase, Phase::Authenticating | Phase::Listening) {
                act.fail(
                    Failure::Transient,
                    format!("no authorization or listening ack within {limit:?}"),
                    ctx,
                );
            }
        });
        ctx.run_interval(self.config.ping_interval, |act, ctx| {
            if let Err(reason) = act.link.ping() {
                act.fail(Failure::Transient, reason, ctx);
            }
        });
    }
}

impl Actor for TradingStream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.link.stopping {
            self.report();
            return;
        }
        if !self.config.auto_subscribe.is_zero() {
            ctx.run_interval(self.config.auto_subscribe, |act, _| act.sync_pins());
        }
        // The first connection waits the account's stagger; later ones what the policy says.
        let delay = self.link.delay_before_attempt(self.config.start_delay);
        self.report();
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }
}

impl Supervised for TradingStream {
    fn restarting(&mut self, _: &mut Context<Self>) {
        if !self.link.stopping && self.gap.ended().is_some() {
            // The SDK programs on `/stream` for this account reconnect and reconcile.
            self.link.status.outage_began();
            self.registry.do_send(TradesChanged {
                account: self.config.account.clone(),
                up: false,
            });
        }
        self.link.reset();
        self.phase = Phase::Idle;
        self.refresh_pending = false;
        // The old context's load and retry timer are gone with it.
        self.loads = Loads::default();
    }
}

impl Handler<StopFeed> for TradingStream {
    type Result = ();

    fn handle(&mut self, _: StopFeed, ctx: &mut Context<Self>) {
        self.stop_for_good(ctx);
    }
}

impl Handler<GateChanged> for TradingStream {
    type Result = ();

    fn handle(&mut self, msg: GateChanged, ctx: &mut Context<Self>) {
        self.gate_changed(msg.0, ctx);
    }
}

impl StreamHandler<Result<Frame, WsProtocolError>> for TradingStream {
    fn handle(&mut self, item: Result<Frame, WsProtocolError>, ctx: &mut Context<Self>) {
        match self.link.receive(item) {
            Received::Data { bytes, binary } => {
                if let Some(tape) = &self.config.recorder {
                    tape.frame(&bytes, binary);
                }
                self.on_frame(&bytes, ctx)
            }
            Received::Nothing => {}
            Received::Failed(reason) => self.fail(Failure::Transient, reason, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.fail(Failure::Transient, "the trading stream ended".into(), ctx);
    }
}

impl WriteHandler<WsProtocolError> for TradingStream {
    fn error(&mut self, err: WsProtocolError, ctx: &mut Self::Context) -> Running {
        self.fail(Failure::Transient, format!("write error: {err}"), ctx);
        Running::Stop
    }
}
