//! libnv decoder: never panics on any buffer, and every list it accepts survives an
//! encode/decode round trip in both byte orders (the encoder's output is what libnv's
//! `nvlist_pack` writes, so the decoder must take it back unchanged).
//!
//! The number of received descriptors is taken from the header itself (bounded as
//! `recv_config` bounds it), so the descriptor paths are reachable: `decode` insists the
//! top-level header announces exactly the descriptors received.
//!
//! `NVLIST_SKIP_KNOWN_DESCRIPTOR_GAP=1` skips the round trip for lists holding a descriptor
//! index at or above their number of descriptor items (finding F1 in docs/fuzzing.md: `encode`
//! announces only the items it writes, so such indices do not survive), so that a run can look
//! past that known bug; without it the bug stops the run within minutes.
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
    if std::env::var_os("NVLIST_SKIP_KNOWN_DESCRIPTOR_GAP").is_some() {
        let (items, max) = descriptors(&list);
        if max.is_some_and(|m| m >= items) {
            return;
        }
    }
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

/// Descriptor items in the tree and the largest index among them.
fn descriptors(list: &Nvlist) -> (i64, Option<i64>) {
    let mut items = 0;
    let mut max = None;
    for (_, value) in list.pairs() {
        let (n, m) = match value {
            Value::Descriptor(i) => (1, Some(*i)),
            Value::DescriptorArray(v) => (v.len() as i64, v.iter().copied().max()),
            Value::Nvlist(sub) => descriptors(sub),
            Value::NvlistArray(subs) => subs
                .iter()
                .map(descriptors)
                .fold((0, None), |(n, m), (n2, m2)| (n + n2, m.max(m2))),
            _ => (0, None),
        };
        items += n;
        max = max.max(m);
    }
    (items, max)
}
