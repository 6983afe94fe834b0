//! The dashboard in real headless Chromium (Debian's `chromium`, provided by
//! `tests/browser/setup.sh`), driven over the DevTools protocol: prices that move, news, the
//! account, the feed status through an upstream drop, a symbol added through the box, the
//! option chain. Screenshots in both themes are saved under `target/screenshots/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_codec::Framed;
use awc::ws::{Codec, Frame, Message};
use awc::BoxedSocket;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::helpers::{provide, spawn_app_with, TestApp, OPS_TOKEN};

/// The chromium binary, provided on first use.
fn chromium() -> PathBuf {
    provide("browser", "chromium").join("bin/chromium")
}

/// A headless Chromium with its DevTools endpoint; killed when dropped.
struct Browser {
    child: Child,
    devtools: String,
    profile: PathBuf,
}

impl Browser {
    fn start() -> Browser {
        // A profile of its own: tests run at once in this process.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("tickrelay-chromium-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1440,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let devtools = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium's DevTools endpoint");
        Browser {
            child,
            devtools,
            profile,
        }
    }

    /// The HTTP base of the DevTools endpoint (`http://127.0.0.1:PORT`).
    fn http_base(&self) -> String {
        let rest = self.devtools.strip_prefix("ws://").unwrap();
        format!("http://{}", rest.split('/').next().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A page, driven over the DevTools protocol.
struct Page {
    framed: Framed<BoxedSocket, Codec>,
    next_id: u64,
}

impl Page {
    async fn open(browser: &Browser, url: &str) -> Page {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(20))
            .finish();
        let target: Value = client
            .put(format!("{}/json/new?{url}", browser.http_base()))
            .send()
            .await
            .expect("a new tab")
            .json()
            .await
            .unwrap();
        let ws = target["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let (_, framed) = awc::Client::new()
            .ws(ws)
            .max_frame_size(64 << 20)
            .connect()
            .await
            .expect("DevTools WebSocket");
        let mut page = Page { framed, next_id: 1 };
        page.call("Runtime.enable", json!({})).await;
        page
    }

    /// Sends a command and returns its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.framed
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = actix_web::rt::time::timeout(Duration::from_secs(20), self.framed.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("DevTools connection open")
                .expect("DevTools frame");
            let data = match frame {
                Frame::Text(b) | Frame::Binary(b) => b.to_vec(),
                Frame::Continuation(item) => {
                    use actix_http::ws::Item;
                    match item {
                        Item::FirstText(b) | Item::FirstBinary(b) | Item::Continue(b) => {
                            buf.extend_from_slice(&b);
                            continue;
                        }
                        Item::Last(b) => {
                            buf.extend_from_slice(&b);
                            std::mem::take(&mut buf)
                        }
                    }
                }
                _ => continue,
            };
            let v: Value = serde_json::from_slice(&data).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression (awaiting a promise): its value, or the exception.
    async fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        match r.get("exceptionDetails") {
            Some(e) => Err(e.clone()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Polls `expression` until it is truthy (an exception, as while the page loads, is not);
    /// answers its value.
    async fn wait(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.try_eval(expression).await.unwrap_or(Value::Null);
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            if Instant::now() >= deadline {
                // What the page says about itself, for whoever reads the failure.
                let shown = self
                    .try_eval(
                        "['conn', 'who', 'messages', 'acct-empty'].map((id) => \
                         id + ': ' + (document.getElementById(id) || {}).textContent).join(' | ')",
                    )
                    .await;
                panic!("timed out waiting for {what}; the page shows {shown:?}");
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// The mid of a watchlist row, as shown.
fn mid_of(symbol: &str) -> String {
    format!(
        "(() => {{ const r = document.querySelector('#watchlist tr[data-symbol=\"{symbol}\"]'); \
         return r && r.cells[3].textContent !== '–' ? r.cells[3].textContent : null; }})()"
    )
}

#[actix_web::test]
async fn the_dashboard_in_headless_chromium() {
    let app: TestApp = spawn_app_with(|s| {
        s.simulator.tick_ms = 50;
        // A second (simulated) account the viewer may see: the panel offers a choice.
        let main = s.accounts["main"].clone();
        s.accounts.insert("swing".into(), main);
        s.trading.start_stagger_ms = 0;
        s.auth.anonymous_scopes.push("account:swing".into());
    })
    .await;
    let browser = Browser::start();
    let mut page = Page::open(&browser, &app.url("/")).await;
    page.call("Page.enable", json!({})).await;

    // The SIMULATED badge, and a row with a moving price for every default symbol.
    assert_eq!(
        page.wait("the badge", "!document.getElementById('badge-sim').hidden")
            .await,
        true
    );
    for symbol in ["AAPL", "MSFT", "SPY", "BTC/USD", "ETH/USD"] {
        page.wait(&format!("a price for {symbol}"), &mid_of(symbol))
            .await;
    }
    let first = page.eval(&mid_of("AAPL")).await;
    page.wait(
        "AAPL's price to change",
        &format!("{} !== {first}", mid_of("AAPL")),
    )
    .await;
    // Change since the first price and a sparkline once a few points are in.
    page.wait(
        "a sparkline",
        "document.querySelector('#watchlist tr[data-symbol=\"AAPL\"] td.spark polyline')",
    )
    .await;
    let chg = page
        .eval("document.querySelector('#watchlist tr[data-symbol=\"AAPL\"] td.chg').textContent")
        .await;
    assert!(chg.as_str().unwrap().ends_with('%'), "{chg}");

    // The option chain shows the default contract.
    page.wait(
        "the option chain",
        "(() => { const r = document.querySelector('#chain tr[data-call=\"SPY261218C00600000\"]'); \
         return r && r.cells[0].textContent !== '–'; })()",
    )
    .await;

    // A news item.
    app.sim(
        "inject",
        json!({"news": [{"headline": "Dashboards read news too", "symbols": ["AAPL"]}]}),
    )
    .await;
    let headline = page
        .wait(
            "the news item",
            "(() => { const a = document.querySelector('#news li'); return a && a.firstChild.textContent; })()",
        )
        .await;
    assert_eq!(headline, "Dashboards read news too");

    // The account panel, then a fill: a position and a recent fill appear.
    page.wait(
        "the account panel",
        "!document.getElementById('acct-body').hidden && document.getElementById('acct-equity').textContent.startsWith('$')",
    )
    .await;
    app.sim(
        "order",
        json!({"symbol": "AAPL", "qty": 7, "side": "buy", "price": 190.5}),
    )
    .await;
    page.wait(
        "the position",
        "document.querySelector('#positions tr[data-symbol=\"AAPL\"]')",
    )
    .await;
    let fill = page
        .wait(
            "the fill",
            "(() => { const r = document.querySelector('#fills tbody tr'); \
             return r && r.cells.length === 5 ? [...r.cells].map(c => c.textContent) : null; })()",
        )
        .await;
    assert_eq!(fill[1], "AAPL", "{fill}");
    assert_eq!(fill[3], "7", "{fill}");

    // Both accounts are offered; picking the other shows it.
    let options = page
        .wait(
            "the account picker",
            "(() => { const p = document.getElementById('acct-pick'); \
             return !p.hidden && [...p.options].map(o => o.value).join(','); })()",
        )
        .await;
    assert_eq!(options, "main,swing");
    page.eval(
        "const p = document.getElementById('acct-pick'); p.value = 'swing'; \
         p.dispatchEvent(new Event('change')); true",
    )
    .await;
    page.wait(
        "the swing account",
        "document.getElementById('acct-pick').value === 'swing' && \
         document.getElementById('acct-equity').textContent.startsWith('$')",
    )
    .await;

    // The stocks feed goes disconnected when the simulator drops it, then connected again.
    page.eval(
        "window.__states = []; new MutationObserver(() => { \
           const e = document.querySelector('.feed[data-feed=\"stocks\"]'); \
           if (e && window.__states[window.__states.length - 1] !== e.dataset.state) window.__states.push(e.dataset.state); \
         }).observe(document.getElementById('status'), {subtree: true, attributes: true, attributeFilter: ['data-state']}); true",
    )
    .await;
    app.sim("drop", json!({"feed": "stocks", "mode": "abort"}))
        .await;
    let states = page
        .wait(
            "disconnected, then connected",
            "(() => { const s = window.__states; const d = s.indexOf('disconnected'); \
             return d >= 0 && s.indexOf('connected', d) > d ? s : null; })()",
        )
        .await;
    assert!(states.as_array().unwrap().len() >= 2, "{states}");
    // AAPL's first update after the drop carries `gap`: the row is marked, and says why.
    let why = page
        .wait(
            "AAPL marked with a gap",
            "(() => { const r = document.querySelector('#watchlist tr[data-symbol=\"AAPL\"]'); \
             return r.classList.contains('gap') && r.cells[0].title; })()",
        )
        .await;
    assert!(why.as_str().unwrap().contains("may be missing"), "{why}");
    // A trading halt marks the row "halted".
    let halt = format!(
        r#"[{{"T":"s","S":"AAPL","sc":"H","sm":"Trading Halt","rc":"T12","rm":"Halted","t":"{}","z":"C"}}]"#,
        tickrelay::time::Timestamp::now().to_rfc3339()
    );
    app.sim("raw", json!({"feed": "stocks", "text": halt}))
        .await;
    page.wait(
        "AAPL marked halted",
        "document.querySelector('#watchlist tr[data-symbol=\"AAPL\"]').classList.contains('halted')",
    )
    .await;

    // A symbol added through the box streams.
    page.eval(
        "document.getElementById('add-symbol').value = 'amd'; \
         document.getElementById('add-form').requestSubmit(); true",
    )
    .await;
    page.wait("AMD's price", &mid_of("AMD")).await;

    // Both themes, saved for a look: each applied and painted (two animation frames) first.
    let apply = |theme: &str| {
        format!(
            "setTheme('{theme}'); new Promise(r => requestAnimationFrame(() => \
             requestAnimationFrame(() => r(getComputedStyle(document.body).backgroundColor))))"
        )
    };
    assert_eq!(page.eval(&apply("dark")).await, "rgb(15, 19, 24)");
    let dark = page.screenshot("dashboard-dark.png").await;
    assert_eq!(page.eval(&apply("light")).await, "rgb(244, 246, 248)");
    let light = page.screenshot("dashboard-light.png").await;
    assert!(std::fs::metadata(dark).unwrap().len() > 10_000);
    assert!(std::fs::metadata(light).unwrap().len() > 10_000);
}

#[actix_web::test]
async fn a_daemon_that_requires_credentials_shows_the_sign_in_box() {
    // Every caller must authenticate: the page can show nothing until someone signs in.
    let app = spawn_app_with(|s| s.auth.anonymous_scopes = Vec::new()).await;
    let browser = Browser::start();
    let mut page = Page::open(&browser, &app.url("/")).await;
    page.wait(
        "the sign-in box",
        "!document.getElementById('signin').hidden",
    )
    .await;
    assert_eq!(
        page.eval(&mid_of("AAPL")).await,
        Value::Null,
        "no price before sign-in"
    );
    page.eval(&format!(
        "document.getElementById('token').value = '{OPS_TOKEN}'; \
         document.getElementById('signin').requestSubmit(); true"
    ))
    .await;
    let who = page
        .wait("signed in", "document.getElementById('who').textContent")
        .await;
    assert_eq!(who, "signed in as ops");
    page.wait("a price after sign-in", &mid_of("AAPL")).await;
    page.wait(
        "the account after sign-in",
        "!document.getElementById('acct-body').hidden",
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('signin').hidden").await,
        true
    );
}

/// A replaying daemon's page says so: the REPLAY badge with the record's clock, and prices
/// from the record.
#[actix_web::test]
async fn a_replay_shows_its_badge_its_clock_and_the_recorded_prices() {
    let dir = crate::replay::record_dir("dashboard");
    let quote = |bp: f64| {
        format!(
            r#"[{{"T":"q","S":"AAPL","bp":{bp},"ap":{},"bs":1,"as":1,"t":"2027-01-15T15:00:00Z"}}]"#,
            bp + 1.0
        )
    };
    crate::replay::synthetic(&dir, &[Some(&quote(100.0)), Some(&quote(100.0))]);
    let app = spawn_app_with(|s| {
        crate::replay::replaying(&dir, s);
        s.replay.start = tickrelay::settings::ReplayStart::Now;
        s.replay.speed = tickrelay::settings::ReplaySpeed::Times(1.0);
        s.replay.repeat = true;
        s.auth.anonymous_scopes.clear();
        s.auth.anonymous_scopes.push("market".into());
        for account in s.accounts.values_mut() {
            account.enabled = false;
        }
    })
    .await;
    let browser = Browser::start();
    let mut page = Page::open(&browser, &app.url("/")).await;
    assert_eq!(
        page.wait(
            "the REPLAY badge",
            "!document.getElementById('badge-replay').hidden"
        )
        .await,
        true
    );
    assert_eq!(
        page.eval("document.getElementById('badge-sim').hidden")
            .await,
        true
    );
    let clock = page
        .wait(
            "the replay clock",
            "(() => { const t = document.getElementById('replay-clock').textContent; \
             return t.includes('playing') && !t.startsWith('–') ? t : null; })()",
        )
        .await;
    assert!(clock.as_str().unwrap().contains("×1"), "{clock}");
    assert_eq!(
        page.wait("the recorded price", &mid_of("AAPL")).await,
        "100.50"
    );
}
