//! Control messages for UDP segmentation offload: build a `UDP_SEGMENT` message for
//! [`UdpSocket::send_msg`](super::UdpSocket::send_msg), read the `UDP_GRO` segment size from
//! [`UdpSocket::recv_msg`](super::UdpSocket::recv_msg), and walk any control buffer.
//!
//! With GSO, one send of `n * size` bytes leaves as `n` datagrams of `size` bytes. With GRO
//! enabled ([`UdpSocket::set_gro`](super::UdpSocket::set_gro)), the kernel may hand several
//! same-size datagrams from one sender to one receive, reporting the segment size;
//! [`segments`] splits such a payload back into datagrams.

use std::mem;

/// `SOL_UDP`.
pub const SOL_UDP: i32 = 17;
/// `UDP_SEGMENT` (Linux 4.18): the GSO segment size, a `u16`.
pub const UDP_SEGMENT: i32 = 103;
/// `UDP_GRO` (Linux 5.0): socket option, and the control message carrying the segment size
/// (an `int`).
pub const UDP_GRO: i32 = 104;

/// One control message: `(level, type, data)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMessage<'a> {
    /// `cmsg_level`, e.g. [`SOL_UDP`].
    pub level: i32,
    /// `cmsg_type`, e.g. [`UDP_GRO`].
    pub ty: i32,
    /// The payload.
    pub data: &'a [u8],
}

/// Iterates the control messages in a buffer filled by `recvmsg`. Malformed trailing bytes end
/// the iteration; nothing is read out of bounds.
pub fn parse(control: &[u8]) -> impl Iterator<Item = ControlMessage<'_>> {
    let header = mem::size_of::<libc::cmsghdr>();
    let mut offset = 0;
    std::iter::from_fn(move || {
        let rest = control.get(offset..)?;
        if rest.len() < header {
            return None;
        }
        // SAFETY: `rest` has at least `size_of::<cmsghdr>()` bytes; `read_unaligned` copes with
        // any alignment of the byte buffer.
        let hdr: libc::cmsghdr = unsafe { rest.as_ptr().cast::<libc::cmsghdr>().read_unaligned() };
        let len = hdr.cmsg_len;
        if len < header || len > rest.len() {
            return None;
        }
        let data = &rest[header..len];
        offset += align(len);
        Some(ControlMessage {
            level: hdr.cmsg_level,
            ty: hdr.cmsg_type,
            data,
        })
    })
}

/// Appends one control message to `control`, with the kernel's alignment.
pub fn push(control: &mut Vec<u8>, level: i32, ty: i32, data: &[u8]) {
    let header = mem::size_of::<libc::cmsghdr>();
    // SAFETY: `cmsghdr` is plain old data; zero is a valid value for every field.
    let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
    hdr.cmsg_len = header + data.len();
    hdr.cmsg_level = level;
    hdr.cmsg_type = ty;
    let start = control.len();
    control.resize(start + align(header + data.len()), 0);
    // SAFETY: `control` has `header` bytes at `start` (just resized); `write_unaligned` copes
    // with the byte buffer's alignment.
    unsafe {
        control[start..]
            .as_mut_ptr()
            .cast::<libc::cmsghdr>()
            .write_unaligned(hdr)
    };
    control[start + header..start + header + data.len()].copy_from_slice(data);
}

/// A control buffer asking the kernel to split the send into datagrams of `segment_size`
/// bytes (`UDP_SEGMENT`).
pub fn udp_segment(segment_size: u16) -> Vec<u8> {
    let mut control = Vec::new();
    push(
        &mut control,
        SOL_UDP,
        UDP_SEGMENT,
        &segment_size.to_ne_bytes(),
    );
    control
}

/// The GRO segment size reported in a received control buffer, if any.
pub fn gro_segment_size(control: &[u8]) -> Option<usize> {
    parse(control)
        .find(|m| m.level == SOL_UDP && m.ty == UDP_GRO)
        .and_then(|m| {
            let bytes: [u8; 4] = m.data.get(..4)?.try_into().ok()?;
            usize::try_from(i32::from_ne_bytes(bytes)).ok()
        })
        .filter(|&size| size > 0)
}

/// Splits a (possibly GRO-coalesced) payload into its datagrams of `segment_size` bytes (the
/// last may be shorter). A `segment_size` of 0 yields the payload whole, and an empty payload
/// is one empty datagram (UDP allows them).
pub fn segments(payload: &[u8], segment_size: usize) -> impl Iterator<Item = &[u8]> {
    let size = if segment_size == 0 {
        payload.len()
    } else {
        segment_size
    };
    // `chunks` yields nothing for an empty slice; the empty datagram still counts.
    let empty = payload.is_empty().then_some(payload);
    payload.chunks(size.max(1)).chain(empty)
}

/// Space a receive needs for one control message with `data_len` bytes of payload.
pub fn space(data_len: usize) -> usize {
    align(mem::size_of::<libc::cmsghdr>() + data_len)
}

fn align(len: usize) -> usize {
    let a = mem::size_of::<usize>();
    (len + a - 1) & !(a - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_messages_parse_back() {
        let mut control = udp_segment(1200);
        push(&mut control, SOL_UDP, UDP_GRO, &1400i32.to_ne_bytes());
        let msgs: Vec<_> = parse(&control).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].ty, UDP_SEGMENT);
        assert_eq!(msgs[0].data, 1200u16.to_ne_bytes());
        assert_eq!(gro_segment_size(&control), Some(1400));
    }

    #[test]
    fn malformed_buffers_end_iteration_safely() {
        assert_eq!(parse(&[]).count(), 0);
        assert_eq!(parse(&[0xff; 7]).count(), 0);
        let mut control = udp_segment(9);
        control[0] = 0xff; // cmsg_len far beyond the buffer
        assert_eq!(parse(&control).count(), 0);
        let mut short = udp_segment(9);
        short.truncate(short.len() - 1);
        assert!(parse(&short).count() <= 1);
        assert_eq!(gro_segment_size(&[1, 2, 3]), None);
    }

    #[test]
    fn segments_split_payloads() {
        let data = [0u8; 10];
        let parts: Vec<_> = segments(&data, 4).map(<[u8]>::len).collect();
        assert_eq!(parts, [4, 4, 2]);
        assert_eq!(segments(&data, 0).count(), 1);
        let empty: Vec<&[u8]> = segments(&[], 0).collect();
        assert_eq!(empty, [&[] as &[u8]], "an empty datagram is one datagram");
        assert_eq!(segments(&[], 1000).count(), 1);
    }
}

/// Property tests: control buffers come from the kernel and, through it, from peers.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(2000)
        }
    }

    /// Whether `inner` lies inside `outer` (same memory, not just equal bytes).
    fn within(inner: &[u8], outer: &[u8]) -> bool {
        let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
        i >= o && i + inner.len() <= o + outer.len()
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_control_bytes_parse_within_bounds(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            skew in 0usize..8,
        ) {
            // Start at an odd offset too: the parser must not assume alignment.
            let control = &bytes[skew.min(bytes.len())..];
            let header = mem::size_of::<libc::cmsghdr>();
            let mut count = 0;
            for msg in parse(control) {
                prop_assert!(within(msg.data, control));
                count += 1;
            }
            prop_assert!(count <= control.len() / header);
            if let Some(size) = gro_segment_size(control) {
                prop_assert!(size > 0 && size <= i32::MAX as usize);
            }
        }

        #[test]
        fn built_control_messages_round_trip(
            msgs in prop::collection::vec(
                (any::<i32>(), any::<i32>(), prop::collection::vec(any::<u8>(), 0..48)),
                0..6,
            ),
        ) {
            let mut control = Vec::new();
            for (level, ty, data) in &msgs {
                push(&mut control, *level, *ty, data);
            }
            let expected: Vec<usize> = msgs.iter().map(|(_, _, d)| space(d.len())).collect();
            prop_assert_eq!(control.len(), expected.iter().sum::<usize>());
            let parsed: Vec<(i32, i32, Vec<u8>)> =
                parse(&control).map(|m| (m.level, m.ty, m.data.to_vec())).collect();
            prop_assert_eq!(parsed, msgs);
        }

        #[test]
        fn gro_segment_sizes_round_trip(size in any::<i32>(), other in any::<i32>()) {
            let mut control = Vec::new();
            push(&mut control, SOL_UDP, UDP_SEGMENT, &other.to_ne_bytes());
            push(&mut control, SOL_UDP, UDP_GRO, &size.to_ne_bytes());
            let expected = usize::try_from(size).ok().filter(|&s| s > 0);
            prop_assert_eq!(gro_segment_size(&control), expected);
            // A message cut inside its data is not read.
            control.truncate(space(4) + mem::size_of::<libc::cmsghdr>() + 3);
            prop_assert_eq!(gro_segment_size(&control), None);
        }

        #[test]
        fn segments_cover_the_payload_exactly(
            payload in prop::collection::vec(any::<u8>(), 0..500),
            size in 0usize..80,
        ) {
            let parts: Vec<&[u8]> = segments(&payload, size).collect();
            prop_assert_eq!(parts.concat(), payload.clone());
            prop_assert!(!parts.is_empty(), "even an empty payload is one datagram");
            let step = if size == 0 { payload.len().max(1) } else { size };
            prop_assert_eq!(parts.len(), payload.len().div_ceil(step).max(1));
            for (i, part) in parts.iter().enumerate() {
                prop_assert!(part.len() <= step);
                if i + 1 < parts.len() {
                    prop_assert_eq!(part.len(), step);
                }
            }
        }
    }
}
