//! Trading accounts, answered from memory: `/api/v1/accounts…` and `/api/v1/websocket/status`.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{ApiError, AppState};
use crate::accounts::AccountState;

/// `GET /api/v1/accounts`.
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let accounts: Vec<_> = state
        .accounts
        .all()
        .into_iter()
        .map(|a| {
            let field = |k: &str| a.account.as_ref().and_then(|v| v.get(k)).cloned();
            json!({
                "id": a.id,
                "paper": a.paper,
                "connected": a.connected,
                "has_data": a.has_data,
                "reconnect_attempts": a.reconnect_attempts,
                "last_error": a.last_error,
                "status": field("status"),
                "equity": field("equity"),
                "cash": field("cash"),
                "buying_power": field("buying_power"),
                "positions": a.positions.len(),
                "open_orders": a.orders.len(),
                "refreshed_at": a.refreshed_at,
                "last_event_at": a.last_event_at,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"count": accounts.len(), "accounts": accounts}))
}

/// The account's state once loaded; otherwise the response that says why not.
fn loaded(state: &AppState, id: &str) -> Result<AccountState, Box<HttpResponse>> {
    let Some(account) = state.accounts.get(id) else {
        let known: Vec<String> = state.accounts.all().into_iter().map(|a| a.id).collect();
        return Err(Box::new(HttpResponse::NotFound().json(ApiError {
            error: "unknown_account",
            message: format!("no account {id:?}; configured: {}", known.join(", ")),
        })));
    };
    if !account.has_data {
        let why = account
            .last_error
            .as_deref()
            .unwrap_or("waiting for the first load");
        return Err(Box::new(HttpResponse::ServiceUnavailable().json(
            ApiError {
                error: "not_loaded",
                message: format!("account {id} has not been loaded yet ({why})"),
            },
        )));
    }
    Ok(account)
}

/// `GET /api/v1/accounts/{id}/{dashboard|account|positions|orders}`.
pub async fn view(state: web::Data<AppState>, path: web::Path<(String, String)>) -> HttpResponse {
    let (id, view) = path.into_inner();
    account_view(&state, &id, &view)
}

/// `GET /api/v1/realtime/{view}/{id}`: the trading service's name for the same views, which its
/// front ends and scripts call.
pub async fn realtime_view(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (view, id) = path.into_inner();
    account_view(&state, &id, &view)
}

fn account_view(state: &AppState, id: &str, view: &str) -> HttpResponse {
    let account = match loaded(state, id) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    match view {
        "dashboard" => HttpResponse::Ok().json(account.dashboard()),
        "account" => HttpResponse::Ok().json(&account.account),
        "positions" => HttpResponse::Ok().json(account.positions.values().collect::<Vec<_>>()),
        "orders" => HttpResponse::Ok().json(account.orders.values().collect::<Vec<_>>()),
        other => HttpResponse::NotFound().json(ApiError {
            error: "not_found",
            message: format!("no view {other:?}; use dashboard, account, positions or orders"),
        }),
    }
}

/// `GET /api/v1/websocket/status`: the trading streams.
pub async fn websocket_status(state: web::Data<AppState>) -> HttpResponse {
    let all = state.accounts.all();
    let accounts: BTreeMap<String, serde_json::Value> = all
        .iter()
        .map(|a| {
            (
                a.id.clone(),
                json!({
                    "connected": a.connected,
                    "reconnect_attempts": a.reconnect_attempts,
                    "last_error": a.last_error,
                    "has_data": a.has_data,
                }),
            )
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "total_accounts": all.len(),
        "connected_accounts": all.iter().filter(|a| a.connected).count(),
        "accounts": accounts,
    }))
}
