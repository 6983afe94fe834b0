//! When to try again: backoff, hold-offs for Alpaca's error classes, and a circuit breaker.
//!
//! Shared by every upstream connection actor (data feeds and trading streams). Plain state, no
//! timers: the actor reports failures and successes and asks for the delay before its next attempt.
//!
//! - Transient failures (network errors, closes, liveness timeouts, 400/401/403/404/500, …) follow
//!   the exponential backoff.
//! - Fatal ones (402, 409, 410, 411, and a 4xx at the WebSocket handshake) wait the long fatal
//!   hold-off: retrying soon cannot help, and hammering Alpaca with bad credentials helps no one.
//! - 406 (connection limit) waits at least the connection-limit hold-off (Alpaca keeps a dead
//!   session ~90 s); HTTP 429 waits the rate-limit hold-off.
//! - The circuit breaker opens after `threshold` consecutive failures: no attempt until the
//!   cool-down has passed, then one trial (half-open); success closes it, failure reopens it.

use crate::vocab::Backoff;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How a failure should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Retry with backoff.
    Transient,
    /// Retrying soon will not help: hold off long and report the feed failed.
    Fatal,
    /// 406: another session holds the connection.
    ConnectionLimit,
    /// HTTP 429 at the handshake.
    RateLimited,
}

impl Failure {
    pub const ALL: [Failure; 4] = [
        Failure::Transient,
        Failure::Fatal,
        Failure::ConnectionLimit,
        Failure::RateLimited,
    ];

    /// Its name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Transient => "transient",
            Failure::Fatal => "fatal",
            Failure::ConnectionLimit => "connection_limit",
            Failure::RateLimited => "rate_limited",
        }
    }

    /// The class of an Alpaca stream error code.
    pub fn from_alpaca_code(code: u16) -> Failure {
        match code {
            402 | 409 | 410 | 411 => Failure::Fatal,
            406 => Failure::ConnectionLimit,
            _ => Failure::Transient,
        }
    }

    /// The class of an HTTP status refusing the WebSocket upgrade.
    pub fn from_handshake_status(status: u16) -> Failure {
        match status {
            429 => Failure::RateLimited,
            400..=499 => Failure::Fatal,
            _ => Failure::Transient,
        }
    }
}

/// The circuit breaker's state, as status endpoints and `alpaca_status` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Normal: attempts follow the backoff.
    Closed,
    /// Too many consecutive failures: waiting out the cool-down.
    Open,
    /// One trial attempt after the cool-down.
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// The hold-offs and breaker settings of a connection.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    pub fatal_hold_off: Duration,
    pub connection_limit_hold_off: Duration,
    pub rate_limit_hold_off: Duration,
    /// Consecutive failures that open the circuit (0 disables the breaker).
    pub circuit_threshold: u32,
    pub circuit_cooldown: Duration,
}

/// The retry policy of one connection.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    config: PolicyConfig,
    backoff: Backoff,
    /// Failures since the last successful (ready) connection.
    consecutive_failures: u32,
    circuit: CircuitState,
    /// When the circuit last opened.
    opened_at: Option<Instant>,
}

impl ReconnectPolicy {
    pub fn new(config: PolicyConfig, backoff: Backoff) -> Self {
        ReconnectPolicy {
            config,
            backoff,
            consecutive_failures: 0,
            circuit: CircuitState::Closed,
            opened_at: None,
        }
    }

    pub fn circuit(&self) -> CircuitState {
        self.circuit
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// A connection attempt or an established connection failed.
    pub fn on_failure(&mut self, failure: Failure, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match failure {
            Failure::Transient => {}
            Failure::Fatal => self.backoff.hold_off(self.config.fatal_hold_off),
            Failure::ConnectionLimit => {
                self.backoff.hold_off(self.config.connection_limit_hold_off)
            }
            Failure::RateLimited => self.backoff.hold_off(self.config.rate_limit_hold_off),
        }
        let threshold = self.config.circuit_threshold;
        let trips = threshold > 0 && self.consecutive_failures >= threshold;
        if self.circuit == CircuitState::HalfOpen || (trips && self.circuit == CircuitState::Closed)
        {
            self.circuit = CircuitState::Open;
            self.opened_at = Some(now);
        }
    }

    /// How long to wait before the next attempt (at least the backoff; while the circuit is open,
    /// at least the rest of its cool-down).
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        let backoff = self.backoff.next_delay();
        match (self.circuit, self.opened_at) {
            (CircuitState::Open, Some(opened)) => {
                let remaining =
                    (opened + self.config.circuit_cooldown).saturating_duration_since(now);
                backoff.max(remaining)
            }
            _ => backoff,
        }
    }

    /// The next attempt starts now: an open circuit becomes half-open (one trial).
    pub fn begin_attempt(&mut self) {
        if self.circuit == CircuitState::Open {
            self.circuit = CircuitState::HalfOpen;
        }
    }

    /// The connection is authenticated and subscribed: the circuit closes.
    pub fn on_ready(&mut self) {
        self.circuit = CircuitState::Closed;
        self.opened_at = None;
        self.consecutive_failures = 0;
    }

    /// How long a connection must stay up before [`ReconnectPolicy::on_stable`].
    pub fn stable_after(&self) -> Duration {
        self.backoff.reset_after()
    }

    /// The connection stayed up: the backoff starts over.
    pub fn on_stable(&mut self) {
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::vocab::backoff::BackoffSettings;

    fn policy(threshold: u32) -> ReconnectPolicy {
        let backoff = Backoff::new(
            BackoffSettings {
                initial_ms: 100,
                factor: 2.0,
                max_ms: 1_000,
                jitter: 0.0,
                reset_after_ms: 5_000,
            },
            SplitMix64::new(1),
        );
        ReconnectPolicy::new(
            PolicyConfig {
                fatal_hold_off: Duration::from_secs(600),
                connection_limit_hold_off: Duration::from_secs(90),
                rate_limit_hold_off: Duration::from_secs(60),
                circuit_threshold: threshold,
                circuit_cooldown: Duration::from_secs(30),
            },
            backoff,
        )
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn error_codes_map_to_failure_classes() {
        for code in [402, 409, 410, 411] {
            assert_eq!(Failure::from_alpaca_code(code), Failure::Fatal, "{code}");
        }
        assert_eq!(Failure::from_alpaca_code(406), Failure::ConnectionLimit);
        for code in [400, 401, 403, 404, 405, 407, 500] {
            assert_eq!(
                Failure::from_alpaca_code(code),
                Failure::Transient,
                "{code}"
            );
        }
        assert_eq!(Failure::from_handshake_status(429), Failure::RateLimited);
        assert_eq!(Failure::from_handshake_status(404), Failure::Fatal);
        assert_eq!(Failure::from_handshake_status(503), Failure::Transient);
    }

    #[test]
    fn hold_offs_raise_the_next_delay() {
        let now = Instant::now();
        let mut p = policy(0);
        p.on_failure(Failure::ConnectionLimit, now);
        assert_eq!(p.next_delay(now), Duration::from_secs(90));
        p.on_failure(Failure::Transient, now);
        assert_eq!(p.next_delay(now), 200 * MS);
        p.on_failure(Failure::Fatal, now);
        assert_eq!(p.next_delay(now), Duration::from_secs(600));
        p.on_failure(Failure::RateLimited, now);
        assert_eq!(p.next_delay(now), Duration::from_secs(60));
    }

    #[test]
    fn circuit_opens_after_the_threshold_half_opens_after_the_cooldown_and_closes_on_success() {
        let t0 = Instant::now();
        let mut p = policy(3);
        p.on_failure(Failure::Transient, t0);
        p.on_failure(Failure::Transient, t0);
        assert_eq!(p.circuit(), CircuitState::Closed);
        p.on_failure(Failure::Transient, t0);
        assert_eq!(p.circuit(), CircuitState::Open);
        assert_eq!(
            p.next_delay(t0),
            Duration::from_secs(30),
            "the cool-down, not the backoff"
        );
        p.begin_attempt();
        assert_eq!(p.circuit(), CircuitState::HalfOpen);
        // The trial fails: open again for a full cool-down.
        let t1 = t0 + Duration::from_secs(31);
        p.on_failure(Failure::Transient, t1);
        assert_eq!(p.circuit(), CircuitState::Open);
        assert_eq!(p.next_delay(t1), Duration::from_secs(30));
        p.begin_attempt();
        p.on_ready();
        assert_eq!(p.circuit(), CircuitState::Closed);
        assert_eq!(p.consecutive_failures(), 0);
    }

    #[test]
    fn a_zero_threshold_disables_the_breaker() {
        let now = Instant::now();
        let mut p = policy(0);
        for _ in 0..100 {
            p.on_failure(Failure::Transient, now);
        }
        assert_eq!(p.circuit(), CircuitState::Closed);
    }
}
