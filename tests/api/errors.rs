//! Alpaca's error semantics on every feed, the circuit breaker, and feed isolation.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, wait_for, TestApp, WsClient};

async fn feed_where(app: &TestApp, feed: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, || async {
        let f = app.feed_status(feed).await;
        pred(&f).then_some(f)
    })
    .await
}

fn last_error(feed: &Value) -> String {
    feed["last_error"].as_str().unwrap_or_default().to_owned()
}

async fn status_frame(client: &mut WsClient, feed: &str, pred: impl Fn(&Value) -> bool) -> Value {
    client
        .expect(|m| m["type"] == "alpaca_status" && m["details"]["feed"] == feed && pred(m))
        .await
}

#[actix_web::test]
async fn fatal_codes_mark_each_feed_failed_and_hold_off_instead_of_looping() {
    let app = spawn_app_with(|s| s.upstream.fatal_hold_off_ms = 60_000).await;
    let cases = [
        ("stocks", 402),
        ("crypto", 409),
        ("options", 410),
        ("news", 411),
    ];
    for (feed, code) in cases {
        app.sim("fail_auth", json!({"feed": feed, "code": code, "count": 1}))
            .await;
        app.sim("drop", json!({"feed": feed})).await;
    }
    for (feed, code) in cases {
        let f = feed_where(&app, feed, "the feed to be failed and holding off", |f| {
            f["state"] == "failed" && f["next_retry_ms"].is_u64()
        })
        .await;
        assert!(last_error(&f).contains(&code.to_string()), "{feed}: {f}");
        assert!(
            f["next_retry_ms"].as_u64() >= Some(59_000),
            "{feed} holds off: {f}"
        );
    }
    // Nobody retries in a loop: after all four failed, no feed holds a connection.
    let conns = app.sim_connections().await;
    assert!(conns.is_empty(), "{conns:?}");
    let (code, ready) = app.get(&app.url("/readyz")).await;
    assert_eq!(code, 503);
    let reasons = ready["reasons"].to_string();
    for (feed, code) in cases {
        assert!(
            reasons.contains(feed) && reasons.contains(&code.to_string()),
            "{reasons}"
        );
    }
}

#[actix_web::test]
async fn handshake_refusals_fail_on_4xx_and_cool_down_on_429() {
    let app = spawn_app_with(|s| {
        s.upstream.fatal_hold_off_ms = 60_000;
        s.upstream.rate_limit_hold_off_ms = 30_000;
    })
    .await;
    app.sim(
        "fail_handshake",
        json!({"feed": "crypto", "status": 403, "count": 1}),
    )
    .await;
    app.sim("drop", json!({"feed": "crypto"})).await;
    app.sim(
        "fail_handshake",
        json!({"feed": "news", "status": 429, "count": 1}),
    )
    .await;
    app.sim("drop", json!({"feed": "news"})).await;
    // The failure is reported first, the scheduled retry when the restarted actor starts
    // (on the feed's own thread): wait for both.
    let crypto = feed_where(&app, "crypto", "the 403 and its hold-off", |f| {
        last_error(f).contains("403") && f["next_retry_ms"].is_u64()
    })
    .await;
    assert_eq!(crypto["state"], "failed");
    assert!(crypto["next_retry_ms"].as_u64() >= Some(59_000), "{crypto}");
    let news = feed_where(&app, "news", "the 429 and its cool-down", |f| {
        last_error(f).contains("429") && f["next_retry_ms"].is_u64()
    })
    .await;
    assert_eq!(
        news["state"], "disconnected",
        "429 is a cool-down, not a failure: {news}"
    );
    let retry = news["next_retry_ms"].as_u64().unwrap();
    assert!(
        (29_000..59_000).contains(&retry),
        "the rate-limit hold-off: {news}"
    );
}

#[actix_web::test]
async fn a_symbol_over_the_plan_limit_is_rejected_and_the_rest_keep_streaming() {
    let app = spawn_app().await;
    app.sim("symbol_limit", json!({"feed": "stocks", "limit": 2}))
        .await;
    let mut client = app.ws().await;
    client.subscribe(&["AAPL", "MSFT"]).await;
    app.wait_upstream(&["AAPL", "MSFT"]).await;
    let ack = client.subscribe(&["TSLA"]).await;
    assert_eq!(
        ack["symbols"],
        json!(["TSLA"]),
        "accepted locally, then refused upstream"
    );
    let refused = client
        .expect(|m| {
            m["type"] == "subscribed" && m["rejected"].as_array().is_some_and(|r| !r.is_empty())
        })
        .await;
    assert_eq!(refused["rejected"][0]["symbol"], "TSLA");
    assert_eq!(refused["rejected"][0]["code"], "too_many_symbols");
    assert!(refused["rejected"][0]["message"]
        .as_str()
        .unwrap()
        .contains("405"));
    // AAPL and MSFT keep streaming; TSLA is gone from the registry and the desired set.
    client
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["symbol"] == "MSFT")
        .await;
    let status = app.status().await;
    let symbols: Vec<&str> = status["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(symbols, ["AAPL", "MSFT"]);
    assert!(!app
        .upstream_symbols("quotes")
        .await
        .contains(&"TSLA".to_owned()));
    assert_eq!(app.feed_status("stocks").await["state"], "connected");
}

#[actix_web::test]
async fn an_invalid_symbol_is_found_among_many_dropped_and_its_subscribers_told() {
    let app = spawn_app().await;
    app.sim(
        "reject_symbols",
        json!({"feed": "stocks", "symbols": ["BADX"]}),
    )
    .await;
    let mut client = app.ws().await;
    // Both go upstream in one request, which the upstream refuses as a whole (400).
    client.subscribe(&["GOOD", "BADX"]).await;
    let refused = client
        .expect(|m| {
            m["type"] == "subscribed" && m["rejected"].as_array().is_some_and(|r| !r.is_empty())
        })
        .await;
    assert_eq!(refused["rejected"][0]["symbol"], "BADX");
    assert_eq!(refused["rejected"][0]["code"], "invalid_symbol");
    client
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["symbol"] == "GOOD")
        .await;
    assert_eq!(
        app.upstream_symbols_of(Some("stocks"), "quotes").await,
        ["GOOD"]
    );
    let feed = app.feed_status("stocks").await;
    assert_eq!(feed["state"], "connected");
    assert_eq!(
        feed["reconnect_attempts"], 0,
        "a refused symbol is no reason to reconnect"
    );
}

#[actix_web::test]
async fn slow_client_error_reconnects() {
    let app = spawn_app().await;
    app.sim("error", json!({"feed": "options", "code": 407}))
        .await;
    let f = feed_where(&app, "options", "the 407 reconnect", |f| {
        last_error(f).contains("407") && f["state"] == "connected"
    })
    .await;
    assert!(f["reconnect_attempts"].as_u64() >= Some(1));
}

#[actix_web::test]
async fn the_circuit_opens_after_repeated_failures_and_recovers() {
    let app = spawn_app_with(|s| {
        s.upstream.circuit_breaker_threshold = 2;
        s.upstream.circuit_breaker_cooldown_ms = 400;
    })
    .await;
    let mut client = app.ws().await;
    app.sim(
        "fail_auth",
        json!({"feed": "crypto", "code": 500, "count": 3}),
    )
    .await;
    app.sim("drop", json!({"feed": "crypto"})).await;
    let open = status_frame(&mut client, "crypto", |m| {
        m["details"]["circuit_state"] == "open"
    })
    .await;
    assert_eq!(open["status"], "disconnected");
    let status = app.feed_status("crypto").await;
    assert!(
        status["circuit_state"] == "open" || status["circuit_state"] == "half_open",
        "{status}"
    );
    status_frame(&mut client, "crypto", |m| {
        m["details"]["circuit_state"] == "half_open"
    })
    .await;
    // The trial fails once more (third refusal), then succeeds: the circuit closes.
    let back = status_frame(&mut client, "crypto", |m| m["status"] == "connected").await;
    assert_eq!(back["details"]["circuit_state"], "closed");
    let status = app.feed_status("crypto").await;
    assert_eq!(status["circuit_state"], "closed");
    assert!(status["reconnect_attempts"].as_u64() >= Some(4), "{status}");
}

#[actix_web::test]
async fn one_failing_feed_never_disturbs_the_others() {
    let app = spawn_app_with(|s| s.upstream.fatal_hold_off_ms = 60_000).await;
    let mut client = app.ws().await;
    client.subscribe(&["AAPL", "ETH/USD"]).await;
    client
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["symbol"] == "ETH/USD")
        .await;
    app.sim(
        "fail_auth",
        json!({"feed": "crypto", "code": 402, "count": 100}),
    )
    .await;
    app.sim("drop", json!({"feed": "crypto"})).await;
    status_frame(&mut client, "crypto", |m| m["status"] == "error").await;
    // Stocks keep flowing to the same client.
    for _ in 0..10 {
        client
            .expect(|m| m["type"] == "spot_price_update" && m["update"]["symbol"] == "AAPL")
            .await;
    }
    for feed in ["stocks", "options", "news", "trading:main"] {
        let f = app.feed_status(feed).await;
        assert_eq!(f["state"], "connected", "{feed}: {f}");
        assert_eq!(f["reconnect_attempts"], 0, "{feed}: {f}");
    }
    let (code, ready) = app.get(&app.url("/readyz")).await;
    assert_eq!(code, 503);
    let reasons = ready["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "only crypto is not ready: {ready}");
    assert!(reasons[0].as_str().unwrap().contains("crypto"));
}

#[actix_web::test]
async fn garbage_on_one_feed_is_skipped_and_a_new_connection_is_not_needed() {
    let app = spawn_app().await;
    app.sim(
        "raw",
        json!({"feed": "news", "text": "[{\"T\":\"n\",\"id\":\"not a number\"}]"}),
    )
    .await;
    let f = feed_where(&app, "news", "the malformed count", |f| {
        f["malformed"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(f["state"], "connected");
    assert_eq!(f["reconnect_attempts"], 0);
}

#[actix_web::test]
async fn a_405_during_the_replay_keeps_every_symbol_alpaca_accepts() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    let all = ["AAPL", "MSFT", "QQQ", "SPY", "TSLA"];
    client.subscribe(&all).await;
    app.wait_upstream(&all).await;
    // The plan shrinks to 3 symbols, then the connection drops: the replay asks for all 5 at once.
    app.sim("symbol_limit", json!({"feed": "stocks", "limit": 3}))
        .await;
    app.sim("drop", json!({"feed": "stocks"})).await;
    let refused = client
        .expect(|m| {
            m["type"] == "subscribed" && m["rejected"].as_array().is_some_and(|r| !r.is_empty())
        })
        .await;
    // Alpaca accepted three of the five; only the other two are refused, not the whole replay.
    wait_for("three symbols upstream again", || async {
        let held = app.upstream_symbols_of(Some("stocks"), "quotes").await;
        (held.len() == 3).then_some(held)
    })
    .await;
    let mut rejected: Vec<String> = Vec::new();
    rejected.extend(
        refused["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["symbol"].as_str().unwrap().to_owned()),
    );
    // The two refusals may come in one frame or two.
    if rejected.len() < 2 {
        let more = client
            .expect(|m| {
                m["type"] == "subscribed" && m["rejected"].as_array().is_some_and(|r| !r.is_empty())
            })
            .await;
        rejected.push(more["rejected"][0]["symbol"].as_str().unwrap().to_owned());
    }
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let held = app.upstream_symbols_of(Some("stocks"), "quotes").await;
    for s in &held {
        assert!(!rejected.contains(s), "{s} both held and refused");
    }
    client
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["symbol"] == held[0].as_str())
        .await;
    assert_eq!(app.feed_status("stocks").await["state"], "connected");
}

#[actix_web::test]
async fn a_subscription_ack_that_never_comes_is_recovered_by_a_reconnect() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    client.subscribe(&["AAPL"]).await;
    app.wait_upstream(&["AAPL"]).await;
    app.sim("swallow_acks", json!({"feed": "stocks", "count": 1}))
        .await;
    client.subscribe(&["MSFT"]).await;
    // The feed notices (within the ack timeout, upstream.auth_timeout_ms) and reconnects.
    wait_for("the ack timeout to be noticed", || async {
        let feed = app.feed_status("stocks").await;
        feed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no acknowledgement"))
            .then_some(())
    })
    .await;
    app.wait_ready().await;
    client
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["symbol"] == "MSFT")
        .await;
    assert!(app
        .upstream_symbols("quotes")
        .await
        .contains(&"MSFT".to_owned()));
}
