//! `UCred`: the credentials of a Unix socket's peer (`SO_PEERCRED`).
//!
//! The kernel records them when the connection is made (`connect`, `socketpair`), so they
//! describe the peer process at that moment (`man 7 unix`), not whoever holds the socket now.

use std::{io, os::fd::AsRawFd};

use crate::socket::Socket;

/// The credentials of the process at the other end of a Unix socket, from
/// [`UnixStream::peer_cred`](super::UnixStream::peer_cred).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UCred {
    pid: Option<libc::pid_t>,
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl UCred {
    /// The peer's effective user id.
    pub fn uid(&self) -> libc::uid_t {
        self.uid
    }

    /// The peer's effective group id.
    pub fn gid(&self) -> libc::gid_t {
        self.gid
    }

    /// The peer's process id, when the kernel knows it (it reports 0 otherwise, e.g. for a
    /// peer in another pid namespace it cannot name).
    pub fn pid(&self) -> Option<libc::pid_t> {
        self.pid
    }
}

/// `getsockopt(SOL_SOCKET, SO_PEERCRED)`.
pub(crate) fn peer_cred(socket: &Socket) -> io::Result<UCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes (one `ucred`) into the live local `cred`
    // and its length into `len`; the fd is open (owned by `socket`).
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UCred {
        pid: (cred.pid > 0).then_some(cred.pid),
        uid: cred.uid,
        gid: cred.gid,
    })
}
