//! `SdkTradingSession`: one actor per SDK program on `/stream`, Alpaca's trading stream
//! (`alpaca-protocol.md` §8), serving the `trade_updates` of one account the program may see.
//!
//! Owns: the program's authentication and whether it listens. Talks to: the registry (connect,
//! [`ListenTrades`], disconnect), which forwards each account's trade updates exactly as Alpaca
//! sent them ([`SessionCommand::TradeUpdate`]). There is no welcome: the program speaks first.
//! `authenticate` → `authorization` (`authorized`, or `unauthorized` with a message: a wrong key
//! pair, or a client allowed no account); `listen` → `listening` with the streams now listened
//! to (the list replaces the previous one; before auth: `unauthorized` for `listen`). Everything
//! goes out as JSON in binary frames, as Alpaca sends it.
//!
//! Which account: the first of the client's `account:<id>` scopes; `?account=<id>` on the URL
//! picks another one of them.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_http::ws::{Frame, ProtocolError};
use bytes::Bytes;
use log::{debug, info};
use serde_json::{json, Value};

use super::SdkContext;
use crate::delivery::{SessionCommand, SessionId, SessionStats, Subscriber};
use crate::hub::{LocalHub, CLOSE_SLOW_CLIENT};
use crate::outbox::{Outbox, OP_BINARY};
use crate::registry::{Connect, Disconnect, ListenTrades, Registry};
use crate::session::ConnectionLost;
use crate::upstream::connection::{FragmentError, Reassembler};

/// The actor of one SDK program on the trading stream.
pub struct SdkTradingSession {
    id: SessionId,
    context: Arc<SdkContext>,
    registry: Addr<Registry>,
    hub: LocalHub,
    outbox: Rc<RefCell<Outbox>>,
    stats: Arc<SessionStats>,
    fragments: Reassembler,
    /// `?account=` on the URL.
    requested_account: Option<String>,
    /// The account it authenticated for.
    account: Option<Arc<str>>,
    listening: bool,
}

/// What a trading-stream message asks.
#[derive(Debug, PartialEq)]
enum Request {
    Authenticate { key: String, secret: String },
    Listen(Vec<String>),
    Unlisten(Vec<String>),
}

fn parse(data: &[u8]) -> Option<Request> {
    let v: Value = serde_json::from_slice(data)
        .ok()
        .or_else(|| rmp_serde::from_slice(data).ok())?;
    let d = &v["data"];
    let streams = || -> Vec<String> {
        d["streams"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    match v["action"].as_str()? {
        "authenticate" | "auth" => Some(Request::Authenticate {
            key: d["key_id"].as_str().unwrap_or_default().to_owned(),
            secret: d["secret_key"].as_str().unwrap_or_default().to_owned(),
        }),
        "listen" => Some(Request::Listen(streams())),
        "unlisten" => Some(Request::Unlisten(streams())),
        _ => None,
    }
}

impl SdkTradingSession {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionId,
        context: Arc<SdkContext>,
        registry: Addr<Registry>,
        hub: LocalHub,
        outbox: Rc<RefCell<Outbox>>,
        stats: Arc<SessionStats>,
        requested_account: Option<String>,
    ) -> Self {
        SdkTradingSession {
            fragments: Reassembler::new(context.max_client_message),
            id,
            context,
            registry,
            hub,
            outbox,
            stats,
            requested_account,
            account: None,
            listening: false,
        }
    }

    fn send(&mut self, v: &Value) {
        let bytes = Bytes::from(v.to_string());
        let _ = self.outbox.borrow_mut().push_frame(OP_BINARY, bytes, true);
    }

    fn unauthorized(&mut self, action: &str, message: &str) {
        self.send(&json!({"stream": "authorization", "data": {
            "action": action, "message": message, "status": "unauthorized"}}));
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        self.outbox.borrow_mut().close(code, reason);
        ctx.stop();
    }

    fn authenticate(&mut self, key: &str, secret: &str) {
        // A new authentication starts over: whatever it listened to under the old one stops.
        self.set_listening(false);
        self.account = None;
        let Some(client) = self.context.auth.authenticate(key, secret) else {
            info!(
                "SDK trading session {} ({}): unknown key pair",
                self.id, self.stats.peer
            );
            self.unauthorized("authenticate", "access key verification failed");
            return;
        };
        let accounts = client.scopes.accounts();
        let account = match &self.requested_account {
            Some(wanted) => accounts.iter().find(|a| ***a == **wanted),
            None => accounts.first(),
        };
        let Some(account) = account else {
            info!(
                "SDK trading session {} ({}): client {} may see no such account",
                self.id, self.stats.peer, client.id
            );
            self.unauthorized(
                "authenticate",
                "this client may not see that account's trade updates",
            );
            return;
        };
        info!(
            "SDK trading session {} ({}): client {} authenticated for account {account}",
            self.id, self.stats.peer, client.id
        );
        self.account = Some(account.clone());
        let _ = self.stats.client.set(client.id.clone());
        self.send(&json!({"stream": "authorization", "data": {
            "action": "authenticate", "status": "authorized"}}));
    }

    fn on_message(&mut self, data: &[u8]) {
        let Some(request) = parse(data) else {
            self.send(&json!({"stream": "error", "data": {"error_message": "invalid message"}}));
            return;
        };
        match request {
            Request::Authenticate { key, secret } => self.authenticate(&key, &secret),
            Request::Listen(_) | Request::Unlisten(_) if self.account.is_none() => {
                self.unauthorized("listen", "not authenticated");
            }
            Request::Listen(streams) => {
                let wanted = streams.iter().any(|s| s == "trade_updates");
                self.set_listening(wanted);
                let streams: Vec<&str> = if wanted {
                    vec!["trade_updates"]
                } else {
                    vec![]
                };
                self.send(&json!({"stream": "listening", "data": {"streams": streams}}));
            }
            Request::Unlisten(streams) => {
                if streams.iter().any(|s| s == "trade_updates") {
                    self.set_listening(false);
                }
                let streams: Vec<&str> = if self.listening {
                    vec!["trade_updates"]
                } else {
                    vec![]
                };
                self.send(&json!({"stream": "listening", "data": {"streams": streams}}));
            }
        }
    }

    fn set_listening(&mut self, on: bool) {
        if on == self.listening {
            return;
        }
        self.listening = on;
        if let Some(account) = &self.account {
            self.registry.do_send(ListenTrades {
                session: self.id,
                account: account.clone(),
                listen: on,
            });
        }
    }
}

impl Actor for SdkTradingSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(
            "SDK trading session {} ({}): connected",
            self.id, self.stats.peer
        );
        let commands: Recipient<SessionCommand> = ctx.address().recipient();
        self.hub
            .register(self.id, self.outbox.clone(), commands.clone());
        self.registry.do_send(Connect {
            session: self.id,
            subscriber: Subscriber {
                hub: self.hub.id(),
                publish: self.hub.publisher(),
                commands,
                stats: self.stats.clone(),
            },
        });
        ctx.run_later(self.context.auth_timeout(), |act, ctx| {
            if act.account.is_none() {
                act.unauthorized("authenticate", "auth timeout");
                act.close(ctx, 1008, "auth timeout");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.outbox.borrow_mut().close(1000, "");
        self.hub.unregister(self.id, std::iter::empty());
        self.registry.do_send(Disconnect { session: self.id });
        debug!("SDK trading session {}: ended", self.id);
    }
}

impl Handler<SessionCommand> for SdkTradingSession {
    type Result = ();

    fn handle(&mut self, msg: SessionCommand, ctx: &mut Self::Context) {
        match msg {
            SessionCommand::TradeUpdate(frame) => {
                if !self.listening {
                    return;
                }
                let full = self
                    .outbox
                    .borrow_mut()
                    .push_frame(OP_BINARY, frame, false)
                    .is_err();
                if full {
                    self.close(ctx, CLOSE_SLOW_CLIENT, "slow client");
                }
            }
            SessionCommand::Close { code, reason } => self.close(ctx, code, &reason),
            _ => {}
        }
    }
}

impl Handler<ConnectionLost> for SdkTradingSession {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl StreamHandler<Result<Frame, ProtocolError>> for SdkTradingSession {
    fn handle(&mut self, item: Result<Frame, ProtocolError>, ctx: &mut Self::Context) {
        self.outbox.borrow().last_heard.set(Instant::now());
        match item {
            Ok(Frame::Text(bytes) | Frame::Binary(bytes)) => self.on_message(&bytes),
            Ok(Frame::Continuation(item)) => match self.fragments.push(item) {
                Ok(Some((_, whole))) => self.on_message(&whole),
                Ok(None) => {}
                Err(FragmentError::TooLarge(_)) => self.close(ctx, 1009, "message too large"),
                Err(FragmentError::Orphan) => {}
            },
            Ok(Frame::Ping(payload)) => self.outbox.borrow_mut().push_pong(payload),
            Ok(Frame::Pong(_)) => {}
            Ok(Frame::Close(reason)) => {
                let code = reason.map_or(1000, |r| u16::from(r.code));
                self.close(ctx, code, "");
            }
            Err(e) => {
                debug!("SDK trading session {}: protocol error: {e}", self.id);
                self.close(ctx, 1002, "protocol error");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_alpacas_trading_messages() {
        let auth = br#"{"action":"authenticate","data":{"key_id":"k","secret_key":"s"}}"#;
        assert_eq!(
            parse(auth),
            Some(Request::Authenticate {
                key: "k".into(),
                secret: "s".into()
            })
        );
        let listen = br#"{"action":"listen","data":{"streams":["trade_updates"]}}"#;
        assert_eq!(
            parse(listen),
            Some(Request::Listen(vec!["trade_updates".into()]))
        );
        assert_eq!(
            parse(br#"{"action":"listen","data":{"streams":[]}}"#),
            Some(Request::Listen(vec![]))
        );
        assert_eq!(parse(b"nope"), None);
        assert_eq!(parse(br#"{"action":"dance"}"#), None);
    }
}
