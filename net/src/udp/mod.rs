//! UDP: `UdpSocket`, with control messages for GSO/GRO in [`cmsg`].

pub mod cmsg;
mod direct;
mod socket;

pub use socket::{RecvMeta, Truncated, UdpSocket};
