//! `SymbolThrottle`: one actor per symbol in use; conflates the firehose to what people can read.
//!
//! Owns: the latest price state of its symbol (and, for crypto, its order book), its subscriber
//! list, and one throttle window per conflated stream (prices, trades, books).
//! Talks to: receives market events from its feed (`try_send`), subscriber changes from the
//! registry; sends pre-serialized frames to sessions (`try_send`) and writes the quote cache.
//! Stopped by the registry when the last subscriber (and pin) is gone and the grace period ends.
//!
//! The window rule (`browser-protocol.md`): the first update goes out at once; updates inside the
//! window replace the pending one; when the window closes, the latest pending value goes out and a
//! new window starts. So at most one update per interval, and the final value is never lost. The
//! rule lives in [`Window`], a plain struct the tests and benches drive without actors.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::prelude::*;
use bytestring::ByteString;

use crate::browser::{
    self, ChannelMask, ClientChannel, PriceFrame, PriceKind, PriceUpdate, PriceView,
};
use crate::market::{MarketEvent, Num, OrderBook, Trade};
use crate::quote_book::QuoteBook;
use crate::session::{Deliver, DeliverKey, FrameKind, SessionId, Subscriber};
use crate::symbol::{AssetClass, Symbol};
use crate::time::Timestamp;

/// What to do with an update that just arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// No window is open: send it now (a window opens).
    EmitNow,
    /// A window is open and nothing was pending: hold it and flush at this instant.
    ScheduleAt(Instant),
    /// A window is open and a flush is already scheduled: it replaces the pending value.
    Replace,
}

/// The latest-value throttle window for one stream of updates.
#[derive(Debug, Clone)]
pub struct Window {
    interval: Duration,
    /// End of the current window, if one is open.
    open_until: Option<Instant>,
    /// An update arrived inside the window and has not gone out.
    pending: bool,
}

impl Window {
    pub fn new(interval: Duration) -> Self {
        Window {
            interval,
            open_until: None,
            pending: false,
        }
    }

    /// An update arrived at `now`.
    pub fn offer(&mut self, now: Instant) -> Offer {
        match self.open_until {
            Some(until) if now < until => {
                if self.pending {
                    Offer::Replace
                } else {
                    self.pending = true;
                    Offer::ScheduleAt(until)
                }
            }
            _ => {
                self.open_until = Some(now + self.interval);
                self.pending = false;
                Offer::EmitNow
            }
        }
    }

    /// The scheduled flush fired: `true` when the pending value must go out now (a new window
    /// opens); `false` when a later update already went out through [`Window::offer`].
    pub fn flush(&mut self, now: Instant) -> bool {
        if self.pending {
            self.pending = false;
            self.open_until = Some(now + self.interval);
            true
        } else {
            false
        }
    }
}

/// A quote, trade, bar or book update for this throttle's symbol.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MarketEventReceived {
    pub event: MarketEvent,
}

/// Add a session or change the channels it wants; sends a snapshot for `quotes` when a price is known.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddSubscriber {
    pub session: SessionId,
    pub channels: ChannelMask,
    pub subscriber: Subscriber,
}

/// Remove a session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveSubscriber {
    pub session: SessionId,
}

/// The symbol is no longer in use.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopThrottle;

/// Settings shared by every throttle.
#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    pub interval: Duration,
    pub stale_after: Duration,
    pub mailbox_capacity: usize,
    /// Levels per side in `orderbook` frames.
    pub book_depth: usize,
}

struct Member {
    channels: ChannelMask,
    subscriber: Subscriber,
}

/// The per-symbol conflation actor.
pub struct SymbolThrottle {
    symbol: Symbol,
    /// Spot or option messages.
    kind: PriceKind,
    config: ThrottleConfig,
    /// Latest price state (bid/ask/sizes/last/exchange time).
    price: PriceView,
    /// Whether `price` holds anything yet.
    has_price: bool,
    /// Options: contracts traded since the throttle started.
    volume: i64,
    price_window: Window,
    /// Latest trade, for the `trades` channel.
    last_trade: Option<Trade>,
    trade_window: Window,
    /// Crypto order book, for the `orderbooks` channel.
    book: OrderBook,
    book_window: Window,
    /// Who receives what.
    members: HashMap<SessionId, Member>,
    /// Members per channel (indexed by `ClientChannel as usize`), so events for channels nobody
    /// wants are not serialized.
    wanted: [usize; ClientChannel::ALL.len()],
    /// Written on every price emission.
    quotes: QuoteBook,
}

impl SymbolThrottle {
    /// A throttle for `symbol`, seeded with a previously cached price so a resubscribe gets a
    /// snapshot at once.
    pub fn new(symbol: Symbol, config: ThrottleConfig, quotes: QuoteBook) -> Self {
        let cached = quotes.get(symbol.as_str());
        let kind = match symbol.class() {
            AssetClass::Option => PriceKind::Option,
            AssetClass::Stock | AssetClass::Crypto => PriceKind::Spot,
        };
        SymbolThrottle {
            price_window: Window::new(config.interval),
            trade_window: Window::new(config.interval),
            book_window: Window::new(config.interval),
            symbol,
            kind,
            config,
            has_price: cached.is_some(),
            price: cached.map(|c| c.price).unwrap_or_default(),
            volume: 0,
            last_trade: None,
            book: OrderBook::default(),
            members: HashMap::new(),
            wanted: [0; ClientChannel::ALL.len()],
            quotes,
        }
    }

    fn wants(&self, channel: ClientChannel) -> bool {
        self.wanted[channel as usize] > 0
    }

    /// Adds or replaces a member, keeping the per-channel counts true.
    fn insert_member(&mut self, session: SessionId, member: Member) {
        let added = member.channels;
        if let Some(old) = self.members.insert(session, member) {
            self.count(old.channels, false);
        }
        self.count(added, true);
    }

    fn remove_member(&mut self, session: SessionId) {
        if let Some(old) = self.members.remove(&session) {
            self.count(old.channels, false);
        }
    }

    fn count(&mut self, channels: ChannelMask, add: bool) {
        for c in channels.channels() {
            let n = &mut self.wanted[c as usize];
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    fn stale(&self) -> bool {
        self.price
            .timestamp
            .is_some_and(|t| t.age_at(Timestamp::now()) > self.config.stale_after)
    }

    fn price_frame(&self, snapshot: bool) -> PriceFrame {
        let mut update = PriceUpdate::new(&self.symbol, &self.price, self.stale());
        if self.kind == PriceKind::Option {
            update.volume = Some(Num::Int(self.volume));
        }
        browser::price_update(self.kind, &update, snapshot)
    }

    /// Runs `emit` now or at the window's trailing edge, as the window says.
    fn offer(
        &mut self,
        window: fn(&mut Self) -> &mut Window,
        emit: fn(&mut Self),
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        match window(self).offer(now) {
            Offer::EmitNow => emit(self),
            Offer::ScheduleAt(at) => {
                ctx.run_later(at - now, move |act, _| {
                    if window(act).flush(Instant::now()) {
                        emit(act);
                    }
                });
            }
            Offer::Replace => {}
        }
    }

    fn emit_price(&mut self) {
        self.quotes.put(&self.symbol, &self.price);
        if self.wants(ClientChannel::Quotes) {
            let PriceFrame { frame, update } = self.price_frame(false);
            self.deliver(
                ClientChannel::Quotes,
                FrameKind::Price,
                frame,
                Some((self.kind, update)),
            );
        }
    }

    fn emit_trade(&mut self) {
        if let Some(trade) = &self.last_trade {
            let frame = browser::trade(&self.symbol, trade);
            self.deliver(ClientChannel::Trades, FrameKind::Trade, frame, None);
        }
    }

    fn emit_book(&mut self) {
        let depth = self.config.book_depth;
        let frame = browser::orderbook(
            &self.symbol,
            &self.book.top_bids(depth),
            &self.book.top_asks(depth),
            self.book.timestamp,
        );
        self.deliver(ClientChannel::Orderbooks, FrameKind::Book, frame, None);
    }

    /// Hands the same bytes to every member that wants `channel`. Never blocks: a full session
    /// mailbox counts a drop on that session; a closed one removes the member.
    fn deliver(
        &mut self,
        channel: ClientChannel,
        kind: FrameKind,
        frame: ByteString,
        batch: Option<(PriceKind, ByteString)>,
    ) {
        let key = DeliverKey {
            symbol: self.symbol.clone(),
            kind,
        };
        let mut gone = Vec::new();
        for (id, m) in &self.members {
            if !m.channels.contains(channel) {
                continue;
            }
            let msg = Deliver {
                key: key.clone(),
                frame: frame.clone(),
                batch: batch.clone(),
            };
            match m.subscriber.deliver.try_send(msg) {
                Ok(()) => {}
                Err(SendError::Full(_)) => {
                    m.subscriber
                        .stats
                        .mailbox_drops
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(SendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            self.remove_member(id);
        }
    }
}

impl Actor for SymbolThrottle {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
    }
}

impl Handler<MarketEventReceived> for SymbolThrottle {
    type Result = ();

    fn handle(&mut self, msg: MarketEventReceived, ctx: &mut Context<Self>) {
        match msg.event {
            MarketEvent::Quote(q) => {
                self.price.bid_price = q.bid_price;
                self.price.ask_price = q.ask_price;
                self.price.bid_size = q.bid_size;
                self.price.ask_size = q.ask_size;
                self.price.timestamp = Some(q.timestamp);
                self.has_price = true;
                self.offer(|a| &mut a.price_window, Self::emit_price, ctx);
            }
            MarketEvent::Trade(t) => {
                self.price.last_price = Some(t.price);
                if self.price.timestamp.is_none() {
                    self.price.timestamp = Some(t.timestamp);
                }
                if let Num::Int(n) = t.size {
                    self.volume = self.volume.saturating_add(n);
                }
                self.has_price = true;
                self.last_trade = Some(t);
                self.offer(|a| &mut a.price_window, Self::emit_price, ctx);
                if self.wants(ClientChannel::Trades) {
                    self.offer(|a| &mut a.trade_window, Self::emit_trade, ctx);
                }
            }
            MarketEvent::Bar(b) => {
                if self.wants(ClientChannel::Bars) {
                    let frame = browser::bar(&self.symbol, &b);
                    self.deliver(ClientChannel::Bars, FrameKind::Bar(b.kind), frame, None);
                }
            }
            MarketEvent::Book(update) => {
                self.book.apply(&update);
                if self.wants(ClientChannel::Orderbooks) {
                    self.offer(|a| &mut a.book_window, Self::emit_book, ctx);
                }
            }
        }
    }
}

impl Handler<AddSubscriber> for SymbolThrottle {
    type Result = ();

    fn handle(&mut self, msg: AddSubscriber, _: &mut Context<Self>) {
        if msg.channels.contains(ClientChannel::Quotes) && self.has_price {
            let snapshot = Deliver {
                key: DeliverKey {
                    symbol: self.symbol.clone(),
                    kind: FrameKind::Price,
                },
                frame: self.price_frame(true).frame,
                batch: None,
            };
            if msg.subscriber.deliver.try_send(snapshot).is_err() {
                msg.subscriber
                    .stats
                    .mailbox_drops
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        self.insert_member(
            msg.session,
            Member {
                channels: msg.channels,
                subscriber: msg.subscriber,
            },
        );
    }
}

impl Handler<RemoveSubscriber> for SymbolThrottle {
    type Result = ();

    fn handle(&mut self, msg: RemoveSubscriber, _: &mut Context<Self>) {
        self.remove_member(msg.session);
    }
}

impl Handler<StopThrottle> for SymbolThrottle {
    type Result = ();

    fn handle(&mut self, _: StopThrottle, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_update_goes_out_at_once() {
        let t0 = Instant::now();
        let mut w = Window::new(200 * MS);
        assert_eq!(w.offer(t0), Offer::EmitNow);
    }

    #[test]
    fn burst_inside_window_gives_one_trailing_flush() {
        let t0 = Instant::now();
        let mut w = Window::new(200 * MS);
        assert_eq!(w.offer(t0), Offer::EmitNow);
        assert_eq!(w.offer(t0 + 10 * MS), Offer::ScheduleAt(t0 + 200 * MS));
        assert_eq!(w.offer(t0 + 20 * MS), Offer::Replace);
        assert_eq!(w.offer(t0 + 199 * MS), Offer::Replace);
        assert!(
            w.flush(t0 + 200 * MS),
            "the latest value goes out at the trailing edge"
        );
        // A new window opened at the flush: the next update inside it waits again.
        assert_eq!(w.offer(t0 + 250 * MS), Offer::ScheduleAt(t0 + 400 * MS));
    }

    #[test]
    fn quiet_window_closes_and_next_update_is_immediate() {
        let t0 = Instant::now();
        let mut w = Window::new(200 * MS);
        w.offer(t0);
        assert_eq!(w.offer(t0 + 300 * MS), Offer::EmitNow);
        assert!(!w.flush(t0 + 400 * MS), "nothing pending: nothing to flush");
    }

    #[test]
    fn late_timer_after_a_newer_immediate_emit_does_nothing() {
        let t0 = Instant::now();
        let mut w = Window::new(100 * MS);
        w.offer(t0);
        assert!(matches!(w.offer(t0 + 50 * MS), Offer::ScheduleAt(_)));
        // The timer is late; an update after the window end goes out at once and supersedes it.
        assert_eq!(w.offer(t0 + 150 * MS), Offer::EmitNow);
        assert!(!w.flush(t0 + 151 * MS));
    }

    #[test]
    fn at_most_one_emission_per_interval_under_a_steady_stream() {
        let t0 = Instant::now();
        let mut w = Window::new(100 * MS);
        let mut emitted = Vec::new();
        let mut next_flush: Option<Instant> = None;
        for i in 0..1000u32 {
            let now = t0 + i * MS; // one update per millisecond for one second
            if let Some(at) = next_flush.filter(|at| *at <= now) {
                next_flush = None;
                if w.flush(at) {
                    emitted.push(at);
                }
            }
            match w.offer(now) {
                Offer::EmitNow => emitted.push(now),
                Offer::ScheduleAt(at) => next_flush = Some(at),
                Offer::Replace => {}
            }
        }
        assert!((10..=11).contains(&emitted.len()), "{}", emitted.len());
        for pair in emitted.windows(2) {
            assert!(pair[1] - pair[0] >= 100 * MS);
        }
    }

    #[test]
    fn zero_interval_never_holds() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::ZERO);
        for i in 0..5 {
            assert_eq!(w.offer(t0 + i * MS), Offer::EmitNow);
        }
    }
}
