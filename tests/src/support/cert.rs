//! The lab's self-signed certificate.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::command::run;

/// A self-signed certificate (ECDSA P-256, 2 days) for `names`, and its key: `cert.pem`
/// and `key.pem` in `dir` (openssl).
pub fn self_signed(dir: &Path, names: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let san = format!(
        "subjectAltName={}",
        names
            .iter()
            .map(|s| format!("DNS:{s}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={}", names.first().copied().unwrap_or("example.test")),
            "-addext",
            &san,
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert))?;
    Ok((cert, key))
}
