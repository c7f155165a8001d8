//! One loop iteration, as the C helper does it: fill, wait, `slirp_pollfds_poll`, timers,
//! drain the wakeup pipe, read guest frames into `slirp_input`, flush what is queued for the
//! guest. The poller and the frame I/O are seams: their backends change, this order does not.
//! Guest frames pass through the reassembler (IPv4 and IPv6) on their way in: libslirp is never
//! given a fragment (design note 10); then through the TCP coalescer, which merges consecutive
//! segments of one flow from the same batch (`crate::coalesce`).
//!
//! Owns: the [`Host`] libslirp's callbacks reach, and the decision to end the loop.

use crate::api::ApiServer;
use crate::coalesce::Coalescer;
use crate::echo6::Echo6Filter;
use crate::flow_budget::FlowBudget;
use crate::frames::{FrameLimit, FrameRx, FrameTx, RxStatus};
use crate::poller::{Own, Poller, PollerKind, Readiness, Slot};
use crate::reasm::{Reassembler, Verdict};
use crate::slirp::timers::Timers;
use crate::slirp::{SlirpHost, Stack};
use crate::stats::{self, LoopCounters};
use crate::sys::SIGNALS;
use crate::{diag, slirp};
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

/// Everything libslirp's callbacks touch. Reached only through `Stack::host` or a callback.
/// Borrows the frontend socket for `'fd` (`main` owns it, for the life of the process).
pub struct Host<'fd> {
    pub poller: Poller,
    pub tx: FrameTx<'fd>,
    timers: Timers,
    wakeup_read: OwnedFd,
    wakeup_write: OwnedFd,
    /// The guest is gone: sockets libslirp closes from now on reset their TCP peers.
    resetting: bool,
    pub counters: LoopCounters,
    /// libslirp's sockets against the descriptor limit; listeners that cannot accept.
    pub budget: FlowBudget,
    /// Guest ICMPv6 echo requests an older libslirp would log and drop (`None`: off).
    pub echo6: Option<Echo6Filter>,
}

impl<'fd> Host<'fd> {
    /// The wakeup pipe and the poller, registered with our two descriptors.
    pub fn new(
        kind: PollerKind,
        frontend: BorrowedFd<'fd>,
        limit: FrameLimit,
        batch: usize,
    ) -> io::Result<Host<'fd>> {
        use nix::fcntl::OFlag;
        let (wakeup_read, wakeup_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        // The io_uring engine receives guest frames itself, into slots the RX ring's size.
        let poller =
            Poller::with_guest_frames(kind, wakeup_read.as_fd(), frontend, Some(limit.rx_slot()))?;
        // Read after main raised the soft limit to the hard one: the budget is a share of
        // what the process can really open.
        let nofile = crate::sys::nofile_limit()
            .map_err(|e| io::Error::new(e.kind(), format!("getrlimit(RLIMIT_NOFILE): {e}")))?;
        let budget = FlowBudget::new(nofile);
        Ok(Host {
            poller,
            tx: FrameTx::new(frontend, limit, batch),
            timers: Timers::default(),
            wakeup_read,
            wakeup_write,
            resetting: false,
            counters: LoopCounters::default(),
            budget,
            echo6: None,
        })
    }

    /// From now on, every TCP connection libslirp closes (as `slirp_cleanup` closes them all)
    /// is reset rather than closed with a FIN: with the guest gone, a peer must not mistake a
    /// cut-off transfer for a complete one.
    pub fn reset_connections_on_close(&mut self) {
        self.resetting = true;
    }

    /// A guest frame as it came off bhyve's socket, into the capture file when there is one
    /// (before reassembly and coalescing). Off, this is one branch per frame.
    #[inline]
    fn capture_guest_frame(&mut self, frame: &[u8]) {
        if let Some(capture) = &mut self.tx.capture {
            capture.record(frame);
        }
    }

    /// Buffered capture records to the file: at the end of every iteration, and before a
    /// stats line so that its counters match the file.
    fn flush_capture(&mut self) {
        if let Some(capture) = &mut self.tx.capture {
            capture.flush();
        }
    }

    fn drain_wakeup(&mut self) {
        let mut buf = [0u8; 64];
        // Bytes are only tokens; EAGAIN ends the drain.
        while matches!(nix::unistd::read(&self.wakeup_read, &mut buf), Ok(n) if n > 0) {}
    }
}

impl SlirpHost for Host<'_> {
    fn send_packet(&mut self, frame: &[u8]) -> isize {
        self.tx.queue(frame)
    }

    fn guest_error(&mut self, msg: &str) {
        // Guest-controlled and possibly frequent: counted, logged only the first time.
        self.counters.guest_errors += 1;
        if self.counters.guest_errors == 1 {
            diag::warn(&format!("guest error (further ones only counted): {msg}"));
        }
    }

    fn add_poll(&mut self, fd: RawFd, events: Readiness) -> Option<Slot> {
        let events = self.budget.add(fd, events);
        self.poller.add(fd, events)
    }

    fn get_revents(&mut self, slot: Slot) -> Readiness {
        let revents = self.poller.revents(slot);
        if let Some(fd) = self.poller.slot_fd(slot) {
            self.budget.answered(fd, revents);
        }
        revents
    }

    fn register_poll_fd(&mut self, fd: RawFd) {
        // As the C helper: a send to a closed peer must fail, not raise SIGPIPE.
        crate::sys::set_nosigpipe(fd);
        self.budget.opened(fd);
        self.poller.opened(fd);
    }

    fn unregister_poll_fd(&mut self, fd: RawFd) {
        if self.resetting {
            crate::sys::reset_on_close(fd);
        }
        self.budget.closing(fd);
        self.poller.closing(fd);
    }

    fn notify(&mut self) {
        // A full pipe already holds a wakeup: EAGAIN is fine.
        let _ = nix::unistd::write(&self.wakeup_write, b"M");
    }

    fn timers(&mut self) -> &mut Timers {
        &mut self.timers
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// bhyve closed its end: exit 0.
    Hangup,
    /// SIGTERM/SIGINT: exit 0.
    Terminated,
}

/// Why the loop could not go on.
#[derive(Debug)]
pub enum LoopError {
    Io {
        what: &'static str,
        err: io::Error,
    },
    /// A callback panicked; the panic was stopped at the C boundary.
    CallbackPanicked,
}

impl std::fmt::Display for LoopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoopError::Io { what, err } => write!(f, "{what}: {err}"),
            LoopError::CallbackPanicked => {
                write!(f, "internal error: a libslirp callback panicked")
            }
        }
    }
}

impl std::error::Error for LoopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoopError::Io { err, .. } => Some(err),
            LoopError::CallbackPanicked => None,
        }
    }
}

/// The counters line for a stats dump.
pub fn stats_line(
    stack: &mut Stack<Host<'_>>,
    rx: &FrameRx<'_>,
    reasm: &Reassembler,
    coalescer: &Coalescer,
) -> String {
    let host = stack.host();
    host.flush_capture();
    let mut line = stats::line(&rx.counters, &host.tx.counters, &host.counters);
    line.push_str(&stats::reasm_fields(&reasm.counters));
    line.push_str(&stats::coalesce_fields(&coalescer.counters));
    line.push_str(&stats::budget_fields(
        host.budget.budget(),
        host.budget.held(),
        &host.budget.counters,
    ));
    line.push_str(&format!(" sandbox_refused={}", crate::sandbox::refused()));
    if let Some(capture) = &host.tx.capture {
        line.push_str(&stats::capture_fields(&capture.counters));
    }
    line.push_str(" poller=");
    line.push_str(host.poller.kind().name());
    if let Some(c) = host.poller.interest_counters() {
        line.push_str(&format!(
            " poll_adds={} poll_modifies={} poll_deletes={} poll_recoveries={} poll_stale={} \
             poll_walks_skipped={}",
            c.adds,
            c.modifies,
            c.deletes,
            c.recoveries,
            c.stale_events,
            host.counters.poll_walks_skipped
        ));
    }
    line
}

/// Run until bhyve hangs up or a terminating signal arrives. `reasm` and `coalescer` sit
/// between the RX ring and libslirp; they live outside [`Host`] because no libslirp callback
/// touches them.
pub fn run(
    stack: &mut Stack<Host<'_>>,
    rx: &mut FrameRx<'_>,
    reasm: &mut Reassembler,
    coalescer: &mut Coalescer,
    mut api: Option<&mut ApiServer>,
) -> Result<Exit, LoopError> {
    loop {
        if SIGNALS.terminate.load(Ordering::Relaxed) {
            return Ok(Exit::Terminated);
        }
        if SIGNALS.dump_stats.swap(false, Ordering::Relaxed) {
            let mut line = stats_line(stack, rx, reasm, coalescer);
            if let Some(api) = api.as_deref() {
                line.push_str(&api.stats_fields());
            }
            diag::info(&line);
        }
        if let Some(exit) = iterate_serving(stack, rx, reasm, coalescer, api.as_deref_mut())? {
            return Ok(exit);
        }
        if slirp::callback_panicked() {
            return Err(LoopError::CallbackPanicked);
        }
    }
}

/// Milliseconds from `now_ms` to `deadline_ms`, 0 when past.
fn ms_until(deadline_ms: i64, now_ms: i64) -> u32 {
    deadline_ms
        .saturating_sub(now_ms)
        .clamp(0, i64::from(u32::MAX)) as u32
}

/// A guest frame into libslirp, unless it would open a flow beyond the descriptor budget;
/// the TX ring learns how much work its queued answers have waited for.
fn input(stack: &mut Stack<Host<'_>>, frame: &[u8]) {
    let host = stack.host();
    if !host.budget.admit(frame) {
        return;
    }
    if host.echo6.as_ref().is_some_and(|f| f.drops(frame)) {
        host.budget.counters.echo6_unserved += 1;
        return;
    }
    stack.input(frame);
    stack.host().tx.note_input(frame.len());
}

/// One iteration without the control socket. `Some(exit)` when the loop must end.
pub fn iterate(
    stack: &mut Stack<Host<'_>>,
    rx: &mut FrameRx<'_>,
    reasm: &mut Reassembler,
    coalescer: &mut Coalescer,
) -> Result<Option<Exit>, LoopError> {
    iterate_serving(stack, rx, reasm, coalescer, None)
}

/// One iteration; the control socket's descriptors join the fill set and are served after
/// libslirp's, once per iteration, never per frame.
pub fn iterate_serving(
    stack: &mut Stack<Host<'_>>,
    rx: &mut FrameRx<'_>,
    reasm: &mut Reassembler,
    coalescer: &mut Coalescer,
    mut api: Option<&mut ApiServer>,
) -> Result<Option<Exit>, LoopError> {
    let now_ms = crate::sys::monotonic_ns() / 1_000_000;
    let host = stack.host();
    host.poller.begin_fill();
    host.budget.begin_fill(now_ms);
    let mut timeout: u32 = u32::MAX;
    stack.pollfds_fill(&mut timeout);
    if let Some(api) = api.as_deref_mut() {
        api.fill(&mut stack.host().poller);
    }

    let host = stack.host();
    host.counters.iterations += 1;
    if let Some(deadline) = host.timers.next_deadline_ms() {
        timeout = timeout.min(ms_until(deadline, now_ms));
    }
    // libslirp caps its timeout at 1 s anyway; waking at the expiry keeps the age limit exact
    // whatever libslirp's version does.
    if let Some(deadline) = reasm.next_expiry_ms() {
        timeout = timeout.min(ms_until(deadline, now_ms));
    }
    // A listener backed off for lack of descriptors is watched again at its deadline.
    if let Some(deadline) = host.budget.next_unmask_ms() {
        timeout = timeout.min(ms_until(deadline, now_ms));
    }
    let pending = host.tx.has_pending();
    host.poller.watch_frontend_writable(pending);
    let timeout_ms = c_int::try_from(timeout).unwrap_or(c_int::MAX);
    // `select_error` makes `slirp_pollfds_poll` skip only its loops over the TCP, UDP and ICMP
    // sockets (libslirp 4.7.0 to current master, slirp.c); its timers and `if_start` still
    // run. With every `get_revents` answer 0 those loops do nothing but ask, once per socket,
    // so when a persistent backend's wait reported nothing for libslirp's sockets (only our
    // wakeup pipe or the frontend, or a timeout) passing it is exactly equivalent and saves an
    // O(sockets) walk of callbacks in every iteration that only moved guest frames. The poll
    // backend never skips: it is the C helper's loop, the measured baseline.
    let select_error = match host.poller.wait(timeout_ms) {
        Ok(()) if host.poller.slirp_sockets_ready() => false,
        Ok(()) => {
            host.counters.poll_walks_skipped += 1;
            true
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
        Err(err) => return Err(LoopError::Io { what: "poll", err }),
    };
    // io_uring: the frames the last iteration handed to the ring went in that enter.
    #[cfg(target_os = "linux")]
    if let Some(outcome) = host.poller.take_send_outcome() {
        host.tx.ring_outcome(outcome);
    }

    stack.pollfds_poll(select_error);
    let now_ms = crate::sys::monotonic_ns() / 1_000_000;
    stack.run_due_timers(now_ms);
    reasm.expire(now_ms);

    if let Some(api) = api {
        api.serve(stack, &mut |stack: &mut Stack<Host<'_>>| {
            stats_line(stack, rx, reasm, coalescer)
        });
    }

    let host = stack.host();
    if host.poller.own_revents(Own::Wakeup).contains(Readiness::IN) {
        host.counters.wakeups += 1;
        host.drain_wakeup();
    }
    let frontend = host.poller.own_revents(Own::Frontend);
    // io_uring: guest frames already received into the engine's buffer ring.
    #[cfg(target_os = "linux")]
    let ringed = host.poller.take_guest_frames(&mut rx.ring);
    #[cfg(not(target_os = "linux"))]
    let ringed = false;
    // ERR is read too: the read reports (and clears) the pending error instead of spinning.
    if ringed || frontend.intersects(Readiness::IN | Readiness::ERR) {
        let status = rx.drain(|frame| {
            stack.host().capture_guest_frame(frame);
            match reasm.push(frame, now_ms) {
                Verdict::Pass(frame) | Verdict::Complete(frame) => {
                    coalescer.push(frame, |frame| input(stack, frame))
                }
                Verdict::Held | Verdict::Dropped(_) => {}
            }
        });
        // The batch is read: nothing waits for a frame that might never come.
        coalescer.flush(|frame| input(stack, frame));
        let status = status.map_err(|err| LoopError::Io {
            what: "recv from bhyve",
            err,
        })?;
        if status == RxStatus::Hangup {
            return Ok(Some(Exit::Hangup));
        }
    }
    // Hangup is checked after the read so frames bhyve sent just before closing still count;
    // POLLHUP/POLLRDHUP mean no more will come.
    if frontend.intersects(Readiness::HUP | Readiness::RDHUP) {
        return Ok(Some(Exit::Hangup));
    }
    let host = stack.host();
    #[cfg(target_os = "linux")]
    host.tx.flush_through(&mut host.poller);
    #[cfg(not(target_os = "linux"))]
    host.tx.flush();
    host.flush_capture();
    if host.tx.peer_gone() {
        return Ok(Some(Exit::Hangup));
    }
    Ok(None)
}
