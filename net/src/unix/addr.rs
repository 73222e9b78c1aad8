//! Unix socket addresses: paths and abstract names to and from the kernel's `sockaddr_un`,
//! and the errors for addresses the kernel cannot take, with what to do about them.
//!
//! # Invariants
//!
//! - An address handed to the kernel is a path of 1 to 107 bytes without NUL, stored with
//!   its terminating NUL, or an abstract name of up to 107 bytes after the leading NUL
//!   (`man 7 unix`: `sun_path` holds 108 bytes). Anything else is an `InvalidInput` error
//!   before any system call.
//! - A path whose first byte is NUL names the abstract namespace (`"\0name"`), as with
//!   tokio and [`SocketAddrExt::from_abstract_name`].
//! - Decoding never reads past the length the kernel reported nor past `sockaddr_un`; a
//!   length that covers no path is an unnamed address.

use std::{
    ffi::OsStr,
    io, mem,
    os::{
        fd::AsRawFd,
        linux::net::SocketAddrExt,
        unix::{ffi::OsStrExt, net::SocketAddr},
    },
    path::Path,
};

use crate::{addr::RawAddr, socket::Socket};

/// Bytes in `sun_path`.
const SUN_PATH: usize = 108;

fn path_offset() -> usize {
    mem::offset_of!(libc::sockaddr_un, sun_path)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// `path` in the kernel's layout; a leading NUL byte selects the abstract namespace.
///
/// # Errors
///
/// `InvalidInput` for an empty path, a NUL inside it, or one of 108 bytes or more.
pub(crate) fn raw_from_path(path: &Path) -> io::Result<RawAddr> {
    let bytes = path.as_os_str().as_bytes();
    if let Some(name) = bytes.strip_prefix(b"\0") {
        return raw_abstract(name);
    }
    if bytes.is_empty() {
        return Err(invalid(
            "an empty path names no Unix socket: give a file path such as \
             /tmp/app.sock (or \"\\0name\" for the abstract namespace)"
                .into(),
        ));
    }
    if bytes.contains(&0) {
        return Err(invalid(format!(
            "Unix socket path {path:?} contains a NUL byte: remove it (only a leading NUL \
             is meaningful: it selects the abstract namespace)"
        )));
    }
    if bytes.len() >= SUN_PATH {
        return Err(invalid(format!(
            "Unix socket path {path:?} is {} bytes; the kernel takes at most {} (sun_path \
             holds {SUN_PATH} bytes with the terminating NUL): use a shorter path, e.g. a \
             relative one or one in a short directory such as /tmp",
            bytes.len(),
            SUN_PATH - 1
        )));
    }
    Ok(raw(bytes, bytes.len() + 1))
}

/// An abstract name in the kernel's layout: a NUL, then `name` (not NUL-terminated).
fn raw_abstract(name: &[u8]) -> io::Result<RawAddr> {
    if name.len() >= SUN_PATH {
        return Err(invalid(format!(
            "abstract Unix socket name of {} bytes is too long: at most {} bytes fit after \
             the leading NUL; use a shorter name",
            name.len(),
            SUN_PATH - 1
        )));
    }
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(name);
    Ok(raw(&bytes, bytes.len()))
}

/// `sockaddr_un` with `bytes` at the start of `sun_path` (zero-filled after them) and a
/// length covering `path_len` bytes of it. The callers keep `bytes.len() <= path_len <
/// SUN_PATH + 1`.
fn raw(bytes: &[u8], path_len: usize) -> RawAddr {
    let mut raw = RawAddr::empty();
    // SAFETY: `sockaddr_un` is plain old data; all-zero is a valid value.
    let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in sun.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sockaddr_storage` is larger than and suitably aligned for `sockaddr_un`; we
    // write one whole value at its start.
    unsafe {
        (&mut raw.storage as *mut libc::sockaddr_storage)
            .cast::<libc::sockaddr_un>()
            .write(sun)
    };
    raw.len = (path_offset() + path_len) as libc::socklen_t;
    raw
}

/// `addr` in the kernel's layout.
///
/// # Errors
///
/// `InvalidInput` for an unnamed address (nothing can be bound or connected to it).
pub(crate) fn raw_from_addr(addr: &SocketAddr) -> io::Result<RawAddr> {
    if let Some(path) = addr.as_pathname() {
        raw_from_path(path)
    } else if let Some(name) = addr.as_abstract_name() {
        raw_abstract(name)
    } else {
        Err(invalid(
            "an unnamed Unix socket address cannot be bound or connected to: use a path or \
             an abstract name"
                .into(),
        ))
    }
}

/// The address the kernel wrote into `raw`.
///
/// # Errors
///
/// `InvalidData` for another address family.
pub(crate) fn to_std(raw: &RawAddr) -> io::Result<SocketAddr> {
    let len = (raw.len as usize).min(mem::size_of::<libc::sockaddr_un>());
    if len <= path_offset() {
        // `from_pathname("")` is std's way to spell an unnamed address.
        return SocketAddr::from_pathname("");
    }
    if i32::from(raw.storage.ss_family) != libc::AF_UNIX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected a Unix socket address, got family {}",
                raw.storage.ss_family
            ),
        ));
    }
    // SAFETY: the storage holds a `sockaddr_un` (family checked; the storage is larger than
    // and aligned for it).
    let sun =
        unsafe { &*(&raw.storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
    let path: Vec<u8> = sun.sun_path[..len - path_offset()]
        .iter()
        .map(|&c| c as u8)
        .collect();
    match path.split_first() {
        Some((0, name)) => SocketAddr::from_abstract_name(name),
        _ => {
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            SocketAddr::from_pathname(Path::new(OsStr::from_bytes(&path[..end])))
        }
    }
}

/// How `path` reads in messages (abstract names shown with their leading `\0`).
pub(crate) fn describe(path: &Path) -> String {
    format!("{:?}", path.as_os_str())
}

/// How `addr` reads in messages.
pub(crate) fn describe_addr(addr: &SocketAddr) -> String {
    format!("{addr:?}")
}

/// The socket's own address (`getsockname`).
pub(crate) fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    name_of(socket, libc::getsockname)
}

/// The connected peer's address (`getpeername`).
pub(crate) fn peer_addr(socket: &Socket) -> io::Result<SocketAddr> {
    name_of(socket, libc::getpeername)
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn name_of(socket: &Socket, call: NameFn) -> io::Result<SocketAddr> {
    let mut raw = RawAddr::empty();
    // SAFETY: the kernel writes at most `raw.len` bytes (the storage's size) into the storage
    // and the actual length into `raw.len`; the fd is open (owned by `socket`).
    let ret = unsafe { call(socket.as_raw_fd(), raw.as_mut_ptr(), &mut raw.len) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    to_std(&raw)
}

/// Adds what to do to the errors of `bind`/`connect` on `what` (the path as
/// [`describe`] shows it), keeping their kind.
pub(crate) fn explain(e: io::Error, op: &str, what: &str) -> io::Error {
    let hint = match e.kind() {
        io::ErrorKind::NotFound if op == "bind" => {
            "a directory in the path does not exist: create it first"
        }
        io::ErrorKind::NotFound => {
            "no socket exists at this path: is the server running, and is the path right?"
        }
        io::ErrorKind::ConnectionRefused => {
            "the file exists but nothing listens on it (a stale socket file?)"
        }
        io::ErrorKind::AddrInUse => {
            "the path exists already: remove the file if no server uses it any more (a stale \
             socket from an earlier run), or choose another path"
        }
        io::ErrorKind::PermissionDenied => "check the permissions of the path and its directories",
        _ => return e,
    };
    io::Error::new(e.kind(), format!("{op} to Unix socket {what}: {e}; {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let raw = raw_from_path(Path::new("/tmp/x.sock")).unwrap();
        let addr = to_std(&raw).unwrap();
        assert_eq!(addr.as_pathname(), Some(Path::new("/tmp/x.sock")));
    }

    #[test]
    fn abstract_names_round_trip_with_inner_nul() {
        let raw = raw_from_path(Path::new(OsStr::from_bytes(b"\0a\0b"))).unwrap();
        assert_eq!(to_std(&raw).unwrap().as_abstract_name(), Some(&b"a\0b"[..]));
        let std = SocketAddr::from_abstract_name(b"name").unwrap();
        let raw = raw_from_addr(&std).unwrap();
        assert_eq!(to_std(&raw).unwrap().as_abstract_name(), Some(&b"name"[..]));
    }

    #[test]
    fn bad_paths_are_invalid_input_with_a_reason() {
        let long = "a".repeat(108);
        let e = raw_from_path(Path::new(&long)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("at most 107"), "{e}");
        assert!(raw_from_path(Path::new(&"a".repeat(107))).is_ok());
        let e = raw_from_path(Path::new("")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = raw_from_path(Path::new(OsStr::from_bytes(b"a\0b"))).unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
        let unnamed = SocketAddr::from_pathname("").unwrap();
        assert_eq!(
            raw_from_addr(&unnamed).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn short_lengths_decode_as_unnamed() {
        let mut raw = RawAddr::empty();
        raw.len = 0;
        assert!(to_std(&raw).unwrap().is_unnamed());
        let mut raw = raw_from_path(Path::new("/x")).unwrap();
        raw.len = path_offset() as libc::socklen_t;
        assert!(to_std(&raw).unwrap().is_unnamed());
    }

    #[test]
    fn other_families_and_oversized_lengths_do_not_crash() {
        let mut raw = RawAddr::from_socket_addr(&"127.0.0.1:1".parse().unwrap());
        assert_eq!(to_std(&raw).unwrap_err().kind(), io::ErrorKind::InvalidData);
        raw = raw_from_path(Path::new("/tmp/y")).unwrap();
        raw.len = libc::socklen_t::MAX;
        assert_eq!(
            to_std(&raw).unwrap().as_pathname(),
            Some(Path::new("/tmp/y"))
        );
    }
}
