//! Initial packet protection keys (RFC 9001 section 5.2): derived from the client's
//! Destination Connection ID, header protection masks, AEAD open and seal.

use std::vec::Vec;

use aes::cipher::{BlockCipherEncrypt as _, KeyInit as _};
use aes_gcm::{AeadInOut as _, Aes128Gcm};
use hkdf::Hkdf;
use sha2::Sha256;

use super::{
    check::{VERSION_1, VERSION_2},
    error::InitialError,
};

const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

/// One direction's Initial packet protection keys (RFC 9001 section 5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialKeys {
    pub key: [u8; 16],
    pub iv: [u8; 12],
    pub hp: [u8; 16],
}

/// TLS 1.3's HKDF-Expand-Label with an empty context.
fn expand_label(secret: &[u8], label: &str, out: &mut [u8]) {
    let full = [b"tls13 ", label.as_bytes()].concat();
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend_from_slice(&(out.len() as u16).to_be_bytes());
    info.push(full.len() as u8);
    info.extend_from_slice(&full);
    info.push(0);
    let hk = Hkdf::<Sha256>::from_prk(secret).expect("secrets here are 32 bytes");
    hk.expand(&info, out)
        .expect("output lengths here are at most 32 bytes");
}

impl InitialKeys {
    /// The client's Initial keys for a connection whose client chose `dcid`.
    /// `None` for a version other than 1 and 2.
    pub fn client(version: u32, dcid: &[u8]) -> Option<Self> {
        let (salt, prefix) = match version {
            VERSION_1 => (&SALT_V1, "quic"),
            VERSION_2 => (&SALT_V2, "quicv2"),
            _ => return None,
        };
        let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), dcid);
        let mut secret = [0u8; 32];
        expand_label(&prk, "client in", &mut secret);
        let mut k = Self {
            key: [0; 16],
            iv: [0; 12],
            hp: [0; 16],
        };
        expand_label(&secret, &[prefix, " key"].concat(), &mut k.key);
        expand_label(&secret, &[prefix, " iv"].concat(), &mut k.iv);
        expand_label(&secret, &[prefix, " hp"].concat(), &mut k.hp);
        Some(k)
    }

    /// The header protection mask for `sample` (AES-128 in ECB mode, one block).
    pub fn mask(&self, sample: &[u8; 16]) -> [u8; 16] {
        let c = aes::Aes128::new_from_slice(&self.hp).expect("16-byte key");
        let mut block = aes::Block::from(*sample);
        c.encrypt_block(&mut block);
        block.into()
    }

    /// The AEAD nonce of packet number `pn`.
    pub fn nonce(&self, pn: u64) -> [u8; 12] {
        let mut n = self.iv;
        for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        n
    }

    fn aead(&self) -> Aes128Gcm {
        Aes128Gcm::new_from_slice(&self.key).expect("16-byte key")
    }

    /// Decrypts `payload` (ciphertext with its 16-byte tag at the end) in place and
    /// returns the plaintext's length.
    pub fn open(&self, pn: u64, aad: &[u8], payload: &mut [u8]) -> Result<usize, InitialError> {
        let Some(n) = payload.len().checked_sub(16) else {
            return Err(InitialError::Truncated);
        };
        let (msg, tag) = payload.split_at_mut(n);
        let tag = aes_gcm::Tag::try_from(&*tag).map_err(|_| InitialError::Truncated)?;
        let nonce = aes_gcm::Nonce::from(self.nonce(pn));
        self.aead()
            .decrypt_inout_detached(&nonce, aad, msg.into(), &tag)
            .map_err(|_| InitialError::Decrypt)?;
        Ok(n)
    }

    /// Encrypts `payload` in place and appends the tag: the client's side, for tests
    /// and benchmarks that need real Initials.
    pub fn seal(&self, pn: u64, aad: &[u8], payload: &mut Vec<u8>) {
        let tag = self
            .aead()
            .encrypt_inout_detached(
                &aes_gcm::Nonce::from(self.nonce(pn)),
                aad,
                payload.as_mut_slice().into(),
            )
            .expect("Initial payloads are far below AES-GCM's limit");
        payload.extend_from_slice(&tag);
    }
}
