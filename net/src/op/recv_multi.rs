//! Multishot receives into a provided-buffer ring: `RecvMulti` (streams) and `RecvMsgMulti`
//! (datagrams, with the source address and control messages in front of the payload).

use std::{
    collections::VecDeque,
    io, mem,
    os::fd::{AsRawFd, RawFd},
};

use io_uring::{opcode, squeue};
use runtime::{
    buf::{BufRing, RxBuf},
    op::{Completion, Interest, MultishotOp},
};

use super::{nonblocking, stream::MsgHdr};
use crate::{
    Datagram,
    addr::RawAddr,
    socket::{Rescued, Socket, on_target},
};

/// One completion of a multishot stream receive.
#[derive(Debug)]
pub(crate) enum RecvEvent {
    /// Bytes in one buffer (no allocation per message).
    One(RxBuf),
    /// Bytes in several consecutive buffers (a bundle).
    Many(VecDeque<RxBuf>),
    /// The peer closed its side.
    Eof,
}

/// `IORING_OP_RECV` with `IORING_RECV_MULTISHOT` and buffer selection from a ring.
#[derive(Debug)]
pub(crate) struct RecvMulti {
    socket: Socket,
    ring: BufRing,
    bundle: bool,
    /// On the epoll backend: the last receive filled less than it offered.
    emptied: bool,
}

impl RecvMulti {
    pub(crate) fn new(socket: Socket, ring: BufRing, bundle: bool) -> RecvMulti {
        RecvMulti {
            socket,
            ring,
            bundle,
            emptied: false,
        }
    }

    pub(super) fn socket(&self) -> &Socket {
        &self.socket
    }

    pub(super) fn event(&self, cqe: &Completion) -> io::Result<RecvEvent> {
        // A bundle's data that fits one buffer used one entry, which `take` claims as a
        // bundle of one would (without a queue to allocate per small message).
        let one_buffer = i32::try_from(self.ring.buf_len()).unwrap_or(i32::MAX);
        let data = if self.bundle && cqe.result() > one_buffer {
            let mut bufs = VecDeque::new();
            self.ring.take_bundle(cqe, &mut bufs)?;
            match bufs.len() {
                0 => None,
                1 => bufs.pop_front().map(RecvEvent::One),
                _ => Some(RecvEvent::Many(bufs)),
            }
        } else {
            self.ring.take(cqe)?.map(RecvEvent::One)
        };
        match (cqe.result(), data) {
            (0, _) => Ok(RecvEvent::Eof),
            (r, _) if r < 0 => Err(io::Error::from_raw_os_error(-r)),
            (_, Some(data)) => Ok(data),
            // `take`/`take_bundle` reject a positive result without a buffer as malformed.
            (r, None) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a receive of {r} bytes named no buffer"),
            )),
        }
    }
}

// SAFETY: the SQE names the fd (kept open by `socket`) and a buffer group; the kernel writes
// only into buffers the ring handed it, which the ring (held by `self` until the final CQE)
// keeps mapped.
unsafe impl MultishotOp for RecvMulti {
    type Item = io::Result<RecvEvent>;

    fn build(&mut self) -> squeue::Entry {
        let group = self.ring.group_id();
        on_target!(self.socket.uring_fd(), fd => if self.bundle {
            opcode::RecvMultiBundle::new(fd, group).build()
        } else {
            opcode::RecvMulti::new(fd, group).build()
        })
    }

    fn next(&mut self, cqe: Completion) -> Option<Self::Item> {
        Some(self.event(&cqe))
    }

    fn next_detached(&mut self, cqe: Completion) {
        rescue_stream_data(&self.socket, &cqe, self.event(&cqe));
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        let fd = self.socket.as_raw_fd();
        nonblocking::recv_into_pool(fd, &self.ring, self.bundle, &mut self.emptied)
    }

    fn emptied(&self, _cqe: &Completion) -> bool {
        self.emptied
    }
}

/// Keeps data that arrived for a dropped stream for the socket's next receive (the buffers go
/// back to their pool when `event` is dropped).
pub(super) fn rescue_stream_data(socket: &Socket, cqe: &Completion, event: io::Result<RecvEvent>) {
    let data = match event {
        Ok(RecvEvent::One(buf)) => buf.to_vec(),
        Ok(RecvEvent::Many(bufs)) => bufs.iter().flat_map(|b| b.iter().copied()).collect(),
        _ => return,
    };
    socket.rescue(Rescued::stream(cqe.sequence(), data));
}

/// Room for the source address in each datagram buffer (a `sockaddr_in6` fits).
pub(crate) const NAME_SPACE: usize = 32;
/// Room for control messages (a `UDP_GRO` message needs 24 bytes).
pub(crate) const CONTROL_SPACE: usize = 64;
/// `struct io_uring_recvmsg_out`.
const OUT_HEADER: usize = 16;
/// Bytes in front of the payload in every datagram buffer.
pub(crate) const DATAGRAM_OVERHEAD: usize = OUT_HEADER + NAME_SPACE + CONTROL_SPACE;

/// `IORING_OP_RECVMSG` with `IORING_RECV_MULTISHOT`: one CQE per datagram, each buffer laid
/// out as `io_uring_recvmsg_out`, name, control, payload.
#[derive(Debug)]
pub(crate) struct RecvMsgMulti {
    socket: Socket,
    ring: BufRing,
    /// Boxed: the kernel reads the requested name and control sizes from it.
    hdr: Box<MsgHdr>,
}

impl RecvMsgMulti {
    pub(crate) fn new(socket: Socket, ring: BufRing) -> RecvMsgMulti {
        let mut hdr = Box::new(MsgHdr::zeroed());
        hdr.0.msg_namelen = NAME_SPACE as libc::socklen_t;
        hdr.0.msg_controllen = CONTROL_SPACE;
        RecvMsgMulti { socket, ring, hdr }
    }

    fn datagram(&self, cqe: &Completion) -> io::Result<Datagram> {
        let buf = self.ring.take(cqe)?;
        if cqe.result() < 0 {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }
        let Some(buf) = buf else {
            return Err(malformed("datagram completion without a buffer"));
        };
        parse_datagram(buf)
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed recvmsg completion: {what}"),
    )
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Parses `io_uring_recvmsg_out` + name + control in front of the payload; the datagram's
/// payload is `buf` narrowed to what follows them.
fn parse_datagram(mut buf: RxBuf) -> io::Result<Datagram> {
    if buf.len() < DATAGRAM_OVERHEAD {
        return Err(malformed(&format!(
            "{} bytes, less than the {DATAGRAM_OVERHEAD}-byte header",
            buf.len()
        )));
    }
    let namelen = u32_at(&buf, 0) as usize;
    let controllen = u32_at(&buf, 4) as usize;
    let payloadlen = u32_at(&buf, 8) as usize;
    let flags = u32_at(&buf, 12) as i32;
    let copied = buf.len() - DATAGRAM_OVERHEAD;
    let peer = if namelen > 0 {
        let mut raw = RawAddr::empty();
        let n = namelen
            .min(NAME_SPACE)
            .min(mem::size_of::<libc::sockaddr_storage>());
        let name = &buf[OUT_HEADER..OUT_HEADER + n];
        // SAFETY: `name` holds `n` bytes and the storage has room for at least `n` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(name.as_ptr(), raw.as_mut_ptr().cast::<u8>(), n);
        }
        raw.len = n as libc::socklen_t;
        raw.socket_addr().ok()
    } else {
        None
    };
    let control_start = OUT_HEADER + NAME_SPACE;
    let control = buf[control_start..control_start + controllen.min(CONTROL_SPACE)].to_vec();
    let truncated = flags & libc::MSG_TRUNC != 0 || payloadlen > copied;
    buf.advance(DATAGRAM_OVERHEAD);
    Ok(Datagram {
        payload: buf,
        peer,
        len: payloadlen.max(copied),
        truncated,
        control,
    })
}

// SAFETY: the SQE points at the boxed `msghdr` (owned by `self`, read by the kernel) and names
// the fd (kept open by `socket`) and a buffer group whose buffers the ring, held by `self`
// until the final CQE, keeps mapped.
unsafe impl MultishotOp for RecvMsgMulti {
    type Item = io::Result<Datagram>;

    fn build(&mut self) -> squeue::Entry {
        on_target!(self.socket.uring_fd(), fd => opcode::RecvMsgMulti::new(
            fd,
            &self.hdr.0 as *const libc::msghdr,
            self.ring.group_id(),
        )
        .flags(libc::MSG_TRUNC as u32)
        .build())
    }

    fn next(&mut self, cqe: Completion) -> Option<Self::Item> {
        Some(self.datagram(&cqe))
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        let fd = self.socket.as_raw_fd();
        nonblocking::recvmsg_into_pool(fd, &self.ring, NAME_SPACE, CONTROL_SPACE)
    }

    fn next_detached(&mut self, cqe: Completion) {
        if let Ok(d) = self.datagram(&cqe) {
            self.socket.rescue(Rescued {
                sequence: cqe.sequence(),
                data: d.payload.to_vec(),
                peer: d.peer,
                full_len: d.len,
                raw_peer: None,
            });
        }
    }
}

/// `IORING_OP_RECV_ZC` (always multishot): data lands in the runtime's zero-copy receive area.
#[derive(Debug)]
pub(crate) struct RecvZc {
    socket: Socket,
    zcrx: runtime::zcrx::Zcrx,
}

impl RecvZc {
    pub(crate) fn new(socket: Socket, zcrx: runtime::zcrx::Zcrx) -> RecvZc {
        RecvZc { socket, zcrx }
    }

    fn event(&self, cqe: &Completion) -> io::Result<RecvEvent> {
        match cqe.result() {
            r if r > 0 => {
                let buf = self.zcrx.take(cqe)?;
                Ok(RecvEvent::One(buf))
            }
            0 => Ok(RecvEvent::Eof),
            r => Err(io::Error::from_raw_os_error(-r)),
        }
    }
}

// SAFETY: the SQE names the fd (kept open by `socket`) and the ifq; the kernel writes only into
// the ifq's area, which the runtime keeps mapped until its ring is closed.
unsafe impl MultishotOp for RecvZc {
    type Item = io::Result<RecvEvent>;

    fn build(&mut self) -> squeue::Entry {
        on_target!(self.socket.uring_fd(), fd => opcode::RecvZc::new(fd, 0)
            .ifq(self.zcrx.id())
            .build())
    }

    fn next(&mut self, cqe: Completion) -> Option<Self::Item> {
        Some(self.event(&cqe))
    }

    fn next_detached(&mut self, cqe: Completion) {
        rescue_stream_data(&self.socket, &cqe, self.event(&cqe));
    }
}

/// Property tests of `parse_datagram`: the header, name and control lengths in a multishot
/// `recvmsg` buffer are written by the kernel from what the peer sent.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::udp::cmsg;

    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(2000)
        }
    }

    /// A buffer as the kernel lays it out: `io_uring_recvmsg_out`, the name and control
    /// regions (each of the size the request asked for), then the payload.
    fn layout(header: [u32; 4], name: &[u8], control: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(DATAGRAM_OVERHEAD + payload.len());
        for field in header {
            buf.extend_from_slice(&field.to_ne_bytes());
        }
        let mut region = |bytes: &[u8], size: usize| {
            let n = bytes.len().min(size);
            buf.extend_from_slice(&bytes[..n]);
            buf.resize(buf.len() + size - n, 0);
        };
        region(name, NAME_SPACE);
        region(control, CONTROL_SPACE);
        buf.extend_from_slice(payload);
        buf
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_buffers_parse_or_fail_cleanly(
            bytes in prop::collection::vec(any::<u8>(), 0..(DATAGRAM_OVERHEAD + 64)),
            header in prop::option::of(any::<[u32; 4]>()),
        ) {
            let mut bytes = bytes;
            // Half the time, plausible-looking or extreme header fields over random bytes.
            if let Some(header) = header
                && bytes.len() >= OUT_HEADER
            {
                for (i, field) in header.iter().enumerate() {
                    bytes[i * 4..i * 4 + 4].copy_from_slice(&field.to_ne_bytes());
                }
            }
            match parse_datagram(RxBuf::from_vec(bytes.clone())) {
                Ok(d) => {
                    prop_assert!(bytes.len() >= DATAGRAM_OVERHEAD);
                    prop_assert_eq!(&d.payload[..], &bytes[DATAGRAM_OVERHEAD..]);
                    prop_assert!(d.len >= d.payload.len());
                    let controllen = u32_at(&bytes, 4) as usize;
                    let start = OUT_HEADER + NAME_SPACE;
                    prop_assert_eq!(
                        &d.control[..],
                        &bytes[start..start + controllen.min(CONTROL_SPACE)]
                    );
                    if u32_at(&bytes, 0) == 0 {
                        prop_assert!(d.peer.is_none());
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                    prop_assert!(bytes.len() < DATAGRAM_OVERHEAD);
                }
            }
        }

        #[test]
        fn well_formed_datagrams_round_trip(
            peer in crate::addr::proptests::socket_addr(),
            payload in prop::collection::vec(any::<u8>(), 0..200),
            cut in 0usize..1000,
            gro in prop::option::of(1i32..=65535),
        ) {
            let raw = RawAddr::from_socket_addr(&peer);
            // SAFETY: the storage is `raw.len` (<= its size) initialized bytes.
            let name = unsafe {
                std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len as usize)
            };
            let control = gro.map_or_else(Vec::new, |size| {
                let mut c = Vec::new();
                cmsg::push(&mut c, cmsg::SOL_UDP, cmsg::UDP_GRO, &size.to_ne_bytes());
                c
            });
            // The datagram was `payload.len() + cut` bytes long; with `MSG_TRUNC` requested
            // the kernel reports that length and flags the truncation.
            let wire = payload.len() + cut;
            let flags = if cut > 0 { libc::MSG_TRUNC as u32 } else { 0 };
            let header = [raw.len, control.len() as u32, wire as u32, flags];
            let buf = layout(header, name, &control, &payload);
            let d = parse_datagram(RxBuf::from_vec(buf)).unwrap();
            prop_assert_eq!(d.peer, Some(peer));
            prop_assert_eq!(&d.payload[..], &payload[..]);
            prop_assert_eq!(d.len, wire);
            prop_assert_eq!(d.truncated, cut > 0);
            prop_assert_eq!(&d.control, &control);
            prop_assert_eq!(cmsg::gro_segment_size(&d.control), gro.map(|g| g as usize));
        }
    }
}
