//! Metrics: the Prometheus exposition, read at scrape time from where each figure lives.
//!
//! Owns nothing that lasts. Everything is counted by its owner — feeds
//! ([`FeedCounters`](crate::upstream::FeedCounters)), sessions (their stats, summed with the
//! ended ones by the registry), the hubs (the pipeline latency,
//! [`LatencyHistogram`]), the Redis sink and relay, the lease —
//! and [`Snapshot`] gathers it for one scrape. Talks to: nobody; the `/metrics` handler builds the
//! snapshot and calls [`Snapshot::encode`], which writes the text format through the
//! `prometheus-client` crate.
//!
//! Names are `tickrelay_<name>_<unit>[_total]`. Labels are bounded: feeds (the configured ones),
//! their states, failure classes, message types, client kinds. Never a symbol, a session or a
//! secret.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::downstream::delivery::{HistogramValues, LatencyHistogram};
use crate::registry::RegistryStatus;
use crate::scaleout::lease::LeaseStatus;
use crate::scaleout::relay::RelayStatus;
use crate::scaleout::sink::SinkStatus;
use crate::upstream::FeedState;

/// Process figures from `/proc/self` (Linux; absent elsewhere).
#[derive(Debug, Default)]
pub struct ProcessSample {
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub start_time_seconds: f64,
}

impl ProcessSample {
    pub fn read(started_unix: f64) -> ProcessSample {
        let mut p = ProcessSample {
            start_time_seconds: started_unix,
            ..ProcessSample::default()
        };
        // SAFETY: sysconf takes and returns plain integers.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces) start at "state" (field 3).
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
                if let (Some(utime), Some(stime)) = (num(11), num(12)) {
                    if ticks > 0 {
                        p.cpu_seconds = Some((utime + stime) / ticks as f64);
                    }
                }
                if let Some(rss) = num(21) {
                    p.resident_bytes = Some(rss as u64 * page.max(0) as u64);
                }
            }
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        p
    }
}

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// Feeds, sessions and delivery totals.
    pub registry: &'a RegistryStatus,
    pub latency: &'a LatencyHistogram,
    pub sdk_batches_dropped: u64,
    pub sink: Option<SinkStatus>,
    pub relay: Option<RelayStatus>,
    pub lease: Option<LeaseStatus>,
    /// With `provider = "replay"`.
    pub replay: Option<crate::replay::ReplayStatus>,
    pub process: ProcessSample,
}

impl Snapshot<'_> {
    /// The exposition, in the Prometheus (OpenMetrics) text format.
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        // A registry per scrape, holding this snapshot alone: the crate does the format.
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Owned(self.render())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }

    fn render(&self) -> Vec<Family> {
        let mut out = Vec::new();
        let feed_states = [
            FeedState::Connecting,
            FeedState::Connected,
            FeedState::Disconnected,
            FeedState::Failed,
            FeedState::Stopped,
            FeedState::Standby,
        ];
        let mut state = Family::gauge(
            "tickrelay_feed_state",
            "1 for each feed's current state (feeds and trading streams)",
        );
        let mut connects = Family::counter(
            "tickrelay_feed_connects",
            "Upstream connections that became ready",
        );
        let mut failures = Family::counter(
            "tickrelay_feed_disconnects",
            "Upstream connections lost or refused, by reason",
        );
        let mut messages = Family::counter(
            "tickrelay_feed_messages_received",
            "Upstream messages received, by type",
        );
        let mut age_gauge = Family::gauge(
            "tickrelay_feed_last_message_age_seconds",
            "Seconds since the last upstream message",
        );
        let mut subscribed = Family::gauge(
            "tickrelay_feed_subscriptions",
            "(channel, symbol) pairs the upstream has acknowledged",
        );
        let mut desired = Family::gauge(
            "tickrelay_feed_desired_subscriptions",
            "(channel, symbol) pairs tickrelay wants upstream",
        );
        let mut conflated = Family::counter(
            "tickrelay_feed_events_conflated",
            "Upstream events replaced by a newer one before their throttle took them: the feed never pushes back, it conflates",
        );
        let mut dropped = Family::counter(
            "tickrelay_feed_events_dropped",
            "Upstream events that could not be handed on",
        );
        let mut malformed = Family::counter(
            "tickrelay_feed_malformed_messages",
            "Upstream frames or messages that could not be decoded",
        );
        let mut refused = Family::counter(
            "tickrelay_feed_refused_messages",
            "On an edge: messages read from Redis that failed the checks and were not delivered",
        );
        let now = crate::time::Timestamp::now();
        for f in &self.registry.feeds {
            let (status, c) = (&f.status, &f.counters);
            let name = status.feed.name();
            let feed = name.as_str();
            for s in feed_states {
                let state_name = format!("{s:?}").to_lowercase();
                state.push(
                    vec![("feed", feed.into()), ("state", state_name)],
                    f64::from(u8::from(status.state == s)),
                );
            }
            connects.push(vec![("feed", feed.into())], c.connects as f64);
            for (reason, n) in &c.disconnects {
                failures.push(
                    vec![("feed", feed.into()), ("reason", (*reason).into())],
                    *n as f64,
                );
            }
            for (kind, n) in &c.messages_by_type {
                messages.push(
                    vec![("feed", feed.into()), ("type", (*kind).into())],
                    *n as f64,
                );
            }
            if let Some(t) = c.last_message_time {
                let age = now.unix_nanos().saturating_sub(t.unix_nanos()).max(0) as f64 / 1e9;
                age_gauge.push(vec![("feed", feed.into())], age);
            }
            subscribed.push(vec![("feed", feed.into())], status.subscribed as f64);
            desired.push(vec![("feed", feed.into())], status.desired as f64);
            conflated.push(vec![("feed", feed.into())], c.events_conflated as f64);
            dropped.push(vec![("feed", feed.into())], c.events_dropped as f64);
            malformed.push(vec![("feed", feed.into())], c.malformed as f64);
            refused.push(vec![("feed", feed.into())], c.refused as f64);
        }
        out.extend([
            state, connects, failures, messages, age_gauge, subscribed, desired, conflated,
            dropped, malformed, refused,
        ]);

        let r = self.registry;
        let summary = &r.session_summary;
        let sdk = summary.sdk_programs as f64;
        let mut clients = Family::gauge("tickrelay_clients", "Connected clients, by kind");
        clients.push(vec![("kind", "browser".into())], summary.browsers as f64);
        clients.push(vec![("kind", "sdk".into())], sdk);
        out.push(clients);
        let d = &r.delivery;
        for (name, help, v) in [
            (
                "tickrelay_frames_sent",
                "Data frames written to clients (a batch is one)",
                d.frames_sent,
            ),
            (
                "tickrelay_updates_sent",
                "Updates written to clients",
                d.updates_sent,
            ),
            (
                "tickrelay_updates_conflated",
                "Updates replaced by a newer one before a client could take them",
                d.updates_conflated,
            ),
            (
                "tickrelay_updates_dropped",
                "News and bars dropped for clients that were behind",
                d.updates_dropped,
            ),
            (
                "tickrelay_slow_client_disconnects",
                "Clients closed for not keeping up (4008, 407)",
                d.slow_client_disconnects,
            ),
            (
                "tickrelay_hub_mailbox_drops",
                "Updates a busy worker's full mailbox refused",
                r.hub_mailbox_drops,
            ),
            (
                "tickrelay_sdk_batches_dropped",
                "Message batches for SDK programs a busy worker refused",
                self.sdk_batches_dropped,
            ),
        ] {
            out.push(Family::single_counter(name, help, v as f64));
        }
        for (name, help, v) in [
            (
                "tickrelay_throttles",
                "Symbol throttle actors running",
                r.throttles as f64,
            ),
            (
                "tickrelay_symbols",
                "Symbols held for browsers, SDK programs and pins",
                r.symbols.len() as f64,
            ),
            (
                "tickrelay_clients_behind",
                "Clients whose socket is not keeping up right now",
                summary.behind as f64,
            ),
        ] {
            out.push(Family::single_gauge(name, help, v));
        }
        let (buckets, sum, count) = self.latency.read();
        out.push(Family {
            name: "tickrelay_pipeline_latency_seconds",
            help: "From reading an upstream frame to handing the client frame to the sockets of one worker, the throttle's hold included",
            kind: MetricType::Histogram,
            samples: Vec::new(),
            histogram: Some((buckets, sum, count)),
        });

        if let Some(sink) = &self.sink {
            let mut up = Family::gauge(
                "tickrelay_redis_sink_connected",
                "1 while the Redis price sink is connected",
            );
            up.push(Vec::new(), f64::from(u8::from(sink.state == "connected")));
            out.push(up);
            out.push(Family::single_gauge(
                "tickrelay_redis_sink_pending",
                "Symbols whose newest price waits to be written to Redis",
                sink.pending as f64,
            ));
            out.push(Family::single_counter(
                "tickrelay_redis_sink_written",
                "Prices written to Redis",
                sink.written as f64,
            ));
            out.push(Family::single_counter(
                "tickrelay_redis_sink_replaced",
                "Prices replaced by a newer one before they were written",
                sink.replaced as f64,
            ));
            out.push(Family::single_counter(
                "tickrelay_redis_sink_reconnects",
                "Redis reconnections of the sink",
                sink.reconnects as f64,
            ));
        }
        if let Some(relay) = &self.relay {
            out.push(Family::single_gauge(
                "tickrelay_redis_relay_queued",
                "Messages for the edges waiting for Redis",
                relay.queued as f64,
            ));
            out.push(Family::single_counter(
                "tickrelay_redis_relay_published",
                "Messages published for the edges",
                relay.published as f64,
            ));
            out.push(Family::single_counter(
                "tickrelay_redis_relay_dropped",
                "Messages for the edges dropped (Redis slow or away)",
                relay.dropped as f64,
            ));
            out.push(Family::single_gauge(
                "tickrelay_redis_relay_registrations",
                "Live edge registrations",
                relay.registrations as f64,
            ));
        }
        if let Some(lease) = &self.lease {
            out.push(Family::single_gauge(
                "tickrelay_lease_leader",
                "1 while this primary holds the lease",
                f64::from(u8::from(lease.role == "leader")),
            ));
            out.push(Family::single_counter(
                "tickrelay_lease_acquired",
                "Times this primary won the lease",
                lease.acquired as f64,
            ));
        }

        if let Some(replay) = &self.replay {
            let mut state = Family::gauge(
                "tickrelay_replay_state",
                "1 for the replay's current state (provider = \"replay\")",
            );
            for s in crate::replay::ReplayState::ALL {
                let on = f64::from(u8::from(s == replay.state));
                state.push(vec![("state", s.as_str().to_owned())], on);
            }
            out.push(state);
            out.push(Family::single_gauge(
                "tickrelay_replay_clock_seconds",
                "Recorded receive time of the last frame replayed (Unix seconds)",
                replay.clock.map_or(0.0, |t| t.unix_nanos() as f64 / 1e9),
            ));
            out.push(Family::single_counter(
                "tickrelay_replay_frames",
                "Recorded frames replayed",
                replay.frames as f64,
            ));
            out.push(Family::single_counter(
                "tickrelay_replay_gaps",
                "Gaps the replay signalled to consumers",
                replay.gaps as f64,
            ));
        }

        let p = &self.process;
        if let Some(v) = p.resident_bytes {
            out.push(Family::single_gauge(
                "tickrelay_process_resident_memory_bytes",
                "Resident memory",
                v as f64,
            ));
        }
        if let Some(v) = p.cpu_seconds {
            out.push(Family::single_counter(
                "tickrelay_process_cpu_seconds",
                "User and system CPU time",
                v,
            ));
        }
        if let Some(v) = p.open_fds {
            out.push(Family::single_gauge(
                "tickrelay_process_open_fds",
                "Open file descriptors",
                v as f64,
            ));
        }
        out.push(Family::single_gauge(
            "tickrelay_process_start_time_seconds",
            "Start time, Unix seconds",
            p.start_time_seconds,
        ));
        out
    }
}

/// One metric family, ready to encode.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
    histogram: Option<HistogramValues>,
}

impl Family {
    fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: MetricType::Gauge,
            samples: Vec::new(),
            histogram: None,
        }
    }

    /// Named without `_total`: the encoder appends it.
    fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            kind: MetricType::Counter,
            ..Family::gauge(name, help)
        }
    }

    fn single_gauge(name: &'static str, help: &'static str, v: f64) -> Family {
        let mut f = Family::gauge(name, help);
        f.push(Vec::new(), v);
        f
    }

    fn single_counter(name: &'static str, help: &'static str, v: f64) -> Family {
        let mut f = Family::counter(name, help);
        f.push(Vec::new(), v);
        f
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, v: f64) {
        self.samples.push((labels, v));
    }
}

fn encode_value(
    kind: MetricType,
    v: f64,
    m: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(m),
        _ => ConstGauge::new(v).encode(m),
    }
}

/// The families of one scrape, as the crate's collector.
#[derive(Debug)]
struct Owned(Vec<Family>);

impl Collector for Owned {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            if let Some((buckets, sum, count)) = &f.histogram {
                metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    *sum, *count, buckets, None,
                )?;
                continue;
            }
            match f.samples.as_slice() {
                // One sample without labels: `name value`, not `name{} value`.
                [(labels, v)] if labels.is_empty() => encode_value(f.kind, *v, metric)?,
                samples => {
                    for (labels, v) in samples {
                        let labels: Vec<(&str, &str)> =
                            labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        encode_value(f.kind, *v, metric.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
