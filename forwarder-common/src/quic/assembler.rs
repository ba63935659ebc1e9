//! One connection's Initials reassembled into its ClientHello, and the ClientHello's SNI
//! read by the TLS-over-TCP parser.

use std::{string::String, vec, vec::Vec};

use super::{
    error::InitialError,
    frames::{CryptoPiece, crypto_frames},
    header::parse_header,
    keys::InitialKeys,
    open::{Opened, open_initial},
};
use crate::classify::{self, ClassifyState, Outcome, Progress};

/// The largest ClientHello reassembled: a TLS handshake message must fit one TLS
/// record for the shared parser (2^14 bytes); real ones, post-quantum key shares
/// included, are under 2 KiB.
pub const MAX_CRYPTO: usize = 16 * 1024 - 5;
/// CRYPTO frames kept apart (out-of-order pieces) before the packet counts as hostile.
const MAX_RANGES: usize = 32;

/// What a connection's Initials have given so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress2 {
    /// The ClientHello is not complete yet.
    NeedMore,
    /// The ClientHello's server_name.
    Name(String),
    /// A complete ClientHello without a server_name.
    NoSni,
}

/// One connection's Initial packets, as they arrive: keys, the CRYPTO stream being
/// reassembled, and its outcome. Memory is bounded by [`MAX_CRYPTO`].
#[derive(Clone, Debug, Default)]
pub struct Assembler {
    /// The keys, and the Destination Connection ID they were derived from.
    keys: Option<(u32, Vec<u8>, InitialKeys)>,
    largest_pn: Option<u64>,
    data: Vec<u8>,
    /// Received byte ranges of the stream, sorted and merged.
    ranges: Vec<(usize, usize)>,
    /// Initial packets decrypted.
    pub packets: u32,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one datagram of the client. The first Initial's connection ID gives the
    /// keys; a later Initial with another one (after a Retry) gives new keys and a new
    /// stream.
    pub fn push(&mut self, d: &[u8]) -> Result<Progress2, InitialError> {
        let h = parse_header(d)?;
        let reuse = self
            .keys
            .as_ref()
            .is_some_and(|(v, dcid, _)| *v == h.version && dcid == h.dcid);
        if !reuse {
            let keys = InitialKeys::client(h.version, h.dcid)
                .ok_or(InitialError::UnknownVersion(h.version))?;
            let opened = open_initial(d, &h, &keys, None)?;
            // Only a packet that decrypts replaces what came before: garbage with a
            // made-up connection ID cannot reset a connection's progress.
            *self = Self {
                keys: Some((h.version, h.dcid.to_vec(), keys)),
                ..Self::default()
            };
            return self.take(opened);
        }
        let (_, _, keys) = self.keys.as_ref().expect("checked above");
        let opened = open_initial(d, &h, keys, self.largest_pn)?;
        self.take(opened)
    }

    fn take(&mut self, o: Opened) -> Result<Progress2, InitialError> {
        self.packets += 1;
        self.largest_pn = Some(self.largest_pn.map_or(o.pn, |l| l.max(o.pn)));
        for piece in crypto_frames(&o.payload)? {
            self.insert(piece)?;
        }
        self.progress()
    }

    fn insert(&mut self, piece: CryptoPiece<'_>) -> Result<(), InitialError> {
        if piece.data.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(piece.offset).map_err(|_| InitialError::BadCrypto)?;
        let end = start
            .checked_add(piece.data.len())
            .filter(|&e| e <= MAX_CRYPTO)
            .ok_or(InitialError::BadCrypto)?;
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        // Bytes received twice must agree (retransmissions carry the same data).
        for &(s, e) in &self.ranges {
            let (a, b) = (s.max(start), e.min(end));
            if a < b && self.data[a..b] != piece.data[a - start..b - start] {
                return Err(InitialError::BadCrypto);
            }
        }
        self.data[start..end].copy_from_slice(piece.data);
        self.ranges.push((start, end));
        self.ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        if merged.len() > MAX_RANGES {
            return Err(InitialError::BadCrypto);
        }
        self.ranges = merged;
        Ok(())
    }

    /// The stream's bytes received without a gap from offset 0.
    fn contiguous(&self) -> &[u8] {
        match self.ranges.first() {
            Some(&(0, e)) => &self.data[..e],
            _ => &[],
        }
    }

    fn progress(&self) -> Result<Progress2, InitialError> {
        let c = self.contiguous();
        if c.is_empty() {
            return Ok(Progress2::NeedMore);
        }
        if c[0] != 1 {
            return Err(InitialError::NotClientHello);
        }
        if c.len() < 4 {
            return Ok(Progress2::NeedMore);
        }
        let len = 4 + (usize::from(c[1]) << 16 | usize::from(c[2]) << 8 | usize::from(c[3]));
        if len > MAX_CRYPTO {
            return Err(InitialError::NotClientHello);
        }
        if c.len() < len {
            return Ok(Progress2::NeedMore);
        }
        client_hello_sni(&c[..len])
    }
}

/// The SNI of a complete ClientHello handshake message, read by the TLS-over-TCP parser
/// behind the record header it would have had there.
pub fn client_hello_sni(msg: &[u8]) -> Result<Progress2, InitialError> {
    if msg.len() > MAX_CRYPTO {
        return Err(InitialError::NotClientHello);
    }
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend_from_slice(msg);
    let mut state = ClassifyState::default();
    match classify::feed(&mut state, &rec[..], rec.len(), 0) {
        Progress::Done(Outcome::TlsName(n)) => Ok(Progress2::Name(
            String::from_utf8_lossy(&rec[n.off..n.off + n.len]).into_owned(),
        )),
        Progress::Done(Outcome::TlsNoSni) => Ok(Progress2::NoSni),
        _ => Err(InitialError::NotClientHello),
    }
}
