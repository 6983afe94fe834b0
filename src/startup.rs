//! Builds and runs the daemon: binds the listeners, starts the actors, stops them in order.
//!
//! [`Daemon::build`] must run inside an actix `System`. It starts the simulator (when it is the
//! provider), the registry, one supervised feed per enabled feed — each on its own thread (an
//! actix `Arbiter`) so that nothing downstream can keep it from draining its socket — the trading
//! streams (on a thread of their own) and the HTTP server with one fan-out hub per worker, and reads
//! back the bound port (port 0 picks a free one). [`DaemonHandle::shutdown`] closes every browser session
//! with 1001, stops the feeds without a restart and stops the servers.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_codec::Framed;
use actix_http::{h1, HttpService, Request};
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::AppConfig;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App};
use anyhow::Context as _;
use log::{info, warn};
use tokio::net::TcpStream;

use crate::accounts::stream::{TradingConfig, TradingStream};
use crate::accounts::AccountStore;
use crate::browser::session::SessionConfig;
use crate::credentials::{Credentials, Secret};
use crate::downstream::hub::{HubConfig, LocalHub};
use crate::http::{self, AppState};
use crate::quote_book::QuoteBook;
use crate::recorder::{Recorder, Tape};
use crate::registry::{Heartbeat, Pin, PinOwner, RegisterFeed, Registry, RegistryConfig, Shutdown};
use crate::replay::{self, ReplayHandle};
use crate::scaleout::edge::{EdgeConfig, EdgeFeed};
use crate::scaleout::lease::Lease;
use crate::scaleout::relay::{EdgeRelay, RelayShared};
use crate::scaleout::sink::{Exchanges, PriceSink};
use crate::scaleout::target::RedisTarget;
use crate::sdk::SdkContext;
use crate::settings::{ms, Provider, Settings, MIN_SECRET_LEN};
use crate::simulator::{self, SimulatorHandle};
use crate::throttle::ThrottleConfig;
use crate::upstream::feed::{FeedConfig, FeedOutputs, UpstreamFeed};
use crate::upstream::gate::Gate;
use crate::upstream::policy::PolicyConfig;
use crate::upstream::tap::{TapHub, Taps};
use crate::upstream::{FeedCounters, FeedId, FeedStatus};
use crate::vocab::Encoding;
use crate::vocab::FeedKind;

/// Installs the process-wide rustls crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How long shutdown waits for the registry to close the sessions and stop the feeds.
const REGISTRY_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the stop waits for the recorder to write what it holds.
const RECORDER_FINISH_LIMIT: Duration = Duration::from_secs(1);

/// A running daemon.
pub struct Daemon {
    server: Server,
    heartbeat: Heartbeat,
    addr: SocketAddr,
    handle: DaemonHandle,
    simulator: Option<SimulatorHandle>,
    replay: Option<ReplayHandle>,
}

/// Stops a daemon from anywhere (signal handler, tests).
#[derive(Clone)]
pub struct DaemonHandle {
    registry: Addr<Registry>,
    /// A primary's lease, released at shutdown so a standby takes over at once.
    lease: Option<(Arc<Lease>, RedisTarget)>,
    http: ServerHandle,
    simulator: Option<ServerHandle>,
    /// Its refused credentials not logged yet are summed up at the stop.
    auth: Arc<crate::auth::Auth>,
    /// What the recorder holds is written at the stop.
    recorder: Option<Arc<Recorder>>,
    /// A replay's player, stopped with the servers.
    replay: Option<ReplayHandle>,
}

impl DaemonHandle {
    /// Graceful stop: sessions get 1001, feeds close without reconnecting, servers stop.
    pub async fn shutdown(&self) {
        self.auth.log_refusals();
        // A stuck registry must not hold the stop forever: the servers stop regardless.
        match tokio::time::timeout(REGISTRY_SHUTDOWN_TIMEOUT, self.registry.send(Shutdown)).await {
            Ok(Ok(n)) => info!("shutting down: closed {n} browser sessions, stopping feeds"),
            Ok(Err(e)) => warn!("shutting down: the registry is already gone ({e})"),
            Err(_) => warn!(
                "shutting down: the registry did not answer within {REGISTRY_SHUTDOWN_TIMEOUT:?}; stopping the servers anyway"
            ),
        }
        // The feeds have stopped: the recorder writes what it holds. Before the servers stop,
        // whose end also ends the process.
        if let Some(recorder) = self.recorder.clone() {
            let finish = move || recorder.finish(RECORDER_FINISH_LIMIT);
            let _ = actix_web::rt::task::spawn_blocking(finish).await;
        }
        if let Some((lease, url)) = &self.lease {
            lease.release(url).await;
        }
        // Lets the close frames reach the sockets before the listener goes.
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        self.http.stop(true).await;
        if let Some(sim) = &self.simulator {
            sim.stop(true).await;
        }
        if let Some(replay) = &self.replay {
            replay.stop();
        }
    }
}

impl Daemon {
    /// Starts everything described by `settings`.
    pub async fn build(settings: Settings) -> anyhow::Result<Daemon> {
        install_crypto_provider();
        let provider = settings.upstream.provider;

        let mut replaying: Option<ReplayHandle> = None;
        let (data_url, credentials, simulator, sim_server) = match provider {
            Provider::Simulator => {
                let sim = &settings.simulator;
                let listener =
                    TcpListener::bind((sim.host.as_str(), sim.port)).with_context(|| {
                        format!("cannot bind the simulator to {}:{}", sim.host, sim.port)
                    })?;
                let (server, handle) =
                    simulator::start(sim, listener).context("cannot start the simulator")?;
                let server_handle = server.handle();
                actix_web::rt::spawn(server);
                (
                    handle.ws_url(),
                    local_credentials("simulator", "simulator"),
                    Some(handle),
                    Some(server_handle),
                )
            }
            Provider::Replay => {
                let listener = TcpListener::bind(("127.0.0.1", 0))
                    .context("cannot bind the replay server to a loopback port")?;
                // At `max`, an SDK program a quarter full holds the replay back: far from the
                // budget that closes a slow program.
                let max_backlog = settings.sdk.max_queued_bytes / 4;
                let (server, handle) = replay::start(&settings.replay, listener, max_backlog)
                    .with_context(|| format!("cannot replay {:?}", settings.replay.path))?;
                let server_handle = server.handle();
                actix_web::rt::spawn(server);
                let url = handle.ws_url();
                let credentials = local_credentials("replay", handle.secret());
                replaying = Some(handle);
                (url, credentials, None, Some(server_handle))
            }
            // An edge holds no upstream connection: its feeds read Redis.
            Provider::Redis => (
                String::new(),
                local_credentials("simulator", "simulator"),
                None,
                None,
            ),
            Provider::Alpaca => {
                let creds = settings
                    .credentials
                    .clone()
                    .context("the Alpaca provider needs APCA_API_KEY_ID and APCA_API_SECRET_KEY")?;
                (
                    settings.upstream.data_url.trim_end_matches('/').to_owned(),
                    creds,
                    None,
                    None,
                )
            }
        };

        let book = QuoteBook::default();
        let edge = provider == Provider::Redis;
        let redis = if settings.redis.url.is_empty() {
            None
        } else {
            Some(RedisTarget::from_settings(&settings.redis).map_err(anyhow::Error::msg)?)
        };
        let needs_redis = || {
            redis
                .as_ref()
                .context("redis.url is needed by an edge and by the lease")
        };
        // An edge's prices are the primary's: it writes none back.
        let sink = if edge {
            None
        } else {
            start_sink(&settings, redis.as_ref())
        };
        let throttle = ThrottleConfig {
            interval: ms(settings.throttle.interval_ms),
            stale_after: ms(settings.throttle.stale_after_ms),
            book_depth: settings.feeds.crypto.book_depth,
            hub_drops: Arc::new(AtomicU64::new(0)),
            sink: sink.clone(),
        };
        let heartbeat = Heartbeat::default();
        let registry = Registry::new(
            RegistryConfig {
                unsubscribe_grace: ms(settings.registry.unsubscribe_grace_ms),
                max_pinned: settings.registry.max_pinned_symbols,
                max_pins_per_client: settings.registry.max_pins_per_client,
                max_symbols: settings.registry.max_symbols,
                throttle,
                heartbeat: heartbeat.clone(),
            },
            book.clone(),
        )
        .start();

        let taps = Taps::new();
        let auth = Arc::new(settings.auth());
        for (id, client) in &settings.clients {
            // With a real account a short secret is refused by the settings check.
            let len = client
                .secret
                .as_ref()
                .map_or(0, |s| s.expose().chars().count());
            if len < MIN_SECRET_LEN {
                warn!("client {id}: its secret has {len} characters; use at least {MIN_SECRET_LEN} random ones (a short secret is guessed in spite of the delays)");
            }
        }
        let refusals = auth.clone();
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(crate::auth::failures::LOG_INTERVAL);
            every.tick().await;
            loop {
                every.tick().await;
                refusals.log_refusals();
            }
        });
        if auth.is_empty() {
            info!("no client is configured: callers get only the anonymous scopes [{}] and every SDK auth is refused (402); add one with [clients.<id>] key_id, or TICKRELAY__CLIENTS__<ID>__KEY_ID and TICKRELAY_CLIENT_SECRET_<ID>", auth.anonymous().scopes.names().join(", "));
        } else {
            info!(
                "anonymous callers get the scopes [{}]",
                auth.anonymous().scopes.names().join(", ")
            );
        }
        let mut sdk = SdkContext::new(&settings, taps.clone(), auth.clone());
        sdk.backlog = replaying.as_ref().map(|r| r.control.backlog.clone());
        let sdk = Arc::new(sdk);
        let accounts = AccountStore::default();
        // The upstream connections' frames, as received: only where they are (not on an edge).
        // A replay is not recorded again.
        let recorder: Option<Arc<Recorder>> =
            if settings.recorder.enabled && !edge && provider != Provider::Replay {
                Some(
                    Recorder::start(settings.recorder.config(), accounts.clone()).with_context(
                        || format!("cannot start the recorder in {}", settings.recorder.dir),
                    )?,
                )
            } else {
                None
            };
        let tape = |source: &str| {
            recorder
                .as_ref()
                .filter(|_| settings.recorder.records(source))
                .map(|r| Tape::new(r, source))
        };
        let (mut lease, mut relay) = (None, None);
        if edge {
            start_edge(&settings, needs_redis()?, &registry, &taps);
        } else {
            let gate = settings.redis.lease.then(|| Arc::new(Gate::default()));
            for kind in FeedKind::ALL {
                if let Some(mut config) =
                    feed_config(kind, &settings, &data_url, &credentials, &taps)
                {
                    config.gate = gate.clone();
                    config.recorder = tape(kind.as_str());
                    start_feed(&registry, config);
                }
            }
            let local = match (&simulator, &replaying) {
                (Some(sim), _) => Some(LocalUpstream::Simulator(sim.http_url())),
                (None, Some(replay)) => Some(LocalUpstream::Replay(
                    replay.http_url(),
                    replay.secret().to_owned(),
                )),
                (None, None) => None,
            };
            start_accounts(&settings, local, &registry, &accounts, gate.as_ref(), &tape)?;
            // Last: every connection actor watches the gate before the lease can open it.
            if let Some(gate) = gate {
                lease = Some(start_lease(&settings, needs_redis()?, gate));
            }
            relay = start_relay(&settings, &registry, &taps, redis.as_ref());
        }

        let pins = Settings::symbols(&settings.registry.pinned_symbols);
        if !pins.is_empty() {
            let outcome = registry
                .send(Pin {
                    symbols: pins,
                    owner: PinOwner::Config,
                    ttl: None,
                })
                .await?;
            for r in outcome.rejected {
                warn!("pinned symbol {} refused: {}", r.symbol, r.message);
            }
        }

        let latency = Arc::new(crate::downstream::delivery::LatencyHistogram::default());
        let daemon_heartbeat = heartbeat.clone();
        let state = web::Data::new(AppState {
            registry: registry.clone(),
            book,
            accounts,
            sessions: Arc::new(SessionConfig {
                settings: settings.session.clone(),
                provider: provider.as_str(),
                throttle_ms: settings.throttle.interval_ms,
                stale_after: ms(settings.throttle.stale_after_ms),
                auth: auth.clone(),
            }),
            auth: auth.clone(),
            sink,
            lease: lease.clone(),
            relay,
            recorder: recorder.clone(),
            replay: replaying.as_ref().map(|r| r.control.clone()),
            latency: latency.clone(),
            provider: provider.as_str(),
            stale_after: ms(settings.throttle.stale_after_ms),
            dashboard_symbols: Settings::symbols(&settings.dashboard.symbols)
                .iter()
                .map(ToString::to_string)
                .collect(),
            started: Instant::now(),
            started_at: crate::time::Timestamp::now(),
            next_session: AtomicU64::new(1),
            sdk,
            guard: http::guard::RequestGuard::from_settings(&settings.http),
            heartbeat,
            connections: http::limits::ConnectionLimits::new(
                settings.http.max_connections,
                settings.http.max_connections_per_ip,
            ),
        });

        let http = &settings.http;
        let listener = bind_listener(&http.host, http.port).with_context(|| {
            format!(
                "cannot bind HTTP to {}:{} (http.host / http.port)",
                http.host, http.port
            )
        })?;
        let addr = listener.local_addr()?;
        // A client that stops reading gets its TCP connection aborted by the kernel once the
        // slow-client timeout and close grace have passed (TCP_USER_TIMEOUT also covers zero-window
        // probes), so a stalled socket cannot be held open forever.
        let s = &settings.session;
        let user_timeout = ms(s.slow_client_timeout_ms + s.slow_client_close_grace_ms);
        let send_buffer = s.socket_send_buffer_bytes;
        let hub_config = HubConfig {
            slow_client_timeout: ms(s.slow_client_timeout_ms),
            heartbeat_interval: ms(s.heartbeat_interval_ms),
            client_timeout: ms(s.client_timeout_ms),
            batch_interval: ms(s.batch_interval_ms),
            latency,
        };
        let hub_ids = Arc::new(AtomicUsize::new(0));
        // actix-web's HttpServer, assembled from its parts so that WebSocket upgrades leave the
        // HTTP/1 dispatcher (and its 16 KiB of buffers per connection) for the session's own
        // socket handling. The factory runs once on each worker thread: each worker gets its
        // own hub.
        let mut builder = actix_server::Server::build()
            .disable_signals()
            .shutdown_timeout(http.shutdown_timeout_ms.div_ceil(1000));
        if http.workers > 0 {
            builder = builder.workers(http.workers);
        }
        let tls = match http.tls() {
            Some((cert, key)) => Some(tls_config(cert, key)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        // The factory runs once on each worker thread: each worker gets its own hub. The same
        // service serves plain TCP or TLS; only the connection type differs.
        macro_rules! worker_service {
            ($io:ty) => {{
                yield_to_ingest();
                let hub =
                    LocalHub::start(hub_ids.fetch_add(1, Ordering::Relaxed), hub_config.clone());
                taps.add_hub(TapHub {
                    batches: hub.raw_publisher(),
                    changes: hub.change_publisher(),
                });
                let app = App::new()
                    .app_data(state.clone())
                    .wrap(actix_web::middleware::from_fn(http::guard::check))
                    .wrap(http::security_headers())
                    .configure(http::routes);
                let upgrade_state = state.clone();
                let upgrades = actix_service::fn_factory(move || {
                    let (state, hub) = (upgrade_state.clone(), hub.clone());
                    async move {
                        Ok::<_, ()>(actix_service::fn_service(
                            move |(req, framed): (Request, Framed<$io, h1::Codec>)| {
                                http::ws::upgrade(req, framed, state.clone(), hub.clone())
                            },
                        ))
                    }
                });
                HttpService::build()
                    .keep_alive(Duration::from_secs(5))
                    .client_request_timeout(Duration::from_secs(5))
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .on_connect_ext(move |io: &$io, _: &mut _| {
                        tune_socket(
                            crate::downstream::socket::Connection::tcp(io),
                            user_timeout,
                            send_buffer,
                        )
                    })
                    .upgrade(upgrades)
                    .finish(actix_service::map_config(app, |_| AppConfig::default()))
            }};
        }
        let builder = match tls {
            None => builder.listen("tickrelay-http", listener, move || {
                worker_service!(TcpStream).tcp()
            })?,
            Some(config) => builder.listen("tickrelay-https", listener, move || {
                worker_service!(TlsStream<TcpStream>).rustls_0_23(config.clone())
            })?,
        };
        let server = builder.run();
        info!(
            "tickrelay {}: listening on {scheme}://{addr} (provider: {})",
            env!("CARGO_PKG_VERSION"),
            provider.as_str()
        );
        Ok(Daemon {
            heartbeat: daemon_heartbeat,
            handle: DaemonHandle {
                registry,
                lease: lease.zip(redis),
                http: server.handle(),
                simulator: sim_server,
                auth,
                recorder,
                replay: replaying.clone(),
            },
            server,
            addr,
            simulator,
            replay: replaying,
        })
    }

    /// The bound HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The in-process simulator, when it is the provider.
    pub fn simulator(&self) -> Option<&SimulatorHandle> {
        self.simulator.as_ref()
    }

    /// The replay, when it is the provider.
    pub fn replay(&self) -> Option<&ReplayHandle> {
        self.replay.as_ref()
    }

    pub fn handle(&self) -> DaemonHandle {
        self.handle.clone()
    }

    /// The registry's heartbeat (liveness, and systemd's watchdog).
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// Runs until the HTTP server stops (see [`DaemonHandle::shutdown`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The retry policy every upstream connection follows.
pub fn policy_config(settings: &Settings) -> PolicyConfig {
    let up = &settings.upstream;
    PolicyConfig {
        fatal_hold_off: ms(up.fatal_hold_off_ms),
        connection_limit_hold_off: ms(up.connection_limit_hold_off_ms),
        rate_limit_hold_off: ms(up.rate_limit_hold_off_ms),
        circuit_threshold: up.circuit_breaker_threshold,
        circuit_cooldown: ms(up.circuit_breaker_cooldown_ms),
    }
}

/// How to connect the `kind` feed, or `None` when it is disabled.
fn feed_config(
    kind: FeedKind,
    settings: &Settings,
    data_url: &str,
    credentials: &Credentials,
    taps: &Arc<Taps>,
) -> Option<FeedConfig> {
    let feeds = &settings.feeds;
    let (enabled, path, encoding) = match kind {
        FeedKind::Stocks => (
            feeds.stocks.enabled,
            feeds.stocks.feed.path(),
            feeds.stocks.encoding,
        ),
        FeedKind::Crypto => (
            feeds.crypto.enabled,
            feeds.crypto.location.path(),
            feeds.crypto.encoding,
        ),
        // Alpaca serves options in msgpack only.
        FeedKind::Options => (
            feeds.options.enabled,
            feeds.options.feed.path(),
            Encoding::Msgpack,
        ),
        FeedKind::News => (feeds.news.enabled, "/v1beta1/news", feeds.news.encoding),
    };
    let up = &settings.upstream;
    enabled.then(|| FeedConfig {
        kind,
        url: format!("{data_url}{path}"),
        provider: settings.upstream.provider.as_str(),
        credentials: credentials.clone(),
        encoding,
        connect_timeout: ms(up.connect_timeout_ms),
        auth_timeout: ms(up.auth_timeout_ms),
        ping_interval: ms(up.ping_interval_ms),
        pong_timeout: ms(up.pong_timeout_ms),
        data_idle_timeout: if kind == FeedKind::News || up.provider == Provider::Replay {
            // News is quiet for long stretches, and a record can be (or end): silence is not a
            // fault.
            Duration::ZERO
        } else {
            ms(up.data_idle_timeout_ms)
        },
        max_frame_bytes: up.max_frame_bytes,
        backoff: up.backoff.clone(),
        policy: policy_config(settings),
        tap: taps.clone(),
        gate: None,
        recorder: None,
    })
}

/// Keys for an in-process upstream: the simulator takes any; a replay, any key id with its secret.
fn local_credentials(key_id: &str, secret: &str) -> Credentials {
    Credentials {
        key_id: Secret::new(key_id),
        secret_key: Secret::new(secret),
    }
}

/// The Redis price sink, when `redis.url` is set: created, and its writer started on this system.
fn start_sink(settings: &Settings, target: Option<&RedisTarget>) -> Option<Arc<PriceSink>> {
    let redis = &settings.redis;
    let target = target?;
    // The feed a price came from, as the consumers' `exchange` field names it: IEX, SIP, OPRA, …
    let label = |path: &str| path.rsplit('/').next().unwrap_or(path).to_ascii_uppercase();
    let exchanges = Exchanges {
        stock: label(settings.feeds.stocks.feed.path()),
        crypto: "CRYPTO".into(),
        option: label(settings.feeds.options.feed.path()),
    };
    let sink = PriceSink::new(target, redis.price_ttl_secs, exchanges);
    info!(
        "redis: prices go to {} (price:{{SYMBOL}} for {} s, price.updated.{{SYMBOL}})",
        sink.status().server,
        redis.price_ttl_secs
    );
    // Its own thread, below the pipeline's: Redis must never slow what browsers receive.
    let writer = sink
        .clone()
        .run(target.clone(), settings.upstream.backoff.clone());
    Arbiter::new().spawn(async move {
        lower_thread_priority(SINK_NICE);
        writer.await;
    });
    Some(sink)
}

/// A primary's lease (`redis.lease`): its task, on a thread of its own so that a busy pipeline
/// cannot make it renew late.
fn start_lease(settings: &Settings, target: &RedisTarget, gate: Arc<Gate>) -> Arc<Lease> {
    let redis = &settings.redis;
    let lease = Lease::new(redis.instance_name(), ms(redis.lease_ttl_ms), gate);
    info!(
        "lease: {} competes for the upstream connections ({} ms lease)",
        lease.status().instance,
        redis.lease_ttl_ms
    );
    let task = lease.clone().run(target.clone());
    Arbiter::new().spawn(task);
    lease
}

/// On a primary with Redis: publishes what the edges want (started on its own thread).
fn start_relay(
    settings: &Settings,
    registry: &Addr<Registry>,
    taps: &Arc<Taps>,
    target: Option<&RedisTarget>,
) -> Option<Arc<RelayShared>> {
    let target = target?.clone();
    let accounts: Vec<Arc<str>> = enabled_accounts(settings)
        .map(|(id, _)| Arc::from(id.as_str()))
        .collect();
    let (registry, taps, backoff) = (
        registry.clone(),
        taps.clone(),
        settings.upstream.backoff.clone(),
    );
    let shared = Arc::new(RelayShared::default());
    let counters = shared.clone();
    Arbiter::new().spawn(async move {
        EdgeRelay::run(counters, registry, taps, accounts, target, backoff);
    });
    Some(shared)
}

/// An edge (`provider = "redis"`): one Redis link per enabled feed and account, each reporting
/// to the registry as that feed would.
fn start_edge(
    settings: &Settings,
    target: &RedisTarget,
    registry: &Addr<Registry>,
    taps: &Arc<Taps>,
) {
    let instance = settings.redis.instance_name();
    info!("edge {instance}: market data, news and account events from Redis");
    let feeds = &settings.feeds;
    let enabled = [
        (FeedKind::Stocks, feeds.stocks.enabled),
        (FeedKind::Crypto, feeds.crypto.enabled),
        (FeedKind::Options, feeds.options.enabled),
        (FeedKind::News, feeds.news.enabled),
    ];
    let ids = enabled
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(kind, _)| (FeedId::Data(kind), 0))
        .chain(
            enabled_accounts(settings)
                .enumerate()
                .map(|(i, (id, _))| (FeedId::Trading(Arc::from(id.as_str())), i as u64)),
        );
    for (id, account_index) in ids {
        let config = EdgeConfig {
            feed: id.clone(),
            target: target.clone(),
            instance: instance.clone(),
            account_index,
            backoff: settings.upstream.backoff.clone(),
            tap: taps.clone(),
            status: registry.clone().recipient(),
            news: registry.clone().recipient(),
            accounts: registry.clone().recipient(),
        };
        let counters = Arc::new(FeedCounters::default());
        let status = FeedStatus::new(id.clone(), "redis", String::new());
        let feed_counters = counters.clone();
        let link = EdgeFeed::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            EdgeFeed::new(config, feed_counters)
        });
        registry.do_send(RegisterFeed {
            subscriptions: matches!(id, FeedId::Data(_)).then(|| link.clone().recipient()),
            id,
            stop: link.recipient(),
            counters,
            status,
        });
    }
}

/// The enabled accounts, in the order that keys their `position_update` frames.
fn enabled_accounts(
    settings: &Settings,
) -> impl Iterator<Item = (&String, &crate::settings::AccountSettings)> {
    settings.accounts.iter().filter(|(_, a)| a.enabled)
}

/// An in-process upstream's trading base URL (and a replay's secret).
enum LocalUpstream {
    Simulator(String),
    Replay(String, String),
}

fn start_accounts(
    settings: &Settings,
    local: Option<LocalUpstream>,
    registry: &Addr<Registry>,
    store: &AccountStore,
    gate: Option<&Arc<Gate>>,
    tape: &dyn Fn(&str) -> Option<Tape>,
) -> anyhow::Result<()> {
    let up = &settings.upstream;
    let trading = &settings.trading;
    // Trading streams carry little traffic; they share one thread, away from the HTTP workers
    // (started only when an account is enabled).
    let mut trading_thread: Option<ArbiterHandle> = None;
    for (index, (id, account)) in enabled_accounts(settings).enumerate() {
        let (rest_url, credentials) = match &local {
            Some(LocalUpstream::Simulator(url)) => {
                (url.clone(), local_credentials("simulator", "simulator"))
            }
            // The replay server knows the account by its key id.
            Some(LocalUpstream::Replay(url, secret)) => {
                (url.clone(), local_credentials(id, secret))
            }
            None => {
                let base = account.trading_url.clone().unwrap_or_else(|| {
                    if account.paper {
                        trading.paper_url.clone()
                    } else {
                        trading.live_url.clone()
                    }
                });
                let (k, s) = account.env_names(id);
                let creds = account
                    .credentials
                    .clone()
                    .with_context(|| format!("account {id} needs {k} and {s}"))?;
                (base.trim_end_matches('/').to_owned(), creds)
            }
        };
        let stream_url = format!(
            "{}/stream",
            rest_url
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        );
        let account_id: Arc<str> = Arc::from(id.as_str());
        store.add(id, account.paper);
        let config = TradingConfig {
            account: account_id.clone(),
            index: index as u64,
            stream_url,
            rest_url,
            provider: up.provider.as_str(),
            credentials,
            start_delay: ms(trading.start_stagger_ms * index as u64),
            connect_timeout: ms(up.connect_timeout_ms),
            auth_timeout: ms(up.auth_timeout_ms),
            ping_interval: ms(up.ping_interval_ms),
            pong_timeout: ms(up.pong_timeout_ms),
            max_frame_bytes: up.max_frame_bytes,
            backoff: up.backoff.clone(),
            policy: policy_config(settings),
            requests_per_minute: trading.rest_requests_per_minute,
            max_retry_after: ms(trading.max_retry_after_ms),
            refresh_after_fill: ms(trading.refresh_after_fill_ms),
            auto_subscribe: ms(trading.auto_subscribe_positions_ms),
            gate: gate.cloned(),
            recorder: tape(&format!("trading:{id}")),
        };
        let counters = Arc::new(FeedCounters::default());
        let feed_id = FeedId::Trading(account_id);
        let status = FeedStatus::new(feed_id.clone(), config.provider, config.stream_url.clone());
        let (reg, st, ctr) = (registry.clone(), store.clone(), counters.clone());
        let thread = trading_thread.get_or_insert_with(|| Arbiter::new().handle());
        let stream =
            Supervisor::start_in_arbiter(thread, move |_| TradingStream::new(config, reg, st, ctr));
        if let Some(gate) = gate {
            gate.watch(stream.clone().recipient());
        }
        registry.do_send(RegisterFeed {
            id: feed_id,
            subscriptions: None,
            stop: stream.recipient(),
            counters,
            status,
        });
    }
    Ok(())
}

fn start_feed(registry: &Addr<Registry>, config: FeedConfig) {
    let counters = Arc::new(FeedCounters::default());
    let id = FeedId::Data(config.kind);
    let status = FeedStatus::new(id.clone(), config.provider, config.url.clone());
    let outputs = FeedOutputs {
        status: registry.clone().recipient(),
        news: registry.clone().recipient(),
        rejected: registry.clone().recipient(),
    };
    let feed_counters = counters.clone();
    let gate = config.gate.clone();
    // Its own thread: reading and decoding never wait for throttles, hubs or the registry.
    let thread = Arbiter::new();
    let feed = Supervisor::start_in_arbiter(&thread.handle(), move |_| {
        UpstreamFeed::new(config, outputs, feed_counters)
    });
    if let Some(gate) = gate {
        gate.watch(feed.clone().recipient());
    }
    // The feed may report before this arrives (it runs on its own thread); the registry keeps
    // such early statuses until the registration.
    registry.do_send(RegisterFeed {
        id,
        subscriptions: Some(feed.clone().recipient()),
        stop: feed.recipient(),
        counters,
        status,
    });
}

/// How much lower than the feeds' threads the HTTP workers run (a nice value): when the two cores
/// are busy, reading Alpaca wins and fan-out waits, which conflates instead of pushing back.
const WORKER_NICE: i32 = 5;

/// How much lower than the feeds' threads the Redis sink runs: below the HTTP workers too, since
/// a sink that falls behind only replaces unwritten prices with newer ones.
const SINK_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority by [`WORKER_NICE`].
fn yield_to_ingest() {
    lower_thread_priority(WORKER_NICE);
}

/// Sets the calling thread's nice value to `nice` (Linux: per thread; no privilege needed to
/// lower). Elsewhere, or if the kernel refuses, nothing changes.
fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if rc != 0 {
            log::debug!(
                "cannot lower a thread's priority to nice {nice}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The listener's TLS configuration from PEM files (HTTP/1.1 only; WebSockets need it).
fn tls_config(cert: &str, key: &str) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!("cannot read the certificate chain {cert} (http.tls_cert_path)")
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {cert} (http.tls_cert_path)"
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the private key {key} (http.tls_key_path)"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Pending connections the kernel queues before accepting: std's 128 overflows when a thousand
/// browsers reconnect at once (after a restart), and each overflow costs a client a 1 s SYN retry.
const LISTEN_BACKLOG: i32 = 4096;

fn bind_listener(host: &str, port: u16) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the host resolves to no address"))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

fn tune_socket(tcp: &TcpStream, user_timeout: Duration, send_buffer: usize) {
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(tcp);
    if let Err(e) = sock.set_tcp_user_timeout(Some(user_timeout)) {
        log::debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
    if send_buffer > 0 {
        if let Err(e) = sock.set_send_buffer_size(send_buffer) {
            log::debug!("cannot set SO_SNDBUF: {e}");
        }
    }
}
