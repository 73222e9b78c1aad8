//! What the kernel offered this runtime's ring, and why anything was left off.
//!
//! A `Capabilities` value is computed once when the ring is built (setup flags that were
//! accepted, `params.features`, and the opcode probe from `IORING_REGISTER_PROBE`) and never
//! changes afterwards.

use std::fmt;

use std::time::Duration;

use crate::{
    Backend,
    driver::{Napi, RingInfo, RingSetup, SqPoll},
};

/// The io_uring features in use by a runtime, read with [`crate::capabilities()`] or
/// [`Runtime::capabilities`](crate::Runtime::capabilities).
///
/// Printing it (`{}`) gives a multi-line report suitable for logs.
#[derive(Clone)]
pub struct Capabilities {
    kernel: String,
    sq_entries: u32,
    cq_entries: u32,
    features: u32,
    cqe32: bool,
    defer_taskrun: bool,
    coop_taskrun: bool,
    taskrun_flag: bool,
    registered_ring_fd: bool,
    sqpoll: Option<SqPoll>,
    napi: Option<Napi>,
    zcrx: Option<String>,
    opcodes: [u64; 4],
    notes: Vec<String>,
    backend: Backend,
}

/// io_uring opcodes the runtime reports by name, with the kernel that introduced them.
const NAMED_OPCODES: &[(u8, &str, &str)] = &[
    (io_uring::opcode::Nop::CODE, "NOP", "5.1"),
    (io_uring::opcode::Read::CODE, "READ", "5.6"),
    (io_uring::opcode::Write::CODE, "WRITE", "5.6"),
    (io_uring::opcode::Timeout::CODE, "TIMEOUT", "5.4"),
    (io_uring::opcode::AsyncCancel::CODE, "ASYNC_CANCEL", "5.5"),
    (io_uring::opcode::Accept::CODE, "ACCEPT", "5.5"),
    (io_uring::opcode::Connect::CODE, "CONNECT", "5.5"),
    (io_uring::opcode::Close::CODE, "CLOSE", "5.6"),
    (io_uring::opcode::Send::CODE, "SEND", "5.6"),
    (io_uring::opcode::Recv::CODE, "RECV", "5.6"),
    (io_uring::opcode::SendMsg::CODE, "SENDMSG", "5.3"),
    (io_uring::opcode::RecvMsg::CODE, "RECVMSG", "5.3"),
    (io_uring::opcode::Shutdown::CODE, "SHUTDOWN", "5.11"),
    (io_uring::opcode::MsgRingData::CODE, "MSG_RING", "5.18"),
    (io_uring::opcode::Socket::CODE, "SOCKET", "5.19"),
    (io_uring::opcode::SendZc::CODE, "SEND_ZC", "6.0"),
    (io_uring::opcode::SendMsgZc::CODE, "SENDMSG_ZC", "6.1"),
    (io_uring::opcode::RecvZc::CODE, "RECV_ZC", "6.15"),
];

/// `IORING_FEAT_*` bits the runtime reports by name.
const NAMED_FEATURES: &[(u32, &str)] = &[
    (1 << 0, "SINGLE_MMAP"),
    (1 << 1, "NODROP"),
    (1 << 2, "SUBMIT_STABLE"),
    (1 << 5, "FAST_POLL"),
    (1 << 8, "EXT_ARG"),
    (1 << 11, "CQE_SKIP"),
    (1 << 14, "RECVSEND_BUNDLE"),
    (1 << 15, "MIN_TIMEOUT"),
];

impl Capabilities {
    /// The public view of what the driver's ring setup learnt.
    pub(crate) fn new(info: RingInfo) -> Capabilities {
        let RingInfo {
            sq_entries,
            cq_entries,
            features,
            setup,
            opcodes,
            notes,
        } = info;
        let RingSetup {
            cqe32,
            defer_taskrun,
            coop_taskrun,
            taskrun_flag,
            registered_ring_fd,
            sqpoll,
        } = setup;
        Capabilities {
            kernel: crate::driver::kernel_release(),
            sq_entries,
            cq_entries,
            features,
            cqe32,
            defer_taskrun,
            coop_taskrun,
            taskrun_flag,
            registered_ring_fd,
            sqpoll,
            napi: None,
            zcrx: None,
            opcodes,
            notes,
            backend: Backend::IoUring,
        }
    }

    /// The capabilities of a runtime on the epoll backend, chosen for `reason` (a note):
    /// no ring, no io_uring opcode, no io_uring feature.
    pub(crate) fn epoll(reason: String) -> Capabilities {
        Capabilities {
            kernel: crate::driver::kernel_release(),
            sq_entries: 0,
            cq_entries: 0,
            features: 0,
            cqe32: false,
            defer_taskrun: false,
            coop_taskrun: false,
            taskrun_flag: false,
            registered_ring_fd: false,
            zcrx: None,
            opcodes: [0; 4],
            notes: vec![reason],
            sqpoll: None,
            napi: None,
            backend: Backend::Epoll,
        }
    }

    /// The backend the runtime runs on: [`Backend::IoUring`] or [`Backend::Epoll`] (never
    /// `Auto`). When it is epoll, the first of the [`notes`](Capabilities::notes) says why.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Records why a feature is not in use, for [`Capabilities::notes`].
    pub(crate) fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    pub(crate) fn set_zcrx(&mut self, description: String) {
        self.zcrx = Some(description);
    }

    pub(crate) fn set_napi(&mut self, napi: Napi) {
        self.napi = Some(napi);
    }

    /// Whether a kernel thread consumes the SQ (`IORING_SETUP_SQPOLL`, asked with
    /// [`Builder::sqpoll`](crate::Builder::sqpoll)). When it was asked for and is off, the
    /// notes say why; when it is on, `defer_taskrun` and `coop_taskrun` are off, because
    /// the kernel refuses them with SQPOLL.
    pub fn sqpoll(&self) -> bool {
        self.sqpoll.is_some()
    }

    /// The CPU the SQ thread is bound to (`IORING_SETUP_SQ_AFF`), if SQPOLL is on and bound.
    pub fn sqpoll_cpu(&self) -> Option<u32> {
        self.sqpoll.and_then(|sq| sq.cpu)
    }

    /// How long the SQ thread polls an empty SQ before it sleeps, if SQPOLL is on.
    pub fn sqpoll_idle(&self) -> Option<Duration> {
        self.sqpoll
            .map(|sq| Duration::from_millis(u64::from(sq.idle_ms)))
    }

    /// The NAPI busy-poll window registered with the ring (`IORING_REGISTER_NAPI`, asked with
    /// [`Builder::napi_busy_poll`](crate::Builder::napi_busy_poll)), and whether busy polling
    /// is preferred over interrupts. `None` when it is off; the notes say why when it was
    /// asked for.
    pub fn napi_busy_poll(&self) -> Option<(Duration, bool)> {
        self.napi.map(|n| {
            (
                Duration::from_micros(u64::from(n.busy_poll_us)),
                n.prefer_busy_poll,
            )
        })
    }

    /// The zero-copy receive queue in use, described (`None` when there is none; the notes
    /// say why when it was asked for).
    pub fn zcrx(&self) -> Option<&str> {
        self.zcrx.as_deref()
    }

    /// The running kernel's release string (`uname -r`).
    pub fn kernel_release(&self) -> &str {
        &self.kernel
    }

    /// Submission queue size granted by the kernel (a power of two).
    pub fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// Completion queue size granted by the kernel.
    pub fn cq_entries(&self) -> u32 {
        self.cq_entries
    }

    /// Whether the ring runs with `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1), the fastest mode:
    /// completions are produced only when the runtime asks for them, once per loop turn.
    pub fn defer_taskrun(&self) -> bool {
        self.defer_taskrun
    }

    /// Whether the ring has 32-byte CQEs (`IORING_SETUP_CQE32`), as zero-copy receive needs.
    pub fn cqe32(&self) -> bool {
        self.cqe32
    }

    /// Whether the ring runs with `COOP_TASKRUN` (Linux 5.19), the fallback when
    /// `DEFER_TASKRUN` is unavailable.
    pub fn coop_taskrun(&self) -> bool {
        self.coop_taskrun
    }

    /// Whether the kernel flags pending task work in the SQ ring (`TASKRUN_FLAG`).
    pub fn taskrun_flag(&self) -> bool {
        self.taskrun_flag
    }

    /// Whether the ring fd is registered (Linux 5.18) and enters use the registered index.
    pub fn registered_ring_fd(&self) -> bool {
        self.registered_ring_fd
    }

    /// Raw `IORING_FEAT_*` bits from `io_uring_params.features`.
    pub fn feature_bits(&self) -> u32 {
        self.features
    }

    /// Whether `IORING_FEAT_RECVSEND_BUNDLE` (Linux 6.10) is present.
    pub fn recvsend_bundle(&self) -> bool {
        self.features & (1 << 14) != 0
    }

    /// Whether the kernel supports the opcode `code` (e.g. `io_uring::opcode::SendZc::CODE`),
    /// according to `IORING_REGISTER_PROBE`.
    pub fn supports_opcode(&self, code: u8) -> bool {
        self.opcodes[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }

    /// Why features are not in use, one sentence each. Empty when everything was enabled.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capabilities")
            .field("backend", &self.backend)
            .field("kernel", &self.kernel)
            .field("sq_entries", &self.sq_entries)
            .field("cq_entries", &self.cq_entries)
            .field("features", &format_args!("{:#x}", self.features))
            .field("defer_taskrun", &self.defer_taskrun)
            .field("coop_taskrun", &self.coop_taskrun)
            .field("taskrun_flag", &self.taskrun_flag)
            .field("registered_ring_fd", &self.registered_ring_fd)
            .field("sqpoll", &self.sqpoll)
            .field("napi", &self.napi)
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if let Some(sq) = self.sqpoll {
            match sq.cpu {
                Some(cpu) => format!("SQPOLL (SQ thread on CPU {cpu}, idle {} ms)", sq.idle_ms),
                None => format!("SQPOLL (SQ thread unbound, idle {} ms)", sq.idle_ms),
            }
        } else if self.defer_taskrun {
            "SINGLE_ISSUER|DEFER_TASKRUN|TASKRUN_FLAG".to_owned()
        } else if self.coop_taskrun {
            "COOP_TASKRUN|TASKRUN_FLAG".to_owned()
        } else {
            "plain".to_owned()
        };
        writeln!(f, "kernel {}", self.kernel)?;
        if self.backend == Backend::Epoll {
            writeln!(
                f,
                "backend: epoll (edge-triggered, non-blocking system calls)"
            )?;
            for note in &self.notes {
                writeln!(f, "note: {note}")?;
            }
            return Ok(());
        }
        writeln!(f, "backend: io_uring")?;
        writeln!(
            f,
            "ring: {} SQ / {} CQ entries{}, mode {mode}, registered fd: {}",
            self.sq_entries,
            self.cq_entries,
            if self.cqe32 { " (32-byte)" } else { "" },
            self.registered_ring_fd
        )?;
        let features: Vec<&str> = NAMED_FEATURES
            .iter()
            .filter(|(bit, _)| self.features & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        writeln!(f, "features: {}", features.join(" "))?;
        let (yes, no): (Vec<_>, Vec<_>) = NAMED_OPCODES
            .iter()
            .partition(|(code, _, _)| self.supports_opcode(*code));
        let yes: Vec<&str> = yes.iter().map(|(_, name, _)| *name).collect();
        writeln!(f, "opcodes: {}", yes.join(" "))?;
        for (_, name, since) in no {
            writeln!(f, "missing opcode: {name} (Linux {since})")?;
        }
        if let Some(zcrx) = &self.zcrx {
            writeln!(f, "zero-copy receive: {zcrx}")?;
        }
        if let Some(napi) = &self.napi {
            writeln!(
                f,
                "NAPI busy polling: {} us window, prefer busy poll: {}, dynamic tracking",
                napi.busy_poll_us, napi.prefer_busy_poll
            )?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}
