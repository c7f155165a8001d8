//! ARP, DHCP and ICMP between a guest and libslirp through the helper.

mod common;

use common::*;

#[test]
fn arp_request_for_gateway_is_answered() {
    let bhyve = Bhyve::start(&restricted_config());
    bhyve
        .send_frame(&arp_frame(1, GUEST_MAC, GUEST_IP, [0xff; 6], HOST_IP))
        .unwrap();
    let reply = bhyve
        .recv_until(STEP, |f| {
            Arp::parse(f)
                .filter(|a| a.op == 2)
                .map(|a| (a, f[..6].to_vec()))
        })
        .unwrap_or_else(|| panic!("no ARP reply for {HOST_IP}; stderr:\n{}", bhyve.stderr()));
    let (arp, eth_dst) = reply;
    assert_eq!(arp.spa, HOST_IP);
    assert_eq!(arp.tpa, GUEST_IP);
    assert_eq!(arp.tha, GUEST_MAC);
    assert_eq!(eth_dst, GUEST_MAC, "reply is unicast to the asker");
    assert_ne!(arp.sha, [0; 6]);
    assert_eq!(arp.sha[0] & 1, 0, "gateway MAC must be unicast");
}

#[test]
fn arp_for_unknown_address_gets_no_answer() {
    // Control: an address libslirp does not own is not answered, so the test above is
    // about the gateway and not about any ARP reply.
    let bhyve = Bhyve::start(&restricted_config());
    assert!(bhyve.resolve(HOST_IP, STEP).is_some(), "gateway ARP");
    let stranger = std::net::Ipv4Addr::new(10, 0, 2, 77);
    bhyve
        .send_frame(&arp_frame(1, GUEST_MAC, GUEST_IP, [0xff; 6], stranger))
        .unwrap();
    let got = bhyve.recv_until(std::time::Duration::from_secs(2), |f| {
        Arp::parse(f).filter(|a| a.op == 2 && a.spa == stranger)
    });
    assert!(got.is_none(), "ARP reply for {stranger}: {got:?}");
}

#[test]
fn dhcp_restricted_gives_lease_without_router_or_dns() {
    let mut guest = Guest::new(Bhyve::start(&restricted_config()));
    let lease = guest
        .dhcp(STEP)
        .unwrap_or_else(|| panic!("no DHCP lease; stderr:\n{}", guest.bhyve.stderr()));
    assert_eq!(lease.addr, GUEST_IP);
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(
        lease.router, None,
        "restricted mode must not offer a router"
    );
    assert!(
        lease.dns.is_empty(),
        "restricted mode must not offer DNS: {:?}",
        lease.dns
    );
}

#[test]
fn dhcp_open_gives_router_and_dns() {
    let mut guest = Guest::new(Bhyve::start(&open_config()));
    let lease = guest
        .dhcp(STEP)
        .unwrap_or_else(|| panic!("no DHCP lease; stderr:\n{}", guest.bhyve.stderr()));
    assert_eq!(lease.addr, GUEST_IP);
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.router, Some(HOST_IP));
    assert_eq!(lease.dns, vec![DNS_IP]);
}

#[test]
fn ping_gateway_after_dhcp() {
    let mut guest = Guest::new(Bhyve::start(&restricted_config()));
    assert!(
        guest.dhcp(STEP).is_some(),
        "DHCP; stderr:\n{}",
        guest.bhyve.stderr()
    );
    assert!(
        guest.ping(HOST_IP, STEP),
        "no echo reply from {HOST_IP}; stderr:\n{}",
        guest.bhyve.stderr()
    );
}

#[test]
fn raw_ping_gateway_open_mode() {
    let bhyve = Bhyve::start(&open_config());
    assert!(
        bhyve.raw_ping(HOST_IP, 64, STEP),
        "no matching echo reply; stderr:\n{}",
        bhyve.stderr()
    );
}

#[test]
fn ping_dns_address_is_answered_by_libslirp() {
    // ICMP only: libslirp answers echo requests to its DNS address itself (no DNS query).
    let mut guest = Guest::new(Bhyve::start(&restricted_config()));
    guest.set_static();
    assert!(
        guest.ping(DNS_IP, STEP),
        "no echo reply from {DNS_IP}; stderr:\n{}",
        guest.bhyve.stderr()
    );
}
