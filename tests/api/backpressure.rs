//! A client that stops reading does not hold anyone else back, and costs bounded memory.

use std::cell::Cell;
use std::rc::Rc;

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, wait_for, Ended, StallingClient};

const BACKLOG_LIMIT: usize = 16 * 1024;

fn slow_session(status: &Value) -> Option<Value> {
    status["sessions"]["list"]
        .as_array()?
        .iter()
        .find(|s| s["behind"] == true)
        .cloned()
}

#[actix_web::test]
async fn a_stalled_client_does_not_delay_a_healthy_one_and_its_backlog_stays_bounded() {
    let symbols: Vec<String> = (0..20).map(|i| format!("S{i:02}")).collect();
    let app = spawn_app_with(|s| {
        s.throttle.interval_ms = 5;
        s.simulator.tick_ms = 5;
        s.session.backlog_limit_bytes = BACKLOG_LIMIT;
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

    // While it stays behind, its backlog stays within the limit plus a frame or so, and what it
    // misses is counted, not queued.
    let max_unsent = Cell::new(0usize);
    let samples = Cell::new(0u32);
    let last = wait_for("updates to be dropped for the stalled client", || async {
        let s = slow_session(&app.status().await)?;
        max_unsent.set(
            max_unsent
                .get()
                .max(s["unsent_bytes"].as_u64().unwrap() as usize),
        );
        assert!(s["held_updates"].as_u64().unwrap() <= 20, "{s}");
        samples.set(samples.get() + 1);
        (s["dropped_updates"].as_u64().unwrap() > 100 && samples.get() > 5).then_some(s)
    })
    .await;
    let max_unsent = max_unsent.get();
    assert!(
        max_unsent <= BACKLOG_LIMIT + 4096,
        "unsent grew to {max_unsent} bytes: {last}"
    );
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
