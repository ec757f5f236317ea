//! Silences: maintenance windows that suppress alerts and recovery for matching agents.
//!
//! A silence is a set of `KEY=VALUE` matchers that must all hold (keys `pid`, `name`, `unit`,
//! `exe`, `comm`, `uid`, `listener`, `class`; values of text keys accept `*` wildcards; no
//! matcher at all silences everything), a window `[starts_at, ends_at)`, a comment and an id.
//! A silenced agent's stall is still detected and shown; the shell only skips the alert and the
//! recovery run.
//!
//! Time is an input: every method takes `now` as wall-clock milliseconds since the Unix epoch
//! ([`UnixMs`]), because silences outlive the process (they are saved in the state file,
//! [`SilenceSet`] is `serde`) and a monotonic clock restarts with it. Expired silences are
//! dropped by [`SilenceSet::purge`] and never match. The set is bounded
//! ([`MAX_SILENCES`]); so are matchers, values, comments and durations.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{wildcard_match, AgentFacts};

/// Wall-clock milliseconds since the Unix epoch.
pub type UnixMs = u64;

/// Most silences at once.
pub const MAX_SILENCES: usize = 1024;
/// Most matchers per silence.
pub const MAX_MATCHERS: usize = 8;
/// Longest matcher value, bytes.
pub const MAX_VALUE_LEN: usize = 256;
/// Longest comment, bytes.
pub const MAX_COMMENT_LEN: usize = 1024;
/// Longest silence: one year.
pub const MAX_DURATION_MS: u64 = 366 * 24 * 3600 * 1000;

/// What a matcher looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKey {
    /// The agent's pid.
    Pid,
    /// Its display name.
    Name,
    /// Its systemd unit.
    Unit,
    /// Its executable path.
    Exe,
    /// Its `comm`.
    Comm,
    /// Its real uid.
    Uid,
    /// Its listener (`unix`, `udpN`).
    Listener,
    /// Its class.
    Class,
}

impl MatchKey {
    /// Every key, in the order the docs list them.
    pub const ALL: [MatchKey; 8] = [
        MatchKey::Pid,
        MatchKey::Name,
        MatchKey::Unit,
        MatchKey::Exe,
        MatchKey::Comm,
        MatchKey::Uid,
        MatchKey::Listener,
        MatchKey::Class,
    ];

    /// The key as written in `KEY=VALUE`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            MatchKey::Pid => "pid",
            MatchKey::Name => "name",
            MatchKey::Unit => "unit",
            MatchKey::Exe => "exe",
            MatchKey::Comm => "comm",
            MatchKey::Uid => "uid",
            MatchKey::Listener => "listener",
            MatchKey::Class => "class",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, MatchKey::Pid | MatchKey::Uid)
    }
}

/// One `KEY=VALUE` condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    /// What is compared.
    pub key: MatchKey,
    /// The value (a number for `pid`/`uid`; `*` wildcards for the others).
    pub value: String,
}

impl Matcher {
    /// Whether the agent satisfies this condition; a fact the agent lacks never does.
    #[must_use]
    pub fn holds(&self, f: &AgentFacts) -> bool {
        let text = |v: Option<&str>| v.is_some_and(|v| wildcard_match(&self.value, v));
        match self.key {
            MatchKey::Pid => self.value.parse::<u32>().is_ok_and(|p| p == f.pid),
            MatchKey::Uid => self.value.parse::<u32>().is_ok_and(|u| f.uid == Some(u)),
            MatchKey::Name => text(f.name.as_deref()),
            MatchKey::Unit => text(f.unit.as_deref()),
            MatchKey::Exe => text(f.exe.as_deref()),
            MatchKey::Comm => text(f.comm.as_deref()),
            MatchKey::Listener => text(Some(&f.listener)),
            MatchKey::Class => text(f.class.as_deref()),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key.as_str(), self.value)
    }
}

impl FromStr for Matcher {
    type Err = SilenceError;

    /// Parses `KEY=VALUE`.
    fn from_str(s: &str) -> Result<Matcher, SilenceError> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| SilenceError::NotKeyValue(s.chars().take(64).collect()))?;
        let key = MatchKey::ALL
            .into_iter()
            .find(|m| m.as_str() == k)
            .ok_or_else(|| SilenceError::UnknownKey(k.chars().take(64).collect()))?;
        let m = Matcher {
            key,
            value: v.to_string(),
        };
        m.check()?;
        Ok(m)
    }
}

impl Matcher {
    fn check(&self) -> Result<(), SilenceError> {
        if self.value.is_empty() || self.value.len() > MAX_VALUE_LEN {
            return Err(SilenceError::BadValue {
                key: self.key.as_str(),
                why: "must be 1 to 256 bytes",
            });
        }
        if self.key.numeric() && self.value.parse::<u32>().is_err() {
            return Err(SilenceError::BadValue {
                key: self.key.as_str(),
                why: "must be a number",
            });
        }
        Ok(())
    }
}

/// One silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id (never reused within a set).
    pub id: u64,
    /// All must hold; empty = every agent.
    pub matchers: Vec<Matcher>,
    /// When it was added.
    pub starts_at_ms: UnixMs,
    /// When it ends (exclusive).
    pub ends_at_ms: UnixMs,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Whether it is in force at `now` and every matcher holds for the agent.
    #[must_use]
    pub fn applies(&self, f: &AgentFacts, now: UnixMs) -> bool {
        (self.starts_at_ms..self.ends_at_ms).contains(&now)
            && self.matchers.iter().all(|m| m.holds(f))
    }

    /// The matchers as `K=V K=V`, or `*` for everything.
    #[must_use]
    pub fn describe(&self) -> String {
        if self.matchers.is_empty() {
            return "*".to_string();
        }
        self.matchers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A refused silence operation; each names the rule.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SilenceError {
    /// A matcher without `=`.
    #[error("matcher {0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    /// A key not in the list.
    #[error("unknown matcher key {0:?} (keys: pid, name, unit, exe, comm, uid, listener, class)")]
    UnknownKey(String),
    /// A bad value.
    #[error("matcher {key}: value {why}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// Too many matchers.
    #[error("at most {MAX_MATCHERS} matchers per silence")]
    TooManyMatchers,
    /// Zero or over a year.
    #[error("duration must be between 1 ms and 366 days")]
    BadDuration,
    /// Comment too long.
    #[error("comment longer than {MAX_COMMENT_LEN} bytes")]
    CommentTooLong,
    /// The set is full.
    #[error("{MAX_SILENCES} silences already in force; expire some first")]
    Full,
    /// No silence with this id (or it already ended).
    #[error("no silence with id {0}")]
    NoSuchId(u64),
}

/// The silences in force, bounded; `serde` for the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceSet {
    next_id: u64,
    silences: Vec<Silence>,
}

impl SilenceSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> SilenceSet {
        SilenceSet::default()
    }

    /// Adds a silence from `now` for `duration_ms`, dropping expired ones first.
    ///
    /// # Errors
    /// [`SilenceError`]: bad matchers, duration or comment, or the set is full.
    pub fn add(
        &mut self,
        now: UnixMs,
        matchers: Vec<Matcher>,
        duration_ms: u64,
        comment: String,
    ) -> Result<&Silence, SilenceError> {
        if matchers.len() > MAX_MATCHERS {
            return Err(SilenceError::TooManyMatchers);
        }
        for m in &matchers {
            m.check()?;
        }
        if duration_ms == 0 || duration_ms > MAX_DURATION_MS {
            return Err(SilenceError::BadDuration);
        }
        if comment.len() > MAX_COMMENT_LEN {
            return Err(SilenceError::CommentTooLong);
        }
        self.purge(now);
        if self.silences.len() >= MAX_SILENCES {
            return Err(SilenceError::Full);
        }
        self.next_id += 1;
        self.silences.push(Silence {
            id: self.next_id,
            matchers,
            starts_at_ms: now,
            ends_at_ms: now.saturating_add(duration_ms),
            comment,
        });
        Ok(&self.silences[self.silences.len() - 1])
    }

    /// Ends silence `id` now.
    ///
    /// # Errors
    /// [`SilenceError::NoSuchId`] if there is none in force.
    pub fn expire(&mut self, now: UnixMs, id: u64) -> Result<Silence, SilenceError> {
        self.purge(now);
        let i = self
            .silences
            .iter()
            .position(|s| s.id == id)
            .ok_or(SilenceError::NoSuchId(id))?;
        Ok(self.silences.remove(i))
    }

    /// Drops silences that ended by `now`; returns how many.
    pub fn purge(&mut self, now: UnixMs) -> usize {
        let before = self.silences.len();
        self.silences.retain(|s| s.ends_at_ms > now);
        before - self.silences.len()
    }

    /// The silences in force at `now`, soonest to end first.
    #[must_use]
    pub fn list(&self, now: UnixMs) -> Vec<Silence> {
        let mut v: Vec<Silence> = self
            .silences
            .iter()
            .filter(|s| s.ends_at_ms > now)
            .cloned()
            .collect();
        v.sort_by_key(|s| (s.ends_at_ms, s.id));
        v
    }

    /// The id of the first silence that applies to this agent at `now`, if any.
    #[must_use]
    pub fn is_silenced(&self, facts: &AgentFacts, now: UnixMs) -> Option<u64> {
        self.silences
            .iter()
            .find(|s| s.applies(facts, now))
            .map(|s| s.id)
    }

    /// When the next silence ends (for a shell that wants to re-evaluate then).
    #[must_use]
    pub fn next_expiry(&self, now: UnixMs) -> Option<UnixMs> {
        self.silences
            .iter()
            .map(|s| s.ends_at_ms)
            .filter(|&t| t > now)
            .min()
    }

    /// Silences held (expired ones not yet purged included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.silences.len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.silences.is_empty()
    }

    /// Checks a set read back from the state file against the same bounds as [`Self::add`],
    /// dropping what has ended by `now`.
    ///
    /// # Errors
    /// The first rule a stored silence breaks.
    pub fn restored(mut self, now: UnixMs) -> Result<SilenceSet, SilenceError> {
        self.purge(now);
        if self.silences.len() > MAX_SILENCES {
            return Err(SilenceError::Full);
        }
        for s in &self.silences {
            if s.matchers.len() > MAX_MATCHERS {
                return Err(SilenceError::TooManyMatchers);
            }
            for m in &s.matchers {
                m.check()?;
            }
            if s.comment.len() > MAX_COMMENT_LEN {
                return Err(SilenceError::CommentTooLong);
            }
            self.next_id = self.next_id.max(s.id);
        }
        Ok(self)
    }
}

/// Parses a duration such as `90s`, `15m`, `2h`, `1d`, `1h30m` or `500ms` into milliseconds.
///
/// # Errors
/// [`SilenceError::BadDuration`] for anything else, zero, or more than a year.
pub fn parse_duration_ms(s: &str) -> Result<u64, SilenceError> {
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(SilenceError::BadDuration);
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(SilenceError::BadDuration);
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| SilenceError::BadDuration)?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(SilenceError::BadDuration),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(per)
            .and_then(|v| total.checked_add(v))
            .ok_or(SilenceError::BadDuration)?;
    }
    if total == 0 || total > MAX_DURATION_MS {
        return Err(SilenceError::BadDuration);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_agent() -> AgentFacts {
        AgentFacts {
            pid: 4242,
            listener: "unix".into(),
            uid: Some(998),
            comm: Some("backupd".into()),
            exe: Some("/usr/bin/backupd".into()),
            unit: Some("backup.service".into()),
            name: Some("backup.service".into()),
            key: Some("none".into()),
            source: None,
            class: Some("batch".into()),
        }
    }

    fn m(s: &str) -> Matcher {
        s.parse().unwrap()
    }

    #[test]
    fn matchers_parse_and_name_their_errors() {
        assert_eq!(
            m("unit=backup.service"),
            Matcher {
                key: MatchKey::Unit,
                value: "backup.service".into()
            }
        );
        assert_eq!(m("exe=/opt/a=b").value, "/opt/a=b");
        assert_eq!(
            "unit".parse::<Matcher>(),
            Err(SilenceError::NotKeyValue("unit".into()))
        );
        assert_eq!(
            "colour=red".parse::<Matcher>(),
            Err(SilenceError::UnknownKey("colour".into()))
        );
        assert_eq!(
            "pid=abc".parse::<Matcher>(),
            Err(SilenceError::BadValue {
                key: "pid",
                why: "must be a number"
            })
        );
        assert!(matches!(
            "name=".parse::<Matcher>(),
            Err(SilenceError::BadValue { key: "name", .. })
        ));
        for k in MatchKey::ALL {
            let v = if k.numeric() { "1" } else { "x" };
            assert_eq!(
                format!("{}={v}", k.as_str())
                    .parse::<Matcher>()
                    .unwrap()
                    .key,
                k
            );
        }
    }

    #[test]
    fn every_key_matches_its_fact() {
        let a = backup_agent();
        for s in [
            "pid=4242",
            "name=backup*",
            "unit=backup.service",
            "exe=/usr/bin/*",
            "comm=backupd",
            "uid=998",
            "listener=unix",
            "class=batch",
        ] {
            assert!(m(s).holds(&a), "{s} should hold");
        }
        for s in [
            "pid=1",
            "name=web*",
            "unit=db.service",
            "exe=/usr/sbin/*",
            "comm=cron",
            "uid=0",
            "listener=udp0",
            "class=default",
        ] {
            assert!(!m(s).holds(&a), "{s} should not hold");
        }
        // A fact the agent lacks never matches.
        let udp = AgentFacts {
            pid: 9,
            listener: "udp0".into(),
            ..AgentFacts::default()
        };
        assert!(!m("unit=*").holds(&udp));
        assert!(!m("uid=0").holds(&udp));
    }

    #[test]
    fn add_list_expire_and_automatic_expiry() {
        let mut set = SilenceSet::new();
        let a = backup_agent();
        let t0: UnixMs = 1_700_000_000_000;
        let id = set
            .add(
                t0,
                vec![m("unit=backup.service"), m("uid=998")],
                2 * 3_600_000,
                "nightly maintenance".into(),
            )
            .unwrap()
            .id;
        assert_eq!(set.is_silenced(&a, t0), Some(id));
        assert_eq!(set.is_silenced(&a, t0 + 3_599_999), Some(id));
        // All matchers must hold.
        let other_uid = AgentFacts {
            uid: Some(0),
            ..backup_agent()
        };
        assert_eq!(set.is_silenced(&other_uid, t0), None);
        // Not before it starts, not from its end on.
        assert_eq!(set.is_silenced(&a, t0 - 1), None);
        assert_eq!(set.is_silenced(&a, t0 + 7_200_000), None);

        let everything = set.add(t0, vec![], 60_000, String::new()).unwrap().id;
        assert!(everything > id);
        let listed = set.list(t0);
        assert_eq!(
            listed.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![everything, id]
        );
        assert_eq!(listed[0].describe(), "*");
        assert_eq!(listed[1].describe(), "unit=backup.service uid=998");
        assert_eq!(set.is_silenced(&other_uid, t0 + 1), Some(everything));
        assert_eq!(set.next_expiry(t0), Some(t0 + 60_000));

        // Automatic expiry: the everything-silence is gone after a minute.
        assert_eq!(set.list(t0 + 60_000).len(), 1);
        assert_eq!(set.purge(t0 + 60_000), 1);
        assert_eq!(set.len(), 1);

        assert_eq!(set.expire(t0 + 1, id).unwrap().id, id);
        assert_eq!(set.expire(t0 + 1, id), Err(SilenceError::NoSuchId(id)));
        assert_eq!(set.is_silenced(&a, t0 + 2), None);
        assert!(set.is_empty());
    }

    #[test]
    fn bounds_are_enforced() {
        let mut set = SilenceSet::new();
        let t = 1000;
        assert_eq!(
            set.add(t, vec![], 0, String::new()).unwrap_err(),
            SilenceError::BadDuration
        );
        assert_eq!(
            set.add(t, vec![], MAX_DURATION_MS + 1, String::new())
                .unwrap_err(),
            SilenceError::BadDuration
        );
        assert_eq!(
            set.add(t, vec![m("pid=1"); 9], 1, String::new())
                .unwrap_err(),
            SilenceError::TooManyMatchers
        );
        assert_eq!(
            set.add(t, vec![], 1, "x".repeat(MAX_COMMENT_LEN + 1))
                .unwrap_err(),
            SilenceError::CommentTooLong
        );
        let bad = Matcher {
            key: MatchKey::Uid,
            value: "root".into(),
        };
        assert!(matches!(
            set.add(t, vec![bad], 1, String::new()).unwrap_err(),
            SilenceError::BadValue { key: "uid", .. }
        ));
        for _ in 0..MAX_SILENCES {
            set.add(t, vec![], 10, String::new()).unwrap();
        }
        assert_eq!(
            set.add(t, vec![], 10, String::new()).unwrap_err(),
            SilenceError::Full
        );
        // Once they have expired there is room again.
        assert!(set.add(t + 10, vec![], 10, String::new()).is_ok());
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn survives_a_round_trip_through_the_state_file() {
        let mut set = SilenceSet::new();
        set.add(5_000, vec![m("class=batch")], 10_000, "deploy".into())
            .unwrap();
        set.add(5_000, vec![], 1_000, "short".into()).unwrap();
        let text = serde_json::to_string(&set).unwrap();
        let back: SilenceSet = serde_json::from_str(&text).unwrap();
        assert_eq!(back, set);
        // Restored after the short one ended: it is gone, ids keep increasing.
        let mut restored = back.restored(7_000).unwrap();
        assert_eq!(restored.len(), 1);
        assert_eq!(restored.is_silenced(&backup_agent(), 7_000), Some(1));
        let id = restored.add(7_000, vec![], 5, String::new()).unwrap().id;
        assert_eq!(id, 3);
        // A tampered file is refused by rule.
        let bad = text.replace("batch", "");
        let err = serde_json::from_str::<SilenceSet>(&bad)
            .unwrap()
            .restored(5_000)
            .unwrap_err();
        assert!(matches!(err, SilenceError::BadValue { key: "class", .. }));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        for bad in [
            "",
            "h",
            "2",
            "2x",
            "0s",
            "-1h",
            "367d",
            "99999999999999999999d",
        ] {
            assert_eq!(
                parse_duration_ms(bad),
                Err(SilenceError::BadDuration),
                "{bad}"
            );
        }
    }
}
