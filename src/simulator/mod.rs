//! The built-in Alpaca-protocol market simulator.
//!
//! Speaks Alpaca's streaming protocols on Alpaca's paths — stocks (`/v2/{iex|sip|delayed_sip|test}`,
//! `/v1beta1/{boats|overnight}`), crypto (`/v1beta3/crypto/{us|us-1|eu-1}`), options
//! (`/v1beta1/{indicative|opra}`, msgpack only), news (`/v1beta1/news`) and the trading stream
//! (`/stream`) — plus the trading REST endpoints tickrelay reads (`/v2/account`, `/v2/positions`,
//! `/v2/orders`). It streams random-walk quotes, trades, bars and crypto order books for any validly
//! formed symbol it is asked for (deterministic per symbol), generates news, and runs a fake
//! account that places and fills orders. JSON by default; msgpack when the upgrade asks for it. The
//! committed `settings.toml` runs it in-process on a loopback port; `tickrelay simulate --port N`
//! runs it alone.
//!
//! - [`market`] — the per-symbol random walk and the messages built from it.
//! - [`exchange`] — the market actor: walks, data connections, news.
//! - [`connection`] — one data-stream client (the server side of the protocol).
//! - [`broker`] — the fake account, its REST views and its trading stream.
//! - [`faults`] — the fault switches, per stream.
//!
//! Fault commands (`/control/…`, JSON, from a loopback Host and no `Origin`: only local tools;
//! `"feed"` names one stream — `stocks`, `crypto`, `options`, `news`, `trading` — and defaults to
//! all):
//!
//! | request | effect |
//! |---|---|
//! | `POST /control/drop` `{"feed":…,"mode":"abort"\|"close"}` | drop connections (no close frame) or close them |
//! | `POST /control/error` `{"feed":…,"code":406,"close":true}` | send `[{"T":"error",…}]` |
//! | `POST /control/stall` `{"ms":5000}` | block the exchange's thread (embedded: the daemon's main thread) |
//! | `POST /control/fail_auth` `{"feed":…,"code":402,"count":1}` | refuse the next authentications |
//! | `POST /control/fail_handshake` `{"feed":…,"status":429,"count":1}` | refuse the next WebSocket upgrades with an HTTP status |
//! | `POST /control/swallow_acks` `{"feed":…,"count":1}` | apply the next subscription changes without acknowledging them |
//! | `POST /control/fail_rest` `{"status":429,"count":1,"retry_after":1}` | refuse the next trading REST requests (with this `Retry-After`) |
//! | `POST /control/reject_symbols` `{"feed":…,"symbols":["BAD"]}` | refuse subscriptions to these symbols (400) |
//! | `POST /control/symbol_limit` `{"feed":…,"limit":3}` | refuse subscriptions past this many symbols (405) |
//! | `POST /control/silence` `{"feed":…,"silent":true,"frozen":false,"paused":false}` | stop data (`silent`), or data and pongs (`frozen`), or only generated data (`paused`: injected and raw frames still go out) |
//! | `POST /control/inject` `{"quotes":[{"symbol":"AAPL","bp":1,"ap":2}],"trades":[…],"news":[…]}` | send these now |
//! | `POST /control/raw` `{"feed":…,"text":"…"}` | send a raw text frame (garbage tests) |
//! | `POST /control/order` `{"symbol":"AAPL","qty":10,"side":"buy","price":190.5}` | the account places and fills an order |
//! | `GET /control/connections` | data connections and their subscriptions |
//! | `GET /control/history?symbol=AAPL` | recent quotes sent for a symbol |

pub mod broker;
pub mod connection;
pub mod exchange;
pub mod faults;
pub mod market;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use log::info;
use serde::Deserialize;

use self::broker::{
    BroadcastTrading, Broker, PlaceOrder, Read, TradingConnection, TradingOutbound, View,
};
use self::connection::SimConnection;
use self::exchange::{
    Broadcast, Encoded, Exchange, ExchangeConfig, GetHistory, GetReport, Inject, SimOutbound, Stall,
};
use self::faults::{Faults, SimFeed};
use crate::settings::SimulatorSettings;
use crate::vocab::Encoding;

/// Alpaca's documented auth window.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A running simulator.
#[derive(Clone)]
pub struct SimulatorHandle {
    /// Where it listens (use `ws://{addr}` as the Alpaca data URL, `http://{addr}` as the trading URL).
    pub addr: SocketAddr,
    pub exchange: Addr<Exchange>,
    pub broker: Addr<Broker>,
}

impl SimulatorHandle {
    /// The base URL of its data streams.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The base URL of its trading API.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct SimState {
    exchange: Addr<Exchange>,
    broker: Addr<Broker>,
    faults: Arc<Faults>,
    next_id: AtomicU64,
}

/// Starts the simulator on `listener` in the current actix system. The returned server must be
/// awaited or spawned by the caller.
pub fn start(
    settings: &SimulatorSettings,
    listener: TcpListener,
) -> std::io::Result<(Server, SimulatorHandle)> {
    let faults = Arc::new(Faults::default());
    for feed in SimFeed::ALL {
        faults
            .feed(feed)
            .symbol_limit
            .store(settings.max_symbols, std::sync::atomic::Ordering::Relaxed);
    }
    let symbols: Vec<String> = settings
        .symbols
        .iter()
        .map(|s| s.trim().to_ascii_uppercase())
        .collect();
    let config = ExchangeConfig {
        symbols: symbols.clone(),
        tick: Duration::from_millis(settings.tick_ms),
        quotes_per_tick: settings.quotes_per_tick,
        trade_probability: settings.trade_probability,
        bar_interval: Duration::from_millis(settings.bar_interval_ms),
        news_interval: Duration::from_millis(settings.news_interval_ms),
        generate: settings.generate,
        seed: settings.seed,
        max_symbols: settings.max_symbols,
        max_messages_per_tick: (settings.max_messages_per_second as u64 * settings.tick_ms / 1000)
            .max(1) as usize,
    };
    let exchange = Exchange::new(config, faults.clone()).start();
    let stock_symbols: Vec<String> = symbols
        .into_iter()
        .filter(|s| crate::symbol::classify(s) == Some(crate::symbol::AssetClass::Stock))
        .collect();
    let broker = Broker::new(
        faults.clone(),
        stock_symbols,
        Duration::from_millis(settings.order_interval_ms),
        settings.seed,
    )
    .start();
    let addr = listener.local_addr()?;
    let state = web::Data::new(SimState {
        exchange: exchange.clone(),
        broker: broker.clone(),
        faults,
        next_id: AtomicU64::new(1),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // REST before `/v2/{feed}`, which would otherwise match `/v2/account`.
            .route("/v2/account", web::get().to(rest_account))
            .route("/v2/positions", web::get().to(rest_positions))
            .route("/v2/orders", web::get().to(rest_orders))
            .route("/v2/{feed}", web::get().to(data_stream))
            .route("/v1beta1/{feed}", web::get().to(data_stream))
            .route("/v1beta3/crypto/{location}", web::get().to(data_stream))
            .route("/stream", web::get().to(trading_stream))
            .route("/stream/", web::get().to(trading_stream))
            .service(
                web::scope("/control")
                    .wrap(actix_web::middleware::from_fn(control_guard))
                    .route("/connections", web::get().to(connections))
                    .route("/history", web::get().to(history))
                    .route("/drop", web::post().to(drop_connections))
                    .route("/error", web::post().to(send_error))
                    .route("/fail_auth", web::post().to(fail_auth))
                    .route("/fail_handshake", web::post().to(fail_handshake))
                    .route("/fail_rest", web::post().to(fail_rest))
                    .route("/swallow_acks", web::post().to(swallow_acks))
                    .route("/reject_symbols", web::post().to(reject_symbols))
                    .route("/symbol_limit", web::post().to(symbol_limit))
                    .route("/silence", web::post().to(silence))
                    .route("/inject", web::post().to(inject))
                    .route("/raw", web::post().to(raw))
                    .route("/order", web::post().to(order))
                    .route("/stall", web::post().to(stall)),
            )
    })
    .workers(1)
    // "drop" must look like a dropped connection: close TCP as soon as a session ends instead of
    // lingering for the client to close first.
    .client_disconnect_timeout(Duration::ZERO)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    info!(
        "simulator: Alpaca-protocol streams on ws://{addr} (control API on http://{addr}/control)"
    );
    Ok((
        server,
        SimulatorHandle {
            addr,
            exchange,
            broker,
        },
    ))
}

/// Why a control request is refused: the control API answers this machine's own tools only, so
/// a web page the operator happens to open cannot drive it (a foreign Host is DNS rebinding, an
/// `Origin` is a browser page, a body that is not JSON is a cross-site form or `text/plain` POST).
fn control_refusal(
    host: Option<&str>,
    origin: Option<&str>,
    content_type: Option<&str>,
    post: bool,
) -> Option<(u16, &'static str)> {
    let name = host.map(|h| match h.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => h.rsplit_once(':').map_or(h, |(name, _)| name),
    });
    let loopback = name.is_some_and(|n| {
        n.eq_ignore_ascii_case("localhost")
            || n.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if !loopback {
        return Some((403, "the control API answers only a loopback Host"));
    }
    if origin.is_some() {
        return Some((403, "the control API answers no browser page (Origin)"));
    }
    let json = content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if post && !json {
        return Some((415, "control commands are application/json"));
    }
    None
}

/// Applies [`control_refusal`] to every `/control` request.
async fn control_guard(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<
        actix_web::body::EitherBody<impl actix_web::body::MessageBody, actix_web::body::BoxBody>,
    >,
    actix_web::Error,
> {
    let headers = req.headers();
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let refusal = control_refusal(
        get(header::HOST),
        get(header::ORIGIN),
        get(header::CONTENT_TYPE),
        req.method() == actix_web::http::Method::POST,
    );
    match refusal {
        None => next
            .call(req)
            .await
            .map(actix_web::dev::ServiceResponse::map_into_left_body),
        Some((status, reason)) => {
            let status = actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::FORBIDDEN);
            let response = HttpResponse::build(status).json(serde_json::json!({"error": reason}));
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// JSON, or msgpack when the upgrade's `Content-Type` asks for it.
pub fn requested_encoding(req: &HttpRequest) -> Encoding {
    let msgpack = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("msgpack"));
    if msgpack {
        Encoding::Msgpack
    } else {
        Encoding::Json
    }
}

/// The stream Alpaca serves on `path`: stocks on `/v2/{iex|sip|delayed_sip|test}` and
/// `/v1beta1/{boats|overnight}`, crypto on `/v1beta3/crypto/{us|us-1|eu-1}`, options on
/// `/v1beta1/{indicative|opra}`, news on `/v1beta1/news`, the trading stream on `/stream`.
pub fn stream_at(path: &str) -> Option<SimFeed> {
    let path = path.trim_end_matches('/');
    if path == "/stream" {
        return Some(SimFeed::Trading);
    }
    if let Some(location) = path.strip_prefix("/v1beta3/crypto/") {
        return ["us", "us-1", "eu-1"]
            .contains(&location)
            .then_some(SimFeed::Crypto);
    }
    if let Some(feed) = path.strip_prefix("/v2/") {
        return ["iex", "sip", "delayed_sip", "test"]
            .contains(&feed)
            .then_some(SimFeed::Stocks);
    }
    match path.strip_prefix("/v1beta1/")? {
        "boats" | "overnight" => Some(SimFeed::Stocks),
        "indicative" | "opra" => Some(SimFeed::Options),
        "news" => Some(SimFeed::News),
        _ => None,
    }
}

/// A data stream's upgrade, on any of the paths [`stream_at`] knows.
async fn data_stream(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SimState>,
) -> actix_web::Result<HttpResponse> {
    let feed = stream_at(req.path()).filter(|f| *f != SimFeed::Trading);
    open_stream(req, feed, payload, state)
}

/// A refused upgrade, if a fault says so.
fn handshake_fault(state: &SimState, feed: SimFeed) -> Option<HttpResponse> {
    let status = state.faults.feed(feed).take_handshake_failure()?;
    info!(
        "simulator: refusing a {} upgrade with HTTP {status}",
        feed.as_str()
    );
    let code = actix_web::http::StatusCode::from_u16(status).ok()?;
    Some(HttpResponse::build(code).body(format!("simulated HTTP {status}\n")))
}

fn open_stream(
    req: HttpRequest,
    feed: Option<SimFeed>,
    payload: web::Payload,
    state: web::Data<SimState>,
) -> actix_web::Result<HttpResponse> {
    let Some(feed) = feed else {
        return Ok(HttpResponse::NotFound().body("unknown feed\n"));
    };
    if let Some(refused) = handshake_fault(&state, feed) {
        return Ok(refused);
    }
    let conn = SimConnection::new(
        state.next_id.fetch_add(1, Ordering::Relaxed),
        feed,
        req.path().to_owned(),
        requested_encoding(&req),
        state.exchange.clone(),
        state.faults.clone(),
        AUTH_TIMEOUT,
    );
    ws::WsResponseBuilder::new(conn, &req, payload)
        .frame_size(1 << 20)
        .start()
}

async fn trading_stream(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SimState>,
) -> actix_web::Result<HttpResponse> {
    if let Some(refused) = handshake_fault(&state, SimFeed::Trading) {
        return Ok(refused);
    }
    let conn = TradingConnection::new(
        state.next_id.fetch_add(1, Ordering::Relaxed),
        state.broker.clone(),
        state.faults.clone(),
    );
    ws::WsResponseBuilder::new(conn, &req, payload)
        .frame_size(1 << 20)
        .start()
}

/// Trading REST: checks the key headers and the REST fault, then reads the account.
async fn rest(req: HttpRequest, state: web::Data<SimState>, view: View) -> HttpResponse {
    let has = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.is_empty())
    };
    if !(has("APCA-API-KEY-ID") && has("APCA-API-SECRET-KEY")) {
        return HttpResponse::Unauthorized()
            .json(serde_json::json!({"code":40110000,"message":"request is not authorized"}));
    }
    if let Some(status) = state.faults.feed(SimFeed::Trading).take_rest_failure() {
        let code = actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = state
            .faults
            .feed(SimFeed::Trading)
            .rest_retry_after
            .load(Ordering::Relaxed)
            .max(1);
        return HttpResponse::build(code)
            .insert_header(("Retry-After", retry_after.to_string()))
            .json(serde_json::json!({"code": status, "message": "simulated failure"}));
    }
    reply(state.broker.send(Read(view)).await)
}

async fn rest_account(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    rest(req, state, View::Account).await
}

async fn rest_positions(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    rest(req, state, View::Positions).await
}

async fn rest_orders(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    rest(req, state, View::Orders).await
}

fn reply<T: serde::Serialize>(result: Result<T, MailboxError>) -> HttpResponse {
    match result {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

fn count(n: usize) -> serde_json::Value {
    serde_json::json!({"connections": n})
}

async fn connections(state: web::Data<SimState>) -> HttpResponse {
    reply(state.exchange.send(GetReport).await)
}

#[derive(Deserialize)]
struct SymbolQuery {
    symbol: String,
}

async fn history(state: web::Data<SimState>, q: web::Query<SymbolQuery>) -> HttpResponse {
    let symbol = q.into_inner().symbol.trim().to_ascii_uppercase();
    reply(state.exchange.send(GetHistory { symbol }).await)
}

/// Sends `command` to the data connections of `feed` and, for the trading stream, `trading`.
async fn broadcast(
    state: &SimState,
    feed: Option<SimFeed>,
    command: SimOutbound,
    trading: TradingOutbound,
) -> HttpResponse {
    let mut n = 0;
    if feed != Some(SimFeed::Trading) {
        match state.exchange.send(Broadcast { feed, command }).await {
            Ok(k) => n += k,
            Err(e) => return HttpResponse::ServiceUnavailable().body(e.to_string()),
        }
    }
    if feed.is_none() || feed == Some(SimFeed::Trading) {
        n += state
            .broker
            .send(BroadcastTrading(trading))
            .await
            .unwrap_or(0);
    }
    HttpResponse::Ok().json(count(n))
}

#[derive(Deserialize, Default)]
struct DropRequest {
    feed: Option<SimFeed>,
    mode: Option<String>,
}

async fn drop_connections(
    state: web::Data<SimState>,
    body: Option<web::Json<DropRequest>>,
) -> HttpResponse {
    let DropRequest { feed, mode } = body.map(web::Json::into_inner).unwrap_or_default();
    let cmd = match mode.as_deref() {
        Some("close") => SimOutbound::Close,
        _ => SimOutbound::Abort,
    };
    info!(
        "simulator: dropping connections ({})",
        feed.map_or("all", SimFeed::as_str)
    );
    broadcast(&state, feed, cmd, TradingOutbound::Abort).await
}

#[derive(Deserialize)]
struct ErrorRequest {
    feed: Option<SimFeed>,
    code: u16,
    msg: Option<String>,
    #[serde(default)]
    close: bool,
}

async fn send_error(state: web::Data<SimState>, body: web::Json<ErrorRequest>) -> HttpResponse {
    let ErrorRequest {
        feed,
        code,
        msg,
        close,
    } = body.into_inner();
    let msg = msg.unwrap_or_else(|| crate::upstream::protocol::error_name(code).to_owned());
    info!(
        "simulator: sending error {code} ({msg}) to {}",
        feed.map_or("all", SimFeed::as_str)
    );
    // The trading stream has no error frame: its connections are dropped instead.
    broadcast(
        &state,
        feed,
        SimOutbound::Error { code, msg, close },
        TradingOutbound::Abort,
    )
    .await
}

#[derive(Deserialize)]
struct CountedFault {
    feed: Option<SimFeed>,
    #[serde(alias = "status")]
    code: u16,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

fn ok() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"ok": true}))
}

async fn fail_auth(state: web::Data<SimState>, body: web::Json<CountedFault>) -> HttpResponse {
    let f = body.into_inner();
    for feed in Faults::targets(f.feed) {
        state.faults.feed(feed).fail_auth(f.code, f.count);
    }
    ok()
}

async fn fail_handshake(state: web::Data<SimState>, body: web::Json<CountedFault>) -> HttpResponse {
    let f = body.into_inner();
    for feed in Faults::targets(f.feed) {
        state.faults.feed(feed).fail_handshake(f.code, f.count);
    }
    ok()
}

#[derive(Deserialize)]
struct SwallowAcks {
    feed: Option<SimFeed>,
    #[serde(default = "one")]
    count: u32,
}

async fn swallow_acks(state: web::Data<SimState>, body: web::Json<SwallowAcks>) -> HttpResponse {
    let f = body.into_inner();
    for feed in Faults::targets(f.feed) {
        state
            .faults
            .feed(feed)
            .swallow_acks
            .store(f.count as usize, Ordering::Relaxed);
    }
    ok()
}

#[derive(Deserialize)]
struct RestFault {
    #[serde(alias = "status")]
    code: u16,
    #[serde(default = "one")]
    count: u32,
    /// Seconds in the `Retry-After` header.
    #[serde(default = "one_u64")]
    retry_after: u64,
}

fn one_u64() -> u64 {
    1
}

async fn fail_rest(state: web::Data<SimState>, body: web::Json<RestFault>) -> HttpResponse {
    let f = body.into_inner();
    let faults = state.faults.feed(SimFeed::Trading);
    faults
        .rest_retry_after
        .store(f.retry_after, Ordering::Relaxed);
    faults.fail_rest(f.code, f.count);
    ok()
}

#[derive(Deserialize)]
struct RejectRequest {
    feed: Option<SimFeed>,
    symbols: Vec<String>,
}

async fn reject_symbols(
    state: web::Data<SimState>,
    body: web::Json<RejectRequest>,
) -> HttpResponse {
    let r = body.into_inner();
    for feed in Faults::targets(r.feed) {
        state
            .faults
            .feed(feed)
            .set_rejected_symbols(r.symbols.iter().cloned());
    }
    ok()
}

#[derive(Deserialize)]
struct LimitRequest {
    feed: Option<SimFeed>,
    limit: usize,
}

async fn symbol_limit(state: web::Data<SimState>, body: web::Json<LimitRequest>) -> HttpResponse {
    let r = body.into_inner();
    for feed in Faults::targets(r.feed) {
        state
            .faults
            .feed(feed)
            .symbol_limit
            .store(r.limit, Ordering::Relaxed);
    }
    ok()
}

#[derive(Deserialize)]
struct SilenceRequest {
    feed: Option<SimFeed>,
    #[serde(default)]
    silent: bool,
    #[serde(default)]
    frozen: bool,
    #[serde(default)]
    paused: bool,
}

async fn silence(state: web::Data<SimState>, body: web::Json<SilenceRequest>) -> HttpResponse {
    let SilenceRequest {
        feed,
        silent,
        frozen,
        paused,
    } = body.into_inner();
    info!(
        "simulator: {}: silent={silent} frozen={frozen} paused={paused}",
        feed.map_or("all", SimFeed::as_str)
    );
    for f in Faults::targets(feed) {
        state.faults.feed(f).silent.store(silent, Ordering::Relaxed);
        state.faults.feed(f).frozen.store(frozen, Ordering::Relaxed);
        state.faults.feed(f).paused.store(paused, Ordering::Relaxed);
    }
    ok()
}

#[derive(Deserialize)]
struct StallRequest {
    ms: u64,
}

/// Blocks the exchange's thread — in the embedded simulator, the daemon's main thread — for
/// `ms` (at most a minute), as a runtime stalled by swapping would be.
async fn stall(state: web::Data<SimState>, body: web::Json<StallRequest>) -> HttpResponse {
    let ms = body.ms.min(60_000);
    info!("simulator: stalling the exchange's thread for {ms} ms");
    state.exchange.do_send(Stall(Duration::from_millis(ms)));
    ok()
}

async fn inject(state: web::Data<SimState>, body: web::Json<Inject>) -> HttpResponse {
    reply(state.exchange.send(body.into_inner()).await.map(count))
}

#[derive(Deserialize)]
struct RawRequest {
    feed: Option<SimFeed>,
    text: String,
}

async fn raw(state: web::Data<SimState>, body: web::Json<RawRequest>) -> HttpResponse {
    let RawRequest { feed, text } = body.into_inner();
    let cmd = SimOutbound::Frame(Encoded::Text(text.clone().into()));
    broadcast(&state, feed, cmd, TradingOutbound::Event(text.into())).await
}

async fn order(state: web::Data<SimState>, body: web::Json<PlaceOrder>) -> HttpResponse {
    reply(state.broker.send(body.into_inner()).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_api_answers_only_local_tools() {
        let json = Some("application/json");
        assert_eq!(
            control_refusal(Some("127.0.0.1:8765"), None, json, true),
            None
        );
        assert_eq!(control_refusal(Some("localhost:1"), None, json, true), None);
        assert_eq!(control_refusal(Some("[::1]:8765"), None, None, false), None);
        for (host, origin, content_type) in [
            (Some("evil.example:8765"), None, json),
            (None, None, json),
            (Some("127.0.0.1:8765"), Some("https://evil.example"), json),
            (Some("127.0.0.1:8765"), None, Some("text/plain")),
            (Some("127.0.0.1:8765"), None, None),
        ] {
            assert!(
                control_refusal(host, origin, content_type, true).is_some(),
                "{host:?} {origin:?} {content_type:?}"
            );
        }
    }
}
