//! Bounds-checked access to packet bytes between `data` and `data_end`.

use forwarder_common::packet::Bytes;

/// The verifier needs every offset added to a packet pointer to be bounded; packet
/// offsets we compute never exceed this.
const MAX_OFF: usize = 0x3fff;

/// Returns `v` unchanged, in a register, without the optimiser knowing how it relates to
/// anything else.
#[inline(always)]
pub fn opaque(v: usize) -> usize {
    #[cfg(target_arch = "bpf")]
    {
        let mut v = v;
        // SAFETY: the instruction moves a register to itself; it touches no memory.
        unsafe {
            core::arch::asm!("{0} = {0}", inout(reg) v, options(nomem, nostack, preserves_flags));
        }
        v
    }
    #[cfg(not(target_arch = "bpf"))]
    v
}

#[derive(Clone, Copy)]
pub struct Pkt {
    pub data: usize,
    pub data_end: usize,
    pub total: usize,
}

impl Pkt {
    #[inline(always)]
    pub fn new(data: usize, data_end: usize, total: usize) -> Self {
        Self {
            data,
            data_end,
            total,
        }
    }

    #[inline(always)]
    fn ptr<const N: usize>(&self, off: usize) -> Option<*mut u8> {
        if off > MAX_OFF {
            return None;
        }
        // The mask changes nothing but keeps the bound on the register itself: verifiers
        // before 6.x do not carry a comparison's bound over to copies of the value, and
        // refuse the access when LLVM adds a copy to `data`.
        let p = self.data + (opaque(off) & MAX_OFF);
        // Hidden from the optimiser: LLVM rewrites `p + 1 > end` into `p >= end`, a form
        // from which the verifier learns no readable range.
        let end = opaque(p + N);
        if end > self.data_end {
            return None;
        }
        Some(p as *mut u8)
    }

    #[inline(always)]
    pub fn write16(&self, off: usize, v: u16) -> Option<()> {
        let p = self.ptr::<2>(off)?;
        // SAFETY: `ptr` checked that the 2 bytes at `p` lie between `data` and `data_end`.
        unsafe { (p as *mut u16).write_unaligned(v) };
        Some(())
    }

    #[inline(always)]
    pub fn write32(&self, off: usize, v: u32) -> Option<()> {
        let p = self.ptr::<4>(off)?;
        // SAFETY: `ptr` checked that the 4 bytes at `p` lie between `data` and `data_end`.
        unsafe { (p as *mut u32).write_unaligned(v) };
        Some(())
    }
}

impl Bytes for Pkt {
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.total
    }

    #[inline(always)]
    fn raw8(&self, off: usize) -> Option<u8> {
        let p = self.ptr::<1>(off)?;
        // SAFETY: `ptr` checked that the byte at `p` lies between `data` and `data_end`.
        Some(unsafe { *p })
    }

    #[inline(always)]
    fn raw16(&self, off: usize) -> Option<u16> {
        let p = self.ptr::<2>(off)?;
        // SAFETY: `ptr` checked that the 2 bytes at `p` lie between `data` and `data_end`.
        Some(unsafe { (p as *const u16).read_unaligned() })
    }

    #[inline(always)]
    fn raw32(&self, off: usize) -> Option<u32> {
        let p = self.ptr::<4>(off)?;
        // SAFETY: `ptr` checked that the 4 bytes at `p` lie between `data` and `data_end`.
        Some(unsafe { (p as *const u32).read_unaligned() })
    }
}
