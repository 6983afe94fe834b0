//! `GET /metrics`: the Prometheus exposition, for the `admin` scope.
//!
//! Reads the registry's status (one message round trip, no session list) and the shared
//! counters, and hands them to [`metrics::Snapshot`](crate::metrics::Snapshot), which writes the
//! text format. Metrics need `admin`: they describe the whole daemon (clients, accounts' streams).
//! Prometheus sends the client's key pair with `authorization: {credentials: <key_id>:<secret>}`.

use actix_web::{web, HttpResponse};

use super::auth::refusal;
use super::health::registry_status;
use super::AppState;
use crate::auth::Principal;
use crate::metrics::{ProcessSample, Snapshot};

/// The OpenMetrics text format, which Prometheus reads.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(state: web::Data<AppState>, who: Principal) -> HttpResponse {
    if let Some(refused) = refusal(&who, who.scopes.admin(), "admin") {
        return refused;
    }
    let status = match registry_status(&state).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let started_unix = state.started_at.unix_nanos() as f64 / 1e9;
    let snapshot = Snapshot {
        registry: &status,
        latency: &state.latency,
        sdk_batches_dropped: state.sdk.taps.dropped(),
        sink: state.sink.as_ref().map(|s| s.status()),
        relay: state.relay.as_ref().map(|r| r.status()),
        lease: state.lease.as_ref().map(|l| l.status()),
        replay: state.replay.as_ref().map(|r| r.status()),
        process: ProcessSample::read(started_unix),
    };
    match snapshot.encode() {
        Ok(text) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(text),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}
