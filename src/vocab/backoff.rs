//! The reconnect schedule: exponential backoff with jitter, reset after a stable connection.
//!
//! Plain state, no timers: the feed actor asks for the next delay before each reconnect and reports
//! when a connection has proven itself. Even the first reconnect waits the initial delay: Alpaca
//! keeps a dropped session alive for a while, and an instant retry risks 406. Hold-offs demanded by
//! the upstream (for example "wait at least 90 s after 406") raise the next delay without
//! disturbing the schedule.

use std::time::Duration;

use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// Exponential reconnect backoff with jitter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSettings {
    /// Delay before the first reconnect attempt.
    pub initial_ms: u64,
    /// Multiplier per further failed attempt.
    pub factor: f64,
    /// Upper bound of the delay.
    pub max_ms: u64,
    /// Random spread as a fraction of the delay (0.2 = ±20 %).
    pub jitter: f64,
    /// A connection that stays up this long once ready resets the backoff to `initial_ms`. Short
    /// enough that an upstream dropping every half minute is reconnected at once each time; a
    /// connection that dies sooner keeps backing off.
    pub reset_after_ms: u64,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self {
            initial_ms: 500,
            factor: 2.0,
            max_ms: 60_000,
            jitter: 0.2,
            reset_after_ms: 10_000,
        }
    }
}

/// Reconnect delays for one feed.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Initial delay, growth factor, cap, jitter, reset threshold.
    settings: BackoffSettings,
    /// Reconnects since the last reset.
    attempt: u32,
    /// A minimum for the next delay, set by the upstream's error semantics.
    hold_off: Option<Duration>,
    /// Jitter source.
    rng: SplitMix64,
}

impl Backoff {
    pub fn new(settings: BackoffSettings, rng: SplitMix64) -> Self {
        Self {
            settings,
            attempt: 0,
            hold_off: None,
            rng,
        }
    }

    /// Consecutive failures since the last stable connection.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next reconnect, advancing the schedule:
    /// `initial × factor^n`, capped at the maximum, spread by the jitter fraction.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .settings
            .factor
            .powi(i32::try_from(self.attempt).unwrap_or(i32::MAX));
        let ms = (self.settings.initial_ms as f64 * exp).min(self.settings.max_ms as f64);
        let spread = self.settings.jitter * ms;
        let base =
            Duration::from_millis(self.rng.range_f64(ms - spread, ms + spread).max(0.0) as u64);
        self.attempt = self.attempt.saturating_add(1);
        match self.hold_off.take() {
            Some(min) => base.max(min),
            None => base,
        }
    }

    /// Makes the next delay at least `min` (Alpaca's 406, HTTP 429, fatal errors).
    pub fn hold_off(&mut self, min: Duration) {
        self.hold_off = Some(self.hold_off.map_or(min, |h| h.max(min)));
    }

    /// How long a connection must stay up before [`Backoff::reset`] applies.
    pub fn reset_after(&self) -> Duration {
        Duration::from_millis(self.settings.reset_after_ms)
    }

    /// The connection has been stable: start the schedule over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(jitter: f64) -> BackoffSettings {
        BackoffSettings {
            initial_ms: 100,
            factor: 2.0,
            max_ms: 1000,
            jitter,
            reset_after_ms: 5000,
        }
    }

    #[test]
    fn grows_exponentially_to_the_cap_then_resets() {
        let mut b = Backoff::new(settings(0.0), SplitMix64::new(1));
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.attempt(), 6);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let mut b = Backoff::new(settings(0.2), SplitMix64::new(9));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            b.attempt = 0;
            let d = b.next_delay().as_millis() as u64;
            assert!((80..=120).contains(&d), "{d}");
            seen.insert(d);
        }
        assert!(seen.len() > 10, "jitter should spread delays: {seen:?}");
    }

    #[test]
    fn hold_off_raises_only_the_next_delay() {
        let mut b = Backoff::new(settings(0.0), SplitMix64::new(1));
        b.hold_off(Duration::from_secs(90));
        assert_eq!(b.next_delay(), Duration::from_secs(90));
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }
}
