//! Attacks a web page could make on a daemon it can reach, each refused: another site's page
//! opening `/ws` or an SDK path, a DNS-rebinding page (a foreign Host), a cross-site form or
//! `text/plain` POST that moves subscriptions.

use awc::error::WsClientError;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

/// The HTTP status a WebSocket upgrade got, or 101.
async fn upgrade_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = awc::Client::new().ws(url);
    for (k, v) in headers {
        req = req.set_header(*k, *v);
    }
    match req.connect().await {
        Ok((res, _)) => res.status().as_u16(),
        Err(WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[actix_web::test]
async fn another_sites_page_cannot_open_a_websocket() {
    let app = spawn_app_with(|s| {
        s.http.allowed_origins = vec!["https://dash.example.com".into()];
    })
    .await;
    let own = format!("http://{}", app.addr);
    for path in ["/ws", "/v2/iex", "/stream"] {
        let url = format!("ws://{}{path}", app.addr);
        assert_eq!(
            upgrade_status(&url, &[("Origin", "https://evil.example")]).await,
            403,
            "{path}"
        );
        assert_eq!(
            upgrade_status(&url, &[("Origin", &own)]).await,
            101,
            "{path}"
        );
        assert_eq!(
            upgrade_status(&url, &[("Origin", "https://dash.example.com")]).await,
            101,
            "{path}"
        );
        // Programs send no Origin.
        assert_eq!(upgrade_status(&url, &[]).await, 101, "{path}");
    }
}

#[actix_web::test]
async fn a_foreign_host_is_refused_everywhere() {
    let app = spawn_app_with(|s| s.http.allowed_hosts = vec!["prices.internal".into()]).await;
    for path in ["/api/v1/status", "/api/v1/accounts/main/dashboard", "/"] {
        let res = app
            .http
            .get(app.url(path))
            .insert_header(("Host", "rebind.evil.example:8080"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 403, "{path}");
        let ok = app
            .http
            .get(app.url(path))
            .insert_header(("Host", "prices.internal:8080"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status().as_u16(), 200, "{path}");
    }
    let url = format!("ws://{}/ws", app.addr);
    assert_eq!(
        upgrade_status(&url, &[("Host", "rebind.evil.example")]).await,
        403
    );
}

#[actix_web::test]
async fn cross_site_requests_cannot_move_subscriptions() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/subscriptions");
    let body = json!({"symbols": ["TSLA"]}).to_string();
    // The form a page can send without a preflight.
    let mut plain = app
        .http
        .post(&url)
        .insert_header(("Content-Type", "text/plain"))
        .send_body(body.clone())
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 403);
    let reason: serde_json::Value = plain.json().await.unwrap();
    assert!(
        reason["message"]
            .as_str()
            .unwrap()
            .contains("application/json"),
        "{reason}"
    );
    // JSON from another site's page.
    let cross = app
        .http
        .post(&url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Origin", "https://evil.example"))
        .send_body(body.clone())
        .await
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403);
    let pinned = |status: serde_json::Value| {
        status["pinned"]
            .as_array()
            .unwrap()
            .contains(&json!("TSLA"))
    };
    assert!(!pinned(app.status().await), "nothing was pinned");
    // The same request from a program goes through.
    let (code, reply) = app
        .send_json("POST", &url, &json!({"symbols": ["TSLA"]}))
        .await;
    assert_eq!(code, 200, "{reply}");
    assert!(pinned(app.status().await));
}

#[actix_web::test]
async fn the_per_ip_connection_limit_holds_and_frees_with_the_connections() {
    let app = spawn_app_with(|s| s.http.max_connections_per_ip = 2).await;
    let a = app.ws().await;
    let _b = app.ws().await;
    let url = format!("ws://{}/ws", app.addr);
    assert_eq!(upgrade_status(&url, &[]).await, 429);
    let sdk = format!("ws://{}/v2/iex", app.addr);
    assert_eq!(
        upgrade_status(&sdk, &[]).await,
        429,
        "SDK programs count too"
    );
    // A connection that goes gives its place back.
    drop(a);
    crate::helpers::wait_for("a free place", || async {
        let req = awc::Client::new().ws(url.as_str());
        req.connect().await.ok().map(|_| ())
    })
    .await;
}

/// Every response carries the security headers, and the dashboard's policy allows no inline
/// code and no framing: its script and style are files of the daemon's own.
#[actix_web::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in ["/", "/api/v1/health", "/dashboard.js", "/no/such/route"] {
        let res = app.anonymous.get(app.url(path)).send().await.unwrap();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp:?}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp:?}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }
    let mut page = app.anonymous.get(app.url("/")).send().await.unwrap();
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    assert!(html.contains(r#"<script src="/dashboard.js">"#));
    assert!(!html.contains("<script>"), "no inline script");
    assert!(!html.contains("<style>"), "no inline style");
    let script = app
        .anonymous
        .get(app.url("/dashboard.js"))
        .send()
        .await
        .unwrap();
    assert!(script
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/javascript")));
}

/// The embedded simulator's control API answers local tools only: a cross-site `text/plain`
/// POST, a request with a browser `Origin` and a foreign Host are refused, and nothing is dropped.
#[actix_web::test]
async fn the_simulator_control_api_refuses_pages_and_forms() {
    let app = spawn_app().await;
    let drop_url = app.sim_url("/control/drop");
    let form = app
        .anonymous
        .post(&drop_url)
        .insert_header(("Content-Type", "text/plain"))
        .send_body(r#"{"feed":"stocks","mode":"abort"}"#)
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 415);
    let page = app
        .anonymous
        .post(&drop_url)
        .insert_header(("Origin", "https://evil.example"))
        .send_json(&json!({"feed": "stocks", "mode": "abort"}))
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 403);
    let rebound = app
        .anonymous
        .get(app.sim_url("/control/connections"))
        .insert_header(("Host", "evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 403);
    // The stocks connection was never dropped: still the first one.
    let (code, connections) = app.get(&app.sim_url("/control/connections")).await;
    assert_eq!(code, 200);
    assert!(
        connections["connections"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{connections}"
    );
}
