//! Latest cached prices, straight from the quote cache.

use crate::auth::Principal;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::refusal;
use super::{ApiError, AppState};
use crate::browser::PriceUpdate;
use crate::quote_book::CachedPrice;
use crate::symbol::Symbol;
use crate::time::Timestamp;

/// Most symbols one `GET /api/v1/quotes?symbols=` may ask for.
const MAX_SYMBOLS: usize = 500;

#[derive(Serialize)]
struct QuoteView<'a> {
    #[serde(flatten)]
    update: PriceUpdate<'a>,
    age_ms: u64,
    received_at: Timestamp,
}

fn view<'a>(
    symbol: &'a Symbol,
    cached: &CachedPrice,
    state: &AppState,
    now: Timestamp,
) -> QuoteView<'a> {
    let age = cached.age_at(now);
    QuoteView {
        update: PriceUpdate::new(symbol, &cached.price, age > state.stale_after),
        age_ms: age.as_millis() as u64,
        received_at: cached.received_at,
    }
}

/// `GET /api/v1/quotes/{symbol}`.
pub async fn one(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<String>,
) -> HttpResponse {
    if let Some(refused) = refusal(&who, who.scopes.market(), "market") {
        return refused;
    }
    let raw = path.into_inner();
    let symbol = match Symbol::parse(&raw) {
        Ok(s) => s,
        Err(e) => {
            return HttpResponse::BadRequest().json(ApiError {
                error: "invalid_symbol",
                message: e.to_string(),
            })
        }
    };
    match state.book.get(symbol.as_str()) {
        Some(cached) => HttpResponse::Ok().json(view(&symbol, &cached, &state, Timestamp::now())),
        None => HttpResponse::NotFound().json(ApiError {
            error: "not_found",
            message: format!(
                "no price for {symbol} yet: it is not streaming. Pin it with POST /api/v1/subscriptions \
                 {{\"symbols\":[\"{symbol}\"]}} or subscribe over /ws"
            ),
        }),
    }
}

#[derive(Deserialize)]
pub struct ManyQuery {
    symbols: Option<String>,
}

/// `GET /api/v1/quotes?symbols=A,B`.
pub async fn many(
    state: web::Data<AppState>,
    who: Principal,
    query: web::Query<ManyQuery>,
) -> HttpResponse {
    if let Some(refused) = refusal(&who, who.scopes.market(), "market") {
        return refused;
    }
    let Some(list) = query.into_inner().symbols.filter(|s| !s.trim().is_empty()) else {
        return HttpResponse::BadRequest().json(ApiError {
            error: "missing_symbols",
            message: "pass symbols as ?symbols=AAPL,MSFT".into(),
        });
    };
    let raw: Vec<&str> = list.split(',').filter(|s| !s.trim().is_empty()).collect();
    if raw.len() > MAX_SYMBOLS {
        return HttpResponse::BadRequest().json(ApiError {
            error: "too_many_symbols",
            message: format!("at most {MAX_SYMBOLS} symbols per request"),
        });
    }
    let now = Timestamp::now();
    let mut symbols = Vec::new();
    let mut invalid = Vec::new();
    for r in raw {
        match Symbol::parse(r) {
            Ok(s) => symbols.push(s),
            Err(e) => invalid.push(serde_json::json!({"symbol": r, "message": e.to_string()})),
        }
    }
    let cached: Vec<(&Symbol, Option<CachedPrice>)> = symbols
        .iter()
        .map(|s| (s, state.book.get(s.as_str())))
        .collect();
    let mut quotes = serde_json::Map::new();
    let mut missing = Vec::new();
    for (symbol, entry) in &cached {
        match entry {
            Some(c) => {
                let v = serde_json::to_value(view(symbol, c, &state, now)).unwrap_or_default();
                quotes.insert(symbol.to_string(), v);
            }
            None => missing.push(symbol.as_str()),
        }
    }
    HttpResponse::Ok().json(serde_json::json!({
        "quotes": quotes,
        "missing": missing,
        "invalid": invalid,
        "timestamp": now,
    }))
}
