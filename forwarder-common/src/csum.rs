//! Internet checksum arithmetic (RFC 1071, incremental updates per RFC 1624).
//!
//! All values are taken exactly as they sit in the packet (loaded with native byte order
//! from network-order bytes). One's-complement sums are byte-order independent, so
//! updating a checksum loaded the same way gives the right bytes on any host.

/// Folds a 32-bit one's-complement accumulator into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Updates checksum `check` after a 16-bit word changed from `old` to `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
#[inline(always)]
pub const fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32) + (!old as u32) + (new as u32);
    !fold(sum)
}

/// Updates checksum `check` after a 32-bit field changed from `old` to `new`.
#[inline(always)]
pub const fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check as u32) + ((!old) & 0xffff) + ((!old) >> 16) + (new & 0xffff) + (new >> 16);
    !fold(sum)
}

/// Updates checksum `check` after a 128-bit field (an IPv6 address as four raw words)
/// changed from `old` to `new`.
#[inline(always)]
pub const fn replace16(check: u16, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    let c = replace4(check, old[0], new[0]);
    let c = replace4(c, old[1], new[1]);
    let c = replace4(c, old[2], new[2]);
    replace4(c, old[3], new[3])
}

/// One's-complement sum of `data` read as big-endian 16-bit words, with an odd final byte
/// padded by zero. Used by tests and the daemon to verify checksums independently of the
/// incremental arithmetic above.
pub fn sum_be(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum > 0xffff_ffff {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// The full Internet checksum of `data` (big-endian result).
pub fn checksum_be(data: &[u8]) -> u16 {
    !fold(sum_be(data, 0))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set_be(buf: &mut [u8], off: usize, v: u16) {
        buf[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071 section 3: sum is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_be(&data, 0)), 0xddf2);
        assert_eq!(checksum_be(&data), !0xddf2);
    }

    proptest! {
        /// An incremental update of any 4-byte field gives the checksum a full recompute
        /// gives, for both byte orders the kernel and the host may load values in.
        #[test]
        fn replace4_matches_recompute(mut data in proptest::collection::vec(any::<u8>(), 8..64),
                                      field in 0usize..7, new in any::<u32>()) {
            let off = (field * 4).min(data.len() / 2 * 2 - 4) & !1;
            // The checksum lives in the last two bytes of an even-length buffer.
            if data.len() % 2 == 1 { data.pop(); }
            let ck_off = data.len() - 2;
            prop_assume!(off + 4 <= ck_off);
            set_be(&mut data, ck_off, 0);
            let ck = checksum_be(&data);
            set_be(&mut data, ck_off, ck);
            // Native-order load, as the kernel does.
            let old = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap());
            let old_ck = u16::from_ne_bytes(data[ck_off..ck_off + 2].try_into().unwrap());
            data[off..off + 4].copy_from_slice(&new.to_ne_bytes());
            let upd = replace4(old_ck, old, new);
            set_be(&mut data, ck_off, 0);
            let full = checksum_be(&data);
            // 0x0000 and 0xffff are the same value in one's complement.
            let upd_be = u16::from_be_bytes(upd.to_ne_bytes());
            prop_assert!(upd_be == full || (upd_be == 0xffff && full == 0) || (upd_be == 0 && full == 0xffff),
                "incremental {upd_be:#06x} != recomputed {full:#06x}");
        }

        #[test]
        fn replace2_matches_recompute(mut data in proptest::collection::vec(any::<u8>(), 4..64),
                                      word in 0usize..31, new in any::<u16>()) {
            if data.len() % 2 == 1 { data.pop(); }
            let ck_off = data.len() - 2;
            let off = (word * 2) % ck_off.max(2);
            prop_assume!(off + 2 <= ck_off);
            set_be(&mut data, ck_off, 0);
            let ck = checksum_be(&data);
            set_be(&mut data, ck_off, ck);
            let old = u16::from_ne_bytes(data[off..off + 2].try_into().unwrap());
            let old_ck = u16::from_ne_bytes(data[ck_off..ck_off + 2].try_into().unwrap());
            data[off..off + 2].copy_from_slice(&new.to_ne_bytes());
            let upd = u16::from_be_bytes(replace2(old_ck, old, new).to_ne_bytes());
            set_be(&mut data, ck_off, 0);
            let full = checksum_be(&data);
            prop_assert!(upd == full || (upd == 0xffff && full == 0) || (upd == 0 && full == 0xffff));
        }
    }
}
