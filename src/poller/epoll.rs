//! The epoll kernel calls (Linux): libslirp's sockets stay registered across iterations; the
//! difference from the last fill goes in as one `epoll_ctl` per changed fd, then one
//! `epoll_wait`. Level-triggered, so readiness is never lost between iterations.

use super::interest::Change;
use super::persistent::{KernelEvent, KernelQueue, FRONTEND_TOKEN, WAKEUP_TOKEN};
use super::Readiness;
use crate::sys::cvt;
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn to_epoll(events: Readiness) -> u32 {
    let mut out = 0;
    if events.contains(Readiness::IN) {
        out |= libc::EPOLLIN;
    }
    if events.contains(Readiness::OUT) {
        out |= libc::EPOLLOUT;
    }
    if events.contains(Readiness::PRI) {
        out |= libc::EPOLLPRI;
    }
    if events.contains(Readiness::RDHUP) {
        out |= libc::EPOLLRDHUP;
    }
    // ERR and HUP are always reported by epoll.
    out as u32
}

fn from_epoll(events: u32) -> Readiness {
    let events = events as c_int;
    let mut out = Readiness::EMPTY;
    for (flag, bit) in [
        (libc::EPOLLIN, Readiness::IN),
        (libc::EPOLLOUT, Readiness::OUT),
        (libc::EPOLLPRI, Readiness::PRI),
        (libc::EPOLLERR, Readiness::ERR),
        (libc::EPOLLHUP, Readiness::HUP),
        (libc::EPOLLRDHUP, Readiness::RDHUP),
    ] {
        if events & flag != 0 {
            out |= bit;
        }
    }
    out
}

pub struct EpollQueue {
    epfd: OwnedFd,
    /// Grows with the number of registrations so one wait reports every ready fd, as poll(2)
    /// would; never shrinks, so steady state allocates nothing.
    events: Vec<libc::epoll_event>,
    frontend: RawFd,
}

impl EpollQueue {
    pub fn new(wakeup: RawFd, frontend: RawFd) -> io::Result<EpollQueue> {
        // SAFETY: epoll_create1 takes a flag and reads no memory.
        let epfd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: epoll_create1 just returned this open descriptor; nothing else knows it, so
        // the OwnedFd is its one owner (and closes it with the queue).
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        let queue = EpollQueue {
            epfd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
            frontend,
        };
        queue.ctl(libc::EPOLL_CTL_ADD, wakeup, Readiness::IN, WAKEUP_TOKEN)?;
        queue.ctl(
            libc::EPOLL_CTL_ADD,
            frontend,
            Readiness::IN | Readiness::RDHUP,
            FRONTEND_TOKEN,
        )?;
        Ok(queue)
    }

    fn ctl(&self, op: c_int, fd: RawFd, events: Readiness, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: to_epoll(events),
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event, exclusively borrowed for the call; the kernel
        // copies it. A stale `fd` is an error (EBADF/ENOENT), handled by the caller.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event) })?;
        Ok(())
    }

    /// Apply changes, recovering from bookkeeping drift as design note 1 says.
    fn apply(&self, changes: &[Change], report: &mut dyn FnMut(KernelEvent)) {
        for &change in changes {
            let result = match change {
                Change::Add { fd, events, token } => {
                    match self.ctl(libc::EPOLL_CTL_ADD, fd, events, token) {
                        // Still registered from an earlier file or a missed delete: modify it.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            report(KernelEvent::Recovered);
                            self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
                        }
                        other => other,
                    }
                }
                Change::Modify { fd, events, token } => {
                    match self.ctl(libc::EPOLL_CTL_MOD, fd, events, token) {
                        // The registration went with a close we were not told about: add it.
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                            report(KernelEvent::Recovered);
                            self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
                        }
                        other => other,
                    }
                }
                Change::Delete { fd, .. } => {
                    match self.ctl(libc::EPOLL_CTL_DEL, fd, Readiness::EMPTY, 0) {
                        // Already gone with the file (closed without the hint): nothing to undo.
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::ENOENT) | Some(libc::EBADF)
                            ) =>
                        {
                            Ok(())
                        }
                        other => other,
                    }
                }
            };
            if result.is_err() {
                // EBADF/EPERM: libslirp handed us something epoll cannot watch (closed, or not
                // pollable); it is retried as an add in the next fill.
                let fd = match change {
                    Change::Add { fd, .. }
                    | Change::Modify { fd, .. }
                    | Change::Delete { fd, .. } => fd,
                };
                report(KernelEvent::Refused { fd });
            }
        }
    }
}

impl KernelQueue for EpollQueue {
    /// epoll forgets a registration only when the last reference to the file goes (a dup
    /// keeps it): delete now, while the fd is open.
    fn closing(&mut self, deletes: &[Change], report: &mut dyn FnMut(KernelEvent)) {
        self.apply(deletes, report);
    }

    fn watch_frontend_writable(&mut self, on: bool) -> bool {
        let events =
            Readiness::IN | Readiness::RDHUP | if on { Readiness::OUT } else { Readiness::EMPTY };
        // MOD cannot fail but for a kernel out of memory.
        self.ctl(libc::EPOLL_CTL_MOD, self.frontend, events, FRONTEND_TOKEN)
            .is_ok()
    }

    fn submit_and_wait(
        &mut self,
        changes: &[Change],
        registered: usize,
        timeout_ms: c_int,
        report: &mut dyn FnMut(KernelEvent),
    ) -> io::Result<()> {
        self.apply(changes, report);
        let wanted = registered + 2;
        if self.events.len() < wanted {
            self.events.resize(
                wanted.next_power_of_two(),
                libc::epoll_event { events: 0, u64: 0 },
            );
        }
        let max = c_int::try_from(self.events.len()).unwrap_or(c_int::MAX);
        // SAFETY: `events` is writable for `max` entries (its length, capped) and exclusively
        // borrowed for the duration of the call; the kernel writes at most `max`.
        let n = cvt(unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                max,
                timeout_ms,
            )
        })?;
        for event in &self.events[..n as usize] {
            report(KernelEvent::Ready {
                token: event.u64,
                readiness: from_epoll(event.events),
            });
        }
        Ok(())
    }
}
