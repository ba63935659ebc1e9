//! Driving the parser over one buffer: the protocol decided on the first byte, then one
//! TLS field or HTTP header line per step.

use super::{
    http::{HTTP_REQUEST_LINE, http_step},
    limits::MAX_STEPS,
    state::{ClassifyState, KIND_HTTP, KIND_NONE, KIND_TLS, Outcome, Progress},
    tls::{TLS_RECORD, tls_step},
};
use crate::packet::Bytes;

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
pub(super) fn begin<B: Bytes + ?Sized>(
    state: &mut ClassifyState,
    b: &B,
    base: u32,
) -> Option<Progress> {
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
pub(super) fn step<B: Bytes + ?Sized>(
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
pub(super) fn exhausted(state: &ClassifyState) -> Outcome {
    if state.kind == KIND_TLS {
        Outcome::TlsNoSni
    } else {
        Outcome::HttpNoHost
    }
}
