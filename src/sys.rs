//! Thin syscall wrappers the rest of the helper needs and `nix` does not offer in the shape we
//! want. Every `unsafe` block of the process set-up lives here, each with its SAFETY line.
//!
//! Owns: raw fd hygiene (closefrom, CLOEXEC), signal dispositions, the process title.
//! Must never: allocate or log on a per-frame path.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Turn a libc return value into `io::Result`, reading errno on -1.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller passes arguments valid for this libc call (see each use).
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// Whether `fd` names an open descriptor (`fcntl(F_GETFD)`, as the C helper checks `-S`).
pub fn fd_is_open(fd: RawFd) -> bool {
    syscall!(fcntl(fd, libc::F_GETFD)).is_ok()
}

/// Whether `fd` is a socket.
pub fn fd_is_socket(fd: RawFd) -> io::Result<bool> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer for the duration of the call.
    syscall!(fstat(fd, &mut st))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

/// Move `fd` to `target` (closing whatever was there) and return `target`.
/// The new descriptor does not have CLOEXEC, like `dup2`.
pub fn move_fd(fd: RawFd, target: RawFd) -> io::Result<RawFd> {
    if fd == target {
        return Ok(fd);
    }
    syscall!(dup2(fd, target))?;
    syscall!(close(fd))?;
    Ok(target)
}

/// Close every descriptor from `lowfd` up, as FreeBSD's `closefrom(2)`: bhyve's `posix_spawn`
/// lets the helper inherit every non-CLOEXEC descriptor it had.
pub fn closefrom(lowfd: RawFd) {
    #[cfg(target_os = "freebsd")]
    {
        // SAFETY: closefrom only closes descriptors; nothing in this process holds one above
        // `lowfd` that it still uses (called during start-up before any is created).
        unsafe { libc::closefrom(lowfd) };
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: as above; close_range takes plain integers.
            if unsafe { libc::close_range(lowfd as libc::c_uint, libc::c_uint::MAX, 0) } == 0 {
                return;
            }
        }
        // Fallback for kernels without close_range: walk up to the descriptor limit.
        let max = syscall!(sysconf(libc::_SC_OPEN_MAX))
            .unwrap_or(1024)
            .min(1 << 20) as RawFd;
        for fd in lowfd..max {
            // EBADF for descriptors that are not open is the expected case.
            let _ = syscall!(close(fd));
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
pub fn nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(u64::try_from(soft).unwrap_or(u64::MAX))
}

/// Whether `fd` is a listening socket (`SO_ACCEPTCONN`). False on any error.
pub fn is_listening(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid, writable, and `len` is the size of `value`.
    let res = syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ACCEPTCONN,
        (&mut value as *mut libc::c_int).cast(),
        &mut len
    ));
    res.is_ok() && value != 0
}

/// Whether the process (or the system) is out of descriptors: a duplicate of `fd` fails with
/// EMFILE or ENFILE. Any descriptor made is closed at once.
pub fn descriptors_exhausted(fd: RawFd) -> bool {
    match syscall!(fcntl(fd, libc::F_DUPFD_CLOEXEC, 0)) {
        Ok(copy) => {
            // The copy is ours alone; nothing to report if closing it fails.
            let _ = syscall!(close(copy));
            false
        }
        Err(e) => matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)),
    }
}

/// Set SO_SNDBUF and SO_RCVBUF (the kernel caps them at wmem_max/rmem_max and doubles them).
pub fn set_socket_buffers(fd: RawFd, bytes: usize) -> io::Result<()> {
    let value = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: `value` is a valid int option of the size passed.
        syscall!(setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t
        ))?;
    }
    Ok(())
}

/// Set or clear O_NONBLOCK.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    syscall!(fcntl(fd, libc::F_SETFL, flags))?;
    Ok(())
}

/// Set or clear FD_CLOEXEC.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = syscall!(fcntl(fd, libc::F_GETFD))?;
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    syscall!(fcntl(fd, libc::F_SETFD, flags))?;
    Ok(())
}

/// SO_NOSIGPIPE where it exists (the BSDs): sends to a closed peer fail instead of signalling.
/// Linux has no such option; SIGPIPE is ignored process-wide instead.
pub fn set_nosigpipe(fd: RawFd) {
    #[cfg(any(target_os = "freebsd", target_os = "macos"))]
    {
        let one: libc::c_int = 1;
        // SAFETY: `one` is a valid int option value of the given size for this call.
        let _ = syscall!(setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t
        ));
    }
    #[cfg(not(any(target_os = "freebsd", target_os = "macos")))]
    let _ = fd;
}

/// Make `close(fd)` abort a TCP connection with a reset (SO_LINGER on, 0 s) instead of a FIN.
/// Other sockets are left alone. Errors are ignored: the fd is about to be closed anyway.
pub fn reset_on_close(fd: RawFd) {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid for an int option.
    let is_stream = syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_TYPE,
        (&mut kind as *mut libc::c_int).cast(),
        &mut len
    ))
    .is_ok()
        && kind == libc::SOCK_STREAM;
    if is_stream {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `linger` is a valid SO_LINGER value of the size passed.
        let _ = syscall!(setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t
        ));
    }
}

/// `PR_SET_NO_NEW_PRIVS`: no exec can ever gain privileges again (needed for seccomp and
/// Landlock without CAP_SYS_ADMIN).
#[cfg(target_os = "linux")]
pub fn set_no_new_privs() -> io::Result<()> {
    syscall!(prctl(
        libc::PR_SET_NO_NEW_PRIVS,
        1 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong
    ))?;
    Ok(())
}

/// Load the time zone now (glibc reads /etc/localtime lazily, e.g. for syslog timestamps).
#[cfg(target_os = "linux")]
pub fn load_time_zone() {
    extern "C" {
        fn tzset();
    }
    // SAFETY: tzset takes no arguments and only initialises libc's time-zone state.
    unsafe { tzset() };
}

/// Whether `fd` is `/dev/null` (then stderr goes nowhere and diagnostics go to syslog).
pub fn fd_is_dev_null(fd: RawFd) -> bool {
    // SAFETY: zeroed stat buffers are valid for fstat/stat to overwrite.
    let (mut a, mut b): (libc::stat, libc::stat) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    if syscall!(fstat(fd, &mut a)).is_err() {
        return false;
    }
    // SAFETY: the path is a NUL-terminated literal and `b` a valid stat buffer.
    if syscall!(stat(c"/dev/null".as_ptr(), &mut b)).is_err() {
        return false;
    }
    a.st_mode & libc::S_IFMT == libc::S_IFCHR && a.st_rdev == b.st_rdev
}

/// Point `target` (one of 0..=2) at `/dev/null`, as daemons do, so that a standard
/// descriptor left vacant is never reused by something else (a pipe, a socket) that stray
/// writes to stdout or stderr would then corrupt.
pub fn dev_null_at(target: RawFd) -> io::Result<()> {
    // SAFETY: a NUL-terminated literal path and plain flags.
    let null = syscall!(open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC))?;
    if null == target {
        return set_cloexec(null, false);
    }
    let moved = syscall!(dup2(null, target));
    let _ = syscall!(close(null));
    moved.map(|_| ())
}

/// The socket's type (`SO_TYPE`: SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET…).
pub fn socket_type(fd: RawFd) -> io::Result<libc::c_int> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid for an int option.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_TYPE,
        (&mut kind as *mut libc::c_int).cast(),
        &mut len
    ))?;
    Ok(kind)
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

/// SIGPIPE ignored (a send to a dead peer must be an EPIPE, never death); SIGTERM/SIGINT end
/// the loop cleanly; SIGUSR1 (and SIGINFO on the BSDs) dump the counters. No SA_RESTART, so a
/// signal interrupts the wait and is seen at once.
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
pub fn monotonic_ns() -> i64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as i64 * 1_000_000_000 + ts.tv_nsec() as i64
}
