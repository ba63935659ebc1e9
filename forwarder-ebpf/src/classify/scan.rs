//! The SWAR scanner over the classifier's buffer (`CLS_BUF`): finds the first byte of a
//! set (`find_any`), or the first such byte at a line start (`find_line_start`), eight
//! bytes at a time, in `bpf_loop` callbacks behind two global BPF functions.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use forwarder_common::{
    classify::BUF_SIZE,
    swar::{eq_bytes, set_bytes},
};

use crate::pkt::opaque;

/// What the scan callbacks look for, and where they report it.
struct ScanCtx {
    p: *const [u8; BUF_SIZE],
    from: u64,
    to: u64,
    set: [u8; 4],
    found: u64,
}

/// Bytes a scan callback looks at per `bpf_loop` iteration: four words, as each iteration
/// is a function call and returns are not cheap with the kernel's speculation mitigations.
const FIND_STRIDE: u64 = 32;

/// The word at `idx` of the buffer, and the offset of the word one byte before it; `None`
/// past the scan's end (or the buffer's).
#[inline(always)]
fn scan_word(c: &ScanCtx, idx: u64) -> Option<(usize, u64)> {
    if idx >= c.to {
        return None;
    }
    let at = opaque(idx as usize) & (BUF_SIZE - 1);
    // The word before is read from `at - 1` (`line_step`): its bound comes from a
    // comparison of its own, as 6.1's verifier learns nothing from `at != 0`.
    let prev = opaque(at.wrapping_sub(1));
    if at > BUF_SIZE - 8 || prev > BUF_SIZE - 9 {
        // Never: scans start past the buffer's first byte (see the drivers) and buffers hold
        // at most CARRY_MAX + MAX_SEGMENT_PAYLOAD bytes.
        return None;
    }
    // SAFETY: `c.p` is the non-null buffer `scan_entry` checked, `BUF_SIZE` bytes long;
    // the check above keeps `at..at + 8` inside it.
    let w = u64::from_le(unsafe { ((c.p as *const u8).add(at) as *const u64).read_unaligned() });
    Some((prev, w))
}

/// Records the first flagged byte of the word at `idx`, if it is inside the scan.
#[inline(always)]
fn scan_found(c: &mut ScanCtx, idx: u64, hits: u64) {
    let mut first = 0u64;
    while first < 8 && hits & (0x80 << (first * 8)) == 0 {
        first += 1;
    }
    if idx + first < c.to {
        c.found = idx + first;
    }
}

/// `find_any`: one `bpf_loop` iteration per `FIND_STRIDE` bytes, each byte of a word
/// compared with the set at once.
extern "C" fn find_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `bpf_loop` passes back the pointer `buf_scan` gave it: a live `ScanCtx` on
    // its stack, not otherwise used while the loop runs.
    let c = unsafe { &mut *(ctx as *mut ScanCtx) };
    let mut word = 0;
    while word < FIND_STRIDE / 8 {
        let idx = c.from + i * FIND_STRIDE + word * 8;
        let Some((_, w)) = scan_word(c, idx) else {
            return 1;
        };
        let hits = set_bytes(w, &c.set);
        if hits != 0 {
            scan_found(c, idx, hits);
            return 1;
        }
        word += 1;
    }
    0
}

// A callback of its own rather than a mode of `find_step`: one callback serving both kinds
// of scan costs the verifier several times the instructions (it went over the budget).
/// `find_line_start`: as `find_step`, but a position counts only right after a `\n` (the
/// word one byte back says which positions are).
extern "C" fn line_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `find_step`.
    let c = unsafe { &mut *(ctx as *mut ScanCtx) };
    let mut word = 0;
    while word < FIND_STRIDE / 8 {
        let idx = c.from + i * FIND_STRIDE + word * 8;
        let Some((prev, w)) = scan_word(c, idx) else {
            return 1;
        };
        // SAFETY: `scan_word` checked that `prev..prev + 8` lies inside the buffer.
        let before =
            u64::from_le(unsafe { ((c.p as *const u8).add(prev) as *const u64).read_unaligned() });
        let hits = set_bytes(w, &c.set) & eq_bytes(before, b'\n');
        if hits != 0 {
            scan_found(c, idx, hits);
            return 1;
        }
        word += 1;
    }
    0
}

/// Runs `step` over `[from, to)` of the buffer (bounded by `len`), through `bpf_loop`, so
/// the verifier checks the loop body once instead of per byte. `from` must be above 0.
#[inline(always)]
fn buf_scan(
    p: *const [u8; BUF_SIZE],
    len: usize,
    from: usize,
    to: usize,
    set: [u8; 4],
    step: extern "C" fn(u64, *mut c_void) -> i64,
) -> Option<usize> {
    let to = if to > len { len } else { to };
    if from >= to {
        return None;
    }
    let mut c = ScanCtx {
        p,
        from: from as u64,
        to: to as u64,
        set,
        found: u64::MAX,
    };
    let n = ((((to - from) as u64).div_ceil(FIND_STRIDE)) & (BUF_SIZE as u64 - 1)) as u32;
    // SAFETY: `step` has the callback signature `bpf_loop` expects, and `c` outlives the
    // call; the loop runs at most `n` times.
    unsafe {
        bpf_loop(
            n,
            step as *mut c_void,
            &mut c as *mut ScanCtx as *mut c_void,
            0,
        )
    };
    (c.found != u64::MAX).then_some(c.found as usize)
}

/// Whether the byte at `at` is in `set` (the scans start one byte further).
#[inline(always)]
fn byte_in(p: *const [u8; BUF_SIZE], len: usize, at: usize, set: &[u8; 4]) -> bool {
    // SAFETY: `p` is a non-null buffer of `BUF_SIZE` bytes (see `scan_from`'s callers), and
    // the mask keeps the index inside it.
    let v = unsafe { (*p)[opaque(at) & (BUF_SIZE - 1)] };
    at < len && set.contains(&v)
}

/// The scans as global BPF functions: the verifier checks each once, on its own, whatever
/// the caller's state, instead of once per call site and per state reaching it (the
/// parser has seven call sites; inlined, their scans were a third of its cost, and what
/// one kernel build pruned another did not). `p` is the buffer (`CLS_BUF`: memory of
/// `BUF_SIZE` bytes to the verifier), the rest plain numbers. `u32::MAX`: not found.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fwd_scan_any(
    p: *const [u8; BUF_SIZE],
    from: u32,
    to: u32,
    len: u32,
    set: u32,
) -> u32 {
    scan_entry(p, from, to, len, set, find_step)
}

/// As [`fwd_scan_any`], for line starts (`line_step`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fwd_scan_line(
    p: *const [u8; BUF_SIZE],
    from: u32,
    to: u32,
    len: u32,
    set: u32,
) -> u32 {
    scan_entry(p, from, to, len, set, line_step)
}

/// The body of the scan functions: their arguments checked, the scan run with `step`.
#[inline(always)]
fn scan_entry(
    p: *const [u8; BUF_SIZE],
    from: u32,
    to: u32,
    len: u32,
    set: u32,
    step: extern "C" fn(u64, *mut c_void) -> i64,
) -> u32 {
    // A global function's pointer argument may be null, for all the verifier knows.
    if p.is_null() {
        return u32::MAX;
    }
    let len = (len as usize) & (BUF_SIZE * 2 - 1);
    match buf_scan(p, len, from as usize, to as usize, set.to_le_bytes(), step) {
        Some(v) => v as u32,
        None => u32::MAX,
    }
}

/// A global function's result as a position below `len`, or `None`.
#[inline(always)]
fn found(v: u32, len: usize) -> Option<usize> {
    let v = v as usize;
    (v < len).then_some(v)
}

/// The scans' signature.
type ScanFn = extern "C" fn(*const [u8; BUF_SIZE], u32, u32, u32, u32) -> u32;

/// A scan of `[from, to)`: `from` itself checked here (the most common hit costs no
/// call), the rest by the global function `scan`, called only when there is a rest.
#[inline(always)]
fn scan_from(
    p: *const [u8; BUF_SIZE],
    len: usize,
    from: usize,
    to: usize,
    set: [u8; 4],
    scan: ScanFn,
) -> Option<usize> {
    if from < to && byte_in(p, len, from, &set) {
        return Some(from);
    }
    if from + 1 >= to || from + 1 >= len {
        return None;
    }
    let at = scan(
        p,
        (from + 1) as u32,
        to.min(len) as u32,
        len as u32,
        u32::from_le_bytes(set),
    );
    found(at, len)
}

/// `Bytes::find_any` over the buffer.
#[inline(always)]
pub fn buf_find(
    p: *const [u8; BUF_SIZE],
    len: usize,
    from: usize,
    to: usize,
    set: [u8; 4],
) -> Option<usize> {
    scan_from(p, len, from, to, set, fwd_scan_any)
}

/// `Bytes::find_line_start` over the buffer: `from` itself, then the positions after a `\n`.
#[inline(always)]
pub fn buf_line_start(
    p: *const [u8; BUF_SIZE],
    len: usize,
    from: usize,
    to: usize,
    set: [u8; 4],
) -> Option<usize> {
    scan_from(p, len, from, to, set, fwd_scan_line)
}
