//! The ingress path on the public interface, once for both hooks: parse, match a rule,
//! find or open the flow (or say why not), count, translate toward the backend, hand the
//! first payload to the name reader. The hooks (`hook::Ingress`) differ only in their
//! verdicts, counters and rewrites.

use forwarder_common::{
    DataplaneConfig, FLOW_F_CUT, HOST_DROP_RATE_LIMIT, HOST_UNKNOWN, PROTO_UDP, RuleKey,
    packet::{self, Skip},
};

use super::track::{on_cut_packet, on_packet};
use crate::{
    classify::to_reader,
    counters::{count, host_drop},
    flow::{self, Miss},
    handoff,
    hook::Ingress,
    maps::{packet_info, rule},
};

/// Counts `c` and passes the packet to the stack untranslated.
#[inline(always)]
fn pass<H: Ingress>(c: forwarder_common::Counter) -> Result<H::Verdict, ()> {
    count(c);
    Ok(H::PASS)
}

/// The path of a client's packet at hook `H`, with the forwarder enabled (`cfg`). `Err`:
/// a malformed packet (or one that changed between parse and rewrite), dropped by the
/// caller.
#[inline(always)]
pub fn ingress<H: Ingress>(ctx: &H, cfg: &DataplaneConfig) -> Result<H::Verdict, ()> {
    let outcomes = H::OUTCOMES;
    let pkt = ctx.headers();
    let info = packet_info().ok_or(())?;
    match packet::parse_ethernet_into(&pkt, info) {
        Ok(()) => {}
        Err(Skip::NotIp) => return pass::<H>(outcomes.not_ip),
        Err(Skip::OtherProto) => return pass::<H>(outcomes.no_rule),
        Err(Skip::Fragment) => return pass::<H>(outcomes.fragment),
        Err(Skip::IpOptions) => return pass::<H>(outcomes.ip_options),
        Err(Skip::Malformed) => {
            return match outcomes.malformed {
                Some(c) => {
                    count(c);
                    Ok(H::DROP)
                }
                None => Err(()),
            };
        }
    }
    let key = RuleKey {
        addr: info.dst,
        port: info.dport,
        proto: info.proto,
        family: info.family,
    };
    let Some(rule) = rule(cfg, &key) else {
        return pass::<H>(outcomes.no_rule);
    };
    let mark = match ctx.reserve(cfg) {
        Ok(m) => m,
        Err(c) => return pass::<H>(c),
    };
    let Some(nat) = flow::to_backend(ctx, cfg, info, rule) else {
        return match flow::last_miss() {
            Miss::Fallback => pass::<H>(outcomes.fallback),
            Miss::RateLimit => {
                count(outcomes.rate_limited);
                host_drop(HOST_UNKNOWN, info.proto == PROTO_UDP, HOST_DROP_RATE_LIMIT);
                Ok(H::DROP)
            }
            // Counted by the guard (`syn_flood_drop`) and the flow table
            // (`flow_create_failed`).
            // Counted where they were found.
            Miss::SynFlood | Miss::Failed | Miss::Dropped => Ok(H::DROP),
        };
    };
    if nat.flags & FLOW_F_CUT != 0 {
        // The host's policy cut this connection: the VPS's own stack answers with a RST,
        // or, for a connection handed over by policy `local`, the daemon's socket takes
        // it.
        if !on_cut_packet(info, nat) {
            return Ok(H::DROP);
        }
        return pass::<H>(outcomes.cut);
    }
    let key = flow::last_forward_key().ok_or(())?;
    handoff::record_syn(ctx, info, key);
    ctx.translate(mark, cfg, &pkt, info, nat)?;
    let Some(read) = on_packet(info, key, nat) else {
        return Ok(H::DROP);
    };
    count(outcomes.forwarded);
    if read {
        // Classification last: the reader ends the program with the verdict the hook
        // gives translated packets.
        to_reader(ctx, H::readers(), key, nat);
        if nat.flags & FLOW_F_CUT != 0 {
            // No reader, and the rule cuts connections whose host cannot be read.
            return Ok(H::DROP);
        }
    }
    Ok(ctx.forwarded(nat))
}
