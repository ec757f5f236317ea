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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::tracker::{ClockMapping, Nanos, PersistError, Tracker, TrackerConfig};

/// The state file's magic bytes.
pub const FILE_MAGIC: [u8; 8] = *b"VARTAWST";
/// The file version written and read.
pub const FILE_VERSION: u16 = 1;
const HEAD_LEN: usize = 8 + 2 + 2;
const SECTION_HEAD_LEN: usize = 2 + 2 + 4;
const SUM_LEN: usize = 32;
/// Section flag: a reader that does not know this tag must refuse the file.
const REQUIRED: u16 = 1;
/// Length of a boot id (`/proc/sys/kernel/random/boot_id`, a UUID in text).
const BOOT_ID_LEN: usize = 36;
const CLOCK_LEN: usize = BOOT_ID_LEN + 8 + 8;
const ANCHOR_LEN: usize = 8 + 32;

/// The sections of a state file. New state is a new tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Section {
    /// Boot id (36 bytes), `CLOCK_BOOTTIME` ns and wall-clock ns since the epoch at the
    /// snapshot. Required.
    Clock = 1,
    /// The tracker's agent table ([`Tracker::snapshot`]). Required.
    Tracker = 2,
    /// The audit chain's last record: sequence number (8) and hash (32). Optional.
    AuditAnchor = 3,
    /// The silences in force (JSON of [`crate::policy::silence::SilenceSet`]). Optional.
    Silences = 4,
}

impl Section {
    fn from_u16(t: u16) -> Option<Section> {
        match t {
            1 => Some(Section::Clock),
            2 => Some(Section::Tracker),
            3 => Some(Section::AuditAnchor),
            4 => Some(Section::Silences),
            _ => None,
        }
    }
}

/// The clocks at a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// `/proc/sys/kernel/random/boot_id` (zeros when unreadable).
    pub boot_id: [u8; BOOT_ID_LEN],
    /// `CLOCK_BOOTTIME`, ns.
    pub boottime: u64,
    /// Wall clock, ns since the Unix epoch.
    pub wall: u64,
}

impl Clocks {
    /// Reads the three clocks now.
    #[must_use]
    pub fn now() -> Clocks {
        Clocks {
            boot_id: boot_id(),
            boottime: boottime_ns(),
            wall: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}

/// `CLOCK_BOOTTIME` in nanoseconds.
#[must_use]
pub fn boottime_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

fn boot_id() -> [u8; BOOT_ID_LEN] {
    let mut id = [0u8; BOOT_ID_LEN];
    if let Ok(t) = fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let t = t.trim().as_bytes();
        let n = t.len().min(BOOT_ID_LEN);
        id[..n].copy_from_slice(&t[..n]);
    }
    id
}

/// Why a state file's content was not loaded (the file is then set aside).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// Shorter than its header and checksum, or than a section says.
    #[error("truncated ({len} bytes)")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// Not a state file.
    #[error("not a varta state file (bad magic)")]
    BadMagic,
    /// Another file version.
    #[error("state file version {found}, this observer reads {FILE_VERSION}")]
    UnsupportedVersion {
        /// Found.
        found: u16,
    },
    /// Checksum mismatch (corruption, a torn write).
    #[error("checksum mismatch")]
    BadChecksum,
    /// A section of a newer writer this reader must understand.
    #[error("unknown required section {tag}")]
    UnknownRequired {
        /// Its tag.
        tag: u16,
    },
    /// A section twice, of the wrong length, or missing.
    #[error("section {section:?}: {why}")]
    BadSection {
        /// The section.
        section: Section,
        /// What is wrong.
        why: &'static str,
    },
    /// The tracker's codec refused its section.
    #[error("{0}")]
    Tracker(#[from] PersistError),
}

/// A parsed state file, borrowing the tracker section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The clocks at the snapshot.
    pub clocks: Clocks,
    /// The tracker codec's bytes.
    pub tracker: &'a [u8],
    /// The audit chain's last `(seq, hash)`, if it was recorded.
    pub anchor: Option<(u64, [u8; 32])>,
    /// The silences section's bytes, if it was written.
    pub silences: Option<&'a [u8]>,
}

fn section_head(out: &mut Vec<u8>, s: Section, flags: u16, len: usize) {
    out.extend_from_slice(&(s as u16).to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

/// Encodes a whole state file into `out` (cleared first): `tracker` snapshotted at
/// `tracker_now` on the clocks `clocks`, and the audit `anchor`.
pub fn encode(
    tracker: &Tracker,
    tracker_now: Nanos,
    clocks: &Clocks,
    anchor: Option<(u64, [u8; 32])>,
    out: &mut Vec<u8>,
) {
    encode_with(tracker, tracker_now, clocks, anchor, None, out);
}

/// [`encode`] with the silences section (`silences`: its bytes, written when given).
pub fn encode_with(
    tracker: &Tracker,
    tracker_now: Nanos,
    clocks: &Clocks,
    anchor: Option<(u64, [u8; 32])>,
    silences: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&FILE_MAGIC);
    out.extend_from_slice(&FILE_VERSION.to_le_bytes());
    let sections: u16 = 2 + u16::from(anchor.is_some()) + u16::from(silences.is_some());
    out.extend_from_slice(&sections.to_le_bytes());
    section_head(out, Section::Clock, REQUIRED, CLOCK_LEN);
    out.extend_from_slice(&clocks.boot_id);
    out.extend_from_slice(&clocks.boottime.to_le_bytes());
    out.extend_from_slice(&clocks.wall.to_le_bytes());
    // The tracker section's length is known once the codec has written it.
    let len_at = out.len() + 4;
    section_head(out, Section::Tracker, REQUIRED, 0);
    let body = out.len();
    tracker.snapshot(
        ClockMapping {
            tracker_now,
            clock_now: clocks.boottime,
        },
        out,
    );
    let len = u32::try_from(out.len() - body).unwrap_or(u32::MAX);
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    if let Some((seq, hash)) = anchor {
        section_head(out, Section::AuditAnchor, 0, ANCHOR_LEN);
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&hash);
    }
    if let Some(bytes) = silences {
        section_head(out, Section::Silences, 0, bytes.len());
        out.extend_from_slice(bytes);
    }
    let sum = Sha256::digest(&out[..]);
    out.extend_from_slice(&sum);
}

/// Checks and splits a state file into its sections.
///
/// # Errors
/// A [`ContentError`] naming what is wrong.
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, ContentError> {
    if bytes.len() < HEAD_LEN + SUM_LEN {
        return Err(ContentError::Truncated { len: bytes.len() });
    }
    if bytes[..8] != FILE_MAGIC {
        return Err(ContentError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FILE_VERSION {
        return Err(ContentError::UnsupportedVersion { found: version });
    }
    let (body, sum) = bytes.split_at(bytes.len() - SUM_LEN);
    if Sha256::digest(body).as_slice() != sum {
        return Err(ContentError::BadChecksum);
    }
    let count = u16::from_le_bytes([bytes[10], bytes[11]]);
    let mut at = HEAD_LEN;
    let mut clocks = None;
    let mut tracker = None;
    let mut anchor = None;
    let mut silences = None;
    let bad = |section, why| ContentError::BadSection { section, why };
    for _ in 0..count {
        let head = body
            .get(at..at + SECTION_HEAD_LEN)
            .ok_or(ContentError::Truncated { len: bytes.len() })?;
        let tag = u16::from_le_bytes([head[0], head[1]]);
        let flags = u16::from_le_bytes([head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        at += SECTION_HEAD_LEN;
        let data = at
            .checked_add(len)
            .and_then(|end| body.get(at..end))
            .ok_or(ContentError::Truncated { len: bytes.len() })?;
        at += len;
        match Section::from_u16(tag) {
            None if flags & REQUIRED != 0 => return Err(ContentError::UnknownRequired { tag }),
            None => {}
            Some(s @ Section::Clock) => {
                if clocks.is_some() {
                    return Err(bad(s, "appears twice"));
                }
                if data.len() != CLOCK_LEN {
                    return Err(bad(s, "wrong length"));
                }
                let mut boot_id = [0u8; BOOT_ID_LEN];
                boot_id.copy_from_slice(&data[..BOOT_ID_LEN]);
                let u = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&data[i..i + 8]);
                    u64::from_le_bytes(b)
                };
                clocks = Some(Clocks {
                    boot_id,
                    boottime: u(BOOT_ID_LEN),
                    wall: u(BOOT_ID_LEN + 8),
                });
            }
            Some(s @ Section::Tracker) if tracker.is_some() => {
                return Err(bad(s, "appears twice"));
            }
            Some(Section::Tracker) => tracker = Some(data),
            Some(s @ Section::AuditAnchor) => {
                if data.len() != ANCHOR_LEN {
                    return Err(bad(s, "wrong length"));
                }
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&data[..8]);
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&data[8..]);
                if anchor.replace((u64::from_le_bytes(seq), hash)).is_some() {
                    return Err(bad(s, "appears twice"));
                }
            }
            Some(s @ Section::Silences) if silences.is_some() => {
                return Err(bad(s, "appears twice"));
            }
            Some(Section::Silences) => silences = Some(data),
        }
    }
    if at != body.len() {
        return Err(ContentError::Truncated { len: bytes.len() });
    }
    Ok(Parsed {
        clocks: clocks.ok_or(bad(Section::Clock, "missing"))?,
        tracker: tracker.ok_or(bad(Section::Tracker, "missing"))?,
        anchor,
        silences,
    })
}

/// The clock mapping for restoring a file written at `then` into a tracker at `tracker_now`
/// when the clocks read `now`: `CLOCK_BOOTTIME` on the same boot; after a reboot, the
/// snapshot's own boottime advanced by the wall-clock gap (see the module docs).
#[must_use]
pub fn restore_mapping(then: &Clocks, now: &Clocks, tracker_now: Nanos) -> ClockMapping {
    let same_boot = then.boot_id == now.boot_id && then.boot_id != [0; BOOT_ID_LEN];
    let clock_now = if same_boot {
        now.boottime
    } else {
        then.boottime
            .saturating_add(now.wall.saturating_sub(then.wall))
    };
    ClockMapping {
        tracker_now,
        clock_now,
    }
}

/// How far back the daemon's tracker clock starts when a state file is used: restored beats
/// up to this old keep their exact time (older ones are clamped to the clock's zero, which at
/// this offset is already past any stall deadline).
#[must_use]
pub fn clock_back(threshold_ns: u64, evict_after_ns: u64) -> Duration {
    Duration::from_nanos(threshold_ns.saturating_add(evict_after_ns))
}

/// The daemon's clock origin: `now` minus [`clock_back`], or less when the monotonic clock
/// has not run that long.
#[must_use]
pub fn clock_origin(now: Instant, back: Duration) -> Instant {
    let mut b = back;
    loop {
        if let Some(t) = now.checked_sub(b) {
            return t;
        }
        if b.is_zero() {
            return now;
        }
        b /= 2;
    }
}

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
    let st = rustix::fs::fstat(&fd).map_err(|e| io_err("cannot stat", e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(unsafe_("is not a regular file".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(unsafe_(format!(
            "owned by uid {}, not by us ({me})",
            st.st_uid
        )));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(unsafe_(format!(
            "mode {mode:04o} gives group/others access; chmod 600 it"
        )));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut File::from(fd), &mut bytes).map_err(|e| io_err("cannot read", e))?;
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
        let t0 = Instant::now();
        encode_with(
            tracker,
            now,
            &Clocks::now(),
            anchor,
            self.silences.as_deref(),
            &mut buf,
        );
        self.figures.encode_seconds = t0.elapsed().as_secs_f64();
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
        let t0 = Instant::now();
        encode_with(
            tracker,
            now,
            &Clocks::now(),
            anchor,
            self.silences.as_deref(),
            &mut buf,
        );
        self.figures.encode_seconds = t0.elapsed().as_secs_f64();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::TrackerConfig;

    fn tracker_with_agent() -> Tracker {
        let mut t = Tracker::new(cfg());
        let origin = crate::tracker::Origin::Unix { pid: 42, uid: 7 };
        let frame = vlp_core::Frame::new(vlp_core::Status::Ok, 42, 1, 1, 0).expect("valid");
        let _ = t.handle_datagram(5_000_000, &origin, &frame.emit());
        assert_eq!(t.len(), 1);
        t
    }

    #[test]
    fn the_silences_section_round_trips_and_is_optional() {
        let t = tracker_with_agent();
        let clocks = Clocks::now();
        let mut out = Vec::new();
        encode_with(&t, 9, &clocks, None, Some(b"{\"x\":1}"), &mut out);
        assert_eq!(
            parse(&out).expect("parses").silences,
            Some(&b"{\"x\":1}"[..])
        );
        encode(&t, 9, &clocks, None, &mut out);
        assert_eq!(parse(&out).expect("parses").silences, None);
    }

    fn cfg() -> TrackerConfig {
        TrackerConfig {
            allowed_uids: vec![7],
            ..TrackerConfig::default()
        }
    }

    fn clocks() -> Clocks {
        Clocks {
            boot_id: *b"01234567-89ab-cdef-0123-456789abcdef",
            boottime: 10_000_000_000,
            wall: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn round_trip_keeps_sections() {
        let t = tracker_with_agent();
        let mut out = Vec::new();
        encode(&t, 6_000_000, &clocks(), Some((7, [9; 32])), &mut out);
        let p = parse(&out).expect("parses");
        assert_eq!(p.clocks, clocks());
        assert_eq!(p.anchor, Some((7, [9; 32])));
        let back = Tracker::restore(
            cfg(),
            p.tracker,
            restore_mapping(&p.clocks, &p.clocks, 6_000_000),
        )
        .expect("restores");
        assert_eq!(back.len(), 1);
    }

    #[test]
    fn every_damage_is_a_named_error() {
        let t = tracker_with_agent();
        let mut out = Vec::new();
        encode(&t, 6_000_000, &clocks(), None, &mut out);
        assert_eq!(parse(&out[..out.len() - 1]), Err(ContentError::BadChecksum));
        assert!(matches!(
            parse(&out[..20]),
            Err(ContentError::Truncated { .. })
        ));
        let mut bad = out.clone();
        bad[0] ^= 1;
        assert_eq!(parse(&bad), Err(ContentError::BadMagic));
        let mut bad = out.clone();
        bad[8] = 9;
        assert_eq!(
            parse(&bad),
            Err(ContentError::UnsupportedVersion { found: 9 })
        );
        let mut bad = out.clone();
        bad[40] ^= 0xff;
        assert_eq!(parse(&bad), Err(ContentError::BadChecksum));
        assert!(parse(&[]).is_err());
    }

    /// A section written by a newer observer: skipped when optional, refused when required.
    #[test]
    fn unknown_sections_follow_their_flag() {
        let t = tracker_with_agent();
        let mut out = Vec::new();
        encode(&t, 6_000_000, &clocks(), None, &mut out);
        for (flags, ok) in [(0u16, true), (REQUIRED, false)] {
            let mut f = out[..out.len() - SUM_LEN].to_vec();
            f[10] = 3;
            // Section 99, empty.
            f.extend_from_slice(&99u16.to_le_bytes());
            f.extend_from_slice(&flags.to_le_bytes());
            f.extend_from_slice(&0u32.to_le_bytes());
            let sum = Sha256::digest(&f);
            f.extend_from_slice(&sum);
            match parse(&f) {
                Ok(p) => assert!(ok && p.anchor.is_none()),
                Err(e) => assert!(!ok && e == ContentError::UnknownRequired { tag: 99 }),
            }
        }
    }

    #[test]
    fn reboot_carries_the_wall_clock_gap() {
        let then = clocks();
        let mut now = clocks();
        now.boot_id[0] = b'f';
        now.boottime = 3_000_000_000;
        now.wall = then.wall + 5_000_000_000;
        let m = restore_mapping(&then, &now, 1_000);
        assert_eq!(m.clock_now, then.boottime + 5_000_000_000);
        let mut same = clocks();
        same.boottime = then.boottime + 2;
        assert_eq!(
            restore_mapping(&then, &same, 1_000).clock_now,
            then.boottime + 2
        );
        // Wall clock set back across a reboot: no gap, never a negative one.
        now.wall = then.wall - 1;
        assert_eq!(restore_mapping(&then, &now, 1_000).clock_now, then.boottime);
    }

    proptest::proptest! {
        /// Any bytes: a named error or a parse, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes);
        }

        /// Any one flipped bit or cut of a good file is refused, never half-loaded.
        #[test]
        fn any_flip_or_cut_is_refused(at in 0usize..10_000, bit in 0u8..8, cut in 1usize..10_000) {
            let t = tracker_with_agent();
            let mut out = Vec::new();
            encode(&t, 6_000_000, &clocks(), Some((3, [4; 32])), &mut out);
            let mut flipped = out.clone();
            let at = at % out.len();
            flipped[at] ^= 1 << bit;
            proptest::prop_assert!(parse(&flipped).is_err());
            let cut = 1 + cut % out.len();
            proptest::prop_assert!(parse(&out[..out.len() - cut]).is_err());
        }
    }
}
