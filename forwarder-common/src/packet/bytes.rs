//! The [`Bytes`] trait the parsers read through, and its implementation for byte slices.

/// Random access to packet bytes. Multi-byte loads return the bytes as they are in memory
/// (network order), the way the kernel compares and rewrites them.
pub trait Bytes {
    /// Total length of the packet (may exceed what is directly readable, as in a
    /// non-linear skb).
    fn total_len(&self) -> usize;
    fn raw8(&self, off: usize) -> Option<u8>;
    fn raw16(&self, off: usize) -> Option<u16>;
    fn raw32(&self, off: usize) -> Option<u32>;

    #[inline(always)]
    fn be16(&self, off: usize) -> Option<u16> {
        self.raw16(off).map(u16::from_be)
    }

    /// The byte at `off`, 0 past the end. For callers that checked the range already:
    /// a plain value leaves the compiler no undefined `None` payload to fill with whatever
    /// register is at hand (the BPF verifier rejects such code when that is a pointer).
    #[inline(always)]
    fn byte(&self, off: usize) -> u8 {
        self.raw8(off).unwrap_or_default()
    }

    /// `N` bytes from `off`: the bytes up to the end, zeros after; one read in the kernel.
    #[inline(always)]
    fn array<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut v = [0; N];
        let mut i = 0;
        while i < N {
            v[i] = self.byte(off + i);
            i += 1;
        }
        v
    }

    /// Big-endian u16 at `off` from two [`Bytes::byte`] reads, 0-filled past the end.
    #[inline(always)]
    fn be16_at(&self, off: usize) -> u16 {
        ((self.byte(off) as u16) << 8) | self.byte(off + 1) as u16
    }

    /// Offset of the first byte in `[from, to)` that is one of `set`. The kernel
    /// implements this with the `bpf_loop` helper, so the verifier walks the loop body once
    /// instead of once per byte.
    #[inline(always)]
    fn find_any(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        let mut i = from;
        let mut n = 0;
        while n < FIND_MAX {
            if i >= to {
                return None;
            }
            let c = self.raw8(i)?;
            if c == set[0] || c == set[1] || c == set[2] || c == set[3] {
                return Some(i);
            }
            i += 1;
            n += 1;
        }
        None
    }

    /// Offset of the first line start in `[from, to)` whose first byte is one of `set`; a
    /// line start is `from` itself or a position right after a `\n`.
    #[inline(always)]
    fn find_line_start(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        let mut at = from;
        let mut n = 0;
        while n < FIND_MAX {
            if at >= to {
                return None;
            }
            if set.contains(&self.raw8(at)?) {
                return Some(at);
            }
            at = self.find(at, to, b'\n')? + 1;
            n += 1;
        }
        None
    }

    /// Offset of the first `byte` in `[from, to)`.
    #[inline(always)]
    fn find(&self, from: usize, to: usize, byte: u8) -> Option<usize> {
        self.find_any(from, to, [byte; 4])
    }

    /// Copies `n` bytes from `from` into `dst` (n at most `dst.len()`); false if they are
    /// not all there. The kernel implements this with `bpf_loop` too.
    #[inline(always)]
    fn copy_out(&self, from: usize, n: usize, dst: &mut [u8; COPY_MAX]) -> bool {
        if n > COPY_MAX {
            return false;
        }
        let mut i = 0;
        while i < COPY_MAX {
            if i >= n {
                break;
            }
            match self.raw8(from + i) {
                Some(v) => dst[i] = v,
                None => return false,
            }
            i += 1;
        }
        true
    }
}

/// Size of the destination of [`Bytes::copy_out`] (the classifier's carry buffer).
pub const COPY_MAX: usize = 320;

/// Bytes [`Bytes::find`] looks at, at most.
pub const FIND_MAX: usize = 2048;

impl Bytes for [u8] {
    fn total_len(&self) -> usize {
        self.len()
    }
    fn raw8(&self, off: usize) -> Option<u8> {
        self.get(off).copied()
    }
    fn raw16(&self, off: usize) -> Option<u16> {
        let b = self.get(off..off.checked_add(2)?)?;
        Some(u16::from_ne_bytes([b[0], b[1]]))
    }
    fn raw32(&self, off: usize) -> Option<u32> {
        let b = self.get(off..off.checked_add(4)?)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
}
