//! The few Linux facilities std does not wrap: the open-file limit, process CPU time, the
//! kernel's listen-queue overflow counter, signals to the daemon, and tying the daemon's life to
//! ours.
//!
//! Linux only (it reads /proc too).

use std::io;
use std::os::raw::{c_int, c_ulong};

pub const SIGTERM: c_int = libc::SIGTERM;

/// Raises the soft open-file limit to the hard limit (children inherit it); returns the new
/// soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `struct rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid `struct rlimit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// CPU time (user + system, all threads) of process `pid` (a number or `self`), in seconds.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it are fixed: utime and stime are
    // the 14th and 15th of the line.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_sec())
}

/// The kernel's count of connections dropped because a listen queue was full
/// (`TcpExt: ListenOverflows` in /proc/net/netstat). System-wide: other programs count too.
pub fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    // Pairs of lines: `TcpExt: Name1 Name2 …` then `TcpExt: value1 value2 …`.
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    let (_, value) = names
        .zip(values)
        .find(|(name, _)| *name == "ListenOverflows")?;
    value.parse().ok()
}

/// Clock ticks per second, the unit of /proc/PID/stat's CPU times (100 on Linux).
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads its argument.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: c_int) -> io::Result<()> {
    let pid = c_int::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In a freshly forked child: ask the kernel to send it SIGTERM when its parent dies, so a
/// harness killed with SIGKILL cannot leave a daemon behind. Async-signal-safe.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes a plain integer argument.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, SIGTERM as c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lowers the calling thread's CPU priority by `nice` (Linux: per thread).
pub fn lower_thread_priority(nice: i32) -> io::Result<()> {
    // SAFETY: gettid and setpriority take and return plain integers.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
