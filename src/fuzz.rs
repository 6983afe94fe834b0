//! Entry points for the fuzz targets (`fuzz/`) and for the test that replays what they found
//! (`tests/fuzz_replay.rs`): each takes arbitrary bytes, runs one decoder the way the daemon runs
//! it on untrusted input, and checks what must hold of its output. A panic is a bug.
//!
//! Untrusted input: upstream frames (a broken or hostile Alpaca, a proxy in between), trading
//! stream frames, browser and SDK client messages, the settings file and environment, and what
//! an edge or a primary reads from a shared Redis.

use std::collections::HashMap;

use bytes::Bytes;

use crate::upstream::protocol::msgpack::msgpack_value_len;
use crate::upstream::protocol::{decode, raw};
use crate::vocab::Encoding;
use crate::vocab::FeedKind;

/// An upstream frame as JSON text: decoded for browsers, and split and transcoded for SDK
/// programs on every feed. Every JSON or msgpack message produced must be well formed.
pub fn upstream_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        // WebSocket text frames are UTF-8; a binary frame of JSON is decoded as such.
        let _ = decode::decode(data, true, Encoding::Json);
        return;
    };
    if let Ok(messages) = decode::decode_json(text) {
        for message in messages {
            if let decode::Inbound::News(article) = message {
                // Only web links reach a page.
                let frame: serde_json::Value =
                    serde_json::from_str(&crate::browser::news(&article)).expect("news is JSON");
                let url = &frame["news"]["url"];
                assert!(
                    url.is_null()
                        || url.as_str().is_some_and(|u| {
                            let u = u.to_ascii_lowercase();
                            u.starts_with("https://") || u.starts_with("http://")
                        }),
                    "a news link that is not http(s): {url}"
                );
            }
        }
    }
    let frame = Bytes::copy_from_slice(data);
    for feed in FeedKind::ALL {
        check_split(raw::split(&frame, false, feed, true, true));
    }
}

/// An upstream frame as msgpack: decoded for browsers, split and written as JSON for SDK
/// programs.
pub fn upstream_msgpack(data: &[u8]) {
    let _ = decode::decode_msgpack(data);
    let _ = decode::decode(data, true, Encoding::Msgpack);
    let frame = Bytes::copy_from_slice(data);
    for feed in FeedKind::ALL {
        check_split(raw::split(&frame, true, feed, true, true));
    }
    let mut out = String::new();
    if let Some(len) = raw::msgpack_to_json(data, &mut out) {
        assert!(len <= data.len());
        assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&out).is_ok(),
            "msgpack_to_json wrote invalid JSON: {out}"
        );
    }
}

fn check_split(elements: Vec<crate::downstream::delivery::RawElement>) {
    for e in elements {
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(&e.json).is_ok(),
            "a split message is not JSON: {:?}",
            String::from_utf8_lossy(&e.json)
        );
        assert_eq!(
            msgpack_value_len(&e.msgpack),
            Some(e.msgpack.len()),
            "a split message is not one msgpack value"
        );
    }
}

/// What an instance reads from Redis that another wrote: an edge's registration (read by
/// primaries), an account message, a relayed market message and a cached price (read by
/// edges).
pub fn redis_message(data: &[u8]) {
    use crate::scaleout::{decode_set, edge};
    if let Ok(text) = std::str::from_utf8(data) {
        for feed in FeedKind::ALL {
            if let Some(set) = decode_set(text, feed) {
                // Only what the feed carries survives, and it reads back the same.
                let again = crate::scaleout::encode_set(&set);
                assert_eq!(decode_set(&again, feed).as_ref(), Some(&set));
            }
        }
        let _ = edge::cached_quote(text);
    }
    if let Ok((_, _, frame)) = edge::parse_account_message(data, "main") {
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(frame).is_ok());
    }
    // A relayed market message, checked as an edge checks it: what passes is one message.
    let frame = bytes::Bytes::copy_from_slice(data);
    for (channel, feed) in [
        ("tickrelay.stocks.quotes.AAPL", FeedKind::Stocks),
        ("tickrelay.crypto.trades.BTC/USD", FeedKind::Crypto),
        ("tickrelay.news", FeedKind::News),
    ] {
        if let Ok((elements, messages)) = edge::check_market(channel, feed, &frame, true, true) {
            assert_eq!((elements.len(), messages.len()), (1, 1));
        }
    }
}

/// A request's head as an attacker shapes it: `Host`, `Origin` and `Authorization` values, one
/// per line, checked by the request guard (the default settings: this machine only) and the auth
/// table (one client, refusals counted and delayed). An accepted Host names a loopback name or an
/// IP address; a credential is accepted only when it carries exactly the client's pair.
pub fn request_head(data: &[u8]) {
    use crate::auth::{Attempt, Auth, Client, Scopes};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (host, origin, authorization) = (lines.next(), lines.next(), lines.next());
    let guard = crate::http::guard::RequestGuard::from_settings(&Default::default());
    if guard.host(host).is_ok() {
        let name = crate::http::guard::host_name(host.unwrap_or_default().trim());
        let name = name.to_ascii_lowercase();
        assert!(
            name == "localhost"
                || name == "localhost."
                || name.ends_with(".localhost")
                || name.parse::<std::net::IpAddr>().is_ok(),
            "Host {host:?} accepted"
        );
    }
    let _ = guard.origin(origin, host);
    const PAIR: &str = "algo-key:algo-secret-123456";
    let auth = Auth::new(
        vec![Client::new(
            "algo",
            "algo-key",
            crate::credentials::Secret::new("algo-secret-123456"),
            Scopes::parse(&["market"]).unwrap_or_default(),
        )],
        Scopes::default(),
        Default::default(),
    );
    let at = Attempt {
        from: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        via: "fuzz",
    };
    for value in [authorization, origin, host].into_iter().flatten() {
        if auth.bearer(at, value).is_ok() {
            assert!(value.contains(PAIR), "{value:?} signed in");
        }
        if auth.token(at, value).is_ok() {
            assert_eq!(value.trim(), PAIR, "{value:?} signed in");
        }
    }
}

/// A trading stream (`trade_updates`) frame, and the browser frame an order event becomes.
pub fn trading_frame(data: &[u8]) {
    if let crate::accounts::frames::TradingFrame::TradeUpdate(event) =
        crate::accounts::frames::parse(data)
    {
        let frame = crate::browser::order_update("main", &event.event, &event.data);
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(&frame).is_ok());
    }
}

/// A browser's message on `/ws`, read with the default per-connection symbol cap.
pub fn browser_message(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(crate::browser::ClientRequest::Subscribe {
            symbols,
            rejected,
            invalid,
            ..
        }) = crate::browser::parse_request(text, 220)
        {
            assert!(symbols.len() <= 220, "read past the cap");
            assert!(rejected.len() <= crate::browser::MAX_LISTED_REJECTIONS);
            assert!(
                invalid >= rejected.len(),
                "every listed rejection is counted"
            );
        }
    }
}

/// An SDK program's message on an Alpaca-compatible path, as JSON text and as msgpack.
pub fn sdk_message(data: &[u8]) {
    let _ = crate::sdk::protocol::parse(data, false);
    let _ = crate::sdk::protocol::parse(data, true);
}

/// A settings file and environment: TOML, then optionally a line `---` and `KEY=value` lines.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once("\n---\n").unwrap_or((text, ""));
    let env: HashMap<String, String> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Ok(s) = crate::settings::Settings::from_toml_str(toml, env) {
        // Valid settings are usable: every duration converts without overflow.
        assert!(s.validate().is_empty());
        let _ = crate::settings::ms(s.upstream.backoff.max_ms);
    }
}
