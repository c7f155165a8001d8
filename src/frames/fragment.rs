//! Helper → guest: splitting a libslirp frame longer than the guest's link into IP fragments.
//!
//! With IPv6 on, libslirp is given an `if_mtu` of 65520 instead of the guest MTU (its
//! `ip6_input` refuses any IPv6 packet longer than `if_mtu`, so at the guest's MTU it could
//! take neither coalesced segments nor reassembled datagrams; design note 10). libslirp then
//! no longer fragments what it sends at the guest MTU (`ip_output.c`), and its IPv4 UDP
//! replies, ICMP replies and errors, and IPv6 packets, may come out longer than the guest's
//! largest frame. This module does what libslirp's `ip_output` did, for both families:
//! - IPv4 without DF: fragments of the header and 8-byte-aligned pieces of the payload, MF
//!   on all but the last, offsets kept relative to the original (a libslirp fragment is split
//!   further, RFC 791), the header checksum recomputed. A header with options is refused
//!   (libslirp writes none, and RFC 791 copies only some of them into later fragments).
//! - IPv4 with DF: refused (libslirp refused too).
//! - IPv6: a fragment header after the fixed header (RFC 8200 4.5), the identification given
//!   by the caller, 8-byte-aligned pieces, M on all but the last. A packet with extension
//!   headers is refused (libslirp writes none).
//!
//! Each fragment is written straight into a slot the caller owns (the TX ring's): nothing is
//! allocated.

use crate::wire::ethernet::{self, EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ipv4::{self, Ipv4Header, Ipv4HeaderMut};
use crate::wire::ipv6::{self, Ipv6FragmentRepr, Ipv6Header, Ipv6HeaderMut};
use crate::wire::protocol;

/// Why a frame over the limit was not split (the caller drops and counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Neither IPv4 nor IPv6.
    NotIp,
    /// The IP header does not parse.
    Malformed,
    /// IPv4 with DF set.
    DontFragment,
    /// An IPv4 header with options.
    Ipv4Options,
    /// An IPv6 packet with extension headers.
    Ipv6Extensions,
    /// The limit leaves room for less than 8 bytes of payload per fragment.
    LimitTooSmall,
}

#[derive(Debug, Clone, Copy)]
enum Family {
    /// The original's offset (bytes) and MF: a fragment is split further.
    V4 { base: usize, more: bool },
    /// The protocol of the fragmentable part and the identification.
    V6 { next_header: u8, id: u32 },
}

/// The fragments of one frame, written one at a time with [`Fragmenter::write_next`].
#[derive(Debug)]
pub struct Fragmenter<'a> {
    /// Ethernet header and IP header(s), copied before each piece.
    headers: &'a [u8],
    /// The fragmentable part: the IPv4 payload, or the IPv6 payload.
    data: &'a [u8],
    family: Family,
    /// Payload bytes per fragment but the last: a multiple of 8.
    piece: usize,
    /// Payload bytes already written.
    done: usize,
}

impl<'a> Fragmenter<'a> {
    /// The fragments of `frame` (an Ethernet frame) that each fit in `max_frame` bytes. An
    /// IPv6 packet's fragments carry `ipv6_id`. Bytes after the IP datagram (padding) are
    /// not sent.
    pub fn new(frame: &'a [u8], max_frame: usize, ipv6_id: u32) -> Result<Self, Refusal> {
        let eth = EthernetFrame::parse(frame).map_err(|_| Refusal::NotIp)?;
        let room = max_frame.saturating_sub(ethernet::HEADER_LEN);
        match eth.ethertype() {
            ETHERTYPE_IPV4 => {
                let ip = Ipv4Header::parse(eth.payload()).map_err(|_| Refusal::Malformed)?;
                if ip.dont_fragment() {
                    return Err(Refusal::DontFragment);
                }
                if ip.header_len() != ipv4::HEADER_LEN {
                    return Err(Refusal::Ipv4Options);
                }
                let piece = piece_len(room, ipv4::HEADER_LEN)?;
                Ok(Fragmenter {
                    headers: &frame[..ethernet::HEADER_LEN + ipv4::HEADER_LEN],
                    data: ip.payload(),
                    family: Family::V4 {
                        base: ip.fragment_offset(),
                        more: ip.more_fragments(),
                    },
                    piece,
                    done: 0,
                })
            }
            ETHERTYPE_IPV6 => {
                let ip = Ipv6Header::parse(eth.payload()).map_err(|_| Refusal::Malformed)?;
                if ipv6::is_extension(ip.next_header()) {
                    return Err(Refusal::Ipv6Extensions);
                }
                let piece = piece_len(room, ipv6::HEADER_LEN + ipv6::FRAGMENT_HEADER_LEN)?;
                Ok(Fragmenter {
                    headers: &frame[..ethernet::HEADER_LEN + ipv6::HEADER_LEN],
                    data: ip.payload(),
                    family: Family::V6 {
                        next_header: ip.next_header(),
                        id: ipv6_id,
                    },
                    piece,
                    done: 0,
                })
            }
            _ => Err(Refusal::NotIp),
        }
    }

    /// Fragments not yet written.
    pub fn remaining(&self) -> usize {
        (self.data.len() - self.done).div_ceil(self.piece)
    }

    /// Writes the next fragment at the start of `slot` (at least `max_frame` bytes); its
    /// length, or `None` when all were written.
    pub fn write_next(&mut self, slot: &mut [u8]) -> Option<usize> {
        if self.done == self.data.len() {
            return None;
        }
        let len = self.piece.min(self.data.len() - self.done);
        let last = self.done + len == self.data.len();
        let offset = self.done;
        let piece = &self.data[offset..offset + len];
        let headers = self.headers.len();
        slot[..headers].copy_from_slice(self.headers);
        let frame_len = match self.family {
            Family::V4 { base, more } => {
                slot[headers..headers + len].copy_from_slice(piece);
                let mut header = Ipv4HeaderMut::new(&mut slot[ethernet::HEADER_LEN..])
                    .expect("the header was parsed from the original");
                header.set_total_len((ipv4::HEADER_LEN + len) as u16);
                header.set_fragment(base + offset, more || !last);
                header.fill_checksum();
                headers + len
            }
            Family::V6 { next_header, id } => {
                let mut header = Ipv6HeaderMut::new(&mut slot[ethernet::HEADER_LEN..])
                    .expect("the header was parsed from the original");
                header.set_payload_len((ipv6::FRAGMENT_HEADER_LEN + len) as u16);
                header
                    .set_next_header_of(None, protocol::IPV6_FRAGMENT)
                    .expect("the fixed header is in the slot");
                let fragment: &mut [u8; ipv6::FRAGMENT_HEADER_LEN] = (&mut slot
                    [headers..headers + ipv6::FRAGMENT_HEADER_LEN])
                    .try_into()
                    .expect("8 bytes");
                Ipv6FragmentRepr {
                    next_header,
                    offset,
                    more: !last,
                    id,
                }
                .emit(fragment);
                let at = headers + ipv6::FRAGMENT_HEADER_LEN;
                slot[at..at + len].copy_from_slice(piece);
                at + len
            }
        };
        self.done += len;
        Some(frame_len)
    }
}

/// Payload bytes per fragment when `room` bytes follow the Ethernet header and `headers` of
/// them are IP headers: the rest rounded down to the 8-byte unit both families count in.
fn piece_len(room: usize, headers: usize) -> Result<usize, Refusal> {
    match room.saturating_sub(headers) & !(ipv4::FRAGMENT_UNIT - 1) {
        0 => Err(Refusal::LimitTooSmall),
        piece => Ok(piece),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reasm::{ReasmLimits, Reassembler, Verdict};
    use crate::wire::ipv4::Ipv4Repr;

    const MAC: [u8; 12] = [0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x55, 10, 0, 2, 2];

    fn ipv4_frame(payload_len: usize, flags: u16) -> Vec<u8> {
        let mut frame = MAC.to_vec();
        frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut header = [0u8; ipv4::HEADER_LEN];
        Ipv4Repr {
            tos: 0,
            id: 0x1234,
            ttl: 64,
            protocol: protocol::UDP,
            src: [10, 0, 2, 2],
            dst: [10, 0, 2, 15],
        }
        .emit(&mut header, (ipv4::HEADER_LEN + payload_len) as u16);
        frame.extend_from_slice(&header);
        frame.extend((0..payload_len).map(|i| (i * 7 + i / 251) as u8));
        if flags != 0 {
            let mut h = Ipv4HeaderMut::new(&mut frame[14..]).unwrap();
            h.set_flags_and_offset(flags);
            h.fill_checksum();
        }
        frame
    }

    fn ipv6_frame(payload_len: usize, next_header: u8) -> Vec<u8> {
        let mut frame = MAC.to_vec();
        frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&(payload_len as u16).to_be_bytes());
        frame.extend_from_slice(&[next_header, 64]);
        frame.extend_from_slice(&[0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        frame.extend_from_slice(&[0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34]);
        frame.extend((0..payload_len).map(|i| (i * 13 + i / 253) as u8));
        frame
    }

    /// Every fragment, each checked against the limit.
    fn split(frame: &[u8], max_frame: usize, id: u32) -> Vec<Vec<u8>> {
        let mut f = Fragmenter::new(frame, max_frame, id).unwrap();
        let count = f.remaining();
        let mut slot = vec![0u8; max_frame];
        let mut out = Vec::new();
        while let Some(len) = f.write_next(&mut slot) {
            assert!(len <= max_frame, "{len} > {max_frame}");
            out.push(slot[..len].to_vec());
        }
        assert_eq!(out.len(), count);
        assert_eq!(f.remaining(), 0);
        out
    }

    /// The project's reassembler, fed the fragments in order: the one whole frame it gives.
    fn reassemble(fragments: &[Vec<u8>]) -> Vec<u8> {
        let mut reasm = Reassembler::new(ReasmLimits::default());
        let mut whole = None;
        for (i, fragment) in fragments.iter().enumerate() {
            match reasm.push(fragment, 0) {
                Verdict::Held => assert!(i + 1 < fragments.len(), "last fragment held"),
                Verdict::Complete(frame) => {
                    assert_eq!(i + 1, fragments.len(), "complete before the last");
                    whole = Some(frame.to_vec());
                }
                other => panic!("fragment {i}: {other:?}"),
            }
        }
        whole.expect("reassembled")
    }

    #[test]
    fn ipv4_fragments_reassemble_to_the_original_at_and_around_the_limit() {
        for mtu in [1500usize, 576, 9000] {
            let max_frame = mtu + 14;
            for payload in [mtu - 20 + 1, mtu - 20 + 8, 3000, 30_000, 65535 - 20] {
                let frame = ipv4_frame(payload, 0);
                if frame.len() <= max_frame {
                    continue;
                }
                let fragments = split(&frame, max_frame, 0);
                assert!(fragments.len() >= 2);
                for f in &fragments[..fragments.len() - 1] {
                    let ip = Ipv4Header::parse(&f[14..]).unwrap();
                    assert!(ip.more_fragments() && ip.checksum_valid());
                    assert_eq!(ip.payload().len() % 8, 0);
                }
                assert_eq!(reassemble(&fragments), frame, "mtu {mtu} payload {payload}");
            }
        }
    }

    #[test]
    fn a_frame_exactly_at_the_limit_is_one_fragment_and_one_byte_more_is_two() {
        let max_frame = 1514;
        let at = ipv4_frame(1480, 0);
        assert_eq!(at.len(), max_frame);
        let one = split(&at, max_frame, 0);
        assert_eq!(one.len(), 1);
        let over = ipv4_frame(1481, 0);
        assert_eq!(split(&over, max_frame, 0).len(), 2);
        let over6 = ipv6_frame(1461, protocol::UDP);
        assert_eq!(over6.len(), max_frame + 1);
        let fragments = split(&over6, max_frame, 9);
        assert_eq!(fragments.len(), 2);
        assert_eq!(reassemble(&fragments), over6);
    }

    #[test]
    fn an_ipv4_fragment_is_split_further_keeping_its_offset_and_mf() {
        // What libslirp itself sends for an IPv4 datagram over its if_mtu: a first fragment
        // (MF) at offset 0, then the rest at offset 65496 (MF clear).
        let first = ipv4_frame(4000, 0x2000);
        let pieces = split(&first, 1514, 0);
        for p in &pieces {
            assert!(Ipv4Header::parse(&p[14..]).unwrap().more_fragments());
        }
        let later = ipv4_frame(3000, 100);
        let pieces = split(&later, 1514, 0);
        let offsets: Vec<usize> = pieces
            .iter()
            .map(|p| Ipv4Header::parse(&p[14..]).unwrap().fragment_offset())
            .collect();
        assert_eq!(offsets, [800, 800 + 1480, 800 + 2960]);
        let last = Ipv4Header::parse(&pieces[2][14..]).unwrap();
        assert!(!last.more_fragments());
    }

    #[test]
    fn ipv6_fragments_reassemble_to_the_original_and_carry_the_id() {
        for mtu in [1280usize, 1500, 9000] {
            let max_frame = mtu + 14;
            for payload in [mtu - 40 + 1, 3000, 30_000, 65535] {
                let frame = ipv6_frame(payload, protocol::UDP);
                if frame.len() <= max_frame {
                    continue;
                }
                let fragments = split(&frame, max_frame, 0xdead_beef);
                for f in &fragments {
                    let ip = Ipv6Header::parse(&f[14..]).unwrap();
                    let ext = ip.extensions().next().unwrap().unwrap();
                    let frag = ext.fragment().unwrap();
                    assert_eq!(frag.id(), 0xdead_beef);
                    assert_eq!(frag.next_header(), protocol::UDP);
                }
                assert_eq!(reassemble(&fragments), frame, "mtu {mtu} payload {payload}");
            }
        }
    }

    #[test]
    fn df_options_extension_headers_and_other_ethertypes_are_refused() {
        let df = ipv4_frame(3000, 0x4000);
        assert_eq!(
            Fragmenter::new(&df, 1514, 0).unwrap_err(),
            Refusal::DontFragment
        );
        let mut options = ipv4_frame(3000, 0);
        // IHL 6: four bytes of options (the view checks only lengths).
        options[14] = 0x46;
        assert_eq!(
            Fragmenter::new(&options, 1514, 0).unwrap_err(),
            Refusal::Ipv4Options
        );
        for ext in [
            protocol::HOP_BY_HOP,
            protocol::IPV6_ROUTING,
            protocol::IPV6_FRAGMENT,
            protocol::IPV6_DESTINATION,
        ] {
            let frame = ipv6_frame(3000, ext);
            assert_eq!(
                Fragmenter::new(&frame, 1514, 0).unwrap_err(),
                Refusal::Ipv6Extensions
            );
        }
        let mut arp = ipv4_frame(3000, 0);
        arp[12..14].copy_from_slice(&ethernet::ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(Fragmenter::new(&arp, 1514, 0).unwrap_err(), Refusal::NotIp);
        let mut short = ipv4_frame(3000, 0);
        short.truncate(2000);
        assert_eq!(
            Fragmenter::new(&short, 1514, 0).unwrap_err(),
            Refusal::Malformed
        );
        let frame = ipv6_frame(3000, protocol::UDP);
        assert_eq!(
            Fragmenter::new(&frame, 14 + 40 + 8 + 7, 0).unwrap_err(),
            Refusal::LimitTooSmall
        );
    }
}
