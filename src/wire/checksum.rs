//! The Internet checksum (RFC 1071) and one's-complement arithmetic on it (RFC 1624), for
//! checking headers and for carrying a checksum over from the segments of a merge without
//! summing their data again.
//!
//! Sums are 16-bit one's-complement values: `0` only for a sum of nothing but zeros, so
//! "the checksum of an intact header is 0" holds as RFC 1071 states it.

/// Folds a one's-complement accumulator to 16 bits (end-around carry).
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words; an odd last byte is the
/// high half of a word padded with zero (RFC 1071).
#[inline]
pub fn sum_words(bytes: &[u8]) -> u16 {
    // A u32 accumulator holds 65537 words of 0xffff without overflowing; headers (the hot
    // case: every guest frame) are far below, and it is measurably faster than a u64 one.
    // Longer inputs are summed in such chunks.
    const CHUNK: usize = 2 * 65536;
    let mut total: u64 = 0;
    for chunk in bytes.chunks(CHUNK) {
        let mut sum: u32 = 0;
        let mut words = chunk.chunks_exact(2);
        for w in &mut words {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u32::from(*last) << 8;
        }
        total += u64::from(sum);
    }
    fold(total)
}

/// The Internet checksum of `bytes`: what goes in a checksum field, and 0 when `bytes` is a
/// header (or a pseudo-header and segment) whose checksum field is intact.
#[inline]
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    !sum_words(bytes)
}

/// `a + b` in one's-complement arithmetic.
#[inline]
pub fn ones_add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// `a - b` in one's-complement arithmetic (adding the complement, RFC 1624 eqn. 3): what is
/// left of a sum `a` when the words summing to `b` are taken out.
#[inline]
pub fn ones_sub(a: u16, b: u16) -> u16 {
    ones_add(a, !b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    /// RFC 1071's definition, done the slow way: the sum of all words modulo 0xffff, where
    /// a non-zero multiple of 0xffff is written 0xffff (one's complement "negative zero").
    fn reference_sum(bytes: &[u8]) -> u16 {
        let mut padded = bytes.to_vec();
        if padded.len() % 2 == 1 {
            padded.push(0);
        }
        let total: u64 = padded
            .chunks(2)
            .map(|w| u64::from(w[0]) * 256 + u64::from(w[1]))
            .sum();
        match total % 0xffff {
            0 if total != 0 => 0xffff,
            r => r as u16,
        }
    }

    #[test]
    fn sums_match_the_definition_for_every_length_and_content() {
        let mut rng = Rng(0xc0ff_ee00);
        for len in (0..300).chain([65535, 65536, 131_073, 200_001]) {
            for fill in 0..4 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| match fill {
                        0 => 0,
                        1 => 0xff,
                        _ => rng.next() as u8,
                    })
                    .collect();
                assert_eq!(
                    sum_words(&bytes),
                    reference_sum(&bytes),
                    "len {len} fill {fill}"
                );
                assert_eq!(internet_checksum(&bytes), !reference_sum(&bytes));
            }
        }
    }

    #[test]
    fn rfc_1071_example_and_an_intact_header_sums_to_zero() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum_words(&bytes), 0xddf2);
        assert_eq!(internet_checksum(&bytes), !0xddf2);
        // A header with its checksum written in checks to 0.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let sum = internet_checksum(&header);
        assert_eq!(sum, 0xb861, "the well-known example header");
        header[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(internet_checksum(&header), 0);
    }

    #[test]
    fn add_and_sub_split_and_join_sums() {
        let mut rng = Rng(0x1624);
        for _ in 0..20_000 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Split at an even offset: the sums of the parts add up to the sum of the whole.
            let cut = rng.below(len / 2 + 1) * 2;
            let (a, b) = bytes.split_at(cut);
            let whole = sum_words(&bytes);
            assert_eq!(ones_add(sum_words(a), sum_words(b)), whole);
            // Taking a part out leaves the other, up to one's complement's two zeros.
            let rest = ones_sub(whole, sum_words(a));
            assert!(
                rest == sum_words(b) || (rest | sum_words(b) == 0xffff && rest & sum_words(b) == 0),
                "{rest:#x} vs {:#x}",
                sum_words(b)
            );
        }
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        // RFC 1624: HC' = ~(~HC + ~m + m') when a field changes from m to m'.
        let mut rng = Rng(0xfeed);
        for _ in 0..10_000 {
            let mut header: Vec<u8> = (0..20).map(|_| rng.next() as u8).collect();
            header[10..12].fill(0);
            let hc = internet_checksum(&header);
            let at = 2 * rng.below(10);
            if at == 10 {
                continue;
            }
            let old = u16::from_be_bytes([header[at], header[at + 1]]);
            let new = rng.next() as u16;
            header[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let updated = !ones_add(ones_sub(!hc, old), new);
            let fresh = internet_checksum(&header);
            assert!(
                updated == fresh || (updated | fresh == 0xffff && updated & fresh == 0),
                "{updated:#x} vs {fresh:#x}"
            );
        }
    }
}
