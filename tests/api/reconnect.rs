//! Reconnects, liveness timers, Alpaca error codes and garbage from upstream.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, wait_for, TestApp, WsClient};

/// The next `alpaca_status` of the stocks feed with this status.
async fn status_frame(client: &mut WsClient, status: &str) -> Value {
    client
        .expect(|m| {
            m["type"] == "alpaca_status"
                && m["status"] == status
                && m["details"]["feed"] == "stocks"
        })
        .await
}

/// The simulator's connections of the stocks feed.
async fn stock_connections(app: &TestApp) -> Vec<Value> {
    app.sim_connections()
        .await
        .into_iter()
        .filter(|c| c["feed"] == "stocks")
        .collect()
}

async fn feed_where(app: &TestApp, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, || async {
        let feed = app.feed_status("stocks").await;
        pred(&feed).then_some(feed)
    })
    .await
}

fn last_error(feed: &Value) -> String {
    feed["last_error"].as_str().unwrap_or_default().to_owned()
}

#[actix_web::test]
async fn feed_reconnects_after_a_drop_and_restores_every_subscription() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    status_frame(&mut client, "connected").await; // the initial status after welcome
    client.subscribe(&["AAPL", "MSFT"]).await;
    client.expect_type("spot_price_update").await;
    let before = stock_connections(&app).await;
    assert_eq!(before.len(), 1);

    app.sim("drop", json!({"feed": "stocks"})).await;

    let down = status_frame(&mut client, "disconnected").await;
    assert_eq!(down["details"]["feed"], "stocks");
    status_frame(&mut client, "connected").await;
    let after = wait_for("the resubscribed connection", || async {
        let conns = stock_connections(&app).await;
        let ok = conns.len() == 1
            && conns[0]["id"] != before[0]["id"]
            && conns[0]["subscriptions"]["quotes"] == json!(["AAPL", "MSFT"]);
        ok.then_some(conns)
    })
    .await;
    assert_eq!(after[0]["authenticated"], true);
    // Data flows again: an update stamped after the reconnect.
    let connected_since = app.feed_status("stocks").await["connected_since"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .expect(|m| {
            m["type"] == "spot_price_update"
                && m["update"]["timestamp"].as_str() > Some(connected_since.as_str())
        })
        .await;
    let feed = app.feed_status("stocks").await;
    assert!(feed["reconnect_attempts"].as_u64().unwrap() >= 1, "{feed}");
    assert!(
        last_error(&feed).contains("ended") || last_error(&feed).contains("closed"),
        "{feed}"
    );
}

#[actix_web::test]
async fn an_internal_error_frame_causes_a_reconnect() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    status_frame(&mut client, "connected").await;
    app.sim("error", json!({"feed": "stocks", "code": 500}))
        .await;
    status_frame(&mut client, "disconnected").await;
    status_frame(&mut client, "connected").await;
    let feed = app.feed_status("stocks").await;
    assert!(last_error(&feed).contains("500"), "{feed}");
}

#[actix_web::test]
async fn connection_limit_error_waits_the_hold_off_before_reconnecting() {
    let app = spawn_app_with(|s| s.upstream.connection_limit_hold_off_ms = 800).await;
    app.sim(
        "error",
        json!({"feed": "stocks", "code": 406, "close": true}),
    )
    .await;
    let feed = feed_where(&app, "the 406 hold-off", |f| {
        f["state"] == "disconnected" && f["next_retry_ms"].as_u64().is_some()
    })
    .await;
    assert!(feed["next_retry_ms"].as_u64().unwrap() >= 800, "{feed}");
    assert!(last_error(&feed).contains("406"), "{feed}");
    app.wait_ready().await;
}

#[actix_web::test]
async fn auth_failure_marks_the_feed_failed_and_readiness_says_why() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    status_frame(&mut client, "connected").await;
    app.sim(
        "fail_auth",
        json!({"feed": "stocks", "code": 402, "count": 1}),
    )
    .await;
    app.sim("drop", json!({"feed": "stocks"})).await;

    let failed = status_frame(&mut client, "error").await;
    assert!(
        failed["details"]["last_error"]
            .as_str()
            .unwrap()
            .contains("402"),
        "{failed}"
    );
    let (code, body) = wait_for("readiness to fail", || async {
        let (code, body) = app.get(&app.url("/readyz")).await;
        (code == 503).then_some((code, body))
    })
    .await;
    assert_eq!(code, 503);
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("402") && reasons.contains("stocks"),
        "{body}"
    );
    assert_eq!(body["ready"], false);

    // After the hold-off the next attempt succeeds: readiness returns.
    status_frame(&mut client, "connected").await;
    app.wait_ready().await;
}

#[actix_web::test]
async fn a_peer_that_stops_answering_is_declared_dead() {
    let app = spawn_app().await;
    app.sim("silence", json!({"feed": "stocks", "frozen": true}))
        .await;
    let feed = feed_where(&app, "the dead-peer timer", |f| {
        last_error(f).contains("stopped answering")
    })
    .await;
    assert_ne!(feed["state"], "connected");
    app.sim("silence", json!({"feed": "stocks", "frozen": false}))
        .await;
    app.wait_ready().await;
}

#[actix_web::test]
async fn a_subscribed_feed_without_data_reconnects_on_the_idle_timer() {
    let app = spawn_app_with(|s| s.upstream.data_idle_timeout_ms = 600).await;
    let mut client = app.ws().await;
    client.subscribe(&["AAPL"]).await;
    client.expect_type("spot_price_update").await;
    app.sim("silence", json!({"feed": "stocks", "silent": true}))
        .await;
    let feed = feed_where(&app, "the data-idle timer", |f| {
        last_error(f).contains("no market data")
    })
    .await;
    assert!(last_error(&feed).contains("next idle limit"), "{feed}");
    app.sim("silence", json!({"feed": "stocks", "silent": false}))
        .await;
    app.wait_ready().await;
    client.expect_type("spot_price_update").await;
}

#[actix_web::test]
async fn garbage_from_upstream_is_skipped_without_a_reconnect() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    client.subscribe(&["AAPL"]).await;
    client.expect_type("spot_price_update").await;

    app.sim("raw", json!({"feed": "stocks", "text": "this is not json"}))
        .await;
    app.sim(
        "raw",
        json!({"feed": "stocks", "text": "[{\"T\":\"q\",\"S\":\"AAPL\",\"bp\":\"bad\"}]"}),
    )
    .await;
    app.sim("raw", json!({"feed": "stocks", "text": "{\"T\":\"q\"}"}))
        .await;
    let feed = feed_where(&app, "malformed frames to be counted", |f| {
        f["malformed"].as_u64() >= Some(3)
    })
    .await;
    assert_eq!(feed["state"], "connected");
    assert_eq!(feed["reconnect_attempts"], 0);
    let routed = feed["events_routed"].as_u64().unwrap();
    feed_where(&app, "more data after the garbage", |f| {
        f["events_routed"].as_u64() > Some(routed)
    })
    .await;
    client.expect_type("spot_price_update").await;
}

#[actix_web::test]
async fn repeated_failures_back_off_exponentially() {
    // initial 50 ms, factor 2, jitter 10 %: three failed attempts wait at least 45 + 90 + 180 ms.
    let app = spawn_app().await;
    app.sim(
        "fail_auth",
        json!({"feed": "stocks", "code": 500, "count": 3}),
    )
    .await;
    let started = std::time::Instant::now();
    app.sim("drop", json!({"feed": "stocks"})).await;
    let feed = feed_where(&app, "three failed attempts", |f| {
        f["consecutive_failures"].as_u64() >= Some(4)
    })
    .await;
    assert!(last_error(&feed).contains("500"), "{feed}");
    app.wait_ready().await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(315),
        "reconnected after only {elapsed:?}"
    );
    let feed = app.feed_status("stocks").await;
    assert!(feed["reconnect_attempts"].as_u64() >= Some(4), "{feed}");
}

/// After the upstream was lost, each symbol's first price update carries `gap: true`, and the
/// feed's `alpaca_status` the outage's start and end; the updates after it carry no mark.
#[actix_web::test]
async fn the_first_update_after_a_lost_upstream_is_marked_as_a_gap() {
    let app = crate::helpers::spawn_app_with(|s| s.simulator.generate = false).await;
    let mut c = app.ws().await;
    c.subscribe(&["AAPL"]).await;
    app.wait_upstream(&["AAPL"]).await;
    app.inject_quotes(&[("AAPL", 100.0, 100.5)]).await;
    let before = c
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["bid_price"] == 100.0)
        .await;
    assert!(before["update"].get("gap").is_none(), "{before}");

    let connects = app.feed_status("stocks").await["connects"].as_u64();
    app.sim(
        "drop",
        serde_json::json!({"feed": "stocks", "mode": "abort"}),
    )
    .await;
    crate::helpers::wait_for("the stocks feed back", || async {
        let feed = app.feed_status("stocks").await;
        (feed["connects"].as_u64() > connects && feed["state"] == "connected").then_some(())
    })
    .await;
    app.wait_upstream(&["AAPL"]).await;
    app.inject_quotes(&[("AAPL", 101.0, 101.5)]).await;
    let (mut marked, mut outage) = (None, None);
    while marked.is_none() || outage.is_none() {
        let m = c.next_json().await;
        if m["type"] == "spot_price_update" && m["update"]["bid_price"] == 101.0 {
            marked = Some(m);
        } else if m["type"] == "alpaca_status"
            && m["details"]["feed"] == "stocks"
            && m["details"]["last_outage"]["end"].is_string()
        {
            outage = Some(m["details"]["last_outage"].clone());
        }
    }
    let marked = marked.unwrap();
    assert_eq!(marked["update"]["gap"], true, "{marked}");
    let outage = outage.unwrap();
    let at =
        |k: &str| tickrelay::time::Timestamp::parse_rfc3339(outage[k].as_str().unwrap()).unwrap();
    assert!(at("start") <= at("end"), "{outage}");

    app.inject_quotes(&[("AAPL", 102.0, 102.5)]).await;
    let after = c
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["bid_price"] == 102.0)
        .await;
    assert!(
        after["update"].get("gap").is_none(),
        "only the first: {after}"
    );
}
