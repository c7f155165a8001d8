//! The `poll(2)` backend: the array is rebuilt every iteration, exactly as the C helper does.
//! Kept as the reference semantics and the measured baseline.

use super::{ready, Own};
use crate::sys::syscall;
use std::ffi::c_int;
use std::io;
use std::os::fd::RawFd;

const WAKEUP: usize = 0;
const FRONTEND: usize = 1;

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
const POLLRDHUP: libc::c_short = libc::POLLRDHUP;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
const POLLRDHUP: libc::c_short = 0;

pub struct PollBackend {
    /// `[wakeup, frontend, libslirp's sockets in add order...]`.
    fds: Vec<libc::pollfd>,
}

fn to_poll(events: c_int) -> libc::c_short {
    let mut out = 0;
    if events & ready::IN != 0 {
        out |= libc::POLLIN;
    }
    if events & ready::OUT != 0 {
        out |= libc::POLLOUT;
    }
    if events & ready::PRI != 0 {
        out |= libc::POLLPRI;
    }
    if events & ready::ERR != 0 {
        out |= libc::POLLERR;
    }
    if events & ready::HUP != 0 {
        out |= libc::POLLHUP;
    }
    if events & ready::RDHUP != 0 {
        out |= POLLRDHUP;
    }
    out
}

fn from_poll(revents: libc::c_short) -> c_int {
    let mut out = 0;
    if revents & libc::POLLIN != 0 {
        out |= ready::IN;
    }
    if revents & libc::POLLOUT != 0 {
        out |= ready::OUT;
    }
    if revents & libc::POLLPRI != 0 {
        out |= ready::PRI;
    }
    if revents & libc::POLLERR != 0 {
        out |= ready::ERR;
    }
    if revents & libc::POLLHUP != 0 {
        out |= ready::HUP;
    }
    if POLLRDHUP != 0 && revents & POLLRDHUP != 0 {
        out |= ready::RDHUP;
    }
    out
}

fn pollfd(fd: RawFd, events: c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: to_poll(events),
        revents: 0,
    }
}

impl PollBackend {
    pub fn new(wakeup: RawFd, frontend: RawFd) -> PollBackend {
        let fds = vec![
            pollfd(wakeup, ready::IN),
            pollfd(frontend, ready::IN | ready::RDHUP),
        ];
        PollBackend { fds }
    }

    pub fn begin_fill(&mut self) {
        self.fds.truncate(FRONTEND + 1);
        for entry in &mut self.fds {
            entry.revents = 0;
        }
    }

    pub fn add(&mut self, fd: RawFd, events: c_int) -> c_int {
        let Ok(idx) = c_int::try_from(self.fds.len()) else {
            return -1;
        };
        self.fds.push(pollfd(fd, events));
        idx
    }

    pub fn watch_frontend_writable(&mut self, on: bool) {
        let entry = &mut self.fds[FRONTEND];
        if on {
            entry.events |= libc::POLLOUT;
        } else {
            entry.events &= !libc::POLLOUT;
        }
    }

    pub fn wait(&mut self, timeout_ms: c_int) -> io::Result<()> {
        let n = self.fds.len() as libc::nfds_t;
        // SAFETY: `fds` is a valid array of `n` pollfd entries for the duration of the call.
        syscall!(poll(self.fds.as_mut_ptr(), n, timeout_ms))?;
        Ok(())
    }

    pub fn revents(&self, idx: c_int) -> c_int {
        // Indices below 2 are ours; libslirp only ever sees indices `add` returned.
        let Some(entry) = usize::try_from(idx)
            .ok()
            .filter(|&i| i > FRONTEND)
            .and_then(|i| self.fds.get(i))
        else {
            return 0;
        };
        let mut revents = entry.revents;
        // The kernel reports POLLHUP even when it was not asked for (as the C helper masks it).
        if entry.events & libc::POLLHUP == 0 {
            revents &= !libc::POLLHUP;
        }
        from_poll(revents)
    }

    /// The poll backend holds nothing across iterations: hints need no work.
    pub fn opened(&mut self, _fd: RawFd) {}

    pub fn closing(&mut self, _fd: RawFd) {}

    pub fn own_revents(&self, which: Own) -> c_int {
        let idx = match which {
            Own::Wakeup => WAKEUP,
            Own::Frontend => FRONTEND,
        };
        from_poll(self.fds[idx].revents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn readiness_is_reported_per_index_with_hup_masked() {
        let (wake_r, _wake_w) = nix::unistd::pipe().unwrap();
        let (front_a, _front_b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
        let mut p = PollBackend::new(wake_r.as_raw_fd(), front_a.as_raw_fd());
        p.begin_fill();
        let read_idx = p.add(pipe_r.as_raw_fd(), ready::IN);
        let write_idx = p.add(pipe_w.as_raw_fd(), ready::OUT);
        assert_eq!((read_idx, write_idx), (2, 3));
        p.wait(0).unwrap();
        assert_eq!(p.revents(read_idx), 0);
        assert_eq!(p.revents(write_idx), ready::OUT);
        assert_eq!(p.own_revents(Own::Wakeup), 0);
        assert_eq!(p.revents(0), 0, "our own slots are not libslirp's");
        assert_eq!(p.revents(99), 0);
        assert_eq!(p.revents(-1), 0);

        drop(pipe_w);
        p.begin_fill();
        let read_idx = p.add(pipe_r.as_raw_fd(), ready::IN);
        p.wait(0).unwrap();
        // A pipe whose writer is gone polls as POLLHUP, which libslirp did not ask for.
        assert_eq!(p.revents(read_idx), 0);
        p.begin_fill();
        let read_idx = p.add(pipe_r.as_raw_fd(), ready::IN | ready::HUP);
        p.wait(0).unwrap();
        assert_eq!(p.revents(read_idx), ready::HUP);
    }
}
