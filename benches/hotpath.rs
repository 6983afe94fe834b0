//! Hot-path micro-benchmarks, each beside the plain operation it wraps, with the ratio.
//!
//! `cargo bench --bench hotpath [-- FILTER]`. A plain harness (no criterion) to keep the dependency
//! tree lean: each pair whose name contains FILTER runs for about a second per side after a warm-up
//! and prints both times per item and `ratio` = tickrelay's time ÷ the baseline's (1.0 = no
//! overhead). With `HOTPATH_ITERS=N` each side runs exactly N times instead, for instruction
//! counts under `valgrind --tool=callgrind`, which do not vary with machine load.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use serde::de::IgnoredAny;
use tickrelay::browser::{price_update, PriceUpdate, PriceView};
use tickrelay::downstream::delivery::{DeliverKey, FrameKind, SessionStats};
use tickrelay::downstream::outbox::{Outbox, OutboxLimits, MAX_CHUNK};
use tickrelay::market::{Code, Codes, Num};
use tickrelay::quote_book::QuoteBook;
use tickrelay::simulator::market::Walk;
use tickrelay::symbol::Symbol;
use tickrelay::throttle::{Offer, SymbolThrottle, ThrottleConfig, Window};
use tickrelay::time::Timestamp;
use tickrelay::upstream::protocol::{decode_json, decode_msgpack, Inbound};
use tickrelay::vocab::PriceKind;
use tickrelay::wire::{json_frame, msgpack_frame};

/// Runs `op` for about a second (or `HOTPATH_ITERS` times); answers ns per item.
fn measure(mut op: impl FnMut() -> usize) -> Option<f64> {
    if let Some(n) = std::env::var("HOTPATH_ITERS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let items: usize = (0..n).map(|_| black_box(op())).sum();
        black_box(items);
        return None;
    }
    for _ in 0..10_000 {
        black_box(op());
    }
    let mut items = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..1_000 {
            items += black_box(op());
        }
    }
    Some(start.elapsed().as_nanos() as f64 / items.max(1) as f64)
}

/// Measures tickrelay's operation and its baseline, prints both and the ratio.
fn pair(name: &str, ours: impl FnMut() -> usize, baseline_name: &str, base: impl FnMut() -> usize) {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    if !name.contains(&filter) {
        return;
    }
    let side = std::env::var("HOTPATH_SIDE").unwrap_or_default();
    let a = if side != "baseline" {
        measure(ours)
    } else {
        None
    };
    let b = if side != "ours" { measure(base) } else { None };
    match (a, b) {
        (Some(a), Some(b)) => println!(
            "{name:<44} {a:>8.1} ns/item | {baseline_name:<40} {b:>8.1} ns/item | ratio {:>5.2}",
            a / b
        ),
        _ => println!("{name}: ran {side} side"),
    }
}

fn quotes(n: usize) -> Vec<tickrelay::wire::Msg> {
    let t = Timestamp::parse_rfc3339("2026-01-20T15:04:05.123456789Z").unwrap();
    (0..n)
        .map(|i| Walk::new(&format!("S{i:04}"), 42).quote_at(t, 190.12, 190.15))
        .collect()
}

/// What a minimal client of the Alpaca stream would decode: the quote fields, nothing else.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct MinimalQuote<'a> {
    #[serde(rename = "T")]
    t: &'a str,
    #[serde(rename = "S")]
    s: &'a str,
    bp: f64,
    ap: f64,
    bs: u32,
    #[serde(rename = "as")]
    ask_size: u32,
    #[serde(rename = "t")]
    ts: IgnoredAny,
}

fn main() {
    let msgs = quotes(10);
    let json_parts: Vec<String> = msgs.iter().map(|m| m.json()).collect();
    let json = json_frame(&json_parts.iter().map(String::as_str).collect::<Vec<_>>());
    let mp_parts: Vec<Vec<u8>> = msgs.iter().map(|m| m.msgpack()).collect();
    let msgpack = msgpack_frame(&mp_parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    println!(
        "a batch of 10 quotes: {} bytes of JSON, {} bytes of msgpack",
        json.len(),
        msgpack.len()
    );

    pair(
        "decode JSON, 10 quotes per frame",
        || decode_json(black_box(&json)).unwrap().len(),
        "serde_json into Vec<MinimalQuote>",
        || {
            serde_json::from_str::<Vec<MinimalQuote>>(black_box(&json))
                .unwrap()
                .len()
        },
    );
    pair(
        "decode JSON (vs serde_json::Value)",
        || decode_json(black_box(&json)).unwrap().len(),
        "serde_json into serde_json::Value",
        || {
            serde_json::from_str::<serde_json::Value>(black_box(&json))
                .unwrap()
                .as_array()
                .map_or(0, Vec::len)
        },
    );
    pair(
        "decode msgpack, 10 quotes per frame",
        || decode_msgpack(black_box(&msgpack)).unwrap().len(),
        "rmp_serde into Vec<MinimalQuote>",
        || {
            rmp_serde::from_slice::<Vec<MinimalQuote>>(black_box(&msgpack))
                .unwrap()
                .len()
        },
    );

    // Ingest: decode and hand every quote to its symbol's inlet (the throttle is busy, so each
    // one replaces the undrained value), against decoding alone.
    actix::System::new().block_on(async {
        let config = ThrottleConfig {
            interval: Duration::from_millis(200),
            stale_after: Duration::from_secs(300),
            book_depth: 10,
            hub_drops: Default::default(),
            sink: None,
        };
        let inlets: std::collections::HashMap<Symbol, _> = (0..10)
            .map(|i| {
                let s = Symbol::parse(&format!("S{i:04}")).unwrap();
                let (_, inlet) =
                    SymbolThrottle::start(s.clone(), config.clone(), QuoteBook::default());
                (s, inlet)
            })
            .collect();
        pair(
            "ingest JSON: decode + route to inlets",
            || {
                let mut n = 0;
                // One clock read per frame, as the feed does.
                let read_at = std::time::Instant::now();
                for m in decode_json(black_box(&json)).unwrap() {
                    if let Inbound::Market { symbol, event } = m {
                        if let Some(inlet) = inlets.get(symbol.as_ref()) {
                            inlet.offer(event, read_at);
                            n += 1;
                        }
                    }
                }
                n
            },
            "serde_json into Vec<MinimalQuote>",
            || {
                serde_json::from_str::<Vec<MinimalQuote>>(black_box(&json))
                    .unwrap()
                    .len()
            },
        );
    });

    let t0 = Instant::now();
    let mut window = Window::new(Duration::from_millis(200));
    let mut step = 0u32;
    let mut plain_step = 0u32;
    let mut plain_until = t0;
    pair(
        "throttle window offer",
        || {
            step += 1;
            match window.offer(t0 + Duration::from_micros(u64::from(step))) {
                Offer::EmitNow => 1,
                _ => 1,
            }
        },
        "one Instant comparison and update",
        || {
            plain_step += 1;
            let now = t0 + Duration::from_micros(u64::from(plain_step));
            if now >= plain_until {
                plain_until = now + Duration::from_millis(200);
            }
            1
        },
    );

    let symbol = Symbol::parse("AAPL").unwrap();
    let price = PriceView {
        bid_price: 190.12,
        ask_price: 190.15,
        bid_size: Num::Int(2),
        ask_size: Num::Int(3),
        last_price: Some(190.14),
        timestamp: Some(Timestamp::parse_rfc3339("2026-01-20T15:04:05.123456789Z").unwrap()),
        bid_exchange: Code::new("V"),
        ask_exchange: Code::new("V"),
        conditions: Codes::default(),
        tape: Code::new("C"),
        halted: false,
    };
    let update = PriceUpdate::new(&symbol, &price, false);
    let frame = price_update(PriceKind::Spot, &update, false);
    println!("one spot_price_update frame: {} bytes", frame.frame.len());
    pair(
        "serialize spot_price_update (once per emit)",
        || {
            black_box(price_update(PriceKind::Spot, black_box(&update), false));
            1
        },
        "serde_json::to_string of the update",
        || {
            black_box(serde_json::to_string(black_box(&update)).unwrap());
            1
        },
    );

    // Fan-out: one delivery is a push into a session's outbox; every 8 deliveries the socket
    // takes what waits, as one encoded chunk. Baseline: the frame shared into a Vec of bytes and
    // written out with a copy, which is what any queue-and-write design does.
    let stats = std::sync::Arc::new(SessionStats::new(1, "bench".into()));
    let limits = OutboxLimits {
        max_bytes: 4 << 20,
        max_events: 256,
    };
    let mut outbox = Outbox::new(limits, stats);
    let keys: Vec<DeliverKey> = (0..8)
        .map(|i| DeliverKey {
            symbol: Symbol::parse(&format!("S{i:04}")).unwrap(),
            kind: FrameKind::Price,
        })
        .collect();
    let batch = Some((PriceKind::Spot, frame.update.clone()));
    let shared: ByteString = frame.frame.clone();
    let mut k = 0;
    let mut plain: Vec<Bytes> = Vec::with_capacity(8);
    let mut sink = Vec::with_capacity(MAX_CHUNK);
    pair(
        "fan-out: outbox push, one write per 8",
        || {
            outbox.push_latest(&keys[k % 8], &shared, &batch);
            k += 1;
            if k % 8 == 0 {
                black_box(outbox.take_chunk(MAX_CHUNK));
            }
            1
        },
        "Vec push of the shared frame, copy per 8",
        || {
            plain.push(shared.clone().into_bytes());
            if plain.len() == 8 {
                sink.clear();
                for b in plain.drain(..) {
                    sink.extend_from_slice(&b);
                }
                black_box(&sink);
            }
            1
        },
    );
}
