extern crate std;
use std::{collections::HashMap, string::String, vec, vec::Vec};

use proptest::prelude::*;

use super::*;
use crate::samples::browser_hello;

fn vectors() -> HashMap<String, Vec<u8>> {
    let text = include_str!("../../testdata/quic-initial-vectors.txt");
    let mut m = HashMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(" = ") else {
            continue;
        };
        let v = v.trim();
        if v.len() % 2 != 0 || !v.bytes().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let bytes = (0..v.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap())
            .collect();
        m.insert(k.trim().into(), bytes);
    }
    m
}

/// The ClientHello handshake message of a `samples` record (without its 5-byte
/// record header), as QUIC carries it in CRYPTO frames.
fn hello(name: &str, key_share: usize) -> Vec<u8> {
    browser_hello(name.as_bytes(), 0x3a3a, key_share, 3)[5..].to_vec()
}

#[test]
fn initial_keys_match_the_rfc_vectors() {
    let v = vectors();
    for (version, p) in [(VERSION_1, "v1"), (VERSION_2, "v2")] {
        let k = InitialKeys::client(version, &v["dcid"]).unwrap();
        assert_eq!(
            k.key.to_vec(),
            v[&std::format!("{p}_client_key")],
            "{p} key"
        );
        assert_eq!(k.iv.to_vec(), v[&std::format!("{p}_client_iv")], "{p} iv");
        assert_eq!(k.hp.to_vec(), v[&std::format!("{p}_client_hp")], "{p} hp");
        let sample: [u8; 16] = v[&std::format!("{p}_client_sample")][..]
            .try_into()
            .unwrap();
        assert_eq!(
            k.mask(&sample)[..5].to_vec(),
            v[&std::format!("{p}_client_mask")],
            "{p} mask"
        );
    }
    assert_eq!(InitialKeys::client(0xff00_001d, &v["dcid"]), None);
}

#[test]
fn the_rfc_client_initials_decrypt_to_their_client_hello() {
    let v = vectors();
    for (version, p) in [(VERSION_1, "v1"), (VERSION_2, "v2")] {
        let packet = &v[&std::format!("{p}_client_protected_initial_packet")];
        assert_eq!(packet.len(), 1200);
        let h = parse_header(packet).unwrap();
        assert_eq!((h.version, h.dcid, h.end), (version, &v["dcid"][..], 1200));
        let keys = InitialKeys::client(version, h.dcid).unwrap();
        let o = open_initial(packet, &h, &keys, None).unwrap();
        assert_eq!(o.pn, 2);
        let frame = &v[&std::format!("{p}_client_crypto_frame_unpadded")];
        assert_eq!(&o.payload[..frame.len()], &frame[..]);
        assert!(o.payload[frame.len()..].iter().all(|&b| b == 0), "padding");
        let mut a = Assembler::new();
        assert_eq!(
            a.push(packet),
            Ok(Progress2::Name("example.com".into())),
            "{p}"
        );
    }
}

#[test]
fn sealing_the_rfc_payload_gives_the_rfc_packet() {
    let v = vectors();
    for (version, p) in [(VERSION_1, "v1"), (VERSION_2, "v2")] {
        let frame = &v[&std::format!("{p}_client_crypto_frame_unpadded")];
        let sealed = seal_initial(version, &v["dcid"], &[], 2, frame);
        assert_eq!(
            sealed,
            v[&std::format!("{p}_client_protected_initial_packet")],
            "{p}"
        );
    }
}

#[test]
fn a_post_quantum_client_hello_over_three_initials_in_any_order() {
    let ch = hello("cloud.example.org", 1216);
    assert!(ch.len() > 1500, "spans packets: {}", ch.len());
    let dcid = [7u8; 8];
    let cuts = [0, 700, 1400, ch.len()];
    let packets: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let f = crypto_frame(cuts[i] as u64, &ch[cuts[i]..cuts[i + 1]]);
            seal_initial(VERSION_1, &dcid, &[1, 2], i as u32, &f)
        })
        .collect();
    for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
        let mut a = Assembler::new();
        assert_eq!(a.push(&packets[order[0]]), Ok(Progress2::NeedMore));
        assert_eq!(a.push(&packets[order[1]]), Ok(Progress2::NeedMore));
        let last = a.push(&packets[order[2]]);
        assert_eq!(
            last,
            Ok(Progress2::Name("cloud.example.org".into())),
            "{order:?}"
        );
    }
}

#[test]
fn a_client_hello_without_sni_is_reported_as_such() {
    let mut exts = crate::samples::browser_exts(0x0a0a, 32);
    exts.truncate(4);
    let ch = crate::samples::client_hello(&exts, 0)[5..].to_vec();
    let d = seal_initial(VERSION_2, &[1; 20], &[], 0, &crypto_frame(0, &ch));
    assert_eq!(Assembler::new().push(&d), Ok(Progress2::NoSni));
}

#[test]
fn a_retry_gives_new_keys_and_a_new_stream() {
    let ch = hello("a.example.com", 32);
    let first = seal_initial(VERSION_1, &[1; 8], &[], 0, &crypto_frame(0, &ch[..100]));
    let again = seal_initial(VERSION_1, &[2; 8], &[], 1, &crypto_frame(0, &ch));
    let mut a = Assembler::new();
    assert_eq!(a.push(&first), Ok(Progress2::NeedMore));
    assert_eq!(a.push(&again), Ok(Progress2::Name("a.example.com".into())));
}

#[test]
fn hostile_initials_get_a_defined_error() {
    let ch = hello("a.example.com", 32);
    let good = seal_initial(VERSION_1, &[9; 8], &[], 0, &crypto_frame(0, &ch));
    let push = |d: &[u8]| Assembler::new().push(d);

    // The Length field claims more than the datagram holds.
    let mut lying = good.clone();
    lying.truncate(1000);
    assert_eq!(push(&lying), Err(InitialError::Truncated));
    // One byte changed in the ciphertext.
    let mut flipped = good.clone();
    flipped[600] ^= 1;
    assert_eq!(push(&flipped), Err(InitialError::Decrypt));
    // Versions and packet types.
    let mut other = good.clone();
    other[1..5].copy_from_slice(&0xff00_001du32.to_be_bytes());
    assert_eq!(push(&other), Err(InitialError::UnknownVersion(0xff00_001d)));
    other[1..5].copy_from_slice(&[0; 4]);
    assert_eq!(push(&other), Err(InitialError::VersionNegotiation));
    let mut retry = good.clone();
    retry[0] = 0xf0; // v1 type 3: Retry
    assert_eq!(push(&retry), Err(InitialError::NotInitial));
    let mut short = good.clone();
    short[0] = 0x40;
    assert_eq!(push(&short), Err(InitialError::NotLongHeader));
    let mut long_cid = good.clone();
    long_cid[5] = 21;
    assert_eq!(push(&long_cid), Err(InitialError::BadConnectionId));
    assert_eq!(push(&[]), Err(InitialError::Truncated));
    assert_eq!(push(&[0xc0, 0, 0, 0]), Err(InitialError::Truncated));

    // Frames an Initial may not carry, CRYPTO beyond the bound, stream not a hello.
    let stream = [0x08, 0x00, 0x01, 0x00];
    let d = seal_initial(VERSION_1, &[9; 8], &[], 0, &stream);
    assert_eq!(push(&d), Err(InitialError::BadFrame));
    let d = seal_initial(
        VERSION_1,
        &[9; 8],
        &[],
        0,
        &crypto_frame(MAX_CRYPTO as u64, &[1]),
    );
    assert_eq!(push(&d), Err(InitialError::BadCrypto));
    let d = seal_initial(
        VERSION_1,
        &[9; 8],
        &[],
        0,
        &crypto_frame(0, &[2, 0, 0, 1, 0]),
    );
    assert_eq!(push(&d), Err(InitialError::NotClientHello));
    let mut huge = vec![1, 0x10, 0, 0];
    huge.extend_from_slice(&[0; 64]);
    let d = seal_initial(VERSION_1, &[9; 8], &[], 0, &crypto_frame(0, &huge));
    assert_eq!(push(&d), Err(InitialError::NotClientHello));
    let mut ack = vec![0x02, 5, 0, 0x3f, 0];
    ack.extend_from_slice(&crypto_frame(0, &ch));
    let d = seal_initial(VERSION_1, &[9; 8], &[], 0, &ack);
    assert_eq!(
        push(&d),
        Err(InitialError::BadFrame),
        "ACK range count lies"
    );

    // A retransmission that contradicts the bytes received before.
    let mut a = Assembler::new();
    let d = seal_initial(VERSION_1, &[9; 8], &[], 0, &crypto_frame(0, &ch[..50]));
    assert_eq!(a.push(&d), Ok(Progress2::NeedMore));
    let mut forged = ch[..50].to_vec();
    forged[20] ^= 0xff;
    let d = seal_initial(VERSION_1, &[9; 8], &[], 1, &crypto_frame(0, &forged));
    assert_eq!(a.push(&d), Err(InitialError::BadCrypto));
    // Garbage with another connection ID does not reset a connection's progress.
    let mut g = good.clone();
    g[6] ^= 0x55;
    assert_eq!(a.push(&g), Err(InitialError::Decrypt));
    let rest = seal_initial(VERSION_1, &[9; 8], &[], 2, &crypto_frame(50, &ch[50..]));
    assert_eq!(a.push(&rest), Ok(Progress2::Name("a.example.com".into())));
}

#[test]
fn ack_ping_padding_and_close_frames_are_skipped() {
    let ch = hello("b.example.com", 32);
    let mut frames = vec![0x01, 0x02, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00];
    frames.extend_from_slice(&[0x03, 0x05, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03]);
    frames.extend_from_slice(&crypto_frame(0, &ch));
    frames.extend_from_slice(&[0x1c, 0x00, 0x06, 0x02, b'n', b'o']);
    let d = seal_initial(VERSION_2, &[3; 12], &[4; 4], 7, &frames);
    assert_eq!(
        Assembler::new().push(&d),
        Ok(Progress2::Name("b.example.com".into()))
    );
}

#[test]
fn the_kernel_check_matches_the_decoder() {
    let d = seal_initial(VERSION_2, &[3; 12], &[], 7, &crypto_frame(0, &[1]));
    let v = u32::from_be_bytes(d[1..5].try_into().unwrap());
    assert!(is_initial(d[0], v));
    assert!(!is_initial(d[0] & 0x7f, v), "short header");
    assert!(
        !is_initial(d[0], VERSION_1),
        "v2's Initial type is v1's 0-RTT"
    );
    assert!(!is_initial(d[0], 0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_split_and_order_of_the_crypto_stream_gives_the_name(
        label in "[a-z][a-z0-9-]{0,20}",
        key_share in 32usize..1400,
        v2 in any::<bool>(),
        dcid in proptest::collection::vec(any::<u8>(), 0..=20),
        cuts in proptest::collection::vec(1usize..2000, 0..4),
        seed in any::<u64>(),
    ) {
        let name = std::format!("{label}.example.net");
        let ch = hello(&name, key_share);
        let mut points: Vec<usize> = cuts.into_iter().filter(|&c| c < ch.len()).collect();
        points.extend([0, ch.len()]);
        points.sort_unstable();
        points.dedup();
        let version = if v2 { VERSION_2 } else { VERSION_1 };
        let mut packets: Vec<Vec<u8>> = points
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                seal_initial(version, &dcid, &[5; 8], i as u32, &crypto_frame(w[0] as u64, &ch[w[0]..w[1]]))
            })
            .collect();
        // A deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..packets.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            packets.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut a = Assembler::new();
        let mut last = Ok(Progress2::NeedMore);
        for p in &packets {
            prop_assert_eq!(&last, &Ok(Progress2::NeedMore));
            last = a.push(p);
        }
        prop_assert_eq!(last, Ok(Progress2::Name(name)));
    }

    #[test]
    fn arbitrary_datagrams_never_panic(d in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let _ = Assembler::new().push(&d);
    }

    #[test]
    fn damaged_initials_are_refused(at in 0usize..1200, bit in 0u8..8) {
        let ch = hello("c.example.com", 32);
        let mut d = seal_initial(VERSION_1, &[6; 8], &[], 0, &crypto_frame(0, &ch));
        d[at] ^= 1 << bit;
        // Header bits the AEAD does not cover when changed decide nothing: the
        // packet number's length and value are authenticated via the AAD, so any
        // change must fail somewhere; only the name would be wrong if it did not.
        let r = Assembler::new().push(&d);
        prop_assert!(r.is_err(), "{at}/{bit}: {r:?}");
    }
}
