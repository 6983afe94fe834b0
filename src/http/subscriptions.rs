//! Server-side pins: keep symbols streaming with no browser attached.
//!
//! `POST /api/v1/subscriptions` (and the existing front end's `POST
//! /api/positions/subscribe-spot-prices`) pin symbols; `DELETE /api/v1/subscriptions` releases them.
//! Body `{"symbols":[…]}`, on `POST` optionally `"ttl_ms"` (released by itself after that long);
//! reply `{"status":"success"|"error","message","symbols",…}`.
//!
//! Both need the `pin` scope. A pin belongs to the caller (its client id, or `anonymous`): a
//! `DELETE` releases the caller's own pins; with the `admin` scope, `"owner":"<id>"` releases that
//! owner's and `"owner":"*"` everyone's.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use std::sync::Arc;
use std::time::Duration;

use super::auth::refusal;
use super::AppState;
use crate::auth::Principal;
use crate::browser::Rejection;
use crate::registry::{Pin, PinOwner, Unpin};
use crate::symbol::Symbol;

/// Most symbols in one request.
const MAX_SYMBOLS: usize = 1000;

#[derive(Deserialize)]
struct Body {
    symbols: Vec<String>,
    /// `POST`: release the pins by themselves after this long.
    ttl_ms: Option<u64>,
    /// `DELETE` (admin): whose pins to release, `*` for everyone's.
    owner: Option<String>,
}

/// The longest a pin's time-to-live may be: a week.
const MAX_TTL_MS: u64 = 7 * 86_400_000;

/// A request's symbols, split into valid ones and rejections, and its options.
struct Request {
    symbols: Vec<Symbol>,
    rejected: Vec<Rejection>,
    ttl_ms: Option<u64>,
    owner: Option<String>,
}

fn error(status: actix_web::http::StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "status": "error",
        "message": message,
        "symbols": [],
    }))
}

/// Parses the body into valid symbols and rejections, or says what is wrong with it.
fn parse(body: &[u8]) -> Result<Request, String> {
    let parsed: Body = serde_json::from_slice(body)
        .map_err(|e| format!("expected a JSON body like {{\"symbols\":[\"AAPL\"]}}: {e}"))?;
    if parsed.symbols.is_empty() {
        return Err("\"symbols\" is empty".into());
    }
    if parsed.symbols.len() > MAX_SYMBOLS {
        return Err(format!("at most {MAX_SYMBOLS} symbols per request"));
    }
    if let Some(ttl) = parsed.ttl_ms {
        if ttl == 0 || ttl > MAX_TTL_MS {
            return Err(format!(
                "\"ttl_ms\" must be between 1 and {MAX_TTL_MS} (a week)"
            ));
        }
    }
    let mut symbols = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut rejected = Vec::new();
    for raw in &parsed.symbols {
        match Symbol::parse(raw) {
            Ok(s) if seen.insert(s.clone()) => symbols.push(s),
            Ok(_) => {}
            Err(e) => rejected.push(Rejection::invalid(raw, &e)),
        }
    }
    Ok(Request {
        symbols,
        rejected,
        ttl_ms: parsed.ttl_ms,
        owner: parsed.owner,
    })
}

fn unavailable(e: actix::MailboxError) -> HttpResponse {
    error(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        format!("the registry is unavailable: {e}"),
    )
}

/// `POST /api/v1/subscriptions`.
pub async fn pin(state: web::Data<AppState>, who: Principal, body: web::Bytes) -> HttpResponse {
    if let Some(refused) = refusal(&who, who.scopes.pin(), "pin") {
        return refused;
    }
    let Request {
        symbols,
        mut rejected,
        ttl_ms,
        ..
    } = match parse(&body) {
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
                owner: PinOwner::Client(Arc::from(who.name())),
                ttl: ttl_ms.map(Duration::from_millis),
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
        "owner": who.name(),
        "ttl_ms": ttl_ms,
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::BadRequest().json(body)
    }
}

/// `DELETE /api/v1/subscriptions`.
pub async fn unpin(state: web::Data<AppState>, who: Principal, body: web::Bytes) -> HttpResponse {
    if let Some(refused) = refusal(&who, who.scopes.pin(), "pin") {
        return refused;
    }
    let Request {
        symbols,
        rejected,
        owner,
        ..
    } = match parse(&body) {
        Ok(v) => v,
        Err(message) => return error(actix_web::http::StatusCode::BAD_REQUEST, message),
    };
    let owner = owner.unwrap_or_else(|| who.name().to_owned());
    if owner != who.name() {
        if let Some(refused) = refusal(&who, who.scopes.admin(), "admin") {
            return refused;
        }
    }
    let released = match state
        .registry
        .send(Unpin {
            symbols,
            every_client: owner == "*",
            owner: PinOwner::Client(Arc::from(owner.as_str())),
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let mut message = format!("released {} pinned symbols", released.released.len());
    if !released.held_by_others.is_empty() {
        message.push_str(&format!(
            "; {} stay pinned by other callers (only they or an admin may release them)",
            released.held_by_others.len()
        ));
    }
    HttpResponse::Ok().json(serde_json::json!({
        "status": "success",
        "message": message,
        "symbols": released.released,
        "held_by_others": released.held_by_others,
        "rejected": rejected,
    }))
}
