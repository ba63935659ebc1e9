//! Host names: normalisation and the hash the kernel matches them by.
//!
//! The kernel never stores names, only this hash: FNV-1a (64 bit) over the normalised
//! name's bytes *from the last to the first*. Reading a name backwards, every suffix
//! `example.com` of `app.example.com` is a prefix of the input, so one backward pass yields
//! the hashes of all suffixes at their dots: exact and wildcard matches in one loop.

use crate::{HostKey, packet::Bytes};

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

/// What a name read from a connection matched in the host table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameMatch {
    /// A configured host (exact name, or the most specific wildcard).
    Host(u32),
    /// A well-formed name that is not configured.
    Other,
    /// Not a host name (empty, too long, invalid characters, empty labels).
    Bad,
}

/// Matches `b[off..off + len]` against the host table, normalising on the way: one
/// backward pass computes the name's hash and, at each dot, looks up the wildcard entry of
/// the suffix after it. An exact entry beats any wildcard; a longer wildcard suffix beats a
/// shorter one. `lookup` is the host table (a BPF map in the kernel).
#[inline(always)]
pub fn match_name<B: Bytes + ?Sized>(
    b: &B,
    off: usize,
    len: usize,
    mut lookup: impl FnMut(&HostKey) -> Option<u32>,
) -> NameMatch {
    let mut w = match NameWalk::begin(b, off, len) {
        Ok(w) => w,
        Err(m) => return m,
    };
    let mut n = 0;
    while n < MAX_NAME_LEN {
        if !w.step(b, n, &mut lookup) {
            break;
        }
        n += 1;
    }
    w.end(lookup)
}

/// The state of [`match_name`]'s backward pass, for callers that run its steps one at a
/// time (the kernel, one `bpf_loop` iteration per byte, so that the verifier checks one
/// step instead of every iteration of a 253-byte loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameWalk {
    /// Hash of the bytes walked so far.
    pub h: u64,
    /// Offset of the name's first byte, and its length without a trailing dot.
    pub off: u32,
    pub len: u32,
    /// Most specific wildcard match so far, `u32::MAX` for none.
    pub best: u32,
    /// Whether the byte walked last was a dot (true at the start: an empty last label).
    pub prev_dot: bool,
    /// Set when the name turned out not to be a host name.
    pub bad: bool,
}

impl NameWalk {
    #[inline(always)]
    pub fn begin<B: Bytes + ?Sized>(b: &B, off: usize, len: usize) -> Result<Self, NameMatch> {
        // One trailing dot (an absolute name) is allowed and ignored.
        let mut len = len;
        if len > 0 && b.raw8(off + len - 1) == Some(b'.') {
            len -= 1;
        }
        if len == 0 || len > MAX_NAME_LEN {
            return Err(NameMatch::Bad);
        }
        Ok(NameWalk {
            h: FNV_OFFSET,
            off: off as u32,
            len: len as u32,
            best: u32::MAX,
            prev_dot: true,
            bad: false,
        })
    }

    /// Walks the `n`-th byte from the end; false when the walk is over (all bytes done, or
    /// a bad one).
    #[inline(always)]
    pub fn step<B: Bytes + ?Sized>(
        &mut self,
        b: &B,
        n: usize,
        lookup: &mut impl FnMut(&HostKey) -> Option<u32>,
    ) -> bool {
        let len = self.len as usize;
        if n >= len || self.bad {
            return false;
        }
        let Some(c) = b
            .raw8(self.off as usize + len - 1 - n)
            .and_then(normalize_byte)
        else {
            self.bad = true;
            return false;
        };
        if c == b'.' {
            if self.prev_dot {
                self.bad = true;
                return false;
            }
            let key = HostKey {
                hash: self.h,
                wildcard: 1,
                _pad: 0,
            };
            if let Some(id) = lookup(&key) {
                self.best = id;
            }
            self.prev_dot = true;
        } else {
            self.prev_dot = false;
        }
        self.h = hash_step(self.h, c);
        n + 1 < len
    }

    /// The verdict once [`NameWalk::step`] said the walk is over.
    #[inline(always)]
    pub fn end(&self, mut lookup: impl FnMut(&HostKey) -> Option<u32>) -> NameMatch {
        // `prev_dot` at the end: a leading dot (or bytes never walked).
        if self.bad || self.prev_dot {
            return NameMatch::Bad;
        }
        let key = HostKey {
            hash: self.h,
            wildcard: 0,
            _pad: 0,
        };
        match lookup(&key) {
            Some(id) => NameMatch::Host(id),
            None if self.best != u32::MAX => NameMatch::Host(self.best),
            None => NameMatch::Other,
        }
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
    use alloc::{borrow::ToOwned, string::String};

    use super::*;

    /// A host pattern the configuration may not hold.
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    #[error("host {host:?}: {problem}")]
    pub struct HostPatternError {
        /// As it was given.
        pub host: String,
        pub problem: Problem,
    }

    /// What is wrong with a host pattern.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum Problem {
        #[error("empty name")]
        Empty,
        #[error("longer than {MAX_NAME_LEN} characters")]
        TooLong,
        #[error("a wildcard may only be a leading \"*.\"")]
        InnerWildcard,
        #[error("invalid character {0:?}")]
        Character(char),
        #[error("empty label")]
        EmptyLabel,
        #[error("reserved label")]
        Reserved,
    }

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
        pub fn parse(s: &str) -> Result<Self, HostPatternError> {
            let lower = s.trim().to_ascii_lowercase();
            let lower = lower.strip_suffix('.').unwrap_or(&lower).to_owned();
            let (wildcard, name) = match lower.strip_prefix("*.") {
                Some(rest) => (true, rest.to_owned()),
                None => (false, lower.clone()),
            };
            let problem = if name.is_empty() {
                Some(Problem::Empty)
            } else if name.len() > MAX_NAME_LEN {
                Some(Problem::TooLong)
            } else if name.contains('*') {
                Some(Problem::InnerWildcard)
            } else if let Some(c) = name.bytes().find(|b| normalize_byte(*b).is_none()) {
                Some(Problem::Character(c as char))
            } else if name.split('.').any(str::is_empty) {
                Some(Problem::EmptyLabel)
            } else if matches!(lower.as_str(), "other" | "unknown") {
                Some(Problem::Reserved)
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(HostPatternError {
                    host: s.to_owned(),
                    problem,
                });
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

        /// The key of this pattern in the kernel's host table.
        pub fn key(&self) -> HostKey {
            HostKey {
                hash: self.hash(),
                wildcard: u32::from(self.wildcard),
                _pad: 0,
            }
        }
    }
}

#[cfg(feature = "std")]
pub use user::{HostPattern, HostPatternError, Problem as HostPatternProblem};

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

    fn table(entries: &[(&str, u32)]) -> std::collections::HashMap<HostKey, u32> {
        entries
            .iter()
            .map(|(p, id)| {
                let (w, n) = match p.strip_prefix("*.") {
                    Some(n) => (1, n),
                    None => (0, *p),
                };
                (
                    HostKey {
                        hash: name_hash(n.as_bytes()),
                        wildcard: w,
                        _pad: 0,
                    },
                    *id,
                )
            })
            .collect()
    }

    #[test]
    fn most_specific_match_wins() {
        let t = table(&[
            ("*.example.com", 2),
            ("app.example.com", 3),
            ("*.dev.example.com", 4),
        ]);
        let m = |name: &str| match_name(name.as_bytes(), 0, name.len(), |k| t.get(k).copied());
        assert_eq!(m("app.example.com"), NameMatch::Host(3));
        assert_eq!(m("APP.Example.com."), NameMatch::Host(3));
        assert_eq!(m("blog.example.com"), NameMatch::Host(2));
        assert_eq!(m("a.b.example.com"), NameMatch::Host(2));
        assert_eq!(m("x.dev.example.com"), NameMatch::Host(4));
        // A wildcard matches names strictly below its suffix.
        assert_eq!(m("example.com"), NameMatch::Other);
        assert_eq!(m("dev.example.com"), NameMatch::Host(2));
        assert_eq!(m("example.org"), NameMatch::Other);
        for bad in [
            "",
            ".",
            "a..example.com",
            ".example.com",
            "exa mple.com",
            "a\u{0}b",
        ] {
            assert_eq!(m(bad), NameMatch::Bad, "{bad:?}");
        }
        let long = "a".repeat(254);
        assert_eq!(m(&long), NameMatch::Bad);
    }

    #[cfg(feature = "std")]
    #[test]
    fn patterns() {
        let p = HostPattern::parse("*.Example.COM.").unwrap();
        assert!(p.wildcard);
        assert_eq!(p.label, "*.example.com");
        assert_eq!(p.hash(), name_hash(b"example.com"));
        assert_eq!(p.key().hash, name_hash(b"example.com"));
        assert_eq!(p.key().wildcard, 1);
        assert_eq!(
            HostPattern::parse("App.example.com")
                .unwrap()
                .key()
                .wildcard,
            0
        );
        for bad in ["", "*.", "a..b", "a*.b", "exa mple.com", "other"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod properties {
    extern crate std;
    use std::{collections::HashMap, format, string::String, vec::Vec};

    use proptest::prelude::*;

    use super::*;

    /// The plain reading of "exact beats wildcard, longer wildcard beats shorter".
    fn reference(name: &str, table: &HashMap<String, u32>) -> NameMatch {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if let Some(&id) = table.get(&name) {
            return NameMatch::Host(id);
        }
        for (i, c) in name.char_indices() {
            if c == '.'
                && let Some(&id) = table.get(&format!("*.{}", &name[i + 1..]))
            {
                return NameMatch::Host(id);
            }
        }
        NameMatch::Other
    }

    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("app".into()),
            Just("example".into()),
            Just("com".into()),
            Just("b".into()),
            "[a-z0-9-]{1,6}",
        ]
    }

    proptest! {
        #[test]
        fn matches_like_the_plain_reading(
            labels in proptest::collection::vec(label(), 1..6),
            patterns in proptest::collection::vec(
                (proptest::collection::vec(label(), 1..4), any::<bool>()), 0..6),
            upper in any::<bool>(),
            dot in any::<bool>(),
        ) {
            let mut table = HashMap::new();
            let mut keys = HashMap::new();
            for (id, (p, wildcard)) in (crate::HOST_FIRST_CONFIGURED..).zip(&patterns) {
                let text = format!("{}{}", if *wildcard { "*." } else { "" }, p.join("."));
                let pat = HostPattern::parse(&text).unwrap();
                // The daemon rejects duplicates; the first one stands here.
                if let std::collections::hash_map::Entry::Vacant(e) = table.entry(text) {
                    e.insert(id);
                    keys.insert(pat.key(), id);
                }
            }
            let mut name = labels.join(".");
            if upper {
                name = name.to_ascii_uppercase();
            }
            if dot {
                name.push('.');
            }
            let got = match_name(name.as_bytes(), 0, name.len(), |k| keys.get(k).copied());
            prop_assert_eq!(got, reference(&name, &table));
        }

        #[test]
        fn anything_else_is_bad(name in "[a-z]{0,4}[^a-zA-Z0-9._-][a-z.]{0,4}|\\.[a-z]{1,4}|[a-z]{1,4}\\.\\.[a-z]{1,4}") {
            let bytes: Vec<u8> = name.bytes().collect();
            prop_assert_eq!(match_name(&bytes[..], 0, bytes.len(), |_| Some(7)), NameMatch::Bad);
        }
    }
}
