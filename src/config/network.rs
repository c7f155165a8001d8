//! The guest's network: addresses, DHCP and DNS options, host loopback, outbound addresses and
//! IPv6, from bhyve keys or their options (issues 11 and 12). The C helper hard-codes all of it;
//! the defaults here are its values, so a config without these keys sees no change.
//!
//! Owns: what each network setting means and how they must agree (inside the network, distinct,
//! not the network or broadcast address), and which libslirp each one needs. Never touches
//! libslirp itself: `slirp::Stack` turns a [`Network`] into a `SlirpConfig`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::bhyve::ConfigError;
use super::settings::Settings;
use super::value::{self, Expected, ValueError};

/// Prefix lengths `net` takes: /8 is the largest private block; /30 leaves the host, DNS and
/// one guest address.
pub const NET_PREFIX: std::ops::RangeInclusive<u8> = 8..=30;
/// Prefix lengths `net6` takes, QEMU's bound for libslirp (`net/slirp.c`). Only a /64 lets a
/// guest configure itself by SLAAC.
pub const NET6_PREFIX: std::ops::RangeInclusive<u8> = 1..=126;
/// `dnssearch`: at most this many names (the classic resolver's MAXDNSRCH).
pub const MAX_SEARCH_DOMAINS: usize = 6;
/// libslirp copies `vhostname` into a 33-byte buffer (`client_hostname`): longer is cut.
pub const MAX_HOSTNAME: usize = 32;
/// A domain name in text form (RFC 1035: 255 octets on the wire).
pub const MAX_DOMAIN_NAME: usize = 253;

/// A libslirp version, `major.minor.micro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LibslirpVersion(pub u32, pub u32, pub u32);

impl LibslirpVersion {
    /// `slirp_version_string()`'s "4.7.0"; `None` for anything else.
    pub fn parse(text: &str) -> Option<LibslirpVersion> {
        let mut parts = text.trim().splitn(3, '.');
        let mut next = || -> Option<u32> {
            let digits: String = parts
                .next()?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        };
        Some(LibslirpVersion(next()?, next()?, next().unwrap_or(0)))
    }

    /// The newest `SlirpConfig.version` this libslirp reads (`SLIRP_CONFIG_VERSION_MAX` of each
    /// release: 4.1 → 1, 4.2 → 2, 4.3–4.6 → 3, 4.7 → 4), capped at the 4 the helper's
    /// `SlirpConfig` mirror knows.
    pub fn config_version(self) -> u32 {
        match self {
            v if v >= LibslirpVersion(4, 7, 0) => 4,
            v if v >= LibslirpVersion(4, 3, 0) => 3,
            v if v >= LibslirpVersion(4, 2, 0) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for LibslirpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// An IPv4 network, `addr/len` with no host bits set (parsing clears them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Net {
    pub fn mask(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0))
    }
    pub fn contains(self, a: Ipv4Addr) -> bool {
        u32::from(a) & u32::from(self.mask()) == u32::from(self.addr)
    }
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !u32::from(self.mask()))
    }
    /// The `n`th address of the network (`10.0.2.0/24`, 2 → `10.0.2.2`).
    fn nth(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An IPv6 prefix, `addr/len` with no host bits set (parsing clears them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub len: u8,
}

impl Ipv6Net {
    fn mask(self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0)
    }
    pub fn contains(self, a: Ipv6Addr) -> bool {
        u128::from(a) & self.mask() == u128::from(self.addr)
    }
    fn nth(self, n: u128) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr).wrapping_add(n))
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The guest's IPv6 side (`ipv6=on`): libslirp's router advertises `net6`, answers on `host6`
/// and proxies DNS on `dns6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Network {
    pub net6: Ipv6Net,
    pub host6: Ipv6Addr,
    pub dns6: Ipv6Addr,
}

/// Everything the guest's network is made of. `Default` is the C helper's fixed network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub net: Ipv4Net,
    /// The host as the guest sees it: gateway, and the host's loopback when `host_loopback`.
    pub host: Ipv4Addr,
    /// The first address DHCP leases (libslirp leases up to 16 from here upward).
    pub dhcp_start: Ipv4Addr,
    /// The DNS proxy's address, offered by DHCP.
    pub dns: Ipv4Addr,
    pub dns_search: Vec<String>,
    pub domain_name: Option<String>,
    pub hostname: Option<String>,
    /// `dnsproxy`: libslirp forwards DNS on `dns` to the host's resolver.
    pub dns_proxy: bool,
    /// `dhcp`: libslirp's DHCP server answers.
    pub dhcp: bool,
    /// `hostloopback`: the guest reaches the host's 127.0.0.1 through `host`.
    pub host_loopback: bool,
    /// The source address of the guest's outbound IPv4 connections.
    pub outbound: Option<Ipv4Addr>,
    /// The source address of the guest's outbound IPv6 connections.
    pub outbound6: Option<Ipv6Addr>,
    /// `Some` when `ipv6` is on.
    pub ipv6: Option<Ipv6Network>,
}

impl Default for Network {
    fn default() -> Network {
        let net = Ipv4Net {
            addr: Ipv4Addr::new(10, 0, 2, 0),
            len: 24,
        };
        Network {
            net,
            host: net.nth(2),
            dhcp_start: net.nth(15),
            dns: net.nth(3),
            dns_search: Vec::new(),
            domain_name: None,
            hostname: None,
            dns_proxy: true,
            dhcp: true,
            host_loopback: true,
            outbound: None,
            outbound6: None,
            ipv6: None,
        }
    }
}

/// libslirp's IPv6 defaults (`slirp_init`'s callers, QEMU and slirp4netns alike).
pub const DEFAULT_NET6: Ipv6Net = Ipv6Net {
    addr: Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
    len: 64,
};

/// Network settings that do not agree, or that the loaded libslirp cannot do. Exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkError {
    /// A value that does not parse as its setting's kind.
    Value(ValueError),
    /// An address outside its network (`default` when the user did not set it).
    Outside {
        setting: &'static str,
        addr: IpAddr,
        network: String,
        default: bool,
    },
    /// The network's own or its broadcast address.
    Reserved {
        setting: &'static str,
        addr: Ipv4Addr,
        what: &'static str,
    },
    /// Two settings on one address.
    Same {
        setting: &'static str,
        other: &'static str,
        addr: IpAddr,
    },
    /// An IPv6 setting while `ipv6` is off.
    NeedsIpv6 { setting: &'static str },
    /// A setting the loaded libslirp is too old for.
    NeedsLibslirp {
        setting: &'static str,
        needs: LibslirpVersion,
        loaded: LibslirpVersion,
    },
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkError::Value(e) => e.fmt(f),
            NetworkError::Outside {
                setting,
                addr,
                network,
                default,
            } => {
                let default = if *default {
                    " (its default); set it inside"
                } else {
                    ""
                };
                write!(f, "{setting}: '{addr}' is outside {network}{default}")
            }
            NetworkError::Reserved {
                setting,
                addr,
                what,
            } => {
                write!(
                    f,
                    "{setting}: '{addr}' is the {what} address of the network"
                )
            }
            NetworkError::Same {
                setting,
                other,
                addr,
            } => write!(
                f,
                "{setting}: '{addr}' is also {other}'s address; each needs its own"
            ),
            NetworkError::NeedsIpv6 { setting } => {
                write!(f, "{setting}: set while ipv6 is off")
            }
            NetworkError::NeedsLibslirp {
                setting,
                needs,
                loaded,
            } => write!(
                f,
                "{setting}: needs libslirp {needs} or newer (the loaded one is {loaded})"
            ),
        }
    }
}

impl std::error::Error for NetworkError {}

impl From<ValueError> for NetworkError {
    fn from(e: ValueError) -> NetworkError {
        NetworkError::Value(e)
    }
}

impl From<NetworkError> for ConfigError {
    fn from(e: NetworkError) -> ConfigError {
        ConfigError::Network(e)
    }
}

impl Network {
    /// Reads and checks every network setting.
    pub fn from_settings(settings: &Settings<'_>) -> Result<Network, ConfigError> {
        let mut n = Network::default();
        let get = |key| settings.get(key);

        if let Some((name, text)) = get("net")? {
            n.net = parse_net(name, text)?;
        }
        // host, dhcpstart and dns default to .2, .15 and .3 of whichever network it is.
        let addr = |key, nth: u32| -> Result<(&'static str, Ipv4Addr, bool), ConfigError> {
            Ok(match get(key)? {
                Some((name, text)) => (name, parse_ipv4(name, text)?, false),
                None => (key, n.net.nth(nth), true),
            })
        };
        let host = addr("host", 2)?;
        let dhcp_start = addr("dhcpstart", 15)?;
        let dns = addr("dns", 3)?;
        let mut seen: Vec<(&'static str, Ipv4Addr)> = Vec::new();
        for (name, a, default) in [host, dhcp_start, dns] {
            check_in_net(n.net, name, a, default)?;
            if let Some(&(other, _)) = seen.iter().find(|(_, b)| *b == a) {
                return Err(NetworkError::Same {
                    setting: name,
                    other,
                    addr: a.into(),
                }
                .into());
            }
            seen.push((name, a));
        }
        (n.host, n.dhcp_start, n.dns) = (host.1, dhcp_start.1, dns.1);

        if let Some((name, text)) = get("dnssearch")? {
            n.dns_search = parse_search(name, text)?;
        }
        if let Some((name, text)) = get("domainname")? {
            n.domain_name = Some(parse_domain(name, text, MAX_DOMAIN_NAME)?);
        }
        if let Some((name, text)) = get("hostname")? {
            n.hostname = Some(parse_domain(name, text, MAX_HOSTNAME)?);
        }
        let switch = |key, default| -> Result<bool, ConfigError> {
            match get(key)? {
                Some((name, text)) => {
                    Ok(value::parse_switch(name, text).map_err(NetworkError::from)?)
                }
                None => Ok(default),
            }
        };
        n.dns_proxy = switch("dnsproxy", true)?;
        n.dhcp = switch("dhcp", true)?;
        n.host_loopback = switch("hostloopback", true)?;
        if let Some((name, text)) = get("outbound")? {
            n.outbound = Some(parse_ipv4(name, text)?);
        }

        // Setting an IPv6 key asks for IPv6 (libvirt passes `--net6=…` alone); `ipv6=off`
        // with one is a contradiction.
        let v6_keys = ["net6", "host6", "dns6", "outbound6"];
        let mut any_v6 = false;
        for key in v6_keys {
            any_v6 |= get(key)?.is_some();
        }
        let ipv6 = switch("ipv6", any_v6)?;
        if !ipv6 {
            for key in v6_keys {
                if let Some((name, _)) = get(key)? {
                    return Err(NetworkError::NeedsIpv6 { setting: name }.into());
                }
            }
            return Ok(n);
        }
        let net6 = match get("net6")? {
            Some((name, text)) => parse_net6(name, text)?,
            None => DEFAULT_NET6,
        };
        let addr6 = |key, nth: u128| -> Result<(&'static str, Ipv6Addr, bool), ConfigError> {
            Ok(match get(key)? {
                Some((name, text)) => (name, parse_ipv6(name, text)?, false),
                None => (key, net6.nth(nth), true),
            })
        };
        let host6 = addr6("host6", 2)?;
        let dns6 = addr6("dns6", 3)?;
        for (name, a, default) in [host6, dns6] {
            if !net6.contains(a) || a == net6.addr {
                return Err(NetworkError::Outside {
                    setting: name,
                    addr: a.into(),
                    network: format!("net6 {net6}"),
                    default,
                }
                .into());
            }
        }
        if host6.1 == dns6.1 {
            return Err(NetworkError::Same {
                setting: dns6.0,
                other: host6.0,
                addr: dns6.1.into(),
            }
            .into());
        }
        if let Some((name, text)) = get("outbound6")? {
            n.outbound6 = Some(parse_ipv6(name, text)?);
        }
        n.ipv6 = Some(Ipv6Network {
            net6,
            host6: host6.1,
            dns6: dns6.1,
        });
        Ok(n)
    }

    /// Refuses what `loaded` cannot do, naming the first setting that needs more.
    pub fn check_libslirp(&self, loaded: LibslirpVersion) -> Result<(), NetworkError> {
        let needs = [
            (
                self.outbound.is_some(),
                "outbound",
                LibslirpVersion(4, 2, 0),
            ),
            (
                self.outbound6.is_some(),
                "outbound6",
                LibslirpVersion(4, 2, 0),
            ),
            (!self.dns_proxy, "dnsproxy", LibslirpVersion(4, 3, 0)),
            (!self.dhcp, "dhcp", LibslirpVersion(4, 7, 0)),
        ];
        for (used, key, version) in needs {
            if used && loaded < version {
                return Err(NetworkError::NeedsLibslirp {
                    setting: key,
                    needs: version,
                    loaded,
                });
            }
        }
        Ok(())
    }
}

fn check_in_net(
    net: Ipv4Net,
    setting: &'static str,
    addr: Ipv4Addr,
    default: bool,
) -> Result<(), NetworkError> {
    if !net.contains(addr) {
        return Err(NetworkError::Outside {
            setting,
            addr: addr.into(),
            network: format!("net {net}"),
            default,
        });
    }
    for (reserved, what) in [(net.addr, "network"), (net.broadcast(), "broadcast")] {
        if addr == reserved {
            return Err(NetworkError::Reserved {
                setting,
                addr,
                what,
            });
        }
    }
    Ok(())
}

fn parse_ipv4(setting: &'static str, text: &str) -> Result<Ipv4Addr, NetworkError> {
    // std's parser is as strict as inet_pton: four decimal parts, no leading zeros.
    Ok(text
        .parse()
        .map_err(|_| ValueError::new(setting, text, Expected::Ipv4Addr))?)
}

fn parse_ipv6(setting: &'static str, text: &str) -> Result<Ipv6Addr, NetworkError> {
    Ok(text
        .parse()
        .map_err(|_| ValueError::new(setting, text, Expected::Ipv6Addr))?)
}

/// `addr/len`, `len` in `range`, split at the last `/`.
fn split_prefix(text: &str, range: &std::ops::RangeInclusive<u8>) -> Option<(String, u8)> {
    let (addr, len) = text.rsplit_once('/')?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    range.contains(&len).then(|| (addr.to_owned(), len))
}

/// `addr/len` with `len` in `range`. Bits after the prefix length are cleared, as QEMU's own
/// `net=`/`ipv6-net=` do: libvirt writes a domain's `<ip address='10.0.2.15' prefix='24'/>`
/// as `--net=10.0.2.15/24`. `net` builds the network from an address and a length, `base`
/// gives a network's address with its host bits cleared.
fn parse_prefix<A, N>(
    setting: &'static str,
    text: &str,
    range: &std::ops::RangeInclusive<u8>,
    expected: Expected,
    net: impl Fn(A, u8) -> N,
    base: impl Fn(&N) -> A,
) -> Result<N, NetworkError>
where
    A: std::str::FromStr + PartialEq + Copy,
    N: fmt::Display,
{
    let bad = || ValueError::new(setting, text, expected);
    let (addr, len) = split_prefix(text, range).ok_or_else(bad)?;
    let addr: A = addr.parse().map_err(|_| bad())?;
    Ok(net(base(&net(addr, len)), len))
}

fn parse_net(setting: &'static str, text: &str) -> Result<Ipv4Net, NetworkError> {
    let expected = Expected::Ipv4Network {
        min: *NET_PREFIX.start(),
        max: *NET_PREFIX.end(),
    };
    parse_prefix(
        setting,
        text,
        &NET_PREFIX,
        expected,
        |addr, len| Ipv4Net { addr, len },
        |n| Ipv4Addr::from(u32::from(n.addr) & u32::from(n.mask())),
    )
}

fn parse_net6(setting: &'static str, text: &str) -> Result<Ipv6Net, NetworkError> {
    let expected = Expected::Ipv6Network {
        min: *NET6_PREFIX.start(),
        max: *NET6_PREFIX.end(),
    };
    parse_prefix(
        setting,
        text,
        &NET6_PREFIX,
        expected,
        |addr, len| Ipv6Net { addr, len },
        |n| Ipv6Addr::from(u128::from(n.addr) & n.mask()),
    )
}

/// A DNS name: dot-separated labels of 1..=63 letters, digits and `-`, not starting or ending
/// with `-`; at most `max` characters. One trailing dot is allowed.
fn is_domain_name(text: &str, max: usize) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && text.len() <= max
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn parse_domain(setting: &'static str, text: &str, max: usize) -> Result<String, NetworkError> {
    if is_domain_name(text, max) {
        Ok(text.to_owned())
    } else {
        Err(ValueError::new(setting, text, Expected::DomainName { max }).into())
    }
}

/// `a.example;b.example`: `;` separates, as in `hostfwd` (bhyve splits `-s` on commas).
fn parse_search(setting: &'static str, text: &str) -> Result<Vec<String>, NetworkError> {
    let names: Vec<&str> = text.split(';').collect();
    if names.len() > MAX_SEARCH_DOMAINS || !names.iter().all(|n| is_domain_name(n, MAX_DOMAIN_NAME))
    {
        return Err(ValueError::new(
            setting,
            text,
            Expected::DomainNames {
                max: MAX_SEARCH_DOMAINS,
            },
        )
        .into());
    }
    Ok(names.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BhyveConfig, Nvlist, Value};

    fn network(pairs: &[(&str, &str)]) -> Result<Network, String> {
        let mut nvl = Nvlist::new();
        for (k, v) in pairs {
            nvl.push(*k, Value::String(v.as_bytes().to_vec()));
        }
        let config = BhyveConfig::from_nvlist(&nvl).map_err(|e| e.to_string())?;
        Network::from_settings(&Settings::new(&[], &config)).map_err(|e| e.to_string())
    }

    #[test]
    fn no_keys_is_the_c_helpers_network() {
        let n = network(&[]).unwrap();
        assert_eq!(n, Network::default());
        assert_eq!(n.net.to_string(), "10.0.2.0/24");
        assert_eq!(n.net.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            (n.host, n.dhcp_start, n.dns),
            (
                Ipv4Addr::new(10, 0, 2, 2),
                Ipv4Addr::new(10, 0, 2, 15),
                Ipv4Addr::new(10, 0, 2, 3)
            )
        );
        assert!(n.dns_proxy && n.dhcp && n.host_loopback && n.ipv6.is_none());
    }

    #[test]
    fn a_custom_network_moves_the_defaults_with_it() {
        let n = network(&[("net", "192.168.77.0/24")]).unwrap();
        assert_eq!(n.host, Ipv4Addr::new(192, 168, 77, 2));
        assert_eq!(n.dhcp_start, Ipv4Addr::new(192, 168, 77, 15));
        assert_eq!(n.dns, Ipv4Addr::new(192, 168, 77, 3));
        let n = network(&[
            ("net", "172.16.0.0/12"),
            ("host", "172.16.0.1"),
            ("dhcpstart", "172.20.0.100"),
            ("dns", "172.31.255.254"),
        ])
        .unwrap();
        assert_eq!(n.net.mask(), Ipv4Addr::new(255, 240, 0, 0));
        assert_eq!(n.dns, Ipv4Addr::new(172, 31, 255, 254));
    }

    /// libvirt passes a domain's `<ip address='10.0.5.15' prefix='24'/>` as
    /// `--net=10.0.5.15/24`; QEMU's `net=` clears the host bits, and so do we.
    #[test]
    fn host_bits_are_cleared_as_qemu_does() {
        let n = network(&[("net", "10.0.5.15/24")]).unwrap();
        assert_eq!(n.net.to_string(), "10.0.5.0/24");
        assert_eq!(n.host, Ipv4Addr::new(10, 0, 5, 2));
        let n = network(&[("net6", "fd00::5054:ff:fe12:3456/64")]).unwrap();
        let v6 = n.ipv6.expect("net6 turns ipv6 on");
        assert_eq!(v6.net6.to_string(), "fd00::/64");
        assert_eq!(v6.host6, "fd00::2".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        for (pairs, want) in [
            (
                &[("net", "10.0.2.0")][..],
                "net: '10.0.2.0' is not an IPv4 network ADDR/LEN with LEN from 8 to 30",
            ),
            (
                &[("net", "10.0.2.0/31")],
                "net: '10.0.2.0/31' is not an IPv4 network ADDR/LEN with LEN from 8 to 30",
            ),
            (
                &[("net", "10.0.2.0/+24")],
                "net: '10.0.2.0/+24' is not an IPv4 network ADDR/LEN with LEN from 8 to 30",
            ),
            (
                &[("host", "10.0.3.2")],
                "host: '10.0.3.2' is outside net 10.0.2.0/24",
            ),
            (
                &[("net", "10.0.2.0/29")],
                "dhcpstart: '10.0.2.15' is outside net 10.0.2.0/29 (its default); set it inside",
            ),
            (
                &[("dns", "10.0.2.255")],
                "dns: '10.0.2.255' is the broadcast address of the network",
            ),
            (
                &[("host", "10.0.2.0")],
                "host: '10.0.2.0' is the network address of the network",
            ),
            (
                &[("dns", "10.0.2.2")],
                "dns: '10.0.2.2' is also host's address; each needs its own",
            ),
            (&[("dns", "010.0.2.3")], "dns: '010.0.2.3' is not an IPv4 address"),
            (
                &[("dhcp", "maybe")],
                "dhcp: 'maybe' is not a boolean (use on/off, true/false, yes/no or 1/0)",
            ),
            (
                &[("dnssearch", "a.example;;b.example")],
                "dnssearch: 'a.example;;b.example' is not a list of domain names separated by ';' (at most 6)",
            ),
            (
                &[("hostname", "a_b")],
                "hostname: 'a_b' is not a domain name (letters, digits and '-' in dot-separated labels, at most 32 characters)",
            ),
            (
                &[("ipv6", "off"), ("net6", "fec0::/64")],
                "net6: set while ipv6 is off",
            ),
            (
                &[("ipv6", "on"), ("net6", "fec0::/127")],
                "net6: 'fec0::/127' is not an IPv6 prefix ADDR/LEN with LEN from 1 to 126",
            ),
            (
                &[("ipv6", "on"), ("host6", "fd00::2")],
                "host6: 'fd00::2' is outside net6 fec0::/64",
            ),
            (
                &[("ipv6", "on"), ("dns6", "fec0::2")],
                "dns6: 'fec0::2' is also host6's address; each needs its own",
            ),
            (
                &[("ipv6", "on"), ("outbound6", "1.2.3.4")],
                "outbound6: '1.2.3.4' is not an IPv6 address",
            ),
        ] {
            assert_eq!(network(pairs).unwrap_err(), want, "{pairs:?}");
        }
    }

    #[test]
    fn names_and_switches() {
        let n = network(&[
            ("dnssearch", "a.example;b.example."),
            ("domainname", "corp.example"),
            ("hostname", "vm-1"),
            ("dnsproxy", "off"),
            ("dhcp", "no"),
            ("hostloopback", "0"),
            ("outbound", "127.0.0.2"),
        ])
        .unwrap();
        assert_eq!(n.dns_search, ["a.example", "b.example."]);
        assert_eq!(n.domain_name.as_deref(), Some("corp.example"));
        assert_eq!(n.hostname.as_deref(), Some("vm-1"));
        assert!(!n.dns_proxy && !n.dhcp && !n.host_loopback);
        assert_eq!(n.outbound, Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert!(network(&[("hostname", &"a".repeat(33))]).is_err());
        assert!(network(&[("dnssearch", "a;b;c;d;e;f;g")]).is_err());
        assert!(network(&[("dnssearch", "a;b;c;d;e;f")]).is_ok());
    }

    #[test]
    fn an_ipv6_key_turns_ipv6_on() {
        let v6 = network(&[("net6", "fd00::/64")]).unwrap().ipv6.unwrap();
        assert_eq!(v6.host6, "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert!(network(&[("dns6", "fec0::53")]).unwrap().ipv6.is_some());
        assert!(network(&[]).unwrap().ipv6.is_none());
    }

    #[test]
    fn ipv6_defaults_and_custom_prefix() {
        let v6 = network(&[("ipv6", "on")]).unwrap().ipv6.unwrap();
        assert_eq!(v6.net6, DEFAULT_NET6);
        assert_eq!(v6.host6, "fec0::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.dns6, "fec0::3".parse::<Ipv6Addr>().unwrap());
        let v6 = network(&[("ipv6", "yes"), ("net6", "fd00:1:2:3::/64")])
            .unwrap()
            .ipv6
            .unwrap();
        assert_eq!(v6.host6, "fd00:1:2:3::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.dns6, "fd00:1:2:3::3".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn libslirp_versions() {
        assert_eq!(
            LibslirpVersion::parse("4.7.0"),
            Some(LibslirpVersion(4, 7, 0))
        );
        assert_eq!(
            LibslirpVersion::parse("4.9.1-rc2"),
            Some(LibslirpVersion(4, 9, 1))
        );
        assert_eq!(
            LibslirpVersion::parse("4.2"),
            Some(LibslirpVersion(4, 2, 0))
        );
        assert_eq!(LibslirpVersion::parse("unknown"), None);
        for (v, cfg) in [
            ((4, 1), 1),
            ((4, 2), 2),
            ((4, 3), 3),
            ((4, 6), 3),
            ((4, 7), 4),
            ((4, 9), 4),
        ] {
            assert_eq!(LibslirpVersion(4, v.1, 0).config_version(), cfg, "{v:?}");
        }
        let n = network(&[("dhcp", "off"), ("outbound", "127.0.0.1")]).unwrap();
        let e = n.check_libslirp(LibslirpVersion(4, 1, 0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "outbound: needs libslirp 4.2.0 or newer (the loaded one is 4.1.0)"
        );
        let e = n.check_libslirp(LibslirpVersion(4, 6, 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dhcp: needs libslirp 4.7.0 or newer (the loaded one is 4.6.1)"
        );
        assert!(n.check_libslirp(LibslirpVersion(4, 7, 0)).is_ok());
    }
}
