use super::*;

fn group(gid: u32, name: &str) -> Option<Group> {
    Some(Group {
        gid,
        name: name.to_owned(),
    })
}

#[test]
fn root_the_change_group_and_the_admin_group_get_what_is_theirs() {
    let none = Access::default();
    assert_eq!(none.right(0, 0, &[]), Some(Right::Change));
    assert_eq!(none.right(1000, 1000, &[27]), None);
    let readers = Access {
        admin: group(27, "fwd"),
        change: None,
    };
    assert_eq!(readers.right(1000, 27, &[]), Some(Right::Read));
    assert_eq!(readers.right(1000, 1000, &[4, 27]), Some(Right::Read));
    assert_eq!(readers.right(1000, 1000, &[4]), None);
    let both = Access {
        admin: group(27, "fwd"),
        change: group(28, "fwd-admin"),
    };
    assert_eq!(both.right(1000, 1000, &[27]), Some(Right::Read));
    assert_eq!(both.right(1000, 1000, &[28]), Some(Right::Change));
    assert_eq!(both.right(1000, 28, &[27]), Some(Right::Change));
    assert_eq!(both.right(1000, 1000, &[29]), None);
    // A change group alone: its members may do everything, nobody else anything.
    let changers = Access {
        admin: None,
        change: group(28, "fwd-admin"),
    };
    assert_eq!(changers.right(1000, 1000, &[28]), Some(Right::Change));
    assert_eq!(changers.right(1000, 1000, &[27]), None);
}

#[test]
fn a_refusal_says_who_may_do_what() {
    let readers = Access {
        admin: group(27, "fwd"),
        change: None,
    };
    assert_eq!(readers.refusal(Some(Right::Read), Right::Read), None);
    assert_eq!(readers.refusal(Some(Right::Change), Right::Change), None);
    assert_eq!(
        readers.refusal(Some(Right::Read), Right::Change).unwrap(),
        "permission denied: group fwd may only read; changes need root (or a group given with --change-group)"
    );
    let both = Access {
        change: group(28, "fwd-admin"),
        ..readers
    };
    assert_eq!(
        both.refusal(Some(Right::Read), Right::Change).unwrap(),
        "permission denied: group fwd may only read; changes need root or group fwd-admin (--change-group)"
    );
    let e = both.refusal(None, Right::Read).unwrap();
    assert!(
        e.contains("control socket") && e.contains("admin group"),
        "{e}"
    );
}

#[test]
fn every_request_is_a_read_or_a_change() {
    use crate::api::control::*;
    // Every variant of `Request`, with its class: `Right::needed` must name a new one
    // (its match has no catch-all), and so must this list.
    let all = [
        (Request::Status(Status {}), Right::Read),
        (Request::Rules(Rules {}), Right::Read),
        (Request::Hosts(Hosts {}), Right::Read),
        (Request::Stop(Stop::default()), Right::Change),
        (Request::RuleAdd(RuleAdd::default()), Right::Change),
        (Request::RuleRemove(RuleRemove::default()), Right::Change),
        (Request::HostAdd(HostAdd::default()), Right::Change),
        (Request::HostRemove(HostRemove::default()), Right::Change),
        (Request::HostSet(HostSet::default()), Right::Change),
        (Request::Limits(Limits::default()), Right::Change),
        (Request::Reload(Reload {}), Right::Change),
    ];
    for (req, want) in &all {
        assert_eq!(Right::needed(req), *want, "{req:?}");
    }
    // The list is complete: serde names every variant in its "unknown variant" error.
    let e = parse(br#"{"cmd":"no-such-command"}"#)
        .unwrap_err()
        .to_string();
    let listed = e.matches('`').count() / 2 - 1;
    assert_eq!(listed, all.len(), "a request missing from this list: {e}");
}

#[test]
fn requests_are_parsed_strictly_with_the_problem_named() {
    use crate::api::control::{Request, Rules, Status};
    let err = |bytes: &[u8]| parse(bytes).unwrap_err().to_string();
    assert_eq!(
        parse(br#"{"cmd":"status"}"#).unwrap(),
        Request::Status(Status {})
    );
    assert_eq!(
        parse(b"{\"cmd\":\"rules\"}\n").unwrap(),
        Request::Rules(Rules {})
    );
    let e = err(br#"{"cmd":"reboot"}"#);
    assert!(e.contains("reboot"), "{e}");
    let e = err(br#"{"cmd":"status","extra":1}"#);
    assert!(e.contains("extra"), "{e}");
    assert!(err(b"").contains("empty"));
    assert!(err(b"\xff\xfe").contains("UTF-8"));
    let big = vec![b' '; MAX_REQUEST + 1];
    assert!(err(&big).contains("larger than"));
}
