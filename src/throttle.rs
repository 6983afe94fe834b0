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
            let now = Instant::now();
            match window(act).flush(token, now) {
                Flush::Emit => emit(act),
                Flush::Idle => {}
                Flush::Rearm(at) => Self::arm(window, emit, at, token, now, ctx),
            }
        });
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
