//! Per-host visibility: counting every forwarded packet under its flow's host, reading the
//! host from the first payload (TLS SNI / HTTP Host), and reporting connection events.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, bpf_dynptr},
    helpers::{
        bpf_dynptr_from_mem, bpf_dynptr_read, bpf_ktime_get_ns, bpf_loop, bpf_skb_load_bytes,
        bpf_xdp_load_bytes, generated,
    },
    maps::ProgramArray,
    programs::{TcContext, XdpContext},
};
use forwarder_common::{
    CLASS_DONE, CLASS_PENDING, ConnEvent, Counter, DIR_TO_BACKEND, END_FIN, END_RST,
    EVENT_CLASSIFIED, EVENT_ENDED, EVENT_RECORD_BYTES, EVENTS_WAKE_BYTES, FLOW_F_CLS_STATE,
    FLOW_F_CUT, FLOW_F_END_REPORTED, FLOW_F_FIN, FLOW_F_HANDOFF_WAIT, FLOW_F_LOCAL, FLOW_F_RST,
    FLOW_F_UDP, FlowKey, FlowValue, HANDOFF_WAIT_NS, HOST_DROP_POLICY, HOST_FIRST_CONFIGURED,
    HOST_OTHER, HOST_UNKNOWN, HostKey, HostStats, POLICY_DROP, POLICY_LOCAL, PROTO_TCP,
    classify::{
        self, BUF_SIZE, CARRY_MAX, CODE_HTTP_MALFORMED, CODE_HTTP_NAME, CODE_HTTP_NO_HOST,
        CODE_NEED_MORE, CODE_NOT_TLS_OR_HTTP, CODE_TLS_MALFORMED, CODE_TLS_NAME, CODE_TLS_NO_SNI,
        ClassifyState, MAX_SEGMENT_PAYLOAD, MAX_SEGMENTS, MAX_STEPS, STEP_CONTINUE,
    },
    handoff::{HANDOFF_LOCAL, HANDOFF_SEGMENT},
    host::{MAX_NAME_LEN, NameMatch, NameWalk},
    host_stats_index,
    packet::{Bytes, COPY_MAX, PacketInfo, TCP_FIN, TCP_RST},
    swar::{eq_bytes, set_bytes},
};

use crate::{
    handoff,
    maps::{
        CLASSIFY, CLS_BUF, CLS_STATE, EVENTS, HOST_POLICY, HOST_STATS, HOSTS, SCRATCH, count,
        packet_info,
    },
    pkt::opaque,
};

/// Reads packet bytes into map memory.
pub trait LoadBytes {
    fn load(&self, off: usize, dst: *mut u8, len: u32) -> bool;
}

impl LoadBytes for XdpContext {
    #[inline(always)]
    fn load(&self, off: usize, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, dst as *mut c_void, len) == 0 }
    }
}

impl LoadBytes for TcContext {
    #[inline(always)]
    fn load(&self, off: usize, dst: *mut u8, len: u32) -> bool {
        unsafe {
            bpf_skb_load_bytes(
                self.skb.skb as *const c_void,
                off as u32,
                dst as *mut c_void,
                len,
            ) == 0
        }
    }
}

/// Host `id`'s statistics for TCP connections, or for QUIC (`udp`) ones.
#[inline(always)]
fn stats(id: u32, udp: bool) -> Option<&'static mut HostStats> {
    HOST_STATS
        .get_ptr_mut(host_stats_index(id, udp))
        .map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn is_udp(flow: &FlowValue) -> bool {
    flow.flags & FLOW_F_UDP != 0
}

#[inline(always)]
fn add(field: &mut u64, v: u64) {
    // Flow entries are shared between CPUs: an atomic add (BPF_ATOMIC | BPF_ADD).
    #[cfg(target_arch = "bpf")]
    unsafe {
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) field as *mut u64, in(reg) v, options(nostack));
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        *field += v;
    }
}

/// Where `flow`'s host statistics are.
#[inline(always)]
pub fn stats_index(flow: &FlowValue) -> u32 {
    host_stats_index(flow.host_id, is_udp(flow))
}

/// Counts a dropped packet under its host (its QUIC statistics for `udp`).
#[inline(always)]
pub fn host_drop(id: u32, udp: bool, reason: usize) {
    host_drop_at(host_stats_index(id, udp), reason);
}

/// Counts a dropped packet under the host statistics at `index` (`host_stats_index`).
#[inline(always)]
pub fn host_drop_at(index: u32, reason: usize) {
    if let Some(s) = HOST_STATS.get_ptr_mut(index).map(|p| unsafe { &mut *p })
        && let Some(d) = s.drops.get_mut(reason)
    {
        *d += 1;
    }
}

/// Counts one packet of `bytes` on the flow entry and under its host.
#[inline(always)]
pub fn account(flow: &mut FlowValue, bytes: u64) {
    add(&mut flow.packets, 1);
    add(&mut flow.bytes, bytes);
    let now = unsafe { bpf_ktime_get_ns() };
    if flow.first_ns == 0 {
        flow.first_ns = now;
    }
    flow.last_ns = now;
    if let Some(s) = stats(flow.host_id, is_udp(flow)) {
        // Per-CPU slot: plain adds.
        if flow.direction == DIR_TO_BACKEND {
            s.packets_to_backend += 1;
            s.bytes_to_backend += bytes;
        } else {
            s.packets_to_client += 1;
            s.bytes_to_client += bytes;
        }
    }
}

/// Moves a flow entry's counts from `HOST_UNKNOWN` to `id` and attributes it to `id`.
#[inline(always)]
fn attribute(flow: &mut FlowValue, id: u32) {
    flow.class_state = CLASS_DONE;
    if flow.host_id == id {
        return;
    }
    let (p, b) = (flow.packets, flow.bytes);
    // Per-CPU values may go below zero here and there; their sum, taken with wrapping
    // arithmetic by the daemon, is exact.
    let udp = is_udp(flow);
    if let Some(s) = stats(flow.host_id, udp) {
        if flow.direction == DIR_TO_BACKEND {
            s.packets_to_backend = s.packets_to_backend.wrapping_sub(p);
            s.bytes_to_backend = s.bytes_to_backend.wrapping_sub(b);
        } else {
            s.packets_to_client = s.packets_to_client.wrapping_sub(p);
            s.bytes_to_client = s.bytes_to_client.wrapping_sub(b);
        }
    }
    if let Some(s) = stats(id, udp) {
        if flow.direction == DIR_TO_BACKEND {
            s.packets_to_backend = s.packets_to_backend.wrapping_add(p);
            s.bytes_to_backend = s.bytes_to_backend.wrapping_add(b);
        } else {
            s.packets_to_client = s.packets_to_client.wrapping_add(p);
            s.bytes_to_client = s.bytes_to_client.wrapping_add(b);
        }
    }
    flow.host_id = id;
}

/// Emits a connection event built from both entries of a connection.
#[inline(always)]
fn emit(kind: u32, reason: u32, fwd_key: &FlowKey, fwd: &FlowValue, rev: Option<&FlowValue>) {
    let Some(mut e) = EVENTS.reserve::<ConnEvent>(0) else {
        count(Counter::EventsLost);
        return;
    };
    let (rp, rb, rlast) = match rev {
        Some(r) => (r.packets, r.bytes, r.last_ns),
        None => (0, 0, 0),
    };
    e.write(ConnEvent {
        kind,
        host_id: fwd.host_id,
        client_addr: fwd_key.src,
        client_port: fwd_key.sport,
        family: fwd_key.family,
        proto: fwd_key.proto,
        reason,
        _pad: 0,
        packets_to_backend: fwd.packets,
        bytes_to_backend: fwd.bytes,
        packets_to_client: rp,
        bytes_to_client: rb,
        first_ns: fwd.first_ns,
        last_ns: if rlast > fwd.last_ns {
            rlast
        } else {
            fwd.last_ns
        },
    });
    // No wake-up per event (see EVENTS_WAKE_BYTES): the daemon drains the ring on a timer,
    // and is woken once when the unread bytes cross the mark (not by every event beyond
    // it, which would cost the most when the daemon is slow).
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if unread >= EVENTS_WAKE_BYTES && unread < EVENTS_WAKE_BYTES + EVENT_RECORD_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    e.submit(flags as u64);
}

/// Gives the connection its host: both entries, the connection counter, the event.
#[inline(never)]
fn finish(fwd_key: &FlowKey, fwd: &mut FlowValue, id: u32, c: Counter) {
    count(c);
    attribute(fwd, id);
    if fwd_key.proto == PROTO_TCP
        && crate::maps::config().is_some_and(|cfg| cfg.syn_flood_threshold != 0)
    {
        // A handshake completed from this address: the SYN flood guard lets it through.
        crate::flow::mark_good(fwd_key);
    }
    let Some(s) = (unsafe { SCRATCH.get_ptr_mut(0).map(|p| &mut *p) }) else {
        return;
    };
    crate::flow::opposite_key(fwd_key, fwd, &mut s.rev_key);
    let mut rev = crate::flow::lookup(&s.rev_key);
    if let Some(r) = rev.as_deref_mut() {
        attribute(r, id);
        // The backend's packets of a cut connection must not reach the client any more.
        r.flags |= fwd.flags & (FLOW_F_CUT | FLOW_F_LOCAL);
    }
    if let Some(st) = stats(id, is_udp(fwd)) {
        st.connections += 1;
    }
    emit(EVENT_CLASSIFIED, 0, fwd_key, fwd, rev.map(|r| &*r));
}

/// The classifier's view of the per-CPU buffer: carried bytes, then the segment.
///
/// Single fields are read through a dynptr: the helper checks the offset at run time, so
/// the verifier need not track every offset precisely, which would keep it from merging
/// the parser's paths (it ran out of its instruction budget that way).
struct Buf {
    p: *const [u8; BUF_SIZE],
    len: usize,
    /// Over `p`, made once per segment by [`feed`] (a dynptr cannot be moved, and helper
    /// calls are not free).
    d: *const bpf_dynptr,
}

impl Buf {
    #[inline(always)]
    fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off + N > self.len {
            return None;
        }
        let mut v = [0u8; N];
        let r = unsafe {
            bpf_dynptr_read(
                v.as_mut_ptr() as *mut c_void,
                N as u32,
                self.d,
                off as u32,
                0,
            )
        };
        if r == 0 { Some(v) } else { None }
    }
}

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

/// The word at `idx` of the scan, or `None` past its end (or the buffer's).
/// The word at `idx` of the buffer, and the offset of the word one byte before it.
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
    let c = unsafe { &mut *(ctx as *mut ScanCtx) };
    let mut word = 0;
    while word < FIND_STRIDE / 8 {
        let idx = c.from + i * FIND_STRIDE + word * 8;
        let Some((prev, w)) = scan_word(c, idx) else {
            return 1;
        };
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
fn buf_find(
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
fn buf_line_start(b: &Buf, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
    scan_from(b.p, b.len, from, to, set, fwd_scan_line)
}

/// `Bytes::copy_out` with one helper call.
#[inline(always)]
fn buf_copy(
    p: *const [u8; BUF_SIZE],
    len: usize,
    from: usize,
    n: usize,
    dst: &mut [u8; COPY_MAX],
) -> bool {
    // Bounded for the verifier by the mask and the check, whatever the compiler does.
    let n = opaque(n) & 0x1ff;
    if n > COPY_MAX || from + n > len {
        return false;
    }
    let mut d = core::mem::MaybeUninit::<bpf_dynptr>::uninit();
    unsafe {
        bpf_dynptr_from_mem(p as *mut c_void, BUF_SIZE as u32, 0, d.as_mut_ptr());
        bpf_dynptr_read(
            dst.as_mut_ptr() as *mut c_void,
            n as u32,
            d.as_ptr(),
            from as u32,
            0,
        ) == 0
    }
}

impl Bytes for Buf {
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.len
    }
    #[inline(always)]
    fn find_line_start(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        buf_line_start(self, from, to, set)
    }
    #[inline(always)]
    fn raw8(&self, off: usize) -> Option<u8> {
        self.read::<1>(off).map(|v| v[0])
    }
    #[inline(always)]
    fn raw16(&self, off: usize) -> Option<u16> {
        self.read::<2>(off).map(u16::from_ne_bytes)
    }
    #[inline(always)]
    fn raw32(&self, off: usize) -> Option<u32> {
        self.read::<4>(off).map(u32::from_ne_bytes)
    }
    #[inline(always)]
    fn be16_at(&self, off: usize) -> u16 {
        match self.read::<2>(off) {
            Some(v) => u16::from_be_bytes(v),
            None => 0,
        }
    }
    /// One helper call: the bytes up to the buffer's end, zeros after (as the trait says).
    #[inline(always)]
    fn array<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut v = core::mem::MaybeUninit::<[u8; N]>::uninit();
        let p = v.as_mut_ptr() as *mut u8;
        let avail = self.len.saturating_sub(off);
        if avail < N {
            // Rare (a field at the very end). Byte stores: a zeroed array would be a call
            // to a byte-by-byte memset subprogram, on every read.
            let mut k = 0;
            while k < N {
                unsafe { p.add(k).write_volatile(0) };
                k += 1;
            }
        }
        // Masked so that the verifier sees the length bounded, whatever the compiler does.
        let n = opaque(if avail < N { avail } else { N }) & ((2 * N).next_power_of_two() - 1);
        if n > 0 && n <= N {
            unsafe { bpf_dynptr_read(p as *mut c_void, n as u32, self.d, off as u32, 0) };
        }
        // Every byte is written: by the helper, or zeroed above.
        unsafe { v.assume_init() }
    }
    #[inline(always)]
    fn find_any(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        buf_find(self.p, self.len, from, to, set)
    }
    #[inline(always)]
    fn copy_out(&self, from: usize, n: usize, dst: &mut [u8; COPY_MAX]) -> bool {
        buf_copy(self.p, self.len, from, n, dst)
    }
}

/// The parser's state and buffer for one `bpf_loop` callback per field or line.
struct StepCtx {
    s: *mut ClassifyState,
    p: *const [u8; BUF_SIZE],
    d: *const bpf_dynptr,
    len: u64,
    base: u64,
}

extern "C" fn step_cb(_i: u64, ctx: *mut c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut StepCtx) };
    let b = Buf {
        p: c.p,
        len: opaque(c.len as usize) & (BUF_SIZE * 2 - 1),
        d: c.d,
    };
    // The outcome stays in the map-held state (see `ClassifyState::code`).
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
    let s = unsafe { &mut *s };
    // Looked up, not passed: a pointer argument is plain memory to the verifier, and
    // `bpf_dynptr_from_mem` takes only map values on older kernels.
    let Some(buf) = CLS_BUF.get_ptr(0) else {
        return CODE_NOT_TLS_OR_HTTP;
    };
    // Initialised by the helper (a zeroed value would cost a memset call).
    let mut d = core::mem::MaybeUninit::<bpf_dynptr>::uninit();
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
    unsafe {
        bpf_loop(
            MAX_STEPS as u32,
            step_cb as *mut c_void,
            &mut c as *mut StepCtx as *mut c_void,
            0,
        )
    };
    let s = unsafe { &mut *c.s };
    if s.code == STEP_CONTINUE {
        classify::exhausted_code(s)
    } else {
        s.code
    }
}

/// Direct reads from the buffer, masked into its bounds: for small `bpf_loop` callbacks,
/// where the verifier's precise offsets cost little.
struct DirectBuf {
    p: *const [u8; BUF_SIZE],
    len: usize,
}

impl Bytes for DirectBuf {
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.len
    }
    #[inline(always)]
    fn find_any(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        buf_find(self.p, self.len, from, to, set)
    }
    #[inline(always)]
    fn copy_out(&self, from: usize, n: usize, dst: &mut [u8; COPY_MAX]) -> bool {
        buf_copy(self.p, self.len, from, n, dst)
    }
    #[inline(always)]
    fn raw8(&self, off: usize) -> Option<u8> {
        if off >= self.len {
            return None;
        }
        // The mask must survive optimisation: it is what bounds the access for the verifier.
        Some(unsafe { (*self.p)[opaque(off) & (BUF_SIZE - 1)] })
    }
    #[inline(always)]
    fn raw16(&self, off: usize) -> Option<u16> {
        Some(u16::from_ne_bytes([self.raw8(off)?, self.raw8(off + 1)?]))
    }
    #[inline(always)]
    fn raw32(&self, off: usize) -> Option<u32> {
        Some(u32::from_ne_bytes([
            self.raw8(off)?,
            self.raw8(off + 1)?,
            self.raw8(off + 2)?,
            self.raw8(off + 3)?,
        ]))
    }
}

/// Name bytes `walk_step` handles per `bpf_loop` iteration.
const WALK_STRIDE: usize = 4;

struct WalkCtx {
    p: *const [u8; BUF_SIZE],
    len: u64,
    w: NameWalk,
}

#[inline(always)]
fn host_lookup(k: &HostKey) -> Option<u32> {
    unsafe { HOSTS.get(k) }.map(|v| v.id)
}

extern "C" fn walk_step(i: u64, ctx: *mut c_void) -> i64 {
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

/// Reads the host from a payload segment of a flow still being classified.
#[inline(never)]
pub fn classify_segment<C: EbpfContext + LoadBytes>(
    ctx: &C,
    info: &PacketInfo,
    fwd_key: &FlowKey,
    fwd_flags: u32,
) {
    let payload_off = info.l4() + info.tcp_hlen as usize;
    let payload_len = info.payload_len();
    if payload_len == 0 {
        return;
    }
    let Some(seq) = tcp_seq(ctx, info) else {
        return;
    };
    // Only connections whose name spans segments have a parse state in the map.
    let in_map = if fwd_flags & FLOW_F_CLS_STATE != 0 {
        CLASSIFY.get_ptr_mut(fwd_key)
    } else {
        None
    };
    let s: &mut ClassifyState = match in_map {
        Some(p) => unsafe { &mut *p },
        None => {
            let Some(p) = CLS_STATE.get_ptr_mut(0) else {
                return;
            };
            let s = unsafe { &mut *p };
            s.kind = 0;
            s.stage = 0;
            s.segments = 0;
            s.next_seq = seq;
            s.next_off = 0;
            s.pos = 0;
            s.ext_end = 0;
            s.sni_end = 0;
            s.extensions = 0;
            s.carry_len = 0;
            s
        }
    };
    let ahead = seq.wrapping_sub(s.next_seq) as i32;
    if ahead < 0 {
        // A retransmission of bytes already seen.
        return;
    }
    if ahead > 0 {
        // A gap: the missing segment went by unparsed (reordering); do not guess.
        end_classification(
            fwd_key,
            0,
            HOST_UNKNOWN,
            Counter::ClassifyGaveUp,
            in_map.is_some(),
        );
        return;
    }
    s.segments += 1;
    let Some(buf) = CLS_BUF.get_ptr_mut(0) else {
        return;
    };
    let carried = (s.carry_len as usize) & 0x1ff;
    if carried > CARRY_MAX {
        return;
    }
    if carried > 0 {
        // The whole carry area, whatever part of it is in use: a fixed-size copy does not
        // split the verifier's paths by the carried length.
        // One helper call: a plain copy would be a byte-by-byte memcpy subprogram.
        unsafe {
            generated::bpf_probe_read_kernel(
                buf as *mut c_void,
                CARRY_MAX as u32,
                s.carry.as_ptr() as *const c_void,
            )
        };
    }
    if payload_len > MAX_SEGMENT_PAYLOAD {
        end_classification(
            fwd_key,
            0,
            HOST_UNKNOWN,
            Counter::ClassifyGaveUp,
            in_map.is_some(),
        );
        return;
    }
    // Written so the verifier sees a length of 1..=2048 (payload_len is 1..=2048 here).
    let n = (opaque(payload_len - 1) & (MAX_SEGMENT_PAYLOAD - 1)) as u32 + 1;
    let dst = unsafe { (buf as *mut u8).add(opaque(carried) & 0x1ff) };
    if !ctx.load(payload_off, dst, n) {
        return;
    }
    let base = if carried > 0 { s.pos } else { s.next_off };
    s.next_seq = seq.wrapping_add(payload_len as u32);
    s.next_off = s.next_off.wrapping_add(payload_len as u32);
    let len = (carried + n as usize) as u32;
    let code = fwd_cls_feed(s, len, base);
    if code == CODE_NEED_MORE {
        if s.segments < MAX_SEGMENTS && handoff::wanted() {
            // This segment goes home unread by the daemon otherwise; should the host turn
            // out to be `local`, the daemon replays it to the local server.
            handoff::emit(ctx, info, fwd_key, HANDOFF_SEGMENT, HOST_UNKNOWN);
        }
        if s.segments >= MAX_SEGMENTS {
            end_classification(
                fwd_key,
                0,
                HOST_UNKNOWN,
                Counter::ClassifyGaveUp,
                in_map.is_some(),
            );
        } else if in_map.is_none() {
            if CLASSIFY.insert(fwd_key, &*s, 0).is_ok() {
                if let Some(fwd) = crate::flow::lookup(fwd_key) {
                    fwd.flags |= FLOW_F_CLS_STATE;
                }
            } else {
                end_classification(fwd_key, 0, HOST_UNKNOWN, Counter::ClassifyGaveUp, false);
            }
        }
        return;
    }
    let (id, c) = match code {
        CODE_TLS_NAME | CODE_HTTP_NAME => {
            let ok = if code == CODE_TLS_NAME {
                Counter::ClassifiedTls
            } else {
                Counter::ClassifiedHttp
            };
            match fwd_match_host(buf, len, s.name_off, s.name_len) {
                u32::MAX => (HOST_OTHER, Counter::ClassifyBadName),
                id => (id, ok),
            }
        }
        CODE_TLS_NO_SNI => (HOST_UNKNOWN, Counter::ClassifyTlsNoSni),
        CODE_TLS_MALFORMED => (HOST_UNKNOWN, Counter::ClassifyTlsMalformed),
        CODE_HTTP_NO_HOST => (HOST_UNKNOWN, Counter::ClassifyHttpNoHost),
        CODE_HTTP_MALFORMED => (HOST_UNKNOWN, Counter::ClassifyHttpMalformed),
        _ => (HOST_UNKNOWN, Counter::ClassifyNotTlsOrHttp),
    };
    let policy = if id >= HOST_FIRST_CONFIGURED {
        HOST_POLICY.get(id).copied()
    } else {
        None
    };
    let mut flags = 0;
    if policy == Some(POLICY_DROP) {
        flags = FLOW_F_CUT;
        count(Counter::PolicyCut);
        host_drop(id, false, HOST_DROP_POLICY);
    } else if policy == Some(POLICY_LOCAL) {
        // This segment is not forwarded: the daemon rebuilds the connection on the VPS's
        // own stack and feeds it the payload. Without the event the connection can only
        // be cut (the local stack resets it).
        flags = FLOW_F_CUT;
        if handoff::emit(ctx, info, fwd_key, HANDOFF_LOCAL, id) {
            flags |= FLOW_F_LOCAL | FLOW_F_HANDOFF_WAIT;
            count(Counter::PolicyLocal);
        }
    }
    end_classification(fwd_key, flags, id, c, in_map.is_some());
}

/// Gives the connection of `fwd_key` its host `id` and the `flags` its policy adds.
#[inline(always)]
pub(crate) fn end_classification(fwd_key: &FlowKey, flags: u32, id: u32, c: Counter, in_map: bool) {
    if in_map {
        let _ = CLASSIFY.remove(fwd_key);
    }
    if let Some(fwd) = crate::flow::lookup(fwd_key) {
        fwd.flags |= flags;
        finish(fwd_key, fwd, id, c);
    }
}

#[inline(always)]
fn tcp_seq<C: LoadBytes>(ctx: &C, info: &PacketInfo) -> Option<u32> {
    let Some(p) = SCRATCH.get_ptr_mut(0) else {
        return None;
    };
    let dst = unsafe { &mut (*p).seq_buf } as *mut u32 as *mut u8;
    if !ctx.load(info.l4() + 4, dst, 4) {
        return None;
    }
    Some(u32::from_be(unsafe { (*p).seq_buf }))
}

/// A client packet of a cut connection, left to the VPS's own stack: one handed to the
/// daemon (policy `local`) is still counted under its host, which also keeps its flow
/// entries from ageing out while the daemon serves it.
/// Returns false when the packet must be dropped: its connection is being handed over
/// and the daemon's socket does not exist yet.
#[inline(always)]
pub fn on_cut_packet(info: &PacketInfo, flow: &mut FlowValue) -> bool {
    if flow.flags & FLOW_F_LOCAL == 0 {
        return true;
    }
    if flow.flags & FLOW_F_HANDOFF_WAIT != 0 {
        // `last_ns` is the held-back segment's time until the wait is over.
        let now = unsafe { bpf_ktime_get_ns() };
        if now.wrapping_sub(flow.last_ns) < HANDOFF_WAIT_NS {
            count(Counter::DropHandoffWait);
            return false;
        }
    }
    account(flow, info.l4_len as u64 + (info.l4() - info.l3()) as u64);
    true
}

/// Per-packet bookkeeping of a forwarded packet: counting, connection end on FIN/RST.
/// True when the packet carries payload of a connection whose host is not known yet: the
/// caller then hands it to the name reader with [`to_reader`] once it is done with it.
#[inline(always)]
pub fn on_packet(info: &PacketInfo, key: &FlowKey, flow: &mut FlowValue) -> bool {
    let ip_len = info.l4_len as u64 + (info.l4() - info.l3()) as u64;
    account(flow, ip_len);
    let mut read = false;
    if flow.class_state == CLASS_PENDING && flow.direction == DIR_TO_BACKEND {
        if info.proto == PROTO_TCP && info.tcp_flags & (TCP_FIN | TCP_RST) != 0
            || info.proto != PROTO_TCP && !crate::quic::wanted()
        {
            // The connection ends before any payload, or a UDP flow while QUIC
            // connections are not classified: no name to read.
            finish(key, flow, HOST_UNKNOWN, Counter::ClassifyNotTlsOrHttp);
        } else if info.payload_len() > 0 {
            // TCP: the first payload; UDP: a datagram of a possible QUIC connection.
            read = true;
        }
    }
    if info.proto == PROTO_TCP && info.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        connection_end(info, key, flow);
    }
    read
}

/// Tail-calls the name reader in `readers`. `key` must be the per-CPU
/// `SCRATCH.fwd_key`, where the reader finds it. Returns only if there is no reader (the
/// daemon could not load it): the connection is then counted as unknown.
#[inline(always)]
pub fn to_reader<C: EbpfContext>(
    ctx: &C,
    readers: &ProgramArray,
    key: &FlowKey,
    flow: &mut FlowValue,
) {
    if let Some(s) = SCRATCH.get_ptr_mut(0) {
        unsafe { (*s).redirect_ifindex = flow.ifindex };
    }
    let _ = unsafe { readers.tail_call(ctx, 0) };
    finish(key, flow, HOST_UNKNOWN, Counter::ClassifyUnavailable);
}

/// The body of the name reader programs: classifies the packet `to_reader` handed over.
/// Returns where tc must send it (the flow's tunnel interface; 0 when the packet must be
/// dropped because its host's policy cut the connection) and where the flow's host
/// statistics are (`host_stats_index`).
#[inline(always)]
pub fn read_name<C: EbpfContext + LoadBytes>(ctx: &C) -> (u32, u32) {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return (0, HOST_UNKNOWN);
    };
    let ifindex = unsafe { (*s).redirect_ifindex };
    let Some(info) = packet_info() else {
        return (ifindex, HOST_UNKNOWN);
    };
    // The key stays in the per-CPU scratch; `finish` only writes other fields of it.
    let key = unsafe { &(*s).fwd_key };
    // The entry is looked up again wherever the reader changes it: it may be in either
    // flow table, and a pointer kept across the parse would make the verifier walk the
    // whole parser once per table.
    let Some(flags) = crate::flow::lookup(key).map(|f| f.flags) else {
        return (ifindex, HOST_UNKNOWN);
    };
    if info.proto == PROTO_TCP {
        classify_segment(ctx, info, key, flags);
    } else {
        crate::quic::on_datagram(ctx, info, key, flags);
    }
    let Some(flow) = crate::flow::lookup(key) else {
        return (ifindex, HOST_UNKNOWN);
    };
    if flow.flags & FLOW_F_CUT != 0 {
        return (0, 0);
    }
    (ifindex, stats_index(flow))
}

/// On FIN or RST: marks the entry, and reports the connection's end once it is over
/// (RST, or FIN in both directions).
#[inline(never)]
fn connection_end(info: &PacketInfo, key: &FlowKey, flow: &mut FlowValue) {
    let rst = info.tcp_flags & TCP_RST != 0;
    flow.flags |= if rst { FLOW_F_RST } else { FLOW_F_FIN };
    if flow.flags & FLOW_F_END_REPORTED != 0 {
        return;
    }
    let Some(s) = (unsafe { SCRATCH.get_ptr_mut(0).map(|p| &mut *p) }) else {
        return;
    };
    crate::flow::opposite_key(key, flow, &mut s.rev_key);
    let Some(other) = crate::flow::lookup(&s.rev_key) else {
        return;
    };
    if !rst && other.flags & FLOW_F_FIN == 0 {
        return;
    }
    flow.flags |= FLOW_F_END_REPORTED;
    other.flags |= FLOW_F_END_REPORTED;
    let reason = if rst { END_RST } else { END_FIN };
    if flow.direction == DIR_TO_BACKEND {
        emit(EVENT_ENDED, reason, key, flow, Some(other));
    } else {
        // Events are described from the client's side: the forward entry and its key.
        s.fwd_key = s.rev_key;
        emit(EVENT_ENDED, reason, &s.fwd_key, other, Some(flow));
    }
}
