//! `Gate`: whether this instance may hold upstream connections at all.
//!
//! Alpaca allows one stream connection per feed and account. When several primaries share Redis,
//! only the holder of the lease (`scaleout::lease`) may connect; the others stand by. Owns: the
//! open/closed flag and the connection actors to tell when it flips. Talks to: the lease task,
//! which opens and closes it, and every feed and trading stream, which check it before each
//! connection attempt ([`Upstream::connect`](super::connection::Upstream::connect)) and hang up
//! at once when it closes ([`GateChanged`]). Without a lease there is no gate: always open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use actix::prelude::*;
use log::info;

/// The gate opened (`true`: connect now) or closed (`false`: hang up and stand by).
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct GateChanged(pub bool);

/// The switch every upstream connection of a lease-holding primary goes through.
#[derive(Default)]
pub struct Gate {
    open: AtomicBool,
    watchers: Mutex<Vec<Recipient<GateChanged>>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

impl Gate {
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// A connection actor wants to hear when the gate flips (its supervisor keeps the address
    /// across restarts, so once is enough).
    pub fn watch(&self, actor: Recipient<GateChanged>) {
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(actor);
    }

    /// Opens or closes the gate and tells every connection actor; answers whether it flipped.
    pub fn set(&self, open: bool) -> bool {
        if self.open.swap(open, Ordering::SeqCst) == open {
            return false;
        }
        info!(
            "lease: upstream connections {}",
            if open { "may open" } else { "must close" }
        );
        let watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        for w in watchers.iter() {
            w.do_send(GateChanged(open));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_closed_and_reports_only_flips() {
        let gate = Gate::default();
        assert!(!gate.is_open());
        assert!(gate.set(true));
        assert!(!gate.set(true));
        assert!(gate.is_open());
        assert!(gate.set(false));
        assert!(!gate.is_open());
    }
}
