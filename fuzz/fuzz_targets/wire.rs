//! The checked header views (`src/wire/`) on arbitrary bytes: never panic, and every view that
//! parses keeps the promises its constructor checked (lengths within the bytes, header and
//! payload adding up), the IPv6 extension walk ends within its bound with offsets moving
//! forward, and the Internet checksum agrees with a plain RFC 1071 reference. The looser
//! "as libslirp reads it" readers (`dispatch`, `claimed_*`, `claims_fragment`) never panic.
//!
//! Input: the first byte picks where in the rest the view starts (so that one corpus serves
//! Ethernet frames and bare IP/TCP/UDP headers alike); every view is tried at that offset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slirp_helper::wire::checksum::internet_checksum;
use slirp_helper::wire::ipv6::MAX_EXTENSION_HEADERS;
use slirp_helper::wire::{
    icmp, ipv4, ipv6, tcp, udp, EthernetFrame, Ipv4Header, Ipv6FragmentHeader, Ipv6Header, Ipv6HeaderMut,
    TcpHeader, UdpHeader,
};

/// RFC 1071, word by word, the odd byte padded with zero.
fn reference_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        let hi = u64::from(pair[0]) << 8;
        let lo = pair.get(1).map_or(0, |&b| u64::from(b));
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn check_ipv4(bytes: &[u8]) {
    let _ = ipv4::claims_fragment(bytes);
    let _ = ipv4::dispatch(bytes);
    let Ok(ip) = Ipv4Header::parse(bytes) else {
        return;
    };
    assert!((20..=60).contains(&ip.header_len()));
    assert!(ip.header_len() <= ip.total_len() && ip.total_len() <= bytes.len());
    assert_eq!(ip.options().len(), ip.header_len() - 20);
    assert_eq!(ip.payload().len(), ip.total_len() - ip.header_len());
    let _ = (
        ip.checksum_valid(),
        ip.repr(),
        ip.src(),
        ip.dst(),
        ip.protocol(),
    );
    check_transport(ip.payload());
}

fn check_ipv6(bytes: &[u8]) {
    let _ = ipv6::dispatch(bytes);
    let _ = Ipv6FragmentHeader::parse(bytes).map(|f| (f.fragment_offset(), f.id()));
    let Ok(ip) = Ipv6Header::parse(bytes) else {
        return;
    };
    assert_eq!(ip.payload().len(), ip.payload_len());
    let mut last_offset = None;
    let mut steps = 0;
    for ext in ip.extensions() {
        steps += 1;
        assert!(steps <= MAX_EXTENSION_HEADERS + 1, "the walk must end");
        let Ok(ext) = ext else {
            continue;
        };
        assert!(
            last_offset.is_none_or(|o| ext.offset > o),
            "offsets move forward"
        );
        assert!(ext.offset + ext.bytes.len() <= ip.payload_len());
        last_offset = Some(ext.offset);
        let _ = (ext.next_header(), ext.fragment());
        // The mutable view writes the next-header byte of every walked header, and only it.
        let mut copy = bytes.to_vec();
        let mut view = Ipv6HeaderMut::new(&mut copy).expect("a parsed header is a mutable one");
        view.set_next_header_of(Some(ext.offset), 0xaa)
            .expect("a walked header is within the bytes");
        view.set_payload_len(ip.payload_len() as u16);
        let changed: Vec<usize> = (0..bytes.len()).filter(|&i| copy[i] != bytes[i]).collect();
        assert!(changed.iter().all(|&i| i == 40 + ext.offset), "{changed:?}");
    }
    // Past the end: refused, not written.
    let mut copy = bytes.to_vec();
    if let Ok(mut view) = Ipv6HeaderMut::new(&mut copy) {
        assert!(view.set_next_header_of(Some(bytes.len()), 0).is_err());
        view.set_next_header_of(None, 0x11).expect("the fixed header's field");
        assert_eq!(copy[6], 0x11);
    }
    if let Ok(upper) = ip.upper_layer() {
        assert_eq!(upper.offset + upper.payload.len(), ip.payload_len());
        check_transport(upper.payload);
    }
}

fn check_transport(bytes: &[u8]) {
    let _ = (tcp::claimed_flags(bytes), udp::claimed_dst_port(bytes));
    let _ = icmp::claimed_type(bytes);
    if let Ok(seg) = TcpHeader::parse(bytes) {
        assert!((20..=60).contains(&seg.header_len()) && seg.header_len() <= bytes.len());
        assert_eq!(seg.options().len(), seg.header_len() - 20);
        assert_eq!(seg.header().len() + seg.payload().len(), bytes.len());
        let _ = (seg.flags(), seg.seq(), seg.header_sum());
    }
    if let Ok(dgram) = UdpHeader::parse(bytes) {
        assert!(dgram.len() >= 8 && dgram.len() <= bytes.len());
        assert_eq!(dgram.payload().len(), dgram.len() - 8);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&at, rest)) = data.split_first() else {
        return;
    };
    let bytes = &rest[usize::from(at).min(rest.len())..];
    assert_eq!(internet_checksum(bytes), reference_checksum(bytes));
    if let Ok(frame) = EthernetFrame::parse(bytes) {
        assert_eq!(frame.header().len() + frame.payload().len(), bytes.len());
        check_ipv4(frame.payload());
        check_ipv6(frame.payload());
    }
    check_ipv4(bytes);
    check_ipv6(bytes);
    check_transport(bytes);
});
