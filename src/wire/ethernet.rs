//! Ethernet II frames as the frontend socket carries them: 14-byte header, no FCS.

use super::{array, be16, need, Layer, WireError};

/// Bytes of an Ethernet header (no FCS on the frontend socket).
pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q tag: libslirp ignores tagged frames (`slirp_input` switches on this field).
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad (QinQ) outer tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// A frame with a whole Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<'a> {
    bytes: &'a [u8],
}

impl<'a> EthernetFrame<'a> {
    /// `frame` when it holds a whole header; the payload may be empty.
    #[inline]
    pub fn parse(frame: &'a [u8]) -> Result<Self, WireError> {
        need(Layer::Ethernet, frame, HEADER_LEN)?;
        Ok(EthernetFrame { bytes: frame })
    }

    #[inline]
    pub fn dst(&self) -> [u8; 6] {
        array(self.bytes, 0)
    }

    #[inline]
    pub fn src(&self) -> [u8; 6] {
        array(self.bytes, 6)
    }

    /// The EtherType of an untagged frame (a tag's TPID on a tagged one).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.bytes, 12)
    }

    /// The 14 header bytes.
    #[inline]
    pub fn header(&self) -> &'a [u8] {
        &self.bytes[..HEADER_LEN]
    }

    /// Everything after the header (an IP datagram and any Ethernet padding).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The whole frame.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{EtherType, Ethernet2Header};

    #[test]
    fn fields_of_a_real_header() {
        let mut frame = Vec::new();
        Ethernet2Header {
            source: [2, 0, 0, 0, 0, 1],
            destination: [0xff; 6],
            ether_type: EtherType::IPV6,
        }
        .write(&mut frame)
        .unwrap();
        frame.extend_from_slice(&[9, 8, 7]);
        let eth = EthernetFrame::parse(&frame).unwrap();
        assert_eq!(eth.src(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(eth.dst(), [0xff; 6]);
        assert_eq!(eth.ethertype(), ETHERTYPE_IPV6);
        assert_eq!(eth.header(), &frame[..14]);
        assert_eq!(eth.payload(), &[9, 8, 7]);
        assert_eq!(eth.bytes(), frame.as_slice());
    }

    #[test]
    fn every_truncation_is_refused() {
        let frame = [0x11; HEADER_LEN];
        for len in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::parse(&frame[..len]),
                Err(WireError::Truncated {
                    layer: Layer::Ethernet,
                    needed: 14,
                    got: len
                })
            );
        }
        let eth = EthernetFrame::parse(&frame).unwrap();
        assert!(eth.payload().is_empty());
    }
}
