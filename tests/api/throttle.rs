//! The latest-value throttle, observed end to end with injected quotes.

use std::collections::HashMap;

use serde_json::Value;

use crate::helpers::{spawn_app_with, TestApp, WsClient};

async fn quiet_app() -> TestApp {
    spawn_app_with(|s| {
        s.simulator.generate = false;
        s.throttle.interval_ms = 200;
    })
    .await
}

fn bid(m: &Value) -> f64 {
    m["update"]["bid_price"].as_f64().unwrap()
}

fn sent_at(m: &Value) -> i128 {
    tickrelay::time::Timestamp::parse_rfc3339(m["timestamp"].as_str().unwrap())
        .unwrap()
        .unix_nanos()
}

async fn next_update(client: &mut WsClient) -> Value {
    client.expect_type("spot_price_update").await
}

#[actix_web::test]
async fn a_burst_gives_one_immediate_and_one_trailing_update_with_the_latest_value() {
    let app = quiet_app().await;
    let mut client = app.ws().await;
    client.subscribe(&["THR"]).await;
    app.wait_upstream(&["THR"]).await;

    app.inject_quotes(&[("THR", 10.0, 10.5)]).await;
    let first = next_update(&mut client).await;
    assert_eq!(bid(&first), 10.0, "the first quote goes out at once");

    let burst: Vec<(&str, f64, f64)> = (1..5)
        .map(|i| ("THR", 10.0 + f64::from(i), 10.5 + f64::from(i)))
        .collect();
    app.inject_quotes(&burst).await;
    let trailing = next_update(&mut client).await;
    assert_eq!(
        bid(&trailing),
        14.0,
        "the trailing edge carries the latest value"
    );
    let gap_ms = (sent_at(&trailing) - sent_at(&first)) / 1_000_000;
    assert!(
        gap_ms >= 200,
        "trailing update came {gap_ms} ms after the first; the window is 200 ms"
    );

    // Nothing else was pending: the next update is the next quote, not a repeat.
    app.inject_quotes(&[("THR", 20.0, 20.5)]).await;
    assert_eq!(bid(&next_update(&mut client).await), 20.0);
}

#[actix_web::test]
async fn a_burst_in_one_frame_goes_out_as_its_newest_value() {
    let app = quiet_app().await;
    let mut client = app.ws().await;
    client.subscribe(&["ONE"]).await;
    app.wait_upstream(&["ONE"]).await;

    // Five quotes that arrive together are one moment: only the newest is worth sending.
    let burst: Vec<(&str, f64, f64)> = (0..5)
        .map(|i| ("ONE", 10.0 + f64::from(i), 10.5 + f64::from(i)))
        .collect();
    app.inject_quotes(&burst).await;
    let mut seen = vec![bid(&next_update(&mut client).await)];
    while seen.last() != Some(&14.0) {
        seen.push(bid(&next_update(&mut client).await));
    }
    // At most the one the throttle took at once and the newest at the trailing edge.
    assert!(seen.len() <= 2, "{seen:?}");
}

#[actix_web::test]
async fn two_symbols_throttle_independently() {
    let app = quiet_app().await;
    let mut client = app.ws().await;
    client.subscribe(&["AAA", "BBB"]).await;
    app.wait_upstream(&["AAA", "BBB"]).await;

    app.inject_quotes(&[("AAA", 1.0, 1.1), ("BBB", 5.0, 5.1)])
        .await;
    let mut per_symbol: HashMap<String, Vec<f64>> = HashMap::new();
    for _ in 0..2 {
        let m = next_update(&mut client).await;
        let symbol = m["update"]["symbol"].as_str().unwrap().to_owned();
        per_symbol.entry(symbol).or_default().push(bid(&m));
    }
    // Both windows are open now: a burst for each goes out at its trailing edge, newest value.
    app.inject_quotes(&[
        ("AAA", 2.0, 2.1),
        ("BBB", 6.0, 6.1),
        ("AAA", 3.0, 3.1),
        ("BBB", 7.0, 7.1),
    ])
    .await;
    for _ in 0..2 {
        let m = next_update(&mut client).await;
        let symbol = m["update"]["symbol"].as_str().unwrap().to_owned();
        per_symbol.entry(symbol).or_default().push(bid(&m));
    }
    assert_eq!(per_symbol["AAA"], [1.0, 3.0]);
    assert_eq!(per_symbol["BBB"], [5.0, 7.0]);
}

#[actix_web::test]
async fn the_final_value_of_a_stream_is_always_delivered() {
    let app = quiet_app().await;
    let mut client = app.ws().await;
    client.subscribe(&["FIN"]).await;
    app.wait_upstream(&["FIN"]).await;

    // A stream of separate frames faster than the window, ending with a distinctive value.
    for i in 0..15 {
        app.inject_quotes(&[("FIN", 30.0 + f64::from(i), 31.0 + f64::from(i))])
            .await;
    }
    let mut updates = Vec::new();
    loop {
        let m = next_update(&mut client).await;
        updates.push(bid(&m));
        if bid(&m) == 44.0 {
            break;
        }
    }
    assert!(
        updates.windows(2).all(|w| w[0] < w[1]),
        "updates go forward: {updates:?}"
    );
    assert!(updates.len() < 15, "the stream was conflated: {updates:?}");
}
