//! `ClientSession`: one actor per browser WebSocket on `GET /ws` (`browser-protocol.md`).
//!
//! Owns: the client's subscriptions (a local view for the per-client symbol limit), its outbox
//! (shared with its worker's hub and its socket writer) and the reassembly of fragmented client
//! messages. Talks to: the registry (connect, subscribe, unsubscribe: control round trips that may
//! await), its worker's [hub](crate::hub) (which symbols this session wants, so market frames reach
//! the outbox without passing through this actor), and receives [`SessionCommand`]s from the
//! registry and the hub. Stops when the client closes or its connection vanishes, on a protocol
//! error, when the hub finds it too slow (4008) or silent, and at daemon shutdown (1001); however it
//! ends, the registry and the hub forget it.
//!
//! The actor runs on its worker's arbiter, apart from the task that writes its socket, so a client that stops
//! reading never freezes it: the outbox conflates what the socket does not take.
//!
//! - [`incoming`] — the request body decoded into WebSocket frames.
//!
//! Its output queue is the [outbox](crate::outbox), shared with the hub.

pub mod incoming;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{Frame, Item, ProtocolError};
use bytestring::ByteString;
use log::{debug, info, warn};

use crate::auth::Principal;
use crate::browser::{
    self, ChannelMask, ClientChannel, ClientError, ClientRequest, ErrorCode, PriceKind,
    PriceUpdate, Rejection,
};
use crate::delivery::{DeliverKey, SessionCommand, SessionId, SessionStats, Subscriber};
use crate::hub::{LocalHub, CLOSE_SLOW_CLIENT};
use crate::market::Num;
use crate::outbox::Outbox;
use crate::quote_book::QuoteBook;
use crate::registry::{Connect, Disconnect, Registry, Subscribe, Unsubscribe};
use crate::settings::SessionSettings;
use crate::symbol::{AssetClass, Symbol};
use crate::time::Timestamp;
use crate::upstream::connection::{FragmentError, Reassembler};

/// What every session needs to know.
#[derive(Debug)]
pub struct SessionConfig {
    pub settings: SessionSettings,
    pub provider: &'static str,
    pub throttle_ms: u64,
    /// Snapshots older than this (by exchange time) say `"stale": true`.
    pub stale_after: Duration,
    /// Clients and scopes, for the `auth` frame.
    pub auth: Arc<crate::auth::Auth>,
}

/// The socket writer is gone: the client disconnected or stopped taking data for good.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionLost;

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
    hub: LocalHub,
    /// Latest prices, for snapshots on subscribe.
    quotes: QuoteBook,
    stats: Arc<SessionStats>,
    outbox: Rc<RefCell<Outbox>>,
    /// What this client is subscribed to (mirrors the registry's view).
    symbols: HashMap<Symbol, ChannelMask>,
    /// A fragmented message being reassembled (bounded by the frame limit).
    fragments: Reassembler,
    /// Client message budget.
    rate: RateLimit,
    /// Who the client is (anonymous until an `auth` frame names a client) and what it may do.
    principal: Principal,
    /// Refused `auth` frames so far; the connection closes at [`MAX_FAILED_AUTHS`].
    failed_auths: u32,
    /// Subscribed to the positions channel (its account filter follows the principal).
    follows_positions: bool,
}

/// Refused credentials one connection may send before it is closed with 1008.
const MAX_FAILED_AUTHS: u32 = 3;

impl ClientSession {
    pub fn new(
        id: SessionId,
        config: Arc<SessionConfig>,
        registry: Addr<Registry>,
        hub: LocalHub,
        quotes: QuoteBook,
        outbox: Rc<RefCell<Outbox>>,
        stats: Arc<SessionStats>,
    ) -> Self {
        ClientSession {
            fragments: Reassembler::new(config.settings.max_frame_bytes),
            rate: RateLimit::new(config.settings.max_messages_per_second),
            id,
            registry,
            hub,
            quotes,
            stats,
            outbox,
            symbols: HashMap::new(),
            principal: config.auth.anonymous(),
            failed_auths: 0,
            follows_positions: false,
            config,
        }
    }

    /// Queues a control frame (ack, error, pong, status).
    fn send(&mut self, frame: ByteString) {
        self.outbox.borrow_mut().push_control(frame);
    }

    fn send_error(&mut self, err: &ClientError) {
        debug!("session {}: {:?}: {}", self.id, err.code, err.message);
        self.send(browser::error(err));
    }

    /// Queues the close frame (only the first close counts: the outbox accepts nothing after
    /// one, nor once the connection is gone) and stops.
    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        self.outbox.borrow_mut().close(code, reason);
        ctx.stop();
    }

    /// Forgets symbols the registry says are gone (refused upstream).
    fn forget_symbols(&mut self, symbols: &[Symbol]) {
        for s in symbols {
            if self.symbols.remove(s).is_some() {
                self.hub.set_channels(self.id, s, ChannelMask::EMPTY);
            }
        }
        self.outbox
            .borrow_mut()
            .forget(|k| symbols.contains(&k.symbol));
        self.stats
            .symbols
            .store(self.symbols.len(), Ordering::Relaxed);
    }

    /// Tells the hub which market channels this session now wants for `symbol`.
    fn sync_hub(&self, symbol: &Symbol) {
        let market = self
            .symbols
            .get(symbol)
            .copied()
            .unwrap_or_default()
            .intersect(ChannelMask::MARKET);
        self.hub.set_channels(self.id, symbol, market);
    }

    /// The cached price of `symbol`, as a snapshot frame.
    fn snapshot(&self, symbol: &Symbol) -> Option<ByteString> {
        let cached = self.quotes.get(symbol.as_str())?;
        let stale = cached.age_at(Timestamp::now()) > self.config.stale_after;
        let mut update = PriceUpdate::new(symbol, &cached.price, stale);
        let kind = match symbol.class() {
            AssetClass::Option => {
                update.volume = Some(Num::Int(cached.volume));
                PriceKind::Option
            }
            AssetClass::Stock | AssetClass::Crypto => PriceKind::Spot,
        };
        Some(browser::price_update(kind, &update, true).frame)
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if !self.rate.allow(Instant::now()) {
            let limit = self.config.settings.max_messages_per_second;
            self.send_error(&ClientError::new(
                ErrorCode::RateLimited,
                format!("more than {limit} messages per second; this one was ignored"),
            ));
            return;
        }
        // A few past the cap are still read, so a small overflow names its symbols.
        let readable = self.config.settings.max_symbols + browser::MAX_LISTED_REJECTIONS;
        match browser::parse_request(text, readable) {
            Ok(request) => self.on_request(request, ctx),
            Err(err) => self.send_error(&err),
        }
    }

    fn on_request(&mut self, request: ClientRequest, ctx: &mut Context<Self>) {
        match request {
            ClientRequest::Subscribe {
                symbols,
                channels,
                rejected,
                invalid,
                over_limit,
            } => self.subscribe(symbols, channels, (rejected, invalid), over_limit, ctx),
            ClientRequest::Unsubscribe { symbols, channels } => {
                self.unsubscribe(symbols, channels, ctx)
            }
            ClientRequest::Configure { batch } => {
                if let Some(on) = batch {
                    self.outbox.borrow_mut().set_batching(on);
                }
            }
            ClientRequest::Ping { id } => self.send(browser::pong(id.as_ref())),
            ClientRequest::Auth { token } => self.authenticate(token.expose(), ctx),
        }
    }

    /// An `auth` frame: the connection becomes the client whose key pair it names.
    fn authenticate(&mut self, token: &str, ctx: &mut Context<Self>) {
        if let Some(client) = &self.principal.client {
            let message = format!(
                "already signed in as {client}; open a new connection to sign in as another client"
            );
            self.send_error(&ClientError::new(ErrorCode::Unauthorized, message));
            return;
        }
        match self.config.auth.token(token) {
            Ok(principal) => {
                info!(
                    "session {} ({}): signed in as client {}",
                    self.id,
                    self.stats.peer,
                    principal.name()
                );
                let _ = self.stats.client.set(Arc::from(principal.name()));
                self.principal = principal;
                self.send(browser::authenticated(
                    self.principal.name(),
                    &self.principal.scopes.names(),
                ));
                if self.follows_positions {
                    // The account filter widens to the client's accounts.
                    self.registry.do_send(Subscribe {
                        session: self.id,
                        symbols: Vec::new(),
                        channels: ChannelMask::of(&[ClientChannel::Positions]),
                        scopes: self.principal.scopes.clone(),
                    });
                }
            }
            Err(refusal) => {
                self.failed_auths += 1;
                // The token may be a secret: never logged.
                info!(
                    "session {} ({}): auth refused ({refusal}), attempt {}",
                    self.id, self.stats.peer, self.failed_auths
                );
                self.send_error(&ClientError::new(
                    ErrorCode::Unauthorized,
                    format!("auth refused: {refusal}"),
                ));
                if self.failed_auths >= MAX_FAILED_AUTHS {
                    self.close(ctx, 1008, "too many refused credentials");
                }
            }
        }
    }

    /// Why this connection may not subscribe to `mask`, if it may not.
    fn forbidden(&self, mask: ChannelMask) -> Option<ClientError> {
        let scopes = &self.principal.scopes;
        let market = mask.intersect(ChannelMask::MARKET.union(ChannelMask::NEWS));
        let sign_in = if self.principal.client.is_none() {
            "; sign in with {\"action\":\"auth\",\"token\":\"<key_id>:<secret>\"}"
        } else {
            ""
        };
        if !market.is_empty() && !scopes.market() {
            return Some(ClientError::new(
                ErrorCode::Unauthorized,
                format!("market data needs the market scope{sign_in}"),
            ));
        }
        if mask.contains(ClientChannel::Positions) && scopes.accounts().is_empty() {
            return Some(ClientError::new(
                ErrorCode::Unauthorized,
                format!("the positions channel needs an account:<id> scope{sign_in}"),
            ));
        }
        None
    }

    fn subscribe(
        &mut self,
        symbols: Vec<Symbol>,
        channels: Vec<ClientChannel>,
        (mut rejected, invalid): (Vec<Rejection>, usize),
        over_limit: usize,
        ctx: &mut Context<Self>,
    ) {
        if let Some(refusal) = self.forbidden(ChannelMask::of(&channels)) {
            self.send_error(&refusal);
            return;
        }
        let max = self.config.settings.max_symbols;
        let mut count = self.symbols.len();
        let mut wanted = Vec::with_capacity(symbols.len());
        let mut over = over_limit;
        for s in symbols {
            if self.symbols.contains_key(&s) {
                wanted.push(s);
            } else if count < max {
                count += 1;
                wanted.push(s);
            } else {
                over += 1;
                if rejected.len() < browser::MAX_LISTED_REJECTIONS {
                    rejected.push(Rejection {
                        symbol: s.to_string(),
                        code: ErrorCode::TooManySymbols,
                        message: format!("at most {max} symbols per connection"),
                    });
                }
            }
        }
        // Every refusal counts in `rejected_count`; only the first few are listed.
        let rejected_count = invalid + over;
        if over > 0 {
            self.send_error(&ClientError::new(
                ErrorCode::TooManySymbols,
                format!("{over} symbols not subscribed: at most {max} symbols per connection"),
            ));
        }
        let mask = ChannelMask::of(&channels);
        if wanted.is_empty() && !mask.contains(ClientChannel::Positions) {
            self.send(browser::subscribed_with_total(
                &[],
                &channels,
                &rejected,
                rejected_count,
            ));
            return;
        }
        if mask.contains(ClientChannel::Positions) {
            self.follows_positions = true;
        }
        let request = Subscribe {
            session: self.id,
            symbols: wanted,
            channels: mask,
            scopes: self.principal.scopes.clone(),
        };
        // `wait` holds back other client messages until the ack is queued, so acks keep the order
        // of the requests.
        self.registry
            .send(request)
            .into_actor(self)
            .map(move |res, act, ctx| match res {
                Ok(outcome) => {
                    for s in &outcome.accepted {
                        let m = act.symbols.entry(s.clone()).or_default();
                        *m = m.union(mask);
                        act.sync_hub(s);
                    }
                    let rejected_count = rejected_count + outcome.rejected.len();
                    rejected.extend(outcome.rejected);
                    act.stats
                        .symbols
                        .store(act.symbols.len(), Ordering::Relaxed);
                    act.send(browser::subscribed_with_total(
                        &outcome.accepted,
                        &channels,
                        &rejected,
                        rejected_count,
                    ));
                    if mask.contains(ClientChannel::Quotes) {
                        for s in &outcome.accepted {
                            if let Some(frame) = act.snapshot(s) {
                                let key = DeliverKey {
                                    symbol: s.clone(),
                                    kind: crate::delivery::FrameKind::Price,
                                };
                                act.outbox.borrow_mut().push_latest(&key, &frame, &None);
                            }
                        }
                    }
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
        ctx: &mut Context<Self>,
    ) {
        let mask = ChannelMask::of(&channels);
        if mask.contains(ClientChannel::Positions) {
            self.follows_positions = false;
        }
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
                        act.sync_hub(s);
                    }
                }
                let still = &act.symbols;
                act.outbox.borrow_mut().forget(|k| {
                    let channel = k.kind.channel();
                    channel.is_market()
                        && !still.get(&k.symbol).is_some_and(|m| m.contains(channel))
                });
                act.stats
                    .symbols
                    .store(act.symbols.len(), Ordering::Relaxed);
                act.send(browser::unsubscribed(&symbols, &channels));
            })
            .wait(ctx);
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut Context<Self>) {
        match self.fragments.push(item) {
            Ok(None) => {}
            Ok(Some((true, _))) => self.binary_refused(),
            Ok(Some((false, whole))) => match std::str::from_utf8(&whole) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.send_error(&ClientError::new(
                    ErrorCode::InvalidJson,
                    "message is not UTF-8",
                )),
            },
            Err(FragmentError::TooLarge(_)) => self.too_large(ctx),
            Err(FragmentError::Orphan) => self.send_error(&ClientError::new(
                ErrorCode::InvalidJson,
                "continuation frame without a first fragment",
            )),
        }
    }

    fn binary_refused(&mut self) {
        self.send_error(&ClientError::new(
            ErrorCode::InvalidJson,
            "binary frames are not supported; send JSON text",
        ));
    }

    fn too_large(&mut self, ctx: &mut Context<Self>) {
        let max = self.config.settings.max_frame_bytes;
        self.send_error(&ClientError::new(
            ErrorCode::FrameTooLarge,
            format!("messages are limited to {max} bytes"),
        ));
        self.close(ctx, 1009, "frame too large");
    }
}

impl Actor for ClientSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!("session {} ({}): connected", self.id, self.stats.peer);
        let welcome = browser::welcome(
            self.config.provider,
            self.config.throttle_ms,
            self.id,
            self.config.settings.max_symbols,
            &self.principal.scopes.names(),
        );
        self.send(welcome);
        let commands = ctx.address().recipient();
        self.hub
            .register(self.id, self.outbox.clone(), commands.clone());
        let connect = Connect {
            session: self.id,
            subscriber: Subscriber {
                hub: self.hub.id(),
                publish: self.hub.publisher(),
                commands,
                stats: self.stats.clone(),
            },
        };
        self.registry
            .send(connect)
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(status_frames) => {
                    for frame in status_frames {
                        act.send(frame);
                    }
                }
                Err(e) => {
                    warn!("session {}: registry unavailable: {e}", act.id);
                    act.close(ctx, 1011, "internal error");
                }
            })
            .wait(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // A no-op after an earlier close or once the connection is gone; otherwise the client
        // went away without a close handshake.
        self.outbox.borrow_mut().close(1000, "");
        self.hub.unregister(self.id, self.symbols.keys());
        self.registry.do_send(Disconnect { session: self.id });
        debug!("session {}: ended", self.id);
    }
}

impl Handler<SessionCommand> for ClientSession {
    type Result = ();

    fn handle(&mut self, msg: SessionCommand, ctx: &mut Self::Context) {
        match msg {
            SessionCommand::Send(frame) => self.send(frame),
            SessionCommand::Event { key, frame } => {
                let must = key.kind.must_deliver();
                if self.outbox.borrow_mut().push_event(frame, must).is_err() {
                    warn!(
                        "session {} ({}): closing with {CLOSE_SLOW_CLIENT}: an account event could not be queued (the client is not reading)",
                        self.id, self.stats.peer
                    );
                    self.close(
                        ctx,
                        CLOSE_SLOW_CLIENT,
                        "slow client: account events could not be delivered",
                    );
                }
            }
            SessionCommand::Rejected { symbols, frame } => {
                self.forget_symbols(&symbols);
                self.send(frame);
            }
            SessionCommand::Close { code, reason } => self.close(ctx, code, &reason),
            SessionCommand::Refused { .. } | SessionCommand::TradeUpdate(_) => {}
        }
    }
}

impl Handler<ConnectionLost> for ClientSession {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl StreamHandler<Result<Frame, ProtocolError>> for ClientSession {
    fn handle(&mut self, item: Result<Frame, ProtocolError>, ctx: &mut Self::Context) {
        self.outbox.borrow().last_heard.set(Instant::now());
        match item {
            Ok(Frame::Text(bytes)) => match std::str::from_utf8(&bytes) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.send_error(&ClientError::new(
                    ErrorCode::InvalidJson,
                    "message is not UTF-8",
                )),
            },
            Ok(Frame::Binary(_)) => self.binary_refused(),
            Ok(Frame::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(Frame::Ping(payload)) => self.outbox.borrow_mut().push_pong(payload),
            Ok(Frame::Pong(_)) => {}
            Ok(Frame::Close(reason)) => {
                debug!("session {}: client closed ({reason:?})", self.id);
                let code = reason.map_or(1000, |r| u16::from(r.code));
                self.close(ctx, code, "");
            }
            Err(ProtocolError::Overflow) => self.too_large(ctx),
            Err(e) => {
                debug!("session {}: protocol error: {e}", self.id);
                self.close(ctx, 1002, "protocol error");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
