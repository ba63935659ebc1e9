//! Classify stepping: the TLS / HTTP parser of `forwarder_common::classify` run over the
//! buffer one field or header line per `bpf_loop` iteration, behind a global BPF function.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::bpf_dynptr,
    helpers::{bpf_dynptr_from_mem, bpf_loop},
};
use forwarder_common::classify::{
    self, BUF_SIZE, CODE_NOT_TLS_OR_HTTP, ClassifyState, MAX_STEPS, STEP_CONTINUE,
};

use super::buf::Buf;
use crate::{maps::CLS_BUF, pkt::opaque};

/// The parser's state and buffer for one `bpf_loop` callback per field or line.
struct StepCtx {
    s: *mut ClassifyState,
    p: *const [u8; BUF_SIZE],
    d: *const bpf_dynptr,
    len: u64,
    base: u64,
}

extern "C" fn step_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `bpf_loop` passes back the pointer `fwd_cls_feed` gave it: a live `StepCtx`
    // on its stack, not otherwise used while the loop runs.
    let c = unsafe { &mut *(ctx as *mut StepCtx) };
    let b = Buf {
        p: c.p,
        len: opaque(c.len as usize) & (BUF_SIZE * 2 - 1),
        d: c.d,
    };
    // The outcome stays in the map-held state (see `ClassifyState::code`).
    // SAFETY: `c.s` is the non-null parse state `fwd_cls_feed` checked, used by nothing
    // else during the loop.
    let r = classify::step_coded(unsafe { &mut *c.s }, &b, b.len, c.base as u32);
    if r == STEP_CONTINUE { 0 } else { 1 }
}

/// The parser: one `bpf_loop` iteration per TLS field or HTTP header line, so the verifier
/// checks one step instead of every path through a long loop. A global BPF function,
/// verified once whatever state its caller reaches it with; `s` is the parse state (in
/// `CLASSIFY` or `CLS_STATE`), the buffer `CLS_BUF`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fwd_cls_feed(s: *mut ClassifyState, len: u32, base: u32) -> u32 {
    // A global function's pointer argument may be null, for all the verifier knows.
    if s.is_null() {
        return CODE_NOT_TLS_OR_HTTP;
    }
    // SAFETY: checked non-null above; the caller passes its parse state (map memory), which
    // nothing else uses during the call.
    let s = unsafe { &mut *s };
    // Looked up, not passed: a pointer argument is plain memory to the verifier, and
    // `bpf_dynptr_from_mem` takes only map values on older kernels.
    let Some(buf) = CLS_BUF.get_ptr(0) else {
        return CODE_NOT_TLS_OR_HTTP;
    };
    // Initialised by the helper (a zeroed value would cost a memset call).
    let mut d = core::mem::MaybeUninit::<bpf_dynptr>::uninit();
    // SAFETY: `buf` is the map value `CLS_BUF` of `BUF_SIZE` bytes, `d` the place for the
    // dynptr the helper initialises.
    unsafe { bpf_dynptr_from_mem(buf as *mut c_void, BUF_SIZE as u32, 0, d.as_mut_ptr()) };
    let d = d.as_ptr();
    let b = Buf {
        p: buf,
        len: (len as usize) & (BUF_SIZE * 2 - 1),
        d,
    };
    let first = classify::begin_coded(s, &b, base);
    if first != STEP_CONTINUE {
        return first;
    }
    let mut c = StepCtx {
        s,
        p: buf,
        d,
        len: len as u64,
        base: base as u64,
    };
    s.code = STEP_CONTINUE;
    // SAFETY: `step_cb` has the callback signature `bpf_loop` expects, and `c` outlives the
    // call.
    unsafe {
        bpf_loop(
            MAX_STEPS as u32,
            step_cb as *mut c_void,
            &mut c as *mut StepCtx as *mut c_void,
            0,
        )
    };
    // SAFETY: the same parse state, the loop being over.
    let s = unsafe { &mut *c.s };
    if s.code == STEP_CONTINUE {
        classify::exhausted_code(s)
    } else {
        s.code
    }
}
