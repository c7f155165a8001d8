//! IPv6 frames for the integration tests, built and checked byte by byte (independently of the
//! helper's `wire` views): the guest's SLAAC address in libslirp's default prefix, neighbour
//! discovery, ICMPv6 echo, UDP, fragments (RFC 8200 fragment headers by hand: etherparse 0.16
//! puts the offset and M bit at the wrong bits), and the reassembly of what comes back.
//!
//! Network rule: every address is inside the slirp network's fec0::/64 or link-local
//! multicast; the only host endpoint tests use is ::1.

use super::{Bhyve, ConfigBuilder, GUEST_MAC};
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

/// The guest's SLAAC address from `GUEST_MAC` in libslirp's default prefix fec0::/64.
pub const GUEST6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0x5054, 0x00ff, 0xfe12, 0x3456);
/// libslirp's default host (gateway) address.
pub const HOST6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2);
/// libslirp's default DNS address (never queried).
pub const DNS6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 3);
/// All-nodes and all-routers link-local multicast.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

pub const NEXT_UDP: u8 = 17;
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_FRAGMENT: u8 = 44;
pub const ICMPV6_TOO_BIG: u8 = 2;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
pub const NDP_RS: u8 = 133;
pub const NDP_RA: u8 = 134;
pub const NDP_NS: u8 = 135;
pub const NDP_NA: u8 = 136;

/// The config with the `ipv6` key on.
pub fn ipv6_config(open: bool) -> ConfigBuilder {
    let c = ConfigBuilder::bhyve().string("ipv6", "on");
    if open {
        c.open()
    } else {
        c
    }
}

/// RFC 8200 8.1 pseudo-header plus `upper`, folded and complemented.
pub fn checksum6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, upper: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for c in bytes.chunks(2) {
            sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(upper.len() as u32).to_be_bytes());
    add(&[0, 0, 0, next]);
    add(upper);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv6 frame with `payload` after the fixed header (hop limit 64 unless given).
pub fn ipv6_frame(
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(payload);
    f
}

/// An ICMPv6 message (`body` after type, code and checksum), checksum right.
pub fn icmpv6_frame(
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    kind: u8,
    code: u8,
    body: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0];
    icmp.extend_from_slice(body);
    let c = checksum6(src, dst, NEXT_ICMPV6, &icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6_frame(dst_mac, src, dst, NEXT_ICMPV6, hop_limit, &icmp)
}

/// An echo request from the guest's address.
pub fn echo6_frame(dst_mac: [u8; 6], dst: Ipv6Addr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend_from_slice(data);
    icmpv6_frame(dst_mac, GUEST6, dst, 64, ICMPV6_ECHO_REQUEST, 0, &body)
}

/// A UDP datagram from the guest's address, checksum right.
pub fn udp6_frame(dst_mac: [u8; 6], dst: Ipv6Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut udp = sport.to_be_bytes().to_vec();
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    let c = match checksum6(GUEST6, dst, NEXT_UDP, &udp) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    ipv6_frame(dst_mac, GUEST6, dst, NEXT_UDP, 64, &udp)
}

/// The solicited-node multicast address of `target` and its Ethernet address.
fn solicited_node(target: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let t = target.octets();
    let addr = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    (addr, [0x33, 0x33, 0xff, t[13], t[14], t[15]])
}

/// A neighbour solicitation for `target` from `src` (with a source link-layer option), to the
/// solicited-node multicast address; hop limit 255 as RFC 4861 requires.
pub fn neighbour_solicitation(src: Ipv6Addr, src_mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    let (dst, dst_mac) = solicited_node(target);
    let mut body = vec![0; 4];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&src_mac);
    let mut f = icmpv6_frame(dst_mac, src, dst, 255, NDP_NS, 0, &body);
    f[6..12].copy_from_slice(&src_mac);
    f
}

/// A router solicitation from the guest's link-local address to all routers.
pub fn router_solicitation() -> Vec<u8> {
    let mut body = vec![0; 4];
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&GUEST_MAC);
    icmpv6_frame(
        [0x33, 0x33, 0, 0, 0, 2],
        guest_link_local(),
        ALL_ROUTERS,
        255,
        NDP_RS,
        0,
        &body,
    )
}

/// fe80::5054:ff:fe12:3456.
pub fn guest_link_local() -> Ipv6Addr {
    let g = GUEST6.octets();
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..].copy_from_slice(&g[8..]);
    Ipv6Addr::from(a)
}

/// A fragment received: offset, M, data, the fragment header's next header.
struct Piece {
    offset: usize,
    more: bool,
    data: Vec<u8>,
    next: u8,
}

/// An IPv6 packet from the helper: fixed-header fields and what follows it.
#[derive(Debug, Clone)]
pub struct Packet6 {
    pub src_mac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next: u8,
    pub payload: Vec<u8>,
}

pub fn parse_ipv6(f: &[u8]) -> Option<Packet6> {
    if f.len() < 54 || f[12..14] != [0x86, 0xdd] || f[14] >> 4 != 6 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([f[18], f[19]]));
    let payload = f.get(54..54 + len)?.to_vec();
    Some(Packet6 {
        src_mac: f[6..12].try_into().ok()?,
        src: Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).ok()?),
        dst: Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).ok()?),
        next: f[20],
        payload,
    })
}

/// The frame as IPv6 fragments of at most `size` bytes of data each (a multiple of 8), in
/// order, identification `id`: each a fixed header with next header 44, then a fragment
/// header carrying the original next header. `whole` has no extension headers.
pub fn fragment6(whole: &[u8], size: usize, id: u32) -> Vec<Vec<u8>> {
    let (head, data) = whole.split_at(54);
    let next = head[20];
    let mut frames = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = (at + size).min(data.len());
        let more = end < data.len();
        frames.push(fragment6_frame(head, next, id, at, more, &data[at..end]));
        at = end;
    }
    frames
}

/// One fragment: `head` (Ethernet and fixed IPv6 header of the whole packet), the fragment
/// header (`next`, `offset` in bytes, M, `id`), `data`.
pub fn fragment6_frame(
    head: &[u8],
    next: u8,
    id: u32,
    offset: usize,
    more: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut f = head[..54].to_vec();
    f[18..20].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    f[20] = NEXT_FRAGMENT;
    f.extend_from_slice(&[next, 0]);
    f.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(data);
    f
}

impl Bhyve {
    /// Neighbour solicitation for `target` from the guest's address (retried every second);
    /// the MAC its advertisement gives (target link-layer option, else its source). Also
    /// teaches libslirp the guest's MAC for its replies.
    pub fn resolve6(&self, target: Ipv6Addr, timeout: Duration) -> Option<[u8; 6]> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.send_frame(&neighbour_solicitation(GUEST6, GUEST_MAC, target))
                .ok()?;
            let found = self.recv_until(Duration::from_secs(1), |f| {
                let p = parse_ipv6(f)?;
                if p.next != NEXT_ICMPV6 || p.payload.first() != Some(&NDP_NA) {
                    return None;
                }
                if p.payload.get(8..24)? != target.octets() {
                    return None;
                }
                match p.payload.get(24..32) {
                    Some([2, 1, mac @ ..]) => <[u8; 6]>::try_from(mac).ok(),
                    _ => Some(p.src_mac),
                }
            });
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Receives IPv6 packets until `accept` takes one (answering neighbour solicitations for
    /// the guest's address on the way, as its stack would); reassembles fragmented ones first.
    pub fn recv6_until<T>(
        &self,
        timeout: Duration,
        mut accept: impl FnMut(&Packet6) -> Option<T>,
    ) -> Option<T> {
        let mut trains: HashMap<u32, Vec<Piece>> = HashMap::new();
        self.recv_until(timeout, |f| {
            let p = parse_ipv6(f)?;
            if p.next == NEXT_ICMPV6
                && p.payload.first() == Some(&NDP_NS)
                && p.payload.get(8..24) == Some(&GUEST6.octets()[..])
            {
                let mut body = vec![0x60, 0, 0, 0];
                body.extend_from_slice(&GUEST6.octets());
                body.extend_from_slice(&[2, 1]);
                body.extend_from_slice(&GUEST_MAC);
                let na = icmpv6_frame(p.src_mac, GUEST6, p.src, 255, NDP_NA, 0, &body);
                let _ = self.send_frame(&na);
                return None;
            }
            if p.next != NEXT_FRAGMENT {
                return accept(&p);
            }
            let fh = p.payload.get(..8)?;
            let id = u32::from_be_bytes(fh[4..8].try_into().ok()?);
            let offset = usize::from(u16::from_be_bytes([fh[2], fh[3]]) & 0xfff8);
            let train = trains.entry(id).or_default();
            train.push(Piece {
                offset,
                more: fh[3] & 1 != 0,
                data: p.payload[8..].to_vec(),
                next: fh[0],
            });
            train.sort_by_key(|t| t.offset);
            let mut whole = Vec::new();
            for piece in train.iter() {
                if piece.offset != whole.len() {
                    return None;
                }
                whole.extend_from_slice(&piece.data);
            }
            if train.last()?.more {
                return None;
            }
            let next = train[0].next;
            accept(&Packet6 {
                next,
                payload: whole,
                ..p
            })
        })
    }

    /// Echo request to `dst` with `data` (fragmented into `size`-byte pieces when given);
    /// true when the matching reply came back with the same data. Retried every second.
    pub fn ping6(
        &self,
        gw: [u8; 6],
        dst: Ipv6Addr,
        data: &[u8],
        fragment_size: Option<usize>,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seq = 0u16;
        while Instant::now() < deadline {
            seq += 1;
            let req = echo6_frame(gw, dst, 0x6006, seq, data);
            let frames = match fragment_size {
                Some(size) => fragment6(&req, size, 0x6000_0000 + u32::from(seq)),
                None => vec![req],
            };
            for f in &frames {
                if self.send_frame(f).is_err() {
                    return false;
                }
            }
            let got = self.recv6_until(Duration::from_secs(1), |p| {
                let ok = p.src == dst
                    && p.next == NEXT_ICMPV6
                    && p.payload.first() == Some(&ICMPV6_ECHO_REPLY)
                    && p.payload.get(4..8) == Some(&[0x60, 0x06, (seq >> 8) as u8, seq as u8][..]);
                ok.then(|| p.payload[8..] == *data)
            });
            if let Some(ok) = got {
                return ok;
            }
        }
        false
    }
}
