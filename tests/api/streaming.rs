//! Prices flow from the simulator through tickrelay to browsers and REST callers.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, wait_for};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[actix_web::test]
async fn first_update_per_symbol_matches_a_quote_the_simulator_sent() {
    let app = spawn_app().await;
    let mut client = app.ws().await;

    let ack = client.subscribe(&["aapl", "MSFT"]).await;
    assert_eq!(ack["symbols"], json!(["AAPL", "MSFT"]));
    assert_eq!(ack["rejected"], json!([]));

    let mut seen = std::collections::HashMap::new();
    while seen.len() < 2 {
        let m = client.expect_type("spot_price_update").await;
        let u = m["update"].clone();
        seen.entry(u["symbol"].as_str().unwrap().to_owned())
            .or_insert(u);
    }
    for (symbol, u) in seen {
        let (bid, ask) = (f(&u["bid_price"]), f(&u["ask_price"]));
        assert!(bid > 0.0 && ask >= bid, "{u}");
        assert!((f(&u["mid_price"]) - (bid + ask) / 2.0).abs() < 1e-9, "{u}");
        assert_eq!(u["stale"], false);
        let (_, history) = app
            .get(&app.sim_url(&format!("/control/history?symbol={symbol}")))
            .await;
        let sent = history
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["t"] == u["timestamp"] && f(&q["bp"]) == bid && f(&q["ap"]) == ask);
        assert!(
            sent,
            "{symbol}: update {u} matches no quote the simulator sent"
        );
    }
}

#[actix_web::test]
async fn second_client_gets_a_snapshot_at_once() {
    let app = spawn_app_with(|s| s.simulator.generate = false).await;
    let mut first = app.ws().await;
    first.subscribe(&["SNAP"]).await;
    app.wait_upstream(&["SNAP"]).await;
    app.inject_quotes(&[("SNAP", 10.0, 10.5)]).await;
    let live = first.expect_type("spot_price_update").await;
    assert_eq!(live["snapshot"], false);

    let mut second = app.ws().await;
    second.subscribe(&["SNAP"]).await;
    // Nothing else is flowing: the very next message must be the snapshot.
    let snap = second.next_json().await;
    assert_eq!(snap["type"], "spot_price_update", "{snap}");
    assert_eq!(snap["snapshot"], true);
    assert_eq!(snap["update"]["bid_price"], 10.0);
    assert_eq!(snap["update"]["ask_price"], 10.5);
    assert_eq!(snap["update"]["mid_price"], 10.25);
}

#[actix_web::test]
async fn trades_and_bars_channels_deliver_their_messages() {
    let app = spawn_app_with(|s| {
        s.simulator.bar_interval_ms = 200;
        s.simulator.trade_probability = 1.0;
    })
    .await;
    let mut client = app.ws().await;
    client
        .send(json!({"action":"subscribe","symbols":["SPY"],"channels":["trades","bars"]}))
        .await;
    let ack = client.expect_type("subscribed").await;
    assert_eq!(ack["channels"], json!(["trades", "bars"]));
    let trade = client.expect_type("trade").await;
    assert_eq!(trade["trade"]["symbol"], "SPY");
    assert!(f(&trade["trade"]["price"]) > 0.0);
    assert!(trade["trade"]["size"].is_u64(), "{trade}");
    let bar = client.expect_type("bar").await;
    assert_eq!(bar["bar"]["symbol"], "SPY");
    assert_eq!(bar["bar"]["kind"], "minute");
    let b = &bar["bar"];
    assert!(
        f(&b["low"]) <= f(&b["open"]) && f(&b["open"]) <= f(&b["high"]),
        "{bar}"
    );
    // Only trades and bars were asked for.
    let upstream = app.upstream_symbols("bars").await;
    assert_eq!(upstream, ["SPY"]);
}

#[actix_web::test]
async fn rest_pins_stream_without_a_browser_and_quotes_are_cached() {
    let app = spawn_app().await;
    let (code, body) = app
        .send_json(
            "POST",
            &app.url("/api/v1/subscriptions"),
            &json!({"symbols":["tsla","bad symbol"]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["symbols"], json!(["TSLA"]));
    assert_eq!(body["rejected"][0]["code"], "invalid_symbol");

    let quote = wait_for("a cached TSLA quote", || async {
        let (code, q) = app.get(&app.url("/api/v1/quotes/TSLA")).await;
        (code == 200).then_some(q)
    })
    .await;
    assert_eq!(quote["symbol"], "TSLA");
    assert!(f(&quote["bid_price"]) > 0.0);
    assert_eq!(quote["stale"], false);

    let (code, many) = app
        .get(&app.url("/api/v1/quotes?symbols=TSLA,NOPE,b@d"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(many["quotes"]["TSLA"]["symbol"], "TSLA");
    assert_eq!(many["missing"], json!(["NOPE"]));
    assert_eq!(many["invalid"][0]["symbol"], "b@d");

    let (code, _) = app.get(&app.url("/api/v1/quotes/NOPE")).await;
    assert_eq!(code, 404);
    let (code, err) = app.get(&app.url("/api/v1/quotes/b@d")).await;
    assert_eq!(code, 400);
    assert_eq!(err["error"], "invalid_symbol");

    // The existing front end's route answers the same way.
    let (code, body) = app
        .send_json(
            "POST",
            &app.url("/api/positions/subscribe-spot-prices"),
            &json!({"symbols":["NVDA"]}),
        )
        .await;
    assert_eq!((code, body["status"].clone()), (200, json!("success")));

    let (code, body) = app
        .send_json(
            "DELETE",
            &app.url("/api/v1/subscriptions"),
            &json!({"symbols":["TSLA","NVDA"]}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["symbols"], json!(["NVDA", "TSLA"]));
    wait_for("TSLA to leave the upstream", || async {
        (!app
            .upstream_symbols("quotes")
            .await
            .contains(&"TSLA".to_owned()))
        .then_some(())
    })
    .await;

    let (code, body) = app
        .send_json(
            "POST",
            &app.url("/api/v1/subscriptions"),
            &json!({"nope":1}),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(body["status"], "error");
}

#[actix_web::test]
async fn probes_status_and_dashboard_answer() {
    let app = spawn_app().await;
    let (code, live) = app.get(&app.url("/healthz")).await;
    assert_eq!((code, live["status"].clone()), (200, json!("ok")));
    let (code, ready) = app.get(&app.url("/readyz")).await;
    assert_eq!(
        (code, ready["feeds"]["stocks"].clone()),
        (200, json!("connected"))
    );
    let (code, health) = app.get(&app.url("/api/v1/health")).await;
    assert_eq!(code, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["websocket_connected"], true);
    assert_eq!(health["provider"], "simulator");
    let status = app.status().await;
    assert_eq!(status["provider"], "simulator");
    assert_eq!(status["feeds"]["stocks"]["state"], "connected");
    assert!(
        !status.to_string().contains("\"secret"),
        "no secret field in status"
    );

    let mut resp = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let page = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
    assert!(
        page.contains("\"AAPL\"") && page.contains("/dashboard.js"),
        "dashboard page lacks its config or its script"
    );
    let mut script = app.http.get(app.url("/dashboard.js")).send().await.unwrap();
    let script = String::from_utf8(script.body().await.unwrap().to_vec()).unwrap();
    assert!(
        script.contains("/ws"),
        "the script opens the browser protocol"
    );

    let (code, body) = app.get(&app.url("/no/such/route")).await;
    assert_eq!((code, body["error"].clone()), (404, json!("not_found")));
}
