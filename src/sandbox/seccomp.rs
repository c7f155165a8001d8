//! A seccomp filter for the loop (Linux): the counterpart of Capsicum. Only the system calls
//! the loop, libslirp and the C library need after set-up are allowed; what a restricted
//! helper never needs (opening files, exec, new sockets, connect, bind, listen…) is refused.
//!
//! A refused call fails with EPERM and one line on the diagnostics channel (SIGSYS handler,
//! async-signal-safe), as a call refused by Capsicum fails with ECAPMODE: the loop keeps
//! serving the guest. The first few refusals are reported, then only counted.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// `struct seccomp_data` offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// Low 32 bits of argument `i` (little-endian).
const fn arg_low(i: u32) -> u32 {
    16 + 8 * i
}

/// Which calls a mode needs beyond the common set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Restricted: no outbound connection, no file: only the loop and accepted hostfwd
    /// connections.
    Restricted,
    /// Open: outbound IPv4/IPv6 sockets, and reading `/etc/resolv.conf` for the DNS proxy
    /// (which files may be read is Landlock's job: seccomp cannot see paths).
    Open,
}

/// Calls every mode needs: I/O on existing descriptors, the pollers, memory, signals, time.
fn common() -> Vec<libc::c_long> {
    let mut calls = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_recvmmsg,
        libc::SYS_sendmmsg,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_shutdown,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_epoll_ctl,
        libc::SYS_ppoll,
        libc::SYS_fcntl,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_brk,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_mprotect,
        libc::SYS_futex,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        // Rust's SIGSEGV/SIGBUS handler resets the signal to its default and returns, so the
        // fault repeats and ends the process; refused, it returned into the fault forever at
        // 100 % CPU (tests/sandbox.rs). A handler opens nothing.
        libc::SYS_rt_sigaction,
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_gettimeofday,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_tgkill,
        libc::SYS_getrandom,
        libc::SYS_sched_yield,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_poll, libc::SYS_epoll_wait]);
    calls
}

/// Process creation is refused quietly with EPERM rather than trapped: `posix_spawn` and
/// `fork` run with every signal blocked, and a trap then would kill the process.
fn refused_quietly() -> Vec<libc::c_long> {
    let mut calls = vec![libc::SYS_clone, libc::SYS_clone3];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_fork, libc::SYS_vfork]);
    calls
}

/// Calls the control socket's `add_hostfwd` adds (`api` set): libslirp's `tcpx_listen` and
/// `udpx_listen` create, bind and listen on the forward's host socket. Nothing else: the
/// control socket's own clients need only `accept4`, which every mode has.
fn api_extra() -> Vec<libc::c_long> {
    vec![libc::SYS_bind, libc::SYS_listen]
}

/// The io_uring engine's one call (`uring`: the engine is in use): waiting and submitting.
/// Never `io_uring_setup` nor `io_uring_register`: no new ring, and the ring's restrictions
/// cannot be changed (the kernel also refuses register operations once restricted).
fn uring_extra() -> Vec<libc::c_long> {
    vec![libc::SYS_io_uring_enter]
}

/// Calls open mode adds (outbound connections, the DNS proxy's resolv.conf).
fn open_extra() -> Vec<libc::c_long> {
    let mut calls = vec![
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_openat,
        libc::SYS_statx,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_open, libc::SYS_stat, libc::SYS_lstat]);
    calls
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_eq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn load(offset: u32) -> libc::sock_filter {
    stmt((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, offset)
}

fn ret(k: u32) -> libc::sock_filter {
    stmt((libc::BPF_RET | libc::BPF_K) as u16, k)
}

/// Allow syscall `nr` only when argument `arg` (low 32 bits) is one of `values`.
fn allow_when(program: &mut Vec<libc::sock_filter>, nr: libc::c_long, arg: u32, values: &[u32]) {
    // [jeq nr] [ld arg] ([jeq v] [ret allow])* [ret trap] [ld nr]
    let block = 1 + 2 * values.len() + 2;
    program.push(jump_eq(nr as u32, 0, block as u8));
    program.push(load(arg_low(arg)));
    for &v in values {
        program.push(jump_eq(v, 0, 1));
        program.push(ret(RET_ALLOW));
    }
    program.push(ret(RET_TRAP));
    program.push(load(NR));
}

/// The BPF program for `mode`; `api`: the control socket may add forwards (see
/// [`api_extra`]), which also needs IPv4/IPv6 sockets in restricted mode.
pub fn program(mode: Mode, api: bool, uring: bool) -> Vec<libc::sock_filter> {
    let mut p = vec![
        load(ARCH),
        jump_eq(AUDIT_ARCH, 1, 0),
        // Another ABI (x86's int 0x80, x32) would bypass the numbers below.
        ret(RET_KILL_PROCESS),
        load(NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 system calls carry bit 30: refuse them all.
        p.push(libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: 0x4000_0000,
        });
        p.push(ret(RET_KILL_PROCESS));
    }
    let mut allowed = common();
    if mode == Mode::Open {
        allowed.extend(open_extra());
    }
    if uring {
        allowed.extend(uring_extra());
    }
    if api {
        allowed.extend(api_extra());
        allowed.sort_unstable();
        allowed.dedup();
    }
    for nr in allowed {
        p.push(jump_eq(nr as u32, 0, 1));
        p.push(ret(RET_ALLOW));
    }
    for nr in refused_quietly() {
        p.push(jump_eq(nr as u32, 0, 1));
        p.push(ret(RET_ERRNO | libc::EPERM as u32));
    }
    // ioctl: FIONREAD (libslirp sizes reads with it) and FIONBIO only.
    allow_when(
        &mut p,
        libc::SYS_ioctl,
        1,
        &[libc::FIONREAD as u32, libc::FIONBIO as u32],
    );
    if mode == Mode::Open || api {
        allow_when(
            &mut p,
            libc::SYS_socket,
            0,
            &[libc::AF_INET as u32, libc::AF_INET6 as u32],
        );
    }
    p.push(ret(RET_TRAP));
    p
}

/// Refusals seen so far (reported up to `REPORTED`).
static REFUSED: AtomicU32 = AtomicU32::new(0);
const REPORTED: u32 = 8;

/// Number of system calls the filter refused so far.
pub fn refused() -> u32 {
    REFUSED.load(Ordering::Relaxed)
}

/// `si_code` of a SIGSYS raised by a seccomp filter's SECCOMP_RET_TRAP (`<asm-generic/siginfo.h>`).
const SYS_SECCOMP: libc::c_int = 1;

/// SIGSYS: the filter refused a call. Make it return -EPERM and say which, without anything
/// that is not async-signal-safe (no allocation, no locks).
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // Only a refusal by our filter has a system call to answer. A SIGSYS sent with kill(2)
    // (SI_USER, or anything else) interrupted arbitrary code: rewriting its return register
    // would corrupt it, so such a signal is ignored.
    if code != SYS_SECCOMP {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo for SIGSYS; `_sigsys.syscall` is the int at
    // offset 24 (after signo, errno, code, padding and the 8-byte call address).
    let nr = unsafe { *((info as *const u8).add(24) as *const libc::c_int) };
    // SAFETY: the kernel passes the interrupted context; writing the return register makes
    // the refused call return -EPERM when the handler returns.
    unsafe {
        let uc = &mut *(context as *mut libc::ucontext_t);
        #[cfg(target_arch = "x86_64")]
        {
            uc.uc_mcontext.gregs[libc::REG_RAX as usize] = -(libc::EPERM as i64);
        }
        #[cfg(target_arch = "aarch64")]
        {
            uc.uc_mcontext.regs[0] = (-(libc::EPERM as i64)) as u64;
        }
    }
    if REFUSED.fetch_add(1, Ordering::Relaxed) < REPORTED {
        let mut line = [0u8; 96];
        let prefix = b"sandbox: refused system call ";
        line[..prefix.len()].copy_from_slice(prefix);
        let mut len = prefix.len();
        len += crate::diag::format_decimal(nr as i64, &mut line[len..]);
        let suffix = b" (EPERM)";
        line[len..len + suffix.len()].copy_from_slice(suffix);
        len += suffix.len();
        crate::diag::emergency(&line[..len]);
    }
}

/// `no_new_privs` and the filter for `mode` (widened for the control socket when `api`).
/// Irreversible for the process.
pub(crate) fn enter(mode: Mode, api: bool, uring: bool) -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::SigAction(on_sigsys),
        SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe (see on_sigsys).
    unsafe { sigaction(Signal::SIGSYS, &action) }.map_err(io::Error::from)?;
    crate::sys::set_no_new_privs()?;
    let mut filter = program(mode, api, uring);
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filter`, alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        for (mode, api) in [
            (Mode::Restricted, false),
            (Mode::Open, false),
            (Mode::Restricted, true),
            (Mode::Open, true),
        ] {
            for uring in [false, true] {
                let p = program(mode, api, uring);
                assert!(p.len() < 256, "classic BPF jumps are 8-bit");
                for (i, ins) in p.iter().enumerate() {
                    if ins.code & 0x07 == libc::BPF_JMP as u16 {
                        assert!(
                            i + 1 + (ins.jt as usize) < p.len()
                                && i + 1 + (ins.jf as usize) < p.len(),
                            "{mode:?} at {i}"
                        );
                    }
                }
                let last = p.last().unwrap();
                assert_eq!(
                    (last.code, last.k),
                    ((libc::BPF_RET | libc::BPF_K) as u16, RET_TRAP)
                );
            }
        }
    }
}
