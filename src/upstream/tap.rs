//! The raw tap: every market message a feed reads, as Alpaca sent it, for SDK programs.
//!
//! Browsers get conflated updates through the throttles; SDK programs on the Alpaca-compatible
//! endpoint get *every* message, field for field. Owns: per feed, how many SDK programs want each
//! encoding ([`Tap::demand`]) and where to send the messages (one [`RawBatch`] per HTTP worker
//! hub, whatever the number of programs on it). Talks to: the feed, which splits each frame into
//! [`RawElement`](crate::downstream::delivery::RawElement)s only while someone listens, encoding each once per encoding in demand
//! ([`protocol::raw`](super::protocol::raw)); the hubs, which filter them per program with a
//! [`RawFilter`](crate::downstream::delivery::RawFilter) and queue one frame per program. The
//! messages themselves are the delivery contract's ([`crate::downstream::delivery`]). Nothing here blocks or awaits: a hub whose
//! mailbox is full loses the batch (counted) rather than stall the reader. A lost upstream
//! connection, and its return, go the same way ([`Tap::changed`]), so the hubs can close the
//! programs whose data has a gap.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use actix::prelude::*;

use crate::downstream::delivery::{RawBatch, UpstreamChanged};
use crate::vocab::{Encoding, FeedKind};

/// One feed's tap: who listens, in which encodings, and the hubs to send to.
#[derive(Default)]
pub struct Tap {
    json: AtomicUsize,
    msgpack: AtomicUsize,
    hubs: RwLock<Vec<TapHub>>,
    /// Batches a full hub mailbox refused.
    pub dropped: AtomicU64,
}

/// When a feed's consumers must hear of a gap: its connection ending after it had streamed, and
/// streaming again after that. One per feed actor, kept across the actor's restarts; a plain
/// struct the tests drive.
#[derive(Debug, Default)]
pub struct Gap {
    streamed: bool,
    lost: bool,
    error: Option<u16>,
}

impl Gap {
    /// An Alpaca error `code` is ending the connection.
    pub fn error(&mut self, code: u16) {
        self.error = Some(code);
    }

    /// The connection streams: whether it comes back from a loss (news to announce).
    pub fn streaming(&mut self) -> bool {
        self.streamed = true;
        self.error = None;
        std::mem::take(&mut self.lost)
    }

    /// The connection ended: `Some(error)` if it had streamed (a failed attempt during a loss is
    /// not news), with the Alpaca error code that ended it, if one did.
    pub fn ended(&mut self) -> Option<Option<u16>> {
        let error = self.error.take();
        if !std::mem::take(&mut self.streamed) {
            return None;
        }
        self.lost = true;
        Some(error)
    }

    /// [`Gap::streaming`] as the change a feed's tap announces.
    pub fn feed_streaming(&mut self, feed: FeedKind) -> Option<UpstreamChanged> {
        self.streaming().then_some(UpstreamChanged {
            feed,
            up: true,
            error: None,
        })
    }

    /// [`Gap::ended`] as the change a feed's tap announces.
    pub fn feed_ended(&mut self, feed: FeedKind) -> Option<UpstreamChanged> {
        self.ended().map(|error| UpstreamChanged {
            feed,
            up: false,
            error,
        })
    }
}

/// Where a tap sends: a worker's hub (or the relay), for batches and for upstream changes.
#[derive(Clone)]
pub struct TapHub {
    pub batches: Recipient<RawBatch>,
    pub changes: Recipient<UpstreamChanged>,
}

/// The taps of every feed, shared by the feeds, the hubs and the SDK sessions.
#[derive(Default)]
pub struct Taps {
    taps: [Tap; FeedKind::ALL.len()],
}

impl std::fmt::Debug for Taps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_map();
        for kind in FeedKind::ALL {
            list.entry(&kind.as_str(), &self.feed(kind).demand());
        }
        list.finish()
    }
}

impl Taps {
    pub fn new() -> Arc<Taps> {
        Arc::default()
    }

    pub fn feed(&self, feed: FeedKind) -> &Tap {
        &self.taps[feed as usize]
    }

    /// Batches a full hub mailbox refused, over every feed.
    pub fn dropped(&self) -> u64 {
        self.taps
            .iter()
            .map(|t| t.dropped.load(Ordering::Relaxed))
            .sum()
    }

    /// A worker's hub joins every tap (called once per worker at start-up).
    pub fn add_hub(&self, hub: TapHub) {
        for tap in &self.taps {
            tap.hubs
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(hub.clone());
        }
    }
}

impl Tap {
    /// An SDK program with `encoding` starts listening.
    pub fn listen(&self, encoding: Encoding) {
        self.counter(encoding).fetch_add(1, Ordering::Relaxed);
    }

    /// It stops.
    pub fn unlisten(&self, encoding: Encoding) {
        self.counter(encoding).fetch_sub(1, Ordering::Relaxed);
    }

    fn counter(&self, encoding: Encoding) -> &AtomicUsize {
        match encoding {
            Encoding::Json => &self.json,
            Encoding::Msgpack => &self.msgpack,
        }
    }

    /// Which encodings someone wants now: `(json, msgpack)`.
    pub fn demand(&self) -> (bool, bool) {
        (
            self.json.load(Ordering::Relaxed) > 0,
            self.msgpack.load(Ordering::Relaxed) > 0,
        )
    }

    /// Sends the batch to every hub (each filters for its own programs).
    pub fn publish(&self, batch: RawBatch) {
        let hubs = self.hubs.read().unwrap_or_else(|e| e.into_inner());
        for hub in hubs.iter() {
            if hub.batches.try_send(batch.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The feed's upstream connection was lost after streaming, or streams again: every hub
    /// hears it, after the batches sent before (never dropped, unlike a batch).
    pub fn changed(&self, change: UpstreamChanged) {
        let hubs = self.hubs.read().unwrap_or_else(|e| e.into_inner());
        for hub in hubs.iter() {
            hub.changes.do_send(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_a_loss_after_streaming_and_the_return_after_it() {
        let feed = FeedKind::Stocks;
        let mut gap = Gap::default();
        assert_eq!(
            gap.feed_ended(feed),
            None,
            "a first attempt that fails is no gap"
        );
        assert_eq!(
            gap.feed_streaming(feed),
            None,
            "the first stream is no return"
        );
        gap.error(406);
        assert_eq!(
            gap.feed_ended(feed),
            Some(UpstreamChanged {
                feed,
                up: false,
                error: Some(406)
            })
        );
        assert_eq!(
            gap.feed_ended(feed),
            None,
            "failed attempts during the loss"
        );
        assert_eq!(
            gap.feed_streaming(feed),
            Some(UpstreamChanged {
                feed,
                up: true,
                error: None
            })
        );
        assert_eq!(gap.ended(), Some(None), "the old error is forgotten");
    }
}
