//! Linux syscalls the frontend needs beyond `nix`: entering a namespace, creating the tap,
//! bhyve's socketpair, pidfds. Every `unsafe` of the frontend lives here (the pump's batch
//! arrays are the helper library's `FrameBatch`), each block with its SAFETY line.
//!
//! Owns: raw descriptors until they are wrapped in `OwnedFd`. Must never: change the calling
//! thread's namespace except in [`enter_netns`] (called only from a dedicated thread).

/// Turn a libc return value into `io::Result`, reading errno on -1. The call stays at the
/// call site, in its own `unsafe` block with its own SAFETY line. The frontend's own copy of
/// the helper's `cvt`: the product library does not export its syscall plumbing.
fn cvt(res: libc::c_int) -> io::Result<libc::c_int> {
    if res == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

/// Move the calling thread into the network namespace `ns` (an open `/run/netns/NAME`).
/// Only the calling thread changes namespace: call it from a thread that exists for that.
pub fn enter_netns(ns: &File) -> io::Result<()> {
    // SAFETY: setns takes a descriptor (borrowed from `ns`, open for the call) and a flag;
    // it reads no memory.
    cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}

/// Create tap device `name` in the calling thread's namespace: IFF_TAP | IFF_NO_PI (raw
/// Ethernet frames, no packet-info prefix), no vnet header (so no GSO: every frame fits the
/// MTU), non-blocking, CLOEXEC. The device lives as long as the descriptor; the descriptor
/// keeps working from any namespace.
pub fn create_tap(name: &str) -> io::Result<OwnedFd> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} longer than {}", libc::IFNAMSIZ - 1),
        ));
    }
    // SAFETY: the path is a NUL-terminated literal; the flags are plain integers.
    let fd = cvt(unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")))?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    let tun = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid (empty name, zero flags).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is, exclusively borrowed for
    // the call's duration.
    cvt(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr) })
        .map_err(|e| io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")))?;
    Ok(tun)
}

/// bhyve's `socketpair(PF_LOCAL, SOCK_SEQPACKET | SOCK_NONBLOCK)`, both ends CLOEXEC here:
/// the helper's end loses CLOEXEC only in the forked child (see `helper::spawn`), so no other
/// child of this process (ip, udhcpc, the user's command) can inherit either end and keep the
/// socket alive after the frontend is gone.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A descriptor that becomes readable when process `pid` exits (Linux 5.3+), CLOEXEC.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this open descriptor to us and nothing else knows it:
    // the OwnedFd is its one owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Ask the kernel to send `SIGKILL` to the calling process when the thread that forked it
/// exits. Called in a forked child before exec: async-signal-safe (one syscall).
pub fn kill_with_parent() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no pointers.
    cvt(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(())
}

/// Clear FD_CLOEXEC on `fd`. Called in a forked child before exec: async-signal-safe.
fn inherit_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD takes an integer and reads no memory; a closed `fd` is EBADF.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) })?;
    Ok(())
}

/// Make `cmd`'s child SIGKILLed when the thread that forks it exits (`kill_with_parent`).
pub fn kill_child_with_parent(cmd: &mut std::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and makes one
    // async-signal-safe prctl call; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(kill_with_parent);
    }
}

/// Make `cmd`'s child inherit `fd` across exec (it is CLOEXEC here so that no other child
/// inherits it). `fd` must stay open until `cmd` is spawned.
pub fn child_inherits(cmd: &mut std::process::Command, fd: BorrowedFd<'_>) {
    let fd = fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and makes one
    // async-signal-safe fcntl call on a plain integer; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || inherit_fd(fd));
    }
}

/// Whether the process runs with an effective uid of 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// An errno from `nix` as an `io::Error` that says which call failed.
pub fn errno(e: nix::errno::Errno, call: &str) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("{call}: {e}"))
}
