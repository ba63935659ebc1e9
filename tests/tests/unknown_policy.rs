//! `unknown_policy = "drop"` as a visitor and an operator meet it: on a port whose rule
//! drops connections without a readable name, a browser naming a forwarded host is served,
//! a TLS client that sends no SNI is reset instead of reaching home, a port left at the
//! default still forwards such clients, and the metrics, `rules list` and `rules add` say
//! what the rule does.

use std::{process::Output, time::Duration};

use integration_tests::{Lab, LabOptions, SUBDOMAINS, VPS_V4, missing_prerequisites, wait_for};

fn ok(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_tls_client_without_sni_is_reset_where_unknown_connections_are_dropped() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(&LabOptions {
        extra_config: format!(
            "[[host]]\nname = \"{}\"\n\n[[host]]\nname = \"{}\"\npolicy = \"drop\"\n\n\
             [[rule]]\nport = 443\nunknown_policy = \"drop\"\n\n[[rule]]\nport = 80\n",
            SUBDOMAINS[0], SUBDOMAINS[1]
        ),
        ..LabOptions::default()
    })
    .expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");

    // A client that names a forwarded host is served.
    let (code, _) = lab
        .curl("https", SUBDOMAINS[0], "/", VPS_V4, &[])
        .expect("a named host through a rule that drops unknown connections");
    assert_eq!(code, 200);

    // An IP-literal URL: curl sends no SNI. The ClientHello is cut, the client reset.
    let err = lab
        .curl("https", VPS_V4, "/", VPS_V4, &["-k", "--max-time", "10"])
        .expect_err("a ClientHello without SNI was answered");
    let err = format!("{err:#}");
    assert!(err.contains("reset"), "not a reset: {err}");

    // openssl without a server name: the handshake never completes.
    let connect = format!("{VPS_V4}:443");
    let out = lab
        .exec(
            &lab.client,
            &[
                "timeout",
                "10",
                "openssl",
                "s_client",
                "-connect",
                &connect,
                "-noservername",
            ],
        )
        .expect("running openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing of the server's handshake arrived; the connection was reset (ECONNRESET).
    assert!(
        text.contains("has read 0 bytes") && text.contains("errno=104"),
        "openssl without SNI: {text}"
    );

    // Port 80 keeps the default: a request without a Host header still reaches home,
    // whose server answers it (400: HTTP/1.1 needs a Host).
    let url = format!("http://{VPS_V4}/");
    let out = lab
        .exec(
            &lab.client,
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "-H",
                "Host:",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ],
        )
        .expect("running curl");
    assert_eq!(ok(&out).trim(), "400", "a nameless request on port 80");

    // The cuts are counted: globally, and as policy drops under `unknown`.
    let page = wait_for("the cuts in /metrics", Duration::from_secs(10), || {
        let page = lab.metrics_page()?;
        let cuts = sample(
            &page,
            "forwarder_datapath_packets_total{event=\"policy_unknown_cut\"}",
        )?;
        (cuts >= 2.0).then_some(page)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:?}", lab.metrics_page()));
    let drops = sample(
        &page,
        "forwarder_host_drops_total{host=\"unknown\",protocol=\"tcp\",reason=\"policy\"}",
    );
    assert!(drops.is_some_and(|d| d >= 2.0), "{page}");
    assert_eq!(
        sample(
            &page,
            "forwarder_datapath_packets_total{event=\"policy_cut\"}"
        ),
        Some(0.0),
        "no dropped host was asked for"
    );

    // The operator sees the rule's policy, and `rules add` writes one to the file.
    let list = ok(&lab.forwarder_cli(&["rules", "list"]).unwrap());
    // One rule per public address of each port.
    let on = |port: &str| -> Vec<&str> { list.lines().filter(|l| l.contains(port)).collect() };
    let (on443, on80) = (on(":443 "), on(":80 "));
    assert!(!on443.is_empty() && !on80.is_empty(), "{list}");
    for l in &on443 {
        assert!(l.ends_with("(unknown_policy = drop)"), "{list}");
    }
    for l in &on80 {
        assert!(!l.contains("unknown_policy"), "{list}");
    }
    let json = ok(&lab.forwarder_cli(&["rules", "list", "--json"]).unwrap());
    assert_eq!(
        json.matches("\"unknown_policy\": \"drop\"").count(),
        on443.len(),
        "{json}"
    );

    let before = std::fs::read_to_string(lab.config_path()).unwrap();
    let out = lab
        .forwarder_cli(&[
            "rules",
            "add",
            "--port",
            "8443",
            "--unknown-policy",
            "bounce",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("unknown_policy \"bounce\"")
            && err.contains("\"drop\""),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(lab.config_path()).unwrap(), before);
    ok(&lab
        .forwarder_cli(&[
            "rules",
            "add",
            "--port",
            "8443",
            "--backend-port",
            "443",
            "--unknown-policy",
            "drop",
        ])
        .unwrap());
    let file = std::fs::read_to_string(lab.config_path()).unwrap();
    assert!(
        file.ends_with("[[rule]]\nport = 8443\nbackend_port = 443\nunknown_policy = \"drop\"\n"),
        "{file}"
    );
    let list = ok(&lab.forwarder_cli(&["rules", "list"]).unwrap());
    assert!(
        list.lines()
            .any(|l| l.contains(":8443 ") && l.ends_with("(unknown_policy = drop)")),
        "{list}"
    );
    // In force at once: the new port drops a nameless ClientHello too.
    let err = lab
        .exec(
            &lab.client,
            &[
                "curl",
                "-sS",
                "-k",
                "--max-time",
                "10",
                &format!("https://{VPS_V4}:8443/"),
            ],
        )
        .expect("running curl");
    assert!(
        !err.status.success() && String::from_utf8_lossy(&err.stderr).contains("reset"),
        "{err:?}"
    );
}
