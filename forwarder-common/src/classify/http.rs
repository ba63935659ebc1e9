//! The HTTP/1 side: a request read line by line, up to its Host (or an absolute-form
//! target).

use super::{
    limits::{CARRY_MAX, MAX_HTTP_HEADER_BYTES},
    state::{ClassifyState, NameAt, Outcome, Progress, carry_from},
};
use crate::{packet::Bytes, swar};

// HTTP stages.
pub(super) const HTTP_REQUEST_LINE: u8 = 0;
const HTTP_LINE_START: u8 = 1;
const HTTP_SKIP_LINE: u8 = 2;

#[inline(always)]
fn lower(c: u8) -> u8 {
    if c.is_ascii_uppercase() { c + 32 } else { c }
}

#[inline(always)]
pub(super) fn http_step<B: Bytes + ?Sized>(
    s: &mut ClassifyState,
    b: &B,
    len: usize,
    base: u32,
) -> Option<Progress> {
    if s.pos > MAX_HTTP_HEADER_BYTES {
        return Some(Progress::Done(Outcome::HttpNoHost));
    }
    let Some(at) = s.pos.checked_sub(base) else {
        return Some(Progress::Done(Outcome::HttpMalformed));
    };
    let at = at as usize;
    if at >= len {
        s.carry_len = 0;
        return Some(Progress::NeedMore);
    }
    if s.stage == HTTP_LINE_START {
        // A header line that is neither Host nor the empty line: straight to the next line
        // that could be, without looking for this one's end first.
        // (`at` itself is then no match, so the search moves on.)
        let first = b.byte(at);
        if !LINES_THAT_MATTER.contains(&first)
            && let Some(next) = b.find_line_start(at, len, LINES_THAT_MATTER)
        {
            s.pos = base + next as u32;
            return None;
        }
    }
    let Some(eol) = b.find(at, len, b'\n') else {
        // The line goes on in the next segment.
        if s.stage == HTTP_SKIP_LINE {
            s.pos = base + len as u32;
            s.carry_len = 0;
            return Some(Progress::NeedMore);
        }
        if len - at <= CARRY_MAX {
            return Some(carry_from(s, b, at, len, base, Outcome::HttpMalformed));
        }
        // Too long to carry: decide on what is here, or skip the rest of the line.
        if s.stage == HTTP_REQUEST_LINE {
            if let Some(name) = absolute_target_host(b, at, len) {
                return Some(Progress::Done(name));
            }
        } else if at + 5 <= len && is_host_name(&b.array(at)) {
            return Some(Progress::Done(host_value(b, at + 5, len)));
        }
        s.stage = HTTP_SKIP_LINE;
        s.pos = base + len as u32;
        s.carry_len = 0;
        return Some(Progress::NeedMore);
    };
    // The line without its CR, where it matters (each read costs in the kernel).
    let end_of = |b: &B| {
        if eol > at && b.byte(eol - 1) == b'\r' {
            eol - 1
        } else {
            eol
        }
    };
    match s.stage {
        HTTP_REQUEST_LINE => {
            let end = end_of(b);
            // METHOD SP target SP HTTP/1.x; an absolute-form target names the host.
            let Some(target) = request_line_ok(b, at, end) else {
                return Some(Progress::Done(Outcome::HttpMalformed));
            };
            // An origin-form target ("/...") names no host.
            if target != b'/'
                && let Some(name) = absolute_target_host(b, at, end)
            {
                return Some(Progress::Done(name));
            }
            s.stage = HTTP_LINE_START;
            if let Some(next) = b.find_line_start(eol + 1, len, LINES_THAT_MATTER) {
                s.pos = base + next as u32;
                return None;
            }
        }
        HTTP_LINE_START => {
            let w: [u8; 5] = b.array(at);
            if eol == at || (eol == at + 1 && w[0] == b'\r') {
                // Empty line: end of headers without Host.
                return Some(Progress::Done(Outcome::HttpNoHost));
            }
            if at + 5 <= eol && is_host_name(&w) {
                let end = end_of(b);
                if at + 5 <= end {
                    return Some(Progress::Done(host_value(b, at + 5, end)));
                }
            }
            // Straight to the next line that could matter (Host, or the empty line), past
            // the ones that cannot; lines in later segments are taken one by one.
            if let Some(next) = b.find_line_start(eol + 1, len, LINES_THAT_MATTER) {
                s.pos = base + next as u32;
                return None;
            }
        }
        _ => s.stage = HTTP_LINE_START,
    }
    s.pos = base + eol as u32 + 1;
    None
}

/// First bytes of the header lines the HTTP reader stops at: Host, and the empty line.
const LINES_THAT_MATTER: [u8; 4] = *b"hH\r\n";

#[inline(always)]
fn is_host_name(w: &[u8; 5]) -> bool {
    lower(w[0]) == b'h'
        && lower(w[1]) == b'o'
        && lower(w[2]) == b's'
        && lower(w[3]) == b't'
        && w[4] == b':'
}

/// The Host value in `b[from..end]`: optional whitespace, the name, an optional port.
#[inline(always)]
pub(super) fn host_value<B: Bytes + ?Sized>(b: &B, from: usize, end: usize) -> Outcome {
    // Up to 8 blanks before `end`, counted word-wise (see `swar`).
    let ws = u64::from_le_bytes(b.array(from));
    let blanks = (swar::eq_bytes(ws, b' ') | swar::eq_bytes(ws, b'\t'))
        & swar::first_bytes(end.saturating_sub(from));
    let start = from + swar::run_len(blanks);
    let stop = b.find_any(start, end, *b": \t\r").unwrap_or(end);
    if stop <= start {
        return Outcome::HttpNoHost;
    }
    Outcome::HttpName(NameAt {
        off: start,
        len: stop - start,
    })
}

/// The request line `b[at..end]` must be `TOKEN SP target SP HTTP/1.x`; returns the
/// target's first byte if at hand (0 otherwise), `None` for anything else.
#[inline(always)]
pub(super) fn request_line_ok<B: Bytes + ?Sized>(b: &B, at: usize, end: usize) -> Option<u8> {
    // Method: uppercase letters (up to 16 counted), then a space. Counted word-wise (see
    // `swar`); the bytes after the method are read again rather than indexed by its length.
    let m: [u8; 16] = b.array(at);
    let in_line = end.saturating_sub(at);
    let (lo, hi) = m.split_at(8);
    let lo = u64::from_le_bytes(lo.try_into().unwrap_or_default());
    let hi = u64::from_le_bytes(hi.try_into().unwrap_or_default());
    let n_lo = swar::run_len(swar::upper_bytes(lo) & swar::first_bytes(in_line));
    let n_hi = swar::run_len(swar::upper_bytes(hi) & swar::first_bytes(in_line.saturating_sub(8)));
    // The second word counts only when the whole first one is uppercase (n_lo / 8 is 1).
    let n = n_lo + (n_lo / 8) * n_hi;
    // The byte at `k` of `m`, taken from the words: no array index the verifier would track.
    let at_m = |k: usize| (if k < 8 { lo } else { hi } >> (8 * (k & 7))) as u8;
    let sp = if n < 16 { at_m(n) } else { b.byte(at + 16) };
    if n == 0 || sp != b' ' {
        return None;
    }
    if end < at + 9 {
        return None;
    }
    // " HTTP/1.x" at the end.
    let t: [u8; 8] = b.array(end - 9);
    if t != *b" HTTP/1." {
        return None;
    }
    // The target's first byte when it was read already, else 0.
    Some(if n + 1 < 16 { at_m(n + 1) } else { 0 })
}

/// For `GET http://host[:port]/path HTTP/1.1`, the host.
#[inline(always)]
fn absolute_target_host<B: Bytes + ?Sized>(b: &B, at: usize, eol: usize) -> Option<Outcome> {
    let i = b.find(at, eol, b' ')? + 1;
    if i + 7 > eol {
        return None;
    }
    // "http://" or "https://", case-insensitive.
    let p: [u8; 8] = b.array(i);
    if !(lower(p[0]) == b'h' && lower(p[1]) == b't' && lower(p[2]) == b't' && lower(p[3]) == b'p') {
        return None;
    }
    let start = if lower(p[4]) == b's' && p[5] == b':' && p[6] == b'/' && p[7] == b'/' {
        i + 8
    } else if p[4] == b':' && p[5] == b'/' && p[6] == b'/' {
        i + 7
    } else {
        return None;
    };
    let stop = b.find_any(start, eol, *b":/ ?").unwrap_or(eol);
    if stop <= start {
        return Some(Outcome::HttpMalformed);
    }
    Some(Outcome::HttpName(NameAt {
        off: start,
        len: stop - start,
    }))
}
