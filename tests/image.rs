//! The container image, built from the committed Dockerfile and run by a real OCI engine (Debian's
//! podman with runc; `tests/image/setup.sh` provides it and the base images, cached under
//! `target/image`): it builds, keeps its HEALTHCHECK, runs as a user other than root, takes its
//! settings from the environment alone, reports healthy, serves prices to a browser client on its
//! port, and stops with exit status 0 on SIGTERM, within the stop deadline. Its size and start-up
//! time are printed (`cargo test --test image -- --nocapture`).
//!
//! A test binary of its own: the build takes minutes of both cores, so it runs after the other
//! tests rather than beside them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

#[path = "support/provide.rs"]
mod support;

const IMAGE: &str = "localhost/tickrelay:test";
/// The build stage, kept as the next build's cache.
const BUILD_CACHE: &str = "localhost/tickrelay-build:cache";
/// The image must stay small: a minimal Debian and one binary.
const MAX_IMAGE_BYTES: u64 = 250_000_000;
/// `http.shutdown_timeout_ms` (3 s by default) + 5 s: past it the daemon exits 1.
const STOP_DEADLINE: Duration = Duration::from_secs(8);
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/image/setup.sh`: podman (a wrapper with its storage under `target/image`) and
/// the base images.
fn podman_path() -> PathBuf {
    support::provide("image", "image").join("bin/podman")
}

struct Podman(PathBuf);

impl Podman {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.0)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("podman {args:?}: {e}"))
    }

    /// Runs podman; its standard output, trimmed, or the failure with both outputs.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The container, removed however the test ends.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .run(&["rm", "--force", "--time", "0", &self.name]);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `check` to answer, polling every 100 ms (nothing here can be awaited as an event:
/// the container is another process tree).
fn poll<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

type Socket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// The next text message.
async fn next_json(ws: &mut Socket) -> Value {
    loop {
        let frame = actix_web::rt::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("a message in time")
            .expect("the connection stays open")
            .expect("a valid frame");
        if let awc::ws::Frame::Text(text) = frame {
            return serde_json::from_slice(&text).expect("JSON");
        }
    }
}

/// A browser client on `/ws`: the welcome, then a price for AAPL.
async fn browser_gets_a_price(port: u16) -> Value {
    let (_, mut ws) = awc::Client::new()
        .ws(format!("ws://127.0.0.1:{port}/ws"))
        .connect()
        .await
        .expect("the WebSocket upgrade");
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["provider"], "simulator", "{welcome}");
    let subscribe = json!({"action": "subscribe", "symbols": ["AAPL"]}).to_string();
    ws.send(awc::ws::Message::Text(subscribe.into()))
        .await
        .unwrap();
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "spot_price_update" {
            return m["update"].clone();
        }
    }
}

/// The daemon's status, once its recorder has written a segment.
async fn status_once_recorded(port: u16) -> Value {
    let client = awc::Client::new();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let mut resp = client
            .get(format!("http://127.0.0.1:{port}/api/v1/status"))
            .send()
            .await
            .expect("the status");
        let status: Value = resp.json().limit(1 << 22).await.expect("JSON");
        if status["recorder"]["segments"].as_u64() > Some(0) || Instant::now() > deadline {
            return status;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_image_builds_runs_as_a_user_and_serves_a_browser_then_stops_on_sigterm() {
    if std::env::var_os("TICKRELAY_SKIP_IMAGE_TESTS").is_some() {
        eprintln!("image: skipped (TICKRELAY_SKIP_IMAGE_TESTS is set)");
        return;
    }
    let podman = Podman(podman_path());

    let started = Instant::now();
    let context = repo().display().to_string();
    let build = |target: &[&str], tag: &str| {
        let mut args = vec![
            "build",
            "--isolation=chroot",
            "--network=host",
            "--pull=never",
            // Cargo inside the build reaches the registry through this machine's trust store.
            "--volume=/etc/ssl/certs:/etc/ssl/certs:ro",
            // Docker's format keeps the HEALTHCHECK (OCI's has none).
            "--format=docker",
        ];
        args.extend_from_slice(target);
        args.extend_from_slice(&["--tag", tag, &context]);
        podman.ok(&args);
    };
    build(&[], IMAGE);
    eprintln!("image: built in {:.0?}", started.elapsed());
    // The build stage, tagged (from the cache, in seconds) so that its layers — the compiled
    // dependencies above all — stay for the next build, and the previous one's go.
    build(&["--target", "build"], BUILD_CACHE);
    podman.ok(&["image", "prune", "--force"]);

    let inspect: Value = serde_json::from_str(&podman.ok(&["image", "inspect", IMAGE])).unwrap();
    let image = &inspect[0];
    let size = image["Size"].as_u64().unwrap();
    eprintln!("image: {:.1} MB", size as f64 / 1e6);
    assert!(size < MAX_IMAGE_BYTES, "the image grew to {size} bytes");
    assert_eq!(image["Config"]["User"], "10001:10001", "{image}");
    let healthcheck = image["Healthcheck"]["Test"].to_string();
    assert!(healthcheck.contains("\"healthcheck\""), "{image}");

    // `docker run -p` with environment settings only: the host's network, so the port the daemon
    // listens on is the one a browser reaches.
    let port = free_port();
    let name = format!("tickrelay-image-test-{}", std::process::id());
    let container = Container {
        podman: &podman,
        name: name.clone(),
    };
    let _ = podman.run(&["rm", "--force", "--volumes", &name]);
    let started = Instant::now();
    podman.ok(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--runtime=runc",
        "--network=host",
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=4096:4096",
        "--env",
        &format!("TICKRELAY__HTTP__PORT={port}"),
        // The recorder writes in the image's working directory, a volume the user owns.
        "--env=TICKRELAY__RECORDER__ENABLED=true",
        IMAGE,
    ]);
    poll("the container to report healthy", EVENT_TIMEOUT, || {
        podman
            .run(&["healthcheck", "run", &name])
            .status
            .success()
            .then_some(())
    });
    eprintln!("image: healthy {:.0?} after podman run", started.elapsed());
    let uid = podman.ok(&["exec", &name, "id", "-u"]);
    assert_ne!(uid, "0", "the daemon runs as root");
    assert_eq!(uid, "10001");
    let user = podman.ok(&["top", &name, "user"]);
    assert!(!user.lines().skip(1).any(|u| u.trim() == "root"), "{user}");

    let (price, status) = actix_web::rt::System::new().block_on(async {
        let price = browser_gets_a_price(port).await;
        (price, status_once_recorded(port).await)
    });
    assert!(
        price["bid_price"].as_f64().is_some_and(|b| b > 0.0),
        "{price}"
    );
    assert_eq!(status["provider"], "simulator");
    let recorder = &status["recorder"];
    assert_eq!(recorder["state"], "recording", "{recorder}");
    assert!(recorder["segments"].as_u64() > Some(0), "{recorder}");

    let stopping = Instant::now();
    podman.ok(&["kill", "--signal", "TERM", &name]);
    let code = podman.ok(&["wait", &name]);
    let took = stopping.elapsed();
    eprintln!("image: stopped in {took:.2?} on SIGTERM, exit status {code}");
    assert_eq!(code, "0", "{}", podman.ok(&["logs", &name]));
    assert!(took < STOP_DEADLINE, "{took:?}");
    drop(container);
}
