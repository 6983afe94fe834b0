//! The Alpaca-compatible endpoint, spoken by a Rust client exactly as the SDKs speak it
//! (docs/alpaca-endpoint.md): paths, the session protocol and its error codes, JSON and msgpack,
//! fragmented messages, per-program filtering over one upstream connection, the trading stream.
//! The real SDK packages are driven in `sdk_packages.rs`.

use std::time::Duration;

use actix_codec::Framed;
use actix_http::ws::{Codec, Frame, Item, Message};
use awc::error::WsClientError;
use awc::BoxedSocket;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tickrelay::credentials::Secret;
use tickrelay::settings::{ClientSettings, Settings};
use tickrelay::time::Timestamp;

use crate::helpers::{spawn_app_with, wait_for, Ended, TestApp, EVENT_TIMEOUT};

pub const KEY: &str = "algo-key";
pub const SECRET: &str = "algo-secret-123456";

/// Adds a client `id` with its key pair, the market scope and the scopes of `accounts`.
pub fn add_client(s: &mut Settings, id: &str, key: &str, secret: &str, accounts: &[&str]) {
    let scopes = std::iter::once("market".to_owned())
        .chain(accounts.iter().map(|a| format!("account:{a}")))
        .collect();
    s.clients.insert(
        id.into(),
        ClientSettings {
            key_id: key.into(),
            secret_env: None,
            scopes: Some(scopes),
            secret: Some(Secret::new(secret)),
        },
    );
}

/// A daemon with one client (`algo`, allowed the `main` account) and a fast auth timeout.
pub async fn sdk_app() -> TestApp {
    spawn_app_with(|s| {
        add_client(s, "algo", KEY, SECRET, &["main"]);
        add_client(s, "viewer", "viewer-key", "viewer-secret", &[]);
        // Only market data without a credential, so `viewer` sees no account.
        s.auth.anonymous_scopes = vec!["market".into()];
        s.sdk.auth_timeout_ms = 1500;
    })
    .await
}

/// An SDK-protocol client.
pub struct SdkClient {
    framed: Framed<BoxedSocket, Codec>,
    msgpack: bool,
}

/// msgpack as JSON for assertions: Timestamp extensions become `"ts:<RFC 3339>"`, so a test can
/// tell them from strings; integers stay integers and floats floats.
pub fn msgpack_to_json(v: rmpv::Value) -> Value {
    match v {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => json!(b),
        rmpv::Value::Integer(i) => match i.as_i64() {
            Some(n) => json!(n),
            None => json!(i.as_u64()),
        },
        rmpv::Value::F32(f) => json!(f64::from(f)),
        rmpv::Value::F64(f) => json!(f),
        rmpv::Value::String(s) => json!(s.into_str().expect("msgpack str, not bin")),
        rmpv::Value::Binary(_) => panic!("msgpack bin: the SDKs expect str"),
        rmpv::Value::Array(a) => Value::Array(a.into_iter().map(msgpack_to_json).collect()),
        rmpv::Value::Map(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    (
                        k.as_str().expect("string key").to_owned(),
                        msgpack_to_json(v),
                    )
                })
                .collect(),
        ),
        rmpv::Value::Ext(-1, payload) => json!(format!(
            "ts:{}",
            Timestamp::from_msgpack_ext(&payload).unwrap().to_rfc3339()
        )),
        rmpv::Value::Ext(t, _) => panic!("unexpected ext type {t}"),
    }
}

impl SdkClient {
    pub async fn connect(app: &TestApp, path: &str, msgpack: bool) -> SdkClient {
        Self::try_connect(app, path, msgpack, &[])
            .await
            .expect("SDK connect")
    }

    pub async fn try_connect(
        app: &TestApp,
        path: &str,
        msgpack: bool,
        headers: &[(&str, &str)],
    ) -> Result<SdkClient, WsClientError> {
        let mut req = awc::Client::new().ws(format!("ws://{}{path}", app.addr));
        if msgpack {
            req = req.set_header("Content-Type", "application/msgpack");
        }
        for (k, v) in headers {
            req = req.set_header(*k, *v);
        }
        let (_, framed) = req.connect().await?;
        Ok(SdkClient { framed, msgpack })
    }

    fn encode(&self, v: &Value) -> Message {
        if self.msgpack {
            Message::Binary(rmp_serde::to_vec_named(v).unwrap().into())
        } else {
            Message::Text(v.to_string().into())
        }
    }

    pub async fn send(&mut self, v: Value) {
        let m = self.encode(&v);
        self.framed.send(m).await.expect("send");
    }

    /// As alpaca-py sends a subscribe: a binary first fragment, then an empty last one.
    pub async fn send_fragmented(&mut self, v: Value) {
        let bytes: Bytes = rmp_serde::to_vec_named(&v).unwrap().into();
        self.framed
            .send(Message::Continuation(Item::FirstBinary(bytes)))
            .await
            .unwrap();
        self.framed
            .send(Message::Continuation(Item::Last(Bytes::new())))
            .await
            .unwrap();
    }

    pub async fn auth(&mut self, key: &str, secret: &str) {
        self.send(json!({"action": "auth", "key": key, "secret": secret}))
            .await;
    }

    /// The next data frame: whether it was binary, and its messages.
    pub async fn next_frame(&mut self) -> (bool, Vec<Value>) {
        loop {
            let frame = actix_web::rt::time::timeout(EVENT_TIMEOUT, self.framed.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("protocol error");
            let (binary, value) = match frame {
                Frame::Text(b) => (false, serde_json::from_slice::<Value>(&b).expect("JSON")),
                Frame::Binary(b) => {
                    let v = if b.first() == Some(&b'{') || b.first() == Some(&b'[') {
                        serde_json::from_slice(&b).expect("JSON in a binary frame")
                    } else {
                        msgpack_to_json(rmpv::decode::read_value(&mut &b[..]).expect("msgpack"))
                    };
                    (true, v)
                }
                Frame::Ping(p) => {
                    let _ = self.framed.send(Message::Pong(p)).await;
                    continue;
                }
                Frame::Close(reason) => panic!("closed unexpectedly: {reason:?}"),
                _ => continue,
            };
            return match value {
                Value::Array(items) => (binary, items),
                other => (binary, vec![other]),
            };
        }
    }

    /// The next frame, which must be a single control message.
    pub async fn control(&mut self) -> Value {
        let (binary, mut msgs) = self.next_frame().await;
        assert_eq!(binary, self.msgpack, "control frame type: {msgs:?}");
        assert_eq!(msgs.len(), 1, "control messages come alone: {msgs:?}");
        msgs.pop().unwrap()
    }

    /// The first message matching `pred`, skipping others.
    pub async fn expect(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let search = async {
            loop {
                let (_, msgs) = self.next_frame().await;
                if let Some(m) = msgs.into_iter().find(|m| pred(m)) {
                    return m;
                }
            }
        };
        actix_web::rt::time::timeout(EVENT_TIMEOUT, search)
            .await
            .expect("timed out waiting for a matching message")
    }

    /// Every message that arrives within `window`.
    pub async fn collect_for(&mut self, window: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        let _ = actix_web::rt::time::timeout(window, async {
            loop {
                let (_, msgs) = self.next_frame().await;
                out.extend(msgs);
            }
        })
        .await;
        out
    }

    pub async fn until_end(&mut self) -> Ended {
        crate::helpers::read_until_end(&mut self.framed).await
    }

    /// The first text message matching `pred`, or how the connection ended before one came.
    pub async fn expect_or_end(&mut self, pred: impl Fn(&Value) -> bool) -> Result<Value, Ended> {
        loop {
            let frame = actix_web::rt::time::timeout(EVENT_TIMEOUT, self.framed.next())
                .await
                .expect("timed out waiting for a message or the end");
            match frame {
                Some(Ok(Frame::Text(b))) => {
                    let msgs = match serde_json::from_slice::<Value>(&b).expect("JSON") {
                        Value::Array(items) => items,
                        one => vec![one],
                    };
                    if let Some(m) = msgs.into_iter().find(|m| pred(m)) {
                        return Ok(m);
                    }
                }
                Some(Ok(Frame::Close(reason))) => {
                    return Err(Ended::Closed(reason.map(|r| r.code.into())))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(Ended::Eof),
            }
        }
    }
}

fn error(code: u16, msg: &str) -> Value {
    json!({"T": "error", "code": code, "msg": msg})
}

/// Connects, reads the welcome, authenticates as `algo`.
pub async fn authed(app: &TestApp, path: &str, msgpack: bool) -> SdkClient {
    let mut c = SdkClient::connect(app, path, msgpack).await;
    assert_eq!(
        c.control().await,
        json!({"T": "success", "msg": "connected"})
    );
    c.auth(KEY, SECRET).await;
    assert_eq!(
        c.control().await,
        json!({"T": "success", "msg": "authenticated"})
    );
    c
}

/// Guessing is bounded on every path: three refused key pairs close an SDK connection with 1008,
/// on the market-data stream and on `/stream` alike.
#[actix_web::test]
async fn three_refused_key_pairs_close_an_sdk_connection() {
    let app = sdk_app().await;
    let mut c = SdkClient::connect(&app, "/v2/iex", false).await;
    assert_eq!(c.control().await["msg"], "connected");
    for _ in 0..3 {
        c.auth(KEY, "a-wrong-guess").await;
        assert_eq!(c.control().await, error(402, "auth failed"));
    }
    assert_eq!(c.until_end().await, Ended::Closed(Some(1008)));

    let mut t = SdkClient::connect(&app, "/stream", false).await;
    for _ in 0..3 {
        t.send(json!({"action": "authenticate", "data": {"key_id": KEY, "secret_key": "guess"}}))
            .await;
    }
    assert_eq!(t.until_end().await, Ended::Closed(Some(1008)));
}

/// Messages past `sdk.max_messages_per_second` are answered 429 and not read.
#[actix_web::test]
async fn messages_past_the_rate_are_answered_429() {
    let app = spawn_app_with(|s| {
        add_client(s, "algo", KEY, SECRET, &["main"]);
        s.sdk.max_messages_per_second = 2;
    })
    .await;
    let mut c = SdkClient::connect(&app, "/v2/iex", false).await;
    assert_eq!(c.control().await["msg"], "connected");
    c.auth(KEY, SECRET).await;
    assert_eq!(c.control().await["msg"], "authenticated");
    for _ in 0..10 {
        c.send(json!({"action": "subscribe", "quotes": ["AAPL"]}))
            .await;
    }
    let mut limited = 0;
    for _ in 0..10 {
        let reply = c.control().await;
        if reply["T"] == "error" {
            assert_eq!(reply, error(429, "rate limit exceeded"));
            limited += 1;
        } else {
            assert_eq!(reply["T"], "subscription", "{reply}");
        }
    }
    // Auth took one of the burst of two; the rest refill at two a second.
    assert!(limited >= 5, "{limited} of 10 refused");
}

/// Invalid messages get 400 until `sdk.max_invalid_messages` of them close the connection with
/// 1008.
#[actix_web::test]
async fn invalid_messages_close_the_connection_past_the_limit() {
    let app = spawn_app_with(|s| s.sdk.max_invalid_messages = 4).await;
    let mut fresh = SdkClient::connect(&app, "/v2/iex", false).await;
    assert_eq!(fresh.control().await["msg"], "connected");
    for _ in 0..4 {
        fresh.send(json!({"action": "dance"})).await;
    }
    for _ in 0..3 {
        assert_eq!(fresh.control().await, error(400, "invalid syntax"));
    }
    assert_eq!(fresh.until_end().await, Ended::Closed(Some(1008)));
}

#[actix_web::test]
async fn session_protocol_and_its_error_codes_in_json() {
    let app = sdk_app().await;
    let mut c = SdkClient::connect(&app, "/v2/iex", false).await;
    assert_eq!(
        c.control().await,
        json!({"T": "success", "msg": "connected"})
    );
    c.send(json!({"action": "subscribe", "quotes": ["AAPL"]}))
        .await;
    assert_eq!(c.control().await, error(401, "not authenticated"));
    c.auth(KEY, "wrong").await;
    assert_eq!(c.control().await, error(402, "auth failed"));
    c.auth("viewer-key", SECRET).await;
    assert_eq!(
        c.control().await,
        error(402, "auth failed"),
        "pairs do not mix"
    );
    c.auth(KEY, SECRET).await;
    assert_eq!(
        c.control().await,
        json!({"T": "success", "msg": "authenticated"})
    );
    c.auth(KEY, SECRET).await;
    assert_eq!(c.control().await, error(403, "already authenticated"));
    c.send(json!({"action": "dance"})).await;
    assert_eq!(c.control().await, error(400, "invalid syntax"));
    c.send(json!({"action": "subscribe", "orderbooks": ["AAPL"]}))
        .await;
    assert_eq!(
        c.control().await,
        error(410, "invalid subscribe action for this feed")
    );
    c.send(json!({"action": "subscribe", "quotes": ["not a symbol!"]}))
        .await;
    assert_eq!(c.control().await, error(400, "invalid syntax"));

    // Keys in any order, nulls, empty lists, unknown keys; the ack lists every stocks key.
    c.send(
        json!({"trades": ["MSFT"], "news": null, "bars": [], "quotes": ["AAPL"],
        "pricing": null, "action": "subscribe"}),
    )
    .await;
    let ack = c.control().await;
    assert_eq!(
        ack,
        json!({"T": "subscription", "trades": ["MSFT"], "quotes": ["AAPL"], "bars": [],
            "updatedBars": [], "dailyBars": [], "statuses": [], "lulds": [],
            "corrections": ["MSFT"], "cancelErrors": ["MSFT"]})
    );
    // Only what was asked arrives: AAPL quotes and MSFT trades, nothing else.
    let msgs = c.collect_for(Duration::from_millis(800)).await;
    assert!(
        msgs.iter().any(|m| m["T"] == "q" && m["S"] == "AAPL"),
        "no AAPL quote in {} messages",
        msgs.len()
    );
    for m in &msgs {
        let ok = (m["T"] == "q" && m["S"] == "AAPL") || (m["T"] == "t" && m["S"] == "MSFT");
        assert!(ok, "unwanted message {m}");
    }
    let q = msgs.iter().find(|m| m["T"] == "q").unwrap();
    for field in ["bx", "bp", "bs", "ax", "ap", "as", "c", "z", "t"] {
        assert!(!q[field].is_null(), "quote lacks {field}: {q}");
    }
    assert!(Timestamp::parse_rfc3339(q["t"].as_str().unwrap()).is_ok());

    // A repeated full-set subscribe changes nothing and is acked the same.
    c.send(json!({"action": "subscribe", "trades": ["MSFT"], "quotes": ["AAPL"]}))
        .await;
    assert_eq!(c.expect(|m| m["T"] == "subscription").await, ack);
}

#[actix_web::test]
async fn msgpack_with_auth_before_the_welcome_and_a_fragmented_subscribe() {
    let app = sdk_app().await;
    let mut c = SdkClient::connect(&app, "/v2/iex", true).await;
    // The JS SDK authenticates as soon as the socket opens.
    c.auth(KEY, SECRET).await;
    assert_eq!(
        c.control().await,
        json!({"T": "success", "msg": "connected"})
    );
    assert_eq!(
        c.control().await,
        json!({"T": "success", "msg": "authenticated"})
    );
    // go-sdk's shape (every key, unused ones nil), alpaca-py's framing (fragments, action last).
    c.send_fragmented(json!({"trades": null, "quotes": ["AAPL"], "bars": null,
        "updatedBars": null, "dailyBars": null, "statuses": null, "imbalances": null,
        "lulds": null, "orderbooks": null, "news": null, "pricing": null, "action": "subscribe"}))
        .await;
    let ack = c.control().await;
    assert_eq!(ack["T"], "subscription");
    assert_eq!(ack["quotes"], json!(["AAPL"]));
    let q = c.expect(|m| m["T"] == "q").await;
    assert_eq!(q["S"], "AAPL");
    assert!(
        q["bp"].is_f64() && q["ap"].is_f64(),
        "prices are floats: {q}"
    );
    assert!(
        q["bs"].is_u64() && q["as"].is_u64(),
        "stock sizes are integers: {q}"
    );
    assert!(
        q["t"].as_str().is_some_and(|t| t.starts_with("ts:")),
        "t is a msgpack Timestamp: {q}"
    );
}

#[actix_web::test]
async fn msgpack_maps_put_t_first() {
    let app = sdk_app().await;
    let mut c = authed(&app, "/v1beta3/crypto/us", true).await;
    c.send(json!({"action": "subscribe", "quotes": ["BTC/USD"], "orderbooks": ["BTC/USD"]}))
        .await;
    let ack = c.control().await;
    assert_eq!(
        ack,
        json!({"T": "subscription", "trades": [], "quotes": ["BTC/USD"],
            "orderbooks": ["BTC/USD"], "bars": [], "updatedBars": [], "dailyBars": []})
    );
    // Read raw bytes: every map's first key is T.
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    let mut seen = 0;
    while seen < 5 {
        assert!(std::time::Instant::now() < deadline, "no crypto data");
        let frame = c.framed.next().await.unwrap().unwrap();
        let Frame::Binary(b) = frame else { continue };
        let v = rmpv::decode::read_value(&mut &b[..]).unwrap();
        for m in v.as_array().unwrap() {
            let first = &m.as_map().unwrap()[0];
            assert_eq!(first.0.as_str(), Some("T"));
            let sizes: Vec<&rmpv::Value> = m
                .as_map()
                .unwrap()
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), Some("bs" | "as")))
                .map(|(_, v)| v)
                .collect();
            assert!(sizes.iter().all(|v| v.is_f64()), "crypto sizes are floats");
            seen += 1;
        }
    }
}

#[actix_web::test]
async fn paths_the_daemon_does_not_carry_are_refused_with_404_and_a_reason() {
    let app = sdk_app().await;
    for path in [
        "/v2/sip",
        "/v1beta3/crypto/eu-1",
        "/v1beta2/crypto",
        "/v2/nothing",
    ] {
        match SdkClient::try_connect(&app, path, true, &[]).await {
            Err(WsClientError::InvalidResponseStatus(status)) => {
                assert_eq!(status.as_u16(), 404, "{path}")
            }
            Err(e) => panic!("{path}: {e}"),
            Ok(_) => panic!("{path} was accepted"),
        }
    }
    // The reason is in the body.
    let mut res = app
        .http
        .get(app.url("/v2/sip"))
        .insert_header(("Connection", "Upgrade"))
        .insert_header(("Upgrade", "websocket"))
        .insert_header(("Sec-WebSocket-Version", "13"))
        .insert_header(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let body = res.body().await.unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        text.contains("/v2/iex") && text.contains("/v2/sip"),
        "{text}"
    );
    // The bare form go-sdk builds, and the options and news paths, are served.
    for path in ["/iex", "/v1beta1/indicative", "/v1beta1/news"] {
        let mut c = SdkClient::connect(&app, path, true).await;
        assert_eq!(c.control().await["msg"], "connected", "{path}");
    }
}

#[actix_web::test]
async fn header_auth_and_the_auth_timeout() {
    let app = sdk_app().await;
    let mut c = SdkClient::try_connect(
        &app,
        "/v1beta1/news",
        false,
        &[("APCA-API-KEY-ID", KEY), ("APCA-API-SECRET-KEY", SECRET)],
    )
    .await
    .unwrap();
    assert_eq!(c.control().await["msg"], "connected");
    assert_eq!(c.control().await["msg"], "authenticated");
    c.send(json!({"action": "subscribe", "news": ["*"]})).await;
    assert_eq!(
        c.control().await,
        json!({"T": "subscription", "news": ["*"]})
    );

    let mut idle = SdkClient::connect(&app, "/v2/iex", false).await;
    assert_eq!(idle.control().await["msg"], "connected");
    assert_eq!(idle.control().await, error(404, "auth timeout"));
    assert!(matches!(
        idle.until_end().await,
        Ended::Closed(_) | Ended::Eof
    ));
}

#[actix_web::test]
async fn options_always_speak_msgpack_and_refuse_star_quotes() {
    let app = sdk_app().await;
    // No Content-Type (the C# SDK cannot set it): still msgpack.
    let mut c = SdkClient::connect(&app, "/v1beta1/indicative", true).await;
    let mut plain = SdkClient::try_connect(&app, "/v1beta1/indicative", false, &[])
        .await
        .unwrap();
    plain.msgpack = true;
    assert_eq!(plain.control().await["msg"], "connected");
    assert_eq!(c.control().await["msg"], "connected");
    c.auth(KEY, SECRET).await;
    assert_eq!(c.control().await["msg"], "authenticated");
    c.send(json!({"action": "subscribe", "quotes": ["*"]}))
        .await;
    assert_eq!(
        c.control().await,
        error(413, "star subscription is not allowed for option quotes")
    );
    c.send(json!({"action": "subscribe", "quotes": ["SPY261218C00600000"], "bars": ["SPY"]}))
        .await;
    assert_eq!(
        c.control().await,
        error(410, "invalid subscribe action for this feed")
    );
    c.send(json!({"action": "subscribe", "quotes": ["SPY261218C00600000"]}))
        .await;
    assert_eq!(
        c.control().await,
        json!({"T": "subscription", "trades": [], "quotes": ["SPY261218C00600000"]})
    );
    let q = c.expect(|m| m["T"] == "q").await;
    assert!(q["c"].is_string(), "option conditions are one string: {q}");
}

#[actix_web::test]
async fn no_client_configured_refuses_every_auth() {
    let app = spawn_app_with(|_| {}).await;
    let mut c = SdkClient::connect(&app, "/v2/iex", false).await;
    assert_eq!(c.control().await["msg"], "connected");
    c.auth("simulator", "simulator").await;
    assert_eq!(c.control().await, error(402, "auth failed"));
}

/// Quotes of `symbol` that reach `c` within a short window.
async fn quotes_of(c: &mut SdkClient, symbol: &str) -> usize {
    c.collect_for(Duration::from_millis(600))
        .await
        .iter()
        .filter(|m| m["T"] == "q" && m["S"] == symbol)
        .count()
}

#[actix_web::test]
async fn programs_share_one_upstream_connection_and_unsubscribe_alone() {
    let app = sdk_app().await;
    let mut a = authed(&app, "/v2/iex", true).await;
    let mut b = authed(&app, "/v2/iex", false).await;
    let mut browser = app.ws().await;
    browser.subscribe(&["MSFT"]).await;
    a.send(json!({"action": "subscribe", "quotes": ["AAPL", "MSFT"]}))
        .await;
    b.send(json!({"action": "subscribe", "quotes": ["AAPL"], "trades": ["SPY"]}))
        .await;
    a.control().await;
    b.control().await;
    app.wait_upstream(&["AAPL", "MSFT"]).await;
    assert!(quotes_of(&mut a, "AAPL").await > 0);
    assert!(quotes_of(&mut b, "AAPL").await > 0);

    // a lets AAPL go: b keeps it, upstream keeps it (b holds it).
    a.send(json!({"action": "unsubscribe", "quotes": ["AAPL"]}))
        .await;
    let ack = a.expect(|m| m["T"] == "subscription").await;
    assert_eq!(ack["quotes"], json!(["MSFT"]));
    let late = a
        .collect_for(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|m| m["S"] == "AAPL")
        .count();
    assert!(late <= 1, "a still gets AAPL after the ack ({late})");
    assert_eq!(quotes_of(&mut a, "AAPL").await, 0);
    assert!(quotes_of(&mut b, "AAPL").await > 0, "b lost AAPL");
    assert!(quotes_of(&mut a, "MSFT").await > 0);
    browser.expect_type("spot_price_update").await;

    // The status lists the programs with their stream and client.
    let status = app.status().await;
    assert_eq!(
        status["sessions"]["sdk_programs"], 2,
        "{}",
        status["sessions"]
    );
    let list = status["sessions"]["list"].as_array().unwrap();
    assert!(list
        .iter()
        .any(|s| s["kind"] == "sdk:stocks" && s["client"] == "algo"));
    assert!(list.iter().any(|s| s["kind"] == "browser"));
    // One upstream connection per feed, whatever the number of programs.
    let conns = app.sim_connections().await;
    let stocks = conns.iter().filter(|c| c["feed"] == "stocks").count();
    assert_eq!(stocks, 1, "{conns:?}");
    let trades = app.upstream_symbols_of(Some("stocks"), "trades").await;
    assert!(trades.iter().any(|s| s == "SPY"), "{trades:?}");

    // b leaves: AAPL and SPY trades leave upstream (nobody holds them).
    drop(b);
    wait_for("AAPL to leave upstream", || async {
        let q = app.upstream_symbols_of(Some("stocks"), "quotes").await;
        (!q.iter().any(|s| s == "AAPL")).then_some(())
    })
    .await;
    let q = app.upstream_symbols_of(Some("stocks"), "quotes").await;
    assert!(q.iter().any(|s| s == "MSFT"), "MSFT is still held: {q:?}");
}

#[actix_web::test]
async fn trading_stream_serves_only_permitted_accounts() {
    let app = sdk_app().await;
    let connect = |app: &TestApp| {
        let url = format!("ws://{}/stream", app.addr);
        async move {
            let (_, framed) = awc::Client::new().ws(url).connect().await.unwrap();
            SdkClient {
                framed,
                msgpack: false,
            }
        }
    };
    let auth = |key: &str, secret: &str| json!({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}});
    let listen = json!({"action": "listen", "data": {"streams": ["trade_updates"]}});

    let mut algo = connect(&app).await;
    algo.send(listen.clone()).await;
    let (binary, m) = algo.next_frame().await;
    assert!(binary, "the trading stream sends binary frames");
    assert_eq!(m[0]["data"]["status"], "unauthorized");
    assert_eq!(m[0]["data"]["action"], "listen");
    algo.send(auth(KEY, SECRET)).await;
    assert_eq!(
        algo.next_frame().await.1[0],
        json!({"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}})
    );
    algo.send(listen.clone()).await;
    assert_eq!(
        algo.next_frame().await.1[0],
        json!({"stream": "listening", "data": {"streams": ["trade_updates"]}})
    );

    let mut viewer = connect(&app).await;
    viewer.send(auth("viewer-key", "viewer-secret")).await;
    let refused = viewer.next_frame().await.1.remove(0);
    assert_eq!(refused["data"]["status"], "unauthorized", "{refused}");
    viewer.send(listen.clone()).await;
    assert_eq!(
        viewer.next_frame().await.1[0]["data"]["status"],
        "unauthorized"
    );

    let mut wrong = connect(&app).await;
    wrong.send(auth(KEY, "nope")).await;
    let m = wrong.next_frame().await.1.remove(0);
    assert_eq!(m["data"]["message"], "access key verification failed");

    app.sim(
        "order",
        json!({"symbol": "AAPL", "qty": 3, "side": "buy", "price": 190.5}),
    )
    .await;
    let update = algo.expect(|m| m["stream"] == "trade_updates").await;
    let data = &update["data"];
    assert_eq!(data["order"]["symbol"], "AAPL");
    for field in ["event", "timestamp", "order"] {
        assert!(!data[field].is_null(), "{field} missing: {update}");
    }
    assert!(data["order"]["id"].is_string());
    // The viewer never sees it.
    let seen = viewer.collect_for(Duration::from_millis(500)).await;
    assert!(
        seen.iter().all(|m| m["stream"] != "trade_updates"),
        "{seen:?}"
    );
}

/// A client that trusts the test CA in `tests/tls/`.
pub fn tls_client() -> awc::Client {
    tls_client_offering(&[b"http/1.1"])
}

/// A client that speaks HTTP/2 when the listener offers it (ALPN `h2`, then `http/1.1`).
pub fn tls_client_h2() -> awc::Client {
    tls_client_offering(&[b"h2", b"http/1.1"])
}

/// An HTTPS client trusting the test CA and offering `protocols` by ALPN.
fn tls_client_offering(protocols: &[&[u8]]) -> awc::Client {
    use rustls::pki_types::pem::PemObject;
    let ca = rustls::pki_types::CertificateDer::from_pem_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tls/ca.pem"
    ))
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(std::sync::Arc::new(config)))
        .timeout(EVENT_TIMEOUT)
        .finish()
}

/// Over HTTPS the dashboard and REST answer on HTTP/2 (the Host guard reads `:authority`: before,
/// every HTTP/2 request got 403) and on HTTP/1.1, where a foreign Host is still refused.
#[actix_web::test]
async fn https_serves_http2_and_http1_and_the_host_guard_holds_on_both() {
    let app = crate::helpers::spawn_unready(use_test_tls).await;
    let port = app.addr.port();
    for (client, version) in [
        (tls_client_h2(), actix_web::http::Version::HTTP_2),
        (tls_client(), actix_web::http::Version::HTTP_11),
    ] {
        for path in ["/", "/api/v1/health", "/dashboard.js"] {
            let res = client
                .get(format!("https://127.0.0.1:{port}{path}"))
                .send()
                .await
                .expect("https");
            assert_eq!(res.status().as_u16(), 200, "{version:?} {path}");
            assert_eq!(res.version(), version, "{path}");
        }
    }
    // On HTTP/1.1 the Host header names a foreign host: refused (on HTTP/2 the authority is the
    // URL's, which the certificate already pins to this host).
    let foreign = tls_client()
        .get(format!("https://127.0.0.1:{port}/api/v1/health"))
        .insert_header(("Host", "evil.example"))
        .send()
        .await
        .expect("https");
    assert_eq!(foreign.status().as_u16(), 403);
}

pub fn use_test_tls(s: &mut Settings) {
    s.http.tls_cert_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/cert.pem").into();
    s.http.tls_key_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/key.pem").into();
}

#[actix_web::test]
async fn the_listener_speaks_tls_when_given_a_certificate() {
    let app = crate::helpers::spawn_unready(|s| {
        use_test_tls(s);
        add_client(s, "algo", KEY, SECRET, &[]);
    })
    .await;
    let client = tls_client();
    let mut res = client
        .get(format!("https://127.0.0.1:{}/healthz", app.addr.port()))
        .send()
        .await
        .expect("https");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    let (_, framed) = client
        .ws(format!("wss://127.0.0.1:{}/v2/iex", app.addr.port()))
        .set_header("Content-Type", "application/msgpack")
        .connect()
        .await
        .expect("wss");
    let mut c = SdkClient {
        framed,
        msgpack: true,
    };
    assert_eq!(c.control().await["msg"], "connected");
    c.auth(KEY, SECRET).await;
    assert_eq!(c.control().await["msg"], "authenticated");
    // Plain HTTP on a TLS listener gets nowhere.
    assert!(awc::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", app.addr.port()))
        .send()
        .await
        .is_err());
}

#[actix_web::test]
async fn a_program_that_cannot_keep_up_gets_407_and_nobody_waits_for_it() {
    let symbols: Vec<String> = (0..20).map(|i| format!("S{i:02}")).collect();
    let app = spawn_app_with(|s| {
        add_client(s, "algo", KEY, SECRET, &[]);
        s.simulator.tick_ms = 5;
        s.session.socket_send_buffer_bytes = 8 * 1024;
        s.session.slow_client_timeout_ms = 1500;
        s.session.slow_client_close_grace_ms = 20_000;
    })
    .await;
    let subscribe = json!({"action": "subscribe", "quotes": symbols});
    let mut healthy = authed(&app, "/v2/iex", true).await;
    healthy.send(subscribe.clone()).await;
    healthy.expect(|m| m["T"] == "subscription").await;

    let mut slow = crate::helpers::StallingClient::connect_to(
        app.addr,
        4096,
        "/v2/iex",
        "Content-Type: application/msgpack\r\n",
    )
    .await;
    slow.send(json!({"action": "auth", "key": KEY, "secret": SECRET}))
        .await;
    slow.send(subscribe).await;
    // From here on it reads nothing, while the healthy program keeps receiving every quote.
    let started = std::time::Instant::now();
    let mut during = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        during += healthy
            .collect_for(Duration::from_millis(250))
            .await
            .iter()
            .filter(|m| m["T"] == "q")
            .count();
    }
    assert!(
        during > 1000,
        "the healthy program got only {during} quotes"
    );
    wait_for("the slow program to be closed", || async {
        let sessions = app.status().await["sessions"]["list"].clone();
        (sessions.as_array()?.len() == 1).then_some(())
    })
    .await;
    // When it reads again: the last message before the close is Alpaca's 407.
    let (last, end) = slow.last_message_before_end().await;
    let last = last.expect("a message before the close");
    let v = msgpack_to_json(rmpv::decode::read_value(&mut &last[..]).expect("msgpack"));
    assert_eq!(
        v,
        json!([{"T": "error", "code": 407, "msg": "slow client"}])
    );
    assert!(matches!(end, Ended::Closed(Some(_))), "{end:?}");
    // The healthy one is still served.
    healthy.expect(|m| m["T"] == "q").await;
}

/// Waits until the stocks feed's upstream is down (the simulator refuses its upgrades).
async fn stocks_down(app: &TestApp) {
    wait_for("the stocks feed down", || async {
        (app.feed_status("stocks").await["state"] != "connected").then_some(())
    })
    .await;
}

/// A lost upstream closes the SDK programs on that feed with 1012, as a restarting Alpaca
/// would: every SDK reconnects on it. A program that connects during the loss has seen no data
/// since: it is closed when the upstream is back. Programs on other feeds are untouched.
#[actix_web::test]
async fn a_lost_upstream_closes_its_programs_with_1012() {
    let app = sdk_app().await;
    let mut before = authed(&app, "/v2/iex", false).await;
    before
        .send(json!({"action": "subscribe", "quotes": ["AAPL"]}))
        .await;
    assert_eq!(before.control().await["T"], "subscription");
    let mut crypto = authed(&app, "/v1beta3/crypto/us", false).await;
    app.wait_upstream(&["AAPL"]).await;

    // Down, and kept down: every upgrade refused until the test lets it through.
    app.sim(
        "fail_handshake",
        json!({"feed": "stocks", "status": 503, "count": 1_000_000}),
    )
    .await;
    app.sim("drop", json!({"feed": "stocks", "mode": "abort"}))
        .await;
    assert_eq!(before.until_end().await, Ended::Closed(Some(1012)));
    stocks_down(&app).await;
    let mut during = authed(&app, "/v2/iex", false).await;
    during
        .send(json!({"action": "subscribe", "quotes": ["AAPL"]}))
        .await;
    assert_eq!(during.control().await["T"], "subscription");

    app.sim(
        "fail_handshake",
        json!({"feed": "stocks", "status": 503, "count": 0}),
    )
    .await;
    assert_eq!(during.until_end().await, Ended::Closed(Some(1012)));
    // The crypto program heard nothing of it.
    crypto
        .send(json!({"action": "subscribe", "quotes": ["BTC/USD"]}))
        .await;
    assert_eq!(crypto.control().await["T"], "subscription");
}

/// When an Alpaca error ended the upstream connection, the programs get it in Alpaca's shape
/// before the close.
#[actix_web::test]
async fn the_error_that_ended_the_upstream_reaches_its_programs() {
    let app = sdk_app().await;
    let mut program = authed(&app, "/v2/iex", false).await;
    app.sim(
        "error",
        json!({"feed": "stocks", "code": 406, "close": true}),
    )
    .await;
    let error = program.expect(|m| m["T"] == "error").await;
    assert_eq!(
        error,
        json!({"T": "error", "code": 406, "msg": "connection limit exceeded"})
    );
    assert_eq!(program.until_end().await, Ended::Closed(Some(1012)));
}

/// `sdk.on_upstream_loss = "keep"`: the program stays connected through the loss and gets data
/// again once the upstream is back.
#[actix_web::test]
async fn keep_mode_keeps_programs_through_a_lost_upstream() {
    let app = spawn_app_with(|s| {
        add_client(s, "algo", KEY, SECRET, &["main"]);
        s.sdk.on_upstream_loss = tickrelay::settings::UpstreamLoss::Keep;
        s.simulator.generate = false;
    })
    .await;
    let mut program = authed(&app, "/v2/iex", false).await;
    program
        .send(json!({"action": "subscribe", "quotes": ["AAPL"]}))
        .await;
    assert_eq!(program.control().await["T"], "subscription");
    app.wait_upstream(&["AAPL"]).await;
    let connects = app.feed_status("stocks").await["connects"].as_u64();
    app.sim("drop", json!({"feed": "stocks", "mode": "abort"}))
        .await;
    wait_for("the stocks feed back", || async {
        let feed = app.feed_status("stocks").await;
        (feed["connects"].as_u64() > connects && feed["state"] == "connected").then_some(())
    })
    .await;
    app.wait_upstream(&["AAPL"]).await;
    app.inject_quotes(&[("AAPL", 150.0, 150.5)]).await;
    let q = program.expect(|m| m["T"] == "q").await;
    assert_eq!(q["bp"], 150.0, "{q}");
}

/// The next data frame's bytes, as sent.
async fn raw_frame(c: &mut SdkClient) -> (bool, Bytes) {
    loop {
        let frame = actix_web::rt::time::timeout(EVENT_TIMEOUT, c.framed.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("valid");
        match frame {
            Frame::Text(b) => return (false, b),
            Frame::Binary(b) => return (true, b),
            _ => continue,
        }
    }
}

/// Alpaca's options stream speaks only msgpack: a client that did not ask for it and speaks JSON
/// gets `412` (in JSON) and the close, where it used to get msgpack it could not read. One that
/// sends msgpack without the header (as cs-sdk must) is served.
#[actix_web::test]
async fn options_answer_412_to_a_json_client() {
    let app = sdk_app().await;
    let mut json_client = SdkClient::connect(&app, "/v1beta1/indicative", false).await;
    let (_, welcome) = json_client.next_frame().await;
    assert_eq!(welcome[0]["msg"], "connected");
    json_client.auth(KEY, SECRET).await;
    let (binary, error) = raw_frame(&mut json_client).await;
    assert!(!binary, "the 412 goes out as JSON text");
    let error: Value = serde_json::from_slice(&error).unwrap();
    assert_eq!(
        error,
        json!([{"T": "error", "code": 412, "msg": "option messages are only available in MsgPack format"}])
    );
    assert_eq!(json_client.until_end().await, Ended::Closed(Some(1008)));

    let mut no_header = SdkClient::try_connect(&app, "/v1beta1/indicative", false, &[])
        .await
        .unwrap();
    no_header.msgpack = true;
    assert_eq!(no_header.control().await["msg"], "connected");
    no_header.auth(KEY, SECRET).await;
    assert_eq!(no_header.control().await["msg"], "authenticated");
}

/// `/stream` replies keep Alpaca's key order: `stream` first, then `data` (an authorization's
/// `status` before its `action`), byte for byte.
#[actix_web::test]
async fn trading_stream_replies_keep_alpacas_key_order() {
    let app = sdk_app().await;
    let mut t = SdkClient::connect(&app, "/stream", false).await;
    t.send(json!({"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}))
        .await;
    let (_, reply) = raw_frame(&mut t).await;
    assert_eq!(
        &reply[..],
        br#"{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}"#
    );
    t.send(json!({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        .await;
    let (_, reply) = raw_frame(&mut t).await;
    assert_eq!(
        &reply[..],
        br#"{"stream":"listening","data":{"streams":["trade_updates"]}}"#
    );
}

/// A lost account trading stream closes the `/stream` programs listening to it with 1012,
/// so they reconnect and reconcile their orders.
#[actix_web::test]
async fn a_lost_trading_stream_closes_its_stream_programs_with_1012() {
    let app = sdk_app().await;
    let mut t = SdkClient::connect(&app, "/stream", false).await;
    t.send(json!({"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}))
        .await;
    assert_eq!(
        t.expect(|m| m["stream"] == "authorization").await["data"]["status"],
        "authorized"
    );
    t.send(json!({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        .await;
    t.expect(|m| m["stream"] == "listening").await;
    wait_for("the account streaming", || async {
        (app.feed_status("trading:main").await["state"] == "connected").then_some(())
    })
    .await;
    app.sim("drop", json!({"feed": "trading"})).await;
    assert_eq!(t.until_end().await, Ended::Closed(Some(1012)));
}
