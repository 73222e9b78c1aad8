//! `Op` futures on a bare driver: no `Runtime`, no executor. The test is the event loop: it
//! polls the futures and turns the driver by hand.

use std::{
    cell::{Cell, RefCell},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use io_uring::{opcode, squeue, types};

use super::*;
use crate::{
    current,
    driver::{self, Driver, RingConfig, RingMode, Wait},
};

/// A driver made current on this thread, as a runtime would make its own.
fn bare_driver() -> (Rc<RefCell<Driver>>, current::Restore<Rc<RefCell<Driver>>>) {
    let config = RingConfig {
        entries: 8,
        cq_entries: 32,
        mode: RingMode::Auto,
        register_ring_fd: false,
        cqe32: false,
        direct_descriptors: 0,
        sqpoll: None,
    };
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
    let eventfd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let (driver, _) = Driver::new(&config, eventfd).expect("io_uring must be available");
    let driver = Rc::new(RefCell::new(driver));
    let guard = current::set(&driver::CURRENT, Some(driver.clone()));
    (driver, guard)
}

fn turn(driver: &RefCell<Driver>) {
    driver
        .borrow_mut()
        .enter(Wait::Timeout(Duration::from_millis(10)))
        .expect("enter");
    driver::dispatch(driver, &mut Vec::new());
}

fn poll<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// A read on a pipe that nobody writes to: it ends only when cancelled. Its value records
/// when it is dropped, which must be after the kernel let go of its buffer.
struct PipeRead {
    fd: OwnedFd,
    buf: Box<[u8; 8]>,
    dropped: Rc<Cell<bool>>,
}

impl Drop for PipeRead {
    fn drop(&mut self) {
        self.dropped.set(true);
    }
}

// SAFETY: the SQE names `buf`, a heap allocation owned by `self`, and `fd`, kept open by
// `self`; `complete` reads nothing the kernel wrote.
unsafe impl OpCode for PipeRead {
    type Output = i32;

    fn build(&mut self) -> squeue::Entry {
        opcode::Read::new(types::Fd(self.fd.as_raw_fd()), self.buf.as_mut_ptr(), 8).build()
    }

    fn complete(self, cqe: Completion) -> i32 {
        cqe.result()
    }
}

fn pipe_read() -> (PipeRead, OwnedFd, Rc<Cell<bool>>) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just returned by pipe2 and are owned by nothing else.
    let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let dropped = Rc::new(Cell::new(false));
    let op = PipeRead {
        fd: rx,
        buf: Box::new([0; 8]),
        dropped: dropped.clone(),
    };
    (op, tx, dropped)
}

#[test]
fn an_op_is_submitted_on_first_poll_and_completes_without_a_runtime() {
    let (driver, _current) = bare_driver();
    let mut op = nop();
    assert!(!op.is_submitted());
    assert_eq!(driver.borrow().stats().0.submitted, 0, "submission is lazy");
    assert!(poll(&mut op).is_pending());
    assert!(op.is_submitted());
    turn(&driver);
    assert!(matches!(poll(&mut op), Poll::Ready(Ok(()))));
    let (stats, in_flight, parked) = driver.borrow().stats();
    assert_eq!((stats.submitted, in_flight, parked), (1, 0, 0));
}

#[test]
fn an_op_dropped_before_its_first_poll_never_reaches_the_kernel() {
    let (driver, _current) = bare_driver();
    let (read, _tx, dropped) = pipe_read();
    drop(Op::new(read));
    assert!(dropped.get());
    assert_eq!(driver.borrow().stats().0.submitted, 0);
}

#[test]
fn an_op_dropped_in_flight_keeps_its_value_until_the_final_cqe() {
    let (driver, _current) = bare_driver();
    let (read, _tx, dropped) = pipe_read();
    let mut op = Op::new(read);
    assert!(poll(&mut op).is_pending());
    turn(&driver);
    drop(op);
    assert!(!dropped.get(), "the kernel may still write the buffer");
    assert_eq!(driver.borrow().stats().2, 1, "parked in the driver");
    for _ in 0..100 {
        if dropped.get() {
            break;
        }
        turn(&driver);
    }
    assert!(dropped.get(), "the cancel's final CQE released it");
    let (_, in_flight, parked) = driver.borrow().stats();
    assert_eq!((in_flight, parked), (0, 0));
}

#[test]
fn a_detached_op_runs_to_its_end_without_a_future() {
    detached_runs_to_its_end(|read| Op::new(read).detach());
}

#[test]
fn an_op_started_detached_runs_to_its_end() {
    detached_runs_to_its_end(Detached::start);
}

fn detached_runs_to_its_end(start: fn(PipeRead) -> Detached) {
    let (driver, _current) = bare_driver();
    let (read, tx, dropped) = pipe_read();
    let detached = start(read);
    assert!(detached.is_running());
    assert_eq!(driver.borrow().stats().2, 1, "parked in the driver at once");
    assert!(!dropped.get());
    // Nothing is cancelled: the read ends when data comes.
    turn(&driver);
    assert!(!dropped.get());
    // SAFETY: writes one byte from a live local to the pipe.
    let written = unsafe { libc::write(tx.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    assert_eq!(written, 1);
    for _ in 0..100 {
        if dropped.get() {
            break;
        }
        turn(&driver);
    }
    assert!(dropped.get(), "complete_detached ran at the final CQE");
}
