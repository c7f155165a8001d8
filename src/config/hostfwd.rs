//! The `hostfwd` grammar of the C helper: rules separated by `;`, each
//! `proto:haddr:hport-gaddr:gport`, and IPv6 addresses in brackets (issue 11):
//! `tcp:[::1]:8080-[fec0::5054:ff:fe12:3456]:80`.
//!
//! INTERFACE CONTRACT: `parse_rules(&str) -> Result<Vec<HostFwdRule>, HostFwdError>`; the
//! error names the key, the rule's position and text, and a typed [`RuleProblem`].
//!
//! Owns: turning bhyve's `hostfwd` string into rules. Never installs them (that is libslirp's
//! `slirp_add_hostxfwd`). Follows `parse_hostfwd_rule` in `usr.sbin/bhyve/slirp/slirp-helper.c`
//! but is stricter where the C code silently guesses: the protocol must be `tcp` or `udp` (C
//! takes anything else, even nothing, as TCP) and ports must be plain decimal (C uses `atoi`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One forwarding rule: connections to `host_addr:host_port` on the host reach
/// `guest_addr:guest_port` in the guest. Both addresses are of one family.
///
/// An unspecified guest address is resolved by libslirp: IPv4 `0.0.0.0` is the first DHCP
/// address (`vdhcp_start`, [`HostFwdRule::with_guest_default`] spells it out); IPv6 `::` is
/// the address the guest itself uses, learnt from its neighbour discovery when a connection
/// arrives (libslirp >= 4.5, `soassign_guest_addr_if_needed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwdRule {
    pub proto: Proto,
    pub host_addr: IpAddr,
    pub host_port: u16,
    pub guest_addr: IpAddr,
    pub guest_port: u16,
}

impl HostFwdRule {
    /// What every rule must satisfy, however it came (the `hostfwd` key or the control
    /// socket's `add_hostfwd`): one family, and no UDP rule to an empty IPv6 guest address.
    pub fn check(&self) -> Result<(), RuleProblem> {
        if self.host_addr.is_ipv4() != self.guest_addr.is_ipv4() {
            return Err(RuleProblem::MixedFamilies);
        }
        if self.proto == Proto::Udp && self.guest_addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            return Err(RuleProblem::Udp6EmptyGuest);
        }
        Ok(())
    }

    /// The rule with an empty IPv4 guest address replaced by `dhcp_start`, as libslirp does.
    pub fn with_guest_default(mut self, dhcp_start: Ipv4Addr) -> HostFwdRule {
        if self.guest_addr == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
            self.guest_addr = dhcp_start.into();
        }
        self
    }
}

/// An address as the grammar writes it: IPv6 in brackets.
fn write_addr(f: &mut fmt::Formatter<'_>, addr: IpAddr) -> fmt::Result {
    match addr {
        IpAddr::V4(a) => write!(f, "{a}"),
        IpAddr::V6(a) => write!(f, "[{a}]"),
    }
}

/// The rule in the bhyve grammar, addresses spelled out.
impl fmt::Display for HostFwdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{proto}:")?;
        write_addr(f, self.host_addr)?;
        write!(f, ":{}-", self.host_port)?;
        write_addr(f, self.guest_addr)?;
        write!(f, ":{}", self.guest_port)
    }
}

/// A rule the helper refuses (the C helper exits 1 on any of these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFwdError {
    /// The offending rule's text, as written between the `;`.
    pub rule: String,
    /// 1-based position of the rule in the `hostfwd` value.
    pub index: usize,
    /// What is wrong with it.
    pub reason: RuleProblem,
}

/// Which side of a rule: `haddr:hport` before the `-`, `gaddr:gport` after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Host,
    Guest,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Host => "host",
            Side::Guest => "guest",
        })
    }
}

/// What is wrong with one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleProblem {
    /// Nothing between two `;` (or an empty value, or a trailing `;`).
    Empty,
    /// No `:` after the protocol.
    NoProtocol,
    /// A protocol other than `tcp` or `udp`.
    Protocol(String),
    /// No `-` between the host and guest parts.
    NoGuestPart,
    /// A part without `:` between address and port.
    NoPort { side: Side, part: String },
    /// An address that is not a dotted-quad IPv4 address.
    Address { side: Side, addr: String },
    /// A bracketed address that is not an IPv6 address, or a `[` without its `]`.
    Address6 { side: Side, addr: String },
    /// An IPv4 address on one side and an IPv6 address on the other.
    MixedFamilies,
    /// A port that is not plain decimal 0..=65535.
    Port { side: Side, port: String },
    /// A UDP rule with an empty IPv6 guest address: libslirp 4.7.0 dereferences a null mbuf
    /// (`sorecvfrom` -> `icmp6_send_error(so->so_m, ...)`, socket.c) when a host datagram
    /// arrives before the guest's NDP gave it an address, and the helper would crash.
    Udp6EmptyGuest,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleProblem::Empty => f.write_str("empty rule (stray ';'?)"),
            RuleProblem::NoProtocol => f.write_str("missing ':' after the protocol"),
            RuleProblem::Protocol(p) => {
                write!(f, "unsupported protocol '{}'", p.escape_debug())
            }
            RuleProblem::NoGuestPart => f.write_str("missing '-' between the host and guest parts"),
            RuleProblem::NoPort { side, part } => write!(
                f,
                "{side} part '{}' lacks ':' before the port",
                part.escape_debug()
            ),
            RuleProblem::Address { side, addr } => write!(
                f,
                "{side} address '{}' is not a dotted-quad IPv4 address",
                addr.escape_debug()
            ),
            RuleProblem::Address6 { side, addr } => write!(
                f,
                "{side} address '{}' is not an IPv6 address in brackets",
                addr.escape_debug()
            ),
            RuleProblem::MixedFamilies => f.write_str(
                "host and guest addresses are of different families (write both as IPv4 or \
                 both in brackets)",
            ),
            RuleProblem::Udp6EmptyGuest => f.write_str(
                "a UDP rule needs the guest's IPv6 address (libslirp crashes on a datagram for \
                 an empty one that arrives before the guest's first NDP message)",
            ),
            RuleProblem::Port { side, port } => write!(
                f,
                "{side} port '{}' is not a number from 0 to 65535",
                port.escape_debug()
            ),
        }
    }
}

/// Named after the key: `hostfwd: rule 2 'icmp::1-:1': unsupported protocol 'icmp' (…)`.
impl fmt::Display for HostFwdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hostfwd: rule {} '{}': {} (expected proto:haddr:hport-gaddr:gport, proto tcp or udp, \
             IPv6 addresses in [])",
            self.index,
            self.rule.escape_debug(),
            self.reason
        )
    }
}

impl std::error::Error for HostFwdError {}

/// Parses a whole `hostfwd` value: one or more rules separated by `;`. An empty rule (an empty
/// value, `;;`, or a trailing `;`) is an error, as in the C helper (`strsep` yields it).
pub fn parse_rules(value: &str) -> Result<Vec<HostFwdRule>, HostFwdError> {
    value
        .split(';')
        .enumerate()
        .map(|(i, rule)| {
            parse_rule(rule).map_err(|reason| HostFwdError {
                rule: rule.to_owned(),
                index: i + 1,
                reason,
            })
        })
        .collect()
}

/// One rule: `proto` up to the first `:`, then the host part up to the first `-`, then the guest
/// part; each part is `addr:port` split at its first `:`.
fn parse_rule(rule: &str) -> Result<HostFwdRule, RuleProblem> {
    if rule.is_empty() {
        return Err(RuleProblem::Empty);
    }
    let (proto, rest) = rule.split_once(':').ok_or(RuleProblem::NoProtocol)?;
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => return Err(RuleProblem::Protocol(other.to_owned())),
    };
    let (host, guest) = rest.split_once('-').ok_or(RuleProblem::NoGuestPart)?;
    let (host_addr, host_port) = parse_endpoint(host, Side::Host)?;
    let (guest_addr, guest_port) = parse_endpoint(guest, Side::Guest)?;
    let rule = HostFwdRule {
        proto,
        host_addr,
        host_port,
        guest_addr,
        guest_port,
    };
    rule.check()?;
    Ok(rule)
}

/// `addr:port` or `[addr6]:port`; an empty address is the unspecified one of its family
/// (`:port` IPv4, `[]:port` IPv6), an empty port 0.
fn parse_endpoint(part: &str, side: Side) -> Result<(IpAddr, u16), RuleProblem> {
    if let Some(rest) = part.strip_prefix('[') {
        let bad = || RuleProblem::Address6 {
            side,
            addr: part.to_owned(),
        };
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = after.strip_prefix(':').ok_or_else(|| RuleProblem::NoPort {
            side,
            part: part.to_owned(),
        })?;
        let addr = if addr.is_empty() {
            Ipv6Addr::UNSPECIFIED
        } else {
            // Zone ids (`%eth0`) and embedded IPv4 forms are refused or taken as std reads
            // them: std follows RFC 4291's text forms without zones.
            addr.parse().map_err(|_| RuleProblem::Address6 {
                side,
                addr: addr.to_owned(),
            })?
        };
        return Ok((IpAddr::V6(addr), parse_port(port, side)?));
    }
    let (addr, port) = part.split_once(':').ok_or_else(|| RuleProblem::NoPort {
        side,
        part: part.to_owned(),
    })?;
    let addr = if addr.is_empty() {
        Ipv4Addr::UNSPECIFIED
    } else {
        // std's parser is as strict as inet_pton(AF_INET): four decimal parts 0..=255, no
        // signs, no leading zeros, nothing else.
        addr.parse().map_err(|_| RuleProblem::Address {
            side,
            addr: addr.to_owned(),
        })?
    };
    Ok((IpAddr::V4(addr), parse_port(port, side)?))
}

fn parse_port(port: &str, side: Side) -> Result<u16, RuleProblem> {
    if port.is_empty() {
        return Ok(0);
    }
    // Digits only: str::parse would also take a leading '+'.
    let bad = || RuleProblem::Port {
        side,
        port: port.to_owned(),
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    port.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(proto: Proto, h: [u8; 4], hp: u16, g: [u8; 4], gp: u16) -> HostFwdRule {
        HostFwdRule {
            proto,
            host_addr: Ipv4Addr::from(h).into(),
            host_port: hp,
            guest_addr: Ipv4Addr::from(g).into(),
            guest_port: gp,
        }
    }

    #[test]
    fn ipv6_rules_in_brackets() {
        let r = parse_rules("tcp:[::1]:8080-[fec0::5054:ff:fe12:3456]:80").unwrap()[0];
        assert_eq!(r.host_addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            r.guest_addr,
            "fec0::5054:ff:fe12:3456".parse::<IpAddr>().unwrap()
        );
        assert_eq!((r.host_port, r.guest_port), (8080, 80));
        assert_eq!(r.to_string(), "tcp:[::1]:8080-[fec0::5054:ff:fe12:3456]:80");
        // Empty brackets: every host interface, and the guest's own address.
        let r = parse_rules("tcp:[]:5353-[]:53").unwrap()[0];
        assert_eq!(r.host_addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(r.guest_addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(r.to_string(), "tcp:[::]:5353-[::]:53");
        // IPv4 rules beside IPv6 ones, unchanged.
        let rules = parse_rules("tcp::2222-:22;tcp:[::]:2222-[]:22").unwrap();
        assert_eq!(rules[0], rule(Proto::Tcp, [0; 4], 2222, [0; 4], 22));
        assert!(rules[1].host_addr.is_ipv6());
    }

    #[test]
    fn ipv6_rule_errors() {
        for (bad, want) in [
            ("tcp:[::1:8080-:80", "host address '[::1:8080' is not an IPv6 address in brackets"),
            ("tcp:[::1]8080-[::2]:80", "host part '[::1]8080' lacks ':' before the port"),
            ("tcp:[1.2.3.4]:1-[::2]:2", "host address '1.2.3.4' is not an IPv6 address in brackets"),
            ("tcp:[fe80::1%eth0]:1-[::2]:2", "host address 'fe80::1%eth0' is not an IPv6 address in brackets"),
            ("tcp:[::1]:1-10.0.2.15:2", "host and guest addresses are of different families (write both as IPv4 or both in brackets)"),
            ("tcp::1-[::2]:2", "host and guest addresses are of different families (write both as IPv4 or both in brackets)"),
            ("tcp:[::1]:1-[::2]:99999", "guest port '99999' is not a number from 0 to 65535"),
        ] {
            assert_eq!(reason(bad).reason.to_string(), want, "{bad}");
        }
    }

    #[test]
    fn the_empty_guest_address_is_dhcp_start() {
        let r = parse_rules("tcp::2222-:22").unwrap()[0];
        assert_eq!(r.guest_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let r = r.with_guest_default(Ipv4Addr::new(192, 168, 77, 15));
        assert_eq!(r.to_string(), "tcp:0.0.0.0:2222-192.168.77.15:22");
        let v6 = parse_rules("tcp:[]:1-[]:2").unwrap()[0];
        assert_eq!(v6.with_guest_default(Ipv4Addr::LOCALHOST), v6);
    }

    #[test]
    fn typical_rules() {
        assert_eq!(
            parse_rules("tcp::2222-:22").unwrap(),
            vec![rule(Proto::Tcp, [0; 4], 2222, [0; 4], 22)]
        );
        assert_eq!(
            parse_rules("tcp:127.0.0.1:8080-:80;udp::5353-10.0.2.15:53").unwrap(),
            vec![
                rule(Proto::Tcp, [127, 0, 0, 1], 8080, [0; 4], 80),
                rule(Proto::Udp, [0; 4], 5353, [10, 0, 2, 15], 53),
            ]
        );
        assert_eq!(
            parse_rules("udp:1.2.3.4:-10.0.2.99:").unwrap(),
            vec![rule(Proto::Udp, [1, 2, 3, 4], 0, [10, 0, 2, 99], 0)]
        );
        assert_eq!(parse_rules("tcp::65535-:0").unwrap()[0].host_port, 65535);
        assert_eq!(parse_rules("tcp::00022-:22").unwrap()[0].host_port, 22);
    }

    fn reason(value: &str) -> HostFwdError {
        parse_rules(value).expect_err(value)
    }

    #[test]
    fn udp_rules_need_the_guests_ipv6_address() {
        let e = parse_rules("udp:[::1]:5353-[]:53").unwrap_err();
        assert_eq!(e.reason, RuleProblem::Udp6EmptyGuest);
        assert!(e.to_string().contains("guest's IPv6 address"), "{e}");
        assert!(parse_rules("udp:[::1]:5353-[fec0::15]:53").is_ok());
        assert!(parse_rules("tcp:[::1]:8080-[]:80").is_ok());
        assert!(parse_rules("udp:127.0.0.1:5353-:53").is_ok());
    }

    #[test]
    fn empty_rules_are_errors() {
        assert_eq!(reason("").index, 1);
        let e = reason("tcp::1-:2;");
        assert_eq!((e.index, e.rule.as_str()), (2, ""));
        assert!(e.to_string().contains("empty rule"));
        assert_eq!(reason("tcp::1-:2;;udp::3-:4").index, 2);
    }

    #[test]
    fn protocol_must_be_tcp_or_udp() {
        for bad in [
            ":1-:2",
            "TCP::1-:2",
            "sctp::1-:2",
            "tcp6::1-:2",
            " tcp::1-:2",
        ] {
            let e = reason(bad);
            assert!(e.reason.to_string().contains("protocol"), "{bad}: {e}");
            assert_eq!(e.rule, bad);
        }
        assert!(reason("tcp").reason.to_string().contains("':'"));
    }

    #[test]
    fn structure_errors() {
        assert!(reason("tcp::2222").reason.to_string().contains("'-'"));
        assert!(reason("tcp:2222-:22")
            .reason
            .to_string()
            .contains("host part"));
        assert!(reason("tcp::2222-22")
            .reason
            .to_string()
            .contains("guest part"));
        assert!(reason("tcp::1-:2:3")
            .reason
            .to_string()
            .contains("guest port"));
        // The host part ends at the first '-'.
        assert!(reason("tcp::1-2-:3")
            .reason
            .to_string()
            .contains("guest address '2-'"));
        // No IPv6: "::1" splits at its first ':' and leaves junk in the port.
        assert!(reason("tcp:::1:1-:2")
            .reason
            .to_string()
            .contains("host port"));
    }

    #[test]
    fn addresses_are_strict_ipv4() {
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1..2.3",
            "+1.2.3.4",
            "01.2.3.4",
            "localhost",
            "1.2.3.4 ",
            "0x7f.0.0.1",
        ] {
            let host = format!("tcp:{bad}:1-:2");
            assert!(
                reason(&host).reason.to_string().contains("host address"),
                "{host}"
            );
            let guest = format!("tcp::1-{bad}:2");
            assert!(
                reason(&guest).reason.to_string().contains("guest address"),
                "{guest}"
            );
        }
    }

    #[test]
    fn ports_are_plain_decimal() {
        for bad in [
            "+22",
            "-1",
            "65536",
            "99999999999999999999",
            "2a",
            " 22",
            "0x16",
        ] {
            let value = format!("tcp::{bad}-:22");
            // "-1" splits at its '-' instead: still an error, just a different one.
            assert!(parse_rules(&value).is_err(), "{value}");
            let value = format!("tcp::22-:{bad}");
            assert!(
                reason(&value).reason.to_string().contains("guest port"),
                "{value}"
            );
        }
    }

    #[test]
    fn display_names_rule_and_problem() {
        let msg = reason("tcp::2222-:22;icmp::1-:1").to_string();
        assert_eq!(
            msg,
            "hostfwd: rule 2 'icmp::1-:1': unsupported protocol 'icmp' \
             (expected proto:haddr:hport-gaddr:gport, proto tcp or udp, IPv6 addresses in [])"
        );
    }
}
