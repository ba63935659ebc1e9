//! Opening an Initial: header protection removed, the packet number recovered, the
//! payload decrypted.

use std::vec::Vec;

use super::{error::InitialError, header::InitialHeader, keys::InitialKeys};

/// A decrypted Initial packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub pn: u64,
    /// The frames.
    pub payload: Vec<u8>,
    /// Bytes of the datagram this packet took.
    pub len: usize,
}

/// Removes header protection from the Initial at the start of `d` and decrypts it with
/// `keys`. `largest_pn` is the largest packet number decrypted before on this
/// connection, for the full packet number (RFC 9000 appendix A.3).
pub fn open_initial(
    d: &[u8],
    h: &InitialHeader<'_>,
    keys: &InitialKeys,
    largest_pn: Option<u64>,
) -> Result<Opened, InitialError> {
    let sample: [u8; 16] = d[h.pn_offset + 4..h.pn_offset + 20]
        .try_into()
        .map_err(|_| InitialError::Truncated)?;
    let mask = keys.mask(&sample);
    let mut header = d[..h.pn_offset + 4].to_vec();
    header[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(header[0] & 3) + 1;
    let mut truncated = 0u64;
    for i in 0..pn_len {
        header[h.pn_offset + i] ^= mask[1 + i];
        truncated = (truncated << 8) | u64::from(header[h.pn_offset + i]);
    }
    header.truncate(h.pn_offset + pn_len);
    let pn = decode_pn(largest_pn, truncated, pn_len);
    let mut payload = d[h.pn_offset + pn_len..h.end].to_vec();
    let n = keys.open(pn, &header, &mut payload)?;
    payload.truncate(n);
    Ok(Opened {
        pn,
        payload,
        len: h.end,
    })
}

/// RFC 9000 appendix A.3.
fn decode_pn(largest: Option<u64>, truncated: u64, pn_len: usize) -> u64 {
    let expected = largest.map_or(0, |l| l + 1);
    let win = 1u64 << (pn_len * 8);
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | truncated;
    if candidate + hwin <= expected && candidate < (1 << 62) - win {
        candidate + win
    } else if candidate > expected + hwin && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}
