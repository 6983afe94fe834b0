//! One SDK program's subscriptions on one stream, as Alpaca keeps them (docs/alpaca-endpoint.md,
//! "Subscriptions", has the rules).
//!
//! A subscribe adds, an unsubscribe subtracts, a repeated full-set subscribe changes nothing
//! (alpaca-py re-sends everything each time). A request is checked whole before anything changes:
//! a channel the stream does not offer → `410`, `*` for option quotes → `413`, a symbol that is not
//! one of the stream's → `400`, more symbols than allowed → `405`; a refused request leaves the
//! set as it was. Corrections and cancel/errors come with trades (their keys in requests are
//! ignored; the ack mirrors trades under them). The ack lists every channel key of the stream,
//! empty ones too: the JS SDK replaces its state with it and fails on a missing key.
//!
//! The set lives in a [`RawFilter`] shared with the program's hub, which reads it for every
//! message; the session owns it and changes it only here.

use std::cell::RefCell;
use std::rc::Rc;

use super::protocol::Lists;
use crate::symbol::Symbol;
use crate::vocab::{Channel, SubscriptionSet};

use crate::downstream::delivery::RawFilter;
use crate::vocab::FeedKind;
use crate::wire::{Msg, V};

/// A refused request: the Alpaca error code.
pub type Refused = u16;

/// The subscriptions of one program.
#[derive(Debug)]
pub struct Subscriptions {
    feed: FeedKind,
    max_symbols: usize,
    filter: Rc<RefCell<RawFilter>>,
}

impl Subscriptions {
    pub fn new(feed: FeedKind, max_symbols: usize) -> Self {
        Subscriptions {
            feed,
            max_symbols,
            filter: Rc::default(),
        }
    }

    /// The filter the hub reads.
    pub fn filter(&self) -> Rc<RefCell<RawFilter>> {
        self.filter.clone()
    }

    /// Applies a subscribe (`add`) or unsubscribe; answers whether the set changed.
    pub fn apply(&mut self, add: bool, lists: &Lists) -> Result<bool, Refused> {
        let mut requested: Vec<(Channel, Symbol)> = Vec::new();
        for (key, symbols) in lists {
            if matches!(key.as_str(), "corrections" | "cancelErrors") {
                continue; // implied by trades
            }
            let Some(channel) = Channel::from_key(key) else {
                continue; // a key no stream has: ignored
            };
            if !self.feed.channels().contains(&channel) {
                return Err(410);
            }
            for raw in symbols {
                let symbol = if raw.trim() == "*" {
                    if self.feed == FeedKind::Options && channel == Channel::Quotes {
                        return Err(413);
                    }
                    Symbol::wildcard()
                } else {
                    let symbol = Symbol::parse(raw).map_err(|_| 400u16)?;
                    let fits = self.feed == FeedKind::News
                        || FeedKind::for_class(symbol.class()) == self.feed;
                    if !fits {
                        return Err(400);
                    }
                    symbol
                };
                requested.push((channel, symbol));
            }
        }
        let mut next = self.filter.borrow().clone();
        for (channel, symbol) in requested {
            if add {
                next.insert(channel, symbol);
            } else {
                next.remove(channel, &symbol);
            }
        }
        if add && next.symbol_count() > self.max_symbols {
            return Err(405);
        }
        let changed = next != *self.filter.borrow();
        if changed {
            *self.filter.borrow_mut() = next;
        }
        Ok(changed)
    }

    /// Lets go of symbols the upstream refused.
    pub fn drop_symbols(&mut self, symbols: &[Symbol]) {
        let mut filter = self.filter.borrow_mut();
        for channel in self.feed.channels() {
            for symbol in symbols {
                filter.remove(*channel, symbol);
            }
        }
    }

    /// What the upstream must carry for this program.
    pub fn upstream(&self) -> SubscriptionSet {
        let filter = self.filter.borrow();
        let mut set = SubscriptionSet::new();
        for channel in self.feed.channels() {
            for symbol in filter.symbols(*channel) {
                set.insert(*channel, symbol);
            }
        }
        set
    }

    /// The complete `subscription` message: every channel key of the stream, in Alpaca's order
    /// (the stocks ack has Alpaca's nine keys, and `imbalances` only when the program holds some,
    /// as go-sdk and cs-sdk read it if present).
    pub fn ack(&self) -> Msg {
        let filter = self.filter.borrow();
        let list = |c: Channel| {
            V::List(
                filter
                    .symbols(c)
                    .iter()
                    .map(|s| V::Str(s.as_str().to_owned()))
                    .collect(),
            )
        };
        let keys: &[(&'static str, Channel)] = match self.feed {
            FeedKind::Stocks => &[
                ("trades", Channel::Trades),
                ("quotes", Channel::Quotes),
                ("bars", Channel::Bars),
                ("updatedBars", Channel::UpdatedBars),
                ("dailyBars", Channel::DailyBars),
                ("statuses", Channel::Statuses),
                ("lulds", Channel::Lulds),
                ("corrections", Channel::Trades),
                ("cancelErrors", Channel::Trades),
            ],
            FeedKind::Crypto => &[
                ("trades", Channel::Trades),
                ("quotes", Channel::Quotes),
                ("orderbooks", Channel::Orderbooks),
                ("bars", Channel::Bars),
                ("updatedBars", Channel::UpdatedBars),
                ("dailyBars", Channel::DailyBars),
            ],
            FeedKind::Options => &[("trades", Channel::Trades), ("quotes", Channel::Quotes)],
            FeedKind::News => &[("news", Channel::News)],
        };
        let mut msg = vec![("T", V::from("subscription"))];
        msg.extend(keys.iter().map(|(k, c)| (*k, list(*c))));
        if self.feed == FeedKind::Stocks && !filter.symbols(Channel::Imbalances).is_empty() {
            msg.push(("imbalances", list(Channel::Imbalances)));
        }
        Msg(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(pairs: &[(&str, &[&str])]) -> Lists {
        pairs
            .iter()
            .map(|(k, s)| (k.to_string(), s.iter().map(|x| x.to_string()).collect()))
            .collect()
    }

    #[test]
    fn subscribe_adds_unsubscribe_subtracts_and_repeats_change_nothing() {
        let mut s = Subscriptions::new(FeedKind::Stocks, 10);
        let all = lists(&[("trades", &["AAPL"]), ("quotes", &["AAPL", "msft"])]);
        assert_eq!(s.apply(true, &all), Ok(true));
        assert_eq!(
            s.apply(true, &all),
            Ok(false),
            "alpaca-py re-sends the full set"
        );
        assert_eq!(s.apply(false, &lists(&[("quotes", &["AAPL"])])), Ok(true));
        let ack = s.ack().json();
        assert!(
            ack.starts_with(r#"{"T":"subscription","trades":["AAPL"],"quotes":["MSFT"],"bars":[]"#),
            "{ack}"
        );
        assert!(
            ack.contains(r#""corrections":["AAPL"],"cancelErrors":["AAPL"]"#),
            "{ack}"
        );
        assert_eq!(s.upstream().len(), 2);
    }

    #[test]
    fn every_stream_acks_every_channel_key() {
        let keys = |feed| {
            let v = Subscriptions::new(feed, 10).ack().to_value();
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k.join(",")
        };
        assert_eq!(
            keys(FeedKind::Crypto),
            "T,bars,dailyBars,orderbooks,quotes,trades,updatedBars"
        );
        assert_eq!(keys(FeedKind::Options), "T,quotes,trades");
        assert_eq!(keys(FeedKind::News), "T,news");
        assert_eq!(
            keys(FeedKind::Stocks),
            "T,bars,cancelErrors,corrections,dailyBars,lulds,quotes,statuses,trades,updatedBars",
            "Alpaca's nine"
        );
        let mut imbalances = Subscriptions::new(FeedKind::Stocks, 10);
        imbalances
            .apply(true, &lists(&[("imbalances", &["AAPL"])]))
            .unwrap();
        assert_eq!(
            imbalances.ack().to_value()["imbalances"],
            serde_json::json!(["AAPL"]),
            "and imbalances when it holds some"
        );
    }

    #[test]
    fn refusals_leave_the_set_unchanged() {
        let mut s = Subscriptions::new(FeedKind::Stocks, 2);
        s.apply(true, &lists(&[("trades", &["AAPL"])])).unwrap();
        let before = s.ack();
        assert_eq!(
            s.apply(true, &lists(&[("orderbooks", &["AAPL"])])),
            Err(410)
        );
        assert_eq!(
            s.apply(true, &lists(&[("trades", &["MSFT", "not a symbol"])])),
            Err(400)
        );
        assert_eq!(s.apply(true, &lists(&[("trades", &["BTC/USD"])])), Err(400));
        assert_eq!(
            s.apply(true, &lists(&[("quotes", &["MSFT", "SPY"])])),
            Err(405)
        );
        assert_eq!(s.ack(), before);
        // Keys no stream has, and the implicit ones, are ignored.
        assert_eq!(
            s.apply(
                true,
                &lists(&[("pricing", &["X"]), ("corrections", &["MSFT"])])
            ),
            Ok(false)
        );
    }

    #[test]
    fn star_is_everything_except_for_option_quotes() {
        let mut s = Subscriptions::new(FeedKind::Stocks, 1);
        assert_eq!(s.apply(true, &lists(&[("bars", &["*"])])), Ok(true));
        assert!(s.ack().json().contains(r#""bars":["*"]"#));
        let mut o = Subscriptions::new(FeedKind::Options, 10);
        assert_eq!(o.apply(true, &lists(&[("quotes", &["*"])])), Err(413));
        assert_eq!(o.apply(true, &lists(&[("trades", &["*"])])), Ok(true));
        let mut n = Subscriptions::new(FeedKind::News, 10);
        assert_eq!(
            n.apply(true, &lists(&[("news", &["*", "AAPL", "BTC/USD"])])),
            Ok(true)
        );
    }
}
