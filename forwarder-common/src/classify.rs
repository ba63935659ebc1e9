//! Reading the host name a connection is for from its first payload: the SNI of a TLS
//! ClientHello or the Host of an HTTP/1 request, without terminating anything.
//!
//! The parser is resumable: when a ClientHello or request spans several TCP segments, the
//! kernel keeps a [`ClassifyState`] per flow and feeds it segment by segment. Each call gets
//! a buffer holding the bytes carried over from the previous segment followed by the new
//! segment's payload; whatever the next call must see again is copied into `state.carry`.
//! All loops are bounded by constants, every access is bounds-checked, nothing panics.

use crate::{packet::Bytes, swar};

/// Bytes a field may need to be carried into the next segment: the server_name extension
/// head (5 bytes) plus the longest name, or the longest HTTP header line we still look at.
pub const CARRY_MAX: usize = crate::packet::COPY_MAX;
/// Size of the kernel's working buffer: carry plus one segment's payload (a power of two,
/// so indices can be masked).
pub const BUF_SIZE: usize = 4096;
/// Largest segment payload classified; larger ones (jumbo frames, GRO in tc-only mode)
/// end the classification as unknown rather than being parsed in part.
pub const MAX_SEGMENT_PAYLOAD: usize = 2048;
/// TLS extensions looked at before giving up (browsers send about twenty).
pub const MAX_EXTENSIONS: usize = 48;
/// TLS extensions skipped per step at most.
const EXTENSIONS_PER_STEP: usize = 4;
/// Fields (TLS) or header lines (HTTP) parsed per segment before giving up. In the kernel
/// each is one `bpf_loop` iteration, so this costs the verifier nothing.
pub const MAX_STEPS: usize = 64;
/// Segments a ClientHello or request may span before we give up.
pub const MAX_SEGMENTS: u8 = 4;
/// Request bytes scanned for the Host header before giving up.
pub const MAX_HTTP_HEADER_BYTES: u32 = 8192;

pub const KIND_NONE: u8 = 0;
pub const KIND_TLS: u8 = 1;
pub const KIND_HTTP: u8 = 2;

// TLS stages: which field starts at `state.pos`.
const TLS_RECORD: u8 = 0;
const TLS_SESSION_ID: u8 = 1;
const TLS_CIPHERS: u8 = 2;
const TLS_COMPRESSION: u8 = 3;
const TLS_EXTENSIONS_LEN: u8 = 4;
const TLS_EXTENSION: u8 = 5;
const TLS_SNI: u8 = 6;

// HTTP stages.
const HTTP_REQUEST_LINE: u8 = 0;
const HTTP_LINE_START: u8 = 1;
const HTTP_SKIP_LINE: u8 = 2;

/// Per-flow parse state (kept in a BPF map between segments).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassifyState {
    /// `KIND_*`, decided on the first payload byte.
    pub kind: u8,
    pub stage: u8,
    pub segments: u8,
    pub _pad: u8,
    /// TCP sequence number of the next payload byte expected.
    pub next_seq: u32,
    /// Stream offset (bytes since the first payload byte) of `next_seq`.
    pub next_off: u32,
    /// Stream offset of the field the next call starts with (the first carried byte, or a
    /// position in a later segment when skipping).
    pub pos: u32,
    /// Stream offset where the ClientHello's extensions end.
    pub ext_end: u32,
    /// Stream offset where the server_name extension ends.
    pub sni_end: u32,
    /// Extensions seen so far.
    pub extensions: u32,
    /// Bytes in `carry`.
    pub carry_len: u32,
    /// Where [`step_coded`] reports the name it found (offsets in the buffer).
    pub name_off: u32,
    pub name_len: u32,
    /// The code of the last [`step_coded`] call. Kept here rather than returned through
    /// the caller's stack: the verifier tracks stack values, and a value that differs
    /// between `bpf_loop` iterations makes it check the loop body once more per value.
    pub code: u32,
    pub carry: [u8; CARRY_MAX],
}

impl Default for ClassifyState {
    fn default() -> Self {
        ClassifyState {
            kind: KIND_NONE,
            stage: 0,
            segments: 0,
            _pad: 0,
            next_seq: 0,
            next_off: 0,
            pos: 0,
            ext_end: 0,
            sni_end: 0,
            extensions: 0,
            carry_len: 0,
            name_off: 0,
            name_len: 0,
            code: 0,
            carry: [0; CARRY_MAX],
        }
    }
}

/// Where the name sits in the buffer that was passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAt {
    pub off: usize,
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The ClientHello's server_name.
    TlsName(NameAt),
    /// The request's Host (or absolute-form target) without port.
    HttpName(NameAt),
    TlsNoSni,
    TlsMalformed,
    HttpNoHost,
    HttpMalformed,
    NotTlsOrHttp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Feed the next segment (with `state.carry` in front).
    NeedMore,
    Done(Outcome),
}

/// Feeds one buffer: `state.carry_len` carried bytes followed by a segment's payload, `len`
/// bytes in all, starting at stream offset `base` (= `state.pos` when something was
/// carried). On `NeedMore`, `state.carry`/`carry_len`/`pos` say what the next call needs.
#[inline(always)]
pub fn feed<B: Bytes + ?Sized>(
    state: &mut ClassifyState,
    b: &B,
    len: usize,
    base: u32,
) -> Progress {
    if let Some(p) = begin(state, b, base) {
        return p;
    }
    let mut i = 0;
    while i < MAX_STEPS {
        i += 1;
        if let Some(p) = step(state, b, len, base) {
            return p;
        }
    }
    Progress::Done(exhausted(state))
}

/// Decides the protocol on a connection's first byte (once); `Some` when that already
/// ends the parse.
#[inline(always)]
fn begin<B: Bytes + ?Sized>(state: &mut ClassifyState, b: &B, base: u32) -> Option<Progress> {
    state.carry_len = 0;
    if state.kind != KIND_NONE {
        return None;
    }
    let Some(first) = b.raw8(0) else {
        return Some(Progress::NeedMore);
    };
    if first == 0x16 {
        state.kind = KIND_TLS;
        state.stage = TLS_RECORD;
    } else if first.is_ascii_uppercase() {
        state.kind = KIND_HTTP;
        state.stage = HTTP_REQUEST_LINE;
    } else {
        return Some(Progress::Done(Outcome::NotTlsOrHttp));
    }
    state.pos = base;
    None
}

/// One TLS field or HTTP header line; `Some` when the parse ends (or needs more).
#[inline(always)]
fn step<B: Bytes + ?Sized>(
    state: &mut ClassifyState,
    b: &B,
    len: usize,
    base: u32,
) -> Option<Progress> {
    if state.kind == KIND_TLS {
        tls_step(state, b, len, base)
    } else {
        http_step(state, b, len, base)
    }
}

/// The outcome when `MAX_STEPS` steps found nothing.
#[inline(always)]
fn exhausted(state: &ClassifyState) -> Outcome {
    if state.kind == KIND_TLS {
        Outcome::TlsNoSni
    } else {
        Outcome::HttpNoHost
    }
}

/// Carries `b[from..len]` into the state for the next call, or gives up with `fail` when
/// it does not fit.
#[inline(always)]
fn carry_from<B: Bytes + ?Sized>(
    state: &mut ClassifyState,
    b: &B,
    from: usize,
    len: usize,
    base: u32,
    fail: Outcome,
) -> Progress {
    let n = len.saturating_sub(from);
    if n > CARRY_MAX || !b.copy_out(from, n, &mut state.carry) {
        return Progress::Done(fail);
    }
    state.carry_len = n as u32;
    state.pos = base + from as u32;
    Progress::NeedMore
}

#[inline(always)]
fn tls_step<B: Bytes + ?Sized>(
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

#[inline(always)]
fn lower(c: u8) -> u8 {
    if c.is_ascii_uppercase() { c + 32 } else { c }
}

/// Header lines looked at before giving up.
pub const MAX_HTTP_LINES: usize = 64;

#[inline(always)]
fn http_step<B: Bytes + ?Sized>(
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
const LINES_THAT_MATTER: [u8; 4] = [b'h', b'H', b'\r', b'\n'];

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
fn host_value<B: Bytes + ?Sized>(b: &B, from: usize, end: usize) -> Outcome {
    // Up to 8 blanks before `end`, counted word-wise (see `swar`).
    let ws = u64::from_le_bytes(b.array(from));
    let blanks = (swar::eq_bytes(ws, b' ') | swar::eq_bytes(ws, b'\t'))
        & swar::first_bytes(end.saturating_sub(from));
    let start = from + swar::run_len(blanks);
    let stop = b
        .find_any(start, end, [b':', b' ', b'\t', b'\r'])
        .unwrap_or(end);
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
fn request_line_ok<B: Bytes + ?Sized>(b: &B, at: usize, end: usize) -> Option<u8> {
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
    let stop = b
        .find_any(start, eol, [b':', b'/', b' ', b'?'])
        .unwrap_or(eol);
    if stop <= start {
        return Some(Outcome::HttpMalformed);
    }
    Some(Outcome::HttpName(NameAt {
        off: start,
        len: stop - start,
    }))
}

/// Outcome codes of [`begin_coded`] and [`step_coded`].
pub const CODE_NEED_MORE: u32 = 0;
pub const CODE_TLS_NAME: u32 = 1;
pub const CODE_HTTP_NAME: u32 = 2;
pub const CODE_TLS_NO_SNI: u32 = 3;
pub const CODE_TLS_MALFORMED: u32 = 4;
pub const CODE_HTTP_NO_HOST: u32 = 5;
pub const CODE_HTTP_MALFORMED: u32 = 6;
pub const CODE_NOT_TLS_OR_HTTP: u32 = 7;

/// `step_coded` result: the step consumed a field or line, call again.
pub const STEP_CONTINUE: u32 = u32::MAX;

#[inline(always)]
fn code_of(state: &mut ClassifyState, p: Progress) -> u32 {
    match p {
        Progress::NeedMore => CODE_NEED_MORE,
        Progress::Done(o) => match o {
            Outcome::TlsName(n) | Outcome::HttpName(n) => {
                state.name_off = n.off as u32;
                state.name_len = n.len as u32;
                if matches!(o, Outcome::TlsName(_)) {
                    CODE_TLS_NAME
                } else {
                    CODE_HTTP_NAME
                }
            }
            Outcome::TlsNoSni => CODE_TLS_NO_SNI,
            Outcome::TlsMalformed => CODE_TLS_MALFORMED,
            Outcome::HttpNoHost => CODE_HTTP_NO_HOST,
            Outcome::HttpMalformed => CODE_HTTP_MALFORMED,
            Outcome::NotTlsOrHttp => CODE_NOT_TLS_OR_HTTP,
        },
    }
}

/// First part of [`feed`] for the kernel's step-wise driver: decides the protocol on a
/// connection's first byte. Returns a code, or `STEP_CONTINUE` to go on with
/// [`step_coded`].
#[inline(always)]
pub fn begin_coded<B: Bytes + ?Sized>(state: &mut ClassifyState, b: &B, base: u32) -> u32 {
    match begin(state, b, base) {
        None => STEP_CONTINUE,
        Some(p) => code_of(state, p),
    }
}

/// One field (TLS) or header line (HTTP): a code, or `STEP_CONTINUE`.
#[inline(always)]
pub fn step_coded<B: Bytes + ?Sized>(
    state: &mut ClassifyState,
    b: &B,
    len: usize,
    base: u32,
) -> u32 {
    let code = match step(state, b, len, base) {
        None => STEP_CONTINUE,
        Some(p) => code_of(state, p),
    };
    state.code = code;
    code
}

/// The code when `MAX_STEPS` steps found nothing.
#[inline(always)]
pub fn exhausted_code(state: &mut ClassifyState) -> u32 {
    let o = exhausted(state);
    code_of(state, Progress::Done(o))
}

/// The kernel's segment loop, on the host: feeds `segments` in order the way the programs
/// do (carried bytes first) and returns the outcome with the name's bytes. Used by the
/// tests, the fuzz targets and the differential test against the kernel object.
#[cfg(feature = "std")]
pub fn run_segments(segments: &[&[u8]]) -> (Option<Outcome>, std::vec::Vec<u8>) {
    use std::vec::Vec;
    let mut s = ClassifyState::default();
    for seg in segments {
        if seg.is_empty() {
            continue;
        }
        s.segments += 1;
        if seg.len() > MAX_SEGMENT_PAYLOAD {
            return (None, Vec::new());
        }
        let carried = s.carry_len as usize;
        let mut buf: Vec<u8> = s.carry[..carried].to_vec();
        buf.extend_from_slice(seg);
        let base = if carried > 0 { s.pos } else { s.next_off };
        s.next_off += seg.len() as u32;
        match feed(&mut s, &buf[..], buf.len(), base) {
            Progress::Done(o) => {
                let name = match o {
                    Outcome::TlsName(n) | Outcome::HttpName(n) => {
                        buf[n.off..n.off + n.len].to_vec()
                    }
                    _ => Vec::new(),
                };
                return (Some(o), name);
            }
            Progress::NeedMore if s.segments >= MAX_SEGMENTS => return (None, Vec::new()),
            Progress::NeedMore => {}
        }
    }
    (None, Vec::new())
}

#[cfg(all(test, feature = "std"))]
mod tests {
    extern crate std;
    use std::{string::String, vec, vec::Vec};

    use proptest::prelude::*;

    use super::*;
    use crate::samples::{browser_exts, client_hello, sni_ext};

    fn name_of(r: (Option<Outcome>, Vec<u8>)) -> (Option<Outcome>, String) {
        (r.0, String::from_utf8_lossy(&r.1).into_owned())
    }

    #[test]
    fn sni_from_a_plain_client_hello() {
        let mut exts = vec![sni_ext(&[b"app.example.com"])];
        exts.extend(browser_exts(0x0a0a, 32));
        let rec = client_hello(&exts, 32);
        let (o, name) = name_of(run_segments(&[&rec]));
        assert!(matches!(o, Some(Outcome::TlsName(_))), "{o:?}");
        assert_eq!(name, "app.example.com");
    }

    #[test]
    fn sni_in_the_second_segment_of_a_large_client_hello() {
        let mut exts = browser_exts(0x1a1a, 1400);
        exts.push(sni_ext(&[b"media.example.com"]));
        let rec = client_hello(&exts, 32);
        assert!(rec.len() > 1800, "{}", rec.len());
        let (a, b) = rec.split_at(1380);
        let (o, name) = name_of(run_segments(&[a, b]));
        assert_eq!(name, "media.example.com", "{o:?}");
    }

    #[test]
    fn malformed_and_missing_names() {
        let mut exts = browser_exts(0x2a2a, 32);
        assert_eq!(
            run_segments(&[&client_hello(&exts, 0)]).0,
            Some(Outcome::TlsNoSni)
        );
        exts.push(sni_ext(&[b"a.example.com", b"b.example.com"]));
        assert_eq!(
            run_segments(&[&client_hello(&exts, 0)]).0,
            Some(Outcome::TlsMalformed),
            "two names"
        );
        let mut trailing = client_hello(&[sni_ext(&[b"a.example.com"])], 0);
        trailing.push(0);
        let l = u16::from_be_bytes([trailing[3], trailing[4]]) + 1;
        trailing[3..5].copy_from_slice(&l.to_be_bytes());
        assert_eq!(
            run_segments(&[&trailing]).0,
            Some(Outcome::TlsMalformed),
            "trailing garbage"
        );
        assert_eq!(
            run_segments(&[b"\x00\x01garbage"]).0,
            Some(Outcome::NotTlsOrHttp)
        );
        assert_eq!(
            run_segments(&[b"SSH-2.0-OpenSSH_9.2\r\n"]).0,
            Some(Outcome::HttpMalformed)
        );
        let mut lying = client_hello(&[sni_ext(&[b"a.example.com"])], 0);
        lying[3] = 0x40;
        assert_eq!(
            run_segments(&[&lying]).0,
            Some(Outcome::TlsMalformed),
            "record length lies"
        );
    }

    #[test]
    fn http_host_anywhere_any_case_with_port() {
        let cases: [(&[u8], &str); 5] = [
            (b"GET / HTTP/1.1\r\nHost: blog.example.com\r\n\r\n", "blog.example.com"),
            (b"GET /x HTTP/1.1\r\nUser-Agent: curl\r\nAccept: */*\r\nhOsT:\tBlog.Example.com:8080\r\n\r\n", "Blog.Example.com"),
            (b"POST /api HTTP/1.0\nContent-Length: 0\nHOST: app.example.com\n\n", "app.example.com"),
            (b"GET http://proxy.example.com:81/p?q HTTP/1.1\r\nHost: other.example.com\r\n\r\n", "proxy.example.com"),
            (b"OPTIONS * HTTP/1.1\r\nHost: x.example.com\r\n\r\n", "x.example.com"),
        ];
        for (req, want) in cases {
            let (o, name) = name_of(run_segments(&[req]));
            assert_eq!(name, want, "{o:?} for {:?}", String::from_utf8_lossy(req));
        }
        assert_eq!(
            run_segments(&[b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"]).0,
            Some(Outcome::HttpNoHost)
        );
        assert_eq!(
            run_segments(&[b"GET / FTP/1.1\r\nHost: a\r\n\r\n"]).0,
            Some(Outcome::HttpMalformed)
        );
    }

    #[test]
    fn http_request_split_anywhere() {
        let req = b"GET /index.html HTTP/1.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nHost: blog.example.com\r\nAccept: */*\r\n\r\n";
        for cut in 1..req.len() {
            let (a, b) = req.split_at(cut);
            let (o, name) = name_of(run_segments(&[a, b]));
            assert_eq!(name, "blog.example.com", "cut at {cut}: {o:?}");
        }
    }

    #[test]
    fn long_header_lines_are_skipped_across_segments() {
        let mut req = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        req.extend(std::iter::repeat_n(b'c', 3000));
        req.extend_from_slice(b"\r\nHost: app.example.com\r\n\r\n");
        let segs: Vec<&[u8]> = req.chunks(1400).collect();
        let (o, name) = name_of(run_segments(&segs));
        assert_eq!(name, "app.example.com", "{o:?}");
    }

    fn grease() -> impl Strategy<Value = u16> {
        (0u16..16).prop_map(|n| (n << 12) | 0x0a0a | (n << 4))
    }

    /// `request_line_ok` as it was written byte by byte: the word-wise version must agree.
    fn request_line_by_bytes(b: &[u8], at: usize, end: usize) -> Option<u8> {
        let m: [u8; 16] = b.array(at);
        let mut n = 0;
        while n < 16 && at + n < end && m[n].is_ascii_uppercase() {
            n += 1;
        }
        let sp = if n < 16 { m[n] } else { b.byte(at + 16) };
        if n == 0 || sp != b' ' || end < at + 9 {
            return None;
        }
        let t: [u8; 8] = b.array(end - 9);
        if t != *b" HTTP/1." {
            return None;
        }
        Some(if n + 1 < 16 { m[n + 1] } else { 0 })
    }

    /// `host_value` as it was written byte by byte.
    fn host_value_by_bytes(b: &[u8], from: usize, end: usize) -> Outcome {
        let ws: [u8; 8] = b.array(from);
        let mut start = from;
        let mut n = 0;
        while n < 8 && start < end && matches!(ws[n], b' ' | b'\t') {
            start += 1;
            n += 1;
        }
        let stop = b
            .find_any(start, end, [b':', b' ', b'\t', b'\r'])
            .unwrap_or(end);
        if stop <= start {
            return Outcome::HttpNoHost;
        }
        Outcome::HttpName(NameAt {
            off: start,
            len: stop - start,
        })
    }

    proptest! {
        #[test]
        fn request_line_counted_word_wise_as_byte_by_byte(
            method in "[A-Z]{0,20}|[A-Za-z\\- ]{0,20}",
            sep in prop_oneof![Just(" "), Just("\t"), Just(""), Just("  ")],
            target in "[/a-z:?]{0,12}",
            version in prop_oneof![Just(" HTTP/1.1"), Just(" HTTP/1.0"), Just(" HTTP/2"), Just("")],
            lead in 0usize..3,
            tail in 0usize..40,
            end_back in 0usize..20,
        ) {
            let mut line = std::vec![b'x'; lead];
            line.extend_from_slice(method.as_bytes());
            line.extend_from_slice(sep.as_bytes());
            line.extend_from_slice(target.as_bytes());
            line.extend_from_slice(version.as_bytes());
            let end = line.len();
            line.extend_from_slice(b"\r\n");
            line.extend(std::iter::repeat_n(b'A', tail));
            // `end` before or at the line's end, as the parser's callers give it, and
            // past the buffer too.
            for end in [end, end.saturating_sub(end_back), end + end_back] {
                prop_assert_eq!(
                    request_line_ok(&line[..], lead, end),
                    request_line_by_bytes(&line[..], lead, end),
                    "{:?} end {}", String::from_utf8_lossy(&line), end
                );
            }
        }

        #[test]
        fn host_value_counted_word_wise_as_byte_by_byte(
            value in "[ \t]{0,12}[a-z.:\t ]{0,20}",
            from_back in 0usize..3,
            end_back in 0usize..14,
        ) {
            let mut line = Vec::from(&b"Host:"[..]);
            line.extend_from_slice(value.as_bytes());
            let end = line.len();
            line.extend_from_slice(b"\r\n");
            let from = 5 - from_back;
            for end in [end, end.saturating_sub(end_back), end + end_back] {
                prop_assert_eq!(
                    host_value(&line[..], from, end),
                    host_value_by_bytes(&line[..], from, end)
                );
            }
        }
    }

    proptest! {
        #[test]
        fn sni_found_whatever_the_order_grease_and_split(
            order in Just((0..12usize).collect::<Vec<_>>()).prop_shuffle(),
            g in grease(),
            key_share in 32usize..1300,
            sid in prop_oneof![Just(0usize), Just(32usize)],
            name in "[a-z0-9]{1,20}(\\.[a-z0-9-]{1,20}){1,3}",
            cut1 in 1usize..2000,
            cut2 in 1usize..2000,
        ) {
            let mut exts = browser_exts(g, key_share);
            exts.push(sni_ext(&[name.as_bytes()]));
            let exts: Vec<Vec<u8>> = order.iter().map(|&i| exts[i].clone()).collect();
            let rec = client_hello(&exts, sid);
            let (c1, c2) = {
                let mut v = [cut1 % rec.len(), cut2 % rec.len()];
                v.sort();
                (v[0], v[1])
            };
            let segs = [&rec[..c1], &rec[c1..c2], &rec[c2..]];
            let (o, got) = name_of(run_segments(&segs));
            prop_assert_eq!(got, name, "{:?}", o);
        }

        #[test]
        fn http_host_found_in_generated_requests(
            before in proptest::collection::vec("[A-Za-z-]{1,20}: [ -~]{0,200}", 0..8),
            host in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,20}){1,3}",
            port in proptest::option::of(1u16..),
            cut in 0usize..3000,
        ) {
            let mut req = String::from("GET /path?q=1 HTTP/1.1\r\n");
            for h in &before {
                if h.to_ascii_lowercase().starts_with("host:") { continue; }
                req.push_str(h);
                req.push_str("\r\n");
            }
            req.push_str("Host: ");
            req.push_str(&host);
            if let Some(p) = port { req.push_str(&std::format!(":{p}")); }
            req.push_str("\r\nAccept: */*\r\n\r\n");
            let bytes = req.as_bytes();
            let cut = cut % bytes.len();
            let (o, got) = name_of(run_segments(&[&bytes[..cut], &bytes[cut..]]));
            prop_assert_eq!(got, host, "{:?}", o);
        }

        #[test]
        fn never_panics_on_garbage(segs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..4)) {
            let refs: Vec<&[u8]> = segs.iter().map(|s| &s[..]).collect();
            let (o, name) = run_segments(&refs);
            if let Some(Outcome::TlsName(n) | Outcome::HttpName(n)) = o {
                prop_assert_eq!(n.len, name.len());
            }
        }
    }
}
