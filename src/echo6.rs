//! ICMPv6 echo requests libslirp before 4.8 cannot serve. libslirp 4.7's `icmp6_input`
//! answers an echo request to its own addresses and, for any other destination, calls
//! `g_critical("external icmpv6 not supported yet")` and drops it: a guest pinging an outside
//! IPv6 address then writes one CRITICAL line per packet, and glib's logging makes system
//! calls the sandbox refuses (and reports), so a ping flood becomes a log flood. The helper
//! drops those requests itself, counted in `echo6_unserved`; libslirp would have dropped them
//! anyway. From 4.8 libslirp serves them (through a socket), and this filter is off.
//!
//! Owns: the one question "does libslirp answer this echo request itself", as its `ip6.h`
//! macros `in6_equal_router`/`in6_equal_dns` decide it.

use crate::config::network::{Ipv6Net, Ipv6Network};
use crate::config::{LibslirpVersion, Network};
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::ipv6::{self, Ipv6Header};
use crate::wire::{icmp, protocol};
use std::net::Ipv6Addr;

/// The first libslirp that serves echo requests to other addresses.
const SERVES_EXTERNAL_ECHO: LibslirpVersion = LibslirpVersion(4, 8, 0);

/// fe80::/64, where libslirp also answers on its addresses' interface identifiers.
const LINK_LOCAL: Ipv6Net = Ipv6Net {
    addr: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
    len: 64,
};

/// See the module comment.
#[derive(Debug, Clone)]
pub struct Echo6Filter {
    v6: Ipv6Network,
}

impl Echo6Filter {
    /// `Some` when IPv6 is on and the loaded libslirp is older than 4.8.
    pub fn new(network: &Network, loaded: LibslirpVersion) -> Option<Echo6Filter> {
        let v6 = network.ipv6.clone()?;
        (loaded < SERVES_EXTERNAL_ECHO).then_some(Echo6Filter { v6 })
    }

    /// Whether `frame` is an ICMPv6 echo request libslirp would log and drop.
    pub fn drops(&self, frame: &[u8]) -> bool {
        let Ok(eth) = EthernetFrame::parse(frame) else {
            return false;
        };
        if eth.ethertype() != ethernet::ETHERTYPE_IPV6 {
            return false;
        }
        let Ok((protocol::ICMPV6, upper)) = ipv6::dispatch(eth.payload()) else {
            return false;
        };
        if icmp::claimed_type(upper) != Some(icmp::V6_ECHO_REQUEST) {
            return false;
        }
        let Ok(header) = Ipv6Header::parse(eth.payload()) else {
            return false;
        };
        !self.answered_by_libslirp(Ipv6Addr::from(header.dst()))
    }

    /// `in6_equal_router(dst) || in6_equal_dns(dst)`: inside the prefix (or fe80::/64) with
    /// the host part of `host6` (or `dns6`).
    fn answered_by_libslirp(&self, dst: Ipv6Addr) -> bool {
        let net6 = self.v6.net6;
        let same_host_part = |a: Ipv6Addr, b: Ipv6Addr, len: u8| {
            let host_bits = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            u128::from(a) & host_bits == u128::from(b) & host_bits
        };
        [self.v6.host6, self.v6.dns6].into_iter().any(|addr| {
            (net6.contains(dst) && same_host_part(dst, addr, net6.len))
                || (LINK_LOCAL.contains(dst) && same_host_part(dst, addr, 64))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::network::DEFAULT_NET6;

    fn echo(dst: &str, kind: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&8u16.to_be_bytes());
        f[20] = 58;
        f[21] = 64;
        f[22..38].copy_from_slice(&"fec0::15".parse::<Ipv6Addr>().unwrap().octets());
        f[38..54].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        f[54] = kind;
        f
    }

    fn filter() -> Echo6Filter {
        let network = Network {
            ipv6: Some(Ipv6Network {
                net6: DEFAULT_NET6,
                host6: "fec0::2".parse().unwrap(),
                dns6: "fec0::3".parse().unwrap(),
            }),
            ..Network::default()
        };
        Echo6Filter::new(&network, LibslirpVersion(4, 7, 0)).expect("4.7 with IPv6")
    }

    #[test]
    fn echo_to_libslirps_own_addresses_passes_the_rest_is_dropped() {
        let f = filter();
        for own in ["fec0::2", "fec0::3", "fe80::2", "fe80::3"] {
            assert!(!f.drops(&echo(own, 128)), "{own}");
        }
        for outside in ["2001:db8::1", "fec0::4", "::1", "fe80::1", "fec1::2"] {
            assert!(f.drops(&echo(outside, 128)), "{outside}");
        }
        // Only echo requests: replies and neighbour discovery pass.
        assert!(!f.drops(&echo("2001:db8::1", 129)));
        assert!(!f.drops(&echo("2001:db8::1", 135)));
    }

    #[test]
    fn off_without_ipv6_and_from_libslirp_4_8() {
        assert!(Echo6Filter::new(&Network::default(), LibslirpVersion(4, 7, 0)).is_none());
        let network = Network {
            ipv6: filter().v6.into(),
            ..Network::default()
        };
        assert!(Echo6Filter::new(&network, LibslirpVersion(4, 8, 0)).is_none());
        assert!(Echo6Filter::new(&network, LibslirpVersion(4, 7, 0)).is_some());
    }
}
