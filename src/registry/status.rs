//! What the status endpoints see of the registry, and how readiness is put into words.

use std::collections::BTreeMap;

use serde::Serialize;

use super::PinOwner;
use crate::downstream::delivery::SessionSnapshot;
use crate::symbol::Symbol;
use crate::upstream::policy::CircuitState;
use crate::upstream::{FeedCountersSnapshot, FeedState, FeedStatus};
use crate::vocab::FeedKind;

/// One feed in [`RegistryStatus`].
#[derive(Clone, Debug, Serialize)]
pub struct FeedReport {
    #[serde(flatten)]
    pub status: FeedStatus,
    #[serde(flatten)]
    pub counters: FeedCountersSnapshot,
}

/// One symbol in [`RegistryStatus`].
#[derive(Clone, Debug, Serialize)]
pub struct SymbolReport {
    pub symbol: Symbol,
    pub feed: FeedKind,
    pub sessions: usize,
    pub pinned: bool,
    pub pinned_by: Vec<PinOwner>,
    /// In its grace period: no subscribers left, not yet released upstream.
    pub releasing: bool,
}

/// Every session summed up.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SessionSummary {
    pub count: usize,
    /// Browsers on `/ws` (the rest are SDK programs and a primary's relay to its edges).
    pub browsers: usize,
    pub sdk_programs: usize,
    /// Sessions whose socket is not keeping up right now.
    pub behind: usize,
    pub dropped_updates: u64,
}

/// What every session ever sent and lost, the ones gone included (monotonic: for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryTotals {
    pub frames_sent: u64,
    pub updates_sent: u64,
    /// Updates replaced by newer ones before they could be sent.
    pub updates_conflated: u64,
    /// Droppable events (news, bars) dropped for a client that was behind.
    pub updates_dropped: u64,
    /// Sessions closed for not keeping up (4008, 407).
    pub slow_client_disconnects: u64,
}

impl DeliveryTotals {
    /// Adds one session's counters.
    pub fn add(&mut self, s: &crate::downstream::delivery::SessionStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let conflated = s.conflated.load(Relaxed);
        self.frames_sent += s.frames_sent.load(Relaxed);
        self.updates_sent += s.updates_sent.load(Relaxed);
        self.updates_conflated += conflated;
        self.updates_dropped += s.dropped.load(Relaxed).saturating_sub(conflated);
        self.slow_client_disconnects += u64::from(s.slow_closed.load(Relaxed));
    }
}

/// Everything the status endpoints show.
#[derive(Clone, Debug, Serialize)]
pub struct RegistryStatus {
    pub feeds: Vec<FeedReport>,
    pub symbols: Vec<SymbolReport>,
    /// The page of sessions asked for, in full.
    pub sessions: Vec<SessionSnapshot>,
    pub session_summary: SessionSummary,
    pub throttles: usize,
    pub pinned: Vec<Symbol>,
    pub cached_quotes: usize,
    /// News subscriptions: symbol (or `*`) → sessions.
    pub news: BTreeMap<String, usize>,
    /// Sessions following account events.
    pub positions_subscribers: usize,
    /// Frames a worker hub's full mailbox refused.
    pub hub_mailbox_drops: u64,
    /// Over every session since start.
    pub delivery: DeliveryTotals,
}

impl RegistryStatus {
    /// Every enabled feed and account stream authenticated and subscribed.
    pub fn ready(&self) -> bool {
        !self.feeds.is_empty()
            && self
                .feeds
                .iter()
                .all(|f| f.status.state == FeedState::Connected)
    }

    /// Why the daemon is not ready, one sentence per feed.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        if self.feeds.is_empty() {
            return vec!["no feed is running".into()];
        }
        self.feeds
            .iter()
            .filter(|f| f.status.state != FeedState::Connected)
            .map(|f| not_ready_reason(&f.status))
            .collect()
    }
}

/// Why one feed is not ready, as an operator reads it.
pub fn not_ready_reason(s: &FeedStatus) -> String {
    if s.state == FeedState::Standby {
        return format!("feed {}: standby (another primary holds the lease)", s.feed);
    }
    let mut reason = format!("feed {}: {}", s.feed, s.state.browser_status());
    if s.consecutive_failures > 0 {
        reason.push_str(&format!(
            " ({} consecutive failures)",
            s.consecutive_failures
        ));
    }
    if s.circuit_state != CircuitState::Closed {
        reason.push_str(&format!("; circuit {}", s.circuit_state.as_str()));
    }
    if let Some(e) = &s.last_error {
        reason.push_str(&format!("; last error: {e}"));
    }
    if let Some(ms) = s.next_retry_ms {
        reason.push_str(&format!("; next attempt in {ms} ms"));
    }
    reason
}
