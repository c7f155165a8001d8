//! Thin syscall wrappers the rest of the helper needs and `nix` does not offer in the shape we
//! want. Every `unsafe` block of the process set-up lives here, each with its SAFETY line.
//!
//! Owns: raw fd hygiene (closefrom, CLOEXEC), signal dispositions, the process title.
//! Must never: allocate or log on a per-frame path.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// A libc return value whose failure is -1 with errno set.
pub(crate) trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}

impl MinusOne for i32 {
    const MINUS_ONE: i32 = -1;
}

impl MinusOne for i64 {
    const MINUS_ONE: i64 = -1;
}

impl MinusOne for isize {
    const MINUS_ONE: isize = -1;
}

/// Turn a libc return value into `io::Result`, reading errno on -1. The call itself stays at
/// the call site, in its own `unsafe` block with its own SAFETY line (as std's `cvt`).
#[inline]
pub(crate) fn cvt<T: MinusOne>(res: T) -> io::Result<T> {
    if res == T::MINUS_ONE {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

/// `poll(2)` on one descriptor: its `revents`. EINTR is the caller's to interpret.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout_ms: libc::c_int,
) -> io::Result<libc::c_short> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd, exclusively borrowed for the call; nfds is 1.
    cvt(unsafe { libc::poll(&mut pfd, 1, timeout_ms) })?;
    Ok(pfd.revents)
}

/// `fcntl(fd, cmd)` or `fcntl(fd, cmd, arg)` for the integer commands (F_GETFD, F_SETFL…).
fn fcntl_int(fd: RawFd, cmd: libc::c_int, arg: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: the integer fcntl commands used here read no memory; an fd that is not open is
    // EBADF, not undefined behaviour.
    cvt(unsafe { libc::fcntl(fd, cmd, arg) })
}

/// `getsockopt` of an int option.
fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid and writable for the call, and `len` holds the size
    // of `value`, so the kernel writes at most that many bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// `setsockopt` of a plain-old-data option value.
fn setsockopt_value<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live `T` readable for `size_of::<T>()` bytes, the length passed;
    // the kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `fstat`.
fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable for a whole `stat`, which fstat fills on success.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it initialised `st`.
    Ok(unsafe { st.assume_init() })
}

/// `close` of a descriptor this process owns by number (the C-style shuffle at start-up and
/// probes that made a copy).
fn close_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: closing reads no memory; every caller owns `fd` (see each) and never uses the
    // number again.
    cvt(unsafe { libc::close(fd) })?;
    Ok(())
}

/// Whether `fd` names an open descriptor (`fcntl(F_GETFD)`, as the C helper checks `-S`).
/// A probe of any number, open or not: nothing is read or changed.
pub fn fd_is_open(fd: RawFd) -> bool {
    fcntl_int(fd, libc::F_GETFD, 0).is_ok()
}

/// Whether `fd` is a socket. A probe of any number (the `-S` argument before it is adopted).
pub fn fd_is_socket(fd: RawFd) -> io::Result<bool> {
    let st = fstat(fd)?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

/// Move `fd` to `target` (closing whatever was there) and own it there. The new descriptor
/// does not have CLOEXEC, like `dup2`.
///
/// # Safety
/// Nothing else in the process owns `fd` or `target`, or uses either number afterwards: `fd`
/// is closed (its ownership passes to the result), and what `target` named is closed too.
pub unsafe fn move_fd(fd: RawFd, target: RawFd) -> io::Result<OwnedFd> {
    if fd != target {
        // SAFETY: dup2 reads no memory; the caller gives up `target`'s old descriptor.
        cvt(unsafe { libc::dup2(fd, target) })?;
        // `fd` is the caller's to give up (this function's contract).
        close_raw(fd)?;
    }
    // SAFETY: `target` is open (dup2 succeeded, or it was `fd` itself) and, by the contract,
    // owned by nothing else: the result is its one owner.
    Ok(unsafe { OwnedFd::from_raw_fd(target) })
}

/// Close every descriptor from `lowfd` up, as FreeBSD's `closefrom(2)`: bhyve's `posix_spawn`
/// lets the helper inherit every non-CLOEXEC descriptor it had.
///
/// # Safety
/// Nothing in the process owns or uses a descriptor numbered `lowfd` or above (start-up,
/// before anything kept one open).
pub unsafe fn closefrom(lowfd: RawFd) {
    #[cfg(target_os = "freebsd")]
    {
        // SAFETY: closefrom reads no memory; the descriptors it closes are nobody's (this
        // function's contract).
        unsafe { libc::closefrom(lowfd) };
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: as closefrom above; close_range takes plain integers.
            if unsafe { libc::close_range(lowfd as libc::c_uint, libc::c_uint::MAX, 0) } == 0 {
                return;
            }
        }
        // Fallback for kernels without close_range: walk up to the descriptor limit.
        // SAFETY: sysconf reads no caller memory.
        let max = cvt(unsafe { libc::sysconf(libc::_SC_OPEN_MAX) } as i64)
            .unwrap_or(1024)
            .min(1 << 20) as RawFd;
        for fd in lowfd..max {
            // EBADF for descriptors that are not open is the expected case; the open ones
            // are nobody's (this function's contract).
            let _ = close_raw(fd);
        }
    }
}

/// Raise the soft descriptor limit to the hard one: every guest connection is a host socket,
/// and the usual soft limit of 1024 would cap the guest at about a thousand connections.
pub fn raise_nofile_limit() -> io::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

/// The soft descriptor limit (RLIMIT_NOFILE) now in force.
// rlim_t is u64 on Linux, i64 on FreeBSD: the conversion is needed on one only.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
pub(crate) fn nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(u64::try_from(soft).unwrap_or(u64::MAX))
}

/// Whether `fd` (one of libslirp's sockets, by its number) is a listening socket
/// (`SO_ACCEPTCONN`). False on any error.
pub(crate) fn is_listening(fd: RawFd) -> bool {
    matches!(getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN), Ok(v) if v != 0)
}

/// Whether the process (or the system) is out of descriptors: a duplicate of `fd` (one of
/// libslirp's sockets, by its number) fails with EMFILE or ENFILE. Any copy made is closed
/// at once.
pub(crate) fn descriptors_exhausted(fd: RawFd) -> bool {
    match fcntl_int(fd, libc::F_DUPFD_CLOEXEC, 0) {
        // The copy was made here and is known to nothing else.
        Ok(copy) => {
            let _ = close_raw(copy);
            false
        }
        Err(e) => matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)),
    }
}

/// Set SO_SNDBUF and SO_RCVBUF (the kernel caps them at wmem_max/rmem_max and doubles them).
pub fn set_socket_buffers(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        setsockopt_value(fd.as_raw_fd(), libc::SOL_SOCKET, opt, &value)?;
    }
    Ok(())
}

/// Set or clear O_NONBLOCK.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    let flags = fcntl_int(fd, libc::F_GETFL, 0)?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    fcntl_int(fd, libc::F_SETFL, flags)?;
    Ok(())
}

/// Set or clear FD_CLOEXEC.
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    let flags = fcntl_int(fd, libc::F_GETFD, 0)?;
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    fcntl_int(fd, libc::F_SETFD, flags)?;
    Ok(())
}

/// SO_NOSIGPIPE where it exists (the BSDs): sends to a closed peer fail instead of signalling.
/// Linux has no such option; SIGPIPE is ignored process-wide instead. `fd` is one of
/// libslirp's sockets, by its number.
pub(crate) fn set_nosigpipe(fd: RawFd) {
    #[cfg(any(target_os = "freebsd", target_os = "macos"))]
    {
        let one: libc::c_int = 1;
        let _ = setsockopt_value(fd, libc::SOL_SOCKET, libc::SO_NOSIGPIPE, &one);
    }
    #[cfg(not(any(target_os = "freebsd", target_os = "macos")))]
    let _ = fd;
}

/// Make `close(fd)` abort a TCP connection with a reset (SO_LINGER on, 0 s) instead of a FIN.
/// Other sockets are left alone. Errors are ignored: the fd is about to be closed anyway.
/// `fd` is one of libslirp's sockets, by its number.
pub fn reset_on_close(fd: RawFd) {
    let is_stream = matches!(
        getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE),
        Ok(libc::SOCK_STREAM)
    );
    if is_stream {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = setsockopt_value(fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger);
    }
}

/// `PR_SET_NO_NEW_PRIVS`: no exec can ever gain privileges again (needed for seccomp and
/// Landlock without CAP_SYS_ADMIN).
#[cfg(target_os = "linux")]
pub(crate) fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and reads no memory.
    cvt(unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(())
}

/// Load the time zone now (glibc reads /etc/localtime lazily, e.g. for syslog timestamps).
#[cfg(target_os = "linux")]
pub(crate) fn load_time_zone() {
    extern "C" {
        fn tzset();
    }
    // SAFETY: tzset takes no arguments and only initialises libc's time-zone state.
    unsafe { tzset() };
}

/// Whether `fd` is `/dev/null` (then stderr goes nowhere and diagnostics go to syslog).
/// A probe of any number, open or not.
pub(crate) fn fd_is_dev_null(fd: RawFd) -> bool {
    let Ok(a) = fstat(fd) else {
        return false;
    };
    let mut b = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: the path is a NUL-terminated literal and `b` is writable for a whole `stat`.
    if cvt(unsafe { libc::stat(c"/dev/null".as_ptr(), b.as_mut_ptr()) }).is_err() {
        return false;
    }
    // SAFETY: stat returned 0, so it initialised `b`.
    let b = unsafe { b.assume_init() };
    a.st_mode & libc::S_IFMT == libc::S_IFCHR && a.st_rdev == b.st_rdev
}

/// Point `target` (one of 0..=2) at `/dev/null`, as daemons do, so that a standard
/// descriptor left vacant is never reused by something else (a pipe, a socket) that stray
/// writes to stdout or stderr would then corrupt.
///
/// # Safety
/// `target` is vacant, or else owned by nothing in the process: whatever it named is closed.
pub unsafe fn dev_null_at(target: RawFd) -> io::Result<()> {
    // SAFETY: a NUL-terminated literal path and plain flags.
    let null = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    if null == target {
        // SAFETY: open just made `null` and nothing else knows it; it is borrowed only for
        // this call (the standard descriptor stays open for the process's life).
        return set_cloexec(unsafe { BorrowedFd::borrow_raw(null) }, false);
    }
    // SAFETY: dup2 reads no memory; `target` is given up by the caller (the contract).
    let moved = cvt(unsafe { libc::dup2(null, target) });
    // `null` was opened above and is used nowhere else.
    let _ = close_raw(null);
    moved.map(|_| ())
}

/// The socket's type (`SO_TYPE`: SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET…). A probe of any
/// number (the `-S` argument before it is adopted).
pub fn socket_type(fd: RawFd) -> io::Result<libc::c_int> {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)
}

/// Bytes queued for reading on a socket (`FIONREAD`; on Linux the sum of all queued records).
pub(crate) fn bytes_queued(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the pointer, which is valid and exclusively
    // borrowed for the duration of the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// One `recvmsg` into `data`, with the descriptors passed alongside (SCM_RIGHTS) into
/// `fds`: each is owned there as soon as the kernel has handed it over, so none can leak or
/// be closed twice whatever the caller does next. Returns the bytes read and the message's
/// flags (MSG_CTRUNC: descriptors were lost for want of room in `cmsg`).
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    data: &mut [u8],
    cmsg: &mut [u8],
    flags: nix::sys::socket::MsgFlags,
    fds: &mut Vec<OwnedFd>,
) -> nix::Result<(usize, nix::sys::socket::MsgFlags)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, UnixAddr};
    let mut iov = [std::io::IoSliceMut::new(data)];
    let msg = recvmsg::<UnixAddr>(sock.as_raw_fd(), &mut iov, Some(cmsg), flags)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel has just installed these descriptors in our table for this
            // message; nothing else knows them, so each gets exactly one owner.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, msg.flags))
}

/// Set the process title to the VM's name, as the C helper's `setproctitle("%s", vmname)`.
/// The caller passes it printable (bytes that are not UTF-8 escaped).
pub fn set_process_title(title: &str) {
    let Ok(title) = CString::new(title.replace('\0', " ")) else {
        return;
    };
    #[cfg(target_os = "freebsd")]
    {
        // SAFETY: "%s" with one NUL-terminated string argument matches the varargs contract.
        unsafe { libc::setproctitle(c"%s".as_ptr(), title.as_ptr()) };
    }
    #[cfg(target_os = "linux")]
    {
        // Linux has no setproctitle: the task name (15 bytes) is what ps and top show.
        // SAFETY: PR_SET_NAME reads at most 16 bytes of a NUL-terminated string.
        unsafe { libc::prctl(libc::PR_SET_NAME, title.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
    #[cfg(not(any(target_os = "freebsd", target_os = "linux")))]
    let _ = title;
}

/// Signals the loop reacts to, set from async-signal context and read by the loop.
pub struct SignalFlags {
    pub terminate: AtomicBool,
    pub dump_stats: AtomicBool,
}

pub static SIGNALS: SignalFlags = SignalFlags {
    terminate: AtomicBool::new(false),
    dump_stats: AtomicBool::new(false),
};

extern "C" fn on_terminate(_: libc::c_int) {
    SIGNALS.terminate.store(true, Ordering::Relaxed);
}

extern "C" fn on_dump_stats(_: libc::c_int) {
    SIGNALS.dump_stats.store(true, Ordering::Relaxed);
}

/// SIGPIPE and SIGXFSZ ignored (a send to a dead peer must be an EPIPE, a capture file over
/// the size limit an EFBIG, never death); SIGTERM/SIGINT end the loop cleanly; SIGUSR1 (and
/// SIGINFO on the BSDs) dump the counters. No SA_RESTART, so a signal interrupts the wait and
/// is seen at once.
pub fn install_signal_handlers() -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let term = SigAction::new(
        SigHandler::Handler(on_terminate),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let dump = SigAction::new(
        SigHandler::Handler(on_dump_stats),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let mut table = vec![
        (Signal::SIGPIPE, ignore),
        // A capture file past RLIMIT_FSIZE: `write` fails with EFBIG and capture stops,
        // instead of the signal ending the helper and the guest's network with it.
        (Signal::SIGXFSZ, ignore),
        (Signal::SIGTERM, term),
        (Signal::SIGINT, term),
        (Signal::SIGUSR1, dump),
    ];
    #[cfg(any(target_os = "freebsd", target_os = "macos"))]
    table.push((Signal::SIGINFO, dump));
    for (signal, action) in table.drain(..) {
        // SAFETY: the handlers only store to atomics, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// The monotonic clock in nanoseconds, libslirp's time base (`clock_get_ns`).
pub(crate) fn monotonic_ns() -> i64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as i64 * 1_000_000_000 + ts.tv_nsec() as i64
}

/// Have the kernel send SIGTERM to this process when its parent exits (Linux
/// `PR_SET_PDEATHSIG`, FreeBSD `PROC_PDEATHSIG_CTL`). Both kernels clear the setting when the
/// credentials change, so call it after the privilege drop. `parent` is the parent seen at
/// start: if it is already gone (the helper was re-parented before the setting took), SIGTERM
/// is raised at once, so the answer is the same whichever came first.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub fn exit_with_parent(parent: libc::pid_t) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
    #[cfg(target_os = "freebsd")]
    {
        let mut signal: libc::c_int = libc::SIGTERM;
        // SAFETY: PROC_PDEATHSIG_CTL reads one int from `data`, which points at `signal`
        // for the duration of the call; P_PID 0 is this process.
        cvt(unsafe {
            libc::procctl(
                libc::P_PID,
                0,
                libc::PROC_PDEATHSIG_CTL,
                (&mut signal as *mut libc::c_int).cast(),
            )
        })?;
    }
    if parent_pid() != parent {
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM)?;
    }
    Ok(())
}

/// Elsewhere the option cannot be honoured: say so rather than ignore it.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub fn exit_with_parent(_parent: libc::pid_t) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// This process's session (the pid of its leader), for telling a daemonizing parent from a
/// hypervisor (`main`'s `--exit-with-parent`).
pub fn session_id() -> libc::pid_t {
    // getsid(0) cannot fail for the calling process.
    nix::unistd::getsid(None).map_or(-1, |pid| pid.as_raw())
}

/// The parent's pid, for [`exit_with_parent`].
pub fn parent_pid() -> libc::pid_t {
    std::os::unix::process::parent_id() as libc::pid_t
}

/// Capsicum (FreeBSD): the capture file's descriptor may only be written to, whatever the
/// process does next (rights hold with or without capability mode).
#[cfg(target_os = "freebsd")]
pub(crate) fn limit_to_writing(file: &std::fs::File) -> io::Result<()> {
    let mut rights = std::mem::MaybeUninit::<libc::cap_rights_t>::uninit();
    // SAFETY: `__cap_rights_init` (the function behind `cap_rights_init`) fills the
    // `cap_rights_t` it is given with the listed rights; the list ends with 0, as the macro
    // in <sys/capsicum.h> ends it.
    unsafe {
        libc::__cap_rights_init(
            libc::CAP_RIGHTS_VERSION,
            rights.as_mut_ptr(),
            libc::CAP_WRITE,
            0u64,
        )
    };
    // SAFETY: initialised by the call above; the descriptor is open (borrowed from `file`).
    cvt(unsafe { libc::cap_rights_limit(file.as_raw_fd(), rights.as_ptr()) })?;
    Ok(())
}

/// Only FreeBSD limits a descriptor's rights. On Linux the sandbox stays what it is without
/// capture: the loop only ever writes to the capture file.
#[cfg(not(target_os = "freebsd"))]
pub(crate) fn limit_to_writing(_file: &std::fs::File) -> io::Result<()> {
    Ok(())
}

/// Remove `path` once this process is gone, however it ends (a fatal error, SIGTERM, even
/// SIGKILL): a child process created now waits for the returned pipe end to close, which the
/// kernel does when the last holder exits, then unlinks `path` if it is still the file with
/// inode `(dev, ino)` (a newer helper may have replaced a stale one). A child, because the
/// helper itself cannot do it at exit: after the privilege drop and inside the sandbox it may
/// neither write the directory nor call `unlink`.
///
/// The child keeps no other descriptor (bhyve's socket among them: a copy would hide
/// bhyve's hangup) and ignores the terminal's signals (a ^C to the process group must not
/// skip the clean-up). The helper is single-threaded when it forks, so the child may
/// allocate (its title); it runs nothing else but the wait and the unlink.
pub fn unlink_when_gone(path: &std::path::Path, dev: u64, ino: u64) -> io::Result<OwnedFd> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    use std::os::unix::ffi::OsStrExt;
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // Not CLOEXEC-free: the child reads the original before any exec (it never execs).
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the helper is single-threaded at start-up (no lock can be held by another
    // thread across the fork), so the child may run ordinary code; it sets its title, waits,
    // unlinks and leaves with `_exit`, never returning into the caller's code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(read_end);
            Ok(write_end)
        }
        nix::unistd::ForkResult::Child => {
            for sig in [
                Signal::SIGINT,
                Signal::SIGTERM,
                Signal::SIGHUP,
                Signal::SIGQUIT,
                Signal::SIGUSR1,
                Signal::SIGPIPE,
            ] {
                // SAFETY: SIG_IGN installs no handler code.
                let _ = unsafe { signal(sig, SigHandler::SigIgn) };
            }
            drop(write_end);
            // `ps` tells it from the helper (Linux shows 15 bytes of it).
            set_process_title("api-sock-remover");
            // SAFETY: in the child, after the fork: every descriptor but the pipe's read end
            // is a copy nothing here uses; moving the read end to 0 and closing the rest from
            // 1 leaves the child holding only the pipe.
            unsafe {
                if libc::dup2(read_end.as_raw_fd(), 0) < 0 {
                    libc::_exit(1);
                }
                closefrom(1);
            }
            let mut byte = [0u8; 1];
            loop {
                // SAFETY: reads into a one-byte stack buffer.
                let n = unsafe { libc::read(0, byte.as_mut_ptr().cast(), 1) };
                if n == 0
                    || (n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
                {
                    break;
                }
            }
            // SAFETY: a zeroed stat is a valid out-buffer; the path is NUL-terminated.
            unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::lstat(cpath.as_ptr(), &mut st) == 0
                    && st.st_dev as u64 == dev
                    && st.st_ino as u64 == ino
                {
                    libc::unlink(cpath.as_ptr());
                }
                libc::_exit(0)
            }
        }
    }
}

/// The lowest descriptor number not open now (the one socket(2) would return), or `None`
/// when that cannot be found out.
pub(crate) fn lowest_free_fd() -> Option<RawFd> {
    // F_DUPFD from 0 answers with the lowest free number; fd 0 itself closed is the answer.
    match nix::fcntl::fcntl(std::io::stdin(), nix::fcntl::FcntlArg::F_DUPFD(0)) {
        Ok(fd) => {
            let _ = close_raw(fd);
            Some(fd)
        }
        Err(nix::errno::Errno::EBADF) => Some(0),
        Err(_) => None,
    }
}
