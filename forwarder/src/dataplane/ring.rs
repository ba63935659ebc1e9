//! Reading the kernel's ring buffers: one reader for every ring, woken by the kernel and,
//! for rings the kernel fills without waking anyone, by a drain tick too.

use std::{io, marker::PhantomData, time::Duration};

use aya::{
    Pod,
    maps::{MapData, RingBuf},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::{Interval, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;

/// A ring buffer of records of type `T`, not yet being read.
pub struct Ring<T> {
    ring: RingBuf<MapData>,
    _record: PhantomData<fn() -> T>,
}

impl<T: Pod> Ring<T> {
    pub(crate) fn new(ring: RingBuf<MapData>) -> Self {
        Self {
            ring,
            _record: PhantomData,
        }
    }

    /// Registers the ring with the runtime (call within it). With `drain`, the reader also
    /// wakes up at that interval: for a ring whose producer submits without waking the
    /// reader until a batch has built up.
    pub fn reader(self, drain: Option<Duration>) -> io::Result<RingReader<T>> {
        // SAFETY: the ring buffer owns its map's fd, which stays open and unchanged for as
        // long as the ring buffer lives inside the AsyncFd.
        let fd = unsafe { AsyncFd::register_with_interest(self.ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let drain = drain.map(|period| {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick
        });
        Ok(RingReader {
            fd,
            drain,
            _record: PhantomData,
        })
    }
}

/// A ring buffer being read, record by record.
pub struct RingReader<T> {
    fd: AsyncFd<RingBuf<MapData>>,
    drain: Option<Interval>,
    _record: PhantomData<fn() -> T>,
}

impl<T: Pod> RingReader<T> {
    /// Waits until the kernel wakes the reader (or the drain tick comes), then yields the
    /// records there are; `None` once `cancel` is cancelled or the ring can no longer be
    /// polled, which ends every reader's loop alike. Cancelled while waiting, no record is
    /// lost: it stays in the ring for [`RingReader::drain_now`].
    pub async fn next_batch_until(&mut self, cancel: &CancellationToken) -> Option<Records<'_, T>> {
        tokio::select! {
            r = self.wait() => r.ok()?,
            () = cancel.cancelled() => return None,
        }
        Some(self.drain_now())
    }

    async fn wait(&mut self) -> io::Result<()> {
        // Readiness is cleared before the ring is drained: a record submitted meanwhile
        // wakes the reader again rather than being left for the next wake-up.
        match &mut self.drain {
            Some(tick) => tokio::select! {
                r = self.fd.readable_mut() => r?.clear_ready(),
                _ = tick.tick() => {}
            },
            None => self.fd.readable_mut().await?.clear_ready(),
        }
        Ok(())
    }

    /// The records in the ring now, without waiting.
    pub fn drain_now(&mut self) -> Records<'_, T> {
        Records {
            ring: self.fd.get_mut(),
            _record: PhantomData,
        }
    }
}

/// The records in a ring buffer, consumed as they are read; records too short for `T`
/// are skipped.
pub struct Records<'a, T> {
    ring: &'a mut RingBuf<MapData>,
    _record: PhantomData<fn() -> T>,
}

impl<T: Pod> Iterator for Records<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            let item = self.ring.next()?;
            if let Some(record) = read_record(&item) {
                return Some(record);
            }
        }
    }
}

/// A ring buffer record as the kernel wrote it; `None` if it is too short.
pub fn read_record<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `Pod` types are plain integers and arrays (every bit pattern is valid) and
    // `bytes` holds at least `size_of::<T>()` bytes; the read is unaligned.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}
