extern crate std;
use std::vec::Vec;

use proptest::prelude::*;

use super::admit;

#[test]
fn a_burst_then_the_rate() {
    let s = 1_000_000_000u64;
    let mut tat = 0;
    let mut ok = 0;
    for _ in 0..10 {
        if let Some(t) = admit(tat, 5 * s, 2, 3) {
            tat = t;
            ok += 1;
        }
    }
    assert_eq!(ok, 3, "the burst at once");
    assert_eq!(
        admit(tat, 5 * s + s / 4, 2, 3),
        None,
        "nothing refilled yet"
    );
    assert!(
        admit(tat, 5 * s + s / 2, 2, 3).is_some(),
        "one back after 1/rate"
    );
    assert_eq!(admit(7, 9, 0, 0), Some(7), "rate 0: no limit");
}

proptest! {
    /// However connections arrive, no window of `w` seconds admits more than
    /// `burst + rate * w` (rounded up) of them.
    #[test]
    fn never_more_than_burst_plus_rate(
        rate in 1u16..50,
        burst in 1u16..20,
        gaps in proptest::collection::vec(0u64..300_000_000, 1..200),
    ) {
        let mut now = 1_000_000_000u64;
        let mut tat = 0;
        let mut admitted = Vec::new();
        for g in gaps {
            now += g;
            if let Some(t) = admit(tat, now, rate, burst) {
                tat = t;
                admitted.push(now);
            }
        }
        let interval = 1_000_000_000 / rate as u64;
        for (i, &start) in admitted.iter().enumerate() {
            let in_window = admitted[i..].iter().take_while(|&&t| t - start < 1_000_000_000).count() as u64;
            prop_assert!(in_window <= burst as u64 + 1_000_000_000 / interval + 1,
                "{in_window} in one second at rate {rate} burst {burst}");
        }
    }
}
