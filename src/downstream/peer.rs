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
//! stalled frames before buffering them ([`super::socket`]); here:
//! - whole messages beyond `max_messages_per_second` (bursts up to the same number) are not read;
//! - frames that are not a whole message (pings, pongs, fragments) beyond [`FRAMES_PER_MESSAGE`]
//!   times that, and at least [`MIN_FRAMES_PER_SECOND`], are not read and count as invalid;
//! - a peer whose invalid messages reach `max_invalid_messages` within a minute is closed with
//!   1008.
//!
//! Closing: the session queues its close frame and keeps reading — and dropping — what arrives
//! until the writer has sent the close, then [`LINGER`] more or
//! until the peer closes its side, so the socket is not torn down under unread input (which
//! would reset it and lose the close). [`CLOSING_LIMIT`] bounds it all: a peer that never reads
//! holds the writer until the kernel's TCP timeout, and the session no longer than this.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Recipient};
use actix_http::ws::{Frame, Item};
use bytes::Bytes;
use log::debug;

use super::delivery::{SessionCommand, SessionId, SessionStats, Subscriber};
use super::hub::LocalHub;
use super::outbox::{Outbox, CLOSE_SLOW_CLIENT};
use super::socket::reader::LINGER;
use super::socket::ReadError;
use crate::vocab::{FragmentError, Reassembler};

/// The window over which invalid messages are counted.
const INVALID_WINDOW: Duration = Duration::from_secs(60);
/// Frames that are not a whole message a peer may send per message of its message rate: room
/// for fragmented messages and pings, not for floods of empty frames.
pub const FRAMES_PER_MESSAGE: u32 = 10;
/// ... and at least this many a second, whatever the message rate.
pub const MIN_FRAMES_PER_SECOND: u32 = 1000;
/// The longest a closing session lives, whatever the peer does.
pub const CLOSING_LIMIT: Duration = Duration::from_secs(30);
/// Refused credentials one connection may send, on any path, before it is closed.
pub const MAX_REFUSED_CREDENTIALS: u32 = 3;
/// The close for a peer past [`MAX_REFUSED_CREDENTIALS`].
pub const TOO_MANY_REFUSED: (u16, &str) = (1008, "too many refused credentials");
/// The upstream connection the program's data comes from was lost: "service restart", which
/// every Alpaca SDK answers by reconnecting (and re-subscribing).
pub const UPSTREAM_LOST: (u16, &str) = (1012, "upstream connection lost; reconnect");
/// The close for a peer past `max_invalid_messages`.
pub const TOO_MANY_INVALID: (u16, &str) = (1008, "too many invalid messages");

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
    /// Nothing for the protocol: a ping answered, a pong, a fragment kept for later, input
    /// after the close.
    Handled,
    /// The peer closed with this code: echo it.
    PeerClosed(u16),
    /// The connection must close with this code and reason (an oversize or stalled message, a
    /// protocol error, too many invalid messages, a budget that ran out).
    Close(u16, &'static str),
    /// The peer kept sending after its close: stop now, without waiting for the close to go out.
    Abort,
}

/// A frame's payload bytes.
fn frame_len(frame: &Frame) -> usize {
    match frame {
        Frame::Text(b) | Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b) => b.len(),
        Frame::Continuation(Item::FirstText(b) | Item::FirstBinary(b))
        | Frame::Continuation(Item::Continue(b) | Item::Last(b)) => b.len(),
        Frame::Close(_) => 0,
    }
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
        // Half a strike of slack: the drain since the first one must not make `max` strikes in
        // quick succession count as `max - 0.0001`.
        self.level >= f64::from(self.max) - 0.5
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
    /// Frames of any kind.
    frames: RateLimit,
    strikes: Strikes,
    /// Credentials refused so far on this connection.
    refused_credentials: u32,
    /// The close is queued: the session is lingering until the peer closes or time is up.
    closing: bool,
    /// The session has left its hub and the registry (at its close, or when it stopped).
    detached: bool,
    /// Bytes read and dropped since the close, and how many may be before the session gives
    /// up lingering.
    discarded: usize,
    max_discarded: usize,
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
            frames: RateLimit::new(
                limits
                    .max_messages_per_second
                    .saturating_mul(FRAMES_PER_MESSAGE)
                    .max(MIN_FRAMES_PER_SECOND),
            ),
            strikes: Strikes::new(limits.max_invalid_messages),
            refused_credentials: 0,
            closing: false,
            detached: false,
            discarded: 0,
            max_discarded: limits.max_message_bytes.saturating_mul(4).max(1 << 20),
        }
    }

    /// Where this connection's credentials come from, for the per-address delays and the log.
    pub fn attempt(&self) -> crate::auth::Attempt<'static> {
        crate::auth::Attempt {
            from: self.stats.ip,
            via: self.stats.kind,
        }
    }

    /// Reads one item of the socket's frame stream.
    pub fn receive(&mut self, item: Result<Frame, ReadError>) -> Input {
        if self.closing {
            // What still arrives after the close is read and dropped, up to a limit: a peer that
            // keeps sending after it has been closed and does not read is let go at once.
            self.discarded += item.as_ref().map_or(0, frame_len);
            if self.discarded > self.max_discarded {
                return Input::Abort;
            }
            return Input::Handled;
        }
        if self.outbox.borrow().is_closed() {
            // The outbox gave up on the peer (its budget ran out): the session closes.
            return Input::Close(CLOSE_SLOW_CLIENT, "slow client");
        }
        let now = Instant::now();
        self.outbox.borrow().last_heard.set(now);
        // Frames that are not a whole message (pings, pongs, fragments before the last) are
        // not covered by the message rate: they have a budget of their own.
        let partial = match &item {
            Ok(Frame::Ping(_) | Frame::Pong(_)) => true,
            Ok(Frame::Continuation(item)) => !matches!(item, Item::Last(_)),
            _ => false,
        };
        if partial && !self.frames.allow(now) {
            return self.invalid("more frames per second than allowed");
        }
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
                self.outbox.borrow_mut().push_pong(payload);
                Input::Handled
            }
            Ok(Frame::Pong(_)) => Input::Handled,
            Ok(Frame::Close(reason)) => {
                debug!("session {}: the peer closed ({reason:?})", self.id);
                Input::PeerClosed(reason.map_or(1000, |r| u16::from(r.code)))
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
        if self.strike() {
            Input::Close(TOO_MANY_INVALID.0, TOO_MANY_INVALID.1)
        } else {
            Input::Invalid(what)
        }
    }

    /// Counts an invalid message the protocol found; `true` when the peer must be closed with
    /// 1008 ([`TOO_MANY_INVALID`]).
    pub fn strike(&mut self) -> bool {
        let over = self.strikes.strike(Instant::now());
        if over {
            debug!(
                "session {} ({}): too many invalid messages; closing with 1008",
                self.id, self.stats.peer
            );
        }
        over
    }

    /// Counts refused credentials; answers how many so far and whether the connection must be
    /// closed ([`TOO_MANY_REFUSED`]): no connection guesses without limit, on any path.
    pub fn refused_credentials(&mut self) -> (u32, bool) {
        self.refused_credentials += 1;
        (
            self.refused_credentials,
            self.refused_credentials >= MAX_REFUSED_CREDENTIALS,
        )
    }

    /// Queues the close frame (only the first close counts: the outbox accepts nothing after
    /// one, nor once the connection is gone). `true` the first time: the session then stops
    /// [`LINGER`] after its writer is done, when the peer closes, or at [`CLOSING_LIMIT`].
    pub fn close(&mut self, code: u16, reason: &str) -> bool {
        self.outbox.borrow_mut().close(code, reason);
        !std::mem::replace(&mut self.closing, true)
    }

    /// `true` the first time: the session then leaves its hub and the registry (it is over for
    /// everyone but its socket).
    pub fn detach(&mut self) -> bool {
        !std::mem::replace(&mut self.detached, true)
    }

    /// Closes the session of `ctx`: queues the close and schedules the session's stop at
    /// [`CLOSING_LIMIT`]. `true` the first time: the session then leaves its hub and the
    /// registry (what it registered with differs by kind).
    pub fn close_session<A>(&mut self, ctx: &mut actix::Context<A>, code: u16, reason: &str) -> bool
    where
        A: Actor<Context = actix::Context<A>>,
    {
        let first = self.close(code, reason);
        if first {
            ctx.run_later(CLOSING_LIMIT, |_, ctx| ctx.stop());
        }
        first
    }

    /// The writer is done. A closing session's close has gone out: it waits [`LINGER`] more
    /// for the peer's side; any other session has lost its peer and stops.
    pub fn connection_lost<A>(&self, ctx: &mut actix::Context<A>)
    where
        A: Actor<Context = actix::Context<A>>,
    {
        if self.closing {
            ctx.run_later(LINGER, |_, ctx| ctx.stop());
        } else {
            ctx.stop();
        }
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

    fn peer(limits: InputLimits) -> Peer {
        use crate::downstream::hub::HubConfig;
        use crate::downstream::outbox::OutboxLimits;
        let config = HubConfig {
            slow_client_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(10),
            client_timeout: Duration::from_secs(30),
            batch_interval: Duration::from_millis(100),
            latency: Arc::default(),
        };
        let stats = Arc::new(SessionStats::new(1, "test".into()));
        let outbox_limits = OutboxLimits {
            max_bytes: 1 << 20,
            max_events: 16,
        };
        let outbox = Outbox::new(outbox_limits, stats.clone()).shared();
        Peer::new(1, LocalHub::start(0, config), outbox, stats, limits)
    }

    fn text(s: &'static str) -> Result<Frame, ReadError> {
        Ok(Frame::Text(Bytes::from_static(s.as_bytes())))
    }

    #[actix_web::test]
    async fn messages_past_the_rate_are_not_read_and_frame_floods_are_invalid() {
        let mut p = peer(InputLimits {
            max_message_bytes: 1024,
            max_messages_per_second: 5,
            max_invalid_messages: 3,
        });
        for _ in 0..5 {
            assert!(matches!(p.receive(text("x")), Input::Message { .. }));
        }
        assert_eq!(p.receive(text("x")), Input::RateLimited);
        // Pings are not messages: their own budget (at least 1,000), then each is invalid.
        let ping = || Ok(Frame::Ping(Bytes::from_static(b"p")));
        let (mut handled, mut invalid) = (0, 0);
        let closed = loop {
            match p.receive(ping()) {
                Input::Handled => handled += 1,
                Input::Invalid(_) => invalid += 1,
                Input::Close(code, reason) => break (code, reason),
                other => panic!("{other:?}"),
            }
            assert!(
                handled < 2 * MIN_FRAMES_PER_SECOND,
                "the flood was never refused"
            );
        };
        assert!(handled >= MIN_FRAMES_PER_SECOND, "{handled}");
        assert_eq!(invalid, 2);
        assert_eq!(closed, TOO_MANY_INVALID);
    }

    #[actix_web::test]
    async fn a_closing_peer_is_read_and_dropped_until_it_sends_too_much() {
        let mut p = peer(InputLimits {
            max_message_bytes: 1024,
            max_messages_per_second: 1000,
            max_invalid_messages: 20,
        });
        assert!(p.close(1000, ""), "the first close");
        assert!(!p.close(1008, "again"), "only the first counts");
        let chunk = || Ok(Frame::Binary(Bytes::from(vec![0u8; 64 * 1024])));
        // The allowance is 4 × the message limit, at least 1 MiB: 16 chunks of 64 KiB.
        for _ in 0..16 {
            assert_eq!(p.receive(chunk()), Input::Handled);
        }
        assert_eq!(p.receive(chunk()), Input::Abort);
    }

    #[actix_web::test]
    async fn a_peer_whose_budget_ran_out_is_closed_and_its_close_code_is_echoed() {
        let mut p = peer(InputLimits {
            max_message_bytes: 1024,
            max_messages_per_second: 100,
            max_invalid_messages: 20,
        });
        let close = actix_http::ws::CloseReason {
            code: actix_http::ws::CloseCode::Away,
            description: None,
        };
        assert_eq!(
            p.receive(Ok(Frame::Close(Some(close)))),
            Input::PeerClosed(1001)
        );
        p.outbox.borrow_mut().give_up("slow client");
        assert_eq!(
            p.receive(text("x")),
            Input::Close(CLOSE_SLOW_CLIENT, "slow client")
        );
    }

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
