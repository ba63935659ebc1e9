//! The maps of the object, and accessors for the ones read on every packet.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use forwarder_common::{
    COUNTER_COUNT, ConnEvent, DataplaneConfig, FlowKey, FlowValue, HOST_STATS_ENTRIES, HostKey,
    HostStats, HostValue, MAX_HOSTS, QUIC_INITIALS_BYTES, QuicVerdict, RuleKey, RuleValue,
    SOURCE_DENY_ENTRIES, SeenKey, SeenSyn, SourceKey, SynGuard,
    classify::{BUF_SIZE, ClassifyState},
    handoff::Handshake,
    packet::PacketInfo,
};

const _: () = assert!(size_of::<ConnEvent>().is_multiple_of(8));

/// Upper bound on forwarding rules (address x protocol x port).
const MAX_RULES: u32 = 1024;
/// Flow entries of established connections, two per connection. 256k entries cost about
/// 40 MiB of kernel memory.
const MAX_FLOWS: u32 = 262_144;
/// Flow entries of connections still opening. During a flood of 60k made-up connections
/// per second an entry lives about half a second: far longer than a handshake through
/// the tunnel takes.
const MAX_NEW_FLOWS: u32 = 65_536;

/// The two rule sets (see `forwarder_common::RULES_MAPS`).
#[map(name = "RULES_0")]
pub static RULES_0: HashMap<RuleKey, RuleValue> = HashMap::with_max_entries(MAX_RULES, 0);

#[map(name = "RULES_1")]
pub static RULES_1: HashMap<RuleKey, RuleValue> = HashMap::with_max_entries(MAX_RULES, 0);

#[map(name = "FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[map(name = "NEW_FLOWS")]
pub static NEW_FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(MAX_NEW_FLOWS, 0);

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
    /// Landing place for `bpf_*_load_bytes` of the TCP sequence number.
    pub seq_buf: u32,
    /// Where the tc name reader sends the packet once it is done (tc-only mode).
    pub redirect_ifindex: u32,
    /// A SYN's options on their way into `HANDSHAKES`.
    pub handshake: Handshake,
    /// Why `flow::to_backend` returned no flow (`flow::Miss`).
    pub miss: u32,
    /// The key of a `SOURCE_DENY` lookup.
    pub deny_key: aya_ebpf::maps::lpm_trie::Key<[u32; 5]>,
    /// Landing place for the first bytes of a UDP payload (QUIC's long header).
    pub quic_head: [u8; 8],
}

#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "HOSTS")]
pub static HOSTS: HashMap<HostKey, HostValue> = HashMap::with_max_entries(MAX_HOSTS, 0);

/// `POLICY_*` of each host id.
#[map(name = "HOST_POLICY")]
pub static HOST_POLICY: Array<u32> = Array::with_max_entries(MAX_HOSTS, 0);

#[map(name = "HOST_STATS")]
pub static HOST_STATS: PerCpuArray<HostStats> =
    PerCpuArray::with_max_entries(HOST_STATS_ENTRIES, 0);

/// Connection events for the daemon's connection log: 4096 events of 88 bytes.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(forwarder_common::EVENTS_BYTES, 0);

/// The SYN options of connections that may be handed to the VPS's own stack (only
/// written while some host has policy `local`).
#[map(name = "HANDSHAKES")]
pub static HANDSHAKES: LruHashMap<FlowKey, Handshake> = LruHashMap::with_max_entries(16_384, 0);

/// Segments for the daemon's hand-off of `local` connections: about 120 events of 2 KiB.
#[map(name = "HANDOFF")]
pub static HANDOFF: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Parse state of connections whose first payload spans segments (short-lived entries).
#[map(name = "CLASSIFY")]
pub static CLASSIFY: LruHashMap<FlowKey, ClassifyState> = LruHashMap::with_max_entries(16_384, 0);

/// Working buffer of the classifier: carried bytes followed by a segment's payload.
#[map(name = "CLS_BUF")]
pub static CLS_BUF: PerCpuArray<[u8; BUF_SIZE]> = PerCpuArray::with_max_entries(1, 0);

/// Parse state of a connection's first payload segment, before it is known whether the
/// state must outlive the packet.
#[map(name = "CLS_STATE")]
pub static CLS_STATE: PerCpuArray<ClassifyState> = PerCpuArray::with_max_entries(1, 0);

/// The name readers, reached by tail call (slot 0): verified as programs of their own, so
/// their parse paths do not multiply with the forwarding program's. The daemon fills them
/// in; one array per program type, as the kernel ties an array to its callers' type.
#[map(name = "XDP_READER")]
pub static XDP_READER: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[map(name = "TC_READER")]
pub static TC_READER: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// New-connection limiter state per client address (see `forwarder_common::admit`).
#[map(name = "LIMITER")]
pub static LIMITER: LruHashMap<SourceKey, u64> = LruHashMap::with_max_entries(65_536, 0);

/// The SYN flood guard's rate measurement, per CPU (see `forwarder_common::SynGuard`).
#[map(name = "SYN_GUARD")]
pub static SYN_GUARD: PerCpuArray<SynGuard> = PerCpuArray::with_max_entries(1, 0);

/// Addresses that completed a connection (its first payload was read), with when first.
#[map(name = "GOOD_SOURCES")]
pub static GOOD_SOURCES: LruHashMap<SourceKey, u64> = LruHashMap::with_max_entries(65_536, 0);

/// Address and port of SYNs the guard dropped, with when and their sequence number. 256k
/// entries (about 20 MiB): during a flood of up to about 100k made-up addresses per
/// second, a real client's entry outlives its SYN retransmission (1 s on Linux).
#[map(name = "SEEN_SOURCES")]
pub static SEEN_SOURCES: LruHashMap<SeenKey, SeenSyn> = LruHashMap::with_max_entries(262_144, 0);

/// Sources the public interface never opens a flow for (see
/// `forwarder_common::SOURCE_DENY_MAP`).
#[map(name = "SOURCE_DENY")]
pub static SOURCE_DENY: LpmTrie<[u32; 5], u32> = LpmTrie::with_max_entries(SOURCE_DENY_ENTRIES, 0);

/// 1 while the established table is nearly full (see `forwarder_common::FLOW_PRESSURE_MAP`).
#[map(name = "FLOW_PRESSURE")]
pub static FLOW_PRESSURE: Array<u32> = Array::with_max_entries(1, 0);

/// The re-creation budget's state, per CPU (`forwarder_common::admit`).
#[map(name = "RECREATE_RATE")]
pub static RECREATE_RATE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// New QUIC connections' Initial datagrams, for the daemon (see `quic`).
#[map(name = "QUIC_INITIALS")]
pub static QUIC_INITIALS: RingBuf = RingBuf::with_byte_size(QUIC_INITIALS_BYTES, 0);

/// The daemon's verdicts on QUIC connections, by forward flow key.
#[map(name = "QUIC_VERDICTS")]
pub static QUIC_VERDICTS: LruHashMap<FlowKey, QuicVerdict> =
    LruHashMap::with_max_entries(16_384, 0);

/// The Initial hand-off's rate limit, per CPU (`forwarder_common::admit` state).
#[map(name = "QUIC_RATE")]
pub static QUIC_RATE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The parsed headers of the packet being processed, per CPU.
#[map(name = "PKT_INFO")]
pub static PKT_INFO: PerCpuArray<PacketInfo> = PerCpuArray::with_max_entries(1, 0);

/// The parsed headers of the packet being processed (this CPU's `PKT_INFO` slot).
#[inline(always)]
pub fn packet_info() -> Option<&'static mut PacketInfo> {
    // SAFETY: the lookup succeeded, so `p` points to this CPU's slot; programs run to
    // completion without migrating, so no other program run uses it meanwhile.
    PKT_INFO.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The rule for `key` in the rule set `cfg` selects.
#[inline(always)]
pub fn rule(cfg: &DataplaneConfig, key: &RuleKey) -> Option<&'static RuleValue> {
    // SAFETY: hash map values stay valid for the rest of the program run (RCU); the asm
    // statement is empty and touches nothing.
    unsafe {
        if cfg.rules_set == 0 {
            RULES_0.get(key)
        } else {
            let r = RULES_1.get(key);
            // Keeps the two lookups apart: LLVM would otherwise merge them into one call on
            // a selected map pointer, which the verifier cannot inline (a real helper call
            // per packet instead of a few instructions).
            core::arch::asm!("", options(nomem, nostack, preserves_flags));
            r
        }
    }
}

/// The daemon's settings.
#[inline(always)]
pub fn config() -> Option<&'static DataplaneConfig> {
    CONFIG.get(0)
}
