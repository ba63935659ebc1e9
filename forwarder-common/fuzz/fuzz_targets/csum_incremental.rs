//! Incremental checksum updates (RFC 1624) against a full recompute (RFC 1071).
//!
//! Input layout: two bytes choosing where the checksum sits, two choosing the 4-byte field,
//! two choosing the 2-byte field, four bytes of new 4-byte value, two of new 2-byte value;
//! the rest (cut to an even length) is the buffer. Fields sit at even offsets, as every
//! header field the data path rewrites does, and never overlap the checksum. Values are
//! loaded with native byte order from the buffer, exactly as the kernel does (and as the
//! property tests in `csum.rs` do).
#![no_main]

use forwarder_common::csum::{checksum_be, replace2, replace4};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 12;

fn set_be(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// The `sel`-th (modulo their number) even offset where a `width`-byte field fits in `len`
/// bytes without touching the checksum at `ck_off`.
fn pick(sel: u16, width: usize, len: usize, ck_off: usize) -> Option<usize> {
    let fits = |o: &usize| o + width <= len && (o + width <= ck_off || *o >= ck_off + 2);
    let n = (0..len).step_by(2).filter(fits).count();
    if n == 0 {
        return None;
    }
    (0..len).step_by(2).filter(fits).nth(sel as usize % n)
}

/// The stored checksum must equal a full recompute over the buffer with a zeroed checksum
/// field (0x0000 and 0xffff are the same value in one's complement).
fn assert_matches(data: &mut [u8], ck_off: usize, what: &str) {
    let stored = u16::from_be_bytes([data[ck_off], data[ck_off + 1]]);
    set_be(data, ck_off, 0);
    let full = checksum_be(data);
    set_be(data, ck_off, stored);
    assert!(
        stored == full || (stored == 0xffff && full == 0) || (stored == 0 && full == 0xffff),
        "after {what}: incremental {stored:#06x} != recomputed {full:#06x}"
    );
}

fuzz_target!(|input: &[u8]| {
    if input.len() < HEADER + 4 {
        return;
    }
    let (hdr, rest) = input.split_at(HEADER);
    let sel = |i: usize| u16::from_le_bytes([hdr[i], hdr[i + 1]]);
    let new4 = u32::from_ne_bytes([hdr[6], hdr[7], hdr[8], hdr[9]]);
    let new2 = u16::from_ne_bytes([hdr[10], hdr[11]]);
    let mut data = rest[..rest.len() & !1].to_vec();
    let len = data.len();
    let ck_off = (sel(0) as usize % (len / 2)) * 2;

    // A correct checksum to start from, stored in network order.
    set_be(&mut data, ck_off, 0);
    let ck = checksum_be(&data);
    set_be(&mut data, ck_off, ck);

    if let Some(off) = pick(sel(2), 4, len, ck_off) {
        let old = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap());
        let old_ck = u16::from_ne_bytes(data[ck_off..ck_off + 2].try_into().unwrap());
        data[off..off + 4].copy_from_slice(&new4.to_ne_bytes());
        let upd = replace4(old_ck, old, new4);
        data[ck_off..ck_off + 2].copy_from_slice(&upd.to_ne_bytes());
        assert_matches(&mut data, ck_off, "replace4");
    }

    if let Some(off) = pick(sel(4), 2, len, ck_off) {
        let old = u16::from_ne_bytes(data[off..off + 2].try_into().unwrap());
        let old_ck = u16::from_ne_bytes(data[ck_off..ck_off + 2].try_into().unwrap());
        data[off..off + 2].copy_from_slice(&new2.to_ne_bytes());
        let upd = replace2(old_ck, old, new2);
        data[ck_off..ck_off + 2].copy_from_slice(&upd.to_ne_bytes());
        assert_matches(&mut data, ck_off, "replace2");
    }
});
