//! The audit file: appends chained records ([`super::audit`]), syncs, rotates, and survives a
//! full disk.
//!
//! Opened with `O_NOFOLLOW | O_CLOEXEC | O_APPEND`, mode 0600; a file that is not regular, is
//! owned by another user or gives group/others access is refused at start. On start the tail
//! of the existing file (or, if it is empty, of the newest rotated generation) is read so the
//! chain continues where it stopped; an incomplete last line (a crash mid-write) is cut off.
//! Each record is written with one `write(2)` and `fdatasync`ed every
//! `--recovery-audit-sync-every` records. A write that fails (full disk, I/O error) is undone
//! (`ftruncate` to the size before it), the record is counted as dropped and the alarm is
//! raised once per failure run; the next record tries again, so the trail resumes, still
//! chained, when space returns.
//!
//! The writes run on the observer's loop, so their time is watched: an `fdatasync` longer than
//! `--audit-fsync-budget-ms` or a rotation longer than `--audit-rotation-budget-ms` is counted
//! (`varta_recovery_audit_over_budget_total{op}`) and reported once per run of overruns.
//! `--audit-sync-interval-ms` (0: off) also syncs once that long has passed since the last
//! sync, whatever `--recovery-audit-sync-every` says.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::audit::{self, Chain, Hash, Record, GENESIS};

/// Generations kept by rotation: `PATH.1` (newest) … `PATH.5`.
pub const GENERATIONS: u32 = 5;
/// How much of the end of a file is read to find its last record.
const TAIL: u64 = 2 * audit::MAX_LINE as u64;

/// Settings of the audit file.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `--recovery-audit-file`.
    pub path: PathBuf,
    /// `--recovery-audit-key-file`, read: HMAC links instead of SHA-256.
    pub chain: Chain,
    /// `--recovery-audit-sync-every` (at least 1).
    pub sync_every: u32,
    /// `--recovery-audit-max-bytes`.
    pub max_bytes: u64,
    /// `--audit-sync-interval-ms` (`None`: only every `sync_every` records).
    pub sync_interval: Option<Duration>,
    /// `--audit-fsync-budget-ms`: an `fdatasync` slower than this is counted.
    pub fsync_budget: Duration,
    /// `--audit-rotation-budget-ms`: a rotation slower than this is counted.
    pub rotation_budget: Duration,
}

/// The audit file operations that have a time budget, in the order of
/// [`AuditLog::over_budget`]: the one spelling of `varta_recovery_audit_over_budget_total{op}`.
pub const BUDGETED_OPS: [&str; 2] = ["fsync", "rotation"];

/// Why the audit file cannot be used at start: the rules of [`crate::fsutil`].
pub use crate::fsutil::PrivateFileError as AuditOpenError;

/// The audit writer.
#[derive(Debug)]
pub struct AuditLog {
    cfg: AuditConfig,
    file: Option<File>,
    size: u64,
    seq: u64,
    last: Hash,
    unsynced: u32,
    failing: bool,
    dropped: u64,
    errors: u64,
    last_sync: Instant,
    /// Overruns by [`BUDGETED_OPS`] index.
    over_budget: [u64; 2],
    /// Whether the last budgeted operation overran (so a run of them is reported once).
    overrunning: bool,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> AuditOpenError {
    move |source| AuditOpenError::Io { op, source }
}

/// Opens `path` for appending with the file rules of the module docs.
fn open_checked(path: &Path) -> Result<File, AuditOpenError> {
    crate::fsutil::open_private(path, true)
}

/// Reads the last `TAIL` bytes of `file`.
fn read_tail(file: &mut File, size: u64) -> io::Result<Vec<u8>> {
    let from = size.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    file.take(TAIL).read_to_end(&mut buf)?;
    Ok(buf)
}

/// `PATH.n`.
#[must_use]
pub fn generation(path: &Path, n: u32) -> PathBuf {
    crate::fsutil::generation(path, n)
}

impl AuditLog {
    /// Opens (creating) the audit file and finds where the chain stopped.
    ///
    /// # Errors
    /// [`AuditOpenError`] naming the failed rule.
    pub fn open(cfg: AuditConfig) -> Result<AuditLog, AuditOpenError> {
        let mut file = open_checked(&cfg.path)?;
        let mut size = file.metadata().map_err(io_err("stat"))?.len();
        let tail = read_tail(&mut file, size).map_err(io_err("read"))?;
        if !tail.is_empty() && tail.last() != Some(&b'\n') {
            // A record cut by a crash mid-write: drop the fragment so the file stays a list
            // of whole records (the chain continues from the last complete one).
            let keep = tail
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(size - tail.len() as u64, |i| {
                    size - tail.len() as u64 + i as u64 + 1
                });
            eprintln!(
                "varta-watch: audit file {}: dropping an incomplete last line ({} bytes)",
                cfg.path.display(),
                size - keep
            );
            file.set_len(keep).map_err(io_err("truncate"))?;
            size = keep;
        }
        let mut found = audit::last_record(&cfg.chain, &tail);
        if found.is_none() && size == 0 {
            // Rotated just before the restart: continue from the newest generation.
            if let Ok(mut g) = crate::fsutil::open_read_nofollow(&generation(&cfg.path, 1)) {
                let gsize = g.metadata().map_err(io_err("stat"))?.len();
                let t = read_tail(&mut g, gsize).map_err(io_err("read"))?;
                found = audit::last_record(&cfg.chain, &t);
            }
        }
        if found.is_none() && size > 0 {
            eprintln!(
                "varta-watch: audit file {}: last line is not an audit record; the chain restarts (verify will report it)",
                cfg.path.display()
            );
        }
        let (seq, last) = found.unwrap_or((0, GENESIS));
        Ok(AuditLog {
            cfg,
            file: Some(file),
            size,
            seq,
            last,
            unsynced: 0,
            failing: false,
            dropped: 0,
            errors: 0,
            last_sync: Instant::now(),
            over_budget: [0; 2],
            overrunning: false,
        })
    }

    /// Budget overruns by operation, as `(op, count)` for every op of [`BUDGETED_OPS`].
    #[must_use]
    pub fn over_budget(&self) -> [(&'static str, u64); 2] {
        [
            (BUDGETED_OPS[0], self.over_budget[0]),
            (BUDGETED_OPS[1], self.over_budget[1]),
        ]
    }

    /// Counts `took` against the budget of [`BUDGETED_OPS`]`[op]`.
    fn budget(&mut self, op: usize, took: Duration) {
        let budget = if op == 0 {
            self.cfg.fsync_budget
        } else {
            self.cfg.rotation_budget
        };
        if took <= budget {
            self.overrunning = false;
            return;
        }
        self.over_budget[op] += 1;
        if !self.overrunning {
            eprintln!(
                "varta-watch: audit file {}: {} took {} ms (budget {} ms); the observer's loop waited for it (further overruns only counted)",
                self.cfg.path.display(),
                BUDGETED_OPS[op],
                took.as_millis(),
                budget.as_millis()
            );
        }
        self.overrunning = true;
    }

    /// `fdatasync`, timed against its budget.
    fn datasync(&mut self) -> io::Result<()> {
        let Some(f) = self.file.as_ref() else {
            return Ok(());
        };
        let t = Instant::now();
        let r = rustix::fs::fdatasync(f).map_err(io::Error::from);
        self.last_sync = Instant::now();
        self.budget(0, t.elapsed());
        r
    }

    /// The last record written: `(seq, hash)` (`(0, zeros)` before the first), to anchor the
    /// chain elsewhere (the state file).
    #[must_use]
    pub fn last(&self) -> (u64, Hash) {
        (self.seq, self.last)
    }

    /// Records that could not be written (`varta_recovery_audit_dropped_total`).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Write, sync, rotate and reopen failures.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Whether the last attempt failed (the alarm is up).
    #[must_use]
    pub fn failing(&self) -> bool {
        self.failing
    }

    fn alarm(&mut self, what: &str, e: &io::Error) {
        self.errors += 1;
        if !self.failing {
            eprintln!(
                "varta-watch: ALARM: audit file {}: {what}: {e}; recovery decisions are counted as unaudited until it works again",
                self.cfg.path.display()
            );
        }
        self.failing = true;
    }

    fn rotate(&mut self) -> io::Result<()> {
        let t = Instant::now();
        self.datasync()?;
        self.file = None;
        let r = crate::fsutil::rotate(&self.cfg.path, GENERATIONS).and_then(|()| self.reopen());
        self.budget(1, t.elapsed());
        r
    }

    fn reopen(&mut self) -> io::Result<()> {
        let f = open_checked(&self.cfg.path)?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// Appends one record (`seq` and link are filled in); `mono_ns` is observer time.
    /// Returns whether it was written; a failure is counted and alarmed, never fatal.
    pub fn append(
        &mut self,
        mono_ns: u64,
        agent: &str,
        child: Option<u32>,
        outcome: &str,
        detail: &str,
    ) -> bool {
        let wall_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let agent = audit::sanitize(agent);
        let outcome = audit::sanitize(outcome);
        let detail = audit::sanitize(detail);
        let line = Record {
            seq: self.seq + 1,
            wall_ns,
            mono_ns,
            agent: &agent,
            child,
            outcome: &outcome,
            detail: &detail,
            prev: self.last,
        }
        .emit();
        let was_failing = self.failing;
        self.failing = false;
        match self.write_line(&line) {
            Ok(()) => {
                if was_failing && !self.failing {
                    eprintln!(
                        "varta-watch: audit file {}: writing again (seq {}); {} record(s) were dropped",
                        self.cfg.path.display(),
                        self.seq + 1,
                        self.dropped
                    );
                }
                self.seq += 1;
                self.last = self.cfg.chain.link(line.as_bytes());
                true
            }
            Err((what, e)) => {
                self.dropped += 1;
                self.failing = was_failing;
                self.alarm(what, &e);
                false
            }
        }
    }

    fn write_line(&mut self, line: &str) -> Result<(), (&'static str, io::Error)> {
        let len = line.len() as u64 + 1;
        if self.file.is_none() {
            self.reopen().map_err(|e| ("reopen", e))?;
        }
        if self.size > 0 && self.size + len > self.cfg.max_bytes {
            self.rotate().map_err(|e| ("rotate", e))?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(("reopen", io::Error::other("no file")));
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if let Err(e) = file.write_all(&buf) {
            // Undo a partial write so the file holds whole records only.
            let _ = file.set_len(self.size);
            return Err(("write", e));
        }
        self.size += len;
        self.unsynced += 1;
        let interval_due = self
            .cfg
            .sync_interval
            .is_some_and(|i| self.last_sync.elapsed() >= i);
        if self.unsynced >= self.cfg.sync_every || interval_due {
            self.unsynced = 0;
            if let Err(e) = self.datasync() {
                // The record is in the file (the chain goes on through it) but may not be
                // durable: an alarm, not a dropped record.
                self.alarm("fdatasync", &e);
            }
        }
        Ok(())
    }

    /// Syncs what is unsynced (at shutdown).
    pub fn sync(&mut self) {
        if self.unsynced == 0 {
            return;
        }
        match self.datasync() {
            Err(e) => self.alarm("fdatasync", &e),
            Ok(()) => self.unsynced = 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(
        dir: &Path,
        sync_every: u32,
        sync_interval: Option<Duration>,
        budget: Duration,
    ) -> AuditLog {
        let _ = std::fs::create_dir_all(dir);
        AuditLog::open(AuditConfig {
            path: dir.join("audit.log"),
            chain: Chain::Sha256,
            sync_every,
            max_bytes: 4096,
            sync_interval,
            fsync_budget: budget,
            rotation_budget: budget,
        })
        .unwrap()
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("varta-audit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn sync_interval_syncs_before_sync_every_records() {
        let dir = tmp("interval");
        let mut a = log(&dir, 1000, None, Duration::from_secs(60));
        assert!(a.append(1, "unix:7", Some(9), "spawned", "-"));
        assert_eq!(a.unsynced, 1, "no interval: waits for 1000 records");
        let mut b = log(
            &dir.join("b"),
            1000,
            Some(Duration::from_nanos(1)),
            Duration::from_secs(60),
        );
        assert!(b.append(1, "unix:7", Some(9), "spawned", "-"));
        assert_eq!(b.unsynced, 0, "the interval passed: synced at once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn slow_fsyncs_and_rotations_are_counted_against_their_budget() {
        let dir = tmp("budget");
        let mut a = log(&dir, 1, None, Duration::from_secs(60));
        assert!(a.append(1, "unix:7", Some(9), "spawned", "-"));
        assert_eq!(a.over_budget(), [("fsync", 0), ("rotation", 0)]);
        // A zero budget: every operation overruns it.
        let mut b = log(&dir.join("b"), 1, None, Duration::ZERO);
        for i in 0..60 {
            assert!(b.append(i, "unix:7", Some(9), "spawned", &"x".repeat(80)));
        }
        let [(_, fsyncs), (_, rotations)] = b.over_budget();
        assert!(fsyncs >= 60, "{fsyncs}");
        assert!(rotations >= 1, "4096-byte files rotate: {rotations}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
