//! The persistent backends' one body: the interest table, the change list, the readiness of
//! the helper's own two descriptors. epoll and kqueue differ only in the kernel calls behind
//! [`KernelQueue`]; everything they share (the fill, the diff, the hints, tokens, answers)
//! lives here once.

use super::interest::{Change, InterestTable};
use super::{Own, Readiness, Slot};
use std::ffi::c_int;
use std::io;
use std::os::fd::RawFd;

/// Tokens of our own descriptors: above any `tag << 32 | fd` in use long before wrapping.
pub(super) const WAKEUP_TOKEN: u64 = u64::MAX;
pub(super) const FRONTEND_TOKEN: u64 = u64::MAX - 1;

/// What a kernel queue reports back to the shared body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KernelEvent {
    /// The registration under `token` is ready.
    Ready { token: u64, readiness: Readiness },
    /// The kernel refused a change for `fd`: it no longer holds a registration for it.
    Refused { fd: RawFd },
    /// Bookkeeping drift repaired (epoll: EEXIST on add, ENOENT on modify; kqueue: a refused
    /// add); counted.
    Recovered,
}

/// The kernel calls of one persistent backend. Our own two descriptors are registered when
/// the queue is created (wakeup for IN, frontend for IN|RDHUP, under the tokens above).
pub(super) trait KernelQueue {
    /// The unregister hint's deletions, while the fd is still open.
    fn closing(&mut self, deletes: &[Change], report: &mut dyn FnMut(KernelEvent));

    /// Watch the frontend for writability too (or no longer); false when that failed.
    fn watch_frontend_writable(&mut self, on: bool) -> bool;

    /// Submit `changes` and wait up to `timeout_ms` (-1: forever) for readiness; `registered`
    /// is how many registrations the table holds, for sizing the event buffer.
    fn submit_and_wait(
        &mut self,
        changes: &[Change],
        registered: usize,
        timeout_ms: c_int,
        report: &mut dyn FnMut(KernelEvent),
    ) -> io::Result<()>;
}

/// A persistent backend over the kernel queue `K`.
pub(super) struct PersistentBackend<K> {
    kernel: K,
    table: InterestTable,
    changes: Vec<Change>,
    frontend_writable: bool,
    wakeup: Readiness,
    frontend: Readiness,
}

/// Route one kernel event to the table or our own readiness.
fn record(
    table: &mut InterestTable,
    wakeup: &mut Readiness,
    frontend: &mut Readiness,
    event: KernelEvent,
) {
    match event {
        KernelEvent::Ready {
            token: WAKEUP_TOKEN,
            readiness,
        } => *wakeup |= readiness,
        KernelEvent::Ready {
            token: FRONTEND_TOKEN,
            readiness,
        } => *frontend |= readiness,
        KernelEvent::Ready { token, readiness } => table.set_ready(token, readiness),
        KernelEvent::Refused { fd } => table.change_failed(fd),
        KernelEvent::Recovered => table.recovered(),
    }
}

impl<K: KernelQueue> PersistentBackend<K> {
    pub fn new(kernel: K) -> PersistentBackend<K> {
        PersistentBackend {
            kernel,
            table: InterestTable::new(),
            changes: Vec::new(),
            frontend_writable: false,
            wakeup: Readiness::EMPTY,
            frontend: Readiness::EMPTY,
        }
    }

    /// The kernel queue itself (backend-specific calls: io_uring's guest frames, test hooks).
    #[cfg(target_os = "linux")]
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    #[cfg(target_os = "linux")]
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    pub fn table(&self) -> &InterestTable {
        &self.table
    }

    pub fn begin_fill(&mut self) {
        self.table.begin_fill();
        self.wakeup = Readiness::EMPTY;
        self.frontend = Readiness::EMPTY;
    }

    pub fn add(&mut self, fd: RawFd, events: Readiness) -> Option<Slot> {
        self.table.add(fd, events)
    }

    pub fn opened(&mut self, fd: RawFd) {
        self.table.opened(fd);
    }

    pub fn closing(&mut self, fd: RawFd) {
        self.table.closing(fd, &mut self.changes);
        let (table, wakeup, frontend) = (&mut self.table, &mut self.wakeup, &mut self.frontend);
        self.kernel
            .closing(&self.changes, &mut |e| record(table, wakeup, frontend, e));
        self.changes.clear();
    }

    pub(crate) fn watch_frontend_writable(&mut self, on: bool) {
        // The frontend stays registered for the process's life: a failed change leaves
        // readability alone driving the loop, and the next iteration tries again.
        if on != self.frontend_writable && self.kernel.watch_frontend_writable(on) {
            self.frontend_writable = on;
        }
    }

    pub fn wait(&mut self, timeout_ms: c_int) -> io::Result<()> {
        self.table.diff(&mut self.changes);
        let registered = self.table.registered();
        let (table, wakeup, frontend) = (&mut self.table, &mut self.wakeup, &mut self.frontend);
        let result = self
            .kernel
            .submit_and_wait(&self.changes, registered, timeout_ms, &mut |e| {
                record(table, wakeup, frontend, e)
            });
        self.changes.clear();
        result
    }

    pub fn revents(&self, slot: Slot) -> Readiness {
        self.table.revents(slot)
    }

    /// The slot is the descriptor itself.
    pub fn slot_fd(&self, slot: Slot) -> Option<RawFd> {
        RawFd::try_from(slot.index()).ok()
    }

    pub fn own_revents(&self, which: Own) -> Readiness {
        match which {
            Own::Wakeup => self.wakeup,
            Own::Frontend => self.frontend,
        }
    }
}
