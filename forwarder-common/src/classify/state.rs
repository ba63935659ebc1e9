//! The per-flow parse state, what a call reports, and carrying bytes into the next call.

use super::limits::CARRY_MAX;
use crate::packet::Bytes;

pub const KIND_NONE: u8 = 0;
pub const KIND_TLS: u8 = 1;
pub const KIND_HTTP: u8 = 2;

/// Per-flow parse state (kept in a BPF map between segments).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassifyState {
    /// `KIND_*`, decided on the first payload byte.
    pub kind: u8,
    pub stage: u8,
    pub segments: u8,
    pub _pad: u8,
    /// TCP sequence number of the next payload byte expected.
    pub next_seq: u32,
    /// Stream offset (bytes since the first payload byte) of `next_seq`.
    pub next_off: u32,
    /// Stream offset of the field the next call starts with (the first carried byte, or a
    /// position in a later segment when skipping).
    pub pos: u32,
    /// Stream offset where the ClientHello's extensions end.
    pub ext_end: u32,
    /// Stream offset where the server_name extension ends.
    pub sni_end: u32,
    /// Extensions seen so far.
    pub extensions: u32,
    /// Bytes in `carry`.
    pub carry_len: u32,
    /// Where [`step_coded`](super::step_coded) reports the name it found (offsets in the
    /// buffer).
    pub name_off: u32,
    pub name_len: u32,
    /// The code of the last [`step_coded`] call. Kept here rather than returned through
    /// the caller's stack: the verifier tracks stack values, and a value that differs
    /// between `bpf_loop` iterations makes it check the loop body once more per value.
    ///
    /// [`step_coded`]: super::step_coded
    pub code: u32,
    pub carry: [u8; CARRY_MAX],
}

impl Default for ClassifyState {
    fn default() -> Self {
        ClassifyState {
            kind: KIND_NONE,
            stage: 0,
            segments: 0,
            _pad: 0,
            next_seq: 0,
            next_off: 0,
            pos: 0,
            ext_end: 0,
            sni_end: 0,
            extensions: 0,
            carry_len: 0,
            name_off: 0,
            name_len: 0,
            code: 0,
            carry: [0; CARRY_MAX],
        }
    }
}

/// Where the name sits in the buffer that was passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAt {
    pub off: usize,
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The ClientHello's server_name.
    TlsName(NameAt),
    /// The request's Host (or absolute-form target) without port.
    HttpName(NameAt),
    TlsNoSni,
    TlsMalformed,
    HttpNoHost,
    HttpMalformed,
    NotTlsOrHttp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Feed the next segment (with `state.carry` in front).
    NeedMore,
    Done(Outcome),
}

/// Carries `b[from..len]` into the state for the next call, or gives up with `fail` when
/// it does not fit.
#[inline(always)]
pub(super) fn carry_from<B: Bytes + ?Sized>(
    state: &mut ClassifyState,
    b: &B,
    from: usize,
    len: usize,
    base: u32,
    fail: Outcome,
) -> Progress {
    let n = len.saturating_sub(from);
    if n > CARRY_MAX || !b.copy_out(from, n, &mut state.carry) {
        return Progress::Done(fail);
    }
    state.carry_len = n as u32;
    state.pos = base + from as u32;
    Progress::NeedMore
}
