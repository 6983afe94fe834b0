//! Command-line options: parsing, defaults, validation and the usage text.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context};

pub const USAGE: &str = "\
tickrelay-bench: load harness for the tickrelay daemon.

Starts a flood upstream (a minimal Alpaca stock-stream server on 127.0.0.1), runs the daemon
against it, connects browser WebSocket clients, and prints one JSON line of results on stdout
(logs go to stderr).

USAGE:
    tickrelay-bench [OPTIONS]

UPSTREAM (the flood):
    --rate N                 quotes per second, paced every 1 ms; 0 = as fast as the socket
                             takes them (then pushback is not counted)          [default: 10000]
    --batch N                quotes per upstream frame                           [default: 10]
    --encoding json|msgpack  upstream encoding: sets TICKRELAY__FEEDS__STOCKS__ENCODING for a
                             spawned daemon; the flood answers in whatever encoding the
                             daemon asks for (Content-Type)                      [default: json]

DAEMON:
    --daemon PATH            daemon binary              [default: `tickrelay` next to this binary]
    --config PATH            settings file passed as --config          [default: settings.toml]
    --throttle-ms N          TICKRELAY__THROTTLE__INTERVAL_MS                    [default: 200]
    --env KEY=VALUE          extra environment override (repeatable)
    --url http://HOST:PORT   use an already-running daemon instead of spawning one
    --pid PID                with --url: the daemon's pid, for CPU and RSS

CLIENTS:
    --clients N              browser WebSocket clients                           [default: 100]
    --symbols N              symbols S0000, S0001, ...                          [default: 100]
    --symbols-per-client N   client i takes N symbols from (i*N) mod symbols     [default: 5]
    --mode single|batched    batched: {\"action\":\"configure\",\"batch\":true} first  [default: single]
    --protocol browser|sdk   sdk: the clients are Alpaca SDK programs on /v2/iex (auth with a
                             client key the harness configures, subscribe quotes, every
                             message counted, none conflated)                    [default: browser]
    --sdk-encoding json|msgpack  what the SDK clients ask for                    [default: msgpack]
    --stall-clients N        extra clients that subscribe, then never read       [default: 0]
    --client-threads N       OS threads running the clients                      [default: 1]
    --client-nice N          run the client threads N nice levels lower, so on a machine
                             shared with the daemon they do not take its CPU  [default: 0]
    --connect-concurrency N  handshakes in flight at once                        [default: 256]
    --connect-timeout-secs S per-client connect + subscribe timeout              [default: 30]

SCALE-OUT:
    --edge                   also start an edge (TICKRELAY__UPSTREAM__PROVIDER=redis, same
                             settings; pass TICKRELAY__REDIS__URL with --env) and a second set
                             of --clients browsers with the same subscriptions on it; the
                             report adds edge_latency_* and edge_delivered_updates_per_sec,
                             measured in the same window as the primary's clients

MEASUREMENT:
    --warmup-secs S          after every client is subscribed                    [default: 2]
    --secs S                 measured window                                     [default: 10]

FLOOR (instead of a load run):
    --floor                  no daemon and no upstream: the harness serves the same clients
                             itself and, on one clock every --throttle-ms, writes each one frame
                             per subscribed symbol in one write (two threads, as the daemon's two
                             HTTP workers); the clients measure as always. The latency of this
                             run is the machine's floor for the same burst.

SOAK (instead of a load run):
    --soak-secs S            run the simulator (`tickrelay simulate`) as the upstream and the
                             daemon against it for S seconds while --clients browsers read
                             prices (and reconnect when dropped), --stall-clients connections
                             never read (each replaced every 25 s), short-lived clients connect
                             and leave five times a second (one in five sends garbage), and the
                             upstream drops every 30 s (the 2nd fault is a 406, the 4th a
                             handshake 429); every 10 s it samples the daemon's RSS, which
                             browsers received prices and whether the upstream holds every
                             symbol they want. One JSON line: the series, restore times, panics
                             and a verdict.                                      [default: 0]

    -h, --help               print this text

OUTPUT (one JSON line on stdout; rates are over the measured window):
    the parameters; clients_acked / clients_failed, connect_secs and
    listen_overflows_during_connect (system-wide; each costs a client a 1 s SYN retry);
    ingest_msgs_per_sec (the daemon's messages_received, else the flood's count: ingest_source);
    flood_sent_msgs_per_sec and flood_pushback_msgs (quotes due that the socket would not take);
    delivered_updates_per_sec, delivered_frames_per_sec, client_updates_per_sec_{min,max};
    latency_{p50,p99,p999,max}_ms: receive time - the update's exchange timestamp (throttle hold
    included); delivery_latency_*: receive time - the frame's own timestamp (fan-out only);
    daemon_cpu_pct (of one core), daemon_cpu_secs_per_million_msgs,
    daemon_cpu_us_per_delivered_update, bench_cpu_pct; rss_kb_end and rss_per_client_kb
    ((RSS at end - RSS before clients) / subscribed clients); the daemon's drop counters
    (deltas over the window) and client errors / close codes.
";

/// How clients receive prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One `spot_price_update` frame per update.
    Single,
    /// `spot_price_batch` frames (`configure` with `batch: true`).
    Batched,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Batched => "batched",
        }
    }
}

/// Who the clients are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Browsers on `/ws` (conflated, throttled prices).
    Browser,
    /// Alpaca SDK programs on `/v2/iex` (every message).
    Sdk,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Browser => "browser",
            Protocol::Sdk => "sdk",
        }
    }
}

/// The upstream encoding the flood serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Msgpack,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Msgpack => "msgpack",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Args {
    pub rate: u64,
    pub batch: usize,
    pub encoding: Encoding,
    pub daemon: Option<PathBuf>,
    pub config: PathBuf,
    pub throttle_ms: u64,
    pub env: Vec<(String, String)>,
    pub url: Option<String>,
    pub pid: Option<u32>,
    pub clients: usize,
    pub symbols: usize,
    pub symbols_per_client: usize,
    pub mode: Mode,
    pub protocol: Protocol,
    pub sdk_encoding: Encoding,
    pub stall_clients: usize,
    pub client_threads: usize,
    pub client_nice: i32,
    pub connect_concurrency: usize,
    pub connect_timeout_secs: f64,
    pub warmup_secs: f64,
    pub secs: f64,
    /// Soak mode for this many seconds (0: a load run).
    pub soak_secs: f64,
    /// Also measure the same subscriptions on an edge served through Redis.
    pub edge: bool,
    /// Measure the floor: the harness bursts to its own clients, no daemon.
    pub floor: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            rate: 10_000,
            batch: 10,
            encoding: Encoding::Json,
            daemon: None,
            config: PathBuf::from("settings.toml"),
            throttle_ms: 200,
            env: Vec::new(),
            url: None,
            pid: None,
            clients: 100,
            symbols: 100,
            symbols_per_client: 5,
            mode: Mode::Single,
            protocol: Protocol::Browser,
            sdk_encoding: Encoding::Msgpack,
            stall_clients: 0,
            client_threads: 1,
            client_nice: 0,
            connect_concurrency: 256,
            connect_timeout_secs: 30.0,
            warmup_secs: 2.0,
            secs: 10.0,
            soak_secs: 0.0,
            edge: false,
            floor: false,
        }
    }
}

impl Args {
    /// Parses the arguments after the program name; `None` when help was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Args>> {
        let mut out = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(None);
            }
            if arg == "--floor" {
                out.floor = true;
                continue;
            }
            if arg == "--edge" {
                out.edge = true;
                continue;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg, None),
            };
            let mut value = || -> anyhow::Result<String> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None => args.next().with_context(|| format!("{flag} needs a value")),
                }
            };
            out.set(&flag, &mut value)?;
        }
        out.validate()?;
        Ok(Some(out))
    }

    fn set(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut() -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        match flag {
            "--rate" => self.rate = number(flag, &value()?)?,
            "--batch" => self.batch = number(flag, &value()?)?,
            "--encoding" => self.encoding = encoding(flag, &value()?)?,
            "--sdk-encoding" => self.sdk_encoding = encoding(flag, &value()?)?,
            "--protocol" => {
                self.protocol = match value()?.as_str() {
                    "browser" => Protocol::Browser,
                    "sdk" => Protocol::Sdk,
                    other => bail!("--protocol must be browser or sdk, not {other:?}"),
                }
            }
            "--daemon" => self.daemon = Some(PathBuf::from(value()?)),
            "--config" => self.config = PathBuf::from(value()?),
            "--throttle-ms" => self.throttle_ms = number(flag, &value()?)?,
            "--env" => {
                let pair = value()?;
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--env takes KEY=VALUE, not {pair:?}"))?;
                self.env.push((k.to_string(), v.to_string()));
            }
            "--url" => self.url = Some(value()?),
            "--pid" => self.pid = Some(number(flag, &value()?)?),
            "--clients" => self.clients = number(flag, &value()?)?,
            "--symbols" => self.symbols = number(flag, &value()?)?,
            "--symbols-per-client" => self.symbols_per_client = number(flag, &value()?)?,
            "--mode" => {
                self.mode = match value()?.as_str() {
                    "single" => Mode::Single,
                    "batched" => Mode::Batched,
                    other => bail!("--mode must be single or batched, not {other:?}"),
                }
            }
            "--stall-clients" => self.stall_clients = number(flag, &value()?)?,
            "--client-threads" => self.client_threads = number(flag, &value()?)?,
            "--client-nice" => self.client_nice = number(flag, &value()?)?,
            "--connect-concurrency" => self.connect_concurrency = number(flag, &value()?)?,
            "--connect-timeout-secs" => self.connect_timeout_secs = number(flag, &value()?)?,
            "--warmup-secs" => self.warmup_secs = number(flag, &value()?)?,
            "--secs" => self.secs = number(flag, &value()?)?,
            "--soak-secs" => self.soak_secs = number(flag, &value()?)?,
            other => bail!("unknown option {other:?}"),
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.symbols == 0 || self.symbols_per_client == 0 {
            bail!("--symbols and --symbols-per-client must be at least 1");
        }
        if self.symbols_per_client > self.symbols {
            bail!(
                "--symbols-per-client ({}) cannot exceed --symbols ({})",
                self.symbols_per_client,
                self.symbols
            );
        }
        if self.client_threads == 0 || self.connect_concurrency == 0 {
            bail!("--client-threads and --connect-concurrency must be at least 1");
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let not_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !positive(self.secs) || !positive(self.connect_timeout_secs) {
            bail!("--secs and --connect-timeout-secs must be positive");
        }
        if !not_negative(self.warmup_secs) {
            bail!("--warmup-secs cannot be negative");
        }
        if self.protocol == Protocol::Sdk && self.mode == Mode::Batched {
            bail!("--mode batched is a browser option; SDK clients get every message");
        }
        if self.pid.is_some() && self.url.is_none() {
            bail!("--pid only goes with --url");
        }
        Ok(())
    }
}

fn encoding(flag: &str, text: &str) -> anyhow::Result<Encoding> {
    Ok(match text {
        "json" => Encoding::Json,
        "msgpack" => Encoding::Msgpack,
        other => bail!("{flag} must be json or msgpack, not {other:?}"),
    })
}

fn number<T: FromStr>(flag: &str, text: &str) -> anyhow::Result<T> {
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} takes a number, not {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Option<Args>> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_both_value_forms() {
        let args = parse(&[
            "--clients",
            "7",
            "--rate=0",
            "--mode",
            "batched",
            "--env",
            "A=b=c",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(args.clients, 7);
        assert_eq!(args.rate, 0);
        assert_eq!(args.mode, Mode::Batched);
        assert_eq!(args.env, vec![("A".to_string(), "b=c".to_string())]);
    }

    #[test]
    fn help_and_errors() {
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--clients"]).is_err());
        assert!(parse(&["--bogus", "1"]).is_err());
        assert!(parse(&["--symbols", "3", "--symbols-per-client", "4"]).is_err());
        assert!(parse(&["--encoding", "xml"]).is_err());
    }
}
