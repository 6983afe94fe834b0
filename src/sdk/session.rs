//! `SdkSession`: one actor per SDK program on a market-data path (`/v2/iex`, `/v1beta3/crypto/us`,
//! `/v1beta1/indicative`, `/v1beta1/news`, …), speaking Alpaca's protocol exactly.
//!
//! Owns: the program's authentication state, its [`Subscriptions`] (and through them the filter its
//! hub reads), its outbox, and the reassembly of fragmented client messages (alpaca-py sends every
//! subscribe as a fragmented message). Talks to: the registry (connect, its whole upstream set
//! after each change — fire and forget — and disconnect), its worker's hub (which delivers the
//! tap's messages into the outbox without passing through this actor) and the feed's tap (which
//! encodings to produce). Receives [`SessionCommand`]s: a slow-client close from the hub (sent as
//! `407 slow client`), symbols the upstream refused, shutdown.
//!
//! The sequence, as Alpaca's: `connected` first; `auth` (also before the welcome is read, and by
//! `APCA-API-KEY-ID`/`APCA-API-SECRET-KEY` headers on the upgrade) → `authenticated` or `402`;
//! `401` for a subscription before auth, `403` for a second auth, `404` and a close when no auth
//! comes within `sdk.auth_timeout_ms`; a complete `subscription` ack after every (un)subscribe,
//! queued before any data of the new set.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_http::ws::{Frame, ProtocolError};
use log::{debug, info, warn};

use super::protocol::{self, ClientMessage};
use super::subscriptions::Subscriptions;
use super::SdkContext;
use crate::delivery::{SessionCommand, SessionId, SessionStats, Subscriber};
use crate::hub::{opcode, LocalHub, CLOSE_SLOW_CLIENT};
use crate::outbox::Outbox;
use crate::registry::{Connect, Disconnect, Registry, SetRawInterest};
use crate::session::ConnectionLost;
use crate::upstream::connection::{FragmentError, Reassembler};
use crate::upstream::protocol::Encoding;
use crate::upstream::FeedKind;
use crate::wire::Msg;

/// Key pair sent as headers on the upgrade (Alpaca's header authentication).
#[derive(Debug, Clone)]
pub struct HeaderAuth {
    pub key: String,
    pub secret: String,
}

/// The actor of one SDK program on a market-data stream.
pub struct SdkSession {
    id: SessionId,
    feed: FeedKind,
    encoding: Encoding,
    context: Arc<SdkContext>,
    registry: Addr<Registry>,
    hub: LocalHub,
    outbox: Rc<RefCell<Outbox>>,
    stats: Arc<SessionStats>,
    subscriptions: Subscriptions,
    fragments: Reassembler,
    /// The client id it authenticated as.
    client: Option<Arc<str>>,
    header_auth: Option<HeaderAuth>,
}

impl SdkSession {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionId,
        feed: FeedKind,
        encoding: Encoding,
        context: Arc<SdkContext>,
        registry: Addr<Registry>,
        hub: LocalHub,
        outbox: Rc<RefCell<Outbox>>,
        stats: Arc<SessionStats>,
        header_auth: Option<HeaderAuth>,
    ) -> Self {
        SdkSession {
            subscriptions: Subscriptions::new(feed, context.settings.max_symbols),
            fragments: Reassembler::new(context.max_client_message),
            id,
            feed,
            encoding,
            context,
            registry,
            hub,
            outbox,
            stats,
            client: None,
            header_auth,
        }
    }

    fn send(&mut self, msg: &Msg) {
        let bytes = protocol::control(msg, self.encoding);
        // Control messages always fit.
        let _ = self
            .outbox
            .borrow_mut()
            .push_frame(opcode(self.encoding), bytes, true);
    }

    fn error(&mut self, code: u16) {
        self.send(&protocol::error(code));
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        self.outbox.borrow_mut().close(code, reason);
        ctx.stop();
    }

    fn authenticate(&mut self, key: &str, secret: &str) {
        if self.client.is_some() {
            self.error(403);
            return;
        }
        let auth = &self.context.auth;
        match auth.authenticate(key, secret) {
            Some(client) if !client.scopes.market() => {
                info!(
                    "SDK session {} ({}): client {} has no market scope: 409",
                    self.id, self.stats.peer, client.id
                );
                self.error(409);
            }
            Some(client) => {
                info!(
                    "SDK session {} ({}): authenticated as client {} on the {} stream",
                    self.id,
                    self.stats.peer,
                    client.id,
                    self.feed.as_str()
                );
                self.client = Some(client.id.clone());
                let _ = self.stats.client.set(client.id.clone());
                self.context.taps.feed(self.feed).listen(self.encoding);
                self.send(&protocol::success("authenticated"));
            }
            None => {
                if auth.is_empty() {
                    warn!(
                        "SDK session {} ({}): auth refused (402): no client is configured; add one with [clients.<id>] key_id, or TICKRELAY__CLIENTS__<ID>__KEY_ID and TICKRELAY_CLIENT_SECRET_<ID>",
                        self.id, self.stats.peer
                    );
                } else {
                    // The key id may be a secret pasted in the wrong place: never logged.
                    info!(
                        "SDK session {} ({}): auth refused (402): unknown key pair",
                        self.id, self.stats.peer
                    );
                }
                self.error(402);
            }
        }
    }

    fn on_message(&mut self, data: &[u8], binary: bool) {
        let msg = match protocol::parse(data, binary) {
            Ok(m) => m,
            Err(e) => {
                debug!("SDK session {}: invalid message: {}", self.id, e.0);
                self.error(400);
                return;
            }
        };
        match msg {
            ClientMessage::Auth { key, secret } => self.authenticate(&key, &secret),
            ClientMessage::Subscribe(_) | ClientMessage::Unsubscribe(_)
                if self.client.is_none() =>
            {
                self.error(401)
            }
            ClientMessage::Subscribe(lists) => self.change(true, &lists),
            ClientMessage::Unsubscribe(lists) => self.change(false, &lists),
        }
    }

    fn change(&mut self, add: bool, lists: &protocol::Lists) {
        match self.subscriptions.apply(add, lists) {
            Ok(changed) => {
                // The ack goes into the outbox before the hub can queue data of the new set.
                let ack = self.subscriptions.ack();
                self.send(&ack);
                if changed {
                    self.sync_upstream();
                }
            }
            Err(code) => self.error(code),
        }
    }

    fn sync_upstream(&mut self) {
        let set = self.subscriptions.upstream();
        self.stats
            .symbols
            .store(set.symbols().len(), Ordering::Relaxed);
        self.registry.do_send(SetRawInterest {
            session: self.id,
            feed: self.feed,
            set,
        });
    }

    fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        match frame {
            Frame::Text(bytes) => self.on_message(&bytes, false),
            Frame::Binary(bytes) => self.on_message(&bytes, true),
            Frame::Continuation(item) => match self.fragments.push(item) {
                Ok(None) => {}
                Ok(Some((binary, whole))) => self.on_message(&whole, binary),
                Err(FragmentError::TooLarge(_)) => {
                    self.error(400);
                    self.close(ctx, 1009, "message too large");
                }
                Err(FragmentError::Orphan) => self.error(400),
            },
            Frame::Ping(payload) => self.outbox.borrow_mut().push_pong(payload),
            Frame::Pong(_) => {}
            Frame::Close(reason) => {
                let code = reason.map_or(1000, |r| u16::from(r.code));
                self.close(ctx, code, "");
            }
        }
    }
}

impl Actor for SdkSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(
            "SDK session {} ({}): connected to the {} stream ({:?})",
            self.id,
            self.stats.peer,
            self.feed.as_str(),
            self.encoding
        );
        self.send(&protocol::success("connected"));
        let commands: Recipient<SessionCommand> = ctx.address().recipient();
        self.hub
            .register(self.id, self.outbox.clone(), commands.clone());
        self.hub.register_raw(
            self.id,
            self.feed,
            self.encoding,
            self.subscriptions.filter(),
            self.outbox.clone(),
            commands.clone(),
        );
        self.registry.do_send(Connect {
            session: self.id,
            subscriber: Subscriber {
                hub: self.hub.id(),
                publish: self.hub.publisher(),
                commands,
                stats: self.stats.clone(),
            },
        });
        if let Some(auth) = self.header_auth.take() {
            self.authenticate(&auth.key, &auth.secret);
        }
        ctx.run_later(self.context.auth_timeout(), |act, ctx| {
            if act.client.is_none() {
                debug!("SDK session {}: no auth in time (404)", act.id);
                act.error(404);
                act.close(ctx, 1008, "auth timeout");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.outbox.borrow_mut().close(1000, "");
        if self.client.is_some() {
            self.context.taps.feed(self.feed).unlisten(self.encoding);
        }
        self.hub.unregister(self.id, std::iter::empty());
        self.hub.unregister_raw(self.id, self.feed);
        self.registry.do_send(Disconnect { session: self.id });
        debug!("SDK session {}: ended", self.id);
    }
}

impl Handler<SessionCommand> for SdkSession {
    type Result = ();

    fn handle(&mut self, msg: SessionCommand, ctx: &mut Self::Context) {
        match msg {
            SessionCommand::Close { code, reason } if code == CLOSE_SLOW_CLIENT => {
                // What it did not read is let go; Alpaca's 407 goes out, then the close.
                self.outbox.borrow_mut().discard_frames();
                self.error(407);
                self.close(ctx, code, &reason);
            }
            SessionCommand::Close { code, reason } => self.close(ctx, code, &reason),
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
        ctx.stop();
    }
}

impl StreamHandler<Result<Frame, ProtocolError>> for SdkSession {
    fn handle(&mut self, item: Result<Frame, ProtocolError>, ctx: &mut Self::Context) {
        self.outbox.borrow().last_heard.set(Instant::now());
        match item {
            Ok(frame) => self.on_frame(frame, ctx),
            Err(ProtocolError::Overflow) => {
                self.error(400);
                self.close(ctx, 1009, "message too large");
            }
            Err(e) => {
                debug!("SDK session {}: protocol error: {e}", self.id);
                self.close(ctx, 1002, "protocol error");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
