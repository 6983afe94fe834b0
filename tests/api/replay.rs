//! Replay: a session recorded from the simulator (every feed and an account with fills) played
//! back at `max` through the daemon, compared message for message with what the recorder saw, on
//! every SDK path; gaps in a record and the end of a round reach SDK programs as a lost upstream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tickrelay::recorder::format::{write_frame, write_record, Kind, Reader};
use tickrelay::replay::source::{classify, Meaning};
use tickrelay::settings::{Provider, ReplaySpeed, ReplayStart, Settings};

use crate::helpers::{spawn_app_with, wait_for, Ended, TestApp};
use crate::sdk::{add_client, authed, msgpack_to_json, SdkClient, KEY, SECRET};

const OCC: &str = "SPY261218C00600000";

pub fn record_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("replay-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// One SDK program's subscription: its path, encoding, subscribe message and which recorded
/// messages it must receive.
struct Program {
    path: &'static str,
    msgpack: bool,
    subscribe: Value,
    /// Message types (`T`) and symbols it wants; no symbols: every symbol (news).
    types: &'static [&'static str],
    symbols: &'static [&'static str],
}

impl Program {
    fn wants(&self, m: &Value) -> bool {
        let t = m["T"].as_str().unwrap_or_default();
        self.types.contains(&t)
            && (self.symbols.is_empty() || self.symbols.iter().any(|s| m["S"] == *s))
    }

    fn source(&self) -> &'static str {
        match self.path {
            "/v2/iex" => "stocks",
            "/v1beta3/crypto/us" => "crypto",
            "/v1beta1/indicative" => "options",
            _ => "news",
        }
    }
}

fn programs() -> Vec<Program> {
    vec![
        Program {
            path: "/v2/iex",
            msgpack: false,
            subscribe: json!({"action":"subscribe","trades":["AAPL","MSFT"],"quotes":["AAPL","MSFT"],"bars":["AAPL"]}),
            types: &["t", "q", "b"],
            symbols: &["AAPL", "MSFT"],
        },
        Program {
            path: "/v1beta3/crypto/us",
            msgpack: false,
            subscribe: json!({"action":"subscribe","trades":["BTC/USD"],"quotes":["BTC/USD"],"orderbooks":["BTC/USD"]}),
            types: &["t", "q", "o"],
            symbols: &["BTC/USD"],
        },
        Program {
            path: "/v1beta1/indicative",
            msgpack: true,
            subscribe: json!({"action":"subscribe","trades":[OCC],"quotes":[OCC]}),
            types: &["t", "q"],
            symbols: &[OCC],
        },
        Program {
            path: "/v1beta1/news",
            msgpack: false,
            subscribe: json!({"action":"subscribe","news":["*"]}),
            types: &["n"],
            symbols: &[],
        },
    ]
}

/// An SDK program on `/stream`, listening to the account's trade updates.
async fn trading(app: &TestApp) -> SdkClient {
    let mut t = SdkClient::connect(app, "/stream", false).await;
    t.send(json!({"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}))
        .await;
    t.expect(|m| m["stream"] == "authorization").await;
    t.send(json!({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        .await;
    t.expect(|m| m["stream"] == "listening").await;
    t
}

/// Every program connected, authenticated and subscribed (acknowledged).
async fn subscribe_all(app: &TestApp) -> Vec<SdkClient> {
    let mut clients = Vec::new();
    for p in programs() {
        let mut c = authed(app, p.path, p.msgpack).await;
        c.send(p.subscribe.clone()).await;
        c.expect(|m| m["T"] == "subscription").await;
        clients.push(c);
    }
    clients
}

/// The records of `dir`, in order.
fn read_records(dir: &Path) -> Vec<tickrelay::recorder::format::Record> {
    let files = tickrelay::replay::source::files(&[dir.display().to_string()]).unwrap();
    assert!(!files.is_empty(), "the recorder wrote segments");
    files
        .iter()
        .flat_map(|f| Reader::new(std::fs::File::open(f).unwrap()).unwrap())
        .map(Result::unwrap)
        .collect()
}

/// The data messages the recorder saw, by source, as the SDK clients decode them.
fn recorded_messages(dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in read_records(dir) {
        let binary = match r.kind {
            Kind::Text => false,
            Kind::Binary => true,
            Kind::Gap => panic!("the recording has a gap"),
            _ => continue,
        };
        if let Meaning::Protocol { .. } = classify(&r.source, &r.payload, binary) {
            continue;
        }
        let decoded = if binary && !r.source.starts_with("trading:") {
            msgpack_to_json(rmpv::decode::read_value(&mut &r.payload[..]).unwrap())
        } else {
            serde_json::from_slice(&r.payload).unwrap()
        };
        let messages = match decoded {
            Value::Array(items) => items,
            one => vec![one],
        };
        out.entry(r.source.clone()).or_default().extend(messages);
    }
    out
}

/// Reads `n` messages.
async fn read_n(client: &mut SdkClient, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        let (_, msgs) = client.next_frame().await;
        got.extend(msgs);
    }
    got
}

/// A daemon replaying `dir` at max, paused until [`play`], with the `algo` client.
pub fn replaying(dir: &Path, s: &mut Settings) {
    s.upstream.provider = Provider::Replay;
    s.replay.path = vec![dir.display().to_string()];
    s.replay.speed = ReplaySpeed::Max;
    s.replay.start = ReplayStart::Paused;
    // A recorded account is a real one: not served to anonymous callers.
    s.auth.anonymous_scopes = vec!["market".into()];
    add_client(s, "algo", KEY, SECRET, &["main"]);
}

/// Waits until the daemon's upstream subscriptions on `feeds` are all acknowledged: what plays
/// from then on reaches the programs.
async fn wait_subscribed(app: &TestApp, feeds: &[&str]) {
    wait_for("the upstream subscriptions", || async {
        let status = app.status().await;
        feeds
            .iter()
            .all(|f| {
                let feed = &status["feeds"][*f];
                feed["desired"].as_u64() > Some(0) && feed["subscribed"] == feed["desired"]
            })
            .then_some(())
    })
    .await;
}

async fn play(app: &TestApp) {
    let (code, reply) = app
        .send_json(
            "POST",
            &app.url("/api/v1/replay"),
            &json!({"action": "play"}),
        )
        .await;
    assert_eq!(code, 200, "{reply}");
    // At max a short record may have ended already.
    assert!(
        reply["state"] == "playing" || reply["state"] == "finished",
        "{reply}"
    );
}

/// Waits until the daemon's view of account `main` holds `qty` AAPL.
async fn aapl_position(app: &TestApp, qty: &str) {
    wait_for("the AAPL position", || async {
        let (_, positions) = app.get(&app.url("/api/v1/accounts/main/positions")).await;
        let aapl = positions
            .as_array()?
            .iter()
            .find(|p| p["symbol"] == "AAPL")?
            .clone();
        (aapl["qty"] == qty).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_recorded_session_replays_message_for_message_on_every_sdk_path() {
    let dir = record_dir("every-path");
    // Record: every feed and the account, while the account places and fills orders.
    let app = spawn_app_with(|s| {
        s.recorder.enabled = true;
        s.recorder.dir = dir.display().to_string();
        s.recorder.flush_ms = 50;
        add_client(s, "algo", KEY, SECRET, &["main"]);
    })
    .await;
    let mut clients = subscribe_all(&app).await;
    let mut stream = trading(&app).await;
    for (symbol, qty) in [("AAPL", 10i64), ("MSFT", 5), ("AAPL", -4)] {
        let side = if qty > 0 { "buy" } else { "sell" };
        app.sim(
            "order",
            json!({"symbol": symbol, "qty": qty.abs(), "side": side, "price": 190.5}),
        )
        .await;
        stream
            .expect(|m| m["stream"] == "trade_updates" && m["data"]["event"] == "fill")
            .await;
    }
    app.sim(
        "inject",
        json!({"news": [{"headline": "Recorded headline", "symbols": ["AAPL"]}]}),
    )
    .await;
    clients[3].expect(|m| m["T"] == "n").await;
    for (c, p) in clients.iter_mut().zip(programs()) {
        read_n(c, if p.types == ["n"] { 0 } else { 20 }).await;
    }
    // The account's reload after the last fill is recorded too.
    aapl_position(&app, "6").await;
    app.handle.shutdown().await;
    drop((clients, stream));

    let recorded = recorded_messages(&dir);
    let updates = recorded["trading:main"].clone();
    assert!(
        updates
            .iter()
            .filter(|u| u["data"]["event"] == "fill")
            .count()
            >= 3,
        "{updates:?}"
    );

    // Replay at max, paused until every program listens.
    let app = spawn_app_with(|s| replaying(&dir, s)).await;
    let mut clients = subscribe_all(&app).await;
    let mut stream = trading(&app).await;
    assert_eq!(app.status().await["replay"]["state"], "paused");
    // AAPL also through the throttles, as browsers and REST callers get it.
    let (code, reply) = app
        .send_json(
            "POST",
            &app.url("/api/v1/subscriptions"),
            &json!({"symbols": ["AAPL"]}),
        )
        .await;
    assert_eq!(code, 200, "{reply}");
    wait_subscribed(&app, &["stocks", "crypto", "options", "news"]).await;
    play(&app).await;
    for (c, p) in clients.iter_mut().zip(programs()) {
        let expected: Vec<Value> = recorded[p.source()]
            .iter()
            .filter(|m| p.wants(m))
            .cloned()
            .collect();
        assert!(!expected.is_empty(), "{} recorded data", p.path);
        let got = read_n(c, expected.len()).await;
        assert_eq!(got.len(), expected.len(), "{}", p.path);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "{} message {i} of {}", p.path, expected.len());
        }
    }
    let got = read_n(&mut stream, updates.len()).await;
    assert_eq!(got, updates, "/stream");

    wait_for("the replay to finish", || async {
        (app.status().await["replay"]["state"] == "finished").then_some(())
    })
    .await;
    let status = app.status().await["replay"].clone();
    assert_eq!(status["gaps"], 0, "{status}");
    assert!(status["clock"].is_string(), "{status}");
    // The account's REST view comes to the state recorded after the last fill (the daemon
    // reloads it after a fill, as it did while recording).
    aapl_position(&app, "6").await;
    // The last recorded quote is the price browsers and REST callers see.
    let last = recorded["stocks"]
        .iter()
        .rev()
        .find(|m| m["T"] == "q" && m["S"] == "AAPL")
        .unwrap()
        .clone();
    wait_for("the last recorded AAPL quote as the price", || async {
        let (_, quote) = app.get(&app.url("/api/v1/quotes/AAPL")).await;
        (quote["bid_price"] == last["bp"] && quote["ask_price"] == last["ap"]).then_some(())
    })
    .await;
    let mut scrape = app.http.get(app.url("/metrics")).send().await.unwrap();
    let metrics = String::from_utf8(scrape.body().limit(1 << 22).await.unwrap().to_vec()).unwrap();
    assert!(
        metrics.contains("tickrelay_replay_state{state=\"finished\"} 1"),
        "{metrics}"
    );
    assert_eq!(app.status().await["provider"], "replay");
}

/// Writes a one-segment record of `frames` (`None`: a gap) for `stocks`, two seconds apart.
pub fn synthetic(dir: &Path, frames: &[Option<&str>]) {
    std::fs::create_dir_all(dir).unwrap();
    let start: u64 = 1_800_000_000_000_000_000;
    let mut records = Vec::new();
    write_record(
        &mut records,
        Kind::Header,
        start,
        "",
        br#"{"format":"tickrelay-record","version":1}"#,
    );
    write_record(&mut records, Kind::Snapshot, start, "", b"{}");
    for (i, frame) in frames.iter().enumerate() {
        let t = start + (i as u64 + 1) * 2_000_000_000;
        match frame {
            Some(text) => write_record(&mut records, Kind::Text, t, "stocks", text.as_bytes()),
            None => write_record(&mut records, Kind::Gap, t, "", &3u64.to_le_bytes()),
        }
    }
    let mut file = Vec::new();
    write_frame(&mut file, &records, 3).unwrap();
    std::fs::write(dir.join(format!("tickrelay-{start:020}.rec.zst")), file).unwrap();
}

/// An SDK program subscribed to AAPL quotes on a replaying daemon.
async fn aapl_program(app: &TestApp) -> SdkClient {
    let mut c = authed(app, "/v2/iex", false).await;
    c.send(json!({"action":"subscribe","quotes":["AAPL"]}))
        .await;
    c.expect(|m| m["T"] == "subscription").await;
    c
}

/// As an SDK does: (re)connects until a quote comes; answers the program, the quote's bid and
/// how many times the program was closed (with 1012) first.
/// A program that connects while the upstream is away is closed with 1012 at its return, like
/// the first one: it connects again.
async fn next_bid(app: &TestApp, program: Option<SdkClient>) -> (SdkClient, Value, usize) {
    let mut program = match program {
        Some(p) => p,
        None => aapl_program(app).await,
    };
    for closed in 0..10 {
        match program.expect_or_end(|m| m["T"] == "q").await {
            Ok(quote) => return (program, quote["bp"].clone(), closed),
            Err(ended) => assert_eq!(ended, Ended::Closed(Some(1012))),
        }
        program = aapl_program(app).await;
    }
    panic!("no quote after ten reconnections");
}

#[actix_web::test]
async fn a_gap_in_the_record_and_a_new_round_close_sdk_programs_as_a_lost_upstream() {
    let dir = record_dir("gap");
    let quote = |bp: f64| {
        format!(
            r#"[{{"T":"q","S":"AAPL","bp":{bp},"ap":{},"bs":1,"as":1,"t":"2027-01-15T15:00:00Z"}}]"#,
            bp + 1.0
        )
    };
    let (a, b) = (quote(100.0), quote(200.0));
    synthetic(&dir, &[Some(&a), None, Some(&b)]);
    let app = spawn_app_with(|s| {
        replaying(&dir, s);
        s.replay.repeat = true;
        // At the recorded pace: a program closed by a gap is back (in milliseconds) well before
        // the next frame is due, two recorded seconds on.
        s.replay.speed = ReplaySpeed::Times(1.0);
        // The synthetic record holds no account.
        for account in s.accounts.values_mut() {
            account.enabled = false;
        }
    })
    .await;
    let program = aapl_program(&app).await;
    wait_subscribed(&app, &["stocks"]).await;
    play(&app).await;
    let (program, bid, closed) = next_bid(&app, Some(program)).await;
    assert_eq!((bid.as_f64(), closed), (Some(100.0), 0));
    // The gap: the program is closed as Alpaca closes streams it restarts; it reconnects, as the
    // SDKs do, and gets what follows the gap.
    let (program, bid, closed) = next_bid(&app, Some(program)).await;
    assert_eq!(bid, 200.0);
    assert!(closed >= 1, "the gap closed the program");
    // The end of the round is a gap too, and the record plays again.
    let (_program, bid, closed) = next_bid(&app, Some(program)).await;
    assert_eq!(bid, 100.0);
    assert!(closed >= 1, "the new round closed the program");
    let status = app.status().await["replay"].clone();
    assert!(status["gaps"].as_u64().unwrap() >= 2, "{status}");
    assert!(status["rounds"].as_u64().unwrap() >= 1, "{status}");

    // Operators pause it; the command needs admin.
    let anonymous = app
        .anonymous
        .post(app.url("/api/v1/replay"))
        .send_json(&json!({"action": "pause"}))
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let (code, reply) = app
        .send_json(
            "POST",
            &app.url("/api/v1/replay"),
            &json!({"action": "rewind"}),
        )
        .await;
    assert_eq!(code, 400, "{reply}");

    // The replay server itself answers only the daemon that started it (its secret).
    let (_, framed) = awc::Client::new()
        .ws(format!("ws://{}/v2/iex", app.sim))
        .connect()
        .await
        .unwrap();
    let mut stranger = crate::helpers::WsClient::from_framed(framed);
    assert_eq!(stranger.next_json().await[0]["msg"], "connected");
    stranger
        .send(json!({"action": "auth", "key": "main", "secret": "guess"}))
        .await;
    assert_eq!(stranger.next_json().await[0]["code"], 402);
    // A message over the server's 1 MiB limit ends the connection at its header, unread.
    let (_, framed) = awc::Client::new()
        .ws(format!("ws://{}/v2/iex", app.sim))
        .connect()
        .await
        .unwrap();
    let mut oversize = crate::helpers::WsClient::from_framed(framed);
    assert_eq!(oversize.next_json().await[0]["msg"], "connected");
    oversize
        .send_raw(awc::ws::Message::Binary(vec![b'x'; 2 << 20].into()))
        .await;
    assert!(matches!(
        oversize.until_end().await,
        Ended::Eof | Ended::Closed(_)
    ));
    let rest = awc::Client::new()
        .get(format!("http://{}/v2/account", app.sim))
        .insert_header(("APCA-API-KEY-ID", "main"))
        .insert_header(("APCA-API-SECRET-KEY", "guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status().as_u16(), 401);
}
