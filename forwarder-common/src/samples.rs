//! Sample first payloads (TLS ClientHellos, HTTP requests) for the tests, fuzz seeds,
//! benchmarks and the differential test against the kernel object.

extern crate std;
use std::{vec, vec::Vec};

/// A TLS extension: type, length, body.
pub fn ext(ty: u16, body: &[u8]) -> Vec<u8> {
    let mut e = ty.to_be_bytes().to_vec();
    e.extend_from_slice(&(body.len() as u16).to_be_bytes());
    e.extend_from_slice(body);
    e
}

/// A server_name extension with the given names (one, for a valid one).
pub fn sni_ext(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for n in names {
        list.push(0);
        list.extend_from_slice(&(n.len() as u16).to_be_bytes());
        list.extend_from_slice(n);
    }
    let mut body = (list.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&list);
    ext(0, &body)
}

/// A ClientHello record with the given extensions (already encoded).
pub fn client_hello(exts: &[Vec<u8>], session_id: usize) -> Vec<u8> {
    let mut ch = vec![0x03, 0x03];
    ch.extend_from_slice(&[0x5a; 32]);
    ch.push(session_id as u8);
    ch.extend(std::iter::repeat_n(0x11, session_id));
    let ciphers: Vec<u8> = [0x1301u16, 0x1302, 0x1303, 0xc02b, 0xc02f]
        .iter()
        .flat_map(|c| c.to_be_bytes())
        .collect();
    ch.extend_from_slice(&(ciphers.len() as u16).to_be_bytes());
    ch.extend_from_slice(&ciphers);
    ch.extend_from_slice(&[1, 0]);
    let all: Vec<u8> = exts.concat();
    ch.extend_from_slice(&(all.len() as u16).to_be_bytes());
    ch.extend_from_slice(&all);
    let mut hs = vec![1];
    hs.extend_from_slice(&(ch.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&ch);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Extensions a browser sends, without server_name: GREASE, a post-quantum-sized key
/// share, ALPN, session ticket, ECH, padding.
pub fn browser_exts(grease: u16, key_share: usize) -> Vec<Vec<u8>> {
    vec![
        ext(grease, &[]),
        ext(0x0017, &[]),
        ext(0xff01, &[0]),
        ext(0x000a, &[0, 4, 0x11, 0xec, 0, 0x1d]),
        ext(0x000b, &[1, 0]),
        ext(0x0023, &[0x77; 40]),
        ext(
            0x0010,
            &[
                0, 12, 2, b'h', b'2', 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1',
            ],
        ),
        ext(0x0033, &vec![0x42; key_share]),
        ext(0x002b, &[4, 0x13, 0x03, 0x03, 0x03]),
        ext(0xfe0d, &[0x99; 200]),
        ext(0x0015, &[0; 30]),
    ]
}

/// A browser-like ClientHello for `name`: the server_name extension at position
/// `sni_at` among the browser's extensions (GREASE `grease`, a key share of `key_share`
/// bytes; 1,200 makes it about as large as a post-quantum one, ~1.9 KB).
pub fn browser_hello(name: &[u8], grease: u16, key_share: usize, sni_at: usize) -> Vec<u8> {
    let mut exts = browser_exts(grease, key_share);
    let at = sni_at.min(exts.len());
    exts.insert(at, sni_ext(&[name]));
    client_hello(&exts, 32)
}

/// A browser-like HTTP/1.1 request for `host`, with the Host header after `before` other
/// headers.
pub fn http_request(host: &str, before: usize) -> Vec<u8> {
    let mut r = std::string::String::from("GET /index.html HTTP/1.1\r\n");
    let headers = [
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "Accept-Language: en-US,en;q=0.5",
        "Accept-Encoding: gzip, deflate",
        "Connection: keep-alive",
        "Upgrade-Insecure-Requests: 1",
    ];
    for (i, h) in headers.iter().enumerate() {
        if i == before {
            r.push_str(&std::format!("Host: {host}\r\n"));
        }
        r.push_str(h);
        r.push_str("\r\n");
    }
    if before >= headers.len() {
        r.push_str(&std::format!("Host: {host}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}
