//! UDP headers (RFC 768).

use super::{be16, need, Layer, WireError};

pub const HEADER_LEN: usize = 8;

/// The DHCP (BOOTP) server port: libslirp answers DHCP itself.
pub const BOOTP_SERVER_PORT: u16 = 67;
/// The DHCPv6 server port.
pub const DHCPV6_SERVER_PORT: u16 = 547;

/// The destination port of the datagram at the start of `bytes`, read before any check
/// (`None` when the bytes end first). libslirp's `udp_input` acts on the ports of a datagram
/// whose length field is below 8 or its header in the Ethernet padding: a reader that must see
/// what libslirp acts on reads this; everything else uses [`UdpHeader::parse`].
#[inline]
pub fn claimed_dst_port(bytes: &[u8]) -> Option<u16> {
    (bytes.len() >= 4).then(|| be16(bytes, 2))
}

/// A datagram whose header passed [`UdpHeader::parse`]: 8 ≤ length ≤ the bytes given. The
/// checksum is not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader<'a> {
    /// Header and payload, up to the length field.
    bytes: &'a [u8],
}

impl<'a> UdpHeader<'a> {
    /// `datagram` is what the IP layer carries; bytes after the length field's end are left
    /// out of the view.
    #[inline]
    pub fn parse(datagram: &'a [u8]) -> Result<Self, WireError> {
        need(Layer::Udp, datagram, HEADER_LEN)?;
        let len = usize::from(be16(datagram, 4));
        if len < HEADER_LEN {
            return Err(WireError::LengthBelowHeader {
                layer: Layer::Udp,
                len,
                header: HEADER_LEN,
            });
        }
        if len > datagram.len() {
            return Err(WireError::LengthBeyondBuffer {
                layer: Layer::Udp,
                len,
                available: datagram.len(),
            });
        }
        Ok(UdpHeader {
            bytes: &datagram[..len],
        })
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.bytes, 0)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.bytes, 2)
    }

    /// The length field: header and payload.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: the header counts (for clippy's `len_without_is_empty`).
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The checksum field (0: none sent, over IPv4).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.bytes, 6)
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(payload: &[u8]) -> Vec<u8> {
        let mut ip = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 2, 15], [10, 0, 2, 3], 64)
            .udp(5353, 53)
            .write(&mut ip, payload)
            .unwrap();
        ip[20..].to_vec()
    }

    #[test]
    fn fields_of_a_real_header() {
        let bytes = datagram(b"query");
        let h = UdpHeader::parse(&bytes).unwrap();
        let theirs = etherparse::UdpHeaderSlice::from_slice(&bytes).unwrap();
        assert_eq!(h.src_port(), 5353);
        assert_eq!(h.dst_port(), 53);
        assert_eq!(h.len(), 13);
        assert!(!h.is_empty());
        assert_eq!(h.checksum(), theirs.checksum());
        assert_eq!(h.payload(), b"query");
        // Bytes past the length field are not payload.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 5]);
        assert_eq!(UdpHeader::parse(&padded).unwrap().payload(), b"query");
    }

    #[test]
    fn truncations_and_bad_lengths_are_refused() {
        let bytes = datagram(b"query");
        for len in 0..HEADER_LEN {
            assert_eq!(
                UdpHeader::parse(&bytes[..len]),
                Err(WireError::Truncated {
                    layer: Layer::Udp,
                    needed: 8,
                    got: len
                })
            );
        }
        for len in HEADER_LEN..bytes.len() {
            assert_eq!(
                UdpHeader::parse(&bytes[..len]),
                Err(WireError::LengthBeyondBuffer {
                    layer: Layer::Udp,
                    len: 13,
                    available: len
                })
            );
        }
        for field in 0..8u16 {
            let mut bad = bytes.clone();
            bad[4..6].copy_from_slice(&field.to_be_bytes());
            assert_eq!(
                UdpHeader::parse(&bad),
                Err(WireError::LengthBelowHeader {
                    layer: Layer::Udp,
                    len: usize::from(field),
                    header: 8
                })
            );
        }
        // Just the header: an empty payload.
        let mut empty = bytes[..8].to_vec();
        empty[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert!(UdpHeader::parse(&empty).unwrap().payload().is_empty());
    }
}
