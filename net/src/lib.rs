//! Sockets for the io_uring runtime. (TCP and UDP arrive with the networking issue.)
