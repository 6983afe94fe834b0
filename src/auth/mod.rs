//! Who may do what: tickrelay's own clients (`[clients.<id>]`, each a key pair and its scopes)
//! and what anonymous callers get (`[auth] anonymous_scopes`). Never the upstream Alpaca keys.
//!
//! Built once from the settings at start-up ([`Auth`]) and read, without an actor, by the REST
//! handlers (a request's [`Principal`] comes from `Authorization: Bearer <key_id>:<secret>`),
//! browser sessions (their `auth` frame) and SDK sessions (Alpaca's `auth` message). A leaf
//! module. Secrets are compared in constant time and never logged; with no client configured
//! every authentication is refused.
//!
//! Refused credentials are counted per client address and per client ([`failures`]): past a
//! few, every attempt from that address (or for that client's key id) waits out a growing delay
//! and is refused unchecked until it has; the refusals are logged once per address per minute,
//! with a count, so guessing fills neither the CPU nor the disk.
//!
//! Scopes:
//! - `market` — quotes, trades, bars, order books and news (browsers, REST quotes, SDK data streams);
//! - `account:<id>` — that account's REST views, its `positions` channel events and its SDK
//!   `trade_updates`;
//! - `pin` — pinning symbols through REST (`POST`/`DELETE /api/v1/subscriptions`);
//! - `admin` — the session list of `/api/v1/status` and other owners' pins.

pub mod failures;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::info;

use self::failures::{FailureBook, FailureLimits, Refused, Subject};
use crate::credentials::Secret;

/// One permission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Market,
    Pin,
    Admin,
    Account(String),
}

impl Scope {
    /// `market`, `pin`, `admin` or `account:<id>`.
    pub fn parse(text: &str) -> Result<Scope, String> {
        match text.trim() {
            "market" => Ok(Scope::Market),
            "pin" => Ok(Scope::Pin),
            "admin" => Ok(Scope::Admin),
            other => match other.strip_prefix("account:") {
                Some(id) if !id.is_empty() => Ok(Scope::Account(id.to_owned())),
                _ => Err(format!(
                    "unknown scope {other:?}: use market, pin, admin or account:<id>"
                )),
            },
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Market => f.write_str("market"),
            Scope::Pin => f.write_str("pin"),
            Scope::Admin => f.write_str("admin"),
            Scope::Account(id) => write!(f, "account:{id}"),
        }
    }
}

/// A set of scopes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    market: bool,
    pin: bool,
    admin: bool,
    accounts: Vec<Arc<str>>,
}

impl Scopes {
    /// Parses a list of scope names (blank ones are skipped, so an empty environment variable is
    /// an empty list); the first bad one is the error.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for name in names {
            if !name.as_ref().trim().is_empty() {
                scopes.add(Scope::parse(name.as_ref())?);
            }
        }
        Ok(scopes)
    }

    fn add(&mut self, scope: Scope) {
        match scope {
            Scope::Market => self.market = true,
            Scope::Pin => self.pin = true,
            Scope::Admin => self.admin = true,
            Scope::Account(id) => {
                if !self.accounts.iter().any(|a| **a == *id) {
                    self.accounts.push(Arc::from(id));
                }
            }
        }
    }

    pub fn market(&self) -> bool {
        self.market
    }
    pub fn pin(&self) -> bool {
        self.pin
    }
    pub fn admin(&self) -> bool {
        self.admin
    }
    /// Whether this set may see account `id`.
    pub fn account(&self, id: &str) -> bool {
        self.accounts.iter().any(|a| **a == *id)
    }
    /// The accounts this set may see, in the order they were granted.
    pub fn accounts(&self) -> &[Arc<str>] {
        &self.accounts
    }

    /// Every scope of either set.
    pub fn union(&self, other: &Scopes) -> Scopes {
        let mut all = self.clone();
        all.market |= other.market;
        all.pin |= other.pin;
        all.admin |= other.admin;
        for a in &other.accounts {
            all.add(Scope::Account(a.to_string()));
        }
        all
    }

    /// Each scope by name.
    pub fn names(&self) -> Vec<String> {
        let flags = [
            (self.market, Scope::Market),
            (self.pin, Scope::Pin),
            (self.admin, Scope::Admin),
        ];
        flags
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, s)| s.to_string())
            .chain(self.accounts.iter().map(|a| format!("account:{a}")))
            .collect()
    }
}

/// Who made a request: a client, or nobody in particular, and what it may do.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The client id; `None` for an anonymous caller.
    pub client: Option<Arc<str>>,
    pub scopes: Arc<Scopes>,
}

impl Principal {
    /// The name pins and logs use: the client id, or `anonymous`.
    pub fn name(&self) -> &str {
        self.client.as_deref().unwrap_or(ANONYMOUS)
    }
}

/// The owner name of everything done without credentials.
pub const ANONYMOUS: &str = "anonymous";

/// One configured client.
#[derive(Debug)]
pub struct Client {
    /// Its id in the settings (`[clients.<id>]`), for logs and status.
    pub id: Arc<str>,
    pub key_id: String,
    secret: Secret,
    /// What it may do once authenticated (the anonymous scopes included).
    pub scopes: Arc<Scopes>,
}

impl Client {
    /// Client `id`, known by `key_id` and `secret`, allowed `scopes`.
    pub fn new(id: &str, key_id: &str, secret: Secret, scopes: Scopes) -> Client {
        Client {
            id: Arc::from(id),
            key_id: key_id.to_owned(),
            secret,
            scopes: Arc::new(scopes),
        }
    }

    pub fn principal(&self) -> Principal {
        Principal {
            client: Some(self.id.clone()),
            scopes: self.scopes.clone(),
        }
    }
}

/// Why a credential was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not `<key_id>:<secret>` (or not `Bearer …` on REST).
    Malformed,
    /// No client has this key pair.
    Unknown,
    /// Too many refusals from this address, or for this key id: nothing is checked until the
    /// delay is over.
    Delayed(Duration),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Malformed => "expected a credential of the form <key_id>:<secret>",
            Refusal::Unknown => "unknown key pair",
            Refusal::Delayed(left) => {
                return write!(
                    f,
                    "too many refused credentials; nothing is checked for {} s",
                    retry_after(*left)
                )
            }
        })
    }
}

/// Whole seconds to wait out `delay` (at least one).
pub fn retry_after(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
}

/// Where a credential came from: the caller's address (when known) and the path it used
/// (`REST`, `browser`, `sdk:iex`, …), for the delays and the log.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    pub from: Option<IpAddr>,
    pub via: &'a str,
}

/// Every configured client and the anonymous scopes.
#[derive(Debug, Default)]
pub struct Auth {
    clients: Vec<Client>,
    anonymous: Arc<Scopes>,
    failures: Mutex<FailureBook>,
}

impl Auth {
    /// `clients`, each of which also gets the `anonymous` scopes; refusals delayed past
    /// `limits`.
    pub fn new(clients: Vec<Client>, anonymous: Scopes, limits: FailureLimits) -> Auth {
        let clients = clients
            .into_iter()
            .map(|mut c| {
                c.scopes = Arc::new(c.scopes.union(&anonymous));
                c
            })
            .collect();
        Auth {
            clients,
            anonymous: Arc::new(anonymous),
            failures: Mutex::new(FailureBook::new(limits)),
        }
    }

    /// No client configured.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// What a caller without credentials may do.
    pub fn anonymous(&self) -> Principal {
        Principal {
            client: None,
            scopes: self.anonymous.clone(),
        }
    }

    /// The client whose key pair this is, if any. Every client's secret is compared, in constant
    /// time, so neither which key ids exist nor how much of a secret matched shows in the timing.
    /// Counts nothing: callers use [`Auth::sign_in`].
    fn find(&self, key_id: &str, secret: &str) -> (Option<&Client>, Option<&Client>) {
        let mut found = None;
        let mut named = None;
        for client in &self.clients {
            let key_ok = constant_time_eq(client.key_id.as_bytes(), key_id.as_bytes());
            let secret_ok = constant_time_eq(client.secret.expose().as_bytes(), secret.as_bytes());
            if key_ok & secret_ok {
                found = Some(client);
            }
            if key_ok {
                named = Some(client);
            }
        }
        (found, named)
    }

    /// The client whose key pair this is: refused unchecked while `at`'s address is delayed; a
    /// wrong pair for a client that is delayed (guessed at from many addresses) is answered as
    /// delayed; every refusal counted.
    pub fn sign_in(&self, at: Attempt, key_id: &str, secret: &str) -> Result<&Client, Refusal> {
        let now = Instant::now();
        let address = at.from.map(Subject::address);
        if let Some(refusal) = self.delayed(at, address.as_ref(), now) {
            return Err(refusal);
        }
        let (found, named) = self.find(key_id, secret);
        // The right pair signs in even while its client is delayed: otherwise anyone who knows
        // a key id could keep its client out with a wrong guess a minute.
        if let Some(found) = found {
            return Ok(found);
        }
        let client = named.map(|c| Subject::Client(c.id.clone()));
        if let Some(refusal) = self.delayed(at, client.as_ref(), now) {
            // A wrong pair for a delayed client: answered as delayed, counted against its address.
            self.count(at, address, Refusal::Unknown, now);
            return Err(refusal);
        }
        self.count(at, address.into_iter().chain(client), Refusal::Unknown, now);
        Err(Refusal::Unknown)
    }

    /// A `<key_id>:<secret>` token (key ids hold no `:`).
    pub fn token(&self, at: Attempt, token: &str) -> Result<Principal, Refusal> {
        match token.trim().split_once(':') {
            Some((key, secret)) => self.sign_in(at, key, secret).map(Client::principal),
            None => Err(self.malformed(at)),
        }
    }

    /// The value of an `Authorization` header: `Bearer <key_id>:<secret>`.
    pub fn bearer(&self, at: Attempt, header: &str) -> Result<Principal, Refusal> {
        match header.trim().split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => self.token(at, token),
            _ => Err(self.malformed(at)),
        }
    }

    /// Counts a credential refused for its form (a REST header that is not text, a token without
    /// `:`) and says why it was refused.
    pub fn malformed(&self, at: Attempt) -> Refusal {
        let now = Instant::now();
        let address = at.from.map(Subject::address);
        if let Some(refusal) = self.delayed(at, address.as_ref(), now) {
            return refusal;
        }
        self.count(at, address, Refusal::Malformed, now);
        Refusal::Malformed
    }

    /// Logs the refusals counted since the last call, one line per address or client; called
    /// once per [`failures::LOG_INTERVAL`] and at shutdown.
    pub fn log_refusals(&self) {
        for line in self.book().summary(Instant::now()) {
            info!("auth refused: {line}");
        }
    }

    /// `Some` refusal, counted, when `subject` is delayed.
    fn delayed(&self, at: Attempt, subject: Option<&Subject>, now: Instant) -> Option<Refusal> {
        let subject = subject?;
        let mut book = self.book();
        let left = book.delay_left(subject, now)?;
        let refusal = Refusal::Delayed(left);
        let refused = book.refused(subject.clone(), false, now);
        drop(book);
        log_refusal(at, subject, refusal, &refused);
        Some(refusal)
    }

    fn count(
        &self,
        at: Attempt,
        subjects: impl IntoIterator<Item = Subject>,
        refusal: Refusal,
        now: Instant,
    ) {
        for subject in subjects {
            let refused = self.book().refused(subject.clone(), true, now);
            log_refusal(at, &subject, refusal, &refused);
        }
    }

    fn book(&self) -> MutexGuard<'_, FailureBook> {
        // The book holds counts only: one left half-updated by a panic is still usable.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The line for the first refusal of a log interval (the others are counted for the summary).
/// Names the address or client id, never what was presented.
fn log_refusal(at: Attempt, subject: &Subject, refusal: Refusal, refused: &Refused) {
    if !refused.log {
        return;
    }
    let from = match (subject, at.from) {
        (Subject::Client(_), Some(ip)) => format!(" from {ip}"),
        _ => String::new(),
    };
    let delay = match refused.delayed {
        Some(d) => format!("; delayed {} s", retry_after(d)),
        None => String::new(),
    };
    info!(
        "auth refused: {subject}{from} on {} ({refusal}){delay}; further refusals are counted and logged once a minute",
        at.via
    );
}

/// Whether `a == b`, taking the same time whatever their contents (the time depends only on the
/// longer length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Attempt = Attempt {
        from: None,
        via: "test",
    };

    impl Auth {
        fn authenticate(&self, key_id: &str, secret: &str) -> Option<&Client> {
            self.find(key_id, secret).0
        }
    }

    fn auth(anonymous: &[&str]) -> Auth {
        let client = |id: &str, key: &str, secret: &str, scopes: &[&str]| {
            Client::new(id, key, Secret::new(secret), Scopes::parse(scopes).unwrap())
        };
        Auth::new(
            vec![
                client(
                    "algo",
                    "algo-key",
                    "algo-secret",
                    &["market", "account:main"],
                ),
                client("notebook", "nb-key", "nb-secret", &["market"]),
            ],
            Scopes::parse(anonymous).unwrap(),
            FailureLimits::default(),
        )
    }

    #[test]
    fn the_right_pair_finds_its_client_and_nothing_else_does() {
        let c = auth(&["market"]);
        let algo = c.authenticate("algo-key", "algo-secret").unwrap();
        assert_eq!(&*algo.id, "algo");
        assert!(algo.scopes.account("main"));
        assert_eq!(
            &*c.authenticate("nb-key", "nb-secret").unwrap().id,
            "notebook"
        );
        assert!(
            c.authenticate("algo-key", "nb-secret").is_none(),
            "another's secret"
        );
        assert!(
            c.authenticate("algo-key", "algo-secre").is_none(),
            "a prefix"
        );
        assert!(
            c.authenticate("algo-key", "algo-secret ").is_none(),
            "longer"
        );
        assert!(c.authenticate("", "").is_none());
        assert!(c.authenticate("nb-key", "").is_none(), "an empty secret");
    }

    #[test]
    fn with_no_client_configured_everything_is_refused() {
        let none = Auth::default();
        assert!(none.is_empty());
        assert!(none.authenticate("any", "thing").is_none());
        assert_eq!(none.token(AT, "any:thing").unwrap_err(), Refusal::Unknown);
        assert!(!none.anonymous().scopes.market(), "no settings, no scopes");
    }

    #[test]
    fn bearer_tokens_name_a_client_and_carry_its_scopes_and_the_anonymous_ones() {
        let a = auth(&["pin"]);
        let algo = a.bearer(AT, "Bearer algo-key:algo-secret").unwrap();
        assert_eq!(algo.name(), "algo");
        assert!(algo.scopes.market() && algo.scopes.account("main") && algo.scopes.pin());
        assert!(!algo.scopes.admin() && !algo.scopes.account("swing"));
        assert_eq!(
            a.bearer(AT, "bearer  nb-key:nb-secret").unwrap().name(),
            "notebook",
            "the scheme is case-insensitive"
        );
        let nb = a.token(AT, "nb-key:nb-secret").unwrap();
        assert!(
            nb.scopes.market() && nb.scopes.pin(),
            "its own and the anonymous scopes"
        );
        assert!(!nb.scopes.account("main"));
        for bad in [
            "algo-key:algo-secret",
            "Basic algo-key:algo-secret",
            "Bearer algo-key",
        ] {
            assert_eq!(a.bearer(AT, bad).unwrap_err(), Refusal::Malformed, "{bad}");
        }
        assert_eq!(
            a.bearer(AT, "Bearer algo-key:nb-secret").unwrap_err(),
            Refusal::Unknown
        );
        let anon = a.anonymous();
        assert_eq!(anon.name(), ANONYMOUS);
        assert!(anon.scopes.pin() && !anon.scopes.market());
    }

    fn from(ip: &str) -> Attempt<'static> {
        Attempt {
            from: Some(ip.parse().unwrap()),
            via: "test",
        }
    }

    #[test]
    fn an_address_past_its_free_refusals_is_refused_unchecked_even_with_the_right_pair() {
        let a = auth(&["market"]);
        let guesser = from("192.0.2.1");
        for _ in 0..FailureLimits::default().free {
            assert_eq!(
                a.token(guesser, "nb-key:guess").unwrap_err(),
                Refusal::Unknown
            );
        }
        assert_eq!(a.token(guesser, "nb-key").unwrap_err(), Refusal::Malformed);
        let Err(Refusal::Delayed(left)) = a.token(guesser, "algo-key:algo-secret") else {
            panic!("the right pair is not checked during the delay");
        };
        assert!(left <= FailureLimits::default().first_delay, "{left:?}");
        assert_eq!(
            a.token(from("192.0.2.2"), "algo-key:algo-secret")
                .unwrap()
                .name(),
            "algo",
            "another address is not delayed"
        );
    }

    #[test]
    fn guesses_at_one_key_from_many_addresses_delay_that_client() {
        let a = auth(&["market"]);
        for i in 0..=FailureLimits::default().free {
            let at = from(&format!("198.51.100.{i}"));
            assert_eq!(a.token(at, "algo-key:guess").unwrap_err(), Refusal::Unknown);
        }
        assert!(
            matches!(
                a.token(from("203.0.113.9"), "algo-key:guess"),
                Err(Refusal::Delayed(_))
            ),
            "another guess at the delayed client"
        );
        assert_eq!(
            a.token(from("203.0.113.10"), "algo-key:algo-secret")
                .unwrap()
                .name(),
            "algo",
            "the right pair still signs in: a key id alone cannot lock its client out"
        );
        assert_eq!(
            a.token(from("203.0.113.9"), "nb-key:nb-secret")
                .unwrap()
                .name(),
            "notebook",
            "other clients are not delayed"
        );
        assert!(
            Refusal::Delayed(Duration::from_millis(1500))
                .to_string()
                .contains("for 2 s"),
            "whole seconds, rounded up"
        );
    }

    #[test]
    fn scopes_parse_every_kind_and_refuse_unknown_names() {
        let s =
            Scopes::parse(&["market", " pin ", "admin", "account:main", "account:main"]).unwrap();
        assert!(s.market() && s.pin() && s.admin() && s.account("main"));
        assert_eq!(s.accounts().len(), 1, "duplicates are one scope");
        assert_eq!(s.names(), ["market", "pin", "admin", "account:main"]);
        assert!(Scopes::parse(&["account:"]).is_err());
        assert!(Scopes::parse(&["markets"]).unwrap_err().contains("markets"));
        assert_eq!(Scopes::parse::<&str>(&[]).unwrap(), Scopes::default());
        assert_eq!(Scopes::parse(&[" "]).unwrap(), Scopes::default());
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(
            !constant_time_eq(b"ab\0", b"ab"),
            "padding does not make them equal"
        );
    }
}
