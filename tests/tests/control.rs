//! The control socket as an operator uses it: `forwarder status` and `forwarder rules list`
//! from root; a non-root caller refused; malformed, oversized and unknown requests answered
//! with an error that names the problem, and nothing else changes.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use integration_tests::{Lab, LabOptions, forwarder_bin, missing_prerequisites};

fn cli(lab: &Lab, args: &[&str]) -> std::process::Output {
    let bin = forwarder_bin().display().to_string();
    let control = lab.control_path().display().to_string();
    let mut all = vec![bin.as_str()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--control", &control]);
    lab.exec(&lab.vps, &all).expect("running the CLI")
}

/// Sends raw bytes to the control socket; returns the answer.
fn raw(lab: &Lab, bytes: &[u8]) -> String {
    let mut child = Command::new("socat")
        .arg("-t5")
        .arg("-")
        .arg(format!("UNIX-CONNECT:{}", lab.control_path().display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("socat");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_and_rules_for_root_errors_for_everything_else() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(&LabOptions {
        extra_config: "[[rule]]\nport = 80\nfallback = \"local\"\n\n[[rule]]\nport = 443\n".into(),
        ..LabOptions::default()
    })
    .expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");

    let out = cli(&lab, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("attach mode   xdp-driver"), "{text}");
    assert!(text.contains("backend       10.8.0.2:80 up"), "{text}");
    assert!(text.contains("fallback      none active"), "{text}");
    let out = cli(&lab, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(v["attach_mode"], "xdp-driver");
    assert_eq!(v["tunnel"]["up"], true);

    let out = cli(&lab, &["rules", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.contains("tcp 203.0.113.1:80 -> 10.8.0.2:80 (local fallback)"),
        "{text}"
    );
    let out = cli(&lab, &["rules", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rules JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(4), "{v}");

    // Not root: refused (and told why).
    let bin = forwarder_bin().display().to_string();
    let control = lab.control_path().display().to_string();
    let out = lab
        .exec(
            &lab.vps,
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                &bin,
                "status",
                "--control",
                &control,
            ],
        )
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a non-root caller got an answer");
    assert!(
        err.contains("control socket") && err.contains("admin group"),
        "{err}"
    );

    // Bad requests: an answer naming the problem.
    for (bytes, want) in [
        (b"garbage".to_vec(), "bad request"),
        (br#"{"cmd":"reboot"}"#.to_vec(), "reboot"),
        (
            br#"{"cmd":"status","all":true}"#.to_vec(),
            "unknown field `all`",
        ),
        (vec![b' '; 70_000], "larger than 65536 bytes"),
        (Vec::new(), "empty request"),
    ] {
        let answer = raw(&lab, &bytes);
        let v: serde_json::Value =
            serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
        assert_eq!(v["ok"], false, "{answer}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(want)),
            "{want}: {answer}"
        );
    }
    // And the daemon is as it was.
    let out = cli(&lab, &["rules", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    let log = lab.stop_forwarder().unwrap();
    assert!(!lab.control_path().exists(), "socket left behind\n{log}");
}

/// The CLI run as an unprivileged user (nobody) with the supplementary `groups`.
fn cli_as(lab: &Lab, groups: &str, args: &[&str]) -> std::process::Output {
    let bin = forwarder_bin().display().to_string();
    let control = lab.control_path().display().to_string();
    let groups = format!("--groups={groups}");
    let mut all = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        &groups,
        bin.as_str(),
    ];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--control", &control]);
    lab.exec(&lab.vps, &all).expect("running the CLI")
}

#[test]
fn the_admin_group_reads_and_only_the_change_group_changes() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    const ADMIN: &str = "4242";
    const CHANGE: &str = "4343";
    let mut lab = Lab::new(&LabOptions::default()).expect("building the lab");
    // As systemd's RuntimeDirectory= with RuntimeDirectoryMode=0750 leaves the socket's
    // directory: root:root, 0750, named in $RUNTIME_DIRECTORY.
    std::os::unix::fs::chown(&lab.dir, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&lab.dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let runtime = format!("RUNTIME_DIRECTORY={}", lab.dir.display());
    lab.start_forwarder_under(
        &["env", &runtime],
        &["--admin-group", ADMIN, "--change-group", CHANGE],
    )
    .expect("starting the forwarder");
    let dir = std::fs::metadata(&lab.dir).unwrap();
    assert_eq!(
        (dir.gid(), dir.mode() & 0o777),
        (4242, 0o750),
        "the runtime directory"
    );
    let sock = std::fs::metadata(lab.control_path()).unwrap();
    assert_eq!(
        (sock.gid(), sock.mode() & 0o777),
        (4242, 0o660),
        "the socket"
    );

    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The admin group reads...
    let text = ok(&cli_as(&lab, ADMIN, &["status"]));
    assert!(text.contains("attach mode"), "{text}");
    ok(&cli_as(&lab, ADMIN, &["rules", "list"]));
    ok(&cli_as(&lab, ADMIN, &["hosts", "list"]));
    // ...and changes nothing, told why.
    for change in [
        &["hosts", "add", "new.example.test"][..],
        &["rules", "add", "--port", "8443"],
        &["reload"],
        &["stop"],
    ] {
        let out = cli_as(&lab, ADMIN, change);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{change:?} from the admin group: {err}"
        );
        assert!(
            err.contains("permission denied: group 4242 may only read")
                && err.contains("group 4343 (--change-group)"),
            "{change:?}: {err}"
        );
    }
    let hosts = ok(&cli_as(&lab, ADMIN, &["hosts", "list"]));
    assert!(!hosts.contains("new.example.test"), "{hosts}");
    // The change group, not a member of the admin group (it reaches the socket by an ACL
    // entry), changes.
    ok(&cli_as(&lab, CHANGE, &["hosts", "add", "new.example.test"]));
    let hosts = ok(&cli_as(&lab, CHANGE, &["hosts", "list"]));
    assert!(hosts.contains("new.example.test"), "{hosts}");
    // Anyone else: nothing.
    let out = cli_as(&lab, "4444", &["status"]);
    assert!(!out.status.success(), "{out:?}");
    lab.stop_forwarder().expect("stopping the forwarder");
}
