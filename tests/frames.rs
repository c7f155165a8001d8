//! Frame size rules: runts, oversized frames and empty records from the guest are dropped and
//! counted; frames to the guest never exceed the frontend's limit.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

/// True when any IPv4 frame arrives within `wait` (ARP requests for the guest are answered).
fn any_ipv4_within(bhyve: &Bhyve, wait: Duration) -> Option<Vec<u8>> {
    bhyve.recv_until(wait, |f| {
        (f.len() >= 14 && f[12..14] == [0x08, 0x00]).then(|| f.to_vec())
    })
}

/// A valid ICMP echo request to the gateway, `len` bytes long as a frame.
fn echo_of_len(gw: [u8; 6], len: usize, id: u16) -> Vec<u8> {
    let f = icmp_echo_frame(gw, HOST_IP, id, 1, &pattern(len - 42, 9));
    assert_eq!(f.len(), len);
    f
}

fn counter(stats: &std::collections::HashMap<String, u64>, key: &str) -> u64 {
    *stats
        .get(key)
        .unwrap_or_else(|| panic!("stats line lacks {key}: {stats:?}"))
}

#[test]
fn runts_oversize_and_empty_records_are_dropped_and_counted() {
    runts_oversize_and_empty(None);
}

/// The io_uring engine receives guest frames into its buffer ring (no read system call on
/// the socket): the same records are dropped and counted, the oversized one by its length
/// (a RECV completion carries no MSG_TRUNC).
#[cfg(target_os = "linux")]
#[test]
fn runts_oversize_and_empty_records_are_dropped_and_counted_io_uring() {
    runts_oversize_and_empty(Some("io_uring"));
}

fn runts_oversize_and_empty(poller: Option<&str>) {
    let mut config = ConfigBuilder::bhyve();
    if let Some(poller) = poller {
        config = config.string("poller", poller);
    }
    let mut bhyve = Bhyve::start(&config.encode());
    let gw = bhyve
        .resolve(HOST_IP, STEP)
        .unwrap_or_else(|| panic!("gateway ARP; stderr:\n{}", bhyve.stderr()));
    let arp = arp_frame(1, GUEST_MAC, GUEST_IP, [0xff; 6], HOST_IP);
    for len in [1, 6, 13, 13] {
        bhyve.send_frame(&arp[..len]).unwrap();
    }
    for _ in 0..3 {
        bhyve.send_frame(&[]).unwrap();
    }
    // A valid echo request in a 3000-byte frame (limit without mtui: 2048): must not be answered.
    bhyve.send_frame(&echo_of_len(gw, 3000, 0x7777)).unwrap();
    if let Some(f) = any_ipv4_within(&bhyve, Duration::from_secs(2)) {
        panic!(
            "oversized frame reached libslirp: got a {}-byte IPv4 frame back",
            f.len()
        );
    }
    assert!(
        bhyve.is_running(),
        "helper died; stderr:\n{}",
        bhyve.stderr()
    );

    let live = bhyve
        .stats_now(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no stats line after SIGUSR1; stderr:\n{}", bhyve.stderr()));
    assert_eq!(counter(&live, "rx_runt"), 4, "{live:?}");
    assert_eq!(counter(&live, "rx_empty"), 3, "{live:?}");
    assert_eq!(counter(&live, "rx_oversize"), 1, "{live:?}");
    assert!(
        bhyve.is_running(),
        "SIGUSR1 ended the helper; stderr:\n{}",
        bhyve.stderr()
    );

    assert!(
        bhyve.raw_ping(HOST_IP, 56, STEP),
        "no ping reply after the dropped frames; stderr:\n{}",
        bhyve.stderr()
    );

    bhyve.signal(libc::SIGTERM);
    assert_eq!(
        bhyve.expect_exit(Duration::from_secs(10)),
        0,
        "SIGTERM exit status"
    );
    let last = bhyve
        .stats()
        .unwrap_or_else(|| panic!("no stats line at exit; stderr:\n{}", bhyve.stderr()));
    assert_eq!(counter(&last, "rx_runt"), 4, "{last:?}");
    assert_eq!(counter(&last, "rx_empty"), 3, "{last:?}");
    assert_eq!(counter(&last, "rx_oversize"), 1, "{last:?}");
    assert_eq!(counter(&last, "tx_oversize"), 0, "{last:?}");
    if poller == Some("io_uring") {
        assert_eq!(
            counter(&last, "rx_syscalls"),
            0,
            "read through the ring: {last:?}"
        );
        assert!(counter(&last, "rx_frames") > 0, "{last:?}");
    }
}

#[test]
fn mtui_1500_accepts_1514_byte_frames_and_drops_2000_byte_frames() {
    let mut bhyve = Bhyve::start(&ConfigBuilder::bhyve().mtui(1500).encode());
    let gw = bhyve
        .resolve(HOST_IP, STEP)
        .unwrap_or_else(|| panic!("gateway ARP; stderr:\n{}", bhyve.stderr()));

    // Exactly at the limit: answered, with a reply that fits too.
    let deadline = Instant::now() + STEP;
    let mut reply = None;
    while reply.is_none() && Instant::now() < deadline {
        bhyve.send_frame(&echo_of_len(gw, 1514, 0x1514)).unwrap();
        reply = bhyve.recv_until(Duration::from_secs(1), |f| {
            parse_echo_reply(f)
                .filter(|r| r.id == 0x1514)
                .map(|_| f.len())
        });
    }
    let reply_len = reply.unwrap_or_else(|| {
        panic!(
            "1514-byte echo (mtui 1500) not answered; stderr:\n{}",
            bhyve.stderr()
        )
    });
    assert_eq!(reply_len, 1514);

    // Over the limit: dropped and counted.
    bhyve.send_frame(&echo_of_len(gw, 2000, 0x2000)).unwrap();
    if let Some(f) = any_ipv4_within(&bhyve, Duration::from_secs(2)) {
        panic!(
            "2000-byte frame (mtui 1500) reached libslirp: {}-byte reply",
            f.len()
        );
    }
    let stats = bhyve
        .stats_now(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no stats line after SIGUSR1; stderr:\n{}", bhyve.stderr()));
    assert_eq!(counter(&stats, "rx_oversize"), 1, "{stats:?}");
    assert_eq!(counter(&stats, "rx_runt"), 0, "{stats:?}");
}

/// Host sends `len` bytes to a guest that advertises a 9000-byte MTU (MSS 8960); returns the
/// guest after checking the data.
fn bulk_to_big_mtu_guest(config: Vec<u8>, limit: usize) -> Guest {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = pattern(512 * 1024, 5);
    let data_h = data.clone();
    let host = thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(&data_h).expect("host write");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let mut guest = Guest::with_frame_mtu(Bhyve::start(&config), 9014);
    guest.dev.rx_limit = limit;
    guest.dhcp(STEP).expect("DHCP");
    assert!(guest.ping_sized(HOST_IP, 56, STEP), "small ping");
    let h = guest
        .tcp_connect(SocketAddrV4::new(HOST_IP, port), STEP)
        .unwrap_or_else(|| panic!("connect; stderr:\n{}", guest.bhyve.stderr()));
    let got = guest.tcp_exchange(h, &[], data.len(), Duration::from_secs(90));
    assert_eq!(got.len(), data.len());
    assert_eq!(Sha256::digest(&got), Sha256::digest(&data));
    guest.tcp_close(h, Duration::from_secs(5));
    host.join().unwrap();
    guest
}

#[test]
fn mtui_1500_no_frame_to_guest_exceeds_1514_bytes() {
    let guest = bulk_to_big_mtu_guest(ConfigBuilder::bhyve().open().mtui(1500).encode(), 1514);
    assert!(
        guest.dev.rx_frames > 300,
        "too few frames: {}",
        guest.dev.rx_frames
    );
    assert_eq!(
        guest.dev.rx_over_limit, 0,
        "{} frames above 1514 bytes (largest {})",
        guest.dev.rx_over_limit, guest.dev.max_rx
    );
}

#[test]
fn without_mtui_no_frame_to_guest_exceeds_2048_bytes() {
    // Older bhyve asserts every frame it reads is at most 2048 bytes.
    let guest = bulk_to_big_mtu_guest(ConfigBuilder::bhyve().open().encode(), 2048);
    assert!(
        guest.dev.rx_frames > 200,
        "too few frames: {}",
        guest.dev.rx_frames
    );
    assert_eq!(
        guest.dev.rx_over_limit, 0,
        "{} frames above 2048 bytes (largest {})",
        guest.dev.rx_over_limit, guest.dev.max_rx
    );
}
