//! Registering an interface queue: map the area and the refill region, call
//! `IORING_REGISTER_ZCRX_IFQ` with pointers the kernel writes through, and explain failures.

use std::{cell::RefCell, ffi::CString, io, os::fd::RawFd};

use super::{
    ZcrxConfig, ZcrxInner,
    abi::{
        IORING_MEM_REGION_TYPE_USER, IORING_REGISTER_ZCRX_IFQ, RegionDesc, ZCRX_REG_NODEV,
        ZcrxAreaReg, ZcrxIfqReg,
    },
    refill::RefillQueue,
};
use crate::mmap::{Mapping, page_size, whole_pages};

/// Registers `config` (queue `rx_queue + worker`) with the ring `ring_fd`.
///
/// # Errors
///
/// The kernel's error, explained with the interface and queue (see `explain`).
pub(crate) fn register(ring_fd: RawFd, config: &ZcrxConfig, worker: u32) -> io::Result<ZcrxInner> {
    let queue = config.rx_queue + worker;
    let what = config.describe(queue);
    let if_idx = if config.device_less {
        0
    } else {
        let name = CString::new(config.interface.as_str()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name contains a NUL byte",
            )
        })?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if idx == 0 {
            return Err(explain(
                io::Error::from_raw_os_error(libc::ENODEV),
                config,
                queue,
            ));
        }
        idx
    };
    let entries = config.rq_entries;
    if entries == 0 || entries > 32768 || !entries.is_power_of_two() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("ZcrxConfig::rq_entries must be a power of two in 1..=32768, got {entries}"),
        ));
    }
    let area_len = whole_pages(config.area_size);
    let mut area = Mapping::new(area_len)?;
    // The kernel's `struct io_uring` header (head, tail on their own cache lines) fits in a
    // page; the entries follow.
    let region_len = whole_pages(entries as usize * 16 + page_size());
    let mut region = Mapping::new(region_len)?;

    let mut area_reg = ZcrxAreaReg {
        addr: area.as_ptr() as u64,
        len: area_len as u64,
        ..Default::default()
    };
    let mut region_desc = RegionDesc {
        user_addr: region.as_ptr() as u64,
        size: region_len as u64,
        flags: IORING_MEM_REGION_TYPE_USER,
        ..Default::default()
    };
    let mut reg = ZcrxIfqReg {
        if_idx,
        if_rxq: queue,
        rq_entries: entries,
        flags: if config.device_less {
            ZCRX_REG_NODEV
        } else {
            0
        },
        area_ptr: &mut area_reg as *mut ZcrxAreaReg as u64,
        region_ptr: &mut region_desc as *mut RegionDesc as u64,
        ..Default::default()
    };
    // SAFETY: IORING_REGISTER_ZCRX_IFQ reads `reg` and the area and region descriptors it
    // points at, and writes `rq_entries`, `offsets`, `zcrx_id` and `rq_area_token` back
    // through those pointers: all are live locals borrowed mutably for the call (never through
    // `&`, which the kernel's writes would violate). The area and region mappings outlive the
    // registration (they move into the returned value, which the runtime keeps until the ring
    // is closed).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring_fd,
            IORING_REGISTER_ZCRX_IFQ,
            &mut reg as *mut ZcrxIfqReg,
            1u32,
        )
    };
    if ret < 0 {
        return Err(explain(io::Error::last_os_error(), config, queue));
    }
    // SAFETY: the region mapping lives in the returned value together with the queue, and the
    // kernel wrote offsets describing its own layout of that region (checked by `new`).
    let refill = unsafe {
        RefillQueue::new(
            region.as_ptr(),
            region_len,
            &reg.offsets,
            reg.rq_entries,
            area_reg.rq_area_token,
        )
    };
    let refill = match refill {
        Ok(refill) => refill,
        Err(e) => {
            // Registered, but unusable: the kernel holds the memory until the ring closes.
            area.leak();
            region.leak();
            return Err(e);
        }
    };
    let description = format!(
        "{what}: {area_len}-byte area, {} refill entries, ifq id {}",
        reg.rq_entries, reg.zcrx_id
    );
    let area_ptr = area.as_ptr();
    Ok(ZcrxInner::new(
        reg.zcrx_id,
        area_ptr,
        area_len,
        RefCell::new(refill),
        description,
        Some((area, region)),
    ))
}

/// Turns a registration failure into an error that says what it means for this interface.
pub(crate) fn explain(err: io::Error, config: &ZcrxConfig, queue: u32) -> io::Error {
    let what = config.describe(queue);
    let name = &config.interface;
    let reason = match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) => format!(
            "{name} cannot host zero-copy receive: it has no parent device or its driver lacks \
             queue-management ops (bnxt_en, gve, mlx5 and fbnic have them; loopback, veth, ifb \
             and virtio_net do not)"
        ),
        Some(libc::ENODEV) => format!("there is no interface named {name:?}"),
        Some(libc::ERANGE) => format!("{name} has no RX queue {queue} (`ethtool -l {name}`)"),
        Some(libc::EINVAL) if config.device_less => {
            "this kernel does not know device-less ifqs (ZCRX_REG_NODEV needs Linux 7.1)".into()
        }
        Some(libc::EINVAL) => format!(
            "the kernel rejected the setup: header/data split must be on and its threshold 0 \
             (`ethtool -G {name} tcp-data-split on hds-thresh 0`), the ring needs \
             DEFER_TASKRUN with 32-byte CQEs, and the area must be page-aligned"
        ),
        Some(libc::EEXIST) => format!(
            "queue {queue} of {name} already has a memory provider (another ring's ifq, or XDP)"
        ),
        Some(libc::EBUSY) => format!("queue {queue} of {name} is in use by AF_XDP"),
        Some(libc::EPERM) => "registering an ifq needs CAP_NET_ADMIN".into(),
        Some(libc::ENOMEM) => "the area or refill region could not be pinned: raise \
                               RLIMIT_MEMLOCK or shrink ZcrxConfig::area_size"
            .into(),
        _ => "see docs/zcrx.md".into(),
    };
    io::Error::new(
        err.kind(),
        super::ZcrxError {
            errno: err.raw_os_error(),
            message: format!("zero-copy receive on {what} failed ({err}): {reason}"),
        },
    )
}
