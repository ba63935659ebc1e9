//! The harness's view of the maps, as the daemon reads and writes them: hosts and their
//! policies, configuration, rules, flows, hand-off and QUIC events, statistics, counters.

use std::net::IpAddr;

use anyhow::Context as _;
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use forwarder_common::{
    CONFIG_MAP, COUNTERS_MAP, Counter, DataplaneConfig, FLOWS_MAP, FlowKey, FlowValue,
    HOST_FIRST_CONFIGURED, HOSTS_MAP, HostKey, HostValue, NEW_FLOWS_MAP, PROTO_TCP, RULES_MAPS,
    RuleKey, RuleValue, addr_words, host::HostPattern,
};

use super::{conn::flow_key, harness::Harness};
use crate::forwarder_code::{add_host_stats, read_record};

impl Harness {
    /// Fills the host table as the daemon does: pattern `i` gets id
    /// `HOST_FIRST_CONFIGURED + i`. Returns the host-side view of the table, for
    /// `forwarder_common::host::match_name`.
    pub fn set_hosts(
        &mut self,
        patterns: &[&str],
    ) -> anyhow::Result<std::collections::HashMap<HostKey, u32>> {
        let mut map: HashMap<&mut MapData, HostKey, HostValue> =
            HashMap::try_from(self.ebpf.map_mut(HOSTS_MAP).context("hosts")?)?;
        let mut table = std::collections::HashMap::new();
        for (id, p) in (HOST_FIRST_CONFIGURED..).zip(patterns) {
            let h = HostPattern::parse(p).map_err(|e| anyhow::anyhow!(e))?;
            map.insert(h.key(), HostValue { id, _pad: 0 }, 0)?;
            table.insert(h.key(), id);
        }
        Ok(table)
    }

    /// Sets the `POLICY_*` of host id `id`, as `forwarder hosts set` does.
    pub fn set_host_policy(&mut self, id: u32, policy: u32) -> anyhow::Result<()> {
        let mut map: Array<&mut MapData, u32> = Array::try_from(
            self.ebpf
                .map_mut(forwarder_common::HOST_POLICY_MAP)
                .context("host policies")?,
        )?;
        map.set(id, policy, 0)?;
        Ok(())
    }

    /// Sets the `CFG_F_*` bits, as the daemon does from the configuration.
    pub fn set_config_flags(&mut self, flags: u32) -> anyhow::Result<()> {
        self.update_config(|c| c.flags = flags)
    }

    /// Changes the data path configuration entry as the daemon does.
    fn update_config(&mut self, f: impl FnOnce(&mut DataplaneConfig)) -> anyhow::Result<()> {
        let mut cfg: Array<&mut MapData, DataplaneConfig> =
            Array::try_from(self.ebpf.map_mut(CONFIG_MAP).context("config")?)?;
        let mut c = cfg.get(&0, 0)?;
        f(&mut c);
        cfg.set(0, c, 0)?;
        Ok(())
    }

    /// The hand-off events the kernel has queued since the last call.
    pub fn handoff_events(&mut self) -> Vec<forwarder_common::handoff::HandoffEvent> {
        let mut rb = aya::maps::RingBuf::try_from(
            self.ebpf
                .map_mut(forwarder_common::HANDOFF_MAP)
                .expect("hand-off ring buffer"),
        )
        .expect("hand-off ring buffer");
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            out.push(read_record(&item).expect("a whole hand-off event"));
        }
        out
    }

    /// Turns QUIC classification on with this hand-off rate, as `[quic]` does.
    pub fn set_quic_rate(&mut self, rate: u16, burst: u16) -> anyhow::Result<()> {
        self.update_config(|c| {
            c.quic_rate = rate;
            c.quic_burst = burst;
        })
    }

    /// The QUIC Initial datagrams the kernel has copied since the last call.
    pub fn quic_initials(&mut self) -> Vec<forwarder_common::QuicInitialEvent> {
        let mut rb = aya::maps::RingBuf::try_from(
            self.ebpf
                .map_mut(forwarder_common::QUIC_INITIALS_MAP)
                .expect("QUIC ring buffer"),
        )
        .expect("QUIC ring buffer");
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            out.push(read_record(&item).expect("a whole Initial event"));
        }
        out
    }

    /// Writes the daemon's verdict on the connection of `key`, as `forwarder::quic` does.
    pub fn set_quic_verdict(
        &mut self,
        key: &FlowKey,
        v: forwarder_common::QuicVerdict,
    ) -> anyhow::Result<()> {
        let mut map: HashMap<&mut MapData, FlowKey, forwarder_common::QuicVerdict> =
            HashMap::try_from(
                self.ebpf
                    .map_mut(forwarder_common::QUIC_VERDICTS_MAP)
                    .context("QUIC verdicts")?,
            )?;
        map.insert(key, v, 0)?;
        Ok(())
    }

    /// Whether a verdict for `key` is still waiting in the kernel's map.
    pub fn quic_verdict_pending(&self, key: &FlowKey) -> bool {
        let map: HashMap<&MapData, FlowKey, forwarder_common::QuicVerdict> = HashMap::try_from(
            self.ebpf
                .map(forwarder_common::QUIC_VERDICTS_MAP)
                .expect("QUIC verdicts"),
        )
        .expect("QUIC verdicts");
        map.get(key, 0).is_ok()
    }

    /// A descriptor of the connection event ring buffer, as the daemon polls it.
    pub fn events_fd(&self) -> std::os::fd::OwnedFd {
        use std::os::fd::AsFd;
        match self.ebpf.map(forwarder_common::EVENTS_MAP) {
            Some(aya::maps::Map::RingBuf(m)) => m.fd().as_fd().try_clone_to_owned().expect("dup"),
            _ => panic!("no event ring buffer"),
        }
    }

    /// The recorded handshake of the connection `client` -> `public`.
    pub fn handshake(
        &self,
        client: (IpAddr, u16),
        public: (IpAddr, u16),
    ) -> Option<forwarder_common::handoff::Handshake> {
        let map: HashMap<&MapData, FlowKey, forwarder_common::handoff::Handshake> =
            HashMap::try_from(self.ebpf.map(forwarder_common::HANDSHAKES_MAP)?).ok()?;
        map.get(&flow_key(client, public), 0).ok()
    }

    /// Sets the SYN flood guard's threshold, as `[limits] syn_flood_threshold` does.
    pub fn set_syn_flood_threshold(&mut self, threshold: u32) -> anyhow::Result<()> {
        self.update_config(|c| c.syn_flood_threshold = threshold)
    }

    /// Lets `rate` packets per second (per CPU) re-create evicted flows, and says whether
    /// the established table is nearly full, as the daemon's flow GC does.
    pub fn set_recreate(&mut self, rate: u16, table_full: bool) -> anyhow::Result<()> {
        self.update_config(|c| c.recreate_rate = rate)?;
        let mut p: Array<&mut MapData, u32> = Array::try_from(
            self.ebpf
                .map_mut(forwarder_common::FLOW_PRESSURE_MAP)
                .context("flow pressure map")?,
        )?;
        p.set(0, u32::from(table_full), 0)?;
        Ok(())
    }

    /// Sets the per-client new-connection limit, as `[limits]` does.
    pub fn set_conn_limit(&mut self, rate: u16, burst: u16) -> anyhow::Result<()> {
        self.update_config(|c| {
            c.conn_rate = rate;
            c.conn_burst = burst;
        })
    }

    /// Sets the `RULE_F_*` flags of the TCP rule for `public`:`port`, as the daemon does
    /// when a backend goes down or comes back.
    pub fn set_rule_flags(&mut self, public: IpAddr, port: u16, flags: u8) -> anyhow::Result<()> {
        self.set_rule_flags_of(PROTO_TCP, public, port, flags)
    }

    /// Sets the `RULE_F_*` flags of the `proto` rule for `public`:`port`.
    pub fn set_rule_flags_of(
        &mut self,
        proto: u8,
        public: IpAddr,
        port: u16,
        flags: u8,
    ) -> anyhow::Result<()> {
        let mut rules: HashMap<&mut MapData, RuleKey, RuleValue> =
            HashMap::try_from(self.ebpf.map_mut(RULES_MAPS[0]).context("rules")?)?;
        let (addr, family) = addr_words(public);
        let key = RuleKey {
            addr,
            port: port.to_be(),
            proto,
            family,
        };
        let mut v = rules.get(&key, 0)?;
        v.flags = flags;
        rules.insert(key, v, 0)?;
        Ok(())
    }

    /// The flow entry of the connection `client` -> `public` (as the client sent it), in
    /// whichever table holds it.
    pub fn forward_flow(&self, client: (IpAddr, u16), public: (IpAddr, u16)) -> Option<FlowValue> {
        let key = flow_key(client, public);
        self.flow_in(FLOWS_MAP, &key)
            .or_else(|| self.flow_in(NEW_FLOWS_MAP, &key))
    }

    /// The flow entry of `key` in the table `map` (`FLOWS_MAP`: established,
    /// `NEW_FLOWS_MAP`: still opening).
    pub fn flow_in(&self, map: &str, key: &FlowKey) -> Option<FlowValue> {
        let map: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map(map)?).ok()?;
        map.get(key, 0).ok()
    }

    /// Entries in the flow table `map`.
    pub fn flow_entries(&self, map: &str) -> usize {
        let map: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map(map).unwrap()).unwrap();
        map.keys().filter(Result::is_ok).count()
    }

    /// Host id `id`'s statistics of TCP connections, summed over CPUs.
    pub fn host_stats(&self, id: u32) -> forwarder_common::HostStats {
        self.host_stats_at(forwarder_common::host_stats_index(id, false))
    }

    /// Host id `id`'s statistics of QUIC (UDP) connections, summed over CPUs.
    pub fn quic_host_stats(&self, id: u32) -> forwarder_common::HostStats {
        self.host_stats_at(forwarder_common::host_stats_index(id, true))
    }

    fn host_stats_at(&self, index: u32) -> forwarder_common::HostStats {
        let map: PerCpuArray<&MapData, forwarder_common::HostStats> =
            PerCpuArray::try_from(self.ebpf.map(forwarder_common::HOST_STATS_MAP).unwrap())
                .unwrap();
        let mut sum = forwarder_common::HostStats::default();
        for s in map.get(&index, 0).unwrap().iter() {
            add_host_stats(&mut sum, s);
        }
        sum
    }

    pub fn counter(&self, c: Counter) -> u64 {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(COUNTERS_MAP).unwrap()).unwrap();
        map.get(&(c as u32), 0).unwrap().iter().sum()
    }
}
