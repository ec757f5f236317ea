//! The output room: event lines on stdout (text or JSON lines) and the TSV event file.
//!
//! Every event becomes one [`Row`] (the fields of the TSV file: `observer_ns, kind, pid, nonce,
//! status, detail`, plus the event's numbers for JSON), then one line per sink. Each sink is
//! written by a thread of its own fed through a bounded queue ([`writer`]): the loop never
//! waits for stdout or the disk, so a stuck reader or a slow disk cannot delay stall detection
//! (a full queue drops the line, counted in `varta_output_dropped_total{sink}`), and a sink
//! stuck on one line does not hold up the others. Writers flush whenever their queue is empty,
//! so a stall leaves the daemon as soon as it fires.
//!
//! # Export file (`--export-file`)
//!
//! `--export-format compat` (the default) writes the existing Varta observer's six-column TSV
//! lines (`observer_ns kind pid nonce status detail`, kinds `beat`, `stall`, `decode`,
//! `mismatch`, `eviction`; see [`Row::tsv_compat`]); `--export-format varta` writes ours
//! ([`Row::tsv`]: our event kinds, recovery decisions included, detail in prose). Refused
//! datagrams become `decode`/`mismatch` lines only while the export queue is less than half
//! full, so a flood of garbage cannot crowd out the lines of events.
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

mod export;
mod row;
pub mod writer;

use std::io::{self, BufWriter, Write};
use std::sync::atomic::Ordering;

pub use export::{ExportFile, GENERATIONS};
pub use row::{listener_label, rejection_tsv, Row};
use writer::{LineSink, Sink, QUEUE_LINES};

use crate::config::Format;
use crate::tracker::{Nanos, Rejection};

/// Line format of the export file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ExportFormat {
    /// The existing Varta observer's six-column TSV lines (drop-in default).
    #[default]
    Compat,
    /// Our TSV lines: our event kinds, recovery decisions, detail in prose.
    Varta,
}

/// Stdout through a buffer, as a writer thread's sink.
struct Stdout(BufWriter<io::Stdout>);

impl LineSink for Stdout {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        self.0.write_all(line.as_bytes())?;
        self.0.write_all(b"\n")
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// All event sinks.
#[derive(Debug)]
pub struct Outputs {
    format: Format,
    stdout: Option<Sink>,
    export: Option<Sink>,
    export_format: ExportFormat,
}

impl Outputs {
    /// Stdout in `format`, plus the export file if any (in `export_format`), each with its
    /// writer thread.
    ///
    /// # Errors
    /// A writer thread could not be started.
    pub fn new(
        format: Format,
        export: Option<ExportFile>,
        export_format: ExportFormat,
    ) -> io::Result<Outputs> {
        let stdout = Sink::spawn(
            "stdout",
            Stdout(BufWriter::with_capacity(64 * 1024, io::stdout())),
            QUEUE_LINES,
        )?;
        let export = match export {
            Some(x) => Some(Sink::spawn("export", x, QUEUE_LINES)?),
            None => None,
        };
        Ok(Outputs {
            format,
            stdout: Some(stdout),
            export,
            export_format,
        })
    }

    /// Emits one row to every sink (queued, never waits); `now` is the daemon's clock (JSON
    /// `emitted_ns`).
    pub fn emit(&mut self, row: &Row, now: Nanos) {
        if let Some(s) = &self.stdout {
            s.send(match self.format {
                Format::Text => row.text(),
                Format::Json => row.json(now),
            });
        }
        if let Some(x) = &self.export {
            let line = match self.export_format {
                ExportFormat::Compat => row.tsv_compat(),
                ExportFormat::Varta => Some(row.tsv()),
            };
            if let Some(line) = line {
                x.send(line);
            }
        }
    }

    /// A refused datagram: a `decode`/`mismatch` line in the compat export file, while its
    /// queue is less than half full.
    pub fn rejected(&mut self, at: Nanos, r: &Rejection) {
        let Some(x) = &self.export else { return };
        if self.export_format != ExportFormat::Compat {
            return;
        }
        let st = x.stats();
        let backlog = st
            .queued
            .load(Ordering::Relaxed)
            .saturating_sub(st.written.load(Ordering::Relaxed));
        if let Some(line) = rejection_tsv(at, r) {
            if backlog < (QUEUE_LINES / 2) as u64 {
                x.send(line);
            } else {
                st.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Prints an informational line (startup, shutdown) in the current format.
    pub fn info(&mut self, msg: &str) {
        let line = match self.format {
            Format::Text => format!("varta-watch: {msg}"),
            Format::Json => {
                let mut s = String::new();
                row::json_escape(msg, &mut s);
                format!("{{\"kind\":\"info\",\"detail\":\"{s}\"}}")
            }
        };
        if let Some(s) = &self.stdout {
            s.send(line);
        }
    }

    /// Nothing to do: writers flush whenever their queue runs empty. Kept so the loop states
    /// where its turn's output ends.
    pub fn flush(&mut self) {}

    /// Closes every queue and waits (bounded per sink, [`writer::CLOSE_WAIT`]) for the writers
    /// to write and sync what they accepted.
    pub fn close(&mut self) {
        for s in [self.export.as_mut(), self.stdout.as_mut()]
            .into_iter()
            .flatten()
        {
            s.close(writer::CLOSE_WAIT);
        }
    }

    /// Failed writes, flushes and syncs, all sinks.
    #[must_use]
    pub fn write_errors(&self) -> u64 {
        self.sinks()
            .map(|s| s.stats().errors.load(Ordering::Relaxed))
            .sum()
    }

    /// Lines dropped on a full queue, by sink; both labels (`stdout`, `export`) always.
    #[must_use]
    pub fn dropped(&self) -> Vec<(&'static str, u64)> {
        let of = |s: Option<&Sink>| s.map_or(0, |s| s.stats().dropped.load(Ordering::Relaxed));
        vec![
            ("stdout", of(self.stdout.as_ref())),
            ("export", of(self.export.as_ref())),
        ]
    }

    fn sinks(&self) -> impl Iterator<Item = &Sink> {
        [self.stdout.as_ref(), self.export.as_ref()]
            .into_iter()
            .flatten()
    }
}
