//! What a test asks of its lab: the configuration, home's shape and recipe, the link.

#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    /// Extra TOML appended to the forwarder's config file (e.g. `[[rule]]` sections).
    pub extra_config: String,
    /// Extra arguments for `forwarder run`.
    pub forwarder_args: Vec<String>,
    /// Size of the file nginx serves at `/big` (0: none).
    pub big_file_bytes: usize,
    /// Start the UDP echo service at home.
    pub udp_echo: bool,
    /// Two network interfaces of this machine wired to each other (two NICs of a VM on
    /// one emulated hub) to use as the client <-> VPS link instead of a veth pair: the
    /// first becomes the client's `eth0`, the second the VPS's. They go back to the
    /// machine, with their names, when the lab is dropped.
    pub public_nics: Option<(String, String)>,
    /// Where home's web server runs, and so which `forwarder home-config --proxy` recipe
    /// home applies.
    pub home_proxy: HomeProxy,
    /// Home's routing for client IP preservation: `forwarder home-config`'s PostUp lines
    /// (the default), or these shell lines instead (the broken recipes of the doctor's
    /// and the recipe tests).
    pub home_recipe: Option<Vec<String>>,
    /// Apply the recipe `home-config` prints for this shape rather than for `home_proxy`
    /// (a recipe for the wrong shape, as users apply it).
    pub recipe_for: Option<HomeProxy>,
    /// Leave the client veth's transmit checksum offload on: the client's TCP and UDP
    /// checksums then reach the VPS unfinished (`CHECKSUM_PARTIAL`, the field holding only
    /// the pseudo-header sum), as frames from a local stack do when the VPS is itself a
    /// container. Off by default: a real NIC delivers complete checksums.
    pub client_tx_offload: bool,
}

/// Where home's web server (nginx) runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HomeProxy {
    /// On the machine that ends the tunnel, listening on the tunnel addresses.
    #[default]
    OnTunnelMachine,
    /// In a container of that machine (a namespace of its own behind a bridge-like veth),
    /// its ports published the way Docker does it: DNAT of local addresses' 80 and 443 (and
    /// UDP 443, as `-p 443:443/udp` publishes it) to
    /// the container, masquerade of the container subnet going out elsewhere. IPv4 only,
    /// as Docker's default.
    Docker,
    /// On another machine of the home LAN (`lan` namespace, `LAN_PROXY_*`), the tunnel's
    /// machine on the same LAN (`LAN_WG_*`); both have default routes toward a home router
    /// that never answers.
    Lan,
}
