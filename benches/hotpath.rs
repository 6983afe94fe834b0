//! Hot-path micro-benchmarks: upstream decode, throttle window, browser frame serialization.
//!
//! `cargo bench --bench hotpath [-- FILTER]`. A plain harness (no criterion) to keep the dependency
//! tree lean: each case whose name contains FILTER runs for about a second after a warm-up and
//! prints the time per operation. With `HOTPATH_ITERS=N` each case runs exactly N times instead,
//! for instruction counts under `valgrind --tool=callgrind`, which do not vary with machine load.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tickrelay::browser::{spot_price_update, PriceView};
use tickrelay::market::Num;
use tickrelay::symbol::Symbol;
use tickrelay::throttle::{Offer, Window};
use tickrelay::time::Timestamp;
use tickrelay::upstream::protocol::decode_json;

fn bench(name: &str, mut op: impl FnMut() -> usize) {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    if !name.contains(&filter) {
        return;
    }
    if let Some(n) = std::env::var("HOTPATH_ITERS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let items: usize = (0..n).map(|_| black_box(op())).sum();
        println!("{name:<46} {n} iterations, {items} items");
        return;
    }
    for _ in 0..10_000 {
        black_box(op());
    }
    let mut iters = 0u64;
    let mut items = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..1_000 {
            items += black_box(op());
        }
        iters += 1_000;
    }
    let per_op = start.elapsed().as_nanos() as f64 / iters as f64;
    let per_item = start.elapsed().as_nanos() as f64 / items.max(1) as f64;
    println!(
        "{name:<46} {per_op:>9.1} ns/op {per_item:>9.1} ns/item {:>7.2} M items/s",
        1e3 / per_item
    );
}

fn main() {
    let quote = r#"[{"T":"q","S":"AAPL","bx":"V","bp":190.12,"bs":2,"ax":"V","ap":190.15,"as":3,"c":["R"],"z":"C","t":"2026-01-20T15:04:05.123456789Z"}]"#;
    println!("one quote frame: {} bytes", quote.len());
    bench("decode_json: 1 quote", || {
        decode_json(black_box(quote)).unwrap().len()
    });

    let batch = format!(
        "[{}]",
        (0..10)
            .map(|i| {
                format!(
                    r#"{{"T":"q","S":"SYM{i}","bx":"V","bp":190.12,"bs":2,"ax":"V","ap":190.15,"as":3,"c":["R"],"z":"C","t":"2026-01-20T15:04:05.123456789Z"}}"#
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    );
    bench("decode_json: 10 quotes per frame", || {
        decode_json(black_box(&batch)).unwrap().len()
    });

    let trade = r#"[{"T":"t","i":96921,"S":"AAPL","x":"D","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z","c":["@","I"],"z":"C"}]"#;
    bench("decode_json: 1 trade", || {
        decode_json(black_box(trade)).unwrap().len()
    });

    let mut window = Window::new(Duration::from_millis(200));
    let t0 = Instant::now();
    let mut step = 0u32;
    bench("throttle window offer", || {
        step += 1;
        match window.offer(t0 + Duration::from_micros(u64::from(step))) {
            Offer::EmitNow => 1,
            _ => 1,
        }
    });

    let symbol = Symbol::parse("AAPL").unwrap();
    let price = PriceView {
        bid_price: 190.12,
        ask_price: 190.15,
        bid_size: Num::Int(2),
        ask_size: Num::Int(3),
        last_price: Some(190.14),
        timestamp: Some(Timestamp::parse_rfc3339("2026-01-20T15:04:05.123456789Z").unwrap()),
    };
    let frame = spot_price_update(&symbol, &price, false, false);
    println!("one spot_price_update frame: {} bytes", frame.len());
    bench("serialize spot_price_update (once per emit)", || {
        black_box(spot_price_update(
            black_box(&symbol),
            black_box(&price),
            false,
            false,
        ));
        1
    });
    bench("share a serialized frame (clone)", || {
        black_box(frame.clone());
        1
    });
    bench("timestamp format (RFC 3339)", || {
        black_box(Timestamp::now().to_rfc3339());
        1
    });
    bench("timestamp parse (RFC 3339)", || {
        black_box(Timestamp::parse_rfc3339(black_box("2026-01-20T15:04:05.123456789Z")).unwrap());
        1
    });

    // Baselines: what plain serde_json costs for the same frame.
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
        ts: &'a str,
    }
    bench("baseline: serde_json into a minimal struct", || {
        serde_json::from_str::<Vec<MinimalQuote>>(black_box(quote))
            .unwrap()
            .len()
    });
    bench("baseline: serde_json into Value", || {
        serde_json::from_str::<serde_json::Value>(black_box(quote))
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    });
}
