//! [`SubscriptionSet`]: the (channel, symbol) pairs a stream holds or should hold, with the set
//! arithmetic a feed needs to send only differences and to split large requests.

use std::collections::{BTreeMap, BTreeSet};

use super::stream::Channel;
use crate::symbol::Symbol;

/// A set of (channel, symbol) subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionSet(BTreeMap<Channel, BTreeSet<Symbol>>);

impl SubscriptionSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, channel: Channel, symbol: Symbol) -> bool {
        self.0.entry(channel).or_default().insert(symbol)
    }

    pub fn contains(&self, channel: Channel, symbol: &str) -> bool {
        self.0.get(&channel).is_some_and(|s| s.contains(symbol))
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeSet::is_empty)
    }

    /// Number of (channel, symbol) pairs.
    pub fn len(&self) -> usize {
        self.0.values().map(BTreeSet::len).sum()
    }

    /// Distinct symbols over all channels.
    pub fn symbols(&self) -> BTreeSet<Symbol> {
        self.0.values().flatten().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Channel, &BTreeSet<Symbol>)> {
        self.0
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(c, s)| (*c, s))
    }

    /// What `self` has that `other` lacks.
    pub fn difference(&self, other: &SubscriptionSet) -> SubscriptionSet {
        let mut out = SubscriptionSet::new();
        for (channel, symbols) in self.iter() {
            for s in symbols {
                if !other.contains(channel, s.as_str()) {
                    out.insert(channel, s.clone());
                }
            }
        }
        out
    }

    /// The same set without any of `symbols`.
    pub fn without_symbols(&self, symbols: &[Symbol]) -> SubscriptionSet {
        let mut out = self.clone();
        for set in out.0.values_mut() {
            set.retain(|s| !symbols.contains(s));
        }
        out
    }

    /// Splits into sets of at most `max` pairs, so no single message grows without bound.
    pub fn chunks(&self, max: usize) -> Vec<SubscriptionSet> {
        let mut out = vec![];
        let mut cur = SubscriptionSet::new();
        for (channel, symbols) in self.iter() {
            for s in symbols {
                if cur.len() == max {
                    out.push(std::mem::take(&mut cur));
                }
                cur.insert(channel, s.clone());
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}
