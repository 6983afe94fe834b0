//! Bad client input gets a clear error and the connection keeps working.

use actix_http::ws::Message;
use serde_json::json;

use crate::helpers::{spawn_app_with, Ended};

#[actix_web::test]
async fn bad_messages_get_error_frames_and_the_connection_stays_usable() {
    let app = spawn_app_with(|s| s.session.max_symbols = 3).await;
    let mut c = app.ws().await;

    c.send_text("definitely not json").await;
    let e = c.expect_type("error").await;
    assert_eq!(e["code"], "invalid_json");

    c.send(json!({"action":"dance"})).await;
    assert_eq!(c.expect_type("error").await["code"], "unknown_action");

    c.send(json!({"action":"subscribe","symbols":"AAPL","channels":["gossip"]}))
        .await;
    let e = c.expect_type("error").await;
    assert!(e["message"].as_str().unwrap().contains("gossip"), "{e}");

    let ack = c.subscribe(&["AAPL", "no way", "123"]).await;
    assert_eq!(ack["symbols"], json!(["AAPL"]));
    let rejected: Vec<_> = ack["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["symbol"].clone())
        .collect();
    assert_eq!(rejected, [json!("no way"), json!("123")]);
    assert!(ack["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["code"] == "invalid_symbol"));

    c.send(json!({"action":"subscribe","symbols":["MSFT","SPY","QQQ","TSLA"]}))
        .await;
    let e = c.expect_type("error").await;
    assert_eq!(e["code"], "too_many_symbols");
    let ack = c.expect_type("subscribed").await;
    assert_eq!(ack["symbols"], json!(["MSFT", "SPY"]));
    let over: Vec<_> = ack["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["symbol"].clone(), r["code"].clone()))
        .collect();
    assert_eq!(
        over,
        [
            (json!("QQQ"), json!("too_many_symbols")),
            (json!("TSLA"), json!("too_many_symbols"))
        ]
    );

    c.send_raw(Message::Binary(vec![1u8, 2, 3].into())).await;
    assert_eq!(c.expect_type("error").await["code"], "invalid_json");

    // Idempotent subscribe, harmless unsubscribe, and the connection still answers.
    let ack = c.subscribe(&["AAPL"]).await;
    assert_eq!(ack["symbols"], json!(["AAPL"]));
    c.send(json!({"action":"unsubscribe","symbols":["NEVER"]}))
        .await;
    assert_eq!(
        c.expect_type("unsubscribed").await["symbols"],
        json!(["NEVER"])
    );
    c.send(json!({"action":"ping","id":7})).await;
    let pong = c.expect_type("pong").await;
    assert_eq!(pong["id"], 7);
    c.expect_type("spot_price_update").await;
}

#[actix_web::test]
async fn a_client_flooding_messages_is_rate_limited_but_kept() {
    let app = spawn_app_with(|s| s.session.max_messages_per_second = 5).await;
    let mut c = app.ws().await;
    c.expect_type("alpaca_status").await;
    for i in 0..20 {
        c.send(json!({"action":"ping","id":i})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..20 {
        let m = c
            .expect(|m| m["type"] == "pong" || m["type"] == "error")
            .await;
        if m["type"] == "pong" {
            pongs += 1;
        } else {
            assert_eq!(m["code"], "rate_limited", "{m}");
            limited += 1;
        }
    }
    assert!(
        (5..=8).contains(&pongs),
        "a burst of 5 (plus any refill while sending): {pongs}"
    );
    assert_eq!(pongs + limited, 20);
    // The connection is still served once the budget refills (each refused ping is answered).
    loop {
        c.send(json!({"action":"ping","id":"again"})).await;
        let m = c
            .expect(|m| m["type"] == "pong" || m["type"] == "error")
            .await;
        if m["type"] == "pong" {
            assert_eq!(m["id"], "again");
            break;
        }
        assert_eq!(m["code"], "rate_limited", "{m}");
    }
}

#[actix_web::test]
async fn an_oversized_frame_closes_with_1009() {
    let app = spawn_app_with(|s| s.session.max_frame_bytes = 1024).await;
    let mut c = app.ws().await;
    let big = format!(
        "{{\"action\":\"subscribe\",\"symbols\":[\"{}\"]}}",
        "A".repeat(4096)
    );
    c.send_text(&big).await;
    assert_eq!(c.until_end().await, Ended::Closed(Some(1009)));
}

#[actix_web::test]
async fn fragmented_messages_are_reassembled_and_bounded() {
    use actix_http::ws::Item;
    let app = spawn_app_with(|s| s.session.max_frame_bytes = 1024).await;
    let mut c = app.ws().await;
    let text = json!({"action":"subscribe","symbols":["AAPL"]}).to_string();
    let (a, b) = text.split_at(10);
    c.send_raw(Message::Continuation(Item::FirstText(
        a.to_owned().into_bytes().into(),
    )))
    .await;
    c.send_raw(Message::Continuation(Item::Last(
        b.to_owned().into_bytes().into(),
    )))
    .await;
    let ack = c.expect_type("subscribed").await;
    assert_eq!(ack["symbols"], json!(["AAPL"]));

    let chunk = vec![b' '; 800];
    c.send_raw(Message::Continuation(Item::FirstText(chunk.clone().into())))
        .await;
    c.send_raw(Message::Continuation(Item::Continue(chunk.into())))
        .await;
    assert_eq!(c.until_end().await, Ended::Closed(Some(1009)));
}
