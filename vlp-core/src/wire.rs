//! The plain frame: 32 bytes, every integer little-endian (VLP v0.2 §1), and its decoder with
//! the eight ordered checks of §2.
//!
//! [`Frame`] is the *validated* value: it can only be built by [`Frame::parse`] or
//! [`Frame::new`], both of which apply the spec's rules, so [`Frame::emit`] cannot fail and no
//! code past the parser ever holds an invalid frame.

use core::fmt;

use crate::crc::crc32c;

/// Length of a plain frame on the wire.
pub const FRAME_LEN: usize = 32;
/// Bytes 0..2 of every frame: ASCII "VA".
pub const MAGIC: [u8; 2] = [0x56, 0x41];
/// Byte 2 of every frame.
pub const VERSION: u8 = 0x02;
/// The terminal nonce: legal only with [`Status::Critical`], the last frame of a dying agent.
pub const NONCE_TERMINAL: u64 = u64::MAX;
/// The reserved timestamp sentinel (§2 rule 7).
pub const TIMESTAMP_RESERVED: u64 = u64::MAX;
/// Payload that marks a terminal frame as an announced clean exit ("goodbye") rather than a
/// crash: the ASCII bytes `BYE!` read as a little-endian u32.
///
/// A goodbye is an ordinary, VLP v0.2-valid terminal frame (Critical, nonce
/// [`NONCE_TERMINAL`]) whose payload is this value. Observers that do not know the convention
/// see the agent's death, which is the safe reading; Varta's observer raises no stall for it.
pub const GOODBYE_PAYLOAD: u32 = u32::from_le_bytes(*b"BYE!");

/// Byte offsets of the frame's fields (§1).
pub mod field {
    use core::ops::Range;
    /// Magic, 2 bytes.
    pub const MAGIC: Range<usize> = 0..2;
    /// Version, 1 byte.
    pub const VERSION: usize = 2;
    /// Status, 1 byte.
    pub const STATUS: usize = 3;
    /// Sender identity, u32 LE.
    pub const PID: Range<usize> = 4..8;
    /// Sender-local monotonic timestamp, u64 LE.
    pub const TIMESTAMP: Range<usize> = 8..16;
    /// Per-session counter, u64 LE.
    pub const NONCE: Range<usize> = 16..24;
    /// Opaque payload, u32 LE.
    pub const PAYLOAD: Range<usize> = 24..28;
    /// CRC-32C of bytes `0..28`, u32 LE.
    pub const CRC: Range<usize> = 28..32;
}

const _: () = assert!(field::CRC.end == FRAME_LEN);

/// Health status carried in byte 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Status {
    /// Making progress.
    Ok = 0,
    /// Making progress, impaired.
    Degraded = 1,
    /// In trouble; with [`NONCE_TERMINAL`], dying.
    Critical = 2,
    /// Observer-synthesised: the agent went silent. Never valid on the wire.
    Stall = 3,
}

impl Status {
    /// The status for a wire byte, if it names one.
    #[must_use]
    pub const fn from_u8(b: u8) -> Option<Status> {
        match b {
            0 => Some(Status::Ok),
            1 => Some(Status::Degraded),
            2 => Some(Status::Critical),
            3 => Some(Status::Stall),
            _ => None,
        }
    }

    /// The wire byte.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Lower-case name, as used in logs and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Critical => "critical",
            Status::Stall => "stall",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a datagram is not a valid plain frame. Each variant names the failed rule of §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// The datagram is not 32 bytes long (§1: "a datagram of any other length is not a plain
    /// frame").
    BadLength {
        /// The length received.
        len: usize,
    },
    /// Rule 1: bytes 0..2 are not `56 41`.
    BadMagic,
    /// Rule 2: byte 2 is not `0x02` (v0.1 frames land here).
    BadVersion,
    /// Rule 3: the stored CRC is not the CRC-32C of bytes 0..28.
    BadCrc {
        /// The CRC computed over the received bytes.
        expected: u32,
        /// The CRC stored in the frame.
        actual: u32,
    },
    /// Rule 4: the status byte is above 3.
    BadStatus(u8),
    /// Rule 5: status 3 (Stall) is observer-only.
    StallOnWire,
    /// Rule 6: pid 0 or 1 is reserved.
    BadPid(u32),
    /// Rule 7: timestamp `u64::MAX` is reserved.
    BadTimestamp(u64),
    /// Rule 8: the terminal nonce with a status other than Critical.
    BadNonce {
        /// The nonce received.
        nonce: u64,
        /// The status it came with.
        status: Status,
    },
}

impl DecodeError {
    /// Every kind, in rule order; handy for pre-registering metric labels.
    pub const KINDS: [&'static str; 9] = [
        "bad_length",
        "bad_magic",
        "bad_version",
        "bad_crc",
        "bad_status",
        "stall_on_wire",
        "bad_pid",
        "bad_timestamp",
        "bad_nonce",
    ];

    /// A stable snake_case name of the failed rule, for metric labels.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            DecodeError::BadLength { .. } => "bad_length",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::BadVersion => "bad_version",
            DecodeError::BadCrc { .. } => "bad_crc",
            DecodeError::BadStatus(_) => "bad_status",
            DecodeError::StallOnWire => "stall_on_wire",
            DecodeError::BadPid(_) => "bad_pid",
            DecodeError::BadTimestamp(_) => "bad_timestamp",
            DecodeError::BadNonce { .. } => "bad_nonce",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadLength { len } => {
                write!(f, "datagram is {len} bytes, a VLP frame is {FRAME_LEN}")
            }
            DecodeError::BadMagic => f.write_str("bad magic: bytes 0..2 are not \"VA\""),
            DecodeError::BadVersion => f.write_str("bad version: byte 2 is not 0x02"),
            DecodeError::BadCrc { expected, actual } => write!(
                f,
                "bad CRC-32C: computed {expected:#010x}, frame carries {actual:#010x}"
            ),
            DecodeError::BadStatus(b) => write!(f, "bad status byte {b}"),
            DecodeError::StallOnWire => f.write_str("status Stall is observer-only"),
            DecodeError::BadPid(p) => write!(f, "pid {p} is reserved"),
            DecodeError::BadTimestamp(t) => write!(f, "timestamp {t:#x} is reserved"),
            DecodeError::BadNonce { nonce, status } => write!(
                f,
                "terminal nonce {nonce:#x} is legal only with critical, not {status}"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// A validated VLP v0.2 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Frame {
    status: Status,
    pid: u32,
    timestamp: u64,
    nonce: u64,
    payload: u32,
}

impl Frame {
    /// Builds a frame, applying the field rules 4–8 of §2 in order.
    ///
    /// # Errors
    /// The first rule the fields break: [`DecodeError::StallOnWire`], [`DecodeError::BadPid`],
    /// [`DecodeError::BadTimestamp`] or [`DecodeError::BadNonce`].
    pub const fn new(
        status: Status,
        pid: u32,
        timestamp: u64,
        nonce: u64,
        payload: u32,
    ) -> Result<Frame, DecodeError> {
        if matches!(status, Status::Stall) {
            return Err(DecodeError::StallOnWire);
        }
        if pid <= 1 {
            return Err(DecodeError::BadPid(pid));
        }
        if timestamp == TIMESTAMP_RESERVED {
            return Err(DecodeError::BadTimestamp(timestamp));
        }
        if nonce == NONCE_TERMINAL && !matches!(status, Status::Critical) {
            return Err(DecodeError::BadNonce { nonce, status });
        }
        Ok(Frame {
            status,
            pid,
            timestamp,
            nonce,
            payload,
        })
    }

    /// A terminal frame: Critical with [`NONCE_TERMINAL`] (a crash or panic report).
    ///
    /// # Errors
    /// [`DecodeError::BadPid`] or [`DecodeError::BadTimestamp`] for reserved values.
    pub const fn terminal(pid: u32, timestamp: u64, payload: u32) -> Result<Frame, DecodeError> {
        Frame::new(Status::Critical, pid, timestamp, NONCE_TERMINAL, payload)
    }

    /// An announced clean exit: a terminal frame carrying [`GOODBYE_PAYLOAD`].
    ///
    /// # Errors
    /// [`DecodeError::BadPid`] or [`DecodeError::BadTimestamp`] for reserved values.
    pub const fn goodbye(pid: u32, timestamp: u64) -> Result<Frame, DecodeError> {
        Frame::terminal(pid, timestamp, GOODBYE_PAYLOAD)
    }

    /// Parses a datagram with the eight checks of §2, in order; the first failure wins.
    ///
    /// # Errors
    /// [`DecodeError::BadLength`] if `bytes` is not 32 bytes long, else the first failed rule.
    pub fn parse(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let Ok(b) = <&[u8; FRAME_LEN]>::try_from(bytes) else {
            return Err(DecodeError::BadLength { len: bytes.len() });
        };
        Frame::parse_array(b)
    }

    /// [`Frame::parse`] for a buffer already known to be 32 bytes.
    ///
    /// # Errors
    /// The first failed rule of §2.
    pub fn parse_array(b: &[u8; FRAME_LEN]) -> Result<Frame, DecodeError> {
        if b[field::MAGIC] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if b[field::VERSION] != VERSION {
            return Err(DecodeError::BadVersion);
        }
        let expected = crc32c(&b[..field::CRC.start]);
        let actual = read_u32(b, field::CRC.start);
        if expected != actual {
            return Err(DecodeError::BadCrc { expected, actual });
        }
        let Some(status) = Status::from_u8(b[field::STATUS]) else {
            return Err(DecodeError::BadStatus(b[field::STATUS]));
        };
        Frame::new(
            status,
            read_u32(b, field::PID.start),
            read_u64(b, field::TIMESTAMP.start),
            read_u64(b, field::NONCE.start),
            read_u32(b, field::PAYLOAD.start),
        )
    }

    /// Writes the frame's 32 wire bytes into `out`.
    pub fn emit_into(&self, out: &mut [u8; FRAME_LEN]) {
        // Bytes 0..8 (magic, version, status, pid) as one little-endian word: one 8-byte store
        // that the CRC's 8-byte load can forward, instead of four narrow stores it cannot.
        let head = u64::from(u16::from_le_bytes(MAGIC))
            | u64::from(VERSION) << (8 * field::VERSION)
            | u64::from(self.status.as_u8()) << (8 * field::STATUS)
            | u64::from(self.pid) << (8 * field::PID.start);
        out[field::MAGIC.start..field::PID.end].copy_from_slice(&head.to_le_bytes());
        out[field::TIMESTAMP].copy_from_slice(&self.timestamp.to_le_bytes());
        out[field::NONCE].copy_from_slice(&self.nonce.to_le_bytes());
        out[field::PAYLOAD].copy_from_slice(&self.payload.to_le_bytes());
        let crc = crc32c(&out[..field::CRC.start]);
        out[field::CRC].copy_from_slice(&crc.to_le_bytes());
    }

    /// The frame's 32 wire bytes.
    #[must_use]
    pub fn emit(&self) -> [u8; FRAME_LEN] {
        let mut out = [0u8; FRAME_LEN];
        self.emit_into(&mut out);
        out
    }

    /// Alias of [`Frame::emit_into`], for code written against the original Varta crates.
    pub fn encode(&self, out: &mut [u8; FRAME_LEN]) {
        self.emit_into(out);
    }

    /// Alias of [`Frame::parse_array`], for code written against the original Varta crates.
    ///
    /// # Errors
    /// As [`Frame::parse_array`].
    pub fn decode(bytes: &[u8; FRAME_LEN]) -> Result<Frame, DecodeError> {
        Frame::parse_array(bytes)
    }

    /// The status (never [`Status::Stall`]).
    #[must_use]
    pub const fn status(&self) -> Status {
        self.status
    }
    /// The sender's identity (never 0 or 1).
    #[must_use]
    pub const fn pid(&self) -> u32 {
        self.pid
    }
    /// The sender-local monotonic timestamp (never `u64::MAX`).
    #[must_use]
    pub const fn timestamp(&self) -> u64 {
        self.timestamp
    }
    /// The per-session counter.
    #[must_use]
    pub const fn nonce(&self) -> u64 {
        self.nonce
    }
    /// The opaque payload.
    #[must_use]
    pub const fn payload(&self) -> u32 {
        self.payload
    }
    /// Whether this is a terminal frame (the agent is gone: crash, panic or clean exit).
    #[must_use]
    pub const fn is_terminal(&self) -> bool {
        self.nonce == NONCE_TERMINAL
    }
    /// Whether this terminal frame announces a clean exit ([`GOODBYE_PAYLOAD`]).
    #[must_use]
    pub const fn is_goodbye(&self) -> bool {
        self.is_terminal() && self.payload == GOODBYE_PAYLOAD
    }
}

#[inline]
fn read_u32(b: &[u8; FRAME_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn read_u64(b: &[u8; FRAME_LEN], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_frame() -> Frame {
        Frame::new(
            Status::Ok,
            0x0403_0201,
            0x0C0B_0A09_0807_0605,
            0x1413_1211_100F_0E0D,
            0x1817_1615,
        )
        .unwrap()
    }

    #[test]
    fn golden_field_positions() {
        let b = ok_frame().emit();
        assert_eq!(&b[0..2], b"VA");
        assert_eq!(b[2], 2);
        assert_eq!(b[3], 0);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[8..16], &[5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(&b[16..24], &[13, 14, 15, 16, 17, 18, 19, 20]);
        assert_eq!(&b[24..28], &[21, 22, 23, 24]);
        assert_eq!(
            u32::from_le_bytes(b[28..32].try_into().unwrap()),
            crc32c(&b[..28])
        );
    }

    #[test]
    fn goodbye_is_valid_terminal() {
        let f = Frame::goodbye(77, 5).unwrap();
        assert!(f.is_terminal() && f.is_goodbye());
        assert_eq!(f.status(), Status::Critical);
        assert_eq!(&f.emit()[24..28], b"BYE!");
        assert!(!Frame::terminal(77, 5, 0).unwrap().is_goodbye());
        assert_eq!(Frame::parse(&f.emit()), Ok(f));
    }
}
