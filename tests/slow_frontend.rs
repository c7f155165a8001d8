//! A frontend that stops reading (bhyve stuck) while the host sends to the guest: the helper
//! never blocks on it. It keeps serving the guest's frames, drops (and counts)
//! what does not fit in its bounded TX ring, keeps its memory bounded, and the transfer
//! completes once reading resumes (TCP retransmits what was dropped).

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

const GPORT: u16 = 2222;
const LEN: usize = 8 << 20;
const STALL: Duration = Duration::from_secs(10);

#[test]
fn a_stalled_frontend_never_blocks_the_helper() {
    stalled_frontend(None);
}

/// The io_uring engine watches the frontend for writability through its ring: the same.
#[cfg(target_os = "linux")]
#[test]
fn a_stalled_frontend_never_blocks_the_helper_io_uring() {
    stalled_frontend(Some("io_uring"));
}

fn stalled_frontend(poller: Option<&str>) {
    let hport = free_tcp_port();
    let mut cfg = ConfigBuilder::bhyve().hostfwd(&format!("tcp:127.0.0.1:{hport}-:{GPORT}"));
    if let Some(poller) = poller {
        cfg = cfg.string("poller", poller);
    }
    let cfg = cfg.encode();
    let mut guest = Guest::new(Bhyve::start(&cfg));
    guest.set_static();
    assert!(
        guest.ping(HOST_IP, STEP),
        "stderr:\n{}",
        guest.bhyve.stderr()
    );
    let pid = guest.bhyve.pid();
    let listen = guest.tcp_listen(GPORT);

    // The host pushes 8 MiB into the guest through hostfwd.
    let data = pattern(LEN, 9);
    let expected = Sha256::digest(&data);
    let writer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(SocketAddrV4::new([127, 0, 0, 1].into(), hport)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(&data).unwrap();
    });
    assert!(
        guest.tcp_wait_established(listen, STEP),
        "stderr:\n{}",
        guest.bhyve.stderr()
    );
    // Take the first megabyte, then stop reading (bhyve stuck) for 10 s.
    let mut got = guest.tcp_exchange(listen, &[], 1 << 20, STEP);
    assert!(got.len() >= 1 << 20);
    let before = guest.bhyve.stats_now(STEP).expect("stats");
    if let Some(poller) = poller {
        let stderr = guest.bhyve.stderr();
        assert!(stderr.contains(&format!("poller={poller}")), "{stderr}");
    }
    let stalled_at = Instant::now();
    let rss_before = status_kib(pid, "VmRSS:");
    let mut peak = rss_before;
    let mut pings = 0u16;
    let gw = guest.bhyve.resolve(HOST_IP, STEP).expect("gateway MAC");
    let payload = vec![0x33u8; 1900];
    while stalled_at.elapsed() < STALL {
        // The guest keeps talking, and its echo replies (libslirp answers them itself) pile
        // up towards the stalled frontend: the helper must keep reading and never block.
        for _ in 0..20 {
            let echo = icmp_echo_frame(gw, HOST_IP, 7, pings, &payload);
            if guest.bhyve.try_send_frame(&echo) {
                pings += 1;
            }
        }
        peak = peak.max(status_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Asking for the counters does not read the socket, so this is the stalled state.
    guest.bhyve.signal(libc::SIGUSR1);
    let during = {
        let deadline = Instant::now() + STEP;
        loop {
            let s = guest.bhyve.stats().unwrap();
            if s["iterations"] > before["iterations"] || Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    eprintln!(
        "stalled {STALL:?}: {pings} guest frames offered; rx_frames {} -> {}, iterations {} -> {}, \
         tx_full {} -> {}, tx_eagain {} -> {}; RSS {rss_before} KiB, peak {peak} KiB",
        before["rx_frames"],
        during["rx_frames"],
        before["iterations"],
        during["iterations"],
        before["tx_full"],
        during["tx_full"],
        before["tx_eagain"],
        during["tx_eagain"]
    );
    assert!(
        guest.bhyve.is_running(),
        "helper died while the frontend was stalled"
    );
    assert!(
        during["rx_frames"] >= before["rx_frames"] + u64::from(pings) / 2,
        "guest frames not read: {before:?} -> {during:?}"
    );
    assert!(
        during["tx_full"] > before["tx_full"] || during["tx_eagain"] > before["tx_eagain"],
        "{during:?}"
    );
    // A new hostfwd connection is still accepted by the helper while the frontend is stuck.
    let second = TcpStream::connect_timeout(
        &SocketAddrV4::new([127, 0, 0, 1].into(), hport).into(),
        STEP,
    );
    assert!(second.is_ok(), "hostfwd not served while stalled");
    // Bounded: the TX ring and libslirp's windows, not the stall's length (measured ~+1 MiB).
    assert!(
        peak < rss_before + 32 * 1024,
        "RSS {rss_before} -> {peak} KiB while stalled"
    );

    // Reading resumes: the transfer completes, intact.
    got.extend(guest.tcp_exchange(listen, &[], LEN - got.len(), Duration::from_secs(60)));
    writer.join().unwrap();
    assert_eq!(got.len(), LEN, "stderr:\n{}", guest.bhyve.stderr());
    assert_eq!(Sha256::digest(&got), expected);
}
