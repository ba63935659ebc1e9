//! The daemon's own file descriptor limit.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit (systemd starts services with a
/// soft limit of 1024 whatever `LimitNOFILE=` allows, so that old `select` users do not
/// break; the daemon uses epoll) and returns the soft limit now in force.
pub fn raise_nofile() -> std::io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}
