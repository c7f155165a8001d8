//! The `hostfwd` grammar of the C helper: rules separated by `;`, each
//! `proto:haddr:hport-gaddr:gport`.
//!
//! INTERFACE CONTRACT: `parse_rules(&str) -> Result<Vec<HostFwdRule>, HostFwdError>`.

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One forwarding rule: connections to `host_addr:host_port` on the host reach
/// `guest_addr:guest_port` in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwdRule {
    pub proto: Proto,
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_addr: Ipv4Addr,
    pub guest_port: u16,
}
