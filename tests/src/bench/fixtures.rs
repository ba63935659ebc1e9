//! What every measurement runs against: a user's host table, and connections whose first
//! payload is split into segments.

use std::net::IpAddr;

use crate::bpf::{ACK, BACKEND4, OpenedConn, PSH, PUBLIC4, Pkt};

/// A host table like a user's: a few exact names and a wildcard.
pub(super) const BENCH_HOSTS: &[&str] = &[
    "app.example.test",
    "blog.example.test",
    "media.example.test",
    "*.svc.example.test",
];

pub(super) fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// `n` connections from client address 198.18.`client`.7, each a SYN and then `payload`
/// in `segments` segments, each connection from its own source port.
pub(super) fn first_payload_conns(
    n: u32,
    payload: &[u8],
    segments: usize,
    client: u8,
) -> Vec<OpenedConn> {
    // Each row its own client address, so no row finds flows another one classified.
    let c4: IpAddr = std::net::Ipv4Addr::new(198, 18, client, 7).into();
    let p4: IpAddr = PUBLIC4.into();
    let b4: IpAddr = BACKEND4.into();
    let part = payload.len().div_ceil(segments);
    (0..n)
        .map(|i| {
            let port = 30000 + (i % 30000) as u16;
            let mut conn = OpenedConn::handshake((c4, port), (p4, 443), (b4, 443));
            let mut seq = conn.client_seq;
            for chunk in payload.chunks(part) {
                conn.payload.push(
                    Pkt::tcp(c4, port, p4, 443, ACK | PSH)
                        .seq(seq)
                        .ack(conn.client_ack)
                        .payload(chunk)
                        .frame(),
                );
                seq += chunk.len() as u32;
            }
            conn
        })
        .collect()
}
