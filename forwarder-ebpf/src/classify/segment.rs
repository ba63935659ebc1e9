//! Reading the host from a connection's first TCP payload, segment by segment: the
//! payload loaded behind the bytes carried from the previous segment, parsed
//! (`fwd_cls_feed`), the name matched (`fwd_match_host`), and the host's policy applied.

use core::ffi::c_void;

use aya_ebpf::{EbpfContext, helpers::generated};
use forwarder_common::{
    Counter, FLOW_F_CLS_STATE, FLOW_F_CUT, FLOW_F_HANDOFF_REFUSED, FLOW_F_HANDOFF_WAIT,
    FLOW_F_LOCAL, FlowKey, HOST_DROP_POLICY, HOST_FIRST_CONFIGURED, HOST_OTHER, HOST_UNKNOWN,
    POLICY_DROP, POLICY_LOCAL,
    classify::{
        CARRY_MAX, CODE_HTTP_MALFORMED, CODE_HTTP_NAME, CODE_HTTP_NO_HOST, CODE_NEED_MORE,
        CODE_TLS_MALFORMED, CODE_TLS_NAME, CODE_TLS_NO_SNI, ClassifyState, MAX_SEGMENT_PAYLOAD,
        MAX_SEGMENTS,
    },
    handoff::{HANDOFF_LOCAL, HANDOFF_SEGMENT},
    packet::PacketInfo,
};

use super::{host::fwd_match_host, step::fwd_cls_feed};
use crate::{
    counters::{count, host_drop},
    flow::{self, attribute::end_classification},
    handoff,
    hook::LoadBytes,
    maps::{CLASSIFY, CLS_BUF, CLS_STATE, HOST_POLICY, SCRATCH},
    pkt::opaque,
};

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
        // SAFETY: the lookup succeeded: a live entry, valid for the program run (RCU), and
        // only this connection's reader (one packet at a time) parses into it.
        Some(p) => unsafe { &mut *p },
        None => {
            let Some(p) = CLS_STATE.get_ptr_mut(0) else {
                return;
            };
            // SAFETY: the lookup succeeded: this CPU's slot, used by this program run only.
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
    let past = seq
        .wrapping_add(payload_len as u32)
        .wrapping_sub(s.next_seq) as i32;
    if ahead < 0 && past <= 0 {
        // A retransmission of bytes already seen.
        return;
    }
    if ahead != 0 {
        // A gap: the missing segment went by unparsed (reordering); do not guess. Or a
        // segment that repeats bytes already seen and carries new ones behind them: home
        // keeps the new ones, which the parser would not read from where home does.
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
        // SAFETY: `buf` is `CLS_BUF`, `BUF_SIZE` bytes, and `s.carry` holds `CARRY_MAX`
        // bytes: both hold the `CARRY_MAX` bytes copied.
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
    // SAFETY: `carried <= CARRY_MAX` (checked above), and the buffer holds `CARRY_MAX` +
    // `MAX_SEGMENT_PAYLOAD` bytes: the pointer and the `n` bytes loaded behind it are
    // inside it.
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
        if s.segments < MAX_SEGMENTS && handoff::wanted() && handoff::proven(info, fwd_key) {
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
                if let Some(fwd) = flow::lookup(fwd_key) {
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
        if !handoff::proven(info, fwd_key) {
            // Nothing proves the client's address is its own: the connection is dropped
            // without a word (the VPS's stack would answer the forged source).
            flags |= FLOW_F_HANDOFF_REFUSED;
            count(Counter::HandoffUnproven);
        } else if handoff::emit(ctx, info, fwd_key, HANDOFF_LOCAL, id) {
            flags |= FLOW_F_LOCAL | FLOW_F_HANDOFF_WAIT;
            count(Counter::PolicyLocal);
        }
    }
    end_classification(fwd_key, flags, id, c, in_map.is_some());
}

#[inline(always)]
fn tcp_seq<C: LoadBytes>(ctx: &C, info: &PacketInfo) -> Option<u32> {
    let p = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let dst = unsafe { &mut (*p).seq_buf } as *mut u32 as *mut u8;
    if !ctx.load(info.l4() + 4, dst, 4) {
        return None;
    }
    // SAFETY: as above; `load` wrote the four bytes.
    Some(u32::from_be(unsafe { (*p).seq_buf }))
}
