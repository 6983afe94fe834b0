//! Who listens to each account's `trade_updates` on `/stream`, and who must hear that an
//! account's trading stream was lost: every listener at the loss, and at the return those that
//! started listening during it (they have had no updates since). A plain struct, owned by the
//! registry and driven by its handlers; the tests drive it alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::downstream::delivery::SessionId;

#[derive(Debug, Default)]
pub struct TradeListeners {
    listeners: HashMap<Arc<str>, HashSet<SessionId>>,
    /// Accounts whose trading stream is lost, and who started listening since.
    down: HashMap<Arc<str>, HashSet<SessionId>>,
}

impl TradeListeners {
    /// `session` starts (`on`) or stops listening to `account`.
    pub fn listen(&mut self, session: SessionId, account: Arc<str>, on: bool) {
        if let Some(joined) = self.down.get_mut(&account) {
            if on {
                joined.insert(session);
            } else {
                joined.remove(&session);
            }
        }
        let listeners = self.listeners.entry(account).or_default();
        if on {
            listeners.insert(session);
        } else {
            listeners.remove(&session);
        }
    }

    /// `session` is gone.
    pub fn forget(&mut self, session: SessionId) {
        for set in self.listeners.values_mut().chain(self.down.values_mut()) {
            set.remove(&session);
        }
    }

    /// Who gets `account`'s updates.
    pub fn of(&self, account: &str) -> impl Iterator<Item = &SessionId> {
        self.listeners.get(account).into_iter().flatten()
    }

    /// `account`'s trading stream was lost (`up: false`) or streams again: the sessions that
    /// must hear of the gap.
    pub fn changed(&mut self, account: Arc<str>, up: bool) -> Vec<SessionId> {
        if up {
            return self
                .down
                .remove(&account)
                .map(|joined| joined.into_iter().collect())
                .unwrap_or_default();
        }
        let all = self.of(&account).copied().collect();
        self.down.insert(account, HashSet::new());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_reaches_every_listener_and_the_return_those_that_joined_during_it() {
        let mut t = TradeListeners::default();
        let main: Arc<str> = Arc::from("main");
        t.listen(1, main.clone(), true);
        t.listen(2, main.clone(), true);
        t.listen(9, Arc::from("swing"), true);
        let mut lost = t.changed(main.clone(), false);
        lost.sort();
        assert_eq!(lost, [1, 2], "every listener of that account");
        t.listen(3, main.clone(), true);
        t.listen(4, main.clone(), true);
        t.listen(4, main.clone(), false);
        t.forget(1);
        assert_eq!(
            t.changed(main.clone(), true),
            [3],
            "joined during it, still there"
        );
        assert!(t.changed(main.clone(), true).is_empty(), "said once");
        let mut now: Vec<_> = t.of("main").copied().collect();
        now.sort();
        assert_eq!(now, [2, 3]);
    }
}
