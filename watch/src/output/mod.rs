//! The output room: event lines on stdout (text or JSON lines) and the TSV event file.
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

mod export;
mod row;

use std::io::{self, BufWriter, Write};

pub use export::ExportFile;
pub use row::{listener_label, Row};

use crate::config::Format;
use crate::tracker::Nanos;

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
                row::json_escape(msg, &mut s);
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
