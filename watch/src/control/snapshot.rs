//! The status snapshot: what `varta-watch status`, `/api/agents` and the status page show, and
//! the hub through which the loop hands it to other threads.
//!
//! The loop owns the tracker, the agents' facts and the silences. When a reader wants a fresh
//! view it raises a flag and wakes the loop ([`SnapshotHub::fresh`]); at the end of its turn the
//! loop builds a [`StatusSnapshot`] with [`SnapshotBuilder::build`] and
//! [`SnapshotHub::publish`]es it; readers share it as an `Arc` until the next one replaces it.
//! The loop never waits on a reader, and a snapshot is only built when someone asked.

use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags};
use serde::{Deserialize, Serialize};
use vlp_core::Status;

use crate::policy::silence::{Silence, SilenceSet, UnixMs};
use crate::policy::AgentFacts;
use crate::tracker::{AgentId, AgentState, AgentView, Listener, Nanos};

/// An agent's state as people read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowState {
    /// Silent for its threshold: shown first.
    Stalled,
    /// Sent a crash report.
    Crashed,
    /// Beating, status critical.
    Critical,
    /// Beating, status degraded.
    Degraded,
    /// Beating, status ok.
    Ok,
    /// Said goodbye (clean exit).
    Exited,
}

impl RowState {
    /// The one mapping from the tracker's view to what people read.
    #[must_use]
    pub fn of(state: AgentState, status: Status) -> RowState {
        match state {
            AgentState::Stalled => RowState::Stalled,
            AgentState::Dead { clean: false } => RowState::Crashed,
            AgentState::Dead { clean: true } => RowState::Exited,
            AgentState::Alive => match status {
                Status::Ok => RowState::Ok,
                Status::Degraded => RowState::Degraded,
                Status::Critical | Status::Stall => RowState::Critical,
            },
        }
    }

    /// The lower-case name (`ok`, `degraded`, `critical`, `stalled`, `crashed`, `exited`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            RowState::Stalled => "stalled",
            RowState::Crashed => "crashed",
            RowState::Critical => "critical",
            RowState::Degraded => "degraded",
            RowState::Ok => "ok",
            RowState::Exited => "exited",
        }
    }
}

/// One agent as `/api/agents` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRow {
    /// Its pid.
    pub pid: u32,
    /// Its display name, if known.
    pub name: Option<String>,
    /// `unix` or `udpN`.
    pub listener: String,
    /// Its class.
    pub class: String,
    /// Its state.
    pub state: RowState,
    /// Whether a silence applies to it now.
    pub silenced: bool,
    /// The silence's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_id: Option<u64>,
    /// Milliseconds since its last accepted beat, when the snapshot was taken.
    pub last_beat_age_ms: u64,
    /// Payload of its last frame.
    pub payload: u32,
    /// Regular beats accepted (all sessions).
    pub beats: u64,
    /// Beats per second over the last second or two (absent on the first snapshot).
    #[serde(default)]
    pub rate_per_s: Option<f64>,
    /// Its systemd unit, if known.
    #[serde(default)]
    pub unit: Option<String>,
}

/// The state of every agent (bounded) and the silences in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Wall-clock time it was taken.
    pub generated_at_ms: UnixMs,
    /// Observer time it was taken.
    pub observer_ns: Nanos,
    /// Agents tracked in all (rows may be fewer, see [`SnapshotBuilder::new`]).
    pub total_agents: usize,
    /// Stalled first, then crashed, critical, degraded, ok, exited; within a state the longest
    /// silent first, then by pid.
    pub agents: Vec<AgentRow>,
    /// Silences in force, soonest to end first.
    pub silences: Vec<Silence>,
    /// Class names, the default first.
    pub classes: Vec<String>,
}

type RankKey = (RowState, std::cmp::Reverse<Nanos>, u32, Listener);

/// An agent with its place in the snapshot's order (compared by the key alone).
struct Ranked(RankKey, AgentView);

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.0 == other.0
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// Builds snapshots; remembers each agent's beat count a second ago for the rate column.
#[derive(Debug)]
pub struct SnapshotBuilder {
    max_rows: usize,
    /// Beat count and observer time of the previous sample per agent (only agents of the last
    /// build: bounded by the tracker's table).
    prev: HashMap<AgentId, (u64, Nanos)>,
}

/// Rate samples younger than this are kept, not replaced, so the rate spans 1-2 s.
const RATE_WINDOW_NS: Nanos = 1_000_000_000;

impl SnapshotBuilder {
    /// A builder that keeps at most `max_rows` agent rows per snapshot (the most urgent ones).
    #[must_use]
    pub fn new(max_rows: usize) -> SnapshotBuilder {
        SnapshotBuilder {
            max_rows,
            prev: HashMap::new(),
        }
    }

    /// Builds a snapshot from the tracker's views. `facts` gives what is known about an agent,
    /// its class included ([`AgentFacts::class`]); `now_ns` is observer time, `now_ms` wall
    /// clock. Cost O(agents) plus O(rows × silences); facts are looked up for kept rows only.
    pub fn build(
        &mut self,
        now_ns: Nanos,
        now_ms: UnixMs,
        views: impl Iterator<Item = AgentView>,
        mut facts: impl FnMut(AgentId) -> Option<AgentFacts>,
        silences: &SilenceSet,
        classes: Vec<String>,
    ) -> StatusSnapshot {
        // The `max_rows` most urgent agents, kept in a bounded max-heap whose top is the least
        // urgent kept: most agents are refused with one comparison, nothing is allocated per
        // agent, and the cost stays O(agents) even at a million.
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(self.max_rows.min(65_536));
        let mut total = 0usize;
        for v in views {
            total += 1;
            if self.max_rows == 0 {
                continue;
            }
            let age = now_ns.saturating_sub(v.last_beat);
            let key = (
                RowState::of(v.state, v.status),
                std::cmp::Reverse(age),
                v.id.pid,
                v.id.listener,
            );
            if heap.len() < self.max_rows {
                heap.push(Ranked(key, v));
            } else if heap.peek().is_some_and(|top| key < top.0) {
                heap.pop();
                heap.push(Ranked(key, v));
            }
        }
        let all = heap.into_sorted_vec();

        let mut next_prev = HashMap::with_capacity(all.len());
        let default_class = classes.first().cloned().unwrap_or_default();
        let agents = all
            .into_iter()
            .map(|Ranked((state, std::cmp::Reverse(age), _, _), v)| {
                let f = facts(v.id).unwrap_or_else(|| AgentFacts::basic(v.id));
                let silence_id = silences.is_silenced(&f, now_ms);
                let (rate, sample) = match self.prev.get(&v.id) {
                    Some(&(beats, at)) if now_ns > at && v.beats >= beats => {
                        let rate = (v.beats - beats) as f64 * 1e9 / (now_ns - at) as f64;
                        let keep = now_ns - at < RATE_WINDOW_NS;
                        (
                            Some(rate),
                            if keep { (beats, at) } else { (v.beats, now_ns) },
                        )
                    }
                    _ => (None, (v.beats, now_ns)),
                };
                next_prev.insert(v.id, sample);
                AgentRow {
                    pid: v.id.pid,
                    name: f.name.clone(),
                    listener: f.listener.clone(),
                    class: f.class.clone().unwrap_or_else(|| default_class.clone()),
                    state,
                    silenced: silence_id.is_some(),
                    silence_id,
                    last_beat_age_ms: age / 1_000_000,
                    payload: v.payload,
                    beats: v.beats,
                    rate_per_s: rate,
                    unit: f.unit,
                }
            })
            .collect();
        self.prev = next_prev;
        StatusSnapshot {
            generated_at_ms: now_ms,
            observer_ns: now_ns,
            total_agents: total,
            agents,
            silences: silences.list(now_ms),
            classes,
        }
    }
}

/// A snapshot younger than this is handed out without asking the loop for a new one: however
/// many readers poll, the loop builds at most a few snapshots a second.
pub const FRESH_ENOUGH: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Published {
    generation: u64,
    at: Option<Instant>,
    snap: Arc<StatusSnapshot>,
}

/// Hands snapshots from the loop to readers on other threads.
#[derive(Debug)]
pub struct SnapshotHub {
    current: Mutex<Published>,
    published: Condvar,
    wanted: AtomicBool,
    wake: OwnedFd,
    fresh_enough: Duration,
}

impl SnapshotHub {
    /// A hub holding an empty snapshot, handing out snapshots younger than [`FRESH_ENOUGH`]
    /// without asking the loop.
    ///
    /// # Errors
    /// Creating the eventfd failed.
    pub fn new() -> io::Result<SnapshotHub> {
        SnapshotHub::with_fresh_enough(FRESH_ENOUGH)
    }

    /// A hub with its own [`FRESH_ENOUGH`].
    ///
    /// # Errors
    /// Creating the eventfd failed.
    pub fn with_fresh_enough(fresh_enough: Duration) -> io::Result<SnapshotHub> {
        Ok(SnapshotHub {
            fresh_enough,
            current: Mutex::new(Published {
                generation: 0,
                at: None,
                snap: Arc::new(StatusSnapshot::default()),
            }),
            published: Condvar::new(),
            wanted: AtomicBool::new(false),
            wake: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    /// The eventfd the loop polls: readable when a reader wants a snapshot or a control command
    /// waits ([`SnapshotHub::wake`]).
    #[must_use]
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Wakes the loop (a snapshot is wanted or a command waits).
    pub fn wake(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// For the loop: clears the eventfd and tells whether a snapshot is wanted.
    pub fn take_wanted(&self) -> bool {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut buf);
        self.wanted.swap(false, Ordering::AcqRel)
    }

    /// For the loop: replaces the snapshot and wakes readers waiting for it.
    pub fn publish(&self, snap: StatusSnapshot) {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        cur.generation = cur.generation.wrapping_add(1);
        cur.at = Some(Instant::now());
        cur.snap = Arc::new(snap);
        drop(cur);
        self.published.notify_all();
    }

    /// Marks the latest snapshot out of date (the silences changed): the next
    /// [`SnapshotHub::fresh`] asks the loop for a new one however young it is.
    pub fn invalidate(&self) {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .at = None;
    }

    /// The latest snapshot, however old.
    #[must_use]
    pub fn latest(&self) -> Arc<StatusSnapshot> {
        Arc::clone(
            &self
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snap,
        )
    }

    /// The latest snapshot if it is young enough ([`FRESH_ENOUGH`]); else asks the loop for a
    /// new one and waits up to `wait` for it, and if none comes in time, the latest one.
    #[must_use]
    pub fn fresh(&self, wait: Duration) -> Arc<StatusSnapshot> {
        let deadline = Instant::now() + wait;
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if cur.at.is_some_and(|t| t.elapsed() < self.fresh_enough) {
            return Arc::clone(&cur.snap);
        }
        let seen = cur.generation;
        self.wanted.store(true, Ordering::Release);
        self.wake();
        while cur.generation == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            cur = self
                .published
                .wait_timeout(cur, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Arc::clone(&cur.snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::silence::Matcher;

    fn view(
        pid: u32,
        state: AgentState,
        status: Status,
        last_beat: Nanos,
        beats: u64,
    ) -> AgentView {
        AgentView {
            id: AgentId::unix(pid),
            status,
            state,
            beats,
            stalls: 0,
            last_beat,
            nonce: beats,
            payload: pid * 10,
            secure: false,
        }
    }

    #[test]
    fn states_map_once() {
        use AgentState::*;
        assert_eq!(RowState::of(Stalled, Status::Ok), RowState::Stalled);
        assert_eq!(
            RowState::of(Dead { clean: false }, Status::Critical),
            RowState::Crashed
        );
        assert_eq!(
            RowState::of(Dead { clean: true }, Status::Critical),
            RowState::Exited
        );
        assert_eq!(RowState::of(Alive, Status::Ok), RowState::Ok);
        assert_eq!(RowState::of(Alive, Status::Degraded), RowState::Degraded);
        assert_eq!(RowState::of(Alive, Status::Critical), RowState::Critical);
        assert_eq!(
            serde_json::to_string(&RowState::Stalled).unwrap(),
            "\"stalled\""
        );
        assert_eq!(RowState::Exited.name(), "exited");
    }

    #[test]
    fn rows_are_ordered_urgent_first_and_bounded() {
        let s = 1_000_000_000;
        let views = vec![
            view(1, AgentState::Alive, Status::Ok, 10 * s, 100),
            view(2, AgentState::Stalled, Status::Ok, 5 * s, 50),
            view(
                3,
                AgentState::Dead { clean: false },
                Status::Critical,
                9 * s,
                7,
            ),
            view(4, AgentState::Stalled, Status::Ok, 2 * s, 20),
            view(5, AgentState::Alive, Status::Degraded, 10 * s, 100),
            view(
                6,
                AgentState::Dead { clean: true },
                Status::Critical,
                9 * s,
                7,
            ),
        ];
        let mut b = SnapshotBuilder::new(100);
        let snap = b.build(
            10 * s + 500_000_000,
            1_000,
            views.clone().into_iter(),
            |_| None,
            &SilenceSet::new(),
            vec!["default".into()],
        );
        let order: Vec<(u32, RowState)> = snap.agents.iter().map(|r| (r.pid, r.state)).collect();
        assert_eq!(
            order,
            vec![
                (4, RowState::Stalled), // silent longest
                (2, RowState::Stalled),
                (3, RowState::Crashed),
                (5, RowState::Degraded),
                (1, RowState::Ok),
                (6, RowState::Exited),
            ]
        );
        assert_eq!(snap.agents[0].last_beat_age_ms, 8_500);
        assert_eq!(snap.agents[0].class, "default");
        assert_eq!(snap.agents[0].payload, 40);
        assert_eq!(snap.agents[0].rate_per_s, None);
        assert_eq!(snap.total_agents, 6);

        let mut small = SnapshotBuilder::new(2);
        let snap = small.build(
            10 * s,
            1_000,
            views.into_iter(),
            |_| None,
            &SilenceSet::new(),
            vec![],
        );
        assert_eq!(
            snap.agents.iter().map(|r| r.pid).collect::<Vec<_>>(),
            vec![4, 2]
        );
        assert_eq!(snap.total_agents, 6);
    }

    #[test]
    fn rate_silence_and_facts() {
        let s = 1_000_000_000;
        let mut b = SnapshotBuilder::new(10);
        let mut silences = SilenceSet::new();
        let id = silences
            .add(
                5_000,
                vec!["unit=backup.service".parse::<Matcher>().unwrap()],
                60_000,
                "maintenance".into(),
            )
            .unwrap()
            .id;
        let facts = |a: AgentId| {
            (a.pid == 1).then(|| AgentFacts {
                pid: 1,
                listener: "unix".into(),
                unit: Some("backup.service".into()),
                name: Some("backup.service".into()),
                class: Some("batch".into()),
                ..AgentFacts::default()
            })
        };
        let v = |beats, t| {
            vec![
                view(1, AgentState::Alive, Status::Ok, t, beats),
                view(2, AgentState::Alive, Status::Ok, t, beats),
            ]
        };
        let first = b.build(s, 5_000, v(10, s).into_iter(), facts, &silences, vec![]);
        assert_eq!(first.agents[0].rate_per_s, None);
        let second = b.build(
            3 * s,
            7_000,
            v(30, 3 * s).into_iter(),
            facts,
            &silences,
            vec![],
        );
        let row1 = second.agents.iter().find(|r| r.pid == 1).unwrap();
        let row2 = second.agents.iter().find(|r| r.pid == 2).unwrap();
        assert_eq!(row1.rate_per_s, Some(10.0));
        assert!(row1.silenced);
        assert_eq!(row1.silence_id, Some(id));
        assert_eq!(row1.name.as_deref(), Some("backup.service"));
        assert_eq!(row1.class, "batch");
        assert!(!row2.silenced);
        assert_eq!(row2.name, None);
        assert_eq!(second.silences.len(), 1);
        // After the silence ends the agent is no longer silenced.
        let third = b.build(
            4 * s,
            65_000,
            v(40, 4 * s).into_iter(),
            facts,
            &silences,
            vec![],
        );
        assert!(third.agents.iter().all(|r| !r.silenced));
        assert!(third.silences.is_empty());
    }

    #[test]
    fn hub_hands_fresh_snapshots_to_readers() {
        // Anything published counts as fresh for an hour, so the end of this test does not
        // depend on how fast the machine is.
        let hub = Arc::new(SnapshotHub::with_fresh_enough(Duration::from_secs(3600)).unwrap());
        assert!(!hub.take_wanted());
        assert_eq!(hub.latest().observer_ns, 0);
        // No loop answers: the reader gets the old snapshot after its wait.
        assert_eq!(hub.fresh(Duration::from_millis(20)).observer_ns, 0);
        assert!(hub.take_wanted());

        let loop_hub = Arc::clone(&hub);
        let looper = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let fd = loop_hub.wake_fd();
                let mut fds = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::IN,
                )];
                let _ = rustix::event::poll(&mut fds, None);
                if loop_hub.take_wanted() {
                    loop_hub.publish(StatusSnapshot {
                        observer_ns: 42,
                        ..StatusSnapshot::default()
                    });
                    return true;
                }
            }
            false
        });
        let got = hub.fresh(Duration::from_secs(10));
        assert_eq!(got.observer_ns, 42);
        assert!(looper.join().unwrap());
        assert_eq!(hub.latest().observer_ns, 42);
        // Young enough: handed out again without waking the loop.
        assert_eq!(hub.fresh(Duration::from_secs(10)).observer_ns, 42);
        assert!(!hub.take_wanted());
    }
}
