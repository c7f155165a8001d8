//! Guest → helper: the RX ring. Frames are read in batches (`recvmmsg`) into preallocated
//! slots, each big enough for a whole frame, and handed to libslirp in order. With a batch of
//! 1 this is the C helper's one `recvmsg` per frame.

use super::{mmsg, FrameBatch, FrameLimit, ETHER_HDR};
use crate::diag;
use crate::stats::RxCounters;
use std::io;
use std::os::fd::BorrowedFd;

/// Frames read per `drain` at most, so that one busy guest cannot starve libslirp's sockets
/// and timers; the socket stays readable and the next wait returns at once.
const DRAIN_BUDGET: usize = 1024;

/// How `drain` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxStatus {
    /// Nothing more to read now (or the budget was used).
    Drained,
    /// bhyve is gone: EOF with the peer shut down, ECONNRESET, or ECONNREFUSED (a SOCK_DGRAM
    /// peer that went away: the error a connected datagram socket reports on the next read).
    Hangup,
}

/// The ring over the frontend socket, which it borrows for `'fd` (`main` owns it).
pub struct FrameRx<'fd> {
    fd: BorrowedFd<'fd>,
    limit: FrameLimit,
    /// `batch` slots of `limit.rx_slot()` bytes, allocated once.
    slots: FrameBatch,
    /// False after `recvmmsg` turned out to be unavailable (or for a batch of 1).
    batched: bool,
    /// FreeBSD: the record in progress was longer than a slot; skip until its end (MSG_EOR).
    skipping_record: bool,
    /// Frames the io_uring engine received into its buffer ring, handed over by the loop
    /// (`Poller::take_guest_frames`): when active, `drain` reads these instead of the socket.
    #[cfg(target_os = "linux")]
    pub ring: crate::poller::uring_rx::RingRecords,
    pub counters: RxCounters,
}

/// Whether the peer has shut the socket down (a zero-length read is then EOF, not an empty
/// record: SOCK_SEQPACKET reads an empty record as 0 bytes too).
fn peer_shut_down(fd: BorrowedFd<'_>) -> bool {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    let hangup = libc::POLLHUP | libc::POLLRDHUP;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let hangup = libc::POLLHUP;
    loop {
        match crate::sys::poll_one(fd, libc::POLLIN | hangup, 0) {
            Ok(revents) => return revents & hangup != 0,
            // Linux fails even a zero-timeout poll with EINTR when a signal is pending (a
            // SIGUSR1 stats request): that is no news about the peer, so ask again
            // (fuzz finding F2).
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Any other failure says nothing about the peer either: a real hangup still
            // shows in the loop's own wait, so never end the helper on a guess.
            Err(_) => return false,
        }
    }
}

impl<'fd> FrameRx<'fd> {
    /// A ring of `batch` slots (at least 1).
    pub fn new(fd: BorrowedFd<'fd>, limit: FrameLimit, batch: usize) -> FrameRx<'fd> {
        let batch = batch.max(1);
        FrameRx {
            fd,
            limit,
            slots: FrameBatch::new(batch, limit.rx_slot()),
            batched: batch > 1,
            skipping_record: false,
            #[cfg(target_os = "linux")]
            ring: Default::default(),
            counters: RxCounters::default(),
        }
    }

    /// One read syscall: how many slots hold a message (0: the socket is empty).
    fn read_batch(&mut self) -> io::Result<usize> {
        self.counters.syscalls += 1;
        let result = if self.batched {
            self.slots.recv(self.fd, self.slots.capacity())
        } else {
            self.slots.recv_one(self.fd)
        };
        match result {
            Ok(n) => Ok(n),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                Ok(0)
            }
            Err(e) if self.batched && mmsg::unsupported(&e) => {
                diag::warn(&format!(
                    "recvmmsg unavailable ({e}): reading one frame per recvmsg"
                ));
                self.batched = false;
                self.read_batch()
            }
            Err(e) => Err(e),
        }
    }

    /// Read frames until the socket is empty (or the budget is used), passing each valid one
    /// to `deliver`. Invalid ones are dropped and counted.
    pub fn drain(&mut self, mut deliver: impl FnMut(&[u8])) -> io::Result<RxStatus> {
        #[cfg(target_os = "linux")]
        if self.ring.active() {
            return self.drain_ring(deliver);
        }
        let mut read = 0;
        while read < DRAIN_BUDGET {
            let n = match self.read_batch() {
                Ok(0) => return Ok(RxStatus::Drained),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNRESET) | Some(libc::ECONNREFUSED)
                    ) =>
                {
                    return Ok(RxStatus::Hangup)
                }
                Err(e) => return Err(e),
            };
            self.counters.batches += 1;
            read += n;
            for i in 0..n {
                let (len, flags) = {
                    let record = self.slots.record(i);
                    (record.bytes.len(), record.flags)
                };
                if len == 0 && !self.skipping_record {
                    if peer_shut_down(self.fd) {
                        return Ok(RxStatus::Hangup);
                    }
                    self.counters.empty += 1;
                    continue;
                }
                if self.record_too_long(len, flags) {
                    continue;
                }
                if self.count_frame(len) {
                    deliver(self.slots.record(i).bytes);
                }
            }
            // A short batch means the socket was empty a moment ago: wait for readiness again
            // rather than spend a syscall on EAGAIN. (Batch 1 reads until EAGAIN, as C did.)
            if self.batched && n < self.slots.capacity() {
                return Ok(RxStatus::Drained);
            }
        }
        Ok(RxStatus::Drained)
    }

    /// The records the io_uring engine received (in order), each slot given back to its ring
    /// once its frame is delivered (or dropped). After a hangup or an error the remaining
    /// records are not delivered, but their slots still go back.
    #[cfg(target_os = "linux")]
    fn drain_ring(&mut self, mut deliver: impl FnMut(&[u8])) -> io::Result<RxStatus> {
        let Some(buffers) = self.ring.buffers.clone() else {
            return Ok(RxStatus::Drained);
        };
        let mut outcome = Ok(RxStatus::Drained);
        if !self.ring.records.is_empty() {
            self.counters.batches += 1;
        }
        for i in 0..self.ring.records.len() {
            let record = self.ring.records[i];
            if matches!(outcome, Ok(RxStatus::Drained)) {
                outcome = self.ring_record(&buffers, record, &mut deliver);
            }
            if let Some(slot) = record.slot {
                buffers.recycle(slot);
            }
        }
        self.ring.records.clear();
        outcome
    }

    /// One record of the ring: checked as `drain` checks a read message.
    #[cfg(target_os = "linux")]
    fn ring_record(
        &mut self,
        buffers: &crate::poller::uring_rx::RxBuffers,
        record: crate::poller::uring_rx::RingRecord,
        deliver: &mut impl FnMut(&[u8]),
    ) -> io::Result<RxStatus> {
        let len = match record.result {
            0 => {
                if peer_shut_down(self.fd) {
                    return Ok(RxStatus::Hangup);
                }
                self.counters.empty += 1;
                return Ok(RxStatus::Drained);
            }
            n if n > 0 => n as usize,
            n if n == -libc::ECONNRESET || n == -libc::ECONNREFUSED => return Ok(RxStatus::Hangup),
            // Out of slots, or interrupted: the receive is re-armed, the data still waits.
            n if n == -libc::ENOBUFS || n == -libc::EINTR || n == -libc::EAGAIN => {
                return Ok(RxStatus::Drained)
            }
            n => return Err(io::Error::from_raw_os_error(-n)),
        };
        let Some(slot) = record.slot else {
            return Ok(RxStatus::Drained);
        };
        // No MSG_TRUNC from a RECV completion: a record longer than a slot fills it, and a
        // slot is longer than any frame accepted.
        if len > self.limit.max_rx_frame() {
            self.counters.oversize += 1;
            return Ok(RxStatus::Drained);
        }
        if self.count_frame(len) {
            deliver(buffers.frame(slot, len));
        }
        Ok(RxStatus::Drained)
    }

    /// A record of `len` bytes that fits: counted as a frame to deliver, or as a runt (shorter
    /// than an Ethernet header) to drop.
    fn count_frame(&mut self, len: usize) -> bool {
        if len < ETHER_HDR {
            self.counters.runt += 1;
            return false;
        }
        self.counters.frames += 1;
        self.counters.bytes += len as u64;
        true
    }

    /// Truncation: Linux cuts the record and sets MSG_TRUNC; FreeBSD leaves the rest for the
    /// next read and sets MSG_EOR only on a record's last bytes.
    fn record_too_long(&mut self, len: usize, flags: libc::c_int) -> bool {
        if cfg!(target_os = "freebsd") {
            let ends_record = flags & libc::MSG_EOR != 0;
            let was_skipping = std::mem::replace(&mut self.skipping_record, !ends_record);
            if was_skipping {
                return true;
            }
            if !ends_record {
                self.counters.oversize += 1;
                return true;
            }
        }
        if flags & libc::MSG_TRUNC != 0 || len > self.limit.max_rx_frame() {
            self.counters.oversize += 1;
            return true;
        }
        false
    }
}
