//! The recorder against the real binary: every upstream frame and the account's trade updates go
//! to segment files that rotate, that `kill -9` leaves readable, and that `tickrelay record cat`
//! prints.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{tickrelay, wait_for, Process};

fn record_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("records-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The daemon's command, recording into a fresh directory named after `name`.
fn recording(name: &str) -> (PathBuf, Command) {
    let dir = record_dir(name);
    let mut cmd = tickrelay();
    cmd.env("TICKRELAY__HTTP__PORT", "0")
        .env("TICKRELAY__RECORDER__ENABLED", "true")
        .env("TICKRELAY__RECORDER__DIR", &dir);
    (dir, cmd)
}

/// A browser subscribed to `symbols`: it makes their feeds stream.
async fn browser(addr: &str, symbols: &[&str]) -> crate::helpers::WsClient {
    let (_, framed) = awc::Client::new()
        .ws(format!("ws://{addr}/ws"))
        .connect()
        .await
        .unwrap();
    let mut browser = crate::helpers::WsClient::from_framed(framed);
    browser.subscribe(symbols).await;
    browser
}

fn segments(dir: &PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.to_string_lossy().ends_with(".rec.zst"));
    files.sort();
    files
}

/// The `recorder` part of the daemon's status.
async fn recorder_status(addr: &str) -> Option<Value> {
    let mut resp = awc::Client::new()
        .get(format!("http://{addr}/api/v1/status"))
        .send()
        .await
        .ok()?;
    let status: Value = resp.json().limit(1 << 22).await.ok()?;
    Some(status["recorder"].clone())
}

/// `tickrelay record cat` over `files` (with `args`): its JSON lines and its stderr.
fn cat(files: &[PathBuf], args: &[&str]) -> (Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tickrelay"))
        .arg("record")
        .arg("cat")
        .args(files)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A daemon recording into `dir`, rotating every 4 KB: every feed's frames and the account's
/// trade updates land in segments; after `kill -9` every segment reads back (the last up to its
/// last complete record) and `record cat` prints frames of every source, the header and the
/// accounts' snapshot, and filters by feed and symbol.
#[actix_web::test]
async fn recorded_segments_survive_kill_9_and_read_back() {
    let (dir, mut cmd) = recording("kill9");
    cmd.env("TICKRELAY__RECORDER__SEGMENT_BYTES", "4096");
    let mut daemon = Process::start(cmd);
    let sim = daemon.address_after("streams on ws://");
    let addr = daemon.address_after("listening on http://");
    let http = awc::Client::new();
    // Browsers make the feeds stream; an order makes trade updates.
    let mut browser = browser(&addr, &["AAPL", "BTC/USD"]).await;
    browser.expect_type("spot_price_update").await;
    let order = json!({"symbol": "AAPL", "qty": 3, "side": "buy", "price": 190.0});
    let placed = http
        .post(format!("http://{sim}/control/order"))
        .send_json(&order)
        .await
        .unwrap();
    assert!(placed.status().is_success());
    wait_for("a few segments recorded", || async {
        let r = recorder_status(&addr).await?;
        (r["segments"].as_u64() >= Some(3) && r["frames"].as_u64() >= Some(100)).then_some(())
    })
    .await;
    let before = recorder_status(&addr).await.unwrap();
    assert_eq!(before["state"], "recording", "{before}");
    assert_eq!(before["dropped"], 0, "{before}");

    let killed = Command::new("kill")
        .args(["-KILL", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    daemon.wait_exit(Duration::from_secs(10));

    let files = segments(&dir);
    assert!(files.len() >= 3, "{files:?}");
    let (lines, notes) = cat(&files, &[]);
    let kinds = |k: &str| lines.iter().filter(|l| l["kind"] == k).count();
    assert_eq!(
        kinds("header"),
        files.len(),
        "one header per segment; {notes}"
    );
    // One snapshot of every account per segment, and one per account after each reload.
    let segment_snapshots = lines
        .iter()
        .filter(|l| l["kind"] == "snapshot" && l["source"].as_str().unwrap_or_default().is_empty())
        .count();
    assert_eq!(segment_snapshots, files.len());
    let sources: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l["source"].as_str()).collect();
    for source in ["stocks", "crypto", "trading:main"] {
        assert!(sources.contains(source), "{source} in {sources:?}");
    }
    assert!(kinds("frame") as u64 >= before["frames"].as_u64().unwrap() / 2);
    let fill = lines.iter().any(|l| {
        l["source"] == "trading:main" && l["frame"]["data"]["event"].as_str() == Some("fill")
    });
    assert!(fill, "the account's fill was recorded as Alpaca sent it");
    // Each source's frames are in the order they were received.
    for source in &sources {
        let times: Vec<u64> = lines
            .iter()
            .filter(|l| l["source"] == *source && l["kind"] == "frame")
            .filter_map(|l| l["t_ns"].as_u64())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{source}");
    }

    let (aapl, _) = cat(&files, &["--feed", "stocks", "--symbol", "aapl"]);
    assert!(!aapl.is_empty());
    assert!(aapl.iter().all(|l| l["source"] == "stocks"
        && l["frame"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["S"] == "AAPL")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full disk (here a 4 KB file-size limit on the daemon, as `ulimit -f` sets it) stops the
/// recorder with the reason in the status; the daemon serves on, and what it had recorded
/// reads back.
#[actix_web::test]
async fn a_full_disk_stops_the_recorder_and_the_daemon_serves_on() {
    use std::os::unix::process::CommandExt;
    let (dir, mut cmd) = recording("full");
    // SAFETY: only async-signal-safe calls between fork and exec. An ignored SIGXFSZ stays
    // ignored across exec, so a write past the limit fails with EFBIG instead of killing.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let daemon = Process::start(cmd);
    let addr = daemon.address_after("listening on http://");
    let mut browser = browser(&addr, &["AAPL", "MSFT", "BTC/USD", "ETH/USD"]).await;
    let stopped = wait_for("the recorder stopped", || async {
        let r = recorder_status(&addr).await?;
        (r["state"] == "stopped").then_some(r)
    })
    .await;
    assert!(
        stopped["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("large"),
        "{stopped}"
    );
    // Served on: prices keep coming after the stop.
    for _ in 0..3 {
        browser.expect_type("spot_price_update").await;
    }
    let (lines, _) = cat(&segments(&dir), &[]);
    assert!(lines.iter().any(|l| l["kind"] == "frame"));
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A clean stop writes what the recorder holds: with a flush interval of a minute nothing is
/// written while the daemon runs, and after SIGTERM every frame it had recorded is on disk.
#[actix_web::test]
async fn sigterm_writes_what_the_recorder_holds() {
    let (dir, mut cmd) = recording("sigterm");
    cmd.env("TICKRELAY__RECORDER__FLUSH_MS", "60000");
    let mut daemon = Process::start(cmd);
    let addr = daemon.address_after("listening on http://");
    let _browser = browser(&addr, &["AAPL", "BTC/USD"]).await;
    let recorded = wait_for("frames handed to the recorder", || async {
        let frames = recorder_status(&addr).await?["frames"].as_u64()?;
        (frames >= 20).then_some(frames)
    })
    .await;
    assert!(segments(&dir).is_empty(), "nothing written yet");
    let term = Command::new("kill")
        .args(["-TERM", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(daemon.wait_exit(Duration::from_secs(15)).success());
    let (lines, notes) = cat(&segments(&dir), &[]);
    let frames = lines.iter().filter(|l| l["kind"] == "frame").count() as u64;
    assert!(
        frames >= recorded,
        "{frames} of {recorded} written; {notes}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
