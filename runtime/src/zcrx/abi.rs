//! The kernel's zero-copy receive structures (`<linux/io_uring.h>`, Linux 6.18), with their
//! sizes and field offsets checked at compile time.

use std::mem::{offset_of, size_of};

/// `IORING_REGISTER_ZCRX_IFQ`.
pub(crate) const IORING_REGISTER_ZCRX_IFQ: libc::c_uint = 32;
/// `IORING_MEM_REGION_TYPE_USER`: the region is user memory (`user_addr`).
pub(crate) const IORING_MEM_REGION_TYPE_USER: u32 = 1;
/// `ZCRX_REG_NODEV` (Linux 7.1): an ifq without a device, fed only by the copy fallback.
pub(crate) const ZCRX_REG_NODEV: u32 = 2;
/// `IORING_ZCRX_AREA_SHIFT`: the area id sits above this bit of a CQE offset.
pub(crate) const IORING_ZCRX_AREA_SHIFT: u32 = 48;
/// The bits of a CQE offset that locate the data inside its area.
pub(crate) const AREA_OFFSET_MASK: u64 = (1 << IORING_ZCRX_AREA_SHIFT) - 1;

/// `struct io_uring_zcrx_offsets`: where head, tail and entries sit in the refill region.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ZcrxOffsets {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) rqes: u32,
    pub(crate) resv2: u32,
    pub(crate) resv: [u64; 2],
}

/// `struct io_uring_zcrx_ifq_reg`. The kernel writes `rq_entries`, `offsets` and `zcrx_id`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ZcrxIfqReg {
    pub(crate) if_idx: u32,
    pub(crate) if_rxq: u32,
    pub(crate) rq_entries: u32,
    pub(crate) flags: u32,
    pub(crate) area_ptr: u64,
    pub(crate) region_ptr: u64,
    pub(crate) offsets: ZcrxOffsets,
    pub(crate) zcrx_id: u32,
    pub(crate) resv2: u32,
    pub(crate) resv: [u64; 3],
}

/// `struct io_uring_zcrx_area_reg`. The kernel writes `rq_area_token`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ZcrxAreaReg {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) rq_area_token: u64,
    pub(crate) flags: u32,
    pub(crate) dmabuf_fd: u32,
    pub(crate) resv2: [u64; 2],
}

/// `struct io_uring_region_desc`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RegionDesc {
    pub(crate) user_addr: u64,
    pub(crate) size: u64,
    pub(crate) flags: u32,
    pub(crate) id: u32,
    pub(crate) mmap_offset: u64,
    pub(crate) resv: [u64; 4],
}

/// `struct io_uring_zcrx_rqe`: one refill entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ZcrxRqe {
    pub(crate) off: u64,
    pub(crate) len: u32,
    pub(crate) pad: u32,
}

/// `struct io_uring_zcrx_cqe`: the second half of a 32-byte CQE of `IORING_OP_RECV_ZC`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ZcrxCqe {
    pub(crate) off: u64,
    pub(crate) pad: u64,
}

const _: () = {
    assert!(size_of::<ZcrxOffsets>() == 32);
    assert!(offset_of!(ZcrxOffsets, head) == 0);
    assert!(offset_of!(ZcrxOffsets, tail) == 4);
    assert!(offset_of!(ZcrxOffsets, rqes) == 8);

    assert!(size_of::<ZcrxIfqReg>() == 96);
    assert!(offset_of!(ZcrxIfqReg, if_idx) == 0);
    assert!(offset_of!(ZcrxIfqReg, if_rxq) == 4);
    assert!(offset_of!(ZcrxIfqReg, rq_entries) == 8);
    assert!(offset_of!(ZcrxIfqReg, flags) == 12);
    assert!(offset_of!(ZcrxIfqReg, area_ptr) == 16);
    assert!(offset_of!(ZcrxIfqReg, region_ptr) == 24);
    assert!(offset_of!(ZcrxIfqReg, offsets) == 32);
    assert!(offset_of!(ZcrxIfqReg, zcrx_id) == 64);
    assert!(offset_of!(ZcrxIfqReg, resv2) == 68);
    assert!(offset_of!(ZcrxIfqReg, resv) == 72);

    assert!(size_of::<ZcrxAreaReg>() == 48);
    assert!(offset_of!(ZcrxAreaReg, addr) == 0);
    assert!(offset_of!(ZcrxAreaReg, len) == 8);
    assert!(offset_of!(ZcrxAreaReg, rq_area_token) == 16);
    assert!(offset_of!(ZcrxAreaReg, flags) == 24);
    assert!(offset_of!(ZcrxAreaReg, dmabuf_fd) == 28);

    assert!(size_of::<RegionDesc>() == 64);
    assert!(offset_of!(RegionDesc, user_addr) == 0);
    assert!(offset_of!(RegionDesc, size) == 8);
    assert!(offset_of!(RegionDesc, flags) == 16);
    assert!(offset_of!(RegionDesc, id) == 20);
    assert!(offset_of!(RegionDesc, mmap_offset) == 24);

    assert!(size_of::<ZcrxRqe>() == 16);
    assert!(offset_of!(ZcrxRqe, off) == 0);
    assert!(offset_of!(ZcrxRqe, len) == 8);

    assert!(size_of::<ZcrxCqe>() == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Our structs agree with the io-uring crate's bindgen output for the same kernel ABI.
    #[test]
    fn layouts_match_the_io_uring_crate() {
        use io_uring::types;
        assert_eq!(
            size_of::<ZcrxIfqReg>(),
            size_of::<types::io_uring_zcrx_ifq_reg>()
        );
        assert_eq!(
            size_of::<ZcrxAreaReg>(),
            size_of::<types::io_uring_zcrx_area_reg>()
        );
        assert_eq!(
            size_of::<RegionDesc>(),
            size_of::<types::io_uring_region_desc>()
        );
        assert_eq!(size_of::<ZcrxRqe>(), size_of::<types::io_uring_zcrx_rqe>());
        assert_eq!(size_of::<ZcrxCqe>(), size_of::<types::io_uring_zcrx_cqe>());
        assert_eq!(
            offset_of!(ZcrxIfqReg, zcrx_id),
            offset_of!(types::io_uring_zcrx_ifq_reg, zcrx_id)
        );
        assert_eq!(
            offset_of!(ZcrxAreaReg, rq_area_token),
            offset_of!(types::io_uring_zcrx_area_reg, rq_area_token)
        );
        assert_eq!(IORING_ZCRX_AREA_SHIFT, types::IORING_ZCRX_AREA_SHIFT);
        assert_eq!(
            IORING_MEM_REGION_TYPE_USER,
            types::IORING_MEM_REGION_TYPE_USER
        );
    }
}
