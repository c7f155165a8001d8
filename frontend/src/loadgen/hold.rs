//! N idle TCP connections held open through the helper, and the host end that accepts them.
//! Idle means no byte is ever sent: the connections only cost the helper a registered socket
//! each, which is what a `poll(2)` loop pays for on every iteration.

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect, getsockopt, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, SockaddrIn,
};
use std::io::{self, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Connections in the SYN stage at once: enough to overlap many helper loop iterations,
/// few enough that the host's accept queue (listen backlog) never overflows.
const IN_FLIGHT: usize = 256;
/// The hold-server's listen backlog (Linux caps it at net.core.somaxconn, 4096 by default).
const BACKLOG: i32 = 4096;
/// A connection that has not completed in this long counts as failed.
const CONNECT_STALL: Duration = Duration::from_secs(10);

/// Accept connections and keep them until the process ends after `lifetime`.
pub fn serve(listen_on: SocketAddrV4, lifetime: Duration) -> io::Result<()> {
    super::raise_nofile()?;
    let listener = listener(listen_on)
        .map_err(|e| io::Error::new(e.kind(), format!("listen on {listen_on}: {e}")))?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(s) => held.push(s),
                // EMFILE and friends: the client counts what it got; keep accepting later.
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    std::thread::sleep(lifetime);
    Ok(())
}

/// A listener with a backlog large enough for [`IN_FLIGHT`] connects from each of a few
/// clients (std's default backlog is 128).
fn listener(addr: SocketAddrV4) -> io::Result<TcpListener> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrIn::from(addr))?;
    listen(&fd, Backlog::new(BACKLOG).map_err(io::Error::from)?)?;
    Ok(TcpListener::from(fd))
}

/// A non-blocking connect under way.
struct Pending {
    fd: OwnedFd,
    since: Instant,
}

fn start_connect(addr: SocketAddrV4) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match connect(fd.as_raw_fd(), &SockaddrIn::from(addr)) {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(fd),
        Err(e) => Err(e.into()),
    }
}

/// What `hold` achieved.
#[derive(Debug, Default)]
struct Tally {
    held: Vec<OwnedFd>,
    failed: usize,
}

/// Open `n` connections to `addr` (for at most `connect_limit`), report, keep them open until
/// `lifetime` after the start.
pub fn hold(
    n: usize,
    addr: SocketAddrV4,
    connect_limit: Duration,
    lifetime: Duration,
) -> io::Result<()> {
    let start = Instant::now();
    let limit = super::raise_nofile()?;
    if limit < n as u64 + 16 {
        return Err(io::Error::other(format!(
            "RLIMIT_NOFILE hard limit {limit} is below the {n} connections asked for"
        )));
    }
    let tally = open_all(n, addr, start + connect_limit)?;
    println!(
        "hold requested={n} held={} failed={} secs={:.2}",
        tally.held.len(),
        tally.failed,
        start.elapsed().as_secs_f64()
    );
    // The runner waits for this line before it measures.
    io::stdout().flush()?;
    std::thread::sleep(lifetime.saturating_sub(start.elapsed()));
    Ok(())
}

fn open_all(n: usize, addr: SocketAddrV4, deadline: Instant) -> io::Result<Tally> {
    let mut tally = Tally::default();
    let mut pending: Vec<Pending> = Vec::with_capacity(IN_FLIGHT);
    let mut started = 0;
    while tally.held.len() + tally.failed < n && Instant::now() < deadline {
        while pending.len() < IN_FLIGHT && started < n {
            started += 1;
            match start_connect(addr) {
                Ok(fd) => pending.push(Pending {
                    fd,
                    since: Instant::now(),
                }),
                Err(_) => tally.failed += 1,
            }
        }
        let ready = wait_writable(&pending)?;
        let now = Instant::now();
        let mut still = Vec::with_capacity(IN_FLIGHT);
        for (p, done) in pending.drain(..).zip(ready) {
            if done {
                // Writable or in error: SO_ERROR says which.
                match getsockopt(&p.fd, sockopt::SocketError) {
                    Ok(0) => tally.held.push(p.fd),
                    _ => tally.failed += 1,
                }
            } else if now - p.since > CONNECT_STALL {
                tally.failed += 1;
            } else {
                still.push(p);
            }
        }
        pending = still;
    }
    tally.failed += pending.len() + (n - started);
    Ok(tally)
}

/// Which pending connects have finished (either way), waiting at most 100 ms.
fn wait_writable(pending: &[Pending]) -> io::Result<Vec<bool>> {
    let mut fds: Vec<PollFd<'_>> = pending
        .iter()
        .map(|p| PollFd::new(p.fd.as_fd(), PollFlags::POLLOUT))
        .collect();
    match poll(&mut fds, PollTimeout::from(100u8)) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(io::Error::other(format!("poll: {e}"))),
    }
    Ok(fds
        .iter()
        .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_connections_over_loopback() {
        let l = listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        let t = open_all(50, addr, Instant::now() + Duration::from_secs(10)).unwrap();
        assert_eq!((t.held.len(), t.failed), (50, 0));
    }

    #[test]
    fn refused_connections_count_as_failed() {
        // Bound and never listening: connects are refused.
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        let any: SocketAddrV4 = "127.0.0.1:0".parse().unwrap();
        nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrIn::from(any)).unwrap();
        let bound: SockaddrIn = nix::sys::socket::getsockname(fd.as_raw_fd()).unwrap();
        let addr = SocketAddrV4::new(bound.ip(), bound.port());
        let t = open_all(5, addr, Instant::now() + Duration::from_secs(10)).unwrap();
        assert_eq!((t.held.len(), t.failed), (0, 5));
    }
}
