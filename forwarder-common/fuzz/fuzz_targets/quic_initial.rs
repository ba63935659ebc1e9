//! The daemon's QUIC Initial decoder fed a connection's datagrams: arbitrary ones (header
//! parsing, header protection, the AEAD refusing garbage), and arbitrary plaintext payloads
//! sealed into valid Initials here, so the frame parser and the CRYPTO reassembly get
//! fuzzed behind the encryption too. It never panics, and a name comes only from bytes
//! that were given.
#![no_main]

use forwarder_common::quic::{Assembler, Progress2, VERSION_1, VERSION_2, seal_initial};
use libfuzzer_sys::fuzz_target;

/// The datagrams of one connection the kernel hands over at most.
const MAX_DATAGRAMS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut a = Assembler::new();
    let version = if mode & 2 != 0 { VERSION_2 } else { VERSION_1 };
    for pn in 0..MAX_DATAGRAMS as u32 {
        if rest.len() < 2 {
            break;
        }
        let len = (usize::from(rest[0]) << 8 | usize::from(rest[1])).min(rest.len() - 2);
        let part = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let r = if mode & 1 == 0 {
            a.push(part)
        } else if part.len() < 1100 {
            a.push(&seal_initial(version, &[0x5a; 8], &[1], pn, part))
        } else {
            continue;
        };
        if let Ok(Progress2::Name(n)) = r {
            assert!(!n.is_empty() && n.len() <= data.len());
        }
    }
});
