//! What the kernel checks before it hands a datagram to the daemon (`no_std`).

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;
/// Clients pad every datagram carrying an Initial to at least this many bytes (RFC 9000
/// section 14.1); servers drop smaller ones, and so does the kernel's check.
pub const MIN_INITIAL_DATAGRAM: usize = 1200;
/// A connection ID is at most 20 bytes in versions 1 and 2.
pub const MAX_CID_LEN: usize = 20;

/// True when `first` (the first byte) and `version` (bytes 1..5, big-endian) start a
/// long-header Initial packet of a version we can decrypt. The kernel checks this, plus
/// the datagram's size, before copying a datagram to the daemon.
#[inline(always)]
pub fn is_initial(first: u8, version: u32) -> bool {
    // Header form (long) and the fixed bit.
    if first & 0xc0 != 0xc0 {
        return false;
    }
    let ty = (first >> 4) & 3;
    match version {
        VERSION_1 => ty == 0,
        VERSION_2 => ty == 1,
        _ => false,
    }
}
