//! The control socket: a Unix socket through which the CLI asks the running daemon for its
//! state. One JSON request per connection, one JSON answer.
//!
//! Access is checked twice: the socket's directory and file permissions (root, the
//! configured admin group, and the change group), and the caller's credentials
//! (`SO_PEERCRED`), so that loosened file permissions alone do not open it. Root and the
//! change group may send any request; the admin group only those that read
//! ([`Right::needed`]). Requests are size-limited; every request gets an answer, an error
//! saying what was wrong included.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _, chown},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tracing::{info, warn};

use crate::{
    api::control::{MAX_REQUEST, Request, Response, parse},
    daemon::handler::Handler,
};

mod acl;

/// A group given on the command line: its id, and how messages name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub gid: u32,
    pub name: String,
}

/// Who may use the socket: root, members of the admin group (reads only) and members of
/// the change group (everything), each if configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub admin: Option<Group>,
    pub change: Option<Group>,
}

/// What a request asks of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Right {
    /// It only reads the daemon's state.
    Read,
    /// It changes something: rules, hosts, limits, the configuration, the daemon itself.
    Change,
}

impl Right {
    /// What `req` needs. Every request is named here, so a new one must be classified.
    pub fn needed(req: &Request) -> Right {
        match req {
            Request::Status(_) | Request::Rules(_) | Request::Hosts(_) => Right::Read,
            Request::Stop(_)
            | Request::RuleAdd(_)
            | Request::RuleRemove(_)
            | Request::HostAdd(_)
            | Request::HostRemove(_)
            | Request::HostSet(_)
            | Request::Limits(_)
            | Request::Reload(_) => Right::Change,
        }
    }
}

impl Access {
    /// What a caller may do (`None`: nothing); `groups`: its supplementary groups.
    pub fn right(&self, uid: u32, gid: u32, groups: &[u32]) -> Option<Right> {
        let member = |g: &Option<Group>| {
            g.as_ref()
                .is_some_and(|g| gid == g.gid || groups.contains(&g.gid))
        };
        if uid == 0 || member(&self.change) {
            Some(Right::Change)
        } else if member(&self.admin) {
            Some(Right::Read)
        } else {
            None
        }
    }

    /// Why a caller with `has` may not send a request that needs `needs`.
    pub fn refusal(&self, has: Option<Right>, needs: Right) -> Option<String> {
        match has {
            Some(h) if h >= needs => None,
            None => Some(
                "permission denied: the control socket is for root and the admin group (--admin-group)"
                    .to_owned(),
            ),
            Some(_) => {
                let admin = self.admin.as_ref().map_or("", |g| g.name.as_str());
                Some(match &self.change {
                    Some(c) => format!(
                        "permission denied: group {admin} may only read; changes need root or group {} (--change-group)",
                        c.name
                    ),
                    None => format!(
                        "permission denied: group {admin} may only read; changes need root (or a group given with --change-group)"
                    ),
                })
            }
        }
    }

    /// The group owning the socket and its directory: the admin group, else the change
    /// group.
    fn owner(&self) -> Option<&Group> {
        self.admin.as_ref().or(self.change.as_ref())
    }

    /// A change group that needs an ACL entry to reach the socket (it is not the owner).
    fn extra(&self) -> Option<&Group> {
        match (&self.admin, &self.change) {
            (Some(a), Some(c)) if a.gid != c.gid => Some(c),
            _ => None,
        }
    }
}

/// Whether `dir` is the service's own runtime directory (systemd's `RuntimeDirectory=`,
/// named in `$RUNTIME_DIRECTORY`): created by systemd as root:root, so the daemon sets its
/// group as if it had created it.
fn is_runtime_directory(dir: &Path) -> bool {
    let Some(list) = std::env::var_os("RUNTIME_DIRECTORY") else {
        return false;
    };
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    std::env::split_paths(&list).any(|d| d.canonicalize().is_ok_and(|d| d == dir))
}

/// Lets `access`'s groups reach `path` (mode `mode`): its group is the owner group, and a
/// distinct change group gets an ACL entry with the group's permissions.
fn set_group(path: &Path, access: &Access, mode: u32) -> anyhow::Result<()> {
    let Some(owner) = access.owner() else {
        return Ok(());
    };
    chown(path, None, Some(owner.gid)).with_context(|| format!("chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(c) = access.extra()
        && let Err(e) = acl::grant_group(path, mode, c.gid, ((mode >> 3) & 7) as u16)
    {
        warn!(
            "cannot give group {} access to {} with an ACL ({e}): its members need group {} as well to reach the control socket",
            c.name,
            path.display(),
            owner.name
        );
    }
    Ok(())
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
pub async fn bind(path: &Path, access: &Access) -> anyhow::Result<tokio::net::UnixListener> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        set_group(dir, access, 0o750)?;
    } else if access.owner().is_some() && is_runtime_directory(dir) {
        // systemd made it root:root: the groups could not reach the socket.
        let mode = std::fs::metadata(dir)?.mode() & 0o750;
        set_group(dir, access, mode | 0o750)?;
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
    set_group(path, access, 0o660)?;
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
    let access = Arc::new(access);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = cancel.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let (handler, access) = (Arc::clone(&handler), Arc::clone(&access));
            tokio::spawn(async move {
                if let Err(e) = serve(stream, &access, handler).await {
                    warn!("control connection: {e:#}");
                }
            });
        }
    })
}

async fn serve(
    mut stream: tokio::net::UnixStream,
    access: &Access,
    handler: Handler,
) -> anyhow::Result<()> {
    let cred = stream.peer_cred()?;
    let right = access.right(cred.uid(), cred.gid(), &groups_of(cred.pid()));
    let response = if right.is_none() {
        warn!(
            uid = cred.uid(),
            pid = cred.pid(),
            "control request refused: not root or the admin group"
        );
        Response::error(access.refusal(None, Right::Read).unwrap_or_default())
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
                Ok(req) if let Some(why) = access.refusal(right, Right::needed(&req)) => {
                    warn!(
                        uid = cred.uid(),
                        pid = cred.pid(),
                        "control request refused: a change from a caller who may only read"
                    );
                    Response::error(why)
                }
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
mod tests;
