//! `ClientSession`: one actor per browser WebSocket on `GET /ws`, speaking the browser protocol.
//!
//! Owns: the client's subscriptions (a local view for the per-client symbol limit) and who it
//! signed in as; its connection — outbox (shared with its worker's hub and its socket writer),
//! reassembly, rate limit, invalid-message count — is the [peer core](crate::downstream::peer).
//! Talks to: the registry (connect, subscribe, unsubscribe: control round trips that may
//! await), its worker's [hub](crate::downstream::hub) (which symbols this session wants, so market frames reach
//! the outbox without passing through this actor), and receives [`SessionCommand`]s from the
//! registry and the hub. Stops when the client closes or its connection vanishes, on a protocol
//! error or too many invalid messages (1008), when the hub finds it too slow (4008) or silent,
//! when it does not sign in within `session.auth_timeout_ms` while anonymous callers may do
//! nothing (1008), and at daemon shutdown (1001); however it ends, the registry and the hub
//! forget it.
//!
//! The actor runs on its worker's arbiter, apart from the task that writes its socket, so a
//! client that stops reading never freezes it: the outbox conflates what the socket does not take.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::Frame;
use bytestring::ByteString;
use log::{debug, info, warn};

use crate::auth::{Principal, Refusal};
use crate::browser::{self, ClientError, ClientRequest, ErrorCode, PriceUpdate, Rejection};
use crate::downstream::delivery::{DeliverKey, SessionCommand};
use crate::downstream::outbox::{BatchFrame, CLOSE_SLOW_CLIENT};
use crate::downstream::peer::{ConnectionLost, Input, Peer, TOO_MANY_INVALID, TOO_MANY_REFUSED};
use crate::downstream::socket::ReadError;
use crate::market::Num;
use crate::quote_book::QuoteBook;
use crate::registry::{Connect, Disconnect, Registry, Subscribe, Unsubscribe};
use crate::settings::SessionSettings;
use crate::symbol::{AssetClass, Symbol};
use crate::time::Timestamp;
use crate::vocab::{ChannelMask, ClientChannel, PriceKind};

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

/// The browser session actor.
pub struct ClientSession {
    /// The connection: outbox, stats, reassembly, inbound limits.
    peer: Peer,
    config: Arc<SessionConfig>,
    registry: Addr<Registry>,
    /// Latest prices, for snapshots on subscribe.
    quotes: QuoteBook,
    /// What this client is subscribed to (mirrors the registry's view).
    symbols: HashMap<Symbol, ChannelMask>,
    /// Who the client is (anonymous until an `auth` frame names a client) and what it may do.
    principal: Principal,
    /// Subscribed to the positions channel (its account filter follows the principal).
    follows_positions: bool,
}

impl ClientSession {
    pub fn new(
        peer: Peer,
        config: Arc<SessionConfig>,
        registry: Addr<Registry>,
        quotes: QuoteBook,
    ) -> Self {
        ClientSession {
            peer,
            registry,
            quotes,
            symbols: HashMap::new(),
            principal: config.auth.anonymous(),
            follows_positions: false,
            config,
        }
    }

    /// Queues a control frame (ack, error, pong, status); past the byte budget the outbox
    /// closes the connection itself.
    fn send(&mut self, frame: ByteString) {
        let _ = self.peer.outbox.borrow_mut().push_control(frame);
    }

    fn send_error(&mut self, err: &ClientError) {
        debug!("session {}: {:?}: {}", self.peer.id, err.code, err.message);
        self.send(browser::error(err));
    }

    /// Answers a message the protocol refuses; closes a client that keeps sending them.
    fn refuse(&mut self, err: &ClientError, ctx: &mut Context<Self>) {
        self.send_error(err);
        if self.peer.strike() {
            self.close(ctx, TOO_MANY_INVALID.0, TOO_MANY_INVALID.1);
        }
    }

    /// Queues the close frame (only the first close counts: the outbox accepts nothing after
    /// one, nor once the connection is gone); the session stops once it has gone out and the
    /// client has closed its side (or the linger time passed), at most [`CLOSING_LIMIT`](crate::downstream::peer::CLOSING_LIMIT) from now.
    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        if self.peer.close_session(ctx, code, reason) {
            self.detach();
        }
    }

    /// Leaves the hub and the registry: from its close on, the session only drains its socket.
    fn detach(&mut self) {
        if self.peer.detach() {
            self.peer.hub.unregister(self.peer.id, self.symbols.keys());
            self.registry.do_send(Disconnect {
                session: self.peer.id,
            });
        }
    }

    /// Forgets symbols the registry says are gone (refused upstream).
    fn forget_symbols(&mut self, symbols: &[Symbol]) {
        for s in symbols {
            if self.symbols.remove(s).is_some() {
                self.peer
                    .hub
                    .set_channels(self.peer.id, s, ChannelMask::EMPTY);
            }
        }
        self.peer
            .outbox
            .borrow_mut()
            .forget(|k| symbols.contains(&k.symbol));
        self.peer
            .stats
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
        self.peer.hub.set_channels(self.peer.id, symbol, market);
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
        // A few past the cap are still read, so a small overflow names its symbols.
        let readable = self.config.settings.max_symbols + browser::MAX_LISTED_REJECTIONS;
        match browser::parse_request(text, readable) {
            Ok(request) => self.on_request(request, ctx),
            Err(err) => self.refuse(&err, ctx),
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
                    let batch = on.then_some(browser::price_batch as BatchFrame);
                    self.peer.outbox.borrow_mut().set_batching(batch);
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
        match self.config.auth.token(self.peer.attempt(), token) {
            Ok(principal) => {
                info!(
                    "session {} ({}): signed in as client {}",
                    self.peer.id,
                    self.peer.stats.peer,
                    principal.name()
                );
                let _ = self.peer.stats.client.set(Arc::from(principal.name()));
                self.principal = principal;
                self.send(browser::authenticated(
                    self.principal.name(),
                    &self.principal.scopes.names(),
                ));
                if self.follows_positions {
                    // The account filter widens to the client's accounts.
                    self.registry.do_send(Subscribe {
                        session: self.peer.id,
                        symbols: Vec::new(),
                        channels: ChannelMask::of(&[ClientChannel::Positions]),
                        scopes: self.principal.scopes.clone(),
                    });
                }
            }
            Err(refusal) => {
                let (attempt, over) = self.peer.refused_credentials();
                // The token may be a secret: never logged. The auth table logs refusals per
                // address, counted.
                debug!(
                    "session {} ({}): auth refused ({refusal}), attempt {attempt}",
                    self.peer.id, self.peer.stats.peer
                );
                let code = match refusal {
                    Refusal::Delayed(_) => ErrorCode::RateLimited,
                    _ => ErrorCode::Unauthorized,
                };
                self.send_error(&ClientError::new(code, format!("auth refused: {refusal}")));
                if over {
                    self.close(ctx, TOO_MANY_REFUSED.0, TOO_MANY_REFUSED.1);
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
            session: self.peer.id,
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
                    act.peer
                        .stats
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
                                    kind: crate::downstream::delivery::FrameKind::Price,
                                };
                                act.peer
                                    .outbox
                                    .borrow_mut()
                                    .push_latest(&key, &frame, &None);
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!("session {}: registry unavailable: {e}", act.peer.id);
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
            session: self.peer.id,
            symbols: symbols.clone(),
            channels: mask,
        };
        self.registry
            .send(request)
            .into_actor(self)
            .map(move |res, act, ctx| {
                if let Err(e) = res {
                    warn!("session {}: registry unavailable: {e}", act.peer.id);
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
                act.peer.outbox.borrow_mut().forget(|k| {
                    let channel = k.kind.channel();
                    channel.is_market()
                        && !still.get(&k.symbol).is_some_and(|m| m.contains(channel))
                });
                act.peer
                    .stats
                    .symbols
                    .store(act.symbols.len(), Ordering::Relaxed);
                act.send(browser::unsubscribed(&symbols, &channels));
            })
            .wait(ctx);
    }

    /// A whole message from the peer core.
    fn on_message(&mut self, binary: bool, data: &[u8], ctx: &mut Context<Self>) {
        if binary {
            let err = ClientError::new(
                ErrorCode::InvalidJson,
                "binary frames are not supported; send JSON text",
            );
            return self.refuse(&err, ctx);
        }
        match std::str::from_utf8(data) {
            Ok(text) => self.on_text(text, ctx),
            Err(_) => self.refuse(
                &ClientError::new(ErrorCode::InvalidJson, "message is not UTF-8"),
                ctx,
            ),
        }
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
        debug!(
            "session {} ({}): connected",
            self.peer.id, self.peer.stats.peer
        );
        let welcome = browser::welcome(
            self.config.provider,
            self.config.throttle_ms,
            self.peer.id,
            self.config.settings.max_symbols,
            &self.principal.scopes.names(),
        );
        self.send(welcome);
        let connect = Connect {
            session: self.peer.id,
            subscriber: self.peer.attach(ctx.address().recipient()),
        };
        if self.principal.scopes.names().is_empty() {
            // Anonymous callers may do nothing here: a connection that never signs in goes.
            ctx.run_later(self.config.settings.auth_timeout(), |act, ctx| {
                if act.principal.client.is_none() {
                    debug!("session {}: no auth in time; closing", act.peer.id);
                    // The close reason says why. No `unauthorized` error frame: pages read that
                    // as a refused credential and forget the one they may be sending right now.
                    act.close(ctx, 1008, "auth timeout");
                }
            });
        }
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
                    warn!("session {}: registry unavailable: {e}", act.peer.id);
                    act.close(ctx, 1011, "internal error");
                }
            })
            .wait(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // A no-op after an earlier close or once the connection is gone; otherwise the client
        // went away without a close handshake.
        self.peer.outbox.borrow_mut().close(1000, "");
        self.detach();
        debug!("session {}: ended", self.peer.id);
    }
}

impl Handler<SessionCommand> for ClientSession {
    type Result = ();

    fn handle(&mut self, msg: SessionCommand, ctx: &mut Self::Context) {
        match msg {
            SessionCommand::Send(frame) => self.send(frame),
            SessionCommand::Event { key, frame } => {
                let must = key.kind.must_deliver();
                let queued = self.peer.outbox.borrow_mut().push_event(frame, must);
                if queued.is_err() {
                    // The outbox has queued the 4008 close (the client is not reading).
                    self.close(ctx, CLOSE_SLOW_CLIENT, "");
                }
            }
            SessionCommand::Rejected { symbols, frame } => {
                self.forget_symbols(&symbols);
                self.send(frame);
            }
            SessionCommand::Close { code, reason } => self.close(ctx, code, &reason),
            // SDK programs only: browsers learn of a lost upstream from `alpaca_status`.
            SessionCommand::Refused { .. }
            | SessionCommand::TradeUpdate(_)
            | SessionCommand::UpstreamLost { .. } => {}
        }
    }
}

impl Handler<ConnectionLost> for ClientSession {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Self::Context) {
        self.peer.connection_lost(ctx);
    }
}

/// Reads the client's frames through the peer core.
impl StreamHandler<Result<Frame, ReadError>> for ClientSession {
    fn handle(&mut self, item: Result<Frame, ReadError>, ctx: &mut Self::Context) {
        match self.peer.receive(item) {
            Input::Message { binary, data } => self.on_message(binary, &data, ctx),
            Input::RateLimited => {
                let limit = self.config.settings.max_messages_per_second;
                self.send_error(&ClientError::new(
                    ErrorCode::RateLimited,
                    format!("more than {limit} messages per second; this one was ignored"),
                ));
            }
            Input::Invalid(what) => {
                self.send_error(&ClientError::new(ErrorCode::InvalidJson, what))
            }
            Input::Handled => {}
            Input::PeerClosed(code) => self.close(ctx, code, ""),
            Input::Close(1009, _) => self.too_large(ctx),
            Input::Close(code, reason) => self.close(ctx, code, reason),
            Input::Abort => ctx.stop(),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
