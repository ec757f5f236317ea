//! The loop itself: sleep in `ppoll` until a datagram, a signal, a scrape or the next
//! deadline; then deadlines first, datagrams bounded per turn, events out at once.

use std::io::{self, Read};
use std::sync::atomic::Ordering;

use rustix::event::{PollFd, PollFlags, Timespec};

use super::{Daemon, MAX_BATCHES_PER_TURN};
use crate::compat::NsVerdict;
use crate::listener::BATCH;
use crate::output::Row;
use crate::recovery::{Reason, Recovery};
use crate::tracker::{AgentId, Event, EventKind, Nanos, Origin};

impl Daemon {
    pub(super) fn now(&self) -> Nanos {
        self.clock.now()
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
            // A silenced agent's stall or crash raises no alert.
            if self.alerts.is_some() && !self.policy.silences(&ev) {
                // The agent's name, severity and class labels come from its class.
                let facts = self
                    .tracker
                    .agent(ev.agent())
                    .map(|v| self.policy.directory.alert_facts(&v))
                    .unwrap_or_default();
                if let Some(a) = self.alerts.as_mut() {
                    a.handle_event(now, &ev, &facts);
                }
            }
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
        if let Some(a) = self.alerts.as_mut() {
            // Hands the alerts to the delivery thread (never blocks).
            a.flush();
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

    /// Drains the ready listeners round-robin, one `recvmmsg` batch from each in turn, at
    /// most [`MAX_BATCHES_PER_TURN`] rounds; returns whether the bound was hit. A flood on one
    /// listener thus costs the others at most one batch of waiting per batch of theirs.
    fn drain_ready(&mut self, ready: &mut [bool]) -> bool {
        for _ in 0..MAX_BATCHES_PER_TURN {
            let mut more = false;
            for (at, r) in ready.iter_mut().enumerate() {
                if *r {
                    *r = self.drain_batch(at);
                    more |= *r;
                }
            }
            if !more {
                return false;
            }
        }
        true
    }

    /// Takes one batch from listener `at`; returns whether it may hold more. The one receive
    /// path of every kind of listener: each datagram is taken at its kernel receive time
    /// (reading late moves no deadline), and the secure datagrams of the batch are opened
    /// together; acceptance and every rejection are counted inside the tracker. A datagram
    /// longer than the buffer arrives cut to DGRAM_BUF bytes, still a wrong length.
    fn drain_batch(&mut self, at: usize) -> bool {
        if matches!(self.listeners[at], crate::listener::Listener::Workers(_)) {
            return self.drain_opened(at);
        }
        let n = match self.listeners[at].try_recv(&mut self.batch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(_) => {
                self.counters.recv_errors += 1;
                return false;
            }
        };
        let now = self.now();
        self.counters.datagrams[at] += n as u64;
        self.batch.stamp(now);
        let mut items = [(0, Origin::Udp { listener: 0 }, &[][..]); BATCH];
        let mut k = 0;
        for i in 0..n.min(BATCH) {
            self.counters.truncated += u64::from(self.batch.truncated(i));
            let mut origin = self.listeners[at].origin(&self.batch, i);
            if let Some(Origin::Unix { pid, uid }) = origin {
                match self.compat.ns_gate.admit(now, pid) {
                    None => continue,
                    Some(NsVerdict::Cross) => {
                        origin = Some(Origin::UnixOtherNamespace { pid, uid });
                    }
                    Some(_) => {}
                }
            }
            match origin {
                Some(origin) => {
                    items[k] = (self.batch.arrival(i), origin, self.batch.data(i));
                    k += 1;
                }
                None => {
                    self.counters.no_credentials += 1;
                    self.counters.ctrl_truncated += u64::from(self.batch.ctrl_truncated(i));
                }
            }
        }
        let outputs = &mut self.outputs;
        self.tracker.handle_batch(&items[..k], |_, r| {
            if let Err(r) = r {
                outputs.rejected(now, &r);
            }
        });
        self.drain_events();
        self.fire_due(self.now());
        true
    }

    /// Takes one batch a receive worker read and opened ([`crate::listener::Workers`]);
    /// returns whether more may be waiting. The table decides as for any batch.
    fn drain_opened(&mut self, at: usize) -> bool {
        let crate::listener::Listener::Workers(pool) = &self.listeners[at] else {
            return false;
        };
        let Some(mut b) = pool.take() else {
            return false;
        };
        let generation = pool.generation();
        self.take_opened(at, &mut b, generation);
        if let crate::listener::Listener::Workers(pool) = &self.listeners[at] {
            pool.give_back(b);
        }
        self.drain_events();
        self.fire_due(self.now());
        true
    }

    /// Hands one batch of listener `at`'s workers to the table, counted.
    fn take_opened(
        &mut self,
        at: usize,
        b: &mut crate::listener::workers::OpenedBatch,
        generation: u64,
    ) {
        let n = b.len;
        self.counters.datagrams[at] += n as u64;
        self.counters.truncated += b.truncated;
        self.counters.recv_errors += b.recv_errors;
        self.counters.count_worker(b.worker(), n);
        let now = self.now();
        let outputs = &mut self.outputs;
        let (items, opened) = b.split();
        // What was opened under older keys (a reload since) is opened again by the table.
        self.tracker
            .handle_opened(generation, &items[..n], &mut opened[..n], |_, r| {
                if let Err(r) = r {
                    outputs.rejected(now, &r);
                }
            });
    }

    /// Stops the receive workers and hands the table what they had read (a goodbye among it
    /// is not lost to the restart).
    fn stop_workers(&mut self) {
        for at in 0..self.listeners.len() {
            let crate::listener::Listener::Workers(pool) = &mut self.listeners[at] else {
                continue;
            };
            let generation = pool.generation();
            for mut b in pool.shutdown() {
                self.take_opened(at, &mut b, generation);
                self.drain_events();
            }
        }
    }

    /// Datagrams read so far from the listeners a hold-off leaves unread (the Unix socket).
    fn paced_datagrams(&self) -> u64 {
        self.listeners
            .iter()
            .zip(&self.counters.datagrams)
            .filter(|(l, _)| l.paced())
            .map(|(_, n)| n)
            .sum()
    }

    fn reap(&mut self) {
        let now = self.now();
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        if rec.running() == 0 {
            return;
        }
        let done = rec.reap(now);
        for f in done {
            self.emit_recovery(now, f.agent, f.to_string());
        }
    }

    /// Terminates and reaps every recovery child (SIGTERM, grace, SIGKILL to their groups).
    fn stop_recovery(&mut self) {
        let daemon_clock = self.clock;
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        let clock = move || daemon_clock.now();
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
            self.compat.wake_by(),
            self.state.as_ref().map(super::state::StateStore::next_due),
            self.alerts
                .as_ref()
                .and_then(crate::alerting::AlertShell::poll_timeout),
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

    /// Sleeps until a descriptor is ready, the next deadline or the end of a hold-off
    /// ([`crate::listener::Pace`]: the Unix socket is not watched meanwhile). Returns which are
    /// ready: `(signals, scrape, captures, status hub)` (listeners into `ready`); on timeout or
    /// interruption every listener is marked ready, so what arrived before a deadline is read
    /// (at its kernel receive time) before the deadline fires.
    fn wait(&self, ready: &mut Vec<bool>) -> (bool, bool, bool, bool) {
        let hold = self.hold_until > self.now();
        let mut fds = Vec::with_capacity(self.listeners.len() + 2);
        fds.push(PollFd::new(&self.sig_rx, PollFlags::IN));
        for l in &self.listeners {
            let held = hold && l.paced();
            fds.push(PollFd::new(
                l,
                if held {
                    PollFlags::empty()
                } else {
                    PollFlags::IN
                },
            ));
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
        let now = self.now();
        // The last stretch before an agent's deadline is not slept but polled: a timer
        // wake-up is late by more than that on a virtual machine, and a stall is reported
        // the moment it is due (`--deadline-spin-us`). Costs at most that much CPU per
        // deadline the loop gets that close to (whether it fires or a beat moves it).
        let spin_from = self
            .tracker
            .poll_timeout()
            .filter(|_| self.deadline_spin > 0)
            .map(|d| d.saturating_sub(self.deadline_spin));
        let until = [
            self.next_deadline(),
            hold.then_some(self.hold_until),
            spin_from,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = until.map(|d| {
            let wait = d.saturating_sub(now);
            Timespec {
                tv_sec: i64::try_from(wait / 1_000_000_000).unwrap_or(i64::MAX),
                tv_nsec: i64::try_from(wait % 1_000_000_000).unwrap_or(0),
            }
        });
        ready.clear();
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(n) if n > 0 => {}
            // Timeout (deadline due, hold-off over) or EINTR: read every socket, then back to
            // the top, which fires deadlines.
            _ => {
                ready.resize(self.listeners.len(), true);
                return (false, false, false, false);
            }
        }
        let is_ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
        ready.extend(fds[1..=self.listeners.len()].iter().map(is_ready));
        let scrape = self.metrics.is_some() && is_ready(&fds[captures_at - 1]);
        let captures = fds[captures_at..hub_at].iter().any(is_ready);
        (is_ready(&fds[0]), scrape, captures, is_ready(&fds[hub_at]))
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
            self.compat.awake(now);
            self.fire_due(now);
            self.drain_events();
            if let Some(a) = self.alerts.as_mut() {
                a.handle_timeout(now);
                a.flush();
            }
            self.expire_recovery(now);
            self.outputs.flush();
            self.tick_state(now);
            if self.term.load(Ordering::Relaxed) || self.compat.shutdown_due(now) {
                break;
            }

            // 2. Sleep until something happens, the next deadline or a hold-off's end.
            self.compat.asleep(self.now());
            let (signals, scrape, captures, hub) = self.wait(&mut ready);
            self.compat.awake(self.now());

            // 3. Datagrams, round-robin over the ready listeners, bounded per turn; then how
            // long the sockets may wait before the next read (few wake-ups; kernel stamps keep
            // every time).
            let read_before = self.paced_datagrams();
            let busy = self.drain_ready(&mut ready);
            let read = self.paced_datagrams() - read_before;
            let now = self.now();
            self.hold_until = now + self.pace.after_turn(now, read, busy);
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
        self.stop_workers();
        self.supervisor.stopping();
        self.stop_recovery();
        self.finish_state();
        self.outputs.close();
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
