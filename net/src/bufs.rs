//! Copying between owned buffers and byte slices, for data that does not go through the
//! kernel: bytes rescued from abandoned receives, merged back in stream order.

use runtime::buf::{IoBuf, IoBufMut};

/// Copies `data` into the start of the buffers, in order, each filled up to its capacity.
/// Returns how many bytes were copied (less than `data.len()` when the buffers are full).
pub(crate) fn scatter<B: IoBufMut>(bufs: &mut [B], data: &[u8]) -> usize {
    scatter_at(bufs, 0, data)
}

/// Copies `data` into the buffers from byte `at` of their combined capacity on (the buffers
/// are filled in order, each up to its capacity), and marks everything up to the end of the
/// copy as initialized: the bytes before `at` must have been written already (by earlier
/// calls). Returns how many bytes were copied.
pub(crate) fn scatter_at<B: IoBufMut>(bufs: &mut [B], mut at: usize, data: &[u8]) -> usize {
    let mut copied = 0;
    for buf in bufs {
        if copied == data.len() {
            break;
        }
        let total = buf.bytes_total();
        if at >= total {
            at -= total;
            continue;
        }
        let room = (total - at).min(data.len() - copied);
        // SAFETY: only initialized values (copies of `data`) are written, so bytes the buffer
        // already counts as initialized stay initialized.
        let dst = &mut unsafe { buf.as_mut_capacity() }[at..at + room];
        for (d, s) in dst.iter_mut().zip(&data[copied..copied + room]) {
            d.write(*s);
        }
        // SAFETY: bytes `..at` were written before (the caller's guarantee) and `at..at + room`
        // just now, and `at + room <= bytes_total`.
        unsafe { buf.set_init(at + room) };
        copied += room;
        at = 0;
    }
    copied
}

/// The first `n` bytes the kernel wrote into the buffers (each filled from its start, in
/// order).
///
/// The caller guarantees that a completed receive wrote those `n` bytes.
pub(crate) fn gather<B: IoBuf>(bufs: &[B], mut n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    for buf in bufs {
        if n == 0 {
            break;
        }
        let take = buf.bytes_total().min(n);
        // SAFETY: the receive that completed wrote the first `take` bytes of this buffer
        // (caller's guarantee), and `take <= bytes_total`, so they are initialized memory owned
        // by `buf`.
        let written = unsafe { std::slice::from_raw_parts(buf.stable_ptr(), take) };
        out.extend_from_slice(written);
        n -= take;
    }
    out
}

/// Total capacity of the buffers.
pub(crate) fn capacity<B: IoBuf>(bufs: &[B]) -> usize {
    bufs.iter().map(IoBuf::bytes_total).sum()
}

/// Marks the first `n` received bytes as initialized across the buffers.
pub(crate) fn set_init_across<B: IoBufMut>(bufs: &mut [B], mut n: usize) {
    for buf in bufs {
        let take = buf.bytes_total().min(n);
        // SAFETY: the receive wrote the first `n` bytes across the buffers in order, so the
        // first `take` bytes of this one; `take <= bytes_total`.
        unsafe { buf.set_init(take) };
        n -= take;
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_and_gather_round_trip() {
        let mut bufs = vec![Vec::with_capacity(3), Vec::with_capacity(4)];
        let cap: Vec<usize> = bufs.iter().map(|b| b.capacity()).collect();
        let data: Vec<u8> = (0..(cap[0] + 2) as u8).collect();
        assert_eq!(scatter(&mut bufs, &data), data.len());
        assert_eq!(gather(&bufs, data.len()), data);
        assert_eq!(bufs[0].len(), cap[0]);
        assert_eq!(bufs[1].len(), 2);
        assert_eq!(capacity(&bufs), cap[0] + cap[1]);
    }

    #[test]
    fn scatter_stops_when_full() {
        let mut bufs = vec![Vec::with_capacity(2)];
        let cap = bufs[0].capacity();
        assert_eq!(scatter(&mut bufs, &vec![7; cap + 5]), cap);
    }
}
