//! A connection's handshake completed through the programs: the backend's SYN-ACK out of
//! the tunnel and the client's ACK, checked against the kernel's own counter.

use std::net::IpAddr;

use forwarder_common::Counter;

use super::{
    conn::OpenedConn,
    constants::TC_ACT_REDIRECT,
    harness::Harness,
    packet::{ACK, Pkt, SYN, mss_option},
};

/// Sequence numbers of the connections `Harness::open` opens: the client's next segment
/// and its acknowledgment are then `Pkt::tcp`'s defaults, so a test's later packets
/// continue the connection as they are.
pub const OPEN_ISN: u32 = 0x0fff_ffff;
pub const OPEN_SERVER_ISN: u32 = 0x1fff_ffff;

impl Harness {
    /// The backend's SYN-ACK to `syn` (sent already), out of the tunnel: numbered
    /// `OPEN_SERVER_ISN`, so that a client ACK with `Pkt::tcp`'s default acknowledgment
    /// completes the handshake.
    pub fn answer(&self, syn: &Pkt, backend: (IpAddr, u16)) {
        let synack = Pkt::tcp(backend.0, backend.1, syn.src, syn.sport, SYN | ACK)
            .seq(OPEN_SERVER_ISN)
            .ack(syn.seq.wrapping_add(1))
            .options(mss_option(1460));
        let (v, _) = self.tunnel(&synack.ip());
        assert_eq!(v, TC_ACT_REDIRECT, "SYN-ACK not translated");
    }

    /// Opens the TCP connection `client` -> `public` (rule toward `backend`) through the
    /// programs: SYN, the backend's SYN-ACK, the client's ACK. Its later packets built with
    /// `Pkt::tcp`'s default numbers continue it.
    pub fn open(
        &self,
        tc_only: bool,
        client: (IpAddr, u16),
        public: (IpAddr, u16),
        backend: (IpAddr, u16),
    ) {
        let syn = Pkt::tcp(client.0, client.1, public.0, public.1, SYN)
            .seq(OPEN_ISN)
            .options(mss_option(1460));
        let send = |p: &Pkt| {
            if tc_only {
                self.tc_ingress(&p.frame());
            } else {
                self.xdp(&p.frame());
            }
        };
        send(&syn);
        self.answer(&syn, backend);
        let confirmed = self.counter(Counter::FlowsConfirmed);
        send(&Pkt::tcp(client.0, client.1, public.0, public.1, ACK));
        assert_eq!(
            self.counter(Counter::FlowsConfirmed),
            confirmed + 1,
            "the handshake did not establish the connection"
        );
    }

    /// The backend's SYN-ACK and the client's ACK of `conn`, whose SYN went through
    /// already: the connection moves to the established table.
    pub fn finish_handshake(&self, conn: &OpenedConn, tc_only: bool) {
        let (v, _) = self.tunnel(&conn.synack);
        assert_eq!(v, TC_ACT_REDIRECT, "SYN-ACK not translated");
        let confirmed = self.counter(Counter::FlowsConfirmed);
        if tc_only {
            self.tc_ingress(&conn.ack);
        } else {
            self.xdp(&conn.ack);
        }
        assert_eq!(
            self.counter(Counter::FlowsConfirmed),
            confirmed + 1,
            "the handshake did not establish the connection"
        );
    }
}
