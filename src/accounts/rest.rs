//! A small client for Alpaca's trading REST API, within its rate limit.
//!
//! Alpaca allows 200 requests per minute per account; the client spends from a token bucket
//! (`trading.rest_requests_per_minute`) and waits for a token rather than exceed it. An HTTP 429 is
//! answered by a cool-down and a retry. Keys go in the `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY`
//! headers and never into a log line or an error message.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::http::header::HeaderValue;
use log::warn;
use serde_json::Value;

use crate::credentials::Credentials;

/// Retries after HTTP 429 before giving up on a request.
const RETRIES_AFTER_429: u32 = 3;
/// The cool-down after a 429 without a usable `Retry-After`.
const COOL_DOWN: Duration = Duration::from_secs(5);

/// Why a REST request failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("GET {path}: HTTP {status}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
    #[error("GET {path}: {reason}")]
    Transport { path: String, reason: String },
    #[error("GET {path}: the response is not JSON: {reason}")]
    Body { path: String, reason: String },
}

/// A token bucket: `capacity` tokens, refilled evenly over a minute.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    /// How long to wait for a token (and takes it when the wait is zero).
    fn take(&mut self, now: Instant) -> Duration {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second)
            .min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }
}

/// The trading REST API of one account.
#[derive(Clone)]
pub struct RestClient {
    base_url: String,
    /// The longest a 429's `Retry-After` makes a request wait.
    max_retry_after: Duration,
    credentials: Credentials,
    http: awc::Client,
    bucket: Rc<RefCell<Bucket>>,
}

impl RestClient {
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        requests_per_minute: u32,
        timeout: Duration,
        max_retry_after: Duration,
    ) -> Self {
        let per_minute = f64::from(requests_per_minute.max(1));
        RestClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
            max_retry_after,
            credentials,
            http: awc::Client::builder().timeout(timeout).finish(),
            bucket: Rc::new(RefCell::new(Bucket {
                // A burst of a tenth of the minute's budget (at least a handful).
                capacity: (per_minute / 10.0).max(5.0),
                tokens: (per_minute / 10.0).max(5.0),
                per_second: per_minute / 60.0,
                last: Instant::now(),
            })),
        }
    }

    async fn token(&self) {
        loop {
            let wait = self.bucket.borrow_mut().take(Instant::now());
            if wait.is_zero() {
                return;
            }
            actix_web::rt::time::sleep(wait).await;
        }
    }

    /// `GET {base}{path}` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, RestError> {
        let mut attempt = 0;
        loop {
            self.token().await;
            let request = self
                .http
                .get(format!("{}{path}", self.base_url))
                .insert_header(key_header(
                    "APCA-API-KEY-ID",
                    self.credentials.key_id.expose(),
                ))
                .insert_header(key_header(
                    "APCA-API-SECRET-KEY",
                    self.credentials.secret_key.expose(),
                ));
            let mut response = request.send().await.map_err(|e| RestError::Transport {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            let status = response.status().as_u16();
            if status == 429 && attempt < RETRIES_AFTER_429 {
                attempt += 1;
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(COOL_DOWN, Duration::from_secs)
                    // A server asking for hours (or garbage) does not stall the account.
                    .min(self.max_retry_after);
                warn!("trading REST {path}: HTTP 429 (rate limited); cooling down {wait:?}");
                actix_web::rt::time::sleep(wait).await;
                continue;
            }
            let body = response.body().limit(16 * 1024 * 1024).await.map_err(|e| {
                RestError::Transport {
                    path: path.to_owned(),
                    reason: e.to_string(),
                }
            })?;
            if !(200..300).contains(&status) {
                let text = String::from_utf8_lossy(&body);
                return Err(RestError::Status {
                    path: path.to_owned(),
                    status,
                    body: text.chars().take(200).collect(),
                });
            }
            return serde_json::from_slice(&body).map_err(|e| RestError::Body {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    }
}

/// An Alpaca key header, marked sensitive: the HTTP client leaves it out of its debug and trace
/// output (including HTTP/2's), so the keys never reach a log. A key that is not a valid header
/// value is sent empty, and Alpaca refuses it.
fn key_header(name: &'static str, value: &str) -> (&'static str, HeaderValue) {
    let mut value = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    (name, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alpaca_key_headers_are_marked_sensitive() {
        for name in ["APCA-API-KEY-ID", "APCA-API-SECRET-KEY"] {
            let (header, value) = key_header(name, "PKSECRET123");
            assert_eq!(header, name);
            assert!(value.is_sensitive(), "{name}");
            assert_eq!(value.to_str().unwrap(), "PKSECRET123");
            assert!(
                !format!("{value:?}").contains("PKSECRET123"),
                "debug output hides it"
            );
        }
    }

    #[test]
    fn the_bucket_spends_its_burst_then_paces() {
        let t0 = Instant::now();
        let mut b = Bucket {
            capacity: 2.0,
            tokens: 2.0,
            per_second: 1.0,
            last: t0,
        };
        assert_eq!(b.take(t0), Duration::ZERO);
        assert_eq!(b.take(t0), Duration::ZERO);
        assert_eq!(b.take(t0), Duration::from_secs(1));
        assert_eq!(b.take(t0 + Duration::from_secs(1)), Duration::ZERO);
    }
}
