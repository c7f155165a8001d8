//! Preallocated `recvmmsg`/`sendmmsg` arrays for the socket side of the pump.
//!
//! Owns: one contiguous buffer of `count` frame slots and the `iovec`/`mmsghdr` arrays that
//! point into it. Built once per pump; nothing here allocates after `new`.
//! Must never: be resized (the headers hold raw pointers into the heap blocks).

use crate::sys::syscall;
use std::io;
use std::os::fd::RawFd;

/// Flags of every send: never block (a full peer drops the frame, as bhyve does), end the
/// record (one frame per record), and no SIGPIPE when the helper is gone (EPIPE instead).
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_EOR | libc::MSG_NOSIGNAL;

pub struct FrameBatch {
    slot: usize,
    /// `count * slot` bytes; slot i is `bufs[i*slot..(i+1)*slot]`.
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Bytes of each slot to send (`sendmmsg`); frames filled so far.
    lens: Box<[usize]>,
    filled: usize,
}

/// One received record.
pub enum Record<'a> {
    Frame(&'a [u8]),
    /// Longer than a slot: the kernel cut it (MSG_TRUNC) and the rest is lost.
    Truncated,
}

impl FrameBatch {
    /// `count` slots of `slot` bytes each.
    pub fn new(count: usize, slot: usize) -> FrameBatch {
        let mut bufs = vec![0u8; count * slot].into_boxed_slice();
        let base = bufs.as_mut_ptr();
        let mut iovs: Box<[libc::iovec]> = (0..count)
            .map(|i| libc::iovec {
                // Pointer arithmetic within `bufs` (i < count).
                iov_base: base.wrapping_add(i * slot).cast(),
                iov_len: slot,
            })
            .collect();
        let iov_base = iovs.as_mut_ptr();
        let hdrs: Box<[libc::mmsghdr]> = (0..count)
            .map(|i| {
                // SAFETY: an all-zero mmsghdr is valid: no name, no control data.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov_base.wrapping_add(i);
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        FrameBatch {
            slot,
            bufs,
            iovs,
            hdrs,
            lens: vec![0; count].into_boxed_slice(),
            filled: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// `recvmmsg` as many records as fit, without blocking. `Ok(0)`: nothing to read.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for iov in self.iovs.iter_mut() {
            iov.iov_len = self.slot;
        }
        let count = self.hdrs.len() as libc::c_uint;
        // SAFETY: every header points at one iovec covering its own slot of `bufs`; all three
        // heap blocks live as long as `self` and are not moved or resized.
        match syscall!(recvmmsg(
            fd,
            self.hdrs.as_mut_ptr(),
            count,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut()
        )) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Record `i` of the last `recv`.
    pub fn record(&self, i: usize) -> Record<'_> {
        let h = &self.hdrs[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return Record::Truncated;
        }
        let len = (h.msg_len as usize).min(self.slot);
        Record::Frame(&self.bufs[i * self.slot..i * self.slot + len])
    }

    /// The next free slot to fill (e.g. by a tap read), or `None` when the batch is full.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        let i = self.filled;
        if i == self.hdrs.len() {
            return None;
        }
        Some(&mut self.bufs[i * self.slot..(i + 1) * self.slot])
    }

    /// The slot `next_slot` returned now holds a frame of `len` bytes.
    pub fn commit(&mut self, len: usize) {
        self.lens[self.filled] = len.min(self.slot);
        self.filled += 1;
    }

    pub fn filled(&self) -> usize {
        self.filled
    }

    /// `sendmmsg` the filled frames, one record each, without blocking, and empty the batch.
    /// Returns how many went; the rest are dropped (the caller counts them).
    pub fn send(&mut self, fd: RawFd) -> io::Result<usize> {
        let count = std::mem::take(&mut self.filled);
        if count == 0 {
            return Ok(0);
        }
        for (iov, &len) in self.iovs.iter_mut().zip(self.lens.iter()).take(count) {
            iov.iov_len = len;
        }
        loop {
            // SAFETY: as in `recv`; the first `count` headers point at filled slots.
            match syscall!(sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                count as libc::c_uint,
                SEND_FLAGS
            )) {
                Ok(n) => return Ok(n as usize),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn frames_cross_a_seqpacket_pair_in_batches() {
        let (a, b) = crate::frontend::os::seqpacket_pair().unwrap();
        let mut tx = FrameBatch::new(8, 128);
        for i in 0..5u8 {
            let slot = tx.next_slot().unwrap();
            slot[..10].fill(i);
            tx.commit(10 + i as usize);
        }
        assert_eq!(tx.send(a.as_raw_fd()).unwrap(), 5);
        let mut rx = FrameBatch::new(8, 128);
        assert_eq!(rx.recv(b.as_raw_fd()).unwrap(), 5);
        for i in 0..5 {
            match rx.record(i) {
                Record::Frame(f) => {
                    assert_eq!(f.len(), 10 + i);
                    assert_eq!(f[0], i as u8);
                }
                Record::Truncated => panic!("truncated"),
            }
        }
        assert_eq!(rx.recv(b.as_raw_fd()).unwrap(), 0);
    }

    #[test]
    fn oversize_records_are_reported_truncated() {
        let (a, b) = crate::frontend::os::seqpacket_pair().unwrap();
        let mut tx = FrameBatch::new(1, 256);
        tx.next_slot().unwrap();
        tx.commit(200);
        assert_eq!(tx.send(a.as_raw_fd()).unwrap(), 1);
        let mut rx = FrameBatch::new(4, 64);
        assert_eq!(rx.recv(b.as_raw_fd()).unwrap(), 1);
        assert!(matches!(rx.record(0), Record::Truncated));
    }
}
