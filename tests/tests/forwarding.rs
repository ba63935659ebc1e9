//! End-to-end forwarding through a real WireGuard tunnel, as a user would check it.

use std::time::Duration;

use integration_tests::{
    CLIENT_V6, Lab, LabOptions, SUBDOMAINS, UDP_ECHO_PORT, VPS_LOCAL_PORT, VPS_V4, VPS_V6,
    missing_prerequisites, wait_for,
};

/// Builds a lab or explains why this machine cannot (and fails: CI must be able to).
fn lab(opts: LabOptions) -> Lab {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    Lab::new(&opts).expect("building the lab")
}

#[test]
fn http_and_https_reach_home_with_client_ip() {
    let mut lab = lab(LabOptions::default());
    lab.start_forwarder(&[]).expect("starting the forwarder");
    let (_, tx_before) = lab.tunnel_transfer().unwrap();
    for host in SUBDOMAINS {
        for scheme in ["http", "https"] {
            let (code, body) = lab
                .curl(scheme, host, "/", VPS_V4, &[])
                .unwrap_or_else(|e| {
                    panic!(
                        "{scheme}://{host}: {e:#}\nforwarder log:\n{}",
                        lab.forwarder_output()
                    )
                });
            assert_eq!(code, 200, "{scheme}://{host}: {body}");
            assert_eq!(
                body.trim(),
                format!("home {host} client 203.0.113.2"),
                "{scheme}://{host}"
            );
        }
    }
    let (_, tx_after) = lab.tunnel_transfer().unwrap();
    assert!(
        tx_after > tx_before + 6 * 200,
        "requests did not cross the tunnel ({tx_before} -> {tx_after} bytes)"
    );
    let log = lab.access_log();
    assert_eq!(log.lines().count(), 6, "nginx access log:\n{log}");
    for line in log.lines() {
        assert!(
            line.starts_with("203.0.113.2 "),
            "nginx saw another client address: {line}"
        );
    }
    let out = lab.stop_forwarder().unwrap();
    let counters = Lab::counters(&out);
    assert!(counters["xdp_to_tunnel"] >= 6 * 3, "counters: {counters:?}");
    assert!(
        counters["tunnel_to_client"] >= 6 * 2,
        "counters: {counters:?}"
    );
}

#[test]
fn ipv6_end_to_end() {
    let mut lab = lab(LabOptions::default());
    lab.start_forwarder(&[]).expect("starting the forwarder");
    for scheme in ["http", "https"] {
        let (code, body) = lab
            .curl(scheme, "blog.example.test", "/", VPS_V6, &[])
            .expect("IPv6 request");
        assert_eq!(code, 200);
        assert_eq!(
            body.trim(),
            format!("home blog.example.test client {CLIENT_V6}")
        );
    }
    let log = lab.access_log();
    assert!(
        log.lines().all(|l| l.starts_with(&format!("{CLIENT_V6} "))),
        "nginx access log:\n{log}"
    );
}

#[test]
fn large_https_download_is_intact() {
    const SIZE: usize = 50 << 20;
    let mut lab = lab(LabOptions {
        big_file_bytes: SIZE,
        ..LabOptions::default()
    });
    lab.start_forwarder(&[]).expect("starting the forwarder");
    let out = lab.dir.join("download");
    let out_s = out.display().to_string();
    let (code, _) = lab
        .curl(
            "https",
            "media.example.test",
            "/big",
            VPS_V4,
            &["-o", &out_s, "--max-time", "120"],
        )
        .expect("50 MB download");
    assert_eq!(code, 200);
    let got = std::fs::read(&out).unwrap();
    let want = lab.read("www/big").unwrap();
    assert_eq!(got.len(), SIZE, "download truncated");
    assert!(got == want, "downloaded bytes differ from the file at home");
    let counters = Lab::counters(&lab.stop_forwarder().unwrap());
    // A 50 MB reply is tens of thousands of segments, all translated back by tc.
    assert!(counters["tunnel_to_client"] > 1000, "{counters:?}");
    assert_eq!(counters["tunnel_redirect_failed"], 0, "{counters:?}");
}

#[test]
fn clienthello_larger_than_one_segment() {
    let mut lab = lab(LabOptions::default());
    lab.start_forwarder(&[]).expect("starting the forwarder");
    // Browsers' post-quantum key shares make ClientHellos of ~1.9 KB; long ALPN lists give
    // the same size with the OpenSSL at hand. The MSS is clamped to 1380, so the
    // ClientHello needs two segments.
    let mut alpn: Vec<String> = (0..16)
        .map(|i| format!("x-padding-protocol-{i:02}-{}", "p".repeat(90)))
        .collect();
    alpn.push("http/1.1".into());
    let alpn = alpn.join(",");
    assert!(alpn.len() > 1800);
    let connect = format!("{VPS_V4}:443");
    let cert = lab.cert().display().to_string();
    let script = format!(
        "printf 'GET / HTTP/1.1\\r\\nHost: app.example.test\\r\\nConnection: close\\r\\n\\r\\n' | \
         timeout 20 openssl s_client -connect {connect} -servername app.example.test -alpn {alpn} \
         -CAfile {cert} -verify_return_error -quiet 2>&1"
    );
    let out = lab.exec(&lab.client, &["sh", "-c", &script]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("home app.example.test client 203.0.113.2"),
        "large ClientHello failed:\n{text}\nforwarder:\n{}",
        lab.forwarder_output()
    );
}

#[test]
fn non_forwarded_port_and_icmp_stay_local() {
    let mut lab = lab(LabOptions::default());
    lab.start_forwarder(&[]).expect("starting the forwarder");
    let target = format!("TCP:{VPS_V4}:{VPS_LOCAL_PORT}");
    let out = lab
        .exec(&lab.client, &["socat", "-T", "5", "-", &target])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "vps-local-service",
        "{out:?}"
    );
    let ping = lab
        .exec(&lab.client, &["ping", "-c", "1", "-W", "2", VPS_V4])
        .unwrap();
    assert!(
        ping.status.success(),
        "ping to the VPS failed with the forwarder attached"
    );
    let counters = Lab::counters(&lab.stop_forwarder().unwrap());
    assert!(counters["xdp_pass_no_rule"] > 0, "{counters:?}");
}

#[test]
fn udp_rule_forwards_both_families() {
    let extra = format!(
        "[[rule]]\nproto = \"udp\"\nport = {UDP_ECHO_PORT}\n[[rule]]\nport = 80\n[[rule]]\nport = 443\n"
    );
    let mut lab = lab(LabOptions {
        udp_echo: true,
        extra_config: extra,
        ..LabOptions::default()
    });
    lab.start_forwarder(&[]).expect("starting the forwarder");
    for (family, addr) in [("UDP4", VPS_V4.to_owned()), ("UDP6", format!("[{VPS_V6}]"))] {
        let target = format!("{family}:{addr}:{UDP_ECHO_PORT}");
        let script = format!("echo hello-{family} | socat -T 3 - {target}");
        let out = lab.exec(&lab.client, &["sh", "-c", &script]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("hello-{family}"),
            "no UDP echo over {family}: {out:?}\nforwarder:\n{}",
            lab.forwarder_output()
        );
    }
}

#[test]
fn the_data_path_outlives_the_daemon_and_stop_detach_removes_all_of_it() {
    let mut lab = lab(LabOptions::default());
    lab.start_forwarder(&[]).expect("starting the forwarder");
    // The daemon logs the kernel ids of its programs; bpftool tells their maps and links.
    // Three attached programs and the two name readers they tail-call.
    let loaded: Vec<(bool, String)> = lab
        .forwarder_output()
        .lines()
        .filter(|l| l.contains("program loaded"))
        .filter_map(|l| {
            let id = l.split("id=").nth(1)?.trim().to_owned();
            Some((!l.contains("_reader"), id))
        })
        .collect();
    let ids: Vec<String> = loaded.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        ids.len(),
        5,
        "program ids not logged:\n{}",
        lab.forwarder_output()
    );
    let bpftool = |lab: &Lab, args: &[&str]| {
        lab.exec(&lab.vps, &[&["bpftool", "-j"][..], args].concat())
            .unwrap()
    };
    let mut maps = Vec::new();
    for id in &ids {
        let out = bpftool(&lab, &["prog", "show", "id", id]);
        assert!(
            out.status.success(),
            "program {id} not loaded while running"
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let list = text
            .split("\"map_ids\":[")
            .nth(1)
            .and_then(|s| s.split(']').next())
            .unwrap_or("")
            .to_owned();
        maps.extend(list.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
    }
    assert!(!maps.is_empty(), "no maps found for programs {ids:?}");
    // Attached: by a link (XDP; tc from 6.6 on, TCX) or a clsact filter (tc before 6.6);
    // `bpftool net show` lists both kinds, `link show` the links.
    let attachments = |lab: &Lab| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&bpftool(lab, &["link", "show"]).stdout),
            String::from_utf8_lossy(&bpftool(lab, &["net", "show"]).stdout)
        )
    };
    // Links name it `prog_id`, `net show` `id`; either ends its object or is followed by more.
    let attached = |text: &str, id: &str| {
        ["prog_id", "id"].iter().any(|k| {
            [',', '}']
                .iter()
                .any(|e| text.contains(&format!("\"{k}\":{id}{e}")))
        })
    };
    let links = attachments(&lab);
    for (_, id) in loaded.iter().filter(|(attached, _)| *attached) {
        assert!(
            attached(&links, id),
            "program {id} is not attached: {links}"
        );
    }
    let xdp = lab.exec(&lab.vps, &["ip", "link", "show", "eth0"]).unwrap();
    assert!(
        String::from_utf8_lossy(&xdp.stdout).contains("xdp"),
        "no XDP program on eth0"
    );

    lab.stop_forwarder().unwrap();
    // Pinned: the programs keep forwarding without the daemon.
    for id in &ids {
        assert!(
            bpftool(&lab, &["prog", "show", "id", id]).status.success(),
            "program {id} went away with the daemon"
        );
    }
    let (code, body) = lab
        .curl("https", SUBDOMAINS[0], "/", VPS_V4, &[])
        .expect("forwarding without the daemon");
    assert_eq!(code, 200, "{body}");

    let out = lab.forwarder_cli(&["stop", "--detach"]).unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("data path removed"),
        "{out:?}"
    );
    // The kernel frees programs and maps once their last reference is gone (after an RCU
    // grace period).
    let left = || -> Vec<String> {
        let progs = ids
            .iter()
            .filter(|id| bpftool(&lab, &["prog", "show", "id", id]).status.success())
            .map(|id| format!("prog {id}"));
        let maps = maps
            .iter()
            .filter(|id| bpftool(&lab, &["map", "show", "id", id]).status.success())
            .map(|id| format!("map {id}"));
        progs.chain(maps).collect()
    };
    // Generous: under load (other tests' floods) the grace period can take seconds.
    let gone = wait_for("programs and maps freed", Duration::from_secs(30), || {
        left().is_empty().then_some(())
    });
    assert!(gone.is_ok(), "{gone:?}: still there: {:?}", left());
    let links = attachments(&lab);
    for id in &ids {
        assert!(
            !attached(&links, id),
            "program {id} is still attached: {links}"
        );
    }
    let xdp = lab.exec(&lab.vps, &["ip", "link", "show", "eth0"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&xdp.stdout).contains("xdp"),
        "XDP still attached to eth0 after exit"
    );
}
