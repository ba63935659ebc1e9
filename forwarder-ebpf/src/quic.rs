//! QUIC: the SNI of a QUIC connection is in its Initial packets, encrypted with keys any
//! observer can derive but which take HKDF and AES-GCM to use, more than a kernel program
//! can do. The name readers therefore copy a new connection's Initial datagrams to the
//! daemon (`QUIC_INITIALS`, rate-limited, without holding the packet back), which writes
//! its verdict into `QUIC_VERDICTS`; the connection's next client packet takes the verdict
//! and attributes the connection, moving what was counted so far to its host.

use aya_ebpf::{EbpfContext, helpers::bpf_ktime_get_ns};
use forwarder_common::{
    Counter, FLOW_F_CUT, FLOW_F_QUIC, FlowKey, HOST_DROP_POLICY, HOST_FIRST_CONFIGURED, HOST_OTHER,
    HOST_UNKNOWN, POLICY_DROP, POLICY_LOCAL, QUIC_COPY_MAX, QUIC_MAX_INITIALS, QUIC_V_BAD_NAME,
    QUIC_V_NAME, QUIC_V_NO_SNI, QUIC_VERDICT_WAIT_NS, QuicInitialEvent, admit,
    packet::{PacketInfo, UDP_HLEN},
    quic::{MIN_INITIAL_DATAGRAM, is_initial},
};

use crate::{
    counters::{count, host_drop},
    flow::{self, attribute::end_classification},
    hook::LoadBytes,
    maps::{HOST_POLICY, QUIC_INITIALS, QUIC_RATE, QUIC_VERDICTS, SCRATCH, config},
    pkt::opaque,
};

/// Whether QUIC connections are classified at all (`DataplaneConfig::quic_rate`).
#[inline(always)]
pub fn wanted() -> bool {
    config().is_some_and(|c| c.quic_rate != 0)
}

/// A client datagram of a UDP connection whose host is not known yet, after forwarding.
#[inline(never)]
pub fn on_datagram<C: EbpfContext + LoadBytes>(
    ctx: &C,
    info: &PacketInfo,
    key: &FlowKey,
    flags: u32,
) {
    if flags & FLOW_F_QUIC != 0
        // SAFETY: hash map values stay valid for the rest of the program run (RCU).
        && let Some(v) = unsafe { QUIC_VERDICTS.get(key) }.copied()
    {
        let _ = QUIC_VERDICTS.remove(key);
        take_verdict(key, v.code, v.host_id);
        return;
    }
    let initial = looks_initial(ctx, info);
    let Some(flow) = flow::lookup(key) else {
        return;
    };
    let handed = flow.quic_initials;
    if handed == 0 && !initial {
        // Not QUIC (or not the start of a QUIC connection we can read).
        end_classification(key, 0, HOST_UNKNOWN, Counter::ClassifyNotTlsOrHttp, false);
        return;
    }
    if initial && handed < QUIC_MAX_INITIALS {
        // Either failure is counted once: by `end_classification` when it leaves the
        // connection unknown, on its own otherwise.
        let failed = if !rate_ok() {
            Counter::QuicRateLimited
        } else {
            flow.quic_initials = handed + 1;
            flow.flags |= FLOW_F_QUIC;
            if emit(ctx, info, key) {
                return;
            }
            Counter::QuicInitialsLost
        };
        if handed == 0 {
            end_classification(key, 0, HOST_UNKNOWN, failed, false);
        } else {
            count(failed);
        }
        return;
    }
    // SAFETY: the helper takes no arguments and has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(flow.first_ns) > QUIC_VERDICT_WAIT_NS {
        end_classification(key, 0, HOST_UNKNOWN, Counter::ClassifyQuicTimeout, false);
    }
}

/// Attributes the connection as the daemon decided; a host whose policy is `drop` or
/// `local` has the connection cut (a browser then falls back to TCP, where `local` takes
/// over).
#[inline(always)]
fn take_verdict(key: &FlowKey, code: u32, host_id: u32) {
    let (id, c) = match code {
        QUIC_V_NAME => (host_id, Counter::ClassifiedQuic),
        QUIC_V_BAD_NAME => (HOST_OTHER, Counter::ClassifyBadName),
        QUIC_V_NO_SNI => (HOST_UNKNOWN, Counter::ClassifyQuicNoSni),
        _ => (HOST_UNKNOWN, Counter::ClassifyQuicUndecodable),
    };
    let mut flags = 0;
    if id >= HOST_FIRST_CONFIGURED
        && let Some(&p) = HOST_POLICY.get(id)
        && (p == POLICY_DROP || p == POLICY_LOCAL)
    {
        flags = FLOW_F_CUT;
        count(Counter::PolicyCut);
        host_drop(id, true, HOST_DROP_POLICY);
    }
    end_classification(key, flags, id, c, false);
}

/// Whether the datagram starts a QUIC Initial the daemon can decrypt: a long header of
/// version 1 or 2, type Initial, in a datagram padded as clients must.
#[inline(always)]
fn looks_initial<C: LoadBytes>(ctx: &C, info: &PacketInfo) -> bool {
    if info.payload_len() < MIN_INITIAL_DATAGRAM {
        return false;
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let dst = unsafe { &mut (*s).quic_head } as *mut [u8; 8] as *mut u8;
    if !ctx.load(info.l4() + UDP_HLEN, dst, 5) {
        return false;
    }
    // SAFETY: as above; `load` wrote the five bytes read here, the rest is plain memory.
    let h = unsafe { (*s).quic_head };
    is_initial(h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]]))
}

/// The per-CPU token bucket of the hand-off: a flood of made-up Initials costs the daemon
/// at most this rate.
#[inline(always)]
fn rate_ok() -> bool {
    let Some(cfg) = config() else {
        return false;
    };
    let Some(tat) = QUIC_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the helper takes no arguments and has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the lookup succeeded: this CPU's slot, used by this program run only.
    match admit(unsafe { *tat }, now, cfg.quic_rate, cfg.quic_burst) {
        Some(t) => {
            // SAFETY: as above.
            unsafe { *tat = t };
            true
        }
        None => false,
    }
}

/// Copies the datagram's UDP payload (up to `QUIC_COPY_MAX` bytes) to the daemon; the
/// daemon is woken: its answer is needed before the connection's next packet.
#[inline(never)]
fn emit<C: EbpfContext + LoadBytes>(ctx: &C, info: &PacketInfo, key: &FlowKey) -> bool {
    let Some(mut e) = QUIC_INITIALS.reserve::<QuicInitialEvent>(0) else {
        return false;
    };
    // SAFETY: the reserved record, valid and exclusively ours until it is submitted or
    // discarded below.
    let ev = unsafe { &mut *e.as_mut_ptr() };
    ev.key = *key;
    let len = info.payload_len();
    // 1..=QUIC_COPY_MAX whatever the compiler does with `len` (which is at least 1200).
    let n = (opaque(len.saturating_sub(1)) & (QUIC_COPY_MAX - 1)) as u32 + 1;
    let n = if len > QUIC_COPY_MAX {
        QUIC_COPY_MAX as u32
    } else {
        n
    };
    ev.len = n;
    ev.datagram_len = len as u32;
    if !ctx.load(info.l4() + UDP_HLEN, ev.data.as_mut_ptr(), n) {
        e.discard(0);
        return false;
    }
    e.submit(0);
    count(Counter::QuicInitials);
    true
}
