//! systemd: the unit file passes `systemd-analyze verify`, and the real binary speaks the
//! notification protocol on `NOTIFY_SOCKET` (ready after HTTP answers, watchdog pings, stopping).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::{provide, tickrelay, Process};

/// The next notification, failing the test after `limit`.
fn next(socket: &UnixDatagram, limit: Duration) -> String {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[actix_web::test]
async fn ready_after_http_answers_then_watchdog_pings_then_stopping() {
    let dir = std::env::temp_dir().join(format!("tickrelay-sd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();

    let mut cmd = tickrelay();
    cmd.env("TICKRELAY__HTTP__PORT", "0")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Process::start(cmd);
    let addr = daemon.address_after("listening on http://");

    assert_eq!(next(&socket, Duration::from_secs(20)), "READY=1");
    // Ready means HTTP answers now.
    let res = awc::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("/healthz answers once READY=1 is sent");
    assert_eq!(res.status().as_u16(), 200);

    // The watchdog hears from the actor system at half the interval (200 ms).
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(next(&socket, Duration::from_secs(5)), "WATCHDOG=1");
    }
    assert!(start.elapsed() < Duration::from_secs(5));

    Command::new("kill")
        .args(["-TERM", &daemon.pid().to_string()])
        .status()
        .unwrap();
    loop {
        let m = next(&socket, Duration::from_secs(5));
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1", "unexpected notification");
    }
    assert!(daemon.wait_exit(Duration::from_secs(15)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = provide("systemd", "systemd");
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let unit = std::fs::read_to_string(repo.join("contrib/tickrelay.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let unit = unit.replace("/usr/local/bin/tickrelay", env!("CARGO_BIN_EXE_tickrelay"));
    let dir = std::env::temp_dir().join(format!("tickrelay-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tickrelay.service");
    std::fs::write(&file, unit).unwrap();
    let out = Command::new(cache.join("bin/systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify:\n{stderr}");
    // Warnings about the unit itself (not the machine it runs on) would show its name.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tickrelay.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify warned:\n{stderr}");
}
