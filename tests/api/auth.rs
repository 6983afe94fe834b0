//! Clients and scopes: anonymous callers get `[auth] anonymous_scopes`, a bearer token or an
//! `auth` frame names a client and brings its scopes, and pins belong to whoever made them.

use serde_json::{json, Value};
use tickrelay::credentials::Secret;
use tickrelay::settings::{ClientSettings, Settings};

use crate::helpers::{spawn_app_with, wait_for, Ended, TestApp, OPS_TOKEN};
use crate::sdk::SdkClient;

/// Adds client `id` (key `<id>-key`, secret `<id>-secret`) with `scopes`.
fn client(s: &mut Settings, id: &str, scopes: &[&str]) {
    s.clients.insert(
        id.into(),
        ClientSettings {
            key_id: format!("{id}-key"),
            secret_env: None,
            scopes: Some(scopes.iter().map(|x| x.to_string()).collect()),
            secret: Some(Secret::new(format!("{id}-secret"))),
        },
    );
}

fn token(id: &str) -> String {
    format!("{id}-key:{id}-secret")
}

/// A daemon whose anonymous callers get only `market` (the default), with clients `viewer`
/// (`market`), `trader` (`market`, `account:main`) and `pinner`/`other` (`pin`).
async fn locked_app() -> TestApp {
    spawn_app_with(|s| {
        s.auth.anonymous_scopes = vec!["market".into()];
        client(s, "viewer", &["market"]);
        client(s, "trader", &["market", "account:main"]);
        client(s, "pinner", &["pin"]);
        client(s, "other", &["pin"]);
    })
    .await
}

/// A request with an optional `Authorization` header: (status, JSON body).
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = app.url(path);
    let mut req = match method {
        "POST" => app.anonymous.post(url),
        "DELETE" => app.anonymous.delete(url),
        _ => app.anonymous.get(url),
    };
    if let Some(a) = auth {
        req = req.insert_header(("Authorization", a.to_owned()));
    }
    let mut resp = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .expect("request");
    let bytes = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn bearer(id: &str) -> String {
    format!("Bearer {}", token(id))
}

#[actix_web::test]
async fn account_rest_needs_the_account_scope() {
    let app = locked_app().await;
    for path in [
        "/api/v1/accounts/main/dashboard",
        "/api/v1/accounts/main/positions",
        "/api/v1/realtime/account/main",
    ] {
        let (code, body) = call(&app, "GET", path, None, None).await;
        assert_eq!(
            (code, body["error"].clone()),
            (401, json!("unauthorized")),
            "{path}: {body}"
        );
        let (code, body) = call(&app, "GET", path, Some(&bearer("viewer")), None).await;
        assert_eq!(
            (code, body["error"].clone()),
            (403, json!("forbidden")),
            "{path}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("account:main"),
            "{body}"
        );
    }
    // A wrong secret is refused outright, never served as anonymous.
    let (code, body) = call(
        &app,
        "GET",
        "/api/v1/quotes?symbols=AAPL",
        Some("Bearer trader-key:wrong"),
        None,
    )
    .await;
    assert_eq!(code, 401, "{body}");
    let (code, _) = call(
        &app,
        "GET",
        "/api/v1/quotes?symbols=AAPL",
        Some("Basic x"),
        None,
    )
    .await;
    assert_eq!(code, 401);
    // The lists show only what the caller may see.
    let (_, list) = call(&app, "GET", "/api/v1/accounts", None, None).await;
    assert_eq!(list["count"], 0, "{list}");
    let (_, ws) = call(&app, "GET", "/api/v1/websocket/status", None, None).await;
    assert_eq!(ws["total_accounts"], 0, "{ws}");

    let trader = bearer("trader");
    let dash = wait_for("the account to load", || async {
        let (code, body) = call(
            &app,
            "GET",
            "/api/v1/accounts/main/dashboard",
            Some(&trader),
            None,
        )
        .await;
        (code == 200).then_some(body)
    })
    .await;
    assert!(dash["account"].is_object(), "{dash}");
    let (_, list) = call(&app, "GET", "/api/v1/accounts", Some(&trader), None).await;
    assert_eq!(list["accounts"][0]["id"], "main", "{list}");
}

#[actix_web::test]
async fn the_session_list_needs_admin() {
    let app = locked_app().await;
    let _browser = app.ws().await;
    let (code, anon) = call(&app, "GET", "/api/v1/status", None, None).await;
    assert_eq!(code, 200);
    assert_eq!(
        anon["sessions"]["count"], 1,
        "the summary is public: {anon}"
    );
    assert_eq!(anon["sessions"]["list"], json!([]));
    assert_eq!(anon["sessions"]["list_needs"], "admin");
    let ops = format!("Bearer {OPS_TOKEN}");
    let (_, admin) = call(&app, "GET", "/api/v1/status", Some(&ops), None).await;
    assert_eq!(
        admin["sessions"]["list"].as_array().unwrap().len(),
        1,
        "{admin}"
    );
    assert!(admin["sessions"]["list_needs"].is_null());
}

#[actix_web::test]
async fn without_market_scope_nothing_streams_until_the_client_signs_in() {
    let app = spawn_app_with(|s| {
        s.auth.anonymous_scopes = vec![];
        client(s, "viewer", &["market"]);
    })
    .await;
    let (code, _) = call(&app, "GET", "/api/v1/quotes/AAPL", None, None).await;
    assert_eq!(code, 401);
    let mut ws = app.ws().await;
    ws.send(json!({"action":"subscribe","symbols":["AAPL"]}))
        .await;
    let refused = ws.expect_type("error").await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("auth"),
        "{refused}"
    );

    ws.send(json!({"action":"auth","token": token("viewer")}))
        .await;
    let signed = ws.expect_type("authenticated").await;
    assert_eq!(signed["client"], "viewer");
    assert_eq!(signed["scopes"], json!(["market"]));
    ws.send(json!({"action":"subscribe","symbols":["AAPL"]}))
        .await;
    let ack = ws.expect_type("subscribed").await;
    assert_eq!(ack["symbols"], json!(["AAPL"]));
    let update = ws.expect_type("spot_price_update").await;
    assert_eq!(update["update"]["symbol"], "AAPL");
}

/// With no anonymous scopes, a browser that never signs in is closed with 1008 at
/// `session.auth_timeout_ms`; one that signed in in time is still served.
#[actix_web::test]
async fn a_browser_that_never_signs_in_is_closed_when_sign_in_is_required() {
    let app = spawn_app_with(|s| {
        s.auth.anonymous_scopes = vec![];
        s.session.auth_timeout_ms = 300;
        client(s, "viewer", &["market"]);
    })
    .await;
    let mut signed = app.ws().await;
    signed
        .send(json!({"action":"auth","token": token("viewer")}))
        .await;
    signed.expect_type("authenticated").await;
    let mut silent = app.ws().await;
    assert_eq!(silent.until_end().await, Ended::Closed(Some(1008)));
    signed.send(json!({"action":"ping","id":"still"})).await;
    assert_eq!(signed.expect_type("pong").await["id"], "still");
}

#[actix_web::test]
async fn positions_need_the_account_scope_and_bad_credentials_close_the_socket() {
    let app = locked_app().await;
    let mut anon = app.ws().await;
    anon.send(json!({"action":"subscribe","channels":["positions"]}))
        .await;
    let refused = anon.expect_type("error").await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");

    // A client without the account's scope signs in but still may not follow it.
    let mut viewer = app.ws().await;
    viewer
        .send(json!({"action":"auth","key":"viewer-key","secret":"viewer-secret"}))
        .await;
    viewer.expect_type("authenticated").await;
    viewer
        .send(json!({"action":"subscribe","channels":["positions"]}))
        .await;
    assert_eq!(viewer.expect_type("error").await["code"], "unauthorized");

    let mut trader = app.ws().await;
    trader
        .send(json!({"action":"auth","token": token("trader")}))
        .await;
    let signed = trader.expect_type("authenticated").await;
    assert_eq!(signed["scopes"], json!(["market", "account:main"]));
    trader
        .send(json!({"action":"subscribe","channels":["positions"]}))
        .await;
    assert_eq!(
        trader.expect_type("subscribed").await["channels"],
        json!(["positions"])
    );
    app.sim(
        "order",
        json!({"symbol": "AAPL", "qty": 1, "side": "buy", "price": 190.0}),
    )
    .await;
    let event = trader.expect_type("order_update").await;
    assert_eq!(event["account"], "main");

    // Three refused credentials close the connection with 1008.
    for _ in 0..3 {
        anon.send(json!({"action":"auth","token":"trader-key:guess"}))
            .await;
        let err = anon.expect_type("error").await;
        assert_eq!(err["code"], "unauthorized", "{err}");
    }
    assert_eq!(anon.until_end().await, Ended::Closed(Some(1008)));
}

/// Without `admin`, `/api/v1/status` shows feeds and counts but no symbols, pins, owners or
/// URLs, except the pins of an account the caller's scopes allow.
#[actix_web::test]
async fn the_status_shows_symbols_pins_and_owners_only_to_those_allowed() {
    let app = spawn_app_with(|s| {
        s.auth.anonymous_scopes = vec![];
        s.trading.auto_subscribe_positions_ms = 100;
        client(s, "pinner", &["pin"]);
        client(s, "trader", &["market", "account:main"]);
    })
    .await;
    let (code, _) = call(
        &app,
        "POST",
        "/api/v1/subscriptions",
        Some(&bearer("pinner")),
        Some(json!({"symbols":["AMD"]})),
    )
    .await;
    assert_eq!(code, 200);
    app.sim(
        "order",
        json!({"symbol": "NVDA", "qty": 5, "side": "buy", "price": 120.0}),
    )
    .await;
    let ops = format!("Bearer {OPS_TOKEN}");
    wait_for(
        "NVDA pinned by the account and AMD by the client",
        || async {
            let (_, s) = call(&app, "GET", "/api/v1/status", Some(&ops), None).await;
            let text = s["symbols"].to_string();
            (text.contains("account:main") && text.contains("client:pinner")).then_some(())
        },
    )
    .await;

    let (code, anon) = call(&app, "GET", "/api/v1/status", None, None).await;
    assert_eq!(code, 200);
    let text = anon.to_string();
    for secret in ["NVDA", "AMD", "pinner", "account:main", "ws://", "wss://"] {
        assert!(
            !text.contains(secret),
            "{secret} in the anonymous status: {anon}"
        );
    }
    assert_eq!(anon["details_need"], "admin");
    assert!(anon["symbols_count"].as_u64() >= Some(2), "{anon}");
    assert!(anon["feeds"]["stocks"]["state"].is_string(), "{anon}");

    let (_, trader) = call(&app, "GET", "/api/v1/status", Some(&bearer("trader")), None).await;
    assert_eq!(
        trader["symbols"],
        json!([{"symbol": "NVDA", "feed": "stocks", "pinned": true, "pinned_by": ["account:main"]}]),
        "{trader}"
    );
    assert_eq!(trader["pinned"], json!(["NVDA"]));
    assert!(!trader.to_string().contains("pinner"));
}

#[actix_web::test]
async fn pins_need_the_pin_scope_belong_to_their_owner_and_expire() {
    let app = locked_app().await;
    let pin = |who: Option<String>, body: Value| {
        let app = &app;
        async move {
            call(
                app,
                "POST",
                "/api/v1/subscriptions",
                who.as_deref(),
                Some(body),
            )
            .await
        }
    };
    let unpin = |who: Option<String>, body: Value| {
        let app = &app;
        async move {
            call(
                app,
                "DELETE",
                "/api/v1/subscriptions",
                who.as_deref(),
                Some(body),
            )
            .await
        }
    };
    let (code, _) = pin(None, json!({"symbols":["AAPL"]})).await;
    assert_eq!(code, 401, "anonymous callers have no pin scope");
    let (code, _) = pin(Some(bearer("viewer")), json!({"symbols":["AAPL"]})).await;
    assert_eq!(code, 403);

    let (code, body) = pin(Some(bearer("pinner")), json!({"symbols":["MSFT"]})).await;
    assert_eq!(
        (code, body["owner"].clone()),
        (200, json!("pinner")),
        "{body}"
    );
    // Another client cannot release it; it is told who may.
    let (code, body) = unpin(Some(bearer("other")), json!({"symbols":["MSFT"]})).await;
    assert_eq!(code, 200);
    assert_eq!(body["symbols"], json!([]));
    assert_eq!(body["held_by_others"], json!(["MSFT"]), "{body}");
    let (code, _) = unpin(
        Some(bearer("other")),
        json!({"symbols":["MSFT"], "owner":"pinner"}),
    )
    .await;
    assert_eq!(code, 403, "naming another owner needs admin");
    let pinned_by = |status: Value| -> Vec<Value> {
        status["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["symbol"] == "MSFT")
            .flat_map(|s| s["pinned_by"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    assert_eq!(pinned_by(app.status().await), [json!("client:pinner")]);
    // An admin releases anyone's pins.
    let (code, body) = unpin(
        Some(format!("Bearer {OPS_TOKEN}")),
        json!({"symbols":["MSFT"], "owner":"*"}),
    )
    .await;
    assert_eq!(
        (code, body["symbols"].clone()),
        (200, json!(["MSFT"])),
        "{body}"
    );
    assert!(pinned_by(app.status().await).is_empty());

    // A pin with a time-to-live releases itself.
    let (code, body) = pin(
        Some(bearer("pinner")),
        json!({"symbols":["TSLA"], "ttl_ms": 300}),
    )
    .await;
    assert_eq!((code, body["ttl_ms"].clone()), (200, json!(300)), "{body}");
    wait_for("the TSLA pin to expire", || async {
        let status = app.status().await;
        let pinned = status["pinned"]
            .as_array()
            .unwrap()
            .contains(&json!("TSLA"));
        (!pinned).then_some(())
    })
    .await;
    let (code, body) = pin(
        Some(bearer("pinner")),
        json!({"symbols":["TSLA"], "ttl_ms": 0}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
}

#[actix_web::test]
async fn an_sdk_client_without_market_scope_gets_409() {
    let app = spawn_app_with(|s| {
        s.auth.anonymous_scopes = vec![];
        client(s, "books", &["account:main"]);
    })
    .await;
    let mut sdk = SdkClient::connect(&app, "/v2/iex", false).await;
    let (_, welcome) = sdk.next_frame().await;
    assert_eq!(welcome[0]["T"], "success");
    sdk.auth("books-key", "books-secret").await;
    let (_, reply) = sdk.next_frame().await;
    assert_eq!(
        (reply[0]["T"].clone(), reply[0]["code"].clone()),
        (json!("error"), json!(409))
    );
}

/// Every request a secret could leak through, against the real binary at debug level (trace
/// for tickrelay's own modules): no log line and no status body holds a secret, whether sent
/// right or in the wrong place.
#[actix_web::test]
async fn no_secret_reaches_a_log_line_or_a_status_body() {
    use crate::helpers::{tickrelay, Process, WsClient};

    const CLIENT_SECRET: &str = "cl1ent-s3cret-Zq8w";
    const ALPACA_KEY: &str = "PKSECRETKEYID42";
    const ALPACA_SECRET: &str = "alpaca-s3cret-Vb7n";
    let mut cmd = tickrelay();
    cmd.env("TICKRELAY__HTTP__PORT", "0")
        .env("RUST_LOG", "debug,tickrelay=trace")
        .env("APCA_API_KEY_ID", ALPACA_KEY)
        .env("APCA_API_SECRET_KEY", ALPACA_SECRET)
        .env("TICKRELAY__CLIENTS__OPS__KEY_ID", "ops-key")
        .env(
            "TICKRELAY__CLIENTS__OPS__SCOPES",
            "market,admin,pin,account:main",
        )
        .env("TICKRELAY_CLIENT_SECRET_OPS", CLIENT_SECRET);
    let mut daemon = Process::start(cmd);
    let addr = daemon.address_after("listening on http://");
    let http = awc::Client::new();
    let get = |path: &str, auth: Option<String>| {
        let mut req = http.get(format!("http://{addr}{path}"));
        if let Some(a) = auth {
            req = req.insert_header(("Authorization", a));
        }
        async move {
            let mut resp = req.send().await.expect("GET");
            let body = resp.body().await.expect("body");
            (
                resp.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
    };
    wait_for("readiness", || async {
        (get("/readyz", None).await.0 == 200).then_some(())
    })
    .await;
    let good = format!("Bearer ops-key:{CLIENT_SECRET}");
    let mut bodies = Vec::new();
    for (path, auth) in [
        ("/api/v1/status", Some(good.clone())),
        ("/api/v1/health", None),
        ("/readyz", None),
        ("/api/v1/accounts/main/account", Some(good.clone())),
        // Secrets in the wrong places.
        ("/api/v1/status", Some(format!("Bearer {CLIENT_SECRET}"))),
        (
            "/api/v1/status",
            Some(format!("Bearer {ALPACA_KEY}:{ALPACA_SECRET}")),
        ),
        ("/api/v1/status", Some(format!("Basic {CLIENT_SECRET}"))),
    ] {
        let (code, body) = get(path, auth).await;
        bodies.push(format!("{path} {code} {body}"));
    }
    assert!(bodies[0].starts_with("/api/v1/status 200"), "{}", bodies[0]);
    assert!(bodies[4].contains(" 401 "), "{}", bodies[4]);

    let (_, framed) = http.ws(format!("ws://{addr}/ws")).connect().await.unwrap();
    let mut browser = WsClient::from_framed(framed);
    browser.expect_type("welcome").await;
    browser
        .send(json!({"action":"auth","token": CLIENT_SECRET}))
        .await;
    browser.expect_type("error").await;
    browser
        .send(json!({"action":"auth","token": format!("ops-key:{CLIENT_SECRET}")}))
        .await;
    browser.expect_type("authenticated").await;
    let (_, framed) = http
        .ws(format!("ws://{addr}/v2/iex"))
        .connect()
        .await
        .unwrap();
    let mut sdk = WsClient::from_framed(framed);
    sdk.send(json!({"action":"auth","key": CLIENT_SECRET,"secret": ALPACA_SECRET}))
        .await;
    sdk.expect(|m| m[0]["code"] == 402).await;

    let pid = daemon.pid().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    daemon.wait_exit(std::time::Duration::from_secs(10));
    let logs: Vec<String> = daemon.logs.iter().collect();
    assert!(
        logs.iter().any(|l| l.contains("signed in as client ops")),
        "the sign-in is logged, by client id"
    );
    for secret in [CLIENT_SECRET, ALPACA_KEY, ALPACA_SECRET] {
        for line in logs.iter().chain(&bodies) {
            assert!(!line.contains(secret), "a secret leaked: {line}");
        }
    }
}

/// `GET` `path` with `Authorization: <auth>`: (status, `Retry-After`).
async fn get_with(app: &TestApp, path: &str, auth: &str) -> (u16, Option<u64>) {
    let resp = app
        .anonymous
        .get(app.url(path))
        .insert_header(("Authorization", auth.to_owned()))
        .send()
        .await
        .expect("request");
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (resp.status().as_u16(), retry)
}

/// Guessing costs time on every path: past `auth.failures_before_delay` refused credentials from
/// one address — whichever paths they came by — REST, browsers, SDK streams and `/stream` all
/// refuse even the right credential, unchecked, until the delay is over (REST says how long in
/// `Retry-After`); then the right one signs in again.
#[actix_web::test]
async fn refused_credentials_delay_their_address_on_every_path() {
    let app = spawn_app_with(|s| {
        client(s, "trader", &["market", "account:main"]);
        s.auth.failures_before_delay = 2;
        s.auth.first_failure_delay_ms = 4_000;
    })
    .await;
    // Two refusals on two paths cost nothing; the third, on a third path, starts the delay.
    let status = "/api/v1/status";
    assert_eq!(
        get_with(&app, status, "Bearer trader-key:guess").await.0,
        401
    );
    let mut browser = app.ws().await;
    browser
        .send(json!({"action":"auth","token":"trader-key:guess"}))
        .await;
    assert_eq!(browser.expect_type("error").await["code"], "unauthorized");
    let mut sdk = SdkClient::connect(&app, "/v2/iex", false).await;
    assert_eq!(sdk.control().await["msg"], "connected");
    sdk.auth("trader-key", "guess").await;
    assert_eq!(sdk.control().await["code"], 402);

    let (code, retry) = get_with(&app, status, &bearer("trader")).await;
    assert_eq!(code, 429, "the right credential waits out the delay");
    let retry = retry.expect("Retry-After");
    assert!((1..=4).contains(&retry), "Retry-After: {retry}");
    browser
        .send(json!({"action":"auth","token": token("trader")}))
        .await;
    let delayed = browser.expect_type("error").await;
    assert_eq!(delayed["code"], "rate_limited", "{delayed}");
    let mut fresh = SdkClient::connect(&app, "/v2/iex", false).await;
    assert_eq!(fresh.control().await["msg"], "connected");
    fresh.auth("trader-key", "trader-secret").await;
    assert_eq!(fresh.control().await["code"], 429);
    let mut trading = SdkClient::connect(&app, "/stream", false).await;
    trading
        .send(json!({"action": "authenticate", "data": {"key_id": "trader-key", "secret_key": "trader-secret"}}))
        .await;
    let answer = trading.expect(|m| m["stream"] == "authorization").await;
    assert_eq!(answer["data"]["status"], "unauthorized", "{answer}");

    // Attempts during the delay do not make it longer: it ends, and the right pair signs in.
    wait_for("the delay to end", || async {
        (get_with(&app, status, &bearer("trader")).await.0 == 200).then_some(())
    })
    .await;
    let mut later = SdkClient::connect(&app, "/v2/iex", false).await;
    assert_eq!(later.control().await["msg"], "connected");
    later.auth("trader-key", "trader-secret").await;
    assert_eq!(later.control().await["msg"], "authenticated");
}

/// Pipelining does not multiply guesses: of 1000 guesses sent at once on one connection, only
/// the free ones and the one that starts the delay are checked (401); the rest are refused
/// unchecked (429), and every refusal asks the client to close the connection.
#[actix_web::test]
async fn pipelined_guesses_are_refused_unchecked_past_the_free_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|s| {
        client(s, "viewer", &["market"]);
        s.auth.first_failure_delay_ms = 60_000;
    })
    .await;
    let request = format!(
        "GET /api/v1/status HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer viewer-key:guess\r\n\r\n",
        app.addr
    );
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(request.repeat(1000).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the daemon closes the connection")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let count = |needle: &str| answer.matches(needle).count();
    let free = tickrelay::auth::failures::FailureLimits::default().free as usize;
    assert_eq!(count("http/1.1 401"), free + 1);
    assert_eq!(count("http/1.1 429"), 1000 - free - 1);
    assert_eq!(count("connection: close"), 1000);
}

/// Refusals are logged once per address per interval with a count, not once each: 300 guesses
/// (the real binary, at info level) make four lines — the first refusal of the address and of
/// the client whose key id was guessed at, and a count of the rest of each, written at the stop.
#[actix_web::test]
async fn guesses_are_logged_once_per_address_with_a_count() {
    use crate::helpers::{tickrelay, Process};

    let mut cmd = tickrelay();
    cmd.env("TICKRELAY__HTTP__PORT", "0")
        .env("RUST_LOG", "info")
        .env("TICKRELAY__AUTH__FIRST_FAILURE_DELAY_MS", "60000")
        .env("TICKRELAY__CLIENTS__OPS__KEY_ID", "ops-key")
        .env("TICKRELAY_CLIENT_SECRET_OPS", "ops-secret-123456");
    let mut daemon = Process::start(cmd);
    let addr = daemon.address_after("listening on http://");
    let http = awc::Client::new();
    let get = |auth: &'static str| {
        let req = http
            .get(format!("http://{addr}/api/v1/status"))
            .insert_header(("Authorization", auth));
        async move { req.send().await.expect("GET").status().as_u16() }
    };
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..300 {
        *codes.entry(get("Bearer ops-key:guess").await).or_insert(0) += 1;
    }
    assert_eq!(codes.get(&401), Some(&6), "{codes:?}");
    assert_eq!(codes.get(&429), Some(&294), "{codes:?}");

    let pid = daemon.pid().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(daemon
        .wait_exit(std::time::Duration::from_secs(10))
        .success());
    let refusals: Vec<String> = daemon
        .logs
        .iter()
        .filter(|l| l.contains("auth refused"))
        .collect();
    assert_eq!(refusals.len(), 4, "{refusals:#?}");
    let count = |needle: &str| refusals.iter().any(|l| l.contains(needle));
    assert!(
        count("127.0.0.1: 299 more refused credentials since the last line (294 refused unchecked while delayed)"),
        "{refusals:#?}"
    );
    assert!(
        count("client ops: 5 more refused credentials"),
        "{refusals:#?}"
    );
}
