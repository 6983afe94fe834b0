//! Replay (`provider = "replay"`): a recording played back through the normal pipeline.
//!
//! The record is served by an in-process replay server speaking Alpaca's protocol on a loopback
//! port — as the simulator is — and the daemon's feeds and trading streams connect to it as they
//! would to Alpaca. So browsers, the dashboard, the Redis sink and SDK programs get the recorded
//! frames through the very path live frames take, byte for byte, Alpaca's timestamps inside.
//! Each data frame goes out when the replay clock reaches its recorded receive time (`speed`
//! times faster, or as fast as the consumers read at `"max"`). The clock starts at the first
//! market-data subscription, at once, or when an operator says so (`start`), and can be paused.
//! Gaps in the record (the recorder fell behind, or the recorded connection was lost) close the
//! connections concerned, so consumers learn of them as of a lost upstream; the clock waits for
//! the daemon to reconnect. The account REST views answer the recorded account state: the
//! snapshot at each segment's start and after each reload the original daemon made.
//!
//! Owns: the control ([`ReplayControl`]: state, position, counts, play/pause), read by the status,
//! `/metrics` and the dashboard, set by `POST /api/v1/replay`.
//!
//! - [`source`] — the files, the reader thread and what each record means.
//! - [`clock`] — recorded time → wall time.
//! - [`stage`] — connections, their readiness and the accounts' state.
//! - [`server`] — the protocol side: sessions and REST views.
//! - [`player`] — plays the records.

pub mod clock;
pub mod player;
pub mod server;
pub mod source;
pub mod stage;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use log::info;
use serde::Serialize;
use tokio::sync::Notify;

use self::player::Player;
use self::stage::Shared;
use crate::downstream::delivery::Backlog;
use crate::settings::{ReplaySettings, ReplaySpeed, ReplayStart};
use crate::time::Timestamp;

/// Where a replay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    /// For the first market-data subscription (`start = "subscribe"`).
    Waiting,
    Playing,
    Paused,
    /// The record has been played (and `loop` is off).
    Finished,
}

impl ReplayState {
    pub const ALL: [ReplayState; 4] = [
        ReplayState::Waiting,
        ReplayState::Playing,
        ReplayState::Paused,
        ReplayState::Finished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplayState::Waiting => "waiting",
            ReplayState::Playing => "playing",
            ReplayState::Paused => "paused",
            ReplayState::Finished => "finished",
        }
    }

    fn of(n: u8) -> ReplayState {
        match n {
            0 => ReplayState::Waiting,
            1 => ReplayState::Playing,
            2 => ReplayState::Paused,
            _ => ReplayState::Finished,
        }
    }

    fn code(self) -> u8 {
        self as u8
    }
}

/// The replay's state and counts, shared by the player, the server and the daemon's HTTP side.
pub struct ReplayControl {
    state: AtomicU8,
    /// Receive time of the last frame played, nanoseconds since the epoch (0: none yet).
    clock_ns: AtomicU64,
    frames: AtomicU64,
    gaps: AtomicU64,
    rounds: AtomicU64,
    speed: ReplaySpeed,
    files: usize,
    wake: Notify,
    /// The SDK programs' outboxes: at `max` the player waits while one holds too much.
    pub backlog: Arc<Backlog>,
}

/// The replay in `/api/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayStatus {
    pub state: ReplayState,
    /// The recorded receive time of the last frame played.
    pub clock: Option<Timestamp>,
    pub speed: ReplaySpeed,
    pub files: usize,
    /// Frames played.
    pub frames: u64,
    /// Gaps signalled to consumers (gaps in the record, recorded losses, new rounds).
    pub gaps: u64,
    /// Rounds begun after the first (`loop`).
    pub rounds: u64,
}

impl ReplayControl {
    pub fn new(
        start: ReplayStart,
        speed: ReplaySpeed,
        files: usize,
        backlog: Arc<Backlog>,
    ) -> ReplayControl {
        let state = match start {
            ReplayStart::Subscribe => ReplayState::Waiting,
            ReplayStart::Now => ReplayState::Playing,
            ReplayStart::Paused => ReplayState::Paused,
        };
        ReplayControl {
            state: AtomicU8::new(state.code()),
            clock_ns: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            speed,
            files,
            wake: Notify::new(),
            backlog,
        }
    }

    pub fn state(&self) -> ReplayState {
        ReplayState::of(self.state.load(Ordering::Relaxed))
    }

    fn set_state(&self, state: ReplayState) {
        self.state.store(state.code(), Ordering::Relaxed);
        self.wake.notify_waiters();
    }

    /// `play` or `pause` (an operator's): answers the state after it, or why not.
    pub fn command(&self, action: &str) -> Result<ReplayState, String> {
        let next = match action {
            "play" => ReplayState::Playing,
            "pause" => ReplayState::Paused,
            other => {
                return Err(format!(
                    "unknown action {other:?}: use \"play\" or \"pause\""
                ))
            }
        };
        // Never over a finish the player has just set.
        let finished = ReplayState::Finished.code();
        let before = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                (now != finished).then_some(next.code())
            })
            .map_err(|_| "the replay has finished".to_owned())?;
        self.wake.notify_waiters();
        info!(
            "replay: {action} ({:?} -> {next:?})",
            ReplayState::of(before)
        );
        Ok(next)
    }

    /// The first market-data subscription: a waiting replay starts.
    fn subscribed(&self) {
        let waiting = ReplayState::Waiting.code();
        let playing = ReplayState::Playing.code();
        if self
            .state
            .compare_exchange(waiting, playing, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            info!("replay: the first subscription; playing");
            self.wake.notify_waiters();
        }
    }

    /// Waits until the replay plays; answers whether it had to wait.
    async fn wait_until_playing(&self) -> bool {
        let mut waited = false;
        loop {
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if self.state() == ReplayState::Playing {
                return waited;
            }
            waited = true;
            wake.await;
        }
    }

    fn played(&self, received_ns: u64) {
        self.clock_ns.store(received_ns, Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    fn gap(&self) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
    }

    fn round(&self) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }

    /// The recorded time of the last frame played, seconds since the epoch (0 before any).
    pub fn clock_secs(&self) -> f64 {
        self.clock_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    pub fn status(&self) -> ReplayStatus {
        let ns = self.clock_ns.load(Ordering::Relaxed);
        ReplayStatus {
            state: self.state(),
            clock: (ns > 0)
                .then(|| Timestamp::new((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32))
                .flatten(),
            speed: self.speed,
            files: self.files,
            frames: self.frames.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            rounds: self.rounds.load(Ordering::Relaxed),
        }
    }
}

/// A running replay.
#[derive(Clone)]
pub struct ReplayHandle {
    /// Where the replay server listens (`ws://{addr}` for data, `http://{addr}` for trading).
    pub addr: SocketAddr,
    pub control: Arc<ReplayControl>,
    secret: String,
    player: actix::ArbiterHandle,
}

impl ReplayHandle {
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The secret the daemon's connections authenticate with (with any key id: the trading
    /// streams' names their account).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Stops the player (the daemon stops).
    pub fn stop(&self) {
        self.player.stop();
    }
}

/// Starts the replay server on `listener` and the player, in the current actix system. The
/// returned server must be awaited or spawned by the caller.
/// `max_backlog`: bytes one SDK program may have waiting before a replay at `max` waits for it.
pub fn start(
    settings: &ReplaySettings,
    listener: TcpListener,
    max_backlog: usize,
) -> std::io::Result<(Server, ReplayHandle)> {
    let files = source::files(&settings.path)?;
    if files.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no segment files in {:?}", settings.path),
        ));
    }
    let window = settings
        .window()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let control = Arc::new(ReplayControl::new(
        settings.start,
        settings.speed,
        files.len(),
        Arc::new(Backlog::new(max_backlog)),
    ));
    let secret = random_secret()?;
    let shared = Arc::new(Shared::new(control.clone(), secret.clone()));
    let addr = listener.local_addr()?;
    let data = web::Data::new(shared.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/v2/account", web::get().to(server::rest))
            .route("/v2/positions", web::get().to(server::rest))
            .route("/v2/orders", web::get().to(server::rest))
            .default_service(web::get().to(server::stream))
    })
    .workers(1)
    // The daemon's feeds and trading streams; nothing else should be here.
    .max_connections(MAX_CONNECTIONS)
    .client_disconnect_timeout(Duration::ZERO)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    info!(
        "replay: {} segment files at speed {}, streams on ws://{addr}",
        files.len(),
        match settings.speed.factor() {
            Some(x) => format!("{x}"),
            None => "max".into(),
        }
    );
    let player = Player {
        files,
        window,
        factor: settings.speed.factor(),
        repeat: settings.repeat,
        shared,
    };
    // Its own thread: at `max` it is busy, and the daemon's main thread runs the registry.
    let thread = actix::Arbiter::new();
    thread.spawn(player.run());
    let handle = ReplayHandle {
        addr,
        control,
        secret,
        player: thread.handle(),
    };
    Ok((server, handle))
}

/// Connections the replay server takes at once: the daemon's few, with room to reconnect.
const MAX_CONNECTIONS: usize = 64;

/// 128 random bits from the kernel, in hex.
fn random_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_play_and_pause_until_the_end() {
        let backlog = Arc::new(Backlog::new(1));
        let control = ReplayControl::new(ReplayStart::Paused, ReplaySpeed::Max, 1, backlog.clone());
        assert_eq!(control.state(), ReplayState::Paused);
        control.subscribed();
        assert_eq!(
            control.state(),
            ReplayState::Paused,
            "a subscription does not override a pause"
        );
        assert_eq!(control.command("play"), Ok(ReplayState::Playing));
        assert_eq!(control.command("pause"), Ok(ReplayState::Paused));
        assert!(control.command("rewind").is_err());
        control.set_state(ReplayState::Finished);
        assert!(control.command("play").is_err());

        let waiting =
            ReplayControl::new(ReplayStart::Subscribe, ReplaySpeed::Times(1.0), 1, backlog);
        assert_eq!(waiting.state(), ReplayState::Waiting);
        waiting.subscribed();
        assert_eq!(waiting.state(), ReplayState::Playing);
    }
}
