//! The upstream is always drained: a flood at a fixed rate is read in full while clients stall,
//! and the daemon's memory stays bounded. Driven by the load harness (`tickrelay-bench`), whose
//! flood upstream writes to a non-blocking socket and counts every message the socket would not
//! take — with Alpaca, such pushback ends in `407 slow client` for everyone.

use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs the harness against the real daemon binary; answers its JSON line.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_tickrelay-bench"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--daemon")
        .arg(env!("CARGO_BIN_EXE_tickrelay"))
        .args(["--config", "settings.toml"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("the harness runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "harness failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

#[test]
fn a_flood_is_read_in_full_while_clients_stall_and_memory_stays_bounded() {
    // 5,000 quotes/s over 20 symbols (debug builds run this in CI), 4 clients reading and 4 that
    // subscribe to everything and never read a byte.
    let r = bench(&[
        "--rate",
        "5000",
        "--symbols",
        "20",
        "--symbols-per-client",
        "20",
        "--clients",
        "4",
        "--stall-clients",
        "4",
        "--throttle-ms",
        "50",
        "--warmup-secs",
        "1",
        "--secs",
        "4",
        // Small kernel buffers, so the stalled sockets fill within a second.
        "--env",
        "TICKRELAY__SESSION__SOCKET_SEND_BUFFER_BYTES=8192",
    ]);
    assert_eq!(r["stall_clients_acked"], 4, "{r}");
    assert_eq!(
        r["flood_pushback_msgs"], 0,
        "the upstream socket pushed back: {r}"
    );
    let ingest = r["ingest_msgs_per_sec"].as_f64().unwrap();
    assert!(
        ingest > 4000.0,
        "ingest {ingest} msg/s of 5000 offered: {r}"
    );
    // The readers kept getting updates, and never more than one per symbol per 50 ms window:
    // over the window that is at most (secs / 0.05 + 1) per symbol, 405/s for 20 symbols in 4 s.
    // (A throttle that let a second update through per window gave about twice that.)
    let slowest = r["client_updates_per_sec_min"].as_f64().unwrap();
    assert!(
        slowest > 100.0,
        "a reading client got {slowest} updates/s: {r}"
    );
    let secs = r["window_secs"].as_f64().unwrap();
    let bound = (secs / 0.05 + 1.0) * 20.0 / secs;
    let fastest = r["client_updates_per_sec_max"].as_f64().unwrap();
    assert!(
        fastest <= bound * 1.03,
        "a client got {fastest} updates/s; the window allows {bound:.0}: {r}"
    );
    // The stalled sessions fell behind: newer values replaced their unsent ones ...
    assert!(r["daemon_dropped_updates"].as_u64().unwrap() > 0, "{r}");
    // ... so they hold at most a frame per symbol each, not a backlog.
    let rss_kb = r["rss_kb_end"].as_f64().unwrap();
    assert!(rss_kb < 100.0 * 1024.0, "RSS {rss_kb} KB: {r}");
}
