//! The stage: who is connected to the replay server and ready for what, and the recorded
//! accounts' REST state. A plain struct behind one mutex ([`Shared`]); the server's sessions
//! change it, the player reads it to know where each frame goes, and the tests drive it alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use super::ReplayControl;
use crate::simulator::faults::SimFeed;

/// Where a recorded frame came from, and who gets it on replay.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Feed(&'static str),
    Account(String),
}

impl Source {
    /// A record's source: `stocks`, `crypto`, `options`, `news`, or `trading:<account>`.
    pub fn parse(text: &str) -> Option<Source> {
        if let Some(account) = text.strip_prefix("trading:") {
            return Some(Source::Account(account.to_owned()));
        }
        SimFeed::ALL
            .iter()
            .find(|f| **f != SimFeed::Trading && f.as_str() == text)
            .map(|f| Source::Feed(f.as_str()))
    }
}

/// One connection to the replay server.
struct Conn {
    source: Source,
    /// Whole WebSocket frames, encoded, to its writer.
    out: mpsc::Sender<Bytes>,
    /// Authenticated and subscribed (market data) or listening (trading).
    ready: bool,
    /// Told to close: never ready again (a subscribe it had already read changes nothing).
    kicked: bool,
    /// Told when the connection must close (a gap).
    kick: Arc<Notify>,
}

/// A recorded account's REST state.
#[derive(Debug, Clone)]
struct AccountView {
    state: Value,
    /// The record has this account's state after its reloads (records made before those were
    /// recorded hold only each segment's): only then is there something to wait for.
    reloads: bool,
    /// A trade update was played after this state was recorded: the state recorded after it
    /// (the original daemon's reload) is still to come.
    behind: bool,
}

/// Connections and accounts.
#[derive(Default)]
pub struct Stage {
    next_id: u64,
    conns: BTreeMap<u64, Conn>,
    accounts: HashMap<String, AccountView>,
    /// A market-data connection has subscribed (the `"subscribe"` start).
    subscribed: bool,
}

impl Stage {
    /// A new connection for `source`; answers its id.
    pub fn join(&mut self, source: Source, out: mpsc::Sender<Bytes>, kick: Arc<Notify>) -> u64 {
        self.next_id += 1;
        let conn = Conn {
            source,
            out,
            ready: false,
            kicked: false,
            kick,
        };
        self.conns.insert(self.next_id, conn);
        self.next_id
    }

    /// Whether connection `id` is ready for data; answers whether this is the first market-data
    /// subscription ever.
    pub fn set_ready(&mut self, id: u64, ready: bool) -> bool {
        let Some(conn) = self.conns.get_mut(&id).filter(|c| !c.kicked) else {
            return false;
        };
        conn.ready = ready;
        let first = ready && matches!(conn.source, Source::Feed(_)) && !self.subscribed;
        self.subscribed |= first;
        first
    }

    pub fn leave(&mut self, id: u64) {
        self.conns.remove(&id);
    }

    /// The ready connections of `source`: ids and writers.
    pub fn targets(&self, source: &Source) -> Vec<(u64, mpsc::Sender<Bytes>)> {
        self.conns
            .iter()
            .filter(|(_, c)| c.ready && c.source == *source)
            .map(|(id, c)| (*id, c.out.clone()))
            .collect()
    }

    /// The sources with a ready connection, of `which` (every source when `None`).
    pub fn ready_sources(&self, which: Option<&Source>) -> BTreeSet<Source> {
        self.conns
            .values()
            .filter(|c| c.ready && which.is_none_or(|w| c.source == *w))
            .map(|c| c.source.clone())
            .collect()
    }

    /// Whether every one of `sources` has a ready connection.
    pub fn all_ready(&self, sources: &BTreeSet<Source>) -> bool {
        let ready = self.ready_sources(None);
        sources.is_subset(&ready)
    }

    /// The connections of `which` (every one when `None`) are to close: they are no longer
    /// ready, nor can become so; answers what tells each.
    pub fn kick(&mut self, which: Option<&Source>) -> Vec<Arc<Notify>> {
        self.conns
            .values_mut()
            .filter(|c| !c.kicked && which.is_none_or(|w| c.source == *w))
            .map(|c| {
                c.ready = false;
                c.kicked = true;
                c.kick.clone()
            })
            .collect()
    }

    /// Connection `id` is to close (it stopped taking frames); answers what tells it.
    pub fn kick_one(&mut self, id: u64) -> Option<Arc<Notify>> {
        let conn = self.conns.get_mut(&id).filter(|c| !c.kicked)?;
        conn.ready = false;
        conn.kicked = true;
        Some(conn.kick.clone())
    }

    /// A snapshot record: `source` empty holds every account by id (a segment's start);
    /// `trading:<id>` holds one account, just reloaded.
    pub fn snapshot(&mut self, source: &str, payload: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        let mut put = |id: &str, state: Value, reload: bool| {
            let reloads = reload || self.accounts.get(id).is_some_and(|a| a.reloads);
            self.accounts.insert(
                id.to_owned(),
                AccountView {
                    state,
                    reloads,
                    behind: false,
                },
            );
        };
        match source.strip_prefix("trading:") {
            Some(id) => put(id, value, true),
            None => {
                if let Value::Object(all) = value {
                    for (id, state) in all {
                        put(&id, state, false);
                    }
                }
            }
        }
    }

    /// A fill of `account` was played: the state recorded after it is to come (if the record
    /// has reloads at all).
    pub fn updated(&mut self, account: &str) {
        if let Some(view) = self.accounts.get_mut(account) {
            view.behind = view.reloads;
        }
    }

    /// Whether `account` waits for the state recorded after a fill played.
    pub fn behind(&self, account: &str) -> bool {
        self.accounts.get(account).is_some_and(|v| v.behind)
    }

    /// `account`'s state (`{"account":…,"positions":[…],"orders":[…]}`) and whether it is
    /// behind the trade updates played.
    pub fn view(&self, account: &str) -> Option<(Value, bool)> {
        self.accounts
            .get(account)
            .map(|v| (v.state.clone(), v.behind))
    }

    /// A new round starts from the record's first snapshot.
    pub fn forget_accounts(&mut self) {
        self.accounts.clear();
    }
}

/// The stage and who waits for it to change, shared by the server and the player.
pub struct Shared {
    stage: Mutex<Stage>,
    /// Connections joined, became ready or left; a snapshot arrived.
    pub changed: Notify,
    pub control: Arc<ReplayControl>,
    /// The secret every connection and REST request must bring: the replay server answers the
    /// daemon that started it, not any local process.
    pub secret: String,
}

impl Shared {
    pub fn new(control: Arc<ReplayControl>, secret: String) -> Shared {
        Shared {
            stage: Mutex::new(Stage::default()),
            changed: Notify::new(),
            control,
            secret,
        }
    }

    /// The stage, for one short change or look; whoever changes it calls [`Shared::touch`].
    pub fn stage(&self) -> MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes who waits for a change.
    pub fn touch(&self) {
        self.changed.notify_waiters();
    }

    /// Waits until `ready` holds or `limit` passes; answers whether it holds.
    pub async fn wait_for(
        &self,
        limit: std::time::Duration,
        ready: impl Fn(&Stage) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if ready(&self.stage()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return ready(&self.stage());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(stage: &mut Stage, source: Source) -> (u64, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(4);
        (stage.join(source, tx, Arc::new(Notify::new())), rx)
    }

    #[test]
    fn frames_go_to_the_ready_connections_of_their_source() {
        let mut stage = Stage::default();
        let stocks = Source::parse("stocks").unwrap();
        let main = Source::parse("trading:main").unwrap();
        assert_eq!(main, Source::Account("main".into()));
        assert_eq!(Source::parse("trading"), None);
        let (a, _ra) = conn(&mut stage, stocks.clone());
        let (b, _rb) = conn(&mut stage, main.clone());
        assert!(stage.targets(&stocks).is_empty(), "not subscribed yet");
        assert!(
            !stage.set_ready(b, true),
            "a trading stream is not a subscription"
        );
        assert!(
            stage.set_ready(a, true),
            "the first market-data subscription"
        );
        let (c, _rc) = conn(&mut stage, stocks.clone());
        assert!(!stage.set_ready(c, true), "only the first counts");
        assert_eq!(stage.targets(&stocks).len(), 2);
        assert_eq!(stage.targets(&main).len(), 1);

        let both = BTreeSet::from([stocks.clone(), main.clone()]);
        assert!(stage.all_ready(&both));
        assert_eq!(stage.kick(Some(&stocks)).len(), 2);
        assert!(stage.targets(&stocks).is_empty(), "kicked: no more data");
        assert!(!stage.all_ready(&both));
        // A subscribe the kicked connection had already read does not make it ready again.
        stage.set_ready(a, true);
        assert!(!stage.all_ready(&both));
        assert!(stage.kick(Some(&stocks)).is_empty(), "told once");
        stage.leave(a);
        let (d, _rd) = conn(&mut stage, stocks.clone());
        stage.set_ready(d, true);
        assert!(stage.all_ready(&both), "back after the gap");
    }

    #[test]
    fn an_account_is_behind_from_a_trade_update_to_the_next_snapshot() {
        let mut stage = Stage::default();
        stage.snapshot(
            "",
            br#"{"main":{"account":{"cash":"100"},"positions":[],"orders":[]}}"#,
        );
        assert_eq!(
            stage.view("main").unwrap(),
            (
                serde_json::json!({"account":{"cash":"100"},"positions":[],"orders":[]}),
                false
            )
        );
        stage.updated("main");
        assert!(
            !stage.view("main").unwrap().1,
            "a record without reloads: nothing to wait for"
        );
        stage.snapshot(
            "trading:main",
            br#"{"account":{"cash":"100"},"positions":[],"orders":[]}"#,
        );
        stage.updated("main");
        assert!(stage.view("main").unwrap().1);
        stage.snapshot(
            "trading:main",
            br#"{"account":{"cash":"90"},"positions":[{"symbol":"AAPL"}],"orders":[]}"#,
        );
        let (state, behind) = stage.view("main").unwrap();
        assert!(!behind);
        assert_eq!(state["account"]["cash"], "90");
        assert_eq!(stage.view("other"), None);
        stage.forget_accounts();
        assert_eq!(stage.view("main"), None);
    }
}
