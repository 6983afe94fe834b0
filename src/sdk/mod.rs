//! The Alpaca-compatible endpoint: unmodified Alpaca SDK programs share tickrelay's upstream
//! connections by pointing their stream URL at it (docs/alpaca-endpoint.md).
//!
//! - [`protocol`] — Alpaca's client messages in (JSON or msgpack, any key order, null lists) and
//!   its control messages out, as pure functions.
//! - [`subscriptions`] — one program's subscriptions: validation (410, 413, 400, 405), the
//!   complete `subscription` ack, and the [`RawFilter`](crate::downstream::delivery::RawFilter) its hub
//!   reads.
//! - [`session`] — [`SdkSession`](session::SdkSession), the actor of one program on a market-data
//!   path; [`trading`] — the actor of one program on `/stream` (`trade_updates`).
//!
//! This file routes a request path to the stream it names ([`Routes`]). Who may connect is the
//! [`auth`](crate::auth) table; what flows is the feeds' [tap](crate::upstream::tap):
//! every message, never conflated, filtered per program on its worker's hub.

pub mod protocol;
pub mod session;
pub mod subscriptions;
pub mod trading;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Auth;
use crate::settings::{ms, SdkSettings, Settings};
use crate::upstream::tap::Taps;
use crate::vocab::FeedKind;

/// What every SDK session needs: who may connect, the feeds' taps, the limits.
pub struct SdkContext {
    pub auth: Arc<Auth>,
    pub taps: Arc<Taps>,
    pub routes: Routes,
    pub settings: SdkSettings,
    /// With a replay: the programs' outboxes it must not outrun at `max`.
    pub backlog: Option<Arc<crate::downstream::delivery::Backlog>>,
}

impl SdkContext {
    pub fn new(settings: &Settings, taps: Arc<Taps>, auth: Arc<Auth>) -> SdkContext {
        SdkContext {
            auth,
            taps,
            routes: Routes::from_settings(settings),
            settings: settings.sdk.clone(),
            backlog: None,
        }
    }

    pub fn auth_timeout(&self) -> Duration {
        ms(self.settings.auth_timeout_ms)
    }
}

/// What an upgrade path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// A market-data stream.
    Market(FeedKind),
    /// The trading stream (`trade_updates`).
    Trading,
}

/// The Alpaca stream paths this daemon serves, from its enabled feeds.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Canonical path (`/v2/iex`) → the feed carrying it.
    carried: Vec<(&'static str, FeedKind)>,
}

/// Every market-data path an Alpaca SDK may build, with its canonical form and feed kind:
/// the versioned paths, the bare `/{feed}` forms go-sdk's `DATA_PROXY_WS` builds, and go-sdk's
/// `/v2/boats|overnight`.
fn canonical(path: &str) -> Option<(&'static str, FeedKind)> {
    const STOCKS: [&str; 6] = ["iex", "sip", "delayed_sip", "test", "boats", "overnight"];
    const CRYPTO: [&str; 6] = ["us", "us-1", "us-2", "eu-1", "bs-1", "global"];
    let path = path.split('?').next().unwrap_or_default();
    let path = path.strip_suffix('/').unwrap_or(path);
    let (version, name) = match path.rsplit_once('/') {
        Some((v, n)) => (v, n),
        None => return None,
    };
    let stock = |name: &str| -> Option<&'static str> {
        Some(match name {
            "iex" => "/v2/iex",
            "sip" => "/v2/sip",
            "delayed_sip" => "/v2/delayed_sip",
            "test" => "/v2/test",
            "boats" => "/v1beta1/boats",
            "overnight" => "/v1beta1/overnight",
            _ => return None,
        })
    };
    let option = |name: &str| -> Option<&'static str> {
        Some(match name {
            "indicative" => "/v1beta1/indicative",
            "opra" => "/v1beta1/opra",
            _ => return None,
        })
    };
    let crypto = |name: &str| -> Option<&'static str> {
        Some(match name {
            "us" => "/v1beta3/crypto/us",
            "us-1" => "/v1beta3/crypto/us-1",
            "us-2" => "/v1beta3/crypto/us-2",
            "eu-1" => "/v1beta3/crypto/eu-1",
            "bs-1" => "/v1beta3/crypto/bs-1",
            "global" => "/v1beta3/crypto/global",
            _ => return None,
        })
    };
    match version {
        "/v2" | "" if STOCKS.contains(&name) => Some((stock(name)?, FeedKind::Stocks)),
        "/v1beta1" if matches!(name, "boats" | "overnight") => {
            Some((stock(name)?, FeedKind::Stocks))
        }
        "/v1beta1" | "" if matches!(name, "indicative" | "opra") => {
            Some((option(name)?, FeedKind::Options))
        }
        "/v1beta1" | "" if name == "news" => Some(("/v1beta1/news", FeedKind::News)),
        "/v1beta3/crypto" | "" if CRYPTO.contains(&name) => Some((crypto(name)?, FeedKind::Crypto)),
        _ => None,
    }
}

impl Routes {
    pub fn from_settings(settings: &Settings) -> Routes {
        let feeds = &settings.feeds;
        let mut carried = Vec::new();
        if feeds.stocks.enabled {
            carried.push((feeds.stocks.feed.path(), FeedKind::Stocks));
        }
        if feeds.crypto.enabled {
            carried.push((feeds.crypto.location.path(), FeedKind::Crypto));
        }
        if feeds.options.enabled {
            carried.push((feeds.options.feed.path(), FeedKind::Options));
        }
        if feeds.news.enabled {
            carried.push(("/v1beta1/news", FeedKind::News));
        }
        Routes { carried }
    }

    /// Whether `path` is one of the SDK paths (served or refused by this endpoint), rather than
    /// the browser's `/ws` or a REST route.
    pub fn claims(path: &str) -> bool {
        let bare = path.split('?').next().unwrap_or_default();
        canonical(path).is_some()
            || matches!(bare, "/stream" | "/stream/")
            || bare.starts_with("/v1beta1/")
            || bare.starts_with("/v1beta2/")
            || bare.starts_with("/v1beta3/")
            || bare.starts_with("/v2/")
    }

    /// The stream `path` names, or why it is refused (an HTTP 404 with this reason: go-sdk gives
    /// up on a 4xx instead of retrying, and no program gets another feed's data).
    pub fn route(&self, path: &str) -> Result<Stream, String> {
        let bare = path.split('?').next().unwrap_or_default();
        if matches!(bare, "/stream" | "/stream/") {
            return Ok(Stream::Trading);
        }
        let Some((canonical, kind)) = canonical(path) else {
            if bare.starts_with("/v1beta2/crypto") || bare.starts_with("/v1beta1/crypto") {
                return Err(format!(
                    "{bare} is Alpaca's retired crypto path; use /v1beta3/crypto/us"
                ));
            }
            return Err(format!(
                "{bare} is not an Alpaca stream path tickrelay knows"
            ));
        };
        match self.carried.iter().find(|(_, k)| *k == kind) {
            Some((path, kind)) if *path == canonical => Ok(Stream::Market(*kind)),
            Some((path, kind)) => Err(format!(
                "tickrelay carries the {} feed at {path}, not {canonical}",
                kind.as_str()
            )),
            None => Err(format!(
                "the {} feed is not enabled on this tickrelay",
                kind.as_str()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes::from_settings(&Settings::from_toml_str("", Default::default()).unwrap())
    }

    #[test]
    fn every_sdk_form_of_a_carried_feed_routes_to_it() {
        let r = routes();
        for path in ["/v2/iex", "/iex", "/v2/iex/", "/v2/iex?x=1"] {
            assert_eq!(
                r.route(path),
                Ok(Stream::Market(FeedKind::Stocks)),
                "{path}"
            );
        }
        assert_eq!(
            r.route("/v1beta3/crypto/us"),
            Ok(Stream::Market(FeedKind::Crypto))
        );
        assert_eq!(r.route("/us"), Ok(Stream::Market(FeedKind::Crypto)));
        assert_eq!(
            r.route("/v1beta1/indicative"),
            Ok(Stream::Market(FeedKind::Options))
        );
        assert_eq!(
            r.route("/indicative"),
            Ok(Stream::Market(FeedKind::Options))
        );
        assert_eq!(r.route("/v1beta1/news"), Ok(Stream::Market(FeedKind::News)));
        assert_eq!(r.route("/stream"), Ok(Stream::Trading));
        assert_eq!(r.route("/stream/"), Ok(Stream::Trading));
    }

    #[test]
    fn other_feeds_and_unknown_paths_are_refused_with_a_reason() {
        let r = routes();
        let err = r.route("/v2/sip").unwrap_err();
        assert!(err.contains("/v2/iex") && err.contains("/v2/sip"), "{err}");
        assert!(r.route("/v1beta3/crypto/eu-1").is_err());
        assert!(r.route("/v1beta1/opra").is_err());
        assert!(r.route("/v1beta2/crypto").unwrap_err().contains("retired"));
        assert!(r.route("/v2/nope").is_err());
        assert!(Routes::claims("/v2/nope"));
        assert!(!Routes::claims("/ws"));
        assert!(!Routes::claims("/api/v1/status"));
    }

    #[test]
    fn go_sdk_boats_path_is_the_v1beta1_feed() {
        assert_eq!(
            canonical("/v2/boats"),
            Some(("/v1beta1/boats", FeedKind::Stocks))
        );
        assert_eq!(
            canonical("/boats"),
            Some(("/v1beta1/boats", FeedKind::Stocks))
        );
    }
}
