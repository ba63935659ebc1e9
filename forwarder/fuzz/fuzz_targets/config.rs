//! Arbitrary text as the config file: parsing and validation never panic; what the
//! editor (`forwarder rules/hosts ...`) accepts it can edit, and an edit either leaves a
//! file that parses again or is refused leaving the text as it was.
#![no_main]

use std::{net::IpAddr, path::Path};

use forwarder::config::{
    Config, FileConfig, HostConfig, HostPolicy, Proto, RuleConfig, edit::ConfigDoc,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    if let Ok(file) = FileConfig::parse(path, text) {
        let addrs = |_: &str| -> Result<Vec<IpAddr>, String> {
            Ok(vec![
                "203.0.113.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ])
        };
        let _ = Config::resolve(file, None, None, Vec::new(), addrs);
    }
    let Ok(mut doc) = ConfigDoc::parse(path, text) else {
        return;
    };
    let before = doc.text();
    let edits: [&dyn Fn(&mut ConfigDoc) -> bool; 3] = [
        &|d| {
            d.add_host(&HostConfig {
                name: "fuzz.example.test".into(),
                policy: HostPolicy::Forward,
            })
            .is_ok()
        },
        &|d| d.add_rule(&RuleConfig::port(Proto::Tcp, 8443)).is_ok(),
        &|d| d.remove_rule(Proto::Tcp, 443, None).is_ok(),
    ];
    for edit in edits {
        let mut d = ConfigDoc::parse(path, &before).expect("parsed once already");
        if edit(&mut d) {
            let after = d.text();
            assert!(
                FileConfig::parse(path, &after).is_ok(),
                "an accepted edit left a file that does not parse:\n{after}"
            );
        } else {
            assert_eq!(d.text(), before, "a refused edit changed the text");
        }
    }
    let _ = doc.add_host(&HostConfig {
        name: "*.fuzz.example.test".into(),
        policy: HostPolicy::Drop,
    });
});
