//! Whether a RST or FIN belongs to the connection it claims: its sequence number inside
//! what the connection has carried. A stranger who does not see the connection has to
//! guess it; a wrong guess changes nothing here.

/// How far past the last byte we saw a genuine segment may start: segments lost before
/// reaching the VPS leave a gap, and a RST sent after them starts past it. One unscaled
/// window: a blind guess succeeds with odds of about 1 in 65 536 per packet.
pub const SEQ_SLACK: u32 = 65_535;

/// The sequence number just past a segment: payload, plus one each for SYN and FIN.
#[inline(always)]
pub fn seq_end(seq: u32, payload_len: u32, syn: bool, fin: bool) -> u32 {
    seq.wrapping_add(payload_len)
        .wrapping_add(syn as u32)
        .wrapping_add(fin as u32)
}

/// Whether a RST or FIN with sequence number `seq` is in the window its sender's
/// direction has seen: from the lowest number the receiver may still expect (`acked`, the
/// highest acknowledgment it sent, or `sent_end` when it has acknowledged nothing) to
/// `SEQ_SLACK` past the end of what the sender sent (`sent_end`). Wrapping arithmetic:
/// sequence numbers are modulo 2^32.
#[inline(always)]
pub fn end_in_window(seq: u32, sent_end: u32, acked: Option<u32>) -> bool {
    let lo = match acked {
        // An acknowledgment past what was sent is the receiver's own business; the
        // window then starts at what was sent.
        Some(a) if sent_end.wrapping_sub(a) as i32 >= 0 => a,
        _ => sent_end,
    };
    let width = sent_end.wrapping_sub(lo).wrapping_add(SEQ_SLACK);
    seq.wrapping_sub(lo) <= width
}
