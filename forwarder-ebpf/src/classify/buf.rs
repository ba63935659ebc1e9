//! The classifier's views of its buffer (`CLS_BUF`: carried bytes, then the segment's
//! payload) as `Bytes`: through a dynptr for the parser (`Buf`), directly for small
//! `bpf_loop` callbacks (`DirectBuf`).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::bpf_dynptr,
    helpers::{bpf_dynptr_from_mem, bpf_dynptr_read},
};
use forwarder_common::{
    classify::BUF_SIZE,
    packet::{Bytes, COPY_MAX},
};

use super::scan::{buf_find, buf_line_start};
use crate::pkt::opaque;

/// The classifier's view of the per-CPU buffer: carried bytes, then the segment.
///
/// Single fields are read through a dynptr: the helper checks the offset at run time, so
/// the verifier need not track every offset precisely, which would keep it from merging
/// the parser's paths (it ran out of its instruction budget that way).
pub struct Buf {
    pub p: *const [u8; BUF_SIZE],
    pub len: usize,
    /// Over `p`, made once per segment by `fwd_cls_feed` (a dynptr cannot be moved, and
    /// helper calls are not free).
    pub d: *const bpf_dynptr,
}

impl Buf {
    #[inline(always)]
    fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off + N > self.len {
            return None;
        }
        let mut v = [0u8; N];
        // SAFETY: `v` holds the `N` bytes written; `self.d` was initialised over the buffer
        // by `fwd_cls_feed` and outlives `self`; the helper checks `off` against it.
        let r = unsafe {
            bpf_dynptr_read(
                v.as_mut_ptr() as *mut c_void,
                N as u32,
                self.d,
                off as u32,
                0,
            )
        };
        if r == 0 { Some(v) } else { None }
    }
}

/// `Bytes::copy_out` with one helper call.
#[inline(always)]
fn buf_copy(
    p: *const [u8; BUF_SIZE],
    len: usize,
    from: usize,
    n: usize,
    dst: &mut [u8; COPY_MAX],
) -> bool {
    // Bounded for the verifier by the mask and the check, whatever the compiler does.
    let n = opaque(n) & 0x1ff;
    if n > COPY_MAX || from + n > len {
        return false;
    }
    let mut d = core::mem::MaybeUninit::<bpf_dynptr>::uninit();
    // SAFETY: `p` is the buffer, `BUF_SIZE` bytes of map memory, and `d` the place for the
    // dynptr the first helper initialises; `dst` holds the at most `COPY_MAX` bytes written.
    unsafe {
        bpf_dynptr_from_mem(p as *mut c_void, BUF_SIZE as u32, 0, d.as_mut_ptr());
        bpf_dynptr_read(
            dst.as_mut_ptr() as *mut c_void,
            n as u32,
            d.as_ptr(),
            from as u32,
            0,
        ) == 0
    }
}

impl Bytes for Buf {
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.len
    }
    #[inline(always)]
    fn find_line_start(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        buf_line_start(self.p, self.len, from, to, set)
    }
    #[inline(always)]
    fn raw8(&self, off: usize) -> Option<u8> {
        self.read::<1>(off).map(|v| v[0])
    }
    #[inline(always)]
    fn raw16(&self, off: usize) -> Option<u16> {
        self.read::<2>(off).map(u16::from_ne_bytes)
    }
    #[inline(always)]
    fn raw32(&self, off: usize) -> Option<u32> {
        self.read::<4>(off).map(u32::from_ne_bytes)
    }
    #[inline(always)]
    fn be16_at(&self, off: usize) -> u16 {
        match self.read::<2>(off) {
            Some(v) => u16::from_be_bytes(v),
            None => 0,
        }
    }
    /// One helper call: the bytes up to the buffer's end, zeros after (as the trait says).
    #[inline(always)]
    fn array<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut v = core::mem::MaybeUninit::<[u8; N]>::uninit();
        let p = v.as_mut_ptr() as *mut u8;
        let avail = self.len.saturating_sub(off);
        if avail < N {
            // Rare (a field at the very end). Byte stores: a zeroed array would be a call
            // to a byte-by-byte memset subprogram, on every read.
            let mut k = 0;
            while k < N {
                // SAFETY: `k < N`: inside `v`.
                unsafe { p.add(k).write_volatile(0) };
                k += 1;
            }
        }
        // Masked so that the verifier sees the length bounded, whatever the compiler does.
        let n = opaque(if avail < N { avail } else { N }) & ((2 * N).next_power_of_two() - 1);
        if n > 0 && n <= N {
            // SAFETY: `v` has room for `n <= N` bytes; `self.d` as in `read`.
            unsafe { bpf_dynptr_read(p as *mut c_void, n as u32, self.d, off as u32, 0) };
        }
        // SAFETY: every byte is written: the first `n` (all bytes up to the buffer's end, at
        // most `N`) by the helper, which succeeds as `off + n <= len <= BUF_SIZE`, the rest
        // zeroed above.
        unsafe { v.assume_init() }
    }
    #[inline(always)]
    fn find_any(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        buf_find(self.p, self.len, from, to, set)
    }
    #[inline(always)]
    fn copy_out(&self, from: usize, n: usize, dst: &mut [u8; COPY_MAX]) -> bool {
        buf_copy(self.p, self.len, from, n, dst)
    }
}

/// Direct reads from the buffer, masked into its bounds: for small `bpf_loop` callbacks,
/// where the verifier's precise offsets cost little.
pub struct DirectBuf {
    pub p: *const [u8; BUF_SIZE],
    pub len: usize,
}

impl Bytes for DirectBuf {
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.len
    }
    #[inline(always)]
    fn find_any(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        buf_find(self.p, self.len, from, to, set)
    }
    #[inline(always)]
    fn copy_out(&self, from: usize, n: usize, dst: &mut [u8; COPY_MAX]) -> bool {
        buf_copy(self.p, self.len, from, n, dst)
    }
    #[inline(always)]
    fn raw8(&self, off: usize) -> Option<u8> {
        if off >= self.len {
            return None;
        }
        // The mask must survive optimisation: it is what bounds the access for the verifier.
        // SAFETY: `p` is a non-null buffer of `BUF_SIZE` bytes (checked by the global
        // function that made this view), and the mask keeps the index inside it.
        Some(unsafe { (*self.p)[opaque(off) & (BUF_SIZE - 1)] })
    }
    #[inline(always)]
    fn raw16(&self, off: usize) -> Option<u16> {
        Some(u16::from_ne_bytes([self.raw8(off)?, self.raw8(off + 1)?]))
    }
    #[inline(always)]
    fn raw32(&self, off: usize) -> Option<u32> {
        Some(u32::from_ne_bytes([
            self.raw8(off)?,
            self.raw8(off + 1)?,
            self.raw8(off + 2)?,
            self.raw8(off + 3)?,
        ]))
    }
}
