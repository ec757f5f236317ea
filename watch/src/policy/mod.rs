//! Policy: who an agent is, which class of policy it falls in, and whether it is silenced.
//!
//! The tracker knows agents by identity only (listener + pid). Operators think in names:
//! a systemd unit, an executable, a configured name for a UDP device. This module turns the
//! one into the other, once per agent session and never per beat:
//!
//! * [`identity`]: for a Unix-socket agent (kernel-attested pid) read `comm`, the executable
//!   path, the uid and the systemd unit from `/proc` on a small worker thread with bounded
//!   queues ([`identity::IdentityWorker`]); for UDP agents, names from configuration
//!   ([`identity::UdpNames`]).
//! * [`class`]: `[[class]]` sections matched first-match-wins against those facts, each with its
//!   own threshold, recovery, severity and labels; [`class::ClassSet::resolve`] runs once per
//!   session.
//! * [`silence`]: maintenance windows (`KEY=VALUE` matchers, all must hold) with automatic
//!   expiry, bounded, serialisable for the state file.
//!
//! Everything that decides is sans-I/O with time as an input: classes and silences are plain
//! values; only [`identity::read_identity`] and its worker touch the file system.
//!
//! # Panic contract
//!
//! Nothing read from `/proc`, the configuration or the control socket can panic these types:
//! bad input is a typed error naming the rule it broke.

pub mod class;
pub mod config;
pub mod directory;
pub mod identity;
pub mod silence;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::tracker::AgentId;

/// What is known about one agent, gathered once per session: the facts classes and silences
/// match on. Absent facts never match a matcher that asks for them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFacts {
    /// The agent's pid (attested on the Unix socket, claimed on UDP).
    pub pid: u32,
    /// The listener label: `unix` or `udpN`.
    pub listener: String,
    /// The process's real uid (Unix-socket agents).
    pub uid: Option<u32>,
    /// `/proc/PID/comm`.
    pub comm: Option<String>,
    /// `/proc/PID/exe`, resolved.
    pub exe: Option<String>,
    /// The systemd unit (`*.service` / `*.scope`) from `/proc/PID/cgroup`.
    pub unit: Option<String>,
    /// A display name: configured for UDP agents, else the unit or `comm`.
    pub name: Option<String>,
    /// The key its datagrams are authenticated with, as the tracker spells it (`none` for the
    /// Unix socket and plaintext UDP, `shared`, `agent`).
    pub key: Option<String>,
    /// The datagram's source address (UDP), when the shell knows it.
    pub source: Option<IpAddr>,
    /// The class the agent resolved to (filled in after [`class::ClassSet::resolve`]).
    pub class: Option<String>,
}

impl AgentFacts {
    /// The facts the tracker alone gives: pid, listener and key class.
    #[must_use]
    pub fn basic(id: AgentId) -> AgentFacts {
        AgentFacts {
            pid: id.pid,
            listener: crate::output::listener_label(id.listener),
            key: Some(id.key_class.as_str().to_string()),
            ..AgentFacts::default()
        }
    }

    /// Adds what `/proc` told about the process; the name becomes the unit, else `comm`,
    /// unless one was configured.
    #[must_use]
    pub fn with_process(mut self, p: &identity::ProcessIdentity) -> AgentFacts {
        self.uid = Some(p.uid);
        self.comm = Some(p.comm.clone());
        self.exe = p.exe.clone();
        self.unit = p.unit.clone();
        if self.name.is_none() {
            self.name = Some(p.unit.clone().unwrap_or_else(|| p.comm.clone()));
        }
        self
    }
}

/// The policy sections of the TOML configuration: `[[class]]` and `[[name]]`. The daemon's
/// configuration flattens this in (`#[serde(flatten)]`) so both live in the one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `[[class]]` sections, in order.
    #[serde(default, rename = "class")]
    pub classes: Vec<class::ClassConfig>,
    /// `[[name]]` sections (UDP agents), in order.
    #[serde(default, rename = "name")]
    pub names: Vec<identity::NameRule>,
}

/// A bad policy section.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    /// In `[[class]]`.
    #[error(transparent)]
    Class(#[from] class::ClassError),
    /// In `[[name]]`.
    #[error(transparent)]
    Name(#[from] identity::NameError),
}

impl PolicyConfig {
    /// Checks both kinds of section. On reload, a failure here leaves the old policy in force.
    ///
    /// # Errors
    /// The first bad section, named.
    pub fn build(
        &self,
        defaults: &class::Defaults,
    ) -> Result<(class::ClassSet, identity::UdpNames), PolicyError> {
        Ok((
            class::ClassSet::new(defaults, self.classes.clone())?,
            identity::UdpNames::new(self.names.clone())?,
        ))
    }
}

/// Matches `text` against `pattern`, where `*` stands for any run of characters (including
/// none) and every other character stands for itself. No other syntax: unit and executable
/// names contain `.`, `@`, `-` and `/` literally.
#[must_use]
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let Some(star) = pattern.find('*') else {
        return pattern == text;
    };
    let (head, rest_pat) = pattern.split_at(star);
    let Some(mut rest) = text.strip_prefix(head) else {
        return false;
    };
    // `rest_pat` starts with `*`; the last piece must end the text, the ones between are
    // found left to right (greedy-leftmost is exact for `*`-only patterns).
    let last_star = rest_pat.rfind('*').unwrap_or(0);
    let tail = &rest_pat[last_star + 1..];
    for part in rest_pat[..last_star].split('*').filter(|p| !p.is_empty()) {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= tail.len() && rest.ends_with(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::KeyClass;

    #[test]
    fn wildcard_exact_and_star() {
        assert!(wildcard_match("backup.service", "backup.service"));
        assert!(!wildcard_match("backup.service", "backup.services"));
        assert!(!wildcard_match("backup.service", "xbackup.service"));
        assert!(wildcard_match("backup*", "backup.service"));
        assert!(wildcard_match("*.service", "backup.service"));
        assert!(!wildcard_match("*.service", "backup.scope"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXcYYb"));
        // The tail must not overlap the head.
        assert!(!wildcard_match("ab*ba", "aba"));
        assert!(wildcard_match("/usr/bin/*", "/usr/bin/python3"));
        assert!(!wildcard_match("", "x"));
        assert!(wildcard_match("", ""));
    }

    #[test]
    fn policy_sections_build_or_name_the_bad_one() {
        let defaults = class::Defaults {
            threshold_ns: 1_000_000_000,
            recovery: None,
            recovery_debounce_ns: 0,
        };
        let cfg: PolicyConfig = toml::from_str(
            "[[class]]\nname = \"a\"\nthreshold-ms = 5\n[[name]]\nname = \"pump\"\npid = 7\n",
        )
        .unwrap();
        let (classes, names) = cfg.build(&defaults).unwrap();
        assert_eq!(classes.len(), 2);
        let facts = AgentFacts {
            pid: 7,
            listener: "udp0".into(),
            ..AgentFacts::default()
        };
        assert_eq!(names.name_for(&facts).as_deref(), Some("pump"));
        let bad: PolicyConfig = toml::from_str("[[name]]\nname = \"x\"\n").unwrap();
        assert_eq!(
            bad.build(&defaults).unwrap_err().to_string(),
            "[[name]] \"x\": needs at least one of pid, listener, key, source"
        );
        assert!(toml::from_str::<PolicyConfig>("[[klass]]\nname = \"x\"\n").is_err());
    }

    /// The definition: `*` matches any run, everything else itself (slow, obviously right).
    fn naive(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| naive(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && naive(rest, &t[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn wildcard_agrees_with_its_definition(p in "[ab*.]{0,8}", t in "[ab.]{0,10}") {
            proptest::prop_assert_eq!(wildcard_match(&p, &t), naive(p.as_bytes(), t.as_bytes()));
        }
    }

    #[test]
    fn basic_facts_name_the_key_class() {
        let unix = AgentFacts::basic(AgentId::unix(7));
        assert_eq!(unix.listener, "unix");
        assert_eq!(unix.key.as_deref(), Some("none"));
        let udp = AgentFacts::basic(AgentId::udp(1, KeyClass::Agent, 7));
        assert_eq!(udp.listener, "udp1");
        assert_eq!(udp.key.as_deref(), Some("agent"));
    }
}
