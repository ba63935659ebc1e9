use forwarder_common::{
    DIR_TO_BACKEND, DIR_TO_CLIENT, FlowKey, FlowValue, addr_words, host::HostPattern,
};

use super::*;
use crate::model::flow::EndReason;

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn labels() -> HostLabels {
    HostLabels::new(&[HostPattern::parse("app.example.com").unwrap()])
}

#[test]
fn token_bucket_allows_bursts_then_the_rate() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(10, 5, t0);
    assert_eq!((0..8).filter(|_| b.take(t0)).count(), 5);
    // 0.5 s later: 5 more tokens.
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!((0..8).filter(|_| b.take(t1)).count(), 5);
    // A long pause saves up at most the burst.
    let t2 = t1 + Duration::from_secs(100);
    assert_eq!((0..100).filter(|_| b.take(t2)).count(), 5);
    // Time going backwards (never with Instant, but) gives nothing.
    assert!(!b.take(t0));
    let mut unlimited = TokenBucket::new(0, 1, t0);
    assert!((0..10_000).all(|_| unlimited.take(t0)));
}

#[test]
fn timestamps_are_rfc3339_utc() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(rfc3339_ms(1_779_260_889_007), "2026-05-20T07:08:09.007Z");
    assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    let c = WallClock::with_offset(1_779_260_889_000_000_000 - 5_000_000_000);
    assert_eq!(
        rfc3339_ms(c.unix_ms(5_007_000_000)),
        "2026-05-20T07:08:09.007Z"
    );
}

fn event(kind: u32, reason: u32, host_id: u32) -> ConnEvent {
    let (client_addr, family) = addr_words("2001:db8::9".parse().unwrap());
    ConnEvent {
        kind,
        host_id,
        client_addr,
        client_port: 51000u16.to_be(),
        family,
        proto: PROTO_TCP,
        reason,
        packets_to_backend: 5,
        bytes_to_backend: 600,
        packets_to_client: 4,
        bytes_to_client: 5000,
        first_ns: 1_000_000_000,
        last_ns: 3_500_000_000,
        ..Default::default()
    }
}

#[test]
fn kernel_events_become_json_lines() {
    let clock = WallClock::with_offset(1_779_260_889_000_000_000);
    let ev = event(EVENT_ENDED, END_FIN, 2);
    let mut bytes = [0u8; 96];
    // SAFETY: test: copy the event's bytes as the ring buffer would hold them.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&raw const ev).cast::<u8>(),
            bytes.as_mut_ptr(),
            size_of::<ConnEvent>(),
        );
    }
    let parsed = parse_event(&bytes).unwrap();
    assert_eq!(parsed, ev);
    assert!(parse_event(&bytes[..87]).is_none());
    let rec = ConnRecord::from_event(&parsed, &labels(), &clock).unwrap();
    let line = serde_json::to_string(&rec).unwrap();
    assert_eq!(
        line,
        r#"{"ts":"2026-05-20T07:08:12.500Z","event":"ended","client":"2001:db8::9","client_port":51000,"proto":"tcp","protocol":"tcp","host":"app.example.com","verdict":"forwarded","packets_to_backend":5,"bytes_to_backend":600,"packets_to_client":4,"bytes_to_client":5000,"duration_ms":2500,"reason":"fin"}"#
    );
    let rec = ConnRecord::from_event(&event(EVENT_CLASSIFIED, 0, 77), &labels(), &clock).unwrap();
    let line = serde_json::to_string(&rec).unwrap();
    assert!(line.contains(r#""event":"classified""#), "{line}");
    assert!(line.contains(r#""host":"other""#), "{line}");
    assert!(!line.contains("reason"), "{line}");
    assert!(ConnRecord::from_event(&event(9, 0, 0), &labels(), &clock).is_none());
}

#[test]
fn expired_flows_become_ended_lines() {
    let (client, family) = addr_words("203.0.113.9".parse().unwrap());
    let (public, _) = addr_words("203.0.113.1".parse().unwrap());
    let fk = FlowKey {
        src: client,
        dst: public,
        sport: 40000u16.to_be(),
        dport: 443u16.to_be(),
        proto: PROTO_UDP,
        family,
        _pad: [0; 2],
    };
    let fv = FlowValue {
        direction: DIR_TO_BACKEND,
        host_id: 2,
        packets: 3,
        bytes: 100,
        first_ns: 2_000_000_000,
        last_ns: 4_000_000_000,
        ..Default::default()
    };
    let rv = FlowValue {
        direction: DIR_TO_CLIENT,
        host_id: 2,
        packets: 1,
        bytes: 50,
        first_ns: 2_500_000_000,
        last_ns: 5_000_000_000,
        ..Default::default()
    };
    let e = Expired {
        fwd: Some((fk, fv)),
        rev: Some((FlowKey::default(), rv)),
        reason: EndReason::Idle,
        report: true,
    };
    let clock = WallClock::with_offset(0);
    let rec = ConnRecord::from_expired(&e, &labels(), &clock, 70_000_000_000).unwrap();
    assert_eq!(rec.ts, "1970-01-01T00:01:10.000Z");
    assert_eq!(rec.client.to_string(), "203.0.113.9");
    assert_eq!(
        (rec.client_port, rec.proto, rec.protocol),
        (40000, "udp", "quic")
    );
    assert_eq!(rec.host, "app.example.com");
    assert_eq!((rec.packets_to_backend, rec.bytes_to_backend), (3, 100));
    assert_eq!((rec.packets_to_client, rec.bytes_to_client), (1, 50));
    assert_eq!(rec.duration_ms, 3000);
    assert_eq!(rec.reason, Some("idle"));
}

#[test]
fn the_rate_limit_counts_suppressed_lines() {
    let sink = Sink::default();
    let log = ConnLog::with_writer(Box::new(sink.clone()), 10, 3);
    let clock = WallClock::with_offset(0);
    let rec = ConnRecord::from_event(&event(EVENT_CLASSIFIED, 0, 0), &labels(), &clock).unwrap();
    let t0 = Instant::now();
    for _ in 0..5 {
        log.write_at(&rec, t0);
    }
    log.write_at(&rec, t0 + Duration::from_millis(100));
    let c = log.counters();
    assert_eq!(c.lines.load(Ordering::Relaxed), 4);
    assert_eq!(c.suppressed.load(Ordering::Relaxed), 2);
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.lines().all(|l| l.starts_with("{\"ts\":")));
    let off = ConnLog::disabled();
    off.write(&rec);
    assert_eq!(off.counters().lines.load(Ordering::Relaxed), 0);
    assert!(!off.is_enabled());
}

#[test]
fn targets() {
    assert_eq!("-".parse::<ConnLogTarget>(), Ok(ConnLogTarget::Stdout));
    assert_eq!(
        "/var/log/f.jsonl".parse::<ConnLogTarget>(),
        Ok(ConnLogTarget::File("/var/log/f.jsonl".into()))
    );
    assert!("".parse::<ConnLogTarget>().is_err());
}

#[test]
fn the_log_file_is_0640_and_never_opened_through_a_symlink() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conn.log");
    let log = ConnLog::open(&ConnLogTarget::File(path.clone()), 0).unwrap();
    drop(log);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // A file made world-readable loses that.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    drop(ConnLog::open(&ConnLogTarget::File(path.clone()), 0).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // A symlink at the path, to an existing file or to none: refused, the target untouched.
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, b"").unwrap();
    let link = dir.path().join("link.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = ConnLog::open(&ConnLogTarget::File(link.clone()), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("symbolic link") && e.contains("link.log"), "{e}");
    let dangling = dir.path().join("dangling.log");
    std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
    assert!(ConnLog::open(&ConnLogTarget::File(dangling), 0).is_err());
    assert!(
        !dir.path().join("nothing").exists(),
        "created through the link"
    );
    // Not a regular file.
    let e = ConnLog::open(&ConnLogTarget::File(dir.path().to_owned()), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("connection log"), "{e}");
}
