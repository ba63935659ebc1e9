//! The VPS's public interface on a real NIC driver instead of a veth: two virtio-net NICs
//! of a VM, wired to each other by QEMU, become the client's and the VPS's `eth0`. Needs
//! such a pair, named in `FORWARDER_LAB_NICS=client_nic,vps_nic`: `cargo xtask vmtest`
//! boots VMs with one and runs this test there; elsewhere it is ignored.

use integration_tests::{
    Lab, LabOptions, SUBDOMAINS, VPS_V4, missing_prerequisites, subdomain_hosts, wireguard_kind,
};

/// HTTPS and a download through the forwarder with XDP in the virtio-net driver (native
/// mode). A kernel that refuses native XDP there makes the daemon fall back; the test then
/// checks the fallback and says which mode it tested.
#[test]
#[ignore = "needs two wired NICs (FORWARDER_LAB_NICS); run by `cargo xtask vmtest`"]
fn forwarding_through_a_virtio_net_nic() {
    const SIZE: usize = 4 << 20;
    let nics = std::env::var("FORWARDER_LAB_NICS")
        .expect("FORWARDER_LAB_NICS=client_nic,vps_nic names the NICs to use");
    let (client, vps) = nics
        .split_once(',')
        .expect("FORWARDER_LAB_NICS is two names separated by a comma");
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    // The lab moves these NICs into its namespaces: never one that carries the machine's
    // own traffic (an address of its own or a route).
    for nic in [client, vps] {
        let addrs = std::process::Command::new("ip")
            .args(["-o", "addr", "show", "dev", nic, "scope", "global"])
            .output()
            .expect("ip addr");
        let routes = std::process::Command::new("ip")
            .args(["-o", "route", "show", "dev", nic])
            .output()
            .expect("ip route");
        assert!(
            addrs.stdout.is_empty() && routes.stdout.is_empty(),
            "refusing to take {nic}: it has addresses or routes of this machine's"
        );
    }
    let mut lab = Lab::new(&LabOptions {
        extra_config: subdomain_hosts(),
        big_file_bytes: SIZE,
        public_nics: Some((client.to_owned(), vps.to_owned())),
        ..LabOptions::default()
    })
    .expect("building the lab on the NICs");
    let driver = lab
        .exec(&lab.vps, &["ethtool", "-i", "eth0"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        driver.contains("driver: virtio_net"),
        "the VPS's eth0 is not a virtio-net NIC:\n{driver}"
    );
    lab.start_forwarder(&[]).expect("starting the forwarder");
    let page = lab.metrics_page().expect("metrics");
    let mode = ["xdp-driver", "xdp-generic", "tc-only"]
        .into_iter()
        .find(|m| page.contains(&format!("forwarder_xdp_attach_mode{{mode=\"{m}\"}} 1")))
        .expect("no attach mode in the metrics");
    eprintln!(
        "virtio-net: attached in mode {mode} ({}){}",
        wireguard_kind().as_str(),
        if mode == "xdp-driver" {
            ""
        } else {
            ": the kernel refused native XDP on virtio-net, the fallback is what this run tests"
        }
    );
    for host in SUBDOMAINS {
        let (code, body) = lab
            .curl("https", host, "/", VPS_V4, &[])
            .unwrap_or_else(|e| panic!("{host}: {e:#}\n{}", lab.forwarder_output()));
        assert_eq!(code, 200, "{host}: {body}");
        assert_eq!(body.trim(), format!("home {host} client 203.0.113.2"));
    }
    let download = lab
        .start_download(SUBDOMAINS[1], "0")
        .expect("starting the download");
    download
        .finish_intact(&lab)
        .expect("a download through the NIC");
    let out = lab.stop_forwarder().unwrap();
    let counters = Lab::counters(&out);
    let translated = if mode == "tc-only" {
        counters["tc_translated"]
    } else {
        counters["xdp_to_tunnel"]
    };
    assert!(translated > 100, "counters: {counters:?}");
}
