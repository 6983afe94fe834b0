//! The clients: many WebSocket connections to the daemon's `/ws` (browsers) or `/v2/iex` (Alpaca
//! SDK programs, with `--protocol sdk`), each subscribing to a window of symbols and counting what
//! arrives, plus "stall" clients that subscribe and then never read.
//!
//! All clients run on one or a few OS threads, each a current-thread runtime with a `LocalSet`,
//! so per-thread statistics live in a `RefCell` without locks. Frames are decoded by hand
//! ([`crate::ws`]) and read with a scan ([`crate::scan`]), and only while the measurement window
//! is open: outside it a client just drains its socket.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use log::{debug, warn};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::LocalSet;

use crate::args::Encoding;
use crate::clock;
use crate::http;
use crate::scan::{self, Control, Scan};
use crate::sdk;
use crate::stats::ClientStats;
use crate::sys;
use crate::ws::{self, Message};

/// The key pair SDK clients authenticate with (the harness configures it in the daemon).
pub const SDK_KEY: &str = "bench-client";
pub const SDK_SECRET: &str = "bench-client-secret";

/// The key every client sends; the accept value is checked against it.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// Receive buffer of a stall client: small, so the daemon's send path backs up quickly.
pub const STALL_RCVBUF: u32 = 4096;
/// Initial read buffer per client (grows for larger frames).
const READ_BUFFER: usize = 8192;
/// The largest message a client accepts.
const MAX_MESSAGE: usize = 16 << 20;
/// How many error messages are kept for the report.
const KEPT_ERRORS: usize = 5;

/// What the clients do.
#[derive(Clone, Debug)]
pub struct ClientsConfig {
    pub addr: SocketAddr,
    pub clients: usize,
    pub stall_clients: usize,
    pub symbols: usize,
    pub symbols_per_client: usize,
    pub batched: bool,
    /// SDK programs on `/v2/iex` in this encoding, instead of browsers on `/ws`.
    pub sdk: Option<Encoding>,
    pub threads: usize,
    /// How many nice levels lower the client threads run.
    pub nice: i32,
    pub concurrency: usize,
    pub connect_timeout: Duration,
}

impl ClientsConfig {
    /// Client `index` subscribes to `symbols_per_client` symbols from `(index * k) mod symbols`,
    /// so together the clients cover every symbol.
    pub fn symbols_of(&self, index: usize) -> Vec<String> {
        let k = self.symbols_per_client;
        let start = (index * k) % self.symbols;
        (0..k)
            .map(|j| symbol_name((start + j) % self.symbols))
            .collect()
    }
}

/// `S0000`, `S0001`, …
pub fn symbol_name(i: usize) -> String {
    format!("S{i:04}")
}

/// Progress and outcomes, shared by the client threads and the harness.
#[derive(Debug, Default)]
pub struct Shared {
    /// The measurement window is open: count and time what arrives.
    pub measuring: AtomicBool,
    /// WebSocket upgrades that succeeded.
    pub connected: AtomicUsize,
    /// Clients that got their `subscribed` ack.
    pub acked: AtomicUsize,
    /// Clients that never got one (connect, upgrade or subscribe failed or timed out).
    pub failed: AtomicUsize,
    pub stall_acked: AtomicUsize,
    pub stall_failed: AtomicUsize,
    /// Subscribed clients whose connection ended before the run did.
    pub disconnected: AtomicUsize,
    errors: Mutex<ErrorLog>,
}

/// What went wrong, in brief.
#[derive(Clone, Debug, Default)]
pub struct ErrorLog {
    pub count: u64,
    /// The first few messages.
    pub first: Vec<String>,
    /// Close codes the daemon sent to subscribed clients, and how often.
    pub close_codes: BTreeMap<u16, u64>,
}

impl Shared {
    /// Every client has been acked or has failed.
    pub fn settled(&self, clients: usize, stall_clients: usize) -> bool {
        let done = |a: &AtomicUsize, b: &AtomicUsize| {
            a.load(Ordering::Relaxed) + b.load(Ordering::Relaxed)
        };
        done(&self.acked, &self.failed) >= clients
            && done(&self.stall_acked, &self.stall_failed) >= stall_clients
    }

    pub fn errors(&self) -> ErrorLog {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn note_error(&self, message: String) {
        debug!("client: {message}");
        if let Ok(mut log) = self.errors.lock() {
            log.count += 1;
            if log.first.len() < KEPT_ERRORS {
                log.first.push(message);
            }
        }
    }

    fn note_close(&self, code: Option<u16>) {
        if let Ok(mut log) = self.errors.lock() {
            *log.close_codes.entry(code.unwrap_or(1005)).or_default() += 1;
        }
    }
}

/// The client threads; stopping them returns what they measured.
pub struct ClientPool {
    threads: Vec<(oneshot::Sender<()>, JoinHandle<ClientStats>)>,
}

impl ClientPool {
    /// Starts the client threads; the clients connect at once, `concurrency` at a time.
    pub fn start(config: ClientsConfig, shared: Arc<Shared>) -> anyhow::Result<ClientPool> {
        let config = Arc::new(config);
        let mut threads = Vec::with_capacity(config.threads);
        for thread in 0..config.threads {
            let (stop, stopped) = oneshot::channel();
            let (config, shared) = (config.clone(), shared.clone());
            let handle = std::thread::Builder::new()
                .name(format!("clients-{thread}"))
                .spawn(move || run_thread(thread, config, shared, stopped))
                .context("starting a client thread")?;
            threads.push((stop, handle));
        }
        Ok(ClientPool { threads })
    }

    /// Stops every client (closing its connection) and merges the threads' statistics.
    pub fn stop(mut self) -> ClientStats {
        let mut total = ClientStats::default();
        for stats in self.join_all() {
            total.merge(&stats);
        }
        total
    }

    fn join_all(&mut self) -> Vec<ClientStats> {
        // Signal every thread before joining any, so they wind down together.
        let handles: Vec<_> = std::mem::take(&mut self.threads)
            .into_iter()
            .map(|(stop, handle)| {
                let _ = stop.send(());
                handle
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    }
}

impl Drop for ClientPool {
    fn drop(&mut self) {
        self.join_all();
    }
}

/// One client thread's state, shared by its clients.
struct ThreadCtx {
    config: Arc<ClientsConfig>,
    shared: Arc<Shared>,
    stats: RefCell<ClientStats>,
    permits: Semaphore,
}

fn run_thread(
    thread: usize,
    config: Arc<ClientsConfig>,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) -> ClientStats {
    if config.nice > 0 {
        if let Err(e) = sys::lower_thread_priority(config.nice) {
            shared.note_error(format!(
                "client thread {thread}: cannot lower its priority: {e}"
            ));
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shared.note_error(format!("client thread {thread}: no runtime: {e}"));
            return ClientStats::default();
        }
    };
    let permits = (config.concurrency / config.threads).max(1);
    let ctx = Rc::new(ThreadCtx {
        config: config.clone(),
        shared,
        stats: RefCell::default(),
        permits: Semaphore::new(permits),
    });
    let local = LocalSet::new();
    let total = config.clients + config.stall_clients;
    for index in (thread..total).step_by(config.threads) {
        local.spawn_local(client(ctx.clone(), index));
    }
    local.block_on(&runtime, async {
        let _ = stopped.await;
    });
    // Dropping the LocalSet drops every client task and so closes its connection.
    drop(local);
    ctx.stats.take()
}

/// One client's life: connect and subscribe (at most `concurrency` at a time per process), then
/// read prices until stopped, or hold the connection without reading (stall clients).
async fn client(ctx: Rc<ThreadCtx>, index: usize) {
    let stall = index >= ctx.config.clients;
    let symbols = ctx.config.symbols_of(index);
    let permit = ctx.permits.acquire().await;
    let connecting = connect(&ctx, index, &symbols, stall);
    let outcome = tokio::time::timeout(ctx.config.connect_timeout, connecting).await;
    drop(permit);
    let shared = &ctx.shared;
    let mut conn = match outcome {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return fail(&ctx, index, stall, format!("{e:#}")),
        Err(_) => return fail(&ctx, index, stall, "connect + subscribe timed out".into()),
    };
    if stall {
        shared.stall_acked.fetch_add(1, Ordering::Relaxed);
        // Hold the connection and never read again.
        return std::future::pending::<()>().await;
    }
    shared.acked.fetch_add(1, Ordering::Relaxed);
    let slot = {
        let mut stats = ctx.stats.borrow_mut();
        stats.client_updates.push(0);
        stats.client_updates.len() - 1
    };
    if let Err(e) = conn.stream_prices(&ctx, slot).await {
        shared.disconnected.fetch_add(1, Ordering::Relaxed);
        shared.note_error(format!("client {index}: {e:#}"));
    }
}

fn fail(ctx: &ThreadCtx, index: usize, stall: bool, message: String) {
    let counter = if stall {
        &ctx.shared.stall_failed
    } else {
        &ctx.shared.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let kind = if stall { "stall client" } else { "client" };
    ctx.shared.note_error(format!("{kind} {index}: {message}"));
}

/// TCP connect, WebSocket upgrade, optional `configure`, `subscribe`, and the ack.
async fn connect(
    ctx: &ThreadCtx,
    index: usize,
    symbols: &[String],
    stall: bool,
) -> anyhow::Result<Conn> {
    let addr = ctx.config.addr;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if stall {
        // Before connect, so the small window is what the daemon sees from the start.
        socket.set_recv_buffer_size(STALL_RCVBUF)?;
    }
    let stream = socket.connect(addr).await.context("TCP connect")?;
    stream.set_nodelay(true)?;
    let mut conn = upgrade(stream, addr, index, ctx.config.sdk).await?;
    ctx.shared.connected.fetch_add(1, Ordering::Relaxed);
    if let Some(encoding) = ctx.config.sdk {
        for request in [sdk::auth(SDK_KEY, SDK_SECRET), sdk::subscribe(symbols)] {
            let (payload, binary) = sdk::request(&request, encoding);
            let op = if binary { ws::OP_BINARY } else { ws::OP_TEXT };
            conn.send(op, &payload).await?;
        }
        conn.await_ack().await?;
        return Ok(conn);
    }
    if ctx.config.batched && !stall {
        conn.send(ws::OP_TEXT, br#"{"action":"configure","batch":true}"#)
            .await?;
    }
    let subscribe = serde_json::json!({"action": "subscribe", "symbols": symbols}).to_string();
    conn.send(ws::OP_TEXT, subscribe.as_bytes()).await?;
    conn.await_ack().await?;
    Ok(conn)
}

pub async fn upgrade(
    stream: TcpStream,
    addr: SocketAddr,
    index: usize,
    sdk: Option<Encoding>,
) -> anyhow::Result<Conn> {
    let (path, extra) = match sdk {
        None => ("/ws", ""),
        Some(Encoding::Json) => ("/v2/iex", ""),
        Some(Encoding::Msgpack) => ("/v2/iex", "Content-Type: application/msgpack\r\n"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    http::write_all(&stream, request.as_bytes()).await?;
    let (head, leftover) = http::read_head(&stream).await?;
    if head.status() != Some(101) {
        bail!("upgrade refused: {}", head.first_line);
    }
    let expected = actix_http::ws::hash_key(WS_KEY.as_bytes());
    if head.header("sec-websocket-accept").map(str::as_bytes) != Some(&expected[..]) {
        bail!("wrong Sec-WebSocket-Accept");
    }
    let mut reader = ws::Reader::new(READ_BUFFER, MAX_MESSAGE);
    reader.extend(&leftover);
    Ok(Conn {
        stream,
        reader,
        // Client frames must be masked; the key need not be secret here.
        mask: (index as u32 ^ 0x5bd1_e995)
            .wrapping_mul(0x9e37_79b1)
            .to_ne_bytes(),
        out: Vec::new(),
        timestamps: Vec::new(),
        sdk: sdk.is_some(),
    })
}

/// One open WebSocket connection.
pub struct Conn {
    pub stream: TcpStream,
    pub reader: ws::Reader,
    mask: [u8; 4],
    /// Scratch for outgoing frames.
    out: Vec<u8>,
    /// Scratch for the timestamps of one frame's updates.
    timestamps: Vec<i64>,
    /// An SDK program (Alpaca's protocol) rather than a browser.
    sdk: bool,
}

impl Conn {
    /// Sends one masked frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.out.clear();
        ws::encode(&mut self.out, opcode, payload, Some(self.mask));
        http::write_all(&self.stream, &self.out).await
    }

    /// Reads what the socket has; errors when the daemon closed it.
    pub async fn fill(&mut self) -> anyhow::Result<()> {
        loop {
            self.stream.readable().await?;
            match self.reader.fill(&self.stream) {
                Ok(0) => bail!("the daemon closed the connection"),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads until the `subscribed` ack (SDK: the `subscription` ack); an `error` or a close
    /// before it fails.
    pub async fn await_ack(&mut self) -> anyhow::Result<()> {
        loop {
            self.fill().await?;
            let mut pong = None;
            while let Some(message) = self.reader.next_message()? {
                match message {
                    Message::Text(data) | Message::Binary(data) if self.sdk => {
                        match sdk::control(data) {
                            sdk::Control::Subscription => return Ok(()),
                            sdk::Control::Error => bail!("refused: {}", excerpt(data)),
                            sdk::Control::Other => {}
                        }
                    }
                    Message::Text(text) => match scan::scan(text, &mut self.timestamps) {
                        Scan::Control(Control::Subscribed) => return Ok(()),
                        Scan::Control(Control::Error) => {
                            bail!("refused: {}", excerpt(text))
                        }
                        _ => {}
                    },
                    Message::Ping(payload) => pong = Some(payload.to_vec()),
                    Message::Close(code) => bail!("closed by the daemon ({code:?})"),
                    Message::Binary(_) | Message::Pong => {}
                }
            }
            if let Some(payload) = pong {
                self.send(ws::OP_PONG, &payload).await?;
            }
        }
    }

    /// Reads prices until the connection ends (or the task is dropped at the end of the run),
    /// counting them while the measurement window is open.
    async fn stream_prices(&mut self, ctx: &ThreadCtx, slot: usize) -> anyhow::Result<()> {
        loop {
            self.fill().await?;
            let drained = self.drain(ctx, slot)?;
            if let Some(payload) = drained.pong {
                self.send(ws::OP_PONG, &payload).await?;
            }
            if let Some(code) = drained.closed {
                ctx.shared.note_close(code);
                let echo = code.unwrap_or(1000).to_be_bytes();
                let _ = self.send(ws::OP_CLOSE, &echo).await;
                bail!("closed by the daemon ({code:?})");
            }
        }
    }

    /// Handles every whole message buffered; synchronous, so the thread's statistics are
    /// borrowed only between awaits.
    fn drain(&mut self, ctx: &ThreadCtx, slot: usize) -> anyhow::Result<Drained> {
        // One clock read per socket read: the frames in it all arrived together.
        let received = clock::unix_nanos_now();
        let measuring = ctx.shared.measuring.load(Ordering::Relaxed);
        let mut stats = ctx.stats.borrow_mut();
        let mut drained = Drained::default();
        while let Some(message) = self.reader.next_message()? {
            match message {
                Message::Text(data) | Message::Binary(data) if measuring && self.sdk => {
                    let binary = matches!(message, Message::Binary(_));
                    stats.frames += 1;
                    let quotes = sdk::quotes(data, binary, &mut self.timestamps);
                    stats.updates += quotes;
                    stats.client_updates[slot] += quotes;
                    stats.untimed += quotes.saturating_sub(self.timestamps.len() as u64);
                    for &exchange in &self.timestamps {
                        stats.record_latency(received, exchange);
                    }
                }
                Message::Text(text) if measuring => {
                    let updates = record(&mut stats, text, received, &mut self.timestamps);
                    stats.client_updates[slot] += updates;
                }
                Message::Ping(payload) => drained.pong = Some(payload.to_vec()),
                Message::Close(code) => {
                    drained.closed = Some(code);
                    break;
                }
                Message::Text(_) | Message::Binary(_) | Message::Pong => {}
            }
        }
        Ok(drained)
    }
}

/// What [`Conn::drain`] leaves to do.
#[derive(Debug, Default)]
struct Drained {
    /// The payload of the last ping, to answer.
    pong: Option<Vec<u8>>,
    /// The daemon closed the connection, with this code.
    closed: Option<Option<u16>>,
}

/// Counts one text frame received at `received`; returns its price updates.
fn record(stats: &mut ClientStats, text: &[u8], received: i64, timestamps: &mut Vec<i64>) -> u64 {
    stats.frames += 1;
    let Scan::Prices(prices) = scan::scan(text, timestamps) else {
        return 0;
    };
    stats.updates += prices.updates;
    stats.snapshots += u64::from(prices.snapshot);
    stats.untimed += prices.untimed;
    stats.parse_fallbacks += u64::from(prices.fallback);
    for &exchange in timestamps.iter() {
        stats.record_latency(received, exchange);
    }
    if let Some(written) = prices.written.filter(|_| !prices.snapshot) {
        stats.record_delivery(received, written);
    }
    prices.updates
}

/// The start of a frame, for error messages.
fn excerpt(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.into_owned(),
    }
}

/// Logs a summary of client errors (the first few verbatim).
pub fn log_errors(errors: &ErrorLog) {
    if errors.count == 0 {
        return;
    }
    warn!("clients: {} errors; the first:", errors.count);
    for e in &errors.first {
        warn!("  {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(clients: usize, symbols: usize, k: usize) -> ClientsConfig {
        ClientsConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            clients,
            stall_clients: 0,
            symbols,
            symbols_per_client: k,
            batched: false,
            sdk: None,
            threads: 1,
            nice: 0,
            concurrency: 1,
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn windows_cover_every_symbol() {
        let c = config(3, 7, 3);
        assert_eq!(c.symbols_of(0), ["S0000", "S0001", "S0002"]);
        assert_eq!(c.symbols_of(2), ["S0006", "S0000", "S0001"]);
        let mut seen: Vec<String> = (0..3).flat_map(|i| c.symbols_of(i)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 7);
    }
}
