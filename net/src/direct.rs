//! How a socket is named: an fd of the process, or a slot of its ring's file table (a direct
//! descriptor, `runtime::direct`), in the 8 bytes every connection pays for.
//!
//! # Invariants
//!
//! - [`Fd`] holds exactly one of: a real fd `n`, stored as the address `(n << 1) | 1` of a
//!   pointer without provenance (never dereferenced), or a pointer from `Box::into_raw` to a
//!   [`Direct`] (aligned, so its low bit is 0). It owns what it holds: the fd is closed, the box
//!   freed, exactly once, by `Drop` or by whoever [`Fd::into_owned`] hands it to.
//! - A [`Direct`]'s installed fd, once set, stays until the socket closes, so the borrows
//!   [`Fd::get`] lends out of it live as long as the `Fd`.
//! - The `AsFd` placeholder is opened before the first direct socket is made, so a direct
//!   socket can always lend one.

use std::{
    cell::OnceCell,
    io,
    marker::PhantomData,
    mem::ManuallyDrop,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
        unix::fs::OpenOptionsExt,
    },
    ptr::NonNull,
    sync::OnceLock,
};

use runtime::direct::DirectFd;

/// A direct descriptor, with the real fd installed for it once one was asked for.
#[derive(Debug)]
pub(crate) struct Direct {
    pub(crate) slot: DirectFd,
    pub(crate) installed: OnceCell<OwnedFd>,
}

/// An fd or a direct descriptor, owned (see the module docs).
pub(crate) struct Fd(NonNull<Direct>);

/// A look at an [`Fd`].
pub(crate) enum FdRef<'a> {
    Real(BorrowedFd<'a>),
    Direct(&'a Direct),
}

/// An [`Fd`] taken apart.
pub(crate) enum FdOwned {
    Real(OwnedFd),
    Direct(Box<Direct>),
}

impl Fd {
    pub(crate) fn real(fd: OwnedFd) -> Fd {
        let bits = ((fd.into_raw_fd() as u32 as usize) << 1) | 1;
        Fd(NonNull::new(std::ptr::without_provenance_mut(bits)).expect("the tag bit is set"))
    }

    pub(crate) fn direct(slot: DirectFd) -> Fd {
        let direct = Box::new(Direct {
            slot,
            installed: OnceCell::new(),
        });
        // A `Box` is never null, and aligned to at least 8 here, so the tag bit is clear.
        Fd(NonNull::from(Box::leak(direct)))
    }

    fn is_real(&self) -> bool {
        self.0.addr().get() & 1 == 1
    }

    pub(crate) fn get(&self) -> FdRef<'_> {
        if self.is_real() {
            let raw = (self.0.addr().get() >> 1) as u32 as RawFd;
            // SAFETY: a tagged value holds an open fd owned by `self` (module invariants),
            // which stays open while `self` is borrowed.
            FdRef::Real(unsafe { BorrowedFd::borrow_raw(raw) })
        } else {
            // SAFETY: an untagged value is the pointer of a live box owned by `self`.
            FdRef::Direct(unsafe { self.0.as_ref() })
        }
    }

    pub(crate) fn into_owned(self) -> FdOwned {
        let this = ManuallyDrop::new(self);
        if this.is_real() {
            let raw = (this.0.addr().get() >> 1) as u32 as RawFd;
            // Closed or handed out of the runtime's care: the epoll backend must not take a
            // later file with the same number for this one (`runtime::op::forget_fd`).
            runtime::op::forget_fd(raw);
            // SAFETY: the fd is owned by `self`, which gives it up here (not dropped).
            FdOwned::Real(unsafe { OwnedFd::from_raw_fd(raw) })
        } else {
            // SAFETY: the pointer came from `Box::leak` and is given up here (not dropped).
            FdOwned::Direct(unsafe { Box::from_raw(this.0.as_ptr()) })
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // Closes the fd or frees the box (and so closes the slot through the ring).
        let this = Fd(self.0);
        drop(this.into_owned());
    }
}

impl std::fmt::Debug for Fd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.get() {
            FdRef::Real(fd) => f.debug_tuple("Fd").field(&fd.as_raw_fd()).finish(),
            FdRef::Direct(d) => d.fmt(f),
        }
    }
}

/// A socket2 view of a socket for options and queries (see `Socket::sock_ref`).
pub(crate) enum SockGuard<'a> {
    /// The socket's own fd (or the one installed for it), borrowed: never closed here.
    Borrowed(ManuallyDrop<socket2::Socket>, PhantomData<BorrowedFd<'a>>),
    /// A real fd installed for a direct descriptor for this call, closed on drop.
    Temporary(socket2::Socket),
}

impl<'a> SockGuard<'a> {
    pub(crate) fn borrowed(fd: BorrowedFd<'a>) -> SockGuard<'a> {
        // SAFETY: the fd stays open for `'a`; `ManuallyDrop` keeps the view from closing it.
        let socket = unsafe { socket2::Socket::from_raw_fd(fd.as_raw_fd()) };
        SockGuard::Borrowed(ManuallyDrop::new(socket), PhantomData)
    }
}

impl std::ops::Deref for SockGuard<'_> {
    type Target = socket2::Socket;

    fn deref(&self) -> &socket2::Socket {
        match self {
            SockGuard::Borrowed(s, _) => s,
            SockGuard::Temporary(s) => s,
        }
    }
}

/// The fd `AsFd` lends for a direct descriptor that got no real fd: opened once per process,
/// before the first direct socket is made ([`placeholder_ready`]), while fds are left.
static PLACEHOLDER: OnceLock<OwnedFd> = OnceLock::new();

/// The placeholder (`O_PATH` on `/dev/null`: socket calls on it fail with `EBADF`).
pub(crate) fn placeholder() -> Option<BorrowedFd<'static>> {
    PLACEHOLDER.get().map(AsFd::as_fd)
}

/// Opens the placeholder of `AsFd` if that was not done yet; direct descriptors are made
/// only once this succeeded.
pub(crate) fn placeholder_ready() -> io::Result<()> {
    if PLACEHOLDER.get().is_some() {
        return Ok(());
    }
    let fd = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open("/dev/null")?;
    let _ = PLACEHOLDER.set(OwnedFd::from(fd));
    Ok(())
}

/// The current ring's file table for a new direct socket, if there is one (or one can be
/// registered now) and the `AsFd` placeholder is open; `None` means: use an ordinary fd.
pub(crate) fn table() -> Option<runtime::direct::DirectTable> {
    placeholder_ready().ok()?;
    runtime::direct::enable().ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, OwnedFd};

    use super::{Fd, FdOwned, FdRef};

    /// The representation every socket pays for stays one word, and a real fd survives the
    /// round trip through it.
    #[test]
    fn fd_is_one_word_and_round_trips() {
        assert_eq!(std::mem::size_of::<Fd>(), 8);
        assert_eq!(std::mem::size_of::<Option<Fd>>(), 8);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let raw = a.as_raw_fd();
        let fd = Fd::real(OwnedFd::from(a));
        assert!(matches!(fd.get(), FdRef::Real(f) if f.as_raw_fd() == raw));
        let FdOwned::Real(back) = fd.into_owned() else {
            panic!("a real fd comes back real")
        };
        assert_eq!(back.as_raw_fd(), raw);
        drop(Fd::real(OwnedFd::from(b)));
    }
}
