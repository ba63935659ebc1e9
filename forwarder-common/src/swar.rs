//! Byte tests eight at a time on a `u64` ("SIMD within a register"). The kernel's scanners
//! and the parser use them for two reasons: a word is one load instead of eight, and a
//! run length computed with arithmetic is one value to the BPF verifier, where a loop that
//! stops at the first mismatch is one path per possible length for everything after it.
//!
//! Words hold bytes in memory order, first byte lowest (`u64::from_le_bytes`). A byte mask
//! has the high bit (0x80) of each selected byte set and every other bit clear.

/// 0x01 in every byte.
pub const ONES: u64 = 0x0101_0101_0101_0101;
/// 0x80 in every byte: the bits of a byte mask.
pub const HIGHS: u64 = 0x8080_8080_8080_8080;
const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The bytes of `x` that are zero (exact: no false positives from borrows).
#[inline(always)]
pub fn zero_bytes(x: u64) -> u64 {
    !(((x & LOWS).wrapping_add(LOWS)) | x | LOWS)
}

/// The bytes of `x` equal to `c`.
#[inline(always)]
pub fn eq_bytes(x: u64, c: u8) -> u64 {
    zero_bytes(x ^ (c as u64).wrapping_mul(ONES))
}

/// The bytes of `x` that are one of `set`.
#[inline(always)]
pub fn set_bytes(x: u64, set: &[u8; 4]) -> u64 {
    let mut hits = 0;
    let mut k = 0;
    while k < 4 {
        hits |= eq_bytes(x, set[k]);
        k += 1;
    }
    hits
}

/// The bytes of `x` that are ASCII uppercase letters (`b'A'..=b'Z'`).
#[inline(always)]
pub fn upper_bytes(x: u64) -> u64 {
    // With the high bit set first, each byte is 0x80 + (b & 0x7f): subtracting less than
    // 0x80 never borrows from the next byte, and the high bit stays set exactly when
    // b & 0x7f is at least what was subtracted.
    let y = x | HIGHS;
    let from_a = y.wrapping_sub(0x41 * ONES);
    let past_z = y.wrapping_sub(0x5b * ONES);
    from_a & !past_z & !x & HIGHS
}

/// The mask of the first `k` bytes (`k` at most 8; more counts as 8).
#[inline(always)]
pub fn first_bytes(k: usize) -> u64 {
    let k = if k > 8 { 8 } else { k } as u32;
    // Two shifts of at most 32 bits: one of 64 would overflow for k = 8.
    ((1u64 << (4 * k)) << (4 * k)).wrapping_sub(1) & HIGHS
}

/// How many of the first bytes are all in `mask`, 0 to 8: the length of the run the mask
/// starts with.
#[inline(always)]
pub fn run_len(mask: u64) -> usize {
    ((!mask & HIGHS).trailing_zeros() / 8) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_of(bytes: [u8; 8], pred: impl Fn(u8) -> bool) -> u64 {
        let mut m = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if pred(b) {
                m |= 0x80 << (i * 8);
            }
        }
        m
    }

    /// Every byte value in every position, against the plain per-byte test.
    #[test]
    fn byte_tests_match_their_definitions() {
        for v in 0..=255u8 {
            for pos in 0..8 {
                // The byte under test among neighbours that could borrow or carry.
                for fill in [0x00, 0x41, 0x5a, 0x7f, 0x80, 0xff, b'\n'] {
                    let mut bytes = [fill; 8];
                    bytes[pos] = v;
                    let x = u64::from_le_bytes(bytes);
                    assert_eq!(zero_bytes(x), mask_of(bytes, |b| b == 0), "{bytes:?}");
                    assert_eq!(eq_bytes(x, b' '), mask_of(bytes, |b| b == b' '));
                    assert_eq!(
                        set_bytes(x, b"hH\r\n"),
                        mask_of(bytes, |b| matches!(b, b'h' | b'H' | b'\r' | b'\n'))
                    );
                    assert_eq!(
                        upper_bytes(x),
                        mask_of(bytes, |b| b.is_ascii_uppercase()),
                        "{bytes:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn runs_and_prefixes() {
        for k in 0..=10 {
            let want = (0..k.min(8)).fold(0u64, |m, i| m | 0x80 << (i * 8));
            assert_eq!(first_bytes(k), want, "k = {k}");
            assert_eq!(run_len(first_bytes(k)), k.min(8));
        }
        assert_eq!(run_len(0), 0);
        assert_eq!(run_len(HIGHS), 8);
        assert_eq!(run_len(0x80 | 0x80 << 16), 1);
    }
}
