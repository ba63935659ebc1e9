//! `forwarder doctor` on the VPS of a lab whose home has a default route of its own: it
//! passes on every good home, and on each broken one names the fault (and exits 1).

use integration_tests::{
    HOME_WG_V4, HomeProxy, Lab, LabOptions, lab_with_forwarder, rule_after_main_recipe,
};
use serde_json::Value;

fn lab(opts: LabOptions) -> Lab {
    lab_with_forwarder(&opts)
}

/// The report and whether doctor exited 0.
fn doctor(lab: &Lab) -> (Value, bool) {
    let config = lab.config_path().display().to_string();
    let out = lab
        .forwarder_cli(&["doctor", "--config", &config, "--json", "--wait", "2"])
        .expect("running doctor");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor's JSON: {e}: {out:?}"));
    (report, out.status.success())
}

/// The status of each check, by name.
fn statuses(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("?").to_owned(),
                c["status"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

/// The check named `name` failed, with a fix that mentions `fix_says`; doctor exited 1.
fn names_the_fault(lab: &Lab, name: &str, fix_says: &str) {
    let (report, ok) = doctor(lab);
    let check = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?}: {report:#}"));
    assert_eq!(check["status"], "fail", "{name}: {report:#}");
    let fix = check["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains(fix_says),
        "{name}: the fix {fix:?} does not say {fix_says:?}"
    );
    assert!(!ok, "doctor exited 0 with a failed check");
    assert_eq!(report["ok"], false);
}

#[test]
fn doctor_passes_on_every_good_home() {
    for proxy in [
        HomeProxy::OnTunnelMachine,
        HomeProxy::Docker,
        HomeProxy::Lan,
    ] {
        let lab = lab(LabOptions {
            home_proxy: proxy,
            ..LabOptions::default()
        });
        let (report, ok) = doctor(&lab);
        let bad: Vec<_> = statuses(&report)
            .into_iter()
            .filter(|(_, s)| s == "fail")
            .collect();
        assert!(ok && bad.is_empty(), "{proxy:?}: {bad:?}\n{report:#}");
        let names: Vec<String> = statuses(&report).into_iter().map(|(n, _)| n).collect();
        for want in [
            "WireGuard handshake",
            "daemon and data path",
            "metrics endpoint",
            "MTU",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{proxy:?}: no {want:?} in {names:?}"
            );
        }
        assert!(
            names
                .iter()
                .any(|n| n == &format!("return path {HOME_WG_V4}:443")),
            "{proxy:?}: {names:?}"
        );
    }
}

#[test]
fn doctor_names_a_missing_recipe() {
    let lab = lab(LabOptions {
        home_recipe: Some(Vec::new()),
        ..LabOptions::default()
    });
    names_the_fault(
        &lab,
        &format!("return path {HOME_WG_V4}:443"),
        "home-config",
    );
}

#[test]
fn doctor_names_the_rule_after_the_main_table() {
    let lab = lab(LabOptions {
        home_recipe: Some(rule_after_main_recipe()),
        ..LabOptions::default()
    });
    names_the_fault(&lab, &format!("return path {HOME_WG_V4}:443"), "32766");
}

#[test]
fn doctor_names_docker_with_the_same_box_recipe() {
    let lab = lab(LabOptions {
        home_proxy: HomeProxy::Docker,
        recipe_for: Some(HomeProxy::OnTunnelMachine),
        ..LabOptions::default()
    });
    names_the_fault(
        &lab,
        &format!("return path {HOME_WG_V4}:443"),
        "dnat for Docker",
    );
}

#[test]
fn doctor_names_allowed_ips_too_narrow() {
    let lab = lab(LabOptions::default());
    // Home's peer for the VPS accepts only the VPS's own tunnel addresses, as many
    // WireGuard guides write it.
    let peer = lab
        .exec(&lab.home, &["wg", "show", &lab.wg_home, "peers"])
        .expect("wg show");
    let peer = String::from_utf8_lossy(&peer.stdout).trim().to_owned();
    let out = lab
        .exec(
            &lab.home,
            &[
                "wg",
                "set",
                &lab.wg_home,
                "peer",
                &peer,
                "allowed-ips",
                "10.8.0.1/32,fd00::1/128",
            ],
        )
        .expect("wg set");
    assert!(out.status.success(), "{out:?}");
    names_the_fault(&lab, &format!("return path {HOME_WG_V4}:443"), "AllowedIPs");
}

#[test]
fn doctor_names_a_public_mtu_too_small_for_the_tunnel() {
    let lab = lab(LabOptions::default());
    let out = lab
        .exec(&lab.vps, &["ip", "link", "set", "eth0", "mtu", "1400"])
        .expect("ip link");
    assert!(out.status.success(), "{out:?}");
    names_the_fault(&lab, "MTU", "MTU = 1320");
}
