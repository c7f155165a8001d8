//! End to end: hostfwd rules (bhyve grammar) carry host connections on 127.0.0.1 into the
//! guest, TCP and UDP, in the default restricted mode. Root only (skipped otherwise).

mod e2e_common;
use e2e_common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[test]
fn guest_role() {
    guest_role_entry();
}

#[test]
fn hostfwd_tcp_reaches_the_guest() {
    if !root_or_skip("hostfwd_tcp_reaches_the_guest") {
        return;
    }
    let hport = free_port(false);
    let rule = format!("tcp:127.0.0.1:{hport}-:8080");
    let mut child = frontend_with_role(&["--hostfwd", &rule], "tcp-serve 8080");
    child
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = child.spawn().unwrap();
    // Until the guest listens, libslirp closes the host connection: retry, bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reply = String::new();
    while Instant::now() < deadline {
        if let Ok(mut c) = TcpStream::connect_timeout(
            &format!("127.0.0.1:{hport}").parse().unwrap(),
            Duration::from_secs(2),
        ) {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(b"hello");
            let _ = c.shutdown(Shutdown::Write);
            reply.clear();
            let _ = c.read_to_string(&mut reply);
            if reply == "guest:hello" {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(reply, "guest:hello", "{}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        field(&out, "PEER"),
        Some("10.0.2.2".into()),
        "{}",
        text(&out)
    );
}

#[test]
fn hostfwd_udp_reaches_the_guest() {
    if !root_or_skip("hostfwd_udp_reaches_the_guest") {
        return;
    }
    let hport = free_port(true);
    let rule = format!("udp:127.0.0.1:{hport}-:5353");
    let mut child = frontend_with_role(&["--open", "--hostfwd", &rule], "udp-serve 5353");
    child
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = child.spawn().unwrap();
    let reply = udp_ping_until_reply((Ipv4Addr::LOCALHOST, hport).into(), Duration::from_secs(20));
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(reply, b"guest:ping", "{}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
}

/// Restricted mode: the forwarded datagrams reach the guest, but libslirp drops every guest
/// UDP datagram that is not DHCP/TFTP, replies included (observed with libslirp 4.7.0). This
/// pins that behaviour so a change is noticed.
#[test]
fn restricted_hostfwd_udp_is_one_way() {
    if !root_or_skip("restricted_hostfwd_udp_is_one_way") {
        return;
    }
    let hport = free_port(true);
    let rule = format!("udp:127.0.0.1:{hport}-:5353");
    let mut child = frontend_with_role(&["--hostfwd", &rule], "udp-serve 5353");
    child
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = child.spawn().unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 256];
    let mut replies = 0;
    for _ in 0..15 {
        let _ = u.send_to(b"ping", ("127.0.0.1", hport));
        if u.recv(&mut buf).is_ok() {
            replies += 1;
        }
    }
    let _ = u.send_to(b"quit", ("127.0.0.1", hport));
    let out = wait_output(child, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
    let echoed: u32 = field(&out, "UDP_ECHOED").unwrap().parse().unwrap();
    assert!(echoed > 0, "{}", text(&out));
    assert_eq!(replies, 0, "{}", text(&out));
}
