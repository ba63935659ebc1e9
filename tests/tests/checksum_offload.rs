//! Frames whose checksum was left to offload (`CHECKSUM_PARTIAL`): the client's veth keeps
//! its transmit checksum offload on, so every TCP and UDP segment reaches the VPS with only
//! the pseudo-header sum in its checksum field, as frames from a local stack do when the
//! VPS is itself a container. In each attach mode, connections must open, requests and
//! uploads arrive intact, and home's kernel must count no checksum error.
//!
//! Home's kernel checks checksums only behind wireguard-go (TUN): kernel WireGuard marks
//! what it decrypts `CHECKSUM_UNNECESSARY`, so on a kernel with the module (the VM runs)
//! a wrong checksum would pass unseen and this suite shows only that the repair ran
//! (`tc_csum_partial_fixed`); the bytes themselves are checked by `bpf_packets`.

use std::collections::BTreeMap;

use integration_tests::{
    Lab, LabOptions, SUBDOMAINS, UDP_ECHO_PORT, VPS_V4, VPS_V6, missing_prerequisites,
    subdomain_hosts,
};

const BIG: usize = 2 << 20;
/// An upload that spans many full-size segments.
const UPLOAD: usize = 1 << 20;

/// `Group.Name` → value from a namespace's `/proc/net/snmp`.
fn snmp(lab: &Lab, ns: &str) -> BTreeMap<String, u64> {
    let out = lab
        .exec(ns, &["cat", "/proc/net/snmp"])
        .expect("reading /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let mut values = BTreeMap::new();
    for pair in lines.chunks(2) {
        let [names, nums] = pair else { continue };
        let (group, names) = names.split_once(": ").unwrap_or_default();
        let nums = nums.split_once(": ").unwrap_or_default().1;
        for (n, v) in names.split_whitespace().zip(nums.split_whitespace()) {
            values.insert(format!("{group}.{n}"), v.parse().unwrap_or(0));
        }
    }
    values
}

/// Home's TCP and UDP checksum errors.
fn home_csum_errors(lab: &Lab) -> (u64, u64) {
    let v = snmp(lab, &lab.home);
    (v["Tcp.InCsumErrors"], v["Udp.InCsumErrors"])
}

/// The whole check in one attach mode (`--xdp-mode`): `counter` is the forwarder counter
/// that shows the mode translated the packets; `repaired`, whether the tc hand-off must
/// have repaired checksums XDP rewrote (`tc_csum_partial_fixed`).
fn forwards_with_offloaded_checksums(xdp_mode: &str, counter: &str, repaired: bool) {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let rules = format!(
        "[[rule]]\nproto = \"udp\"\nport = {UDP_ECHO_PORT}\n[[rule]]\nport = 80\n[[rule]]\nport = 443\n"
    );
    let mut lab = Lab::new(&LabOptions {
        extra_config: format!("{}{rules}", subdomain_hosts()),
        big_file_bytes: BIG,
        udp_echo: true,
        client_tx_offload: true,
        ..LabOptions::default()
    })
    .expect("building the lab");
    let offload = lab
        .exec(&lab.client, &["ethtool", "-k", "eth0"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        offload.contains("tx-checksum-ip-generic: on"),
        "the client's veth does not offload checksums:\n{offload}"
    );
    lab.start_forwarder(&["--xdp-mode", xdp_mode])
        .expect("starting the forwarder");
    let page = lab.metrics_page().unwrap_or_default();
    let want_mode = match xdp_mode {
        "driver" => "xdp-driver",
        "generic" => "xdp-generic",
        _ => "tc-only",
    };
    assert!(
        page.contains(&format!(
            "forwarder_xdp_attach_mode{{mode=\"{want_mode}\"}} 1"
        )),
        "not attached in {want_mode}:\n{page}"
    );
    let before = home_csum_errors(&lab);

    // New connections, IPv4 and IPv6, HTTP and HTTPS: a SYN with a bad checksum would
    // never be answered and curl would time out.
    for (addr, host) in [(VPS_V4, SUBDOMAINS[0]), (VPS_V6, SUBDOMAINS[1])] {
        for scheme in ["http", "https"] {
            let (code, body) = lab
                .curl(scheme, host, "/", addr, &["--max-time", "10"])
                .unwrap_or_else(|e| {
                    panic!(
                        "{xdp_mode}: {scheme}://{host} at {addr}: {e:#}\nhome's checksum errors \
                         (tcp, udp) {before:?} -> {:?}\nforwarder:\n{}",
                        home_csum_errors(&lab),
                        lab.forwarder_output()
                    )
                });
            assert_eq!(code, 200, "{xdp_mode}: {scheme}://{host}: {body}");
        }
    }
    // An upload: many full-size data segments from the client, each with a checksum left
    // to offload. nginx refuses the POST only after reading the body.
    let upload = lab.dir.join("upload");
    std::fs::write(&upload, vec![b'u'; UPLOAD]).expect("writing the upload");
    let data = format!("@{}", upload.display());
    let (code, _) = lab
        .curl(
            "https",
            SUBDOMAINS[2],
            "/",
            VPS_V4,
            &["--data-binary", &data, "--max-time", "20"],
        )
        .unwrap_or_else(|e| panic!("{xdp_mode}: upload: {e:#}"));
    assert!(code >= 200, "{xdp_mode}: upload answered {code}");
    // A download, byte for byte (the client sends its ACKs through the same path).
    let download = lab
        .start_download(SUBDOMAINS[0], "0")
        .expect("starting the download");
    download
        .finish_intact(&lab)
        .unwrap_or_else(|e| panic!("{xdp_mode}: download: {e:#}"));
    // UDP, both families.
    for (family, addr) in [("UDP4", VPS_V4.to_owned()), ("UDP6", format!("[{VPS_V6}]"))] {
        let target = format!("{family}:{addr}:{UDP_ECHO_PORT}");
        let script = format!("echo hello-{family} | socat -T 3 - {target}");
        let out = lab.exec(&lab.client, &["sh", "-c", &script]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("hello-{family}"),
            "{xdp_mode}: no UDP echo over {family}"
        );
    }

    let after = home_csum_errors(&lab);
    assert_eq!(
        after, before,
        "{xdp_mode}: home counted checksum errors (tcp, udp)"
    );
    let counters = Lab::counters(&lab.stop_forwarder().unwrap());
    assert!(
        counters[counter] > 100,
        "{xdp_mode}: {counter} did not translate the traffic: {counters:?}"
    );
    // Each of the client's segments XDP translated reached tc still `CHECKSUM_PARTIAL`,
    // its field still the pseudo-header sum: every one was repaired there (the upload's
    // alone are hundreds). tc's own translation needs no repair.
    let fixed = counters["tc_csum_partial_fixed"];
    eprintln!(
        "{xdp_mode}: {fixed} checksums repaired at the hand-off, {} packets translated by {counter}",
        counters[counter]
    );
    if repaired {
        assert!(
            fixed > 100 && fixed <= counters["xdp_to_tunnel"],
            "{xdp_mode}: {fixed} checksums repaired: {counters:?}"
        );
    } else {
        assert_eq!(fixed, 0, "{xdp_mode}: {counters:?}");
    }
}

#[test]
fn offloaded_checksums_through_driver_xdp() {
    forwards_with_offloaded_checksums("driver", "xdp_to_tunnel", true);
}

#[test]
fn offloaded_checksums_through_generic_xdp() {
    forwards_with_offloaded_checksums("generic", "xdp_to_tunnel", true);
}

#[test]
fn offloaded_checksums_through_tc_only() {
    forwards_with_offloaded_checksums("off", "tc_translated", false);
}
