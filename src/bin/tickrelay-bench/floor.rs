//! `--floor`: the physical floor of a burst scenario on this machine. No daemon: the harness
//! itself accepts the same browser clients on a loopback WebSocket server and, on one shared
//! clock, sends each of them the burst the daemon would: one write holding one
//! `spot_price_update` per subscribed symbol, every `--throttle-ms`, with the burst's clock time as
//! every update's exchange timestamp. The clients measure latency exactly as against the daemon,
//! so the daemon's figure over this one is what the daemon adds to writing and reading the
//! sockets.
//!
//! The server runs as many threads as the daemon has HTTP workers (2 here), each writing its
//! share of the sockets in turn, as a worker's hub does.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use log::{debug, info};
use tickrelay::browser::{price_update, PriceUpdate, PriceView};
use tickrelay::market::Num;
use tickrelay::symbol::Symbol;
use tickrelay::time::Timestamp;
use tickrelay::vocab::PriceKind;

use crate::clock;
use crate::ws;

/// The burst server.
pub struct Floor {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// One accepted client: its socket and its symbols.
struct Client {
    stream: TcpStream,
    symbols: Vec<Symbol>,
}

impl Floor {
    /// Listens on 127.0.0.1; `workers` threads burst every `interval`.
    pub fn start(workers: usize, interval: Duration) -> anyhow::Result<Floor> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the floor server")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let shares: Vec<Arc<Mutex<Vec<Client>>>> = (0..workers.max(1))
            .map(|_| Arc::new(Mutex::new(Vec::new())))
            .collect();
        let mut threads = Vec::new();
        {
            let shares = shares.clone();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || accept(listener, &shares, &stop)));
        }
        for share in shares {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || burst(&share, interval, &stop)));
        }
        info!("floor: bursting to clients on ws://{addr} every {interval:?}");
        Ok(Floor {
            addr,
            stop,
            threads,
        })
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblocks the accept loop.
        let _ = TcpStream::connect(self.addr);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accepts clients, answers their upgrade and subscribe, and deals them to the burst threads in
/// turn (as the daemon's listener deals connections to its workers).
fn accept(listener: TcpListener, shares: &[Arc<Mutex<Vec<Client>>>], stop: &AtomicBool) {
    let mut next = 0;
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else { continue };
        match handshake(stream) {
            Ok(client) => {
                shares[next % shares.len()].lock().unwrap().push(client);
                next += 1;
            }
            Err(e) => debug!("floor: a client failed its handshake: {e}"),
        }
    }
}

/// The WebSocket upgrade, the welcome, the client's subscribe read and acknowledged.
fn handshake(mut stream: TcpStream) -> anyhow::Result<Client> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let end = read_until(&mut stream, &mut buf, |b| {
        b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
    })?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .context("no Sec-WebSocket-Key")?;
    let accept = actix_http::ws::hash_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        std::str::from_utf8(&accept)?
    );
    stream.write_all(response.as_bytes())?;
    let len = read_until(&mut stream, &mut buf, |b| {
        ws::parse_head(b)
            .map(|h| h.header_len + h.payload_len)
            .filter(|&n| b.len() >= n)
    })?;
    let h = ws::parse_head(&buf).context("a frame header")?;
    let mut subscribe = buf[h.header_len..len].to_vec();
    if let Some(key) = h.mask {
        ws::apply_mask(&mut subscribe, key);
    }
    let request: serde_json::Value = serde_json::from_slice(&subscribe)?;
    let symbols: Vec<Symbol> = request["symbols"]
        .as_array()
        .context("a subscribe with symbols")?
        .iter()
        .filter_map(|s| Symbol::parse(s.as_str()?).ok())
        .collect();
    let ack = serde_json::json!({"type": "subscribed", "symbols": &symbols}).to_string();
    let mut out = Vec::new();
    ws::encode(&mut out, ws::OP_TEXT, ack.as_bytes(), None);
    stream.write_all(&out)?;
    stream.set_read_timeout(None)?;
    Ok(Client { stream, symbols })
}

/// Reads into `buf` until `complete` finds the end of what is wanted; answers that end.
fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    complete: impl Fn(&[u8]) -> Option<usize>,
) -> anyhow::Result<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = complete(buf) {
            return Ok(end);
        }
        let n = stream.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "the client closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Every `interval`, on the wall clock's multiples of it (one clock for every thread), writes each
/// client its burst: one frame per symbol in one write.
fn burst(share: &Mutex<Vec<Client>>, interval: Duration, stop: &AtomicBool) {
    let step = interval.as_nanos() as i64;
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let now = clock::unix_nanos_now();
        let tick = (now / step + 1) * step;
        std::thread::sleep(Duration::from_nanos((tick - now) as u64));
        let at = Timestamp::new(tick / 1_000_000_000, (tick % 1_000_000_000) as u32)
            .expect("a valid clock time");
        let mut clients = share.lock().unwrap();
        // Each symbol's frame serialized once per burst and shared, as the throttles do.
        let mut frames: HashMap<&Symbol, Vec<u8>> = HashMap::new();
        for symbol in clients.iter().flat_map(|c| &c.symbols) {
            frames.entry(symbol).or_insert_with(|| {
                let mut f = Vec::new();
                ws::encode(
                    &mut f,
                    ws::OP_TEXT,
                    update_frame(symbol, at).as_bytes(),
                    None,
                );
                f
            });
        }
        let frames: HashMap<Symbol, Vec<u8>> =
            frames.into_iter().map(|(s, f)| (s.clone(), f)).collect();
        clients.retain_mut(|c| {
            out.clear();
            for symbol in &c.symbols {
                out.extend_from_slice(&frames[symbol]);
            }
            match c.stream.write_all(&out) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(_) => false,
            }
        });
    }
}

/// A `spot_price_update` as the daemon writes it, stamped with the burst's time.
fn update_frame(symbol: &Symbol, at: Timestamp) -> String {
    let view = PriceView {
        bid_price: 187.12,
        ask_price: 187.16,
        bid_size: Num::Int(2),
        ask_size: Num::Int(3),
        last_price: None,
        timestamp: Some(at),
        bid_exchange: None,
        ask_exchange: None,
        conditions: Default::default(),
        tape: None,
        halted: false,
    };
    let update = PriceUpdate::new(symbol, &view, false);
    price_update(PriceKind::Spot, &update, false)
        .frame
        .to_string()
}
