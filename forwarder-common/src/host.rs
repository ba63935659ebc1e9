//! Host names: normalisation and the hash the kernel matches them by.
//!
//! The kernel never stores names, only this hash: FNV-1a (64 bit) over the normalised
//! name's bytes *from the last to the first*. Reading a name backwards, every suffix
//! `example.com` of `app.example.com` is a prefix of the input, so one backward pass yields
//! the hashes of all suffixes at their dots: exact and wildcard matches in one loop.

/// Longest name (DNS limit).
pub const MAX_NAME_LEN: usize = 253;

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of the hash (the kernel calls this per byte, backwards).
#[inline(always)]
pub const fn hash_step(h: u64, byte: u8) -> u64 {
    (h ^ byte as u64).wrapping_mul(FNV_PRIME)
}

/// Lowercases ASCII letters; returns `None` for bytes that cannot be in a host name
/// (letters, digits, `-`, `_` and `.` are allowed).
#[inline(always)]
pub const fn normalize_byte(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b + 32),
        b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => Some(b),
        _ => None,
    }
}

/// The hash of a normalised name (as stored in the host table).
pub fn name_hash(name: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = name.len();
    while i > 0 {
        i -= 1;
        h = hash_step(h, name[i]);
    }
    h
}

#[cfg(feature = "std")]
mod user {
    extern crate alloc;
    use alloc::{borrow::ToOwned, format, string::String};

    use super::*;

    /// A host pattern from the configuration: `app.example.com` or `*.example.com`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct HostPattern {
        /// As the user wrote it (normalised); used as the metric label.
        pub label: String,
        /// The name without `*.`.
        pub name: String,
        pub wildcard: bool,
    }

    impl HostPattern {
        pub fn parse(s: &str) -> Result<Self, String> {
            let lower = s.trim().to_ascii_lowercase();
            let lower = lower.strip_suffix('.').unwrap_or(&lower).to_owned();
            let (wildcard, name) = match lower.strip_prefix("*.") {
                Some(rest) => (true, rest.to_owned()),
                None => (false, lower.clone()),
            };
            if name.is_empty() {
                return Err(format!("host {s:?}: empty name"));
            }
            if name.len() > MAX_NAME_LEN {
                return Err(format!("host {s:?}: longer than {MAX_NAME_LEN} characters"));
            }
            if name.contains('*') {
                return Err(format!(
                    "host {s:?}: a wildcard may only be a leading \"*.\""
                ));
            }
            if let Some(c) = name.bytes().find(|b| normalize_byte(*b).is_none()) {
                return Err(format!("host {s:?}: invalid character {:?}", c as char));
            }
            if name.split('.').any(str::is_empty) {
                return Err(format!("host {s:?}: empty label"));
            }
            if matches!(lower.as_str(), "other" | "unknown") {
                return Err(format!("host {s:?}: reserved label"));
            }
            Ok(HostPattern {
                label: lower,
                name,
                wildcard,
            })
        }

        pub fn hash(&self) -> u64 {
            name_hash(self.name.as_bytes())
        }
    }
}

#[cfg(feature = "std")]
pub use user::HostPattern;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_hashes_fall_out_of_the_backward_pass() {
        let name = b"app.example.com";
        let mut h = FNV_OFFSET;
        let mut at_dots = std::vec::Vec::new();
        for i in (0..name.len()).rev() {
            if name[i] == b'.' {
                at_dots.push(h);
            }
            h = hash_step(h, name[i]);
        }
        assert_eq!(h, name_hash(name));
        assert_eq!(at_dots, [name_hash(b"com"), name_hash(b"example.com")]);
    }

    #[cfg(feature = "std")]
    #[test]
    fn patterns() {
        let p = HostPattern::parse("*.Example.COM.").unwrap();
        assert!(p.wildcard);
        assert_eq!(p.label, "*.example.com");
        assert_eq!(p.hash(), name_hash(b"example.com"));
        for bad in ["", "*.", "a..b", "a*.b", "exa mple.com", "other"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
