//! Every field reaches its user: quote exchanges, conditions and tape; trade ids and tape; trade
//! corrections and cancels that fix `last_price`; the routes older front ends call.

use serde_json::{json, Value};
use tickrelay::time::Timestamp;

use crate::helpers::{spawn_app, TestApp, WsClient};

/// Sends `messages` to the stocks feed's connection as one JSON frame.
async fn send_stocks(app: &TestApp, messages: &[Value]) {
    let text = Value::Array(messages.to_vec()).to_string();
    app.sim("raw", json!({"feed": "stocks", "text": text}))
        .await;
}

/// A daemon whose stocks feed sends only what the test sends, and a browser subscribed to
/// `symbols` on `channels`, held upstream.
async fn quiet_stocks(symbols: &[&str], channels: &[&str]) -> (TestApp, WsClient) {
    let app = spawn_app().await;
    app.sim("silence", json!({"feed": "stocks", "paused": true}))
        .await;
    let mut c = app.ws().await;
    c.send(json!({"action": "subscribe", "symbols": symbols, "channels": channels}))
        .await;
    c.expect_type("subscribed").await;
    app.wait_upstream(symbols).await;
    (app, c)
}

fn now() -> String {
    Timestamp::now().to_rfc3339()
}

fn trade(id: i64, price: f64) -> Value {
    json!({"T":"t","S":"AAPL","i":id,"x":"V","p":price,"s":100,"c":["@"],"z":"C","t":now()})
}

async fn trade_frame(c: &mut WsClient, id: i64) -> Value {
    c.expect(|m| m["type"] == "trade" && m["trade"]["id"] == id)
        .await
}

/// The first price update whose last price is `price`.
async fn last_price(c: &mut WsClient, price: f64) -> Value {
    c.expect(|m| m["type"] == "spot_price_update" && m["update"]["last_price"] == price)
        .await
}

#[actix_web::test]
async fn quotes_and_trades_keep_their_fields_and_fixes_correct_the_last_price() {
    // Only the frames below: the simulator's own AAPL prints would race them.
    let (app, mut c) = quiet_stocks(&["AAPL"], &["quotes", "trades"]).await;

    send_stocks(
        &app,
        &[
            json!({"T":"q","S":"AAPL","bx":"V","bp":190.1,"bs":2,"ax":"Q","ap":190.2,"as":3,
            "c":["R"],"z":"C","t":now()}),
        ],
    )
    .await;
    let q = c
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["bid_price"] == 190.1)
        .await;
    let u = &q["update"];
    assert_eq!(
        (
            u["bid_exchange"].clone(),
            u["ask_exchange"].clone(),
            u["conditions"].clone(),
            u["tape"].clone()
        ),
        (json!("V"), json!("Q"), json!(["R"]), json!("C")),
        "{q}"
    );

    send_stocks(&app, &[trade(1001, 190.15)]).await;
    let t = trade_frame(&mut c, 1001).await;
    assert_eq!(t["trade"]["tape"], "C", "{t}");
    assert_eq!(t["trade"]["exchange"], "V");
    last_price(&mut c, 190.15).await;
    send_stocks(&app, &[trade(1002, 191.0)]).await;
    trade_frame(&mut c, 1002).await;
    last_price(&mut c, 191.0).await;

    // 1002 was really 190.9 (and became 1003).
    send_stocks(
        &app,
        &[
            json!({"T":"c","S":"AAPL","x":"V","oi":1002,"op":191.0,"os":100,"oc":["@"],
            "ci":1003,"cp":190.9,"cs":100,"cc":["@"],"z":"C","t":now()}),
        ],
    )
    .await;
    let fix = c.expect_type("trade_correction").await;
    assert_eq!(fix["correction"]["corrected_price"], 190.9, "{fix}");
    assert_eq!(fix["correction"]["original_id"], 1002);
    assert_eq!(fix["correction"]["last_price"], 190.9);
    last_price(&mut c, 190.9).await;
    assert_eq!(
        app.get(&app.url("/api/v1/quotes/AAPL")).await.1["last_price"],
        190.9,
        "the cache is corrected too"
    );

    // Then cancelled: the last price falls back to the trade before it.
    send_stocks(
        &app,
        &[json!({"T":"x","S":"AAPL","i":1003,"x":"V","p":190.9,"s":100,"a":"C","z":"C","t":now()})],
    )
    .await;
    let cancel = c.expect_type("trade_cancel").await;
    assert_eq!(cancel["cancel"]["action"], "C", "{cancel}");
    assert_eq!(cancel["cancel"]["last_price"], 190.15);
    last_price(&mut c, 190.15).await;

    // A cancel of some older trade changes nothing but still reaches trades subscribers.
    send_stocks(
        &app,
        &[json!({"T":"x","S":"AAPL","i":999,"x":"V","p":150.0,"s":1,"a":"E","z":"C","t":now()})],
    )
    .await;
    let other = c.expect_type("trade_cancel").await;
    assert_eq!(other["cancel"]["last_price"], 190.15, "{other}");
}

#[actix_web::test]
async fn the_replaced_services_routes_answer() {
    let app = spawn_app().await;
    for path in ["/health", "/api/v1/health"] {
        let (code, body) = app.get(&app.url(path)).await;
        assert_eq!(code, 200, "{path}");
        assert!(
            body["subscribed_symbols"].is_u64(),
            "{path}: subscribed_symbols is a count: {body}"
        );
        assert_eq!(body["status"], "healthy");
    }
    for view in ["dashboard", "account", "positions", "orders"] {
        let (code, realtime) = app
            .get(&app.url(&format!("/api/v1/realtime/{view}/main")))
            .await;
        assert_eq!(code, 200, "{view}: {realtime}");
        let (_, accounts) = app
            .get(&app.url(&format!("/api/v1/accounts/main/{view}")))
            .await;
        if view != "dashboard" {
            assert_eq!(realtime, accounts, "{view}");
        } else {
            assert_eq!(realtime["summary"], accounts["summary"]);
        }
    }
    let (code, status) = app.get(&app.url("/api/v1/realtime/status")).await;
    assert_eq!(code, 200);
    assert_eq!(status["total_accounts"], 1);
    let (code, _) = app.get(&app.url("/api/v1/realtime/account/nobody")).await;
    assert_eq!(code, 403, "no scope names an unknown account");
}

/// A symbol that has only traded has no bid or ask: `null`, never `0.0` (a page would show it
/// as a price); the mid is `null` too.
#[actix_web::test]
async fn a_symbol_without_a_quote_has_null_bid_and_ask() {
    let (app, mut c) = quiet_stocks(&["AAPL"], &["quotes", "trades"]).await;
    send_stocks(&app, &[trade(41, 190.5)]).await;
    let u = last_price(&mut c, 190.5).await;
    let update = &u["update"];
    assert!(update["bid_price"].is_null(), "{u}");
    assert!(update["ask_price"].is_null(), "{u}");
    assert!(update["mid_price"].is_null(), "{u}");
}

/// An error element between data elements of one frame (here a 500, which ends the upstream
/// connection) loses nothing: the browser gets the data before and after it.
#[actix_web::test]
async fn data_after_an_error_element_in_the_same_frame_is_delivered() {
    let (app, mut c) = quiet_stocks(&["AAPL", "MSFT"], &["quotes", "trades"]).await;
    let msft =
        json!({"T":"t","S":"MSFT","i":77,"x":"V","p":415.25,"s":10,"c":["@"],"z":"C","t":now()});
    send_stocks(
        &app,
        &[
            trade(42, 191.0),
            json!({"T":"error","code":500,"msg":"internal error"}),
            msft,
        ],
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let m = c.expect_type("trade").await;
        seen.insert(m["trade"]["symbol"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["AAPL".to_owned(), "MSFT".to_owned()].into());
}

/// A print that updates an earlier one (Alpaca's `u`) reaches browsers as such: a `corrected`
/// print is a trade with `update` and the new last price; a `canceled` one is shown with its
/// `update` and never becomes the last price.
#[actix_web::test]
async fn trade_updates_are_shown_as_such() {
    let (app, mut c) = quiet_stocks(&["AAPL"], &["quotes", "trades"]).await;
    send_stocks(&app, &[trade(50, 190.0)]).await;
    last_price(&mut c, 190.0).await;

    let mut corrected = trade(51, 190.25);
    corrected["u"] = json!("corrected");
    send_stocks(&app, &[corrected]).await;
    let t = trade_frame(&mut c, 51).await;
    assert_eq!(t["trade"]["update"], "corrected", "{t}");
    last_price(&mut c, 190.25).await;

    let mut canceled = trade(52, 999.0);
    canceled["u"] = json!("canceled");
    send_stocks(&app, &[canceled, trade(53, 190.5)]).await;
    let t = trade_frame(&mut c, 52).await;
    assert_eq!(t["trade"]["update"], "canceled", "{t}");
    let p = c
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["last_price"] != 190.25)
        .await;
    assert_eq!(
        p["update"]["last_price"], 190.5,
        "never the canceled print: {p}"
    );
}

/// Trading halts, resumptions and LULD bands reach browsers on the `statuses` channel as
/// `status` frames, and a halt marks the symbol's price updates `halted` until it resumes.
#[actix_web::test]
async fn halts_and_bands_reach_the_statuses_channel_and_mark_prices() {
    let (app, mut c) = quiet_stocks(&["AAPL"], &["quotes", "statuses"]).await;
    send_stocks(&app, &[trade(60, 190.0)]).await;
    last_price(&mut c, 190.0).await;

    let halt = json!({"T":"s","S":"AAPL","sc":"H","sm":"Trading Halt","rc":"T12",
        "rm":"Trading Halted; For information requested by NASDAQ","t":now(),"z":"C"});
    let band = json!({"T":"l","S":"AAPL","u":199.5,"d":180.5,"i":"B","t":now(),"z":"C"});
    send_stocks(&app, &[halt, band]).await;
    let s = c.expect_type("status").await;
    let status = &s["status"];
    assert_eq!(
        (
            status["kind"].clone(),
            status["code"].clone(),
            status["halted"].clone()
        ),
        (json!("trading_status"), json!("H"), json!(true)),
        "{s}"
    );
    assert_eq!(status["reason_code"], "T12");
    let s = c.expect_type("status").await;
    assert_eq!(
        (
            s["status"]["kind"].clone(),
            s["status"]["limit_up"].clone(),
            s["status"]["limit_down"].clone()
        ),
        (json!("luld"), json!(199.5), json!(180.5)),
        "{s}"
    );
    let p = c
        .expect(|m| m["type"] == "spot_price_update" && m["update"]["halted"] == true)
        .await;
    assert_eq!(p["update"]["symbol"], "AAPL");

    let resume = json!({"T":"s","S":"AAPL","sc":"T","sm":"Trading Resumption","rc":"",
        "rm":"","t":now(),"z":"C"});
    send_stocks(&app, &[resume, trade(61, 191.0)]).await;
    let s = c.expect_type("status").await;
    assert_eq!(s["status"]["halted"], false, "{s}");
    let p = last_price(&mut c, 191.0).await;
    assert!(p["update"].get("halted").is_none(), "trading again: {p}");
}
