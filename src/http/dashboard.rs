//! `GET /`: the dashboard — watchlist, option chain, account, news and status in one page
//! (`dashboard.html`, compiled in: no build step, nothing fetched from the internet).

use actix_web::{web, HttpResponse};

use super::AppState;

const PAGE: &str = include_str!("dashboard.html");

/// Serves the page with the configured symbols and provider filled in.
pub async fn page(state: web::Data<AppState>) -> HttpResponse {
    let config = serde_json::json!({
        "symbols": state.dashboard_symbols,
        "provider": state.provider,
    });
    // `</` cannot appear in JSON produced from validated symbols, but escape it anyway so the
    // script tag can never be closed early.
    let config = config.to_string().replace("</", "<\\/");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE.replace("__TICKRELAY_CONFIG__", &config))
}
