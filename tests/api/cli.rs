//! The binary's other commands: the standalone simulator and settings validation.

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
