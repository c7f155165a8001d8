//! Waiting for children of the frontend while staying responsive to SIGINT/SIGTERM and to
//! the helper's death.
//!
//! Owns: the signal mask (SIGINT, SIGTERM, SIGHUP blocked in every thread and read from a
//! signalfd; std's spawn resets the mask in children) and the wait primitive. Must never:
//! signal a process it was not given (children are stopped by pid through their `Child`).

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How a wait ended.
#[derive(Debug)]
pub enum Waited {
    Exited(ExitStatus),
    /// The deadline passed; the child was killed and reaped.
    TimedOut,
    /// A terminating signal arrived; the child was stopped and reaped.
    Signal(Signal),
    /// The pump ended (the helper hung up); the child was stopped and reaped.
    PumpEnded,
}

pub struct Supervisor {
    signals: SignalFd,
}

fn terminating() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    set
}

impl Supervisor {
    /// Block the terminating signals in the calling thread, before it starts any other
    /// thread (they inherit the mask), and read them from a signalfd instead.
    pub fn install() -> io::Result<Supervisor> {
        let set = terminating();
        set.thread_block().map_err(io::Error::from)?;
        let signals = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(io::Error::from)?;
        Ok(Supervisor { signals })
    }

    /// A pending terminating signal, if any (consumed).
    pub fn pending(&self) -> Option<Signal> {
        match self.signals.read_signal() {
            Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
            _ => None,
        }
    }

    /// Wait for `child` to exit, for at most `limit`, giving up early on a terminating signal
    /// or when `pump_ended` becomes readable. Whatever ends the wait, the child is reaped
    /// before returning (stopped by pid with SIGTERM, then SIGKILL after a grace period).
    pub fn wait(
        &self,
        child: &mut Child,
        pump_ended: Option<BorrowedFd<'_>>,
        limit: Option<Duration>,
    ) -> io::Result<Waited> {
        let pidfd = super::os::pidfd_open(child.id())?;
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Waited::Exited(status));
            }
            let timeout = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        stop_child(child);
                        return Ok(Waited::TimedOut);
                    }
                    PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32)
                        .unwrap_or(PollTimeout::NONE)
                }
                None => PollTimeout::NONE,
            };
            let mut fds = vec![
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(fd) = pump_ended {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(super::os::errno(e, "poll")),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let (signalled, pump_gone) = (ready(1), ready(2));
            drop(fds);
            if signalled {
                if let Some(sig) = self.pending() {
                    stop_child(child);
                    return Ok(Waited::Signal(sig));
                }
            }
            if pump_gone {
                stop_child(child);
                return Ok(Waited::PumpEnded);
            }
        }
    }
}

/// SIGTERM by pid, two seconds' grace, then SIGKILL; reaps the child.
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
