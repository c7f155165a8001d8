//! TCP headers (RFC 9293): a checked view and a mutable view of what a merge rewrites.

use super::checksum::{ones_add, sum_words};
use super::{be16, be32, need, set_be16, Layer, WireError};

/// A TCP header without options.
pub const HEADER_LEN: usize = 20;
/// The most option bytes a header holds (data offset 15).
pub const MAX_OPTIONS_LEN: usize = 40;

/// Bits of the flags byte.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// The flags byte of the segment at the start of `bytes`, read before any check (`None` when
/// the bytes end first). For readers that must see a segment as libslirp's `tcp_input` does
/// where its lengths are not checked against the bytes (IPv6: the payload length); everything
/// else uses [`TcpHeader::parse`].
#[inline]
pub fn claimed_flags(bytes: &[u8]) -> Option<u8> {
    bytes.get(13).copied()
}

/// The header length in the segment at the start of `bytes`, checked.
#[inline]
fn check(bytes: &[u8]) -> Result<usize, WireError> {
    need(Layer::Tcp, bytes, HEADER_LEN)?;
    let header_len = usize::from(bytes[12] >> 4) * 4;
    if header_len < HEADER_LEN {
        return Err(WireError::BadHeaderLen {
            layer: Layer::Tcp,
            len: header_len,
        });
    }
    need(Layer::Tcp, bytes, header_len)?;
    Ok(header_len)
}

/// The sum of a header's words with the checksum field left out.
#[inline]
fn sum_without_checksum(header: &[u8]) -> u16 {
    ones_add(sum_words(&header[..16]), sum_words(&header[18..]))
}

/// A segment whose header passed [`TcpHeader::parse`]: data offset ≥ 5 and the whole header
/// (options included) within the bytes given. The checksum is not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader<'a> {
    /// The segment: header and payload.
    bytes: &'a [u8],
    header_len: usize,
}

impl<'a> TcpHeader<'a> {
    /// `segment` is everything the IP layer carries (an IPv4 payload, up to its total length).
    #[inline]
    pub fn parse(segment: &'a [u8]) -> Result<Self, WireError> {
        let header_len = check(segment)?;
        Ok(TcpHeader {
            bytes: segment,
            header_len,
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

    #[inline]
    pub fn seq(&self) -> u32 {
        be32(self.bytes, 4)
    }

    #[inline]
    pub fn ack(&self) -> u32 {
        be32(self.bytes, 8)
    }

    /// Header length in bytes (data offset × 4): 20 to 60.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The low nibble of the data-offset byte: reserved bits and AE (RFC 3540's NS).
    #[inline]
    pub fn reserved_bits(&self) -> u8 {
        self.bytes[12] & 0x0f
    }

    /// The flags byte (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.bytes[13]
    }

    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.bytes, 14)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.bytes, 16)
    }

    #[inline]
    pub fn urgent_pointer(&self) -> u16 {
        be16(self.bytes, 18)
    }

    #[inline]
    pub fn options(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..self.header_len]
    }

    #[inline]
    pub fn header(&self) -> &'a [u8] {
        &self.bytes[..self.header_len]
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.header_len..]
    }

    /// The one's-complement sum of the header with its checksum field left out: what the
    /// checksum covers of the header.
    #[inline]
    pub fn header_sum(&self) -> u16 {
        sum_without_checksum(self.header())
    }
}

/// A header to rewrite in place, checked by [`TcpHeaderMut::new`] as [`TcpHeader::parse`].
#[derive(Debug, PartialEq, Eq)]
pub struct TcpHeaderMut<'a> {
    bytes: &'a mut [u8],
    header_len: usize,
}

impl<'a> TcpHeaderMut<'a> {
    #[inline]
    pub fn new(segment: &'a mut [u8]) -> Result<Self, WireError> {
        let header_len = check(segment)?;
        Ok(TcpHeaderMut {
            bytes: segment,
            header_len,
        })
    }

    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.bytes[13] = flags;
    }

    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        set_be16(self.bytes, 16, checksum);
    }

    /// As [`TcpHeader::header_sum`], for the header as written so far.
    #[inline]
    pub fn header_sum(&self) -> u16 {
        sum_without_checksum(&self.bytes[..self.header_len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::internet_checksum;
    use crate::wire::ipv4::pseudo_header_sum;

    /// A real segment (IPv4 payload) from etherparse, and its addresses.
    fn segment(options: &[etherparse::TcpOptionElement], payload: &[u8]) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ipv4([10, 0, 2, 15], [10, 0, 2, 2], 64)
            .tcp(40000, 5201, 0xfffe_0001, 502)
            .ack(0x1234_5678)
            .psh()
            .urg(9)
            .options(options)
            .unwrap();
        let mut ip = Vec::new();
        builder.write(&mut ip, payload).unwrap();
        ip[20..].to_vec()
    }

    #[test]
    fn fields_of_real_headers() {
        use etherparse::TcpOptionElement::*;
        for options in [
            &[][..],
            &[MaximumSegmentSize(1460), Noop, WindowScale(7)],
            &[
                Timestamp(1, 2),
                Noop,
                Noop,
                SelectiveAcknowledgement((1, 2), [None; 3]),
            ],
        ] {
            let bytes = segment(options, b"hello");
            let h = TcpHeader::parse(&bytes).unwrap();
            let theirs = etherparse::TcpHeaderSlice::from_slice(&bytes).unwrap();
            assert_eq!(h.src_port(), 40000);
            assert_eq!(h.dst_port(), 5201);
            assert_eq!(h.seq(), 0xfffe_0001);
            assert_eq!(h.ack(), 0x1234_5678);
            assert_eq!(h.header_len(), theirs.slice().len());
            assert_eq!(h.reserved_bits(), 0);
            assert_eq!(h.flags(), flags::ACK | flags::PSH | flags::URG);
            assert_eq!(h.window(), 502);
            assert_eq!(h.checksum(), theirs.checksum());
            assert_eq!(h.urgent_pointer(), 9);
            assert_eq!(h.options(), theirs.options());
            assert_eq!(h.header(), theirs.slice());
            assert_eq!(h.payload(), b"hello");
            // The checksum's parts: pseudo-header, header without the field, data.
            let pseudo = pseudo_header_sum([10, 0, 2, 15], [10, 0, 2, 2], 6, bytes.len() as u16);
            let all = ones_add(ones_add(pseudo, h.header_sum()), sum_words(h.payload()));
            assert_eq!(!all, h.checksum());
            let mut copy = bytes.clone();
            copy[16..18].fill(0);
            assert_eq!(h.header_sum(), !internet_checksum(&copy[..h.header_len()]));
        }
    }

    #[test]
    fn every_truncation_and_bad_data_offset_is_refused() {
        let bytes = segment(
            &[etherparse::TcpOptionElement::MaximumSegmentSize(1460)],
            &[],
        );
        assert_eq!(bytes.len(), 24);
        for len in 0..bytes.len() {
            let needed = if len < 20 { 20 } else { 24 };
            let expected = WireError::Truncated {
                layer: Layer::Tcp,
                needed,
                got: len,
            };
            assert_eq!(TcpHeader::parse(&bytes[..len]), Err(expected));
            assert_eq!(
                TcpHeaderMut::new(&mut bytes[..len].to_vec()).err(),
                Some(expected)
            );
        }
        for offset in 0..5u8 {
            let mut bad = bytes.clone();
            bad[12] = offset << 4;
            let expected = WireError::BadHeaderLen {
                layer: Layer::Tcp,
                len: usize::from(offset) * 4,
            };
            assert_eq!(TcpHeader::parse(&bad), Err(expected));
        }
        let mut reserved = bytes.clone();
        reserved[12] |= 0x01;
        assert_eq!(TcpHeader::parse(&reserved).unwrap().reserved_bits(), 1);
    }

    #[test]
    fn the_mutable_view_writes_flags_and_checksum() {
        let mut bytes = segment(&[], b"abc");
        let before = TcpHeader::parse(&bytes).unwrap().header_sum();
        let mut h = TcpHeaderMut::new(&mut bytes).unwrap();
        assert_eq!(h.header_sum(), before);
        h.set_flags(flags::ACK);
        h.set_checksum(0xabcd);
        let h = TcpHeader::parse(&bytes).unwrap();
        assert_eq!(h.flags(), flags::ACK);
        assert_eq!(h.checksum(), 0xabcd);
        assert_eq!(h.header_sum(), ones_sub_flags(before));
    }

    /// The header sum after PSH and URG are cleared from the flags byte (the low byte of
    /// the word at offset 12).
    fn ones_sub_flags(sum: u16) -> u16 {
        crate::wire::checksum::ones_sub(sum, u16::from(flags::PSH | flags::URG))
    }
}
