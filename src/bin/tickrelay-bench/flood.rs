//! The flood upstream: a minimal Alpaca stock-stream server on 127.0.0.1 that the daemon
//! connects to, answering the handshake (connected, auth, subscription acks) and then sending
//! quote batches for every symbol subscribed on `quotes`, at a fixed rate or as fast as the
//! socket takes them.
//!
//! It never blocks and never buffers without bound: frames are written with `try_write`; a frame
//! the kernel took only part of is finished later (the stream must stay valid), but batches that
//! fall due while the socket is full are skipped and counted as pushback.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use log::{debug, error, info, warn};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

use crate::clock::{self, push_padded};
use crate::http;
use crate::ws::{self, Message};

/// How often a paced flood sends the batches that fell due.
const TICK: Duration = Duration::from_millis(1);
/// A paced flood catches up on at most this much backlog (e.g. after its thread was starved).
const MAX_CATCH_UP_SECS: f64 = 1.0;
/// An unpaced flood writes at most this many batches before looking at the daemon's messages.
const BURST_BATCHES: usize = 64;
/// Prices wiggle over this many cents; prime, so no sampling interval lines up with it.
const PRICE_WIGGLE_CENTS: u64 = 997;
/// The largest message accepted from the daemon.
const MAX_CLIENT_MESSAGE: usize = 1 << 20;
/// The channel keys of a stock-stream subscription ack, in Alpaca's order.
const CHANNELS: [&str; 10] = [
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "corrections",
    "cancelErrors",
    "imbalances",
];

/// What the flood sends.
#[derive(Clone, Copy, Debug)]
pub struct FloodConfig {
    /// Quotes per second; 0 = as fast as possible.
    pub rate: u64,
    /// Quotes per frame.
    pub batch: usize,
}

/// Counters shared with the harness (over all connections).
#[derive(Debug, Default)]
pub struct FloodStats {
    /// Quotes written (a batch counts once the socket has taken its first byte).
    pub sent: AtomicU64,
    /// Quotes that fell due while the socket was full, skipped.
    pub pushback: AtomicU64,
    pub connections: AtomicU64,
    /// Symbols the latest connection has subscribed on `quotes`.
    pub quote_symbols: AtomicUsize,
    /// The latest connection asked for msgpack.
    pub msgpack: AtomicBool,
}

/// The running flood server; stops (and joins its thread) when dropped.
pub struct Flood {
    pub port: u16,
    pub stats: Arc<FloodStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    /// Binds 127.0.0.1:0 and serves on a thread of its own.
    pub fn start(config: FloodConfig) -> anyhow::Result<Flood> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the flood")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stats = Arc::new(FloodStats::default());
        let (stop, stopped) = oneshot::channel();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("flood".into())
            .spawn(move || run_thread(listener, config, thread_stats, stopped))?;
        info!("flood: listening on ws://127.0.0.1:{port}");
        Ok(Flood {
            port,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_thread(
    listener: std::net::TcpListener,
    config: FloodConfig,
    stats: Arc<FloodStats>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return error!("flood: cannot start a runtime: {e}"),
    };
    runtime.block_on(async move {
        tokio::select! {
            result = accept_loop(listener, config, stats) => {
                if let Err(e) = result {
                    error!("flood: accepting failed: {e:#}");
                }
            }
            _ = stopped => {}
        }
    });
}

async fn accept_loop(
    listener: std::net::TcpListener,
    config: FloodConfig,
    stats: Arc<FloodStats>,
) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    loop {
        let (stream, peer) = listener.accept().await?;
        let stats = stats.clone();
        tokio::spawn(async move {
            match serve(stream, config, stats).await {
                Ok(()) => info!("flood: connection from {peer} closed"),
                // The daemon going away mid-write (e.g. at shutdown) is not a failure.
                Err(e) if is_disconnect(&e) => info!("flood: connection from {peer} dropped ({e})"),
                Err(e) => warn!("flood: connection from {peer} failed: {e:#}"),
            }
        });
    }
}

fn is_disconnect(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        )
    })
}

/// One upstream connection: the WebSocket handshake, then the Alpaca protocol and the flood.
async fn serve(
    stream: TcpStream,
    config: FloodConfig,
    stats: Arc<FloodStats>,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (head, leftover) = http::read_head(&stream).await?;
    let key = head
        .header("sec-websocket-key")
        .context("not a WebSocket upgrade (no Sec-WebSocket-Key)")?;
    let msgpack = head
        .header("content-type")
        .is_some_and(|v| v.to_ascii_lowercase().contains("msgpack"));
    let accept = actix_http::ws::hash_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        String::from_utf8_lossy(&accept)
    );
    http::write_all(&stream, response.as_bytes()).await?;
    stats.connections.fetch_add(1, Ordering::Relaxed);
    stats.msgpack.store(msgpack, Ordering::Relaxed);
    info!(
        "flood: daemon connected ({}, {})",
        head.first_line,
        if msgpack { "msgpack" } else { "json" }
    );
    let mut reader = ws::Reader::new(8192, MAX_CLIENT_MESSAGE);
    reader.extend(&leftover);
    let mut conn = Connection::new(config, msgpack, stats);
    conn.queue_control(&json!([{"T": "success", "msg": "connected"}]))?;
    conn.run(&stream, &mut reader).await
}

/// The state of one connection.
struct Connection {
    config: FloodConfig,
    msgpack: bool,
    stats: Arc<FloodStats>,
    /// The subscribed symbols per channel key.
    subscriptions: BTreeMap<&'static str, BTreeSet<String>>,
    /// The `quotes` symbols, in round-robin order.
    quotes: Vec<String>,
    next_symbol: usize,
    /// Counts quotes, so each one's prices differ from the last.
    seq: u64,
    /// Bytes that must reach the socket before anything else: the rest of a frame it took only
    /// part of, and control frames. Bounded: batches are never queued here whole.
    unsent: Vec<u8>,
    unsent_pos: usize,
    /// Scratch space for encoding one batch frame.
    frame: Vec<u8>,
    /// Quotes due but not yet sent (paced mode), and when they were last topped up.
    credit: f64,
    last_tick: Instant,
    closing: bool,
}

impl Connection {
    fn new(config: FloodConfig, msgpack: bool, stats: Arc<FloodStats>) -> Self {
        Connection {
            config,
            msgpack,
            stats,
            subscriptions: CHANNELS.iter().map(|&c| (c, BTreeSet::new())).collect(),
            quotes: Vec::new(),
            next_symbol: 0,
            seq: 0,
            unsent: Vec::new(),
            unsent_pos: 0,
            frame: Vec::with_capacity(64 * 1024),
            credit: 0.0,
            last_tick: Instant::now(),
            closing: false,
        }
    }

    async fn run(&mut self, stream: &TcpStream, reader: &mut ws::Reader) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let paced = self.config.rate > 0;
        loop {
            let has_unsent = self.unsent_pos < self.unsent.len();
            if self.closing && !has_unsent {
                return Ok(());
            }
            let want_write = has_unsent || (!paced && !self.quotes.is_empty());
            tokio::select! {
                ready = stream.readable(), if !self.closing => {
                    ready?;
                    if !self.on_readable(stream, reader)? {
                        return Ok(());
                    }
                }
                _ = ticker.tick(), if paced && !self.closing => self.on_tick(stream)?,
                ready = stream.writable(), if want_write => {
                    ready?;
                    self.on_writable(stream)?;
                }
            }
        }
    }

    /// Reads and handles what the daemon sent; `false` once it has closed the connection.
    fn on_readable(&mut self, stream: &TcpStream, reader: &mut ws::Reader) -> anyhow::Result<bool> {
        loop {
            match reader.fill(stream) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e.into()),
            }
            while let Some(message) = reader.next_message()? {
                match message {
                    Message::Text(text) => self.on_client_message(text, false)?,
                    Message::Binary(data) => self.on_client_message(data, true)?,
                    Message::Ping(payload) => {
                        let payload = payload.to_vec();
                        self.queue_frame(ws::OP_PONG, &payload);
                    }
                    Message::Pong => {}
                    Message::Close(code) => {
                        debug!("flood: the daemon closed the stream ({code:?})");
                        self.queue_frame(ws::OP_CLOSE, &code.unwrap_or(1000).to_be_bytes());
                        self.closing = true;
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// `auth`, `subscribe` and `unsubscribe` (JSON text, or msgpack in binary frames).
    fn on_client_message(&mut self, data: &[u8], binary: bool) -> anyhow::Result<()> {
        let message: Value = if binary {
            rmp_serde::from_slice(data).context("a binary frame that is not msgpack")?
        } else {
            serde_json::from_slice(data).context("a text frame that is not JSON")?
        };
        match message.get("action").and_then(Value::as_str) {
            Some("auth") => self.queue_control(&json!([{"T": "success", "msg": "authenticated"}])),
            Some(action @ ("subscribe" | "unsubscribe")) => {
                self.update_subscriptions(&message, action == "subscribe");
                let ack = self.subscription_ack();
                self.queue_control(&ack)
            }
            other => {
                warn!("flood: unexpected message from the daemon: action {other:?}");
                self.queue_control(&json!([{"T": "error", "code": 400, "msg": "invalid syntax"}]))
            }
        }
    }

    fn update_subscriptions(&mut self, message: &Value, subscribe: bool) {
        for (key, symbols) in self.subscriptions.iter_mut() {
            let Some(list) = message.get(*key).and_then(Value::as_array) else {
                continue;
            };
            for symbol in list.iter().filter_map(Value::as_str) {
                if subscribe {
                    symbols.insert(symbol.to_string());
                } else {
                    symbols.remove(symbol);
                }
            }
        }
        // Like Alpaca: corrections and cancel/errors follow the trades.
        let trades = self
            .subscriptions
            .get("trades")
            .cloned()
            .unwrap_or_default();
        self.subscriptions.insert("corrections", trades.clone());
        self.subscriptions.insert("cancelErrors", trades);
        self.quotes = self
            .subscriptions
            .get("quotes")
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        self.next_symbol = 0;
        self.stats
            .quote_symbols
            .store(self.quotes.len(), Ordering::Relaxed);
        debug!("flood: {} quote symbols subscribed", self.quotes.len());
    }

    /// `[{"T":"subscription", …}]` listing the full current sets.
    fn subscription_ack(&self) -> Value {
        let mut ack = serde_json::Map::new();
        ack.insert("T".into(), "subscription".into());
        for key in CHANNELS {
            let symbols = self.subscriptions.get(key).into_iter().flatten();
            ack.insert(key.into(), symbols.cloned().collect::<Vec<_>>().into());
        }
        Value::Array(vec![Value::Object(ack)])
    }

    /// Queues a control message in the connection's encoding.
    fn queue_control(&mut self, message: &Value) -> anyhow::Result<()> {
        if self.msgpack {
            let bytes = rmp_serde::to_vec_named(message)?;
            self.queue_frame(ws::OP_BINARY, &bytes);
        } else {
            self.queue_frame(ws::OP_TEXT, message.to_string().as_bytes());
        }
        Ok(())
    }

    fn queue_frame(&mut self, opcode: u8, payload: &[u8]) {
        ws::encode(&mut self.unsent, opcode, payload, None);
    }

    /// Writes what is unsent; `true` when nothing is left.
    fn flush(&mut self, stream: &TcpStream) -> io::Result<bool> {
        while self.unsent_pos < self.unsent.len() {
            match stream.try_write(&self.unsent[self.unsent_pos..]) {
                Ok(n) => self.unsent_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.unsent.clear();
        self.unsent_pos = 0;
        Ok(true)
    }

    /// Paced mode: sends the batches that fell due; those the socket will not take are skipped
    /// and counted as pushback.
    fn on_tick(&mut self, stream: &TcpStream) -> anyhow::Result<()> {
        let due = self.take_due_batches();
        if due == 0 {
            return Ok(());
        }
        let mut sent = 0;
        if self.flush(stream)? {
            while sent < due && self.send_batch(stream)? {
                sent += 1;
                if !self.unsent.is_empty() {
                    break;
                }
            }
        }
        let skipped = (due - sent) * self.config.batch as u64;
        self.stats.pushback.fetch_add(skipped, Ordering::Relaxed);
        Ok(())
    }

    /// Whole batches due since the last tick at the configured rate.
    fn take_due_batches(&mut self) -> u64 {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        if self.quotes.is_empty() {
            self.credit = 0.0;
            return 0;
        }
        let batch = self.config.batch as f64;
        let rate = self.config.rate as f64;
        self.credit = (self.credit + rate * elapsed).min((rate * MAX_CATCH_UP_SECS).max(batch));
        let batches = (self.credit / batch).floor();
        self.credit -= batches * batch;
        batches as u64
    }

    /// The socket has room: finish what is unsent, and in unpaced mode flood.
    fn on_writable(&mut self, stream: &TcpStream) -> anyhow::Result<()> {
        if !self.flush(stream)? || self.config.rate > 0 || self.closing {
            return Ok(());
        }
        for _ in 0..BURST_BATCHES {
            if self.quotes.is_empty() || !self.send_batch(stream)? || !self.unsent.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Encodes the next batch and writes it; `false` when the socket took none of it. What it
    /// took only part of goes to `unsent`.
    fn send_batch(&mut self, stream: &TcpStream) -> anyhow::Result<bool> {
        let start = self.encode_batch()?;
        match stream.try_write(&self.frame[start..]) {
            Ok(n) => {
                if start + n < self.frame.len() {
                    self.unsent.extend_from_slice(&self.frame[start + n..]);
                }
                let batch = self.config.batch as u64;
                self.stats.sent.fetch_add(batch, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Encodes the next `batch` quotes as one frame into `self.frame`; returns where it starts
    /// (the header is written just before the payload, so the frame is one contiguous slice).
    fn encode_batch(&mut self) -> anyhow::Result<usize> {
        if self.quotes.is_empty() {
            bail!("no quote symbols subscribed");
        }
        let now = clock::unix_nanos_now();
        self.frame.clear();
        self.frame.resize(ws::MAX_HEADER, 0);
        let opcode = if self.msgpack {
            rmp::encode::write_array_len(&mut self.frame, self.config.batch as u32)?;
            ws::OP_BINARY
        } else {
            self.frame.push(b'[');
            ws::OP_TEXT
        };
        for i in 0..self.config.batch {
            let index = self.next_symbol;
            self.next_symbol = (self.next_symbol + 1) % self.quotes.len();
            self.seq += 1;
            let quote = Quote::new(&self.quotes[index], index, self.seq, now);
            if self.msgpack {
                quote.write_msgpack(&mut self.frame)?;
            } else {
                if i > 0 {
                    self.frame.push(b',');
                }
                quote.write_json(&mut self.frame);
            }
        }
        if !self.msgpack {
            self.frame.push(b']');
        }
        let mut head = [0; ws::MAX_HEADER];
        let len = self.frame.len() - ws::MAX_HEADER;
        let n = ws::write_head(&mut head, opcode, len, None);
        let start = ws::MAX_HEADER - n;
        self.frame[start..ws::MAX_HEADER].copy_from_slice(&head[..n]);
        Ok(start)
    }
}

/// One stock quote as the flood sends it.
struct Quote<'a> {
    symbol: &'a str,
    bid_cents: u64,
    ask_cents: u64,
    bid_size: u64,
    ask_size: u64,
    /// Exchange time: when the flood sent it.
    nanos: i64,
}

impl<'a> Quote<'a> {
    /// Prices around $100–$500 per symbol, a few dollars of wiggle. The wiggle follows the
    /// clock as well as the sequence number, so consecutive quotes differ and the values a
    /// throttle samples every interval do not repeat in step with it.
    fn new(symbol: &'a str, symbol_index: usize, seq: u64, nanos: i64) -> Self {
        let micros = nanos.max(0) as u64 / 1000;
        let bid_cents =
            10_000 + (symbol_index as u64 % 400) * 100 + (micros + seq) % PRICE_WIGGLE_CENTS;
        Quote {
            symbol,
            bid_cents,
            ask_cents: bid_cents + 1 + seq % 3,
            bid_size: 1 + seq % 7,
            ask_size: 1 + (seq / 7) % 5,
            nanos,
        }
    }

    /// `{"T":"q","S":…,"bx":"V","bp":…,"bs":…,"ax":"V","ap":…,"as":…,"c":["R"],"z":"C","t":…}`
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"T\":\"q\",\"S\":\"");
        out.extend_from_slice(self.symbol.as_bytes());
        out.extend_from_slice(b"\",\"bx\":\"V\",\"bp\":");
        push_cents(out, self.bid_cents);
        out.extend_from_slice(b",\"bs\":");
        push_padded(out, self.bid_size, 1);
        out.extend_from_slice(b",\"ax\":\"V\",\"ap\":");
        push_cents(out, self.ask_cents);
        out.extend_from_slice(b",\"as\":");
        push_padded(out, self.ask_size, 1);
        out.extend_from_slice(b",\"c\":[\"R\"],\"z\":\"C\",\"t\":\"");
        clock::write_rfc3339(out, self.nanos);
        out.extend_from_slice(b"\"}");
    }

    /// The same keys as a msgpack map; sizes stay integers, prices are floats and `t` is a
    /// msgpack timestamp (ext -1, 12-byte form), as Alpaca sends them.
    fn write_msgpack(&self, out: &mut Vec<u8>) -> anyhow::Result<()> {
        use rmp::encode::{write_array_len, write_f64, write_map_len, write_str, write_uint};
        write_map_len(out, 11)?;
        for (key, value) in [
            ("T", "q"),
            ("S", self.symbol),
            ("bx", "V"),
            ("ax", "V"),
            ("z", "C"),
        ] {
            write_str(out, key)?;
            write_str(out, value)?;
        }
        write_str(out, "bp")?;
        write_f64(out, self.bid_cents as f64 / 100.0)?;
        write_str(out, "bs")?;
        write_uint(out, self.bid_size)?;
        write_str(out, "ap")?;
        write_f64(out, self.ask_cents as f64 / 100.0)?;
        write_str(out, "as")?;
        write_uint(out, self.ask_size)?;
        write_str(out, "c")?;
        write_array_len(out, 1)?;
        write_str(out, "R")?;
        write_str(out, "t")?;
        let (secs, nanos) = clock::split_nanos(self.nanos);
        rmp::encode::write_ext_meta(out, 12, -1)?;
        out.extend_from_slice(&nanos.to_be_bytes());
        out.extend_from_slice(&secs.to_be_bytes());
        Ok(())
    }
}

/// Appends cents as a decimal price with two digits: 19012 → `190.12`.
fn push_cents(out: &mut Vec<u8>, cents: u64) {
    push_padded(out, cents / 100, 1);
    out.push(b'.');
    push_padded(out, cents % 100, 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote() -> Quote<'static> {
        Quote::new("S0001", 1, 5, 1_768_921_445_123_456_789)
    }

    #[test]
    fn json_quotes_have_alpacas_shape() {
        let mut out = Vec::new();
        quote().write_json(&mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["T"], "q");
        assert_eq!(v["S"], "S0001");
        // 1_768_921_445_123_456 µs + 5 ≡ 429 (mod 997), on a base of $101.
        assert_eq!(v["bp"], 105.29);
        assert_eq!(v["bs"], 6);
        assert_eq!(v["c"], json!(["R"]));
        assert_eq!(v["t"], "2026-01-20T15:04:05.123456789Z");
    }

    #[test]
    fn msgpack_quotes_carry_a_timestamp_extension() {
        let mut out = Vec::new();
        quote().write_msgpack(&mut out).unwrap();
        // The 12-byte timestamp is the tail: ext8 marker, length 12, type -1, nanos, seconds.
        let tail = &out[out.len() - 15..];
        assert_eq!(&tail[..3], &[0xc7, 12, 0xff]);
        assert_eq!(
            u32::from_be_bytes(tail[3..7].try_into().unwrap()),
            123_456_789
        );
        assert_eq!(
            i64::from_be_bytes(tail[7..].try_into().unwrap()),
            1_768_921_445
        );
        let map: BTreeMap<String, serde::de::IgnoredAny> = rmp_serde::from_slice(&out).unwrap();
        assert_eq!(map.len(), 11);
    }

    #[test]
    fn paced_batches_follow_the_rate() {
        let config = FloodConfig {
            rate: 1000,
            batch: 10,
        };
        let mut conn = Connection::new(config, false, Arc::default());
        conn.quotes = vec!["S0000".into()];
        conn.last_tick = Instant::now() - Duration::from_millis(100);
        // 100 ms at 1000/s is 100 quotes: 10 batches.
        let due = conn.take_due_batches();
        assert!((10..=11).contains(&due), "{due}");
        conn.quotes.clear();
        conn.last_tick = Instant::now() - Duration::from_secs(5);
        assert_eq!(conn.take_due_batches(), 0, "nothing is due without symbols");
    }

    #[test]
    fn encodes_a_batch_frame() {
        let config = FloodConfig { rate: 0, batch: 3 };
        let mut conn = Connection::new(config, false, Arc::default());
        conn.quotes = vec!["A".into(), "B".into()];
        let start = conn.encode_batch().unwrap();
        let mut reader = ws::Reader::new(64, 1 << 20);
        reader.extend(&conn.frame[start..]);
        let Some(Message::Text(text)) = reader.next_message().unwrap() else {
            panic!("not a text frame");
        };
        let v: Value = serde_json::from_slice(text).unwrap();
        let symbols: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["S"].clone())
            .collect();
        assert_eq!(symbols, vec![json!("A"), json!("B"), json!("A")]);
        assert_ne!(
            v[0]["bp"], v[2]["bp"],
            "consecutive quotes of a symbol differ"
        );
    }
}
