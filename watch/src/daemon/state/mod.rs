//! The state file (`--state-file`): what the observer knows survives a restart.
//!
//! The tracker's agent table is encoded by the core ([`Tracker::snapshot`], format in
//! `tracker::persist`); this shell wraps it in a file of *sections*, writes it atomically off
//! the loop's thread and reads it back at start, before READY.
//!
//! # File format (version 1, little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `VARTAWST` |
//! | 2 | file version (1) |
//! | 2 | number of sections |
//! | 8 each + len | section: tag (2), flags (2, bit 0 *required*), length (4), bytes |
//! | 32 | SHA-256 of everything before it |
//!
//! Sections: [`Section::Clock`] (boot id, `CLOCK_BOOTTIME` and wall clock at the snapshot),
//! [`Section::Tracker`] (the core's codec, unchanged), [`Section::AuditAnchor`] (the audit
//! chain's last sequence number and hash). A reader skips sections it does not know unless they
//! are flagged required; adding state (e.g. silences) is a new tag, an encoder and a parser
//! arm, and older files stay readable.
//!
//! # Clocks across a restart
//!
//! The tracker's clock is the daemon's `Instant` since start. At a snapshot the shell reads
//! `CLOCK_BOOTTIME` (which keeps counting through suspend) beside it; at restore it reads both
//! again, so an agent silent for `d` before the restart is silent for `d` plus the gap after
//! it, and stalls on time. The daemon's tracker clock starts at an offset (up to the stall
//! threshold plus the eviction age, see [`clock_back`]) so such past beats stay representable.
//!
//! After a reboot (the recorded boot id differs) `CLOCK_BOOTTIME` starts again: the gap is
//! then taken from the wall clock (zero if it went backwards), identities, streams and
//! tombstones are kept (replays stay refused), and every agent is treated as silent since its
//! last beat before the snapshot: those that were alive stall at once unless they beat again.
//!
//! # Failures
//!
//! An unsafe file (a symlink, not ours, any group/other permission) stops the start
//! ([`StateError::Unsafe`], exit 2). A corrupt, truncated or foreign file is renamed to
//! `PATH.corrupt-<unix seconds>` and the observer starts empty, saying so in one line, an
//! event and `varta_state_restore_failures_total`. A write that fails (disk full) is counted
//! (`varta_state_write_errors_total`), reported once per episode, and retried at the next
//! interval; the previous file stays intact until a complete one replaces it.

mod format;

pub use format::*;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::tracker::{Nanos, Tracker, TrackerConfig};
use rustix::fs::{Mode, OFlags};

/// Why the state file stops the start.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Refused like an unsafe key file.
    #[error("--state-file {}: {rule}", path.display())]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// The rule it breaks.
        rule: String,
    },
    /// Cannot be read (other than missing) or set aside.
    #[error("--state-file {}: {op}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// Reads `path` if it exists, refusing an unsafe one. `Ok(None)`: no file yet.
///
/// # Errors
/// [`StateError`] for an unsafe or unreadable file.
pub fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let unsafe_ = |rule: String| StateError::Unsafe {
        path: path.to_path_buf(),
        rule,
    };
    let io_err = |op, source| StateError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => return Err(unsafe_("is a symbolic link (refused)".into())),
        Err(e) => return Err(io_err("cannot open", e.into())),
    };
    let mut file = File::from(fd);
    crate::fsutil::check_private(&file).map_err(|e| match e {
        crate::fsutil::PrivateFileError::Io { op, source } => io_err(op, source),
        rule => unsafe_(rule.to_string()),
    })?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| io_err("cannot read", e))?;
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsynced, renamed over
/// it, and the directory fsynced. On failure the old file is untouched and the temporary one
/// removed.
///
/// # Errors
/// The failed operation's error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `PATH.corrupt-<unix seconds>`.
#[must_use]
pub fn aside_path(path: &Path, unix_secs: u64) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".corrupt-{unix_secs}"));
    PathBuf::from(s)
}

/// The state file's settings.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The file.
    pub path: PathBuf,
    /// Snapshot period, ns.
    pub interval_ns: u64,
}

/// Figures of the state file (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StateFigures {
    /// Snapshots written completely.
    pub snapshots: u64,
    /// Snapshot writes that failed.
    pub write_errors: u64,
    /// State files that could not be restored (set aside).
    pub restore_failures: u64,
    /// Time to encode the last snapshot, s.
    pub encode_seconds: f64,
    /// Time to write and fsync the last snapshot, s.
    pub write_seconds: f64,
    /// Size of the last snapshot, bytes.
    pub bytes: u64,
}

struct Done {
    buf: Vec<u8>,
    took: Duration,
    result: io::Result<()>,
}

/// The state file of a running daemon: restored at start, snapshotted every interval on a
/// helper thread (one write at a time), and once more at shutdown.
pub struct StateStore {
    cfg: StateConfig,
    next_due: Nanos,
    /// The buffer, when no write holds it.
    buf: Option<Vec<u8>>,
    jobs: Option<Sender<Vec<u8>>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    failing: bool,
    /// Figures for the metrics.
    pub figures: StateFigures,
    /// How far back the tracker clock starts (for the daemon's uptime).
    pub clock_back: Duration,
    /// The audit anchor found in the restored file.
    pub restored_anchor: Option<(u64, [u8; 32])>,
    /// The silences section found in the restored file (taken by the policy shell).
    pub restored_silences: Option<Vec<u8>>,
    /// The silences section to write with each snapshot (set by the policy shell).
    pub silences: Option<Vec<u8>>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.cfg.path)
            .field("figures", &self.figures)
            .finish_non_exhaustive()
    }
}

/// What [`StateStore::open`] found.
#[derive(Debug)]
pub struct Restored {
    /// The tracker (restored or empty).
    pub tracker: Tracker,
    /// One line for the operator (restored N agents, or set aside because ...), if any.
    pub notice: Option<String>,
}

impl StateStore {
    /// Reads and restores the state file (or starts empty, setting a bad one aside) and
    /// starts the writer thread. `tracker_now` and `clock_back` are the daemon's clock.
    ///
    /// # Errors
    /// [`StateError`] for an unsafe file, or one that cannot be read or set aside.
    pub fn open(
        cfg: StateConfig,
        tracker_cfg: TrackerConfig,
        tracker_now: Nanos,
        clock_back: Duration,
    ) -> Result<(StateStore, Restored), StateError> {
        let dir = match cfg.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(StateError::Io {
                path: cfg.path.clone(),
                op: "its directory",
                source: io::Error::new(io::ErrorKind::NotFound, "is missing or not a directory"),
            });
        }
        let mut figures = StateFigures::default();
        let mut restored_anchor = None;
        let mut restored_silences = None;
        let (tracker, notice) = match read_checked(&cfg.path)? {
            None => (Tracker::new(tracker_cfg), None),
            Some(bytes) => {
                let now = Clocks::now();
                let result = parse(&bytes).and_then(|p| {
                    let at = restore_mapping(&p.clocks, &now, tracker_now);
                    let t = Tracker::restore(tracker_cfg.clone(), p.tracker, at)?;
                    let rebooted = p.clocks.boot_id != now.boot_id;
                    Ok((t, p.anchor, rebooted, p.silences.map(<[u8]>::to_vec)))
                });
                match result {
                    Ok((t, anchor, rebooted, silences)) => {
                        restored_anchor = anchor;
                        restored_silences = silences;
                        let line = format!(
                            "state restored from {}: {} agents{}",
                            cfg.path.display(),
                            t.len(),
                            if rebooted {
                                " (written before a reboot: every agent counts as silent since the snapshot)"
                            } else {
                                ""
                            }
                        );
                        (t, Some(line))
                    }
                    Err(e) => {
                        figures.restore_failures += 1;
                        let aside = aside_path(&cfg.path, now.wall / 1_000_000_000);
                        fs::rename(&cfg.path, &aside).map_err(|source| StateError::Io {
                            path: cfg.path.clone(),
                            op: "cannot set the unreadable file aside",
                            source,
                        })?;
                        let line = format!(
                            "state file {} not restored: {e}; moved to {}, starting empty",
                            cfg.path.display(),
                            aside.display()
                        );
                        (Tracker::new(tracker_cfg), Some(line))
                    }
                }
            }
        };
        let (jobs, job_rx) = mpsc::channel::<Vec<u8>>();
        let (done_tx, done) = mpsc::channel::<Done>();
        let path = cfg.path.clone();
        let thread = std::thread::Builder::new()
            .name("varta-state".into())
            .spawn(move || {
                for buf in job_rx {
                    let t0 = Instant::now();
                    let result = write_atomic(&path, &buf);
                    let took = t0.elapsed();
                    if done_tx.send(Done { buf, took, result }).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| StateError::Io {
                path: cfg.path.clone(),
                op: "cannot start the writer thread",
                source,
            })?;
        let next_due = tracker_now.saturating_add(cfg.interval_ns);
        Ok((
            StateStore {
                cfg,
                next_due,
                buf: Some(Vec::new()),
                jobs: Some(jobs),
                done,
                thread: Some(thread),
                failing: false,
                figures,
                clock_back,
                restored_anchor,
                restored_silences,
                silences: None,
            },
            Restored { tracker, notice },
        ))
    }

    /// When the next snapshot is due (tracker time).
    #[must_use]
    pub fn next_due(&self) -> Nanos {
        self.next_due
    }

    fn finished(&mut self, d: Done) {
        match d.result {
            Ok(()) => {
                self.figures.snapshots += 1;
                self.figures.write_seconds = d.took.as_secs_f64();
                self.figures.bytes = d.buf.len() as u64;
                if self.failing {
                    self.failing = false;
                    eprintln!(
                        "varta-watch: state file {} written again",
                        self.cfg.path.display()
                    );
                }
            }
            Err(e) => {
                self.figures.write_errors += 1;
                if !self.failing {
                    self.failing = true;
                    eprintln!(
                        "varta-watch: cannot write state file {}: {e} (retried every interval; further errors only counted in varta_state_write_errors_total)",
                        self.cfg.path.display()
                    );
                }
            }
        }
        self.buf = Some(d.buf);
    }

    /// Collects a finished write, if any (never blocks).
    pub fn poll(&mut self) {
        while let Ok(d) = self.done.try_recv() {
            self.finished(d);
        }
    }

    /// Encodes the snapshot into `buf`, timed.
    fn encode(
        &mut self,
        tracker: &Tracker,
        now: Nanos,
        anchor: Option<(u64, [u8; 32])>,
        buf: &mut Vec<u8>,
    ) {
        let t0 = Instant::now();
        encode_with(
            tracker,
            now,
            &Clocks::now(),
            anchor,
            self.silences.as_deref(),
            buf,
        );
        self.figures.encode_seconds = t0.elapsed().as_secs_f64();
    }

    /// Takes a snapshot when one is due and no write is in flight: encodes here, hands the
    /// bytes to the writer thread. `anchor` is the audit chain's last record.
    pub fn tick(&mut self, tracker: &Tracker, now: Nanos, anchor: Option<(u64, [u8; 32])>) {
        self.poll();
        if now < self.next_due {
            return;
        }
        // A write still in flight: the next one waits for it (never two at once).
        let Some(mut buf) = self.buf.take() else {
            return;
        };
        self.next_due = now.saturating_add(self.cfg.interval_ns);
        self.encode(tracker, now, anchor, &mut buf);
        if let Some(jobs) = &self.jobs {
            if let Err(mpsc::SendError(buf)) = jobs.send(buf) {
                self.buf = Some(buf);
            }
        }
    }

    /// The last snapshot, at shutdown: waits for a write in flight, then writes on this
    /// thread. Returns the error of a failed write.
    ///
    /// # Errors
    /// The failed write's error.
    pub fn finish(
        &mut self,
        tracker: &Tracker,
        now: Nanos,
        anchor: Option<(u64, [u8; 32])>,
    ) -> io::Result<()> {
        // Closing the job channel ends the thread once its write is done.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.poll();
        let mut buf = self.buf.take().unwrap_or_default();
        self.encode(tracker, now, anchor, &mut buf);
        let t1 = Instant::now();
        let result = write_atomic(&self.cfg.path, &buf);
        self.finished(Done {
            buf,
            took: t1.elapsed(),
            result: match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            },
        });
        result
    }
}

/// The daemon's tracker at start: restored from `cfg`'s file when there is one, else empty;
/// with the store and the line to report. `start` is the daemon's clock origin.
///
/// # Errors
/// [`StateError`] for an unsafe or unreadable state file.
pub fn restore(
    cfg: Option<StateConfig>,
    tracker_cfg: TrackerConfig,
    start: Instant,
) -> Result<(Tracker, Option<StateStore>, Option<String>), StateError> {
    let Some(cfg) = cfg else {
        return Ok((Tracker::new(tracker_cfg), None, None));
    };
    let elapsed = start.elapsed();
    let now = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    let (store, r) = StateStore::open(cfg, tracker_cfg, now, elapsed)?;
    Ok((r.tracker, Some(store), r.notice))
}

impl super::Daemon {
    /// A periodic snapshot, when due (encoded here, written by the helper thread).
    pub(super) fn tick_state(&mut self, now: Nanos) {
        let Some(s) = self.state.as_mut() else { return };
        if now < s.next_due() {
            return;
        }
        let anchor = self
            .recovery
            .as_ref()
            .and_then(crate::recovery::Recovery::audit_last);
        s.tick(&self.tracker, now, anchor);
    }

    /// The last snapshot at shutdown, after recovery children are stopped (so the audit
    /// anchor covers their records).
    pub(super) fn finish_state(&mut self) {
        let now = self.now();
        let anchor = self
            .recovery
            .as_ref()
            .and_then(crate::recovery::Recovery::audit_last);
        if let Some(s) = self.state.as_mut() {
            match s.finish(&self.tracker, now, anchor) {
                Ok(()) => eprintln!(
                    "varta-watch: state saved to {} ({} agents, {} bytes)",
                    s.cfg.path.display(),
                    self.tracker.len(),
                    s.figures.bytes
                ),
                Err(e) => eprintln!(
                    "varta-watch: cannot save state to {}: {e}",
                    s.cfg.path.display()
                ),
            }
        }
    }
}

/// `varta-watch state …`.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StateCommand,
}

/// State-file subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Print the audit anchor `SEQ:HASH` recorded in a state file, for
    /// `audit verify --anchor`. Exit 0 printed, 1 no anchor recorded, 2 unreadable or damaged.
    Anchor {
        /// The state file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs `state …`; returns the exit status.
#[must_use]
pub fn run(a: &StateArgs) -> i32 {
    match &a.command {
        StateCommand::Anchor { file } => {
            let bytes = match fs::read(file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("varta-watch: {}: {e}", file.display());
                    return 2;
                }
            };
            match parse(&bytes) {
                Ok(Parsed {
                    anchor: Some((seq, hash)),
                    ..
                }) => {
                    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                    println!("{seq}:{hex}");
                    0
                }
                Ok(_) => {
                    eprintln!(
                        "varta-watch: {}: no audit anchor recorded (the observer ran without --recovery-audit-file)",
                        file.display()
                    );
                    1
                }
                Err(e) => {
                    eprintln!("varta-watch: {}: {e}", file.display());
                    2
                }
            }
        }
    }
}

/// Compares the audit file's last record (`last`, read when the file was opened) with the
/// anchor the state file recorded at its last snapshot: `Some(why)` when the file ends before
/// the anchored record (records were cut) or its anchored last record differs (edited or
/// replaced). A file that goes on past the anchor is fine: records written after the last
/// snapshot (a SIGKILL, a crash) are not anchored yet.
#[must_use]
pub fn audit_anchor_mismatch(
    anchor: Option<(u64, [u8; 32])>,
    last: Option<(u64, [u8; 32])>,
) -> Option<String> {
    let ((aseq, ahash), (fseq, fhash)) = (anchor?, last?);
    if fseq < aseq {
        Some(format!(
            "the audit file ends at record {fseq}, but the state file anchored record {aseq}: records were cut"
        ))
    } else if fseq == aseq && fhash != ahash {
        Some(format!(
            "the audit file's record {fseq} is not the one the state file anchored: it was edited or replaced"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
