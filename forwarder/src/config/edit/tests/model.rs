//! Random sequences of edits against a model of the file as plain lists.

use std::{net::IpAddr, path::Path};

use proptest::prelude::*;

use super::{FILE, ip};
use crate::config::{
    edit::{ConfigDoc, EditError, hosts::host_label},
    hosts::{HostConfig, HostPolicy},
    limits::Limits,
    rule::{Proto, RuleConfig, UnknownPolicy, default_rules},
};

#[derive(Clone, Debug)]
enum Op {
    AddRule(RuleConfig),
    RemoveRule(Proto, u16, Option<IpAddr>),
    AddHost(HostConfig),
    RemoveHost(String),
    SetPolicy(String, HostPolicy),
    SetLimits(Limits),
}

/// Few values, so that edits often hit what earlier ones added.
fn proto() -> impl Strategy<Value = Proto> {
    prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)]
}

fn port() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![443u16, 8443, 27015])
}

fn public_addr() -> impl Strategy<Value = Option<IpAddr>> {
    prop::option::of(prop::sample::select(vec![
        ip("203.0.113.1"),
        ip("2001:db8::1"),
    ]))
}

fn policy() -> impl Strategy<Value = HostPolicy> {
    prop_oneof![
        Just(HostPolicy::Forward),
        Just(HostPolicy::Drop),
        Just(HostPolicy::Local)
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "app.example.com",
        "APP.Example.com.",
        "blog.example.com",
        "*.example.com",
        "shop.example.com",
    ])
    .prop_map(str::to_owned)
}

fn op() -> impl Strategy<Value = Op> {
    let rule = (
        proto(),
        port(),
        prop::option::of(prop::sample::select(vec![ip("10.8.0.3"), ip("fd00::3")])),
        prop::option::of(1u16..),
        public_addr(),
        prop::option::of(Just("local".to_owned())),
        prop::sample::select(vec![UnknownPolicy::Forward, UnknownPolicy::Drop]),
    )
        .prop_map(
            |(proto, port, backend, backend_port, public_addr, fallback, unknown_policy)| {
                RuleConfig {
                    proto,
                    port,
                    backend,
                    backend_port,
                    public_addr,
                    fallback,
                    unknown_policy,
                }
            },
        );
    prop_oneof![
        rule.prop_map(Op::AddRule),
        (proto(), port(), public_addr()).prop_map(|(p, n, a)| Op::RemoveRule(p, n, a)),
        (name(), policy()).prop_map(|(name, policy)| Op::AddHost(HostConfig { name, policy })),
        name().prop_map(Op::RemoveHost),
        (name(), policy()).prop_map(|(n, p)| Op::SetPolicy(n, p)),
        (0u16..3, prop::option::of(1u16..100)).prop_map(|(rate, burst)| {
            Op::SetLimits(Limits {
                new_connections_per_second: rate,
                burst,
                ..Limits::default()
            })
        }),
    ]
}

/// What the file should hold: the sections as plain lists.
#[derive(Debug)]
struct Model {
    rules: Vec<RuleConfig>,
    hosts: Vec<HostConfig>,
    limits: Limits,
}

impl Model {
    /// Whether the edit applies; if not, nothing changes.
    fn apply(&mut self, op: &Op) -> bool {
        let same_host = |h: &HostConfig, n: &str| host_label(&h.name) == host_label(n);
        // An empty rule list means the default ports: an edit starts from them.
        let defaults = |skip: Option<(Proto, u16, Option<IpAddr>)>| -> Vec<RuleConfig> {
            default_rules(false)
                .into_iter()
                .filter(|r| skip != Some((r.proto, r.port, None)))
                .collect()
        };
        match op {
            Op::AddRule(r) => {
                let mut rules = if self.rules.is_empty() {
                    defaults(Some((r.proto, r.port, r.public_addr)))
                } else {
                    self.rules.clone()
                };
                let dup = rules
                    .iter()
                    .any(|x| (x.proto, x.port, x.public_addr) == (r.proto, r.port, r.public_addr));
                if !dup {
                    rules.push(r.clone());
                    self.rules = rules;
                }
                !dup
            }
            Op::RemoveRule(proto, port, addr) => {
                let mut rules = if self.rules.is_empty() {
                    defaults(None)
                } else {
                    self.rules.clone()
                };
                let same: Vec<usize> = (0..rules.len())
                    .filter(|&i| rules[i].proto == *proto && rules[i].port == *port)
                    .collect();
                let named: Vec<usize> = same
                    .iter()
                    .copied()
                    .filter(|&i| rules[i].public_addr == *addr)
                    .collect();
                let pick = match (addr, same.len(), named.len()) {
                    (None, 1, _) => same[0],
                    (_, _, 1) => named[0],
                    _ => return false,
                };
                // The last rule stays: without it the defaults would return.
                if rules.len() == 1 {
                    return false;
                }
                rules.remove(pick);
                self.rules = rules;
                true
            }
            Op::AddHost(h) => {
                let dup = self.hosts.iter().any(|x| same_host(x, &h.name));
                if !dup {
                    self.hosts.push(h.clone());
                }
                !dup
            }
            Op::RemoveHost(n) => match self.hosts.iter().position(|x| same_host(x, n)) {
                Some(i) => {
                    self.hosts.remove(i);
                    true
                }
                None => false,
            },
            Op::SetPolicy(n, p) => match self.hosts.iter_mut().find(|x| same_host(x, n)) {
                Some(h) => {
                    h.policy = *p;
                    true
                }
                None => false,
            },
            Op::SetLimits(l) => {
                self.limits = if l.new_connections_per_second == 0 {
                    Limits::default()
                } else {
                    *l
                };
                true
            }
        }
    }
}

fn run(d: &mut ConfigDoc, op: &Op) -> Result<(), EditError> {
    match op {
        Op::AddRule(r) => d.add_rule(r),
        Op::RemoveRule(p, n, a) => d.remove_rule(*p, *n, *a).map(drop),
        Op::AddHost(h) => d.add_host(h),
        Op::RemoveHost(n) => d.remove_host(n),
        Op::SetPolicy(n, p) => d.set_host_policy(n, *p),
        Op::SetLimits(l) => d.set_limits(*l),
    }
}

/// Applies `ops` to `base` and to the model side by side; returns the texts seen.
fn check(base: &str, ops: &[Op]) -> Result<Vec<String>, TestCaseError> {
    let mut d = ConfigDoc::parse(Path::new("f.toml"), base).unwrap();
    let start = d.file_config().unwrap();
    let mut model = Model {
        rules: start.rules,
        hosts: start.hosts,
        limits: start.limits,
    };
    let mut texts = Vec::new();
    for op in ops {
        let before = d.text();
        let applied = model.apply(op);
        let result = run(&mut d, op);
        prop_assert_eq!(result.is_ok(), applied, "{:?}: {:?}", op, result);
        if !applied {
            prop_assert_eq!(d.text(), before);
        }
        let text = d.text();
        let f = d
            .file_config()
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&f.rules, &model.rules);
        prop_assert_eq!(&f.hosts, &model.hosts);
        prop_assert_eq!(f.limits, model.limits);
        prop_assert!(!text.contains("\n\n\n"), "{}", text);
        // What is written reads back as the same text.
        let reread = ConfigDoc::parse(Path::new("f.toml"), &text).unwrap();
        prop_assert_eq!(reread.text(), text.as_str());
        texts.push(text);
    }
    Ok(texts)
}

proptest! {
    #[test]
    fn edits_match_a_list_model_and_keep_the_comments(
        ops in prop::collection::vec(op(), 1..40),
    ) {
        for text in check(FILE, &ops)? {
            prop_assert!(
                text.starts_with("# forwarder configuration\n# See docs/config.md.\n\npublic_iface = \"eth0\"   # the VPS's uplink\n"),
                "{}", text
            );
            prop_assert!(text.contains("\n[health]\ninterval_ms = 1000\n"), "{}", text);
            prop_assert!(text.ends_with("\n\n# vim: ft=toml\n"), "{}", text);
        }
    }

    #[test]
    fn edits_from_sparse_files_match_the_model(
        base in prop::sample::select(vec![
            "",
            "# forwarder\n",
            "# forwarder\n[[host]]\nname = \"app.example.com\"\n",
            "[health]\ninterval_ms = 1000\n# down_after = 3\n",
            "rule = []\nhost = [{ name = \"blog.example.com\" }]\n",
        ]),
        ops in prop::collection::vec(op(), 1..30),
    ) {
        for text in check(base, &ops)? {
            if base.starts_with("# forwarder\n") {
                prop_assert!(text.starts_with("# forwarder\n"), "{}", text);
            }
            if base.contains("# down_after") {
                prop_assert!(text.starts_with("[health]\ninterval_ms = 1000\n# down_after = 3\n"), "{}", text);
            }
        }
    }
}
