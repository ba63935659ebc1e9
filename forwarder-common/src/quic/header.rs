//! The clear part of an Initial's long header.

use super::{
    check::{MAX_CID_LEN, VERSION_1, VERSION_2, is_initial},
    error::InitialError,
    varint::varint,
};

/// The clear part of an Initial's long header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialHeader<'a> {
    pub version: u32,
    pub dcid: &'a [u8],
    pub scid: &'a [u8],
    pub token: &'a [u8],
    /// Offset of the (protected) packet number.
    pub pn_offset: usize,
    /// Offset just past this packet (its Length field counted from `pn_offset`): a
    /// datagram may carry further, coalesced packets after it.
    pub end: usize,
}

/// Parses the long header of the packet at the start of `d`.
pub fn parse_header(d: &[u8]) -> Result<InitialHeader<'_>, InitialError> {
    let first = *d.first().ok_or(InitialError::Truncated)?;
    if first & 0xc0 != 0xc0 {
        return Err(InitialError::NotLongHeader);
    }
    let v = d.get(1..5).ok_or(InitialError::Truncated)?;
    let version = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    if version == 0 {
        return Err(InitialError::VersionNegotiation);
    }
    if version != VERSION_1 && version != VERSION_2 {
        return Err(InitialError::UnknownVersion(version));
    }
    if !is_initial(first, version) {
        return Err(InitialError::NotInitial);
    }
    let mut at = 5;
    let cid = |at: &mut usize| -> Result<&[u8], InitialError> {
        let len = usize::from(*d.get(*at).ok_or(InitialError::Truncated)?);
        if len > MAX_CID_LEN {
            return Err(InitialError::BadConnectionId);
        }
        let c = d
            .get(*at + 1..*at + 1 + len)
            .ok_or(InitialError::Truncated)?;
        *at += 1 + len;
        Ok(c)
    };
    let dcid = cid(&mut at)?;
    let scid = cid(&mut at)?;
    let token_len = varint(d, &mut at).ok_or(InitialError::Truncated)?;
    let token_end = usize::try_from(token_len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&e| e <= d.len())
        .ok_or(InitialError::Truncated)?;
    let token = &d[at..token_end];
    at = token_end;
    let length = varint(d, &mut at).ok_or(InitialError::Truncated)?;
    let end = usize::try_from(length)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&e| e <= d.len())
        .ok_or(InitialError::Truncated)?;
    // The header protection sample starts 4 bytes after the packet number's offset.
    if end < at + 4 + 16 {
        return Err(InitialError::Truncated);
    }
    Ok(InitialHeader {
        version,
        dcid,
        scid,
        token,
        pn_offset: at,
        end,
    })
}
