//! The loop itself: sleep in `ppoll` until a datagram, a signal, a scrape or the next
//! deadline; then deadlines first, datagrams bounded per turn, events out at once.

use std::io::{self, Read};
use std::sync::atomic::Ordering;

use rustix::event::{PollFd, PollFlags, Timespec};

use super::{Daemon, MAX_BATCHES_PER_TURN};
use crate::output::Row;
use crate::recovery::{Reason, Recovery};
use crate::tracker::{AgentId, Event, EventKind, Nanos};

impl Daemon {
    pub(super) fn now(&self) -> Nanos {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Drains tracker events to the outputs (and recovery).
    fn drain_events(&mut self) {
        while let Some(ev) = self.tracker.poll_event() {
            self.policy.on_event(&ev, &mut self.tracker);
            let row = Row {
                who: Some(self.policy.who(ev.agent())),
                ..Row::from_event(&ev)
            };
            let now = self.now();
            self.outputs.emit(&row, now);
            self.policy.record(row.json(now));
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
                self.react(&ev, at, agent, reason, status);
            }
        }
    }

    pub(super) fn emit_recovery(&mut self, at: Nanos, agent: AgentId, detail: String) {
        self.counters.recoveries += 1;
        let now = self.now();
        self.outputs.emit(
            &Row::basic(at, EventKind::Recovery.as_str(), agent, None, None, detail),
            now,
        );
    }

    /// Fires due deadlines and emits their events, flushing at once.
    fn fire_due(&mut self, now: Nanos) {
        if matches!(self.tracker.poll_timeout(), Some(d) if d <= now) {
            self.tracker.handle_timeout(now);
            self.drain_events();
            self.outputs.flush();
        }
    }

    /// Drains listener `at`, bounded to [`MAX_BATCHES_PER_TURN`] batches; returns whether the
    /// bound was hit. The one receive path of every kind of listener.
    fn drain(&mut self, at: usize) -> bool {
        for _ in 0..MAX_BATCHES_PER_TURN {
            let n = match self.listeners[at].try_recv(&mut self.batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.counters.recv_errors += 1;
                    return false;
                }
            };
            let now = self.now();
            self.counters.datagrams[at] += n as u64;
            for i in 0..n {
                match self.listeners[at].origin(&self.batch, i) {
                    // A datagram longer than the buffer arrives cut to DGRAM_BUF bytes, still
                    // a wrong length. Acceptance and every rejection are counted inside the
                    // tracker.
                    Some(origin) => {
                        let _ = self
                            .tracker
                            .handle_datagram(now, &origin, self.batch.data(i));
                    }
                    None => self.counters.no_credentials += 1,
                }
            }
            self.drain_events();
            self.fire_due(self.now());
        }
        true
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

    /// The next wake-up: the tracker's or a recovery child's deadline, or the latest turn the
    /// supervisor accepts, whichever is first.
    fn next_deadline(&self) -> Option<Nanos> {
        [
            self.tracker.poll_timeout(),
            self.recovery.as_ref().and_then(Recovery::next_deadline),
            self.supervisor.wake_by(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// `STATUS=` for the service manager.
    fn status_line(&self) -> String {
        let stalled = self
            .tracker
            .agents()
            .filter(|a| a.reported_status() == vlp_core::Status::Stall)
            .count();
        format!("{} agents tracked, {stalled} stalled", self.tracker.len())
    }

    /// Tells the supervisor the loop turned; sends the keep-alive when due.
    fn alive(&mut self) {
        #[cfg(feature = "test-hooks")]
        super::test_hooks::block_while_requested();
        if self.supervisor.turn() {
            let status = self.status_line();
            self.supervisor.ping(&status);
        }
    }

    /// Sleeps until a descriptor is ready or the next deadline. Returns which are ready:
    /// `(signals, scrape, captures, status hub)` (listeners into `ready`); `None` on timeout
    /// or interruption.
    fn wait(&self, ready: &mut Vec<bool>) -> Option<(bool, bool, bool, bool)> {
        let mut fds = Vec::with_capacity(self.listeners.len() + 2);
        fds.push(PollFd::new(&self.sig_rx, PollFlags::IN));
        for l in &self.listeners {
            fds.push(PollFd::new(l, PollFlags::IN));
        }
        if let Some(m) = &self.metrics {
            fds.push(PollFd::from_borrowed_fd(m.fd(), PollFlags::IN));
        }
        // Recovery children's capture pipes: drained whenever readable, so a chatty child
        // never blocks on a full pipe.
        let captures_at = fds.len();
        if let Some(rec) = &self.recovery {
            fds.extend(
                rec.capture_fds()
                    .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN)),
            );
        }
        let hub_at = fds.len();
        fds.push(PollFd::from_borrowed_fd(
            self.policy.wake_fd(),
            PollFlags::IN,
        ));
        let timeout = self.next_deadline().map(|d| {
            let wait = d.saturating_sub(self.now());
            Timespec {
                tv_sec: i64::try_from(wait / 1_000_000_000).unwrap_or(i64::MAX),
                tv_nsec: i64::try_from(wait % 1_000_000_000).unwrap_or(0),
            }
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(n) if n > 0 => {}
            // Timeout (deadline due) or EINTR: back to the top, which fires deadlines.
            _ => return None,
        }
        let is_ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
        ready.clear();
        ready.extend(fds[1..=self.listeners.len()].iter().map(is_ready));
        let scrape = self.metrics.is_some() && is_ready(&fds[captures_at - 1]);
        let captures = fds[captures_at..hub_at].iter().any(is_ready);
        Some((is_ready(&fds[0]), scrape, captures, is_ready(&fds[hub_at])))
    }

    /// Runs until SIGINT or SIGTERM. Returns the process exit status.
    pub fn run(&mut self) -> i32 {
        let mut ready = Vec::with_capacity(self.listeners.len());
        let status = self.status_line();
        self.supervisor.ready(&status);
        loop {
            self.alive();
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
            let Some((signals, scrape, captures, hub)) = self.wait(&mut ready) else {
                self.policy_turn(false);
                continue;
            };

            // 3. Datagrams, bounded per listener per turn.
            let mut busy = false;
            for (at, r) in ready.iter().enumerate() {
                if *r {
                    busy |= self.drain(at);
                }
            }
            if busy {
                self.counters.busy_turns += 1;
            }
            if signals {
                let mut buf = [0u8; 64];
                while matches!((&self.sig_rx).read(&mut buf), Ok(n) if n > 0) {}
                self.reap();
            }
            if captures {
                if let Some(rec) = self.recovery.as_mut() {
                    rec.drain_captures();
                }
            }
            // Classes from /proc, silence commands, status snapshots, reload.
            self.policy_turn(hub);
            // 4. A scrape waits: publish a snapshot (never blocks).
            if scrape && self.metrics.as_ref().is_some_and(|m| m.take_request()) {
                let snap = self.snapshot();
                if let Some(m) = &self.metrics {
                    m.publish(snap);
                }
            }
        }
        self.supervisor.stopping();
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
