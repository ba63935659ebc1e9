//! The CLI side of the control socket.

use std::path::Path;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::api::control::{ControlRequest, Request, Response};

/// Sends `req` and returns the daemon's reply to it.
pub async fn request<R: ControlRequest>(path: &Path, req: R) -> anyhow::Result<R::Reply> {
    let mut stream = tokio::net::UnixStream::connect(path).await.with_context(|| {
        format!(
            "connecting to the daemon's control socket {} (is `forwarder run` running, and are you root or in its admin group?)",
            path.display()
        )
    })?;
    let req: Request = req.into();
    let mut body = serde_json::to_vec(&req)?;
    body.push(b'\n');
    stream.write_all(&body).await?;
    stream.shutdown().await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let r: Response<R::Reply> =
        serde_json::from_slice(&answer).context("reading the daemon's answer")?;
    match (r.ok, r.result, r.error) {
        (true, Some(v), _) => Ok(v),
        (_, _, Some(e)) => anyhow::bail!("the daemon refused: {e}"),
        _ => anyhow::bail!("the daemon gave no answer"),
    }
}
