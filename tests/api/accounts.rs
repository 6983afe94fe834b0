//! Trading accounts: REST loads, trade updates to browsers, endpoints, auto-subscription.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, wait_for, TestApp};

async fn account(app: &TestApp, view: &str) -> Value {
    let (code, body) = app
        .get(&app.url(&format!("/api/v1/accounts/main/{view}")))
        .await;
    assert_eq!(code, 200, "{view}: {body}");
    body
}

async fn order(app: &TestApp, symbol: &str, qty: i64, side: &str, price: f64) -> Value {
    app.sim(
        "order",
        json!({"symbol": symbol, "qty": qty, "side": side, "price": price}),
    )
    .await
}

#[actix_web::test]
async fn account_endpoints_answer_from_memory() {
    let app = spawn_app().await;
    let (code, list) = app.get(&app.url("/api/v1/accounts")).await;
    assert_eq!(code, 200);
    assert_eq!(list["count"], 1);
    let main = &list["accounts"][0];
    assert_eq!(
        (
            main["id"].clone(),
            main["connected"].clone(),
            main["has_data"].clone()
        ),
        (json!("main"), json!(true), json!(true))
    );
    assert_eq!(account(&app, "account").await["cash"], "100000.00");
    assert_eq!(account(&app, "positions").await, json!([]));
    assert_eq!(account(&app, "orders").await, json!([]));
    let dash = account(&app, "dashboard").await;
    assert_eq!(dash["summary"]["equity"], "100000.00");
    assert_eq!(dash["summary"]["positions"], 0);

    let (code, ws) = app.get(&app.url("/api/v1/websocket/status")).await;
    assert_eq!(code, 200);
    assert_eq!(
        (
            ws["total_accounts"].clone(),
            ws["connected_accounts"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(ws["accounts"]["main"]["has_data"], true);
    assert_eq!(ws["accounts"]["main"]["last_error"], Value::Null);

    // No client can hold the scope of an account that does not exist, so it is not found.
    let (code, err) = app.get(&app.url("/api/v1/accounts/nobody/account")).await;
    assert_eq!((code, err["error"].clone()), (403, json!("forbidden")));
    let (code, _) = app.get(&app.url("/api/v1/accounts/main/secrets")).await;
    assert_eq!(code, 404);
    assert!(
        !app.status()
            .await
            .to_string()
            .contains("simulator\",\"secret"),
        "no key material in status"
    );
}

#[actix_web::test]
async fn a_fill_reaches_browsers_and_the_account_endpoints() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    client
        .send(json!({"action":"subscribe","channels":["positions"]}))
        .await;
    let ack = client.expect_type("subscribed").await;
    assert_eq!(ack["channels"], json!(["positions"]));

    order(&app, "AAPL", 10, "buy", 190.5).await;

    let new = client.expect_type("order_update").await;
    assert_eq!(
        (new["account"].clone(), new["event"].clone()),
        (json!("main"), json!("new"))
    );
    assert_eq!(new["order"]["symbol"], "AAPL");
    let fill = client.expect_type("order_update").await;
    assert_eq!(fill["event"], "fill");
    assert_eq!(fill["order"]["filled_qty"], "10");
    // The execution: how much, at what price, the position after it, and Alpaca's event time.
    assert_eq!(
        (
            fill["qty"].clone(),
            fill["price"].clone(),
            fill["position_qty"].clone()
        ),
        (json!("10"), json!("190.50"), json!("10"))
    );
    assert!(fill["execution_id"].is_string(), "{fill}");
    assert!(fill["timestamp"].is_string(), "{fill}");
    assert!(
        new["price"].is_null(),
        "a new order has no execution: {new}"
    );
    let position = client.expect_type("position_update").await;
    let p = &position["position"];
    assert_eq!(
        (p["account"].clone(), p["symbol"].clone()),
        (json!("main"), json!("AAPL"))
    );
    assert_eq!(
        (p["qty"].clone(), p["avg_entry_price"].clone()),
        (json!("10"), json!("190.50"))
    );

    let positions = account(&app, "positions").await;
    assert_eq!(positions[0]["symbol"], "AAPL");
    assert_eq!(positions[0]["qty"], "10");
    assert_eq!(account(&app, "account").await["cash"], "98095.00");
    assert_eq!(
        account(&app, "orders").await,
        json!([]),
        "the filled order is no longer open"
    );

    // Closing the position sends a zero position.
    order(&app, "AAPL", 10, "sell", 191.0).await;
    let closed = client
        .expect(|m| m["type"] == "position_update" && m["position"]["qty"] == "0")
        .await;
    assert_eq!(closed["position"]["symbol"], "AAPL");
    assert_eq!(account(&app, "positions").await, json!([]));
}

#[actix_web::test]
async fn open_positions_are_kept_subscribed_and_closed_ones_released() {
    let app = spawn_app_with(|s| {
        s.trading.auto_subscribe_positions_ms = 100;
        s.registry.unsubscribe_grace_ms = 100;
    })
    .await;
    order(&app, "NVDA", 5, "buy", 120.0).await;
    let status = wait_for("NVDA to be pinned by the account", || async {
        let s = app.status().await;
        let pinned = s["symbols"]
            .as_array()?
            .iter()
            .any(|x| x["symbol"] == "NVDA" && x["pinned_by"] == json!(["account:main"]));
        pinned.then_some(s)
    })
    .await;
    assert!(status["pinned"]
        .as_array()
        .unwrap()
        .contains(&json!("NVDA")));
    wait_for("NVDA quotes upstream", || async {
        app.upstream_symbols_of(Some("stocks"), "quotes")
            .await
            .contains(&"NVDA".to_owned())
            .then_some(())
    })
    .await;
    let (code, _) = wait_for("a cached NVDA quote", || async {
        let r = app.get(&app.url("/api/v1/quotes/NVDA")).await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!(code, 200);

    order(&app, "NVDA", 5, "sell", 121.0).await;
    wait_for("NVDA to be released", || async {
        (!app
            .upstream_symbols_of(Some("stocks"), "quotes")
            .await
            .contains(&"NVDA".to_owned()))
        .then_some(())
    })
    .await;
}

#[actix_web::test]
async fn the_trading_stream_reconnects_and_reloads_after_a_drop() {
    let app = spawn_app().await;
    app.sim("drop", json!({"feed": "trading"})).await;
    order(&app, "MSFT", 3, "buy", 300.0).await; // placed while the stream may be down
    let ws = wait_for("the account to reconnect and reload", || async {
        let (_, ws) = app.get(&app.url("/api/v1/websocket/status")).await;
        let main = &ws["accounts"]["main"];
        (main["connected"] == true && main["reconnect_attempts"].as_u64() >= Some(1)).then_some(ws)
    })
    .await;
    assert_eq!(ws["connected_accounts"], 1);
    // The reload after reconnecting picked up the fill that happened meanwhile.
    wait_for("the MSFT position", || async {
        let (_, p) = app.get(&app.url("/api/v1/accounts/main/positions")).await;
        (p[0]["symbol"] == "MSFT").then_some(())
    })
    .await;
}

#[actix_web::test]
async fn refused_trading_credentials_mark_the_account_failed() {
    let app = spawn_app_with(|s| s.upstream.fatal_hold_off_ms = 60_000).await;
    let mut client = app.ws().await;
    app.sim(
        "fail_auth",
        json!({"feed": "trading", "code": 401, "count": 1}),
    )
    .await;
    app.sim("drop", json!({"feed": "trading"})).await;
    let failed = client
        .expect(|m| {
            m["type"] == "alpaca_status"
                && m["details"]["feed"] == "trading:main"
                && m["status"] == "error"
        })
        .await;
    assert!(failed["details"]["last_error"]
        .as_str()
        .unwrap()
        .contains("refused the credentials"));
    let (_, ws) = app.get(&app.url("/api/v1/websocket/status")).await;
    assert_eq!(ws["accounts"]["main"]["connected"], false);
    assert_eq!(ws["connected_accounts"], 0);
    let (code, ready) = app.get(&app.url("/readyz")).await;
    assert_eq!(code, 503);
    assert!(
        ready["reasons"][0]
            .as_str()
            .unwrap()
            .contains("trading:main"),
        "{ready}"
    );
    // The last loaded copy stays readable while the stream is down.
    assert_eq!(account(&app, "account").await["cash"], "100000.00");
}

#[actix_web::test]
async fn a_rate_limited_rest_request_is_retried_after_the_cool_down() {
    let app = spawn_app().await;
    app.sim("fail_rest", json!({"status": 429, "count": 1}))
        .await;
    order(&app, "QQQ", 2, "buy", 400.0).await;
    wait_for("the QQQ position despite the 429", || async {
        let (_, p) = app.get(&app.url("/api/v1/accounts/main/positions")).await;
        (p[0]["symbol"] == "QQQ").then_some(())
    })
    .await;
    let (_, ws) = app.get(&app.url("/api/v1/websocket/status")).await;
    assert_eq!(
        ws["accounts"]["main"]["last_error"],
        Value::Null,
        "a retried 429 is not an error"
    );
}

#[actix_web::test]
async fn several_accounts_start_staggered() {
    let app = crate::helpers::spawn_unready(|s| {
        s.accounts.insert("swing".into(), Default::default());
        s.auth.anonymous_scopes.push("account:swing".into());
        s.trading.start_stagger_ms = 60_000;
    })
    .await;
    // `main` (first) connects at once; `swing` waits its stagger before its first attempt.
    let ws = wait_for("main to connect", || async {
        let (_, ws) = app.get(&app.url("/api/v1/websocket/status")).await;
        (ws["accounts"]["main"]["connected"] == true).then_some(ws)
    })
    .await;
    assert_eq!(ws["total_accounts"], 2);
    assert_eq!(ws["accounts"]["swing"]["connected"], false);
    let swing = app.feed_status("trading:swing").await;
    assert_eq!(swing["state"], "connecting", "{swing}");
    assert!(
        swing["next_retry_ms"].as_u64() >= Some(59_000),
        "staggered: {swing}"
    );
    let (code, ready) = app.get(&app.url("/readyz")).await;
    assert_eq!(code, 503);
    assert!(
        ready["reasons"][0]
            .as_str()
            .unwrap()
            .contains("trading:swing"),
        "{ready}"
    );
}

#[actix_web::test]
async fn a_huge_retry_after_is_clamped() {
    let app = spawn_app_with(|s| s.trading.max_retry_after_ms = 300).await;
    // Alpaca (here, the simulator) asks for a day; the account must not wait that long.
    app.sim(
        "fail_rest",
        json!({"status": 429, "count": 1, "retry_after": 86_400}),
    )
    .await;
    order(&app, "IWM", 3, "buy", 200.0).await;
    wait_for("the IWM position despite a one-day Retry-After", || async {
        let (_, p) = app.get(&app.url("/api/v1/accounts/main/positions")).await;
        (p[0]["symbol"] == "IWM").then_some(())
    })
    .await;
}
