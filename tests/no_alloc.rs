//! No allocation per frame in steady state: the whole loop (poller, RX ring, IPv4 and IPv6
//! reassembly, TCP coalescing, libslirp's callbacks, TX ring) runs in this process with the
//! real libslirp (IPv6 on) while guest frames flow (fragmented IPv4 and IPv6 echo requests,
//! whose replies the TX ring fragments in turn, an IPv6 atomic fragment, and bursts of IPv4
//! and IPv6 TCP segments that are merged among them), and a counting global allocator sees no
//! Rust allocation on this thread; with packet capture (`pcap=`) off and on.
//! (libslirp's own allocations go through glib's malloc and are not counted.)

mod common;

use common::ipv6::{echo6_frame, fragment6, neighbour_solicitation, GUEST6, HOST6};
use slirp_helper::coalesce::Coalescer;
use slirp_helper::config::network::{Ipv6Network, DEFAULT_NET6};
use slirp_helper::config::Network;
use slirp_helper::event_loop::{self, Host};
use slirp_helper::frames::FrameLimit;
use slirp_helper::frames::FrameRx;
use slirp_helper::pcap::{self, Capture};
use slirp_helper::poller::PollerKind;
use slirp_helper::reasm::{ReasmLimits, Reassembler};
use slirp_helper::slirp::api::{SlirpApi, DEFAULT_LIBSLIRP};
use slirp_helper::slirp::{self, SlirpHost, Stack, StackConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Only the measuring thread counts (the test harness allocates on its own threads).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; the counter has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ARP request from 10.0.2.15 for 10.0.2.2 (teaches libslirp the guest's MAC).
fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
    f
}

/// ICMP echo request 10.0.2.15 → 10.0.2.2 (answered by libslirp itself) with `payload` bytes.
fn echo_request(gw: [u8; 6], seq: u16, payload: usize) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..payload).map(|i| i as u8));
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0, 0, 64, 1, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = gw.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// An echo request with `payload` bytes cut into fragments of at most 1480 bytes, last first.
fn fragmented_echo(gw: [u8; 6], seq: u16, payload: usize) -> Vec<Vec<u8>> {
    let whole = echo_request(gw, seq, payload);
    let (eth, ip) = whole.split_at(14);
    let (header, data) = ip.split_at(20);
    let mut frames = Vec::new();
    for (i, chunk) in data.chunks(1480).enumerate() {
        let offset = i * 1480;
        let more = offset + chunk.len() < data.len();
        let mut h = header.to_vec();
        h[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&(0x4000 + seq).to_be_bytes());
        let flags = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&flags.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        frames.push([eth, &h, chunk].concat());
    }
    frames.reverse();
    frames
}

/// `count` consecutive 1000-byte TCP data segments 10.0.2.15:40000 → 10.0.2.2:9 (no such
/// connection: libslirp answers each frame it is given with a RST), all merged into one.
fn tcp_burst(gw: [u8; 6], count: u32) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let payload = vec![i as u8; 1000];
            let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, gw)
                .ipv4([10, 0, 2, 15], [10, 0, 2, 2], 64)
                .tcp(40000, 9, 5000 + 1000 * i, 64240)
                .ack(7000);
            let mut f = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut f, &payload).unwrap();
            f
        })
        .collect()
}

/// `count` consecutive 100-byte IPv6 TCP segments fec0::…:40000 → fec0::2:9 (no such
/// connection: libslirp answers with a RST), merged into one within the MTU.
fn tcp6_burst(gw: [u8; 6], count: u32) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let payload = vec![i as u8; 100];
            let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC, gw)
                .ipv6(GUEST6.octets(), HOST6.octets(), 64)
                .tcp(40000, 9, 5000 + 100 * i, 64240)
                .ack(7000);
            let mut f = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut f, &payload).unwrap();
            f
        })
        .collect()
}

/// The guest's input path, as the helper's `main` builds it.
struct Input<'fd> {
    rx: FrameRx<'fd>,
    reasm: Reassembler,
    coalescer: Coalescer,
}

/// Send `frames` as the guest, run loop iterations until `expected` replies came back.
fn round(
    stack: &mut Stack<Host<'_>>,
    input: &mut Input<'_>,
    guest: &UnixDatagram,
    frames: &[Vec<u8>],
    expected: usize,
    buf: &mut [u8],
) -> usize {
    for f in frames {
        guest.send(f).unwrap();
    }
    let mut replies = 0;
    for _ in 0..100 {
        let Input {
            rx,
            reasm,
            coalescer,
        } = input;
        // The wakeup pipe ends the wait at once: this guest reads only between iterations,
        // and with io_uring the frames queued at an iteration's end go out in the next
        // iteration's enter, whose wait would otherwise run to libslirp's timeout.
        stack.host().notify();
        assert_eq!(
            event_loop::iterate(stack, rx, reasm, coalescer).unwrap(),
            None
        );
        while guest.recv(buf).is_ok() {
            replies += 1;
        }
        if replies >= expected {
            break;
        }
    }
    replies
}

#[test]
fn steady_state_allocates_nothing_per_frame() {
    let capture_file = std::env::temp_dir().join(format!("no-alloc-{}.pcap", std::process::id()));
    // The io_uring engine is Linux's second persistent backend.
    let kinds = if cfg!(target_os = "linux") {
        vec![PollerKind::Poll, PollerKind::Epoll, PollerKind::IoUring]
    } else {
        vec![PollerKind::Poll, PollerKind::platform_default()]
    };
    for (kind, batch, capture) in kinds
        .into_iter()
        .flat_map(|kind| [1, 64].map(|batch| (kind, batch)))
        .flat_map(|(kind, batch)| [false, true].map(|capture| (kind, batch, capture)))
    {
        let (helper_end, guest) = UnixDatagram::pair().unwrap();
        // SOCK_SEQPACKET is what bhyve uses; a datagram pair keeps records too and is all
        // std offers. Both are non-blocking, as bhyve's.
        helper_end.set_nonblocking(true).unwrap();
        guest.set_nonblocking(true).unwrap();
        let fd = helper_end.as_fd();
        let limit = FrameLimit::from_mtui(Some(1500));
        let api = SlirpApi::load(DEFAULT_LIBSLIRP).expect("libslirp0 installed");
        let mut host = Host::new(kind, fd, limit, batch).unwrap();
        if capture {
            host.tx.capture = Some(
                Capture::open(
                    capture_file.to_str().unwrap(),
                    pcap::DEFAULT_MAX_BYTES,
                    limit,
                )
                .unwrap(),
            );
        }
        let network = Network {
            ipv6: Some(Ipv6Network {
                net6: DEFAULT_NET6,
                host6: HOST6,
                dns6: common::ipv6::DNS6,
            }),
            ..Network::default()
        };
        let mut stack = Stack::new(
            api,
            StackConfig {
                restricted: true,
                mtu: limit.mtu(),
                network: &network,
            },
            host,
        )
        .unwrap();
        // Coalescing on for both ring modes (the helper turns it off for a batch of 1 by
        // default; the drain of a batch-1 ring still reads every queued frame).
        let mut input = Input {
            rx: FrameRx::new(fd, limit, batch),
            reasm: Reassembler::new(ReasmLimits::default()),
            coalescer: Coalescer::new(true).with_ipv6_mtu(slirp::if_mtu(limit.mtu(), true)),
        };
        let mut buf = vec![0u8; 4096];

        // Learn the gateway's MAC, then warm up (every table reaches its high-water mark).
        guest.send(&arp_request()).unwrap();
        let mut gw = None;
        for _ in 0..100 {
            let Input {
                rx,
                reasm,
                coalescer,
            } = &mut input;
            stack.host().notify();
            event_loop::iterate(&mut stack, rx, reasm, coalescer).unwrap();
            if let Ok(n) = guest.recv(&mut buf) {
                if n >= 42 && buf[12..14] == [0x08, 0x06] {
                    gw = Some(<[u8; 6]>::try_from(&buf[6..12]).unwrap());
                    break;
                }
            }
        }
        let gw = gw.expect("ARP reply from 10.0.2.2");
        let mut frames: Vec<Vec<u8>> = (0..32)
            .map(|i| echo_request(gw, i, 56 + 40 * i as usize))
            .collect();
        // 4000 bytes: three fragments each way (with IPv6 on, libslirp's if_mtu is 65520 and
        // the TX ring fragments its reply).
        let fragmented = fragmented_echo(gw, 100, 4000);
        assert_eq!(
            round(&mut stack, &mut input, &guest, &fragmented, 3, &mut buf),
            3,
            "{kind:?}/{batch}: the fragmented echo got no fragmented reply"
        );
        assert_eq!(
            input.reasm.counters.completed, 1,
            "{:?}",
            input.reasm.counters
        );
        // Eight segments, one merged frame, one RST.
        let burst = tcp_burst(gw, 8);
        assert_eq!(
            round(&mut stack, &mut input, &guest, &burst, 1, &mut buf),
            1,
            "{kind:?}/{batch}: the merged TCP burst got no RST"
        );
        assert_eq!(
            (
                input.coalescer.counters.segments,
                input.coalescer.counters.frames
            ),
            (8, 1)
        );
        frames.extend(fragmented);
        // The echoes end the burst's merge (another flow), so one RST for the burst.
        frames.extend(burst);

        // IPv6: teach libslirp the guest's MAC (a neighbour solicitation for fec0::2, whose
        // advertisement gives the gateway's), then an echo in three fragments, an atomic
        // fragment and a burst of short segments, merged within the MTU.
        guest
            .send(&neighbour_solicitation(GUEST6, GUEST_MAC, HOST6))
            .unwrap();
        let mut gw6 = None;
        for _ in 0..100 {
            let Input {
                rx,
                reasm,
                coalescer,
            } = &mut input;
            stack.host().notify();
            event_loop::iterate(&mut stack, rx, reasm, coalescer).unwrap();
            if let Ok(n) = guest.recv(&mut buf) {
                // Ethernet, IPv6 next header ICMPv6, type 136.
                if n >= 78 && buf[12..14] == [0x86, 0xdd] && buf[20] == 58 && buf[54] == 136 {
                    gw6 = Some(<[u8; 6]>::try_from(&buf[6..12]).unwrap());
                    break;
                }
            }
        }
        let gw6 = gw6.expect("neighbour advertisement from fec0::2");
        // 3000 bytes: three fragments each way (the TX ring fragments the reply).
        let echo6 = fragment6(
            &echo6_frame(gw6, HOST6, 0x6006, 1, &[0x66; 3000]),
            1200,
            0x600d,
        );
        assert_eq!(echo6.len(), 3);
        let atomic6 = fragment6(
            &echo6_frame(gw6, HOST6, 0x6006, 2, &[0x67; 56]),
            2048,
            0x600e,
        );
        let burst6 = tcp6_burst(gw6, 8);
        let before6 = input.coalescer.counters.frames;
        assert_eq!(
            round(&mut stack, &mut input, &guest, &burst6, 1, &mut buf),
            1,
            "{kind:?}/{batch}: the merged IPv6 TCP burst got no RST"
        );
        assert_eq!(input.coalescer.counters.frames, before6 + 1);
        frames.extend(echo6);
        frames.extend(atomic6);
        frames.extend(burst6);
        // Replies per round: an echo reply each (three fragments for the big IPv4 and the big
        // IPv6 one), a RST per burst.
        let expected = 32 + 3 + 1 + 3 + 1 + 1;
        for _ in 0..50 {
            round(&mut stack, &mut input, &guest, &frames, expected, &mut buf);
        }
        assert!(
            input.reasm.counters.completed >= 45,
            "fragmented echoes not reassembled: {:?}",
            input.reasm.counters
        );
        let merged_before = input.coalescer.counters.frames;
        let completed_before = input.reasm.counters.completed;
        let fragmented_before = stack.host().tx.counters.fragmented;

        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        let mut replies = 0;
        for _ in 0..200 {
            replies += round(&mut stack, &mut input, &guest, &frames, expected, &mut buf);
        }
        COUNTING.with(|c| c.set(false));
        let allocations = ALLOCATIONS.load(Ordering::Relaxed);
        let moved = input.rx.counters.frames;
        assert!(
            replies >= 200 * expected * 9 / 10,
            "{kind:?}/{batch}: only {replies} replies"
        );
        // Per round: the IPv4 echo, the IPv6 echo and the IPv6 atomic fragment.
        assert!(
            input.reasm.counters.completed >= completed_before + 3 * 180,
            "{kind:?}/{batch}: datagrams not reassembled while counting: {:?}",
            input.reasm.counters
        );
        // Per round: the big IPv4 and IPv6 echo replies, split by the TX ring.
        let fragmented = stack.host().tx.counters.fragmented - fragmented_before;
        assert!(
            fragmented >= 2 * 180,
            "{kind:?}/{batch}: replies not fragmented while counting: {fragmented}"
        );
        // Per round: the IPv4 and the IPv6 burst.
        assert!(
            input.coalescer.counters.frames >= merged_before + 2 * 180,
            "{kind:?}/{batch}: bursts not merged while counting: {:?}",
            input.coalescer.counters
        );
        assert_eq!(allocations, 0, "{kind:?} batch {batch} capture {capture}: {allocations} allocations for {replies} echo replies ({moved} frames in)");
        #[cfg(target_os = "linux")]
        if kind == PollerKind::IoUring && stack.host().poller.kind() == PollerKind::IoUring {
            // Guest frames came through the ring's buffers, not from reads of the socket.
            assert!(input.rx.ring.active(), "{kind:?}/{batch}: no buffer ring");
            assert_eq!(input.rx.counters.syscalls, 0, "{kind:?}/{batch}");
            // Frames to the guest went in the ring's enters: batches without a system call
            // (a ring of one slot sends each frame as it is queued, as the C helper).
            let tx = stack.host().tx.counters;
            assert!(
                batch == 1 || tx.batches > tx.syscalls,
                "{kind:?}/{batch}: {tx:?}"
            );
        }
        if capture {
            let host = stack.host();
            let counters = host.tx.capture.as_ref().unwrap().counters;
            assert!(
                !counters.stopped && counters.frames > 200 * expected as u64,
                "{counters:?}"
            );
        }
    }
    let _ = std::fs::remove_file(&capture_file);
}
