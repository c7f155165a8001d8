//! Merging consecutive guest TCP segments before libslirp (what GRO/LRO does in a NIC driver).
//!
//! Owns: the guest frames between the reassembler and `slirp_input`, and the one merged
//! frame held while a batch is handed on. Must never: reorder frames, hold a frame past the end
//! of the drain that read it, turn a segment with a bad checksum into a packet with a good one,
//! allocate after construction, or panic on any input.
//!
//! Why it exists: libslirp 4.7.0 answers every guest data segment at once (`tcp_input`'s header
//! prediction sets `TF_ACKNOW` and calls `tcp_output`) and writes each one to the host socket
//! with its own `send()` (`sbappend` → `slirp_send`). At MTU 1500 a bulk upload therefore costs
//! one `tcp_input`, one `send()` and one ACK frame back through the frontend and the guest per
//! 1460 bytes; at MTU 65520 the same path runs four times faster. libslirp checks no MRU or MSS
//! on what it receives (it trims to its receive window only, and `slirp_input` grows the mbuf
//! with `m_inc`), so one 64 KiB IPv4 packet made of segments read together costs it about what
//! one segment did.
//!
//! Rules (a frame that breaks one is handed on as it is, after whatever is held):
//! - A **candidate**: Ethernet type IPv4 untagged, version 4, IHL 5 (no options), a valid header
//!   checksum, not a fragment, total length within the frame (the rest is Ethernet padding),
//!   TCP with a sane data offset and no reserved bits, payload > 0, flags exactly ACK or
//!   ACK|PSH.
//! - It **extends** the held frame when: same Ethernet header; same addresses, TOS, TTL and
//!   DF; the same TCP header except sequence number, PSH and checksum (ports, ack, window,
//!   urgent pointer, option bytes); its sequence number is the next byte; the held frame has no
//!   PSH (PSH ends a merge, its segment may be the last one merged) and an even payload length
//!   (one's-complement sums add only at even offsets); the result fits 65535 bytes of IPv4.
//! - **Checksums**: the TCP checksum of a merge is computed from the segments' own checksum
//!   fields (a segment's data sum is its checksum minus its pseudo-header and header, in
//!   one's-complement arithmetic), never by summing the payload again: a segment that arrived
//!   corrupt makes a merge libslirp drops (and the guest retransmits), not a valid packet. The
//!   IP header is the first segment's (its identification too) with the new total length and
//!   checksum; the TCP header is the first segment's with the last one's PSH.
//! - A candidate is **held** only when it may be followed and another segment of its size would
//!   still fit behind it; otherwise it goes on at once, uncopied (at MTU 65520 nothing merges).
//! - A frame held alone is handed on byte for byte as it arrived (padding included).
//! - The event loop flushes at the end of every drain of the frontend socket, so a lone frame
//!   waits for nothing but the reads of its own batch, and nothing else reaches libslirp in
//!   between (every frame that does not extend flushes first).

use crate::stats::CoalesceCounters;
use crate::wire::checksum::{ones_add, ones_sub};
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Header, Ipv4HeaderMut};
use crate::wire::ipv6::{self, Ipv6Header, Ipv6HeaderMut};
use crate::wire::protocol;
use crate::wire::tcp::{self, flags, TcpHeader, TcpHeaderMut};

/// The held frame's buffer: an Ethernet header and the largest datagram (an IPv6 merge is
/// capped below it, at the MTU).
pub(crate) const BUFFER_BYTES: usize = ethernet::HEADER_LEN + ipv4::MAX_DATAGRAM;

/// The IP layer of a frame that may be merged.
#[derive(Debug, Clone, Copy)]
enum Ip<'a> {
    V4(Ipv4Header<'a>),
    V6(Ipv6Header<'a>),
}

impl<'a> Ip<'a> {
    #[inline]
    fn header_len(&self) -> usize {
        match self {
            Ip::V4(_) => ipv4::HEADER_LEN,
            Ip::V6(_) => ipv6::HEADER_LEN,
        }
    }

    /// Header and payload (the frame may be longer: Ethernet padding).
    #[inline]
    fn packet_len(&self) -> usize {
        match self {
            Ip::V4(ip) => ip.total_len(),
            Ip::V6(ip) => ipv6::HEADER_LEN + ip.payload_len(),
        }
    }

    /// The TCP segment.
    #[inline]
    fn payload(&self) -> &'a [u8] {
        match self {
            Ip::V4(ip) => ip.payload(),
            Ip::V6(ip) => ip.payload(),
        }
    }

    /// The pseudo-header sum for a TCP segment of `tcp_len` bytes (below 65536: both
    /// families' length fields are 16 bits).
    #[inline]
    fn pseudo_header_sum(&self, tcp_len: usize) -> u16 {
        match self {
            Ip::V4(ip) => ip.pseudo_header_sum(tcp_len as u16),
            Ip::V6(ip) => {
                ipv6::pseudo_header_sum(ip.src(), ip.dst(), protocol::TCP, tcp_len as u32)
            }
        }
    }
}

/// A frame's headers, as far as merging needs them.
#[derive(Debug, Clone, Copy)]
struct Headers<'a> {
    eth: EthernetFrame<'a>,
    ip: Ip<'a>,
    tcp: TcpHeader<'a>,
}

impl<'a> Headers<'a> {
    /// Untagged IPv4 without options, not a fragment, or untagged IPv6 without extension
    /// headers, carrying a whole TCP header (lengths only: no checksum is looked at).
    #[inline]
    fn parse(frame: &'a [u8]) -> Option<Headers<'a>> {
        let eth = EthernetFrame::parse(frame).ok()?;
        let ip = match eth.ethertype() {
            ethernet::ETHERTYPE_IPV4 => {
                let ip = Ipv4Header::parse(eth.payload()).ok()?;
                if ip.header_len() != ipv4::HEADER_LEN
                    || ip.is_fragment()
                    || ip.protocol() != protocol::TCP
                {
                    return None;
                }
                Ip::V4(ip)
            }
            ethernet::ETHERTYPE_IPV6 => {
                let ip = Ipv6Header::parse(eth.payload()).ok()?;
                if ip.next_header() != protocol::TCP {
                    return None;
                }
                Ip::V6(ip)
            }
            _ => return None,
        };
        let tcp = TcpHeader::parse(ip.payload()).ok()?;
        Some(Headers { eth, ip, tcp })
    }
}

/// A candidate frame (the candidate rules of the module comment).
#[derive(Debug, Clone, Copy)]
struct Segment<'a> {
    headers: Headers<'a>,
    /// The one's-complement sum of the payload, as the sender computed it.
    data_sum: u16,
}

impl<'a> Segment<'a> {
    #[inline]
    fn parse(frame: &'a [u8]) -> Option<Segment<'a>> {
        let headers = Headers::parse(frame)?;
        let Headers { ip, tcp, .. } = headers;
        let flags = tcp.flags();
        // The header checksum last: pure ACKs (most non-candidates) are refused before it.
        // IPv6 has none.
        if tcp.reserved_bits() != 0
            || tcp.payload().is_empty()
            || (flags != flags::ACK && flags != flags::ACK | flags::PSH)
            || matches!(ip, Ip::V4(ip) if !ip.checksum_valid())
        {
            return None;
        }
        // The sender's checksum covers pseudo-header + header + data: take the first two out.
        let covered = !tcp.checksum();
        let pseudo = ip.pseudo_header_sum(ip.payload().len());
        let data_sum = ones_sub(ones_sub(covered, pseudo), tcp.header_sum());
        Some(Segment { headers, data_sum })
    }

    /// IP header and payload (the frame may be longer: Ethernet padding).
    #[inline]
    fn ip_len(&self) -> usize {
        self.headers.ip.packet_len()
    }

    #[inline]
    fn payload(&self) -> &'a [u8] {
        self.headers.tcp.payload()
    }

    /// Whether a merge may go on after this segment.
    #[inline]
    fn may_be_followed(&self) -> bool {
        self.headers.tcp.flags() & flags::PSH == 0 && self.payload().len() % 2 == 0
    }
}

/// What a segment must share with the merge's first segment to extend it, read from the
/// first segment's views once, when it is held: an extension then parses nothing but itself
/// (the held frame was parsed again per extension before).
#[derive(Debug, Clone, Copy)]
struct FirstSegment {
    /// Its ethertype tells the family: segments of the other one never match.
    eth_header: [u8; ethernet::HEADER_LEN],
    // IPv4: version and IHL are 4 and 5 in every candidate; the protocol is TCP.
    // IPv6: version 6, next header TCP.
    /// IPv4 TOS, IPv6 traffic class.
    tos: u8,
    /// IPv4 flags and offset (DF), IPv6 flow label.
    flags_or_flow: u32,
    /// IPv4 TTL, IPv6 hop limit.
    ttl: u8,
    /// IPv4 addresses fill the first 4 bytes.
    src: [u8; 16],
    dst: [u8; 16],
    // TCP: the data offset is `Held::tcp_hdr_len`; reserved bits are 0 in every candidate.
    src_port: u16,
    dst_port: u16,
    ack: u32,
    window: u16,
    urgent_pointer: u16,
    /// The first `Held::tcp_hdr_len - tcp::HEADER_LEN` bytes are the option bytes.
    options: [u8; tcp::MAX_OPTIONS_LEN],
}

impl FirstSegment {
    const NONE: FirstSegment = FirstSegment {
        eth_header: [0; ethernet::HEADER_LEN],
        tos: 0,
        flags_or_flow: 0,
        ttl: 0,
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        ack: 0,
        window: 0,
        urgent_pointer: 0,
        options: [0; tcp::MAX_OPTIONS_LEN],
    };

    fn of(headers: &Headers<'_>) -> FirstSegment {
        let Headers { eth, ip, tcp } = *headers;
        let mut options = [0; tcp::MAX_OPTIONS_LEN];
        options[..tcp.options().len()].copy_from_slice(tcp.options());
        let mut eth_header = [0; ethernet::HEADER_LEN];
        eth_header.copy_from_slice(eth.header());
        let (tos, flags_or_flow, ttl, src, dst) = ip_fields(&ip);
        FirstSegment {
            eth_header,
            tos,
            flags_or_flow,
            ttl,
            src,
            dst,
            src_port: tcp.src_port(),
            dst_port: tcp.dst_port(),
            ack: tcp.ack(),
            window: tcp.window(),
            urgent_pointer: tcp.urgent_pointer(),
            options,
        }
    }

    /// Whether `ip` agrees with the IP fields, compared in place (per segment: no copies).
    /// The Ethernet header's equality already says the families are the same.
    #[inline]
    fn ip_matches(&self, ip: &Ip<'_>) -> bool {
        match ip {
            Ip::V4(ip) => {
                ip.tos() == self.tos
                    && u32::from(ip.flags_and_offset()) == self.flags_or_flow
                    && ip.ttl() == self.ttl
                    && ip.src() == self.src[..4]
                    && ip.dst() == self.dst[..4]
            }
            Ip::V6(ip) => {
                ip.traffic_class() == self.tos
                    && ip.flow_label() == self.flags_or_flow
                    && ip.hop_limit() == self.ttl
                    && ip.src() == self.src
                    && ip.dst() == self.dst
            }
        }
    }

    /// Whether `headers` agree with these fields (their TCP header length already does).
    #[inline]
    fn matches(&self, headers: &Headers<'_>) -> bool {
        let Headers { eth, ip, tcp } = *headers;
        let options = tcp.options();
        eth.header() == self.eth_header
            && self.ip_matches(&ip)
            && tcp.src_port() == self.src_port
            && tcp.dst_port() == self.dst_port
            && tcp.ack() == self.ack
            && tcp.window() == self.window
            && tcp.urgent_pointer() == self.urgent_pointer
            && self.options.get(..options.len()) == Some(options)
    }
}

/// What a merge must keep equal of the IP header (read once, for the first segment): TOS or
/// traffic class; flags and offset or flow label; TTL or hop limit; the addresses.
#[inline]
fn ip_fields(ip: &Ip<'_>) -> (u8, u32, u8, [u8; 16], [u8; 16]) {
    match ip {
        Ip::V4(ip) => {
            let mut src = [0; 16];
            let mut dst = [0; 16];
            src[..4].copy_from_slice(&ip.src());
            dst[..4].copy_from_slice(&ip.dst());
            let flags = u32::from(ip.flags_and_offset());
            (ip.tos(), flags, ip.ttl(), src, dst)
        }
        Ip::V6(ip) => (
            ip.traffic_class(),
            ip.flow_label(),
            ip.hop_limit(),
            ip.src(),
            ip.dst(),
        ),
    }
}

/// The frame held in the buffer.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Length of the first frame as received, padding included: what a lone frame hands on.
    first_frame_len: usize,
    /// IP header and payload of the merge so far.
    ip_len: usize,
    /// 20 (IPv4) or 40 (IPv6).
    ip_hdr_len: usize,
    /// The largest merge: 65535 bytes of IPv4, or the MTU for IPv6.
    max_len: usize,
    tcp_hdr_len: usize,
    /// Sequence number of the byte after the held payload.
    next_seq: u32,
    /// Flags of the last segment merged.
    last_flags: u8,
    segments: u64,
    /// One's-complement sum of the merged payload's data sums.
    data_sum: u16,
}

impl Held {
    fn payload_len(&self) -> usize {
        self.ip_len - self.ip_hdr_len - self.tcp_hdr_len
    }

    /// Whether `segment` continues this merge (the extension rules).
    #[inline]
    fn extended_by(&self, first: &FirstSegment, segment: &Segment<'_>) -> bool {
        let tcp = segment.headers.tcp;
        self.last_flags & flags::PSH == 0
            && self.payload_len() % 2 == 0
            && tcp.seq() == self.next_seq
            && tcp.header_len() == self.tcp_hdr_len
            && self.ip_len + segment.payload().len() <= self.max_len
            && first.matches(&segment.headers)
    }

    /// Appends `segment`'s payload behind the merge in `buf`.
    #[inline]
    fn append(&mut self, buf: &mut [u8], segment: &Segment<'_>) {
        let payload = segment.payload();
        let at = ethernet::HEADER_LEN + self.ip_len;
        buf[at..at + payload.len()].copy_from_slice(payload);
        self.ip_len += payload.len();
        self.next_seq = self.next_seq.wrapping_add(payload.len() as u32);
        self.last_flags = segment.headers.tcp.flags();
        self.segments += 1;
        // The held payload's length is even, so this segment's words line up with the sum's.
        self.data_sum = ones_add(self.data_sum, segment.data_sum);
    }
}

/// Merges consecutive in-order TCP segments of one flow; see the module comment.
pub struct Coalescer {
    enabled: bool,
    /// [`BUFFER_BYTES`] when enabled (allocated once), empty otherwise.
    buf: Box<[u8]>,
    held: Option<Held>,
    /// The held merge's first segment (stale when nothing is held). Outside `Held` so that
    /// the per-frame `Option<Held>` moves stay small.
    first: FirstSegment,
    /// The largest IPv6 merge (header and payload): libslirp's `ip6_input` (4.7 to current
    /// master) answers an IPv6 packet longer than its `if_mtu` with ICMPv6 Packet Too Big
    /// and drops it, so a merge past the MTU would lose data. 0 (the default): no IPv6 merges.
    ipv6_max_len: usize,
    pub counters: CoalesceCounters,
}

impl Coalescer {
    /// Merging on or off; when on, the buffer is allocated here, once.
    pub fn new(enabled: bool) -> Coalescer {
        Coalescer {
            enabled,
            buf: if enabled {
                vec![0; BUFFER_BYTES].into_boxed_slice()
            } else {
                Box::default()
            },
            held: None,
            first: FirstSegment::NONE,
            ipv6_max_len: 0,
            counters: CoalesceCounters::default(),
        }
    }

    /// IPv6 segments merge up to `mtu` bytes of IP header and payload: the MTU libslirp was
    /// given (`if_mtu`), which it enforces on IPv6 input.
    pub fn with_ipv6_mtu(mut self, mtu: usize) -> Coalescer {
        self.ipv6_max_len = mtu.min(BUFFER_BYTES - ethernet::HEADER_LEN);
        self
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Takes one guest frame; hands frames on to `deliver` (in order) when they can no longer
    /// be merged. [`Coalescer::flush`] hands on what is still held.
    pub fn push(&mut self, frame: &[u8], mut deliver: impl FnMut(&[u8])) {
        if !self.enabled {
            deliver(frame);
            return;
        }
        let segment = Segment::parse(frame);
        if let (Some(held), Some(segment)) = (self.held.as_mut(), segment.as_ref()) {
            if held.extended_by(&self.first, segment) {
                held.append(&mut self.buf, segment);
                if !segment.may_be_followed() {
                    self.flush(deliver);
                }
                return;
            }
        }
        self.flush(&mut deliver);
        match segment {
            // A segment that cannot be followed goes on at once, without a copy; so does one
            // too big for another of its size to fit behind it (MTU 65520: nothing to merge,
            // and a 64 KiB copy saved per frame).
            Some(segment)
                if segment.may_be_followed()
                    && segment.ip_len() + segment.payload().len() <= self.max_len(&segment)
                    && frame.len() <= self.buf.len() =>
            {
                self.buf[..frame.len()].copy_from_slice(frame);
                let tcp = segment.headers.tcp;
                self.held = Some(Held {
                    first_frame_len: frame.len(),
                    ip_len: segment.ip_len(),
                    ip_hdr_len: segment.headers.ip.header_len(),
                    max_len: self.max_len(&segment),
                    tcp_hdr_len: tcp.header_len(),
                    next_seq: tcp.seq().wrapping_add(segment.payload().len() as u32),
                    last_flags: tcp.flags(),
                    segments: 1,
                    data_sum: segment.data_sum,
                });
                self.first = FirstSegment::of(&segment.headers);
            }
            _ => deliver(frame),
        }
    }

    /// The largest merge `segment` may start.
    #[inline]
    fn max_len(&self, segment: &Segment<'_>) -> usize {
        match segment.headers.ip {
            Ip::V4(_) => ipv4::MAX_DATAGRAM,
            Ip::V6(_) => self.ipv6_max_len,
        }
    }

    /// Hands on the held frame, if any: as it arrived when alone, else as one merged packet.
    pub fn flush(&mut self, mut deliver: impl FnMut(&[u8])) {
        let Some(held) = self.held.take() else {
            return;
        };
        if held.segments == 1 {
            deliver(&self.buf[..held.first_frame_len]);
            return;
        }
        if held.ip_hdr_len == ipv6::HEADER_LEN {
            self.flush_ipv6(held, deliver);
            return;
        }
        let ip_len = held.ip_len;
        let frame = &mut self.buf[..ethernet::HEADER_LEN + ip_len];
        let (_, datagram) = frame.split_at_mut(ethernet::HEADER_LEN);
        let (ip, segment) = datagram.split_at_mut(ipv4::HEADER_LEN);
        let (Ok(mut ip), Ok(mut tcp)) = (Ipv4HeaderMut::new(ip), TcpHeaderMut::new(segment)) else {
            // Not reached: the held frame is a candidate (IHL 5, a whole TCP header). Hand
            // on nothing rather than a packet with stale lengths.
            debug_assert!(false, "held frame lost its headers");
            return;
        };
        // ip_len ≤ MAX_DATAGRAM: checked on every extension.
        ip.set_total_len(ip_len as u16);
        ip.fill_checksum();
        tcp.set_flags(held.last_flags);
        let tcp_len = (ip_len - ipv4::HEADER_LEN) as u16;
        let pseudo = ipv4::pseudo_header_sum(ip.src(), ip.dst(), protocol::TCP, tcp_len);
        let sum = ones_add(ones_add(pseudo, tcp.header_sum()), held.data_sum);
        tcp.set_checksum(!sum);
        self.counters.frames += 1;
        self.counters.segments += held.segments;
        deliver(&self.buf[..ethernet::HEADER_LEN + ip_len]);
    }

    /// `flush` of an IPv6 merge: the payload length and the TCP checksum (IPv6 has no header
    /// checksum).
    fn flush_ipv6(&mut self, held: Held, mut deliver: impl FnMut(&[u8])) {
        let ip_len = held.ip_len;
        let frame = &mut self.buf[..ethernet::HEADER_LEN + ip_len];
        let (_, packet) = frame.split_at_mut(ethernet::HEADER_LEN);
        let (ip, segment) = packet.split_at_mut(ipv6::HEADER_LEN);
        let (Ok(mut ip), Ok(mut tcp)) = (Ipv6HeaderMut::new(ip), TcpHeaderMut::new(segment)) else {
            debug_assert!(false, "held frame lost its headers");
            return;
        };
        // ip_len ≤ the MTU ≤ 65535: checked on every extension.
        let tcp_len = ip_len - ipv6::HEADER_LEN;
        ip.set_payload_len(tcp_len as u16);
        tcp.set_flags(held.last_flags);
        let (src, dst) = (self.first.src, self.first.dst);
        let pseudo = ipv6::pseudo_header_sum(src, dst, protocol::TCP, tcp_len as u32);
        let sum = ones_add(ones_add(pseudo, tcp.header_sum()), held.data_sum);
        tcp.set_checksum(!sum);
        self.counters.frames += 1;
        self.counters.segments += held.segments;
        deliver(&self.buf[..ethernet::HEADER_LEN + ip_len]);
    }

    /// Whether a frame is held (the event loop flushes before the batch ends).
    #[cfg(test)]
    fn is_holding(&self) -> bool {
        self.held.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        EtherType, Ethernet2Header, IpFragOffset, IpNumber, Ipv4Dscp, Ipv4Header, NetSlice,
        SlicedPacket, TcpHeader, TransportSlice,
    };

    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const GW_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

    /// One guest segment, described field by field.
    #[derive(Clone)]
    struct Spec {
        dst_mac: [u8; 6],
        src: [u8; 4],
        dst: [u8; 4],
        tos: u8,
        ttl: u8,
        id: u16,
        df: bool,
        mf: bool,
        frag_offset: u16,
        ip_options: Vec<u8>,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        window: u16,
        psh: bool,
        syn: bool,
        fin: bool,
        rst: bool,
        urg: bool,
        ece: bool,
        cwr: bool,
        no_ack: bool,
        options: Vec<u8>,
        payload: Vec<u8>,
        /// Ethernet padding after the datagram.
        padding: usize,
    }

    /// A bulk segment 10.0.2.15:40000 → 10.0.2.2:5201 of `len` bytes of a pattern.
    fn spec(seq: u32, len: usize) -> Spec {
        Spec {
            dst_mac: GW_MAC,
            src: [10, 0, 2, 15],
            dst: [10, 0, 2, 2],
            tos: 0,
            ttl: 64,
            id: seq as u16,
            df: true,
            mf: false,
            frag_offset: 0,
            ip_options: Vec::new(),
            sport: 40000,
            dport: 5201,
            seq,
            ack: 77,
            window: 502,
            psh: false,
            syn: false,
            fin: false,
            rst: false,
            urg: false,
            ece: false,
            cwr: false,
            no_ack: false,
            options: Vec::new(),
            payload: (0..len).map(|i| (seq as usize + i * 7) as u8).collect(),
            padding: 0,
        }
    }

    /// The frame, with both checksums right (computed by etherparse).
    fn frame(s: &Spec) -> Vec<u8> {
        let mut tcp = TcpHeader::new(s.sport, s.dport, s.seq, s.window);
        tcp.acknowledgment_number = s.ack;
        tcp.ack = !s.no_ack;
        (tcp.psh, tcp.syn, tcp.fin, tcp.rst) = (s.psh, s.syn, s.fin, s.rst);
        (tcp.urg, tcp.ece, tcp.cwr) = (s.urg, s.ece, s.cwr);
        tcp.set_options_raw(&s.options).unwrap();
        let tcp_len = (tcp.header_len() + s.payload.len()) as u16;
        let mut ip = Ipv4Header::new(tcp_len, s.ttl, IpNumber::TCP, s.src, s.dst).unwrap();
        ip.dscp = Ipv4Dscp::try_new(s.tos >> 2).unwrap();
        ip.identification = s.id;
        ip.dont_fragment = s.df;
        ip.more_fragments = s.mf;
        ip.fragment_offset = IpFragOffset::try_new(s.frag_offset).unwrap();
        ip.options = s.ip_options.as_slice().try_into().unwrap();
        ip.total_len = (ip.header_len() as u16) + tcp_len;
        ip.header_checksum = ip.calc_header_checksum();
        tcp.checksum = tcp.calc_checksum_ipv4(&ip, &s.payload).unwrap();
        let eth = Ethernet2Header {
            source: GUEST_MAC,
            destination: s.dst_mac,
            ether_type: EtherType::IPV4,
        };
        let mut f = Vec::new();
        eth.write(&mut f).unwrap();
        ip.write(&mut f).unwrap();
        tcp.write(&mut f).unwrap();
        f.extend_from_slice(&s.payload);
        f.resize(f.len() + s.padding, 0);
        f
    }

    /// Independent of the module's arithmetic: the sum of `bytes` (odd length padded), folded.
    fn ones_sum(bytes: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for (i, b) in bytes.iter().enumerate() {
            sum += u64::from(*b) << if i % 2 == 0 { 8 } else { 0 };
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// Whether the IPv4 header and the TCP checksum of `frame` verify, summed over the whole
    /// packet as a receiver does.
    fn checksums_verify(frame: &[u8]) -> (bool, bool) {
        let ip = &frame[14..];
        let hl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let ip_ok = ones_sum(&ip[..hl]) == 0xffff;
        let tcp = &ip[hl..total];
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        let sum = u32::from(ones_sum(&pseudo)) + u32::from(ones_sum(tcp));
        let tcp_ok = (sum & 0xffff) + (sum >> 16) == 0xffff;
        (ip_ok, tcp_ok)
    }

    /// Every frame through a coalescer, then a flush: what libslirp would be given.
    fn run_through(c: &mut Coalescer, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for f in frames {
            c.push(f, |g: &[u8]| out.push(g.to_vec()));
        }
        c.flush(|g: &[u8]| out.push(g.to_vec()));
        out
    }

    fn through(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        run_through(&mut Coalescer::new(true), frames)
    }

    /// Consecutive segments of `len` bytes from sequence number `seq`.
    fn train(seq: u32, lens: &[usize]) -> Vec<Spec> {
        let mut next = seq;
        lens.iter()
            .map(|&len| {
                let s = spec(next, len);
                next = next.wrapping_add(len as u32);
                s
            })
            .collect()
    }

    /// Checks that `merged` is the merge of `parts`: valid checksums, the first's headers, the
    /// concatenated payload, the last one's PSH.
    fn assert_merge_of(merged: &[u8], parts: &[Spec]) {
        assert_eq!(
            checksums_verify(merged),
            (true, true),
            "checksums of the merge"
        );
        let p = SlicedPacket::from_ethernet(merged).expect("the merge parses");
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (&p.net, &p.transport)
        else {
            panic!("not IPv4/TCP: {p:?}");
        };
        let payload: Vec<u8> = parts.iter().flat_map(|s| s.payload.clone()).collect();
        let h = ip.header();
        let headers = 40 + parts[0].options.len();
        assert_eq!(usize::from(h.total_len()), headers + payload.len());
        assert_eq!(
            merged.len(),
            14 + headers + payload.len(),
            "no padding after a merge"
        );
        assert_eq!(h.identification(), parts[0].id);
        assert_eq!(h.ttl(), parts[0].ttl);
        assert_eq!(h.dont_fragment(), parts[0].df);
        assert_eq!(tcp.sequence_number(), parts[0].seq);
        assert_eq!(tcp.acknowledgment_number(), parts[0].ack);
        assert_eq!(tcp.window_size(), parts[0].window);
        assert!(tcp.ack());
        assert_eq!(tcp.psh(), parts.last().unwrap().psh);
        assert_eq!(tcp.payload(), payload.as_slice());
        // etherparse's own computation agrees (up to one's complement's two zeros).
        let expected = tcp
            .to_header()
            .calc_checksum_ipv4_raw(h.source(), h.destination(), tcp.payload())
            .unwrap();
        let got = tcp.checksum();
        assert!(
            got == expected || (got | expected == 0xffff && got & expected == 0),
            "{got:#x} vs {expected:#x}"
        );
    }

    #[test]
    fn merges_two_to_forty_four_segments_into_one_valid_packet() {
        for n in [2, 3, 10, 44] {
            let parts = train(1_000_000, &vec![1460; n]);
            let frames: Vec<_> = parts.iter().map(frame).collect();
            let mut c = Coalescer::new(true);
            let out = run_through(&mut c, &frames);
            assert_eq!(out.len(), 1, "{n} segments");
            assert_merge_of(&out[0], &parts);
            assert_eq!(c.counters.segments, n as u64);
            assert_eq!(c.counters.frames, 1);
            assert!(!c.is_holding());
        }
    }

    #[test]
    fn merges_across_sequence_wraparound_and_varied_lengths() {
        let parts = train(u32::MAX - 1000, &[1000, 1460, 536, 2, 1447]);
        let out = through(&parts.iter().map(frame).collect::<Vec<_>>());
        assert_eq!(out.len(), 1);
        assert_merge_of(&out[0], &parts);
    }

    #[test]
    fn psh_ends_a_merge_and_is_kept() {
        let mut parts = train(1, &[1460, 1460, 1460, 1460]);
        parts[1].psh = true;
        let frames: Vec<_> = parts.iter().map(frame).collect();
        let out = through(&frames);
        assert_eq!(out.len(), 2);
        assert_merge_of(&out[0], &parts[..2]);
        assert_merge_of(&out[1], &parts[2..]);
        // A PSH on the first segment: nothing joins it.
        let mut parts = train(1, &[1460, 1460]);
        parts[0].psh = true;
        let frames: Vec<_> = parts.iter().map(frame).collect();
        assert_eq!(through(&frames), frames);
    }

    #[test]
    fn a_lone_frame_passes_unchanged() {
        let f = frame(&spec(5, 1460));
        let mut c = Coalescer::new(true);
        assert_eq!(run_through(&mut c, std::slice::from_ref(&f)), vec![f]);
        assert_eq!(c.counters, CoalesceCounters::default());
        // Padding included: a tiny segment padded to the 60-byte Ethernet minimum.
        let mut s = spec(5, 2);
        s.padding = 4;
        let f = frame(&s);
        assert_eq!(f.len(), 60);
        assert_eq!(through(std::slice::from_ref(&f)), vec![f]);
    }

    #[test]
    fn a_segment_with_no_room_for_another_its_size_goes_on_at_once() {
        // MTU 65520: 65480-byte segments. Each is handed on as it arrives, not held.
        let parts = train(7, &[65480, 65480]);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        let mut c = Coalescer::new(true);
        let mut out = Vec::new();
        c.push(&frames[0], |g: &[u8]| out.push(g.to_vec()));
        assert_eq!(
            out,
            vec![frames[0].clone()],
            "delivered before the next frame arrives"
        );
        assert_eq!(run_through(&mut c, &frames[1..]), vec![frames[1].clone()]);
        assert_eq!(c.counters, CoalesceCounters::default());
        // Half that size still waits for a partner, and merges with it.
        let parts = train(7, &[32000, 32000]);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        let out = through(&frames);
        assert_eq!(out.len(), 1);
        assert_merge_of(&out[0], &parts);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut parts = train(9, &[2, 4, 2]);
        for s in &mut parts {
            s.padding = 60 - (54 + s.payload.len());
        }
        let frames: Vec<_> = parts.iter().map(frame).collect();
        let out = through(&frames);
        assert_eq!(out.len(), 1);
        assert_merge_of(&out[0], &parts);
    }

    #[test]
    fn a_bad_checksum_in_one_segment_makes_a_bad_merge() {
        for corrupt in 0..3 {
            let parts = train(1, &[1460, 1460, 1460]);
            let mut frames: Vec<_> = parts.iter().map(frame).collect();
            // One payload byte flipped after the checksum was computed.
            frames[corrupt][14 + 40 + 100] ^= 0x5a;
            let out = through(&frames);
            assert_eq!(out.len(), 1);
            assert_eq!(
                checksums_verify(&out[0]),
                (true, false),
                "corrupt #{corrupt}"
            );
            // The bytes are passed on as they came: libslirp's check is what drops them.
            assert_eq!(
                &out[0][54 + corrupt * 1460 + 100],
                &frames[corrupt][54 + 100]
            );
        }
        // A wrong checksum field (the data is fine) is caught too.
        let parts = train(1, &[1460, 1460]);
        let mut frames: Vec<_> = parts.iter().map(frame).collect();
        frames[1][14 + 20 + 17] ^= 0x01;
        let out = through(&frames);
        assert_eq!(out.len(), 1);
        assert_eq!(checksums_verify(&out[0]), (true, false));
    }

    /// The second segment differs from a mergeable one by `change`: both pass unchanged.
    fn assert_not_merged(what: &str, change: impl Fn(&mut Spec)) {
        let mut parts = train(1000, &[1460, 1460]);
        change(&mut parts[1]);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        let mut c = Coalescer::new(true);
        assert_eq!(run_through(&mut c, &frames), frames, "{what}");
        assert_eq!(c.counters, CoalesceCounters::default(), "{what}");
    }

    #[test]
    fn segments_that_differ_are_not_merged() {
        assert_not_merged("gap in seq", |s| s.seq += 1);
        assert_not_merged("overlap in seq", |s| s.seq -= 1);
        assert_not_merged("different ack", |s| s.ack += 1);
        assert_not_merged("different window", |s| s.window += 1);
        assert_not_merged("different TOS", |s| s.tos = 0x10);
        assert_not_merged("different TTL", |s| s.ttl = 63);
        assert_not_merged("different DF", |s| s.df = false);
        assert_not_merged("different source port", |s| s.sport += 1);
        assert_not_merged("different destination port", |s| s.dport += 1);
        assert_not_merged("different source", |s| s.src = [10, 0, 2, 16]);
        assert_not_merged("different destination", |s| s.dst = [10, 0, 2, 3]);
        assert_not_merged("different MAC", |s| s.dst_mac = [0xff; 6]);
        assert_not_merged("options added", |s| s.options = vec![1, 1, 1, 1]);
        // Same length, different bytes: timestamps that ticked.
        let ts = |v: u8| vec![1, 1, 8, 10, 0, 0, 0, v, 0, 0, 0, 1];
        let mut parts = train(1000, &[1460, 1460]);
        parts[0].options = ts(1);
        parts[1].options = ts(2);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        assert_eq!(through(&frames), frames, "different timestamps");
        // Identical options merge.
        parts[1].options = ts(1);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        let out = through(&frames);
        assert_eq!(out.len(), 1);
        assert_merge_of(&out[0], &parts);
    }

    #[test]
    fn flags_other_than_ack_and_psh_are_never_merged() {
        assert_not_merged("SYN", |s| s.syn = true);
        assert_not_merged("FIN", |s| s.fin = true);
        assert_not_merged("RST", |s| s.rst = true);
        assert_not_merged("URG", |s| s.urg = true);
        assert_not_merged("ECE", |s| s.ece = true);
        assert_not_merged("CWR", |s| s.cwr = true);
        assert_not_merged("no ACK", |s| s.no_ack = true);
        // Nor as the first segment.
        for change in [
            |s: &mut Spec| s.syn = true,
            |s: &mut Spec| s.fin = true,
            |s: &mut Spec| s.rst = true,
            |s: &mut Spec| s.urg = true,
        ] {
            let mut parts = train(1000, &[1460, 1460]);
            change(&mut parts[0]);
            let frames: Vec<_> = parts.iter().map(frame).collect();
            assert_eq!(through(&frames), frames);
        }
    }

    #[test]
    fn fragments_options_and_empty_segments_are_never_merged() {
        assert_not_merged("more fragments", |s| s.mf = true);
        assert_not_merged("fragment offset", |s| s.frag_offset = 185);
        assert_not_merged("IP options", |s| s.ip_options = vec![1, 1, 1, 0]);
        assert_not_merged("no payload", |s| s.payload.clear());
        for change in [
            |s: &mut Spec| s.mf = true,
            |s: &mut Spec| s.ip_options = vec![1, 1, 1, 0],
        ] {
            let mut parts = train(1000, &[1460, 1460]);
            change(&mut parts[0]);
            let frames: Vec<_> = parts.iter().map(frame).collect();
            assert_eq!(through(&frames), frames);
        }
        // A bad IP header checksum: not a candidate (libslirp drops it, as it would have).
        let parts = train(1000, &[1460, 1460]);
        let mut frames: Vec<_> = parts.iter().map(frame).collect();
        frames[1][14 + 8] ^= 1; // TTL changed, checksum not updated
        frames[0][14 + 8] ^= 1;
        assert_eq!(through(&frames), frames);
        // VLAN-tagged frames pass as they are.
        let mut tagged = frames[0].clone();
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert_eq!(
            through(&[tagged.clone(), tagged.clone()]),
            vec![tagged.clone(), tagged]
        );
    }

    #[test]
    fn an_odd_length_ends_a_merge_except_as_the_last_segment() {
        let parts = train(1, &[1001, 1460]);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        assert_eq!(through(&frames), frames);
        let parts = train(1, &[1000, 1001, 1460]);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        let out = through(&frames);
        assert_eq!(out.len(), 2);
        assert_merge_of(&out[0], &parts[..2]);
        assert_eq!(out[1], frames[2]);
    }

    #[test]
    fn interleaved_flows_keep_their_order() {
        let a = train(1, &[1460, 1460]);
        let mut b = train(500, &[1460, 1460]);
        for s in &mut b {
            s.sport = 40001;
        }
        // A0 B0 A1 B1: every frame ends the other's merge.
        let frames: Vec<_> = [&a[0], &b[0], &a[1], &b[1]].map(frame).to_vec();
        assert_eq!(through(&frames), frames);
        // A0 A1 B0 B1: two merges, in order.
        let frames: Vec<_> = [&a[0], &a[1], &b[0], &b[1]].map(frame).to_vec();
        let out = through(&frames);
        assert_eq!(out.len(), 2);
        assert_merge_of(&out[0], &a);
        assert_merge_of(&out[1], &b);
        // Something else in between (an ARP frame) flushes first and keeps its place.
        let arp = [
            vec![0xff; 6],
            GUEST_MAC.to_vec(),
            vec![0x08, 0x06],
            vec![0; 28],
        ]
        .concat();
        let frames = vec![frame(&a[0]), frame(&a[1]), arp.clone(), frame(&b[0])];
        let out = through(&frames);
        assert_eq!(out.len(), 3);
        assert_merge_of(&out[0], &a);
        assert_eq!(out[1], arp);
        assert_eq!(out[2], frames[3]);
    }

    #[test]
    fn merges_stop_at_65535_bytes_of_ipv4() {
        // 44 × 1460 + 40 = 64280 fits; a 45th would not.
        let parts = train(1, &vec![1460; 46]);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        let out = through(&frames);
        assert_eq!(out.len(), 2);
        assert_merge_of(&out[0], &parts[..44]);
        assert_merge_of(&out[1], &parts[44..]);
        // Exactly 65535 is allowed, one byte more is not.
        let parts = train(1, &[32000, 33495]);
        let out = through(&parts.iter().map(frame).collect::<Vec<_>>());
        assert_eq!(out.len(), 1);
        assert_merge_of(&out[0], &parts);
        let parts = train(1, &[32000, 33496]);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        assert_eq!(through(&frames), frames);
    }

    #[test]
    fn off_passes_everything_unchanged() {
        let parts = train(1, &[1460, 1460, 1460]);
        let frames: Vec<_> = parts.iter().map(frame).collect();
        let mut c = Coalescer::new(false);
        assert!(!c.enabled());
        assert_eq!(run_through(&mut c, &frames), frames);
        assert_eq!(c.counters, CoalesceCounters::default());
    }

    use crate::test_rng::Rng;

    #[test]
    fn garbage_and_mutated_frames_never_panic_and_every_frame_is_accounted_for() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let base: Vec<Vec<u8>> = train(1, &[1460, 1460, 7, 1000, 2])
            .iter()
            .map(frame)
            .collect();
        let mut c = Coalescer::new(true);
        let mut pushed = 0u64;
        let mut delivered = 0u64;
        for _ in 0..20_000 {
            let f = match rng.below(3) {
                // Random bytes, often with the IPv4/TCP header bytes that get them further.
                0 => {
                    let mut f: Vec<u8> = (0..rng.below(120)).map(|_| rng.next() as u8).collect();
                    if f.len() > 48 && rng.below(2) == 0 {
                        f[12..16].copy_from_slice(&[0x08, 0x00, 0x45, 0x00]);
                        f[14 + 9] = 6;
                    }
                    f
                }
                // A valid segment with a few bytes changed, maybe cut short.
                1 => {
                    let mut f = base[rng.below(base.len())].clone();
                    for _ in 0..rng.below(4) {
                        let i = rng.below(f.len());
                        f[i] = rng.next() as u8;
                    }
                    let keep = f.len() - rng.below(f.len() / 2 + 1) * rng.below(2);
                    f.truncate(keep);
                    f
                }
                // A valid segment, so merges happen among the junk.
                _ => base[rng.below(2)].clone(),
            };
            pushed += 1;
            c.push(&f, |g: &[u8]| {
                assert!(g.len() <= BUFFER_BYTES);
                delivered += 1;
            });
        }
        c.flush(|_: &[u8]| delivered += 1);
        // Every frame went on alone or inside exactly one merge.
        assert_eq!(
            pushed,
            delivered - c.counters.frames + c.counters.segments,
            "{:?}",
            c.counters
        );
    }

    // IPv6: fec0::15 → fec0::2, traffic class 0x10, flow label 0xabcde, hop limit 64.
    const SRC6: [u8; 16] = [0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x15];
    const DST6: [u8; 16] = [0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    #[derive(Clone)]
    struct Spec6 {
        tcp: Spec,
        traffic_class: u8,
        flow_label: u32,
        hop_limit: u8,
        src: [u8; 16],
        /// A hop-by-hop options header before TCP.
        hop_by_hop: bool,
    }

    fn spec6(seq: u32, len: usize) -> Spec6 {
        Spec6 {
            tcp: spec(seq, len),
            traffic_class: 0x10,
            flow_label: 0xabcde,
            hop_limit: 64,
            src: SRC6,
            hop_by_hop: false,
        }
    }

    fn train6(seq: u32, lens: &[usize]) -> Vec<Spec6> {
        train(seq, lens)
            .into_iter()
            .map(|tcp| Spec6 { tcp, ..spec6(0, 0) })
            .collect()
    }

    /// The IPv6 frame, its TCP checksum right (computed by etherparse).
    fn frame6(s: &Spec6) -> Vec<u8> {
        let t = &s.tcp;
        let mut tcp = TcpHeader::new(t.sport, t.dport, t.seq, t.window);
        tcp.acknowledgment_number = t.ack;
        tcp.ack = !t.no_ack;
        (tcp.psh, tcp.syn, tcp.fin, tcp.rst) = (t.psh, t.syn, t.fin, t.rst);
        tcp.set_options_raw(&t.options).unwrap();
        let tcp_len = tcp.header_len() + t.payload.len();
        let ext = if s.hop_by_hop { 8 } else { 0 };
        let ip = etherparse::Ipv6Header {
            traffic_class: s.traffic_class,
            flow_label: etherparse::Ipv6FlowLabel::try_new(s.flow_label).unwrap(),
            payload_length: (ext + tcp_len) as u16,
            next_header: if s.hop_by_hop {
                IpNumber::IPV6_HEADER_HOP_BY_HOP
            } else {
                IpNumber::TCP
            },
            hop_limit: s.hop_limit,
            source: s.src,
            destination: DST6,
        };
        tcp.checksum = tcp.calc_checksum_ipv6(&ip, &t.payload).unwrap();
        let eth = Ethernet2Header {
            source: GUEST_MAC,
            destination: t.dst_mac,
            ether_type: EtherType::IPV6,
        };
        let mut f = Vec::new();
        eth.write(&mut f).unwrap();
        ip.write(&mut f).unwrap();
        if s.hop_by_hop {
            f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        }
        tcp.write(&mut f).unwrap();
        f.extend_from_slice(&t.payload);
        f.resize(f.len() + t.padding, 0);
        f
    }

    fn through6(mtu: usize, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        run_through(&mut Coalescer::new(true).with_ipv6_mtu(mtu), frames)
    }

    /// Whether the TCP checksum of an IPv6 `frame` verifies, summed as a receiver does.
    fn checksum6_verifies(frame: &[u8]) -> bool {
        let ip = &frame[14..];
        let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let tcp = &ip[40..40 + len];
        let mut pseudo = ip[8..40].to_vec();
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
        let sum = u32::from(ones_sum(&pseudo)) + u32::from(ones_sum(tcp));
        (sum & 0xffff) + (sum >> 16) == 0xffff
    }

    /// Checks an IPv6 merge: the first segment's headers, payload length, concatenated
    /// payload, the last one's PSH, a checksum etherparse agrees with.
    fn assert_merge6_of(merged: &[u8], parts: &[Spec6]) {
        assert!(checksum6_verifies(merged), "checksum of the merge");
        let p = SlicedPacket::from_ethernet(merged).expect("the merge parses");
        let (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(tcp))) = (&p.net, &p.transport)
        else {
            panic!("not IPv6/TCP: {p:?}");
        };
        let payload: Vec<u8> = parts.iter().flat_map(|s| s.tcp.payload.clone()).collect();
        let h = ip.header();
        assert_eq!(usize::from(h.payload_length()), 20 + payload.len());
        assert_eq!(
            merged.len(),
            14 + 60 + payload.len(),
            "no padding after a merge"
        );
        assert_eq!(h.traffic_class(), parts[0].traffic_class);
        assert_eq!(h.flow_label().value(), parts[0].flow_label);
        assert_eq!(h.hop_limit(), parts[0].hop_limit);
        assert_eq!(tcp.sequence_number(), parts[0].tcp.seq);
        assert_eq!(tcp.psh(), parts.last().unwrap().tcp.psh);
        assert_eq!(tcp.payload(), payload.as_slice());
        let expected = tcp
            .to_header()
            .calc_checksum_ipv6_raw(h.source(), h.destination(), tcp.payload())
            .unwrap();
        let got = tcp.checksum();
        assert!(
            got == expected || (got | expected == 0xffff && got & expected == 0),
            "{got:#x} vs {expected:#x}"
        );
    }

    #[test]
    fn ipv6_segments_merge_up_to_the_mtu() {
        // Small segments under a large MTU: one merge.
        let mut parts = train6(7, &[1000; 6]);
        parts[5].tcp.psh = true;
        let frames: Vec<_> = parts.iter().map(frame6).collect();
        let out = through6(65520, &frames);
        assert_eq!(out.len(), 1);
        assert_merge6_of(&out[0], &parts);
        // MTU 3000: 60 + 2 × 1000 fits, a third does not.
        let parts = train6(u32::MAX - 1500, &[1000; 5]);
        let frames: Vec<_> = parts.iter().map(frame6).collect();
        let out = through6(3000, &frames);
        assert_eq!(out.len(), 3);
        assert_merge6_of(&out[0], &parts[..2]);
        assert_merge6_of(&out[1], &parts[2..4]);
        assert_eq!(out[2], frames[4]);
        assert!(out.iter().all(|f| f.len() - 14 <= 3000));
        // Full-sized segments at MTU 1500 (1440 + 60): nothing merges.
        let frames: Vec<_> = train6(1, &[1440; 4]).iter().map(frame6).collect();
        assert_eq!(through6(1500, &frames), frames);
        // Without an MTU (the default), IPv6 is never merged.
        let frames: Vec<_> = train6(1, &[100; 4]).iter().map(frame6).collect();
        assert_eq!(through(&frames), frames);
    }

    #[test]
    fn ipv6_segments_that_differ_or_carry_extension_headers_are_not_merged() {
        type Change = fn(&mut Spec6);
        let changes: [(&str, Change); 6] = [
            ("traffic class", |s| s.traffic_class = 0),
            ("flow label", |s| s.flow_label = 1),
            ("hop limit", |s| s.hop_limit = 63),
            ("source", |s| s.src[15] = 0x16),
            ("hop-by-hop", |s| s.hop_by_hop = true),
            ("window", |s| s.tcp.window = 1),
        ];
        for (what, change) in changes {
            let mut parts = train6(1, &[1000, 1000]);
            change(&mut parts[1]);
            let frames: Vec<_> = parts.iter().map(frame6).collect();
            assert_eq!(through6(65520, &frames), frames, "{what}");
        }
        let mut parts = train6(1, &[1000, 1000]);
        parts[0].hop_by_hop = true;
        let frames: Vec<_> = parts.iter().map(frame6).collect();
        assert_eq!(through6(65520, &frames), frames, "hop-by-hop first");
        // The same ports and sequence numbers over IPv4 and IPv6: never one merge.
        let v4 = frame(&spec(1, 1000));
        let v6 = frame6(&spec6(1001, 1000));
        let frames = vec![v4.clone(), v6.clone(), frame(&spec(1001, 1000))];
        assert_eq!(through6(65520, &frames), frames);
        // Padding after the packet is not payload.
        let mut parts = train6(1, &[1000, 1000]);
        parts[0].tcp.padding = 6;
        let frames: Vec<_> = parts.iter().map(frame6).collect();
        let out = through6(65520, &frames);
        assert_eq!(out.len(), 1);
        assert_merge6_of(&out[0], &parts);
    }

    #[test]
    fn an_ipv6_bad_checksum_makes_a_bad_merge() {
        for corrupt in 0..3 {
            let parts = train6(1, &[1000, 1000, 1000]);
            let mut frames: Vec<_> = parts.iter().map(frame6).collect();
            frames[corrupt][14 + 60 + 100] ^= 0x5a;
            let out = through6(65520, &frames);
            assert_eq!(out.len(), 1);
            assert!(!checksum6_verifies(&out[0]), "corrupt #{corrupt}");
        }
    }

    #[test]
    fn mutated_ipv6_frames_never_panic_and_every_frame_is_accounted_for() {
        let mut rng = Rng(0x6a09_e667_f3bc_c908);
        let base: Vec<Vec<u8>> = train6(1, &[1000, 1000, 7, 600, 2])
            .iter()
            .map(frame6)
            .collect();
        let mut c = Coalescer::new(true).with_ipv6_mtu(4000);
        let (mut pushed, mut delivered) = (0u64, 0u64);
        for _ in 0..20_000 {
            let mut f = base[rng.below(base.len())].clone();
            if rng.below(2) == 0 {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(f.len().min(100));
                    f[i] = rng.next() as u8;
                }
                let keep = f.len() - rng.below(f.len() / 2 + 1) * rng.below(2);
                f.truncate(keep);
            }
            pushed += 1;
            c.push(&f, |g: &[u8]| {
                assert!(g.len() <= 14 + 4000 || g == f.as_slice());
                delivered += 1;
            });
        }
        c.flush(|_: &[u8]| delivered += 1);
        assert!(c.counters.frames > 100, "{:?}", c.counters);
        assert_eq!(pushed, delivered - c.counters.frames + c.counters.segments);
    }
}
