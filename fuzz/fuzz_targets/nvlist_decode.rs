//! libnv decoder: never panics on any buffer, and every list it accepts survives an
//! encode/decode round trip in both byte orders (the encoder's output is what libnv's
//! `nvlist_pack` writes, so the decoder must take it back unchanged). Like `nvlist_pack`, the
//! encoder numbers descriptors 0, 1, 2, ... in wire order whatever index they held, so the list
//! that comes back is the decoded one with its descriptors renumbered that way (fix of finding
//! F1, docs/fuzzing.md), and encoding is a fixed point from then on.
//!
//! The number of received descriptors is taken from the header itself (bounded as
//! `recv_config` bounds it), so the descriptor paths are reachable: `decode` insists the
//! top-level header announces exactly the descriptors received.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slirp_helper::config::nvlist::{decode, encode, ByteOrder, Header, Nvlist, Value};
use slirp_helper::config::recv::MAX_DESCRIPTORS;

fuzz_target!(|data: &[u8]| {
    let fds = match Header::parse(data) {
        Ok(h) if h.descriptors <= MAX_DESCRIPTORS => h.descriptors as usize,
        _ => 0,
    };
    let Ok(list) = decode(data, fds) else {
        return;
    };
    let expected = renumbered(&list, &mut 0);
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
        assert_eq!(again, expected, "round trip ({order:?}) changed the list");
        // Encoder output is canonical: a second round writes the same bytes.
        assert_eq!(encode(&again, order), bytes, "encode is not idempotent");
    }
});

/// `list` with its descriptors numbered 0, 1, 2, ... in wire order (depth first, pairs in
/// order), as `nvlist_pack` and `encode` number them; `next` is the next number.
fn renumbered(list: &Nvlist, next: &mut i64) -> Nvlist {
    fn number(next: &mut i64) -> i64 {
        *next += 1;
        *next - 1
    }
    let mut out = Nvlist::with_flags(list.flags);
    for (name, value) in list.pairs() {
        let value = match value {
            Value::Descriptor(_) => Value::Descriptor(number(next)),
            Value::DescriptorArray(items) => {
                Value::DescriptorArray(items.iter().map(|_| number(next)).collect())
            }
            Value::Nvlist(sub) => Value::Nvlist(renumbered(sub, next)),
            Value::NvlistArray(subs) => {
                Value::NvlistArray(subs.iter().map(|sub| renumbered(sub, next)).collect())
            }
            other => other.clone(),
        };
        out.push(name.clone(), value);
    }
    out
}
