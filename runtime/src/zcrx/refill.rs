//! The refill queue: how buffers of the zero-copy receive area go back to the kernel.
//!
//! # Protocol (`docs/kernel-notes.md` §5; `io_uring/zcrx.c` `io_zcrx_ring_refill`)
//!
//! The queue lives in a memory region shared with the kernel: a `u32` head (written by the
//! kernel, read here with acquire), a `u32` tail (written here with release), and
//! `entries` `io_uring_zcrx_rqe` slots. Each completion of `IORING_OP_RECV_ZC` lends one piece
//! of the area; giving it back is exactly one entry `{ off: area offset | area token, len }`.
//!
//! # Invariants
//!
//! - One refill entry per completion, never more (the kernel drops one reference per entry).
//! - Entries are written only in free slots: `entries - (tail - head)` of them. When the queue
//!   is full, refills wait in `pending`, in order, instead of being dropped (which would leak
//!   the area page for good).
//! - The tail is published once per `publish` call (once per loop turn), after the entries it
//!   covers are written, with a release store.

use std::{
    collections::VecDeque,
    io,
    mem::{align_of, size_of},
    sync::atomic::{AtomicU32, Ordering},
};

use super::abi::{AREA_OFFSET_MASK, IORING_ZCRX_AREA_SHIFT, ZcrxOffsets, ZcrxRqe};

/// Splits a completion of `IORING_OP_RECV_ZC` into (offset in the area, length).
///
/// # Errors
///
/// `InvalidData` when the completion names another area or bytes outside this one.
pub(crate) fn decode(cqe_off: u64, res: i32, area_len: usize) -> io::Result<(u64, usize)> {
    let malformed = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed zero-copy receive completion: {what}"),
        )
    };
    let area_id = cqe_off >> IORING_ZCRX_AREA_SHIFT;
    if area_id != 0 {
        return Err(malformed(format!(
            "area {area_id}, but only area 0 is registered"
        )));
    }
    let len = usize::try_from(res).map_err(|_| malformed(format!("result {res}")))?;
    let offset = cqe_off & AREA_OFFSET_MASK;
    let end = offset.checked_add(len as u64);
    if end.is_none_or(|end| end > area_len as u64) {
        return Err(malformed(format!(
            "{len} bytes at offset {offset} outside a {area_len}-byte area"
        )));
    }
    Ok((offset, len))
}

/// The user side of the refill queue.
#[derive(Debug)]
pub(crate) struct RefillQueue {
    head: *const AtomicU32,
    tail: *const AtomicU32,
    rqes: *mut ZcrxRqe,
    entries: u32,
    /// Our tail: entries written so far (the shared tail lags until `publish`).
    local_tail: u32,
    token: u64,
    pending: VecDeque<ZcrxRqe>,
    publishes: u64,
}

impl RefillQueue {
    /// The queue in a region at `region` of `region_len` bytes, laid out as `offsets` says.
    ///
    /// # Safety
    ///
    /// `region..region + region_len` must be memory shared with the kernel's refill queue (or a
    /// stand-in for it) that stays valid for the life of the returned value and is not
    /// accessed otherwise, except by the kernel through the head/tail/entry protocol.
    ///
    /// # Errors
    ///
    /// `InvalidData` if the offsets put anything outside the region or misaligned.
    pub(crate) unsafe fn new(
        region: *mut u8,
        region_len: usize,
        offsets: &ZcrxOffsets,
        entries: u32,
        token: u64,
    ) -> io::Result<RefillQueue> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("refill queue layout from the kernel is unusable: {what}"),
            )
        };
        if !entries.is_power_of_two() {
            return Err(bad("entries not a power of two"));
        }
        let word = |at: u32| {
            let at = at as usize;
            (at + 4 <= region_len && at % align_of::<AtomicU32>() == 0).then_some(at)
        };
        let head = word(offsets.head).ok_or_else(|| bad("head"))?;
        let tail = word(offsets.tail).ok_or_else(|| bad("tail"))?;
        let rqes = offsets.rqes as usize;
        let rqes_end = rqes + entries as usize * size_of::<ZcrxRqe>();
        if rqes % align_of::<ZcrxRqe>() != 0 || rqes_end > region_len {
            return Err(bad("entries"));
        }
        // SAFETY: the offsets were checked to lie inside the region (caller's guarantee for
        // the region itself) with the needed alignment.
        let (head, tail, rqes) = unsafe {
            (
                region.add(head).cast::<AtomicU32>().cast_const(),
                region.add(tail).cast::<AtomicU32>().cast_const(),
                region.add(rqes).cast::<ZcrxRqe>(),
            )
        };
        // SAFETY: `tail` points at a live, aligned u32 of the region.
        let local_tail = unsafe { (*tail).load(Ordering::Relaxed) };
        Ok(RefillQueue {
            head,
            tail,
            rqes,
            entries,
            local_tail,
            token,
            pending: VecDeque::new(),
            publishes: 0,
        })
    }

    /// Queues the refill of `len` bytes at `area_offset` (one per completion).
    pub(crate) fn refill(&mut self, area_offset: u64, len: u32) {
        self.pending.push_back(ZcrxRqe {
            off: (area_offset & AREA_OFFSET_MASK) | self.token,
            len,
            pad: 0,
        });
    }

    /// Writes pending refills into free slots and publishes the tail once. Returns how many
    /// entries were handed to the kernel; the rest stay pending.
    pub(crate) fn publish(&mut self) -> usize {
        if self.pending.is_empty() {
            return 0;
        }
        // SAFETY: `head` points at a live, aligned u32 the kernel updates with release stores.
        let head = unsafe { (*self.head).load(Ordering::Acquire) };
        let used = self.local_tail.wrapping_sub(head);
        let free = self.entries.saturating_sub(used) as usize;
        let n = free.min(self.pending.len());
        for _ in 0..n {
            let rqe = self.pending.pop_front().expect("n <= pending");
            let slot = (self.local_tail & (self.entries - 1)) as usize;
            // SAFETY: `slot < entries`, inside the entry array; it is free (between the
            // kernel's head and our tail nothing is in use), so the kernel does not read it
            // until the tail store below publishes it.
            unsafe { self.rqes.add(slot).write(rqe) };
            self.local_tail = self.local_tail.wrapping_add(1);
        }
        if n > 0 {
            // SAFETY: `tail` points at a live, aligned u32; the release store orders the entry
            // writes above before it, as the kernel's acquire load of the tail expects.
            unsafe { (*self.tail).store(self.local_tail, Ordering::Release) };
            self.publishes += 1;
        }
        n
    }

    /// Refills waiting for free slots.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Tail stores so far.
    #[cfg(test)]
    pub(crate) fn publishes(&self) -> u64 {
        self.publishes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! A software stand-in for the kernel's side: it writes received bytes into area pages,
    //! produces `RECV_ZC` completions with the offsets the kernel would, and consumes refill
    //! entries through the same memory layout, checking each.

    use std::{
        cell::RefCell,
        rc::Rc,
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;
    use crate::{buf::RxBuf, op::Completion, op::cqe_flags, zcrx::ZcrxInner};

    const PAGE: usize = 4096;

    /// Memory laid out like the kernel's refill region: head, tail, then the entries.
    pub(crate) struct FakeKernel {
        pub(crate) region: Vec<u64>,
        pub(crate) offsets: ZcrxOffsets,
        pub(crate) area: Vec<u64>,
        pub(crate) entries: u32,
        pub(crate) token: u64,
        /// Area pages lent out (by page index), and entries consumed.
        pub(crate) lent: Vec<bool>,
        pub(crate) consumed: Vec<ZcrxRqe>,
    }

    impl FakeKernel {
        pub(crate) fn new(entries: u32, pages: usize, token: u64) -> FakeKernel {
            FakeKernel {
                // head at 0, tail at 64 (own cache line, as the kernel does), entries at 128.
                region: vec![0; (128 + entries as usize * 16) / 8],
                offsets: ZcrxOffsets {
                    head: 0,
                    tail: 64,
                    rqes: 128,
                    ..Default::default()
                },
                area: vec![0; pages * PAGE / 8],
                entries,
                token,
                lent: vec![false; pages],
                consumed: Vec::new(),
            }
        }

        fn word(&self, at: u32) -> &AtomicU32 {
            // SAFETY: `at` is 4-byte aligned inside `region`, which outlives the borrow.
            unsafe {
                &*self
                    .region
                    .as_ptr()
                    .cast::<u8>()
                    .add(at as usize)
                    .cast::<AtomicU32>()
            }
        }

        pub(crate) fn area_len(&self) -> usize {
            self.area.len() * 8
        }

        pub(crate) fn queue(&mut self) -> RefillQueue {
            let len = self.region.len() * 8;
            // SAFETY: the region vector outlives the queue in every test and is only touched
            // through the protocol.
            unsafe {
                RefillQueue::new(
                    self.region.as_mut_ptr().cast(),
                    len,
                    &self.offsets,
                    self.entries,
                    self.token,
                )
            }
            .unwrap()
        }

        /// "Receives" `data` into a free area page; returns the completion the kernel posts.
        pub(crate) fn deliver(&mut self, data: &[u8]) -> Completion {
            assert!(data.len() <= PAGE);
            let page = self.lent.iter().position(|l| !l).expect("area exhausted");
            self.lent[page] = true;
            let off = (page * PAGE) as u64 + 7; // not page-aligned: data may start anywhere
            assert!(off as usize + data.len() <= self.area_len());
            let dst = self.area.as_mut_ptr().cast::<u8>();
            // SAFETY: the range is inside `area` (checked above).
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), dst.add(off as usize), data.len())
            };
            Completion::new(data.len() as i32, cqe_flags::MORE, [off, 0])
        }

        /// Consumes published refill entries like the kernel: acquire the tail, read entries up
        /// to it, check them, release the head.
        pub(crate) fn consume(&mut self, max: usize) -> usize {
            let tail = self.word(self.offsets.tail).load(Ordering::Acquire);
            let mut head = self.word(self.offsets.head).load(Ordering::Relaxed);
            let mut n = 0;
            while head != tail && n < max {
                let slot = (head & (self.entries - 1)) as usize;
                // SAFETY: the slot lies inside the entry array of `region`.
                let rqe = unsafe {
                    self.region
                        .as_ptr()
                        .cast::<u8>()
                        .add(self.offsets.rqes as usize + slot * 16)
                        .cast::<ZcrxRqe>()
                        .read()
                };
                assert_eq!(rqe.pad, 0, "pad must be zero");
                assert_eq!(rqe.off & !AREA_OFFSET_MASK, self.token, "area token");
                let page = (rqe.off & AREA_OFFSET_MASK) as usize / PAGE;
                assert!(self.lent[page], "refill of page {page}, which was not lent");
                self.lent[page] = false;
                self.consumed.push(rqe);
                head = head.wrapping_add(1);
                n += 1;
            }
            self.word(self.offsets.head).store(head, Ordering::Release);
            n
        }
    }

    fn inner(kernel: &mut FakeKernel) -> Rc<ZcrxInner> {
        let queue = kernel.queue();
        let area = kernel.area.as_mut_ptr().cast::<u8>();
        ZcrxInner::for_test(area, kernel.area_len(), RefCell::new(queue))
    }

    #[test]
    fn completions_decode_into_the_right_bytes_and_refill_once_each() {
        let mut kernel = FakeKernel::new(8, 4, 0); // token 0: area 0, as on 6.18
        let zcrx = inner(&mut kernel);
        let cqe = kernel.deliver(b"hello, zero copy");
        let buf: RxBuf = zcrx.take(&cqe).unwrap();
        assert_eq!(&buf[..], b"hello, zero copy");
        assert_eq!(zcrx.in_use(), 1);
        drop(buf);
        assert_eq!(zcrx.refill_pending(), 1);
        assert_eq!(zcrx.publish(), 1);
        assert_eq!(kernel.consume(usize::MAX), 1);
        assert_eq!(kernel.consumed[0].len, 16);
        assert_eq!(kernel.consumed[0].off, 7);
        assert_eq!(zcrx.in_use(), 0);
    }

    #[test]
    fn the_tail_is_published_once_per_batch() {
        let mut kernel = FakeKernel::new(16, 16, 0);
        let zcrx = inner(&mut kernel);
        let bufs: Vec<RxBuf> = (0..10)
            .map(|i| {
                let cqe = kernel.deliver(&[i; 100]);
                zcrx.take(&cqe).unwrap()
            })
            .collect();
        drop(bufs);
        assert_eq!(
            zcrx.publishes(),
            0,
            "nothing published before the loop turn"
        );
        assert_eq!(zcrx.publish(), 10);
        assert_eq!(zcrx.publishes(), 1, "one tail store for the batch");
        assert_eq!(kernel.consume(usize::MAX), 10);
    }

    #[test]
    fn a_full_queue_keeps_refills_pending_in_order() {
        let mut kernel = FakeKernel::new(8, 12, 0);
        let zcrx = inner(&mut kernel);
        let bufs: Vec<RxBuf> = (0..12u8)
            .map(|i| {
                let cqe = kernel.deliver(&[i; 10]);
                zcrx.take(&cqe).unwrap()
            })
            .collect();
        drop(bufs);
        assert_eq!(zcrx.publish(), 8, "only free slots are written");
        assert_eq!(zcrx.refill_pending(), 4, "the rest wait, not lost");
        assert_eq!(zcrx.publish(), 0, "still full");
        assert_eq!(kernel.consume(usize::MAX), 8);
        assert_eq!(zcrx.publish(), 4);
        assert_eq!(kernel.consume(usize::MAX), 4);
        let pages: Vec<u64> = kernel.consumed.iter().map(|r| r.off / 4096).collect();
        assert_eq!(pages, (0..12).collect::<Vec<u64>>(), "refill order kept");
    }

    #[test]
    fn indices_wrap_around_the_queue() {
        let mut kernel = FakeKernel::new(4, 3, 5 << 48);
        let zcrx = inner(&mut kernel);
        for round in 0..1000u32 {
            let cqe = kernel.deliver(&round.to_le_bytes());
            let buf = zcrx.take(&cqe).unwrap();
            assert_eq!(&buf[..], round.to_le_bytes());
            drop(buf);
            assert_eq!(zcrx.publish(), 1);
            assert_eq!(kernel.consume(1), 1);
        }
        assert_eq!(kernel.consumed.len(), 1000);
        assert!(
            kernel
                .consumed
                .iter()
                .all(|r| r.off >> 48 == 5 && r.len == 4)
        );
    }

    #[test]
    fn malformed_completions_are_rejected() {
        let mut kernel = FakeKernel::new(4, 2, 0);
        let zcrx = inner(&mut kernel);
        let area = kernel.area_len() as u64;
        for (off, res) in [(area - 4, 10), (1 << 48, 4), (0, -5), (u64::MAX >> 16, 1)] {
            let cqe = Completion::new(res, cqe_flags::MORE, [off, 0]);
            let err = zcrx.take(&cqe).unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "{off:#x}/{res}: {err}"
            );
        }
        assert_eq!(zcrx.in_use(), 0);
        assert!(decode(0, 0, 10).is_ok());
    }

    #[test]
    fn layouts_outside_the_region_are_refused() {
        let mut region = vec![0u64; 32];
        let bad = ZcrxOffsets {
            head: 0,
            tail: 4,
            rqes: 200,
            ..Default::default()
        };
        // SAFETY: the region vector outlives the (failed) construction.
        let res = unsafe { RefillQueue::new(region.as_mut_ptr().cast(), 256, &bad, 8, 0) };
        assert!(res.is_err());
    }
}

/// Property tests of `decode`: a zero-copy receive CQE's offset and result are written by the
/// kernel and must never name bytes outside the area.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(2000)
        })]

        #[test]
        fn arbitrary_completions_stay_inside_the_area(
            off in prop_oneof![any::<u64>(), 0u64..(1 << 24)],
            res in any::<i32>(),
            area_len in 0usize..(1 << 24),
        ) {
            match decode(off, res, area_len) {
                Ok((offset, len)) => {
                    prop_assert_eq!(off >> IORING_ZCRX_AREA_SHIFT, 0);
                    prop_assert_eq!((offset, len as i64), (off, i64::from(res)));
                    prop_assert!(offset + len as u64 <= area_len as u64);
                }
                Err(e) => prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            }
        }

        #[test]
        fn in_area_completions_round_trip(
            (area_len, offset, len) in (1usize..(1 << 24)).prop_flat_map(|area| {
                (Just(area), 0..=area).prop_flat_map(|(area, offset)| {
                    (Just(area), Just(offset), 0..=(area - offset).min(i32::MAX as usize))
                })
            }),
        ) {
            let decoded = decode(offset as u64, len as i32, area_len).unwrap();
            prop_assert_eq!(decoded, (offset as u64, len));
            // The same bytes in area 1 belong to no registered area.
            let other = offset as u64 | 1 << IORING_ZCRX_AREA_SHIFT;
            prop_assert!(decode(other, len as i32, area_len).is_err());
        }
    }
}
