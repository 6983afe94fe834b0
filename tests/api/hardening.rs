//! Faults and load that must not take the daemon down, or make it look down.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::helpers::spawn_app;

/// `GET path` over a plain socket from another thread; answers the status code and how long it
/// took.
fn get_from_another_thread(addr: std::net::SocketAddr, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, started.elapsed())
}

#[actix_web::test]
async fn liveness_answers_while_the_registry_is_busy() {
    let app = spawn_app().await;
    let addr = app.addr;
    // The registry runs on this test's thread: keep it busy for 2.5 s (longer than a probe
    // would wait for an answer from it) while a probe asks from elsewhere.
    let probe = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        get_from_another_thread(addr, "/healthz")
    });
    std::thread::sleep(Duration::from_millis(2500));
    let (code, took) = probe.join().unwrap();
    assert_eq!(code, 200, "a busy registry is not a dead daemon");
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
}

/// `n` distinct valid stock symbols: AAAA, AAAB, …
fn many_symbols(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut s = String::new();
            let mut k = i;
            for _ in 0..4 {
                s.insert(0, char::from(b'A' + (k % 26) as u8));
                k /= 26;
            }
            s
        })
        .collect()
}

#[actix_web::test]
async fn a_huge_subscribe_gets_a_bounded_reply() {
    let app = crate::helpers::spawn_app_with(|s| s.session.max_frame_bytes = 256 * 1024).await;
    let mut c = app.ws().await;
    let mut symbols: Vec<serde_json::Value> = many_symbols(10_000)
        .into_iter()
        .map(serde_json::Value::from)
        .collect();
    // And some garbage.
    symbols.extend((0..2_000).map(|i| serde_json::Value::from(format!("bad symbol {i}"))));
    let request = serde_json::json!({"action": "subscribe", "symbols": symbols}).to_string();
    assert!(request.len() > 64 * 1024);
    c.send_text(&request).await;
    let ack = c.expect_type("subscribed").await;
    let size = ack.to_string().len();
    assert!(size < 16 * 1024, "a {size}-byte answer to a huge request");
    assert_eq!(
        ack["symbols"].as_array().unwrap().len(),
        200,
        "the per-connection cap"
    );
    assert!(ack["rejected"].as_array().unwrap().len() <= 20);
    // Everything not subscribed counts, read or not (the garbage comes after the cap).
    assert_eq!(ack["rejected_count"], 12_000 - 200);
    // The connection is still usable.
    c.send(serde_json::json!({"action": "ping", "id": 1})).await;
    c.expect_type("pong").await;
}

#[actix_web::test]
async fn the_simulator_forgets_symbols_nobody_wants() {
    let app = crate::helpers::spawn_app().await;
    let walks = || async {
        let (_, report) = app.get(&app.sim_url("/control/connections")).await;
        report["walks"].as_u64().unwrap()
    };
    let before = walks().await;
    let mut c = app.ws().await;
    let symbols = many_symbols(150);
    let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
    c.subscribe(&names).await;
    crate::helpers::wait_for("the walks of 150 symbols", || async {
        (walks().await >= before + 150).then_some(())
    })
    .await;
    c.send(serde_json::json!({"action": "unsubscribe", "symbols": names}))
        .await;
    c.expect_type("unsubscribed").await;
    // After the registry's grace period the upstream lets them go, and the simulator forgets them.
    crate::helpers::wait_for("the simulator to forget them", || async {
        (walks().await <= before).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn the_daemon_streams_at_most_its_symbol_limit_over_all_sessions() {
    let app = crate::helpers::spawn_app_with(|s| s.registry.max_symbols = 2).await;
    let mut a = app.ws().await;
    let mut b = app.ws().await;
    let first = a.subscribe(&["AAPL"]).await;
    assert_eq!(first["symbols"], serde_json::json!(["AAPL"]));
    let second = b.subscribe(&["MSFT", "SPY", "AAPL"]).await;
    assert_eq!(second["symbols"], serde_json::json!(["MSFT", "AAPL"]));
    assert_eq!(second["rejected"][0]["symbol"], "SPY");
    assert_eq!(second["rejected"][0]["code"], "too_many_symbols");
    assert!(second["rejected"][0]["message"]
        .as_str()
        .unwrap()
        .contains("registry.max_symbols"));
}

#[actix_web::test]
async fn the_status_lists_a_page_of_sessions_and_sums_up_all() {
    let app = crate::helpers::spawn_app().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(app.ws().await);
    }
    let app = &app;
    async fn page(app: &crate::helpers::TestApp, query: &str) -> serde_json::Value {
        app.get(&app.url(&format!("/api/v1/status{query}"))).await.1["sessions"].clone()
    }
    let all = page(app, "").await;
    assert_eq!(
        (all["count"].clone(), all["listed"].clone()),
        (5.into(), 5.into())
    );
    let two = page(app, "?sessions=2").await;
    assert_eq!(
        (two["count"].clone(), two["listed"].clone()),
        (5.into(), 2.into())
    );
    let last = page(app, "?sessions=2&offset=4").await;
    assert_eq!(last["list"].as_array().unwrap().len(), 1);
    assert!(last["list"][0]["id"].as_u64() > two["list"][1]["id"].as_u64());
    let none = page(app, "?sessions=0").await;
    assert_eq!(
        (none["count"].clone(), none["listed"].clone()),
        (5.into(), 0.into())
    );
}

#[actix_web::test]
async fn the_simulator_caps_its_symbols_and_refuses_past_the_cap_like_alpaca() {
    // 9 configured symbols have walks from the start; room for 3 more.
    let app = crate::helpers::spawn_app_with(|s| s.simulator.max_symbols = 12).await;
    let mut c = app.ws().await;
    let symbols = many_symbols(20);
    let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
    c.send(serde_json::json!({"action": "subscribe", "symbols": names}))
        .await;
    c.expect_type("subscribed").await;
    // The stocks connection may hold 12 symbols: the other 8 come back refused (405 →
    // too_many_symbols; the feed retries a refused request symbol by symbol).
    let mut refused = std::collections::BTreeSet::new();
    while refused.len() < 8 {
        let m = c.expect_type("subscribed").await;
        for r in m["rejected"].as_array().unwrap() {
            assert_eq!(r["code"], "too_many_symbols", "{m}");
            refused.insert(r["symbol"].as_str().unwrap().to_owned());
        }
    }
    let (_, report) = app.get(&app.sim_url("/control/connections")).await;
    assert!(report["walks"].as_u64().unwrap() <= 12, "{report}");
    assert!(
        report["history_symbols"].as_u64().unwrap() <= 12,
        "{report}"
    );
    // Streaming goes on for what fits.
    c.expect_type("spot_price_update").await;
}
