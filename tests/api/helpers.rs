//! The test harness: the real daemon and simulator on `127.0.0.1:0`, real WebSocket clients.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use actix_codec::Framed;
use actix_http::ws::{Codec, Frame, Message};
use awc::BoxedSocket;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tickrelay::credentials::Secret;
use tickrelay::settings::{ClientSettings, Settings};
use tickrelay::startup::{install_crypto_provider, Daemon, DaemonHandle};

/// How long any single awaited event may take before a test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running daemon with its in-process simulator.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The in-process upstream: the simulator, or the replay server.
    pub sim: SocketAddr,
    pub handle: DaemonHandle,
    /// Sends `Authorization: Bearer` for the [`OPS`] client (every scope).
    pub http: awc::Client,
    /// Sends no credential: the anonymous scopes.
    pub anonymous: awc::Client,
}

/// The operator client every test daemon has: `market`, `pin`, `admin` and `account:main`.
pub const OPS: &str = "ops";
pub const OPS_TOKEN: &str = "ops-key:ops-secret-123456";

/// The committed settings with every interval shortened for tests.
pub fn test_settings() -> Settings {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("settings.toml");
    let mut s = Settings::load_with_env(&path, HashMap::new()).expect("committed settings load");
    s.http.port = 0;
    s.http.workers = 1;
    s.http.shutdown_timeout_ms = 1000;
    s.simulator.port = 0;
    s.simulator.tick_ms = 20;
    // Tests inject news and orders themselves.
    s.simulator.news_interval_ms = 0;
    s.simulator.order_interval_ms = 0;
    s.trading.refresh_after_fill_ms = 50;
    s.upstream.backoff.initial_ms = 50;
    s.upstream.backoff.max_ms = 400;
    s.upstream.backoff.jitter = 0.1;
    s.upstream.backoff.reset_after_ms = 1000;
    s.upstream.ping_interval_ms = 300;
    s.upstream.pong_timeout_ms = 300;
    s.upstream.connect_timeout_ms = 2000;
    s.upstream.auth_timeout_ms = 2000;
    s.upstream.fatal_hold_off_ms = 600;
    s.upstream.connection_limit_hold_off_ms = 600;
    s.registry.unsubscribe_grace_ms = 300;
    s.session.heartbeat_interval_ms = 1000;
    s.session.client_timeout_ms = 10_000;
    s.clients.insert(
        OPS.into(),
        ClientSettings {
            key_id: "ops-key".into(),
            secret_env: None,
            scopes: Some(
                ["market", "pin", "admin", "account:main"]
                    .map(String::from)
                    .to_vec(),
            ),
            secret: Some(Secret::new("ops-secret-123456")),
        },
    );
    s
}

/// Starts a daemon on the test settings as changed by `customize`; waits until it is ready.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_unready(customize).await;
    app.wait_ready().await;
    app
}

/// Starts a daemon without waiting for readiness.
pub async fn spawn_unready(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    install_crypto_provider();
    let mut settings = test_settings();
    customize(&mut settings);
    let problems = settings.validate();
    assert!(problems.is_empty(), "test settings invalid: {problems:?}");
    let daemon = Daemon::build(settings).await.expect("daemon starts");
    let app = TestApp {
        addr: daemon.addr(),
        sim: match (daemon.simulator(), daemon.replay()) {
            (Some(sim), _) => sim.addr,
            (None, Some(replay)) => replay.addr,
            (None, None) => panic!("tests run on the simulator or a replay"),
        },
        handle: daemon.handle(),
        http: awc::Client::builder()
            .timeout(EVENT_TIMEOUT)
            .add_default_header(("Authorization", format!("Bearer {OPS_TOKEN}")))
            .finish(),
        anonymous: awc::Client::builder().timeout(EVENT_TIMEOUT).finish(),
    };
    actix_web::rt::spawn(daemon.run_until_stopped());
    app
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Polls `check` until it returns `Some`, failing the test after `EVENT_TIMEOUT`.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn sim_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sim)
    }

    /// `GET` returning (status, JSON body).
    pub async fn get(&self, url: &str) -> (u16, Value) {
        let mut resp = self.http.get(url).send().await.expect("GET");
        let body = resp.body().await.expect("body");
        (
            resp.status().as_u16(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    /// `POST`/`DELETE` a JSON body, returning (status, JSON body).
    pub async fn send_json(&self, method: &str, url: &str, body: &Value) -> (u16, Value) {
        let req = match method {
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        };
        let mut resp = req.send_json(body).await.expect("request");
        let bytes = resp.body().await.expect("body");
        (
            resp.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn status(&self) -> Value {
        self.get(&self.url("/api/v1/status")).await.1
    }

    pub async fn wait_ready(&self) {
        wait_for("readiness", || async {
            let (code, _) = self.get(&self.url("/readyz")).await;
            (code == 200).then_some(())
        })
        .await;
    }

    /// A simulator control command.
    pub async fn sim(&self, command: &str, body: Value) -> Value {
        let (code, reply) = self
            .send_json("POST", &self.sim_url(&format!("/control/{command}")), &body)
            .await;
        assert_eq!(code, 200, "simulator {command}: {reply}");
        reply
    }

    /// Injects quotes `(symbol, bid, ask)` in one frame; asserts a subscribed connection got them.
    pub async fn inject_quotes(&self, quotes: &[(&str, f64, f64)]) {
        let quotes: Vec<Value> = quotes
            .iter()
            .map(|(s, bp, ap)| json!({"symbol": s, "bp": bp, "ap": ap, "bs": 2, "as": 3}))
            .collect();
        let reply = self.sim("inject", json!({"quotes": quotes})).await;
        assert!(
            reply["connections"].as_u64() >= Some(1),
            "no upstream connection subscribed: {reply}"
        );
    }

    /// Waits until the simulator has `symbols` subscribed for quotes.
    pub async fn wait_upstream(&self, symbols: &[&str]) {
        wait_for("the upstream subscription", || async {
            let held = self.upstream_symbols("quotes").await;
            symbols
                .iter()
                .all(|s| held.iter().any(|h| h == s))
                .then_some(())
        })
        .await;
    }

    /// The simulator's connections and what each subscribed.
    pub async fn sim_connections(&self) -> Vec<Value> {
        let (_, v) = self.get(&self.sim_url("/control/connections")).await;
        v["connections"].as_array().cloned().unwrap_or_default()
    }

    /// Symbols some simulator connection subscribed to on `channel`.
    pub async fn upstream_symbols(&self, channel: &str) -> Vec<String> {
        self.upstream_symbols_of(None, channel).await
    }

    /// Symbols the simulator connection of `feed` (any when `None`) subscribed to on `channel`.
    pub async fn upstream_symbols_of(&self, feed: Option<&str>, channel: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .sim_connections()
            .await
            .iter()
            .filter(|c| feed.is_none_or(|f| c["feed"] == f))
            .flat_map(|c| {
                c["subscriptions"][channel]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub async fn feed_status(&self, feed: &str) -> Value {
        self.status().await["feeds"][feed].clone()
    }

    /// Opens `/ws` and reads the welcome.
    pub async fn ws(&self) -> WsClient {
        let url = format!("ws://{}/ws", self.addr);
        let (_, framed) = awc::Client::new()
            .ws(url)
            .connect()
            .await
            .expect("ws connect");
        let mut client = WsClient { framed };
        let welcome = client.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client
    }
}

/// A browser-protocol client.
pub struct WsClient {
    framed: Framed<BoxedSocket, Codec>,
}

/// What ended a WebSocket.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(Option<u16>),
    Eof,
}

impl WsClient {
    pub fn from_framed(framed: Framed<BoxedSocket, Codec>) -> Self {
        WsClient { framed }
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.framed
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.framed.send(msg).await.expect("ws send");
    }

    /// The next JSON text frame (pings answered, pongs skipped).
    pub async fn next_json(&mut self) -> Value {
        loop {
            let frame = actix_web::rt::time::timeout(EVENT_TIMEOUT, self.framed.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("protocol error");
            match frame {
                Frame::Text(b) => return serde_json::from_slice(&b).expect("JSON text frame"),
                Frame::Ping(p) => {
                    let _ = self.framed.send(Message::Pong(p)).await;
                }
                Frame::Close(reason) => panic!("closed unexpectedly: {reason:?}"),
                _ => {}
            }
        }
    }

    /// The first message of type `kind`, skipping others.
    pub async fn expect_type(&mut self, kind: &str) -> Value {
        self.expect(|m| m["type"] == kind).await
    }

    /// The first message matching `pred`, skipping others; fails after `EVENT_TIMEOUT` overall.
    pub async fn expect(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let search = async {
            let mut skipped = Vec::new();
            loop {
                let m = self.next_json().await;
                if pred(&m) {
                    return m;
                }
                skipped.push(m["type"].clone());
                if skipped.len() > 100_000 {
                    panic!("no matching message among {} (last: {m})", skipped.len());
                }
            }
        };
        actix_web::rt::time::timeout(EVENT_TIMEOUT, search)
            .await
            .expect("timed out waiting for a matching message")
    }

    /// Subscribes and returns the `subscribed` ack.
    pub async fn subscribe(&mut self, symbols: &[&str]) -> Value {
        self.send(json!({"action": "subscribe", "symbols": symbols}))
            .await;
        self.expect_type("subscribed").await
    }

    /// Reads until the connection ends, returning how (frames before the end are discarded).
    pub async fn until_end(&mut self) -> Ended {
        read_until_end(&mut self.framed).await
    }
}

/// Reads a client connection until it ends, returning how (frames before the end are discarded).
pub async fn read_until_end(framed: &mut Framed<BoxedSocket, Codec>) -> Ended {
    loop {
        match actix_web::rt::time::timeout(EVENT_TIMEOUT, framed.next())
            .await
            .expect("timed out waiting for the connection to end")
        {
            Some(Ok(Frame::Close(reason))) => return Ended::Closed(reason.map(|r| r.code.into())),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Ended::Eof,
        }
    }
}

/// A WebSocket client on a socket with a tiny receive buffer that can stop reading at will.
pub struct StallingClient {
    framed: Framed<tokio::net::TcpStream, Codec>,
}

impl StallingClient {
    pub async fn connect(addr: SocketAddr, recv_buffer: u32) -> Self {
        Self::connect_to(addr, recv_buffer, "/ws", "").await
    }

    /// Upgrades on `path`, with `headers` (each line ending in CRLF) added to the request.
    pub async fn connect_to(addr: SocketAddr, recv_buffer: u32, path: &str, headers: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(recv_buffer).unwrap();
        let mut stream = socket.connect(addr).await.expect("tcp connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // Read the response head byte by byte so no frame bytes are consumed with it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("handshake response"));
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        StallingClient {
            framed: Framed::new(stream, Codec::new().client_mode().max_size(1 << 20)),
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.framed
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("send");
    }

    /// Reads (resuming after a stall) until the connection ends; answers the last data message
    /// (text or binary) before the end, and how it ended.
    pub async fn last_message_before_end(&mut self) -> (Option<bytes::Bytes>, Ended) {
        let mut last = None;
        loop {
            match actix_web::rt::time::timeout(EVENT_TIMEOUT, self.framed.next())
                .await
                .expect("timed out draining the stalled client")
            {
                Some(Ok(Frame::Text(b) | Frame::Binary(b))) => last = Some(b),
                Some(Ok(Frame::Close(reason))) => {
                    return (last, Ended::Closed(reason.map(|r| r.code.into())))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (last, Ended::Eof),
            }
        }
    }

    /// Reads (resuming after a stall) price updates until `done` holds for the latest bid seen per
    /// symbol; answers how many frames that took.
    pub async fn read_updates_until(
        &mut self,
        done: impl Fn(&HashMap<String, f64>) -> bool,
    ) -> usize {
        let mut bids = HashMap::new();
        let mut frames = 0;
        while !done(&bids) {
            let frame = actix_web::rt::time::timeout(EVENT_TIMEOUT, self.framed.next())
                .await
                .expect("timed out reading the resumed client")
                .expect("connection ended")
                .expect("protocol error");
            if let Frame::Text(bytes) = frame {
                frames += 1;
                let v: Value = serde_json::from_slice(&bytes).expect("JSON frame");
                if v["type"] == "spot_price_update" {
                    let u = &v["update"];
                    bids.insert(
                        u["symbol"].as_str().unwrap_or_default().to_owned(),
                        u["bid_price"].as_f64().unwrap_or_default(),
                    );
                }
            }
        }
        frames
    }

    /// Reads (resuming after a stall) until the connection ends; counts the text frames seen.
    pub async fn drain_until_end(&mut self) -> (usize, Ended) {
        let mut texts = 0;
        loop {
            match actix_web::rt::time::timeout(EVENT_TIMEOUT, self.framed.next())
                .await
                .expect("timed out draining the stalled client")
            {
                Some(Ok(Frame::Text(_))) => texts += 1,
                Some(Ok(Frame::Close(reason))) => {
                    return (texts, Ended::Closed(reason.map(|r| r.code.into())))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (texts, Ended::Eof),
            }
        }
    }
}

#[path = "../support/provide.rs"]
mod support;
pub use support::provide;

/// The `tickrelay` binary, run from the project root with no Alpaca credentials.
pub fn tickrelay() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tickrelay"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("APCA_API_KEY_ID")
        .env_remove("APCA_API_SECRET_KEY")
        .env("RUST_LOG", "info");
    cmd
}

/// A running `tickrelay` process and its log lines.
pub struct Process {
    /// `None` once waited for.
    child: Option<std::process::Child>,
    pub logs: std::sync::mpsc::Receiver<String>,
}

impl Process {
    /// Starts `cmd` with stderr captured.
    pub fn start(mut cmd: std::process::Command) -> Process {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tickrelay starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, logs) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Process {
            child: Some(child),
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Waits for the process to exit (on its own thread, so nothing polls), failing the test
    /// (and killing the process) after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("the process was already waited for");
        let pid = child.id().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(limit) {
            Ok(status) => status.expect("wait for tickrelay"),
            Err(_) => {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
                panic!("tickrelay did not exit within {limit:?}");
            }
        }
    }

    /// The address logged after `marker` (`listening on http://`, `streams on ws://`).
    pub fn address_after(&self, marker: &str) -> String {
        loop {
            let line = self
                .logs
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line with {marker:?}"));
            if let Some(rest) = line.split(marker).nth(1) {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
