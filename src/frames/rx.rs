//! Guest → helper: read frames until the socket is empty and hand each to libslirp.

use super::{FrameLimit, ETHER_HDR};
use crate::stats::RxCounters;
use crate::sys::syscall;
use std::io;
use std::os::fd::RawFd;

/// Frames read per `drain` at most, so that one busy guest cannot starve libslirp's sockets
/// and timers; the socket stays readable and the next wait returns at once.
const DRAIN_BUDGET: usize = 1024;

/// How `drain` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxStatus {
    /// Nothing more to read now (or the budget was used).
    Drained,
    /// bhyve is gone: EOF with the peer shut down, or ECONNRESET.
    Hangup,
}

pub struct FrameRx {
    fd: RawFd,
    limit: FrameLimit,
    buf: Vec<u8>,
    /// FreeBSD: the record in progress was longer than a slot; skip until its end (MSG_EOR).
    skipping_record: bool,
    pub counters: RxCounters,
}

/// Whether the peer has shut the socket down (a zero-length read is then EOF, not an empty
/// record: SOCK_SEQPACKET reads an empty record as 0 bytes too).
fn peer_shut_down(fd: RawFd) -> bool {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    let events = libc::POLLIN | libc::POLLRDHUP;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let events = libc::POLLIN;
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    match syscall!(poll(&mut pfd, 1, 0)) {
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        Ok(_) => pfd.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0,
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        Ok(_) => pfd.revents & libc::POLLHUP != 0,
        Err(_) => true,
    }
}

impl FrameRx {
    pub fn new(fd: RawFd, limit: FrameLimit) -> FrameRx {
        FrameRx {
            fd,
            limit,
            buf: vec![0; limit.rx_slot()],
            skipping_record: false,
            counters: RxCounters::default(),
        }
    }

    /// One `recvmsg`: `Ok(Some((len, flags)))`, `Ok(None)` when the socket is empty.
    fn recv_one(&mut self) -> io::Result<Option<(usize, libc::c_int)>> {
        let mut iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: self.buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        self.counters.syscalls += 1;
        // SAFETY: msg points at one iovec covering `buf`, which outlives the call.
        match syscall!(recvmsg(self.fd, &mut msg, libc::MSG_DONTWAIT)) {
            Ok(n) => Ok(Some((n as usize, msg.msg_flags))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Read frames until the socket is empty (or the budget is used), passing each valid one
    /// to `deliver`. Invalid ones are dropped and counted.
    pub fn drain(&mut self, mut deliver: impl FnMut(&[u8])) -> io::Result<RxStatus> {
        for _ in 0..DRAIN_BUDGET {
            let (len, flags) = match self.recv_one() {
                Ok(Some(read)) => read,
                Ok(None) => return Ok(RxStatus::Drained),
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    return Ok(RxStatus::Hangup)
                }
                Err(e) => return Err(e),
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
            if len < ETHER_HDR {
                self.counters.runt += 1;
                continue;
            }
            self.counters.frames += 1;
            self.counters.bytes += len as u64;
            deliver(&self.buf[..len]);
        }
        Ok(RxStatus::Drained)
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
