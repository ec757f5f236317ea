//! The sans-I/O part of direct delivery: which alerts are active, what to send and when.
//!
//! [`AlertBook`] is fed the tracker's [`Event`]s (with what the shell knows of the agent, an
//! [`AgentFacts`]) and the time ([`Now`]); it keeps one active alert per agent, and hands out
//! batches of [`Alert`]s to post ([`AlertBook::poll_batch`]): a firing alert the moment an
//! agent stalls or crashes, a resolved one (`endsAt` = now) when it recovers, exits, restarts or
//! is forgotten, and every active alert again each resend interval
//! ([`AlertBook::handle_timeout`], [`AlertBook::poll_timeout`]), because Alertmanager resolves
//! alerts that stop coming.
//!
//! Labels identify the agent, never the observer (`alertname`, `agent`, `pid`, `severity` and
//! the agent's class labels), so the same agent reported by several observers is one alert in
//! Alertmanager; the observer, listener, last beat, silence and last status/payload are
//! annotations.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vlp_core::Status;

use crate::tracker::{AgentId, AgentView, Event, Listener, Nanos};

/// `alertname` of a stalled agent.
pub const ALERT_STALLED: &str = "VartaAgentStalled";
/// `alertname` of a crashed agent.
pub const ALERT_CRASHED: &str = "VartaAgentCrashed";
/// Labels this module sets itself; class labels of the same name are ignored.
pub const RESERVED_LABELS: [&str; 4] = ["alertname", "agent", "pid", "severity"];
/// A firing alert is valid for this many resend intervals (its `endsAt`): an observer that dies
/// stops re-sending, and Alertmanager resolves its alerts after that long (the observer's own
/// absence is `VartaObserverDown`'s business). Prometheus uses the same factor.
pub const VALIDITY_RESENDS: u32 = 4;
/// Alerts in one batch (one POST) at most: a resend of many active alerts is split, so no
/// request body grows with the fleet (1,000 alerts are a few hundred kilobytes of JSON).
pub const MAX_BATCH: usize = 1000;

/// The time, as the shell read it: the observer's monotonic clock (the tracker's [`Nanos`]) and
/// the wall clock (Alertmanager's timestamps are wall-clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Observer time, the same clock as the tracker's events.
    pub mono: Nanos,
    /// Wall-clock time.
    pub wall: SystemTime,
}

impl Now {
    /// Wall-clock time of the observer time `t` (at or before `self.mono`).
    #[must_use]
    pub fn wall_at(&self, t: Nanos) -> SystemTime {
        let back = Duration::from_nanos(self.mono.saturating_sub(t));
        // Never before 1970: the timestamps are formatted as RFC 3339.
        self.wall
            .checked_sub(back)
            .filter(|t| *t >= UNIX_EPOCH)
            .unwrap_or(UNIX_EPOCH)
    }
}

/// What the shell knows of an agent beyond the event: its name and class (from the policy), and
/// its last wire status and payload (from the tracker's view of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFacts {
    /// Name (unit, comm or configured); the `agent` label is the name when there is one, else
    /// the identity (`unix:PID`, `udpN:PID`).
    pub name: Option<String>,
    /// `severity` label; `critical` when unset.
    pub severity: Option<String>,
    /// The class's extra labels (reserved names are ignored).
    pub class_labels: Vec<(String, String)>,
    /// Last wire status.
    pub status: Option<Status>,
    /// Payload of the last accepted frame.
    pub payload: Option<u32>,
}

impl AgentFacts {
    /// The tracker's view of the agent: its last wire status and payload (name, severity and
    /// class labels are the policy's to add).
    #[must_use]
    pub fn from_view(view: &AgentView) -> AgentFacts {
        AgentFacts {
            status: Some(view.status),
            payload: Some(view.payload),
            ..AgentFacts::default()
        }
    }
}

/// One alert as Alertmanager's `POST /api/v2/alerts` takes it (see [`super::wire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Identity of the alert.
    pub labels: BTreeMap<String, String>,
    /// Details.
    pub annotations: BTreeMap<String, String>,
    /// When the condition began.
    pub starts_at: SystemTime,
    /// In the past or now: resolved. In the future: firing, valid until then.
    pub ends_at: SystemTime,
}

impl Alert {
    /// The `alertname` label.
    #[must_use]
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// Whether this copy resolves the alert (`endsAt` not after `at`).
    #[must_use]
    pub fn is_resolved_at(&self, at: SystemTime) -> bool {
        self.ends_at <= at
    }
}

/// Why an agent's alert ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Recovered,
    Exited,
    Crashed,
    Restarted,
    Forgotten,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            End::Recovered => "recovered",
            End::Exited => "exited",
            End::Crashed => "crashed",
            End::Restarted => "restarted",
            End::Forgotten => "forgotten",
        }
    }
}

/// The sans-I/O alert book (see the module docs).
#[derive(Debug)]
pub struct AlertBook {
    observer: String,
    resend: Nanos,
    capacity: usize,
    active: BTreeMap<AgentId, Alert>,
    outbox: VecDeque<Alert>,
    next_resend: Option<Nanos>,
    refused: u64,
}

impl AlertBook {
    /// A book for the observer named `observer` (host name or instance; an annotation), which
    /// re-sends active alerts every `resend` and holds at most `capacity` active alerts (past
    /// that, new alerts are refused and counted in [`AlertBook::refused`]).
    #[must_use]
    pub fn new(observer: impl Into<String>, resend: Duration, capacity: usize) -> AlertBook {
        AlertBook {
            observer: observer.into(),
            resend: u64::try_from(resend.as_nanos()).unwrap_or(u64::MAX).max(1),
            capacity,
            active: BTreeMap::new(),
            outbox: VecDeque::new(),
            next_resend: None,
            refused: 0,
        }
    }

    /// Takes one tracker event. Events that change nothing about alerts are ignored.
    pub fn handle_event(&mut self, now: Now, event: &Event, facts: &AgentFacts) {
        match *event {
            Event::Stalled {
                agent, last_beat, ..
            } => {
                self.fire(now, agent, ALERT_STALLED, (last_beat, event.at()), facts);
            }
            Event::Died {
                agent,
                clean: false,
                at,
                ..
            } => {
                self.resolve(now, agent, End::Crashed);
                self.fire(now, agent, ALERT_CRASHED, (at, at), facts);
            }
            Event::Died {
                agent, clean: true, ..
            } => self.resolve(now, agent, End::Exited),
            Event::Recovered { agent, .. } => self.resolve(now, agent, End::Recovered),
            Event::SessionRestart { agent, .. } | Event::NewAgent { agent, .. } => {
                self.resolve(now, agent, End::Restarted);
            }
            Event::Evicted { agent, .. } => self.resolve(now, agent, End::Forgotten),
            Event::StatusChanged { .. } => {}
        }
    }

    /// Re-sends every active alert if the resend interval has passed.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.next_resend.is_some_and(|t| t <= now.mono) {
            let ends = self.valid_until(now);
            for a in self.active.values_mut() {
                a.ends_at = ends;
                self.outbox.push_back(a.clone());
            }
            self.schedule(now);
        }
    }

    /// When [`AlertBook::handle_timeout`] wants to run next (`None`: no active alert).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.next_resend
    }

    /// Alerts to post (at most [`MAX_BATCH`]), in the order they arose; `None` when there is
    /// nothing to send. Call until `None`.
    pub fn poll_batch(&mut self) -> Option<Vec<Alert>> {
        if self.outbox.is_empty() {
            None
        } else {
            let n = self.outbox.len().min(MAX_BATCH);
            Some(self.outbox.drain(..n).collect())
        }
    }

    /// Active (firing) alerts.
    #[must_use]
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Alerts refused because `capacity` alerts were active.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn valid_until(&self, now: Now) -> SystemTime {
        let validity =
            Duration::from_nanos(self.resend.saturating_mul(u64::from(VALIDITY_RESENDS)));
        now.wall.checked_add(validity).unwrap_or(now.wall)
    }

    fn schedule(&mut self, now: Now) {
        self.next_resend = if self.active.is_empty() {
            None
        } else {
            Some(now.mono.saturating_add(self.resend))
        };
    }

    /// `times`: the agent's last frame and the moment the condition began (observer time).
    fn fire(
        &mut self,
        now: Now,
        agent: AgentId,
        name: &str,
        times: (Nanos, Nanos),
        facts: &AgentFacts,
    ) {
        let (since, began) = times;
        if !self.active.contains_key(&agent) && self.active.len() >= self.capacity {
            self.refused += 1;
            return;
        }
        let identity = agent.to_string();
        let mut labels = BTreeMap::new();
        for (k, v) in &facts.class_labels {
            if !RESERVED_LABELS.contains(&k.as_str()) {
                labels.insert(k.clone(), v.clone());
            }
        }
        labels.insert("alertname".into(), name.into());
        labels.insert(
            "agent".into(),
            facts.name.clone().unwrap_or_else(|| identity.clone()),
        );
        labels.insert("pid".into(), agent.pid.to_string());
        labels.insert(
            "severity".into(),
            facts.severity.clone().unwrap_or_else(|| "critical".into()),
        );
        let listener = match agent.listener {
            Listener::Unix => "unix".to_string(),
            Listener::Udp(n) => format!("udp{n}"),
        };
        let last_beat = now.wall_at(since);
        let silence = Duration::from_millis(now.mono.saturating_sub(since) / 1_000_000);
        let mut annotations = BTreeMap::new();
        annotations.insert("observer".into(), self.observer.clone());
        annotations.insert("listener".into(), listener);
        annotations.insert("identity".into(), identity.clone());
        annotations.insert("last_beat".into(), super::wire::rfc3339(last_beat));
        annotations.insert(
            "silence".into(),
            humantime::format_duration(silence).to_string(),
        );
        if let Some(s) = facts.status {
            annotations.insert("last_status".into(), status_name(s).into());
        }
        if let Some(p) = facts.payload {
            annotations.insert("last_payload".into(), p.to_string());
        }
        let what = if name == ALERT_CRASHED {
            "crashed"
        } else {
            "stalled"
        };
        annotations.insert(
            "summary".into(),
            format!(
                "Agent {} {what} (seen by {})",
                labels["agent"], self.observer
            ),
        );
        let alert = Alert {
            labels,
            annotations,
            starts_at: now.wall_at(began),
            ends_at: self.valid_until(now),
        };
        self.outbox.push_back(alert.clone());
        self.active.insert(agent, alert);
        if self.next_resend.is_none() {
            self.schedule(now);
        }
    }

    fn resolve(&mut self, now: Now, agent: AgentId, why: End) {
        if let Some(mut a) = self.active.remove(&agent) {
            a.ends_at = now.wall;
            a.annotations
                .insert("resolved_by".into(), why.label().into());
            self.outbox.push_back(a);
            if self.active.is_empty() {
                self.next_resend = None;
            }
        }
    }
}

/// The status's lower-case name as the event lines spell it.
fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Degraded => "degraded",
        Status::Critical => "critical",
        Status::Stall => "stall",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    fn at(mono: Nanos) -> Now {
        Now {
            mono,
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_nanos(mono),
        }
    }

    fn unix(pid: u32) -> AgentId {
        AgentId::unix(pid)
    }

    fn stalled(agent: AgentId, now: Nanos, last_beat: Nanos) -> Event {
        Event::Stalled {
            at: now,
            agent,
            last_beat,
            nonce: 9,
        }
    }

    fn book() -> AlertBook {
        AlertBook::new("host-a", Duration::from_secs(30), 4)
    }

    #[test]
    fn stall_fires_one_alert_naming_the_agent_not_the_observer() {
        let mut b = book();
        let facts = AgentFacts {
            status: Some(Status::Degraded),
            payload: Some(77),
            ..AgentFacts::default()
        };
        b.handle_event(at(11 * SEC), &stalled(unix(42), 11 * SEC, 10 * SEC), &facts);
        let batch = b.poll_batch().unwrap();
        assert_eq!(batch.len(), 1);
        let a = &batch[0];
        let labels: Vec<(&str, &str)> = a
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("agent", "unix:42"),
                ("alertname", "VartaAgentStalled"),
                ("pid", "42"),
                ("severity", "critical"),
            ]
        );
        assert_eq!(a.annotations["observer"], "host-a");
        assert_eq!(a.annotations["listener"], "unix");
        assert_eq!(a.annotations["silence"], "1s");
        assert_eq!(a.annotations["last_status"], "degraded");
        assert_eq!(a.annotations["last_payload"], "77");
        assert_eq!(a.annotations["last_beat"], "2023-11-14T22:13:30.000Z");
        assert_eq!(a.starts_at, at(11 * SEC).wall);
        assert_eq!(a.ends_at, at(11 * SEC).wall + Duration::from_secs(120));
        assert!(!a.is_resolved_at(at(11 * SEC).wall));
        assert!(b.poll_batch().is_none());
        assert_eq!(b.active(), 1);
    }

    #[test]
    fn name_severity_and_class_labels_but_reserved_names_stay_ours() {
        let mut b = book();
        let facts = AgentFacts {
            name: Some("backup.service".into()),
            severity: Some("warning".into()),
            class_labels: vec![
                ("team".into(), "storage".into()),
                ("pid".into(), "1".into()),
                ("alertname".into(), "Other".into()),
            ],
            ..AgentFacts::default()
        };
        let udp = AgentId::udp(1, crate::tracker::KeyClass::None, 7);
        b.handle_event(at(2 * SEC), &stalled(udp, 2 * SEC, SEC), &facts);
        let a = &b.poll_batch().unwrap()[0];
        assert_eq!(a.labels["agent"], "backup.service");
        assert_eq!(a.labels["severity"], "warning");
        assert_eq!(a.labels["team"], "storage");
        assert_eq!(a.labels["pid"], "7");
        assert_eq!(a.labels["alertname"], ALERT_STALLED);
        assert_eq!(a.annotations["listener"], "udp1");
        assert_eq!(a.annotations["identity"], "udp1:7");
    }

    #[test]
    fn recovery_resolves_with_the_same_labels_and_ends_now() {
        let mut b = book();
        let f = AgentFacts::default();
        b.handle_event(at(2 * SEC), &stalled(unix(1), 2 * SEC, SEC), &f);
        let firing = b.poll_batch().unwrap().remove(0);
        let rec = Event::Recovered {
            at: 5 * SEC,
            agent: unix(1),
            silent_for: 4 * SEC,
        };
        b.handle_event(at(5 * SEC), &rec, &f);
        let resolved = b.poll_batch().unwrap().remove(0);
        assert_eq!(resolved.labels, firing.labels);
        assert_eq!(resolved.starts_at, firing.starts_at);
        assert_eq!(resolved.ends_at, at(5 * SEC).wall);
        assert!(resolved.is_resolved_at(at(5 * SEC).wall));
        assert_eq!(resolved.annotations["resolved_by"], "recovered");
        assert_eq!(b.active(), 0);
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn crash_replaces_a_stall_and_a_restart_resolves_the_crash() {
        let mut b = book();
        let f = AgentFacts::default();
        b.handle_event(at(2 * SEC), &stalled(unix(3), 2 * SEC, SEC), &f);
        let crash = Event::Died {
            at: 3 * SEC,
            agent: unix(3),
            clean: false,
            payload: 139,
        };
        b.handle_event(at(3 * SEC), &crash, &f);
        let batch = b.poll_batch().unwrap();
        let names: Vec<(&str, bool)> = batch
            .iter()
            .map(|a| (a.name(), a.is_resolved_at(at(3 * SEC).wall)))
            .collect();
        assert_eq!(
            names,
            [
                (ALERT_STALLED, false),
                (ALERT_STALLED, true),
                (ALERT_CRASHED, false)
            ]
        );
        assert_eq!(batch[1].annotations["resolved_by"], "crashed");
        let restart = Event::SessionRestart {
            at: 9 * SEC,
            agent: unix(3),
            nonce: 0,
        };
        b.handle_event(at(9 * SEC), &restart, &f);
        let r = b.poll_batch().unwrap().remove(0);
        assert_eq!(
            (r.name(), r.is_resolved_at(at(9 * SEC).wall)),
            (ALERT_CRASHED, true)
        );
        assert_eq!(r.annotations["resolved_by"], "restarted");
    }

    #[test]
    fn clean_exit_and_eviction_resolve_other_events_do_nothing() {
        let mut b = book();
        let f = AgentFacts::default();
        b.handle_event(at(2 * SEC), &stalled(unix(1), 2 * SEC, SEC), &f);
        b.handle_event(at(2 * SEC), &stalled(unix(2), 2 * SEC, SEC), &f);
        let _ = b.poll_batch();
        let status = Event::StatusChanged {
            at: 3 * SEC,
            agent: unix(9),
            from: Status::Ok,
            to: Status::Critical,
            payload: 0,
        };
        b.handle_event(at(3 * SEC), &status, &f);
        // An agent without an alert that recovers or exits: nothing to send.
        let rec = Event::Recovered {
            at: 3 * SEC,
            agent: unix(9),
            silent_for: SEC,
        };
        b.handle_event(at(3 * SEC), &rec, &f);
        assert!(b.poll_batch().is_none());
        let bye = Event::Died {
            at: 4 * SEC,
            agent: unix(1),
            clean: true,
            payload: 0,
        };
        let gone = Event::Evicted {
            at: 4 * SEC,
            agent: unix(2),
        };
        b.handle_event(at(4 * SEC), &bye, &f);
        b.handle_event(at(4 * SEC), &gone, &f);
        let why: Vec<String> = b
            .poll_batch()
            .unwrap()
            .iter()
            .map(|a| a.annotations["resolved_by"].clone())
            .collect();
        assert_eq!(why, ["exited", "forgotten"]);
        assert_eq!(b.active(), 0);
    }

    #[test]
    fn active_alerts_are_resent_every_interval_with_a_fresh_validity() {
        let mut b = book();
        let f = AgentFacts::default();
        assert_eq!(b.poll_timeout(), None);
        b.handle_event(at(10 * SEC), &stalled(unix(5), 10 * SEC, 9 * SEC), &f);
        b.handle_event(at(20 * SEC), &stalled(unix(6), 20 * SEC, 19 * SEC), &f);
        let first = b.poll_batch().unwrap();
        assert_eq!(first.len(), 2);
        // The interval counts from the first alert.
        assert_eq!(b.poll_timeout(), Some(40 * SEC));
        b.handle_timeout(at(39 * SEC));
        assert!(b.poll_batch().is_none());
        b.handle_timeout(at(40 * SEC));
        let again = b.poll_batch().unwrap();
        assert_eq!(again.len(), 2);
        for (old, new) in first.iter().zip(&again) {
            assert_eq!(old.labels, new.labels);
            assert_eq!(old.starts_at, new.starts_at);
            assert_eq!(new.ends_at, at(40 * SEC).wall + Duration::from_secs(120));
        }
        assert_eq!(b.poll_timeout(), Some(70 * SEC));
    }

    #[test]
    fn many_alerts_are_split_into_bounded_batches_in_order() {
        let n = 2 * MAX_BATCH + 500;
        let mut b = AlertBook::new("h", Duration::from_secs(30), n);
        let f = AgentFacts::default();
        for pid in 1..=u32::try_from(n).unwrap() {
            b.handle_event(at(2 * SEC), &stalled(unix(pid), 2 * SEC, SEC), &f);
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| b.poll_batch().map(|v| v.len())).collect();
        assert_eq!(sizes, [MAX_BATCH, MAX_BATCH, 500]);
        // A resend of every active alert is split the same way.
        b.handle_timeout(at(32 * SEC));
        let again: Vec<Vec<Alert>> = std::iter::from_fn(|| b.poll_batch()).collect();
        assert_eq!(again.iter().map(Vec::len).sum::<usize>(), n);
        assert!(again.iter().all(|v| v.len() <= MAX_BATCH));
    }

    #[test]
    fn a_full_book_refuses_and_counts_but_a_known_agent_updates() {
        let mut b = AlertBook::new("h", Duration::from_secs(30), 2);
        let f = AgentFacts::default();
        for pid in 1..=3 {
            b.handle_event(at(2 * SEC), &stalled(unix(pid), 2 * SEC, SEC), &f);
        }
        assert_eq!(b.active(), 2);
        assert_eq!(b.refused(), 1);
        assert_eq!(b.poll_batch().unwrap().len(), 2);
        // Stalled again (e.g. after a crash report it is the crash alert): replaces, not refused.
        let crash = Event::Died {
            at: 3 * SEC,
            agent: unix(2),
            clean: false,
            payload: 0,
        };
        b.handle_event(at(3 * SEC), &crash, &f);
        assert_eq!(b.active(), 2);
        assert_eq!(b.refused(), 1);
    }

    #[test]
    fn facts_from_the_trackers_view() {
        let view = AgentView {
            id: unix(8),
            status: Status::Critical,
            state: crate::tracker::AgentState::Stalled,
            beats: 3,
            stalls: 1,
            last_beat: 5,
            nonce: 3,
            payload: 0xdead,
            secure: false,
        };
        let f = AgentFacts::from_view(&view);
        assert_eq!(
            (f.status, f.payload),
            (Some(Status::Critical), Some(0xdead))
        );
        assert_eq!(f.name, None);
    }

    #[test]
    fn observer_time_before_the_epoch_does_not_panic() {
        let now = Now {
            mono: u64::MAX,
            wall: UNIX_EPOCH,
        };
        assert_eq!(now.wall_at(0), UNIX_EPOCH);
        let mut b = AlertBook::new("h", Duration::MAX, 1);
        b.handle_event(now, &stalled(unix(1), u64::MAX, 0), &AgentFacts::default());
        assert_eq!(b.poll_batch().unwrap().len(), 1);
    }
}
