//! `GET /metrics`: the Prometheus exposition, parsed by a real parser, with counters that move.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::{spawn_app_with, wait_for, StallingClient, TestApp};

/// Every sample of a scrape: `name{label="v",…}` (labels sorted) → value.
type Samples = HashMap<String, f64>;

/// Scrapes `/metrics` with the operator's bearer and parses it as Prometheus does.
async fn scrape(app: &TestApp) -> Samples {
    let mut res = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res.headers().get("content-type").unwrap().to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let body = res.body().limit(1 << 22).await.expect("body");
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    assert!(!text.contains("ops-secret-123"), "a secret in the metrics");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    assert!(scrape.samples.len() > 50, "{text}");
    let mut out = Samples::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        out.insert(key, value);
    }
    out
}

fn get(samples: &Samples, key: &str) -> f64 {
    *samples.get(key).unwrap_or_else(|| {
        panic!(
            "no sample {key}; have {:?}",
            samples.keys().collect::<Vec<_>>()
        )
    })
}

#[actix_web::test]
async fn metrics_parse_and_move_with_quotes_and_slow_clients() {
    let symbols: Vec<String> = (0..20).map(|i| format!("M{i:02}")).collect();
    let app = spawn_app_with(|s| {
        s.throttle.interval_ms = 5;
        s.simulator.tick_ms = 5;
        s.session.socket_send_buffer_bytes = 8 * 1024;
        s.session.slow_client_timeout_ms = 500;
    })
    .await;

    // Anonymous callers get nothing: metrics describe the whole daemon.
    let res = app.anonymous.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);

    let mut browser = app.ws().await;
    browser.subscribe(&["AAPL"]).await;
    browser.expect_type("spot_price_update").await;
    let before = scrape(&app).await;
    for _ in 0..5 {
        browser.expect_type("spot_price_update").await;
    }
    let after = scrape(&app).await;
    for key in [
        "tickrelay_updates_sent_total",
        "tickrelay_frames_sent_total",
        "tickrelay_feed_messages_received_total{feed=\"stocks\",type=\"quote\"}",
        "tickrelay_pipeline_latency_seconds_count",
    ] {
        assert!(
            get(&after, key) > get(&before, key),
            "{key} did not move: {} -> {}",
            get(&before, key),
            get(&after, key)
        );
    }
    assert_eq!(
        get(
            &after,
            "tickrelay_feed_state{feed=\"stocks\",state=\"connected\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            "tickrelay_feed_state{feed=\"stocks\",state=\"disconnected\"}"
        ),
        0.0
    );
    assert_eq!(get(&after, "tickrelay_clients{kind=\"browser\"}"), 1.0);
    assert!(get(&after, "tickrelay_feed_connects_total{feed=\"stocks\"}") >= 1.0);
    assert!(get(&after, "tickrelay_throttles") >= 1.0);
    assert!(get(&after, "tickrelay_process_resident_memory_bytes") > 1e6);

    // A client that stops reading is dropped as slow, and counted.
    let mut slow = StallingClient::connect(app.addr, 4096).await;
    slow.send(json!({"action":"subscribe","symbols": symbols}))
        .await;
    wait_for("the slow client's disconnect in the metrics", || async {
        let m = scrape(&app).await;
        (get(&m, "tickrelay_slow_client_disconnects_total") >= 1.0).then_some(())
    })
    .await;
    let m = scrape(&app).await;
    assert!(get(&m, "tickrelay_updates_conflated_total") > 0.0);
}
