//! The binary's other commands (the standalone simulator, settings validation) and its log format.

use std::time::Duration;

use actix_http::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::helpers::{tickrelay, Process};

async fn next_array(framed: &mut actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>) -> Value {
    loop {
        let frame = actix_web::rt::time::timeout(Duration::from_secs(10), framed.next())
            .await
            .expect("timed out")
            .expect("ended")
            .expect("protocol error");
        if let Frame::Text(b) = frame {
            return serde_json::from_slice(&b).unwrap();
        }
    }
}

#[actix_web::test]
async fn simulate_runs_the_simulator_alone() {
    let mut cmd = tickrelay();
    cmd.args(["simulate", "--port", "0"]);
    let sim = Process::start(cmd);
    let addr = sim.address_after("streams on ws://");
    let (_, mut framed) = awc::Client::new()
        .ws(format!("ws://{addr}/v2/iex"))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        next_array(&mut framed).await,
        json!([{"T":"success","msg":"connected"}])
    );
    let auth = json!({"action":"auth","key":"k","secret":"s"}).to_string();
    framed.send(Message::Text(auth.into())).await.unwrap();
    assert_eq!(
        next_array(&mut framed).await,
        json!([{"T":"success","msg":"authenticated"}])
    );
    let sub = json!({"action":"subscribe","quotes":["IBM"],"trades":[]}).to_string();
    framed.send(Message::Text(sub.into())).await.unwrap();
    let ack = next_array(&mut framed).await;
    assert_eq!(ack[0]["T"], "subscription");
    assert_eq!(ack[0]["quotes"], json!(["IBM"]));
    assert_eq!(ack[0]["trades"], json!([]));
    assert_eq!(ack[0]["bars"], json!([]), "every channel key is listed");
    let data = next_array(&mut framed).await;
    assert_eq!(data[0]["T"], "q");
    assert_eq!(data[0]["S"], "IBM");
    drop(sim);
}

#[test]
fn check_config_accepts_the_committed_settings() {
    let out = tickrelay().arg("check-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("settings are valid"));
}

#[test]
fn check_config_prints_the_effective_settings_without_secrets() {
    let out = tickrelay()
        .arg("check-config")
        .env("TICKRELAY__HTTP__PORT", "9123")
        .env(
            "TICKRELAY__REDIS__URL",
            "rediss://:hunter2-redis@10.0.0.7:6379/0",
        )
        .env("TICKRELAY_REDIS_PASSWORD", "redis-pw-from-env")
        .env("TICKRELAY__CLIENTS__ALGO__KEY_ID", "algo-key")
        .env("TICKRELAY_CLIENT_SECRET_ALGO", "s3cret-value-of-algo")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The printed settings are TOML that reads back, with the environment applied.
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let parsed: toml::Table = body.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed["http"]["port"].as_integer(), Some(9123), "{text}");
    assert_eq!(
        parsed["clients"]["algo"]["key_id"].as_str(),
        Some("algo-key")
    );
    assert_eq!(
        parsed["redis"]["url"].as_str(),
        Some("rediss://<redacted>@10.0.0.7:6379/0")
    );
    for secret in ["hunter2-redis", "s3cret-value-of-algo", "redis-pw-from-env"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(
        text.contains("client algo (TICKRELAY_CLIENT_SECRET_ALGO): set"),
        "{text}"
    );
    assert!(
        text.contains("redis password (TICKRELAY_REDIS_PASSWORD): set"),
        "{text}"
    );
}

#[test]
fn bad_settings_name_the_key_and_exit_2() {
    let out = tickrelay()
        .arg("check-config")
        .env("TICKRELAY__UPSTREAM__BACKOFF__JITTER", "3")
        .env("TICKRELAY__SESSION__MAX_SYMBOLS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstream.backoff.jitter") && err.contains("session.max_symbols"),
        "{err}"
    );
}

#[test]
fn the_alpaca_provider_without_credentials_refuses_to_start() {
    let out = tickrelay()
        .env("TICKRELAY__UPSTREAM__PROVIDER", "alpaca")
        .env("TICKRELAY__HTTP__PORT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("APCA_API_KEY_ID") && err.contains("APCA_API_SECRET_KEY"),
        "{err}"
    );
    assert!(!err.contains("listening"), "it must not start: {err}");
}

#[test]
fn a_missing_settings_file_is_a_clear_error() {
    let out = tickrelay()
        .args(["--config", "/nonexistent/settings.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/settings.toml"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut cmd = tickrelay();
    cmd.env("TICKRELAY__HTTP__PORT", "0")
        .env("TICKRELAY__LOGGING__FORMAT", "json");
    let daemon = Process::start(cmd);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("listening on http://"))
    {
        let line = daemon
            .logs
            .recv_timeout(Duration::from_secs(20))
            .expect("log lines");
        lines.push(line);
    }
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&v["level"].as_str().unwrap()));
        assert!(v["target"].is_string() && v["msg"].is_string(), "{line}");
    }
}
