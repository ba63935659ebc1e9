//! TCP options: finding the MSS option and clamping its value.

use super::{bytes::Bytes, headers::TCP_HLEN};

/// TCP option kinds.
pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_MSS: u8 = 2;
pub const TCPOPT_WSCALE: u8 = 3;
pub const TCPOPT_SACK_PERM: u8 = 4;
pub const TCPOPT_TIMESTAMP: u8 = 8;
/// Options looked at before giving up. Every common stack (Linux, Windows, macOS, iOS,
/// Android) sends MSS as the first option of SYN and SYN-ACK; a few more allow for leading
/// NOPs. The bound is kept small because the verifier walks every path through this loop.
pub const MAX_TCP_OPTIONS: usize = 4;

/// Finds the MSS option of the TCP header at `l4_off` (length `tcp_hlen`). Returns the
/// offset of its 16-bit value and the value. Malformed option lists yield `None`: the
/// segment is then forwarded unclamped rather than rewritten on a guess.
#[inline(always)]
pub fn find_mss<B: Bytes + ?Sized>(b: &B, l4_off: usize, tcp_hlen: usize) -> Option<(usize, u16)> {
    let end = l4_off + tcp_hlen;
    let mut off = l4_off + TCP_HLEN;
    let mut i = 0;
    while i < MAX_TCP_OPTIONS {
        if off >= end {
            return None;
        }
        let kind = b.raw8(off)?;
        if kind == TCPOPT_EOL {
            return None;
        }
        if kind == TCPOPT_NOP {
            off += 1;
        } else {
            let len = b.raw8(off + 1)? as usize;
            if len < 2 || off + len > end {
                return None;
            }
            if kind == TCPOPT_MSS {
                if len != 4 {
                    return None;
                }
                return Some((off + 2, b.be16(off + 2)?));
            }
            off += len;
        }
        i += 1;
    }
    None
}

/// The MSS a SYN should carry after clamping to `max`, or `None` if it is already small
/// enough.
#[inline(always)]
pub const fn clamp_mss(current: u16, max: u16) -> Option<u16> {
    if current > max { Some(max) } else { None }
}
