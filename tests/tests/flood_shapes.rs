//! Spoofed floods of every shape against the forwarder in its default configuration, at
//! 5000 packets per second for 4 s each, while real clients open a new HTTPS connection
//! every 100 ms and a download runs (`compare::flood_shapes`): what the edge must do
//! with each (issue 20, "The edge admits only real connections").
//!
//! * TCP packets without a flow that are not SYNs, and packets from sources no internet
//!   packet may carry (the tunnel's, the backend's and the VPS's own addresses, loopback,
//!   multicast, unspecified, link-local), reach nothing: not one packet from a spoofed
//!   source at home's tunnel interface, no connection created, nothing sent back to the
//!   spoofed sources.
//! * Spoofed UDP pairs (a datagram home answers, then another) confirm no connection.
//! * ACKs planting the health probes' reverse keys do not take the backend down.
//! * SYN floods: repeating each SYN or sending a RST first does not get more through the
//!   SYN flood guard than random SYNs do. That they send nothing home at all needs the
//!   edge handshake (SYN cookies): those tests are `#[ignore]`d until it lands.
//! * Real requests succeed (at least 99 %) and the download arrives byte for byte
//!   through every flood.
//!
//! One test per shape. They share one lab, built by the first and taken down when the
//! test binary exits (also after failures), and run one at a time: each flood takes a
//! core. About 2.5 minutes in all.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Mutex, PoisonError, TryLockError},
};

use integration_tests::{
    compare::flood_shapes::{FloodLab, FloodOptions, ShapeRow, table},
    missing_prerequisites,
    traffic::flood_shapes::Shape,
};

struct Shared {
    lab: FloodLab,
    rows: HashMap<Shape, ShapeRow>,
}

static LAB: Mutex<Option<Shared>> = Mutex::new(None);

/// Takes the shared lab down when the test binary exits.
extern "C" fn teardown() {
    let mut guard = match LAB.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        // A test thread still holds it: the process is going down regardless.
        Err(TryLockError::WouldBlock) => return,
    };
    drop(guard.take());
}

/// The figures of `shape`, measured once in the shared lab (the ignored tests of a SYN
/// shape read those of its guard test when both run).
fn measured(shape: Shape) -> ShapeRow {
    let mut guard = LAB.lock().unwrap_or_else(PoisonError::into_inner);
    let shared = guard.get_or_insert_with(|| {
        if let Some(why) = missing_prerequisites() {
            panic!("cannot build the lab: {why}");
        }
        let lab =
            FloodLab::new(Path::new(env!("CARGO_BIN_EXE_quic-peer"))).expect("building the lab");
        // SAFETY: registers a function that takes and returns nothing; it runs once, at
        // exit, after every test.
        let r = unsafe { libc::atexit(teardown) };
        assert_eq!(r, 0, "registering the lab's teardown");
        Shared {
            lab,
            rows: HashMap::new(),
        }
    });
    let o = FloodOptions::default();
    let baseline = shared.lab.baseline(&o).expect("the idle baseline").clone();
    let row = match shared.rows.get(&shape) {
        Some(r) => r.clone(),
        None => {
            let r = shared
                .lab
                .measure(shape, &o)
                .unwrap_or_else(|e| panic!("measuring {}: {e:#}", shape.name()));
            shared.rows.insert(shape, r.clone());
            r
        }
    };
    eprintln!("{}", table(Some(&baseline), std::slice::from_ref(&row)));
    if let Some(f) = row.clients.failures.first() {
        eprintln!(
            "{} real requests failed, e.g. {f}",
            row.clients.failures.len()
        );
    }
    // A flood the machine could not send at its rate measures nothing (the tests of the
    // other engineers' suites share the cores): say so rather than blame the forwarder.
    let asked = f64::from(o.rate);
    assert!(
        row.sent.pps() >= 0.9 * asked,
        "{}: the flood reached only {:.0} of {asked} packets/s: the machine is too busy \
         (load {}) to measure",
        shape.name(),
        row.sent.pps(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    row
}

fn name(r: &ShapeRow) -> &'static str {
    r.shape.map_or("idle", |s| s.name())
}

/// Real requests at least 99 % successful, the download byte for byte.
fn real_clients_unharmed(r: &ShapeRow) {
    assert!(
        r.clients.success_pct() >= 99.0,
        "{}: {} of {} real requests succeeded; failures: {:?}",
        name(r),
        r.clients.ok_ms.len(),
        r.clients.requests,
        r.clients.failures
    );
    if let Err(e) = &r.download {
        panic!("{}: the download through the flood: {e}", name(r));
    }
}

/// Nothing from the spoofed sources at home, no connection made for them, nothing sent
/// back to them.
fn reaches_nothing(r: &ShapeRow) {
    assert_eq!(
        r.reached_home,
        0,
        "{}: packets from spoofed sources reached home's tunnel interface ({} sent)",
        name(r),
        r.sent.packets
    );
    assert_eq!(
        r.spoofed_flows_created(),
        0,
        "{}: the data path created connections for spoofed sources",
        name(r)
    );
    assert_eq!(
        r.reflected,
        0,
        "{}: the VPS sent packets to spoofed sources",
        name(r)
    );
}

fn tcp_without_syn(shape: Shape) {
    let r = measured(shape);
    reaches_nothing(&r);
    real_clients_unharmed(&r);
}

fn bogon_source(shape: Shape) {
    let r = measured(shape);
    reaches_nothing(&r);
    assert_eq!(r.spoofed_flows_confirmed(), 0, "{}", name(&r));
    real_clients_unharmed(&r);
}

/// The SYN flood guard trips within a second of a flood at this rate and lets a random
/// spoofed SYN through only while it has not; a shape that does not defeat it gets no
/// more through (a tenth of the flood, from a few percent measured for random SYNs).
fn syn_guard_holds(shape: Shape) {
    let r = measured(shape);
    let bound = r.sent.packets / 10;
    assert!(
        r.reached_home <= bound,
        "{}: {} of {} spoofed packets reached home (the guard lets through at most {bound})",
        name(&r),
        r.reached_home,
        r.sent.packets
    );
    assert!(
        r.spoofed_flows_created() <= bound,
        "{}: {} connections created for spoofed sources (at most {bound})",
        name(&r),
        r.spoofed_flows_created()
    );
    real_clients_unharmed(&r);
}

/// With the edge handshake, a spoofed SYN of any shape sends nothing home and creates
/// nothing (the VPS answers it itself), and real clients connect at once: no request
/// waits for a SYN retransmission (1 s).
fn syn_sends_nothing_home(shape: Shape) {
    let r = measured(shape);
    assert_eq!(r.reached_home, 0, "{}: reached home", name(&r));
    assert_eq!(r.spoofed_flows_created(), 0, "{}: connections", name(&r));
    real_clients_unharmed(&r);
    let p99 = r.clients.percentile_ms(99.0).unwrap_or(f64::INFINITY);
    assert!(p99 < 1000.0, "{}: real requests' p99 {p99:.0} ms", name(&r));
}

#[test]
fn syn_random_is_held_by_the_guard() {
    syn_guard_holds(Shape::Syn);
}

#[test]
fn syn_twice_does_not_defeat_the_guard() {
    syn_guard_holds(Shape::SynTwice);
}

#[test]
fn rst_then_syn_does_not_defeat_the_guard() {
    syn_guard_holds(Shape::RstThenSyn);
}

#[test]
fn syn6_from_one_64_is_held_by_the_guard() {
    syn_guard_holds(Shape::Syn6Prefix);
}

#[test]
#[ignore = "needs the edge handshake (SYN cookies), issue 20"]
fn syn_random_sends_nothing_home() {
    syn_sends_nothing_home(Shape::Syn);
}

#[test]
#[ignore = "needs the edge handshake (SYN cookies), issue 20"]
fn syn_twice_sends_nothing_home() {
    syn_sends_nothing_home(Shape::SynTwice);
}

#[test]
#[ignore = "needs the edge handshake (SYN cookies), issue 20"]
fn rst_then_syn_sends_nothing_home() {
    syn_sends_nothing_home(Shape::RstThenSyn);
}

#[test]
#[ignore = "needs the edge handshake (SYN cookies), issue 20"]
fn syn6_from_one_64_sends_nothing_home() {
    syn_sends_nothing_home(Shape::Syn6Prefix);
}

#[test]
fn lone_ack_reaches_nothing() {
    tcp_without_syn(Shape::Ack);
}

#[test]
fn lone_rst_reaches_nothing() {
    tcp_without_syn(Shape::Rst);
}

#[test]
fn lone_fin_reaches_nothing() {
    tcp_without_syn(Shape::Fin);
}

#[test]
fn data_segment_reaches_nothing() {
    tcp_without_syn(Shape::Data);
}

#[test]
fn ack6_from_one_64_reaches_nothing() {
    tcp_without_syn(Shape::Ack6Prefix);
}

#[test]
fn udp_pairs_confirm_no_connection() {
    let r = measured(Shape::UdpPair);
    assert_eq!(
        r.spoofed_flows_confirmed(),
        0,
        "udp-pair: spoofed pairs confirmed connections ({} pairs sent)",
        r.sent.packets / 2
    );
    real_clients_unharmed(&r);
}

#[test]
fn source_vps_tunnel_address_is_dropped() {
    bogon_source(Shape::SrcVpsTunnel);
}

#[test]
fn source_home_tunnel_and_backend_address_is_dropped() {
    bogon_source(Shape::SrcHomeTunnel);
}

#[test]
fn source_vps_public_address_is_dropped() {
    bogon_source(Shape::SrcVpsPublic);
}

#[test]
fn source_loopback_is_dropped() {
    bogon_source(Shape::SrcLoopback);
}

#[test]
fn source_multicast_is_dropped() {
    bogon_source(Shape::SrcMulticast);
}

#[test]
fn source_unspecified_is_dropped() {
    bogon_source(Shape::SrcUnspecified);
}

#[test]
fn source_link_local_is_dropped() {
    bogon_source(Shape::SrcLinkLocal);
}

#[test]
fn source_ipv6_loopback_is_dropped() {
    bogon_source(Shape::Src6Loopback);
}

#[test]
fn source_ipv6_link_local_is_dropped() {
    bogon_source(Shape::Src6LinkLocal);
}

/// ACKs from the VPS's tunnel address over its whole local port range (each port once)
/// would plant the reverse keys of the daemon's health probes to home: they reach
/// nothing, and the backend stays up during the sweep and for as long after it as the
/// daemon takes to call a backend down.
#[test]
fn probe_acks_leave_the_backend_up() {
    let r = measured(Shape::ProbeAcks);
    reaches_nothing(&r);
    real_clients_unharmed(&r);
    assert_eq!(
        r.backend_up_min,
        Some(1.0),
        "probe-acks: the daemon called home's port 443 down"
    );
}
