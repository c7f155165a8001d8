//! Batched datagram syscalls: `recvmmsg`/`sendmmsg` over preallocated headers, one signature
//! for Linux and FreeBSD (whose libc declares them with other integer types). On FreeBSD they
//! are library loops over recvmsg/sendmsg: no syscall is saved there, only loop iterations.

use crate::sys::syscall;
use std::io;
use std::os::fd::RawFd;

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
