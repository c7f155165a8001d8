//! The Linux sandbox (Landlock + seccomp): after entry, what the mode forbids fails (with a
//! log line for seccomp refusals) and what the loop needs still works. Each probe runs in a
//! fresh process (this test binary re-run with a role), since entering is irreversible.

#![cfg(target_os = "linux")]

use slirp_helper::poller::uring::ForeignOp;
use slirp_helper::poller::uring_rx::{RingRecord, RingRecords};
use slirp_helper::poller::{Poller, PollerKind};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::net::UnixStream;
use std::process::Command;

const ROLE: &str = "SANDBOX_TEST_ROLE";
/// Set: the role runs as under bhyve, stderr on /dev/null and diagnostics to this syslog socket.
const SYSLOG: &str = "SLIRP_HELPER_SYSLOG_SOCKET";

/// What a probe saw: "ok" or the errno name.
fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(libc::EPERM) => "EPERM".into(),
            Some(libc::EACCES) => "EACCES".into(),
            Some(libc::EBADF) => "EBADF".into(),
            _ => format!("{e}"),
        },
    }
}

/// A ring request's result: "ok" or the errno name.
fn ring_outcome(result: i32) -> String {
    if result >= 0 {
        // Whatever it made must not outlive the probe.
        // SAFETY: a descriptor the ring just returned to this process; closed once.
        unsafe { libc::close(result) };
        return "ok".into();
    }
    outcome::<()>(Err(std::io::Error::from_raw_os_error(-result)))
}

/// A raw io_uring system call on no ring: EBADF when seccomp lets it through, EPERM when not.
fn uring_call(nr: libc::c_long) -> String {
    // SAFETY: every io_uring call with fd -1 / zero entries and null pointers fails before it
    // reads memory (EBADF / EINVAL / EFAULT) or is refused by the filter.
    let rc = unsafe {
        match nr {
            libc::SYS_io_uring_setup => libc::syscall(nr, 0, std::ptr::null_mut::<u8>()),
            _ => libc::syscall(nr, -1, 0, 0, 0, std::ptr::null_mut::<u8>(), 0),
        }
    };
    outcome(if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    })
}

fn probe(name: &str, pair: &mut (UnixStream, UnixStream)) -> String {
    match name {
        // execve itself (a spawn would fail earlier, at clone: refused quietly).
        "exec" => {
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            // SAFETY: a NUL-terminated path and a NULL-terminated argv; returns only on failure.
            unsafe { libc::execv(c"/bin/true".as_ptr(), argv.as_ptr()) };
            outcome::<()>(Err(std::io::Error::last_os_error()))
        }
        "spawn" => outcome(Command::new("/bin/true").status()),
        "passwd" => outcome(std::fs::File::open("/etc/passwd")),
        "resolv" => outcome(std::fs::read("/etc/resolv.conf")),
        "inet-socket" => outcome(std::net::UdpSocket::bind("127.0.0.1:0")),
        // What the control socket's add_hostfwd makes libslirp do: socket, bind, listen.
        "tcp-listen" => outcome(std::net::TcpListener::bind("127.0.0.1:0")),
        // An outbound connection (nobody listens on port 1: allowed means refused by TCP).
        "tcp-connect" => outcome(std::net::TcpStream::connect("127.0.0.1:1")),
        "unix-socket" => outcome(UnixStream::connect("/dev/log").or_else(
            |e| match e.raw_os_error() {
                // Refused by the filter before the path is even looked at.
                Some(libc::EPERM) => Err(e),
                // Allowed to try: the socket was created (a missing /dev/log is not the point).
                _ => Ok(UnixStream::pair()?.0),
            },
        )),
        "existing-fds" => {
            // The loop's own work: I/O on descriptors made before entry.
            let (a, b) = pair;
            outcome((|| {
                a.write_all(b"ping")?;
                let mut buf = [0u8; 4];
                b.read_exact(&mut buf)?;
                Ok(buf)
            })())
        }
        "uring-setup" => uring_call(libc::SYS_io_uring_setup),
        "uring-register" => uring_call(libc::SYS_io_uring_register),
        "uring-enter" => uring_call(libc::SYS_io_uring_enter),
        // What the stats line reports as `sandbox_refused`.
        "refused" => slirp_helper::sandbox::refused().to_string(),
        "segv" => {
            // SAFETY: deliberately not: a read of an unmapped address, to fault.
            let byte = unsafe { std::ptr::read_volatile(0x40 as *const u8) };
            format!("read {byte}")
        }
        other => panic!("unknown probe {other}"),
    }
}

#[test]
fn role_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let (mode, probes) = role.split_once(':').unwrap();
    // Descriptors the probes need are made before entry, as the helper's are.
    let mut pair = UnixStream::pair().unwrap();
    if std::env::var_os(SYSLOG).is_some() {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        // SAFETY: dup2 onto descriptor 2; `null` stays open for the call.
        assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), 2) }, 2);
        slirp_helper::diag::init();
    }
    // `+uring`: an io_uring poller (its restricted ring) made before entry, as the helper's,
    // receiving guest frames from a frontend datagram pair of its own.
    let uring = mode.ends_with("+uring");
    let (wake, _wake_w) = nix::unistd::pipe().unwrap();
    let frontend = UnixDatagram::pair().unwrap();
    frontend.0.set_nonblocking(true).unwrap();
    let mut poller = uring.then(|| {
        let poller = Poller::with_guest_frames(
            PollerKind::IoUring,
            wake.as_fd(),
            frontend.0.as_fd(),
            Some(2113),
        )
        .unwrap();
        assert_eq!(poller.kind(), PollerKind::IoUring, "io_uring fell back");
        poller
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    slirp_helper::sandbox::confine(
        mode.starts_with("restricted"),
        mode.ends_with("+api"),
        uring,
    )
    .expect("entering the sandbox");
    let mut results: Vec<String> = Vec::new();
    if let Some(poller) = poller.as_mut() {
        let fd = pair.1.as_raw_fd();
        for (name, op) in [
            ("ring_openat", ForeignOp::OpenAt),
            ("ring_socket", ForeignOp::Socket),
            ("ring_connect", ForeignOp::Connect(fd)),
            ("ring_accept", ForeignOp::Accept(listener.as_raw_fd())),
        ] {
            let result = poller.submit_foreign(op).unwrap().unwrap();
            results.push(format!("{name}={}", ring_outcome(result)));
        }
        poller.begin_fill();
        results.push(format!("ring_wait={}", outcome(poller.wait(0))));
        // What the ring is for still works: a frame into its buffer ring.
        frontend.1.send(&[0x5a; 60]).unwrap();
        let mut got = RingRecords::default();
        for _ in 0..100 {
            poller.begin_fill();
            poller.wait(10).unwrap();
            if poller.take_guest_frames(&mut got) {
                break;
            }
        }
        let received = match got.records.first() {
            Some(RingRecord {
                slot: Some(slot),
                result: 60,
            }) if got.buffers.as_ref().unwrap().frame(*slot, 60) == [0x5a; 60] => "ok".into(),
            other => format!("{other:?}"),
        };
        results.push(format!("ring_recv={received}"));
    }
    results.extend(
        probes
            .split(',')
            .map(|p| format!("{p}={}", probe(p, &mut pair))),
    );
    println!("RESULTS {}", results.join(" "));
    std::process::exit(0);
}

/// Run `probes` in a sandboxed child: `probe=outcome` pairs and the child's stderr.
fn run(mode: &str, probes: &str) -> (String, String) {
    run_with(mode, probes, &[])
}

fn run_with(mode: &str, probes: &str, env: &[(&str, &str)]) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .envs(env.iter().copied())
        .args([
            "role_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, format!("{mode}:{probes}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{mode}: child failed\n{stdout}\n{stderr}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULTS "))
        .unwrap_or_else(|| panic!("no results\n{stdout}\n{stderr}"))
        .to_string();
    (line, stderr)
}

#[test]
fn restricted_mode_forbids_exec_files_and_new_sockets() {
    let (results, stderr) = run(
        "restricted",
        "exec,passwd,resolv,inet-socket,unix-socket,existing-fds",
    );
    assert_eq!(
        results,
        "exec=EPERM passwd=EPERM resolv=EPERM inet-socket=EPERM unix-socket=EPERM existing-fds=ok"
    );
    // The refusal is said, naming the call (59 = execve on x86_64).
    assert!(stderr.contains("sandbox: refused system call"), "{stderr}");
    #[cfg(target_arch = "x86_64")]
    assert!(stderr.contains("refused system call 59 "), "{stderr}");
}

/// A fault inside the sandbox ends the process with SIGSEGV. Rust's SIGSEGV handler resets
/// the signal to its default with rt_sigaction and returns so that the fault repeats; with
/// rt_sigaction refused it returned into the same fault forever, at 100 % CPU.
#[test]
fn a_fault_after_entry_ends_the_process_instead_of_spinning() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "role_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, "restricted:segv")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the faulting process was still running after 10 s (spinning)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
}

#[test]
fn refusals_are_counted_for_the_stats_line() {
    let (results, stderr) = run("restricted", "refused,exec,refused,exec,refused");
    assert_eq!(
        results, "refused=0 exec=EPERM refused=1 exec=EPERM refused=2",
        "{stderr}"
    );
}

#[test]
fn open_mode_allows_outbound_sockets_and_resolv_conf_only() {
    let (results, stderr) = run(
        "open",
        "exec,spawn,passwd,inet-socket,unix-socket,existing-fds",
    );
    // /etc/passwd: seccomp lets openat through in open mode, Landlock refuses the path.
    let landlock = std::path::Path::new("/sys/kernel/security/landlock").exists()
        || results.contains("passwd=EACCES");
    let passwd = if landlock { "EACCES" } else { "ok" };
    assert_eq!(
        results,
        format!(
            "exec=EPERM spawn=EPERM passwd={passwd} inet-socket=ok unix-socket=EPERM \
             existing-fds=ok"
        ),
        "{stderr}"
    );
    if std::path::Path::new("/etc/resolv.conf").exists() {
        let (results, stderr) = run("open", "resolv");
        assert_eq!(results, "resolv=ok", "{stderr}");
    }
}

/// The control socket (`api`) widens each mode by what `add_hostfwd` needs (IPv4/IPv6
/// sockets, bind, listen) and nothing else: no outbound connection in restricted mode, no
/// UNIX socket, no file, no exec.
#[test]
fn api_widens_each_mode_by_bind_and_listen_only() {
    let (results, stderr) = run(
        "restricted+api",
        "exec,passwd,tcp-listen,inet-socket,tcp-connect,unix-socket,existing-fds",
    );
    assert_eq!(
        results,
        "exec=EPERM passwd=EPERM tcp-listen=ok inet-socket=ok tcp-connect=EPERM \
         unix-socket=EPERM existing-fds=ok",
        "{stderr}"
    );
    let (results, stderr) = run("restricted", "tcp-listen");
    assert_eq!(results, "tcp-listen=EPERM", "{stderr}");
    // Open mode had bind (outbound sockets bind too) but not listen.
    let (results, stderr) = run("open", "tcp-listen");
    assert_eq!(results, "tcp-listen=EPERM", "{stderr}");
    let (results, stderr) = run("open+api", "exec,tcp-listen,unix-socket,existing-fds");
    assert_eq!(
        results, "exec=EPERM tcp-listen=ok unix-socket=EPERM existing-fds=ok",
        "{stderr}"
    );
}

#[test]
fn refusals_reach_syslog_when_stderr_is_dev_null() {
    let path = std::env::temp_dir().join(format!("slirp-sandbox-syslog-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let syslog = UnixDatagram::bind(&path).unwrap();
    syslog
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let (results, stderr) = run_with("restricted", "exec", &[(SYSLOG, path.to_str().unwrap())]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(results, "exec=EPERM");
    assert!(stderr.is_empty(), "{stderr}");
    let mut buf = [0u8; 512];
    let n = syslog.recv(&mut buf).expect("a line on the syslog socket");
    let line = String::from_utf8_lossy(&buf[..n]);
    // <daemon (3) * 8 + warning (4)>, tag and pid, the refusal.
    assert!(line.starts_with("<28>bhyve-slirp-helper["), "{line}");
    assert!(line.contains("]: sandbox: refused system call"), "{line}");
}

/// With the io_uring engine, seccomp lets `io_uring_enter` through and nothing else of
/// io_uring; the ring itself, restricted to polls and the frontend's receive before entry,
/// still receives a guest frame, and refuses what seccomp would
/// refuse as a system call (it never sees a ring's requests): open, socket, connect, accept.
#[test]
fn io_uring_ring_refuses_all_but_polls_after_the_sandbox() {
    let (results, stderr) = run(
        "restricted+uring",
        "uring-setup,uring-register,uring-enter,passwd,existing-fds",
    );
    assert_eq!(
        results,
        "ring_openat=EACCES ring_socket=EACCES ring_connect=EACCES ring_accept=EACCES \
         ring_wait=ok ring_recv=ok uring-setup=EPERM uring-register=EPERM uring-enter=EBADF passwd=EPERM \
         existing-fds=ok",
        "{stderr}"
    );
    // Without the engine, not even io_uring_enter.
    let (results, stderr) = run("restricted", "uring-setup,uring-register,uring-enter");
    assert_eq!(
        results, "uring-setup=EPERM uring-register=EPERM uring-enter=EPERM",
        "{stderr}"
    );
}
