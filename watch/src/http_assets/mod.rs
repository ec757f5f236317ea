//! What the HTTP side serves besides `/metrics`: the status page and its JSON.
//!
//! * `/` → [`STATUS_HTML`]: one self-contained page (HTML, CSS and JS inline, no external
//!   assets) that polls `/api/agents` every second, shows every agent with its state
//!   (stalled and crashed first), its last beat age ticking live between polls, filters by
//!   class and state (kept in the address, `/#class=NAME&state=stalled`, so a view can be
//!   bookmarked), and the silences in force with their expiry. When the API answers 401
//!   it asks once for the bearer token and keeps it in `sessionStorage`.
//! * `/api/agents` → [`agents_json`] of the latest [`StatusSnapshot`]:
//!   `{"agents": [{"pid", "name", "listener", "class", "state", "silenced",
//!   "last_beat_age_ms", "payload", ...}], "silences": [...], "classes": [...], ...}`.
//! * `/api/events?since=SEQ` → [`events_json`] over an [`EventRing`]: the same objects as the
//!   `--format json` event lines, each with a `seq`, oldest first, those after `SEQ` only.
//!
//! These are plain functions: the HTTP server (whatever stack serves `/metrics`) calls them
//! and sets `content-type` from [`STATUS_HTML_CONTENT_TYPE`] / [`JSON_CONTENT_TYPE`].

mod routes;

pub use routes::{routes, StatusState};

use std::collections::VecDeque;

use thiserror::Error;

use crate::control::snapshot::StatusSnapshot;

/// The status page.
pub const STATUS_HTML: &str = include_str!("status.html");
/// Its content type.
pub const STATUS_HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";
/// Content type of the JSON answers.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// `/api/agents`: the snapshot as JSON (`{"agents": [...], ...}`).
#[must_use]
pub fn agents_json(snap: &StatusSnapshot) -> String {
    // Serialising plain data (no maps with non-string keys, no foreign Serialize impls)
    // cannot fail; the fallback keeps the function total anyway.
    serde_json::to_string(snap).unwrap_or_else(|_| String::from("{\"agents\":[]}"))
}

/// Most events a single `/api/events` answer carries.
pub const MAX_EVENTS_PER_ANSWER: usize = 1000;

/// A bounded ring of recent event lines with sequence numbers (1, 2, ...). When full, the
/// oldest line makes room; a reader whose `since` is older than the ring learns it missed
/// some (`"missed": true`).
#[derive(Debug, Clone)]
pub struct EventRing {
    cap: usize,
    next_seq: u64,
    lines: VecDeque<(u64, String)>,
}

impl EventRing {
    /// A ring of at most `cap` events (at least 1).
    #[must_use]
    pub fn new(cap: usize) -> EventRing {
        EventRing {
            cap: cap.max(1),
            next_seq: 1,
            lines: VecDeque::with_capacity(cap.clamp(1, 4096)),
        }
    }

    /// Adds one `--format json` event line (an object, `{...}`); returns its sequence number.
    /// A line that is not an object is refused (`None`): it could not take a `seq` field.
    pub fn push(&mut self, json_line: String) -> Option<u64> {
        let line = json_line.trim_end();
        if !(line.starts_with('{') && line.ends_with('}')) {
            return None;
        }
        let line = line.to_string();
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.lines.push_back((seq, line));
        Some(seq)
    }

    /// The sequence number the next event will get.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The oldest sequence number held, if any.
    #[must_use]
    pub fn oldest(&self) -> Option<u64> {
        self.lines.front().map(|l| l.0)
    }
}

/// A bad `/api/events` query.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    /// `since` is not a number.
    #[error("since must be a sequence number (0 for everything held)")]
    BadSince,
}

/// The `since` parameter of an `/api/events` query string (`since=SEQ`, absent = 0).
///
/// # Errors
/// [`QueryError::BadSince`].
pub fn parse_since(query: Option<&str>) -> Result<u64, QueryError> {
    let Some(q) = query else { return Ok(0) };
    match q.split('&').find_map(|kv| kv.strip_prefix("since=")) {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| QueryError::BadSince),
    }
}

/// `/api/events?since=SEQ`: `{"events": [{"seq": N, ...event fields}], "next_seq": M,
/// "missed": bool}` with the events after `since`, oldest first, at most
/// [`MAX_EVENTS_PER_ANSWER`] (ask again from the last `seq` for more). `missed` says events
/// after `since` had already left the ring.
#[must_use]
pub fn events_json(ring: &EventRing, since: u64) -> String {
    let mut out = String::from("{\"events\":[");
    let mut first = true;
    for (seq, line) in ring
        .lines
        .iter()
        .filter(|(s, _)| *s > since)
        .take(MAX_EVENTS_PER_ANSWER)
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&format!("{{\"seq\":{seq}"));
        // `line` is `{...}`: splice its fields after ours.
        let body = &line[1..];
        if body != "}" {
            out.push(',');
        }
        out.push_str(body);
    }
    let missed = ring.oldest().is_some_and(|o| since.saturating_add(1) < o);
    out.push_str(&format!(
        "],\"next_seq\":{},\"missed\":{missed}}}",
        ring.next_seq
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::SnapshotBuilder;
    use crate::output::Row;
    use crate::policy::silence::SilenceSet;
    use crate::tracker::{AgentId, AgentState, AgentView, Event};
    use vlp_core::Status;

    #[test]
    fn page_is_self_contained() {
        assert!(STATUS_HTML.starts_with("<!doctype html>"));
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "@import",
        ] {
            assert!(
                !STATUS_HTML.contains(external),
                "external asset: {external}"
            );
        }
        assert!(STATUS_HTML.contains("fetch(\"api/agents\""));
        assert!(STATUS_HTML.contains("sessionStorage"));
    }

    #[test]
    fn agents_json_has_the_documented_fields() {
        let view = AgentView {
            id: AgentId::unix(77),
            status: Status::Ok,
            state: AgentState::Stalled,
            beats: 5,
            stalls: 1,
            last_beat: 1_000_000_000,
            nonce: 5,
            payload: 12,
            secure: false,
        };
        let snap = SnapshotBuilder::new(10).build(
            3_000_000_000,
            1_700_000_000_000,
            std::iter::once(view),
            |_| None,
            &SilenceSet::new(),
            vec!["default".into()],
        );
        let v: serde_json::Value = serde_json::from_str(&agents_json(&snap)).unwrap();
        let a = &v["agents"][0];
        assert_eq!(a["pid"], 77);
        assert_eq!(a["name"], serde_json::Value::Null);
        assert_eq!(a["listener"], "unix");
        assert_eq!(a["class"], "default");
        assert_eq!(a["state"], "stalled");
        assert_eq!(a["silenced"], false);
        assert_eq!(a["last_beat_age_ms"], 2000);
        assert_eq!(a["payload"], 12);
        assert_eq!(v["classes"][0], "default");
        assert!(v["silences"].as_array().unwrap().is_empty());
    }

    fn line(pid: u32, at: u64) -> String {
        Row::from_event(&Event::Stalled {
            at,
            agent: AgentId::unix(pid),
            last_beat: at - 5,
            nonce: 3,
        })
        .json(at + 1)
    }

    #[test]
    fn events_carry_sequence_numbers_and_are_bounded() {
        let mut ring = EventRing::new(3);
        assert_eq!(
            events_json(&ring, 0),
            "{\"events\":[],\"next_seq\":1,\"missed\":false}"
        );
        for i in 1..=5 {
            assert_eq!(ring.push(line(i, u64::from(i) * 100)), Some(u64::from(i)));
        }
        assert_eq!(ring.push("not json".into()), None);
        let v: serde_json::Value = serde_json::from_str(&events_json(&ring, 0)).unwrap();
        let ev = v["events"].as_array().unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0]["seq"], 3);
        assert_eq!(ev[0]["kind"], "stall");
        assert_eq!(ev[0]["pid"], 3);
        assert_eq!(ev[0]["at_ns"], 300);
        assert_eq!(ev[2]["seq"], 5);
        assert_eq!(v["next_seq"], 6);
        assert_eq!(v["missed"], true);

        let v: serde_json::Value = serde_json::from_str(&events_json(&ring, 4)).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 1);
        assert_eq!(v["events"][0]["seq"], 5);
        assert_eq!(v["missed"], false);
        let v: serde_json::Value = serde_json::from_str(&events_json(&ring, 5)).unwrap();
        assert!(v["events"].as_array().unwrap().is_empty());

        let mut empty_obj = EventRing::new(2);
        empty_obj.push("{}".into());
        let v: serde_json::Value = serde_json::from_str(&events_json(&empty_obj, 0)).unwrap();
        assert_eq!(v["events"][0]["seq"], 1);
    }

    #[test]
    fn since_parses_or_names_the_rule() {
        assert_eq!(parse_since(None), Ok(0));
        assert_eq!(parse_since(Some("since=42")), Ok(42));
        assert_eq!(parse_since(Some("x=1&since=7")), Ok(7));
        assert_eq!(parse_since(Some("x=1")), Ok(0));
        assert_eq!(parse_since(Some("since=abc")), Err(QueryError::BadSince));
        assert_eq!(parse_since(Some("since=-1")), Err(QueryError::BadSince));
    }
}
