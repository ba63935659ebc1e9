//! A TCP connection as the tests drive it: its flow key and the packets of its handshake.

use std::net::IpAddr;

use forwarder_common::{FlowKey, PROTO_TCP, addr_words};

use super::packet::{ACK, Pkt, SYN, mss_option};

/// The forward flow key of the TCP connection `client` -> `public`.
pub fn flow_key(client: (IpAddr, u16), public: (IpAddr, u16)) -> FlowKey {
    let (src, family) = addr_words(client.0);
    let (dst, _) = addr_words(public.0);
    FlowKey {
        src,
        dst,
        sport: client.1.to_be(),
        dport: public.1.to_be(),
        proto: PROTO_TCP,
        family,
        _pad: [0; 2],
    }
}

/// A TCP connection through the whole handshake: the client's SYN (a frame), the
/// backend's SYN-ACK (an IP packet, as it comes out of the tunnel), the client's ACK of it
/// (a frame), and what the client sends next.
pub struct OpenedConn {
    pub syn: Vec<u8>,
    pub synack: Vec<u8>,
    pub ack: Vec<u8>,
    pub payload: Vec<Vec<u8>>,
    /// The client's next sequence number and the acknowledgment it sends from now on.
    pub client_seq: u32,
    pub client_ack: u32,
}

impl OpenedConn {
    pub fn handshake(client: (IpAddr, u16), public: (IpAddr, u16), backend: (IpAddr, u16)) -> Self {
        let (isn, server_isn) = (0x1000_0000u32, 0x6000_0000u32);
        OpenedConn {
            syn: Pkt::tcp(client.0, client.1, public.0, public.1, SYN)
                .seq(isn)
                .options(mss_option(1460))
                .frame(),
            synack: Pkt::tcp(backend.0, backend.1, client.0, client.1, SYN | ACK)
                .seq(server_isn)
                .ack(isn + 1)
                .options(mss_option(1460))
                .ip(),
            ack: Pkt::tcp(client.0, client.1, public.0, public.1, ACK)
                .seq(isn + 1)
                .ack(server_isn + 1)
                .frame(),
            payload: Vec::new(),
            client_seq: isn + 1,
            client_ack: server_isn + 1,
        }
    }
}
