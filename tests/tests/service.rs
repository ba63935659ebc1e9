//! The systemd unit's capability set (`deploy/forwarder.service`) is what the daemon needs:
//! with exactly those capabilities it attaches, forwards, reads host names and hands a
//! `local` host's connections to the VPS's own server; without any one of them it does not
//! get that far. Home's side of a connection taken over is reset with that set too.

use std::time::Duration;

use integration_tests::{
    CLIENT_V4, Lab, LabOptions, SUBDOMAINS, VPS_V4, subdomain_hosts, wait_for,
};

/// The lab's hosts, the second one with policy `local`.
fn lab() -> Lab {
    let hosts = subdomain_hosts().replace(
        &format!("name = \"{}\"\n", SUBDOMAINS[1]),
        &format!("name = \"{}\"\npolicy = \"local\"\n", SUBDOMAINS[1]),
    );
    Lab::new(&LabOptions {
        extra_config: hosts,
        ..LabOptions::default()
    })
    .expect("building the lab")
}

/// Whether a request for the `local` host is answered by the VPS's own server.
fn served_locally(lab: &Lab) -> bool {
    lab.curl("https", SUBDOMAINS[1], "/", VPS_V4, &["--max-time", "3"])
        .is_ok_and(|(code, body)| code == 200 && body.starts_with("local "))
}

/// `CAP_BPF CAP_NET_ADMIN ...` from the unit's `CapabilityBoundingSet=` line, as setpriv
/// spells them (`bpf`, `net_admin`, ...).
fn unit_capabilities() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/forwarder.service");
    let unit = std::fs::read_to_string(path).expect("reading the unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    line.split_whitespace()
        .map(|c| {
            c.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{c}: not a capability"))
                .to_ascii_lowercase()
        })
        .collect()
}

/// setpriv limiting the daemon (still uid 0, as the unit runs it) to `caps`.
fn limited_to(caps: &[String]) -> Vec<String> {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all{set}"),
        format!("--inh-caps=-all{set}"),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() {
    let caps = unit_capabilities();
    assert!(!caps.is_empty());
    let mut lab = lab();
    let _local = lab
        .local_web_server()
        .expect("starting the local web server");
    let wrapper = limited_to(&caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    lab.start_forwarder_under(&wrapper, &[])
        .expect("starting the forwarder with the unit's capabilities");
    let log = lab.forwarder_output();
    assert!(
        log.contains("readers=true"),
        "the name reader did not load:\n{log}"
    );
    let (code, body) = lab
        .curl("https", SUBDOMAINS[0], "/", VPS_V4, &[])
        .expect("a request through the tunnel");
    assert_eq!(code, 200, "{body}");
    let counted = wait_for("the connection counted", Duration::from_secs(10), || {
        let page = lab.metrics_page()?;
        let want = format!(
            "forwarder_host_connections_total{{host=\"{}\",protocol=\"tcp\"}} 1",
            SUBDOMAINS[0]
        );
        page.contains(&want).then_some(())
    });
    assert!(counted.is_ok(), "{counted:?}\n{}", lab.forwarder_output());
    assert!(served_locally(&lab), "{}", lab.forwarder_output());
    // Home's side of the connection taken over is reset with these capabilities too: none
    // lingers there half-open.
    let home = lab.home.clone();
    let reset = wait_for("home's connection reset", Duration::from_secs(5), || {
        let out = lab
            .exec(&home, &["ss", "-Htn", "state", "established"])
            .ok()?;
        (!String::from_utf8_lossy(&out.stdout).contains(CLIENT_V4)).then_some(())
    });
    let log = lab.forwarder_output();
    assert!(
        reset.is_ok() && !log.contains("resetting the backend"),
        "{reset:?}: {:?}\n{log}",
        lab.exec(&home, &["ss", "-Htn", "state", "established"])
    );
    lab.stop_forwarder().expect("stopping the forwarder");

    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let wrapper = limited_to(&fewer);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let started = lab.start_forwarder_under(&wrapper, &[]);
        let mut log = lab.forwarder_output();
        eprintln!(
            "without CAP_{}: {}",
            missing.to_ascii_uppercase(),
            match &started {
                Ok(()) => "started".to_owned(),
                Err(e) => format!("{e:#}")
                    .lines()
                    .find(|l| l.contains("Error") || l.contains("rror:") || l.contains("failed"))
                    .unwrap_or("")
                    .to_owned(),
            }
        );
        // Either it does not start, or it starts without the name reader, or it cannot
        // hand connections to the VPS's server.
        let complete = started.is_ok() && log.contains("readers=true") && served_locally(&lab);
        if started.is_ok() {
            log = lab.forwarder_output();
            let _ = lab.stop_forwarder();
        }
        assert!(
            !complete,
            "without CAP_{} everything still works: the unit need not grant it\n{log}",
            missing.to_ascii_uppercase()
        );
    }
}
