//! `TcpStream`'s receive streams: received bytes as [`RxBuf`](runtime::buf::RxBuf)s from a
//! provided-buffer ring or the zero-copy receive area, instead of reads into the caller's
//! buffers. Each first ends the stream's read-ahead (`read_ahead.rs`), whose bytes it then
//! yields first.

use std::io;

use runtime::{buf::BufRing, zcrx::Zcrx};

use super::TcpStream;
use crate::{RecvStream, ZcrxStream, ZeroCopyRecv};

impl TcpStream {
    /// Received bytes as a stream of [`RxBuf`](runtime::buf::RxBuf)s taken from `ring` only
    /// when data arrives, over one multishot receive (Linux 6.0). Many streams can share one
    /// ring; an idle connection then holds no buffer. See [`RecvStream`].
    ///
    /// Where the kernel offers it (`IORING_RECVSEND_BUNDLE`, Linux 6.10) and the ring is not
    /// incremental, one completion covers every consecutive buffer the data that arrived
    /// needs: a bulk stream costs one completion per bundle instead of one per buffer (on the
    /// echo benchmark's stream row, 16 × 64 KiB chunks over 4 KiB buffers, about 0.75× the
    /// server CPU per chunk of one buffer per completion; `docs/benchmarks.md`). The stream
    /// still yields one buffer at a time. Bundles over incremental rings are reported broken
    /// (axboe/liburing#1320), so those get one buffer per completion, as do kernels without
    /// bundles. [`recv_stream_unbundled`](TcpStream::recv_stream_unbundled) always does.
    ///
    /// The stream borrows `self` mutably, so no [`read`](TcpStream::read) can take from the
    /// same byte stream while it lives; to write meanwhile, [`split`](TcpStream::split) first.
    pub fn recv_stream(&mut self, ring: &BufRing) -> RecvStream<'_> {
        self.release_reads();
        RecvStream::bundled(self.socket.clone(), ring)
    }

    /// Like [`recv_stream`](TcpStream::recv_stream), with one buffer per completion even where
    /// bundles are offered: a connection then never takes several buffers of a shared ring at
    /// once, at the cost of a completion per buffer.
    pub fn recv_stream_unbundled(&mut self, ring: &BufRing) -> RecvStream<'_> {
        self.release_reads();
        RecvStream::new(self.socket.clone(), ring, false)
    }

    /// Received bytes in the runtime's zero-copy receive area (the NIC writes them there; see
    /// `runtime::zcrx`), over one multishot `IORING_OP_RECV_ZC`.
    ///
    /// # Errors
    ///
    /// `Unsupported` when this thread's runtime has no zero-copy receive queue; the message
    /// carries the reason recorded at start-up.
    pub fn recv_zc_stream(&mut self) -> io::Result<ZcrxStream<'_>> {
        match Zcrx::current() {
            Some(zcrx) => Ok({
                self.release_reads();
                ZcrxStream::new(self.socket.clone(), zcrx)
            }),
            None => {
                let caps = runtime::capabilities();
                let why = caps
                    .notes()
                    .iter()
                    .find(|n| n.contains("zero-copy receive"))
                    .cloned()
                    .unwrap_or_else(|| "no ZcrxConfig was given to the Builder".into());
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("this runtime has no zero-copy receive queue: {why}"),
                ))
            }
        }
    }

    /// Received bytes through the best zero-copy path available: the zero-copy receive area
    /// when this thread's runtime registered one, otherwise multishot receives from `ring`.
    /// Either way the items are [`RxBuf`](runtime::buf::RxBuf)s.
    pub fn recv_zero_copy(&mut self, ring: &BufRing) -> ZeroCopyRecv<'_> {
        match Zcrx::current() {
            Some(zcrx) => {
                self.release_reads();
                ZeroCopyRecv::Zcrx(ZcrxStream::new(self.socket.clone(), zcrx))
            }
            None => ZeroCopyRecv::Ring(self.recv_stream(ring)),
        }
    }
}
