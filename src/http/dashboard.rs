//! `GET /`: the dashboard — watchlist, option chain, account, news and status in one page
//! (`dashboard.html` with `dashboard.js` and `dashboard.css`, compiled in: no build step, nothing
//! fetched from the internet). The script and the style are files of their own, served from the
//! daemon, so the page runs under a Content-Security-Policy that allows no inline code.

use actix_web::{web, HttpResponse};

use super::AppState;

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

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

/// `GET /dashboard.js`: the page's script.
pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(SCRIPT)
}

/// `GET /dashboard.css`: the page's style.
pub async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(STYLE)
}
