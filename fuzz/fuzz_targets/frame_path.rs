//! The guest → helper frame path with the real libslirp in this process: arbitrary frames go
//! in on bhyve's end of a `SOCK_SEQPACKET` socketpair, the helper's loop (`event_loop::iterate`:
//! poller, RX ring, `slirp_input`, timers, TX ring) runs a few times, and the replies are read
//! back. Never panics, never ends the loop while bhyve's end is open, never lets a callback
//! panic, and never sends bhyve a frame longer than the frame limit.
//!
//! libslirp runs RESTRICTED (bhyve's default): packets to anything outside 10.0.2.0/24 are
//! dropped by libslirp's `ip_input`, TCP SYNs get RST, UDP other than DHCP/TFTP is dropped
//! (`udp6_input` drops all IPv6 UDP in restricted mode), ICMPv6 echo is answered for the
//! host's own addresses only. Nothing leaves the machine. Never fuzz the open mode.
//! IPv6 is on (fec0::/64), so that the IPv6 reassembler, IPv6 coalescing and libslirp's
//! IPv6 input (NDP, ICMPv6, TCP) are in the path.
//!
//! One `Stack` per process (creating libslirp per input would dominate the run time), so
//! libslirp's state (ARP cache, DHCP leases, fragment queues, sockets) carries over from one
//! input to the next: a crash may need the inputs before it (libFuzzer's `-runs` on the saved
//! corpus, or `crash-*` replayed after the corpus, reproduces most).
//!
//! Input: a sequence of frames, each `[hi, lo, bytes...]` with a big-endian 16-bit prefix:
//! - bits 0..=11: frame length (0..=4095; more than the bytes left takes the rest);
//! - bit 15: fix up the IPv4 header (total length, header checksum) if it is IPv4, the IPv6
//!   payload length if it is IPv6;
//! - bit 14: fix up the TCP/UDP/ICMP checksum of an unfragmented IPv4 datagram, the
//!   TCP/UDP/ICMPv6 checksum of an IPv6 packet without extension headers;
//! - bit 13: run one loop iteration after sending this frame (otherwise all frames are sent
//!   before the loop runs);
//! - bit 12: the frame is not the guest's but libslirp's: it goes to the TX ring as
//!   `send_packet` hands it over, so that frames longer than the guest's link (libslirp's
//!   `if_mtu` is 65520 with IPv6 on) go through the fragmenter (`frames::fragment`), whose
//!   fragments must fit the frame limit.
//!
//! Without the fix-ups nearly every mutated frame would die on libslirp's checksum checks.
//!
//! The helper's IPv4 reassembler (`src/reasm.rs`) sits in the path as in production, so
//! libslirp never sees a fragment. Before it existed this target found libslirp 4.7.0's crash
//! on a lone last fragment within seconds (finding L1 in docs/fuzzing.md).
//! The TCP coalescer (`src/coalesce.rs`) is in the path too, on as with the default batch.
//! `FRAME_PATH_VERBOSE=1` prints one line per input.
//!
//! libslirp is not instrumented (a system library, and no clang here to rebuild it), so
//! libFuzzer's coverage would only see the helper's own code. To steer the search through
//! libslirp anyway, what libslirp *does* is fed back as coverage: each reply's class
//! (ethertype, protocol, ICMP type/code, TCP flags, UDP ports, DHCP message type, size) and
//! the per-input changes of the drop and error counters bump libFuzzer "extra counters"
//! (the `__libfuzzer_extra_counters` section), so an input that makes libslirp answer in a
//! new way is kept in the corpus.
#![no_main]

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};

use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use slirp_helper::coalesce::Coalescer;
use slirp_helper::config::network::{Ipv6Network, DEFAULT_NET6};
use slirp_helper::config::Network;
use std::net::Ipv6Addr;
use slirp_helper::event_loop::{self, Host};
use slirp_helper::frames::{FrameLimit, FrameRx, DEFAULT_BATCH};
use slirp_helper::poller::{Own, PollerKind};
use slirp_helper::reasm::{Reassembler, ReasmLimits};
use slirp_helper::slirp::api::{SlirpApi, DEFAULT_LIBSLIRP};
use slirp_helper::slirp::{self, SlirpHost, Stack, StackConfig};

/// Frames per input at most (keeps one input's cost bounded).
const MAX_FRAMES: usize = 32;
/// Loop iterations after the frames are sent.
const ITERATIONS: usize = 3;

struct Harness {
    stack: Stack<Host<'static>>,
    rx: FrameRx<'static>,
    reasm: Reassembler,
    coalescer: Coalescer,
    limit: FrameLimit,
    /// bhyve's end.
    guest: OwnedFd,
    reply: Vec<u8>,
    scratch: Vec<u8>,
    inputs: u64,
    /// Replies read back during the current input.
    replies: usize,
    /// `FRAME_PATH_VERBOSE=1`: one line per input (frames in, replies out, counters).
    verbose: bool,
}

impl Harness {
    fn new() -> Harness {
        let (helper, guest) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        // The helper's end, borrowed by the loop: it lives as long as the fuzzing process, as
        // the harness does.
        let helper: &'static OwnedFd = Box::leak(Box::new(helper));
        let fd = helper.as_fd();
        let limit = FrameLimit::from_mtui(Some(1500));
        let api = SlirpApi::load(DEFAULT_LIBSLIRP).expect("libslirp0 installed");
        let host =
            Host::new(PollerKind::platform_default(), fd, limit, DEFAULT_BATCH).expect("Host::new");
        let stack = Stack::new(
            api,
            StackConfig {
                // NEVER false here: restricted keeps every fuzzed packet inside libslirp.
                restricted: true,
                mtu: limit.mtu(),
                // IPv6 on with libslirp's defaults (fec0::/64, host ::2, DNS ::3).
                network: &Network {
                    ipv6: Some(Ipv6Network {
                        net6: DEFAULT_NET6,
                        host6: Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2),
                        dns6: Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 3),
                    }),
                    ..Network::default()
                },
            },
            host,
        )
        .expect("slirp_new");
        let rx = FrameRx::new(fd, limit, DEFAULT_BATCH);
        Harness {
            stack,
            rx,
            reasm: Reassembler::new(ReasmLimits::default()),
            coalescer: Coalescer::new(true).with_ipv6_mtu(slirp::if_mtu(limit.mtu(), true)),
            limit,
            guest,
            reply: vec![0; 128 * 1024],
            scratch: Vec::with_capacity(4096),
            inputs: 0,
            replies: 0,
            verbose: env_flag("FRAME_PATH_VERBOSE"),
        }
    }

    /// One loop iteration that cannot block: the wakeup pipe is made readable first, so the
    /// wait returns at once even when nothing else is ready (libslirp's timeout is up to 1 s).
    fn iterate(&mut self) {
        self.stack.host().notify();
        let exit = event_loop::iterate(
            &mut self.stack,
            &mut self.rx,
            &mut self.reasm,
            &mut self.coalescer,
        )
        .expect("loop error");
        if exit.is_some() {
            let host = self.stack.host();
            let (peer_gone, frontend) =
                (host.tx.peer_gone(), host.poller.own_revents(Own::Frontend));
            panic!(
                "loop ended ({exit:?}) while bhyve's end is open: tx peer_gone={peer_gone} \
                 frontend revents={frontend:?} after {} inputs; {}",
                self.inputs,
                event_loop::stats_line(&mut self.stack, &self.rx, &self.reasm, &self.coalescer)
            );
        }
        assert!(!slirp::callback_panicked(), "a libslirp callback panicked");
        self.drain_replies();
    }

    fn drain_replies(&mut self) {
        while let Ok(n) = nix::sys::socket::recv(
            self.guest.as_raw_fd(),
            &mut self.reply,
            MsgFlags::MSG_DONTWAIT,
        ) {
            assert!(
                n <= self.limit.max_frame(),
                "helper sent a {n}-byte frame; the limit is {}",
                self.limit.max_frame()
            );
            self.replies += 1;
            feedback(reply_class(&self.reply[..n]));
        }
    }

    /// The drop/error counters whose changes are fed back as coverage.
    fn counters(&mut self) -> [u64; 21] {
        let rx = self.rx.counters;
        let re = self.reasm.counters;
        let host = self.stack.host();
        let tx = host.tx.counters;
        [
            rx.frames,
            rx.runt,
            rx.oversize,
            rx.empty,
            tx.frames,
            tx.oversize,
            tx.fragmented,
            tx.full,
            host.counters.guest_errors,
            re.fragments,
            re.completed,
            re.evicted,
            re.malformed,
            re.zero_length,
            re.unaligned,
            re.too_long,
            re.overlap,
            re.inconsistent,
            re.discarded,
            re.duplicates,
            re.no_room,
        ]
    }

    fn run(&mut self, data: &[u8]) {
        let mut rest = data;
        let mut frames = 0;
        self.replies = 0;
        let before = self.counters();
        while let [hi, lo, tail @ ..] = rest {
            if frames == MAX_FRAMES {
                break;
            }
            let prefix = u16::from_be_bytes([*hi, *lo]);
            let len = usize::from(prefix & 0x0fff).min(tail.len());
            let (frame, after) = tail.split_at(len);
            rest = after;
            frames += 1;
            self.scratch.clear();
            self.scratch.extend_from_slice(frame);
            if prefix & 0x8000 != 0 {
                fix_ipv4_header(&mut self.scratch);
                fix_ipv6_header(&mut self.scratch);
            }
            if prefix & 0x4000 != 0 {
                fix_l4_checksum(&mut self.scratch);
                fix_ipv6_l4_checksum(&mut self.scratch);
            }
            if prefix & 0x1000 != 0 {
                self.stack.host().send_packet(&self.scratch);
                self.drain_replies();
                continue;
            }
            // EAGAIN (helper's buffer full) drops the frame, as bhyve's non-blocking send does.
            let _ = nix::sys::socket::send(
                self.guest.as_raw_fd(),
                &self.scratch,
                MsgFlags::MSG_EOR | MsgFlags::MSG_DONTWAIT,
            );
            if prefix & 0x2000 != 0 {
                self.iterate();
            }
        }
        for _ in 0..ITERATIONS {
            self.iterate();
        }
        let after = self.counters();
        for (i, (a, b)) in after.iter().zip(before.iter()).enumerate() {
            // Which counters moved, and roughly by how much (log2 bucket).
            let delta = a.wrapping_sub(*b);
            if delta != 0 {
                feedback(0xC0DE_0000 | (i as u64) << 8 | u64::from(64 - delta.leading_zeros()));
            }
        }
        feedback(0x5EED_0000 | self.replies.min(64) as u64);
        self.inputs += 1;
        if self.verbose {
            eprintln!(
                "frame_path input {}: {frames} frames, {} replies; {}",
                self.inputs,
                self.replies,
                event_loop::stats_line(&mut self.stack, &self.rx, &self.reasm, &self.coalescer)
            );
        } else if self.inputs.is_power_of_two() && self.inputs >= 1 << 16 {
            eprintln!(
                "frame_path after {} inputs: {}",
                self.inputs,
                event_loop::stats_line(&mut self.stack, &self.rx, &self.reasm, &self.coalescer)
            );
        }
    }
}

const ETHER_HDR: usize = 14;

/// libFuzzer's extra coverage counters: cleared before each input, read after it.
/// The whole section must be 8-byte aligned and sized (libFuzzer clears it a word at a time).
#[repr(C, align(64))]
struct ExtraCounters([AtomicU8; EXTRA_COUNTERS]);

const EXTRA_COUNTERS: usize = 8192;

#[used]
#[link_section = "__libfuzzer_extra_counters"]
static EXTRA: ExtraCounters = ExtraCounters([const { AtomicU8::new(0) }; EXTRA_COUNTERS]);

/// Counts one occurrence of `feature` (hashed onto the counters).
fn feedback(feature: u64) {
    let h = feature.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let slot = &EXTRA.0[(h >> 51) as usize % EXTRA_COUNTERS];
    let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1));
}

/// What kind of frame libslirp sent, as one number.
fn reply_class(frame: &[u8]) -> u64 {
    let byte = |i: usize| u64::from(frame.get(i).copied().unwrap_or(0));
    let size = (frame.len() as u64 / 128).min(15);
    let ethertype = byte(12) << 8 | byte(13);
    let mut class = ethertype << 24 | size << 20;
    match ethertype {
        0x0806 => class |= byte(21), // ARP op
        0x0800 => {
            let ip = ETHER_HDR;
            let l4 = ip + (frame.get(ip).map_or(20, |b| usize::from(b & 0x0f) * 4));
            let proto = byte(ip + 9);
            class |= proto << 16;
            class |= match proto {
                // ICMP type, and for errors (unreachable, quench, redirect, time exceeded,
                // parameter problem) the code and the protocol of the quoted datagram. Echo
                // replies copy the guest's code and payload: not libslirp's behaviour.
                1 => match byte(l4) {
                    t @ (3 | 4 | 5 | 11 | 12) => t << 8 | byte(l4 + 1) | byte(l4 + 8 + 9) << 12,
                    t => t << 8,
                },
                // TCP flags.
                6 => byte(l4 + 13),
                // UDP source port (67 DHCP, 69 TFTP) and the DHCP message type when present.
                17 => {
                    let sport = byte(l4) << 8 | byte(l4 + 1);
                    let dhcp_type = if sport == 67 {
                        dhcp_message_type(&frame[l4.min(frame.len())..])
                    } else {
                        0
                    };
                    (sport & 0xff) << 8 | dhcp_type
                }
                _ => 0,
            };
        }
        0x86dd => {
            // Next header; ICMPv6 type and code (NDP, echo reply, errors); TCP flags.
            let next = byte(ETHER_HDR + 6);
            let l4 = ETHER_HDR + 40;
            class |= next << 16;
            class |= match next {
                58 => byte(l4) << 8 | byte(l4 + 1),
                6 => byte(l4 + 13),
                _ => 0,
            };
        }
        _ => {}
    }
    class
}

/// Option 53 of a DHCP message (UDP header first), or 0.
fn dhcp_message_type(udp: &[u8]) -> u64 {
    let Some(mut opts) = udp.get(8 + 240..) else {
        return 0;
    };
    while let [code, rest @ ..] = opts {
        match (*code, rest) {
            (0, _) => opts = rest,
            (255, _) => break,
            (53, [_, t, ..]) => return u64::from(*t),
            (_, [len, tail @ ..]) => opts = tail.get(usize::from(*len)..).unwrap_or_default(),
            _ => break,
        }
    }
    0
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0" && !v.is_empty())
}

/// The IPv4 header of an Ethernet frame: (start, header length), if there is a whole one.
fn ipv4_header(frame: &[u8]) -> Option<(usize, usize)> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(frame.get(ETHER_HDR)? & 0x0f) * 4;
    (ihl >= 20 && ETHER_HDR + ihl <= frame.len()).then_some((ETHER_HDR, ihl))
}

fn ones_sum(bytes: &[u8], mut sum: u32) -> u32 {
    for pair in bytes.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        let lo = pair.get(1).map_or(0, |&b| u32::from(b));
        sum += hi | lo;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn fix_ipv4_header(frame: &mut [u8]) {
    let Some((ip, ihl)) = ipv4_header(frame) else {
        return;
    };
    let total = (frame.len() - ip).min(0xffff) as u16;
    frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    frame[ip + 10..ip + 12].fill(0);
    let c = fold(ones_sum(&frame[ip..ip + ihl], 0));
    frame[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}

fn fix_l4_checksum(frame: &mut [u8]) {
    let Some((ip, ihl)) = ipv4_header(frame) else {
        return;
    };
    let frag = u16::from_be_bytes([frame[ip + 6], frame[ip + 7]]);
    if frag & 0x3fff != 0 {
        return; // a fragment: the checksum covers the whole datagram
    }
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    let end = (ip + total).min(frame.len());
    let l4 = ip + ihl;
    if end <= l4 {
        return;
    }
    let proto = frame[ip + 9];
    let at = match proto {
        1 => 2,
        6 => 16,
        17 => 6,
        _ => return,
    };
    if l4 + at + 2 > end {
        return;
    }
    frame[l4 + at..l4 + at + 2].fill(0);
    let mut sum = 0;
    if proto != 1 {
        sum = ones_sum(&frame[ip + 12..ip + 20], sum);
        sum += u32::from(proto) + (end - l4) as u32;
    }
    let mut c = fold(ones_sum(&frame[l4..end], sum));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// An IPv6 packet's fixed header: its start, if there is a whole one.
fn ipv6_header(frame: &[u8]) -> Option<usize> {
    (frame.get(12..14)? == [0x86, 0xdd] && frame.len() >= ETHER_HDR + 40).then_some(ETHER_HDR)
}

fn fix_ipv6_header(frame: &mut [u8]) {
    let Some(ip) = ipv6_header(frame) else {
        return;
    };
    let len = (frame.len() - ip - 40).min(0xffff) as u16;
    frame[ip + 4..ip + 6].copy_from_slice(&len.to_be_bytes());
}

fn fix_ipv6_l4_checksum(frame: &mut [u8]) {
    let Some(ip) = ipv6_header(frame) else {
        return;
    };
    let l4 = ip + 40;
    let end = (l4 + usize::from(u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]))).min(frame.len());
    let next = frame[ip + 6];
    let at = match next {
        58 => 2,
        6 => 16,
        17 => 6,
        _ => return,
    };
    if l4 + at + 2 > end {
        return;
    }
    frame[l4 + at..l4 + at + 2].fill(0);
    let mut sum = ones_sum(&frame[ip + 8..ip + 40], 0);
    sum += u32::from(next) + (end - l4) as u32;
    let mut c = fold(ones_sum(&frame[l4..end], sum));
    if next == 17 && c == 0 {
        c = 0xffff;
    }
    frame[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}

thread_local! {
    /// libFuzzer runs every input on the main thread.
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        h.get_or_insert_with(Harness::new).run(data);
    });
});
