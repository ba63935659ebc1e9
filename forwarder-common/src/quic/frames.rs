//! The frames of a decrypted Initial: the CRYPTO pieces, everything else checked and
//! skipped.

use std::vec::Vec;

use super::{error::InitialError, varint::varint};

/// A CRYPTO frame's piece of the handshake stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CryptoPiece<'a> {
    pub offset: u64,
    pub data: &'a [u8],
}

/// The CRYPTO frames of a decrypted Initial's payload, checking that every frame is one
/// an Initial may carry (RFC 9000 section 17.2.2: PADDING, PING, ACK, CRYPTO,
/// CONNECTION_CLOSE) and lies within the payload.
pub fn crypto_frames(p: &[u8]) -> Result<Vec<CryptoPiece<'_>>, InitialError> {
    let bad = InitialError::BadFrame;
    let mut out = Vec::new();
    let mut at = 0;
    while at < p.len() {
        let ty = varint(p, &mut at).ok_or(bad)?;
        match ty {
            0x00 | 0x01 => {}
            0x02 | 0x03 => {
                // Largest acknowledged, delay, range count, first range, then the
                // ranges, then three ECN counts for type 3.
                let _ = varint(p, &mut at).ok_or(bad)?;
                let _ = varint(p, &mut at).ok_or(bad)?;
                let ranges = varint(p, &mut at).ok_or(bad)?;
                let _ = varint(p, &mut at).ok_or(bad)?;
                // Each range takes at least two bytes: a count beyond that is a lie.
                if ranges > (p.len() - at) as u64 / 2 {
                    return Err(bad);
                }
                for _ in 0..ranges * 2 + if ty == 3 { 3 } else { 0 } {
                    let _ = varint(p, &mut at).ok_or(bad)?;
                }
            }
            0x06 => {
                let offset = varint(p, &mut at).ok_or(bad)?;
                let len = varint(p, &mut at).ok_or(bad)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| at.checked_add(l))
                    .filter(|&e| e <= p.len())
                    .ok_or(bad)?;
                out.push(CryptoPiece {
                    offset,
                    data: &p[at..end],
                });
                at = end;
            }
            0x1c => {
                let _ = varint(p, &mut at).ok_or(bad)?;
                let _ = varint(p, &mut at).ok_or(bad)?;
                let len = varint(p, &mut at).ok_or(bad)?;
                at = usize::try_from(len)
                    .ok()
                    .and_then(|l| at.checked_add(l))
                    .filter(|&e| e <= p.len())
                    .ok_or(bad)?;
            }
            _ => return Err(bad),
        }
    }
    Ok(out)
}
