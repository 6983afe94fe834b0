//! Trading accounts, answered from memory: `/api/v1/accounts…` and `/api/v1/websocket/status`.
//!
//! An account's views need its `account:<id>` scope; the lists show only the accounts the caller
//! may see.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::auth::refusal;
use super::{ApiError, AppState};
use crate::accounts::AccountState;
use crate::auth::Principal;

/// `GET /api/v1/accounts`.
pub async fn list(state: web::Data<AppState>, who: Principal) -> HttpResponse {
    let accounts: Vec<_> = state
        .accounts
        .all()
        .into_iter()
        .filter(|a| who.scopes.account(&a.id))
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

/// The account's state once loaded; otherwise the response that says why not. Whether an
/// account exists is only told to callers who may see it.
fn loaded(state: &AppState, who: &Principal, id: &str) -> Result<AccountState, Box<HttpResponse>> {
    if let Some(refused) = refusal(who, who.scopes.account(id), &format!("account:{id}")) {
        return Err(Box::new(refused));
    }
    let Some(account) = state.accounts.get(id) else {
        let known: Vec<String> = state
            .accounts
            .all()
            .into_iter()
            .map(|a| a.id)
            .filter(|a| who.scopes.account(a))
            .collect();
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
pub async fn view(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (id, view) = path.into_inner();
    account_view(&state, &who, &id, &view)
}

/// `GET /api/v1/realtime/{view}/{id}`: the trading service's name for the same views, which its
/// front ends and scripts call.
pub async fn realtime_view(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (view, id) = path.into_inner();
    account_view(&state, &who, &id, &view)
}

fn account_view(state: &AppState, who: &Principal, id: &str, view: &str) -> HttpResponse {
    let account = match loaded(state, who, id) {
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
pub async fn websocket_status(state: web::Data<AppState>, who: Principal) -> HttpResponse {
    let mut all = state.accounts.all();
    all.retain(|a| who.scopes.account(&a.id));
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
