//! Readiness for libslirp's sockets plus the helper's own two descriptors (the wakeup pipe and
//! the frontend socket), behind one type whatever the backend.
//!
//! Owns: the per-iteration fill set (what `slirp_pollfds_fill` asked for) and the answers
//! `get_revents` gives back. Answers are poll(2)'s, whatever the backend (design rule 2).
//! Backends: `poll` (the C helper's design, kept as the reference and measured baseline) and
//! the persistent ones, which keep registrations in the kernel across iterations and submit
//! only the difference: one body (`persistent.rs`, with the interest table) over the kernel
//! calls of `epoll` (Linux) or `kqueue` (FreeBSD, macOS). A `match` on an enum, no trait
//! objects. Speaks its own readiness type; `crate::slirp` maps it to libslirp's bits.

#[cfg(target_os = "linux")]
mod epoll;
#[deny(unsafe_code)]
pub(crate) mod interest;
#[cfg(any(
    target_os = "freebsd",
    target_os = "macos",
    all(target_os = "linux", feature = "kqueue-model")
))]
#[deny(unsafe_code)]
mod kqueue;
#[cfg(all(target_os = "linux", feature = "kqueue-model"))]
mod kqueue_model;
#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "macos"))]
#[deny(unsafe_code)]
mod persistent;
mod poll;
#[deny(unsafe_code)]
mod readiness;
#[cfg(target_os = "linux")]
pub mod uring;
#[cfg(target_os = "linux")]
pub mod uring_rx;

pub use readiness::{Readiness, Slot};

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "macos"))]
use persistent::PersistentBackend;

/// Which loop design waits for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollerKind {
    /// `poll(2)` over an array rebuilt every iteration: the C helper's loop.
    Poll,
    /// Persistent epoll registrations, diffed each iteration (Linux).
    Epoll,
    /// Persistent kqueue knotes, the diff submitted in the waiting `kevent()` (FreeBSD, macOS).
    Kqueue,
    /// Persistent io_uring polls, the diff submitted in the waiting `io_uring_enter` (Linux);
    /// epoll when the kernel refuses a ring.
    IoUring,
}

impl PollerKind {
    /// The best backend of this platform.
    pub fn platform_default() -> PollerKind {
        if cfg!(target_os = "linux") {
            PollerKind::Epoll
        } else if cfg!(any(target_os = "freebsd", target_os = "macos")) {
            PollerKind::Kqueue
        } else {
            PollerKind::Poll
        }
    }

    /// A backend by name, if this platform has it.
    pub fn parse(name: &str) -> Option<PollerKind> {
        match name {
            "poll" => Some(PollerKind::Poll),
            "epoll" if cfg!(target_os = "linux") => Some(PollerKind::Epoll),
            "io_uring" if cfg!(target_os = "linux") => Some(PollerKind::IoUring),
            "kqueue" if cfg!(any(target_os = "freebsd", target_os = "macos")) => {
                Some(PollerKind::Kqueue)
            }
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PollerKind::Poll => "poll",
            PollerKind::Epoll => "epoll",
            PollerKind::Kqueue => "kqueue",
            PollerKind::IoUring => "io_uring",
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

// One per process, built once and never moved on the hot path: the size of the largest
// variant (the kqueue one, with its change and event lists inline) costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Poll(poll::PollBackend),
    #[cfg(target_os = "linux")]
    Epoll(PersistentBackend<epoll::EpollQueue>),
    #[cfg(target_os = "linux")]
    Uring(PersistentBackend<uring::UringQueue>),
    #[cfg(any(target_os = "freebsd", target_os = "macos"))]
    Kqueue(PersistentBackend<kqueue::KqueueQueue<kqueue::sys::KqueueFd>>),
    /// The kqueue backend's code over the model of FreeBSD's kqueue (tests on Linux).
    #[cfg(all(target_os = "linux", feature = "kqueue-model"))]
    KqueueModel(PersistentBackend<kqueue::KqueueQueue<kqueue_model::KqueueModel>>),
}

pub struct Poller {
    backend: Backend,
}

/// Forward a call to whichever backend is in use.
macro_rules! dispatch {
    ($self:expr, $b:ident => $call:expr) => {
        match $self {
            Backend::Poll($b) => $call,
            #[cfg(target_os = "linux")]
            Backend::Epoll($b) => $call,
            #[cfg(target_os = "linux")]
            Backend::Uring($b) => $call,
            #[cfg(any(target_os = "freebsd", target_os = "macos"))]
            Backend::Kqueue($b) => $call,
            #[cfg(all(target_os = "linux", feature = "kqueue-model"))]
            Backend::KqueueModel($b) => $call,
        }
    };
}

impl Poller {
    /// A poller of `kind` watching the helper's two own descriptors, registered now. It keeps
    /// only their numbers, as keys of the kernel's registrations and of poll(2)'s list, and
    /// never reads, writes or closes them: their owners keep them open for the poller's life
    /// (`Host` holds the wakeup pipe next to its poller; `main` holds the socket over both).
    pub fn new(
        kind: PollerKind,
        wakeup: BorrowedFd<'_>,
        frontend: BorrowedFd<'_>,
    ) -> io::Result<Poller> {
        Poller::with_guest_frames(kind, wakeup, frontend, None)
    }

    /// As `new`; with `rx_slot`, a backend that can move guest frames itself (io_uring: a
    /// multishot receive into a buffer ring) does, into slots of that many bytes, and hands
    /// them over with [`Poller::take_guest_frames`]. The others ignore it.
    pub fn with_guest_frames(
        kind: PollerKind,
        wakeup: BorrowedFd<'_>,
        frontend: BorrowedFd<'_>,
        rx_slot: Option<usize>,
    ) -> io::Result<Poller> {
        let _ = rx_slot;
        let (wakeup, frontend) = (wakeup.as_raw_fd(), frontend.as_raw_fd());
        let backend = match kind {
            PollerKind::Poll => Backend::Poll(poll::PollBackend::new(wakeup, frontend)),
            #[cfg(target_os = "linux")]
            PollerKind::Epoll => Backend::Epoll(PersistentBackend::new(epoll::EpollQueue::new(
                wakeup, frontend,
            )?)),
            #[cfg(target_os = "linux")]
            PollerKind::IoUring => match uring::UringQueue::new(wakeup, frontend, rx_slot) {
                Ok(queue) => Backend::Uring(PersistentBackend::new(queue)),
                // Missing (ENOSYS), disabled (EPERM from kernel.io_uring_disabled) or
                // filtered (a container's seccomp): the helper never fails to start for it.
                Err(e) => {
                    crate::diag::warn(&format!("io_uring unavailable ({e}): using epoll"));
                    Backend::Epoll(PersistentBackend::new(epoll::EpollQueue::new(
                        wakeup, frontend,
                    )?))
                }
            },
            #[cfg(any(target_os = "freebsd", target_os = "macos"))]
            PollerKind::Kqueue => Backend::Kqueue(PersistentBackend::new(
                kqueue::KqueueQueue::new(kqueue::sys::KqueueFd::new()?, wakeup, frontend),
            )),
            #[allow(unreachable_patterns)]
            _ => return Err(io::Error::from(io::ErrorKind::Unsupported)),
        };
        Ok(Poller { backend })
    }

    /// The kqueue backend's code running over a model of FreeBSD's kqueue semantics
    /// (`kqueue_model.rs`): for tests on Linux, where the real backend cannot run.
    #[cfg(all(target_os = "linux", feature = "kqueue-model"))]
    #[doc(hidden)]
    pub fn kqueue_over_model(wakeup: BorrowedFd<'_>, frontend: BorrowedFd<'_>) -> Poller {
        let (wakeup, frontend) = (wakeup.as_raw_fd(), frontend.as_raw_fd());
        let queue = kqueue::KqueueQueue::new(kqueue_model::KqueueModel::new(), wakeup, frontend);
        Poller {
            backend: Backend::KqueueModel(PersistentBackend::new(queue)),
        }
    }

    pub fn kind(&self) -> PollerKind {
        match self.backend {
            Backend::Poll(_) => PollerKind::Poll,
            #[cfg(target_os = "linux")]
            Backend::Epoll(_) => PollerKind::Epoll,
            #[cfg(target_os = "linux")]
            Backend::Uring(_) => PollerKind::IoUring,
            #[cfg(any(target_os = "freebsd", target_os = "macos"))]
            Backend::Kqueue(_) => PollerKind::Kqueue,
            #[cfg(all(target_os = "linux", feature = "kqueue-model"))]
            Backend::KqueueModel(_) => PollerKind::Kqueue,
        }
    }

    /// Submit a request the loop never makes to the io_uring engine's ring and return its
    /// result (negative errno), `None` when this poller is not io_uring. For the sandbox tests:
    /// the ring must refuse everything but polls.
    #[cfg(target_os = "linux")]
    #[doc(hidden)]
    pub fn submit_foreign(&mut self, op: uring::ForeignOp) -> Option<io::Result<i32>> {
        match &mut self.backend {
            Backend::Uring(b) => Some(b.kernel_mut().submit_foreign(op)),
            _ => None,
        }
    }

    /// The guest frames the backend received since the last call (io_uring with guest frames
    /// through the ring), swapped into `into`; false when there are none (and always for the
    /// other backends, whose frames the RX ring reads itself).
    #[cfg(target_os = "linux")]
    pub fn take_guest_frames(&mut self, into: &mut uring_rx::RingRecords) -> bool {
        match &mut self.backend {
            Backend::Uring(b) => b.kernel_mut().take_records(into),
            _ => false,
        }
    }

    /// Whether frames to the guest can go through the backend now (io_uring with guest
    /// frames through the ring, no batch in it): see [`Poller::push_frame_sends`].
    #[cfg(target_os = "linux")]
    pub(crate) fn sends_frames(&self) -> bool {
        match &self.backend {
            Backend::Uring(b) => b.kernel().sends_frames(),
            _ => false,
        }
    }

    /// Queue the first `count` of `frames` to go to the guest in the next wait's enter, in
    /// order: how many were queued (0 when the backend does not send frames).
    ///
    /// # Safety
    /// The frames' bytes must stay allocated and unchanged until
    /// [`Poller::take_send_outcome`] returned this batch's outcome.
    #[cfg(target_os = "linux")]
    pub(crate) unsafe fn push_frame_sends<'a>(
        &mut self,
        frames: impl Iterator<Item = &'a [u8]>,
        count: usize,
    ) -> usize {
        match &mut self.backend {
            // SAFETY: the caller's promise, passed on.
            Backend::Uring(b) => unsafe { b.kernel_mut().push_sends(frames, count) },
            _ => 0,
        }
    }

    /// How the batch `push_frame_sends` queued fared, once its enter returned (after a
    /// `wait`); `None` before, and when there was none.
    #[cfg(target_os = "linux")]
    pub(crate) fn take_send_outcome(&mut self) -> Option<uring::SendOutcome> {
        match &mut self.backend {
            Backend::Uring(b) => b.kernel_mut().take_send_outcome(),
            _ => None,
        }
    }

    /// Bookkeeping counters of a persistent backend.
    pub fn interest_counters(&self) -> Option<interest::InterestCounters> {
        match &self.backend {
            Backend::Poll(_) => None,
            #[cfg(target_os = "linux")]
            Backend::Epoll(b) => Some(b.table().counters),
            #[cfg(target_os = "linux")]
            Backend::Uring(b) => Some(b.table().counters),
            #[cfg(any(target_os = "freebsd", target_os = "macos"))]
            Backend::Kqueue(b) => Some(b.table().counters),
            #[cfg(all(target_os = "linux", feature = "kqueue-model"))]
            Backend::KqueueModel(b) => Some(b.table().counters),
        }
    }

    /// Start a new fill set (before `slirp_pollfds_fill`).
    pub fn begin_fill(&mut self) {
        dispatch!(&mut self.backend, b => b.begin_fill())
    }

    /// `add_poll`: watch `fd` for `events` this iteration; the slot libslirp keeps, `None`
    /// for a descriptor that cannot be watched (negative).
    pub fn add(&mut self, fd: RawFd, events: Readiness) -> Option<Slot> {
        dispatch!(&mut self.backend, b => b.add(fd, events))
    }

    /// Whether the frontend socket is watched for writability (frames are waiting to go).
    pub(crate) fn watch_frontend_writable(&mut self, on: bool) {
        dispatch!(&mut self.backend, b => b.watch_frontend_writable(on))
    }

    /// Submit this fill's changes and wait up to `timeout_ms` (-1: forever).
    /// `Err(Interrupted)` on a signal.
    pub fn wait(&mut self, timeout_ms: c_int) -> io::Result<()> {
        dispatch!(&mut self.backend, b => b.wait(timeout_ms))
    }

    /// After a wait: whether `revents` may answer non-zero for some index. The persistent
    /// backends know (their wait reported readiness for none of libslirp's sockets, or for
    /// some); the poll backend always says yes: it is the C helper's loop, kept exactly as
    /// the measured baseline.
    pub fn slirp_sockets_ready(&self) -> bool {
        match &self.backend {
            Backend::Poll(_) => true,
            #[cfg(target_os = "linux")]
            Backend::Epoll(b) => b.table().any_ready(),
            #[cfg(target_os = "linux")]
            Backend::Uring(b) => b.table().any_ready(),
            #[cfg(any(target_os = "freebsd", target_os = "macos"))]
            Backend::Kqueue(b) => b.table().any_ready(),
            #[cfg(all(target_os = "linux", feature = "kqueue-model"))]
            Backend::KqueueModel(b) => b.table().any_ready(),
        }
    }

    /// `get_revents`: poll(2)'s answer for `slot`, HUP masked when not asked for.
    pub fn revents(&self, slot: Slot) -> Readiness {
        dispatch!(&self.backend, b => b.revents(slot))
    }

    /// The descriptor behind a slot `add` returned this fill (`None` for any other number).
    pub(crate) fn slot_fd(&self, slot: Slot) -> Option<RawFd> {
        dispatch!(&self.backend, b => b.slot_fd(slot))
    }

    /// Readiness of one of the helper's own descriptors this iteration.
    pub fn own_revents(&self, which: Own) -> Readiness {
        dispatch!(&self.backend, b => b.own_revents(which))
    }

    /// Hint from libslirp: it opened `fd`.
    pub fn opened(&mut self, fd: RawFd) {
        dispatch!(&mut self.backend, b => b.opened(fd))
    }

    /// Hint from libslirp: `fd` is about to be closed.
    pub fn closing(&mut self, fd: RawFd) {
        dispatch!(&mut self.backend, b => b.closing(fd))
    }
}
