//! The io_uring engine's receive side for the frontend socket: a provided buffer ring of
//! whole-frame slots, allocated once, into which one multishot RECV puts each guest record
//! (one completion per record: SOCK_SEQPACKET and SOCK_DGRAM keep boundaries).
//!
//! Owns: the slots and the ring of free slot descriptors the kernel picks from. The engine
//! (`uring.rs`) registers the ring and collects completions as [`RingRecord`]s; the RX ring
//! (`crate::frames::FrameRx`) reads the frames through [`RxBuffers::frame`] and gives each
//! slot back with [`RxBuffers::recycle`] once libslirp has its copy: no system call for that,
//! only a store to the ring's tail.
//!
//! Truncation: a RECV completion carries no MSG_TRUNC. A slot is `FrameLimit::rx_slot()`
//! bytes, one more than the largest frame accepted, so a longer record fills its slot and is
//! dropped as oversize by its length, as with `recvmmsg`.
//!
//! Shared by `Rc`: the engine and the RX ring each hold the buffers; the memory goes when the
//! last of them does, after the ring (which the engine drops first) no longer refers to it.

use io_uring::types::BufRingEntry;
use std::alloc::{self, Layout};
use std::cell::Cell;
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

/// The buffer group id of the frontend's slots (the ring's only group).
pub(crate) const FRONTEND_GROUP: u16 = 0;

/// Bytes of all slots together at most: the slot count shrinks for large MTUs.
const MAX_BYTES: usize = 4 << 20;
/// Slots at most and at least (a power of two, as the kernel requires).
const MAX_SLOTS: usize = 256;
const MIN_SLOTS: usize = 8;

/// One completion of the frontend's multishot receive: the slot it filled, if any, and the
/// result (bytes, 0 for an empty record or EOF, or a negative errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingRecord {
    pub slot: Option<u16>,
    pub result: i32,
}

/// Completions handed from the engine to the RX ring, and the buffers they point into
/// (`None` until the engine first hands some over, and always without the io_uring engine).
#[derive(Default)]
pub struct RingRecords {
    pub buffers: Option<Rc<RxBuffers>>,
    pub records: Vec<RingRecord>,
}

impl RingRecords {
    /// Whether guest frames come through the ring (rather than from reads of the socket).
    pub fn active(&self) -> bool {
        self.buffers.is_some()
    }
}

/// The slots and the buffer ring. Must never: hand a slot to the kernel that a reader still
/// uses, or free the memory while a ring may write to it (see the module's note).
pub struct RxBuffers {
    /// `count` entries, page-aligned as the kernel wants a user-allocated buffer ring.
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    /// `count * slot` bytes.
    slots: NonNull<u8>,
    slots_layout: Layout,
    slot: usize,
    count: u16,
    /// Our copy of the ring's tail (the kernel reads the shared one).
    tail: Cell<u16>,
}

impl RxBuffers {
    /// Slots for frames of up to `slot` bytes, every one of them in the ring.
    pub fn new(slot: usize) -> io::Result<Rc<RxBuffers>> {
        let count = slot_count(slot);
        let oom = || io::Error::from(io::ErrorKind::OutOfMemory);
        let ring_bytes = (count * std::mem::size_of::<BufRingEntry>()).next_multiple_of(4096);
        let ring_layout = Layout::from_size_align(ring_bytes, 4096).map_err(|_| oom())?;
        let slots_layout = Layout::from_size_align(count * slot, 64).map_err(|_| oom())?;
        // SAFETY: both layouts have a non-zero size (count ≥ 8, slot > 0 for any frame limit).
        let (ring, slots) = unsafe {
            (
                alloc::alloc_zeroed(ring_layout).cast::<BufRingEntry>(),
                alloc::alloc_zeroed(slots_layout),
            )
        };
        let (Some(ring), Some(slots)) = (NonNull::new(ring), NonNull::new(slots)) else {
            return Err(oom());
        };
        let buffers = RxBuffers {
            ring,
            ring_layout,
            slots,
            slots_layout,
            slot,
            count: count as u16,
            tail: Cell::new(0),
        };
        for id in 0..buffers.count {
            buffers.put(id);
        }
        buffers.publish();
        Ok(Rc::new(buffers))
    }

    /// The ring's address and size, for `register_buf_ring`.
    pub(crate) fn ring_addr(&self) -> u64 {
        self.ring.as_ptr() as u64
    }

    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    /// Bytes of one slot.
    pub fn slot_len(&self) -> usize {
        self.slot
    }

    /// The first `len` bytes (at most a slot) of slot `id`, which a completion handed over
    /// and which is not yet recycled.
    pub fn frame(&self, id: u16, len: usize) -> &[u8] {
        assert!(id < self.count, "slot {id} of {}", self.count);
        let len = len.min(self.slot);
        // SAFETY: slot `id` lies within the allocation (id < count); the kernel wrote it
        // before posting the completion that named it and will not write it again until
        // `recycle` puts it back in the ring, which takes `&self` too but is only called by
        // the reader after it is done with the frame (the borrow of this slice ends first at
        // every call site: `recycle` follows the delivery of the frame).
        unsafe {
            std::slice::from_raw_parts(self.slots.as_ptr().add(usize::from(id) * self.slot), len)
        }
    }

    /// Give slot `id` back to the kernel (its frame was consumed).
    pub fn recycle(&self, id: u16) {
        if id < self.count {
            self.put(id);
            self.publish();
        }
    }

    /// Write the entry for slot `id` at our tail and advance it (not yet visible).
    fn put(&self, id: u16) {
        let tail = self.tail.get();
        let index = usize::from(tail & (self.count - 1));
        // SAFETY: index < count: within the ring's allocation. The entry at the tail is not
        // one the kernel reads (it reads only between its head and the published tail).
        // `BufRingEntry` is the kernel's `io_uring_buf`: plain integers. The entry 0's
        // `resv` is the shared tail, which `set_*` do not touch.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        // SAFETY: slot `id` lies within the slots' allocation (id < count).
        let addr = unsafe { self.slots.as_ptr().add(usize::from(id) * self.slot) };
        entry.set_addr(addr as u64);
        entry.set_len(self.slot as u32);
        entry.set_bid(id);
        self.tail.set(tail.wrapping_add(1));
    }

    /// Make the entries written so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the ring is valid and aligned; its tail is the `resv` field of entry 0, a
        // u16 the kernel reads with acquire semantics, so it is accessed atomically here,
        // with release ordering after the entries' writes.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail.get(), Ordering::Release);
        }
    }
}

impl Drop for RxBuffers {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the last holder of the `Rc` drops it,
        // after the engine dropped its ring (a field declared before its buffers).
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.slots.as_ptr(), self.slots_layout);
        }
    }
}

/// Slots for frames of `slot` bytes: as many as fit in `MAX_BYTES`, a power of two between
/// `MIN_SLOTS` and `MAX_SLOTS`.
fn slot_count(slot: usize) -> usize {
    let fit = (MAX_BYTES / slot.max(1)).max(1);
    let pow2 = if fit.is_power_of_two() {
        fit
    } else {
        fit.next_power_of_two() / 2
    };
    pow2.clamp(MIN_SLOTS, MAX_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_counts_are_powers_of_two_within_bounds() {
        assert_eq!(slot_count(1601), 256);
        assert_eq!(slot_count(65_601), 32);
        assert_eq!(slot_count(1 << 30), MIN_SLOTS);
        for slot in [64, 1601, 2113, 9065, 65_601] {
            assert!(slot_count(slot).is_power_of_two());
        }
    }

    #[test]
    fn recycled_slots_reappear_at_the_tail() {
        let buffers = RxBuffers::new(1601).unwrap();
        assert_eq!(buffers.tail.get(), 256);
        buffers.recycle(7);
        assert_eq!(buffers.tail.get(), 257);
        // SAFETY: the ring is ours (not registered with a kernel ring in this test).
        let entry = unsafe { &*buffers.ring.as_ptr() };
        assert_eq!(entry.bid(), 7);
        assert_eq!(buffers.frame(7, 5000).len(), 1601);
    }
}
