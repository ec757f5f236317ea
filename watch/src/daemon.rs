//! The daemon loop: one thread, `ppoll(2)` over the listeners, the signal pipe and the metrics
//! eventfd, with the timeout set exactly to the tracker's next deadline.
//!
//! One turn:
//!
//! 1. read the clock, fire every due deadline (`handle_timeout`), emit and flush: a stall leaves
//!    the daemon right after the wake-up that was scheduled for it;
//! 2. sleep in `ppoll` until a datagram, a signal, a scrape or the next deadline (nanosecond
//!    timeout; no timeout at all when nothing is pending, so an idle observer never wakes);
//! 3. drain each readable listener until it would block (a short batch is no sign of an empty
//!    queue: the Unix socket queues only `net.unix.max_dgram_qlen` datagrams, often 10, and a
//!    fast sender refills it while we work), in `recvmmsg` batches of
//!    [`crate::listener::BATCH`], at most
//!    [`MAX_BATCHES_PER_TURN`] batches per listener per turn, reading the clock and firing due
//!    deadlines between batches, so a flood of datagrams (valid or garbage) cannot delay stall
//!    detection by more than one batch.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::listener::{RecvBatch, UdpListener, UnixListener};
use crate::metrics::{AgentRow, MetricsLink, Snapshot};
use crate::output::{ExportFile, Outputs, Row};
use crate::recovery::{Reason, Recovery, Request, Transport};
use crate::tracker::{
    AgentId, Event, Listener, Nanos, Origin, ReasonClass, Tracker, TrackerConfig, UdpMode,
};

/// Upper bound of `recvmmsg` batches taken from one listener in one loop turn.
pub const MAX_BATCHES_PER_TURN: usize = 16;

/// Event kinds counted in `varta_events_total{kind}`.
const EVENT_KINDS: [&str; 9] = [
    "new",
    "restart",
    "status",
    "stall",
    "recovered",
    "crash",
    "goodbye",
    "evicted",
    "recovery",
];

/// The daemon's own counters; rejections are counted by the tracker ([`Tracker::stats`]).
#[derive(Debug, Default)]
struct Counters {
    unix_datagrams: u64,
    udp_datagrams: u64,
    /// Unix datagrams without `SCM_CREDENTIALS` (cannot be attested): auth failures.
    no_credentials: u64,
    events: [u64; EVENT_KINDS.len()],
    busy_turns: u64,
    recv_errors: u64,
}

impl Counters {
    fn event(&mut self, kind: &str) {
        if let Some(i) = EVENT_KINDS.iter().position(|k| *k == kind) {
            self.events[i] += 1;
        }
    }
}

/// The running observer.
pub struct Daemon {
    tracker: Tracker,
    capacity: usize,
    unix: Option<UnixListener>,
    udp: Option<UdpListener>,
    batch: RecvBatch,
    outputs: Outputs,
    recovery: Option<Recovery>,
    shutdown_grace: std::time::Duration,
    /// What each UDP listener accepts, to tell recovery how an agent was authenticated.
    udp_modes: Vec<UdpMode>,
    metrics: Option<MetricsLink>,
    metrics_max_agents: usize,
    sig_rx: UnixStream,
    term: Arc<AtomicBool>,
    start: Instant,
    counters: Counters,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("agents", &self.tracker.len())
            .field("unix", &self.unix)
            .field("udp", &self.udp)
            .finish_non_exhaustive()
    }
}

/// A setup failure: one line for the operator.
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

impl Daemon {
    /// Opens listeners, outputs and the metrics endpoint; installs signal handlers.
    ///
    /// # Errors
    /// [`SetupError`] naming what failed.
    pub fn new(cfg: Config) -> Result<Daemon, SetupError> {
        let se = |e: &dyn std::fmt::Display| SetupError(e.to_string());
        let mut udp_modes = Vec::new();
        let mut udp = None;
        let mut udp_addr = None;
        if let Some(u) = cfg.udp {
            let l = UdpListener::bind(u.addr).map_err(|e| se(&e))?;
            if u.rcvbuf != crate::listener::RCVBUF {
                l.set_rcvbuf(u.rcvbuf);
            }
            udp_addr = l.local_addr().ok();
            udp = Some(l);
            udp_modes.push(if u.keys.is_empty() && u.master.is_none() {
                UdpMode::Plain
            } else {
                UdpMode::Secure {
                    keys: u.keys,
                    master: u.master,
                }
            });
        }
        let unix = match &cfg.socket {
            Some(p) => Some(UnixListener::bind(p, cfg.socket_mode).map_err(|e| se(&e))?),
            None => None,
        };
        let export = match cfg.export_file {
            Some(p) => Some(
                ExportFile::open(p.clone(), cfg.export_max_bytes)
                    .map_err(|e| SetupError(format!("--export-file {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let (metrics, prom_addr) = match cfg.prom_addr {
            Some(a) => {
                let (link, bound) = crate::metrics::serve(a)
                    .map_err(|e| SetupError(format!("--prom-addr {a}: {e}")))?;
                (Some(link), Some(bound))
            }
            None => (None, None),
        };
        let (sig_rx, sig_tx) =
            UnixStream::pair().map_err(|e| SetupError(format!("signal pipe: {e}")))?;
        sig_rx
            .set_nonblocking(true)
            .map_err(|e| SetupError(format!("signal pipe: {e}")))?;
        let term = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&term))
                .map_err(|e| SetupError(format!("signal handler: {e}")))?;
        }
        for sig in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGCHLD,
        ] {
            let tx = sig_tx
                .try_clone()
                .map_err(|e| SetupError(format!("signal pipe: {e}")))?;
            signal_hook::low_level::pipe::register(sig, tx)
                .map_err(|e| SetupError(format!("signal handler: {e}")))?;
        }
        // Wake-ups for deadlines should be exact: shrink the default 50 us timer slack.
        // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };

        if let Some(prio) = cfg.rt_priority {
            let param = libc::sched_param {
                sched_priority: libc::c_int::from(prio),
            };
            // SAFETY: `param` is a live local; pid 0 is this thread. Only the loop thread is
            // real-time: the metrics thread was spawned before and keeps normal policy, and
            // recovery children are reset to it (SCHED_RESET_ON_FORK).
            let rc = unsafe {
                libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
            };
            if rc != 0 {
                return Err(SetupError(format!(
                    "--rt-priority {prio}: cannot set SCHED_FIFO: {}",
                    io::Error::last_os_error()
                )));
            }
        }
        let tracker = Tracker::new(TrackerConfig {
            threshold: cfg.threshold_ns,
            capacity: cfg.capacity,
            evict_after: cfg.evict_after_ns,
            allowed_uids: cfg.allowed_uids.clone(),
            udp: udp_modes.clone(),
        });
        let recovery = match cfg.recovery {
            Some(r) => {
                let audit_path = r.audit.as_ref().map(|a| a.path.display().to_string());
                Some(Recovery::new(r).map_err(|e| {
                    SetupError(format!(
                        "--recovery-audit-file {}: {e}",
                        audit_path.unwrap_or_default()
                    ))
                })?)
            }
            None => None,
        };

        let mut where_ = Vec::new();
        if let Some(u) = &unix {
            where_.push(format!("unix {}", u.path().display()));
        }
        if let Some(a) = udp_addr {
            where_.push(format!("udp {a}"));
        }
        if let Some(a) = prom_addr {
            where_.push(format!("metrics http://{a}/metrics"));
        }
        eprintln!(
            "varta-watch: listening on {}; threshold {} ms, capacity {}",
            where_.join(", "),
            cfg.threshold_ns / 1_000_000,
            cfg.capacity
        );
        if unix.is_some() {
            let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            if let Some(q) = qlen.filter(|q| *q < 64) {
                eprintln!(
                    "varta-watch: note: net.unix.max_dgram_qlen is {q}: the socket queues only {q} datagrams, senders get EAGAIN beyond that; for many agents raise it (sysctl -w net.unix.max_dgram_qlen=512)"
                );
            }
        }
        Ok(Daemon {
            tracker,
            capacity: cfg.capacity,
            unix,
            udp,
            batch: RecvBatch::new(),
            outputs: Outputs::new(cfg.format, export),
            recovery,
            shutdown_grace: cfg.shutdown_grace,
            udp_modes,
            metrics,
            metrics_max_agents: cfg.metrics_max_agents,
            sig_rx,
            term,
            start: Instant::now(),
            counters: Counters::default(),
        })
    }

    fn now(&self) -> Nanos {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Drains tracker events to the outputs (and recovery).
    fn drain_events(&mut self) {
        while let Some(ev) = self.tracker.poll_event() {
            let row = Row::from_event(&ev);
            self.counters.event(row.kind);
            let now = self.now();
            self.outputs.emit(&row, now);
            let trigger = match ev {
                Event::Stalled { at, agent, .. } => Some((at, agent, Reason::Stall, "stall")),
                Event::Died {
                    at,
                    agent,
                    clean: false,
                    ..
                } => Some((at, agent, Reason::Crash, "critical")),
                _ => None,
            };
            if let Some((at, agent, reason, status)) = trigger {
                let transport = Transport::of(agent.listener, &self.udp_modes);
                if let Some(rec) = self.recovery.as_mut() {
                    let decision = rec.trigger(
                        at,
                        &Request {
                            agent,
                            transport,
                            reason,
                            status,
                        },
                    );
                    self.emit_recovery(at, agent, decision.to_string());
                }
            }
        }
    }

    fn emit_recovery(&mut self, at: Nanos, agent: AgentId, detail: String) {
        self.counters.event("recovery");
        let now = self.now();
        self.outputs
            .emit(&Row::basic(at, "recovery", agent, None, None, detail), now);
    }

    /// Fires due deadlines and emits their events, flushing at once.
    fn fire_due(&mut self, now: Nanos) {
        if matches!(self.tracker.poll_timeout(), Some(d) if d <= now) {
            self.tracker.handle_timeout(now);
            self.drain_events();
            self.outputs.flush();
        }
    }

    fn on_datagram(&mut self, now: Nanos, origin: &Origin, i: usize) {
        // A datagram longer than the buffer arrives cut to DGRAM_BUF bytes, still a wrong
        // length. Acceptance and every rejection are counted inside the tracker.
        let _ = self
            .tracker
            .handle_datagram(now, origin, self.batch.data(i));
    }

    /// Drains one listener, bounded; returns whether the bound was hit.
    fn drain_unix(&mut self) -> bool {
        for _ in 0..MAX_BATCHES_PER_TURN {
            let Some(l) = self.unix.as_ref() else {
                return false;
            };
            let n = match l.try_recv(&mut self.batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.counters.recv_errors += 1;
                    return false;
                }
            };
            let now = self.now();
            self.counters.unix_datagrams += n as u64;
            for i in 0..n {
                match self.batch.creds(i) {
                    Some((pid, uid)) => self.on_datagram(now, &Origin::Unix { pid, uid }, i),
                    None => self.counters.no_credentials += 1,
                }
            }
            self.drain_events();
            self.fire_due(self.now());
        }
        true
    }

    fn drain_udp(&mut self) -> bool {
        for _ in 0..MAX_BATCHES_PER_TURN {
            let Some(l) = self.udp.as_ref() else {
                return false;
            };
            let n = match l.try_recv(&mut self.batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.counters.recv_errors += 1;
                    return false;
                }
            };
            let now = self.now();
            self.counters.udp_datagrams += n as u64;
            for i in 0..n {
                self.on_datagram(now, &Origin::Udp { listener: 0 }, i);
            }
            self.drain_events();
            self.fire_due(self.now());
        }
        true
    }

    fn snapshot(&self) -> Snapshot {
        let mut agents = Vec::new();
        let mut omitted = 0u64;
        for a in self.tracker.agents() {
            if agents.len() >= self.metrics_max_agents {
                omitted += 1;
                continue;
            }
            agents.push(AgentRow {
                pid: a.id.pid,
                listener: match a.id.listener {
                    Listener::Unix => "unix",
                    Listener::Udp(_) => "udp0",
                },
                beats: a.beats,
                stalls: a.stalls,
                status: a.reported_status().as_u8(),
            });
        }
        let c = &self.counters;
        let st = self.tracker.stats();
        let mut datagrams = Vec::new();
        if self.unix.is_some() {
            datagrams.push(("unix", c.unix_datagrams));
        }
        if self.udp.is_some() {
            datagrams.push(("udp0", c.udp_datagrams));
        }
        let (recovery, recovery_refused, recovery_audit_dropped, recovery_duration) =
            crate::recovery::metrics(self.recovery.as_ref());
        let decode_errors = st
            .rejections()
            .filter(|(r, _)| r.class() == ReasonClass::Decode)
            .map(|(r, n)| (r.label(), n))
            .collect();
        let mut rejections: Vec<(&'static str, u64)> =
            st.rejections().map(|(r, n)| (r.label(), n)).collect();
        rejections.push(("no_credentials", c.no_credentials));
        Snapshot {
            agents,
            agents_omitted: omitted,
            agents_tracked: self.tracker.len() as u64,
            capacity: self.capacity as u64,
            frames_accepted: st.accepted,
            frames_reordered: st.reordered,
            datagrams,
            decode_errors,
            rejections,
            auth_failures: st.rejected_class(ReasonClass::Auth) + c.no_credentials,
            decrypt_failures: st.rejected_class(ReasonClass::Decrypt),
            replays: st.rejected_class(ReasonClass::Replay),
            capacity_exceeded: st.rejected_class(ReasonClass::Capacity),
            events: EVENT_KINDS
                .iter()
                .copied()
                .zip(c.events.iter().copied())
                .collect(),
            events_dropped: st.events_dropped,
            recovery,
            recovery_refused,
            recovery_audit_dropped,
            recovery_duration,
            busy_turns: c.busy_turns,
            recv_errors: c.recv_errors,
            kernel_drops: self
                .udp
                .as_ref()
                .and_then(|u| u.kernel_drops().ok())
                .map(|d| vec![("udp0", u64::from(d))])
                .unwrap_or_default(),
            output_errors: self.outputs.write_errors,
            uptime_s: self.start.elapsed().as_secs_f64(),
        }
    }

    fn reap(&mut self) {
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        if rec.running() == 0 {
            return;
        }
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let done = rec.reap(now);
        for f in done {
            self.emit_recovery(now, f.agent, f.to_string());
        }
    }

    /// Kills recovery children past their deadline (reaped on their SIGCHLD).
    fn expire_recovery(&mut self, now: Nanos) {
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        if !matches!(rec.next_deadline(), Some(d) if d <= now) {
            return;
        }
        for (agent, child) in rec.expire(now) {
            self.emit_recovery(
                now,
                agent,
                format!("child {child} still running at its deadline: killed"),
            );
        }
    }

    /// Terminates and reaps every recovery child (SIGTERM, grace, SIGKILL to their groups).
    fn stop_recovery(&mut self) {
        let start = self.start;
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        let clock = move || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for f in rec.shutdown(&clock, self.shutdown_grace) {
            self.emit_recovery(clock(), f.agent, f.to_string());
        }
    }

    /// Runs until SIGINT or SIGTERM. Returns the process exit status.
    pub fn run(&mut self) -> i32 {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
        loop {
            // 1. Deadlines first, right after the wake-up.
            let now = self.now();
            self.fire_due(now);
            self.drain_events();
            self.expire_recovery(now);
            self.outputs.flush();
            if self.term.load(Ordering::Relaxed) {
                break;
            }

            // 2. Sleep until something happens or the next deadline.
            fds.clear();
            let pfd = |fd: i32| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            fds.push(pfd(self.sig_rx.as_raw_fd()));
            let unix_at = self.unix.as_ref().map(|u| {
                fds.push(pfd(u.as_raw_fd()));
                fds.len() - 1
            });
            let udp_at = self.udp.as_ref().map(|u| {
                fds.push(pfd(u.as_raw_fd()));
                fds.len() - 1
            });
            let metrics_at = self.metrics.as_ref().map(|m| {
                fds.push(pfd(m.fd()));
                fds.len() - 1
            });
            // Recovery children's capture pipes: drained whenever readable, so a chatty child
            // never blocks on a full pipe.
            let captures_at = fds.len();
            if let Some(rec) = self.recovery.as_ref() {
                fds.extend(rec.capture_fds().map(|fd| pfd(fd.as_raw_fd())));
            }
            let recovery_deadline = self.recovery.as_ref().and_then(Recovery::next_deadline);
            let deadline = match (self.tracker.poll_timeout(), recovery_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let ts = deadline.map(|d| {
                let wait = d.saturating_sub(self.now());
                libc::timespec {
                    tv_sec: (wait / 1_000_000_000) as libc::time_t,
                    tv_nsec: (wait % 1_000_000_000) as libc::c_long,
                }
            });
            let tsp = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `fds` is a valid array of pollfd of the given length; `tsp` is null or
            // points to a live timespec; no signal mask is changed.
            let rc = unsafe {
                libc::ppoll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    tsp,
                    std::ptr::null(),
                )
            };
            if rc <= 0 {
                // Timeout (deadline due) or EINTR: back to the top, which fires deadlines.
                continue;
            }
            let ready = |i: Option<usize>| i.is_some_and(|i| fds[i].revents != 0);

            // 3. Datagrams, bounded per listener per turn.
            let mut busy = false;
            if ready(unix_at) {
                busy |= self.drain_unix();
            }
            if ready(udp_at) {
                busy |= self.drain_udp();
            }
            if busy {
                self.counters.busy_turns += 1;
            }
            if fds[0].revents != 0 {
                let mut buf = [0u8; 64];
                while matches!((&self.sig_rx).read(&mut buf), Ok(n) if n > 0) {}
                self.reap();
            }
            if fds[captures_at..].iter().any(|p| p.revents != 0) {
                if let Some(rec) = self.recovery.as_mut() {
                    rec.drain_captures();
                }
            }
            if ready(metrics_at) {
                let wanted = self.metrics.as_ref().is_some_and(MetricsLink::take_request);
                if wanted {
                    let snap = self.snapshot();
                    if let Some(m) = self.metrics.as_ref() {
                        m.publish(snap);
                    }
                }
            }
        }
        self.stop_recovery();
        self.outputs.flush();
        let st = self.tracker.stats();
        eprintln!(
            "varta-watch: stopping; {} frames accepted, {} rejected, {} agents tracked",
            st.accepted,
            st.rejected_total() + self.counters.no_credentials,
            self.tracker.len()
        );
        0
    }
}
