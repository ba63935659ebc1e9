//! Ending home's side of a connection taken over locally, with the daemon's own
//! capabilities: a TCP socket in repair mode takes the client's place (bound to the
//! client's address with `IP_TRANSPARENT`, which `CAP_NET_ADMIN` allows, and to the
//! tunnel interface), set to the sequence numbers home expects, and is closed with a
//! zero linger, which sends a RST. No raw socket, so no `CAP_NET_RAW`.

use std::{io, net::SocketAddr, os::fd::AsRawFd};

use crate::sys::socket::{self as sys, cvt, setopt, sockaddr};

/// Leaves repair mode without the window probe leaving it normally sends.
const TCP_REPAIR_OFF_NO_WP: i32 = -1;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
/// Binds a socket to an interface; allowed without `CAP_NET_RAW` on an unbound socket
/// since Linux 5.7.
const SO_BINDTOIFINDEX: i32 = 62;

/// Sends home (`backend`, through the tunnel `ifindex`) a RST for its connection with
/// `client`: at `seq`, the sequence number home expects next from the client,
/// acknowledging `ack`, the next one it would send.
pub fn reset_backend(
    client: SocketAddr,
    backend: SocketAddr,
    seq: u32,
    ack: u32,
    ifindex: u32,
) -> io::Result<()> {
    let v4 = client.is_ipv4();
    // SAFETY: a plain socket(2) call; `owned` checks the result.
    let fd = sys::owned(unsafe {
        libc::socket(
            if v4 { libc::AF_INET } else { libc::AF_INET6 },
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    let s = fd.as_raw_fd();
    setopt(s, libc::SOL_TCP, libc::TCP_REPAIR, 1i32)?;
    if v4 {
        setopt(s, libc::SOL_IP, libc::IP_TRANSPARENT, 1i32)?;
    } else {
        setopt(s, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1i32)?;
        setopt(s, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1i32)?;
    }
    setopt(s, libc::SOL_SOCKET, SO_BINDTOIFINDEX, ifindex as i32)?;
    let (local, local_len) = sockaddr(&client);
    // SAFETY: `local` is a valid address of `local_len` bytes.
    cvt(unsafe { libc::bind(s, (&raw const local).cast(), local_len) })?;
    setopt(s, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
    setopt(s, libc::SOL_TCP, libc::TCP_QUEUE_SEQ, seq)?;
    setopt(s, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
    setopt(s, libc::SOL_TCP, libc::TCP_QUEUE_SEQ, ack)?;
    let (peer, peer_len) = sockaddr(&backend);
    // In repair mode connect sends nothing: the socket is established at once.
    // SAFETY: `peer` is a valid address of `peer_len` bytes.
    cvt(unsafe { libc::connect(s, (&raw const peer).cast(), peer_len) })?;
    // Closing in repair mode would send nothing either.
    setopt(s, libc::SOL_TCP, libc::TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)?;
    setopt(
        s,
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )?;
    // Zero linger: close aborts the connection, which sends the RST (at `seq`: the send
    // window is 0, so that is the only acceptable number).
    drop(fd);
    Ok(())
}
