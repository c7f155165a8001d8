//! Descriptor exhaustion (issue #16, item 1): a guest opening thousands of UDP flows, or a host
//! user holding connections to a forward, must neither spin the helper nor kill the forward.
//! The helper runs under a fixed RLIMIT_NOFILE (soft and hard, so it cannot raise it).
//!
//! Network rule: guest UDP goes to a sink on 127.0.0.1 (10.0.2.2 is the host's loopback),
//! forwards listen on 127.0.0.1; every loop is bounded in count and time.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// CPU share of a spinning loop is ~1.0; an idle helper stays near 0. Generous: the machine
/// is shared.
const MAX_CPU_SHARE: f64 = 0.3;
/// Window over which the helper's CPU time is measured.
const CPU_WINDOW: Duration = Duration::from_secs(2);

/// utime + stime of `pid`, in seconds (/proc/PID/stat fields 14 and 15).
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name may contain spaces: the fields that follow start after its ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// The helper's CPU share over `CPU_WINDOW`.
fn cpu_share(pid: i32) -> f64 {
    let (t0, c0) = (Instant::now(), cpu_seconds(pid));
    std::thread::sleep(CPU_WINDOW);
    (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
}

/// A UDP datagram from the guest's `sport` to `dst`.
fn udp_frame(dst_mac: [u8; 6], dst: SocketAddrV4, sport: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, dst_mac)
        .ipv4(GUEST_IP.octets(), dst.ip().octets(), 64)
        .udp(sport, dst.port());
    let mut f = Vec::with_capacity(b.size(4));
    b.write(&mut f, b"flow").unwrap();
    f
}

/// The guest refusing libslirp's SYN (sent for a forwarded connection): RST+ACK.
fn refuse_syn(dst_mac: [u8; 6], syn: &TcpSeg) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, dst_mac)
        .ipv4(syn.dst.ip().octets(), syn.src.ip().octets(), 64)
        .tcp(syn.dst.port(), syn.src.port(), 0, 0)
        .rst()
        .ack(syn.seq.wrapping_add(1));
    let mut f = Vec::with_capacity(b.size(0));
    b.write(&mut f, &[]).unwrap();
    f
}

/// libslirp's SYN to the guest's port 80 for a forwarded connection.
fn forwarded_syn(f: &[u8]) -> Option<TcpSeg> {
    parse_tcp(f).filter(|s| s.syn && !s.ack && s.dst.port() == 80)
}

fn spawn(config: Vec<u8>, nofile: u64, args: &[&str]) -> Bhyve {
    Bhyve::spawn(Spawn {
        config: Some(config),
        nofile: Some(nofile),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Spawn::default()
    })
}

fn stat(stats: &std::collections::HashMap<String, u64>, key: &str) -> u64 {
    *stats
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in the stats line: {stats:?}"))
}

#[test]
fn guest_udp_flows_stop_at_the_budget_and_the_forward_keeps_working() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("UDP sink");
    let sink_port = sink.local_addr().unwrap().port();
    let fwd_port = free_tcp_port();
    let config = ConfigBuilder::bhyve()
        .open()
        .hostfwd(&format!("tcp:127.0.0.1:{fwd_port}-:80"))
        .encode();
    let mut bhyve = spawn(config, 4096, &[]);
    let mac = bhyve.resolve(HOST_IP, STEP).expect("gateway MAC");

    // 5000 flows: more than the 4096 descriptors the helper has.
    let dst = SocketAddrV4::new(HOST_IP, sink_port);
    const FLOWS: u64 = 5000;
    for sport in 1024..1024 + FLOWS as u16 {
        bhyve
            .send_frame(&udp_frame(mac, dst, sport))
            .expect("send a guest datagram");
        // Keep the helper's frames from piling up in our receive queue.
        if sport % 256 == 0 {
            bhyve.discard_pending();
        }
    }
    // Every datagram was read before the forward is tried (bounded wait).
    let deadline = Instant::now() + STEP;
    loop {
        let stats = bhyve.stats_now(STEP).expect("stats line");
        if stat(&stats, "rx_frames") > FLOWS || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bhyve.discard_pending();

    let fwd = SocketAddr::from((Ipv4Addr::LOCALHOST, fwd_port));
    let conn = TcpStream::connect_timeout(&fwd, STEP).expect("connect to the forward");
    let local_port = conn.local_addr().unwrap().port();
    let share = cpu_share(bhyve.pid());
    eprintln!("guest case: helper CPU share {share:.3}");
    assert!(
        share < MAX_CPU_SHARE,
        "helper CPU share {share:.2} with the forward's connection pending; stderr:\n{}",
        bhyve.stderr()
    );
    let syn = bhyve.recv_until(STEP, |f| {
        forwarded_syn(f).filter(|s| s.src.port() == local_port)
    });
    assert!(
        syn.is_some(),
        "the forwarded connection never reached the guest; stderr:\n{}",
        bhyve.stderr()
    );

    let stats = bhyve.stats_now(STEP).expect("stats line");
    eprintln!("guest case: {stats:?}");
    let budget = stat(&stats, "flow_budget");
    assert_eq!(budget, 3072, "4096 less a quarter");
    assert!(
        stat(&stats, "slirp_sockets") <= budget + 2,
        "libslirp holds more than the budget (plus listener and connection): {stats:?}"
    );
    assert!(
        stat(&stats, "flows_refused") >= FLOWS - budget,
        "flows beyond the budget were not refused: {stats:?}"
    );
    assert!(bhyve.is_running());
}

/// The backoff sits above the backends: the C helper's loop (`--poller poll`) gets it too.
#[test]
fn host_connections_that_exhaust_descriptors_do_not_spin_and_the_forward_recovers() {
    host_connections_exhaust_descriptors(&[]);
}

#[test]
fn host_connections_that_exhaust_descriptors_do_not_spin_the_poll_backend() {
    host_connections_exhaust_descriptors(&["--poller", "poll"]);
}

fn host_connections_exhaust_descriptors(args: &[&str]) {
    let fwd_port = free_tcp_port();
    let config = ConfigBuilder::bhyve()
        .hostfwd(&format!("tcp:127.0.0.1:{fwd_port}-:80"))
        .encode();
    let mut bhyve = spawn(config, 32, args);
    let mac = bhyve.resolve(HOST_IP, STEP).expect("gateway MAC");
    let fwd = SocketAddr::from((Ipv4Addr::LOCALHOST, fwd_port));

    // Hold connections (the guest stays silent, so libslirp keeps each in SYN_SENT) until the
    // helper's descriptors run out: its accept fails and later connections wait in the
    // listener's backlog, or no longer complete.
    let mut held = Vec::new();
    // libslirp's SYNs to the guest, one per accepted connection (retransmissions replace).
    let mut syns = std::collections::HashMap::new();
    for _ in 0..48 {
        match TcpStream::connect_timeout(&fwd, Duration::from_secs(1)) {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
        while let Some(s) = bhyve.recv_until(Duration::from_millis(100), forwarded_syn) {
            syns.insert(s.src.port(), s);
        }
    }
    assert!(
        syns.len() < held.len(),
        "every held connection was accepted ({}): the limit was never reached",
        held.len()
    );

    let share = cpu_share(bhyve.pid());
    eprintln!("host case: helper CPU share {share:.3}");
    assert!(
        share < MAX_CPU_SHARE,
        "helper CPU share {share:.2} with {} connections held, {} accepted; stderr:\n{}",
        held.len(),
        syns.len(),
        bhyve.stderr()
    );
    let stats = bhyve.stats_now(STEP).expect("stats line");
    eprintln!("host case: {stats:?}");
    assert!(
        stat(&stats, "accept_backoffs") > 0,
        "no backoff counted: {stats:?}"
    );

    // Release: the host closes its connections and the guest refuses libslirp's SYNs, so
    // libslirp closes its sockets (in SYN_SENT it would otherwise keep them for 75 s).
    drop(held);
    for syn in syns.values() {
        bhyve.send_frame(&refuse_syn(mac, syn)).expect("send RST");
    }
    // Connections accepted after the release (from the backlog) are refused as they come,
    // until the new one reaches the guest.
    let conn = TcpStream::connect_timeout(&fwd, STEP).expect("connect after the release");
    let local_port = conn.local_addr().unwrap().port();
    let reached = bhyve.recv_until(STEP, |f| {
        let syn = forwarded_syn(f)?;
        if syn.src.port() == local_port {
            return Some(());
        }
        let _ = bhyve.send_frame(&refuse_syn(mac, &syn));
        None
    });
    assert!(
        reached.is_some(),
        "the forward did not recover after the connections were closed; stderr:\n{}",
        bhyve.stderr()
    );
    assert!(bhyve.is_running());
}
