//! The daemon under test: spawning it pointed at the flood, finding its port in its log, waiting
//! until it is ready, reading its counters (`/api/v1/status`) and its CPU time and memory
//! (/proc), and stopping it — SIGTERM, then SIGKILL — on every way out, panics included.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use log::{info, warn};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::http;
use crate::sys;

/// How long the daemon may take to log its listening address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one probe request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// `/api/v1/status` lists every session, so with thousands of clients it is slow.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(10);
/// Log lines kept for error reports.
const KEPT_LINES: usize = 40;
/// Daemon warnings and errors echoed to our stderr (the rest are only counted).
const ECHOED_WARNINGS: u64 = 20;

/// How to start the daemon.
#[derive(Clone, Debug)]
pub struct SpawnOptions {
    pub binary: PathBuf,
    pub config: PathBuf,
    /// Environment overrides, applied in order.
    pub env: Vec<(String, String)>,
}

/// The daemon's log lines, kept for error reports, and its warning count.
#[derive(Debug, Default)]
struct DaemonLog {
    tail: Mutex<VecDeque<String>>,
    warnings: AtomicU64,
    /// Lines reporting a panic (`panicked at`), in any thread.
    panics: AtomicU64,
}

/// A daemon: spawned (and stopped when this is dropped) or already running.
pub struct Daemon {
    /// `host:port` of its HTTP listener.
    pub addr: String,
    pub pid: Option<u32>,
    child: Option<Child>,
    log: Arc<DaemonLog>,
}

/// The counters read from `/api/v1/status` (each `None` when the daemon does not report it).
#[derive(Clone, Debug, Default)]
pub struct DaemonStatus {
    /// Upstream messages received, summed over feeds.
    pub messages_received: Option<u64>,
    /// Market events the daemon could not hand on, summed over feeds.
    pub events_dropped: Option<u64>,
    /// Market events that replaced an undrained older value (conflated at ingest).
    pub events_conflated: Option<u64>,
    pub dropped_updates: Option<u64>,
    pub mailbox_drops: Option<u64>,
    pub sessions: Option<u64>,
    /// Prices the Redis sink wrote, and replaced before writing (when Redis is configured).
    pub redis_written: Option<u64>,
    pub redis_replaced: Option<u64>,
}

impl Daemon {
    /// Starts the daemon and waits for it to log where it listens.
    pub async fn spawn(options: &SpawnOptions) -> anyhow::Result<Daemon> {
        if !options.binary.is_file() {
            bail!(
                "daemon binary {} not found: build it (cargo build --release --bin tickrelay) or \
                 pass --daemon PATH",
                options.binary.display()
            );
        }
        if !options.config.is_file() {
            bail!(
                "settings file {} not found: pass --config <repo>/settings.toml",
                options.config.display()
            );
        }
        let mut command = Command::new(&options.binary);
        command
            .arg("--config")
            .arg(&options.config)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the hook makes one async-signal-safe system call (prctl) in the forked child.
        unsafe {
            command.pre_exec(sys::die_with_parent);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", options.binary.display()))?;
        let pid = child.id();
        info!("daemon: started {} (pid {pid})", options.binary.display());
        let stderr = child
            .stderr
            .take()
            .context("the daemon's stderr is not piped")?;
        let log = Arc::new(DaemonLog::default());
        let (addr_tx, addr_rx) = oneshot::channel();
        let drain_log = log.clone();
        // From here on, dropping `daemon` stops the child, whatever fails.
        let mut daemon = Daemon {
            addr: String::new(),
            pid: Some(pid),
            child: Some(child),
            log,
        };
        std::thread::Builder::new()
            .name("daemon-stderr".into())
            .spawn(move || drain_stderr(stderr, &drain_log, addr_tx))
            .context("starting the daemon log reader")?;
        daemon.addr = match tokio::time::timeout(LISTEN_TIMEOUT, addr_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                // The log ended: the daemon is exiting. Give it a moment to be reaped.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let exit = daemon
                    .exit_status()
                    .unwrap_or_else(|| "still running".into());
                bail!(
                    "the daemon exited before listening ({exit}){}",
                    daemon.log_tail()
                );
            }
            Err(_) => bail!(
                "the daemon did not log `listening on http://…` within {LISTEN_TIMEOUT:?}{}",
                daemon.log_tail()
            ),
        };
        Ok(daemon)
    }

    /// A daemon started by someone else, at `url` (`http://host:port`).
    pub fn external(url: &str, pid: Option<u32>) -> anyhow::Result<Daemon> {
        let addr = url
            .strip_prefix("http://")
            .with_context(|| format!("--url must look like http://host:port, not {url:?}"))?
            .trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') {
            bail!("--url must look like http://host:port, not {url:?}");
        }
        Ok(Daemon {
            addr: addr.to_string(),
            pid,
            child: None,
            log: Arc::default(),
        })
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.exit_status() {
                bail!(
                    "the daemon exited ({exit}) before it was ready{}",
                    self.log_tail()
                );
            }
            let last = match http::get(&self.addr, "/readyz", PROBE_TIMEOUT).await {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("{code} {}", body.trim()),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "the daemon was not ready within {timeout:?}; /readyz said: {last}{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The counters of `GET /api/v1/status`.
    pub async fn status(&self) -> anyhow::Result<DaemonStatus> {
        let (code, body) = http::get(&self.addr, "/api/v1/status", STATUS_TIMEOUT).await?;
        if code != 200 {
            bail!("/api/v1/status answered {code}: {}", body.trim());
        }
        let status: Value = serde_json::from_str(&body).context("/api/v1/status is not JSON")?;
        Ok(DaemonStatus::from_json(&status))
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_secs(&self) -> Option<f64> {
        sys::cpu_secs(&self.pid?.to_string())
    }

    /// Resident memory (VmRSS) in KB.
    pub fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Warnings and errors the daemon has logged.
    pub fn warnings(&self) -> u64 {
        self.log.warnings.load(Ordering::Relaxed)
    }

    /// Panics the daemon has reported on its stderr.
    pub fn panics(&self) -> u64 {
        self.log.panics.load(Ordering::Relaxed)
    }

    /// `Some(description)` once a spawned daemon has exited.
    pub fn exit_status(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown: {e}")),
        }
    }

    /// The last log lines, for error messages.
    pub fn log_tail(&self) -> String {
        let tail = match self.log.tail.lock() {
            Ok(tail) if !tail.is_empty() => tail.iter().cloned().collect::<Vec<_>>().join("\n"),
            _ => return String::new(),
        };
        format!("\n--- the daemon's last log lines ---\n{tail}")
    }

    /// Stops a spawned daemon: SIGTERM, then SIGKILL after a grace period.
    pub fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if let Err(e) = sys::send_signal(child.id(), sys::SIGTERM) {
            warn!("daemon: SIGTERM failed: {e}");
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return info!("daemon: exited ({status})"),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        warn!("daemon: still running {TERM_GRACE:?} after SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl DaemonStatus {
    fn from_json(status: &Value) -> DaemonStatus {
        // `feeds` is a map by feed name today; accept a list too.
        let feeds: Vec<&Value> = match status.get("feeds") {
            Some(Value::Object(map)) => map.values().collect(),
            Some(Value::Array(list)) => list.iter().collect(),
            _ => Vec::new(),
        };
        let sum = |key: &str| {
            let values: Vec<u64> = feeds.iter().filter_map(|f| f.get(key)?.as_u64()).collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        let sessions = status.get("sessions");
        let session_field = |key: &str| sessions.and_then(|s| s.get(key)).and_then(Value::as_u64);
        DaemonStatus {
            messages_received: sum("messages_received"),
            events_dropped: sum("events_dropped"),
            events_conflated: sum("events_conflated"),
            dropped_updates: session_field("dropped_updates"),
            // Older daemons counted per-session mailbox drops; newer ones per-worker hub drops.
            mailbox_drops: session_field("hub_mailbox_drops")
                .or_else(|| session_field("mailbox_drops")),
            sessions: session_field("count"),
            redis_written: status.pointer("/redis/written").and_then(Value::as_u64),
            redis_replaced: status.pointer("/redis/replaced").and_then(Value::as_u64),
        }
    }
}

/// Reads the daemon's stderr to the end: reports the listening address once, keeps the last
/// lines, counts (and echoes the first few) warnings. Never stops reading, so the daemon can
/// never block on a full pipe.
fn drain_stderr(stderr: ChildStderr, log: &DaemonLog, addr_tx: oneshot::Sender<String>) {
    let mut addr_tx = Some(addr_tx);
    let mut reader = BufReader::new(stderr);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&bytes).trim_end().to_string();
        if let Some(addr) = addr_tx.is_some().then(|| listening_addr(&line)).flatten() {
            if let Some(tx) = addr_tx.take() {
                let _ = tx.send(addr);
            }
        }
        if line.contains("panicked at") {
            log.panics.fetch_add(1, Ordering::Relaxed);
            warn!("daemon: {line}");
        }
        if line.contains(" WARN ") || line.contains(" ERROR ") {
            let n = log.warnings.fetch_add(1, Ordering::Relaxed) + 1;
            if n <= ECHOED_WARNINGS {
                warn!("daemon: {line}");
            } else if n == ECHOED_WARNINGS + 1 {
                warn!("daemon: (further warnings are only counted)");
            }
        }
        if let Ok(mut tail) = log.tail.lock() {
            if tail.len() == KEPT_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

/// `host:port` from a line containing `listening on http://host:port`.
fn listening_addr(line: &str) -> Option<String> {
    const MARK: &str = "listening on http://";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '/')
        .unwrap_or(rest.len());
    let addr = &rest[..end];
    // A wildcard listener is reachable on loopback.
    Some(match addr.strip_prefix("0.0.0.0:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => addr.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_address() {
        let line = "[2026-01-20T15:04:05Z INFO  tickrelay::startup] tickrelay 0.1.0: listening on \
                    http://127.0.0.1:41234 (provider: alpaca)";
        assert_eq!(listening_addr(line).as_deref(), Some("127.0.0.1:41234"));
        assert_eq!(
            listening_addr("listening on http://0.0.0.0:80/").as_deref(),
            Some("127.0.0.1:80")
        );
        assert_eq!(listening_addr("starting"), None);
    }

    #[test]
    fn sums_feed_counters_from_a_map_or_a_list() {
        let map = serde_json::json!({
            "feeds": {"stocks": {"messages_received": 5, "events_dropped": 1},
                      "crypto": {"messages_received": 7}},
            "sessions": {"count": 3, "dropped_updates": 2, "mailbox_drops": 0}
        });
        let s = DaemonStatus::from_json(&map);
        assert_eq!(s.messages_received, Some(12));
        assert_eq!(s.events_dropped, Some(1));
        assert_eq!(s.sessions, Some(3));
        let list = serde_json::json!({"feeds": [{"messages_received": 4}]});
        assert_eq!(DaemonStatus::from_json(&list).messages_received, Some(4));
        assert_eq!(
            DaemonStatus::from_json(&serde_json::json!({})).messages_received,
            None
        );
    }
}
