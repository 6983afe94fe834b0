//! The `tickrelay` binary: parse the command line, set up logging, load settings, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use log::{error, info, warn};
use tickrelay::settings::{LogFormat, Settings};
use tickrelay::startup::{install_crypto_provider, Daemon};
use tickrelay::systemd::Notifier;

const USAGE: &str = "\
tickrelay — shares one Alpaca market-data connection per feed

USAGE:
    tickrelay [--config PATH]                    run the daemon (default ./settings.toml)
    tickrelay simulate [--port N] [--host ADDR]  run only the Alpaca-protocol simulator
    tickrelay check-config                       validate the settings, print the effective ones
                                                 (secrets redacted) and exit
    tickrelay healthcheck [--url URL]            exit 0 when the daemon's /healthz answers 200
    tickrelay record cat FILE... [--feed F] [--symbol S] [--from T] [--to T]
                                                 print recorded frames as JSON lines (T: RFC 3339)

OPTIONS:
    --config PATH   settings file (TOML); TICKRELAY__SECTION__KEY variables override it
    -h, --help      this text
    -V, --version   print the version

Alpaca credentials come only from APCA_API_KEY_ID and APCA_API_SECRET_KEY.
Logging: RUST_LOG (default info).";

enum Command {
    Run,
    Simulate {
        port: Option<u16>,
        host: Option<String>,
    },
    CheckConfig,
    Healthcheck {
        url: Option<String>,
    },
}

struct Cli {
    command: Command,
    config: PathBuf,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Cli>, String> {
    let mut config = PathBuf::from("settings.toml");
    let mut command = None;
    let mut port = None;
    let mut host = None;
    let mut url = None;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "-V" | "--version" => {
                println!("tickrelay {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--config" => config = PathBuf::from(value("--config")?),
            "--port" => {
                let v = value("--port")?;
                port = Some(
                    v.parse()
                        .map_err(|_| format!("--port: {v:?} is not a port number"))?,
                );
            }
            "--host" => host = Some(value("--host")?),
            "--url" => url = Some(value("--url")?),
            "run" | "simulate" | "check-config" | "healthcheck" if command.is_none() => {
                command = Some(arg)
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let command = match command.as_deref() {
        None | Some("run") => Command::Run,
        Some("simulate") => Command::Simulate { port, host },
        Some("check-config") => Command::CheckConfig,
        Some("healthcheck") => Command::Healthcheck { url },
        Some(other) => return Err(format!("unknown command {other:?}")),
    };
    Ok(Some(Cli { command, config }))
}

/// `tickrelay record cat …`: needs no settings.
fn record(args: &[String]) -> ExitCode {
    use tickrelay::recorder::cat::{cat, Filter};
    let parsed = (|| -> Result<(Vec<PathBuf>, Filter), String> {
        let Some(("cat", rest)) = args.split_first().map(|(c, r)| (c.as_str(), r)) else {
            return Err("record: expected `record cat FILE...`".into());
        };
        let (mut files, mut filter) = (Vec::new(), Filter::default());
        let time = |v: &str| {
            tickrelay::time::Timestamp::parse_rfc3339(v)
                .map(|t| u64::try_from(t.unix_nanos()).unwrap_or_default())
                .map_err(|_| format!("{v:?} is not an RFC 3339 time"))
        };
        let mut it = rest.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--feed" => filter.feed = Some(value("--feed")?),
                "--symbol" => filter.symbol = Some(value("--symbol")?.to_ascii_uppercase()),
                "--from" => filter.from_ns = Some(time(&value("--from")?)?),
                "--to" => filter.to_ns = Some(time(&value("--to")?)?),
                other if other.starts_with('-') => {
                    return Err(format!("unexpected option {other:?}"))
                }
                file => files.push(PathBuf::from(file)),
            }
        }
        if files.is_empty() {
            return Err("record cat: name at least one segment file".into());
        }
        Ok((files, filter))
    })();
    let (files, filter) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tickrelay: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let mut out = std::io::BufWriter::new(stdout.lock());
    match cat(&files, &filter, &mut out, &mut stderr.lock()) {
        Ok(_) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickrelay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("record") {
        return record(&args[1..]);
    }
    let cli = match parse_args(args.into_iter()) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tickrelay: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::load(&cli.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tickrelay: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(settings.logging.format);
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command {
            Command::Run => run(settings).await,
            Command::Simulate { port, host } => simulate(settings, port, host).await,
            Command::CheckConfig => check_config(&cli.config, &settings),
            Command::Healthcheck { url } => healthcheck(&settings, url).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("tickrelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: the settings are valid; prints them as tickrelay will use them (file, defaults
/// and environment merged), then which credentials are set, never their values.
fn check_config(path: &std::path::Path, settings: &Settings) -> anyhow::Result<()> {
    let effective = toml::to_string(settings).context("cannot print the settings")?;
    println!(
        "# {}: settings are valid (provider: {})",
        path.display(),
        settings.upstream.provider.as_str()
    );
    println!("# The effective settings (file, defaults and TICKRELAY__ variables); secrets are not shown.\n");
    println!("{effective}");
    let set = |present: bool| if present { "set" } else { "not set" };
    println!("# Credentials (from the environment):");
    println!(
        "#   Alpaca market data (APCA_API_KEY_ID, APCA_API_SECRET_KEY): {}",
        set(settings.credentials.is_some())
    );
    for (id, account) in settings.accounts.iter().filter(|(_, a)| a.enabled) {
        let (k, s) = account.env_names(id);
        println!(
            "#   account {id} ({k}, {s}): {}",
            set(account.credentials.is_some())
        );
    }
    for (id, client) in &settings.clients {
        println!(
            "#   client {id} ({}): {}",
            client.secret_env_name(id),
            set(client.secret.is_some())
        );
    }
    if !settings.redis.url.is_empty() {
        println!(
            "#   redis password ({}): {}",
            tickrelay::settings::REDIS_PASSWORD_ENV,
            set(settings.redis.password.is_some())
        );
    }
    Ok(())
}

/// Logging through `RUST_LOG` (default `info`), as text or as one JSON object per line.
fn init_logging(format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,actix_server=warn"),
    );
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            use std::io::Write;
            let line = serde_json::json!({
                "ts": tickrelay::time::Timestamp::now(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}

/// SIGTERM and SIGINT, registered before anything starts so an early signal is not lost.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Resolves on the first signal, naming it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Beyond the connections' own shutdown timeout, how long a graceful stop may take before the
/// process exits anyway.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// Keeps the stop's deadline on a thread and runtime of its own: from the first signal, the
/// process exits 1 once `deadline` has passed, or at once on a second signal. The daemon's own
/// runtime may be unable to keep time then — swapping under memory pressure, a handler that
/// blocks — and must not be able to keep the process alive past what docs/operations.md promises.
fn keep_the_stop_deadline(deadline: Duration) -> anyhow::Result<()> {
    // Returns once the thread listens for the signals, so none can slip past it.
    let (listening, ready) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("stop-deadline".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = listening.send(Err(anyhow::Error::new(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut signals = match ShutdownSignals::register() {
                    Ok(signals) => signals,
                    Err(e) => {
                        let _ = listening.send(Err(e));
                        return;
                    }
                };
                let _ = listening.send(Ok(()));
                signals.recv().await;
                tokio::select! {
                    () = tokio::time::sleep(deadline) => {
                        error!("shutdown did not finish within {deadline:?}; exiting now");
                    }
                    again = signals.recv() => {
                        warn!("{again} received during shutdown; exiting now");
                    }
                }
                std::process::exit(1);
            })
        })
        .context("cannot start the stop deadline's thread")?;
    ready
        .recv()
        .context("the stop deadline's thread ended")?
        .context("cannot keep the stop deadline")
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::register()?;
    keep_the_stop_deadline(
        Duration::from_millis(settings.http.shutdown_timeout_ms) + SHUTDOWN_SLACK,
    )?;
    let daemon = Daemon::build(settings).await?;
    let handle = daemon.handle();
    // Under systemd (Type=notify): ready now that HTTP is bound and the feeds have started; the
    // watchdog hears from the actor system while the registry runs its timers.
    let systemd = Notifier::from_env();
    if systemd.enabled() {
        // Ready once the actor system runs too (the registry's first heartbeat): from then on
        // /healthz answers 200.
        let heartbeat = daemon.heartbeat();
        while heartbeat.age().is_none() {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        systemd.notify("READY=1");
        info!(
            "systemd: ready{}",
            systemd
                .watchdog()
                .map(|w| format!("; pinging the watchdog every {:?}", w / 2))
                .unwrap_or_default()
        );
        actix_web::rt::spawn(systemd.clone().keep_alive(daemon.heartbeat()));
    }
    actix_web::rt::spawn(async move {
        let sig = signals.recv().await;
        info!("{sig} received; shutting down (a second signal exits at once)");
        systemd.notify("STOPPING=1");
        // A graceful stop; its deadline and a second signal are kept by a thread of their own.
        handle.shutdown().await;
    });
    daemon.run_until_stopped().await?;
    info!("stopped");
    Ok(())
}

async fn simulate(
    settings: Settings,
    port: Option<u16>,
    host: Option<String>,
) -> anyhow::Result<()> {
    let mut sim = settings.simulator;
    if let Some(p) = port {
        sim.port = p;
    }
    if let Some(h) = host {
        sim.host = h;
    }
    let listener = std::net::TcpListener::bind((sim.host.as_str(), sim.port))
        .with_context(|| format!("cannot bind {}:{}", sim.host, sim.port))?;
    let mut signals = ShutdownSignals::register()?;
    let (server, _) = tickrelay::simulator::start(&sim, listener)?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        let sig = signals.recv().await;
        info!("{sig} received; stopping the simulator");
        handle.stop(true).await;
    });
    server.await?;
    Ok(())
}

async fn healthcheck(settings: &Settings, url: Option<String>) -> anyhow::Result<()> {
    install_crypto_provider();
    let url = url.unwrap_or_else(|| {
        let host = match settings.http.host.as_str() {
            "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
            h => h,
        };
        format!("http://{host}:{}/healthz", settings.http.port)
    });
    let client = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .finish();
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}
