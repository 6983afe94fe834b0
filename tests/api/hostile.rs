//! Hostile peers against the real `tickrelay` binary: every WebSocket path (`/ws`, `/v2/iex`,
//! `/stream`) is attacked over raw sockets while a healthy browser and a healthy SDK program
//! keep receiving, and the daemon's resident memory (read from `/proc`) stays within a stated
//! bound over the whole run.
//!
//! The attacks: frame headers declaring 2^40 bytes followed by a stream of zeros; endless
//! fragments; floods of tiny invalid messages from peers that never read; a started frame that
//! stalls; an authenticated program that asks for replies and never reads them; a ping flood;
//! half-open connections that go silent; more connections from one address than it may open.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{tickrelay, Process, EVENT_TIMEOUT};

/// How much the daemon's peak resident memory may rise over the whole run.
const RSS_BOUND_KB: u64 = 64 * 1024;
/// The SDK client every SDK attack and the healthy program use (scope `market`).
const KEY: &str = "hostile-key";
const SECRET: &str = "hostile-secret-123";
/// The paths attacked.
const PATHS: [&str; 3] = ["/ws", "/v2/iex", "/stream"];

/// `VmRSS` and `VmHWM` (peak) of a process, in KB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("a memory field in /proc status")
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A masked client frame header declaring `len` bytes (mask key 0: the payload goes as is).
fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = header(fin, opcode, payload.len() as u64);
    f.extend_from_slice(payload);
    f
}

fn text(payload: &str) -> Vec<u8> {
    frame(true, 0x1, payload.as_bytes())
}

/// A raw WebSocket connection, upgraded by hand.
struct Raw {
    stream: TcpStream,
    /// Bytes read after the upgrade response.
    read: Vec<u8>,
}

/// How a raw connection ended, as read from the server's frames.
#[derive(Debug)]
struct Seen {
    /// The text and binary payloads the server sent.
    messages: Vec<String>,
    /// The close code, if a close frame came.
    close: Option<u16>,
    /// The close frame's reason.
    reason: String,
}

impl Raw {
    /// Upgrades `path`; `None` with the status line when the server refuses.
    async fn open(addr: &str, path: &str, headers: &str) -> Result<Raw, String> {
        // Small socket buffers on both sides, so that what a peer does not read piles up in the
        // daemon's outbox within seconds rather than in the kernel.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
        let mut stream = socket
            .connect(addr.parse().expect("an address"))
            .await
            .expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send upgrade");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut chunk))
                .await
                .expect("upgrade answered in time")
                .expect("read upgrade");
            assert!(n > 0, "closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head.lines().next().unwrap_or_default().to_owned());
        }
        Ok(Raw {
            stream,
            read: buf[end..].to_vec(),
        })
    }

    async fn upgrade(addr: &str, path: &str) -> Raw {
        Raw::open(addr, path, "").await.expect("upgraded")
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Writes `chunk` over and over until the server stops taking it (closes or resets) or
    /// `max` bytes went; answers how many bytes went.
    async fn pump(&mut self, chunk: &[u8], max: usize) -> usize {
        let mut sent = 0;
        while sent < max {
            let write =
                tokio::time::timeout(Duration::from_secs(3), self.stream.write_all(chunk)).await;
            match write {
                Ok(Ok(())) => sent += chunk.len(),
                // A full socket that stays full: the server stopped reading.
                Err(_) | Ok(Err(_)) => break,
            }
        }
        sent
    }

    /// Reads server frames until the connection ends (or `EVENT_TIMEOUT` passes).
    async fn until_end(mut self) -> Seen {
        let mut buf = std::mem::take(&mut self.read);
        let mut chunk = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                // EOF, a reset or the deadline: what came is what the server sent.
                _ => break,
            }
        }
        parse_server_frames(&buf)
    }
}

/// The first whole (unmasked) server frame in `buf`: its opcode, its payload and the bytes it
/// takes; `None` while it is incomplete.
fn server_frame(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (len, head) = match *buf.get(1)? & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = buf.get(head..head + len)?;
    Some((buf[0] & 0x0F, payload, head + len))
}

/// The server's frames in `buf`.
fn parse_server_frames(mut buf: &[u8]) -> Seen {
    let mut seen = Seen {
        messages: Vec::new(),
        close: None,
        reason: String::new(),
    };
    while let Some((opcode, payload, taken)) = server_frame(buf) {
        match opcode {
            0x1 | 0x2 => seen
                .messages
                .push(String::from_utf8_lossy(payload).into_owned()),
            0x8 if payload.len() >= 2 => {
                seen.close = Some(u16::from_be_bytes([payload[0], payload[1]]));
                seen.reason = String::from_utf8_lossy(&payload[2..]).into_owned();
            }
            _ => {}
        }
        buf = &buf[taken..];
    }
    seen
}

/// The daemon under attack: the committed settings, with short deadlines and small budgets so
/// that each attack ends within seconds.
fn start_daemon() -> (Process, String) {
    let mut cmd = tickrelay();
    cmd.env("RUST_LOG", "warn,tickrelay::startup=info")
        .env("TICKRELAY__HTTP__PORT", "0")
        .env("TICKRELAY__HTTP__MAX_CONNECTIONS_PER_IP", "48")
        .env("TICKRELAY__SESSION__MESSAGE_TIMEOUT_MS", "1000")
        .env("TICKRELAY__SDK__MESSAGE_TIMEOUT_MS", "1000")
        .env("TICKRELAY__SDK__MAX_QUEUED_BYTES", "1048576")
        .env("TICKRELAY__SDK__MAX_MESSAGES_PER_SECOND", "2000")
        .env("TICKRELAY__SESSION__SOCKET_SEND_BUFFER_BYTES", "65536")
        .env("TICKRELAY__SESSION__HEARTBEAT_INTERVAL_MS", "500")
        .env("TICKRELAY__SESSION__CLIENT_TIMEOUT_MS", "5000")
        .env("TICKRELAY__CLIENTS__HOSTILE__KEY_ID", KEY)
        .env("TICKRELAY_CLIENT_SECRET_HOSTILE", SECRET);
    let daemon = Process::start(cmd);
    let addr = daemon.address_after("listening on http://");
    (daemon, addr)
}

/// What a healthy client has received so far (shared with the test on the same thread).
type Count = Rc<Cell<usize>>;

/// A healthy browser: subscribes to AAPL and counts the updates it reads, until told to stop.
async fn healthy_browser(addr: String, count: Count) {
    let (_, framed) = awc::Client::new()
        .ws(format!("ws://{addr}/ws"))
        .connect()
        .await
        .expect("browser connects");
    let mut c = crate::helpers::WsClient::from_framed(framed);
    c.subscribe(&["AAPL"]).await;
    loop {
        let m = c.next_json().await;
        if m["type"] == "spot_price_update" {
            count.set(count.get() + 1);
        }
    }
}

/// A healthy SDK program on `/v2/iex`: quotes of AAPL, counted.
async fn healthy_program(addr: String, count: Count) {
    let mut raw = Raw::upgrade(&addr, "/v2/iex").await;
    let auth = format!(r#"{{"action":"auth","key":"{KEY}","secret":"{SECRET}"}}"#);
    raw.send(&text(&auth)).await.unwrap();
    raw.send(&text(r#"{"action":"subscribe","quotes":["AAPL"]}"#))
        .await
        .unwrap();
    let mut buf = std::mem::take(&mut raw.read);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(EVENT_TIMEOUT, raw.stream.read(&mut chunk))
            .await
            .expect("the healthy program keeps receiving")
            .expect("read");
        assert!(n > 0, "the healthy program was disconnected");
        buf.extend_from_slice(&chunk[..n]);
        // Count whole frames, answer pings (it is a live program), keep a partial frame.
        let mut rest = &buf[..];
        let mut pongs = Vec::new();
        while let Some((opcode, payload, taken)) = server_frame(rest) {
            if opcode == 0x9 {
                pongs.extend(frame(true, 0xA, payload));
            }
            let payload: Value = serde_json::from_slice(payload).unwrap_or_default();
            let quotes = payload
                .as_array()
                .map_or(0, |a| a.iter().filter(|m| m["T"] == "q").count());
            count.set(count.get() + quotes);
            rest = &rest[taken..];
        }
        buf = rest.to_vec();
        if !pongs.is_empty() {
            raw.send(&pongs).await.expect("pong");
        }
    }
}

/// Waits until both healthy clients have received more than `(browser, program)`.
async fn both_receive_past(counts: (&Count, &Count), past: (usize, usize)) {
    crate::helpers::wait_for("the healthy clients to receive", || async {
        (counts.0.get() > past.0 && counts.1.get() > past.1).then_some(())
    })
    .await;
}

/// A frame header declaring 2^40 bytes, then zeros: refused with 1009 as soon as the header is
/// read, on every path; the daemon stops reading long before the attacker stops sending.
async fn oversize_declared_frames(addr: &str) {
    for path in PATHS {
        let mut raw = Raw::upgrade(addr, path).await;
        raw.send(&header(true, 0x1, 1 << 40)).await.unwrap();
        let sent = raw.pump(&[0u8; 64 * 1024], 256 << 20).await;
        assert!(sent < 256 << 20, "{path}: the daemon kept reading zeros");
        let seen = raw.until_end().await;
        assert_eq!(seen.close, Some(1009), "{path}: {seen:?}");
    }
}

/// A message that never ends: 1 KiB fragments past the message limit close with 1009; empty
/// fragments are refused by their count.
async fn endless_fragments(addr: &str) {
    for path in PATHS {
        for size in [1024, 0] {
            let mut raw = Raw::upgrade(addr, path).await;
            raw.send(&frame(false, 0x1, b"{")).await.unwrap();
            let fragment = frame(false, 0x0, &vec![b' '; size]);
            let sent = raw.pump(&fragment, 256 << 20).await;
            assert!(sent < 256 << 20, "{path}: endless fragments were read");
            let seen = raw.until_end().await;
            assert_eq!(
                seen.close,
                Some(1009),
                "{path}, {size}-byte fragments: {seen:?}"
            );
        }
    }
}

/// A peer that floods tiny invalid messages and never reads is closed with 1008 after a few
/// (each answered with an error that counts against its budget).
async fn invalid_floods(addr: &str) {
    for path in PATHS {
        let mut raw = Raw::upgrade(addr, path).await;
        let garbage = text("x");
        let sent = raw.pump(&garbage, 64 << 20).await;
        assert!(sent < 64 << 20, "{path}: the flood was read to the end");
        let seen = raw.until_end().await;
        assert_eq!(seen.close, Some(1008), "{path}: {seen:?}");
        assert_eq!(seen.reason, "too many invalid messages", "{path}");
    }
}

/// Half a frame, then silence: closed with 1008 when the message deadline (1 s here) passes.
async fn stalled_frames(addr: &str) {
    let stalls = PATHS.map(|path| async move {
        let mut raw = Raw::upgrade(addr, path).await;
        let whole = text(r#"{"action":"ping"}"#);
        raw.send(&whole[..whole.len() - 3]).await.unwrap();
        let started = Instant::now();
        let seen = raw.until_end().await;
        assert_eq!(seen.close, Some(1008), "{path}: {seen:?}");
        assert_eq!(seen.reason, "message not completed in time", "{path}");
        // The 1 s message deadline, not the 10 s auth timeout.
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    });
    join_all(stalls).await;
}

/// An authenticated program that asks for acks of 100 symbols, within its message rate (2,000
/// a second here), and never reads them: past the 1 MiB budget it gets Alpaca's 407 and a 4008
/// close, and what waited is let go.
async fn replies_nobody_reads(addr: &str) {
    let mut raw = Raw::upgrade(addr, "/v2/iex").await;
    let auth = format!(r#"{{"action":"auth","key":"{KEY}","secret":"{SECRET}"}}"#);
    raw.send(&text(&auth)).await.unwrap();
    let symbols: Vec<String> = (0..100).map(|i| format!("\"HX{i:03}\"")).collect();
    let subscribe = text(&format!(
        r#"{{"action":"subscribe","trades":[{}]}}"#,
        symbols.join(",")
    ));
    let burst: Vec<u8> = subscribe
        .iter()
        .copied()
        .cycle()
        .take(subscribe.len() * 10)
        .collect();
    // 2,400 requests, ten every 5 ms (the 2,000 a second allowed here): 2.4 MB of acks, past the
    // budget and the kernel's socket buffers. Then the program reads what it was sent.
    for _ in 0..240 {
        let sent = tokio::time::timeout(Duration::from_secs(1), raw.send(&burst)).await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = raw.until_end().await;
    assert_eq!(seen.close, Some(4008), "{} messages", seen.messages.len());
    assert!(seen.reason.starts_with("slow client"), "{}", seen.reason);
    assert!(
        seen.messages.iter().any(|m| m.contains("\"code\":407")),
        "407 before the close"
    );
}

/// Pings as fast as possible, never reading the pongs: one pong waits at a time; past the frame
/// rate the flood counts as invalid and is closed with 1008, and a peer that keeps flooding after
/// its close is dropped without waiting for it to read the close (so the close may be lost to
/// the reset: what counts is that the flood is not read to the end).
async fn ping_flood(addr: &str) {
    let mut raw = Raw::upgrade(addr, "/ws").await;
    let ping = frame(true, 0x9, b"are you there");
    let sent = raw.pump(&ping, 32 << 20).await;
    assert!(sent < 32 << 20, "the flood was read to the end");
    let seen = raw.until_end().await;
    assert!(matches!(seen.close, None | Some(1008)), "{seen:?}");
}

/// Half-open connections: upgraded, then nothing at all — no message, no pong, no FIN — as a
/// peer whose network vanished: each is closed when the client timeout (5 s here) passes.
async fn half_open(addr: &str) {
    let silent = PATHS.map(|path| async move {
        let raw = Raw::upgrade(addr, path).await;
        let started = Instant::now();
        let seen = raw.until_end().await;
        (path, seen, started.elapsed())
    });
    for (path, seen, took) in join_all(silent).await {
        assert_eq!(seen.close, Some(1000), "{path}: {seen:?}");
        assert_eq!(seen.reason, "client timeout", "{path}");
        assert!(took < Duration::from_secs(10), "{path}: {took:?}");
    }
}

/// More connections from one address than `http.max_connections_per_ip` (48 here): the rest
/// are refused with 429 at the upgrade, and each admitted one holding a started 60 KB frame is
/// dropped at the message deadline.
async fn many_connections(addr: &str) {
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        match Raw::open(addr, "/ws", "").await {
            Ok(raw) => admitted.push(raw),
            Err(status) => {
                assert!(status.contains("429"), "{status}");
                refused += 1;
            }
        }
    }
    // Only once every place is taken: each holds a started 60 KB frame until its deadline.
    let mut partial = header(true, 0x1, 60_000);
    partial.extend(vec![b' '; 59_000]);
    for raw in &mut admitted {
        raw.send(&partial).await.unwrap();
    }
    // The healthy browser and program hold two places.
    assert!(admitted.len() <= 46, "{} admitted", admitted.len());
    assert!(refused >= 14, "{refused} refused");
    for seen in join_all(admitted.into_iter().map(Raw::until_end)).await {
        assert_eq!(seen.close, Some(1008), "{seen:?}");
        assert_eq!(seen.reason, "message not completed in time");
    }
}

/// Every attack on every path, with a healthy browser and program receiving throughout: each
/// attacker is refused early and closed, and the daemon's peak memory rises at most 64 MB.
#[actix_web::test]
async fn hostile_peers_are_closed_early_and_memory_stays_bounded() {
    let (daemon, addr) = start_daemon();
    let pid = daemon.pid();
    let (updates, quotes): (Count, Count) = Default::default();
    let browser = actix_web::rt::spawn(healthy_browser(addr.clone(), updates.clone()));
    let program = actix_web::rt::spawn(healthy_program(addr.clone(), quotes.clone()));
    // Warm up: both healthy clients served before the baseline is taken.
    both_receive_past((&updates, &quotes), (0, 0)).await;
    let (_, baseline) = memory_kb(pid);

    let step = |name: &str| eprintln!("hostile peers: after {name}: {:?} KB", memory_kb(pid));
    oversize_declared_frames(&addr).await;
    step("oversize");
    endless_fragments(&addr).await;
    step("fragments");
    invalid_floods(&addr).await;
    step("invalid");
    stalled_frames(&addr).await;
    step("stalled");
    replies_nobody_reads(&addr).await;
    step("replies");
    ping_flood(&addr).await;
    step("pings");
    half_open(&addr).await;
    step("half-open");
    many_connections(&addr).await;
    step("connections");

    let (rss, peak) = memory_kb(pid);
    // Served all along, and still served after the last attack.
    let during = (updates.get(), quotes.get());
    both_receive_past((&updates, &quotes), during).await;
    browser.abort();
    program.abort();
    eprintln!(
        "hostile peers: baseline {baseline} KB, peak {peak} KB, after {rss} KB; \
         the healthy browser read {} updates, the program {} quotes",
        updates.get(),
        quotes.get()
    );
    assert!(
        peak.saturating_sub(baseline) <= RSS_BOUND_KB,
        "peak RSS rose {} KB over the run (bound {RSS_BOUND_KB} KB)",
        peak - baseline
    );
}

/// `n` distinct stock symbols (`AAAA`, `AAAB`, …).
fn symbols(n: usize) -> Vec<String> {
    (0..n)
        .map(|mut i| {
            let mut s = [b'A'; 4];
            for c in s.iter_mut().rev() {
                *c = b'A' + (i % 26) as u8;
                i /= 26;
            }
            String::from_utf8(s.to_vec()).unwrap()
        })
        .collect()
}

/// One SDK program subscribing 10,000 symbols' quotes made the embedded simulator's history
/// grow 1.4 GB in ten seconds and starved everyone else. Now the simulator generates at most
/// `simulator.max_messages_per_second` (the configured symbols first, the others in turn) and
/// keeps history for a bounded set: with the greedy program reading everything it is sent, the
/// healthy clients go on receiving AAPL and the daemon's peak memory rises at most 64 MB.
#[actix_web::test]
async fn a_program_that_wants_ten_thousand_symbols_costs_bounded_memory() {
    let (daemon, addr) = start_daemon();
    let pid = daemon.pid();
    let (updates, quotes): (Count, Count) = Default::default();
    let browser = actix_web::rt::spawn(healthy_browser(addr.clone(), updates.clone()));
    let program = actix_web::rt::spawn(healthy_program(addr.clone(), quotes.clone()));
    both_receive_past((&updates, &quotes), (0, 0)).await;
    let (_, baseline) = memory_kb(pid);

    let mut greedy = Raw::upgrade(&addr, "/v2/iex").await;
    let auth = format!(r#"{{"action":"auth","key":"{KEY}","secret":"{SECRET}"}}"#);
    greedy.send(&text(&auth)).await.unwrap();
    for chunk in symbols(10_000).chunks(1000) {
        let subscribe = serde_json::json!({"action": "subscribe", "quotes": chunk});
        greedy.send(&text(&subscribe.to_string())).await.unwrap();
    }
    // It reads everything it is sent and answers pings, as a live program does.
    let received = Rc::new(Cell::new(0usize));
    let counted = received.clone();
    let (mut rd, mut wr) = greedy.stream.into_split();
    let reader = actix_web::rt::spawn(async move {
        let mut buf = greedy.read;
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = rd.read(&mut chunk).await {
            counted.set(counted.get() + n);
            buf.extend_from_slice(&chunk[..n]);
            let mut rest = &buf[..];
            let mut pongs = Vec::new();
            while let Some((opcode, payload, taken)) = server_frame(rest) {
                if opcode == 0x9 {
                    pongs.extend(frame(true, 0xA, payload));
                }
                rest = &rest[taken..];
            }
            buf = rest.to_vec();
            if !pongs.is_empty() && wr.write_all(&pongs).await.is_err() {
                break;
            }
        }
    });
    let http = awc::Client::new();
    crate::helpers::wait_for("10,000 symbols subscribed upstream", || async {
        let mut resp = http
            .get(format!("http://{addr}/api/v1/status"))
            .send()
            .await
            .ok()?;
        let status: Value = resp.json().limit(1 << 24).await.ok()?;
        (status["feeds"]["stocks"]["subscribed"].as_u64() >= Some(10_000)).then_some(())
    })
    .await;
    // The others are still served while the simulator streams all of them.
    let during = (updates.get() + 10, quotes.get() + 20);
    both_receive_past((&updates, &quotes), during).await;
    let (rss, peak) = memory_kb(pid);
    browser.abort();
    program.abort();
    reader.abort();
    eprintln!(
        "greedy program: baseline {baseline} KB, peak {peak} KB, after {rss} KB; it read {} bytes",
        received.get()
    );
    assert!(received.get() > 1 << 20, "the greedy program was served");
    assert!(
        peak.saturating_sub(baseline) <= RSS_BOUND_KB,
        "peak RSS rose {} KB (bound {RSS_BOUND_KB} KB)",
        peak - baseline
    );
}
