//! Guest-initiated TCP: open mode reaches the host's 127.0.0.1 via 10.0.2.2; restricted mode
//! resets the SYN.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// Accepts one connection within `timeout`; it must come from the host's loopback (libslirp's
/// outbound socket).
fn accept_within(listener: &TcpListener, timeout: Duration) -> Option<TcpStream> {
    let s = common::accept_within(listener, timeout)?;
    let peer = s.peer_addr().unwrap();
    assert!(peer.ip().is_loopback(), "connection from {peer}");
    Some(s)
}

#[test]
fn open_mode_guest_connects_to_host_and_moves_1mib_each_way() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let to_host = pattern(MIB, 1);
    let to_guest = pattern(MIB, 2);
    let to_guest_host = to_guest.clone();

    // Host side: read the guest's 1 MiB, hash it, then send 1 MiB back.
    let host = thread::spawn(move || {
        let mut s = accept_within(&listener, Duration::from_secs(60))
            .expect("guest connection never reached the host listener");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = vec![0u8; MIB];
        s.read_exact(&mut got).expect("host read 1 MiB");
        s.write_all(&to_guest_host).expect("host write 1 MiB");
        s.flush().unwrap();
        // Keep the socket until the guest has everything (it closes first).
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (Sha256::digest(&got), rest.len())
    });

    let mut guest = Guest::new(Bhyve::start(&open_config()));
    let lease = guest.dhcp(STEP).expect("DHCP");
    assert_eq!(lease.router, Some(HOST_IP));
    let h = guest
        .tcp_connect(SocketAddrV4::new(HOST_IP, port), STEP)
        .unwrap_or_else(|| {
            panic!(
                "connect to {HOST_IP}:{port} failed; stderr:\n{}",
                guest.bhyve.stderr()
            )
        });
    let got = guest.tcp_exchange(h, &to_host, MIB, Duration::from_secs(120));
    assert_eq!(
        got.len(),
        MIB,
        "guest received {} of {MIB} bytes",
        got.len()
    );
    assert_eq!(
        Sha256::digest(&got),
        Sha256::digest(&to_guest),
        "host→guest data corrupted"
    );
    guest.tcp_close(h, Duration::from_secs(10));
    let (host_digest, extra) = host.join().expect("host thread");
    assert_eq!(
        host_digest,
        Sha256::digest(&to_host),
        "guest→host data corrupted"
    );
    assert_eq!(extra, 0, "guest sent more than 1 MiB");
}

/// Sends a raw SYN from 10.0.2.15 to 10.0.2.2:`port` and returns the first TCP segment coming
/// back for that connection.
fn syn_and_answer(bhyve: &Bhyve, port: u16, sport: u16) -> Option<TcpSeg> {
    let gw = bhyve.resolve(HOST_IP, STEP).expect("gateway ARP");
    let dst = SocketAddrV4::new(HOST_IP, port);
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        bhyve
            .send_frame(&tcp_syn_frame(gw, dst, sport, 1000))
            .unwrap();
        let seg = bhyve.recv_until(Duration::from_secs(2), |f| {
            parse_tcp(f).filter(|t| t.src == dst && t.dst.port() == sport)
        });
        if seg.is_some() {
            return seg;
        }
    }
    None
}

#[test]
fn restricted_mode_resets_guest_syn() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bhyve = Bhyve::start(&restricted_config());
    let seg = syn_and_answer(&bhyve, port, 40000)
        .unwrap_or_else(|| panic!("no answer to the SYN; stderr:\n{}", bhyve.stderr()));
    assert!(seg.rst, "expected RST, got {seg:?}");
    assert!(!seg.syn, "restricted mode answered SYN-ACK: {seg:?}");
    assert_eq!(seg.dst.ip(), &GUEST_IP);
    assert!(
        accept_within(&listener, Duration::from_millis(500)).is_none(),
        "restricted guest reached the host listener"
    );
}

#[test]
fn open_mode_answers_raw_syn_with_syn_ack() {
    // Control for the restricted test: the same SYN in open mode is accepted.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bhyve = Bhyve::start(&open_config());
    let seg = syn_and_answer(&bhyve, port, 40001)
        .unwrap_or_else(|| panic!("no answer to the SYN; stderr:\n{}", bhyve.stderr()));
    assert!(
        seg.syn && seg.ack && !seg.rst,
        "expected SYN-ACK, got {seg:?}"
    );
    assert_eq!(seg.ack_no, 1001);
    assert!(
        accept_within(&listener, STEP).is_some(),
        "open-mode SYN did not reach the host listener"
    );
    let gw = bhyve.resolve(HOST_IP, STEP).unwrap();
    let _ = bhyve.send_frame(&tcp_rst_frame(
        gw,
        SocketAddrV4::new(HOST_IP, port),
        40001,
        1001,
    ));
}
