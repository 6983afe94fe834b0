//! Replays every fuzz target's seeds (`fuzz/seeds/<target>/`) and every input a fuzzer ever
//! found to crash, hang or bloat it (`fuzz/regressions/<target>/`) through the same entry points
//! the targets use, on stable Rust: a fixed bug stays fixed.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("upstream_json", tickrelay::fuzz::upstream_json),
    ("upstream_msgpack", tickrelay::fuzz::upstream_msgpack),
    ("trading_frame", tickrelay::fuzz::trading_frame),
    ("browser_message", tickrelay::fuzz::browser_message),
    ("sdk_message", tickrelay::fuzz::sdk_message),
    ("settings", tickrelay::fuzz::settings),
    ("redis_message", tickrelay::fuzz::redis_message),
    ("request_head", tickrelay::fuzz::request_head),
];

/// Every file under `dir/<target>/`.
fn inputs(dir: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("readable input"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_seed_and_every_past_crasher_is_handled() {
    let mut seeds = 0;
    for (target, run) in TARGETS {
        let found = inputs("seeds", target);
        assert!(!found.is_empty(), "no seeds for {target}");
        seeds += found.len();
        for (name, data) in found.iter().chain(&inputs("regressions", target)) {
            let result = std::panic::catch_unwind(|| run(data));
            assert!(result.is_ok(), "{target} panicked on {name}");
        }
    }
    assert!(seeds >= 100, "{seeds} seeds");
}
