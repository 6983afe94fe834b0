//! How many WebSockets (browsers and SDK programs) may be open: in total, and per client IP
//! address, so one host cannot take every file descriptor and every session slot.
//!
//! Owns the counts. The upgrade hook takes a [`Slot`] before answering the handshake (refusing with
//! HTTP 429 and the reason when none is free) and hands it to the connection's writer task; the
//! slot is given back when that task ends, that is when the connection is gone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The limits and what is in use.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    used: Mutex<Used>,
}

#[derive(Debug, Default)]
struct Used {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One open connection's place; freed on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            used: Mutex::default(),
        })
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, String> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.total >= self.max_total {
            return Err(format!(
                "the daemon holds its maximum of {} WebSocket connections (http.max_connections)",
                self.max_total
            ));
        }
        if let Some(ip) = ip {
            let n = used.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(format!(
                    "{ip} holds its maximum of {} WebSocket connections (http.max_connections_per_ip)",
                    self.max_per_ip
                ));
            }
            *n += 1;
        }
        used.total += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = self.limits.used.lock().unwrap_or_else(|e| e.into_inner());
        used.total = used.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = used.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    used.per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_ip_and_in_total_and_freed_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.acquire(Some(a)).unwrap();
        let _a2 = limits.acquire(Some(a)).unwrap();
        let refused = limits.acquire(Some(a)).unwrap_err();
        assert!(refused.contains("max_connections_per_ip"), "{refused}");
        let _b1 = limits.acquire(Some(b)).unwrap();
        let full = limits.acquire(Some(b)).unwrap_err();
        assert!(full.contains("http.max_connections"), "{full}");
        drop(a1);
        assert_eq!(limits.open(), 2);
        assert!(limits.acquire(Some(a)).is_ok());
    }
}
