//! Harness of the readiness-backend end-to-end tests (`tests/e2e_poller.rs`): a running
//! `slirp-frontend` whose helper we watch from outside (CPU time and descriptors from
//! `/proc/PID`, counters through SIGUSR1), host-side echo servers on 127.0.0.1, a directory
//! the test and the in-namespace guest role use to hand over between phases, and the guest
//! roles themselves (this test binary re-run inside the namespace, as `e2e_common` does).
//!
//! Rules: traffic only to 127.0.0.1 (reached from the guest as 10.0.2.2) or inside the
//! frontend's namespace (which has no default route); every loop bounded in count and time;
//! processes stopped only by the pid we started.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Role names of this module start with this (the others are `e2e_common`'s).
pub const ROLE_PREFIX: &str = "poller-";

/// The end-to-end tests of one binary share the host's port 53 and the CPU they measure:
/// they run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------
// The helper seen from outside.

/// A process watched through `/proc/PID`.
#[derive(Debug, Clone, Copy)]
pub struct Proc(pub i32);

impl Proc {
    /// utime + stime in seconds (whole thread group).
    pub fn cpu_secs(self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .unwrap_or_else(|e| panic!("/proc/{}/stat: {e} (did the helper die?)", self.0));
        // Fields after the command name (which may hold spaces): state is field 3, utime 14,
        // stime 15.
        let rest = stat.rsplit_once(')').expect("stat has a command name").1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / clock_ticks_per_sec()
    }

    /// Number of open descriptors.
    pub fn fd_count(self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0))
            .unwrap_or_else(|e| panic!("/proc/{}/fd: {e} (did the helper die?)", self.0))
            .count()
    }

    /// Running (not gone, not a zombie).
    pub fn alive(self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.0)) {
            Err(_) => false,
            Ok(s) => s
                .rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z')),
        }
    }
}

fn clock_ticks_per_sec() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// The helper's counters line (`key=value ...`), as numbers.
pub type Stats = BTreeMap<String, u64>;

pub fn parse_stats(line: &str) -> Stats {
    line.split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn stat(s: &Stats, key: &str) -> u64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no {key}= in the stats line {s:?}"))
}

// ---------------------------------------------------------------------------------------
// The frontend run: its helper pid, its stderr as it comes (for SIGUSR1 answers).

pub struct FrontendRun {
    child: Option<Child>,
    pub helper: Proc,
    lines: Receiver<String>,
    stderr_all: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    stdout_thread: Option<JoinHandle<Vec<u8>>>,
}

/// What a finished run printed.
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    pub fn field(&self, key: &str) -> Option<String> {
        self.stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
    }
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl FrontendRun {
    /// Start `frontend_with_role(args, role)` and wait (up to 30 s) for the helper pid.
    pub fn start(args: &[&str], role: &str) -> FrontendRun {
        let mut cmd = super::e2e_common::frontend_with_role(args, role);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn slirp-frontend");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        let stderr_all = Arc::new(Mutex::new(Vec::new()));
        let all = stderr_all.clone();
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let stdout_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let mut run = FrontendRun {
            child: Some(child),
            helper: Proc(0),
            lines,
            stderr_all,
            stderr_thread: Some(stderr_thread),
            stdout_thread: Some(stdout_thread),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while run.helper.0 == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match run.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("helper pid ").nth(1) {
                        let pid = rest.split_whitespace().next().and_then(|p| p.parse().ok());
                        run.helper = Proc(pid.expect("a pid after 'helper pid'"));
                    }
                }
                Err(_) => panic!(
                    "no 'helper pid' line from slirp-frontend within 30 s; stderr:\n{}",
                    run.stderr_so_far()
                ),
            }
        }
        run
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr_all.lock().unwrap().join("\n")
    }

    /// Whether the frontend is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Panic with what was printed unless both the frontend and its helper are running.
    pub fn assert_running(&mut self, when: &str) {
        if !self.running() || !self.helper.alive() {
            panic!(
                "{when}: the frontend or the helper (pid {}) ended; stderr:\n{}",
                self.helper.0,
                self.stderr_so_far()
            );
        }
    }

    /// SIGUSR1 to the helper, and the counters line it prints (within 5 s).
    pub fn stats(&mut self) -> Stats {
        while self.lines.try_recv().is_ok() {}
        kill(Pid::from_raw(self.helper.0), Signal::SIGUSR1).expect("SIGUSR1 to the helper");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("bhyve-slirp-helper: rx_frames=") => {
                    return parse_stats(&line)
                }
                Ok(_) => {}
                Err(_) => panic!(
                    "no counters line within 5 s of SIGUSR1 to the helper (pid {}); stderr:\n{}",
                    self.helper.0,
                    self.stderr_so_far()
                ),
            }
        }
    }

    /// Wait up to `limit` for the frontend to exit (SIGTERM, then SIGKILL, to its pid after
    /// that), and collect what it printed.
    pub fn finish(mut self, limit: Duration) -> RunOutput {
        let mut child = self.child.take().expect("not finished yet");
        let status = wait_bounded(&mut child, limit);
        let stdout = self
            .stdout_thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        RunOutput {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: self.stderr_so_far(),
        }
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            eprintln!("timeout after {limit:?}: SIGTERM to pid {}", child.id());
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let grace = Instant::now() + Duration::from_secs(10);
            while Instant::now() < grace {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    return status;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            return child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for FrontendRun {
    /// A failed assertion must not leave the frontend, its helper or its namespace behind:
    /// SIGTERM makes the frontend tear all three down.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = wait_bounded(&mut child, Duration::ZERO);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hand-over between the test and the guest role: files in a directory of /tmp, which the
// namespace shares (only the network is separate).

pub struct SyncDir(pub PathBuf);

impl SyncDir {
    pub fn new(tag: &str) -> SyncDir {
        let dir = std::env::temp_dir().join(format!("e2e-poller-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the hand-over directory");
        SyncDir(dir)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }

    pub fn signal(&self, name: &str) {
        signal(&self.0, name, "").expect("write a hand-over file");
    }

    /// The contents of `name` once it exists, polling up to `limit`; `on_poll` runs between
    /// polls (sampling, liveness checks).
    pub fn wait(&self, name: &str, limit: Duration, on_poll: impl FnMut()) -> Option<String> {
        wait_file(&self.0, name, limit, on_poll)
    }
}

impl Drop for SyncDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write `name` atomically (the reader never sees half of it).
fn signal(dir: &Path, name: &str, contents: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, dir.join(name))
}

fn wait_file(dir: &Path, name: &str, limit: Duration, mut on_poll: impl FnMut()) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join(name)) {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        on_poll();
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Host side: echo servers on 127.0.0.1, stopped by a flag (and a deadline) when dropped.

/// Length of one request of the TCP storm: `M NNNNNNNN\n` (M: how it ends, N: connection id).
pub const TCP_REQUEST_LEN: usize = 11;

/// How a storm connection ends, by its id: the four ways a libslirp TCP socket is torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The host closes first (FIN): libslirp reads EOF, then waits in TIME_WAIT.
    HostFin,
    /// The guest closes first (FIN).
    GuestFin,
    /// The guest resets (RST): libslirp drops the connection at once.
    GuestRst,
    /// The host resets (SO_LINGER 0): libslirp's read fails with ECONNRESET.
    HostRst,
}

impl Ending {
    pub fn of(id: usize) -> Ending {
        [
            Ending::HostFin,
            Ending::GuestFin,
            Ending::GuestRst,
            Ending::HostRst,
        ][id % 4]
    }

    fn code(self) -> u8 {
        b"0123"[self as usize]
    }
}

/// Every this many TCP ids, the guest connects to a host port where nothing listens.
pub const REFUSED_EVERY: usize = 10;

/// A port on 127.0.0.1 that refuses connections and that nobody else can take while we hold
/// it: bound, never listening (the kernel answers a SYN with RST).
pub struct RefusingPort {
    pub port: u16,
    _sock: std::os::fd::OwnedFd,
}

impl RefusingPort {
    pub fn new() -> RefusingPort {
        use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType};
        use nix::sys::socket::{SockaddrIn, SockaddrLike};
        let sock = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            &SockaddrIn::new(127, 0, 0, 1, 0),
        )
        .expect("bind 127.0.0.1:0");
        let addr: SockaddrIn =
            getsockname(std::os::fd::AsRawFd::as_raw_fd(&sock)).expect("getsockname");
        debug_assert_eq!(addr.family(), Some(AddressFamily::Inet));
        RefusingPort {
            port: addr.port(),
            _sock: sock,
        }
    }
}

/// TCP on 127.0.0.1:ephemeral. Per connection: read one request, echo it, then end it as the
/// request's [`Ending`] says. A pool of workers serves accepted connections; the accept loop
/// polls a stop flag.
pub struct TcpStormServer {
    pub port: u16,
    pub served: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

const TCP_WORKERS: usize = 16;

impl TcpStormServer {
    pub fn start(limit: Duration) -> TcpStormServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::sync_channel::<TcpStream>(1024);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for _ in 0..TCP_WORKERS {
            let rx = rx.clone();
            let (served, failed) = (served.clone(), failed.clone());
            threads.push(std::thread::spawn(move || loop {
                let next = rx.lock().unwrap().recv();
                let Ok(conn) = next else { break };
                match serve_storm_connection(conn) {
                    Ok(()) => served.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }));
        }
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((c, _)) => {
                        if c.set_nonblocking(false).is_ok() && tx.send(c).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        wait_readable(&listener, 50);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            // Dropping `tx` ends the workers once the queue is drained.
        }));
        TcpStormServer {
            port,
            served,
            failed,
            stop,
            threads,
        }
    }
}

impl Drop for TcpStormServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn wait_readable(fd: &impl std::os::fd::AsFd, timeout_ms: u16) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(timeout_ms));
}

fn serve_storm_connection(mut c: TcpStream) -> io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = [0u8; TCP_REQUEST_LEN];
    c.read_exact(&mut req)?;
    c.write_all(&req)?;
    match req[0] {
        b'0' => {}
        b'3' => reset_on_close(&c)?,
        _ => {
            // The guest ends it (FIN or RST): wait for that, bounded by the read timeout.
            let mut buf = [0u8; 64];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// UDP echo on 127.0.0.1:`port` (one thread; stops on drop or at its deadline).
pub struct UdpEchoServer {
    pub echoed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEchoServer {
    /// Bind 127.0.0.1:`port`, retrying up to `wait` while it is in use.
    pub fn start(port: u16, wait: Duration, limit: Duration) -> io::Result<UdpEchoServer> {
        let until = Instant::now() + wait;
        let sock = loop {
            match UdpSocket::bind(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if Instant::now() < until && e.kind() == io::ErrorKind::AddrInUse => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        };
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicUsize::new(0));
        let (s, n) = (stop.clone(), echoed.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((len, from)) = sock.recv_from(&mut buf) {
                    if sock.send_to(&buf[..len], from).is_ok() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(UdpEchoServer {
            echoed,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Guest roles (run inside the namespace).

/// Call first from the test file's `guest_role` test: runs a `poller-*` role and exits;
/// returns for anything else.
pub fn guest_role_entry() {
    let Ok(role) = std::env::var(super::e2e_common::ROLE_ENV) else {
        return;
    };
    if role.starts_with(ROLE_PREFIX) {
        super::e2e_common::run_role(&role, guest_role);
    }
}

fn num<T: std::str::FromStr>(s: &str) -> io::Result<T> {
    s.parse()
        .map_err(|_| io::Error::other(format!("not a number: {s}")))
}

fn sock_addr(s: &str) -> io::Result<SocketAddr> {
    s.parse().map_err(io::Error::other)
}

/// How long the test may take to say `go` / `finish`.
const HANDOVER_LIMIT: Duration = Duration::from_secs(180);

fn wait_for(dir: &Path, name: &str) -> io::Result<()> {
    wait_file(dir, name, HANDOVER_LIMIT, || {})
        .map(drop)
        .ok_or_else(|| io::Error::other(format!("no {name} from the test")))
}

fn guest_role(words: &[&str]) -> io::Result<()> {
    match words {
        // ready → (go) → storm → (finish) → one more TCP round trip and UDP flow.
        ["poller-storm", dir, tcp, refused, udp, count, secs] => {
            let dir = Path::new(dir);
            let (tcp, udp) = (sock_addr(tcp)?, sock_addr(udp)?);
            let addrs = StormAddrs {
                tcp,
                refused: sock_addr(refused)?,
                udp,
            };
            signal(dir, "ready", "")?;
            wait_for(dir, "go")?;
            let report = storm(addrs, num(count)?, Duration::from_secs(num(secs)?));
            signal(dir, "storm", &report)?;
            println!("{report}");
            wait_for(dir, "finish")?;
            let after_tcp = tcp_once(tcp, 1_000_000_000 - 1).is_ok();
            let after_udp = udp_once(udp, 1_000_000_000 - 1).is_ok();
            println!("AFTER_TCP={after_tcp} AFTER_UDP={after_udp}");
            Ok(())
        }
        // ready → (finish): a guest that does nothing.
        ["poller-idle", dir] => {
            let dir = Path::new(dir);
            signal(dir, "ready", "")?;
            wait_for(dir, "finish")?;
            println!("IDLE_DONE=1");
            Ok(())
        }
        other => Err(io::Error::other(format!("unknown role {other:?}"))),
    }
}

/// Guest threads opening TCP connections one after another, and UDP flows.
const GUEST_TCP_THREADS: usize = 4;
const GUEST_UDP_THREADS: usize = 2;

#[derive(Clone, Copy)]
struct StormAddrs {
    tcp: SocketAddr,
    /// Where nothing listens (every [`REFUSED_EVERY`]th TCP id).
    refused: SocketAddr,
    udp: SocketAddr,
}

/// Up to `count` TCP connections and `count` UDP flows (each a new socket, so a new socket
/// in libslirp), as fast as they go, until `limit`. One `STORM key=value...` line.
fn storm(addrs: StormAddrs, count: usize, limit: Duration) -> String {
    let start = Instant::now();
    let deadline = start + limit;
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let spawn = |udp_flows: bool, next: Arc<AtomicUsize>, ok: Arc<AtomicUsize>| {
        let errors = errors.clone();
        std::thread::spawn(move || {
            let mut finished = None;
            while Instant::now() < deadline {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= count {
                    break;
                }
                let result = if udp_flows {
                    udp_once(addrs.udp, id)
                } else if id % REFUSED_EVERY == REFUSED_EVERY - 1 {
                    tcp_refused(addrs.refused)
                } else {
                    tcp_once(addrs.tcp, id)
                };
                match result {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let mut errors = errors.lock().unwrap();
                        if errors.len() < 5 {
                            let what = if udp_flows { "udp" } else { "tcp" };
                            errors.push(format!("{what}#{id}:{e}").replace(' ', "_"));
                        }
                    }
                }
                finished = Some(Instant::now());
            }
            finished
        })
    };
    let counters: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let [tcp_next, tcp_ok, udp_next, udp_ok] = [0, 1, 2, 3].map(|i| counters[i].clone());
    let tcp_threads: Vec<_> = (0..GUEST_TCP_THREADS)
        .map(|_| spawn(false, tcp_next.clone(), tcp_ok.clone()))
        .collect();
    let udp_threads: Vec<_> = (0..GUEST_UDP_THREADS)
        .map(|_| spawn(true, udp_next.clone(), udp_ok.clone()))
        .collect();
    let end_of = |threads: Vec<JoinHandle<Option<Instant>>>| {
        threads
            .into_iter()
            .filter_map(|t| t.join().ok().flatten())
            .max()
            .map_or(0.0, |t| (t - start).as_secs_f64())
    };
    let tcp_secs = end_of(tcp_threads);
    let udp_secs = end_of(udp_threads);
    let attempted = |next: &AtomicUsize| next.load(Ordering::Relaxed).min(count);
    let (tcp_tried, udp_tried) = (attempted(&tcp_next), attempted(&udp_next));
    let (tcp_ok, udp_ok) = (
        tcp_ok.load(Ordering::Relaxed),
        udp_ok.load(Ordering::Relaxed),
    );
    let errors = errors.lock().unwrap().join(",");
    format!(
        "STORM tcp_tried={tcp_tried} tcp_ok={tcp_ok} tcp_secs={tcp_secs:.3} \
         udp_tried={udp_tried} udp_ok={udp_ok} udp_secs={udp_secs:.3} \
         secs={:.3} errors={}",
        start.elapsed().as_secs_f64(),
        if errors.is_empty() { "none" } else { &errors }
    )
}

/// Close with RST instead of FIN.
fn reset_on_close(s: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::Linger, &linger)
        .map_err(io::Error::from)
}

/// One short TCP connection: request, echo, then the [`Ending`] of `id`.
pub fn tcp_once(addr: SocketAddr, id: usize) -> io::Result<()> {
    let ending = Ending::of(id);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let req = format!("{} {:08}\n", ending.code() as char, id % 100_000_000);
    debug_assert_eq!(req.len(), TCP_REQUEST_LEN);
    s.write_all(req.as_bytes())?;
    let mut echo = [0u8; TCP_REQUEST_LEN];
    s.read_exact(&mut echo)?;
    if echo != req.as_bytes() {
        return Err(io::Error::other("wrong echo"));
    }
    let mut rest = [0u8; 16];
    match ending {
        Ending::HostFin => {
            if s.read(&mut rest)? != 0 {
                return Err(io::Error::other("data after the echo"));
            }
        }
        Ending::HostRst => match s.read(&mut rest) {
            // libslirp passes the host's reset on as RST (or, had it read EOF first, FIN).
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(_) => return Err(io::Error::other("data after the echo")),
            Err(e) => return Err(e),
        },
        Ending::GuestFin => s.shutdown(Shutdown::Write)?,
        Ending::GuestRst => reset_on_close(&s)?,
    }
    Ok(())
}

/// A connection to a host port where nothing listens: libslirp must answer RST.
pub fn tcp_refused(addr: SocketAddr) -> io::Result<()> {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Err(io::Error::other(
            "connected to a port where nothing listens",
        )),
    }
}

/// One UDP flow: a new socket (new source port), one datagram and its echo (three tries).
pub fn udp_once(addr: SocketAddr, id: usize) -> io::Result<()> {
    let u = UdpSocket::bind("0.0.0.0:0")?;
    u.connect(addr)?;
    u.set_read_timeout(Some(Duration::from_millis(500)))?;
    let msg = format!("u {id:08}");
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        u.send(msg.as_bytes())?;
        // A late echo of an earlier try is as good as this one's.
        if let Ok(n) = u.recv(&mut buf) {
            if &buf[..n] == msg.as_bytes() {
                return Ok(());
            }
        }
    }
    Err(io::Error::other("no echo after 3 tries"))
}
