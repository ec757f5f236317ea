//! Outputs: event lines on stdout (text or JSON lines) and the TSV event file.
//!
//! Every event becomes one [`Row`] (the fields of the TSV file: `observer_ns, kind, pid, nonce,
//! status, detail`, plus the event's numbers for JSON), then one line per sink. Sinks are
//! buffered and flushed once per loop turn, right after the events of that turn, so a stall
//! leaves the daemon as soon as it fires.
//!
//! # JSON lines (`--format json`)
//!
//! One object per event, fields in this order, absent where the event has no such value:
//!
//! | field | type | events | meaning |
//! |---|---|---|---|
//! | `at_ns` | integer | all | observer time of the event (ns since the daemon started); for `stall`, the exact deadline `last_beat_ns + threshold` |
//! | `emitted_ns` | integer | all | the daemon's clock (same time base as `at_ns`) when the line was written to the output buffer, which is flushed before the daemon next sleeps or reads a socket: `emitted_ns - at_ns` is the event's lateness on the watch's own clock |
//! | `kind` | string | all | `new`, `restart`, `status`, `stall`, `recovered`, `crash`, `goodbye`, `evicted`, `recovery` |
//! | `pid`, `listener` | integer, string | all | the agent (`unix`, `udp0`) |
//! | `nonce` | integer | new, restart, stall, crash, goodbye | the frame's nonce (`stall`: the last beat's; terminal frames: 18446744073709551615) |
//! | `status` | string | new, status, stall, crash, goodbye | the agent's status after the event |
//! | `from`, `to` | string | status | the status before and after the change |
//! | `payload` | integer | status, crash, goodbye | the frame's payload |
//! | `last_beat_ns` | integer | stall | observer time the last beat was accepted |
//! | `silent_for_ns` | integer | recovered | time since the previous beat |
//! | `detail` | string | all | the same facts in prose (also the TSV `detail` column) |

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use vlp_core::Status;

use crate::config::Format;
use crate::tracker::{AgentId, Event, Listener, Nanos};

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

fn json_escape(s: &str, out: &mut String) {
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

/// The TSV event file with size-based rotation (`FILE` -> `FILE.1`).
#[derive(Debug)]
pub struct ExportFile {
    path: PathBuf,
    max: u64,
    size: u64,
    out: BufWriter<File>,
}

impl ExportFile {
    /// Opens (appends to) `path`.
    ///
    /// # Errors
    /// The open error.
    pub fn open(path: PathBuf, max: u64) -> io::Result<ExportFile> {
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = f.metadata()?.len();
        Ok(ExportFile {
            path,
            max,
            size,
            out: BufWriter::new(f),
        })
    }

    /// Appends one line, rotating first if it would pass the size limit.
    ///
    /// # Errors
    /// Write or rotation errors.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let n = line.len() as u64 + 1;
        if self.size > 0 && self.size + n > self.max {
            self.out.flush()?;
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, &rotated)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.out = BufWriter::new(f);
            self.size = 0;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += n;
        Ok(())
    }

    /// Flushes buffered lines.
    ///
    /// # Errors
    /// The write error.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// All event sinks.
#[derive(Debug)]
pub struct Outputs {
    format: Format,
    stdout: BufWriter<io::Stdout>,
    export: Option<ExportFile>,
    /// Write errors seen (counted, reported once).
    pub write_errors: u64,
    reported: bool,
}

impl Outputs {
    /// Stdout in `format`, plus the export file if any.
    #[must_use]
    pub fn new(format: Format, export: Option<ExportFile>) -> Outputs {
        Outputs {
            format,
            stdout: BufWriter::with_capacity(64 * 1024, io::stdout()),
            export,
            write_errors: 0,
            reported: false,
        }
    }

    fn note_err(&mut self, what: &str, e: &io::Error) {
        self.write_errors += 1;
        if !self.reported {
            self.reported = true;
            eprintln!("varta-watch: cannot write {what}: {e} (further errors only counted)");
        }
    }

    /// Emits one row to every sink (buffered); `now` is the daemon's clock (JSON
    /// `emitted_ns`).
    pub fn emit(&mut self, row: &Row, now: Nanos) {
        let line = match self.format {
            Format::Text => row.text(),
            Format::Json => row.json(now),
        };
        if let Err(e) = writeln!(self.stdout, "{line}") {
            self.note_err("stdout", &e);
        }
        if let Some(x) = self.export.as_mut() {
            if let Err(e) = x.write_line(&row.tsv()) {
                self.note_err("export file", &e);
            }
        }
    }

    /// Prints an informational line (startup, shutdown) in the current format.
    pub fn info(&mut self, msg: &str) {
        let r = match self.format {
            Format::Text => writeln!(self.stdout, "varta-watch: {msg}"),
            Format::Json => {
                let mut s = String::new();
                json_escape(msg, &mut s);
                writeln!(self.stdout, "{{\"kind\":\"info\",\"detail\":\"{s}\"}}")
            }
        };
        if let Err(e) = r {
            self.note_err("stdout", &e);
        }
    }

    /// Flushes every sink.
    pub fn flush(&mut self) {
        if let Err(e) = self.stdout.flush() {
            self.note_err("stdout", &e);
        }
        if let Some(x) = self.export.as_mut() {
            if let Err(e) = x.flush() {
                self.note_err("export file", &e);
            }
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
    fn export_rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("varta-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.tsv");
        let mut x = ExportFile::open(p.clone(), 4096).unwrap();
        let line = "x".repeat(99);
        for _ in 0..50 {
            x.write_line(&line).unwrap();
        }
        x.flush().unwrap();
        let cur = std::fs::metadata(&p).unwrap().len();
        let old = std::fs::metadata(dir.join("events.tsv.1")).unwrap().len();
        assert_eq!(old, 4000);
        assert_eq!(cur, 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
