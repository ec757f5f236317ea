//! Recovery: run the operator's program when an agent stalls or crashes, under rules an
//! operator can audit.
//!
//! * **The command** ([`command`]): `--recovery-exec "PROG ARGS…"` (alias `--recovery-cmd`) or
//!   `--recovery-exec-file`, executed directly (no shell) with `{pid}`, `{listener}`,
//!   `{agent}`, `{status}` and `{reason}` substituted.
//! * **Who** ([`policy`]): kernel-attested Unix agents by default; per-agent-key agents, shared
//!   key and plaintext UDP agents only with the operator's opt-ins. Refusals are counted by
//!   [`Refusal`], every decision and completion by [`Outcome`] (one spelling each).
//! * **The child**: its environment is cleared to `PATH=/usr/bin:/bin` plus `--recovery-env`
//!   (or inherited with `--recovery-inherit-env`); stdin is `/dev/null`; stdout and stderr go
//!   to the observer's stderr, or, with `--recovery-capture-stdio`, into one non-blocking pipe
//!   the loop drains whenever it is readable ([`Recovery::capture_fds`]), keeping the first
//!   `--recovery-capture-bytes` and counting the rest, so a chatty child never blocks on a full
//!   pipe and never blocks the loop. It runs in a process group of its own: a child past
//!   `--recovery-timeout-ms` is killed with its whole group (a script's own children go too).
//! * **Shutdown** ([`Recovery::shutdown`]): every running child's group gets `SIGTERM`; after
//!   `--shutdown-grace-ms` (or as soon as every child has exited) every group gets `SIGKILL`,
//!   and every child is reaped, so no child or grandchild that stayed in its group outlives the
//!   observer. (A program that finished normally may leave processes behind on purpose, such as
//!   a restarted service; those are not ours to kill.)
//! * **The audit trail** ([`audit`], [`audit_log`]): with `--recovery-audit-file`, one chained
//!   record per decision; [`verify`] is `varta-watch audit verify`.
//!
//! Runs are debounced per agent and bounded in number; children are reaped without blocking
//! the loop (on `SIGCHLD`). The daemon sleeps no longer than the earliest child deadline
//! ([`Recovery::next_deadline`]).

pub mod audit;
pub mod audit_log;
pub mod command;
pub mod policy;
pub mod settings;
pub mod verify;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use audit_log::{AuditConfig, AuditLog, AuditOpenError};
pub use command::{CommandTemplate, Vars};
pub use policy::{Outcome, Policy, Refusal, Transport};

use crate::tracker::{AgentId, Listener, Nanos};

/// At most this many recovery children at once; more are refused (`outstanding_capacity`).
pub const MAX_RUNNING: usize = 32;
/// Bound on the per-agent debounce table (`debounce_capacity` beyond it).
pub const MAX_DEBOUNCE_ENTRIES: usize = 65_536;
/// Upper bound of `--recovery-capture-bytes`.
pub const MAX_CAPTURE_BYTES: usize = 1 << 20;
/// Default of `--recovery-capture-bytes`.
pub const DEFAULT_CAPTURE_BYTES: usize = 4096;
/// The child's `PATH` when its environment is cleared.
pub const CHILD_PATH: &str = "/usr/bin:/bin";

/// Why recovery is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Silent past its threshold.
    Stall,
    /// Reported a crash (terminal frame that is not a goodbye).
    Crash,
}

impl Reason {
    /// `{reason}`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Stall => "stall",
            Reason::Crash => "crash",
        }
    }
}

/// Settings of the runner (checked by the configuration).
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// The command.
    pub template: CommandTemplate,
    /// Per-agent debounce.
    pub debounce: Nanos,
    /// Child deadline after its start.
    pub timeout: Nanos,
    /// Who may be recovered.
    pub policy: Policy,
    /// `--recovery-env KEY=VALUE`, in order.
    pub env: Vec<(String, String)>,
    /// `--recovery-inherit-env`.
    pub inherit_env: bool,
    /// `--recovery-capture-stdio` with its byte bound.
    pub capture_bytes: Option<usize>,
    /// `--recovery-audit-file` and friends.
    pub audit: Option<AuditConfig>,
}

/// A request for recovery.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who.
    pub agent: AgentId,
    /// How its identity was established.
    pub transport: Transport,
    /// Why.
    pub reason: Reason,
    /// Its last reported status (`{status}`).
    pub status: &'a str,
}

/// What was decided (reported as an event line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A child was started.
    Spawned {
        /// Its pid.
        child: u32,
    },
    /// Not run: recovered less than the debounce interval ago.
    Debounced,
    /// Not run: refused.
    Refused(Refusal),
    /// The program could not be started.
    SpawnFailed(String),
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Spawned { child } => write!(f, "spawned child {child}"),
            Decision::Debounced => f.write_str("not run: debounced"),
            Decision::Refused(r) => write!(f, "not run: refused ({r})"),
            Decision::SpawnFailed(e) => write!(f, "cannot start: {e} (spawn_failed)"),
        }
    }
}

/// What a child captured on stdout+stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first `--recovery-capture-bytes` bytes.
    pub bytes: Vec<u8>,
    /// Everything it wrote (kept or not).
    pub total: u64,
}

/// A finished child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The agent it ran for.
    pub agent: AgentId,
    /// The child's pid.
    pub child: u32,
    /// `reaped_zero`, `reaped_nonzero`, `killed` or `shutdown`.
    pub outcome: Outcome,
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if it was killed.
    pub signal: Option<i32>,
    /// Killed by us at its deadline.
    pub timed_out: bool,
    /// Run time, ns.
    pub duration: Nanos,
    /// Captured output (with `--recovery-capture-stdio`).
    pub captured: Option<Captured>,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "child {} ", self.child)?;
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exited {c}")?,
            (None, Some(s)) => write!(f, "killed by signal {s}")?,
            (None, None) => f.write_str("ended")?,
        }
        if self.timed_out {
            f.write_str(" after its timeout")?;
        }
        write!(f, " ({})", self.outcome)?;
        if let Some(c) = &self.captured {
            write!(
                f,
                " output {}/{} bytes: {:?}",
                c.bytes.len(),
                c.total,
                String::from_utf8_lossy(&c.bytes)
            )?;
        }
        Ok(())
    }
}

/// The read end of a child's capture pipe.
#[derive(Debug)]
struct Capture {
    fd: OwnedFd,
    kept: Vec<u8>,
    total: u64,
    eof: bool,
}

impl Capture {
    /// Reads what is there without blocking (the fd is non-blocking), keeping up to `limit`.
    fn drain(&mut self, limit: usize) {
        let mut scratch = [0u8; 4096];
        while !self.eof {
            match rustix::io::read(&self.fd, &mut scratch) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.total += n as u64;
                    let room = limit.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&scratch[..n.min(room)]);
                }
                Err(rustix::io::Errno::INTR) => {}
                // EAGAIN: empty for now; anything else: give up on this pipe.
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => self.eof = true,
            }
        }
    }
}

#[derive(Debug)]
struct Running {
    agent: AgentId,
    child: Child,
    started: Nanos,
    deadline: Nanos,
    killed: bool,
    capture: Option<Capture>,
}

/// The recovery runner.
#[derive(Debug)]
pub struct Recovery {
    cfg: RecoveryConfig,
    last_run: HashMap<AgentId, Nanos>,
    running: Vec<Running>,
    outcomes: [u64; Outcome::ALL.len()],
    refusals: [u64; Refusal::ALL.len()],
    audit: Option<AuditLog>,
    durations: (u64, u64),
}

/// The recovery figures of a scrape, every label value present even without a recovery
/// command.
#[derive(Debug, Default)]
pub struct RecoveryFigures {
    /// `varta_recovery_outcomes_total{outcome}`.
    pub outcomes: Vec<(&'static str, u64)>,
    /// `varta_recovery_refused_total{reason}`.
    pub refused: Vec<(&'static str, u64)>,
    /// `varta_recovery_audit_dropped_total`.
    pub audit_dropped: u64,
    /// `varta_recovery_audit_over_budget_total{op}`.
    pub audit_over_budget: Vec<(&'static str, u64)>,
    /// Run time of finished children, ns, summed, and their number.
    pub durations: (u64, u64),
}

/// The recovery figures of `r` (zeros without a recovery command).
#[must_use]
pub fn metrics(r: Option<&Recovery>) -> RecoveryFigures {
    let over_budget = r.and_then(|r| r.audit.as_ref()).map_or(
        [
            (audit_log::BUDGETED_OPS[0], 0),
            (audit_log::BUDGETED_OPS[1], 0),
        ],
        AuditLog::over_budget,
    );
    match r {
        Some(r) => RecoveryFigures {
            outcomes: r.outcomes().collect(),
            refused: r.refusals().collect(),
            audit_dropped: r.audit_dropped(),
            audit_over_budget: over_budget.to_vec(),
            durations: r.durations(),
        },
        None => RecoveryFigures {
            outcomes: Outcome::ALL.iter().map(|o| (o.as_str(), 0)).collect(),
            refused: Refusal::ALL.iter().map(|x| (x.as_str(), 0)).collect(),
            audit_dropped: 0,
            audit_over_budget: over_budget.to_vec(),
            durations: (0, 0),
        },
    }
}

fn listener_label(l: Listener) -> String {
    match l {
        Listener::Unix => "unix".to_owned(),
        Listener::Udp(n) => format!("udp{n}"),
    }
}

/// Sends `sig` to the process group led by `child` (it is not reaped yet, so its pid, which is
/// its group id, cannot have been reused); to the child alone if that fails.
fn signal_group(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_child(child);
    if rustix::process::kill_process_group(pid, sig).is_err() {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

fn exited(child: &Child) -> bool {
    use rustix::process::{Pid, WaitId, WaitIdOptions};
    matches!(
        rustix::process::waitid(
            WaitId::Pid(Pid::from_child(child)),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ),
        Ok(Some(_)) | Err(_)
    )
}

impl Recovery {
    /// A runner; opens the audit file if one is configured.
    ///
    /// # Errors
    /// The audit file cannot be used ([`AuditOpenError`]).
    pub fn new(mut cfg: RecoveryConfig) -> Result<Recovery, AuditOpenError> {
        let audit = match cfg.audit.take() {
            Some(a) => Some(AuditLog::open(a)?),
            None => None,
        };
        Ok(Recovery {
            cfg,
            last_run: HashMap::new(),
            running: Vec::new(),
            outcomes: [0; Outcome::ALL.len()],
            refusals: [0; Refusal::ALL.len()],
            audit,
            durations: (0, 0),
        })
    }

    fn record(&mut self, now: Nanos, agent: AgentId, child: Option<u32>, o: Outcome, detail: &str) {
        self.outcomes[o.index()] += 1;
        if let Some(a) = self.audit.as_mut() {
            a.append(now, &agent.to_string(), child, o.as_str(), detail);
        }
    }

    /// `varta_recovery_outcomes_total{outcome}`, every label.
    pub fn outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Outcome::ALL
            .iter()
            .map(|o| (o.as_str(), self.outcomes[o.index()]))
    }

    /// One outcome's count.
    #[must_use]
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes[o.index()]
    }

    /// `varta_recovery_refused_total{reason}`, every label.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL
            .iter()
            .map(|r| (r.as_str(), self.refusals[r.index()]))
    }

    /// `varta_recovery_audit_dropped_total`: decisions that could not be audited.
    #[must_use]
    pub fn audit_dropped(&self) -> u64 {
        self.audit.as_ref().map_or(0, AuditLog::dropped)
    }

    /// The audit chain's last `(seq, hash)`, to anchor it (state file); `None` without audit.
    #[must_use]
    pub fn audit_last(&self) -> Option<(u64, audit::Hash)> {
        self.audit.as_ref().map(AuditLog::last)
    }

    /// Run time of finished children, ns, summed, and their number
    /// (`varta_recovery_duration_ns_sum`, `varta_recovery_duration_count_total`).
    #[must_use]
    pub fn durations(&self) -> (u64, u64) {
        self.durations
    }

    /// Children still running.
    #[must_use]
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Decides on `req` at `now` and starts the program if it may run.
    pub fn trigger(&mut self, now: Nanos, req: &Request<'_>) -> Decision {
        self.trigger_with(now, req, None, None)
    }

    /// [`Recovery::trigger`] with a class's own command and debounce in place of the
    /// configured ones (`None`: the configured one). The transport policy, limits, audit
    /// trail and timeout stay the observer's.
    pub fn trigger_with(
        &mut self,
        now: Nanos,
        req: &Request<'_>,
        template: Option<&CommandTemplate>,
        debounce: Option<Nanos>,
    ) -> Decision {
        let debounce = debounce.unwrap_or(self.cfg.debounce);
        let agent = req.agent;
        let reason = req.reason.as_str();
        let refuse = |me: &mut Recovery, r: Refusal| {
            me.refusals[r.index()] += 1;
            me.record(
                now,
                agent,
                None,
                Outcome::Refused,
                &format!("refusal={r} reason={reason}"),
            );
            Decision::Refused(r)
        };
        if let Err(r) = self.cfg.policy.admit(req.transport) {
            return refuse(self, r);
        }
        if let Some(&last) = self.last_run.get(&agent) {
            if now.saturating_sub(last) < debounce {
                self.record(
                    now,
                    agent,
                    None,
                    Outcome::Debounced,
                    &format!("reason={reason}"),
                );
                return Decision::Debounced;
            }
        }
        if self.running.len() >= MAX_RUNNING {
            return refuse(self, Refusal::OutstandingCapacity);
        }
        if self.last_run.len() >= MAX_DEBOUNCE_ENTRIES && !self.last_run.contains_key(&agent) {
            let debounce = self.cfg.debounce;
            self.last_run
                .retain(|_, t| now.saturating_sub(*t) < debounce);
            if self.last_run.len() >= MAX_DEBOUNCE_ENTRIES {
                return refuse(self, Refusal::DebounceCapacity);
            }
        }
        self.last_run.insert(agent, now);
        let listener = listener_label(agent.listener);
        let agent_text = agent.to_string();
        let argv = template.unwrap_or(&self.cfg.template).render(&Vars {
            pid: agent.pid,
            listener: &listener,
            agent: &agent_text,
            status: req.status,
            reason,
        });
        match self.spawn(&argv) {
            Ok((child, capture)) => {
                let id = child.id();
                self.running.push(Running {
                    agent,
                    child,
                    started: now,
                    deadline: now.saturating_add(self.cfg.timeout),
                    killed: false,
                    capture,
                });
                self.record(
                    now,
                    agent,
                    Some(id),
                    Outcome::Spawned,
                    &format!("reason={reason} program={}", argv[0]),
                );
                Decision::Spawned { child: id }
            }
            Err(e) => {
                let msg = format!("{}: {e}", argv[0]);
                self.record(
                    now,
                    agent,
                    None,
                    Outcome::SpawnFailed,
                    &format!("reason={reason} error={msg}"),
                );
                Decision::SpawnFailed(msg)
            }
        }
    }

    fn spawn(&self, argv: &[String]) -> io::Result<(Child, Option<Capture>)> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null());
        if !self.cfg.inherit_env {
            cmd.env_clear().env("PATH", CHILD_PATH);
        }
        cmd.envs(self.cfg.env.iter().map(|(k, v)| (k, v)));
        let capture = match self.cfg.capture_bytes {
            Some(_) => {
                let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                rustix::fs::fcntl_setfl(&rd, rustix::fs::OFlags::NONBLOCK)?;
                cmd.stdout(Stdio::from(wr.try_clone()?))
                    .stderr(Stdio::from(wr));
                Some(Capture {
                    fd: rd,
                    kept: Vec::new(),
                    total: 0,
                    eof: false,
                })
            }
            None => {
                // stdout carries event lines (possibly JSON): the child's goes to our stderr.
                let err = io::stderr().as_fd().try_clone_to_owned();
                cmd.stdout(err.map_or_else(|_| Stdio::null(), Stdio::from));
                None
            }
        };
        // Its own group: a timeout or shutdown kills what it started too, and a Ctrl-C meant
        // for the observer does not cut a recovery short.
        cmd.process_group(0);
        let child = cmd.spawn()?;
        // `cmd` (and the pipe's write ends it holds) is dropped here: only the child writes.
        Ok((child, capture))
    }

    /// The read ends of the capture pipes, for the loop's poll set.
    pub fn capture_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> + '_ {
        self.running
            .iter()
            .filter_map(|r| r.capture.as_ref())
            .filter(|c| !c.eof)
            .map(|c| c.fd.as_fd())
    }

    /// Reads every capture pipe without blocking (call when one is readable).
    pub fn drain_captures(&mut self) {
        let limit = self.cfg.capture_bytes.unwrap_or(0);
        for r in &mut self.running {
            if let Some(c) = r.capture.as_mut() {
                c.drain(limit);
            }
        }
    }

    /// The earliest deadline of a child not yet killed; `None` if there is none.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.running
            .iter()
            .filter(|r| !r.killed)
            .map(|r| r.deadline)
            .min()
    }

    /// Kills (`SIGKILL`, whole process group) every child past its deadline at `now`; returns
    /// the agent and child pid of each (counted `timed_out`; reaped later by [`Recovery::reap`]).
    pub fn expire(&mut self, now: Nanos) -> Vec<(AgentId, u32)> {
        let mut killed = Vec::new();
        for r in &mut self.running {
            if r.killed || r.deadline > now {
                continue;
            }
            r.killed = true;
            signal_group(&r.child, rustix::process::Signal::KILL);
            killed.push((r.agent, r.child.id()));
        }
        let timeout_ms = self.cfg.timeout / 1_000_000;
        for (agent, child) in &killed {
            self.record(
                now,
                *agent,
                Some(*child),
                Outcome::TimedOut,
                &format!("timeout_ms={timeout_ms} signal=9"),
            );
        }
        killed
    }

    fn finish(
        &mut self,
        now: Nanos,
        mut r: Running,
        status: ExitStatus,
        at_shutdown: bool,
    ) -> Finished {
        let limit = self.cfg.capture_bytes.unwrap_or(0);
        let captured = r.capture.take().map(|mut c| {
            c.drain(limit);
            Captured {
                bytes: c.kept,
                total: c.total,
            }
        });
        let outcome = if at_shutdown {
            Outcome::Shutdown
        } else if status.signal().is_some() {
            Outcome::Killed
        } else if status.success() {
            Outcome::ReapedZero
        } else {
            Outcome::ReapedNonzero
        };
        let f = Finished {
            agent: r.agent,
            child: r.child.id(),
            outcome,
            code: status.code(),
            signal: status.signal(),
            timed_out: r.killed,
            duration: now.saturating_sub(r.started),
            captured,
        };
        let mut detail = match (f.code, f.signal) {
            (Some(c), _) => format!("exit={c}"),
            (None, Some(s)) => format!("signal={s}"),
            (None, None) => "exit=?".to_owned(),
        };
        detail.push_str(&format!(" duration_ms={}", f.duration / 1_000_000));
        if let Some(c) = &f.captured {
            detail.push_str(&format!(
                " captured_bytes={} output_bytes={}",
                c.bytes.len(),
                c.total
            ));
        }
        self.record(now, f.agent, Some(f.child), outcome, &detail);
        self.durations.0 = self.durations.0.saturating_add(f.duration);
        self.durations.1 += 1;
        f
    }

    /// Reaps finished children without blocking; returns them.
    pub fn reap(&mut self, now: Nanos) -> Vec<Finished> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            match self.running[i].child.try_wait() {
                Ok(Some(status)) => {
                    let r = self.running.swap_remove(i);
                    done.push(self.finish(now, r, status, false));
                }
                Ok(None) => i += 1,
                Err(_) => {
                    // Not our child any more (cannot happen: nobody else waits for it).
                    let r = self.running.swap_remove(i);
                    done.push(self.finish(now, r, ExitStatus::from_raw(0xff << 8), false));
                }
            }
        }
        done
    }

    /// Terminates every running child: `SIGTERM` to each process group, up to `grace` for them
    /// to exit, then `SIGKILL` to every group (grandchildren that ignore `SIGTERM` included),
    /// then reaps them all. Blocks for at most `grace` plus the reaping. `clock` gives observer
    /// time for the records.
    pub fn shutdown(&mut self, clock: &dyn Fn() -> Nanos, grace: Duration) -> Vec<Finished> {
        if self.running.is_empty() {
            if let Some(a) = self.audit.as_mut() {
                a.sync();
            }
            return Vec::new();
        }
        for r in &self.running {
            signal_group(&r.child, rustix::process::Signal::TERM);
        }
        let end = Instant::now() + grace;
        while Instant::now() < end && !self.running.iter().all(|r| exited(&r.child)) {
            self.drain_captures();
            std::thread::sleep(Duration::from_millis(10));
        }
        // Every group, even of children that exited: what they left in the group goes too.
        for r in &self.running {
            signal_group(&r.child, rustix::process::Signal::KILL);
        }
        let mut done = Vec::new();
        for mut r in std::mem::take(&mut self.running) {
            let status = r.child.wait().unwrap_or_else(|_| ExitStatus::from_raw(9));
            done.push(self.finish(clock(), r, status, true));
        }
        if let Some(a) = self.audit.as_mut() {
            a.sync();
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cmd: &str, timeout: Nanos) -> RecoveryConfig {
        RecoveryConfig {
            template: CommandTemplate::parse(cmd).unwrap(),
            debounce: 1_000,
            timeout,
            policy: Policy::default(),
            env: Vec::new(),
            inherit_env: false,
            capture_bytes: None,
            audit: None,
        }
    }

    fn req(listener: Listener, transport: Transport) -> Request<'static> {
        Request {
            agent: AgentId {
                listener,
                pid: 7,
                key_class: crate::tracker::KeyClass::None,
            },
            transport,
            reason: Reason::Stall,
            status: "stall",
        }
    }

    fn reap_one(r: &mut Recovery) -> Finished {
        for _ in 0..500 {
            if let Some(f) = r.reap(0).pop() {
                return f;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("child not reaped within 5 s");
    }

    #[test]
    fn debounce_refusal_and_reaping() {
        let mut r = Recovery::new(cfg("/bin/sh -c 'exit 3'", 60_000_000_000)).unwrap();
        let unix = req(Listener::Unix, Transport::UnixAttested);
        let udp = req(Listener::Udp(0), Transport::PlainUdp);
        assert!(matches!(r.trigger(0, &unix), Decision::Spawned { .. }));
        assert_eq!(r.trigger(500, &unix), Decision::Debounced);
        assert_eq!(
            r.trigger(500, &udp),
            Decision::Refused(Refusal::UnauthenticatedTransport)
        );
        let f = reap_one(&mut r);
        assert_eq!((f.code, f.outcome), (Some(3), Outcome::ReapedNonzero));
        assert_eq!(r.outcome(Outcome::ReapedNonzero), 1);
        assert_eq!(r.outcome(Outcome::Debounced), 1);
        assert_eq!(r.outcome(Outcome::Refused), 1);
        let refused: HashMap<_, _> = r.refusals().collect();
        assert_eq!(refused["unauthenticated_transport"], 1);
        assert_eq!(refused["cross_namespace_agent"], 0);
    }

    #[test]
    fn capture_is_bounded_and_counts_everything() {
        let mut c = cfg(
            "/bin/sh -c 'head -c 100000 /dev/zero | tr \"\\0\" x; echo err >&2'",
            60_000_000_000,
        );
        c.capture_bytes = Some(10);
        let mut r = Recovery::new(c).unwrap();
        assert!(matches!(
            r.trigger(0, &req(Listener::Unix, Transport::UnixAttested)),
            Decision::Spawned { .. }
        ));
        // Drain as the loop would, until the child is reaped.
        let mut f = None;
        for _ in 0..500 {
            r.drain_captures();
            if let Some(x) = r.reap(0).pop() {
                f = Some(x);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let f = f.expect("reaped");
        let cap = f.captured.unwrap();
        assert_eq!(cap.bytes, b"xxxxxxxxxx");
        assert_eq!(cap.total, 100_004, "100000 x and 'err\\n' from stderr");
    }

    #[test]
    fn shutdown_kills_a_child_that_ignores_sigterm() {
        let mut r = Recovery::new(cfg(
            "/bin/sh -c 'trap \"\" TERM; while :; do sleep 1; done'",
            60_000_000_000,
        ))
        .unwrap();
        let Decision::Spawned { child } =
            r.trigger(0, &req(Listener::Unix, Transport::UnixAttested))
        else {
            panic!("not spawned");
        };
        std::thread::sleep(Duration::from_millis(100));
        let done = r.shutdown(&|| 5, Duration::from_millis(200));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].child, child);
        assert_eq!(done[0].outcome, Outcome::Shutdown);
        assert_eq!(done[0].signal, Some(9));
        assert!(!std::path::Path::new(&format!("/proc/{child}")).exists());
        assert_eq!(r.running(), 0);
    }
}
