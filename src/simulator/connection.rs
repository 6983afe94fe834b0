//! `SimConnection`: the server side of Alpaca's data-stream protocol for one client.
//!
//! Greets with `connected`, expects `auth` within the auth timeout (404 otherwise), refuses a second
//! auth (403) and subscriptions before auth (401), answers every subscribe/unsubscribe with the
//! full subscription set listing every channel key of its stream, refuses channels the stream does
//! not offer (410), malformed symbols (400), `*` for option quotes (413), symbols a fault rejects
//! (400) and requests over a plan's symbol limit (405, leaving the set unchanged). Speaks JSON, or
//! msgpack when the upgrade asked for it — options only in msgpack (412 otherwise). Reassembles
//! fragmented client messages. Reports its state to the [`Exchange`], which sends it data.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, ProtocolError, WebsocketContext};
use log::debug;
use serde_json::Value;

use super::exchange::{
    encode_frame, Authenticated, ConnSubs, Encoded, Exchange, Register, SimOutbound,
    SubscriptionsChanged, Unregister,
};
use super::faults::{Faults, FeedFaults, SimFeed};
use crate::symbol::{classify, AssetClass, WILDCARD};
use crate::upstream::protocol::error_name;
use crate::vocab::Encoding;
use crate::vocab::Reassembler;
use crate::wire::{Msg, V};

/// Channels a stock client may send but which follow `trades` implicitly.
const IMPLICIT: &[&str] = &["corrections", "cancelErrors"];

/// Tick frames a connection may have waiting: past them the exchange drops its frames and, if
/// it stays full, closes it as a slow client (407). With at most
/// `simulator.max_messages_per_second` messages a second, a frame is a tick's worth.
pub const MAILBOX_FRAMES: usize = 32;

/// One client connection to a simulated data stream.
pub struct SimConnection {
    id: u64,
    feed: SimFeed,
    path: String,
    encoding: Encoding,
    exchange: Addr<Exchange>,
    faults: Arc<Faults>,
    auth_timeout: Duration,
    authenticated: bool,
    subs: ConnSubs,
    fragments: Reassembler,
}

impl SimConnection {
    pub fn new(
        id: u64,
        feed: SimFeed,
        path: String,
        encoding: Encoding,
        exchange: Addr<Exchange>,
        faults: Arc<Faults>,
        auth_timeout: Duration,
    ) -> Self {
        SimConnection {
            id,
            feed,
            path,
            encoding,
            exchange,
            faults,
            auth_timeout,
            authenticated: false,
            subs: ConnSubs::new(),
            fragments: Reassembler::new(1 << 20),
        }
    }

    fn faults(&self) -> &FeedFaults {
        self.faults.feed(self.feed)
    }

    fn send(&self, ctx: &mut WebsocketContext<Self>, msg: Msg) {
        if self.faults().frozen() {
            return;
        }
        match encode_frame(self.encoding, &[&msg]) {
            Encoded::Text(t) => ctx.text(t),
            Encoded::Binary(b) => ctx.binary(b),
        }
    }

    fn error(&self, ctx: &mut WebsocketContext<Self>, code: u16) {
        self.error_msg(ctx, code, error_name(code));
    }

    fn error_msg(&self, ctx: &mut WebsocketContext<Self>, code: u16, msg: &str) {
        self.send(
            ctx,
            Msg(vec![
                ("T", "error".into()),
                ("code", V::Int(i64::from(code))),
                ("msg", msg.into()),
            ]),
        );
    }

    fn on_message(&mut self, data: &[u8], binary: bool, ctx: &mut WebsocketContext<Self>) {
        let parsed: Option<Value> =
            if binary && data.first().is_some_and(|b| !matches!(b, b'{' | b'[')) {
                rmp_serde::from_slice(data).ok()
            } else {
                serde_json::from_slice(data).ok()
            };
        let Some(Value::Object(msg)) = parsed else {
            self.error(ctx, 400);
            return;
        };
        match msg.get("action").and_then(Value::as_str) {
            Some("auth") => self.auth(&msg, ctx),
            Some(action @ ("subscribe" | "unsubscribe")) => {
                if self.authenticated {
                    self.subscribe(action == "subscribe", &msg, ctx);
                } else {
                    self.error(ctx, 401);
                }
            }
            _ => self.error(ctx, 400),
        }
    }

    fn auth(&mut self, msg: &serde_json::Map<String, Value>, ctx: &mut WebsocketContext<Self>) {
        if self.authenticated {
            self.error(ctx, 403);
            return;
        }
        let present = |k: &str| {
            msg.get(k)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        };
        let refused = if !present("key") || !present("secret") {
            Some(402)
        } else {
            self.faults().take_auth_failure()
        };
        if let Some(code) = refused {
            debug!(
                "simulator: refusing authentication of connection {} with {code}",
                self.id
            );
            self.error(ctx, code);
            ctx.close(Some(CloseCode::Policy.into()));
            ctx.stop();
            return;
        }
        self.authenticated = true;
        self.exchange.do_send(Authenticated { id: self.id });
        self.send(
            ctx,
            Msg(vec![
                ("T", "success".into()),
                ("msg", "authenticated".into()),
            ]),
        );
    }

    /// Whether `symbol` is valid on this stream's `channel`.
    fn valid_symbol(&self, channel: &str, symbol: &str) -> Result<(), u16> {
        if symbol == WILDCARD {
            return if self.feed == SimFeed::Options && channel == "quotes" {
                Err(413)
            } else {
                Ok(())
            };
        }
        let class = classify(symbol);
        let ok = match self.feed {
            SimFeed::Stocks => class == Some(AssetClass::Stock),
            SimFeed::Crypto => class == Some(AssetClass::Crypto),
            SimFeed::Options => class == Some(AssetClass::Option),
            SimFeed::News => matches!(class, Some(AssetClass::Stock | AssetClass::Crypto)),
            SimFeed::Trading => false,
        };
        if !ok || self.faults().is_rejected(symbol) {
            return Err(400);
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        add: bool,
        msg: &serde_json::Map<String, Value>,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let channels = self.feed.channels();
        let mut changes: Vec<(&'static str, Vec<String>)> = Vec::new();
        for (key, value) in msg {
            if key == "action" || value.is_null() {
                continue;
            }
            let Some(list) = value.as_array() else {
                self.error(ctx, 400);
                return;
            };
            if list.is_empty() || (self.feed == SimFeed::Stocks && IMPLICIT.contains(&key.as_str()))
            {
                continue;
            }
            let Some(channel) = channels.iter().find(|c| **c == key) else {
                self.error(ctx, 410);
                return;
            };
            let mut symbols = Vec::with_capacity(list.len());
            for item in list {
                let Some(s) = item.as_str() else {
                    self.error(ctx, 400);
                    return;
                };
                if add {
                    if let Err(code) = self.valid_symbol(channel, s) {
                        self.error(ctx, code);
                        return;
                    }
                }
                symbols.push(s.to_owned());
            }
            changes.push((channel, symbols));
        }
        let mut next = self.subs.clone();
        let mut new_books = Vec::new();
        for (channel, symbols) in changes {
            let set = next.entry(channel.to_owned()).or_default();
            for s in symbols {
                if add {
                    if set.insert(s.clone()) && channel == "orderbooks" && s != WILDCARD {
                        new_books.push(s);
                    }
                } else {
                    set.remove(&s);
                }
            }
        }
        next.retain(|_, s| !s.is_empty());
        let limit = self
            .faults()
            .symbol_limit
            .load(std::sync::atomic::Ordering::Relaxed);
        let distinct: BTreeSet<&String> = next.values().flatten().collect();
        if add && limit > 0 && distinct.len() > limit {
            self.error(ctx, 405);
            return;
        }
        self.subs = next;
        let ack = subscription_ack(self.feed, |channel| self.subs.get(channel));
        let swallowed = self
            .faults()
            .swallow_acks
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if !swallowed {
            self.send(ctx, ack);
        }
        self.exchange.do_send(SubscriptionsChanged {
            id: self.id,
            subs: self.subs.clone(),
            new_books,
        });
    }
}

/// The answer to a subscription change, as Alpaca sends it: every channel key of `feed`'s stream
/// with the symbols `subs` holds on it, and on stocks `corrections` and `cancelErrors`, which
/// follow `trades`. Also the replay server's.
pub fn subscription_ack<'a>(
    feed: SimFeed,
    subs: impl Fn(&str) -> Option<&'a BTreeSet<String>>,
) -> Msg {
    let list = |channel: &str| {
        V::List(
            subs(channel)
                .into_iter()
                .flatten()
                .map(|s| V::Str(s.clone()))
                .collect(),
        )
    };
    let mut ack = vec![("T", V::from("subscription"))];
    for channel in feed.channels() {
        ack.push((*channel, list(channel)));
    }
    if feed == SimFeed::Stocks {
        for implicit in IMPLICIT {
            ack.push((*implicit, list("trades")));
        }
    }
    Msg(ack)
}

impl Actor for SimConnection {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_FRAMES);
        if self.feed == SimFeed::Options && self.encoding != Encoding::Msgpack {
            self.error(ctx, 412);
            ctx.close(Some(CloseCode::Policy.into()));
            ctx.stop();
            return;
        }
        self.exchange.do_send(Register {
            id: self.id,
            feed: self.feed,
            path: self.path.clone(),
            encoding: self.encoding,
            sink: ctx.address().recipient(),
        });
        self.send(
            ctx,
            Msg(vec![("T", "success".into()), ("msg", "connected".into())]),
        );
        ctx.run_later(self.auth_timeout, |act, ctx| {
            if !act.authenticated {
                act.error(ctx, 404);
                ctx.close(Some(CloseCode::Policy.into()));
                ctx.stop();
            }
        });
    }
}

impl Drop for SimConnection {
    fn drop(&mut self) {
        self.exchange.do_send(Unregister { id: self.id });
    }
}

impl Handler<SimOutbound> for SimConnection {
    type Result = ();

    fn handle(&mut self, msg: SimOutbound, ctx: &mut Self::Context) {
        match msg {
            SimOutbound::Frame(frame) => {
                if !self.faults().data_blocked() {
                    match frame {
                        Encoded::Text(t) => ctx.text(t),
                        Encoded::Binary(b) => ctx.binary(b),
                    }
                }
            }
            SimOutbound::Error { code, msg, close } => {
                self.error_msg(ctx, code, &msg);
                if close {
                    ctx.close(Some(CloseCode::Policy.into()));
                    ctx.stop();
                }
            }
            SimOutbound::Abort => ctx.stop(),
            SimOutbound::Close => {
                ctx.close(Some(CloseCode::Away.into()));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for SimConnection {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        match item {
            Ok(ws::Message::Text(text)) => self.on_message(text.as_bytes(), false, ctx),
            Ok(ws::Message::Binary(data)) => self.on_message(&data, true, ctx),
            Ok(ws::Message::Continuation(item)) => match self.fragments.push(item) {
                Ok(Some((binary, whole))) => self.on_message(&whole, binary, ctx),
                Ok(None) => {}
                Err(_) => self.error(ctx, 400),
            },
            Ok(ws::Message::Ping(payload)) => {
                if !self.faults().frozen() {
                    ctx.pong(&payload);
                }
            }
            Ok(ws::Message::Close(_)) => {
                debug!("simulator: connection {} closed by the client", self.id);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}
