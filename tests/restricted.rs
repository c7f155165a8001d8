//! Restricted means restricted (the default: `open` absent): every outbound TCP and UDP
//! attempt of the guest, to 10.0.2.2, to 10.0.2.3 or to any other address, is refused or
//! dropped and nothing reaches a listener on the host; ICMP echo is answered by libslirp
//! itself for 10.0.2.2 and 10.0.2.3 only. (hostfwd in restricted mode: tests/hostfwd.rs.)
//!
//! Probes to addresses outside the slirp network run with the helper in a private, empty
//! network namespace (root only), so that nothing could leave the machine even if the
//! helper were wrong.
//!
//! IPv6 (`ipv6` on, still restricted): a kernel guest through slirp-frontend tries TCP and
//! UDP to the host's [::1] through fec0::2 and fec0::3 and to 2001:db8::1 (documentation
//! prefix); nothing arrives, TCP is reset by libslirp itself (no attempt was made), echo is
//! answered for libslirp's own addresses only. IPv6 forwards in restricted mode:
//! tests/e2e_ipv6.rs (`ipv6_tcp_forward_*` run without `--open`).
// e2e_common (the kernel-guest harness) and common (the frame-level one) both load
// common/process.rs and common/skip.rs by path; the two copies are never mixed.
#![allow(clippy::duplicate_mod)]

mod common;
mod e2e_common;

use common::skip::skip;
use common::*;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

/// TEST-NET-1 (RFC 5737): an address outside the slirp network.
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn start(open: bool, private_netns: bool) -> Bhyve {
    let mut cfg = ConfigBuilder::bhyve();
    if open {
        cfg = cfg.open();
    }
    Bhyve::spawn(Spawn {
        config: Some(cfg.encode()),
        private_netns,
        ..Spawn::default()
    })
}

/// The TCP answer to a guest SYN for `dst`.
fn syn_answer(bhyve: &Bhyve, dst: SocketAddrV4, sport: u16) -> Option<TcpSeg> {
    let gw = bhyve.resolve(HOST_IP, STEP).expect("gateway ARP");
    bhyve
        .send_frame(&tcp_syn_frame(gw, dst, sport, 1000))
        .unwrap();
    bhyve.recv_until(Duration::from_secs(5), |f| {
        parse_tcp(f).filter(|t| t.src == dst && t.dst.port() == sport)
    })
}

/// A UDP datagram from the guest to `dst`, `count` times.
fn send_udp(bhyve: &Bhyve, dst: SocketAddrV4, count: usize) {
    let gw = bhyve.resolve(HOST_IP, STEP).expect("gateway ARP");
    for i in 0..count {
        let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, gw)
            .ipv4(GUEST_IP.octets(), dst.ip().octets(), 64)
            .udp(40000 + i as u16, dst.port());
        let mut f = Vec::new();
        b.write(&mut f, b"restricted?").unwrap();
        bhyve.send_frame(&f).unwrap();
    }
}

fn udp_received(sock: &UdpSocket, within: Duration) -> usize {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while Instant::now() < deadline {
        if sock.recv(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

#[test]
fn restricted_tcp_to_slirp_addresses_is_reset_and_reaches_no_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let bhyve = start(false, false);
    for (i, ip) in [HOST_IP, DNS_IP].into_iter().enumerate() {
        let seg = syn_answer(&bhyve, SocketAddrV4::new(ip, port), 41000 + i as u16)
            .unwrap_or_else(|| panic!("no answer for {ip}; stderr:\n{}", bhyve.stderr()));
        assert!(seg.rst && !seg.syn, "{ip}: expected RST, got {seg:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        listener.accept().is_err(),
        "a restricted guest reached the host listener"
    );
}

#[test]
fn restricted_udp_reaches_no_host_socket_but_open_mode_does() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let restricted = start(false, false);
    send_udp(&restricted, SocketAddrV4::new(HOST_IP, port), 5);
    // To the DNS address too, on another port than 53 (never a DNS query).
    send_udp(&restricted, SocketAddrV4::new(DNS_IP, port), 5);
    assert!(
        restricted.raw_ping(HOST_IP, 8, STEP),
        "helper not answering"
    );
    assert_eq!(
        udp_received(&sock, Duration::from_secs(1)),
        0,
        "restricted UDP reached the host"
    );

    // Control: the same datagrams in open mode arrive, so the probe can see a leak.
    let open = start(true, false);
    send_udp(&open, SocketAddrV4::new(HOST_IP, port), 5);
    assert!(
        udp_received(&sock, Duration::from_secs(2)) > 0,
        "open-mode UDP did not arrive"
    );
}

#[test]
fn restricted_icmp_echo_is_answered_only_for_slirp_addresses() {
    let bhyve = start(false, is_root());
    assert!(bhyve.raw_ping(HOST_IP, 32, STEP), "10.0.2.2 unanswered");
    assert!(bhyve.raw_ping(DNS_IP, 32, STEP), "10.0.2.3 unanswered");
    if !is_root() {
        skip(
            "restricted_icmp_echo_is_answered_only_for_slirp_addresses",
            &format!("its echo to {ELSEWHERE} needs root (private network namespace)"),
        );
        return;
    }
    assert!(
        !bhyve.raw_ping(ELSEWHERE, 32, Duration::from_secs(3)),
        "{ELSEWHERE} answered"
    );
}

#[test]
fn restricted_traffic_elsewhere_is_refused() {
    if !is_root() {
        skip(
            "restricted_traffic_elsewhere_is_refused",
            "needs root to run the helper in a private network namespace",
        );
        return;
    }
    let bhyve = start(false, true);
    let seg = syn_answer(&bhyve, SocketAddrV4::new(ELSEWHERE, 80), 42000)
        .unwrap_or_else(|| panic!("no answer; stderr:\n{}", bhyve.stderr()));
    assert!(seg.rst && !seg.syn, "expected RST, got {seg:?}");
    send_udp(&bhyve, SocketAddrV4::new(ELSEWHERE, 9), 5);
    assert!(
        bhyve.raw_ping(HOST_IP, 8, STEP),
        "helper not answering after the probes"
    );
    let stats = bhyve.stats();
    assert!(
        bhyve.stderr().is_empty() || stats.is_none(),
        "unexpected output: {}",
        bhyve.stderr()
    );
}

/// `--restrict` wins over `open=true` (libvirt's and libslirp-rs's option): UDP to the host
/// stays in the helper, as without `open`.
#[test]
fn the_restrict_option_wins_over_open() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let bhyve = Bhyve::spawn(Spawn {
        config: Some(ConfigBuilder::bhyve().open().encode()),
        args: vec!["--restrict".into()],
        ..Spawn::default()
    });
    send_udp(&bhyve, SocketAddrV4::new(HOST_IP, port), 5);
    assert!(bhyve.raw_ping(HOST_IP, 8, STEP), "helper not answering");
    assert_eq!(
        udp_received(&sock, Duration::from_secs(1)),
        0,
        "UDP reached the host despite --restrict"
    );
}

#[test]
fn guest_role() {
    e2e_common::guest_role_entry();
}

#[test]
fn restricted_ipv6_reaches_nothing_and_echo_is_libslirps_own() {
    let name = "restricted_ipv6_reaches_nothing_and_echo_is_libslirps_own";
    if !e2e_common::root_or_skip(name) {
        return;
    }
    let listener = TcpListener::bind("[::1]:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let tport = listener.local_addr().unwrap().port();
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    let uport = sock.local_addr().unwrap().port();
    // Each role is this test binary again; a route to 2001:db8::/32 via libslirp's router
    // (only that prefix: still no default route) lets the guest try an outside address.
    let role = |r: &str| {
        format!(
            "{}='{r}' \"$0\" guest_role --exact --nocapture -q",
            e2e_common::ROLE_ENV
        )
    };
    let script = [
        "ip -6 route add 2001:db8::/32 via fe80::2 dev tap0".to_string(),
        role(&format!("refused [fec0::2]:{tport}")),
        role(&format!("refused [fec0::3]:{tport}")),
        role("refused [2001:db8::1]:80"),
        role(&format!("udp-send [fec0::2]:{uport} 5")),
        role(&format!("udp-send [fec0::3]:{uport} 5")),
        role("udp-send [2001:db8::1]:9 5"),
        "busybox ping -c 1 -W 2 fec0::2 >/dev/null && echo PING_HOST=ok".into(),
        "busybox ping -c 1 -W 2 2001:db8::1 >/dev/null || echo PING_ELSEWHERE=none".into(),
        "busybox ping -c 1 -W 2 fec0::2 >/dev/null && echo PING_AFTER=ok".into(),
    ]
    .join("; ");
    let me = std::env::current_exe().unwrap();
    let mut cmd = e2e_common::frontend(&["--ipv6", "--", "sh", "-c", &script]);
    cmd.arg(me);
    let out = e2e_common::run(cmd, Duration::from_secs(90));
    let report = e2e_common::text(&out);
    assert!(out.status.success(), "{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("CONNECT=refused").count(),
        3,
        "every TCP attempt is reset by libslirp\n{report}"
    );
    assert_eq!(stdout.matches("UDP_SENT=5").count(), 3, "{report}");
    for key in ["PING_HOST=ok", "PING_ELSEWHERE=none", "PING_AFTER=ok"] {
        assert!(stdout.contains(key), "{key}\n{report}");
    }
    assert!(
        listener.accept().is_err(),
        "a restricted guest reached the host's [::1] listener"
    );
    assert_eq!(
        udp_received(&sock, Duration::from_secs(1)),
        0,
        "restricted IPv6 UDP reached the host"
    );
}
