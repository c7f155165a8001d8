//! Guest TCP segments merged before libslirp (`src/coalesce.rs`), through the real helper and
//! the real libslirp: bursts of consecutive in-order segments, hand-built as a guest kernel
//! sends them, reach a host server on 127.0.0.1 byte for byte, and the stats line says they
//! were merged with the default batch, and not with `--batch 1` (the C helper's design) or
//! with coalescing switched off (command line or bhyve config key).

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Read;
use std::net::{Ipv6Addr, SocketAddrV4, TcpListener};
use std::thread;

/// The MSS libslirp announces at MTU 1500.
const MSS: usize = 1460;
/// Segments sent back to back before waiting for libslirp's ACK (well inside its window).
const BURST: usize = 20;
const BURSTS: usize = 16;
const TOTAL: usize = MSS * BURST * BURSTS;
/// Our initial sequence number.
const ISS: u32 = 0xfff0_0000;

/// One guest segment with the ACK flag (and PSH when asked).
fn segment(
    gw: [u8; 6],
    dst: SocketAddrV4,
    sport: u16,
    seq: u32,
    ack: u32,
    psh: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, gw)
        .ipv4(GUEST_IP.octets(), dst.ip().octets(), 64)
        .tcp(sport, dst.port(), seq, 64240)
        .ack(ack);
    if psh {
        b = b.psh();
    }
    let mut f = Vec::with_capacity(b.size(data.len()));
    b.write(&mut f, data).unwrap();
    f
}

/// Connects from the guest to a host listener with hand-built frames, uploads `TOTAL` bytes
/// in bursts of `BURST` segments (each burst written at once, PSH on its last segment),
/// checks that the host got them byte for byte, and returns the helper's counters.
fn upload(config: Vec<u8>, args: &[&str], sport: u16) -> HashMap<String, u64> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = pattern(TOTAL, u64::from(sport));
    let expected = data.clone();
    let host = thread::spawn(move || {
        let mut s = accept_within(&listener, STEP).expect("the guest never connected");
        s.set_read_timeout(Some(STEP)).unwrap();
        let mut got = vec![0u8; TOTAL];
        s.read_exact(&mut got).map(|()| got)
    });

    let mut bhyve = Bhyve::spawn(Spawn {
        config: Some(config),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Spawn::default()
    });
    let gw = bhyve
        .resolve(HOST_IP, STEP)
        .unwrap_or_else(|| panic!("no ARP answer; stderr:\n{}", bhyve.stderr()));
    let dst = SocketAddrV4::new(HOST_IP, port);
    bhyve
        .send_frame(&tcp_syn_frame(gw, dst, sport, ISS))
        .unwrap();
    let syn_ack = bhyve
        .recv_until(STEP, |f| {
            parse_tcp(f).filter(|t| t.dst.port() == sport && t.syn && t.ack)
        })
        .unwrap_or_else(|| panic!("no SYN-ACK; stderr:\n{}", bhyve.stderr()));
    let ack = syn_ack.seq.wrapping_add(1);
    let mut seq = ISS.wrapping_add(1);
    bhyve
        .send_frame(&segment(gw, dst, sport, seq, ack, false, &[]))
        .unwrap();

    for burst in data.chunks(MSS * BURST) {
        let frames: Vec<Vec<u8>> = burst
            .chunks(MSS)
            .enumerate()
            .map(|(i, chunk)| {
                let s = seq.wrapping_add((i * MSS) as u32);
                segment(gw, dst, sport, s, ack, i == BURST - 1, chunk)
            })
            .collect();
        for f in &frames {
            bhyve.send_frame(f).unwrap();
        }
        let end = seq.wrapping_add(burst.len() as u32);
        bhyve
            .recv_until(STEP, |f| {
                parse_tcp(f).filter(|t| {
                    t.dst.port() == sport && t.ack && t.ack_no.wrapping_sub(end) as i32 >= 0
                })
            })
            .unwrap_or_else(|| panic!("burst not acknowledged; stderr:\n{}", bhyve.stderr()));
        seq = end;
    }
    let got = host
        .join()
        .unwrap()
        .expect("the host read the whole upload");
    assert!(got == expected, "the upload reached the host changed");
    let _ = bhyve.send_frame(&tcp_rst_frame(gw, dst, sport, seq));
    bhyve
        .stats_now(STEP)
        .unwrap_or_else(|| panic!("no stats line; stderr:\n{}", bhyve.stderr()))
}

fn merged(stats: &HashMap<String, u64>) -> (u64, u64) {
    (stats["coalesced_segments"], stats["coalesced_frames"])
}

#[test]
fn bursts_are_merged_with_the_default_batch_and_arrive_intact() {
    let stats = upload(
        ConfigBuilder::bhyve().open().mtui(1500).encode(),
        &[],
        42001,
    );
    let (segments, frames) = merged(&stats);
    eprintln!("default batch: coalesced_segments={segments} coalesced_frames={frames} rx_frames={} rx_avg_batch={}", stats["rx_frames"], stats["rx_avg_batch"]);
    assert!(segments > 0, "nothing merged: {stats:?}");
    assert!(frames > 0 && segments >= 2 * frames, "{stats:?}");
    // Fewer frames reached libslirp than came in.
    assert!(segments <= stats["rx_frames"], "{stats:?}");
}

#[test]
fn the_c_design_does_not_merge() {
    let config = ConfigBuilder::bhyve().open().mtui(1500);
    let stats = upload(
        config.encode(),
        &["--poller", "poll", "--batch", "1"],
        42002,
    );
    assert_eq!(merged(&stats), (0, 0), "{stats:?}");
    // The same from bhyve's config keys.
    let config = ConfigBuilder::bhyve()
        .open()
        .mtui(1500)
        .string("batch", "1");
    let stats = upload(config.encode(), &[], 42003);
    assert_eq!(merged(&stats), (0, 0), "{stats:?}");
}

#[test]
fn coalescing_switched_off_does_not_merge() {
    let config = ConfigBuilder::bhyve().open().mtui(1500);
    let stats = upload(config.encode(), &["--coalesce", "off"], 42004);
    assert_eq!(merged(&stats), (0, 0), "{stats:?}");
    let config = ConfigBuilder::bhyve()
        .open()
        .mtui(1500)
        .string("coalesce", "off");
    let stats = upload(config.encode(), &[], 42005);
    assert_eq!(merged(&stats), (0, 0), "{stats:?}");
    // The command line wins over the key.
    let config = ConfigBuilder::bhyve()
        .open()
        .mtui(1500)
        .string("coalesce", "off");
    let stats = upload(config.encode(), &["--coalesce", "on"], 42006);
    assert!(merged(&stats).0 > 0, "{stats:?}");
}

#[test]
fn a_bad_coalesce_value_is_a_configuration_error() {
    let mut bhyve = Bhyve::start(&ConfigBuilder::bhyve().string("coalesce", "maybe").encode());
    assert_eq!(bhyve.expect_exit(STEP), 1);
    assert!(bhyve.stderr().contains("coalesce"), "{}", bhyve.stderr());
}

// ---------------------------------------------------------------------------------------------
// IPv6 (`ipv6=on`): libslirp's ip6_input answers an IPv6 packet longer than its if_mtu with
// Packet Too Big and drops it, so with IPv6 on the helper gives libslirp an if_mtu of 65520
// (if_mru stays the MTU) and merges stop there, as IPv4 ones do (docs/design.md).
// ---------------------------------------------------------------------------------------------

use common::ipv6::*;

/// One guest IPv6 TCP segment (flags: SYN alone when `syn`, else ACK and PSH when asked).
#[allow(clippy::too_many_arguments)]
fn segment6(
    gw: [u8; 6],
    port: u16,
    sport: u16,
    seq: u32,
    ack: u32,
    syn: bool,
    psh: bool,
    data: &[u8],
) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, gw).ipv6(
        GUEST6.octets(),
        HOST6.octets(),
        64,
    );
    let mut b = b.tcp(sport, port, seq, 64240);
    if syn {
        b = b.syn();
    } else {
        b = b.ack(ack);
    }
    if psh {
        b = b.psh();
    }
    let mut f = Vec::with_capacity(b.size(data.len()));
    b.write(&mut f, data).unwrap();
    f
}

/// (flags, seq, ack) of a TCP segment from fec0::2 to the guest's `sport`.
fn tcp6_from_host(p: &Packet6, sport: u16) -> Option<(u8, u32, u32)> {
    let t = &p.payload;
    if p.next != 6 || p.src != HOST6 || t.len() < 20 || u16::from_be_bytes([t[2], t[3]]) != sport {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes(t[at..at + 4].try_into().unwrap());
    Some((t[13], word(4), word(8)))
}

/// Uploads `bursts` bursts of 20 segments of `seg_len` bytes over IPv6 to a listener on
/// [::1] through fec0::2 at `mtu` (open mode); checks the bytes; the helper's counters.
fn upload6(mtu: u64, seg_len: usize, bursts: usize, sport: u16) -> HashMap<String, u64> {
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let total = seg_len * BURST * bursts;
    let data = pattern(total, u64::from(sport));
    let expected = data.clone();
    let host = thread::spawn(move || {
        let mut s = accept_within(&listener, STEP).expect("the guest never connected");
        assert_eq!(
            s.peer_addr().unwrap().ip(),
            std::net::IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        s.set_read_timeout(Some(STEP)).unwrap();
        let mut got = vec![0u8; total];
        s.read_exact(&mut got).map(|()| got)
    });
    let mut bhyve = Bhyve::start(&ipv6_config(true).mtui(mtu).encode());
    let gw = bhyve
        .resolve6(HOST6, STEP)
        .unwrap_or_else(|| panic!("no neighbour advertisement; stderr:\n{}", bhyve.stderr()));
    bhyve
        .send_frame(&segment6(gw, port, sport, ISS, 0, true, false, &[]))
        .unwrap();
    let (_, syn_seq, _) = bhyve
        .recv6_until(STEP, |p| {
            tcp6_from_host(p, sport).filter(|(flags, _, _)| flags & 0x12 == 0x12)
        })
        .unwrap_or_else(|| panic!("no SYN-ACK over IPv6; stderr:\n{}", bhyve.stderr()));
    let ack = syn_seq.wrapping_add(1);
    let mut seq = ISS.wrapping_add(1);
    bhyve
        .send_frame(&segment6(gw, port, sport, seq, ack, false, false, &[]))
        .unwrap();
    for burst in data.chunks(seg_len * BURST) {
        for (i, chunk) in burst.chunks(seg_len).enumerate() {
            let s = seq.wrapping_add((i * seg_len) as u32);
            let f = segment6(gw, port, sport, s, ack, false, i == BURST - 1, chunk);
            bhyve.send_frame(&f).unwrap();
        }
        let end = seq.wrapping_add(burst.len() as u32);
        bhyve
            .recv6_until(STEP, |p| {
                tcp6_from_host(p, sport).filter(|(flags, _, ack_no)| {
                    flags & 0x10 != 0 && ack_no.wrapping_sub(end) as i32 >= 0
                })
            })
            .unwrap_or_else(|| panic!("IPv6 burst not acknowledged; stderr:\n{}", bhyve.stderr()));
        seq = end;
    }
    let got = host
        .join()
        .unwrap()
        .expect("the host read the whole upload");
    assert!(got == expected, "the IPv6 upload reached the host changed");
    bhyve
        .stats_now(STEP)
        .unwrap_or_else(|| panic!("no stats line; stderr:\n{}", bhyve.stderr()))
}

#[test]
fn ipv6_short_segments_merge_past_the_mtu_and_arrive_intact() {
    // 1000-byte segments at MTU 9000: a burst of 20 is 20 000 bytes, past the MTU and within
    // libslirp's if_mtu of 65520. How many segments one merge takes depends on how many frames
    // one read of the socket finds (6.9 on average in a loaded CI run, more when idle), so
    // only merging itself is asserted here; that a merge past the MTU is taken is shown by
    // the full-sized test below, where every merge is.
    let stats = upload6(9000, 1000, 8, 42011);
    let (segments, frames) = merged(&stats);
    eprintln!("IPv6 at MTU 9000: coalesced_segments={segments} coalesced_frames={frames}");
    assert!(segments > 0, "nothing merged: {stats:?}");
    assert!(frames > 0 && segments >= 2 * frames, "{stats:?}");
}

#[test]
fn ipv6_full_sized_segments_merge_and_arrive_intact() {
    // 1440 + 60 = 1500: every merge is past the MTU. libslirp would answer Packet Too Big at an
    // if_mtu of 1500 and the upload would stall; at 65520 it takes them.
    let stats = upload6(1500, 1440, 8, 42012);
    let (segments, frames) = merged(&stats);
    assert!(segments > 0 && segments >= 2 * frames, "{stats:?}");
    assert_eq!(stats["tx_oversize"], 0, "{stats:?}");
}
