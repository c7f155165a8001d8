//! IPv6 headers (RFC 8200): the fixed header, the fragment header (section 4.5), and a
//! bounded walk over the extension headers to the upper layer.

use super::checksum::{ones_add, sum_words};
use super::{array, be16, be32, need, protocol, set_be16, Layer, WireError};

/// The fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// The fragment header's size.
pub const FRAGMENT_HEADER_LEN: usize = 8;
/// Extension headers walked before giving up. RFC 8200 4.1 recommends at most one of each
/// (destination options twice): hop-by-hop, destination, routing, fragment, AH, ESP,
/// destination; anything longer is junk or an attack on the walker's time.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// The next-header field of the packet at the start of `bytes` and everything after its fixed
/// header to the end of `bytes`, checking the 40 bytes and version 6. libslirp's `ip6_input`
/// also drops a payload length beyond the bytes (4.3.1 on; the Ethernet padding counts as
/// bytes) or beyond its MTU; this does not, so a reader that must never miss what libslirp
/// acts on (the flow budget) errs on the side of more. Everything else uses
/// [`Ipv6Header::parse`].
#[inline]
pub fn dispatch(bytes: &[u8]) -> Result<(u8, &[u8]), WireError> {
    need(Layer::Ipv6, bytes, HEADER_LEN)?;
    let version = bytes[0] >> 4;
    if version != 6 {
        return Err(WireError::BadVersion {
            layer: Layer::Ipv6,
            version,
        });
    }
    Ok((bytes[6], &bytes[HEADER_LEN..]))
}

/// The sum (one's complement, folded) of an IPv6 pseudo-header (RFC 8200 8.1): addresses,
/// upper-layer length and next header.
#[inline]
pub fn pseudo_header_sum(src: [u8; 16], dst: [u8; 16], next_header: u8, len: u32) -> u16 {
    let addresses = ones_add(sum_words(&src), sum_words(&dst));
    let len = ones_add((len >> 16) as u16, len as u16);
    ones_add(addresses, ones_add(len, u16::from(next_header)))
}

/// An IPv6 packet whose fixed header passed [`Ipv6Header::parse`]: version 6 and the payload
/// length within the bytes given. A payload length of 0 is an empty payload (jumbograms,
/// RFC 2675, do not occur on this link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header<'a> {
    /// Header and payload, up to the payload length (padding cut off).
    bytes: &'a [u8],
}

impl<'a> Ipv6Header<'a> {
    #[inline]
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        need(Layer::Ipv6, bytes, HEADER_LEN)?;
        let version = bytes[0] >> 4;
        if version != 6 {
            return Err(WireError::BadVersion {
                layer: Layer::Ipv6,
                version,
            });
        }
        let len = HEADER_LEN + usize::from(be16(bytes, 4));
        if len > bytes.len() {
            return Err(WireError::LengthBeyondBuffer {
                layer: Layer::Ipv6,
                len,
                available: bytes.len(),
            });
        }
        Ok(Ipv6Header {
            bytes: &bytes[..len],
        })
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.bytes, 0) >> 4) as u8
    }

    /// The 20-bit flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.bytes, 0) & 0x000f_ffff
    }

    /// Bytes after the fixed header: extension headers and upper layer.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - HEADER_LEN
    }

    /// The type of the first header after the fixed one.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.bytes[6]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.bytes[7]
    }

    #[inline]
    pub fn src(&self) -> [u8; 16] {
        array(self.bytes, 8)
    }

    #[inline]
    pub fn dst(&self) -> [u8; 16] {
        array(self.bytes, 24)
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The extension headers, in order, then (once the walk ends) the upper layer.
    #[inline]
    pub fn extensions(&self) -> Ipv6Extensions<'a> {
        Ipv6Extensions {
            next_header: self.next_header(),
            rest: self.payload(),
            offset: 0,
            walked: 0,
            failed: false,
        }
    }

    /// The fixed header and the extension headers before `extension` (a step of this packet's
    /// walk): what RFC 8200 calls the unfragmentable part when `extension` is the fragment
    /// header.
    #[inline]
    pub fn headers_before(&self, extension: &Ipv6Extension<'_>) -> &'a [u8] {
        let end = (HEADER_LEN + extension.offset).min(self.bytes.len());
        &self.bytes[..end]
    }

    /// The bytes after `extension` (a step of this packet's walk) to the end of the payload:
    /// a fragment's data when `extension` is its fragment header.
    #[inline]
    pub fn after(&self, extension: &Ipv6Extension<'_>) -> &'a [u8] {
        let payload = self.payload();
        let start = (extension.offset + extension.bytes.len()).min(payload.len());
        &payload[start..]
    }

    /// Walks every extension header: the upper layer, and the fragment header if one was on
    /// the way.
    pub fn upper_layer(&self) -> Result<UpperLayer<'a>, WireError> {
        let mut walk = self.extensions();
        let mut fragment = None;
        for extension in &mut walk {
            let extension = extension?;
            if let Some(f) = extension.fragment() {
                fragment = Some(f);
            }
        }
        Ok(UpperLayer {
            protocol: walk.next_header,
            offset: walk.offset,
            payload: walk.rest,
            fragment,
        })
    }
}

/// The fields of an IPv6 packet's headers that reassembly writes, over a buffer that holds
/// at least the fixed header (checked by [`Ipv6HeaderMut::new`]; its payload length is not
/// compared with the buffer: the writer sets it).
#[derive(Debug)]
pub struct Ipv6HeaderMut<'a> {
    bytes: &'a mut [u8],
}

impl<'a> Ipv6HeaderMut<'a> {
    #[inline]
    pub fn new(bytes: &'a mut [u8]) -> Result<Self, WireError> {
        let (_, _) = dispatch(bytes)?;
        Ok(Ipv6HeaderMut { bytes })
    }

    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        set_be16(self.bytes, 4, len);
    }

    /// Writes the next-header field of the header that starts at `extension_offset` in the
    /// IPv6 payload (an [`Ipv6Extension::offset`]), or of the fixed header when `None`.
    /// `Truncated` when that header is not within the buffer.
    #[inline]
    pub fn set_next_header_of(
        &mut self,
        extension_offset: Option<usize>,
        value: u8,
    ) -> Result<(), WireError> {
        let at = match extension_offset {
            None => 6,
            Some(offset) => HEADER_LEN + offset,
        };
        need(Layer::Ipv6Extension, self.bytes, at + 1)?;
        self.bytes[at] = value;
        Ok(())
    }
}

/// What follows the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer<'a> {
    /// Its protocol number (59: nothing; 50: ESP, whose contents cannot be walked).
    pub protocol: u8,
    /// Where it starts in the IPv6 payload.
    pub offset: usize,
    pub payload: &'a [u8],
    /// The fragment header met on the way (then `payload` is a fragment of the upper layer).
    pub fragment: Option<Ipv6FragmentHeader<'a>>,
}

/// Whether `next_header` is an extension header the walk can step over (RFC 7045's list, less
/// ESP whose length is encrypted).
#[inline]
pub fn is_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        protocol::HOP_BY_HOP
            | protocol::IPV6_ROUTING
            | protocol::IPV6_FRAGMENT
            | protocol::IPV6_DESTINATION
            | protocol::AUTHENTICATION
            | protocol::MOBILITY
            | protocol::HIP
            | protocol::SHIM6
    )
}

/// One extension header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Extension<'a> {
    /// Its type (the previous header's next-header field).
    pub kind: u8,
    /// Where it starts in the IPv6 payload.
    pub offset: usize,
    /// All of it, its next-header byte first.
    pub bytes: &'a [u8],
}

impl<'a> Ipv6Extension<'a> {
    /// The type of the header after this one.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.bytes[0]
    }

    /// The fragment header, when this is one.
    #[inline]
    pub fn fragment(&self) -> Option<Ipv6FragmentHeader<'a>> {
        if self.kind != protocol::IPV6_FRAGMENT {
            return None;
        }
        Ipv6FragmentHeader::parse(self.bytes).ok()
    }
}

/// The walk over a packet's extension headers (from [`Ipv6Header::extensions`]). Bounded:
/// every step moves forward by at least 8 bytes, and after [`MAX_EXTENSION_HEADERS`] it stops
/// with an error. A malformed header ends it with one error.
#[derive(Debug, Clone)]
pub struct Ipv6Extensions<'a> {
    next_header: u8,
    rest: &'a [u8],
    offset: usize,
    walked: usize,
    failed: bool,
}

impl<'a> Ipv6Extensions<'a> {
    /// The type of what comes next (after the walk: the upper layer's protocol).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.next_header
    }

    /// The bytes not walked yet (after the walk: the upper layer).
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn fail(&mut self, error: WireError) -> Option<Result<Ipv6Extension<'a>, WireError>> {
        self.failed = true;
        Some(Err(error))
    }
}

impl<'a> Iterator for Ipv6Extensions<'a> {
    type Item = Result<Ipv6Extension<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let kind = self.next_header;
        if self.failed || !is_extension(kind) {
            return None;
        }
        if self.walked == MAX_EXTENSION_HEADERS {
            return self.fail(WireError::TooManyExtensionHeaders {
                limit: MAX_EXTENSION_HEADERS,
            });
        }
        if kind == protocol::HOP_BY_HOP && self.walked > 0 {
            return self.fail(WireError::HopByHopNotFirst {
                offset: self.offset,
            });
        }
        let layer = if kind == protocol::IPV6_FRAGMENT {
            Layer::Ipv6Fragment
        } else {
            Layer::Ipv6Extension
        };
        if let Err(e) = need(layer, self.rest, 2) {
            return self.fail(e);
        }
        let len = match kind {
            protocol::IPV6_FRAGMENT => FRAGMENT_HEADER_LEN,
            // RFC 4302: AH counts 4-byte words, less 2.
            protocol::AUTHENTICATION => (usize::from(self.rest[1]) + 2) * 4,
            // RFC 8200: 8-byte units, not counting the first 8.
            _ => (usize::from(self.rest[1]) + 1) * 8,
        };
        if let Err(e) = need(layer, self.rest, len) {
            return self.fail(e);
        }
        let (bytes, rest) = self.rest.split_at(len);
        let extension = Ipv6Extension {
            kind,
            offset: self.offset,
            bytes,
        };
        self.next_header = bytes[0];
        self.rest = rest;
        self.offset += len;
        self.walked += 1;
        Some(Ok(extension))
    }
}

/// A fragment header (RFC 8200 4.5) that passed [`Ipv6FragmentHeader::parse`]: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6FragmentHeader<'a> {
    bytes: &'a [u8],
}

impl<'a> Ipv6FragmentHeader<'a> {
    #[inline]
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        need(Layer::Ipv6Fragment, bytes, FRAGMENT_HEADER_LEN)?;
        Ok(Ipv6FragmentHeader {
            bytes: &bytes[..FRAGMENT_HEADER_LEN],
        })
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.bytes[0]
    }

    /// Where this fragment starts in the fragmentable part, in bytes (the field counts
    /// 8-byte units).
    #[inline]
    pub fn fragment_offset(&self) -> usize {
        usize::from(be16(self.bytes, 2) & 0xfff8)
    }

    #[inline]
    pub fn more_fragments(&self) -> bool {
        self.bytes[3] & 1 != 0
    }

    #[inline]
    pub fn id(&self) -> u32 {
        be32(self.bytes, 4)
    }
}

/// A fragment header to write (RFC 8200 4.5): what the helper puts after the fixed header
/// of each fragment of a packet too long for the guest's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6FragmentRepr {
    /// The protocol of the fragmentable part (the original packet's next header).
    pub next_header: u8,
    /// Where this fragment starts in the fragmentable part, in bytes: a multiple of 8.
    pub offset: usize,
    /// The M flag: more fragments follow.
    pub more: bool,
    pub id: u32,
}

impl Ipv6FragmentRepr {
    #[inline]
    pub fn emit(&self, header: &mut [u8; FRAGMENT_HEADER_LEN]) {
        debug_assert_eq!(self.offset % 8, 0);
        header[0] = self.next_header;
        header[1] = 0;
        let field = (self.offset as u16 & 0xfff8) | u16::from(self.more);
        set_be16(header, 2, field);
        header[4..8].copy_from_slice(&self.id.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv6FlowLabel, Ipv6RawExtHeader};

    const SRC: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56,
    ];
    const DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// A real packet: etherparse's fixed header, then `extensions` (type, bytes) chained in
    /// order, then `upper` bytes of protocol `last`.
    fn packet(extensions: &[(u8, Vec<u8>)], last: u8, upper: &[u8]) -> Vec<u8> {
        let mut chain = Vec::new();
        for (i, (_, bytes)) in extensions.iter().enumerate() {
            let mut bytes = bytes.clone();
            bytes[0] = extensions.get(i + 1).map_or(last, |(kind, _)| *kind);
            chain.extend_from_slice(&bytes);
        }
        chain.extend_from_slice(upper);
        let header = etherparse::Ipv6Header {
            traffic_class: 0xb8,
            flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
            payload_length: chain.len() as u16,
            next_header: IpNumber(extensions.first().map_or(last, |(kind, _)| *kind)),
            hop_limit: 255,
            source: SRC,
            destination: DST,
        };
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&chain);
        bytes
    }

    /// An options-type extension header of `len` bytes (a multiple of 8), from etherparse.
    fn options_header(len: usize) -> Vec<u8> {
        Ipv6RawExtHeader::new_raw(IpNumber(0), &vec![1; len - 2])
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    /// A fragment header laid out as RFC 8200 4.5 draws it: the offset in the top 13 bits of
    /// bytes 2..4, M in the lowest bit. (Not etherparse's: 0.16 puts M and the offset's low
    /// bits elsewhere, symmetrically in its reader and writer; etherparse issue #150.)
    fn fragment_header(offset_units: u16, more: bool, id: u32) -> Vec<u8> {
        let field = offset_units << 3 | u16::from(more);
        let mut bytes = vec![0, 0];
        bytes.extend_from_slice(&field.to_be_bytes());
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes
    }

    #[test]
    fn fields_of_a_real_header() {
        let bytes = packet(&[], protocol::UDP, b"datagram");
        let h = Ipv6Header::parse(&bytes).unwrap();
        assert_eq!(h.traffic_class(), 0xb8);
        assert_eq!(h.flow_label(), 0x12345);
        assert_eq!(h.payload_len(), 8);
        assert_eq!(h.next_header(), protocol::UDP);
        assert_eq!(h.hop_limit(), 255);
        assert_eq!(h.src(), SRC);
        assert_eq!(h.dst(), DST);
        assert_eq!(h.payload(), b"datagram");
        assert_eq!(h.extensions().count(), 0);
        let upper = h.upper_layer().unwrap();
        assert_eq!(
            (upper.protocol, upper.offset, upper.payload),
            (17, 0, &b"datagram"[..])
        );
        assert_eq!(upper.fragment, None);
        // Padding after the payload length is not payload.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(Ipv6Header::parse(&padded).unwrap().payload(), b"datagram");
    }

    #[test]
    fn truncations_bad_version_and_length_are_refused() {
        let bytes = packet(&[], protocol::UDP, b"datagram");
        for len in 0..bytes.len() {
            let expected = if len < HEADER_LEN {
                WireError::Truncated {
                    layer: Layer::Ipv6,
                    needed: 40,
                    got: len,
                }
            } else {
                WireError::LengthBeyondBuffer {
                    layer: Layer::Ipv6,
                    len: 48,
                    available: len,
                }
            };
            assert_eq!(Ipv6Header::parse(&bytes[..len]), Err(expected), "{len}");
        }
        for version in [0u8, 4, 7, 15] {
            let mut bad = bytes.clone();
            bad[0] = version << 4 | (bad[0] & 0x0f);
            assert_eq!(
                Ipv6Header::parse(&bad),
                Err(WireError::BadVersion {
                    layer: Layer::Ipv6,
                    version
                })
            );
        }
    }

    #[test]
    fn the_walk_steps_over_each_kind_to_the_upper_layer() {
        // AH: 4-byte words less 2; a 12-byte AH has the length field 1.
        let ah = vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7];
        let chain = [
            (protocol::HOP_BY_HOP, options_header(8)),
            (protocol::IPV6_DESTINATION, options_header(16)),
            (protocol::IPV6_ROUTING, options_header(24)),
            (
                protocol::IPV6_FRAGMENT,
                fragment_header(100, true, 0xdead_beef),
            ),
            (protocol::AUTHENTICATION, ah.clone()),
            (protocol::IPV6_DESTINATION, options_header(8)),
        ];
        let bytes = packet(&chain, protocol::TCP, b"segment");
        let h = Ipv6Header::parse(&bytes).unwrap();
        let walked: Vec<_> = h.extensions().map(Result::unwrap).collect();
        let kinds: Vec<u8> = walked.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, chain.iter().map(|(k, _)| *k).collect::<Vec<_>>());
        let offsets: Vec<usize> = walked.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [0, 8, 24, 48, 56, 68]);
        assert_eq!(walked[4].bytes.len(), 12);
        assert_eq!(walked[5].next_header(), protocol::TCP);
        // What precedes and follows the fragment header (the fourth step).
        assert_eq!(h.headers_before(&walked[3]), &bytes[..HEADER_LEN + 48]);
        assert_eq!(h.after(&walked[3]), &bytes[HEADER_LEN + 56..]);
        let upper = h.upper_layer().unwrap();
        assert_eq!(upper.protocol, protocol::TCP);
        assert_eq!(upper.offset, 76);
        assert_eq!(upper.payload, b"segment");
        let fragment = upper.fragment.unwrap();
        assert_eq!(fragment.next_header(), protocol::AUTHENTICATION);
        assert_eq!(fragment.fragment_offset(), 800);
        assert!(fragment.more_fragments());
        assert_eq!(fragment.id(), 0xdead_beef);

        // etherparse agrees on where the upper layer starts and on the fragment header.
        let theirs = etherparse::Ipv6Slice::from_slice(&bytes).unwrap();
        assert_eq!(theirs.payload().ip_number, IpNumber::TCP);
        assert_eq!(theirs.payload().payload, b"segment");

        // ESP and "no next header" end the walk: they are the upper layer.
        for last in [protocol::ESP, protocol::IPV6_NO_NEXT] {
            let bytes = packet(&chain[..1], last, &[0; 16]);
            let upper = Ipv6Header::parse(&bytes).unwrap().upper_layer().unwrap();
            assert_eq!(
                (upper.protocol, upper.offset, upper.payload.len()),
                (last, 8, 16)
            );
        }
    }

    #[test]
    fn a_last_fragment_header_parses() {
        let bytes = packet(
            &[(protocol::IPV6_FRAGMENT, fragment_header(8191, false, 1))],
            protocol::UDP,
            &[0; 8],
        );
        let upper = Ipv6Header::parse(&bytes).unwrap().upper_layer().unwrap();
        let fragment = upper.fragment.unwrap();
        assert_eq!(fragment.fragment_offset(), 8191 * 8);
        assert!(!fragment.more_fragments());
        assert_eq!(upper.protocol, protocol::UDP);
        for len in 0..FRAGMENT_HEADER_LEN {
            assert_eq!(
                Ipv6FragmentHeader::parse(&[0; 8][..len]),
                Err(WireError::Truncated {
                    layer: Layer::Ipv6Fragment,
                    needed: 8,
                    got: len
                })
            );
        }
    }

    #[test]
    fn truncated_extension_headers_end_the_walk_with_one_error() {
        let chain = [
            (protocol::IPV6_DESTINATION, options_header(16)),
            (protocol::IPV6_FRAGMENT, fragment_header(0, true, 9)),
        ];
        let whole = packet(&chain, protocol::UDP, &[]);
        for cut in HEADER_LEN..whole.len() {
            let mut bytes = whole[..cut].to_vec();
            let payload_len = (cut - HEADER_LEN) as u16;
            bytes[4..6].copy_from_slice(&payload_len.to_be_bytes());
            let h = Ipv6Header::parse(&bytes).unwrap();
            let results: Vec<_> = h.extensions().collect();
            let errors = results.iter().filter(|r| r.is_err()).count();
            assert_eq!(errors, 1, "cut at {cut}: {results:?}");
            assert!(results.last().unwrap().is_err());
            assert!(h.upper_layer().is_err());
        }
    }

    #[test]
    fn the_walk_is_bounded_and_hop_by_hop_comes_first() {
        let many: Vec<_> = (0..MAX_EXTENSION_HEADERS + 1)
            .map(|_| (protocol::IPV6_DESTINATION, options_header(8)))
            .collect();
        let bytes = packet(&many, protocol::UDP, &[]);
        let h = Ipv6Header::parse(&bytes).unwrap();
        let results: Vec<_> = h.extensions().collect();
        assert_eq!(results.len(), MAX_EXTENSION_HEADERS + 1);
        assert_eq!(
            results.last().unwrap().unwrap_err(),
            WireError::TooManyExtensionHeaders {
                limit: MAX_EXTENSION_HEADERS
            }
        );
        assert!(h.upper_layer().is_err());
        // Exactly the limit is fine.
        let bytes = packet(&many[1..], protocol::UDP, &[]);
        assert!(Ipv6Header::parse(&bytes).unwrap().upper_layer().is_ok());

        let late = [
            (protocol::IPV6_DESTINATION, options_header(8)),
            (protocol::HOP_BY_HOP, options_header(8)),
        ];
        let bytes = packet(&late, protocol::UDP, &[]);
        let err = Ipv6Header::parse(&bytes)
            .unwrap()
            .upper_layer()
            .unwrap_err();
        assert_eq!(err, WireError::HopByHopNotFirst { offset: 8 });
        assert!(err.to_string().contains("offset 8"));
    }

    #[test]
    fn the_mutable_view_writes_payload_length_and_next_headers() {
        let chain = [
            (protocol::IPV6_DESTINATION, options_header(16)),
            (protocol::IPV6_FRAGMENT, fragment_header(0, true, 9)),
        ];
        let mut bytes = packet(&chain, protocol::UDP, b"datagram");
        let original = bytes.clone();
        let mut view = Ipv6HeaderMut::new(&mut bytes).unwrap();
        view.set_payload_len(1234);
        view.set_next_header_of(None, protocol::HOP_BY_HOP).unwrap();
        view.set_next_header_of(Some(0), protocol::UDP).unwrap();
        view.set_next_header_of(Some(16), protocol::TCP).unwrap();
        assert_eq!(
            view.set_next_header_of(Some(original.len() - HEADER_LEN), 0),
            Err(WireError::Truncated {
                layer: Layer::Ipv6Extension,
                needed: original.len() + 1,
                got: original.len()
            })
        );
        let changed: Vec<usize> = (0..bytes.len())
            .filter(|&i| bytes[i] != original[i])
            .collect();
        assert_eq!(changed, [4, 5, 6, 40, 56]);
        assert_eq!((bytes[4], bytes[5], bytes[6]), (0x04, 0xd2, 0));
        assert_eq!((bytes[40], bytes[56]), (protocol::UDP, protocol::TCP));
        // Too short for the fixed header, or not version 6: no view.
        assert!(Ipv6HeaderMut::new(&mut original.clone()[..39]).is_err());
        let mut v4 = original.clone();
        v4[0] = 0x45;
        assert!(Ipv6HeaderMut::new(&mut v4).is_err());
    }

    #[test]
    fn pseudo_header_sum_matches_etherparse() {
        let mut bytes = Vec::new();
        etherparse::PacketBuilder::ipv6(SRC, DST, 64)
            .udp(546, 547)
            .write(&mut bytes, b"solicit")
            .unwrap();
        let h = Ipv6Header::parse(&bytes).unwrap();
        let pseudo = pseudo_header_sum(h.src(), h.dst(), protocol::UDP, h.payload_len() as u32);
        assert_eq!(!ones_add(pseudo, sum_words(h.payload())), 0);
    }
}
