//! Checked, zero-copy views of the packet headers the helper reads and writes: Ethernet,
//! IPv4, IPv6 (with its extension headers), TCP, UDP, and the Internet checksum.
//!
//! Owns: every byte offset of every header. A view is made by a checked constructor
//! (`parse`) that validates the lengths once (the buffer holds the header, the header's own
//! length fields are sane and within the buffer); after that its accessors read named fields
//! without further checks that could fail. Mutable views (`…Mut`) write the fields that
//! reassembly and coalescing change. Must never: allocate, copy a packet, or panic on any
//! input; nor import anything else of this crate (arrows go down: `reasm` and `coalesce`
//! build on `wire`, never the reverse).
//!
//! What a view does not check is said on its constructor: IPv4's header checksum (libslirp
//! checks it, and the callers decide what a bad one means) and anything of the layers above.
//! Every accessor is `#[inline]`: this runs for every guest frame.
//!
//! Ahead of its users on purpose: the IPv6 views (header, extension walk, fragment header),
//! `UdpHeader` and a few accessors are used today only by their tests and the `wire` fuzz
//! target. Issue #10 asked for them here so that the IPv6 work (#11: reassembly and
//! coalescing of IPv6) builds on checked views instead of offsets.

pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use ethernet::EthernetFrame;
pub use ipv4::{Ipv4Header, Ipv4HeaderMut, Ipv4Repr};
pub use ipv6::{
    Ipv6Extension, Ipv6Extensions, Ipv6FragmentHeader, Ipv6FragmentRepr, Ipv6Header, Ipv6HeaderMut,
    UpperLayer,
};
pub use tcp::{TcpHeader, TcpHeaderMut};
pub use udp::UdpHeader;

use std::fmt;

/// IP protocol numbers (IPv4 protocol, IPv6 next header; IANA "Assigned Internet Protocol
/// Numbers").
pub mod protocol {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6_ROUTING: u8 = 43;
    pub const IPV6_FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AUTHENTICATION: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NO_NEXT: u8 = 59;
    pub const IPV6_DESTINATION: u8 = 60;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
}

/// The header a [`WireError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Ethernet,
    Ipv4,
    Ipv6,
    /// An IPv6 extension header other than the fragment header.
    Ipv6Extension,
    Ipv6Fragment,
    Tcp,
    Udp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "Ethernet",
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Ipv6Extension => "IPv6 extension",
            Layer::Ipv6Fragment => "IPv6 fragment",
            Layer::Tcp => "TCP",
            Layer::Udp => "UDP",
        })
    }
}

/// Why bytes are not a header of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends before the header (or the part of it its length field claims) does.
    Truncated {
        layer: Layer,
        needed: usize,
        got: usize,
    },
    /// The IP version nibble is not the one of the header asked for.
    BadVersion { layer: Layer, version: u8 },
    /// A header-length field (IPv4 IHL, TCP data offset) below the fixed header's size.
    BadHeaderLen { layer: Layer, len: usize },
    /// A length field (IPv4 total length, UDP length) shorter than the header it covers.
    LengthBelowHeader {
        layer: Layer,
        len: usize,
        header: usize,
    },
    /// A length field claims more bytes than the buffer holds.
    LengthBeyondBuffer {
        layer: Layer,
        len: usize,
        available: usize,
    },
    /// More IPv6 extension headers than [`ipv6::MAX_EXTENSION_HEADERS`].
    TooManyExtensionHeaders { limit: usize },
    /// An IPv6 hop-by-hop options header anywhere but first (RFC 8200 4.1), at this offset
    /// into the IPv6 payload.
    HopByHopNotFirst { offset: usize },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::Truncated { layer, needed, got } => {
                write!(f, "{layer} header truncated: {got} bytes, needs {needed}")
            }
            WireError::BadVersion { layer, version } => {
                write!(f, "{layer} header with IP version {version}")
            }
            WireError::BadHeaderLen { layer, len } => {
                write!(
                    f,
                    "{layer} header length field says {len} bytes, below the minimum"
                )
            }
            WireError::LengthBelowHeader { layer, len, header } => {
                write!(
                    f,
                    "{layer} length field {len} is below its {header}-byte header"
                )
            }
            WireError::LengthBeyondBuffer {
                layer,
                len,
                available,
            } => write!(
                f,
                "{layer} length field {len} is beyond the {available} bytes present"
            ),
            WireError::TooManyExtensionHeaders { limit } => {
                write!(f, "more than {limit} IPv6 extension headers")
            }
            WireError::HopByHopNotFirst { offset } => write!(
                f,
                "IPv6 hop-by-hop options header at payload offset {offset}, not first"
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// `Truncated` unless `bytes` holds `needed` bytes.
#[inline]
fn need(layer: Layer, bytes: &[u8], needed: usize) -> Result<(), WireError> {
    if bytes.len() < needed {
        return Err(WireError::Truncated {
            layer,
            needed,
            got: bytes.len(),
        });
    }
    Ok(())
}

/// The big-endian 16-bit field at `at` (the caller's view checked the length).
#[inline]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[inline]
fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[inline]
fn set_be16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// The `N` bytes at `at` (the caller's view checked the length).
#[inline]
fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}
