//! The TLS side: a ClientHello read field by field, up to its server_name.

use super::{
    limits::MAX_EXTENSIONS,
    state::{ClassifyState, NameAt, Outcome, Progress, carry_from},
};
use crate::packet::Bytes;

// TLS stages: which field starts at `state.pos`.
pub(super) const TLS_RECORD: u8 = 0;
const TLS_SESSION_ID: u8 = 1;
const TLS_CIPHERS: u8 = 2;
const TLS_COMPRESSION: u8 = 3;
const TLS_EXTENSIONS_LEN: u8 = 4;
const TLS_EXTENSION: u8 = 5;
const TLS_SNI: u8 = 6;

/// TLS extensions skipped per step at most.
const EXTENSIONS_PER_STEP: usize = 4;

#[inline(always)]
pub(super) fn tls_step<B: Bytes + ?Sized>(
    s: &mut ClassifyState,
    b: &B,
    len: usize,
    base: u32,
) -> Option<Progress> {
    use Outcome::TlsMalformed as Bad;
    // One field per iteration; the extension loop is the long part.
    // Offset of the current field in this buffer.
    let Some(at) = s.pos.checked_sub(base) else {
        return Some(Progress::Done(Bad));
    };
    let at = at as usize;
    if at > len {
        // The field starts in a later segment: nothing to carry.
        s.carry_len = 0;
        return Some(Progress::NeedMore);
    }
    if s.stage == TLS_EXTENSION && s.pos == s.ext_end {
        return Some(Progress::Done(Outcome::TlsNoSni));
    }
    let need = match s.stage {
        TLS_RECORD => 5 + 4 + 2 + 32 + 1,
        TLS_SESSION_ID | TLS_CIPHERS | TLS_EXTENSIONS_LEN => 2,
        TLS_COMPRESSION => 1,
        TLS_EXTENSION => 4,
        _ => 5,
    };
    if at + need > len {
        return Some(carry_from(s, b, at, len, base, Bad));
    }
    match s.stage {
        TLS_RECORD => {
            // Record: handshake(22), TLS 1.x, length; handshake: client_hello(1), length.
            // `need` bytes are there: plain reads (see `Bytes::byte`).
            let h: [u8; 44] = b.array(at);
            let (major, rec_len, hs_type, hs_hi, hs_lo) = (
                h[1],
                u16::from_be_bytes([h[3], h[4]]) as usize,
                h[5],
                h[6],
                u16::from_be_bytes([h[7], h[8]]) as usize,
            );
            let hs_len = ((hs_hi as usize) << 16) | hs_lo;
            if major != 3 || hs_type != 1 || rec_len < 4 + 38 || hs_len + 4 != rec_len {
                // Also rejects a ClientHello fragmented over several records.
                return Some(Progress::Done(Bad));
            }
            s.ext_end = s.pos + 5 + rec_len as u32;
            let sid_len = h[5 + 4 + 2 + 32];
            if sid_len > 32 {
                return Some(Progress::Done(Bad));
            }
            s.pos += (5 + 4 + 2 + 32 + 1 + sid_len as usize) as u32;
            s.stage = TLS_CIPHERS;
        }
        TLS_CIPHERS => {
            let n = b.be16_at(at);
            if n < 2 || !n.is_multiple_of(2) {
                return Some(Progress::Done(Bad));
            }
            s.pos += 2 + n as u32;
            s.stage = TLS_COMPRESSION;
        }
        TLS_COMPRESSION => {
            let n = b.byte(at);
            if n < 1 {
                return Some(Progress::Done(Bad));
            }
            s.pos += 1 + n as u32;
            s.stage = TLS_EXTENSIONS_LEN;
        }
        TLS_EXTENSIONS_LEN => {
            let n = b.be16_at(at);
            // The extensions must end exactly where the handshake does: no trailing
            // garbage.
            if s.pos + 2 + n as u32 != s.ext_end {
                return Some(Progress::Done(Bad));
            }
            s.pos += 2;
            s.stage = TLS_EXTENSION;
        }
        TLS_EXTENSION => {
            // Up to EXTENSIONS_PER_STEP extensions per step: skipping one is cheap, and in
            // the kernel every step has a fixed cost.
            let mut at = at;
            let mut k = 0;
            while k < EXTENSIONS_PER_STEP {
                k += 1;
                s.extensions += 1;
                if s.extensions as usize > MAX_EXTENSIONS {
                    return Some(Progress::Done(Outcome::TlsNoSni));
                }
                let e: [u8; 4] = b.array(at);
                let (ty, n) = (
                    u16::from_be_bytes([e[0], e[1]]),
                    u16::from_be_bytes([e[2], e[3]]),
                );
                if s.pos + 4 + n as u32 > s.ext_end {
                    return Some(Progress::Done(Bad));
                }
                if ty == 0 {
                    s.pos += 4;
                    s.stage = TLS_SNI;
                    // Remember where the extension ends, to check the name fills it.
                    s.sni_end = s.pos + n as u32;
                    break;
                }
                s.pos += 4 + n as u32;
                // The next one in this step only if its header is here; the next step
                // handles the end of the extensions and headers split over segments.
                at = (s.pos - base) as usize;
                if s.pos == s.ext_end || at + 4 > len {
                    break;
                }
            }
        }
        _ => {
            // server_name: list length, name type, name length, name.
            let ext_end = s.sni_end;
            let x: [u8; 5] = b.array(at);
            let (list, kind, name_len) = (
                u16::from_be_bytes([x[0], x[1]]) as usize,
                x[2],
                u16::from_be_bytes([x[3], x[4]]) as usize,
            );
            // Exactly one host_name and nothing after it.
            if kind != 0 || list != name_len + 3 || s.pos + 2 + list as u32 != ext_end {
                return Some(Progress::Done(Bad));
            }
            if at + 5 + name_len > len {
                return Some(carry_from(s, b, at, len, base, Bad));
            }
            return Some(Progress::Done(Outcome::TlsName(NameAt {
                off: at + 5,
                len: name_len,
            })));
        }
    }
    None
}
