//! The state file's bytes: sections, clocks and the SHA-256 around the core's tracker codec
//! (the format table is in the parent module's docs). No I/O but reading the clocks.

use std::fs;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::tracker::{ClockMapping, Nanos, PersistError, Tracker};

/// The state file's magic bytes.
pub const FILE_MAGIC: [u8; 8] = *b"VARTAWST";
/// The file version written and read.
pub const FILE_VERSION: u16 = 1;
const HEAD_LEN: usize = 8 + 2 + 2;
const SECTION_HEAD_LEN: usize = 2 + 2 + 4;
pub(super) const SUM_LEN: usize = 32;
/// Section flag: a reader that does not know this tag must refuse the file.
pub(super) const REQUIRED: u16 = 1;
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
