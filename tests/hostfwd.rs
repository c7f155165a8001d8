//! hostfwd: host 127.0.0.1:HPORT reaches the guest's GPORT (TCP and UDP).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use smoltcp::wire::{IpAddress, IpEndpoint};

const GPORT: u16 = 2222;
const GPORT_UDP: u16 = 5353;

struct Ports {
    tcp: u16,
    udp: u16,
}

fn start(open: bool) -> (Guest, Ports) {
    let ports = Ports {
        tcp: free_tcp_port(),
        udp: free_udp_port(),
    };
    let rules = format!(
        "tcp:127.0.0.1:{}-:{GPORT};udp:127.0.0.1:{}-:{GPORT_UDP}",
        ports.tcp, ports.udp
    );
    let mut cfg = ConfigBuilder::bhyve().hostfwd(&rules);
    if open {
        cfg = cfg.open();
    }
    let mut guest = Guest::new(Bhyve::start(&cfg.encode()));
    guest.set_static();
    // Teaches libslirp the guest's MAC and proves the helper is up.
    assert!(
        guest.ping(HOST_IP, STEP),
        "no ping reply; stderr:\n{}",
        guest.bhyve.stderr()
    );
    (guest, ports)
}

fn connect_within(addr: SocketAddrV4, timeout: Duration) -> TcpStream {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

#[test]
fn tcp_hostfwd_carries_data_both_ways() {
    let (mut guest, ports) = start(false);
    let listen = guest.tcp_listen(GPORT);
    let to_guest = pattern(256 * 1024, 3);
    let to_host = pattern(256 * 1024, 4);
    let (to_guest_h, len_back) = (to_guest.clone(), to_host.len());
    let addr = SocketAddrV4::new([127, 0, 0, 1].into(), ports.tcp);
    let host = thread::spawn(move || {
        let mut s = connect_within(addr, Duration::from_secs(20));
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(&to_guest_h).expect("host write");
        let mut back = vec![0u8; len_back];
        s.read_exact(&mut back).expect("host read");
        back
    });
    assert!(
        guest.tcp_wait_established(listen, Duration::from_secs(30)),
        "hostfwd connection never reached the guest; stderr:\n{}",
        guest.bhyve.stderr()
    );
    {
        let s = guest.sockets.get::<smoltcp::socket::tcp::Socket>(listen);
        let remote = s.remote_endpoint().expect("remote endpoint");
        assert_eq!(
            remote.addr,
            IpAddress::Ipv4(HOST_IP),
            "hostfwd source address"
        );
        assert_eq!(s.local_endpoint().unwrap().addr, IpAddress::Ipv4(GUEST_IP));
    }
    let got = guest.tcp_exchange(listen, &to_host, to_guest.len(), Duration::from_secs(90));
    assert_eq!(
        got.len(),
        to_guest.len(),
        "guest received {} bytes",
        got.len()
    );
    assert_eq!(Sha256::digest(&got), Sha256::digest(&to_guest));
    guest.tcp_close(listen, Duration::from_secs(10));
    let back = host.join().expect("host thread");
    assert_eq!(Sha256::digest(&back), Sha256::digest(&to_host));
}

/// Host sends datagrams (every 500 ms) until the guest's socket receives one; returns the
/// guest's view of the sender.
fn udp_to_guest(
    guest: &mut Guest,
    host: &UdpSocket,
    port: u16,
    sock: smoltcp::iface::SocketHandle,
) -> IpEndpoint {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        host.send_to(b"ping-udp", ("127.0.0.1", port)).unwrap();
        if let Some((data, from)) = guest.udp_recv(sock, Duration::from_millis(500)) {
            assert_eq!(data, b"ping-udp");
            return from;
        }
    }
    panic!(
        "datagram to 127.0.0.1:{port} never reached the guest; stderr:\n{}",
        guest.bhyve.stderr()
    );
}

#[test]
fn udp_hostfwd_open_mode_round_trip() {
    let (mut guest, ports) = start(true);
    let sock = guest.udp_bind(GPORT_UDP);
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let from = udp_to_guest(&mut guest, &host, ports.udp, sock);
    assert_eq!(from.addr, IpAddress::Ipv4(HOST_IP));
    let deadline = Instant::now() + STEP;
    let mut buf = [0u8; 64];
    loop {
        guest.udp_send(sock, b"pong-udp", from);
        match host.recv_from(&mut buf) {
            Ok((n, peer)) => {
                assert_eq!(&buf[..n], b"pong-udp");
                assert_eq!(
                    peer.port(),
                    ports.udp,
                    "reply comes from the forwarded port"
                );
                break;
            }
            Err(_) if Instant::now() < deadline => continue,
            Err(e) => panic!(
                "no UDP reply on the host: {e}; stderr:\n{}",
                guest.bhyve.stderr()
            ),
        }
    }
}

#[test]
fn udp_hostfwd_restricted_delivers_to_guest_but_drops_guest_udp() {
    // hostfwd works in restricted mode, but libslirp drops every guest UDP datagram
    // (DHCP/TFTP aside), replies included.
    let (mut guest, ports) = start(false);
    let sock = guest.udp_bind(GPORT_UDP);
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let from = udp_to_guest(&mut guest, &host, ports.udp, sock);
    let mut buf = [0u8; 64];
    for _ in 0..4 {
        guest.udp_send(sock, b"pong-udp", from);
        if let Ok((n, peer)) = host.recv_from(&mut buf) {
            panic!(
                "restricted guest UDP reached the host: {:?} from {peer}",
                &buf[..n]
            );
        }
    }
}

#[test]
fn hangup_resets_forwarded_connections_instead_of_closing_them() {
    // With the guest gone, a host peer must see a reset, not a clean end of stream that could
    // pass a cut-off transfer for a complete one.
    let (mut guest, ports) = start(false);
    let listen = guest.tcp_listen(GPORT);
    let addr = SocketAddrV4::new([127, 0, 0, 1].into(), ports.tcp);
    let mut host = connect_within(addr, Duration::from_secs(20));
    host.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(
        guest.tcp_wait_established(listen, Duration::from_secs(30)),
        "hostfwd connection never reached the guest; stderr:\n{}",
        guest.bhyve.stderr()
    );
    guest.bhyve.hang_up();
    assert_eq!(guest.bhyve.expect_exit(Duration::from_secs(5)), 0);
    let mut buf = [0u8; 16];
    match host.read(&mut buf) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("host saw a clean end of stream ({n} bytes), not a reset"),
    }
}
