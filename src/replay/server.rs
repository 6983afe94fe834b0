//! The replay server: Alpaca's protocol on Alpaca's paths, answered from the record. The daemon's
//! own upstream connections (feeds and trading streams) connect to it as they would to Alpaca.
//!
//! Owns: one session per connection. A market-data session greets with `connected`, takes any
//! key pair (`auth`), answers `subscribe`/`unsubscribe` with the full subscription set, and is
//! ready for data once it has a subscription; a trading session takes `authenticate` (its key id
//! names the recorded account) and is ready once it listens to `trade_updates`. Both, and the
//! REST views, need the secret the replay made at start (only the daemon that started it has
//! it): a loopback port is open to every local process. Data comes from
//! the player through the session's writer: a bounded channel of encoded frames drained by the
//! response body, so a consumer that reads slowly slows the player instead of filling memory.
//! A session the player kicks (a gap) sends a close frame and ends. The REST views
//! (`/v2/account`, `/v2/positions`, `/v2/orders`) answer the account's recorded state. Talks to:
//! the stage ([`super::stage`]), nothing else. Listens on loopback only.

use std::sync::Arc;
use std::time::Duration;

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use log::debug;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use super::stage::{Shared, Source};
use crate::downstream::socket::frame::{encode, OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT};
use crate::simulator::connection::subscription_ack;
use crate::simulator::exchange::{encode_frame, Encoded};
use crate::simulator::faults::SimFeed;
use crate::simulator::{requested_encoding, stream_at};
use crate::vocab::Encoding;
use crate::wire::{Msg, V};

/// Encoded frames a session's writer may hold: the player waits past it.
const WRITER_FRAMES: usize = 64;
/// Largest message a session reads from its client.
const MAX_CLIENT_MESSAGE: usize = 1 << 20;
/// Recorded time a REST read waits for the account state recorded after the last fill ...
const REST_CATCH_UP: Duration = Duration::from_secs(2);
/// ... and the most wall time, well inside the daemon's REST timeout.
const MAX_REST_CATCH_UP: Duration = Duration::from_secs(8);

/// One encoded frame (for the writer).
pub fn ws_frame(binary: bool, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    encode(&mut out, if binary { OP_BINARY } else { OP_TEXT }, payload);
    out.freeze()
}

/// Any WebSocket path: a market-data stream or the trading stream.
pub async fn stream(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Arc<Shared>>,
) -> actix_web::Result<HttpResponse> {
    let Some(feed) = stream_at(req.path()) else {
        return Ok(HttpResponse::NotFound().body("no such stream\n"));
    };
    let encoding = requested_encoding(&req);
    let mut response = actix_web_actors::ws::handshake(&req)?;
    let (tx, rx) = mpsc::channel::<Bytes>(WRITER_FRAMES);
    let session = Session {
        feed,
        encoding,
        out: tx,
        shared: shared.get_ref().clone(),
        id: None,
        subs: Default::default(),
    };
    actix_web::rt::spawn(session.run(payload));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, actix_web::Error>(frame), rx))
    });
    Ok(response.streaming(body))
}

/// One connection's protocol.
struct Session {
    feed: SimFeed,
    encoding: Encoding,
    out: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    /// On the stage once authenticated.
    id: Option<u64>,
    /// Market data: channel → symbols.
    subs: std::collections::BTreeMap<&'static str, std::collections::BTreeSet<String>>,
}

impl Session {
    async fn run(mut self, mut payload: web::Payload) {
        let kick = Arc::new(Notify::new());
        if self.feed != SimFeed::Trading {
            if self.feed == SimFeed::Options && self.encoding != Encoding::Msgpack {
                self.error(412).await;
                return self.close().await;
            }
            self.send(Msg(vec![
                ("T", "success".into()),
                ("msg", "connected".into()),
            ]))
            .await;
        }
        let mut codec = Codec::new().max_size(MAX_CLIENT_MESSAGE);
        let mut buf = BytesMut::new();
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    tokio::select! {
                        chunk = payload.next() => match chunk {
                            Some(Ok(bytes)) => {
                                buf.extend_from_slice(&bytes);
                                continue;
                            }
                            _ => break,
                        },
                        _ = kick.notified() => {
                            debug!("replay: closing a {} connection (a gap)", self.feed.as_str());
                            self.close().await;
                            break;
                        }
                    }
                }
                Err(_) => break,
            };
            let keep_on = match frame {
                Frame::Text(data) | Frame::Binary(data) => self.message(&data, &kick).await,
                Frame::Ping(data) => {
                    let mut pong = BytesMut::new();
                    encode(&mut pong, OP_PONG, &data);
                    self.out.send(pong.freeze()).await.is_ok()
                }
                Frame::Close(_) => false,
                Frame::Pong(_) | Frame::Continuation(_) => true,
            };
            if !keep_on {
                break;
            }
        }
        if let Some(id) = self.id {
            self.shared.stage().leave(id);
            self.shared.touch();
        }
    }

    async fn close(&self) {
        let mut frame = BytesMut::new();
        encode(&mut frame, OP_CLOSE, &1001u16.to_be_bytes());
        let _ = self.out.send(frame.freeze()).await;
    }

    async fn send(&self, msg: Msg) {
        let frame = match encode_frame(self.encoding, &[&msg]) {
            Encoded::Text(t) => ws_frame(false, t.as_bytes()),
            Encoded::Binary(b) => ws_frame(true, &b),
        };
        let _ = self.out.send(frame).await;
    }

    async fn send_json(&self, value: Value) {
        // Alpaca sends the trading stream's JSON in binary frames.
        let _ = self
            .out
            .send(ws_frame(true, value.to_string().as_bytes()))
            .await;
    }

    async fn error(&self, code: u16) {
        let msg = crate::upstream::protocol::error_name(code);
        self.send(Msg(vec![
            ("T", "error".into()),
            ("code", V::Int(i64::from(code))),
            ("msg", msg.into()),
        ]))
        .await;
    }

    /// One client message; `false` ends the session.
    async fn message(&mut self, data: &[u8], kick: &Arc<Notify>) -> bool {
        let parsed: Option<Value> = if data.first().is_some_and(|b| !matches!(b, b'{' | b'[')) {
            rmp_serde::from_slice(data).ok()
        } else {
            serde_json::from_slice(data).ok()
        };
        let Some(Value::Object(msg)) = parsed else {
            if self.feed != SimFeed::Trading {
                self.error(400).await;
            }
            return true;
        };
        if self.feed == SimFeed::Trading {
            return self.trading(&msg, kick).await;
        }
        match msg.get("action").and_then(Value::as_str) {
            Some("auth") if self.id.is_some() => self.error(403).await,
            Some("auth") => {
                let present = |k: &str| {
                    msg.get(k)
                        .and_then(Value::as_str)
                        .is_some_and(|v| !v.is_empty())
                };
                let secret = msg.get("secret").and_then(Value::as_str);
                if !(present("key") && secret == Some(self.shared.secret.as_str())) {
                    self.error(402).await;
                    self.close().await;
                    return false;
                }
                let source = Source::Feed(self.feed.as_str());
                self.id = Some(
                    self.shared
                        .stage()
                        .join(source, self.out.clone(), kick.clone()),
                );
                self.send(Msg(vec![
                    ("T", "success".into()),
                    ("msg", "authenticated".into()),
                ]))
                .await;
            }
            Some(action @ ("subscribe" | "unsubscribe")) => {
                let Some(id) = self.id else {
                    self.error(401).await;
                    return true;
                };
                if let Err(code) = self.subscribe(action == "subscribe", &msg) {
                    self.error(code).await;
                    return true;
                }
                // The ack first: data may follow at once.
                let ack = subscription_ack(self.feed, |channel| self.subs.get(channel));
                self.send(ack).await;
                let ready = self.subs.values().any(|s| !s.is_empty());
                let first = self.shared.stage().set_ready(id, ready);
                if first {
                    self.shared.control.subscribed();
                }
                self.shared.touch();
            }
            _ => self.error(400).await,
        }
        true
    }

    fn subscribe(&mut self, add: bool, msg: &serde_json::Map<String, Value>) -> Result<(), u16> {
        let channels = self.feed.channels();
        for (key, value) in msg {
            if key == "action" || value.is_null() || key == "corrections" || key == "cancelErrors" {
                continue;
            }
            let list = value.as_array().ok_or(400u16)?;
            let channel = channels.iter().find(|c| **c == key).ok_or(410u16)?;
            let set = self.subs.entry(channel).or_default();
            for item in list {
                let symbol = item.as_str().ok_or(400u16)?;
                if add {
                    set.insert(symbol.to_owned());
                } else {
                    set.remove(symbol);
                }
            }
        }
        Ok(())
    }

    /// The trading stream's protocol: `authenticate` (the key id names the account), `listen`.
    async fn trading(&mut self, msg: &serde_json::Map<String, Value>, kick: &Arc<Notify>) -> bool {
        let data = msg.get("data").cloned().unwrap_or_default();
        match msg.get("action").and_then(Value::as_str) {
            Some("authenticate" | "auth") => {
                let field = |k: &str| {
                    data.get(k)
                        .or_else(|| msg.get(k))
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                };
                let secret = field("secret_key").filter(|s| *s == self.shared.secret);
                let (Some(account), Some(_)) = (field("key_id"), secret) else {
                    self.send_json(json!({"stream":"authorization","data":{"action":"authenticate","message":"access key verification failed","status":"unauthorized"}})).await;
                    self.close().await;
                    return false;
                };
                if self.id.is_none() {
                    let source = Source::Account(account);
                    self.id = Some(self.shared.stage().join(
                        source,
                        self.out.clone(),
                        kick.clone(),
                    ));
                }
                self.send_json(json!({"stream":"authorization","data":{"status":"authorized","action":"authenticate"}})).await;
            }
            Some("listen") => {
                let Some(id) = self.id else {
                    self.send_json(json!({"stream":"authorization","data":{"status":"unauthorized","action":"listen"}})).await;
                    return true;
                };
                let streams: Vec<String> = data["streams"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect();
                self.send_json(json!({"stream":"listening","data":{"streams":streams}}))
                    .await;
                let listening = streams.iter().any(|s| s == "trade_updates");
                self.shared.stage().set_ready(id, listening);
                self.shared.touch();
            }
            _ => {
                self.send_json(
                    json!({"stream":"listening","data":{"error":"unrecognized request"}}),
                )
                .await;
            }
        }
        true
    }
}

/// The REST views of the account whose key id the request carries (with the replay's secret).
pub async fn rest(req: HttpRequest, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if header("APCA-API-SECRET-KEY") != shared.secret {
        return HttpResponse::Unauthorized()
            .json(json!({"code": 40110000, "message": "request is not authorized"}));
    }
    let account = header("APCA-API-KEY-ID");
    let path = req.path().trim_end_matches('/');
    let view = match path {
        "/v2/account" => "account",
        "/v2/positions" => "positions",
        "/v2/orders" => "orders",
        _ => return HttpResponse::NotFound().finish(),
    };
    // After a fill the original daemon reloaded the account; the record holds what it got, a
    // moment later: wait for it (that moment at the replay's speed) rather than answer the state
    // from before the fill.
    let limit = match shared.control.speed.factor() {
        Some(x) => REST_CATCH_UP
            .div_f64(x)
            .clamp(REST_CATCH_UP, MAX_REST_CATCH_UP),
        None => REST_CATCH_UP,
    };
    shared
        .wait_for(limit, |stage| !stage.behind(&account))
        .await;
    let state = shared.stage().view(&account);
    match state {
        Some((state, _)) => HttpResponse::Ok().json(&state[view]),
        None => HttpResponse::NotFound().json(json!({
            "code": 40410000,
            "message": format!("account {account:?} is not in the record (yet)"),
        })),
    }
}
