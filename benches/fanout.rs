//! End-to-end fan-out: the real daemon and simulator, many WebSocket clients, deliveries per second.
//!
//! `cargo bench --bench fanout [-- CLIENTS SYMBOLS SECONDS]` (default 100 clients × 20 symbols × 5 s).
//! The simulator ticks every millisecond and the throttle is set to 10 ms, so every symbol emits up
//! to 100 updates/s and each is delivered to every client. Clients, daemon and simulator share this
//! machine, so the figure is a floor for what the daemon alone can do.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_http::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use tickrelay::settings::Settings;
use tickrelay::startup::{install_crypto_provider, Daemon};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(100);
    let symbols = args.get(1).copied().unwrap_or(20);
    let seconds = args.get(2).copied().unwrap_or(5) as u64;

    actix_web::rt::System::new().block_on(async move {
        install_crypto_provider();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("settings.toml");
        let mut s = Settings::load_with_env(&path, HashMap::new()).unwrap();
        s.http.port = 0;
        s.http.workers = 1;
        s.simulator.tick_ms = 1;
        s.throttle.interval_ms = 10;
        s.session.max_symbols = symbols.max(1);
        let daemon = Daemon::build(s).await.unwrap();
        let addr = daemon.addr();
        let handle = daemon.handle();
        actix_web::rt::spawn(daemon.run_until_stopped());

        let names: Vec<String> = (0..symbols).map(|i| format!("B{i:03}")).collect();
        let received = Rc::new(Cell::new(0u64));
        let bytes = Rc::new(Cell::new(0u64));
        for _ in 0..clients {
            let (_, mut ws) = awc::Client::new()
                .ws(format!("ws://{addr}/ws"))
                .connect()
                .await
                .expect("connect");
            let sub = serde_json::json!({"action":"subscribe","symbols":names}).to_string();
            ws.send(Message::Text(sub.into())).await.unwrap();
            let (received, bytes) = (received.clone(), bytes.clone());
            actix_web::rt::spawn(async move {
                while let Some(Ok(frame)) = ws.next().await {
                    if let Frame::Text(b) = frame {
                        received.set(received.get() + 1);
                        bytes.set(bytes.get() + b.len() as u64);
                    }
                }
            });
        }
        // Warm up until every client is streaming, then measure.
        actix_web::rt::time::sleep(Duration::from_secs(1)).await;
        let (r0, b0, t0) = (received.get(), bytes.get(), Instant::now());
        actix_web::rt::time::sleep(Duration::from_secs(seconds)).await;
        let (n, b, dt) = (received.get() - r0, bytes.get() - b0, t0.elapsed().as_secs_f64());
        println!(
            "fanout: {clients} clients x {symbols} symbols, throttle 10 ms: {:.0} deliveries/s, {:.1} MB/s to clients",
            n as f64 / dt,
            b as f64 / dt / 1e6
        );
        handle.shutdown().await;
    });
}
