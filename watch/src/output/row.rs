//! One event as a [`Row`], and its three spellings: text, JSON, TSV.

use std::fmt::Write as _;

use vlp_core::Status;

use crate::tracker::{AgentId, Event, Listener, Nanos, Rejection};

/// One output record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Observer time, ns since start.
    pub at: Nanos,
    /// `new`, `restart`, `status`, `stall`, `recovered`, `crash`, `goodbye`, `evicted`,
    /// `recovery`.
    pub kind: &'static str,
    /// The agent.
    pub agent: AgentId,
    /// The frame nonce, where the event has one.
    pub nonce: Option<u64>,
    /// The agent's status after the event.
    pub status: Option<Status>,
    /// Free text.
    pub detail: String,
    /// Status before a change (`status` events).
    pub from: Option<Status>,
    /// The frame's payload (`status`, `crash`, `goodbye`).
    pub payload: Option<u32>,
    /// When the last beat was accepted (`stall`).
    pub last_beat: Option<Nanos>,
    /// Time since the previous beat (`recovered`).
    pub silent_for: Option<Nanos>,
    /// The agent's name and class, when the policy directory knows them (text and JSON
    /// lines; the TSV export keeps its columns).
    pub who: Option<(Option<String>, String)>,
}

fn ms(ns: Nanos) -> String {
    format!("{:.1}ms", ns as f64 / 1e6)
}

/// The listener's label: `unix` or `udpN`.
#[must_use]
pub fn listener_label(l: Listener) -> String {
    match l {
        Listener::Unix => "unix".to_string(),
        Listener::Udp(n) => format!("udp{n}"),
    }
}

impl Row {
    /// A row with only the TSV fields; the event's numbers are added with struct update.
    #[must_use]
    pub fn basic(
        at: Nanos,
        kind: &'static str,
        agent: AgentId,
        nonce: Option<u64>,
        status: Option<Status>,
        detail: String,
    ) -> Row {
        Row {
            at,
            kind,
            agent,
            nonce,
            status,
            detail,
            from: None,
            payload: None,
            last_beat: None,
            silent_for: None,
            who: None,
        }
    }

    /// The row for a tracker event.
    #[must_use]
    pub fn from_event(ev: &Event) -> Row {
        // The kind's one spelling comes from the core.
        let kind = ev.kind().as_str();
        match *ev {
            Event::NewAgent {
                at,
                agent,
                status,
                nonce,
            } => Row::basic(at, kind, agent, Some(nonce), Some(status), String::new()),
            Event::SessionRestart { at, agent, nonce } => Row::basic(
                at,
                kind,
                agent,
                Some(nonce),
                None,
                "new session (nonce and timestamp started over)".into(),
            ),
            Event::StatusChanged {
                at,
                agent,
                from,
                to,
                payload,
            } => Row {
                from: Some(from),
                payload: Some(payload),
                ..Row::basic(
                    at,
                    kind,
                    agent,
                    None,
                    Some(to),
                    format!("{from} -> {to} payload={payload}"),
                )
            },
            Event::Stalled {
                at,
                agent,
                last_beat,
                nonce,
            } => Row {
                last_beat: Some(last_beat),
                ..Row::basic(
                    at,
                    kind,
                    agent,
                    Some(nonce),
                    Some(Status::Stall),
                    format!("silent for {}", ms(at.saturating_sub(last_beat))),
                )
            },
            Event::Recovered {
                at,
                agent,
                silent_for,
            } => Row {
                silent_for: Some(silent_for),
                ..Row::basic(
                    at,
                    kind,
                    agent,
                    None,
                    None,
                    format!("beating again after {}", ms(silent_for)),
                )
            },
            Event::Died {
                at,
                agent,
                clean,
                payload,
            } => Row {
                payload: Some(payload),
                ..Row::basic(
                    at,
                    kind,
                    agent,
                    Some(vlp_core::NONCE_TERMINAL),
                    Some(Status::Critical),
                    if clean {
                        "announced clean exit".into()
                    } else {
                        format!("terminal frame, payload={payload}")
                    },
                )
            },
            Event::Evicted { at, agent } => Row::basic(
                at,
                kind,
                agent,
                None,
                None,
                "forgotten after long silence".into(),
            ),
        }
    }

    /// A readable line (no newline).
    #[must_use]
    pub fn text(&self) -> String {
        let mut s = format!(
            "{:>12.6}s {:<9} pid {:<7} {:<5}",
            self.at as f64 / 1e9,
            self.kind,
            self.agent.pid,
            listener_label(self.agent.listener)
        );
        if let Some(st) = self.status {
            let _ = write!(s, " status={st}");
        }
        if let Some(n) = self.nonce {
            if n != vlp_core::NONCE_TERMINAL {
                let _ = write!(s, " nonce={n}");
            }
        }
        if let Some((name, class)) = &self.who {
            if let Some(n) = name {
                let _ = write!(s, " name={n}");
            }
            let _ = write!(s, " class={class}");
        }
        if !self.detail.is_empty() {
            let _ = write!(s, " {}", self.detail);
        }
        s
    }

    /// A JSON object (no newline; fields in the module docs); `emitted` is the daemon's clock
    /// now.
    #[must_use]
    pub fn json(&self, emitted: Nanos) -> String {
        let mut s = format!(
            "{{\"at_ns\":{},\"emitted_ns\":{emitted},\"kind\":\"{}\",\"pid\":{},\"listener\":\"{}\"",
            self.at,
            self.kind,
            self.agent.pid,
            listener_label(self.agent.listener)
        );
        if let Some(n) = self.nonce {
            let _ = write!(s, ",\"nonce\":{n}");
        }
        if let Some(st) = self.status {
            let _ = write!(s, ",\"status\":\"{st}\"");
        }
        if let (Some(from), Some(to)) = (self.from, self.status) {
            let _ = write!(s, ",\"from\":\"{from}\",\"to\":\"{to}\"");
        }
        if let Some(p) = self.payload {
            let _ = write!(s, ",\"payload\":{p}");
        }
        if let Some(t) = self.last_beat {
            let _ = write!(s, ",\"last_beat_ns\":{t}");
        }
        if let Some(t) = self.silent_for {
            let _ = write!(s, ",\"silent_for_ns\":{t}");
        }
        if let Some((name, class)) = &self.who {
            if let Some(n) = name {
                s.push_str(",\"name\":\"");
                json_escape(n, &mut s);
                s.push('"');
            }
            s.push_str(",\"class\":\"");
            json_escape(class, &mut s);
            s.push('"');
        }
        s.push_str(",\"detail\":\"");
        json_escape(&self.detail, &mut s);
        s.push_str("\"}");
        s
    }

    /// A TSV line (no newline): `observer_ns kind pid nonce status detail`.
    #[must_use]
    pub fn tsv(&self) -> String {
        let nonce = self.nonce.map(|n| n.to_string()).unwrap_or_default();
        let status = self.status.map(|s| s.name()).unwrap_or("");
        let detail: String = self
            .detail
            .chars()
            .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
            .collect();
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            self.at, self.kind, self.agent.pid, nonce, status, detail
        )
    }
}

impl Row {
    /// The existing observer's six-column TSV line (no newline), the export file's default
    /// format: `observer_ns kind pid nonce status detail`, `-` where a column has no value.
    /// Our kinds map to its kinds (one table, in the README): `new`, `restart`, `status`,
    /// `recovered`, `crash` and `goodbye` are `beat` lines (status after the event, detail the
    /// payload), `stall` is `stall` (the last beat's nonce, status `stall`, detail `-`),
    /// `evicted` is `eviction`. Recovery decisions have no line in that format (they are in
    /// the audit file); `None` for them.
    #[must_use]
    pub fn tsv_compat(&self) -> Option<String> {
        let kind = match self.kind {
            "new" | "restart" | "status" | "recovered" | "crash" | "goodbye" => "beat",
            "stall" => "stall",
            "evicted" => "eviction",
            _ => return None,
        };
        let dash = || "-".to_string();
        let nonce = self.nonce.map_or_else(dash, |n| n.to_string());
        let status = self.status.map_or("-", |s| s.name());
        let detail = match kind {
            "beat" => self.payload.map_or_else(dash, |p| p.to_string()),
            _ => dash(),
        };
        Some(format!(
            "{}\t{kind}\t{}\t{nonce}\t{status}\t{detail}",
            self.at, self.agent.pid
        ))
    }
}

/// The existing observer's TSV line for a refused datagram: `decode` (`- - -` and the failed
/// rule) or `mismatch` (the claimed pid, detail `auth_failure` or `origin_conflict`); `None`
/// for refusals that format has no kind for.
#[must_use]
pub fn rejection_tsv(at: Nanos, r: &Rejection) -> Option<String> {
    use crate::tracker::ReasonClass;
    match (r, r.class()) {
        (Rejection::PidMismatch { claimed, .. }, _) => {
            Some(format!("{at}\tmismatch\t{claimed}\t-\t-\tauth_failure"))
        }
        (Rejection::OriginConflict, _) => Some(format!("{at}\tmismatch\t-\t-\t-\torigin_conflict")),
        (_, ReasonClass::Auth) => Some(format!("{at}\tmismatch\t-\t-\t-\tauth_failure")),
        (_, ReasonClass::Decode) => Some(format!("{at}\tdecode\t-\t-\t-\t{}", r.reason())),
        _ => None,
    }
}

pub(super) fn json_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> AgentId {
        AgentId::unix(42)
    }

    #[test]
    fn stall_row_in_three_formats() {
        let r = Row::from_event(&Event::Stalled {
            at: 1_200_000_000,
            agent: agent(),
            last_beat: 1_000_000_000,
            nonce: 9,
        });
        assert_eq!(
            r.tsv(),
            "1200000000\tstall\t42\t9\tstall\tsilent for 200.0ms"
        );
        assert_eq!(
            r.json(1_200_300_000),
            "{\"at_ns\":1200000000,\"emitted_ns\":1200300000,\"kind\":\"stall\",\"pid\":42,\"listener\":\"unix\",\"nonce\":9,\"status\":\"stall\",\"last_beat_ns\":1000000000,\"detail\":\"silent for 200.0ms\"}"
        );
        assert!(r.text().contains("stall") && r.text().contains("pid 42"));
    }

    fn json_of(e: &Event) -> String {
        Row::from_event(e).json(e.at() + 5)
    }

    #[test]
    fn json_carries_the_numbers_of_each_event() {
        let a = agent();
        assert_eq!(
            json_of(&Event::StatusChanged {
                at: 10,
                agent: a,
                from: Status::Ok,
                to: Status::Degraded,
                payload: 77
            }),
            "{\"at_ns\":10,\"emitted_ns\":15,\"kind\":\"status\",\"pid\":42,\"listener\":\"unix\",\"status\":\"degraded\",\"from\":\"ok\",\"to\":\"degraded\",\"payload\":77,\"detail\":\"ok -> degraded payload=77\"}"
        );
        assert_eq!(
            json_of(&Event::Recovered {
                at: 900,
                agent: a,
                silent_for: 456_000_000
            }),
            "{\"at_ns\":900,\"emitted_ns\":905,\"kind\":\"recovered\",\"pid\":42,\"listener\":\"unix\",\"silent_for_ns\":456000000,\"detail\":\"beating again after 456.0ms\"}"
        );
        assert_eq!(
            json_of(&Event::Died {
                at: 7,
                agent: a,
                clean: false,
                payload: 0xdead
            }),
            "{\"at_ns\":7,\"emitted_ns\":12,\"kind\":\"crash\",\"pid\":42,\"listener\":\"unix\",\"nonce\":18446744073709551615,\"status\":\"critical\",\"payload\":57005,\"detail\":\"terminal frame, payload=57005\"}"
        );
        let bye = json_of(&Event::Died {
            at: 7,
            agent: a,
            clean: true,
            payload: vlp_core::GOODBYE_PAYLOAD,
        });
        assert!(
            bye.contains(&format!(
                "\"kind\":\"goodbye\",\"pid\":42,\"listener\":\"unix\",\"nonce\":18446744073709551615,\"status\":\"critical\",\"payload\":{},",
                vlp_core::GOODBYE_PAYLOAD
            )),
            "{bye}"
        );
        // Events without numbers of their own carry only the common fields.
        let ev = json_of(&Event::Evicted { at: 3, agent: a });
        for f in ["from", "payload", "last_beat_ns", "silent_for_ns", "nonce"] {
            assert!(!ev.contains(&format!("\"{f}\"")), "{ev}");
        }
        // The TSV keeps its six columns.
        let row = Row::from_event(&Event::StatusChanged {
            at: 10,
            agent: a,
            from: Status::Ok,
            to: Status::Degraded,
            payload: 77,
        });
        assert_eq!(
            row.tsv(),
            "10\tstatus\t42\t\tdegraded\tok -> degraded payload=77"
        );
    }

    #[test]
    fn compat_tsv_maps_our_kinds_to_the_existing_ones() {
        let a = agent();
        let line = |e: &Event| Row::from_event(e).tsv_compat();
        assert_eq!(
            line(&Event::Stalled {
                at: 5,
                agent: a,
                last_beat: 1,
                nonce: 9
            })
            .unwrap(),
            "5\tstall\t42\t9\tstall\t-"
        );
        assert_eq!(
            line(&Event::StatusChanged {
                at: 6,
                agent: a,
                from: Status::Ok,
                to: Status::Degraded,
                payload: 77
            })
            .unwrap(),
            "6\tbeat\t42\t-\tdegraded\t77"
        );
        assert_eq!(
            line(&Event::NewAgent {
                at: 7,
                agent: a,
                status: Status::Ok,
                nonce: 3
            })
            .unwrap(),
            "7\tbeat\t42\t3\tok\t-"
        );
        assert_eq!(
            line(&Event::Evicted { at: 8, agent: a }).unwrap(),
            "8\teviction\t42\t-\t-\t-"
        );
        assert!(Row::basic(1, "recovery", a, None, None, "x".into())
            .tsv_compat()
            .is_none());
        assert_eq!(
            rejection_tsv(
                9,
                &Rejection::PidMismatch {
                    attested: 1,
                    claimed: 2
                }
            )
            .unwrap(),
            "9\tmismatch\t2\t-\t-\tauth_failure"
        );
        assert_eq!(
            rejection_tsv(9, &Rejection::Decode(vlp_core::DecodeError::BadMagic)).unwrap(),
            "9\tdecode\t-\t-\t-\tbad_magic"
        );
        for l in [
            line(&Event::Died {
                at: 1,
                agent: a,
                clean: true,
                payload: 0,
            })
            .unwrap(),
            rejection_tsv(1, &Rejection::OriginConflict).unwrap(),
        ] {
            assert_eq!(l.split('\t').count(), 6, "{l}");
        }
    }
}
