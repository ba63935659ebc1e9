//! What a user looks at: the metrics endpoint, `forwarder stats` and the connection log,
//! against real traffic through the lab.

use std::time::Duration;

use integration_tests::{
    SUBDOMAINS, VPS_V4, forwarder_bin, lab_with_subdomain_hosts as lab, wait_for,
};

/// The value of the sample `name{labels}` in an OpenMetrics/Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_stats_and_connection_log_count_every_connection() {
    let mut lab = lab();
    let conn_log = lab.dir.join("conn.log");
    let conn_log_s = conn_log.display().to_string();
    lab.start_forwarder(&["--conn-log", &conn_log_s])
        .expect("starting the forwarder");
    let mut requests = 0;
    for host in SUBDOMAINS {
        for scheme in ["http", "https"] {
            let (code, _) = lab.curl(scheme, host, "/", VPS_V4, &[]).expect("request");
            assert_eq!(code, 200);
            requests += 1;
        }
    }
    let fetch = |path: &str| -> String {
        let url = format!("http://127.0.0.1:9724{path}");
        let out = lab
            .exec(&lab.vps, &["curl", "-sS", "--max-time", "5", &url])
            .unwrap();
        assert!(
            out.status.success(),
            "GET {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Each connection is counted once, on its first payload, under the name it asked for:
    // one HTTP and one HTTPS connection per subdomain.
    let conns = |page: &str, host: &str| {
        sample(
            page,
            &format!("forwarder_host_connections_total{{host=\"{host}\",protocol=\"tcp\"}}"),
        )
    };
    let page = wait_for("connections in /metrics", Duration::from_secs(10), || {
        let page = fetch("/metrics");
        SUBDOMAINS
            .iter()
            .all(|h| conns(&page, h) == Some(2.0))
            .then_some(page)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", fetch("/metrics")));
    assert_eq!(conns(&page, "unknown"), Some(0.0), "{page}");
    assert_eq!(conns(&page, "other"), Some(0.0), "{page}");
    for host in SUBDOMAINS {
        let bytes = |dir: &str| {
            sample(
                &page,
                &format!("forwarder_host_bytes_total{{host=\"{host}\",protocol=\"tcp\",direction=\"{dir}\"}}"),
            )
            .unwrap()
        };
        let (to_backend, to_client) = (bytes("to_backend"), bytes("to_client"));
        assert!(
            to_backend > 0.0 && to_client > to_backend,
            "{host}: bytes {to_backend} / {to_client}"
        );
    }
    assert_eq!(
        sample(&page, "forwarder_xdp_attach_mode{mode=\"xdp-driver\"}"),
        Some(1.0),
        "{page}"
    );
    // Traffic went through the tunnel moments ago, so its handshake is fresh.
    let age = sample(&page, "forwarder_tunnel_handshake_age_seconds");
    assert!(
        age.is_some_and(|a| a < 180.0),
        "handshake age {age:?}\n{page}"
    );
    // The CLI reads the same numbers from the running daemon.
    let bin = forwarder_bin().display().to_string();
    let out = lab.exec(&lab.vps, &[&bin, "stats", "--json"]).unwrap();
    assert!(
        out.status.success(),
        "forwarder stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8_lossy(&out.stdout);
    let table = lab.exec(&lab.vps, &[&bin, "stats"]).unwrap();
    for host in SUBDOMAINS {
        assert!(json.contains(&format!("\"{host}\"")), "{json}");
        assert!(
            String::from_utf8_lossy(&table.stdout).contains(host),
            "{table:?}"
        );
    }
    // One "classified" and, once closed, one "ended" line per connection.
    let lines = wait_for(
        "ended events in the connection log",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&conn_log).ok()?;
            let ended = text
                .lines()
                .filter(|l| l.contains("\"event\":\"ended\""))
                .count();
            (ended == requests).then_some(text)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            std::fs::read_to_string(&conn_log).unwrap_or_default()
        )
    });
    let classified = lines
        .lines()
        .filter(|l| l.contains("\"event\":\"classified\""))
        .count();
    assert_eq!(classified, requests, "{lines}");
    for l in lines.lines() {
        assert!(l.contains("\"client\":\"203.0.113.2\""), "{l}");
        assert!(
            SUBDOMAINS
                .iter()
                .any(|h| l.contains(&format!("\"host\":\"{h}\""))),
            "{l}"
        );
    }
}
