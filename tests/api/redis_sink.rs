//! The Redis price sink against a real `redis-server` on a free loopback port
//! (`tests/redis/setup.sh` provides one under `target/redis` on first use).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::{provide, spawn_app_with, wait_for, EVENT_TIMEOUT};

/// The redis-server binary, provided once per test run.
fn redis_server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| provide("redis", "redis").join("bin/redis-server"))
}

/// A loopback port nobody listens on (the listener that found it is closed).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server on a free port, with no persistence; killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        Self::start_with(port, &["--port", &port.to_string()])
    }

    /// A redis-server that speaks only TLS (with the test certificate, no client certificate
    /// asked) and knows two ACL users, as docs/operations.md suggests: `primary` with `password` may do
    /// everything, `edge` (same password) only what an edge needs — it cannot publish market
    /// data or write the price cache. The default user is off.
    pub fn start_tls_acl(password: &str) -> RedisServer {
        let port = free_port();
        let tls = |name: &str| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/").to_owned() + name;
        Self::start_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &tls("cert.pem"),
                "--tls-key-file",
                &tls("key.pem"),
                "--tls-ca-cert-file",
                &tls("ca.pem"),
                "--tls-auth-clients",
                "no",
                "--user",
                "default",
                "off",
                "--user",
                "primary",
                "on",
                &format!(">{password}"),
                "~*",
                "&*",
                "+@all",
                "--user",
                "edge",
                "on",
                &format!(">{password}"),
                "~{tickrelay}:*",
                "%R~price:*",
                "&tickrelay.*",
                "+@connection",
                "+mget",
                "+set",
                "+sadd",
                "+subscribe",
                "+unsubscribe",
                "(+publish",
                "&tickrelay.edges)",
            ],
        )
    }

    fn start_with(port: u16, args: &[&str]) -> RedisServer {
        let child = Command::new(redis_server_binary())
            .args(["--bind", "127.0.0.1"])
            .args(args)
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = RedisServer { child, port };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits for `price:<symbol>` to hold a value and answers it, parsed.
    pub async fn cached_price(&self, symbol: &str) -> Value {
        let conn = self.client().await;
        let key = format!("price:{symbol}");
        wait_for(&key, || async {
            let text: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            text.map(|t| serde_json::from_str(&t).unwrap())
        })
        .await
    }

    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn quotes_flow_into_redis_as_the_consumers_read_them() {
    let redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_app_with(|s| s.redis.url = url).await;
    let mut events = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    events.subscribe("price.updated.AAPL").await.unwrap();
    let mut browser = app.ws().await;
    browser.subscribe(&["AAPL"]).await;

    // Events come at the throttled rate: 200 ms apart, never at the simulator's 20 ms.
    let mut stream = events.on_message();
    let mut times = Vec::new();
    let mut last = Value::Null;
    while times.len() < 6 {
        let msg = actix_web::rt::time::timeout(EVENT_TIMEOUT, stream.next())
            .await
            .expect("a price event")
            .expect("the subscription is open");
        let payload: String = msg.get_payload().unwrap();
        last = serde_json::from_str(&payload).unwrap();
        times.push(Instant::now());
    }
    assert_eq!(last["symbol"], "AAPL");
    for key in ["bid", "ask", "mid"] {
        assert!(last[key].as_f64().unwrap() > 0.0, "{key}: {last}");
    }
    let ts = last["timestamp"].as_str().unwrap();
    assert!(ts.ends_with("+00:00") && ts.len() == 32, "{ts}");
    assert!(last.get("exchange").is_none(), "events carry no exchange");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .filter(|g| **g >= Duration::from_millis(100))
            .count()
            >= 3,
        "events unthrottled: {gaps:?}"
    );

    // The cached price: the shape above plus the exchange, with its TTL.
    let cached = redis.cached_price("AAPL").await;
    let mut conn = redis.client().await;
    assert_eq!(cached["symbol"], "AAPL");
    assert_eq!(cached["exchange"], "IEX");
    assert!(cached["mid"].as_f64().unwrap() > 0.0);
    let ttl: i64 = redis::cmd("TTL")
        .arg("price:AAPL")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((250..=300).contains(&ttl), "TTL {ttl}");

    let status = app.status().await;
    assert_eq!(status["redis"]["state"], "connected", "{}", status["redis"]);
    assert!(status["redis"]["written"].as_u64().unwrap() > 0);
    let (_, ready) = app.get(&app.url("/readyz")).await;
    assert_eq!(ready["redis"], "connected", "{ready}");
}

#[actix_web::test]
async fn redis_away_costs_nothing_but_its_writes_and_they_resume() {
    let redis = RedisServer::start();
    let port = redis.port;
    let url = redis.url();
    let app = spawn_app_with(|s| s.redis.url = url).await;
    let mut browser = app.ws().await;
    browser.subscribe(&["AAPL", "MSFT"]).await;
    wait_for("writes", || async {
        (app.status().await["redis"]["written"].as_u64() > Some(0)).then_some(())
    })
    .await;
    drop(redis);
    // Browsers keep receiving while Redis is gone; the sink holds one price per symbol.
    wait_for("the sink to notice", || async {
        (app.status().await["redis"]["state"] != "connected").then_some(())
    })
    .await;
    for _ in 0..5 {
        browser.expect_type("spot_price_update").await;
    }
    let status = app.status().await["redis"].clone();
    assert!(status["pending"].as_u64().unwrap() <= 2, "{status}");
    assert!(status["last_error"].is_string(), "{status}");
    // Still ready: Redis is a detail of readiness, not a condition.
    let (code, ready) = app.get(&app.url("/readyz")).await;
    assert_eq!(code, 200, "{ready}");
    assert_ne!(ready["redis"], "connected");

    // Back on the same port: the sink reconnects and writes again.
    let redis = RedisServer::start_on(port);
    redis.cached_price("MSFT").await;
    let status = app.status().await["redis"].clone();
    assert_eq!(status["state"], "connected");
    assert!(status["reconnects"].as_u64().unwrap() >= 1, "{status}");
}
