//! Counting: the global counters (`COUNTERS`, by `Counter`) and the per-host statistics
//! (`HOST_STATS`, by `host_stats_index`), including moving a flow's counts to the host it
//! turns out to belong to.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use forwarder_common::{
    CLASS_DONE, Counter, DIR_TO_BACKEND, FLOW_F_UDP, FlowValue, HostStats, host_stats_index,
};

use crate::maps::{COUNTERS, HOST_STATS};

/// Counts one occurrence of `c`.
#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // Per-CPU slot: no other writer, a plain add is enough.
        // SAFETY: the lookup succeeded, so `p` points to this CPU's counter, which only
        // this program run writes (programs run to completion without migrating).
        unsafe { *p += 1 };
    }
}

/// Host `id`'s statistics for TCP connections, or for QUIC (`udp`) ones.
#[inline(always)]
pub fn stats(id: u32, udp: bool) -> Option<&'static mut HostStats> {
    HOST_STATS
        .get_ptr_mut(host_stats_index(id, udp))
        // SAFETY: a successful lookup of this CPU's slot (see `count`).
        .map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn is_udp(flow: &FlowValue) -> bool {
    flow.flags & FLOW_F_UDP != 0
}

#[inline(always)]
fn add(field: &mut u64, v: u64) {
    // Flow entries are shared between CPUs: an atomic add (BPF_ATOMIC | BPF_ADD).
    #[cfg(target_arch = "bpf")]
    // SAFETY: `field` is a reference, so a valid and aligned u64; the instruction adds
    // `v` to it atomically and touches nothing else.
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
    // SAFETY: a successful lookup of this CPU's slot (see `count`).
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
    // SAFETY: the helper takes no arguments and has no preconditions.
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
pub fn attribute(flow: &mut FlowValue, id: u32) {
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
