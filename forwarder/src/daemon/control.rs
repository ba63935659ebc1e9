//! The control socket: a Unix socket through which the CLI asks the running daemon for its
//! state. One JSON request per connection, one JSON answer.
//!
//! Access is checked twice: the socket's directory and file permissions (root, or the
//! configured admin group), and the caller's credentials (`SO_PEERCRED`), so that loosened
//! file permissions alone do not open it. Requests are size-limited; every request gets an
//! answer, an error saying what was wrong included.

use std::{
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tracing::{info, warn};

use crate::{
    api::control::{MAX_REQUEST, Response, parse},
    daemon::handler::Handler,
};

/// Who may use the socket: root, and members of the admin group if one is configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub admin_gid: Option<u32>,
}

impl Access {
    /// `groups`: the caller's supplementary groups.
    pub fn allows(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == 0
            || self
                .admin_gid
                .is_some_and(|g| gid == g || groups.contains(&g))
    }
}

/// Supplementary groups of process `pid` (from /proc), empty if unknown.
fn groups_of(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else {
        return Vec::new();
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Creates the socket (and its directory, mode 0750) with mode 0660, owned by root and the
/// admin group. A socket file left by a daemon that is gone is replaced; one that answers
/// is another daemon's, and an error.
pub async fn bind(path: &Path, access: Access) -> anyhow::Result<tokio::net::UnixListener> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        if let Some(g) = access.admin_gid {
            chown(dir, None, Some(g)).with_context(|| format!("chown {}", dir.display()))?;
        }
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "{} is in use: another forwarder daemon is running (stop it first, or pass --control)",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("creating the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(g) = access.admin_gid {
        chown(path, None, Some(g)).with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(listener)
}

/// Serves requests until `cancel`.
pub fn spawn(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    access: Access,
    handler: Handler,
    cancel: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    info!(socket = %path.display(), "control socket ready");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = cancel.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                if let Err(e) = serve(stream, access, handler).await {
                    warn!("control connection: {e:#}");
                }
            });
        }
    })
}

async fn serve(
    mut stream: tokio::net::UnixStream,
    access: Access,
    handler: Handler,
) -> anyhow::Result<()> {
    let cred = stream.peer_cred()?;
    let response = if !access.allows(cred.uid(), cred.gid(), &groups_of(cred.pid())) {
        warn!(
            uid = cred.uid(),
            pid = cred.pid(),
            "control request refused: not root or the admin group"
        );
        Response::error("permission denied: the control socket is for root and the admin group")
    } else {
        let mut buf = Vec::new();
        // One byte more than allowed tells an oversized request from a full one.
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            (&mut stream)
                .take(MAX_REQUEST as u64 + 1)
                .read_to_end(&mut buf),
        )
        .await;
        match read {
            Err(_) => Response::error("request not completed within 5 s"),
            Ok(Err(e)) => Response::error(format!("reading the request: {e}")),
            Ok(Ok(_)) => match parse(&buf) {
                Err(e) => Response::error(e.to_string()),
                Ok(req) => match handler(&req).await {
                    Ok(result) => Response {
                        ok: true,
                        error: None,
                        result: Some(result),
                    },
                    Err(e) => Response::error(e.to_string()),
                },
            },
        }
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    stream.write_all(&out).await?;
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_admin_group_only() {
        let none = Access::default();
        assert!(none.allows(0, 0, &[]));
        assert!(!none.allows(1000, 1000, &[27]));
        let admins = Access {
            admin_gid: Some(27),
        };
        assert!(admins.allows(1000, 27, &[]));
        assert!(admins.allows(1000, 1000, &[4, 27]));
        assert!(!admins.allows(1000, 1000, &[4]));
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
}
