//! `tickrelay-bench`: a load harness for the tickrelay daemon, self-contained (it talks to the
//! daemon only over the network, never through the library).
//!
//! One run: start the flood upstream ([`flood`]), start the daemon against it ([`daemon`]),
//! connect the browser clients ([`clients`]), warm up, measure for a window, and print one JSON
//! line ([`report`]) on stdout. Logs go to stderr. This file owns the run's sequence; [`soak`]
//! is the other kind of run (faults, churn and memory over minutes).

mod args;
mod clients;
mod clock;
mod daemon;
mod flood;
mod floor;
mod http;
mod report;
mod scan;
mod sdk;
mod soak;
mod stats;
mod sys;
mod ws;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use log::{info, warn};
use serde_json::Value;

use args::{Args, Encoding, Mode, Protocol, USAGE};
use clients::{ClientPool, ClientsConfig, Shared};
use daemon::{Daemon, SpawnOptions};
use flood::{Flood, FloodConfig};
use floor::Floor;
use report::{Connecting, Measurement, Sample, StatusSample, Window};

/// How long the daemon may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often progress is logged while clients connect.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// File descriptors the harness needs besides one per client.
const SPARE_FDS: u64 = 64;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tickrelay-bench: {e:#} (see --help)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tickrelay-bench: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_until_interrupted(&args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickrelay-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs, or stops early on SIGINT/SIGTERM: dropping the run stops the daemon and the clients.
async fn run_until_interrupted(args: &Args) -> anyhow::Result<Value> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    tokio::select! {
        result = run(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
    }
}

async fn run(args: &Args) -> anyhow::Result<Value> {
    raise_fd_limit(args);
    if args.soak_secs > 0.0 {
        return soak::run(args, daemon_binary(args)?).await;
    }
    if args.floor {
        return run_floor(args).await;
    }
    let flood = Flood::start(FloodConfig {
        rate: args.rate,
        batch: args.batch,
    })?;
    // Declared after `flood`, so it is dropped (and the child stopped) first.
    let mut daemon = start_daemon(args, flood.port).await?;
    daemon.wait_ready(READY_TIMEOUT).await?;
    info!("daemon: ready on http://{}", daemon.addr);
    let rss_kb_before_clients = daemon.rss_kb();

    let shared = Arc::new(Shared::default());
    let (pool, connecting) = connect_clients(args, &shared, &mut daemon).await?;
    // The same subscriptions on an edge, measured in the same window.
    let mut edge = None;
    if args.edge {
        let mut edge_daemon = start_edge(args, flood.port).await?;
        let edge_shared = Arc::new(Shared::default());
        let (edge_pool, _) = connect_clients(args, &edge_shared, &mut edge_daemon).await?;
        edge = Some((edge_daemon, edge_shared, edge_pool));
    }
    info!("warming up for {} s", args.warmup_secs);
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
    check_upstream(args, &flood);
    if let Some((_, edge_shared, _)) = &edge {
        edge_shared.measuring.store(true, Ordering::Relaxed);
    }
    let window = measure(args, &daemon, &flood, &shared).await;
    let edge = edge.map(|(mut edge_daemon, edge_shared, edge_pool)| {
        edge_shared.measuring.store(false, Ordering::Relaxed);
        let stats = edge_pool.stop();
        edge_daemon.shutdown();
        (stats, edge_shared)
    });

    let client_stats = pool.stop();
    let errors = shared.errors();
    clients::log_errors(&errors);
    let measurement = Measurement {
        args,
        window,
        clients: client_stats,
        clients_acked: shared.acked.load(Ordering::Relaxed),
        clients_failed: shared.failed.load(Ordering::Relaxed),
        stall_clients_acked: shared.stall_acked.load(Ordering::Relaxed),
        clients_disconnected: shared.disconnected.load(Ordering::Relaxed),
        errors,
        connecting,
        upstream_msgpack: flood.stats.msgpack.load(Ordering::Relaxed),
        upstream_connections: flood.stats.connections.load(Ordering::Relaxed),
        upstream_quote_symbols: flood.stats.quote_symbols.load(Ordering::Relaxed),
        rss_kb_before_clients,
        rss_kb_end: daemon.rss_kb(),
        daemon_warnings: daemon.warnings(),
    };
    daemon.shutdown();
    let mut report = measurement.to_json();
    if let (Some((stats, edge_shared)), Some(out)) = (edge, report.as_object_mut()) {
        out.extend(report::edge_fields(
            &stats,
            edge_shared.acked.load(Ordering::Relaxed),
            args.secs,
        ));
    }
    Ok(report)
}

/// `--floor`: the same clients, served by the harness's own burst server instead of a daemon.
async fn run_floor(args: &Args) -> anyhow::Result<Value> {
    let floor = Floor::start(FLOOR_WORKERS, Duration::from_millis(args.throttle_ms))?;
    let shared = Arc::new(Shared::default());
    let pool = ClientPool::start(
        clients_config(args, &floor.addr.to_string())?,
        shared.clone(),
    )?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout_secs);
    while !shared.settled(args.clients, 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let acked = shared.acked.load(Ordering::Relaxed);
    info!(
        "floor: {acked} clients subscribed; warming up for {} s",
        args.warmup_secs
    );
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
    let cpu_start = sys::cpu_secs("self");
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let cpu = sys::cpu_secs("self").zip(cpu_start).map(|(e, s)| e - s);
    let stats = pool.stop();
    drop(floor);
    Ok(report::floor_fields(&stats, acked, args.secs, cpu))
}

/// Burst threads of the floor server: the daemon's HTTP workers on this machine.
const FLOOR_WORKERS: usize = 2;

/// An edge beside the spawned daemon: the same settings, market data from Redis.
async fn start_edge(args: &Args, flood_port: u16) -> anyhow::Result<Daemon> {
    if !args.env.iter().any(|(k, _)| k == "TICKRELAY__REDIS__URL") {
        bail!("--edge needs --env TICKRELAY__REDIS__URL=redis://HOST:PORT");
    }
    let mut env = daemon_env(args, flood_port);
    env.push(("TICKRELAY__UPSTREAM__PROVIDER".into(), "redis".into()));
    env.push(("TICKRELAY__REDIS__INSTANCE".into(), "bench-edge".into()));
    let mut edge = Daemon::spawn(&SpawnOptions {
        binary: daemon_binary(args)?,
        config: args.config.clone(),
        env,
    })
    .await?;
    edge.wait_ready(READY_TIMEOUT).await?;
    info!("edge: ready on http://{}", edge.addr);
    Ok(edge)
}

/// Starts the clients and waits until they are subscribed (or failed).
async fn connect_clients(
    args: &Args,
    shared: &Arc<Shared>,
    daemon: &mut Daemon,
) -> anyhow::Result<(ClientPool, Connecting)> {
    let overflows_before = sys::listen_overflows();
    let started = Instant::now();
    let pool = ClientPool::start(clients_config(args, &daemon.addr)?, shared.clone())?;
    wait_for_clients(args, shared, daemon).await?;
    let connecting = Connecting {
        time: started.elapsed(),
        // A full listen queue drops SYNs, which clients retry only after a second.
        listen_overflows: sys::listen_overflows()
            .zip(overflows_before)
            .map(|(after, before)| after.saturating_sub(before)),
    };
    Ok((pool, connecting))
}

/// The measurement window: counters on both edges, the clients counting in between. The status
/// requests sit outside the edges, so their cost does not land in the window's CPU time.
async fn measure(args: &Args, daemon: &Daemon, flood: &Flood, shared: &Shared) -> Window {
    info!("measuring for {} s", args.secs);
    let status_start = status_sample(daemon).await;
    let start = sample(daemon, flood);
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let end = sample(daemon, flood);
    let status_end = status_sample(daemon).await;
    Window {
        start,
        end,
        status_start,
        status_end,
    }
}

/// Raises the open-file limit to the hard limit (the daemon inherits it) and warns when it is
/// still too low for the clients.
fn raise_fd_limit(args: &Args) {
    let needed = (args.clients + args.stall_clients) as u64 + SPARE_FDS;
    match sys::raise_nofile_limit() {
        Ok(limit) if limit < needed => warn!(
            "the open-file limit is {limit} but {needed} descriptors are needed: clients will fail"
        ),
        Ok(limit) => info!("open-file limit: {limit}"),
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
}

async fn start_daemon(args: &Args, flood_port: u16) -> anyhow::Result<Daemon> {
    if let Some(url) = &args.url {
        info!("daemon: using the one at {url}");
        return Daemon::external(url, args.pid);
    }
    Daemon::spawn(&SpawnOptions {
        binary: daemon_binary(args)?,
        config: args.config.clone(),
        env: daemon_env(args, flood_port),
    })
    .await
}

/// `--daemon`, or `tickrelay` next to this binary.
fn daemon_binary(args: &Args) -> anyhow::Result<std::path::PathBuf> {
    Ok(match &args.daemon {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("tickrelay"),
    })
}

/// The overrides that point the daemon at the flood and strip it down to the stocks feed; the
/// user's `--env` pairs come last and win.
fn daemon_env(args: &Args, flood_port: u16) -> Vec<(String, String)> {
    let max_symbols = args.symbols_per_client.max(200);
    let pairs = [
        ("TICKRELAY__UPSTREAM__PROVIDER", "alpaca".to_string()),
        (
            "TICKRELAY__UPSTREAM__DATA_URL",
            format!("ws://127.0.0.1:{flood_port}"),
        ),
        ("APCA_API_KEY_ID", "bench".into()),
        ("APCA_API_SECRET_KEY", "bench".into()),
        ("TICKRELAY__HTTP__PORT", "0".into()),
        ("TICKRELAY__FEEDS__CRYPTO__ENABLED", "false".into()),
        ("TICKRELAY__FEEDS__OPTIONS__ENABLED", "false".into()),
        ("TICKRELAY__FEEDS__NEWS__ENABLED", "false".into()),
        ("TICKRELAY__ACCOUNTS__MAIN__ENABLED", "false".into()),
        (
            "TICKRELAY__FEEDS__STOCKS__ENCODING",
            args.encoding.name().into(),
        ),
        ("TICKRELAY__SESSION__MAX_SYMBOLS", max_symbols.to_string()),
        (
            "TICKRELAY__THROTTLE__INTERVAL_MS",
            args.throttle_ms.to_string(),
        ),
        ("RUST_LOG", "info".into()),
    ];
    // The key pair the SDK clients authenticate with (only then: an older daemon without the
    // SDK endpoint would refuse these settings).
    let sdk = [
        (
            "TICKRELAY__CLIENTS__BENCH__KEY_ID",
            clients::SDK_KEY.to_string(),
        ),
        (
            "TICKRELAY_CLIENT_SECRET_BENCH",
            clients::SDK_SECRET.to_string(),
        ),
        ("TICKRELAY__SDK__MAX_SYMBOLS", max_symbols.to_string()),
    ];
    let sdk = if args.protocol == Protocol::Sdk {
        &sdk[..]
    } else {
        &[]
    };
    // The daemon runs with provider "alpaca" (against the flood), where an anonymous account
    // scope is refused: only market data for anonymous callers. Only for settings that have the
    // key (an older daemon knows no [auth] section).
    let config = std::fs::read_to_string(&args.config).unwrap_or_default();
    let auth = if config.contains("anonymous_scopes") {
        &[("TICKRELAY__AUTH__ANONYMOUS_SCOPES", "market".to_string())][..]
    } else {
        &[]
    };
    pairs
        .iter()
        .chain(sdk)
        .chain(auth)
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain(args.env.iter().cloned())
        .collect()
}

fn clients_config(args: &Args, daemon_addr: &str) -> anyhow::Result<ClientsConfig> {
    let addr: SocketAddr = daemon_addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {daemon_addr}"))?
        .next()
        .with_context(|| format!("{daemon_addr} has no address"))?;
    Ok(ClientsConfig {
        addr,
        clients: args.clients,
        stall_clients: args.stall_clients,
        symbols: args.symbols,
        symbols_per_client: args.symbols_per_client,
        batched: args.mode == Mode::Batched,
        sdk: (args.protocol == Protocol::Sdk).then_some(args.sdk_encoding),
        threads: args.client_threads,
        nice: args.client_nice,
        concurrency: args.connect_concurrency,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout_secs),
    })
}

/// Waits until every client is subscribed or has failed; fails when none got an ack.
async fn wait_for_clients(args: &Args, shared: &Shared, daemon: &mut Daemon) -> anyhow::Result<()> {
    let total = args.clients + args.stall_clients;
    // Each client has its own timeout, and at most `concurrency` of them run at once.
    let rounds = total.div_ceil(args.connect_concurrency) as f64 + 1.0;
    let deadline = Instant::now() + Duration::from_secs_f64(rounds * args.connect_timeout_secs);
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    while !shared.settled(args.clients, args.stall_clients) && Instant::now() < deadline {
        if let Some(exit) = daemon.exit_status() {
            bail!(
                "the daemon exited ({exit}) while clients connected{}",
                daemon.log_tail()
            );
        }
        if Instant::now() >= next_progress {
            info!("clients: {}", progress(shared));
            next_progress += PROGRESS_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let acked = shared.acked.load(Ordering::Relaxed);
    info!("clients: {}", progress(shared));
    if acked == 0 {
        let errors = shared.errors();
        bail!(
            "no client got a `subscribed` ack; first errors: {}",
            errors.first.join("; ")
        );
    }
    if acked < args.clients {
        warn!(
            "only {acked} of {} clients are subscribed; measuring with those",
            args.clients
        );
        clients::log_errors(&shared.errors());
    }
    Ok(())
}

fn progress(shared: &Shared) -> String {
    let n = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed);
    format!(
        "{} connected, {} subscribed, {} failed; stall clients: {} subscribed, {} failed",
        n(&shared.connected),
        n(&shared.acked),
        n(&shared.failed),
        n(&shared.stall_acked),
        n(&shared.stall_failed)
    )
}

/// Warns when the daemon's upstream is not what was asked for (e.g. a `--url` daemon
/// configured otherwise).
fn check_upstream(args: &Args, flood: &Flood) {
    let stats = &flood.stats;
    if stats.connections.load(Ordering::Relaxed) == 0 {
        warn!("the daemon never connected to the flood: is its data_url pointed at it?");
        return;
    }
    let msgpack = stats.msgpack.load(Ordering::Relaxed);
    if msgpack != (args.encoding == Encoding::Msgpack) {
        warn!(
            "the daemon asked for {} upstream, not {}",
            if msgpack { "msgpack" } else { "json" },
            args.encoding.name()
        );
    }
    info!(
        "flood: {} quote symbols subscribed upstream",
        stats.quote_symbols.load(Ordering::Relaxed)
    );
}

fn sample(daemon: &Daemon, flood: &Flood) -> Sample {
    Sample {
        at: Instant::now(),
        flood_sent: flood.stats.sent.load(Ordering::Relaxed),
        flood_pushback: flood.stats.pushback.load(Ordering::Relaxed),
        cpu_secs: daemon.cpu_secs(),
        bench_cpu_secs: sys::cpu_secs("self"),
    }
}

/// The daemon's counters, stamped with the middle of the request: with thousands of sessions
/// the status takes a while to build, and the counters are read somewhere inside it.
async fn status_sample(daemon: &Daemon) -> StatusSample {
    let asked = Instant::now();
    let result = daemon.status().await;
    let answered = Instant::now();
    let status = match result {
        Ok(status) => Some(status),
        Err(e) => {
            warn!("daemon status unavailable ({e:#}); ingest falls back to the flood's count");
            None
        }
    };
    StatusSample {
        at: asked + answered.duration_since(asked) / 2,
        status,
    }
}
