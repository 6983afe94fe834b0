//! Decode and encode, against Alpaca's documented examples and byte-exact msgpack.

use super::*;
use crate::credentials::{Credentials, Secret};
use crate::market::{
    BarKind, Code, Codes, Correction, Level, MarketEvent, Num, Quote, StatusEvent, Trade,
    TradeCancel, TradeFix,
};
use crate::symbol::Symbol;
use crate::time::Timestamp;
use crate::vocab::{Channel, Encoding, SubscriptionSet};

fn codes(list: &[&str]) -> Codes {
    let mut c = Codes::default();
    for code in list {
        c.push(code);
    }
    c
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

#[test]
fn decodes_control_messages() {
    assert_eq!(
        decode_json(r#"[{"T":"success","msg":"connected"}]"#).unwrap(),
        vec![Inbound::Connected]
    );
    assert_eq!(
        decode_json(r#"[{"T":"success","msg":"authenticated"}]"#).unwrap(),
        vec![Inbound::Authenticated]
    );
    assert_eq!(
        decode_json(r#"[{"T":"error","code":406,"msg":"connection limit exceeded"}]"#).unwrap(),
        vec![Inbound::Error {
            code: 406,
            msg: "connection limit exceeded".into()
        }]
    );
}

#[test]
fn decodes_subscription_ack() {
    let frames = decode_json(
        r#"[{"T":"subscription","trades":["AAPL"],"quotes":["AMD","CLDR"],"bars":["*"],"updatedBars":[],"dailyBars":["VOO"],"statuses":[],"lulds":[],"corrections":["AAPL"],"cancelErrors":["AAPL"]}]"#,
    )
    .unwrap();
    let Inbound::Subscription(set) = &frames[0] else {
        panic!("{frames:?}")
    };
    assert!(set.contains(Channel::Quotes, "AMD"));
    assert!(set.contains(Channel::Trades, "AAPL"));
    assert!(set.contains(Channel::DailyBars, "VOO"));
    assert_eq!(set.len(), 5);
    assert!(set.contains(Channel::Bars, "*"), "the wildcard is kept");
}

#[test]
fn decodes_alpaca_doc_examples() {
    let frame = r#"[
      {"T":"t","i":96921,"S":"AAPL","x":"D","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z","c":["@","I"],"z":"C"},
      {"T":"q","S":"AMD","bx":"U","bp":87.66,"bs":1,"ax":"Q","ap":87.68,"as":4,"t":"2021-02-22T15:51:45.335689322Z","c":["R"],"z":"C"},
      {"T":"b","S":"SPY","o":388.985,"h":389.13,"l":388.975,"c":389.12,"v":49378,"n":461,"vw":389.062639,"t":"2021-02-22T19:15:00Z"},
      {"T":"c","S":"EEM","x":"M","oi":52983525033527,"op":39.1582,"os":440000,"oc":[" ","7"],"ci":52983525034326,"cp":39.1809,"cs":440000,"cc":[" ","7"],"z":"B","t":"2023-04-06T14:25:06.542305024Z"},
      {"T":"x","S":"GOOGL","i":465,"x":"D","p":105.31,"s":300,"a":"C","z":"C","t":"2023-04-06T13:15:42.83540958Z"},
      {"T":"l","S":"IONM","u":3.24,"d":2.65,"i":"B","t":"2023-04-06T13:34:45.565004401Z","z":"C"},
      {"T":"s","S":"AAPL","sc":"H","sm":"Trading Halt","rc":"T12","rm":"Trading Halted","t":"2021-02-22T19:15:00Z","z":"C"},
      {"T":"i","S":"INAQU","p":9.12,"z":"C","t":"2024-12-13T19:58:09.242138635Z"},
      {"T":"d","S":"SPY","o":1,"h":2,"l":0.5,"c":1.5,"v":10,"n":1,"vw":1.2,"t":"2021-02-22T00:00:00Z"},
      {"T":"u","S":"SPY","o":1,"h":2,"l":0.5,"c":1.5,"v":10,"n":1,"vw":1.2,"t":"2021-02-22T19:14:00Z"}
    ]"#;
    let msgs = decode_json(frame).unwrap();
    assert_eq!(msgs.len(), 10);
    assert_eq!(
        msgs[0],
        Inbound::Market {
            symbol: "AAPL".into(),
            event: MarketEvent::Trade(Trade {
                price: 126.55,
                size: Num::Int(1),
                exchange: Some("D".into()),
                conditions: vec!["@".into(), "I".into()],
                id: Some(96921),
                taker_side: None,
                tape: Code::new("C"),
                timestamp: ts("2021-02-22T15:51:44.208Z"),
                update: None,
            })
        }
    );
    assert_eq!(
        msgs[1],
        Inbound::Market {
            symbol: "AMD".into(),
            event: MarketEvent::Quote(Quote {
                bid_price: 87.66,
                bid_size: Num::Int(1),
                ask_price: 87.68,
                ask_size: Num::Int(4),
                timestamp: ts("2021-02-22T15:51:45.335689322Z"),
                bid_exchange: Code::new("U"),
                ask_exchange: Code::new("Q"),
                conditions: codes(&["R"]),
                tape: Code::new("C"),
            })
        }
    );
    let Inbound::Market {
        event: MarketEvent::Bar(bar),
        ..
    } = &msgs[2]
    else {
        panic!("{:?}", msgs[2])
    };
    assert_eq!(bar.kind, BarKind::Minute);
    assert_eq!(bar.close, 389.12);
    assert_eq!(bar.volume, Num::Int(49378));
    assert_eq!(bar.trade_count, Some(461));
    // Corrections and cancels keep every field; they fix last_price and reach trades subscribers.
    assert_eq!(
        msgs[3],
        Inbound::Market {
            symbol: "EEM".into(),
            event: MarketEvent::Fix(Box::new(TradeFix::Correction(Correction {
                exchange: Some("M".into()),
                original_id: Some(52983525033527),
                original_price: 39.1582,
                original_size: Num::Int(440000),
                original_conditions: vec![" ".into(), "7".into()],
                corrected_id: Some(52983525034326),
                corrected_price: 39.1809,
                corrected_size: Num::Int(440000),
                corrected_conditions: vec![" ".into(), "7".into()],
                tape: Code::new("B"),
                timestamp: ts("2023-04-06T14:25:06.542305024Z"),
            })))
        }
    );
    assert_eq!(
        msgs[4],
        Inbound::Market {
            symbol: "GOOGL".into(),
            event: MarketEvent::Fix(Box::new(TradeFix::Cancel(TradeCancel {
                id: Some(465),
                exchange: Some("D".into()),
                price: 105.31,
                size: Num::Int(300),
                action: Some("C".into()),
                tape: Code::new("C"),
                timestamp: ts("2023-04-06T13:15:42.83540958Z"),
            })))
        }
    );
    // A LULD band and a trading status are market events (the `statuses` channel); an
    // imbalance is read and counted only.
    assert!(
        matches!(&msgs[5], Inbound::Market { event: MarketEvent::Status(s), .. }
            if matches!(**s, StatusEvent::Luld { limit_up: 3.24, .. })),
        "{:?}",
        msgs[5]
    );
    assert!(
        matches!(&msgs[6], Inbound::Market { event: MarketEvent::Status(s), .. }
            if s.halted() == Some(true)),
        "{:?}",
        msgs[6]
    );
    assert!(
        matches!(
            &msgs[7],
            Inbound::Info {
                kind: InfoKind::Imbalance,
                ..
            }
        ),
        "{:?}",
        msgs[7]
    );
    assert!(
        matches!(&msgs[8], Inbound::Market { event: MarketEvent::Bar(b), .. } if b.kind == BarKind::Daily)
    );
    assert!(
        matches!(&msgs[9], Inbound::Market { event: MarketEvent::Bar(b), .. } if b.kind == BarKind::Updated)
    );
}

#[test]
fn unknown_types_and_extra_keys_are_tolerated() {
    let msgs = decode_json(
        r#"[{"T":"zz","S":"AAPL"},{"T":"q","N":1,"S":"A","bp":1,"ap":2,"bs":1,"as":1,"t":"2021-02-22T15:51:45Z"}]"#,
    )
    .unwrap();
    assert_eq!(msgs[0], Inbound::Unknown("zz".into()));
    assert!(matches!(msgs[1], Inbound::Market { .. }));
}

#[test]
fn malformed_elements_are_reported_and_the_rest_kept() {
    let msgs = decode_json(
        r#"[{"T":"q","S":"AAPL","bp":"oops","ap":2,"t":"2021-02-22T15:51:45Z"},{"T":"q","S":"MSFT","bp":1,"ap":2,"t":"2021-02-22T15:51:45Z"},{"T":"t","S":"X","p":1}]"#,
    )
    .unwrap();
    assert!(matches!(&msgs[0], Inbound::Malformed(m) if m.contains("oops")));
    assert!(matches!(&msgs[1], Inbound::Market { symbol, .. } if symbol == "MSFT"));
    assert!(matches!(&msgs[2], Inbound::Malformed(m) if m.contains("X")));
}

#[test]
fn garbage_frames_are_errors() {
    for text in ["", "not json", "{\"T\":\"q\"}", "[1,2", "[1]"] {
        let result = decode_json(text);
        let all_malformed =
            matches!(&result, Ok(v) if v.iter().all(|m| matches!(m, Inbound::Malformed(_))));
        assert!(result.is_err() || all_malformed, "{text:?} → {result:?}");
    }
}

#[test]
fn escaped_strings_are_owned_not_rejected() {
    let msgs = decode_json(r#"[{"T":"error","code":400,"msg":"invalid \"syntax\""}]"#).unwrap();
    assert_eq!(
        msgs[0],
        Inbound::Error {
            code: 400,
            msg: "invalid \"syntax\"".into()
        }
    );
}

#[test]
fn encodes_auth_and_subscriptions() {
    let creds = Credentials {
        key_id: Secret::new("KEY"),
        secret_key: Secret::new("SEC"),
    };
    let auth = auth_message(&creds);
    assert_eq!(
        auth,
        serde_json::json!({"action":"auth","key":"KEY","secret":"SEC"})
    );
    let mut set = SubscriptionSet::new();
    set.insert(Channel::Quotes, Symbol::parse("AAPL").unwrap());
    set.insert(Channel::Quotes, Symbol::parse("MSFT").unwrap());
    set.insert(Channel::Trades, Symbol::parse("AAPL").unwrap());
    assert_eq!(
        subscription_message("subscribe", &set),
        serde_json::json!({"action":"subscribe","trades":["AAPL"],"quotes":["AAPL","MSFT"]})
    );
    assert_eq!(
        encode_client(&auth, Encoding::Json),
        ClientFrame::Text(r#"{"action":"auth","key":"KEY","secret":"SEC"}"#.into())
    );
}

/// Parses space-separated hex.
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

// The hex below is what msgpack-python produces for these values (checked by hand against the
// msgpack spec: fixmap/fixstr/float64/fixint markers and the three timestamp extensions).

#[test]
fn msgpack_auth_message_is_byte_exact() {
    let creds = Credentials {
        key_id: Secret::new("KEY"),
        secret_key: Secret::new("SEC"),
    };
    let expected = hex("83 a6 61 63 74 69 6f 6e a4 61 75 74 68 a3 6b 65 79 a3 4b 45 59 a6 73 65 63 72 65 74 a3 53 45 43");
    assert_eq!(
        encode_client(&auth_message(&creds), Encoding::Msgpack),
        ClientFrame::Binary(expected)
    );
}

#[test]
fn msgpack_connected_message() {
    let frame =
        hex("91 82 a1 54 a7 73 75 63 63 65 73 73 a3 6d 73 67 a9 63 6f 6e 6e 65 63 74 65 64");
    assert_eq!(decode_msgpack(&frame).unwrap(), vec![Inbound::Connected]);
    assert_eq!(
        decode(&frame, true, Encoding::Msgpack).unwrap(),
        vec![Inbound::Connected]
    );
}

#[test]
fn msgpack_option_quote_with_a_timestamp64() {
    // [{"T":"q","S":"SPY260117C00688000","bx":"C","bp":9.46,"bs":53,"ax":"C","ap":9.66,"as":38,
    //   "c":"A","t":Timestamp(2021-02-22T15:51:44.208Z)}]
    let frame = hex(
        "91 8a a1 54 a1 71 a1 53 b2 53 50 59 32 36 30 31 31 37 43 30 30 36 38 38 30 30 30 \
         a2 62 78 a1 43 a2 62 70 cb 40 22 eb 85 1e b8 51 ec a2 62 73 35 a2 61 78 a1 43 \
         a2 61 70 cb 40 23 51 eb 85 1e b8 52 a2 61 73 26 a1 63 a1 41 \
         a1 74 d7 ff 31 97 50 00 60 33 d3 10",
    );
    let msgs = decode_msgpack(&frame).unwrap();
    assert_eq!(
        msgs,
        vec![Inbound::Market {
            symbol: "SPY260117C00688000".into(),
            event: MarketEvent::Quote(Quote {
                bid_price: 9.46,
                bid_size: Num::Int(53),
                ask_price: 9.66,
                ask_size: Num::Int(38),
                timestamp: ts("2021-02-22T15:51:44.208Z"),
                bid_exchange: Code::new("C"),
                ask_exchange: Code::new("C"),
                conditions: codes(&["A"]),
                tape: None,
            }),
        }]
    );
}

#[test]
fn msgpack_option_trades_with_timestamp32_and_timestamp96() {
    // [{"T":"t","S":"AAPL240315C00172500","t":Timestamp(2021-02-22T19:15:00Z),"p":2.84,"s":1,"x":"N","c":"S"}]
    let ts32 = hex(
        "91 87 a1 54 a1 74 a1 53 b3 41 41 50 4c 32 34 30 33 31 35 43 30 30 31 37 32 35 30 30 \
         a1 74 d6 ff 60 34 02 b4 a1 70 cb 40 06 b8 51 eb 85 1e b8 a1 73 01 a1 78 a1 4e a1 63 a1 53",
    );
    let Inbound::Market {
        event: MarketEvent::Trade(t),
        ..
    } = &decode_msgpack(&ts32).unwrap()[0]
    else {
        panic!("not a trade")
    };
    assert_eq!(t.timestamp, ts("2021-02-22T19:15:00Z"));
    assert_eq!((t.price, t.size), (2.84, Num::Int(1)));
    assert_eq!(
        t.conditions,
        vec![Box::from("S")],
        "option conditions are a single string"
    );
    // The same trade at 2514-05-30T01:53:04.000000005Z (timestamp96) with an integer price 3.
    let ts96 = hex(
        "91 87 a1 54 a1 74 a1 53 b3 41 41 50 4c 32 34 30 33 31 35 43 30 30 31 37 32 35 30 30 \
         a1 74 c7 0c ff 00 00 00 05 00 00 00 04 00 00 00 00 a1 70 03 a1 73 02 a1 78 a1 4e a1 63 a1 53",
    );
    let Inbound::Market {
        event: MarketEvent::Trade(t),
        ..
    } = &decode_msgpack(&ts96).unwrap()[0]
    else {
        panic!("not a trade")
    };
    assert_eq!(t.timestamp.to_rfc3339(), "2514-05-30T01:53:04.000000005Z");
    assert_eq!((t.price, t.size), (3.0, Num::Int(2)));
}

#[test]
fn msgpack_frames_with_bad_elements_keep_the_good_ones() {
    // [ {"T":"q","S":"A"} (no prices), {"T":"success","msg":"connected"} ]
    let mut frame = hex("92 82 a1 54 a1 71 a1 53 a1 41");
    frame.extend(hex(
        "82 a1 54 a7 73 75 63 63 65 73 73 a3 6d 73 67 a9 63 6f 6e 6e 65 63 74 65 64",
    ));
    let msgs = decode_msgpack(&frame).unwrap();
    assert!(matches!(&msgs[0], Inbound::Malformed(_)), "{msgs:?}");
    assert_eq!(msgs[1], Inbound::Connected);
    assert!(decode_msgpack(&hex("91 82 a1")).is_err(), "truncated");
    assert!(decode_msgpack(&hex("c1")).is_err(), "never-used marker");
    assert!(decode_msgpack(b"").is_err());
}

#[test]
fn msgpack_value_lengths() {
    assert_eq!(msgpack_value_len(&hex("05")), Some(1));
    assert_eq!(
        msgpack_value_len(&hex("cb 40 22 eb 85 1e b8 51 ec")),
        Some(9)
    );
    assert_eq!(
        msgpack_value_len(&hex("c7 0c ff 00 00 00 05 00 00 00 04 00 00 00 00")),
        Some(15)
    );
    assert_eq!(
        msgpack_value_len(&hex("92 01 81 a1 61 c0 ff")),
        Some(6),
        "stops after one value"
    );
    assert_eq!(
        msgpack_value_len(&hex("dd ff ff ff ff")),
        None,
        "claims more than it holds"
    );
    assert_eq!(
        msgpack_value_len(&hex("d9 05 61")),
        None,
        "truncated string"
    );
}

#[test]
fn crypto_messages_keep_float_sizes_and_books() {
    let msgs = decode_json(
        r#"[{"T":"t","S":"AVAX/USD","p":47.299,"s":29.205707815,"t":"2024-03-12T10:27:48.858228144Z","i":3447222699101865076,"tks":"S"},
            {"T":"q","S":"BAT/USD","bp":0.35718,"bs":13445.46,"ap":0.3581,"as":13561.902,"t":"2024-03-12T10:29:43.111588173Z"},
            {"T":"o","S":"MKR/USD","t":"2024-03-12T10:39:39.445492807Z","b":[],"a":[{"p":2614.587,"s":12.5308}]},
            {"T":"o","S":"BTC/USD","t":"2024-03-12T10:39:39.445492807Z","b":[{"p":1,"s":2}],"a":[],"r":true}]"#,
    )
    .unwrap();
    let Inbound::Market {
        event: MarketEvent::Trade(t),
        ..
    } = &msgs[0]
    else {
        panic!()
    };
    assert_eq!(t.size, Num::Float(29.205707815));
    assert_eq!(t.taker_side.as_deref(), Some("S"));
    let Inbound::Market {
        event: MarketEvent::Quote(q),
        ..
    } = &msgs[1]
    else {
        panic!()
    };
    assert_eq!(q.bid_size, Num::Float(13445.46));
    let Inbound::Market {
        symbol,
        event: MarketEvent::Book(b),
    } = &msgs[2]
    else {
        panic!()
    };
    assert_eq!(symbol, "MKR/USD");
    assert!(!b.reset && b.bids.is_empty());
    assert_eq!(
        b.asks,
        vec![Level {
            price: 2614.587,
            size: Num::Float(12.5308)
        }]
    );
    let Inbound::Market {
        event: MarketEvent::Book(b),
        ..
    } = &msgs[3]
    else {
        panic!()
    };
    assert!(b.reset);
    assert_eq!(
        b.bids,
        vec![Level {
            price: 1.0,
            size: Num::Int(2)
        }]
    );
}

#[test]
fn news_articles_decode() {
    let msgs = decode_json(
        r#"[{"T":"n","id":24918784,"headline":"Corsair Reports Purchase","summary":"...","author":"Benzinga Newsdesk","created_at":"2022-01-05T22:00:37Z","updated_at":"2022-01-05T22:00:38Z","url":null,"content":"<p>...","symbols":["CRSR"],"source":"benzinga"}]"#,
    )
    .unwrap();
    let Inbound::News(n) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(n.id, 24918784);
    assert_eq!(n.symbols, ["CRSR"]);
    assert_eq!(n.url, None);
    assert_eq!(n.created_at, Some(ts("2022-01-05T22:00:37Z")));
    let acks = decode_json(r#"[{"T":"subscription","news":["*"]}]"#).unwrap();
    let Inbound::Subscription(set) = &acks[0] else {
        panic!()
    };
    assert!(set.contains(Channel::News, "*"));
}

#[test]
fn set_difference_and_chunks() {
    let sym = |s| Symbol::parse(s).unwrap();
    let mut a = SubscriptionSet::new();
    a.insert(Channel::Quotes, sym("AAPL"));
    a.insert(Channel::Quotes, sym("MSFT"));
    a.insert(Channel::Trades, sym("AAPL"));
    let mut b = SubscriptionSet::new();
    b.insert(Channel::Quotes, sym("AAPL"));
    let d = a.difference(&b);
    assert_eq!(d.len(), 2);
    assert!(d.contains(Channel::Quotes, "MSFT") && d.contains(Channel::Trades, "AAPL"));
    assert!(b.difference(&a).is_empty());
    let chunks = a.chunks(2);
    assert_eq!(
        chunks.iter().map(SubscriptionSet::len).collect::<Vec<_>>(),
        [2, 1]
    );
}

#[test]
fn key_order_does_not_change_what_a_message_means() {
    // The quote fast path reads T first; a server that puts it elsewhere goes through the
    // general decoder with the keys already read replayed. Both must agree, in both encodings.
    let t_first = r#"[{"T":"q","S":"AAPL","bx":"V","bp":190.12,"bs":2,"ax":"V","ap":190.15,"as":3,"c":["R"],"z":"C","t":"2026-01-20T15:04:05.123456789Z"}]"#;
    let t_later = r#"[{"S":"AAPL","bp":190.12,"z":"C","T":"q","bs":2,"ap":190.15,"as":3,"ax":"V","t":"2026-01-20T15:04:05.123456789Z","c":["R"],"bx":"V"}]"#;
    let a = decode_json(t_first).unwrap();
    let b = decode_json(t_later).unwrap();
    assert_eq!(a, b);
    assert!(matches!(&a[0], Inbound::Market { symbol, .. } if symbol == "AAPL"));
    let value: serde_json::Value = serde_json::from_str(t_later).unwrap();
    let packed = rmp_serde::to_vec_named(&value).unwrap();
    assert_eq!(decode_msgpack(&packed).unwrap(), a);
    // A trade after a quote in one frame still takes the general path.
    let mixed = r#"[{"T":"q","S":"A","bp":1,"ap":2,"bs":1,"as":1,"t":"2026-01-20T15:04:05Z"},{"T":"t","S":"A","p":1.5,"s":3,"t":"2026-01-20T15:04:05Z","c":["@"],"i":7,"x":"V","z":"C"}]"#;
    let both = decode_json(mixed).unwrap();
    assert!(matches!(
        &both[1],
        Inbound::Market { event: MarketEvent::Trade(t), .. } if t.price == 1.5 && t.id == Some(7)
    ));
}

#[test]
fn a_quote_missing_a_price_is_malformed_and_its_frame_kept() {
    let frame = r#"[{"T":"q","S":"AAPL","bp":1,"bs":1,"as":1,"t":"2026-01-20T15:04:05Z"},{"T":"q","S":"MSFT","bp":1,"ap":2,"t":"2026-01-20T15:04:05Z"}]"#;
    let out = decode_json(frame).unwrap();
    assert!(
        matches!(&out[0], Inbound::Malformed(m) if m.contains("ap")),
        "{out:?}"
    );
    assert!(matches!(&out[1], Inbound::Market { symbol, .. } if symbol == "MSFT"));
}

#[test]
fn a_trade_update_keeps_its_kind_and_a_luld_band_does_not_confuse_it() {
    let msgs = decode_json(
        r#"[{"T":"t","S":"AAPL","i":7,"x":"V","p":190.5,"s":10,"c":["@"],"z":"C","u":"canceled","t":"2021-02-22T15:51:44.208Z"},
            {"T":"l","S":"IONM","u":3.24,"d":2.65,"i":"B","t":"2023-04-06T13:34:45.565004401Z","z":"C"}]"#,
    )
    .unwrap();
    let Inbound::Market {
        event: MarketEvent::Trade(t),
        ..
    } = &msgs[0]
    else {
        panic!("{:?}", msgs[0]);
    };
    assert_eq!(t.update.as_deref(), Some("canceled"));
    assert!(!t.sets_last_price());
    assert!(
        matches!(
            &msgs[1],
            Inbound::Market {
                event: MarketEvent::Status(_),
                ..
            }
        ),
        "{:?}",
        msgs[1]
    );
}

/// The instruction count of a decoded quote and trade, under callgrind (BENCHMARKS.md).
#[test]
#[ignore]
fn decode_many() {
    let frame = r#"[{"T":"q","S":"AAPL","bx":"V","bp":190.12,"bs":2,"ax":"Q","ap":190.16,"as":3,"c":["R"],"z":"C","t":"2026-01-20T15:04:05.123456789Z"},{"T":"t","S":"AAPL","i":96921,"x":"D","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z","c":["@","I"],"z":"C"}]"#;
    let mut n = 0;
    for _ in 0..100_000 {
        n += decode_json(std::hint::black_box(frame)).unwrap().len();
    }
    assert_eq!(n, 200_000);
}
