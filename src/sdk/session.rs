//! `SdkSession`: one actor per SDK program on a market-data path (`/v2/iex`, `/v1beta3/crypto/us`,
//! `/v1beta1/indicative`, `/v1beta1/news`, …), speaking Alpaca's protocol exactly.
//!
//! Owns: the program's authentication state and its [`Subscriptions`] (and through them the filter
//! its hub reads); its connection — outbox, reassembly of fragmented messages (alpaca-py sends
//! every subscribe as one), rate limit, invalid-message count — is the
//! [peer core](crate::downstream::peer). Talks to: the registry (connect, its whole upstream set
//! after each change — fire and forget — and disconnect), its worker's hub (which delivers the
//! tap's messages into the outbox without passing through this actor) and the feed's tap (which
//! encodings to produce). Receives [`SessionCommand`]s: a slow-client close from the hub (sent as
//! `407 slow client`), symbols the upstream refused, a lost upstream (closed with 1012, after
//! the Alpaca error that ended the upstream connection if one did, unless
//! `sdk.on_upstream_loss = "keep"`), shutdown.
//!
//! The sequence, as Alpaca's: `connected` first; `auth` (also before the welcome is read, and by
//! `APCA-API-KEY-ID`/`APCA-API-SECRET-KEY` headers on the upgrade) → `authenticated` or `402`;
//! `401` for a subscription before auth, `403` for a second auth, `404` and a close when no auth
//! comes within `sdk.auth_timeout_ms`; a complete `subscription` ack after every (un)subscribe,
//! queued before any data of the new set. Invalid messages get `400`; past
//! `sdk.max_invalid_messages` a minute the connection closes with 1008. Messages over
//! `sdk.max_messages_per_second` are not read and get `429 rate limit exceeded`. Every reply
//! counts against the outbox's byte budget: a program that sends without reading is closed with
//! `407 slow client` like one that does not keep up with data.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use actix_http::ws::Frame;
use log::{debug, info, warn};

use super::protocol::{self, ClientMessage};
use super::subscriptions::Subscriptions;
use super::SdkContext;
use crate::auth::Refusal;
use crate::downstream::delivery::SessionCommand;
use crate::downstream::hub::opcode;
use crate::downstream::outbox::CLOSE_SLOW_CLIENT;
use crate::downstream::peer::{
    ConnectionLost, Input, Peer, TOO_MANY_INVALID, TOO_MANY_REFUSED, UPSTREAM_LOST,
};
use crate::downstream::socket::frame::OP_TEXT;
use crate::downstream::socket::ReadError;
use crate::registry::{Connect, Disconnect, Registry, SetRawInterest};
use crate::settings::UpstreamLoss;
use crate::vocab::Encoding;
use crate::vocab::FeedKind;
use crate::wire::Msg;

/// Key pair sent as headers on the upgrade (Alpaca's header authentication).
#[derive(Debug, Clone)]
pub struct HeaderAuth {
    pub key: String,
    pub secret: String,
}

/// The actor of one SDK program on a market-data stream.
pub struct SdkSession {
    /// The connection: outbox, stats, reassembly, inbound limits.
    peer: Peer,
    feed: FeedKind,
    encoding: Encoding,
    context: Arc<SdkContext>,
    registry: Addr<Registry>,
    subscriptions: Subscriptions,
    /// The client id it authenticated as.
    client: Option<Arc<str>>,
    header_auth: Option<HeaderAuth>,
    /// On options without `Content-Type: application/msgpack`, until the first message: a
    /// JSON one is answered 412, as Alpaca does (a binary one is a msgpack client that could
    /// not set the header, as cs-sdk's).
    msgpack_unasked: bool,
}

impl SdkSession {
    pub fn new(
        peer: Peer,
        (feed, encoding): (FeedKind, Encoding),
        context: Arc<SdkContext>,
        registry: Addr<Registry>,
        header_auth: Option<HeaderAuth>,
    ) -> Self {
        // Past its byte budget a program gets Alpaca's `407 slow client` before the close.
        let farewell = protocol::control(&protocol::error(407), encoding);
        peer.outbox
            .borrow_mut()
            .set_farewell(opcode(encoding), farewell);
        SdkSession {
            subscriptions: Subscriptions::new(feed, context.settings.max_symbols),
            peer,
            feed,
            encoding,
            context,
            registry,
            client: None,
            header_auth,
            msgpack_unasked: false,
        }
    }

    /// Whether the program asked for msgpack (`Content-Type`) on the upgrade.
    pub fn msgpack_asked(mut self, asked: bool) -> Self {
        self.msgpack_unasked = self.feed == FeedKind::Options && !asked;
        self
    }

    /// Queues a control message; past the byte budget the outbox closes the connection itself.
    fn send(&mut self, msg: &Msg) {
        let bytes = protocol::control(msg, self.encoding);
        let _ = self
            .peer
            .outbox
            .borrow_mut()
            .push_frame(opcode(self.encoding), bytes);
    }

    fn error(&mut self, code: u16) {
        self.send(&protocol::error(code));
    }

    /// Answers an invalid message with `code`; closes a program that keeps sending them.
    fn refuse(&mut self, code: u16, ctx: &mut Context<Self>) {
        self.error(code);
        if self.peer.strike() {
            self.close(ctx, TOO_MANY_INVALID.0, TOO_MANY_INVALID.1);
        }
    }

    /// Queues the close; the session stops once the close has gone out and the program has
    /// closed its side (or the linger time passed), at most [`CLOSING_LIMIT`](crate::downstream::peer::CLOSING_LIMIT) from now.
    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        if self.peer.close_session(ctx, code, reason) {
            self.detach();
        }
    }

    /// Leaves the tap, the hub and the registry: from its close on, the session only drains
    /// its socket.
    fn detach(&mut self) {
        if self.peer.detach() {
            if self.client.is_some() {
                self.context.taps.feed(self.feed).unlisten(self.encoding);
            }
            self.peer.hub.unregister(self.peer.id, std::iter::empty());
            self.peer.hub.unregister_raw(self.peer.id, self.feed);
            self.registry.do_send(Disconnect {
                session: self.peer.id,
            });
        }
    }

    fn authenticate(&mut self, key: &str, secret: &str, ctx: &mut Context<Self>) {
        if self.client.is_some() {
            self.error(403);
            return;
        }
        let auth = &self.context.auth;
        match auth.sign_in(self.peer.attempt(), key, secret) {
            Ok(client) if !client.scopes.market() => {
                info!(
                    "SDK session {} ({}): client {} has no market scope: 409",
                    self.peer.id, self.peer.stats.peer, client.id
                );
                self.error(409);
            }
            Ok(client) => {
                info!(
                    "SDK session {} ({}): authenticated as client {} on the {} stream",
                    self.peer.id,
                    self.peer.stats.peer,
                    client.id,
                    self.feed.as_str()
                );
                self.client = Some(client.id.clone());
                let _ = self.peer.stats.client.set(client.id.clone());
                self.context.taps.feed(self.feed).listen(self.encoding);
                if let Some(backlog) = &self.context.backlog {
                    backlog.watch(&self.peer.stats);
                }
                self.send(&protocol::success("authenticated"));
            }
            Err(refusal) => {
                let (attempt, over) = self.peer.refused_credentials();
                if auth.is_empty() {
                    warn!(
                        "SDK session {} ({}): auth refused (402): no client is configured; add one with [clients.<id>] key_id, or TICKRELAY__CLIENTS__<ID>__KEY_ID and TICKRELAY_CLIENT_SECRET_<ID>",
                        self.peer.id, self.peer.stats.peer
                    );
                } else {
                    // The key id may be a secret pasted in the wrong place: never logged. The
                    // auth table logs refusals per address, counted.
                    debug!(
                        "SDK session {} ({}): auth refused ({refusal}), attempt {attempt}",
                        self.peer.id, self.peer.stats.peer
                    );
                }
                // Alpaca's answer to too many requests while delayed, its auth failure otherwise.
                self.error(match refusal {
                    Refusal::Delayed(_) => 429,
                    _ => 402,
                });
                if over {
                    self.close(ctx, TOO_MANY_REFUSED.0, TOO_MANY_REFUSED.1);
                }
            }
        }
    }

    fn on_message(&mut self, data: &[u8], binary: bool, ctx: &mut Context<Self>) {
        if std::mem::take(&mut self.msgpack_unasked) && !binary {
            // A JSON client on options: Alpaca's 412, in JSON, and the close.
            let error = protocol::control(&protocol::error(412), Encoding::Json);
            let _ = self.peer.outbox.borrow_mut().push_frame(OP_TEXT, error);
            return self.close(
                ctx,
                1008,
                "option messages are only available in MsgPack format",
            );
        }
        let msg = match protocol::parse(data, binary) {
            Ok(m) => m,
            Err(e) => {
                debug!("SDK session {}: invalid message: {}", self.peer.id, e.0);
                return self.refuse(400, ctx);
            }
        };
        match msg {
            ClientMessage::Auth { key, secret } => self.authenticate(&key, &secret, ctx),
            ClientMessage::Subscribe(_) | ClientMessage::Unsubscribe(_)
                if self.client.is_none() =>
            {
                self.error(401)
            }
            ClientMessage::Subscribe(lists) => self.change(true, &lists, ctx),
            ClientMessage::Unsubscribe(lists) => self.change(false, &lists, ctx),
        }
    }

    fn change(&mut self, add: bool, lists: &protocol::Lists, ctx: &mut Context<Self>) {
        match self.subscriptions.apply(add, lists) {
            Ok(changed) => {
                // The ack goes into the outbox before the hub can queue data of the new set.
                let ack = self.subscriptions.ack();
                self.send(&ack);
                if changed {
                    self.sync_upstream();
                }
            }
            // A symbol in an invalid form is an invalid message; a plan limit is not.
            Err(400) => self.refuse(400, ctx),
            Err(code) => self.error(code),
        }
    }

    fn sync_upstream(&mut self) {
        let set = self.subscriptions.upstream();
        self.peer
            .stats
            .symbols
            .store(set.symbols().len(), Ordering::Relaxed);
        self.registry.do_send(SetRawInterest {
            session: self.peer.id,
            feed: self.feed,
            set,
        });
    }
}

impl Actor for SdkSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(
            "SDK session {} ({}): connected to the {} stream ({:?})",
            self.peer.id,
            self.peer.stats.peer,
            self.feed.as_str(),
            self.encoding
        );
        self.send(&protocol::success("connected"));
        let commands: Recipient<SessionCommand> = ctx.address().recipient();
        self.peer.hub.register_raw(
            self.peer.id,
            self.feed,
            self.encoding,
            self.subscriptions.filter(),
            self.peer.outbox.clone(),
            commands.clone(),
        );
        self.registry.do_send(Connect {
            session: self.peer.id,
            subscriber: self.peer.attach(commands),
        });
        if let Some(auth) = self.header_auth.take() {
            self.authenticate(&auth.key, &auth.secret, ctx);
        }
        ctx.run_later(self.context.auth_timeout(), |act, ctx| {
            if act.client.is_none() {
                debug!("SDK session {}: no auth in time (404)", act.peer.id);
                act.error(404);
                act.close(ctx, 1008, "auth timeout");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.peer.outbox.borrow_mut().close(1000, "");
        self.detach();
        debug!("SDK session {}: ended", self.peer.id);
    }
}

impl Handler<SessionCommand> for SdkSession {
    type Result = ();

    fn handle(&mut self, msg: SessionCommand, ctx: &mut Self::Context) {
        match msg {
            SessionCommand::Close { code, reason } if code == CLOSE_SLOW_CLIENT => {
                // What it did not read is let go; Alpaca's 407 goes out, then the close.
                self.peer.outbox.borrow_mut().give_up(&reason);
                self.close(ctx, code, &reason);
            }
            SessionCommand::Close { code, reason } => self.close(ctx, code, &reason),
            SessionCommand::UpstreamLost { error } => {
                if self.context.settings.on_upstream_loss == UpstreamLoss::Keep {
                    return;
                }
                info!(
                    "SDK session {} ({}): the {} upstream was lost; closing with 1012 so the program reconnects",
                    self.peer.id,
                    self.peer.stats.peer,
                    self.feed.as_str()
                );
                // Alpaca's error first when one ended the upstream connection, unless it is one
                // the SDKs take as final (the program's own credentials are fine).
                if let Some(code) = error.filter(|c| !matches!(c, 401..=404)) {
                    self.error(code);
                }
                self.close(ctx, UPSTREAM_LOST.0, UPSTREAM_LOST.1);
            }
            SessionCommand::Refused { symbols, code } => {
                self.subscriptions.drop_symbols(&symbols);
                self.error(code);
                let ack = self.subscriptions.ack();
                self.send(&ack);
            }
            // Browser status broadcasts, events and rejections are not part of Alpaca's protocol.
            SessionCommand::Send(_)
            | SessionCommand::Event { .. }
            | SessionCommand::Rejected { .. }
            | SessionCommand::TradeUpdate(_) => {}
        }
    }
}

impl Handler<ConnectionLost> for SdkSession {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Self::Context) {
        self.peer.connection_lost(ctx);
    }
}

/// Reads the program's frames through the peer core.
impl StreamHandler<Result<Frame, ReadError>> for SdkSession {
    fn handle(&mut self, item: Result<Frame, ReadError>, ctx: &mut Self::Context) {
        match self.peer.receive(item) {
            Input::Message { binary, data } => self.on_message(&data, binary, ctx),
            Input::RateLimited => self.error(429),
            Input::Invalid(_) => self.error(400),
            Input::Handled => {}
            Input::PeerClosed(code) => self.close(ctx, code, ""),
            Input::Close(1009, reason) => {
                self.error(400);
                self.close(ctx, 1009, reason);
            }
            Input::Close(code, reason) => self.close(ctx, code, reason),
            Input::Abort => ctx.stop(),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
