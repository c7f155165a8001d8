//! The `poll(2)` backend: the array is rebuilt every iteration, exactly as the C helper does.
//! Kept as the reference semantics and the measured baseline.

use super::{Own, Readiness, Slot};
use crate::sys::cvt;
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

/// poll(2)'s flag for each readiness bit (RDHUP is 0 where poll(2) has none).
const FLAGS: [(Readiness, libc::c_short); 6] = [
    (Readiness::IN, libc::POLLIN),
    (Readiness::OUT, libc::POLLOUT),
    (Readiness::PRI, libc::POLLPRI),
    (Readiness::ERR, libc::POLLERR),
    (Readiness::HUP, libc::POLLHUP),
    (Readiness::RDHUP, POLLRDHUP),
];

fn to_poll(events: Readiness) -> libc::c_short {
    FLAGS
        .iter()
        .filter(|(bit, _)| events.contains(*bit))
        .fold(0, |out, (_, flag)| out | flag)
}

fn from_poll(revents: libc::c_short) -> Readiness {
    FLAGS
        .iter()
        .filter(|(_, flag)| revents & flag != 0)
        .fold(Readiness::EMPTY, |out, (bit, _)| out | *bit)
}

fn pollfd(fd: RawFd, events: Readiness) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: to_poll(events),
        revents: 0,
    }
}

impl PollBackend {
    pub fn new(wakeup: RawFd, frontend: RawFd) -> PollBackend {
        let fds = vec![
            pollfd(wakeup, Readiness::IN),
            pollfd(frontend, Readiness::IN | Readiness::RDHUP),
        ];
        PollBackend { fds }
    }

    pub fn begin_fill(&mut self) {
        self.fds.truncate(FRONTEND + 1);
        for entry in &mut self.fds {
            entry.revents = 0;
        }
    }

    pub fn add(&mut self, fd: RawFd, events: Readiness) -> Option<Slot> {
        // libslirp keeps the index in an int.
        let idx = u32::try_from(self.fds.len())
            .ok()
            .filter(|&i| c_int::try_from(i).is_ok())?;
        self.fds.push(pollfd(fd, events));
        Some(Slot::new(idx))
    }

    pub(crate) fn watch_frontend_writable(&mut self, on: bool) {
        let entry = &mut self.fds[FRONTEND];
        if on {
            entry.events |= libc::POLLOUT;
        } else {
            entry.events &= !libc::POLLOUT;
        }
    }

    pub fn wait(&mut self, timeout_ms: c_int) -> io::Result<()> {
        let n = self.fds.len() as libc::nfds_t;
        // SAFETY: `fds` is an array of `n` valid pollfd entries (its length), exclusively
        // borrowed for the duration of the call; the kernel writes only their `revents`.
        cvt(unsafe { libc::poll(self.fds.as_mut_ptr(), n, timeout_ms) })?;
        Ok(())
    }

    pub fn slot_fd(&self, slot: Slot) -> Option<RawFd> {
        usize::try_from(slot.index())
            .ok()
            .filter(|&i| i > FRONTEND)
            .and_then(|i| self.fds.get(i))
            .map(|entry| entry.fd)
    }

    pub fn revents(&self, slot: Slot) -> Readiness {
        // Indices below 2 are ours; libslirp only ever sees indices `add` returned.
        let Some(entry) = usize::try_from(slot.index())
            .ok()
            .filter(|&i| i > FRONTEND)
            .and_then(|i| self.fds.get(i))
        else {
            return Readiness::EMPTY;
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

    pub fn own_revents(&self, which: Own) -> Readiness {
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
        let read_idx = p.add(pipe_r.as_raw_fd(), Readiness::IN).unwrap();
        let write_idx = p.add(pipe_w.as_raw_fd(), Readiness::OUT).unwrap();
        assert_eq!((read_idx, write_idx), (Slot::new(2), Slot::new(3)));
        p.wait(0).unwrap();
        assert_eq!(p.revents(read_idx), Readiness::EMPTY);
        assert_eq!(p.revents(write_idx), Readiness::OUT);
        assert_eq!(p.own_revents(Own::Wakeup), Readiness::EMPTY);
        assert_eq!(
            p.revents(Slot::new(0)),
            Readiness::EMPTY,
            "our own slots are not libslirp's"
        );
        assert_eq!(p.revents(Slot::new(99)), Readiness::EMPTY);

        drop(pipe_w);
        p.begin_fill();
        let read_idx = p.add(pipe_r.as_raw_fd(), Readiness::IN).unwrap();
        p.wait(0).unwrap();
        // A pipe whose writer is gone polls as POLLHUP, which libslirp did not ask for.
        assert_eq!(p.revents(read_idx), Readiness::EMPTY);
        p.begin_fill();
        let read_idx = p
            .add(pipe_r.as_raw_fd(), Readiness::IN | Readiness::HUP)
            .unwrap();
        p.wait(0).unwrap();
        assert_eq!(p.revents(read_idx), Readiness::HUP);
    }
}
