//! Host matching: the name the parser found, looked up in `HOSTS` (exact names and
//! wildcards) label by label, in `bpf_loop` callbacks behind a global BPF function.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use forwarder_common::{
    HOST_OTHER, HostKey,
    classify::BUF_SIZE,
    host::{MAX_NAME_LEN, NameMatch, NameWalk},
};

use super::buf::DirectBuf;
use crate::{maps::HOSTS, pkt::opaque};

/// Name bytes `walk_step` handles per `bpf_loop` iteration.
const WALK_STRIDE: usize = 4;

struct WalkCtx {
    p: *const [u8; BUF_SIZE],
    len: u64,
    w: NameWalk,
}

#[inline(always)]
fn host_lookup(k: &HostKey) -> Option<u32> {
    // SAFETY: hash map values stay valid for the rest of the program run (RCU).
    unsafe { HOSTS.get(k) }.map(|v| v.id)
}

extern "C" fn walk_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `bpf_loop` passes back the pointer `fwd_match_host` gave it: a live `WalkCtx`
    // on its stack, not otherwise used while the loop runs.
    let c = unsafe { &mut *(ctx as *mut WalkCtx) };
    let b = DirectBuf {
        p: c.p,
        len: opaque(c.len as usize) & (BUF_SIZE * 2 - 1),
    };
    // Several bytes per iteration: each iteration is a call, and calls are not free.
    let mut k = 0;
    while k < WALK_STRIDE {
        if !c.w.step(&b, i as usize * WALK_STRIDE + k, &mut host_lookup) {
            return 1;
        }
        k += 1;
    }
    0
}

/// Host id for the name at `off..off + len` of the buffer (`CLS_BUF`), as a global BPF
/// function (verified once, on its own); `u32::MAX` for a name that is not a host name.
/// One `bpf_loop` iteration per `WALK_STRIDE` bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fwd_match_host(
    buf: *const [u8; BUF_SIZE],
    len: u32,
    off: u32,
    name_len: u32,
) -> u32 {
    // A global function's pointer argument may be null, for all the verifier knows.
    if buf.is_null() {
        return u32::MAX;
    }
    let b = DirectBuf {
        p: buf,
        len: (len as usize) & (BUF_SIZE * 2 - 1),
    };
    let w = match NameWalk::begin(&b, off as usize & (BUF_SIZE - 1), name_len as usize & 0x1ff) {
        Ok(w) => w,
        Err(_) => return u32::MAX,
    };
    let mut c = WalkCtx {
        p: buf,
        len: b.len as u64,
        w,
    };
    // SAFETY: `walk_step` has the callback signature `bpf_loop` expects, and `c` outlives
    // the call.
    unsafe {
        bpf_loop(
            MAX_NAME_LEN.div_ceil(WALK_STRIDE) as u32,
            walk_step as *mut c_void,
            &mut c as *mut WalkCtx as *mut c_void,
            0,
        )
    };
    match c.w.end(host_lookup) {
        NameMatch::Host(id) => id,
        NameMatch::Other => HOST_OTHER,
        NameMatch::Bad => u32::MAX,
    }
}
