//! Classes: per-group policy (threshold, recovery, severity, labels), chosen once per agent
//! session.
//!
//! ```toml
//! [[class]]
//! name = "backup"
//! match = { unit = "backup*.service" }
//! threshold-ms = 30000
//! recovery-cmd = "systemctl restart backup.service"
//! recovery = "stall"            # never | stall | crash | stall-or-crash
//! severity = "warning"          # info | warning | critical
//! labels = { team = "storage" }
//!
//! [[class]]
//! name = "sensors"
//! match = { listener = "udp*", pid = "1000-1999" }
//! threshold-ms = 5000
//! ```
//!
//! The simple case also has a command-line form, parsed by `ClassConfig::from_str`:
//! `--class backup:unit=backup*.service,threshold-ms=30000,recovery=stall,label.team=storage`.
//!
//! A class matches when every matcher it gives holds (`unit`, `exe`, `comm` and `listener`
//! accept `*` wildcards; `uid` is a number; `pid` a number or a range `LO-HI`; `key` the key
//! class, see [`AgentFacts::key`]); a class without matchers matches every agent. Classes are
//! tried in file order and the **first match wins**; an agent no class matches gets the
//! default class, which holds the global settings (`--threshold-ms`, `--recovery-cmd`, ...).
//! A setting a class leaves out is taken from the default class. At most [`MAX_CLASSES`]
//! classes, so the number of distinct thresholds is bounded too.
//!
//! # Cost
//!
//! [`ClassSet::resolve`] walks the classes (≤ 64 matchers of a few string comparisons) and is
//! called once per agent session (first beat, restart, and when identity facts arrive), never
//! per beat. The beat path looks the class up by [`ClassId`] (one byte) only.
//!
//! # Per-class thresholds in the tracker
//!
//! The tracker keeps one alive/stalled deadline list pair per **distinct threshold**
//! (`Tracker::set_thresholds`, the default class's first) and one class byte per agent, set
//! once per session by the shell (`Tracker::set_threshold_class`): within one threshold,
//! deadlines fall in beat order, so every list stays sorted and a beat stays O(1); the
//! earliest deadline is among the list heads. A reload gives the tracker the new thresholds
//! and every agent its class again (O(n log n), off the beat path).
//!
//! Eviction (`evict_after`) stays global.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{wildcard_match, AgentFacts};
use crate::recovery::command::{CommandError, CommandTemplate};

/// Most `[[class]]` sections (the default class comes on top).
pub const MAX_CLASSES: usize = 64;
/// Most extra labels per class.
pub const MAX_LABELS: usize = 16;
/// The default class's name.
pub const DEFAULT_CLASS: &str = "default";

/// When a class runs its recovery command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryPolicy {
    /// Never.
    Never,
    /// When the agent stalls.
    Stall,
    /// When the agent sends a crash report (terminal frame other than goodbye).
    Crash,
    /// On both (today's behaviour).
    #[default]
    StallOrCrash,
}

impl RecoveryPolicy {
    /// Whether a stall runs recovery.
    #[must_use]
    pub fn on_stall(self) -> bool {
        matches!(self, RecoveryPolicy::Stall | RecoveryPolicy::StallOrCrash)
    }

    /// Whether a crash runs recovery.
    #[must_use]
    pub fn on_crash(self) -> bool {
        matches!(self, RecoveryPolicy::Crash | RecoveryPolicy::StallOrCrash)
    }
}

/// How loud an alert for this class is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Someone should look.
    Warning,
    /// Someone must act now.
    #[default]
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// A pid or an inclusive range, in TOML `1234` or `"1000-1999"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PidSpec {
    /// One pid.
    One(u32),
    /// `"LO-HI"` (or one pid as a string).
    Text(String),
}

impl PidSpec {
    fn range(&self) -> Option<(u32, u32)> {
        match self {
            PidSpec::One(p) => Some((*p, *p)),
            PidSpec::Text(s) => {
                let (lo, hi) = match s.split_once('-') {
                    Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                    None => {
                        let p = s.trim().parse().ok()?;
                        (p, p)
                    }
                };
                (lo <= hi).then_some((lo, hi))
            }
        }
    }
}

/// The `match` table of a `[[class]]`: every matcher given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClassMatch {
    /// systemd unit (wildcards).
    pub unit: Option<String>,
    /// Executable path (wildcards).
    pub exe: Option<String>,
    /// `comm` (wildcards).
    pub comm: Option<String>,
    /// Real uid.
    pub uid: Option<u32>,
    /// Pid or pid range.
    pub pid: Option<PidSpec>,
    /// Listener label, `unix` or `udpN` (wildcards).
    pub listener: Option<String>,
    /// Key class as the tracker spells it (`none`, `shared`, `agent`).
    pub key: Option<String>,
}

/// One `[[class]]` section as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClassConfig {
    /// The class's name (labels, filters, silences).
    pub name: String,
    /// Which agents belong to it.
    #[serde(default, rename = "match")]
    pub matches: ClassMatch,
    /// Its stall threshold.
    pub threshold_ms: Option<u64>,
    /// Its recovery command (`{pid}` is replaced).
    pub recovery_cmd: Option<String>,
    /// When recovery runs.
    pub recovery: Option<RecoveryPolicy>,
    /// At most one recovery per agent per this long.
    pub recovery_debounce_ms: Option<u64>,
    /// Alert severity.
    pub severity: Option<Severity>,
    /// Extra labels on its events, metrics and alerts.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A bad `--class` value (the command-line form of a `[[class]]`).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClassArgError {
    /// No `NAME:` in front.
    #[error("--class {0:?}: expected NAME:KEY=VALUE,KEY=VALUE,...")]
    Shape(String),
    /// A key neither a matcher nor a setting.
    #[error("--class {class}: unknown key {key:?} (matchers: unit, exe, comm, uid, pid, listener, key; settings: threshold-ms, recovery, recovery-debounce-ms, severity, label.NAME)")]
    UnknownKey {
        /// The class.
        class: String,
        /// The key.
        key: String,
    },
    /// A value that does not parse for its key.
    #[error("--class {class}: bad value {value:?} for {key}")]
    BadValue {
        /// The class.
        class: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
}

impl std::str::FromStr for ClassConfig {
    type Err = ClassArgError;

    /// The command-line form for the simple case, `NAME:KEY=VALUE,...`, e.g.
    /// `backup:unit=backup*.service,threshold-ms=30000,recovery=stall,label.team=storage`.
    /// A recovery command (which has spaces and commas of its own) needs the TOML form. The
    /// result is checked like any `[[class]]` by [`ClassSet::new`].
    fn from_str(s: &str) -> Result<ClassConfig, ClassArgError> {
        let (name, rest) = s
            .split_once(':')
            .ok_or_else(|| ClassArgError::Shape(s.to_string()))?;
        let mut c = ClassConfig {
            name: name.to_string(),
            matches: ClassMatch::default(),
            threshold_ms: None,
            recovery_cmd: None,
            recovery: None,
            recovery_debounce_ms: None,
            severity: None,
            labels: BTreeMap::new(),
        };
        for kv in rest.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| ClassArgError::Shape(s.to_string()))?;
            let bad = || ClassArgError::BadValue {
                class: name.to_string(),
                key: k.to_string(),
                value: v.to_string(),
            };
            let text = || Some(v.to_string());
            match k {
                "unit" => c.matches.unit = text(),
                "exe" => c.matches.exe = text(),
                "comm" => c.matches.comm = text(),
                "listener" => c.matches.listener = text(),
                "key" => c.matches.key = text(),
                "uid" => c.matches.uid = Some(v.parse().map_err(|_| bad())?),
                "pid" => c.matches.pid = Some(PidSpec::Text(v.to_string())),
                "threshold-ms" => c.threshold_ms = Some(v.parse().map_err(|_| bad())?),
                "recovery-debounce-ms" => {
                    c.recovery_debounce_ms = Some(v.parse().map_err(|_| bad())?);
                }
                "recovery" => {
                    c.recovery = Some(
                        RecoveryPolicy::deserialize(serde::de::value::StrDeserializer::<
                            serde::de::value::Error,
                        >::new(v))
                        .map_err(|_| bad())?,
                    );
                }
                "severity" => {
                    c.severity = Some(
                        Severity::deserialize(serde::de::value::StrDeserializer::<
                            serde::de::value::Error,
                        >::new(v))
                        .map_err(|_| bad())?,
                    );
                }
                _ => match k.strip_prefix("label.") {
                    Some(label) => {
                        c.labels.insert(label.to_string(), v.to_string());
                    }
                    None => {
                        return Err(ClassArgError::UnknownKey {
                            class: name.to_string(),
                            key: k.to_string(),
                        })
                    }
                },
            }
        }
        Ok(c)
    }
}

/// The global settings the default class holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// `--threshold-ms`, in ns.
    pub threshold_ns: u64,
    /// `--recovery-cmd`.
    pub recovery: Option<CommandTemplate>,
    /// `--recovery-debounce-ms`, in ns.
    pub recovery_debounce_ns: u64,
}

/// A class's effective policy (its own settings over the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPolicy {
    /// Name.
    pub name: String,
    /// Stall threshold, ns.
    pub threshold_ns: u64,
    /// Recovery command.
    pub recovery: Option<CommandTemplate>,
    /// When recovery runs.
    pub recovery_policy: RecoveryPolicy,
    /// Recovery debounce, ns.
    pub recovery_debounce_ns: u64,
    /// Alert severity.
    pub severity: Severity,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
}

/// A class, by index: [`ClassId::DEFAULT`] or one of the configured classes in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClassId(pub u8);

impl ClassId {
    /// The default class.
    pub const DEFAULT: ClassId = ClassId(0);
}

/// A bad `[[class]]` section; each names the class and the rule.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClassError {
    /// More than [`MAX_CLASSES`] sections.
    #[error("[[class]]: at most {MAX_CLASSES} classes, got {0}")]
    TooMany(usize),
    /// An empty name.
    #[error("[[class]] #{0}: empty name")]
    EmptyName(usize),
    /// Two classes with one name, or a class named like the default.
    #[error("[[class]] {0:?}: name used twice (\"default\" is the default class's)")]
    DuplicateName(String),
    /// A pid matcher that is neither a pid nor `LO-HI` with `LO <= HI`.
    #[error("[[class]] {class:?}: pid {value:?} is not a pid or a range LO-HI")]
    BadPid {
        /// The class.
        class: String,
        /// The value given.
        value: String,
    },
    /// A zero threshold.
    #[error("[[class]] {0:?}: threshold-ms must be at least 1")]
    ZeroThreshold(String),
    /// The recovery command does not parse.
    #[error("[[class]] {class:?}: recovery-cmd: {why}")]
    BadRecoveryCmd {
        /// The class.
        class: String,
        /// Why.
        why: CommandError,
    },
    /// Too many labels.
    #[error("[[class]] {0:?}: at most {MAX_LABELS} labels")]
    TooManyLabels(String),
    /// A label name Prometheus would refuse, or one the observer sets itself.
    #[error("[[class]] {class:?}: label {label:?} must match [a-zA-Z_][a-zA-Z0-9_]* and not be one the observer sets (pid, listener, name, class, alertname, agent, severity)")]
    BadLabel {
        /// The class.
        class: String,
        /// The label.
        label: String,
    },
}

#[derive(Debug, Clone)]
struct Compiled {
    m: ClassMatch,
    pid: Option<(u32, u32)>,
}

impl Compiled {
    fn matches(&self, f: &AgentFacts) -> bool {
        let text = |pat: &Option<String>, val: &Option<String>| match pat {
            None => true,
            Some(p) => val.as_deref().is_some_and(|v| wildcard_match(p, v)),
        };
        text(&self.m.unit, &f.unit)
            && text(&self.m.exe, &f.exe)
            && text(&self.m.comm, &f.comm)
            && self.m.uid.map_or(true, |u| f.uid == Some(u))
            && self.pid.map_or(true, |(lo, hi)| (lo..=hi).contains(&f.pid))
            && self
                .m
                .listener
                .as_deref()
                .map_or(true, |p| wildcard_match(p, &f.listener))
            && text(&self.m.key, &f.key)
    }
}

/// The configured classes and the default class.
#[derive(Debug, Clone)]
pub struct ClassSet {
    matchers: Vec<Compiled>,
    /// `[0]` is the default class, then the configured ones in order.
    policies: Vec<ClassPolicy>,
}

fn default_policy(defaults: &Defaults) -> ClassPolicy {
    ClassPolicy {
        name: DEFAULT_CLASS.to_string(),
        threshold_ns: defaults.threshold_ns.max(1),
        recovery: defaults.recovery.clone(),
        recovery_policy: RecoveryPolicy::default(),
        recovery_debounce_ns: defaults.recovery_debounce_ns,
        severity: Severity::default(),
        labels: BTreeMap::new(),
    }
}

fn label_ok(l: &str) -> bool {
    let mut cs = l.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            l,
            "pid" | "listener" | "name" | "class" | "alertname" | "agent" | "severity"
        )
}

impl ClassSet {
    /// Checks the sections and merges each over the defaults.
    ///
    /// # Errors
    /// The first bad section's [`ClassError`].
    pub fn new(defaults: &Defaults, classes: Vec<ClassConfig>) -> Result<ClassSet, ClassError> {
        if classes.len() > MAX_CLASSES {
            return Err(ClassError::TooMany(classes.len()));
        }
        let mut policies = vec![default_policy(defaults)];
        let mut matchers = Vec::with_capacity(classes.len());
        for (i, c) in classes.into_iter().enumerate() {
            if c.name.is_empty() {
                return Err(ClassError::EmptyName(i));
            }
            if policies.iter().any(|p| p.name == c.name) {
                return Err(ClassError::DuplicateName(c.name));
            }
            let pid = match &c.matches.pid {
                None => None,
                Some(spec) => Some(spec.range().ok_or_else(|| ClassError::BadPid {
                    class: c.name.clone(),
                    value: match spec {
                        PidSpec::One(p) => p.to_string(),
                        PidSpec::Text(s) => s.clone(),
                    },
                })?),
            };
            if c.threshold_ms == Some(0) {
                return Err(ClassError::ZeroThreshold(c.name));
            }
            let recovery =
                match &c.recovery_cmd {
                    None => defaults.recovery.clone(),
                    Some(s) => Some(CommandTemplate::parse(s).map_err(|why| {
                        ClassError::BadRecoveryCmd {
                            class: c.name.clone(),
                            why,
                        }
                    })?),
                };
            if c.labels.len() > MAX_LABELS {
                return Err(ClassError::TooManyLabels(c.name));
            }
            if let Some(l) = c.labels.keys().find(|l| !label_ok(l)) {
                return Err(ClassError::BadLabel {
                    class: c.name.clone(),
                    label: l.clone(),
                });
            }
            policies.push(ClassPolicy {
                threshold_ns: c.threshold_ms.map_or(defaults.threshold_ns.max(1), |ms| {
                    ms.saturating_mul(1_000_000)
                }),
                recovery,
                recovery_policy: c.recovery.unwrap_or_default(),
                recovery_debounce_ns: c
                    .recovery_debounce_ms
                    .map_or(defaults.recovery_debounce_ns, |ms| {
                        ms.saturating_mul(1_000_000)
                    }),
                severity: c.severity.unwrap_or_default(),
                labels: c.labels,
                name: c.name,
            });
            matchers.push(Compiled { m: c.matches, pid });
        }
        Ok(ClassSet { matchers, policies })
    }

    /// Only the default class.
    #[must_use]
    pub fn only_default(defaults: &Defaults) -> ClassSet {
        ClassSet {
            matchers: Vec::new(),
            policies: vec![default_policy(defaults)],
        }
    }

    /// The first class whose matchers all hold for `facts`, else [`ClassId::DEFAULT`]. Call it
    /// once per agent session (and again when the agent's identity facts arrive).
    #[must_use]
    pub fn resolve(&self, facts: &AgentFacts) -> ClassId {
        self.matchers
            .iter()
            .position(|m| m.matches(facts))
            // At most MAX_CLASSES (64) matchers, so index + 1 fits a u8.
            .map_or(ClassId::DEFAULT, |i| {
                ClassId(u8::try_from(i + 1).unwrap_or(0))
            })
    }

    /// A class's policy; an unknown id gives the default class.
    ///
    /// # Panics
    /// Never: every constructor puts the default class at index 0.
    #[must_use]
    pub fn get(&self, id: ClassId) -> &ClassPolicy {
        self.policies
            .get(usize::from(id.0))
            .unwrap_or(&self.policies[0])
    }

    /// The class of this name.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<ClassId> {
        self.policies
            .iter()
            .position(|p| p.name == name)
            .and_then(|i| u8::try_from(i).ok())
            .map(ClassId)
    }

    /// Every class, the default first.
    pub fn iter(&self) -> impl Iterator<Item = (ClassId, &ClassPolicy)> {
        self.policies
            .iter()
            .enumerate()
            .map(|(i, p)| (ClassId(u8::try_from(i).unwrap_or(0)), p))
    }

    /// Number of classes, the default included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Never true: the default class is always there.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The distinct thresholds (ascending) with the classes using each: one tracker deadline
    /// list per entry (see the module docs).
    #[must_use]
    pub fn thresholds(&self) -> Vec<(u64, Vec<ClassId>)> {
        let mut by: BTreeMap<u64, Vec<ClassId>> = BTreeMap::new();
        for (id, p) in self.iter() {
            by.entry(p.threshold_ns).or_default().push(id);
        }
        by.into_iter().collect()
    }
}

#[cfg(test)]
#[path = "class_tests.rs"]
mod tests;
