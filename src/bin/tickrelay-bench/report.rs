//! The one JSON line a run prints: the parameters and what was measured over the window.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::args::Args;
use crate::clients::ErrorLog;
use crate::daemon::DaemonStatus;
use crate::stats::{ClientStats, Histogram};

/// Counters read at one edge of the measurement window.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub flood_sent: u64,
    pub flood_pushback: u64,
    /// The daemon's CPU time.
    pub cpu_secs: Option<f64>,
    /// The harness's own CPU time (flood and clients), to see whether it kept up.
    pub bench_cpu_secs: Option<f64>,
}

/// The daemon's status, read just outside one edge of the window, and when it answered.
#[derive(Clone, Debug)]
pub struct StatusSample {
    pub at: Instant,
    pub status: Option<DaemonStatus>,
}

/// The counters at both edges of the measurement window.
#[derive(Clone, Debug)]
pub struct Window {
    pub start: Sample,
    pub end: Sample,
    pub status_start: StatusSample,
    pub status_end: StatusSample,
}

impl Window {
    fn secs(&self) -> f64 {
        self.end.at.duration_since(self.start.at).as_secs_f64()
    }

    /// How much a sampled quantity grew over the window.
    fn delta(&self, field: fn(&Sample) -> Option<f64>) -> Option<f64> {
        Some(field(&self.end)? - field(&self.start)?)
    }

    /// How much a daemon counter grew between the two status answers.
    fn status_delta(&self, field: fn(&DaemonStatus) -> Option<u64>) -> Option<u64> {
        let start = field(self.status_start.status.as_ref()?)?;
        let end = field(self.status_end.status.as_ref()?)?;
        Some(end.saturating_sub(start))
    }

    /// Messages per second the daemon counted, over the interval between its two answers.
    fn daemon_ingest(&self) -> Option<f64> {
        self.status_rate(|s| s.messages_received)
    }

    /// How fast a daemon counter grew, over the interval between its two answers.
    fn status_rate(&self, field: fn(&DaemonStatus) -> Option<u64>) -> Option<f64> {
        let count = self.status_delta(field)?;
        let secs = self
            .status_end
            .at
            .duration_since(self.status_start.at)
            .as_secs_f64();
        (secs > 0.0).then(|| count as f64 / secs)
    }
}

/// How connecting the clients went.
#[derive(Clone, Copy, Debug)]
pub struct Connecting {
    pub time: Duration,
    /// Listen-queue overflows (system-wide) meanwhile.
    pub listen_overflows: Option<u64>,
}

/// Everything measured.
pub struct Measurement<'a> {
    pub args: &'a Args,
    pub window: Window,
    pub clients: ClientStats,
    pub clients_acked: usize,
    pub clients_failed: usize,
    pub stall_clients_acked: usize,
    pub clients_disconnected: usize,
    pub errors: ErrorLog,
    pub connecting: Connecting,
    pub upstream_msgpack: bool,
    pub upstream_connections: u64,
    pub upstream_quote_symbols: usize,
    pub rss_kb_before_clients: Option<u64>,
    pub rss_kb_end: Option<u64>,
    pub daemon_warnings: u64,
}

impl Measurement<'_> {
    pub fn to_json(&self) -> Value {
        let mut out = self.parameters();
        out.extend(self.setup());
        out.extend(self.throughput());
        out.extend(self.latency());
        out.extend(self.resources());
        out.extend(self.daemon_counters());
        Value::Object(out)
    }

    fn window_secs(&self) -> f64 {
        self.window.secs()
    }

    fn parameters(&self) -> Map<String, Value> {
        let a = self.args;
        object(json!({
            "clients": a.clients,
            "stall_clients": a.stall_clients,
            "symbols": a.symbols,
            "symbols_per_client": a.symbols_per_client,
            "rate": a.rate,
            "batch": a.batch,
            "mode": a.mode.name(),
            "protocol": a.protocol.name(),
            "client_nice": a.client_nice,
            "sdk_encoding": a.sdk_encoding.name(),
            "encoding": a.encoding.name(),
            "throttle_ms": a.throttle_ms,
            "secs": a.secs,
            "warmup_secs": a.warmup_secs,
            "client_threads": a.client_threads,
        }))
    }

    fn setup(&self) -> Map<String, Value> {
        object(json!({
            "clients_acked": self.clients_acked,
            "clients_failed": self.clients_failed,
            "stall_clients_acked": self.stall_clients_acked,
            "connect_secs": round(self.connecting.time.as_secs_f64()),
            "listen_overflows_during_connect": self.connecting.listen_overflows,
            "upstream_encoding": if self.upstream_msgpack { "msgpack" } else { "json" },
            "upstream_connections": self.upstream_connections,
            "upstream_quote_symbols": self.upstream_quote_symbols,
            "window_secs": round(self.window_secs()),
        }))
    }

    fn throughput(&self) -> Map<String, Value> {
        let secs = self.window_secs();
        let per_sec = |n: u64| round(n as f64 / secs);
        let sent = self.window.end.flood_sent - self.window.start.flood_sent;
        let pushback = self.window.end.flood_pushback - self.window.start.flood_pushback;
        let (ingest, source) = match self.daemon_ingest() {
            Some(rate) => (rate, "daemon"),
            None => (sent as f64 / secs, "flood"),
        };
        let c = &self.clients;
        let min = c.client_updates.iter().min().map(|&n| per_sec(n));
        let max = c.client_updates.iter().max().map(|&n| per_sec(n));
        object(json!({
            "ingest_msgs_per_sec": round(ingest),
            "ingest_source": source,
            "flood_sent_msgs_per_sec": per_sec(sent),
            "flood_pushback_msgs": pushback,
            "flood_pushback_msgs_per_sec": per_sec(pushback),
            "delivered_updates_per_sec": per_sec(c.updates),
            "delivered_frames_per_sec": per_sec(c.frames),
            "client_updates_per_sec_min": min,
            "client_updates_per_sec_max": max,
        }))
    }

    /// Messages per second the daemon counted.
    fn daemon_ingest(&self) -> Option<f64> {
        self.window.daemon_ingest()
    }

    fn latency(&self) -> Map<String, Value> {
        let c = &self.clients;
        let mut out = histogram_fields("latency", &c.latency);
        out.extend(histogram_fields("delivery_latency", &c.delivery));
        out.extend(object(json!({
            "negative_latencies": c.negative_latency,
            "untimed_updates": c.untimed,
            "snapshot_updates": c.snapshots,
            "parse_fallbacks": c.parse_fallbacks,
        })));
        out
    }

    fn resources(&self) -> Map<String, Value> {
        let cpu = self.window.delta(|s| s.cpu_secs);
        let bench_cpu = self.window.delta(|s| s.bench_cpu_secs);
        let ingested = self.daemon_ingest().map(|rate| rate * self.window_secs());
        let per_million = cpu
            .zip(ingested)
            .filter(|&(_, n)| n > 0.0)
            .map(|(cpu, n)| round(cpu / (n / 1e6)));
        let connected = (self.clients_acked + self.stall_clients_acked) as f64;
        let per_client = self
            .rss_kb_end
            .zip(self.rss_kb_before_clients)
            .filter(|_| connected > 0.0)
            .map(|(end, before)| round((end as f64 - before as f64) / connected));
        object(json!({
            "daemon_cpu_secs": cpu.map(round),
            "daemon_cpu_pct": cpu.map(|c| round(100.0 * c / self.window_secs())),
            "daemon_cpu_secs_per_million_msgs": per_million,
            "daemon_cpu_us_per_delivered_update": cpu
                .filter(|_| self.clients.updates > 0)
                .map(|c| round(c * 1e6 / self.clients.updates as f64)),
            "bench_cpu_pct": bench_cpu.map(|c| round(100.0 * c / self.window_secs())),
            "rss_kb_before_clients": self.rss_kb_before_clients,
            "rss_kb_end": self.rss_kb_end,
            "rss_per_client_kb": per_client,
        }))
    }

    fn daemon_counters(&self) -> Map<String, Value> {
        let delta = |field| self.window.status_delta(field);
        let end = self.window.status_end.status.as_ref();
        let close_codes: Map<String, Value> = self
            .errors
            .close_codes
            .iter()
            .map(|(code, n)| (code.to_string(), json!(n)))
            .collect();
        object(json!({
            "daemon_events_dropped": delta(|s| s.events_dropped),
            "daemon_events_conflated": delta(|s| s.events_conflated),
            "daemon_dropped_updates": delta(|s| s.dropped_updates),
            "daemon_mailbox_drops": delta(|s| s.mailbox_drops),
            "daemon_sessions": end.and_then(|s| s.sessions),
            "redis_written_per_sec": self.window.status_rate(|s| s.redis_written),
            "redis_replaced": delta(|s| s.redis_replaced),
            "daemon_log_warnings": self.daemon_warnings,
            "clients_disconnected": self.clients_disconnected,
            "client_errors": self.errors.count,
            "client_close_codes": close_codes,
        }))
    }
}

/// The edge's clients (`--edge`): latency and delivered updates, beside the primary's.
pub fn edge_fields(c: &ClientStats, acked: usize, secs: f64) -> Map<String, Value> {
    let mut out = histogram_fields("edge_latency", &c.latency);
    out.extend(histogram_fields("edge_delivery_latency", &c.delivery));
    out.insert("edge_clients_acked".into(), json!(acked));
    out.insert(
        "edge_delivered_updates_per_sec".into(),
        json!(round(c.updates as f64 / secs)),
    );
    out
}

/// The floor run (`--floor`): the clients' latency and updates, and the harness's CPU (it is
/// both ends here).
pub fn floor_fields(c: &ClientStats, acked: usize, secs: f64, bench_cpu: Option<f64>) -> Value {
    let mut out = histogram_fields("latency", &c.latency);
    out.insert("mode".into(), json!("floor"));
    out.insert("clients_acked".into(), json!(acked));
    out.insert(
        "delivered_updates_per_sec".into(),
        json!(round(c.updates as f64 / secs)),
    );
    out.insert(
        "bench_cpu_pct".into(),
        json!(bench_cpu.map(|c| round(100.0 * c / secs))),
    );
    Value::Object(out)
}

/// `{prefix}_p50_ms`, `_p99_ms`, `_p999_ms`, `_max_ms` and `_samples` of a histogram of
/// microseconds (null quantiles when it is empty).
fn histogram_fields(prefix: &str, h: &Histogram) -> Map<String, Value> {
    let ms = |us: u64| round(us as f64 / 1000.0);
    let mut out = Map::new();
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
        out.insert(format!("{prefix}_{name}_ms"), json!(h.quantile(q).map(ms)));
    }
    let max = (h.count() > 0).then(|| ms(h.max()));
    out.insert(format!("{prefix}_max_ms"), json!(max));
    out.insert(format!("{prefix}_samples"), json!(h.count()));
    out
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Three decimals are plenty and keep the line readable.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
