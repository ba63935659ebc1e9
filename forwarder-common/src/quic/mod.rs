//! QUIC Initial packets: what the kernel checks before it hands a datagram to the daemon
//! (`no_std`, here so both sides agree), and with the `quic` feature the daemon's side:
//! removing header protection, decrypting the Initial (RFC 9001 section 5, QUIC v1 and
//! v2), reassembling the CRYPTO frames of a ClientHello that spans packets, and reading its
//! SNI with the same parser as TLS over TCP ([`crate::classify`]).
//!
//! The Initial keys are derived from the client's Destination Connection ID, which travels
//! in clear, so anyone on the path can read the ClientHello; that is the point of this
//! module, and also why nothing here is a secret.

#[cfg(feature = "quic")]
mod assembler;
mod check;
#[cfg(feature = "quic")]
mod error;
#[cfg(feature = "quic")]
mod frames;
#[cfg(feature = "quic")]
mod header;
#[cfg(feature = "quic")]
mod keys;
#[cfg(feature = "quic")]
mod open;
#[cfg(feature = "quic")]
mod seal;
#[cfg(all(test, feature = "quic"))]
mod tests;
#[cfg(feature = "quic")]
mod varint;

pub use self::check::{MAX_CID_LEN, MIN_INITIAL_DATAGRAM, VERSION_1, VERSION_2, is_initial};
#[cfg(feature = "quic")]
pub use self::{
    assembler::{Assembler, MAX_CRYPTO, Progress2, client_hello_sni},
    error::InitialError,
    frames::{CryptoPiece, crypto_frames},
    header::{InitialHeader, parse_header},
    keys::InitialKeys,
    open::{Opened, open_initial},
    seal::{crypto_frame, seal_initial},
    varint::{put_varint, varint},
};
