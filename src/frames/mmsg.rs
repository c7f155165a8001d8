//! Batched datagram syscalls: `recvmmsg`/`sendmmsg` over preallocated headers, one signature
//! for Linux and FreeBSD (whose libc declares them with other integer types). On FreeBSD they
//! are library loops over recvmsg/sendmsg: no syscall is saved there, only loop iterations.

use crate::sys::syscall;
use std::io;
use std::os::fd::RawFd;

/// `count` whole-frame slots and the `iovec`/`mmsghdr` arrays that point into them: the one
/// preallocated batch behind the helper's RX ring and the Linux frontend's pump (both
/// directions). Built once; nothing here allocates after `new`.
///
/// Receiving: `recv` (or `recv_one`) fills slots from 0, `record(i)` reads them back.
/// Sending: `next_slot` + `commit` fill slots from 0, `send` moves them in one call.
/// Must never: be resized (the headers hold raw pointers into the heap blocks, which do not
/// move when the `FrameBatch` itself moves).
pub struct FrameBatch {
    slot: usize,
    /// `count * slot` bytes; slot i is `bufs[i*slot..(i+1)*slot]`.
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Bytes of each filled slot to send; slots filled so far.
    lens: Box<[usize]>,
    filled: usize,
}

/// One received message: its bytes (at most a slot) and the kernel's `msg_flags`.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub bytes: &'a [u8],
    pub flags: libc::c_int,
}

impl Received<'_> {
    /// Longer than a slot: Linux cut it (MSG_TRUNC) and the rest is lost.
    #[inline]
    pub fn truncated(&self) -> bool {
        self.flags & libc::MSG_TRUNC != 0
    }
}

// The small per-frame methods are `#[inline]`: the frontend's pump calls them for every frame
// from another crate of the workspace.
impl FrameBatch {
    /// `count` (at least 1) slots of `slot` bytes each.
    pub fn new(count: usize, slot: usize) -> FrameBatch {
        let count = count.max(1);
        let mut bufs = vec![0u8; count * slot].into_boxed_slice();
        let base = bufs.as_mut_ptr();
        let mut iovs: Box<[libc::iovec]> = (0..count)
            .map(|i| libc::iovec {
                // Pointer arithmetic within `bufs` (i < count).
                iov_base: base.wrapping_add(i * slot).cast(),
                iov_len: slot,
            })
            .collect();
        let mut hdrs = vec![empty_header(); count].into_boxed_slice();
        for (hdr, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
            set_iov(hdr, iov);
        }
        FrameBatch {
            slot,
            bufs,
            iovs,
            hdrs,
            lens: vec![0; count].into_boxed_slice(),
            filled: 0,
        }
    }

    /// Number of slots.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Bytes per slot.
    #[inline]
    pub fn slot_size(&self) -> usize {
        self.slot
    }

    /// `recvmmsg` up to `count` (at most `capacity`) messages into slots 0.., without waiting:
    /// how many arrived. EAGAIN, EINTR and the rest are the caller's to interpret.
    pub fn recv(&mut self, fd: RawFd, count: usize) -> io::Result<usize> {
        let count = count.min(self.hdrs.len());
        for iov in &mut self.iovs[..count] {
            iov.iov_len = self.slot;
        }
        // Every header points at its own iovec covering its own slot of `bufs`; all three heap
        // blocks live as long as `self` and never move.
        recv_batch(fd, &mut self.hdrs[..count])
    }

    /// `recvmsg` of one message into slot 0, without waiting (the C helper's read): 1 when
    /// a message arrived (even an empty one).
    pub fn recv_one(&mut self, fd: RawFd) -> io::Result<usize> {
        self.iovs[0].iov_len = self.slot;
        let (n, flags) = recv_one(fd, &mut self.hdrs[0])?;
        self.hdrs[0].msg_len = n as _;
        self.hdrs[0].msg_hdr.msg_flags = flags;
        Ok(1)
    }

    /// Message `i` of the last `recv`/`recv_one`.
    #[inline]
    pub fn record(&self, i: usize) -> Received<'_> {
        let hdr = &self.hdrs[i];
        let len = msg_len(hdr).min(self.slot);
        let start = i * self.slot;
        Received {
            bytes: &self.bufs[start..start + len],
            flags: hdr.msg_hdr.msg_flags,
        }
    }

    /// The next free slot to fill (e.g. by a tap read), or `None` when the batch is full.
    #[inline]
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        let i = self.filled;
        if i == self.hdrs.len() {
            return None;
        }
        Some(&mut self.bufs[i * self.slot..(i + 1) * self.slot])
    }

    /// The slot `next_slot` returned now holds a frame of `len` bytes.
    #[inline]
    pub fn commit(&mut self, len: usize) {
        self.lens[self.filled] = len.min(self.slot);
        self.filled += 1;
    }

    /// Slots filled since the last `send`.
    #[inline]
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// `sendmmsg` the filled frames with `flags`, one message each, and empty the batch: how
    /// many went (a prefix); the rest are dropped (the caller counts them). EINTR is retried;
    /// EAGAIN and the rest are the caller's to interpret.
    pub fn send(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        let count = std::mem::take(&mut self.filled);
        if count == 0 {
            return Ok(0);
        }
        for (iov, &len) in self.iovs.iter_mut().zip(self.lens.iter()).take(count) {
            iov.iov_len = len;
        }
        loop {
            // The first `count` headers point at filled slots (as in `recv`).
            match send_batch(fd, &mut self.hdrs[..count], flags) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
        }
    }
}

/// A zeroed header: no name, no control data, no iovec yet.
pub fn empty_header() -> libc::mmsghdr {
    // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

/// Point `hdr` at one iovec.
pub fn set_iov(hdr: &mut libc::mmsghdr, iov: &mut libc::iovec) {
    hdr.msg_hdr.msg_iov = iov;
    hdr.msg_hdr.msg_iovlen = 1;
    hdr.msg_hdr.msg_flags = 0;
    hdr.msg_len = 0;
}

/// Bytes moved for one message of a batch.
pub fn msg_len(hdr: &libc::mmsghdr) -> usize {
    hdr.msg_len as usize
}

/// `recvmmsg` without waiting: the number of messages filled (0 never: EAGAIN is an error).
///
/// Every header must point at a valid iovec whose buffer outlives the call.
pub fn recv_batch(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let vlen = hdrs.len() as _;
    // SAFETY: `hdrs` is a valid array of `vlen` headers, each pointing at a live iovec (the
    // caller's contract); no timeout.
    let n = syscall!(recvmmsg(
        fd,
        hdrs.as_mut_ptr(),
        vlen,
        libc::MSG_DONTWAIT,
        std::ptr::null_mut()
    ))?;
    Ok(n as usize)
}

/// `sendmmsg` with `flags`: the number of messages sent (a prefix of `hdrs`).
///
/// Every header must point at a valid iovec whose buffer outlives the call.
pub fn send_batch(fd: RawFd, hdrs: &mut [libc::mmsghdr], flags: libc::c_int) -> io::Result<usize> {
    let vlen = hdrs.len() as _;
    // SAFETY: as in recv_batch; the kernel only reads the buffers.
    let n = syscall!(sendmmsg(fd, hdrs.as_mut_ptr(), vlen, flags))?;
    Ok(n as usize)
}

/// `recvmsg` of one message into `hdr`'s iovec: (bytes, msg_flags).
pub fn recv_one(fd: RawFd, hdr: &mut libc::mmsghdr) -> io::Result<(usize, libc::c_int)> {
    // SAFETY: the header points at a live iovec (the caller's contract).
    let n = syscall!(recvmsg(fd, &mut hdr.msg_hdr, libc::MSG_DONTWAIT))?;
    Ok((n as usize, hdr.msg_hdr.msg_flags))
}

/// `send` of one buffer.
pub fn send_one(fd: RawFd, bytes: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `bytes` is readable for its length during the call.
    let n = syscall!(send(fd, bytes.as_ptr().cast(), bytes.len(), flags))?;
    Ok(n as usize)
}

/// Whether an error means the batched call does not exist here (old kernel, seccomp, or an
/// emulation layer): switch to the per-frame calls.
pub fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::{AsRawFd, OwnedFd};

    fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair")
    }

    #[test]
    fn frames_cross_a_seqpacket_pair_in_batches() {
        let (a, b) = seqpacket_pair();
        let mut tx = FrameBatch::new(8, 128);
        for i in 0..5u8 {
            let slot = tx.next_slot().unwrap();
            slot[..10].fill(i);
            tx.commit(10 + i as usize);
        }
        assert_eq!(tx.send(a.as_raw_fd(), libc::MSG_DONTWAIT).unwrap(), 5);
        assert_eq!(tx.filled(), 0, "a send empties the batch");
        let mut rx = FrameBatch::new(8, 128);
        assert_eq!(rx.recv(b.as_raw_fd(), 8).unwrap(), 5);
        for i in 0..5 {
            let r = rx.record(i);
            assert!(!r.truncated());
            assert_eq!(r.bytes.len(), 10 + i);
            assert_eq!(r.bytes[0], i as u8);
        }
        let empty = rx.recv(b.as_raw_fd(), 8).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_full_batch_takes_no_more_and_one_message_reads_into_slot_0() {
        let (a, b) = seqpacket_pair();
        let mut tx = FrameBatch::new(2, 64);
        for len in [20, 30] {
            tx.next_slot().unwrap()[..len].fill(len as u8);
            tx.commit(len);
        }
        assert!(tx.next_slot().is_none());
        assert_eq!(tx.send(a.as_raw_fd(), libc::MSG_DONTWAIT).unwrap(), 2);
        let mut rx = FrameBatch::new(4, 64);
        for len in [20, 30] {
            assert_eq!(rx.recv_one(b.as_raw_fd()).unwrap(), 1);
            assert_eq!(rx.record(0).bytes, &vec![len as u8; len][..]);
        }
    }

    #[test]
    fn oversize_records_are_reported_truncated() {
        let (a, b) = seqpacket_pair();
        let mut tx = FrameBatch::new(1, 256);
        tx.next_slot().unwrap();
        tx.commit(200);
        assert_eq!(tx.send(a.as_raw_fd(), libc::MSG_DONTWAIT).unwrap(), 1);
        let mut rx = FrameBatch::new(4, 64);
        assert_eq!(rx.recv(b.as_raw_fd(), 4).unwrap(), 1);
        let r = rx.record(0);
        assert!(r.truncated());
        assert_eq!(r.bytes.len(), 64, "never more than a slot");
    }
}
