//! Every Alpaca feed end to end: routing by symbol shape, crypto, options over msgpack, news.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, wait_for, WsClient};

const OPTION: &str = "SPY261218C00600000";

async fn update_for(client: &mut WsClient, kind: &str, symbol: &str) -> Value {
    client
        .expect(|m| m["type"] == kind && m["update"]["symbol"] == symbol)
        .await
}

#[actix_web::test]
async fn symbols_are_routed_to_the_feed_their_shape_picks() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    let ack = client.subscribe(&["aapl", "btc/usd", OPTION]).await;
    assert_eq!(ack["symbols"], json!(["AAPL", "BTC/USD", OPTION]));
    wait_for("each feed to hold its symbol", || async {
        let stocks = app.upstream_symbols_of(Some("stocks"), "quotes").await;
        let crypto = app.upstream_symbols_of(Some("crypto"), "quotes").await;
        let options = app.upstream_symbols_of(Some("options"), "quotes").await;
        (stocks == ["AAPL"] && crypto == ["BTC/USD"] && options == [OPTION]).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn crypto_prices_keep_float_sizes_and_books_start_with_a_snapshot() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    client.subscribe(&["BTC/USD"]).await;
    let m = update_for(&mut client, "spot_price_update", "BTC/USD").await;
    let u = &m["update"];
    assert!(
        u["bid_size"].is_f64() && u["ask_size"].is_f64(),
        "crypto sizes are floats: {u}"
    );
    assert!(u["ask_price"].as_f64() > u["bid_price"].as_f64());

    client
        .send(json!({"action":"subscribe","symbols":["ETH/USD"],"channels":["orderbooks"]}))
        .await;
    let book = client.expect_type("orderbook").await;
    let b = &book["orderbook"];
    assert_eq!(b["symbol"], "ETH/USD");
    let (bids, asks) = (b["bids"].as_array().unwrap(), b["asks"].as_array().unwrap());
    // The reset snapshot holds five levels a side (an update carries one level a side). Updates
    // that arrived before the throttle's first emission are applied with it: a bid level may
    // already be gone (the simulator's updates can empty one; its asks keep their levels).
    assert_eq!(
        asks.len(),
        5,
        "the book starts from the reset snapshot: {b}"
    );
    assert!(
        (2..=5).contains(&bids.len()),
        "the book starts from the reset snapshot: {b}"
    );
    assert!(
        bids[0]["p"].as_f64() < asks[0]["p"].as_f64(),
        "best bid below best ask: {b}"
    );
    assert!(
        bids.windows(2)
            .all(|w| w[0]["p"].as_f64() > w[1]["p"].as_f64()),
        "bids best first"
    );
    assert_eq!(
        app.upstream_symbols_of(Some("crypto"), "orderbooks").await,
        ["ETH/USD"]
    );
}

#[actix_web::test]
async fn options_stream_over_msgpack_with_exact_timestamps() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    client.subscribe(&[OPTION]).await;
    let m = update_for(&mut client, "option_price_update", OPTION).await;
    let u = &m["update"];
    assert!(u["volume"].is_u64(), "option updates carry volume: {u}");
    // The simulator sent this quote as msgpack with a timestamp extension; the update carries
    // the same instant to the nanosecond.
    let (_, history) = app
        .get(&app.sim_url(&format!("/control/history?symbol={OPTION}")))
        .await;
    let sent = history.as_array().unwrap().iter().any(|q| {
        q["t"] == u["timestamp"] && q["bp"] == u["bid_price"] && q["ap"] == u["ask_price"]
    });
    assert!(sent, "update {u} matches no quote the simulator sent");
    let conns = app.sim_connections().await;
    let options = conns.iter().find(|c| c["feed"] == "options").unwrap();
    assert_eq!(options["encoding"], "msgpack");
}

#[actix_web::test]
async fn news_fans_out_by_symbol_and_to_wildcard_subscribers() {
    let app = spawn_app().await;
    let news =
        |symbols: &[&str]| json!({"action":"subscribe","channels":["news"],"symbols":symbols});
    let mut aapl = app.ws().await;
    aapl.send(news(&["AAPL"])).await;
    aapl.expect_type("subscribed").await;
    let mut all = app.ws().await;
    all.send(news(&["*"])).await;
    assert_eq!(all.expect_type("subscribed").await["symbols"], json!(["*"]));
    let mut msft = app.ws().await;
    msft.send(news(&["MSFT"])).await;
    msft.expect_type("subscribed").await;
    wait_for("the news subscription upstream", || async {
        (app.upstream_symbols_of(Some("news"), "news").await == ["*"]).then_some(())
    })
    .await;

    let inject = |headline: &str, symbols: &[&str]| json!({"news":[{"headline": headline, "symbols": symbols}]});
    app.sim("inject", inject("Apple does a thing", &["AAPL"]))
        .await;
    app.sim("inject", inject("Markets at large", &[])).await;
    app.sim("inject", inject("Microsoft does a thing", &["MSFT"]))
        .await;

    let headline = |m: Value| m["news"]["headline"].as_str().unwrap().to_owned();
    let first = aapl.expect_type("news").await;
    assert_eq!(
        first["news"]["content"], "<p>Apple does a thing</p>",
        "{first}"
    );
    assert_eq!(headline(first), "Apple does a thing");
    assert_eq!(
        headline(all.expect_type("news").await),
        "Apple does a thing"
    );
    assert_eq!(headline(all.expect_type("news").await), "Markets at large");
    assert_eq!(
        headline(all.expect_type("news").await),
        "Microsoft does a thing"
    );
    // The MSFT subscriber's first article is its own: it got neither Apple's nor the market-wide one.
    let first = msft.expect_type("news").await;
    assert_eq!(headline(first.clone()), "Microsoft does a thing");
    assert_eq!(first["news"]["symbols"], json!(["MSFT"]));

    // "*" is for news only.
    let mut c = app.ws().await;
    let ack = c.subscribe(&["*"]).await;
    assert_eq!(ack["rejected"][0]["code"], "invalid_symbol");
}

#[actix_web::test]
async fn batching_sends_the_latest_update_per_symbol_in_one_frame_per_kind() {
    let app = spawn_app_with(|s| {
        s.simulator.generate = false;
        s.throttle.interval_ms = 200;
    })
    .await;
    let mut client = app.ws().await;
    client
        .send(json!({"action":"configure","batch":true}))
        .await;
    client.subscribe(&["AAA", "BBB"]).await;
    app.wait_upstream(&["AAA", "BBB"]).await;
    app.inject_quotes(&[
        ("AAA", 1.0, 1.5),
        ("BBB", 5.0, 5.5),
        ("AAA", 2.0, 2.5),
        ("AAA", 3.0, 3.5),
    ])
    .await;
    let batch = client
        .expect(|m| {
            m["type"] == "spot_price_batch"
                && m["updates"].as_array().is_some_and(|u| {
                    u.iter()
                        .any(|x| x["symbol"] == "AAA" && x["bid_price"] == 3.0)
                })
        })
        .await;
    let updates = batch["updates"].as_array().unwrap();
    assert_eq!(batch["count"], updates.len());
    let symbols: Vec<&str> = updates
        .iter()
        .map(|u| u["symbol"].as_str().unwrap())
        .collect();
    let mut unique = symbols.clone();
    unique.dedup();
    assert_eq!(symbols, unique, "one update per symbol in a batch: {batch}");

    // Batching off again: single updates resume.
    client
        .send(json!({"action":"configure","batch":false}))
        .await;
    app.inject_quotes(&[("BBB", 7.0, 7.5)]).await;
    let single = client
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["bid_price"] == 7.0)
        .await;
    assert_eq!(single["update"]["symbol"], "BBB");
}

#[actix_web::test]
async fn option_updates_batch_separately() {
    let app = spawn_app().await;
    let mut client = app.ws().await;
    client
        .send(json!({"action":"configure","batch":true}))
        .await;
    client.subscribe(&[OPTION, "AAPL"]).await;
    let batch = client.expect_type("option_price_batch").await;
    assert_eq!(batch["updates"][0]["symbol"], OPTION);
    let spot = client.expect_type("spot_price_batch").await;
    assert_eq!(spot["updates"][0]["symbol"], "AAPL");
}

#[actix_web::test]
async fn boats_and_overnight_use_the_v1beta1_paths() {
    for (feed, path) in [
        (tickrelay::settings::StockFeed::Boats, "/v1beta1/boats"),
        (
            tickrelay::settings::StockFeed::Overnight,
            "/v1beta1/overnight",
        ),
        (
            tickrelay::settings::StockFeed::DelayedSip,
            "/v2/delayed_sip",
        ),
    ] {
        let app = spawn_app_with(|s| s.feeds.stocks.feed = feed).await;
        let conns = app.sim_connections().await;
        let stocks = conns.iter().find(|c| c["feed"] == "stocks").unwrap();
        assert_eq!(stocks["path"], path);
        assert!(app.feed_status("stocks").await["url"]
            .as_str()
            .unwrap()
            .ends_with(path));
    }
}
