//! A QUIC server and client (quinn) for the HTTP/3 lab test: real QUIC v1 connections with
//! TLS 1.3 and the lab's certificate, whose endpoints report what they sent and saw.
//!
//! * `quic-peer server --listen ADDR --cert PEM --key PEM`: answers each bidirectional
//!   stream's request (a decimal byte count and a newline) with that many bytes, and prints
//!   one JSON line per connection once it is closed: the client's address as the server
//!   saw it, the SNI, and the connection's UDP datagrams and bytes each way.
//! * `quic-peer client --connect ADDR --name NAME --ca PEM --bytes N --count K`: opens K
//!   connections in turn, each asking for N bytes, and prints one JSON line per connection
//!   with the same figures from the client's side. `--big-hello` pads the ClientHello (with
//!   ALPN entries) past one Initial packet, as a post-quantum key share does.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use integration_tests::quic_peer::{client_config, server_config};
use quinn::crypto::rustls::HandshakeData;

/// The largest request answered (bytes).
const MAX_ANSWER: u64 = 64 << 20;

struct Args(Vec<String>);
impl Args {
    fn value(&self, flag: &str) -> anyhow::Result<&str> {
        let i = self
            .0
            .iter()
            .position(|a| a == flag)
            .with_context(|| format!("missing {flag}"))?;
        self.0
            .get(i + 1)
            .map(String::as_str)
            .with_context(|| format!("{flag} needs a value"))
    }

    fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }
}

fn udp_stats(s: &quinn::UdpStats) -> serde_json::Value {
    serde_json::json!({ "datagrams": s.datagrams, "bytes": s.bytes })
}

async fn server(a: &Args) -> anyhow::Result<()> {
    let listen: SocketAddr = a.value("--listen")?.parse()?;
    let config = server_config(
        &PathBuf::from(a.value("--cert")?),
        &PathBuf::from(a.value("--key")?),
    )?;
    let endpoint = quinn::Endpoint::server(config, listen)?;
    eprintln!("listening on {listen}");
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            if let Err(e) = serve(incoming).await {
                eprintln!("connection: {e:#}");
            }
        });
    }
    Ok(())
}

async fn serve(incoming: quinn::Incoming) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let sni = conn
        .handshake_data()
        .and_then(|h| h.downcast::<HandshakeData>().ok())
        .and_then(|h| h.server_name);
    let peer = conn.remote_address();
    let mut sent = 0u64;
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let req = recv.read_to_end(32).await?;
        let n: u64 = std::str::from_utf8(&req)?.trim().parse()?;
        if n > MAX_ANSWER {
            bail!("{n} bytes asked for");
        }
        let chunk = vec![0x61u8; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            send.write_all(&chunk[..k]).await?;
            left -= k as u64;
        }
        send.finish()?;
        sent += n;
    }
    conn.closed().await;
    let s = conn.stats();
    println!(
        "{}",
        serde_json::json!({
            "peer": peer.to_string(),
            "sni": sni,
            "stream_bytes": sent,
            "udp_tx": udp_stats(&s.udp_tx),
            "udp_rx": udp_stats(&s.udp_rx),
        })
    );
    Ok(())
}

async fn client(a: &Args) -> anyhow::Result<()> {
    let addr: SocketAddr = a.value("--connect")?.parse()?;
    let name = a.value("--name")?.to_owned();
    let bytes: u64 = a.value("--bytes")?.parse()?;
    let count: u32 = a.value("--count")?.parse()?;
    let mut config = client_config(&PathBuf::from(a.value("--ca")?), a.has("--big-hello"))?;
    if a.has("--no-gso") {
        // Datagrams one by one, as they cross a wire (UDP GSO hands a veth several at once).
        let mut t = quinn::TransportConfig::default();
        t.enable_segmentation_offload(false);
        config.transport_config(std::sync::Arc::new(t));
    }
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    for _ in 0..count {
        // A socket per connection, as browsers do: the forwarder tells connections apart
        // by their addresses and ports.
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(config.clone());
        let conn = tokio::time::timeout(Duration::from_secs(20), endpoint.connect(addr, &name)?)
            .await
            .context("handshake timed out")??;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(format!("{bytes}\n").as_bytes()).await?;
        send.finish()?;
        let got = tokio::time::timeout(
            Duration::from_secs(60),
            recv.read_to_end(bytes as usize + 1),
        )
        .await
        .context("response timed out")??;
        if got.len() as u64 != bytes {
            bail!("{} bytes received, {bytes} asked for", got.len());
        }
        conn.close(0u32.into(), b"done");
        // The close sent and the connection drained: the figures are final.
        endpoint.wait_idle().await;
        let s = conn.stats();
        println!(
            "{}",
            serde_json::json!({
                "name": name,
                "local": endpoint.local_addr()?.to_string(),
                "stream_bytes": got.len(),
                "udp_tx": udp_stats(&s.udp_tx),
                "udp_rx": udp_stats(&s.udp_rx),
            })
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let a = Args(args);
    match a.0.first().map(String::as_str) {
        Some("server") => rt.block_on(server(&a)),
        Some("client") => rt.block_on(client(&a)),
        _ => bail!(
            "usage: quic-peer server --listen ADDR --cert PEM --key PEM\n       \
             quic-peer client --connect ADDR --name NAME --ca PEM --bytes N --count K [--big-hello] [--no-gso]"
        ),
    }
}
