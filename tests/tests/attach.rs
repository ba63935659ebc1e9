//! XDP attach modes: an interface without native XDP makes the daemon fall back to generic
//! XDP and say so; forwarding works the same in generic and tc-only mode.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use integration_tests::{
    CLIENT_V4, Lab, LabOptions, SUBDOMAINS, VPS_V4, forwarder_bin, missing_prerequisites, run,
    wait_for,
};

/// A namespace of this test with a macvlan on a veth (macvlan has no native XDP) as the
/// public interface and a TUN device as the tunnel; removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("fwd-attach-{tag}-{}", std::process::id());
        let ns = Netns(name.clone());
        let ip = |args: &[&str]| {
            run(Command::new("ip").args(["-n", &name]).args(args)).expect("setting up");
        };
        run(Command::new("ip").args(["netns", "add", &name])).expect("netns add");
        ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        ip(&[
            "link", "add", "m0", "link", "v0", "type", "macvlan", "mode", "bridge",
        ]);
        ip(&["addr", "add", "203.0.113.50/24", "dev", "m0"]);
        ip(&["tuntap", "add", "mode", "tun", "dev", "t0"]);
        ip(&["addr", "add", "10.9.0.1/24", "dev", "t0"]);
        for dev in ["lo", "v0", "v1", "m0", "t0"] {
            ip(&["link", "set", dev, "up"]);
        }
        ns
    }

    fn forwarder(&self, mode: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .arg(forwarder_bin())
            .args(["run", "--public-iface", "m0", "--tunnel", "t0"])
            .args(["--backend", "10.9.0.2", "--xdp-mode", mode])
            .arg("--control")
            .arg(std::env::temp_dir().join(format!("{}-{mode}.sock", self.0)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the forwarder")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Stops `child` (SIGTERM, by PID) and returns what it printed.
fn stop(child: Child) -> String {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().expect("waiting for the forwarder");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_interface_without_native_xdp_gets_generic_xdp_and_says_so() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("needs root (namespaces, BPF)");
    }
    let ns = Netns::new("auto");
    let child = ns.forwarder("auto");
    let metrics = wait_for("the metrics endpoint", Duration::from_secs(20), || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0, "curl", "-sS", "--max-time", "1"])
            .arg("http://127.0.0.1:9724/metrics")
            .output()
            .ok()?;
        let page = String::from_utf8_lossy(&out.stdout).into_owned();
        page.contains("forwarder_xdp_attach_mode").then_some(page)
    });
    let log = stop(child);
    let metrics = metrics.unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    assert!(
        metrics.contains("forwarder_xdp_attach_mode{mode=\"xdp-generic\"} 1"),
        "{metrics}"
    );
    assert!(log.contains("m0 refused driver-mode XDP"), "{log}");
    assert!(log.contains("mode=\"xdp-generic\""), "{log}");

    // Asking for driver mode explicitly on such an interface is an error that says why.
    let ns = Netns::new("drv");
    let out = ns
        .forwarder("driver")
        .wait_with_output()
        .expect("running the forwarder");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("attaching XDP to m0"), "{text}");
}

#[test]
fn forwarding_works_in_generic_xdp_and_in_tc_only_mode() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    for (mode, shown) in [("generic", "xdp-generic"), ("off", "tc-only")] {
        let mut lab = Lab::new(&LabOptions::default()).expect("building the lab");
        lab.start_forwarder(&["--xdp-mode", mode])
            .expect("starting the forwarder");
        assert!(
            lab.forwarder_output()
                .contains(&format!("mode=\"{shown}\"")),
            "{}",
            lab.forwarder_output()
        );
        for scheme in ["http", "https"] {
            let (code, body) = lab
                .curl(scheme, SUBDOMAINS[1], "/", VPS_V4, &[])
                .unwrap_or_else(|e| panic!("{mode} {scheme}: {e:#}"));
            assert_eq!(code, 200, "{mode} {scheme}: {body}");
            // nginx at home saw the client's own address.
            assert!(body.contains(CLIENT_V4), "{mode} {scheme}: {body}");
        }
    }
}
