//! A client that stops reading does not hold anyone else back, costs memory bounded by its
//! subscriptions, and gets the newest values when it reads again.

use std::cell::Cell;
use std::rc::Rc;

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, wait_for, Ended, StallingClient};

/// An encoded price update is about 300 bytes; allow generously more.
const FRAME_BYTES: u64 = 600;

fn slow_session(status: &Value) -> Option<Value> {
    status["sessions"]["list"]
        .as_array()?
        .iter()
        .find(|s| s["behind"] == true)
        .cloned()
}

#[actix_web::test]
async fn a_stalled_client_does_not_delay_a_healthy_one_and_its_memory_stays_bounded() {
    let symbols: Vec<String> = (0..20).map(|i| format!("S{i:02}")).collect();
    let app = spawn_app_with(|s| {
        s.throttle.interval_ms = 5;
        s.simulator.tick_ms = 5;
        s.session.socket_send_buffer_bytes = 8 * 1024;
        s.session.slow_client_timeout_ms = 1500;
        s.session.slow_client_close_grace_ms = 20_000;
    })
    .await;

    let mut healthy = app.ws().await;
    let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
    healthy.subscribe(&names).await;
    let received = Rc::new(Cell::new(0u64));
    let counter = received.clone();
    let reader = actix_web::rt::spawn(async move {
        loop {
            healthy.expect_type("spot_price_update").await;
            counter.set(counter.get() + 1);
        }
    });

    let mut slow = StallingClient::connect(app.addr, 4096).await;
    slow.send(json!({"action":"subscribe","symbols": symbols}))
        .await;
    // From here on the slow client reads nothing.

    let behind = wait_for("the stalled client to fall behind", || async {
        slow_session(&app.status().await)
    })
    .await;
    let healthy_at_stall = received.get();

    // While it stays behind, it holds at most one update per symbol (plus a ping or two), and
    // what it misses is replaced, not queued.
    let samples = Cell::new(0u32);
    let last = wait_for("updates to be replaced for the stalled client", || async {
        let s = slow_session(&app.status().await)?;
        let held = s["held_updates"].as_u64().unwrap();
        assert!(held <= 20 + 4, "{s}");
        assert!(
            s["queued_bytes"].as_u64().unwrap() <= 24 * FRAME_BYTES,
            "{s}"
        );
        samples.set(samples.get() + 1);
        (s["dropped_updates"].as_u64().unwrap() > 100 && samples.get() > 5).then_some(s)
    })
    .await;
    assert_eq!(behind["id"], last["id"]);

    // Meanwhile the healthy client kept receiving.
    let during = received.get() - healthy_at_stall;
    assert!(
        during >= 50,
        "healthy client got only {during} updates while the other one stalled"
    );

    // Still behind after the slow-client timeout: the session is closed with 4008 ...
    wait_for("the stalled session to be closed", || async {
        let s = app.status().await;
        (s["sessions"]["count"] == 1).then_some(())
    })
    .await;
    // ... which the client reads once it resumes.
    let (texts, end) = slow.drain_until_end().await;
    assert!(texts > 0);
    assert_eq!(end, Ended::Closed(Some(4008)));
    reader.abort();
}

#[actix_web::test]
async fn a_stalled_client_that_resumes_gets_the_newest_value_of_each_symbol_not_the_backlog() {
    let symbols = ["RA", "RB", "RC"];
    let app = spawn_app_with(|s| {
        s.simulator.generate = false;
        s.throttle.interval_ms = 1;
        s.session.socket_send_buffer_bytes = 8 * 1024;
        s.session.slow_client_timeout_ms = 60_000;
    })
    .await;
    let mut slow = StallingClient::connect(app.addr, 4096).await;
    slow.send(json!({"action":"subscribe","symbols": symbols}))
        .await;
    app.wait_upstream(&symbols).await;

    // Far more updates than the socket buffers hold: with a backlog of stale frames the client
    // would have to read them all.
    const ROUNDS: usize = 1500;
    for round in 0..ROUNDS {
        let quotes: Vec<(&str, f64, f64)> = symbols
            .iter()
            .map(|s| (*s, 100.0 + round as f64, 101.0 + round as f64))
            .collect();
        app.inject_quotes(&quotes).await;
    }
    let held = wait_for("the stalled client to fall behind", || async {
        slow_session(&app.status().await)
    })
    .await;
    assert!(held["held_updates"].as_u64().unwrap() <= 3 + 2, "{held}");
    let finals: Vec<(&str, f64, f64)> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, 5000.0 + i as f64, 5001.0 + i as f64))
        .collect();
    app.inject_quotes(&finals).await;
    wait_for("the final values to be emitted", || async {
        let (_, q) = app.get(&app.url("/api/v1/quotes?symbols=RA,RB,RC")).await;
        let bids: Vec<f64> = q["quotes"]
            .as_object()?
            .values()
            .filter_map(|e| e["bid_price"].as_f64())
            .collect();
        (bids.len() == 3 && bids.iter().all(|b| *b >= 5000.0)).then_some(())
    })
    .await;

    // Resume: read until every symbol has shown its final value.
    let frames = slow
        .read_updates_until(|bids| {
            symbols
                .iter()
                .enumerate()
                .all(|(i, s)| bids.get(*s) == Some(&(5000.0 + i as f64)))
        })
        .await;
    let produced = ROUNDS * symbols.len();
    // What the kernel and the HTTP dispatcher had already taken (well under 200 KB) plus one
    // frame per symbol from the outbox.
    assert!(
        (frames as u64) < 200 * 1024 / 250 + 3,
        "the client read {frames} frames of {produced} produced"
    );
}
