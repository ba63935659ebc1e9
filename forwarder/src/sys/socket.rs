//! The socket calls the daemon and the CLI make by hand (libc), behind safe functions:
//! results as `io::Error`, socket options, socket addresses, and whole IP packets sent
//! into an interface through a raw socket, or seen arriving on one through a packet tap.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

/// A libc return value as a result: negative means `errno`.
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A descriptor libc just returned, owned from here on.
pub fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(fd)?;
    // SAFETY: `fd` is a new descriptor (checked above) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn setopt<T: Copy>(fd: libc::c_int, level: i32, name: i32, v: T) -> io::Result<()> {
    // SAFETY: `v` is valid for reads of its size, which is what is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const v).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub fn sockaddr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut st).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { (&raw mut st).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// A raw socket of `to`'s family that sends whole IP packets (IPPROTO_RAW: the packet
/// carries its own header), bound to interface `ifindex` rather than following the
/// route to the destination. Needs CAP_NET_RAW.
pub fn raw_sender(to: IpAddr, ifindex: u32) -> io::Result<OwnedFd> {
    let family = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a plain socket(2) call; `owned` checks the result.
    let fd = owned(unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    })?;
    const SO_BINDTOIFINDEX: i32 = 62;
    setopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        SO_BINDTOIFINDEX,
        ifindex as i32,
    )?;
    Ok(fd)
}

/// Sends the IP packet `packet` to `to` through a [`raw_sender`] socket.
pub fn send_packet(fd: &OwnedFd, to: IpAddr, packet: &[u8]) -> io::Result<()> {
    let (sa, len) = sockaddr(&SocketAddr::new(to, 0));
    // SAFETY: `packet` and `sa` are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const sa).cast(),
            len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An AF_PACKET socket that sees every packet interface `ifindex` receives, before tc
/// ingress (for the tunnel: the IP packets themselves, it has no link-layer header).
pub fn packet_tap(ifindex: u32) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: a plain socket(2) call; `owned` checks the result.
    let fd = owned(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    })?;
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and its exact size is passed.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// The next packet `fd` receives into `buf`, waiting at most `wait`: its length, or
/// `None` when nothing came (or the wait was interrupted).
pub fn recv_within(fd: &OwnedFd, buf: &mut [u8], wait: Duration) -> Option<usize> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis().max(1)).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, its count, a bounded timeout.
    if unsafe { libc::poll(&raw mut pfd, 1, ms) } <= 0 {
        return None;
    }
    // SAFETY: `buf` is valid for writes of its length.
    let got = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(got).ok()
}
