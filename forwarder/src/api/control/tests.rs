//! The wire text of every request and reply, pinned: the JSON the daemon writes and
//! `--json` prints is the one the protocol has always had (keys sorted, `null`s kept).

use serde_json::json;

use super::*;

/// One line as the socket carries it, and the indented text `--json` prints.
fn wire(reply: &impl Serialize) -> (String, String) {
    let v = encode(reply).unwrap();
    (
        serde_json::to_string(&v).unwrap(),
        serde_json::to_string_pretty(&v).unwrap(),
    )
}

/// The reply read back the way the CLI reads it, then printed as `--json` prints it.
fn reprinted<R: ControlRequest>(line: &str) -> String {
    let envelope = format!(r#"{{"ok":true,"result":{line}}}"#);
    let r: Response<R::Reply> = serde_json::from_str(&envelope).unwrap();
    serde_json::to_string_pretty(&encode(&r.result.unwrap()).unwrap()).unwrap()
}

/// A status with something in every field (the CLI's rendering tests use it too).
pub fn status_reply() -> StatusReply {
    StatusReply {
        version: "0.1.0".into(),
        uptime_seconds: 42,
        attach_mode: "xdp-driver".into(),
        tunnel: TunnelState {
            iface: "wg0".into(),
            up: true,
            handshake_age_seconds: Some(7),
        },
        backends: vec![
            BackendSnapshot {
                backend: "10.8.0.2:443".into(),
                up: false,
                since_seconds: 3,
                transitions: 1,
                last_error: Some("connection refused".into()),
            },
            BackendSnapshot {
                backend: "10.8.0.2:80".into(),
                up: true,
                since_seconds: 40,
                transitions: 0,
                last_error: None,
            },
        ],
        local: LocalStats {
            served: 5,
            failed: 1,
            active: 2,
            ..LocalStats::default()
        },
        rules_in_fallback: vec!["tcp 203.0.113.1:443 -> 10.8.0.2:443 (local fallback)".into()],
        config: None,
    }
}

#[test]
fn status_is_written_as_before() {
    let s = status_reply();
    // What the handler built before the reply had a type.
    let old = json!({
        "version": s.version,
        "uptime_seconds": s.uptime_seconds,
        "attach_mode": s.attach_mode,
        "tunnel": s.tunnel,
        "backends": s.backends,
        "local": s.local,
        "rules_in_fallback": s.rules_in_fallback,
        "config": s.config,
    });
    let (line, pretty) = wire(&s);
    assert_eq!(line, serde_json::to_string(&old).unwrap());
    assert_eq!(pretty, serde_json::to_string_pretty(&old).unwrap());
    assert_eq!(
        line,
        concat!(
            r#"{"attach_mode":"xdp-driver","backends":[{"backend":"10.8.0.2:443","#,
            r#""last_error":"connection refused","since_seconds":3,"transitions":1,"up":false},"#,
            r#"{"backend":"10.8.0.2:80","since_seconds":40,"transitions":0,"up":true}],"#,
            r#""config":null,"local":{"active":2,"budget":0,"closed_idle":0,"closed_lifetime":0,"#,
            r#""failed":1,"refused":0,"served":5},"#,
            r#""rules_in_fallback":["tcp 203.0.113.1:443 -> 10.8.0.2:443 (local fallback)"],"#,
            r#""tunnel":{"handshake_age_seconds":7,"iface":"wg0","up":true},"#,
            r#""uptime_seconds":42,"version":"0.1.0"}"#
        )
    );
    assert_eq!(reprinted::<Status>(&line), pretty);

    let with_file = StatusReply {
        config: Some("/etc/forwarder/forwarder.toml".into()),
        tunnel: TunnelState {
            handshake_age_seconds: None,
            ..s.tunnel.clone()
        },
        ..s
    };
    let (line, pretty) = wire(&with_file);
    assert!(
        line.contains(r#""config":"/etc/forwarder/forwarder.toml""#),
        "{line}"
    );
    assert!(
        line.contains(r#""tunnel":{"iface":"wg0","up":true}"#),
        "{line}"
    );
    assert_eq!(reprinted::<Status>(&line), pretty);
}

#[test]
fn rules_are_written_as_before() {
    let rules = vec![
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
            rule: "udp [2001:db8::1]:443 -> [fd00::2]:8443".into(),
            public: "2001:db8::1".parse().unwrap(),
            proto: "udp".into(),
            port: 443,
            backend: "fd00::2".parse().unwrap(),
            backend_port: 8443,
            fallback: None,
            in_fallback: false,
            unknown_policy: None,
        },
    ];
    let old = serde_json::Value::Array(
        rules
            .iter()
            .map(|r| {
                json!({
                    "rule": r.rule,
                    "public": r.public,
                    "proto": r.proto,
                    "port": r.port,
                    "backend": r.backend,
                    "backend_port": r.backend_port,
                    "fallback": r.fallback,
                    "in_fallback": r.in_fallback,
                })
            })
            .collect(),
    );
    let (line, pretty) = wire(&rules);
    assert_eq!(line, serde_json::to_string(&old).unwrap());
    assert_eq!(pretty, serde_json::to_string_pretty(&old).unwrap());
    assert_eq!(
        line,
        concat!(
            r#"[{"backend":"10.8.0.2","backend_port":80,"fallback":"local","in_fallback":true,"#,
            r#""port":80,"proto":"tcp","public":"203.0.113.1","#,
            r#""rule":"tcp 203.0.113.1:80 -> 10.8.0.2:80 (local fallback)"},"#,
            r#"{"backend":"fd00::2","backend_port":8443,"fallback":null,"in_fallback":false,"#,
            r#""port":443,"proto":"udp","public":"2001:db8::1","#,
            r#""rule":"udp [2001:db8::1]:443 -> [fd00::2]:8443"}]"#
        )
    );
    assert_eq!(reprinted::<Rules>(&line), pretty);
}

#[test]
fn hosts_are_written_as_before() {
    let hosts = vec![
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
    let old = serde_json::Value::Array(
        hosts
            .iter()
            .map(|h| json!({ "host": h.host, "policy": h.policy, "id": h.id }))
            .collect(),
    );
    let (line, pretty) = wire(&hosts);
    assert_eq!(line, serde_json::to_string(&old).unwrap());
    assert_eq!(pretty, serde_json::to_string_pretty(&old).unwrap());
    assert_eq!(
        line,
        r#"[{"host":"app.example.com","id":1,"policy":"forward"},{"host":"*.example.org","id":null,"policy":"drop"}]"#
    );
    assert_eq!(reprinted::<Hosts>(&line), pretty);
}

#[test]
fn changes_and_stop_are_written_as_before() {
    let c = Changes {
        rules_added: vec!["tcp 203.0.113.1:8080 -> 10.8.0.2:80".into()],
        hosts_changed: vec!["app.example.com: policy drop".into()],
        limits_changed: true,
        persisted_to: Some("/etc/forwarder/forwarder.toml".into()),
        ..Changes::default()
    };
    let (line, pretty) = wire(&c);
    assert_eq!(
        line,
        concat!(
            r#"{"health_changed":false,"hosts_added":[],"#,
            r#""hosts_changed":["app.example.com: policy drop"],"hosts_removed":[],"#,
            r#""limits_changed":true,"persisted_to":"/etc/forwarder/forwarder.toml","#,
            r#""rules_added":["tcp 203.0.113.1:8080 -> 10.8.0.2:80"],"rules_removed":[]}"#
        )
    );
    assert_eq!(reprinted::<RuleAdd>(&line), pretty);
    // Without a config file the field is left out, not null.
    let (line, pretty) = wire(&Changes::default());
    assert!(!line.contains("persisted_to"), "{line}");
    assert_eq!(reprinted::<Reload>(&line), pretty);

    let stop = StopReply {
        stopping: true,
        detach: false,
    };
    let (line, _) = wire(&stop);
    assert_eq!(
        line,
        serde_json::to_string(&json!({ "stopping": true, "detach": false })).unwrap()
    );
    assert_eq!(line, r#"{"detach":false,"stopping":true}"#);
}

#[test]
fn the_envelope_is_written_as_before() {
    let ok = Response {
        ok: true,
        error: None,
        result: Some(encode(&StopReply::default()).unwrap()),
    };
    assert_eq!(
        serde_json::to_string(&ok).unwrap(),
        r#"{"ok":true,"result":{"detach":false,"stopping":false}}"#
    );
    let refused: Response = Response::error("permission denied");
    assert_eq!(
        serde_json::to_string(&refused).unwrap(),
        r#"{"ok":false,"error":"permission denied"}"#
    );
    // A refusal reads as one whatever reply was expected.
    let r: Response<StatusReply> =
        serde_json::from_str(r#"{"ok":false,"error":"permission denied"}"#).unwrap();
    assert_eq!(
        (r.ok, r.error.as_deref(), r.result),
        (false, Some("permission denied"), None)
    );
}

#[test]
fn requests_are_written_as_before() {
    let cases: [(Request, &str); 11] = [
        (Status {}.into(), r#"{"cmd":"status"}"#),
        (Rules {}.into(), r#"{"cmd":"rules"}"#),
        (
            Stop { detach: true }.into(),
            r#"{"cmd":"stop","detach":true}"#,
        ),
        (Hosts {}.into(), r#"{"cmd":"hosts"}"#),
        (
            RuleAdd {
                rule: RuleSpec {
                    proto: Some("tcp".into()),
                    port: 8080,
                    backend_port: Some(80),
                    ..RuleSpec::default()
                },
            }
            .into(),
            concat!(
                r#"{"cmd":"rule_add","rule":{"proto":"tcp","port":8080,"backend":null,"#,
                r#""backend_port":80,"public_addr":null,"fallback":null}}"#
            ),
        ),
        (
            RuleRemove {
                proto: "tcp".into(),
                port: 8080,
                public_addr: None,
            }
            .into(),
            r#"{"cmd":"rule_remove","proto":"tcp","port":8080,"public_addr":null}"#,
        ),
        (
            HostAdd {
                name: "a.example".into(),
                policy: Some("forward".into()),
            }
            .into(),
            r#"{"cmd":"host_add","name":"a.example","policy":"forward"}"#,
        ),
        (
            HostRemove {
                name: "a.example".into(),
            }
            .into(),
            r#"{"cmd":"host_remove","name":"a.example"}"#,
        ),
        (
            HostSet {
                name: "a.example".into(),
                policy: "drop".into(),
            }
            .into(),
            r#"{"cmd":"host_set","name":"a.example","policy":"drop"}"#,
        ),
        (
            Limits {
                new_connections_per_second: 50,
                burst: None,
            }
            .into(),
            r#"{"cmd":"limits","new_connections_per_second":50,"burst":null}"#,
        ),
        (Reload {}.into(), r#"{"cmd":"reload"}"#),
    ];
    for (req, text) in cases {
        assert_eq!(serde_json::to_string(&req).unwrap(), text);
        assert_eq!(parse(text.as_bytes()).unwrap(), req, "{text}");
    }
}

#[test]
fn a_rules_unknown_policy_travels_only_when_given() {
    let req: Request = RuleAdd {
        rule: RuleSpec {
            port: 443,
            unknown_policy: Some("drop".into()),
            ..RuleSpec::default()
        },
    }
    .into();
    let text = concat!(
        r#"{"cmd":"rule_add","rule":{"proto":null,"port":443,"backend":null,"#,
        r#""backend_port":null,"public_addr":null,"fallback":null,"unknown_policy":"drop"}}"#
    );
    assert_eq!(serde_json::to_string(&req).unwrap(), text);
    assert_eq!(parse(text.as_bytes()).unwrap(), req);
    let entry = RuleEntry {
        rule: "tcp 203.0.113.1:443 -> 10.8.0.2:443 (unknown_policy = drop)".into(),
        public: "203.0.113.1".parse().unwrap(),
        proto: "tcp".into(),
        port: 443,
        backend: "10.8.0.2".parse().unwrap(),
        backend_port: 443,
        fallback: None,
        in_fallback: false,
        unknown_policy: Some("drop".into()),
    };
    let (line, _) = wire(&vec![entry.clone()]);
    assert!(line.contains(r#""unknown_policy":"drop""#), "{line}");
    let back: Vec<RuleEntry> = serde_json::from_str(&line).unwrap();
    assert_eq!(back, [entry]);
}

#[test]
fn bad_requests_are_named_as_before() {
    let cases = [
        (
            &b"garbage"[..],
            "bad request: expected value at line 1 column 1",
        ),
        (b"[]", "bad request: expected a JSON object"),
        (br#"{}"#, "bad request: missing field `cmd`"),
        (
            br#"{"cmd":"reboot"}"#,
            "bad request: unknown variant `reboot`, expected one of `status`, `rules`, `stop`, \
             `hosts`, `rule_add`, `rule_remove`, `host_add`, `host_remove`, `host_set`, \
             `limits`, `reload`",
        ),
        (
            br#"{"cmd":"status","all":true}"#,
            "bad request: unknown field `all`",
        ),
        (
            br#"{"cmd":"reload","a":1}"#,
            "bad request: unknown field `a`",
        ),
        (
            br#"{"cmd":"stop","detach":true,"x":1}"#,
            "bad request: unknown field `x`, expected `detach`",
        ),
        (br#"{"cmd":"stop"}"#, "bad request: missing field `detach`"),
        (
            br#"{"cmd":"rule_add","rule":{"port":80,"bogus":1}}"#,
            "bad request: unknown field `bogus`, expected one of `proto`, `port`, `backend`, \
             `backend_port`, `public_addr`, `fallback`, `unknown_policy`",
        ),
        (
            br#"{"cmd":"limits","new_connections_per_second":5,"rate":3}"#,
            "bad request: unknown field `rate`, expected `new_connections_per_second` or `burst`",
        ),
        (b"", "empty request (expected e.g. {\"cmd\":\"status\"})"),
        (b"\xff\xfe", "request is not UTF-8"),
    ];
    for (bytes, want) in cases {
        assert_eq!(parse(bytes).unwrap_err().to_string(), want);
    }
    let big = vec![b' '; MAX_REQUEST + 1];
    assert_eq!(
        parse(&big).unwrap_err().to_string(),
        "request larger than 65536 bytes"
    );
}
