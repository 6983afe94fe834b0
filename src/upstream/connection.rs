//! Pieces every upstream WebSocket connection needs: opening it, reassembling fragmented
//! messages, telling a live peer from a dead one, the [`Link`] — the lifecycle state a connection
//! actor (data feed or trading stream) keeps across supervisor restarts — and [`Upstream`], the
//! lifecycle itself (attempt, attach, fail, stop for good), shared by both actors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;

use awc::error::{WsClientError, WsProtocolError};
use awc::ws::{CloseCode, CloseReason, Frame, Message as WsMessage};
use bytes::Bytes;
use futures_util::stream::{SplitSink, StreamExt};
use log::{error, info, warn};

use super::gate::Gate;
use super::policy::{Failure, ReconnectPolicy};
use super::protocol::ClientFrame;
use super::{FeedCounters, FeedState, FeedStatus};
use crate::time::Timestamp;
use crate::vocab::{Encoding, Reassembler};

/// An open upstream WebSocket.
pub type WsFramed = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;
/// Its writing half.
pub type WsSink = SplitSink<WsFramed, WsMessage>;

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// The server refused the upgrade with this HTTP status.
    Status(u16),
    /// TCP, TLS and the upgrade did not finish in time.
    Timeout(Duration),
    Other(String),
}

impl ConnectError {
    pub fn failure(&self) -> Failure {
        match self {
            ConnectError::Status(code) => Failure::from_handshake_status(*code),
            _ => Failure::Transient,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ConnectError::Status(429) => {
                "the server refused the WebSocket upgrade with HTTP 429 (too many requests)".into()
            }
            ConnectError::Status(code) => {
                format!("the server refused the WebSocket upgrade with HTTP {code}")
            }
            ConnectError::Timeout(limit) => format!("connection timed out after {limit:?}"),
            ConnectError::Other(e) => format!("connection failed: {e}"),
        }
    }
}

/// Opens a WebSocket to `url`, asking for `encoding` with the `Content-Type` header (as Alpaca's
/// SDKs do); `encoding` `None` sends no header (the trading stream).
pub async fn open(
    url: String,
    encoding: Option<Encoding>,
    limit: Duration,
    max_frame_bytes: usize,
) -> Result<WsFramed, ConnectError> {
    let client = awc::Client::builder()
        .timeout(limit)
        .max_http_version(awc::http::Version::HTTP_11)
        .finish();
    let mut request = client.ws(url).max_frame_size(max_frame_bytes);
    if let Some(e) = encoding {
        request = request.set_header(awc::http::header::CONTENT_TYPE, e.content_type());
    }
    match tokio::time::timeout(limit, request.connect()).await {
        Ok(Ok((_, framed))) => Ok(framed),
        Ok(Err(WsClientError::InvalidResponseStatus(status))) => {
            Err(ConnectError::Status(status.as_u16()))
        }
        Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
        Err(_) => Err(ConnectError::Timeout(limit)),
    }
}

/// The connection lifecycle of an upstream actor — a market-data feed or an account's trading
/// stream. An attempt opens the socket and attaches it; any failure is recorded by the [`Link`]
/// (which tells the retry policy) and stops the actor, which its supervisor restarts; a stop for
/// good closes with "going away". Implementors add their protocol in [`Upstream::opened`] and
/// their frame handling in `StreamHandler`.
pub trait Upstream:
    Actor<Context = Context<Self>>
    + StreamHandler<Result<Frame, WsProtocolError>>
    + WriteHandler<WsProtocolError>
{
    fn link(&mut self) -> &mut Link;
    /// No connection is open or being opened.
    fn is_idle(&self) -> bool;
    /// The protocol phase becomes "no connection" (`false`) or "connecting" (`true`).
    fn set_connecting(&mut self, connecting: bool);
    /// Sends the status on if it changed.
    fn report(&mut self);
    /// Where to connect, and the encoding to ask for (`None`: no `Content-Type`).
    fn endpoint(&self) -> (String, Option<Encoding>);
    /// Connect timeout and largest frame accepted.
    fn limits(&self) -> (Duration, usize);
    /// The socket is open and attached: start the protocol (auth, timers).
    fn opened(&mut self, ctx: &mut Context<Self>);

    /// One connection attempt.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.link().stopping || !self.is_idle() {
            return; // stopped, or an attempt (after a wait for the gate) is already under way
        }
        if !self.link().gate_open() {
            self.link().stand_by();
            self.report();
            return;
        }
        self.link().standing_by = false;
        let (url, encoding) = self.endpoint();
        let (timeout, max_frame_bytes) = self.limits();
        self.link().begin_attempt(&url);
        self.set_connecting(true);
        self.report();
        let attempt = open(url, encoding, timeout, max_frame_bytes);
        ctx.spawn(attempt.into_actor(self).map(|res, act, ctx| match res {
            Ok(framed) => {
                let (sink, stream) = framed.split();
                act.link().writer = Some(SinkWrite::new(sink, ctx));
                ctx.add_stream(stream);
                act.link().liveness.heard(Instant::now());
                act.opened(ctx);
            }
            Err(e) => act.fail(e.failure(), e.describe(), ctx),
        }));
    }

    /// Records the failure, closes the connection and stops; the supervisor restarts the actor.
    fn fail(&mut self, failure: Failure, reason: String, ctx: &mut Context<Self>) {
        if self.link().stopping {
            ctx.stop();
            return;
        }
        if self.is_idle() {
            return;
        }
        self.link().record_failure(failure, reason);
        self.set_connecting(false);
        self.report();
        ctx.stop();
    }

    /// The lease gate flipped: connect now if waiting for it, or hang up and stand by (the
    /// supervisor restarts the actor, whose next attempt finds the gate closed and waits).
    fn gate_changed(&mut self, open: bool, ctx: &mut Context<Self>) {
        if self.link().stopping {
            return;
        }
        if open {
            if self.link().standing_by {
                self.connect(ctx);
            }
        } else if !self.is_idle() {
            self.link().hang_up();
            self.set_connecting(false);
            self.report();
            ctx.stop();
        }
    }

    /// Daemon shutdown: close with "going away" and never reconnect.
    fn stop_for_good(&mut self, ctx: &mut Context<Self>) {
        self.link().stop();
        self.set_connecting(false);
        self.report();
        // Give the close frame a moment to leave before the connection is dropped.
        ctx.run_later(Duration::from_millis(100), |_, ctx| ctx.stop());
    }
}

/// Turns an encoded client message into a WebSocket message.
pub fn ws_message(frame: ClientFrame) -> WsMessage {
    match frame {
        ClientFrame::Text(t) => WsMessage::Text(t.into()),
        ClientFrame::Binary(b) => WsMessage::Binary(b.into()),
    }
}

/// The dead-peer timer: a peer that sends nothing at all — not even a pong to our pings — for a
/// ping interval plus the pong timeout is gone.
#[derive(Debug, Clone)]
pub struct Liveness {
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    last_received: Instant,
}

impl Liveness {
    pub fn new(ping_interval: Duration, pong_timeout: Duration) -> Self {
        Liveness {
            ping_interval,
            pong_timeout,
            last_received: Instant::now(),
        }
    }

    /// Anything arrived.
    pub fn heard(&mut self, now: Instant) {
        self.last_received = now;
    }

    /// `Err(reason)` when the peer has been silent too long.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let silent = now.duration_since(self.last_received);
        if silent > self.ping_interval + self.pong_timeout {
            Err(format!(
                "the upstream stopped answering (nothing received for {silent:?}, not even a pong)"
            ))
        } else {
            Ok(())
        }
    }
}

/// What a received frame means for the connection.
#[derive(Debug)]
pub enum Received {
    /// A whole message (text or reassembled), to decode.
    Data { bytes: Bytes, binary: bool },
    /// Handled here (ping answered, pong noted, fragment stored).
    Nothing,
    /// The connection is over, for this reason.
    Failed(String),
}

/// The lifecycle state every upstream connection actor keeps: retry policy, writer, status,
/// liveness, fragments. It survives supervisor restarts; the actor adds its protocol.
pub struct Link {
    /// `feed stocks`, `account main`: how logs name the connection.
    pub name: String,
    pub policy: ReconnectPolicy,
    pub writer: Option<SinkWrite<WsMessage, WsSink>>,
    pub status: FeedStatus,
    /// The last status reported, so only changes are sent.
    reported: Option<FeedStatus>,
    pub liveness: Liveness,
    fragments: Reassembler,
    /// Connection attempts since start-up.
    pub attempts: u32,
    /// Shut down for good: never reconnect.
    pub stopping: bool,
    /// With several primaries: connect only while this instance holds the lease.
    pub gate: Option<Arc<Gate>>,
    /// An attempt found the gate closed: connect when it opens.
    pub standing_by: bool,
    /// Where connects and failures are counted (metrics).
    counters: Option<Arc<FeedCounters>>,
}

impl Link {
    pub fn new(
        name: String,
        policy: ReconnectPolicy,
        status: FeedStatus,
        liveness: Liveness,
        max_frame_bytes: usize,
    ) -> Self {
        Link {
            name,
            policy,
            writer: None,
            status,
            reported: None,
            liveness,
            fragments: Reassembler::new(max_frame_bytes),
            attempts: 0,
            stopping: false,
            gate: None,
            standing_by: false,
            counters: None,
        }
    }

    /// Count connects and failures (by class) in `counters`.
    pub fn with_counters(mut self, counters: Arc<FeedCounters>) -> Self {
        self.counters = Some(counters);
        self
    }

    /// Connect only while `gate` is open.
    pub fn with_gate(mut self, gate: Option<Arc<Gate>>) -> Self {
        self.gate = gate;
        self
    }

    /// Whether a connection may be opened now.
    fn gate_open(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| g.is_open())
    }

    /// Waits for the gate: no connection, and the status says why.
    fn stand_by(&mut self) {
        if !self.standing_by {
            info!(
                "{}: standing by (another instance holds the lease)",
                self.name
            );
        }
        self.standing_by = true;
        self.status.state = FeedState::Standby;
        self.status.next_retry_ms = None;
        self.status.connected_since = None;
        self.status.subscribed = 0;
    }

    /// The gate closed while connected: hang up at once ("going away").
    fn hang_up(&mut self) {
        if let Some(w) = &mut self.writer {
            let _ = w.write(WsMessage::Close(Some(CloseReason {
                code: CloseCode::Away,
                description: Some("tickrelay standing by".into()),
            })));
            w.close();
        }
        self.stand_by();
    }

    /// The status to report, if it changed since the last one.
    pub fn changed_status(&mut self) -> Option<FeedStatus> {
        self.status.circuit_state = self.policy.circuit();
        self.status.consecutive_failures = self.policy.consecutive_failures();
        if self.reported.as_ref() == Some(&self.status) {
            return None;
        }
        self.reported = Some(self.status.clone());
        Some(self.status.clone())
    }

    /// How long `started()` waits before connecting: `first` for the very first attempt, the
    /// policy's delay afterwards (recorded in the status).
    pub fn delay_before_attempt(&mut self, first: Duration) -> Duration {
        let delay = if self.attempts == 0 {
            first
        } else {
            self.policy.next_delay(Instant::now())
        };
        if !delay.is_zero() {
            info!(
                "{}: next connection attempt in {delay:?} (circuit {})",
                self.name,
                self.policy.circuit().as_str()
            );
            self.status.next_retry_ms = Some(delay.as_millis() as u64);
        }
        delay
    }

    /// A connection attempt starts.
    pub fn begin_attempt(&mut self, url: &str) {
        if self.attempts > 0 {
            self.status.reconnect_attempts += 1;
        }
        self.attempts += 1;
        self.policy.begin_attempt();
        self.status.state = FeedState::Connecting;
        self.status.next_retry_ms = None;
        info!("{}: connecting to {url}", self.name);
    }

    /// Authenticated and subscribed (or listening and loaded).
    pub fn mark_ready(&mut self) {
        if let Some(c) = &self.counters {
            c.connects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.policy.on_ready();
        self.status.state = FeedState::Connected;
        self.status.connected_since = Some(Timestamp::now());
        self.status.next_retry_ms = None;
        info!("{}: connected", self.name);
    }

    /// Records a failure: the policy learns of it, the status says why, the connection is closed.
    pub fn record_failure(&mut self, failure: Failure, reason: String) {
        if let Some(c) = &self.counters {
            c.failures[failure as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.policy.on_failure(failure, Instant::now());
        self.status.state = if failure == Failure::Fatal {
            error!("{}: {reason}; retrying will not help soon", self.name);
            FeedState::Failed
        } else {
            warn!("{}: {reason}; will reconnect", self.name);
            FeedState::Disconnected
        };
        self.write(WsMessage::Close(Some(CloseCode::Normal.into())));
        self.status.last_error = Some(reason);
        self.status.connected_since = None;
        self.status.subscribed = 0;
    }

    /// Shut down for good: close with "going away" and never reconnect.
    pub fn stop(&mut self) {
        info!("{}: stopping", self.name);
        self.stopping = true;
        if let Some(w) = &mut self.writer {
            let _ = w.write(WsMessage::Close(Some(CloseReason {
                code: CloseCode::Away,
                description: Some("tickrelay shutting down".into()),
            })));
            w.close();
        }
        self.status.state = FeedState::Stopped;
        self.status.next_retry_ms = None;
    }

    /// Forgets the old connection (supervisor restart).
    pub fn reset(&mut self) {
        self.writer = None;
        self.fragments.reset();
    }

    pub fn write(&mut self, msg: WsMessage) -> bool {
        match &mut self.writer {
            Some(w) => w.write(msg).is_ok(),
            None => false,
        }
    }

    /// The dead-peer check, then a ping; `Err` when the peer is gone.
    pub fn ping(&mut self) -> Result<(), String> {
        self.liveness.check(Instant::now())?;
        self.write(WsMessage::Ping(Bytes::new()));
        Ok(())
    }

    /// Interprets a frame: answers pings, notes pongs, reassembles fragments, reports closes.
    pub fn receive(&mut self, item: Result<Frame, WsProtocolError>) -> Received {
        let now = Instant::now();
        match item {
            Ok(Frame::Text(bytes)) => {
                self.liveness.heard(now);
                Received::Data {
                    bytes,
                    binary: false,
                }
            }
            Ok(Frame::Binary(bytes)) => {
                self.liveness.heard(now);
                Received::Data {
                    bytes,
                    binary: true,
                }
            }
            Ok(Frame::Continuation(item)) => match self.fragments.push(item) {
                Ok(Some((binary, bytes))) => {
                    self.liveness.heard(now);
                    Received::Data { bytes, binary }
                }
                Ok(None) => Received::Nothing,
                Err(e) => Received::Failed(e.to_string()),
            },
            Ok(Frame::Ping(payload)) => {
                self.liveness.heard(now);
                self.write(WsMessage::Pong(payload));
                Received::Nothing
            }
            Ok(Frame::Pong(_)) => {
                self.liveness.heard(now);
                Received::Nothing
            }
            Ok(Frame::Close(reason)) => {
                let why = reason.map_or_else(
                    || "no reason given".to_owned(),
                    |r| {
                        format!(
                            "code {} {}",
                            u16::from(r.code),
                            r.description.unwrap_or_default()
                        )
                    },
                );
                Received::Failed(format!("the upstream closed the connection ({why})"))
            }
            Err(e) => Received::Failed(format!("read error: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_allows_a_ping_interval_plus_the_pong_timeout() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(10), Duration::from_secs(5));
        l.heard(t0);
        assert!(l.check(t0 + Duration::from_secs(15)).is_ok());
        assert!(l.check(t0 + Duration::from_secs(16)).is_err());
    }

    #[test]
    fn handshake_statuses_are_classified() {
        assert_eq!(ConnectError::Status(429).failure(), Failure::RateLimited);
        assert_eq!(ConnectError::Status(401).failure(), Failure::Fatal);
        assert_eq!(
            ConnectError::Timeout(Duration::from_secs(1)).failure(),
            Failure::Transient
        );
        assert!(ConnectError::Status(429).describe().contains("429"));
    }
}
