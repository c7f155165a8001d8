//! Diagnostics that reach the user even under bhyve, which may point stderr at `/dev/null`:
//! stderr when it goes somewhere (a terminal, a file, a pipe), syslog otherwise.
//! Only start-up, exit and rare events are logged; never anything per packet.

use std::io::Write;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Stderr,
    Syslog,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Our datagram socket connected to the syslog daemon (-1: none). Both `emit` and `emergency`
/// write to it. We write RFC 3164 lines ourselves instead of calling libc's `syslog()`: glibc
/// connects lazily and reconnects on its own, so its descriptor could land on a number the
/// start-up shuffle then replaces with bhyve's socket (issue 16: log lines went to the guest).
/// This one is opened by `init`, after the shuffle, so it can never be descriptor 3.
/// A number, not an `OwnedFd`: `init` gives the socket up to it for the process's life, and
/// a signal handler reads it, where an atomic load is all that is safe.
static SYSLOG_FD: AtomicI32 = AtomicI32::new(-1);
/// Our pid, for the syslog tag (read in a signal handler, so stored once).
static PID: AtomicI32 = AtomicI32::new(0);

/// The local syslog socket.
#[cfg(target_os = "freebsd")]
const SYSLOG_SOCKET: &str = "/var/run/log";
#[cfg(not(target_os = "freebsd"))]
const SYSLOG_SOCKET: &str = "/dev/log";

/// Test hook: another syslog socket path (tests point it at a stand-in daemon). Not a user
/// setting; the helper under bhyve always uses the system's socket.
pub(crate) const SYSLOG_SOCKET_ENV: &str = "SLIRP_HELPER_SYSLOG_SOCKET";

/// `LOG_DAEMON`, as the C helper's syslog lines.
const FACILITY: i32 = 3 << 3;
const TAG: &str = "bhyve-slirp-helper";

/// Whether stderr goes nowhere (`/dev/null`, as under bhyve, or closed).
fn stderr_goes_nowhere() -> bool {
    crate::sys::fd_is_dev_null(2) || !crate::sys::fd_is_open(2)
}

/// A datagram socket connected to the syslog daemon (CLOEXEC), or `None` when there is none.
fn connect_syslog() -> Option<std::os::unix::net::UnixDatagram> {
    let path = std::env::var_os(SYSLOG_SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| SYSLOG_SOCKET.into());
    let sock = std::os::unix::net::UnixDatagram::unbound().ok()?;
    sock.connect(path).ok()?;
    Some(sock)
}

/// Pick the sink once and open the syslog socket now, before the sandbox (which forbids new
/// sockets and connect). Must be called only after bhyve's socket has been moved to
/// descriptor 3 and descriptors 0..=2 point somewhere (`main`'s `adopt_socket`): then the
/// socket opened here gets a number nothing will replace, and `closefrom` has already run.
pub fn init() {
    SINK.get_or_init(|| {
        PID.store(std::process::id() as i32, Ordering::Relaxed);
        if stderr_goes_nowhere() {
            if let Some(sock) = connect_syslog() {
                SYSLOG_FD.store(sock.into_raw_fd(), Ordering::Relaxed);
            }
            Sink::Syslog
        } else {
            Sink::Stderr
        }
    });
}

/// One RFC 3164 line: `<PRI>TAG[PID]: MSG`. No timestamp: the daemon adds the time of receipt
/// (RFC 3164 4.3.1), and formatting local time would need the time-zone files in the sandbox.
fn syslog_line(severity: i32, msg: &str) -> String {
    format!(
        "<{}>{TAG}[{}]: {msg}",
        FACILITY | severity,
        std::process::id()
    )
}

/// One datagram to the syslog socket, never waiting: async-signal-safe (one `send`, no
/// allocation). A failed send (daemon gone, its queue full) is ignored, as a lost log line
/// must never stop the helper.
fn send_datagram(fd: RawFd, line: &[u8]) {
    let _ = nix::sys::socket::send(fd, line, nix::sys::socket::MsgFlags::MSG_DONTWAIT);
}

fn emit(severity: i32, msg: &str) {
    match SINK.get().copied() {
        Some(Sink::Stderr) => {
            let _ = writeln!(std::io::stderr().lock(), "{TAG}: {msg}");
        }
        Some(Sink::Syslog) => {
            let fd = SYSLOG_FD.load(Ordering::Relaxed);
            if fd >= 0 {
                send_datagram(fd, syslog_line(severity, msg).as_bytes());
            }
        }
        // Before `init` (usage errors, a bad `-S`): the descriptor shuffle may not have run,
        // so nothing opened here may stay open. A usage error must still reach the user.
        None if stderr_goes_nowhere() => {
            if let Some(sock) = connect_syslog() {
                let _ = sock.send(syslog_line(severity, msg).as_bytes());
            }
        }
        None => {
            let _ = writeln!(std::io::stderr().lock(), "{TAG}: {msg}");
        }
    }
}

pub fn error(msg: &str) {
    emit(libc::LOG_ERR, msg);
}

pub fn warn(msg: &str) {
    emit(libc::LOG_WARNING, msg);
}

pub fn info(msg: &str) {
    emit(libc::LOG_INFO, msg);
}

/// Report `msg` from a signal handler: async-signal-safe (no allocation, no lock), one
/// `write` to stderr or one `send` to the syslog socket opened by `init`.
// Only the Linux sandbox (seccomp's SIGSYS handler) reports from a signal handler.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn emergency(msg: &[u8]) {
    const PREFIX: &[u8] = b"bhyve-slirp-helper: ";
    // <28>: facility daemon, severity warning.
    const SYSLOG_PREFIX: &[u8] = b"<28>bhyve-slirp-helper[";
    let mut line = [0u8; 256];
    let syslog: RawFd = SYSLOG_FD.load(Ordering::Relaxed);
    let mut len = 0;
    let mut put = |bytes: &[u8], len: &mut usize| {
        let n = bytes.len().min(line.len() - 1 - *len);
        line[*len..*len + n].copy_from_slice(&bytes[..n]);
        *len += n;
    };
    if syslog >= 0 {
        put(SYSLOG_PREFIX, &mut len);
        let mut pid = [0u8; 20];
        let digits = format_decimal(i64::from(PID.load(Ordering::Relaxed)), &mut pid);
        put(&pid[..digits], &mut len);
        put(b"]: ", &mut len);
        put(msg, &mut len);
        send_datagram(syslog, &line[..len]);
    } else {
        put(PREFIX, &mut len);
        put(msg, &mut len);
        line[len] = b'\n';
        len += 1;
        // One write(2) to descriptor 2, async-signal-safe: `stderr()` is a static handle
        // and its descriptor is borrowed, not locked or buffered.
        let _ = nix::unistd::write(std::io::stderr(), &line[..len]);
    }
}

/// Write `value` in decimal into `out` without allocating; returns the bytes written.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn format_decimal(value: i64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = value.unsigned_abs();
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let sign = usize::from(value < 0);
    if out.len() < count + sign {
        return 0;
    }
    if sign == 1 {
        out[0] = b'-';
    }
    for i in 0..count {
        out[sign + i] = digits[count - 1 - i];
    }
    count + sign
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_without_allocation() {
        let mut buf = [0u8; 24];
        for v in [0i64, 7, 59, -13, 1_000_000, i64::MIN, i64::MAX] {
            let n = format_decimal(v, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), v.to_string());
        }
        assert_eq!(
            format_decimal(12345, &mut buf[..3]),
            0,
            "too small: nothing written"
        );
    }
}
