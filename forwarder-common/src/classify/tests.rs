extern crate std;
use std::{string::String, vec, vec::Vec};

use proptest::prelude::*;

use super::{
    http::{host_value, request_line_ok},
    *,
};
use crate::{
    packet::Bytes,
    samples::{browser_exts, client_hello, sni_ext},
};

fn name_of(r: (Option<Outcome>, Vec<u8>)) -> (Option<Outcome>, String) {
    (r.0, String::from_utf8_lossy(&r.1).into_owned())
}

#[test]
fn sni_from_a_plain_client_hello() {
    let mut exts = vec![sni_ext(&[b"app.example.com"])];
    exts.extend(browser_exts(0x0a0a, 32));
    let rec = client_hello(&exts, 32);
    let (o, name) = name_of(run_segments(&[&rec]));
    assert!(matches!(o, Some(Outcome::TlsName(_))), "{o:?}");
    assert_eq!(name, "app.example.com");
}

#[test]
fn sni_in_the_second_segment_of_a_large_client_hello() {
    let mut exts = browser_exts(0x1a1a, 1400);
    exts.push(sni_ext(&[b"media.example.com"]));
    let rec = client_hello(&exts, 32);
    assert!(rec.len() > 1800, "{}", rec.len());
    let (a, b) = rec.split_at(1380);
    let (o, name) = name_of(run_segments(&[a, b]));
    assert_eq!(name, "media.example.com", "{o:?}");
}

#[test]
fn malformed_and_missing_names() {
    let mut exts = browser_exts(0x2a2a, 32);
    assert_eq!(
        run_segments(&[&client_hello(&exts, 0)]).0,
        Some(Outcome::TlsNoSni)
    );
    exts.push(sni_ext(&[b"a.example.com", b"b.example.com"]));
    assert_eq!(
        run_segments(&[&client_hello(&exts, 0)]).0,
        Some(Outcome::TlsMalformed),
        "two names"
    );
    let mut trailing = client_hello(&[sni_ext(&[b"a.example.com"])], 0);
    trailing.push(0);
    let l = u16::from_be_bytes([trailing[3], trailing[4]]) + 1;
    trailing[3..5].copy_from_slice(&l.to_be_bytes());
    assert_eq!(
        run_segments(&[&trailing]).0,
        Some(Outcome::TlsMalformed),
        "trailing garbage"
    );
    assert_eq!(
        run_segments(&[b"\x00\x01garbage"]).0,
        Some(Outcome::NotTlsOrHttp)
    );
    assert_eq!(
        run_segments(&[b"SSH-2.0-OpenSSH_9.2\r\n"]).0,
        Some(Outcome::HttpMalformed)
    );
    let mut lying = client_hello(&[sni_ext(&[b"a.example.com"])], 0);
    lying[3] = 0x40;
    assert_eq!(
        run_segments(&[&lying]).0,
        Some(Outcome::TlsMalformed),
        "record length lies"
    );
}

#[test]
fn http_host_anywhere_any_case_with_port() {
    let cases: [(&[u8], &str); 5] = [
        (b"GET / HTTP/1.1\r\nHost: blog.example.com\r\n\r\n", "blog.example.com"),
        (b"GET /x HTTP/1.1\r\nUser-Agent: curl\r\nAccept: */*\r\nhOsT:\tBlog.Example.com:8080\r\n\r\n", "Blog.Example.com"),
        (b"POST /api HTTP/1.0\nContent-Length: 0\nHOST: app.example.com\n\n", "app.example.com"),
        (b"GET http://proxy.example.com:81/p?q HTTP/1.1\r\nHost: other.example.com\r\n\r\n", "proxy.example.com"),
        (b"OPTIONS * HTTP/1.1\r\nHost: x.example.com\r\n\r\n", "x.example.com"),
    ];
    for (req, want) in cases {
        let (o, name) = name_of(run_segments(&[req]));
        assert_eq!(name, want, "{o:?} for {:?}", String::from_utf8_lossy(req));
    }
    assert_eq!(
        run_segments(&[b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"]).0,
        Some(Outcome::HttpNoHost)
    );
    assert_eq!(
        run_segments(&[b"GET / FTP/1.1\r\nHost: a\r\n\r\n"]).0,
        Some(Outcome::HttpMalformed)
    );
}

#[test]
fn http_request_split_anywhere() {
    let req = b"GET /index.html HTTP/1.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nHost: blog.example.com\r\nAccept: */*\r\n\r\n";
    for cut in 1..req.len() {
        let (a, b) = req.split_at(cut);
        let (o, name) = name_of(run_segments(&[a, b]));
        assert_eq!(name, "blog.example.com", "cut at {cut}: {o:?}");
    }
}

#[test]
fn long_header_lines_are_skipped_across_segments() {
    let mut req = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
    req.extend(std::iter::repeat_n(b'c', 3000));
    req.extend_from_slice(b"\r\nHost: app.example.com\r\n\r\n");
    let segs: Vec<&[u8]> = req.chunks(1400).collect();
    let (o, name) = name_of(run_segments(&segs));
    assert_eq!(name, "app.example.com", "{o:?}");
}

fn grease() -> impl Strategy<Value = u16> {
    (0u16..16).prop_map(|n| (n << 12) | 0x0a0a | (n << 4))
}

/// `request_line_ok` as it was written byte by byte: the word-wise version must agree.
fn request_line_by_bytes(b: &[u8], at: usize, end: usize) -> Option<u8> {
    let m: [u8; 16] = b.array(at);
    let mut n = 0;
    while n < 16 && at + n < end && m[n].is_ascii_uppercase() {
        n += 1;
    }
    let sp = if n < 16 { m[n] } else { b.byte(at + 16) };
    if n == 0 || sp != b' ' || end < at + 9 {
        return None;
    }
    let t: [u8; 8] = b.array(end - 9);
    if t != *b" HTTP/1." {
        return None;
    }
    Some(if n + 1 < 16 { m[n + 1] } else { 0 })
}

/// `host_value` as it was written byte by byte.
fn host_value_by_bytes(b: &[u8], from: usize, end: usize) -> Outcome {
    let ws: [u8; 8] = b.array(from);
    let mut start = from;
    let mut n = 0;
    while n < 8 && start < end && matches!(ws[n], b' ' | b'\t') {
        start += 1;
        n += 1;
    }
    let stop = b
        .find_any(start, end, [b':', b' ', b'\t', b'\r'])
        .unwrap_or(end);
    if stop <= start {
        return Outcome::HttpNoHost;
    }
    Outcome::HttpName(NameAt {
        off: start,
        len: stop - start,
    })
}

proptest! {
    #[test]
    fn request_line_counted_word_wise_as_byte_by_byte(
        method in "[A-Z]{0,20}|[A-Za-z\\- ]{0,20}",
        sep in prop_oneof![Just(" "), Just("\t"), Just(""), Just("  ")],
        target in "[/a-z:?]{0,12}",
        version in prop_oneof![Just(" HTTP/1.1"), Just(" HTTP/1.0"), Just(" HTTP/2"), Just("")],
        lead in 0usize..3,
        tail in 0usize..40,
        end_back in 0usize..20,
    ) {
        let mut line = std::vec![b'x'; lead];
        line.extend_from_slice(method.as_bytes());
        line.extend_from_slice(sep.as_bytes());
        line.extend_from_slice(target.as_bytes());
        line.extend_from_slice(version.as_bytes());
        let end = line.len();
        line.extend_from_slice(b"\r\n");
        line.extend(std::iter::repeat_n(b'A', tail));
        // `end` before or at the line's end, as the parser's callers give it, and
        // past the buffer too.
        for end in [end, end.saturating_sub(end_back), end + end_back] {
            prop_assert_eq!(
                request_line_ok(&line[..], lead, end),
                request_line_by_bytes(&line[..], lead, end),
                "{:?} end {}", String::from_utf8_lossy(&line), end
            );
        }
    }

    #[test]
    fn host_value_counted_word_wise_as_byte_by_byte(
        value in "[ \t]{0,12}[a-z.:\t ]{0,20}",
        from_back in 0usize..3,
        end_back in 0usize..14,
    ) {
        let mut line = Vec::from(&b"Host:"[..]);
        line.extend_from_slice(value.as_bytes());
        let end = line.len();
        line.extend_from_slice(b"\r\n");
        let from = 5 - from_back;
        for end in [end, end.saturating_sub(end_back), end + end_back] {
            prop_assert_eq!(
                host_value(&line[..], from, end),
                host_value_by_bytes(&line[..], from, end)
            );
        }
    }
}

proptest! {
    #[test]
    fn sni_found_whatever_the_order_grease_and_split(
        order in Just((0..12usize).collect::<Vec<_>>()).prop_shuffle(),
        g in grease(),
        key_share in 32usize..1300,
        sid in prop_oneof![Just(0usize), Just(32usize)],
        name in "[a-z0-9]{1,20}(\\.[a-z0-9-]{1,20}){1,3}",
        cut1 in 1usize..2000,
        cut2 in 1usize..2000,
    ) {
        let mut exts = browser_exts(g, key_share);
        exts.push(sni_ext(&[name.as_bytes()]));
        let exts: Vec<Vec<u8>> = order.iter().map(|&i| exts[i].clone()).collect();
        let rec = client_hello(&exts, sid);
        let (c1, c2) = {
            let mut v = [cut1 % rec.len(), cut2 % rec.len()];
            v.sort();
            (v[0], v[1])
        };
        let segs = [&rec[..c1], &rec[c1..c2], &rec[c2..]];
        let (o, got) = name_of(run_segments(&segs));
        prop_assert_eq!(got, name, "{:?}", o);
    }

    #[test]
    fn http_host_found_in_generated_requests(
        before in proptest::collection::vec("[A-Za-z-]{1,20}: [ -~]{0,200}", 0..8),
        host in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,20}){1,3}",
        port in proptest::option::of(1u16..),
        cut in 0usize..3000,
    ) {
        let mut req = String::from("GET /path?q=1 HTTP/1.1\r\n");
        for h in &before {
            if h.to_ascii_lowercase().starts_with("host:") { continue; }
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("Host: ");
        req.push_str(&host);
        if let Some(p) = port { req.push_str(&std::format!(":{p}")); }
        req.push_str("\r\nAccept: */*\r\n\r\n");
        let bytes = req.as_bytes();
        let cut = cut % bytes.len();
        let (o, got) = name_of(run_segments(&[&bytes[..cut], &bytes[cut..]]));
        prop_assert_eq!(got, host, "{:?}", o);
    }

    #[test]
    fn never_panics_on_garbage(segs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..4)) {
        let refs: Vec<&[u8]> = segs.iter().map(|s| &s[..]).collect();
        let (o, name) = run_segments(&refs);
        if let Some(Outcome::TlsName(n) | Outcome::HttpName(n)) = o {
            prop_assert_eq!(n.len, name.len());
        }
    }
}
