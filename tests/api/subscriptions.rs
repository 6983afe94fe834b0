//! Reference-counted upstream subscriptions, as the simulator observes them.

use serde_json::json;

use crate::helpers::{spawn_app_with, wait_for};

#[actix_web::test]
async fn upstream_subscription_is_removed_only_after_the_last_client_leaves() {
    let app = spawn_app_with(|s| s.registry.unsubscribe_grace_ms = 400).await;
    let mut a = app.ws().await;
    let mut b = app.ws().await;
    a.subscribe(&["MSFT"]).await;
    b.subscribe(&["MSFT"]).await;
    wait_for("MSFT upstream", || async {
        app.upstream_symbols("quotes")
            .await
            .contains(&"MSFT".to_owned())
            .then_some(())
    })
    .await;

    a.send(json!({"action":"unsubscribe","symbols":["MSFT"]}))
        .await;
    let ack = a.expect_type("unsubscribed").await;
    assert_eq!(ack["symbols"], json!(["MSFT"]));
    // A later change reaching the simulator proves the first one was processed.
    b.subscribe(&["NVDA"]).await;
    wait_for("NVDA upstream", || async {
        app.upstream_symbols("quotes")
            .await
            .contains(&"NVDA".to_owned())
            .then_some(())
    })
    .await;
    assert!(
        app.upstream_symbols("quotes")
            .await
            .contains(&"MSFT".to_owned()),
        "b still holds MSFT"
    );

    drop(b);
    let status = wait_for("MSFT to enter its grace period", || async {
        let s = app.status().await;
        let releasing = s["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["symbol"] == "MSFT" && x["releasing"] == true);
        releasing.then_some(s)
    })
    .await;
    assert_eq!(status["sessions"]["count"], 1, "only a remains");
    wait_for("MSFT to leave the upstream", || async {
        let quotes = app.upstream_symbols("quotes").await;
        (!quotes.contains(&"MSFT".to_owned()) && !quotes.contains(&"NVDA".to_owned())).then_some(())
    })
    .await;
    // The throttles went with them.
    let status = app.status().await;
    assert_eq!(status["throttles"], 0, "{}", status["symbols"]);
}

#[actix_web::test]
async fn resubscribing_within_the_grace_period_keeps_the_upstream_subscription() {
    let app = spawn_app_with(|s| s.registry.unsubscribe_grace_ms = 60_000).await;
    let mut a = app.ws().await;
    a.subscribe(&["QQQ"]).await;
    a.expect_type("spot_price_update").await;
    drop(a);
    wait_for("QQQ to enter its grace period", || async {
        let s = app.status().await;
        s["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["symbol"] == "QQQ" && x["releasing"] == true)
            .then_some(())
    })
    .await;
    let stocks =
        |conns: Vec<serde_json::Value>| conns.into_iter().find(|c| c["feed"] == "stocks").unwrap();
    let connection_before = stocks(app.sim_connections().await)["id"].clone();

    let mut reload = app.ws().await;
    reload.subscribe(&["QQQ"]).await;
    let snap = reload.expect_type("spot_price_update").await;
    assert_eq!(
        snap["snapshot"], true,
        "a page reload gets the cached price at once"
    );
    let status = app.status().await;
    let entry = status["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["symbol"] == "QQQ")
        .unwrap()
        .clone();
    assert_eq!(entry["releasing"], false);
    assert!(app
        .upstream_symbols("quotes")
        .await
        .contains(&"QQQ".to_owned()));
    assert_eq!(
        stocks(app.sim_connections().await)["id"],
        connection_before,
        "same upstream connection"
    );
}
