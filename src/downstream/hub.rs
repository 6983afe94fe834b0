//! `Hub`: one per HTTP worker thread; fans market frames out to the sessions on that worker.
//!
//! Owns: which of its worker's sessions want which symbols on which channels, and each session's
//! outbox handle; for SDK programs, each one's stream, encoding and filter. Talks to: symbol
//! throttles send it [`Publish`] (one message per worker per update, whatever the number of
//! sessions); the feeds' taps send it [`RawBatch`] (every message of an upstream frame, for SDK
//! programs: filtered per program, one frame per program, the whole-batch frame shared by those
//! that want all of it; a program whose outbox overflows is closed with 407) and
//! [`UpstreamChanged`] (a lost upstream: its programs hear [`SessionCommand::UpstreamLost`]);
//! sessions on the same thread register and change their interest through [`LocalHub`] directly
//! (no message); it sends [`SessionCommand::Close`] to a session that stays behind too long or
//! goes silent. Lives as long as its worker.
//!
//! It also runs the worker's only periodic timers, so an idle session costs nothing: a
//! housekeeping tick (slow clients, the `behind` flag, batch flushes) and the heartbeat (a ping to
//! every session, a close for one silent past the client timeout).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use log::{info, warn};
use rustc_hash::FxHashMap;

use crate::downstream::delivery::{DeliverKey, HubId, Publish, SessionCommand, SessionId};
use crate::downstream::delivery::{RawBatch, RawElement, RawFilter, UpstreamChanged};
use crate::downstream::outbox::{Outbox, CLOSE_SLOW_CLIENT};
use crate::downstream::socket::frame::{OP_BINARY, OP_TEXT};
use crate::symbol::Symbol;
use crate::vocab::ChannelMask;
use crate::vocab::Encoding;
use crate::vocab::FeedKind;

/// Freed memory is given back to the system at most this often.
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// How often slow clients, batch flushes and `behind` flags are looked at.
const TICK: Duration = Duration::from_millis(25);

/// Timing every hub follows.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// A session whose socket has taken nothing for this long is closed with 4008.
    pub slow_client_timeout: Duration,
    /// Ping every session this often ...
    pub heartbeat_interval: Duration,
    /// ... and close one that sent nothing for this long.
    pub client_timeout: Duration,
    /// Batching sessions get at most one batch per kind this often.
    pub batch_interval: Duration,
    /// Where each update's time from upstream read to the sockets is counted.
    pub latency: std::sync::Arc<crate::downstream::delivery::LatencyHistogram>,
}

impl HubConfig {
    /// Frames waiting longer than this mark a session as behind.
    fn behind_after(&self) -> Duration {
        (self.batch_interval * 2).max(Duration::from_millis(250))
    }
}

/// One session on this worker.
struct Local {
    outbox: Rc<RefCell<Outbox>>,
    commands: Recipient<SessionCommand>,
    /// When its last batch flush went out.
    last_batch: Instant,
}

/// A session's interest in one symbol.
struct Member {
    session: SessionId,
    channels: ChannelMask,
    outbox: Rc<RefCell<Outbox>>,
}

/// An SDK program on this worker: what it wants of its stream, in which encoding.
struct RawMember {
    session: SessionId,
    encoding: Encoding,
    filter: Rc<RefCell<RawFilter>>,
    outbox: Rc<RefCell<Outbox>>,
    commands: Recipient<SessionCommand>,
    /// Its outbox overflowed and its close is requested: nothing more is queued.
    overflowed: bool,
    /// It joined while its feed's upstream was lost: when the upstream is back, it hears of
    /// the gap too.
    joined_in_gap: bool,
}

#[derive(Default)]
struct HubState {
    by_symbol: FxHashMap<Symbol, Vec<Member>>,
    sessions: FxHashMap<SessionId, Local>,
    /// SDK programs per stream.
    raw: FxHashMap<FeedKind, Vec<RawMember>>,
    /// Per feed: its upstream connection is lost (after it had streamed).
    down: [bool; FeedKind::ALL.len()],
    /// Sessions that ended since the last heartbeat (their memory may be given back).
    ended: usize,
}

/// The fan-out actor of one worker.
pub struct Hub {
    id: HubId,
    config: HubConfig,
    state: Rc<RefCell<HubState>>,
}

/// What sessions on the worker hold: the hub's shared state and its address.
#[derive(Clone)]
pub struct LocalHub {
    id: HubId,
    addr: Addr<Hub>,
    state: Rc<RefCell<HubState>>,
}

impl LocalHub {
    /// Starts the hub of the current worker thread.
    pub fn start(id: HubId, config: HubConfig) -> LocalHub {
        let state = Rc::new(RefCell::new(HubState::default()));
        let addr = Hub {
            id,
            config,
            state: state.clone(),
        }
        .start();
        LocalHub { id, addr, state }
    }

    pub fn id(&self) -> HubId {
        self.id
    }

    /// Where throttles send this worker's market frames.
    pub fn publisher(&self) -> Recipient<Publish> {
        self.addr.clone().recipient()
    }

    pub fn register(
        &self,
        session: SessionId,
        outbox: Rc<RefCell<Outbox>>,
        commands: Recipient<SessionCommand>,
    ) {
        self.state.borrow_mut().sessions.insert(
            session,
            Local {
                outbox,
                commands,
                last_batch: Instant::now(),
            },
        );
    }

    /// Forgets a session and its interest in `symbols`.
    pub fn unregister<'a>(&self, session: SessionId, symbols: impl Iterator<Item = &'a Symbol>) {
        let mut state = self.state.borrow_mut();
        state.sessions.remove(&session);
        state.ended += 1;
        for symbol in symbols {
            remove_member(&mut state.by_symbol, symbol, session);
        }
    }

    /// Where feeds send this worker's SDK messages.
    pub fn raw_publisher(&self) -> Recipient<RawBatch> {
        self.addr.clone().recipient()
    }

    /// An SDK program on `feed` receives what `filter` lets through, in `encoding`. The session
    /// changes the filter in place (same thread); the hub reads it for every batch.
    pub fn register_raw(
        &self,
        session: SessionId,
        feed: FeedKind,
        encoding: Encoding,
        filter: Rc<RefCell<RawFilter>>,
        outbox: Rc<RefCell<Outbox>>,
        commands: Recipient<SessionCommand>,
    ) {
        let mut state = self.state.borrow_mut();
        let joined_in_gap = state.down[feed as usize];
        state.raw.entry(feed).or_default().push(RawMember {
            session,
            encoding,
            filter,
            outbox,
            commands,
            overflowed: false,
            joined_in_gap,
        });
    }

    /// Where feeds send this worker's upstream changes.
    pub fn change_publisher(&self) -> Recipient<UpstreamChanged> {
        self.addr.clone().recipient()
    }

    /// Forgets an SDK program.
    pub fn unregister_raw(&self, session: SessionId, feed: FeedKind) {
        let mut state = self.state.borrow_mut();
        if let Some(members) = state.raw.get_mut(&feed) {
            members.retain(|m| m.session != session);
        }
    }

    /// Sets the market channels `session` receives for `symbol` (empty: none). A session that is
    /// not registered (gone, or closing and detached) is ignored, so a late registry answer
    /// cannot register it again.
    pub fn set_channels(&self, session: SessionId, symbol: &Symbol, channels: ChannelMask) {
        let mut state = self.state.borrow_mut();
        if channels.is_empty() {
            remove_member(&mut state.by_symbol, symbol, session);
            return;
        }
        let Some(outbox) = state.sessions.get(&session).map(|l| l.outbox.clone()) else {
            return;
        };
        let members = state.by_symbol.entry(symbol.clone()).or_default();
        match members.iter_mut().find(|m| m.session == session) {
            Some(m) => m.channels = channels,
            None => members.push(Member {
                session,
                channels,
                outbox,
            }),
        }
    }
}

fn remove_member(
    by_symbol: &mut FxHashMap<Symbol, Vec<Member>>,
    symbol: &Symbol,
    session: SessionId,
) {
    if let Some(members) = by_symbol.get_mut(symbol) {
        if let Some(i) = members.iter().position(|m| m.session == session) {
            members.swap_remove(i);
        }
        if members.is_empty() {
            by_symbol.remove(symbol);
        }
    }
}

impl Hub {
    /// Slow clients, `behind` flags and batch flushes.
    fn tick(&mut self) {
        let now = Instant::now();
        let behind_after = self.config.behind_after();
        let mut state = self.state.borrow_mut();
        for (id, local) in state.sessions.iter_mut() {
            let mut outbox = local.outbox.borrow_mut();
            outbox.publish_stats();
            let waiting = outbox.waiting_for(now);
            outbox
                .stats()
                .behind
                .store(waiting > behind_after, Ordering::Relaxed);
            if outbox.overflowed() && !outbox.slow_close_requested {
                // Its budget ran out (whoever pushed last): the close is queued, the session
                // has to stop.
                outbox.slow_close_requested = true;
                local.commands.do_send(SessionCommand::Close {
                    code: CLOSE_SLOW_CLIENT,
                    reason: "slow client".into(),
                });
                continue;
            }
            if waiting > self.config.slow_client_timeout && !outbox.slow_close_requested {
                outbox.slow_close_requested = true;
                let stats = outbox.stats();
                stats.slow_closed.store(true, Ordering::Relaxed);
                warn!(
                    "session {id} ({}): closing slow client with {CLOSE_SLOW_CLIENT}: its socket took nothing for {waiting:?}; {} updates were replaced or dropped meanwhile",
                    stats.peer,
                    stats.dropped.load(Ordering::Relaxed)
                );
                local.commands.do_send(SessionCommand::Close {
                    code: CLOSE_SLOW_CLIENT,
                    reason: "slow client: could not keep up".into(),
                });
                continue;
            }
            if outbox.batch_waiting()
                && now.duration_since(local.last_batch) >= self.config.batch_interval
            {
                local.last_batch = now;
                outbox.flush_batch();
            }
        }
    }

    /// Pings every session; closes those that sent nothing for too long; gives freed memory
    /// back to the system when sessions ended.
    fn heartbeat(&mut self) {
        let now = Instant::now();
        if std::mem::take(&mut self.state.borrow_mut().ended) > 0 {
            release_freed_memory();
        }
        let state = self.state.borrow();
        for (id, local) in &state.sessions {
            let mut outbox = local.outbox.borrow_mut();
            let silent = now.saturating_duration_since(outbox.last_heard.get());
            if silent > self.config.client_timeout {
                info!(
                    "session {id} ({}): no frame from the client for {silent:?}; closing",
                    outbox.stats().peer
                );
                local.commands.do_send(SessionCommand::Close {
                    code: 1000,
                    reason: "client timeout".into(),
                });
            } else {
                outbox.push_ping();
            }
        }
    }
}

/// Returns free heap memory to the system, at most once per [`TRIM_EVERY`] for the whole
/// process (it walks every arena). glibc's malloc keeps what a thread freed in that thread's
/// arena for reuse, so the buffers of a session that held megabytes would stay resident after
/// it ends unless trimmed.
fn release_freed_memory() {
    use std::sync::atomic::AtomicU64;
    static LAST_TRIM_SECS: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_TRIM_SECS.load(Ordering::Relaxed);
    if now < last + TRIM_EVERY.as_secs()
        || LAST_TRIM_SECS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Throttles send at most one frame per symbol and interval; a deep mailbox only means
        // the worker is busy, and Publish is sent with try_send (a full mailbox drops, counted).
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(TICK, |act, _| act.tick());
        ctx.run_interval(self.config.heartbeat_interval, |act, _| act.heartbeat());
        log::debug!("hub {}: started", self.id);
    }
}

impl Handler<Publish> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        let state = self.state.borrow();
        let Some(members) = state.by_symbol.get(&msg.symbol) else {
            return;
        };
        let channel = msg.kind.channel();
        let key = DeliverKey {
            symbol: msg.symbol,
            kind: msg.kind,
        };
        let conflates = key.kind.conflates();
        for m in members.iter().filter(|m| m.channels.contains(channel)) {
            let mut outbox = m.outbox.borrow_mut();
            if conflates {
                outbox.push_latest(&key, &msg.frame, &msg.batch);
            } else {
                // Bars: droppable events.
                let _ = outbox.push_event(msg.frame.clone(), false);
            }
        }
        // The writers take the frames right after this handler, unless a client is behind.
        if let Some(read_at) = msg.read_at {
            self.config.latency.observe(read_at.elapsed());
        }
    }
}

/// Largest message an SDK program is sent (Alpaca's SDKs read at most 1 MiB: python `websockets`
/// closes with 1009 beyond it).
pub const MAX_SDK_MESSAGE: usize = 1_000_000;

/// The messages of a batch, as frames of at most [`MAX_SDK_MESSAGE`] bytes (a single larger
/// element goes alone).
pub fn raw_frames<'a>(encoding: Encoding, elements: impl Iterator<Item = &'a Bytes>) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut chunk: Vec<&Bytes> = Vec::new();
    let mut size = 0;
    let finish = |chunk: &mut Vec<&Bytes>, size: usize, frames: &mut Vec<Bytes>| {
        if chunk.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(size + chunk.len() + 5);
        match encoding {
            Encoding::Msgpack => {
                // Writing to a Vec cannot fail.
                let _ = rmp::encode::write_array_len(&mut out, chunk.len() as u32);
                for e in chunk.iter() {
                    out.extend_from_slice(e);
                }
            }
            Encoding::Json => {
                out.push(b'[');
                for (i, e) in chunk.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(e);
                }
                out.push(b']');
            }
        }
        frames.push(Bytes::from(out));
        chunk.clear();
    };
    for e in elements {
        if !chunk.is_empty() && size + e.len() + chunk.len() + 6 > MAX_SDK_MESSAGE {
            finish(&mut chunk, size, &mut frames);
            size = 0;
        }
        size += e.len();
        chunk.push(e);
    }
    finish(&mut chunk, size, &mut frames);
    frames
}

/// The WebSocket opcode of an SDK program's messages: msgpack travels in binary frames.
pub fn opcode(encoding: Encoding) -> u8 {
    match encoding {
        Encoding::Json => OP_TEXT,
        Encoding::Msgpack => OP_BINARY,
    }
}

impl Handler<UpstreamChanged> for Hub {
    type Result = ();

    /// A loss reaches every program of the feed; the return reaches those that joined during
    /// the loss (they have seen no data since they joined).
    fn handle(&mut self, msg: UpstreamChanged, _: &mut Context<Self>) {
        let mut state = self.state.borrow_mut();
        state.down[msg.feed as usize] = !msg.up;
        let Some(members) = state.raw.get_mut(&msg.feed) else {
            return;
        };
        for m in members.iter_mut() {
            let gap = if msg.up {
                std::mem::take(&mut m.joined_in_gap)
            } else {
                true
            };
            if gap {
                m.commands
                    .do_send(SessionCommand::UpstreamLost { error: msg.error });
            }
        }
    }
}

impl Handler<RawBatch> for Hub {
    type Result = ();

    fn handle(&mut self, msg: RawBatch, _: &mut Context<Self>) {
        let mut state = self.state.borrow_mut();
        let Some(members) = state.raw.get_mut(&msg.feed) else {
            return;
        };
        // The whole batch, per encoding, built at most once and shared by every program that
        // wants all of it.
        let mut whole: [Option<Vec<Bytes>>; 2] = [None, None];
        let mut picked: Vec<&RawElement> = Vec::with_capacity(msg.elements.len());
        for m in members.iter_mut().filter(|m| !m.overflowed) {
            if m.outbox.borrow().is_closed() {
                // Closing: nothing more is queued, so nothing is built for it.
                continue;
            }
            picked.clear();
            {
                // A batch split before this program's encoding was in demand (it has just
                // authenticated) lacks that encoding: those messages it does not get.
                let filter = m.filter.borrow();
                let encoding = m.encoding;
                picked.extend(
                    msg.elements
                        .iter()
                        .filter(|e| filter.wants(e) && !e.encoded(encoding).is_empty()),
                );
            }
            if picked.is_empty() {
                continue;
            }
            let frames = if picked.len() == msg.elements.len() {
                whole[m.encoding as usize]
                    .get_or_insert_with(|| {
                        raw_frames(
                            m.encoding,
                            msg.elements.iter().map(|e| e.encoded(m.encoding)),
                        )
                    })
                    .clone()
            } else {
                raw_frames(m.encoding, picked.iter().map(|e| e.encoded(m.encoding)))
            };
            let mut outbox = m.outbox.borrow_mut();
            for frame in frames {
                if outbox.push_frame(opcode(m.encoding), frame).is_err() {
                    // The outbox has let go of what waited and queued 407 and the close; the
                    // session only has to stop.
                    m.overflowed = true;
                    m.commands.do_send(SessionCommand::Close {
                        code: CLOSE_SLOW_CLIENT,
                        reason: "slow client".into(),
                    });
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_frames_stay_under_a_mebibyte_and_keep_every_message() {
        let element = Bytes::from(vec![b'x'; 10_000]);
        let elements = vec![element.clone(); 250]; // 2.5 MB of messages
        for encoding in [Encoding::Json, Encoding::Msgpack] {
            let frames = raw_frames(encoding, elements.iter());
            assert!(frames.len() >= 3, "{encoding:?}: {}", frames.len());
            assert!(frames.iter().all(|f| f.len() < MAX_SDK_MESSAGE));
            let payload: usize = frames.iter().map(|f| f.len()).sum();
            assert!(payload >= 250 * 10_000);
        }
        let json = raw_frames(
            Encoding::Json,
            [Bytes::from_static(b"{}"), Bytes::from_static(b"[]")].iter(),
        );
        assert_eq!(&json[0][..], b"[{},[]]");
        let packed = raw_frames(Encoding::Msgpack, [Bytes::from_static(&[0x80])].iter());
        assert_eq!(&packed[0][..], &[0x91, 0x80]);
        // One message larger than the limit goes alone (splitting it would change it).
        let big = Bytes::from(vec![b'y'; MAX_SDK_MESSAGE + 10]);
        assert_eq!(
            raw_frames(Encoding::Json, [big.clone(), element].iter()).len(),
            2
        );
    }
}
