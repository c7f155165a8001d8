//! End to end: UDP datagrams larger than the guest's MTU (1500), fragmented by the guest's
//! Linux kernel, reach a host socket on 127.0.0.1 through 10.0.2.2 (open mode) byte for byte:
//! the helper reassembles them, libslirp only ever sees whole datagrams. The same for IPv6 to
//! [::1] through [fec0::2], at MTU 1500 and 65520. The other way, with `--ipv6` (libslirp's
//! `if_mtu` is then 65520): 3000-byte UDP replies and echo replies, IPv4 and IPv6, reach the
//! guest in fragments the helper cut. Root only (skipped otherwise).

mod e2e_common;
use e2e_common::*;
use std::io;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sizes sent by the guest: two of the brief's, and the largest UDP payload IPv4 allows.
const SIZES: [usize; 3] = [8000, 30_000, 65_507];

fn datagram(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    Pattern::new(len as u64).fill(&mut data);
    data
}

/// Guest side, `udp-big ADDR SIZE...`: send each datagram until the host acknowledges it
/// (`ack:SIZE`), at most 10 times 500 ms apart; prints `ACKED=n`.
fn udp_big(addr: &str, sizes: &[&str]) -> io::Result<()> {
    let any = if addr.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let sock = UdpSocket::bind(any)?;
    // IPv6: the address comes from the router advertisement (SLAAC) a few seconds after the
    // link is up; until then there is no route.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = sock.connect(addr) {
        if Instant::now() > deadline {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut acked = 0;
    let mut buf = [0u8; 64];
    for size in sizes {
        let len: usize = size.parse().map_err(io::Error::other)?;
        let data = datagram(len);
        let ack = format!("ack:{len}");
        'tries: for _ in 0..40 {
            // Before SLAAC completes a send fails (no address, no route): try again.
            if sock.send(&data).is_err() {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                if let Ok(n) = sock.recv(&mut buf) {
                    if buf[..n] == *ack.as_bytes() {
                        acked += 1;
                        break 'tries;
                    }
                }
            }
        }
    }
    println!("ACKED={acked}");
    Ok(())
}

/// Guest side, `udp-big-reply LEN ADDR...`: for each host address, send `give:LEN` every
/// 500 ms (at most 40 times) until a datagram of LEN pattern bytes comes back intact (the host
/// answers from its socket; the helper fragments it for the guest's link and the guest's
/// kernel reassembles); prints `GOT=n`, the addresses answered.
fn udp_big_reply(len: &str, addrs: &[&str]) -> io::Result<()> {
    let len: usize = len.parse().map_err(io::Error::other)?;
    let expected = datagram(len);
    let request = format!("give:{len}");
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    for addr in addrs {
        let any = if addr.starts_with('[') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let sock = UdpSocket::bind(any)?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        'tries: for _ in 0..40 {
            // IPv6: no route until SLAAC completes; connect and send fail until then.
            if sock.connect(addr).is_err() || sock.send(request.as_bytes()).is_err() {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                if let Ok(n) = sock.recv(&mut buf) {
                    if buf[..n] == expected[..] {
                        got += 1;
                        break 'tries;
                    }
                }
            }
        }
    }
    println!("GOT={got}");
    Ok(())
}

#[test]
fn guest_role() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        let words: Vec<&str> = role.split_whitespace().collect();
        // `udp6-big MTU ...`: the guest lowers its own interface MTU first (below the
        // helper's), then as `udp-big`.
        let (words, guest_mtu) = match words.as_slice() {
            ["udp6-big", mtu, rest @ ..] => {
                let mut w = vec!["udp-big"];
                w.extend_from_slice(rest);
                (w, Some(*mtu))
            }
            _ => (words, None),
        };
        if let Some(mtu) = guest_mtu {
            let status = std::process::Command::new("ip")
                .args(["link", "set", "dev", "tap0", "mtu", mtu])
                .status();
            if !status.is_ok_and(|s| s.success()) {
                println!("ROLE_ERROR=ip_link_set_mtu_{mtu}_failed");
                std::process::exit(3);
            }
        }
        let result = match words.as_slice() {
            ["udp-big", addr, sizes @ ..] => Some(udp_big(addr, sizes)),
            ["udp-big-reply", len, addrs @ ..] => Some(udp_big_reply(len, addrs)),
            _ => None,
        };
        if let Some(result) = result {
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    println!("ROLE_ERROR={}", e.to_string().replace(' ', "_"));
                    3
                }
            };
            std::process::exit(code);
        }
    }
    guest_role_entry();
}

#[test]
fn large_udp_datagrams_fragmented_by_the_guest_arrive_whole() {
    if !root_or_skip("large_udp_datagrams_fragmented_by_the_guest_arrive_whole") {
        return;
    }
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = host.local_addr().unwrap().port();
    // Host side: check each datagram byte for byte; acknowledge the intact ones.
    let received: Arc<Mutex<Vec<(usize, bool)>>> = Arc::default();
    let r = received.clone();
    let server = std::thread::spawn(move || {
        let expected: Vec<Vec<u8>> = SIZES.iter().map(|&n| datagram(n)).collect();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok((n, from)) = host.recv_from(&mut buf) else {
                if r.lock().unwrap().iter().filter(|(_, ok)| *ok).count() == SIZES.len() {
                    break;
                }
                continue;
            };
            let intact = expected.iter().any(|e| e[..] == buf[..n]);
            r.lock().unwrap().push((n, intact));
            if intact {
                let _ = host.send_to(format!("ack:{n}").as_bytes(), from);
            }
        }
    });
    let sizes: Vec<String> = SIZES.iter().map(ToString::to_string).collect();
    let role = format!("udp-big 10.0.2.2:{port} {}", sizes.join(" "));
    let out = run(
        frontend_with_role(&["-v", "--open", "--mtu", "1500"], &role),
        Duration::from_secs(90),
    );
    server.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let received = received.lock().unwrap().clone();
    for &size in &SIZES {
        assert!(
            received.contains(&(size, true)),
            "{size}-byte datagram never arrived intact (received: {received:?})\n{}",
            text(&out)
        );
    }
    assert!(
        received.iter().all(|&(_, intact)| intact),
        "a datagram arrived damaged: {received:?}"
    );
    assert_eq!(
        field(&out, "ACKED"),
        Some(SIZES.len().to_string()),
        "{}",
        text(&out)
    );
    // The helper's exit stats (printed with -v): the guest did fragment, and the helper
    // reassembled.
    let stat = |key: &str| helper_stat(&out, key);
    // 8000, 30000 and 65507 bytes at MTU 1500: 6 + 21 + 45 fragments.
    assert!(stat("frag_in") >= 72, "{}", text(&out));
    assert!(stat("frag_completed") >= 3, "{}", text(&out));
    assert_eq!(stat("frag_overlap"), 0, "{}", text(&out));
}

/// IPv6 (`--ipv6`): the guest's kernel fragments 8 000- and 30 000-byte UDP datagrams to
/// [fec0::2] at its interface MTU of 1500, the helper reassembles them and libslirp delivers
/// them to [::1]; the helper's MTU is 1500 (the default) and 65520. libslirp's `ip6_input`
/// refuses IPv6 packets longer than its `if_mtu` (Packet Too Big): with `ipv6` on the helper
/// gives it 65520 whatever the guest MTU (docs/design.md).
#[test]
fn large_ipv6_udp_datagrams_fragmented_by_the_guest_arrive_whole() {
    if !root_or_skip("large_ipv6_udp_datagrams_fragmented_by_the_guest_arrive_whole") {
        return;
    }
    for mtu in ["1500", "65520"] {
        large_ipv6_udp_datagrams_at(mtu);
    }
}

fn large_ipv6_udp_datagrams_at(helper_mtu: &str) {
    const SIZES6: [usize; 2] = [8000, 30_000];
    let host = UdpSocket::bind("[::1]:0").unwrap();
    host.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = host.local_addr().unwrap().port();
    let received: Arc<Mutex<Vec<(usize, bool)>>> = Arc::default();
    let r = received.clone();
    let server = std::thread::spawn(move || {
        let expected: Vec<Vec<u8>> = SIZES6.iter().map(|&n| datagram(n)).collect();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(80);
        while Instant::now() < deadline {
            let Ok((n, from)) = host.recv_from(&mut buf) else {
                if r.lock().unwrap().iter().filter(|(_, ok)| *ok).count() == SIZES6.len() {
                    break;
                }
                continue;
            };
            let intact = expected.iter().any(|e| e[..] == buf[..n]);
            r.lock().unwrap().push((n, intact));
            if intact {
                let _ = host.send_to(format!("ack:{n}").as_bytes(), from);
            }
        }
    });
    let sizes: Vec<String> = SIZES6.iter().map(ToString::to_string).collect();
    let role = format!("udp6-big 1500 [fec0::2]:{port} {}", sizes.join(" "));
    let out = run(
        frontend_with_role(&["-v", "--open", "--ipv6", "--mtu", helper_mtu], &role),
        Duration::from_secs(90),
    );
    server.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let received = received.lock().unwrap().clone();
    for &size in &SIZES6 {
        assert!(
            received.contains(&(size, true)),
            "MTU {helper_mtu}: {size}-byte IPv6 datagram never arrived intact (received: \
             {received:?})\n{}",
            text(&out)
        );
    }
    assert!(received.iter().all(|&(_, intact)| intact), "{received:?}");
    assert_eq!(
        field(&out, "ACKED"),
        Some(SIZES6.len().to_string()),
        "{}",
        text(&out)
    );
    let stat = |key: &str| helper_stat(&out, key);
    // 8000 and 30000 bytes (+ 8 of UDP) in fragments of 1448 bytes: 6 + 21.
    assert!(stat("frag_in") >= 27, "{}", text(&out));
    assert!(stat("frag_completed") >= 2, "{}", text(&out));
    assert_eq!(stat("frag_overlap"), 0, "{}", text(&out));
}

/// Host → guest at MTU 1500 with `--ipv6` (libslirp's `if_mtu` is then 65520, so it no
/// longer fragments for the guest): a 3000-byte UDP reply from a host socket reaches the guest
/// intact over IPv4 (10.0.2.2) and IPv6 ([fec0::2]), split by the helper and reassembled by
/// the guest's kernel; and 3000-byte pings to 10.0.2.2 and fec0::2 get their replies.
#[test]
fn large_replies_to_the_guest_are_fragmented_by_the_helper_with_ipv6_on() {
    if !root_or_skip("large_replies_to_the_guest_are_fragmented_by_the_helper_with_ipv6_on") {
        return;
    }
    const LEN: usize = 3000;
    let host4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let host6 = UdpSocket::bind("[::1]:0").unwrap();
    let (port4, port6) = (
        host4.local_addr().unwrap().port(),
        host6.local_addr().unwrap().port(),
    );
    let servers: Vec<_> = [host4, host6]
        .into_iter()
        .map(|host| {
            std::thread::spawn(move || {
                host.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let reply = datagram(LEN);
                let mut buf = [0u8; 64];
                let mut answered = 0;
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline && answered < 40 {
                    if let Ok((n, from)) = host.recv_from(&mut buf) {
                        if buf[..n] == *format!("give:{LEN}").as_bytes() {
                            let _ = host.send_to(&reply, from);
                            answered += 1;
                        } else if &buf[..n] == b"quit" {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    let role = format!("udp-big-reply {LEN} 10.0.2.2:{port4} [fec0::2]:{port6}");
    let out = run(
        frontend_with_role(&["-v", "--open", "--ipv6", "--mtu", "1500"], &role),
        Duration::from_secs(90),
    );
    for (port, local) in [(port4, "127.0.0.1:0"), (port6, "[::1]:0")] {
        let u = UdpSocket::bind(local).unwrap();
        let to = if local.starts_with('[') {
            format!("[::1]:{port}")
        } else {
            format!("127.0.0.1:{port}")
        };
        let _ = u.send_to(b"quit", to);
    }
    for s in servers {
        s.join().unwrap();
    }
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(field(&out, "GOT"), Some("2".into()), "{}", text(&out));
    let stat = |key: &str| helper_stat(&out, key);
    assert!(stat("tx_fragmented") >= 2, "{}", text(&out));
    assert_eq!(stat("tx_oversize"), 0, "{}", text(&out));

    // ping -s 3000: the guest fragments the request, the helper reassembles it, libslirp
    // answers with one 3028/3048-byte packet and the helper fragments that.
    let out = run(
        frontend(&[
            "-v",
            "--ipv6",
            "--mtu",
            "1500",
            "--",
            "sh",
            "-c",
            "echo PING4=$(busybox ping -c 3 -W 3 -s 3000 10.0.2.2 | grep -c 'bytes from'); \
             for i in $(seq 20); do \
               ip -6 addr show dev tap0 scope global | grep -q inet6 && break; sleep 0.5; \
             done; \
             echo PING6=$(busybox ping -c 3 -W 3 -s 3000 fec0::2 | grep -c 'bytes from')",
        ]),
        Duration::from_secs(90),
    );
    assert!(out.status.success(), "{}", text(&out));
    let replies = |key: &str| -> u32 {
        field(&out, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}\n{}", text(&out)))
    };
    assert!(replies("PING4") >= 2, "{}", text(&out));
    assert!(replies("PING6") >= 2, "{}", text(&out));
}

/// A counter from the helper's exit stats (printed with `-v`) in the frontend's output.
fn helper_stat(out: &std::process::Output, key: &str) -> u64 {
    String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in the helper's stats\n{}", text(out)))
}
