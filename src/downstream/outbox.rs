//! A session's outgoing queue, and the stream that drains it into the socket.
//!
//! Owns: every frame waiting for one peer's socket (a browser or an SDK program). Written by the
//! session actor (acks, errors, pongs, status, events), by its worker's hub (market frames) and
//! read by [`OutboxBody`], which the session's writer task polls whenever the socket has taken its
//! last chunk. All three live on the same worker thread and share the outbox through an
//! `Rc<RefCell<_>>`.
//!
//! **One byte budget.** Every waiting frame — data, acks, errors, pongs, the close — counts its
//! payload plus [`ENTRY_COST`] against `max_bytes`. A push that would pass it does not queue:
//! the peer is too slow (or sends requests without reading the answers), everything waiting is
//! let go, the farewell (an SDK program's `407 slow client`) and a 4008 close are queued and
//! nothing more is accepted. So whatever kind of frame fills it, one connection never holds
//! more than its budget.
//!
//! Backpressure by conflation: a conflating frame (price, trade, book) replaces the unsent one of
//! the same symbol and kind in place, so a browser that cannot keep up costs at most one frame per
//! (symbol, kind) it follows and gets the newest values when it catches up; a pong replaces the
//! unsent one. Droppable events (news, bars) also have a count limit past which they are dropped
//! (counted); an account event that does not fit closes the session rather than being dropped
//! silently. Each poll encodes everything waiting (up to [`MAX_CHUNK`]) into one buffer: one
//! socket write for many frames.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use rustc_hash::FxHashMap;

use super::socket::frame::{encode, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use crate::downstream::delivery::{DeliverKey, SessionStats};
use crate::vocab::PriceKind;

/// Most bytes encoded per poll of the body; the rest waits for the next one.
pub const MAX_CHUNK: usize = 64 * 1024;

/// What one waiting frame costs the budget besides its payload: its queue entry and frame
/// header, so that even empty frames cannot pile up for free.
pub const ENTRY_COST: usize = 64;

/// Close code for a peer that could not keep up (its budget or the slow-client clock ran out).
pub const CLOSE_SLOW_CLIENT: u16 = 4008;

/// A frame did not fit: the outbox has closed itself (the peer is too slow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// One waiting frame, in the order frames were first queued.
#[derive(Debug)]
enum Entry {
    /// An ack, error or status frame.
    Control(ByteString),
    /// A news article, bar or account event.
    Event(ByteString),
    /// The newest conflating frame of this key (kept in `latest`).
    Latest(DeliverKey),
    Ping,
    /// The newest unanswered ping's payload (kept in `pong`).
    Pong,
    /// An SDK program's message (data or control), never conflated.
    Frame {
        opcode: u8,
        payload: Bytes,
    },
    /// The close frame's payload (code and reason); nothing follows it.
    Close(Bytes),
}

/// The newest unsent conflating frame of one key.
#[derive(Debug)]
struct Latest {
    frame: ByteString,
    batch: Option<(PriceKind, ByteString)>,
}

/// The queue.
pub struct Outbox {
    queue: VecDeque<Entry>,
    latest: FxHashMap<DeliverKey, Latest>,
    /// Droppable events in `queue`, and how many may wait.
    events: usize,
    max_events: usize,
    /// What waits, counted against `max_bytes`: payloads plus [`ENTRY_COST`] per entry.
    queued_bytes: usize,
    /// `queued_bytes` as the shared stats last showed it.
    published: usize,
    /// The byte budget.
    max_bytes: usize,
    /// Sent before the close when the budget runs out (an SDK program's `407 slow client`).
    farewell: Option<(u8, Bytes)>,
    /// The budget ran out (or the session gave up on a slow peer): everything was let go.
    overflowed: bool,
    /// The payload of the pong that waits, if one does.
    pong: Option<Bytes>,
    /// Since when something has been waiting (the slow-client clock).
    pending_since: Option<Instant>,
    /// The body's task, to wake when something is queued.
    waker: Option<Waker>,
    /// Prices go out as batch frames, built by this function, when the hub says a batch is due.
    batching: Option<BatchFrame>,
    /// Batched prices are waiting for the next batch flush.
    batch_waiting: bool,
    /// The close frame is queued: nothing more is accepted.
    closed: bool,
    /// The connection is gone.
    receiver_gone: bool,
    /// Last frame of any kind from the client (read by the hub's heartbeat).
    pub last_heard: Cell<Instant>,
    /// The slow-client close has been requested.
    pub slow_close_requested: bool,
    /// A heartbeat ping waits in the queue.
    ping_queued: bool,
    /// Frames replaced or dropped since the last [`Outbox::publish_stats`], and of them the
    /// replaced (conflated) ones.
    dropped: u64,
    conflated: u64,
    stats: Arc<SessionStats>,
}

/// Builds one batch frame of price updates (the browser protocol's `…_price_batch`); handed in
/// by the session that turns batching on, so the outbox names no protocol.
pub type BatchFrame = fn(PriceKind, &[ByteString]) -> ByteString;

/// Growth of the backlog that is published at once (see [`Outbox::publish_stats`]).
const PUBLISH_STEP: usize = 64 * 1024;

/// How much may wait for one peer.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// The byte budget (payloads plus [`ENTRY_COST`] per frame).
    pub max_bytes: usize,
    /// Droppable events (news, bars) that may wait; past it they are dropped (counted).
    pub max_events: usize,
}

impl Outbox {
    pub fn new(limits: OutboxLimits, stats: Arc<SessionStats>) -> Self {
        Outbox {
            queue: VecDeque::new(),
            latest: FxHashMap::default(),
            events: 0,
            max_events: limits.max_events.max(1),
            queued_bytes: 0,
            published: 0,
            max_bytes: limits.max_bytes,
            farewell: None,
            overflowed: false,
            pong: None,
            pending_since: None,
            waker: None,
            batching: None,
            batch_waiting: false,
            closed: false,
            receiver_gone: false,
            last_heard: Cell::new(Instant::now()),
            slow_close_requested: false,
            ping_queued: false,
            dropped: 0,
            conflated: 0,
            stats,
        }
    }

    /// The frame that goes out before the close when the budget runs out.
    pub fn set_farewell(&mut self, opcode: u8, payload: Bytes) {
        self.farewell = Some((opcode, payload));
    }

    pub fn shared(self) -> Rc<RefCell<Outbox>> {
        Rc::new(RefCell::new(self))
    }

    fn accepting(&self) -> bool {
        !self.closed && !self.receiver_gone
    }

    /// Whether a new frame of `bytes` fits the budget.
    fn fits(&self, bytes: usize) -> bool {
        self.queued_bytes + bytes + ENTRY_COST <= self.max_bytes
    }

    /// Whether a new frame of `bytes` may wait; if not, the outbox gives up on the peer.
    fn admit(&mut self, bytes: usize) -> Result<(), Overflow> {
        if self.fits(bytes) {
            return Ok(());
        }
        let limit = self.max_bytes;
        self.give_up(&format!("slow client: more than {limit} bytes waiting"));
        Err(Overflow)
    }

    /// Lets everything waiting go, queues the farewell and the 4008 close, and accepts nothing
    /// more: the peer is too slow (its budget ran out, or the hub's slow-client clock did).
    pub fn give_up(&mut self, reason: &str) {
        if !self.accepting() {
            return;
        }
        if !self.overflowed {
            log::warn!(
                "session {} ({}): closing with {CLOSE_SLOW_CLIENT}: {reason}; {} bytes in {} frames let go",
                self.stats.id,
                self.stats.peer,
                self.queued_bytes,
                self.queue.len()
            );
        }
        self.overflowed = true;
        self.stats.slow_closed.store(true, Ordering::Relaxed);
        self.dropped += self.queue.len() as u64;
        self.queue.clear();
        self.latest.clear();
        self.queued_bytes = 0;
        self.events = 0;
        self.ping_queued = false;
        self.pong = None;
        self.batch_waiting = false;
        self.pending_since = None;
        if let Some((opcode, payload)) = self.farewell.clone() {
            let n = payload.len();
            self.enqueue(Entry::Frame { opcode, payload }, n);
        }
        self.close(CLOSE_SLOW_CLIENT, reason);
    }

    /// The budget ran out and the close is queued.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Notes that `entry` was queued; starts the slow-client clock and wakes the writer.
    fn enqueue(&mut self, entry: Entry, bytes: usize) {
        self.enqueue_quietly(entry, bytes);
        self.wake();
    }

    /// Queues without waking the writer (batched prices wait for the hub's flush).
    fn enqueue_quietly(&mut self, entry: Entry, bytes: usize) {
        if self.queue.is_empty() {
            self.pending_since = Some(Instant::now());
        }
        self.queue.push_back(entry);
        self.queued_bytes += bytes + ENTRY_COST;
        // A growing backlog shows in the stats before the next drain or tick (a replay at `max`
        // waits on it); one store per PUBLISH_STEP, not per frame.
        if self.queued_bytes >= self.published + PUBLISH_STEP {
            self.published = self.queued_bytes;
            self.stats
                .queued_bytes
                .store(self.queued_bytes, Ordering::Relaxed);
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Copies the counters to the shared stats (on every drain and the hub's tick: the hot path
    /// touches no atomics).
    pub fn publish_stats(&mut self) {
        self.published = self.queued_bytes;
        self.stats
            .queued_bytes
            .store(self.queued_bytes, Ordering::Relaxed);
        self.stats.held.store(self.queue.len(), Ordering::Relaxed);
        if self.dropped > 0 {
            self.stats
                .dropped
                .fetch_add(std::mem::take(&mut self.dropped), Ordering::Relaxed);
        }
        if self.conflated > 0 {
            self.stats
                .conflated
                .fetch_add(std::mem::take(&mut self.conflated), Ordering::Relaxed);
        }
    }

    fn count_drop(&mut self) {
        self.dropped += 1;
    }

    /// An ack, error or status frame, within the byte budget.
    pub fn push_control(&mut self, frame: ByteString) -> Result<(), Overflow> {
        if !self.accepting() {
            return Ok(());
        }
        let n = frame.len();
        self.admit(n)?;
        self.enqueue(Entry::Control(frame), n);
        Ok(())
    }

    /// An event that must not be conflated. A droppable one (news, bars) past the event limit or
    /// the byte budget is dropped and counted; one that must be delivered (account events)
    /// closes the session instead.
    pub fn push_event(&mut self, frame: ByteString, must_deliver: bool) -> Result<(), Overflow> {
        if !self.accepting() {
            return Ok(());
        }
        let n = frame.len();
        if self.events >= self.max_events || !self.fits(n) {
            if must_deliver {
                self.give_up("slow client: account events could not be delivered");
                return Err(Overflow);
            }
            self.count_drop();
            return Ok(());
        }
        self.events += 1;
        self.enqueue(Entry::Event(frame), n);
        Ok(())
    }

    /// A conflating frame: replaces the unsent one of the same key in place, or queues it.
    pub fn push_latest(
        &mut self,
        key: &DeliverKey,
        frame: &ByteString,
        batch: &Option<(PriceKind, ByteString)>,
    ) {
        if !self.accepting() {
            return;
        }
        // The `update` object is kept only when it may go out in a batch.
        let batch = if self.batching.is_some() {
            batch.clone()
        } else {
            None
        };
        // One lookup on the hot path: a replacement costs only what it adds (its entry is
        // already counted); a new key needs room for the frame and its entry.
        if let Some(slot) = self.latest.get_mut(key) {
            let queued = self.queued_bytes + frame.len() - slot.frame.len();
            if queued <= self.max_bytes {
                self.queued_bytes = queued;
                slot.frame = frame.clone();
                slot.batch = batch;
                self.dropped += 1;
                self.conflated += 1;
                return;
            }
        } else if self.fits(frame.len()) {
            self.insert_latest(key, frame, batch);
            return;
        }
        let limit = self.max_bytes;
        self.give_up(&format!("slow client: more than {limit} bytes waiting"));
    }

    /// Queues the first unsent conflating frame of `key`.
    fn insert_latest(
        &mut self,
        key: &DeliverKey,
        frame: &ByteString,
        batch: Option<(PriceKind, ByteString)>,
    ) {
        let batched = batch.is_some();
        self.latest.insert(
            key.clone(),
            Latest {
                frame: frame.clone(),
                batch,
            },
        );
        if batched {
            self.enqueue_quietly(Entry::Latest(key.clone()), frame.len());
            self.batch_waiting = true;
        } else {
            self.enqueue(Entry::Latest(key.clone()), frame.len());
        }
    }

    /// An SDK program's message (data or control) with its WebSocket opcode, never conflated.
    /// Past the byte budget the program is too slow: the outbox gives up on it.
    pub fn push_frame(&mut self, opcode: u8, payload: Bytes) -> Result<(), Overflow> {
        if !self.accepting() {
            return Ok(());
        }
        let n = payload.len();
        self.admit(n)?;
        self.enqueue(Entry::Frame { opcode, payload }, n);
        Ok(())
    }

    /// Queues a ping (the heartbeat), unless one still waits: a client that is not reading
    /// needs no second one.
    pub fn push_ping(&mut self) {
        if self.accepting() && !self.ping_queued && self.admit(0).is_ok() {
            self.ping_queued = true;
            self.enqueue(Entry::Ping, 0);
        }
    }

    /// Answers a client's ping. Only the newest unanswered ping is answered (RFC 6455 §5.5.3):
    /// a peer that floods pings without reading holds one pong.
    pub fn push_pong(&mut self, payload: Bytes) {
        if !self.accepting() {
            return;
        }
        let n = payload.len();
        if let Some(waiting) = self.pong.as_mut() {
            // Control payloads are at most 125 bytes: the replacement always fits.
            self.queued_bytes = self.queued_bytes + n - waiting.len();
            *waiting = payload;
            return;
        }
        if self.admit(n).is_ok() {
            self.pong = Some(payload);
            self.enqueue(Entry::Pong, n);
        }
    }

    /// Queues the close frame; nothing is accepted after it. The frames already queued go first.
    pub fn close(&mut self, code: u16, reason: &str) {
        if !self.accepting() {
            return;
        }
        let mut payload = BytesMut::with_capacity(2 + reason.len());
        payload.put_u16(code);
        // Control frame payloads are at most 125 bytes.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload.put_slice(&reason.as_bytes()[..end]);
        let payload = payload.freeze();
        let n = payload.len();
        // The close always fits: it is the last frame and ends the connection.
        self.enqueue(Entry::Close(payload), n);
        self.closed = true;
        self.wake();
    }

    /// Turns batching of price updates on or off.
    pub fn set_batching(&mut self, batch: Option<BatchFrame>) {
        self.batching = batch;
        if batch.is_none() && self.batch_waiting {
            self.batch_waiting = false;
            self.wake();
        }
    }

    /// Batched prices wait for a flush.
    pub fn batch_waiting(&self) -> bool {
        self.batch_waiting
    }

    /// The hub's batch flush: let waiting batched prices go out.
    pub fn flush_batch(&mut self) {
        if self.batch_waiting {
            self.batch_waiting = false;
            self.wake();
        }
    }

    /// Drops unsent conflating frames of keys the client no longer wants.
    pub fn forget(&mut self, mut unwanted: impl FnMut(&DeliverKey) -> bool) {
        let before = self.queued_bytes;
        let mut removed = 0;
        self.latest.retain(|k, l| {
            let drop = unwanted(k);
            if drop {
                removed += l.frame.len() + ENTRY_COST;
            }
            !drop
        });
        let latest = &self.latest;
        self.queue.retain(|e| match e {
            Entry::Latest(k) => latest.contains_key(k),
            _ => true,
        });
        self.queued_bytes = before - removed;
        if self.queue.is_empty() {
            self.pending_since = None;
        }
        self.publish_stats();
    }

    /// How long the oldest waiting frame has waited.
    pub fn waiting_for(&self, now: Instant) -> Duration {
        self.pending_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// The session's shared counters.
    pub fn stats(&self) -> &Arc<SessionStats> {
        &self.stats
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Encodes waiting frames — at least one, then up to about `max` bytes — into one buffer.
    /// `None` when nothing may go out now (batched prices wait for their flush).
    pub fn take_chunk(&mut self, max: usize) -> Option<Bytes> {
        if self.batch_waiting && self.queue.iter().all(|e| matches!(e, Entry::Latest(_))) {
            return None;
        }
        if self.queue.is_empty() {
            return None;
        }
        let mut out =
            BytesMut::with_capacity(self.queued_bytes.min(max) + 16 * self.queue.len().min(64));
        let mut spot = Vec::new();
        let mut option = Vec::new();
        // Data frames and the updates they carry (batches are counted when flushed).
        let (mut frames, mut updates) = (0u64, 0u64);
        while out.len() < max {
            let Some(entry) = self.queue.pop_front() else {
                break;
            };
            match entry {
                Entry::Control(frame) => {
                    self.queued_bytes -= frame.len() + ENTRY_COST;
                    encode(&mut out, OP_TEXT, frame.as_bytes());
                }
                Entry::Event(frame) => {
                    self.events -= 1;
                    self.queued_bytes -= frame.len() + ENTRY_COST;
                    frames += 1;
                    encode(&mut out, OP_TEXT, frame.as_bytes());
                }
                Entry::Latest(key) => {
                    let Some(l) = self.latest.remove(&key) else {
                        continue;
                    };
                    self.queued_bytes -= l.frame.len() + ENTRY_COST;
                    updates += 1;
                    match l.batch {
                        Some((PriceKind::Spot, update)) if self.batching.is_some() => {
                            spot.push(update)
                        }
                        Some((PriceKind::Option, update)) if self.batching.is_some() => {
                            option.push(update)
                        }
                        _ => {
                            frames += 1;
                            encode(&mut out, OP_TEXT, l.frame.as_bytes())
                        }
                    }
                }
                Entry::Ping => {
                    self.ping_queued = false;
                    self.queued_bytes -= ENTRY_COST;
                    encode(&mut out, OP_PING, &[]);
                }
                Entry::Pong => {
                    let payload = self.pong.take().unwrap_or_default();
                    self.queued_bytes -= payload.len() + ENTRY_COST;
                    encode(&mut out, OP_PONG, &payload);
                }
                Entry::Frame { opcode, payload } => {
                    self.queued_bytes -= payload.len() + ENTRY_COST;
                    frames += 1;
                    encode(&mut out, opcode, &payload);
                }
                Entry::Close(payload) => {
                    self.queued_bytes -= payload.len() + ENTRY_COST;
                    // Batched prices taken in this poll go before the close frame.
                    frames += batch_frames(&spot, &option);
                    flush_batches(&mut out, self.batching, &mut spot, &mut option);
                    encode(&mut out, OP_CLOSE, &payload);
                }
            }
        }
        frames += batch_frames(&spot, &option);
        flush_batches(&mut out, self.batching, &mut spot, &mut option);
        self.batch_waiting = false;
        if self.queue.is_empty() {
            self.pending_since = None;
        } else {
            self.pending_since = Some(Instant::now());
        }
        self.publish_stats();
        self.stats
            .sent_bytes
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        if frames > 0 {
            self.stats.frames_sent.fetch_add(frames, Ordering::Relaxed);
        }
        if updates > 0 {
            self.stats
                .updates_sent
                .fetch_add(updates, Ordering::Relaxed);
        }
        (!out.is_empty()).then(|| out.freeze())
    }
}

/// How many batch frames the waiting batched prices make (one per kind).
fn batch_frames(spot: &[ByteString], option: &[ByteString]) -> u64 {
    u64::from(!spot.is_empty()) + u64::from(!option.is_empty())
}

fn flush_batches(
    out: &mut BytesMut,
    batch_frame: Option<BatchFrame>,
    spot: &mut Vec<ByteString>,
    option: &mut Vec<ByteString>,
) {
    let Some(batch_frame) = batch_frame else {
        return;
    };
    for (kind, updates) in [(PriceKind::Spot, spot), (PriceKind::Option, option)] {
        if !updates.is_empty() {
            let frame = batch_frame(kind, updates);
            encode(out, OP_TEXT, frame.as_bytes());
            updates.clear();
        }
    }
}

/// What the session's writer task writes: whatever the outbox holds, coalesced into one chunk.
pub struct OutboxBody {
    outbox: Rc<RefCell<Outbox>>,
    /// Told when the connection is gone (the writer stopped).
    on_drop: Option<Box<dyn FnOnce()>>,
}

impl OutboxBody {
    pub fn new(outbox: Rc<RefCell<Outbox>>, on_drop: Box<dyn FnOnce()>) -> Self {
        OutboxBody {
            outbox,
            on_drop: Some(on_drop),
        }
    }
}

impl Stream for OutboxBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut outbox = self.outbox.borrow_mut();
        if let Some(bytes) = outbox.take_chunk(MAX_CHUNK) {
            return Poll::Ready(Some(Ok(bytes)));
        }
        if outbox.closed && outbox.queue.is_empty() {
            return Poll::Ready(None);
        }
        match &outbox.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => outbox.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        {
            let mut outbox = self.outbox.borrow_mut();
            outbox.receiver_gone = true;
            outbox.queue.clear();
            outbox.latest.clear();
            outbox.pong = None;
            outbox.queued_bytes = 0;
            outbox.pending_since = None;
        }
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downstream::delivery::FrameKind;
    use crate::downstream::socket::frame::OP_BINARY;
    use crate::symbol::Symbol;

    fn outbox() -> Outbox {
        with_budget(1 << 20)
    }

    fn with_budget(max_bytes: usize) -> Outbox {
        let limits = OutboxLimits {
            max_bytes,
            max_events: 4,
        };
        Outbox::new(limits, Arc::new(SessionStats::new(1, "test".into())))
    }

    fn key(s: &str) -> DeliverKey {
        DeliverKey {
            symbol: Symbol::parse(s).unwrap(),
            kind: FrameKind::Price,
        }
    }

    fn text(s: &str) -> ByteString {
        ByteString::from(s.to_owned())
    }

    /// Decodes the server frames of a chunk into (opcode, payload) pairs.
    fn frames(mut chunk: &[u8]) -> Vec<(u8, String)> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            let opcode = chunk[0] & 0x0f;
            let (len, head) = match chunk[1] {
                126 => (u16::from_be_bytes([chunk[2], chunk[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(chunk[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let payload = &chunk[head..head + len];
            out.push((opcode, String::from_utf8_lossy(payload).into_owned()));
            chunk = &chunk[head + len..];
        }
        out
    }

    #[test]
    fn many_frames_go_out_in_one_chunk_in_queue_order() {
        let mut o = outbox();
        o.push_control(text("ack")).unwrap();
        o.push_latest(&key("AAPL"), &text("a1"), &None);
        o.push_event(text("news"), false).unwrap();
        let chunk = o.take_chunk(MAX_CHUNK).unwrap();
        assert_eq!(
            frames(&chunk),
            [
                (OP_TEXT, "ack".into()),
                (OP_TEXT, "a1".into()),
                (OP_TEXT, "news".into())
            ]
        );
        assert!(o.take_chunk(MAX_CHUNK).is_none());
        assert_eq!(o.waiting_for(Instant::now()), Duration::ZERO);
    }

    #[test]
    fn a_newer_value_replaces_the_unsent_one_in_place() {
        let mut o = outbox();
        o.push_latest(&key("AAPL"), &text("a1"), &None);
        o.push_latest(&key("MSFT"), &text("m1"), &None);
        o.push_latest(&key("AAPL"), &text("a2"), &None);
        assert_eq!(o.len(), 2, "memory is bounded by the keys, not the updates");
        let chunk = o.take_chunk(MAX_CHUNK).unwrap();
        assert_eq!(
            frames(&chunk),
            [(OP_TEXT, "a2".into()), (OP_TEXT, "m1".into())]
        );
        o.publish_stats();
        assert_eq!(o.stats.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn droppable_events_past_the_event_limit_are_dropped_and_counted() {
        let mut o = outbox(); // room for 4 events
        for i in 0..4 {
            o.push_event(text(&format!("n{i}")), false).unwrap();
        }
        assert_eq!(o.push_event(text("n4"), false), Ok(()), "news is dropped");
        o.publish_stats();
        assert_eq!(o.stats.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn batched_prices_wait_for_the_flush_and_go_out_as_one_batch() {
        let mut o = outbox();
        o.set_batching(Some(crate::browser::price_batch));
        let batch = |s: &str| Some((PriceKind::Spot, text(&format!("{{\"symbol\":\"{s}\"}}"))));
        o.push_latest(&key("AAPL"), &text("a"), &batch("AAPL"));
        o.push_latest(&key("MSFT"), &text("m"), &batch("MSFT"));
        assert!(o.batch_waiting());
        assert!(o.take_chunk(MAX_CHUNK).is_none(), "waits for the flush");
        o.flush_batch();
        let chunk = o.take_chunk(MAX_CHUNK).unwrap();
        let f = frames(&chunk);
        assert_eq!(f.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&f[0].1).unwrap();
        assert_eq!(v["type"], "spot_price_batch");
        assert_eq!(v["count"], 2);
        assert_eq!(v["updates"][1]["symbol"], "MSFT");
    }

    #[test]
    fn a_client_that_does_not_read_has_at_most_one_ping_waiting() {
        let mut o = outbox();
        for _ in 0..10 {
            o.push_ping();
        }
        assert_eq!(o.len(), 1);
        assert_eq!(
            frames(&o.take_chunk(MAX_CHUNK).unwrap()),
            [(OP_PING, String::new())]
        );
        o.push_ping();
        assert_eq!(o.len(), 1, "the next heartbeat pings again");
    }

    #[test]
    fn close_goes_last_and_nothing_is_accepted_after_it() {
        let mut o = outbox();
        o.push_latest(&key("AAPL"), &text("a"), &None);
        o.close(4008, "slow client");
        o.push_control(text("late")).unwrap();
        let f = frames(&o.take_chunk(MAX_CHUNK).unwrap());
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].0, OP_CLOSE);
        assert!(f[1].1.ends_with("slow client"));
        assert!(o.is_closed() && o.is_empty());
    }

    #[test]
    fn forgetting_a_symbol_drops_its_unsent_frames() {
        let mut o = outbox();
        o.push_latest(&key("AAPL"), &text("a"), &None);
        o.push_latest(&key("MSFT"), &text("m"), &None);
        o.forget(|k| k.symbol.as_str() == "AAPL");
        assert_eq!(
            frames(&o.take_chunk(MAX_CHUNK).unwrap()),
            [(OP_TEXT, "m".into())]
        );
    }

    #[test]
    fn large_payloads_get_extended_lengths() {
        let mut out = BytesMut::new();
        encode(&mut out, OP_TEXT, &[b'x'; 300]);
        encode(&mut out, OP_TEXT, &vec![b'y'; 70_000]);
        let f = frames(&out);
        assert_eq!(f[0].1.len(), 300);
        assert_eq!(f[1].1.len(), 70_000);
    }

    #[test]
    fn a_chunk_stops_near_the_limit_and_the_rest_waits() {
        let mut o = outbox();
        for s in ["AAPL", "MSFT", "TSLA"] {
            o.push_latest(&key(s), &text(&"x".repeat(100)), &None);
        }
        let first = o.take_chunk(150).unwrap();
        assert_eq!(frames(&first).len(), 2);
        assert_eq!(frames(&o.take_chunk(150).unwrap()).len(), 1);
    }

    #[test]
    fn sdk_messages_are_never_conflated_and_every_byte_counts_against_the_budget() {
        let mut o = with_budget(2 * ENTRY_COST + 8);
        o.set_farewell(OP_TEXT, Bytes::from_static(b"407"));
        let bytes = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert!(o.push_frame(OP_BINARY, bytes("aaaa")).is_ok());
        assert!(o.push_frame(OP_BINARY, bytes("bbbb")).is_ok());
        // Past the budget — whatever the frame, data or an error reply — the outbox gives up:
        // what waits is let go, the farewell and the 4008 close go out, nothing more is taken.
        assert_eq!(o.push_frame(OP_TEXT, bytes("e")), Err(Overflow));
        assert!(o.overflowed());
        assert_eq!(o.push_frame(OP_BINARY, bytes("late")), Ok(()));
        let sent = frames(&o.take_chunk(MAX_CHUNK).unwrap());
        assert_eq!(sent[0], (OP_TEXT, "407".into()));
        assert_eq!(sent[1].0, OP_CLOSE);
        assert!(sent[1].1.contains("slow client"), "{sent:?}");
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(o.stats.slow_closed.load(Ordering::Relaxed));
    }

    #[test]
    fn replies_to_a_peer_that_never_reads_stay_within_the_budget() {
        let mut o = with_budget(64 * 1024);
        let mut refused = 0;
        for _ in 0..100_000 {
            if o.push_control(text("{\"type\":\"error\"}")).is_err() {
                refused += 1;
            }
            assert!(o.queued_bytes <= 64 * 1024 + 2 * ENTRY_COST + 125);
        }
        assert_eq!(
            refused, 1,
            "the first refusal closes; later pushes are ignored"
        );
        assert!(o.is_closed());
    }

    #[test]
    fn a_ping_flood_holds_one_pong_with_the_newest_payload() {
        let mut o = outbox();
        for i in 0..1000u32 {
            o.push_pong(Bytes::from(i.to_string()));
        }
        assert_eq!(o.len(), 1);
        assert_eq!(o.queued_bytes, 3 + ENTRY_COST);
        assert_eq!(
            frames(&o.take_chunk(MAX_CHUNK).unwrap()),
            [(OP_PONG, "999".into())]
        );
        assert_eq!(o.queued_bytes, 0);
    }

    #[test]
    fn a_must_deliver_event_that_does_not_fit_closes_with_4008() {
        let mut o = outbox(); // room for 4 events
        for i in 0..4 {
            o.push_event(text(&format!("n{i}")), false).unwrap();
        }
        assert_eq!(o.push_event(text("order"), true), Err(Overflow));
        let sent = frames(&o.take_chunk(MAX_CHUNK).unwrap());
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, OP_CLOSE);
    }

    #[test]
    fn the_budget_is_given_back_as_frames_go_out() {
        let mut o = outbox();
        o.push_latest(&key("AAPL"), &text("a1"), &None);
        o.push_latest(&key("AAPL"), &text("a22"), &None);
        o.push_event(text("news"), false).unwrap();
        o.push_pong(Bytes::from_static(b"p"));
        o.push_ping();
        o.push_frame(OP_TEXT, Bytes::from_static(b"x")).unwrap();
        assert_eq!(o.queued_bytes, 3 + 4 + 1 + 1 + 5 * ENTRY_COST);
        o.take_chunk(MAX_CHUNK).unwrap();
        assert_eq!(o.queued_bytes, 0);
    }
}
