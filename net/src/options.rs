//! Socket options by tokio's names on [`TcpStream`], [`TcpListener`] and [`UdpSocket`] (and
//! the option helpers [`TcpSocket`](crate::TcpSocket) shares), read and set through
//! `socket2::SockRef`.
//!
//! Values go to `setsockopt(2)` unchanged, so what the kernel rejects comes back as its own
//! error (`EINVAL` for a TTL of 0, for instance; `man 7 ip`). The one exception: values that do
//! not fit the kernel's `int` are rejected here with `InvalidInput`, since a cast would turn
//! `u32::MAX` into -1, which the kernel reads as "use the default", and a linger time into a
//! negative one, which it reads as "forever".
//!
//! The IP-level options (`ttl`, `tos`) follow the socket's family: an IPv6 socket sets both
//! its IPv6 option (`IPV6_UNICAST_HOPS`, `IPV6_TCLASS`) and the IPv4 one, which Linux applies
//! to IPv4-mapped traffic of a dual-stack socket (`ipv6_setsockopt` in
//! `net/ipv6/ipv6_sockglue.c` hands `SOL_IP` to the IPv4 code), and reads the IPv6 one.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use socket2::{Domain, SockRef};

use crate::{TcpListener, TcpStream, UdpSocket};

/// `value` as the kernel's `int`, or an `InvalidInput` error naming the option.
fn int_value(option: &str, value: u64, range: &str) -> io::Result<()> {
    if value > i32::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{option} of {value} is out of range: use {range}"),
        ));
    }
    Ok(())
}

fn is_v6(s: &SockRef<'_>) -> io::Result<bool> {
    Ok(s.domain()? == Domain::IPV6)
}

/// `IP_TTL`, or `IPV6_UNICAST_HOPS` on an IPv6 socket.
pub(crate) fn ttl(s: SockRef<'_>) -> io::Result<u32> {
    if is_v6(&s)? {
        s.unicast_hops_v6()
    } else {
        s.ttl_v4()
    }
}

/// Sets `IP_TTL`, and `IPV6_UNICAST_HOPS` on an IPv6 socket.
pub(crate) fn set_ttl(s: SockRef<'_>, ttl: u32) -> io::Result<()> {
    int_value("a TTL", ttl.into(), "1 to 255")?;
    // First: it also checks the range (1-255) for IPv6 sockets, whose hop limit takes 0.
    s.set_ttl_v4(ttl)?;
    if is_v6(&s)? {
        s.set_unicast_hops_v6(ttl)?;
    }
    Ok(())
}

/// `IP_TOS`, or `IPV6_TCLASS` on an IPv6 socket.
pub(crate) fn tos(s: SockRef<'_>) -> io::Result<u32> {
    if is_v6(&s)? {
        s.tclass_v6()
    } else {
        s.tos_v4()
    }
}

/// Sets `IP_TOS`, and `IPV6_TCLASS` on an IPv6 socket.
pub(crate) fn set_tos(s: SockRef<'_>, tos: u32) -> io::Result<()> {
    int_value("a type of service", tos.into(), "0 to 255")?;
    s.set_tos_v4(tos)?;
    if is_v6(&s)? {
        s.set_tclass_v6(tos)?;
    }
    Ok(())
}

/// Sets `SO_LINGER` (whole seconds; the kernel has no finer unit).
pub(crate) fn set_linger(s: SockRef<'_>, linger: Option<Duration>) -> io::Result<()> {
    if let Some(d) = linger {
        int_value(
            "a linger time (seconds)",
            d.as_secs(),
            "at most i32::MAX seconds",
        )?;
    }
    s.set_linger(linger)
}

/// The socket's pending error (`SO_ERROR`), cleared by reading it.
pub(crate) fn take_error(s: SockRef<'_>) -> io::Result<Option<io::Error>> {
    s.take_error()
}

/// The options every TCP and UDP socket type has.
macro_rules! ip_options {
    ($ty:ty) => {
        impl $ty {
            /// The time-to-live of outgoing packets (`IP_TTL`; the hop limit,
            /// `IPV6_UNICAST_HOPS`, on an IPv6 socket).
            pub fn ttl(&self) -> io::Result<u32> {
                ttl(SockRef::from(self))
            }

            /// Sets the time-to-live of outgoing packets (`IP_TTL`; on an IPv6 socket also
            /// the hop limit, `IPV6_UNICAST_HOPS`).
            ///
            /// # Errors
            ///
            /// The kernel's `InvalidInput` (`EINVAL`) for 0 or more than 255.
            pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
                set_ttl(SockRef::from(self), ttl)
            }

            /// The type-of-service byte of outgoing packets (`IP_TOS`; the traffic class,
            /// `IPV6_TCLASS`, on an IPv6 socket).
            pub fn tos(&self) -> io::Result<u32> {
                tos(SockRef::from(self))
            }

            /// Sets the type-of-service byte of outgoing packets (`IP_TOS`; on an IPv6 socket
            /// also the traffic class, `IPV6_TCLASS`). On TCP sockets Linux keeps the two ECN
            /// bits under its own control.
            pub fn set_tos(&self, tos: u32) -> io::Result<()> {
                set_tos(SockRef::from(self), tos)
            }

            /// Takes the socket's pending error (`SO_ERROR`), clearing it.
            pub fn take_error(&self) -> io::Result<Option<io::Error>> {
                take_error(SockRef::from(self))
            }
        }
    };
}

ip_options!(TcpStream);
ip_options!(TcpListener);
ip_options!(UdpSocket);

/// `SO_LINGER` and keepalive, shared by `TcpStream` and `TcpSocket`.
macro_rules! tcp_options {
    ($ty:ty) => {
        impl $ty {
            /// How long closing the socket waits for unsent data (`SO_LINGER`); `None` when
            /// it does not wait.
            pub fn linger(&self) -> std::io::Result<Option<std::time::Duration>> {
                socket2::SockRef::from(self).linger()
            }

            /// Sets `SO_LINGER`, in whole seconds.
            ///
            /// `Some(Duration::ZERO)` makes closing the socket reset the connection (`RST`)
            /// and discard unsent data. A longer time makes the close **block the thread**
            /// that drops the last handle of the socket until the data is sent or the time
            /// ran out: the runtime's sockets are in blocking mode (io_uring needs no
            /// `O_NONBLOCK`), and the close is a plain `close(2)`. tokio deprecated its
            /// `set_linger` for the same reason. `None` (the default) closes at once and
            /// sends the rest in the background.
            pub fn set_linger(&self, linger: Option<std::time::Duration>) -> std::io::Result<()> {
                $crate::options::set_linger(socket2::SockRef::from(self), linger)
            }

            /// Whether `SO_KEEPALIVE` is set.
            pub fn keepalive(&self) -> std::io::Result<bool> {
                socket2::SockRef::from(self).keepalive()
            }

            /// Sets `SO_KEEPALIVE`, with the system's default timing (two hours idle; see
            /// [`set_tcp_keepalive`](Self::set_tcp_keepalive) to choose it).
            pub fn set_keepalive(&self, keepalive: bool) -> std::io::Result<()> {
                socket2::SockRef::from(self).set_keepalive(keepalive)
            }

            /// Turns keepalive on (`SO_KEEPALIVE`) with the idle time (`TCP_KEEPIDLE`),
            /// probe interval (`TCP_KEEPINTVL`) and probe count (`TCP_KEEPCNT`) that
            /// `params` gives; those it leaves out keep their value.
            ///
            /// ```no_run
            /// # fn f(stream: &net::TcpStream) -> std::io::Result<()> {
            /// use std::time::Duration;
            ///
            /// let params = net::TcpKeepalive::new()
            ///     .with_time(Duration::from_secs(60))
            ///     .with_interval(Duration::from_secs(10))
            ///     .with_retries(5);
            /// stream.set_tcp_keepalive(&params)?;
            /// # Ok(())
            /// # }
            /// ```
            pub fn set_tcp_keepalive(&self, params: &socket2::TcpKeepalive) -> std::io::Result<()> {
                socket2::SockRef::from(self).set_tcp_keepalive(params)
            }

            /// The idle time before the first keepalive probe (`TCP_KEEPIDLE`).
            pub fn keepalive_time(&self) -> std::io::Result<std::time::Duration> {
                socket2::SockRef::from(self).tcp_keepalive_time()
            }

            /// The time between keepalive probes (`TCP_KEEPINTVL`).
            pub fn keepalive_interval(&self) -> std::io::Result<std::time::Duration> {
                socket2::SockRef::from(self).tcp_keepalive_interval()
            }

            /// How many unanswered probes end the connection (`TCP_KEEPCNT`).
            pub fn keepalive_retries(&self) -> std::io::Result<u32> {
                socket2::SockRef::from(self).tcp_keepalive_retries()
            }
        }
    };
}

pub(crate) use tcp_options;

tcp_options!(TcpStream);

impl UdpSocket {
    /// Whether `SO_BROADCAST` is set.
    pub fn broadcast(&self) -> io::Result<bool> {
        SockRef::from(self).broadcast()
    }

    /// Joins the IPv4 multicast group `multiaddr` on the interface with address `interface`
    /// (`Ipv4Addr::UNSPECIFIED`: the kernel picks one) (`IP_ADD_MEMBERSHIP`).
    pub fn join_multicast_v4(&self, multiaddr: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        SockRef::from(self).join_multicast_v4(&multiaddr, &interface)
    }

    /// Leaves an IPv4 multicast group joined with
    /// [`join_multicast_v4`](UdpSocket::join_multicast_v4) (`IP_DROP_MEMBERSHIP`).
    pub fn leave_multicast_v4(&self, multiaddr: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        SockRef::from(self).leave_multicast_v4(&multiaddr, &interface)
    }

    /// Joins the IPv6 multicast group `multiaddr` on the interface with index `interface` (0:
    /// the kernel picks one) (`IPV6_ADD_MEMBERSHIP`).
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        SockRef::from(self).join_multicast_v6(multiaddr, interface)
    }

    /// Leaves an IPv6 multicast group joined with
    /// [`join_multicast_v6`](UdpSocket::join_multicast_v6) (`IPV6_DROP_MEMBERSHIP`).
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        SockRef::from(self).leave_multicast_v6(multiaddr, interface)
    }

    /// Whether IPv4 multicast datagrams this socket sends loop back to local listeners
    /// (`IP_MULTICAST_LOOP`, on by default).
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        SockRef::from(self).multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        SockRef::from(self).set_multicast_loop_v4(on)
    }

    /// The time-to-live of outgoing IPv4 multicast datagrams (`IP_MULTICAST_TTL`, 1 by
    /// default: they stay on the local network).
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        SockRef::from(self).multicast_ttl_v4()
    }

    /// Sets `IP_MULTICAST_TTL`.
    ///
    /// # Errors
    ///
    /// The kernel's `InvalidInput` (`EINVAL`) for more than 255.
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        int_value("a multicast TTL", ttl.into(), "0 to 255")?;
        SockRef::from(self).set_multicast_ttl_v4(ttl)
    }

    /// Whether IPv6 multicast datagrams this socket sends loop back to local listeners
    /// (`IPV6_MULTICAST_LOOP`, on by default).
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        SockRef::from(self).multicast_loop_v6()
    }

    /// Sets `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        SockRef::from(self).set_multicast_loop_v6(on)
    }
}
