//! The guest → helper frame path with the real libslirp in this process: arbitrary frames go
//! in on bhyve's end of a `SOCK_SEQPACKET` socketpair, the helper's loop (`event_loop::iterate`:
//! poller, RX ring, `slirp_input`, timers, TX ring) runs a few times, and the replies are read
//! back. Never panics, never ends the loop while bhyve's end is open, never lets a callback
//! panic, and never sends bhyve a frame longer than the frame limit.
//!
//! libslirp runs RESTRICTED (bhyve's default): packets to anything outside 10.0.2.0/24 are
//! dropped by libslirp's `ip_input`, TCP SYNs get RST, UDP other than DHCP/TFTP is dropped.
//! Nothing leaves the machine. Never fuzz the open mode.
//!
//! One `Stack` per process (creating libslirp per input would dominate the run time), so
//! libslirp's state (ARP cache, DHCP leases, fragment queues, sockets) carries over from one
//! input to the next: a crash may need the inputs before it (libFuzzer's `-runs` on the saved
//! corpus, or `crash-*` replayed after the corpus, reproduces most).
//!
//! Input: a sequence of frames, each `[hi, lo, bytes...]` with a big-endian 16-bit prefix:
//! - bits 0..=11: frame length (0..=4095; more than the bytes left takes the rest);
//! - bit 15: fix up the IPv4 header (total length, header checksum) if it is IPv4;
//! - bit 14: fix up the TCP/UDP/ICMP checksum of an unfragmented IPv4 datagram;
//! - bit 13: run one loop iteration after sending this frame (otherwise all frames are sent
//!   before the loop runs).
//!
//! Without the fix-ups nearly every mutated frame would die on libslirp's checksum checks.
#![no_main]

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};

use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use slirp_helper::event_loop::{self, Host};
use slirp_helper::frames::{FrameLimit, FrameRx, DEFAULT_BATCH};
use slirp_helper::poller::PollerKind;
use slirp_helper::slirp::api::{SlirpApi, DEFAULT_LIBSLIRP};
use slirp_helper::slirp::{self, SlirpHost, Stack, StackConfig};

/// Frames per input at most (keeps one input's cost bounded).
const MAX_FRAMES: usize = 32;
/// Loop iterations after the frames are sent.
const ITERATIONS: usize = 3;

struct Harness {
    stack: Stack<Host>,
    rx: FrameRx,
    limit: FrameLimit,
    /// bhyve's end.
    guest: OwnedFd,
    /// The helper's end (the loop holds its raw fd).
    _helper: OwnedFd,
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
        let fd = helper.as_raw_fd();
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
            },
            host,
        )
        .expect("slirp_new");
        let rx = FrameRx::new(fd, limit, DEFAULT_BATCH);
        Harness {
            stack,
            rx,
            limit,
            guest,
            _helper: helper,
            reply: vec![0; 128 * 1024],
            scratch: Vec::with_capacity(4096),
            inputs: 0,
            replies: 0,
            verbose: std::env::var_os("FRAME_PATH_VERBOSE").is_some(),
        }
    }

    /// One loop iteration that cannot block: the wakeup pipe is made readable first, so the
    /// wait returns at once even when nothing else is ready (libslirp's timeout is up to 1 s).
    fn iterate(&mut self) {
        self.stack.host().notify();
        let exit = event_loop::iterate(&mut self.stack, &mut self.rx).expect("loop error");
        assert_eq!(exit, None, "loop ended while bhyve's end is open");
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
        }
    }

    fn run(&mut self, data: &[u8]) {
        let mut rest = data;
        let mut frames = 0;
        self.replies = 0;
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
            }
            if prefix & 0x4000 != 0 {
                fix_l4_checksum(&mut self.scratch);
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
        self.inputs += 1;
        if self.verbose {
            eprintln!(
                "frame_path input {}: {frames} frames, {} replies; {}",
                self.inputs,
                self.replies,
                event_loop::stats_line(&mut self.stack, &self.rx)
            );
        } else if self.inputs.is_power_of_two() && self.inputs >= 1 << 16 {
            eprintln!(
                "frame_path after {} inputs: {}",
                self.inputs,
                event_loop::stats_line(&mut self.stack, &self.rx)
            );
        }
    }
}

const ETHER_HDR: usize = 14;

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
