//! Sources that never belong to a client on the public interface, and the key that
//! per-client state (limits, the SYN flood guard) is kept under.

use crate::{FAMILY_V4, FAMILY_V6, SourceKey};

/// IPv6 clients are limited and guarded per /64 unless configured otherwise: one host
/// usually holds a whole /64, so keying on /128 would give it 2^64 identities.
pub const DEFAULT_V6_SOURCE_PREFIX: u8 = 64;

/// Whether `addr` (network byte order words, as parsed) can never be a client's source:
/// unspecified, loopback, multicast, broadcast, link-local, IPv4-mapped or -compatible
/// IPv6. Such packets are spoofed or misrouted; translating them would make the VPS or
/// home answer an address that did not ask. Addresses of the VPS itself, the tunnel and
/// the backends depend on the setup and are in a map the daemon fills (`SOURCE_DENY`).
#[inline(always)]
pub fn is_bogon_source(family: u8, addr: &[u32; 4]) -> bool {
    if family == FAMILY_V4 {
        let a = u32::from_be(addr[0]);
        let first = a >> 24;
        // 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 and above (multicast,
        // reserved, broadcast).
        first == 0 || first == 127 || a >> 16 == 0xa9fe || first >= 224
    } else if family == FAMILY_V6 {
        let w0 = u32::from_be(addr[0]);
        let (w1, w2) = (addr[1], u32::from_be(addr[2]));
        // ::/96 (unspecified, loopback, IPv4-compatible) and ::ffff:0:0/96 (IPv4-mapped):
        // a v4 source dressed as v6.
        let low96_zero = w0 == 0 && w1 == 0;
        if low96_zero && (w2 == 0 || w2 == 0xffff) {
            return true;
        }
        // ff00::/8 multicast, fe80::/10 link-local.
        w0 >> 24 == 0xff || w0 >> 22 == 0xfe80 >> 6
    } else {
        true
    }
}

/// The key per-client state is kept under: the address, an IPv6 one cut to its first
/// `v6_prefix` bits (0: the default /64).
#[inline(always)]
pub fn source_key(family: u8, addr: &[u32; 4], v6_prefix: u8) -> SourceKey {
    let mut k = SourceKey {
        addr: *addr,
        family,
        _pad: [0; 3],
    };
    if family == FAMILY_V6 {
        let bits = if v6_prefix == 0 || v6_prefix > 128 {
            DEFAULT_V6_SOURCE_PREFIX as u32
        } else {
            v6_prefix as u32
        };
        // Unrolled: the verifier sees four independent masks rather than a loop.
        k.addr[0] = mask_word(addr[0], bits, 0);
        k.addr[1] = mask_word(addr[1], bits, 32);
        k.addr[2] = mask_word(addr[2], bits, 64);
        k.addr[3] = mask_word(addr[3], bits, 96);
    }
    k
}

/// The network-order word at bit `start` of an address with only its first `bits` kept.
#[inline(always)]
fn mask_word(w: u32, bits: u32, start: u32) -> u32 {
    if bits >= start + 32 {
        w
    } else if bits <= start {
        0
    } else {
        let keep = bits - start;
        (u32::from_be(w) & !(u32::MAX >> keep)).to_be()
    }
}
