//! Readiness for libslirp's sockets plus the helper's own two descriptors (the wakeup pipe and
//! the frontend socket), behind one type whatever the backend.
//!
//! Owns: the per-iteration fill set (what `slirp_pollfds_fill` asked for) and the answers
//! `get_revents` gives back. Answers are poll(2)'s, whatever the backend (design rule 2).
//! Today's backend is `poll` (the C helper's design, the measured baseline); the persistent
//! epoll/kqueue backends plug in behind the same methods.

mod poll;

use std::ffi::c_int;
use std::io;
use std::os::fd::RawFd;

use crate::slirp::ffi::{
    SLIRP_POLL_ERR, SLIRP_POLL_HUP, SLIRP_POLL_IN, SLIRP_POLL_OUT, SLIRP_POLL_PRI,
};

/// Readiness bits: libslirp's `SLIRP_POLL_*` plus `RDHUP` (peer shut down writing), which only
/// the frontend socket is watched for.
pub mod ready {
    use super::*;
    pub const IN: c_int = SLIRP_POLL_IN;
    pub const OUT: c_int = SLIRP_POLL_OUT;
    pub const PRI: c_int = SLIRP_POLL_PRI;
    pub const ERR: c_int = SLIRP_POLL_ERR;
    pub const HUP: c_int = SLIRP_POLL_HUP;
    pub const RDHUP: c_int = 1 << 5;
}

/// Which loop design waits for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollerKind {
    /// `poll(2)` over an array rebuilt every iteration: the C helper's loop.
    Poll,
}

impl PollerKind {
    /// The best backend of this platform.
    pub fn platform_default() -> PollerKind {
        PollerKind::Poll
    }

    pub fn parse(name: &str) -> Option<PollerKind> {
        match name {
            "poll" => Some(PollerKind::Poll),
            _ => None,
        }
    }
}

/// The helper's own descriptors, registered once for the life of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// Read end of the pipe libslirp's `notify` writes to.
    Wakeup,
    /// The socket to bhyve (frames both ways).
    Frontend,
}

pub struct Poller {
    backend: poll::PollBackend,
}

impl Poller {
    pub fn new(kind: PollerKind, wakeup: RawFd, frontend: RawFd) -> io::Result<Poller> {
        match kind {
            PollerKind::Poll => Ok(Poller {
                backend: poll::PollBackend::new(wakeup, frontend),
            }),
        }
    }

    pub fn kind(&self) -> PollerKind {
        PollerKind::Poll
    }

    /// Start a new fill set (before `slirp_pollfds_fill`).
    pub fn begin_fill(&mut self) {
        self.backend.begin_fill();
    }

    /// `add_poll`: watch `fd` for `events` this iteration; returns the index libslirp stores.
    pub fn add(&mut self, fd: RawFd, events: c_int) -> c_int {
        self.backend.add(fd, events)
    }

    /// Whether the frontend socket is watched for writability (frames are waiting to go).
    pub fn watch_frontend_writable(&mut self, on: bool) {
        self.backend.watch_frontend_writable(on);
    }

    /// Wait up to `timeout_ms` (-1: forever). `Err(Interrupted)` on a signal.
    pub fn wait(&mut self, timeout_ms: c_int) -> io::Result<()> {
        self.backend.wait(timeout_ms)
    }

    /// `get_revents`: what `poll(2)` reported for index `idx`, HUP masked when not asked for.
    pub fn revents(&self, idx: c_int) -> c_int {
        self.backend.revents(idx)
    }

    /// Readiness of one of the helper's own descriptors this iteration.
    pub fn own_revents(&self, which: Own) -> c_int {
        self.backend.own_revents(which)
    }

    /// Hint from libslirp: `fd` is about to be closed.
    pub fn forget(&mut self, _fd: RawFd) {
        // The poll backend holds nothing across iterations.
    }
}
