//! Client Initials built and sealed: the test and benchmark side of the decoder.

use std::{vec, vec::Vec};

use super::{
    check::{MIN_INITIAL_DATAGRAM, VERSION_2},
    keys::InitialKeys,
    varint::put_varint,
};

/// Builds the datagram of a client Initial: the test and benchmark side of
/// [`Assembler`]. `frames` is the plaintext payload; it is padded so the datagram is
/// at least [`MIN_INITIAL_DATAGRAM`] bytes, and a 4-byte packet number is used.
///
/// [`Assembler`]: super::Assembler
pub fn seal_initial(version: u32, dcid: &[u8], scid: &[u8], pn: u32, frames: &[u8]) -> Vec<u8> {
    let keys = InitialKeys::client(version, dcid).expect("version 1 or 2");
    let ty = if version == VERSION_2 { 1 } else { 0 };
    let mut h = vec![0xc0 | (ty << 4) | 3];
    h.extend_from_slice(&version.to_be_bytes());
    h.push(dcid.len() as u8);
    h.extend_from_slice(dcid);
    h.push(scid.len() as u8);
    h.extend_from_slice(scid);
    h.push(0); // no token
    let fixed = h.len() + 2 + 4 + 16;
    let mut payload = frames.to_vec();
    if fixed + payload.len() < MIN_INITIAL_DATAGRAM {
        payload.resize(MIN_INITIAL_DATAGRAM - fixed, 0);
    }
    let length = 4 + payload.len() + 16;
    assert!(
        length < 0x4000,
        "Initial payload too large for this builder"
    );
    h.extend_from_slice(&(0x4000 | length as u16).to_be_bytes());
    let pn_offset = h.len();
    h.extend_from_slice(&pn.to_be_bytes());
    keys.seal(u64::from(pn), &h, &mut payload);
    let mut d = h;
    d.extend_from_slice(&payload);
    let sample: [u8; 16] = d[pn_offset + 4..pn_offset + 20]
        .try_into()
        .expect("long enough");
    let mask = keys.mask(&sample);
    d[0] ^= mask[0] & 0x0f;
    for i in 0..4 {
        d[pn_offset + i] ^= mask[1 + i];
    }
    d
}

/// A CRYPTO frame carrying `data` at `offset`.
pub fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    put_varint(&mut f, offset);
    put_varint(&mut f, data.len() as u64);
    f.extend_from_slice(data);
    f
}
