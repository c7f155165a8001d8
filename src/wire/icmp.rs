//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages: both start with type, code and checksum.

/// ICMP echo request (RFC 792).
pub const V4_ECHO_REQUEST: u8 = 8;
/// ICMPv6 echo request (RFC 4443 4.1).
pub const V6_ECHO_REQUEST: u8 = 128;

/// The type of the message at the start of `bytes`, read before any check (`None` when there
/// are no bytes). For readers that must see what libslirp acts on (its `icmp6_input` takes the
/// message length from the IPv6 payload length, not from the bytes).
#[inline]
pub fn claimed_type(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_is_the_first_byte_of_either_version() {
        let mut v4 = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 2, 15], [10, 0, 2, 2], 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut v4, b"ping")
            .unwrap();
        assert_eq!(claimed_type(&v4[20..]), Some(V4_ECHO_REQUEST));
        let mut v6 = Vec::new();
        etherparse::PacketBuilder::ipv6([0xfe; 16], [0xfd; 16], 64)
            .icmpv6_echo_request(7, 1)
            .write(&mut v6, b"ping")
            .unwrap();
        assert_eq!(claimed_type(&v6[40..]), Some(V6_ECHO_REQUEST));
        assert_eq!(claimed_type(&[]), None);
    }
}
