//! Outputs: event lines on stdout (text or JSON lines) and the TSV event file.
//!
//! Every event becomes one [`Row`] (the fields of the TSV file: `observer_ns, kind, pid, nonce,
//! status, detail`), then one line per sink. Sinks are buffered and flushed once per loop turn,
//! right after the events of that turn, so a stall leaves the daemon as soon as it fires.

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
    /// The row for a tracker event.
    #[must_use]
    pub fn from_event(ev: &Event) -> Row {
        match *ev {
            Event::NewAgent {
                at,
                agent,
                status,
                nonce,
            } => Row {
                at,
                kind: "new",
                agent,
                nonce: Some(nonce),
                status: Some(status),
                detail: String::new(),
            },
            Event::SessionRestart { at, agent, nonce } => Row {
                at,
                kind: "restart",
                agent,
                nonce: Some(nonce),
                status: None,
                detail: "new session (nonce and timestamp started over)".into(),
            },
            Event::StatusChanged {
                at,
                agent,
                from,
                to,
                payload,
            } => Row {
                at,
                kind: "status",
                agent,
                nonce: None,
                status: Some(to),
                detail: format!("{from} -> {to} payload={payload}"),
            },
            Event::Stalled {
                at,
                agent,
                last_beat,
                nonce,
            } => Row {
                at,
                kind: "stall",
                agent,
                nonce: Some(nonce),
                status: Some(Status::Stall),
                detail: format!("silent for {}", ms(at.saturating_sub(last_beat))),
            },
            Event::Recovered {
                at,
                agent,
                silent_for,
            } => Row {
                at,
                kind: "recovered",
                agent,
                nonce: None,
                status: None,
                detail: format!("beating again after {}", ms(silent_for)),
            },
            Event::Died {
                at,
                agent,
                clean,
                payload,
            } => Row {
                at,
                kind: if clean { "goodbye" } else { "crash" },
                agent,
                nonce: Some(vlp_core::NONCE_TERMINAL),
                status: Some(Status::Critical),
                detail: if clean {
                    "announced clean exit".into()
                } else {
                    format!("terminal frame, payload={payload}")
                },
            },
            Event::Evicted { at, agent } => Row {
                at,
                kind: "evicted",
                agent,
                nonce: None,
                status: None,
                detail: "forgotten after long silence".into(),
            },
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

    /// A JSON object (no newline).
    #[must_use]
    pub fn json(&self) -> String {
        let mut s = format!(
            "{{\"at_ns\":{},\"kind\":\"{}\",\"pid\":{},\"listener\":\"{}\"",
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

    /// Emits one row to every sink (buffered).
    pub fn emit(&mut self, row: &Row) {
        let line = match self.format {
            Format::Text => row.text(),
            Format::Json => row.json(),
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
        AgentId {
            listener: Listener::Unix,
            pid: 42,
        }
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
            r.json(),
            "{\"at_ns\":1200000000,\"kind\":\"stall\",\"pid\":42,\"listener\":\"unix\",\"nonce\":9,\"status\":\"stall\",\"detail\":\"silent for 200.0ms\"}"
        );
        assert!(r.text().contains("stall") && r.text().contains("pid 42"));
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
