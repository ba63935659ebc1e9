//! Header parsing shared by the kernel programs and the host-side tests.
//!
//! The parser reads through the [`Bytes`] trait: on the host it is implemented for byte
//! slices, in the kernel for the packet between `data` and `data_end`, where every access is
//! bounds-checked so the verifier accepts it. Loops are bounded by constants.

mod bytes;
mod headers;
mod parse;
mod tcp_options;
#[cfg(test)]
mod tests;

pub use self::{
    bytes::{Bytes, COPY_MAX, FIND_MAX},
    headers::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPV4_CSUM_OFF, IPV4_DST_OFF,
        IPV4_HLEN, IPV4_SRC_OFF, IPV6_DST_OFF, IPV6_HLEN, IPV6_SRC_OFF, MAX_VLAN_TAGS, TCP_ACK,
        TCP_CSUM_OFF, TCP_FIN, TCP_FLAGS_OFF, TCP_HLEN, TCP_RST, TCP_SYN, UDP_CSUM_OFF, UDP_HLEN,
        VLAN_HLEN,
    },
    parse::{
        PacketInfo, Skip, parse_ethernet, parse_ethernet_into, parse_ip, parse_ip_into,
        tcp_flags_valid,
    },
    tcp_options::{
        MAX_TCP_OPTIONS, TCPOPT_EOL, TCPOPT_MSS, TCPOPT_NOP, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP,
        TCPOPT_WSCALE, clamp_mss, find_mss,
    },
};
