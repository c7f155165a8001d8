//! Integration-test harness: the test plays bhyve.
//!
//! Owns: the socketpair bhyve would create, the helper process started on it (and only that
//! process: every kill names its pid), a captured stderr/stdout, raw frame builders/parsers, and a
//! smoltcp guest running over the socket. Every wait is bounded by a deadline so that a broken
//! helper fails a test instead of hanging it.
//!
//! Network rule: the only traffic is inside the socketpair or to 127.0.0.0/8 on the host.
#![allow(dead_code)]

pub mod ipv6;
pub mod process;
pub mod skip;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use slirp_helper::config::nvlist::{self, ByteOrder, Nvlist, Value};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, icmp, tcp, udp};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint,
    Ipv4Cidr,
};

/// The binary under test.
pub const HELPER: &str = env!("CARGO_BIN_EXE_bhyve-slirp-helper");
/// The guest's MAC (QEMU's default prefix, as a bhyve guest would have).
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// First DHCP lease and the guest address of hostfwd rules with an empty guest address.
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// libslirp's gateway / host alias.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// libslirp's DNS proxy (never queried by these tests).
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// Default bound for one step of a test (generous: the machine has 2 cores and is shared).
pub const STEP: Duration = Duration::from_secs(20);
/// Largest record this harness reads.
const RECV_BUF: usize = 128 * 1024;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// Builds the config nvlist as bhyve sends it: `device`, `backend`, the options, `vmname` last.
pub struct ConfigBuilder {
    nv: Nvlist,
    vmname: Option<Vec<u8>>,
}

impl ConfigBuilder {
    /// `-s N,virtio-net,slirp` on VM `test`.
    pub fn bhyve() -> Self {
        let mut nv = Nvlist::new();
        nv.push("device", Value::String(b"virtio-net".to_vec()));
        nv.push("backend", Value::String(b"slirp".to_vec()));
        ConfigBuilder {
            nv,
            vmname: Some(b"test".to_vec()),
        }
    }

    /// An empty list (no `device`, `backend` or `vmname`).
    pub fn empty() -> Self {
        ConfigBuilder {
            nv: Nvlist::new(),
            vmname: None,
        }
    }

    /// A STRING pair, as every bhyve config value is.
    pub fn string(mut self, key: &str, value: &str) -> Self {
        if key == "vmname" && self.vmname.is_some() {
            // bhyve appends vmname last: replace the default rather than add a pair here.
            self.vmname = Some(value.as_bytes().to_vec());
        } else {
            self.nv.push(key, Value::String(value.as_bytes().to_vec()));
        }
        self
    }

    /// The VM name as raw bytes (libnv strings are bytes, not necessarily UTF-8).
    pub fn vmname_bytes(mut self, name: &[u8]) -> Self {
        self.vmname = Some(name.to_vec());
        self
    }

    /// A NUMBER pair (`mtui`).
    pub fn number(mut self, key: &str, value: u64) -> Self {
        self.nv.push(key, Value::Number(value));
        self
    }

    /// Open mode (`-s ...,slirp,open`).
    pub fn open(self) -> Self {
        self.string("open", "true")
    }

    pub fn hostfwd(self, rules: &str) -> Self {
        self.string("hostfwd", rules)
    }

    pub fn mtui(self, mtu: u64) -> Self {
        self.number("mtui", mtu)
    }

    pub fn encode(mut self) -> Vec<u8> {
        if let Some(name) = self.vmname.take() {
            self.nv.push("vmname", Value::String(name));
        }
        nvlist::encode(&self.nv, ByteOrder::Little)
    }
}

/// The restricted default config.
pub fn restricted_config() -> Vec<u8> {
    ConfigBuilder::bhyve().encode()
}

/// Open mode.
pub fn open_config() -> Vec<u8> {
    ConfigBuilder::bhyve().open().encode()
}

// ---------------------------------------------------------------------------------------------
// Process and socket
// ---------------------------------------------------------------------------------------------

/// A pipe drained by a thread into a shared buffer.
struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Captured {
    fn new(mut src: impl Read + Send + 'static) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let thread = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match src.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        });
        Captured {
            buf,
            thread: Some(thread),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until the writer closed the pipe, so that the text is complete.
    fn finish(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if let Some(t) = &self.thread {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let _ = self.thread.take().unwrap().join();
        }
    }
}

/// Options for starting the helper.
#[derive(Default)]
pub struct Spawn {
    /// Config record to send first; `None` sends nothing.
    pub config: Option<Vec<u8>>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Run the helper in a new, empty network namespace (root only): whatever libslirp might
    /// send to a real address then cannot leave the machine.
    pub private_netns: bool,
    /// Extra command-line arguments after `-S <fd>`.
    pub args: Vec<String>,
    /// RLIMIT_NOFILE, soft and hard, for the helper (so that it cannot raise it).
    pub nofile: Option<u64>,
    /// RLIMIT_FSIZE in bytes, soft and hard: the largest file the helper may write.
    pub fsize: Option<u64>,
    /// stderr on `/dev/null`, as bhyve starts the helper (diagnostics then go to syslog).
    pub stderr_null: bool,
    /// The descriptor number the helper's socket has in the child (and `-S` names), e.g. 2.
    pub socket_fd: Option<RawFd>,
    /// Our end and the helper's end, instead of a SOCK_SEQPACKET socketpair (both CLOEXEC).
    pub sockets: Option<(OwnedFd, OwnedFd)>,
    /// Root only: run the helper in a private mount namespace with a tmpfs of this many
    /// bytes on this (existing) directory; the host never sees the mount. Read what the
    /// helper wrote there through `/proc/PID/root` while it runs.
    pub tmpfs: Option<(std::ffi::CString, usize)>,
}

/// The test in bhyve's role: one end of the socketpair and the helper process on the other.
pub struct Bhyve {
    sock: Option<OwnedFd>,
    child: Child,
    status: Option<ExitStatus>,
    stderr: Captured,
    stdout: Captured,
}

impl Bhyve {
    /// Starts the helper and sends `config` as the first record.
    pub fn start(config: &[u8]) -> Bhyve {
        Self::spawn(Spawn {
            config: Some(config.to_vec()),
            ..Spawn::default()
        })
    }

    pub fn spawn(opts: Spawn) -> Bhyve {
        // Both ends CLOEXEC, so that helpers spawned concurrently by other tests of this
        // process never inherit them (a leaked end would hide a hangup); the child clears the
        // flag on its own end only, between fork and exec.
        let (ours, theirs) = opts.sockets.unwrap_or_else(|| {
            socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            )
            .expect("socketpair")
        });
        let child_fd = theirs.as_raw_fd();
        let socket_fd = opts.socket_fd;
        let mut cmd = Command::new(HELPER);
        cmd.arg("-S")
            .arg(socket_fd.unwrap_or(child_fd).to_string())
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if opts.stderr_null {
                Stdio::null()
            } else {
                Stdio::piped()
            });
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let private_netns = opts.private_netns;
        let nofile = opts.nofile;
        let fsize = opts.fsize;
        let tmpfs = opts.tmpfs.map(|(dir, bytes)| {
            (
                dir,
                std::ffi::CString::new(format!("size={bytes}")).unwrap(),
            )
        });
        // SAFETY: runs in the forked child before exec; fcntl, setrlimit, unshare and mount
        // are async-signal-safe system calls and touch only this child (the mount only its
        // private namespace); the strings were made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                #[cfg(target_os = "linux")]
                if private_netns && libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                #[cfg(not(target_os = "linux"))]
                if private_netns {
                    return Err(io::Error::from(io::ErrorKind::Unsupported));
                }
                #[cfg(target_os = "linux")]
                if let Some((dir, size)) = &tmpfs {
                    // Private first, so that the tmpfs never propagates to the host's mounts.
                    if libc::unshare(libc::CLONE_NEWNS) != 0
                        || libc::mount(
                            c"none".as_ptr(),
                            c"/".as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        ) != 0
                        || libc::mount(
                            c"tmpfs".as_ptr(),
                            dir.as_ptr(),
                            c"tmpfs".as_ptr(),
                            0,
                            size.as_ptr().cast(),
                        ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                #[cfg(not(target_os = "linux"))]
                if tmpfs.is_some() {
                    return Err(io::Error::from(io::ErrorKind::Unsupported));
                }
                for (resource, limit) in
                    [(libc::RLIMIT_NOFILE, nofile), (libc::RLIMIT_FSIZE, fsize)]
                {
                    let Some(n) = limit else { continue };
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(resource, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(target) = socket_fd {
                    // dup2 leaves the copy without CLOEXEC; the original closes at exec.
                    if libc::dup2(child_fd, target) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    return Ok(());
                }
                let flags = libc::fcntl(child_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(child_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn bhyve-slirp-helper");
        drop(theirs);
        let stderr = match child.stderr.take() {
            Some(pipe) => Captured::new(pipe),
            None => Captured::new(io::empty()),
        };
        let stdout = Captured::new(child.stdout.take().unwrap());
        let bhyve = Bhyve {
            sock: Some(ours),
            child,
            status: None,
            stderr,
            stdout,
        };
        if let Some(config) = opts.config {
            // As bhyve: send and do not wait. A helper that refuses its command line or its
            // socket exits at once and may be gone before the config goes out; the test
            // then looks at its exit, so a send that finds the peer gone is no failure here.
            match bhyve.send_frame(&config) {
                Ok(()) => {}
                Err(e) if peer_gone(&e) => {}
                Err(e) => panic!("send the config record: {e}"),
            }
        }
        bhyve
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn fd(&self) -> RawFd {
        self.sock
            .as_ref()
            .expect("socket already closed")
            .as_raw_fd()
    }

    /// Sends one record (a frame, the config, or an empty record). Waits (bounded) while the
    /// helper's receive queue is full.
    pub fn send_frame(&self, frame: &[u8]) -> io::Result<()> {
        send_record(self.fd(), frame, Duration::from_secs(10))
    }

    /// Sends one record without waiting: false when the helper's queue is full (dropped, as
    /// bhyve drops).
    pub fn try_send_frame(&self, frame: &[u8]) -> bool {
        nix::sys::socket::send(self.fd(), frame, nix::sys::socket::MsgFlags::MSG_DONTWAIT).is_ok()
    }

    /// Reads and discards whatever the helper sent so far; the number of records.
    pub fn discard_pending(&self) -> usize {
        let mut buf = [0u8; 70000];
        let mut n = 0;
        while nix::sys::socket::recv(
            self.fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        )
        .is_ok()
        {
            n += 1;
        }
        n
    }

    /// Next record from the helper; `None` on timeout or once the helper hung up.
    pub fn recv_frame(&self, timeout: Duration) -> Option<Vec<u8>> {
        recv_record(self.fd(), timeout)
    }

    /// Receives until `f` accepts a frame, answering ARP requests for the guest address on the
    /// way (as the guest's stack would).
    pub fn recv_until<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&[u8]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let frame = self.recv_frame(left)?;
            if let Some(arp) = Arp::parse(&frame) {
                if arp.op == 1 && arp.tpa == GUEST_IP {
                    let reply = arp_frame(2, GUEST_MAC, GUEST_IP, arp.sha, arp.spa);
                    let _ = self.send_frame(&reply);
                }
            }
            if let Some(v) = f(&frame) {
                return Some(v);
            }
        }
    }

    /// ARP for the gateway from the guest address (retried every second); its MAC.
    pub fn resolve(&self, ip: Ipv4Addr, timeout: Duration) -> Option<[u8; 6]> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.send_frame(&arp_frame(1, GUEST_MAC, GUEST_IP, [0xff; 6], ip))
                .ok()?;
            let found = self.recv_until(Duration::from_secs(1), |f| {
                Arp::parse(f)
                    .filter(|a| a.op == 2 && a.spa == ip)
                    .map(|a| a.sha)
            });
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Raw ICMP echo from the guest address to `dst`; true when the matching reply came back
    /// (same id, seq and payload). Retried every second until `timeout`.
    pub fn raw_ping(&self, dst: Ipv4Addr, payload_len: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Some(mac) = self.resolve(HOST_IP, timeout) else {
            return false;
        };
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
        let mut seq = 0u16;
        while Instant::now() < deadline {
            seq += 1;
            let req = icmp_echo_frame(mac, dst, 0x4242, seq, &payload);
            if self.send_frame(&req).is_err() {
                return false;
            }
            let got = self.recv_until(Duration::from_secs(1), |f| {
                parse_echo_reply(f)
                    .filter(|r| r.src == dst && r.id == 0x4242 && r.seq == seq)
                    .map(|r| r.payload == payload)
            });
            if let Some(ok) = got {
                return ok;
            }
        }
        false
    }

    /// Every record the helper sent within `timeout` (waiting up to it for the first, then
    /// taking what is queued).
    pub fn records(&self, timeout: Duration) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        let mut wait = timeout;
        while let Some(rec) = self.recv_frame(wait) {
            all.push(rec);
            wait = Duration::from_millis(50);
        }
        all
    }

    /// `shutdown(SHUT_WR)` on bhyve's end: a half-close, the socket stays open.
    pub fn shutdown_write(&self) {
        nix::sys::socket::shutdown(self.fd(), nix::sys::socket::Shutdown::Write)
            .expect("shutdown(SHUT_WR)");
    }

    /// Closes bhyve's end of the socket (bhyve exiting).
    pub fn hang_up(&mut self) {
        self.sock = None;
    }

    pub fn signal(&mut self, sig: i32) {
        if self.try_status().is_none() {
            // SAFETY: kill(2) on the pid of the child this harness spawned and has not reaped.
            unsafe {
                libc::kill(self.pid(), sig);
            }
        }
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid");
        }
        self.status
    }

    /// Waits (bounded) for the helper to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                self.stderr.finish(Duration::from_secs(2));
                self.stdout.finish(Duration::from_secs(2));
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Exit code, panicking with the captured stderr when the helper did not exit in time or
    /// died from a signal.
    pub fn expect_exit(&mut self, timeout: Duration) -> i32 {
        match self.wait_exit(timeout) {
            Some(st) => st.code().unwrap_or_else(|| {
                panic!(
                    "helper killed by signal {:?}; stderr:\n{}",
                    st.signal(),
                    self.stderr()
                )
            }),
            None => panic!(
                "helper still running after {timeout:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit(Duration::from_secs(5));
    }

    /// libslirp's (major, minor), from the helper's start-up line "… with libslirp 4.7.0 (…)".
    pub fn libslirp_version(&self) -> (u32, u32) {
        let stderr = self.stderr();
        let version = stderr
            .split(" with libslirp ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no start-up line in stderr:\n{stderr}"));
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Waits (bounded) until stderr contains `pat`.
    pub fn wait_stderr(&self, pat: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(pat) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The counters of the last stats line on stderr (`key=value` tokens of the last line
    /// containing `rx_runt=`).
    pub fn stats(&self) -> Option<HashMap<String, u64>> {
        parse_stats(&self.stderr())
    }

    /// Asks for a stats line with SIGUSR1 and waits (bounded) for a new one.
    pub fn stats_now(&mut self, timeout: Duration) -> Option<HashMap<String, u64>> {
        let before = self.stderr().matches("rx_runt=").count();
        self.signal(libc::SIGUSR1);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let text = self.stderr();
            if text.matches("rx_runt=").count() > before && text.ends_with('\n') {
                return parse_stats(&text);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Bhyve {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn parse_stats(text: &str) -> Option<HashMap<String, u64>> {
    let line = text.lines().rev().find(|l| l.contains("rx_runt="))?;
    Some(
        line.split_whitespace()
            .filter_map(|tok| {
                let (k, v) = tok.split_once('=')?;
                Some((k.to_string(), v.trim_end_matches(',').parse().ok()?))
            })
            .collect(),
    )
}

/// A stand-in for the syslog daemon: a datagram socket at a fresh path, named to the helper
/// through its test hook `SLIRP_HELPER_SYSLOG_SOCKET`.
pub struct SyslogStandIn {
    sock: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
    lines: Mutex<Vec<String>>,
}

impl SyslogStandIn {
    pub fn new() -> SyslogStandIn {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("slirp-syslog-{}-{n}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the syslog socket");
        // The helper drops to `nobody` after connecting; connecting happens as root.
        sock.set_nonblocking(true).unwrap();
        SyslogStandIn {
            sock,
            path,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// The environment entry that points the helper at this socket.
    pub fn env(&self) -> (String, String) {
        (
            "SLIRP_HELPER_SYSLOG_SOCKET".to_string(),
            self.path.to_string_lossy().into_owned(),
        )
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.lines.lock().unwrap();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.sock.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        lines.clone()
    }

    /// Waits (bounded) for a line containing `pat`; the line.
    pub fn wait_for(&self, pat: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(pat)) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SyslogStandIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Result of running the helper to completion without a socket of ours.
pub struct Run {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs the helper with `args` (no socketpair) and waits for it, bounded; kills it on timeout.
/// Descriptor 999 is closed in the child so that `-S 999` names a closed descriptor.
pub fn run_helper(args: &[&str], timeout: Duration) -> Run {
    let mut cmd = Command::new(HELPER);
    cmd.args(args.iter().map(OsString::from))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: close(2) is async-signal-safe; fd 999 is not used by the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(999);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn bhyve-slirp-helper");
    let mut out = Captured::new(child.stdout.take().unwrap());
    let mut err = Captured::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    while child.try_wait().expect("waitpid").is_none() {
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let reaped = child.wait().expect("waitpid");
    let status = (!timed_out).then_some(reaped);
    out.finish(Duration::from_secs(2));
    err.finish(Duration::from_secs(2));
    Run {
        status,
        stdout: out.text(),
        stderr: err.text(),
    }
}

fn poll_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> libc::c_short {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n <= 0 {
        0
    } else {
        pfd.revents
    }
}

fn send_record(fd: RawFd, rec: &[u8], timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: `rec` is valid for `rec.len()` bytes.
        let n = unsafe {
            libc::send(
                fd,
                rec.as_ptr().cast(),
                rec.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_EOR,
            )
        };
        if n >= 0 {
            assert_eq!(n as usize, rec.len(), "short send on SOCK_SEQPACKET");
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(err);
                }
                poll_fd(fd, libc::POLLOUT, left.min(Duration::from_millis(100)));
            }
            _ => return Err(err),
        }
    }
}

/// One record without waiting: `Ok(Some)` a record, `Ok(None)` nothing queued, `Err` hangup.
fn recv_now(fd: RawFd, buf: &mut [u8]) -> Result<Option<usize>, ()> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n > 0 {
        return Ok(Some(n as usize));
    }
    if n == 0 {
        // An empty record and EOF both read as 0 bytes; EOF is when the peer is gone too.
        let rev = poll_fd(fd, libc::POLLIN | libc::POLLRDHUP, Duration::ZERO);
        if rev & (libc::POLLHUP | libc::POLLRDHUP) != 0 {
            return Err(());
        }
        return Ok(Some(0));
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(()),
    }
}

fn recv_record(fd: RawFd, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        match recv_now(fd, &mut buf) {
            Ok(Some(n)) => return Some(buf[..n].to_vec()),
            Ok(None) => {}
            Err(()) => return None,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        poll_fd(fd, libc::POLLIN, left);
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free UDP port on 127.0.0.1 (bound then released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------------------------

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct Arp {
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: Ipv4Addr,
    pub tha: [u8; 6],
    pub tpa: Ipv4Addr,
}

impl Arp {
    pub fn parse(f: &[u8]) -> Option<Arp> {
        if f.len() < 42 || f[12..14] != [0x08, 0x06] || f[14..20] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let mac = |o: usize| <[u8; 6]>::try_from(&f[o..o + 6]).unwrap();
        let ip = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
        Some(Arp {
            op: u16::from_be_bytes([f[20], f[21]]),
            sha: mac(22),
            spa: ip(28),
            tha: mac(32),
            tpa: ip(38),
        })
    }
}

/// An ARP request (op 1, broadcast) or reply (op 2, to `tha`).
pub fn arp_frame(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    let dst = if op == 1 { [0xff; 6] } else { tha };
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&if op == 1 { [0; 6] } else { tha });
    f.extend_from_slice(&tpa.octets());
    f
}

/// An ICMP echo request from the guest.
pub fn icmp_echo_frame(
    dst_mac: [u8; 6],
    dst: Ipv4Addr,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, dst_mac)
        .ipv4(GUEST_IP.octets(), dst.octets(), 64)
        .icmpv4_echo_request(id, seq);
    let mut f = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut f, payload).unwrap();
    f
}

/// A TCP SYN from the guest.
pub fn tcp_syn_frame(dst_mac: [u8; 6], dst: SocketAddrV4, sport: u16, seq: u32) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, dst_mac)
        .ipv4(GUEST_IP.octets(), dst.ip().octets(), 64)
        .tcp(sport, dst.port(), seq, 64240)
        .syn();
    let mut f = Vec::with_capacity(b.size(0));
    b.write(&mut f, &[]).unwrap();
    f
}

/// A TCP RST from the guest (to clean up a half-open connection).
pub fn tcp_rst_frame(dst_mac: [u8; 6], dst: SocketAddrV4, sport: u16, seq: u32) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, dst_mac)
        .ipv4(GUEST_IP.octets(), dst.ip().octets(), 64)
        .tcp(sport, dst.port(), seq, 0)
        .rst();
    let mut f = Vec::with_capacity(b.size(0));
    b.write(&mut f, &[]).unwrap();
    f
}

pub struct EchoReply {
    pub src: Ipv4Addr,
    pub id: u16,
    pub seq: u16,
    pub payload: Vec<u8>,
}

pub fn parse_echo_reply(f: &[u8]) -> Option<EchoReply> {
    use etherparse::{Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(f).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        return None;
    };
    match icmp.icmp_type() {
        Icmpv4Type::EchoReply(h) => Some(EchoReply {
            src: ip.header().source_addr(),
            id: h.id,
            seq: h.seq,
            payload: icmp.payload().to_vec(),
        }),
        _ => None,
    }
}

/// TCP segment summary.
#[derive(Debug, Clone, Copy)]
pub struct TcpSeg {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub syn: bool,
    pub ack: bool,
    pub rst: bool,
    pub seq: u32,
    pub ack_no: u32,
}

pub fn parse_tcp(f: &[u8]) -> Option<TcpSeg> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(f).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        return None;
    };
    let h = ip.header();
    Some(TcpSeg {
        src: SocketAddrV4::new(h.source_addr(), t.source_port()),
        dst: SocketAddrV4::new(h.destination_addr(), t.destination_port()),
        syn: t.syn(),
        ack: t.ack(),
        rst: t.rst(),
        seq: t.sequence_number(),
        ack_no: t.acknowledgment_number(),
    })
}

// ---------------------------------------------------------------------------------------------
// smoltcp guest
// ---------------------------------------------------------------------------------------------

/// smoltcp device over bhyve's end: each record is one Ethernet frame.
pub struct SeqpacketPhy {
    fd: RawFd,
    /// Largest Ethernet frame this guest sends (and the MTU smoltcp derives its MSS from).
    pub frame_mtu: usize,
    /// Largest frame received from the helper so far.
    pub max_rx: usize,
    /// Frames received from the helper so far.
    pub rx_frames: u64,
    /// Frames received that exceeded `rx_limit`.
    pub rx_over_limit: u64,
    /// Frame size limit checked on every received frame (`usize::MAX`: none).
    pub rx_limit: usize,
    buf: Vec<u8>,
}

pub struct PhyRx(Vec<u8>);

pub struct PhyTx {
    fd: RawFd,
}

impl phy::RxToken for PhyRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for PhyTx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        // A frame that cannot be queued within the bound is dropped, as bhyve drops it.
        let _ = send_record(self.fd, &frame, Duration::from_secs(2));
        r
    }
}

impl Device for SeqpacketPhy {
    type RxToken<'a> = PhyRx;
    type TxToken<'a> = PhyTx;

    fn receive(
        &mut self,
        _ts: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        loop {
            match recv_now(self.fd, &mut self.buf) {
                Ok(Some(0)) => continue,
                Ok(Some(n)) => {
                    self.rx_frames += 1;
                    self.max_rx = self.max_rx.max(n);
                    if n > self.rx_limit {
                        self.rx_over_limit += 1;
                    }
                    return Some((PhyRx(self.buf[..n].to_vec()), PhyTx { fd: self.fd }));
                }
                Ok(None) | Err(()) => return None,
            }
        }
    }

    fn transmit(&mut self, _ts: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(PhyTx { fd: self.fd })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.frame_mtu;
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}

/// What a DHCP exchange gave the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

/// A guest TCP/IP stack (smoltcp) attached to the helper through bhyve's socket.
pub struct Guest {
    pub bhyve: Bhyve,
    pub dev: SeqpacketPhy,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    next_port: u16,
}

impl Guest {
    /// A guest with a 1500-byte MTU (1514-byte frames).
    pub fn new(bhyve: Bhyve) -> Guest {
        Self::with_frame_mtu(bhyve, 1514)
    }

    pub fn with_frame_mtu(bhyve: Bhyve, frame_mtu: usize) -> Guest {
        let mut dev = SeqpacketPhy {
            fd: bhyve.fd(),
            frame_mtu,
            max_rx: 0,
            rx_frames: 0,
            rx_over_limit: 0,
            rx_limit: usize::MAX,
            buf: vec![0u8; RECV_BUF],
        };
        let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        cfg.random_seed = 0x5eed_0000 ^ u64::from(std::process::id());
        let iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::now());
        Guest {
            bhyve,
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            next_port: 49152,
        }
    }

    /// 10.0.2.15/24 with 10.0.2.2 as the default route, without DHCP.
    pub fn set_static(&mut self) {
        self.iface.update_ip_addrs(|a| {
            a.push(IpCidr::Ipv4(Ipv4Cidr::new(GUEST_IP, 24))).unwrap();
        });
        self.iface
            .routes_mut()
            .add_default_ipv4_route(HOST_IP)
            .unwrap();
    }

    /// Polls the stack until `f` returns `Some`, or `timeout`.
    pub fn poll_until<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&mut Guest) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            self.iface.poll(
                smoltcp::time::Instant::now(),
                &mut self.dev,
                &mut self.sockets,
            );
            if let Some(v) = f(self) {
                return Some(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let delay = self
                .iface
                .poll_delay(smoltcp::time::Instant::now(), &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50))
                .min(left);
            if !delay.is_zero() {
                let rev = poll_fd(self.dev.fd, libc::POLLIN, delay);
                if rev & libc::POLLHUP != 0 {
                    // The helper is gone: nothing will arrive; avoid spinning until the deadline.
                    thread::sleep(delay);
                }
            }
        }
    }

    /// Runs DHCP to completion and configures the interface with the lease.
    pub fn dhcp(&mut self, timeout: Duration) -> Option<Lease> {
        let h = self.sockets.add(dhcpv4::Socket::new());
        let lease = self.poll_until(timeout, |g| {
            match g.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
                Some(dhcpv4::Event::Configured(c)) => Some(Lease {
                    addr: c.address.address(),
                    prefix_len: c.address.prefix_len(),
                    router: c.router,
                    dns: c.dns_servers.iter().copied().collect(),
                }),
                _ => None,
            }
        });
        self.sockets.remove(h);
        if let Some(l) = &lease {
            self.iface.update_ip_addrs(|a| {
                a.clear();
                a.push(IpCidr::Ipv4(Ipv4Cidr::new(l.addr, l.prefix_len)))
                    .unwrap();
            });
            if let Some(r) = l.router {
                self.iface.routes_mut().add_default_ipv4_route(r).unwrap();
            }
        }
        lease
    }

    /// ICMP echo with a `payload_len`-byte payload (retried every second); true when a reply
    /// with the same identifier, sequence number and payload came back from `dst`.
    pub fn ping_sized(&mut self, dst: Ipv4Addr, payload_len: usize, timeout: Duration) -> bool {
        let ident = 0x1234;
        let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 65536]);
        let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 65536]);
        let mut sock = icmp::Socket::new(rx, tx);
        sock.bind(icmp::Endpoint::Ident(ident)).unwrap();
        let h = self.sockets.add(sock);
        let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
        let caps = ChecksumCapabilities::default();
        let mut seq = 0u16;
        let mut last_sent: Option<Instant> = None;
        let ok = self.poll_until(timeout, |g| {
            let sock = g.sockets.get_mut::<icmp::Socket>(h);
            while sock.can_recv() {
                let (data, from) = sock.recv().ok()?;
                let pkt = Icmpv4Packet::new_checked(data).ok()?;
                if let Ok(Icmpv4Repr::EchoReply {
                    ident: i,
                    seq_no,
                    data,
                }) = Icmpv4Repr::parse(&pkt, &caps)
                {
                    if from == IpAddress::Ipv4(dst)
                        && i == ident
                        && seq_no <= seq
                        && data == payload.as_slice()
                    {
                        return Some(true);
                    }
                }
            }
            if last_sent.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) && sock.can_send() {
                seq += 1;
                let repr = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data: &payload,
                };
                if let Ok(buf) = sock.send(repr.buffer_len(), IpAddress::Ipv4(dst)) {
                    repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
                    last_sent = Some(Instant::now());
                }
            }
            None
        });
        self.sockets.remove(h);
        ok.unwrap_or(false)
    }

    pub fn ping(&mut self, dst: Ipv4Addr, timeout: Duration) -> bool {
        self.ping_sized(dst, 56, timeout)
    }

    fn tcp_socket(bufsize: usize) -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; bufsize]),
            tcp::SocketBuffer::new(vec![0; bufsize]),
        )
    }

    /// Connects to `remote`; the handle once established, `None` on timeout or reset.
    pub fn tcp_connect(&mut self, remote: SocketAddrV4, timeout: Duration) -> Option<SocketHandle> {
        let h = self.sockets.add(Self::tcp_socket(256 * 1024));
        let local = self.next_port;
        self.next_port += 1;
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(*remote.ip()), remote.port()), local)
            .expect("tcp connect");
        if self.tcp_wait_established(h, timeout) {
            Some(h)
        } else {
            None
        }
    }

    /// A listening socket on `port`.
    pub fn tcp_listen(&mut self, port: u16) -> SocketHandle {
        let mut s = Self::tcp_socket(256 * 1024);
        s.listen(port).expect("tcp listen");
        self.sockets.add(s)
    }

    /// Waits until the socket is established; false on timeout or when it closed (reset).
    pub fn tcp_wait_established(&mut self, h: SocketHandle, timeout: Duration) -> bool {
        let mut seen_active = false;
        self.poll_until(timeout, |g| {
            let s = g.sockets.get::<tcp::Socket>(h);
            match s.state() {
                tcp::State::Established => Some(true),
                tcp::State::Closed if seen_active => Some(false),
                tcp::State::Listen => None,
                _ => {
                    seen_active = true;
                    None
                }
            }
        })
        .unwrap_or(false)
    }

    /// Sends all of `data` while receiving until `recv_len` bytes arrived (or the peer closed, or
    /// `timeout`); what was received.
    pub fn tcp_exchange(
        &mut self,
        h: SocketHandle,
        data: &[u8],
        recv_len: usize,
        timeout: Duration,
    ) -> Vec<u8> {
        let mut sent = 0;
        let mut got = Vec::with_capacity(recv_len);
        self.poll_until(timeout, |g| {
            let s = g.sockets.get_mut::<tcp::Socket>(h);
            while sent < data.len() && s.can_send() {
                match s.send_slice(&data[sent..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sent += n,
                }
            }
            while s.can_recv() {
                if s.recv(|b| (b.len(), got.extend_from_slice(b))).is_err() {
                    break;
                }
            }
            let done = sent == data.len() && got.len() >= recv_len;
            (done || !s.may_recv() && !s.can_recv()).then_some(())
        });
        got
    }

    /// Closes (FIN) and flushes for up to `timeout`.
    pub fn tcp_close(&mut self, h: SocketHandle, timeout: Duration) {
        self.sockets.get_mut::<tcp::Socket>(h).close();
        self.poll_until(timeout, |g| {
            let s = g.sockets.get::<tcp::Socket>(h);
            (s.send_queue() == 0).then_some(())
        });
    }

    pub fn udp_bind(&mut self, port: u16) -> SocketHandle {
        let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 65536]);
        let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 65536]);
        let mut s = udp::Socket::new(rx, tx);
        s.bind(port).expect("udp bind");
        self.sockets.add(s)
    }

    pub fn udp_recv(
        &mut self,
        h: SocketHandle,
        timeout: Duration,
    ) -> Option<(Vec<u8>, IpEndpoint)> {
        self.poll_until(timeout, |g| {
            let s = g.sockets.get_mut::<udp::Socket>(h);
            s.recv().ok().map(|(d, meta)| (d.to_vec(), meta.endpoint))
        })
    }

    pub fn udp_send(&mut self, h: SocketHandle, data: &[u8], to: IpEndpoint) {
        self.sockets
            .get_mut::<udp::Socket>(h)
            .send_slice(data, to)
            .expect("udp send");
        // Flush it out.
        self.poll_until(Duration::from_millis(200), |_| None::<()>);
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness and process figures
// ---------------------------------------------------------------------------------------------

/// Deterministic pseudo-random numbers (xorshift64*), so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index into a collection of `n` (0 when `n` is 0).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    pub fn bytes(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.next() as u8;
        }
    }
}

/// Accepts one connection on a host-side test listener within `timeout` (non-blocking accept
/// polled against a deadline); `None` when nobody connected in time.
pub fn accept_within(
    listener: &std::net::TcpListener,
    timeout: Duration,
) -> Option<std::net::TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return Some(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A `/proc/PID/status` figure in KiB (`key` such as `"VmRSS:"` or `"VmHWM:"`); 0 if absent.
pub fn status_kib(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Open descriptors of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A send failed because the helper's end is closed (it exited).
fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) || e.raw_os_error() == Some(libc::ENOTCONN)
}
