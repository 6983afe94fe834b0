//! The conformance set (`tests/conformance/alpaca_frames.json`): frames published in Alpaca's
//! documentation and SDK test suites, each with its source. Every one must keep every field on its
//! way through tickrelay: to SDK programs in both encodings (byte for byte in the encoding it came
//! in), and — for the fields a browser frame carries — through the decoder.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tickrelay::market::{MarketEvent, TradeFix};
use tickrelay::symbol::Symbol;
use tickrelay::upstream::protocol::raw::{msgpack_to_json, split};
use tickrelay::upstream::protocol::{decode_json, Inbound};
use tickrelay::vocab::FeedKind;

#[derive(Deserialize)]
struct Entry {
    id: String,
    stream: String,
    frame: Box<RawValue>,
}

fn entries() -> Vec<Entry> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/alpaca_frames.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn feed(stream: &str) -> Option<FeedKind> {
    Some(match stream {
        "stocks" => FeedKind::Stocks,
        "crypto" => FeedKind::Crypto,
        "options" => FeedKind::Options,
        "news" => FeedKind::News,
        _ => return None,
    })
}

/// Entries whose frame is not something tickrelay forwards, with why.
fn not_forwarded(id: &str, frame: &Value) -> Option<&'static str> {
    if frame["T"] == "p" {
        return Some("crypto perpetuals pricing: a stream tickrelay does not carry");
    }
    if id == "stk_s_js_placeholders" {
        return Some("the JS SDK's mock uses placeholder text where Alpaca sends a timestamp");
    }
    None
}

#[test]
fn sdk_programs_get_every_field_in_both_encodings() {
    let mut checked = 0;
    for e in entries() {
        let Some(kind) = feed(&e.stream) else {
            continue;
        };
        let original: Value = serde_json::from_str(e.frame.get()).unwrap();
        let wire = Bytes::from(format!("[{}]", e.frame.get()));
        let out = split(&wire, false, kind, true, true);
        if original["T"] == "p" || Symbol::parse(original["S"].as_str().unwrap_or("X")).is_err() {
            assert!(out.is_empty(), "{}: nothing to forward", e.id);
            continue;
        }
        assert_eq!(out.len(), 1, "{}: one message", e.id);
        // JSON programs get Alpaca's bytes.
        assert_eq!(&out[0].json[..], e.frame.get().as_bytes(), "{}", e.id);
        // msgpack programs get the same fields and values, T first.
        let packed = rmpv::decode::read_value(&mut &out[0].msgpack[..]).unwrap();
        assert_eq!(
            packed.as_map().unwrap()[0].0.as_str(),
            Some("T"),
            "{}: T first",
            e.id
        );
        let mut back = String::new();
        msgpack_to_json(&out[0].msgpack, &mut back).unwrap();
        let back: Value = serde_json::from_str(&back).unwrap();
        assert_eq!(back, original, "{}: every field survives msgpack", e.id);
        checked += 1;
    }
    assert!(checked >= 35, "only {checked} market frames checked");
}

#[test]
fn the_decoder_keeps_what_browsers_are_sent() {
    let mut checked = 0;
    for e in entries() {
        if feed(&e.stream).is_none() {
            continue;
        }
        let frame: Value = serde_json::from_str(e.frame.get()).unwrap();
        let wire = format!("[{}]", e.frame.get());
        let decoded = decode_json(&wire).unwrap();
        assert_eq!(decoded.len(), 1, "{}", e.id);
        if let Some(why) = not_forwarded(&e.id, &frame) {
            assert!(
                !matches!(decoded[0], Inbound::Market { .. } | Inbound::News(_)),
                "{}: {why}",
                e.id
            );
            continue;
        }
        let code = |k: &str| frame[k].as_str().map(str::to_owned);
        match &decoded[0] {
            Inbound::Market { symbol, event } => {
                assert_eq!(Some(symbol.as_ref()), frame["S"].as_str(), "{}", e.id);
                match event {
                    MarketEvent::Quote(q) => {
                        let as_str =
                            |c: Option<tickrelay::market::Code>| c.map(|c| c.as_str().to_owned());
                        assert_eq!(as_str(q.bid_exchange), code("bx"), "{}", e.id);
                        assert_eq!(as_str(q.ask_exchange), code("ax"), "{}", e.id);
                        assert_eq!(as_str(q.tape), code("z"), "{}", e.id);
                        let conditions: Vec<&str> =
                            q.conditions.iter().map(|c| c.as_str()).collect();
                        let expected = match &frame["c"] {
                            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap()).collect(),
                            Value::String(s) => vec![s.as_str()],
                            _ => vec![],
                        };
                        assert_eq!(conditions, expected, "{}", e.id);
                        assert_eq!(Some(q.bid_price), frame["bp"].as_f64(), "{}", e.id);
                    }
                    MarketEvent::Trade(t) => {
                        assert_eq!(t.id, frame["i"].as_i64(), "{}", e.id);
                        assert_eq!(t.tape.map(|c| c.as_str().to_owned()), code("z"), "{}", e.id);
                        assert_eq!(
                            t.exchange.as_deref().map(str::to_owned),
                            code("x"),
                            "{}",
                            e.id
                        );
                        assert_eq!(t.taker_side.as_deref().map(str::to_owned), code("tks"));
                        assert_eq!(Some(t.price), frame["p"].as_f64(), "{}", e.id);
                    }
                    MarketEvent::Fix(fix) if matches!(**fix, TradeFix::Correction(_)) => {
                        let TradeFix::Correction(c) = &**fix else {
                            unreachable!()
                        };
                        assert_eq!(c.original_id, frame["oi"].as_i64(), "{}", e.id);
                        assert_eq!(Some(c.corrected_price), frame["cp"].as_f64(), "{}", e.id);
                    }
                    MarketEvent::Fix(fix) => {
                        let TradeFix::Cancel(x) = &**fix else {
                            unreachable!()
                        };
                        assert_eq!(x.id, frame["i"].as_i64(), "{}", e.id);
                        assert_eq!(
                            x.action.as_deref().map(str::to_owned),
                            code("a"),
                            "{}",
                            e.id
                        );
                    }
                    MarketEvent::Bar(b) => {
                        assert_eq!(Some(b.close), frame["c"].as_f64(), "{}", e.id);
                        assert_eq!(b.trade_count, frame["n"].as_u64(), "{}", e.id);
                    }
                    MarketEvent::Book(b) => {
                        let sides = frame["b"].as_array().map_or(0, Vec::len)
                            + frame["a"].as_array().map_or(0, Vec::len);
                        assert_eq!(b.bids.len() + b.asks.len(), sides, "{}", e.id);
                        assert_eq!(b.reset, frame["r"] == true, "{}", e.id);
                    }
                    MarketEvent::Status(s) => match &**s {
                        tickrelay::market::StatusEvent::Trading {
                            code: c, message, ..
                        } => {
                            assert_eq!(Some(&**c), frame["sc"].as_str(), "{}", e.id);
                            assert_eq!(Some(&**message), frame["sm"].as_str(), "{}", e.id);
                        }
                        tickrelay::market::StatusEvent::Luld {
                            limit_up,
                            limit_down,
                            ..
                        } => {
                            assert_eq!(Some(*limit_up), frame["u"].as_f64(), "{}", e.id);
                            assert_eq!(Some(*limit_down), frame["d"].as_f64(), "{}", e.id);
                        }
                    },
                }
            }
            Inbound::News(n) => {
                assert_eq!(n.id, frame["id"].as_i64().unwrap(), "{}", e.id);
                assert_eq!(
                    Some(n.content.as_str()),
                    frame["content"].as_str(),
                    "{}",
                    e.id
                );
                assert_eq!(Some(n.headline.as_str()), frame["headline"].as_str());
            }
            Inbound::Info { symbol, .. } => {
                assert_eq!(Some(symbol.as_str()), frame["S"].as_str(), "{}", e.id)
            }
            other => panic!("{}: decoded as {other:?}", e.id),
        }
        checked += 1;
    }
    assert!(checked >= 35, "only {checked} market frames checked");
}

#[test]
fn trade_updates_reach_browsers_with_their_execution() {
    let mut checked = 0;
    for e in entries().into_iter().filter(|e| e.stream == "trading") {
        let frame: Value = serde_json::from_str(e.frame.get()).unwrap();
        if frame["stream"] != "trade_updates" {
            continue;
        }
        let data = &frame["data"];
        let browser: Value = serde_json::from_str(&tickrelay::browser::order_update(
            "main",
            data["event"].as_str().unwrap(),
            data,
        ))
        .unwrap();
        for field in ["price", "qty", "position_qty", "execution_id"] {
            assert_eq!(browser[field], data[field], "{}: {field}", e.id);
        }
        assert_eq!(browser["order"], data["order"], "{}", e.id);
        if let Some(t) = data["timestamp"].as_str() {
            let sent = tickrelay::time::Timestamp::parse_rfc3339(t).unwrap();
            assert_eq!(
                browser["timestamp"],
                json!(sent),
                "{}: Alpaca's event time",
                e.id
            );
        }
        let order = &data["order"];
        if let Some(raw) = order["symbol"].as_str() {
            let symbol = Symbol::from_trading(raw, order["asset_class"].as_str()).unwrap();
            if raw == "SOLUSD" {
                assert_eq!(symbol.as_str(), "SOL/USD", "{}", e.id);
            }
        }
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} trade updates checked");
}
