//! Liveness, readiness, health and status.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::registry::{FeedReport, GetStatus, PinOwner, RegistryStatus, SymbolReport};
use crate::time::Timestamp;
use crate::upstream::FeedState;

/// How long a probe waits for the actor system before it calls the daemon unhealthy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn registry_status(state: &AppState) -> Result<RegistryStatus, HttpResponse> {
    registry_status_page(state, GetStatus::default()).await
}

async fn registry_status_page(
    state: &AppState,
    page: GetStatus,
) -> Result<RegistryStatus, HttpResponse> {
    match tokio::time::timeout(PROBE_TIMEOUT, state.registry.send(page)).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(unavailable(format!("the registry actor is gone: {e}"))),
        Err(_) => Err(unavailable(format!(
            "the registry did not answer within {PROBE_TIMEOUT:?}"
        ))),
    }
}

fn unavailable(message: String) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(ApiError {
        error: "unavailable",
        message,
    })
}

/// A registry that has not run its timers for this long is wedged.
const HEARTBEAT_STALE: Duration = Duration::from_secs(5);

/// `GET /healthz`: the actor system runs — read from the registry's heartbeat, with no message
/// to it, so a busy registry (a large status, a burst of subscriptions) does not fail the probe
/// and get a healthy daemon restarted, while a wedged one does.
pub async fn liveness(state: web::Data<AppState>) -> HttpResponse {
    match state.heartbeat.age() {
        Some(age) if age <= HEARTBEAT_STALE => HttpResponse::Ok().json(serde_json::json!({
            "status": "ok",
            "heartbeat_age_ms": age.as_millis() as u64,
        })),
        Some(age) => unavailable(format!(
            "the registry has not run for {:.1} s",
            age.as_secs_f64()
        )),
        None => unavailable("the registry has not started".into()),
    }
}

/// `GET /readyz`: every enabled feed is authenticated and subscribed.
pub async fn readiness(state: web::Data<AppState>) -> HttpResponse {
    let status = match registry_status(&state).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let feeds: BTreeMap<String, &str> = status
        .feeds
        .iter()
        .map(|f| (f.status.feed.name(), f.status.state.browser_status()))
        .collect();
    // Redis is a detail, not a condition: the daemon serves its own clients without it.
    let redis = state.sink.as_ref().map(|s| s.status().state);
    // A standby primary is not ready (its feeds wait for the lease): a load balancer sends
    // browsers to the leader or to edges.
    let lease = state.lease.as_ref().map(|l| l.status().role);
    if status.ready() {
        HttpResponse::Ok().json(
            serde_json::json!({"ready": true, "feeds": feeds, "redis": redis, "lease": lease}),
        )
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "ready": false,
            "feeds": feeds,
            "redis": redis,
            "lease": lease,
            "reasons": status.not_ready_reasons(),
        }))
    }
}

#[derive(Serialize)]
struct FeedHealth<'a> {
    state: FeedState,
    connected: bool,
    reconnect_attempts: u32,
    last_error: Option<&'a str>,
    last_message_time: Option<Timestamp>,
    messages_received: u64,
}

/// `GET /api/v1/health`.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let status = match registry_status(&state).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let ready = status.ready();
    let feeds: BTreeMap<String, FeedHealth> = status
        .feeds
        .iter()
        .map(|f| {
            (
                f.status.feed.name(),
                FeedHealth {
                    state: f.status.state,
                    connected: f.status.state == FeedState::Connected,
                    reconnect_attempts: f.status.reconnect_attempts,
                    last_error: f.status.last_error.as_deref(),
                    last_message_time: f.counters.last_message_time,
                    messages_received: f.counters.messages_received,
                },
            )
        })
        .collect();
    let body = serde_json::json!({
        "status": if ready { "healthy" } else { "degraded" },
        "provider": state.provider,
        "websocket_connected": ready,
        // A count, as the service this replaces reports it; the list is in /api/v1/status.
        "subscribed_symbols": status.symbols.len(),
        "reconnect_attempts": status.feeds.iter().map(|f| f.status.reconnect_attempts).sum::<u32>(),
        "last_message_time": status.feeds.iter().filter_map(|f| f.counters.last_message_time).max(),
        "sessions": status.session_summary.count,
        "feeds": feeds,
        "timestamp": Timestamp::now(),
    });
    HttpResponse::Ok().json(body)
}

#[derive(Serialize)]
struct FeedStatusView<'a> {
    #[serde(flatten)]
    report: &'a FeedReport,
    last_message_age_ms: Option<u64>,
}

/// Which sessions `/api/v1/status` lists in full: `?sessions=N&offset=M` (ordered by id).
#[derive(serde::Deserialize)]
pub struct SessionPage {
    #[serde(default = "default_page")]
    sessions: usize,
    #[serde(default)]
    offset: usize,
}

fn default_page() -> usize {
    DEFAULT_SESSION_PAGE
}

/// Sessions listed by default, and at most.
const DEFAULT_SESSION_PAGE: usize = 100;
const MAX_SESSION_PAGE: usize = 1000;

/// `GET /api/v1/status`: everything an operator wants to see, no secrets. Sessions are summed up,
/// and, for the `admin` scope, a page of them is listed in full. Without `admin` a caller gets
/// what a health probe needs — feeds (without their URLs) and counts — and of the symbols only
/// those pinned by an account its scopes may see: which symbols are followed, by whom, and who
/// pins what is for operators.
pub async fn status(
    state: web::Data<AppState>,
    who: Principal,
    page: web::Query<SessionPage>,
) -> HttpResponse {
    let page = page.into_inner();
    // Who is connected from where is for operators: the list needs `admin`.
    let limit = if who.scopes.admin() {
        page.sessions.min(MAX_SESSION_PAGE)
    } else {
        0
    };
    let request = GetStatus {
        offset: page.offset,
        limit,
    };
    let status = match registry_status_page(&state, request).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let now = Timestamp::now();
    let feeds: BTreeMap<String, FeedStatusView> = status
        .feeds
        .iter()
        .map(|f| {
            let age = f
                .counters
                .last_message_time
                .map(|t| t.age_at(now).as_millis() as u64);
            (
                f.status.feed.name(),
                FeedStatusView {
                    report: f,
                    last_message_age_ms: age,
                },
            )
        })
        .collect();
    let summary = &status.session_summary;
    let admin = who.scopes.admin();
    let symbols = visible_symbols(&status.symbols, &who);
    let pinned: Vec<&serde_json::Value> = if admin {
        Vec::new()
    } else {
        symbols.iter().map(|s| &s["symbol"]).collect()
    };
    let mut body = serde_json::json!({
        "server": "tickrelay",
        "version": env!("CARGO_PKG_VERSION"),
        "provider": state.provider,
        "ready": status.ready(),
        "started_at": state.started_at,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "throttle_ms": state.sessions.throttle_ms,
        "feeds": feeds,
        "sessions": {
            "count": summary.count,
            "dropped_updates": summary.dropped_updates,
            "behind": summary.behind,
            "hub_mailbox_drops": status.hub_mailbox_drops,
            "sdk_programs": summary.sdk_programs,
            "sdk_batches_dropped": state.sdk.taps.dropped(),
            "offset": page.offset,
            "listed": status.sessions.len(),
            "list": status.sessions,
            "list_needs": if who.scopes.admin() { None } else { Some("admin") },
        },
        "symbols": if admin { serde_json::json!(status.symbols) } else { serde_json::json!(symbols) },
        "symbols_count": status.symbols.len(),
        "throttles": status.throttles,
        "pinned": if admin { serde_json::json!(status.pinned) } else { serde_json::json!(pinned) },
        "news_subscriptions": if admin { serde_json::json!(status.news) } else { serde_json::Value::Null },
        "positions_subscribers": status.positions_subscribers,
        "cached_quotes": status.cached_quotes,
        "redis": state.sink.as_ref().map(|s| s.status()),
        "lease": state.lease.as_ref().map(|l| l.status()),
        "relay": state.relay.as_ref().map(|r| r.status()),
        "recorder": state.recorder.as_ref().map(|r| r.status()),
        "replay": state.replay.as_ref().map(|r| r.status()),
        "timestamp": now,
        "details_need": if admin { None } else { Some("admin") },
    });
    if !admin {
        for part in ["feeds", "redis", "lease", "relay"] {
            strip_urls(&mut body[part]);
        }
    }
    HttpResponse::Ok().json(body)
}

/// The symbols a caller without `admin` may see: those pinned by an account its scopes allow,
/// with those accounts alone as owners.
fn visible_symbols(symbols: &[SymbolReport], who: &Principal) -> Vec<serde_json::Value> {
    symbols
        .iter()
        .filter_map(|s| {
            let owners: Vec<String> = s
                .pinned_by
                .iter()
                .filter(|o| matches!(o, PinOwner::Account(a) if who.scopes.account(a)))
                .map(ToString::to_string)
                .collect();
            (!owners.is_empty()).then(|| {
                serde_json::json!({"symbol": s.symbol, "feed": s.feed, "pinned": true, "pinned_by": owners})
            })
        })
        .collect()
}

/// Removes every `url` field (upstream and Redis addresses are for operators).
fn strip_urls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("url");
            map.values_mut().for_each(strip_urls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_urls),
        _ => {}
    }
}
