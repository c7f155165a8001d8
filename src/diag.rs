//! Diagnostics that reach the user even under bhyve, which may point stderr at `/dev/null`:
//! stderr when it goes somewhere (a terminal, a file, a pipe), syslog otherwise.
//! Only start-up, exit and rare events are logged; never anything per packet.

use std::io::Write;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Stderr,
    Syslog,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Pick the sink once, before the sandbox: syslog is opened now so it works inside it.
pub fn init() {
    SINK.get_or_init(|| {
        if crate::sys::fd_is_dev_null(2) || !crate::sys::fd_is_open(2) {
            crate::sys::syslog_open();
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
