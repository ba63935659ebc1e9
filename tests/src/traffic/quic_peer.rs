//! QUIC endpoints for the HTTP/3 lab test (`quic-peer`) and the benchmark: quinn with
//! rustls (ring), TLS 1.3, the lab's self-signed certificate.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

pub const ALPN: &[u8] = b"fwd-test";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration with the certificate chain and key of these PEM files.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<quinn::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok(quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(tls)?,
    )))
}

/// A client configuration that accepts exactly the certificate in `cert` (PEM).
/// `big_hello` pads the ClientHello (with ALPN entries) past one Initial packet, as a
/// post-quantum key share does.
pub fn client_config(cert: &Path, big_hello: bool) -> anyhow::Result<quinn::ClientConfig> {
    let pinned = CertificateDer::from_pem_file(cert)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(pinned.into_owned())))
        .with_no_client_auth();
    if big_hello {
        // 48 protocols of 30 bytes: a ClientHello of about 1.8 KB, two Initials.
        tls.alpn_protocols = (0..48)
            .map(|i| format!("x-padding-{i:020}").into_bytes())
            .collect();
    }
    tls.alpn_protocols.push(ALPN.to_vec());
    Ok(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls)?,
    )))
}

/// Accepts exactly the lab's certificate (self-signed, marked as a CA by openssl, which
/// webpki refuses as a server's own certificate), and checks the handshake's signature
/// with it.
#[derive(Debug)]
struct Pinned(CertificateDer<'static>);

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.0.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The CPU time (µs) a QUIC server thread spends per connection whose handshake it
/// completes (TLS 1.3, ECDSA P-256), the client closing right after: what terminating
/// QUIC costs before any request is served. `n` connections over loopback.
pub fn server_cpu_per_handshake(n: u32) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("fwd-quic-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = crate::support::self_signed(&dir, &["app.example.test"])?;
    let server_cfg = server_config(&cert, &key)?;
    let client_cfg = client_config(&cert, false)?;
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let srt = rt()?;
    let endpoint = {
        let _g = srt.enter();
        quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse()?)?
    };
    let addr = endpoint.local_addr()?;
    let server = std::thread::spawn(move || -> anyhow::Result<Duration> {
        srt.block_on(async move {
            let start = thread_cpu();
            for _ in 0..n {
                let incoming = endpoint.accept().await.context("server endpoint closed")?;
                let conn = incoming.await?;
                conn.closed().await;
            }
            Ok(thread_cpu() - start)
        })
    });
    rt()?.block_on(async move {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(client_cfg);
        for _ in 0..n {
            let conn = endpoint.connect(addr, "app.example.test")?.await?;
            conn.close(0u32.into(), b"done");
        }
        endpoint.wait_idle().await;
        anyhow::Ok(())
    })?;
    let cpu = server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(cpu.as_secs_f64() * 1e6 / f64::from(n))
}
