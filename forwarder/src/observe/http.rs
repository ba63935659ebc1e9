//! The metrics endpoint: `GET /metrics` (OpenMetrics text) and `GET /stats.json` (the
//! statistics document `forwarder stats` reads), over HTTP/1.x served by hyper. One
//! request per connection, requests limited in size and time, at most a few connections
//! at once.

use std::{convert::Infallible, fmt, net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore},
};
use tracing::{debug, warn};

use crate::{
    api::stats::Snapshot,
    dataplane::maps::{MapsError, display_chain},
    observe::{metrics, snapshot::SnapshotSource},
};

/// Default address of the metrics endpoint (loopback only).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9724";
/// Largest request head (request line and headers) accepted. hyper's smallest allowed
/// read buffer is exactly this size, so the buffer itself never holds more.
pub const MAX_REQUEST: usize = 8192;
/// For the whole request head, from the moment the connection is accepted: a client that
/// trickles bytes (slowloris) is cut off all the same.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// For the response, from the moment the request head is complete.
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

/// `--metrics-addr` that is neither an address nor `off`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an address: expected IP:PORT (e.g. {DEFAULT_METRICS_ADDR}, [::1]:9724) or off"
)]
pub struct MetricsAddrError(String);

/// `--metrics-addr`: an address to listen on, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    On(SocketAddr),
}

impl FromStr for MetricsAddr {
    type Err = MetricsAddrError;
    fn from_str(s: &str) -> Result<Self, MetricsAddrError> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(MetricsAddr::Off);
        }
        s.parse()
            .map(MetricsAddr::On)
            .map_err(|_| MetricsAddrError(s.to_owned()))
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

/// What [`route`] needs of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without query string.
    pub path: String,
}

impl Request {
    /// Checks what hyper's parser lets through but this endpoint never accepted: methods
    /// other than upper-case letters, targets other than an origin-form path, and heads
    /// that are not UTF-8. The reason is the 400 response's text.
    fn from_hyper<B>(req: &hyper::Request<B>) -> Result<Self, &'static str> {
        let method = req.method().as_str();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("bad method");
        }
        let uri = req.uri();
        if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
            return Err("bad request target");
        }
        let utf8 = |b: &[u8]| std::str::from_utf8(b).is_ok();
        if !req.headers().values().all(|v| utf8(v.as_bytes())) {
            return Err("not UTF-8");
        }
        Ok(Self {
            method: method.to_owned(),
            path: uri.path().to_owned(),
        })
    }
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

    /// The response hyper sends (which leaves the body out for `HEAD` by itself).
    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut out = hyper::Response::new(Full::new(Bytes::from(self.body)));
        *out.status_mut() = hyper::StatusCode::from_u16(self.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = out.headers_mut();
        headers.insert(CONTENT_TYPE, self.content_type.parse().expect("ASCII"));
        headers.insert(CACHE_CONTROL, "no-store".parse().expect("ASCII"));
        if self.status == 405 {
            headers.insert(ALLOW, "GET, HEAD".parse().expect("ASCII"));
        }
        headers.insert(CONNECTION, "close".parse().expect("ASCII"));
        out
    }
}

/// Why a page could not be produced; the text goes to the log and the 500 response.
#[derive(Debug, thiserror::Error)]
enum RenderError {
    #[error("{}", display_chain(.0))]
    Snapshot(#[from] MapsError),
    #[error(transparent)]
    Metrics(#[from] fmt::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Answers one request.
pub fn route(req: &Request, source: &dyn SnapshotSource) -> Response {
    type Render = fn(Snapshot) -> Result<(&'static str, Vec<u8>), RenderError>;
    let render: Render = match req.path.as_str() {
        "/metrics" => |s| Ok((metrics::CONTENT_TYPE, metrics::encode(s)?.into_bytes())),
        "/stats.json" => |s| Ok(("application/json", serde_json::to_vec(&s)?)),
        _ => return Response::text(404, "not found (try /metrics or /stats.json)"),
    };
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return Response::text(405, "only GET and HEAD are supported");
    }
    let out = source
        .snapshot()
        .map_err(RenderError::from)
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

fn respond<B>(
    req: &hyper::Request<B>,
    source: &dyn SnapshotSource,
) -> hyper::Response<Full<Bytes>> {
    match Request::from_hyper(req) {
        Ok(r) => route(&r, source),
        Err(why) => Response::text(400, format!("bad request: {why}")),
    }
    .into_hyper()
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
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(READ_TIMEOUT)
            .max_buf_size(MAX_REQUEST)
            .max_header_size(MAX_REQUEST)
            .keep_alive(false)
            // A client may shut its side down once the request is sent; it still gets
            // the answer.
            .half_close(true)
            // Header lines were never looked at; a malformed one does not spoil the request.
            .ignore_invalid_headers(true)
            .title_case_headers(true)
            .auto_date_header(false);
        let http = Arc::new(http);
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
            let (source, http) = (Arc::clone(&source), Arc::clone(&http));
            tokio::spawn(async move {
                if let Err(e) = serve_one(&http, stream, source).await {
                    debug!("metrics endpoint: {peer}: {e}");
                }
                drop(permit);
            });
        }
    })
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("writing the response timed out")]
    WriteTimeout,
}

async fn serve_one(
    http: &http1::Builder,
    stream: TcpStream,
    source: Arc<dyn SnapshotSource>,
) -> Result<(), ConnError> {
    // hyper bounds the head's reading (READ_TIMEOUT) but not the response's writing: the
    // service says when the head is in, and the rest gets WRITE_TIMEOUT from then on.
    let head_read = Arc::new(Notify::new());
    let service = {
        let head_read = Arc::clone(&head_read);
        service_fn(move |req: hyper::Request<Incoming>| {
            head_read.notify_one();
            std::future::ready(Ok::<_, Infallible>(respond(&req, source.as_ref())))
        })
    };
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return Ok(done?),
        () = head_read.notified() => {}
    }
    match tokio::time::timeout(WRITE_TIMEOUT, conn).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(ConnError::WriteTimeout),
    }
}

#[cfg(test)]
mod tests;
