//! `SimConnection`: the server side of Alpaca's data-stream protocol for one client.
//!
//! Greets with `connected`, expects `auth` within the auth timeout (404 otherwise), refuses a second
//! auth (403) and subscriptions before auth (401), answers every subscribe/unsubscribe with the
//! full subscription set listing every channel key, refuses channels the feed does not offer (410)
//! and malformed symbols (400). Reassembles fragmented client messages. Reports its state to the
//! [`Exchange`], which sends it data and fault commands.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, ProtocolError, WebsocketContext};
use log::debug;
use serde_json::{json, Value};

use super::exchange::{
    Authorize, ConnSubs, Exchange, Faults, Register, SimOutbound, SubscriptionsChanged, Unregister,
};
use crate::symbol::{classify, AssetClass};
use crate::upstream::protocol::error_name;

/// The channels of a stock data stream.
pub const STOCK_CHANNELS: &[&str] = &[
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "imbalances",
];
/// Channels a client may send but which follow `trades` implicitly.
const IMPLICIT: &[&str] = &["corrections", "cancelErrors"];

/// One client connection to the simulator.
pub struct SimConnection {
    id: u64,
    path: String,
    exchange: Addr<Exchange>,
    faults: Arc<Faults>,
    auth_timeout: Duration,
    authenticated: bool,
    subs: ConnSubs,
    fragments: Option<Vec<u8>>,
}

impl SimConnection {
    pub fn new(
        id: u64,
        path: String,
        exchange: Addr<Exchange>,
        faults: Arc<Faults>,
        auth_timeout: Duration,
    ) -> Self {
        SimConnection {
            id,
            path,
            exchange,
            faults,
            auth_timeout,
            authenticated: false,
            subs: ConnSubs::new(),
            fragments: None,
        }
    }

    fn send(&self, ctx: &mut WebsocketContext<Self>, value: Value) {
        if !self.faults.frozen.load(Ordering::Relaxed) {
            ctx.text(json!([value]).to_string());
        }
    }

    fn error(&self, ctx: &mut WebsocketContext<Self>, code: u16) {
        self.send(ctx, json!({"T":"error","code":code,"msg":error_name(code)}));
    }

    fn on_message(&mut self, data: &[u8], ctx: &mut WebsocketContext<Self>) {
        let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(data) else {
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
        if !present("key") || !present("secret") {
            self.error(ctx, 402);
            return;
        }
        self.exchange
            .send(Authorize { id: self.id })
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(Ok(())) => {
                    act.authenticated = true;
                    act.send(ctx, json!({"T":"success","msg":"authenticated"}));
                }
                Ok(Err((code, _))) => {
                    act.error(ctx, code);
                    ctx.close(Some(CloseCode::Policy.into()));
                    ctx.stop();
                }
                Err(_) => ctx.stop(),
            })
            .wait(ctx);
    }

    fn subscribe(
        &mut self,
        add: bool,
        msg: &serde_json::Map<String, Value>,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let mut changes: Vec<(&str, Vec<String>)> = Vec::new();
        for (key, value) in msg {
            if key == "action" || value.is_null() {
                continue;
            }
            let Some(list) = value.as_array() else {
                self.error(ctx, 400);
                return;
            };
            if list.is_empty() {
                continue;
            }
            if IMPLICIT.contains(&key.as_str()) {
                continue;
            }
            let Some(channel) = STOCK_CHANNELS.iter().find(|c| **c == key) else {
                self.error(ctx, 410);
                return;
            };
            let mut symbols = Vec::with_capacity(list.len());
            for item in list {
                match item.as_str() {
                    Some("*") => symbols.push("*".to_owned()),
                    Some(s) if classify(s) == Some(AssetClass::Stock) => symbols.push(s.to_owned()),
                    _ => {
                        self.error(ctx, 400);
                        return;
                    }
                }
            }
            changes.push((channel, symbols));
        }
        for (channel, symbols) in changes {
            let set = self.subs.entry(channel.to_owned()).or_default();
            for s in symbols {
                if add {
                    set.insert(s);
                } else {
                    set.remove(&s);
                }
            }
        }
        self.subs.retain(|_, s| !s.is_empty());
        let mut ack = serde_json::Map::new();
        ack.insert("T".into(), "subscription".into());
        for channel in STOCK_CHANNELS {
            ack.insert((*channel).into(), self.list(channel));
        }
        for implicit in IMPLICIT {
            ack.insert((*implicit).into(), self.list("trades"));
        }
        self.send(ctx, Value::Object(ack));
        self.exchange.do_send(SubscriptionsChanged {
            id: self.id,
            subs: self.subs.clone(),
        });
    }

    fn list(&self, channel: &str) -> Value {
        let set: BTreeSet<String> = self.subs.get(channel).cloned().unwrap_or_default();
        Value::from(set.into_iter().collect::<Vec<_>>())
    }
}

impl Actor for SimConnection {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
        self.exchange.do_send(Register {
            id: self.id,
            path: self.path.clone(),
            sink: ctx.address().recipient(),
        });
        self.send(ctx, json!({"T":"success","msg":"connected"}));
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
            SimOutbound::Frame(text) => {
                if !self.faults.data_blocked() {
                    ctx.text(text);
                }
            }
            SimOutbound::Error { code, msg, close } => {
                self.send(ctx, json!({"T":"error","code":code,"msg":msg}));
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
            Ok(ws::Message::Text(text)) => self.on_message(text.as_bytes(), ctx),
            Ok(ws::Message::Binary(data)) => self.on_message(&data, ctx),
            Ok(ws::Message::Continuation(item)) => {
                let (chunk, last) = match item {
                    Item::FirstText(b) | Item::FirstBinary(b) => {
                        self.fragments = Some(Vec::new());
                        (b, false)
                    }
                    Item::Continue(b) => (b, false),
                    Item::Last(b) => (b, true),
                };
                if let Some(buf) = self.fragments.as_mut() {
                    buf.extend_from_slice(&chunk);
                }
                if last {
                    if let Some(whole) = self.fragments.take() {
                        self.on_message(&whole, ctx);
                    }
                }
            }
            Ok(ws::Message::Ping(payload)) => {
                if !self.faults.frozen.load(Ordering::Relaxed) {
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
