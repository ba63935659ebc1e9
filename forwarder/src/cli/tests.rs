//! The CLI's text for each control reply, pinned.

use crate::{
    api::{
        control::{Changes, HostEntry, RuleEntry, StatusReply},
        stats::{LocalStats, TunnelState},
    },
    cli::{
        change::render_changes, hosts::render_hosts, rules::render_rules, status::render_status,
    },
};

/// The control protocol's sample status, with a stale error on a backend that is up
/// again (not shown).
fn status_reply() -> StatusReply {
    let mut s = crate::api::control::tests::status_reply();
    s.backends[1].last_error = Some("an old failure".into());
    s
}

#[test]
fn status_text() {
    assert_eq!(
        render_status(&status_reply()),
        "forwarder 0.1.0  up 42s\n\
         attach mode   xdp-driver\n\
         tunnel        wg0 up, last handshake 7s ago\n\
         backend       10.8.0.2:443 DOWN for 3s (connection refused)\n\
         backend       10.8.0.2:80 up for 40s\n\
         fallback      active: tcp 203.0.113.1:443 -> 10.8.0.2:443 (local fallback)\n\
         local hosts   5 connections served by the VPS (2 now), 1 failed\n"
    );
    let quiet = StatusReply {
        tunnel: TunnelState {
            iface: "wg0".into(),
            up: false,
            handshake_age_seconds: None,
        },
        backends: Vec::new(),
        local: LocalStats::default(),
        rules_in_fallback: Vec::new(),
        ..status_reply()
    };
    assert_eq!(
        render_status(&quiet),
        "forwarder 0.1.0  up 42s\n\
         attach mode   xdp-driver\n\
         tunnel        wg0 DOWN\n\
         fallback      none active\n"
    );
}

#[test]
fn rules_text() {
    let rules = [
        RuleEntry {
            rule: "tcp 203.0.113.1:80 -> 10.8.0.2:80 (local fallback)".into(),
            public: "203.0.113.1".parse().unwrap(),
            proto: "tcp".into(),
            port: 80,
            backend: "10.8.0.2".parse().unwrap(),
            backend_port: 80,
            fallback: Some("local".into()),
            in_fallback: true,
            unknown_policy: None,
        },
        RuleEntry {
            rule: "tcp 203.0.113.1:443 -> 10.8.0.2:443".into(),
            public: "203.0.113.1".parse().unwrap(),
            proto: "tcp".into(),
            port: 443,
            backend: "10.8.0.2".parse().unwrap(),
            backend_port: 443,
            fallback: None,
            in_fallback: false,
            unknown_policy: None,
        },
    ];
    assert_eq!(
        render_rules(&rules),
        "tcp 203.0.113.1:80 -> 10.8.0.2:80 (local fallback)  [fallback in force]\n\
         tcp 203.0.113.1:443 -> 10.8.0.2:443\n"
    );
}

#[test]
fn hosts_text() {
    let hosts = [
        HostEntry {
            host: "app.example.com".into(),
            policy: "forward".into(),
            id: Some(1),
        },
        HostEntry {
            host: "*.example.org".into(),
            policy: "drop".into(),
            id: None,
        },
    ];
    assert_eq!(
        render_hosts(&hosts),
        "host                                     policy      id\n\
         app.example.com                          forward  1\n\
         *.example.org                            drop     null\n"
    );
}

#[test]
fn changes_text() {
    let c = Changes {
        rules_added: vec!["tcp 203.0.113.1:8080 -> 10.8.0.2:80".into()],
        rules_removed: vec!["tcp 203.0.113.1:9000 -> 10.8.0.2:9000".into()],
        hosts_added: vec!["a.example".into()],
        hosts_removed: vec!["b.example".into()],
        hosts_changed: vec!["c.example: policy drop".into()],
        limits_changed: true,
        health_changed: true,
        persisted_to: Some("/etc/forwarder/forwarder.toml".into()),
    };
    assert_eq!(
        render_changes(&c),
        "rule added:    tcp 203.0.113.1:8080 -> 10.8.0.2:80\n\
         rule removed:  tcp 203.0.113.1:9000 -> 10.8.0.2:9000\n\
         host added:    a.example\n\
         host removed:  b.example\n\
         host changed:  c.example: policy drop\n\
         limits changed\n\
         health settings changed\n\
         written to /etc/forwarder/forwarder.toml\n"
    );
    assert_eq!(render_changes(&Changes::default()), "no change\n");
}
