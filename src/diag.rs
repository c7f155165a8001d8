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

/// A datagram socket connected to the syslog daemon, for `emergency` (-1: none, use stderr).
static EMERGENCY_SYSLOG: AtomicI32 = AtomicI32::new(-1);

/// The local syslog socket.
#[cfg(target_os = "freebsd")]
const SYSLOG_SOCKET: &str = "/var/run/log";
#[cfg(not(target_os = "freebsd"))]
const SYSLOG_SOCKET: &str = "/dev/log";

/// Pick the sink once, before the sandbox: syslog is opened now so it works inside it.
pub fn init() {
    SINK.get_or_init(|| {
        if crate::sys::fd_is_dev_null(2) || !crate::sys::fd_is_open(2) {
            crate::sys::syslog_open();
            if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
                if sock.connect(SYSLOG_SOCKET).is_ok() {
                    EMERGENCY_SYSLOG.store(sock.into_raw_fd(), Ordering::Relaxed);
                }
            }
            Sink::Syslog
        } else {
            Sink::Stderr
        }
    });
}

fn emit(priority: libc::c_int, msg: &str) {
    match SINK.get().copied().unwrap_or(Sink::Stderr) {
        Sink::Stderr => {
            let _ = writeln!(std::io::stderr().lock(), "bhyve-slirp-helper: {msg}");
        }
        Sink::Syslog => crate::sys::syslog(priority, msg),
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
pub fn emergency(msg: &[u8]) {
    const PREFIX: &[u8] = b"bhyve-slirp-helper: ";
    // <12>: facility user, severity warning.
    const SYSLOG_PREFIX: &[u8] = b"<12>bhyve-slirp-helper: ";
    let mut line = [0u8; 256];
    let syslog: RawFd = EMERGENCY_SYSLOG.load(Ordering::Relaxed);
    let prefix = if syslog >= 0 { SYSLOG_PREFIX } else { PREFIX };
    let body = msg.len().min(line.len() - prefix.len() - 1);
    line[..prefix.len()].copy_from_slice(prefix);
    line[prefix.len()..prefix.len() + body].copy_from_slice(&msg[..body]);
    let mut len = prefix.len() + body;
    if syslog >= 0 {
        // SAFETY: `line` is readable for `len` bytes; send is async-signal-safe.
        unsafe { libc::send(syslog, line.as_ptr().cast(), len, libc::MSG_DONTWAIT) };
    } else {
        line[len] = b'\n';
        len += 1;
        // SAFETY: as above; write is async-signal-safe.
        unsafe { libc::write(2, line.as_ptr().cast(), len) };
    }
}

/// Write `value` in decimal into `out` without allocating; returns the bytes written.
pub fn format_decimal(value: i64, out: &mut [u8]) -> usize {
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
