use std::{net::IpAddr, path::Path};

use crate::config::{
    edit::{ConfigDoc, EditError},
    file::ConfigError,
    hosts::{HostConfig, HostPolicy},
    limits::Limits,
    rule::{Proto, RuleConfig, UnknownPolicy},
};

mod model;
mod write;

pub(super) const FILE: &str = r#"# forwarder configuration
# See docs/config.md.

public_iface = "eth0"   # the VPS's uplink
tunnel_iface = "wg0"
backends = ["10.8.0.2", "fd00::2"]

# Web traffic.
[[rule]]
port = 443  # HTTPS
fallback = "local"

# Game server, UDP.
[[rule]]
proto = "udp"
port = 27015
# backend_port = 27016

# Names counted separately.

# The main app.
[[host]]
name = "app.example.com"

[[host]]
name = "blog.example.com"
policy = "drop"  # retired
# owner: blog team

[health]
interval_ms = 1000

# vim: ft=toml
"#;

pub(super) fn doc() -> ConfigDoc {
    ConfigDoc::parse(Path::new("/etc/forwarder.toml"), FILE).unwrap()
}

/// `FILE` with its one occurrence of `from` replaced: the expected text spells out
/// the change, and everything else must come back byte for byte.
pub(super) fn edited(from: &str, to: &str) -> String {
    assert_eq!(FILE.matches(from).count(), 1, "{from:?}");
    FILE.replacen(from, to, 1)
}

pub(super) fn rule(proto: Proto, port: u16) -> RuleConfig {
    RuleConfig::port(proto, port)
}

pub(super) fn host(name: &str, policy: HostPolicy) -> HostConfig {
    HostConfig {
        name: name.into(),
        policy,
    }
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn unedited_document_is_the_file() {
    let d = doc();
    assert_eq!(d.text(), FILE);
    assert!(!d.changed());
    let f = d.file_config().unwrap();
    assert_eq!(f.rules.len(), 2);
    assert_eq!(f.hosts[1], host("blog.example.com", HostPolicy::Drop));
}

#[test]
fn added_rule_goes_at_the_end_with_only_what_it_sets() {
    let mut d = doc();
    let r = RuleConfig {
        backend_port: Some(443),
        public_addr: Some(ip("203.0.113.1")),
        ..rule(Proto::Tcp, 8443)
    };
    d.add_rule(&r).unwrap();
    assert_eq!(
        d.text(),
        edited(
            "\n# vim: ft=toml\n",
            "\n[[rule]]\nport = 8443\nbackend_port = 443\npublic_addr = \"203.0.113.1\"\n\n# vim: ft=toml\n"
        )
    );
    assert!(d.changed());
    assert_eq!(d.file_config().unwrap().rules[2], r);

    let mut d = doc();
    let r = RuleConfig {
        backend: Some(ip("fd00::3")),
        ..rule(Proto::Udp, 53)
    };
    d.add_rule(&r).unwrap();
    assert!(
        d.text().ends_with(
            "\n[[rule]]\nproto = \"udp\"\nport = 53\nbackend = \"fd00::3\"\n\n# vim: ft=toml\n"
        ),
        "{}",
        d.text()
    );
    assert_eq!(d.file_config().unwrap().rules[2], r);
}

#[test]
fn an_added_rules_unknown_policy_is_written_only_when_drop_and_reads_back() {
    let mut d = doc();
    let r = RuleConfig {
        unknown_policy: UnknownPolicy::Drop,
        ..rule(Proto::Tcp, 8443)
    };
    d.add_rule(&r).unwrap();
    assert_eq!(
        d.text(),
        edited(
            "\n# vim: ft=toml\n",
            "\n[[rule]]\nport = 8443\nunknown_policy = \"drop\"\n\n# vim: ft=toml\n"
        )
    );
    assert_eq!(d.file_config().unwrap().rules[2], r);
    let mut d = doc();
    d.add_rule(&rule(Proto::Tcp, 8443)).unwrap();
    assert!(!d.text().contains("unknown_policy"), "{}", d.text());
}

#[test]
fn a_rule_already_in_the_file_is_not_added_twice() {
    let mut d = doc();
    let e = d.add_rule(&rule(Proto::Tcp, 443)).unwrap_err();
    assert!(matches!(e, EditError::Conflict(_)), "{e:?}");
    assert_eq!(e.to_string(), "a [[rule]] already forwards tcp port 443");
    let e = d
        .add_rule(&RuleConfig {
            backend: Some(ip("10.8.0.9")),
            ..rule(Proto::Udp, 27015)
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "a [[rule]] already forwards udp port 27015");
    assert!(!d.changed());
    // The same port on one named address is a different rule.
    let r = RuleConfig {
        public_addr: Some(ip("2001:db8::1")),
        ..rule(Proto::Tcp, 443)
    };
    d.add_rule(&r).unwrap();
    let e = d.add_rule(&r).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a [[rule]] already forwards tcp 2001:db8::1 port 443"
    );
}

#[test]
fn removed_rule_takes_its_own_comments_only() {
    let mut d = doc();
    let removed = d.remove_rule(Proto::Udp, 27015, None).unwrap();
    assert_eq!(removed, rule(Proto::Udp, 27015));
    assert_eq!(
        d.text(),
        edited(
            "# Game server, UDP.\n[[rule]]\nproto = \"udp\"\nport = 27015\n# backend_port = 27016\n\n",
            ""
        )
    );
    // The last rule stays (without any, the default ports would be forwarded).
    let e = d.remove_rule(Proto::Tcp, 443, None).unwrap_err();
    assert!(matches!(e, EditError::Conflict(_)), "{e:?}");
    assert_eq!(d.file_config().unwrap().rules.len(), 1);
}

#[test]
fn removing_a_rule_that_is_not_there_names_it() {
    let mut d = doc();
    let e = d.remove_rule(Proto::Tcp, 8443, None).unwrap_err();
    assert!(matches!(e, EditError::NotFound(_)), "{e:?}");
    assert_eq!(e.to_string(), "no [[rule]] forwards tcp port 8443");
    let e = d.remove_rule(Proto::Tcp, 80, None).unwrap_err();
    assert_eq!(e.to_string(), "no [[rule]] forwards tcp port 80");
    // The rule for 443 covers every address; asked for one address, it is not removed.
    let e = d
        .remove_rule(Proto::Tcp, 443, Some(ip("203.0.113.1")))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no [[rule]] forwards tcp 203.0.113.1 port 443"
    );
    assert!(!d.changed());
}

#[test]
fn which_rule_a_port_without_an_address_means() {
    let v4 = RuleConfig {
        public_addr: Some(ip("203.0.113.1")),
        ..rule(Proto::Tcp, 8443)
    };
    let v6 = RuleConfig {
        public_addr: Some(ip("2001:db8::1")),
        ..rule(Proto::Tcp, 8443)
    };
    // The only rule for the port: whatever its address.
    let mut d = doc();
    d.add_rule(&v4).unwrap();
    assert_eq!(d.remove_rule(Proto::Tcp, 8443, None).unwrap(), v4);
    // Several, none without an address: the user has to say which.
    d.add_rule(&v4).unwrap();
    d.add_rule(&v6).unwrap();
    let e = d.remove_rule(Proto::Tcp, 8443, None).unwrap_err();
    assert!(matches!(e, EditError::Ambiguous(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "2 [[rule]] sections forward tcp port 8443 (on 203.0.113.1, 2001:db8::1): name the public address"
    );
    assert_eq!(
        d.remove_rule(Proto::Tcp, 8443, Some(ip("2001:db8::1")))
            .unwrap(),
        v6
    );
    // Several, one without an address: that one is named exactly.
    d.add_rule(&rule(Proto::Tcp, 8443)).unwrap();
    assert_eq!(
        d.remove_rule(Proto::Tcp, 8443, None).unwrap(),
        rule(Proto::Tcp, 8443)
    );
    assert_eq!(d.file_config().unwrap().rules[2], v4);
}

#[test]
fn hosts_are_added_at_the_end_and_compared_like_the_daemon_does() {
    let mut d = doc();
    d.add_host(&host("shop.example.com", HostPolicy::Forward))
        .unwrap();
    d.add_host(&host("*.internal.example.com", HostPolicy::Local))
        .unwrap();
    assert_eq!(
        d.text(),
        edited(
            "\n# vim: ft=toml\n",
            "\n[[host]]\nname = \"shop.example.com\"\n\n[[host]]\nname = \"*.internal.example.com\"\npolicy = \"local\"\n\n# vim: ft=toml\n"
        )
    );
    let hosts = d.file_config().unwrap().hosts;
    assert_eq!(hosts[3], host("*.internal.example.com", HostPolicy::Local));
    let before = d.text();
    for name in ["APP.example.com", "app.example.com.", "Shop.Example.Com"] {
        let e = d.add_host(&host(name, HostPolicy::Drop)).unwrap_err();
        assert!(matches!(e, EditError::Conflict(_)), "{e:?}");
        assert!(e.to_string().ends_with("\" is already configured"), "{e}");
    }
    let e = d
        .add_host(&host("App.Example.com", HostPolicy::Drop))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "host \"app.example.com\" is already configured"
    );
    assert_eq!(d.text(), before);
}

#[test]
fn removed_host_leaves_the_group_comment() {
    let mut d = doc();
    d.remove_host("App.Example.com").unwrap();
    assert_eq!(
        d.text(),
        edited(
            "# The main app.\n[[host]]\nname = \"app.example.com\"\n\n",
            ""
        )
    );
    d.remove_host("blog.example.com").unwrap();
    assert_eq!(
        d.text(),
        edited(
            "# The main app.\n[[host]]\nname = \"app.example.com\"\n\n[[host]]\nname = \"blog.example.com\"\npolicy = \"drop\"  # retired\n# owner: blog team\n\n",
            ""
        )
    );
    let e = d.remove_host("blog.example.com").unwrap_err();
    assert!(matches!(e, EditError::NotFound(_)), "{e:?}");
    assert_eq!(e.to_string(), "host \"blog.example.com\" is not configured");
    assert!(d.file_config().unwrap().hosts.is_empty());
}

#[test]
fn host_policy_is_written_only_when_not_forward() {
    let mut d = doc();
    d.set_host_policy("app.example.com", HostPolicy::Drop)
        .unwrap();
    // Changing a policy keeps the comment on it.
    d.set_host_policy("blog.example.com", HostPolicy::Local)
        .unwrap();
    assert_eq!(
        d.text(),
        edited(
            "name = \"app.example.com\"\n\n[[host]]\nname = \"blog.example.com\"\npolicy = \"drop\"  # retired\n",
            "name = \"app.example.com\"\npolicy = \"drop\"\n\n[[host]]\nname = \"blog.example.com\"\npolicy = \"local\"  # retired\n"
        )
    );
    d.set_host_policy("app.example.com", HostPolicy::Forward)
        .unwrap();
    d.set_host_policy("blog.example.com", HostPolicy::Forward)
        .unwrap();
    assert_eq!(d.text(), edited("policy = \"drop\"  # retired\n", ""));
    let hosts = d.file_config().unwrap().hosts;
    assert!(hosts.iter().all(|h| h.policy == HostPolicy::Forward));
    let e = d
        .set_host_policy("nope.example.com", HostPolicy::Drop)
        .unwrap_err();
    assert_eq!(e.to_string(), "host \"nope.example.com\" is not configured");
}

#[test]
fn limits_are_added_updated_and_switched_off() {
    let mut d = doc();
    // Off and absent: nothing to write.
    d.set_limits(Limits::default()).unwrap();
    assert!(!d.changed());
    let limits = Limits {
        new_connections_per_second: 20,
        burst: Some(50),
        ..Limits::default()
    };
    d.set_limits(limits).unwrap();
    assert_eq!(
        d.text(),
        edited(
            "\n# vim: ft=toml\n",
            "\n[limits]\nnew_connections_per_second = 20\nburst = 50\n\n# vim: ft=toml\n"
        )
    );
    assert_eq!(d.file_config().unwrap().limits, limits);

    let text = "[limits]\n# Per client.\nnew_connections_per_second = 20  # was 10\nburst = 40\n\n[health]\ninterval_ms = 1000\n";
    let mut d = ConfigDoc::parse(Path::new("f.toml"), text).unwrap();
    d.set_limits(Limits {
        new_connections_per_second: 30,
        burst: None,
        ..Limits::default()
    })
    .unwrap();
    assert_eq!(
        d.text(),
        "[limits]\n# Per client.\nnew_connections_per_second = 30  # was 10\n\n[health]\ninterval_ms = 1000\n"
    );
    d.set_limits(Limits::default()).unwrap();
    assert_eq!(d.text(), "[limits]\n\n[health]\ninterval_ms = 1000\n");
    assert_eq!(d.file_config().unwrap().limits, Limits::default());
}

#[test]
fn comments_at_the_top_of_the_file_stay_at_the_top() {
    let p = Path::new("f.toml");
    let mut d = ConfigDoc::parse(
        p,
        "# forwarder\n[[host]]\nname = \"a.example\"\n\n[[host]]\nname = \"b.example\"\n",
    )
    .unwrap();
    d.remove_host("a.example").unwrap();
    assert_eq!(d.text(), "# forwarder\n\n[[host]]\nname = \"b.example\"\n");
    d.remove_host("b.example").unwrap();
    assert_eq!(d.text(), "# forwarder\n");
    d.add_host(&host("c.example", HostPolicy::Forward)).unwrap();
    assert_eq!(d.text(), "# forwarder\n\n[[host]]\nname = \"c.example\"\n");

    let mut d = ConfigDoc::parse(p, "# forwarder\n").unwrap();
    d.add_rule(&rule(Proto::Tcp, 8443)).unwrap();
    assert_eq!(
        d.text(),
        "# forwarder\n\n[[rule]]\nport = 80\n\n[[rule]]\nport = 443\n\n[[rule]]\nport = 8443\n"
    );
}

#[test]
fn with_http3_the_default_rules_written_out_include_udp_443() {
    let p = Path::new("f.toml");
    let mut d = ConfigDoc::parse(p, "http3 = true\n").unwrap();
    d.add_rule(&rule(Proto::Tcp, 8443)).unwrap();
    let rules: Vec<(Proto, u16)> = d
        .file_config()
        .unwrap()
        .rules
        .iter()
        .map(|r| (r.proto, r.port))
        .collect();
    assert_eq!(
        rules,
        [
            (Proto::Tcp, 80),
            (Proto::Tcp, 443),
            (Proto::Udp, 443),
            (Proto::Tcp, 8443)
        ]
    );
    let mut d = ConfigDoc::parse(p, "http3 = true\n").unwrap();
    d.remove_rule(Proto::Udp, 443, None).unwrap();
    assert_eq!(
        d.file_config().unwrap().rules,
        [rule(Proto::Tcp, 80), rule(Proto::Tcp, 443)]
    );
}

#[test]
fn the_default_ports_stay_forwarded_when_rules_are_edited() {
    let p = Path::new("f.toml");
    // Without any [[rule]], 80 and 443 are forwarded: adding a port keeps them.
    let mut d = ConfigDoc::parse(p, "").unwrap();
    d.add_rule(&rule(Proto::Tcp, 8443)).unwrap();
    let ports: Vec<u16> = d
        .file_config()
        .unwrap()
        .rules
        .iter()
        .map(|r| r.port)
        .collect();
    assert_eq!(ports, [80, 443, 8443]);
    // A rule for a default port replaces that default.
    let mut d = ConfigDoc::parse(p, "").unwrap();
    let local = RuleConfig {
        fallback: Some("local".into()),
        ..rule(Proto::Tcp, 443)
    };
    d.add_rule(&local).unwrap();
    assert_eq!(
        d.file_config().unwrap().rules,
        [rule(Proto::Tcp, 80), local]
    );
    // Removing one default leaves the other.
    let mut d = ConfigDoc::parse(p, "").unwrap();
    d.remove_rule(Proto::Tcp, 80, None).unwrap();
    assert_eq!(d.file_config().unwrap().rules, [rule(Proto::Tcp, 443)]);
    // The last rule stays: without it, the defaults would come back.
    let e = d.remove_rule(Proto::Tcp, 443, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tcp port 443 is the last [[rule]]: without any, the default rules (TCP 80 and 443) would be forwarded again; stop the daemon to stop forwarding"
    );
    // A refused edit leaves nothing behind, defaults written out included.
    let mut d = ConfigDoc::parse(p, "").unwrap();
    assert!(d.remove_rule(Proto::Tcp, 8443, None).is_err());
    assert!(!d.changed());
    assert_eq!(d.text(), "");
}

#[test]
fn commented_out_settings_stay_with_their_section() {
    let text = "[limits]\nnew_connections_per_second = 20\n# burst = 50\n";
    let mut d = ConfigDoc::parse(Path::new("f.toml"), text).unwrap();
    d.add_host(&host("a.example", HostPolicy::Forward)).unwrap();
    assert_eq!(
        d.text(),
        format!("{text}\n[[host]]\nname = \"a.example\"\n")
    );
    d.remove_host("a.example").unwrap();
    assert_eq!(d.text(), text);
}

#[test]
fn arrays_written_inline_stay_inline() {
    let text = "rule = [{ port = 80 }, { port = 443 }]\nhost = [{ name = \"a.example\" }]\n";
    let mut d = ConfigDoc::parse(Path::new("f.toml"), text).unwrap();
    d.add_rule(&rule(Proto::Udp, 53)).unwrap();
    d.add_host(&host("b.example", HostPolicy::Drop)).unwrap();
    d.set_host_policy("a.example", HostPolicy::Local).unwrap();
    d.remove_rule(Proto::Tcp, 80, None).unwrap();
    let f = d.file_config().unwrap();
    assert_eq!(f.rules, [rule(Proto::Tcp, 443), rule(Proto::Udp, 53)]);
    assert_eq!(
        f.hosts,
        [
            host("a.example", HostPolicy::Local),
            host("b.example", HostPolicy::Drop)
        ]
    );
    assert!(!d.text().contains("[[rule]]") && !d.text().contains("[[host]]"));
}

#[test]
fn files_that_do_not_parse_are_not_edited() {
    let p = Path::new("/etc/forwarder.toml");
    let e = ConfigDoc::parse(p, "public_iface = \"eth0\"\n[[rule]\nport = 1\n").unwrap_err();
    assert!(
        matches!(e, EditError::Config(ConfigError::Parse { line: 2, .. })),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("/etc/forwarder.toml:2:"), "{e}");
    let e = ConfigDoc::parse(p, "[[host]]\nname = \"a.b\"\npolicy = \"bounce\"\n").unwrap_err();
    assert!(e.to_string().starts_with("/etc/forwarder.toml:3:"), "{e}");
    assert!(e.to_string().contains("forward, drop or local"), "{e}");
    let e = ConfigDoc::open(Path::new("/nonexistent/forwarder.toml")).unwrap_err();
    assert!(
        matches!(e, EditError::Config(ConfigError::Read { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("/nonexistent/forwarder.toml"), "{e}");
}
