//! The real Alpaca SDKs against tickrelay: alpaca-py and alpaca-trade-api from PyPI, the official
//! JS SDK from npm, unmodified, pointed at tickrelay by their stream URL setting. The programs in
//! `tests/sdk/` print each item the SDK parsed as a JSON line and fail on any error the SDK
//! reports. `tests/sdk/setup.sh` installs the pinned packages under `target/sdk` on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_unready, wait_for, TestApp};
use crate::sdk::{add_client, sdk_app, tls_client, use_test_tls, KEY, SECRET};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the SDKs once per test run (the script itself is a no-op when they are in place).
fn sdk_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target/sdk");
        let out = Command::new("bash")
            .arg(repo().join("tests/sdk/setup.sh"))
            .arg(&dir)
            .output()
            .expect("run tests/sdk/setup.sh");
        assert!(
            out.status.success(),
            "installing the SDKs failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// What an SDK program printed.
struct Output {
    items: Vec<Value>,
}

impl Output {
    fn of(&self, kind: &str) -> Vec<&Value> {
        self.items.iter().filter(|i| i["type"] == kind).collect()
    }
}

/// Runs an SDK program to its end (it stops by itself after its count or its timeout) and
/// fails the test with its stderr unless it succeeded.
async fn run(name: &str, mut cmd: Command) -> Output {
    cmd.env("APCA_API_KEY_ID", KEY)
        .env("APCA_API_SECRET_KEY", SECRET)
        .env("PYTHONUNBUFFERED", "1")
        .env("SDK_NODE_DIR", sdk_dir().join("node"));
    let name = name.to_owned();
    let out = actix_web::rt::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("start the SDK program");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{}\nits output:\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Output {
        items: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
            .collect(),
    }
}

fn alpaca_py(mode: &str, url: String, args: &[&str]) -> Command {
    let mut c = Command::new(sdk_dir().join("venv-py/bin/python"));
    c.arg(repo().join("tests/sdk/alpaca_py_client.py"))
        .args([mode, "--url", &url, "--timeout", "40"])
        .args(args);
    c
}

fn atap(base: String, args: &[&str]) -> Command {
    let mut c = Command::new(sdk_dir().join("venv-atap/bin/python"));
    c.arg(repo().join("tests/sdk/atap_client.py"))
        .args(["--url", &base, "--timeout", "40"])
        .args(args);
    c
}

fn js(mode: &str, base: String, args: &[&str]) -> Command {
    let mut c = Command::new("node");
    c.arg(repo().join("tests/sdk/js_client.js"))
        .args([mode, "--url", &base, "--timeout", "40"])
        .args(args)
        .env("NODE_EXTRA_CA_CERTS", repo().join("tests/tls/ca.pem"));
    c
}

fn ws(app: &TestApp, path: &str) -> String {
    format!("ws://{}{path}", app.addr)
}

/// Keeps injecting news and placing orders in the simulator until dropped, for the streams
/// that have no steady flow.
struct Events(Rc<std::cell::Cell<bool>>);

impl Events {
    fn start(app: &TestApp) -> Events {
        let running = Rc::new(std::cell::Cell::new(true));
        let (flag, sim, http) = (running.clone(), app.sim, app.http.clone());
        actix_web::rt::spawn(async move {
            let mut n = 0;
            while flag.get() {
                n += 1;
                let post = |cmd: &str, body: Value| {
                    http.post(format!("http://{sim}/control/{cmd}"))
                        .send_json(&body)
                };
                let news =
                    json!({"news": [{"headline": format!("Story {n}"), "symbols": ["AAPL"]}]});
                let _ = post("inject", news).await;
                let side = if n % 2 == 0 { "sell" } else { "buy" };
                let order = json!({"symbol": "AAPL", "qty": 1, "side": side, "price": 190.0});
                let _ = post("order", order).await;
                actix_web::rt::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Events(running)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

#[actix_web::test]
async fn alpaca_py_parses_every_stream_into_its_models() {
    let app = sdk_app().await;
    let _events = Events::start(&app);
    let (stocks, crypto, options, news, trading) = tokio::join!(
        run(
            "alpaca-py stocks",
            alpaca_py(
                "stocks",
                ws(&app, "/v2/iex"),
                &["--channels", "quotes,trades", "--count", "8"]
            )
        ),
        run(
            "alpaca-py crypto",
            alpaca_py(
                "crypto",
                ws(&app, "/v1beta3/crypto/us"),
                &["--channels", "quotes,trades,orderbooks", "--count", "12"]
            )
        ),
        run(
            "alpaca-py options",
            alpaca_py(
                "options",
                ws(&app, "/v1beta1/indicative"),
                &["--symbols", "SPY261218C00600000", "--count", "3"]
            )
        ),
        run(
            "alpaca-py news",
            alpaca_py("news", ws(&app, "/v1beta1/news"), &["--count", "2"])
        ),
        run(
            "alpaca-py trading",
            alpaca_py("trading", ws(&app, "/stream"), &["--count", "2"])
        ),
    );
    let q = stocks.of("quote");
    assert!(!q.is_empty(), "{:?}", stocks.items);
    for field in [
        "bid_price",
        "ask_price",
        "bid_exchange",
        "ask_exchange",
        "tape",
    ] {
        assert!(!q[0][field].is_null(), "quote {field}: {}", q[0]);
    }
    assert!(!crypto.of("quote").is_empty() || !crypto.of("trade").is_empty());
    assert!(
        !crypto.of("orderbook").is_empty(),
        "orderbooks: {:?}",
        crypto.items
    );
    assert_eq!(options.items.len(), 3);
    assert!(options
        .items
        .iter()
        .all(|i| i["symbol"] == "SPY261218C00600000"));
    let n = news.of("news");
    assert_eq!(n.len(), 2);
    assert!(
        n[0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("Story")),
        "{}",
        n[0]
    );
    let t = trading.of("trade_update");
    assert_eq!(t.len(), 2, "{:?}", trading.items);
    assert!(t.iter().all(|u| !u["event"].is_null()));
}

#[actix_web::test]
async fn alpaca_trade_api_receives_stock_quotes() {
    let app = sdk_app().await;
    let out = run(
        "alpaca-trade-api",
        atap(
            format!("http://{}", app.addr),
            &["--symbols", "AAPL,MSFT", "--count", "6"],
        ),
    )
    .await;
    let quotes = out.of("quote");
    assert_eq!(quotes.len(), 6, "{:?}", out.items);
    assert!(quotes
        .iter()
        .all(|q| q["symbol"] == "AAPL" || q["symbol"] == "MSFT"));
}

#[actix_web::test]
async fn the_js_sdk_receives_stocks_and_crypto_over_tls() {
    let app = spawn_unready(|s| {
        use_test_tls(s);
        add_client(s, "algo", KEY, SECRET, &[]);
    })
    .await;
    let base = format!("https://127.0.0.1:{}", app.addr.port());
    let client = tls_client();
    wait_for("readiness over https", || async {
        let res = client.get(format!("{base}/readyz")).send().await.ok()?;
        res.status().is_success().then_some(())
    })
    .await;
    let (stocks, crypto) = tokio::join!(
        run(
            "JS SDK stocks (wss)",
            js("stocks", base.clone(), &["--count", "6"])
        ),
        run(
            "JS SDK crypto (wss)",
            js("crypto", base.clone(), &["--count", "6"])
        ),
    );
    assert!(stocks
        .items
        .iter()
        .all(|i| i["symbol"].as_str().is_some_and(|s| !s.contains('/'))));
    assert!(crypto
        .items
        .iter()
        .all(|i| i["symbol"].as_str().is_some_and(|s| s.contains('/'))));
}

#[actix_web::test]
async fn five_programs_share_one_connection_per_feed() {
    let app = sdk_app().await;
    let leaver = alpaca_py(
        "stocks",
        ws(&app, "/v2/iex"),
        &[
            "--symbols",
            "AAPL,MSFT",
            "--channels",
            "quotes",
            "--unsubscribe-after",
            "5",
            "--show-control",
            "--count",
            "25",
        ],
    );
    let programs = tokio::join!(
        run("leaver (alpaca-py)", leaver),
        run(
            "alpaca-py AAPL,SPY",
            alpaca_py(
                "stocks",
                ws(&app, "/v2/iex"),
                &[
                    "--symbols",
                    "AAPL,SPY",
                    "--channels",
                    "quotes",
                    "--count",
                    "25"
                ]
            )
        ),
        run(
            "alpaca-trade-api AAPL,MSFT",
            atap(
                format!("http://{}", app.addr),
                &["--symbols", "AAPL,MSFT", "--count", "25"]
            )
        ),
        run(
            "JS SDK v4 MSFT,SPY",
            js(
                "stocks",
                format!("http://{}", app.addr),
                &[
                    "--sdk",
                    "v4",
                    "--symbols",
                    "MSFT,SPY",
                    "--channels",
                    "quotes",
                    "--count",
                    "25"
                ]
            )
        ),
        run(
            "alpaca-py crypto",
            alpaca_py(
                "crypto",
                ws(&app, "/v1beta3/crypto/us"),
                &["--channels", "quotes", "--count", "25"]
            )
        ),
        async {
            // Meanwhile: never more than one upstream connection per feed.
            for _ in 0..20 {
                let conns = app.sim_connections().await;
                for feed in ["stocks", "crypto", "options", "news"] {
                    let n = conns.iter().filter(|c| c["feed"] == feed).count();
                    assert!(n <= 1, "{n} upstream connections for {feed}: {conns:?}");
                }
                actix_web::rt::time::sleep(Duration::from_millis(200)).await;
            }
        },
    );
    let (leaver, aapl_spy, atap_out, js_out, crypto, ()) = programs;
    // Each got what it asked for, AAPL included for the ones that kept it.
    for (out, symbols) in [
        (&aapl_spy, ["AAPL", "SPY"]),
        (&atap_out, ["AAPL", "MSFT"]),
        (&js_out, ["MSFT", "SPY"]),
    ] {
        let quotes = out.of("quote");
        assert_eq!(quotes.len(), 25);
        assert!(quotes
            .iter()
            .all(|q| symbols.contains(&q["symbol"].as_str().unwrap())));
    }
    assert_eq!(crypto.of("quote").len(), 25);
    // The leaver: after the ack without AAPL, no AAPL quote reached it, and MSFT kept coming.
    let ack_at = leaver
        .items
        .iter()
        .position(|i| {
            i["type"] == "subscription"
                && i["quotes"]
                    .as_array()
                    .is_some_and(|q| !q.iter().any(|s| s == "AAPL"))
        })
        .unwrap_or_else(|| panic!("no ack without AAPL: {:?}", leaver.items));
    let after = &leaver.items[ack_at..];
    // (The client's own `unsubscribed` marker may print after the ack; it is not data.)
    assert!(
        !after
            .iter()
            .any(|i| i["symbol"] == "AAPL" && i["type"] != "unsubscribed"),
        "AAPL after the unsubscribe ack: {after:?}"
    );
    // MSFT kept coming (how many arrived before the ack depends on the machine's speed).
    let quotes: Vec<&Value> = after.iter().filter(|i| i["type"] == "quote").collect();
    assert!(!quotes.is_empty(), "no quote after the ack: {after:?}");
    assert!(quotes.iter().all(|q| q["symbol"] == "MSFT"), "{quotes:?}");
}

/// How many SDK programs of `kind` (`sdk:stocks`, …) the status lists as receiving data.
fn receiving(status: &Value, kind: &str) -> usize {
    status["sessions"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["kind"] == kind && s["sent_bytes"].as_u64() > Some(2_000))
        .count()
}

/// A lost upstream, with the real SDKs: tickrelay closes their connections (1012) as a
/// restarting Alpaca would, and each SDK reconnects by itself, signs in and subscribes again,
/// runs its reconnect hook and receives data on the new connection — alpaca-py,
/// alpaca-trade-api, and the JS SDK's v4 (stocks) and v3 (crypto).
#[actix_web::test]
async fn every_sdk_reconnects_after_a_lost_upstream_and_its_hook_runs() {
    let app = sdk_app().await;
    let base = format!("http://{}", app.addr);
    let programs = [
        (
            "alpaca-py",
            alpaca_py(
                "stocks",
                ws(&app, "/v2/iex"),
                &[
                    "--symbols",
                    "AAPL",
                    "--channels",
                    "quotes",
                    "--count",
                    "3",
                    "--reconnect",
                ],
            ),
        ),
        (
            "alpaca-trade-api",
            atap(
                base.clone(),
                &["--symbols", "AAPL", "--count", "3", "--reconnect"],
            ),
        ),
        (
            "js v4",
            js(
                "stocks",
                base.clone(),
                &[
                    "--sdk",
                    "v4",
                    "--symbols",
                    "AAPL",
                    "--channels",
                    "quotes",
                    "--count",
                    "3",
                    "--reconnect",
                ],
            ),
        ),
        (
            "js v3",
            js(
                "crypto",
                base.clone(),
                &[
                    "--sdk",
                    "v3",
                    "--symbols",
                    "BTC/USD",
                    "--channels",
                    "quotes",
                    "--count",
                    "3",
                    "--reconnect",
                ],
            ),
        ),
    ];
    let runs = futures_util::future::join_all(programs.map(|(name, cmd)| run(name, cmd)));
    let drop_upstream = async {
        // Every program is receiving data before its upstream goes.
        wait_for("every program receiving", || async {
            let status = app.get(&app.url("/api/v1/status?sessions=100")).await.1;
            let (stocks, crypto) = (
                receiving(&status, "sdk:stocks"),
                receiving(&status, "sdk:crypto"),
            );
            (stocks >= 3 && crypto >= 1).then_some(())
        })
        .await;
        for feed in ["stocks", "crypto"] {
            app.sim("drop", json!({"feed": feed, "mode": "abort"}))
                .await;
        }
    };
    let (outputs, ()) = futures_util::future::join(runs, drop_upstream).await;
    for (name, out) in ["alpaca-py", "alpaca-trade-api", "js v4", "js v3"]
        .iter()
        .zip(&outputs)
    {
        let connections: Vec<u64> = out
            .of("connected")
            .iter()
            .filter_map(|c| c["n"].as_u64())
            .collect();
        assert!(
            connections.contains(&2),
            "{name} did not reconnect: {:?}",
            out.items
        );
        let after = out
            .of("quote")
            .iter()
            .filter(|q| q["connection"].as_u64() >= Some(2))
            .count();
        assert!(
            after >= 3,
            "{name}: {after} quotes after reconnecting: {:?}",
            out.items
        );
        // An SDK that reconnects at once may do so while the upstream is still down; it is
        // closed again when the upstream is back (it saw no data in between): one or two.
        if name.starts_with("js") {
            assert!(
                !out.of("reconnect_hook").is_empty(),
                "{name}'s own reconnect hook: {:?}",
                out.items
            );
        }
    }
}

/// `sdk.on_upstream_loss = "keep"`, with the real SDKs: the upstream drops while they stream and
/// they notice nothing — no close, no reconnect (the drivers fail on either) — and their data
/// resumes: alpaca-py and the JS SDK v4 each read 150 quotes across the drop.
#[actix_web::test]
async fn keep_mode_keeps_real_sdk_programs_through_a_lost_upstream() {
    let app = spawn_unready(|s| {
        add_client(s, "algo", KEY, SECRET, &[]);
        s.sdk.on_upstream_loss = tickrelay::settings::UpstreamLoss::Keep;
    })
    .await;
    app.wait_ready().await;
    let base = format!("http://{}", app.addr);
    let programs = [
        (
            "alpaca-py",
            alpaca_py(
                "stocks",
                ws(&app, "/v2/iex"),
                &[
                    "--symbols",
                    "AAPL",
                    "--channels",
                    "quotes",
                    "--count",
                    "150",
                ],
            ),
        ),
        (
            "js v4",
            js(
                "stocks",
                base,
                &[
                    "--sdk",
                    "v4",
                    "--symbols",
                    "AAPL",
                    "--channels",
                    "quotes",
                    "--count",
                    "150",
                ],
            ),
        ),
    ];
    let runs = futures_util::future::join_all(programs.map(|(name, cmd)| run(name, cmd)));
    let drop_upstream = async {
        wait_for("both programs receiving", || async {
            let status = app.get(&app.url("/api/v1/status?sessions=100")).await.1;
            (receiving(&status, "sdk:stocks") >= 2).then_some(())
        })
        .await;
        let before = app.feed_status("stocks").await["connects"].as_u64();
        app.sim("drop", json!({"feed": "stocks", "mode": "abort"}))
            .await;
        before
    };
    let (outputs, connects) = futures_util::future::join(runs, drop_upstream).await;
    for out in &outputs {
        assert_eq!(out.of("quote").len(), 150);
    }
    // The upstream did reconnect while they read on.
    assert!(app.feed_status("stocks").await["connects"].as_u64() > connects);
}
