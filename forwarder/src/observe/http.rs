//! A small HTTP/1.1 server for the metrics: `GET /metrics` (OpenMetrics text) and
//! `GET /stats.json` (the statistics document `forwarder stats` reads). One request per
//! connection, requests limited in size and time, at most a few connections at once.

use std::{fmt, net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::{debug, warn};

use crate::{
    api::stats::Snapshot,
    observe::{metrics, snapshot::SnapshotSource},
};

/// Default address of the metrics endpoint (loopback only).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9724";
/// Largest request head (request line and headers) accepted.
pub const MAX_REQUEST: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "cannot listen for metrics on {addr} (choose another address with --metrics-addr, or --metrics-addr off)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `--metrics-addr`: an address to listen on, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    On(SocketAddr),
}

impl FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(MetricsAddr::Off);
        }
        s.parse().map(MetricsAddr::On).map_err(|_| {
            format!("{s:?} is not an address: expected IP:PORT (e.g. {DEFAULT_METRICS_ADDR}, [::1]:9724) or off")
        })
    }
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsAddr::Off => f.write_str("off"),
            MetricsAddr::On(a) => a.fmt(f),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without query string.
    pub path: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The request head exceeds [`MAX_REQUEST`].
    TooLarge,
    Malformed(&'static str),
}

/// Parses a request head from the bytes received so far: `Ok(None)` until it is complete.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, ParseError> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let Some((end, terminator)) = end else {
        return if buf.len() >= MAX_REQUEST {
            Err(ParseError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end + terminator > MAX_REQUEST {
        return Err(ParseError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::Malformed("not UTF-8"))?;
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed("bad request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ParseError::Malformed("bad method"));
    }
    if !target.starts_with('/') {
        return Err(ParseError::Malformed("bad request target"));
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(ParseError::Malformed("not HTTP/1.x"));
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
    }))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body = body.into().into_bytes();
        body.push(b'\n');
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }

    /// The bytes on the wire (no body for `HEAD`).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            _ => "Internal Server Error",
        };
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Answers one request.
pub fn route(req: &Request, source: &dyn SnapshotSource) -> Response {
    type Render = fn(Snapshot) -> Result<(&'static str, Vec<u8>), String>;
    let render: Render = match req.path.as_str() {
        "/metrics" => |s| {
            metrics::encode(s)
                .map(|t| (metrics::CONTENT_TYPE, t.into_bytes()))
                .map_err(|e| e.to_string())
        },
        "/stats.json" => |s| {
            serde_json::to_vec(&s)
                .map(|b| ("application/json", b))
                .map_err(|e| e.to_string())
        },
        _ => return Response::text(404, "not found (try /metrics or /stats.json)"),
    };
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return Response::text(405, "only GET and HEAD are supported");
    }
    let out = source
        .snapshot()
        .map_err(|e| crate::dataplane::maps::display_chain(&e))
        .and_then(render);
    match out {
        Ok((content_type, body)) => Response {
            status: 200,
            content_type,
            body,
        },
        Err(e) => {
            warn!("serving {}: {e}", req.path);
            Response::text(500, format!("reading the statistics failed: {e}"))
        }
    }
}

/// Binds the listening socket (before anything is attached, so a bad address fails fast).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves requests until `cancel`.
pub fn spawn(
    listener: TcpListener,
    source: Arc<dyn SnapshotSource>,
    cancel: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => p,
                () = cancel.cancelled() => return,
            };
            let Ok(permit) = permit else {
                return;
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = cancel.cancelled() => return,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    debug!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let source = Arc::clone(&source);
            tokio::spawn(async move {
                if let Err(e) = serve_one(stream, source.as_ref()).await {
                    debug!("metrics endpoint: {peer}: {e}");
                }
                drop(permit);
            });
        }
    })
}

async fn serve_one(mut stream: TcpStream, source: &dyn SnapshotSource) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            match parse_request(&buf) {
                Ok(None) => {}
                other => return Ok(other),
            }
            let room = (MAX_REQUEST - buf.len()).min(chunk.len());
            let n = stream.read(&mut chunk[..room]).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete request",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let (response, head_only) = match read {
        Err(_) => (Response::text(408, "request timeout"), false),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(ParseError::TooLarge))) => (Response::text(431, "request too large"), false),
        Ok(Ok(Err(ParseError::Malformed(why)))) => {
            (Response::text(400, format!("bad request: {why}")), false)
        }
        Ok(Ok(Ok(None))) => return Ok(()),
        Ok(Ok(Ok(Some(req)))) => (route(&req, source), req.method == "HEAD"),
    };
    let bytes = response.to_bytes(head_only);
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "writing the response timed out",
        )),
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn requests_parse() {
        assert_eq!(parse_request(b""), Ok(None));
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Some(req("GET", "/metrics")))
        );
        assert_eq!(
            parse_request(b"HEAD /stats.json HTTP/1.0\n\n"),
            Ok(Some(req("HEAD", "/stats.json")))
        );
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
            b"\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        ] {
            assert!(
                matches!(parse_request(bad), Err(ParseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn oversized_requests_are_rejected() {
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST, b'a');
        assert_eq!(parse_request(&big), Err(ParseError::TooLarge));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&big), Err(ParseError::TooLarge));
        assert_eq!(parse_request(&big[..MAX_REQUEST - 1]), Ok(None));
    }

    proptest::proptest! {
        /// Whatever arrives, parsing answers (and never reads past the limit).
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2 * MAX_REQUEST)) {
            let _ = parse_request(&bytes);
        }

        #[test]
        fn parsing_request_lines(method in "[A-Z]{1,8}", path in "/[ -~]{0,64}", tail in "[ -~\r\n]{0,64}") {
            let raw = format!("{method} {path} HTTP/1.1\r\n{tail}\r\n\r\n");
            match parse_request(raw.as_bytes()) {
                Ok(Some(r)) => {
                    proptest::prop_assert_eq!(r.method, method);
                    proptest::prop_assert!(path.starts_with(&r.path));
                }
                Ok(None) => proptest::prop_assert!(false, "complete request not parsed"),
                Err(_) => proptest::prop_assert!(path.contains(' ')),
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
        let r = Response::text(405, "no");
        let text = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 3\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nno\n"), "{text}");
        let head = String::from_utf8(r.to_bytes(true)).unwrap();
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
        let e = "localhost".parse::<MetricsAddr>().unwrap_err();
        assert!(e.contains("IP:PORT"), "{e}");
    }

    /// The server end to end on loopback: a good request, a bad one, an oversized one.
    #[tokio::test(flavor = "current_thread")]
    async fn serves_over_tcp() {
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
}
