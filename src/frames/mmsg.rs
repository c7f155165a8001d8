//! Batched datagram syscalls: `recvmmsg`/`sendmmsg` over preallocated headers, one signature
//! for Linux and FreeBSD (whose libc declares them with other integer types). On FreeBSD they
//! are library loops over recvmsg/sendmsg: no syscall is saved there, only loop iterations.

use crate::sys::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `count` whole-frame slots and the `iovec`/`mmsghdr` arrays that point into them: the one
/// preallocated batch behind the helper's RX ring and the Linux frontend's pump (both
/// directions). Built once; nothing here allocates after `new`.
///
/// Receiving: `recv` (or `recv_one`) fills slots from 0, `record(i)` reads them back.
/// Sending: `next_slot` + `commit` fill slots from 0, `send` moves them in one call.
/// Must never: be resized, or let a header point anywhere but its own iovec and slot (the
/// headers hold raw pointers into the heap blocks, which do not move when the `FrameBatch`
/// itself moves). That invariant, kept by this type alone, is what makes its calls sound.
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

    /// `recvmmsg` up to `count` (at most `capacity`) messages into slots 0.., without waiting:
    /// how many arrived. EAGAIN, EINTR and the rest are the caller's to interpret.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, count: usize) -> io::Result<usize> {
        let count = count.min(self.hdrs.len());
        for iov in &mut self.iovs[..count] {
            iov.iov_len = self.slot;
        }
        let hdrs = &mut self.hdrs[..count];
        // SAFETY: `hdrs` is `count` valid headers, each pointing at its own iovec, which covers
        // exactly its own slot of `bufs` (`iov_len` was just set to the slot size); all three
        // heap blocks are owned by `self`, exclusively borrowed for the call, and never move.
        // No name or control buffer is set; the timeout pointer is null (none).
        let n = cvt(unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        })?;
        Ok(n as usize)
    }

    /// `recvmsg` of one message into slot 0, without waiting (the C helper's read): 1 when
    /// a message arrived (even an empty one).
    pub(crate) fn recv_one(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.iovs[0].iov_len = self.slot;
        let hdr = &mut self.hdrs[0];
        // SAFETY: header 0 points at iovec 0, which covers exactly slot 0 of `bufs`; both are
        // owned by `self`, exclusively borrowed for the call. recvmsg writes the bytes there
        // and `msg_flags` into the header.
        let n =
            cvt(unsafe { libc::recvmsg(fd.as_raw_fd(), &mut hdr.msg_hdr, libc::MSG_DONTWAIT) })?;
        hdr.msg_len = n as _;
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
    pub fn send(&mut self, fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<usize> {
        let count = std::mem::take(&mut self.filled);
        if count == 0 {
            return Ok(0);
        }
        for (iov, &len) in self.iovs.iter_mut().zip(self.lens.iter()).take(count) {
            iov.iov_len = len;
        }
        loop {
            let hdrs = &mut self.hdrs[..count];
            // SAFETY: as in `recv`: the first `count` headers point at their own iovecs, which
            // now cover the filled bytes of their own slots (`lens` is capped at the slot
            // size by `commit`); the kernel only reads them.
            let sent = cvt(unsafe {
                libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), count as _, flags)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return result.map(|n| n as usize),
            }
        }
    }
}

/// Headers for sending frames that live elsewhere (the TX ring's slots, which wrap around),
/// preallocated once. `send` points them at the frames it is given for that one call only,
/// so no header is ever used while pointing at memory that may be gone.
pub struct GatherList {
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl GatherList {
    /// Room for `capacity` (at least 1) frames per `send`.
    pub fn new(capacity: usize) -> GatherList {
        let capacity = capacity.max(1);
        let iovs = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            capacity
        ];
        let mut iovs = iovs.into_boxed_slice();
        let mut hdrs = vec![empty_header(); capacity].into_boxed_slice();
        // Once: each header points at its own iovec, whose heap block never moves.
        for (hdr, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
            set_iov(hdr, iov);
        }
        GatherList { iovs, hdrs }
    }

    /// `sendmmsg` of `frames` (the first `capacity` of them), one message each, with `flags`:
    /// how many messages went (a prefix); `sent_len(i)` says how many bytes of each.
    pub fn send<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        frames: impl IntoIterator<Item = &'a [u8]>,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let mut count = 0;
        for (iov, frame) in self.iovs.iter_mut().zip(frames) {
            // The kernel only reads through `iov_base` (sendmmsg): the `*mut` is C's type.
            *iov = libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            };
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        // SAFETY: every header points at its own iovec (set in `new`; both blocks are owned
        // by `self` and never move), and the first `count` iovecs were just set to frames
        // borrowed for `'a`, which outlasts this call; the kernel only reads the frames and
        // writes `msg_len` into the headers.
        let n = cvt(unsafe {
            libc::sendmmsg(fd.as_raw_fd(), self.hdrs.as_mut_ptr(), count as _, flags)
        })?;
        Ok(n as usize)
    }

    /// Bytes the last `send` moved of message `i` (one of the first it reported sent).
    pub(crate) fn sent_len(&self, i: usize) -> usize {
        self.hdrs[i].msg_len as usize
    }
}

/// A zeroed header: no name, no control data, no iovec yet.
fn empty_header() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain C data for which all-zero is valid: null pointers, zero lengths.
    unsafe { std::mem::zeroed() }
}

/// Point `hdr` at one iovec.
fn set_iov(hdr: &mut libc::mmsghdr, iov: &mut libc::iovec) {
    hdr.msg_hdr.msg_iov = iov;
    hdr.msg_hdr.msg_iovlen = 1;
    hdr.msg_hdr.msg_flags = 0;
    hdr.msg_len = 0;
}

/// Bytes moved for one message of a batch.
fn msg_len(hdr: &libc::mmsghdr) -> usize {
    hdr.msg_len as usize
}

/// `send` of one buffer.
pub(crate) fn send_one(fd: BorrowedFd<'_>, bytes: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `bytes` is readable for its length during the call; the kernel only reads it.
    let n = cvt(unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), flags) })?;
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
    use std::os::fd::{AsFd, OwnedFd};

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
        assert_eq!(tx.send(a.as_fd(), libc::MSG_DONTWAIT).unwrap(), 5);
        assert_eq!(tx.filled(), 0, "a send empties the batch");
        let mut rx = FrameBatch::new(8, 128);
        assert_eq!(rx.recv(b.as_fd(), 8).unwrap(), 5);
        for i in 0..5 {
            let r = rx.record(i);
            assert!(!r.truncated());
            assert_eq!(r.bytes.len(), 10 + i);
            assert_eq!(r.bytes[0], i as u8);
        }
        let empty = rx.recv(b.as_fd(), 8).unwrap_err();
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
        assert_eq!(tx.send(a.as_fd(), libc::MSG_DONTWAIT).unwrap(), 2);
        let mut rx = FrameBatch::new(4, 64);
        for len in [20, 30] {
            assert_eq!(rx.recv_one(b.as_fd()).unwrap(), 1);
            assert_eq!(rx.record(0).bytes, &vec![len as u8; len][..]);
        }
    }

    #[test]
    fn oversize_records_are_reported_truncated() {
        let (a, b) = seqpacket_pair();
        let mut tx = FrameBatch::new(1, 256);
        tx.next_slot().unwrap();
        tx.commit(200);
        assert_eq!(tx.send(a.as_fd(), libc::MSG_DONTWAIT).unwrap(), 1);
        let mut rx = FrameBatch::new(4, 64);
        assert_eq!(rx.recv(b.as_fd(), 4).unwrap(), 1);
        let r = rx.record(0);
        assert!(r.truncated());
        assert_eq!(r.bytes.len(), 64, "never more than a slot");
    }
}
