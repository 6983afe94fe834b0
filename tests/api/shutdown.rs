//! The real binary: SIGTERM closes browsers with 1001 and exits 0.

use std::process::Command;
use std::time::Duration;

use crate::helpers::{spawn_app, tickrelay, wait_for, Ended, Process};

#[actix_web::test]
async fn sigterm_closes_sessions_with_1001_and_exits_zero() {
    let mut cmd = tickrelay();
    cmd.env("TICKRELAY__HTTP__PORT", "0");
    let mut daemon = Process::start(cmd);
    let addr = daemon.address_after("listening on http://");

    let url = format!("ws://{addr}/ws");
    let (_, framed) = awc::Client::new()
        .ws(url)
        .connect()
        .await
        .expect("ws connect");
    let mut client = crate::helpers::WsClient::from_framed(framed);
    assert_eq!(client.next_json().await["type"], "welcome");
    client.subscribe(&["AAPL"]).await;
    client.expect_type("spot_price_update").await;

    let pid = daemon.pid().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());

    assert_eq!(client.until_end().await, Ended::Closed(Some(1001)));
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    let logs: Vec<String> = daemon.logs.try_iter().collect();
    assert!(
        logs.iter().any(|l| l.contains("SIGTERM received")),
        "{logs:?}"
    );
}

#[actix_web::test]
async fn shutdown_closes_every_session_with_1001_and_stops_the_feed() {
    let app = spawn_app().await;
    let mut a = app.ws().await;
    let mut b = app.ws().await;
    a.subscribe(&["AAPL"]).await;
    let handle = app.handle.clone();
    actix_web::rt::spawn(async move { handle.shutdown().await });
    assert_eq!(a.until_end().await, Ended::Closed(Some(1001)));
    assert_eq!(b.until_end().await, Ended::Closed(Some(1001)));
    // The feed closed its upstream connection and did not come back.
    wait_for("the upstream connection to close", || async {
        let (_, v) = app.get(&app.sim_url("/control/connections")).await;
        v["connections"]
            .as_array()
            .is_some_and(|c| c.is_empty())
            .then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_second_signal_during_shutdown_exits_at_once() {
    let mut cmd = tickrelay();
    // A graceful stop could take this long; the second signal must not wait for it.
    cmd.env("TICKRELAY__HTTP__PORT", "0")
        .env("TICKRELAY__HTTP__SHUTDOWN_TIMEOUT_MS", "30000");
    let mut daemon = Process::start(cmd);
    daemon.address_after("listening on http://");
    let pid = daemon.pid().to_string();
    // Shutdown takes at least 100 ms (close frames get time to leave): the second signal lands
    // inside it.
    for sig in ["-TERM", "-INT"] {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "exit status {status}");
    let logs: Vec<String> = daemon.logs.try_iter().collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("received during shutdown; exiting now")),
        "{logs:?}"
    );
}

/// The stop's deadline holds when the daemon's runtime cannot keep time, as when memory pressure
/// has it swapped out: with its main thread blocked for 30 s (the embedded simulator's stall),
/// SIGTERM still ends the process at `http.shutdown_timeout_ms` + 5 s, with status 1.
#[actix_web::test]
async fn the_stop_deadline_holds_while_the_runtime_is_stalled() {
    let mut cmd = tickrelay();
    cmd.env("TICKRELAY__HTTP__PORT", "0")
        .env("TICKRELAY__HTTP__SHUTDOWN_TIMEOUT_MS", "1000");
    let mut daemon = Process::start(cmd);
    // The simulator's line comes first.
    let sim = daemon.address_after("streams on ws://");
    daemon.address_after("listening on http://");
    let stalled = awc::Client::new()
        .post(format!("http://{sim}/control/stall"))
        .send_json(&serde_json::json!({"ms": 30_000}))
        .await
        .expect("stall");
    assert!(stalled.status().is_success(), "{}", stalled.status());

    let started = std::time::Instant::now();
    let pid = daemon.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = daemon.wait_exit(Duration::from_secs(40));
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "exit status {status}");
    // The deadline is 6 s; the stall would have held the stop for 30.
    assert!(took < Duration::from_secs(15), "the stop took {took:?}");
    let logs: Vec<String> = daemon.logs.try_iter().collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("shutdown did not finish within 6s")),
        "{logs:?}"
    );
}
