//! Addresses as the kernel's maps hold them: four 32-bit words in network byte order
//! (an IPv4 address in the first) and an address family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use forwarder_common::{FAMILY_V4, FAMILY_V6};

/// The inverse of [`addr_words`]; `None` for an unknown family.
pub fn words_to_addr(words: [u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(ip_from_words(words, true)),
        FAMILY_V6 => Some(ip_from_words(words, false)),
        _ => None,
    }
}

/// The IPv4 (`v4`) or IPv6 address the words hold.
pub fn ip_from_words(words: [u32; 4], v4: bool) -> IpAddr {
    if v4 {
        return IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()));
    }
    let mut o = [0u8; 16];
    for (chunk, w) in o.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    IpAddr::V6(Ipv6Addr::from(o))
}

pub fn addr_words(a: IpAddr) -> ([u32; 4], u8) {
    match a {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_words_round_trip() {
        for a in ["203.0.113.7", "2001:db8::1", "::ffff:1.2.3.4", "fd00::2"] {
            let a: IpAddr = a.parse().unwrap();
            let (w, f) = addr_words(a);
            assert_eq!(words_to_addr(w, f), Some(a));
        }
        assert_eq!(words_to_addr([0; 4], 0), None);
    }
}
