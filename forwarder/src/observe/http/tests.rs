use std::{
    io::{Read as _, Write as _},
    net::Shutdown,
    sync::OnceLock,
    time::Instant,
};

use super::*;
use crate::{dataplane::maps::MapsError, observe::snapshot::tests::sample};

struct Fixed;
impl SnapshotSource for Fixed {
    fn snapshot(&self) -> Result<Snapshot, MapsError> {
        Ok(sample())
    }
}

struct Broken;
impl SnapshotSource for Broken {
    fn snapshot(&self) -> Result<Snapshot, MapsError> {
        Err(MapsError::Missing("COUNTERS"))
    }
}

fn req(method: &str, path: &str) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
    }
}

/// One endpoint serving [`Fixed`] for every test of this module, on its own thread and
/// runtime, so that the blocking clients below (and proptest's cases) can talk to it.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let _ = spawn(
                    listener,
                    Arc::new(Fixed),
                    tokio_util::sync::CancellationToken::new(),
                )
                .await;
            });
        });
        rx.recv().unwrap()
    })
}

fn connect() -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(server()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn read_all(mut s: std::net::TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `req` (then, with `half_close`, ends the sending side) and reads what comes back
/// until the server closes.
fn exchange(req: &[u8], half_close: bool) -> String {
    let mut s = connect();
    // The server may answer (and close) before all of an oversized request is sent.
    let _ = s.write_all(req);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    read_all(s)
}

/// The status code; HTTP/1.0 requests are answered in HTTP/1.0 (hyper's choice).
fn status(response: &str) -> Option<u16> {
    let rest = response
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| response.strip_prefix("HTTP/1.0 "))?;
    rest.get(..3)?.parse().ok()
}

/// The response's head and body.
fn split(response: &str) -> (&str, &str) {
    response.split_once("\r\n\r\n").unwrap_or((response, ""))
}

/// Whether the server stays silent on `s` for a moment (waiting for more of the head).
fn silent(s: &mut std::net::TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    let waiting = matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        || e.kind() == std::io::ErrorKind::TimedOut);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    waiting
}

#[test]
fn requests_parse() {
    // An incomplete head is waited for, then answered once complete.
    let mut s = connect();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(silent(&mut s));
    s.write_all(b"\r\n").unwrap();
    let page = read_all(s);
    assert_eq!(status(&page), Some(200), "{page}");
    assert!(page.contains("forwarder_build_info"), "{page}");

    let page = exchange(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_eq!(status(&page), Some(200), "{page}");
    // Bare line feeds, HTTP/1.0, HEAD: the head without the body.
    let head = exchange(b"HEAD /stats.json HTTP/1.0\n\n", false);
    assert_eq!(status(&head), Some(200), "{head}");
    let (h, body) = split(&head);
    assert!(h.contains("\r\nContent-Type: application/json"), "{head}");
    assert!(h.contains("\r\nContent-Length: "), "{head}");
    assert_eq!(body, "", "{head}");
    // A client that shuts its side down after the request still gets the answer.
    let json = exchange(b"GET /stats.json HTTP/1.1\r\n\r\n", true);
    assert_eq!(status(&json), Some(200), "{json}");
    assert!(json.contains("\"attach_mode\":\"xdp-driver\""), "{json}");
}

#[test]
fn bad_requests_are_rejected() {
    for bad in [
        &b"GET /metrics\r\n\r\n"[..],
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1 x\r\n\r\n",
        b"get /metrics HTTP/1.1\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET http://x/metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/2\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nX: \xff\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
    ] {
        let out = exchange(bad, false);
        assert_eq!(
            status(&out),
            Some(400),
            "{:?}: {out}",
            String::from_utf8_lossy(bad)
        );
    }
    // Empty lines before the request line are skipped (RFC 9112, 2.2): with nothing
    // after them the head is incomplete, and the connection ends with the client's.
    let out = exchange(b"\r\n\r\n", true);
    assert!(out.is_empty(), "{out}");
    // What this endpoint checks beyond hyper says why.
    let out = exchange(b"get /metrics HTTP/1.1\r\n\r\n", false);
    assert!(out.ends_with("\r\n\r\nbad request: bad method\n"), "{out}");
}

#[test]
fn oversized_requests_are_rejected() {
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(MAX_REQUEST, b'a');
    let out = exchange(&big, false);
    assert_eq!(status(&out), Some(431), "{out}");
    big.extend_from_slice(b"\r\n\r\n");
    let out = exchange(&big, false);
    assert_eq!(status(&out), Some(431), "{out}");
    // One byte short of the limit, the head is still waited for.
    let mut s = connect();
    s.write_all(&big[..MAX_REQUEST - 1]).unwrap();
    assert!(silent(&mut s));
    // A complete head of exactly the limit is served.
    let mut fits = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    fits.resize(MAX_REQUEST - 4, b'a');
    fits.extend_from_slice(b"\r\n\r\n");
    let out = exchange(&fits, false);
    assert_eq!(status(&out), Some(200), "{}", &out[..out.len().min(200)]);
}

/// Slowloris: a head sent a byte at a time is cut off after READ_TIMEOUT however lively
/// the client is.
#[test]
fn slow_heads_are_cut_off() {
    let mut s = connect();
    let started = Instant::now();
    let head = b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for b in head {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > READ_TIMEOUT + Duration::from_secs(2) {
            break;
        }
    }
    let out = if closed { String::new() } else { read_all(s) };
    let took = started.elapsed();
    assert!(out.is_empty(), "{out}");
    assert!(
        took >= READ_TIMEOUT && took < READ_TIMEOUT + Duration::from_secs(3),
        "{took:?}"
    );
}

/// At most MAX_CONNECTIONS connections are served at once: the next one waits in the
/// listen queue until a slot frees.
#[test]
fn connections_are_limited() {
    let idle: Vec<_> = (0..MAX_CONNECTIONS).map(|_| connect()).collect();
    // Give the server time to take them all.
    std::thread::sleep(Duration::from_millis(300));
    let mut next = connect();
    next.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert!(silent(&mut next), "a connection past the limit was served");
    drop(idle);
    let page = read_all(next);
    assert_eq!(status(&page), Some(200), "{page}");
}

proptest::proptest! {
    /// Whatever arrives, the server answers or closes (and keeps serving).
    #[test]
    fn parsing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2 * MAX_REQUEST)) {
        let out = exchange(&bytes, true);
        proptest::prop_assert!(out.is_empty() || out.starts_with("HTTP/1.1 "), "{}", out);
        let page = exchange(b"GET /metrics HTTP/1.1\r\n\r\n", false);
        proptest::prop_assert_eq!(status(&page), Some(200));
    }

    #[test]
    fn parsing_request_lines(method in "[A-Z]{1,8}", path in "/[ -~]{0,64}", tail in "[ -~\r\n]{0,64}") {
        let raw = format!("{method} {path} HTTP/1.1\r\n{tail}\r\n\r\n");
        let out = exchange(raw.as_bytes(), false);
        // hyper rejects a carriage return that does not end a line anywhere in the head
        // (RFC 9112, 2.2); other header lines, however malformed, are skipped.
        let bare_cr = raw
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .take_while(|l| !l.is_empty())
            .any(|l| l.contains('\r'));
        // So is a target the `http` crate does not take as a URI (`<`, `{`, `"`, ...).
        let bad_uri = path.parse::<hyper::Uri>().is_err();
        if path.contains(' ') || bare_cr || bad_uri {
            proptest::prop_assert_eq!(status(&out), Some(400), "{}", out);
        } else {
            let bare = path.split(['?', '#']).next().unwrap_or_default();
            let want = route(&req(&method, bare), &Fixed).status;
            proptest::prop_assert_eq!(status(&out), Some(want), "{}", out);
        }
    }
}

#[test]
fn routes() {
    let r = route(&req("GET", "/metrics"), &Fixed);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, metrics::CONTENT_TYPE);
    assert!(String::from_utf8_lossy(&r.body).contains("forwarder_build_info"));
    let r = route(&req("GET", "/stats.json"), &Fixed);
    assert_eq!((r.status, r.content_type), (200, "application/json"));
    let back: Snapshot = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(back, sample());
    assert_eq!(route(&req("GET", "/"), &Fixed).status, 404);
    assert_eq!(route(&req("POST", "/nope"), &Fixed).status, 404);
    assert_eq!(route(&req("POST", "/metrics"), &Fixed).status, 405);
    assert_eq!(route(&req("GET", "/metrics"), &Broken).status, 500);
}

#[test]
fn responses_are_well_formed() {
    let text = exchange(
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        false,
    );
    assert!(
        text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
    let body = "only GET and HEAD are supported\n";
    assert!(
        text.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{text}"
    );
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    assert!(text.contains("\r\nCache-Control: no-store\r\n"), "{text}");
    assert!(text.ends_with(&format!("\r\n\r\n{body}")), "{text}");
    let head = exchange(b"HEAD /nope HTTP/1.1\r\n\r\n", false);
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
}

#[test]
fn addresses() {
    assert_eq!("off".parse::<MetricsAddr>(), Ok(MetricsAddr::Off));
    assert_eq!(
        DEFAULT_METRICS_ADDR.parse::<MetricsAddr>(),
        Ok(MetricsAddr::On("127.0.0.1:9724".parse().unwrap()))
    );
    assert!("[::1]:9724".parse::<MetricsAddr>().is_ok());
    let e = "localhost".parse::<MetricsAddr>().unwrap_err().to_string();
    assert!(e.contains("IP:PORT"), "{e}");
}

/// The server end to end on loopback: a good request, a bad one, an oversized one.
#[tokio::test(flavor = "current_thread")]
async fn serves_over_tcp() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = spawn(
        listener,
        Arc::new(Fixed),
        tokio_util::sync::CancellationToken::new(),
    );
    async fn exchange(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }
    let ok = exchange(addr, b"GET /stats.json HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("\"attach_mode\":\"xdp-driver\""), "{ok}");
    let bad = exchange(addr, b"BREW /pot HTCPCP/1.0\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    let big = vec![b'a'; MAX_REQUEST + 100];
    let big = exchange(addr, &big).await;
    assert!(big.starts_with("HTTP/1.1 431 ") || big.is_empty(), "{big}");
    let missing = exchange(addr, b"GET /x HTTP/1.1\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    server.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn bind_errors_name_the_address() {
    let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = first.local_addr().unwrap();
    let e = bind(addr).await.unwrap_err().to_string();
    assert!(e.contains(&addr.to_string()), "{e}");
}
