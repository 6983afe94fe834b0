//! `SdkTradingSession`: one actor per SDK program on `/stream`, Alpaca's trading stream
//! (`authenticate`, `listen`, `trade_updates`), serving the `trade_updates` of one account the program may see.
//!
//! Owns: the program's authentication and whether it listens; its connection is the
//! [peer core](crate::downstream::peer), as for every session. Talks to: the registry (connect,
//! [`ListenTrades`], disconnect), which forwards each account's trade updates exactly as Alpaca
//! sent them ([`SessionCommand::TradeUpdate`]). There is no welcome: the program speaks first.
//! `authenticate` → `authorization` (`authorized`, or `unauthorized` with a message: a wrong key
//! pair, or a client allowed no account); `listen` → `listening` with the streams now listened
//! to (the list replaces the previous one; before auth: `unauthorized` for `listen`). Everything
//! goes out as JSON in binary frames, as Alpaca sends it.
//!
//! An invalid message gets `{"stream":"error",…}`; past `sdk.max_invalid_messages` a minute the
//! connection closes with 1008, and messages over `sdk.max_messages_per_second` are answered
//! with an error and not read.
//!
//! Which account: the first of the client's `account:<id>` scopes; `?account=<id>` on the URL
//! picks another one of them.

use std::sync::Arc;

use actix::prelude::*;
use actix_http::ws::Frame;
use bytes::Bytes;
use log::{debug, info};
use serde_json::Value;

use super::SdkContext;
use crate::auth::Refusal;
use crate::downstream::delivery::SessionCommand;
use crate::downstream::outbox::CLOSE_SLOW_CLIENT;
use crate::downstream::peer::{
    ConnectionLost, Input, Peer, TOO_MANY_INVALID, TOO_MANY_REFUSED, UPSTREAM_LOST,
};
use crate::downstream::socket::frame::OP_BINARY;
use crate::downstream::socket::ReadError;
use crate::registry::{Connect, Disconnect, ListenTrades, Registry};
use crate::settings::UpstreamLoss;

/// The actor of one SDK program on the trading stream.
pub struct SdkTradingSession {
    /// The connection: outbox, stats, reassembly, inbound limits.
    peer: Peer,
    context: Arc<SdkContext>,
    registry: Addr<Registry>,
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
    pub fn new(
        peer: Peer,
        context: Arc<SdkContext>,
        registry: Addr<Registry>,
        requested_account: Option<String>,
    ) -> Self {
        SdkTradingSession {
            peer,
            context,
            registry,
            requested_account,
            account: None,
            listening: false,
        }
    }

    /// `{"stream":…,"data":…}`, keys in Alpaca's order.
    fn send(&mut self, reply: &Reply<'_>) {
        // Serializing strings and lists of strings into a Vec cannot fail.
        let bytes = Bytes::from(serde_json::to_vec(reply).unwrap_or_default());
        // Past the byte budget the outbox closes the connection itself.
        let _ = self.peer.outbox.borrow_mut().push_frame(OP_BINARY, bytes);
    }

    fn error(&mut self, message: &str) {
        self.send(&Reply::error(message));
    }

    fn unauthorized(&mut self, action: &str, message: &str) {
        self.send(&Reply::authorization("unauthorized", action, Some(message)));
    }

    /// Queues the close; the session stops once the close has gone out and the program has
    /// closed its side (or the linger time passed), at most [`CLOSING_LIMIT`](crate::downstream::peer::CLOSING_LIMIT) from now.
    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        if self.peer.close_session(ctx, code, reason) {
            self.detach();
        }
    }

    /// Leaves the account's trade updates, the hub and the registry: from its close on, the
    /// session only drains its socket.
    fn detach(&mut self) {
        if self.peer.detach() {
            self.peer.hub.unregister(self.peer.id, std::iter::empty());
            self.registry.do_send(Disconnect {
                session: self.peer.id,
            });
        }
    }

    fn authenticate(&mut self, key: &str, secret: &str, ctx: &mut Context<Self>) {
        // A new authentication starts over: whatever it listened to under the old one stops.
        self.set_listening(false);
        self.account = None;
        let client = match self.context.auth.sign_in(self.peer.attempt(), key, secret) {
            Ok(client) => client,
            Err(refusal) => {
                let (attempt, over) = self.peer.refused_credentials();
                // The auth table logs refusals per address, counted.
                debug!(
                    "SDK trading session {} ({}): {refusal}, attempt {attempt}",
                    self.peer.id, self.peer.stats.peer
                );
                let message = match refusal {
                    Refusal::Delayed(_) => "too many refused credentials, retry later",
                    _ => "access key verification failed",
                };
                self.unauthorized("authenticate", message);
                if over {
                    self.close(ctx, TOO_MANY_REFUSED.0, TOO_MANY_REFUSED.1);
                }
                return;
            }
        };
        let accounts = client.scopes.accounts();
        let account = match &self.requested_account {
            Some(wanted) => accounts.iter().find(|a| ***a == **wanted),
            None => accounts.first(),
        };
        let Some(account) = account else {
            info!(
                "SDK trading session {} ({}): client {} may see no such account",
                self.peer.id, self.peer.stats.peer, client.id
            );
            self.unauthorized(
                "authenticate",
                "this client may not see that account's trade updates",
            );
            return;
        };
        info!(
            "SDK trading session {} ({}): client {} authenticated for account {account}",
            self.peer.id, self.peer.stats.peer, client.id
        );
        self.account = Some(account.clone());
        let _ = self.peer.stats.client.set(client.id.clone());
        self.send(&Reply::authorization("authorized", "authenticate", None));
    }

    fn on_message(&mut self, data: &[u8], ctx: &mut Context<Self>) {
        let Some(request) = parse(data) else {
            self.error("invalid message");
            if self.peer.strike() {
                self.close(ctx, TOO_MANY_INVALID.0, TOO_MANY_INVALID.1);
            }
            return;
        };
        match request {
            Request::Authenticate { key, secret } => self.authenticate(&key, &secret, ctx),
            Request::Listen(_) | Request::Unlisten(_) if self.account.is_none() => {
                self.unauthorized("listen", "not authenticated");
            }
            Request::Listen(streams) => {
                let wanted = streams.iter().any(|s| s == "trade_updates");
                self.set_listening(wanted);
                self.send(&Reply::listening(wanted));
            }
            Request::Unlisten(streams) => {
                if streams.iter().any(|s| s == "trade_updates") {
                    self.set_listening(false);
                }
                self.send(&Reply::listening(self.listening));
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
                session: self.peer.id,
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
            self.peer.id, self.peer.stats.peer
        );
        self.registry.do_send(Connect {
            session: self.peer.id,
            subscriber: self.peer.attach(ctx.address().recipient()),
        });
        ctx.run_later(self.context.auth_timeout(), |act, ctx| {
            if act.account.is_none() {
                act.unauthorized("authenticate", "auth timeout");
                act.close(ctx, 1008, "auth timeout");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.peer.outbox.borrow_mut().close(1000, "");
        self.detach();
        debug!("SDK trading session {}: ended", self.peer.id);
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
                    .peer
                    .outbox
                    .borrow_mut()
                    .push_frame(OP_BINARY, frame)
                    .is_err();
                if full {
                    // The outbox has let go of what waited and queued the 4008 close.
                    self.close(ctx, CLOSE_SLOW_CLIENT, "");
                }
            }
            SessionCommand::Close { code, reason } if code == CLOSE_SLOW_CLIENT => {
                self.peer.outbox.borrow_mut().give_up(&reason);
                self.close(ctx, code, &reason);
            }
            SessionCommand::Close { code, reason } => self.close(ctx, code, &reason),
            SessionCommand::UpstreamLost { .. } => {
                if self.context.settings.on_upstream_loss == UpstreamLoss::Keep {
                    return;
                }
                info!(
                    "SDK trading session {} ({}): the account's trading stream was lost; closing with 1012 so the program reconnects",
                    self.peer.id, self.peer.stats.peer
                );
                self.close(ctx, UPSTREAM_LOST.0, UPSTREAM_LOST.1);
            }
            _ => {}
        }
    }
}

impl Handler<ConnectionLost> for SdkTradingSession {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Self::Context) {
        self.peer.connection_lost(ctx);
    }
}

/// Reads the program's frames through the peer core.
impl StreamHandler<Result<Frame, ReadError>> for SdkTradingSession {
    fn handle(&mut self, item: Result<Frame, ReadError>, ctx: &mut Self::Context) {
        match self.peer.receive(item) {
            Input::Message { data, .. } => self.on_message(&data, ctx),
            Input::RateLimited => self.error("rate limit exceeded"),
            Input::Invalid(what) => self.error(what),
            Input::Handled => {}
            Input::PeerClosed(code) => self.close(ctx, code, ""),
            Input::Close(code, reason) => self.close(ctx, code, reason),
            Input::Abort => ctx.stop(),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A reply on `/stream`, serialized with Alpaca's key order: `stream` first, then `data`
/// (`status` before `action` in an authorization).
#[derive(serde::Serialize)]
pub struct Reply<'a> {
    stream: &'static str,
    data: ReplyData<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum ReplyData<'a> {
    Authorization {
        status: &'static str,
        action: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'a str>,
    },
    Listening {
        streams: &'static [&'static str],
    },
    Error {
        error_message: &'a str,
    },
}

impl<'a> Reply<'a> {
    fn authorization(status: &'static str, action: &'a str, message: Option<&'a str>) -> Self {
        Reply {
            stream: "authorization",
            data: ReplyData::Authorization {
                status,
                action,
                message,
            },
        }
    }

    fn listening(on: bool) -> Self {
        Reply {
            stream: "listening",
            data: ReplyData::Listening {
                streams: if on { &["trade_updates"] } else { &[] },
            },
        }
    }

    fn error(message: &'a str) -> Self {
        Reply {
            stream: "error",
            data: ReplyData::Error {
                error_message: message,
            },
        }
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

    #[test]
    fn replies_keep_alpacas_key_order() {
        let text = |r: &Reply| serde_json::to_string(r).unwrap();
        assert_eq!(
            text(&Reply::authorization("authorized", "authenticate", None)),
            r#"{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}"#
        );
        assert_eq!(
            text(&Reply::listening(true)),
            r#"{"stream":"listening","data":{"streams":["trade_updates"]}}"#
        );
        assert_eq!(
            text(&Reply::error("invalid message")),
            r#"{"stream":"error","data":{"error_message":"invalid message"}}"#
        );
    }
}
