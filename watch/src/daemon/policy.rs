//! The loop's side of classes, names, silences and the live view: the policy [`Directory`]
//! beside the tracker, the control socket, the status page's snapshots and event ring, and
//! configuration reload on SIGHUP.
//!
//! Per loop turn: finished `/proc` identities are applied (an agent whose class changed moves
//! to its class's threshold, once per session); when the snapshot hub's eventfd is readable,
//! silence commands are applied and a snapshot is published if one is wanted. Per event: the
//! directory learns of new sessions and evictions, the event line goes into the ring, and a
//! stall or crash gets its class's [`Reaction`](crate::policy::directory::Reaction).

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::SetupError;
use std::path::Path;

use crate::config::RunArgs;
use crate::control::server::{ControlLink, ControlServer};
use crate::control::snapshot::SnapshotBuilder;
use crate::http_assets::{EventRing, StatusState};
use crate::policy::class::Defaults;
use crate::policy::class::{ClassId, ClassSet};
use crate::policy::directory::Directory;
use crate::policy::identity::IdentityWorker;
use crate::policy::silence::{SilenceSet, UnixMs};
use crate::policy::PolicyConfig;
use crate::tracker::{AgentId, Event, Nanos, Tracker, UdpMode};

/// Recent event lines kept for `/api/events`.
pub const EVENT_RING: usize = 4096;
/// Identity requests waiting for the `/proc` worker at most.
pub const IDENTITY_QUEUE: usize = 1024;
/// Silence commands applied per loop turn at most.
const COMMANDS_PER_TURN: usize = 64;
/// Agent rows in a status snapshot at most (the most urgent ones).
const SNAPSHOT_ROWS: usize = 10_000;

/// Wall-clock milliseconds (silences expire on the wall clock: they outlive a restart).
pub(super) fn wall_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The distinct thresholds of `classes`, the default class's first (the tracker's class 0),
/// and each class's index into them.
fn threshold_classes(classes: &ClassSet) -> (Vec<Nanos>, Vec<u8>) {
    let mut thresholds = vec![classes.get(ClassId::DEFAULT).threshold_ns];
    let mut of = Vec::with_capacity(classes.len());
    for (_, p) in classes.iter() {
        let i = thresholds
            .iter()
            .position(|&t| t == p.threshold_ns)
            .unwrap_or_else(|| {
                thresholds.push(p.threshold_ns);
                thresholds.len() - 1
            });
        // At most MAX_CLASSES + 1 (65) distinct thresholds.
        of.push(u8::try_from(i).unwrap_or(0));
    }
    (thresholds, of)
}

/// The loop's policy state (see the module docs).
pub(super) struct PolicyLoop {
    pub(super) directory: Directory,
    link: ControlLink,
    server: Option<ControlServer>,
    events: Arc<Mutex<EventRing>>,
    builder: SnapshotBuilder,
    thresholds: Vec<Nanos>,
    /// `ClassId.0` → tracker threshold class.
    class_threshold: Vec<u8>,
    reload_args: Option<Vec<OsString>>,
    hup: Arc<AtomicBool>,
    /// The silences changed since the state file's copy was last updated.
    silences_changed: bool,
}

impl PolicyLoop {
    /// Builds classes and names from the checked configuration, starts the `/proc` worker and
    /// the control socket (beside the agent socket), and catches SIGHUP.
    pub(super) fn new(
        policy: &PolicyConfig,
        defaults: &Defaults,
        socket: Option<&Path>,
        capacity: usize,
    ) -> Result<PolicyLoop, SetupError> {
        let (classes, names) = policy
            .build(defaults)
            .map_err(|e| SetupError::Policy(e.to_string()))?;
        let worker = match IdentityWorker::spawn("/proc".into(), IDENTITY_QUEUE) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("varta-watch: note: no /proc identity worker ({e}); Unix agents are known by pid");
                None
            }
        };
        let (thresholds, class_threshold) = threshold_classes(&classes);
        let silences = SilenceSet::new();
        let directory = Directory::new(classes, names, silences, worker, capacity);
        let link = ControlLink::new().map_err(SetupError::Signals)?;
        let server = match socket {
            Some(s) => {
                let path = crate::control::control_path(s);
                let start =
                    || ControlServer::start(&path, Arc::clone(link.hub()), link.commander());
                match start() {
                    // The agent socket beside it is ours now (a live observer there would have
                    // refused it): whoever still answers on its control socket lost that
                    // socket, so the control socket is taken over too.
                    Err(crate::control::server::ControlError::InUse(_)) => {
                        let _ = std::fs::remove_file(&path);
                        Some(start()?)
                    }
                    r => Some(r?),
                }
            }
            None => None,
        };
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
            .map_err(SetupError::Signals)?;
        Ok(PolicyLoop {
            directory,
            link,
            server,
            events: Arc::new(Mutex::new(EventRing::new(EVENT_RING))),
            builder: SnapshotBuilder::new(SNAPSHOT_ROWS),
            thresholds,
            class_threshold,
            reload_args: None,
            hup,
            silences_changed: false,
        })
    }

    /// Where the control socket listens, for the start-up line.
    pub(super) fn control_socket(&self) -> Option<&std::path::Path> {
        self.server.as_ref().map(ControlServer::path)
    }

    /// The status page's routes for the HTTP side.
    pub(super) fn routes(&self) -> axum::Router {
        crate::http_assets::routes(StatusState {
            hub: Arc::clone(self.link.hub()),
            events: Arc::clone(&self.events),
            commander: self.link.commander(),
        })
    }

    /// The hub's eventfd, for the loop's poll set.
    pub(super) fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.link.hub().wake_fd()
    }

    /// The arguments the observer was started with, read again on SIGHUP.
    pub(super) fn set_reload_args(&mut self, argv: Vec<OsString>) {
        self.reload_args = Some(argv);
    }

    fn class_index(&self, agent: AgentId) -> u8 {
        self.class_threshold
            .get(usize::from(self.directory.class_of(agent).0))
            .copied()
            .unwrap_or(0)
    }

    /// At start: learns of the agents restored from the state file, then gives the tracker
    /// the threshold classes and every agent its class.
    pub(super) fn adopt(&mut self, tracker: &mut Tracker) {
        let ids: Vec<AgentId> = tracker.agents().map(|v| v.id).collect();
        for id in ids {
            self.directory.adopt(id);
        }
        self.apply_thresholds(tracker);
    }

    /// Gives the tracker the threshold classes and every tracked agent its class.
    pub(super) fn apply_thresholds(&self, tracker: &mut Tracker) {
        let map = |id| self.class_index(id);
        if let Err(e) = tracker.set_thresholds(&self.thresholds, map) {
            // Bounded by MAX_CLASSES + 1 < MAX_THRESHOLDS: cannot happen; said, not hidden.
            eprintln!("varta-watch: threshold classes: {e}");
        }
    }

    /// One tracker event: the directory learns of it; a new session gets its class's
    /// threshold.
    pub(super) fn on_event(&mut self, ev: &Event, tracker: &mut Tracker) {
        self.directory.on_event(ev);
        if let Event::NewAgent { agent, .. } | Event::SessionRestart { agent, .. } = *ev {
            let class = self.class_index(agent);
            tracker.set_threshold_class(agent, class);
        }
    }

    /// The agent's name (if known) and class, for event lines.
    pub(super) fn who(&self, agent: AgentId) -> (Option<String>, String) {
        match self.directory.facts(agent) {
            Some(f) => (
                f.name,
                f.class
                    .unwrap_or_else(|| self.directory.policy(agent).name.clone()),
            ),
            None => (None, self.directory.policy(agent).name.clone()),
        }
    }

    /// Whether `ev` is a stall or crash of a silenced agent (no alert then).
    pub(super) fn silences(&self, ev: &Event) -> bool {
        self.directory
            .reaction(ev, wall_ms())
            .is_some_and(|r| r.silenced_by.is_some())
    }

    /// Adds one `--format json` event line to the ring for `/api/events`.
    pub(super) fn record(&self, json_line: String) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(json_line);
    }

    /// Once per turn: finished identities (class → threshold); with `hub_ready`, silence
    /// commands and a wanted snapshot.
    pub(super) fn turn(&mut self, tracker: &mut Tracker, now: Nanos, hub_ready: bool) {
        let map = &self.class_threshold;
        self.directory.poll_identities_with(|agent, class| {
            let idx = map.get(usize::from(class.0)).copied().unwrap_or(0);
            tracker.set_threshold_class(agent, idx);
        });
        if !hub_ready {
            return;
        }
        let wanted = self.link.hub().take_wanted();
        let now_ms = wall_ms();
        if self.link.apply_silence_commands(
            self.directory.silences_mut(),
            now_ms,
            COMMANDS_PER_TURN,
        ) {
            self.silences_changed = true;
        }
        if wanted {
            let snap = self
                .directory
                .snapshot(&mut self.builder, tracker.agents(), now, now_ms);
            self.link.hub().publish(snap);
        }
    }

    /// Takes the silences the state file held (dropping those that ended, refusing a set that
    /// breaks a bound with one line) and gives the store their current form to write.
    pub(super) fn restore_silences(&mut self, store: &mut super::state::StateStore) {
        if let Some(bytes) = store.restored_silences.take() {
            let set = serde_json::from_slice::<SilenceSet>(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|s| s.restored(wall_ms()).map_err(|e| e.to_string()));
            match set {
                Ok(set) => *self.directory.silences_mut() = set,
                Err(e) => eprintln!("varta-watch: silences in the state file not restored: {e}"),
            }
        }
        store.silences = Some(self.silences_json());
    }

    /// The silences as the state file keeps them.
    fn silences_json(&self) -> Vec<u8> {
        // Plain data: serialising cannot fail; an empty set is written on the impossible path.
        serde_json::to_vec(self.directory.silences()).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Whether SIGHUP arrived since the last call.
    pub(super) fn take_reload(&self) -> bool {
        self.hup.swap(false, Ordering::AcqRel)
    }

    /// Reads the configuration again (the same arguments and file) and applies classes,
    /// names, thresholds, recovery commands and UDP keys, keeping every tracked agent, its
    /// deadline and replay window. A bad configuration changes nothing.
    ///
    /// # Errors
    /// One line naming what is wrong.
    pub(super) fn reload(
        &mut self,
        tracker: &mut Tracker,
        udp_modes: &mut Vec<UdpMode>,
    ) -> Result<String, String> {
        let Some(args) = &self.reload_args else {
            return Err("no arguments to read again".into());
        };
        let cfg = RunArgs::load(args).map_err(|e| e.to_string())?;
        let (classes, names) = cfg
            .policy
            .build(&cfg.class_defaults)
            .map_err(|e| e.to_string())?;
        let new_modes = match &cfg.udp {
            None => Vec::new(),
            Some(u) if u.keys.is_empty() && u.master.is_none() => vec![UdpMode::Plain],
            Some(u) => vec![UdpMode::Secure {
                keys: u.keys.clone(),
                master: u.master.clone(),
            }],
        };
        // Everything checked: apply (the keys' shape last checked, first applied).
        tracker
            .set_udp_modes(new_modes.clone())
            .map_err(|e| e.to_string())?;
        *udp_modes = new_modes;
        let (thresholds, class_threshold) = threshold_classes(&classes);
        let n = classes.len() - 1;
        let m = cfg.policy.names.len();
        self.directory.reload(classes, names);
        self.thresholds = thresholds;
        self.class_threshold = class_threshold;
        self.apply_thresholds(tracker);
        self.link.hub().invalidate();
        Ok(format!(
            "{n} classes, {m} names, {} threshold(s); {} agents kept",
            self.thresholds.len(),
            tracker.len()
        ))
    }
}

impl super::Daemon {
    /// A stall or crash: the agent's class decides (its recovery command, policy and
    /// debounce); a silenced agent's stall is shown with the silence that covers it and runs
    /// no recovery.
    pub(super) fn react(
        &mut self,
        ev: &Event,
        at: Nanos,
        agent: AgentId,
        reason: crate::recovery::Reason,
        status: &str,
    ) {
        let Some(r) = self.policy.directory.reaction(ev, wall_ms()) else {
            return;
        };
        if let Some(id) = r.silenced_by {
            let now = self.now();
            let row = crate::output::Row::basic(
                at,
                crate::tracker::EventKind::Recovery.as_str(),
                agent,
                None,
                None,
                format!("silenced by silence {id}: no alert, no recovery"),
            );
            self.outputs.emit(&row, now);
            self.policy.record(row.json(now));
            return;
        }
        if !r.recover {
            return;
        }
        let (template, debounce) = (r.class.recovery.clone(), r.class.recovery_debounce_ns);
        let mut transport = crate::recovery::Transport::of(agent.listener, &self.udp_modes);
        let now = self.now();
        if transport == crate::recovery::Transport::UnixAttested
            && self.compat.ns_gate.is_cross(now, agent.pid)
        {
            transport = crate::recovery::Transport::UnixOtherNamespace;
        }
        if let Some(rec) = self.recovery.as_mut() {
            let decision = rec.trigger_with(
                at,
                &crate::recovery::Request {
                    agent,
                    transport,
                    reason,
                    status,
                },
                template.as_ref(),
                Some(debounce),
            );
            self.emit_recovery(at, agent, decision.to_string());
        }
    }

    /// One loop turn's policy work (see the module docs) and a reload when SIGHUP came.
    pub(super) fn policy_turn(&mut self, hub_ready: bool) {
        let now = self.now();
        self.policy.turn(&mut self.tracker, now, hub_ready);
        if std::mem::take(&mut self.policy.silences_changed) {
            if let Some(st) = self.state.as_mut() {
                st.silences = Some(self.policy.silences_json());
            }
        }
        if self.policy.take_reload() {
            match self.policy.reload(&mut self.tracker, &mut self.udp_modes) {
                Ok(what) => {
                    // Receive workers open with the new keys from now on; what they opened
                    // under the old ones is opened again by the table.
                    for l in &self.listeners {
                        if let crate::listener::Listener::Workers(w) = l {
                            w.rekey(&self.udp_modes);
                        }
                    }
                    eprintln!("varta-watch: configuration reloaded: {what}");
                }
                Err(e) => eprintln!("varta-watch: reload refused, old configuration kept: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::class::ClassConfig;

    #[test]
    fn distinct_thresholds_default_first_shared_by_classes() {
        let cfgs: Vec<ClassConfig> = [
            "a:comm=a,threshold-ms=300",
            "b:comm=b,threshold-ms=1000",
            "c:comm=c,threshold-ms=300",
            "d:comm=d",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let set = ClassSet::new(
            &Defaults {
                threshold_ns: 1_000_000_000,
                recovery: None,
                recovery_debounce_ns: 0,
            },
            cfgs,
        )
        .unwrap();
        let (thresholds, of) = threshold_classes(&set);
        assert_eq!(thresholds, vec![1_000_000_000, 300_000_000]);
        // default, a, b, c, d
        assert_eq!(of, vec![0, 1, 0, 1, 0]);
    }
}
