//! The driver on its own: operations pushed, completed, dropped at every stage, an
//! overflowing CQ, the shutdown drain and cross-ring kicks, all without a `Runtime`.

use std::{
    cell::RefCell,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::{Duration, Instant},
};

use io_uring::{opcode, squeue, types};

use super::*;

/// A ring with no runtime around it, its wake read armed on an eventfd of its own.
fn driver(entries: u32, cq_entries: u32) -> RefCell<Driver> {
    driver_woken_by(entries, cq_entries, eventfd(0))
}

/// A ring with no runtime around it, its wake read armed on `wake`.
fn driver_woken_by(entries: u32, cq_entries: u32, wake: Arc<OwnedFd>) -> RefCell<Driver> {
    let config = RingConfig {
        entries,
        cq_entries,
        mode: RingMode::Auto,
        register_ring_fd: true,
        cqe32: false,
        direct_descriptors: 0,
        sqpoll: None,
    };
    let (driver, info) = Driver::new(&config, wake).expect("io_uring must be available");
    assert_eq!(info.cq_entries, cq_entries);
    RefCell::new(driver)
}

fn eventfd(flags: i32) -> Arc<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | flags) };
    assert!(fd >= 0, "eventfd: {}", io::Error::last_os_error());
    // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
    Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just returned by pipe2 and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_one(fd: RawFd) {
    signal_eventfd(fd);
}

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<CountingWaker>, Waker) {
    let count = Arc::new(CountingWaker::default());
    (count.clone(), Waker::from(count))
}

/// Parked resources that record what the driver did with them.
struct Recorder {
    log: Rc<RefCell<Vec<String>>>,
    /// Kept open until `finish`, as an op keeps the fd its SQE names.
    _fd: Option<OwnedFd>,
}

impl Parked for Recorder {
    fn on_more(&mut self, cqe: Completion) {
        self.log.borrow_mut().push(format!("more {}", cqe.result()));
    }

    fn finish(self: Box<Self>, cqe: Completion) {
        self.log
            .borrow_mut()
            .push(format!("finish {}", cqe.result()));
    }
}

fn recorder(fd: Option<OwnedFd>) -> (Rc<RefCell<Vec<String>>>, Box<dyn Parked>) {
    let log = Rc::new(RefCell::new(Vec::new()));
    (log.clone(), Box::new(Recorder { log, _fd: fd }))
}

fn submit(driver: &RefCell<Driver>, sqe: squeue::Entry) -> u64 {
    driver
        .borrow_mut()
        .submit(sqe, None)
        .expect("driver is open")
}

/// One turn as the runtime makes it: enter (blocking at most `wait`), then route everything.
fn turn(driver: &RefCell<Driver>, wait: Wait) {
    driver.borrow_mut().enter(wait).expect("enter");
    dispatch(driver, &mut Vec::new());
}

fn poll(driver: &RefCell<Driver>, key: u64, waker: &Waker) -> Poll<Completion> {
    driver
        .borrow_mut()
        .poll_cqe(key, &mut Context::from_waker(waker))
}

/// A read on an empty pipe: stays in the kernel until data comes or it is cancelled. The
/// buffer is leaked for the test's duration so it outlives the request whatever happens.
fn pipe_read(fd: &OwnedFd) -> squeue::Entry {
    let buf: &'static mut [u8; 8] = Box::leak(Box::new([0; 8]));
    opcode::Read::new(types::Fd(fd.as_raw_fd()), buf.as_mut_ptr(), 8).build()
}

#[test]
fn a_nop_is_pushed_and_completed_without_a_runtime() {
    let driver = driver(8, 32);
    let (count, waker) = waker();
    let key = submit(&driver, opcode::Nop::new().build());
    assert!(poll(&driver, key, &waker).is_pending());
    turn(&driver, Wait::Forever);
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        1,
        "routing the CQE wakes the owner"
    );
    let Poll::Ready(cqe) = poll(&driver, key, &waker) else {
        panic!("the NOP's CQE was routed");
    };
    assert_eq!(cqe.result(), 0);
    assert!(cqe.sequence() > 0);
    let (stats, in_flight, parked) = driver.borrow().stats();
    assert_eq!((stats.submitted, in_flight, parked), (1, 0, 0));
    assert!(
        driver.borrow().slots.is_empty(),
        "the final CQE removed the slot"
    );
}

#[test]
fn dropped_before_its_cqe_the_op_is_cancelled_and_released_once() {
    let driver = driver(8, 32);
    let (rx, _tx) = pipe();
    let key = submit(&driver, pipe_read(&rx));
    turn(&driver, Wait::No);
    let (log, parked) = recorder(Some(rx));
    assert!(driver.borrow_mut().detach(key, parked).is_none());
    assert_eq!(driver.borrow().stats().2, 1, "parked");
    for _ in 0..100 {
        if !log.borrow().is_empty() {
            break;
        }
        turn(&driver, Wait::Timeout(Duration::from_millis(10)));
    }
    assert_eq!(*log.borrow(), [format!("finish {}", -libc::ECANCELED)]);
    let (_, in_flight, parked) = driver.borrow().stats();
    assert_eq!((in_flight, parked), (0, 0));
}

#[test]
fn dropped_after_its_cqe_the_op_is_released_at_once() {
    let driver = driver(8, 32);
    let key = submit(&driver, opcode::Nop::new().build());
    turn(&driver, Wait::Forever);
    let (log, parked) = recorder(None);
    let released = driver.borrow_mut().detach(key, parked);
    let Some((parked, cqe)) = released else {
        panic!("the final CQE had arrived: the resources come back to be released");
    };
    parked.finish(cqe);
    assert_eq!(*log.borrow(), ["finish 0"]);
    assert!(driver.borrow().slots.is_empty());
}

#[test]
fn a_multishot_hands_out_items_then_parks_and_releases_what_follows() {
    let driver = driver(8, 32);
    let efd = eventfd(libc::EFD_NONBLOCK);
    let (count, waker) = waker();
    let poll_sqe = opcode::PollAdd::new(types::Fd(efd.as_raw_fd()), libc::POLLIN as u32)
        .multi(true)
        .build();
    let key = submit(&driver, poll_sqe);
    assert!(poll(&driver, key, &waker).is_pending());
    write_one(efd.as_raw_fd());
    turn(&driver, Wait::Forever);
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    let Poll::Ready(item) = poll(&driver, key, &waker) else {
        panic!("the first item was routed");
    };
    assert!(item.has_more(), "a multishot item, not the end");
    assert!(
        poll(&driver, key, &waker).is_pending(),
        "nothing else queued"
    );

    // Another item arrives while nobody polls; then the owner lets go: the item goes to the
    // parked resources, and so does the final CQE the cancel produces.
    let mut value = [0u8; 8];
    // SAFETY: reads 8 bytes into a live local buffer.
    unsafe { libc::read(efd.as_raw_fd(), value.as_mut_ptr().cast(), 8) };
    write_one(efd.as_raw_fd());
    turn(&driver, Wait::Forever);
    let (log, parked) = recorder(None);
    assert!(driver.borrow_mut().detach(key, parked).is_none());
    assert_eq!(
        log.borrow().len(),
        1,
        "the queued item was released: {log:?}"
    );
    assert!(log.borrow()[0].starts_with("more "));
    for _ in 0..100 {
        if log.borrow().len() == 2 {
            break;
        }
        turn(&driver, Wait::Timeout(Duration::from_millis(10)));
    }
    assert_eq!(log.borrow()[1], format!("finish {}", -libc::ECANCELED));
    let (_, in_flight, parked) = driver.borrow().stats();
    assert_eq!((in_flight, parked), (0, 0));
}

#[test]
fn an_overflowing_cq_loses_no_completion() {
    let driver = driver(4, 4);
    let keys: Vec<u64> = (0..64)
        .map(|_| submit(&driver, opcode::Nop::new().build()))
        .collect();
    turn(&driver, Wait::No);
    let (_, waker) = waker();
    for key in keys {
        match poll(&driver, key, &waker) {
            Poll::Ready(cqe) => assert_eq!(cqe.result(), 0),
            Poll::Pending => panic!("a NOP's CQE was lost in the overflow"),
        }
    }
    let (stats, in_flight, _) = driver.borrow().stats();
    assert!(
        stats.cq_overflows > 0,
        "64 NOPs through a 4-entry CQ overflow it"
    );
    assert_eq!((in_flight, stats.stray_completions), (0, 0));
}

#[test]
fn the_drain_cancels_every_op_and_refuses_new_ones() {
    let driver = driver(8, 32);
    let (rx, _tx) = pipe();
    let owned = submit(&driver, pipe_read(&rx));
    let parked_key = submit(&driver, pipe_read(&rx));
    turn(&driver, Wait::No);
    let (log, parked) = recorder(None);
    assert!(driver.borrow_mut().detach(parked_key, parked).is_none());

    drain(&driver, Duration::from_secs(5));
    assert!(
        !driver.borrow().has_unfinished(),
        "the kernel gave everything back"
    );
    assert_eq!(*log.borrow(), [format!("finish {}", -libc::ECANCELED)]);
    let (_, waker) = waker();
    match poll(&driver, owned, &waker) {
        Poll::Ready(cqe) => assert_eq!(cqe.result(), -libc::ECANCELED),
        Poll::Pending => panic!("the owned op got its final CQE during the drain"),
    }
    assert!(
        driver
            .borrow_mut()
            .submit(opcode::Nop::new().build(), None)
            .is_none()
    );
    assert_eq!(driver.borrow().stats().0.leaked, 0);
}

/// An op submitted already detached (`submit_detached`, the write-behind path): a
/// skip-success one does not hold the loop awake, its success is synthesized after the enter
/// that consumed it and finishes the parked resources once; after shutdown the resources
/// come back to the caller instead.
#[test]
fn an_op_submitted_detached_finishes_once_and_a_lazy_skip_does_not_hold_the_loop() {
    let driver = driver(8, 32);
    let (log, parked) = recorder(None);
    let nop = opcode::Nop::new()
        .build()
        .flags(squeue::Flags::SKIP_SUCCESS);
    let key = driver
        .borrow_mut()
        .submit_detached(nop, Some(7), parked)
        .unwrap_or_else(|_| panic!("driver is open"));
    assert!(key & u64::from(u32::MAX) < 8, "a slot of the table");
    assert!(
        !driver.borrow().has_skip_pending(),
        "nobody waits for a lazily detached skip-success op"
    );
    assert!(driver.borrow().has_any_skip_pending());
    assert_eq!(driver.borrow().stats().2, 1, "parked at once");
    turn(&driver, Wait::No);
    assert_eq!(*log.borrow(), ["finish 7"], "success synthesized once");
    assert!(!driver.borrow().has_any_skip_pending());
    assert_eq!(driver.borrow().stats().1, 0, "nothing in flight");
    assert_eq!(driver.borrow().stats().2, 0, "nothing parked");
    turn(&driver, Wait::No);
    assert_eq!(log.borrow().len(), 1, "finished once");

    drain(&driver, Duration::from_secs(5));
    let (log, parked) = recorder(None);
    let refused = driver
        .borrow_mut()
        .submit_detached(opcode::Nop::new().build(), None, parked);
    let Err(parked) = refused else {
        panic!("a shut-down driver takes no op");
    };
    parked.finish(Completion::new(-libc::ECANCELED, 0, [0; 2]));
    assert_eq!(*log.borrow(), [format!("finish {}", -libc::ECANCELED)]);
}

/// A CQE for an operation shutdown gave up on (its resources were leaked) is ignored; it
/// used to be counted out of `in_flight` a second time, which underflowed.
#[test]
fn a_cqe_after_the_drain_gave_up_is_ignored() {
    let driver = driver(8, 32);
    let (rx, tx) = pipe();
    let key = submit(&driver, pipe_read(&rx));
    turn(&driver, Wait::No);
    let (log, parked) = recorder(None);
    assert!(driver.borrow_mut().detach(key, parked).is_none());
    driver.borrow_mut().leak_unfinished();
    assert_eq!(driver.borrow().stats().0.leaked, 1);
    // SAFETY: writes one byte from a live local to the pipe.
    let written = unsafe { libc::write(tx.as_raw_fd(), [7u8].as_ptr().cast(), 1) };
    assert_eq!(written, 1);
    for _ in 0..100 {
        if driver.borrow().stats().0.stray_completions > 0 {
            break;
        }
        turn(&driver, Wait::Timeout(Duration::from_millis(10)));
    }
    let (stats, in_flight, _) = driver.borrow().stats();
    assert_eq!((stats.stray_completions, in_flight), (1, 0));
    assert!(
        log.borrow().is_empty(),
        "leaked resources are never released"
    );
}

#[test]
fn a_kick_reaches_another_ring_and_falls_back_to_its_eventfd() {
    let sender = driver(8, 32);
    let target = driver(8, 32);
    let dup = |fd: RawFd| {
        // SAFETY: F_DUPFD_CLOEXEC takes no pointers; `fd` is open.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        assert!(dup >= 0);
        // SAFETY: `dup` was just returned by fcntl and is owned by nothing else.
        Arc::new(unsafe { OwnedFd::from_raw_fd(dup) })
    };
    let fallback = eventfd(libc::EFD_NONBLOCK);
    let kick = KickTarget {
        ring: dup(target.borrow().ring_fd()),
        eventfd: fallback.clone(),
    };
    if !sender.borrow_mut().send_msg_ring(kick) {
        return; // the kernel lacks IORING_OP_MSG_RING
    }
    turn(&sender, Wait::No);
    // The kick's CQE lands in the target ring: a blocking enter returns with it.
    turn(&target, Wait::Timeout(Duration::from_secs(5)));
    assert_eq!(target.borrow().stats().0.completions, 1);

    // A target that is not a ring refuses the kick: the eventfd gets the wake-up instead.
    let (not_a_ring, _tx) = pipe();
    let kick = KickTarget {
        ring: Arc::new(not_a_ring),
        eventfd: fallback.clone(),
    };
    assert!(sender.borrow_mut().send_msg_ring(kick));
    for _ in 0..100 {
        if sender.borrow().stats().0.msg_ring_fallbacks > 0 {
            break;
        }
        turn(&sender, Wait::Timeout(Duration::from_millis(10)));
    }
    let mut value = 0u64;
    // SAFETY: reads 8 bytes into a live local.
    let n = unsafe { libc::read(fallback.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    assert_eq!((n, value), (8, 1));
    assert!(
        sender.borrow().msg_targets.is_empty(),
        "kicks release their fds"
    );
}

/// NAPI busy polling is registered with the window and preference asked for (read back from
/// the kernel's fdinfo of the ring), and unregistering turns it off again.
#[test]
fn napi_registration_round_trips() {
    let driver = driver(8, 16);
    let mut driver = driver.borrow_mut();
    let fdinfo = |fd| std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let napi = Napi::new(Duration::from_micros(75), true);
    if let Err(e) = driver.register_napi(napi) {
        // A kernel before 6.9, or one built without CONFIG_NET_RX_BUSY_POLL.
        assert_eq!(e.raw_os_error(), None, "the error explains itself: {e}");
        assert!(e.to_string().contains("Linux 6.9"), "{e}");
        return;
    }
    assert_eq!(driver.napi(), Some(napi));
    let on = fdinfo(driver.ring_fd());
    if on.contains("NAPI:") {
        assert!(on.contains("NAPI:\tenabled"), "{on}");
        assert!(on.contains("napi_busy_poll_dt:\t75000"), "{on}");
        assert!(on.contains("napi_prefer_busy_poll:\ttrue"), "{on}");
    }
    driver.unregister_napi().unwrap();
    assert_eq!(driver.napi(), None);
    let off = fdinfo(driver.ring_fd());
    if off.contains("NAPI:") {
        assert!(off.contains("NAPI:\tdisabled"), "{off}");
    }
    // The window is capped as the kernel caps it.
    assert_eq!(
        Napi::new(Duration::from_secs(1), false).busy_poll_us,
        10_000
    );
}

/// Writes the eventfd `wake` from another thread after `delay`.
fn kick_after(wake: &Arc<OwnedFd>, delay: Duration) -> std::thread::JoinHandle<()> {
    let wake = wake.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        write_one(wake.as_raw_fd());
    })
}

/// Waits for deadlines on `driver` (woken through `wake`): the first wait, for a deadline
/// 10 s away, is interrupted by the eventfd; the next, 30 ms away, must move the alarm
/// earlier and end at its deadline, not before and not 10 s later; a wait for a deadline
/// later than the armed alarm's ends at the alarm's.
fn deadline_waits_end_on_time(driver: &RefCell<Driver>, wake: &Arc<OwnedFd>) {
    let far = Instant::now() + Duration::from_secs(10);
    let kicker = kick_after(wake, Duration::from_millis(20));
    turn(driver, Wait::Until(far));
    kicker.join().unwrap();
    let start = Instant::now();
    let near = start + Duration::from_millis(30);
    // Spurious returns (the eventfd's completion, the old alarm) are allowed: the loop waits
    // again, as the runtime's does.
    while Instant::now() < near {
        turn(driver, Wait::Until(near));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the wait for a deadline 30 ms away took {:?}",
            start.elapsed()
        );
    }
    let late = start.elapsed();
    assert!(late < Duration::from_secs(2), "woke after {late:?}");
    // An alarm armed for an earlier deadline (its wait was cut short by the eventfd) ends a
    // wait for a later one at its own, without being moved: the caller's timers then wake
    // what is due, and a wait longer than that would oversleep them.
    let start = Instant::now();
    let soon = start + Duration::from_millis(40);
    let kicker = kick_after(wake, Duration::from_millis(10));
    turn(driver, Wait::Until(soon));
    kicker.join().unwrap();
    while Instant::now() < soon {
        turn(driver, Wait::Until(start + Duration::from_secs(10)));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "a wait for 10 s past an alarm armed 40 ms away took {:?}",
            start.elapsed()
        );
    }
    // A deadline that passed: the wait does not block.
    let start = Instant::now();
    turn(driver, Wait::Until(start - Duration::from_millis(1)));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_wait_for_a_deadline_ends_at_it_on_the_ring() {
    let wake = eventfd(0);
    let driver = driver_woken_by(8, 16, wake.clone());
    deadline_waits_end_on_time(&driver, &wake);
    // The alarm moved to 30 ms and fired; its CQE cleared it, and the one for 10 s was
    // the same request (moved, not a second one).
    assert!(driver.borrow().alarm.armed_deadline().is_none());
}

#[test]
fn a_wait_for_a_deadline_ends_at_it_on_epoll() {
    let wake = eventfd(libc::EFD_NONBLOCK);
    let driver = RefCell::new(Driver::new_epoll(wake.clone()).expect("epoll"));
    deadline_waits_end_on_time(&driver, &wake);
}
