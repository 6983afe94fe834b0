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
