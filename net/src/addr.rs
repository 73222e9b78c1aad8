//! Socket addresses: conversion to and from the kernel's `sockaddr_storage`, and resolution of
//! the address forms users pass (`"127.0.0.1:8080"`, `("localhost", 80)`, `SocketAddr`, ...).
//!
//! Literal addresses are parsed on the spot. Host names go through the system resolver
//! (`getaddrinfo`), which blocks, so it runs on a short-lived helper thread while the runtime
//! keeps going. Anything that does not parse or resolve is an `InvalidInput` error.

use std::{
    io,
    mem::{self, MaybeUninit},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

/// A socket address in the kernel's layout, boxed by the operations that lend it to the kernel.
#[derive(Clone, Copy)]
pub(crate) struct RawAddr {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.socket_addr() {
            Ok(addr) => write!(f, "{addr}"),
            Err(_) => write!(f, "RawAddr(family {})", self.storage.ss_family),
        }
    }
}

impl RawAddr {
    /// Zeroed storage with the full length, for the kernel to fill in.
    pub(crate) fn empty() -> RawAddr {
        RawAddr {
            // SAFETY: `sockaddr_storage` is plain old data; all-zero is a valid value.
            storage: unsafe { MaybeUninit::zeroed().assume_init() },
            len: mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    pub(crate) fn from_socket_addr(addr: &SocketAddr) -> RawAddr {
        let mut raw = RawAddr::empty();
        match addr {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `sockaddr_storage` is larger than and suitably aligned for
                // `sockaddr_in`; we write one whole value at its start.
                unsafe {
                    (&mut raw.storage as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in>()
                        .write(sin)
                };
                raw.len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: as above, for `sockaddr_in6`.
                unsafe {
                    (&mut raw.storage as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in6>()
                        .write(sin6)
                };
                raw.len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        raw
    }

    /// The address the kernel wrote, or an error for families other than IPv4/IPv6.
    pub(crate) fn socket_addr(&self) -> io::Result<SocketAddr> {
        let ptr = &self.storage as *const libc::sockaddr_storage;
        match i32::from(self.storage.ss_family) {
            libc::AF_INET if self.len as usize >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a `sockaddr_in`, and the length
                // covers it; the storage is aligned for it.
                let sin = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
                Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if self.len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for `sockaddr_in6`.
                let sin6 = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            family => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected socket address family {family}"),
            )),
        }
    }

    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }
}

/// Address forms accepted by `connect`, `bind` and `send_to`, like `std::net::ToSocketAddrs`
/// but resolved without blocking the runtime thread.
///
/// Implemented for the forms tokio's `ToSocketAddrs` takes: `SocketAddr` (and V4/V6),
/// `(IpAddr, u16)` (and V4/V6), `&[SocketAddr]`, host strings (`str`/`String` as
/// `"host:port"`, `(&str, u16)`, `(String, u16)`), and a reference to any of them
/// (`&SocketAddr`, `&(IpAddr, u16)`, `&String`, `&str`, ...); also `Vec<SocketAddr>`.
pub trait ToSocketAddrs: sealed::Sealed {}

pub(crate) mod sealed {
    use std::{io, net::SocketAddr};

    /// How an address form resolves.
    #[derive(Debug)]
    pub enum Resolution {
        /// One numeric address (no allocation: `send_to` resolves one per datagram).
        One(SocketAddr),
        /// Already numeric.
        Ready(Vec<SocketAddr>),
        /// Needs the system resolver: host and port.
        Lookup(String, u16),
    }

    /// The resolution step behind `ToSocketAddrs`.
    pub trait Sealed {
        /// Parses the form, or names the host to look up.
        fn resolution(&self) -> io::Result<Resolution>;
    }
}

use sealed::Resolution;

macro_rules! ready_addr {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {$(
        impl sealed::Sealed for $t {
            fn resolution(&self) -> io::Result<Resolution> {
                let $v = self;
                Ok(Resolution::One($e))
            }
        }
        impl ToSocketAddrs for $t {}
    )*};
}

ready_addr! {
    SocketAddr => |a| *a,
    SocketAddrV4 => |a| SocketAddr::V4(*a),
    SocketAddrV6 => |a| SocketAddr::V6(*a),
    (IpAddr, u16) => |a| SocketAddr::new(a.0, a.1),
    (Ipv4Addr, u16) => |a| SocketAddr::new(IpAddr::V4(a.0), a.1),
    (Ipv6Addr, u16) => |a| SocketAddr::new(IpAddr::V6(a.0), a.1),
}

impl sealed::Sealed for [SocketAddr] {
    fn resolution(&self) -> io::Result<Resolution> {
        Ok(Resolution::Ready(self.to_vec()))
    }
}
impl ToSocketAddrs for [SocketAddr] {}

impl sealed::Sealed for Vec<SocketAddr> {
    fn resolution(&self) -> io::Result<Resolution> {
        Ok(Resolution::Ready(self.clone()))
    }
}
impl ToSocketAddrs for Vec<SocketAddr> {}

impl sealed::Sealed for str {
    fn resolution(&self) -> io::Result<Resolution> {
        if let Ok(addr) = self.parse::<SocketAddr>() {
            return Ok(Resolution::One(addr));
        }
        let (host, port) = self.rsplit_once(':').ok_or_else(|| {
            invalid(format!(
                "invalid socket address {self:?}: expected \"host:port\" or \"ip:port\""
            ))
        })?;
        let port: u16 = port.parse().map_err(|_| {
            invalid(format!(
                "invalid port {port:?} in socket address {self:?}: expected a number 0-65535"
            ))
        })?;
        (host, port).resolution()
    }
}
impl ToSocketAddrs for str {}

impl sealed::Sealed for String {
    fn resolution(&self) -> io::Result<Resolution> {
        self.as_str().resolution()
    }
}
impl ToSocketAddrs for String {}

impl sealed::Sealed for (&str, u16) {
    fn resolution(&self) -> io::Result<Resolution> {
        let (host, port) = *self;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Resolution::One(SocketAddr::new(ip, port)));
        }
        // `[::1]` style literals.
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
            && let Ok(ip) = inner.parse::<Ipv6Addr>()
        {
            return Ok(Resolution::One(SocketAddr::new(IpAddr::V6(ip), port)));
        }
        if host.is_empty() {
            return Err(invalid("empty host name in socket address".to_owned()));
        }
        Ok(Resolution::Lookup(host.to_owned(), port))
    }
}
impl ToSocketAddrs for (&str, u16) {}

impl sealed::Sealed for (String, u16) {
    fn resolution(&self) -> io::Result<Resolution> {
        (self.0.as_str(), self.1).resolution()
    }
}
impl ToSocketAddrs for (String, u16) {}

/// `&SocketAddr`, `&str`, `&String`, `&[SocketAddr]`, ...: what the referent resolves to.
impl<T: sealed::Sealed + ?Sized> sealed::Sealed for &T {
    fn resolution(&self) -> io::Result<Resolution> {
        (**self).resolution()
    }
}
impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Resolves `addr` to one or more socket addresses; host names are looked up on a helper
/// thread. Fails with `InvalidInput` when the address is malformed or the name does not
/// resolve.
pub(crate) async fn resolve<A: ToSocketAddrs + ?Sized>(addr: &A) -> io::Result<Vec<SocketAddr>> {
    match addr.resolution()? {
        Resolution::One(addr) => Ok(vec![addr]),
        Resolution::Ready(addrs) => non_empty(addrs),
        Resolution::Lookup(host, port) => lookup(host, port).await,
    }
}

/// The first address `addr` resolves to (without allocating for a numeric one).
pub(crate) async fn resolve_first<A: ToSocketAddrs + ?Sized>(addr: &A) -> io::Result<SocketAddr> {
    match addr.resolution()? {
        Resolution::One(addr) => Ok(addr),
        Resolution::Ready(addrs) => Ok(non_empty(addrs)?[0]),
        Resolution::Lookup(host, port) => Ok(lookup(host, port).await?[0]),
    }
}

/// Resolves `addr` on the calling thread, blocking for host-name lookups (used by the
/// synchronous `bind` calls, which run at start-up).
pub(crate) fn resolve_blocking<A: ToSocketAddrs + ?Sized>(addr: &A) -> io::Result<Vec<SocketAddr>> {
    match addr.resolution()? {
        Resolution::One(addr) => Ok(vec![addr]),
        Resolution::Ready(addrs) => non_empty(addrs),
        Resolution::Lookup(host, port) => lookup_blocking(&host, port),
    }
}

fn non_empty(addrs: Vec<SocketAddr>) -> io::Result<Vec<SocketAddr>> {
    if addrs.is_empty() {
        return Err(invalid("no socket address to use".to_owned()));
    }
    Ok(addrs)
}

/// Asks the system resolver (`getaddrinfo`, which blocks) for the addresses of `host`.
fn lookup_blocking(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| invalid(format!("could not resolve host {host:?}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(invalid(format!("host {host:?} has no addresses")));
    }
    Ok(addrs)
}

/// Runs the blocking system resolver on a helper thread.
async fn lookup(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    let (tx, rx) = runtime::channel::bounded(1);
    std::thread::Builder::new()
        .name("net-resolver".into())
        .spawn(move || {
            // The receiver may be gone (the lookup was abandoned); nobody needs the answer then.
            let _ = tx.send_blocking(lookup_blocking(&host, port));
        })
        .map_err(|e| io::Error::other(format!("could not start a resolver thread: {e}")))?;
    rx.recv().await.unwrap_or_else(|_| {
        Err(io::Error::other(
            "the resolver thread ended without an answer",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::{sealed::Sealed, *};

    #[test]
    fn raw_addresses_round_trip() {
        for addr in [
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
            "[::1]:443".parse().unwrap(),
            "[fe80::1%3]:9".parse().unwrap(),
        ] {
            assert_eq!(
                RawAddr::from_socket_addr(&addr).socket_addr().unwrap(),
                addr
            );
        }
        assert!(RawAddr::empty().socket_addr().is_err());
    }

    #[test]
    fn literal_forms_need_no_lookup() {
        let ready = |r: Resolution| match r {
            Resolution::One(a) => vec![a],
            Resolution::Ready(a) => a,
            Resolution::Lookup(h, _) => panic!("looked up {h}"),
        };
        assert_eq!(ready("10.0.0.1:5".resolution().unwrap()).len(), 1);
        assert_eq!(ready(("::1", 5).resolution().unwrap()).len(), 1);
        assert_eq!(ready(("[::1]", 5).resolution().unwrap()).len(), 1);
        assert!(matches!(
            ("example.invalid", 80).resolution().unwrap(),
            Resolution::Lookup(..)
        ));
    }

    #[test]
    fn malformed_forms_are_invalid_input() {
        for bad in ["127.0.0.1", "host:port", "host:99999", ":80"] {
            let err = bad.resolution().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}: {err}");
        }
    }
}

/// Property tests: `sockaddr_storage` contents and lengths come from the kernel (source
/// addresses of datagrams, accepted peers).
#[cfg(test)]
pub(crate) mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(2000)
        }
    }

    /// Any IPv4 or IPv6 socket address, flow info and scope id included.
    pub(crate) fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(ip.into(), port))),
            (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
                |(ip, port, flow, scope)| {
                    SocketAddr::V6(SocketAddrV6::new(ip.into(), port, flow, scope))
                }
            ),
        ]
    }

    /// Storage holding `bytes` (zero-padded or cut to its size) and claiming `len` bytes.
    fn raw_from_bytes(bytes: &[u8], len: libc::socklen_t) -> RawAddr {
        let mut raw = RawAddr::empty();
        let n = bytes.len().min(mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: `n` bytes fit in the storage, and every byte pattern is a valid
        // `sockaddr_storage` (plain integers).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.as_mut_ptr().cast::<u8>(), n);
        }
        raw.len = len;
        raw
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_storage_decodes_or_fails_cleanly(
            bytes in prop::collection::vec(any::<u8>(), 0..=128),
            family in prop_oneof![
                Just(libc::AF_INET as u16),
                Just(libc::AF_INET6 as u16),
                any::<u16>(),
            ],
            len in prop_oneof![0u32..=40, any::<u32>()],
        ) {
            let mut bytes = bytes;
            bytes.resize(bytes.len().max(2), 0);
            bytes[..2].copy_from_slice(&family.to_ne_bytes());
            let raw = raw_from_bytes(&bytes, len);
            let _ = format!("{raw:?}");
            let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
            match raw.socket_addr() {
                Ok(SocketAddr::V4(a)) => {
                    prop_assert_eq!(i32::from(family), libc::AF_INET);
                    prop_assert!(len as usize >= mem::size_of::<libc::sockaddr_in>());
                    prop_assert_eq!(a.port(), u16::from_be_bytes([at(2), at(3)]));
                    prop_assert_eq!(a.ip().octets(), [at(4), at(5), at(6), at(7)]);
                }
                Ok(SocketAddr::V6(a)) => {
                    prop_assert_eq!(i32::from(family), libc::AF_INET6);
                    prop_assert!(len as usize >= mem::size_of::<libc::sockaddr_in6>());
                    prop_assert_eq!(a.port(), u16::from_be_bytes([at(2), at(3)]));
                    let ip: Vec<u8> = (8..24).map(at).collect();
                    prop_assert_eq!(&a.ip().octets()[..], &ip[..]);
                }
                Err(e) => {
                    prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                    let whole = match i32::from(family) {
                        libc::AF_INET => mem::size_of::<libc::sockaddr_in>(),
                        libc::AF_INET6 => mem::size_of::<libc::sockaddr_in6>(),
                        _ => usize::MAX,
                    };
                    prop_assert!((len as usize) < whole, "a complete address was rejected");
                }
            }
        }

        #[test]
        fn socket_addresses_round_trip(addr in socket_addr()) {
            let raw = RawAddr::from_socket_addr(&addr);
            let expected_len = if addr.is_ipv4() {
                mem::size_of::<libc::sockaddr_in>()
            } else {
                mem::size_of::<libc::sockaddr_in6>()
            };
            prop_assert_eq!(raw.len as usize, expected_len);
            prop_assert_eq!(raw.socket_addr().unwrap(), addr);
            // What the kernel would copy out of the storage decodes the same.
            // SAFETY: the storage is `size_of::<sockaddr_storage>()` initialized bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    raw.as_ptr().cast::<u8>(),
                    mem::size_of::<libc::sockaddr_storage>(),
                )
            };
            let copy = raw_from_bytes(&bytes[..expected_len], raw.len);
            prop_assert_eq!(copy.socket_addr().unwrap(), addr);
            // One byte short of the structure is not an address.
            let short = raw_from_bytes(&bytes[..expected_len], raw.len - 1);
            prop_assert!(short.socket_addr().is_err());
        }
    }
}
