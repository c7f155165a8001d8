//! The epoll backend (Linux): libslirp's sockets stay registered across iterations; only the
//! difference from the last fill goes to the kernel (`epoll_ctl` per changed fd), then one
//! `epoll_wait`. Level-triggered, so readiness is never lost between iterations.

use super::interest::{Change, InterestTable};
use super::{ready, Own};
use crate::sys::syscall;
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Tokens of our own descriptors: above any `tag << 32 | fd` in use long before wrapping.
const WAKEUP_TOKEN: u64 = u64::MAX;
const FRONTEND_TOKEN: u64 = u64::MAX - 1;

fn to_epoll(events: c_int) -> u32 {
    let mut out = 0;
    if events & ready::IN != 0 {
        out |= libc::EPOLLIN;
    }
    if events & ready::OUT != 0 {
        out |= libc::EPOLLOUT;
    }
    if events & ready::PRI != 0 {
        out |= libc::EPOLLPRI;
    }
    if events & ready::RDHUP != 0 {
        out |= libc::EPOLLRDHUP;
    }
    // ERR and HUP are always reported by epoll.
    out as u32
}

fn from_epoll(events: u32) -> c_int {
    let events = events as c_int;
    let mut out = 0;
    if events & libc::EPOLLIN != 0 {
        out |= ready::IN;
    }
    if events & libc::EPOLLOUT != 0 {
        out |= ready::OUT;
    }
    if events & libc::EPOLLPRI != 0 {
        out |= ready::PRI;
    }
    if events & libc::EPOLLERR != 0 {
        out |= ready::ERR;
    }
    if events & libc::EPOLLHUP != 0 {
        out |= ready::HUP;
    }
    if events & libc::EPOLLRDHUP != 0 {
        out |= ready::RDHUP;
    }
    out
}

pub struct EpollBackend {
    epfd: OwnedFd,
    table: InterestTable,
    changes: Vec<Change>,
    /// Grows with the number of registrations so one wait reports every ready fd, as poll(2)
    /// would; never shrinks, so steady state allocates nothing.
    events: Vec<libc::epoll_event>,
    frontend: RawFd,
    frontend_writable: bool,
    own: [c_int; 2],
}

impl EpollBackend {
    pub fn new(wakeup: RawFd, frontend: RawFd) -> io::Result<EpollBackend> {
        let epfd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epoll_create1 just returned this descriptor; nothing else owns it.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        let backend = EpollBackend {
            epfd,
            table: InterestTable::new(),
            changes: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
            frontend,
            frontend_writable: false,
            own: [0; 2],
        };
        backend.ctl(libc::EPOLL_CTL_ADD, wakeup, ready::IN, WAKEUP_TOKEN)?;
        backend.ctl(
            libc::EPOLL_CTL_ADD,
            frontend,
            ready::IN | ready::RDHUP,
            FRONTEND_TOKEN,
        )?;
        Ok(backend)
    }

    fn ctl(&self, op: c_int, fd: RawFd, events: c_int, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: to_epoll(events),
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the call; the kernel copies it.
        syscall!(epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event))?;
        Ok(())
    }

    pub fn table(&self) -> &InterestTable {
        &self.table
    }

    pub fn begin_fill(&mut self) {
        self.table.begin_fill();
        self.own = [0; 2];
    }

    pub fn add(&mut self, fd: RawFd, events: c_int) -> c_int {
        self.table.add(fd, events)
    }

    pub fn opened(&mut self, fd: RawFd) {
        self.table.opened(fd);
    }

    pub fn closing(&mut self, fd: RawFd) {
        let mut changes = std::mem::take(&mut self.changes);
        self.table.closing(fd, &mut changes);
        self.apply(&mut changes);
        self.changes = changes;
    }

    pub fn watch_frontend_writable(&mut self, on: bool) {
        if on == self.frontend_writable {
            return;
        }
        let events = ready::IN | ready::RDHUP | if on { ready::OUT } else { 0 };
        // The frontend stays registered for the process's life: MOD cannot fail but for a
        // kernel out of memory, and then readability alone still drives the loop.
        if self
            .ctl(libc::EPOLL_CTL_MOD, self.frontend, events, FRONTEND_TOKEN)
            .is_ok()
        {
            self.frontend_writable = on;
        }
    }

    /// Apply changes, recovering from bookkeeping drift as design note 1 says.
    fn apply(&mut self, changes: &mut Vec<Change>) {
        for change in changes.drain(..) {
            let result = match change {
                Change::Add { fd, events, token } => {
                    match self.ctl(libc::EPOLL_CTL_ADD, fd, events, token) {
                        // Still registered from an earlier file or a missed delete: modify it.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            self.table.recovered();
                            self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
                        }
                        other => other,
                    }
                }
                Change::Modify { fd, events, token } => {
                    match self.ctl(libc::EPOLL_CTL_MOD, fd, events, token) {
                        // The registration went with a close we were not told about: add it.
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                            self.table.recovered();
                            self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
                        }
                        other => other,
                    }
                }
                Change::Delete { fd, .. } => match self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0) {
                    // Already gone with the file (closed without the hint): nothing to undo.
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF)) =>
                    {
                        Ok(())
                    }
                    other => other,
                },
            };
            if result.is_err() {
                // EBADF/EPERM: libslirp handed us something epoll cannot watch (closed, or not
                // pollable); it is retried as an add in the next fill.
                let fd = match change {
                    Change::Add { fd, .. }
                    | Change::Modify { fd, .. }
                    | Change::Delete { fd, .. } => fd,
                };
                self.table.change_failed(fd);
            }
        }
    }

    pub fn wait(&mut self, timeout_ms: c_int) -> io::Result<()> {
        let mut changes = std::mem::take(&mut self.changes);
        self.table.diff(&mut changes);
        self.apply(&mut changes);
        self.changes = changes;

        let wanted = self.table.registered() + 2;
        if self.events.len() < wanted {
            self.events.resize(
                wanted.next_power_of_two(),
                libc::epoll_event { events: 0, u64: 0 },
            );
        }
        let max = c_int::try_from(self.events.len()).unwrap_or(c_int::MAX);
        // SAFETY: `events` has room for `max` entries for the duration of the call.
        let n = syscall!(epoll_wait(
            self.epfd.as_raw_fd(),
            self.events.as_mut_ptr(),
            max,
            timeout_ms
        ))?;
        for i in 0..n as usize {
            let event = self.events[i];
            let (token, revents) = (event.u64, from_epoll(event.events));
            match token {
                WAKEUP_TOKEN => self.own[0] = revents,
                FRONTEND_TOKEN => self.own[1] = revents,
                _ => self.table.set_ready(token, revents),
            }
        }
        Ok(())
    }

    pub fn revents(&self, idx: c_int) -> c_int {
        self.table.revents(idx)
    }

    pub fn own_revents(&self, which: Own) -> c_int {
        match which {
            Own::Wakeup => self.own[0],
            Own::Frontend => self.own[1],
        }
    }
}
