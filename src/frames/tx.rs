//! Helper → guest: libslirp's `send_packet` lands here; frames go out with `MSG_EOR` and
//! never block the loop.

use super::FrameLimit;
use crate::stats::TxCounters;
use crate::sys::syscall;
use std::io;
use std::os::fd::RawFd;

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
const SEND_FLAGS: libc::c_int = libc::MSG_EOR | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
const SEND_FLAGS: libc::c_int = libc::MSG_EOR | libc::MSG_DONTWAIT;

pub struct FrameTx {
    fd: RawFd,
    limit: FrameLimit,
    /// The unsent tail of a frame a short send cut (FreeBSD's SEQPACKET is a byte stream: a
    /// record must be finished before any other frame may follow). Preallocated.
    tail: Vec<u8>,
    tail_sent: usize,
    /// The peer is gone (EPIPE/ECONNRESET): the loop ends.
    peer_gone: bool,
    pub counters: TxCounters,
}

impl FrameTx {
    pub fn new(fd: RawFd, limit: FrameLimit) -> FrameTx {
        FrameTx {
            fd,
            limit,
            tail: Vec::with_capacity(limit.max_frame()),
            tail_sent: 0,
            peer_gone: false,
            counters: TxCounters::default(),
        }
    }

    /// Whether frames are waiting for the socket to become writable.
    pub fn has_pending(&self) -> bool {
        self.tail_sent < self.tail.len()
    }

    pub fn peer_gone(&self) -> bool {
        self.peer_gone
    }

    fn send_raw(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.counters.syscalls += 1;
        // SAFETY: `bytes` is readable for its length during the call.
        let n = syscall!(send(
            self.fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            SEND_FLAGS
        ))?;
        Ok(n as usize)
    }

    /// Classify a failed send: full buffers drop the frame (TCP retransmits, as with bhyve);
    /// a dead peer ends the loop.
    fn on_error(&mut self, e: &io::Error) {
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                self.counters.eagain += 1;
                self.counters.full += 1;
            }
            Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN) => {
                self.peer_gone = true;
                self.counters.errors += 1;
            }
            _ => self.counters.errors += 1,
        }
    }

    /// Send what is left of a cut frame. True when nothing is left.
    pub fn flush(&mut self) -> bool {
        while self.has_pending() {
            let tail = std::mem::take(&mut self.tail);
            let result = self.send_raw(&tail[self.tail_sent..]);
            self.tail = tail;
            match result {
                Ok(n) => self.tail_sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.raw_os_error() == Some(libc::EAGAIN)
                        || e.raw_os_error() == Some(libc::ENOBUFS)
                    {
                        self.counters.eagain += 1;
                    } else {
                        self.on_error(&e);
                        self.tail.clear();
                        self.tail_sent = 0;
                    }
                    return !self.has_pending();
                }
            }
        }
        self.tail.clear();
        self.tail_sent = 0;
        true
    }

    /// `send_packet`. Always reports the whole frame as taken: a drop is the network's
    /// business, and a short or negative answer makes libslirp log per packet.
    pub fn send(&mut self, frame: &[u8]) -> isize {
        let taken = frame.len() as isize;
        if frame.len() > self.limit.max_frame() {
            self.counters.oversize += 1;
            return taken;
        }
        if self.peer_gone || !self.flush() {
            self.counters.full += 1;
            return taken;
        }
        loop {
            match self.send_raw(frame) {
                Ok(n) => {
                    self.counters.frames += 1;
                    self.counters.bytes += frame.len() as u64;
                    if n < frame.len() {
                        self.tail.extend_from_slice(&frame[n..]);
                    }
                    return taken;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.on_error(&e);
                    return taken;
                }
            }
        }
    }
}
