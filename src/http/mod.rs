//! HTTP: REST, health probes, the `/ws` upgrade and the dashboard, on one actix-web listener.
//!
//! - [`health`] — `/healthz`, `/readyz`, `/api/v1/health`, `/api/v1/status`.
//! - [`quotes`] — `/api/v1/quotes/{symbol}`, `/api/v1/quotes?symbols=`.
//! - [`subscriptions`] — server-side pins (`POST`/`DELETE /api/v1/subscriptions`).
//! - [`ws`] — `GET /ws`, the browser protocol.
//! - [`dashboard`] — `GET /`, the page a trader keeps open.
//! - [`accounts`] — trading accounts and their streams, from memory.
//! - [`auth`] — who a request comes from (`Authorization: Bearer`) and the scope checks.
//! - [`metrics`] — `GET /metrics` (Prometheus), for the `admin` scope.
//! - [`replay`] — `POST /api/v1/replay`: play or pause a replay (`admin`).
//! - [`limits`] — how many WebSockets may be open, in total and per IP address.
//! - [`guard`] — which Hosts, Origins and content types are allowed (DNS rebinding, cross-site
//!   requests), for REST (a middleware) and WebSocket upgrades.
//!
//! Handlers read the quote cache directly and ask the registry for everything else.

pub mod accounts;
pub mod auth;
pub mod dashboard;
pub mod guard;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod quotes;
pub mod replay;
pub mod subscriptions;
pub mod ws;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::accounts::AccountStore;
use crate::browser::session::SessionConfig;
use crate::quote_book::QuoteBook;
use crate::registry::Registry;
use crate::sdk::SdkContext;
use crate::time::Timestamp;

/// Shared by every handler.
pub struct AppState {
    pub registry: Addr<Registry>,
    pub book: QuoteBook,
    pub accounts: AccountStore,
    pub sessions: Arc<SessionConfig>,
    /// Clients and scopes: who may do what.
    pub auth: Arc<crate::auth::Auth>,
    /// The Redis price sink, when configured.
    pub sink: Option<Arc<crate::scaleout::sink::PriceSink>>,
    /// A primary's lease, when several primaries share Redis.
    pub lease: Option<Arc<crate::scaleout::lease::Lease>>,
    /// A primary's relay to the edges, when Redis is configured.
    pub relay: Option<Arc<crate::scaleout::relay::RelayShared>>,
    /// The recorder, when `[recorder]` is enabled.
    pub recorder: Option<Arc<crate::recorder::Recorder>>,
    /// The replay's control, when the provider is `replay`.
    pub replay: Option<Arc<crate::replay::ReplayControl>>,
    /// Filled by the hubs; read by `/metrics`.
    pub latency: Arc<crate::downstream::delivery::LatencyHistogram>,
    pub provider: &'static str,
    pub stale_after: Duration,
    pub dashboard_symbols: Vec<String>,
    pub started: Instant,
    pub started_at: Timestamp,
    pub next_session: AtomicU64,
    /// The Alpaca-compatible endpoint: clients, taps, routes.
    pub sdk: Arc<SdkContext>,
    /// Which Hosts and Origins may use the daemon.
    pub guard: guard::RequestGuard,
    /// The registry's heartbeat (liveness).
    pub heartbeat: crate::registry::Heartbeat,
    /// How many WebSockets may be open, in total and per IP address.
    pub connections: Arc<limits::ConnectionLimits>,
}

/// The headers every response carries: the dashboard runs no inline code and loads nothing from
/// elsewhere, no page may frame the daemon's, and no response is sniffed as another type.
pub fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "no-referrer"))
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(dashboard::page))
        .route("/dashboard.js", web::get().to(dashboard::script))
        .route("/dashboard.css", web::get().to(dashboard::style))
        .route("/healthz", web::get().to(health::liveness))
        .route("/readyz", web::get().to(health::readiness))
        .route(ws::PATH, web::get().to(ws::not_upgraded))
        .route("/api/v1/health", web::get().to(health::health))
        .route("/health", web::get().to(health::health))
        .route("/api/v1/status", web::get().to(health::status))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/api/v1/quotes", web::get().to(quotes::many))
        .route("/api/v1/quotes/{symbol:.+}", web::get().to(quotes::one))
        .route("/api/v1/subscriptions", web::post().to(subscriptions::pin))
        .route("/api/v1/replay", web::post().to(replay::command))
        .route(
            "/api/v1/subscriptions",
            web::delete().to(subscriptions::unpin),
        )
        .route(
            "/api/positions/subscribe-spot-prices",
            web::post().to(subscriptions::pin),
        )
        .route("/api/v1/accounts", web::get().to(accounts::list))
        .route(
            "/api/v1/accounts/{id}/{view}",
            web::get().to(accounts::view),
        )
        .route(
            "/api/v1/websocket/status",
            web::get().to(accounts::websocket_status),
        )
        // The names the trading service this replaces used.
        .route(
            "/api/v1/realtime/status",
            web::get().to(accounts::websocket_status),
        )
        .route(
            "/api/v1/realtime/{view}/{id}",
            web::get().to(accounts::realtime_view),
        )
        .default_service(web::to(not_found));
}

/// A JSON error body: `{"error": code, "message": text}`.
#[derive(Serialize)]
pub struct ApiError<'a> {
    pub error: &'a str,
    pub message: String,
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(ApiError {
        error: "not_found",
        message: format!("no route for {} {}", req.method(), req.path()),
    })
}
