//! Reading the host name a connection is for from its first payload: the SNI of a TLS
//! ClientHello or the Host of an HTTP/1 request, without terminating anything.
//!
//! The parser is resumable: when a ClientHello or request spans several TCP segments, the
//! kernel keeps a [`ClassifyState`] per flow and feeds it segment by segment. Each call gets
//! a buffer holding the bytes carried over from the previous segment followed by the new
//! segment's payload; whatever the next call must see again is copied into `state.carry`.
//! All loops are bounded by constants, every access is bounds-checked, nothing panics.

mod coded;
mod driver;
mod http;
mod limits;
#[cfg(feature = "std")]
mod segments;
mod state;
#[cfg(all(test, feature = "std"))]
mod tests;
mod tls;

#[cfg(feature = "std")]
pub use self::segments::run_segments;
pub use self::{
    coded::{
        CODE_HTTP_MALFORMED, CODE_HTTP_NAME, CODE_HTTP_NO_HOST, CODE_NEED_MORE,
        CODE_NOT_TLS_OR_HTTP, CODE_TLS_MALFORMED, CODE_TLS_NAME, CODE_TLS_NO_SNI, STEP_CONTINUE,
        begin_coded, exhausted_code, step_coded,
    },
    driver::feed,
    limits::{
        BUF_SIZE, CARRY_MAX, MAX_EXTENSIONS, MAX_HTTP_HEADER_BYTES, MAX_HTTP_LINES,
        MAX_SEGMENT_PAYLOAD, MAX_SEGMENTS, MAX_STEPS,
    },
    state::{ClassifyState, KIND_HTTP, KIND_NONE, KIND_TLS, NameAt, Outcome, Progress},
};
