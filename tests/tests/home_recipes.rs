//! The home-side recipes `forwarder home-config` prints, applied verbatim in a lab whose
//! home has a default route of its own (toward a router that never answers, so a reply
//! that takes it is lost): each shape keeps the client's address, the recipes can run
//! twice and come off cleanly, and the recipes that fail on real homes fail here too.

use integration_tests::{
    CLIENT_V4, CLIENT_V6, HOME_WG_V4, HOME_WG_V6, HomeProxy, Lab, LabOptions, SUBDOMAINS, VPS_V4,
    VPS_V6, lab_with_forwarder, rule_after_main_recipe,
};

fn lab(opts: LabOptions) -> Lab {
    lab_with_forwarder(&opts)
}

/// Every subdomain over HTTP and HTTPS to `addr` answers, and home's web server saw the
/// client's own address.
fn all_reach_home_with_client_ip(lab: &Lab, addr: &str, client: &str) {
    for host in SUBDOMAINS {
        for scheme in ["http", "https"] {
            let (code, body) = lab
                .curl(scheme, host, "/", addr, &["--max-time", "10"])
                .unwrap_or_else(|e| panic!("{scheme}://{host} via {addr}: {e:#}"));
            assert_eq!(code, 200, "{scheme}://{host}: {body}");
            assert_eq!(
                body.trim(),
                format!("home {host} client {client}"),
                "{scheme}://{host} via {addr}"
            );
        }
    }
}

/// `ip rule` lines of home for `family` ("-4" or "-6") that use the recipe's table.
fn recipe_rules(lab: &Lab, family: &str) -> Vec<String> {
    rules_in(lab, &lab.home, family)
}

fn rules_in(lab: &Lab, ns: &str, family: &str) -> Vec<String> {
    let out = lab
        .exec(ns, &["ip", family, "rule", "show"])
        .expect("ip rule");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("lookup 51820"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn proxy_on_the_tunnel_machine_keeps_the_client_address_both_families() {
    let lab = lab(LabOptions::default());
    all_reach_home_with_client_ip(&lab, VPS_V4, CLIENT_V4);
    all_reach_home_with_client_ip(&lab, VPS_V6, CLIENT_V6);
    // The rules sit before the main table, whose default route points at home's router.
    for (fam, from) in [("-4", HOME_WG_V4), ("-6", HOME_WG_V6)] {
        let rules = recipe_rules(&lab, fam);
        assert_eq!(
            rules,
            [format!("32000:\tfrom {from} lookup 51820")],
            "ip {fam} rule"
        );
    }
}

#[test]
fn proxy_on_another_lan_machine_keeps_the_client_address_both_families() {
    let lab = lab(LabOptions {
        home_proxy: HomeProxy::Lan,
        ..LabOptions::default()
    });
    all_reach_home_with_client_ip(&lab, VPS_V4, CLIENT_V4);
    all_reach_home_with_client_ip(&lab, VPS_V6, CLIENT_V6);
    // Without the proxy machine's part, its replies go to the home router and are lost.
    let script = lab
        .home_config(HomeProxy::Lan)
        .expect("home-config")
        .proxy_script
        .expect("a script for the proxy machine");
    lab.run_proxy_script(&script, &["down"])
        .expect("script down");
    hangs(&lab);
    lab.run_proxy_script(&script, &[]).expect("script up again");
    all_reach_home_with_client_ip(&lab, VPS_V4, CLIENT_V4);
}

#[test]
fn proxy_in_docker_keeps_the_client_address() {
    let lab = lab(LabOptions {
        home_proxy: HomeProxy::Docker,
        ..LabOptions::default()
    });
    all_reach_home_with_client_ip(&lab, VPS_V4, CLIENT_V4);
    let log = lab.access_log();
    assert!(
        log.lines().count() >= 6 && log.lines().all(|l| l.starts_with("203.0.113.2 ")),
        "the container's nginx saw another address:\n{log}"
    );
}

/// What a user who applies the wrong recipe, or last release's, sees: every forwarded
/// connection hangs (the SYN-ACK leaves by home's default route and is lost).
fn hangs(lab: &Lab) {
    let err = lab
        .curl("https", SUBDOMAINS[0], "/", VPS_V4, &["--max-time", "3"])
        .expect_err("a reply came back although the recipe cannot route it");
    assert!(
        format!("{err:#}").contains("curl: (28)"),
        "not a timeout: {err:#}"
    );
}

#[test]
fn rules_after_the_main_table_lose_every_reply() {
    // The recipe of earlier releases: the right rule, at a priority (51820) after
    // `from all lookup main` (32766).
    let lab = lab(LabOptions {
        home_recipe: Some(rule_after_main_recipe()),
        ..LabOptions::default()
    });
    hangs(&lab);
}

#[test]
fn the_same_box_recipe_does_not_see_docker_s_replies() {
    let lab = lab(LabOptions {
        home_proxy: HomeProxy::Docker,
        recipe_for: Some(HomeProxy::OnTunnelMachine),
        ..LabOptions::default()
    });
    hangs(&lab);
}

#[test]
fn recipes_run_twice_leave_one_copy_and_pre_down_removes_everything() {
    for proxy in [
        HomeProxy::OnTunnelMachine,
        HomeProxy::Docker,
        HomeProxy::Lan,
    ] {
        let lab = lab(LabOptions {
            home_proxy: proxy,
            ..LabOptions::default()
        });
        let recipe = lab.home_config(proxy).expect("home-config");
        let (post_up, pre_down) = (recipe.post_up, recipe.pre_down);
        let rules_before = (recipe_rules(&lab, "-4"), recipe_rules(&lab, "-6"));
        // The lab applied PostUp once; wg-quick restarted without PreDown runs it again.
        lab.run_at_home(&post_up).expect("PostUp again");
        assert_eq!(
            (recipe_rules(&lab, "-4"), recipe_rules(&lab, "-6")),
            rules_before,
            "{proxy:?}: PostUp run twice"
        );
        assert_eq!(rules_before.0.len(), 1, "{proxy:?}: {rules_before:?}");
        all_reach_home_with_client_ip(&lab, VPS_V4, CLIENT_V4);
        lab.run_at_home(&pre_down).expect("PreDown");
        assert!(
            recipe_rules(&lab, "-4").is_empty() && recipe_rules(&lab, "-6").is_empty(),
            "{proxy:?}: rules left after PreDown"
        );
        let tables = lab
            .exec(&lab.home, &["nft", "list", "tables"])
            .expect("nft");
        assert!(
            !String::from_utf8_lossy(&tables.stdout).contains("forwarder_home"),
            "{proxy:?}: nftables table left after PreDown"
        );
        // The proxy machine's script: twice leaves one copy, `down` removes it all.
        if let Some(script) = recipe.proxy_script {
            let before = rules_in(&lab, &lab.proxy, "-4");
            assert_eq!(before.len(), 1, "proxy machine: {before:?}");
            lab.run_proxy_script(&script, &[]).expect("script again");
            assert_eq!(rules_in(&lab, &lab.proxy, "-4"), before);
            lab.run_proxy_script(&script, &["down"])
                .expect("script down");
            assert!(rules_in(&lab, &lab.proxy, "-4").is_empty());
            assert!(rules_in(&lab, &lab.proxy, "-6").is_empty());
            let tables = lab
                .exec(&lab.proxy, &["nft", "list", "tables"])
                .expect("nft");
            assert!(
                !String::from_utf8_lossy(&tables.stdout).contains("forwarder_home"),
                "proxy machine: nftables table left after `down`"
            );
        }
    }
}

#[test]
fn quic_reaches_every_shape_of_home_with_the_client_address() {
    let peer = std::path::Path::new(env!("CARGO_BIN_EXE_quic-peer"));
    for proxy in [
        HomeProxy::OnTunnelMachine,
        HomeProxy::Docker,
        HomeProxy::Lan,
    ] {
        let mut lab = lab(LabOptions {
            home_proxy: proxy,
            extra_config: "http3 = true\n".into(),
            ..LabOptions::default()
        });
        let log = lab
            .start_quic_server(peer)
            .expect("starting the QUIC server");
        let out = lab
            .quic_client(peer, SUBDOMAINS[0], 20_000, 1, false)
            .expect("running the QUIC client");
        assert!(
            out.status.success(),
            "{proxy:?}: QUIC client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen = integration_tests::wait_for(
            "the QUIC server's report",
            std::time::Duration::from_secs(10),
            || {
                std::fs::read_to_string(&log)
                    .ok()?
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find_map(|l| l["peer"].as_str().map(str::to_owned))
            },
        )
        .unwrap_or_else(|e| panic!("{proxy:?}: {e:#}"));
        assert!(
            seen.starts_with(&format!("{CLIENT_V4}:")),
            "{proxy:?}: the QUIC server saw {seen}"
        );
    }
}
