//! The loop's book of agents: facts, class and silence per agent session, kept beside the
//! tracker and fed by its events.
//!
//! The daemon wires it in with a few calls per loop turn (see the crate's wiring notes):
//!
//! * each tracker event → [`Directory::on_event`]: a new agent or session gets its basic facts,
//!   a configured UDP name and a class at once, and (Unix socket only) an identity request to
//!   the [`IdentityWorker`]; an eviction forgets the agent;
//! * once per turn → [`Directory::poll_identities`]: finished identities update the facts and
//!   re-resolve the class (a result for an older session of the same pid is dropped);
//! * on a stall or crash → [`Directory::reaction`]: the class's policy (severity, labels,
//!   recovery command) and whether to alert and recover, silences considered;
//! * when a snapshot is wanted → [`Directory::snapshot`].
//!
//! Bounded: one entry per tracked agent, at most `capacity` (the tracker's); time is an input.

use hashbrown::HashMap;

use super::class::{ClassId, ClassPolicy, ClassSet};
use super::identity::{IdentityRequest, IdentityWorker, UdpNames};
use super::silence::{SilenceSet, UnixMs};
use super::AgentFacts;
use crate::control::snapshot::{SnapshotBuilder, StatusSnapshot};
use crate::tracker::{AgentId, AgentView, Event, Listener, Nanos};

/// What to do about a stall or a crash: the one place where class policy and silences meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction<'a> {
    /// The agent's class policy (severity, labels, recovery command, debounce).
    pub class: &'a ClassPolicy,
    /// The silence that applies, if any.
    pub silenced_by: Option<u64>,
    /// Raise an alert (not silenced).
    pub alert: bool,
    /// Run the class's recovery command (not silenced, the class's recovery policy covers this
    /// event, and the class has a command).
    pub recover: bool,
}

/// 24 bytes for an agent that has only its basic facts (most UDP agents); the facts are
/// boxed only once something beyond pid, listener and key class is known.
#[derive(Debug, Clone)]
struct Entry {
    facts: Option<Box<AgentFacts>>,
    session: u64,
    class: ClassId,
}

/// Facts, class and silences of every tracked agent (see the module docs).
#[derive(Debug)]
pub struct Directory {
    classes: ClassSet,
    names: UdpNames,
    silences: SilenceSet,
    agents: HashMap<AgentId, Entry, foldhash::fast::RandomState>,
    capacity: usize,
    sessions: u64,
    worker: Option<IdentityWorker>,
    refused: u64,
}

impl Directory {
    /// A directory for at most `capacity` agents. Without a worker, Unix agents are known by
    /// pid, uid-less, until one is given.
    #[must_use]
    pub fn new(
        classes: ClassSet,
        names: UdpNames,
        silences: SilenceSet,
        worker: Option<IdentityWorker>,
        capacity: usize,
    ) -> Directory {
        Directory {
            classes,
            names,
            silences,
            agents: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            capacity,
            sessions: 0,
            worker,
            refused: 0,
        }
    }

    fn admit(&mut self, agent: AgentId) {
        if !self.agents.contains_key(&agent) && self.agents.len() >= self.capacity {
            self.refused += 1;
            return;
        }
        self.sessions += 1;
        let session = self.sessions;
        let mut facts = AgentFacts::basic(agent);
        if agent.listener != Listener::Unix {
            facts.name = self.names.name_for(&facts);
        }
        let class = self.classes.resolve(&facts);
        let facts = facts.name.is_some().then(|| Box::new(facts));
        self.agents.insert(
            agent,
            Entry {
                facts,
                session,
                class,
            },
        );
        if agent.listener == Listener::Unix {
            if let Some(w) = &mut self.worker {
                // A full queue leaves the agent known by pid; counted by the worker.
                let _ = w.try_request(IdentityRequest { agent, session });
            }
        }
    }

    /// The agent's facts as stored (without its class).
    fn stored(agent: AgentId, e: &Entry) -> AgentFacts {
        e.facts
            .as_deref()
            .cloned()
            .unwrap_or_else(|| AgentFacts::basic(agent))
    }

    /// The agent's facts with its class name.
    fn full(&self, agent: AgentId, e: &Entry) -> AgentFacts {
        let mut f = Directory::stored(agent, e);
        f.class = Some(self.classes.get(e.class).name.clone());
        f
    }

    /// Learns of an agent the tracker already holds (restored from the state file): basic
    /// facts, a class, and an identity request, as for a new session.
    pub fn adopt(&mut self, agent: AgentId) {
        if !self.agents.contains_key(&agent) {
            self.admit(agent);
        }
    }

    /// Takes one tracker event.
    pub fn on_event(&mut self, ev: &Event) {
        match *ev {
            Event::NewAgent { agent, .. } | Event::SessionRestart { agent, .. } => {
                self.admit(agent);
            }
            Event::Evicted { agent, .. } => {
                self.agents.remove(&agent);
            }
            // A beat from an agent the directory missed (full, or started late) admits it.
            ref other => {
                let agent = other.agent();
                if !self.agents.contains_key(&agent) {
                    self.admit(agent);
                }
            }
        }
    }

    /// Applies finished identities; returns how many agents were updated.
    pub fn poll_identities(&mut self) -> usize {
        self.poll_identities_with(|_, _| {})
    }

    /// [`Directory::poll_identities`], telling `on_class` each updated agent's class (the
    /// shell moves it to its class's threshold then).
    pub fn poll_identities_with(&mut self, mut on_class: impl FnMut(AgentId, ClassId)) -> usize {
        let Some(w) = &self.worker else {
            return 0;
        };
        let mut updated = 0;
        while let Some(res) = w.try_result() {
            let Some(e) = self.agents.get_mut(&res.request.agent) else {
                continue;
            };
            if e.session != res.request.session {
                continue;
            }
            let Ok(p) = res.result else {
                continue;
            };
            let facts = Directory::stored(res.request.agent, e).with_process(&p);
            e.class = self.classes.resolve(&facts);
            e.facts = Some(Box::new(facts));
            on_class(res.request.agent, e.class);
            updated += 1;
        }
        updated
    }

    /// The agent's class (the default class for an unknown agent).
    #[must_use]
    pub fn class_of(&self, agent: AgentId) -> ClassId {
        self.agents
            .get(&agent)
            .map_or(ClassId::DEFAULT, |e| e.class)
    }

    /// The agent's policy.
    #[must_use]
    pub fn policy(&self, agent: AgentId) -> &ClassPolicy {
        self.classes.get(self.class_of(agent))
    }

    /// What is known about the agent, its class included.
    #[must_use]
    pub fn facts(&self, agent: AgentId) -> Option<AgentFacts> {
        self.agents.get(&agent).map(|e| self.full(agent, e))
    }

    /// The silence that applies to the agent at wall-clock `now`, if any.
    #[must_use]
    pub fn silenced(&self, agent: AgentId, now: UnixMs) -> Option<u64> {
        if self.silences.is_empty() {
            return None;
        }
        let facts = self.facts(agent).unwrap_or_else(|| {
            let mut f = AgentFacts::basic(agent);
            f.class = Some(self.classes.get(ClassId::DEFAULT).name.clone());
            f
        });
        self.silences.is_silenced(&facts, now)
    }

    /// How to react to a tracker event at wall-clock `now`: `Some` for a stall or a crash
    /// report, `None` for every other event (goodbyes included: a clean exit needs no
    /// recovery). A silenced agent's stall is still an event (shown, counted) but gets no alert
    /// and no recovery.
    #[must_use]
    pub fn reaction(&self, ev: &Event, now: UnixMs) -> Option<Reaction<'_>> {
        let covered = |p: &ClassPolicy| match ev {
            Event::Stalled { .. } => Some(p.recovery_policy.on_stall()),
            Event::Died { clean: false, .. } => Some(p.recovery_policy.on_crash()),
            _ => None,
        };
        let agent = ev.agent();
        let class = self.policy(agent);
        let covered = covered(class)?;
        let silenced_by = self.silenced(agent, now);
        Some(Reaction {
            class,
            silenced_by,
            alert: silenced_by.is_none(),
            recover: silenced_by.is_none() && covered && class.recovery.is_some(),
        })
    }

    /// What the alerting book needs of the agent: the tracker's view (status, payload) plus
    /// the policy's name, severity and class labels.
    #[must_use]
    pub fn alert_facts(&self, view: &AgentView) -> crate::alerting::AgentFacts {
        let class = self.policy(view.id);
        crate::alerting::AgentFacts {
            name: self
                .agents
                .get(&view.id)
                .and_then(|e| e.facts.as_ref())
                .and_then(|f| f.name.clone()),
            severity: Some(class.severity.to_string()),
            class_labels: class
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain(std::iter::once(("class".to_string(), class.name.clone())))
                .collect(),
            ..crate::alerting::AgentFacts::from_view(view)
        }
    }

    /// The silences (for the control link's commands and the state file).
    pub fn silences_mut(&mut self) -> &mut SilenceSet {
        &mut self.silences
    }

    /// The silences.
    #[must_use]
    pub fn silences(&self) -> &SilenceSet {
        &self.silences
    }

    /// The classes.
    #[must_use]
    pub fn classes(&self) -> &ClassSet {
        &self.classes
    }

    /// Replaces classes and names (reload) and re-resolves every agent; facts, silences and
    /// tracked agents stay.
    pub fn reload(&mut self, classes: ClassSet, names: UdpNames) {
        self.classes = classes;
        self.names = names;
        for (id, e) in &mut self.agents {
            let mut facts = Directory::stored(*id, e);
            if id.listener != Listener::Unix {
                facts.name = self.names.name_for(&facts);
            }
            e.class = self.classes.resolve(&facts);
            e.facts = (facts.name.is_some() || facts.comm.is_some()).then(|| Box::new(facts));
        }
    }

    /// Agents known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether none is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Agents not admitted because the directory was full.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// A status snapshot of the tracker's agents with their facts, classes and silences.
    pub fn snapshot(
        &self,
        builder: &mut SnapshotBuilder,
        views: impl Iterator<Item = AgentView>,
        now_ns: Nanos,
        now_ms: UnixMs,
    ) -> StatusSnapshot {
        let classes = self.classes.iter().map(|(_, p)| p.name.clone()).collect();
        builder.build(
            now_ns,
            now_ms,
            views,
            |id| self.facts(id),
            &self.silences,
            classes,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::policy::class::{ClassConfig, Defaults};
    use crate::policy::identity::NameRule;
    use crate::policy::silence::Matcher;
    use crate::tracker::KeyClass;
    use vlp_core::Status;

    fn classes(toml_text: &str) -> ClassSet {
        #[derive(serde::Deserialize)]
        struct F {
            class: Vec<ClassConfig>,
        }
        let f: F = toml::from_str(toml_text).unwrap();
        ClassSet::new(
            &Defaults {
                threshold_ns: 1_000_000_000,
                recovery: None,
                recovery_debounce_ns: 0,
            },
            f.class,
        )
        .unwrap()
    }

    fn new_agent(agent: AgentId) -> Event {
        Event::NewAgent {
            at: 1,
            agent,
            status: Status::Ok,
            nonce: 1,
        }
    }

    #[test]
    fn unix_agents_get_their_identity_and_class_off_the_hot_path() {
        let worker = IdentityWorker::spawn(PathBuf::from("/proc"), 8).unwrap();
        let exe = std::env::current_exe().unwrap();
        let set = classes(&format!(
            "[[class]]\nname = \"tests\"\nmatch = {{ exe = \"{}\" }}\nthreshold-ms = 250\n",
            exe.display()
        ));
        let mut dir = Directory::new(set, UdpNames::default(), SilenceSet::new(), Some(worker), 4);
        let me = AgentId::unix(std::process::id());
        dir.on_event(&new_agent(me));
        // Before the identity arrives: default class, pid only.
        assert_eq!(dir.class_of(me), ClassId::DEFAULT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while dir.poll_identities() == 0 {
            assert!(Instant::now() < deadline, "no identity within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(dir.policy(me).name, "tests");
        assert_eq!(dir.policy(me).threshold_ns, 250_000_000);
        let f = dir.facts(me).unwrap();
        assert_eq!(f.exe.as_deref(), Some(exe.to_string_lossy().as_ref()));
        assert_eq!(f.class.as_deref(), Some("tests"));
        assert!(f.name.is_some());

        // Silences see the facts.
        dir.silences_mut()
            .add(
                100,
                vec!["class=tests".parse::<Matcher>().unwrap()],
                1000,
                String::new(),
            )
            .unwrap();
        assert_eq!(dir.silenced(me, 500), Some(1));
        assert_eq!(dir.silenced(me, 1100), None);

        dir.on_event(&Event::Evicted { at: 2, agent: me });
        assert!(dir.is_empty());
    }

    #[test]
    fn reactions_join_class_policy_and_silences() {
        let set = ClassSet::new(
            &Defaults {
                threshold_ns: 1_000_000_000,
                recovery: Some(crate::recovery::CommandTemplate::parse("restart {pid}").unwrap()),
                recovery_debounce_ns: 0,
            },
            {
                #[derive(serde::Deserialize)]
                struct F {
                    class: Vec<ClassConfig>,
                }
                toml::from_str::<F>(
                    "[[class]]\nname = \"crash-only\"\nmatch = { pid = 2 }\nrecovery = \"crash\"\n",
                )
                .unwrap()
                .class
            },
        )
        .unwrap();
        let mut dir = Directory::new(set, UdpNames::default(), SilenceSet::new(), None, 8);
        let a = AgentId::unix;
        dir.on_event(&new_agent(a(1)));
        dir.on_event(&new_agent(a(2)));
        let stall = |pid| Event::Stalled {
            at: 5,
            agent: a(pid),
            last_beat: 1,
            nonce: 1,
        };
        let crash = |pid| Event::Died {
            at: 5,
            agent: a(pid),
            clean: false,
            payload: 0,
        };
        let r = dir.reaction(&stall(1), 0).unwrap();
        assert!(r.alert && r.recover && r.silenced_by.is_none());
        assert_eq!(r.class.name, "default");
        let r = dir.reaction(&stall(2), 0).unwrap();
        assert!(
            r.alert && !r.recover,
            "crash-only class: no recovery on a stall"
        );
        assert!(dir.reaction(&crash(2), 0).unwrap().recover);
        // Goodbyes and beats need no reaction.
        let bye = Event::Died {
            at: 5,
            agent: a(1),
            clean: true,
            payload: 0,
        };
        assert_eq!(dir.reaction(&bye, 0), None);
        assert_eq!(dir.reaction(&new_agent(a(1)), 0), None);
        // Silenced: no alert, no recovery; the stall itself is still an event.
        dir.silences_mut()
            .add(
                0,
                vec!["pid=1".parse::<Matcher>().unwrap()],
                1000,
                String::new(),
            )
            .unwrap();
        let r = dir.reaction(&stall(1), 10).unwrap();
        assert_eq!(r.silenced_by, Some(1));
        assert!(!r.alert && !r.recover);
        assert!(
            dir.reaction(&stall(1), 1000).unwrap().recover,
            "expired silence"
        );
    }

    #[test]
    fn alert_facts_carry_name_severity_and_class_labels() {
        let names = UdpNames::new(vec![NameRule {
            name: "pump-{pid}".into(),
            pid: None,
            listener: Some("udp0".into()),
            key: None,
            source: None,
        }])
        .unwrap();
        let set = classes(
            "[[class]]\nname = \"pumps\"\nmatch = { listener = \"udp0\" }\nseverity = \"warning\"\nlabels = { team = \"water\" }\n",
        );
        let mut dir = Directory::new(set, names, SilenceSet::new(), None, 2);
        let id = AgentId::udp(0, KeyClass::Agent, 3);
        dir.on_event(&new_agent(id));
        let view = AgentView {
            id,
            status: Status::Degraded,
            state: crate::tracker::AgentState::Alive,
            beats: 1,
            stalls: 0,
            last_beat: 1,
            nonce: 1,
            payload: 5,
            secure: true,
        };
        let f = dir.alert_facts(&view);
        assert_eq!(f.name.as_deref(), Some("pump-3"));
        assert_eq!(f.severity.as_deref(), Some("warning"));
        assert_eq!(
            f.class_labels,
            vec![
                ("team".to_string(), "water".to_string()),
                ("class".to_string(), "pumps".to_string())
            ]
        );
        assert_eq!((f.status, f.payload), (Some(Status::Degraded), Some(5)));
    }

    #[test]
    fn udp_agents_are_named_by_configuration_and_bounded() {
        let names = UdpNames::new(vec![NameRule {
            name: "pump-{pid}".into(),
            pid: None,
            listener: Some("udp0".into()),
            key: None,
            source: None,
        }])
        .unwrap();
        let set = classes("[[class]]\nname = \"pumps\"\nmatch = { key = \"agent\" }\n");
        let mut dir = Directory::new(set, names, SilenceSet::new(), None, 2);
        let a = |pid| {
            AgentId::udp(
                0,
                if pid == 2 {
                    KeyClass::None
                } else {
                    KeyClass::Agent
                },
                pid,
            )
        };
        dir.on_event(&new_agent(a(1)));
        dir.on_event(&new_agent(a(2)));
        dir.on_event(&new_agent(a(3)));
        assert_eq!(dir.len(), 2);
        assert_eq!(dir.refused(), 1);
        assert_eq!(dir.facts(a(1)).unwrap().name.as_deref(), Some("pump-1"));
        assert_eq!(dir.policy(a(1)).name, "pumps");
        assert_eq!(dir.policy(a(2)).name, "default");
        assert_eq!(dir.policy(a(3)).name, "default");

        // Reload: new classes apply to known agents at once.
        dir.reload(
            classes("[[class]]\nname = \"all-udp\"\nmatch = { listener = \"udp*\" }\n"),
            UdpNames::default(),
        );
        assert_eq!(dir.policy(a(2)).name, "all-udp");
        assert_eq!(dir.facts(a(1)).unwrap().name, None);
    }
}
