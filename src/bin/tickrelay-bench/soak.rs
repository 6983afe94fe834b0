//! Soak mode (`--soak-secs S`): a production day's troubles pressed into minutes, to show that
//! memory stays flat, every upstream drop is recovered with nothing lost, nothing panics and
//! healthy browsers keep receiving.
//!
//! The upstream is the simulator in its own process (`tickrelay simulate`), which the daemon
//! treats as Alpaca (provider `alpaca`, its data and trading URLs on loopback), so the daemon's
//! RSS is its own. While it runs:
//! - `--clients` healthy browsers read prices (reconnecting when dropped);
//! - `--stall-clients` connections subscribe and never read, each replaced every 25 s;
//! - short-lived clients connect and leave five times a second, one in five sending garbage
//!   (bad JSON, unknown actions, binary and oversized frames, orphan continuations, invalid
//!   UTF-8, a flood of invalid symbols, refused credentials);
//! - every 30 s the upstream fails: a drop (abrupt and clean in turn), the 2nd time a `406`, the
//!   4th a handshake `429` — and the harness times how long until the new upstream connection
//!   holds every symbol the healthy browsers want.
//!
//! Every 10 s it samples the daemon's RSS and which healthy browsers received a price. The
//! verdict: RSS after warm-up within ±10 % of its median, every fault restored, no panic, the
//! daemon alive, every healthy browser receiving in every window.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use log::{info, warn};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio::task::LocalSet;

use crate::args::Args;
use crate::clients::{symbol_name, upgrade, Conn, STALL_RCVBUF};
use crate::daemon::{Daemon, SpawnOptions};
use crate::http;
use crate::sys;
use crate::ws::{self, Message};

/// How often the upstream fails.
const FAULT_EVERY: Duration = Duration::from_secs(30);
/// How often RSS and deliveries are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// A fault not restored within this long counts as lost subscriptions.
const RESTORE_LIMIT: Duration = Duration::from_secs(25);
/// Samples before this are warm-up (connections and caches filling).
const WARMUP: Duration = Duration::from_secs(60);
/// How long a stalled client holds its connection before a fresh one replaces it.
const STALL_HOLD: Duration = Duration::from_secs(25);
/// A short-lived client starts this often.
const CHURN_EVERY: Duration = Duration::from_millis(200);
/// Hold-offs after 406 and 429, shortened so the soak sees the recovery (defaults: 90 s, 60 s).
const HOLD_OFF_MS: &str = "5000";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the tasks record.
#[derive(Default)]
struct Tally {
    /// Per healthy browser, when it last received a price.
    last_price: RefCell<Vec<Option<Instant>>>,
    prices: Cell<u64>,
    healthy_reconnects: Cell<u64>,
    stalled_connections: Cell<u64>,
    churn_connections: Cell<u64>,
    churn_failures: Cell<u64>,
    garbage_sent: Cell<u64>,
    /// `error` frames the garbage earned.
    garbage_errors: Cell<u64>,
    /// Close codes the daemon sent to short-lived clients.
    close_codes: RefCell<BTreeMap<u16, u64>>,
}

/// One sample.
struct Sample {
    at: Duration,
    rss_kb: Option<u64>,
    receiving: usize,
    sessions: Option<u64>,
}

/// One upstream fault and its recovery.
struct Fault {
    at: Duration,
    kind: &'static str,
    restored_after: Option<Duration>,
}

/// A child process stopped when dropped.
struct Simulator {
    child: Child,
    addr: String,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = sys::send_signal(self.child.id(), sys::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn run(args: &Args, binary: std::path::PathBuf) -> anyhow::Result<Value> {
    let port = free_port()?;
    let sim = start_simulator(args, &binary, port).await?;
    let mut daemon = Daemon::spawn(&SpawnOptions {
        binary,
        config: args.config.clone(),
        env: daemon_env(args, &sim.addr),
    })
    .await?;
    daemon.wait_ready(Duration::from_secs(30)).await?;
    info!("soak: daemon ready on http://{}", daemon.addr);
    let local = LocalSet::new();
    let outcome = local.run_until(soak(args, &daemon, &sim)).await;
    drop(local);
    let (samples, faults, tally) = outcome?;
    let alive = daemon.exit_status().is_none();
    let panics = daemon.panics();
    let warnings = daemon.warnings();
    daemon.shutdown();
    Ok(report(
        args, &samples, &faults, &tally, alive, panics, warnings,
    ))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

async fn start_simulator(
    args: &Args,
    binary: &std::path::Path,
    port: u16,
) -> anyhow::Result<Simulator> {
    let mut command = Command::new(binary);
    command
        .arg("--config")
        .arg(&args.config)
        .args([
            "simulate",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        // Prices for every subscribed symbol 20 times a second; no orders, so positions stay put.
        .env("TICKRELAY__SIMULATOR__TICK_MS", "50")
        .env("TICKRELAY__SIMULATOR__ORDER_INTERVAL_MS", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: the hook makes one async-signal-safe system call (prctl) in the forked child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, sys::die_with_parent);
    }
    let child = command.spawn().context("starting the simulator")?;
    let sim = Simulator {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _)) = http::get(&sim.addr, "/control/connections", REQUEST_TIMEOUT).await {
            info!("soak: simulator on {}", sim.addr);
            return Ok(sim);
        }
        if Instant::now() > deadline {
            bail!("the simulator did not answer on {} within 20 s", sim.addr);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The daemon treats the simulator as Alpaca: its market data and the `main` account.
fn daemon_env(args: &Args, sim: &str) -> Vec<(String, String)> {
    let pairs = [
        ("TICKRELAY__UPSTREAM__PROVIDER", "alpaca".to_string()),
        ("TICKRELAY__UPSTREAM__DATA_URL", format!("ws://{sim}")),
        (
            "TICKRELAY__ACCOUNTS__MAIN__TRADING_URL",
            format!("http://{sim}"),
        ),
        ("APCA_API_KEY_ID", "soak".into()),
        ("APCA_API_SECRET_KEY", "soak".into()),
        ("TICKRELAY__AUTH__ANONYMOUS_SCOPES", "market".into()),
        ("TICKRELAY__HTTP__PORT", "0".into()),
        (
            "TICKRELAY__UPSTREAM__CONNECTION_LIMIT_HOLD_OFF_MS",
            HOLD_OFF_MS.into(),
        ),
        (
            "TICKRELAY__UPSTREAM__RATE_LIMIT_HOLD_OFF_MS",
            HOLD_OFF_MS.into(),
        ),
        (
            "TICKRELAY__SESSION__MAX_SYMBOLS",
            args.symbols_per_client.max(200).to_string(),
        ),
        ("RUST_LOG", "info".into()),
    ];
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(args.env.iter().cloned())
        .collect()
}

/// The symbols healthy browser `i` holds.
fn symbols_of(args: &Args, i: usize) -> Vec<String> {
    let k = args.symbols_per_client;
    (0..k)
        .map(|j| symbol_name((i * k + j) % args.symbols))
        .collect()
}

async fn soak(
    args: &Args,
    daemon: &Daemon,
    sim: &Simulator,
) -> anyhow::Result<(Vec<Sample>, Vec<Fault>, Rc<Tally>)> {
    let addr: SocketAddr = daemon.addr.parse().context("the daemon's address")?;
    let tally = Rc::new(Tally::default());
    *tally.last_price.borrow_mut() = vec![None; args.clients];
    let wanted: BTreeSet<String> = (0..args.clients)
        .flat_map(|i| symbols_of(args, i))
        .collect();
    for i in 0..args.clients {
        tokio::task::spawn_local(healthy(addr, symbols_of(args, i), i, tally.clone()));
    }
    for i in 0..args.stall_clients {
        let symbols = symbols_of(args, i % args.clients);
        tokio::task::spawn_local(stalled(addr, symbols, tally.clone()));
    }
    tokio::task::spawn_local(churn(addr, args.symbols, tally.clone()));

    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.soak_secs);
    let faults = Rc::new(RefCell::new(Vec::new()));
    let injector = tokio::task::spawn_local(inject_faults(
        sim.addr.clone(),
        wanted,
        started,
        end,
        faults.clone(),
    ));
    let mut samples = Vec::new();
    let mut next_sample = started + SAMPLE_EVERY;
    let mut window_start = started;
    while next_sample <= end {
        tokio::time::sleep_until(next_sample.into()).await;
        let sample = take_sample(daemon, &tally, started, window_start).await;
        info!(
            "soak {:>4.0} s: RSS {} KB, {}/{} browsers received prices, {} sessions, {} prices so far",
            sample.at.as_secs_f64(),
            sample.rss_kb.map_or("?".into(), |r| r.to_string()),
            sample.receiving,
            args.clients,
            sample.sessions.map_or("?".into(), |s| s.to_string()),
            tally.prices.get()
        );
        samples.push(sample);
        window_start = next_sample;
        next_sample += SAMPLE_EVERY;
    }
    injector.await.context("the fault injector")??;
    let faults = faults.take();
    Ok((samples, faults, tally))
}

/// Every [`FAULT_EVERY`], a fault and the wait for its recovery, while a whole one fits.
async fn inject_faults(
    sim: String,
    wanted: BTreeSet<String>,
    started: Instant,
    end: Instant,
    faults: Rc<RefCell<Vec<Fault>>>,
) -> anyhow::Result<()> {
    let mut next = started + FAULT_EVERY;
    while next + RESTORE_LIMIT <= end {
        tokio::time::sleep_until(next.into()).await;
        let n = faults.borrow().len();
        let fault = inject_fault(&sim, n, &wanted, started).await?;
        info!(
            "soak {:>4.0} s: {} restored in {}",
            fault.at.as_secs_f64(),
            fault.kind,
            fault
                .restored_after
                .map_or("NEVER".into(), |d| format!("{:.1} s", d.as_secs_f64()))
        );
        faults.borrow_mut().push(fault);
        next += FAULT_EVERY;
    }
    Ok(())
}

async fn take_sample(daemon: &Daemon, tally: &Tally, started: Instant, since: Instant) -> Sample {
    let receiving = tally
        .last_price
        .borrow()
        .iter()
        .filter(|t| t.is_some_and(|t| t >= since))
        .count();
    Sample {
        at: started.elapsed(),
        rss_kb: daemon.rss_kb(),
        receiving,
        sessions: daemon.status().await.ok().and_then(|s| s.sessions),
    }
}

/// The id of the authenticated stocks connection and the symbols it holds on `quotes`.
async fn stocks_connection(sim: &str) -> Option<(u64, BTreeSet<String>)> {
    let (_, body) = http::get(sim, "/control/connections", REQUEST_TIMEOUT)
        .await
        .ok()?;
    let report: Value = serde_json::from_str(&body).ok()?;
    report["connections"].as_array()?.iter().find_map(|c| {
        (c["feed"] == "stocks" && c["authenticated"] == true).then(|| {
            let quotes = c["subscriptions"]["quotes"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (c["id"].as_u64().unwrap_or(0), quotes)
        })
    })
}

/// Fault `n`, then the wait until a new stocks connection holds every wanted symbol.
async fn inject_fault(
    sim: &str,
    n: usize,
    wanted: &BTreeSet<String>,
    started: Instant,
) -> anyhow::Result<Fault> {
    let before = stocks_connection(sim).await.map(|(id, _)| id);
    let post = |path: &'static str, body: Value| async move {
        let (code, text) = http::post_json(sim, path, &body, REQUEST_TIMEOUT).await?;
        if code != 200 {
            bail!("the simulator answered {path} with {code}: {text}");
        }
        anyhow::Ok(())
    };
    let kind = match n % 8 {
        1 => {
            post(
                "/control/error",
                json!({"feed": "stocks", "code": 406, "close": true}),
            )
            .await?;
            "406 connection limit exceeded"
        }
        3 => {
            post(
                "/control/fail_handshake",
                json!({"feed": "stocks", "status": 429, "count": 1}),
            )
            .await?;
            post("/control/drop", json!({"feed": "stocks", "mode": "abort"})).await?;
            "drop, then a handshake 429"
        }
        k if k % 2 == 0 => {
            post("/control/drop", json!({"mode": "abort"})).await?;
            "abrupt drop of every stream"
        }
        _ => {
            post("/control/drop", json!({"mode": "close"})).await?;
            "clean close of every stream"
        }
    };
    let at = started.elapsed();
    let injected = Instant::now();
    while injected.elapsed() < RESTORE_LIMIT {
        if let Some((id, held)) = stocks_connection(sim).await {
            if Some(id) != before && held.is_superset(wanted) {
                return Ok(Fault {
                    at,
                    kind,
                    restored_after: Some(injected.elapsed()),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    warn!("soak: {kind} at {at:?} was not restored within {RESTORE_LIMIT:?}");
    Ok(Fault {
        at,
        kind,
        restored_after: None,
    })
}

/// A browser WebSocket on `/ws`, optionally with a small receive buffer (a stalled client).
async fn open(addr: SocketAddr, small_window: bool) -> anyhow::Result<Conn> {
    let socket = TcpSocket::new_v4()?;
    if small_window {
        socket.set_recv_buffer_size(STALL_RCVBUF)?;
    }
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, socket.connect(addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    tokio::time::timeout(REQUEST_TIMEOUT, upgrade(stream, addr, 0, None))
        .await
        .context("upgrade timed out")?
}

fn subscribe_frame(symbols: &[String]) -> Vec<u8> {
    json!({"action": "subscribe", "symbols": symbols})
        .to_string()
        .into_bytes()
}

/// A healthy browser: subscribes and reads prices; reconnects after any failure.
async fn healthy(addr: SocketAddr, symbols: Vec<String>, index: usize, tally: Rc<Tally>) {
    let mut first = true;
    loop {
        if !first {
            tally
                .healthy_reconnects
                .set(tally.healthy_reconnects.get() + 1);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        first = false;
        let Ok(mut conn) = open(addr, false).await else {
            continue;
        };
        if conn
            .send(ws::OP_TEXT, &subscribe_frame(&symbols))
            .await
            .is_err()
        {
            continue;
        }
        let _ = read_prices(&mut conn, index, &tally).await;
    }
}

async fn read_prices(conn: &mut Conn, index: usize, tally: &Tally) -> anyhow::Result<()> {
    loop {
        conn.fill().await?;
        let mut pong = None;
        let mut closed = false;
        let mut prices = 0;
        while let Some(message) = conn.reader.next_message()? {
            match message {
                Message::Text(text) => {
                    if http::find(text, b"price_update").is_some() {
                        prices += 1;
                    }
                }
                Message::Ping(p) => pong = Some(p.to_vec()),
                Message::Close(_) => closed = true,
                Message::Binary(_) | Message::Pong => {}
            }
        }
        if prices > 0 {
            tally.prices.set(tally.prices.get() + prices);
            tally.last_price.borrow_mut()[index] = Some(Instant::now());
        }
        if let Some(p) = pong {
            conn.send(ws::OP_PONG, &p).await?;
        }
        if closed {
            bail!("closed by the daemon");
        }
    }
}

/// A client that subscribes and never reads; replaced by a fresh one every [`STALL_HOLD`].
async fn stalled(addr: SocketAddr, symbols: Vec<String>, tally: Rc<Tally>) {
    loop {
        if let Ok(mut conn) = open(addr, true).await {
            tally
                .stalled_connections
                .set(tally.stalled_connections.get() + 1);
            let _ = conn.send(ws::OP_TEXT, &subscribe_frame(&symbols)).await;
            tokio::time::sleep(STALL_HOLD).await;
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Starts a short-lived client every [`CHURN_EVERY`].
async fn churn(addr: SocketAddr, symbols: usize, tally: Rc<Tally>) {
    let mut interval = tokio::time::interval(CHURN_EVERY);
    let mut n: usize = 0;
    loop {
        interval.tick().await;
        n += 1;
        tokio::task::spawn_local(short_lived(addr, symbols, n, tally.clone()));
    }
}

/// One short-lived client: a few symbols (some outside the healthy set, so symbols come and go
/// upstream), or garbage; then a clean close or a vanished socket.
async fn short_lived(addr: SocketAddr, symbols: usize, n: usize, tally: Rc<Tally>) {
    let Ok(mut conn) = open(addr, false).await else {
        tally.churn_failures.set(tally.churn_failures.get() + 1);
        return;
    };
    tally
        .churn_connections
        .set(tally.churn_connections.get() + 1);
    let mix = n.wrapping_mul(2_654_435_761);
    if n % 5 == 0 {
        for (opcode, payload) in garbage(n / 5) {
            tally.garbage_sent.set(tally.garbage_sent.get() + 1);
            let mut frame = Vec::new();
            ws::encode(&mut frame, opcode, &payload, Some([1, 2, 3, 4]));
            if opcode == ws::OP_CONTINUATION {
                // Not final: an orphan fragment.
                frame[0] &= 0x7F;
            }
            if http::write_all(&conn.stream, &frame).await.is_err() {
                break;
            }
        }
    } else {
        let own: Vec<String> = (0..3)
            .map(|j| symbol_name((mix >> (j * 8)) % (symbols + 50)))
            .collect();
        let _ = conn.send(ws::OP_TEXT, &subscribe_frame(&own)).await;
    }
    // Read for a moment, noting errors and close codes.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if conn.fill().await.is_err() {
                return;
            }
            while let Ok(Some(message)) = conn.reader.next_message() {
                match message {
                    Message::Text(text) if http::find(text, b"\"type\":\"error\"").is_some() => {
                        tally.garbage_errors.set(tally.garbage_errors.get() + 1);
                    }
                    Message::Close(code) => {
                        *tally
                            .close_codes
                            .borrow_mut()
                            .entry(code.unwrap_or(1005))
                            .or_default() += 1;
                        return;
                    }
                    _ => {}
                }
            }
        }
    })
    .await;
    if n % 2 == 0 {
        let _ = conn.send(ws::OP_CLOSE, &1000u16.to_be_bytes()).await;
    }
    // Dropping the connection closes the socket (abruptly for odd clients).
}

/// The `k`-th kind of garbage: frames a broken or hostile browser might send.
fn garbage(k: usize) -> Vec<(u8, Vec<u8>)> {
    let text = |s: &str| (ws::OP_TEXT, s.as_bytes().to_vec());
    match k % 9 {
        0 => vec![text("not json at all")],
        1 => vec![text(r#"{"action":"dance","symbols":["AAPL"]}"#)],
        2 => vec![(ws::OP_BINARY, vec![0xFF; 64])],
        3 => vec![(ws::OP_TEXT, vec![b'x'; 100 * 1024])],
        4 => {
            let many: Vec<String> = (0..5000).map(|i| format!("??{i}")).collect();
            vec![(
                ws::OP_TEXT,
                json!({"action": "subscribe", "symbols": many})
                    .to_string()
                    .into_bytes(),
            )]
        }
        5 => vec![(ws::OP_CONTINUATION, b"orphan".to_vec())],
        6 => vec![text(
            r#"{"action":"subscribe","symbols":"AAPL","channels":["nope"]}"#,
        )],
        7 => vec![(ws::OP_TEXT, vec![b'"', 0xC3, 0x28, b'"'])],
        _ => vec![text(r#"{"action":"auth","token":"nobody:guess"}"#); 3],
    }
}

fn report(
    args: &Args,
    samples: &[Sample],
    faults: &[Fault],
    tally: &Tally,
    alive: bool,
    panics: u64,
    warnings: u64,
) -> Value {
    let rss: Vec<u64> = samples
        .iter()
        .filter(|s| s.at >= WARMUP)
        .filter_map(|s| s.rss_kb)
        .collect();
    let median = {
        let mut sorted = rss.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied()
    };
    let rss_min = rss.iter().min().copied();
    let rss_max = rss.iter().max().copied();
    let deviation_pct = median.zip(rss_min.zip(rss_max)).map(|(m, (lo, hi))| {
        let m = m as f64;
        ((hi as f64 - m) / m).max((m - lo as f64) / m) * 100.0
    });
    let rss_flat = deviation_pct.is_some_and(|d| d <= 10.0);
    let restore: Vec<Option<f64>> = faults
        .iter()
        .map(|f| f.restored_after.map(|d| d.as_secs_f64()))
        .collect();
    let lost = restore.iter().filter(|r| r.is_none()).count();
    let windows_all_receiving = samples
        .iter()
        .filter(|s| s.receiving == args.clients)
        .count();
    let min_receiving = samples.iter().map(|s| s.receiving).min().unwrap_or(0);
    let pass = rss_flat
        && lost == 0
        && panics == 0
        && alive
        && !faults.is_empty()
        && windows_all_receiving == samples.len();
    json!({
        "mode": "soak",
        "soak_secs": args.soak_secs,
        "clients": args.clients,
        "symbols": args.symbols,
        "symbols_per_client": args.symbols_per_client,
        "stall_clients": args.stall_clients,
        "rss_kb": samples.iter().map(|s| json!([s.at.as_secs(), s.rss_kb])).collect::<Vec<_>>(),
        "rss_after_warmup_kb": {"min": rss_min, "median": median, "max": rss_max},
        "rss_deviation_pct": deviation_pct,
        "rss_flat": rss_flat,
        "faults": faults.iter().map(|f| json!({
            "at_s": f.at.as_secs(),
            "kind": f.kind,
            "restored_s": f.restored_after.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
        })).collect::<Vec<_>>(),
        "faults_not_restored": lost,
        "windows": samples.len(),
        "windows_all_receiving": windows_all_receiving,
        "min_browsers_receiving": min_receiving,
        "sessions": samples.iter().map(|s| s.sessions).collect::<Vec<_>>(),
        "prices_received": tally.prices.get(),
        "healthy_reconnects": tally.healthy_reconnects.get(),
        "stalled_connections": tally.stalled_connections.get(),
        "churn_connections": tally.churn_connections.get(),
        "churn_failures": tally.churn_failures.get(),
        "garbage_frames_sent": tally.garbage_sent.get(),
        "garbage_errors_received": tally.garbage_errors.get(),
        "close_codes": tally.close_codes.borrow().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "daemon_alive": alive,
        "daemon_panics": panics,
        "daemon_warnings": warnings,
        "pass": pass,
    })
}
