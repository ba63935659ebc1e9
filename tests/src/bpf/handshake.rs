//! A connection's handshake completed through the programs: the backend's SYN-ACK out of
//! the tunnel and the client's ACK, checked against the kernel's own counter.

use forwarder_common::Counter;

use super::{conn::OpenedConn, constants::TC_ACT_REDIRECT, harness::Harness};

impl Harness {
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
