//! Through the real helper and libslirp: when a persistent poller's wait reported nothing for
//! libslirp's sockets, the loop tells `slirp_pollfds_poll` to skip its socket walk
//! (`select_error`), and that changes nothing the guest can see. With a TCP connection open
//! and idle (its socket registered, nothing to read), guest pings to 10.0.2.2 (answered by
//! libslirp itself, no socket) are answered and counted as skipped walks; the connection then
//! still moves data both ways. The poll backend (the C helper's loop) never skips.

mod common;

use common::*;
use slirp_helper::poller::PollerKind;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

const PINGS: u64 = 20;

fn config(poller: &str) -> Vec<u8> {
    ConfigBuilder::bhyve()
        .open()
        .string("poller", poller)
        .encode()
}

/// Pings with an idle TCP connection held; the `poll_walks_skipped` the pings added (`None`
/// when the stats line has no such field), after checking the connection still works.
fn pings_beside_an_idle_connection(poller: &str) -> Option<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut guest = Guest::new(Bhyve::start(&config(poller)));
    guest.dhcp(STEP).expect("DHCP");
    let h = guest
        .tcp_connect(SocketAddrV4::new(HOST_IP, port), STEP)
        .unwrap_or_else(|| panic!("{poller}: connect failed; {}", guest.bhyve.stderr()));
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + STEP;
    let mut host_end = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{poller}: the connection never reached the host: {e}"),
        }
    };
    host_end.set_nonblocking(false).unwrap();
    host_end
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let before = guest.bhyve.stats_now(STEP).expect("stats line");
    for i in 0..PINGS {
        assert!(
            guest.ping(HOST_IP, STEP),
            "{poller}: ping {i} unanswered; stderr:\n{}",
            guest.bhyve.stderr()
        );
    }
    let after = guest.bhyve.stats_now(STEP).expect("stats line");

    // The walks that did run still serve the connection, both ways.
    host_end.write_all(b"from the host").unwrap();
    let got = guest.tcp_exchange(h, b"from the guest", 13, STEP);
    assert_eq!(got, b"from the host", "{poller}");
    // Keeps the guest stack polled until the host acknowledged what the guest sent.
    guest.tcp_close(h, STEP);
    let mut buf = [0u8; 14];
    host_end.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from the guest", "{poller}");

    let skipped =
        |stats: &std::collections::HashMap<String, u64>| stats.get("poll_walks_skipped").copied();
    Some(skipped(&after)? - skipped(&before).expect("field in both lines"))
}

#[test]
fn persistent_poller_skips_the_socket_walk_and_guests_notice_nothing() {
    let skipped = pings_beside_an_idle_connection(PollerKind::platform_default().name())
        .expect("poll_walks_skipped in the stats line");
    // Every ping is at least one iteration in which only the frontend was readable.
    assert!(
        skipped >= PINGS,
        "only {skipped} walks skipped for {PINGS} pings"
    );
}

#[test]
fn poll_backend_never_skips_the_socket_walk() {
    assert_eq!(pings_beside_an_idle_connection("poll").unwrap_or(0), 0);
}

#[cfg(target_os = "linux")]
#[test]
fn io_uring_skips_the_socket_walk_and_guests_notice_nothing() {
    let skipped = pings_beside_an_idle_connection(PollerKind::IoUring.name())
        .expect("poll_walks_skipped in the stats line");
    assert!(
        skipped >= PINGS,
        "only {skipped} walks skipped for {PINGS} pings"
    );
}
