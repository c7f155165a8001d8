//! The kqueue backend (FreeBSD, macOS): the iteration's difference goes in as the changelist
//! of the very `kevent()` call that waits, so an iteration with nothing else to do costs one
//! syscall (design rule 3).
//!
//! Each fd has two knotes, EVFILT_READ and EVFILT_WRITE, added together and then toggled with
//! EV_ENABLE/EV_DISABLE. kqueue drops knotes itself when an fd is closed, so the unregister
//! hint needs no syscall here. Failed changes come back as EV_ERROR entries in the eventlist,
//! which is sized for them.
//!
//! poll(2) mapping: READ → IN, WRITE → OUT; EV_EOF on READ → RDHUP, on WRITE → HUP; a socket
//! error in `fflags` → ERR. kqueue has no POLLPRI: PRI is never reported (libslirp asks for it
//! only for urgent data, which it also reads through IN).

use super::interest::{Change, InterestTable};
use super::{ready, Own};
use nix::sys::event::{EvFlags, EventFilter, FilterFlag, KEvent, Kqueue};
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

const WAKEUP_TOKEN: u64 = u64::MAX;
const FRONTEND_TOKEN: u64 = u64::MAX - 1;

fn kevent(fd: RawFd, filter: EventFilter, flags: EvFlags, udata: u64) -> KEvent {
    KEvent::new(
        fd as usize,
        filter,
        flags,
        FilterFlag::empty(),
        0,
        udata as isize,
    )
}

fn toggle(on: bool) -> EvFlags {
    if on {
        EvFlags::EV_ENABLE
    } else {
        EvFlags::EV_DISABLE
    }
}

pub struct KqueueBackend {
    kq: Kqueue,
    table: InterestTable,
    changes: Vec<Change>,
    /// The changelist of the next `kevent()`.
    changelist: Vec<KEvent>,
    /// Room for every ready knote plus an EV_ERROR for every change; grows, never shrinks.
    eventlist: Vec<KEvent>,
    frontend: RawFd,
    frontend_writable: bool,
    own: [c_int; 2],
}

impl KqueueBackend {
    pub fn new(wakeup: RawFd, frontend: RawFd) -> io::Result<KqueueBackend> {
        let kq = Kqueue::new()?;
        crate::sys::set_cloexec(kq.as_fd().as_raw_fd(), true)?;
        let mut backend = KqueueBackend {
            kq,
            table: InterestTable::new(),
            changes: Vec::new(),
            changelist: Vec::new(),
            eventlist: vec![
                KEvent::new(
                    0,
                    EventFilter::EVFILT_READ,
                    EvFlags::empty(),
                    FilterFlag::empty(),
                    0,
                    0
                );
                64
            ],
            frontend,
            frontend_writable: false,
            own: [0; 2],
        };
        let add = EvFlags::EV_ADD | EvFlags::EV_ENABLE;
        backend
            .changelist
            .push(kevent(wakeup, EventFilter::EVFILT_READ, add, WAKEUP_TOKEN));
        backend.changelist.push(kevent(
            frontend,
            EventFilter::EVFILT_READ,
            add,
            FRONTEND_TOKEN,
        ));
        backend.changelist.push(kevent(
            frontend,
            EventFilter::EVFILT_WRITE,
            EvFlags::EV_ADD | EvFlags::EV_DISABLE,
            FRONTEND_TOKEN,
        ));
        Ok(backend)
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

    /// The fd is about to be closed, which removes its knotes: only the table changes.
    pub fn closing(&mut self, fd: RawFd) {
        let mut changes = std::mem::take(&mut self.changes);
        self.table.closing(fd, &mut changes);
        changes.clear();
        self.changes = changes;
    }

    pub fn watch_frontend_writable(&mut self, on: bool) {
        if on != self.frontend_writable {
            self.frontend_writable = on;
            self.changelist.push(kevent(
                self.frontend,
                EventFilter::EVFILT_WRITE,
                toggle(on),
                FRONTEND_TOKEN,
            ));
        }
    }

    /// Translate the table's changes into knote changes.
    fn queue_changes(&mut self) {
        let mut changes = std::mem::take(&mut self.changes);
        self.table.diff(&mut changes);
        for change in changes.drain(..) {
            match change {
                Change::Add { fd, events, token } | Change::Modify { fd, events, token } => {
                    // EV_ADD on an existing knote updates it (no EEXIST on kqueue), so a
                    // modify is an add with the new enable state and token.
                    let base = EvFlags::EV_ADD;
                    let read = events & (ready::IN | ready::PRI) != 0;
                    let write = events & ready::OUT != 0;
                    self.changelist.push(kevent(
                        fd,
                        EventFilter::EVFILT_READ,
                        base | toggle(read),
                        token,
                    ));
                    self.changelist.push(kevent(
                        fd,
                        EventFilter::EVFILT_WRITE,
                        base | toggle(write),
                        token,
                    ));
                }
                Change::Delete { fd, .. } => {
                    self.changelist.push(kevent(
                        fd,
                        EventFilter::EVFILT_READ,
                        EvFlags::EV_DELETE,
                        0,
                    ));
                    self.changelist.push(kevent(
                        fd,
                        EventFilter::EVFILT_WRITE,
                        EvFlags::EV_DELETE,
                        0,
                    ));
                }
            }
        }
        self.changes = changes;
    }

    fn readiness(event: &KEvent) -> c_int {
        let eof = event.flags().contains(EvFlags::EV_EOF);
        let error = if eof && !event.fflags().is_empty() {
            ready::ERR
        } else {
            0
        };
        match event.filter() {
            Ok(EventFilter::EVFILT_READ) => ready::IN | if eof { ready::RDHUP } else { 0 } | error,
            Ok(EventFilter::EVFILT_WRITE) => ready::OUT | if eof { ready::HUP } else { 0 } | error,
            _ => 0,
        }
    }

    pub fn wait(&mut self, timeout_ms: c_int) -> io::Result<()> {
        self.queue_changes();
        let wanted = 2 * self.table.registered() + self.changelist.len() + 4;
        if self.eventlist.len() < wanted {
            let blank = self.eventlist[0];
            self.eventlist.resize(wanted.next_power_of_two(), blank);
        }
        let timeout = (timeout_ms >= 0).then(|| libc::timespec {
            tv_sec: (timeout_ms / 1000) as libc::time_t,
            tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
        });
        let result = self
            .kq
            .kevent(&self.changelist, &mut self.eventlist, timeout);
        // "All changes have been applied" even when the wait is interrupted (EINTR).
        self.changelist.clear();
        let n = result?;
        for i in 0..n {
            let event = self.eventlist[i];
            let token = event.udata() as u64;
            if event.flags().contains(EvFlags::EV_ERROR) {
                self.change_error(&event);
                continue;
            }
            let revents = Self::readiness(&event);
            match token {
                WAKEUP_TOKEN => self.own[0] |= revents,
                FRONTEND_TOKEN => self.own[1] |= revents,
                _ => self.table.set_ready(token, revents),
            }
        }
        Ok(())
    }

    /// A change the kernel refused. ENOENT on delete: the knote went with a close we were not
    /// told about. EBADF on add: the fd is already closed. Either way the table forgets the
    /// registration, and the next fill adds it again if libslirp still asks.
    fn change_error(&mut self, event: &KEvent) {
        let token = event.udata() as u64;
        // Deletes carry token 0 and our own descriptors never fail after start-up.
        if event.data() != 0 && token != 0 && token < FRONTEND_TOKEN {
            self.table.change_failed(event.ident() as RawFd);
            self.table.recovered();
        }
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
