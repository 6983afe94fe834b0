//! Scale-out through a real `redis-server`: edges (`provider = "redis"`) served by one primary,
//! and two primaries sharing the lease, against the real simulator.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tickrelay::settings::Provider;
use tickrelay::startup::Daemon;

use crate::helpers::{
    spawn_app_with, test_settings, tickrelay, wait_for, Process, TestApp, WsClient, OPS_TOKEN,
};
use crate::redis_sink::RedisServer;

/// Starts an edge named `instance` on `redis`, beside `primary` (whose simulator the helpers
/// reach); waits until its Redis links are up.
async fn spawn_edge(redis: &str, instance: &str, primary: &TestApp) -> TestApp {
    spawn_edge_with(instance, primary, |s| s.redis.url = redis.to_owned()).await
}

/// [`spawn_edge`] with the Redis settings `redis` makes.
async fn spawn_edge_with(
    instance: &str,
    primary: &TestApp,
    redis: impl FnOnce(&mut tickrelay::settings::Settings),
) -> TestApp {
    let mut s = test_settings();
    s.upstream.provider = Provider::Redis;
    redis(&mut s);
    s.redis.instance = instance.to_owned();
    // An edge cannot know whether the account it relays is simulated: no anonymous account.
    s.auth.anonymous_scopes = vec!["market".into()];
    crate::sdk::add_client(&mut s, "algo", crate::sdk::KEY, crate::sdk::SECRET, &[]);
    let problems = s.validate();
    assert!(problems.is_empty(), "edge settings invalid: {problems:?}");
    let daemon = Daemon::build(s).await.expect("edge starts");
    let edge = TestApp {
        addr: daemon.addr(),
        sim: primary.sim,
        handle: daemon.handle(),
        http: primary.http.clone(),
        anonymous: primary.anonymous.clone(),
    };
    actix_web::rt::spawn(daemon.run_until_stopped());
    edge.wait_ready().await;
    edge
}

/// The first `spot_price_update` of `symbol` (other frames skipped).
async fn price_of(client: &mut WsClient, symbol: &str) -> Value {
    loop {
        let m = client.expect_type("spot_price_update").await;
        if m["update"]["symbol"] == symbol {
            return m;
        }
    }
}

/// The simulator's most connections at once per feed, and how many are open per feed now.
async fn connections(app: &TestApp) -> (Value, Vec<String>) {
    let (_, report) = app.get(&app.sim_url("/control/connections")).await;
    let feeds = report["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["feed"].as_str().unwrap().to_owned())
        .collect();
    (report["most_at_once"].clone(), feeds)
}

fn assert_one_per_feed(most: &Value) {
    for (feed, n) in most.as_object().expect("most_at_once") {
        assert_eq!(n, 1, "{feed} had {n} connections at once: {most}");
    }
}

#[actix_web::test]
async fn edges_serve_every_message_type_over_the_primarys_one_connection() {
    let redis = RedisServer::start();
    let url = redis.url();
    let primary = spawn_app_with(|s| s.redis.url = url).await;
    let edge1 = spawn_edge(&redis.url(), "edge-1", &primary).await;
    let edge2 = spawn_edge(&redis.url(), "edge-2", &primary).await;

    // The same symbol on both edges; more only on one of them: an option (msgpack upstream), a
    // crypto pair with trades.
    let option = "SPY261218C00600000";
    let mut a = edge1.ws().await;
    a.subscribe(&["AAPL", option]).await;
    let mut b = edge2.ws().await;
    b.send(
        json!({"action":"subscribe","symbols":["AAPL","BTC/USD"],"channels":["quotes","trades"]}),
    )
    .await;
    b.expect_type("subscribed").await;
    let pa = price_of(&mut a, "AAPL").await;
    let pb = price_of(&mut b, "AAPL").await;
    for p in [&pa, &pb] {
        assert!(p["update"]["bid_price"].as_f64().unwrap() > 0.0, "{p}");
    }
    price_of(&mut b, "BTC/USD").await;
    let trade = b.expect_type("trade").await;
    assert!(trade["trade"]["price"].as_f64().unwrap() > 0.0, "{trade}");
    let quote = a.expect_type("option_price_update").await;
    assert_eq!(quote["update"]["symbol"], option, "{quote}");

    // An SDK program on an edge gets Alpaca's messages, field for field.
    let mut sdk = crate::sdk::authed(&edge2, "/v2/iex", false).await;
    sdk.send(json!({"action": "subscribe", "quotes": ["MSFT"]}))
        .await;
    assert_eq!(sdk.control().await["T"], "subscription");
    let q = sdk.expect(|m| m["T"] == "q" && m["S"] == "MSFT").await;
    assert!(q["bp"].as_f64().unwrap() > 0.0 && q["t"].is_string(), "{q}");

    // News and account events travel too (the account only to a client allowed it).
    a.send(json!({"action":"subscribe","channels":["news"],"symbols":["*"]}))
        .await;
    a.expect_type("subscribed").await;
    b.send(json!({"action":"auth","token":OPS_TOKEN})).await;
    b.expect_type("authenticated").await;
    b.send(json!({"action":"subscribe","channels":["positions"]}))
        .await;
    b.expect_type("subscribed").await;
    let mut anonymous = edge2.ws().await;
    anonymous
        .send(json!({"action":"subscribe","channels":["positions"]}))
        .await;
    let refused = anonymous.expect_type("error").await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    wait_for("the edges' interest at the primary", || async {
        let relay = primary.status().await["relay"].clone();
        (relay["registrations"].as_u64() >= Some(8)).then_some(())
    })
    .await;
    wait_for("news subscribed upstream", || async {
        (primary.upstream_symbols_of(Some("news"), "news").await == ["*"]).then_some(())
    })
    .await;
    primary
        .sim(
            "inject",
            json!({"news":[{"headline":"Edges hear it too","symbols":["AAPL"]}]}),
        )
        .await;
    assert_eq!(
        a.expect_type("news").await["news"]["headline"],
        "Edges hear it too"
    );
    primary
        .sim(
            "order",
            json!({"symbol":"AAPL","qty":5,"side":"buy","price":190.0}),
        )
        .await;
    let order = b.expect_type("order_update").await;
    assert_eq!(order["account"], "main", "{order}");
    let position = b.expect_type("position_update").await;
    assert_eq!(position["position"]["symbol"], "AAPL", "{position}");

    // Only the primary holds upstream connections: one per feed, ever.
    let (most, open) = connections(&primary).await;
    assert_one_per_feed(&most);
    let mut feeds = open.clone();
    feeds.dedup();
    assert_eq!(open.len(), feeds.len(), "one connection per feed: {open:?}");

    // The edges report the Redis link as their feeds.
    let status = edge1.status().await;
    let stocks = &status["feeds"]["stocks"];
    assert_eq!(
        (stocks["provider"].clone(), stocks["state"].clone()),
        (json!("redis"), json!("connected")),
        "{stocks}"
    );
    assert!(
        !stocks.to_string().contains("password"),
        "no credential in the status"
    );
    let mut fresh = edge1.ws().await;
    let status = fresh.expect_type("alpaca_status").await;
    assert_eq!(status["details"]["provider"], "redis", "{status}");
}

#[actix_web::test]
async fn an_edge_takes_its_first_price_from_the_cache() {
    let redis = RedisServer::start();
    let url = redis.url();
    // Nothing moves unless injected: the edge's first price can only come from price:AAPL.
    let primary = spawn_app_with(|s| {
        s.redis.url = url;
        s.simulator.generate = false;
    })
    .await;
    let mut local = primary.ws().await;
    local.subscribe(&["AAPL"]).await;
    primary.wait_upstream(&["AAPL"]).await;
    primary.inject_quotes(&[("AAPL", 101.25, 101.5)]).await;
    price_of(&mut local, "AAPL").await;
    redis.cached_price("AAPL").await;

    let edge = spawn_edge(&redis.url(), "edge-cache", &primary).await;
    let mut browser = edge.ws().await;
    browser.subscribe(&["AAPL"]).await;
    let first = price_of(&mut browser, "AAPL").await;
    assert_eq!(first["update"]["bid_price"], 101.25, "{first}");
    assert_eq!(first["update"]["ask_price"], 101.5, "{first}");
}

/// An edge trusts only what fits the channel it read it from: a quote published on a trades
/// channel, another symbol's quote, and an order event naming another account are refused and
/// counted, never delivered; a news item with a `javascript:` link arrives without the link.
#[actix_web::test]
async fn an_edge_refuses_what_does_not_belong_on_a_channel() {
    let redis = RedisServer::start();
    let url = redis.url();
    let primary = spawn_app_with(|s| {
        s.redis.url = url;
        s.simulator.generate = false;
    })
    .await;
    let edge = spawn_edge(&redis.url(), "edge-checks", &primary).await;
    let mut browser = edge.ws().await;
    browser
        .send(json!({"action":"auth","token":OPS_TOKEN}))
        .await;
    browser.expect_type("authenticated").await;
    for subscribe in [
        json!({"action":"subscribe","symbols":["AAPL"],"channels":["quotes","trades"]}),
        json!({"action":"subscribe","channels":["positions"]}),
        json!({"action":"subscribe","channels":["news"],"symbols":["*"]}),
    ] {
        browser.send(subscribe).await;
        browser.expect_type("subscribed").await;
    }
    // The edge hears the primary: its links are subscribed.
    wait_for("news subscribed upstream", || async {
        (primary.upstream_symbols_of(Some("news"), "news").await == ["*"]).then_some(())
    })
    .await;
    primary.wait_upstream(&["AAPL"]).await;
    primary.inject_quotes(&[("AAPL", 101.25, 101.5)]).await;
    price_of(&mut browser, "AAPL").await;

    let quote = |symbol: &str| {
        format!(
            r#"[{{"T":"q","S":"{symbol}","bp":999.0,"bs":1,"ap":999.5,"as":1,"t":"2026-12-07T14:30:00Z"}}]"#
        )
    };
    let forged_fill = r#"O AAPL
{"type":"order_update","account":"swing","event":"fill","order":{"symbol":"AAPL"},"price":"1","qty":"1"}"#;
    let news = r#"[{"T":"n","id":7,"headline":"Click me","summary":"","author":"","created_at":"2026-12-07T14:30:00Z","updated_at":"2026-12-07T14:30:00Z","url":"javascript:alert(1)","content":"","symbols":["AAPL"],"source":"forged"}]"#;
    let mut writer = redis.client().await;
    for (channel, message) in [
        ("tickrelay.stocks.trades.AAPL", quote("AAPL")),
        ("tickrelay.stocks.quotes.AAPL", quote("TSLA")),
        ("tickrelay.account.main", forged_fill.to_owned()),
        ("tickrelay.news", news.to_owned()),
    ] {
        let heard: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut writer)
            .await
            .unwrap();
        assert!(heard >= 1, "the edge listens on {channel}");
    }
    wait_for("the refusals counted", || async {
        let feeds = edge.status().await["feeds"].clone();
        (feeds["stocks"]["refused"] == 2 && feeds["trading:main"]["refused"] == 1).then_some(())
    })
    .await;
    let article = browser.expect_type("news").await;
    assert_eq!(article["news"]["headline"], "Click me");
    assert!(article["news"]["url"].is_null(), "{article}");

    // What the primary relays still arrives, and nothing forged came before it.
    primary.inject_quotes(&[("AAPL", 102.0, 102.25)]).await;
    loop {
        let m = browser.next_json().await;
        assert_ne!(m["type"], "order_update", "{m}");
        assert_ne!(m["type"], "trade", "{m}");
        if m["type"] == "spot_price_update" {
            assert_eq!(m["update"]["symbol"], "AAPL", "{m}");
            assert_ne!(m["update"]["bid_price"], 999.0, "{m}");
            if m["update"]["bid_price"] == 102.0 {
                break;
            }
        }
    }
}

/// Redis over TLS (`rediss://`, a private CA) as ACL users whose password comes from the
/// environment, on a server whose default user is off: the primary's sink and relay and the edge
/// all sign in and serve; the edge's user, as docs/operations.md suggests it, cannot forge market data
/// or prices; the status never shows the password.
#[actix_web::test]
async fn primaries_and_edges_use_redis_over_tls_as_acl_users() {
    const PASSWORD: &str = "redis-acl-Pw-77k";
    let redis = RedisServer::start_tls_acl(PASSWORD);
    let tls_as = |user: &'static str| {
        let port = redis.port;
        move |s: &mut tickrelay::settings::Settings| {
            s.redis.url = format!("rediss://127.0.0.1:{port}");
            s.redis.ca_file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/ca.pem").into();
            s.redis.username = user.into();
            s.redis.password = Some(tickrelay::credentials::Secret::new(PASSWORD));
        }
    };
    let primary = spawn_app_with(|s| {
        tls_as("primary")(s);
        s.simulator.generate = false;
    })
    .await;
    let edge = spawn_edge_with("edge-tls", &primary, tls_as("edge")).await;
    let mut browser = edge.ws().await;
    browser.subscribe(&["AAPL"]).await;
    // A browser of the primary's own: its prices go to the cache.
    let mut local = primary.ws().await;
    local.subscribe(&["AAPL"]).await;
    primary.wait_upstream(&["AAPL"]).await;
    primary.inject_quotes(&[("AAPL", 103.5, 103.75)]).await;
    let price = price_of(&mut browser, "AAPL").await;
    assert_eq!(price["update"]["bid_price"], 103.5, "{price}");

    // The sink wrote the price over TLS too; the edge's user may neither write it nor publish
    // market data; a client without a user is refused.
    let connect = |user: &'static str| async move {
        let mut settings = test_settings();
        tls_as(user)(&mut settings);
        tickrelay::scaleout::target::RedisTarget::from_settings(&settings.redis)
            .unwrap()
            .client()
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    };
    let conn = connect("primary").await;
    let cached: String = wait_for("price:AAPL", || {
        let mut conn = conn.clone();
        async move {
            redis::cmd("GET")
                .arg("price:AAPL")
                .query_async::<Option<String>>(&mut conn)
                .await
                .unwrap()
        }
    })
    .await;
    assert!(cached.contains("103.5"), "{cached}");
    let mut as_edge = connect("edge").await;
    let forged: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg("tickrelay.stocks.quotes.AAPL")
        .arg("[]")
        .query_async(&mut as_edge)
        .await;
    assert!(
        forged.is_err(),
        "an edge's user publishes market data: {forged:?}"
    );
    let written: redis::RedisResult<()> = redis::cmd("SET")
        .arg("price:AAPL")
        .arg("{}")
        .query_async(&mut as_edge)
        .await;
    assert!(written.is_err(), "an edge's user writes the cache");
    let mut settings = test_settings();
    tls_as("edge")(&mut settings);
    settings.redis.username.clear();
    settings.redis.password = None;
    let anonymous = tickrelay::scaleout::target::RedisTarget::from_settings(&settings.redis)
        .unwrap()
        .client()
        .unwrap();
    let refused = match anonymous.get_multiplexed_async_connection().await {
        Err(_) => true,
        Ok(mut c) => redis::cmd("GET")
            .arg("price:AAPL")
            .query_async::<Option<String>>(&mut c)
            .await
            .is_err(),
    };
    assert!(refused, "the default user is off");
    for app in [&primary, &edge] {
        let status = app.status().await.to_string();
        assert!(status.contains("127.0.0.1"), "{status}");
        assert!(!status.contains(PASSWORD), "{status}");
    }
}

/// The primary's upstream lost: an SDK program on an edge is closed with 1012 like one on the
/// primary, through the relay's marker on `tickrelay.<feed>.upstream`.
#[actix_web::test]
async fn an_edges_programs_hear_of_the_primarys_lost_upstream() {
    let redis = RedisServer::start();
    let url = redis.url();
    let primary = spawn_app_with(|s| s.redis.url = url).await;
    let edge = spawn_edge(&redis.url(), "edge-gap", &primary).await;
    let mut program = crate::sdk::authed(&edge, "/v2/iex", false).await;
    program
        .send(json!({"action": "subscribe", "quotes": ["AAPL"]}))
        .await;
    assert_eq!(program.control().await["T"], "subscription");
    program.expect(|m| m["T"] == "q" && m["S"] == "AAPL").await;
    primary
        .sim("drop", json!({"feed": "stocks", "mode": "abort"}))
        .await;
    assert_eq!(
        program.until_end().await,
        crate::helpers::Ended::Closed(Some(1012))
    );
}

#[actix_web::test]
async fn redis_restarts_primary_serves_throughout_and_edges_resume() {
    let redis = RedisServer::start();
    let port = redis.port;
    let url = redis.url();
    let primary = spawn_app_with(|s| s.redis.url = url).await;
    let edge = spawn_edge(&redis.url(), "edge-r", &primary).await;
    let mut local = primary.ws().await;
    local.subscribe(&["AAPL", "MSFT"]).await;
    let mut remote = edge.ws().await;
    remote.subscribe(&["MSFT"]).await;
    price_of(&mut remote, "MSFT").await;

    drop(redis);
    // The primary's own browsers never notice.
    for _ in 0..10 {
        local.expect_type("spot_price_update").await;
    }
    // The edge says its feed is down.
    loop {
        let m = remote.expect_type("alpaca_status").await;
        if m["status"] == "disconnected" {
            break;
        }
    }
    // Nothing grows while Redis is away: one pending price per symbol, a bounded relay queue.
    let status = primary.status().await;
    assert!(
        status["redis"]["pending"].as_u64().unwrap() <= 2,
        "{}",
        status["redis"]
    );
    assert!(status["relay"]["queued"].as_u64().unwrap() <= 65_536);

    let redis = RedisServer::start_on(port);
    loop {
        let m = remote.expect_type("alpaca_status").await;
        if m["status"] == "connected" {
            break;
        }
    }
    // Fresh prices again on the edge, and the primary's writes resumed.
    let before = Instant::now();
    price_of(&mut remote, "MSFT").await;
    assert!(before.elapsed() < Duration::from_secs(10));
    redis.cached_price("MSFT").await;
    let status = edge.status().await["feeds"]["stocks"].clone();
    assert!(
        status["reconnect_attempts"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

/// A primary process on the shared simulator, competing for the lease.
fn primary_process(instance: &str, redis: &str, sim: SocketAddr) -> (Process, String) {
    let mut cmd = tickrelay();
    cmd.env("TICKRELAY__HTTP__PORT", "0")
        .env("TICKRELAY__UPSTREAM__PROVIDER", "alpaca")
        .env("TICKRELAY__UPSTREAM__DATA_URL", format!("ws://{sim}"))
        .env("APCA_API_KEY_ID", "lease-test-key")
        .env("APCA_API_SECRET_KEY", "lease-test-secret")
        .env(
            "TICKRELAY__ACCOUNTS__MAIN__TRADING_URL",
            format!("http://{sim}"),
        )
        .env("TICKRELAY__AUTH__ANONYMOUS_SCOPES", "market")
        .env("TICKRELAY__REDIS__URL", redis)
        .env("TICKRELAY__REDIS__LEASE", "true")
        .env("TICKRELAY__REDIS__LEASE_TTL_MS", "2000")
        .env("TICKRELAY__REDIS__INSTANCE", instance)
        .env("TICKRELAY__UPSTREAM__BACKOFF__INITIAL_MS", "50")
        .env("TICKRELAY__UPSTREAM__BACKOFF__MAX_MS", "400");
    let process = Process::start(cmd);
    let addr = process.address_after("listening on http://");
    (process, addr)
}

async fn get(url: String) -> (u16, Value) {
    let mut res = awc::Client::new().get(url).send().await.expect("request");
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    (res.status().as_u16(), body)
}

#[actix_web::test]
async fn two_primaries_one_lease_one_connection_per_feed() {
    let redis = RedisServer::start();
    let mut sim_settings = test_settings().simulator;
    sim_settings.port = 0;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (server, sim) = tickrelay::simulator::start(&sim_settings, listener).unwrap();
    let sim_addr = sim.addr;
    actix_web::rt::spawn(server);

    let (p1, a1) = primary_process("p1", &redis.url(), sim_addr);
    let (p2, a2) = primary_process("p2", &redis.url(), sim_addr);
    let procs = [(p1, a1, "p1"), (p2, a2, "p2")];
    // One is ready (the leader); the other is not, and says why.
    let leader = wait_for("a leader", || async {
        for (i, (_, addr, _)) in procs.iter().enumerate() {
            let (code, body) = get(format!("http://{addr}/readyz")).await;
            if code == 200 && body["lease"] == "leader" {
                return Some(i);
            }
        }
        None
    })
    .await;
    let standby = 1 - leader;
    let (code, body) = get(format!("http://{}/readyz", procs[standby].1)).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["lease"], "standby", "{body}");
    assert!(body["reasons"].to_string().contains("standby"), "{body}");
    let (_, status) = get(format!("http://{}/api/v1/status", procs[standby].1)).await;
    assert_eq!(
        status["lease"]["holder"], procs[leader].2,
        "{}",
        status["lease"]
    );
    assert_eq!(status["feeds"]["trading:main"]["state"], "standby");

    // The leader dies without a word: the standby takes over once its lease expires.
    let killed = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &procs[leader].0.pid().to_string()])
        .status();
    let new_leader = procs[standby].1.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _) = get(format!("http://{new_leader}/readyz")).await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no takeover within 20 s");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed.elapsed();
    let (_, status) = get(format!("http://{new_leader}/api/v1/status")).await;
    let lease = &status["lease"];
    assert_eq!(lease["role"], "leader", "{lease}");
    assert_eq!(lease["holder"], procs[standby].2, "{lease}");
    assert_eq!(
        (lease["acquired"].clone(), lease["takeovers"].clone()),
        (json!(1), json!(1)),
        "{lease}"
    );
    assert!(lease["holder_age_ms"].as_u64().unwrap() < 20_000, "{lease}");
    // Never two connections to one feed at once, before, during or after the takeover.
    let (_, report) = get(format!("http://{sim_addr}/control/connections")).await;
    assert_one_per_feed(&report["most_at_once"]);
    assert!(
        report["most_at_once"]["stocks"] == 1,
        "the stocks feed connected: {report}"
    );
    assert!(took < Duration::from_secs(20));
}
