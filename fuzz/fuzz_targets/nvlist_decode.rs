//! libnv decoder: never panics on any buffer, and every list it accepts survives an
//! encode/decode round trip in both byte orders (the encoder's output is what libnv's
//! `nvlist_pack` writes, so the decoder must take it back unchanged).
//!
//! The number of received descriptors is taken from the header itself (bounded as
//! `recv_config` bounds it), so the descriptor paths are reachable: `decode` insists the
//! top-level header announces exactly the descriptors received.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slirp_helper::config::nvlist::{decode, encode, ByteOrder, Header};
use slirp_helper::config::recv::MAX_DESCRIPTORS;

fuzz_target!(|data: &[u8]| {
    let fds = match Header::parse(data) {
        Ok(h) if h.descriptors <= MAX_DESCRIPTORS => h.descriptors as usize,
        _ => 0,
    };
    let Ok(list) = decode(data, fds) else {
        return;
    };
    for order in [ByteOrder::Little, ByteOrder::Big] {
        let bytes = encode(&list, order);
        let header = Header::parse(&bytes).expect("encode writes a header");
        assert_eq!(
            header.total_len(),
            Some(bytes.len() as u64),
            "encode: header size does not cover the buffer"
        );
        assert_eq!(header.big_endian(), order == ByteOrder::Big);
        let again = match decode(&bytes, header.descriptors as usize) {
            Ok(again) => again,
            Err(e) => panic!(
                "decode refuses encode's output ({order:?}): {e}\nlist: {list:?}\nbytes: {bytes:02x?}"
            ),
        };
        assert_eq!(again, list, "round trip ({order:?}) changed the list");
        // Encoder output is canonical: a second round writes the same bytes.
        assert_eq!(encode(&again, order), bytes, "encode is not idempotent");
    }
});
