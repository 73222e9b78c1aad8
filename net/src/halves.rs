//! The shape both stream types split into (`tcp/split.rs`, `unix/split.rs`): the four half
//! types, `split`/`into_split`, `reunite` and its error, and the compat adapters' access to
//! the socket. Written once here as [`halves!`]; each split module adds its stream's own
//! methods to the halves.
//!
//! # Invariants
//!
//! - Every half holds its own handle on the stream's socket (no fd is duplicated), so its
//!   methods are the stream's own. Reads take `&mut self` on the read half and writes
//!   `&mut self` on the write half: one read and one write can be in flight at once, never
//!   two reads.
//! - An owned write half shuts the write direction down when dropped, unless `reunite`
//!   took it back; borrowed halves do nothing to the connection when dropped.

/// Defines, in the calling module, the halves of `$stream` (which has a `socket: Socket`
/// field and `from_socket`) described in the module docs.
macro_rules! halves {
    ($stream:ident) => {
        #[doc = concat!("The read half of a [`", stringify!($stream), "`], from [`",
            stringify!($stream), "::into_split`].")]
        #[derive(Debug)]
        pub struct OwnedReadHalf {
            stream: $stream,
        }

        #[doc = concat!("The write half of a [`", stringify!($stream), "`], from [`",
            stringify!($stream), "::into_split`]. Dropping it shuts down the write direction \
            (the peer reads EOF), unless it is reunited first.")]
        #[derive(Debug)]
        pub struct OwnedWriteHalf {
            stream: $stream,
            shutdown_on_drop: bool,
        }

        #[doc = concat!("The read half of a borrowed [`", stringify!($stream), "`], from [`",
            stringify!($stream), "::split`].")]
        #[derive(Debug)]
        pub struct ReadHalf<'a> {
            stream: $stream,
            _borrow: ::std::marker::PhantomData<&'a mut $stream>,
        }

        #[doc = concat!("The write half of a borrowed [`", stringify!($stream), "`], from [`",
            stringify!($stream), "::split`]. Dropping it does nothing to the connection.")]
        #[derive(Debug)]
        pub struct WriteHalf<'a> {
            stream: $stream,
            _borrow: ::std::marker::PhantomData<&'a mut $stream>,
        }

        /// Another handle on `stream`'s socket (no fd is duplicated).
        fn handle(stream: &$stream) -> $stream {
            $stream::from_socket(stream.socket.clone())
        }

        pub(super) fn into_split(stream: $stream) -> (OwnedReadHalf, OwnedWriteHalf) {
            let writer = handle(&stream);
            (
                OwnedReadHalf { stream },
                OwnedWriteHalf {
                    stream: writer,
                    shutdown_on_drop: true,
                },
            )
        }

        pub(super) fn split(stream: &mut $stream) -> (ReadHalf<'_>, WriteHalf<'_>) {
            (
                ReadHalf {
                    stream: handle(stream),
                    _borrow: ::std::marker::PhantomData,
                },
                WriteHalf {
                    stream: handle(stream),
                    _borrow: ::std::marker::PhantomData,
                },
            )
        }

        impl OwnedReadHalf {
            /// Joins the halves back into the stream.
            ///
            /// # Errors
            ///
            /// Fails, handing both halves back, if they come from different streams.
            pub fn reunite(self, write: OwnedWriteHalf) -> Result<$stream, ReuniteError> {
                if self.stream.socket.same(&write.stream.socket) {
                    let mut write = write;
                    write.shutdown_on_drop = false;
                    Ok(self.stream)
                } else {
                    Err(ReuniteError(self, write))
                }
            }
        }

        impl Drop for OwnedWriteHalf {
            fn drop(&mut self) {
                if self.shutdown_on_drop {
                    // The socket may already be shut down or reset; nothing useful to
                    // report then.
                    let _ = self.stream.shutdown(::std::net::Shutdown::Write);
                }
            }
        }

        /// The halves given to [`OwnedReadHalf::reunite`] came from different streams.
        pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

        impl ::std::fmt::Debug for ReuniteError {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str("ReuniteError(..)")
            }
        }

        impl ::std::fmt::Display for ReuniteError {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str("tried to reunite halves that are not from the same stream")
            }
        }

        impl ::std::error::Error for ReuniteError {}

        #[cfg(any(feature = "tokio-io", feature = "futures-io"))]
        mod compat {
            use super::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, WriteHalf};
            use crate::{
                compat::{HasSocket, compat_methods},
                socket::Socket,
            };

            impl OwnedReadHalf {
                compat_methods!(read);
            }

            impl ReadHalf<'_> {
                compat_methods!(read);
            }

            impl OwnedWriteHalf {
                compat_methods!(write);
            }

            impl WriteHalf<'_> {
                compat_methods!(write);
            }

            impl HasSocket for OwnedReadHalf {
                fn socket(&self) -> &Socket {
                    &self.stream.socket
                }

                fn release_reads(&mut self) {
                    HasSocket::release_reads(&mut self.stream);
                }
            }

            impl HasSocket for ReadHalf<'_> {
                fn socket(&self) -> &Socket {
                    &self.stream.socket
                }

                fn release_reads(&mut self) {
                    HasSocket::release_reads(&mut self.stream);
                }
            }

            impl HasSocket for OwnedWriteHalf {
                fn socket(&self) -> &Socket {
                    &self.stream.socket
                }
            }

            impl HasSocket for WriteHalf<'_> {
                fn socket(&self) -> &Socket {
                    &self.stream.socket
                }
            }
        }
    };
}

pub(crate) use halves;
