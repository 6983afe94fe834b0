//! Typed settings: `settings.toml` layered under `TICKRELAY__SECTION__KEY` environment variables.
//!
//! Every field has a default (a `const fn` or a `default_*` function beside it) so a partial file
//! works; the committed `settings.toml` documents each key. [`Settings::validate`] runs at start-up
//! and names the key and the problem for every mistake it finds. Alpaca credentials never come from a
//! file: only from `APCA_API_KEY_ID` / `APCA_API_SECRET_KEY`, held in [`Secret`] so they cannot be
//! printed by accident.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::credentials::{Credentials, Secret};
use crate::symbol::Symbol;
use crate::vocab::backoff::BackoffSettings;
use crate::vocab::Encoding;

/// Environment variable prefix for overrides (`TICKRELAY__HTTP__PORT=9000`).
pub const ENV_PREFIX: &str = "TICKRELAY";
/// Environment variable holding the Alpaca API key id.
pub const KEY_ID_ENV: &str = "APCA_API_KEY_ID";
/// Environment variable holding the Alpaca API secret key.
pub const SECRET_KEY_ENV: &str = "APCA_API_SECRET_KEY";

/// Default environment variable of a client's secret: this prefix and the client id in capitals.
pub const CLIENT_SECRET_ENV_PREFIX: &str = "TICKRELAY_CLIENT_SECRET_";

/// Environment variable holding the Redis password (of `[redis] username`, or the default user).
pub const REDIS_PASSWORD_ENV: &str = "TICKRELAY_REDIS_PASSWORD";

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: &[&str] = &[
    "dashboard.symbols",
    "registry.pinned_symbols",
    "simulator.symbols",
    "http.allowed_hosts",
    "http.allowed_origins",
    "auth.anonymous_scopes",
    "recorder.feeds",
    "recorder.accounts",
    "replay.path",
];

/// Why `url` may not carry the Alpaca keys: a user name or password before its host (which
/// can make a host check read the wrong part: `ws://127.0.0.1:80@elsewhere` goes to
/// `elsewhere`), or a clear-text scheme to another machine without the opt-in. The URL is parsed
/// as the connection will read it; loopback hosts are exempt from the scheme rule (the keys do
/// not leave the machine).
fn insecure(url: &str, clear_scheme: &str, allowed: bool) -> Option<String> {
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("{url:?} is not a valid URL: {e}")),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some(format!(
            "{url:?} has a user name or password before its host; the host would be {:?}",
            parsed.host_str().unwrap_or_default()
        ));
    }
    if format!("{}://", parsed.scheme()) != clear_scheme {
        return None;
    }
    (!allowed && !loopback(&parsed)).then(|| {
        format!(
            "{url:?} would send the Alpaca keys in clear text; use {}s:// or set upstream.allow_insecure_upstream = true",
            clear_scheme.trim_end_matches("://")
        )
    })
}

/// Whether `parsed` names this machine (`localhost` or a loopback address).
fn loopback(parsed: &url::Url) -> bool {
    match parsed.host() {
        // A URL of a scheme the parser does not know (`redis:`) keeps its host as text.
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// What is wrong with `[redis] url`: not a Redis URL, or clear text to another machine without
/// the opt-in.
fn redis_url_problem(redis: &RedisSettings) -> Option<String> {
    const FORM: &str = "use redis://host:port[/db] or rediss://host:port[/db] for TLS (or leave it empty for no Redis)";
    let parsed = match url::Url::parse(&redis.url) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("not a URL ({e}); {FORM}")),
    };
    match parsed.scheme() {
        "rediss" => None,
        "redis" if redis.allow_plaintext || loopback(&parsed) => None,
        "redis" => Some(format!(
            "redis:// to {:?} would carry prices, account events and the password in clear text; use rediss:// or set redis.allow_plaintext = true",
            parsed.host_str().unwrap_or_default()
        )),
        _ => Some(FORM.into()),
    }
}

/// Fewest characters of a client secret: shorter ones are refused with a real account (provider
/// `alpaca` or `redis`) and warned about with the simulator.
pub const MIN_SECRET_LEN: usize = 16;

/// A key made of letters, digits, `_` and `-` (what every settings key, client id and account
/// id is).
fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Every key of `table` (nested ones by their dotted path) that is not [`plain_key`].
fn odd_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.chars().take(80).collect()
        } else {
            format!("{prefix}.{}", key.chars().take(80).collect::<String>())
        };
        if !plain_key(key) {
            out.push(path.clone());
        }
        let tables: Vec<&toml::Table> = match value {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(items) => items.iter().filter_map(toml::Value::as_table).collect(),
            _ => Vec::new(),
        };
        for t in tables {
            odd_keys(t, &path, out);
        }
    }
}

/// The longest any duration setting may be: a day.
const MAX_DURATION_MS: u64 = 86_400_000;

/// Everything the daemon reads at start-up.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub upstream: UpstreamSettings,
    #[serde(default)]
    pub feeds: FeedsSettings,
    #[serde(default)]
    pub throttle: ThrottleSettings,
    #[serde(default)]
    pub registry: RegistrySettings,
    #[serde(default)]
    pub session: SessionSettings,
    #[serde(default)]
    pub sdk: SdkSettings,
    #[serde(default)]
    pub redis: RedisSettings,
    #[serde(default)]
    pub recorder: RecorderSettings,
    #[serde(default)]
    pub replay: ReplaySettings,
    #[serde(default)]
    pub dashboard: DashboardSettings,
    #[serde(default)]
    pub simulator: SimulatorSettings,
    /// Trading accounts by id; each gets a trading stream and an in-memory copy of its state.
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountSettings>,
    #[serde(default)]
    pub trading: TradingSettings,
    /// tickrelay's own clients (REST callers, browsers that sign in, SDK programs), by id, each
    /// with its key pair and scopes.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientSettings>,
    /// What callers without credentials may do.
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub logging: LoggingSettings,
    /// Alpaca credentials for market data from the environment; `None` when unset.
    #[serde(skip)]
    pub credentials: Option<Credentials>,
}

/// The HTTP listener (REST, `/ws`, dashboard).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (logged at start-up).
    pub port: u16,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// How long shutdown waits for open connections after sessions are closed.
    pub shutdown_timeout_ms: u64,
    /// PEM certificate chain; with `tls_key_path`, the listener speaks TLS only (https, wss).
    pub tls_cert_path: String,
    /// PEM private key of the certificate.
    pub tls_key_path: String,
    /// Host names the daemon answers to besides loopback names, IP addresses and `host`; a
    /// request naming another Host is refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`https://app.example.com`) allowed besides the daemon's own: for `/ws`,
    /// the SDK paths and every state-changing REST call.
    pub allowed_origins: Vec<String>,
    /// Most WebSocket connections (browsers and SDK programs) open at once.
    pub max_connections: usize,
    /// Most WebSocket connections from one IP address (behind a local reverse proxy every client
    /// has the proxy's address: keep it high there, lower it when clients connect directly).
    pub max_connections_per_ip: usize,
}

impl HttpSettings {
    /// The certificate and key paths, when TLS is on.
    pub fn tls(&self) -> Option<(&str, &str)> {
        (!self.tls_cert_path.is_empty()).then_some((&self.tls_cert_path, &self.tls_key_path))
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            workers: 0,
            tls_cert_path: String::new(),
            tls_key_path: String::new(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_connections: 50_000,
            max_connections_per_ip: 16_384,
            shutdown_timeout_ms: 3000,
        }
    }
}

/// Where market data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The built-in Alpaca-protocol simulator, started in-process on a loopback port.
    Simulator,
    /// Alpaca's real streams; needs `APCA_API_KEY_ID` and `APCA_API_SECRET_KEY`.
    Alpaca,
    /// An edge: market data, news and account events from a primary, through Redis.
    Redis,
    /// A recording played back (`[replay]`), served on Alpaca's protocol by an in-process server.
    Replay,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Simulator => "simulator",
            Provider::Alpaca => "alpaca",
            Provider::Redis => "redis",
            Provider::Replay => "replay",
        }
    }
}

/// The upstream connections: provider, URLs, timeouts, reconnect policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    pub provider: Provider,
    /// Base URL of Alpaca's market-data stream host (used with the Alpaca provider).
    pub data_url: String,
    /// Give up on a connection attempt (TCP + TLS + WebSocket upgrade) after this long.
    pub connect_timeout_ms: u64,
    /// Give up when `connected` + authentication take longer than this.
    pub auth_timeout_ms: u64,
    /// Send a WebSocket ping this often.
    pub ping_interval_ms: u64,
    /// Declare the peer dead when nothing (pong or data) arrives this long after a ping.
    pub pong_timeout_ms: u64,
    /// Reconnect when a feed with subscriptions receives no data for this long (0 disables).
    /// After an idle reconnect that brings no data either, the limit doubles (up to 8×), so quiet
    /// markets do not cause reconnect storms.
    pub data_idle_timeout_ms: u64,
    /// Largest upstream WebSocket frame accepted.
    pub max_frame_bytes: usize,
    /// Wait this long before reconnecting after an error retrying will not fix soon
    /// (402 auth failed, 409 insufficient subscription, 411 insufficient scope).
    pub fatal_hold_off_ms: u64,
    /// Wait at least this long after 406 (connection limit exceeded); Alpaca keeps half-dead
    /// connections about 90 s.
    pub connection_limit_hold_off_ms: u64,
    /// Cool down this long after HTTP 429 (too many requests) at the WebSocket handshake.
    pub rate_limit_hold_off_ms: u64,
    /// Consecutive failures after which a connection's circuit opens (0 disables the breaker).
    pub circuit_breaker_threshold: u32,
    /// How long an open circuit waits before one trial attempt (half-open).
    pub circuit_breaker_cooldown_ms: u64,
    /// Allow `ws://` and `http://` upstream URLs off this machine, which carry the Alpaca keys in
    /// clear text. Loopback URLs (a local test server) never need it.
    pub allow_insecure_upstream: bool,
    #[serde(default)]
    pub backoff: BackoffSettings,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            provider: Provider::Simulator,
            data_url: "wss://stream.data.alpaca.markets".into(),
            allow_insecure_upstream: false,
            connect_timeout_ms: 10_000,
            auth_timeout_ms: 10_000,
            ping_interval_ms: 10_000,
            pong_timeout_ms: 5_000,
            data_idle_timeout_ms: 120_000,
            max_frame_bytes: 16 * 1024 * 1024,
            fatal_hold_off_ms: 600_000,
            connection_limit_hold_off_ms: 90_000,
            rate_limit_hold_off_ms: 60_000,
            circuit_breaker_threshold: 5,
            circuit_breaker_cooldown_ms: 60_000,
            backoff: BackoffSettings::default(),
        }
    }
}

/// The feeds to connect; each enabled feed is one supervised upstream connection.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FeedsSettings {
    pub stocks: StocksFeedSettings,
    pub crypto: CryptoFeedSettings,
    pub options: OptionsFeedSettings,
    pub news: NewsFeedSettings,
}

/// Alpaca's stock data feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StockFeed {
    Iex,
    Sip,
    DelayedSip,
    Test,
    Boats,
    Overnight,
}

impl StockFeed {
    /// The stream path for this feed (`boats` and `overnight` live under `v1beta1`).
    pub fn path(self) -> &'static str {
        match self {
            StockFeed::Iex => "/v2/iex",
            StockFeed::Sip => "/v2/sip",
            StockFeed::DelayedSip => "/v2/delayed_sip",
            StockFeed::Test => "/v2/test",
            StockFeed::Boats => "/v1beta1/boats",
            StockFeed::Overnight => "/v1beta1/overnight",
        }
    }
}

/// The stocks data stream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StocksFeedSettings {
    pub enabled: bool,
    pub feed: StockFeed,
    /// `json` or `msgpack` (what Alpaca's SDKs use).
    pub encoding: Encoding,
}

impl Default for StocksFeedSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            feed: StockFeed::Iex,
            encoding: Encoding::Json,
        }
    }
}

/// Alpaca's crypto venues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum CryptoLocation {
    /// Alpaca US.
    #[serde(rename = "us")]
    Us,
    /// Kraken US.
    #[serde(rename = "us-1")]
    Us1,
    /// Kraken EU.
    #[serde(rename = "eu-1")]
    Eu1,
}

impl CryptoLocation {
    pub fn path(self) -> &'static str {
        match self {
            CryptoLocation::Us => "/v1beta3/crypto/us",
            CryptoLocation::Us1 => "/v1beta3/crypto/us-1",
            CryptoLocation::Eu1 => "/v1beta3/crypto/eu-1",
        }
    }
}

/// The crypto data stream (float sizes, order books).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CryptoFeedSettings {
    pub enabled: bool,
    pub location: CryptoLocation,
    pub encoding: Encoding,
    /// Levels per side in browser `orderbook` frames.
    pub book_depth: usize,
}

impl Default for CryptoFeedSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            location: CryptoLocation::Us,
            encoding: Encoding::Json,
            book_depth: 10,
        }
    }
}

/// Alpaca's options feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionsFeed {
    Indicative,
    Opra,
}

impl OptionsFeed {
    pub fn path(self) -> &'static str {
        match self {
            OptionsFeed::Indicative => "/v1beta1/indicative",
            OptionsFeed::Opra => "/v1beta1/opra",
        }
    }
}

/// The options data stream (msgpack only).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptionsFeedSettings {
    pub enabled: bool,
    pub feed: OptionsFeed,
}

impl Default for OptionsFeedSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            feed: OptionsFeed::Indicative,
        }
    }
}

/// The news stream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewsFeedSettings {
    pub enabled: bool,
    pub encoding: Encoding,
}

impl Default for NewsFeedSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            encoding: Encoding::Json,
        }
    }
}

/// One trading account.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountSettings {
    pub enabled: bool,
    /// Paper (`paper-api.alpaca.markets`) or live (`api.alpaca.markets`).
    pub paper: bool,
    /// Environment variables holding this account's key pair. Defaults: `APCA_API_KEY_ID` /
    /// `APCA_API_SECRET_KEY` for the account named `main`, otherwise the same names with
    /// `_<ACCOUNT>` appended (`APCA_API_KEY_ID_SWING`).
    pub key_id_env: Option<String>,
    pub secret_key_env: Option<String>,
    /// Overrides the trading API base URL (REST; the stream is its `/stream` over ws/wss).
    pub trading_url: Option<String>,
    /// The account's key pair, read from the environment at start-up.
    #[serde(skip)]
    pub credentials: Option<Credentials>,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            paper: true,
            key_id_env: None,
            secret_key_env: None,
            trading_url: None,
            credentials: None,
        }
    }
}

impl AccountSettings {
    /// The environment variables holding account `id`'s key pair.
    pub fn env_names(&self, id: &str) -> (String, String) {
        let suffix = if id == "main" {
            String::new()
        } else {
            format!("_{}", id.to_ascii_uppercase().replace('-', "_"))
        };
        (
            self.key_id_env
                .clone()
                .unwrap_or_else(|| format!("{KEY_ID_ENV}{suffix}")),
            self.secret_key_env
                .clone()
                .unwrap_or_else(|| format!("{SECRET_KEY_ENV}{suffix}")),
        )
    }
}

/// One of tickrelay's clients: a REST caller, a browser that signs in, an SDK program. It
/// authenticates with its own key pair, never with the upstream Alpaca keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// The key id it sends (`key` in Alpaca's auth message, before the `:` of a bearer token).
    pub key_id: String,
    /// The environment variable holding its secret; default `TICKRELAY_CLIENT_SECRET_<ID>`.
    pub secret_env: Option<String>,
    /// What it may do (see [`crate::auth`]); unset: `["market"]`.
    pub scopes: Option<Vec<String>>,
    /// The secret, read from the environment at start-up.
    #[serde(skip)]
    pub secret: Option<Secret>,
}

/// What callers without credentials get.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Scopes of anonymous callers (see [`crate::auth`]). An account scope here is refused with
    /// the Alpaca provider: a real account is never served anonymously.
    pub anonymous_scopes: Vec<String>,
    /// Refused credentials an address (or a client's key id) may have before each further one
    /// delays it, twice as long as the last time (see [`crate::auth::failures`]).
    pub failures_before_delay: u32,
    /// The first of those delays, in milliseconds.
    pub first_failure_delay_ms: u64,
    /// The longest of those delays, in seconds.
    pub max_failure_delay_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        let limits = crate::auth::failures::FailureLimits::default();
        Self {
            anonymous_scopes: vec!["market".into()],
            failures_before_delay: limits.free,
            first_failure_delay_ms: limits.first_delay.as_millis() as u64,
            max_failure_delay_secs: limits.max_delay.as_secs(),
        }
    }
}

impl AuthSettings {
    pub fn failure_limits(&self) -> crate::auth::failures::FailureLimits {
        crate::auth::failures::FailureLimits {
            free: self.failures_before_delay,
            first_delay: ms(self.first_failure_delay_ms),
            max_delay: Duration::from_secs(self.max_failure_delay_secs),
        }
    }
}

impl ClientSettings {
    /// Its scopes by name (`["market"]` when none are set).
    pub fn scope_names(&self) -> Vec<String> {
        self.scopes.clone().unwrap_or_else(|| vec!["market".into()])
    }

    /// The environment variable holding client `id`'s secret.
    pub fn secret_env_name(&self, id: &str) -> String {
        self.secret_env.clone().unwrap_or_else(|| {
            format!(
                "{CLIENT_SECRET_ENV_PREFIX}{}",
                id.to_ascii_uppercase().replace('-', "_")
            )
        })
    }
}

/// Settings shared by all trading accounts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TradingSettings {
    /// Alpaca's paper trading API.
    pub paper_url: String,
    /// Alpaca's live trading API.
    pub live_url: String,
    /// Accounts start this far apart, so a restart does not hammer Alpaca.
    pub start_stagger_ms: u64,
    /// REST requests per minute and account (Alpaca allows 200).
    pub rest_requests_per_minute: u32,
    /// After a fill, refresh the account and positions this long later (fills come in bursts).
    pub refresh_after_fill_ms: u64,
    /// Every this often, keep quotes pinned for the symbols of open positions and release the
    /// symbols of closed ones (0 disables position-based auto-subscription).
    pub auto_subscribe_positions_ms: u64,
    /// The longest a trading REST request waits after HTTP 429, whatever `Retry-After` says.
    pub max_retry_after_ms: u64,
}

impl Default for TradingSettings {
    fn default() -> Self {
        Self {
            paper_url: "https://paper-api.alpaca.markets".into(),
            live_url: "https://api.alpaca.markets".into(),
            start_stagger_ms: 2_000,
            rest_requests_per_minute: 180,
            max_retry_after_ms: 60_000,
            refresh_after_fill_ms: 500,
            auto_subscribe_positions_ms: 300_000,
        }
    }
}

/// Per-symbol conflation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// At most one update per symbol per this interval (first at once, latest at the trailing edge).
    pub interval_ms: u64,
    /// A cached price older than this (by exchange time) is reported `"stale": true`.
    pub stale_after_ms: u64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            interval_ms: 200,
            stale_after_ms: 300_000,
        }
    }
}

/// Subscription bookkeeping.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Keep an upstream subscription this long after its last subscriber leaves (page reloads).
    pub unsubscribe_grace_ms: u64,
    /// Symbols streamed from start-up with no browser attached (as if pinned through REST).
    pub pinned_symbols: Vec<String>,
    /// Most symbols that may be pinned through REST.
    pub max_pinned_symbols: usize,
    /// Most of them one client may pin, so that no client takes the whole quota.
    pub max_pins_per_client: usize,
    /// Most distinct symbols streamed at once, over every browser and pin (a new one past it is
    /// refused with too_many_symbols; Alpaca's plans have their own limits, answered with 405).
    pub max_symbols: usize,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            unsubscribe_grace_ms: 5_000,
            pinned_symbols: Vec::new(),
            max_pinned_symbols: 1_000,
            max_pins_per_client: 200,
            max_symbols: 10_000,
        }
    }
}

/// Browser WebSocket sessions (`/ws`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Most symbols one client may subscribe to.
    pub max_symbols: usize,
    /// Largest client message (one frame, or the sum of a fragmented message's frames); a
    /// header declaring more closes the connection with 1009 before the payload is read.
    pub max_frame_bytes: usize,
    /// Bytes that may wait for one client — updates, events, acks, errors, pongs alike; past it
    /// the client is closed with 4008.
    pub max_queued_bytes: usize,
    /// A client message must arrive whole this long after its first byte, or the connection is
    /// closed with 1008 (a peer that starts a frame and stalls holds nothing for long).
    pub message_timeout_ms: u64,
    /// Invalid messages (malformed, unknown action, binary) within a minute that close the
    /// connection with 1008.
    pub max_invalid_messages: u32,
    /// When anonymous callers may do nothing (`auth.anonymous_scopes = []`), a browser that has
    /// not signed in this long after connecting is closed with 1008.
    pub auth_timeout_ms: u64,
    /// A client whose socket takes nothing for this long while frames wait is closed with 4008.
    /// Until then it costs one waiting frame per symbol and kind: newer values replace older ones.
    pub slow_client_timeout_ms: u64,
    /// After sending 4008, how long the client gets to read it before its socket is shut down.
    pub slow_client_close_grace_ms: u64,
    /// Send a WebSocket ping this often.
    pub heartbeat_interval_ms: u64,
    /// Close a client that sends nothing (not even a pong) for this long.
    pub client_timeout_ms: u64,
    /// News articles, bars and account events that may wait for one client. Past it news and
    /// bars are dropped (counted); an account event closes the session with 4008 instead.
    pub max_queued_events: usize,
    /// With `configure {"batch":true}`, price updates go out as one batch per kind this often.
    pub batch_interval_ms: u64,
    /// Client messages accepted per second (bursts up to the same number); more get `rate_limited`.
    pub max_messages_per_second: u32,
    /// Kernel send buffer per browser socket in bytes; 0 keeps the system default (autotuned).
    pub socket_send_buffer_bytes: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_symbols: 200,
            max_frame_bytes: 64 * 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            message_timeout_ms: 10_000,
            max_invalid_messages: 20,
            auth_timeout_ms: 10_000,
            slow_client_timeout_ms: 10_000,
            slow_client_close_grace_ms: 5_000,
            heartbeat_interval_ms: 10_000,
            client_timeout_ms: 30_000,
            max_queued_events: 256,
            batch_interval_ms: 100,
            max_messages_per_second: 50,
            socket_send_buffer_bytes: 0,
        }
    }
}

impl SessionSettings {
    /// How soon a browser must sign in when anonymous callers may do nothing.
    pub fn auth_timeout(&self) -> Duration {
        ms(self.auth_timeout_ms)
    }
}

/// Redis: the shared price cache and price events other services read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`, or `rediss://` for TLS; empty: no Redis. Shown without a
    /// password.
    #[serde(serialize_with = "without_password")]
    pub url: String,
    /// The ACL user (Redis 6 and later); empty: the default user. Its password comes from
    /// `TICKRELAY_REDIS_PASSWORD`.
    pub username: String,
    /// `rediss://`: a PEM file with the CA that signed the server's certificate; empty: the
    /// system's trust store.
    pub ca_file: String,
    /// `rediss://`: PEM client certificate and key, for a server with `tls-auth-clients`.
    pub cert_file: String,
    pub key_file: String,
    /// Allows `redis://` (clear text) to a host other than loopback: prices, account events and
    /// the password would cross the network readable.
    pub allow_plaintext: bool,
    /// From `TICKRELAY_REDIS_PASSWORD`, never from a file.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// `price:{SYMBOL}` keys expire this long after their last update, so a stale price goes.
    pub price_ttl_secs: u64,
    /// Several primaries: hold the upstream connections only while holding the lease in Redis.
    pub lease: bool,
    /// The lease expires this long after its holder last renewed it (renewed every third).
    pub lease_ttl_ms: u64,
    /// This instance's name in the lease and in the edges' registrations; empty: host and pid.
    pub instance: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            username: String::new(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            allow_plaintext: false,
            password: None,
            price_ttl_secs: 300,
            lease: false,
            lease_ttl_ms: 5000,
            instance: String::new(),
        }
    }
}

/// A Redis URL as shown: a user and password replaced.
fn without_password<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    let shown = match url
        .split_once("://")
        .and_then(|(scheme, rest)| Some((scheme, rest.rsplit_once('@')?.1)))
    {
        Some((scheme, host)) => format!("{scheme}://<redacted>@{host}"),
        None => url.to_owned(),
    };
    s.serialize_str(&shown)
}

impl RedisSettings {
    /// The instance name: the setting, or `<host>-<pid>`.
    pub fn instance_name(&self) -> String {
        if !self.instance.is_empty() {
            return self.instance.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let host = if host.is_empty() {
            "tickrelay".into()
        } else {
            host
        };
        format!("{host}-{}", std::process::id())
    }
}

/// SDK programs on the Alpaca-compatible endpoint (`/v2/iex`, `/v1beta3/crypto/us`, `/stream`, …).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SdkSettings {
    /// A program that has not authenticated this long after connecting gets `404 auth timeout`.
    pub auth_timeout_ms: u64,
    /// Most symbols one program may hold on one stream; more gets `405 symbol limit exceeded`.
    pub max_symbols: usize,
    /// Unsent bytes one program may have waiting — data, acks and errors alike; past it the
    /// program is too slow and gets `407 slow client` and a 4008 close (it is never conflated:
    /// SDK programs get every message).
    pub max_queued_bytes: usize,
    /// Largest client message (a subscribe of thousands of symbols); a header declaring more
    /// closes the connection with 1009 before the payload is read.
    pub max_message_bytes: usize,
    /// Client messages read per second (bursts up to the same number); more are not read and
    /// are answered with an error.
    pub max_messages_per_second: u32,
    /// Invalid messages within a minute that close the connection with 1008.
    pub max_invalid_messages: u32,
    /// A client message must arrive whole this long after its first byte, or the connection is
    /// closed with 1008.
    pub message_timeout_ms: u64,
    /// When the upstream connection a program's data comes from is lost: `close` its connection
    /// as Alpaca's would close (1012, so its SDK reconnects and its reconnect hook runs), or
    /// `keep` it open through the gap.
    pub on_upstream_loss: UpstreamLoss,
}

impl Default for SdkSettings {
    fn default() -> Self {
        Self {
            auth_timeout_ms: 10_000,
            max_symbols: 10_000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_message_bytes: 1024 * 1024,
            max_messages_per_second: 100,
            max_invalid_messages: 20,
            message_timeout_ms: 10_000,
            on_upstream_loss: UpstreamLoss::Close,
        }
    }
}

/// `[sdk] on_upstream_loss`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamLoss {
    #[default]
    Close,
    Keep,
}

/// `[recorder]`: every upstream frame, as received, to segment files (see [`crate::recorder`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecorderSettings {
    pub enabled: bool,
    /// Where the segments go (created if missing).
    pub dir: String,
    /// The oldest segments go first past this many bytes in `dir` ...
    pub max_bytes: u64,
    /// ... or once they started longer ago than this.
    pub max_age_hours: u64,
    /// A new segment starts past this many (compressed) bytes ...
    pub segment_bytes: u64,
    /// ... or this many seconds.
    pub segment_secs: u64,
    /// The feeds recorded (`stocks`, `crypto`, `options`, `news`); empty: none.
    pub feeds: Vec<String>,
    /// The accounts whose `trade_updates` are recorded; empty: every enabled account.
    pub accounts: Vec<String>,
    /// Frames that may wait for the writer; past it they are dropped, counted and marked.
    pub queue: usize,
    /// Records are written at least this often: a crash loses at most this much.
    pub flush_ms: u64,
}

impl Default for RecorderSettings {
    fn default() -> Self {
        RecorderSettings {
            enabled: false,
            dir: "records".into(),
            max_bytes: 10 << 30,
            max_age_hours: 24 * 7,
            segment_bytes: 64 << 20,
            segment_secs: 3600,
            feeds: ["stocks", "crypto", "options", "news"]
                .map(String::from)
                .to_vec(),
            accounts: Vec::new(),
            queue: 65_536,
            flush_ms: 200,
        }
    }
}

/// `[replay]`: with `provider = "replay"`, a recording played back (see [`crate::replay`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySettings {
    /// Segment files, or directories of them (a recorder's `dir`), played in time order.
    #[serde(deserialize_with = "one_or_many")]
    pub path: Vec<String>,
    /// Only what was received at or after this RFC 3339 time ...
    pub from: Option<String>,
    /// ... and at or before this one.
    pub to: Option<String>,
    /// `1.0` plays at the recorded pace, `10` ten times faster, `"max"` as fast as consumers read.
    pub speed: ReplaySpeed,
    /// After the end, start again from the beginning (consumers see a gap between the rounds).
    #[serde(rename = "loop")]
    pub repeat: bool,
    /// When the clock starts: `"subscribe"` at the first market-data subscription, `"now"` at
    /// once, `"paused"` when `POST /api/v1/replay {"action":"play"}` says so.
    pub start: ReplayStart,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        ReplaySettings {
            path: vec!["records".into()],
            from: None,
            to: None,
            speed: ReplaySpeed::Times(1.0),
            repeat: false,
            start: ReplayStart::Subscribe,
        }
    }
}

/// How fast a replay runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplaySpeed {
    /// This many recorded seconds a second.
    Times(f64),
    /// As fast as the consumers take it.
    Max,
}

impl ReplaySpeed {
    fn parse(text: &str) -> Option<ReplaySpeed> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("max") {
            return Some(ReplaySpeed::Max);
        }
        text.parse().ok().map(ReplaySpeed::Times)
    }

    /// The factor, `None` for `max`.
    pub fn factor(self) -> Option<f64> {
        match self {
            ReplaySpeed::Times(x) => Some(x),
            ReplaySpeed::Max => None,
        }
    }
}

impl<'de> Deserialize<'de> for ReplaySpeed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(x) => Ok(ReplaySpeed::Times(x)),
            Raw::Text(t) => ReplaySpeed::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("{t:?} is not a speed: a number or \"max\""))
            }),
        }
    }
}

impl Serialize for ReplaySpeed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ReplaySpeed::Times(x) => s.serialize_f64(*x),
            ReplaySpeed::Max => s.serialize_str("max"),
        }
    }
}

/// When a replay's clock starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayStart {
    Subscribe,
    Now,
    Paused,
}

/// A list, or one string standing for a list of one.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    })
}

impl ReplaySettings {
    /// `from` and `to` in nanoseconds since the Unix epoch.
    pub fn window(&self) -> Result<(Option<u64>, Option<u64>), String> {
        let time = |v: &Option<String>, key: &str| -> Result<Option<u64>, String> {
            v.as_deref()
                .map(|t| {
                    crate::time::Timestamp::parse_rfc3339(t.trim())
                        .map(|t| u64::try_from(t.unix_nanos()).unwrap_or_default())
                        .map_err(|_| format!("replay.{key}: {t:?} is not an RFC 3339 time"))
                })
                .transpose()
        };
        Ok((time(&self.from, "from")?, time(&self.to, "to")?))
    }
}

impl RecorderSettings {
    pub fn config(&self) -> crate::recorder::RecorderConfig {
        crate::recorder::RecorderConfig {
            dir: PathBuf::from(&self.dir),
            flush_every: ms(self.flush_ms.max(1)),
            segment_bytes: self.segment_bytes,
            segment_age: Duration::from_secs(self.segment_secs),
            max_bytes: self.max_bytes,
            max_age: Duration::from_secs(self.max_age_hours.saturating_mul(3600)),
            queue: self.queue,
        }
    }

    /// Whether `source` (`stocks`, …, or `trading:<account>`) is recorded.
    pub fn records(&self, source: &str) -> bool {
        match source.strip_prefix("trading:") {
            Some(account) => self.accounts.is_empty() || self.accounts.iter().any(|a| a == account),
            None => self.feeds.iter().any(|f| f == source),
        }
    }
}

/// The dashboard page at `GET /`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSettings {
    /// Symbols the page subscribes to when it opens.
    pub symbols: Vec<String>,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            symbols: default_symbols(),
        }
    }
}

/// How log lines look (what is logged comes from `RUST_LOG`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    pub format: LogFormat,
}

/// Log lines for people (`text`) or for log shippers (`json`: one object per line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The built-in Alpaca-protocol simulator.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorSettings {
    /// Address the in-process simulator binds (loopback).
    pub host: String,
    /// Port of the in-process simulator; 0 picks a free one.
    pub port: u16,
    /// Symbols with a random walk running from start-up; any other valid symbol streams on request.
    pub symbols: Vec<String>,
    /// Market tick: every tick, each subscribed symbol gets `quotes_per_tick` quotes.
    pub tick_ms: u64,
    pub quotes_per_tick: u32,
    /// Chance per tick and symbol of a trade.
    pub trade_probability: f64,
    /// Emit minute bars this often (Alpaca: every 60 s).
    pub bar_interval_ms: u64,
    /// Generate data at all; off, only injected quotes flow (tests use this).
    pub generate: bool,
    /// Seed of the random walks; the same seed and symbol give the same prices.
    pub seed: u64,
    /// A news article this often (0 disables generated news).
    pub news_interval_ms: u64,
    /// The simulated account places an order and fills it this often (0: only on request).
    pub order_interval_ms: u64,
    /// Most symbols the simulator keeps a price walk for, and the symbol limit of each
    /// connection (past it a subscribe is refused with 405, as Alpaca's plans do).
    pub max_symbols: usize,
    /// Most quotes and trades generated per second over all symbols: the configured symbols
    /// always get theirs, the others take turns in the rest. Bounds the simulator's CPU and
    /// memory whatever the clients subscribe.
    pub max_messages_per_second: usize,
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            symbols: default_symbols(),
            tick_ms: 100,
            quotes_per_tick: 1,
            trade_probability: 0.3,
            bar_interval_ms: 60_000,
            generate: true,
            seed: 42,
            news_interval_ms: 15_000,
            order_interval_ms: 20_000,
            max_symbols: 20_000,
            max_messages_per_second: 20_000,
        }
    }
}

fn default_symbols() -> Vec<String> {
    ["AAPL", "MSFT", "SPY", "QQQ", "TSLA", "NVDA", "AMZN"]
        .map(String::from)
        .to_vec()
}

/// One problem found in the settings: which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings from {path}: {source}")]
    Read {
        path: String,
        source: config::ConfigError,
    },
    #[error("invalid settings:\n  - {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Invalid(Vec<Problem>),
}

impl Settings {
    /// Loads `path`, applies `TICKRELAY__…` overrides and the Alpaca credentials from the process
    /// environment, and validates the result.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        Self::load_with_env(path, std::env::vars().collect())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests use this).
    pub fn load_with_env(
        path: &Path,
        env: HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Read {
            path: origin.clone(),
            source: config::ConfigError::Foreign(Box::new(e)),
        })?;
        Self::build(&text, env, &origin)
    }

    /// Parses settings from TOML text plus an explicit environment (tests use this).
    pub fn from_toml_str(
        toml: &str,
        env: HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        Self::build(toml, env, "<inline settings>")
    }

    fn build(
        text: &str,
        env: HashMap<String, String>,
        origin: &str,
    ) -> Result<Settings, SettingsError> {
        // The settings library reads `[N]` in a key as an array index (and `.` as nesting): a key
        // `"x[100000000]"` in the file, or a variable `TICKRELAY__X[100000000]`, would build a
        // hundred-million-element array. Settings keys are letters, digits, `_` and `-`; anything
        // else is refused before the library sees it.
        let mut odd = Vec::new();
        if let Ok(table) = text.parse::<toml::Table>() {
            odd_keys(&table, "", &mut odd);
        }
        odd.extend(
            env.keys()
                .filter(|k| k.starts_with(&format!("{ENV_PREFIX}__")) && !plain_key(k))
                .map(|k| k.chars().take(80).collect::<String>()),
        );
        if !odd.is_empty() {
            let problems = odd
                .into_iter()
                .map(|key| Problem {
                    key,
                    message: "not a settings key: use letters, digits, '_' and '-' only".into(),
                })
                .collect();
            return Err(SettingsError::Invalid(problems));
        }
        let file = File::from_str(text, FileFormat::Toml);
        let mut overrides = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .source(Some(
                env.iter()
                    .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ));
        for key in LIST_KEYS {
            overrides = overrides.with_list_parse_key(key);
        }
        // `TICKRELAY__CLIENTS__<ID>__SCOPES=market,account:main`: per-client lists.
        for key in env.keys() {
            let lower = key.to_ascii_lowercase();
            if let Some(id) = lower
                .strip_prefix("tickrelay__clients__")
                .and_then(|rest| rest.strip_suffix("__scopes"))
            {
                overrides = overrides.with_list_parse_key(&format!("clients.{id}.scopes"));
            }
        }
        let read_err = |source| SettingsError::Read {
            path: origin.to_owned(),
            source,
        };
        let mut settings: Settings = Config::builder()
            .add_source(file)
            .add_source(overrides)
            .build()
            .and_then(Config::try_deserialize)
            .map_err(read_err)?;
        settings.credentials = credentials_from(&env, KEY_ID_ENV, SECRET_KEY_ENV);
        for (id, account) in settings.accounts.iter_mut() {
            let (key_env, secret_env) = account.env_names(id);
            account.credentials = credentials_from(&env, &key_env, &secret_env);
        }
        for (id, client) in settings.clients.iter_mut() {
            client.secret = env
                .get(&client.secret_env_name(id))
                .map(|s| Secret::new(s.trim()))
                .filter(|s| !s.expose().is_empty());
        }
        settings.redis.password = env
            .get(REDIS_PASSWORD_ENV)
            .map(|s| Secret::new(s.trim()))
            .filter(|s| !s.expose().is_empty());
        let problems = settings.validate();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }

    /// Who may do what: the clients with a secret and their scopes, and the anonymous scopes
    /// (validation has made sure every scope parses; anything that does not is left out).
    pub fn auth(&self) -> crate::auth::Auth {
        use crate::auth::{Auth, Client, Scopes};
        let anonymous = Scopes::parse(&self.auth.anonymous_scopes).unwrap_or_default();
        let clients = self
            .clients
            .iter()
            .filter_map(|(id, c)| {
                let scopes = Scopes::parse(&c.scope_names()).ok()?;
                Some(Client::new(id, &c.key_id, c.secret.clone()?, scopes))
            })
            .collect();
        Auth::new(clients, anonymous, self.auth.failure_limits())
    }

    /// What is wrong with a list of scope names: an unknown scope or an account not configured.
    fn scope_problem(&self, names: &[String]) -> Option<String> {
        let scopes = match crate::auth::Scopes::parse(names) {
            Ok(s) => s,
            Err(e) => return Some(e),
        };
        scopes
            .accounts()
            .iter()
            .find(|a| !self.accounts.contains_key(&***a))
            .map(|a| format!("there is no account {a:?} in [accounts]"))
    }

    /// Every duration setting, by key.
    fn durations_ms(&self) -> Vec<(&'static str, u64)> {
        let (h, u, b, t, r, s, k, m) = (
            &self.http,
            &self.upstream,
            &self.upstream.backoff,
            &self.trading,
            &self.registry,
            &self.session,
            &self.sdk,
            &self.simulator,
        );
        vec![
            ("http.shutdown_timeout_ms", h.shutdown_timeout_ms),
            ("upstream.connect_timeout_ms", u.connect_timeout_ms),
            ("upstream.auth_timeout_ms", u.auth_timeout_ms),
            ("upstream.ping_interval_ms", u.ping_interval_ms),
            ("upstream.pong_timeout_ms", u.pong_timeout_ms),
            ("upstream.data_idle_timeout_ms", u.data_idle_timeout_ms),
            ("upstream.fatal_hold_off_ms", u.fatal_hold_off_ms),
            (
                "upstream.connection_limit_hold_off_ms",
                u.connection_limit_hold_off_ms,
            ),
            ("upstream.rate_limit_hold_off_ms", u.rate_limit_hold_off_ms),
            (
                "upstream.circuit_breaker_cooldown_ms",
                u.circuit_breaker_cooldown_ms,
            ),
            ("upstream.backoff.initial_ms", b.initial_ms),
            ("upstream.backoff.max_ms", b.max_ms),
            ("upstream.backoff.reset_after_ms", b.reset_after_ms),
            ("trading.start_stagger_ms", t.start_stagger_ms),
            ("trading.refresh_after_fill_ms", t.refresh_after_fill_ms),
            (
                "trading.auto_subscribe_positions_ms",
                t.auto_subscribe_positions_ms,
            ),
            ("throttle.stale_after_ms", self.throttle.stale_after_ms),
            ("registry.unsubscribe_grace_ms", r.unsubscribe_grace_ms),
            ("session.slow_client_timeout_ms", s.slow_client_timeout_ms),
            (
                "session.slow_client_close_grace_ms",
                s.slow_client_close_grace_ms,
            ),
            ("session.heartbeat_interval_ms", s.heartbeat_interval_ms),
            ("session.client_timeout_ms", s.client_timeout_ms),
            ("session.message_timeout_ms", s.message_timeout_ms),
            ("session.auth_timeout_ms", s.auth_timeout_ms),
            ("sdk.auth_timeout_ms", k.auth_timeout_ms),
            ("sdk.message_timeout_ms", k.message_timeout_ms),
            ("simulator.tick_ms", m.tick_ms),
            ("simulator.bar_interval_ms", m.bar_interval_ms),
            ("simulator.news_interval_ms", m.news_interval_ms),
            ("simulator.order_interval_ms", m.order_interval_ms),
        ]
    }

    /// Every size and count setting, by key, with its upper bound.
    fn sizes(&self) -> Vec<(&'static str, usize, usize)> {
        const MIB: usize = 1024 * 1024;
        vec![
            (
                "upstream.max_frame_bytes",
                self.upstream.max_frame_bytes,
                256 * MIB,
            ),
            (
                "session.max_frame_bytes",
                self.session.max_frame_bytes,
                16 * MIB,
            ),
            ("session.max_symbols", self.session.max_symbols, 100_000),
            (
                "session.max_queued_events",
                self.session.max_queued_events,
                1_000_000,
            ),
            (
                "session.socket_send_buffer_bytes",
                self.session.socket_send_buffer_bytes,
                256 * MIB,
            ),
            (
                "session.max_queued_bytes",
                self.session.max_queued_bytes,
                4096 * MIB,
            ),
            ("sdk.max_symbols", self.sdk.max_symbols, 1_000_000),
            (
                "sdk.max_queued_bytes",
                self.sdk.max_queued_bytes,
                4096 * MIB,
            ),
            (
                "sdk.max_message_bytes",
                self.sdk.max_message_bytes,
                64 * MIB,
            ),
            (
                "registry.max_pins_per_client",
                self.registry.max_pins_per_client,
                1_000_000,
            ),
            (
                "registry.max_pinned_symbols",
                self.registry.max_pinned_symbols,
                1_000_000,
            ),
            (
                "feeds.crypto.book_depth",
                self.feeds.crypto.book_depth,
                10_000,
            ),
            (
                "simulator.max_symbols",
                self.simulator.max_symbols,
                1_000_000,
            ),
        ]
    }

    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(Problem {
                key: key.into(),
                message,
            })
        };
        if self.http.host.trim().is_empty() {
            bad("http.host", "must not be empty".into());
        }
        // Upper bounds: a duration or size past these is a typo, and would overflow the
        // arithmetic that adds durations to instants or sizes to buffers.
        for (key, value) in self.durations_ms() {
            if value > MAX_DURATION_MS {
                bad(
                    key,
                    format!("{value} ms is more than a day ({MAX_DURATION_MS} ms)"),
                );
            }
        }
        for (key, value, max) in self.sizes() {
            if value > max {
                bad(key, format!("{value} is more than the limit of {max}"));
            }
        }
        let redis = &self.redis;
        if !redis.url.is_empty() {
            if let Some(problem) = redis_url_problem(redis) {
                bad("redis.url", problem);
            }
        }
        let tls = redis.url.starts_with("rediss://");
        for (key, value) in [
            ("redis.ca_file", &redis.ca_file),
            ("redis.cert_file", &redis.cert_file),
            ("redis.key_file", &redis.key_file),
        ] {
            if !value.is_empty() && !tls {
                bad(key, "is for TLS: use a rediss:// URL".into());
            }
        }
        if redis.cert_file.is_empty() != redis.key_file.is_empty() {
            bad(
                "redis.cert_file",
                "a client certificate needs both redis.cert_file and redis.key_file".into(),
            );
        }
        if !(1000..=600_000).contains(&redis.lease_ttl_ms) {
            bad(
                "redis.lease_ttl_ms",
                format!("{} is not between 1000 and 600000", redis.lease_ttl_ms),
            );
        }
        if !redis.instance.is_empty() && !plain_key(&redis.instance) {
            bad("redis.instance", "use letters, digits, '-' and '_'".into());
        }
        if redis.url.is_empty() && (redis.lease || self.upstream.provider == Provider::Redis) {
            bad(
                if redis.lease {
                    "redis.lease"
                } else {
                    "upstream.provider"
                },
                "needs redis.url (the Redis the primaries and edges share)".into(),
            );
        }
        if redis.lease && self.upstream.provider == Provider::Redis {
            bad(
                "redis.lease",
                "is for primaries; an edge (provider = \"redis\") holds no upstream connection"
                    .into(),
            );
        }
        if !(1..=86_400).contains(&redis.price_ttl_secs) {
            bad(
                "redis.price_ttl_secs",
                format!("{} is not between 1 and 86400", redis.price_ttl_secs),
            );
        }
        let rec = &self.recorder;
        if rec.enabled {
            if rec.dir.trim().is_empty() {
                bad("recorder.dir", "must name a directory".into());
            }
            if rec.segment_bytes < 4096 || rec.segment_secs == 0 || rec.queue == 0 {
                bad(
                    "recorder.segment_bytes",
                    "segment_bytes (at least 4096), segment_secs and queue must be positive".into(),
                );
            }
            for feed in &rec.feeds {
                if !["stocks", "crypto", "options", "news"].contains(&feed.as_str()) {
                    bad(
                        "recorder.feeds",
                        format!("{feed:?} is not a feed: use stocks, crypto, options or news"),
                    );
                }
            }
        }
        if self.upstream.provider == Provider::Replay {
            let replay = &self.replay;
            if replay.path.iter().all(|p| p.trim().is_empty()) {
                bad(
                    "replay.path",
                    "name segment files or a directory of them".into(),
                );
            }
            for path in &replay.path {
                if !Path::new(path).exists() {
                    bad("replay.path", format!("{path:?} does not exist"));
                }
            }
            match replay.window() {
                Err(problem) => bad("replay.from", problem),
                Ok((Some(from), Some(to))) if from > to => {
                    bad("replay.to", "is before replay.from".into())
                }
                Ok(_) => {}
            }
            if let ReplaySpeed::Times(x) = replay.speed {
                if !(x.is_finite() && x > 0.0 && x <= 1e6) {
                    bad(
                        "replay.speed",
                        format!("{x} is not a speed: a number above 0 (up to 1000000) or \"max\""),
                    );
                }
            }
        }
        if self.simulator.max_symbols == 0 {
            bad("simulator.max_symbols", "must be greater than 0".into());
        }
        if self.simulator.max_messages_per_second == 0 {
            bad(
                "simulator.max_messages_per_second",
                "must be greater than 0".into(),
            );
        }
        let up = &self.upstream;
        if up.provider == Provider::Alpaca {
            match &self.credentials {
                None => bad(
                    "upstream.provider",
                    format!(
                        "\"alpaca\" needs credentials: set {KEY_ID_ENV} and {SECRET_KEY_ENV} in the environment \
                         (tickrelay never falls back to simulated data)"
                    ),
                ),
                Some(c) if c.key_id.expose().is_empty() || c.secret_key.expose().is_empty() => bad(
                    "upstream.provider",
                    format!("{KEY_ID_ENV} and {SECRET_KEY_ENV} must both be non-empty"),
                ),
                Some(_) => {}
            }
            if !(up.data_url.starts_with("wss://") || up.data_url.starts_with("ws://")) {
                bad(
                    "upstream.data_url",
                    format!("{:?} must start with wss:// or ws://", up.data_url),
                );
            }
            if let Some(problem) = insecure(&up.data_url, "ws://", up.allow_insecure_upstream) {
                bad("upstream.data_url", problem);
            }
            for (key, url) in [
                ("trading.paper_url", &self.trading.paper_url),
                ("trading.live_url", &self.trading.live_url),
            ] {
                if let Some(problem) = insecure(url, "http://", up.allow_insecure_upstream) {
                    bad(key, problem);
                }
            }
        }
        for (key, value) in [
            ("upstream.connect_timeout_ms", up.connect_timeout_ms),
            ("upstream.auth_timeout_ms", up.auth_timeout_ms),
            ("upstream.ping_interval_ms", up.ping_interval_ms),
            ("upstream.pong_timeout_ms", up.pong_timeout_ms),
            ("upstream.backoff.max_ms", up.backoff.max_ms),
            (
                "upstream.circuit_breaker_cooldown_ms",
                up.circuit_breaker_cooldown_ms,
            ),
            ("throttle.stale_after_ms", self.throttle.stale_after_ms),
            (
                "session.slow_client_timeout_ms",
                self.session.slow_client_timeout_ms,
            ),
            (
                "session.heartbeat_interval_ms",
                self.session.heartbeat_interval_ms,
            ),
            ("session.client_timeout_ms", self.session.client_timeout_ms),
            (
                "session.message_timeout_ms",
                self.session.message_timeout_ms,
            ),
            ("session.auth_timeout_ms", self.session.auth_timeout_ms),
            ("sdk.message_timeout_ms", self.sdk.message_timeout_ms),
            ("simulator.tick_ms", self.simulator.tick_ms),
            ("simulator.bar_interval_ms", self.simulator.bar_interval_ms),
        ] {
            if value == 0 {
                bad(key, "must be greater than 0".into());
            }
        }
        if up.max_frame_bytes < 1024 {
            bad("upstream.max_frame_bytes", "must be at least 1024".into());
        }
        let b = &up.backoff;
        if !(b.factor >= 1.0 && b.factor <= 100.0) {
            bad(
                "upstream.backoff.factor",
                format!("{} must be between 1 and 100", b.factor),
            );
        }
        if !(0.0..=1.0).contains(&b.jitter) {
            bad(
                "upstream.backoff.jitter",
                format!("{} must be between 0 and 1", b.jitter),
            );
        }
        if b.initial_ms > b.max_ms {
            bad(
                "upstream.backoff.initial_ms",
                format!(
                    "{} is above upstream.backoff.max_ms ({})",
                    b.initial_ms, b.max_ms
                ),
            );
        }
        let f = &self.feeds;
        let any_account = self.accounts.values().any(|a| a.enabled);
        if !(f.stocks.enabled
            || f.crypto.enabled
            || f.options.enabled
            || f.news.enabled
            || any_account)
        {
            bad(
                "feeds",
                "at least one feed or account must be enabled".into(),
            );
        }
        if f.crypto.book_depth == 0 || f.crypto.book_depth > 1000 {
            bad(
                "feeds.crypto.book_depth",
                "must be between 1 and 1000".into(),
            );
        }
        for (id, account) in self.accounts.iter().filter(|(_, a)| a.enabled) {
            if !plain_key(id) {
                bad(
                    &format!("accounts.{id}"),
                    "account ids use letters, digits, '-' and '_'".into(),
                );
            }
            if up.provider == Provider::Alpaca && account.credentials.is_none() {
                let (k, s) = account.env_names(id);
                bad(
                    &format!("accounts.{id}"),
                    format!("set {k} and {s} in the environment (or disable the account with enabled = false)"),
                );
            }
            if let Some(url) = &account.trading_url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    bad(
                        &format!("accounts.{id}.trading_url"),
                        format!("{url:?} must start with https:// or http://"),
                    );
                }
                let allowed = up.allow_insecure_upstream || up.provider == Provider::Simulator;
                if let Some(problem) = insecure(url, "http://", allowed) {
                    bad(&format!("accounts.{id}.trading_url"), problem);
                }
            }
        }
        let mut key_ids = std::collections::BTreeSet::new();
        for (id, client) in &self.clients {
            let key = format!("clients.{id}");
            if !plain_key(id) {
                bad(&key, "client ids use letters, digits, '-' and '_'".into());
            }
            if id == crate::auth::ANONYMOUS {
                bad(
                    &key,
                    "\"anonymous\" names callers without credentials".into(),
                );
            }
            if client.key_id.trim().is_empty() {
                bad(&format!("{key}.key_id"), "must not be empty".into());
            } else if !key_ids.insert(client.key_id.as_str()) {
                bad(
                    &format!("{key}.key_id"),
                    "another client already uses this key id".into(),
                );
            }
            if client.secret.is_none() {
                bad(
                    &key,
                    format!(
                        "set its secret in the environment variable {}",
                        client.secret_env_name(id)
                    ),
                );
            }
            let len = client
                .secret
                .as_ref()
                .map_or(0, |s| s.expose().chars().count());
            if client.secret.is_some()
                && len < MIN_SECRET_LEN
                && self.upstream.provider != Provider::Simulator
            {
                // A real account (or an edge serving one): guessable secrets are refused.
                bad(
                    &key,
                    format!(
                        "its secret has {len} characters; with provider = {} use at least {MIN_SECRET_LEN} random ones",
                        self.upstream.provider.as_str()
                    ),
                );
            }
            if client.key_id.contains(':') {
                bad(
                    &format!("{key}.key_id"),
                    "must not contain ':' (it separates key id and secret in a token)".into(),
                );
            }
            if let Some(problem) = self.scope_problem(&client.scope_names()) {
                bad(&format!("{key}.scopes"), problem);
            }
        }
        let anonymous = &self.auth.anonymous_scopes;
        if let Some(problem) = self.scope_problem(anonymous) {
            bad("auth.anonymous_scopes", problem);
        } else if matches!(
            self.upstream.provider,
            Provider::Alpaca | Provider::Redis | Provider::Replay
        ) {
            if let Some(account) = anonymous.iter().find(|s| s.trim().starts_with("account:")) {
                bad(
                    "auth.anonymous_scopes",
                    format!(
                        "{:?} would serve a real Alpaca account to anyone who can reach the daemon; remove it and give the scope to a [clients.<id>] entry instead",
                        account.trim()
                    ),
                );
            }
        }
        let auth = &self.auth;
        if !(1..=3600).contains(&auth.max_failure_delay_secs) {
            bad(
                "auth.max_failure_delay_secs",
                "must be between 1 and 3600 (an hour)".into(),
            );
        } else if !(1..=auth.max_failure_delay_secs * 1000).contains(&auth.first_failure_delay_ms) {
            bad(
                "auth.first_failure_delay_ms",
                "must be at least 1 and at most auth.max_failure_delay_secs".into(),
            );
        }
        if self.trading.rest_requests_per_minute == 0 {
            bad(
                "trading.rest_requests_per_minute",
                "must be greater than 0".into(),
            );
        }
        if self.throttle.interval_ms > 60_000 {
            bad(
                "throttle.interval_ms",
                format!("{} ms is more than a minute", self.throttle.interval_ms),
            );
        }
        if self.http.tls_cert_path.is_empty() != self.http.tls_key_path.is_empty() {
            bad(
                "http.tls_cert_path",
                "TLS needs both http.tls_cert_path and http.tls_key_path (or neither)".into(),
            );
        }
        let sdk = &self.sdk;
        if sdk.max_symbols == 0 {
            bad("sdk.max_symbols", "must be greater than 0".into());
        }
        if sdk.max_queued_bytes < 1024 * 1024 {
            bad(
                "sdk.max_queued_bytes",
                "must be at least 1048576 (one full Alpaca message)".into(),
            );
        }
        if !(100..=600_000).contains(&sdk.auth_timeout_ms) {
            bad(
                "sdk.auth_timeout_ms",
                format!(
                    "{} ms is not between 100 ms and 10 minutes",
                    sdk.auth_timeout_ms
                ),
            );
        }
        if self.registry.max_symbols == 0 {
            bad("registry.max_symbols", "must be greater than 0".into());
        }
        let s = &self.session;
        if s.max_symbols == 0 {
            bad("session.max_symbols", "must be greater than 0".into());
        }
        if s.max_frame_bytes < 256 {
            bad("session.max_frame_bytes", "must be at least 256".into());
        }
        if s.max_messages_per_second == 0 {
            bad(
                "session.max_messages_per_second",
                "must be greater than 0".into(),
            );
        }
        if s.max_queued_events < 16 {
            bad("session.max_queued_events", "must be at least 16".into());
        }
        let k = &self.sdk;
        for (key, value) in [
            ("session.max_invalid_messages", s.max_invalid_messages),
            ("sdk.max_messages_per_second", k.max_messages_per_second),
            ("sdk.max_invalid_messages", k.max_invalid_messages),
        ] {
            if value == 0 {
                bad(key, "must be greater than 0".into());
            }
        }
        // The budget must hold the largest frame the daemon sends a client (an SDK frame is up
        // to 1 MB), or healthy clients would be closed.
        for (key, value, min) in [
            ("session.max_queued_bytes", s.max_queued_bytes, 256 * 1024),
            ("sdk.max_queued_bytes", k.max_queued_bytes, 1024 * 1024),
        ] {
            if value < min {
                bad(key, format!("must be at least {min}"));
            }
        }
        if k.max_message_bytes < 1024 {
            bad("sdk.max_message_bytes", "must be at least 1024".into());
        }
        if !(10..=10_000).contains(&s.batch_interval_ms) {
            bad(
                "session.batch_interval_ms",
                format!("{} must be between 10 and 10000", s.batch_interval_ms),
            );
        }
        if s.client_timeout_ms <= s.heartbeat_interval_ms {
            bad(
                "session.client_timeout_ms",
                format!(
                    "{} must be longer than session.heartbeat_interval_ms ({})",
                    s.client_timeout_ms, s.heartbeat_interval_ms
                ),
            );
        }
        for (key, list) in [
            ("dashboard.symbols", &self.dashboard.symbols),
            ("registry.pinned_symbols", &self.registry.pinned_symbols),
            ("simulator.symbols", &self.simulator.symbols),
        ] {
            for raw in list {
                if let Err(e) = Symbol::parse(raw) {
                    bad(key, e.to_string());
                }
            }
        }
        if !(0.0..=1.0).contains(&self.simulator.trade_probability) {
            bad(
                "simulator.trade_probability",
                "must be between 0 and 1".into(),
            );
        }
        problems
    }

    /// Symbols from a validated list (invalid entries were reported by `validate`).
    pub fn symbols(list: &[String]) -> Vec<Symbol> {
        list.iter().filter_map(|s| Symbol::parse(s).ok()).collect()
    }
}

fn credentials_from(
    env: &HashMap<String, String>,
    key_env: &str,
    secret_env: &str,
) -> Option<Credentials> {
    let key_id = env.get(key_env)?;
    let secret = env.get(secret_env)?;
    Some(Credentials {
        key_id: Secret::new(key_id.trim()),
        secret_key: Secret::new(secret.trim()),
    })
}

/// Milliseconds to a `Duration`.
pub const fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn clear_text_upstreams_need_an_opt_in_unless_on_loopback() {
        assert!(insecure("wss://stream.data.alpaca.markets", "ws://", false).is_none());
        assert!(insecure("ws://127.0.0.1:8765", "ws://", false).is_none());
        assert!(insecure("ws://localhost:8765/", "ws://", false).is_none());
        assert!(insecure("ws://[::1]:8765", "ws://", false).is_none());
        let problem = insecure("ws://10.0.0.5:8765", "ws://", false).unwrap();
        assert!(problem.contains("allow_insecure_upstream"), "{problem}");
        assert!(insecure("ws://10.0.0.5:8765", "ws://", true).is_none());
        assert!(insecure("http://paper.example", "http://", false).is_some());
        // The host is what follows the userinfo, as the connection reads it: refused.
        for sneaky in [
            "ws://127.0.0.1:80@stream.evil.example",
            "ws://127.0.0.1:1@vm",
            "wss://user:pass@stream.data.alpaca.markets",
            "http://localhost@paper.example",
        ] {
            let problem = insecure(sneaky, "ws://", true).unwrap_or_default();
            assert!(
                problem.contains("user name or password"),
                "{sneaky}: {problem}"
            );
        }
        assert!(insecure("ws://", "ws://", false).is_some(), "no host");
        let keys = [
            ("TICKRELAY__UPSTREAM__PROVIDER", "alpaca"),
            ("TICKRELAY__UPSTREAM__DATA_URL", "ws://proxy.example:8765"),
            ("APCA_API_KEY_ID", "k"),
            ("APCA_API_SECRET_KEY", "s"),
            ("TICKRELAY__ACCOUNTS__MAIN__ENABLED", "false"),
        ];
        let Err(SettingsError::Invalid(problems)) = Settings::from_toml_str("", env(&keys)) else {
            panic!("a clear-text upstream must be refused");
        };
        assert!(
            problems.iter().any(|p| p.key == "upstream.data_url"),
            "{problems:?}"
        );
        let mut opted = keys.to_vec();
        opted.push(("TICKRELAY__UPSTREAM__ALLOW_INSECURE_UPSTREAM", "true"));
        assert!(Settings::from_toml_str("", env(&opted)).is_ok());
    }

    #[test]
    fn redis_needs_tls_off_this_machine_and_its_password_comes_from_the_environment() {
        let problems = |toml: &str, vars: &[(&str, &str)]| -> Vec<Problem> {
            match Settings::from_toml_str(toml, env(vars)) {
                Ok(_) => Vec::new(),
                Err(SettingsError::Invalid(problems)) => problems,
                Err(e) => panic!("{e}"),
            }
        };
        let url = |u: &str| format!("[redis]\nurl = \"{u}\"\n");
        for fine in [
            "redis://127.0.0.1:6379",
            "redis://localhost:6379/2",
            "redis://[::1]:6379",
            "rediss://redis.example:6380",
        ] {
            assert_eq!(problems(&url(fine), &[]), Vec::new(), "{fine}");
        }
        let clear = problems(&url("redis://10.0.0.5:6379"), &[]);
        assert!(
            clear.len() == 1 && clear[0].message.contains("allow_plaintext"),
            "{clear:?}"
        );
        let opted = url("redis://10.0.0.5:6379") + "allow_plaintext = true\n";
        assert_eq!(problems(&opted, &[]), Vec::new());
        assert_eq!(problems(&url("http://10.0.0.5"), &[])[0].key, "redis.url");
        let ca_without_tls = url("redis://127.0.0.1") + "ca_file = \"ca.pem\"\n";
        assert_eq!(problems(&ca_without_tls, &[])[0].key, "redis.ca_file");
        let cert_without_key = url("rediss://r.example") + "cert_file = \"c.pem\"\n";
        assert_eq!(problems(&cert_without_key, &[])[0].key, "redis.cert_file");

        let toml = url("rediss://r.example") + "username = \"edge\"\n";
        let s =
            Settings::from_toml_str(&toml, env(&[(REDIS_PASSWORD_ENV, "pw-from-env")])).unwrap();
        assert_eq!(
            s.redis.password.as_ref().map(Secret::expose),
            Some("pw-from-env")
        );
        let shown = toml::to_string(&s.redis).unwrap();
        assert!(!shown.contains("pw-from-env"), "{shown}");
        let with_password = url("rediss://edge:pw-in-url@r.example");
        let s = Settings::from_toml_str(&with_password, HashMap::new()).unwrap();
        let shown = toml::to_string(&s.redis).unwrap();
        assert!(
            shown.contains("rediss://<redacted>@r.example") && !shown.contains("pw-in-url"),
            "{shown}"
        );
    }

    #[test]
    fn huge_durations_and_sizes_are_problems_not_panics() {
        let toml = "[session]\nclient_timeout_ms = 9223372036854775807\nmax_frame_bytes = 1099511627776\n[upstream.backoff]\nmax_ms = 86400001\n";
        let Err(SettingsError::Invalid(problems)) = Settings::from_toml_str(toml, HashMap::new())
        else {
            panic!("huge values must be refused");
        };
        let keys: Vec<String> = problems.into_iter().map(|p| p.key).collect();
        for key in [
            "session.client_timeout_ms",
            "session.max_frame_bytes",
            "upstream.backoff.max_ms",
        ] {
            assert!(
                keys.iter().any(|k| k == key),
                "{key} not reported: {keys:?}"
            );
        }
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/settings.toml")).unwrap();
        assert!(Settings::from_toml_str(&committed, HashMap::new()).is_ok());
    }

    #[test]
    fn a_replay_takes_a_path_or_paths_a_speed_or_max_and_checks_its_window() {
        let dir = std::env::temp_dir().display().to_string();
        let toml = format!(
            "[upstream]\nprovider = \"replay\"\n[replay]\npath = \"{dir}\"\nspeed = \"max\"\nloop = true\nstart = \"paused\"\n"
        );
        let s = Settings::from_toml_str(&toml, HashMap::new()).unwrap();
        assert_eq!(s.replay.path, std::slice::from_ref(&dir));
        assert_eq!(s.replay.speed, ReplaySpeed::Max);
        assert!(s.replay.repeat);
        assert_eq!(s.replay.start, ReplayStart::Paused);
        let env = HashMap::from([
            ("TICKRELAY__REPLAY__SPEED".to_string(), "10".to_string()),
            (
                "TICKRELAY__REPLAY__PATH".to_string(),
                format!("{dir},{dir}"),
            ),
        ]);
        let s = Settings::from_toml_str(&toml, env).unwrap();
        assert_eq!(s.replay.speed, ReplaySpeed::Times(10.0));
        assert_eq!(s.replay.path.len(), 2);

        let bad = "[upstream]\nprovider = \"replay\"\n[replay]\npath = [\"/no/such/records\"]\nspeed = 0\nfrom = \"2026-12-07T10:00:00Z\"\nto = \"2026-12-07T09:00:00Z\"\n";
        let text = Settings::from_toml_str(bad, HashMap::new())
            .unwrap_err()
            .to_string();
        for key in ["replay.path", "replay.speed", "replay.to"] {
            assert!(text.contains(key), "{key} in {text}");
        }
        let err = Settings::from_toml_str("[replay]\nspeed = \"fast\"\n", HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a speed"), "{err}");
    }

    #[test]
    fn committed_settings_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("settings.toml");
        let s = Settings::load_with_env(&path, HashMap::new()).unwrap();
        assert_eq!(s.upstream.provider, Provider::Simulator);
        for sym in ["AAPL", "MSFT", "SPY", "QQQ", "TSLA"] {
            assert!(s.simulator.symbols.iter().any(|x| x == sym), "{sym}");
        }
    }

    #[test]
    fn environment_overrides_file() {
        let s = Settings::from_toml_str(
            "[http]\nport = 8080\n",
            env(&[
                ("TICKRELAY__HTTP__PORT", "9123"),
                ("TICKRELAY__FEEDS__STOCKS__FEED", "sip"),
                ("TICKRELAY__DASHBOARD__SYMBOLS", "IBM,GE"),
                ("TICKRELAY__UPSTREAM__BACKOFF__FACTOR", "1.5"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http.port, 9123);
        assert_eq!(s.feeds.stocks.feed, StockFeed::Sip);
        assert_eq!(s.dashboard.symbols, vec!["IBM", "GE"]);
        assert_eq!(s.upstream.backoff.factor, 1.5);
    }

    #[test]
    fn alpaca_without_credentials_is_an_error_naming_the_variables() {
        let err = Settings::from_toml_str(
            "[upstream]\nprovider = \"alpaca\"\n",
            env(&[("APCA_API_KEY_ID", "only-the-key")]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("upstream.provider"), "{text}");
        assert!(text.contains(SECRET_KEY_ENV), "{text}");
        assert!(!text.contains("only-the-key"), "{text}");
    }

    #[test]
    fn alpaca_with_credentials_loads_and_never_prints_them() {
        let s = Settings::from_toml_str(
            "[upstream]\nprovider = \"alpaca\"\n",
            env(&[
                ("APCA_API_KEY_ID", "PKTESTKEYID"),
                ("APCA_API_SECRET_KEY", "very-secret-value"),
            ]),
        )
        .unwrap();
        let creds = s.credentials.as_ref().unwrap();
        assert_eq!(creds.secret_key.expose(), "very-secret-value");
        let debug = format!("{s:?}");
        assert!(!debug.contains("very-secret-value"));
        assert!(!debug.contains("PKTESTKEYID"));
    }

    #[test]
    fn a_client_can_be_defined_entirely_from_the_environment() {
        let s = Settings::from_toml_str(
            "[accounts.main]\n[accounts.swing]\n",
            env(&[
                ("TICKRELAY__CLIENTS__ALGO-1__KEY_ID", "algo-key"),
                (
                    "TICKRELAY__CLIENTS__ALGO-1__SCOPES",
                    "market,account:main,account:swing",
                ),
                ("TICKRELAY_CLIENT_SECRET_ALGO_1", "algo-secret"),
            ]),
        )
        .unwrap();
        let c = &s.clients["algo-1"];
        assert_eq!(c.key_id, "algo-key");
        assert_eq!(c.scope_names(), ["market", "account:main", "account:swing"]);
        assert_eq!(c.secret.as_ref().unwrap().expose(), "algo-secret");
        assert!(!format!("{s:?}").contains("algo-secret"));
    }

    #[test]
    fn a_client_without_its_secret_or_with_an_unknown_account_is_refused() {
        let err = Settings::from_toml_str(
            "[clients.notebook]\nkey_id = \"nb\"\nscopes = [\"account:ghost\"]\n[clients.other]\nkey_id = \"nb\"\nsecret_env = \"OTHER_SECRET\"\nscopes = [\"markets\"]\n[clients.colon]\nkey_id = \"a:b\"\n[clients.anonymous]\nkey_id = \"anon\"\n",
            env(&[
                ("OTHER_SECRET", "s"),
                ("TICKRELAY_CLIENT_SECRET_COLON", "s"),
                ("TICKRELAY_CLIENT_SECRET_ANONYMOUS", "s"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("TICKRELAY_CLIENT_SECRET_NOTEBOOK"), "{err}");
        assert!(
            err.contains("clients.notebook.scopes") && err.contains("ghost"),
            "{err}"
        );
        assert!(
            err.contains("clients.other.scopes") && err.contains("markets"),
            "{err}"
        );
        assert!(err.contains("already uses this key id"), "{err}");
        assert!(err.contains("clients.colon.key_id"), "{err}");
        assert!(err.contains("names callers without credentials"), "{err}");
    }

    #[test]
    fn short_client_secrets_are_refused_with_a_real_account_and_allowed_with_the_simulator() {
        let toml = "[clients.algo]\nkey_id = \"algo\"\n";
        let short = ("TICKRELAY_CLIENT_SECRET_ALGO", "s3cret");
        let real = [
            short,
            ("TICKRELAY__UPSTREAM__PROVIDER", "alpaca"),
            ("APCA_API_KEY_ID", "k"),
            ("APCA_API_SECRET_KEY", "s"),
        ];
        let err = Settings::from_toml_str(toml, env(&real))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clients.algo") && err.contains("6 characters"),
            "{err}"
        );
        assert!(
            !err.contains("s3cret"),
            "the secret itself is never printed: {err}"
        );
        assert!(Settings::from_toml_str(toml, env(&[short])).is_ok());
        let long = ("TICKRELAY_CLIENT_SECRET_ALGO", "a-long-random-secret");
        let mut real = real;
        real[0] = long;
        assert!(Settings::from_toml_str(toml, env(&real)).is_ok());
    }

    #[test]
    fn an_environment_key_that_is_not_a_settings_key_is_refused_before_it_is_read() {
        // Found by the settings fuzz target: `[N]` made the settings library build an N-element
        // array (10 s and 1.9 GB for one variable).
        for key in [
            "TICKRELAY__HTTP__PORT[123041217]",
            "TICKRELAY__HTTP__PORT.X",
            "TICKRELAY__HTTP__P\u{0}RT",
        ] {
            let err = Settings::from_toml_str("", env(&[(key, "1")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a settings key"), "{key}: {err}");
        }
        assert!(Settings::from_toml_str("", env(&[("OTHER[5]", "1")])).is_ok());
        // The same in the file, at any depth.
        for toml in [
            "\"a[100000000]\" = 1\n",
            "[http]\n\"x[100000000]\" = 1\n",
            "[clients.\"a.b\"]\nkey_id = \"k\"\n",
        ] {
            let err = Settings::from_toml_str(toml, env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a settings key"), "{toml}: {err}");
        }
    }

    #[test]
    fn an_anonymous_account_scope_is_a_start_up_error_with_a_real_account_only() {
        let toml = "[accounts.main]\n[auth]\nanonymous_scopes = [\"market\", \"account:main\"]\n";
        let simulated = Settings::from_toml_str(toml, env(&[])).unwrap();
        assert_eq!(simulated.auth.anonymous_scopes, ["market", "account:main"]);
        let real = format!("[upstream]\nprovider = \"alpaca\"\n{toml}");
        let err = Settings::from_toml_str(
            &real,
            env(&[("APCA_API_KEY_ID", "k"), ("APCA_API_SECRET_KEY", "s")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("auth.anonymous_scopes") && err.contains("account:main"),
            "{err}"
        );
        let from_env = Settings::from_toml_str(
            "[accounts.main]\n",
            env(&[("TICKRELAY__AUTH__ANONYMOUS_SCOPES", "market,pin")]),
        )
        .unwrap();
        assert_eq!(from_env.auth.anonymous_scopes, ["market", "pin"]);
        assert_eq!(
            Settings::from_toml_str("", env(&[]))
                .unwrap()
                .auth
                .anonymous_scopes,
            ["market"],
            "the default"
        );
    }

    #[test]
    fn each_account_reads_its_own_key_pair() {
        let toml = "[upstream]\nprovider = \"alpaca\"\n[accounts.main]\n[accounts.swing]\npaper = false\n[accounts.other]\nkey_id_env = \"MY_KEY\"\nsecret_key_env = \"MY_SECRET\"\n";
        let s = Settings::from_toml_str(
            toml,
            env(&[
                ("APCA_API_KEY_ID", "main-key"),
                ("APCA_API_SECRET_KEY", "main-secret"),
                ("APCA_API_KEY_ID_SWING", "swing-key"),
                ("APCA_API_SECRET_KEY_SWING", "swing-secret"),
                ("MY_KEY", "other-key"),
                ("MY_SECRET", "other-secret"),
            ]),
        )
        .unwrap();
        let key = |id: &str| {
            s.accounts[id]
                .credentials
                .as_ref()
                .unwrap()
                .key_id
                .expose()
                .to_owned()
        };
        assert_eq!(key("main"), "main-key");
        assert_eq!(key("swing"), "swing-key");
        assert_eq!(key("other"), "other-key");
        assert!(!s.accounts["swing"].paper);
    }

    #[test]
    fn an_account_without_its_keys_is_named_with_its_variables() {
        let err = Settings::from_toml_str(
            "[upstream]\nprovider = \"alpaca\"\n[accounts.swing]\n",
            env(&[("APCA_API_KEY_ID", "k"), ("APCA_API_SECRET_KEY", "s")]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("accounts.swing") && text.contains("APCA_API_KEY_ID_SWING"),
            "{text}"
        );
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let err = Settings::from_toml_str(
            "[upstream.backoff]\nfactor = 0.5\njitter = 2.0\n[dashboard]\nsymbols = [\"AAPL\", \"not a symbol\"]\n[session]\nmax_symbols = 0\n",
            HashMap::new(),
        )
        .unwrap_err();
        let SettingsError::Invalid(problems) = err else {
            panic!("expected validation problems");
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "upstream.backoff.factor",
            "upstream.backoff.jitter",
            "dashboard.symbols",
            "session.max_symbols",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_read_errors() {
        let err = Settings::from_toml_str("[http]\nprot = 1\n", HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
        let err = Settings::from_toml_str("[upstream]\nprovider = \"polygon\"\n", HashMap::new())
            .unwrap_err();
        assert!(err.to_string().contains("polygon"), "{err}");
    }
}
