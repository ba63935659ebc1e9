use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use forwarder_common::{
    COUNTER_COUNT, Counter, DataplaneConfig, FlowKey, FlowValue, RuleKey, RuleValue,
    packet::PacketInfo,
};

/// Upper bound on forwarding rules (address x protocol x port).
const MAX_RULES: u32 = 1024;
/// Flow entries, two per connection. 256k entries cost about 30 MiB of kernel memory.
const MAX_FLOWS: u32 = 262_144;

#[map(name = "RULES")]
pub static RULES: HashMap<RuleKey, RuleValue> = HashMap::with_max_entries(MAX_RULES, 0);

#[map(name = "FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[map(name = "CONFIG")]
pub static CONFIG: Array<DataplaneConfig> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Per-CPU scratch space for values too large for the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    pub fwd_key: FlowKey,
    pub fwd: FlowValue,
    pub rev_key: FlowKey,
    pub rev: FlowValue,
}

#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The parsed headers of the packet being processed, per CPU.
#[map(name = "PKT_INFO")]
pub static PKT_INFO: PerCpuArray<PacketInfo> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn packet_info() -> Option<&'static mut PacketInfo> {
    // SAFETY: per-CPU slot, and programs run to completion without migrating.
    PKT_INFO.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // Per-CPU slot: no other writer, a plain add is enough.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn config() -> Option<&'static DataplaneConfig> {
    CONFIG.get(0)
}
