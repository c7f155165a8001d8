//! Shared harness of the end-to-end tests: the `slirp-frontend` binary with commands inside
//! its namespace, and "guest roles" — this test binary re-run inside the namespace with
//! `E2E_GUEST_ROLE` set, so the in-guest side is plain Rust.
//!
//! Rules: root only (reported as skipped, with the reason, otherwise: `skip`); traffic only to 127.0.0.0/8
//! or into the frontend's namespace (which has no default route); every client and loop
//! bounded in count and time; processes stopped only by the pid we started.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/process.rs"]
pub mod process;
#[path = "../common/skip.rs"]
pub mod skip;
use skip::skip;

pub const ROLE_ENV: &str = "E2E_GUEST_ROLE";
pub const HELPER: &str = env!("CARGO_BIN_EXE_bhyve-slirp-helper");

/// The `slirp-frontend` binary: the workspace's other crate, built into the same directory
/// as the helper (`cargo build --release` or `cargo test` at the root builds both; cargo
/// gives a test only its own package's binaries by name).
pub fn frontend_bin() -> std::path::PathBuf {
    let bin = std::path::Path::new(HELPER).with_file_name("slirp-frontend");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first (cargo build --release at the root)",
        bin.display()
    );
    bin
}

/// True when the test may run; reports it as skipped, with the reason, otherwise.
pub fn root_or_skip(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        skip(test, "needs root (network namespaces, tap devices)");
        return false;
    }
    for tool in ["ip", "busybox"] {
        if Command::new(tool).arg("-V").output().is_err()
            && Command::new(tool).arg("--help").output().is_err()
        {
            skip(
                test,
                &format!("{tool} not found (bash scripts/setup.sh installs it)"),
            );
            return false;
        }
    }
    true
}

/// The frontend with `args`, the guest side being this test binary in role `role`.
pub fn frontend_with_role(args: &[&str], role: &str) -> Command {
    let mut cmd = Command::new(frontend_bin());
    cmd.args(["--helper", HELPER]).args(args);
    let me = std::env::current_exe().expect("test binary path");
    cmd.arg("--")
        .arg(me)
        .args([
            "guest_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_ENV, role);
    cmd
}

/// The frontend with `args` (and the helper built with these tests).
pub fn frontend(args: &[&str]) -> Command {
    let mut cmd = Command::new(frontend_bin());
    cmd.args(["--helper", HELPER]).args(args);
    cmd
}

/// Run to completion within `limit` (killed by pid after it), capturing both outputs.
pub fn run(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn slirp-frontend");
    wait_output(child, limit)
}

/// Wait for `child` within `limit`, reading its piped outputs on threads (no pipe stall).
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            eprintln!("timeout after {limit:?}: SIGTERM to pid {}", child.id());
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `KEY=value` from a role's output.
pub fn field(out: &Output, key: &str) -> Option<String> {
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// A free TCP (or UDP) port on 127.0.0.1, for hostfwd rules.
pub fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Deterministic bytes (xorshift64*), `seed` picks the stream.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Walk `len` bytes of pattern `seed` in 64 KiB chunks: `f` sees each chunk; returns the
/// SHA-256 of them all.
fn pattern_chunks(
    seed: u64,
    len: usize,
    mut f: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<String> {
    let mut p = Pattern::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        p.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        f(&buf[..n])?;
        left -= n;
    }
    Ok(hex(&h.finalize()))
}

/// Send `len` pattern bytes, then half-close if `fin`; returns the SHA-256 of what was sent.
pub fn send_pattern(mut w: &TcpStream, seed: u64, len: usize, fin: bool) -> io::Result<String> {
    let sha = pattern_chunks(seed, len, |chunk| w.write_all(chunk))?;
    if fin {
        w.shutdown(Shutdown::Write)?;
    }
    Ok(sha)
}

/// Read to EOF (at most `max` bytes): (length, SHA-256).
pub fn recv_hash(mut r: &TcpStream, max: usize) -> io::Result<(usize, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
        if total > max {
            return Err(io::Error::other("more data than expected"));
        }
        h.update(&buf[..n]);
    }
    Ok((total, hex(&h.finalize())))
}

pub fn expected_hash(seed: u64, len: usize) -> String {
    pattern_chunks(seed, len, |_| Ok(())).expect("hashing cannot fail")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Both directions at once on one connection: (sent sha, received len, received sha).
pub fn bulk_both_ways(
    s: TcpStream,
    seed: u64,
    len: usize,
    fin: Fin,
) -> io::Result<(String, usize, String)> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let w = s.try_clone()?;
    let fin_after_write = fin == Fin::AfterWrite;
    let writer = std::thread::spawn(move || send_pattern(&w, seed, len, fin_after_write));
    let (rlen, rsha) = recv_hash(&s, len * 2)?;
    let ssha = writer
        .join()
        .map_err(|_| io::Error::other("writer panicked"))??;
    if fin == Fin::AfterEof {
        s.shutdown(Shutdown::Write)?;
    }
    Ok((ssha, rlen, rsha))
}

/// When a bulk side sends its FIN. The guest sends it when done writing; the host only after
/// the guest's FIN, so the guest's EOF proves that the host has every byte. (Otherwise the
/// guest may exit, and the frontend tear everything down, with its last bytes in flight.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fin {
    AfterWrite,
    AfterEof,
}

/// A host listener on 127.0.0.1:ephemeral running `serve` for each connection (own thread),
/// accepting for at most `limit`.
pub fn host_listener(
    limit: Duration,
    serve: impl Fn(TcpStream) + Send + Sync + Clone + 'static,
) -> (u16, std::thread::JoinHandle<usize>) {
    host_listener_on("127.0.0.1:0", limit, serve)
}

/// `host_listener` on `bind` (`"[::1]:0"` for the IPv6 tests).
pub fn host_listener_on(
    bind: &str,
    limit: Duration,
    serve: impl Fn(TcpStream) + Send + Sync + Clone + 'static,
) -> (u16, std::thread::JoinHandle<usize>) {
    let l = TcpListener::bind(bind).unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        let mut n = 0;
        while Instant::now() < deadline {
            match l.accept() {
                Ok((c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    n += 1;
                    let f = serve.clone();
                    std::thread::spawn(move || f(c));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        n
    });
    (port, t)
}

/// Echo everything back until EOF (timeouts bound it).
pub fn echo(mut c: TcpStream) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = c.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------
// Guest roles: run inside the namespace by `frontend_with_role`.

/// Call from a `#[test] fn guest_role()` in each test file: does nothing unless the binary
/// was started as a guest role.
pub fn guest_role_entry() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        run_role(&role, guest_role);
    }
}

/// Run `role` with `handler` and exit: 0, or 3 with a `ROLE_ERROR=` line.
pub fn run_role(role: &str, handler: impl FnOnce(&[&str]) -> io::Result<()>) -> ! {
    let words: Vec<&str> = role.split_whitespace().collect();
    let code = match handler(&words) {
        Ok(()) => 0,
        Err(e) => {
            println!("ROLE_ERROR={}", e.to_string().replace(' ', "_"));
            3
        }
    };
    let _ = io::stdout().flush();
    std::process::exit(code);
}

fn addr(s: &str) -> io::Result<SocketAddr> {
    s.parse().map_err(io::Error::other)
}

fn connect(a: &str) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr(a)?, Duration::from_secs(5))
}

fn guest_role(words: &[&str]) -> io::Result<()> {
    match words {
        // Both ways at once: prints SENT_SHA, RECV_LEN, RECV_SHA.
        ["bulk", a, len] => {
            let len: usize = len.parse().map_err(io::Error::other)?;
            let (ssha, rlen, rsha) = bulk_both_ways(connect(a)?, 1, len, Fin::AfterWrite)?;
            println!("SENT_SHA={ssha} RECV_LEN={rlen} RECV_SHA={rsha}");
            Ok(())
        }
        // N concurrent connections, each sending `len` bytes and checking the echo.
        ["conns", a, n, len] => {
            let n: usize = n.parse().map_err(io::Error::other)?;
            let len: usize = len.parse().map_err(io::Error::other)?;
            let a = a.to_string();
            let threads: Vec<_> = (0..n)
                .map(|i| {
                    let a = a.clone();
                    std::thread::spawn(move || -> io::Result<bool> {
                        let s = connect(&a)?;
                        let (ssha, rlen, rsha) =
                            bulk_both_ways(s, 100 + i as u64, len, Fin::AfterWrite)?;
                        Ok(rlen == len && ssha == rsha)
                    })
                })
                .collect();
            let ok = threads
                .into_iter()
                .map(|t| t.join().ok().and_then(|r| r.ok()).unwrap_or(false))
                .filter(|&ok| ok)
                .count();
            println!("CONNS_OK={ok}");
            Ok(())
        }
        // Expect the connection to be refused.
        ["refused", a] => {
            let outcome = match connect(a) {
                Ok(_) => "connected".to_string(),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => "refused".into(),
                Err(e) => format!("{:?}", e.kind()),
            };
            println!("CONNECT={outcome}");
            Ok(())
        }
        // Accept one TCP connection on `port`, answer `guest:` + what it sent (to EOF).
        ["tcp-serve", port] => tcp_serve_once(Ipv4Addr::UNSPECIFIED, port),
        // Echo UDP datagrams (prefixed `guest:`) until `quit` or 20 s.
        ["udp-serve", port] => udp_echo(Ipv4Addr::UNSPECIFIED, port),
        // Send COUNT small UDP datagrams to ADDR (either family), nothing awaited.
        ["udp-send", a, count] => {
            let a = addr(a)?;
            let u = UdpSocket::bind(if a.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
            for _ in 0..count.parse::<usize>().map_err(io::Error::other)? {
                u.send_to(b"restricted?", a)?;
            }
            println!("UDP_SENT={count}");
            Ok(())
        }
        // Sleep (bounded) so that the test can kill things around it.
        ["sleep", secs] => {
            std::thread::sleep(Duration::from_secs(secs.parse().map_err(io::Error::other)?));
            Ok(())
        }
        other => Err(io::Error::other(format!("unknown role {other:?}"))),
    }
}

/// Guest role: accept one TCP connection on `ip`, `port`, answer `guest:` + what it sent (to
/// EOF), print the peer's address; give up after 20 s.
pub fn tcp_serve_once(ip: impl Into<IpAddr>, port: &str) -> io::Result<()> {
    let l = TcpListener::bind((ip.into(), port.parse().map_err(io::Error::other)?))?;
    l.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match l.accept() {
            Ok((mut c, peer)) => {
                c.set_nonblocking(false)?;
                c.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut req = Vec::new();
                (&mut c).take(4096).read_to_end(&mut req)?;
                c.write_all(b"guest:")?;
                c.write_all(&req)?;
                c.shutdown(Shutdown::Write)?;
                println!("PEER={}", peer.ip());
                return Ok(());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Err(io::Error::other("no connection"))
}

/// Guest role: echo UDP datagrams on `ip`, `port` (prefixed `guest:`) until `quit` or 20 s,
/// then print how many.
pub fn udp_echo(ip: impl Into<IpAddr>, port: &str) -> io::Result<()> {
    let u = UdpSocket::bind((ip.into(), port.parse().map_err(io::Error::other)?))?;
    u.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 2048];
    let mut echoed = 0;
    while Instant::now() < deadline {
        if let Ok((n, from)) = u.recv_from(&mut buf) {
            if &buf[..n] == b"quit" {
                break;
            }
            let mut reply = b"guest:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            u.send_to(&reply, from)?;
            echoed += 1;
        }
    }
    println!("UDP_ECHOED={echoed}");
    Ok(())
}

/// Host side of the `udp-serve` roles: send `ping` to `to` (on loopback) every 300 ms until a
/// reply comes or `limit` passes, then `quit` so the guest's role ends. The reply, or empty.
pub fn udp_ping_until_reply(to: SocketAddr, limit: Duration) -> Vec<u8> {
    let local: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let u = UdpSocket::bind(local).unwrap();
    u.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while Instant::now() < deadline && reply.is_empty() {
        let _ = u.send_to(b"ping", to);
        if let Ok(n) = u.recv(&mut buf) {
            reply = buf[..n].to_vec();
        }
    }
    let _ = u.send_to(b"quit", to);
    reply
}
