use std::net::IpAddr;

use crate::config::home::{Home, Lan, PROXY_SCRIPT_BEGIN, PROXY_SCRIPT_END, Shape};

fn home(shape: Shape) -> Home {
    Home {
        backends: vec!["10.8.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
        tunnel_iface: "wg0".into(),
        shape,
        ports: vec![("tcp", 80), ("tcp", 443), ("udp", 443)],
        lan: (shape == Shape::Lan).then(|| Lan {
            proxy_addrs: vec!["192.168.1.20".parse().unwrap(), "fd10::20".parse().unwrap()],
            wg_addrs: vec!["192.168.1.5".parse().unwrap(), "fd10::5".parse().unwrap()],
            wg_mac: "52:54:00:AB:cd:01".into(),
            proxy_iface: "ens18".into(),
        }),
    }
}

#[test]
fn same_box_routes_the_service_addresses_before_main() {
    let out = home(Shape::Tunnel).render();
    assert!(out.contains("AllowedIPs = 0.0.0.0/0, ::/0"));
    assert!(out.contains("Table = off"));
    assert!(out.contains("ip -4 rule add from 10.8.0.2 lookup 51820 priority 32000"));
    assert!(out.contains("ip -6 rule add from fd00::2 lookup 51820 priority 32000"));
    assert!(out.contains("PostUp = ip -4 route replace 0.0.0.0/0 dev wg0 table 51820"));
    assert!(out.contains("PreDown = ip -4 rule del from 10.8.0.2 lookup 51820 priority 32000"));
}

#[test]
fn every_rule_added_is_deleted_first_and_on_the_way_down() {
    for shape in [Shape::Tunnel, Shape::Dnat, Shape::Lan] {
        let r = home(shape).recipe();
        let adds: Vec<&str> = r
            .post_up
            .iter()
            .flat_map(|l| l.split("; "))
            .filter(|c| c.contains(" rule add "))
            .collect();
        assert!(!adds.is_empty());
        for add in adds {
            let del = add.replace(" rule add ", " rule del ");
            assert!(
                r.post_up.iter().any(|l| l.starts_with(&del)),
                "{add}: not deleted before it is added"
            );
            assert!(r.pre_down.contains(&del), "{add}: not removed by PreDown");
        }
    }
}

#[test]
fn dnat_marks_connections_from_the_tunnel() {
    let r = home(Shape::Dnat).recipe();
    let nft = &r.post_up[0];
    assert!(!nft.contains("dnat"), "{nft}");
    assert!(nft.starts_with("nft 'add table inet forwarder_home; flush table"));
    assert!(nft.contains(r#"iifname "wg0" ct state new ct mark set 0x51820"#));
    assert!(nft.contains(r#"iifname != "wg0" ct mark 0x51820 meta mark set 0x51820"#));
    assert!(
        r.post_up
            .iter()
            .any(|l| l.contains("ip -4 rule add fwmark 0x51820"))
    );
    assert!(
        r.post_up
            .iter()
            .any(|l| l.contains("ip -6 rule add fwmark 0x51820"))
    );
    assert!(
        r.pre_down
            .iter()
            .any(|l| l.starts_with("nft delete table inet forwarder_home"))
    );
}

#[test]
fn one_family_only_when_one_backend() {
    let h = Home {
        backends: vec!["10.8.0.2".parse().unwrap()],
        tunnel_iface: "wg1".into(),
        shape: Shape::Dnat,
        ports: vec![("tcp", 443)],
        lan: None,
    };
    let r = h.recipe();
    assert!(r.post_up.iter().all(|l| !l.contains("ip -6")));
    assert!(r.post_up.iter().any(|l| l.contains("dev wg1 table 51820")));
}

#[test]
fn lan_dnats_the_forwarded_ports_and_the_proxy_routes_back_by_mac() {
    let h = home(Shape::Lan);
    h.validate().unwrap();
    let r = h.recipe();
    assert!(
        r.post_up
            .contains(&"sysctl -qw net.ipv4.ip_forward=1".to_owned())
    );
    let nft = r.post_up.iter().find(|l| l.starts_with("nft ")).unwrap();
    assert!(nft.contains(
        r#"to_proxy iifname "wg0" ip daddr 10.8.0.2 tcp dport { 80, 443 } dnat ip to 192.168.1.20"#
    ), "{nft}");
    assert!(
        nft.contains(
            r#"to_proxy iifname "wg0" ip daddr 10.8.0.2 udp dport { 443 } dnat ip to 192.168.1.20"#
        ),
        "{nft}"
    );
    assert!(nft.contains(r#"ip6 daddr fd00::2 tcp dport { 80, 443 } dnat ip6 to fd10::20"#));
    assert!(!nft.contains("masquerade"));
    let m = h.proxy_machine().unwrap();
    assert!(m.up[0].contains(
        r#"iifname "ens18" ether saddr 52:54:00:ab:cd:01 ct state new ct mark set 0x51820"#
    ));
    assert!(m.up.contains(
        &"ip -4 route replace 0.0.0.0/0 via 192.168.1.5 dev ens18 table 51820".to_owned()
    ));
    let text = h.render();
    let script = text
        .split_once(PROXY_SCRIPT_BEGIN)
        .and_then(|(_, rest)| rest.split_once(PROXY_SCRIPT_END))
        .map(|(script, _)| script)
        .expect("the proxy machine's script");
    assert!(script.contains("#!/bin/sh"));
    assert!(script.contains("ip -6 rule add fwmark 0x51820 lookup 51820 priority 32000"));
}

#[test]
fn lan_options_are_checked_with_the_fix_named() {
    let mut h = home(Shape::Lan);
    h.lan.as_mut().unwrap().wg_mac = "52:54:00:ab:cd".into();
    assert!(
        h.validate()
            .unwrap_err()
            .to_string()
            .contains("six hex pairs")
    );
    let mut h = home(Shape::Lan);
    h.lan.as_mut().unwrap().proxy_addrs.retain(IpAddr::is_ipv4);
    let e = h.validate().unwrap_err().to_string();
    assert!(
        e.contains("no IPv6 --proxy-addr given for the IPv6 backend fd00::2"),
        "{e}"
    );
    let mut h = home(Shape::Lan);
    h.lan.as_mut().unwrap().wg_addrs.clear();
    assert!(
        h.validate()
            .unwrap_err()
            .to_string()
            .contains("--wg-lan-addr")
    );
}
