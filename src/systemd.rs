//! systemd's service notifications (`Type=notify`): `READY=1`, `STOPPING=1`, `WATCHDOG=1`.
//!
//! Owns: the notification socket named by `NOTIFY_SOCKET` and the watchdog interval from
//! `WATCHDOG_USEC` (when `WATCHDOG_PID` is unset or ours). Talks to: systemd. The daemon's
//! `main` says ready once HTTP is bound and the feeds are started, and stopping on a signal;
//! [`Notifier::keep_alive`] runs inside the actor system and pings the watchdog at half its
//! interval only while the registry's heartbeat is fresh, so a wedged actor system stops the pings
//! and systemd restarts the service. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.
//!
//! The protocol is one datagram per message on a Unix socket (a path, or an abstract name
//! written `@name`); see sd_notify(3).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use log::{debug, warn};

use crate::registry::Heartbeat;

/// Where and how often to notify systemd.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<String>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets for the service.
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0 && ours)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// Whether systemd listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (e.g. `READY=1`); errors are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some(path) = &self.socket else {
            return;
        };
        if let Err(e) = send(path, state.as_bytes()) {
            warn!("systemd: cannot send {state:?} to {path}: {e}");
        } else {
            debug!("systemd: sent {state:?}");
        }
    }

    /// How often the watchdog must hear from us (`WatchdogSec`), when it is on.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled())
    }

    /// Pings the watchdog at half its interval, from the actor system this is spawned on, only
    /// while the registry's heartbeat is younger than the watchdog interval.
    pub async fn keep_alive(self, heartbeat: Heartbeat) {
        let Some(interval) = self.watchdog() else {
            return;
        };
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            match heartbeat.age() {
                Some(age) if age < interval => self.notify("WATCHDOG=1"),
                age => warn!(
                    "systemd: the registry's heartbeat is {age:?} old; not pinging the watchdog"
                ),
            }
        }
    }
}

fn send(path: &str, message: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(message, &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::other("abstract sockets need Linux"));
        }
    }
    socket.send_to(message, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_arrive_as_datagrams() {
        let dir = std::env::temp_dir().join(format!("tickrelay-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some(path.to_string_lossy().into_owned()),
            watchdog: Some(Duration::from_secs(2)),
        };
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        assert_eq!(n.watchdog(), Some(Duration::from_secs(2)));
        let off = Notifier {
            socket: None,
            watchdog: Some(Duration::from_secs(2)),
        };
        assert!(off.watchdog().is_none(), "no socket, no watchdog");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
