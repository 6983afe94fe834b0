//! Refused credentials, remembered per client address and per client: past
//! `[auth] failures_before_delay` refusals, every further one delays that address (or client),
//! first for `first_failure_delay_ms`, then for twice as long as the last time, up to
//! `max_failure_delay_secs`; while it is delayed every attempt is refused unchecked. Also the failure log: the first refusal from an address in an
//! interval is one line, the rest are counted and summed up once per [`LOG_INTERVAL`].
//!
//! A plain struct with the time passed in, owned by [`Auth`](super::Auth) behind a mutex and
//! driven by every path that checks a credential (REST, browser, SDK streams, `/stream`). Its
//! memory is bounded: at most [`MAX_ADDRESSES`] addresses (the least recently refused is
//! forgotten first) and one record per configured client; a record is forgotten
//! [`FORGET_AFTER`] after its last refusal. IPv6 addresses count per /64, the block one host
//! usually has.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the counted refusals are summed up in the log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// A record with no refusal for this long (and no delay running) is forgotten: its count starts
/// over.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at once.
pub const MAX_ADDRESSES: usize = 4096;

/// `[auth] failures_before_delay` and `max_failure_delay_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureLimits {
    /// Refusals that cost nothing; the next one starts the delays.
    pub free: u32,
    /// The first delay; each further refusal doubles it.
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for FailureLimits {
    fn default() -> Self {
        FailureLimits {
            free: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// Who is refused: an address, or a configured client whose key id came with a wrong secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Address(IpAddr),
    Client(Arc<str>),
}

impl Subject {
    /// The address `ip` counts under: an IPv4 address as is (also when mapped into IPv6), an
    /// IPv6 address by its /64.
    pub fn address(ip: IpAddr) -> Subject {
        Subject::Address(match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6([s[0], s[1], s[2], s[3], 0, 0, 0, 0].into())
                }
            },
        })
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Address(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            Subject::Address(ip) => write!(f, "{ip}"),
            Subject::Client(id) => write!(f, "client {id}"),
        }
    }
}

#[derive(Debug)]
struct Record {
    /// Refusals of checked credentials since the record was made.
    failures: u32,
    delayed_until: Option<Instant>,
    last: Instant,
    /// When this record last wrote a log line, and the refusals since that are not logged yet
    /// (`unchecked` of them while delayed).
    logged_at: Option<Instant>,
    unlogged: u32,
    unchecked: u32,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            failures: 0,
            delayed_until: None,
            last: now,
            logged_at: None,
            unlogged: 0,
            unchecked: 0,
        }
    }

    fn delay_left(&self, now: Instant) -> Option<Duration> {
        self.delayed_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn stale(&self, now: Instant) -> bool {
        self.delay_left(now).is_none() && now.duration_since(self.last) >= FORGET_AFTER
    }

    /// Counts one refusal: the delay it starts, if any, and whether it is the first of a log
    /// interval (then it is logged on its own, the others are counted).
    fn count(&mut self, now: Instant, checked: bool, limits: FailureLimits) -> Refused {
        self.last = now;
        let mut delayed = None;
        if checked {
            self.failures = self.failures.saturating_add(1);
            if let Some(past) = self.failures.checked_sub(limits.free.saturating_add(1)) {
                let delay = limits
                    .first_delay
                    .saturating_mul(1 << past.min(20))
                    .min(limits.max_delay);
                self.delayed_until = Some(now + delay);
                delayed = Some(delay);
            }
        }
        let due = self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_INTERVAL);
        if due {
            self.logged_at = Some(now);
        } else {
            self.unlogged += 1;
            self.unchecked += u32::from(!checked);
        }
        Refused { log: due, delayed }
    }
}

/// What [`FailureBook::refused`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// Log this refusal on its own line (the first of its interval).
    pub log: bool,
    /// The delay it started, if any.
    pub delayed: Option<Duration>,
}

/// Every remembered refusal.
#[derive(Debug, Default)]
pub struct FailureBook {
    limits: FailureLimits,
    records: HashMap<Subject, Record>,
    addresses: usize,
}

impl FailureBook {
    pub fn new(limits: FailureLimits) -> FailureBook {
        FailureBook {
            limits,
            ..FailureBook::default()
        }
    }

    /// How long `subject` must still wait, if it is delayed.
    pub fn delay_left(&self, subject: &Subject, now: Instant) -> Option<Duration> {
        self.records.get(subject)?.delay_left(now)
    }

    /// Counts a refusal of `subject`: `checked` when the credential was compared and was wrong
    /// (that makes the delay grow), not when it was refused unchecked during a delay.
    pub fn refused(&mut self, subject: Subject, checked: bool, now: Instant) -> Refused {
        if !self.records.contains_key(&subject) {
            if matches!(subject, Subject::Address(_)) {
                if self.addresses >= MAX_ADDRESSES {
                    self.forget_stale(now);
                }
                if self.addresses >= MAX_ADDRESSES {
                    self.forget_least_recent();
                }
                self.addresses += 1;
            }
            self.records.insert(subject.clone(), Record::new(now));
        }
        let record = self.records.get_mut(&subject).expect("just inserted");
        record.count(now, checked, self.limits)
    }

    /// One line per subject with refusals not logged yet, summing them up; forgets stale
    /// records. Called every [`LOG_INTERVAL`] and at shutdown.
    pub fn summary(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        for (subject, record) in &mut self.records {
            if record.unlogged == 0 {
                continue;
            }
            let mut line = format!(
                "{subject}: {} more refused credentials since the last line",
                record.unlogged
            );
            if record.unchecked > 0 {
                line += &format!(" ({} refused unchecked while delayed)", record.unchecked);
            }
            if let Some(left) = record.delay_left(now) {
                line += &format!("; delayed for {} s more", left.as_secs_f64().ceil());
            }
            lines.push(line);
            record.unlogged = 0;
            record.unchecked = 0;
            record.logged_at = Some(now);
        }
        lines.sort();
        self.forget_stale(now);
        lines
    }

    /// Records remembered (addresses and clients).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn forget_stale(&mut self, now: Instant) {
        self.records
            .retain(|_, r| !(r.stale(now) && r.unlogged == 0));
        self.recount();
    }

    fn forget_least_recent(&mut self) {
        let oldest = self
            .records
            .iter()
            .filter(|(s, _)| matches!(s, Subject::Address(_)))
            .min_by_key(|(_, r)| r.last)
            .map(|(s, _)| s.clone());
        if let Some(subject) = oldest {
            self.records.remove(&subject);
        }
        self.recount();
    }

    fn recount(&mut self) {
        self.addresses = self
            .records
            .keys()
            .filter(|s| matches!(s, Subject::Address(_)))
            .count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Subject {
        Subject::address(text.parse().unwrap())
    }

    fn book(free: u32, max_secs: u64) -> FailureBook {
        FailureBook::new(FailureLimits {
            free,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(max_secs),
        })
    }

    #[test]
    fn delays_start_past_the_free_refusals_double_and_stop_at_the_maximum() {
        let mut b = book(3, 5);
        let t = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(b.refused(a.clone(), true, t).delayed, None);
            assert_eq!(b.delay_left(&a, t), None);
        }
        let secs = |b: &mut FailureBook| b.refused(a.clone(), true, t).delayed.map(|d| d.as_secs());
        assert_eq!(secs(&mut b), Some(1));
        assert_eq!(secs(&mut b), Some(2));
        assert_eq!(secs(&mut b), Some(4));
        assert_eq!(secs(&mut b), Some(5), "capped");
        assert_eq!(secs(&mut b), Some(5));
        assert_eq!(b.delay_left(&a, t), Some(Duration::from_secs(5)));
        assert_eq!(b.delay_left(&a, t + Duration::from_secs(5)), None);
        assert_eq!(b.delay_left(&ip("192.0.2.2"), t), None, "only that address");
    }

    #[test]
    fn refusals_while_delayed_do_not_make_the_delay_longer() {
        let mut b = book(0, 60);
        let t = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(
            b.refused(a.clone(), true, t).delayed,
            Some(Duration::from_secs(1))
        );
        for _ in 0..100 {
            assert_eq!(b.refused(a.clone(), false, t).delayed, None);
        }
        assert_eq!(b.delay_left(&a, t), Some(Duration::from_secs(1)));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.7"), ip("192.0.2.7"));
        assert_eq!(ip("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn the_log_gets_the_first_refusal_of_an_interval_and_then_a_count() {
        let mut b = book(2, 60);
        let t = Instant::now();
        let a = ip("192.0.2.1");
        assert!(b.refused(a.clone(), true, t).log, "the first is logged");
        for _ in 0..999 {
            assert!(!b.refused(a.clone(), true, t).log);
        }
        let lines = b.summary(t + Duration::from_secs(1));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("192.0.2.1: 999 more refused credentials"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("delayed for 59 s more"), "{}", lines[0]);
        assert!(
            b.summary(t + Duration::from_secs(2)).is_empty(),
            "said once"
        );
        // A new interval logs its first refusal again.
        assert!(!b.refused(a.clone(), true, t + Duration::from_secs(30)).log);
        assert!(b.refused(a, true, t + Duration::from_secs(62)).log);
    }

    #[test]
    fn memory_is_bounded_and_old_records_are_forgotten() {
        let mut b = book(5, 60);
        let t = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 500) {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            b.refused(Subject::address(addr.into()), true, t);
        }
        assert_eq!(b.len(), MAX_ADDRESSES);
        b.refused(Subject::Client("algo".into()), true, t);
        assert_eq!(
            b.len(),
            MAX_ADDRESSES + 1,
            "clients do not take addresses' room"
        );
        b.summary(t + FORGET_AFTER);
        assert!(b.is_empty(), "{} left", b.len());
    }

    #[test]
    fn a_running_delay_is_not_forgotten() {
        let mut b = book(0, 3600);
        let t = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..13 {
            b.refused(a.clone(), true, t);
        }
        b.summary(t + FORGET_AFTER);
        assert!(b.delay_left(&a, t + FORGET_AFTER).is_some());
    }
}
