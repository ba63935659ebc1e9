//! The daemon's QUIC decoder on Initials a real client sent: quinn (rustls) connects to a
//! plain UDP socket on loopback that captures its datagrams and never answers. With a
//! ClientHello padded past one packet (as a post-quantum key share does) the client sends
//! it in two or more Initials; the decoder must reassemble them and read the SNI.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use forwarder::daemon::quic::{Decision, Pending, QuicStats};
use forwarder_common::{FAMILY_V4, FlowKey, PROTO_UDP, QUIC_V_NAME, quic::is_initial};
use integration_tests::{quic_peer::client_config, self_signed};

/// The datagrams a quinn client sends to `name` at a socket that never answers, for
/// `wait`.
fn capture(name: &str, big_hello: bool, wait: Duration) -> Vec<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!(
        "fwd-quic-capture-{}-{big_hello}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, _) = self_signed(&dir, &[name]).unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let addr = sink.local_addr().unwrap();
    let config = client_config(&cert, big_hello).unwrap();
    let name = name.to_owned();
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            endpoint.set_default_client_config(config);
            let connecting = endpoint.connect(addr, &name).unwrap();
            // Nobody answers: the handshake only ends by this timeout.
            let _ = tokio::time::timeout(wait, connecting).await;
        });
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok(n) = sink.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    client.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    got
}

fn key() -> FlowKey {
    FlowKey {
        src: [0x7f00_0001, 0, 0, 0],
        dst: [0x7f00_0001, 0, 0, 0],
        sport: 40000u16.to_be(),
        dport: 443u16.to_be(),
        proto: PROTO_UDP,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

#[test]
fn a_real_clients_initials_give_its_sni_one_packet_or_several() {
    for big in [false, true] {
        let name = if big {
            "pq.example.org"
        } else {
            "app.example.org"
        };
        let datagrams = capture(name, big, Duration::from_millis(1500));
        assert!(!datagrams.is_empty(), "the client sent nothing");
        // What the kernel checks: every one is an Initial it would hand over.
        for d in &datagrams {
            let v = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
            assert!(is_initial(d[0], v) && d.len() >= 1200, "{} bytes", d.len());
        }
        // The first flight: the ClientHello, in one Initial or (padded) several. The
        // decoder gets them in order, as the kernel copies them.
        let mut pending = Pending::default();
        let stats = QuicStats::default();
        let mut verdict = None;
        let mut used = 0;
        for d in &datagrams {
            used += 1;
            if let Decision::Verdict(v) =
                pending.feed(&key(), d, Instant::now(), &stats, |_| Some(7))
            {
                verdict = Some(v);
                break;
            }
        }
        let v = verdict.expect("no verdict from the captured Initials");
        assert_eq!((v.code, v.host_id), (QUIC_V_NAME, 7), "{name}");
        if big {
            assert!(used >= 2, "the padded ClientHello fitted one Initial");
        } else {
            assert_eq!(used, 1);
        }
        eprintln!(
            "{name}: {} datagrams captured, the SNI read from the first {used}",
            datagrams.len()
        );
        // Retransmissions of the same Initials give the same verdict.
        let mut again = Pending::default();
        let last = datagrams[..used]
            .iter()
            .rev()
            .map(|d| again.feed(&key(), d, Instant::now(), &stats, |_| Some(7)))
            .last();
        assert!(matches!(last, Some(Decision::Verdict(_))), "{last:?}");
    }
}
