//! What differs between the hooks the programs run at, XDP and tc: how packet bytes are
//! loaded and rewritten, and what the verdicts are. The ingress path itself
//! (`forward::ingress`) is written once, generic over [`Ingress`]; everything here is
//! `#[inline(always)]`, so each program compiles to the same code as if written for its
//! hook alone.

pub mod tc;
pub mod xdp;

use aya_ebpf::{EbpfContext, maps::ProgramArray};
use forwarder_common::{
    Counter, DataplaneConfig, FAMILY_V4, FlowValue, PROTO_TCP,
    packet::{self, PacketInfo, TCP_SYN},
};

use crate::pkt::Pkt;

/// Reads packet bytes into map memory.
pub trait LoadBytes {
    fn load(&self, off: usize, dst: *mut u8, len: u32) -> bool;
}

/// The counters of the ingress path's outcomes at one hook.
pub struct Outcomes {
    /// A malformed packet: counted and dropped by the path (`Some`), or left to the
    /// caller's error path, which counts and drops it the same (`None`).
    pub malformed: Option<Counter>,
    /// Not IPv4 or IPv6.
    pub not_ip: Counter,
    /// IP, but neither TCP nor UDP; and packets no rule matches.
    pub no_rule: Counter,
    /// An IP fragment.
    pub fragment: Counter,
    /// IPv4 with options.
    pub ip_options: Counter,
    /// A new connection left to the VPS's own stack: its rule's backend is down.
    pub fallback: Counter,
    /// A new connection over its client's limit, dropped.
    pub rate_limited: Counter,
    /// A packet of a connection cut by its host's policy, left to the VPS's own stack.
    pub cut: Counter,
    /// Translated toward the backend.
    pub forwarded: Counter,
}

/// A hook the ingress path (`forward::ingress`) runs at.
pub trait Ingress: EbpfContext + LoadBytes {
    type Verdict: Copy;
    /// What the hook keeps from [`Ingress::reserve`] for [`Ingress::translate`].
    type Mark;
    /// The packet goes on to the kernel's stack, untranslated.
    const PASS: Self::Verdict;
    const DROP: Self::Verdict;
    const OUTCOMES: Outcomes;

    /// The name reader's program array for this program type.
    fn readers() -> &'static ProgramArray;
    /// The packet, with its headers directly readable.
    fn headers(&self) -> Pkt;
    /// Runs before the flow table is consulted: whatever the hook needs in order to
    /// translate a packet (XDP: the metadata the tc program recognises it by). `Err`: the
    /// packet passes untranslated, counted as that.
    fn reserve(&self, cfg: &DataplaneConfig) -> Result<Self::Mark, Counter>;
    /// Translates the packet `pkt` (parsed into `info`) toward the flow's backend (`nat`):
    /// destination address and port, checksums, the MSS of a SYN.
    fn translate(
        &self,
        mark: Self::Mark,
        cfg: &DataplaneConfig,
        pkt: &Pkt,
        info: &PacketInfo,
        nat: &FlowValue,
    ) -> Result<(), ()>;
    /// The verdict for a translated packet.
    fn forwarded(&self, nat: &FlowValue) -> Self::Verdict;
}

/// The MSS option of a SYN (or SYN-ACK) to rewrite: its offset, its value and the value it
/// is clamped to (`mss_v4` or `mss_v6`, by family); `None` when nothing is to be rewritten.
#[inline(always)]
pub fn mss_target(
    pkt: &Pkt,
    info: &PacketInfo,
    mss_v4: u16,
    mss_v6: u16,
) -> Option<(usize, u16, u16)> {
    if info.proto != PROTO_TCP || info.tcp_flags & TCP_SYN == 0 {
        return None;
    }
    let max = if info.family == FAMILY_V4 {
        mss_v4
    } else {
        mss_v6
    };
    let (off, cur) = packet::find_mss(pkt, info.l4(), info.tcp_hlen as usize)?;
    let new = packet::clamp_mss(cur, max)?;
    Some((off, cur, new))
}
