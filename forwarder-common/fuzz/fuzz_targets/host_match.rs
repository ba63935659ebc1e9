//! The host-table match (one backward pass, hash lookups at the dots) against a plain
//! reference: normalise the name, then try the exact name and each wildcard suffix, most
//! specific first. Any byte string must give the same verdict both ways.
#![no_main]

use std::collections::HashMap;

use forwarder_common::{
    HostKey,
    host::{HostPattern, NameMatch, match_name},
};
use libfuzzer_sys::fuzz_target;

const PATTERNS: &[&str] = &[
    "app.example.com",
    "*.example.com",
    "*.b.example.com",
    "x.b.example.com",
];

fn reference(name: &[u8]) -> NameMatch {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return NameMatch::Bad;
    }
    let ok = name
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    if !ok || lower.split('.').any(str::is_empty) {
        return NameMatch::Bad;
    }
    let ids: HashMap<&str, u32> = PATTERNS.iter().copied().zip(2..).collect();
    if let Some(&id) = ids.get(lower.as_str()) {
        return NameMatch::Host(id);
    }
    // Suffixes after each dot, longest (most specific) first.
    for (i, c) in lower.char_indices() {
        if c == '.'
            && let Some(&id) = ids.get(format!("*.{}", &lower[i + 1..]).as_str())
        {
            return NameMatch::Host(id);
        }
    }
    NameMatch::Other
}

fuzz_target!(|data: &[u8]| {
    let table: HashMap<HostKey, u32> = PATTERNS
        .iter()
        .zip(2..)
        .map(|(p, id)| (HostPattern::parse(p).unwrap().key(), id))
        .collect();
    let got = match_name(data, 0, data.len(), |k| table.get(k).copied());
    assert_eq!(got, reference(data), "{:?}", String::from_utf8_lossy(data));
});
