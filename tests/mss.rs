//! The TCP MSS libslirp announces follows the MTU: both `if_mtu` and `if_mru` are set from
//! `mtui` (the C helper left `if_mru` at 1500, so its MSS stayed 1460 whatever the MTU). With
//! `ipv6` on, `if_mtu` is 65520 and `if_mru` the MTU: libslirp's MSS is MIN of the two.

mod common;

use common::*;
use std::net::{SocketAddrV4, TcpListener};

/// The MSS option of libslirp's SYN-ACK to a guest SYN for a host listener (open mode).
fn syn_ack_mss(config: Vec<u8>, sport: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bhyve = Bhyve::start(&config);
    let gw = bhyve
        .resolve(HOST_IP, STEP)
        .unwrap_or_else(|| panic!("no ARP answer; stderr:\n{}", bhyve.stderr()));
    let dst = SocketAddrV4::new(HOST_IP, port);
    bhyve
        .send_frame(&tcp_syn_frame(gw, dst, sport, 1000))
        .unwrap();
    let mss = bhyve.recv_until(STEP, |f| {
        use etherparse::{NetSlice, SlicedPacket, TcpOptionElement, TransportSlice};
        let p = SlicedPacket::from_ethernet(f).ok()?;
        let (Some(NetSlice::Ipv4(_)), Some(TransportSlice::Tcp(t))) = (&p.net, &p.transport) else {
            return None;
        };
        if !(t.syn() && t.ack() && t.destination_port() == sport) {
            return None;
        }
        t.options_iterator().find_map(|o| match o {
            Ok(TcpOptionElement::MaximumSegmentSize(mss)) => Some(mss),
            _ => None,
        })
    });
    let _ = bhyve.send_frame(&tcp_rst_frame(gw, dst, sport, 1001));
    mss.unwrap_or_else(|| panic!("no SYN-ACK with an MSS option; stderr:\n{}", bhyve.stderr()))
}

#[test]
fn mss_follows_mtui() {
    // IPv4 + TCP headers: 40 bytes.
    assert_eq!(
        syn_ack_mss(ConfigBuilder::bhyve().open().mtui(1500).encode(), 41001),
        1460
    );
    assert_eq!(
        syn_ack_mss(ConfigBuilder::bhyve().open().mtui(9000).encode(), 41002),
        8960
    );
    assert_eq!(
        syn_ack_mss(ConfigBuilder::bhyve().open().mtui(65520).encode(), 41003),
        65480
    );
}

#[test]
fn mss_follows_mtui_with_ipv6_on_too() {
    let v6 = || ConfigBuilder::bhyve().open().string("ipv6", "on");
    assert_eq!(syn_ack_mss(v6().mtui(1500).encode(), 41005), 1460);
    assert_eq!(syn_ack_mss(v6().mtui(9000).encode(), 41006), 8960);
}

#[test]
fn mss_without_mtui_fits_the_legacy_2048_byte_frames() {
    // No `mtui`: frames up to 2048 bytes, so the IP MTU is 2034.
    assert_eq!(
        syn_ack_mss(ConfigBuilder::bhyve().open().encode(), 41004),
        1994
    );
}
