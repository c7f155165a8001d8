//! The kqueue kernel calls (FreeBSD, macOS): the iteration's difference goes in as the
//! changelist of the very `kevent()` call that waits, so an iteration with nothing else to do
//! costs one syscall (design rule 3).
//!
//! Each fd has two knotes, EVFILT_READ and EVFILT_WRITE, added together and then toggled with
//! EV_ENABLE/EV_DISABLE. kqueue drops knotes itself when an fd is closed, so the unregister
//! hint needs no syscall here. Failed changes come back as EV_ERROR entries in the eventlist,
//! which is sized for them.
//!
//! poll(2) mapping: READ → IN, WRITE → OUT; EV_EOF on READ → RDHUP, on WRITE → HUP; a socket
//! error in `fflags` → ERR. kqueue has no POLLPRI: PRI is never reported (libslirp asks for it
//! only for urgent data, which it also reads through IN).
//!
//! Everything above the one `kevent()` call is platform-neutral ([`Kev`] is our own copy of
//! the fields of `struct kevent` we use, with FreeBSD's flag values) and generic over
//! [`KeventSyscall`], so on Linux the same code runs against the model of FreeBSD's kqueue in
//! `kqueue_model.rs`.

use super::interest::Change;
use super::persistent::{KernelEvent, KernelQueue, FRONTEND_TOKEN, WAKEUP_TOKEN};
use super::Readiness;
use std::ffi::c_int;
use std::io;
use std::os::fd::RawFd;

/// `struct kevent`'s flags we use, with the values of FreeBSD's (and macOS's) `sys/event.h`.
pub(super) mod ev {
    pub(crate) const ADD: u16 = 0x0001;
    pub(crate) const DELETE: u16 = 0x0002;
    pub(crate) const ENABLE: u16 = 0x0004;
    pub(crate) const DISABLE: u16 = 0x0008;
    pub(crate) const RECEIPT: u16 = 0x0040;
    pub(crate) const ERROR: u16 = 0x4000;
    pub const EOF: u16 = 0x8000;
}

/// The two filters we register per fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Filter {
    Read,
    Write,
}

/// One change or event record: the fields of `struct kevent` the backend uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Kev {
    pub ident: RawFd,
    pub filter: Filter,
    pub flags: u16,
    pub fflags: u32,
    /// EV_ERROR entries: the errno of the refused change.
    pub data: i64,
    pub udata: u64,
}

impl Kev {
    pub fn change(fd: RawFd, filter: Filter, flags: u16, udata: u64) -> Kev {
        Kev {
            ident: fd,
            filter,
            flags,
            fflags: 0,
            data: 0,
            udata,
        }
    }
}

/// The one system call: `kevent(kq, changes, events, timeout)`, returning how many entries of
/// `events` it filled.
pub(super) trait KeventSyscall {
    fn kevent(
        &mut self,
        changes: &[Kev],
        events: &mut [Kev],
        timeout_ms: c_int,
    ) -> io::Result<usize>;
}

fn toggle(on: bool) -> u16 {
    if on {
        ev::ENABLE
    } else {
        ev::DISABLE
    }
}

/// poll(2)'s bits for one returned event.
fn readiness(event: &Kev) -> Readiness {
    let eof = event.flags & ev::EOF != 0;
    // filt_soread/filt_sowrite put so_error in fflags with EV_EOF.
    let error = if eof && event.fflags != 0 {
        Readiness::ERR
    } else {
        Readiness::EMPTY
    };
    let (ready, hangup) = match event.filter {
        Filter::Read => (Readiness::IN, Readiness::RDHUP),
        Filter::Write => (Readiness::OUT, Readiness::HUP),
    };
    ready | error | if eof { hangup } else { Readiness::EMPTY }
}

pub(super) struct KqueueQueue<S> {
    sys: S,
    /// The changelist of the next `kevent()`.
    changelist: Vec<Kev>,
    /// Room for every ready knote plus an EV_ERROR for every change; grows, never shrinks.
    eventlist: Vec<Kev>,
    frontend: RawFd,
}

impl<S: KeventSyscall> KqueueQueue<S> {
    /// Our own descriptors go in with the first `kevent()`.
    pub fn new(sys: S, wakeup: RawFd, frontend: RawFd) -> KqueueQueue<S> {
        let add = ev::ADD | ev::ENABLE;
        let changelist = vec![
            Kev::change(wakeup, Filter::Read, add, WAKEUP_TOKEN),
            Kev::change(frontend, Filter::Read, add, FRONTEND_TOKEN),
            Kev::change(
                frontend,
                Filter::Write,
                ev::ADD | ev::DISABLE,
                FRONTEND_TOKEN,
            ),
        ];
        KqueueQueue {
            sys,
            changelist,
            eventlist: vec![Kev::change(0, Filter::Read, 0, 0); 64],
            frontend,
        }
    }

    /// Translate the table's changes into knote changes.
    fn queue_changes(&mut self, changes: &[Change]) {
        for &change in changes {
            match change {
                Change::Add { fd, events, token } | Change::Modify { fd, events, token } => {
                    // EV_ADD on an existing knote updates it (kqueue_register: no EEXIST for
                    // an fd filter), so a modify is an add with the new enable state and token.
                    let read = events.intersects(Readiness::IN | Readiness::PRI);
                    let write = events.contains(Readiness::OUT);
                    self.changelist.push(Kev::change(
                        fd,
                        Filter::Read,
                        ev::ADD | toggle(read),
                        token,
                    ));
                    self.changelist.push(Kev::change(
                        fd,
                        Filter::Write,
                        ev::ADD | toggle(write),
                        token,
                    ));
                }
                Change::Delete { fd, .. } => {
                    self.changelist
                        .push(Kev::change(fd, Filter::Read, ev::DELETE, 0));
                    self.changelist
                        .push(Kev::change(fd, Filter::Write, ev::DELETE, 0));
                }
            }
        }
    }

    /// A change the kernel refused. ENOENT/EBADF on delete: the knote went with a close we
    /// were not told about, nothing to undo. EBADF on add: the fd is already closed; the table
    /// forgets the registration, and the next fill adds it again if libslirp still asks.
    fn change_error(event: &Kev, report: &mut dyn FnMut(KernelEvent)) {
        // Deletes carry token 0 and our own descriptors never fail after start-up.
        if event.data != 0 && event.udata != 0 && event.udata < FRONTEND_TOKEN {
            report(KernelEvent::Refused { fd: event.ident });
            report(KernelEvent::Recovered);
        }
    }

    fn kevent(&mut self, timeout_ms: c_int) -> io::Result<usize> {
        let result = self
            .sys
            .kevent(&self.changelist, &mut self.eventlist, timeout_ms);
        // "All changes have been applied" even when the wait is interrupted (EINTR): they are
        // registered before kqueue_scan sleeps.
        self.changelist.clear();
        result
    }
}

impl<S: KeventSyscall> KernelQueue for KqueueQueue<S> {
    /// The close removes the fd's knotes (knote_fdclose): nothing to submit.
    fn closing(&mut self, _deletes: &[Change], _report: &mut dyn FnMut(KernelEvent)) {}

    fn watch_frontend_writable(&mut self, on: bool) -> bool {
        self.changelist.push(Kev::change(
            self.frontend,
            Filter::Write,
            toggle(on),
            FRONTEND_TOKEN,
        ));
        true
    }

    fn submit_and_wait(
        &mut self,
        changes: &[Change],
        registered: usize,
        timeout_ms: c_int,
        report: &mut dyn FnMut(KernelEvent),
    ) -> io::Result<()> {
        self.queue_changes(changes);
        let wanted = 2 * registered + self.changelist.len() + 4;
        if self.eventlist.len() < wanted {
            let blank = self.eventlist[0];
            self.eventlist.resize(wanted.next_power_of_two(), blank);
        }
        let mut n = self.kevent(timeout_ms)?;
        let mut refused = false;
        for event in &self.eventlist[..n] {
            if event.flags & ev::ERROR != 0 {
                Self::change_error(event, report);
                refused = true;
            }
        }
        if refused {
            // kern_kevent_fp: when a change produced an EV_ERROR entry, kevent() returns the
            // error entries alone and never scans for readiness. Ask again, without changes:
            // this is the wait.
            n = self.kevent(timeout_ms)?;
        }
        for event in &self.eventlist[..n] {
            if event.flags & ev::ERROR == 0 {
                report(KernelEvent::Ready {
                    token: event.udata,
                    readiness: readiness(event),
                });
            }
        }
        Ok(())
    }
}

/// The real `kevent()`.
#[cfg(any(target_os = "freebsd", target_os = "macos"))]
pub(super) mod sys {
    use super::{ev, Filter, Kev, KeventSyscall};
    use nix::sys::event::{EvFlags, EventFilter, FilterFlag, KEvent, Kqueue};
    use std::ffi::c_int;
    use std::io;
    use std::os::fd::{AsFd, RawFd};

    const FLAGS: [(u16, EvFlags); 7] = [
        (ev::ADD, EvFlags::EV_ADD),
        (ev::DELETE, EvFlags::EV_DELETE),
        (ev::ENABLE, EvFlags::EV_ENABLE),
        (ev::DISABLE, EvFlags::EV_DISABLE),
        (ev::RECEIPT, EvFlags::EV_RECEIPT),
        (ev::ERROR, EvFlags::EV_ERROR),
        (ev::EOF, EvFlags::EV_EOF),
    ];

    fn to_kevent(kev: &Kev) -> KEvent {
        let mut flags = EvFlags::empty();
        for (ours, theirs) in FLAGS {
            if kev.flags & ours != 0 {
                flags |= theirs;
            }
        }
        let filter = match kev.filter {
            Filter::Read => EventFilter::EVFILT_READ,
            Filter::Write => EventFilter::EVFILT_WRITE,
        };
        KEvent::new(
            kev.ident as usize,
            filter,
            flags,
            FilterFlag::empty(),
            0,
            kev.udata as isize,
        )
    }

    fn from_kevent(event: &KEvent) -> Kev {
        let mut flags = 0;
        for (ours, theirs) in FLAGS {
            if event.flags().contains(theirs) {
                flags |= ours;
            }
        }
        Kev {
            ident: event.ident() as RawFd,
            filter: match event.filter() {
                Ok(EventFilter::EVFILT_WRITE) => Filter::Write,
                _ => Filter::Read,
            },
            flags,
            fflags: event.fflags().bits(),
            data: event.data() as i64,
            udata: event.udata() as u64,
        }
    }

    pub struct KqueueFd {
        kq: Kqueue,
        changes: Vec<KEvent>,
        events: Vec<KEvent>,
    }

    impl KqueueFd {
        pub fn new() -> io::Result<KqueueFd> {
            let kq = Kqueue::new()?;
            crate::sys::set_cloexec(kq.as_fd(), true)?;
            Ok(KqueueFd {
                kq,
                changes: Vec::new(),
                events: Vec::new(),
            })
        }
    }

    impl KeventSyscall for KqueueFd {
        fn kevent(
            &mut self,
            changes: &[Kev],
            events: &mut [Kev],
            timeout_ms: c_int,
        ) -> io::Result<usize> {
            self.changes.clear();
            self.changes.extend(changes.iter().map(to_kevent));
            if self.events.len() < events.len() {
                let blank = to_kevent(&events[0]);
                self.events.resize(events.len(), blank);
            }
            let timeout = (timeout_ms >= 0).then(|| libc::timespec {
                tv_sec: (timeout_ms / 1000) as libc::time_t,
                tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
            });
            let n = self
                .kq
                .kevent(&self.changes, &mut self.events[..events.len()], timeout)?;
            for (out, event) in events.iter_mut().zip(&self.events[..n]) {
                *out = from_kevent(event);
            }
            Ok(n)
        }
    }
}
