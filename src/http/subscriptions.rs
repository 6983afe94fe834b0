//! Server-side pins: keep symbols streaming with no browser attached.
//!
//! `POST /api/v1/subscriptions` (and the existing front end's `POST
//! /api/positions/subscribe-spot-prices`) pin symbols; `DELETE /api/v1/subscriptions` releases them.
//! Body `{"symbols":[…]}`; reply `{"status":"success"|"error","message","symbols",…}`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::AppState;
use crate::browser::Rejection;
use crate::registry::{Pin, PinOwner, Unpin};
use crate::symbol::Symbol;

/// Most symbols in one request.
const MAX_SYMBOLS: usize = 1000;

#[derive(Deserialize)]
struct Body {
    symbols: Vec<String>,
}

fn error(status: actix_web::http::StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "status": "error",
        "message": message,
        "symbols": [],
    }))
}

/// Parses the body into valid symbols and rejections, or says what is wrong with it.
fn parse(body: &[u8]) -> Result<(Vec<Symbol>, Vec<Rejection>), String> {
    let parsed: Body = serde_json::from_slice(body)
        .map_err(|e| format!("expected a JSON body like {{\"symbols\":[\"AAPL\"]}}: {e}"))?;
    if parsed.symbols.is_empty() {
        return Err("\"symbols\" is empty".into());
    }
    if parsed.symbols.len() > MAX_SYMBOLS {
        return Err(format!("at most {MAX_SYMBOLS} symbols per request"));
    }
    let mut symbols = Vec::new();
    let mut rejected = Vec::new();
    for raw in &parsed.symbols {
        match Symbol::parse(raw) {
            Ok(s) if !symbols.contains(&s) => symbols.push(s),
            Ok(_) => {}
            Err(e) => rejected.push(Rejection::invalid(raw, &e)),
        }
    }
    Ok((symbols, rejected))
}

fn unavailable(e: actix::MailboxError) -> HttpResponse {
    error(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        format!("the registry is unavailable: {e}"),
    )
}

/// `POST /api/v1/subscriptions`.
pub async fn pin(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let (symbols, mut rejected) = match parse(&body) {
        Ok(v) => v,
        Err(message) => return error(actix_web::http::StatusCode::BAD_REQUEST, message),
    };
    let outcome = if symbols.is_empty() {
        Default::default()
    } else {
        match state
            .registry
            .send(Pin {
                symbols,
                owner: PinOwner::Rest,
            })
            .await
        {
            Ok(o) => o,
            Err(e) => return unavailable(e),
        }
    };
    rejected.extend(outcome.rejected);
    let ok = !outcome.accepted.is_empty();
    let message = if ok {
        format!("subscribed to {} symbols", outcome.accepted.len())
    } else {
        "no symbol could be subscribed".to_owned()
    };
    let body = serde_json::json!({
        "status": if ok { "success" } else { "error" },
        "message": message,
        "symbols": outcome.accepted,
        "rejected": rejected,
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::BadRequest().json(body)
    }
}

/// `DELETE /api/v1/subscriptions`.
pub async fn unpin(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let (symbols, rejected) = match parse(&body) {
        Ok(v) => v,
        Err(message) => return error(actix_web::http::StatusCode::BAD_REQUEST, message),
    };
    let released = match state
        .registry
        .send(Unpin {
            symbols,
            owner: PinOwner::Rest,
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    HttpResponse::Ok().json(serde_json::json!({
        "status": "success",
        "message": format!("released {} pinned symbols", released.len()),
        "symbols": released,
        "rejected": rejected,
    }))
}
