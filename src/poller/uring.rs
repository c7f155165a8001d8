//! The io_uring kernel calls (Linux): libslirp's sockets and the helper's own two descriptors
//! are watched by POLL_ADD requests that stay in the kernel across iterations; the interest
//! table's difference goes in as SQEs, and the wait (with libslirp's timeout, as the enter's
//! extended argument) happens in the same `io_uring_enter` that submits them.
//!
//! Level semantics (design rule 2). An io_uring poll reports a wake-up, not a level: a
//! multishot poll posts nothing more for a socket libslirp left unread. So each poll is
//! one-shot and a fired one is re-armed in the next enter; arming checks the level at once,
//! so a socket still ready completes in that same enter, as poll(2) would report it again.
//! That costs one SQE per ready fd, what a multishot poll would need too (a re-check per
//! fired fd), without the "terminated multishot" states. A changed interest of an armed poll
//! is one POLL_REMOVE with the update flags (new events and a new arm parity, in place; the
//! `io-uring` crate has no builder for them, so `poll_update` sets the three fields of the
//! kernel's SQE ABI itself); should the poll have completed meanwhile, the update fails and
//! the fd is re-armed with the new events by the next enter.
//!
//! Completions are not answers. A poll woken by a socket reports the wake-up's mask, not a
//! fresh poll (a TCP socket's "data arrived" wake-up says IN and PRI whether or not urgent
//! data came, and libslirp takes PRI for urgent data), and a completion posted while the loop
//! was busy can be stale by the time it is reaped. So the fds of an iteration's completions
//! are polled once more with one poll(2) (timeout 0) over just them, and poll(2)'s answer is
//! the one given: O(ready fds), one call, and exactly poll(2)'s meaning. An fd with no
//! completion has an armed poll that checked the level when armed and was not woken since:
//! not ready, as poll(2) would say.
//!
//! Each arm carries a parity bit (bit 31 of the user data: fds never reach it) so a late CQE
//! of an earlier arm of the same registration is told apart from the current one.
//!
//! Guest frames (when the loop asks for it, `UringQueue::new` with a slot size): the frontend
//! socket is not polled for reading; one multishot RECV puts each record into a slot of a
//! provided buffer ring (`uring_rx.rs`), and its completions go to the RX ring, which hands
//! the frames to libslirp and the slots back. A RECV that ends (no more buffers, an empty
//! record, an error) is re-armed by the next enter, after the slots came back. The frontend is
//! then polled only for writability, while frames wait to go.
//!
//! Frames to the guest: what the TX ring holds at the end of an iteration goes as one SEND per
//! frame (MSG_EOR|MSG_DONTWAIT, so a full socket fails at once with EAGAIN), queued to the
//! next enter, the one that waits: no system call of its own. The SENDs are linked, so they
//! run in order and a failure cancels the rest (which stay queued), and post a completion
//! only when they fail (SKIP_SUCCESS), so a batch that went wakes nothing. A SEND with
//! MSG_DONTWAIT completes within the enter that submits it (the chain's next link runs as
//! task work before the enter returns to user space), so the outcome is known when the wait
//! returns: the frames up to the first failure went.
//!
//! Security: the ring is created disabled, restricted to POLL_ADD, POLL_REMOVE and (with guest
//! frames through the ring) RECV with BUFFER_SELECT as the only SQE flag, and no register
//! operation at all, then enabled: a descriptor
//! leaked into the ring can do nothing but poll and receive, whatever seccomp lets through.

use super::interest::Change;
use super::persistent::{KernelEvent, KernelQueue, FRONTEND_TOKEN, WAKEUP_TOKEN};
use super::uring_rx::{RingRecord, RingRecords, RxBuffers, FRONTEND_GROUP};
use super::Readiness;
use io_uring::{cqueue, opcode, register::Restriction, types, IoUring};
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

/// Submission queue entries: changes beyond this go in more than one enter (the first ones
/// without waiting).
const SQ_ENTRIES: u32 = 256;
/// Completion queue entries; more outstanding completions wait in the kernel's overflow list
/// (IORING_FEAT_NODROP) and are flushed by the next enter.
const CQ_ENTRIES: u32 = 4096;
/// The arm parity bit of a poll's user data.
const PARITY: u64 = 1 << 31;
/// User data of POLL_REMOVE requests: their completions say nothing we act on.
const REMOVE_DATA: u64 = u64::MAX - 2;

/// POLL_REMOVE's update flags (`IORING_POLL_UPDATE_EVENTS`, `IORING_POLL_UPDATE_USER_DATA`
/// of `<linux/io_uring.h>`), in the SQE's `len`.
const POLL_UPDATE_EVENTS: u32 = 1 << 1;
const POLL_UPDATE_USER_DATA: u32 = 1 << 2;

/// User data of POLL_REMOVE update requests: this in the high half, the fd in the low one.
const UPDATE_HIGH: u64 = 0xffff_fffe << 32;

/// User data of a test's foreign request (`UringQueue::submit_foreign`).
const FOREIGN_DATA: u64 = u64::MAX - 3;
/// User data of the frontend's multishot receive.
const RECV_DATA: u64 = u64::MAX - 4;
/// User data of a frame's SEND: this in the high half, its place in the batch in the low one.
const SEND_HIGH: u64 = 0xffff_fffd << 32;

/// Flags of a frame's SEND: one record each, never blocking (a full socket fails the SEND
/// with EAGAIN at once instead of the ring waiting for room), no SIGPIPE.
const SEND_FLAGS: i32 = libc::MSG_EOR | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// A request the loop never makes, for tests that the ring refuses it: what a hijacked loop
/// would try with the ring if seccomp were its only guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignOp {
    /// Open `/etc/passwd` for reading.
    OpenAt,
    /// A new IPv4 TCP socket.
    Socket,
    /// Connect `fd` to 127.0.0.1:9.
    Connect(RawFd),
    /// Accept on `fd`.
    Accept(RawFd),
}

/// The opcodes the ring may run, and nothing else: RECV and SEND only when guest frames go
/// through the ring.
pub(crate) const OPCODES: [u8; 4] = [
    opcode::PollAdd::CODE,
    opcode::PollRemove::CODE,
    opcode::RecvMulti::CODE,
    opcode::Send::CODE,
];

/// How the frames handed to the ring with `push_sends` fared, once the enter that submitted
/// them returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    /// Frames that went: a prefix (a failed SEND cancels the ones linked after it).
    pub sent: usize,
    /// The failed frame's error (positive errno), when one failed.
    pub error: Option<i32>,
}

/// The environment variable that makes ring creation fail as a kernel without io_uring would
/// (tests of the fallback; read once, at creation).
pub const FORCE_FAILURE_ENV: &str = "BHYVE_SLIRP_HELPER_TEST_NO_IO_URING";

fn to_poll(events: Readiness) -> u32 {
    let mut out = 0;
    for (bit, flag) in [
        (Readiness::IN, libc::POLLIN),
        (Readiness::OUT, libc::POLLOUT),
        (Readiness::PRI, libc::POLLPRI),
        (Readiness::RDHUP, libc::POLLRDHUP),
    ] {
        if events.contains(bit) {
            out |= flag as u32;
        }
    }
    // ERR and HUP are always reported, as by poll(2).
    out
}

fn from_poll(mask: u32) -> Readiness {
    let mut out = Readiness::EMPTY;
    for (flag, bit) in [
        (libc::POLLIN, Readiness::IN),
        (libc::POLLOUT, Readiness::OUT),
        (libc::POLLPRI, Readiness::PRI),
        (libc::POLLERR, Readiness::ERR),
        (libc::POLLHUP, Readiness::HUP),
        (libc::POLLRDHUP, Readiness::RDHUP),
    ] {
        if mask & flag as u32 != 0 {
            out |= bit;
        }
    }
    out
}

/// One registration as the ring holds it.
#[derive(Debug, Clone, Copy, Default)]
struct Watch {
    /// The table's token (or one of our own), without the parity bit.
    token: u64,
    events: Readiness,
    /// The table holds this registration.
    live: bool,
    /// A poll request is in the kernel (not yet completed).
    armed: bool,
    /// Parity of the current arm.
    parity: bool,
}

impl Watch {
    fn user_data(&self) -> u64 {
        self.token ^ if self.parity { PARITY } else { 0 }
    }
}

/// Which watch a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Wakeup,
    Frontend,
    Slirp(RawFd),
    Remove,
    /// An in-place update of the fd's poll.
    Update(RawFd),
    /// The frontend's multishot receive.
    Recv,
    /// A frame's SEND, by its place in the batch.
    Send(usize),
}

fn target(user_data: u64) -> Target {
    if user_data == REMOVE_DATA {
        return Target::Remove;
    }
    if user_data == RECV_DATA {
        return Target::Recv;
    }
    if user_data & !0xffff_ffff == SEND_HIGH {
        return Target::Send((user_data & 0xffff_ffff) as usize);
    }
    if user_data & !0xffff_ffff == UPDATE_HIGH {
        return Target::Update((user_data & 0x7fff_ffff) as RawFd);
    }
    let base = user_data & !PARITY;
    if base == WAKEUP_TOKEN & !PARITY {
        Target::Wakeup
    } else if base == FRONTEND_TOKEN & !PARITY {
        Target::Frontend
    } else {
        Target::Slirp((user_data & 0x7fff_ffff) as RawFd)
    }
}

pub struct UringQueue {
    ring: IoUring,
    /// By fd; grows to the highest descriptor number seen, never shrinks.
    watches: Vec<Watch>,
    wakeup: (RawFd, Watch),
    frontend: (RawFd, Watch),
    /// Fds whose poll completed in the last wait: re-armed in the next enter.
    fired: Vec<RawFd>,
    /// The fds of this wait's completions, to ask poll(2) about, and their tokens and
    /// completion masks (kept should poll(2) fail).
    woken: Vec<libc::pollfd>,
    woken_tokens: Vec<(u64, Readiness)>,
    /// Guest frames through the ring (declared after `ring`: dropped after it).
    recv: Option<FrontendRecv>,
}

/// The frontend's multishot receive and what it delivered since the loop last took it.
struct FrontendRecv {
    buffers: Rc<RxBuffers>,
    /// A RECV is in the kernel.
    armed: bool,
    /// Completions not yet taken by the RX ring (at most one per slot, plus the one that
    /// ended the receive): never grows past its first capacity.
    records: Vec<RingRecord>,
    /// Frames handed over by `push_sends` whose enter has not yet returned (0: none).
    sends: usize,
    /// The first of them that failed, and its error (not ECANCELED: the ones after it).
    send_failed: Option<(usize, i32)>,
    /// The outcome of the last batch, until the TX ring takes it.
    send_outcome: Option<SendOutcome>,
}

impl UringQueue {
    /// A ring watching the two own descriptors; with `rx_slot`, guest frames of up to that
    /// many bytes come through the ring too (when the kernel cannot register the buffer ring,
    /// one log line, and the frontend is polled and read as with epoll).
    pub fn new(wakeup: RawFd, frontend: RawFd, rx_slot: Option<usize>) -> io::Result<UringQueue> {
        if std::env::var_os(FORCE_FAILURE_ENV).is_some() {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_r_disabled()
            .build(SQ_ENTRIES)?;
        let buffers = match rx_slot.map(RxBuffers::new).transpose()? {
            // SAFETY: the ring's memory stays valid as long as the ring: the queue holds the
            // buffers (`recv`, dropped after `ring`), and the RX ring shares them by `Rc`.
            Some(buffers) => match unsafe {
                ring.submitter().register_buf_ring_with_flags(
                    buffers.ring_addr(),
                    buffers.count(),
                    FRONTEND_GROUP,
                    0,
                )
            } {
                Ok(()) => Some(buffers),
                Err(e) => {
                    crate::diag::warn(&format!(
                        "io_uring buffer ring unavailable ({e}): guest frames read with recvmmsg"
                    ));
                    None
                }
            },
            None => None,
        };
        let opcodes = if buffers.is_some() {
            &OPCODES[..]
        } else {
            &OPCODES[..2]
        };
        let mut allowed: Vec<Restriction> =
            opcodes.iter().copied().map(Restriction::sqe_op).collect();
        if buffers.is_some() {
            // The RECV picks its slot from the buffer ring; a batch's SENDs are linked (in
            // order, the rest cancelled after a failure) and post nothing when they succeed.
            use io_uring::squeue::Flags;
            allowed.push(Restriction::sqe_flags_allowed(
                (Flags::BUFFER_SELECT | Flags::IO_LINK | Flags::SKIP_SUCCESS).bits(),
            ));
        }
        ring.submitter().register_restrictions(&mut allowed)?;
        ring.submitter().register_enable_rings()?;
        let records = Vec::with_capacity(buffers.as_ref().map_or(0, |b| b.count().into()) + 1);
        let recv = buffers.map(|buffers| FrontendRecv {
            buffers,
            armed: false,
            records,
            sends: 0,
            send_failed: None,
            send_outcome: None,
        });
        let own = |token, events| Watch {
            token,
            events,
            live: true,
            armed: false,
            parity: false,
        };
        // With the RECV, the frontend's poll is for writability alone, armed only while
        // frames wait to go (the receive reports EOF and errors itself).
        let frontend_watch = if recv.is_some() {
            Watch {
                live: false,
                ..own(FRONTEND_TOKEN, Readiness::OUT)
            }
        } else {
            own(FRONTEND_TOKEN, Readiness::IN | Readiness::RDHUP)
        };
        let mut queue = UringQueue {
            ring,
            watches: Vec::new(),
            wakeup: (wakeup, own(WAKEUP_TOKEN, Readiness::IN)),
            frontend: (frontend, frontend_watch),
            fired: Vec::new(),
            woken: Vec::new(),
            woken_tokens: Vec::new(),
            recv,
        };
        queue.arm_own(Target::Wakeup)?;
        if queue.frontend.1.live {
            queue.arm_own(Target::Frontend)?;
        }
        queue.arm_recv()?;
        queue.ring.submit()?;
        Ok(queue)
    }

    /// Arm the frontend's multishot receive, if guest frames come through the ring and it
    /// is not armed. Only when every slot is back (the RX ring took the records, and gives
    /// the slots back as it reads them): a receive armed without slots would end at once.
    fn arm_recv(&mut self) -> io::Result<()> {
        let fd = self.frontend.0;
        let Some(recv) = &mut self.recv else {
            return Ok(());
        };
        if recv.armed || !recv.records.is_empty() {
            return Ok(());
        }
        recv.armed = true;
        let entry = opcode::RecvMulti::new(types::Fd(fd), FRONTEND_GROUP)
            .build()
            .user_data(RECV_DATA);
        self.push(entry)
    }

    /// Whether frames to the guest may go through the ring (`push_sends`).
    pub(crate) fn sends_frames(&self) -> bool {
        self.recv.as_ref().is_some_and(|r| r.sends == 0)
    }

    /// Queue one linked SEND per frame, to go in the next enter (the waiting one): how many
    /// were queued (0 when a batch is still in the ring or the engine does not send).
    ///
    /// # Safety
    /// Each frame's bytes must stay allocated and unchanged until [`Self::take_send_outcome`]
    /// returned this batch's outcome: the kernel reads them during that enter.
    pub(crate) unsafe fn push_sends<'a>(
        &mut self,
        frames: impl Iterator<Item = &'a [u8]>,
        count: usize,
    ) -> usize {
        let fd = self.frontend.0;
        if !self.sends_frames() || count == 0 {
            return 0;
        }
        use io_uring::squeue::Flags;
        let mut pushed = 0;
        for (i, frame) in frames.take(count).enumerate() {
            let mut flags = Flags::SKIP_SUCCESS;
            if i + 1 < count {
                flags |= Flags::IO_LINK;
            }
            let entry = opcode::Send::new(types::Fd(fd), frame.as_ptr(), frame.len() as u32)
                .flags(SEND_FLAGS)
                .build()
                .flags(flags)
                .user_data(SEND_HIGH | i as u64);
            // SAFETY: the caller keeps the frame's bytes until the outcome (see above).
            if unsafe { self.ring.submission().push(&entry) }.is_err() {
                // No room: the batch ends here, unlinked (a full queue is submitted by the
                // next enter as it is). The rest goes with the next batch.
                break;
            }
            pushed += 1;
        }
        // Should the queue have filled, the last SEND queued is linked to one that never
        // came: the kernel ends a chain at the end of a submission, so it goes as the last.
        if let Some(recv) = &mut self.recv {
            recv.sends = pushed;
            recv.send_failed = None;
        }
        pushed
    }

    /// The outcome of the batch `push_sends` queued, once the enter that submitted it
    /// returned (every SEND of it ran: a SEND with MSG_DONTWAIT completes in the enter).
    pub(crate) fn take_send_outcome(&mut self) -> Option<SendOutcome> {
        self.recv.as_mut()?.send_outcome.take()
    }

    /// After an enter: if it submitted the batch, its outcome.
    fn settle_sends(&mut self) {
        let submitted = self.ring.submission().is_empty();
        let Some(recv) = &mut self.recv else { return };
        if recv.sends == 0 || !submitted {
            return;
        }
        let handed = std::mem::take(&mut recv.sends);
        let (sent, error) = match recv.send_failed.take() {
            Some((index, errno)) => (index.min(handed), Some(errno)),
            None => (handed, None),
        };
        recv.send_outcome = Some(SendOutcome { sent, error });
    }

    /// Hand the receive's completions since the last call to `into` (by swapping the two
    /// preallocated lists: nothing is copied or allocated). False when there were none.
    pub(crate) fn take_records(&mut self, into: &mut RingRecords) -> bool {
        let Some(recv) = &mut self.recv else {
            return false;
        };
        if into.buffers.is_none() {
            into.buffers = Some(Rc::clone(&recv.buffers));
            into.records = Vec::with_capacity(recv.records.capacity());
        }
        if recv.records.is_empty() {
            return false;
        }
        into.records.clear();
        std::mem::swap(&mut recv.records, &mut into.records);
        true
    }

    /// Queue one SQE, submitting (without waiting) first when the queue is full.
    fn push(&mut self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: POLL_ADD, POLL_REMOVE and the buffer-selecting RECV reference no user
            // memory through the SQE (the RECV's slots are the registered buffer ring's, which
            // lives as long as the ring): nothing must outlive the call.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.submit_now()?;
        }
    }

    /// Submit what is queued without waiting; a full completion queue is drained first.
    fn submit_now(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn add_poll(&mut self, fd: RawFd, watch: &mut Watch) -> io::Result<()> {
        watch.parity = !watch.parity;
        watch.armed = true;
        let entry = opcode::PollAdd::new(types::Fd(fd), to_poll(watch.events))
            .build()
            .user_data(watch.user_data());
        self.push(entry)
    }

    fn remove_poll(&mut self, watch: &mut Watch) -> io::Result<()> {
        if !watch.armed {
            return Ok(());
        }
        watch.armed = false;
        let entry = opcode::PollRemove::new(watch.user_data())
            .build()
            .user_data(REMOVE_DATA);
        self.push(entry)
    }

    /// Change the events of `fd`'s armed poll in place, under a new arm parity.
    fn update_poll(&mut self, fd: RawFd, watch: &mut Watch) -> io::Result<()> {
        let old = watch.user_data();
        watch.parity = !watch.parity;
        let mut entry = opcode::PollRemove::new(old)
            .build()
            .user_data(UPDATE_HIGH | u64::from(fd as u32));
        let sqe = (&raw mut entry).cast::<u8>();
        // SAFETY: `squeue::Entry` is `repr(C)` over the kernel's 64-byte `io_uring_sqe`, whose
        // layout is the kernel ABI: `off` at byte 8 (here the new user data), `len` at 24
        // (the update flags), `poll32_events` at 28. Unaligned writes of plain integers inside
        // the entry, which this function owns.
        unsafe {
            sqe.add(8).cast::<u64>().write_unaligned(watch.user_data());
            sqe.add(24)
                .cast::<u32>()
                .write_unaligned(POLL_UPDATE_EVENTS | POLL_UPDATE_USER_DATA);
            sqe.add(28)
                .cast::<u32>()
                .write_unaligned(to_poll(watch.events));
        }
        self.push(entry)
    }

    fn arm_own(&mut self, which: Target) -> io::Result<()> {
        let (fd, mut watch) = match which {
            Target::Wakeup => self.wakeup,
            _ => self.frontend,
        };
        let result = self.add_poll(fd, &mut watch);
        match which {
            Target::Wakeup => self.wakeup.1 = watch,
            _ => self.frontend.1 = watch,
        }
        result
    }

    fn watch(&mut self, fd: RawFd) -> &mut Watch {
        let i = fd as usize;
        if i >= self.watches.len() {
            self.grow(i);
        }
        &mut self.watches[i]
    }

    #[cold]
    fn grow(&mut self, i: usize) {
        self.watches.resize(i + 1, Watch::default());
    }

    /// Turn changes into SQEs. A change the ring cannot take (no room and a failed submit)
    /// is reported refused, so the table retries it as an add.
    fn apply(&mut self, changes: &[Change], report: &mut dyn FnMut(KernelEvent)) {
        for &change in changes {
            let (fd, result) = match change {
                Change::Add { fd, events, token } | Change::Modify { fd, events, token } => {
                    if fd < 0 {
                        continue;
                    }
                    let mut watch = *self.watch(fd);
                    let modify = matches!(change, Change::Modify { .. });
                    let result = if modify && watch.live && watch.armed && watch.token == token {
                        watch.events = events;
                        self.update_poll(fd, &mut watch)
                    } else {
                        // An earlier registration of the number (an earlier file) or a poll
                        // that fired: removed in the same enter, before the new poll.
                        let mut result = self.remove_poll(&mut watch);
                        watch.token = token;
                        watch.events = events;
                        watch.live = true;
                        if result.is_ok() {
                            result = self.add_poll(fd, &mut watch);
                        }
                        result
                    };
                    *self.watch(fd) = watch;
                    (fd, result)
                }
                Change::Delete { fd, .. } => {
                    if fd < 0 {
                        continue;
                    }
                    let mut watch = *self.watch(fd);
                    let result = self.remove_poll(&mut watch);
                    watch.live = false;
                    *self.watch(fd) = watch;
                    (fd, result)
                }
            };
            if result.is_err() {
                if let Change::Add { .. } | Change::Modify { .. } = change {
                    report(KernelEvent::Refused { fd });
                }
            }
        }
    }

    /// Re-arm the polls that completed in the last wait and are still wanted.
    fn rearm(&mut self, report: &mut dyn FnMut(KernelEvent)) -> io::Result<()> {
        for i in 0..self.fired.len() {
            let fd = self.fired[i];
            let mut watch = *self.watch(fd);
            if watch.live && !watch.armed {
                if self.add_poll(fd, &mut watch).is_err() {
                    watch.armed = false;
                    watch.live = false;
                    report(KernelEvent::Refused { fd });
                }
                *self.watch(fd) = watch;
            }
        }
        self.fired.clear();
        for which in [Target::Wakeup, Target::Frontend] {
            let watch = match which {
                Target::Wakeup => self.wakeup.1,
                _ => self.frontend.1,
            };
            if watch.live && !watch.armed {
                self.arm_own(which)?;
            }
        }
        self.arm_recv()
    }

    /// Take every completion the ring holds (and the kernel's overflow list).
    fn reap(&mut self, report: &mut dyn FnMut(KernelEvent)) {
        loop {
            // One completion at a time: the view is dropped (and the head given back to the
            // kernel) before the completion is handled.
            let mut any = false;
            loop {
                let next = self.ring.completion().next();
                let Some(cqe) = next else { break };
                any = true;
                self.complete(cqe.user_data(), cqe.result(), cqe.flags(), report);
            }
            // Completions the CQ had no room for wait in the kernel until the next enter.
            let pending = self.ring.submission().cq_overflow();
            if !(any && pending) || self.submit_now().is_err() {
                return;
            }
        }
    }

    fn complete(
        &mut self,
        user_data: u64,
        result: i32,
        flags: u32,
        report: &mut dyn FnMut(KernelEvent),
    ) {
        let which = target(user_data);
        let watch = match which {
            Target::Remove => return,
            Target::Send(index) => {
                // Only failures post (SKIP_SUCCESS): the first failed frame has the lowest
                // index; the ones linked after it are ECANCELED.
                if let Some(recv) = &mut self.recv {
                    if result < 0
                        && recv.sends > 0
                        && recv.send_failed.is_none_or(|(first, _)| index < first)
                    {
                        recv.send_failed = Some((index, -result));
                    }
                }
                return;
            }
            Target::Recv => {
                if let Some(recv) = &mut self.recv {
                    if !cqueue::more(flags) {
                        recv.armed = false;
                    }
                    // Out of slots: the receive ended, the data waits in the socket until the
                    // slots are back and the next enter re-arms it. Nothing to hand over.
                    let slot = cqueue::buffer_select(flags);
                    if result != -libc::ENOBUFS || slot.is_some() {
                        recv.records.push(RingRecord { slot, result });
                    }
                }
                return;
            }
            Target::Update(fd) => {
                // The poll completed before the update reached it (ENOENT, EALREADY): its
                // completion, under the old parity, was taken as woken; re-arm with the new
                // events in the next enter.
                if result < 0 {
                    if let Some(watch) = self.watches.get_mut(fd as usize) {
                        if watch.live && watch.armed {
                            watch.armed = false;
                            self.fired.push(fd);
                        }
                    }
                }
                return;
            }
            Target::Wakeup => &mut self.wakeup.1,
            Target::Frontend => &mut self.frontend.1,
            Target::Slirp(fd) => {
                if fd as usize >= self.watches.len() {
                    return;
                }
                &mut self.watches[fd as usize]
            }
        };
        if result == -libc::ECANCELED || !watch.armed {
            return;
        }
        if watch.user_data() != user_data {
            // The previous arm of a live registration completed before its update reached it:
            // the fd may be ready, so poll(2) is asked (answers stay exact either way). Any
            // other earlier arm: ignored; the current arm checks the level itself.
            if let Target::Slirp(fd) = which {
                if watch.live && user_data == watch.user_data() ^ PARITY && result >= 0 {
                    let (token, asked) = (watch.token, watch.events);
                    self.woken.push(libc::pollfd {
                        fd,
                        events: to_poll(asked) as libc::c_short,
                        revents: 0,
                    });
                    self.woken_tokens.push((token, from_poll(result as u32)));
                }
            }
            return;
        }
        watch.armed = false;
        let token = watch.token;
        let live = watch.live;
        if result < 0 {
            // EBADF and the like: the number is not pollable (closed). Our own descriptors
            // stay open for the loop's life; re-arming them would spin, so they stay off.
            if let Target::Slirp(fd) = which {
                watch.live = false;
                report(KernelEvent::Refused { fd });
            }
            return;
        }
        let readiness = from_poll(result as u32);
        let asked = watch.events;
        if let Target::Slirp(fd) = which {
            if live {
                self.fired.push(fd);
            }
            self.woken.push(libc::pollfd {
                fd,
                events: to_poll(asked) as libc::c_short,
                revents: 0,
            });
            self.woken_tokens.push((token, readiness));
            return;
        }
        report(KernelEvent::Ready { token, readiness });
    }

    /// poll(2)'s answer for the fds of this wait's completions (see the module's note).
    fn answer_woken(&mut self, report: &mut dyn FnMut(KernelEvent)) {
        if self.woken.is_empty() {
            return;
        }
        let n = self.woken.len() as libc::nfds_t;
        // SAFETY: `woken` is `n` valid pollfds, exclusively borrowed for the call; a timeout
        // of 0 never blocks. A closed number answers POLLNVAL, not undefined behaviour.
        let result = unsafe { libc::poll(self.woken.as_mut_ptr(), n, 0) };
        for (pfd, &(token, woke)) in self.woken.iter().zip(&self.woken_tokens) {
            // Should poll(2) fail (ENOMEM), the completion's word stands: libslirp's reads
            // and writes are non-blocking, and the re-armed poll checks the level again.
            let readiness = if result < 0 {
                woke
            } else {
                from_poll(pfd.revents as u32)
            };
            report(KernelEvent::Ready { token, readiness });
        }
        self.woken.clear();
        self.woken_tokens.clear();
    }
}

impl UringQueue {
    /// Submit `op` and wait for its completion: its result (`-EACCES` when the ring's
    /// restrictions refuse it). Test use only; other completions reaped meanwhile are
    /// dropped (their polls are re-armed by the next wait).
    pub(crate) fn submit_foreign(&mut self, op: ForeignOp) -> io::Result<i32> {
        let path = c"/etc/passwd";
        // SAFETY: an all-zero sockaddr_in is a valid value; the fields are set below.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = 9u16.to_be();
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let entry = match op {
            ForeignOp::OpenAt => {
                opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr()).build()
            }
            ForeignOp::Socket => opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0).build(),
            ForeignOp::Connect(fd) => opcode::Connect::new(
                types::Fd(fd),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
            .build(),
            ForeignOp::Accept(fd) => {
                opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .build()
            }
        }
        .user_data(FOREIGN_DATA);
        self.push(entry)?;
        // `path` and `addr` live until the completion is seen: a ring that ran the request
        // would read them.
        loop {
            self.ring.submit_and_wait(1)?;
            loop {
                let next = self.ring.completion().next();
                let Some(cqe) = next else { break };
                if cqe.user_data() == FOREIGN_DATA {
                    return Ok(cqe.result());
                }
                self.complete(cqe.user_data(), cqe.result(), cqe.flags(), &mut |_| {});
            }
            self.woken.clear();
            self.woken_tokens.clear();
        }
    }
}

impl KernelQueue for UringQueue {
    /// The ring holds a reference to each polled file: remove now, and submit at once, so the
    /// file really goes with libslirp's close (a TCP FIN is not held back to the next wait).
    fn closing(&mut self, deletes: &[Change], report: &mut dyn FnMut(KernelEvent)) {
        self.apply(deletes, report);
        let _ = self.submit_now();
    }

    fn watch_frontend_writable(&mut self, on: bool) -> bool {
        let (fd, mut watch) = self.frontend;
        let mut ok = true;
        if self.recv.is_some() {
            // The poll is for writability alone: armed by the next enter, or removed.
            watch.live = on;
            if !on {
                ok = self.remove_poll(&mut watch).is_ok();
            }
            self.frontend.1 = watch;
            return ok;
        }
        watch.events =
            Readiness::IN | Readiness::RDHUP | if on { Readiness::OUT } else { Readiness::EMPTY };
        if watch.armed {
            ok = self.remove_poll(&mut watch).is_ok() && self.add_poll(fd, &mut watch).is_ok();
        }
        self.frontend.1 = watch;
        ok
    }

    fn submit_and_wait(
        &mut self,
        changes: &[Change],
        _registered: usize,
        timeout_ms: c_int,
        report: &mut dyn FnMut(KernelEvent),
    ) -> io::Result<()> {
        self.apply(changes, report);
        self.rearm(report)?;
        let result = if timeout_ms < 0 {
            self.ring.submit_and_wait(1)
        } else if timeout_ms == 0 {
            // No wait: a zero timeout would still arm a kernel timer (measured: 17 µs an
            // iteration against epoll's 0.2 µs). The enter runs the completions' task work.
            self.ring.submit_and_wait(0)
        } else {
            let ms = i64::from(timeout_ms);
            let ts = types::Timespec::new()
                .sec((ms / 1000) as u64)
                .nsec(((ms % 1000) * 1_000_000) as u32);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        let result = match result {
            Ok(_) => Ok(()),
            // The timeout passed, or completions wait in the overflow list: reap them.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        };
        self.reap(report);
        self.settle_sends();
        self.answer_woken(report);
        result
    }
}

impl AsRawFd for UringQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_names_its_watch() {
        let slirp = Watch {
            token: super::super::interest::token(7, 3),
            parity: true,
            ..Watch::default()
        };
        assert_eq!(target(slirp.user_data()), Target::Slirp(7));
        for parity in [false, true] {
            let own = |token| Watch {
                token,
                parity,
                ..Watch::default()
            };
            assert_eq!(target(own(WAKEUP_TOKEN).user_data()), Target::Wakeup);
            assert_eq!(target(own(FRONTEND_TOKEN).user_data()), Target::Frontend);
        }
        assert_eq!(target(REMOVE_DATA), Target::Remove);
        let all = Readiness::IN | Readiness::OUT | Readiness::PRI | Readiness::RDHUP;
        assert_eq!(from_poll(to_poll(all)), all);
    }
}
