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
//! mailbox is full loses the batch (counted) rather than stall the reader.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use actix::prelude::*;

use crate::downstream::delivery::RawBatch;
use crate::vocab::{Encoding, FeedKind};

/// One feed's tap: who listens, in which encodings, and the hubs to send to.
#[derive(Default)]
pub struct Tap {
    json: AtomicUsize,
    msgpack: AtomicUsize,
    hubs: RwLock<Vec<Recipient<RawBatch>>>,
    /// Batches a full hub mailbox refused.
    pub dropped: AtomicU64,
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
    pub fn add_hub(&self, hub: Recipient<RawBatch>) {
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
            if hub.try_send(batch.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
