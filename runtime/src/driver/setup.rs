//! Ring setup: the options the builder passes down, the setup flags tried newest kernel
//! first, and what the kernel granted (sizes, features, the opcode probe).
//!
//! # Invariants
//!
//! - Setup flags are tried in the order of `Attempt`, and an attempt is abandoned only for
//!   `EINVAL` (an older kernel's answer to flags it does not know); every fallback leaves a
//!   note in `RingInfo::notes`, so the runtime can say why a faster mode is off. The one
//!   exception is `Attempt::SqPoll`: any refusal of SQPOLL (`EPERM` from a policy or a kernel
//!   before 5.11, `EINVAL` for a CPU the process may not use, `ENOMEM`) falls back to the
//!   modes without it, since the ring works the same without the kernel thread.
//! - A ring without `IORING_FEAT_EXT_ARG` or `IORING_FEAT_NODROP` is refused: timed waits and
//!   no lost completions are what the loop relies on.
//! - `RingInfo` is computed once, here, and never changes; the runtime turns it into its public
//!   `Capabilities`, so nothing above the driver needs the io-uring crate's types.

use std::io;

use io_uring::{IoUring, Parameters, Probe, cqueue, squeue};

use super::{
    ring::{Ring, Uring},
    setup_error,
};

/// Which io_uring setup flags the ring is created with.
///
/// Each mode documents the kernel it needs. With [`RingMode::Auto`] the runtime tries the modes
/// from fastest to most compatible and records in [`Capabilities::notes`](crate::Capabilities)
/// why a faster one was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RingMode {
    /// Try `DeferTaskrun`, then `CoopTaskrun`, then `Plain` (default).
    #[default]
    Auto,
    /// `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG | SUBMIT_ALL` (Linux 6.1): completions are
    /// produced only when the event loop asks for them, once per turn. Fails `build()` on older
    /// kernels.
    DeferTaskrun,
    /// `COOP_TASKRUN | TASKRUN_FLAG | SUBMIT_ALL` (Linux 5.19): no inter-processor interrupts for
    /// completions, but they run at any kernel entry.
    CoopTaskrun,
    /// No task-run flags (Linux 5.11): completions interrupt the thread as they happen.
    Plain,
}

/// What the builder asks of the ring.
#[derive(Debug, Clone)]
pub(crate) struct RingConfig {
    /// SQ entries asked for; the kernel rounds up to a power of two.
    pub(crate) entries: u32,
    /// CQ entries (`IORING_SETUP_CQSIZE`), at least `entries`.
    pub(crate) cq_entries: u32,
    /// Which setup flags to try (see [`RingMode`]).
    pub(crate) mode: RingMode,
    /// Register the ring fd (`IORING_REGISTER_RING_FDS`, Linux 5.18), so enters skip the fd
    /// table lookup; a refusal is noted, not an error.
    pub(crate) register_ring_fd: bool,
    /// 32-byte CQEs (`IORING_SETUP_CQE32`), needed by zero-copy receive; only with
    /// `DEFER_TASKRUN`.
    pub(crate) cqe32: bool,
    /// Slots of the registered file table to register when the ring is built (0: on first
    /// use of a direct descriptor, see `driver/files.rs`).
    pub(crate) direct_descriptors: u32,
    /// A kernel submission thread (`IORING_SETUP_SQPOLL`), tried first when set.
    pub(crate) sqpoll: Option<SqPoll>,
}

/// What `Builder::sqpoll` asks of the kernel's submission thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SqPoll {
    /// Milliseconds the thread polls an empty SQ before it sleeps (`sq_thread_idle`).
    pub(crate) idle_ms: u32,
    /// The CPU the thread is bound to (`IORING_SETUP_SQ_AFF`), if any.
    pub(crate) cpu: Option<u32>,
}

/// One set of setup flags to try, newest kernel first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// `SQPOLL | SUBMIT_ALL` (+ `SQ_AFF`): a kernel thread consumes the SQ (Linux 5.11 for
    /// unprivileged use and plain fds). No task-run flags: the kernel refuses them with SQPOLL.
    SqPoll(SqPoll),
    /// `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG | SUBMIT_ALL` (Linux 6.1).
    DeferTaskrun,
    /// `COOP_TASKRUN | TASKRUN_FLAG | SUBMIT_ALL` (Linux 5.19).
    CoopTaskrun,
    /// No task-run flags (Linux 5.11 for the features the loop needs).
    Plain,
}

impl Attempt {
    /// The flags, as error messages and notes name them.
    fn describe(self) -> &'static str {
        match self {
            Attempt::SqPoll(SqPoll { cpu: Some(_), .. }) => "SQPOLL|SQ_AFF|SUBMIT_ALL",
            Attempt::SqPoll(SqPoll { cpu: None, .. }) => "SQPOLL|SUBMIT_ALL",
            Attempt::DeferTaskrun => "SINGLE_ISSUER|DEFER_TASKRUN|TASKRUN_FLAG|SUBMIT_ALL",
            Attempt::CoopTaskrun => "COOP_TASKRUN|TASKRUN_FLAG|SUBMIT_ALL",
            Attempt::Plain => "no task-run flags",
        }
    }

    /// The first kernel that accepts these flags.
    fn min_kernel(self) -> &'static str {
        match self {
            Attempt::SqPoll(_) => "5.11",
            Attempt::DeferTaskrun => "6.1",
            Attempt::CoopTaskrun => "5.19",
            Attempt::Plain => "5.11",
        }
    }

    /// Creates a ring with these flags, `entries` SQ and `cq_entries` CQ entries, with
    /// 16-byte (`cqueue::Entry`) or 32-byte (`cqueue::Entry32`) CQEs as `C` says.
    /// `IORING_SETUP_*` flags are documented in liburing's `io_uring_setup(2)`.
    fn build<C: cqueue::EntryMarker>(
        self,
        entries: u32,
        cq_entries: u32,
    ) -> io::Result<IoUring<squeue::Entry, C>> {
        let mut b = IoUring::<squeue::Entry, C>::builder();
        // A forked child must not inherit the ring's mappings (`MADV_DONTFORK`).
        b.dontfork().setup_cqsize(cq_entries);
        match self {
            Attempt::SqPoll(sq) => {
                b.setup_sqpoll(sq.idle_ms).setup_submit_all();
                if let Some(cpu) = sq.cpu {
                    b.setup_sqpoll_cpu(cpu);
                }
            }
            Attempt::DeferTaskrun => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag()
                    .setup_submit_all();
            }
            Attempt::CoopTaskrun => {
                b.setup_coop_taskrun()
                    .setup_taskrun_flag()
                    .setup_submit_all();
            }
            Attempt::Plain => {}
        }
        b.build(entries)
    }
}

/// How the ring was set up, reported in `Capabilities`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingSetup {
    /// 32-byte CQEs (`IORING_SETUP_CQE32`).
    pub(crate) cqe32: bool,
    /// `SINGLE_ISSUER | DEFER_TASKRUN` were accepted.
    pub(crate) defer_taskrun: bool,
    /// `COOP_TASKRUN` was accepted (the fallback).
    pub(crate) coop_taskrun: bool,
    /// The kernel flags pending task work in the SQ ring (`IORING_SQ_TASKRUN`).
    pub(crate) taskrun_flag: bool,
    /// Enters use the registered ring index.
    pub(crate) registered_ring_fd: bool,
    /// A kernel thread consumes the SQ (`IORING_SETUP_SQPOLL`), as configured.
    pub(crate) sqpoll: Option<SqPoll>,
}

/// What the kernel granted a new ring: computed once by [`Ring::new`], never changed.
#[derive(Debug, Clone)]
pub(crate) struct RingInfo {
    /// SQ entries granted (a power of two).
    pub(crate) sq_entries: u32,
    /// CQ entries granted; they bound one dispatch.
    pub(crate) cq_entries: u32,
    /// Raw `IORING_FEAT_*` bits.
    pub(crate) features: u32,
    pub(crate) setup: RingSetup,
    /// One bit per opcode the probe reported supported (all clear when the probe failed).
    pub(crate) opcodes: [u64; 4],
    /// Why something was not used, one sentence each.
    pub(crate) notes: Vec<String>,
}

/// Whether `IORING_OP_SEND` takes a destination address (`sqe->addr2`, `addr_len`): Linux
/// 6.1, in the series that added `IORING_OP_SENDMSG_ZC` (io_uring/net.c, `io_send_setup`),
/// so a probe that finds `SENDMSG_ZC` sets it. One kernel serves every ring of the process.
pub(crate) static SEND_TAKES_ADDRESS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

impl RingInfo {
    /// Reads the sizes and features out of `params` and the opcodes out of `probe`.
    fn new(
        params: &Parameters,
        setup: RingSetup,
        probe: Option<&Probe>,
        notes: Vec<String>,
    ) -> RingInfo {
        let mut opcodes = [0u64; 4];
        if let Some(probe) = probe {
            for op in 0..=255u8 {
                if probe.is_supported(op) {
                    opcodes[usize::from(op / 64)] |= 1 << (op % 64);
                }
            }
        }
        if probe.is_some_and(|p| p.is_supported(io_uring::opcode::SendMsgZc::CODE)) {
            SEND_TAKES_ADDRESS.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        RingInfo {
            sq_entries: params.sq_entries(),
            cq_entries: params.cq_entries(),
            features: features_of(params),
            setup,
            opcodes,
            notes,
        }
    }

    /// Whether the probe reported opcode `code` supported.
    pub(crate) fn supports_opcode(&self, code: u8) -> bool {
        self.opcodes[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }
}

impl Ring {
    /// Creates the ring, falling back through flag sets as `config.mode` allows, registers its
    /// fd, and probes what the kernel supports.
    pub(crate) fn new(config: &RingConfig) -> io::Result<(Ring, RingInfo)> {
        let modes: &[Attempt] = match config.mode {
            // 32-byte CQEs serve zero-copy receive, which needs DEFER_TASKRUN.
            _ if config.cqe32 => &[Attempt::DeferTaskrun],
            RingMode::Auto => &[Attempt::DeferTaskrun, Attempt::CoopTaskrun, Attempt::Plain],
            RingMode::DeferTaskrun => &[Attempt::DeferTaskrun],
            RingMode::CoopTaskrun => &[Attempt::CoopTaskrun],
            RingMode::Plain => &[Attempt::Plain],
        };
        let mut notes = Vec::new();
        let mut attempts = Vec::with_capacity(modes.len() + 1);
        match config.sqpoll {
            Some(_) if config.cqe32 => notes.push(
                "SQPOLL off: zero-copy receive needs DEFER_TASKRUN, which the kernel does not \
                 combine with SQPOLL"
                    .to_owned(),
            ),
            Some(sq) => attempts.push(Attempt::SqPoll(sq)),
            None => {}
        }
        attempts.extend_from_slice(modes);
        let mut chosen = None;
        for (i, &attempt) in attempts.iter().enumerate() {
            let built = if config.cqe32 {
                attempt
                    .build::<cqueue::Entry32>(config.entries, config.cq_entries)
                    .map(Uring::Big)
            } else {
                attempt
                    .build::<cqueue::Entry>(config.entries, config.cq_entries)
                    .map(Uring::Normal)
            };
            match built {
                // Before 5.11 the SQ thread could use registered files only: refuse it.
                Ok(uring)
                    if matches!(attempt, Attempt::SqPoll(_))
                        && !uring.params().is_feature_sqpoll_nonfixed() =>
                {
                    notes.push(
                        "SQPOLL off: this kernel's SQ thread serves registered files only \
                         (IORING_FEAT_SQPOLL_NONFIXED needs Linux 5.11), fell back"
                            .to_owned(),
                    );
                }
                Ok(uring) => {
                    chosen = Some((uring, attempt));
                    break;
                }
                Err(e) if matches!(attempt, Attempt::SqPoll(_)) => {
                    notes.push(sqpoll_refused(&e, attempt));
                }
                // EINVAL is how an older kernel rejects flags it does not know.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && i + 1 < attempts.len() => {
                    notes.push(format!(
                        "ring setup with {} was rejected (EINVAL; needs Linux {}), fell back",
                        attempt.describe(),
                        attempt.min_kernel()
                    ));
                }
                Err(e) => {
                    return Err(setup_error::explain(
                        e,
                        config,
                        attempt.describe(),
                        attempt.min_kernel(),
                    ));
                }
            }
        }
        let Some((uring, attempt)) = chosen else {
            unreachable!("the last attempt either succeeds or returns its error")
        };
        if !uring.params().is_feature_ext_arg() {
            return Err(setup_error::missing_feature(
                "IORING_FEAT_EXT_ARG (timed waits)",
                "5.11",
            ));
        }
        if !uring.params().is_feature_nodrop() {
            return Err(setup_error::missing_feature(
                "IORING_FEAT_NODROP (no lost completions)",
                "5.5",
            ));
        }

        let sqpoll = match attempt {
            Attempt::SqPoll(sq) => Some(sq),
            _ => None,
        };
        let mut ring = Ring {
            enter_fd: uring.fd(),
            enter_flags: 0,
            sqpoll: sqpoll.is_some(),
            uring,
        };
        let registered = if config.register_ring_fd {
            match ring.register_ring_fd() {
                Ok(()) => true,
                Err(e) => {
                    notes.push(format!(
                        "registered ring fd unavailable ({e}; needs Linux 5.18), using the plain fd"
                    ));
                    false
                }
            }
        } else {
            notes.push("registered ring fd disabled by Builder::register_ring_fd(false)".into());
            false
        };

        let mut probe = Probe::new();
        let probed = match ring.uring.submitter().register_probe(&mut probe) {
            Ok(()) => Some(probe),
            Err(e) => {
                notes.push(format!(
                    "opcode probe failed ({e}); no opcode is reported supported"
                ));
                None
            }
        };
        if let Some(sq) = sqpoll {
            let cpu = sq.cpu.map_or("any CPU".to_owned(), |c| format!("CPU {c}"));
            notes.push(format!(
                "SQPOLL: a kernel thread on {cpu} consumes the SQ and sleeps after {} ms \
                 idle; DEFER_TASKRUN and COOP_TASKRUN are off because the kernel refuses \
                 them with SQPOLL (EINVAL); completions are produced by that thread",
                sq.idle_ms
            ));
        } else if attempt != Attempt::DeferTaskrun {
            notes.push(
                "DEFER_TASKRUN is off: completions run as task work at any kernel entry, \
                 which costs more per message"
                    .into(),
            );
        }
        let setup = RingSetup {
            cqe32: config.cqe32,
            defer_taskrun: attempt == Attempt::DeferTaskrun,
            coop_taskrun: attempt == Attempt::CoopTaskrun,
            taskrun_flag: matches!(attempt, Attempt::DeferTaskrun | Attempt::CoopTaskrun),
            registered_ring_fd: registered,
            sqpoll,
        };
        let info = RingInfo::new(ring.uring.params(), setup, probed.as_ref(), notes);
        Ok((ring, info))
    }
}

/// The note for a refused SQPOLL attempt: what the errno means and that the ring runs
/// without the kernel thread.
fn sqpoll_refused(err: &io::Error, attempt: Attempt) -> String {
    let (name, why) = match err.raw_os_error() {
        Some(libc::EPERM) => (
            "EPERM",
            "before Linux 5.11 SQPOLL needs CAP_SYS_ADMIN; otherwise a seccomp or LSM policy \
             forbids it",
        ),
        Some(libc::EACCES) => ("EACCES", "an LSM policy forbids it"),
        Some(libc::EINVAL) => (
            "EINVAL",
            "the SQ thread's CPU (Builder::sqpoll_cpu) is not one this process may use, or \
             the kernel is older than 5.11",
        ),
        Some(libc::ENOMEM) => ("ENOMEM", "RLIMIT_MEMLOCK is too low for the ring"),
        _ => ("error", "the kernel refused it"),
    };
    format!(
        "SQPOLL off: ring setup with {} failed ({name}: {err}; {why}), fell back to the \
         modes without a kernel submission thread",
        attempt.describe()
    )
}

/// Rebuilds the raw feature bits from the crate's accessors (it does not expose the field, nor
/// `REG_REG_RING`, bit 13, which is therefore never reported).
fn features_of(p: &Parameters) -> u32 {
    let checks: [(u32, bool); 15] = [
        (1 << 0, p.is_feature_single_mmap()),
        (1 << 1, p.is_feature_nodrop()),
        (1 << 2, p.is_feature_submit_stable()),
        (1 << 3, p.is_feature_rw_cur_pos()),
        (1 << 4, p.is_feature_cur_personality()),
        (1 << 5, p.is_feature_fast_poll()),
        (1 << 6, p.is_feature_poll_32bits()),
        (1 << 7, p.is_feature_sqpoll_nonfixed()),
        (1 << 8, p.is_feature_ext_arg()),
        (1 << 9, p.is_feature_native_workers()),
        (1 << 10, p.is_feature_resource_tagging()),
        (1 << 11, p.is_feature_skip_cqe_on_success()),
        (1 << 12, p.is_feature_linked_file()),
        (1 << 14, p.is_feature_recvsend_bundle()),
        (1 << 15, p.is_feature_min_timeout()),
    ];
    checks
        .iter()
        .filter(|(_, on)| *on)
        .fold(0, |acc, (bit, _)| acc | bit)
}
