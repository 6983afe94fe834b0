//! The slow-client policy of a session, as plain state the session actor consults.
//!
//! While the socket keeps up (unsent bytes at or below the limit) updates are written through.
//! Past the limit the session holds updates instead, keeping only the newest per key (symbol and
//! frame kind) and counting every one it replaces. Held updates go out, oldest key first, once the
//! unsent bytes fall to half the limit. A client that stays behind longer than the slow-client
//! timeout is to be closed (the session sends 4008).
//!
//! Memory is bounded by the limit plus one frame per key, and the number of keys is bounded by the
//! number of symbols a client may subscribe to.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::DeliverKey;

/// Held updates and the behind-since clock.
#[derive(Debug)]
pub struct Backlog {
    /// Unsent bytes past which updates are held.
    limit: usize,
    /// Most updates held at once.
    max_held: usize,
    /// Newest held frame per key.
    held: HashMap<DeliverKey, ByteString>,
    /// Keys in the order they were first held.
    order: VecDeque<DeliverKey>,
    /// Updates replaced by a newer one before they could be sent.
    dropped: u64,
    /// When the client first fell behind; `None` while it keeps up.
    behind_since: Option<Instant>,
}

impl Backlog {
    pub fn new(limit: usize, max_held: usize) -> Self {
        Backlog {
            limit,
            max_held: max_held.max(1),
            held: HashMap::new(),
            order: VecDeque::new(),
            dropped: 0,
            behind_since: None,
        }
    }

    /// An update arrived while `unsent` bytes wait for the socket. Returns the frame when it should
    /// be written now; otherwise it is held (replacing an older one for the same key).
    pub fn offer(
        &mut self,
        key: DeliverKey,
        frame: ByteString,
        unsent: usize,
        now: Instant,
    ) -> Option<ByteString> {
        if self.held.is_empty() && unsent <= self.limit {
            return Some(frame);
        }
        self.behind_since.get_or_insert(now);
        match self.held.insert(key.clone(), frame) {
            Some(_) => self.dropped += 1,
            None => {
                self.order.push_back(key);
                while self.held.len() > self.max_held {
                    if let Some(oldest) = self.order.pop_front() {
                        self.held.remove(&oldest);
                        self.dropped += 1;
                    }
                }
            }
        }
        None
    }

    /// Periodic check: returns the held frames to write once the socket has drained to half the
    /// limit, and keeps the behind-since clock current.
    pub fn drain(&mut self, unsent: usize, now: Instant) -> Vec<ByteString> {
        if unsent > self.limit {
            self.behind_since.get_or_insert(now);
            return Vec::new();
        }
        if self.held.is_empty() {
            self.behind_since = None;
            return Vec::new();
        }
        if unsent > self.limit / 2 {
            return Vec::new();
        }
        self.behind_since = None;
        let mut out = Vec::with_capacity(self.order.len());
        while let Some(key) = self.order.pop_front() {
            if let Some(frame) = self.held.remove(&key) {
                out.push(frame);
            }
        }
        out
    }

    /// Forgets held updates for keys the client no longer wants.
    pub fn forget(&mut self, mut unwanted: impl FnMut(&DeliverKey) -> bool) {
        self.held.retain(|k, _| !unwanted(k));
        self.order.retain(|k| !unwanted(k));
    }

    /// Whether the client has been behind for longer than `timeout`.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.behind_since
            .is_some_and(|since| now.duration_since(since) > timeout)
    }

    pub fn is_behind(&self) -> bool {
        self.behind_since.is_some()
    }

    /// Updates replaced before they could be sent.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn held_len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::FrameKind;
    use crate::symbol::Symbol;

    fn key(s: &str) -> DeliverKey {
        DeliverKey {
            symbol: Symbol::parse(s).unwrap(),
            kind: FrameKind::Price,
        }
    }

    fn frame(s: &str) -> ByteString {
        ByteString::from(s.to_owned())
    }

    #[test]
    fn writes_through_while_the_socket_keeps_up() {
        let now = Instant::now();
        let mut b = Backlog::new(1000, 100);
        assert_eq!(
            b.offer(key("AAPL"), frame("a1"), 1000, now),
            Some(frame("a1"))
        );
        assert!(!b.is_behind());
    }

    #[test]
    fn past_the_limit_keeps_only_the_newest_per_key_and_counts_drops() {
        let now = Instant::now();
        let mut b = Backlog::new(1000, 100);
        assert_eq!(b.offer(key("AAPL"), frame("a1"), 1001, now), None);
        assert_eq!(b.offer(key("MSFT"), frame("m1"), 1001, now), None);
        assert_eq!(b.offer(key("AAPL"), frame("a2"), 1001, now), None);
        assert_eq!(
            b.offer(key("AAPL"), frame("a3"), 10, now),
            None,
            "held ones go first"
        );
        assert_eq!(b.dropped(), 2);
        assert_eq!(b.held_len(), 2);
        assert!(b.is_behind());
        // Not drained while above half the limit.
        assert!(b.drain(600, now).is_empty());
        assert_eq!(b.drain(500, now), vec![frame("a3"), frame("m1")]);
        assert!(!b.is_behind());
        assert_eq!(b.held_len(), 0);
    }

    #[test]
    fn overdue_after_the_timeout_only_while_behind() {
        let t0 = Instant::now();
        let mut b = Backlog::new(100, 100);
        let timeout = Duration::from_secs(5);
        b.offer(key("AAPL"), frame("a"), 200, t0);
        assert!(!b.overdue(t0 + Duration::from_secs(4), timeout));
        assert!(b.drain(200, t0 + Duration::from_secs(4)).is_empty());
        assert!(b.overdue(t0 + Duration::from_secs(6), timeout));
        b.drain(0, t0 + Duration::from_secs(6));
        assert!(!b.overdue(t0 + Duration::from_secs(60), timeout));
    }

    #[test]
    fn behind_without_held_updates_still_counts() {
        let t0 = Instant::now();
        let mut b = Backlog::new(100, 100);
        b.drain(500, t0);
        assert!(b.is_behind());
        b.drain(50, t0);
        assert!(!b.is_behind());
    }

    #[test]
    fn unique_keys_are_bounded_by_max_held_dropping_the_oldest() {
        let now = Instant::now();
        let mut b = Backlog::new(10, 3);
        for id in 0..5 {
            let k = DeliverKey {
                symbol: Symbol::wildcard(),
                kind: FrameKind::News(id),
            };
            b.offer(k, frame(&format!("n{id}")), 100, now);
        }
        assert_eq!(b.held_len(), 3);
        assert_eq!(b.dropped(), 2);
        assert_eq!(b.drain(0, now), vec![frame("n2"), frame("n3"), frame("n4")]);
    }

    #[test]
    fn forgetting_a_symbol_drops_its_held_frames() {
        let now = Instant::now();
        let mut b = Backlog::new(10, 100);
        b.offer(key("AAPL"), frame("a"), 100, now);
        b.offer(key("MSFT"), frame("m"), 100, now);
        b.forget(|k| k.symbol.as_str() == "AAPL");
        assert_eq!(b.drain(0, now), vec![frame("m")]);
    }
}
