//! `Lease`: exactly one of several primaries holds the upstream connections.
//!
//! Each primary with `redis.lease = true` runs this task. It tries `SET {tickrelay}:lease
//! <instance> NX PX <ttl>` until it wins, then renews every third of the TTL (a script that
//! extends the key only while it still holds our name). While it holds the lease the upstream
//! [`Gate`] is open and the feeds and trading streams connect; otherwise they stand by.
//!
//! Two connections to one feed mean `406` for both, so the holder closes its connections
//! *before* its lease can expire: it counts its validity from the moment it *sent* the last
//! successful renewal (Redis can only have set the expiry later than that) and closes the gate
//! when that validity, less a safety margin, runs out without a renewal — Redis down or slow
//! included. A standby wins only once the key has expired or was released, so it can never connect
//! while the holder's lease is alive. A clean stop releases the lease at once; a crash frees it
//! after the TTL. The timing rule is [`LeaseClock`], a plain struct the unit tests drive.
//!
//! Owns: the lease state and counters the status shows. Talks to: Redis and the [`Gate`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{info, warn};
use serde::Serialize;

use super::target::RedisTarget;
use super::{timed, IO_TIMEOUT, LEASE, LEASE_WINS};
use crate::time::Timestamp;
use crate::upstream::gate::Gate;

/// Renews the lease only while it still holds our name.
const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the lease only while it still holds our name.
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// When the holder must consider its lease gone.
#[derive(Debug, Clone)]
pub struct LeaseClock {
    ttl: Duration,
    /// Given up this long before the lease could expire in Redis.
    margin: Duration,
    valid_until: Option<Instant>,
}

impl LeaseClock {
    pub fn new(ttl: Duration) -> Self {
        LeaseClock {
            ttl,
            margin: ttl / 5,
            valid_until: None,
        }
    }

    /// How often the holder renews and a standby tries to win.
    pub fn period(&self) -> Duration {
        self.ttl / 3
    }

    /// A `SET NX` or a renewal sent at `sent` succeeded: Redis set the expiry after `sent`.
    pub fn renewed(&mut self, sent: Instant) {
        self.valid_until = Some(sent + self.ttl - self.margin);
    }

    /// The lease is lost (someone else holds it, or we let it go).
    pub fn lost(&mut self) {
        self.valid_until = None;
    }

    /// Whether we may hold connections at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|t| now < t)
    }
}

/// The lease's value: the holder's name and when it won (Unix milliseconds), so every instance
/// can show who holds it and for how long.
pub fn lease_value(instance: &str, won_unix_ms: u64) -> String {
    format!("{instance} {won_unix_ms}")
}

/// The holder and its winning time of a lease value.
pub fn parse_lease_value(value: &str) -> Option<(String, Timestamp)> {
    let (name, ms) = value.rsplit_once(' ')?;
    let ms: i64 = ms.parse().ok()?;
    let at = Timestamp::new(
        ms.div_euclid(1000),
        (ms.rem_euclid(1000) * 1_000_000) as u32,
    )?;
    Some((name.to_owned(), at))
}

/// What the status shows.
#[derive(Clone, Debug, Serialize)]
pub struct LeaseStatus {
    /// This instance's name.
    pub instance: String,
    /// `leader` (holds the lease and the connections) or `standby`.
    pub role: &'static str,
    /// Who holds the lease, as last read (`None`: nobody, or Redis unreachable).
    pub holder: Option<String>,
    /// Since when the holder has held it, and for how long.
    pub holder_since: Option<Timestamp>,
    pub holder_age_ms: Option<u64>,
    /// Times the lease changed hands (every primary's wins but the very first).
    pub takeovers: Option<u64>,
    pub ttl_ms: u64,
    /// Times this instance won the lease, and lost or gave it up, while running.
    pub acquired: u64,
    pub lost: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct State {
    holder: Option<(String, Timestamp)>,
    wins: Option<u64>,
    acquired: u64,
    lost: u64,
    last_error: Option<String>,
}

/// The lease of one primary.
pub struct Lease {
    instance: String,
    ttl: Duration,
    gate: Arc<Gate>,
    state: Mutex<State>,
    /// The value written when this instance last won (released at shutdown).
    mine: Mutex<String>,
    stopping: AtomicBool,
}

impl Lease {
    pub fn new(instance: String, ttl: Duration, gate: Arc<Gate>) -> Arc<Lease> {
        Arc::new(Lease {
            instance,
            ttl,
            gate,
            state: Mutex::new(State::default()),
            mine: Mutex::new(String::new()),
            stopping: AtomicBool::new(false),
        })
    }

    pub fn status(&self) -> LeaseStatus {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Timestamp::now();
        LeaseStatus {
            instance: self.instance.clone(),
            role: if self.gate.is_open() {
                "leader"
            } else {
                "standby"
            },
            holder: s.holder.as_ref().map(|(name, _)| name.clone()),
            holder_since: s.holder.as_ref().map(|(_, t)| *t),
            holder_age_ms: s
                .holder
                .as_ref()
                .map(|(_, t)| (now.unix_nanos().saturating_sub(t.unix_nanos()) / 1_000_000) as u64),
            takeovers: s.wins.map(|w| w.saturating_sub(1)),
            ttl_ms: self.ttl.as_millis() as u64,
            acquired: s.acquired,
            lost: s.lost,
            last_error: s.last_error.clone(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the gate (won or kept) or closes it (lost), recording the change.
    fn set_leader(&self, leader: bool) {
        if !self.gate.set(leader) {
            return;
        }
        let mut s = self.state();
        if leader {
            s.acquired += 1;
            info!(
                "lease: {} holds the lease; connecting upstream",
                self.instance
            );
        } else {
            s.lost += 1;
            warn!(
                "lease: {} no longer holds the lease; upstream connections closed",
                self.instance
            );
        }
    }

    /// Runs for as long as the daemon does: win, renew, and close the gate in time.
    pub async fn run(self: Arc<Self>, target: RedisTarget) {
        let client = match target.client() {
            Ok(c) => c,
            Err(e) => {
                self.state().last_error = Some(format!("invalid redis.url: {e}"));
                return;
            }
        };
        let mut clock = LeaseClock::new(self.ttl);
        // What this instance writes when it wins (and renews or releases only while it is there).
        let mut mine = String::new();
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        let ttl_ms = self.ttl.as_millis() as u64;
        let mut tick = tokio::time::interval(clock.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if conn.is_none() {
                let connect = client.get_multiplexed_async_connection();
                match timed(IO_TIMEOUT.min(clock.period()), connect).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => self.state().last_error = Some(format!("connect: {e}")),
                }
            }
            if let Some(c) = conn.as_mut() {
                let sent = Instant::now();
                let leader = clock.holds(sent);
                if !leader {
                    let won_at = Timestamp::now().unix_nanos() / 1_000_000;
                    mine = lease_value(&self.instance, won_at as u64);
                }
                let attempt = async {
                    let held = if leader {
                        let n: i64 = redis::cmd("EVAL")
                            .arg(RENEW)
                            .arg(1)
                            .arg(LEASE)
                            .arg(&mine)
                            .arg(ttl_ms)
                            .query_async(c)
                            .await?;
                        n == 1
                    } else {
                        let won: Option<String> = redis::cmd("SET")
                            .arg(LEASE)
                            .arg(&mine)
                            .arg("NX")
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async(c)
                            .await?;
                        if won.is_some() {
                            redis::cmd("INCR")
                                .arg(LEASE_WINS)
                                .query_async::<()>(c)
                                .await?;
                        }
                        won.is_some()
                    };
                    let (holder, wins): (Option<String>, Option<u64>) = redis::cmd("MGET")
                        .arg(LEASE)
                        .arg(LEASE_WINS)
                        .query_async(c)
                        .await?;
                    Ok::<_, redis::RedisError>((held, holder, wins))
                };
                match timed(clock.period(), attempt).await {
                    Ok((held, holder, wins)) => {
                        if held {
                            clock.renewed(sent);
                            *self.mine.lock().unwrap_or_else(|e| e.into_inner()) = mine.clone();
                        } else {
                            clock.lost();
                        }
                        let mut s = self.state();
                        s.last_error = None;
                        s.holder = holder.as_deref().and_then(parse_lease_value);
                        s.wins = wins;
                    }
                    Err(e) => {
                        self.state().last_error = Some(format!("{e}"));
                        conn = None;
                    }
                }
            }
            // Past its validity without a renewal (Redis down, slow, or another holder), the
            // holder closes its connections: its lease may be about to expire.
            self.set_leader(clock.holds(Instant::now()));
        }
    }

    /// Daemon shutdown: stop renewing, close the gate and let the lease go so a standby takes
    /// over at once (best effort: if Redis does not answer, the lease expires by itself).
    pub async fn release(&self, target: &RedisTarget) {
        self.stopping.store(true, Ordering::SeqCst);
        let was_leader = self.gate.is_open();
        self.gate.set(false);
        if !was_leader {
            return;
        }
        let mine = self.mine.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let release = async {
            let client = target.client()?;
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(LEASE)
                .arg(&mine)
                .query_async::<i64>(&mut c)
                .await
        };
        match timed(Duration::from_secs(1), release).await {
            Ok(1) => info!("lease: released"),
            _ => info!("lease: not released; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_value_names_the_holder_and_when_it_won() {
        let v = lease_value("host-a-42", 1_700_000_000_123);
        let (name, at) = parse_lease_value(&v).unwrap();
        assert_eq!(name, "host-a-42");
        assert_eq!(at.unix_nanos(), 1_700_000_000_123_000_000);
        assert!(parse_lease_value("garbage").is_none());
    }

    #[test]
    fn the_holder_gives_up_before_the_lease_can_expire_in_redis() {
        let ttl = Duration::from_secs(5);
        let mut clock = LeaseClock::new(ttl);
        let t0 = Instant::now();
        assert!(!clock.holds(t0));
        clock.renewed(t0);
        // Redis expires the key at the earliest `ttl` after the command was sent.
        assert!(clock.holds(t0 + Duration::from_secs(3)));
        assert!(!clock.holds(t0 + ttl - Duration::from_millis(999)));
        assert!(!clock.holds(t0 + ttl));
        // Renewals come every third of the TTL: two missed ones still leave the holder valid.
        assert!(clock.period() * 2 < ttl - ttl / 5);
        clock.renewed(t0 + clock.period());
        assert!(clock.holds(t0 + ttl - Duration::from_millis(999)));
        clock.lost();
        assert!(!clock.holds(t0));
    }
}
