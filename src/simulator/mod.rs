//! The built-in Alpaca-protocol market simulator.
//!
//! Speaks Alpaca's stock data-stream protocol (JSON) on `/v2/{iex|sip|delayed_sip|test}` and
//! `/v1beta1/{boats|overnight}`: random-walk quotes, trades and minute bars for any validly formed
//! symbol it is asked for (deterministic per symbol), with Alpaca's auth, acks and error codes.
//! The committed `settings.toml` runs it in-process on a loopback port; `tickrelay simulate --port N`
//! runs it alone.
//!
//! - [`market`] — the per-symbol random walk.
//! - [`exchange`] — the market actor: walks, connections, faults.
//! - [`connection`] — one client connection (the server side of the protocol).
//!
//! Fault commands (`/control/…`, JSON; the tests use them, and they make demos of every recovery
//! path easy):
//!
//! | request | effect |
//! |---|---|
//! | `POST /control/drop` `{"mode":"abort"\|"close"}` | drop every connection (no close frame) or close it |
//! | `POST /control/error` `{"code":406,"close":true}` | send `[{"T":"error",…}]` to every connection |
//! | `POST /control/fail_auth` `{"code":402,"count":1}` | refuse the next `count` authentications |
//! | `POST /control/silence` `{"silent":true,"frozen":false}` | stop data (`silent`), or data and pongs (`frozen`) |
//! | `POST /control/inject` `{"quotes":[{"symbol":"AAPL","bp":1,"ap":2}],"trades":[…]}` | send these now, one frame per connection |
//! | `POST /control/raw` `{"text":"…"}` | send a raw text frame (garbage tests) |
//! | `GET /control/connections` | connections and their subscriptions |
//! | `GET /control/history?symbol=AAPL` | recent quotes sent for a symbol |

pub mod connection;
pub mod exchange;
pub mod market;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use log::info;
use serde::Deserialize;

use self::connection::SimConnection;
use self::exchange::{
    Broadcast, Exchange, ExchangeConfig, FailAuth, Faults, GetHistory, GetReport, Inject,
    SimOutbound,
};
use crate::settings::SimulatorSettings;

/// Alpaca's documented auth window.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Stock feed names the simulator serves.
const STOCK_FEEDS_V2: &[&str] = &["iex", "sip", "delayed_sip", "test"];
const STOCK_FEEDS_V1BETA1: &[&str] = &["boats", "overnight"];

/// A running simulator.
#[derive(Clone)]
pub struct SimulatorHandle {
    /// Where it listens (use `ws://{addr}` as the Alpaca data URL).
    pub addr: SocketAddr,
    pub exchange: Addr<Exchange>,
}

impl SimulatorHandle {
    /// The base URL of its data streams.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

struct SimState {
    exchange: Addr<Exchange>,
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
    let config = ExchangeConfig {
        symbols: settings
            .symbols
            .iter()
            .map(|s| s.trim().to_ascii_uppercase())
            .collect(),
        tick: Duration::from_millis(settings.tick_ms),
        quotes_per_tick: settings.quotes_per_tick,
        trade_probability: settings.trade_probability,
        bar_interval: Duration::from_millis(settings.bar_interval_ms),
        generate: settings.generate,
        seed: settings.seed,
    };
    let exchange = Exchange::new(config, faults.clone()).start();
    let addr = listener.local_addr()?;
    let state = web::Data::new(SimState {
        exchange: exchange.clone(),
        faults,
        next_id: AtomicU64::new(1),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/v2/{feed}", web::get().to(stream_v2))
            .route("/v1beta1/{feed}", web::get().to(stream_v1beta1))
            .service(
                web::scope("/control")
                    .route("/connections", web::get().to(connections))
                    .route("/history", web::get().to(history))
                    .route("/drop", web::post().to(drop_connections))
                    .route("/error", web::post().to(send_error))
                    .route("/fail_auth", web::post().to(fail_auth))
                    .route("/silence", web::post().to(silence))
                    .route("/inject", web::post().to(inject))
                    .route("/raw", web::post().to(raw)),
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
    Ok((server, SimulatorHandle { addr, exchange }))
}

async fn stream_v2(
    req: HttpRequest,
    feed: web::Path<String>,
    payload: web::Payload,
    state: web::Data<SimState>,
) -> actix_web::Result<HttpResponse> {
    open_stream(req, STOCK_FEEDS_V2.contains(&feed.as_str()), payload, state)
}

async fn stream_v1beta1(
    req: HttpRequest,
    feed: web::Path<String>,
    payload: web::Payload,
    state: web::Data<SimState>,
) -> actix_web::Result<HttpResponse> {
    open_stream(
        req,
        STOCK_FEEDS_V1BETA1.contains(&feed.as_str()),
        payload,
        state,
    )
}

fn open_stream(
    req: HttpRequest,
    known: bool,
    payload: web::Payload,
    state: web::Data<SimState>,
) -> actix_web::Result<HttpResponse> {
    if !known {
        return Ok(HttpResponse::NotFound().body("unknown feed\n"));
    }
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let conn = SimConnection::new(
        id,
        req.path().to_owned(),
        state.exchange.clone(),
        state.faults.clone(),
        AUTH_TIMEOUT,
    );
    ws::WsResponseBuilder::new(conn, &req, payload)
        .frame_size(1 << 20)
        .start()
}

fn reply<T: serde::Serialize>(result: Result<T, MailboxError>) -> HttpResponse {
    match result {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
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

#[derive(Deserialize, Default)]
struct DropRequest {
    #[serde(default)]
    mode: Option<String>,
}

async fn drop_connections(
    state: web::Data<SimState>,
    body: Option<web::Json<DropRequest>>,
) -> HttpResponse {
    let mode = body.map(|b| b.into_inner()).unwrap_or_default().mode;
    let cmd = match mode.as_deref() {
        Some("close") => SimOutbound::Close,
        _ => SimOutbound::Abort,
    };
    info!("simulator: dropping every connection");
    reply(
        state
            .exchange
            .send(Broadcast(cmd))
            .await
            .map(|n| serde_json::json!({"connections": n})),
    )
}

#[derive(Deserialize)]
struct ErrorRequest {
    code: u16,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    close: bool,
}

async fn send_error(state: web::Data<SimState>, body: web::Json<ErrorRequest>) -> HttpResponse {
    let ErrorRequest { code, msg, close } = body.into_inner();
    let msg = msg.unwrap_or_else(|| crate::upstream::protocol::error_name(code).to_owned());
    info!("simulator: sending error {code} ({msg}) to every connection");
    let cmd = SimOutbound::Error { code, msg, close };
    reply(
        state
            .exchange
            .send(Broadcast(cmd))
            .await
            .map(|n| serde_json::json!({"connections": n})),
    )
}

#[derive(Deserialize)]
struct FailAuthRequest {
    code: u16,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn fail_auth(state: web::Data<SimState>, body: web::Json<FailAuthRequest>) -> HttpResponse {
    let FailAuthRequest { code, count } = body.into_inner();
    reply(
        state
            .exchange
            .send(FailAuth { code, count })
            .await
            .map(|()| serde_json::json!({"ok": true})),
    )
}

#[derive(Deserialize)]
struct SilenceRequest {
    #[serde(default)]
    silent: bool,
    #[serde(default)]
    frozen: bool,
}

async fn silence(state: web::Data<SimState>, body: web::Json<SilenceRequest>) -> HttpResponse {
    let SilenceRequest { silent, frozen } = body.into_inner();
    info!("simulator: silent={silent} frozen={frozen}");
    state.faults.silent.store(silent, Ordering::Relaxed);
    state.faults.frozen.store(frozen, Ordering::Relaxed);
    HttpResponse::Ok().json(serde_json::json!({"silent": silent, "frozen": frozen}))
}

async fn inject(state: web::Data<SimState>, body: web::Json<Inject>) -> HttpResponse {
    reply(
        state
            .exchange
            .send(body.into_inner())
            .await
            .map(|n| serde_json::json!({"connections": n})),
    )
}

#[derive(Deserialize)]
struct RawRequest {
    text: String,
}

async fn raw(state: web::Data<SimState>, body: web::Json<RawRequest>) -> HttpResponse {
    let cmd = SimOutbound::Frame(body.into_inner().text.into());
    reply(
        state
            .exchange
            .send(Broadcast(cmd))
            .await
            .map(|n| serde_json::json!({"connections": n})),
    )
}
