//! The data path's global counters.

/// Global counters. Each name says what happened to a packet and, for drops and passes,
/// why; the daemon exports them under these names.
///
/// This declaration is the only list of counters: their index in `COUNTERS_MAP` is the
/// declaration order, [`Counter::ALL`] and [`COUNTER_COUNT`] are derived from it, and a
/// counter's name ([`Counter::name`]) is its variant's name in snake_case.
#[repr(u32)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::EnumCount, strum::VariantArray, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Counter {
    /// XDP: packets seen on the public interface.
    XdpRx = 0,
    /// XDP: translated and handed to tc for the tunnel.
    XdpToTunnel,
    /// XDP: left to the kernel (no rule, not IP, ...).
    XdpPassNoRule,
    XdpPassNotIp,
    XdpPassFragment,
    XdpPassIpOptions,
    XdpPassDisabled,
    /// XDP: metadata could not be attached; the tc program translates instead.
    XdpPassNoMeta,
    XdpDropMalformed,
    /// tc on the public interface: packets redirected into the tunnel.
    TcToTunnel,
    /// tc on the public interface: translated by tc itself (no XDP in front).
    TcTranslated,
    TcPass,
    TcDropMalformed,
    TcRedirectFailed,
    /// tc on the tunnel: replies translated back and sent out of the public interface.
    TunnelToClient,
    TunnelPass,
    TunnelDropMalformed,
    TunnelRedirectFailed,
    MssClamped,
    FlowsCreated,
    FlowCreateFailed,
    /// Classification outcomes of new flows.
    ClassifiedTls,
    ClassifiedHttp,
    /// A TLS ClientHello without server_name (or with an encrypted inner one only).
    ClassifyTlsNoSni,
    ClassifyTlsMalformed,
    ClassifyHttpNoHost,
    ClassifyHttpMalformed,
    /// First payload was neither TLS nor HTTP/1.
    ClassifyNotTlsOrHttp,
    /// The name was longer than `MAX_NAME_LEN` or had invalid characters.
    ClassifyBadName,
    /// The parse needed more segments than it may use.
    ClassifyGaveUp,
    /// Events lost because the ring buffer was full.
    EventsLost,
    /// Connections counted as unknown because the name reader could not be loaded (see
    /// docs/architecture.md).
    ClassifyUnavailable,
    /// XDP / tc-only: a packet of a new connection left to the VPS's own stack because the
    /// rule's backend is down (`fallback = "local"`).
    XdpPassFallback,
    TcPassFallback,
    /// XDP / tc-only: a new connection refused because its client opened more than the
    /// configured number per second.
    XdpDropRateLimit,
    TcDropRateLimit,
    /// A connection cut by its host's `drop` policy (counted once, when its name is read).
    PolicyCut,
    /// XDP / tc-only: a packet of a cut connection left untranslated to the VPS's own
    /// stack, which resets the connection.
    XdpPassCut,
    TcPassCut,
    /// A connection handed to the VPS's own stack by its host's `local` policy.
    PolicyLocal,
    /// Hand-off events lost because their ring buffer was full (the connection is reset).
    HandoffLost,
    /// tc on the tunnel: a backend's packet of a connection that is no longer its own
    /// (cut or handed to the VPS's stack), dropped.
    TunnelDropCut,
    /// XDP / tc-only: a client packet dropped while the daemon takes its connection over.
    DropHandoffWait,
    /// XDP / tc-only: a SYN dropped by the SYN flood guard (an address's first during a
    /// flood).
    SynFloodDrop,
    /// A SYN let through during a flood because its address had sent one shortly before.
    SynFloodRetryPass,
    /// Connections moved from the table of opening ones to the established table.
    FlowsConfirmed,
    /// Confirmations that failed: the established table refused the entries (the
    /// connection stays in the table of opening ones and is tried again).
    FlowConfirmFailed,
    /// Initial datagrams of QUIC connections copied to the daemon.
    QuicInitials,
    /// New QUIC connections not handed to the daemon because the hand-off's rate limit
    /// (`DataplaneConfig::quic_rate`) was reached: counted as `unknown`.
    QuicRateLimited,
    /// Initials lost because the ring buffer to the daemon was full.
    QuicInitialsLost,
    /// QUIC connections whose host the daemon read from their Initials.
    ClassifiedQuic,
    /// QUIC connections whose ClientHello had no server_name.
    ClassifyQuicNoSni,
    /// QUIC connections whose Initials the daemon could not decode (unknown version,
    /// garbage, malformed frames or ClientHello).
    ClassifyQuicUndecodable,
    /// QUIC connections without a verdict from the daemon in `QUIC_VERDICT_WAIT_NS`.
    ClassifyQuicTimeout,
    /// A TCP packet without a flow that is not a SYN (a made-up ACK, RST, FIN or data
    /// segment, or one of a connection whose entries are gone and may not be re-created
    /// now), dropped.
    DropNoFlow,
    /// A client packet of a TCP connection still opening that does not complete its
    /// handshake (it does not acknowledge home's SYN-ACK), dropped.
    DropUnconfirmed,
    /// A packet from a source no client has (loopback, multicast, link-local, the VPS's own
    /// addresses, the tunnel's, a backend's), dropped before it created anything.
    DropBogonSource,
    /// A packet whose flow key belongs to the other direction (a spoofed hairpin), dropped.
    DropWrongDirection,
    /// Flows re-created from a packet in the middle of a connection (its entries were
    /// evicted), within the budget `DataplaneConfig::recreate_rate`.
    FlowsRecreated,
    /// A client RST outside the window its connection has seen, dropped; or a FIN there,
    /// forwarded without ending the connection.
    EndOutOfWindow,
    /// A SYN during a flood with the address and port of an earlier dropped one but not a
    /// retransmission of it (another sequence number, or too soon), dropped.
    SynFloodRetryRefused,
    /// tc on the tunnel: home's RST to a re-created flow, dropped with the flow (its client
    /// may be spoofed).
    TunnelDropRecreatedRst,
    /// Connections that named a `local` host without acknowledging the backend's SYN-ACK
    /// (their source may be forged): not handed to the daemon, dropped silently.
    HandoffUnproven,
    /// Client packets of such connections, dropped (never left to the VPS's stack).
    DropHandoffRefused,
    /// tc on the public interface: a packet XDP translated whose checksum was left to
    /// offload (`CHECKSUM_PARTIAL`, e.g. sent by a local stack over a veth), its checksum
    /// field repaired before the hand-off.
    TcCsumPartialFixed,
    /// A connection whose host could not be read, cut because its rule has
    /// `unknown_policy = "drop"` (counted once, when the reader gave up on its name).
    PolicyUnknownCut,
}

/// Entries of `COUNTERS_MAP`: one per counter.
pub const COUNTER_COUNT: u32 = <Counter as strum::EnumCount>::COUNT as u32;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; <Counter as strum::EnumCount>::COUNT] =
        match <Counter as strum::VariantArray>::VARIANTS.first_chunk() {
            Some(all) => *all,
            None => panic!("VARIANTS holds every counter"),
        };

    /// Stable snake_case name, used in logs and metrics.
    pub fn name(self) -> &'static str {
        self.into()
    }
}
