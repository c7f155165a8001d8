//! The frame pump: tap ⇄ helper socket, both directions, on its own thread.
//!
//! Owns: the tap descriptor and the frontend's end of the socket once started, the batches,
//! and the counters. Socket side batched (`recvmmsg`/`sendmmsg`); tap side one read or write
//! per frame (tap has no batch API) in loops until EAGAIN. Level-triggered epoll.
//! Must never: block on either side (a full side drops the frame and counts it, as bhyve
//! drops when the helper's buffer is full), or allocate per frame.

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use slirp_helper::frames::FrameBatch;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Frames per `sendmmsg`/`recvmmsg`.
pub const BATCH: usize = 64;
/// Batches moved per readiness event before the other side gets its turn.
const BUDGET: usize = 16;

/// Flags of every send to the helper: never block (a full peer drops the frame, as bhyve
/// does), end the record (one frame per record), and no SIGPIPE when the helper is gone
/// (EPIPE instead).
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_EOR | libc::MSG_NOSIGNAL;

const TAP: u64 = 0;
const SOCK: u64 = 1;
const STOP: u64 = 2;

/// One counter per event on the data path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PumpCounters {
    /// Frames read from the tap (guest → helper).
    pub tap_rx_frames: u64,
    pub tap_rx_bytes: u64,
    /// Frames the socket took (guest → helper).
    pub sock_tx_frames: u64,
    /// Guest frames dropped: the helper's socket buffer was full.
    pub sock_full_drops: u64,
    /// Frames received from the helper (helper → guest).
    pub sock_rx_frames: u64,
    pub sock_rx_bytes: u64,
    /// Helper records longer than a slot (MSG_TRUNC): dropped.
    pub sock_truncated: u64,
    /// Empty records from a live helper: dropped.
    pub sock_empty: u64,
    /// Frames written to the tap.
    pub tap_tx_frames: u64,
    /// Helper frames dropped: the tap would block.
    pub tap_full_drops: u64,
    /// Helper frames the tap refused for another reason (e.g. the link is down).
    pub tap_write_errors: u64,
    /// `epoll_wait` returns.
    pub wakeups: u64,
}

impl std::fmt::Display for PumpCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "guest->helper {} frames ({} B, {} dropped full); helper->guest {} frames ({} B, \
             {} dropped full, {} tap errors, {} truncated, {} empty); {} wakeups",
            self.sock_tx_frames,
            self.tap_rx_bytes,
            self.sock_full_drops,
            self.tap_tx_frames,
            self.sock_rx_bytes,
            self.tap_full_drops,
            self.tap_write_errors,
            self.sock_truncated,
            self.sock_empty,
            self.wakeups
        )
    }
}

/// Why the pump ended.
#[derive(Debug)]
pub enum PumpExit {
    /// `Pump::stop` was called.
    Stopped,
    /// The helper closed its end (it exited or was killed).
    Hangup,
    /// A syscall failed in a way the pump cannot go on from.
    Failed(io::Error),
}

#[derive(Debug)]
pub struct PumpReport {
    pub exit: PumpExit,
    pub counters: PumpCounters,
}

/// The running pump thread.
pub struct Pump {
    stop: Arc<EventFd>,
    ended: Arc<EventFd>,
    thread: Option<JoinHandle<PumpReport>>,
}

/// Size of one frame slot for `mtu`: Ethernet header + VLAN tag, rounded up to a cache line,
/// plus one spare byte so that a record longer than any valid frame is seen as truncated.
pub fn slot_size(mtu: u32) -> usize {
    (mtu as usize + 14 + 4).div_ceil(64) * 64 + 1
}

impl Pump {
    /// Start pumping between `tap` and `sock` (both non-blocking).
    pub fn start(tap: OwnedFd, sock: OwnedFd, mtu: u32) -> io::Result<Pump> {
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let stop = Arc::new(EventFd::from_value_and_flags(0, flags)?);
        let ended = Arc::new(EventFd::from_value_and_flags(0, flags)?);
        let (stop2, ended2) = (stop.clone(), ended.clone());
        let thread = std::thread::Builder::new()
            .name("pump".into())
            .spawn(move || {
                let report = Worker::new(tap, sock, mtu).run(&stop2);
                // Wakes whoever waits on `ended_fd` (the supervisor): the helper may be gone.
                let _ = ended2.write(1);
                report
            })?;
        Ok(Pump {
            stop,
            ended,
            thread: Some(thread),
        })
    }

    /// Readable once the pump thread has ended on its own (hangup or failure).
    pub fn ended_fd(&self) -> BorrowedFd<'_> {
        self.ended.as_fd()
    }

    /// Stop the thread (if still running) and return its report. The descriptors it owned
    /// are closed: the helper sees the hangup.
    pub fn stop(mut self) -> PumpReport {
        let _ = self.stop.write(1);
        self.join()
    }

    fn join(&mut self) -> PumpReport {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(report)) => report,
            _ => PumpReport {
                exit: PumpExit::Failed(io::Error::other("the pump thread panicked")),
                counters: PumpCounters::default(),
            },
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop.write(1);
            let _ = self.join();
        }
    }
}

/// `recvmmsg` as many records as `batch` holds, without blocking. `Ok(0)`: nothing to read.
pub(crate) fn recv_frames(batch: &mut FrameBatch, sock: BorrowedFd<'_>) -> io::Result<usize> {
    match batch.recv(sock, batch.capacity()) {
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted =>
        {
            Ok(0)
        }
        result => result,
    }
}

/// `sendmmsg` the filled frames of `batch`, one record each, without blocking, and empty the
/// batch: how many went; the rest are dropped (the caller counts them).
pub(crate) fn send_frames(batch: &mut FrameBatch, sock: BorrowedFd<'_>) -> io::Result<usize> {
    match batch.send(sock, SEND_FLAGS) {
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) =>
        {
            Ok(0)
        }
        result => result,
    }
}

struct Worker {
    tap: OwnedFd,
    sock: OwnedFd,
    to_sock: FrameBatch,
    from_sock: FrameBatch,
    c: PumpCounters,
}

/// Hangup or keep going.
enum Flow {
    Continue,
    Hangup,
}

fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN)
    )
}

impl Worker {
    fn new(tap: OwnedFd, sock: OwnedFd, mtu: u32) -> Worker {
        let slot = slot_size(mtu);
        Worker {
            tap,
            sock,
            to_sock: FrameBatch::new(BATCH, slot),
            from_sock: FrameBatch::new(BATCH, slot),
            c: PumpCounters::default(),
        }
    }

    fn run(mut self, stop: &EventFd) -> PumpReport {
        let exit = match self.event_loop(stop) {
            Ok(exit) => exit,
            Err(e) => PumpExit::Failed(e),
        };
        PumpReport {
            exit,
            counters: self.c,
        }
    }

    fn event_loop(&mut self, stop: &EventFd) -> io::Result<PumpExit> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&self.tap, EpollEvent::new(EpollFlags::EPOLLIN, TAP))?;
        let sock_events = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        epoll.add(&self.sock, EpollEvent::new(sock_events, SOCK))?;
        epoll.add(stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
        let mut events = [EpollEvent::empty(); 4];
        loop {
            let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(super::os::errno(e, "epoll_wait")),
            };
            self.c.wakeups += 1;
            for ev in &events[..n] {
                let flow = match ev.data() {
                    TAP => self.tap_to_sock()?,
                    SOCK => {
                        let hup = ev.events().intersects(
                            EpollFlags::EPOLLHUP | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLERR,
                        );
                        self.sock_to_tap(hup)?
                    }
                    _ => return Ok(PumpExit::Stopped),
                };
                if let Flow::Hangup = flow {
                    return Ok(PumpExit::Hangup);
                }
            }
        }
    }

    /// Guest → helper: fill a batch from the tap until EAGAIN, send it, repeat (bounded).
    fn tap_to_sock(&mut self) -> io::Result<Flow> {
        for _ in 0..BUDGET {
            let mut drained = false;
            while let Some(slot) = self.to_sock.next_slot() {
                match nix::unistd::read(&self.tap, slot) {
                    Ok(len) => {
                        self.c.tap_rx_frames += 1;
                        self.c.tap_rx_bytes += len as u64;
                        self.to_sock.commit(len);
                    }
                    Err(Errno::EAGAIN) => {
                        drained = true;
                        break;
                    }
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(super::os::errno(e, "read from the tap")),
                }
            }
            let filled = self.to_sock.filled();
            if filled > 0 {
                match send_frames(&mut self.to_sock, self.sock.as_fd()) {
                    Ok(sent) => {
                        self.c.sock_tx_frames += sent as u64;
                        self.c.sock_full_drops += (filled - sent) as u64;
                    }
                    Err(e) if gone(&e) => return Ok(Flow::Hangup),
                    Err(e) => return Err(io::Error::new(e.kind(), format!("sendmmsg: {e}"))),
                }
            }
            if drained {
                break;
            }
        }
        Ok(Flow::Continue)
    }

    /// Helper → guest: `recvmmsg` batches and write each frame to the tap (bounded). With
    /// `hup`, the helper has closed its end: whatever it sent before is delivered first.
    fn sock_to_tap(&mut self, hup: bool) -> io::Result<Flow> {
        for _ in 0..BUDGET {
            let n = match recv_frames(&mut self.from_sock, self.sock.as_fd()) {
                Ok(n) => n,
                Err(e) if gone(&e) => return Ok(Flow::Hangup),
                Err(e) => return Err(io::Error::new(e.kind(), format!("recvmmsg: {e}"))),
            };
            if n == 0 {
                return Ok(if hup { Flow::Hangup } else { Flow::Continue });
            }
            for i in 0..n {
                let record = self.from_sock.record(i);
                if record.truncated() {
                    self.c.sock_truncated += 1;
                    continue;
                }
                let frame = match record.bytes {
                    // A 0-byte read is EOF only when the peer has shut down; a live helper
                    // may also send an empty record (SOCK_SEQPACKET).
                    [] if hup => return Ok(Flow::Hangup),
                    [] => {
                        self.c.sock_empty += 1;
                        continue;
                    }
                    frame => frame,
                };
                self.c.sock_rx_frames += 1;
                self.c.sock_rx_bytes += frame.len() as u64;
                loop {
                    match nix::unistd::write(&self.tap, frame) {
                        Ok(_) => self.c.tap_tx_frames += 1,
                        Err(Errno::EINTR) => continue,
                        Err(Errno::EAGAIN) | Err(Errno::ENOBUFS) => self.c.tap_full_drops += 1,
                        Err(_) => self.c.tap_write_errors += 1,
                    }
                    break;
                }
            }
            if n < self.from_sock.capacity() {
                break;
            }
        }
        Ok(Flow::Continue)
    }
}
