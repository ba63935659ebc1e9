use std::{convert::Infallible, net::IpAddr, path::Path};

use crate::config::{
    file::FileConfig,
    hosts::HostPolicy,
    limits::DEFAULT_SYN_FLOOD_THRESHOLD,
    resolve::Config,
    rule::{Fallback, UnknownPolicy},
};

fn addrs(_: &str) -> Result<Vec<IpAddr>, Infallible> {
    Ok(vec![
        "203.0.113.1".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    ])
}

#[test]
fn simple_case_forwards_80_and_443_per_family() {
    let c = Config::resolve(
        FileConfig::default(),
        Some("eth0".into()),
        Some("wg0".into()),
        vec!["10.8.0.2".parse().unwrap()],
        addrs,
    )
    .unwrap();
    let shown: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "tcp 203.0.113.1:80 -> 10.8.0.2:80",
            "tcp 203.0.113.1:443 -> 10.8.0.2:443"
        ]
    );
}

#[test]
fn file_rules_with_udp_and_backend_port() {
    let text = r#"
public_iface = "eth0"
tunnel_iface = "wg0"
backends = ["10.8.0.2", "fd00::2"]
[[rule]]
proto = "udp"
port = 5353
backend_port = 53
[[rule]]
port = 443
"#;
    let f = FileConfig::parse(Path::new("f"), text).unwrap();
    let c = Config::resolve(f, None, None, vec![], addrs).unwrap();
    let shown: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "tcp 203.0.113.1:443 -> 10.8.0.2:443",
            "udp 203.0.113.1:5353 -> 10.8.0.2:53",
            "tcp [2001:db8::1]:443 -> [fd00::2]:443",
            "udp [2001:db8::1]:5353 -> [fd00::2]:53",
        ]
    );
}

#[test]
fn http3_adds_udp_443_to_the_default_rules_and_quic_settings_are_checked() {
    let c = resolve_text("backends = [\"10.8.0.2\"]\nhttp3 = true\n").unwrap();
    let shown: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "tcp 203.0.113.1:80 -> 10.8.0.2:80",
            "tcp 203.0.113.1:443 -> 10.8.0.2:443",
            "udp 203.0.113.1:443 -> 10.8.0.2:443",
        ]
    );
    assert_eq!((c.quic.rate(), c.quic.burst()), (2000, 200));
    let c = resolve_text("backends = [\"10.8.0.2\"]\n[quic]\ninitials_per_second = 0\n").unwrap();
    assert_eq!((c.quic.rate(), c.quic.burst()), (0, 0));
    for (text, want) in [
        ("[quic]\nburst = 0\n", "quic.burst = 0"),
        (
            "[quic]\ninitials_per_second = 0\nburst = 5\n",
            "classification off",
        ),
        ("[quic]\nrate = 5\n", "unknown field"),
    ] {
        let e = resolve_text(&format!("backends = [\"10.8.0.2\"]\n{text}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

/// Reading and resolving, as the daemon does at startup: the errors of both.
fn resolve_text(text: &str) -> Result<Config, Box<dyn std::error::Error>> {
    let f = FileConfig::parse(Path::new("f.toml"), text)?;
    Ok(Config::resolve(
        f,
        Some("eth0".into()),
        Some("wg0".into()),
        vec!["10.8.0.2".parse().unwrap()],
        addrs,
    )?)
}

#[test]
fn fallbacks_and_health_settings_are_checked() {
    let c = resolve_text(
        "[[rule]]\nport = 80\nfallback = \"local\"\n[[rule]]\nport = 443\n\
         [health]\ninterval_ms = 500\ntimeout_ms = 300\n",
    )
    .unwrap();
    let f: Vec<_> = c.rules.iter().map(|r| (r.port, r.fallback)).collect();
    assert!(f.contains(&(80, Some(Fallback::Local))), "{f:?}");
    assert!(f.contains(&(443, None)), "{f:?}");
    assert_eq!(c.health.interval_ms, 500);
    assert_eq!(c.health.down_after, 3, "unset fields keep their defaults");
    let e = resolve_text("[[rule]]\nproto = \"udp\"\nport = 53\nfallback = \"local\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("fallback needs a TCP rule"), "{e}");
    let c = resolve_text("[[rule]]\nport = 80\nfallback = \"10.8.0.3\"\n").unwrap();
    assert_eq!(
        c.rules[0].fallback,
        Some(Fallback::Backend("10.8.0.3:80".parse().unwrap())),
        "the port defaults to the backend port"
    );
    let e = resolve_text("[[rule]]\nport = 80\nfallback = \"10.8.0.2:80\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("is the backend itself"), "{e}");
    let e = resolve_text("[[rule]]\nport = 80\nfallback = \"elsewhere\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("elsewhere") || e.contains("unknown variant"),
        "{e}"
    );
    let e = resolve_text("[health]\ninterval_ms = 1000\ntimeout_ms = 1000\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("timeout_ms"), "{e}");
    let c = resolve_text("[limits]\nnew_connections_per_second = 20\n").unwrap();
    assert_eq!(c.limits.kernel(), (20, 20), "burst defaults to the rate");
    let c = resolve_text("[limits]\nnew_connections_per_second = 20\nburst = 50\n").unwrap();
    assert_eq!(c.limits.kernel(), (20, 50));
    assert_eq!(
        resolve_text("").unwrap().limits.kernel(),
        (0, 0),
        "off by default"
    );
    let e = resolve_text("[limits]\nburst = 5\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("new_connections_per_second"), "{e}");
    let e = resolve_text("[limits]\nnew_connections_per_second = 70000\n")
        .unwrap_err()
        .to_string();
    // Named by position: line 2, where the value is.
    assert!(e.contains("f.toml:2:") && e.contains("70000"), "{e}");
    let e = resolve_text("[health]\nintervall_ms = 1000\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("intervall_ms"), "{e}");
}

#[test]
fn hosts_keep_config_order_and_are_normalised() {
    let c = resolve_text(
        "[[host]]\nname = \"App.Example.com.\"\n[[host]]\nname = \"*.example.com\"\n[[host]]\nname = \"example.com\"\n",
    )
    .unwrap();
    let labels: Vec<&str> = c.hosts.iter().map(|h| h.label.as_str()).collect();
    assert_eq!(labels, ["app.example.com", "*.example.com", "example.com"]);
    assert!(c.hosts[1].wildcard);
    assert_eq!(c.hosts[1].name, "example.com");
    assert_eq!(
        c.hosts[1].key().hash,
        forwarder_common::host::name_hash(b"example.com")
    );
    assert_ne!(c.hosts[1].key(), c.hosts[2].key());
    assert!(resolve_text("").unwrap().hosts.is_empty());
}

#[test]
fn duplicate_hosts_are_rejected_naming_the_host() {
    let e = resolve_text(
        "[[host]]\nname = \"app.example.com\"\n[[host]]\nname = \"blog.example.com\"\n[[host]]\nname = \"APP.example.com\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("\"app.example.com\""), "{e}");
    assert!(e.contains("twice"), "{e}");
    assert!(e.contains("[[host]] 3") && e.contains("[[host]] 1"), "{e}");
    let e = resolve_text("[[host]]\nname = \"*.a.b\"\n[[host]]\nname = \"*.a.b\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"*.a.b\"") && e.contains("twice"), "{e}");
}

#[test]
fn bad_hosts_are_rejected_with_reason() {
    for (text, want) in [
        ("[[host]]\nname = \"a..b\"\n", "empty label"),
        ("[[host]]\nname = \"a.*.b\"\n", "wildcard"),
        ("[[host]]\nname = \"other\"\n", "reserved"),
        ("[[host]]\nname = \"bad name\"\n", "invalid character"),
    ] {
        let e = resolve_text(text).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("[[host]] 1"), "{text}: {e}");
    }
    let e = FileConfig::parse(Path::new("f.toml"), "[[host]]\nname = \"a.b\"\nwat = 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("f.toml:3:") && e.contains("unknown field"),
        "{e}"
    );
    let e = FileConfig::parse(Path::new("f.toml"), "[[host]]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("name"), "{e}");
}

#[test]
fn host_policies_follow_their_hosts() {
    let c = resolve_text(
        "[[host]]\nname = \"a.example.com\"\npolicy = \"drop\"\n\
         [[host]]\nname = \"b.example.com\"\n\
         [[host]]\nname = \"*.c.example.com\"\npolicy = \"Forward\"\n",
    )
    .unwrap();
    assert_eq!(
        c.host_policies,
        [HostPolicy::Drop, HostPolicy::Forward, HostPolicy::Forward]
    );
    assert_eq!(c.hosts.len(), c.host_policies.len());
    assert!(resolve_text("").unwrap().host_policies.is_empty());
    let c = resolve_text("[[host]]\nname = \"a.example.com\"\npolicy = \"local\"\n").unwrap();
    assert_eq!(c.host_policies, [HostPolicy::Local]);
    assert_eq!(c.kernel_flags(), forwarder_common::CFG_F_LOCAL_POLICY);
    assert_eq!(resolve_text("").unwrap().kernel_flags(), 0);
}

#[test]
fn the_syn_flood_guard_is_on_by_default_and_can_be_turned_off() {
    let c = resolve_text("").unwrap();
    assert_eq!(c.limits.syn_flood_threshold(), DEFAULT_SYN_FLOOD_THRESHOLD);
    let c = resolve_text("[limits]\nsyn_flood_threshold = 0\n").unwrap();
    assert_eq!(c.limits.syn_flood_threshold(), 0);
    let c = resolve_text("[limits]\nsyn_flood_threshold = 50000\n").unwrap();
    assert_eq!(c.limits.syn_flood_threshold(), 50000);
}

#[test]
fn unknown_host_policy_names_the_field_and_the_choices() {
    let e = FileConfig::parse(
        Path::new("f.toml"),
        "[[host]]\nname = \"a.b\"\npolicy = \"bounce\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("f.toml:3:"), "{e}");
    assert!(
        e.contains("policy") && e.contains("\"bounce\"") && e.contains("forward, drop or local"),
        "{e}"
    );
    let e = FileConfig::parse(
        Path::new("f.toml"),
        "[[host]]\nname = \"a.b\"\npolicy = 1\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("f.toml:3:"), "{e}");
}

#[test]
fn contradictions_are_rejected_with_reason() {
    let none = Config::resolve(
        FileConfig::default(),
        Some("e".into()),
        Some("w".into()),
        vec![],
        addrs,
    );
    assert!(none.unwrap_err().to_string().contains("--backend"));
    let two = Config::resolve(
        FileConfig::default(),
        Some("e".into()),
        Some("w".into()),
        vec!["10.8.0.2".parse().unwrap(), "10.8.0.3".parse().unwrap()],
        addrs,
    );
    assert!(two.unwrap_err().to_string().contains("same address family"));
    let text = "backends=[\"10.8.0.2\"]\n[[rule]]\nport=443\n[[rule]]\nport=443\n";
    let f = FileConfig::parse(Path::new("f"), text).unwrap();
    let dup = Config::resolve(f, Some("e".into()), Some("w".into()), vec![], addrs);
    assert!(dup.unwrap_err().to_string().contains("forwarded twice"));
    let text = "[[rule]]\nport=443\nbackend=\"fd00::2\"\npublic_addr=\"203.0.113.1\"\n";
    let f = FileConfig::parse(Path::new("f"), text).unwrap();
    let mixed = Config::resolve(f, Some("e".into()), Some("w".into()), vec![], addrs);
    assert!(
        mixed
            .unwrap_err()
            .to_string()
            .contains("different address families")
    );
}

#[test]
fn unknown_policy_is_per_rule_forward_by_default_and_shown_when_drop() {
    let c = resolve_text(
        "[[host]]\nname = \"a.example.com\"\npolicy = \"drop\"\n\
         [[rule]]\nport = 443\nunknown_policy = \"drop\"\n\
         [[rule]]\nport = 80\n",
    )
    .unwrap();
    let shown: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "tcp 203.0.113.1:80 -> 10.8.0.2:80",
            "tcp 203.0.113.1:443 -> 10.8.0.2:443 (unknown_policy = drop)",
        ]
    );
    assert_eq!(c.rules[0].unknown_policy, UnknownPolicy::Forward);
    assert_eq!(c.rules[1].unknown_policy, UnknownPolicy::Drop);
    // A drop host to protect: nothing to point out.
    assert_eq!(c.unknown_policy_warnings(), Vec::<String>::new());
    let c = resolve_text("[[rule]]\nport = 443\nunknown_policy = \"Forward\"\n").unwrap();
    assert_eq!(c.rules[0].unknown_policy, UnknownPolicy::Forward);
}

#[test]
fn unknown_policy_names_the_field_and_the_choices() {
    let e = resolve_text("[[rule]]\nport = 443\nunknown_policy = \"reset\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f.toml:3:"), "{e}");
    assert!(
        e.contains("unknown_policy \"reset\"")
            && e.contains("\"forward\"")
            && e.contains("\"drop\""),
        "{e}"
    );
}

#[test]
fn check_points_out_a_drop_that_protects_nothing_or_cuts_everything() {
    let c = resolve_text("[[rule]]\nport = 443\nunknown_policy = \"drop\"\n").unwrap();
    let w = c.unknown_policy_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("tcp port 443: ") && w[0].contains("no [[host]] has policy drop or local"),
        "{w:?}"
    );
    let c = resolve_text(
        "[[host]]\nname = \"a.example.com\"\npolicy = \"local\"\n\
         [quic]\ninitials_per_second = 0\n\
         [[rule]]\nproto = \"udp\"\nport = 443\nunknown_policy = \"drop\"\n\
         [[rule]]\nport = 443\nunknown_policy = \"drop\"\n",
    )
    .unwrap();
    let w = c.unknown_policy_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("udp port 443: ") && w[0].contains("QUIC classification is off"),
        "{w:?}"
    );
}
