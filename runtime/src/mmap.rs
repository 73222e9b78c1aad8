//! `Mapping`: an anonymous, private memory mapping, for memory shared with the kernel
//! (provided-buffer rings, zero-copy receive areas). Its pages become resident only when first
//! touched.

use std::{io, ptr::NonNull};

/// The system's page size (what mappings are made of, and what the kernel requires some
/// registered regions to be multiples of).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf takes no pointers.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// `len` rounded up to whole pages (at least one).
pub(crate) fn whole_pages(len: usize) -> usize {
    let page = page_size();
    len.max(1).div_ceil(page) * page
}

/// An anonymous, private, read-write mapping, unmapped on drop unless leaked.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    leaked: bool,
}

impl Mapping {
    /// Maps `len` bytes (rounded up to whole pages by the kernel), zero-filled on first touch.
    pub(crate) fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).expect("mmap never returns null on success"),
            len,
            leaked: false,
        })
    }

    /// Start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Keeps the memory mapped forever: for memory the kernel may still use.
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: `ptr`/`len` describe a mapping this value created and nothing else
            // unmaps; no reference into it outlives the owner of this value.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}
