//! The per-frame work between the RX ring and `slirp_input`: IPv4 reassembly and TCP
//! coalescing, on frames built once. Guards the cost of the header views in `src/wire/`
//! (checked once per frame, then read by named field): the numbers before and after a
//! change to `wire`, `reasm` or `coalesce` should agree within noise.
//! - coalesce/merge: 44 segments of 1460 bytes (MTU 1500) merged into one 64 KiB packet.
//! - coalesce/pass: 64 pure ACKs (not candidates: no payload) handed on as they are.
//! - reasm/pass: 64 whole TCP segments (not fragments) through the reassembler.
//! - reasm/complete: a 30000-byte UDP datagram in 1480-byte fragments, reassembled.
//! - coalesce/merge6: 8 IPv6 segments of 1000 bytes merged into one (MTU 9000).
//! - reasm/pass6: 64 whole IPv6 TCP segments through the reassembler.
//! - reasm/complete6: a 30000-byte IPv6 UDP datagram in 1448-byte fragments, reassembled.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use etherparse::PacketBuilder;
use slirp_helper::coalesce::Coalescer;
use slirp_helper::reasm::{ReasmLimits, Reassembler, Verdict};
use std::time::Duration;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GW_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

/// A guest TCP segment 10.0.2.15:40000 → 10.0.2.2:5201 (ACK, no PSH).
fn segment(seq: u32, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(GUEST_MAC, GW_MAC)
        .ipv4([10, 0, 2, 15], [10, 0, 2, 2], 64)
        .tcp(40000, 5201, seq, 502)
        .ack(77);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

/// `len` bytes of UDP payload (with its 8-byte header) cut into fragments of `size` bytes.
fn fragments(id: u16, len: usize, size: usize) -> Vec<Vec<u8>> {
    let mut datagram = vec![0x12, 0x34, 0x00, 0x35];
    datagram.extend_from_slice(&((len + 8) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend((0..len).map(|i| i as u8));
    let mut frames = Vec::new();
    for (n, chunk) in datagram.chunks(size).enumerate() {
        let offset = n * size / 8;
        let more = (n + 1) * size < datagram.len();
        let mut ip = etherparse::Ipv4Header::new(
            chunk.len() as u16,
            64,
            etherparse::IpNumber::UDP,
            [10, 0, 2, 15],
            [10, 0, 2, 2],
        )
        .unwrap();
        ip.identification = id;
        ip.more_fragments = more;
        ip.fragment_offset = etherparse::IpFragOffset::try_new(offset as u16).unwrap();
        ip.header_checksum = ip.calc_header_checksum();
        let mut frame = Vec::new();
        etherparse::Ethernet2Header {
            source: GUEST_MAC,
            destination: GW_MAC,
            ether_type: etherparse::EtherType::IPV4,
        }
        .write(&mut frame)
        .unwrap();
        ip.write(&mut frame).unwrap();
        frame.extend_from_slice(chunk);
        frames.push(frame);
    }
    frames
}

/// A guest IPv6 TCP segment fec0::15:40000 → fec0::2:5201 (ACK, no PSH).
fn segment6(seq: u32, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(GUEST_MAC, GW_MAC)
        .ipv6(SRC6, DST6, 64)
        .tcp(40000, 5201, seq, 502)
        .ack(77);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

const SRC6: [u8; 16] = [0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x15];
const DST6: [u8; 16] = [0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// `len` bytes of UDP payload in IPv6 fragments of `size` bytes (fragment headers by hand:
/// etherparse 0.16 writes their offset at the wrong bits).
fn fragments6(id: u32, len: usize, size: usize) -> Vec<Vec<u8>> {
    let mut datagram = vec![0x12, 0x34, 0x00, 0x35];
    datagram.extend_from_slice(&((len + 8) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend((0..len).map(|i| i as u8));
    let mut frames = Vec::new();
    for (n, chunk) in datagram.chunks(size).enumerate() {
        let more = (n + 1) * size < datagram.len();
        let mut frame = GW_MAC.to_vec();
        frame.extend_from_slice(&GUEST_MAC);
        frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        frame.extend_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[44, 64]);
        frame.extend_from_slice(&SRC6);
        frame.extend_from_slice(&DST6);
        frame.extend_from_slice(&[17, 0]);
        frame.extend_from_slice(&((n * size) as u16 | u16::from(more)).to_be_bytes());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(chunk);
        frames.push(frame);
    }
    frames
}

fn bench(c: &mut Criterion) {
    let payload = vec![0x5a; 1460];
    let train: Vec<Vec<u8>> = (0..44)
        .map(|i| segment(1000 + i * 1460, &payload))
        .collect();
    let acks: Vec<Vec<u8>> = (0..64).map(|i| segment(i, &[])).collect();

    let mut group = c.benchmark_group("coalesce");
    group.throughput(Throughput::Elements(train.len() as u64));
    let mut coalescer = Coalescer::new(true);
    group.bench_function("merge", |b| {
        b.iter(|| {
            let mut out = 0;
            for f in &train {
                coalescer.push(black_box(f), |g| out += g.len());
            }
            coalescer.flush(|g| out += g.len());
            assert_eq!(out, 14 + 40 + 44 * 1460);
        })
    });
    group.throughput(Throughput::Elements(acks.len() as u64));
    group.bench_function("pass", |b| {
        b.iter(|| {
            let mut out = 0;
            for f in &acks {
                coalescer.push(black_box(f), |g| out += g.len());
            }
            coalescer.flush(|g| out += g.len());
            black_box(out)
        })
    });
    let short6 = vec![0x5a; 1000];
    let train6: Vec<Vec<u8>> = (0..8).map(|i| segment6(1000 + i * 1000, &short6)).collect();
    let mut coalescer6 = Coalescer::new(true).with_ipv6_mtu(9000);
    group.throughput(Throughput::Elements(train6.len() as u64));
    group.bench_function("merge6", |b| {
        b.iter(|| {
            let mut out = 0;
            for f in &train6 {
                coalescer6.push(black_box(f), |g| out += g.len());
            }
            coalescer6.flush(|g| out += g.len());
            assert_eq!(out, 14 + 60 + 8 * 1000);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("reasm");
    let mut reasm = Reassembler::new(ReasmLimits::default());
    group.throughput(Throughput::Elements(train.len() as u64));
    group.bench_function("pass", |b| {
        b.iter(|| {
            for f in &train {
                assert!(matches!(reasm.push(black_box(f), 0), Verdict::Pass(_)));
            }
        })
    });
    let datagram = fragments(7, 30000, 1480);
    group.throughput(Throughput::Elements(datagram.len() as u64));
    group.bench_function("complete", |b| {
        b.iter(|| {
            let mut done = 0;
            for f in &datagram {
                if let Verdict::Complete(whole) = reasm.push(black_box(f), 0) {
                    done += whole.len();
                }
            }
            assert_eq!(done, 14 + 20 + 30008);
        })
    });
    let full6: Vec<Vec<u8>> = (0..64).map(|i| segment6(i * 1440, &[0x5a; 1440])).collect();
    group.throughput(Throughput::Elements(full6.len() as u64));
    group.bench_function("pass6", |b| {
        b.iter(|| {
            for f in &full6 {
                assert!(matches!(reasm.push(black_box(f), 0), Verdict::Pass(_)));
            }
        })
    });
    let datagram6 = fragments6(7, 30000, 1448);
    group.throughput(Throughput::Elements(datagram6.len() as u64));
    group.bench_function("complete6", |b| {
        b.iter(|| {
            let mut done = 0;
            for f in &datagram6 {
                if let Verdict::Complete(whole) = reasm.push(black_box(f), 0) {
                    done += whole.len();
                }
            }
            assert_eq!(done, 14 + 40 + 30008);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared; differences that matter here are large.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
