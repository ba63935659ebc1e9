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

/// The one's-complement sum of the TCP/UDP pseudo-header (RFC 9293 3.1, RFC 768, RFC 8200
/// 8.1), unfolded: source and destination address (raw words; IPv4 uses only the first),
/// the protocol and the L4 length (host order). Words are summed as they sit in the
/// packet, like everything in this module.
#[inline(always)]
pub const fn pseudo_sum(src: &[u32; 4], dst: &[u32; 4], v4: bool, proto: u8, l4_len: u16) -> u32 {
    let words = if v4 { 1 } else { 4 };
    let mut sum =
        u16::from_ne_bytes([0, proto]) as u32 + u16::from_ne_bytes(l4_len.to_be_bytes()) as u32;
    let mut i = 0;
    while i < words {
        sum += (src[i] & 0xffff) + (src[i] >> 16) + (dst[i] & 0xffff) + (dst[i] >> 16);
        i += 1;
    }
    sum
}

/// Whether the checksum field `check` holds only the pseudo-header sum `pseudo` (from
/// [`pseudo_sum`]): what a stack that left the checksum to offload writes there
/// (`CHECKSUM_PARTIAL`), the device or the kernel adding the segment's own sum later. A
/// complete checksum matches by chance about once in 65 535 packets.
#[inline(always)]
pub const fn looks_partial(check: u16, pseudo: u32) -> bool {
    let p = fold(pseudo);
    // 0x0000 and 0xffff are the same value in one's complement.
    check == p || (check == 0 || check == 0xffff) && (p == 0 || p == 0xffff)
}

/// Updates a partial checksum field (the pseudo-header sum, not its complement) after a
/// 32-bit pseudo-header field changed from `old` to `new`: the sum moves with the field.
#[inline(always)]
pub const fn partial_replace4(partial: u16, old: u32, new: u32) -> u16 {
    !replace4(!partial, old, new)
}

/// [`partial_replace4`] for an IPv6 address (four raw words).
#[inline(always)]
pub const fn partial_replace16(partial: u16, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    !replace16(!partial, old, new)
}

/// What has to be added (one's complement) to the field value `written` to give `want`;
/// 0 when nothing has to (0x0000 and 0xffff both mean zero).
#[inline(always)]
pub const fn correction(want: u16, written: u16) -> u16 {
    let d = fold(want as u32 + (!written) as u32);
    if d == 0xffff { 0 } else { d }
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
    use std::{vec, vec::Vec};

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

    /// The checksum a receiver expects of `seg` (checksum field at `ck`) under the pseudo
    /// header of `src`, `dst` (4 or 16 bytes each) and `proto`, as big-endian bytes.
    fn full_checksum(src: &[u8], dst: &[u8], proto: u8, seg: &[u8], ck: usize) -> u16 {
        let mut buf = Vec::new();
        buf.extend_from_slice(src);
        buf.extend_from_slice(dst);
        buf.extend_from_slice(&[0, proto]);
        buf.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        let mut seg = seg.to_vec();
        seg[ck..ck + 2].fill(0);
        buf.extend_from_slice(&seg);
        checksum_be(&buf)
    }

    fn words(addr: &[u8]) -> [u32; 4] {
        let mut w = [0u32; 4];
        for (i, c) in addr.chunks(4).enumerate() {
            w[i] = u32::from_ne_bytes(c.try_into().unwrap());
        }
        w
    }

    fn same(a: u16, b: u16) -> bool {
        a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
    }

    /// A TCP segment whose checksum was left to offload (the field holds the pseudo-header
    /// sum) goes through XDP's destination NAT and MSS clamp, written for complete
    /// checksums; the correction XDP hands to tc, applied the way the kernel's
    /// `bpf_l4_csum_replace` treats a `CHECKSUM_PARTIAL` skb (`BPF_F_PSEUDO_HDR`: the field
    /// moves by to - from), makes the checksum the kernel completes at transmit right.
    fn partial_segment_is_repaired(
        v4: bool,
        src: Vec<u8>,
        dst: Vec<u8>,
        new_dst: Vec<u8>,
        mut seg: Vec<u8>,
        new_port: u16,
        new_mss: u16,
    ) -> Result<(), TestCaseError> {
        const CK: usize = 16;
        const PROTO: u8 = 6;
        let (sw, dw, nw) = (words(&src), words(&dst), words(&new_dst));
        let pseudo = pseudo_sum(&sw, &dw, v4, PROTO, seg.len() as u16);
        let c0 = fold(pseudo);
        seg[CK..CK + 2].copy_from_slice(&c0.to_ne_bytes());
        prop_assert!(looks_partial(c0, pseudo));
        // XDP's rewrite: address (pseudo header only), port at 2, an MSS word at 22.
        let mut c = if v4 {
            replace4(c0, dw[0], nw[0])
        } else {
            replace16(c0, &dw, &nw)
        };
        let old_port = u16::from_ne_bytes([seg[2], seg[3]]);
        let port = new_port.to_ne_bytes();
        seg[2..4].copy_from_slice(&port);
        c = replace2(c, old_port, u16::from_ne_bytes(port));
        let old_mss = u16::from_ne_bytes([seg[22], seg[23]]);
        let mss = new_mss.to_ne_bytes();
        seg[22..24].copy_from_slice(&mss);
        c = replace2(c, old_mss, u16::from_ne_bytes(mss));
        let want = if v4 {
            partial_replace4(c0, dw[0], nw[0])
        } else {
            partial_replace16(c0, &dw, &nw)
        };
        let fix = correction(want, c);
        // tc, for a CHECKSUM_PARTIAL skb: the field moves by +fix.
        let repaired = fold(c as u32 + fix as u32);
        prop_assert!(same(repaired, want));
        // The kernel (or the device) completes it over the segment.
        seg[CK..CK + 2].copy_from_slice(&repaired.to_ne_bytes());
        let done = checksum_be(&seg);
        let expect = full_checksum(&src, &new_dst, PROTO, &seg, CK);
        prop_assert!(
            same(done, expect),
            "completed {done:#06x}, expected {expect:#06x}"
        );
        Ok(())
    }

    /// The lab's client SYN (203.0.113.2:40000 -> 203.0.113.1:443, MSS 1460): with its
    /// complete checksum it does not look partial; with the pseudo-header sum it does.
    #[test]
    fn a_syn_looks_partial_only_with_the_pseudo_header_sum() {
        let (src, dst) = ([203, 0, 113, 2], [203, 0, 113, 1]);
        let mut seg = vec![
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, 2,
            4, 0x05, 0xb4,
        ];
        let pseudo = pseudo_sum(&words(&src), &words(&dst), true, 6, seg.len() as u16);
        let full = full_checksum(&src, &dst, 6, &seg, 16);
        seg[16..18].copy_from_slice(&full.to_be_bytes());
        assert!(!looks_partial(
            u16::from_ne_bytes([seg[16], seg[17]]),
            pseudo
        ));
        assert!(looks_partial(fold(pseudo), pseudo));
        // What Linux writes there when it leaves the checksum to offload,
        // `~tcp_v4_check(len, saddr, daddr, 0)`: cb00 + 7102 + cb00 + 7101 + 0006 + 0018,
        // folded.
        assert_eq!(u16::from_be_bytes(fold(pseudo).to_ne_bytes()), 0x7823);
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

        #[test]
        fn partial_ipv4_segment_is_repaired(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
                                            new_dst in any::<[u8; 4]>(),
                                            seg in proptest::collection::vec(any::<u8>(), 24..200),
                                            port in any::<u16>(), mss in any::<u16>()) {
            partial_segment_is_repaired(true, src.to_vec(), dst.to_vec(), new_dst.to_vec(), seg, port, mss)?;
        }

        #[test]
        fn partial_ipv6_segment_is_repaired(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
                                            new_dst in any::<[u8; 16]>(),
                                            seg in proptest::collection::vec(any::<u8>(), 24..200),
                                            port in any::<u16>(), mss in any::<u16>()) {
            partial_segment_is_repaired(false, src.to_vec(), dst.to_vec(), new_dst.to_vec(), seg, port, mss)?;
        }
    }
}
