//! The peer core: what every session actor — a browser on `/ws`, an SDK program on a market-data
//! path or on `/stream` — holds of its connection, whatever protocol it speaks.
//!
//! Owns: the session's id, its hub handle, its outbox (shared with the hub and the writer task),
//! its stats, the reassembly of fragmented messages, the inbound message rate limit and the
//! invalid-message count. [`Peer::receive`] turns each item of the socket's frame stream into an
//! [`Input`]: a whole message for the protocol to read, or what the core already did (pong,
//! close) or decided (over the rate, close with a code). The sessions keep only their protocol.
//!
//! Inbound limits, one place for every kind of peer: the socket layer refuses oversize and
//! stalled frames before buffering them ([`super::socket`]); here, whole messages beyond
//! `max_messages_per_second` (bursts up to the same number) are not read, and a peer whose
//! invalid messages reach `max_invalid_messages` within a minute is closed with 1008.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use actix_http::ws::Frame;
use bytes::Bytes;
use log::debug;

use super::delivery::{SessionCommand, SessionId, SessionStats, Subscriber};
use super::hub::LocalHub;
use super::outbox::Outbox;
use super::socket::ReadError;
use crate::vocab::{FragmentError, Reassembler};

/// The window over which invalid messages are counted.
const INVALID_WINDOW: Duration = Duration::from_secs(60);

/// The socket writer is gone: the peer disconnected or stopped taking data for good.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct ConnectionLost;

/// A session's inbound limits.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    /// Largest message, whole or reassembled from fragments.
    pub max_message_bytes: usize,
    /// Messages read per second (bursts up to the same number).
    pub max_messages_per_second: u32,
    /// Invalid messages within a minute that close the connection with 1008.
    pub max_invalid_messages: u32,
}

/// What the peer sent, as the session's protocol sees it.
#[derive(Debug, PartialEq)]
pub enum Input {
    /// A whole message to read.
    Message { binary: bool, data: Bytes },
    /// A message over the rate limit: not read (the protocol may say so).
    RateLimited,
    /// A message that breaks the framing rules (an orphan continuation): already counted as
    /// invalid; the protocol answers it with its own error.
    Invalid(&'static str),
    /// Nothing for the protocol: a ping answered, a pong, a fragment kept for later.
    Handled,
    /// The connection must close with this code and reason (the peer's close, an oversize or
    /// stalled message, a protocol error, too many invalid messages).
    Close(u16, &'static str),
}

/// A token bucket.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(per_second: u32) -> Self {
        RateLimit {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            last: Instant::now(),
        }
    }

    /// Takes a token if one is left.
    pub fn allow(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Invalid messages counted over a sliding minute (a leaky bucket: each drains in
/// `INVALID_WINDOW / max`).
#[derive(Debug)]
pub struct Strikes {
    max: u32,
    level: f64,
    last: Instant,
}

impl Strikes {
    pub fn new(max: u32) -> Self {
        Strikes {
            max: max.max(1),
            level: 0.0,
            last: Instant::now(),
        }
    }

    /// Counts one invalid message; `true` when the peer has reached the limit.
    pub fn strike(&mut self, now: Instant) -> bool {
        let drained = now.duration_since(self.last).as_secs_f64() / INVALID_WINDOW.as_secs_f64()
            * f64::from(self.max);
        self.level = (self.level - drained).max(0.0) + 1.0;
        self.last = now;
        self.level >= f64::from(self.max)
    }
}

/// The connection half of a session.
pub struct Peer {
    pub id: SessionId,
    pub hub: LocalHub,
    pub outbox: Rc<RefCell<Outbox>>,
    pub stats: Arc<SessionStats>,
    fragments: Reassembler,
    rate: RateLimit,
    strikes: Strikes,
}

impl Peer {
    pub fn new(
        id: SessionId,
        hub: LocalHub,
        outbox: Rc<RefCell<Outbox>>,
        stats: Arc<SessionStats>,
        limits: InputLimits,
    ) -> Self {
        Peer {
            id,
            hub,
            outbox,
            stats,
            fragments: Reassembler::new(limits.max_message_bytes),
            rate: RateLimit::new(limits.max_messages_per_second),
            strikes: Strikes::new(limits.max_invalid_messages),
        }
    }

    /// Reads one item of the socket's frame stream.
    pub fn receive(&mut self, item: Result<Frame, ReadError>) -> Input {
        if self.outbox.borrow().is_closed() {
            // Closing (the budget ran out, or a close is on its way): what still arrives is read
            // and dropped until the writer has sent the close, so the socket is not torn down
            // with unread input (which would reset it and lose the close frame). The writer's
            // end, the hub's clocks or the kernel's TCP timeout end the session.
            return Input::Handled;
        }
        self.outbox.borrow().last_heard.set(Instant::now());
        match item {
            Ok(Frame::Text(data)) => self.message(false, data),
            Ok(Frame::Binary(data)) => self.message(true, data),
            Ok(Frame::Continuation(item)) => match self.fragments.push(item) {
                Ok(None) => Input::Handled,
                Ok(Some((binary, data))) => self.message(binary, data),
                Err(FragmentError::TooLarge(_)) => Input::Close(1009, "message too large"),
                Err(FragmentError::Orphan) => {
                    self.invalid("continuation frame without a first fragment")
                }
            },
            Ok(Frame::Ping(payload)) => {
                // Pings share the message budget; one over it is not answered.
                if self.rate.allow(Instant::now()) {
                    self.outbox.borrow_mut().push_pong(payload);
                }
                Input::Handled
            }
            Ok(Frame::Pong(_)) => Input::Handled,
            Ok(Frame::Close(reason)) => {
                debug!("session {}: the peer closed ({reason:?})", self.id);
                Input::Close(reason.map_or(1000, |r| u16::from(r.code)), "")
            }
            Err(e) => {
                debug!("session {} ({}): {e}", self.id, self.stats.peer);
                let (code, reason) = e.close();
                Input::Close(code, reason)
            }
        }
    }

    fn message(&mut self, binary: bool, data: Bytes) -> Input {
        if self.rate.allow(Instant::now()) {
            Input::Message { binary, data }
        } else {
            Input::RateLimited
        }
    }

    fn invalid(&mut self, what: &'static str) -> Input {
        if self.strikes.strike(Instant::now()) {
            Input::Close(1008, "too many invalid messages")
        } else {
            Input::Invalid(what)
        }
    }

    /// Counts an invalid message the protocol found; `true` when the peer must be closed
    /// (with [`Peer::close_for_invalid`]).
    pub fn strike(&mut self) -> bool {
        self.strikes.strike(Instant::now())
    }

    /// Closes a peer that sent too many invalid messages.
    pub fn close_for_invalid(&self) {
        debug!(
            "session {} ({}): too many invalid messages; closing with 1008",
            self.id, self.stats.peer
        );
        self.close(1008, "too many invalid messages");
    }

    /// Queues the close frame (only the first close counts: the outbox accepts nothing after
    /// one, nor once the connection is gone).
    pub fn close(&self, code: u16, reason: &str) {
        self.outbox.borrow_mut().close(code, reason);
    }

    /// Registers the session with its hub (heartbeat, slow-client clock, commands) and answers
    /// what the registry needs to reach it.
    pub fn attach(&self, commands: Recipient<SessionCommand>) -> Subscriber {
        self.hub
            .register(self.id, self.outbox.clone(), commands.clone());
        Subscriber {
            hub: self.hub.id(),
            publish: self.hub.publisher(),
            commands,
            stats: self.stats.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_allows_a_burst_then_refills() {
        let mut r = RateLimit::new(5);
        let t = Instant::now();
        assert_eq!((0..10).filter(|_| r.allow(t)).count(), 5);
        assert!(r.allow(t + Duration::from_millis(250)));
    }

    #[test]
    fn invalid_messages_close_at_the_limit_and_drain_over_a_minute() {
        let t = Instant::now();
        let mut s = Strikes::new(5);
        assert!(!(0..4).any(|_| s.strike(t)));
        assert!(s.strike(t), "the fifth within a minute closes");

        let mut slow = Strikes::new(5);
        // One every 12 s drains as fast as it fills: never closed.
        for i in 0..20 {
            assert!(!slow.strike(t + Duration::from_secs(12 * i)));
        }
    }
}
