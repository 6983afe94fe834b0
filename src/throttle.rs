//! `SymbolThrottle`: one actor per symbol in use; conflates the firehose to what people can read.
//!
//! Owns: the latest price state of its symbol (and, for crypto, its order book), the hubs that
//! want it (one per HTTP worker with interested sessions, with the channels they want) and one
//! throttle window per conflated stream (prices, trades, books).
//! Talks to: its feed leaves events in the symbol's [`Inlet`] (never blocking, never queueing: the
//! newest value replaces an undrained one) and wakes it with one [`Drain`] at a time; the registry
//! sets which hubs want what ([`SetHub`]); it sends each emitted frame, serialized once, to every
//! interested hub ([`Publish`], `try_send`) and writes the quote cache.
//! Stopped by the registry when the last subscriber (and pin) is gone and the grace period ends.
//!
//! The window rule (docs/browser-protocol.md, "Delivery"): the first update goes out at once; updates inside the
//! window replace the pending one; when the window closes, the latest pending value goes out and
//! the next window starts at that emission. So at most one update per interval, measured at the
//! emission, whatever the load and however late timers fire, and the final value is never lost.
//! The rule lives in [`Window`], a plain struct the tests and benches drive without actors.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::prelude::*;
use bytestring::ByteString;

use crate::browser::{self, PriceFrame, PriceUpdate, PriceView};
use crate::downstream::delivery::{FrameKind, HubId, Publish};
use crate::market::{
    Bar, BookUpdate, MarketEvent, Num, OrderBook, Quote, StatusEvent, Trade, TradeFix,
};
use crate::quote_book::QuoteBook;
use crate::scaleout::sink::SinkPrice;
use crate::symbol::{AssetClass, Symbol};
use crate::time::Timestamp;
use crate::vocab::{ChannelMask, ClientChannel, PriceKind};

/// Bars that may wait in an inlet; older ones are dropped (counted) past it.
const MAX_PENDING_BARS: usize = 64;

/// What to do with an update that just arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The interval since the last emission has passed: send it now (a new window starts).
    EmitNow,
    /// Too soon after the last emission and nothing was pending: hold it, and arm a timer for
    /// `at`; when it fires, call [`Window::flush`] with `token`.
    ScheduleAt { at: Instant, token: u64 },
    /// A value is already pending (its timer is armed): this one replaces it.
    Replace,
}

/// The latest-value throttle window for one stream of updates.
///
/// Invariant: two emissions are never closer than `interval`, whatever the arrival times and
/// however late timers fire, because every emission — immediate or trailing — checks the time
/// since the previous one itself rather than trusting the timer. Each armed timer carries a token;
/// a timer that outlived its window (the value went out early through a late [`Window::offer`])
/// finds its token stale and does nothing. A pending value always has a live timer, so the final
/// value is always delivered.
#[derive(Debug, Clone)]
pub struct Window {
    interval: Duration,
    /// When the last emission went out; the next may not go out before `last + interval`.
    last_emit: Option<Instant>,
    /// An update arrived too soon and has not gone out.
    pending: bool,
    /// The token of the one live timer (`pending` is true exactly while it is live).
    token: u64,
}

impl Window {
    pub fn new(interval: Duration) -> Self {
        Window {
            interval,
            last_emit: None,
            pending: false,
            token: 0,
        }
    }

    /// The earliest instant the next emission may go out.
    fn next_allowed(&self) -> Option<Instant> {
        self.last_emit.map(|t| t + self.interval)
    }

    fn emit(&mut self, now: Instant) {
        self.last_emit = Some(now);
        self.pending = false;
        self.token = self.token.wrapping_add(1); // any armed timer is now stale
    }

    /// An update arrived at `now`.
    pub fn offer(&mut self, now: Instant) -> Offer {
        match self.next_allowed() {
            Some(allowed) if now < allowed => {
                if self.pending {
                    Offer::Replace
                } else {
                    self.pending = true;
                    self.token = self.token.wrapping_add(1);
                    Offer::ScheduleAt {
                        at: allowed,
                        token: self.token,
                    }
                }
            }
            // The window is over (or never opened). A pending value whose timer is late goes out
            // now, replaced by this newer one.
            _ => {
                self.emit(now);
                Offer::EmitNow
            }
        }
    }

    /// The timer armed with `token` fired at `now`: `Flush::Emit` when the pending value must go
    /// out now (a new window starts), `Flush::Rearm` when it fired too early.
    pub fn flush(&mut self, token: u64, now: Instant) -> Flush {
        if !self.pending || token != self.token {
            return Flush::Idle;
        }
        match self.next_allowed() {
            Some(allowed) if now < allowed => Flush::Rearm(allowed),
            _ => {
                self.emit(now);
                Flush::Emit
            }
        }
    }

    /// Whether a value waits for the trailing edge.
    pub fn is_pending(&self) -> bool {
        self.pending
    }
}

/// What a fired timer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Send the pending value now.
    Emit,
    /// Nothing to do: the value already went out, or this timer is stale.
    Idle,
    /// The timer fired before the interval had passed: arm it again for this instant.
    Rearm(Instant),
}

/// Events of one symbol that arrived since its throttle last drained the inlet.
#[derive(Default)]
struct Pending {
    quote: Option<Quote>,
    trade: Option<Trade>,
    /// Integer trade sizes summed since the last drain (option volume).
    volume: i64,
    bars: VecDeque<Bar>,
    /// Trade corrections and cancels, in order (a few; the oldest go first when more arrive).
    fixes: VecDeque<TradeFix>,
    /// Canceled or incorrect prints (Alpaca's `u`), in order, likewise: never conflated with
    /// the trades that set the last price.
    voided: VecDeque<Trade>,
    /// Trading statuses and LULD bands, in order, likewise.
    statuses: VecDeque<StatusEvent>,
    book: Option<BookUpdate>,
    /// When the feed read the newest of these events (the pipeline latency starts there).
    read_at: Option<Instant>,
    /// A [`Drain`] is on its way to the throttle.
    notified: bool,
    /// The feed lost its upstream connection: the next price update says so.
    gap: bool,
}

/// What happened to an event handed to an [`Inlet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Waiting for the throttle (which has been woken).
    Queued,
    /// Waiting, replacing an undrained older value of the same kind.
    Conflated,
    /// The throttle is gone (the symbol was just released).
    Gone,
}

/// Where a feed hands the events of one symbol to its throttle. The feed's reader never waits:
/// it overwrites the newest quote and trade, merges book updates, keeps a few bars, and sends at
/// most one wake-up message at a time, so a busy throttle costs memory bounded per symbol and
/// never backs up into the upstream socket.
pub struct Inlet {
    pending: Arc<Mutex<Pending>>,
    wake: Recipient<Drain>,
}

impl Inlet {
    /// The feed lost its upstream connection: the symbol's next price update carries `gap`
    /// (taken with the next event; nothing is woken).
    pub fn mark_gap(&self) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).gap = true;
    }

    /// `read_at`: when the feed read the frame that carried it.
    pub fn offer(&self, event: MarketEvent, read_at: Instant) -> Offered {
        // A poisoned lock only means a panic elsewhere mid-update; the slot is still usable.
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.read_at = Some(read_at);
        let replaced = match event {
            MarketEvent::Quote(q) => p.quote.replace(q).is_some(),
            MarketEvent::Status(s) => {
                p.statuses.push_back(*s);
                let over = p.statuses.len() > MAX_PENDING_BARS;
                if over {
                    p.statuses.pop_front();
                }
                over
            }
            MarketEvent::Trade(t) if !t.sets_last_price() => {
                p.voided.push_back(t);
                let over = p.voided.len() > MAX_PENDING_BARS;
                if over {
                    p.voided.pop_front();
                }
                over
            }
            MarketEvent::Trade(t) => {
                if let Num::Int(n) = t.size {
                    p.volume = p.volume.saturating_add(n);
                }
                p.trade.replace(t).is_some()
            }
            MarketEvent::Bar(b) => {
                p.bars.push_back(b);
                let over = p.bars.len() > MAX_PENDING_BARS;
                if over {
                    p.bars.pop_front();
                }
                over
            }
            MarketEvent::Fix(f) => {
                p.fixes.push_back(*f);
                let over = p.fixes.len() > MAX_PENDING_BARS;
                if over {
                    p.fixes.pop_front();
                }
                over
            }
            MarketEvent::Book(u) => match &mut p.book {
                Some(book) => {
                    book.merge(u);
                    true
                }
                None => {
                    p.book = Some(u);
                    false
                }
            },
        };
        if p.notified {
            return if replaced {
                Offered::Conflated
            } else {
                Offered::Queued
            };
        }
        p.notified = true;
        drop(p);
        match self.wake.try_send(Drain) {
            Ok(()) => Offered::Queued,
            Err(SendError::Full(_)) => {
                // Cannot happen with one wake-up in flight, but never lose the next one.
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .notified = false;
                Offered::Queued
            }
            Err(SendError::Closed(_)) => Offered::Gone,
        }
    }
}

/// Events wait in the inlet: take them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// What `hub` wants of this symbol; empty channels remove it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetHub {
    pub hub: HubId,
    pub publish: Recipient<Publish>,
    pub channels: ChannelMask,
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
    /// Levels per side in `orderbook` frames.
    pub book_depth: usize,
    /// Frames a hub's full mailbox refused (shared by all throttles; shown in the status).
    pub hub_drops: Arc<AtomicU64>,
    /// Where every emitted price also goes, when Redis is configured.
    pub sink: Option<Arc<crate::scaleout::sink::PriceSink>>,
}

/// One hub that wants this symbol.
struct HubTarget {
    hub: HubId,
    publish: Recipient<Publish>,
    channels: ChannelMask,
}

/// The per-symbol conflation actor.
pub struct SymbolThrottle {
    symbol: Symbol,
    /// Spot or option messages.
    kind: PriceKind,
    config: ThrottleConfig,
    /// Events left by the feed.
    pending: Arc<Mutex<Pending>>,
    /// Latest price state (bid/ask/sizes/last/exchange time).
    price: PriceView,
    /// Options: contracts traded since the throttle started (seeded from the cache).
    volume: i64,
    price_window: Window,
    /// Latest trade, for the `trades` channel.
    last_trade: Option<Trade>,
    /// The trade before it (id and price), for a cancel of the latest one.
    previous_trade: Option<(Option<i64>, f64)>,
    /// Trade corrections and cancels sent so far (their frames' keys).
    fixes_sent: u64,
    trade_window: Window,
    /// Crypto order book, for the `orderbooks` channel.
    book: OrderBook,
    /// When the feed read the newest event this throttle has taken.
    read_at: Option<Instant>,
    book_window: Window,
    /// Who receives what.
    hubs: Vec<HubTarget>,
    /// Union of what the hubs want, so events for channels nobody wants are not serialized.
    wanted: ChannelMask,
    /// Written on every price emission.
    quotes: QuoteBook,
    /// The feed lost its upstream since the last price update went out: the next one says so.
    gap: bool,
}

impl SymbolThrottle {
    /// Starts the throttle of `symbol`, seeded with a previously cached price; returns its address
    /// and the inlet its feed writes to.
    pub fn start(
        symbol: Symbol,
        config: ThrottleConfig,
        quotes: QuoteBook,
    ) -> (Addr<SymbolThrottle>, Arc<Inlet>) {
        let cached = quotes.get(symbol.as_str());
        let kind = match symbol.class() {
            AssetClass::Option => PriceKind::Option,
            AssetClass::Stock | AssetClass::Crypto => PriceKind::Spot,
        };
        let pending = Arc::new(Mutex::new(Pending::default()));
        let throttle = SymbolThrottle {
            price_window: Window::new(config.interval),
            trade_window: Window::new(config.interval),
            book_window: Window::new(config.interval),
            symbol,
            kind,
            config,
            pending: pending.clone(),
            volume: cached.as_ref().map_or(0, |c| c.volume),
            price: cached.map(|c| c.price).unwrap_or_default(),
            last_trade: None,
            previous_trade: None,
            fixes_sent: 0,
            book: OrderBook::default(),
            gap: false,
            read_at: None,
            hubs: Vec::new(),
            wanted: ChannelMask::EMPTY,
            quotes,
        };
        let addr = throttle.start();
        let inlet = Arc::new(Inlet {
            pending,
            wake: addr.clone().recipient(),
        });
        (addr, inlet)
    }

    fn wants(&self, channel: ClientChannel) -> bool {
        self.wanted.contains(channel)
    }

    fn stale(&self) -> bool {
        self.price
            .timestamp
            .is_some_and(|t| t.age_at(Timestamp::now()) > self.config.stale_after)
    }

    fn price_frame(&self) -> PriceFrame {
        let mut update = PriceUpdate::new(&self.symbol, &self.price, self.stale());
        update.gap = self.gap;
        if self.kind == PriceKind::Option {
            update.volume = Some(Num::Int(self.volume));
        }
        browser::price_update(self.kind, &update, false)
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
            Offer::ScheduleAt { at, token } => Self::arm(window, emit, at, token, now, ctx),
            Offer::Replace => {}
        }
    }

    /// Arms the trailing-edge timer of a window.
    fn arm(
        window: fn(&mut Self) -> &mut Window,
        emit: fn(&mut Self),
        at: Instant,
        token: u64,
        now: Instant,
        ctx: &mut Context<Self>,
    ) {
        ctx.run_later(at.saturating_duration_since(now), move |act, ctx| {
            // Events that arrived while the window was pending waited in the inlet without
            // waking us: take them first, so the trailing edge carries the newest value.
            act.drain(ctx);
            let now = Instant::now();
            match window(act).flush(token, now) {
                Flush::Emit => emit(act),
                Flush::Idle => {}
                Flush::Rearm(at) => Self::arm(window, emit, at, token, now, ctx),
            }
        });
    }

    fn emit_price(&mut self) {
        self.quotes.put(&self.symbol, &self.price, self.volume);
        if let Some(sink) = &self.config.sink {
            if let Some(mut price) = SinkPrice::of(&self.price, self.symbol.class()) {
                price.gap = self.gap;
                sink.offer(&self.symbol, price);
            }
        }
        if self.wants(ClientChannel::Quotes) {
            let PriceFrame { frame, update } = self.price_frame();
            self.publish(FrameKind::Price, frame, Some((self.kind, update)));
        }
        self.gap = false;
    }

    fn emit_trade(&mut self) {
        if let Some(trade) = &self.last_trade {
            let frame = browser::trade(&self.symbol, trade);
            self.publish(FrameKind::Trade, frame, None);
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
        self.publish(FrameKind::Book, frame, None);
    }

    /// Hands the same bytes to every hub that wants this kind. Never blocks: a full hub mailbox
    /// counts a drop; a closed one (its worker stopped) removes the hub.
    fn publish(
        &mut self,
        kind: FrameKind,
        frame: ByteString,
        batch: Option<(PriceKind, ByteString)>,
    ) {
        let channel = kind.channel();
        let mut gone = false;
        for h in self.hubs.iter().filter(|h| h.channels.contains(channel)) {
            let msg = Publish {
                symbol: self.symbol.clone(),
                kind,
                frame: frame.clone(),
                batch: batch.clone(),
                read_at: self.read_at,
            };
            match h.publish.try_send(msg) {
                Ok(()) => {}
                Err(SendError::Full(_)) => {
                    self.config.hub_drops.fetch_add(1, Ordering::Relaxed);
                }
                Err(SendError::Closed(_)) => gone = true,
            }
        }
        if gone {
            self.hubs.retain(|h| h.publish.connected());
            self.recount();
        }
    }

    fn recount(&mut self) {
        self.wanted = self
            .hubs
            .iter()
            .fold(ChannelMask::EMPTY, |acc, h| acc.union(h.channels));
    }

    /// Takes what the feed left in the inlet and runs it through the windows.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        let p = {
            let mut slot = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *slot) // also clears `notified`: the next event wakes us again
        };
        let mut price_changed = false;
        if p.read_at.is_some() {
            self.read_at = p.read_at;
        }
        self.gap |= p.gap;
        if let Some(q) = p.quote {
            self.price.bid_price = q.bid_price;
            self.price.ask_price = q.ask_price;
            self.price.bid_size = q.bid_size;
            self.price.ask_size = q.ask_size;
            self.price.timestamp = Some(q.timestamp);
            self.price.bid_exchange = q.bid_exchange;
            self.price.ask_exchange = q.ask_exchange;
            self.price.conditions = q.conditions;
            self.price.tape = q.tape;
            price_changed = true;
        }
        for status in &p.statuses {
            if let Some(halted) = status.halted() {
                price_changed |= self.price.halted != halted;
                self.price.halted = halted;
            }
            if self.wants(ClientChannel::Statuses) {
                self.fixes_sent += 1;
                let frame = browser::status(&self.symbol, status, self.price.halted);
                self.publish(FrameKind::Status(self.fixes_sent), frame, None);
            }
        }
        for t in &p.voided {
            // A canceled or incorrect print: shown as such, never the last price.
            if self.wants(ClientChannel::Trades) {
                self.fixes_sent += 1;
                let frame = browser::trade(&self.symbol, t);
                self.publish(FrameKind::TradeFix(self.fixes_sent), frame, None);
            }
        }
        if let Some(t) = p.trade {
            self.price.last_price = Some(t.price);
            if self.price.timestamp.is_none() {
                self.price.timestamp = Some(t.timestamp);
            }
            self.volume = self.volume.saturating_add(p.volume);
            if let Some(last) = self.last_trade.replace(t) {
                self.previous_trade = Some((last.id, last.price));
            }
            price_changed = true;
            if self.wants(ClientChannel::Trades) {
                self.offer(|a| &mut a.trade_window, Self::emit_trade, ctx);
            }
        }
        for fix in p.fixes {
            price_changed |= self.apply_fix(&fix);
            if self.wants(ClientChannel::Trades) {
                self.fixes_sent += 1;
                let frame = browser::trade_fix(&self.symbol, &fix, self.price.last_price);
                self.publish(FrameKind::TradeFix(self.fixes_sent), frame, None);
            }
        }
        if price_changed {
            self.offer(|a| &mut a.price_window, Self::emit_price, ctx);
        }
        if self.wants(ClientChannel::Bars) {
            for b in p.bars {
                let frame = browser::bar(&self.symbol, &b);
                self.publish(FrameKind::Bar(b.kind), frame, None);
            }
        }
        if let Some(update) = p.book {
            self.book.apply(&update);
            if self.wants(ClientChannel::Orderbooks) {
                self.offer(|a| &mut a.book_window, Self::emit_book, ctx);
            }
        }
    }

    /// Applies a correction or cancel to the latest trade when it is the trade fixed (matched by
    /// id); answers whether `last_price` changed. A cancel of the latest trade falls back to the
    /// trade before it (the one this throttle saw: trades conflate in the inlet).
    fn apply_fix(&mut self, fix: &TradeFix) -> bool {
        let Some(last) = &mut self.last_trade else {
            return false;
        };
        let is_last = |id: Option<i64>| id.is_some() && id == last.id;
        match fix {
            TradeFix::Correction(c) if is_last(c.original_id) => {
                last.id = c.corrected_id;
                last.price = c.corrected_price;
                last.size = c.corrected_size;
                last.conditions = c.corrected_conditions.clone();
                self.price.last_price = Some(c.corrected_price);
                true
            }
            TradeFix::Cancel(x) if is_last(x.id) => {
                self.last_trade = None;
                let previous = self.previous_trade.take();
                self.price.last_price = previous.map(|(_, price)| price);
                true
            }
            _ => false,
        }
    }

    /// While the price window waits for its trailing edge, whose timer drains the inlet anyway,
    /// the feed need not wake us for every event (under a flood that was one cross-thread message
    /// per event): the inlet is marked as notified. Bars and books wait at most one interval.
    fn quiet_until_trailing_edge(&self) {
        if self.price_window.is_pending() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .notified = true;
        }
    }
}

impl Actor for SymbolThrottle {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // One Drain in flight at most, plus the registry's occasional SetHub.
        ctx.set_mailbox_capacity(64);
    }
}

impl Handler<Drain> for SymbolThrottle {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) {
        self.drain(ctx);
        self.quiet_until_trailing_edge();
    }
}

impl Handler<SetHub> for SymbolThrottle {
    type Result = ();

    fn handle(&mut self, msg: SetHub, _: &mut Context<Self>) {
        match self.hubs.iter().position(|h| h.hub == msg.hub) {
            Some(i) if msg.channels.is_empty() => {
                self.hubs.swap_remove(i);
            }
            Some(i) => self.hubs[i].channels = msg.channels,
            None if msg.channels.is_empty() => {}
            None => self.hubs.push(HubTarget {
                hub: msg.hub,
                publish: msg.publish,
                channels: msg.channels,
            }),
        }
        self.recount();
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
    use crate::rng::SplitMix64;

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
        let Offer::ScheduleAt { at, token } = w.offer(t0 + 10 * MS) else {
            panic!("a second update inside the window waits");
        };
        assert_eq!(at, t0 + 200 * MS);
        assert_eq!(w.offer(t0 + 20 * MS), Offer::Replace);
        assert_eq!(w.offer(t0 + 199 * MS), Offer::Replace);
        assert_eq!(w.flush(token, t0 + 200 * MS), Flush::Emit);
        // A new window started at the flush: the next update inside it waits again.
        assert!(matches!(
            w.offer(t0 + 250 * MS),
            Offer::ScheduleAt { at, .. } if at == t0 + 400 * MS
        ));
    }

    #[test]
    fn quiet_window_closes_and_next_update_is_immediate() {
        let t0 = Instant::now();
        let mut w = Window::new(200 * MS);
        w.offer(t0);
        assert_eq!(w.offer(t0 + 300 * MS), Offer::EmitNow);
        assert!(!w.is_pending());
    }

    #[test]
    fn a_stale_timer_never_emits_a_second_value_in_the_same_window() {
        // The bug this type exists to prevent: a late timer from the previous window fired right
        // after an immediate emission and sent a second update microseconds later.
        let t0 = Instant::now();
        let mut w = Window::new(100 * MS);
        w.offer(t0);
        let Offer::ScheduleAt { token: old, .. } = w.offer(t0 + 50 * MS) else {
            panic!("waits");
        };
        // The timer is late; an update after the window end goes out at once...
        assert_eq!(w.offer(t0 + 150 * MS), Offer::EmitNow);
        // ... another arrives in the new window and arms a new timer ...
        let Offer::ScheduleAt { token: new, at } =
            w.offer(t0 + 150 * MS + Duration::from_micros(1))
        else {
            panic!("waits");
        };
        // ... and the old timer, firing now, must not emit.
        assert_eq!(
            w.flush(old, t0 + 150 * MS + Duration::from_micros(2)),
            Flush::Idle
        );
        assert_eq!(w.flush(new, at), Flush::Emit);
    }

    #[test]
    fn an_early_timer_is_rearmed_not_obeyed() {
        let t0 = Instant::now();
        let mut w = Window::new(100 * MS);
        w.offer(t0);
        let Offer::ScheduleAt { token, at } = w.offer(t0 + 10 * MS) else {
            panic!("waits");
        };
        assert_eq!(w.flush(token, t0 + 99 * MS), Flush::Rearm(at));
        assert_eq!(w.flush(token, at), Flush::Emit);
    }

    #[test]
    fn zero_interval_never_holds() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::ZERO);
        for i in 0..5 {
            assert_eq!(w.offer(t0 + i * MS), Offer::EmitNow);
        }
    }

    /// One simulated run: updates with values 1..=n arrive at random times; each armed timer fires
    /// at its instant plus a random delay (up to `max_late`), and sometimes a second, duplicate
    /// firing of an old timer happens later still. Returns the emissions (time, value).
    fn simulate(seed: u64, interval: Duration, max_late: Duration) -> (Vec<(Instant, u64)>, u64) {
        let mut rng = SplitMix64::new(seed);
        let t0 = Instant::now();
        let mut w = Window::new(interval);
        let n = 1 + rng.below(300);
        // Arrivals: bursts and gaps, in microseconds.
        let mut t = 0u64;
        let mut arrivals = Vec::new();
        for v in 1..=n {
            t += match rng.below(4) {
                0 => 0,
                1 => rng.below(1_000),
                2 => rng.below(interval.as_micros() as u64 + 1),
                _ => rng.below(3 * interval.as_micros() as u64 + 1),
            };
            arrivals.push((t0 + Duration::from_micros(t), v));
        }
        // Timers: (fire at, token), kept sorted by time as they are armed.
        let mut timers: Vec<(Instant, u64)> = Vec::new();
        let mut latest = 0u64;
        let mut emitted = Vec::new();
        let late = |rng: &mut SplitMix64| {
            Duration::from_micros(rng.below(max_late.as_micros() as u64 + 1))
        };
        let mut next_arrival = 0;
        loop {
            let timer_first = match (timers.first(), arrivals.get(next_arrival)) {
                (Some((ft, _)), Some((at, _))) => ft < at || (ft == at && rng.below(2) == 0),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if timer_first {
                let (now, token) = timers.remove(0);
                match w.flush(token, now) {
                    Flush::Emit => emitted.push((now, latest)),
                    Flush::Idle => {}
                    Flush::Rearm(at) => {
                        let when = at + late(&mut rng);
                        timers.push((when, token));
                    }
                }
                // A stale duplicate firing of the same timer, later.
                if rng.below(10) == 0 {
                    let when = now + late(&mut rng);
                    timers.push((when, token));
                }
            } else {
                let (now, value) = arrivals[next_arrival];
                next_arrival += 1;
                latest = value;
                match w.offer(now) {
                    Offer::EmitNow => emitted.push((now, latest)),
                    Offer::ScheduleAt { at, token } => {
                        let when = at + late(&mut rng);
                        timers.push((when, token));
                    }
                    Offer::Replace => {}
                }
            }
            timers.sort_by_key(|(at, _)| *at);
        }
        (emitted, n)
    }

    #[test]
    fn property_emissions_are_never_closer_than_the_interval_and_the_final_value_goes_out() {
        for seed in 0..2_000u64 {
            let mut rng = SplitMix64::new(seed ^ 0x5eed);
            let interval = Duration::from_micros(1 + rng.below(300_000));
            let max_late = match seed % 3 {
                0 => Duration::ZERO,
                1 => interval / 2,
                _ => interval * 5,
            };
            let (emitted, last) = simulate(seed, interval, max_late);
            assert!(!emitted.is_empty(), "seed {seed}: nothing emitted");
            for pair in emitted.windows(2) {
                assert!(
                    pair[1].0 - pair[0].0 >= interval,
                    "seed {seed}: two emissions {:?} apart with an interval of {interval:?}",
                    pair[1].0 - pair[0].0
                );
                assert!(
                    pair[1].1 > pair[0].1,
                    "seed {seed}: an older value went out again"
                );
            }
            assert_eq!(
                emitted.last().map(|e| e.1),
                Some(last),
                "seed {seed}: the final value was not delivered"
            );
        }
    }

    #[test]
    fn property_a_steady_flood_gives_one_emission_per_interval() {
        // One update every 10 µs for two seconds, timers up to half an interval late: about
        // ten emissions, whatever the lateness.
        for seed in 0..20u64 {
            let t0 = Instant::now();
            let interval = 200 * MS;
            let mut rng = SplitMix64::new(seed);
            let mut w = Window::new(interval);
            let mut timer: Option<(Instant, u64)> = None;
            let mut emitted = 0;
            for i in 0..200_000u32 {
                let now = t0 + i * Duration::from_micros(10);
                if let Some((at, token)) = timer.filter(|(at, _)| *at <= now) {
                    timer = None;
                    if w.flush(token, at) == Flush::Emit {
                        emitted += 1;
                    }
                }
                match w.offer(now) {
                    Offer::EmitNow => emitted += 1,
                    Offer::ScheduleAt { at, token } => {
                        let late = Duration::from_micros(rng.below(100_000));
                        timer = Some((at + late, token));
                    }
                    Offer::Replace => {}
                }
            }
            assert!(
                (7..=11).contains(&emitted),
                "seed {seed}: {emitted} emissions in 2 s"
            );
        }
    }
}
