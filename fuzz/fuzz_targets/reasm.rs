//! The reassembler in front of libslirp (`src/reasm.rs`), on its own: arbitrary IPv4 and IPv6
//! frames and clock steps under arbitrary limits. Never panics or allocates after
//! construction; never passes on a frame that claims to be a fragment (libslirp 4.7.0's
//! `ip_reass` must never run; an IPv6 frame whose fixed header's next header is the fragment
//! header never passes either); passes every other frame untouched; every reassembled IPv4
//! datagram is a well-formed, unfragmented datagram whose payload bytes all came from
//! fragments of that datagram; every IPv6 one has a payload length that matches the frame, no
//! fragment header right after its fixed header, and (when it kept no extension headers)
//! payload bytes that all came from fragments between its addresses; never holds more than
//! its limits.
//!
//! Input: `[datagrams, bytes, age]` then records `[dt, hi, lo, frame...]`:
//! - limits: `max_datagrams` = 1 + datagrams % 8 (64 when bit 7 is set), `max_bytes` =
//!   bytes * 4 KiB (the reassembler raises it to one largest datagram), `max_age_ms` = age * 100;
//! - per record the clock moves `dt * 20` ms and `expire` runs (the loop calls it every
//!   iteration); the 16-bit prefix holds the frame length in bits 0..=11 (more than what is left
//!   takes the rest), and bit 15 asks for the IPv4 total length and header checksum (IPv6: the
//!   payload length) to be fixed up (without it nearly every mutated fragment would be dropped
//!   as malformed).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use slirp_helper::reasm::{ReasmLimits, Reassembler, Verdict, MAX_PAYLOAD};
use slirp_helper::wire::checksum::internet_checksum;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; the counter has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
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
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ETHER_HDR: usize = 14;
const MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// RFC 791's identity of a datagram: source, destination, protocol, identification.
type Key = ([u8; 4], [u8; 4], u8, u16);

/// A fragment as sent (what the reassembled payload may be made of).
struct Sent {
    key: Key,
    offset: usize,
    payload: Vec<u8>,
}

const IPV6_HDR: usize = 40;
const NEXT_FRAGMENT: u8 = 44;

/// An IPv6 fragment as sent with its fragment header right after the fixed header (the
/// common case, the one whose payload the check follows): addresses, offset, data.
struct Sent6 {
    src: [u8; 16],
    dst: [u8; 16],
    offset: usize,
    payload: Vec<u8>,
}

fn is_ipv6(frame: &[u8]) -> bool {
    frame.len() >= ETHER_HDR + IPV6_HDR
        && frame[12..14] == [0x86, 0xdd]
        && frame[ETHER_HDR] >> 4 == 6
}

fn addresses6(ip: &[u8]) -> ([u8; 16], [u8; 16]) {
    let mut src = [0; 16];
    let mut dst = [0; 16];
    src.copy_from_slice(&ip[8..24]);
    dst.copy_from_slice(&ip[24..40]);
    (src, dst)
}

fn sent_fragment6(frame: &[u8]) -> Option<Sent6> {
    if !is_ipv6(frame) || frame[ETHER_HDR + 6] != NEXT_FRAGMENT {
        return None;
    }
    let ip = &frame[ETHER_HDR..];
    let end = IPV6_HDR + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let payload = ip.get(IPV6_HDR + 8..end)?;
    let (src, dst) = addresses6(ip);
    Some(Sent6 {
        src,
        dst,
        offset: usize::from(u16::from_be_bytes([ip[42], ip[43]]) & 0xfff8),
        payload: payload.to_vec(),
    })
}

fn fix_ipv6_header(frame: &mut [u8]) {
    if is_ipv6(frame) {
        let len = (frame.len() - ETHER_HDR - IPV6_HDR).min(0xffff) as u16;
        frame[ETHER_HDR + 4..ETHER_HDR + 6].copy_from_slice(&len.to_be_bytes());
    }
}

/// Extension headers the reassembler may keep before the fragmentable part.
fn is_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 51 | 60 | 135 | 139 | 140)
}

fn check_complete6(frame: &[u8], sent: &[Sent6]) {
    assert!(
        is_ipv6(frame),
        "complete frame of {} bytes is not IPv6",
        frame.len()
    );
    let ip = &frame[ETHER_HDR..];
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    assert_eq!(
        payload_len,
        ip.len() - IPV6_HDR,
        "payload length does not match the frame"
    );
    let next = ip[6];
    assert_ne!(
        next, NEXT_FRAGMENT,
        "reassembled packet starts with a fragment header"
    );
    if is_extension(next) {
        return;
    }
    let (src, dst) = addresses6(ip);
    for (at, byte) in ip[IPV6_HDR..].iter().enumerate() {
        let from_a_fragment = sent.iter().any(|f| {
            f.src == src
                && f.dst == dst
                && at >= f.offset
                && f.payload.get(at - f.offset) == Some(byte)
        });
        assert!(
            from_a_fragment,
            "IPv6 payload byte {at} ({byte:#04x}) came from no fragment"
        );
    }
}

fn key_of(ip: &[u8]) -> Key {
    (
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
        ip[9],
        u16::from_be_bytes([ip[4], ip[5]]),
    )
}

/// Whether libslirp's `ip_input` would take this frame to `ip_reass` (if it got that far):
/// IPv4 ethertype, at least an IPv4 header's worth of bytes, MF or a fragment offset.
fn claims_fragment(frame: &[u8]) -> bool {
    frame.len() >= ETHER_HDR + 20
        && frame[12..14] == [0x08, 0x00]
        && u16::from_be_bytes([frame[ETHER_HDR + 6], frame[ETHER_HDR + 7]]) & (MF | OFFSET_MASK)
            != 0
}

/// The fragment a frame carries, as far as a well-formed one goes (for the payload check only).
fn sent_fragment(frame: &[u8]) -> Option<Sent> {
    if !claims_fragment(frame) {
        return None;
    }
    let ip = &frame[ETHER_HDR..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let payload = ip.get(header_len..total)?;
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    Some(Sent {
        key: key_of(ip),
        offset: usize::from(flags & OFFSET_MASK) * 8,
        payload: payload.to_vec(),
    })
}

fn fix_ipv4_header(frame: &mut [u8]) {
    if frame.len() < ETHER_HDR + 20 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ip = ETHER_HDR;
    let header_len = usize::from(frame[ip] & 0x0f) * 4;
    if header_len < 20 || ip + header_len > frame.len() {
        return;
    }
    let total = (frame.len() - ip).min(0xffff) as u16;
    frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    frame[ip + 10..ip + 12].fill(0);
    let c = internet_checksum(&frame[ip..ip + header_len]);
    frame[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}

fn check_complete(frame: &[u8], sent: &[Sent]) {
    assert!(
        frame.len() >= ETHER_HDR + 20,
        "complete frame of {} bytes",
        frame.len()
    );
    assert_eq!(frame[12..14], [0x08, 0x00], "complete frame is not IPv4");
    let ip = &frame[ETHER_HDR..];
    assert_eq!(ip[0], 0x45, "reassembled header is not IPv4 with 20 bytes");
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    assert_eq!(
        flags & (MF | OFFSET_MASK),
        0,
        "reassembled datagram still a fragment"
    );
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(total, ip.len(), "total length does not match the frame");
    assert_eq!(internet_checksum(&ip[..20]), 0, "bad header checksum");
    let payload = &ip[20..];
    assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
    let key = key_of(ip);
    for (at, byte) in payload.iter().enumerate() {
        let from_a_fragment = sent
            .iter()
            .any(|f| f.key == key && at >= f.offset && f.payload.get(at - f.offset) == Some(byte));
        assert!(
            from_a_fragment,
            "payload byte {at} ({byte:#04x}) of {key:?} came from no fragment"
        );
    }
}

/// `REASM_VERBOSE=1` prints each verdict (without the frame bytes).
fn verdict_name(v: &Verdict<'_>) -> String {
    match v {
        Verdict::Pass(f) => format!("Pass({})", f.len()),
        Verdict::Complete(f) => format!("Complete({})", f.len()),
        Verdict::Held => "Held".to_owned(),
        Verdict::Dropped(why) => format!("Dropped({why:?})"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [datagrams, bytes, age, tail @ ..] = data else {
        return;
    };
    let mut rest: &[u8] = tail;
    let limits = ReasmLimits {
        max_datagrams: if datagrams & 0x80 != 0 {
            64
        } else {
            1 + usize::from(datagrams % 8)
        },
        max_bytes: usize::from(*bytes) * 4096,
        max_age_ms: i64::from(*age) * 100,
    };
    let mut reasm = Reassembler::new(limits);
    let limits = reasm.limits();
    let mut now_ms: i64 = 1_000_000;
    let mut sent: Vec<Sent> = Vec::new();
    let mut sent6: Vec<Sent6> = Vec::new();
    let mut frame = Vec::with_capacity(4096);
    while let &[dt, hi, lo, ref tail @ ..] = rest {
        let prefix = u16::from_be_bytes([hi, lo]);
        let len = usize::from(prefix & 0x0fff).min(tail.len());
        frame.clear();
        frame.extend_from_slice(&tail[..len]);
        rest = &tail[len..];
        if prefix & 0x8000 != 0 {
            fix_ipv4_header(&mut frame);
            fix_ipv6_header(&mut frame);
        }
        sent.extend(sent_fragment(&frame));
        sent6.extend(sent_fragment6(&frame));
        now_ms += i64::from(dt) * 20;

        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        reasm.expire(now_ms);
        let verdict = reasm.push(&frame, now_ms);
        COUNTING.store(false, Ordering::Relaxed);
        assert_eq!(
            ALLOCATIONS.load(Ordering::Relaxed),
            0,
            "allocated per frame"
        );
        if std::env::var_os("REASM_VERBOSE").is_some() {
            eprintln!(
                "t={now_ms} {} bytes: {:?}",
                frame.len(),
                verdict_name(&verdict)
            );
        }
        match verdict {
            Verdict::Pass(out) => {
                assert!(
                    std::ptr::eq(out, frame.as_slice()),
                    "Pass changed the frame"
                );
                assert!(
                    !claims_fragment(out),
                    "a fragment passed through to libslirp"
                );
                assert!(
                    !(is_ipv6(out) && out[ETHER_HDR + 6] == NEXT_FRAGMENT),
                    "an IPv6 fragment passed through to libslirp"
                );
            }
            Verdict::Complete(out) if is_ipv6(out) => check_complete6(out, &sent6),
            Verdict::Complete(out) => check_complete(out, &sent),
            Verdict::Held | Verdict::Dropped(_) => {}
        }
        let next = reasm.next_expiry_ms();
        assert!(reasm.datagrams() <= limits.max_datagrams);
        assert!(reasm.held_bytes() <= limits.max_bytes);
        match next {
            // `expire` just ran: whatever is still held expires later than now.
            Some(at) => assert!(at >= now_ms, "expiry {at} already past at {now_ms}"),
            None => assert_eq!(reasm.datagrams(), 0, "datagrams held but no expiry"),
        }
    }
});
