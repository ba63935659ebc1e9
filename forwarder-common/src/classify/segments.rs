//! The kernel's segment loop, on the host (with `std`).

use super::{
    driver::feed,
    limits::{MAX_SEGMENT_PAYLOAD, MAX_SEGMENTS},
    state::{ClassifyState, Outcome, Progress},
};

/// The kernel's segment loop, on the host: feeds `segments` in order the way the programs
/// do (carried bytes first) and returns the outcome with the name's bytes. Used by the
/// tests, the fuzz targets and the differential test against the kernel object.
pub fn run_segments(segments: &[&[u8]]) -> (Option<Outcome>, std::vec::Vec<u8>) {
    use std::vec::Vec;
    let mut s = ClassifyState::default();
    for seg in segments {
        if seg.is_empty() {
            continue;
        }
        s.segments += 1;
        if seg.len() > MAX_SEGMENT_PAYLOAD {
            return (None, Vec::new());
        }
        let carried = s.carry_len as usize;
        let mut buf: Vec<u8> = s.carry[..carried].to_vec();
        buf.extend_from_slice(seg);
        let base = if carried > 0 { s.pos } else { s.next_off };
        s.next_off += seg.len() as u32;
        match feed(&mut s, &buf[..], buf.len(), base) {
            Progress::Done(o) => {
                let name = match o {
                    Outcome::TlsName(n) | Outcome::HttpName(n) => {
                        buf[n.off..n.off + n.len].to_vec()
                    }
                    _ => Vec::new(),
                };
                return (Some(o), name);
            }
            Progress::NeedMore if s.segments >= MAX_SEGMENTS => return (None, Vec::new()),
            Progress::NeedMore => {}
        }
    }
    (None, Vec::new())
}
