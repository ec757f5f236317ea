//! The daemon room: setup ([`Daemon::new`]) and the single-threaded event loop
//! ([`Daemon::run`], in `event_loop`) around the sans-I/O tracker.
//!
//! One turn of the loop:
//!
//! 1. read the clock, fire every due deadline (`handle_timeout`), emit and flush: a stall leaves
//!    the daemon right after the wake-up that was scheduled for it;
//! 2. sleep in `ppoll` until a datagram, a signal, a scrape or the next deadline (nanosecond
//!    timeout; no timeout at all when nothing is pending, so an idle observer never wakes);
//! 3. drain each readable listener until it would block (a short batch is no sign of an empty
//!    queue: the Unix socket queues only `net.unix.max_dgram_qlen` datagrams, often 10, and a
//!    fast sender refills it while we work), in `recvmmsg` batches of
//!    [`crate::listener::BATCH`], round-robin over the ready listeners (one batch from each
//!    in turn, so a flood on one listener does not starve the others), at most
//!    [`MAX_BATCHES_PER_TURN`] batches per listener per turn, reading the clock and firing due
//!    deadlines between batches, so a flood of datagrams (valid or garbage) cannot delay stall
//!    detection by more than one batch; each datagram is taken at its kernel receive time
//!    (`SO_TIMESTAMPNS`), so after a turn that read datagrams the sockets may be left unread
//!    for a short hold-off ([`crate::listener::Pace`], bounded by the queues' room and the
//!    next deadline, whose wake-up reads every socket before it fires): few wake-ups for
//!    many agents;
//! 4. answer a scrape's request with a snapshot (`snapshot`), published without waiting.
//!
//! Each turn also tells the supervisor (`supervise`) that the loop is alive: systemd's
//! `WATCHDOG=1`, the self-watchdog and a hardware watchdog (`--hw-watchdog`) are fed from
//! here, never from another thread. With `--alertmanager-url`, tracker events also go to
//! direct Alertmanager delivery (`crate::alerting`), whose batches are handed to its own
//! thread without waiting. Sockets
//! handed over by systemd (socket activation) replace the ones the loop would bind.

mod counters;
mod event_loop;
mod os;
mod policy;
mod snapshot;
pub mod state;
mod supervise;
#[cfg(feature = "test-hooks")]
mod test_hooks;

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use counters::Counters;

use crate::config::Config;
use crate::listener::{activation, ListenError, Listener, RecvBatch, UdpListener, UnixListener};
use crate::metrics::Publisher;
use crate::output::{ExportFile, Outputs};
use crate::recovery::Recovery;
use crate::tracker::{Nanos, Tracker, TrackerConfig, UdpMode};

/// Upper bound of `recvmmsg` batches taken from one listener in one loop turn.
pub const MAX_BATCHES_PER_TURN: usize = 16;

/// Why the daemon could not start; each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A listener could not be set up.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The export file could not be opened.
    #[error("--export-file {}: {source}", path.display())]
    Export {
        /// The file.
        path: PathBuf,
        /// The error.
        source: crate::fsutil::PrivateFileError,
    },
    /// An output writer thread could not be started.
    #[error("output writer thread: {0}")]
    Output(io::Error),
    /// The metrics endpoint could not be started.
    #[error("--prom-addr {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// Signal handling could not be installed.
    #[error("signal handling: {0}")]
    Signals(io::Error),
    /// Socket activation passed a socket the configuration has no use for.
    #[error("socket activation: {0}")]
    Activation(&'static str),
    /// The recovery audit file could not be opened.
    #[error("--recovery-audit-file {}: {source}", path.display())]
    Audit {
        /// The file.
        path: PathBuf,
        /// The error.
        source: crate::recovery::AuditOpenError,
    },
    /// The state file is unsafe or cannot be read.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The receive workers could not be started.
    #[error("--workers: cannot start the receive threads: {0}")]
    Workers(io::Error),
    /// The self-watchdog thread could not be started.
    #[error("--self-watchdog-secs: {0}")]
    SelfWatchdog(io::Error),
    /// A class or name section was refused.
    #[error("{0}")]
    Policy(String),
    /// The control socket could not be opened.
    #[error(transparent)]
    Control(#[from] crate::control::server::ControlError),
    /// The alert delivery thread could not be started.
    #[error("--alertmanager-url: cannot start the delivery thread: {0}")]
    Alerting(io::Error),
    /// The hardware watchdog could not be opened.
    #[error("--hw-watchdog {}: {source}", path.display())]
    HwWatchdog {
        /// The device.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The heartbeat file could not be opened.
    #[error("{0}")]
    Heartbeat(io::Error),
    /// `SCHED_FIFO` was refused.
    #[error("--rt-priority {prio}: cannot set SCHED_FIFO: {source}")]
    RtPriority {
        /// The priority asked for.
        prio: u8,
        /// The error.
        source: io::Error,
    },
}

/// The running observer.
pub struct Daemon {
    tracker: Tracker,
    capacity: usize,
    listeners: Vec<Listener>,
    batch: RecvBatch,
    outputs: Outputs,
    recovery: Option<Recovery>,
    shutdown_grace: std::time::Duration,
    /// What each UDP listener accepts, to tell recovery how an agent was authenticated.
    udp_modes: Vec<UdpMode>,
    metrics: Option<Publisher>,
    metrics_max_agents: usize,
    sig_rx: UnixStream,
    term: Arc<AtomicBool>,
    start: Instant,
    counters: Counters,
    supervisor: supervise::Supervisor,
    policy: policy::PolicyLoop,
    /// The daemon's clock (`--clock-source`).
    clock: crate::compat::Clock,
    /// Heartbeat file, namespace gate, iteration histogram, timed shutdown.
    compat: crate::compat::Runtime,
    /// `SO_RCVBUF` of the Unix socket as the kernel reports it.
    uds_rcvbuf: u64,
    state: Option<state::StateStore>,
    /// Direct Alertmanager delivery (`--alertmanager-url`).
    alerts: Option<crate::alerting::AlertShell>,
    /// How long the sockets may stay unread after a turn (few wake-ups).
    pace: crate::listener::Pace,
    /// Sockets are left unread until then (a hold-off of [`crate::listener::Pace`]).
    hold_until: Nanos,
    /// How long before an agent's deadline the loop polls instead of sleeping
    /// (`--deadline-spin-us`).
    deadline_spin: Nanos,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("agents", &self.tracker.len())
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

/// A self-pipe written by the signal handlers of SIGINT, SIGTERM, SIGCHLD and SIGHUP (the loop
/// polls its read end); SIGINT and SIGTERM also raise `term` (SIGHUP its own flag, see
/// `policy`).
fn signals() -> io::Result<(UnixStream, Arc<AtomicBool>)> {
    use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
    let (sig_rx, sig_tx) = UnixStream::pair()?;
    sig_rx.set_nonblocking(true)?;
    let term = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&term))?;
    }
    for sig in [SIGINT, SIGTERM, SIGCHLD, signal_hook::consts::SIGHUP] {
        signal_hook::low_level::pipe::register(sig, sig_tx.try_clone()?)?;
    }
    Ok((sig_rx, term))
}

impl Daemon {
    /// Opens listeners, outputs and the metrics endpoint; installs signal handlers.
    ///
    /// # Errors
    /// [`SetupError`] naming what failed.
    pub fn new(mut cfg: Config) -> Result<Daemon, SetupError> {
        let mut udp_modes = Vec::new();
        let mut listeners = Vec::new();
        let mut where_ = Vec::new();
        // First, while no other thread reads the environment: take (and unset) what systemd
        // passed.
        let activated = activation::take()?;
        // With a state file the tracker clock starts in the past, so restored beats keep
        // their times (`state::clock_back`).
        let start = match &cfg.state {
            Some(_) => state::clock_origin(
                Instant::now(),
                state::clock_back(cfg.threshold_ns, cfg.evict_after_ns),
            ),
            None => Instant::now(),
        };
        // The daemon's clock (`--clock-source`) reads what `start.elapsed()` reads now.
        let clock = crate::compat::Clock::start(cfg.compat.clock, start.elapsed());
        let mut supervisor = supervise::Supervisor::new(start, cfg.self_watchdog)
            .map_err(SetupError::SelfWatchdog)?;
        let alerts = match cfg.alerting.clone() {
            Some(a) => Some(crate::alerting::AlertShell::start(a).map_err(SetupError::Alerting)?),
            None => None,
        };
        match (activated.unix, &cfg.socket) {
            (Some(sock), Some(_)) => {
                let l = UnixListener::adopt(sock)?;
                where_.push(format!("unix {} (socket activation)", l.path().display()));
                listeners.push(Listener::Unix(l));
            }
            (Some(_), None) => {
                return Err(SetupError::Activation(
                    "a Unix socket was passed but --no-socket is set",
                ))
            }
            (None, Some(p)) => {
                let l = UnixListener::bind(p, cfg.socket_mode)?;
                where_.push(format!("unix {}", l.path().display()));
                listeners.push(Listener::Unix(l));
            }
            (None, None) => {}
        }
        let mut passed_udp = activated.udp.into_iter();
        if cfg.udp.is_none() && passed_udp.len() > 0 {
            return Err(SetupError::Activation(
                "a UDP socket was passed but no --udp-port (and key) is configured",
            ));
        }
        if passed_udp.len() > 1 {
            return Err(SetupError::Activation(
                "more UDP sockets passed than configured (one)",
            ));
        }
        if let Some(u) = cfg.udp {
            let first = match passed_udp.next() {
                Some(sock) => UdpListener::adopt(sock)?,
                None if cfg.workers > 1 => UdpListener::bind_shared(u.addr)?,
                None => UdpListener::bind(u.addr)?,
            };
            let mode = if u.keys.is_empty() && u.master.is_none() {
                UdpMode::Plain
            } else {
                UdpMode::Secure {
                    keys: u.keys,
                    master: u.master,
                }
            };
            let mut socks = crate::listener::workers::siblings(first, cfg.workers)?;
            for l in &mut socks {
                if mode == UdpMode::Plain {
                    // Plaintext: the source address feeds the tracker's origin checks.
                    l.record_sources();
                }
                if u.rcvbuf != crate::listener::RCVBUF {
                    l.set_rcvbuf(u.rcvbuf);
                }
            }
            if let Ok(a) = socks[0].local_addr() {
                where_.push(match socks.len() {
                    1 => format!("udp {a}"),
                    n => format!("udp {a} ({n} receive workers)"),
                });
            }
            let index = udp_modes.len();
            udp_modes.push(mode);
            listeners.push(if socks.len() == 1 {
                Listener::Udp {
                    sock: socks.remove(0),
                    index,
                }
            } else {
                let limits = crate::listener::workers::WorkerLimits {
                    max_keys: cfg.capacity.min(crate::tracker::KEY_CACHE_MAX),
                    derivations_per_sec: cfg.rate.derivations_per_sec,
                };
                Listener::Workers(
                    crate::listener::Workers::start(socks, index, &udp_modes, limits, move || {
                        clock.now()
                    })
                    .map_err(SetupError::Workers)?,
                )
            });
        }
        let export = match cfg.export_file {
            Some(path) => Some(
                ExportFile::open(path.clone(), cfg.export_max_bytes, cfg.export_sync_every)
                    .map_err(|source| SetupError::Export { path, source })?,
            ),
            None => None,
        };
        let policy = policy::PolicyLoop::new(
            &cfg.policy,
            &cfg.class_defaults,
            cfg.socket.as_deref(),
            cfg.capacity,
        )?;
        if let Some(ctl) = policy.control_socket() {
            where_.push(format!("control {}", ctl.display()));
        }
        let metrics = match cfg.prom_addr {
            Some(addr) => {
                let guard = crate::metrics::Guard::new(
                    cfg.compat.prom_token.take(),
                    cfg.compat.prom_rate_limit,
                );
                let (publisher, bound) =
                    crate::metrics::serve(addr, cfg.http, guard, policy.routes())
                        .map_err(|source| SetupError::Metrics { addr, source })?;
                where_.push(format!("metrics http://{bound}/metrics"));
                Some(publisher)
            }
            None => None,
        };
        if let Some(n) = cfg.alerting.as_ref().map(|a| a.endpoints.len()) {
            where_.push(format!("alerts to {n} Alertmanager(s)"));
        }
        let (sig_rx, term) = signals().map_err(SetupError::Signals)?;
        os::exact_timers();
        if let Some(prio) = cfg.rt_priority {
            os::realtime(prio).map_err(|source| SetupError::RtPriority { prio, source })?;
        }
        let tracker_cfg = TrackerConfig {
            threshold: cfg.threshold_ns,
            capacity: cfg.capacity,
            evict_after: cfg.evict_after_ns,
            allowed_uids: cfg.allowed_uids.clone(),
            udp: udp_modes.clone(),
            eviction: cfg.compat.eviction,
            ..TrackerConfig::default()
        };
        let (mut tracker, mut state, state_notice) = state::restore(cfg.state, tracker_cfg, start)?;
        tracker.set_rate_limits(&cfg.rate);
        let mut policy = policy;
        policy.adopt(&mut tracker);
        if let Some(st) = state.as_mut() {
            policy.restore_silences(st);
        }
        let recovery = match cfg.recovery {
            Some(r) => {
                let path = r.audit.as_ref().map(|a| a.path.clone()).unwrap_or_default();
                Some(Recovery::new(r).map_err(|source| SetupError::Audit { path, source })?)
            }
            None => None,
        };

        eprintln!(
            "varta-watch: listening on {}; threshold {} ms, capacity {}",
            where_.join(", "),
            cfg.threshold_ns / 1_000_000,
            cfg.capacity
        );
        if cfg.socket.is_some() {
            let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            if let Some(q) = qlen.filter(|q| *q < 64) {
                eprintln!(
                    "varta-watch: note: net.unix.max_dgram_qlen is {q}: the socket queues only {q} datagrams, senders get EAGAIN beyond that; for many agents raise it (sysctl -w net.unix.max_dgram_qlen=512)"
                );
            }
        }
        let compat = crate::compat::Runtime::new(&cfg.compat).map_err(SetupError::Heartbeat)?;
        let mut uds_rcvbuf = 0;
        for l in &listeners {
            if let Listener::Unix(u) = l {
                if let Some(bytes) = cfg.compat.uds_rcvbuf {
                    u.set_rcvbuf(bytes);
                }
                uds_rcvbuf = u.rcvbuf().unwrap_or(0) as u64;
            }
        }
        let counters = Counters {
            datagrams: vec![0; listeners.len()],
            by_worker: listeners
                .iter()
                .find_map(|l| match l {
                    Listener::Workers(w) => Some(vec![0; w.len()]),
                    _ => None,
                })
                .unwrap_or_default(),
            ..Counters::default()
        };
        let pace = crate::listener::Pace::new(crate::listener::Pace::unix_room(), cfg.max_hold_ns);
        // Last: opening a hardware watchdog arms it, and a setup error after that would leave
        // it armed with nobody to pet it.
        if let Some(path) = cfg.hw_watchdog.clone() {
            supervisor
                .hw_watchdog(&path)
                .map_err(|source| SetupError::HwWatchdog { path, source })?;
        }
        let mut daemon = Daemon {
            tracker,
            capacity: cfg.capacity,
            listeners,
            batch: RecvBatch::new(),
            outputs: Outputs::new(cfg.format, export, cfg.export_format)
                .map_err(SetupError::Output)?,
            recovery,
            shutdown_grace: cfg.shutdown_grace,
            udp_modes,
            metrics,
            metrics_max_agents: cfg.metrics_max_agents,
            sig_rx,
            term,
            start,
            counters,
            supervisor,
            clock,
            compat,
            uds_rcvbuf,
            state,
            alerts,
            pace,
            hold_until: 0,
            deadline_spin: cfg.deadline_spin_ns,
            policy,
        };
        if let Some(line) = state_notice {
            eprintln!("varta-watch: {line}");
            daemon.outputs.info(&line);
        }
        let anchored = daemon.state.as_ref().and_then(|s| s.restored_anchor);
        let last = daemon.recovery.as_ref().and_then(Recovery::audit_last);
        if let Some(why) = state::audit_anchor_mismatch(anchored, last) {
            let line = format!("ALARM: --recovery-audit-file: {why} since the last snapshot");
            eprintln!("varta-watch: {line}");
            daemon.outputs.info(&line);
            daemon.counters.audit_anchor_mismatches += 1;
        }
        Ok(daemon)
    }

    /// The arguments the observer was started with (without the program name): SIGHUP and
    /// `varta-watch reload` read them, and the file they name, again.
    pub fn set_reload_args(&mut self, argv: Vec<std::ffi::OsString>) {
        self.policy.set_reload_args(argv);
    }
}
