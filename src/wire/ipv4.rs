//! IPv4 headers (RFC 791): a checked view, a mutable view of the fields reassembly and
//! coalescing rewrite, and the fields of an option-less header to write one afresh.

use super::checksum::{internet_checksum, ones_add, sum_words};
use super::{array, be16, need, set_be16, Layer, WireError};

/// An IPv4 header without options: the fixed part of every header, the whole of every one
/// this helper writes.
pub const HEADER_LEN: usize = 20;
/// Largest IPv4 datagram: the total-length field is 16 bits.
pub const MAX_DATAGRAM: usize = 65535;
/// Flags/fragment-offset field: "don't fragment".
const DF: u16 = 0x4000;
/// Flags/fragment-offset field: "more fragments".
const MF: u16 = 0x2000;
/// Flags/fragment-offset field: the offset, in 8-byte units.
const OFFSET_MASK: u16 = 0x1fff;
/// Fragment offsets count in 8-byte units.
pub const FRAGMENT_UNIT: usize = 8;

/// Whether `bytes` (an IPv4 header, not yet checked) *claims* to be a fragment: MF set or a
/// non-zero offset. Reads only the flags/offset field, so that a malformed header that claims
/// it can be told from one that does not; false when the field is not there.
#[inline]
pub fn claims_fragment(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && be16(bytes, 6) & (MF | OFFSET_MASK) != 0
}

/// The protocol of the datagram at the start of `bytes` and everything after its header to
/// the end of `bytes`: the payload *and* any Ethernet padding. The header is checked as
/// [`Ipv4Header::parse`] checks it, which is what libslirp's `ip_input` checks too (its header
/// checksum aside). For readers that must see what libslirp acts on: its `udp_input` takes the
/// UDP header from where the IP header ends without checking that the total length covers it
/// (the padding is still in its mbuf), and its protocol handlers read no length field before
/// they decide to open a socket. Everything else reads [`Ipv4Header::payload`].
#[inline]
pub fn dispatch(bytes: &[u8]) -> Result<(u8, &[u8]), WireError> {
    let header = Ipv4Header::parse(bytes)?;
    Ok((header.protocol(), &bytes[header.header_len()..]))
}

/// The sum (one's complement, folded) of an IPv4 pseudo-header for TCP or UDP: addresses,
/// protocol and the upper-layer length.
#[inline]
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], protocol: u8, len: u16) -> u16 {
    let addresses = ones_add(sum_words(&src), sum_words(&dst));
    ones_add(addresses, ones_add(u16::from(protocol), len))
}

/// Checks the lengths of the header at the start of `bytes`; its header length (IHL × 4).
#[inline]
fn check(bytes: &[u8]) -> Result<usize, WireError> {
    need(Layer::Ipv4, bytes, HEADER_LEN)?;
    let version = bytes[0] >> 4;
    if version != 4 {
        return Err(WireError::BadVersion {
            layer: Layer::Ipv4,
            version,
        });
    }
    let header_len = usize::from(bytes[0] & 0x0f) * 4;
    if header_len < HEADER_LEN {
        return Err(WireError::BadHeaderLen {
            layer: Layer::Ipv4,
            len: header_len,
        });
    }
    need(Layer::Ipv4, bytes, header_len)?;
    Ok(header_len)
}

/// An IPv4 datagram whose header passed [`Ipv4Header::parse`]: version 4, IHL ≥ 5, and
/// header ≤ total length ≤ the bytes given. The header checksum is *not* checked (see
/// [`Ipv4Header::checksum_valid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header<'a> {
    /// The datagram: header and payload, up to the total length (padding cut off).
    bytes: &'a [u8],
    header_len: usize,
}

impl<'a> Ipv4Header<'a> {
    /// The datagram at the start of `bytes`; bytes after its total length (Ethernet padding)
    /// are left out of the view.
    #[inline]
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let header_len = check(bytes)?;
        let total_len = usize::from(be16(bytes, 2));
        if total_len < header_len {
            return Err(WireError::LengthBelowHeader {
                layer: Layer::Ipv4,
                len: total_len,
                header: header_len,
            });
        }
        if total_len > bytes.len() {
            return Err(WireError::LengthBeyondBuffer {
                layer: Layer::Ipv4,
                len: total_len,
                available: bytes.len(),
            });
        }
        Ok(Ipv4Header {
            bytes: &bytes[..total_len],
            header_len,
        })
    }

    /// Header length in bytes (IHL × 4): 20 to 60.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Type of service (DSCP and ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.bytes[1]
    }

    /// Total length: header and payload, at most [`MAX_DATAGRAM`].
    #[inline]
    pub fn total_len(&self) -> usize {
        self.bytes.len()
    }

    /// Identification.
    #[inline]
    pub fn id(&self) -> u16 {
        be16(self.bytes, 4)
    }

    /// The flags and fragment-offset field as it is (reserved bit, DF, MF, offset).
    #[inline]
    pub fn flags_and_offset(&self) -> u16 {
        be16(self.bytes, 6)
    }

    #[inline]
    pub fn dont_fragment(&self) -> bool {
        self.flags_and_offset() & DF != 0
    }

    #[inline]
    pub fn more_fragments(&self) -> bool {
        self.flags_and_offset() & MF != 0
    }

    /// Where this fragment's payload starts in its datagram, in bytes (the field counts
    /// 8-byte units).
    #[inline]
    pub fn fragment_offset(&self) -> usize {
        usize::from(self.flags_and_offset() & OFFSET_MASK) * FRAGMENT_UNIT
    }

    /// MF set or a non-zero offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_and_offset() & (MF | OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.bytes[8]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.bytes[9]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.bytes, 10)
    }

    #[inline]
    pub fn src(&self) -> [u8; 4] {
        array(self.bytes, 12)
    }

    #[inline]
    pub fn dst(&self) -> [u8; 4] {
        array(self.bytes, 16)
    }

    /// Whether the header checksum is intact.
    #[inline]
    pub fn checksum_valid(&self) -> bool {
        internet_checksum(self.header()) == 0
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &'a [u8] {
        &self.bytes[..self.header_len]
    }

    /// The options (empty for IHL 5).
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..self.header_len]
    }

    /// What follows the header, up to the total length.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.header_len..]
    }

    /// Header and payload.
    #[inline]
    pub fn datagram(&self) -> &'a [u8] {
        self.bytes
    }

    /// The pseudo-header sum for this datagram's addresses, `protocol` and `len` bytes of
    /// upper layer.
    #[inline]
    pub fn pseudo_header_sum(&self, len: u16) -> u16 {
        pseudo_header_sum(self.src(), self.dst(), self.protocol(), len)
    }

    /// The fields an option-less copy of this header keeps.
    #[inline]
    pub fn repr(&self) -> Ipv4Repr {
        Ipv4Repr {
            tos: self.tos(),
            id: self.id(),
            ttl: self.ttl(),
            protocol: self.protocol(),
            src: self.src(),
            dst: self.dst(),
        }
    }
}

/// A header to rewrite in place, checked by [`Ipv4HeaderMut::new`]: version 4, IHL ≥ 5 and
/// the whole header within the bytes given. The total length is not checked: it is what a
/// writer sets.
#[derive(Debug, PartialEq, Eq)]
pub struct Ipv4HeaderMut<'a> {
    bytes: &'a mut [u8],
    header_len: usize,
}

impl<'a> Ipv4HeaderMut<'a> {
    #[inline]
    pub fn new(bytes: &'a mut [u8]) -> Result<Self, WireError> {
        let header_len = check(bytes)?;
        Ok(Ipv4HeaderMut { bytes, header_len })
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    #[inline]
    pub fn src(&self) -> [u8; 4] {
        array(self.bytes, 12)
    }

    #[inline]
    pub fn dst(&self) -> [u8; 4] {
        array(self.bytes, 16)
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.bytes[9]
    }

    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        set_be16(self.bytes, 2, len);
    }

    /// Writes the flags and fragment-offset field (0: a whole datagram, DF clear).
    #[inline]
    pub fn set_flags_and_offset(&mut self, field: u16) {
        set_be16(self.bytes, 6, field);
    }

    /// Makes the datagram the fragment at `offset` bytes (a multiple of [`FRAGMENT_UNIT`]) of
    /// the original, with MF when `more`; DF clear (a datagram with DF is never split).
    #[inline]
    pub fn set_fragment(&mut self, offset: usize, more: bool) {
        debug_assert_eq!(offset % FRAGMENT_UNIT, 0);
        let units = (offset / FRAGMENT_UNIT) as u16 & OFFSET_MASK;
        self.set_flags_and_offset(units | if more { MF } else { 0 });
    }

    /// Computes and writes the header checksum (after the other fields are written).
    #[inline]
    pub fn fill_checksum(&mut self) {
        set_be16(self.bytes, 10, 0);
        let sum = internet_checksum(&self.bytes[..self.header_len]);
        set_be16(self.bytes, 10, sum);
    }
}

/// The fields of an option-less, unfragmented IPv4 header other than its lengths and
/// checksum: what a reassembled datagram keeps of its first fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ipv4Repr {
    pub tos: u8,
    pub id: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4Repr {
    /// Writes a whole header: version 4, IHL 5, these fields, `total_len`, flags and offset
    /// clear (not a fragment, DF clear), and its checksum.
    #[inline]
    pub fn emit(&self, header: &mut [u8; HEADER_LEN], total_len: u16) {
        header[0] = 0x45;
        header[1] = self.tos;
        set_be16(header, 2, total_len);
        set_be16(header, 4, self.id);
        set_be16(header, 6, 0);
        header[8] = self.ttl;
        header[9] = self.protocol;
        set_be16(header, 10, 0);
        header[12..16].copy_from_slice(&self.src);
        header[16..20].copy_from_slice(&self.dst);
        let sum = internet_checksum(header);
        set_be16(header, 10, sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpFragOffset, IpNumber, Ipv4Dscp, Ipv4Ecn, Ipv4Options};

    /// A real header from etherparse, with `options` and `payload` bytes after it.
    fn datagram(options: &[u8], payload: usize, mf: bool, offset_units: u16) -> Vec<u8> {
        let mut h = etherparse::Ipv4Header::new(
            payload as u16,
            61,
            IpNumber::UDP,
            [10, 0, 2, 15],
            [192, 0, 2, 7],
        )
        .unwrap();
        h.dscp = Ipv4Dscp::try_new(0x2e).unwrap();
        h.ecn = Ipv4Ecn::try_new(1).unwrap();
        h.identification = 0xbeef;
        h.dont_fragment = !mf;
        h.more_fragments = mf;
        h.fragment_offset = IpFragOffset::try_new(offset_units).unwrap();
        h.options = Ipv4Options::try_from(options).unwrap();
        h.set_payload_len(payload).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend((0..payload).map(|i| i as u8));
        bytes
    }

    #[test]
    fn fields_of_real_headers() {
        for options in [&[][..], &[1, 1, 1, 0], &[7; 40]] {
            let bytes = datagram(options, 100, true, 185);
            let h = Ipv4Header::parse(&bytes).unwrap();
            let theirs = etherparse::Ipv4HeaderSlice::from_slice(&bytes).unwrap();
            assert_eq!(h.header_len(), 20 + options.len());
            assert_eq!(h.tos(), 0x2e << 2 | 1);
            assert_eq!(h.total_len(), usize::from(theirs.total_len()));
            assert_eq!(h.id(), 0xbeef);
            assert!(h.more_fragments() && !h.dont_fragment() && h.is_fragment());
            assert_eq!(h.fragment_offset(), 185 * 8);
            assert_eq!(h.ttl(), 61);
            assert_eq!(h.protocol(), 17);
            assert_eq!(h.checksum(), theirs.header_checksum());
            assert_eq!(h.src(), [10, 0, 2, 15]);
            assert_eq!(h.dst(), [192, 0, 2, 7]);
            assert!(h.checksum_valid());
            assert_eq!(h.options(), options);
            assert_eq!(h.header(), theirs.slice());
            assert_eq!(h.payload().len(), 100);
            assert_eq!(h.payload()[99], 99);
            assert_eq!(h.datagram(), bytes.as_slice());
            assert!(claims_fragment(&bytes));
        }
        let whole = datagram(&[], 8, false, 0);
        let h = Ipv4Header::parse(&whole).unwrap();
        assert!(h.dont_fragment() && !h.more_fragments() && !h.is_fragment());
        assert_eq!(h.flags_and_offset(), 0x4000);
        assert!(!claims_fragment(&whole));
        let last = datagram(&[], 8, false, 1);
        assert!(claims_fragment(&last) && Ipv4Header::parse(&last).unwrap().is_fragment());
    }

    #[test]
    fn padding_after_the_total_length_is_not_payload() {
        let mut bytes = datagram(&[], 6, false, 0);
        bytes.extend_from_slice(&[0xee; 20]);
        let h = Ipv4Header::parse(&bytes).unwrap();
        assert_eq!(h.total_len(), 26);
        assert_eq!(h.payload(), &[0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn every_truncation_is_refused() {
        for options in [&[][..], &[1; 8]] {
            let bytes = datagram(options, 30, false, 0);
            let header_len = 20 + options.len();
            for len in 0..bytes.len() {
                let err = Ipv4Header::parse(&bytes[..len]).unwrap_err();
                let expected = if len < 20 {
                    WireError::Truncated {
                        layer: Layer::Ipv4,
                        needed: 20,
                        got: len,
                    }
                } else if len < header_len {
                    WireError::Truncated {
                        layer: Layer::Ipv4,
                        needed: header_len,
                        got: len,
                    }
                } else {
                    WireError::LengthBeyondBuffer {
                        layer: Layer::Ipv4,
                        len: bytes.len(),
                        available: len,
                    }
                };
                assert_eq!(err, expected, "{len} bytes");
                assert!(!err.to_string().is_empty());
                if len < header_len {
                    assert!(Ipv4HeaderMut::new(&mut bytes[..len].to_vec()).is_err());
                }
            }
        }
    }

    #[test]
    fn bad_version_ihl_and_total_length_are_refused() {
        let good = datagram(&[], 30, false, 0);
        let with = |at: usize, value: u8| {
            let mut b = good.clone();
            b[at] = value;
            b
        };
        for version in [0u8, 6, 15] {
            assert_eq!(
                Ipv4Header::parse(&with(0, version << 4 | 5)),
                Err(WireError::BadVersion {
                    layer: Layer::Ipv4,
                    version
                })
            );
        }
        for ihl in 0..5u8 {
            let bad = with(0, 0x40 | ihl);
            let expected = Err(WireError::BadHeaderLen {
                layer: Layer::Ipv4,
                len: usize::from(ihl) * 4,
            });
            assert_eq!(Ipv4Header::parse(&bad), expected);
            assert_eq!(Ipv4HeaderMut::new(&mut bad.clone()).err(), expected.err());
        }
        // IHL 15 (60 bytes) over a 50-byte datagram.
        assert_eq!(
            Ipv4Header::parse(&with(0, 0x4f)),
            Err(WireError::Truncated {
                layer: Layer::Ipv4,
                needed: 60,
                got: 50
            })
        );
        // Total length below the header, and beyond the buffer by one.
        let mut short = good.clone();
        short[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Header::parse(&short),
            Err(WireError::LengthBelowHeader {
                layer: Layer::Ipv4,
                len: 19,
                header: 20
            })
        );
        let mut long = good.clone();
        long[2..4].copy_from_slice(&51u16.to_be_bytes());
        assert_eq!(
            Ipv4Header::parse(&long),
            Err(WireError::LengthBeyondBuffer {
                layer: Layer::Ipv4,
                len: 51,
                available: 50
            })
        );
        // Exactly the header: an empty payload is a valid datagram.
        let mut empty = good[..20].to_vec();
        empty[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert!(Ipv4Header::parse(&empty).unwrap().payload().is_empty());
        // A bad checksum parses, and says so.
        let bad_sum = with(8, 1);
        assert!(!Ipv4Header::parse(&bad_sum).unwrap().checksum_valid());
    }

    #[test]
    fn the_mutable_view_rewrites_lengths_flags_and_checksum() {
        let mut bytes = datagram(&[1, 1, 1, 0], 40, true, 3);
        let mut h = Ipv4HeaderMut::new(&mut bytes).unwrap();
        assert_eq!(h.header_len(), 24);
        assert_eq!(
            (h.src(), h.dst(), h.protocol()),
            ([10, 0, 2, 15], [192, 0, 2, 7], 17)
        );
        h.set_total_len(44);
        h.set_flags_and_offset(0);
        h.fill_checksum();
        let theirs = etherparse::Ipv4HeaderSlice::from_slice(&bytes).unwrap();
        assert_eq!(theirs.total_len(), 44);
        assert!(!theirs.more_fragments() && !theirs.dont_fragment());
        assert_eq!(theirs.fragments_offset().value(), 0);
        assert_eq!(
            theirs.header_checksum(),
            theirs.to_header().calc_header_checksum()
        );
        assert!(Ipv4Header::parse(&bytes[..44]).unwrap().checksum_valid());
    }

    #[test]
    fn repr_writes_the_option_less_whole_header() {
        let bytes = datagram(&[1, 1, 1, 0], 40, true, 3);
        let repr = Ipv4Header::parse(&bytes).unwrap().repr();
        let mut out = [0xaa; HEADER_LEN];
        repr.emit(&mut out, 60);
        let theirs = etherparse::Ipv4HeaderSlice::from_slice(&out).unwrap();
        assert_eq!(theirs.ihl(), 5);
        assert_eq!(theirs.total_len(), 60);
        assert_eq!(theirs.identification(), 0xbeef);
        assert_eq!(theirs.dcp(), Ipv4Dscp::try_new(0x2e).unwrap());
        assert_eq!(theirs.ttl(), 61);
        assert_eq!(theirs.protocol(), IpNumber::UDP);
        assert!(!theirs.more_fragments() && !theirs.dont_fragment());
        assert_eq!(theirs.fragments_offset().value(), 0);
        assert_eq!(theirs.source(), [10, 0, 2, 15]);
        assert_eq!(theirs.destination(), [192, 0, 2, 7]);
        assert_eq!(internet_checksum(&out), 0);
    }

    #[test]
    fn pseudo_header_sum_matches_etherparse() {
        // A UDP datagram whose checksum etherparse computed: pseudo-header + segment sum to 0.
        let mut frame = Vec::new();
        let payload = b"pseudo header check";
        etherparse::PacketBuilder::ipv4([10, 0, 2, 15], [10, 0, 2, 2], 64)
            .udp(4000, 53)
            .write(&mut frame, payload)
            .unwrap();
        let h = Ipv4Header::parse(&frame).unwrap();
        let segment = h.payload();
        let pseudo = h.pseudo_header_sum(segment.len() as u16);
        assert_eq!(!ones_add(pseudo, sum_words(segment)), 0);
    }
}
