//! The kernel's step-wise interface: the driver's steps with their outcome as a code, and
//! the name's place kept in the state.

use super::{
    driver::{begin, exhausted, step},
    state::{ClassifyState, Outcome, Progress},
};
use crate::packet::Bytes;

/// Outcome codes of [`begin_coded`] and [`step_coded`].
pub const CODE_NEED_MORE: u32 = 0;
pub const CODE_TLS_NAME: u32 = 1;
pub const CODE_HTTP_NAME: u32 = 2;
pub const CODE_TLS_NO_SNI: u32 = 3;
pub const CODE_TLS_MALFORMED: u32 = 4;
pub const CODE_HTTP_NO_HOST: u32 = 5;
pub const CODE_HTTP_MALFORMED: u32 = 6;
pub const CODE_NOT_TLS_OR_HTTP: u32 = 7;

/// `step_coded` result: the step consumed a field or line, call again.
pub const STEP_CONTINUE: u32 = u32::MAX;

#[inline(always)]
fn code_of(state: &mut ClassifyState, p: Progress) -> u32 {
    match p {
        Progress::NeedMore => CODE_NEED_MORE,
        Progress::Done(o) => match o {
            Outcome::TlsName(n) | Outcome::HttpName(n) => {
                state.name_off = n.off as u32;
                state.name_len = n.len as u32;
                if matches!(o, Outcome::TlsName(_)) {
                    CODE_TLS_NAME
                } else {
                    CODE_HTTP_NAME
                }
            }
            Outcome::TlsNoSni => CODE_TLS_NO_SNI,
            Outcome::TlsMalformed => CODE_TLS_MALFORMED,
            Outcome::HttpNoHost => CODE_HTTP_NO_HOST,
            Outcome::HttpMalformed => CODE_HTTP_MALFORMED,
            Outcome::NotTlsOrHttp => CODE_NOT_TLS_OR_HTTP,
        },
    }
}

/// First part of [`feed`] for the kernel's step-wise driver: decides the protocol on a
/// connection's first byte. Returns a code, or `STEP_CONTINUE` to go on with
/// [`step_coded`].
///
/// [`feed`]: super::feed
#[inline(always)]
pub fn begin_coded<B: Bytes + ?Sized>(state: &mut ClassifyState, b: &B, base: u32) -> u32 {
    match begin(state, b, base) {
        None => STEP_CONTINUE,
        Some(p) => code_of(state, p),
    }
}

/// One field (TLS) or header line (HTTP): a code, or `STEP_CONTINUE`.
#[inline(always)]
pub fn step_coded<B: Bytes + ?Sized>(
    state: &mut ClassifyState,
    b: &B,
    len: usize,
    base: u32,
) -> u32 {
    let code = match step(state, b, len, base) {
        None => STEP_CONTINUE,
        Some(p) => code_of(state, p),
    };
    state.code = code;
    code
}

/// The code when `MAX_STEPS` steps found nothing.
#[inline(always)]
pub fn exhausted_code(state: &mut ClassifyState) -> u32 {
    let o = exhausted(state);
    code_of(state, Progress::Done(o))
}
